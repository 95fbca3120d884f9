//! Runtime and box metrics in the document's shapes (`RuntimeMetrics`, `BoxMetrics`),
//! with what the library measures; a figure it does not measure is `null`, never a
//! made-up zero. Extra fields carry what the document has no name for.

use axum::Json;
use axum::extract::{Path, State};
use boxlite::BoxState;

use crate::AppState;
use crate::error::ApiError;

pub async fn runtime(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let boxes = s.rt.list().await?;
    let running = boxes
        .iter()
        .filter(|b| b.state == BoxState::Running)
        .count();
    let failed = boxes.iter().filter(|b| b.state == BoxState::Failed).count();
    let stopped = boxes
        .iter()
        .filter(|b| b.state == BoxState::Stopped)
        .count();
    Ok(Json(serde_json::json!({
        "num_running_boxes": running,
        // The library keeps no counters across boxes removed; these count what exists.
        "boxes_created_total": boxes.len(),
        "boxes_failed_total": failed,
        "boxes_stopped_total": stopped,
        "total_commands_executed": null,
        "total_exec_errors": null,
    })))
}

pub async fn of_box(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let m = s.rt.get(&id).await?.metrics().await?;
    let net = m.network.as_ref();
    let boot = m.boot.as_ref().map(|b| {
        serde_json::json!({
            "total_create_ms": null,
            "guest_boot_ms": b.kernel_to_agent_ready_ms,
            "filesystem_setup_ms": null,
            "image_prepare_ms": null,
            "guest_rootfs_ms": null,
            "box_config_ms": null,
            "box_spawn_ms": b.vmm_spawn_ms,
            "container_init_ms": null,
            "ready_ms": b.ready_ms,
        })
    });
    Ok(Json(serde_json::json!({
        "commands_executed_total": m.execs_started,
        "exec_errors_total": null,
        "bytes_sent_total": net.map(|n| n.bytes_out),
        "bytes_received_total": net.map(|n| n.bytes_in),
        "cpu_percent": m.cpu_percent,
        "memory_bytes": m.mem_used_bytes,
        "network_bytes_sent": net.map(|n| n.bytes_out),
        "network_bytes_received": net.map(|n| n.bytes_in),
        "network_tcp_connections": net.map(|n| n.tcp_connections),
        "network_tcp_errors": null,
        "boot_timing": boot,
        "executions_running": m.execs_running,
        "vmm_rss_bytes": m.vmm_rss_bytes,
        "memory_total_bytes": m.mem_total_bytes,
        "disk_overlay_bytes": m.disk_overlay_bytes,
        "rootfs_used_bytes": m.rootfs_used_bytes,
        "oom_kills": m.oom_kills,
    })))
}
