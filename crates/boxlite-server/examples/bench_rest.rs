//! REST figures for `bench/rest.sh`: the same operations through `boxlite serve` (an
//! in-process server on 127.0.0.1, a real HTTP client) and through the library, side by
//! side in one run; and an exec's output streamed over the WebSocket. Prints medians and
//! spreads; asserts nothing.
//!
//!   bench_rest RUNS

use std::time::Instant;

use boxlite::{BoxCommand, BoxOptions, Boxlite};
use boxlite_server::auth::ApiKey;
use boxlite_server::{ServeConfig, Server};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[path = "../../boxlite/examples/common/mod.rs"]
mod common;
use common::stats;

/// Exec over the API and read the attach socket to its end; the bytes of stdout.
async fn api_exec(c: &reqwest::Client, base: &str, id: &str, cmd: &str, args: &[&str]) -> usize {
    let r: serde_json::Value = c
        .post(format!("{base}/v1/boxes/{id}/exec"))
        .bearer_auth("k")
        .json(&serde_json::json!({"command": cmd, "args": args}))
        .send()
        .await
        .expect("exec")
        .json()
        .await
        .expect("exec body");
    let eid = r["execution_id"].as_str().expect("execution_id");
    let mut req = format!(
        "{}/v1/boxes/{id}/executions/{eid}/attach",
        base.replace("http://", "ws://")
    )
    .into_client_request()
    .expect("request");
    req.headers_mut()
        .insert("authorization", "Bearer k".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("attach");
    let mut n = 0;
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Binary(b) if b.first() == Some(&1) => n += b.len() - 1,
            Message::Close(_) => break,
            _ => {}
        }
    }
    n
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), boxlite::Error> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rt = Boxlite::from_env()?;
    let server = Server::bind(
        rt.clone(),
        ServeConfig::new("127.0.0.1:0".parse().expect("addr"), ApiKey::new("k")),
    )
    .await
    .expect("bind");
    let base = format!("http://{}", server.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let c = reqwest::Client::new();

    // Create (no boot), both ways.
    let (mut api_create, mut lib_create) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let r: serde_json::Value = c
            .post(format!("{base}/v1/boxes"))
            .bearer_auth("k")
            .json(&serde_json::json!({"image": "boxlite/busybox"}))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("create body");
        api_create.push(t.elapsed().as_secs_f64() * 1000.0);
        let id = r["box_id"].as_str().expect("box_id").to_string();
        let b = rt.get(&id).await?;
        rt.remove(&b, true).await?;
        let t = Instant::now();
        let b = rt.create(BoxOptions::new("boxlite/busybox")).await?;
        lib_create.push(t.elapsed().as_secs_f64() * 1000.0);
        rt.remove(&b, true).await?;
    }
    stats("create, API", "ms", api_create);
    stats("create, library", "ms", lib_create);

    // One running box for the rest.
    let b = rt.create(BoxOptions::new("boxlite/busybox")).await?;
    b.start().await?;
    let id = b.id().to_string();
    let (mut api_get, mut lib_get, mut health) = (Vec::new(), Vec::new(), Vec::new());
    let mut lib_ping = Vec::new();
    let (mut api_rtt, mut lib_rtt) = (Vec::new(), Vec::new());
    for _ in 0..runs * 3 {
        let t = Instant::now();
        let _ = c.get(format!("{base}/health")).send().await;
        health.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        b.ping(std::time::Duration::from_secs(10)).await?;
        lib_ping.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let _ = c
            .get(format!("{base}/v1/boxes/{id}"))
            .bearer_auth("k")
            .send()
            .await
            .expect("get");
        api_get.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let _ = rt.get(&id).await?.info().await?;
        lib_get.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        api_exec(&c, &base, &id, "true", &[]).await;
        api_rtt.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        b.exec(BoxCommand::new("true")).await?.wait().await?;
        lib_rtt.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    stats("ping, API (GET /health: the HTTP floor)", "ms", health);
    stats("ping, library (the box's agent)", "ms", lib_ping);
    stats("box info, API", "ms", api_get);
    stats("box info, library", "ms", lib_get);
    stats("exec `true` round trip, API (POST + attach)", "ms", api_rtt);
    stats("exec `true` round trip, library", "ms", lib_rtt);

    // Streaming: 64 MiB of stdout.
    let (mut api_mbs, mut lib_mbs) = (Vec::new(), Vec::new());
    let args = ["-c", "head -c 67108864 /dev/zero"];
    for _ in 0..runs.clamp(1, 5) {
        let t = Instant::now();
        let n = api_exec(&c, &base, &id, "sh", &args).await;
        api_mbs.push(n as f64 / 1e6 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut ex = b.exec(BoxCommand::new("sh").args(args)).await?;
        let n = ex.take_stdout().expect("stdout").read_to_end().await?.len();
        ex.wait().await?;
        lib_mbs.push(n as f64 / 1e6 / t.elapsed().as_secs_f64());
    }
    stats("exec stdout 64 MiB, API over WebSocket", "MB/s", api_mbs);
    stats("exec stdout 64 MiB, library", "MB/s", lib_mbs);

    rt.remove(&b, true).await?;
    let _ = stop.send(());
    let _ = task.await;
    Ok(())
}
