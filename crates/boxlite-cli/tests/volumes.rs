//! Managed volumes against real VMs: sharing, persistence, read-only, containment.

use std::process::Output;

use boxlite_testkit::TestHome;

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

fn run(h: &TestHome, args: &[&str]) -> Output {
    h.run(BIN, args)
}

fn ok(h: &TestHome, args: &[&str]) -> String {
    h.ok(BIN, args)
}

fn entries(dir: std::path::PathBuf) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn named_volume_written_by_one_box_is_read_by_the_next_after_the_first_is_removed() {
    let h = TestHome::new();

    ok(
        &h,
        &[
            "run",
            "--rm",
            "-v",
            "shared:/data",
            "boxlite/busybox",
            "sh",
            "-c",
            "echo from-a > /data/note",
        ],
    );
    let read = ok(
        &h,
        &[
            "run",
            "--rm",
            "-v",
            "shared:/mnt/in",
            "boxlite/busybox",
            "cat",
            "/mnt/in/note",
        ],
    );

    assert_eq!(read, "from-a\n");
    assert_eq!(
        std::fs::read_to_string(h.home.join("volumes/named/shared/note")).unwrap(),
        "from-a\n"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(h.home.join("volumes/named/shared"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn anonymous_volume_lives_with_its_box_and_is_gone_after_removal() {
    let h = TestHome::new();
    ok(
        &h,
        &[
            "run",
            "-d",
            "--name",
            "anon",
            "-v",
            "/scratch",
            "boxlite/busybox",
        ],
    );
    ok(&h, &["exec", "anon", "sh", "-c", "echo kept > /scratch/f"]);
    ok(&h, &["restart", "anon"]);
    let after_restart = ok(&h, &["exec", "anon", "cat", "/scratch/f"]);
    let during = entries(h.home.join("volumes/anonymous"));

    ok(&h, &["rm", "-f", "anon"]);

    assert_eq!(after_restart, "kept\n");
    assert_eq!(during.len(), 1);
    assert!(entries(h.home.join("volumes/anonymous")).is_empty());
}

#[test]
fn read_only_volume_refuses_writes_with_erofs_and_the_host_file_is_unchanged() {
    let h = TestHome::new();
    ok(&h, &["volume", "create", "ro"]);
    let host_file = h.home.join("volumes/named/ro/keep");
    std::fs::write(&host_file, b"original").unwrap();

    let out = run(
        &h,
        &[
            "run",
            "--rm",
            "-v",
            "ro:/ro:ro",
            "boxlite/busybox",
            "sh",
            "-c",
            "cat /ro/keep; echo changed > /ro/keep; echo new > /ro/other",
        ],
    );

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.stdout, b"original");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert_eq!(std::fs::read(&host_file).unwrap(), b"original");
    assert!(!h.home.join("volumes/named/ro/other").exists());
}

#[test]
fn guest_cannot_reach_host_files_outside_the_volume() {
    let h = TestHome::new();
    // A host file right next to the volume, and one elsewhere.
    std::fs::create_dir_all(h.home.join("volumes/named")).unwrap();
    let secret = h.home.join("volumes/named/secret.txt");
    std::fs::write(&secret, b"host-secret").unwrap();
    let script = format!(
        "ls /data/..; cat /data/../secret.txt; cat /data/../../secret.txt; \
         ln -s {s} /data/esc; cat /data/esc; ln -s ../secret.txt /data/rel; cat /data/rel; \
         cat {s}; echo done",
        s = secret.display()
    );

    let out = run(
        &h,
        &[
            "run",
            "--rm",
            "-v",
            "box:/data",
            "boxlite/busybox",
            "sh",
            "-c",
            &script,
        ],
    );

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.ends_with("done\n"), "{stdout}");
    assert!(!stdout.contains("host-secret"), "{stdout}");
    // `..` of the mount point is the guest's own root.
    assert!(stdout.contains("bin"), "{stdout}");
}

#[test]
fn virtiofsd_runs_sandboxed_and_shares_only_the_volume_directory() {
    let h = TestHome::new();
    ok(
        &h,
        &[
            "run",
            "-d",
            "--name",
            "sb",
            "-v",
            "one:/one",
            "boxlite/busybox",
        ],
    );

    // With its namespace sandbox, virtiofsd is a parent and a child with one command line.
    let mut fsd: Vec<String> = h
        .processes()
        .into_iter()
        .map(|(_, cmd)| cmd)
        .filter(|c| c.contains("virtiofsd"))
        .collect();
    fsd.dedup();

    ok(&h, &["rm", "-f", "sb"]);
    assert_eq!(fsd.len(), 1, "{fsd:?}");
    let shared = h.home.join("volumes/named/one");
    assert!(
        fsd[0].contains(&format!("--shared-dir {}", shared.display())),
        "{}",
        fsd[0]
    );
    assert!(fsd[0].contains("--sandbox=namespace"), "{}", fsd[0]);
}

#[test]
fn sigkilled_box_leaves_no_virtiofsd_after_recovery() {
    let h = TestHome::new();
    ok(
        &h,
        &[
            "run",
            "-d",
            "--name",
            "k",
            "-v",
            "a:/a",
            "-v",
            "/b",
            "boxlite/busybox",
        ],
    );
    let info: serde_json::Value = serde_json::from_str(&ok(&h, &["inspect", "k"])).unwrap();
    let vmm = i32::try_from(info[0]["vmm_pid"].as_i64().unwrap()).unwrap();

    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(vmm, libc::SIGKILL) }, 0);
    // Recovery runs in whichever comes first: the box's monitor or this `ls`.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut listed = String::new();
    while std::time::Instant::now() < deadline {
        listed = ok(&h, &["ls", "-a", "--format", "json"]);
        if listed.contains("\"Stopped\"") && h.processes().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let left: Vec<_> = h.processes();
    ok(&h, &["rm", "k"]);
    assert!(listed.contains("\"Stopped\""), "{listed}");
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn host_bind_and_relative_guest_path_are_refused_before_anything_is_created() {
    let h = TestHome::new();

    let bind = run(
        &h,
        &["run", "--rm", "-v", "/etc:/host", "boxlite/busybox", "true"],
    );
    let rel = run(&h, &["create", "-v", "data:ro", "boxlite/busybox"]);
    let third_bad = run(
        &h,
        &[
            "create",
            "-v",
            "one:/one",
            "-v",
            "/two",
            "-v",
            "/x:/y",
            "boxlite/busybox",
        ],
    );

    let bind_err = String::from_utf8_lossy(&bind.stderr);
    assert_eq!(bind.status.code(), Some(125));
    assert!(
        bind_err.contains("host directories cannot be mounted"),
        "{bind_err}"
    );
    assert!(bind_err.contains("NAME:/guest/path"), "{bind_err}");
    assert!(bind_err.contains("boxlite cp"), "{bind_err}");
    let rel_err = String::from_utf8_lossy(&rel.stderr);
    assert_eq!(rel.status.code(), Some(125));
    assert!(rel_err.contains("must be absolute"), "{rel_err}");
    assert_eq!(third_bad.status.code(), Some(125));
    assert!(entries(h.home.join("volumes/named")).is_empty());
    assert!(entries(h.home.join("volumes/anonymous")).is_empty());
    assert!(h.box_dirs().is_empty());
}

#[test]
fn volume_commands_create_list_inspect_and_refuse_to_remove_a_volume_in_use() {
    let h = TestHome::new();
    ok(&h, &["volume", "create", "v1"]);
    ok(
        &h,
        &["create", "--name", "user", "-v", "v1:/v", "boxlite/busybox"],
    );

    let table = ok(&h, &["volume", "ls"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&h, &["volume", "inspect", "v1"])).unwrap();
    let refused = run(&h, &["volume", "rm", "v1"]);
    ok(&h, &["rm", "user"]);
    let removed = run(&h, &["volume", "rm", "v1"]);

    assert!(table.contains("v1"), "{table}");
    assert_eq!(inspect[0]["kind"], "named");
    assert_eq!(inspect[0]["used_by"].as_array().unwrap().len(), 1);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(125));
    assert!(err.contains("is used by box"), "{err}");
    assert!(removed.status.success());
    assert!(!h.home.join("volumes/named/v1").exists());
}
