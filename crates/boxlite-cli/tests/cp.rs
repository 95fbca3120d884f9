//! `boxlite cp` against real VMs: trees with odd names survive a round trip, copies land
//! on the mount the user looks at, bad destinations are clear errors, and what comes out
//! of a box cannot write outside the destination.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use boxlite_testkit::TestHome;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

/// (kind, mode, content hash or link target) of every entry below `root`.
fn describe(root: &Path) -> BTreeMap<PathBuf, (String, u32, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let entry = if m.file_type().is_symlink() {
                (
                    "link".into(),
                    0,
                    std::fs::read_link(&p).unwrap().display().to_string(),
                )
            } else if m.is_dir() {
                stack.push(p.clone());
                ("dir".into(), m.mode() & 0o7777, String::new())
            } else {
                let hash = hex(&Sha256::digest(std::fs::read(&p).unwrap()));
                ("file".into(), m.mode() & 0o7777, hash)
            };
            out.insert(rel, entry);
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// 1,000 files in ten directories, with spaces, unicode and newlines in names, five
/// different modes, and relative symlinks.
fn make_tree(root: &Path) {
    let modes = [0o644, 0o600, 0o755, 0o640, 0o700];
    for d in 0..10 {
        let dir = root.join(format!("dir {d} ünï"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            let name = match f % 4 {
                0 => format!("plain{f}"),
                1 => format!("with space {f}.txt"),
                2 => format!("ç€ñ✓ {f}"),
                _ => format!("new\nline{f}"),
            };
            let p = dir.join(name);
            let body: Vec<u8> = (0..(f * 37 + d) % 3000)
                .map(|i| u8::try_from((i * 7 + f + d) % 256).unwrap())
                .collect();
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(modes[f % 5])).unwrap();
        }
        std::os::unix::fs::symlink(
            format!("../dir {} ünï/plain0", (d + 1) % 10),
            dir.join("link to next"),
        )
        .unwrap();
    }
    std::fs::set_permissions(
        root.join("dir 3 ünï"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
}

fn tmpdir(h: &TestHome, name: &str) -> PathBuf {
    let p = h.home.join("host").join(name);
    std::fs::create_dir_all(&p).unwrap();
    p
}

#[test]
fn a_tree_of_a_thousand_odd_files_round_trips_with_identical_checksums_and_modes() {
    let h = TestHome::new();
    h.ok(BIN, &["run", "-d", "--name", "cp", "boxlite/busybox"]);
    let src = tmpdir(&h, "src").join("tree");
    make_tree(&src);
    let back = tmpdir(&h, "back");

    h.ok(BIN, &["cp", src.to_str().unwrap(), "cp:/root"]);
    let in_box = h.ok(BIN, &["exec", "cp", "sh", "-c", "find /root/tree -type f -print0 | tr -cd '\\0' | wc -c; stat -c %a '/root/tree/dir 3 ünï'"]);
    h.ok(BIN, &["cp", "cp:/root/tree", back.to_str().unwrap()]);

    assert_eq!(
        in_box.split_whitespace().collect::<Vec<_>>(),
        ["1000", "750"]
    );
    let (a, b) = (describe(&src), describe(&back.join("tree")));
    assert_eq!(a.len(), 1000 + 10 + 10);
    assert_eq!(a, b);
    h.ok(BIN, &["rm", "-f", "cp"]);
}

#[test]
fn copies_land_on_a_guest_tmpfs_and_bad_destinations_are_clear_errors() {
    let h = TestHome::new();
    // Privileged, to mount: the tmpfs is then in the container's mount namespace only,
    // and copies reach it through the container's root.
    h.ok(
        BIN,
        &[
            "run",
            "-d",
            "--privileged",
            "--name",
            "dst",
            "boxlite/busybox",
        ],
    );
    let file = tmpdir(&h, "f").join("note.txt");
    std::fs::write(&file, b"on tmpfs\n").unwrap();
    let f = file.to_str().unwrap();

    h.ok(
        BIN,
        &["exec", "dst", "mount", "-t", "tmpfs", "tmpfs", "/tmp"],
    );
    h.ok(BIN, &["cp", f, "dst:/tmp/"]);
    h.ok(BIN, &["cp", f, "dst:/tmp/renamed.txt"]);
    let seen = h.ok(
        BIN,
        &[
            "exec",
            "dst",
            "sh",
            "-c",
            "grep ' /tmp ' /proc/mounts | cut -d' ' -f3; cat /tmp/note.txt /tmp/renamed.txt",
        ],
    );
    let missing_parent = h.run(BIN, &["cp", f, "dst:/nope/x.txt"]);
    let missing_dir = h.run(BIN, &["cp", f, "dst:/nope/"]);
    let relative = h.run(BIN, &["cp", f, "dst:tmp/x"]);
    let missing_src = h.run(BIN, &["cp", "/no/such/file", "dst:/tmp"]);
    let missing_in_box = h.run(
        BIN,
        &["cp", "dst:/no/such", tmpdir(&h, "o").to_str().unwrap()],
    );

    assert_eq!(seen, "tmpfs\non tmpfs\non tmpfs\n");
    for (out, needle) in [
        (
            &missing_parent,
            "\"/nope\" of \"/nope/x.txt\" does not exist in the box",
        ),
        (&missing_dir, "\"/nope/\" does not exist in the box"),
        (&relative, "must be absolute"),
        (&missing_src, "/no/such/file"),
        (&missing_in_box, "\"/no/such\" does not exist in the box"),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    let listing = h.ok(BIN, &["exec", "dst", "ls", "/"]);
    assert!(!listing.contains("nope"), "{listing}");
    h.ok(BIN, &["rm", "-f", "dst"]);
}

#[test]
fn hostile_files_in_a_box_cannot_write_outside_the_copy_destination() {
    let h = TestHome::new();
    h.ok(BIN, &["run", "-d", "--name", "evil", "boxlite/busybox"]);
    h.ok(
        BIN,
        &["exec", "evil", "sh", "-c", "mkdir -p /loot/a && echo x > /loot/a/file && ln -s /etc /loot/etc && mkdir /up && ln -s ../../../../../../etc /up/rel"],
    );
    let dest = tmpdir(&h, "dest");
    let before_etc = describe(Path::new("/etc")).len();

    let abs = h.run(
        BIN,
        &["cp", "evil:/loot", dest.join("loot").to_str().unwrap()],
    );
    let rel = h.run(BIN, &["cp", "evil:/up", dest.to_str().unwrap()]);

    for (out, needle) in [
        (&abs, "\"/etc\" is absolute"),
        (&rel, "leads outside the destination"),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    // Refused copies leave nothing behind: not even the part before the bad entry.
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    assert_eq!(describe(Path::new("/etc")).len(), before_etc);
    h.ok(BIN, &["rm", "-f", "evil"]);
}

fn raw_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        let mut hdr = [0u8; 512];
        hdr[..name.len()].copy_from_slice(name.as_bytes());
        hdr[100..108].copy_from_slice(b"0000644\0");
        hdr[108..116].copy_from_slice(b"0000000\0");
        hdr[116..124].copy_from_slice(b"0000000\0");
        hdr[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        hdr[136..148].copy_from_slice(b"00000000000\0");
        hdr[156] = b'0';
        hdr[257..263].copy_from_slice(b"ustar\0");
        hdr[263..265].copy_from_slice(b"00");
        hdr[148..156].copy_from_slice(b"        ");
        let sum: u32 = hdr.iter().map(|b| *b as u32).sum();
        hdr[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&hdr);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn tar_streams_go_in_and_out_and_a_climbing_entry_is_refused_in_the_box() {
    let h = TestHome::new();
    h.ok(BIN, &["run", "-d", "--name", "tars", "boxlite/busybox"]);
    h.ok(BIN, &["exec", "tars", "mkdir", "-p", "/in/deep"]);
    let send = |tar: Vec<u8>| {
        let mut c = h.cli(BIN);
        c.args(["cp", "-", "tars:/in/deep"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(&tar).unwrap();
        child.wait_with_output().unwrap()
    };

    let good = send(raw_tar(&[("a.txt", b"alpha"), ("sub/b.txt", b"beta")]));
    let bad = send(raw_tar(&[("../../escaped", b"gotcha")]));
    let out = h
        .cli(BIN)
        .args(["cp", "tars:/in/deep/sub/b.txt", "-"])
        .output()
        .unwrap();
    let in_box = h.ok(
        BIN,
        &[
            "exec",
            "tars",
            "sh",
            "-c",
            "cat /in/deep/a.txt /in/deep/sub/b.txt; ls /escaped /in/escaped 2>&1 | wc -l",
        ],
    );

    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(125), "{err}");
    assert!(err.contains("\"../../escaped\" is refused"), "{err}");
    assert!(out.status.success());
    let names: Vec<_> = tar::Archive::new(&out.stdout[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["b.txt"]);
    assert!(out.stdout.windows(4).any(|w| w == b"beta"));
    assert_eq!(
        in_box, "alphabeta2\n",
        "both ls calls failed: nothing escaped"
    );
    h.ok(BIN, &["rm", "-f", "tars"]);
}
