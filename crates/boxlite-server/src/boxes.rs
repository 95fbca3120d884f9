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
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ErrorResponse};

/// A box as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Box)]
pub struct BoxJson {
    /// The box's id; every route also takes its name or a unique id prefix.
    pub box_id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub status: BoxStatus,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The latest of creation, start and stop (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// The VMM's process id while it runs.
    #[serde(default)]
    pub pid: Option<u32>,
    pub image: String,
    pub cpus: u8,
    pub memory_mib: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds idle before the box pauses itself; 0: never.
    #[serde(default)]
    pub auto_pause: u64,
    /// The same, under the name BoxLite's released Python SDK reads.
    #[serde(default)]
    pub auto_stop: u64,
    /// Seconds after a stop before removal; always 0 (never).
    #[serde(default)]
    pub auto_delete: u64,
    #[serde(default)]
    pub auto_resume: bool,
    /// The box's secrets, never their values (not in BoxLite's document; absent when
    /// the box has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretInfo>,
}

/// `BoxStatus` of the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BoxStatus {
    Configured,
    Running,
    Stopping,
    Stopped,
    Paused,
    Failed,
    /// Also what a client reads for a status it does not know.
    #[serde(other)]
    Unknown,
}

/// The document's `BoxStatus` for a box state.
fn status(s: BoxState) -> BoxStatus {
    match s {
        BoxState::Creating | BoxState::Configured => BoxStatus::Configured,
        BoxState::Starting | BoxState::Running => BoxStatus::Running,
        BoxState::Stopping => BoxStatus::Stopping,
        BoxState::Stopped => BoxStatus::Stopped,
        BoxState::Pausing | BoxState::Paused => BoxStatus::Paused,
        BoxState::Failed => BoxStatus::Failed,
    }
}

pub use boxlite::model::time::rfc3339;

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
            labels: i.config.labels.clone(),
            auto_pause: u64::from(i.config.auto_pause_secs),
            auto_stop: u64::from(i.config.auto_pause_secs),
            auto_delete: 0,
            auto_resume: true,
            secrets: i
                .config
                .secrets
                .iter()
                .map(|s| SecretInfo {
                    name: s.name.clone(),
                    hosts: s.hosts.clone(),
                    placeholder: s.placeholder.clone(),
                })
                .collect(),
        }
    }
}

/// `NetworkSpec` of the document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = NetworkSpec)]
pub struct NetworkJson {
    /// `enabled` or `disabled` (no network device at all).
    pub mode: String,
    /// Egress allow rules (a name, `*.name`, an IP, a CIDR or a group); one rule switches
    /// the box to allow-list mode.
    #[serde(default)]
    pub allow_net: Vec<String>,
    /// Egress deny rules, same syntax; a deny beats any allow. (Not in BoxLite's
    /// document: `boxlite --url run --deny-net` sends it.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_net: Vec<String>,
}

/// `VolumeSpec` of the document, and the released SDK's managed-volume form. Only
/// managed volumes are mounted: a `host_path` is refused.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = VolumeSpec)]
pub struct VolumeJson {
    /// Refused: host paths are never mounted through the API.
    pub host_path: Option<String>,
    /// The managed volume's name (created on first use).
    pub managed_volume: Option<String>,
    pub guest_path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// `SecretSpec` of the document. Only a literal value: a caller of the API never names
/// the server's environment variables or files. Unlike BoxLite, `hosts` must name at
/// least one host (BoxLite reads an empty list as every host: a CA valid for every name).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SecretSpec)]
pub struct SecretSpec {
    /// An environment variable name (`[A-Za-z_][A-Za-z0-9_]*`): the box sees the
    /// placeholder as `$NAME` and as `$BOXLITE_SECRET_<NAME in upper case>`.
    pub name: String,
    /// The value. Kept in a private file of the box's own; never in a response.
    #[schema(value_type = String)]
    pub value: boxlite::SecretValue,
    /// The only hosts the value is sent to: `api.example.com` or `*.example.com`. At
    /// least one; an empty list is refused.
    #[serde(default)]
    #[schema(min_items = 1)]
    pub hosts: Vec<String>,
    /// What the box sees instead of the value (default `<BOXLITE_SECRET:NAME>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    /// Also substitute in request bodies (not in BoxLite's document; default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body: bool,
}

/// A box's secret as responses show it: never its value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretInfo {
    pub name: String,
    pub hosts: Vec<String>,
    pub placeholder: String,
}

/// `CreateBoxRequest`, read leniently: the released SDK sends fields the document does
/// not have (`auto_stop`, `tty`), and unknown fields are ignored. What the library cannot
/// do is refused with `unsupported`, never dropped.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = CreateBoxRequest)]
pub struct CreateBox {
    pub name: Option<String>,
    /// Default `alpine:latest`.
    pub image: Option<String>,
    /// Refused: boxes start from images.
    pub rootfs_path: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub disk_size_gb: Option<u64>,
    /// The default working directory of the box's commands.
    pub working_dir: Option<String>,
    /// The default environment of the box's commands.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// The default user of the box's commands: `name|uid[:group|gid]`.
    pub user: Option<String>,
    #[serde(default)]
    pub volumes: Vec<VolumeJson>,
    pub network: Option<NetworkJson>,
    /// Secrets the box uses without ever holding them: it sees each one's placeholder,
    /// and its network helper puts the value in its place on TLS connections to the
    /// secret's hosts. Values are never shown in any response.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretSpec>,
    /// Accepted; a box created here never depends on the caller's connection.
    #[serde(default)]
    pub detach: bool,
    /// Remove the box as soon as it stops, however it stops (`boxlite run --rm`; not in
    /// BoxLite's document).
    #[serde(default)]
    pub auto_remove: bool,
    /// Accepted: commands ask for a terminal one by one.
    #[serde(default)]
    pub tty: bool,
    /// Seconds without an exec, attach or file transfer before the box pauses itself
    /// (0: never; absent: the server's default, `BOXLITE_AUTO_PAUSE`).
    pub auto_pause: Option<u64>,
    /// The released SDK's name for `auto_pause`.
    pub auto_stop: Option<u64>,
    /// Only 0 (never).
    pub auto_delete: Option<u64>,
    pub auto_resume: Option<bool>,
    /// Only `standard`, this runtime's one preset.
    pub security: Option<String>,
    /// Refused when it asks for anything (`linux_capabilities_enabled` is false).
    #[schema(value_type = Option<Object>)]
    pub advanced: Option<serde_json::Value>,
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
        if self.auto_delete.is_some_and(|v| v != 0) {
            return Err(unsupported("auto_delete other than 0"));
        }
        // `auto_stop` is the released SDK's name for the same interval.
        let auto_pause = match (self.auto_pause, self.auto_stop) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    format!(
                        "auto_pause ({a}) and auto_stop ({b}) name the same interval and differ"
                    ),
                ));
            }
            (Some(a), _) | (None, Some(a)) => Some(a),
            (None, None) => None,
        };
        let auto_pause = match auto_pause.map(u32::try_from) {
            Some(Ok(a)) if a <= boxlite::MAX_AUTO_PAUSE_SECS => Some(a),
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    format!(
                        "auto_pause is out of range (0 for never, or 1-{} seconds)",
                        boxlite::MAX_AUTO_PAUSE_SECS
                    ),
                ));
            }
            None => None,
        };
        if let Some(p) = self.security.as_deref().filter(|p| *p != "standard") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported",
                format!("security preset {p:?} is not supported; the one preset is standard"),
            ));
        }
        if self
            .advanced
            .as_ref()
            .is_some_and(|a| a.as_object().is_none_or(|o| o.values().any(is_set)))
        {
            return Err(unsupported("advanced (Linux capabilities)"));
        }
        let mut o = BoxOptions::new(self.image.unwrap_or_else(|| "alpine:latest".into()))
            .auto_remove(self.auto_remove);
        o.auto_pause_secs = auto_pause;
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
            let net = boxlite::model::NetworkSpec {
                mode,
                allow: n.allow_net,
                deny: n.deny_net,
                ..Default::default()
            };
            o = o.network(net);
        }
        for s in self.secrets {
            let mut secret = boxlite::Secret::from_value(s.name, s.value, s.hosts).body(s.body);
            secret.placeholder = s.placeholder;
            o = o.secret(secret);
        }
        Ok(o)
    }
}

/// An option of the library's [`BoxOptions`] the API cannot carry to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotCarried {
    #[error("the REST API takes no health settings")]
    Health,
    #[error("the REST API cannot publish ports")]
    Ports,
    #[error("the REST API takes no host entries")]
    Hosts,
    #[error("the REST API takes whole GiB; give a multiple of 1024 MiB")]
    DiskSize,
    #[error("the REST API mounts named volumes only, never a host path or an anonymous volume")]
    Volume,
    #[error(
        "the REST API takes a secret's value only, never an environment variable or file of the server's; read it first"
    )]
    SecretSource,
    #[error("the REST API takes no capability settings (cap_add, cap_drop, privileged)")]
    Capabilities,
}

impl CreateBox {
    /// The request that creates a box with these options: the inverse of
    /// [`CreateBox::options`]. What the API cannot carry is refused, never dropped.
    pub fn from_options(o: &BoxOptions) -> Result<CreateBox, NotCarried> {
        use boxlite::volumes::VolumeSource;
        if o.health != boxlite::HealthOptions::default() {
            return Err(NotCarried::Health);
        }
        if !o.network.ports.is_empty() {
            return Err(NotCarried::Ports);
        }
        if !o.network.hosts.is_empty() {
            return Err(NotCarried::Hosts);
        }
        if !o.cap_add.is_empty() || !o.cap_drop.is_empty() || o.privileged {
            return Err(NotCarried::Capabilities);
        }
        let disk_size_gb = match o.disk_size_mib {
            Some(mib) if mib % 1024 != 0 => return Err(NotCarried::DiskSize),
            Some(mib) => Some(mib / 1024),
            None => None,
        };
        let mut volumes = Vec::with_capacity(o.volumes.len());
        for v in &o.volumes {
            let VolumeSource::Named(name) = &v.source else {
                return Err(NotCarried::Volume);
            };
            volumes.push(VolumeJson {
                host_path: None,
                managed_volume: Some(name.clone()),
                guest_path: v.guest_path.clone(),
                read_only: v.read_only,
            });
        }
        let mut secrets = Vec::with_capacity(o.secrets.len());
        for s in &o.secrets {
            let boxlite::SecretSource::Value(value) = &s.source else {
                return Err(NotCarried::SecretSource);
            };
            secrets.push(SecretSpec {
                name: s.name.clone(),
                value: value.clone(),
                hosts: s.hosts.clone(),
                placeholder: s.placeholder.clone(),
                body: s.body,
            });
        }
        let n = &o.network;
        let network = (n.mode != NetworkMode::default()
            || !n.allow.is_empty()
            || !n.deny.is_empty())
        .then(|| NetworkJson {
            mode: match n.mode {
                NetworkMode::None => "disabled",
                NetworkMode::Enabled => "enabled",
            }
            .to_string(),
            allow_net: n.allow.clone(),
            deny_net: n.deny.clone(),
        });
        Ok(CreateBox {
            name: o.name.clone(),
            image: Some(o.image.clone()),
            cpus: Some(o.cpus),
            memory_mib: Some(o.memory_mib),
            disk_size_gb,
            working_dir: o.working_dir.clone(),
            env: o.env.iter().cloned().collect(),
            entrypoint: o.entrypoint.clone(),
            cmd: o.cmd.clone(),
            user: o.user.clone(),
            volumes,
            network,
            secrets,
            auto_remove: o.auto_remove,
            auto_pause: o.auto_pause_secs.map(u64::from),
            ..CreateBox::default()
        })
    }
}

/// Whether a JSON value asks for something (`null`, `[]`, `{}` and `false` do not).
fn is_set(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null | serde_json::Value::Bool(false) => false,
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Object(o) => o.values().any(is_set),
        _ => true,
    }
}

/// The path parameter every box route takes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BoxPath {
    /// The box's id, a unique prefix of it, or its name.
    pub box_id: String,
}

#[utoipa::path(post, path = "/v1/boxes", operation_id = "createBox", tag = "boxes",
    request_body = CreateBox,
    responses(
        (status = 201, description = "Created (not started)", body = BoxJson),
        (status = 400, description = "Invalid or unsupported request", body = ErrorResponse),
        (status = 409, description = "The name is taken", body = ErrorResponse),
        (status = 422, description = "The image could not be pulled", body = ErrorResponse),
    ))]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only boxes in this status.
    pub status: Option<BoxStatus>,
}

/// `ListBoxesResponse`: every box on one page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ListBoxesResponse)]
pub struct BoxList {
    pub boxes: Vec<BoxJson>,
    /// Always null: one page holds every box.
    pub next_page_token: Option<String>,
}

#[utoipa::path(get, path = "/v1/boxes", operation_id = "listBoxes", tag = "boxes",
    params(ListQuery),
    responses(
        (status = 200, body = BoxList),
        (status = 400, description = "Not a status", body = ErrorResponse),
    ))]
pub async fn list(
    State(s): State<AppState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BoxList>, ApiError> {
    let Query(q) = q.map_err(ApiError::from_query)?;
    let boxes: Vec<BoxJson> =
        s.rt.list()
            .await?
            .iter()
            .map(BoxJson::from)
            .filter(|b| q.status.is_none_or(|st| st == b.status))
            .collect();
    Ok(Json(BoxList {
        boxes,
        next_page_token: None,
    }))
}

#[utoipa::path(get, path = "/v1/boxes/{box_id}", operation_id = "getBox", tag = "boxes",
    params(BoxPath),
    responses((status = 200, body = BoxJson), (status = 404, body = ErrorResponse)))]
pub async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BoxJson>, ApiError> {
    let info = s.rt.get(&id).await?.info().await?;
    Ok(Json(BoxJson::from(&info)))
}

#[utoipa::path(head, path = "/v1/boxes/{box_id}", operation_id = "boxExists", tag = "boxes",
    params(BoxPath),
    responses((status = 204, description = "The box exists"), (status = 404, description = "No such box")))]
pub async fn head(State(s): State<AppState>, Path(id): Path<String>) -> StatusCode {
    match s.rt.get(&id).await {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(e) => ApiError::from(e).status,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Stop a running box first (without it, a running box is refused with 409).
    #[serde(default)]
    pub force: bool,
}

#[utoipa::path(delete, path = "/v1/boxes/{box_id}", operation_id = "removeBox", tag = "boxes",
    params(BoxPath, RemoveQuery),
    responses(
        (status = 204, description = "Removed, with its disks and anonymous volumes"),
        (status = 404, body = ErrorResponse),
        (status = 409, description = "Running, and not forced", body = ErrorResponse),
    ))]
pub async fn remove(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(q) = q.map_err(ApiError::from_query)?;
    let b = s.rt.get(&id).await?;
    s.rt.remove(&b, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/boxes/{box_id}/start", operation_id = "startBox", tag = "boxes",
    params(BoxPath),
    responses(
        (status = 200, description = "Running (starting a running box is a no-op)", body = BoxJson),
        (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse),
    ))]
pub async fn start(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BoxJson>, ApiError> {
    let b = s.rt.get(&id).await?;
    b.start().await?;
    Ok(Json(BoxJson::from(&b.info().await?)))
}

/// `StopBoxRequest`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = StopBoxRequest)]
pub struct StopBox {
    /// Seconds to wait for a clean shutdown before the VM is killed (default 30).
    pub timeout_seconds: Option<f64>,
}

#[utoipa::path(post, path = "/v1/boxes/{box_id}/stop", operation_id = "stopBox", tag = "boxes",
    params(BoxPath),
    request_body(content = Option<StopBox>, description = "Optional; the released SDK sends no body"),
    responses(
        (status = 200, body = BoxJson),
        (status = 400, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
    ))]
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
    let before = b.info().await?;
    b.stop(timeout).await?;
    match b.info().await {
        Ok(info) => Ok(Json(BoxJson::from(&info))),
        // An auto-remove box is gone once stopped: it is shown as it ended.
        Err(boxlite::Error::Box(boxlite::BoxError::NotFound(_))) => {
            let mut last = BoxJson::from(&before);
            last.status = BoxStatus::Stopped;
            last.pid = None;
            last.updated_at = rfc3339(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );
            Ok(Json(last))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_go_to_a_request_and_back_unchanged_or_are_refused() {
        let mut o = BoxOptions::new("img")
            .name("web")
            .cpus(2)
            .memory_mib(300)
            .disk_size_mib(2048)
            .env("A", "1")
            .working_dir("/w")
            .user("1000:1000")
            .entrypoint(["/bin/sh"])
            .cmd(["-c", "x"])
            .auto_remove(true)
            .volume(boxlite::volumes::VolumeSpec::named("data", "/data"));
        o.network.allow = vec!["example.com".into()];
        o.network.deny = vec!["10.0.0.0/8".into()];
        let back = CreateBox::from_options(&o).unwrap().options().unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&o).unwrap()
        );
        // The default network is sent as no network section at all.
        let plain = CreateBox::from_options(&BoxOptions::new("img")).unwrap();
        assert!(plain.network.is_none());
        let mut off = BoxOptions::new("img");
        off.network.mode = NetworkMode::None;
        let net = CreateBox::from_options(&off).unwrap().network.unwrap();
        assert_eq!(net.mode, "disabled");
        // What the API cannot carry is refused, never dropped.
        let mut ports = BoxOptions::new("img");
        ports.network.ports = vec![boxlite::model::PortSpec::parse("8080:80").unwrap()];
        assert_eq!(
            CreateBox::from_options(&ports).unwrap_err(),
            NotCarried::Ports
        );
        let odd = BoxOptions::new("img").disk_size_mib(1500);
        assert_eq!(
            CreateBox::from_options(&odd).unwrap_err(),
            NotCarried::DiskSize
        );
        let anon = BoxOptions::new("img").volume(boxlite::volumes::VolumeSpec::anonymous("/a"));
        assert_eq!(
            CreateBox::from_options(&anon).unwrap_err(),
            NotCarried::Volume
        );
        let env = BoxOptions::new("img").secret(boxlite::Secret::from_env("K", "HOME", ["a.test"]));
        assert_eq!(
            CreateBox::from_options(&env).unwrap_err(),
            NotCarried::SecretSource
        );
    }

    #[test]
    fn secrets_go_as_literal_values_and_come_back_the_same() {
        let value = boxlite::SecretValue::new("sk-roundtrip-1".into());
        let o = BoxOptions::new("img").secret(
            boxlite::Secret::from_value("K", value, ["api.test", "*.api.test"])
                .placeholder("PLACEHOLDER_K")
                .body(true),
        );

        let req = CreateBox::from_options(&o).unwrap();
        let wire = serde_json::to_value(&req).unwrap();
        let back: CreateBox = serde_json::from_value(wire.clone()).unwrap();

        assert_eq!(
            wire["secrets"],
            serde_json::json!([{"name": "K", "value": "sk-roundtrip-1",
                "hosts": ["api.test", "*.api.test"], "placeholder": "PLACEHOLDER_K", "body": true}])
        );
        assert!(!format!("{req:?}").contains("sk-roundtrip-1"));
        assert_eq!(back.options().unwrap().secrets, o.secrets);
    }

    #[test]
    fn a_secret_naming_an_env_variable_or_file_of_the_server_is_refused() {
        for source in [
            serde_json::json!({"name": "K", "env": "HOME", "hosts": ["a.test"]}),
            serde_json::json!({"name": "K", "value": "v", "file": "/etc/shadow", "hosts": ["a.test"]}),
        ] {
            let body = serde_json::json!({"image": "x", "secrets": [source]});

            let parsed = serde_json::from_value::<CreateBox>(body);

            let e = parsed.unwrap_err().to_string();
            assert!(e.contains("unknown field"), "{e}");
        }
        // BoxLite's SDK sends a null placeholder.
        let sdk = serde_json::json!({"image": "x", "secrets": [
            {"name": "K", "value": "v", "hosts": ["a.test"], "placeholder": null}]});
        let o = serde_json::from_value::<CreateBox>(sdk)
            .unwrap()
            .options()
            .unwrap();
        assert_eq!(o.secrets[0].placeholder, None);
    }

    #[test]
    fn host_paths_and_unsupported_fields_are_refused_not_dropped() {
        let req: CreateBox = serde_json::from_value(serde_json::json!({
            "image": "x", "volumes": [{"host_path": "/etc", "guest_path": "/e"}]
        }))
        .unwrap();
        assert!(req.options().unwrap_err().message.contains("host paths"));
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
            "detach": false, "auto_stop": 0, "auto_resume": false, "tty": false,
            "security": "standard", "advanced": {"capabilities": {"add": [], "drop": []}},
            "some_future_field": 1
        }))
        .unwrap();
        assert_eq!(req.options().unwrap().auto_pause_secs, Some(0));
        // auto_pause and its other name auto_stop set the box's auto-pause; absent, the
        // server's default applies.
        for (body, want) in [
            (
                serde_json::json!({"image": "x", "auto_pause": 90}),
                Some(90),
            ),
            (
                serde_json::json!({"image": "x", "auto_stop": 600}),
                Some(600),
            ),
            (
                serde_json::json!({"image": "x", "auto_pause": 5, "auto_stop": 5}),
                Some(5),
            ),
            (serde_json::json!({"image": "x"}), None),
        ] {
            let req: CreateBox = serde_json::from_value(body.clone()).unwrap();
            assert_eq!(req.options().unwrap().auto_pause_secs, want, "{body}");
        }
        for body in [
            serde_json::json!({"image": "x", "auto_pause": 5, "auto_stop": 6}),
            serde_json::json!({"image": "x", "auto_pause": 99_999_999_999u64}),
        ] {
            let req: CreateBox = serde_json::from_value(body.clone()).unwrap();
            let err = req.options().unwrap_err();
            assert_eq!(err.code, "invalid_argument", "{body}");
            assert!(err.message.contains("auto_"), "{}", err.message);
        }
        // What it cannot honour is refused, each naming the field.
        for (field, bad) in [
            ("auto_delete", serde_json::json!(3600)),
            ("security", serde_json::json!("maximum")),
            (
                "advanced",
                serde_json::json!({"capabilities": {"add": ["NET_ADMIN"]}}),
            ),
        ] {
            let mut body = serde_json::json!({"image": "x"});
            body[field] = bad;
            let req: CreateBox = serde_json::from_value(body).unwrap();
            let err = req.options().unwrap_err();
            assert_eq!(err.code, "unsupported", "{field}");
            assert!(
                err.message.contains(field) || err.message.contains("preset"),
                "{field}: {}",
                err.message
            );
        }
    }
}
