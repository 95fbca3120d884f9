//! A boxlite process killed (SIGKILL) in the middle of its work: pulling an image (the
//! builder VM is up), creating a box (its row written, its disk not yet), starting one
//! (QEMU booting). Whatever command runs next, of any kind, finishes the job: no QEMU or
//! other helper, no build directory and no socket directory is left, and the box, if
//! any, says what was interrupted and can be removed.
//!
//! And helpers never carry the caller's secrets: registry credentials and any other
//! variable of the CLI's environment stay out of every helper's `/proc/<pid>/environ`
//! and command line.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};

use boxlite_testkit::oci::{Comp, TestImage, busybox_layer};
use boxlite_testkit::{Registry, TestHome, wait_for};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

/// Secrets and a sentinel the helpers must never see.
const SECRETS: &[(&str, &str)] = &[
    ("BOXLITE_REGISTRY_USERNAME", "user-5e4f1d"),
    ("BOXLITE_REGISTRY_PASSWORD", "pw-8c2a9b77e1"),
    ("BOXLITE_REGISTRY_TOKEN", "tok-41d0f6a3c2"),
    ("BOXLITE_TEST_SENTINEL", "sentinel-93b1e5"),
];

fn sigkill(child: &mut Child) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    child.wait().unwrap();
}

fn ls_all(h: &TestHome) -> Vec<Value> {
    let v: Value = serde_json::from_str(&h.ok(BIN, &["ls", "-a", "--format", "json"])).unwrap();
    v.as_array().unwrap().clone()
}

fn build_dirs(h: &TestHome) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(h.home.join("images/tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Everything a helper exposes to other processes of the user.
fn exposed(pid: i32) -> String {
    let read = |what: &str| {
        std::fs::read(format!("/proc/{pid}/{what}"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default()
    };
    format!("{}\n{}", read("environ"), read("cmdline"))
}

/// The helpers of `h`: marked processes other than boxlite CLIs (a CLI started by the
/// test carries the home in its environment, and a child forked by it shows the CLI's
/// command line until it executes its helper).
fn helpers(h: &TestHome) -> Vec<(i32, String)> {
    h.processes()
        .into_iter()
        .filter(|(_, cmd)| !cmd.starts_with(&format!("{BIN} ")))
        .collect()
}

fn assert_no_secrets(h: &TestHome) {
    let procs = helpers(h);
    assert!(!procs.is_empty(), "no helper to check");
    for (pid, cmd) in procs {
        let seen = exposed(pid);
        for (k, v) in SECRETS {
            assert!(!seen.contains(v), "{k} is visible in process {pid} ({cmd})");
            assert!(!seen.contains(k), "{k} is named in process {pid} ({cmd})");
        }
    }
}

fn image() -> TestImage {
    TestImage::new(
        vec![(busybox_layer(), Comp::Gzip)],
        serde_json::json!({ "Cmd": ["sh"] }),
    )
}

/// The next command leaves nothing of the interrupted work behind.
fn assert_clean(h: &TestHome) {
    assert!(h.processes().is_empty(), "{:?}", h.processes());
    assert!(build_dirs(h).is_empty(), "{:?}", build_dirs(h));
    assert!(h.socket_dirs().is_empty(), "{:?}", h.socket_dirs());
}

/// Start `args` with the secrets in its environment, building in the builder VM, and
/// SIGKILL it once the VM's QEMU runs, after checking what the builder's helpers
/// expose. (A build on the host killed mid-`mke2fs` is in `tests/images.rs`.)
fn kill_during_build(h: &TestHome, args: &[&str]) {
    let mut cli = h
        .cli(BIN)
        .args(args)
        .envs(SECRETS.iter().copied())
        .env("BOXLITE_IMAGE_BUILDER", "vm")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(120, "the builder VM to start", || {
        h.processes()
            .iter()
            .any(|(_, cmd)| cmd.contains("qemu-system") && cmd.contains("boxlite.builder=1"))
            .then_some(())
    });
    assert_no_secrets(h);
    sigkill(&mut cli);
    assert!(
        !h.processes().is_empty(),
        "the builder outlives the killed CLI until the next command"
    );
}

#[test]
fn pull_killed_during_the_build_leaves_nothing_after_the_next_command() {
    let reg = Registry::start();
    image().push(&reg, "cut/pull", "v1");
    let h = TestHome::new();
    h.allow_http(&reg);
    let r = format!("{}/cut/pull:v1", reg.addr);

    kill_during_build(&h, &["pull", &r]);
    let listed = h.ok(BIN, &["images", "-q"]);

    assert_clean(&h);
    assert_eq!(listed, "", "a half-built image is not listed");
    // The next pull builds it from scratch.
    h.ok(BIN, &["pull", "-q", &r]);
    assert_eq!(h.ok(BIN, &["images", "-q"]), format!("{r}\n"));
}

#[test]
fn create_killed_while_it_pulls_and_builds_leaves_nothing_after_the_next_command() {
    let reg = Registry::start();
    image().push(&reg, "cut/create", "v1");
    let h = TestHome::new();
    h.allow_http(&reg);
    let r = format!("{}/cut/create:v1", reg.addr);

    kill_during_build(&h, &["create", "--name", "early", &r]);
    h.ok(BIN, &["info"]);

    assert_clean(&h);
    assert!(
        ls_all(&h).is_empty(),
        "no box was inserted before its image existed"
    );
}

#[test]
fn create_killed_while_its_row_says_creating_is_failed_and_removable() {
    let h = TestHome::new();
    // Warm the built-in image, so the create below stops only at its disk.
    h.ok(BIN, &["create", "--name", "warm", "boxlite/busybox"]);
    h.ok(BIN, &["rm", "warm"]);
    // A qemu-img that says where it is and then hangs: the create is then past its row
    // and before its disk, for certain.
    let marker = h.home.join("qemu-img.pid");
    let wrapper = h.home.join("qemu-img-hangs");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho $$ > {}.tmp\nmv {0}.tmp {0}\nexec sleep 120\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cli = h
        .cli(BIN)
        .env("BOXLITE_QEMU_IMG", &wrapper)
        .args(["create", "--name", "half", "boxlite/busybox"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let hung = wait_for(60, "qemu-img to be called", || {
        std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    });
    sigkill(&mut cli);
    // SAFETY: kill has no memory-safety preconditions; the wrapper is ours.
    unsafe { libc::kill(hung, libc::SIGKILL) };
    let boxes = ls_all(&h);
    let rm = h.run(BIN, &["rm", "half"]);

    assert_eq!(boxes.len(), 1, "{boxes:?}");
    assert_eq!(boxes[0]["name"], "half");
    assert_eq!(boxes[0]["state"], "Failed");
    assert!(
        boxes[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("creation was interrupted"),
        "{}",
        boxes[0]
    );
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    assert!(ls_all(&h).is_empty());
    assert!(h.box_dirs().is_empty(), "{:?}", h.box_dirs());
    assert!(h.lock_files().is_empty(), "{:?}", h.lock_files());
}

#[test]
fn start_killed_during_boot_leaves_no_helper_after_the_next_command_of_any_kind() {
    let h = TestHome::new();
    let mut cli = h
        .cli(BIN)
        .args([
            "run",
            "-d",
            "--name",
            "cut",
            "-v",
            "/data",
            "boxlite/busybox",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // QEMU runs only once it is recorded; virtiofsd and the vsock helper came first.
    wait_for(60, "QEMU to start", || {
        h.processes()
            .iter()
            .any(|(_, cmd)| cmd.contains("qemu-system"))
            .then_some(())
    });
    sigkill(&mut cli);

    h.ok(BIN, &["images"]);

    assert!(h.processes().is_empty(), "{:?}", h.processes());
    assert!(h.socket_dirs().is_empty(), "{:?}", h.socket_dirs());
    let boxes = ls_all(&h);
    assert_eq!(boxes[0]["state"], "Failed");
    assert!(
        boxes[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("start was interrupted"),
        "{}",
        boxes[0]
    );
    // It starts again, and goes.
    assert_eq!(h.ok(BIN, &["exec", "cut", "echo", "again"]), "again\n");
    h.ok(BIN, &["rm", "-f", "cut"]);
    assert!(h.box_dirs().is_empty(), "{:?}", h.box_dirs());
}

#[test]
fn no_helper_of_a_running_box_exposes_the_callers_environment() {
    let h = TestHome::new();
    let out = h
        .cli(BIN)
        .args([
            "run",
            "-d",
            "--name",
            "env",
            "-v",
            "/data",
            "boxlite/busybox",
        ])
        .envs(SECRETS.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let cmds: Vec<String> = helpers(&h).into_iter().map(|(_, c)| c).collect();

    assert_no_secrets(&h);
    for helper in ["qemu-system", "virtiofsd", "boxlite-net", "boxlite-shim"] {
        assert!(
            cmds.iter().any(|c| c.contains(helper)),
            "{helper} not among {cmds:?}"
        );
    }
    h.ok(BIN, &["rm", "-f", "env"]);
}
