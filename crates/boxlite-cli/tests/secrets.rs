//! `--secret` and `--secret-body` end to end: refusals, what `inspect` shows, and a real
//! box that sees only placeholders while the value is nowhere in its home.

use std::path::{Path, PathBuf};
use std::process::Output;

use boxlite_testkit::TestHome;

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");
const VALUE: &str = "sk-cli-0a9b8c7d6e";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A failure of ours: exit 125 and `boxlite: error: ...` saying `says`, never the value.
fn assert_refused(out: &Output, says: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.starts_with("boxlite: error: "), "{err}");
    assert!(err.contains(says), "expected {says:?} in: {err}");
    assert!(!err.contains(VALUE), "{err}");
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(files(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// Files under `dir` that hold `needle` (the RAM file of a running box is skipped: it
/// is not under the home).
fn holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .collect()
}

#[test]
fn malformed_or_unusable_secrets_are_refused_before_anything_is_created() {
    let h = TestHome::new();
    let create = |args: &[&str]| {
        let mut c = h.cli(BIN);
        c.arg("create").args(args).arg("boxlite/busybox");
        c.env("SECRET_VALUE_VAR", VALUE).env_remove("UNSET_VAR_31");
        c.output().unwrap()
    };

    assert_refused(&create(&["--secret", "KEY"]), "no '@' before the hosts");
    assert_refused(&create(&["--secret", "KEY@"]), "a host is empty");
    assert_refused(
        &create(&[
            "--secret",
            "K=SECRET_VALUE_VAR@a.test",
            "--secret-body",
            "X",
        ]),
        "--secret-body X: no --secret is named X",
    );
    assert_refused(
        &create(&["--secret", "UNSET_VAR_31@a.test"]),
        "secret \"UNSET_VAR_31\": environment variable UNSET_VAR_31 is not set",
    );
    assert_refused(
        &create(&["--network", "none", "--secret", "K=SECRET_VALUE_VAR@a.test"]),
        "a secret needs the network",
    );
    assert_refused(
        &create(&["--secret", "K=SECRET_VALUE_VAR@10.0.0.1"]),
        "IP addresses and network groups are not secret hosts",
    );
    assert!(h.box_dirs().is_empty(), "{:?}", h.box_dirs());
}

#[test]
fn inspect_shows_where_a_secret_comes_from_and_the_value_is_nowhere_in_the_home() {
    let h = TestHome::new();
    let out = h
        .cli(BIN)
        .args([
            "create",
            "--secret",
            "OPENAI_KEY=MY_TOKEN@api.test,*.api.test",
            "--secret-body",
            "OPENAI_KEY",
            "boxlite/busybox",
        ])
        .env("MY_TOKEN", VALUE)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();

    let inspect = h.ok(BIN, &["inspect", &id]);

    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(
        v[0]["config"]["secrets"],
        serde_json::json!([{
            "name": "OPENAI_KEY", "hosts": ["api.test", "*.api.test"],
            "placeholder": "<BOXLITE_SECRET:OPENAI_KEY>", "body": true,
            "source": {"env": "MY_TOKEN"}
        }])
    );
    assert!(!inspect.contains(VALUE));
    assert_eq!(holding(&h.home, VALUE), Vec::<PathBuf>::new());
    h.ok(BIN, &["rm", &id]);
}

#[test]
fn a_box_sees_only_placeholders_and_the_value_never_reaches_its_home() {
    let h = TestHome::new();
    let out = h
        .cli(BIN)
        .args([
            "run",
            "-d",
            "--secret",
            "API_KEY@api.test",
            "boxlite/busybox",
        ])
        .env("API_KEY", VALUE)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();

    // Another process, without the variable, runs commands in the running box.
    let env = h.ok(BIN, &["exec", &id, "env"]);
    let explicit = h.ok(
        BIN,
        &[
            "exec",
            "-e",
            "API_KEY=mine",
            &id,
            "sh",
            "-c",
            "echo $API_KEY",
        ],
    );
    let files_in_box = h.run(
        BIN,
        &["exec", &id, "grep", "-rl", VALUE, "/etc", "/root", "/tmp"],
    );

    let lines: Vec<&str> = env.lines().collect();
    assert!(lines.contains(&"API_KEY=<BOXLITE_SECRET:API_KEY>"), "{env}");
    assert!(
        lines.contains(&"BOXLITE_SECRET_API_KEY=<BOXLITE_SECRET:API_KEY>"),
        "{env}"
    );
    assert!(!env.contains(VALUE), "{env}");
    assert_eq!(explicit, "mine\n");
    assert_eq!(text(&files_in_box.stdout), "");
    assert_eq!(holding(&h.home, VALUE), Vec::<PathBuf>::new());
    // A restart reads the variable again: from a process that lacks it, it fails and says
    // which; with it, the box runs.
    h.ok(BIN, &["stop", &id]);
    let without = h.run(BIN, &["start", &id]);
    assert_refused(&without, "environment variable API_KEY is not set");
    let with = h
        .cli(BIN)
        .args(["start", &id])
        .env("API_KEY", VALUE)
        .output()
        .unwrap();
    assert!(with.status.success(), "{}", text(&with.stderr));
    assert_eq!(holding(&h.home, VALUE), Vec::<PathBuf>::new());
    h.ok(BIN, &["rm", "-f", &id]);
}

/// Every `/proc/<pid>/cmdline` and `environ` of this home's processes (the helper, the
/// shim, QEMU), joined.
fn process_texts(h: &TestHome) -> String {
    let mut all = String::new();
    for (pid, cmdline) in h.processes() {
        all.push_str(&cmdline);
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            all.push_str(&text(&env));
        }
    }
    all
}

/// The whole path with real clients: curl (HTTP/1.1 and HTTP/2), Python `requests` and
/// `urllib`, and Node's `fetch`, in a box of the clients test image, call a recording
/// HTTPS fixture on the host that echoes what it gets. The fixture sees the value; the
/// box sees the placeholder, trusts the box's CA without a flag, and never sees the
/// value in any reply. A restart (a new helper, a new CA) keeps it working.
#[test]
fn curl_python_and_node_in_a_box_reach_the_api_with_the_real_key_and_never_see_it() {
    use boxlite_net::tls_fixture::{HttpsFixture, TestCa};
    use boxlite_testkit::Registry;
    use boxlite_testkit::oci::TestImage;
    let h = TestHome::new();
    let reg = Registry::start();
    TestImage::built(
        "clients",
        serde_json::json!({
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
            "Cmd": ["sleep", "3600"],
        }),
    )
    .push(&reg, "test/clients", "v1");
    let ca = TestCa::new();
    let fixture = HttpsFixture::spawn(ca.server_config(&["api.test", "other.test"]));
    let port = fixture.addr.port();
    std::fs::write(h.home.join("upstream-ca.pem"), ca.pem()).unwrap();
    std::fs::write(
        h.home.join("config.toml"),
        format!(
            "[registries.\"{}\"]\ninsecure_http = true\n\n[network]\nupstream_ca_files = [\"upstream-ca.pem\"]\n",
            reg.addr
        ),
    )
    .unwrap();
    let image = format!("{}/test/clients:v1", reg.addr);
    let out = h
        .cli(BIN)
        .args([
            "run",
            "-d",
            "--add-host",
            "api.test:host-gateway",
            "--add-host",
            "other.test:host-gateway",
            "--allow-net",
            &format!("api.test:{port}"),
            "--allow-net",
            &format!("other.test:{port}"),
            "--secret",
            "API_KEY@api.test",
            &image,
            "sleep",
            "3600",
        ])
        .env("API_KEY", VALUE)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let url = format!("https://api.test:{port}/echo");
    let sh = |script: &str| -> String {
        let out = h.run(BIN, &["exec", &id, "sh", "-c", script]);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{script}: {all}");
        assert!(
            !all.contains(VALUE),
            "{script}: the box saw the value: {all}"
        );
        text(&out.stdout)
    };
    let echoed = "Bearer <BOXLITE_SECRET:API_KEY>".to_string();

    let curl = sh(&format!(
        "curl -sS --http1.1 -D - -H \"Authorization: Bearer $API_KEY\" {url}"
    ));
    assert!(curl.contains(&format!("authorization: {echoed}")), "{curl}");
    let curl2 = sh(&format!(
        "curl -sS --http2 -H \"Authorization: Bearer $API_KEY\" {url}?via=h2"
    ));
    assert!(curl2.contains(&echoed), "{curl2}");
    let py = sh(&format!(
        "python3 -c \"import os, requests; r = requests.get('{url}', headers={{'Authorization': 'Bearer ' + os.environ['API_KEY']}}); print(r.status_code, r.text)\""
    ));
    assert!(py.starts_with("200") && py.contains(&echoed), "{py}");
    let urllib = sh(&format!(
        "python3 -c \"import os, urllib.request as u; q = u.Request('{url}', headers={{'X-Api-Key': os.environ['BOXLITE_SECRET_API_KEY']}}); print(u.urlopen(q).read().decode())\""
    ));
    assert!(urllib.contains("<BOXLITE_SECRET:API_KEY>"), "{urllib}");
    let node = sh(&format!(
        "node -e \"fetch('{url}', {{headers: {{authorization: 'Bearer ' + process.env.API_KEY}}}}).then(r => r.text()).then(t => console.log(t))\""
    ));
    assert!(node.contains(&echoed), "{node}");
    // The same placeholder to a host outside the secret's scope goes out unchanged (and
    // that host's own certificate is not trusted by the box: it is not intercepted).
    let other = h.run(
        BIN,
        &[
            "exec",
            &id,
            "sh",
            "-c",
            &format!("curl -sS -H \"Authorization: Bearer $API_KEY\" https://other.test:{port}/"),
        ],
    );
    assert!(
        !other.status.success(),
        "other.test was intercepted or trusted"
    );

    let reqs = fixture.requests();
    let with_value = reqs
        .iter()
        .filter(|r| {
            r.header("authorization") == Some(format!("Bearer {VALUE}").as_bytes())
                || r.header("x-api-key") == Some(VALUE.as_bytes())
        })
        .count();
    assert_eq!(with_value, 5, "{reqs:#?}");
    assert!(reqs.iter().any(|r| r.version == "HTTP/2.0"), "{reqs:#?}");
    assert!(reqs.iter().all(|r| !r.uri.contains("other")));

    // The value is in no file of the home, no process's argv or environment, no log.
    assert_eq!(holding(&h.home, VALUE), Vec::<PathBuf>::new());
    let procs = process_texts(&h);
    assert!(!procs.is_empty() && !procs.contains(VALUE));
    let log = h.ok(BIN, &["network", "log", "--format", "json", &id]);
    assert!(
        log.contains("\"intercept\"") && !log.contains(VALUE),
        "{log}"
    );

    // A restart: a new helper mints a new CA, which the box trusts again.
    let restarted = h
        .cli(BIN)
        .args(["restart", &id])
        .env("API_KEY", VALUE)
        .output()
        .unwrap();
    assert!(restarted.status.success(), "{}", text(&restarted.stderr));
    let again = sh(&format!(
        "curl -sS -H \"Authorization: Bearer $API_KEY\" {url}"
    ));
    assert!(again.contains(&echoed), "{again}");
    assert_eq!(fixture.requests().len(), reqs.len() + 1);
    assert_eq!(holding(&h.home, VALUE), Vec::<PathBuf>::new());
    h.ok(BIN, &["rm", "-f", &id]);
}
