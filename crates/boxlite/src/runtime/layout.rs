//! Where things live on disk. Every path is derived from `BOXLITE_HOME` and an identity at
//! the point of use; none is ever persisted.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The layout of one `BOXLITE_HOME`.
#[derive(Debug, Clone)]
pub struct Layout {
    home: PathBuf,
}

impl Layout {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Layout { home: home.into() }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn boxes_dir(&self) -> PathBuf {
        self.home.join("boxes")
    }

    pub fn box_dir(&self, id: &str) -> PathBuf {
        self.boxes_dir().join(id)
    }

    pub fn images_dir(&self) -> PathBuf {
        self.home.join("images")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.home.join("logs")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.home.join("cache")
    }

    /// Create the top-level directories, private to the user.
    pub fn ensure(&self) -> io::Result<()> {
        for d in [
            self.home.clone(),
            self.boxes_dir(),
            self.images_dir(),
            self.logs_dir(),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)?;
        }
        Ok(())
    }
}

/// Paths of one box's files inside its box directory.
#[derive(Debug, Clone)]
pub struct BoxPaths {
    pub dir: PathBuf,
}

impl BoxPaths {
    pub fn record(&self) -> PathBuf {
        self.dir.join("box.json")
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    pub fn vsock_log(&self) -> PathBuf {
        self.dir.join("vsock.log")
    }
}

/// Errors about the per-user socket directory.
#[derive(Debug, thiserror::Error)]
pub enum SocketDirError {
    #[error(
        "socket directory {path} is owned by uid {owner}, not by this user (uid {uid}); remove it or set TMPDIR"
    )]
    WrongOwner { path: PathBuf, owner: u32, uid: u32 },
    #[error("socket directory {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("socket directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The short per-user directory for unix sockets. `sun_path` holds 108 bytes on Linux
/// (104 on macOS), so sockets cannot live under an arbitrarily deep `BOXLITE_HOME`.
pub fn socket_root() -> PathBuf {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/boxlite-{uid}"))
}

/// Create (0700) or verify the per-user socket root, refusing one that another user owns
/// or that others can write.
pub fn ensure_socket_root(root: &Path) -> Result<(), SocketDirError> {
    let io_err = |source| SocketDirError::Io {
        path: root.to_path_buf(),
        source,
    };
    match std::fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(e)),
    }
    let meta = std::fs::symlink_metadata(root).map_err(io_err)?;
    if !meta.is_dir() {
        return Err(SocketDirError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    if meta.uid() != uid {
        return Err(SocketDirError::WrongOwner {
            path: root.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).map_err(io_err)?;
    }
    Ok(())
}

/// Socket paths of one box, derived from its id.
#[derive(Debug, Clone)]
pub struct SocketPaths {
    pub dir: PathBuf,
}

impl SocketPaths {
    pub fn for_box(id: &str) -> Self {
        SocketPaths {
            dir: socket_root().join(&id[..id.len().min(12)]),
        }
    }
    /// vhost-user control socket between QEMU and vhost-device-vsock.
    pub fn vhost(&self) -> PathBuf {
        self.dir.join("v.sock")
    }
    /// Host side of the hybrid vsock: connect here and send `CONNECT <port>`.
    pub fn agent(&self) -> PathBuf {
        self.dir.join("a.sock")
    }
    /// Where guest-initiated connections to host port `port` arrive.
    pub fn agent_port(&self, port: u32) -> PathBuf {
        self.dir.join(format!("a.sock_{port}"))
    }
    pub fn create(&self) -> Result<(), SocketDirError> {
        let root = self.dir.parent().unwrap_or(Path::new("/tmp"));
        ensure_socket_root(root)?;
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(SocketDirError::Io {
                path: self.dir.clone(),
                source,
            }),
        }
    }
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_fit_sun_path_whatever_the_home() {
        let id = "0123456789abcdef0123456789abcdef";
        let s = SocketPaths::for_box(id);
        for p in [s.vhost(), s.agent(), s.agent_port(u32::MAX)] {
            assert!(p.as_os_str().len() < 104, "{} is too long", p.display());
        }
    }

    #[test]
    fn socket_root_owned_by_another_user_is_refused() {
        // The test suite runs as root (see README), so it can hand the directory away.
        let dir = std::env::temp_dir().join(format!("bx-sock-{}", rand::random::<u64>()));
        std::fs::create_dir(&dir).unwrap();
        let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        // SAFETY: chown on a valid NUL-terminated path we just created.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);

        let res = ensure_socket_root(&dir);

        std::fs::remove_dir_all(&dir).unwrap();
        let err = res.unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
    }
}
