//! Managed volumes: create, list, get, remove. A volume is named; its host directory is
//! never shown. (Not in BoxLite's document; its released SDK calls these routes.)

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use boxlite::VolumeInfo;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::boxes::rfc3339;
use crate::error::{ApiError, ErrorResponse};

/// A managed volume.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Volume {
    /// The name (volumes have no other id).
    pub id: String,
    pub name: String,
    /// `named`, or `anonymous` (created for one box and removed with it).
    pub kind: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Ids of the boxes that mount it.
    pub used_by: Vec<String>,
}

impl From<&VolumeInfo> for Volume {
    fn from(v: &VolumeInfo) -> Self {
        let kind = match v.kind {
            boxlite::model::VolumeKind::Named => "named",
            boxlite::model::VolumeKind::Anonymous => "anonymous",
        };
        Volume {
            id: v.name.clone(),
            name: v.name.clone(),
            kind: kind.to_string(),
            created_at: rfc3339(v.created_at),
            used_by: v.used_by.clone(),
        }
    }
}

/// `CreateVolumeRequest`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateVolumeRequest {
    pub name: String,
}

/// `ListVolumesResponse`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ListVolumesResponse {
    pub volumes: Vec<Volume>,
}

/// The path parameter of a volume's routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct VolumePath {
    /// The volume's name.
    pub volume_id: String,
}

#[utoipa::path(post, path = "/v1/volumes", operation_id = "createVolume", tag = "volumes",
    request_body = CreateVolumeRequest,
    responses(
        (status = 201, body = Volume),
        (status = 400, body = ErrorResponse),
        (status = 409, description = "The name is taken", body = ErrorResponse),
    ))]
pub async fn create(
    State(s): State<AppState>,
    body: Result<Json<CreateVolumeRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(ApiError::from_json)?;
    let v = s.rt.create_volume(&req.name).await?;
    Ok((StatusCode::CREATED, Json(Volume::from(&v))).into_response())
}

#[utoipa::path(get, path = "/v1/volumes", operation_id = "listVolumes", tag = "volumes",
    responses((status = 200, body = ListVolumesResponse)))]
pub async fn list(State(s): State<AppState>) -> Result<Json<ListVolumesResponse>, ApiError> {
    let volumes = s.rt.volumes().await?.iter().map(Volume::from).collect();
    Ok(Json(ListVolumesResponse { volumes }))
}

#[utoipa::path(get, path = "/v1/volumes/{volume_id}", operation_id = "getVolume", tag = "volumes",
    params(VolumePath),
    responses((status = 200, body = Volume), (status = 404, body = ErrorResponse)))]
pub async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Volume>, ApiError> {
    Ok(Json(Volume::from(&s.rt.volume(&name).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Remove it even while boxes mount it.
    #[serde(default)]
    pub force: bool,
}

#[utoipa::path(delete, path = "/v1/volumes/{volume_id}", operation_id = "removeVolume",
    tag = "volumes", params(VolumePath, RemoveQuery),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, body = ErrorResponse),
        (status = 409, description = "In use, and not forced", body = ErrorResponse),
    ))]
pub async fn remove(
    State(s): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(q) = q.map_err(ApiError::from_query)?;
    s.rt.remove_volume(&name, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}
