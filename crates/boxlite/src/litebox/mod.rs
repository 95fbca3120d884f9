//! The box handle: create, start, exec, stop.
//!
//! Starting a box spawns its processes detached from the caller (vhost-device-vsock when
//! the kernel has no vhost-vsock, then QEMU), binds the readiness listener before QEMU
//! starts, and waits for whichever comes first: the agent's readiness connection, the
//! death of a helper, or the boot timeout. A failed boot is reported with its cause and
//! the tail of the console log, and leaves no process or socket behind.

pub mod exec;
pub mod state;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

pub use exec::{BoxCommand, ExecError, ExecOutput, ExecStdin, Execution};
pub use state::BoxState;

use crate::portal::AgentClient;
use crate::runtime::RuntimeInner;
use crate::runtime::layout::{BoxPaths, SocketPaths};
use crate::util::fsutil::tail_file;
use crate::util::fsutil::write_atomic;
use crate::util::process::ProcessId;
use crate::util::process::spawn_detached;
use crate::vmm::vsock::{AgentAddr, ReadyListener, VsockMode, random_cid};
use crate::vmm::{VmConfig, VmmError, VsockDevice};

/// Bytes of console log quoted in a boot error.
const CONSOLE_TAIL: usize = 3000;

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
    #[error("box record {path}")]
    Record {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("box {id} is {state}; stop it first or remove it with force")]
    Busy { id: String, state: BoxState },
    #[error("invalid box option: {0}")]
    InvalidOption(String),
}

/// How a box is built. Validated when the box is created.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxOptions {
    pub image: String,
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
}

fn default_memory() -> u32 {
    512
}
fn default_cpus() -> u32 {
    2
}

impl BoxOptions {
    pub fn new(image: impl Into<String>) -> Self {
        BoxOptions {
            image: image.into(),
            memory_mib: default_memory(),
            cpus: default_cpus(),
        }
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), BoxError> {
        if !(64..=65536).contains(&self.memory_mib) {
            return Err(BoxError::InvalidOption(format!(
                "memory {} MiB is out of range (64-65536)",
                self.memory_mib
            )));
        }
        if !(1..=64).contains(&self.cpus) {
            return Err(BoxError::InvalidOption(format!(
                "cpus {} is out of range (1-64)",
                self.cpus
            )));
        }
        Ok(())
    }
}

/// What is persisted about a box. Read leniently so older records still load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoxRecord {
    pub id: String,
    pub image: String,
    #[serde(default)]
    pub image_digest: String,
    #[serde(default)]
    pub created_at: u64,
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    pub state: BoxState,
    #[serde(default)]
    pub vsock_mode: Option<VsockMode>,
    #[serde(default)]
    pub cid: Option<u32>,
    #[serde(default)]
    pub vmm: Option<ProcessId>,
    #[serde(default)]
    pub vsock_helper: Option<ProcessId>,
    #[serde(default)]
    pub last_error: Option<String>,
}

impl BoxRecord {
    pub(crate) fn load(path: &Path) -> Result<BoxRecord, BoxError> {
        let rec_err = |source| BoxError::Record {
            path: path.to_path_buf(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(rec_err)?;
        serde_json::from_str(&text)
            .map_err(|e| rec_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
    }

    pub(crate) fn save(&self, path: &Path) -> Result<(), BoxError> {
        let data = serde_json::to_vec_pretty(self).expect("record serializes");
        write_atomic(path, &data).map_err(|source| BoxError::Record {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Whether the recorded VMM process (pid and start time) still runs.
    pub(crate) fn vmm_alive(&self) -> bool {
        self.vmm.is_some_and(|p| p.is_alive())
    }

    fn agent_addr(&self) -> AgentAddr {
        match (self.vsock_mode, self.cid) {
            (Some(VsockMode::Kernel), Some(cid)) => AgentAddr::Kernel { cid },
            _ => AgentAddr::Hybrid {
                uds: SocketPaths::for_box(&self.id).agent(),
            },
        }
    }
}

/// Public information about a box.
#[derive(Debug, Clone, Serialize)]
pub struct BoxInfo {
    pub id: String,
    pub image: String,
    pub state: BoxState,
    pub vmm_pid: Option<i32>,
    pub last_error: Option<String>,
}

struct Live {
    record: BoxRecord,
    client: Option<AgentClient>,
}

/// A handle to one box. Clones share state.
#[derive(Clone)]
pub struct LiteBox {
    rt: Arc<RuntimeInner>,
    id: String,
    live: Arc<Mutex<Live>>,
}

impl std::fmt::Debug for LiteBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiteBox").field("id", &self.id).finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a failed boot leaves to clean up.
struct BootGuard {
    procs: Vec<ProcessId>,
    sockets: SocketPaths,
    armed: bool,
}

impl BootGuard {
    async fn cleanup(&mut self) {
        for p in self.procs.drain(..).rev() {
            p.terminate(Duration::from_secs(2)).await;
        }
        self.sockets.remove();
    }
}

impl Drop for BootGuard {
    fn drop(&mut self) {
        // Covers a start() future dropped halfway (for example by Ctrl-C): kill what was
        // spawned, synchronously.
        if self.armed {
            for p in &self.procs {
                let _ = p.signal(libc::SIGKILL);
            }
            self.sockets.remove();
        }
    }
}

impl LiteBox {
    pub(crate) fn from_record(rt: Arc<RuntimeInner>, record: BoxRecord) -> Self {
        LiteBox {
            rt,
            id: record.id.clone(),
            live: Arc::new(Mutex::new(Live {
                record,
                client: None,
            })),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn paths(&self) -> BoxPaths {
        self.rt.box_paths(&self.id)
    }

    pub async fn info(&self) -> BoxInfo {
        let live = self.live.lock().await;
        let r = &live.record;
        BoxInfo {
            id: r.id.clone(),
            image: r.image.clone(),
            state: r.state,
            vmm_pid: r.vmm.map(|p| p.pid),
            last_error: r.last_error.clone(),
        }
    }

    fn transition(&self, rec: &mut BoxRecord, to: BoxState) -> Result<(), BoxError> {
        if !rec.state.can_transition(to) {
            return Err(BoxError::InvalidTransition {
                id: self.id.clone(),
                from: rec.state,
                to,
            });
        }
        rec.state = to;
        rec.save(&self.paths().record())
    }

    /// Boot the box and wait until its agent is ready.
    pub async fn start(&self) -> Result<(), crate::Error> {
        let mut live = self.live.lock().await;
        self.start_locked(&mut live).await
    }

    async fn start_locked(&self, live: &mut Live) -> Result<(), crate::Error> {
        if !live.record.state.can_transition(BoxState::Running) {
            return Err(BoxError::InvalidTransition {
                id: self.id.clone(),
                from: live.record.state,
                to: BoxState::Running,
            }
            .into());
        }
        let t0 = Instant::now();
        let assets = self.rt.assets()?;
        let kernel = assets.kernel()?;
        let initrd = assets.initramfs()?;
        let paths = self.paths();
        let sockets = SocketPaths::for_box(&self.id);
        sockets.create()?;
        let mut guard = BootGuard {
            procs: Vec::new(),
            sockets: sockets.clone(),
            armed: true,
        };
        let booted = self
            .boot(live, &mut guard, &paths, &sockets, kernel, initrd)
            .await;
        // The box only counts as started once its Running state is saved; until then
        // the guard still owns the processes.
        let result = match booted {
            Ok(client) => {
                live.client = Some(client);
                live.record.last_error = None;
                self.transition(&mut live.record, BoxState::Running)
                    .map_err(crate::Error::from)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                guard.armed = false;
                tracing::info!(box_id = %self.id, ms = t0.elapsed().as_millis() as u64, "box started");
                Ok(())
            }
            Err(e) => {
                guard.cleanup().await;
                guard.armed = false;
                live.client = None;
                live.record.vmm = None;
                live.record.vsock_helper = None;
                live.record.last_error = Some(crate::error_chain(&e));
                let _ = self.transition(&mut live.record, BoxState::Failed);
                Err(e)
            }
        }
    }

    async fn boot(
        &self,
        live: &mut Live,
        guard: &mut BootGuard,
        paths: &BoxPaths,
        sockets: &SocketPaths,
        kernel: std::path::PathBuf,
        initrd: std::path::PathBuf,
    ) -> Result<AgentClient, crate::Error> {
        let t0 = Instant::now();
        let rec = &mut live.record;
        let home = self.rt.layout.home().display().to_string();
        let marker = [
            ("BOXLITE_HOME", home.as_str()),
            ("BOXLITE_BOX_ID", self.id.as_str()),
        ];
        let mode = self.rt.vsock_mode;
        rec.vsock_mode = Some(mode);
        let ready_port = boxlite_protocol::DEFAULT_READY_PORT;
        let mut helper_child = None;
        let (device, addr, ready_port) = match mode {
            VsockMode::VhostUser => {
                let binary = self.rt.vhost_vsock_binary()?;
                let args = vec![
                    "--vm".into(),
                    format!(
                        "guest-cid=3,socket={},uds-path={}",
                        sockets.vhost().display(),
                        sockets.agent().display()
                    )
                    .into(),
                ];
                let (id, child) = spawn_detached(&binary, &args, &paths.vsock_log(), &marker)?;
                guard.procs.push(id);
                rec.vsock_helper = Some(id);
                helper_child = Some(child);
                (
                    VsockDevice::VhostUser {
                        socket: sockets.vhost(),
                    },
                    AgentAddr::Hybrid {
                        uds: sockets.agent(),
                    },
                    ready_port,
                )
            }
            VsockMode::Kernel => {
                let cid = random_cid();
                rec.cid = Some(cid);
                // A per-box readiness port: host vsock ports are shared by all boxes.
                let port = rand::random_range(1 << 20..1 << 30);
                (VsockDevice::Kernel { cid }, AgentAddr::Kernel { cid }, port)
            }
        };
        if let Some(child) = helper_child.as_mut() {
            wait_for_socket(&sockets.vhost(), child, &paths.vsock_log()).await?;
            tracing::debug!(ms = t0.elapsed().as_millis() as u64, "vsock device ready");
        }
        let ready = ReadyListener::bind(&addr, &sockets.agent_port(ready_port), ready_port)
            .map_err(|e| VmmError::Vsock(format!("binding the readiness listener: {e}")))?;

        let cfg = VmConfig {
            accel: self.rt.accel.accel,
            kernel,
            initrd,
            cmdline: vec![
                format!("{}={ready_port}", boxlite_protocol::CMDLINE_READY_PORT),
                format!("boxlite.hostname={}", &self.id[..12]),
            ],
            root_disk: paths.disk(),
            memory_mib: rec.memory_mib,
            cpus: rec.cpus,
            vsock: device,
            console_log: paths.console_log(),
            vmm_log: paths.vmm_log(),
            marker: marker
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let mut vm = self.rt.vmm.spawn(&cfg)?;
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "vmm spawned");
        guard.procs.push(vm.id);
        rec.vmm = Some(vm.id);
        rec.save(&paths.record())?;

        let boot_fail = |reason: String| BoxError::BootFailed {
            id: self.id.clone(),
            reason,
            console: tail_file(&paths.console_log(), CONSOLE_TAIL),
        };
        let timeout = self.rt.boot_timeout;
        let mut vm_child = vm.child.take();
        let vm_exit = async {
            match vm_child.as_mut() {
                Some(c) => c.wait().await.ok(),
                None => std::future::pending().await,
            }
        };
        let helper_exit = async {
            match helper_child.as_mut() {
                Some(c) => c.wait().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = ready.accept_ready() => {
                r.map_err(|e| boot_fail(format!("readiness listener failed: {e}")))?;
            }
            st = vm_exit => {
                let qemu_log = tail_file(&paths.vmm_log(), 1000);
                return Err(boot_fail(format!(
                    "the VM exited during boot ({}){}",
                    st.map(|s| s.to_string()).unwrap_or_else(|| "status unknown".into()),
                    if qemu_log.trim().is_empty() { String::new() } else { format!("; qemu said: {}", qemu_log.trim()) }
                )).into());
            }
            st = helper_exit => {
                return Err(boot_fail(format!(
                    "vhost-device-vsock exited during boot ({}): {}",
                    st.map(|s| s.to_string()).unwrap_or_else(|| "status unknown".into()),
                    tail_file(&paths.vsock_log(), 1000).trim()
                )).into());
            }
            _ = tokio::time::sleep(timeout) => {
                return Err(boot_fail(format!(
                    "the agent did not report ready within {}s (accelerator {}); raise BOXLITE_BOOT_TIMEOUT if the host is slow",
                    timeout.as_secs(), self.rt.accel.accel
                )).into());
            }
        }
        drop(ready);
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "agent ready");
        let client = AgentClient::connect(addr).await?;
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "agent connected");
        Ok(client)
    }

    /// The agent connection, reconnecting (for example from another process) if needed.
    /// A box that is not running is started first.
    async fn client(&self) -> Result<AgentClient, crate::Error> {
        let mut live = self.live.lock().await;
        if live.record.state == BoxState::Running && !live.record.vmm_alive() {
            self.settle_stopped(&mut live, Some("the VM process is gone"))
                .await?;
        }
        if live.record.state != BoxState::Running {
            self.start_locked(&mut live).await?;
        }
        if let Some(c) = &live.client {
            return Ok(c.clone());
        }
        let client = AgentClient::connect(live.record.agent_addr()).await?;
        live.client = Some(client.clone());
        Ok(client)
    }

    /// Make sure none of the box's processes remain (the VMM is killed if it still runs,
    /// the vsock helper terminated), remove its sockets, and record it as Stopped, with
    /// `reason` when the stop was not asked for. Shared by every way a box stops.
    async fn settle_stopped(&self, live: &mut Live, reason: Option<&str>) -> Result<(), BoxError> {
        if let Some(vmm) = live.record.vmm.take() {
            let _ = vmm.signal(libc::SIGKILL);
            vmm.wait_gone(Duration::from_secs(5)).await;
        }
        if let Some(h) = live.record.vsock_helper.take() {
            h.terminate(Duration::from_secs(2)).await;
        }
        SocketPaths::for_box(&self.id).remove();
        live.client = None;
        if let Some(r) = reason {
            live.record.last_error = Some(r.to_string());
        }
        if live.record.state.can_transition(BoxState::Stopped) {
            self.transition(&mut live.record, BoxState::Stopped)?;
        }
        Ok(())
    }

    /// Run a command in the box, starting the box if it is not running.
    pub async fn exec(&self, cmd: BoxCommand) -> Result<Execution, crate::Error> {
        let client = self.client().await?;
        // Default variables (PATH, HOME) are the agent's business: it knows the image.
        let spec = cmd.spec;
        let id = client.exec(&spec).await.map_err(ExecError::from_exec_rpc)?;
        Ok(Execution::new(client, id, spec.stdin))
    }

    /// Shut the guest down cleanly (sync, power off), waiting up to `timeout`, then make
    /// sure the VMM and its helpers are gone.
    pub async fn stop(&self, timeout: Duration) -> Result<(), crate::Error> {
        let mut live = self.live.lock().await;
        match live.record.state {
            BoxState::Running => {}
            BoxState::Stopped | BoxState::Configured | BoxState::Failed => return Ok(()),
            from => {
                return Err(BoxError::InvalidTransition {
                    id: self.id.clone(),
                    from,
                    to: BoxState::Stopped,
                }
                .into());
            }
        }
        self.transition(&mut live.record, BoxState::Stopping)?;
        let t0 = Instant::now();
        let vmm = live.record.vmm;
        if let Some(vmm) = vmm.filter(|p| p.is_alive()) {
            let client = match live.client.clone() {
                Some(c) => Some(c),
                None => AgentClient::connect(live.record.agent_addr()).await.ok(),
            };
            let asked = match client {
                Some(c) => tokio::time::timeout(timeout, c.shutdown())
                    .await
                    .is_ok_and(|r| r.is_ok()),
                None => false,
            };
            if !asked || !vmm.wait_gone(timeout).await {
                tracing::warn!(box_id = %self.id, "guest did not power off in time; killing the VMM");
            }
        }
        self.settle_stopped(&mut live, None).await?;
        tracing::info!(box_id = %self.id, ms = t0.elapsed().as_millis() as u64, "box stopped");
        Ok(())
    }

    /// Kill everything at once, without a guest shutdown. For cleanup paths.
    pub(crate) async fn kill_now(&self) {
        let mut live = self.live.lock().await;
        let _ = self.settle_stopped(&mut live, None).await;
    }

    pub(crate) async fn state(&self) -> BoxState {
        self.live.lock().await.record.state
    }

    pub(crate) fn new_record(id: String, opts: &BoxOptions, digest: String) -> BoxRecord {
        BoxRecord {
            id,
            image: opts.image.clone(),
            image_digest: digest,
            created_at: now_secs(),
            memory_mib: opts.memory_mib,
            cpus: opts.cpus,
            state: BoxState::Configured,
            vsock_mode: None,
            cid: None,
            vmm: None,
            vsock_helper: None,
            last_error: None,
        }
    }
}

/// Wait for vhost-device-vsock to create its vhost-user socket, or report why it died.
async fn wait_for_socket(
    path: &Path,
    child: &mut tokio::process::Child,
    log: &Path,
) -> Result<(), VmmError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if path.exists() {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(VmmError::Vsock(format!(
                "vhost-device-vsock exited ({st}) before creating {}: {}",
                path.display(),
                tail_file(log, 1000).trim()
            )));
        }
        if Instant::now() > deadline {
            return Err(VmmError::Vsock(format!(
                "vhost-device-vsock did not create {} within 10s",
                path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
