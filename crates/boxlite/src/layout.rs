//! Where things live on disk. Every path is derived from `BOXLITE_HOME` and an identity at
//! the point of use; none is ever persisted.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::model::VolumeKind;

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

    /// Warm-start templates, one directory per key.
    pub fn templates_dir(&self) -> PathBuf {
        self.home.join("templates")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.home.join("cache")
    }

    pub fn volumes_dir(&self) -> PathBuf {
        self.home.join("volumes")
    }

    pub fn named_volumes_dir(&self) -> PathBuf {
        self.volumes_dir().join("named")
    }

    pub fn anonymous_volumes_dir(&self) -> PathBuf {
        self.volumes_dir().join("anonymous")
    }

    /// Where volumes of `kind` live.
    pub fn volume_root(&self, kind: VolumeKind) -> PathBuf {
        match kind {
            VolumeKind::Named => self.named_volumes_dir(),
            VolumeKind::Anonymous => self.anonymous_volumes_dir(),
        }
    }

    pub fn db_dir(&self) -> PathBuf {
        self.home.join("db")
    }

    pub fn db_path(&self) -> PathBuf {
        self.db_dir().join("boxlite.db")
    }

    /// One lock file per box, outside the box directory so removing the directory never
    /// races with a process waiting for the lock.
    pub fn locks_dir(&self) -> PathBuf {
        self.home.join("locks")
    }

    pub fn lock_path(&self, id: &str) -> PathBuf {
        self.locks_dir().join(id)
    }

    /// Create the top-level directories, private to the user.
    pub fn ensure(&self) -> io::Result<()> {
        for d in [
            self.home.clone(),
            self.boxes_dir(),
            self.images_dir(),
            self.logs_dir(),
            self.db_dir(),
            self.locks_dir(),
            self.volumes_dir(),
            self.named_volumes_dir(),
            self.anonymous_volumes_dir(),
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
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    /// The host end of the agent's virtio-serial port: QEMU listens here and only the box's
    /// shim connects. Relative to the box directory, which is QEMU's and the shim's working
    /// directory, so the path fits `sun_path` whatever the home's length, and it lives
    /// outside `/tmp`, where temp cleaners cannot remove it under a running box.
    pub const AGENT_PORT: &'static str = "port.sock";

    pub fn agent_port(&self) -> PathBuf {
        self.dir.join(Self::AGENT_PORT)
    }
    /// QEMU's monitor socket, relative to the box directory like the agent port.
    pub const QMP: &'static str = "qmp.sock";

    /// A paused box's saved state: `state` (devices), `ram` (guest memory, sparse) and
    /// `meta.json`, written last, without which the rest does not count.
    pub fn paused_dir(&self) -> PathBuf {
        self.dir.join("paused")
    }
    /// The network helper's own output (errors; guest-caused events are not logged here).
    pub fn net_log(&self) -> PathBuf {
        self.dir.join("net.log")
    }
    /// The network helper's decisions, one JSON object per line, size-capped.
    pub fn net_decisions(&self) -> PathBuf {
        self.dir.join("net.jsonl")
    }
    pub fn monitor_log(&self) -> PathBuf {
        self.dir.join("monitor.log")
    }
    /// Values of secrets given through the API, one 0600 file per secret name, in a
    /// 0700 directory. Never under a volume: nothing here is shared with the guest.
    pub fn secrets_dir(&self) -> PathBuf {
        self.dir.join("secrets")
    }
    pub fn virtiofsd_log(&self, index: usize) -> PathBuf {
        self.dir.join(format!("virtiofsd-{index}.log"))
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
    #[error(
        "socket directory {path} is {len} bytes long; sockets under it would not fit sun_path, so use a directory of at most {max} bytes (BOXLITE_SOCKET_DIR)"
    )]
    TooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },
    #[error("socket directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The longest socket root accepted: room for `/<12-char id>/<socket>` within the 104-byte
/// `sun_path` of macOS (Linux has 108), with room to spare for new sockets.
pub const MAX_SOCKET_ROOT: usize = 104 - 1 - "/0123456789ab/a.sock_4294967295".len();

/// The short per-user directory for unix sockets: `$BOXLITE_SOCKET_DIR`, else
/// `/tmp/boxlite-<uid>`. `sun_path` holds 108 bytes on Linux (104 on macOS), so sockets
/// cannot live under an arbitrarily deep `BOXLITE_HOME`. Every process using a home must
/// agree on it, like on the home itself.
pub fn socket_root() -> PathBuf {
    if let Some(d) = std::env::var_os("BOXLITE_SOCKET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/boxlite-{uid}"))
}

/// Create (0700) or verify the per-user socket root, refusing one that another user owns
/// or that others can write.
pub fn ensure_socket_root(root: &Path) -> Result<(), SocketDirError> {
    let len = root.as_os_str().len();
    if len > MAX_SOCKET_ROOT {
        return Err(SocketDirError::TooLong {
            path: root.to_path_buf(),
            len,
            max: MAX_SOCKET_ROOT,
        });
    }
    ensure_private_dir(root)
}

/// Create (0700) or verify a per-user directory, refusing one that another user owns or
/// that is not a directory, and closing one that others can enter.
pub fn ensure_private_dir(root: &Path) -> Result<(), SocketDirError> {
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

/// Whether two paths name the same home: compared by their canonical paths (a home reached
/// through a symlink, `..` or a relative path is the same home), or as given when either
/// no longer exists.
pub fn same_home(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Where guest RAM files live: `$BOXLITE_RAM_DIR`, else `/dev/shm/boxlite-<uid>` (tmpfs,
/// so a box's memory never reaches a disk), else the socket root. A RAM file is created
/// when its box starts and removed when it stops; the memory-snapshot work moves it into
/// the box's directory instead.
pub fn ram_root() -> PathBuf {
    if let Some(d) = std::env::var_os("BOXLITE_RAM_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if Path::new("/dev/shm").is_dir() {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        return PathBuf::from(format!("/dev/shm/boxlite-{uid}"));
    }
    socket_root()
}

/// Socket paths of one box, derived from its id. The socket root is shared by every home
/// of the user, so each box's directory records which home it belongs to (the `home`
/// file), and a home only ever sweeps its own.
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
    /// The network helper's data socket, which QEMU's `-netdev stream` connects to once.
    pub fn net(&self) -> PathBuf {
        self.dir.join("n.sock")
    }
    /// The network helper's control socket: stats, the decision log, bound ports.
    pub fn net_control(&self) -> PathBuf {
        self.dir.join("nc.sock")
    }
    /// The box shim's socket: every host client of the agent connects here, and each
    /// connection becomes one stream of the agent channel.
    pub fn agent(&self) -> PathBuf {
        self.dir.join("a.sock")
    }
    /// vhost-user socket of the virtiofsd serving volume `index`.
    pub fn fs(&self, index: usize) -> PathBuf {
        self.dir.join(format!("fs{index}.sock"))
    }
    /// The guest's RAM: a file on tmpfs (see [`ram_root`]), named like this directory.
    pub fn ram(&self) -> PathBuf {
        let name = self.dir.file_name().unwrap_or_default().to_string_lossy();
        ram_root().join(format!("{name}.ram"))
    }
    fn home_marker(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// Create the directory for a box of `home`, clearing whatever a crashed run of the
    /// same box left in it.
    pub fn create(&self, home: &Path) -> Result<(), SocketDirError> {
        let root = self.dir.parent().unwrap_or(Path::new("/tmp"));
        ensure_socket_root(root)?;
        let io_err = |source| SocketDirError::Io {
            path: self.dir.clone(),
            source,
        };
        if let Some(owner) = self.owner_home()
            && !same_home(&owner, home)
        {
            // Another home's box with the same 12-character id prefix (1 in 2^48).
            return Err(io_err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("in use by a box of {}", owner.display()),
            )));
        }
        self.remove();
        ensure_private_dir(&ram_root())?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err)?;
        std::fs::write(self.home_marker(), home.as_os_str().as_encoded_bytes()).map_err(io_err)
    }

    /// The home that created this directory, if it exists.
    pub fn owner_home(&self) -> Option<PathBuf> {
        std::fs::read(self.home_marker()).ok().map(|b| {
            use std::os::unix::ffi::OsStringExt;
            PathBuf::from(std::ffi::OsString::from_vec(b))
        })
    }

    /// Remove the directory and the guest RAM file.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.ram());
    }

    /// Remove the directory (and RAM file) unless it belongs to a box of another home.
    pub fn remove_if_owned(&self, home: &Path) {
        match self.owner_home() {
            Some(owner) if !same_home(&owner, home) => {}
            _ => self.remove(),
        }
    }

    /// Create the directory again if a temp cleaner removed it under a running box, for
    /// the shim to bind its socket in. Unlike [`SocketPaths::create`], nothing in an
    /// existing directory is cleared.
    pub fn ensure(&self, home: &Path) -> Result<(), SocketDirError> {
        let root = self.dir.parent().unwrap_or(Path::new("/tmp"));
        ensure_socket_root(root)?;
        let io_err = |source| SocketDirError::Io {
            path: self.dir.clone(),
            source,
        };
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => std::fs::write(self.home_marker(), home.as_os_str().as_encoded_bytes())
                .map_err(io_err),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match self.owner_home() {
                Some(owner) if !same_home(&owner, home) => Err(io_err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("in use by a box of {}", owner.display()),
                ))),
                Some(_) => Ok(()),
                None => std::fs::write(self.home_marker(), home.as_os_str().as_encoded_bytes())
                    .map_err(io_err),
            },
            Err(e) => Err(io_err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlong_socket_root_is_refused_with_the_limit() {
        let root = PathBuf::from(format!("/tmp/{}", "d".repeat(80)));

        let err = ensure_socket_root(&root).unwrap_err().to_string();

        assert!(err.contains("BOXLITE_SOCKET_DIR"), "{err}");
        assert!(
            err.contains(&format!("at most {MAX_SOCKET_ROOT} bytes")),
            "{err}"
        );
    }

    #[test]
    fn socket_paths_fit_sun_path_whatever_the_home() {
        let id = "0123456789abcdef0123456789abcdef";
        let s = SocketPaths::for_box(id);
        for p in [s.agent(), s.net(), s.net_control(), s.fs(99)] {
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

    #[test]
    fn a_home_reached_through_a_symlink_or_a_relative_path_owns_its_socket_directories() {
        let base = std::env::temp_dir().join(format!("bx-home-{}", rand::random::<u64>()));
        let home = base.join("real");
        std::fs::create_dir_all(&home).unwrap();
        let link = base.join("link");
        std::os::unix::fs::symlink(&home, &link).unwrap();
        let dotted = base.join("real/../real");
        assert!(same_home(&home, &link));
        assert!(same_home(&dotted, &link));
        assert!(!same_home(&home, &base));

        // Created through the symlink, the directory is the home's own by either name:
        // `ensure` keeps it, and `remove_if_owned` with the real path removes it.
        let sockets = SocketPaths {
            dir: base.join("sock").join("0123456789ab"),
        };
        std::fs::create_dir_all(base.join("sock")).unwrap();
        sockets.create(&link).unwrap();
        sockets.ensure(&home).unwrap();
        assert!(sockets.dir.exists());
        // Another home's directory is refused and kept.
        let other = base.join("other");
        std::fs::create_dir_all(&other).unwrap();
        assert!(sockets.ensure(&other).is_err());
        sockets.remove_if_owned(&other);
        assert!(sockets.dir.exists());
        sockets.remove_if_owned(&home);
        assert!(!sockets.dir.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
