//! The library's side of `bench/c.sh`: the same three figures as `bench/c_bench.c`
//! (exec round trip of `true`, 50 concurrent `true`s, 64 MiB of stdout), through the Rust
//! API directly, so the C ABI's post-and-drain cost reads as a ratio. Prints the same
//! line format.

use std::time::Instant;

use boxlite::{BoxCommand, BoxOptions, Boxlite};

#[tokio::main]
async fn main() -> Result<(), boxlite::Error> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let rt = Boxlite::from_env()?;
    let mut o = BoxOptions::new("boxlite/busybox");
    o.auto_remove = true;
    let b = rt.create(o).await?;
    b.start().await?;
    let sh = |c: &str| BoxCommand::new("sh").arg("-c").arg(c);
    b.exec(sh("true")).await?.wait().await?;

    print!("exec_rtt ms");
    for _ in 0..runs * 10 {
        let t = Instant::now();
        b.exec(sh("true")).await?.wait().await?;
        print!(" {:.3}", t.elapsed().as_secs_f64() * 1000.0);
    }
    print!("\nexec_50way execs/s");
    for _ in 0..runs {
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (b, c) = (b.clone(), sh("true"));
            set.spawn(async move { b.exec(c).await?.wait().await.map_err(boxlite::Error::from) });
        }
        while let Some(r) = set.join_next().await {
            r.expect("task")?;
        }
        print!(" {:.1}", 50.0 / t.elapsed().as_secs_f64());
    }
    print!("\nstream_64MiB MB/s");
    for _ in 0..runs {
        let t = Instant::now();
        let mut ex = b.exec(sh("head -c 67108864 /dev/zero")).await?;
        let mut out = ex.take_stdout().expect("stdout");
        let mut n = 0usize;
        while let Some(chunk) = out.next_chunk().await {
            n += chunk?.len();
        }
        ex.wait().await?;
        assert_eq!(n, 64 << 20);
        print!(" {:.1}", 67.108864 / t.elapsed().as_secs_f64());
    }
    println!();
    b.stop(std::time::Duration::from_secs(10)).await?;
    Ok(())
}
