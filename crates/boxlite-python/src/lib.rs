//! `boxlite._native`: the Python SDK's extension module, a thin layer over the boxlite
//! library. Every call that waits returns an awaitable run on the library's tokio
//! runtime, so the GIL is never held while Rust waits; the Python package
//! (`python/boxlite`) builds the public API (names and shapes of BoxLite's SDK, the
//! convenience boxes, the synchronous twins) on top.

mod boxes;
mod errors;
mod exec;
mod options;
mod runtime;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<runtime::Options>()?;
    m.add_class::<runtime::Boxlite>()?;
    m.add_class::<runtime::RuntimeMetrics>()?;
    m.add_class::<options::BoxOptions>()?;
    m.add_class::<options::NetworkSpec>()?;
    m.add_class::<options::OutboundNetworkSpec>()?;
    m.add_class::<options::CopyOptions>()?;
    m.add_class::<boxes::PyBox>()?;
    m.add_class::<boxes::BoxInfo>()?;
    m.add_class::<boxes::BoxStateInfo>()?;
    m.add_class::<boxes::BoxMetrics>()?;
    m.add_class::<exec::Execution>()?;
    m.add_class::<exec::ExecResult>()?;
    m.add_class::<exec::OutputStream>()?;
    m.add_class::<exec::ExecStdin>()?;
    Ok(())
}
