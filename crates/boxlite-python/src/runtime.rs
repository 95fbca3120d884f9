//! `Options`, `Boxlite` and `RuntimeMetrics`: opening a home, and the box collection.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3_async_runtimes::tokio::future_into_py;

use std::sync::Arc;

use boxlite_client::{RemoteError, api};

use crate::boxes::{BoxInfo, PyBox, Target};
use crate::errors::{invalid, rest_to_py, to_py};
use crate::options::BoxOptions;
use crate::rest::BoxliteRestOptions;

/// How a runtime opens: `home_dir` (default `$BOXLITE_HOME`, else `~/.boxlite`) and
/// `assets_dir`, the guest assets (default `$BOXLITE_ASSETS`, else the ones this package
/// carries, else the CLI's places).
#[pyclass(module = "boxlite", get_all, set_all, from_py_object)]
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The home directory.
    pub home_dir: Option<PathBuf>,
    /// The guest assets directory.
    pub assets_dir: Option<PathBuf>,
}

#[pymethods]
impl Options {
    #[new]
    #[pyo3(signature = (home_dir=None, assets_dir=None))]
    fn new(home_dir: Option<PathBuf>, assets_dir: Option<PathBuf>) -> Self {
        Options {
            home_dir,
            assets_dir,
        }
    }

    fn __repr__(&self) -> String {
        format!("Options(home_dir={:?})", self.home_dir)
    }
}

/// The assets this package carries, when the environment names none.
fn packaged_assets(py: Python<'_>) -> Option<PathBuf> {
    if std::env::var_os("BOXLITE_ASSETS").is_some() {
        return None;
    }
    let found = py
        .import("boxlite")
        .and_then(|m| m.getattr("_packaged_assets"))
        .and_then(|f| f.call0())
        .and_then(|p| p.extract::<Option<PathBuf>>());
    found.ok().flatten()
}

/// A runtime over one home, or over a `boxlite serve` (`Boxlite.rest(...)`): creates,
/// finds and removes boxes. Opening one starts nothing; boxes are durable and outlive it.
#[pyclass(module = "boxlite")]
#[derive(Debug, Clone)]
pub struct Boxlite {
    be: Backend,
}

/// Where the boxes are.
#[derive(Debug, Clone)]
enum Backend {
    Local(boxlite::Boxlite),
    Rest(Arc<boxlite_client::Client>),
}

/// Whether a REST error says the box is not there.
fn not_found(e: &RemoteError) -> bool {
    matches!(
        e,
        RemoteError::Api { status: 404, .. } | RemoteError::Status { status: 404, .. }
    )
}

/// The options as a REST request: what the API cannot carry is refused, naming the
/// option. A secret's value goes to the server (read here for `env` and `file`): the
/// server never reads this process's environment or files.
fn create_request(o: &boxlite::BoxOptions) -> PyResult<boxlite_server::boxes::CreateBox> {
    use boxlite_server::boxes::NotCarried as N;
    let mut o = o.clone();
    for s in &mut o.secrets {
        *s = boxlite::net::secrets::literal(s)
            .map_err(|e| to_py(boxlite::BoxError::Secret(e).into()))?;
    }
    boxlite_server::boxes::CreateBox::from_options(&o).map_err(|e| {
        let option = match e {
            N::Health => "health checks",
            N::Ports => "ports",
            N::Hosts => "network hosts",
            N::DiskSize => "disk_size_gb",
            N::Volume => "volumes",
            N::SecretSource => "secrets",
            N::Capabilities => "capabilities",
        };
        crate::errors::error(
            "UnsupportedError",
            format!("{option} cannot be used with a REST runtime: {e}"),
        )
    })
}

static DEFAULT: OnceLock<boxlite::Boxlite> = OnceLock::new();

impl Boxlite {
    fn open(py: Python<'_>, o: Options) -> PyResult<boxlite::Boxlite> {
        let assets = o.assets_dir.or_else(|| packaged_assets(py));
        boxlite::Boxlite::new(boxlite::RuntimeOptions {
            home: o.home_dir,
            assets,
            config: None,
            image_builder: None,
            auto_pause: None,
        })
        .map_err(to_py)
    }
}

#[pymethods]
impl Boxlite {
    #[new]
    #[pyo3(signature = (options=None))]
    fn new(py: Python<'_>, options: Option<Options>) -> PyResult<Self> {
        Ok(Boxlite {
            be: Backend::Local(Self::open(py, options.unwrap_or_default())?),
        })
    }

    /// A runtime whose boxes live on a `boxlite serve` (`boxlite serve --port 8100`),
    /// with the same API. Nothing is sent until the first call; a host path never goes
    /// to the server (copies stream their bytes).
    #[staticmethod]
    fn rest(options: BoxliteRestOptions) -> PyResult<Self> {
        Ok(Boxlite {
            be: Backend::Rest(crate::rest::client(&options)?),
        })
    }

    /// The process's shared runtime over `$BOXLITE_HOME` (else `~/.boxlite`).
    #[staticmethod]
    fn default(py: Python<'_>) -> PyResult<Self> {
        if let Some(rt) = DEFAULT.get() {
            return Ok(Boxlite {
                be: Backend::Local(rt.clone()),
            });
        }
        let rt = Self::open(py, Options::default())?;
        Ok(Boxlite {
            be: Backend::Local(DEFAULT.get_or_init(|| rt).clone()),
        })
    }

    /// Configure the shared runtime before its first use.
    #[staticmethod]
    fn init_default(py: Python<'_>, options: Options) -> PyResult<()> {
        let rt = Self::open(py, options)?;
        DEFAULT
            .set(rt)
            .map_err(|_| invalid("the default runtime is already in use"))
    }

    /// The home directory (None for a REST runtime).
    #[getter]
    fn home_dir(&self) -> Option<PathBuf> {
        match &self.be {
            Backend::Local(rt) => Some(rt.home().to_path_buf()),
            Backend::Rest(_) => None,
        }
    }

    /// Create a box (pulling its image if needed); it is not started.
    #[pyo3(signature = (options, name=None))]
    fn create<'py>(
        &self,
        py: Python<'py>,
        options: PyRef<'py, BoxOptions>,
        name: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let opts = options.to_library(name.as_deref())?;
        let name = opts.name.clone();
        match self.be.clone() {
            Backend::Local(rt) => future_into_py(py, async move {
                let b = rt.create(opts).await.map_err(to_py)?;
                Ok(PyBox::new(Target::Local(b), name))
            }),
            Backend::Rest(c) => {
                let body = create_request(&opts)?;
                future_into_py(py, async move {
                    let id = api::create_box(&c, &body).await.map_err(rest_to_py)?;
                    Ok(PyBox::new(Target::Rest { c, id }, name))
                })
            }
        }
    }

    /// The box with this id, unique id prefix or name, or None.
    fn get<'py>(&self, py: Python<'py>, id_or_name: String) -> PyResult<Bound<'py, PyAny>> {
        match self.be.clone() {
            Backend::Local(rt) => future_into_py(py, async move {
                match rt.get(&id_or_name).await {
                    Ok(b) => {
                        let name = b.info().await.map_err(to_py)?.name;
                        Ok(Some(PyBox::new(Target::Local(b), name)))
                    }
                    Err(e) if e.kind() == boxlite::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(to_py(e)),
                }
            }),
            Backend::Rest(c) => future_into_py(py, async move {
                match api::get_box(&c, &id_or_name).await {
                    Ok(b) => Ok(Some(PyBox::remote(c.clone(), &b.box_id, b.name))),
                    Err(e) if not_found(&e) => Ok(None),
                    Err(e) => Err(rest_to_py(e)),
                }
            }),
        }
    }

    /// What the box with this id or name is, or None.
    fn get_info<'py>(&self, py: Python<'py>, id_or_name: String) -> PyResult<Bound<'py, PyAny>> {
        match self.be.clone() {
            Backend::Local(rt) => future_into_py(py, async move {
                match rt.get(&id_or_name).await {
                    Ok(b) => Ok(Some(BoxInfo::from(&b.info().await.map_err(to_py)?))),
                    Err(e) if e.kind() == boxlite::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(to_py(e)),
                }
            }),
            Backend::Rest(c) => future_into_py(py, async move {
                match api::get_box(&c, &id_or_name).await {
                    Ok(b) => Ok(Some(BoxInfo::from(&b))),
                    Err(e) if not_found(&e) => Ok(None),
                    Err(e) => Err(rest_to_py(e)),
                }
            }),
        }
    }

    /// `(box, created)`: the box named `name` (or `options`' name), created with
    /// `options` if there is none, atomically across processes.
    #[pyo3(signature = (options, name=None))]
    fn get_or_create<'py>(
        &self,
        py: Python<'py>,
        options: PyRef<'py, BoxOptions>,
        name: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Some(name) = name else {
            return Err(invalid("get_or_create needs a name"));
        };
        let opts = options.to_library(Some(&name))?;
        match self.be.clone() {
            Backend::Local(rt) => future_into_py(py, async move {
                let (b, created) = rt.get_or_create(&name, opts).await.map_err(to_py)?;
                Ok((PyBox::new(Target::Local(b), Some(name)), created))
            }),
            Backend::Rest(c) => {
                let body = create_request(&opts)?;
                future_into_py(py, async move {
                    // The server's names are unique: a create that loses a race to
                    // another client is a 409, and the winner's box is then found.
                    match api::get_box(&c, &name).await {
                        Ok(b) => return Ok((PyBox::remote(c, &b.box_id, Some(name)), false)),
                        Err(e) if not_found(&e) => {}
                        Err(e) => return Err(rest_to_py(e)),
                    }
                    match api::create_box(&c, &body).await {
                        Ok(id) => Ok((PyBox::new(Target::Rest { c, id }, Some(name)), true)),
                        Err(RemoteError::Api { status: 409, .. }) => {
                            let b = api::get_box(&c, &name).await.map_err(rest_to_py)?;
                            Ok((PyBox::remote(c, &b.box_id, Some(name)), false))
                        }
                        Err(e) => Err(rest_to_py(e)),
                    }
                })
            }
        }
    }

    /// Every box.
    #[pyo3(signature = (_state=None))]
    fn list_info<'py>(
        &self,
        py: Python<'py>,
        _state: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.be.clone() {
            Backend::Local(rt) => future_into_py(py, async move {
                let list = rt.list().await.map_err(to_py)?;
                Ok(list.iter().map(BoxInfo::from).collect::<Vec<_>>())
            }),
            Backend::Rest(c) => future_into_py(py, async move {
                let list = api::list_boxes(&c).await.map_err(rest_to_py)?;
                Ok(list
                    .iter()
                    .map(|(_, b)| BoxInfo::from(b))
                    .collect::<Vec<_>>())
            }),
        }
    }

    /// Remove a box (by id or name) with its disks; `force` stops a running one first.
    #[pyo3(signature = (id_or_name, force=false))]
    fn remove<'py>(
        &self,
        py: Python<'py>,
        id_or_name: String,
        force: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.be.clone() {
            Backend::Local(rt) => future_into_py(py, async move {
                let b = rt.get(&id_or_name).await.map_err(to_py)?;
                rt.remove(&b, force).await.map_err(to_py)
            }),
            Backend::Rest(c) => future_into_py(py, async move {
                api::remove(&c, &id_or_name, force)
                    .await
                    .map_err(rest_to_py)
            }),
        }
    }

    /// Counts of the boxes there are now.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rt = match self.be.clone() {
            Backend::Local(rt) => rt,
            Backend::Rest(c) => {
                return future_into_py(py, async move {
                    let m = api::runtime_metrics(&c).await.map_err(rest_to_py)?;
                    Ok(RuntimeMetrics::from(&m))
                });
            }
        };
        future_into_py(py, async move {
            let list = rt.list().await.map_err(to_py)?;
            let with = |s: boxlite::BoxState| list.iter().filter(|b| b.state == s).count() as u64;
            Ok(RuntimeMetrics {
                boxes_created_total: list.len() as u64,
                boxes_failed_total: with(boxlite::BoxState::Failed),
                num_running_boxes: with(boxlite::BoxState::Running),
                total_commands_executed: None,
                total_exec_errors: None,
            })
        })
    }

    /// Stop the boxes this runtime started (up to `timeout` seconds each, default 10;
    /// -1 waits as long as it takes), then refuse new work.
    #[pyo3(signature = (timeout=None))]
    fn shutdown<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let t = match timeout {
            None => Duration::from_secs(10),
            Some(t) if t < 0.0 => Duration::from_secs(86_400 * 365),
            Some(t) => seconds(t)?,
        };
        match self.be.clone() {
            Backend::Local(rt) => {
                future_into_py(py, async move { rt.shutdown(t).await.map_err(to_py) })
            }
            // The server's boxes belong to the server: nothing here to stop.
            Backend::Rest(_) => future_into_py(py, async move {
                let _ = t;
                Ok(())
            }),
        }
    }

    /// Nothing to release: boxes are durable. (For `with Boxlite(...) as rt:`.)
    fn close(&self) {}

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        false
    }

    fn __repr__(&self) -> String {
        match &self.be {
            Backend::Local(rt) => format!("Boxlite(home_dir={:?})", rt.home()),
            Backend::Rest(c) => format!("Boxlite(url={:?})", c.ep.shown()),
        }
    }
}

/// Counts over the boxes that exist now (the library keeps no totals across removed
/// boxes); figures it does not count are None.
#[pyclass(module = "boxlite", get_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct RuntimeMetrics {
    /// Boxes that exist.
    pub boxes_created_total: u64,
    /// Boxes that failed.
    pub boxes_failed_total: u64,
    /// Boxes running.
    pub num_running_boxes: u64,
    /// Not counted: None.
    pub total_commands_executed: Option<u64>,
    /// Not counted: None.
    pub total_exec_errors: Option<u64>,
}

/// A duration in seconds from Python, refusing what is not one.
pub(crate) fn seconds(s: f64) -> PyResult<Duration> {
    if s.is_finite() && s >= 0.0 {
        Ok(Duration::from_secs_f64(s.min(86_400.0 * 365.0)))
    } else {
        Err(invalid(format!(
            "{s} is not a number of seconds (0 or more)"
        )))
    }
}
