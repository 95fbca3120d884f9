//! `boxlite._native`: the Python SDK's extension module, a thin layer over the boxlite
//! library. Every call that waits returns an awaitable run on the library's tokio
//! runtime, so the GIL is never held while Rust waits; the Python package
//! (`python/boxlite`) builds the public API (names and shapes of BoxLite's SDK, the
//! convenience boxes, the synchronous twins) on top.

mod boxes;
mod errors;
mod exec;
mod options;
mod rest;
mod runtime;
mod snapshots;

use pyo3::prelude::*;

/// Called at interpreter exit (`atexit`, before finalization): with the GIL released,
/// let the runtime's tasks finish handing results to Python (up to 200 ms). A task that
/// completes an awaitable writes to the event loop's wake-up socket with the GIL
/// released; were the interpreter to finalize meanwhile, that thread could no longer
/// release the GIL, and CPython aborts.
#[pyfunction]
fn _quiesce(py: Python<'_>) {
    let rt = pyo3_async_runtimes::tokio::get_runtime();
    py.detach(|| {
        let t0 = std::time::Instant::now();
        // One pass always: a thread inside a hand-over has the GIL back by then.
        loop {
            std::thread::sleep(std::time::Duration::from_millis(5));
            if rt.metrics().num_alive_tasks() == 0
                || t0.elapsed() > std::time::Duration::from_millis(200)
            {
                break;
            }
        }
    });
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_quiesce, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<runtime::Options>()?;
    m.add_class::<runtime::Boxlite>()?;
    m.add_class::<runtime::RuntimeMetrics>()?;
    m.add_class::<options::BoxOptions>()?;
    m.add_class::<options::NetworkSpec>()?;
    m.add_class::<options::OutboundNetworkSpec>()?;
    m.add_class::<options::CopyOptions>()?;
    m.add_class::<options::Secret>()?;
    m.add_class::<boxes::PyBox>()?;
    m.add_class::<boxes::BoxInfo>()?;
    m.add_class::<boxes::BoxStateInfo>()?;
    m.add_class::<boxes::BoxMetrics>()?;
    m.add_class::<snapshots::SnapshotHandle>()?;
    m.add_class::<snapshots::SnapshotInfo>()?;
    m.add_class::<exec::Execution>()?;
    m.add_class::<exec::ExecResult>()?;
    m.add_class::<exec::OutputStream>()?;
    m.add_class::<exec::ExecStdin>()?;
    m.add_class::<rest::BoxliteRestOptions>()?;
    m.add_class::<rest::ApiKeyCredential>()?;
    m.add_class::<rest::AccessToken>()?;
    Ok(())
}
