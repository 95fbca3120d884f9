//! The harness the API's end-to-end tests share: a real server on 127.0.0.1.

use boxlite_server::auth::ApiKey;
use boxlite_server::{ServeConfig, ServeError, Server};
use boxlite_testkit::TestHome;

/// A server on an ephemeral loopback port, stopped on drop.
pub struct TestServer {
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    pub async fn start(h: &TestHome, key: Option<&str>) -> TestServer {
        let cfg = ServeConfig::new("127.0.0.1:0".parse().unwrap(), key.and_then(ApiKey::new));
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

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}
