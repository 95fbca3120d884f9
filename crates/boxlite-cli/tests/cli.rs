//! End-to-end tests of the `boxlite` binary against real VMs.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boxlite_testkit::TestHome;

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

fn output(mut c: Command) -> std::process::Output {
    c.stdin(Stdio::null()).output().expect("run boxlite")
}

/// `boxlite run --rm boxlite/busybox sh -c SCRIPT`, with stdout and stderr piped.
fn spawn_run(h: &TestHome, script: &str) -> std::process::Child {
    let mut c = h.cli(BIN);
    c.args(["run", "--rm", "boxlite/busybox", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().expect("spawn boxlite run")
}

#[test]
fn run_passes_stdout_stderr_and_exit_code_through_exactly() {
    let h = TestHome::new();
    let mut c = h.cli(BIN);
    c.args([
        "run",
        "--rm",
        "boxlite/busybox",
        "sh",
        "-c",
        "printf abc; printf err >&2; exit 7",
    ]);

    let out = output(c);

    assert_eq!(out.stdout, b"abc");
    assert_eq!(out.stderr, b"err");
    assert_eq!(out.status.code(), Some(7));
    assert!(h.box_dirs().is_empty(), "--rm left {:?}", h.box_dirs());
}

#[test]
fn run_reports_death_by_signal_as_128_plus_n() {
    let h = TestHome::new();
    let mut c = h.cli(BIN);
    c.args(["run", "--rm", "boxlite/busybox", "sh", "-c", "kill -9 $$"]);

    let out = output(c);

    assert_eq!(out.status.code(), Some(137));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn run_interactive_forwards_stdin_until_eof_and_env_and_workdir_apply() {
    let h = TestHome::new();
    let mut c = h.cli(BIN);
    c.args([
        "run",
        "--rm",
        "-i",
        "-e",
        "X=1 2",
        "-w",
        "/etc",
        "boxlite/busybox",
        "sh",
        "-c",
    ])
    .arg("cat; printf '|%s|%s' \"$X\" \"$(pwd)\"")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"line one\nno newline")
        .unwrap();

    let out = child.wait_with_output().unwrap();

    assert_eq!(out.stdout, b"line one\nno newline|1 2|/etc");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn run_of_a_missing_binary_exits_127_with_a_clear_message_and_leaves_nothing() {
    let h = TestHome::new();
    let mut c = h.cli(BIN);
    c.args(["run", "--rm", "boxlite/busybox", "no-such-cmd"]);

    let out = output(c);

    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        err.contains("executable \"no-such-cmd\" not found"),
        "{err}"
    );
    assert!(h.box_dirs().is_empty(), "--rm left {:?}", h.box_dirs());
}

#[test]
fn unknown_image_is_refused_before_anything_is_created() {
    let h = TestHome::new();
    let mut c = h.cli(BIN);
    c.args(["run", "--rm", "boxlite/nope", "true"]);

    let out = output(c);

    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        err.contains("image \"boxlite/nope\" not found; the built-in images are: boxlite/busybox"),
        "{err}"
    );
    assert!(h.box_dirs().is_empty());
}

#[test]
fn malformed_image_reference_names_the_rule() {
    let h = TestHome::new();
    let mut c = h.cli(BIN);
    c.args(["run", "--rm", "Bad//Ref", "true"]);

    let out = output(c);

    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        err.contains("invalid image reference \"Bad//Ref\""),
        "{err}"
    );
}

#[test]
fn bogus_accelerator_override_is_a_clear_error() {
    let h = TestHome::new();
    let mut c = h.cli(BIN);
    c.env("BOXLITE_ACCEL", "bogus")
        .args(["run", "--rm", "boxlite/busybox", "true"]);

    let out = output(c);

    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        err.contains(
            "BOXLITE_ACCEL=\"bogus\" is not an accelerator; valid values are kvm, hvf and tcg"
        ),
        "{err}"
    );
    assert!(h.box_dirs().is_empty());
}

#[test]
fn missing_kernel_asset_names_the_file_and_how_to_build_it() {
    let h = TestHome::new();
    let assets = h.home.join("assets-copy");
    std::fs::create_dir_all(assets.join("images")).unwrap();
    let src = boxlite_testkit::assets_dir();
    for f in ["manifest.json", "initramfs.cpio", "images/busybox.ext4"] {
        std::fs::copy(src.join(f), assets.join(f)).unwrap();
    }
    let mut c = h.cli(BIN);
    c.env("BOXLITE_ASSETS", &assets)
        .args(["run", "--rm", "boxlite/busybox", "true"]);

    let out = output(c);

    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        err.contains(&format!(
            "asset {} is missing",
            assets.join("vmlinux").display()
        )),
        "{err}"
    );
    assert!(err.contains("scripts/build-assets.sh"), "{err}");
    assert!(h.box_dirs().is_empty(), "{:?}", h.box_dirs());
}

#[test]
fn hundred_mib_of_output_streams_with_bounded_host_memory() {
    let h = TestHome::new();
    let t = Instant::now();
    let mut child = spawn_run(
        &h,
        "yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ | head -c 104857600",
    );
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n";
    // Peak RSS of the CLI process itself (VmHWM), sampled until it exits. wait4's
    // ru_maxrss would include QEMU, which the CLI spawns and reaps.
    let pid = child.id();
    let sampler = std::thread::spawn(move || {
        let mut peak_kib = 0i64;
        while let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(v) = s.lines().find(|l| l.starts_with("VmHWM:")) {
                let kib = v
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                peak_kib = peak_kib.max(kib);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        peak_kib
    });
    let mut total = 0usize;
    let mut mismatch = None;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        for (i, b) in buf[..n].iter().enumerate() {
            if mismatch.is_none() && *b != line[(total + i) % line.len()] {
                mismatch = Some(total + i);
            }
        }
        total += n;
    }
    let status = child.wait().unwrap();
    let max_rss_kib = sampler.join().unwrap();
    let stderr_text = err_reader.join().unwrap();
    eprintln!(
        "100 MiB in {:?}, CLI peak RSS {} MiB",
        t.elapsed(),
        max_rss_kib / 1024
    );

    assert_eq!(status.code(), Some(0));
    assert_eq!(total, 100 << 20);
    assert_eq!(
        mismatch, None,
        "stream differs from the pattern at this offset"
    );
    assert!(stderr_text.is_empty(), "{stderr_text}");
    // The whole stream is 100 MiB; holding even half of it would show here.
    assert!(max_rss_kib < 64 * 1024, "CLI peak RSS {max_rss_kib} KiB");
}

#[test]
fn ctrl_c_during_run_rm_removes_the_box_and_leaves_no_vm_process() {
    let h = TestHome::new();
    let mut child = spawn_run(&h, "echo started; sleep 1000");
    let mut first = [0u8; 8];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"started\n");

    // SAFETY: kill has no memory-safety preconditions; the pid is our child.
    unsafe { libc::kill(child.id().cast_signed(), libc::SIGINT) };
    let out = child.wait_with_output().unwrap();

    assert_eq!(out.status.code(), Some(130));
    assert!(h.box_dirs().is_empty(), "{:?}", h.box_dirs());
    assert!(h.processes().is_empty(), "{:?}", h.processes());
}

#[test]
fn info_names_the_accelerator_qemu_and_kernel() {
    let h = TestHome::new();
    let mut c = h.cli(BIN);
    c.args(["info"]);

    let out = output(c);

    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(text.contains("accelerator:   tcg ("), "{text}");
    assert!(text.contains("QEMU emulator version"), "{text}");
    assert!(text.contains("vmlinux (6.1.0-"), "{text}");
    assert!(text.contains("boxes:         0 (0 running)"), "{text}");
    assert!(text.contains("volumes:       0"), "{text}");
    assert!(text.contains("bin/virtiofsd"), "{text}");
    // The setup installs an mke2fs that builds bases from a tar stream.
    assert!(text.contains("mke2fs:        /"), "{text}");
    assert!(text.contains(" 1.47."), "{text}");
    assert!(
        text.contains("image builds:  on the host (mke2fs reads tar streams)"),
        "{text}"
    );
    let mut c = h.cli(BIN);
    c.args(["info"]).env("BOXLITE_IMAGE_BUILDER", "vm");
    let out = String::from_utf8(output(c).stdout).unwrap();
    assert!(out.contains("image builds:  in a builder VM"), "{out}");

    let mut c = h.cli(BIN);
    c.args(["info"]).env("BOXLITE_IMAGE_BUILDER", "fast");
    let out = output(c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("invalid BOXLITE_IMAGE_BUILDER \"fast\"; valid values are auto, host and vm"),
        "{err}"
    );
}

/// Two host processes on one box: one is SIGKILLed mid-exec, the other's exec carries
/// on, and the dead client's execution keeps running in the guest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_client_does_not_disturb_another_client_or_its_own_execution() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt
        .create(boxlite::BoxOptions::new("boxlite/busybox"))
        .await
        .unwrap();
    b.start().await.unwrap();

    // Client A: another process, started through the CLI.
    let mut a = h.cli(BIN);
    a.args([
        "exec",
        b.id(),
        "sh",
        "-c",
        "echo a-started; sleep 2; echo done > /tmp/a-marker",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    let mut a = a.spawn().unwrap();
    // Client B: this process, mid-exec while A dies.
    let mut ex = b
        .exec(boxlite::BoxCommand::new("sh").args([
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.25; done",
        ]))
        .await
        .unwrap();
    let mut out = ex.take_stdout().unwrap();
    let reader = tokio::spawn(async move { out.read_to_end().await.unwrap() });
    let mut line = [0u8; 10];
    std::io::Read::read_exact(a.stdout.as_mut().unwrap(), &mut line).unwrap();
    assert_eq!(&line, b"a-started\n");
    a.kill().unwrap();
    a.wait().unwrap();

    let b_out = reader.await.unwrap();
    let b_status = ex.wait().await.unwrap();
    // A's execution, orphaned by its client, still finishes: wait for its marker.
    let mut check = b
        .exec(
            boxlite::BoxCommand::new("sh")
                .args([
                    "-c",
                    "while [ ! -e /tmp/a-marker ]; do sleep 0.05; done; cat /tmp/a-marker",
                ])
                .timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let marker = check.take_stdout().unwrap().read_to_end().await.unwrap();

    assert_eq!(b_out, b"1\n2\n3\n4\n5\n6\n7\n8\n");
    assert!(b_status.success());
    assert_eq!(marker, b"done\n");
    b.stop(Duration::from_secs(10)).await.unwrap();
    rt.remove(&b, false).await.unwrap();
}

/// One HTTP/1.1 request on a fresh connection; the status and body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer k\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

#[test]
fn serve_finishes_a_request_in_flight_on_sigterm_and_leaves_the_box_running() {
    let h = TestHome::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut server = h
        .cli(BIN)
        .args(["serve", "--port", &port.to_string()])
        .env("BOXLITE_API_KEY", "k")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while http(&addr, "GET", "/health", "").is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (st, created) = http(
        &addr,
        "POST",
        "/v1/boxes",
        r#"{"image":"boxlite/busybox","name":"durable"}"#,
    )
    .unwrap();
    assert_eq!(st, 201, "{created}");
    // Starting boots a VM (a second or more): SIGTERM arrives while it is in flight.
    let a = addr.clone();
    let start = std::thread::spawn(move || http(&a, "POST", "/v1/boxes/durable/start", ""));
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill on the pid of a child this test started.
    unsafe { libc::kill(i32::try_from(server.id()).unwrap(), libc::SIGTERM) };
    let (st, body) = start.join().unwrap().unwrap();
    assert_eq!(st, 200, "the request in flight finished: {body}");
    let status = server.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        http(&addr, "GET", "/health", "").is_err(),
        "no longer listening"
    );
    // The box outlives the server.
    let ls = output({
        let mut c = h.cli(BIN);
        c.args(["ls"]);
        c
    });
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(
        text.contains("durable") && text.contains("Running"),
        "{text}"
    );
    let _ = output({
        let mut c = h.cli(BIN);
        c.args(["rm", "-f", "durable"]);
        c
    });
}

#[test]
fn labels_are_kept_shown_and_filtered_and_bad_ones_refused() {
    let h = TestHome::new();
    let create = |args: &[&str]| {
        let mut c = h.cli(BIN);
        c.arg("create").args(args).arg("boxlite/busybox");
        output(c)
    };
    let a = create(&["--name", "la", "-l", "team=core", "--label", "tier=web"]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = create(&["--name", "lb", "-l", "team=infra", "-l", "flag"]);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let ls = |filters: &[&str]| {
        let mut c = h.cli(BIN);
        c.args(["ls", "-a", "--format", "json"]);
        for f in filters {
            c.args(["--filter", f]);
        }
        let out = output(c);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut names: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        (names, v)
    };
    let (all, v) = ls(&[]);
    assert_eq!(all, ["la", "lb"]);
    let la = v
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "la")
        .unwrap();
    assert_eq!(
        la["config"]["labels"],
        serde_json::json!({"team": "core", "tier": "web"})
    );
    assert_eq!(ls(&["label=team"]).0, ["la", "lb"]);
    assert_eq!(ls(&["label=team=infra"]).0, ["lb"]);
    assert_eq!(ls(&["label=flag="]).0, ["lb"]);
    assert_eq!(ls(&["label=team", "label=tier=web"]).0, ["la"]);
    assert!(ls(&["label=nope"]).0.is_empty());
    // Bad filters and labels are refused, naming what is valid; nothing is created.
    let mut c = h.cli(BIN);
    c.args(["ls", "--filter", "status=running"]);
    let bad = output(c);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("label=KEY"));
    for label in ["-bad=1", "a b=1", "k=line\nbreak", ""] {
        let out = create(&[&format!("--label={label}")]);
        assert!(!out.status.success(), "{label:?} accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("label"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(ls(&[]).0, ["la", "lb"]);
}

#[test]
fn auto_pause_is_set_per_box_or_by_default_and_bad_values_are_refused() {
    let h = TestHome::new();
    let create = |args: &[&str], default: Option<&str>| {
        let mut c = h.cli(BIN);
        c.arg("create").args(args).arg("boxlite/busybox");
        match default {
            Some(d) => c.env("BOXLITE_AUTO_PAUSE", d),
            None => c.env_remove("BOXLITE_AUTO_PAUSE"),
        };
        output(c)
    };
    let inspect = |name: &str| {
        let out = output({
            let mut c = h.cli(BIN);
            c.args(["inspect", name]);
            c
        });
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let v = if v.is_array() { v[0].clone() } else { v };
        v["config"]["auto_pause_secs"].as_u64().unwrap()
    };
    let own = create(&["--name", "own", "--auto-pause", "5m"], Some("30"));
    let default = create(&["--name", "dflt"], Some("90s"));
    let never = create(&["--name", "never", "--auto-pause", "off"], Some("30"));
    let with_volume = create(&["--name", "vol", "-v", "/data"], Some("30"));
    let bad = create(&["--name", "bad", "--auto-pause", "soon"], None);
    let bad_default = create(&["--name", "bad2"], Some("31d"));
    let refused = create(
        &["--name", "vol2", "-v", "/data", "--auto-pause", "10"],
        None,
    );

    for o in [&own, &default, &never, &with_volume] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(
        [
            inspect("own"),
            inspect("dflt"),
            inspect("never"),
            inspect("vol")
        ],
        [300, 90, 0, 0],
        "a runtime default leaves boxes with volumes out"
    );
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !bad.status.success() && err(&bad).contains("--auto-pause"),
        "{}",
        err(&bad)
    );
    assert!(
        !bad_default.status.success() && err(&bad_default).contains("BOXLITE_AUTO_PAUSE"),
        "{}",
        err(&bad_default)
    );
    assert!(
        !refused.status.success() && err(&refused).contains("volumes"),
        "{}",
        err(&refused)
    );
}
