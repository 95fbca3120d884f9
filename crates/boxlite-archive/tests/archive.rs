//! Pack and unpack against real directories: round trips keep names, modes, links and
//! contents; hostile archives are refused without writing outside the destination.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use boxlite_archive::{
    ArchiveError, Mapping, PackOptions, Resolve, UnpackOptions, fs, pack, unpack,
};

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!(
            "bxarch-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+rwx"])
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dirfd(p: &Path) -> OwnedFd {
    use std::os::unix::ffi::OsStrExt;
    fs::open_at(
        std::fs::File::open("/").unwrap().as_fd(),
        p.as_os_str().as_bytes(),
        libc::O_PATH | libc::O_DIRECTORY,
        Resolve::Normal,
    )
    .unwrap()
}

fn host_opts() -> UnpackOptions {
    UnpackOptions {
        resolve: Resolve::Beneath,
        mapping: Mapping::AsIs,
        overwrite: true,
        preserve_owner: false,
        keep_setid: false,
        allow_devices: false,
        allow_escaping_links: false,
        layer: false,
    }
}

fn tar_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        // Written raw: the builder's own path checks would refuse the hostile names.
        let name = h.as_old_mut();
        name.name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            name.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn listing(root: &Path) -> Vec<(String, u32, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else {
                format!("{:x?}", std::fs::read(&p).unwrap())
            };
            out.push((rel, m.mode() & 0o7777, what));
        }
    }
    out.sort();
    out
}

#[test]
fn round_trip_keeps_names_modes_links_and_contents() {
    let src = Tmp::new("src");
    let dst = Tmp::new("dst");
    let tree = src.0.join("tree");
    std::fs::create_dir_all(tree.join("sub dir/ünïcødé")).unwrap();
    std::fs::write(tree.join("sub dir/with\nnewline"), b"nl").unwrap();
    std::fs::write(tree.join("exec"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(tree.join("exec"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let long = "l".repeat(150);
    std::fs::write(tree.join("sub dir/ünïcødé").join(&long), vec![7u8; 100_000]).unwrap();
    std::os::unix::fs::symlink("../exec", tree.join("sub dir/link")).unwrap();
    std::fs::hard_link(tree.join("exec"), tree.join("hard")).unwrap();
    std::fs::set_permissions(tree.join("sub dir"), std::fs::Permissions::from_mode(0o555)).unwrap();

    let mut tarball = Vec::new();
    let n = pack(
        &mut tarball,
        dirfd(&src.0).as_fd(),
        b"tree",
        b"tree",
        Resolve::Beneath,
        &PackOptions::default(),
    )
    .unwrap();
    let summary = unpack(&tarball[..], dirfd(&dst.0).as_fd(), b"", &host_opts()).unwrap();

    assert_eq!(n, 8);
    assert_eq!(summary.entries, 8);
    assert_eq!(listing(&tree), listing(&dst.0.join("tree")));
    let a = std::fs::metadata(dst.0.join("tree/exec")).unwrap();
    let b = std::fs::metadata(dst.0.join("tree/hard")).unwrap();
    assert_eq!(a.ino(), b.ino(), "the hard link pair shares an inode");
}

#[test]
fn rename_top_puts_a_single_item_at_the_destination_name() {
    let src = Tmp::new("src");
    let dst = Tmp::new("dst");
    std::fs::write(src.0.join("a.txt"), b"hello").unwrap();
    let mut tarball = Vec::new();
    pack(
        &mut tarball,
        dirfd(&src.0).as_fd(),
        b"a.txt",
        b"a.txt",
        Resolve::Beneath,
        &PackOptions::default(),
    )
    .unwrap();
    let opts = UnpackOptions {
        mapping: Mapping::RenameTop(b"b.txt".to_vec()),
        ..host_opts()
    };

    unpack(&tarball[..], dirfd(&dst.0).as_fd(), b"", &opts).unwrap();

    assert_eq!(std::fs::read(dst.0.join("b.txt")).unwrap(), b"hello");
    assert!(!dst.0.join("a.txt").exists());
}

#[test]
fn dot_dot_and_absolute_entries_are_refused() {
    for bad in ["../../escaped", "a/../../escaped", "/tmp/escaped-abs"] {
        let outer = Tmp::new("outer");
        let dst = outer.0.join("dst");
        std::fs::create_dir(&dst).unwrap();
        let tarball = tar_of(&[(bad, tar::EntryType::Regular, b"x", None)]);

        let err = unpack(&tarball[..], dirfd(&dst).as_fd(), b"", &host_opts()).unwrap_err();

        assert!(matches!(err, ArchiveError::Refused { .. }), "{bad}: {err}");
        assert!(err.to_string().contains(bad), "{err}");
        assert_eq!(std::fs::read_dir(&outer.0).unwrap().count(), 1, "{bad}");
        assert!(!Path::new("/tmp/escaped-abs").exists());
    }
}

#[test]
fn a_write_through_a_planted_symlink_is_refused() {
    let outer = Tmp::new("outer");
    let dst = outer.0.join("dst");
    let victim = outer.0.join("victim");
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::create_dir_all(&victim).unwrap();
    // Even with escaping links allowed to be created, nothing resolves through them.
    let opts = UnpackOptions {
        allow_escaping_links: true,
        ..host_opts()
    };
    let target = victim.to_str().unwrap();
    let tarball = tar_of(&[
        ("etc", tar::EntryType::Symlink, b"", Some(target)),
        ("etc/passwd", tar::EntryType::Regular, b"owned", None),
    ]);

    let err = unpack(&tarball[..], dirfd(&dst).as_fd(), b"", &opts).unwrap_err();

    assert!(matches!(err, ArchiveError::Refused { .. }), "{err}");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
}

#[test]
fn escaping_symlinks_and_outside_hard_links_are_refused_on_the_host() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "absolute symlink",
            tar_of(&[("etc", tar::EntryType::Symlink, b"", Some("/etc"))]),
        ),
        (
            "climbing symlink",
            tar_of(&[("a/up", tar::EntryType::Symlink, b"", Some("../../x"))]),
        ),
        (
            "hard link to /etc/passwd",
            tar_of(&[("pw", tar::EntryType::Link, b"", Some("/etc/passwd"))]),
        ),
        (
            "hard link up",
            tar_of(&[(
                "pw",
                tar::EntryType::Link,
                b"",
                Some("../../../../etc/passwd"),
            )]),
        ),
        (
            "device node",
            tar_of(&[("sda", tar::EntryType::Block, b"", None)]),
        ),
    ];
    for (what, tarball) in cases {
        let outer = Tmp::new("outer");
        let dst = outer.0.join("dst");
        std::fs::create_dir(&dst).unwrap();

        let err = unpack(&tarball[..], dirfd(&dst).as_fd(), b"", &host_opts()).unwrap_err();

        assert!(matches!(err, ArchiveError::Refused { .. }), "{what}: {err}");
        let left: Vec<_> = std::fs::read_dir(&dst)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.iter().all(|n| n == "a"), "{what}: {left:?}");
    }
}

#[test]
fn setuid_bits_are_dropped_on_the_host_and_kept_when_asked() {
    let dst = Tmp::new("dst");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o4755);
    h.set_size(1);
    b.append_data(&mut h, "suid", &b"x"[..]).unwrap();
    let tarball = b.into_inner().unwrap();

    unpack(&tarball[..], dirfd(&dst.0).as_fd(), b"", &host_opts()).unwrap();
    let dropped = std::fs::metadata(dst.0.join("suid")).unwrap().mode() & 0o7777;
    let keep = UnpackOptions {
        keep_setid: true,
        ..host_opts()
    };
    unpack(&tarball[..], dirfd(&dst.0).as_fd(), b"", &keep).unwrap();
    let kept = std::fs::metadata(dst.0.join("suid")).unwrap().mode() & 0o7777;

    assert_eq!(dropped, 0o755);
    assert_eq!(kept, 0o4755);
}

#[test]
fn existing_files_are_kept_without_overwrite() {
    let dst = Tmp::new("dst");
    std::fs::write(dst.0.join("f"), b"old").unwrap();
    let tarball = tar_of(&[("f", tar::EntryType::Regular, b"new", None)]);
    let opts = UnpackOptions {
        overwrite: false,
        ..host_opts()
    };

    let err = unpack(&tarball[..], dirfd(&dst.0).as_fd(), b"", &opts).unwrap_err();

    assert!(matches!(err, ArchiveError::Exists { .. }), "{err}");
    assert_eq!(std::fs::read(dst.0.join("f")).unwrap(), b"old");
}

#[test]
fn a_huge_sparse_entry_is_refused_before_any_data() {
    let dst = Tmp::new("dst");
    // A GNU sparse header claiming 100 GiB.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(0);
    h.set_path("bomb").unwrap();
    h.as_gnu_mut().unwrap().realsize = *b"\x80\x00\x00\x00\x00\x00\x00\x19\x00\x00\x00\x00";
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &[][..]).unwrap();
    let tarball = b.into_inner().unwrap();

    let err = unpack(&tarball[..], dirfd(&dst.0).as_fd(), b"", &host_opts()).unwrap_err();

    assert!(
        matches!(err, ArchiveError::Refused { .. } | ArchiveError::Tar(_)),
        "{err}"
    );
    assert!(!dst.0.join("bomb").exists());
}

fn entry(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, mode: u32, data: &[u8]) {
    let mut h = header();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

/// A GNU header with owner root and time 0 filled in, as real archives have them.
fn header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

#[test]
fn layers_apply_whiteouts_opaque_dirs_owners_links_and_xattrs_exactly() {
    use tar::EntryType::{Directory, Regular};
    let root = Tmp::new("layers");
    let mut lower = tar::Builder::new(Vec::new());
    entry(&mut lower, "etc", Directory, 0o755, b"");
    entry(&mut lower, "etc/gone", Regular, 0o644, b"old");
    entry(&mut lower, "etc/kept", Regular, 0o644, b"kept");
    entry(&mut lower, "opt/dir/old1", Regular, 0o644, b"1");
    entry(&mut lower, "opt/dir/old2", Regular, 0o644, b"2");
    entry(
        &mut lower,
        "swap/inner",
        Regular,
        0o644,
        b"dir becomes file",
    );
    let lower = lower.into_inner().unwrap();
    let mut upper = tar::Builder::new(Vec::new());
    entry(&mut upper, "etc/.wh.gone", Regular, 0o644, b"");
    entry(&mut upper, "opt/dir/.wh..wh..opq", Regular, 0o644, b"");
    entry(&mut upper, "opt/dir/new", Regular, 0o644, b"new");
    entry(&mut upper, "swap", Regular, 0o600, b"now a file");
    let mut h = header();
    h.set_mode(0o4755);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_size(4);
    upper
        .append_pax_extensions([("SCHILY.xattr.user.origin", &b"layer2"[..])])
        .unwrap();
    upper
        .append_data(&mut h, "bin/suid", &b"\x7fELF"[..])
        .unwrap();
    let mut link = header();
    link.set_entry_type(tar::EntryType::Link);
    link.set_mode(0o4755);
    link.set_size(0);
    upper
        .append_link(&mut link, "bin/suid-hard", "bin/suid")
        .unwrap();
    let mut fifo = header();
    fifo.set_entry_type(tar::EntryType::Fifo);
    fifo.set_mode(0o600);
    fifo.set_size(0);
    upper
        .append_data(&mut fifo, "run/pipe", std::io::empty())
        .unwrap();
    let upper = upper.into_inner().unwrap();
    let fd = dirfd(&root.0);

    unpack(&lower[..], fd.as_fd(), b"", &UnpackOptions::image_layer()).unwrap();
    unpack(&upper[..], fd.as_fd(), b"", &UnpackOptions::image_layer()).unwrap();

    let p = |s: &str| root.0.join(s);
    assert!(!p("etc/gone").exists(), "whiteout removed the lower file");
    assert!(!p("etc/.wh.gone").exists(), "whiteouts are not files");
    assert_eq!(std::fs::read(p("etc/kept")).unwrap(), b"kept");
    let mut in_dir: Vec<_> = std::fs::read_dir(p("opt/dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    in_dir.sort();
    assert_eq!(
        in_dir,
        ["new"],
        "the opaque directory holds only the new content"
    );
    assert_eq!(std::fs::read(p("swap")).unwrap(), b"now a file");
    let suid = std::fs::metadata(p("bin/suid")).unwrap();
    assert_eq!(
        (suid.uid(), suid.gid(), suid.mode() & 0o7777),
        (1234, 5678, 0o4755)
    );
    assert_eq!(
        suid.ino(),
        std::fs::metadata(p("bin/suid-hard")).unwrap().ino()
    );
    assert!(
        std::fs::symlink_metadata(p("run/pipe"))
            .unwrap()
            .file_type()
            .is_fifo_like()
    );
    let mut value = [0u8; 16];
    let path = std::ffi::CString::new(p("bin/suid").to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer valid for its length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"user.origin".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    assert_eq!(&value[..usize::try_from(n).unwrap()], b"layer2");
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}

impl FifoLike for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}
