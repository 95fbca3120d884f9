//! Pause and resume against real VMs: a paused box has no process and no RAM file, keeps
//! its processes, executions and tmpfs files, survives a runtime restart, and comes back
//! with the host's clock; boxes with volumes are refused and left running.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boxlite::model::StartKind;
use boxlite::{
    BoxCommand, BoxOptions, BoxState, CloneOptions, Error, ExitStatus, LiteBox, SnapshotError,
    SnapshotOptions, VolumeSpec,
};
use boxlite_testkit::TestHome;

/// Run `script` with `sh -c` and return its stdout; it must succeed.
async fn sh(b: &LiteBox, script: &str) -> String {
    let mut run = b
        .exec(BoxCommand::new("sh").args(["-c", script]))
        .await
        .unwrap_or_else(|e| panic!("exec {script:?}: {}", boxlite::error_chain(&e)));
    let out = run.take_stdout().unwrap().read_to_end().await.unwrap();
    let status = run.wait().await.unwrap();
    assert!(status.success(), "{script:?} ended {status:?}");
    String::from_utf8(out).unwrap()
}

/// Start a process in `b` that writes 1, 2, 3, ... to `file`, ten times a second. Each
/// value is renamed into place, so a reader never sees the file truncated: a pause can
/// freeze the counter between a truncation and its write.
async fn count_into(b: &LiteBox, file: &str) -> boxlite::Execution {
    let script = format!(
        "i=0; while :; do i=$((i+1)); echo $i > {file}.new; mv {file}.new {file}; sleep 0.1; done"
    );
    b.exec(BoxCommand::new("sh").args(["-c", &script]))
        .await
        .unwrap()
}

fn number(s: &str) -> u64 {
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

fn host_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The box's QEMU processes still running.
fn vmm_alive(h: &TestHome, id: &str) -> bool {
    h.processes()
        .iter()
        .any(|(_, cmd)| cmd.contains("qemu-system") && cmd.contains(&id[..12]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_box_keeps_its_processes_executions_and_memory_across_a_runtime_restart() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    b.start().await.unwrap();
    let id = b.id().to_string();
    // A process that counts, a file in the container's tmpfs, and an execution that has
    // written half of its output when the box is paused.
    let counter = count_into(&b, "/tmp/n").await;
    sh(&b, "echo kept-in-memory > /dev/shm/mem").await;
    let mut half = b
        .exec(BoxCommand::new("sh").args(["-c", "echo one; sleep 4; echo two; exit 7"]))
        .await
        .unwrap();
    let exec_id = half.id().to_string();
    let mut out = half.take_stdout().unwrap();
    let first = out.next_chunk().await.unwrap().unwrap();
    drop(out);
    drop(half);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = number(&sh(&b, "cat /tmp/n").await);
    let ram_file = b.info().await.unwrap().ram_file;

    b.pause().await.unwrap();
    let paused = b.info().await.unwrap();
    let again = b.pause().await;
    let vmm_after_pause = vmm_alive(&h, &id);
    let ram_after_pause = ram_file.exists();
    let saved = paused.dir.join("paused");
    let saved_complete = saved.join("meta.json").is_file();
    drop(b);
    drop(rt);

    // A new runtime (another process would do the same) finds it paused; attaching to
    // the execution resumes it.
    let rt = h.runtime();
    let b = rt.get(&id).await.unwrap();
    let state_in_new_runtime = b.state().await.unwrap();
    let mut reattached = b.attach(&exec_id).await.unwrap();
    let rest = reattached
        .take_stdout()
        .unwrap()
        .read_to_end()
        .await
        .unwrap();
    let status = reattached.wait().await.unwrap();
    let resumed = b.info().await.unwrap();
    let after = number(&sh(&b, "cat /tmp/n").await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = number(&sh(&b, "cat /tmp/n").await);
    let memory = sh(&b, "cat /dev/shm/mem").await;
    let guest_now = number(&sh(&b, "date +%s").await);
    let host_now = host_secs();

    assert_eq!(first, b"one\n");
    assert_eq!(paused.state, BoxState::Paused);
    assert!(again.is_ok(), "pausing a paused box: {again:?}");
    assert!(!vmm_after_pause, "a paused box has no VM process");
    assert!(!ram_after_pause, "a paused box has no RAM file on tmpfs");
    assert!(saved_complete, "no meta.json in {}", saved.display());
    assert_eq!(state_in_new_runtime, BoxState::Paused);
    assert_eq!(rest, b"two\n", "the rest of the execution's output");
    assert_eq!(status, ExitStatus::Code(7));
    assert_eq!(resumed.state, BoxState::Running);
    assert_eq!(
        resumed.config.image, paused.config.image,
        "the same box came back"
    );
    assert!(
        !saved.exists(),
        "a resumed box's saved state is consumed: {}",
        saved.display()
    );
    assert!(
        after >= before,
        "the counter went back: {before} -> {after}"
    );
    assert!(later > after, "the counter stopped: {after} -> {later}");
    assert_eq!(memory, "kept-in-memory\n");
    assert!(
        guest_now.abs_diff(host_now) <= 2,
        "guest clock {guest_now}, host {host_now}"
    );
    drop(counter);

    // exec on a paused box resumes it too; stop discards the saved state.
    b.pause().await.unwrap();
    let uptime = sh(&b, "cut -d. -f1 /proc/uptime").await;
    let by_exec = b.state().await.unwrap();
    b.pause().await.unwrap();
    b.stop(Duration::from_secs(10)).await.unwrap();
    let stopped = b.info().await.unwrap();
    let resume_stopped = b.resume().await.unwrap_err();
    b.start().await.unwrap();
    let fresh = sh(&b, "cat /dev/shm/mem 2>/dev/null || echo gone").await;

    assert!(!uptime.trim().is_empty());
    assert_eq!(by_exec, BoxState::Running);
    assert_eq!(stopped.state, BoxState::Stopped);
    assert!(!stopped.dir.join("paused").exists());
    assert!(
        resume_stopped.to_string().contains("not paused"),
        "{resume_stopped}"
    );
    assert_eq!(fresh, "gone\n", "a stopped box boots afresh");
    b.remove(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_with_volumes_is_refused_a_pause_and_keeps_running() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt
        .create(BoxOptions::new("boxlite/busybox").volume(VolumeSpec::anonymous("/data")))
        .await
        .unwrap();
    b.start().await.unwrap();

    let err = b.pause().await.unwrap_err();
    let state = b.state().await.unwrap();
    let alive = sh(&b, "echo alive").await;

    assert!(
        matches!(err, Error::Snapshot(SnapshotError::Volumes { .. })),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("volumes") && text.contains("8.2"), "{text}");
    assert_eq!(err.kind(), boxlite::ErrorKind::InvalidState);
    assert_eq!(state, BoxState::Running);
    assert_eq!(alive, "alive\n");
    assert!(!b.info().await.unwrap().dir.join("paused").exists());
    assert!(!b.info().await.unwrap().dir.join("paused.partial").exists());
    b.remove(true).await.unwrap();
}

/// The hostname a box gets: the first 12 digits of its id.
fn short(id: &str) -> &str {
    &id[..12]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_restore_memory_and_disk_and_clones_of_one_diverge() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt
        .create(BoxOptions::new("boxlite/busybox").warm_start(false))
        .await
        .unwrap();
    b.start().await.unwrap();
    sh(&b, "echo in-memory > /dev/shm/x; echo on-disk > /root/d").await;

    // A memory snapshot; the box goes on.
    let s1 = b
        .snapshot_create("s1", &SnapshotOptions::default())
        .await
        .unwrap();
    let state_after = b.state().await.unwrap();
    sh(&b, "echo changed > /root/d; rm /dev/shm/x").await;
    let dup = b
        .snapshot_create("s1", &SnapshotOptions::default())
        .await
        .unwrap_err();
    let bad = b
        .snapshot_create("../x", &SnapshotOptions::default())
        .await
        .unwrap_err();
    let missing = b.snapshot_get("nope").await.unwrap_err();
    let ram = s1_dir(&b, "s1").await.join("ram");
    let ram_mtime = std::fs::metadata(&ram).unwrap().modified().unwrap();

    assert!(s1.memory, "{s1:?}");
    assert_eq!(s1.name, "s1");
    assert_eq!(s1.box_id, b.id());
    assert!(s1.size_bytes > s1.container_disk_bytes && s1.container_disk_bytes > 0);
    assert_eq!(state_after, BoxState::Running);
    assert_eq!(dup.kind(), boxlite::ErrorKind::AlreadyExists, "{dup}");
    assert_eq!(bad.kind(), boxlite::ErrorKind::InvalidArgument, "{bad}");
    assert!(bad.to_string().contains("\"../x\""), "{bad}");
    assert_eq!(missing.kind(), boxlite::ErrorKind::NotFound, "{missing}");

    // Two clones of it: each where the box was at the snapshot, each its own.
    let clones = b
        .clone_boxes(
            CloneOptions {
                snapshot: Some("s1".into()),
                name: Some("c".into()),
                ..Default::default()
            },
            2,
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    for c in &clones {
        let info = c.info().await.unwrap();
        let got = sh(
            c,
            "cat /dev/shm/x /root/d; hostname; od -An -tx1 -N16 /dev/urandom",
        )
        .await;
        seen.push((info, got));
    }
    sh(&clones[0], "echo clone-0 > /root/d").await;
    let other = sh(&clones[1], "cat /root/d").await;
    let source = sh(&b, "cat /root/d").await;
    let names: Vec<Option<String>> = seen.iter().map(|(i, _)| i.name.clone()).collect();

    assert_eq!(names, [Some("c-1".into()), Some("c-2".into())]);
    for (c, (info, got)) in clones.iter().zip(&seen) {
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(info.state, BoxState::Running);
        assert_eq!(
            info.started_from,
            Some(StartKind::Cloned {
                source: b.id().to_string(),
                snapshot: Some("s1".into())
            })
        );
        assert_eq!(lines[..3], ["in-memory", "on-disk", short(c.id())], "{got}");
    }
    assert_ne!(
        seen[0].1.lines().nth(3),
        seen[1].1.lines().nth(3),
        "two clones of one snapshot read the same random bytes"
    );
    assert_eq!(
        other, "on-disk\n",
        "a clone's disk write reached another clone"
    );
    assert_eq!(source, "changed\n");
    assert_eq!(
        std::fs::metadata(&ram).unwrap().modified().unwrap(),
        ram_mtime,
        "the snapshot's RAM file was written"
    );

    // A clone maps its RAM privately; it pauses (its RAM in the state) and resumes.
    clones[1].pause().await.unwrap();
    let clone_paused = clones[1].state().await.unwrap();
    let clone_back = sh(&clones[1], "cat /dev/shm/x").await;
    assert_eq!(clone_paused, BoxState::Paused);
    assert_eq!(clone_back, "in-memory\n");

    // Restore: refused while running; a stopped box gets the memory and the disk back
    // and is paused until started.
    let busy = b.snapshot_restore("s1").await.unwrap_err();
    b.stop(Duration::from_secs(10)).await.unwrap();
    b.snapshot_restore("s1").await.unwrap();
    let restored_state = b.state().await.unwrap();
    let back = sh(&b, "cat /dev/shm/x /root/d").await;
    let restored = b.info().await.unwrap();
    assert_eq!(busy.kind(), boxlite::ErrorKind::InvalidState, "{busy}");
    assert_eq!(restored_state, BoxState::Paused);
    assert_eq!(back, "in-memory\non-disk\n");
    assert_eq!(
        restored.started_from,
        Some(StartKind::Restored {
            snapshot: "s1".into()
        })
    );

    // A disk-only snapshot of the running box; its clone is created stopped and boots
    // with that disk.
    sh(&b, "echo second > /root/d").await;
    let s2 = b
        .snapshot_create("s2", &SnapshotOptions { disk_only: true })
        .await
        .unwrap();
    let from_disk = b
        .clone_box(CloneOptions {
            snapshot: Some("s2".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let disk_clone_state = from_disk.state().await.unwrap();
    let disk_clone = sh(
        &from_disk,
        "cat /root/d; cat /dev/shm/x 2>/dev/null || echo none",
    )
    .await;
    assert!(!s2.memory);
    assert_eq!(disk_clone_state, BoxState::Configured);
    assert_eq!(disk_clone, "second\nnone\n");

    // A clone of the running box itself (a snapshot taken for it, then removed): a
    // process counting in the box counts on in every clone.
    let counting = count_into(&b, "/dev/shm/n").await;
    sh(
        &b,
        "for i in $(seq 100); do [ -s /dev/shm/n ] && exit 0; sleep 0.1; done; exit 1",
    )
    .await;
    let live = b.clone_boxes(CloneOptions::default(), 2).await.unwrap();
    let mut counted = Vec::new();
    for c in &live {
        let first = number(&sh(c, "cat /dev/shm/n").await);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let then = number(&sh(c, "cat /dev/shm/n").await);
        counted.push((first, then, c.info().await.unwrap().started_from));
    }
    let implicit_left = s1_dir(&b, "").await.read_dir().unwrap().flatten().count();
    drop(counting);
    for (first, then, from) in &counted {
        assert!(
            then > first,
            "the counter stopped in a clone: {first} -> {then}"
        );
        assert_eq!(
            from,
            &Some(StartKind::Cloned {
                source: b.id().to_string(),
                snapshot: None
            })
        );
    }
    assert_eq!(
        implicit_left, 2,
        "s1 and s2 only: the clone's own snapshot is gone"
    );
    for c in live {
        c.remove(true).await.unwrap();
    }

    // Removing the snapshot leaves its clones running.
    b.snapshot_remove("s1").await.unwrap();
    let left: Vec<String> = b
        .snapshot_list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    let still = sh(&clones[0], "cat /dev/shm/x").await;
    let gone = b.snapshot_remove("s1").await.unwrap_err();
    assert_eq!(left, ["s2"]);
    assert_eq!(still, "in-memory\n");
    assert_eq!(gone.kind(), boxlite::ErrorKind::NotFound);

    for c in clones.iter().chain([&from_disk, &b]) {
        c.remove(true).await.unwrap();
    }
    assert!(h.processes().is_empty(), "{:?}", h.processes());
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn s1_dir(b: &LiteBox, name: &str) -> std::path::PathBuf {
    b.info().await.unwrap().dir.join("snapshots").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_boxes_of_an_image_fork_the_template_its_first_box_left() {
    let h = TestHome::new();
    let rt = h.runtime();
    let first = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    first.start().await.unwrap();
    let templates = rt.templates().await;
    let warm = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    warm.start().await.unwrap();
    let warm_info = warm.info().await.unwrap();
    let warm_out = sh(
        &warm,
        "hostname; grep -c \"$(hostname)\" /etc/hosts; echo ok > /root/w",
    )
    .await;
    let cold = rt
        .create(BoxOptions::new("boxlite/busybox").warm_start(false))
        .await
        .unwrap();
    cold.start().await.unwrap();
    let bigger = rt
        .create(BoxOptions::new("boxlite/busybox").memory_mib(640))
        .await
        .unwrap();
    bigger.start().await.unwrap();
    let first_out = sh(&first, "cat /root/w 2>/dev/null || echo none").await;

    assert_eq!(
        first.info().await.unwrap().started_from,
        Some(StartKind::Cold)
    );
    assert_eq!(templates.len(), 1, "{templates:?}");
    let t = &templates[0];
    assert_eq!(
        (t.image.as_str(), t.source_box.as_str()),
        ("boxlite/busybox:latest", first.id())
    );
    assert_eq!(
        warm_info.started_from,
        Some(StartKind::Template { key: t.key.clone() })
    );
    assert_eq!(warm_out, format!("{}\n1\n", short(warm.id())));
    assert_eq!(first_out, "none\n", "a warm box's disk is its own");
    assert_eq!(
        cold.info().await.unwrap().started_from,
        Some(StartKind::Cold)
    );
    assert_eq!(
        bigger.info().await.unwrap().started_from,
        Some(StartKind::Cold),
        "another memory size has a template of its own"
    );
    assert_eq!(rt.templates().await.len(), 2);

    // A template that cannot be loaded is dropped and the box boots instead.
    std::fs::write(
        h.home.join("templates").join(&t.key).join("state"),
        b"not a migration stream",
    )
    .unwrap();
    let fallback = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    fallback.start().await.unwrap();
    let fallback_out = sh(&fallback, "echo up").await;
    assert_eq!(fallback_out, "up\n");
    assert_eq!(
        fallback.info().await.unwrap().started_from,
        Some(StartKind::Cold)
    );
    // The bad template was removed, and the fallback boot left a good one in its place.
    let state = std::fs::read(h.home.join("templates").join(&t.key).join("state")).unwrap();
    assert_ne!(state, b"not a migration stream");
    assert_eq!(rt.templates().await.len(), 2);

    // Another kernel (the same one with bytes appended, so it still boots) means
    // another key: a cold boot, and a template of its own.
    let assets = h.home.join("assets-b");
    std::fs::create_dir_all(&assets).unwrap();
    let src = boxlite_testkit::assets_dir();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let name = e.file_name();
        if name != "vmlinux" && name != "manifest.json" {
            std::os::unix::fs::symlink(e.path(), assets.join(&name)).unwrap();
        }
    }
    let mut kernel = std::fs::read(src.join("vmlinux")).unwrap();
    kernel.extend_from_slice(&[0u8; 4096]);
    std::fs::write(assets.join("vmlinux"), &kernel).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("manifest.json")).unwrap()).unwrap();
    manifest["files"]["vmlinux"]["size"] = kernel.len().into();
    manifest["files"]["vmlinux"]["sha256"] = {
        use sha2::Digest;
        hex_of(&sha2::Sha256::digest(&kernel)).into()
    };
    std::fs::write(assets.join("manifest.json"), manifest.to_string()).unwrap();
    let rt_b = boxlite::Boxlite::new(boxlite::RuntimeOptions {
        home: Some(h.home.clone()),
        assets: Some(assets.clone()),
        ..Default::default()
    })
    .unwrap();
    let other_kernel = rt_b
        .create(BoxOptions::new("boxlite/busybox"))
        .await
        .unwrap();
    other_kernel.start().await.unwrap();
    let other_from = other_kernel.info().await.unwrap().started_from;
    let after_kernel = rt_b.templates().await.len();
    other_kernel.remove(true).await.unwrap();
    assert_eq!(
        other_from,
        Some(StartKind::Cold),
        "a template of another kernel was used"
    );
    assert_eq!(
        after_kernel, 3,
        "the new kernel's first box left its template"
    );
    // The first runtime's prune drops the template its kernel cannot load.
    drop(rt_b);

    // Templates go with their image.
    for b in [&first, &warm, &cold, &bigger, &fallback] {
        b.remove(true).await.unwrap();
    }
    let removed = rt.remove_image("boxlite/busybox", false).await.unwrap();
    assert!(!removed.pruned.templates.is_empty(), "{removed:?}");
    assert!(rt.templates().await.is_empty());
    assert!(h.processes().is_empty(), "{:?}", h.processes());
}

/// Unmounts a test's filesystem when dropped (after the home on it).
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        tool("umount", &["-l".as_ref(), self.0.as_os_str()]);
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Run `mount` or `umount` (the test blocks on it: it takes milliseconds); whether it
/// succeeded.
#[allow(clippy::disallowed_methods)]
fn tool(name: &str, args: &[&std::ffi::OsStr]) -> bool {
    std::process::Command::new(name)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_or_snapshot_on_a_full_disk_is_a_clear_error_and_the_box_goes_on() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test mounts a small tmpfs as the home: run it as root (CI does)"
    );
    let dir = std::env::temp_dir().join(format!("bxt-full-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = tool(
        "mount",
        &[
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "-o".as_ref(),
            "size=24m".as_ref(),
            "boxlite-test".as_ref(),
            dir.as_os_str(),
        ],
    );
    assert!(mounted, "mounting a tmpfs at {}", dir.display());
    let _unmount = Unmount(dir.clone());
    let h = TestHome::at(dir.clone());
    let rt = h.runtime();
    let b = rt
        .create(BoxOptions::new("boxlite/busybox").warm_start(false))
        .await
        .unwrap();
    b.start().await.unwrap();
    sh(&b, "echo still > /dev/shm/m").await;

    let paused = b.pause().await.unwrap_err();
    let snap = b
        .snapshot_create("full", &SnapshotOptions::default())
        .await
        .unwrap_err();
    let state = b.state().await.unwrap();
    let mem = sh(&b, "cat /dev/shm/m").await;
    let info = b.info().await.unwrap();
    let listed = b.snapshot_list().await.unwrap();

    for e in [&paused, &snap] {
        assert!(
            matches!(e, Error::Snapshot(SnapshotError::DiskFull { .. })),
            "{}",
            boxlite::error_chain(e)
        );
        assert_eq!(e.kind(), boxlite::ErrorKind::ResourceExhausted);
        assert!(e.to_string().contains("disk is full"), "{e}");
    }
    assert_eq!(state, BoxState::Running);
    assert_eq!(mem, "still\n");
    assert!(listed.is_empty(), "{listed:?}");
    for leftover in [
        "paused",
        "paused.partial",
        "snapshots/full",
        "snapshots/full.partial",
    ] {
        assert!(!info.dir.join(leftover).exists(), "{leftover} was left");
    }
    b.remove(true).await.unwrap();
}
