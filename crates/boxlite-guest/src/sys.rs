//! Thin, checked wrappers over the raw syscalls the agent needs.
//!
//! Everything here returns `io::Result` with the OS error; callers add the context.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn cstr(s: impl AsRef<OsStr>) -> io::Result<CString> {
    boxlite_archive::fs::cstr(s.as_ref().as_bytes())
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

/// Set the wall clock (`CLOCK_REALTIME`) to `ns` nanoseconds since the Unix epoch.
pub fn set_realtime(ns: i64) -> io::Result<()> {
    const NANOS: i64 = 1_000_000_000;
    let ts = libc::timespec {
        tv_sec: ns.div_euclid(NANOS) as libc::time_t,
        tv_nsec: ns.rem_euclid(NANOS) as _,
    };
    // SAFETY: ts is a valid timespec that lives until the call returns.
    check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) })
}

/// Mix `seed` into the kernel's input pool through `random` (an open `/dev/random` or
/// `/dev/urandom`), credited as 8 bits a byte (`RNDADDENTROPY`), then reseed the
/// kernel's generator from the pool (`RNDRESEEDCRNG`), so that every later read of
/// `/dev/urandom` or `getrandom` depends on it. Both need `CAP_SYS_ADMIN`.
pub fn add_entropy(random: &std::fs::File, seed: &[u8]) -> io::Result<()> {
    // _IOW('R', 0x03, int[2]) and _IO('R', 0x07), from <linux/random.h>.
    const RNDADDENTROPY: libc::Ioctl = 0x4008_5203;
    const RNDRESEEDCRNG: libc::Ioctl = 0x5207;
    let too_long = || io::Error::new(io::ErrorKind::InvalidInput, "seed too long");
    let len = libc::c_int::try_from(seed.len()).map_err(|_| too_long())?;
    let bits = len.checked_mul(8).ok_or_else(too_long)?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }, built
    // from ints so the header is aligned.
    let mut info: Vec<libc::c_int> = vec![bits, len];
    info.extend(seed.chunks(4).map(|c| {
        let mut word = [0u8; 4];
        word[..c.len()].copy_from_slice(c);
        libc::c_int::from_ne_bytes(word)
    }));
    // SAFETY: info holds the header and buf_size bytes of buffer after it; the kernel
    // only reads it.
    check(unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) })?;
    // SAFETY: RNDRESEEDCRNG takes no argument.
    check(unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG) })
}

/// Bring the loopback interface up, so programs that bind 127.0.0.1 work even without a NIC.
pub fn loopback_up() -> io::Result<()> {
    set_if_up(&inet_socket()?, "lo")
}

/// An `AF_INET` datagram socket: the handle the interface and route ioctls go through.
pub fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created, valid socket that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `ifreq` naming interface `name`, the rest zeroed.
pub fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // The name is shorter than the array, so the zeroed tail terminates it.
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    Ok(req)
}

/// `AF_INET` as the kernel stores it in a socket address.
#[allow(clippy::cast_possible_truncation)] // AF_INET is 2.
const AF_INET_FAMILY: libc::sa_family_t = libc::AF_INET as libc::sa_family_t;

/// `ip` as a generic socket address (a `sockaddr_in` with port 0), the form the
/// interface and route ioctls take.
fn sockaddr_v4(ip: std::net::Ipv4Addr) -> libc::sockaddr {
    let mut sa_data = [0 as libc::c_char; 14];
    // sockaddr_in: two bytes of port, then the address in network order.
    for (dst, src) in sa_data[2..6].iter_mut().zip(ip.octets()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    libc::sockaddr {
        sa_family: AF_INET_FAMILY,
        sa_data,
    }
}

/// Set interface `name`'s IPv4 address (`SIOCSIFADDR`).
pub fn set_if_addr(sock: &OwnedFd, name: &str, ip: std::net::Ipv4Addr) -> io::Result<()> {
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_v4(ip);
    // SAFETY: SIOCSIFADDR reads the ifreq we own, whose address field is set.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR, &req) })
}

/// Set interface `name`'s IPv4 netmask (`SIOCSIFNETMASK`).
pub fn set_if_netmask(sock: &OwnedFd, name: &str, mask: std::net::Ipv4Addr) -> io::Result<()> {
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_netmask = sockaddr_v4(mask);
    // SAFETY: SIOCSIFNETMASK reads the ifreq we own, whose netmask field is set.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFNETMASK, &req) })
}

/// Set interface `name`'s MTU (`SIOCSIFMTU`).
pub fn set_if_mtu(sock: &OwnedFd, name: &str, mtu: u32) -> io::Result<()> {
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("MTU {mtu}")))?;
    // SAFETY: SIOCSIFMTU reads the ifreq we own, whose MTU field is set.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &req) })
}

/// Bring interface `name` up, keeping its other flags (`SIOCGIFFLAGS`, `SIOCSIFFLAGS`).
pub fn set_if_up(sock: &OwnedFd, name: &str) -> io::Result<()> {
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    let up = libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
    // SAFETY: the union field ifru_flags is the one SIOCGIFFLAGS filled in.
    unsafe { req.ifr_ifru.ifru_flags |= up };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })
}

/// Add the IPv4 default route through `gateway` on interface `name` (`SIOCADDRT`).
/// The interface must be up and the gateway inside one of its subnets.
pub fn add_default_route(
    sock: &OwnedFd,
    name: &str,
    gateway: std::net::Ipv4Addr,
) -> io::Result<()> {
    let dev = cstr(name)?;
    // SAFETY: rtentry is plain old data; all-zero is a valid value (no device, metric 0).
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_v4(std::net::Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr_v4(std::net::Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr_v4(gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // The kernel only reads the device name (it copies it in).
    rt.rt_dev = dev.as_ptr().cast_mut();
    // SAFETY: SIOCADDRT reads the rtentry we own; rt_dev points at a NUL-terminated name
    // that lives until the call returns.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &rt) })
}

/// Open `path` relative to `root` as if `root` were `/`: `..` and symlinks, absolute or
/// relative, cannot leave `root` (`openat2` with `RESOLVE_IN_ROOT`).
pub fn open_in_root(root: &OwnedFd, path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    use std::os::fd::AsFd;
    boxlite_archive::fs::open_at(
        root.as_fd(),
        path.as_bytes(),
        flags,
        boxlite_archive::Resolve::InRoot,
    )
}

/// The directory `path` of `root`, every step resolved inside the root (as
/// [`open_in_root`]), with each missing directory on the way created 0755; opened as a
/// path descriptor. A dangling symlink in the way is not followed out of the root: its
/// target is not created, and the open fails.
pub fn create_dirs_in_root(root: &OwnedFd, path: &str) -> io::Result<OwnedFd> {
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    let mut cur = String::new();
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        let parent = if cur.is_empty() {
            "/".to_string()
        } else {
            cur.clone()
        };
        cur.push('/');
        cur.push_str(comp);
        match open_in_root(root, &cur, flags) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let dir = open_in_root(root, &parent, flags)?;
                match mkdirat(&dir, comp, 0o755) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    open_in_root(root, if cur.is_empty() { "/" } else { &cur }, flags)
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

/// Grow the ext4 filesystem that `dir` is on to `blocks` blocks (EXT4_IOC_RESIZE_FS).
pub fn ext4_resize(dir: &std::fs::File, blocks: u64) -> io::Result<()> {
    // _IOW('f', 16, __u64)
    const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;
    // SAFETY: the ioctl reads one u64 from a valid pointer.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS, &blocks) })
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

/// A new pseudo-terminal of `rows` x `cols` from the devpts instance mounted at
/// `ptmx` (the container's own, so the process sees its `/dev/pts/N`): (master, slave),
/// both close-on-exec (the slave's copies that become a child's fds 0-2 are made
/// without the flag). The slave is opened from the master (`TIOCGPTPEER`), never by a
/// path that could resolve elsewhere.
pub fn openpty(ptmx: &Path, rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let p = cstr(ptmx)?;
    // SAFETY: valid NUL-terminated path.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open returned a new fd that we now own.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let unlock: libc::c_int = 0;
    // SAFETY: master is a ptmx fd; TIOCSPTLCK reads an int.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    // SAFETY: master is a ptmx fd; TIOCGPTPEER takes open flags and returns a new fd.
    let sfd = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if sfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl returned a new fd that we now own.
    let slave = unsafe { OwnedFd::from_raw_fd(sfd) };
    set_winsize(&master, rows, cols)?;
    Ok((master, slave))
}

/// Set a terminal's window size; the kernel signals its foreground group (SIGWINCH).
pub fn set_winsize(fd: &OwnedFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: fd is open and ws is a valid winsize.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) })
}

/// A terminal's master side as an async byte stream, read and written without blocking.
#[derive(Debug)]
pub struct PtyMaster(tokio::io::unix::AsyncFd<OwnedFd>);

impl PtyMaster {
    /// Takes a descriptor of its own (a dup): it is switched to non-blocking mode.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: fd is open; F_GETFL/F_SETFL take and return int flags.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        // SAFETY: as above.
        check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
        // SAFETY: the OwnedFd is moved in, stays open and keeps its number for as long
        // as the AsyncFd owns it.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(PtyMaster(fd))
    }
}

impl tokio::io::AsyncRead for PtyMaster {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        loop {
            let mut guard = std::task::ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let r = guard.try_io(|fd| {
                // SAFETY: the buffer is valid and writable for its length.
                let n = unsafe {
                    libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n.unsigned_abs())
                }
            });
            match r {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl tokio::io::AsyncWrite for PtyMaster {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        loop {
            let mut guard = std::task::ready!(self.0.poll_write_ready(cx))?;
            let r = guard.try_io(|fd| {
                // SAFETY: the buffer is valid for its length.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n.unsigned_abs())
                }
            });
            match r {
                Ok(res) => return std::task::Poll::Ready(res),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
