//! The walls between the workload and the agent inside the VM.
//!
//! The agent is PID 1 of the VM and keeps everything the workload must not touch: the
//! agent channel's device, the initramfs with the kernel modules it loads, the cgroup
//! that freezes the workload, its own memory. At boot it starts one long-lived process,
//! the *container init*, in new PID, mount, IPC and UTS namespaces:
//!
//! - its mount namespace is a copy of the agent's in which every mount but the container
//!   root is detached, the container root is moved onto `/` (over the initramfs, which
//!   `..` can then never reach again) and made the root; it gets a `/proc` of its own
//!   PID namespace, and `/proc/sys`, `/proc/sysrq-trigger`, `/proc/irq`, `/proc/bus` and
//!   `/sys` read-only, as Docker does;
//! - the container root is `rshared` in the agent's namespace and `rslave` in the
//!   container's, so what the agent mounts later (volumes, the generated
//!   `resolv.conf`/`hosts`, CA bundles) appears in the container, and nothing mounted in
//!   the container leaks back;
//! - it is PID 1 of the container's PID namespace: it reaps the workload's orphans, and
//!   the kernel never delivers it a signal from inside the namespace that it did not ask
//!   for (so `kill -9 1` in the box is a no-op). It keeps no capability and is not
//!   dumpable, so tracing it would gain nothing and its `/proc` entries are closed.
//!
//! Every execution then *joins* those namespaces: the spawning thread sets its children's
//! PID namespace to the container's ([`Container::enter_pid_ns`]), so the forked child
//! lands in it while staying the agent's own child (the agent keeps reaping it and
//! reporting its exit); the child enters the IPC, UTS and mount namespaces itself before
//! `execve` ([`enter`]) and drops capabilities ([`drop_caps_to`], [`set_caps`]).
//! The host's `docs/threat-model.md` (Guest walls) lists what this keeps out.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("opening the agent's own {0} namespace")]
    OwnNamespace(&'static str, #[source] io::Error),
    #[error("creating the container's PID namespace")]
    PidNamespace(#[source] io::Error),
    #[error("starting the container init")]
    Fork(#[source] io::Error),
    #[error("the container init failed to set up the container: {0}")]
    Setup(String),
    #[error("opening the container's {0} namespace")]
    Namespace(&'static str, #[source] io::Error),
}

/// The container init and handles on its namespaces.
#[derive(Debug)]
pub struct Container {
    init_pid: i32,
    pid_ns: OwnedFd,
    mnt_ns: OwnedFd,
    ipc_ns: OwnedFd,
    uts_ns: OwnedFd,
    /// The agent's own PID and UTS namespaces, to come back to.
    own_pid_ns: OwnedFd,
    own_uts_ns: OwnedFd,
}

/// The namespaces a child enters in its `pre_exec` hook, as raw descriptors (which stay
/// open as long as the [`Container`]).
#[derive(Debug, Clone, Copy)]
pub struct Join {
    ipc: RawFd,
    uts: RawFd,
    mnt: RawFd,
}

fn open_ns(path: &str) -> io::Result<OwnedFd> {
    fs::File::open(path).map(OwnedFd::from)
}

/// What the container init mounts read-only over its own `/proc`, as Docker does: the
/// kernel's tunables (`/proc/sys/kernel/modprobe` and `core_pattern` name programs the
/// kernel runs as full root), the magic SysRq trigger, IRQ affinities and bus tunables.
const PROC_READ_ONLY: [&str; 4] = ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"];

/// The agent's mounts the container's namespace gives up before it moves in; with them
/// goes everything under them (the cgroup, staging directories, the agent's devtmpfs
/// with the channel's device node).
const AGENT_MOUNTS: [&str; 4] = ["/dev", "/proc", "/sys", "/run"];

impl Container {
    /// Start the container init for the prepared container root `root` (a mount point).
    /// Call while the agent is single-threaded (at boot): it forks.
    pub fn start(root: &Path) -> Result<Self, ContainerError> {
        // Later agent mounts under the root must reach the container's copy of it.
        sys::mount("none", root, "", libc::MS_REC | libc::MS_SHARED, None)
            .map_err(|e| ContainerError::Setup(format!("making {} shared: {e}", root.display())))?;
        let own_pid_ns =
            open_ns("/proc/self/ns/pid").map_err(|e| ContainerError::OwnNamespace("pid", e))?;
        let own_uts_ns =
            open_ns("/proc/self/ns/uts").map_err(|e| ContainerError::OwnNamespace("uts", e))?;
        let root_c = sys::cstr(root).map_err(|e| ContainerError::Setup(e.to_string()))?;
        let (report_r, report_w) = pipe().map_err(ContainerError::Fork)?;
        // SAFETY: unshare takes flags only. It changes the PID namespace of the agent's
        // future children; the agent's own is restored right after the fork.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } < 0 {
            return Err(ContainerError::PidNamespace(io::Error::last_os_error()));
        }
        // SAFETY: the agent is single-threaded here (boot runs before the async runtime
        // and its threads exist), so the child may run ordinary code.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            drop(report_r);
            init_main(&root_c, report_w);
        }
        let forked = if pid < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(pid)
        };
        // Back to the agent's own namespace for every later child, whatever happened.
        setns(own_pid_ns.as_raw_fd(), libc::CLONE_NEWPID).map_err(ContainerError::PidNamespace)?;
        let init_pid = forked.map_err(ContainerError::Fork)?;
        drop(report_w);
        let mut report = String::new();
        let _ = fs::File::from(report_r).read_to_string(&mut report);
        if report != "ok" {
            return Err(ContainerError::Setup(if report.is_empty() {
                "it exited without a word".into()
            } else {
                report
            }));
        }
        let ns = |kind: &'static str| {
            open_ns(&format!("/proc/{init_pid}/ns/{kind}"))
                .map_err(|e| ContainerError::Namespace(kind, e))
        };
        Ok(Container {
            init_pid,
            pid_ns: ns("pid")?,
            mnt_ns: ns("mnt")?,
            ipc_ns: ns("ipc")?,
            uts_ns: ns("uts")?,
            own_pid_ns,
            own_uts_ns,
        })
    }

    /// The container's root as its processes see it, mounts made inside the container
    /// included, for resolving paths with `RESOLVE_IN_ROOT`.
    pub fn root_fd(&self) -> io::Result<OwnedFd> {
        sys::open_dir(Path::new(&format!("/proc/{}/root", self.init_pid)))
    }

    /// Make the children this thread forks from now on, until the guard drops, land in
    /// the container's PID namespace.
    pub fn enter_pid_ns(&self) -> io::Result<PidNsGuard<'_>> {
        setns(self.pid_ns.as_raw_fd(), libc::CLONE_NEWPID)?;
        Ok(PidNsGuard(self))
    }

    /// The namespaces a child enters before `execve` (see [`enter`]).
    pub fn join(&self) -> Join {
        Join {
            ipc: self.ipc_ns.as_raw_fd(),
            uts: self.uts_ns.as_raw_fd(),
            mnt: self.mnt_ns.as_raw_fd(),
        }
    }

    /// Set the container's hostname (and the agent's, so both agree).
    pub fn set_hostname(&self, name: &str) -> io::Result<()> {
        sys::sethostname(name)?;
        setns(self.uts_ns.as_raw_fd(), libc::CLONE_NEWUTS)?;
        let set = sys::sethostname(name);
        let back = setns(self.own_uts_ns.as_raw_fd(), libc::CLONE_NEWUTS);
        set.and(back)
    }
}

/// While alive, the thread's children are born in the container's PID namespace.
#[derive(Debug)]
pub struct PidNsGuard<'a>(&'a Container);

impl Drop for PidNsGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = setns(self.0.own_pid_ns.as_raw_fd(), libc::CLONE_NEWPID) {
            eprintln!("boxlite-guest: back to the agent's PID namespace: {e}");
        }
    }
}

fn setns(fd: RawFd, kind: libc::c_int) -> io::Result<()> {
    // SAFETY: setns takes a descriptor and flags; a bad descriptor is an error.
    if unsafe { libc::setns(fd, kind) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for the kernel to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Enter the container's IPC, UTS and mount namespaces (the last one makes the
/// container root the process's root and working directory). Async-signal-safe: for a
/// child's `pre_exec` hook.
pub fn enter(j: Join) -> io::Result<()> {
    setns(j.ipc, libc::CLONE_NEWIPC)?;
    setns(j.uts, libc::CLONE_NEWUTS)?;
    setns(j.mnt, libc::CLONE_NEWNS)
}

/// Shrink the bounding set to `mask` (and clear the ambient set). Needs `CAP_SETPCAP`,
/// so it comes before any user switch. Async-signal-safe.
pub fn drop_caps_to(mask: u64) -> io::Result<()> {
    for cap in 0..64u32 {
        if mask & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with PR_CAPBSET_DROP takes a capability number.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) } < 0 {
            let e = io::Error::last_os_error();
            // A number past the kernel's last capability.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
        }
    }
    // SAFETY: prctl with integer arguments only. Old kernels without ambient sets
    // answer EINVAL, and have nothing to clear.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Ok(())
}

/// Set the permitted, effective and inheritable sets to `mask` (bits past the kernel's
/// last capability are ignored by it). Async-signal-safe.
pub fn set_caps(mask: u64) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let word = |w: u64| {
        let low = u32::try_from(w & u64::from(u32::MAX)).unwrap_or(0);
        Data {
            effective: low,
            permitted: low,
            inheritable: low,
        }
    };
    let data = [word(mask), word(mask >> 32)];
    // SAFETY: header and data are the version-3 structures capset reads; both live
    // until the call returns.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The container init: set up the namespaces, report to the agent through `report`,
/// then reap orphans for good. Never returns.
fn init_main(root: &CString, report: OwnedFd) -> ! {
    let mut report = fs::File::from(report);
    match setup(root) {
        Ok(()) => {
            let _ = report.write_all(b"ok");
        }
        Err(e) => {
            let _ = report.write_all(e.as_bytes());
            // SAFETY: _exit ends this process only.
            unsafe { libc::_exit(1) }
        }
    }
    drop(report);
    // Nothing of the agent's stays open here: the console goes too.
    if let Ok(null) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    // SAFETY: prctl with integer and static string arguments; capability calls work on
    // this process only. The init needs no privilege to wait for children.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"boxlite-init".as_ptr());
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let _ = drop_caps_to(0);
    let _ = set_caps(0);
    reap_forever()
}

/// Wait for SIGCHLD (blocked, so it stays pending until taken) and reap every child.
fn reap_forever() -> ! {
    // SAFETY: plain signal-set manipulation on a zeroed set we own.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let tick = libc::timespec {
        tv_sec: 5,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: st is a valid out pointer; WNOHANG never blocks.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        // SAFETY: set and tick are valid; the info pointer may be null.
        unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &tick) };
    }
}

/// The container init's mounts; errors are reported to the agent as text.
fn setup(root: &CString) -> Result<(), String> {
    let step = |what: &str, r: io::Result<()>| r.map_err(|e| format!("{what}: {e}"));
    // SAFETY: unshare and setsid take flags only and affect this process.
    if unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) } < 0 {
        return Err(format!("unshare: {}", io::Error::last_os_error()));
    }
    // SAFETY: as above.
    unsafe { libc::setsid() };
    step(
        "making every mount a slave",
        sys::mount(
            "none",
            Path::new("/"),
            "",
            libc::MS_REC | libc::MS_SLAVE,
            None,
        ),
    )?;
    for m in AGENT_MOUNTS {
        match sys::umount_lazy(Path::new(m)) {
            Err(e) if e.raw_os_error() != Some(libc::EINVAL) => {
                return Err(format!("detaching {m}: {e}"));
            }
            _ => {}
        }
    }
    // switch_root's move: the container root over `/`, which `..` cannot leave.
    // SAFETY: root is a valid NUL-terminated path.
    if unsafe { libc::chdir(root.as_ptr()) } < 0 {
        return Err(format!("chdir to the root: {}", io::Error::last_os_error()));
    }
    step(
        "moving the container root onto /",
        sys::mount(".", Path::new("/"), "", libc::MS_MOVE, None),
    )?;
    // SAFETY: static NUL-terminated paths.
    if unsafe { libc::chroot(c".".as_ptr()) } < 0 || unsafe { libc::chdir(c"/".as_ptr()) } < 0 {
        return Err(format!("entering the root: {}", io::Error::last_os_error()));
    }
    // A /proc of the container's PID namespace in place of the agent's.
    let proc_ = Path::new("/proc");
    let _ = sys::umount_lazy(proc_);
    let hidden = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    step(
        "mounting /proc",
        sys::mount("proc", proc_, "proc", hidden, None),
    )?;
    for p in PROC_READ_ONLY {
        let path = Path::new(p);
        match sys::mount(p, path, "", libc::MS_BIND | libc::MS_REC, None) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            r => step(p, r)?,
        }
        step(p, read_only(path, hidden))?;
    }
    step("/sys", read_only(Path::new("/sys"), hidden))
}

fn read_only(path: &Path, flags: libc::c_ulong) -> io::Result<()> {
    sys::mount(
        "none",
        path,
        "",
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | flags,
        None,
    )
}
