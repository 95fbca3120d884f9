//! Exec timeouts and signal forwarding, against real VMs.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use boxlite_testkit::TestHome;

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

#[test]
fn exec_timeout_kills_the_process_group_and_exits_124_leaving_nothing_in_the_guest() {
    let h = TestHome::new();
    h.ok(BIN, &["run", "-d", "--name", "slow", "boxlite/busybox"]);

    let t0 = Instant::now();
    let out = h.run(
        BIN,
        &[
            "exec",
            "--timeout",
            "1",
            "slow",
            "sh",
            "-c",
            "sleep 1000 & sleep 1000",
        ],
    );
    let took = t0.elapsed();
    let left = h.ok(BIN, &["exec", "slow", "ps", "-o", "args"]);

    assert_eq!(
        out.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The bound: a timed-out result well before the command would end.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(!left.contains("sleep 1000"), "{left}");
    h.ok(BIN, &["rm", "-f", "slow"]);
}

#[test]
fn command_that_finishes_in_time_keeps_its_own_exit_code() {
    let h = TestHome::new();

    let out = h.run(
        BIN,
        &[
            "run",
            "--rm",
            "--timeout",
            "60",
            "boxlite/busybox",
            "sh",
            "-c",
            "exit 3",
        ],
    );

    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn invalid_timeout_is_refused_with_the_rule() {
    let h = TestHome::new();

    let out = h.run(
        BIN,
        &["run", "--rm", "--timeout", "0", "boxlite/busybox", "true"],
    );

    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125));
    assert!(err.contains("invalid --timeout"), "{err}");
    assert!(h.box_dirs().is_empty());
}

#[test]
fn ctrl_c_on_exec_is_forwarded_to_the_command_which_runs_its_trap() {
    let h = TestHome::new();
    h.ok(BIN, &["run", "-d", "--name", "trap", "boxlite/busybox"]);
    let mut child = h
        .cli(BIN)
        .args(["exec", "trap", "sh", "-c"])
        .arg("trap 'echo got-int; exit 3' INT; echo ready; while :; do sleep 0.1; done")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");

    let pid = child.id().cast_signed();
    // SAFETY: kill has no memory-safety preconditions.
    let sent = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(sent, 0);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();

    assert_eq!(rest, vec!["got-int".to_string()]);
    assert_eq!(status.code(), Some(3));
    h.ok(BIN, &["rm", "-f", "trap"]);
}

#[test]
fn detached_exec_is_attached_from_another_process_with_buffered_output_and_exit_code() {
    let h = TestHome::new();
    h.ok(BIN, &["run", "-d", "--name", "att", "boxlite/busybox"]);

    let id = h.ok(
        BIN,
        &[
            "exec",
            "-d",
            "att",
            "sh",
            "-c",
            "echo before; echo oops >&2; touch /tmp/wrote; sleep 1; echo after; exit 7",
        ],
    );
    // It writes while nobody is attached: wait until it has.
    h.ok(
        BIN,
        &[
            "exec",
            "--timeout",
            "60",
            "att",
            "sh",
            "-c",
            "while [ ! -e /tmp/wrote ]; do sleep 0.05; done",
        ],
    );
    let attached = h.run(BIN, &["attach", "att", id.trim()]);
    let again = h.run(BIN, &["attach", "att", id.trim()]);

    assert_eq!(attached.stdout, b"before\nafter\n");
    assert_eq!(attached.stderr, b"oops\n");
    assert_eq!(attached.status.code(), Some(7));
    // A finished execution still reports its exit; its output was consumed.
    assert_eq!(again.status.code(), Some(7));
    assert!(again.stdout.is_empty());
    h.ok(BIN, &["rm", "-f", "att"]);
}

#[test]
fn attach_to_an_unknown_execution_or_a_stopped_box_says_why() {
    let h = TestHome::new();
    h.ok(BIN, &["run", "-d", "--name", "gone", "boxlite/busybox"]);

    let unknown = h.run(BIN, &["attach", "gone", "feedface"]);
    h.ok(BIN, &["stop", "gone"]);
    let stopped = h.run(BIN, &["attach", "gone", "feedface"]);

    let e1 = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(125));
    assert!(e1.contains("no execution with id \"feedface\""), "{e1}");
    let e2 = String::from_utf8_lossy(&stopped.stderr);
    assert!(e2.contains("is Stopped"), "{e2}");
    h.ok(BIN, &["rm", "gone"]);
}
