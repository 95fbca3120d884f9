//! Snapshots, clones, pause and resume. The snapshot and clone routes are BoxLite's
//! (`createSnapshot`, `listSnapshots`, `getSnapshot`, `removeSnapshot`,
//! `restoreSnapshot`, `cloneBox`), with ours going further: a snapshot of a running box
//! holds its memory, and a clone of one starts where the box was. Pause and resume are
//! routes of ours.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::boxes::{BoxJson, BoxPath};
use crate::error::{ApiError, ErrorResponse};

/// `Snapshot`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    /// The snapshot's own id.
    pub id: String,
    /// The box it belongs to.
    pub box_id: String,
    /// Unique per box.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Bytes of the guest's own disk (boxlite boxes have one disk: 0).
    pub guest_disk_bytes: i64,
    /// Bytes of the box's disk copy on the host.
    pub container_disk_bytes: i64,
    /// Bytes of the whole snapshot on the host.
    pub size_bytes: i64,
    /// Whether it holds the box's memory (boxlite): a clone or restore of it continues
    /// the box's processes.
    pub memory: bool,
}

fn bytes(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl From<&boxlite::SnapshotInfo> for Snapshot {
    fn from(s: &boxlite::SnapshotInfo) -> Self {
        Snapshot {
            id: s.id.clone(),
            box_id: s.box_id.clone(),
            name: s.name.clone(),
            created_at: s.created_at,
            guest_disk_bytes: 0,
            container_disk_bytes: bytes(s.container_disk_bytes),
            size_bytes: bytes(s.size_bytes),
            memory: s.memory,
        }
    }
}

/// `CreateSnapshotRequest`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateSnapshotRequest {
    /// 1 to 128 letters, digits, `_`, `.` and `-`, starting with a letter or digit.
    pub name: String,
    /// The disk only, even of a running box (boxlite).
    #[serde(default)]
    pub disk_only: bool,
}

/// `ListSnapshotsResponse`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ListSnapshotsResponse {
    pub snapshots: Vec<Snapshot>,
}

/// `CloneBoxRequest`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CloneBoxRequest {
    /// The clone's name (generated if omitted: the clone has only an id).
    pub name: Option<String>,
    /// Clone this snapshot of the box instead of its present state (boxlite).
    pub snapshot: Option<String>,
}

/// The path parameters of one snapshot's routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SnapshotPath {
    /// The box's id, a unique prefix of it, or its name.
    pub box_id: String,
    /// The snapshot's name.
    pub snapshot_name: String,
}

#[utoipa::path(post, path = "/v1/boxes/{box_id}/snapshots", operation_id = "createSnapshot",
    tag = "snapshots", params(BoxPath), request_body = CreateSnapshotRequest,
    responses(
        (status = 201, description = "Taken: memory and disk of a running box (which goes on), saved state and disk of a paused one, disk of a stopped one", body = Snapshot),
        (status = 400, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 409, description = "The name is taken, or the box cannot be saved", body = ErrorResponse),
    ))]
pub async fn create(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<CreateSnapshotRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(ApiError::from_json)?;
    let b = s.rt.get(&id).await?;
    let snap = b
        .snapshot_create(
            &req.name,
            &boxlite::SnapshotOptions {
                disk_only: req.disk_only,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(Snapshot::from(&snap))).into_response())
}

#[utoipa::path(get, path = "/v1/boxes/{box_id}/snapshots", operation_id = "listSnapshots",
    tag = "snapshots", params(BoxPath),
    responses((status = 200, body = ListSnapshotsResponse), (status = 404, body = ErrorResponse)))]
pub async fn list(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ListSnapshotsResponse>, ApiError> {
    let b = s.rt.get(&id).await?;
    let snapshots = b
        .snapshot_list()
        .await?
        .iter()
        .map(Snapshot::from)
        .collect();
    Ok(Json(ListSnapshotsResponse { snapshots }))
}

#[utoipa::path(get, path = "/v1/boxes/{box_id}/snapshots/{snapshot_name}",
    operation_id = "getSnapshot", tag = "snapshots", params(SnapshotPath),
    responses((status = 200, body = Snapshot), (status = 404, body = ErrorResponse)))]
pub async fn get(
    State(s): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Json<Snapshot>, ApiError> {
    let b = s.rt.get(&id).await?;
    Ok(Json(Snapshot::from(&b.snapshot_get(&name).await?)))
}

#[utoipa::path(delete, path = "/v1/boxes/{box_id}/snapshots/{snapshot_name}",
    operation_id = "removeSnapshot", tag = "snapshots", params(SnapshotPath),
    responses((status = 204, description = "Removed (its clones go on)"), (status = 404, body = ErrorResponse)))]
pub async fn remove(
    State(s): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.rt.get(&id).await?.snapshot_remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/boxes/{box_id}/snapshots/{snapshot_name}/restore",
    operation_id = "restoreSnapshot", tag = "snapshots", params(SnapshotPath),
    responses(
        (status = 204, description = "Restored: the disk, and for a memory snapshot the memory (the box is then paused; start or exec continues it)"),
        (status = 404, body = ErrorResponse),
        (status = 409, description = "The box is running: stop or pause it first", body = ErrorResponse),
    ))]
pub async fn restore(
    State(s): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.rt.get(&id).await?.snapshot_restore(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/boxes/{box_id}/clone", operation_id = "cloneBox",
    tag = "snapshots", params(BoxPath), request_body = CloneBoxRequest,
    responses(
        (status = 201, description = "Cloned: running where the source was when it had memory (a running or paused box, a memory snapshot), created stopped otherwise", body = BoxJson),
        (status = 400, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse),
    ))]
pub async fn clone(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: CloneBoxRequest = if body.is_empty() {
        CloneBoxRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    let b = s.rt.get(&id).await?;
    let c = b
        .clone_box(boxlite::CloneOptions {
            snapshot: req.snapshot,
            name: req.name,
            ..Default::default()
        })
        .await?;
    Ok((StatusCode::CREATED, Json(BoxJson::from(&c.info().await?))).into_response())
}

#[utoipa::path(post, path = "/v1/boxes/{box_id}/pause", operation_id = "pauseBox",
    tag = "snapshots", params(BoxPath),
    responses(
        (status = 200, description = "Paused: memory and device state saved, VM ended (boxlite)", body = BoxJson),
        (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse),
    ))]
pub async fn pause(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BoxJson>, ApiError> {
    let b = s.rt.get(&id).await?;
    b.pause().await?;
    Ok(Json(BoxJson::from(&b.info().await?)))
}

#[utoipa::path(post, path = "/v1/boxes/{box_id}/resume", operation_id = "resumeBox",
    tag = "snapshots", params(BoxPath),
    responses(
        (status = 200, description = "Running again where it was paused (boxlite)", body = BoxJson),
        (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse),
    ))]
pub async fn resume(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BoxJson>, ApiError> {
    let b = s.rt.get(&id).await?;
    b.resume().await?;
    Ok(Json(BoxJson::from(&b.info().await?)))
}
