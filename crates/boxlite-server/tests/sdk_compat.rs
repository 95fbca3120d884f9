//! The compatibility test: BoxLite's released Python SDK (the version `scripts/setup.sh`
//! pins, installed into `build/compat-venv`), in REST mode, drives a real `boxlite serve`
//! over real boxes. See `tests/sdk_compat.py` for what it checks.

use boxlite_server::auth::ApiKey;
use boxlite_server::{ServeConfig, Server};
use boxlite_testkit::TestHome;

fn venv_python() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join("build/compat-venv/bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boxlites_released_python_sdk_drives_boxlite_serve() {
    let python = venv_python();
    assert!(
        python.exists(),
        "{} is missing: scripts/setup.sh installs BoxLite's SDK there",
        python.display()
    );
    let h = TestHome::new();
    let cfg = ServeConfig::new("127.0.0.1:0".parse().unwrap(), ApiKey::new("compat-key"));
    let server = Server::bind(h.runtime(), cfg).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk_compat.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .env("URL", format!("http://{addr}"))
        .env("KEY", "compat-key")
        .output()
        .await
        .unwrap();
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
