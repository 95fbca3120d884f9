//! A 1 GiB file copied into a box and back out, with the host's memory staying flat.
//! Its own test binary, so the process's peak RSS belongs to this copy alone.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use boxlite::{BoxOptions, CopyOptions, VolumeSpec};
use boxlite_testkit::TestHome;
use sha2::{Digest, Sha256};

const SIZE: u64 = 1 << 30;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Reset the peak RSS counter (`VmHWM`) to the current RSS.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

fn sha256_file(path: &std::path::Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gib_file_copies_in_and_out_intact_with_bounded_host_memory() {
    let h = TestHome::new();
    let host = h.home.join("host");
    std::fs::create_dir_all(host.join("out")).unwrap();
    let src = host.join("big.bin");
    // Pseudo-random content, so neither side can get away with zeros or holes.
    let mut hash = Sha256::new();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..(SIZE >> 20) {
            for w in block.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
            hash.update(&block);
            f.write_all(&block).unwrap();
        }
    }
    let want = format!("{:x}", hash.finalize());
    let rt = h.runtime();
    // The image's root filesystem is small; a volume holds the file on the host's disk.
    let b = rt
        .create(BoxOptions::new("boxlite/busybox").volume(VolumeSpec::anonymous("/data")))
        .await
        .unwrap();
    b.start().await.unwrap();
    let opts = CopyOptions::default();

    let rss_before = status_kib("VmRSS:");
    reset_peak();
    let t0 = Instant::now();
    let sent = b.copy_in(&src, "/data", &opts).await.unwrap();
    let t_in = t0.elapsed();
    let t1 = Instant::now();
    let got = b
        .copy_out("/data/big.bin", host.join("out"), &opts)
        .await
        .unwrap();
    let t_out = t1.elapsed();
    let peak = status_kib("VmHWM:");
    let have = sha256_file(&host.join("out/big.bin"));

    let mb = SIZE as f64 / 1e6;
    eprintln!(
        "1 GiB copy_in {:.1} s ({:.1} MB/s), copy_out {:.1} s ({:.1} MB/s); host RSS before {} MiB, peak during {} MiB",
        t_in.as_secs_f64(),
        mb / t_in.as_secs_f64(),
        t_out.as_secs_f64(),
        mb / t_out.as_secs_f64(),
        rss_before / 1024,
        peak / 1024
    );
    assert_eq!(sent.bytes, SIZE);
    assert_eq!(got.bytes, SIZE);
    assert_eq!(have, want);
    // Bounded: a few channel chunks and HTTP/2 windows, nowhere near the file's size.
    assert!(
        peak < rss_before + 64 * 1024,
        "peak RSS {peak} KiB against {rss_before} KiB before"
    );
    b.stop(Duration::from_secs(10)).await.unwrap();
    rt.remove(&b, false).await.unwrap();
}
