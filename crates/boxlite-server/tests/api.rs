//! The REST API end to end: a real server on 127.0.0.1 over a real home.

mod common;

use boxlite_server::auth::ApiKey;
use boxlite_server::{ServeConfig, ServeError, Server};
use boxlite_testkit::TestHome;
use common::TestServer;

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
    // Every operation the document lists, and the document itself, needs the key.
    let doc: serde_json::Value =
        serde_json::from_str(&boxlite_server::openapi::document()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = c
                .request(m, format!("{}{concrete}", s.base))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401, "{method} {path}");
            checked += 1;
        }
    }
    assert!(checked >= 28, "{checked} operations");
    let resp = c
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let served = c
        .get(format!("{}/openapi.json", s.base))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served, boxlite_server::openapi::document());
    // Unknown routes answer in the error envelope; the main-session attach says why not.
    for (path, status, code) in [
        ("/v1/nope", 404, "not_found"),
        ("/v1/boxes/b/attach", 400, "unsupported"),
    ] {
        let resp = c
            .get(format!("{}{path}", s.base))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }
    s.stop().await;

    let open = ServeConfig::new("0.0.0.0:0".parse().unwrap(), None);
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
        "network": {"mode": "disabled"}, "detach": false, "auto_stop": 0, "tty": false});
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
    let huge = format!("{{\"image\": \"{}\"}}", "x".repeat(2 << 20));
    let resp = c
        .post(url("/boxes"))
        .bearer_auth("k")
        .body(huge)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413, "a body over the limit");
    let (st, me) = json(c.get(url("/me")).bearer_auth("k").send().await.unwrap()).await;
    assert_eq!((st, me["path_prefix"].is_null()), (200, true), "{me}");
    let (st, cfg) = json(c.get(url("/config")).bearer_auth("k").send().await.unwrap()).await;
    assert_eq!(
        (st, cfg["capabilities"]["snapshots_enabled"].as_bool()),
        (200, Some(true)),
        "{cfg}"
    );

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
    let (st, m) = json(
        c.get(url(&format!("/boxes/{id}/metrics")))
            .bearer_auth("k")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{m}");
    assert!(m["memory_bytes"].as_u64().unwrap() > 0, "{m}");
    assert!(m["boot_timing"]["box_spawn_ms"].is_u64(), "{m}");
    let (st, rm) = json(
        c.get(url("/metrics"))
            .bearer_auth("k")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (st, rm["num_running_boxes"].as_u64()),
        (200, Some(1)),
        "{rm}"
    );
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

/// Attach to an execution; collect stdout, stderr and the exit code, sending `stdin`
/// first (and closing it) when given.
/// This process's resident memory.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

async fn attach(
    base: &str,
    box_id: &str,
    exec_id: &str,
    stdin: Option<&[u8]>,
) -> (Vec<u8>, Vec<u8>, i64, bool) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_url = format!(
        "{}/v1/boxes/{box_id}/executions/{exec_id}/attach",
        base.replace("http://", "ws://")
    );
    let mut req = ws_url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer k".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    if let Some(data) = stdin {
        ws.send(Message::Binary(data.to_vec().into()))
            .await
            .unwrap();
        ws.send(Message::Text(r#"{"type":"stdin_eof"}"#.into()))
            .await
            .unwrap();
    }
    let (mut out, mut err, mut code, mut pinged) = (Vec::new(), Vec::new(), -99, false);
    while let Some(m) = ws.next().await {
        match m.unwrap() {
            Message::Binary(b) => match b.first() {
                Some(1) => out.extend_from_slice(&b[1..]),
                Some(2) => err.extend_from_slice(&b[1..]),
                other => panic!("unknown channel {other:?}"),
            },
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["type"], "exit", "{v}");
                code = v["exit_code"].as_i64().unwrap();
            }
            Message::Ping(_) => pinged = true,
            Message::Close(_) => break,
            _ => {}
        }
    }
    (out, err, code, pinged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_output_takes_stdin_reports_the_exit_code_and_outlives_a_detach() {
    let h = TestHome::new();
    let s = TestServer::start(&h, Some("k")).await;
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}/v1{p}", s.base);
    let created: serde_json::Value = c
        .post(url("/boxes"))
        .bearer_auth("k")
        .json(&serde_json::json!({"image": "boxlite/busybox", "network": {"mode": "disabled"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["box_id"].as_str().unwrap().to_string();
    let exec = |body: serde_json::Value| {
        let c = c.clone();
        let u = url(&format!("/boxes/{id}/exec"));
        async move {
            let r = c.post(u).bearer_auth("k").json(&body).send().await.unwrap();
            assert_eq!(r.status(), 201);
            let v: serde_json::Value = r.json().await.unwrap();
            v["execution_id"].as_str().unwrap().to_string()
        }
    };

    // Exec starts the box; output written before anyone attaches is not lost.
    let e1 = exec(serde_json::json!({"command": "sh",
        "args": ["-c", "echo out; echo err >&2; exit 7"], "env": {"A": "1"}}))
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (out, err, code, pinged) = attach(&s.base, &id, &e1, None).await;
    assert_eq!(
        (out.as_slice(), err.as_slice(), code),
        (&b"out\n"[..], &b"err\n"[..], 7)
    );
    assert!(pinged, "a ping at once on upgrade");
    let st: serde_json::Value = c
        .get(url(&format!("/boxes/{id}/executions/{e1}")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (st["status"].as_str(), st["exit_code"].as_i64()),
        (Some("completed"), Some(7)),
        "{st}"
    );

    // Stdin through the socket; env and working directory reach the process.
    let e2 = exec(serde_json::json!({"command": "sh", "working_dir": "/tmp",
        "env": {"GREETING": "hi"}, "args": ["-c", "echo $GREETING $(pwd); cat"]}))
    .await;
    let (out, _, code, _) = attach(&s.base, &id, &e2, Some(b"through stdin\n")).await;
    assert_eq!(String::from_utf8_lossy(&out), "hi /tmp\nthrough stdin\n");
    assert_eq!(code, 0);

    // A long runner: status running, a second attach refused while one is attached,
    // then killed through DELETE.
    let e3 = exec(serde_json::json!({"command": "sleep", "args": ["600"]})).await;
    let st: serde_json::Value = c
        .get(url(&format!("/boxes/{id}/executions/{e3}")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["status"], "running", "{st}");
    let ws_url = |eid: &str| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!(
            "{}/v1/boxes/{id}/executions/{eid}/attach",
            s.base.replace("http://", "ws://")
        )
        .into_client_request()
        .unwrap();
        req.headers_mut()
            .insert("authorization", "Bearer k".parse().unwrap());
        req
    };
    let (first, _) = tokio_tungstenite::connect_async(ws_url(&e3)).await.unwrap();
    match tokio_tungstenite::connect_async(ws_url(&e3)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 409),
        other => panic!("a second attach: {:?}", other.map(|_| ())),
    }
    drop(first);
    let bad = c
        .post(url(&format!("/boxes/{id}/executions/{e3}/signal")))
        .bearer_auth("k")
        .json(&serde_json::json!({"signal": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let killed = c
        .delete(url(&format!("/boxes/{id}/executions/{e3}")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(killed.status(), 204);
    let gone = c
        .get(url(&format!("/boxes/{id}/executions/{e3}")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);

    // A second server on the same home that keeps finished executions for 1 s: an
    // execution is found by the box's id, name or prefix whichever started it; a
    // finished one is forgotten after that time, a running one never.
    let short = {
        let mut cfg = ServeConfig::new("127.0.0.1:0".parse().unwrap(), ApiKey::new("k"));
        cfg.keep_finished = std::time::Duration::from_secs(1);
        let server = Server::bind(h.runtime(), cfg).await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(server.run(std::future::pending()));
        format!("http://{addr}/v1/boxes")
    };
    let start = |cmd: serde_json::Value| {
        let (c, u) = (c.clone(), format!("{short}/{}/exec", &id[..12]));
        async move {
            let v: serde_json::Value = c
                .post(u)
                .bearer_auth("k")
                .json(&cmd)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["execution_id"].as_str().unwrap().to_string()
        }
    };
    let done = start(serde_json::json!({"command": "true"})).await;
    let running = start(serde_json::json!({"command": "sleep", "args": ["600"]})).await;
    let status = |eid: String| {
        let (c, u) = (c.clone(), format!("{short}/{id}/executions/{eid}"));
        async move {
            let r = c.get(u).bearer_auth("k").send().await.unwrap();
            let st = r.status().as_u16();
            (st, r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (st, v) = status(done.clone()).await;
        if st == 404 {
            break;
        }
        assert_eq!((st, v["status"].as_str()), (200, Some("completed")), "{v}");
        assert!(std::time::Instant::now() < deadline, "never forgotten");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (st, v) = status(running.clone()).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("running")), "{v}");

    // More executions than the box's shim bridges clients (128), each kept in the table
    // after it ends: they share the server's one connection to the agent. (Each held a
    // connection of its own once, and the 128th stalled, then failed.)
    for i in 0..140 {
        let e =
            exec(serde_json::json!({"command": "sh", "args": ["-c", format!("echo {i}")]})).await;
        let (out, _, code, _) = attach(&s.base, &id, &e, None).await;
        assert_eq!(
            (String::from_utf8_lossy(&out), code),
            (format!("{i}\n").into(), 0)
        );
    }

    // The box stops under a running execution: signal and resize say so (409), DELETE
    // forgets it (the process went with the box).
    let stopped = c
        .post(url(&format!("/boxes/{id}/stop")))
        .bearer_auth("k")
        .json(&serde_json::json!({"timeout_seconds": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 200);
    for (what, body) in [
        ("signal", serde_json::json!({"signal": 15})),
        ("resize", serde_json::json!({"cols": 80, "rows": 24})),
    ] {
        let r = c
            .post(format!("{short}/{id}/executions/{running}/{what}"))
            .bearer_auth("k")
            .json(&body)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (409, Some("invalid_state")),
            "{what}: {v}"
        );
    }
    let killed = c
        .delete(format!("{short}/{id}/executions/{running}"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(killed.status(), 204);

    let del = c
        .delete(url(&format!("/boxes/{id}?force=true")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_pull_with_progress_list_and_get() {
    use boxlite_testkit::oci::{Comp, TestImage, busybox_layer};
    let reg = boxlite_testkit::Registry::start();
    let digest = TestImage::new(
        vec![(busybox_layer(), Comp::Gzip)],
        serde_json::json!({"Cmd": ["sh"]}),
    )
    .push(&reg, "api/img", "v1");
    let h = TestHome::new();
    h.allow_http(&reg);
    let s = TestServer::start(&h, Some("k")).await;
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}/v1{p}", s.base);
    let reference = format!("{}/api/img:v1", reg.addr);

    // Streamed: progress lines, then the image.
    let text = c
        .post(url("/images/pull"))
        .bearer_auth("k")
        .header("accept", "application/x-ndjson")
        .json(&serde_json::json!({"reference": reference}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "resolved", "{text}");
    assert!(lines.iter().any(|l| l["type"] == "built"), "{text}");
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "done", "{text}");
    assert_eq!(last["image"]["id"], digest.as_str());
    assert_eq!(last["image"]["tag"], "v1");

    // Plain: one ImageInfo. A bad reference is a 400; an image the registry does not
    // have is a failed pull, 422, as BoxLite's document says.
    let again: serde_json::Value = c
        .post(url("/images/pull"))
        .bearer_auth("k")
        .json(&serde_json::json!({"reference": reference}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["id"], digest.as_str());
    let bad = c
        .post(url("/images/pull"))
        .bearer_auth("k")
        .json(&serde_json::json!({"reference": "UPPER/case::bad"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let absent = c
        .post(url("/images/pull"))
        .bearer_auth("k")
        .json(&serde_json::json!({"reference": format!("{}/api/absent:v1", reg.addr)}))
        .send()
        .await
        .unwrap();
    let st = absent.status();
    let absent: serde_json::Value = absent.json().await.unwrap();
    assert_eq!(
        (st.as_u16(), absent["error"]["code"].as_str()),
        (422, Some("image_pull_failed")),
        "{absent}"
    );

    let list: serde_json::Value = c
        .get(url("/images"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["images"].as_array().unwrap().len(), 1, "{list}");
    for key in [digest.clone(), reference.clone()] {
        let got = c
            .get(url(&format!("/images/{key}")))
            .bearer_auth("k")
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200, "{key}");
    }
    let missing = c
        .head(url("/images/sha256:00"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // In use by a box: refused unless forced.
    let b = c
        .post(url("/boxes"))
        .bearer_auth("k")
        .json(&serde_json::json!({"image": reference}))
        .send()
        .await
        .unwrap();
    assert_eq!(b.status(), 201);
    let busy = c
        .delete(url(&format!("/images/{reference}")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 409);
    let forced = c
        .delete(url(&format!("/images/{reference}?force=true")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(forced.status(), 204);
    let gone = c
        .get(url(&format!("/images/{reference}")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_managed_by_name_and_never_show_a_host_path() {
    let h = TestHome::new();
    let s = TestServer::start(&h, Some("k")).await;
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}/v1{p}", s.base);
    let made = c
        .post(url("/volumes"))
        .bearer_auth("k")
        .json(&serde_json::json!({"name": "data"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let made = made.text().await.unwrap();
    assert!(!made.contains(&h.home.display().to_string()), "{made}");
    let list: serde_json::Value = c
        .get(url("/volumes"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["volumes"][0]["id"], "data", "{list}");
    let bad = c
        .post(url("/volumes"))
        .bearer_auth("k")
        .json(&serde_json::json!({"name": "../escape"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // A box mounting it keeps it from being removed unless forced.
    let b = c
        .post(url("/boxes"))
        .bearer_auth("k")
        .json(&serde_json::json!({"image": "boxlite/busybox",
            "volumes": [{"managed_volume": "data", "guest_path": "/data"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(b.status(), 201);
    let busy = c
        .delete(url("/volumes/data"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 409);
    let forced = c
        .delete(url("/volumes/data?force=true"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(forced.status(), 204);
    let gone = c
        .get(url("/volumes/data"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    s.stop().await;
}

/// A tar of `(name, content)` entries; a name ending in `/` is a directory.
fn tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        if name.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
        } else {
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
        }
        h.set_path(name).unwrap();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Entry names and contents of a tar.
fn untar(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut a = tar::Archive::new(data);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            (name, body)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_go_in_and_out_as_docker_cp_places_them_and_hostile_tars_are_refused() {
    let h = TestHome::new();
    let s = TestServer::start(&h, Some("k")).await;
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}/v1{p}", s.base);
    let created: serde_json::Value = c
        .post(url("/boxes"))
        .bearer_auth("k")
        .json(&serde_json::json!({"image": "boxlite/busybox", "network": {"mode": "disabled"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["box_id"].as_str().unwrap().to_string();
    let put = |path: &str, body: Vec<u8>| {
        let (c, u) = (c.clone(), url(&format!("/boxes/{id}/files")));
        let path = path.to_string();
        async move {
            c.put(u)
                .query(&[("path", path.as_str())])
                .bearer_auth("k")
                .header("content-type", "application/x-tar")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let get = |path: &str| {
        let (c, u) = (c.clone(), url(&format!("/boxes/{id}/files")));
        let path = path.to_string();
        async move {
            c.get(u)
                .query(&[("path", path.as_str())])
                .bearer_auth("k")
                .send()
                .await
                .unwrap()
        }
    };

    // A file as a new path (the box starts for it), a directory into an existing one,
    // and a directory's contents into a new one.
    let one = put("/root/renamed.txt", tarball(&[("hello.txt", b"hi\n")])).await;
    assert_eq!(one.status(), 204, "{:?}", one.text().await);
    assert_eq!(
        put(
            "/tmp",
            tarball(&[("app/", b""), ("app/run.sh", b"echo run\n")])
        )
        .await
        .status(),
        204
    );
    assert_eq!(
        put(
            "/tmp/flat",
            tarball(&[
                ("./", b""),
                ("a.txt", b"a"),
                ("sub/", b""),
                ("sub/b.txt", b"b")
            ])
        )
        .await
        .status(),
        204
    );

    // An item whose destination does not exist becomes it.
    let made = put("/srv", tarball(&[("whatever/", b""), ("whatever/x", b"x")])).await;
    assert_eq!(made.status(), 204);
    let srv = untar(&get("/srv/x").await.bytes().await.unwrap());
    assert_eq!(srv, [("x".to_string(), b"x".to_vec())]);

    let file = get("/root/renamed.txt").await;
    assert_eq!(file.status(), 200);
    assert_eq!(file.headers()["x-boxlite-source-is-dir"], "false");
    let entries = untar(&file.bytes().await.unwrap());
    assert_eq!(entries, [("renamed.txt".to_string(), b"hi\n".to_vec())]);

    let dir = get("/tmp/app").await;
    assert_eq!(dir.status(), 200);
    assert_eq!(dir.headers()["x-boxlite-source-is-dir"], "true");
    let names: Vec<String> = untar(&dir.bytes().await.unwrap())
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(names.contains(&"app/run.sh".to_string()), "{names:?}");
    let flat: Vec<(String, Vec<u8>)> = untar(&get("/tmp/flat/sub").await.bytes().await.unwrap());
    assert!(
        flat.iter().any(|(n, b)| n == "sub/b.txt" && b == b"b"),
        "{flat:?}"
    );

    // Missing paths, relative paths and hostile archives.
    let missing = get("/no/such/file").await;
    assert_eq!(missing.status(), 404);
    let relative = get("etc/hostname").await;
    assert_eq!(relative.status(), 400);
    let mut evil = tar::Header::new_gnu();
    evil.set_size(4);
    evil.set_mode(0o644);
    evil.as_old_mut().name[..16].copy_from_slice(b"../../etc/evil\0\0");
    evil.set_cksum();
    let mut evil_tar = evil.as_bytes().to_vec();
    evil_tar.extend_from_slice(b"evil");
    evil_tar.resize(512 * 4, 0);
    let refused = put("/tmp", evil_tar).await;
    assert_eq!(refused.status(), 400, "{:?}", refused.text().await);
    let not_tar = put("/tmp", b"short".to_vec()).await;
    assert_eq!(not_tar.status(), 400);

    let del = c
        .delete(url(&format!("/boxes/{id}?force=true")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_costs_the_server_little_and_fifty_clients_each_stream_a_mib_intact() {
    let h = TestHome::new();
    let s = TestServer::start(&h, Some("k")).await;
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}/v1{p}", s.base);
    let created: serde_json::Value = c
        .post(url("/boxes"))
        .bearer_auth("k")
        .json(&serde_json::json!({"image": "boxlite/busybox", "network": {"mode": "disabled"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["box_id"].as_str().unwrap().to_string();
    let started = c
        .post(url(&format!("/boxes/{id}/start")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);

    const MIB: usize = 1 << 20;
    // A client that attaches and then reads nothing: the command's output waits in the
    // box, not in the server. The server runs in this process; the stalled client holds
    // nothing, so this process's memory is the server's.
    const WRITTEN: usize = 64 * MIB;
    let r: serde_json::Value = c
        .post(url(&format!("/boxes/{id}/exec")))
        .bearer_auth("k")
        .json(&serde_json::json!({"command": "head", "args": ["-c", WRITTEN.to_string(), "/dev/zero"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let eid = r["execution_id"].as_str().unwrap().to_string();
    let before = rss_bytes();
    let mut ws = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!(
            "{}/v1/boxes/{id}/executions/{eid}/attach",
            s.base.replace("http://", "ws://")
        )
        .into_client_request()
        .unwrap();
        req.headers_mut()
            .insert("authorization", "Bearer k".parse().unwrap());
        tokio_tungstenite::connect_async(req).await.unwrap().0
    };
    // Long enough for the whole output to have been produced several times over, had
    // nothing held it back (the same box streams about 27 MB/s here).
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let stalled = rss_bytes();
    let status: serde_json::Value = c
        .get(url(&format!("/boxes/{id}/executions/{eid}")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["status"], "running",
        "held back by the stalled client: {status}"
    );
    let grew = stalled.saturating_sub(before);
    assert!(
        grew < (WRITTEN / 4) as u64,
        "the server grew by {grew} bytes for a client that reads nothing"
    );
    // Then it reads: every byte arrives.
    let mut got = 0usize;
    let mut code = None;
    {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        while let Some(m) = ws.next().await {
            match m.unwrap() {
                Message::Binary(b) => {
                    assert_eq!(b.first(), Some(&1));
                    assert!(b[1..].iter().all(|&x| x == 0));
                    got += b.len() - 1;
                }
                Message::Text(t) => code = Some(t.to_string()),
                Message::Close(_) => break,
                _ => {}
            }
        }
    }
    assert_eq!(got, WRITTEN);
    assert!(code.unwrap_or_default().contains(r#""exit_code":0"#));
    eprintln!("a stalled client: the server grew by {} KiB", grew >> 10);

    let mut tasks = Vec::new();
    for i in 0..50 {
        let (c, base, id) = (c.clone(), s.base.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            // Each client's own pattern, so a mix-up between streams shows.
            let line = format!("client {i:02} 0123456789abcdef");
            let r: serde_json::Value = c
                .post(format!("{base}/v1/boxes/{id}/exec"))
                .bearer_auth("k")
                .json(&serde_json::json!({"command": "sh",
                    "args": ["-c", format!("yes '{line}' | head -c {MIB}")]}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let eid = r["execution_id"].as_str().unwrap().to_string();
            let (out, _, code, _) = attach(&base, &id, &eid, None).await;
            let want: Vec<u8> = format!("{line}\n")
                .into_bytes()
                .into_iter()
                .cycle()
                .take(MIB)
                .collect();
            (i, out == want, out.len(), code)
        }));
    }
    for t in tasks {
        let (i, same, len, code) = t.await.unwrap();
        assert!(same && code == 0, "client {i}: {len} bytes, exit {code}");
    }

    let del = c
        .delete(url(&format!("/boxes/{id}?force=true")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    s.stop().await;
}
