//! The remote CLI: `boxlite --url URL ...` (or `BOXLITE_URL`) runs the box commands
//! against a `boxlite serve` over its REST and WebSocket API instead of a local home.
//!
//! Flags and output follow the local commands where the API can serve them, through
//! the same printing code; what the API has no route for fails with exit 125 and says
//! so, rather than doing something else. The API key comes from `BOXLITE_API_KEY` only
//! (never argv) and is never printed. The `boxlite-client` crate holds the HTTP side
//! and the calls (shared with the SDKs), `exec.rs` run, exec and attach over the
//! WebSocket, `cp.rs` copies, and this file the rest.

mod cp;
mod exec;

use std::io::Write;

use anyhow::{Result, bail};
use boxlite_server::boxes::{BoxJson, BoxStatus};
use boxlite_server::images::{ImageJson, ImageList, PullEvent};
use boxlite_server::metrics::BoxMetrics;
use boxlite_server::volumes::Volume;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use crate::args::{Command, ImageCommand, VolumeCommand};
use boxlite_client::api;
use boxlite_client::api::{get_box, list_boxes, remove, start, stop};
use boxlite_client::{Body, Client, RemoteError, clean, segment};

/// Run `cmd` against the server at `url`.
pub(crate) async fn main(url: &str, cmd: Command) -> Result<i32> {
    // Refuse what the API cannot do before anything else, a bad URL included.
    if let Some((name, why)) = unavailable(&cmd) {
        bail!("`{name}` is not available with --url: {why}");
    }
    let c = &Client::from_env(url)?;
    match cmd {
        Command::Run {
            exec,
            create,
            detach,
            image,
            command,
        } => exec::run(c, exec, create, detach, image, command).await,
        Command::Exec {
            exec,
            detach,
            id,
            command,
        } => exec::exec(c, exec, detach, &id, command).await,
        Command::Attach { id, exec_id } => exec::attach(c, &id, &exec_id).await,
        Command::Create { create, image } => {
            let id = tokio::select! {
                r = exec::create_box(c, &create, &image, &[]) => r?,
                code = crate::run::interrupted() => return Ok(code),
            };
            println!("{id}");
            Ok(0)
        }
        Command::Start { boxes } => for_each(&boxes, |id| async move { start(c, &id).await }).await,
        Command::Snapshot { command } => snapshot(c, command).await,
        Command::Clone {
            source,
            name,
            count,
        } => {
            let (key, snap) = crate::boxes::split_source(&source);
            for i in 1..=count {
                let n = name.as_ref().map(|n| {
                    if count == 1 {
                        n.clone()
                    } else {
                        format!("{n}-{i}")
                    }
                });
                let id = api::clone_box(c, key, n.as_deref(), snap.as_deref()).await?;
                println!("{id}");
            }
            Ok(0)
        }
        Command::Pause { boxes } => {
            for_each(&boxes, |id| async move { api::pause(c, &id).await }).await
        }
        Command::Resume { boxes } => {
            for_each(&boxes, |id| async move { api::resume(c, &id).await }).await
        }
        Command::Stop { timeout, boxes } => {
            for_each(&boxes, |id| async move { stop(c, &id, timeout).await }).await
        }
        Command::Restart { timeout, boxes } => {
            for_each(&boxes, |id| async move {
                stop(c, &id, timeout).await?;
                start(c, &id).await
            })
            .await
        }
        Command::Rm { force, boxes } => {
            for_each(&boxes, |id| async move { remove(c, &id, force).await }).await
        }
        Command::Ls {
            all,
            quiet,
            format,
            filter,
        } => ls(c, all, quiet, &format, &filter).await,
        Command::Inspect { boxes } => inspect(c, &boxes).await,
        Command::Cp {
            follow_link,
            no_overwrite,
            src,
            dst,
        } => cp::run(c, &src, &dst, follow_link, !no_overwrite).await,
        Command::Pull { quiet, images } => {
            tokio::select! {
                r = pull(c, &images, quiet) => r,
                code = crate::run::interrupted() => Ok(code),
            }
        }
        Command::Images { quiet, format }
        | Command::Image {
            command: ImageCommand::Ls { quiet, format },
        } => images(c, quiet, &format).await,
        Command::Rmi { force, images }
        | Command::Image {
            command: ImageCommand::Rm { force, images },
        } => rmi(c, &images, force).await,
        Command::Volume { command } => volume(c, command).await,
        Command::Stats {
            no_stream,
            format,
            boxes,
        } => {
            tokio::select! {
                r = stats(c, &boxes, no_stream, &format) => r,
                _ = crate::run::interrupted() => Ok(0),
            }
        }
        // Refused above.
        Command::Logs { .. }
        | Command::Port { .. }
        | Command::Network { .. }
        | Command::Load { .. }
        | Command::Login { .. }
        | Command::Logout { .. }
        | Command::Serve { .. }
        | Command::Mcp { .. }
        | Command::Info { .. }
        | Command::Image {
            command: ImageCommand::Prune | ImageCommand::Templates { .. },
        } => bail!("not available with --url"),
    }
}

/// The commands the REST API cannot serve, and why.
fn unavailable(cmd: &Command) -> Option<(&'static str, &'static str)> {
    const NO_ROUTE: &str = "the REST API has no route for it";
    Some(match cmd {
        Command::Logs { .. } => ("logs", NO_ROUTE),
        Command::Image {
            command: ImageCommand::Templates { .. },
        } => ("image templates", NO_ROUTE),
        Command::Port { .. } => ("port", NO_ROUTE),
        Command::Network { .. } => ("network", NO_ROUTE),
        Command::Load { .. } => ("load", NO_ROUTE),
        Command::Image {
            command: ImageCommand::Prune,
        } => ("image prune", NO_ROUTE),
        Command::Login { .. } | Command::Logout { .. } => (
            if matches!(cmd, Command::Login { .. }) {
                "login"
            } else {
                "logout"
            },
            "registry credentials belong to the server's home; log in there",
        ),
        Command::Serve { .. } => (
            "serve",
            "it serves a local home; unset BOXLITE_URL or drop --url",
        ),
        Command::Mcp { .. } => (
            "mcp",
            "it serves a local home's boxes; unset BOXLITE_URL or drop --url",
        ),
        Command::Info { .. } => (
            "info",
            "it describes this machine's accelerator and assets, not the server's",
        ),
        _ => return None,
    })
}

/// Apply `op` to every box named, reporting each failure and going on with the rest, as
/// the local commands do. Prints each box as named on success.
async fn for_each<F, Fut>(keys: &[String], op: F) -> Result<i32>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), RemoteError>>,
{
    let mut failed = false;
    for key in keys {
        match op(key.clone()).await {
            Ok(()) => println!("{key}"),
            Err(e) => {
                eprintln!("boxlite: error: {}", boxlite::error_chain(&e));
                failed = true;
            }
        }
    }
    Ok(if failed { 125 } else { 0 })
}

/// `snapshot ...` against the server.
async fn snapshot(c: &Client, cmd: crate::args::SnapshotCommand) -> Result<i32> {
    use crate::args::SnapshotCommand as S;
    match cmd {
        S::Create {
            id,
            name,
            disk_only,
        } => {
            let name = name.unwrap_or_else(crate::boxes::default_snapshot_name);
            let s = api::create_snapshot(c, &id, &name, disk_only).await?;
            println!("{}", s.name);
            Ok(0)
        }
        S::Ls { id, format } => {
            crate::boxes::print_snapshots(&api::list_snapshots(c, &id).await?, &format)
        }
        S::Rm { id, names } => {
            let id = &id;
            for_each(
                &names,
                |n| async move { api::remove_snapshot(c, id, &n).await },
            )
            .await
        }
        S::Restore { id, name } => {
            api::restore_snapshot(c, &id, &name).await?;
            println!("{name}");
            Ok(0)
        }
    }
}

/// Seconds since the epoch for the server's RFC 3339 UTC times (`YYYY-MM-DDTHH:MM:SSZ`,
/// optionally with fractions).
fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (proleptic Gregorian), the inverse of the server's conversion.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// The server's status as the local table writes a state (`running` as `Running`).
fn shown_status(s: BoxStatus) -> String {
    let s = serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => "-".into(),
    }
}

async fn ls(c: &Client, all: bool, quiet: bool, format: &str, filter: &[String]) -> Result<i32> {
    if !matches!(format, "table" | "json") {
        bail!("invalid --format {format:?}; valid values are table and json");
    }
    let filter = crate::boxes::LabelFilter::parse(filter)?;
    let boxes: Vec<(Value, BoxJson)> = list_boxes(c)
        .await?
        .into_iter()
        .filter(|(_, b)| all || matches!(b.status, BoxStatus::Running | BoxStatus::Stopping))
        .filter(|(_, b)| filter.matches(&b.labels))
        .collect();
    match format {
        "json" => {
            let raw: Vec<&Value> = boxes.iter().map(|(v, _)| v).collect();
            println!("{}", serde_json::to_string_pretty(&raw)?);
        }
        _ if quiet => {
            for (_, b) in &boxes {
                println!("{}", clean(&b.box_id));
            }
        }
        _ => {
            let rows: Vec<crate::boxes::BoxRow> = boxes
                .iter()
                .map(|(_, b)| crate::boxes::BoxRow {
                    id: clean(&b.box_id),
                    image: clean(&b.image),
                    created: parse_rfc3339(&b.created_at)
                        .map_or_else(|| "-".into(), crate::boxes::ago),
                    status: shown_status(b.status),
                    name: clean(b.name.as_deref().unwrap_or("")),
                })
                .collect();
            crate::boxes::print_box_table(&rows)?;
        }
    }
    Ok(0)
}

async fn inspect(c: &Client, keys: &[String]) -> Result<i32> {
    let mut found = Vec::new();
    let mut failed = false;
    for key in keys {
        match boxlite_client::api::box_value(c, key).await {
            Ok(v) => found.push(v),
            Err(e) => {
                eprintln!("boxlite: error: {}", boxlite::error_chain(&e));
                failed = true;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&found)?);
    Ok(if failed { 125 } else { 0 })
}

/// An image reference or digest as path segments (the route takes the rest of the path,
/// slashes included).
fn image_segments(key: &str) -> Result<Vec<&str>, RemoteError> {
    key.split('/').map(|p| segment("image", p)).collect()
}

/// What the image table shows of a server's `ImageInfo`.
fn image_info(i: &ImageJson) -> boxlite::images::ImageInfo {
    boxlite::images::ImageInfo {
        reference: clean(&i.reference),
        digest: clean(&i.id),
        size: i.size_bytes.unwrap_or(0),
        created: i.cached_at.as_deref().map(clean),
    }
}

async fn images(c: &Client, quiet: bool, format: &str) -> Result<i32> {
    let list: ImageList = c
        .json("listing images", Method::GET, &["images"], &[], Body::None)
        .await?;
    let infos: Vec<_> = list.images.iter().map(image_info).collect();
    crate::images::print_images(&infos, quiet, format)?;
    Ok(0)
}

async fn rmi(c: &Client, keys: &[String], force: bool) -> Result<i32> {
    let mut failed = false;
    for key in keys {
        let removed = async {
            let mut segs = vec!["images"];
            segs.extend(image_segments(key)?);
            let q: &[(&str, &str)] = if force { &[("force", "true")] } else { &[] };
            c.call(
                &format!("removing image {key}"),
                Method::DELETE,
                &segs,
                q,
                Body::None,
            )
            .await
        };
        match removed.await {
            Ok(()) => println!("Untagged: {key}"),
            Err(e) => {
                eprintln!("boxlite: error: {}", boxlite::error_chain(&e));
                failed = true;
            }
        }
    }
    Ok(if failed { 125 } else { 0 })
}

/// A well-formed event line whose `type` is not one of [`PullEvent`]'s.
fn is_unknown_event(line: &[u8]) -> bool {
    const KNOWN: &[&str] = &["resolved", "layer", "building", "built", "done", "error"];
    serde_json::from_slice::<Value>(line)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(String::from))
        .is_some_and(|t| !KNOWN.contains(&t.as_str()))
}

async fn pull(c: &Client, refs: &[String], quiet: bool) -> Result<i32> {
    use boxlite::images::registry::Progress;
    let mut failed = false;
    for r in refs {
        let display = crate::images::Display::new();
        let what = format!("pulling {r}");
        let outcome = async {
            let mut resp = c
                .send(
                    &what,
                    Method::POST,
                    &["images", "pull"],
                    &[],
                    Body::Json(serde_json::json!({ "reference": r })),
                    Some("application/x-ndjson"),
                )
                .await?;
            let mut buf: Vec<u8> = Vec::new();
            loop {
                // Whole lines first; then more bytes.
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let ev: PullEvent = match serde_json::from_slice(&line) {
                        Ok(ev) => ev,
                        // A kind of event this client does not know yet is skipped.
                        Err(_) if is_unknown_event(&line) => continue,
                        Err(e) => {
                            return Err(RemoteError::Malformed {
                                what: what.clone(),
                                reason: e.to_string(),
                            });
                        }
                    };
                    let p = match ev {
                        PullEvent::Resolved {
                            layers,
                            total_bytes,
                        } => Progress::Resolved {
                            layers,
                            total_bytes,
                        },
                        PullEvent::Layer {
                            digest,
                            done,
                            total,
                            cached,
                        } => Progress::Layer {
                            digest: clean(&digest),
                            done,
                            total,
                            cached,
                        },
                        PullEvent::Building { layers } => Progress::Building { layers },
                        PullEvent::Built { ms, cached } => Progress::Built {
                            ms,
                            cached,
                            build: None,
                        },
                        PullEvent::Done { image } => return Ok(image_info(&image)),
                        PullEvent::Error { error } => {
                            return Err(RemoteError::Api {
                                status: 200,
                                code: clean(&error.code),
                                message: clean(&error.message),
                            });
                        }
                    };
                    if !quiet {
                        display.event(r, p);
                    }
                }
                if buf.len() > boxlite_client::MAX_LINE {
                    return Err(RemoteError::TooLarge {
                        what: what.clone(),
                        limit: boxlite_client::MAX_LINE,
                    });
                }
                match resp.chunk().await {
                    Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                    Ok(None) => {
                        return Err(RemoteError::Malformed {
                            what: what.clone(),
                            reason: "the progress stream ended before the pull did".into(),
                        });
                    }
                    Err(e) => {
                        return Err(RemoteError::Transport {
                            what: what.clone(),
                            url: c.ep.shown(),
                            source: e.without_url(),
                        });
                    }
                }
            }
        };
        match outcome.await {
            Ok(img) => println!("{}@{}", img.reference, img.digest),
            Err(e) => {
                eprintln!("boxlite: error: {}", boxlite::error_chain(&e));
                failed = true;
            }
        }
    }
    Ok(if failed { 125 } else { 0 })
}

async fn volume(c: &Client, cmd: VolumeCommand) -> Result<i32> {
    let mut failed = false;
    let mut report = |r: Result<(), RemoteError>, name: &str| match r {
        Ok(()) => println!("{name}"),
        Err(e) => {
            eprintln!("boxlite: error: {}", boxlite::error_chain(&e));
            failed = true;
        }
    };
    match cmd {
        VolumeCommand::Create { name } => {
            c.call(
                &format!("creating volume {name}"),
                Method::POST,
                &["volumes"],
                &[],
                Body::Json(serde_json::json!({ "name": name })),
            )
            .await?;
            println!("{name}");
        }
        VolumeCommand::Ls { format } => {
            #[derive(Deserialize)]
            struct List {
                volumes: Vec<Value>,
            }
            let list: List = c
                .json(
                    "listing volumes",
                    Method::GET,
                    &["volumes"],
                    &[],
                    Body::None,
                )
                .await?;
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&list.volumes)?),
                "table" => {
                    let mut rows = Vec::with_capacity(list.volumes.len());
                    for v in list.volumes {
                        let v: Volume =
                            serde_json::from_value(v).map_err(|e| RemoteError::Malformed {
                                what: "listing volumes".into(),
                                reason: e.to_string(),
                            })?;
                        rows.push(crate::boxes::VolumeRow {
                            kind: clean(&v.kind),
                            name: clean(&v.name),
                            created: parse_rfc3339(&v.created_at)
                                .map_or_else(|| "-".into(), crate::boxes::ago),
                            used_by: v.used_by.iter().map(|u| clean(u)).collect(),
                        });
                    }
                    crate::boxes::print_volume_table(&rows)?;
                }
                other => bail!("invalid --format {other:?}; valid values are table and json"),
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut found = Vec::new();
            for n in &names {
                let got = async {
                    let seg = segment("volume", n)?;
                    c.json::<Value>(
                        &format!("getting volume {n}"),
                        Method::GET,
                        &["volumes", seg],
                        &[],
                        Body::None,
                    )
                    .await
                };
                match got.await {
                    Ok(v) => found.push(v),
                    Err(e) => report(Err(e), n),
                }
            }
            println!("{}", serde_json::to_string_pretty(&found)?);
        }
        VolumeCommand::Rm { force, names } => {
            for n in &names {
                let removed = async {
                    let seg = segment("volume", n)?;
                    let q: &[(&str, &str)] = if force { &[("force", "true")] } else { &[] };
                    c.call(
                        &format!("removing volume {n}"),
                        Method::DELETE,
                        &["volumes", seg],
                        q,
                        Body::None,
                    )
                    .await
                };
                report(removed.await, n);
            }
        }
    }
    Ok(if failed { 125 } else { 0 })
}

async fn stats(c: &Client, keys: &[String], no_stream: bool, format: &str) -> Result<i32> {
    if !matches!(format, "table" | "json") {
        bail!("invalid --format {format:?}; valid values are table and json");
    }
    loop {
        // The boxes named (resolved to ids and names), or every running one.
        let boxes: Vec<(String, Option<String>)> = if keys.is_empty() {
            list_boxes(c)
                .await?
                .into_iter()
                .filter(|(_, b)| b.status == BoxStatus::Running)
                .map(|(_, b)| (b.box_id, b.name))
                .collect()
        } else {
            let mut v = Vec::with_capacity(keys.len());
            for k in keys {
                let b = get_box(c, k).await?;
                v.push((b.box_id, b.name));
            }
            v
        };
        let mut raw = Vec::with_capacity(boxes.len());
        let mut rows = Vec::with_capacity(boxes.len());
        for (id, name) in boxes {
            let seg = segment("box", &id)?;
            let got: Result<Value, RemoteError> = c
                .json(
                    &format!("metrics of box {id}"),
                    Method::GET,
                    &["boxes", seg, "metrics"],
                    &[],
                    Body::None,
                )
                .await;
            let v = match got {
                Ok(v) => v,
                // A box that stopped between listing and asking is not shown.
                Err(e) if keys.is_empty() => {
                    tracing::debug!(box_id = %id, error = %e, "stats");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let m: BoxMetrics =
                serde_json::from_value(v.clone()).map_err(|e| RemoteError::Malformed {
                    what: format!("metrics of box {id}"),
                    reason: e.to_string(),
                })?;
            rows.push(crate::stats::StatRow {
                id: clean(&id),
                name: name.as_deref().map(clean),
                cpu_percent: m.cpu_percent,
                mem_used_total: m.memory_bytes.zip(m.memory_total_bytes),
                vmm_rss_bytes: m.vmm_rss_bytes,
                disk_overlay_bytes: m.disk_overlay_bytes,
                execs_started: m.commands_executed_total,
                ready_ms: m.boot_timing.and_then(|b| b.ready_ms),
                net_in_out: m.network_bytes_received.zip(m.network_bytes_sent),
                // The API does not report egress refusals.
                denied: None,
            });
            raw.push(serde_json::json!({ "box_id": id, "name": name, "metrics": v }));
        }
        let mut out = std::io::stdout().lock();
        match format {
            "json" if no_stream => writeln!(out, "{}", serde_json::to_string_pretty(&raw)?)?,
            "json" => writeln!(out, "{}", serde_json::to_string(&raw)?)?,
            _ if no_stream => write!(out, "{}", crate::stats::table(&rows))?,
            _ => write!(out, "\x1b[2J\x1b[H{}", crate::stats::table(&rows))?,
        }
        out.flush()?;
        drop(out);
        if no_stream {
            return Ok(0);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_times_parse_back_to_epoch_seconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(parse_rfc3339("2026-11-30T22:28:35Z"), Some(1_796_077_715));
        assert_eq!(parse_rfc3339("2026-11-30T22:28:35.5Z"), Some(1_796_077_715));
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-30 22:28:35",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn commands_without_a_route_are_refused_by_name() {
        let logs = Command::Logs {
            follow: false,
            id: "b".into(),
        };
        let (name, why) = unavailable(&logs).unwrap();
        assert_eq!((name, why), ("logs", "the REST API has no route for it"));
        assert!(
            unavailable(&Command::Start {
                boxes: vec!["b".into()]
            })
            .is_none()
        );
    }
}
