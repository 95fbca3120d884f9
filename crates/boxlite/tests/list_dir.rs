//! `LiteBox::list_dir` against a real VM: what each entry says, links resolved inside the
//! container root, truncation, odd names and typed errors. One box serves every case:
//! none of them changes what another sees.

use std::time::Duration;

use boxlite::{BoxCommand, BoxOptions, DirEntry, DirListing, EntryKind, ErrorKind, LiteBox};
use boxlite_testkit::{TestHome, stdout_ok};

const SETUP: &str = r#"
set -e
mkdir -p /t/sub /t/many
printf hello > /t/file
# chown clears setuid, so it goes first.
chown 123:456 /t/file
chmod 4751 /t/file
touch -t 202001010000 /t/file
ln -s /etc/passwd /t/link
ln -s / /t/up
ln -s / /tmp/rootlink
touch /marker-in-container-root
for i in $(seq -w 1 30); do : > /t/many/f$i; done
touch "/t/$(printf 'caf\351')"
"#;

fn entry<'a>(l: &'a DirListing, name: &str) -> &'a DirEntry {
    l.entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no {name:?} in {l:?}"))
}

fn names(l: &DirListing) -> Vec<&str> {
    l.entries.iter().map(|e| e.name.as_str()).collect()
}

async fn entries_are_described_as_lstat_sees_them(b: &LiteBox) {
    let l = b.list_dir("/t", 0).await.unwrap();

    assert_eq!(
        names(&l),
        ["caf\u{fffd}", "file", "link", "many", "sub", "up"]
    );
    assert!(!l.truncated);
    assert_eq!(l.path, "/t");
    let file = entry(&l, "file");
    assert_eq!(file.kind, EntryKind::File);
    assert_eq!((file.size, file.mode), (5, 0o4751));
    assert_eq!((file.uid, file.gid), (123, 456));
    assert_eq!(file.mtime, 1_577_836_800);
    assert_eq!(file.link_target, None);
    assert_eq!(entry(&l, "sub").kind, EntryKind::Dir);
    let link = entry(&l, "link");
    assert_eq!(link.kind, EntryKind::Symlink);
    assert_eq!(link.link_target.as_deref(), Some("/etc/passwd"));
    assert_eq!(link.size, "/etc/passwd".len() as u64);
    let up = entry(&l, "up");
    assert_eq!(up.kind, EntryKind::Symlink);
    assert_eq!(up.link_target.as_deref(), Some("/"));
    assert_eq!(entry(&l, "caf\u{fffd}").kind, EntryKind::File);
}

async fn links_and_dot_dot_resolve_inside_the_container_root(b: &LiteBox) {
    let root = b.list_dir("/", 0).await.unwrap();
    let via_link = b.list_dir("/tmp/rootlink", 0).await.unwrap();
    let via_dotdot = b.list_dir("/t/../../../../..", 0).await.unwrap();
    let via_link_dotdot = b.list_dir("/t/up/../..", 0).await.unwrap();

    assert!(names(&root).contains(&"marker-in-container-root"));
    // The agent's own root (the initramfs) has /init and the container's /rootfs.
    assert!(!names(&root).contains(&"init") && !names(&root).contains(&"rootfs"));
    assert_eq!(via_link.entries, root.entries);
    assert_eq!(via_dotdot.entries, root.entries);
    assert_eq!(via_link_dotdot.entries, root.entries);
}

async fn listing_stops_at_max_entries_and_says_so(b: &LiteBox) {
    let ten = b.list_dir("/t/many", 10).await.unwrap();
    let all = b.list_dir("/t/many", 30).await.unwrap();

    assert_eq!(ten.entries.len(), 10);
    assert_eq!(ten.entries[0].name, "f01");
    assert_eq!(ten.entries[9].name, "f10");
    assert!(ten.truncated);
    assert_eq!(all.entries.len(), 30);
    assert!(!all.truncated);
}

async fn bad_paths_are_typed_errors(b: &LiteBox) {
    let missing = b.list_dir("/no/such/dir", 0).await.unwrap_err();
    let file = b.list_dir("/t/file", 0).await.unwrap_err();
    let relative = b.list_dir("t", 0).await.unwrap_err();

    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    assert!(missing.to_string().contains("/no/such/dir"), "{missing}");
    assert_eq!(file.kind(), ErrorKind::InvalidArgument, "{file}");
    assert!(file.to_string().contains("is a file"), "{file}");
    assert_eq!(relative.kind(), ErrorKind::InvalidArgument, "{relative}");
    assert!(relative.to_string().contains("absolute"), "{relative}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_dir_describes_entries_inside_the_container_root_with_typed_errors() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    b.start().await.unwrap();
    stdout_ok(&b, BoxCommand::new("sh").args(["-c", SETUP])).await;

    entries_are_described_as_lstat_sees_them(&b).await;
    links_and_dot_dot_resolve_inside_the_container_root(&b).await;
    listing_stops_at_max_entries_and_says_so(&b).await;
    bad_paths_are_typed_errors(&b).await;

    b.stop(Duration::from_secs(10)).await.unwrap();
    rt.remove(&b, false).await.unwrap();
}
