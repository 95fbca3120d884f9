//! Files the agent gives the container without changing its image: the network's
//! `/etc/resolv.conf` and `/etc/hosts` ([`crate::net`]), the CA bundles ([`crate::trust`]).
//!
//! They are written to a small tmpfs in the agent's namespace (a staging directory per
//! concern) and bind-mounted over the container's paths, as Docker does for
//! `resolv.conf`. Those paths come from the image, so they are resolved inside the
//! container root (`openat2` with `RESOLVE_IN_ROOT`) as for volume mount points: an image
//! symlink leads where it would for a process in the box, never out of the root. The
//! mount goes onto the resolved file through `/proc/self/fd`, so nothing can swap the
//! path between the check and the mount. Mounts last as long as the VM; the image's
//! disk never changes, so nothing piles up across restarts.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("preparing {path}")]
    Staging {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("resolving {path} in the container root")]
    Target {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} in the container root is a {kind}, not a regular file; it is left as it is")]
    NotRegular { path: String, kind: &'static str },
    #[error("mounting the generated {path} over the container's")]
    Mount {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Mount a tmpfs of `size` (a tmpfs size, such as `1m`) at `dir`, created if missing:
/// what the box writes to the files is bounded.
pub fn mount_tmpfs(dir: &Path, size: &str) -> Result<(), StagingError> {
    let err = |source| StagingError::Staging {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(err)?;
    sys::mount(
        "tmpfs",
        dir,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(&format!("size={size},mode=0755")),
    )
    .map_err(err)
}

/// Write `contents` to `staging/name`, mode 0644, and return it open. An existing file
/// is rewritten in place, so every mount of it shows the new contents.
pub fn write(staging: &Path, name: &str, contents: &[u8]) -> Result<fs::File, StagingError> {
    let staged = staging.join(name);
    let err = |source| StagingError::Staging {
        path: staged.clone(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&staged)
        .map_err(err)?;
    // The mode is what the box sees; the agent's umask must not narrow it.
    f.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(err)?;
    f.write_all(contents).map_err(err)?;
    Ok(f)
}

/// Bind-mount the staged `file` over `target`, a file of the container root opened by
/// [`target_in_root`] or [`existing_in_root`]; `path` names it in errors. The bind
/// mount keeps the tmpfs's `nosuid,nodev,noexec`; the box may rewrite the file in place,
/// as with Docker's `resolv.conf`.
pub fn bind(file: &fs::File, target: &OwnedFd, path: &str) -> Result<(), StagingError> {
    let via = |fd: &dyn AsRawFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
    sys::mount(&via(file), Path::new(&via(target)), "", libc::MS_BIND, None).map_err(|source| {
        StagingError::Mount {
            path: path.to_string(),
            source,
        }
    })
}

/// Write `contents` to `staging/name` and bind-mount it over `path` (absolute) inside
/// `root`, creating the container's file if missing (see [`target_in_root`]).
pub fn publish(
    root: &Path,
    staging: &Path,
    name: &str,
    contents: &[u8],
    path: &str,
) -> Result<(), StagingError> {
    let f = write(staging, name, contents)?;
    let target = target_in_root(root, path)?;
    bind(&f, &target, path)
}

/// The file `path` (absolute, without `.` or `..`) of the container root `root`,
/// resolved inside the root and opened, ready to be mounted over. A missing file is
/// created empty (see [`create_in_root`]); anything but a regular file (a directory, a
/// device, a fifo) is refused, and left alone.
pub fn target_in_root(root: &Path, path: &str) -> Result<OwnedFd, StagingError> {
    let err = |source| StagingError::Target {
        path: path.to_string(),
        source,
    };
    let root_fd = sys::open_dir(root).map_err(err)?;
    // O_PATH: a fifo or a device is never actually opened.
    let fd = match sys::open_in_root(&root_fd, path, libc::O_PATH) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            create_in_root(&root_fd, path).map_err(err)?
        }
        Err(e) => return Err(err(e)),
    };
    check_regular(&fd, path)?;
    Ok(fd)
}

/// The file `path` of the container root, resolved inside the root and opened as a path
/// descriptor (a fifo or a device is never actually opened), if it exists: `None` when
/// it, or a directory on the way, does not.
pub fn existing_in_root(root: &OwnedFd, path: &str) -> Result<Option<OwnedFd>, StagingError> {
    match sys::open_in_root(root, path, libc::O_PATH) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
        Err(source) => Err(StagingError::Target {
            path: path.to_string(),
            source,
        }),
    }
}

/// Refuse anything but a regular file, naming what it is.
pub fn check_regular(fd: &OwnedFd, path: &str) -> Result<(), StagingError> {
    let st = sys::fstat(fd).map_err(|source| StagingError::Target {
        path: path.to_string(),
        source,
    })?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Ok(()),
        fmt => Err(StagingError::NotRegular {
            path: path.to_string(),
            kind: file_kind(fmt),
        }),
    }
}

/// (device, inode) of an open file: what two paths that resolve to the same file share.
pub fn file_id(fd: &impl AsFd) -> io::Result<(u64, u64)> {
    let st = boxlite_archive::fs::fstat(fd.as_fd())?;
    Ok((st.st_dev, st.st_ino))
}

/// Create the missing `path` inside `root`, empty and 0644, in its directory resolved
/// inside the root (missing directories are created 0755). When the name is a symlink
/// to a missing file (`resolv.conf -> ../run/systemd/resolve/stub-resolv.conf`), the
/// link's target is created instead, resolved inside the root as the box would; if its
/// directory is missing too, this fails.
fn create_in_root(root: &OwnedFd, path: &str) -> io::Result<OwnedFd> {
    let (dir, name) = path
        .rsplit_once('/')
        .filter(|(_, name)| !name.is_empty())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let dir = sys::create_dirs_in_root(root, dir)?;
    // O_NOFOLLOW (open_name's) with O_EXCL: a symlink in the way is EEXIST, never followed
    // from here, where `/` would mean the agent's root.
    match boxlite_archive::fs::open_name(
        dir.as_fd(),
        name.as_bytes(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NONBLOCK,
        0o644,
    ) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => sys::open_in_root(
            root,
            path,
            libc::O_RDONLY | libc::O_CREAT | libc::O_NONBLOCK,
        ),
        r => r,
    }
}

pub fn file_kind(fmt: libc::mode_t) -> &'static str {
    match fmt {
        libc::S_IFDIR => "directory",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFLNK => "symlink",
        _ => "special file",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    /// A directory under the system temp dir, removed (with everything in it) on drop.
    pub(crate) struct Scratch(pub PathBuf);

    impl Scratch {
        pub(crate) fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("bxg-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Run `f` on a thread of its own in a private mount namespace, so no mount it makes
    /// outlives it, even if it fails. Needs root (CAP_SYS_ADMIN), as the suite runs.
    pub(crate) fn in_private_mounts<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        std::thread::spawn(move || {
            // SAFETY: unshare takes flags only; CLONE_NEWNS affects this thread alone (it
            // gets its own filesystem context too).
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNS) }, 0);
            sys::mount(
                "none",
                Path::new("/"),
                "",
                libc::MS_REC | libc::MS_PRIVATE,
                None,
            )
            .unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    /// (device, inode) of a path, not following a final symlink.
    pub(crate) fn id(p: &Path) -> Option<(u64, u64)> {
        fs::symlink_metadata(p).ok().map(|m| (m.dev(), m.ino()))
    }

    /// (device, inode) of what an open descriptor is.
    fn fd_id(fd: &OwnedFd) -> (u64, u64) {
        file_id(fd).unwrap()
    }

    /// Everything about a host path that writing to it or replacing it would change.
    pub(crate) fn fingerprint(p: &str) -> Option<(u64, u64, u64, i64, i64)> {
        fs::symlink_metadata(p)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
    }

    #[test]
    fn existing_regular_file_is_targeted_and_left_unchanged() {
        let s = Scratch::new("stg-regular");
        let root = &s.0;
        fs::create_dir(root.join("etc")).unwrap();
        fs::write(root.join("etc/resolv.conf"), "nameserver 1.1.1.1\n").unwrap();

        let fd = target_in_root(root, "/etc/resolv.conf").unwrap();

        assert_eq!(Some(fd_id(&fd)), id(&root.join("etc/resolv.conf")));
        assert_eq!(
            fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
            "nameserver 1.1.1.1\n"
        );
    }

    #[test]
    fn missing_etc_and_file_are_created_inside_the_root() {
        let s = Scratch::new("stg-missing");
        let root = &s.0;

        let fd = target_in_root(root, "/etc/hosts").unwrap();

        let etc = fs::symlink_metadata(root.join("etc")).unwrap();
        let file = fs::symlink_metadata(root.join("etc/hosts")).unwrap();
        assert!(etc.is_dir());
        assert!(file.is_file());
        assert_eq!(file.len(), 0);
        assert_eq!(Some(fd_id(&fd)), id(&root.join("etc/hosts")));
    }

    #[test]
    fn missing_nested_directories_are_created_inside_the_root() {
        let s = Scratch::new("stg-nested");
        let root = &s.0;
        fs::create_dir(root.join("etc")).unwrap();

        let fd = target_in_root(root, "/etc/boxlite/ca.crt").unwrap();

        let dir = fs::symlink_metadata(root.join("etc/boxlite")).unwrap();
        assert!(dir.is_dir());
        assert_eq!(dir.mode() & 0o777, 0o755);
        assert_eq!(Some(fd_id(&fd)), id(&root.join("etc/boxlite/ca.crt")));
        assert_eq!(
            fs::metadata(root.join("etc/boxlite/ca.crt")).unwrap().len(),
            0
        );
    }

    #[test]
    fn absolute_symlink_to_shadow_resolves_inside_the_root() {
        let s = Scratch::new("stg-shadow");
        let root = &s.0;
        fs::create_dir(root.join("etc")).unwrap();
        symlink("/etc/shadow", root.join("etc/resolv.conf")).unwrap();
        let host_before = fingerprint("/etc/shadow");

        let fd = target_in_root(root, "/etc/resolv.conf").unwrap();

        // The dangling in-root link's target is created inside the root, never the host's.
        assert_eq!(Some(fd_id(&fd)), id(&root.join("etc/shadow")));
        assert_eq!(fs::metadata(root.join("etc/shadow")).unwrap().len(), 0);
        assert_eq!(fingerprint("/etc/shadow"), host_before);
        assert!(
            fs::symlink_metadata(root.join("etc/resolv.conf"))
                .unwrap()
                .is_symlink()
        );
    }

    #[test]
    fn existing_in_root_symlink_target_is_followed_and_left_unchanged() {
        let s = Scratch::new("stg-followed");
        let root = &s.0;
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("run/resolve")).unwrap();
        fs::write(
            root.join("run/resolve/stub.conf"),
            "nameserver 127.0.0.53\n",
        )
        .unwrap();
        symlink("../run/resolve/stub.conf", root.join("etc/resolv.conf")).unwrap();

        let fd = target_in_root(root, "/etc/resolv.conf").unwrap();

        assert_eq!(Some(fd_id(&fd)), id(&root.join("run/resolve/stub.conf")));
        assert_eq!(
            fs::read_to_string(root.join("run/resolve/stub.conf")).unwrap(),
            "nameserver 127.0.0.53\n"
        );
    }

    #[test]
    fn relative_symlink_climbing_out_stays_inside_the_root() {
        let s = Scratch::new("stg-climb");
        let root = &s.0;
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("tmp")).unwrap();
        let escape = format!("bxg-stg-escape-{}", std::process::id());
        symlink(
            format!("../../../../tmp/{escape}"),
            root.join("etc/resolv.conf"),
        )
        .unwrap();

        let fd = target_in_root(root, "/etc/resolv.conf").unwrap();

        assert_eq!(Some(fd_id(&fd)), id(&root.join("tmp").join(&escape)));
        assert_eq!(id(&Path::new("/tmp").join(&escape)), None);
    }

    #[test]
    fn symlink_to_a_missing_directory_is_refused_without_creating_anything() {
        let s = Scratch::new("stg-climb-missing");
        let root = &s.0;
        fs::create_dir_all(root.join("etc")).unwrap();
        let escape = format!("bxg-stg-nodir-{}", std::process::id());
        symlink(
            format!("../../../../{escape}/x"),
            root.join("etc/resolv.conf"),
        )
        .unwrap();

        let r = target_in_root(root, "/etc/resolv.conf");

        assert!(matches!(r, Err(StagingError::Target { .. })), "{r:?}");
        assert_eq!(id(&root.join(&escape)), None);
        assert_eq!(id(&Path::new("/").join(&escape)), None);
    }

    #[test]
    fn etc_symlinked_to_slash_means_the_roots_own_top() {
        let s = Scratch::new("stg-etc-slash");
        let root = &s.0;
        symlink("/", root.join("etc")).unwrap();
        let host_before = fingerprint("/resolv.conf");

        let fd = target_in_root(root, "/etc/resolv.conf").unwrap();

        assert_eq!(Some(fd_id(&fd)), id(&root.join("resolv.conf")));
        assert_eq!(fingerprint("/resolv.conf"), host_before);
        assert!(fs::symlink_metadata(root.join("etc")).unwrap().is_symlink());
    }

    #[test]
    fn directory_in_place_of_the_file_is_refused_and_left_alone() {
        let s = Scratch::new("stg-dir");
        let root = &s.0;
        fs::create_dir_all(root.join("etc/resolv.conf")).unwrap();

        let r = target_in_root(root, "/etc/resolv.conf");

        assert!(
            matches!(
                r,
                Err(StagingError::NotRegular {
                    kind: "directory",
                    ..
                })
            ),
            "{r:?}"
        );
        assert!(root.join("etc/resolv.conf").is_dir());
    }

    #[test]
    fn fifo_in_place_of_the_file_is_refused_without_blocking() {
        let s = Scratch::new("stg-fifo");
        let root = &s.0;
        fs::create_dir_all(root.join("etc")).unwrap();
        let p = sys::cstr(root.join("etc/hosts")).unwrap();
        // SAFETY: p is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o644) }, 0);

        let r = target_in_root(root, "/etc/hosts");

        assert!(
            matches!(r, Err(StagingError::NotRegular { kind: "fifo", .. })),
            "{r:?}"
        );
    }

    #[test]
    fn a_missing_file_or_directory_on_the_way_is_not_there_and_not_created() {
        let s = Scratch::new("stg-absent");
        let root = &s.0;
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/pki"), "a file where a directory would be").unwrap();
        let root_fd = sys::open_dir(root).unwrap();

        let missing = existing_in_root(&root_fd, "/etc/ssl/cert.pem").unwrap();
        let not_dir = existing_in_root(&root_fd, "/etc/pki/tls/certs/ca-bundle.crt").unwrap();

        assert!(missing.is_none());
        assert!(not_dir.is_none());
        assert_eq!(id(&root.join("etc/ssl")), None);
    }

    #[test]
    fn staged_file_is_mounted_over_the_image_file_which_stays_unchanged() {
        let s = Scratch::new("stg-mount");
        let root = s.0.join("root");
        let staging = s.0.join("staging");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(&staging).unwrap();
        fs::write(root.join("etc/resolv.conf"), "nameserver 1.1.1.1\n").unwrap();

        let seen = in_private_mounts({
            let (root, staging) = (root.clone(), staging.clone());
            move || {
                publish(
                    &root,
                    &staging,
                    "resolv.conf",
                    b"generated\n",
                    "/etc/resolv.conf",
                )
                .unwrap();
                fs::read_to_string(root.join("etc/resolv.conf")).unwrap()
            }
        });

        assert_eq!(seen, "generated\n");
        assert_eq!(
            fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
            "nameserver 1.1.1.1\n"
        );
        assert_eq!(
            fs::metadata(staging.join("resolv.conf"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o644
        );
    }
}
