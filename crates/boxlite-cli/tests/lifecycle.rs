//! Box lifecycle across processes, against real VMs: detach and reattach, persistence,
//! recovery from killed processes, names, health and auto-removal.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use boxlite_testkit::{TestHome, wait_for};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

fn run(h: &TestHome, args: &[&str]) -> Output {
    h.run(BIN, args)
}

fn ok(h: &TestHome, args: &[&str]) -> String {
    h.ok(BIN, args)
}

fn inspect(h: &TestHome, key: &str) -> Value {
    let v: Value = serde_json::from_str(&ok(h, &["inspect", key])).expect("inspect is JSON");
    v[0].clone()
}

fn ls_all(h: &TestHome) -> Vec<Value> {
    let v: Value = serde_json::from_str(&ok(h, &["ls", "-a", "--format", "json"])).unwrap();
    v.as_array().unwrap().clone()
}

fn vmm_pid(h: &TestHome, key: &str) -> i32 {
    let pid = inspect(h, key)["vmm_pid"]
        .as_i64()
        .expect("a running box has a VMM");
    i32::try_from(pid).unwrap()
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

#[test]
fn detached_box_serves_exec_and_stop_from_unrelated_processes() {
    let h = TestHome::new();

    let id = ok(&h, &["run", "-d", "--name", "det", "boxlite/busybox"]);
    let out = ok(&h, &["exec", "det", "sh", "-c", "echo from-second-process"]);
    let stop = ok(&h, &["stop", "det"]);
    let state = inspect(&h, "det")["state"].clone();

    assert_eq!(id.trim().len(), 32, "run -d prints the id: {id:?}");
    assert_eq!(out, "from-second-process\n");
    assert_eq!(stop, "det\n");
    assert_eq!(state, "Stopped");
    assert!(h.processes().is_empty(), "{:?}", h.processes());
    assert!(h.socket_dirs().is_empty(), "{:?}", h.socket_dirs());
    ok(&h, &["rm", "det"]);
}

#[test]
fn two_exec_processes_run_against_one_box_at_the_same_time() {
    let h = TestHome::new();
    ok(&h, &["run", "-d", "--name", "two", "boxlite/busybox"]);

    // The first can only finish once the second has run while it was still waiting.
    let waiter = h
        .cli(BIN)
        .args(["exec", "two", "sh", "-c"])
        .arg("while [ ! -f /tmp/go ]; do sleep 0.05; done; echo first")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let second = ok(
        &h,
        &["exec", "two", "sh", "-c", "touch /tmp/go; echo second"],
    );
    let first = waiter.wait_with_output().unwrap();

    assert_eq!(second, "second\n");
    assert!(first.status.success());
    assert_eq!(first.stdout, b"first\n");
    ok(&h, &["rm", "-f", "two"]);
}

#[test]
fn file_written_before_stop_is_there_after_start_and_restart() {
    let h = TestHome::new();
    ok(&h, &["run", "-d", "--name", "keep", "boxlite/busybox"]);
    ok(
        &h,
        &["exec", "keep", "sh", "-c", "echo kept > /root/note; sync"],
    );
    let first_vmm = vmm_pid(&h, "keep");

    ok(&h, &["stop", "keep"]);
    ok(&h, &["start", "keep"]);
    let after_start = ok(&h, &["exec", "keep", "cat", "/root/note"]);
    ok(&h, &["restart", "keep"]);
    let after_restart = ok(&h, &["exec", "keep", "cat", "/root/note"]);
    let second_vmm = vmm_pid(&h, "keep");

    assert_eq!(after_start, "kept\n");
    assert_eq!(after_restart, "kept\n");
    assert_ne!(first_vmm, second_vmm);
    ok(&h, &["rm", "-f", "keep"]);
}

#[test]
fn exec_on_a_stopped_box_starts_it_first() {
    let h = TestHome::new();
    ok(&h, &["create", "--name", "lazy", "boxlite/busybox"]);
    let before = inspect(&h, "lazy")["state"].clone();

    let out = ok(&h, &["exec", "lazy", "echo", "up"]);

    assert_eq!(before, "Configured");
    assert_eq!(out, "up\n");
    assert_eq!(inspect(&h, "lazy")["state"], "Running");
    ok(&h, &["rm", "-f", "lazy"]);
}

#[test]
fn vmm_killed_behind_the_runtimes_back_shows_stopped_with_a_reason_and_starts_again() {
    let h = TestHome::new();
    ok(&h, &["run", "-d", "--name", "victim", "boxlite/busybox"]);
    let pid = vmm_pid(&h, "victim");

    kill(pid, libc::SIGKILL);
    let boxes = wait_for(30, "the box to be seen stopped", || {
        let all = ls_all(&h);
        (all[0]["state"] == "Stopped").then_some(all)
    });
    let reason = boxes[0]["last_error"].as_str().unwrap_or("").to_string();
    let out = ok(&h, &["exec", "victim", "echo", "back"]);

    assert!(reason.contains(&format!("pid {pid}")), "{reason}");
    assert!(reason.contains("exited"), "{reason}");
    assert_eq!(out, "back\n");
    ok(&h, &["rm", "-f", "victim"]);
}

#[test]
fn cli_killed_at_any_point_of_create_leaves_nothing_that_cannot_be_removed() {
    let h = TestHome::new();
    for delay_ms in [0u64, 15, 30, 45, 60, 90, 150] {
        let mut cli = h
            .cli(BIN)
            .args(["create", "boxlite/busybox"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = cli.kill();
        cli.wait().unwrap();
    }

    let ids: Vec<String> = ls_all(&h)
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        ok(&h, &["rm", id]);
    }

    assert!(ls_all(&h).is_empty());
    assert!(h.box_dirs().is_empty(), "{:?}", h.box_dirs());
    assert!(h.lock_files().is_empty(), "{:?}", h.lock_files());
}

#[test]
fn home_path_of_200_characters_works_end_to_end() {
    let base = std::env::temp_dir().join(format!("bxt-deep-{:08x}", rand_u32()));
    let mut home = base.clone();
    while home.as_os_str().len() < 200 {
        home.push("d".repeat(40));
    }
    let mut s = home.into_os_string().into_string().unwrap();
    s.truncate(200);
    let h = TestHome::at(PathBuf::from(&s));

    ok(&h, &["run", "-d", "--name", "deep", "boxlite/busybox"]);
    let out = ok(&h, &["exec", "deep", "echo", "deep-ok"]);
    ok(&h, &["stop", "deep"]);
    ok(&h, &["rm", "deep"]);

    assert_eq!(h.home.as_os_str().len(), 200);
    assert_eq!(out, "deep-ok\n");
    assert!(ls_all(&h).is_empty());
    drop(h);
    std::fs::remove_dir_all(base).unwrap();
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() ^ std::process::id()
}

#[test]
fn socket_directory_owned_by_another_user_is_refused_and_nothing_is_left() {
    let h = TestHome::new();
    let root = std::env::temp_dir().join(format!("bxs-{:08x}", rand_u32()));
    std::fs::create_dir(&root).unwrap();
    let c = std::ffi::CString::new(root.to_str().unwrap()).unwrap();
    // SAFETY: chown on a valid NUL-terminated path; the suite runs as root (README).
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);

    let out = h
        .cli(BIN)
        .env("BOXLITE_SOCKET_DIR", &root)
        .args(["run", "-d", "boxlite/busybox"])
        .stdin(Stdio::null())
        .output()
        .unwrap();

    let owner = std::fs::metadata(&root).unwrap().uid();
    std::fs::remove_dir_all(&root).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125));
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(err.contains(root.to_str().unwrap()), "{err}");
    assert_eq!(owner, 65534, "the directory was not taken over");
    assert!(ls_all(&h).is_empty());
}

#[test]
fn rm_of_a_running_box_is_refused_without_force() {
    let h = TestHome::new();
    ok(&h, &["run", "-d", "--name", "busy", "boxlite/busybox"]);

    let refused = run(&h, &["rm", "busy"]);
    let still = inspect(&h, "busy")["state"].clone();
    let forced = run(&h, &["rm", "-f", "busy"]);

    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(125));
    assert!(err.contains("is Running") && err.contains("force"), "{err}");
    assert_eq!(still, "Running");
    assert!(forced.status.success());
    assert!(ls_all(&h).is_empty());
    assert!(h.processes().is_empty(), "{:?}", h.processes());
}

#[test]
fn duplicate_name_is_refused_and_an_ambiguous_prefix_lists_the_candidates() {
    let h = TestHome::new();
    ok(&h, &["create", "--name", "same", "boxlite/busybox"]);
    let dup = run(&h, &["create", "--name", "same", "boxlite/busybox"]);
    // Among 17 ids, two share their first hex digit.
    let mut ids: Vec<String> = vec![inspect(&h, "same")["id"].as_str().unwrap().into()];
    let clash = loop {
        let id = ok(&h, &["create", "boxlite/busybox"]).trim().to_string();
        let first = id[..1].to_string();
        ids.push(id);
        if ids.iter().filter(|i| i.starts_with(&first)).count() > 1 {
            break first;
        }
    };

    let ambiguous = run(&h, &["inspect", &clash]);

    let dup_err = String::from_utf8_lossy(&dup.stderr);
    assert_eq!(dup.status.code(), Some(125));
    assert!(dup_err.contains("\"same\" is already used"), "{dup_err}");
    let amb_err = String::from_utf8_lossy(&ambiguous.stderr);
    assert!(amb_err.contains("ambiguous"), "{amb_err}");
    for id in ids.iter().filter(|i| i.starts_with(&clash)) {
        assert!(amb_err.contains(id.as_str()), "{id} missing from {amb_err}");
    }
    assert_eq!(ls_all(&h).len(), ids.len(), "the refused create left a box");
}

#[test]
fn agent_that_stops_answering_marks_the_box_unhealthy_until_it_answers_again() {
    let h = TestHome::new();
    ok(
        &h,
        &[
            "run",
            "-d",
            "--name",
            "hc",
            "--health-interval",
            "1",
            "--health-timeout",
            "2",
            "--health-retries",
            "2",
            "boxlite/busybox",
        ],
    );
    wait_for(60, "a first healthy check", || {
        (inspect(&h, "hc")["health"]["state"] == "healthy").then_some(())
    });
    let pid = vmm_pid(&h, "hc");

    kill(pid, libc::SIGSTOP);
    let sick = wait_for(60, "the box to turn unhealthy", || {
        let i = inspect(&h, "hc");
        (i["health"]["state"] == "unhealthy").then_some(i)
    });
    let table = ok(&h, &["ls"]);
    kill(pid, libc::SIGCONT);
    wait_for(60, "the box to recover", || {
        (inspect(&h, "hc")["health"]["state"] == "healthy").then_some(())
    });

    assert_eq!(sick["state"], "Running");
    assert!(sick["health"]["failing_streak"].as_u64().unwrap() >= 2);
    assert!(
        sick["health"]["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer to ping"),
        "{sick}"
    );
    assert!(table.contains("Running (unhealthy)"), "{table}");
    ok(&h, &["rm", "-f", "hc"]);
}

#[test]
fn auto_remove_box_is_removed_when_its_vm_dies_with_nobody_watching() {
    let h = TestHome::new();
    ok(
        &h,
        &["run", "-d", "--rm", "--name", "gone", "boxlite/busybox"],
    );
    let pid = vmm_pid(&h, "gone");

    kill(pid, libc::SIGKILL);
    // No boxlite command runs meanwhile: only the box's monitor can do this.
    wait_for(30, "the box directory to be removed", || {
        h.box_dirs().is_empty().then_some(())
    });

    assert!(ls_all(&h).is_empty());
    wait_for(10, "the box's processes to exit", || {
        h.processes().is_empty().then_some(())
    });
}

#[test]
fn logs_show_the_console_and_follow_ends_when_the_box_stops() {
    let h = TestHome::new();
    ok(&h, &["run", "-d", "--name", "talk", "boxlite/busybox"]);
    let follower = h
        .cli(BIN)
        .args(["logs", "-f", "talk"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    let logs = ok(&h, &["logs", "talk"]);
    ok(&h, &["stop", "talk"]);
    let followed = follower.wait_with_output().unwrap();

    assert!(logs.contains("boxlite-guest"), "{logs}");
    assert!(followed.status.success());
    assert!(String::from_utf8_lossy(&followed.stdout).starts_with(&logs));
    ok(&h, &["rm", "talk"]);
}

#[test]
fn ls_shows_only_running_boxes_unless_all_is_asked() {
    let h = TestHome::new();
    ok(&h, &["create", "--name", "idle", "boxlite/busybox"]);
    ok(&h, &["run", "-d", "--name", "live", "boxlite/busybox"]);

    let running = ok(&h, &["ls", "--format", "json"]);
    let all = ok(&h, &["ps", "-a", "-q"]);

    let running: Value = serde_json::from_str(&running).unwrap();
    assert_eq!(running.as_array().unwrap().len(), 1);
    assert_eq!(running[0]["name"], "live");
    assert_eq!(all.lines().count(), 2);
    ok(&h, &["rm", "-f", "idle", "live"]);
}

#[test]
fn commands_on_an_unknown_box_name_it() {
    let h = TestHome::new();

    let out = run(&h, &["stop", "nosuchbox"]);

    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        err.contains("no box with id or name \"nosuchbox\""),
        "{err}"
    );
}

#[test]
fn invalid_name_is_refused_with_the_rule() {
    let h = TestHome::new();

    let out = run(&h, &["create", "--name", "../x", "boxlite/busybox"]);

    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125));
    assert!(err.contains("invalid name \"../x\""), "{err}");
    assert!(ls_all(&h).is_empty());
}

#[test]
fn stop_of_a_frozen_guest_kills_the_vmm_after_the_timeout() {
    let h = TestHome::new();
    ok(&h, &["run", "-d", "--name", "frozen", "boxlite/busybox"]);
    let pid = vmm_pid(&h, "frozen");

    kill(pid, libc::SIGSTOP);
    let out = run(&h, &["stop", "-t", "1", "frozen"]);

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(inspect(&h, "frozen")["state"], "Stopped");
    assert!(h.processes().is_empty(), "{:?}", h.processes());
    ok(&h, &["rm", "frozen"]);
}

#[test]
fn listing_from_other_processes_during_a_boot_never_disturbs_it() {
    let h = TestHome::new();
    let mut starter = h
        .cli(BIN)
        .args(["run", "-d", "--name", "busyboot", "boxlite/busybox"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // `ls` reconciles whatever looks wrong; a box mid-boot looks wrong (Configured with
    // live helpers) but is locked by its starter, so it must be left alone.
    let mut listings = 0;
    let status = loop {
        if let Some(st) = starter.try_wait().unwrap() {
            break st;
        }
        let out = run(&h, &["ls", "-a", "--format", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        listings += 1;
    };

    assert!(status.success());
    assert!(listings > 0);
    assert_eq!(inspect(&h, "busyboot")["state"], "Running");
    assert_eq!(ok(&h, &["exec", "busyboot", "echo", "fine"]), "fine\n");
    ok(&h, &["rm", "-f", "busyboot"]);
}

#[test]
fn killed_monitor_is_restarted_by_the_next_command() {
    let h = TestHome::new();
    ok(&h, &["run", "-d", "--name", "mon", "boxlite/busybox"]);
    let first = i32::try_from(inspect(&h, "mon")["monitor_pid"].as_i64().unwrap()).unwrap();

    kill(first, libc::SIGKILL);
    wait_for(10, "the monitor to exit", || {
        (!h.processes().iter().any(|(p, _)| *p == first)).then_some(())
    });
    ok(&h, &["ls"]);
    let second = i32::try_from(inspect(&h, "mon")["monitor_pid"].as_i64().unwrap()).unwrap();

    assert_ne!(first, second);
    assert!(
        h.processes()
            .iter()
            .any(|(p, cmd)| *p == second && cmd.contains("boxlite-shim")),
        "{:?}",
        h.processes()
    );
    ok(&h, &["rm", "-f", "mon"]);
}

/// A QEMU that counts its boots in the test home and starts the first `stalls` of them
/// with their vCPUs stopped (`-S`): a guest that never reaches its agent, as the rare
/// early-boot stall of the guest kernel under TCG leaves one. The jail is off for it (a
/// script cannot pass QEMU's exec rules).
fn stalling_qemu(h: &TestHome, stalls: u32) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let qemu = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .expect("qemu-system-x86_64 on PATH");
    let count = h.home.join("qemu-boots");
    let wrapper = h.home.join("qemu-stalls");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" -kernel \"*)\n  echo boot >> {count}\n  if [ \"$(wc -l < {count})\" -le {stalls} ]; then exec {qemu} \"$@\" -S; fi;;\nesac\nexec {qemu} \"$@\"\n",
            count = count.display(),
            qemu = qemu.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, count)
}

fn boots(count: &std::path::Path) -> usize {
    std::fs::read_to_string(count).map_or(0, |s| s.lines().count())
}

/// `stall`: seconds before a boot counts as stalled; a boot that comes up must fit in it
/// on a busy host.
fn run_with_stalls(h: &TestHome, wrapper: &std::path::Path, stall: u32) -> Output {
    h.cli(BIN)
        .env("BOXLITE_QEMU", wrapper)
        .env("BOXLITE_JAIL", "off")
        .env("BOXLITE_WARM_START", "0")
        .env("BOXLITE_BOOT_STALL", stall.to_string())
        .args(["run", "--rm", "boxlite/busybox", "echo", "hi"])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_cold_boot_whose_guest_stalls_is_booted_once_more() {
    let h = TestHome::new();
    let (wrapper, count) = stalling_qemu(&h, 1);

    let out = run_with_stalls(&h, &wrapper, 15);

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(boots(&count), 2, "one stalled boot, then one that came up");
    assert!(ls_all(&h).is_empty(), "--rm removed the box");
}

#[test]
fn a_guest_that_stalls_on_every_boot_fails_naming_the_stall_after_one_retry() {
    let h = TestHome::new();
    let (wrapper, count) = stalling_qemu(&h, u32::MAX);

    let out = run_with_stalls(&h, &wrapper, 3);

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("stalled before its agent ran"), "{stderr}");
    assert!(
        stderr.contains("did not start within 3s of a cold boot"),
        "{stderr}"
    );
    assert_eq!(boots(&count), 2, "booted once more, and no more");
    // The `--rm` box goes after its last attempt; nothing is left (the home's leak check
    // looks for processes and sockets on drop).
    assert!(ls_all(&h).is_empty(), "{:?}", ls_all(&h));
}
