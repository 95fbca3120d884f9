//! The agent channel with real boxes: the shim killed in the middle of a large output
//! stream, a socket directory deleted under a running box, and the guest RAM file's
//! life. The channel's own hazards, against the real shim with a scripted guest, are in
//! `channel.rs`.

use std::io::Read;
use std::process::Stdio;

use boxlite_testkit::{TestHome, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

fn inspect(home: &TestHome, id: &str) -> serde_json::Value {
    let out = home.ok(BIN, &["inspect", id]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    match v {
        serde_json::Value::Array(mut a) => a.remove(0),
        other => other,
    }
}

fn shim_pid(home: &TestHome, id: &str) -> i32 {
    let pid = inspect(home, id)["monitor_pid"]
        .as_i64()
        .expect("a shim pid");
    i32::try_from(pid).unwrap()
}

/// Check that `text` is consecutive lines `from, from+1, ..., to` (numbers, one per line),
/// returning `from`. The first line may be a fragment (bytes lost with the session that
/// carried them); it is skipped.
fn consecutive_until(text: &str, to: u64) -> u64 {
    let mut lines = text.lines();
    let first_complete = lines.next().expect("some output");
    let mut prev: Option<u64> = None;
    let mut start = None;
    for l in std::iter::once(first_complete).chain(lines).skip(1) {
        let n: u64 = l
            .parse()
            .unwrap_or_else(|_| panic!("a line that is not a number: {l:?}"));
        if let Some(p) = prev {
            assert_eq!(n, p + 1, "a gap or a foreign byte after line {p}");
        } else {
            start = Some(n);
        }
        prev = Some(n);
    }
    assert_eq!(prev, Some(to), "the output ends with the last line");
    start.expect("at least two lines")
}

#[test]
fn a_shim_killed_mid_stream_is_replaced_and_a_reattach_gets_the_rest() {
    let home = TestHome::new();
    let id = home
        .ok(BIN, &["run", "-d", "boxlite/busybox", "sleep", "3600"])
        .trim()
        .to_string();
    // About 100 MiB of numbered lines: every byte's place is known.
    let last: u64 = 13_000_000;
    let exec_id = home
        .ok(BIN, &["exec", "-d", &id, "seq", "1", &last.to_string()])
        .trim()
        .to_string();
    let first_shim = shim_pid(&home, &id);

    let mut attach = home
        .cli(BIN)
        .args(["attach", &id, &exec_id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = attach.stdout.take().unwrap();
    let mut got = vec![0u8; 8 << 20];
    out.read_exact(&mut got).unwrap();
    // SAFETY: kill on the shim's pid, read from this test's own box.
    assert_eq!(unsafe { libc::kill(first_shim, libc::SIGKILL) }, 0);
    let mut more = Vec::new();
    let _ = out.read_to_end(&mut more);
    let status = attach.wait().unwrap();
    got.extend_from_slice(&more);
    assert!(
        !status.success(),
        "the first attach cannot have finished: {status}"
    );
    let first_text = String::from_utf8(got).unwrap();
    let last_seen: u64 = first_text
        .lines()
        .rev()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .expect("complete lines before the kill");

    // The next command brings a new shim; the execution ran on in the guest, and a
    // reattach by id gets what the agent still holds, in order, to the end.
    let second = home.run(BIN, &["attach", &id, &exec_id]);
    assert!(
        second.status.success(),
        "reattach: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    let new_shim = shim_pid(&home, &id);
    assert_ne!(new_shim, first_shim);
    let rest = String::from_utf8(second.stdout).unwrap();
    let from = consecutive_until(&rest, last);
    assert!(
        from > last_seen,
        "the reattach repeated lines the first reader had ({from} <= {last_seen})"
    );
    home.ok(BIN, &["rm", "-f", &id]);
}

#[test]
fn a_deleted_socket_directory_under_a_running_box_heals_and_ram_lives_in_a_tmpfs_file() {
    let home = TestHome::new();
    let id = home
        .ok(BIN, &["run", "-d", "boxlite/busybox", "sleep", "3600"])
        .trim()
        .to_string();
    let info = inspect(&home, &id);
    let ram = std::path::PathBuf::from(info["ram_file"].as_str().unwrap());
    assert!(ram.is_file(), "{} exists while the box runs", ram.display());
    let sockets = std::path::PathBuf::from(info["socket_dir"].as_str().unwrap());

    // A temp cleaner removes the socket directory.
    std::fs::remove_dir_all(&sockets).unwrap();
    let out = home.ok(BIN, &["exec", &id, "echo", "still reachable"]);
    assert_eq!(out.trim(), "still reachable");
    assert!(sockets.join("a.sock").exists());

    // And again, with the shim killed as well: the next command starts a new one.
    let shim = shim_pid(&home, &id);
    std::fs::remove_dir_all(&sockets).unwrap();
    // SAFETY: kill on the shim's pid, read from this test's own box.
    assert_eq!(unsafe { libc::kill(shim, libc::SIGKILL) }, 0);
    wait_for(10, "the shim to exit", || {
        (!std::path::Path::new(&format!("/proc/{shim}")).exists()).then_some(())
    });
    let out = home.ok(BIN, &["exec", &id, "echo", "reachable again"]);
    assert_eq!(out.trim(), "reachable again");

    home.ok(BIN, &["rm", "-f", &id]);
    assert!(!ram.exists(), "{} is removed with the box", ram.display());
}
