//! Library-level benchmark figures for `bench/boot.sh`: creation to first output, exec
//! round trip, and the idle VMM's memory. Prints medians and spreads; asserts nothing.

use std::time::{Duration, Instant};

use boxlite::{BoxCommand, BoxOptions, Boxlite};

#[path = "common/mod.rs"]
mod common;
use common::stats;

/// (RSS, PSS) in MiB of a process, from /proc/<pid>/smaps_rollup.
fn rss_pss(pid: i32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("Rss:"), field("Pss:"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), boxlite::Error> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rt = Boxlite::from_env()?;

    let mut first_output = Vec::new();
    let mut rss = Vec::new();
    let mut pss = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let b = rt.create(BoxOptions::new("boxlite/busybox")).await?;
        let mut ex = b.exec(BoxCommand::new("echo").arg("x")).await?;
        let mut out = ex.take_stdout().expect("stdout");
        let _ = out.next_chunk().await;
        first_output.push(t.elapsed().as_secs_f64());
        ex.wait().await?;
        // Let the idle guest settle before measuring memory.
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some(pid) = b.info().await?.vmm_pid {
            let (r, p) = rss_pss(pid);
            rss.push(r);
            pss.push(p);
        }
        b.stop(Duration::from_secs(10)).await?;
        rt.remove(&b, false).await?;
    }
    stats("create to first exec output (library)", "s", first_output);

    let b = rt.create(BoxOptions::new("boxlite/busybox")).await?;
    b.start().await?;
    let mut rtt = Vec::new();
    for _ in 0..(runs * 5) {
        let t = Instant::now();
        let ex = b.exec(BoxCommand::new("true")).await?;
        ex.wait().await?;
        rtt.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    b.stop(Duration::from_secs(10)).await?;
    rt.remove(&b, false).await?;
    stats("exec round trip of `true`", "ms", rtt);
    stats("idle QEMU RSS", "MiB", rss);
    stats("idle QEMU PSS", "MiB", pss);
    Ok(())
}
