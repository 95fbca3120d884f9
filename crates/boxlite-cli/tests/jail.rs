//! The host jail as a user sees it: `boxlite info` lists each wall and whether it is up
//! on this host; `BOXLITE_JAIL=off` turns the jail off, loudly; a bad value is refused
//! naming the valid ones.

use boxlite_testkit::TestHome;

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

fn walls(info: &serde_json::Value) -> Vec<(String, bool)> {
    info["walls"]
        .as_array()
        .expect("walls")
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_string(),
                w["active"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn info_reports_every_wall_and_the_jail_switch_turns_them_off_loudly() {
    let h = TestHome::new();
    let on: serde_json::Value =
        serde_json::from_str(&h.ok(BIN, &["info", "--format", "json"])).unwrap();
    assert_eq!(on["jail"], true);
    let w = walls(&on);
    let names: Vec<&str> = w.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "no_new_privs",
            "seccomp",
            "landlock",
            "namespaces",
            "unprivileged_user",
            "capabilities",
            "cgroups",
            "rlimits"
        ]
    );
    // The test machines (root, Linux 6.x with landlock, cgroup v1 controllers) have all.
    for (name, active) in &w {
        assert!(active, "{name} is missing here: {on}");
    }
    let text = h.ok(BIN, &["info"]);
    assert!(text.contains("jail:          on"), "{text}");
    assert!(text.contains("landlock"), "{text}");

    let out = h
        .cli(BIN)
        .env("BOXLITE_JAIL", "off")
        .args(["info", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let off: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(off["jail"], false);
    for (name, active) in walls(&off) {
        assert!(!active, "{name} is reported up with the jail off");
    }
    let out = h
        .cli(BIN)
        .env("BOXLITE_JAIL", "off")
        .arg("info")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("OFF (BOXLITE_JAIL=off"), "{text}");
}

#[test]
fn a_bad_jail_setting_is_refused_naming_the_valid_ones() {
    let h = TestHome::new();
    for (var, value, valid) in [
        ("BOXLITE_JAIL", "sometimes", "on or off"),
        ("BOXLITE_JAIL_SECCOMP", "trap", "enosys, kill or log"),
    ] {
        let out = h.cli(BIN).env(var, value).arg("ls").output().unwrap();
        assert!(!out.status.success(), "{var}={value} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var) && err.contains(value), "{err}");
        assert!(err.contains(valid), "{err}");
    }
}

#[test]
fn a_box_started_with_the_jail_off_says_so_and_its_helpers_are_unconfined() {
    let h = TestHome::new();
    let out = h
        .cli(BIN)
        .env("BOXLITE_JAIL", "off")
        .args([
            "run",
            "-d",
            "--name",
            "loose",
            "boxlite/busybox",
            "sleep",
            "60",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BOXLITE_JAIL=off"), "no warning: {err}");
    let shim = h
        .processes()
        .into_iter()
        .find(|(_, cmd)| cmd.contains("boxlite-shim"))
        .expect("the box's shim");
    let status = std::fs::read_to_string(format!("/proc/{}/status", shim.0)).unwrap();
    assert!(status.contains("NoNewPrivs:\t0"), "{status}");
    assert!(status.contains("Seccomp:\t0"), "{status}");
    h.ok(BIN, &["rm", "-f", "loose"]);
}
