//! Pause and resume against real VMs: a paused box has no process and no RAM file, keeps
//! its processes, executions and tmpfs files, survives a runtime restart, and comes back
//! with the host's clock; boxes with volumes are refused and left running.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boxlite::{
    BoxCommand, BoxOptions, BoxState, Error, ExitStatus, LiteBox, SnapshotError, VolumeSpec,
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
    let counter = b
        .exec(BoxCommand::new("sh").args([
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done",
        ]))
        .await
        .unwrap();
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
