//! The remote CLI (`boxlite --url`, `BOXLITE_URL`) against a real `boxlite serve` and
//! real boxes. One server and two boxes serve every step: booting is the slow part.
#![allow(clippy::disallowed_methods)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use boxlite_testkit::TestHome;

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");
const KEY: &str = "k3y-of-the-remote-test";

/// A `boxlite serve` over a test home, stopped (SIGTERM, then reaped) on drop.
struct Server {
    child: Child,
    url: String,
    /// A directory that must never be created: the client's `BOXLITE_HOME`.
    no_home: PathBuf,
    // Dropped last: it kills any VM the server left.
    home: TestHome,
}

impl Server {
    fn start() -> Server {
        let home = TestHome::new();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = home
            .cli(BIN)
            .args(["serve", "--port", &port.to_string()])
            .env("BOXLITE_API_KEY", KEY)
            .env_remove("BOXLITE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "no server");
            std::thread::sleep(Duration::from_millis(50));
        }
        let no_home = home.home.join("client-home-never-created");
        Server {
            child,
            url: format!("http://{addr}"),
            no_home,
            home,
        }
    }

    /// The CLI as a remote client: no home of its own, the key in the environment.
    fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--url")
            .arg(&self.url)
            .args(args)
            .env("BOXLITE_HOME", &self.no_home)
            .env("BOXLITE_API_KEY", KEY)
            .env_remove("BOXLITE_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cli(args).output().unwrap()
    }

    /// Run and require success; stdout as text.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "boxlite --url {args:?}: {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill on the pid of a child this test started and has not reaped.
        unsafe { libc::kill(i32::try_from(self.child.id()).unwrap(), libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A failure of ours: exit 125, and stderr saying `boxlite: error: ...` with `says`.
fn assert_refused(out: &Output, says: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.starts_with("boxlite: error: "), "{err}");
    assert!(err.contains(says), "expected {says:?} in: {err}");
}

fn write_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(dir.join("sub/b.bin"), (0..=255u8).collect::<Vec<_>>()).unwrap();
}

fn assert_same_tree(a: &Path, b: &Path) {
    for rel in ["a.txt", "sub/b.bin"] {
        assert_eq!(
            std::fs::read(a.join(rel)).unwrap(),
            std::fs::read(b.join(rel)).unwrap(),
            "{rel}"
        );
    }
}

#[test]
fn the_cli_runs_box_commands_against_a_server_with_url_and_key() {
    let s = Server::start();

    // Refusals that need no box.
    let wrong = s
        .cli(&["ls"])
        .env("BOXLITE_API_KEY", "nope")
        .output()
        .unwrap();
    assert_refused(&wrong, "BOXLITE_API_KEY is missing or wrong");
    assert!(!text(&wrong.stderr).contains("nope"));
    let keyless = s
        .cli(&["ls"])
        .env_remove("BOXLITE_API_KEY")
        .output()
        .unwrap();
    assert_refused(&keyless, "requires an API key: set BOXLITE_API_KEY");
    assert_refused(
        &s.run(&["logs", "x"]),
        "`logs` is not available with --url: the REST API has no route for it",
    );
    assert_refused(
        &s.run(&["inspect", "nope"]),
        "no box with id or name \"nope\"",
    );
    assert_refused(
        &s.run(&["start", "nope"]),
        "no box with id or name \"nope\"",
    );
    let bad_url = Command::new(BIN)
        .args(["--url", "localhost:1", "ls"])
        .env_remove("BOXLITE_URL")
        .output()
        .unwrap();
    assert_refused(&bad_url, "invalid --url (or BOXLITE_URL) \"localhost:1\"");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let refused = Command::new(BIN)
        .args(["ls"])
        .env("BOXLITE_URL", format!("http://127.0.0.1:{closed}"))
        .output()
        .unwrap();
    assert_refused(
        &refused,
        &format!("cannot reach the boxlite server at http://127.0.0.1:{closed}"),
    );

    // A secret is read from this side's environment and goes to the server as a value:
    // the server keeps it in its 0600 file; its answers never show it.
    let value = "sk-remote-5d2e91";
    let created = s
        .cli(&["create", "--secret", "RKEY@api.test", "boxlite/busybox"])
        .env("RKEY", value)
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", text(&created.stderr));
    let id = text(&created.stdout).trim().to_string();
    let shown = s.ok(&["inspect", &id]);
    let stored = s.home.home.join("boxes").join(&id).join("secrets/RKEY");
    assert!(
        shown.contains("<BOXLITE_SECRET:RKEY>") && !shown.contains(value),
        "{shown}"
    );
    assert_eq!(std::fs::read_to_string(&stored).unwrap(), value);
    assert_refused(
        &s.run(&[
            "create",
            "--secret",
            "UNSET_HERE_7Q@api.test",
            "boxlite/busybox",
        ]),
        "environment variable UNSET_HERE_7Q is not set",
    );
    s.ok(&["rm", &id]);

    // A foreground run: exact bytes, the exit code, and --rm leaves nothing.
    let run = s.run(&[
        "run",
        "--rm",
        "boxlite/busybox",
        "sh",
        "-c",
        "echo out; printf 'e\\0rr' >&2; exit 3",
    ]);
    assert_eq!(run.status.code(), Some(3), "{}", text(&run.stderr));
    assert_eq!(run.stdout, b"out\n");
    assert_eq!(run.stderr, b"e\0rr");
    assert_eq!(s.ok(&["ls", "-a", "-q"]), "", "--rm removed the box");
    // The box's default command, as locally: the entrypoint, then the command.
    let ep = s.run(&[
        "run",
        "--rm",
        "--entrypoint",
        "echo",
        "boxlite/busybox",
        "from",
        "the entrypoint",
    ]);
    assert_eq!(
        (ep.status.code(), text(&ep.stdout)),
        (Some(0), "from the entrypoint\n".to_string()),
        "{}",
        text(&ep.stderr)
    );
    // A detached --rm box removes itself once stopped.
    let gone = s.ok(&["run", "-d", "--rm", "boxlite/busybox", "sleep", "600"]);
    s.ok(&["stop", "-t", "0", gone.trim()]);
    assert_eq!(
        s.ok(&["ls", "-a", "-q"]),
        "",
        "the detached --rm box removed itself"
    );

    // A detached box, with BOXLITE_URL instead of --url.
    let id = {
        let mut c = Command::new(BIN);
        c.args(["run", "-d", "--name", "rb", "boxlite/busybox"])
            .env("BOXLITE_URL", &s.url)
            .env("BOXLITE_API_KEY", KEY)
            .env("BOXLITE_HOME", &s.no_home)
            .stdin(Stdio::null());
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    };
    assert!(
        id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let ls = s.ok(&["ls"]);
    assert!(ls.starts_with("BOX ID"), "{ls}");
    assert!(
        ls.contains(&id[..12]) && ls.contains("Running") && ls.contains("rb"),
        "{ls}"
    );
    let inspect: serde_json::Value = serde_json::from_str(&s.ok(&["inspect", "rb"])).unwrap();
    assert_eq!(inspect[0]["box_id"], id.as_str());

    // exec: env, exit code, stdin forwarded byte for byte with -i.
    let ex = s.run(&[
        "exec",
        "-e",
        "A=x y",
        "rb",
        "sh",
        "-c",
        "printf \"$A\"; exit 5",
    ]);
    assert_eq!(
        (ex.status.code(), ex.stdout.as_slice()),
        (Some(5), &b"x y"[..])
    );
    let input: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    let mut cat = s
        .cli(&["exec", "-i", "rb", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = cat.stdin.take().unwrap();
    let feed = {
        let input = input.clone();
        std::thread::spawn(move || stdin.write_all(&input))
    };
    let got = cat.wait_with_output().unwrap();
    feed.join().unwrap().unwrap();
    assert!(got.status.success());
    assert!(got.stdout == input, "{} bytes back", got.stdout.len());
    let timed = s.run(&["exec", "--timeout", "1", "rb", "sleep", "30"]);
    assert_eq!(timed.status.code(), Some(124), "{}", text(&timed.stderr));
    let user = s.run(&["exec", "--user", "1000:1000", "rb", "id", "-u"]);
    assert_eq!(
        (user.status.code(), text(&user.stdout).trim()),
        (Some(0), "1000"),
        "{}",
        text(&user.stderr)
    );

    // A detached execution, picked up by attach.
    let eid = s.ok(&[
        "exec",
        "-d",
        "rb",
        "sh",
        "-c",
        "sleep 1; echo later; exit 4",
    ]);
    let att = s.run(&["attach", "rb", eid.trim()]);
    assert_eq!(
        (att.status.code(), att.stdout.as_slice()),
        (Some(4), &b"later\n"[..])
    );

    // -t gives the command a terminal; Ctrl-C reaches the command as SIGINT.
    let tty = s.ok(&["exec", "-t", "rb", "tty"]);
    assert!(tty.starts_with("/dev/pts/"), "{tty:?}");
    let mut looping = s
        .cli(&[
            "exec",
            "rb",
            "sh",
            "-c",
            "trap 'echo got; exit 7' INT; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = [0u8; 6];
    std::io::Read::read_exact(looping.stdout.as_mut().unwrap(), &mut ready).unwrap();
    assert_eq!(&ready, b"ready\n");
    let pid = i32::try_from(looping.id()).unwrap();
    // SAFETY: kill on the pid of a child this test started and has not reaped.
    unsafe { libc::kill(pid, libc::SIGINT) };
    // A client that ignored the interrupt would hang the suite: end it after 60 s.
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(Duration::from_secs(60)).is_err() {
            // SAFETY: as above; the child is reaped only after this thread is told.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut ended_out = Vec::new();
    std::io::Read::read_to_end(looping.stdout.as_mut().unwrap(), &mut ended_out).unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    let ended = looping.wait_with_output().unwrap();
    let ended = Output {
        stdout: ended_out,
        ..ended
    };
    assert_eq!(
        (ended.status.code(), ended.stdout.as_slice()),
        (Some(7), &b"got\n"[..])
    );

    // The key never shows, even in trace logs of the WebSocket handshake.
    let traced = s
        .cli(&["--debug", "exec", "rb", "true"])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(traced.status.success(), "{}", text(&traced.stderr));
    assert!(!text(&traced.stderr).contains(KEY), "the key was logged");

    // cp: a file and a directory in, then out again.
    let tmp = s.home.home.join("cp");
    write_tree(&tmp.join("src"));
    s.ok(&[
        "cp",
        tmp.join("src/a.txt").to_str().unwrap(),
        "rb:/tmp/one.txt",
    ]);
    s.ok(&["cp", tmp.join("src").to_str().unwrap(), "rb:/tmp/tree"]);
    let shown = s.ok(&["exec", "rb", "cat", "/tmp/one.txt", "/tmp/tree/a.txt"]);
    assert_eq!(shown, "alpha\nalpha\n");
    s.ok(&[
        "cp",
        "rb:/tmp/one.txt",
        tmp.join("one.txt").to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(tmp.join("one.txt")).unwrap(), b"alpha\n");
    std::fs::create_dir(tmp.join("out")).unwrap();
    s.ok(&["cp", "rb:/tmp/tree", tmp.join("out").to_str().unwrap()]);
    assert_same_tree(&tmp.join("src"), &tmp.join("out/tree"));
    let missing = s.run(&["cp", "rb:/no/such", tmp.join("x").to_str().unwrap()]);
    assert_refused(&missing, "/no/such");
    assert!(!tmp.join("x").exists());

    // Images, volumes and stats go through the same printing as locally.
    assert!(s.ok(&["images", "-q"]).contains("boxlite/busybox"));
    assert_eq!(s.ok(&["volume", "create", "vol1"]), "vol1\n");
    assert!(s.ok(&["volume", "ls"]).contains("vol1"));
    assert_eq!(s.ok(&["volume", "rm", "vol1"]), "vol1\n");
    assert!(s.ok(&["stats", "--no-stream", "rb"]).contains(&id[..12]));

    // Pause, resume, snapshots and clones go through the API's routes.
    s.ok(&["exec", "rb", "sh", "-c", "echo remote-mem > /dev/shm/m"]);
    assert_eq!(s.ok(&["pause", "rb"]), "rb\n");
    assert!(
        s.ok(&["ls", "-a"]).contains("Paused"),
        "{}",
        s.ok(&["ls", "-a"])
    );
    assert_eq!(s.ok(&["resume", "rb"]), "rb\n");
    assert_eq!(s.ok(&["snapshot", "create", "rb", "rs"]), "rs\n");
    let snaps: serde_json::Value =
        serde_json::from_str(&s.ok(&["snapshot", "ls", "rb", "--format", "json"])).unwrap();
    assert_eq!(snaps[0]["name"], "rs", "{snaps}");
    assert_eq!(snaps[0]["memory"], true, "{snaps}");
    let clone = s.ok(&["clone", "rb@rs", "--name", "rclone"]);
    assert_eq!(
        s.ok(&["exec", "rclone", "cat", "/dev/shm/m"]),
        "remote-mem\n",
        "clone {clone}"
    );
    assert_eq!(s.ok(&["rm", "-f", "rclone"]), "rclone\n");
    assert_refused(
        &s.run(&["snapshot", "restore", "rb", "rs"]),
        "stop it first",
    );
    assert_eq!(s.ok(&["snapshot", "rm", "rb", "rs"]), "rs\n");
    assert_refused(
        &s.run(&["snapshot", "rm", "rb", "rs"]),
        "no snapshot named \"rs\"",
    );

    // stop and rm, then the box is gone.
    assert_eq!(s.ok(&["stop", "-t", "5", "rb"]), "rb\n");
    assert!(!s.ok(&["ls"]).contains("rb"));
    assert!(s.ok(&["ls", "-a"]).contains("Stopped"));
    assert_eq!(s.ok(&["rm", "rb"]), "rb\n");
    assert_refused(&s.run(&["inspect", "rb"]), "no box with id or name \"rb\"");

    assert!(!s.no_home.exists(), "the remote CLI made a local home");
}
