//! `BoxOptions`, `Box` and `BoxInfo`.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3_async_runtimes::tokio::future_into_py;

use crate::errors::{InvalidArgumentError, to_py};
use crate::exec::Execution;
use crate::runtime::seconds;

/// What a box is made of. Everything but `image` has the library's default.
#[pyclass(module = "boxlite", get_all, set_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct BoxOptions {
    pub image: String,
    pub name: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u32>,
    /// Root disk size in GiB (default: the image's, with at least 1 GiB free).
    pub disk_size_gb: Option<u64>,
    /// The environment of every command in the box, over the image's.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// `name|uid[:group|gid]`, resolved in the image.
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// Remove the box as soon as it stops, however it stops.
    pub auto_remove: bool,
    /// Managed volumes as `"NAME:/guest/path[:ro]"` or `"/guest/path"` (anonymous);
    /// `(name, guest_path)` and `(name, guest_path, read_only)` tuples are taken too.
    /// Host directories are never mounted; copy files in and out instead.
    pub volumes: Vec<String>,
    /// `"enabled"` (the default) or `"disabled"` (no network device at all).
    pub network: Option<String>,
    /// Egress allow rules; one switches the box to allow-list mode.
    pub allow_net: Vec<String>,
    /// Egress deny rules; a deny beats any allow.
    pub deny_net: Vec<String>,
}

#[pymethods]
impl BoxOptions {
    #[new]
    #[pyo3(signature = (
        image="boxlite/busybox".to_string(), *, name=None, cpus=None, memory_mib=None,
        disk_size_gb=None, env=Vec::new(), working_dir=None, user=None, entrypoint=None,
        cmd=None, auto_remove=false, volumes=Vec::new(), network=None, allow_net=Vec::new(),
        deny_net=Vec::new()
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        image: String,
        name: Option<String>,
        cpus: Option<u32>,
        memory_mib: Option<u32>,
        disk_size_gb: Option<u64>,
        env: Vec<(String, String)>,
        working_dir: Option<String>,
        user: Option<String>,
        entrypoint: Option<Vec<String>>,
        cmd: Option<Vec<String>>,
        auto_remove: bool,
        volumes: Vec<Bound<'_, PyAny>>,
        network: Option<String>,
        allow_net: Vec<String>,
        deny_net: Vec<String>,
    ) -> PyResult<Self> {
        let volumes = volumes
            .iter()
            .map(volume_spec)
            .collect::<PyResult<Vec<_>>>()?;
        Ok(BoxOptions {
            image,
            name,
            cpus,
            memory_mib,
            disk_size_gb,
            env,
            working_dir,
            user,
            entrypoint,
            cmd,
            auto_remove,
            volumes,
            network,
            allow_net,
            deny_net,
        })
    }

    fn __repr__(&self) -> String {
        format!("BoxOptions(image={:?}, name={:?})", self.image, self.name)
    }
}

impl BoxOptions {
    /// The library's options; what cannot be honoured is refused, naming the field.
    pub(crate) fn to_library(&self) -> PyResult<boxlite::BoxOptions> {
        let mut o = boxlite::BoxOptions::new(&self.image).auto_remove(self.auto_remove);
        if let Some(n) = &self.name {
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
        for (k, v) in &self.env {
            o = o.env(k, v);
        }
        if let Some(d) = &self.working_dir {
            o = o.working_dir(d);
        }
        if let Some(u) = &self.user {
            o = o.user(u);
        }
        if let Some(e) = &self.entrypoint {
            o = o.entrypoint(e.clone());
        }
        if let Some(c) = &self.cmd {
            o = o.cmd(c.clone());
        }
        for v in &self.volumes {
            o = o.volume(boxlite::VolumeSpec::parse(v).map_err(|e| to_py(e.into()))?);
        }
        let mut net = match self.network.as_deref() {
            None | Some("enabled") => boxlite::model::NetworkSpec::default(),
            Some("disabled") => boxlite::model::NetworkSpec::none(),
            Some(other) => {
                return Err(InvalidArgumentError::new_err(format!(
                    "network {other:?} is not a network mode; valid values are \"enabled\" and \"disabled\""
                )));
            }
        };
        net.allow = self.allow_net.clone();
        net.deny = self.deny_net.clone();
        o.network = net;
        o.validate().map_err(|e| to_py(e.into()))?;
        Ok(o)
    }
}

/// One volume as a spec string, from a string or a tuple.
fn volume_spec(v: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = v.extract::<String>() {
        return Ok(s);
    }
    let parsed = v
        .extract::<(String, String, bool)>()
        .or_else(|_| v.extract::<(String, String)>().map(|(n, g)| (n, g, false)));
    match parsed {
        Ok((name, guest, ro)) => Ok(format!("{name}:{guest}{}", if ro { ":ro" } else { "" })),
        Err(_) => Err(InvalidArgumentError::new_err(format!(
            "volume {v} is not \"NAME:/guest/path[:ro]\" nor a (name, guest_path[, read_only]) tuple"
        ))),
    }
}

/// A box: a handle that stays valid across processes (boxes are durable).
#[pyclass(module = "boxlite", name = "Box")]
#[derive(Debug, Clone)]
pub struct PyBox {
    rt: boxlite::Boxlite,
    b: boxlite::LiteBox,
}

impl PyBox {
    pub(crate) fn new(rt: boxlite::Boxlite, b: boxlite::LiteBox) -> Self {
        PyBox { rt, b }
    }
}

#[pymethods]
impl PyBox {
    /// The box's id.
    #[getter]
    fn id(&self) -> String {
        self.b.id().to_string()
    }

    /// Boot the box (a no-op if it runs).
    fn start<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        future_into_py(py, async move { b.start().await.map_err(to_py) })
    }

    /// Stop the box: a clean shutdown, then the VM is killed after `timeout` seconds.
    #[pyo3(signature = (timeout=10.0))]
    fn stop<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        let t = seconds(timeout)?;
        future_into_py(py, async move { b.stop(t).await.map_err(to_py) })
    }

    /// Remove the box and its disks; `force` stops it first if it runs.
    #[pyo3(signature = (force=false))]
    fn remove<'py>(&self, py: Python<'py>, force: bool) -> PyResult<Bound<'py, PyAny>> {
        let (rt, b) = (self.rt.clone(), self.b.clone());
        future_into_py(py, async move { rt.remove(&b, force).await.map_err(to_py) })
    }

    /// What the box is now.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        future_into_py(py, async move {
            let i = b.info().await.map_err(to_py)?;
            Ok(BoxInfo::from(&i))
        })
    }

    /// Run a command in the box (starting the box if needed). `cmd` is the program, `args`
    /// its arguments; `env` adds to the box's environment; `timeout` (seconds) kills it,
    /// ending as exit code 124. stdin stays open until `stdin.close()` unless `stdin` is
    /// given (written, then closed).
    #[pyo3(signature = (cmd, args=None, env=None, working_dir=None, user=None, tty=false, timeout=None, stdin=None))]
    #[allow(clippy::too_many_arguments)]
    fn exec<'py>(
        &self,
        py: Python<'py>,
        cmd: String,
        args: Option<Vec<String>>,
        env: Option<Vec<(String, String)>>,
        working_dir: Option<String>,
        user: Option<String>,
        tty: bool,
        timeout: Option<f64>,
        stdin: Option<Vec<u8>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut c = boxlite::BoxCommand::new(cmd)
            .args(args.unwrap_or_default())
            .stdin(true);
        for (k, v) in env.unwrap_or_default() {
            c = c.env(k, v);
        }
        if let Some(d) = working_dir {
            c = c.working_dir(d);
        }
        if let Some(u) = user {
            c = c.user(u);
        }
        if tty {
            c = c.tty(24, 80);
        }
        if let Some(t) = timeout {
            c = c.timeout(seconds(t)?);
        }
        let b = self.b.clone();
        future_into_py(py, async move {
            let mut ex = b.exec(c).await.map_err(to_py)?;
            if let Some(data) = stdin
                && let Some(mut pipe) = ex.take_stdin()
            {
                pipe.write_all(&data)
                    .await
                    .map_err(crate::errors::exec_to_py)?;
                pipe.close().await.map_err(crate::errors::exec_to_py)?;
            }
            Ok(Execution::new(ex))
        })
    }

    /// Copy a host file or directory into the box, as `docker cp` does.
    #[pyo3(signature = (host_path, box_path, overwrite=true, follow_symlinks=false))]
    fn copy_in<'py>(
        &self,
        py: Python<'py>,
        host_path: PathBuf,
        box_path: String,
        overwrite: bool,
        follow_symlinks: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        let opts = boxlite::CopyOptions {
            overwrite,
            follow_symlinks,
            ..Default::default()
        };
        future_into_py(py, async move {
            b.copy_in(&host_path, &box_path, &opts)
                .await
                .map(drop)
                .map_err(to_py)
        })
    }

    /// Copy a path of the box to the host, as `docker cp` does; what comes out is
    /// treated as hostile (nothing lands outside `host_path`).
    #[pyo3(signature = (box_path, host_path, overwrite=true, follow_symlinks=false))]
    fn copy_out<'py>(
        &self,
        py: Python<'py>,
        box_path: String,
        host_path: PathBuf,
        overwrite: bool,
        follow_symlinks: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        let opts = boxlite::CopyOptions {
            overwrite,
            follow_symlinks,
            ..Default::default()
        };
        future_into_py(py, async move {
            b.copy_out(&box_path, &host_path, &opts)
                .await
                .map(drop)
                .map_err(to_py)
        })
    }

    fn __repr__(&self) -> String {
        format!("Box(id={:?})", self.b.id())
    }
}

/// What a box is: identity, state, resources and times (seconds since the epoch).
#[pyclass(module = "boxlite", get_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct BoxInfo {
    pub id: String,
    pub name: Option<String>,
    pub image: String,
    /// `configured`, `running`, `stopping`, `stopped` or `failed` (and `creating`,
    /// `starting` in passing).
    pub state: String,
    pub cpus: u32,
    pub memory_mib: u32,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub stopped_at: Option<u64>,
    /// Why the box last stopped or failed, if it did on its own.
    pub last_error: Option<String>,
    pub pid: Option<i32>,
}

impl From<&boxlite::BoxInfo> for BoxInfo {
    fn from(i: &boxlite::BoxInfo) -> Self {
        BoxInfo {
            id: i.id.clone(),
            name: i.name.clone(),
            image: i.image.clone(),
            state: i.state.to_string().to_lowercase(),
            cpus: i.config.cpus,
            memory_mib: i.config.memory_mib,
            created_at: i.created_at,
            started_at: i.started_at,
            stopped_at: i.stopped_at,
            last_error: i.last_error.clone(),
            pid: i.vmm_pid,
        }
    }
}

#[pymethods]
impl BoxInfo {
    fn __repr__(&self) -> String {
        format!(
            "BoxInfo(id={:?}, name={:?}, image={:?}, state={:?})",
            self.id, self.name, self.image, self.state
        )
    }
}
