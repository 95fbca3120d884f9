//! The REST API end to end: a real server on 127.0.0.1 over a real home.

use boxlite_server::auth::ApiKey;
use boxlite_server::{ServeConfig, ServeError, Server};
use boxlite_testkit::TestHome;

/// A server on an ephemeral loopback port, stopped on drop.
struct TestServer {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    async fn start(h: &TestHome, key: Option<&str>) -> TestServer {
        let cfg = ServeConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            api_key: key.and_then(ApiKey::new),
        };
        let server = Server::bind(h.runtime(), cfg).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        TestServer {
            base: format!("http://{addr}"),
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_guards_every_route_but_health_and_is_required_off_loopback() {
    let h = TestHome::new();
    let s = TestServer::start(&h, Some("s3cret")).await;
    let c = reqwest::Client::new();
    let health = c.get(format!("{}/health", s.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("s3cret"),
        Some("Bearer s3cre"),
    ] {
        let mut r = c.get(format!("{}/v1/config", s.base));
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let ok = c
        .get(format!("{}/v1/config", s.base))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    s.stop().await;

    let open = ServeConfig {
        addr: "0.0.0.0:0".parse().unwrap(),
        api_key: None,
    };
    let err = Server::bind(h.runtime(), open).await.unwrap_err();
    assert!(matches!(err, ServeError::NoKeyOffLoopback(_)), "{err}");
    assert!(err.to_string().contains("BOXLITE_API_KEY"), "{err}");
}
