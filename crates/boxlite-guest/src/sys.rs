//! Thin, checked wrappers over the raw syscalls the agent needs.
//!
//! Everything here returns `io::Result` with the OS error; callers add the context.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn cstr(s: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `mount(2)`. `data` is the filesystem-specific option string.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = cstr(source)?;
    let target = cstr(target)?;
    let fstype = cstr(fstype)?;
    let data = data.map(cstr).transpose()?;
    let data_ptr = data
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: all pointers are valid NUL-terminated strings (or null for data) that live
    // until the call returns.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data_ptr,
        )
    })
}

pub fn umount_lazy(target: &Path) -> io::Result<()> {
    let target = cstr(target)?;
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })
}

pub fn mknod_char(path: &Path, mode: libc::mode_t, major: u32, minor: u32) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: valid NUL-terminated path; makedev has no preconditions.
    check(unsafe {
        libc::mknod(
            p.as_ptr(),
            libc::S_IFCHR | mode,
            libc::makedev(major, minor),
        )
    })
}

pub fn chmod(path: &Path, mode: libc::mode_t) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::chmod(p.as_ptr(), mode) })
}

/// Load a kernel module from an open file with `finit_module(2)`.
pub fn finit_module(file: &std::fs::File, params: &str) -> io::Result<()> {
    let params = cstr(params)?;
    // SAFETY: the fd is open for reading for the duration of the call and params is a
    // valid NUL-terminated string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            0 as libc::c_int,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe a valid byte buffer.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
}

/// Bring the loopback interface up, so programs that bind 127.0.0.1 work even without a NIC.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket creation; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created, valid socket that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: the union field ifru_flags is the one SIOCGIFFLAGS filled in.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })
}

/// Open `path` relative to `root` as if `root` were `/`: `..` and symlinks, absolute or
/// relative, cannot leave `root` (`openat2` with `RESOLVE_IN_ROOT`).
pub fn open_in_root(root: &OwnedFd, path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    // SAFETY: open_how is plain old data; all-zero is valid (and required for padding).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // SAFETY: the path is NUL-terminated, `how` is a valid open_how and its size is passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            p.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// `mkdirat(2)` of one name in an open directory.
pub fn mkdirat(dir: &OwnedFd, name: &str, mode: libc::mode_t) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: dir is open and n is a valid NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode) })
}

pub fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data; all-zero is valid and fstat fills it in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open and st is a valid out pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    // SAFETY: valid NUL-terminated path.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    check(unsafe { libc::kill(pid, sig) })
}

pub fn sync() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
}

/// Power the VM off. Falls back to a reboot, which QEMU's `-no-reboot` turns into an exit.
pub fn power_off() -> ! {
    sync();
    // SAFETY: reboot(2) with a valid command; it only returns on failure.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    // SAFETY: as above.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    // Nothing else to do: PID 1 must not return.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
