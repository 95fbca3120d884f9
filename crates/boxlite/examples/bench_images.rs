//! Image figures for `bench/images.sh`: pull plus root filesystem build of an image from
//! a local registry, cold (empty store) and warm (everything cached), the same pull by
//! `skopeo copy` to a directory as a yardstick, and the time to a first exec in a box
//! of a cached image. Prints medians and spreads; asserts nothing.
//!
//!   bench_images RUNS LAYER.tar

use std::path::Path;
use std::time::Instant;

use boxlite::{BoxCommand, BoxOptions, Boxlite, RuntimeOptions};
use boxlite_testkit::Registry;
use boxlite_testkit::oci::{Comp, TestImage};

#[path = "common/mod.rs"]
mod common;
use common::stats;

fn runtime(home: &Path, reg: &Registry) -> Result<Boxlite, boxlite::Error> {
    std::fs::create_dir_all(home).expect("home");
    std::fs::write(
        home.join("config.toml"),
        format!("[registries.\"{}\"]\ninsecure_http = true\n", reg.addr),
    )
    .expect("config");
    Boxlite::new(RuntimeOptions {
        home: Some(home.to_path_buf()),
        ..Default::default()
    })
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
    let img = TestImage::from_tars(
        vec![(layer, comp)],
        serde_json::json!({"Cmd": ["python3"], "Env": ["LANG=C.UTF-8"]}),
    );
    img.push(&reg, "bench/python", "latest");
    let size: usize = img.layers.iter().map(|l| l.data.len()).sum();
    println!(
        "image: one {comp:?} layer, {:.1} MB as pushed",
        size as f64 / 1e6
    );
    let reference = format!("{}/bench/python:latest", reg.addr);
    let scratch = std::env::temp_dir().join(format!("boxlite-bench-img-{}", std::process::id()));

    let (mut cold, mut build, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    let (mut boot, mut apply, mut finish) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let home = scratch.join(format!("cold{i}"));
        let rt = runtime(&home, &reg)?;
        let built = std::sync::Mutex::new(None);
        let t = Instant::now();
        rt.pull(&reference, &|p| {
            if let boxlite::images::registry::Progress::Built { ms, build, .. } = p {
                *built.lock().unwrap() = Some((ms, build));
            }
        })
        .await?;
        cold.push(t.elapsed().as_secs_f64());
        if let Some((ms, Some(b))) = built.lock().unwrap().take() {
            build.push(ms as f64 / 1000.0);
            boot.push(b.boot_ms as f64 / 1000.0);
            apply.push(b.apply_ms as f64 / 1000.0);
            finish.push(b.finish_ms as f64 / 1000.0);
        }
        let t = Instant::now();
        rt.pull(&reference, &|_| {}).await?;
        warm.push(t.elapsed().as_secs_f64());
        if i + 1 < runs {
            let _ = std::fs::remove_dir_all(&home);
        }
    }
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let cold_median = med(&cold);
    stats("pull + rootfs build, cold", "s", cold);
    stats("  of which the rootfs build", "s", build);
    stats("    builder boot", "s", boot);
    stats("    layers applied in the builder", "s", apply);
    stats("    e2fsck, shrink, store", "s", finish);
    stats("pull, warm (all cached)", "s", warm);

    let mut skopeo = Vec::new();
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
            Ok(s) if s.success() => skopeo.push(t.elapsed().as_secs_f64()),
            other => {
                println!("skopeo copy failed ({other:?}); no yardstick");
                break;
            }
        }
        let _ = std::fs::remove_dir_all(&dst);
    }
    if !skopeo.is_empty() {
        let s = med(&skopeo);
        stats("skopeo copy to a directory", "s", skopeo);
        println!(
            "{:<44} {:.2}x skopeo (pull+build cold / skopeo copy, medians)",
            "ratio",
            cold_median / s
        );
    }

    // A box on the cached image: create, boot, first exec answered.
    let rt = runtime(&scratch.join(format!("cold{}", runs - 1)), &reg)?;
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
