//! `Execution`: a command running in a box, its output streams, stdin and exit. Names
//! and shapes follow BoxLite's SDK: `stdout()`, `stderr()` and `stdin()` can each be
//! taken once; `wait()` gives an `ExecResult`.

use std::sync::Arc;

use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use pyo3_async_runtimes::tokio::future_into_py;
use tokio::sync::Mutex;

use crate::errors::{error, exec_to_py, rest_to_py};
use crate::rest::RestExec;

/// A command started in a box. Its output waits in the box until read.
#[pyclass(module = "boxlite")]
#[derive(Debug)]
pub struct Execution {
    handle: Handle,
    stdout: std::sync::Mutex<Option<Source>>,
    stderr: std::sync::Mutex<Option<Source>>,
    stdin: std::sync::Mutex<Option<Pipe>>,
}

/// The execution itself: in the library, or on a server.
// One per execution, never in a collection: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Handle {
    Local(boxlite::Execution),
    Rest(Arc<RestExec>),
}

/// Where an output stream's chunks come from.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Source {
    Local(boxlite::ExecOutput),
    Rest(boxlite_client::attach::Output),
}

impl Source {
    async fn next_chunk(&mut self) -> Option<PyResult<Vec<u8>>> {
        match self {
            Source::Local(o) => o.next_chunk().await.map(|r| r.map_err(exec_to_py)),
            Source::Rest(o) => o.next_chunk().await.map(Ok),
        }
    }
}

/// Where stdin goes.
#[derive(Debug)]
enum Pipe {
    Local(boxlite::ExecStdin),
    Rest(boxlite_client::attach::Input),
}

impl Pipe {
    async fn write_all(&mut self, data: &[u8]) -> PyResult<()> {
        match self {
            Pipe::Local(p) => p.write_all(data).await.map_err(exec_to_py),
            Pipe::Rest(p) => p.write_all(data).await.map_err(rest_to_py),
        }
    }

    async fn close(&mut self) -> PyResult<()> {
        match self {
            Pipe::Local(p) => p.close().await.map(drop).map_err(exec_to_py),
            Pipe::Rest(p) => p.close().await.map_err(rest_to_py),
        }
    }
}

impl Execution {
    pub(crate) fn new(mut ex: boxlite::Execution) -> Self {
        Execution {
            stdout: std::sync::Mutex::new(ex.take_stdout().map(Source::Local)),
            stderr: std::sync::Mutex::new(ex.take_stderr().map(Source::Local)),
            stdin: std::sync::Mutex::new(ex.take_stdin().map(Pipe::Local)),
            handle: Handle::Local(ex),
        }
    }

    /// An execution on a server, attached over its WebSocket.
    pub(crate) fn remote(ex: RestExec, a: boxlite_client::attach::Attached, stdin: bool) -> Self {
        Execution {
            stdout: std::sync::Mutex::new(Some(Source::Rest(a.stdout))),
            stderr: std::sync::Mutex::new(Some(Source::Rest(a.stderr))),
            stdin: std::sync::Mutex::new(stdin.then_some(Pipe::Rest(a.stdin))),
            handle: Handle::Rest(Arc::new(ex)),
        }
    }

    /// Write `data` to stdin and close it (the `stdin=` of `Box.exec`).
    pub(crate) async fn feed(&self, data: &[u8]) -> PyResult<()> {
        let pipe = self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut p) = pipe {
            p.write_all(data).await?;
            p.close().await?;
        }
        Ok(())
    }

    /// Kill it: SIGKILL to its process group (for an execution nobody holds).
    pub(crate) async fn kill_now(&self) -> PyResult<()> {
        kill(self.handle.clone()).await
    }

    fn id_str(&self) -> &str {
        match &self.handle {
            Handle::Local(h) => h.id(),
            Handle::Rest(r) => &r.exec_id,
        }
    }
}

/// Bytes for a command's stdin: `bytes`-like as they are, text as UTF-8.
pub(crate) fn input_bytes(data: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    match data.extract::<String>() {
        Ok(text) => Ok(text.into_bytes()),
        Err(_) => data.extract::<Vec<u8>>(),
    }
}

async fn kill(h: Handle) -> PyResult<()> {
    match h {
        Handle::Local(h) => h.kill().await.map_err(exec_to_py),
        Handle::Rest(r) => r.kill().await,
    }
}

fn take<T>(slot: &std::sync::Mutex<Option<T>>, what: &str) -> PyResult<T> {
    slot.lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or_else(|| {
            error(
                "InvalidStateError",
                format!("{what} stream not available (it can be taken once)"),
            )
        })
}

#[pymethods]
impl Execution {
    /// The execution's id; `execution.id` and `execution.id()` both give it.
    #[getter]
    fn id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("boxlite._types")?
            .getattr("ExecutionId")?
            .call1((self.id_str(),))
    }

    /// stdout as an async iterator: text lines (decoded as UTF-8, each with its newline)
    /// by default, or the raw byte chunks exactly as written with `text=False`. Once.
    #[pyo3(signature = (text=true))]
    fn stdout(&self, text: bool) -> PyResult<OutputStream> {
        Ok(OutputStream::new(take(&self.stdout, "stdout")?, text))
    }

    /// stderr, as `stdout`.
    #[pyo3(signature = (text=true))]
    fn stderr(&self, text: bool) -> PyResult<OutputStream> {
        Ok(OutputStream::new(take(&self.stderr, "stderr")?, text))
    }

    /// The command's stdin (`send_input`, `close`). Once.
    fn stdin(&self) -> PyResult<ExecStdin> {
        Ok(ExecStdin {
            pipe: Arc::new(Mutex::new(Some(take(&self.stdin, "stdin")?))),
        })
    }

    /// Wait for the command to end; the result is kept, so later calls answer at once.
    fn wait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        future_into_py(py, async move {
            match h {
                Handle::Local(h) => Ok(ExecResult::from(h.wait().await.map_err(exec_to_py)?)),
                Handle::Rest(r) => r.wait().await,
            }
        })
    }

    /// End the command and its process group for certain (SIGKILL).
    fn kill<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, kill(self.handle.clone()))
    }

    /// Send a signal to the command.
    fn signal<'py>(&self, py: Python<'py>, signal: i32) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        future_into_py(py, async move {
            match h {
                Handle::Local(h) => h.signal(signal).await.map_err(exec_to_py),
                Handle::Rest(r) => r.signal(signal).await,
            }
        })
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
            match h {
                Handle::Local(h) => h.resize_tty(rows, cols).await.map_err(exec_to_py),
                Handle::Rest(r) => r.resize(rows, cols).await,
            }
        })
    }

    fn __repr__(&self) -> String {
        format!("Execution(id={:?})", self.id_str())
    }
}

/// Lines from chunks: bytes carried until a newline (or the end), then decoded.
#[derive(Debug, Default)]
struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// The whole lines in `pending` after `chunk`, each with its newline.
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(chunk);
        let Some(last) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let rest = self.pending.split_off(last + 1);
        let whole = std::mem::replace(&mut self.pending, rest);
        whole
            .split_inclusive(|&b| b == b'\n')
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    /// What is left at the end: a last line without a newline.
    fn finish(&mut self) -> Option<String> {
        (!self.pending.is_empty())
            .then(|| String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned())
    }
}

#[derive(Debug)]
struct StreamState {
    out: Option<Source>,
    lines: Option<Lines>,
    ready: std::collections::VecDeque<String>,
}

/// One output stream of an execution: `async for item in stream`.
#[pyclass(module = "boxlite")]
#[derive(Debug)]
pub struct OutputStream {
    state: Arc<Mutex<StreamState>>,
}

impl OutputStream {
    fn new(out: Source, text: bool) -> Self {
        OutputStream {
            state: Arc::new(Mutex::new(StreamState {
                out: Some(out),
                lines: text.then(Lines::default),
                ready: Default::default(),
            })),
        }
    }
}

enum Item {
    Text(String),
    Bytes(Vec<u8>),
}

impl<'py> IntoPyObject<'py> for Item {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = std::convert::Infallible;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(match self {
            Item::Text(s) => PyString::new(py, &s).into_any(),
            Item::Bytes(b) => PyBytes::new(py, &b).into_any(),
        })
    }
}

#[pymethods]
impl OutputStream {
    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let state = self.state.clone();
        future_into_py(py, async move {
            let mut s = state.lock().await;
            loop {
                if let Some(line) = s.ready.pop_front() {
                    return Ok(Item::Text(line));
                }
                let Some(out) = s.out.as_mut() else {
                    return Err(PyStopAsyncIteration::new_err(()));
                };
                match out.next_chunk().await {
                    Some(Ok(chunk)) => {
                        let st = &mut *s;
                        match st.lines.as_mut() {
                            None => return Ok(Item::Bytes(chunk)),
                            Some(lines) => st.ready.extend(lines.push(&chunk)),
                        }
                    }
                    Some(Err(e)) => return Err(e),
                    None => {
                        s.out = None;
                        if let Some(last) = s.lines.as_mut().and_then(Lines::finish) {
                            s.ready.push_back(last);
                        }
                    }
                }
            }
        })
    }
}

/// An execution's stdin.
#[pyclass(module = "boxlite")]
#[derive(Debug)]
pub struct ExecStdin {
    pipe: Arc<Mutex<Option<Pipe>>>,
}

#[pymethods]
impl ExecStdin {
    /// Write bytes (or text, as UTF-8) to the command.
    fn send_input<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bytes = input_bytes(data)?;
        let pipe = self.pipe.clone();
        future_into_py(py, async move {
            let mut guard = pipe.lock().await;
            let p = guard
                .as_mut()
                .ok_or_else(|| error("InvalidStateError", "stdin is closed".into()))?;
            p.write_all(&bytes).await
        })
    }

    /// `send_input` under the name of Python's streams.
    fn write<'py>(&self, py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.send_input(py, data)
    }

    /// Close stdin: the command reads end of file.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let pipe = self.pipe.clone();
        future_into_py(py, async move {
            let mut guard = pipe.lock().await;
            if let Some(mut p) = guard.take() {
                p.close().await?;
            }
            Ok(())
        })
    }

    /// Whether `close` was called.
    fn is_closed(&self) -> bool {
        self.pipe.try_lock().map(|g| g.is_none()).unwrap_or(false)
    }
}

/// How a command ended.
#[pyclass(module = "boxlite", get_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct ExecResult {
    /// The exit code, or 128+N for signal N, 124 for a timeout, 137 for the OOM killer.
    pub exit_code: i32,
    /// Why it did not exit on its own, if it did not.
    pub error_message: Option<String>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub oom_killed: bool,
}

impl From<boxlite::ExitStatus> for ExecResult {
    fn from(st: boxlite::ExitStatus) -> Self {
        let error_message = match st {
            boxlite::ExitStatus::Code(_) => None,
            other => Some(other.to_string()),
        };
        ExecResult {
            exit_code: st.shell_code(),
            error_message,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_cross_chunks_and_split_characters() {
        let mut l = Lines::default();
        assert!(l.push(b"hel").is_empty());
        assert_eq!(l.push(b"lo\nwor"), ["hello\n"]);
        // "é" split across chunks is decoded whole.
        assert!(l.push(b"ld \xc3").is_empty());
        assert_eq!(l.push(b"\xa9\n\nend"), ["world \u{e9}\n", "\n"]);
        assert_eq!(l.finish().as_deref(), Some("end"));
        assert_eq!(l.finish(), None);
    }
}
