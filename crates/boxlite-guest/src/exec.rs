//! Executions: spawning processes in the container root, their pipes, and reaping.
//!
//! As PID 1 the agent inherits every orphan, so it reaps with `waitpid(-1, WNOHANG)`.
//! That would steal exit statuses from a per-child waiter, so this module owns all
//! waiting: [`Processes::reap`] and [`Processes::spawn`] share one lock. A child cannot
//! be reaped before its status slot is registered, and a pid cannot be reused while a
//! signal is being sent to it (a zombie keeps its pid until reaped, and reaping needs the
//! lock the sender holds).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};

use crate::sys;

/// The `PATH` a process gets when the request does not set one (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `HOME` a process gets when the request does not set one. Processes run as root
/// for now; per-user homes come from the image's passwd with user support.
pub const DEFAULT_HOME: &str = "/root";

/// Finished executions kept for late `Wait` and `ReadOutput` calls.
const KEEP_FINISHED: usize = 1024;

/// Output chunks buffered per pipe before the reader stops draining it, which then
/// blocks the writer in the guest: flow control end to end.
const PIPE_QUEUE: usize = 8;

/// How a process ended, and how many OOM kills the kernel had counted by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub exit: Exit,
    pub oom_kills: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal { signal: i32, core_dumped: bool },
}

impl Exit {
    fn from_wait_status(st: libc::c_int) -> Option<Exit> {
        if libc::WIFEXITED(st) {
            Some(Exit::Code(libc::WEXITSTATUS(st)))
        } else if libc::WIFSIGNALED(st) {
            Some(Exit::Signal {
                signal: libc::WTERMSIG(st),
                core_dumped: libc::WCOREDUMP(st),
            })
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("executable {program:?} not found in the container (PATH={path})")]
    NotFound { program: String, path: String },
    #[error("{program:?} is not an executable file")]
    NotExecutable { program: String },
    #[error("working directory {0:?} does not exist in the container")]
    NoWorkdir(String),
    #[error("working directory {0:?} is not a directory")]
    WorkdirNotDir(String),
    #[error("container root is not mounted")]
    NoRoot(#[source] io::Error),
    #[error("spawning {program:?}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// What to run. Mirrors the protocol's `ExecRequest`.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: String,
    pub stdin: bool,
    /// Kill the process group after this long; `None` for no limit.
    pub timeout: Option<std::time::Duration>,
    /// `name|uid[:group|gid]`, resolved against the image; `None` runs as root.
    pub user: Option<String>,
    /// Run on a new pseudo-terminal of this many rows and columns.
    pub tty: Option<(u16, u16)>,
    /// The capabilities the process keeps (a mask of `CAP_*` numbers; see
    /// `ExecRequest.capabilities`).
    pub capabilities: u64,
}

pub type Chunk = Vec<u8>;

/// Where stdin data goes: a pipe, or the master side of the execution's terminal.
#[derive(Debug)]
pub enum StdinSink {
    Pipe(pipe::Sender),
    Pty(sys::PtyMaster),
}

impl AsyncWrite for StdinSink {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            StdinSink::Pipe(p) => std::pin::Pin::new(p).poll_write(cx, data),
            StdinSink::Pty(p) => std::pin::Pin::new(p).poll_write(cx, data),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            StdinSink::Pipe(p) => std::pin::Pin::new(p).poll_flush(cx),
            StdinSink::Pty(p) => std::pin::Pin::new(p).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            StdinSink::Pipe(p) => std::pin::Pin::new(p).poll_shutdown(cx),
            StdinSink::Pty(p) => std::pin::Pin::new(p).poll_shutdown(cx),
        }
    }
}

/// A pipe's receiving end, parked here while no client is reading it.
pub type OutputSlot = Arc<Mutex<Option<mpsc::Receiver<Chunk>>>>;

#[derive(Debug)]
pub struct Execution {
    pub id: String,
    pub pid: i32,
    pub stdout: OutputSlot,
    pub stderr: OutputSlot,
    pub stdin: Arc<tokio::sync::Mutex<Option<StdinSink>>>,
    pub exit: watch::Receiver<Option<Finished>>,
    /// Set when the agent ended the process because its timeout expired.
    pub timed_out: Arc<std::sync::atomic::AtomicBool>,
    /// The terminal's master side, for window size changes; `None` without a TTY.
    pub pty: Option<OwnedFd>,
    /// The kernel's OOM kill count when the process started.
    pub oom_kills_at_start: u64,
}

impl Execution {
    /// Whether the OOM killer ran while this execution's process lived and the process
    /// then died the way its victims do (SIGKILL, or a shell reporting 137).
    pub fn oom_killed(&self, f: &Finished) -> bool {
        let killed = matches!(
            f.exit,
            Exit::Signal {
                signal: libc::SIGKILL,
                ..
            } | Exit::Code(137)
        );
        killed
            && f.oom_kills > self.oom_kills_at_start
            && !self.timed_out.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The kernel's count of OOM kills since boot (`oom_kill` in /proc/vmstat).
pub fn oom_kill_count() -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .ok()
        .and_then(|s| parse_oom_kills(&s))
        .unwrap_or(0)
}

fn parse_oom_kills(vmstat: &str) -> Option<u64> {
    vmstat
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[derive(Debug, Default)]
struct Table {
    /// Live children by pid, with the sender for their exit status.
    live: HashMap<i32, watch::Sender<Option<Finished>>>,
}

/// The agent's process table.
#[derive(Debug)]
pub struct Processes {
    root: PathBuf,
    table: Mutex<Table>,
    execs: Mutex<HashMap<String, Arc<Execution>>>,
    finished: Mutex<VecDeque<String>>,
    /// Executions started since boot.
    pub started: std::sync::atomic::AtomicU64,
    /// Guest uptime at the first Exec, once there was one.
    pub first_exec_uptime: std::sync::OnceLock<f64>,
    /// Whether processes get the variables naming the box's CA ([`crate::trust::ENV`]).
    ca_env: std::sync::atomic::AtomicBool,
    /// The cgroup every process joins before it runs ([`crate::freeze`]); `None` without
    /// a cgroup v2 freezer.
    workload: Option<Arc<crate::freeze::Workload>>,
    /// The namespaces every process joins ([`crate::container`]); `None` only when the
    /// agent is not PID 1 (tests), where processes are merely chrooted into `root`.
    container: Option<Arc<crate::container::Container>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Processes {
    pub fn new(
        root: impl Into<PathBuf>,
        workload: Option<Arc<crate::freeze::Workload>>,
        container: Option<Arc<crate::container::Container>>,
    ) -> Arc<Self> {
        Arc::new(Processes {
            root: root.into(),
            table: Mutex::new(Table::default()),
            execs: Mutex::new(HashMap::new()),
            finished: Mutex::new(VecDeque::new()),
            started: std::sync::atomic::AtomicU64::new(0),
            first_exec_uptime: std::sync::OnceLock::new(),
            ca_env: std::sync::atomic::AtomicBool::new(false),
            workload,
            container,
        })
    }

    /// A descriptor of the container root as the workload sees it (its own mounts
    /// included), for resolving paths inside it.
    pub fn root_fd(&self) -> io::Result<OwnedFd> {
        match &self.container {
            Some(c) => c.root_fd(),
            None => sys::open_dir(&self.root),
        }
    }

    /// From now on, give every process the variables naming the box's CA, unless its
    /// request sets them.
    pub fn use_ca_env(&self) {
        self.ca_env.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The environment of a process: the request's, then, for each default the request
    /// does not set, the default (`PATH`, `HOME`, `TERM` on a terminal, and the CA's
    /// variables once it is installed).
    fn environment(&self, spec: &Spec, home: &str) -> Vec<(String, String)> {
        let mut env = spec.env.clone();
        let mut defaults = vec![("PATH", DEFAULT_PATH), ("HOME", home)];
        if spec.tty.is_some() {
            // As `docker run -t` does; programs need it to drive the terminal.
            defaults.push(("TERM", "xterm"));
        }
        if self.ca_env.load(std::sync::atomic::Ordering::SeqCst) {
            defaults.extend(crate::trust::ENV);
        }
        for (key, value) in defaults {
            if !env.iter().any(|(k, _)| k == key) {
                env.push((key.into(), value.into()));
            }
        }
        env
    }

    /// Executions whose process is still running.
    pub fn running(&self) -> usize {
        lock(&self.table).live.len()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Execution>> {
        lock(&self.execs).get(id).cloned()
    }

    /// Reap every child that has exited, ours or inherited.
    pub fn reap(&self) {
        let mut table = lock(&self.table);
        let mut oom_kills = None;
        loop {
            let mut st: libc::c_int = 0;
            // SAFETY: st is a valid out pointer; WNOHANG makes the call non-blocking.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            let Some(exit) = Exit::from_wait_status(st) else {
                continue;
            };
            if let Some(tx) = table.live.remove(&pid) {
                crate::server::activity::execution_ended();
                let oom_kills = *oom_kills.get_or_insert_with(oom_kill_count);
                let _ = tx.send(Some(Finished { exit, oom_kills }));
            }
        }
    }

    /// Deliver `signal` to the execution's process, or to its whole process group.
    /// A process that has already exited is left alone.
    pub fn signal(&self, exec: &Execution, signal: i32, group: bool) -> io::Result<()> {
        let table = lock(&self.table);
        if !table.live.contains_key(&exec.pid) {
            return Ok(());
        }
        let target = if group { -exec.pid } else { exec.pid };
        match sys::kill(target, signal) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r,
        }
    }

    /// Resolve the working directory and the program inside the container root, then spawn.
    pub fn spawn(self: &Arc<Self>, spec: Spec) -> Result<Arc<Execution>, ExecError> {
        if spec.program.is_empty() {
            return Err(ExecError::Invalid("program is empty".into()));
        }
        let workdir = if spec.working_dir.is_empty() {
            "/".to_string()
        } else if spec.working_dir.starts_with('/') {
            spec.working_dir.clone()
        } else {
            return Err(ExecError::Invalid(format!(
                "working directory {:?} must be absolute",
                spec.working_dir
            )));
        };
        let root_fd = self.root_fd().map_err(ExecError::NoRoot)?;
        check_workdir(&root_fd, &workdir)?;
        let ident = match &spec.user {
            Some(u) => Some(crate::users::resolve(&root_fd, u).map_err(ExecError::Invalid)?),
            None => None,
        };
        let home = ident.as_ref().map_or(DEFAULT_HOME, |i| i.home.as_str());
        let env = self.environment(&spec, home);
        let path_var = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let resolved = resolve_program(&root_fd, &spec.program, &workdir, &path_var)?;
        drop(root_fd);

        let root_c = sys::cstr(&self.root).map_err(|e| ExecError::Invalid(e.to_string()))?;
        let workdir_c = sys::cstr(&workdir).map_err(|e| ExecError::Invalid(e.to_string()))?;
        let mut cmd = Command::new(&resolved);
        cmd.arg0(&spec.program)
            .args(&spec.args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let pty = match spec.tty {
            Some((rows, cols)) => {
                let ptmx = self.root.join("dev/pts/ptmx");
                let (master, slave) =
                    sys::openpty(&ptmx, rows, cols).map_err(|source| ExecError::Spawn {
                        program: spec.program.clone(),
                        source,
                    })?;
                let dup = |fd: &OwnedFd| {
                    fd.try_clone().map_err(|source| ExecError::Spawn {
                        program: spec.program.clone(),
                        source,
                    })
                };
                cmd.stdin(Stdio::from(dup(&slave)?))
                    .stdout(Stdio::from(dup(&slave)?))
                    .stderr(Stdio::from(slave));
                Some(master)
            }
            None => None,
        };
        let tty = pty.is_some();
        // Open as long as `self.workload` holds it, which outlives the spawn.
        let workload_procs = self.workload.as_ref().map(|w| w.procs_fd());
        // Likewise held by `self.container`.
        let join = self.container.as_ref().map(|c| c.join());
        let caps = spec.capabilities;
        let root_user = ident.as_ref().is_none_or(|i| i.uid == 0);
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // syscalls on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // Into the workload's cgroup first, so that the process (and whatever it
                // starts) can be frozen before it runs anything of its own.
                if let Some(fd) = workload_procs {
                    crate::freeze::join(fd)?;
                }
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                // The new session's controlling terminal: std has already made the
                // terminal's slave side fds 0-2.
                if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                match join {
                    Some(j) => crate::container::enter(j)?,
                    None if libc::chroot(root_c.as_ptr()) < 0 => {
                        return Err(io::Error::last_os_error());
                    }
                    None => {}
                }
                // The bounding set first, while CAP_SETPCAP is still there.
                crate::container::drop_caps_to(caps)?;
                // Drop to the user: supplementary groups, then the group, then the
                // user, the only order in which each step is still permitted. A
                // non-root user loses its permitted and effective sets here.
                if let Some(id) = &ident
                    && (libc::setgroups(id.groups.len(), id.groups.as_ptr()) < 0
                        || libc::setgid(id.gid) < 0
                        || libc::setuid(id.uid) < 0)
                {
                    return Err(io::Error::last_os_error());
                }
                // Root keeps the mask (execve then gives it back as permitted and
                // effective); anyone else starts with nothing, as in Docker.
                crate::container::set_caps(if root_user { caps } else { 0 })?;
                if libc::chdir(workdir_c.as_ptr()) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }

        let (exit_tx, exit_rx) = watch::channel(None);
        let oom_kills_at_start = oom_kill_count();
        let mut child = {
            let mut table = lock(&self.table);
            let spawn_err = |source| ExecError::Spawn {
                program: spec.program.clone(),
                source,
            };
            // The child is born in the container's PID namespace, still our child.
            let in_ns = match &self.container {
                Some(c) => Some(c.enter_pid_ns().map_err(spawn_err)?),
                None => None,
            };
            let child = cmd.spawn().map_err(spawn_err);
            drop(in_ns);
            let child = child?;
            table.live.insert(child.id().cast_signed(), exit_tx);
            child
        };
        // The slave side's copies in `cmd` close here: the terminal then hangs up once
        // the process tree lets go of it.
        drop(cmd);
        let pid = child.id().cast_signed();
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.first_exec_uptime.get_or_init(uptime_secs);
        let (stdin, stdout, stderr, pty) = match pty {
            Some(master) => {
                let io_err = |source| ExecError::Spawn {
                    program: spec.program.clone(),
                    source,
                };
                let reader =
                    sys::PtyMaster::new(master.try_clone().map_err(io_err)?).map_err(io_err)?;
                let stdin: Option<StdinSink> = if spec.stdin {
                    let writer =
                        sys::PtyMaster::new(master.try_clone().map_err(io_err)?).map_err(io_err)?;
                    Some(StdinSink::Pty(writer))
                } else {
                    None
                };
                (
                    stdin,
                    spawn_pump(Some(reader)),
                    spawn_pump(None::<pipe::Receiver>),
                    Some(master),
                )
            }
            None => {
                let stdin: Option<StdinSink> = child
                    .stdin
                    .take()
                    .and_then(|s| pipe::Sender::from_owned_fd(OwnedFd::from(s)).ok())
                    .map(StdinSink::Pipe);
                let out = child
                    .stdout
                    .take()
                    .and_then(|s| pipe::Receiver::from_owned_fd(OwnedFd::from(s)).ok());
                let err = child
                    .stderr
                    .take()
                    .and_then(|s| pipe::Receiver::from_owned_fd(OwnedFd::from(s)).ok());
                (stdin, spawn_pump(out), spawn_pump(err), None)
            }
        };
        // The std handle is not waited on: the reaper owns waiting.
        drop(child);

        let exec = Arc::new(Execution {
            id: new_exec_id(),
            pid,
            stdout,
            stderr,
            stdin: Arc::new(tokio::sync::Mutex::new(stdin)),
            exit: exit_rx,
            timed_out: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            pty,
            oom_kills_at_start,
        });
        lock(&self.execs).insert(exec.id.clone(), exec.clone());
        self.retire_when_done(exec.clone());
        if let Some(limit) = spec.timeout {
            self.enforce_timeout(exec.clone(), limit);
        }
        Ok(exec)
    }

    /// When `limit` passes before the process exits, SIGKILL its whole process group
    /// (the process and everything it started that stayed in its session's group) and
    /// mark the execution as timed out.
    fn enforce_timeout(self: &Arc<Self>, exec: Arc<Execution>, limit: std::time::Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut rx = exec.exit.clone();
            if tokio::time::timeout(limit, rx.wait_for(|e| e.is_some()))
                .await
                .is_ok()
            {
                return;
            }
            exec.timed_out
                .store(true, std::sync::atomic::Ordering::SeqCst);
            if let Err(e) = this.signal(&exec, libc::SIGKILL, true) {
                eprintln!(
                    "boxlite-guest: killing timed-out execution {}: {e}",
                    exec.id
                );
            }
        });
    }

    /// Once the process exits, remember it as finished, and forget the oldest finished
    /// executions beyond [`KEEP_FINISHED`].
    fn retire_when_done(self: &Arc<Self>, exec: Arc<Execution>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut rx = exec.exit.clone();
            let _ = rx.wait_for(|e| e.is_some()).await;
            let mut finished = lock(&this.finished);
            finished.push_back(exec.id.clone());
            while finished.len() > KEEP_FINISHED {
                if let Some(old) = finished.pop_front() {
                    lock(&this.execs).remove(&old);
                }
            }
        });
    }
}

/// A fresh execution id. Uses `GRND_INSECURE`: early in boot the guest CRNG may not be
/// seeded yet, and a blocking `getrandom` would stall the whole Exec call. Ids only need
/// to be unique, not secret; a counter keeps them unique even if the kernel refuses.
fn new_exec_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is valid for its length; GRND_INSECURE never blocks.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_INSECURE) };
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if usize::try_from(n).ok() != Some(bytes.len()) {
        bytes = count.to_be_bytes();
    }
    let mut id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    id.push_str(&format!("{count:04x}"));
    id
}

/// Guest uptime in seconds.
pub fn uptime_secs() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Read a pipe or terminal in chunks into a bounded queue, so a slow reader slows the
/// writer instead of growing memory. A read error ends the stream: for a terminal,
/// `EIO` is how the master side sees the last slave fd close.
fn spawn_pump<R: AsyncRead + Send + Unpin + 'static>(source: Option<R>) -> OutputSlot {
    let (tx, rx) = mpsc::channel::<Chunk>(PIPE_QUEUE);
    let slot = Arc::new(Mutex::new(Some(rx)));
    let Some(mut pipe) = source else {
        return slot;
    };
    tokio::spawn(async move {
        let mut buf = vec![0u8; boxlite_protocol::MAX_CHUNK];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    slot
}

fn check_workdir(root: &OwnedFd, workdir: &str) -> Result<(), ExecError> {
    let fd = sys::open_in_root(root, workdir, libc::O_PATH).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENOENT) {
            ExecError::NoWorkdir(workdir.into())
        } else {
            ExecError::WorkdirNotDir(workdir.into())
        }
    })?;
    let st = sys::fstat(&fd).map_err(|_| ExecError::NoWorkdir(workdir.into()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(ExecError::WorkdirNotDir(workdir.into()));
    }
    Ok(())
}

fn is_executable_file(root: &OwnedFd, path: &str) -> Option<bool> {
    let fd = sys::open_in_root(root, path, libc::O_PATH).ok()?;
    let st = sys::fstat(&fd).ok()?;
    Some(st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0)
}

/// Find the program the way `execvp` would inside the container, but with symlinks
/// resolved inside the container root, and with an error that names what was searched.
/// Returns a path valid after `chroot`.
fn resolve_program(
    root: &OwnedFd,
    program: &str,
    workdir: &str,
    path_var: &str,
) -> Result<String, ExecError> {
    if program.contains('/') {
        let full = if program.starts_with('/') {
            program.to_string()
        } else {
            Path::new(workdir)
                .join(program)
                .to_string_lossy()
                .into_owned()
        };
        return match is_executable_file(root, &full) {
            Some(true) => Ok(full),
            Some(false) => Err(ExecError::NotExecutable {
                program: program.into(),
            }),
            None => Err(ExecError::NotFound {
                program: program.into(),
                path: path_var.into(),
            }),
        };
    }
    let mut non_exec = false;
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let dir = if dir.starts_with('/') {
            dir.to_string()
        } else {
            Path::new(workdir).join(dir).to_string_lossy().into_owned()
        };
        let candidate = format!("{}/{program}", dir.trim_end_matches('/'));
        match is_executable_file(root, &candidate) {
            Some(true) => return Ok(candidate),
            Some(false) => non_exec = true,
            None => {}
        }
    }
    if non_exec {
        Err(ExecError::NotExecutable {
            program: program.into(),
        })
    } else {
        Err(ExecError::NotFound {
            program: program.into(),
            path: path_var.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_count_is_read_from_its_own_vmstat_line() {
        let text = "oom_kill_other 9\nnr_free_pages 100\noom_kill 3\n";

        assert_eq!(parse_oom_kills(text), Some(3));
        assert_eq!(parse_oom_kills("nr_free_pages 1\n"), None);
    }

    #[test]
    fn wait_status_distinguishes_exit_code_from_signal() {
        assert_eq!(Exit::from_wait_status(7 << 8), Some(Exit::Code(7)));
        assert_eq!(
            Exit::from_wait_status(9),
            Some(Exit::Signal {
                signal: 9,
                core_dumped: false
            })
        );
    }

    #[test]
    fn program_resolution_stays_inside_root_through_absolute_symlinks() {
        let dir = std::env::temp_dir().join(format!("bxg-{}", new_exec_id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all(dir.join("real")).unwrap();
        let target = dir.join("real/tool");
        std::fs::write(&target, b"#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        // An absolute link, valid only when resolved inside the root.
        std::os::unix::fs::symlink("/real/tool", dir.join("bin/tool")).unwrap();
        // A link pointing at a host path that must not be followed out of the root.
        std::os::unix::fs::symlink("/usr/bin/env", dir.join("bin/escape")).unwrap();
        let root = sys::open_dir(&dir).unwrap();

        let found = resolve_program(&root, "tool", "/", "/bin").unwrap();
        let escaped = resolve_program(&root, "escape", "/", "/bin");

        assert_eq!(found, "/bin/tool");
        assert!(matches!(escaped, Err(ExecError::NotFound { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn spec_with_env(env: &[(&str, &str)]) -> Spec {
        Spec {
            program: "sh".into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Spec::default()
        }
    }

    #[test]
    fn ca_variables_are_added_only_once_the_ca_is_installed() {
        let procs = Processes::new("/nonexistent", None, None);
        let spec = spec_with_env(&[("LANG", "C.UTF-8")]);

        let before = procs.environment(&spec, DEFAULT_HOME);
        procs.use_ca_env();
        let after = procs.environment(&spec, DEFAULT_HOME);

        assert_eq!(
            before,
            [
                ("LANG", "C.UTF-8"),
                ("PATH", DEFAULT_PATH),
                ("HOME", DEFAULT_HOME)
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(after[..3], before[..]);
        assert_eq!(
            after[3..],
            [
                ("SSL_CERT_FILE", "/etc/boxlite/ca-bundle.crt"),
                ("REQUESTS_CA_BUNDLE", "/etc/boxlite/ca-bundle.crt"),
                ("CURL_CA_BUNDLE", "/etc/boxlite/ca-bundle.crt"),
                ("NODE_EXTRA_CA_CERTS", "/etc/boxlite/ca.crt"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn a_ca_variable_the_request_sets_is_never_overridden() {
        let procs = Processes::new("/nonexistent", None, None);
        procs.use_ca_env();
        let spec = spec_with_env(&[("SSL_CERT_FILE", "/mine.pem"), ("NODE_EXTRA_CA_CERTS", "")]);

        let env = procs.environment(&spec, DEFAULT_HOME);

        let values = |key: &str| -> Vec<&str> {
            env.iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(values("SSL_CERT_FILE"), ["/mine.pem"]);
        assert_eq!(values("NODE_EXTRA_CA_CERTS"), [""]);
        assert_eq!(values("CURL_CA_BUNDLE"), ["/etc/boxlite/ca-bundle.crt"]);
    }

    #[test]
    fn missing_workdir_is_reported_by_name() {
        let dir = std::env::temp_dir().join(format!("bxg-{}", new_exec_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = sys::open_dir(&dir).unwrap();

        let err = check_workdir(&root, "/nope").unwrap_err();

        assert_eq!(
            err.to_string(),
            "working directory \"/nope\" does not exist in the container"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
