//! `--user`, resolved against the image's passwd and group files, against a real VM.

use boxlite_testkit::TestHome;

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

#[test]
fn user_flag_resolves_names_ids_and_supplementary_groups_like_docker() {
    let h = TestHome::new();
    h.ok(BIN, &["run", "-d", "--name", "u", "boxlite/busybox"]);
    h.ok(
        BIN,
        &[
            "exec",
            "u",
            "sh",
            "-c",
            "echo 'alice:x:1001:1001::/home/alice:/bin/sh' >> /etc/passwd; \
         echo 'alice:x:1001:' >> /etc/group; echo 'staff:x:50:alice' >> /etc/group",
        ],
    );

    let nobody = h.ok(BIN, &["exec", "-u", "nobody", "u", "id"]);
    let numeric = h.ok(BIN, &["exec", "-u", "1234:5678", "u", "id"]);
    let root = h.ok(BIN, &["exec", "-u", "root", "u", "id"]);
    let alice = h.ok(
        BIN,
        &["exec", "--user", "alice", "u", "sh", "-c", "id; echo $HOME"],
    );
    let unknown = h.run(BIN, &["exec", "-u", "mallory", "u", "id"]);

    assert_eq!(
        nobody,
        "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n"
    );
    assert_eq!(numeric, "uid=1234 gid=5678 groups=5678\n");
    assert_eq!(root, "uid=0(root) gid=0(root) groups=0(root)\n");
    assert_eq!(
        alice,
        "uid=1001(alice) gid=1001(alice) groups=50(staff),1001(alice)\n/home/alice\n"
    );
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(125));
    assert!(
        err.contains("user \"mallory\" not found in the image's /etc/passwd"),
        "{err}"
    );
    h.ok(BIN, &["rm", "-f", "u"]);
}
