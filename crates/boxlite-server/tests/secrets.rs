//! Secrets through the API: only literal values, never the server's environment or
//! files; a value never in a response; an empty host list refused. No VM boots.

mod common;

use boxlite_testkit::TestHome;
use common::TestServer;

const VALUE: &str = "sk-api-3b1f0c";

async fn create(c: &reqwest::Client, s: &TestServer, secret: serde_json::Value) -> (u16, String) {
    let resp = c
        .post(format!("{}/v1/boxes", s.base))
        .json(&serde_json::json!({"image": "boxlite/busybox", "secrets": [secret]}))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_box_shows_its_secrets_without_their_values() {
    let h = TestHome::new();
    let s = TestServer::start(&h, None).await;
    let c = reqwest::Client::new();

    let (status, body) = create(
        &c,
        &s,
        serde_json::json!({"name": "API_KEY", "value": VALUE, "hosts": ["api.test"]}),
    )
    .await;
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = created["box_id"].as_str().unwrap();
    let got = c
        .get(format!("{}/v1/boxes/{id}", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let listed = c
        .get(format!("{}/v1/boxes", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert_eq!(status, 201, "{body}");
    assert_eq!(
        created["secrets"],
        serde_json::json!([{"name": "API_KEY", "hosts": ["api.test"],
            "placeholder": "<BOXLITE_SECRET:API_KEY>"}])
    );
    for text in [&body, &got, &listed] {
        assert!(!text.contains(VALUE), "{text}");
        assert!(text.contains("<BOXLITE_SECRET:API_KEY>"), "{text}");
    }
    let rm = c
        .delete(format!("{}/v1/boxes/{id}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(rm.status(), 204);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_hosts_and_env_or_file_sources_are_refused_with_400() {
    let h = TestHome::new();
    let s = TestServer::start(&h, None).await;
    let c = reqwest::Client::new();
    let cases = [
        (
            serde_json::json!({"name": "K", "value": VALUE, "hosts": []}),
            "has no hosts",
        ),
        (
            serde_json::json!({"name": "K", "value": VALUE}),
            "has no hosts",
        ),
        (
            serde_json::json!({"name": "K", "env": "HOME", "hosts": ["a.test"]}),
            "unknown field `env`",
        ),
        (
            serde_json::json!({"name": "K", "value": VALUE, "file": "/etc/shadow", "hosts": ["a.test"]}),
            "unknown field `file`",
        ),
        (
            serde_json::json!({"name": "K", "value": VALUE, "hosts": ["10.0.0.1"]}),
            "not a valid host name",
        ),
    ];

    for (secret, want) in cases {
        let (status, body) = create(&c, &s, secret.clone()).await;

        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert_eq!(status, 400, "{secret}: {body}");
        assert!(msg.contains(want), "{secret}: {msg}");
        assert!(!msg.contains(VALUE), "{msg}");
    }
    assert!(h.box_dirs().is_empty(), "{:?}", h.box_dirs());
    s.stop().await;
}
