//! Library errors as Python exceptions: one class per kind ([`boxlite::ErrorKind`]),
//! defined in `boxlite/errors.py` (every one a `BoxliteError` and a `RuntimeError`), with
//! the library's whole error chain as the message, as the CLI prints it.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// The class name in `boxlite.errors` for a kind.
fn class_name(kind: boxlite::ErrorKind) -> &'static str {
    use boxlite::ErrorKind as K;
    match kind {
        K::InvalidArgument => "InvalidArgumentError",
        K::NotFound => "NotFoundError",
        K::AlreadyExists => "AlreadyExistsError",
        K::InvalidState => "InvalidStateError",
        K::ImagePullFailed => "ImageError",
        K::ResourceExhausted => "ResourceExhaustedError",
        K::Timeout => "AgentTimeoutError",
        K::Unavailable => "EngineError",
        K::Internal => "InternalError",
    }
}

/// An exception of class `name` from `boxlite.errors` (a plain `RuntimeError` if that
/// module cannot be imported, which only a broken install causes).
pub(crate) fn error(name: &str, msg: String) -> PyErr {
    Python::attach(|py| {
        let class = py.import("boxlite.errors").and_then(|m| m.getattr(name));
        match class {
            Ok(c) => PyErr::from_type(
                c.cast_into()
                    .unwrap_or_else(|_| py.get_type::<PyRuntimeError>()),
                msg,
            ),
            Err(_) => PyRuntimeError::new_err(msg),
        }
    })
}

/// The Python exception for a library error.
pub(crate) fn to_py(e: boxlite::Error) -> PyErr {
    error(class_name(e.kind()), boxlite::error_chain(&e))
}

/// The same for an error of the library's exec layer.
pub(crate) fn exec_to_py(e: boxlite::ExecError) -> PyErr {
    to_py(boxlite::Error::from(e))
}

/// A bad argument found here, before the library saw it.
pub(crate) fn invalid(msg: impl Into<String>) -> PyErr {
    error("InvalidArgumentError", msg.into())
}
