//! Idle boxes against real VMs: an idle box's VMM costs little CPU next to a busy one;
//! auto-pause pauses an idle box (no VM process, no RAM file), health pings and metrics
//! leave it paused, the next exec resumes it with its memory, and it survives a runtime
//! restart; a running execution, or a guest computing on its own, keeps a box awake.

use std::time::{Duration, Instant};

use boxlite::{BoxCommand, BoxOptions, BoxState, ExitStatus, LiteBox};
use boxlite_testkit::TestHome;

/// Run `script` with `sh -c` and return its stdout; it must succeed.
async fn sh(b: &LiteBox, script: &str) -> String {
    boxlite_testkit::stdout_ok(b, BoxCommand::new("sh").args(["-c", script])).await
}

/// Wait (up to `secs`) until box `b` is in `state`.
async fn wait_state(b: &LiteBox, state: BoxState, secs: u64) -> Duration {
    let t0 = Instant::now();
    loop {
        let now = b.info().await.unwrap().state;
        if now == state {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "box {} still {now:?} after {secs}s, waiting for {state:?}",
            b.id()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// CPU time (user + system) of process `pid`, in seconds.
fn cpu_secs(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// The share of one host core process `pid` used over `over` (CPU time, not wall time
/// of anything it did).
async fn cpu_share(pid: i32, over: Duration) -> f64 {
    let (c0, t0) = (cpu_secs(pid), Instant::now());
    tokio::time::sleep(over).await;
    (cpu_secs(pid) - c0) / t0.elapsed().as_secs_f64()
}

/// The most of one host core an idle box's VMM may use (the bound: 1%).
const IDLE_BOUND: f64 = 0.01;

/// The CPU measurement runs alone: the other tests of this file (which boot boxes) take
/// this for reading, the measurement for writing. Boots on the same two cores would
/// measure the host's contention, not the idle box.
static QUIET: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_box_costs_at_most_a_hundredth_of_a_core_next_to_a_busy_one() {
    let _alone = QUIET.write().await;
    let h = TestHome::new();
    let rt = h.runtime();
    let idle = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    let busy = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    idle.start().await.unwrap();
    busy.start().await.unwrap();
    let spin = busy
        .exec(BoxCommand::new("sh").args(["-c", "while :; do :; done"]))
        .await
        .unwrap();
    // Let the boot's last work (module loading, the first exec's set-up) settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_pid = idle.info().await.unwrap().vmm_pid.unwrap();
    let busy_pid = busy.info().await.unwrap().vmm_pid.unwrap();

    let (idle_share, busy_share) = tokio::join!(
        cpu_share(idle_pid, Duration::from_secs(10)),
        cpu_share(busy_pid, Duration::from_secs(10))
    );
    spin.kill().await.unwrap();
    eprintln!("idle VMM: {idle_share:.4} of a core; busy VMM: {busy_share:.3}");

    assert!(
        busy_share > 0.3,
        "a spinning guest used only {busy_share:.3} of a core: the measurement is broken"
    );
    assert!(
        idle_share <= IDLE_BOUND,
        "an idle box's VMM used {idle_share:.4} of a core (bound {IDLE_BOUND}); a busy one {busy_share:.3}"
    );
    idle.remove(true).await.unwrap();
    busy.remove(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_box_pauses_itself_stays_paused_for_pings_and_resumes_on_exec_across_a_restart() {
    let _shared = QUIET.read().await;
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt
        .create(BoxOptions::new("boxlite/busybox").auto_pause(Duration::from_secs(2)))
        .await
        .unwrap();
    b.start().await.unwrap();
    let id = b.id().to_string();
    assert_eq!(b.info().await.unwrap().config.auto_pause_secs, 2);
    sh(&b, "echo kept-in-memory > /dev/shm/mem").await;
    let ram_file = b.info().await.unwrap().ram_file;

    wait_state(&b, BoxState::Paused, 120).await;
    let paused = b.info().await.unwrap();
    let ram_left = ram_file.exists();
    let vmm_left = h
        .processes()
        .iter()
        .any(|(_, cmd)| cmd.contains("qemu-system") && cmd.contains(&id[..12]));
    // Health pings and metrics do not wake it.
    let ping = b.ping(Duration::from_secs(5)).await;
    let metrics = b.metrics().await.unwrap();
    let after_ping = b.info().await.unwrap().state;
    drop(b);
    drop(rt);

    // A new runtime finds it paused; an exec resumes it with its memory.
    let rt = h.runtime();
    let b = rt.get(&id).await.unwrap();
    let in_new_runtime = b.state().await.unwrap();
    let memory = sh(&b, "cat /dev/shm/mem").await;
    let resumed = b.info().await.unwrap();

    assert_eq!(paused.state, BoxState::Paused);
    assert!(paused.auto_paused, "the pause is recorded as the box's own");
    assert!(paused.paused_at.is_some());
    assert!(!vmm_left, "a paused box has no VM process");
    assert!(!ram_left, "a paused box has no RAM file on tmpfs");
    assert!(ping.is_err(), "a ping of a paused box answers: {ping:?}");
    assert_eq!(metrics.state, BoxState::Paused);
    assert_eq!(
        after_ping,
        BoxState::Paused,
        "a ping or metrics woke the box"
    );
    assert_eq!(in_new_runtime, BoxState::Paused);
    assert_eq!(memory, "kept-in-memory\n");
    assert_eq!(resumed.state, BoxState::Running);
    assert!(!resumed.auto_paused);

    // An execution whose output nobody has read yet does not keep the box awake; its
    // handle, used after the box paused itself, resumes it and gets everything.
    let mut late = b
        .exec(BoxCommand::new("sh").args(["-c", "echo late; exit 3"]))
        .await
        .unwrap();
    wait_state(&b, BoxState::Paused, 120).await;
    let late_out = late.take_stdout().unwrap().read_to_end().await.unwrap();
    let late_status = late.wait().await.unwrap();
    let after_late = b.info().await.unwrap().state;

    assert_eq!(late_out, b"late\n");
    assert_eq!(late_status, ExitStatus::Code(3));
    assert_eq!(after_late, BoxState::Running);
    b.remove(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_execution_or_a_busy_guest_keeps_a_box_awake() {
    let _shared = QUIET.read().await;
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt
        .create(BoxOptions::new("boxlite/busybox").auto_pause(Duration::from_secs(1)))
        .await
        .unwrap();
    b.start().await.unwrap();

    // A long execution nobody reads from: the box stays up for all of it and the
    // command completes.
    let mut long = b
        .exec(BoxCommand::new("sh").args(["-c", "sleep 8; echo done"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = b.info().await.unwrap().state;
    let out = long.take_stdout().unwrap().read_to_end().await.unwrap();
    let status = long.wait().await.unwrap();

    // A process computing in the background, started by an execution that has ended.
    sh(
        &b,
        "(while :; do :; done) >/dev/null 2>&1 & echo $! > /tmp/spin",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let spinning = b.info().await.unwrap().state;
    sh(&b, "kill $(cat /tmp/spin)").await;
    // Quiet now: it pauses.
    wait_state(&b, BoxState::Paused, 120).await;

    assert_eq!(
        during,
        BoxState::Running,
        "paused under a running execution"
    );
    assert_eq!(out, b"done\n");
    assert!(status.success(), "{status:?}");
    assert_eq!(spinning, BoxState::Running, "paused under a busy guest");
    b.remove(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_pause_is_checked_and_refused_where_a_box_cannot_pause() {
    let _shared = QUIET.read().await;
    let h = TestHome::new();
    let rt = h.runtime();
    let too_long = rt
        .create(BoxOptions::new("boxlite/busybox").auto_pause(Duration::from_secs(31 * 86400)))
        .await
        .unwrap_err();
    let with_volume = rt
        .create(
            BoxOptions::new("boxlite/busybox")
                .auto_pause(Duration::from_secs(5))
                .volume(boxlite::VolumeSpec::anonymous("/data")),
        )
        .await
        .unwrap_err();
    let never = rt
        .create(BoxOptions::new("boxlite/busybox").auto_pause(Duration::ZERO))
        .await
        .unwrap();

    assert!(too_long.to_string().contains("out of range"), "{too_long}");
    assert!(with_volume.to_string().contains("volumes"), "{with_volume}");
    assert_eq!(never.info().await.unwrap().config.auto_pause_secs, 0);
    assert_eq!(
        rt.list().await.unwrap().len(),
        1,
        "a refused box left a row"
    );
    never.remove(true).await.unwrap();
}
