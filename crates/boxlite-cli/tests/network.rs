//! Networking end to end, with real boxes: a host fixture fetched from inside a box, a
//! box's server published on the host, the default posture refusing the host, and
//! `--network none`. Every dial the helpers make is held to 127.0.0.0/8 by the test
//! guard (the test kit sets `BOXLITE_NET_TEST_GUARD=1`), and the decisions are read back
//! with `boxlite network log`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use boxlite_testkit::TestHome;

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

/// A tiny HTTP server on 127.0.0.1 that answers every request with `body` and counts
/// requests.
fn http_fixture(body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, hits)
}

fn log_json(home: &TestHome, id: &str) -> Vec<serde_json::Value> {
    let out = home.ok(BIN, &["network", "log", "--format", "json", id]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_box_fetches_a_host_fixture_by_name_and_the_decisions_are_logged() {
    let home = TestHome::new();
    let (port, hits) = http_fixture("hello from the host fixture");
    let url = format!("http://web.test:{port}/");
    let id = home
        .ok(
            BIN,
            &[
                "run",
                "-d",
                "--name",
                "netbox",
                "--add-host",
                "web.test:host-gateway",
                "--allow-net",
                &format!("web.test:{port}"),
                "boxlite/busybox",
                "sleep",
                "600",
            ],
        )
        .trim()
        .to_string();
    let out = home.ok(BIN, &["exec", &id, "wget", "-q", "-O", "-", &url]);
    assert_eq!(out, "hello from the host fixture");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // The box's resolver and hosts file are the generated ones.
    let resolv = home.ok(BIN, &["exec", &id, "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.0.2.3"), "{resolv}");

    // In allow-list mode the host's other services stay closed, through the alias too.
    let (other, other_hits) = http_fixture("must not be reached");
    for url in [
        format!("http://host.boxlite.internal:{other}/"),
        format!("http://10.0.2.2:{other}/"),
    ] {
        let denied = home.run(BIN, &["exec", &id, "wget", "-q", "-O", "-", &url]);
        assert!(!denied.status.success(), "{url} was fetched");
    }
    assert_eq!(other_hits.load(Ordering::SeqCst), 0);

    let log = log_json(&home, &id);
    let allowed = log
        .iter()
        .find(|e| e["dst"] == format!("10.0.2.2:{port}"))
        .expect("the fetch is logged");
    assert_eq!(allowed["verdict"], "allow");
    assert_eq!(allowed["rule"], format!("web.test:{port}"));
    let refused = log
        .iter()
        .find(|e| e["dst"] == format!("10.0.2.2:{other}"))
        .unwrap_or_else(|| panic!("the refusal is not logged: {log:#?}"));
    assert_eq!(refused["verdict"], "deny");
    // The alias is a name like any other: without a rule, the box's DNS refuses it.
    let alias = log
        .iter()
        .find(|e| e["kind"] == "dns" && e["name"] == "host.boxlite.internal")
        .expect("the alias lookup is logged");
    assert_eq!(alias["verdict"], "deny");
    assert!(
        !log.iter().any(|e| e["kind"] == "guard"),
        "a dial left loopback: {log:?}"
    );
    let table = home.ok(BIN, &["network", "log", "--denied", &id]);
    assert!(
        table.contains("deny") && !table.contains("allow "),
        "{table}"
    );

    let info: serde_json::Value = serde_json::from_str(&home.ok(BIN, &["inspect", &id])).unwrap();
    assert_eq!(info[0]["network"]["state"], "running");
    let stats: serde_json::Value =
        serde_json::from_str(&home.ok(BIN, &["stats", "--no-stream", "--format", "json", &id]))
            .unwrap();
    let net = &stats[0]["network"];
    assert_eq!(net["tcp_connections"].as_u64(), Some(1), "{net}");
    assert!(net["denied"].as_u64().unwrap() >= 2, "{net}");
    home.ok(BIN, &["rm", "-f", &id]);
}

/// A server on 127.0.0.1 that streams zeros to each client until it goes away, and
/// counts the bytes it managed to send.
fn endless_fixture() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let sent = Arc::new(AtomicUsize::new(0));
    let c = sent.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let c = c.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                if s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").is_err() {
                    return;
                }
                let chunk = [0u8; 65536];
                while s.write_all(&chunk).is_ok() {
                    c.fetch_add(chunk.len(), Ordering::SeqCst);
                }
            });
        }
    });
    (port, sent)
}

#[test]
fn a_published_port_serves_the_box_and_a_helper_killed_mid_transfer_only_fails_the_network() {
    let home = TestHome::new();
    let (stream_port, streamed) = endless_fixture();
    let (hello_port, _) = http_fixture("hello again");
    let id = home
        .ok(
            BIN,
            &[
                "run",
                "-d",
                "-p",
                "127.0.0.1:0:8080",
                "--allow-net",
                &format!("host:{stream_port}"),
                "--allow-net",
                &format!("host:{hello_port}"),
                "boxlite/busybox",
                "sh",
                "-c",
                "mkdir -p /www && echo served-from-the-box > /www/index.html && exec httpd -f -p 8080 -h /www",
            ],
        )
        .trim()
        .to_string();
    let ports = home.ok(BIN, &["port", &id]);
    let host = ports
        .lines()
        .find(|l| l.starts_with("8080/tcp -> "))
        .unwrap_or_else(|| panic!("no mapping in {ports:?}"))
        .trim_start_matches("8080/tcp -> ")
        .to_string();
    // httpd may still be starting: retry briefly.
    let body = boxlite_testkit::wait_for(30, "the published httpd", || {
        let mut s = TcpStream::connect(&host).ok()?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
        let mut r = String::new();
        s.read_to_string(&mut r).ok()?;
        r.contains("served-from-the-box").then_some(r)
    });
    assert!(body.starts_with("HTTP/1."), "{body}");

    // A download in progress when the helper dies.
    home.ok(
        BIN,
        &[
            "exec",
            "-d",
            &id,
            "wget",
            "-q",
            "-O",
            "/dev/null",
            &format!("http://10.0.2.2:{stream_port}/"),
        ],
    );
    boxlite_testkit::wait_for(30, "the download to be under way", || {
        (streamed.load(Ordering::SeqCst) > 4 << 20).then_some(())
    });
    let info: serde_json::Value = serde_json::from_str(&home.ok(BIN, &["inspect", &id])).unwrap();
    let pid = info[0]["network"]["helper_pid"].as_i64().unwrap();
    // SAFETY: kill with a pid read from the box's record; a plain syscall.
    unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL) };
    boxlite_testkit::wait_for(10, "the network marked failed", || {
        let info: serde_json::Value =
            serde_json::from_str(&home.ok(BIN, &["inspect", &id])).ok()?;
        (info[0]["network"]["state"] == "failed").then_some(())
    });
    let info: serde_json::Value = serde_json::from_str(&home.ok(BIN, &["inspect", &id])).unwrap();
    assert_eq!(info[0]["state"], "Running");
    assert_eq!(
        home.ok(BIN, &["exec", &id, "echo", "still here"]),
        "still here\n"
    );
    // The published port went with the helper.
    assert!(TcpStream::connect(&host).is_err(), "{host} still accepts");

    home.ok(BIN, &["restart", &id]);
    let info: serde_json::Value = serde_json::from_str(&home.ok(BIN, &["inspect", &id])).unwrap();
    assert_eq!(info[0]["network"]["state"], "running");
    let again = home.ok(
        BIN,
        &[
            "exec",
            &id,
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://10.0.2.2:{hello_port}/"),
        ],
    );
    assert_eq!(again, "hello again");
    home.ok(BIN, &["rm", "-f", &id]);
}

#[test]
fn network_none_has_no_nic_and_no_helper_and_rejects_network_options() {
    let home = TestHome::new();
    let out = home.ok(
        BIN,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "boxlite/busybox",
            "ls",
            "/sys/class/net",
        ],
    );
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    let with_net = home.ok(
        BIN,
        &["run", "--rm", "boxlite/busybox", "ls", "/sys/class/net"],
    );
    assert!(
        with_net.split_whitespace().any(|n| n == "eth0"),
        "{with_net}"
    );

    let bad = home.run(
        BIN,
        &[
            "create",
            "--network",
            "none",
            "-p",
            "8080:80",
            "boxlite/busybox",
        ],
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("network mode none"), "{err}");
    let bad = home.run(
        BIN,
        &["create", "--allow-net", "10.0.0.0/33", "boxlite/busybox"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("10.0.0.0/33"));
    assert!(
        home.ok(BIN, &["ls", "-aq"]).trim().is_empty(),
        "nothing half-created"
    );
}

/// A static HTTP server on 127.0.0.1 for the files under `root` (GET only).
fn file_server(root: std::path::PathBuf) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).is_ok_and(|n| n == 1) {
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let rel = path.trim_start_matches('/');
                let file = if rel.contains("..") {
                    None
                } else {
                    let p = root.join(rel);
                    let p = if p.is_dir() { p.join("index.html") } else { p };
                    let kind = if p.extension().is_some_and(|e| e == "html") {
                        "text/html"
                    } else {
                        "application/octet-stream"
                    };
                    std::fs::read(p).ok().map(|b| (b, kind))
                };
                match file {
                    Some((body, kind)) => {
                        let _ = write!(
                            s,
                            "HTTP/1.0 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(&body);
                    }
                    None => {
                        let _ = s.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                    }
                }
            });
        }
    });
    port
}

#[test]
fn pip_installs_a_wheel_from_a_simple_index_on_the_host() {
    // A one-module wheel, built here, served in PyPI's /simple/ layout.
    let root = std::env::temp_dir().join(format!(
        "bx-pypi-{}-{port_hint}",
        std::process::id(),
        port_hint = line!()
    ));
    let files = root.join("files");
    std::fs::create_dir_all(root.join("simple/hello-boxlite")).unwrap();
    std::fs::create_dir_all(&files).unwrap();
    let wheel = files.join("hello_boxlite-1.0-py3-none-any.whl");
    let built = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import sys, zipfile, hashlib, base64
files = {
    "hello_boxlite/__init__.py": "GREETING = 'installed from the host index'\n",
    "hello_boxlite-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: hello-boxlite\nVersion: 1.0\n",
    "hello_boxlite-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: boxlite-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for name, text in files.items():
        data = text.encode()
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("hello_boxlite-1.0.dist-info/RECORD,,")
    z.writestr("hello_boxlite-1.0.dist-info/RECORD", "\n".join(record) + "\n")
"#,
        )
        .arg(&wheel)
        .status()
        .expect("python3 on the host builds the test wheel");
    assert!(built.success());
    use sha2::Digest;
    let sum = hex_digest(&sha2::Sha256::digest(std::fs::read(&wheel).unwrap()));
    std::fs::write(
        root.join("simple/hello-boxlite/index.html"),
        format!(
            "<!DOCTYPE html><html><body><a href=\"/files/hello_boxlite-1.0-py3-none-any.whl#sha256={sum}\">hello_boxlite-1.0-py3-none-any.whl</a></body></html>"
        ),
    )
    .unwrap();
    let port = file_server(root.clone());

    let home = TestHome::new();
    let script = format!(
        "pip install -q --no-cache-dir --disable-pip-version-check --index-url http://pypi.test:{port}/simple/ --trusted-host pypi.test hello-boxlite \
         && python3 -c 'import hello_boxlite; print(hello_boxlite.GREETING)'"
    );
    let out = home.ok(
        BIN,
        &[
            "run",
            "--rm",
            "--add-host",
            "pypi.test:host-gateway",
            "--allow-net",
            &format!("pypi.test:{port}"),
            "boxlite/python",
            "sh",
            "-c",
            &script,
        ],
    );
    std::fs::remove_dir_all(&root).unwrap();
    assert_eq!(out.trim(), "installed from the host index");
}

fn hex_digest(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
