//! Snapshots from the CLI, and a boxlite process killed (SIGKILL) in the middle of a
//! pause, a snapshot or a clone: whatever ran, the next command finds the box running or
//! paused with its memory intact, never half-saved, and every clone it made either works
//! or can be removed, with no process left behind. QEMU killed during a pause leaves the
//! box paused or stopped, and it starts again. One box serves every step.

use std::process::{Child, Stdio};
use std::time::Duration;

use boxlite_testkit::TestHome;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

fn sigkill(child: &mut Child) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    child.wait().unwrap();
}

fn json(h: &TestHome, args: &[&str]) -> Value {
    serde_json::from_str(&h.ok(BIN, args)).unwrap()
}

fn state(h: &TestHome, id: &str) -> String {
    let v = json(h, &["inspect", id]);
    v[0]["state"].as_str().unwrap_or_default().to_string()
}

/// Start `args` with no input or output, and wait `ms` milliseconds.
fn started(h: &TestHome, args: &[&str], ms: u64) -> Child {
    let child = h
        .cli(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    child
}

/// Start `args` and kill it after `ms` milliseconds (it may have finished by then).
fn killed_after(h: &TestHome, args: &[&str], ms: u64) {
    sigkill(&mut started(h, args, ms));
}

fn partial_dirs(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(".partial"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn snapshots_from_the_cli_and_commands_killed_halfway_leave_every_box_usable() {
    let h = TestHome::new();
    let id = h
        .ok(
            BIN,
            &[
                "run",
                "-d",
                "--name",
                "src",
                "boxlite/busybox",
                "sleep",
                "100000",
            ],
        )
        .trim()
        .to_string();
    h.ok(BIN, &["exec", "src", "sh", "-c", "echo mem > /dev/shm/m"]);
    let box_dir = h.home.join("boxes").join(&id);

    // The CLI's own commands.
    assert_eq!(
        h.ok(BIN, &["snapshot", "create", "src", "first"]),
        "first\n"
    );
    let auto = h.ok(BIN, &["snapshot", "create", "src", "--disk-only"]);
    let listed = json(&h, &["snapshot", "ls", "src", "--format", "json"]);
    let dup = h.run(BIN, &["snapshot", "create", "src", "first"]);
    let bad = h.run(BIN, &["snapshot", "create", "src", "a/b"]);
    let clones = h.ok(BIN, &["clone", "src@first", "-n", "2", "--name", "k"]);
    let clone_ids: Vec<&str> = clones.lines().collect();
    let clone_mem = h.ok(BIN, &["exec", "k-2", "cat", "/dev/shm/m"]);
    let inspected = json(&h, &["inspect", "k-1"]);
    let templates = json(&h, &["image", "templates", "--format", "json"]);

    assert!(
        auto.starts_with("snap-") && auto.trim().len() == 20,
        "{auto:?}"
    );
    let names: Vec<(&str, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["memory"].as_bool().unwrap()))
        .collect();
    assert_eq!(names, [("first", true), (auto.trim(), false)]);
    assert_eq!(dup.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("already has a snapshot named \"first\""),
        "{}",
        String::from_utf8_lossy(&dup.stderr)
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("invalid snapshot name \"a/b\""),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert_eq!(clone_ids.len(), 2, "{clones}");
    assert_eq!(clone_mem, "mem\n");
    assert_eq!(
        inspected[0]["started_from"]["kind"], "cloned",
        "{inspected}"
    );
    assert_eq!(inspected[0]["started_from"]["snapshot"], "first");
    assert_eq!(
        templates.as_array().map(Vec::len),
        Some(1),
        "the first box left a template: {templates}"
    );
    h.ok(BIN, &["rm", "-f", "k-1", "k-2"]);

    // A pause killed at various points: the next command finds the box running or
    // paused, and an exec continues it with its memory.
    for ms in [30, 150, 400, 900] {
        killed_after(&h, &["pause", "src"], ms);
        let after = state(&h, "src");
        let mem = h.ok(BIN, &["exec", "src", "cat", "/dev/shm/m"]);
        assert!(
            after == "Running" || after == "Paused",
            "after a pause killed at {ms} ms the box is {after}"
        );
        assert_eq!(mem, "mem\n", "killed at {ms} ms");
        assert_eq!(
            partial_dirs(&box_dir),
            Vec::<String>::new(),
            "killed at {ms} ms"
        );
    }

    // A snapshot killed halfway: the box goes on, and the snapshot is whole or absent.
    for (i, ms) in [100, 500, 1200].into_iter().enumerate() {
        let name = format!("k{i}");
        killed_after(&h, &["snapshot", "create", "src", &name], ms);
        let mem = h.ok(BIN, &["exec", "src", "cat", "/dev/shm/m"]);
        let listed = json(&h, &["snapshot", "ls", "src", "--format", "json"]);
        assert_eq!(mem, "mem\n", "snapshot killed at {ms} ms");
        assert_eq!(state(&h, "src"), "Running");
        for s in listed.as_array().unwrap() {
            assert!(s["size_bytes"].as_u64().unwrap() > 0, "{s}");
        }
        if listed
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == name.as_str())
        {
            let c = h.ok(BIN, &["clone", &format!("src@{name}")]);
            assert_eq!(h.ok(BIN, &["exec", c.trim(), "cat", "/dev/shm/m"]), "mem\n");
            h.ok(BIN, &["rm", "-f", c.trim()]);
        }
    }

    // QEMU killed while a pause saves it: the box ends paused (the state was whole) or
    // stopped, never in between, and starts again.
    for ms in [100, 600] {
        let mut pause = started(&h, &["pause", "src"], ms);
        for (pid, cmd) in h.processes() {
            if cmd.contains("qemu-system") && cmd.contains(&id[..12]) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        pause.wait().unwrap();
        let after = state(&h, "src");
        assert!(
            after == "Paused" || after == "Stopped",
            "QEMU killed {ms} ms into a pause: the box is {after}"
        );
        h.ok(BIN, &["start", "src"]);
        let mem = h.ok(
            BIN,
            &[
                "exec",
                "src",
                "sh",
                "-c",
                "cat /dev/shm/m 2>/dev/null || echo gone",
            ],
        );
        if after == "Paused" {
            assert_eq!(mem, "mem\n");
        } else {
            assert_eq!(mem, "gone\n");
            h.ok(BIN, &["exec", "src", "sh", "-c", "echo mem > /dev/shm/m"]);
        }
        assert_eq!(partial_dirs(&box_dir), Vec::<String>::new());
    }

    // A clone killed halfway: every box there is can be removed, and nothing is left.
    killed_after(&h, &["clone", "src@first", "-n", "3"], 1500);
    let all = json(&h, &["ls", "-a", "--format", "json"]);
    let others: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .filter(|b| *b != id)
        .collect();
    for o in &others {
        h.ok(BIN, &["rm", "-f", o]);
    }
    assert_eq!(h.ok(BIN, &["exec", "src", "cat", "/dev/shm/m"]), "mem\n");
    h.ok(BIN, &["rm", "-f", "src"]);
    assert!(h.processes().is_empty(), "{:?}", h.processes());
    let ram_left: Vec<_> = std::fs::read_dir(boxlite::ram_root())
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    n.starts_with(&id[..12]) || others.iter().any(|o| n.starts_with(&o[..12]))
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(ram_left.is_empty(), "{ram_left:?}");
}
