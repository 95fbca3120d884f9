//! Image layers applied inside a real VM: gzip and zstd decompression in the guest,
//! whiteouts and opaque directories, and exact ownership, modes and file types as
//! `stat` in the box reports them.

use std::time::Duration;

use boxlite::images::registry::Compression;
use boxlite::{BoxCommand, BoxOptions, LiteBox};
use boxlite_testkit::TestHome;

fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(1_700_000_000);
    h.set_size(0);
    h
}

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, owner: (u64, u64), data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, mode, owner.0, owner.1);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

async fn sh(b: &LiteBox, script: &str) -> String {
    let mut ex = b
        .exec(BoxCommand::new("sh").args(["-c", script]))
        .await
        .unwrap();
    let out = ex.take_stdout().unwrap().read_to_end().await.unwrap();
    let err = ex.take_stderr().unwrap().read_to_end().await.unwrap();
    assert!(
        ex.wait().await.unwrap().success(),
        "{script}: {}",
        String::from_utf8_lossy(&err)
    );
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_stack_with_whiteouts_opaque_dirs_and_exact_metadata_in_the_box() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    b.start().await.unwrap();

    let mut lower = tar::Builder::new(Vec::new());
    file(&mut lower, "opt/app/config", 0o644, (0, 0), b"lower");
    file(&mut lower, "opt/app/old-only", 0o644, (0, 0), b"x");
    file(&mut lower, "opt/doomed", 0o644, (0, 0), b"to be whited out");
    let lower = lower.into_inner().unwrap();
    let mut upper = tar::Builder::new(Vec::new());
    let mut opq = header(tar::EntryType::Regular, 0o644, 0, 0);
    upper
        .append_data(&mut opq, "opt/app/.wh..wh..opq", std::io::empty())
        .unwrap();
    file(&mut upper, "opt/app/config", 0o600, (0, 0), b"upper");
    let mut wh = header(tar::EntryType::Regular, 0o644, 0, 0);
    upper
        .append_data(&mut wh, "opt/.wh.doomed", std::io::empty())
        .unwrap();
    file(&mut upper, "opt/suid", 0o4755, (1234, 5678), b"#!/bin/sh\n");
    file(
        &mut upper,
        "etc/shadow",
        0o640,
        (0, 42),
        b"root:*::0:::::\n",
    );
    let mut link = header(tar::EntryType::Symlink, 0o777, 0, 0);
    upper.append_link(&mut link, "opt/link", "suid").unwrap();
    let mut hard = header(tar::EntryType::Link, 0o4755, 1234, 5678);
    upper
        .append_link(&mut hard, "opt/hard", "opt/suid")
        .unwrap();
    let mut fifo = header(tar::EntryType::Fifo, 0o620, 7, 8);
    upper
        .append_data(&mut fifo, "opt/fifo", std::io::empty())
        .unwrap();
    let upper = upper.into_inner().unwrap();
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&lower).unwrap();
        e.finish().unwrap()
    };
    let zst =
        ruzstd::encoding::compress_to_vec(&upper[..], ruzstd::encoding::CompressionLevel::Fastest);

    let l1 = b
        .apply_layer(std::io::Cursor::new(gz), Compression::Gzip, "sha256:lower")
        .await
        .unwrap();
    let l2 = b
        .apply_layer(std::io::Cursor::new(zst), Compression::Zstd, "sha256:upper")
        .await
        .unwrap();
    let listing = sh(&b, "ls -A /opt/app; ls /opt/doomed 2>&1 >/dev/null | wc -l").await;
    let stats = sh(
        &b,
        "cd /opt && stat -c '%n %u %g %a %F' suid etc 2>/dev/null; stat -c '%n %u %g %a %F' /etc/shadow link fifo; stat -c %i suid hard; readlink link; cat app/config",
    )
    .await;
    let garbage = b
        .apply_layer(
            std::io::Cursor::new(b"not gzip".to_vec()),
            Compression::Gzip,
            "sha256:bad",
        )
        .await
        .unwrap_err();

    assert_eq!(
        (l1.entries, l2.entries),
        (3, 6),
        "whiteouts are not entries"
    );
    assert_eq!(
        listing, "config\n1\n",
        "opaque dir keeps only the new file; doomed is gone"
    );
    let lines: Vec<&str> = stats.lines().collect();
    assert_eq!(lines[0], "suid 1234 5678 4755 regular file");
    assert_eq!(lines[1], "/etc/shadow 0 42 640 regular file");
    assert_eq!(lines[2], "link 0 0 777 symbolic link");
    assert_eq!(lines[3], "fifo 7 8 620 fifo");
    assert_eq!(lines[4], lines[5], "hard links share an inode");
    assert_eq!(lines[6], "suid");
    assert_eq!(lines[7], "upper");
    let text = boxlite::error_chain(&garbage);
    assert!(text.contains("layer sha256:bad"), "{text}");
    b.stop(Duration::from_secs(10)).await.unwrap();
    rt.remove(&b, false).await.unwrap();
}
