//! The box handle and its lifecycle: start, stop, exec, remove.
//!
//! A box is a row in the state database plus a directory of files, and it outlives the
//! process that created it. Any process may hold a handle to it, so a handle caches
//! nothing but its agent connection: every operation takes the box's file lock, reads the
//! row, reconciles it with the processes that really exist, acts, and writes the row back.
//! Operations that change the box (start, stop, remove) take the lock exclusively; exec
//! takes it shared, only long enough to see the box running, so many execs from many
//! processes proceed at once.

pub(crate) mod boot;
pub mod copy;
pub mod exec;
pub mod metrics;
pub mod record;
pub mod state;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

pub use copy::{CopyError, CopyOptions, CopyStats};
pub use exec::{BoxCommand, ExecError, ExecOutput, ExecStdin, Execution};
pub use metrics::{BootStages, BoxMetrics};
pub use record::{BoxConfig, BoxRow, BoxStatus, Health, HealthOptions, HealthState};
pub use state::BoxState;

use crate::portal::AgentClient;
use crate::runtime::RuntimeInner;
use crate::runtime::layout::SocketPaths;
use crate::util::lock::{FileLock, LockMode};
use boot::BootGuard;

#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    #[error("no box with id or name {0:?}")]
    NotFound(String),
    #[error("box id prefix {prefix:?} is ambiguous; it matches {candidates}")]
    Ambiguous { prefix: String, candidates: String },
    #[error("box {id} cannot go from {from} to {to}")]
    InvalidTransition {
        id: String,
        from: BoxState,
        to: BoxState,
    },
    #[error("box {id} failed to boot: {reason}\n--- console log (tail) ---\n{console}")]
    BootFailed {
        id: String,
        reason: String,
        console: String,
    },
    #[error("box {id} is {state}; stop it first or remove it with force")]
    Busy { id: String, state: BoxState },
    #[error("box {id} is {state}; its executions ended with its VM")]
    NotRunning { id: String, state: BoxState },
    #[error("invalid box option: {0}")]
    InvalidOption(String),
    #[error("box {id}: locking {path}")]
    Lock {
        id: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How a box is built. Validated when the box is created.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxOptions {
    pub image: String,
    /// A unique name; the box can be addressed by it wherever an id is accepted.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "record::default_memory")]
    pub memory_mib: u32,
    #[serde(default = "record::default_cpus")]
    pub cpus: u32,
    /// Remove the box as soon as it stops, including when its VM dies on its own.
    #[serde(default)]
    pub auto_remove: bool,
    #[serde(default)]
    pub health: HealthOptions,
    /// Managed volumes to mount; see [`crate::volumes`].
    #[serde(default)]
    pub volumes: Vec<crate::volumes::VolumeSpec>,
    /// The root disk's size in MiB: at least the image's. Default: the image's (built
    /// images carry at least 1 GiB of free space). A larger disk is grown into at the
    /// box's first boot, which costs boot time under TCG (about 0.5 s per GiB). The disk
    /// file is sparse and only grows by what the box writes.
    #[serde(default)]
    pub disk_size_mib: Option<u64>,
    /// Replaces the image's entrypoint (empty: none), and, as in Docker, drops its
    /// default command.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
}

impl BoxOptions {
    pub fn new(image: impl Into<String>) -> Self {
        BoxOptions {
            image: image.into(),
            name: None,
            memory_mib: record::default_memory(),
            cpus: record::default_cpus(),
            auto_remove: false,
            health: HealthOptions::default(),
            volumes: Vec::new(),
            disk_size_mib: None,
            entrypoint: None,
        }
    }

    /// The root disk's size; see [`BoxOptions::disk_size_mib`].
    pub fn disk_size_mib(mut self, mib: u64) -> Self {
        self.disk_size_mib = Some(mib);
        self
    }

    /// Replace the image's entrypoint; see [`BoxOptions::entrypoint`].
    pub fn entrypoint<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.entrypoint = Some(argv.into_iter().map(Into::into).collect());
        self
    }

    pub fn volume(mut self, spec: crate::volumes::VolumeSpec) -> Self {
        self.volumes.push(spec);
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    pub fn auto_remove(mut self, yes: bool) -> Self {
        self.auto_remove = yes;
        self
    }

    pub fn health(mut self, health: HealthOptions) -> Self {
        self.health = health;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), BoxError> {
        let bad = |m: String| Err(BoxError::InvalidOption(m));
        if !(64..=65536).contains(&self.memory_mib) {
            return bad(format!(
                "memory {} MiB is out of range (64-65536)",
                self.memory_mib
            ));
        }
        if !(1..=64).contains(&self.cpus) {
            return bad(format!("cpus {} is out of range (1-64)", self.cpus));
        }
        if let Some(n) = &self.name {
            validate_name(n)?;
        }
        if let Some(d) = self.disk_size_mib
            && !(64..=(16 << 20)).contains(&d)
        {
            return bad(format!(
                "disk size {d} MiB is out of range (64 MiB - 16 TiB)"
            ));
        }
        // An empty entrypoint clears the image's; one with an empty program is a mistake.
        if self
            .entrypoint
            .as_ref()
            .and_then(|e| e.first())
            .is_some_and(|p| p.is_empty())
        {
            return bad("an entrypoint's program cannot be empty".into());
        }
        let h = &self.health;
        if h.interval_secs > 0 && (h.timeout_secs == 0 || h.retries == 0) {
            return bad(format!(
                "health check timeout ({}s) and retries ({}) must be at least 1 when checks are on (interval {}s)",
                h.timeout_secs, h.retries, h.interval_secs
            ));
        }
        Ok(())
    }
}

/// `Entrypoint + (args or Cmd)`.
pub(crate) fn image_argv(run: &crate::images::registry::RunConfig, args: &[String]) -> Vec<String> {
    let mut argv = run.entrypoint.clone().unwrap_or_default();
    if args.is_empty() {
        argv.extend(run.cmd.clone().unwrap_or_default());
    } else {
        argv.extend(args.iter().cloned());
    }
    argv
}

/// Fill in what the command leaves unset from the image's config: its Env entries
/// (the command's own variables win), WorkingDir and User.
pub(crate) fn apply_image_defaults(
    spec: &mut crate::portal::ExecSpec,
    run: &crate::images::registry::RunConfig,
) {
    let mut env: Vec<(String, String)> = Vec::new();
    for kv in &run.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        if k.is_empty() || spec.env.iter().any(|(sk, _)| sk == k) {
            continue;
        }
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    env.append(&mut spec.env);
    spec.env = env;
    if spec.working_dir.is_none() && !run.working_dir.is_empty() {
        spec.working_dir = Some(run.working_dir.clone());
    }
    if spec.user.is_none() && !run.user.is_empty() {
        spec.user = Some(run.user.clone());
    }
}

/// Names follow Docker's rule: a letter or digit, then letters, digits, `_`, `.` or `-`;
/// at most 64 characters. A name cannot be 32 hex digits, which reads as a box id.
pub fn validate_name(name: &str) -> Result<(), BoxError> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let looks_like_id = name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok_first || !ok_rest || name.len() > 64 || looks_like_id {
        return Err(BoxError::InvalidOption(format!(
            "invalid name {name:?}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit, and not a 32-digit hex id"
        )));
    }
    Ok(())
}

/// Public information about a box, as `inspect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BoxInfo {
    pub id: String,
    pub name: Option<String>,
    pub image: String,
    pub image_digest: String,
    pub state: BoxState,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub stopped_at: Option<u64>,
    pub last_error: Option<String>,
    pub health: Health,
    pub config: BoxConfig,
    pub vmm_pid: Option<i32>,
    pub vsock_helper_pid: Option<i32>,
    pub monitor_pid: Option<i32>,
    /// Derived from the id and home, never stored.
    pub dir: std::path::PathBuf,
    pub console_log: std::path::PathBuf,
    pub socket_dir: std::path::PathBuf,
}

impl BoxInfo {
    pub(crate) fn from_row(rt: &RuntimeInner, row: &BoxRow) -> BoxInfo {
        let paths = rt.box_paths(&row.id);
        let st = &row.status;
        BoxInfo {
            id: row.id.clone(),
            name: row.name.clone(),
            image: row.config.image.clone(),
            image_digest: row.config.image_digest.clone(),
            state: st.state,
            created_at: row.created_at,
            started_at: st.started_at,
            stopped_at: st.stopped_at,
            last_error: st.last_error.clone(),
            health: st.health.clone(),
            config: row.config.clone(),
            vmm_pid: st.vmm.map(|p| p.pid),
            vsock_helper_pid: st.vsock_helper.map(|p| p.pid),
            monitor_pid: st.monitor.map(|p| p.pid),
            console_log: paths.console_log(),
            dir: paths.dir,
            socket_dir: SocketPaths::for_box(&row.id).dir,
        }
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A handle to one box. Clones share the agent connection.
#[derive(Clone)]
pub struct LiteBox {
    rt: Arc<RuntimeInner>,
    id: String,
    client: Arc<Mutex<Option<AgentClient>>>,
}

impl std::fmt::Debug for LiteBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiteBox").field("id", &self.id).finish()
    }
}

/// A box's row read under its lock.
struct Locked {
    row: BoxRow,
    lock: FileLock,
}

impl LiteBox {
    pub(crate) fn handle(rt: Arc<RuntimeInner>, id: String) -> Self {
        LiteBox {
            rt,
            id,
            client: Arc::new(Mutex::new(None)),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    async fn lock(&self, mode: LockMode) -> Result<Locked, crate::Error> {
        let path = self.rt.layout.lock_path(&self.id);
        let lock = FileLock::acquire(&path, mode)
            .await
            .map_err(|source| BoxError::Lock {
                id: self.id.clone(),
                path,
                source,
            })?;
        let row = self
            .rt
            .db
            .get(&self.id)?
            .ok_or_else(|| BoxError::NotFound(self.id.clone()))?;
        Ok(Locked { row, lock })
    }

    /// Lock exclusively and bring the row in line with the processes that exist.
    /// A box created with `auto_remove` that turns out to have stopped is removed here,
    /// and reported as not found.
    async fn lock_reconciled(&self) -> Result<Locked, crate::Error> {
        let mut l = self.lock(LockMode::Exclusive).await?;
        reconcile_locked(&self.rt, &mut l.row)?;
        if due_for_auto_remove(&l.row) {
            remove_locked(&self.rt, &l.row, &l.lock)?;
            return Err(BoxError::NotFound(self.id.clone()).into());
        }
        Ok(l)
    }

    fn save(&self, status: &BoxStatus) -> Result<(), crate::Error> {
        if !self.rt.db.update_status(&self.id, status)? {
            return Err(BoxError::NotFound(self.id.clone()).into());
        }
        Ok(())
    }

    fn transition(&self, row: &mut BoxRow, to: BoxState) -> Result<(), crate::Error> {
        if !row.status.state.can_transition(to) {
            return Err(BoxError::InvalidTransition {
                id: self.id.clone(),
                from: row.status.state,
                to,
            }
            .into());
        }
        row.status.state = to;
        self.save(&row.status)
    }

    /// The box as stored now, reconciled with reality when nobody else is working on it.
    pub async fn info(&self) -> Result<BoxInfo, crate::Error> {
        let row = self
            .rt
            .db
            .get(&self.id)?
            .ok_or_else(|| BoxError::NotFound(self.id.clone()))?;
        let row = reconcile_if_idle(&self.rt, row)?;
        Ok(BoxInfo::from_row(&self.rt, &row))
    }

    pub async fn state(&self) -> Result<BoxState, crate::Error> {
        Ok(self.info().await?.state)
    }

    /// Boot the box and wait until its agent is ready. Starting a running box does
    /// nothing.
    pub async fn start(&self) -> Result<(), crate::Error> {
        let mut l = self.lock_reconciled().await?;
        if l.row.status.state == BoxState::Running {
            return Ok(());
        }
        self.start_locked(&mut l).await
    }

    async fn start_locked(&self, l: &mut Locked) -> Result<(), crate::Error> {
        let row = &mut l.row;
        if !row.status.state.can_transition(BoxState::Running) {
            return Err(BoxError::InvalidTransition {
                id: self.id.clone(),
                from: row.status.state,
                to: BoxState::Running,
            }
            .into());
        }
        let t0 = Instant::now();
        let sockets = SocketPaths::for_box(&self.id);
        sockets.create(self.rt.layout.home())?;
        let mut guard = BootGuard {
            procs: Vec::new(),
            sockets: sockets.clone(),
            armed: true,
        };
        let save = |st: &BoxStatus| self.save(st);
        let booted = boot::boot(&self.rt, row, &mut guard, &save).await;
        // The box only counts as started once its Running state is saved; until then
        // the guard still owns the processes.
        let result = match booted {
            Ok(client) => {
                *self.client.lock().await = Some(client);
                row.status.last_error = None;
                row.status.started_at = Some(now_secs());
                row.status.health = Health::default();
                self.transition(row, BoxState::Running)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                guard.armed = false;
                tracing::info!(box_id = %self.id, ms = t0.elapsed().as_millis() as u64, "box started");
                crate::monitor::launch(&self.rt, row);
                if let Err(e) = self.save(&row.status) {
                    tracing::warn!(box_id = %self.id, error = %e, "recording the monitor");
                }
                Ok(())
            }
            Err(e) => {
                guard.cleanup().await;
                guard.armed = false;
                *self.client.lock().await = None;
                let st = &mut row.status;
                st.vmm = None;
                st.vsock_helper = None;
                st.last_error = Some(crate::error_chain(&e));
                st.stopped_at = Some(now_secs());
                let _ = self.transition(row, BoxState::Failed);
                if row.config.auto_remove {
                    remove_locked(&self.rt, &l.row, &l.lock)?;
                }
                Err(e)
            }
        }
    }

    /// The agent connection, reconnecting (for example from another process) if needed.
    /// A box that is not running is started first.
    async fn client(&self) -> Result<AgentClient, crate::Error> {
        {
            let l = self.lock(LockMode::Shared).await?;
            if l.row.status.state == BoxState::Running && l.row.status.vmm_alive() {
                return self.cached_client(&l.row.status).await;
            }
        }
        let mut l = self.lock_reconciled().await?;
        if l.row.status.state != BoxState::Running {
            *self.client.lock().await = None;
            self.start_locked(&mut l).await?;
        }
        self.cached_client(&l.row.status).await
    }

    /// The cached connection to a running box's agent, connecting on first use.
    async fn cached_client(&self, status: &BoxStatus) -> Result<AgentClient, crate::Error> {
        let mut cached = self.client.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let c = AgentClient::connect(status.agent_addr(&self.id)).await?;
        *cached = Some(c.clone());
        Ok(c)
    }

    /// Run a command in the box, starting the box if it is not running.
    pub async fn exec(&self, cmd: BoxCommand) -> Result<Execution, crate::Error> {
        let client = self.client().await?;
        // The image's Env, WorkingDir and User, unless the command sets its own. PATH and
        // HOME when nobody sets them are the agent's business: it knows the image.
        let mut spec = cmd.spec;
        if let Some(row) = self.rt.db.get(&self.id)? {
            apply_image_defaults(&mut spec, &row.config.run);
        }
        let id = client.exec(&spec).await.map_err(ExecError::from_exec_rpc)?;
        Ok(Execution::new(
            client,
            id,
            spec.stdin,
            Some(self.rt.box_paths(&self.id).console_log()),
        ))
    }

    /// The image's default command with `args` in place of its `Cmd` when any are given:
    /// `Entrypoint + (args or Cmd)`, as `docker run IMAGE [ARGS]` runs.
    pub fn image_command(&self, args: &[String]) -> Result<BoxCommand, crate::Error> {
        let row = self
            .rt
            .db
            .get(&self.id)?
            .ok_or_else(|| BoxError::NotFound(self.id.clone()))?;
        let argv = image_argv(&row.config.run, args);
        match argv.split_first() {
            Some((program, rest)) if !program.is_empty() => {
                Ok(BoxCommand::new(program.clone()).args(rest.iter().cloned()))
            }
            _ => Err(BoxError::InvalidOption(format!(
                "image {} has no default command; give one",
                row.config.image
            ))
            .into()),
        }
    }

    /// Attach to an execution started earlier, from this process or another, by id:
    /// its remaining output (what it wrote while nobody read waits in the agent, see
    /// `docs/architecture.md`) and its exit status. The box must be running.
    pub async fn attach(&self, exec_id: &str) -> Result<Execution, crate::Error> {
        let state = self.lock(LockMode::Shared).await?.row.status.state;
        if state != BoxState::Running {
            return Err(BoxError::NotRunning {
                id: self.id.clone(),
                state,
            }
            .into());
        }
        let client = self.client().await?;
        client
            .signal(exec_id, 0, false)
            .await
            .map_err(|e| match e.code() {
                Some(tonic::Code::NotFound) => ExecError::NoSuchExecution(exec_id.to_string()),
                _ => ExecError::Agent(e),
            })?;
        Ok(Execution::attached(
            client,
            exec_id.to_string(),
            Some(self.rt.box_paths(&self.id).console_log()),
        ))
    }

    /// Ask the agent whether it is alive, within `timeout`. Does not start the box.
    pub async fn ping(&self, timeout: Duration) -> Result<(), crate::Error> {
        let row = {
            let l = self.lock(LockMode::Shared).await?;
            l.row
        };
        if row.status.state != BoxState::Running {
            return Err(BoxError::InvalidTransition {
                id: self.id.clone(),
                from: row.status.state,
                to: BoxState::Running,
            }
            .into());
        }
        let addr = row.status.agent_addr(&self.id);
        let fut = async {
            let c = AgentClient::connect(addr).await?;
            c.ping().await.map(|_| ())
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(crate::portal::PortalError::Timeout(timeout).into()),
        }
    }

    /// Shut the guest down cleanly (sync, power off), waiting up to `timeout`, then make
    /// sure the VMM and its helpers are gone. Stopping a box that is not running does
    /// nothing. A box created with `auto_remove` is removed.
    pub async fn stop(&self, timeout: Duration) -> Result<(), crate::Error> {
        let mut l = self.lock_reconciled().await?;
        if l.row.status.state == BoxState::Running {
            self.stop_locked(&mut l, timeout).await?;
        }
        if due_for_auto_remove(&l.row) {
            remove_locked(&self.rt, &l.row, &l.lock)?;
        }
        Ok(())
    }

    async fn stop_locked(&self, l: &mut Locked, timeout: Duration) -> Result<(), crate::Error> {
        let row = &mut l.row;
        self.transition(row, BoxState::Stopping)?;
        let t0 = Instant::now();
        if let Some(vmm) = row.status.vmm.filter(|p| p.is_alive()) {
            let cached = self.client.lock().await.take();
            let client = match cached {
                Some(c) => Some(c),
                None => AgentClient::connect(row.status.agent_addr(&self.id))
                    .await
                    .ok(),
            };
            let asked = match client {
                Some(c) => tokio::time::timeout(timeout, c.shutdown())
                    .await
                    .is_ok_and(|r| r.is_ok()),
                None => false,
            };
            let left = timeout.saturating_sub(t0.elapsed());
            if !asked || !vmm.wait_gone(left).await {
                tracing::warn!(box_id = %self.id, "guest did not power off in time; killing the VMM");
            }
        }
        settle_stopped(&self.rt, row, None);
        self.save(&row.status)?;
        tracing::info!(box_id = %self.id, ms = t0.elapsed().as_millis() as u64, "box stopped");
        Ok(())
    }

    /// Stop (if running) and start again.
    pub async fn restart(&self, timeout: Duration) -> Result<(), crate::Error> {
        let mut l = self.lock_reconciled().await?;
        if l.row.status.state == BoxState::Running {
            self.stop_locked(&mut l, timeout).await?;
        }
        *self.client.lock().await = None;
        self.start_locked(&mut l).await
    }

    /// Remove the box: its processes (only when forced, if it runs), disk, logs, sockets
    /// and row.
    pub async fn remove(&self, force: bool) -> Result<(), crate::Error> {
        let mut l = self.lock_reconciled().await?;
        let state = l.row.status.state;
        if state.is_active() {
            if !force {
                return Err(BoxError::Busy {
                    id: self.id.clone(),
                    state,
                }
                .into());
            }
            settle_stopped(&self.rt, &mut l.row, None);
        }
        *self.client.lock().await = None;
        remove_locked(&self.rt, &l.row, &l.lock)
    }
}

/// Make sure none of the box's processes remain, remove its sockets, and record it as
/// Stopped (or keep Failed), with `reason` when the stop was not asked for. Shared by
/// every way a box stops. The caller saves the status.
pub(crate) fn settle_stopped(rt: &RuntimeInner, row: &mut BoxRow, reason: Option<&str>) {
    let st = &mut row.status;
    let me = std::process::id() as i32;
    let fs = std::mem::take(&mut st.virtiofsd);
    for p in [st.vmm.take(), st.vsock_helper.take(), st.monitor.take()]
        .into_iter()
        .flatten()
        .chain(fs)
        .filter(|p| p.pid != me)
    {
        p.kill_and_wait(Duration::from_secs(5));
    }
    SocketPaths::for_box(&row.id).remove_if_owned(rt.layout.home());
    if let Some(r) = reason {
        st.last_error = Some(r.to_string());
    }
    st.stopped_at = Some(now_secs());
    // Health describes a running agent; a stopped box has none.
    st.health = Health::default();
    if st.state.can_transition(BoxState::Stopped) {
        st.state = BoxState::Stopped;
    }
}

/// Bring a row in line with reality. The caller holds the box's exclusive lock, so any
/// operation the row describes as in progress was abandoned by a process that died.
/// Saves the row when it changed. Auto-removal is the caller's business.
pub(crate) fn reconcile_locked(rt: &RuntimeInner, row: &mut BoxRow) -> Result<bool, crate::Error> {
    let before = row.status.clone();
    if row.status.creating.is_some() {
        row.status.creating = None;
        row.status.state = BoxState::Failed;
        row.status.last_error =
            Some("creation was interrupted: the creating process exited".into());
    }
    match row.status.state {
        BoxState::Running if !row.status.vmm_alive() => {
            let pid = row.status.vmm.map(|p| p.pid).unwrap_or(0);
            let why = format!(
                "the VM process (pid {pid}) exited while the box was running{}",
                console_hint(rt, &row.id)
            );
            settle_stopped(rt, row, Some(&why));
        }
        BoxState::Stopping => {
            settle_stopped(
                rt,
                row,
                Some("a stop was interrupted; the VM was terminated"),
            );
        }
        BoxState::Configured | BoxState::Stopped | BoxState::Failed
            if !row.status.live_processes().is_empty() =>
        {
            settle_stopped(
                rt,
                row,
                Some("a start was interrupted; the VM was terminated"),
            );
            row.status.state = BoxState::Failed;
        }
        BoxState::Running if monitor_missing(row) => {
            // Someone killed the monitor; the box deserves one.
            crate::monitor::launch(rt, row);
        }
        _ => {}
    }
    let changed = row.status != before;
    if changed {
        tracing::info!(box_id = %row.id, from = %before.state, to = %row.status.state,
            reason = row.status.last_error.as_deref().unwrap_or(""), "reconciled box state");
        rt.db.update_status(&row.id, &row.status)?;
    }
    Ok(changed)
}

/// What the console log says about an unexpected VM exit: a kernel panic or the guest
/// powering itself off.
fn console_hint(rt: &RuntimeInner, id: &str) -> String {
    console_hint_at(&rt.box_paths(id).console_log())
}

/// [`console_hint`] for a console log path.
pub(crate) fn console_hint_at(console_log: &std::path::Path) -> String {
    let tail = crate::util::fsutil::tail_file(console_log, 4000);
    if let Some(line) = tail.lines().rev().find(|l| l.contains("Kernel panic")) {
        return format!("; console: {}", line.trim());
    }
    if tail.contains("reboot: Power down") {
        return "; the guest powered itself off".into();
    }
    String::new()
}

/// Whether a row looks inconsistent with reality or due for auto-removal, judged without
/// the lock (cheap: a few `/proc` reads).
pub(crate) fn needs_reconcile(row: &BoxRow) -> bool {
    let st = &row.status;
    st.creating.is_some()
        || st.state == BoxState::Stopping
        || (st.state == BoxState::Running && !st.vmm_alive())
        || (!st.state.is_active() && !st.live_processes().is_empty())
        || due_for_auto_remove(row)
        || monitor_missing(row)
}

/// A running box whose monitor is gone, when a monitor could be started.
fn monitor_missing(row: &BoxRow) -> bool {
    let st = &row.status;
    st.state == BoxState::Running
        && st.vmm_alive()
        && !st.monitor.is_some_and(|m| m.is_alive())
        && crate::monitor::shim_binary().is_some()
}

/// An `auto_remove` box that has stopped or failed.
pub(crate) fn due_for_auto_remove(row: &BoxRow) -> bool {
    row.config.auto_remove && matches!(row.status.state, BoxState::Stopped | BoxState::Failed)
}

/// Reconcile a row if it needs it and nobody holds the box's lock; otherwise return it as
/// read. Returns the row as it now stands (an auto-removed box comes back as NotFound).
pub(crate) fn reconcile_if_idle(rt: &RuntimeInner, row: BoxRow) -> Result<BoxRow, crate::Error> {
    if !needs_reconcile(&row) {
        return Ok(row);
    }
    let path = rt.layout.lock_path(&row.id);
    let Ok(Some(lock)) = FileLock::try_acquire(&path, LockMode::Exclusive) else {
        return Ok(row);
    };
    let Some(mut fresh) = rt.db.get(&row.id)? else {
        lock.remove_file();
        return Err(BoxError::NotFound(row.id).into());
    };
    reconcile_locked(rt, &mut fresh)?;
    if due_for_auto_remove(&fresh) {
        remove_locked(rt, &fresh, &lock)?;
        return Err(BoxError::NotFound(fresh.id).into());
    }
    Ok(fresh)
}

/// Delete a box's files and row. The caller holds its exclusive lock and has made sure no
/// process of it remains. Files go first, so an interrupted removal leaves a row that a
/// second removal finishes.
pub(crate) fn remove_locked(
    rt: &RuntimeInner,
    row: &BoxRow,
    lock: &FileLock,
) -> Result<(), crate::Error> {
    let dir = rt.box_paths(&row.id).dir;
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(crate::Error::Io {
                context: format!("removing {}", dir.display()),
                source,
            });
        }
    }
    SocketPaths::for_box(&row.id).remove_if_owned(rt.layout.home());
    crate::volumes::remove_anonymous(&rt.layout, &row.config.volumes)?;
    rt.db.delete(&row.id)?;
    lock.remove_file();
    tracing::info!(box_id = %row.id, "box removed");
    Ok(())
}

#[cfg(test)]
mod image_default_tests {
    use super::*;
    use crate::images::registry::RunConfig;

    fn run() -> RunConfig {
        RunConfig {
            env: vec![
                "PATH=/opt/bin:/bin".into(),
                "LANG=C.UTF-8".into(),
                "EMPTY=".into(),
                "NOEQUALS".into(),
            ],
            entrypoint: Some(vec!["/entry".into(), "-x".into()]),
            cmd: Some(vec!["serve".into()]),
            working_dir: "/srv".into(),
            user: "app".into(),
        }
    }

    #[test]
    fn image_env_workdir_and_user_fill_what_the_command_leaves_unset() {
        let mut spec = BoxCommand::new("id").env("LANG", "fr_FR").spec;
        apply_image_defaults(&mut spec, &run());
        assert_eq!(
            spec.env,
            vec![
                ("PATH".to_string(), "/opt/bin:/bin".to_string()),
                ("EMPTY".to_string(), String::new()),
                ("NOEQUALS".to_string(), String::new()),
                ("LANG".to_string(), "fr_FR".to_string()),
            ]
        );
        assert_eq!(spec.working_dir.as_deref(), Some("/srv"));
        assert_eq!(spec.user.as_deref(), Some("app"));

        let mut own = BoxCommand::new("id").user("root").working_dir("/").spec;
        apply_image_defaults(&mut own, &run());
        assert_eq!(own.user.as_deref(), Some("root"));
        assert_eq!(own.working_dir.as_deref(), Some("/"));
    }

    #[test]
    fn default_command_is_entrypoint_plus_args_or_cmd() {
        assert_eq!(image_argv(&run(), &[]), ["/entry", "-x", "serve"]);
        assert_eq!(
            image_argv(&run(), &["other".into()]),
            ["/entry", "-x", "other"]
        );
        let bare = RunConfig::default();
        assert!(image_argv(&bare, &[]).is_empty());
        assert_eq!(image_argv(&bare, &["sh".into()]), ["sh"]);
    }
}
