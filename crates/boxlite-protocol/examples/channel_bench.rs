//! The agent channel's own cost, in memory (no VM): one host link and one guest link over
//! an in-process pipe, each direction streaming 256 MiB through one stream, then 1,000
//! stream openings with a one-byte round trip each. Prints figures; asserts nothing.
//! Under TCG the guest side runs about ten times slower than here; `bench/exec.sh` has
//! the end-to-end figures.
//!
//!     cargo run --release -p boxlite-protocol --example channel_bench

use std::sync::Arc;
use std::time::Instant;

use boxlite_protocol::channel::{LinkStats, Stream, host_link, run_guest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const TOTAL: usize = 256 << 20;

async fn serve(mut s: Stream) {
    let mut cmd = [0u8; 1];
    if s.read_exact(&mut cmd).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    match cmd[0] {
        // Sink: read everything, answer with one byte.
        b's' => {
            let mut n = 0;
            while let Ok(k) = s.read(&mut buf).await {
                if k == 0 {
                    break;
                }
                n += k;
            }
            let _ = s.write_all(&[u8::from(n == TOTAL)]).await;
        }
        // Source: write TOTAL bytes.
        b'o' => {
            let mut left = TOTAL;
            while left > 0 {
                let k = left.min(buf.len());
                if s.write_all(&buf[..k]).await.is_err() {
                    return;
                }
                left -= k;
            }
        }
        // Ping.
        _ => {
            let _ = s.write_all(&cmd).await;
        }
    }
    let _ = s.shutdown().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (host_end, guest_end) = tokio::io::duplex(256 * 1024);
    let (link, driver) = host_link();
    tokio::spawn(async move {
        let (r, w) = tokio::io::split(host_end);
        let _ = driver.run(r, w).await;
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (r, w) = tokio::io::split(guest_end);
        let _ = run_guest(r, w, tx, Arc::new(LinkStats::default()), |_| {}).await;
    });
    tokio::spawn(async move {
        while let Some(s) = rx.recv().await {
            tokio::spawn(serve(s));
        }
    });

    let (_, mut s) = link.open().await.expect("open");
    let t = Instant::now();
    s.write_all(b"s").await.unwrap();
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..TOTAL / chunk.len() {
        s.write_all(&chunk).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let mut ok = [0u8; 1];
    s.read_exact(&mut ok).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "host to guest, one stream:   {:8.0} MB/s  (all bytes arrived: {})",
        TOTAL as f64 / secs / 1e6,
        ok[0] == 1
    );

    let (_, mut s) = link.open().await.expect("open");
    let t = Instant::now();
    s.write_all(b"o").await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0;
    loop {
        let k = s.read(&mut buf).await.unwrap();
        if k == 0 {
            break;
        }
        n += k;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "guest to host, one stream:   {:8.0} MB/s  ({} bytes)",
        n as f64 / secs / 1e6,
        n
    );

    let mut samples = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        let (_, mut s) = link.open().await.expect("open");
        s.write_all(b"p").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "open a stream + 1-byte echo: {:8.1} us median, {:.1} us p99 (n=1000)",
        samples[500], samples[990]
    );
}
