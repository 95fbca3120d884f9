//! Mounting virtio-fs volumes into the container root.
//!
//! The mount point is resolved inside the container root (`openat2` with
//! `RESOLVE_IN_ROOT`), so a symlink in the image leads where it would for a process in
//! the box, never out of the root; missing directories are created on the way. The
//! mount then goes onto the resolved directory through `/proc/self/fd`, so nothing can
//! swap the path between the check and the mount.

use std::os::fd::AsRawFd;
use std::path::Path;

use crate::{init, sys};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume path {0:?} must be absolute, without . or .. components")]
    InvalidPath(String),
    #[error("preparing the mount point {path:?}")]
    MountPoint {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting volume {tag} at {path:?}")]
    Mount {
        tag: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the virtiofs driver")]
    Driver(#[source] init::InitError),
}

/// One volume to mount.
#[derive(Debug, Clone)]
pub struct Mount {
    pub tag: String,
    pub path: String,
    pub read_only: bool,
}

fn components(path: &str) -> Result<Vec<&str>, VolumeError> {
    let bad = || VolumeError::InvalidPath(path.to_string());
    if !path.starts_with('/') {
        return Err(bad());
    }
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|c| *c == "." || *c == "..") {
        return Err(bad());
    }
    Ok(parts)
}

/// Create (0755) every missing directory of `path` inside `root`, resolving each step
/// inside the root, and return the final directory opened as a path descriptor.
fn mount_point(root: &Path, path: &str) -> Result<std::os::fd::OwnedFd, VolumeError> {
    components(path)?;
    let err = |source| VolumeError::MountPoint {
        path: path.to_string(),
        source,
    };
    let root_fd = sys::open_dir(root).map_err(err)?;
    sys::create_dirs_in_root(&root_fd, path).map_err(err)
}

/// Mount every volume, in order. Volumes are `nosuid` and `nodev`: a named volume is
/// shared between boxes, and one box's root must not plant a setuid binary or a device
/// node for another box's users.
pub fn mount_all(cfg: &init::BootConfig, mounts: &[Mount]) -> Result<(), VolumeError> {
    if mounts.is_empty() {
        return Ok(());
    }
    if std::process::id() == 1 {
        // The driver is in the "later" list, which may still be loading in the
        // background; loading is idempotent, so make sure of it here.
        init::load_modules(cfg, init::MODULE_LIST_LATER).map_err(VolumeError::Driver)?;
    }
    for m in mounts {
        let target = mount_point(Path::new(init::CONTAINER_ROOT), &m.path)?;
        let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
        if m.read_only {
            flags |= libc::MS_RDONLY;
        }
        let via = format!("/proc/self/fd/{}", target.as_raw_fd());
        sys::mount(&m.tag, Path::new(&via), "virtiofs", flags, None).map_err(|source| {
            VolumeError::Mount {
                tag: m.tag.clone(),
                path: m.path.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_dotted_paths_are_refused() {
        for p in ["data", "/", "/a/../b", "/./a", ""] {
            assert!(components(p).is_err(), "{p:?} accepted");
        }
        assert_eq!(components("/var//cache/").unwrap(), vec!["var", "cache"]);
    }

    #[test]
    fn missing_directories_are_created_inside_the_root_even_through_an_escaping_symlink() {
        let root = std::env::temp_dir().join(format!("bxg-vol-{}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        // An image symlink pointing at an absolute path must resolve inside the root.
        std::os::unix::fs::symlink("/etc", root.join("data")).unwrap();

        let fd = mount_point(&root, "/data/sub/dir");

        let made = root.join("etc/sub/dir").is_dir();
        let leaked = Path::new("/etc/sub/dir").exists();
        std::fs::remove_dir_all(&root).unwrap();
        assert!(fd.is_ok(), "{fd:?}");
        assert!(made);
        assert!(!leaked);
    }
}
