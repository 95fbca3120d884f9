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
        assert_eq!(body["error"]["code"], "unauthenticated");
        assert_eq!(body["error"]["type"], "AuthError");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_lives_its_whole_life_through_the_api() {
    let h = TestHome::new();
    let s = TestServer::start(&h, Some("k")).await;
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}/v1{p}", s.base);
    let json = |r: reqwest::Response| async move {
        let st = r.status().as_u16();
        (st, r.json::<serde_json::Value>().await.unwrap_or_default())
    };

    // What the released Python SDK sends, unknown fields included.
    let body = serde_json::json!({"name": "life", "image": "boxlite/busybox",
        "network": {"mode": "disabled"}, "detach": false, "auto_stop": 600});
    let (st, created) = json(
        c.post(url("/boxes"))
            .bearer_auth("k")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    let id = created["box_id"].as_str().unwrap().to_string();
    assert_eq!(created["name"], "life");
    assert_eq!(created["status"], "configured");
    assert_eq!(created["image"], "boxlite/busybox:latest");
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    for field in ["updated_at", "cpus", "memory_mib"] {
        assert!(!created[field].is_null(), "{field}: {created}");
    }

    // A second box of that name, and a host path, are refused with the document's body.
    let (st, dup) = json(
        c.post(url("/boxes"))
            .bearer_auth("k")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (st, dup["error"]["code"].as_str()),
        (409, Some("already_exists")),
        "{dup}"
    );
    let host = serde_json::json!({"image": "boxlite/busybox",
        "volumes": [{"host_path": "/etc", "guest_path": "/etc2"}]});
    let (st, err) = json(
        c.post(url("/boxes"))
            .bearer_auth("k")
            .json(&host)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (st, err["error"]["type"].as_str()),
        (400, Some("InvalidArgumentError")),
        "{err}"
    );
    let (st, _) = json(
        c.post(url("/boxes"))
            .bearer_auth("k")
            .body("{not json")
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 400);

    // By name and by id; HEAD; the list.
    let (st, by_name) = json(
        c.get(url("/boxes/life"))
            .bearer_auth("k")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, by_name["box_id"].as_str()), (200, Some(id.as_str())));
    let head = c
        .head(url(&format!("/boxes/{id}")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 204);
    let (st, list) = json(c.get(url("/boxes")).bearer_auth("k").send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(list["boxes"].as_array().unwrap().len(), 1, "{list}");

    // Start and stop answer with the box.
    let (st, started) = json(
        c.post(url(&format!("/boxes/{id}/start")))
            .bearer_auth("k")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (st, started["status"].as_str()),
        (200, Some("running")),
        "{started}"
    );
    assert!(started["pid"].as_u64().is_some(), "{started}");
    let (st, busy) = json(
        c.delete(url(&format!("/boxes/{id}")))
            .bearer_auth("k")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (st, busy["error"]["code"].as_str()),
        (409, Some("invalid_state")),
        "{busy}"
    );
    let (st, stopped) = json(
        c.post(url(&format!("/boxes/{id}/stop")))
            .bearer_auth("k")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (st, stopped["status"].as_str()),
        (200, Some("stopped")),
        "{stopped}"
    );

    let del = c
        .delete(url(&format!("/boxes/{id}")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    let (st, gone) = json(
        c.get(url("/boxes/life"))
            .bearer_auth("k")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (st, gone["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{gone}"
    );
    let head = c
        .head(url("/boxes/life"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    s.stop().await;
}
