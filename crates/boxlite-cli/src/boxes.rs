//! Box management commands: create, start, stop, restart, rm, ls, inspect, logs.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use boxlite::{BoxInfo, BoxOptions, BoxState, Boxlite, HealthState};

/// Apply `op` to every box named, reporting each failure and going on with the rest, as
/// Docker does. Prints each box as named on success.
pub async fn for_each<F, Fut>(rt: &Boxlite, keys: &[String], op: F) -> Result<i32>
where
    F: Fn(boxlite::LiteBox) -> Fut,
    Fut: std::future::Future<Output = Result<(), boxlite::Error>>,
{
    let mut failed = 0;
    for key in keys {
        let res = match rt.get(key).await {
            Ok(b) => op(b).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => println!("{key}"),
            Err(e) => {
                eprintln!("boxlite: error: {}", boxlite::error_chain(&e));
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 125 })
}

pub async fn create(rt: &Boxlite, opts: BoxOptions) -> Result<i32> {
    let b = rt.create(opts).await?;
    println!("{}", b.id());
    Ok(0)
}

pub(crate) fn ago(secs: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let d = now.saturating_sub(secs);
    match d {
        0..=59 => format!("{d} seconds ago"),
        60..=3599 => format!("{} minutes ago", d / 60),
        3600..=86399 => format!("{} hours ago", d / 3600),
        _ => format!("{} days ago", d / 86400),
    }
}

/// The STATUS column: the state, the health when known, and why a box stopped.
fn status(b: &BoxInfo) -> String {
    let mut s = b.state.to_string();
    match (b.state, b.health.state) {
        (BoxState::Running, HealthState::Healthy) => s.push_str(" (healthy)"),
        (BoxState::Running, HealthState::Unhealthy) => s.push_str(" (unhealthy)"),
        _ => {}
    }
    if b.state != BoxState::Running
        && let Some(e) = &b.last_error
    {
        s.push_str(": ");
        s.push_str(e.lines().next().unwrap_or(""));
    }
    s
}

/// Keep the table aligned; `inspect` has the whole reason.
fn fit_status(mut s: String) -> String {
    if s.chars().count() > STATUS_WIDTH {
        s = s.chars().take(STATUS_WIDTH - 1).collect();
        s.push('…');
    }
    s
}

const STATUS_WIDTH: usize = 40;

/// `ls --filter`: for now only `label=KEY` and `label=KEY=VALUE`, all of which must
/// match.
#[derive(Debug, Default)]
pub(crate) struct LabelFilter(Vec<(String, Option<String>)>);

impl LabelFilter {
    pub(crate) fn parse(filters: &[String]) -> Result<LabelFilter> {
        let mut v = Vec::new();
        for f in filters {
            let Some(rest) = f.strip_prefix("label=").filter(|r| !r.is_empty()) else {
                bail!("invalid --filter {f:?}; valid filters are label=KEY and label=KEY=VALUE");
            };
            v.push(match rest.split_once('=') {
                Some((k, val)) => (k.to_string(), Some(val.to_string())),
                None => (rest.to_string(), None),
            });
        }
        Ok(LabelFilter(v))
    }

    pub(crate) fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, want)| match (labels.get(k), want) {
            (Some(have), Some(want)) => have == want,
            (Some(_), None) => true,
            (None, _) => false,
        })
    }
}

pub async fn ls(
    rt: &Boxlite,
    all: bool,
    quiet: bool,
    format: &str,
    filter: &[String],
) -> Result<i32> {
    let filter = LabelFilter::parse(filter)?;
    let boxes: Vec<BoxInfo> = rt
        .list()
        .await?
        .into_iter()
        .filter(|b| {
            all || matches!(
                b.state,
                BoxState::Running | BoxState::Stopping | BoxState::Pausing | BoxState::Paused
            )
        })
        .filter(|b| filter.matches(&b.config.labels))
        .collect();
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(&boxes)?),
        "table" if quiet => {
            for b in &boxes {
                println!("{}", b.id);
            }
        }
        "table" => {
            let rows: Vec<BoxRow> = boxes
                .iter()
                .map(|b| BoxRow {
                    id: b.id.clone(),
                    image: b.image.clone(),
                    created: ago(b.created_at),
                    status: status(b),
                    name: b.name.clone().unwrap_or_default(),
                })
                .collect();
            print_box_table(&rows)?;
        }
        other => bail!("invalid --format {other:?}; valid values are table and json"),
    }
    Ok(0)
}

/// One line of `ls`, as plain data (from the library here, from a server with `--url`).
#[derive(Debug)]
pub(crate) struct BoxRow {
    pub(crate) id: String,
    pub(crate) image: String,
    pub(crate) created: String,
    pub(crate) status: String,
    pub(crate) name: String,
}

pub(crate) fn print_box_table(rows: &[BoxRow]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<12}  {:<24}  {:<16}  {:<40}  NAME",
        "BOX ID", "IMAGE", "CREATED", "STATUS"
    )?;
    for b in rows {
        writeln!(
            out,
            "{:<12}  {:<24}  {:<16}  {:<40}  {}",
            b.id.chars().take(12).collect::<String>(),
            b.image,
            b.created,
            fit_status(b.status.clone()),
            b.name
        )?;
    }
    Ok(())
}

pub async fn inspect(rt: &Boxlite, keys: &[String]) -> Result<i32> {
    let mut found = Vec::new();
    let mut failed = false;
    for key in keys {
        let info = match rt.get(key).await {
            Ok(b) => b.info().await,
            Err(e) => Err(e),
        };
        match info {
            Ok(i) => found.push(i),
            Err(e) => {
                eprintln!("boxlite: error: {}", boxlite::error_chain(&e));
                failed = true;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&found)?);
    Ok(if failed { 125 } else { 0 })
}

/// Print the console log; with `follow`, keep printing as it grows until the box is no
/// longer running (or we are interrupted).
pub async fn logs(rt: &Boxlite, key: &str, follow: bool) -> Result<i32> {
    let b = rt.get(key).await?;
    let path = b.info().await?.console_log;
    let mut offset = 0u64;
    let mut out = std::io::stdout();
    loop {
        // The log is recreated when the box starts again: start over when it shrinks.
        let copied = match std::fs::File::open(&path) {
            Ok(mut f) => {
                let len = f.metadata()?.len();
                if len < offset {
                    offset = 0;
                }
                f.seek(SeekFrom::Start(offset))?;
                let mut buf = Vec::new();
                f.take(len - offset).read_to_end(&mut buf)?;
                offset += buf.len() as u64;
                out.write_all(&buf)?;
                out.flush()?;
                buf.len()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        if !follow {
            return Ok(0);
        }
        if copied == 0 {
            match b.state().await {
                Ok(BoxState::Running) | Ok(BoxState::Stopping) => {}
                // Stopped, failed or removed: one last read above found nothing new.
                _ => return Ok(0),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `boxlite volume ...`.
pub async fn volume(rt: &Boxlite, cmd: crate::args::VolumeCommand) -> Result<i32> {
    use crate::args::VolumeCommand as V;
    let report = |r: Result<(), boxlite::Error>, name: &str, failed: &mut bool| match r {
        Ok(()) => println!("{name}"),
        Err(e) => {
            eprintln!("boxlite: error: {}", boxlite::error_chain(&e));
            *failed = true;
        }
    };
    let mut failed = false;
    match cmd {
        V::Create { name } => {
            rt.create_volume(&name).await?;
            println!("{name}");
        }
        V::Ls { format } => {
            let vols = rt.volumes().await?;
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&vols)?),
                "table" => {
                    let rows: Vec<VolumeRow> = vols
                        .iter()
                        .map(|v| VolumeRow {
                            kind: format!("{:?}", v.kind).to_lowercase(),
                            name: v.name.clone(),
                            created: ago(v.created_at),
                            used_by: v.used_by.clone(),
                        })
                        .collect();
                    print_volume_table(&rows)?;
                }
                other => bail!("invalid --format {other:?}; valid values are table and json"),
            }
        }
        V::Inspect { names } => {
            let mut found = Vec::new();
            for n in &names {
                match rt.volume(n).await {
                    Ok(v) => found.push(v),
                    Err(e) => report(Err(e), n, &mut failed),
                }
            }
            println!("{}", serde_json::to_string_pretty(&found)?);
        }
        V::Rm { force, names } => {
            for n in &names {
                report(rt.remove_volume(n, force).await, n, &mut failed);
            }
        }
    }
    Ok(if failed { 125 } else { 0 })
}

/// One line of `volume ls`, as plain data.
#[derive(Debug)]
pub(crate) struct VolumeRow {
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) created: String,
    pub(crate) used_by: Vec<String>,
}

pub(crate) fn print_volume_table(rows: &[VolumeRow]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<10}  {:<34}  {:<16}  USED BY",
        "KIND", "NAME", "CREATED"
    )?;
    for v in rows {
        let users: Vec<String> = v
            .used_by
            .iter()
            .map(|u| u.chars().take(12).collect())
            .collect();
        writeln!(
            out,
            "{:<10}  {:<34}  {:<16}  {}",
            v.kind,
            v.name,
            v.created,
            users.join(",")
        )?;
    }
    Ok(())
}

/// `boxlite snapshot ...`.
pub async fn snapshot(rt: &Boxlite, command: crate::args::SnapshotCommand) -> Result<i32> {
    use crate::args::SnapshotCommand as S;
    match command {
        S::Create {
            id,
            name,
            disk_only,
        } => {
            let b = rt.get(&id).await?;
            let name = name.unwrap_or_else(default_snapshot_name);
            let s = b
                .snapshot_create(&name, &boxlite::SnapshotOptions { disk_only })
                .await?;
            println!("{}", s.name);
            Ok(0)
        }
        S::Ls { id, format } => {
            print_snapshots(&rt.get(&id).await?.snapshot_list().await?, &format)
        }
        S::Rm { id, names } => {
            let b = rt.get(&id).await?;
            let mut failed = 0;
            for n in names {
                match b.snapshot_remove(&n).await {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("boxlite: error: {}", boxlite::error_chain(&e));
                        failed += 1;
                    }
                }
            }
            Ok(if failed == 0 { 0 } else { 125 })
        }
        S::Restore { id, name } => {
            rt.get(&id).await?.snapshot_restore(&name).await?;
            println!("{name}");
            Ok(0)
        }
    }
}

/// `snapshot ls` output, local or remote.
pub(crate) fn print_snapshots(list: &[boxlite::SnapshotInfo], format: &str) -> Result<i32> {
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(list)?);
        return Ok(0);
    }
    if format != "table" {
        bail!("unknown format {format:?}; use table or json");
    }
    println!("{:<32} {:<7} {:>10}  CREATED", "NAME", "MEMORY", "SIZE");
    for s in list {
        println!(
            "{:<32} {:<7} {:>10}  {}",
            s.name,
            if s.memory { "yes" } else { "no" },
            crate::stats::bytes(s.size_bytes),
            ago(u64::try_from(s.created_at).unwrap_or(0))
        );
    }
    Ok(0)
}

/// `BOX[@SNAPSHOT]` as the box and the snapshot.
pub(crate) fn split_source(source: &str) -> (&str, Option<String>) {
    match source.split_once('@') {
        Some((k, s)) => (k, Some(s.to_string())),
        None => (source, None),
    }
}

/// A snapshot name from the time: `snap-20261202-013000`.
pub(crate) fn default_snapshot_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    snapshot_name_at(secs)
}

fn snapshot_name_at(secs: u64) -> String {
    // 2026-12-02T01:30:00Z -> 20261202-013000
    let t = boxlite::model::time::rfc3339(secs);
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let (date, time) = t.split_once('T').unwrap_or((&t, ""));
    format!("snap-{}-{}", digits(date), digits(time))
}

/// `boxlite clone BOX[@SNAPSHOT]`: prints each new box's id.
pub async fn clone(rt: &Boxlite, source: &str, name: Option<String>, count: usize) -> Result<i32> {
    let (key, snapshot) = split_source(source);
    let b = rt.get(key).await?;
    let clones = b
        .clone_boxes(
            boxlite::CloneOptions {
                snapshot,
                name,
                ..Default::default()
            },
            count,
        )
        .await?;
    for c in clones {
        println!("{}", c.id());
    }
    Ok(0)
}

#[cfg(test)]
mod snapshot_name_tests {
    use super::*;

    #[test]
    fn default_snapshot_names_carry_the_utc_time() {
        assert_eq!(snapshot_name_at(0), "snap-19700101-000000");
        assert_eq!(snapshot_name_at(1_796_173_254), "snap-20261202-010054");
    }
}
