//! Snapshots, clones, pause and resume through the REST API, against a real VM: BoxLite's
//! routes and bodies, with a memory snapshot cloned into a running box that has the
//! source's files in memory, and errors in the document's shape.

mod common;

use boxlite_testkit::TestHome;
use common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_clones_pause_and_resume_through_the_api() {
    let h = TestHome::new();
    let s = TestServer::start(&h, None).await;
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}/v1{p}", s.base);
    let call = |r: reqwest::RequestBuilder| async move {
        let r = r.send().await.unwrap();
        let st = r.status().as_u16();
        (st, r.json::<serde_json::Value>().await.unwrap_or_default())
    };
    let exec_out = |id: String, script: &'static str| {
        let rt = h.runtime();
        async move {
            let b = rt.get(&id).await.unwrap();
            boxlite_testkit::stdout_ok(&b, boxlite::BoxCommand::new("sh").args(["-c", script]))
                .await
        }
    };

    let (st, created) = call(
        c.post(url("/boxes"))
            .json(&serde_json::json!({"image": "boxlite/busybox", "name": "snapsrc"})),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    let id = created["box_id"].as_str().unwrap().to_string();
    let (st, _) = call(c.post(url(&format!("/boxes/{id}/start")))).await;
    assert_eq!(st, 200);
    exec_out(id.clone(), "echo kept > /dev/shm/m").await;

    // createSnapshot, listSnapshots, getSnapshot, and the errors.
    let (st, snap) = call(
        c.post(url("/boxes/snapsrc/snapshots"))
            .json(&serde_json::json!({"name": "one"})),
    )
    .await;
    let (dup_st, dup) = call(
        c.post(url("/boxes/snapsrc/snapshots"))
            .json(&serde_json::json!({"name": "one"})),
    )
    .await;
    let (bad_st, bad) = call(
        c.post(url("/boxes/snapsrc/snapshots"))
            .json(&serde_json::json!({"name": "../up"})),
    )
    .await;
    let (list_st, list) = call(c.get(url("/boxes/snapsrc/snapshots"))).await;
    let (get_st, got) = call(c.get(url("/boxes/snapsrc/snapshots/one"))).await;
    let (miss_st, miss) = call(c.get(url("/boxes/snapsrc/snapshots/none"))).await;
    let (_, config) = call(c.get(url("/config"))).await;

    assert_eq!(st, 201, "{snap}");
    assert_eq!(snap["name"], "one");
    assert_eq!(snap["box_id"], id.as_str());
    assert_eq!(snap["memory"], true);
    for f in [
        "id",
        "created_at",
        "guest_disk_bytes",
        "container_disk_bytes",
        "size_bytes",
    ] {
        assert!(!snap[f].is_null(), "{f}: {snap}");
    }
    assert_eq!(
        (dup_st, dup["error"]["code"].as_str()),
        (409, Some("already_exists")),
        "{dup}"
    );
    assert_eq!(bad_st, 400, "{bad}");
    assert_eq!(list_st, 200);
    assert_eq!(
        list["snapshots"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    assert_eq!((get_st, got["name"].as_str()), (200, Some("one")));
    assert_eq!(miss_st, 404, "{miss}");
    assert_eq!(
        config["capabilities"]["snapshots_enabled"], true,
        "{config}"
    );

    // cloneBox from the snapshot: running, with the source's memory.
    let (st, clone) = call(
        c.post(url("/boxes/snapsrc/clone"))
            .json(&serde_json::json!({"name": "snapclone", "snapshot": "one"})),
    )
    .await;
    assert_eq!(st, 201, "{clone}");
    assert_eq!(clone["status"], "running");
    assert_eq!(clone["name"], "snapclone");
    let clone_id = clone["box_id"].as_str().unwrap().to_string();
    assert_eq!(exec_out(clone_id.clone(), "cat /dev/shm/m").await, "kept\n");

    // pause and resume (routes of ours).
    let (st, paused) = call(c.post(url("/boxes/snapclone/pause"))).await;
    assert_eq!(
        (st, paused["status"].as_str()),
        (200, Some("paused")),
        "{paused}"
    );
    let (st, resumed) = call(c.post(url("/boxes/snapclone/resume"))).await;
    assert_eq!(
        (st, resumed["status"].as_str()),
        (200, Some("running")),
        "{resumed}"
    );
    assert_eq!(exec_out(clone_id.clone(), "cat /dev/shm/m").await, "kept\n");

    // restoreSnapshot: refused while running, then the stopped box is paused at it.
    let (busy_st, busy) = call(c.post(url("/boxes/snapsrc/snapshots/one/restore"))).await;
    assert_eq!(busy_st, 409, "{busy}");
    let (st, _) = call(c.post(url("/boxes/snapsrc/stop"))).await;
    assert_eq!(st, 200);
    let r = c
        .post(url("/boxes/snapsrc/snapshots/one/restore"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (_, after) = call(c.get(url("/boxes/snapsrc"))).await;
    assert_eq!(after["status"], "paused", "{after}");
    assert_eq!(exec_out(id.clone(), "cat /dev/shm/m").await, "kept\n");

    // removeSnapshot.
    let r = c
        .delete(url("/boxes/snapsrc/snapshots/one"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (miss_st, _) = call(c.delete(url("/boxes/snapsrc/snapshots/one"))).await;
    assert_eq!(miss_st, 404);

    for b in [&clone_id, &id] {
        let r = c
            .delete(url(&format!("/boxes/{b}?force=true")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
    }
    s.stop().await;
}
