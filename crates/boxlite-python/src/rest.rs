//! The REST runtime: `Boxlite.rest(BoxliteRestOptions(url, credential=ApiKeyCredential(key)))`
//! talks to a `boxlite serve` through the `boxlite-client` crate (the remote CLI's own
//! client), with the same `Boxlite`, `Box` and `Execution` objects as a local runtime.
//! Options, credentials and what the server answers become the SDK's types here.

use std::sync::Arc;

use boxlite_client::attach::{self, Exit};
use boxlite_client::{Client, Endpoint, Origin, api};
use pyo3::prelude::*;
use tokio::sync::watch;

use crate::boxes::{BoxInfo, BoxMetrics, BoxStateInfo};
use crate::errors::{rest_ref_to_py, rest_to_py};
use crate::exec::ExecResult;
use crate::runtime::RuntimeMetrics;

/// Where an SDK caller gave the URL and the key, for messages.
const ORIGIN: Origin = Origin {
    url: "BoxliteRestOptions.url",
    key: "credential=ApiKeyCredential(key)",
};

/// A bearer token as a credential hands it out. Its repr hides the token.
#[pyclass(module = "boxlite", get_all, from_py_object)]
#[derive(Clone)]
pub struct AccessToken {
    /// The token.
    pub token: String,
    /// When it expires (seconds since the epoch); None for an API key.
    pub expires_at: Option<f64>,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.__repr__())
    }
}

#[pymethods]
impl AccessToken {
    fn __repr__(&self) -> String {
        format!("AccessToken(token=***, expires_at={:?})", self.expires_at)
    }
}

/// An API key for `boxlite serve` (`--api-key-file` or `BOXLITE_API_KEY` on the
/// server). Its repr hides the key.
#[pyclass(module = "boxlite", from_py_object)]
#[derive(Clone)]
pub struct ApiKeyCredential {
    key: String,
}

impl std::fmt::Debug for ApiKeyCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeyCredential(***)")
    }
}

#[pymethods]
impl ApiKeyCredential {
    #[new]
    fn new(key: String) -> Self {
        ApiKeyCredential { key }
    }

    /// The key in `BOXLITE_API_KEY`, or None.
    #[staticmethod]
    fn from_env() -> Option<Self> {
        std::env::var("BOXLITE_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())
            .map(|key| ApiKeyCredential { key })
    }

    /// The key as a bearer token that does not expire.
    fn get_token(&self) -> AccessToken {
        AccessToken {
            token: self.key.clone(),
            expires_at: None,
        }
    }

    fn __repr__(&self) -> String {
        "ApiKeyCredential(***)".into()
    }
}

/// Where a `boxlite serve` is: `url` (`http://HOST:PORT`, or `https://`), an optional
/// `credential`, and `path_prefix`, a routing segment after `/v1` for servers that take
/// one (`boxlite serve` takes none).
#[pyclass(module = "boxlite", get_all, set_all, from_py_object)]
#[derive(Clone)]
pub struct BoxliteRestOptions {
    /// The server's base URL.
    pub url: String,
    /// The API key, if the server needs one.
    pub credential: Option<ApiKeyCredential>,
    /// A routing segment after `/v1`; None or empty for none.
    pub path_prefix: Option<String>,
}

impl std::fmt::Debug for BoxliteRestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.__repr__())
    }
}

#[pymethods]
impl BoxliteRestOptions {
    #[new]
    #[pyo3(signature = (url, credential=None, path_prefix=None))]
    fn new(url: String, credential: Option<ApiKeyCredential>, path_prefix: Option<String>) -> Self {
        BoxliteRestOptions {
            url,
            credential,
            path_prefix,
        }
    }

    /// From `BOXLITE_REST_URL` (required), `BOXLITE_API_KEY` and
    /// `BOXLITE_REST_PATH_PREFIX`.
    #[staticmethod]
    fn from_env() -> PyResult<Self> {
        let url = std::env::var("BOXLITE_REST_URL").map_err(|_| {
            crate::errors::error(
                "ConfigError",
                "BOXLITE_REST_URL is not set: set it to the server's URL, e.g. http://127.0.0.1:8100"
                    .into(),
            )
        })?;
        Ok(BoxliteRestOptions {
            url,
            credential: ApiKeyCredential::from_env(),
            path_prefix: std::env::var("BOXLITE_REST_PATH_PREFIX").ok(),
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "BoxliteRestOptions(url={:?}, credential={}, path_prefix={:?})",
            self.url,
            if self.credential.is_some() {
                "ApiKeyCredential(***)"
            } else {
                "None"
            },
            self.path_prefix
        )
    }
}

/// The client for these options (nothing is sent yet).
pub(crate) fn client(o: &BoxliteRestOptions) -> PyResult<Arc<Client>> {
    let ep = Endpoint::parse_from(&o.url, o.path_prefix.as_deref(), ORIGIN).map_err(rest_to_py)?;
    let key = o.credential.as_ref().map(|c| c.key.as_str());
    Ok(Arc::new(Client::new(ep, key).map_err(rest_to_py)?))
}

/// An execution on a server.
#[derive(Debug)]
pub(crate) struct RestExec {
    pub(crate) c: Arc<Client>,
    pub(crate) box_id: String,
    pub(crate) exec_id: String,
    pub(crate) exit: watch::Receiver<Option<Exit>>,
    /// `kill()` was called: the server forgets a killed execution, so its status is
    /// not there to ask for.
    pub(crate) killed: std::sync::atomic::AtomicBool,
}

impl RestExec {
    /// The exit, with how it ended as the server recorded it.
    pub(crate) async fn wait(&self) -> PyResult<ExecResult> {
        let code = attach::wait(&mut self.exit.clone())
            .await
            .map_err(|e| rest_ref_to_py(&e))?;
        let code32 = i32::try_from(code).unwrap_or(-1);
        use boxlite_server::exec::ExecutionStatus as S;
        let killed = self.killed.load(std::sync::atomic::Ordering::Relaxed);
        let status = match api::execution(&self.c, &self.box_id, &self.exec_id).await {
            Ok(info) => info.status,
            // Forgotten by the server: killed here, or long ago.
            Err(_) if killed => S::Killed,
            Err(_) => S::Completed,
        };
        let st = match status {
            S::TimedOut => boxlite::ExitStatus::TimedOut,
            S::Killed if code32 > 128 => boxlite::ExitStatus::Signal {
                signal: code32 - 128,
                core_dumped: false,
            },
            _ => boxlite::ExitStatus::Code(code32),
        };
        Ok(ExecResult::from(st))
    }

    pub(crate) async fn kill(&self) -> PyResult<()> {
        self.killed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        api::kill(&self.c, &self.box_id, &self.exec_id)
            .await
            .map_err(rest_to_py)
    }

    pub(crate) async fn signal(&self, sig: i32) -> PyResult<()> {
        api::signal(&self.c, &self.box_id, &self.exec_id, sig)
            .await
            .map_err(rest_to_py)
    }

    pub(crate) async fn resize(&self, rows: u16, cols: u16) -> PyResult<()> {
        api::resize(&self.c, &self.box_id, &self.exec_id, rows, cols)
            .await
            .map_err(rest_to_py)
    }
}

/// Start a command on the server and attach to it; with `stdin`, its stdin stays with
/// the returned execution.
pub(crate) async fn exec(
    c: Arc<Client>,
    box_id: String,
    body: boxlite_server::exec::ExecRequest,
) -> PyResult<crate::exec::Execution> {
    let exec_id = api::start_exec(&c, &box_id, &body)
        .await
        .map_err(rest_to_py)?;
    attach_to(c, box_id, exec_id, true).await
}

/// Attach to an execution by id; if attaching fails, an execution this call started is
/// killed rather than left running unheld.
pub(crate) async fn attach_to(
    c: Arc<Client>,
    box_id: String,
    exec_id: String,
    started_here: bool,
) -> PyResult<crate::exec::Execution> {
    match attach::attach(&c, &box_id, &exec_id).await {
        Ok(a) => {
            let ex = RestExec {
                exit: a.exit.clone(),
                killed: Default::default(),
                c,
                box_id,
                exec_id,
            };
            Ok(crate::exec::Execution::remote(ex, a, started_here))
        }
        Err(e) => {
            if started_here {
                let _ = api::kill(&c, &box_id, &exec_id).await;
            }
            Err(rest_to_py(e))
        }
    }
}

impl From<&boxlite_server::boxes::BoxJson> for BoxInfo {
    fn from(b: &boxlite_server::boxes::BoxJson) -> Self {
        use boxlite_server::boxes::BoxStatus as S;
        let status = match b.status {
            S::Configured => "configured",
            S::Running => "running",
            S::Stopping => "stopping",
            S::Stopped => "stopped",
            S::Paused => "paused",
            S::Failed => "failed",
            S::Unknown => "unknown",
        };
        BoxInfo {
            id: b.box_id.clone(),
            name: b.name.clone(),
            image: b.image.clone(),
            state: BoxStateInfo {
                status: status.into(),
                running: status == "running",
                pid: b.pid.and_then(|p| i32::try_from(p).ok()),
                exit_code: None,
            },
            cpus: u32::from(b.cpus),
            memory_mib: b.memory_mib,
            created_at: b.created_at.clone(),
            // The API reports only the last change of state.
            started_at: None,
            stopped_at: None,
            last_error: None,
            auto_remove: false,
        }
    }
}

impl From<&boxlite_server::metrics::BoxMetrics> for BoxMetrics {
    fn from(m: &boxlite_server::metrics::BoxMetrics) -> Self {
        let boot = m.boot_timing.as_ref();
        BoxMetrics {
            commands_executed_total: m.commands_executed_total,
            exec_errors_total: m.exec_errors_total,
            bytes_sent_total: m.bytes_sent_total,
            bytes_received_total: m.bytes_received_total,
            cpu_percent: m.cpu_percent,
            memory_bytes: m.memory_bytes,
            memory_total_bytes: m.memory_total_bytes,
            vmm_rss_bytes: m.vmm_rss_bytes,
            network_bytes_sent: m.network_bytes_sent,
            network_bytes_received: m.network_bytes_received,
            network_tcp_connections: m.network_tcp_connections,
            network_tcp_errors: m.network_tcp_errors,
            total_create_duration_ms: boot.and_then(|b| b.ready_ms),
            guest_boot_duration_ms: boot.and_then(|b| b.guest_boot_ms),
            stage_box_spawn_ms: boot.and_then(|b| b.box_spawn_ms),
            disk_overlay_bytes: m.disk_overlay_bytes,
            oom_kills: m.oom_kills,
        }
    }
}

impl From<&boxlite_server::metrics::RuntimeMetrics> for RuntimeMetrics {
    fn from(m: &boxlite_server::metrics::RuntimeMetrics) -> Self {
        RuntimeMetrics {
            boxes_created_total: m.boxes_created_total,
            boxes_failed_total: m.boxes_failed_total,
            num_running_boxes: m.num_running_boxes,
            total_commands_executed: m.total_commands_executed,
            total_exec_errors: m.total_exec_errors,
        }
    }
}
