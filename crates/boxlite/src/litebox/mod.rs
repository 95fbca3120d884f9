//! The box handle and its lifecycle: start, stop, exec, remove.
//!
//! A box is a row in the state database plus a directory of files, and it outlives the
//! process that created it. Any process may hold a handle to it, so a handle caches only
//! what cannot change: its agent connection and its config (fixed at creation). Every
//! operation takes the box's file lock, reads the row, reconciles it with the processes
//! that really exist ([`reconcile`]), acts, and writes the row back through the state
//! machine. Operations that change the box (start, stop, remove) take the lock
//! exclusively; exec takes it shared, only long enough to see the box running, so many
//! execs from many processes proceed at once.
//!
//! Files: `options.rs` (what a box is built from), `info.rs` (what `inspect` shows),
//! `lifecycle.rs` (start, stop, restart, remove, the monitor), `reconcile.rs`, `exec.rs`
//! (commands, exec, attach, ping), `execution.rs` (a running process and its streams),
//! `copy.rs`, `metrics.rs`.

pub mod copy;
pub mod exec;
pub mod execution;
mod files;
mod info;
mod lifecycle;
pub mod listing;
pub mod metrics;
mod network;
mod options;
pub(crate) mod reconcile;
pub mod snapshot;
pub mod snapshots;
pub mod template;

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

pub use crate::model::{BoxConfig, BoxState, Health, HealthOptions, HealthState};
pub use copy::{
    CopyError, CopyOptions, CopyStats, HostDestination, HostSource, HostUnpackError, InBoxKind,
    TarPlacement,
};
pub use exec::{BoxCommand, ExecError};
pub use execution::{ExecOutput, ExecStdin, Execution};
pub use info::{BoxInfo, NetworkState, NetworkStatus};
pub use metrics::{BootStages, BoxMetrics};
pub use options::{
    BoxOptions, MAX_AUTO_PAUSE_SECS, auto_pause_secs, parse_auto_pause, validate_labels,
    validate_name,
};

use crate::context::{Context, Home};
use crate::layout::SocketPaths;
use crate::model::BoxRow;
use crate::portal::AgentClient;
use crate::util::blocking;
use crate::util::lock::{FileLock, LockMode};

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
    #[error(
        "box {id} failed to boot: {}{}",
        crate::util::error_chain(cause.as_ref()),
        console_section(console)
    )]
    BootFailed {
        id: String,
        /// What went wrong, as a kind callers can match on.
        cause: Box<crate::vm::BootError>,
        /// The tail of the console log, when the VM had started (empty otherwise).
        console: String,
    },
    #[error("box {id} is {state}; stop it first or remove it with force")]
    Busy { id: String, state: BoxState },
    #[error("box {id} is {state}; its executions ended with its VM")]
    NotRunning { id: String, state: BoxState },
    #[error("box {id} is {state}, not paused; start it instead")]
    NotPaused { id: String, state: BoxState },
    #[error("invalid box option: {0}")]
    InvalidOption(String),
    #[error("invalid network option")]
    Network(#[source] crate::model::NetworkSpecError),
    #[error(transparent)]
    Capability(#[from] crate::model::CapabilityError),
    /// A secret that is invalid, or whose value cannot be read from its source (at
    /// creation, or when the box starts).
    #[error(transparent)]
    Secret(#[from] crate::net::secrets::SecretError),
    #[error("box {id}: locking {}", path.display())]
    Lock {
        id: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BoxError {
    /// A refused state change of box `id`.
    pub(crate) fn transition(id: &str, e: crate::model::InvalidTransition) -> Self {
        BoxError::InvalidTransition {
            id: id.to_string(),
            from: e.from,
            to: e.to,
        }
    }
}

fn console_section(console: &str) -> String {
    if console.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- console log (tail) ---\n{console}")
    }
}

/// Save a box's status; false when the box no longer exists.
pub(crate) async fn save_status(
    home: &Home,
    id: &str,
    status: &crate::model::BoxStatus,
) -> Result<(), crate::Error> {
    let (bid, st) = (id.to_string(), status.clone());
    if !home.db(move |db| db.update_status(&bid, &st)).await? {
        return Err(BoxError::NotFound(id.to_string()).into());
    }
    Ok(())
}

/// Move `row` to `to` through the state machine and save it. The row changes only once
/// the new status is stored.
pub(crate) async fn set_state(
    home: &Home,
    row: &mut BoxRow,
    to: BoxState,
) -> Result<(), crate::Error> {
    let mut next = row.status.clone();
    next.transition(to)
        .map_err(|e| BoxError::transition(&row.id, e))?;
    save_status(home, &row.id, &next).await?;
    row.status = next;
    Ok(())
}

/// The lock of a box about to be made, with a fresh id: held while its row and files are
/// created.
pub(crate) async fn lock_new_box(home: &Home, id: &str) -> Result<FileLock, BoxError> {
    let lock_path = home.layout.lock_path(id);
    FileLock::acquire(&lock_path, LockMode::Exclusive)
        .await
        .map_err(|source| BoxError::Lock {
            id: id.to_string(),
            path: lock_path,
            source,
        })
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A handle to one box. Every handle of a box in one runtime (clones, and handles from
/// `get`) shares the agent connection ([`Context::shared_client`]); clones share the
/// cached config too.
#[derive(Clone)]
pub struct LiteBox {
    ctx: Arc<Context>,
    id: String,
    client: crate::context::SharedClient,
    /// The box's config, immutable after creation: read from the row once.
    config: Arc<OnceLock<Arc<BoxConfig>>>,
}

impl std::fmt::Debug for LiteBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiteBox").field("id", &self.id).finish()
    }
}

/// A box's row read under its lock.
#[derive(Debug)]
pub(crate) struct Locked {
    row: BoxRow,
    lock: FileLock,
}

impl Locked {
    pub(crate) fn new(row: BoxRow, lock: FileLock) -> Self {
        Locked { row, lock }
    }

    /// The state of the locked box as last read or written.
    pub(crate) fn state(&self) -> BoxState {
        self.row.status.state()
    }
}

impl LiteBox {
    pub(crate) fn handle(ctx: Arc<Context>, id: String, config: Option<BoxConfig>) -> Self {
        let cell = OnceLock::new();
        if let Some(c) = config {
            let _ = cell.set(Arc::new(c));
        }
        LiteBox {
            client: ctx.shared_client(&id),
            ctx,
            id,
            config: Arc::new(cell),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn home(&self) -> &Home {
        &self.ctx.home
    }

    fn not_found(&self) -> crate::Error {
        BoxError::NotFound(self.id.clone()).into()
    }

    /// The row as stored now.
    async fn row(&self) -> Result<BoxRow, crate::Error> {
        let id = self.id.clone();
        self.home()
            .db(move |db| db.get(&id))
            .await?
            .ok_or_else(|| self.not_found())
    }

    /// The box's config (fixed at creation), read once per handle.
    pub(crate) async fn config(&self) -> Result<Arc<BoxConfig>, crate::Error> {
        if let Some(c) = self.config.get() {
            return Ok(c.clone());
        }
        let row = self.row().await?;
        Ok(self.config.get_or_init(|| Arc::new(row.config)).clone())
    }

    async fn lock(&self, mode: LockMode) -> Result<Locked, crate::Error> {
        let path = self.home().layout.lock_path(&self.id);
        let lock = FileLock::acquire(&path, mode)
            .await
            .map_err(|source| BoxError::Lock {
                id: self.id.clone(),
                path,
                source,
            })?;
        let row = self.row().await?;
        Ok(Locked { row, lock })
    }

    /// Lock exclusively and bring the row in line with the processes that exist. A box
    /// created with `auto_remove` that turns out to be at rest is removed here, and
    /// reported as not found.
    async fn lock_reconciled(&self) -> Result<Locked, crate::Error> {
        let l = self.lock(LockMode::Exclusive).await?;
        match reconcile_held(self.home(), l).await? {
            Some(l) => Ok(l),
            None => Err(self.not_found()),
        }
    }

    /// Move the row to `to` through the state machine and save it. The row changes
    /// only once the new status is stored.
    async fn transition(&self, row: &mut BoxRow, to: BoxState) -> Result<(), crate::Error> {
        set_state(self.home(), row, to).await
    }

    /// The box as stored now, reconciled with reality when nobody else is working on it.
    pub async fn info(&self) -> Result<BoxInfo, crate::Error> {
        let row = self.row().await?;
        let row = reconcile_if_idle(self.home(), row).await?;
        let mut info = BoxInfo::from_row(self.home(), &row);
        if info.network.state == NetworkState::Running {
            let sockets = SocketPaths::for_box(&self.id);
            info.network.ports =
                crate::util::blocking::run(move || crate::net::bound_ports(&sockets))
                    .await
                    .unwrap_or_default();
        }
        Ok(info)
    }

    pub async fn state(&self) -> Result<BoxState, crate::Error> {
        Ok(self.info().await?.state)
    }

    /// Make the running box trust the CA `ca_pem` (one PEM certificate), as a box with
    /// secrets does at start: returns the container paths that now hold the combined
    /// bundle. A hook for tests, not part of the API.
    #[doc(hidden)]
    pub async fn install_ca(&self, ca_pem: &str) -> Result<Vec<String>, crate::Error> {
        let client = self.running_client().await?;
        Ok(client.install_ca(ca_pem).await?)
    }

    /// Freeze the running box's workload (every process exec started, and what they
    /// started) and hold new executions until [`Self::resume_guest`]: returns whether
    /// the guest had a freezer. A hook for tests, not part of the API.
    #[doc(hidden)]
    pub async fn quiesce(&self) -> Result<bool, crate::Error> {
        let client = self.running_client().await?;
        Ok(client.quiesce().await?)
    }

    /// Set the running box's wall clock (`wall_clock_ns` since the Unix epoch, 0 to
    /// leave it), mix `seed` into its kernel's entropy pool, rename it `hostname` (empty
    /// to keep it), then thaw its workload, as after a restore from a snapshot. A hook
    /// for tests, not part of the API.
    #[doc(hidden)]
    pub async fn resume_guest(
        &self,
        wall_clock_ns: i64,
        seed: &[u8],
        hostname: &str,
    ) -> Result<(), crate::Error> {
        let client = self.running_client().await?;
        Ok(client.resume(wall_clock_ns, seed, hostname).await?)
    }

    /// A connection to the agent of a box that is running now, without starting it:
    /// [`BoxError::NotRunning`] otherwise. The shared lock is held while connecting, so
    /// a concurrent stop cannot slip in between the check and the connection.
    async fn running_client(&self) -> Result<AgentClient, crate::Error> {
        {
            let l = self.lock(LockMode::Shared).await?;
            let st = &l.row.status;
            if st.state() == BoxState::Paused {
                // A paused box is not stopped: whatever reaches for it resumes it.
                drop(l);
                let mut l = self.lock_reconciled().await?;
                if l.row.status.state() == BoxState::Paused {
                    *self.client.lock().await = None;
                    self.start_locked(&mut l).await?;
                }
                return self.cached_client(&l.row).await;
            }
            if st.state() == BoxState::Running && st.vmm_alive() && !shim_alive(&l.row) {
                drop(l);
                // A running box whose shim is gone: reconciliation starts a new one.
                drop(self.lock_reconciled().await?);
            }
        }
        let l = self.lock(LockMode::Shared).await?;
        let st = &l.row.status;
        if st.state() != BoxState::Running || !st.vmm_alive() {
            return Err(BoxError::NotRunning {
                id: self.id.clone(),
                state: st.state(),
            }
            .into());
        }
        self.cached_client(&l.row).await
    }

    /// The agent connection, reconnecting (for example from another process) if needed.
    /// A box that is not running is started first.
    async fn client(&self) -> Result<AgentClient, crate::Error> {
        Ok(self.client_seen().await?.0)
    }

    /// [`Self::client`], with the box's auto-pause count as it was when the box was
    /// last seen running (see [`crate::model::BoxStatus::auto_pauses`]).
    async fn client_seen(&self) -> Result<(AgentClient, u64), crate::Error> {
        self.ctx.check_open()?;
        {
            let l = self.lock(LockMode::Shared).await?;
            if l.row.status.state() == BoxState::Running
                && l.row.status.vmm_alive()
                && shim_alive(&l.row)
            {
                let seen = l.row.status.auto_pauses;
                return Ok((self.cached_client(&l.row).await?, seen));
            }
        }
        let mut l = self.lock_reconciled().await?;
        if l.row.status.state() != BoxState::Running {
            *self.client.lock().await = None;
            self.start_locked(&mut l).await?;
        }
        let seen = l.row.status.auto_pauses;
        Ok((self.cached_client(&l.row).await?, seen))
    }

    /// After call error `e` made with a client from [`Self::client_seen`] (count `seen`):
    /// a client to make the call again with, and the new count, when the call failed
    /// because the box paused itself meanwhile. The shim then held the call's bytes
    /// and closed its connection with nothing delivered, so making it again (which
    /// resumes the box if it is still paused) cannot run anything twice.
    pub(crate) async fn again_after_auto_pause(
        &self,
        e: &crate::portal::PortalError,
        seen: u64,
    ) -> Result<Option<(AgentClient, u64)>, crate::Error> {
        if !execution::agent_lost(e) {
            return Ok(None);
        }
        let Some(now) = self.auto_paused_since(seen).await else {
            return Ok(None);
        };
        Ok(Some((self.client().await?, now)))
    }

    /// The box's auto-pause count now, if it moved past `seen`: the box paused itself
    /// since (waiting for a pause in progress to finish, whose lock it holds).
    pub(crate) async fn auto_paused_since(&self, seen: u64) -> Option<u64> {
        let l = self.lock(LockMode::Shared).await.ok()?;
        let now = l.row.status.auto_pauses;
        (now > seen).then_some(now)
    }

    /// The cached connection to a running box's agent, connecting on first use.
    async fn cached_client(&self, row: &BoxRow) -> Result<AgentClient, crate::Error> {
        let mut cached = self.client.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let c = connect_agent(&self.id, row).await?;
        *cached = Some(c.clone());
        Ok(c)
    }
}

/// Whether the box's shim, the only way to its agent, runs.
fn shim_alive(row: &BoxRow) -> bool {
    row.status.monitor.is_some_and(|m| m.is_alive())
}

/// How long a client waits for a live shim to bind its socket again.
const SHIM_REBIND: std::time::Duration = std::time::Duration::from_secs(5);

/// Connect to a running box's agent through its shim's socket. When nothing listens there
/// (a temp cleaner removed the socket directory, or a shim the reconciliation just
/// restarted has not bound it yet) and the shim runs, wait for it to bind again: a shim
/// checks its socket every second and binds a new one when it is gone.
pub(crate) async fn connect_agent(
    id: &str,
    row: &BoxRow,
) -> Result<AgentClient, crate::portal::PortalError> {
    let socket = SocketPaths::for_box(id).agent();
    match AgentClient::connect(&socket, id).await {
        Err(e) if shim_alive(row) && !accepts(&socket).await => {
            tracing::debug!(
                box_id = id,
                "nothing listens at the shim's socket yet; waiting for it"
            );
            let waited = tokio::time::timeout(SHIM_REBIND, async {
                let mut pause = std::time::Duration::from_millis(2);
                while !accepts(&socket).await {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(50));
                }
            })
            .await;
            match waited {
                Ok(()) => AgentClient::connect(&socket, id).await,
                Err(_) => Err(e),
            }
        }
        r => r,
    }
}

/// Whether a connection to `socket` is accepted now. A stale socket file (its shim was
/// killed) refuses, a removed one is missing; the probe connection is closed at once, and
/// the shim opens no stream for a client that never spoke.
async fn accepts(socket: &std::path::Path) -> bool {
    match tokio::net::UnixStream::connect(socket).await {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        ),
    }
}

/// Reconcile a row whose exclusive lock the caller holds: apply [`reconcile::decide`],
/// remove the box if the plan says so (`None`), and start a monitor for a running box
/// that lost its own.
pub(crate) async fn reconcile_held(home: &Home, l: Locked) -> Result<Option<Locked>, crate::Error> {
    let plan = reconcile::decide(reconcile::observe(home, &l.row, true));
    if plan.is_leave() {
        return Ok(Some(l));
    }
    if plan.continue_vm {
        // A pause that died before its state was saved: the VM waits, stopped, with its
        // workload frozen. Run it again; if it cannot be, it is stopped instead.
        let cont = snapshot::continue_vm(home, &l.row).await;
        let h = home.clone();
        let why = cont.err().map(|e| crate::util::error_chain(&e));
        return blocking::run(move || {
            let mut l = l;
            let plan = match why {
                None => plan,
                Some(e) => {
                    tracing::warn!(box_id = %l.row.id, error = %e, "continuing a VM whose pause was interrupted");
                    reconcile::Plan {
                        kill: true,
                        to: Some(BoxState::Stopped),
                        why: Some(reconcile::Why::PauseUnrecoverable),
                        ..plan
                    }
                }
            };
            reconcile::apply_blocking(&h, &mut l.row, plan)?;
            Ok(Some(l))
        })
        .await;
    }
    let h = home.clone();
    let (mut l, done) = blocking::run(move || {
        let mut l = l;
        let r = reconcile::reconcile_blocking(&h, &mut l.row, &l.lock);
        (l, r)
    })
    .await;
    let (plan, removed) = done?;
    if removed {
        return Ok(None);
    }
    if plan.relaunch_monitor {
        lifecycle::launch_monitor(home, &mut l.row).await;
    }
    Ok(Some(l))
}

/// Reconcile a row if it needs it and nobody holds the box's lock; otherwise return it as
/// read. Returns the row as it now stands (an auto-removed box comes back as NotFound).
pub(crate) async fn reconcile_if_idle(home: &Home, row: BoxRow) -> Result<BoxRow, crate::Error> {
    if !reconcile::needs_reconcile(home, &row) {
        return Ok(row);
    }
    let path = home.layout.lock_path(&row.id);
    let Ok(Some(lock)) = FileLock::try_acquire(&path, LockMode::Exclusive) else {
        return Ok(row);
    };
    let id = row.id.clone();
    let Some(fresh) = home
        .db({
            let id = id.clone();
            move |db| db.get(&id)
        })
        .await?
    else {
        lock.remove_file();
        return Err(BoxError::NotFound(id).into());
    };
    match reconcile_held(home, Locked { row: fresh, lock }).await? {
        Some(l) => Ok(l.row),
        None => Err(BoxError::NotFound(id).into()),
    }
}

/// What the console log says about an unexpected VM exit: a kernel panic or the guest
/// powering itself off.
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
