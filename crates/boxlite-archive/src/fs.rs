//! The `*at` syscalls the packer and unpacker are built on. Paths are bytes: names in an
//! archive or a guest filesystem need not be UTF-8.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// How a path is resolved below a directory fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// As if the directory were `/` (`RESOLVE_IN_ROOT`): absolute symlinks and `..` are
    /// clamped to it. For a container root, where that is what the links mean.
    InRoot,
    /// Anything that would leave the directory fails with `EXDEV` (`RESOLVE_BENEATH`).
    /// For a host destination, where such a link can only be an attack.
    Beneath,
    /// Ordinary resolution, for trusted host paths.
    Normal,
}

impl Resolve {
    fn flags(self) -> u64 {
        match self {
            Resolve::InRoot => libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
            Resolve::Beneath => libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
            Resolve::Normal => 0,
        }
    }
}

pub fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(dir, path, flags, resolve)`. An empty path opens `dir` itself again.
pub fn open_at(
    dir: BorrowedFd<'_>,
    path: &[u8],
    flags: libc::c_int,
    resolve: Resolve,
) -> io::Result<OwnedFd> {
    let p = cstr(if path.is_empty() { b"." } else { path })?;
    // SAFETY: open_how is plain old data; all-zero is valid (and required for padding).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = u64::from((flags | libc::O_CLOEXEC).cast_unsigned());
    if flags & libc::O_CREAT != 0 {
        how.mode = 0o600;
    }
    how.resolve = resolve.flags();
    // SAFETY: the path is NUL-terminated, `how` is a valid open_how and its size is passed.
    owned(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            p.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    })
}

/// `openat(dir, name, flags | O_NOFOLLOW, mode)` for one name in an open directory.
pub fn open_name(
    dir: BorrowedFd<'_>,
    name: &[u8],
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let n = cstr(name)?;
    // SAFETY: dir is open and n is NUL-terminated.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    } as libc::c_long)
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data; fstat fills it in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open and st is a valid out pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<libc::stat> {
    let n = cstr(name)?;
    // SAFETY: stat is plain old data; fstatat fills it in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: dir is open, n is NUL-terminated and st is a valid out pointer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            n.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &[u8], mode: libc::mode_t) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: dir is open and n is NUL-terminated.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode) })
}

pub fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: dir is open and n is NUL-terminated.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), n.as_ptr(), mode, dev) })
}

pub fn symlink_at(target: &[u8], dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let t = cstr(target)?;
    let n = cstr(name)?;
    // SAFETY: both strings are NUL-terminated and dir is open.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) })
}

/// `linkat` without following a final symlink.
pub fn link_at(
    from_dir: BorrowedFd<'_>,
    from: &[u8],
    to_dir: BorrowedFd<'_>,
    to: &[u8],
) -> io::Result<()> {
    let f = cstr(from)?;
    let t = cstr(to)?;
    // SAFETY: both directories are open and both names NUL-terminated.
    check(unsafe {
        libc::linkat(
            from_dir.as_raw_fd(),
            f.as_ptr(),
            to_dir.as_raw_fd(),
            t.as_ptr(),
            0,
        )
    })
}

/// Remove one name: a file, a link or an empty directory.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &[u8], is_dir: bool) -> io::Result<()> {
    let n = cstr(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: dir is open and n is NUL-terminated.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), flags) })
}

/// `readlinkat(dir, name)`.
pub fn readlink_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<u8>> {
    let n = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: dir is open, n NUL-terminated, and buf is writable for its length.
    let len = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(len.unsigned_abs());
    Ok(buf)
}

/// Set owner, mode (not for symlinks) and modification time of one name in `dir`,
/// never following a final symlink.
pub fn set_meta_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    owner: Option<(u32, u32)>,
    mode: Option<libc::mode_t>,
    mtime: Option<i64>,
) -> io::Result<()> {
    let n = cstr(name)?;
    if let Some((uid, gid)) = owner {
        // SAFETY: dir is open and n is NUL-terminated.
        check(unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                n.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
    }
    if let Some(mode) = mode {
        // Symlinks have no mode of their own on Linux; callers pass None for them.
        // SAFETY: dir is open and n is NUL-terminated.
        check(unsafe { libc::fchmodat(dir.as_raw_fd(), n.as_ptr(), mode, 0) })?;
    }
    if let Some(secs) = mtime {
        let times = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: secs as libc::time_t,
                tv_nsec: 0,
            },
        ];
        // SAFETY: dir is open, n NUL-terminated, and times holds two timespecs.
        check(unsafe {
            libc::utimensat(
                dir.as_raw_fd(),
                n.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
    }
    Ok(())
}

/// The names in an open directory, without `.` and `..`, sorted so archives are
/// reproducible.
pub fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    // fdopendir takes ownership of its descriptor, so give it a fresh one.
    let fd = open_at(
        dir,
        b".",
        libc::O_RDONLY | libc::O_DIRECTORY,
        Resolve::Normal,
    )?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
    // SAFETY: raw is an open directory descriptor whose ownership passes to the DIR.
    let d = unsafe { libc::fdopendir(raw) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so raw is still ours to close.
        unsafe { libc::close(raw) };
        return Err(e);
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: d is a valid DIR stream until closedir below.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    // SAFETY: d came from fdopendir and is closed once, which also closes raw.
    unsafe { libc::closedir(d) };
    names.sort();
    Ok(names)
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Remove `name` in `dir` and, for a directory, everything below it, never following
/// links (a link is removed, not its target).
pub fn remove_tree_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let st = match lstat_at(dir, name) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
        Ok(st) => st,
    };
    if !is_dir(&st) {
        return unlink_at(dir, name, false);
    }
    let sub = open_name(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    for child in list_dir(std::os::fd::AsFd::as_fd(&sub))? {
        remove_tree_at(std::os::fd::AsFd::as_fd(&sub), &child)?;
    }
    unlink_at(dir, name, true)
}

/// `fsetxattr(2)`.
pub fn set_xattr(fd: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let k = cstr(key)?;
    // SAFETY: fd is open, k NUL-terminated, and value valid for its length.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}
