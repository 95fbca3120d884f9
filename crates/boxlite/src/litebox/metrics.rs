//! Per-box figures: host-side from `/proc` (the VMM's CPU time and RSS, the overlay's
//! allocated size) and guest-side from the agent's Stats call.

use serde::Serialize;

use super::{BoxState, LiteBox};
use crate::model::BootTimings;
use crate::util::lock::LockMode;

/// A snapshot of one box. Guest figures are `None` while the box is not running.
#[derive(Debug, Clone, Serialize)]
pub struct BoxMetrics {
    pub id: String,
    pub name: Option<String>,
    pub state: BoxState,
    /// Seconds since the Unix epoch when the snapshot was taken.
    pub taken_at: f64,
    /// CPU time (user + system) the VMM process used since it started, in seconds.
    pub cpu_secs: Option<f64>,
    /// Seconds the VMM process has been running.
    pub vmm_age_secs: Option<f64>,
    /// Average CPU use since the VMM started, in percent of one host CPU. Between two
    /// snapshots, [`BoxMetrics::cpu_percent_since`] gives the recent figure.
    pub cpu_percent: Option<f64>,
    /// Host RSS of the VMM process, in bytes.
    pub vmm_rss_bytes: Option<u64>,
    /// Guest memory as the guest sees it.
    pub mem_total_bytes: Option<u64>,
    pub mem_used_bytes: Option<u64>,
    /// Host bytes allocated to the box's copy-on-write overlay disk.
    pub disk_overlay_bytes: u64,
    /// The container root filesystem, as the guest sees it.
    pub rootfs_used_bytes: Option<u64>,
    pub rootfs_total_bytes: Option<u64>,
    /// Executions started since the box last started, and those still running.
    pub execs_started: Option<u64>,
    pub execs_running: Option<u64>,
    /// Processes the guest kernel's OOM killer ended since the box started.
    pub oom_kills: Option<u64>,
    pub boot: Option<BootStages>,
    /// The network helper's counters (bytes, connections, denials), while it runs.
    pub network: Option<crate::net::StatsSnapshot>,
}

/// Where the last start spent its time, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BootStages {
    /// From the start call until the VMM process was spawned (helpers included).
    pub vmm_spawn_ms: u64,
    /// From the VMM spawn until the agent reported ready, as the host measured it.
    pub vmm_to_agent_ready_ms: u64,
    /// Guest uptime when the agent was ready: kernel boot plus init (None for a box
    /// that started from a saved state: its guest did not boot).
    pub kernel_to_agent_ready_ms: Option<u64>,
    /// From the start call until the box was usable (volumes mounted).
    pub ready_ms: u64,
    /// From the agent being ready to the first exec reaching it, if there was one.
    pub agent_ready_to_first_exec_ms: Option<u64>,
}

impl BoxMetrics {
    /// CPU use between an earlier snapshot and this one, in percent of one host CPU.
    pub fn cpu_percent_since(&self, earlier: &BoxMetrics) -> Option<f64> {
        let (now, then) = (self.cpu_secs?, earlier.cpu_secs?);
        let wall = self.taken_at - earlier.taken_at;
        (wall > 0.0 && now >= then).then(|| (now - then) / wall * 100.0)
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // A tick rate is a small positive number: exact as a float.
    #[allow(clippy::cast_precision_loss)]
    if t > 0 { t as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

fn host_uptime() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn ms(secs: f64) -> u64 {
    // Clamped to zero and far below u64::MAX: the cast loses nothing.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ms = (secs.clamp(0.0, 1e15) * 1000.0).round() as u64;
    ms
}

impl LiteBox {
    /// A snapshot of the box's figures. Never starts the box; a stopped box reports its
    /// disk only.
    pub async fn metrics(&self) -> Result<BoxMetrics, crate::Error> {
        let row = self.lock(LockMode::Shared).await?.row;
        let taken_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let disk_overlay_bytes = std::fs::metadata(self.home().box_paths(&self.id).disk())
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .unwrap_or(0);
        let mut m = BoxMetrics {
            id: self.id.clone(),
            name: row.name.clone(),
            state: row.status.state(),
            taken_at,
            cpu_secs: None,
            vmm_age_secs: None,
            cpu_percent: None,
            vmm_rss_bytes: None,
            mem_total_bytes: None,
            mem_used_bytes: None,
            disk_overlay_bytes,
            rootfs_used_bytes: None,
            rootfs_total_bytes: None,
            execs_started: None,
            execs_running: None,
            oom_kills: None,
            boot: None,
            network: None,
        };
        let running = row.status.state() == BoxState::Running && row.status.vmm_alive();
        if !running {
            return Ok(m);
        }
        if let Some(st) = row
            .status
            .vmm
            .and_then(|p| crate::util::process::read_stat(p.pid))
        {
            let hz = clock_ticks();
            let cpu = st.cpu_ticks as f64 / hz;
            m.cpu_secs = Some(cpu);
            m.vmm_rss_bytes = Some(st.rss_pages * page_size());
            if let Some(up) = host_uptime() {
                let age = up - st.start_time as f64 / hz;
                m.vmm_age_secs = Some(age);
                if age > 0.0 {
                    m.cpu_percent = Some(cpu / age * 100.0);
                }
            }
        }
        if row.status.net_helper.is_some() {
            let sockets = crate::layout::SocketPaths::for_box(&self.id);
            m.network = crate::util::blocking::run(move || crate::net::stats(&sockets)).await;
        }
        let timings: Option<BootTimings> = row.status.boot;
        let client = self.cached_client(&row).await?;
        let g = client.stats().await?;
        m.mem_total_bytes = Some(g.mem_total_bytes);
        m.mem_used_bytes = Some(g.mem_total_bytes.saturating_sub(g.mem_available_bytes));
        m.rootfs_total_bytes = Some(g.root_total_bytes);
        m.rootfs_used_bytes = Some(g.root_used_bytes);
        m.execs_started = Some(g.execs_started);
        m.execs_running = Some(g.execs_running);
        m.oom_kills = Some(g.oom_kills);
        // The guest's own clock tells how long its kernel took only when it booted: a
        // restored guest's uptime goes back to the boot its memory came from.
        let booted = matches!(
            row.status.started_from,
            None | Some(crate::model::StartKind::Cold)
        );
        m.boot = timings.map(|t| BootStages {
            vmm_spawn_ms: t.vmm_spawned_ms,
            vmm_to_agent_ready_ms: t.agent_ready_ms.saturating_sub(t.vmm_spawned_ms),
            kernel_to_agent_ready_ms: (booted && g.agent_ready_uptime_secs > 0.0)
                .then(|| ms(g.agent_ready_uptime_secs)),
            ready_ms: t.ready_ms,
            agent_ready_to_first_exec_ms: (g.first_exec_uptime_secs > 0.0)
                .then(|| ms(g.first_exec_uptime_secs - g.agent_ready_uptime_secs)),
        });
        Ok(m)
    }
}
