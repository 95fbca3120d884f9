//! Managed volumes: create, list, get, remove. A volume is named; its host directory is
//! never shown.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use boxlite::VolumeInfo;
use serde::Deserialize;

use crate::AppState;
use crate::boxes::rfc3339;
use crate::error::ApiError;

fn volume_json(v: &VolumeInfo) -> serde_json::Value {
    serde_json::json!({
        "id": v.name,
        "name": v.name,
        "kind": format!("{:?}", v.kind).to_lowercase(),
        "created_at": rfc3339(v.created_at),
        "used_by": v.used_by,
    })
}

#[derive(Debug, Deserialize)]
pub struct CreateVolume {
    pub name: String,
}

pub async fn create(
    State(s): State<AppState>,
    body: Result<Json<CreateVolume>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(ApiError::from_json)?;
    let v = s.rt.create_volume(&req.name).await?;
    Ok((StatusCode::CREATED, Json(volume_json(&v))).into_response())
}

pub async fn list(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let vols: Vec<serde_json::Value> = s.rt.volumes().await?.iter().map(volume_json).collect();
    Ok(Json(serde_json::json!({"volumes": vols})))
}

pub async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(volume_json(&s.rt.volume(&name).await?)))
}

#[derive(Debug, Deserialize)]
pub struct RemoveQuery {
    #[serde(default)]
    pub force: bool,
}

pub async fn remove(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    s.rt.remove_volume(&name, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}
