//! `boxlite port` and `boxlite network ...`.

use std::io::Write;

use anyhow::{Result, bail};
use boxlite::Boxlite;

use crate::args::NetworkCommand;

/// `boxlite port BOX`: one line per published port, as Docker prints them.
pub async fn ports(rt: &Boxlite, id: &str) -> Result<i32> {
    let b = rt.get(id).await?;
    let mut out = std::io::stdout().lock();
    for p in b.ports().await? {
        writeln!(out, "{}/{} -> {}", p.guest_port, p.proto, p.host)?;
    }
    Ok(0)
}

pub async fn command(rt: &Boxlite, cmd: NetworkCommand) -> Result<i32> {
    match cmd {
        NetworkCommand::Log { denied, format, id } => {
            let b = rt.get(&id).await?;
            let entries: Vec<_> = b
                .network_log()
                .await?
                .into_iter()
                .filter(|e| !denied || e.verdict == "deny")
                .collect();
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&entries)?),
                "table" => {
                    let mut out = std::io::stdout().lock();
                    writeln!(
                        out,
                        "{:<8}  {:<7}  {:<5}  {:<28}  {:<24}  REASON",
                        "WHEN", "KIND", "VERDICT", "DESTINATION", "NAME"
                    )?;
                    for e in &entries {
                        let dst = match (&e.dst, e.proto) {
                            (Some(d), Some(p)) => format!("{d}/{p}"),
                            (Some(d), None) => d.clone(),
                            _ => "-".into(),
                        };
                        let name = e
                            .name
                            .clone()
                            .or_else(|| (!e.names.is_empty()).then(|| e.names.join(",")))
                            .unwrap_or_else(|| "-".into());
                        let reason = match &e.rule {
                            Some(r) if !e.reason.contains(r.as_str()) => {
                                format!("{} (rule {r})", e.reason)
                            }
                            _ => e.reason.clone(),
                        };
                        writeln!(
                            out,
                            "{:<8}  {:<7}  {:<5}  {:<28}  {:<24}  {}",
                            clock(e.ts_ms),
                            e.kind,
                            e.verdict,
                            dst,
                            name,
                            reason
                        )?;
                    }
                }
                other => bail!("invalid --format {other:?}; valid values are table and json"),
            }
            Ok(0)
        }
    }
}

/// HH:MM:SS (UTC) of a Unix time in milliseconds.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}
