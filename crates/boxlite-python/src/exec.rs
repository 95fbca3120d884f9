//! `Execution`: a command running in a box, its output streams, stdin and exit.

use std::sync::Arc;

use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3_async_runtimes::tokio::future_into_py;
use tokio::sync::Mutex;

use crate::errors::exec_to_py;

/// A command started in a box. Its output waits in the box until read; `wait` gives its
/// exit; `kill`, `signal` and `resize_tty` act on it.
#[pyclass(module = "boxlite")]
#[derive(Debug)]
pub struct Execution {
    handle: boxlite::Execution,
    stdout: Arc<Mutex<Option<boxlite::ExecOutput>>>,
    stderr: Arc<Mutex<Option<boxlite::ExecOutput>>>,
    stdin: Arc<Mutex<Option<boxlite::ExecStdin>>>,
}

impl Execution {
    pub(crate) fn new(mut ex: boxlite::Execution) -> Self {
        Execution {
            stdout: Arc::new(Mutex::new(ex.take_stdout())),
            stderr: Arc::new(Mutex::new(ex.take_stderr())),
            stdin: Arc::new(Mutex::new(ex.take_stdin())),
            handle: ex,
        }
    }
}

#[pymethods]
impl Execution {
    /// The execution's id (for attaching from another process).
    #[getter]
    fn id(&self) -> String {
        self.handle.id().to_string()
    }

    /// stdout as an async iterator of byte chunks, exactly as the command wrote them.
    fn stdout_bytes(&self) -> OutputStream {
        OutputStream {
            out: self.stdout.clone(),
        }
    }

    /// stderr as an async iterator of byte chunks.
    fn stderr_bytes(&self) -> OutputStream {
        OutputStream {
            out: self.stderr.clone(),
        }
    }

    /// The command's stdin.
    #[getter]
    fn stdin(&self) -> Stdin {
        Stdin {
            pipe: self.stdin.clone(),
        }
    }

    /// Wait for the command to end; the result is kept, so later calls answer at once.
    fn wait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        future_into_py(py, async move {
            let st = h.wait().await.map_err(exec_to_py)?;
            Ok(ExecResult::from(st))
        })
    }

    /// End the command and its process group for certain (SIGKILL).
    fn kill<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        future_into_py(py, async move { h.kill().await.map_err(exec_to_py) })
    }

    /// Send a signal to the command.
    fn signal<'py>(&self, py: Python<'py>, signal: i32) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        future_into_py(
            py,
            async move { h.signal(signal).await.map_err(exec_to_py) },
        )
    }

    /// Resize the command's terminal (it gets SIGWINCH); only for a `tty=True` exec.
    fn resize_tty<'py>(
        &self,
        py: Python<'py>,
        rows: u16,
        cols: u16,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        future_into_py(py, async move {
            h.resize_tty(rows, cols).await.map_err(exec_to_py)
        })
    }

    fn __repr__(&self) -> String {
        format!("Execution(id={:?})", self.handle.id())
    }
}

/// One output stream of an execution: `async for chunk in stream`.
#[pyclass(module = "boxlite")]
#[derive(Debug)]
pub struct OutputStream {
    out: Arc<Mutex<Option<boxlite::ExecOutput>>>,
}

#[pymethods]
impl OutputStream {
    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let out = self.out.clone();
        future_into_py(py, async move {
            let mut guard = out.lock().await;
            let Some(stream) = guard.as_mut() else {
                return Err(PyStopAsyncIteration::new_err(()));
            };
            match stream.next_chunk().await {
                Some(Ok(chunk)) => Ok(Python::attach(|py| PyBytes::new(py, &chunk).unbind())),
                Some(Err(e)) => Err(exec_to_py(e)),
                None => {
                    *guard = None;
                    Err(PyStopAsyncIteration::new_err(()))
                }
            }
        })
    }
}

/// An execution's stdin.
#[pyclass(module = "boxlite")]
#[derive(Debug)]
pub struct Stdin {
    pipe: Arc<Mutex<Option<boxlite::ExecStdin>>>,
}

#[pymethods]
impl Stdin {
    /// Write bytes (or text, as UTF-8) to the command.
    fn write<'py>(&self, py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let bytes: Vec<u8> = match data.extract::<String>() {
            Ok(s) => s.into_bytes(),
            Err(_) => data.extract::<Vec<u8>>()?,
        };
        let pipe = self.pipe.clone();
        future_into_py(py, async move {
            let mut guard = pipe.lock().await;
            let p = guard.as_mut().ok_or_else(closed)?;
            p.write_all(&bytes).await.map_err(exec_to_py)
        })
    }

    /// Close stdin: the command reads end of file.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let pipe = self.pipe.clone();
        future_into_py(py, async move {
            let mut guard = pipe.lock().await;
            if let Some(mut p) = guard.take() {
                p.close().await.map_err(exec_to_py)?;
            }
            Ok(())
        })
    }
}

fn closed() -> PyErr {
    crate::errors::InvalidStateError::new_err("stdin is closed")
}

/// How a command ended.
#[pyclass(module = "boxlite", get_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct ExecResult {
    /// The exit code, or 128+N for signal N, 124 for a timeout, 137 for the OOM killer.
    pub exit_code: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub oom_killed: bool,
}

impl From<boxlite::ExitStatus> for ExecResult {
    fn from(st: boxlite::ExitStatus) -> Self {
        ExecResult {
            exit_code: st.shell_code(),
            signal: match st {
                boxlite::ExitStatus::Signal { signal, .. } => Some(signal),
                _ => None,
            },
            timed_out: st == boxlite::ExitStatus::TimedOut,
            oom_killed: st == boxlite::ExitStatus::OutOfMemory,
        }
    }
}

#[pymethods]
impl ExecResult {
    fn __repr__(&self) -> String {
        format!("ExecResult(exit_code={})", self.exit_code)
    }
}
