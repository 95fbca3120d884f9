//! `boxlite stats`: live figures of running boxes.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Result, bail};
use boxlite::{BoxMetrics, BoxState, Boxlite};

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

async fn snapshot(rt: &Boxlite, keys: &[String]) -> Result<Vec<BoxMetrics>> {
    let keys_or_running: Vec<String> = if keys.is_empty() {
        rt.list()
            .await?
            .into_iter()
            .filter(|b| b.state == BoxState::Running)
            .map(|b| b.id)
            .collect()
    } else {
        keys.to_vec()
    };
    let mut boxes = Vec::with_capacity(keys_or_running.len());
    for k in &keys_or_running {
        boxes.push(rt.get(k).await?);
    }
    let mut out = Vec::with_capacity(boxes.len());
    for b in boxes {
        match b.metrics().await {
            Ok(m) => out.push(m),
            // A box that stopped between listing and asking is simply not shown.
            Err(e) if keys.is_empty() => tracing::debug!(box_id = b.id(), error = %e, "stats"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// One line of the stats table, as plain data (from the library here, from a server
/// with `--url`).
#[derive(Debug, Default)]
pub(crate) struct StatRow {
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    pub(crate) cpu_percent: Option<f64>,
    pub(crate) mem_used_total: Option<(u64, u64)>,
    pub(crate) vmm_rss_bytes: Option<u64>,
    pub(crate) disk_overlay_bytes: u64,
    pub(crate) execs_started: Option<u64>,
    pub(crate) ready_ms: Option<u64>,
    pub(crate) net_in_out: Option<(u64, u64)>,
    pub(crate) denied: Option<u64>,
}

fn rows(now: &[BoxMetrics], before: &HashMap<String, BoxMetrics>) -> Vec<StatRow> {
    now.iter()
        .map(|m| StatRow {
            id: m.id.clone(),
            name: m.name.clone(),
            cpu_percent: before
                .get(&m.id)
                .and_then(|b| m.cpu_percent_since(b))
                .or(m.cpu_percent),
            mem_used_total: m.mem_used_bytes.zip(m.mem_total_bytes),
            vmm_rss_bytes: m.vmm_rss_bytes,
            disk_overlay_bytes: m.disk_overlay_bytes,
            execs_started: m.execs_started,
            ready_ms: m.boot.map(|b| b.ready_ms),
            net_in_out: m.network.as_ref().map(|n| (n.bytes_in, n.bytes_out)),
            denied: m.network.as_ref().map(|n| n.denied),
        })
        .collect()
}

pub(crate) fn table(now: &[StatRow]) -> String {
    let mut s = format!(
        "{:<12}  {:<16}  {:>7}  {:>21}  {:>10}  {:>10}  {:>6}  {:>8}  {:>21}  {:>6}\n",
        "BOX ID",
        "NAME",
        "CPU %",
        "MEM USED / TOTAL",
        "HOST RSS",
        "DISK",
        "EXECS",
        "BOOT",
        "NET IN / OUT",
        "DENIED"
    );
    for m in now {
        let mem = match m.mem_used_total {
            Some((u, t)) => format!("{} / {}", bytes(u), bytes(t)),
            _ => "-".into(),
        };
        let net = m
            .net_in_out
            .map(|(i, o)| format!("{} / {}", bytes(i), bytes(o)));
        s.push_str(&format!(
            "{:<12}  {:<16}  {:>7}  {:>21}  {:>10}  {:>10}  {:>6}  {:>8}  {:>21}  {:>6}\n",
            m.id.chars().take(12).collect::<String>(),
            m.name.as_deref().unwrap_or("-"),
            opt(m.cpu_percent, |c| format!("{c:.1}%")),
            mem,
            opt(m.vmm_rss_bytes, bytes),
            bytes(m.disk_overlay_bytes),
            opt(m.execs_started, |n| n.to_string()),
            opt(m.ready_ms, |ms| format!("{:.2}s", ms as f64 / 1000.0)),
            net.unwrap_or_else(|| "-".into()),
            opt(m.denied, |n| n.to_string()),
        ));
    }
    s
}

pub async fn run(rt: &Boxlite, keys: &[String], no_stream: bool, format: &str) -> Result<i32> {
    if !matches!(format, "table" | "json") {
        bail!("invalid --format {format:?}; valid values are table and json");
    }
    let mut before: HashMap<String, BoxMetrics> = HashMap::new();
    if no_stream {
        // Two samples, so CPU % is the recent figure rather than the average since boot.
        before = snapshot(rt, keys)
            .await?
            .into_iter()
            .map(|m| (m.id.clone(), m))
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    loop {
        let now = snapshot(rt, keys).await?;
        match format {
            "json" if no_stream => println!("{}", serde_json::to_string_pretty(&now)?),
            "json" => println!("{}", serde_json::to_string(&now)?),
            _ if no_stream => print!("{}", table(&rows(&now, &before))),
            // Clear the screen and redraw, as `docker stats` does.
            _ => print!("\x1b[2J\x1b[H{}", table(&rows(&now, &before))),
        }
        if no_stream {
            return Ok(0);
        }
        before = now.into_iter().map(|m| (m.id.clone(), m)).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(3 << 30), "3.0GiB");
    }
}
