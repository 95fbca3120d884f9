//! Box routes: create, list, get, head, delete, start, stop. Shapes follow BoxLite's
//! OpenAPI document (`Box`, `CreateBoxRequest`, `ListBoxesResponse`) and what its released
//! Python SDK (0.10.8) sends and reads.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use boxlite::model::{BoxState, NetworkMode};
use boxlite::{BoxInfo, BoxOptions};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;

/// A box as the API shows it.
#[derive(Debug, Serialize)]
pub struct BoxJson {
    pub box_id: String,
    pub name: Option<String>,
    pub status: &'static str,
    pub created_at: String,
    pub updated_at: String,
    pub pid: Option<u32>,
    pub image: String,
    pub cpus: u8,
    pub memory_mib: u32,
    pub labels: BTreeMap<String, String>,
    /// Seconds idle before a pause; 0: never (boxes do not pause themselves yet).
    pub auto_pause: u64,
    /// The same, under the name the released Python SDK reads.
    pub auto_stop: u64,
    pub auto_delete: u64,
    pub auto_resume: bool,
}

/// The document's `BoxStatus` for a box state.
fn status(s: BoxState) -> &'static str {
    match s {
        BoxState::Creating | BoxState::Configured => "configured",
        BoxState::Starting | BoxState::Running => "running",
        BoxState::Stopping => "stopping",
        BoxState::Stopped => "stopped",
        BoxState::Failed => "failed",
    }
}

/// RFC 3339 (UTC) for seconds since the epoch.
pub fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl From<&BoxInfo> for BoxJson {
    fn from(i: &BoxInfo) -> Self {
        let updated = [Some(i.created_at), i.started_at, i.stopped_at]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(i.created_at);
        BoxJson {
            box_id: i.id.clone(),
            name: i.name.clone(),
            status: status(i.state),
            created_at: rfc3339(i.created_at),
            updated_at: rfc3339(updated),
            pid: i.vmm_pid.and_then(|p| u32::try_from(p).ok()),
            image: i.image.clone(),
            cpus: u8::try_from(i.config.cpus).unwrap_or(u8::MAX),
            memory_mib: i.config.memory_mib,
            labels: BTreeMap::new(),
            auto_pause: 0,
            auto_stop: 0,
            auto_delete: 0,
            auto_resume: true,
        }
    }
}

/// `NetworkSpec` of the document.
#[derive(Debug, Deserialize)]
pub struct NetworkJson {
    pub mode: String,
    #[serde(default)]
    pub allow_net: Vec<String>,
}

/// `VolumeSpec` of the document, and the released SDK's managed-volume form.
#[derive(Debug, Deserialize)]
pub struct VolumeJson {
    pub host_path: Option<String>,
    pub managed_volume: Option<String>,
    pub guest_path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// `CreateBoxRequest`, read leniently: the released SDK sends fields the document does
/// not have (`auto_stop`, `tty`), and unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct CreateBox {
    pub name: Option<String>,
    pub image: Option<String>,
    pub rootfs_path: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub disk_size_gb: Option<u64>,
    pub working_dir: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub user: Option<String>,
    #[serde(default)]
    pub volumes: Vec<VolumeJson>,
    pub network: Option<NetworkJson>,
    #[serde(default)]
    pub secrets: Vec<serde_json::Value>,
}

fn unsupported(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "unsupported",
        format!("{what} is not supported by this server yet"),
    )
}

impl CreateBox {
    /// The library's options for this request; what the library cannot do is refused,
    /// never silently dropped.
    pub fn options(self) -> Result<BoxOptions, ApiError> {
        if self.rootfs_path.is_some() {
            return Err(unsupported("rootfs_path"));
        }
        if !self.secrets.is_empty() {
            return Err(unsupported("secrets"));
        }
        let mut o = BoxOptions::new(self.image.unwrap_or_else(|| "alpine:latest".into()));
        if let Some(n) = self.name {
            o = o.name(n);
        }
        if let Some(c) = self.cpus {
            o = o.cpus(c);
        }
        if let Some(m) = self.memory_mib {
            o = o.memory_mib(m);
        }
        if let Some(gb) = self.disk_size_gb {
            o = o.disk_size_mib(gb.saturating_mul(1024));
        }
        for (k, v) in self.env {
            o = o.env(k, v);
        }
        if let Some(d) = self.working_dir {
            o = o.working_dir(d);
        }
        if let Some(u) = self.user {
            o = o.user(u);
        }
        if let Some(e) = self.entrypoint {
            o = o.entrypoint(e);
        }
        if let Some(c) = self.cmd {
            o = o.cmd(c);
        }
        for v in self.volumes {
            match (v.host_path, v.managed_volume) {
                (Some(_), _) => {
                    return Err(ApiError::bad_request(
                        "host paths are never mounted through the API; use a managed volume",
                    ));
                }
                (None, Some(name)) => {
                    let mut spec = boxlite::volumes::VolumeSpec::named(name, v.guest_path);
                    spec.read_only = v.read_only;
                    o = o.volume(spec);
                }
                (None, None) => {
                    return Err(ApiError::bad_request(
                        "a volume needs managed_volume (host_path is refused)",
                    ));
                }
            }
        }
        if let Some(n) = self.network {
            let mode = match n.mode.as_str() {
                "enabled" => NetworkMode::Enabled,
                "disabled" => NetworkMode::None,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "invalid network mode {other:?}; valid values are enabled and disabled"
                    )));
                }
            };
            o = o.network(boxlite::model::NetworkSpec {
                mode,
                allow: n.allow_net,
                ..Default::default()
            });
        }
        Ok(o)
    }
}

pub async fn create(
    State(s): State<AppState>,
    body: Result<Json<CreateBox>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(ApiError::from_json)?;
    let opts = req.options()?;
    let b = s.rt.create(opts).await?;
    let info = b.info().await?;
    let location = format!("/v1/boxes/{}", info.id);
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        Json(BoxJson::from(&info)),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub status: Option<String>,
}

pub async fn list(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let boxes: Vec<BoxJson> =
        s.rt.list()
            .await?
            .iter()
            .map(BoxJson::from)
            .filter(|b| q.status.as_deref().is_none_or(|st| st == b.status))
            .collect();
    Ok(Json(
        serde_json::json!({ "boxes": boxes, "next_page_token": null }),
    ))
}

pub async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BoxJson>, ApiError> {
    let info = s.rt.get(&id).await?.info().await?;
    Ok(Json(BoxJson::from(&info)))
}

pub async fn head(State(s): State<AppState>, Path(id): Path<String>) -> StatusCode {
    match s.rt.get(&id).await {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(e) => ApiError::from(e).status,
    }
}

#[derive(Debug, Deserialize)]
pub struct RemoveQuery {
    #[serde(default)]
    pub force: bool,
}

pub async fn remove(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    let b = s.rt.get(&id).await?;
    s.rt.remove(&b, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn start(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BoxJson>, ApiError> {
    let b = s.rt.get(&id).await?;
    b.start().await?;
    Ok(Json(BoxJson::from(&b.info().await?)))
}

#[derive(Debug, Default, Deserialize)]
pub struct StopBox {
    pub timeout_seconds: Option<f64>,
}

pub async fn stop(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<BoxJson>, ApiError> {
    // The released SDK sends no body at all; the document allows a `StopBoxRequest`.
    let req: StopBox = if body.is_empty() {
        StopBox::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    let timeout = match req.timeout_seconds {
        Some(t) if t.is_finite() && t >= 0.0 => Duration::from_secs_f64(t.min(3600.0)),
        Some(t) => {
            return Err(ApiError::bad_request(format!(
                "invalid timeout_seconds {t}: a number of seconds, 0 or more"
            )));
        }
        None => Duration::from_secs(30),
    };
    let b = s.rt.get(&id).await?;
    b.stop(timeout).await?;
    Ok(Json(BoxJson::from(&b.info().await?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_077_715), "2026-11-30T22:28:35Z");
    }

    #[test]
    fn host_paths_and_unsupported_fields_are_refused_not_dropped() {
        let req: CreateBox = serde_json::from_value(serde_json::json!({
            "image": "x", "volumes": [{"host_path": "/etc", "guest_path": "/e"}]
        }))
        .unwrap();
        assert!(req.options().unwrap_err().message.contains("host paths"));
        let req: CreateBox =
            serde_json::from_value(serde_json::json!({"image": "x", "secrets": [{"name": "K"}]}))
                .unwrap();
        assert_eq!(req.options().unwrap_err().code, "unsupported");
        let req: CreateBox = serde_json::from_value(serde_json::json!({
            "image": "x", "env": {"A": "1"}, "working_dir": "/w", "user": "1000"
        }))
        .unwrap();
        let o = req.options().unwrap();
        assert_eq!(
            (o.env, o.working_dir.as_deref(), o.user.as_deref()),
            (
                vec![("A".to_string(), "1".to_string())],
                Some("/w"),
                Some("1000")
            )
        );
        // What the released SDK sends, unknown fields included.
        let req: CreateBox = serde_json::from_value(serde_json::json!({
            "name": "demo", "image": "alpine:latest", "network": {"mode": "enabled"},
            "detach": false, "auto_stop": 600, "tty": false
        }))
        .unwrap();
        req.options().unwrap();
    }
}
