//! `box.snapshot` (BoxLite's `SnapshotHandle`), `SnapshotInfo`, and the methods of `Box`
//! that pause, resume and clone it.

use pyo3::prelude::*;
use pyo3_async_runtimes::tokio::future_into_py;

use boxlite_client::api;

use crate::boxes::{PyBox, Target};
use crate::errors::{rest_to_py, to_py};

/// A snapshot of a box (BoxLite's fields, and whether it holds the box's memory).
#[pyclass(module = "boxlite", name = "SnapshotInfo", get_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    /// The snapshot's own id.
    pub id: String,
    /// The box it belongs to.
    pub box_id: String,
    /// Its name, unique per box.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Bytes of the disk copy on the host.
    pub container_disk_bytes: u64,
    /// Bytes of the whole snapshot on the host.
    pub size_bytes: u64,
    /// True: a restore or clone of it continues the box's processes.
    pub memory: bool,
}

#[pymethods]
impl SnapshotInfo {
    fn __repr__(&self) -> String {
        format!(
            "SnapshotInfo(name={:?}, box_id={:?}, created_at={}, memory={})",
            self.name,
            self.box_id,
            self.created_at,
            if self.memory { "True" } else { "False" }
        )
    }
}

impl From<boxlite::SnapshotInfo> for SnapshotInfo {
    fn from(s: boxlite::SnapshotInfo) -> Self {
        SnapshotInfo {
            id: s.id,
            box_id: s.box_id,
            name: s.name,
            created_at: s.created_at,
            container_disk_bytes: s.container_disk_bytes,
            size_bytes: s.size_bytes,
            memory: s.memory,
        }
    }
}

/// The snapshots of one box: `box.snapshot.create(name="x")`, `list()`, `get(name)`,
/// `remove(name)`, `restore(name)`.
#[pyclass(module = "boxlite", name = "SnapshotHandle")]
#[derive(Debug, Clone)]
pub struct SnapshotHandle {
    pub(crate) b: Target,
}

#[pymethods]
impl SnapshotHandle {
    /// Take a snapshot: memory and disk of a running box (which goes on), the saved
    /// state and disk of a paused one, the disk of a stopped one (or of any, with
    /// `disk_only`).
    #[pyo3(signature = (*, name, disk_only=false, options=None))]
    fn create<'py>(
        &self,
        py: Python<'py>,
        name: String,
        disk_only: bool,
        options: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // BoxLite's SnapshotOptions has no fields yet: accepted and ignored.
        drop(options);
        let b = self.b.clone();
        future_into_py(py, async move {
            match b {
                Target::Local(b) => Ok(SnapshotInfo::from(
                    b.snapshot_create(&name, &boxlite::SnapshotOptions { disk_only })
                        .await
                        .map_err(to_py)?,
                )),
                Target::Rest { c, id } => Ok(SnapshotInfo::from(
                    api::create_snapshot(&c, &id, &name, disk_only)
                        .await
                        .map_err(rest_to_py)?,
                )),
            }
        })
    }

    /// The box's snapshots, oldest first.
    fn list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        future_into_py(py, async move {
            let v: Vec<SnapshotInfo> = match b {
                Target::Local(b) => b
                    .snapshot_list()
                    .await
                    .map_err(to_py)?
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                Target::Rest { c, id } => api::list_snapshots(&c, &id)
                    .await
                    .map_err(rest_to_py)?
                    .into_iter()
                    .map(Into::into)
                    .collect(),
            };
            Ok(v)
        })
    }

    /// The snapshot named `name`.
    fn get<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        future_into_py(py, async move {
            match b {
                Target::Local(b) => Ok(SnapshotInfo::from(
                    b.snapshot_get(&name).await.map_err(to_py)?,
                )),
                Target::Rest { c, id } => Ok(SnapshotInfo::from(
                    api::get_snapshot(&c, &id, &name)
                        .await
                        .map_err(rest_to_py)?,
                )),
            }
        })
    }

    /// Remove the snapshot named `name` (its clones go on).
    fn remove<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        future_into_py(py, async move {
            match b {
                Target::Local(b) => b.snapshot_remove(&name).await.map_err(to_py),
                Target::Rest { c, id } => api::remove_snapshot(&c, &id, &name)
                    .await
                    .map_err(rest_to_py),
            }
        })
    }

    /// Put a stopped or paused box back to snapshot `name` (with memory, the box is then
    /// paused until started).
    fn restore<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let b = self.b.clone();
        future_into_py(py, async move {
            match b {
                Target::Local(b) => b.snapshot_restore(&name).await.map_err(to_py),
                Target::Rest { c, id } => api::restore_snapshot(&c, &id, &name)
                    .await
                    .map_err(rest_to_py),
            }
        })
    }

    fn __repr__(&self) -> String {
        "SnapshotHandle()".to_string()
    }
}

impl PyBox {
    pub(crate) fn snapshot_handle(&self) -> SnapshotHandle {
        SnapshotHandle {
            b: self.target().clone(),
        }
    }

    /// Pause (`verb` "pause") or resume the box.
    pub(crate) fn pause_or_resume<'py>(
        &self,
        py: Python<'py>,
        pause: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let b = self.target().clone();
        future_into_py(py, async move {
            match (b, pause) {
                (Target::Local(b), true) => b.pause().await.map_err(to_py),
                (Target::Local(b), false) => b.resume().await.map_err(to_py),
                (Target::Rest { c, id }, true) => api::pause(&c, &id).await.map_err(rest_to_py),
                (Target::Rest { c, id }, false) => api::resume(&c, &id).await.map_err(rest_to_py),
            }
        })
    }

    /// A new box from this one (or its snapshot).
    pub(crate) fn clone_of<'py>(
        &self,
        py: Python<'py>,
        name: Option<String>,
        snapshot: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let b = self.target().clone();
        future_into_py(py, async move {
            match b {
                Target::Local(b) => {
                    let c = b
                        .clone_box(boxlite::CloneOptions {
                            snapshot,
                            name: name.clone(),
                            ..Default::default()
                        })
                        .await
                        .map_err(to_py)?;
                    Ok(PyBox::new(Target::Local(c), name))
                }
                Target::Rest { c, id } => {
                    let new = api::clone_box(&c, &id, name.as_deref(), snapshot.as_deref())
                        .await
                        .map_err(rest_to_py)?;
                    Ok(PyBox::remote(c, &new, name))
                }
            }
        })
    }
}
