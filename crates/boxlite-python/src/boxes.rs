//! `Box`, `BoxInfo`, `BoxStateInfo` and `BoxMetrics`, shaped like BoxLite's.

use pyo3::prelude::*;
use pyo3_async_runtimes::tokio::future_into_py;

use std::sync::Arc;

use boxlite_client::api;

use crate::errors::{copy_to_py, rest_to_py, to_py};
use crate::exec::Execution;
use crate::options::CopyOptions;
use crate::runtime::seconds;

/// A box. It stays valid across processes (boxes are durable); `async with box:` starts
/// it and stops it at the end (a box with `auto_remove`, the default, is then removed).
#[pyclass(module = "boxlite", name = "Box")]
#[derive(Debug, Clone)]
pub struct PyBox {
    b: Target,
    name: Option<String>,
}

/// The box itself: in the library, or on a server (by its id there).
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Local(boxlite::LiteBox),
    Rest {
        c: Arc<boxlite_client::Client>,
        id: String,
    },
}

impl Target {
    async fn start(&self) -> PyResult<()> {
        match self {
            Target::Local(b) => b.start().await.map_err(to_py),
            Target::Rest { c, id } => api::start(c, id).await.map_err(rest_to_py),
        }
    }

    async fn stop(&self, t: std::time::Duration) -> PyResult<()> {
        match self {
            Target::Local(b) => b.stop(t).await.map_err(to_py),
            Target::Rest { c, id } => {
                // Whole seconds on the wire; a fraction rounds up.
                let secs = t.as_secs() + u64::from(t.subsec_nanos() > 0);
                api::stop(c, id, secs).await.map_err(rest_to_py)
            }
        }
    }
}

impl PyBox {
    pub(crate) fn new(b: Target, name: Option<String>) -> Self {
        PyBox { b, name }
    }

    pub(crate) fn target(&self) -> &Target {
        &self.b
    }

    /// A box on a server, by the id the server gave (cleaned of control characters).
    pub(crate) fn remote(
        c: Arc<boxlite_client::Client>,
        box_id: &str,
        name: Option<String>,
    ) -> Self {
        let id = boxlite_client::clean(box_id);
        PyBox::new(Target::Rest { c, id }, name)
    }
}

/// `env` as a list of pairs or a dict.
fn env_pairs(env: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, String)>> {
    let Some(env) = env.filter(|e| !e.is_none()) else {
        return Ok(Vec::new());
    };
    if let Ok(d) = env.cast::<pyo3::types::PyDict>() {
        return d
            .iter()
            .map(|(k, v)| Ok((k.extract()?, v.extract()?)))
            .collect();
    }
    env.extract()
}

#[pymethods]
impl PyBox {
    /// The box's id.
    #[getter]
    fn id(&self) -> String {
        match &self.b {
            Target::Local(b) => b.id().to_string(),
            Target::Rest { id, .. } => id.clone(),
        }
    }

    /// The box's name, if it has one.
    #[getter]
    fn name(&self) -> Option<String> {
        self.name.clone()
    }

    /// The box's snapshots (`box.snapshot.create(name="x")`, `list()`, `get()`,
    /// `remove()`, `restore()`).
    #[getter]
    fn snapshot(&self) -> crate::snapshots::SnapshotHandle {
        self.snapshot_handle()
    }

    /// Save the box's memory and end its VM; `resume()`, `start()` or `exec()` goes on.
    fn pause<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.pause_or_resume(py, true)
    }

    /// Continue a paused box where it was.
    fn resume<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.pause_or_resume(py, false)
    }

    /// A new box from this one's present state (or from its snapshot `snapshot`): it
    /// runs where this box was when there is memory to start from (a running or paused
    /// box, a memory snapshot), and is created stopped otherwise.
    #[pyo3(signature = (*, options=None, name=None, snapshot=None))]
    fn clone_box<'py>(
        &self,
        py: Python<'py>,
        options: Option<Bound<'py, PyAny>>,
        name: Option<String>,
        snapshot: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // BoxLite's CloneOptions has no fields yet: accepted and ignored.
        drop(options);
        self.clone_of(py, name, snapshot)
    }

    /// Boot the box (a no-op if it runs).
    fn start<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        future_into_py(py, async move { b.start().await })
    }

    /// Stop the box: a clean shutdown, the VM killed after `timeout` seconds (default
    /// 10). A box with `auto_remove` is removed as it stops.
    #[pyo3(signature = (timeout=None))]
    fn stop<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        let t = seconds(timeout.unwrap_or(10.0))?;
        future_into_py(py, async move { b.stop(t).await })
    }

    /// What the box is now.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        future_into_py(py, async move {
            match b {
                Target::Local(b) => Ok(BoxInfo::from(&b.info().await.map_err(to_py)?)),
                Target::Rest { c, id } => Ok(BoxInfo::from(
                    &api::get_box(&c, &id).await.map_err(rest_to_py)?,
                )),
            }
        })
    }

    /// What the box uses and has done.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        future_into_py(py, async move {
            match b {
                Target::Local(b) => Ok(BoxMetrics::from(&b.metrics().await.map_err(to_py)?)),
                Target::Rest { c, id } => Ok(BoxMetrics::from(
                    &api::box_metrics(&c, &id).await.map_err(rest_to_py)?,
                )),
            }
        })
    }

    /// Run `command` with `args` in the box, starting the box if needed. `env` (pairs or
    /// a dict) adds to the box's environment; `timeout_secs` kills the command's process
    /// group, which then ends with exit code 124; `cwd` and `user` as `docker exec`.
    /// stdin stays open until `stdin().close()`, unless `stdin` is given (written, then
    /// closed).
    #[pyo3(signature = (command, args=None, env=None, tty=false, user=None, timeout_secs=None, cwd=None, *, stdin=None))]
    #[allow(clippy::too_many_arguments)]
    fn exec<'py>(
        &self,
        py: Python<'py>,
        command: String,
        args: Option<Vec<String>>,
        env: Option<Bound<'py, PyAny>>,
        tty: bool,
        user: Option<String>,
        timeout_secs: Option<f64>,
        cwd: Option<String>,
        stdin: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let env = env_pairs(env.as_ref())?;
        let user = user.filter(|u| !u.is_empty());
        let timeout = timeout_secs.map(seconds).transpose()?;
        let input = stdin
            .filter(|s| !s.is_none())
            .map(|s| crate::exec::input_bytes(&s))
            .transpose()?;
        let start = match self.b.clone() {
            Target::Local(b) => {
                let mut c = boxlite::BoxCommand::new(command)
                    .args(args.unwrap_or_default())
                    .stdin(true);
                for (k, v) in env {
                    c = c.env(k, v);
                }
                if let Some(d) = cwd {
                    c = c.working_dir(d);
                }
                if let Some(u) = user {
                    c = c.user(u);
                }
                if tty {
                    c = c.tty(24, 80);
                }
                if let Some(t) = timeout {
                    c = c.timeout(t);
                }
                Start::Local(b, c)
            }
            Target::Rest { c, id } => Start::Rest(
                c,
                id,
                boxlite_server::exec::ExecRequest {
                    command,
                    default_command: false,
                    args: args.unwrap_or_default(),
                    env: env.into_iter().collect(),
                    timeout_seconds: timeout.map(|t| t.as_secs_f64()),
                    working_dir: cwd,
                    tty,
                    user,
                    // Stdin stays open for the attached stream.
                    stdin: None,
                },
            ),
        };
        // The start runs as a task of its own, so a Python cancellation cannot cut it in
        // half; if the caller is gone by the time it has started, the command is killed
        // rather than left running with nobody holding it.
        let started = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            let ex = match start {
                Start::Local(b, c) => Execution::new(b.exec(c).await.map_err(to_py)?),
                Start::Rest(c, id, body) => crate::rest::exec(c, id, body).await?,
            };
            if let Some(data) = input
                && let Err(e) = ex.feed(&data).await
            {
                let _ = ex.kill_now().await;
                return Err(e);
            }
            Ok::<_, PyErr>(ex)
        });
        future_into_py(py, async move {
            let mut guard = KillIfAbandoned(Some(started));
            let joined = match guard.0.as_mut() {
                Some(task) => task.await,
                None => return Err(crate::errors::error("InternalError", "no exec task".into())),
            };
            guard.0 = None;
            joined.map_err(|e| crate::errors::error("InternalError", e.to_string()))?
        })
    }

    /// Attach to an execution started earlier (by this process or another) by its id:
    /// its remaining output and its exit. Its stdin stays with the handle that started
    /// it (`stdin` is accepted for BoxLite's signature; an attached execution has none).
    /// The box must be running. Without an id (BoxLite's main-session attach) it is
    /// refused: a box here runs nothing until asked, and every command is an execution.
    #[pyo3(signature = (execution_id=None, stdin=true))]
    fn attach<'py>(
        &self,
        py: Python<'py>,
        execution_id: Option<String>,
        stdin: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = stdin;
        let Some(id) = execution_id else {
            return Err(crate::errors::error(
                "UnsupportedError",
                "a box has no main session here; attach to an execution by its id".into(),
            ));
        };
        match self.b.clone() {
            Target::Local(b) => future_into_py(py, async move {
                let ex = b.attach(&id).await.map_err(to_py)?;
                Ok(Execution::new(ex))
            }),
            Target::Rest { c, id: box_id } => {
                future_into_py(py, crate::rest::attach_to(c, box_id, id, false))
            }
        }
    }

    /// Copy a host file or directory into the box, as `docker cp` does (starting the box
    /// if needed).
    #[pyo3(signature = (host_path, container_dest, copy_options=None))]
    fn copy_in<'py>(
        &self,
        py: Python<'py>,
        host_path: std::path::PathBuf,
        container_dest: String,
        copy_options: Option<CopyOptions>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        let opts = CopyOptions::to_library(copy_options.as_ref());
        future_into_py(py, async move {
            match b {
                Target::Local(b) => b
                    .copy_in(&host_path, &container_dest, &opts)
                    .await
                    .map(drop)
                    .map_err(to_py),
                Target::Rest { c, id } => api::copy_in(&c, &host_path, &id, &container_dest, &opts)
                    .await
                    .map_err(copy_to_py),
            }
        })
    }

    /// Copy a path of the box to the host, as `docker cp` does. What comes out is
    /// treated as hostile: nothing lands outside `host_dest`, and a refused copy leaves
    /// nothing behind.
    #[pyo3(signature = (container_src, host_dest, copy_options=None))]
    fn copy_out<'py>(
        &self,
        py: Python<'py>,
        container_src: String,
        host_dest: std::path::PathBuf,
        copy_options: Option<CopyOptions>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        let opts = CopyOptions::to_library(copy_options.as_ref());
        future_into_py(py, async move {
            match b {
                Target::Local(b) => b
                    .copy_out(&container_src, &host_dest, &opts)
                    .await
                    .map(drop)
                    .map_err(to_py),
                Target::Rest { c, id } => api::copy_out(&c, &id, &container_src, &host_dest, &opts)
                    .await
                    .map_err(copy_to_py),
            }
        })
    }

    fn __aenter__<'py>(slf: PyRef<'py, Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let b = slf.b.clone();
        let me: Py<PyBox> = slf.into();
        future_into_py(py, async move {
            b.start().await?;
            Ok(me)
        })
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc: &Bound<'py, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        future_into_py(py, async move {
            b.stop(std::time::Duration::from_secs(10)).await?;
            Ok(false)
        })
    }

    /// For `bench/python.sh`: the library's own exec round trip (`true`, exec to exit)
    /// `n` times on this box, in milliseconds, with no Python in the loop.
    fn _library_exec_round_trips<'py>(
        &self,
        py: Python<'py>,
        n: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Target::Local(b) = self.b.clone() else {
            return Err(crate::errors::error(
                "UnsupportedError",
                "the library's round trip is measured on a local box".into(),
            ));
        };
        future_into_py(py, async move {
            let mut ms = Vec::with_capacity(n);
            for _ in 0..n {
                let t = std::time::Instant::now();
                b.exec(boxlite::BoxCommand::new("true"))
                    .await
                    .map_err(to_py)?
                    .wait()
                    .await
                    .map_err(crate::errors::exec_to_py)?;
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(ms)
        })
    }

    fn __repr__(&self) -> String {
        format!("Box(id={:?})", self.id())
    }
}

/// What an exec starts: a library command, or a request to a server.
enum Start {
    Local(boxlite::LiteBox, boxlite::BoxCommand),
    Rest(
        Arc<boxlite_client::Client>,
        String,
        boxlite_server::exec::ExecRequest,
    ),
}

/// While armed, dropping it (the Python caller cancelled) kills the execution the task
/// starts, once it has started.
struct KillIfAbandoned(Option<tokio::task::JoinHandle<PyResult<Execution>>>);

impl Drop for KillIfAbandoned {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
                if let Ok(Ok(ex)) = task.await {
                    let _ = ex.kill_now().await;
                }
            });
        }
    }
}

/// A box's state: `status` is `configured`, `running`, `stopping`, `stopped` or `failed`.
#[pyclass(module = "boxlite", get_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct BoxStateInfo {
    /// `configured`, `running`, `stopping`, `stopped` or `failed`.
    pub status: String,
    /// Whether it runs.
    pub running: bool,
    /// The VMM's process id while it runs.
    pub pid: Option<i32>,
    /// Always None: a box here has no main command of its own.
    pub exit_code: Option<i32>,
}

#[pymethods]
impl BoxStateInfo {
    fn __repr__(&self) -> String {
        format!("BoxStateInfo(status={:?}, pid={:?})", self.status, self.pid)
    }
}

/// What a box is. Times are RFC 3339 (UTC).
#[pyclass(module = "boxlite", get_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct BoxInfo {
    /// The box's id.
    pub id: String,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// The image it was created from.
    pub image: String,
    /// Its state.
    pub state: BoxStateInfo,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// When it was created.
    pub created_at: String,
    /// When it last started.
    pub started_at: Option<String>,
    /// When it last stopped.
    pub stopped_at: Option<String>,
    /// Why the box last stopped or failed on its own, if it did.
    pub last_error: Option<String>,
    /// Whether it is removed once it stops.
    pub auto_remove: bool,
}

impl From<&boxlite::BoxInfo> for BoxInfo {
    fn from(i: &boxlite::BoxInfo) -> Self {
        let status = match i.state {
            boxlite::BoxState::Creating | boxlite::BoxState::Configured => "configured",
            boxlite::BoxState::Starting | boxlite::BoxState::Running => "running",
            boxlite::BoxState::Stopping => "stopping",
            boxlite::BoxState::Stopped => "stopped",
            boxlite::BoxState::Pausing | boxlite::BoxState::Paused => "paused",
            boxlite::BoxState::Failed => "failed",
        };
        BoxInfo {
            id: i.id.clone(),
            name: i.name.clone(),
            image: i.image.clone(),
            state: BoxStateInfo {
                status: status.into(),
                running: status == "running",
                pid: i.vmm_pid,
                exit_code: None,
            },
            cpus: i.config.cpus,
            memory_mib: i.config.memory_mib,
            created_at: boxlite::model::time::rfc3339(i.created_at),
            started_at: i.started_at.map(boxlite::model::time::rfc3339),
            stopped_at: i.stopped_at.map(boxlite::model::time::rfc3339),
            last_error: i.last_error.clone(),
            auto_remove: i.config.auto_remove,
        }
    }
}

#[pymethods]
impl BoxInfo {
    fn __repr__(&self) -> String {
        format!(
            "BoxInfo(id={:?}, name={:?}, image={:?}, status={:?})",
            self.id, self.name, self.image, self.state.status
        )
    }
}

/// What a box uses and has done; a figure the library does not measure is None.
#[pyclass(module = "boxlite", get_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct BoxMetrics {
    /// Commands started since the box's agent started.
    pub commands_executed_total: Option<u64>,
    /// Not counted: None.
    pub exec_errors_total: Option<u64>,
    /// Bytes the box sent over its network.
    pub bytes_sent_total: Option<u64>,
    /// Bytes the box received over its network.
    pub bytes_received_total: Option<u64>,
    /// Percent of one host CPU since the VMM started.
    pub cpu_percent: Option<f64>,
    /// Memory used in the guest.
    pub memory_bytes: Option<u64>,
    /// The guest's memory.
    pub memory_total_bytes: Option<u64>,
    /// The VMM's resident memory on the host.
    pub vmm_rss_bytes: Option<u64>,
    /// As `bytes_sent_total`.
    pub network_bytes_sent: Option<u64>,
    /// As `bytes_received_total`.
    pub network_bytes_received: Option<u64>,
    /// TCP connections the box opened.
    pub network_tcp_connections: Option<u64>,
    /// Not counted: None.
    pub network_tcp_errors: Option<u64>,
    /// From the start call until the box was usable.
    pub total_create_duration_ms: Option<u64>,
    /// Guest uptime when the agent was ready: kernel boot plus init.
    pub guest_boot_duration_ms: Option<u64>,
    /// From the start call until the VMM was spawned.
    pub stage_box_spawn_ms: Option<u64>,
    /// Bytes the box's disk overlay uses on the host.
    pub disk_overlay_bytes: u64,
    /// Processes the guest's out-of-memory killer ended.
    pub oom_kills: Option<u64>,
}

impl From<&boxlite::BoxMetrics> for BoxMetrics {
    /// The server's mapping, so a local box and one over REST report the same figures.
    fn from(m: &boxlite::BoxMetrics) -> Self {
        BoxMetrics::from(&boxlite_server::metrics::BoxMetrics::from(m))
    }
}
