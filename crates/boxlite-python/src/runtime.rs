//! `Options` and `Boxlite`: opening a home and the box collection's calls.

use std::path::PathBuf;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3_async_runtimes::tokio::future_into_py;

use crate::boxes::{BoxInfo, BoxOptions, PyBox};
use crate::errors::to_py;

/// How a runtime opens: its home directory (`$BOXLITE_HOME`, else `~/.boxlite`), and
/// where the guest assets are (`$BOXLITE_ASSETS`, else the ones the package carries).
#[pyclass(module = "boxlite", get_all, set_all, from_py_object)]
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub home_dir: Option<PathBuf>,
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

/// A boxlite runtime over one home: creates, finds and removes boxes. Opening one starts
/// nothing; boxes are durable and outlive it.
#[pyclass(module = "boxlite")]
#[derive(Debug, Clone)]
pub struct Boxlite {
    rt: boxlite::Boxlite,
}

#[pymethods]
impl Boxlite {
    #[new]
    #[pyo3(signature = (options=None))]
    fn new(options: Option<Options>) -> PyResult<Self> {
        let o = options.unwrap_or_default();
        let rt = boxlite::Boxlite::new(boxlite::RuntimeOptions {
            home: o.home_dir,
            assets: o.assets_dir,
            config: None,
            image_builder: None,
        })
        .map_err(to_py)?;
        Ok(Boxlite { rt })
    }

    /// The home directory.
    #[getter]
    fn home_dir(&self) -> PathBuf {
        self.rt.home().to_path_buf()
    }

    /// Create a box (pulling its image if needed); it is not started.
    fn create<'py>(&self, py: Python<'py>, options: BoxOptions) -> PyResult<Bound<'py, PyAny>> {
        let rt = self.rt.clone();
        let opts = options.to_library()?;
        future_into_py(py, async move {
            let b = rt.create(opts).await.map_err(to_py)?;
            Ok(PyBox::new(rt, b))
        })
    }

    /// The box with this id, unique id prefix or name.
    fn get<'py>(&self, py: Python<'py>, id_or_name: String) -> PyResult<Bound<'py, PyAny>> {
        let rt = self.rt.clone();
        future_into_py(py, async move {
            let b = rt.get(&id_or_name).await.map_err(to_py)?;
            Ok(PyBox::new(rt, b))
        })
    }

    /// The box named `name`, created with `options` if there is none (atomically, across
    /// processes).
    fn get_or_create<'py>(
        &self,
        py: Python<'py>,
        name: String,
        options: BoxOptions,
    ) -> PyResult<Bound<'py, PyAny>> {
        let rt = self.rt.clone();
        let opts = options.to_library()?;
        future_into_py(py, async move {
            let (b, _created) = rt.get_or_create(&name, opts).await.map_err(to_py)?;
            Ok(PyBox::new(rt, b))
        })
    }

    /// Every box, newest first.
    fn list_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rt = self.rt.clone();
        future_into_py(py, async move {
            let list = rt.list().await.map_err(to_py)?;
            Ok(list.iter().map(BoxInfo::from).collect::<Vec<_>>())
        })
    }

    /// Remove a box (by id or name) with its disks; `force` stops a running one first.
    #[pyo3(signature = (id_or_name, force=false))]
    fn remove<'py>(
        &self,
        py: Python<'py>,
        id_or_name: String,
        force: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let rt = self.rt.clone();
        future_into_py(py, async move {
            let b = rt.get(&id_or_name).await.map_err(to_py)?;
            rt.remove(&b, force).await.map_err(to_py)
        })
    }

    /// Stop the boxes this runtime started (waiting up to `timeout` seconds for each),
    /// then refuse new work.
    #[pyo3(signature = (timeout=10.0))]
    fn shutdown<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let rt = self.rt.clone();
        let t = seconds(timeout)?;
        future_into_py(py, async move { rt.shutdown(t).await.map_err(to_py) })
    }

    fn __repr__(&self) -> String {
        format!("Boxlite(home_dir={:?})", self.rt.home())
    }
}

/// A duration in seconds from Python, refusing what is not one.
pub(crate) fn seconds(s: f64) -> PyResult<Duration> {
    if s.is_finite() && s >= 0.0 {
        Ok(Duration::from_secs_f64(s.min(86_400.0 * 365.0)))
    } else {
        Err(crate::errors::InvalidArgumentError::new_err(format!(
            "{s} is not a number of seconds (0 or more)"
        )))
    }
}
