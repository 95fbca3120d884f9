//! What is persisted about a box: an immutable config written once at creation, and a
//! status that every lifecycle step rewrites.
//!
//! Both are stored as JSON and read leniently: a missing field takes its default and an
//! unknown one is ignored, so rows written by older or newer versions still load.

use serde::{Deserialize, Serialize};

use super::image::RunConfig;
use super::network::NetworkSpec;
use super::platform::Accel;
use super::secret::SecretRecord;
use super::state::{BoxState, InvalidTransition};
use super::volume::VolumeMount;
use crate::util::process::ProcessId;

pub(crate) fn default_memory() -> u32 {
    512
}
pub(crate) fn default_cpus() -> u32 {
    2
}

/// How the agent's liveness is checked while a box runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthOptions {
    /// Seconds between pings; 0 turns checking off.
    pub interval_secs: u32,
    /// Seconds a ping may take before it counts as failed.
    pub timeout_secs: u32,
    /// Consecutive failed pings before the box is marked unhealthy.
    pub retries: u32,
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions {
            interval_secs: 30,
            timeout_secs: 5,
            retries: 3,
        }
    }
}

/// Fixed at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BoxConfig {
    pub image: String,
    pub image_digest: String,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Remove the box as soon as it stops, however it stops.
    pub auto_remove: bool,
    pub health: HealthOptions,
    /// Volumes mounted into the box, validated at creation.
    pub volumes: Vec<VolumeMount>,
    /// The image's run settings at creation, with the box's entrypoint and command
    /// overrides applied.
    #[serde(default)]
    pub run: RunConfig,
    /// Root disk size in bytes (0: the image's).
    #[serde(default)]
    pub disk_bytes: u64,
    /// The box's network: on by default.
    #[serde(default)]
    pub network: NetworkSpec,
    /// The box's secrets: where each value comes from, never the value.
    #[serde(default)]
    pub secrets: Vec<SecretRecord>,
    /// Whether the box's first start may fork its image's template instead of booting
    /// (and leave one when there is none).
    #[serde(default = "default_warm_start")]
    pub warm_start: bool,
    /// The capabilities of the box's commands (Docker's default set unless changed).
    #[serde(default)]
    pub capabilities: super::caps::Capabilities,
    /// The box's labels (free metadata; the runtime never reads them).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Seconds without activity (exec, attach, file transfer) after which the box's
    /// shim pauses it; 0: never. See `docs/snapshots.md`, "Auto-pause".
    #[serde(default)]
    pub auto_pause_secs: u32,
}

/// [`BoxConfig::warm_start`]'s default.
pub fn default_warm_start() -> bool {
    true
}

impl Default for BoxConfig {
    fn default() -> Self {
        BoxConfig {
            image: String::new(),
            image_digest: String::new(),
            memory_mib: default_memory(),
            cpus: default_cpus(),
            auto_remove: false,
            health: HealthOptions::default(),
            volumes: Vec::new(),
            run: Default::default(),
            disk_bytes: 0,
            network: NetworkSpec::default(),
            secrets: Vec::new(),
            warm_start: true,
            capabilities: Default::default(),
            labels: Default::default(),
            auto_pause_secs: 0,
        }
    }
}

/// The agent's health as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Not checked yet, or checking is off.
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Health {
    pub state: HealthState,
    /// Consecutive failed pings.
    pub failing_streak: u32,
    /// Why the last ping failed.
    pub last_error: Option<String>,
    /// Unix seconds of the last check.
    pub checked_at: Option<u64>,
}

/// Changes over the box's life. Its state changes only through
/// [`BoxStatus::transition`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredStatus")]
pub struct BoxStatus {
    state: BoxState,
    /// The accelerator the box was last started with.
    pub accel: Option<Accel>,
    pub vmm: Option<ProcessId>,
    /// The box's shim: owner of the agent channel's host end, health checks, reaction to
    /// the VM dying on its own. Restarted by the next command when it is gone.
    pub monitor: Option<ProcessId>,
    /// Helpers of a box started by an older version (its vhost-device-vsock), ended with
    /// the box.
    pub legacy_helpers: Vec<ProcessId>,
    /// One virtiofsd per volume, in the order of the config's volumes.
    pub virtiofsd: Vec<ProcessId>,
    /// The network helper (`boxlite-net`), when the box has a network. Not essential:
    /// the box keeps running without it, with its network marked failed.
    pub net_helper: Option<ProcessId>,
    /// Why the box last failed or stopped without being asked to.
    pub last_error: Option<String>,
    pub health: Health,
    pub started_at: Option<u64>,
    pub stopped_at: Option<u64>,
    /// How the last start spent its time.
    pub boot: Option<BootTimings>,
    /// How the last start began: a cold boot, a resume, a fork.
    pub started_from: Option<StartKind>,
    /// The running VM's machine (the engine's [`crate::vmm::Vmm::machine`]): what a saved
    /// state of it depends on.
    pub machine: Vec<String>,
    /// Whether the running VM maps its RAM privately (a fork, or a restore of a fork's
    /// state): its pages are in the VMM's memory, not in its RAM file, and a saved state
    /// of it carries them.
    pub ram_private: bool,
    /// Unix seconds of the last pause.
    pub paused_at: Option<u64>,
    /// Whether the last pause was the box's auto-pause (its shim), not a caller.
    pub auto_paused: bool,
    /// How many times the box has paused itself. A call that lost its connection asks
    /// whether this moved since it looked at the box: if so the shim held the call's
    /// bytes and closed it undelivered, and the call can be made again even when
    /// another client has resumed the box in the meantime.
    pub auto_pauses: u64,
    /// What the running VM was started from, which a state saved from it records.
    pub build: Option<VmBuild>,
}

/// The engine and guest assets a VM runs: what a saved state of it can be loaded with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct VmBuild {
    /// The engine's version line.
    pub engine: String,
    pub kernel_sha256: String,
    pub initrd_sha256: String,
}

/// How a box's VM began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum StartKind {
    /// The kernel booted.
    Cold,
    /// A paused box continued from its saved state.
    Resumed,
    /// Restored from one of its own snapshots.
    Restored { snapshot: String },
    /// A fork of another box's memory state (`boxlite clone`).
    Cloned {
        source: String,
        snapshot: Option<String>,
    },
    /// A fork of the image's template (warm start).
    Template { key: String },
}

impl std::fmt::Display for StartKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartKind::Cold => f.write_str("cold boot"),
            StartKind::Resumed => f.write_str("resumed"),
            StartKind::Restored { snapshot } => write!(f, "restored from snapshot {snapshot}"),
            StartKind::Cloned {
                source,
                snapshot: Some(s),
            } => write!(f, "cloned from {source}@{s}"),
            StartKind::Cloned { source, .. } => write!(f, "cloned from {source}"),
            StartKind::Template { key } => write!(f, "warm start (template {key})"),
        }
    }
}

/// A status as stored, read leniently: missing fields take their defaults, unknown ones
/// are ignored, and a row of the version that marked creation with a `creating` field
/// reads as [`BoxState::Creating`].
#[derive(Deserialize, Default)]
#[serde(default)]
struct StoredStatus {
    state: BoxState,
    creating: Option<ProcessId>,
    accel: Option<Accel>,
    vmm: Option<ProcessId>,
    /// Written by versions that reached the agent over vhost-user-vsock.
    vsock_helper: Option<ProcessId>,
    monitor: Option<ProcessId>,
    legacy_helpers: Vec<ProcessId>,
    virtiofsd: Vec<ProcessId>,
    net_helper: Option<ProcessId>,
    last_error: Option<String>,
    health: Health,
    started_at: Option<u64>,
    stopped_at: Option<u64>,
    boot: Option<BootTimings>,
    started_from: Option<StartKind>,
    machine: Vec<String>,
    ram_private: bool,
    paused_at: Option<u64>,
    auto_paused: bool,
    auto_pauses: u64,
    build: Option<VmBuild>,
}

impl From<StoredStatus> for BoxStatus {
    fn from(s: StoredStatus) -> Self {
        BoxStatus {
            state: if s.creating.is_some() {
                BoxState::Creating
            } else {
                s.state
            },
            accel: s.accel,
            vmm: s.vmm,
            monitor: s.monitor,
            legacy_helpers: s.legacy_helpers.into_iter().chain(s.vsock_helper).collect(),
            virtiofsd: s.virtiofsd,
            net_helper: s.net_helper,
            last_error: s.last_error,
            health: s.health,
            started_at: s.started_at,
            stopped_at: s.stopped_at,
            boot: s.boot,
            started_from: s.started_from,
            machine: s.machine,
            ram_private: s.ram_private,
            paused_at: s.paused_at,
            auto_paused: s.auto_paused,
            auto_pauses: s.auto_pauses,
            build: s.build,
        }
    }
}

impl Default for BoxStatus {
    fn default() -> Self {
        StoredStatus::default().into()
    }
}

/// Host-side timings of the last start, in milliseconds from its beginning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootTimings {
    /// Helpers (virtiofsd, the network helper) ready and the VMM process spawned.
    pub vmm_spawned_ms: u64,
    /// The agent reported ready (kernel boot, init, agent start).
    pub agent_ready_ms: u64,
    /// Connected to the agent and volumes mounted: the box is usable.
    pub ready_ms: u64,
}

impl BoxStatus {
    /// The status of a box whose row is being inserted.
    pub fn creating() -> Self {
        BoxStatus {
            state: BoxState::Creating,
            ..BoxStatus::default()
        }
    }

    /// The status of a row that could not be read: Failed, with the reason.
    pub fn unreadable(reason: String) -> Self {
        BoxStatus {
            state: BoxState::Failed,
            last_error: Some(reason),
            ..BoxStatus::default()
        }
    }

    /// A status in any state, for tests of what reads and acts on states.
    #[cfg(test)]
    pub fn in_state(state: BoxState) -> Self {
        BoxStatus {
            state,
            ..BoxStatus::default()
        }
    }

    pub fn state(&self) -> BoxState {
        self.state
    }

    /// Move to `to`, if the lifecycle allows it: the only writer of the state.
    pub fn transition(&mut self, to: BoxState) -> Result<(), InvalidTransition> {
        self.state.check_transition(to)?;
        self.state = to;
        Ok(())
    }

    /// Whether the recorded VMM process (pid and start time) still runs.
    pub fn vmm_alive(&self) -> bool {
        self.vmm.is_some_and(|p| p.is_alive())
    }

    /// Every recorded helper process, the VMM first.
    pub fn processes(&self) -> Vec<ProcessId> {
        [self.vmm, self.monitor, self.net_helper]
            .into_iter()
            .flatten()
            .chain(self.virtiofsd.iter().copied())
            .chain(self.legacy_helpers.iter().copied())
            .collect()
    }

    /// Forget every recorded process except `survivors` (processes that would not die,
    /// kept so a later reconciliation ends them).
    pub fn keep_processes(&mut self, survivors: &[ProcessId]) {
        let keep = |p: &Option<ProcessId>| p.filter(|p| survivors.contains(p));
        self.vmm = keep(&self.vmm);
        self.legacy_helpers.retain(|p| survivors.contains(p));
        self.monitor = keep(&self.monitor);
        self.net_helper = keep(&self.net_helper);
        self.virtiofsd.retain(|p| survivors.contains(p));
    }
}

/// One box as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxRow {
    pub id: String,
    pub name: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    pub config: BoxConfig,
    pub status: BoxStatus,
}

/// The file in which version 0.1 kept a box's record, before the state database.
pub const LEGACY_RECORD: &str = "box.json";

/// Read a version 0.1 `box.json` as a row. Its fields are a flat union of today's config
/// and status under the same names, so both read from the same text.
pub fn legacy_row(id: &str, text: &str) -> Option<BoxRow> {
    #[derive(Deserialize)]
    struct Top {
        #[serde(default)]
        created_at: u64,
    }
    let top: Top = serde_json::from_str(text).ok()?;
    let config: BoxConfig = serde_json::from_str(text).ok()?;
    let status: BoxStatus = serde_json::from_str(text).ok()?;
    Some(BoxRow {
        id: id.to_string(),
        name: None,
        created_at: top.created_at,
        config,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_box_json_reads_as_a_row() {
        let text = r#"{"id":"ab","image":"boxlite/busybox:latest","image_digest":"sha256:00",
            "created_at":17,"memory_mib":256,"cpus":1,"state":"Stopped",
            "vsock_mode":"vhost-user","cid":null,"vmm":null,"vsock_helper":null,
            "last_error":"the VM process is gone"}"#;

        let row = legacy_row("ab", text).unwrap();

        assert_eq!(row.created_at, 17);
        assert_eq!(row.config.image, "boxlite/busybox:latest");
        assert_eq!(row.config.memory_mib, 256);
        assert_eq!(row.status.state(), BoxState::Stopped);
        assert_eq!(
            row.status.last_error.as_deref(),
            Some("the VM process is gone")
        );
    }

    #[test]
    fn status_from_an_older_version_with_missing_and_extra_fields_loads() {
        let old = r#"{"state":"Running","vmm":{"pid":7,"start_time":9},"gpu":"yes"}"#;

        let st: BoxStatus = serde_json::from_str(old).unwrap();

        assert_eq!(st.state(), BoxState::Running);
        assert_eq!(st.vmm.map(|p| p.pid), Some(7));
        assert_eq!(st.health, Health::default());
    }

    #[test]
    fn status_of_an_interrupted_creation_by_the_previous_version_reads_as_creating() {
        let old = r#"{"state":"Configured","creating":{"pid":7,"start_time":9}}"#;

        let st: BoxStatus = serde_json::from_str(old).unwrap();

        assert_eq!(st.state(), BoxState::Creating);
    }

    #[test]
    fn status_serializes_its_state_and_reads_back_equal() {
        let mut st = BoxStatus::creating();
        st.transition(BoxState::Configured).unwrap();
        st.transition(BoxState::Starting).unwrap();

        let text = serde_json::to_string(&st).unwrap();
        let back: BoxStatus = serde_json::from_str(&text).unwrap();

        assert!(text.contains(r#""state":"Starting""#), "{text}");
        assert_eq!(back, st);
        assert!(st.transition(BoxState::Stopped).is_err());
        assert_eq!(st.state(), BoxState::Starting);
    }

    #[test]
    fn config_with_only_an_image_takes_defaults() {
        let c: BoxConfig = serde_json::from_str(r#"{"image":"boxlite/busybox"}"#).unwrap();

        assert_eq!(c.memory_mib, 512);
        assert_eq!(c.cpus, 2);
        assert!(!c.auto_remove);
        assert_eq!(c.health, HealthOptions::default());
    }
}
