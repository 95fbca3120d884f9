//! `boxlite stats` and the OOM message, against real VMs.

use boxlite_testkit::TestHome;

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

#[test]
fn stats_no_stream_shows_running_boxes_as_a_table_and_as_json() {
    let h = TestHome::new();
    let id = h.ok(BIN, &["run", "-d", "--name", "st", "boxlite/busybox"]);
    let id = id.trim();
    h.ok(BIN, &["exec", "st", "true"]);
    h.ok(BIN, &["exec", "st", "true"]);
    h.ok(BIN, &["create", "--name", "idle", "boxlite/busybox"]);

    let table = h.ok(BIN, &["stats", "--no-stream"]);
    let json = h.ok(BIN, &["stats", "--no-stream", "--format", "json", "st"]);
    let unknown = h.run(BIN, &["stats", "--no-stream", "nope"]);
    let stopped = h.ok(BIN, &["stats", "--no-stream", "--format", "json", "idle"]);

    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "a header and the one running box: {table}");
    assert!(
        lines[0].starts_with("BOX ID") && lines[0].contains("HOST RSS"),
        "{table}"
    );
    assert!(
        lines[1].starts_with(&id[..12]) && lines[1].contains(" st "),
        "{table}"
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let m = &v[0];
    assert_eq!(m["id"], id);
    // `run -d` started the image's default command (/bin/sh), then the two `exec`s.
    assert_eq!(m["execs_started"], 3);
    assert!(m["vmm_rss_bytes"].as_u64().unwrap() > 0);
    assert!(m["mem_total_bytes"].as_u64().unwrap() > 0);
    assert!(m["cpu_percent"].as_f64().unwrap() >= 0.0);
    assert!(m["boot"]["ready_ms"].as_u64().unwrap() > 0);
    assert_eq!(unknown.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no box with id or name \"nope\""));
    let s: serde_json::Value = serde_json::from_str(&stopped).unwrap();
    assert_eq!(s[0]["state"], "Configured");
    assert!(s[0]["cpu_secs"].is_null());
    h.ok(BIN, &["rm", "-f", "st", "idle"]);
}

#[test]
fn an_oom_killed_command_exits_137_with_a_message_that_says_so() {
    let h = TestHome::new();

    let out = h.run(
        BIN,
        &[
            "run",
            "--rm",
            "--memory",
            "256",
            "boxlite/busybox",
            "tail",
            "/dev/zero",
        ],
    );

    assert_eq!(out.status.code(), Some(137));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("out-of-memory killer"), "{err}");
    assert!(err.contains("--memory"), "{err}");
}
