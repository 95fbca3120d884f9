//! Quiesce and Resume against a real VM, the agent's half of restoring a memory
//! snapshot: Resume sets the guest's wall clock, takes host entropy (and refuses a bad
//! seed or hostname), renames the box (its hostname and its line in the generated
//! /etc/hosts), and Quiesce freezes every process exec started and holds new ones until
//! Resume. One box serves every step, to keep boots few.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use boxlite::{BoxCommand, BoxOptions, CopyOptions, Error, LiteBox, PortalError};
use boxlite_testkit::TestHome;

/// 2033-05-18: far enough from any real clock that a value near it was set by Resume.
const FUTURE_SECS: i64 = 2_000_000_000;
/// How far a clock read in the box may be from the value expected: an exec under TCG
/// takes well under a second, the rest is margin for a loaded machine.
const CLOCK_SLACK_SECS: i64 = 10;
/// A fixed seed is enough here: what is checked is that the guest takes it.
const SEED: [u8; 64] = [0x5a; 64];

/// Counts in /tmp/n, about 20 times a second, until killed. Each value is renamed into
/// place, so a reader never sees the file truncated: Quiesce can freeze the workload
/// between a truncation and its write.
const COUNTER: &str =
    "i=0; while :; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.05; done";

use boxlite_testkit::stdout_ok as out;

fn sh(script: &str) -> BoxCommand {
    BoxCommand::new("sh").args(["-c", script])
}

fn host_now_ns() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(d.as_nanos()).unwrap()
}

/// The box's clock, in seconds since the epoch.
async fn box_clock(b: &LiteBox) -> i64 {
    let s = out(b, sh("date +%s")).await;
    s.trim()
        .parse()
        .unwrap_or_else(|e| panic!("date +%s printed {s:?}: {e}"))
}

/// The counter file as the agent reads it (CopyOut runs in the agent, not in the
/// workload, so it works while the workload is frozen).
async fn counter_via_agent(b: &LiteBox, scratch: &Path, name: &str) -> String {
    let dest = scratch.join(name);
    b.copy_out("/tmp/n", &dest, &CopyOptions::default())
        .await
        .unwrap();
    std::fs::read_to_string(&dest).unwrap()
}

fn counter_value(text: &str) -> u64 {
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("/tmp/n holds {text:?}: {e}"))
}

/// Whether `r` is the agent refusing a Resume argument, with a message naming `what`.
fn refused_naming(r: &Result<(), Error>, what: &str) -> bool {
    matches!(
        r,
        Err(Error::Portal(e @ PortalError::Rpc { message, .. }))
            if e.code() == Some(tonic::Code::InvalidArgument) && message.contains(what)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_sets_clock_entropy_and_name_and_quiesce_holds_the_workload_until_resume() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    let t_boot = Instant::now();
    b.start().await.unwrap();
    eprintln!("booted in {:?}", t_boot.elapsed());
    let t_steps = Instant::now();

    // (a) The wall clock: to 2033, then back to the host's time.
    b.resume_guest(FUTURE_SECS * 1_000_000_000, &SEED, "")
        .await
        .unwrap();
    let future = box_clock(&b).await;
    b.resume_guest(host_now_ns(), &SEED, "").await.unwrap();
    let back = box_clock(&b).await;
    let host_secs = host_now_ns() / 1_000_000_000;
    assert!(
        (future - FUTURE_SECS).abs() <= CLOCK_SLACK_SECS,
        "after Resume to {FUTURE_SECS} s the box's clock reads {future} s"
    );
    assert!(
        (back - host_secs).abs() <= CLOCK_SLACK_SECS,
        "after Resume to the host's time ({host_secs} s) the box's clock reads {back} s"
    );

    // (b) Entropy: the box still reads random bytes; a short seed and a bad hostname are
    // refused, naming what was wrong.
    let random = out(
        &b,
        BoxCommand::new("od").args(["-An", "-tx1", "-N16", "/dev/urandom"]),
    )
    .await;
    let short_seed = b.resume_guest(0, &SEED[..10], "").await;
    let bad_name = b.resume_guest(0, &SEED, "a b").await;
    let bytes: Vec<&str> = random.split_whitespace().collect();
    assert!(
        bytes.len() == 16 && bytes.iter().all(|x| x.len() == 2),
        "16 bytes of /dev/urandom after Resume read as {random:?}"
    );
    assert!(
        refused_naming(&short_seed, "seed"),
        "a 10-byte seed was not refused as an invalid seed: {short_seed:?}"
    );
    assert!(
        refused_naming(&bad_name, "hostname \"a b\""),
        "hostname \"a b\" was not refused as an invalid hostname: {bad_name:?}"
    );

    // (c) The name: hostname and the generated /etc/hosts.
    let old_name = out(&b, BoxCommand::new("hostname"))
        .await
        .trim()
        .to_string();
    let hosts_before = out(&b, BoxCommand::new("cat").arg("/etc/hosts")).await;
    b.resume_guest(0, &SEED, "clone-1").await.unwrap();
    let name = out(&b, BoxCommand::new("hostname")).await;
    let hosts = out(&b, BoxCommand::new("cat").arg("/etc/hosts")).await;
    assert!(
        hosts_before.contains(&old_name),
        "the boot-time /etc/hosts does not name the box ({old_name}):\n{hosts_before}"
    );
    assert_eq!(name, "clone-1\n", "hostname after Resume to clone-1");
    assert!(
        hosts.contains("\tclone-1\n") && !hosts.contains(&old_name),
        "/etc/hosts after Resume to clone-1 (was {old_name}):\n{hosts}"
    );

    // (d) The freezer: a counting loop stops while quiesced, an exec started meanwhile
    // waits, and both go on after Resume.
    let counter = b.exec(sh(COUNTER)).await.unwrap();
    out(
        &b,
        sh("for i in $(seq 100); do [ -s /tmp/n ] && exit 0; sleep 0.1; done; exit 1"),
    )
    .await;
    let frozen = b.quiesce().await.unwrap();
    let quiesced_at = Instant::now();
    let held = tokio::spawn({
        let b = b.clone();
        async move { out(&b, BoxCommand::new("cat").arg("/tmp/n")).await }
    });
    let during_1 = counter_via_agent(&b, &h.home, "n1").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during_2 = counter_via_agent(&b, &h.home, "n2").await;
    let held_pending = !held.is_finished();
    let quiesced_for = quiesced_at.elapsed();
    b.resume_guest(0, &SEED, "").await.unwrap();
    let held_out = tokio::time::timeout(Duration::from_secs(30), held).await;
    let after_1 = counter_value(&out(&b, BoxCommand::new("cat").arg("/tmp/n")).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_2 = counter_value(&out(&b, BoxCommand::new("cat").arg("/tmp/n")).await);
    assert!(frozen, "Quiesce reported no freezer");
    assert_eq!(
        during_1, during_2,
        "the counter moved while the workload was quiesced"
    );
    assert!(
        held_pending,
        "an exec started while quiesced finished within {quiesced_for:?}"
    );
    let held_out = match held_out {
        Ok(Ok(s)) => s,
        other => panic!("the exec held by Quiesce did not finish after Resume: {other:?}"),
    };
    assert!(
        counter_value(&held_out) >= counter_value(&during_2),
        "the held exec read {held_out:?}, older than the frozen counter {during_2:?}"
    );
    assert!(
        after_2 > after_1,
        "the counter did not move in the 0.5 s after Resume ({after_1} then {after_2})"
    );
    eprintln!(
        "steps took {:?}; quiesced for {quiesced_for:?}; counter {} while frozen, {after_1} -> {after_2} after",
        t_steps.elapsed(),
        during_1.trim()
    );

    counter.kill().await.unwrap();
    b.stop(Duration::from_secs(10)).await.unwrap();
    rt.remove(&b, false).await.unwrap();
}
