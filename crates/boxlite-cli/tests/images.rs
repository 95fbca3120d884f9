//! Image commands against a real registry on 127.0.0.1 and real VMs: pull with
//! progress, images, run with the image's defaults, --entrypoint, --disk-size, rmi,
//! image prune, load (OCI layout and docker archive), login, and bad input.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use boxlite_testkit::oci::{Comp, Layer, TestImage, busybox_layer};
use boxlite_testkit::{Registry, TestHome};

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

fn image() -> TestImage {
    TestImage::new(
        vec![
            (busybox_layer(), Comp::Gzip),
            (
                Layer::new().file("srv/motd", 0o644, (0, 0), b"from the image\n"),
                Comp::Zstd,
            ),
        ],
        serde_json::json!({
            "Env": ["PATH=/bin:/usr/bin", "GREETING=hello"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo $GREETING; cat motd; id -un"],
            "WorkingDir": "/srv",
            "User": "app"
        }),
    )
}

fn fails(h: &TestHome, args: &[&str]) -> String {
    let out = h.run(BIN, args);
    assert_eq!(out.status.code(), Some(125), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn pull_images_run_with_defaults_rmi_and_prune() {
    let reg = Registry::start();
    let digest = image().push(&reg, "cli/app", "1.0");
    let h = TestHome::new();
    h.allow_http(&reg);
    let r = format!("{}/cli/app:1.0", reg.addr);

    let out = h.run(BIN, &["pull", &r]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{r}@{digest}\n")
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 layers"), "{err}");
    assert!(err.contains("root filesystem built in"), "{err}");
    let again = h.run(BIN, &["pull", &r]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already built"),
        "{again:?}"
    );

    let table = h.ok(BIN, &["images"]);
    let row = table.lines().nth(1).unwrap();
    assert!(row.starts_with(&r), "{table}");
    assert!(row.contains(&digest[7..19]), "{table}");
    assert!(row.contains("2026-11-22T00:00:00Z"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&h.ok(BIN, &["images", "--format", "json"])).unwrap();
    assert_eq!(json[0]["reference"], r.as_str());
    assert_eq!(json[0]["digest"], digest.as_str());
    assert!(json[0]["size"].as_u64().unwrap() > 100_000);

    // No command: the image's entrypoint and command, env, working dir and user.
    assert_eq!(
        h.ok(BIN, &["run", "--rm", &r]),
        "hello\nfrom the image\napp\n"
    );
    // A command replaces Cmd, after the entrypoint; -u and -e override the image.
    assert_eq!(
        h.ok(
            BIN,
            &[
                "run",
                "--rm",
                "-u",
                "root",
                "-e",
                "GREETING=hi",
                &r,
                "echo $GREETING; id -u; pwd"
            ]
        ),
        "hi\n0\n/srv\n"
    );
    // --entrypoint replaces the entrypoint and drops Cmd.
    assert_eq!(
        h.ok(
            BIN,
            &[
                "run",
                "--rm",
                "--entrypoint",
                "/bin/echo",
                &r,
                "plain",
                "args"
            ]
        ),
        "plain args\n"
    );
    // --disk-size gives the box more room than the image has.
    let kb: u64 = h
        .ok(
            BIN,
            &[
                "run",
                "--rm",
                "--disk-size",
                "2G",
                &r,
                "df -k / | awk 'NR==2 {print $2}'",
            ],
        )
        .trim()
        .parse()
        .unwrap();
    assert!((1_800_000..2_100_000).contains(&kb), "{kb}");
    let small = fails(&h, &["run", "--rm", "--disk-size", "64M", &r]);
    assert!(small.contains("smaller than image"), "{small}");
    assert!(fails(&h, &["run", "--rm", "--disk-size", "lots", &r]).contains("invalid --disk-size"));

    // In use: refused, then forced (the reference goes; the files stay for the box).
    h.ok(BIN, &["create", "--name", "user", &r]);
    let refused = fails(&h, &["rmi", &r]);
    assert!(refused.contains("is used by 1 box (user)"), "{refused}");
    let forced = h.ok(BIN, &["rmi", "-f", &digest[7..19]]);
    assert!(forced.contains(&format!("Untagged: {r}")), "{forced}");
    assert_eq!(h.ok(BIN, &["images", "-q"]), "");
    assert_eq!(h.ok(BIN, &["image", "prune"]), "Nothing to remove\n");
    h.ok(BIN, &["rm", "user"]);
    let pruned = h.ok(BIN, &["image", "prune"]);
    assert!(
        pruned.starts_with("Deleted: 1 root filesystem, 4 blobs"),
        "{pruned}"
    );
    assert!(
        std::fs::read_dir(h.home.join("images/bases"))
            .unwrap()
            .next()
            .is_none()
    );
    let missing = fails(&h, &["rmi", &r]);
    assert!(missing.contains("not in the local store"), "{missing}");
}

#[test]
fn load_reads_oci_layouts_and_docker_archives() {
    let h = TestHome::new();
    let img = image();
    let layout = h.home.join("layout");
    img.write_layout(&layout, "v1");
    // A bare tag in the layout is not a name: --tag gives one.
    let unnamed = fails(&h, &["load", "-i", layout.to_str().unwrap()]);
    assert!(unnamed.contains("name it with --tag"), "{unnamed}");
    // Loading with --tag prints the canonical name and the manifest digest.
    let load_tagged = |input: &std::path::Path, tag: &str| {
        let out = h.ok(BIN, &["load", "-i", input.to_str().unwrap(), "--tag", tag]);
        assert_eq!(out, format!("docker.io/{tag}@{}\n", img.manifest.digest));
    };
    load_tagged(&layout, "local/app:v1");
    assert_eq!(
        h.ok(BIN, &["run", "--rm", "local/app:v1"]),
        "hello\nfrom the image\napp\n"
    );

    // The same layout as a tar: an OCI archive.
    let oci_tar = h.home.join("layout.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&oci_tar).unwrap());
        b.append_dir_all(".", &layout).unwrap();
        b.finish().unwrap();
    }
    load_tagged(&oci_tar, "local/app:tarred");

    let archive = h.home.join("saved.tar");
    img.write_docker_archive(&archive, "saved/app:2");
    let out = h.ok(BIN, &["load", "-i", archive.to_str().unwrap()]);
    assert!(out.starts_with("docker.io/saved/app:2@sha256:"), "{out}");
    assert_eq!(
        h.ok(BIN, &["run", "--rm", "saved/app:2", "cat motd"]),
        "from the image\n"
    );
    assert_eq!(
        h.ok(BIN, &["images", "-q"]),
        "docker.io/local/app:tarred\ndocker.io/local/app:v1\ndocker.io/saved/app:2\n"
    );

    // Not an image: a clear error, nothing stored.
    let junk = h.home.join("junk.tar");
    std::fs::write(&junk, b"not a tar at all").unwrap();
    let err = fails(&h, &["load", "-i", junk.to_str().unwrap()]);
    assert!(
        err.contains(&format!("cannot load {}", junk.display())),
        "{err}"
    );
    let err = fails(&h, &["load", "-i", "/nonexistent/x"]);
    assert!(err.contains("cannot load /nonexistent/x"), "{err}");
    assert_eq!(h.ok(BIN, &["images", "-q"]).lines().count(), 3);
}

#[test]
fn login_credentials_reach_a_tls_registry_and_are_never_shown() {
    let reg = Registry::start_secure("agent", "s3cret-pw");
    let h = TestHome::new();
    let ca = reg.ca.clone().unwrap();
    // Settings from --config, with the CA beside it.
    let cfg = h.home.join("elsewhere.toml");
    std::fs::write(
        &cfg,
        format!(
            "[registries.\"{}\"]\nca_file = \"{}\"\n",
            reg.addr,
            ca.display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let r = format!("{}/private/app:v1", reg.addr);

    let anon = fails(&h, &["--config", cfg, "pull", &r]);
    assert!(
        anon.contains(&format!("authentication failed for registry {}", reg.addr)),
        "{anon}"
    );

    let login = |secret: &str| {
        let mut child = h
            .cli(BIN)
            .args(["login", "--username", "agent", &reg.addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(secret.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = login("wrong-pw\n");
    assert!(out.status.success(), "{out:?}");
    let wrong = fails(&h, &["--config", cfg, "pull", &r]);
    assert!(
        wrong.contains(&format!("authentication failed for registry {}", reg.addr)),
        "{wrong}"
    );
    assert!(!wrong.contains("wrong-pw"), "{wrong}");

    assert!(login("s3cret-pw\n").status.success());
    let auth = h.home.join("auth.json");
    assert_eq!(
        std::fs::metadata(&auth).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Authenticated now: the registry answers that the image does not exist.
    let missing = fails(&h, &["--config", cfg, "pull", &r]);
    assert!(
        missing.contains("was not found in its registry"),
        "{missing}"
    );
    // Without the CA the TLS handshake fails, and says so.
    let no_ca = fails(&h, &["pull", &r]);
    assert!(!no_ca.contains("authentication failed"), "{no_ca}");
    for text in [&missing, &no_ca] {
        assert!(!text.contains("s3cret-pw"), "{text}");
    }
    let log = std::fs::read_to_string(h.home.join("logs/boxlite.log")).unwrap_or_default();
    assert!(
        !log.contains("s3cret-pw") && !log.contains("wrong-pw"),
        "secret in the log"
    );

    // A missing --config file is an error that names it.
    let gone = fails(&h, &["--config", "/nonexistent/boxlite.toml", "pull", &r]);
    assert!(gone.contains("/nonexistent/boxlite.toml"), "{gone}");
    assert_eq!(
        h.ok(BIN, &["logout", &reg.addr]),
        format!("Removed login for {}\n", reg.addr)
    );
}

#[test]
fn bad_references_and_registries_fail_clearly_and_leave_nothing() {
    let reg = Registry::start();
    let h = TestHome::new();
    h.allow_http(&reg);
    let pushed = image();
    pushed.push(&reg, "cli/app", "1.0");

    let cases: Vec<(String, &str)> = vec![
        ("Not/A:Ref!".into(), "invalid image reference"),
        (
            format!("{}/cli/app:2.0", reg.addr),
            "was not found in its registry",
        ),
        (
            format!("{}/cli/nothing:1", reg.addr),
            "was not found in its registry",
        ),
        ("127.0.0.1:9/cli/app:1.0".into(), "is unreachable"),
    ];
    for (r, want) in &cases {
        let err = fails(&h, &["pull", r]);
        assert!(err.contains(want), "{r}: {err}");
        let err = fails(&h, &["run", "--rm", r, "true"]);
        assert!(err.contains(want), "run {r}: {err}");
    }

    // A manifest with a layer whose media type is not a layer's (its blobs exist).
    let mut odd: serde_json::Value = serde_json::from_slice(&pushed.manifest.data).unwrap();
    odd["layers"][0]["mediaType"] = "application/vnd.example.weird".into();
    let (status, _, _) = boxlite_testkit::oci::http(
        &reg.addr,
        "PUT",
        "/v2/cli/app/manifests/weird",
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        &serde_json::to_vec(&odd).unwrap(),
    );
    assert_eq!(status, 201);
    let err = fails(&h, &["pull", &format!("{}/cli/app:weird", reg.addr)]);
    assert!(
        err.contains("unsupported media type layer application/vnd.example.weird"),
        "{err}"
    );

    assert_eq!(h.ok(BIN, &["images", "-q"]), "");
    assert_eq!(h.ok(BIN, &["ls", "-aq"]), "");
    let blobs = h.home.join("images/blobs/sha256");
    let n = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(n, 0, "no blob kept from failed pulls");
}

#[test]
fn builtin_images_are_ordinary_store_entries_and_python_runs() {
    let h = TestHome::new();
    assert_eq!(
        h.ok(
            BIN,
            &[
                "run",
                "--rm",
                "boxlite/python",
                "python3",
                "-c",
                "print(2**100)"
            ]
        ),
        format!("{}\n", 2u128.pow(100))
    );
    // No command: the image's default, python3, reading the program from stdin.
    let mut child = h
        .cli(BIN)
        .args(["run", "--rm", "-i", "boxlite/python"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"import sys; print(sys.version_info[0])\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3\n");
    assert_eq!(h.ok(BIN, &["images", "-q"]), "boxlite/python:latest\n");
    h.ok(BIN, &["run", "--rm", "boxlite/busybox", "true"]);
    let listed = h.ok(BIN, &["images", "-q"]);
    assert_eq!(listed, "boxlite/busybox:latest\nboxlite/python:latest\n");
    // Removed like any other, and imported again from the assets on next use.
    let removed = h.ok(BIN, &["rmi", "boxlite/python"]);
    assert!(
        removed.contains("Untagged: boxlite/python:latest"),
        "{removed}"
    );
    assert_eq!(h.ok(BIN, &["images", "-q"]), "boxlite/busybox:latest\n");
    assert_eq!(
        h.ok(
            BIN,
            &["run", "--rm", "boxlite/python", "python3", "-c", "print(1)"]
        ),
        "1\n"
    );
}

#[test]
fn concurrent_pulls_succeed_with_one_copy_and_a_corrupt_blob_is_fetched_again() {
    let reg = Registry::start();
    let digest = image().push(&reg, "cli/app", "1.0");
    let h = TestHome::new();
    h.allow_http(&reg);
    let r = format!("{}/cli/app:1.0", reg.addr);

    let pulls: Vec<_> = (0..2)
        .map(|_| {
            h.cli(BIN)
                .args(["pull", "-q", &r])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in pulls {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{r}@{digest}\n")
        );
    }
    let count = |dir: &str| {
        std::fs::read_dir(h.home.join(dir))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(count("images/bases"), 1);
    assert_eq!(
        count("images/blobs/sha256"),
        4,
        "manifest, config, two layers"
    );
    assert_eq!(count("images/blobs/tmp"), 0);
    assert_eq!(count("images/tmp"), 0);

    // One flipped byte in a layer, and the base gone: the next pull notices, fetches the
    // layer again and builds from good data.
    let layer = image().layers[0].digest.clone();
    let path = h.home.join("images/blobs/sha256").join(&layer[7..]);
    let mut data = std::fs::read(&path).unwrap();
    data[100] ^= 1;
    std::fs::write(&path, &data).unwrap();
    for e in std::fs::read_dir(h.home.join("images/bases")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    h.ok(BIN, &["pull", "-q", &r]);
    assert_ne!(
        std::fs::read(&path).unwrap(),
        data,
        "the corrupt copy was replaced"
    );
    assert_eq!(
        h.ok(BIN, &["run", "--rm", &r, "cat motd"]),
        "from the image\n"
    );
}

/// Start `boxlite pull -q REFERENCE` and SIGKILL it as soon as `now()` holds; whether
/// it was killed (rather than finishing first).
fn pull_killed_when(h: &TestHome, reference: &str, now: impl Fn() -> bool) -> bool {
    let mut child = h
        .cli(BIN)
        .args(["pull", "-q", reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut killed = false;
    while started.elapsed() < std::time::Duration::from_secs(120) {
        if now() {
            child.kill().unwrap();
            killed = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = child.wait();
    killed
}

#[test]
fn a_pull_killed_mid_download_or_mid_build_leaves_nothing_trusted_and_the_next_pull_completes() {
    let reg = Registry::start();
    // 96 MiB that does not compress: a download long enough to interrupt.
    let mut big = vec![0u8; 96 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let img = TestImage::new(
        vec![
            (busybox_layer(), Comp::Gzip),
            (
                Layer::new().file("srv/big", 0o644, (0, 0), &big),
                Comp::None,
            ),
        ],
        serde_json::json!({"Cmd": ["/bin/sh"]}),
    );
    drop(big);
    img.push(&reg, "cli/big", "1");
    let h = TestHome::new();
    h.allow_http(&reg);
    let r = format!("{}/cli/big:1", reg.addr);
    let layer = h
        .home
        .join("images/blobs/sha256")
        .join(&img.layers[1].digest[7..]);
    let tmp = h.home.join("images/blobs/tmp");

    let killed_mid_download = pull_killed_when(&h, &r, || {
        let partial = std::fs::read_dir(&tmp)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.metadata().map(|m| m.len() > (1 << 20)).unwrap_or(false));
        partial && !layer.exists()
    });
    assert!(
        killed_mid_download,
        "the pull finished before it could be interrupted"
    );
    assert!(!layer.exists(), "no half-downloaded layer under its digest");
    assert!(
        h.ok(BIN, &["images", "-q"]).is_empty(),
        "no reference to a half-pulled image"
    );

    // Killed while the root filesystem is being written: mke2fs goes with it, and
    // nothing half-built is trusted.
    let builds = h.home.join("images/tmp");
    let killed_mid_build = pull_killed_when(&h, &r, || {
        std::fs::read_dir(&builds)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("rootfs.ext4").exists())
    });
    assert!(
        killed_mid_build,
        "the build finished before it could be interrupted"
    );
    let home = h.home.display().to_string();
    let mut left = String::new();
    for _ in 0..100 {
        left = String::from_utf8(
            std::process::Command::new("pgrep")
                .args(["-fa", &home])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(left, "", "no process of the killed build is left");
    assert!(
        std::fs::read_dir(h.home.join("images/bases"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "no base from a killed build"
    );
    assert!(h.ok(BIN, &["images", "-q"]).is_empty());

    h.ok(BIN, &["pull", "-q", &r]);
    assert_eq!(
        std::fs::read_dir(&builds).unwrap().count(),
        0,
        "the next command swept the killed build"
    );
    assert_eq!(
        h.ok(BIN, &["run", "--rm", &r, "wc", "-c", "/srv/big"]),
        format!("{} /srv/big\n", 96 << 20)
    );
    // The killed pull's temporary file goes with a prune; the image stays.
    assert!(std::fs::read_dir(&tmp).unwrap().count() > 0);
    h.ok(BIN, &["image", "prune"]);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    assert_eq!(h.ok(BIN, &["images", "-q"]), format!("{r}\n"));
}
