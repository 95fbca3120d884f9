//! Starting helper processes the way a jailer would.
//!
//! Helpers (QEMU, virtiofsd, the network helper, the box shim, a builder VM) outlive
//! the process that starts them, so they must be findable after it dies. Each is
//! therefore started behind a **gate**: the child is forked and set up (its own session,
//! its log as stdout and stderr), reports its pid, and then waits before `execve` until
//! the spawner has recorded it durably ([`Pending::release`]). If the spawner dies first
//! (SIGKILL, a crash), the child dies with it (`PR_SET_PDEATHSIG`, reset once the gate
//! opens; a change of parent is checked too) without ever running the helper; if the
//! spawner gives up ([`Pending`] dropped), the child is told to exit. So no helper ever
//! runs that is not recorded. A waiting child closes its copies of the spawner's lock
//! descriptors first thing, so even while it is dying with its spawner it never keeps
//! the spawner's locks busy.
//!
//! The child gets an allowlisted environment (see [`PASSED_ENV`]) plus what the caller
//! adds, never the caller's whole environment: registry passwords and tokens must not be
//! readable in `/proc/<pid>/environ` for the life of a box. Every descriptor other than
//! stdin, stdout and stderr is marked close-on-exec in the child, so the helper inherits
//! none of its spawner's files, whatever a host application opened without `O_CLOEXEC`.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::process::ProcessId;

/// Environment variables a helper inherits from its spawner, when set: the search path,
/// the locale and time zone, the temporary directory, and log settings. Variables whose
/// name starts with `LC_` are passed too.
pub const PASSED_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

/// The byte that opens the gate; any other byte (or end of file) makes the child exit.
const GO: u8 = b'1';
const ABORT: u8 = b'0';

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("starting {binary}")]
    Start {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening the log {path} for {binary}")]
    Log {
        binary: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What to start. Its `Debug` leaves out what goes on stdin (a helper's configuration
/// can carry secrets).
#[derive(Clone)]
pub struct HelperCommand {
    pub binary: PathBuf,
    pub args: Vec<OsString>,
    /// Receives the helper's stdout and stderr (created or truncated).
    pub log: PathBuf,
    /// Added to the allowlisted environment: the box markers and the like.
    pub env: Vec<(String, String)>,
    /// What the helper reads on stdin (a pipe, closed after these bytes): its
    /// configuration, which never goes in argv (world-readable in `/proc/<pid>/cmdline`)
    /// or the environment. At most [`MAX_STDIN`] bytes. `None`: stdin is `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// The working directory; `None`: the spawner's.
    pub dir: Option<PathBuf>,
    /// The jail it runs in ([`crate::jailer`]); `None`: none (tests of the gate itself).
    pub jail: Option<crate::jailer::JailSpec>,
    /// Descriptors handed to the helper, the n-th as descriptor [`PASSED_FD_BASE`] + n
    /// (QEMU's root disk, opened before it drops to an unprivileged uid).
    pub fds: Vec<std::sync::Arc<OwnedFd>>,
}

/// Where passed descriptors land in the helper: high enough that nothing std or the
/// gate keeps open in the child is there, below every descriptor limit the jail sets.
pub const PASSED_FD_BASE: RawFd = 1000;

impl std::fmt::Debug for HelperCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelperCommand")
            .field("binary", &self.binary)
            .field("args", &self.args)
            .field("log", &self.log)
            .field("env", &self.env)
            .field(
                "stdin",
                &self.stdin.as_ref().map(|d| format!("[{} bytes]", d.len())),
            )
            .field("dir", &self.dir)
            .field("jail", &self.jail.as_ref().map(|j| j.helper))
            .field("fds", &self.fds.len())
            .finish()
    }
}

/// The most a helper's stdin may carry: one pipe buffer, written before the helper runs,
/// so the spawner never blocks on it. 1 MiB is Linux's default `pipe-max-size`; a box's
/// secrets (64 of at most 8 KiB each) and extra roots can need more than the 64 KiB of a
/// default pipe.
pub const MAX_STDIN: usize = 1024 * 1024;

/// The size asked of a stdin pipe for `len` bytes: the default 64 KiB, or more.
fn pipe_size(len: usize) -> usize {
    len.clamp(64 * 1024, MAX_STDIN)
}

impl HelperCommand {
    pub fn new(binary: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Self {
        HelperCommand {
            binary: binary.into(),
            args: Vec::new(),
            log: log.into(),
            env: Vec::new(),
            stdin: None,
            dir: None,
            jail: None,
            fds: Vec::new(),
        }
    }

    /// Hand `fd` to the helper as descriptor [`PASSED_FD_BASE`] + its index.
    pub fn pass_fd(mut self, fd: OwnedFd) -> Self {
        self.fds.push(std::sync::Arc::new(fd));
        self
    }

    /// Run the helper in `jail`.
    pub fn jailed(mut self, jail: crate::jailer::JailSpec) -> Self {
        self.jail = Some(jail);
        self
    }

    /// Start the helper in `dir`: relative socket paths in its arguments resolve there,
    /// which keeps them short whatever the length of the home's path.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Hand `data` to the helper on its stdin; see [`HelperCommand::stdin`].
    pub fn stdin_data(mut self, data: Vec<u8>) -> Self {
        self.stdin = Some(data);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn envs(mut self, vars: &[(String, String)]) -> Self {
        self.env.extend_from_slice(vars);
        self
    }
}

/// The environment a helper starts with: the allowlisted variables of this process, then
/// `extra`.
pub fn helper_env(extra: &[(String, String)]) -> Vec<(OsString, OsString)> {
    env_from(std::env::vars_os(), extra)
}

fn env_from(
    vars: impl Iterator<Item = (OsString, OsString)>,
    extra: &[(String, String)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vars
        .filter(|(k, _)| {
            k.to_str()
                .is_some_and(|k| PASSED_ENV.contains(&k) || k.starts_with("LC_"))
        })
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    for (k, v) in extra {
        env.retain(|(ek, _)| ek.as_os_str() != k.as_str());
        env.push((k.into(), v.into()));
    }
    env
}

/// A `std` command with the helper environment, for short-lived tools (`qemu-img`,
/// `mkfs.ext4`): they get the allowlisted environment too, and inherit no descriptor
/// beyond stdin, stdout and stderr.
pub fn tool_command(binary: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(binary);
    c.env_clear().envs(helper_env(&[])).stdin(Stdio::null());
    let jail = tool_jail(binary);
    // SAFETY: the hook runs in the forked child before execve and only calls
    // close_range or fcntl, and the jail's async-signal-safe `apply`; it allocates
    // nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, move || {
            mark_cloexec_from(3);
            if let Some(j) = &jail {
                j.apply()?;
            }
            Ok(())
        });
    }
    c
}

/// The jail of a short-lived tool: its seccomp list, limits, namespaces and capability
/// cut, without landlock (its files vary with each call). `None` with the jail off.
fn tool_jail(binary: &Path) -> Option<crate::jailer::Prepared> {
    use crate::jailer::{Helper, JailSpec, Settings};
    let settings = Settings::from_env().unwrap_or_default();
    if !settings.enabled {
        return None;
    }
    let mut spec = JailSpec::new(Helper::Tool, settings, binary);
    spec.no_landlock = true;
    match spec.prepare() {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(binary = %binary.display(), "this tool runs unjailed: {e}");
            None
        }
    }
}

/// Prepare `cmd`'s jail, or say loudly that it runs without one. Blocking.
fn prepare_jail(cmd: &HelperCommand) -> io::Result<Option<crate::jailer::Prepared>> {
    match &cmd.jail {
        Some(spec) if spec.settings.enabled => spec.prepare().map(Some),
        Some(_) => {
            tracing::warn!(
                binary = %cmd.binary.display(),
                "BOXLITE_JAIL=off: this helper runs without its jail (no seccomp, landlock, namespaces or cgroup)"
            );
            Ok(None)
        }
        None => Ok(None),
    }
}

/// A pipe already holding `data`, its write end closed: the read end becomes a child's
/// stdin, which reads `data` and then end of file.
fn stdin_pipe(data: &[u8]) -> io::Result<OwnedFd> {
    if data.len() > MAX_STDIN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} bytes for a helper's stdin; at most {MAX_STDIN} fit",
                data.len()
            ),
        ));
    }
    let (r, w) = pipe()?;
    // SAFETY: fcntl on a pipe we own. The pipe is made large enough for `data` (a user
    // over `pipe-user-pages-soft` gets 4 KiB pipes), and non-blocking, so a write that
    // does not fit fails instead of blocking the caller forever.
    unsafe {
        libc::fcntl(
            w.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            libc::c_int::try_from(pipe_size(data.len())).unwrap_or(libc::c_int::MAX),
        );
        libc::fcntl(w.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
    }
    let mut off = 0;
    while off < data.len() {
        // SAFETY: writing from a live slice to a pipe we own.
        let n =
            unsafe { libc::write(w.as_raw_fd(), data[off..].as_ptr().cast(), data.len() - off) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    return Err(io::Error::new(
                        io::ErrorKind::OutOfMemory,
                        format!(
                            "{} bytes for a helper's stdin do not fit the pipe the kernel gave",
                            data.len()
                        ),
                    ));
                }
                _ => return Err(e),
            }
        }
        off += usize::try_from(n).unwrap_or(0);
    }
    drop(w);
    Ok(r)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two-element array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A helper that has been forked but waits at the gate: it has a pid, and has not yet
/// executed the helper binary. Record [`Pending::id`] durably, then [`Pending::release`].
/// Dropping it instead makes the child exit.
#[derive(Debug)]
pub struct Pending {
    id: ProcessId,
    binary: PathBuf,
    gate: Gate,
    spawned: Option<tokio::task::JoinHandle<io::Result<tokio::process::Child>>>,
}

/// The parent's end of a child's gate. Unless opened, it tells the child to exit when
/// dropped, including when a spawn is cancelled halfway. It keeps the pipe's read end
/// open too, so writing to a child that already died never raises SIGPIPE in the host
/// process.
#[derive(Debug)]
struct Gate {
    write: Option<OwnedFd>,
    _read: OwnedFd,
}

impl Gate {
    fn open(&mut self) -> io::Result<()> {
        match self.write.take() {
            Some(fd) => write_byte(&fd, GO),
            None => Ok(()),
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(fd) = self.write.take() {
            // The child exits on its own; std reaps it when it reports the failed hook.
            let _ = write_byte(&fd, ABORT);
        }
    }
}

/// Fork the helper and stop it at the gate. See the module documentation.
pub async fn spawn_gated(cmd: &HelperCommand) -> Result<Pending, SpawnError> {
    let start_err = |source| SpawnError::Start {
        binary: cmd.binary.clone(),
        source,
    };
    let out = std::fs::File::create(&cmd.log).map_err(|source| SpawnError::Log {
        binary: cmd.binary.clone(),
        path: cmd.log.clone(),
        source,
    })?;
    let err = out.try_clone().map_err(start_err)?;
    let (pid_r, pid_w) = pipe().map_err(start_err)?;
    let (gate_r, gate_w) = pipe().map_err(start_err)?;
    let (gate_r_raw, gate_w_raw) = (gate_r.as_raw_fd(), gate_w.as_raw_fd());
    let gate = Gate {
        write: Some(gate_w),
        _read: gate_r,
    };
    let parent = i32::try_from(std::process::id()).unwrap_or(0);
    let (pid_r_raw, pid_w_raw) = (pid_r.as_raw_fd(), pid_w.as_raw_fd());
    let stdin = match &cmd.stdin {
        None => Stdio::null(),
        Some(data) => Stdio::from(stdin_pipe(data).map_err(start_err)?),
    };
    let jail = prepare_jail(cmd).map_err(start_err)?;
    // Kept alive by the hook until the child has executed.
    let passed = cmd.fds.clone();

    let mut c = tokio::process::Command::new(&cmd.binary);
    c.args(&cmd.args)
        .env_clear()
        .envs(helper_env(&cmd.env))
        .stdin(stdin)
        .stdout(out)
        .stderr(err)
        .kill_on_drop(false);
    if let Some(d) = &cmd.dir {
        c.current_dir(d);
    }
    // SAFETY: the hook runs in the forked child before execve and only makes
    // async-signal-safe calls (setsid, prctl, close, write, read, poll, getpid, getppid,
    // fcntl, close_range, and the jail's, see `Prepared::apply`); it allocates nothing.
    unsafe {
        c.pre_exec(move || {
            gate_child(
                parent, pid_r_raw, pid_w_raw, gate_r_raw, gate_w_raw, &passed,
            )?;
            if let Some(j) = &jail {
                j.apply()?;
            }
            Ok(())
        });
    }
    // std's spawn returns only once the child has executed (or failed to), which is after
    // the gate opens: run it on the blocking pool and read the pid meanwhile. The
    // parent's copies of the child's pipe ends close when the spawn returns, so a child
    // that fails before reporting its pid shows up as end of file.
    let spawned = tokio::task::spawn_blocking(move || {
        let r = super::blocking::spawn_tokio(&mut c);
        drop(pid_w);
        r
    });
    let pid = super::blocking::run(move || read_pid(&pid_r)).await;
    let pid = match pid {
        Some(pid) => pid,
        None => {
            let e = match spawned.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => io::Error::other("the helper started without reporting its pid"),
                Err(e) => io::Error::other(e),
            };
            return Err(start_err(e));
        }
    };
    let mut pending = Pending {
        id: ProcessId { pid, start_time: 0 },
        binary: cmd.binary.clone(),
        gate,
        spawned: Some(spawned),
    };
    // The child is parked at the gate, so it is alive and its start time readable.
    pending.id = ProcessId::of(pid).map_err(start_err)?;
    Ok(pending)
}

fn read_pid(fd: &OwnedFd) -> Option<i32> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled tail of a stack buffer we own.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        match n {
            0 => return None,
            n if n < 0 => {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return None;
            }
            n => got += usize::try_from(n).unwrap_or(0),
        }
    }
    Some(i32::from_ne_bytes(buf))
}

/// Runs in the forked child. Async-signal-safe only.
fn gate_child(
    parent: i32,
    pid_r: RawFd,
    pid_w: RawFd,
    gate_r: RawFd,
    gate_w: RawFd,
    passed: &[std::sync::Arc<OwnedFd>],
) -> io::Result<()> {
    // SAFETY: plain syscalls on descriptors inherited through fork and on stack buffers;
    // no memory is shared with other threads of the parent.
    unsafe {
        // Die with the spawner while waiting: until execve this child holds copies of
        // all the spawner's descriptors, its box and build locks among them. The
        // spawning thread stays in `spawn` until the execve, so this fires exactly when
        // the spawner dies.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
            return Err(io::Error::last_os_error());
        }
        // And let go of the box and build locks now: the death signal takes a moment to
        // end us, and a next command must not see a dead spawner's lock as held.
        super::lock::close_held_locks_in_child(&[pid_r, pid_w, gate_r, gate_w]);
        // Already reparented before the prctl: the spawner is gone.
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        // Our copies of the parent's ends: the child must not write its own gate.
        libc::close(pid_r);
        libc::close(gate_w);
        let pid = libc::getpid().to_ne_bytes();
        if libc::write(pid_w, pid.as_ptr().cast(), pid.len()) != 4 {
            return Err(io::Error::last_os_error());
        }
        libc::close(pid_w);
        loop {
            let mut pfd = libc::pollfd {
                fd: gate_r,
                events: libc::POLLIN,
                revents: 0,
            };
            let n = libc::poll(&mut pfd, 1, 100);
            if n > 0 {
                let mut b = [0u8; 1];
                let r = libc::read(gate_r, b.as_mut_ptr().cast(), 1);
                if r == 1 && b[0] == GO {
                    break;
                }
                if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                // ABORT, or end of file: the spawner gave up.
                return Err(io::Error::from_raw_os_error(libc::ECANCELED));
            }
            // Reparented: the spawner died before recording us (the death signal is the
            // first line of defence; this covers a spawner in another pid namespace's
            // view, where it may not fire).
            if libc::getppid() != parent {
                libc::_exit(1);
            }
        }
        libc::close(gate_r);
        // The helper outlives its spawner from here on.
        if libc::prctl(libc::PR_SET_PDEATHSIG, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        // dup2 leaves the copies without close-on-exec; everything else gets it. A soft
        // descriptor limit below the target numbers is raised (within the hard one).
        let mut next = PASSED_FD_BASE;
        let need = u64::from(PASSED_FD_BASE.unsigned_abs()) + passed.len() as u64;
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if !passed.is_empty()
            && libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0
            && lim.rlim_cur < need
        {
            lim.rlim_cur = lim.rlim_max.min(need.max(4096));
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        for fd in passed {
            if libc::dup2(fd.as_raw_fd(), next) < 0 {
                return Err(io::Error::last_os_error());
            }
            next += 1;
        }
        if passed.is_empty() {
            mark_cloexec_from(3);
        } else {
            mark_cloexec_range(3, PASSED_FD_BASE.unsigned_abs() - 1);
            mark_cloexec_from(next.unsigned_abs());
        }
    }
    Ok(())
}

/// Mark every descriptor from `first` on close-on-exec. Async-signal-safe.
fn mark_cloexec_from(first: u32) {
    mark_cloexec_range(first, libc::c_uint::MAX);
}

/// Mark descriptors `first..=last` close-on-exec. Async-signal-safe.
fn mark_cloexec_range(first: u32, last: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes descriptor flags in this process.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, CLOSE_RANGE_CLOEXEC) };
    if r == 0 {
        return;
    }
    // Kernels before 5.11: one descriptor at a time, up to the soft limit.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 16)
    } else {
        1024
    };
    let max = i32::try_from(max.min(u64::from(last).saturating_add(1))).unwrap_or(1024);
    for fd in i32::try_from(first).unwrap_or(3)..max {
        // SAFETY: fcntl on a descriptor number; EBADF for closed ones is harmless.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

impl Pending {
    /// The child's identity, to record before [`Pending::release`].
    pub fn id(&self) -> ProcessId {
        self.id
    }

    /// Open the gate: the child executes the helper. Returns once it has (or failed to),
    /// with our handle on the child, to notice an early death. Dropping the handle leaves
    /// the helper running (tokio reaps it when it exits).
    pub async fn release(mut self) -> Result<tokio::process::Child, SpawnError> {
        let binary = self.binary.clone();
        let start_err = |source| SpawnError::Start {
            binary: binary.clone(),
            source,
        };
        self.gate.open().map_err(start_err)?;
        let spawned = self.spawned.take().expect("a pending spawn has its task");
        match spawned.await {
            Ok(r) => r.map_err(start_err),
            Err(e) => Err(start_err(io::Error::other(e))),
        }
    }
}

fn write_byte(fd: &OwnedFd, b: u8) -> io::Result<()> {
    loop {
        // SAFETY: writing one byte from a stack value to a pipe we own.
        let r = unsafe { libc::write(fd.as_raw_fd(), (&raw const b).cast(), 1) };
        if r == 1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("bx-spawn-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn only_allowlisted_variables_and_the_markers_are_passed() {
        let vars = [
            ("PATH", "/bin"),
            ("LC_TIME", "C"),
            ("BOXLITE_REGISTRY_PASSWORD", "s3cret"),
            ("HOME", "/root"),
            ("BOXLITE_BOX_ID", "spoofed"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));

        let env = env_from(vars.into_iter(), &[("BOXLITE_BOX_ID".into(), "abc".into())]);

        let keys: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect();
        assert_eq!(keys, ["PATH=/bin", "LC_TIME=C", "BOXLITE_BOX_ID=abc"]);
    }

    #[tokio::test]
    async fn a_child_at_the_gate_holds_none_of_its_spawners_locks() {
        use super::super::lock::{FileLock, LockMode};
        let dir = temp_dir();
        let lock_path = dir.join("box.lock");
        let lock = FileLock::try_acquire(&lock_path, LockMode::Exclusive)
            .unwrap()
            .unwrap();
        let cmd = HelperCommand::new("/bin/true", dir.join("log"));
        let pending = spawn_gated(&cmd).await.unwrap();
        let fds: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{}/fd", pending.id().pid))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .collect();
        drop(pending);
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!fds.is_empty());
        assert!(!fds.contains(&lock_path), "{fds:?}");
    }

    #[tokio::test]
    async fn helper_runs_only_after_release_and_gets_the_helper_environment() {
        let dir = temp_dir();
        let out = dir.join("out");
        let cmd = HelperCommand::new("/bin/sh", dir.join("log"))
            .args(["-c", &format!("env > {}", out.display())])
            .envs(&[("BOXLITE_BOX_ID".into(), "abc".into())]);

        let pending = spawn_gated(&cmd).await.unwrap();
        // At the gate the child is still a copy of this process: it has not executed
        // the helper.
        let exe_at_gate = std::fs::read_link(format!("/proc/{}/exe", pending.id().pid)).unwrap();
        let ran_early = out.exists();
        let alive_at_gate = pending.id().is_alive();
        let mut child = pending.release().await.unwrap();
        let status = child.wait().await.unwrap();

        let env = std::fs::read_to_string(&out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(exe_at_gate, std::env::current_exe().unwrap());
        assert!(!ran_early);
        assert!(alive_at_gate);
        assert!(status.success());
        assert!(env.contains("BOXLITE_BOX_ID=abc"), "{env}");
        // Besides what was passed, only what the shell sets for itself.
        let own = ["PWD", "SHLVL", "_", "BOXLITE_BOX_ID"];
        for line in env.lines() {
            let key = line.split('=').next().unwrap();
            assert!(
                PASSED_ENV.contains(&key) || key.starts_with("LC_") || own.contains(&key),
                "unexpected variable {line:?}"
            );
        }
    }

    #[tokio::test]
    async fn stdin_larger_than_a_default_pipe_reaches_the_helper_whole() {
        let dir = temp_dir();
        let out = dir.join("out");
        let data = vec![b'x'; 600 * 1024];
        let cmd = HelperCommand::new("/bin/sh", dir.join("log"))
            .args(["-c", &format!("wc -c > {}", out.display())])
            .stdin_data(data.clone());

        let status = spawn_gated(&cmd)
            .await
            .unwrap()
            .release()
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();

        let got = std::fs::read_to_string(&out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(status.success());
        assert_eq!(got.trim(), data.len().to_string());
    }

    #[tokio::test]
    async fn stdin_data_reaches_the_helper_and_never_its_argv_or_environment() {
        let dir = temp_dir();
        let out = dir.join("out");
        let secret = "config-that-must-stay-private";
        let cmd = HelperCommand::new("/bin/sh", dir.join("log"))
            .args([
                "-c",
                &format!(
                    "cat > {o}; tr '\\0' ' ' < /proc/$$/cmdline >> {o}.argv; env >> {o}.argv",
                    o = out.display()
                ),
            ])
            .stdin_data(secret.as_bytes().to_vec());
        let status = spawn_gated(&cmd)
            .await
            .unwrap()
            .release()
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        let visible = std::fs::read_to_string(out.with_extension("argv")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(status.success());
        assert_eq!(got, secret);
        assert!(!visible.contains(secret), "{visible}");
        assert!(!format!("{cmd:?}").contains(secret), "{cmd:?}");
        let too_big =
            HelperCommand::new("/bin/true", "/dev/null").stdin_data(vec![0; MAX_STDIN + 1]);
        let e = spawn_gated(&too_big).await.unwrap_err();
        assert!(format!("{:?}", e).contains("at most"), "{e:?}");
    }

    #[tokio::test]
    async fn dropping_a_pending_helper_makes_it_exit_without_running() {
        let dir = temp_dir();
        let out = dir.join("out");
        let cmd = HelperCommand::new("/bin/sh", dir.join("log"))
            .args(["-c", &format!("touch {}", out.display())]);

        let pending = spawn_gated(&cmd).await.unwrap();
        let id = pending.id();
        drop(pending);
        let gone = crate::util::kill::wait_exit(id, std::time::Duration::from_secs(10)).await;

        let ran = out.exists();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(gone);
        assert!(!ran);
    }

    /// This test runs twice: as itself, and (with `BOXLITE_TEST_SPAWNER` set) as a
    /// spawner process that forks a helper and dies at once, before releasing it.
    #[tokio::test]
    #[allow(clippy::disallowed_methods)]
    async fn a_helper_whose_spawner_dies_at_the_gate_never_runs() {
        if let Ok(out) = std::env::var("BOXLITE_TEST_SPAWNER") {
            let cmd = HelperCommand::new("/bin/sh", format!("{out}.log"))
                .args(["-c", &format!("touch {out}")]);
            let pending = spawn_gated(&cmd).await.unwrap();
            println!("gated pid {}", pending.id().pid);
            use std::io::Write;
            std::io::stdout().flush().unwrap();
            // SAFETY: ends this process at once, as a SIGKILL would: no destructor runs.
            unsafe { libc::_exit(0) };
        }
        let dir = temp_dir();
        let out = dir.join("ran");
        let spawner = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "util::spawn::tests::a_helper_whose_spawner_dies_at_the_gate_never_runs",
                "--nocapture",
            ])
            .env("BOXLITE_TEST_SPAWNER", &out)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&spawner.stdout);
        let pid: i32 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("gated pid "))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the spawner did not report its child: {stdout}"));
        let id = ProcessId {
            pid,
            start_time: super::super::process::read_stat(pid).map_or(0, |s| s.start_time),
        };
        let gone = crate::util::kill::wait_exit(id, std::time::Duration::from_secs(10)).await;

        let ran = out.exists();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(gone, "the gated child outlived its spawner");
        assert!(!ran, "the helper ran although it was never released");
    }

    #[tokio::test]
    async fn a_missing_binary_is_an_error_naming_it() {
        let dir = temp_dir();
        let cmd = HelperCommand::new("/nonexistent/helper", dir.join("log"));

        let pending = spawn_gated(&cmd).await.unwrap();
        let err = pending.release().await.unwrap_err();

        std::fs::remove_dir_all(&dir).unwrap();
        let SpawnError::Start { binary, source } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(binary, Path::new("/nonexistent/helper"));
        assert_eq!(source.kind(), io::ErrorKind::NotFound, "{err:?}");
    }

    #[tokio::test]
    async fn descriptors_opened_without_cloexec_are_not_inherited() {
        let dir = temp_dir();
        let secret = dir.join("leaky-file");
        std::fs::write(&secret, b"x").unwrap();
        let c = std::ffi::CString::new(secret.to_str().unwrap()).unwrap();
        // SAFETY: open without O_CLOEXEC, as a careless host library might.
        let leaky = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
        assert!(leaky >= 0);
        let out = dir.join("fds");
        let cmd = HelperCommand::new("/bin/sh", dir.join("log"))
            .args(["-c", &format!("ls -l /proc/self/fd/ > {}", out.display())]);

        let mut child = spawn_gated(&cmd).await.unwrap().release().await.unwrap();
        child.wait().await.unwrap();

        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(leaky) };
        let fds = std::fs::read_to_string(&out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!fds.contains("leaky-file"), "{fds}");
    }
}
