//! What `inspect` shows about a box.

use serde::Serialize;

use crate::context::Home;
use crate::layout::SocketPaths;
use crate::model::{BoxConfig, BoxRow, BoxState, Health};

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
    /// The accelerator the box last started with.
    pub accelerator: Option<crate::model::Accel>,
    pub vmm_pid: Option<i32>,
    /// The box's shim (`boxlite-shim`): owner of the agent channel, health checks.
    pub monitor_pid: Option<i32>,
    /// The network and its helper's state.
    pub network: NetworkStatus,
    /// Derived from the id and home, never stored.
    pub dir: std::path::PathBuf,
    pub console_log: std::path::PathBuf,
    pub socket_dir: std::path::PathBuf,
    /// The guest's RAM while the box runs (a file on tmpfs).
    pub ram_file: std::path::PathBuf,
    /// How the box's VM last began: a cold boot, a resume, a fork.
    pub started_from: Option<crate::model::StartKind>,
    /// Unix seconds of the last pause.
    pub paused_at: Option<u64>,
    /// Whether the box paused itself (auto-pause) rather than being paused by a caller.
    pub auto_paused: bool,
}

impl BoxInfo {
    pub(crate) fn from_row(home: &Home, row: &BoxRow) -> BoxInfo {
        let paths = home.box_paths(&row.id);
        let st = &row.status;
        BoxInfo {
            id: row.id.clone(),
            name: row.name.clone(),
            image: row.config.image.clone(),
            image_digest: row.config.image_digest.clone(),
            state: st.state(),
            created_at: row.created_at,
            started_at: st.started_at,
            stopped_at: st.stopped_at,
            last_error: st.last_error.clone(),
            health: st.health.clone(),
            config: row.config.clone(),
            accelerator: st.accel,
            vmm_pid: st.vmm.map(|p| p.pid),
            monitor_pid: st.monitor.map(|p| p.pid),
            network: NetworkStatus::of(row),
            console_log: paths.console_log(),
            dir: paths.dir,
            socket_dir: SocketPaths::for_box(&row.id).dir,
            ram_file: SocketPaths::for_box(&row.id).ram(),
            started_from: st.started_from.clone(),
            paused_at: st.paused_at,
            auto_paused: st.auto_paused && st.state() == BoxState::Paused,
        }
    }
}

/// The state of a box's network, derived from its row and its helper process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkState {
    /// `--network none`: no NIC.
    None,
    /// The box is not running.
    Stopped,
    /// The helper runs.
    Running,
    /// The box runs but its helper is gone: the NIC is dead until the box restarts
    /// (QEMU cannot reconnect its stream netdev). Exec and files still work.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetworkStatus {
    pub state: NetworkState,
    pub helper_pid: Option<i32>,
    /// The box's own address on its private network.
    pub guest_ip: Option<String>,
    /// Published ports as the helper bound them (while it runs).
    pub ports: Vec<crate::net::BoundPort>,
}

impl NetworkStatus {
    fn of(row: &BoxRow) -> NetworkStatus {
        let st = &row.status;
        let state = if !row.config.network.enabled() {
            NetworkState::None
        } else if st.state() != BoxState::Running {
            NetworkState::Stopped
        } else if st.net_helper.is_some_and(|p| p.is_alive()) {
            NetworkState::Running
        } else {
            NetworkState::Failed
        };
        NetworkStatus {
            state,
            helper_pid: st.net_helper.map(|p| p.pid),
            guest_ip: row
                .config
                .network
                .enabled()
                .then(|| crate::net::guest_ip().to_string()),
            ports: Vec::new(),
        }
    }
}
