//! Per-box figures and abnormal ends, against real VMs.

use std::time::Duration;

use boxlite::{BoxCommand, BoxOptions, BoxState, ExecError, ExitStatus};
use boxlite_testkit::TestHome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_guest_and_host_figures_while_running_and_disk_only_when_stopped() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    b.start().await.unwrap();
    for _ in 0..3 {
        let ex = b
            .exec(
                BoxCommand::new("sh")
                    .args(["-c", "dd if=/dev/zero of=/fill bs=1M count=8 2>/dev/null"]),
            )
            .await
            .unwrap();
        assert!(ex.wait().await.unwrap().success());
    }

    let first = b.metrics().await.unwrap();
    let busy = b
        .exec(
            BoxCommand::new("sh").args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"]),
        )
        .await
        .unwrap();
    busy.wait().await.unwrap();
    let second = b.metrics().await.unwrap();
    b.stop(Duration::from_secs(10)).await.unwrap();
    let stopped = b.metrics().await.unwrap();

    assert_eq!(first.state, BoxState::Running);
    assert_eq!(first.execs_started, Some(3));
    assert_eq!(second.execs_started, Some(4));
    assert_eq!(first.execs_running, Some(0));
    let total = first.mem_total_bytes.unwrap();
    assert!(total > 300 << 20 && total <= 512 << 20, "{total}");
    assert!(first.mem_used_bytes.unwrap() > 0);
    assert!(first.vmm_rss_bytes.unwrap() > 50 << 20);
    assert!(
        first.rootfs_used_bytes.unwrap() >= 8 << 20,
        "the 8 MiB file counts"
    );
    assert!(
        first.disk_overlay_bytes >= 8 << 20,
        "{}",
        first.disk_overlay_bytes
    );
    assert!(second.cpu_secs.unwrap() > first.cpu_secs.unwrap());
    assert!(second.cpu_percent_since(&first).unwrap() > 0.0);
    let boot = first.boot.unwrap();
    assert!(boot.vmm_spawn_ms < boot.ready_ms);
    assert!(boot.kernel_to_agent_ready_ms.unwrap() > 0);
    assert!(boot.agent_ready_to_first_exec_ms.is_some());
    assert_eq!(stopped.state, BoxState::Stopped);
    assert!(stopped.cpu_secs.is_none() && stopped.execs_started.is_none());
    assert!(stopped.disk_overlay_bytes >= first.disk_overlay_bytes);
    rt.remove(&b, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_taken_by_the_oom_killer_is_reported_as_out_of_memory() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt
        .create(BoxOptions::new("boxlite/busybox").memory_mib(256))
        .await
        .unwrap();
    b.start().await.unwrap();

    // `tail` keeps the last lines of a stream without newlines: all of it.
    let ex = b
        .exec(BoxCommand::new("tail").arg("/dev/zero"))
        .await
        .unwrap();
    let status = ex.wait().await.unwrap();
    let normal = b
        .exec(BoxCommand::new("true"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let m = b.metrics().await.unwrap();

    assert_eq!(status, ExitStatus::OutOfMemory);
    assert_eq!(status.shell_code(), 137);
    assert!(
        status.to_string().contains("out-of-memory killer"),
        "{status}"
    );
    assert_eq!(normal, ExitStatus::Code(0), "the box survives");
    assert!(m.oom_kills.unwrap() >= 1);
    b.stop(Duration::from_secs(10)).await.unwrap();
    rt.remove(&b, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_whose_box_dies_under_it_says_the_box_stopped() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    b.start().await.unwrap();
    let ex = b.exec(BoxCommand::new("sleep").arg("1000")).await.unwrap();
    let pid = b.info().await.unwrap().vmm_pid.unwrap();

    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let err = tokio::time::timeout(Duration::from_secs(30), ex.wait())
        .await
        .expect("wait returns once the VM is gone")
        .unwrap_err();

    assert!(matches!(err, ExecError::BoxStopped { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("the box stopped while the command was running"),
        "{err}"
    );
    rt.remove(&b, true).await.unwrap();
}
