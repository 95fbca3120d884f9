//! The lifecycle through the library API: handles in one process, state from older
//! versions, names.

use std::time::Duration;

use boxlite::{BoxCommand, BoxError, BoxOptions, BoxState, Error};
use boxlite_testkit::TestHome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_to_one_box_see_each_others_changes() {
    let h = TestHome::new();
    let rt = h.runtime();
    let first = rt
        .create(BoxOptions::new("boxlite/busybox").name("shared"))
        .await
        .unwrap();
    first.start().await.unwrap();
    let second = rt.get("shared").await.unwrap();

    second.stop(Duration::from_secs(10)).await.unwrap();
    let seen_by_first = first.state().await.unwrap();
    // The first handle's cached connection is stale; exec must notice and start the box.
    let mut run = first
        .exec(BoxCommand::new("echo").arg("again"))
        .await
        .unwrap();
    let out = run.take_stdout().unwrap().read_to_end().await.unwrap();
    run.wait().await.unwrap();

    assert_eq!(seen_by_first, BoxState::Stopped);
    assert_eq!(out, b"again\n");
    assert_eq!(second.state().await.unwrap(), BoxState::Running);
    second.remove(true).await.unwrap();
    let gone = first.info().await.unwrap_err();
    assert!(matches!(gone, Error::Box(BoxError::NotFound(_))), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_from_an_older_schema_loads_lists_and_removes_through_the_runtime() {
    let h = TestHome::new();
    drop(h.runtime());
    let db = rusqlite::Connection::open(h.home.join("db/boxlite.db")).unwrap();
    let id = "0123456789abcdef0123456789abcdef";
    db.execute(
        "INSERT INTO boxes (id, name, created_at, config, status) VALUES (?1, 'old', 3, ?2, ?3)",
        rusqlite::params![
            id,
            r#"{"image":"boxlite/busybox:latest","legacy_flag":true}"#,
            r#"{"state":"Stopped","retired_field":[1,2]}"#
        ],
    )
    .unwrap();
    drop(db);

    let rt = h.runtime();
    let listed = rt.list().await.unwrap();
    let b = rt.get("old").await.unwrap();
    b.remove(false).await.unwrap();

    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].state, BoxState::Stopped);
    assert_eq!(listed[0].config.memory_mib, 512);
    assert_eq!(listed[0].config.cpus, 2);
    assert!(rt.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn box_record_from_version_0_1_is_imported_and_can_be_removed() {
    let h = TestHome::new();
    let id = "fedcba9876543210fedcba9876543210";
    let dir = h.home.join("boxes").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("box.json"),
        r#"{"id":"fedcba9876543210fedcba9876543210","image":"boxlite/busybox:latest",
            "image_digest":"sha256:00","created_at":5,"memory_mib":256,"cpus":1,
            "state":"Running","vsock_mode":"vhost-user","cid":null,
            "vmm":{"pid":999999999,"start_time":1},"vsock_helper":null,"last_error":null}"#,
    )
    .unwrap();

    let rt = h.runtime();
    let listed = rt.list().await.unwrap();
    rt.get(id).await.unwrap().remove(false).await.unwrap();

    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].config.memory_mib, 256);
    // Its VMM is long gone, so the imported Running box reconciles to Stopped.
    assert_eq!(listed[0].state, BoxState::Stopped);
    assert!(listed[0].last_error.as_ref().unwrap().contains("exited"));
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_box_directory_and_lock_file_are_swept_on_open() {
    let h = TestHome::new();
    drop(h.runtime());
    let stray = h
        .home
        .join("boxes")
        .join("0000000000000000000000000000000a");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("disk.qcow2"), b"x").unwrap();
    let lock = h
        .home
        .join("locks")
        .join("0000000000000000000000000000000a");
    std::fs::write(&lock, b"").unwrap();

    let _rt = h.runtime();

    assert!(!stray.exists());
    assert!(!lock.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_create_creates_once_even_when_two_callers_race() {
    let h = TestHome::new();
    let rt = h.runtime();

    let (a, b) = tokio::join!(
        rt.get_or_create("only", BoxOptions::new("boxlite/busybox")),
        rt.get_or_create("only", BoxOptions::new("boxlite/busybox"))
    );
    let (a, a_new) = a.unwrap();
    let (b, b_new) = b.unwrap();
    let (again, again_new) = rt
        .get_or_create("only", BoxOptions::new("boxlite/busybox"))
        .await
        .unwrap();
    let mismatched = rt
        .get_or_create("only", BoxOptions::new("boxlite/busybox").name("other"))
        .await
        .unwrap_err();

    assert_eq!(a.id(), b.id());
    assert_eq!(again.id(), a.id());
    assert!(a_new ^ b_new, "exactly one of the racers created it");
    assert!(!again_new);
    assert!(
        matches!(mismatched, Error::Box(BoxError::InvalidOption(_))),
        "{mismatched}"
    );
    assert_eq!(rt.list().await.unwrap().len(), 1);
    a.remove(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_boxes_this_runtime_started_and_refuses_new_work() {
    let h = TestHome::new();
    let rt = h.runtime();
    // A second runtime of the same home, opened the async way.
    let other = boxlite::Boxlite::open(boxlite::RuntimeOptions {
        home: Some(h.home.clone()),
        assets: Some(boxlite_testkit::assets_dir()),
        ..Default::default()
    })
    .await
    .unwrap();
    let mine = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    let theirs = other
        .create(BoxOptions::new("boxlite/busybox"))
        .await
        .unwrap();
    let (m, t) = tokio::join!(mine.start(), theirs.start());
    m.unwrap();
    t.unwrap();

    rt.shutdown(Duration::from_secs(10)).await.unwrap();
    let create = rt
        .create(BoxOptions::new("boxlite/busybox"))
        .await
        .unwrap_err();
    let exec = mine.exec(BoxCommand::new("true")).await.unwrap_err();
    let restart = rt.get(mine.id()).await.unwrap().start().await.unwrap_err();

    assert_eq!(mine.state().await.unwrap(), BoxState::Stopped);
    assert_eq!(theirs.state().await.unwrap(), BoxState::Running);
    for e in [&create, &exec, &restart] {
        assert!(matches!(e, Error::ShutDown), "{e}");
    }
    // Another runtime of the same home still works.
    let mut run = other
        .get(mine.id())
        .await
        .unwrap()
        .exec(BoxCommand::new("echo").arg("alive"))
        .await
        .unwrap();
    let out = run.take_stdout().unwrap().read_to_end().await.unwrap();
    assert_eq!(out, b"alive\n");
    for b in [mine.id(), theirs.id()] {
        other.get(b).await.unwrap().remove(true).await.unwrap();
    }
}
