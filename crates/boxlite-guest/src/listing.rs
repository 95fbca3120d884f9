//! `ListDir`: one directory of the container root, described entry by entry.
//!
//! The directory is opened with `RESOLVE_IN_ROOT`, so links and `..` on the way mean
//! what they mean inside the container and nothing reaches the agent's own filesystem;
//! a link naming the directory itself is followed, as `ls /link/` does. Its entries are
//! then described relative to that open directory with `fstatat(AT_SYMLINK_NOFOLLOW)`
//! and `readlinkat`, so a link is reported and never followed, and a rename of the
//! directory halfway changes nothing.
//!
//! Memory stays bounded whatever the directory holds: only the first `max_entries`
//! names (by bytes) are kept while it is read, and the reply stops short of a size
//! bound well under the gRPC message limit.

use std::collections::BinaryHeap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use boxlite_archive::Resolve;
use boxlite_archive::fs::{fstat, lstat_at, open_at, readlink_at};
use boxlite_protocol::v1;
use tonic::Status;

/// Entries sent when the request asks for 0.
const DEFAULT_ENTRIES: usize = 1000;
/// The most entries one reply carries, whatever is asked.
const MAX_ENTRIES: usize = 10_000;
/// The reply's size bound, under the 4 MiB message limit with room to spare.
const REPLY_BUDGET: usize = 3 << 20;
/// What one entry costs in the reply besides its name and link target: the fixed
/// fields with their tags and lengths, rounded up.
const ENTRY_OVERHEAD: usize = 64;

/// List `path` (absolute, in the container root `root`): at most `max_entries` entries
/// (0: the default), sorted by name.
pub fn list(root: &OwnedFd, path: &str, max_entries: u32) -> Result<v1::ListDirResponse, Status> {
    list_bounded(root, path, max_entries, REPLY_BUDGET)
}

fn list_bounded(
    root: &OwnedFd,
    path: &str,
    max_entries: u32,
    budget: usize,
) -> Result<v1::ListDirResponse, Status> {
    if !path.starts_with('/') {
        return Err(Status::invalid_argument(format!(
            "path {path:?} to list must be absolute"
        )));
    }
    let cap = match usize::try_from(max_entries) {
        Ok(0) => DEFAULT_ENTRIES,
        Ok(n) => n.min(MAX_ENTRIES),
        Err(_) => MAX_ENTRIES,
    };
    let dir = open_dir(root.as_fd(), path)?;
    let (names, mut truncated) = first_names(&dir, path, cap)?;
    let mut entries = Vec::with_capacity(names.len());
    let mut used = 0usize;
    for name in names {
        let Some(entry) = describe(dir.as_fd(), name) else {
            continue;
        };
        used += ENTRY_OVERHEAD + entry.name.len() + entry.link_target.len();
        if used > budget {
            truncated = true;
            break;
        }
        entries.push(entry);
    }
    Ok(v1::ListDirResponse { entries, truncated })
}

/// Open `path` as a directory inside the root, with a status that says what is wrong
/// when it cannot be listed.
fn open_dir(root: BorrowedFd<'_>, path: &str) -> Result<OwnedFd, Status> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    let err = match open_at(root, path.as_bytes(), flags, Resolve::InRoot) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    Err(match err.raw_os_error() {
        Some(libc::ENOENT) => Status::not_found(format!("{path:?} does not exist in the box")),
        Some(libc::ENOTDIR) => not_a_dir(root, path),
        Some(libc::EACCES | libc::EPERM) => {
            Status::permission_denied(format!("{path:?} in the box: {err}"))
        }
        Some(libc::ELOOP | libc::ENAMETOOLONG) | None => {
            Status::invalid_argument(format!("{path:?} in the box: {err}"))
        }
        Some(_) => Status::internal(format!("opening {path:?} in the box: {err}")),
    })
}

/// Why `path` (which failed to open as a directory with `ENOTDIR`) is not one: itself
/// of another kind, or a component on the way.
fn not_a_dir(root: BorrowedFd<'_>, path: &str) -> Status {
    let st = open_at(root, path.as_bytes(), libc::O_PATH, Resolve::InRoot)
        .and_then(|fd| fstat(fd.as_fd()));
    match st {
        Ok(st) => Status::failed_precondition(format!(
            "{path:?} in the box is {}, not a directory",
            match st.st_mode & libc::S_IFMT {
                libc::S_IFREG => "a file",
                libc::S_IFIFO => "a FIFO",
                libc::S_IFSOCK => "a socket",
                libc::S_IFCHR | libc::S_IFBLK => "a device",
                _ => "something else",
            }
        )),
        Err(_) => Status::failed_precondition(format!(
            "a component of {path:?} in the box is not a directory"
        )),
    }
}

/// The first `cap` names of the open directory by bytes, ascending, and whether it
/// holds more. Only `cap` names are held at a time.
fn first_names(dir: &OwnedFd, path: &str, cap: usize) -> Result<(Vec<Vec<u8>>, bool), Status> {
    let failed = |e: std::io::Error| Status::internal(format!("reading {path:?} in the box: {e}"));
    // read_dir reopens what the descriptor names, which is the directory resolved
    // inside the root; `.` and `..` are left out.
    let it = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())).map_err(failed)?;
    let mut kept = BinaryHeap::with_capacity(cap.saturating_add(1));
    let mut more = false;
    for entry in it {
        kept.push(entry.map_err(failed)?.file_name().as_bytes().to_vec());
        if kept.len() > cap {
            kept.pop();
            more = true;
        }
    }
    Ok((kept.into_sorted_vec(), more))
}

fn kind_of(mode: libc::mode_t) -> v1::EntryKind {
    match mode & libc::S_IFMT {
        libc::S_IFREG => v1::EntryKind::File,
        libc::S_IFDIR => v1::EntryKind::Dir,
        libc::S_IFLNK => v1::EntryKind::Symlink,
        _ => v1::EntryKind::Other,
    }
}

/// One entry as lstat sees it; `None` if it went away since it was read. An entry that
/// cannot be examined otherwise is still listed, as `Other` with no details.
fn describe(dir: BorrowedFd<'_>, name: Vec<u8>) -> Option<v1::DirEntry> {
    let st = match lstat_at(dir, &name) {
        Ok(st) => st,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return None,
        Err(_) => {
            return Some(v1::DirEntry {
                name,
                kind: v1::EntryKind::Other.into(),
                ..Default::default()
            });
        }
    };
    let kind = kind_of(st.st_mode);
    let link_target = if kind == v1::EntryKind::Symlink {
        readlink_at(dir, &name).unwrap_or_default()
    } else {
        Vec::new()
    };
    Some(v1::DirEntry {
        name,
        kind: kind.into(),
        size: u64::try_from(st.st_size).unwrap_or(0),
        mode: st.st_mode & 0o7777,
        mtime: st.st_mtime,
        link_target,
        uid: st.st_uid,
        gid: st.st_gid,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::path::PathBuf;

    use super::*;

    /// A scratch directory standing in for a container root, removed on drop.
    struct Root(PathBuf);

    impl Root {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("bxg-ls-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Root(p)
        }
        fn fd(&self) -> OwnedFd {
            std::fs::File::open(&self.0).unwrap().into()
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn names(r: &v1::ListDirResponse) -> Vec<&[u8]> {
        r.entries.iter().map(|e| e.name.as_slice()).collect()
    }

    #[test]
    fn entries_are_sorted_and_described_without_following_links() {
        let root = Root::new("describe");
        std::fs::create_dir(root.0.join("d")).unwrap();
        std::fs::write(root.0.join("d/b.txt"), b"hello").unwrap();
        std::fs::set_permissions(
            root.0.join("d/b.txt"),
            std::fs::Permissions::from_mode(0o4751),
        )
        .unwrap();
        std::fs::create_dir(root.0.join("d/a")).unwrap();
        symlink("/etc/passwd", root.0.join("d/c")).unwrap();

        let r = list(&root.fd(), "/d", 0).unwrap();

        assert_eq!(names(&r), [&b"a"[..], b"b.txt", b"c"]);
        assert!(!r.truncated);
        let [a, b, c] = &r.entries[..] else {
            panic!("three entries")
        };
        assert_eq!(a.kind(), v1::EntryKind::Dir);
        assert_eq!((b.kind(), b.size, b.mode), (v1::EntryKind::File, 5, 0o4751));
        assert_eq!(c.kind(), v1::EntryKind::Symlink);
        assert_eq!(c.link_target, b"/etc/passwd");
        assert!(a.link_target.is_empty() && b.link_target.is_empty());
    }

    #[test]
    fn dot_dot_and_absolute_links_stay_inside_the_root() {
        let root = Root::new("inroot");
        std::fs::create_dir(root.0.join("inside")).unwrap();
        symlink("/", root.0.join("inside/up")).unwrap();

        let dotdot = list(&root.fd(), "/../../..", 0).unwrap();
        let via_link = list(&root.fd(), "/inside/up/", 0).unwrap();

        assert_eq!(names(&dotdot), [&b"inside"[..]]);
        assert_eq!(names(&via_link), [&b"inside"[..]]);
    }

    #[test]
    fn listing_stops_at_the_cap_and_says_so() {
        let root = Root::new("cap");
        for i in 0..30 {
            std::fs::write(root.0.join(format!("f{i:02}")), b"").unwrap();
        }

        let ten = list(&root.fd(), "/", 10).unwrap();
        let all = list(&root.fd(), "/", 30).unwrap();

        assert_eq!(ten.entries.len(), 10);
        assert_eq!(ten.entries[9].name, b"f09");
        assert!(ten.truncated);
        assert_eq!(all.entries.len(), 30);
        assert!(!all.truncated);
    }

    #[test]
    fn listing_stops_short_of_the_reply_budget() {
        let root = Root::new("budget");
        for i in 0..5 {
            std::fs::write(root.0.join(format!("{i}")), b"").unwrap();
        }

        let r = list_bounded(&root.fd(), "/", 0, 3 * (ENTRY_OVERHEAD + 1)).unwrap();

        assert_eq!(r.entries.len(), 3);
        assert!(r.truncated);
    }

    #[test]
    fn non_utf8_names_come_back_as_their_bytes() {
        let root = Root::new("bytes");
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9");
        std::fs::write(root.0.join(name), b"x").unwrap();

        let r = list(&root.fd(), "/", 0).unwrap();

        assert_eq!(names(&r), [&b"caf\xe9"[..]]);
    }

    #[test]
    fn bad_paths_get_typed_statuses() {
        let root = Root::new("errors");
        std::fs::write(root.0.join("file"), b"x").unwrap();

        let missing = list(&root.fd(), "/nope", 0).unwrap_err();
        let file = list(&root.fd(), "/file", 0).unwrap_err();
        let under_file = list(&root.fd(), "/file/x", 0).unwrap_err();
        let relative = list(&root.fd(), "file", 0).unwrap_err();

        assert_eq!(missing.code(), tonic::Code::NotFound);
        assert!(missing.message().contains("/nope"), "{}", missing.message());
        assert_eq!(file.code(), tonic::Code::FailedPrecondition);
        assert!(file.message().contains("is a file"), "{}", file.message());
        assert_eq!(under_file.code(), tonic::Code::FailedPrecondition);
        assert_eq!(relative.code(), tonic::Code::InvalidArgument);
    }
}
