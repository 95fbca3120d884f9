//! Exec, file transfer and terminal figures for `bench/exec.sh`: exec round trip,
//! execs per second under 50-way concurrency, copy_in/copy_out throughput (one 256 MiB
//! file, 10,000 small files) and TTY keystroke echo latency. Prints medians and
//! spreads; asserts nothing.

use std::time::{Duration, Instant};

use boxlite::{BoxCommand, BoxOptions, Boxlite, CopyOptions, LiteBox, VolumeSpec};

#[path = "common/mod.rs"]
mod common;
use common::stats;

const BIG: usize = 256 << 20;
const SMALL_FILES: usize = 10_000;

async fn exec_figures(b: &LiteBox, runs: usize) -> Result<(), boxlite::Error> {
    let mut rtt = Vec::new();
    for _ in 0..(runs * 10) {
        let t = Instant::now();
        b.exec(BoxCommand::new("true")).await?.wait().await?;
        rtt.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    stats("exec round trip of `true`", "ms", rtt);

    let mut rate = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..4 {
                    b.exec(BoxCommand::new("true")).await?.wait().await?;
                }
                Ok::<_, boxlite::Error>(())
            }));
        }
        for t in tasks {
            t.await.expect("exec task")?;
        }
        rate.push(200.0 / t.elapsed().as_secs_f64());
    }
    stats("`true` at 50-way concurrency", "exec/s", rate);
    Ok(())
}

async fn copy_figures(
    b: &LiteBox,
    runs: usize,
    scratch: &std::path::Path,
) -> Result<(), boxlite::Error> {
    let big = scratch.join("big.bin");
    let data: Vec<u8> = (0..BIG)
        .map(|i| i.wrapping_mul(2654435761).to_le_bytes()[1])
        .collect();
    std::fs::write(&big, &data).expect("writing the big file");
    drop(data);
    let small = scratch.join("small");
    for i in 0..SMALL_FILES {
        let d = small.join(format!("d{}", i / 500));
        if i % 500 == 0 {
            std::fs::create_dir_all(&d).expect("mkdir");
        }
        std::fs::write(d.join(format!("f{i}")), vec![b'x'; 100 + i % 1000]).expect("small file");
    }
    let small_bytes: f64 = (0..SMALL_FILES).map(|i| (100 + i % 1000) as f64).sum();
    let opts = CopyOptions::default();
    let (mut big_in, mut big_out, mut small_in, mut small_out) = (vec![], vec![], vec![], vec![]);
    let (mut small_in_fps, mut small_out_fps) = (vec![], vec![]);
    for r in 0..runs {
        let out = scratch.join(format!("out{r}"));
        std::fs::create_dir_all(&out).expect("mkdir");
        let t = Instant::now();
        b.copy_in(&big, "/data", &opts).await?;
        big_in.push(BIG as f64 / 1e6 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        b.copy_out("/data/big.bin", &out, &opts).await?;
        big_out.push(BIG as f64 / 1e6 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        b.copy_in(&small, "/root", &opts).await?;
        let s = t.elapsed().as_secs_f64();
        small_in.push(small_bytes / 1e6 / s);
        small_in_fps.push(SMALL_FILES as f64 / s);
        let t = Instant::now();
        b.copy_out("/root/small", &out, &opts).await?;
        let s = t.elapsed().as_secs_f64();
        small_out.push(small_bytes / 1e6 / s);
        small_out_fps.push(SMALL_FILES as f64 / s);
        b.exec(BoxCommand::new("rm").args(["-rf", "/root/small", "/data/big.bin"]))
            .await?
            .wait()
            .await?;
        std::fs::remove_dir_all(&out).expect("cleanup");
    }
    stats("copy_in 256 MiB file (to a volume)", "MB/s", big_in);
    stats("copy_out 256 MiB file (from a volume)", "MB/s", big_out);
    stats("copy_in 10,000 small files (rootfs)", "MB/s", small_in);
    stats(
        "copy_in 10,000 small files (rootfs)",
        "files/s",
        small_in_fps,
    );
    stats("copy_out 10,000 small files (rootfs)", "MB/s", small_out);
    stats(
        "copy_out 10,000 small files (rootfs)",
        "files/s",
        small_out_fps,
    );
    Ok(())
}

async fn tty_figures(b: &LiteBox, runs: usize) -> Result<(), boxlite::Error> {
    let mut ex = b
        .exec(BoxCommand::new("sh").stdin(true).tty(24, 80))
        .await?;
    let mut stdin = ex.take_stdin().expect("stdin");
    let mut out = ex.take_stdout().expect("stdout");
    // Wait for the prompt, then time single keystrokes until their echo arrives.
    let _ = out.next_chunk().await;
    let mut lat = Vec::new();
    for _ in 0..(runs * 10) {
        let t = Instant::now();
        stdin.write_all(b"x").await?;
        let mut seen = Vec::new();
        while !seen.contains(&b'x') {
            match out.next_chunk().await {
                Some(c) => seen.extend(c?),
                None => break,
            }
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    stdin.write_all(b"\nexit\n").await?;
    ex.wait().await?;
    stats("TTY keystroke echo latency", "ms", lat);
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), boxlite::Error> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rt = Boxlite::from_env()?;
    let scratch = rt.info().await.home.join("bench-scratch");
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let b = rt
        .create(BoxOptions::new("boxlite/busybox").volume(VolumeSpec::anonymous("/data")))
        .await?;
    b.start().await?;
    // Let the guest finish loading its background modules before timing.
    b.exec(BoxCommand::new("true")).await?.wait().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    exec_figures(&b, runs).await?;
    tty_figures(&b, runs).await?;
    copy_figures(&b, runs, &scratch).await?;

    b.stop(Duration::from_secs(10)).await?;
    rt.remove(&b, false).await?;
    std::fs::remove_dir_all(&scratch).expect("cleanup");
    Ok(())
}
