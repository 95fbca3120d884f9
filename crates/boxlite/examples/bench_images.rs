//! Image figures for `bench/images.sh`: pull plus root filesystem build of an image from
//! a local registry, cold (empty store) and warm (everything cached), as one layer and as
//! five, built on the host (the default) and, for comparison, in the builder VM; the
//! same pull by `skopeo copy` to a directory as a yardstick; the peak memory of a build;
//! and the time to a first exec in a box of a cached image. Prints medians and spreads;
//! asserts nothing.
//!
//!   bench_images RUNS LAYER.tar
//!
//! `BENCH_LAYER_COMPRESSION=none|gzip|zstd` (default gzip); `BENCH_VM=0` skips the
//! builder VM runs.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use boxlite::images::registry::Progress;
use boxlite::{BoxCommand, BoxOptions, Boxlite, ImageBuilder, RuntimeOptions};
use boxlite_testkit::Registry;
use boxlite_testkit::oci::{Comp, TestImage};

#[path = "common/mod.rs"]
mod common;
use common::stats;

fn runtime(home: &Path, reg: &Registry, builder: ImageBuilder) -> Result<Boxlite, boxlite::Error> {
    std::fs::create_dir_all(home).expect("home");
    std::fs::write(
        home.join("config.toml"),
        format!("[registries.\"{}\"]\ninsecure_http = true\n", reg.addr),
    )
    .expect("config");
    Boxlite::new(RuntimeOptions {
        home: Some(home.to_path_buf()),
        image_builder: Some(builder),
        ..Default::default()
    })
}

/// This process's peak resident set since the last reset, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process's resident set now, in MiB.
fn rss_mib() -> f64 {
    status_kib(&format!("/proc/{}/status", std::process::id()), "VmRSS:") / 1024.0
}

fn status_kib(path: &str, field: &str) -> f64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// The watcher runs on its own thread, never a runtime worker.
#[allow(clippy::disallowed_methods)]
fn pause_5ms() {
    std::thread::sleep(std::time::Duration::from_millis(5));
}

/// Watches this process's `mke2fs` children every 5 ms and keeps the largest peak
/// resident set seen (`getrusage` cannot tell: a child's figure includes the parent's
/// memory it was forked with).
struct ChildPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<f64>,
}

impl ChildPeak {
    fn start(name: &'static str) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let me = std::process::id().to_string();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut peak: f64 = 0.0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                        let dir = e.path();
                        let status =
                            std::fs::read_to_string(dir.join("status")).unwrap_or_default();
                        let is_child = status
                            .lines()
                            .any(|l| l.strip_prefix("PPid:").is_some_and(|p| p.trim() == me));
                        let named = status
                            .lines()
                            .next()
                            .is_some_and(|l| l.trim_start_matches("Name:").trim() == name);
                        if is_child && named {
                            let kib =
                                status_kib(&dir.join("status").display().to_string(), "VmHWM:");
                            peak = peak.max(kib / 1024.0);
                        }
                    }
                    pause_5ms();
                }
                peak
            }
        });
        ChildPeak { stop, thread }
    }

    fn finish(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0.0)
    }
}

/// Split one layer's entries into `n` consecutive layers.
fn split(tar: &[u8], n: usize) -> Vec<Vec<u8>> {
    let mut entries = Vec::new();
    let mut a = tar::Archive::new(tar);
    for e in a.entries().expect("tar") {
        let mut e = e.expect("entry");
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("data");
        let mut h = e.header().clone();
        let path = e.path_bytes().into_owned();
        let link = e.link_name_bytes().map(|l| l.into_owned());
        let pax: Vec<(String, Vec<u8>)> = e
            .pax_extensions()
            .ok()
            .flatten()
            .map(|x| {
                x.filter_map(Result::ok)
                    .filter_map(|r| Some((r.key().ok()?.to_string(), r.value_bytes().to_vec())))
                    .filter(|(k, _)| k.starts_with("SCHILY.xattr."))
                    .collect()
            })
            .unwrap_or_default();
        h.set_size(data.len() as u64);
        entries.push((h, path, link, pax, data));
    }
    let per = entries.len().div_ceil(n);
    entries
        .chunks(per)
        .map(|chunk| {
            let mut b = tar::Builder::new(Vec::new());
            for (h, path, link, pax, data) in chunk {
                let mut h = h.clone();
                if !pax.is_empty() {
                    b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), &v[..])))
                        .expect("pax");
                }
                let path = String::from_utf8_lossy(path).to_string();
                match link {
                    Some(l) => {
                        let l = String::from_utf8_lossy(l).to_string();
                        b.append_link(&mut h, &path, &l).expect("link");
                    }
                    None => b.append_data(&mut h, &path, &data[..]).expect("entry"),
                }
            }
            b.into_inner().expect("tar")
        })
        .collect()
}

struct Cold {
    total: Vec<f64>,
    build: Vec<f64>,
    plan: Vec<f64>,
    boot: Vec<f64>,
    apply: Vec<f64>,
    finish: Vec<f64>,
    warm: Vec<f64>,
    /// This process's peak resident set during the pull, above what it held before.
    peak: Vec<f64>,
    mke2fs: Vec<f64>,
}

async fn cold_pulls(
    reg: &Registry,
    reference: &str,
    builder: ImageBuilder,
    runs: usize,
    scratch: &Path,
) -> Result<Cold, boxlite::Error> {
    let mut c = Cold {
        total: Vec::new(),
        build: Vec::new(),
        plan: Vec::new(),
        boot: Vec::new(),
        apply: Vec::new(),
        finish: Vec::new(),
        warm: Vec::new(),
        peak: Vec::new(),
        mke2fs: Vec::new(),
    };
    for i in 0..runs {
        let home = scratch.join(format!("cold-{builder:?}-{i}"));
        let rt = runtime(&home, reg, builder)?;
        let built = std::sync::Mutex::new(None);
        reset_peak_rss();
        let before = rss_mib();
        let watch = ChildPeak::start("mke2fs");
        let t = Instant::now();
        rt.pull(reference, &|p| {
            if let Progress::Built { ms, build, .. } = p {
                *built.lock().unwrap() = Some((ms, build));
            }
        })
        .await?;
        c.total.push(t.elapsed().as_secs_f64());
        c.peak.push(peak_rss_mib() - before);
        c.mke2fs.push(watch.finish());
        if let Some((ms, Some(b))) = built.lock().unwrap().take() {
            let s = |ms: u64| ms as f64 / 1000.0;
            c.build.push(s(ms));
            c.plan.push(s(b.plan_ms));
            c.boot.push(s(b.boot_ms));
            c.apply.push(s(b.apply_ms));
            c.finish.push(s(b.finish_ms));
        }
        let t = Instant::now();
        rt.pull(reference, &|_| {}).await?;
        c.warm.push(t.elapsed().as_secs_f64());
        drop(rt);
        let _ = std::fs::remove_dir_all(&home);
    }
    Ok(c)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn skopeo(reference: &str, runs: usize, scratch: &Path) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..runs {
        let dst = scratch.join(format!("skopeo{i}"));
        let t = Instant::now();
        // The yardstick, timed as a whole process; the benchmark has nothing else to do.
        #[allow(clippy::disallowed_methods)]
        let st = std::process::Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("dir:{}", dst.display()))
            .status();
        match st {
            Ok(s) if s.success() => out.push(t.elapsed().as_secs_f64()),
            other => {
                println!("skopeo copy failed ({other:?}); no yardstick");
                break;
            }
        }
        let _ = std::fs::remove_dir_all(&dst);
    }
    out
}

fn report(name: &str, c: Cold, skopeo_median: Option<f64>, vm: bool) {
    let total = median(&c.total);
    stats(&format!("{name}: pull + rootfs build, cold"), "s", c.total);
    stats("  of which the rootfs build", "s", c.build);
    stats("    layers read (headers, plan)", "s", c.plan);
    if vm {
        stats("    builder VM boot", "s", c.boot);
        stats("    tree written by the builder VM", "s", c.apply);
        stats("    e2fsck, shrink, store", "s", c.finish);
    } else {
        stats("    tree written by mke2fs", "s", c.apply);
    }
    stats("  peak RSS of the pull, above the process's", "MiB", c.peak);
    if !vm {
        stats("  peak RSS of mke2fs (sampled every 5 ms)", "MiB", c.mke2fs);
    }
    stats(&format!("{name}: pull, warm (all cached)"), "s", c.warm);
    if let Some(s) = skopeo_median {
        println!(
            "{:<44} {:.2}x skopeo (pull+build cold / skopeo copy, medians)",
            "  ratio",
            total / s
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), boxlite::Error> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let layer = std::fs::read(args.get(2).expect("usage: bench_images RUNS LAYER.tar"))
        .expect("reading the layer tar");
    let reg = Registry::start();
    // BENCH_LAYER_COMPRESSION=none|gzip|zstd (default gzip, as registries serve).
    let comp = match std::env::var("BENCH_LAYER_COMPRESSION").as_deref() {
        Ok("none") => Comp::None,
        Ok("zstd") => Comp::Zstd,
        _ => Comp::Gzip,
    };
    let run = serde_json::json!({"Cmd": ["python3"], "Env": ["LANG=C.UTF-8"]});
    let one = TestImage::from_tars(vec![(layer.clone(), comp)], run.clone());
    one.push(&reg, "bench/python", "1");
    let five = TestImage::from_tars(
        split(&layer, 5).into_iter().map(|t| (t, comp)).collect(),
        run,
    );
    five.push(&reg, "bench/python", "5");
    let size = |img: &TestImage| img.layers.iter().map(|l| l.data.len()).sum::<usize>();
    println!(
        "image: one {comp:?} layer of {:.1} MB as pushed ({:.1} MB of tar); the same tree as five layers, {:.1} MB",
        size(&one) as f64 / 1e6,
        layer.len() as f64 / 1e6,
        size(&five) as f64 / 1e6
    );
    // Only the registry holds the images now: the pulls' memory is measured from here.
    drop((layer, one, five));
    let scratch = std::env::temp_dir().join(format!("boxlite-bench-img-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch directory");

    for (tag, name) in [("1", "1 layer"), ("5", "5 layers")] {
        let reference = format!("{}/bench/python:{tag}", reg.addr);
        let sk = skopeo(&reference, runs, &scratch);
        let sk_median = (!sk.is_empty()).then(|| median(&sk));
        if !sk.is_empty() {
            stats(&format!("{name}: skopeo copy to a directory"), "s", sk);
        }
        let c = cold_pulls(&reg, &reference, ImageBuilder::Host, runs, &scratch).await?;
        report(&format!("{name}, host"), c, sk_median, false);
        if std::env::var("BENCH_VM").as_deref() != Ok("0") && tag == "1" {
            let c = cold_pulls(&reg, &reference, ImageBuilder::Vm, runs, &scratch).await?;
            report(&format!("{name}, builder VM"), c, sk_median, true);
        }
    }

    // A box on a cached image: create, boot, first exec answered.
    let reference = format!("{}/bench/python:1", reg.addr);
    let home = scratch.join("boxes");
    let rt = runtime(&home, &reg, ImageBuilder::Auto)?;
    rt.pull(&reference, &|_| {}).await?;
    let mut first = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let b = rt.create(BoxOptions::new(&reference)).await?;
        b.exec(BoxCommand::new("true")).await?.wait().await?;
        first.push(t.elapsed().as_secs_f64());
        b.remove(true).await?;
    }
    stats("time to first exec, cached image", "s", first);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
