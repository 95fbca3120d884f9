//! Runtime and box metrics in the document's shapes (`RuntimeMetrics`, `BoxMetrics`),
//! with what the library measures; a figure it does not measure is `null`, never a
//! made-up zero. Extra fields carry what the document has no name for.

use axum::Json;
use axum::extract::{Path, State};
use boxlite::BoxState;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorResponse};

/// `RuntimeMetrics`. The library keeps no counters across removed boxes, so the totals
/// count the boxes that exist now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RuntimeMetrics {
    pub num_running_boxes: u64,
    pub boxes_created_total: u64,
    pub boxes_failed_total: u64,
    pub boxes_stopped_total: u64,
    /// Not measured: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub total_commands_executed: Option<u64>,
    /// Not measured: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub total_exec_errors: Option<u64>,
}

/// `BootTiming`: where the last start spent its time, in milliseconds; stages this
/// runtime does not have are null.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BootTiming {
    pub total_create_ms: Option<u64>,
    /// Guest uptime when the agent was ready: kernel boot plus init.
    pub guest_boot_ms: Option<u64>,
    pub filesystem_setup_ms: Option<u64>,
    pub image_prepare_ms: Option<u64>,
    pub guest_rootfs_ms: Option<u64>,
    pub box_config_ms: Option<u64>,
    /// From the start call until the VMM was spawned.
    pub box_spawn_ms: Option<u64>,
    pub container_init_ms: Option<u64>,
    /// From the start call until the box was usable.
    pub ready_ms: Option<u64>,
}

/// `BoxMetrics`, with this runtime's extra figures after the document's. The document's
/// counters are absent, not null, when the library does not measure them (the box is
/// not running, has no network, or the figure does not exist here).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BoxMetrics {
    /// Commands started since the box's agent started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub commands_executed_total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub exec_errors_total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub bytes_sent_total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub bytes_received_total: Option<u64>,
    /// Percent of one host CPU since the VMM started.
    pub cpu_percent: Option<f64>,
    /// Memory used in the guest.
    pub memory_bytes: Option<u64>,
    pub network_bytes_sent: Option<u64>,
    pub network_bytes_received: Option<u64>,
    pub network_tcp_connections: Option<u64>,
    pub network_tcp_errors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub boot_timing: Option<BootTiming>,
    pub executions_running: Option<u64>,
    /// The VMM's resident memory on the host.
    pub vmm_rss_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    /// Bytes the box's disk overlay uses on the host.
    #[serde(default)]
    pub disk_overlay_bytes: u64,
    pub rootfs_used_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[utoipa::path(get, path = "/v1/metrics", operation_id = "getRuntimeMetrics", tag = "metrics",
    responses((status = 200, body = RuntimeMetrics)))]
pub async fn runtime(State(s): State<AppState>) -> Result<Json<RuntimeMetrics>, ApiError> {
    let boxes = s.rt.list().await?;
    let with = |st: BoxState| count(boxes.iter().filter(|b| b.state == st).count());
    Ok(Json(RuntimeMetrics {
        num_running_boxes: with(BoxState::Running),
        boxes_created_total: count(boxes.len()),
        boxes_failed_total: with(BoxState::Failed),
        boxes_stopped_total: with(BoxState::Stopped),
        total_commands_executed: None,
        total_exec_errors: None,
    }))
}

#[utoipa::path(get, path = "/v1/boxes/{box_id}/metrics", operation_id = "getBoxMetrics",
    tag = "metrics", params(crate::boxes::BoxPath),
    responses((status = 200, body = BoxMetrics), (status = 404, body = ErrorResponse)))]
pub async fn of_box(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BoxMetrics>, ApiError> {
    let m = s.rt.get(&id).await?.metrics().await?;
    Ok(Json(BoxMetrics::from(&m)))
}

impl From<&boxlite::BoxMetrics> for BoxMetrics {
    /// The API's figures for the library's (the Python SDK's local boxes use it too).
    fn from(m: &boxlite::BoxMetrics) -> Self {
        let net = m.network.as_ref();
        let boot_timing = m.boot.as_ref().map(|b| BootTiming {
            total_create_ms: None,
            guest_boot_ms: b.kernel_to_agent_ready_ms,
            filesystem_setup_ms: None,
            image_prepare_ms: None,
            guest_rootfs_ms: None,
            box_config_ms: None,
            box_spawn_ms: Some(b.vmm_spawn_ms),
            container_init_ms: None,
            ready_ms: Some(b.ready_ms),
        });
        BoxMetrics {
            commands_executed_total: m.execs_started,
            exec_errors_total: None,
            bytes_sent_total: net.map(|n| n.bytes_out),
            bytes_received_total: net.map(|n| n.bytes_in),
            cpu_percent: m.cpu_percent,
            memory_bytes: m.mem_used_bytes,
            network_bytes_sent: net.map(|n| n.bytes_out),
            network_bytes_received: net.map(|n| n.bytes_in),
            network_tcp_connections: net.map(|n| n.tcp_connections),
            network_tcp_errors: None,
            boot_timing,
            executions_running: m.execs_running,
            vmm_rss_bytes: m.vmm_rss_bytes,
            memory_total_bytes: m.mem_total_bytes,
            disk_overlay_bytes: m.disk_overlay_bytes,
            rootfs_used_bytes: m.rootfs_used_bytes,
            oom_kills: m.oom_kills,
        }
    }
}
