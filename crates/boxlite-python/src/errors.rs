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

/// The class in `boxlite.errors` for an error of the REST client: the server's `code`
/// (as BoxLite's client maps it), or what went wrong on the way.
fn rest_class(e: &boxlite_client::RemoteError) -> &'static str {
    use boxlite_client::RemoteError as R;
    match e {
        R::Api { code, .. } => match boxlite_server::error::error_type(code) {
            // BoxLite's client raises a configuration error for a refused credential.
            "AuthError" => "ConfigError",
            // The server's timeout is the library's (the agent's), as locally.
            "TimeoutError" => "AgentTimeoutError",
            // Classes this package has under the same names.
            other => other,
        },
        R::InvalidUrl { .. } | R::InvalidName { .. } => "InvalidArgumentError",
        R::Ended { .. } => "InvalidStateError",
        R::InvalidKey { .. } | R::NoKey { .. } | R::BadKey { .. } => "ConfigError",
        R::Status { status: 404, .. } => "NotFoundError",
        R::Connect { .. } | R::Transport { .. } | R::WebSocket { .. } => "NetworkError",
        R::Status {
            status: 502..=504, ..
        } => "NetworkError",
        R::Status { .. } | R::TooLarge { .. } | R::Malformed { .. } => "InternalError",
    }
}

/// The Python exception for an error of the REST client, with its whole chain.
pub(crate) fn rest_ref_to_py(e: &boxlite_client::RemoteError) -> PyErr {
    error(rest_class(e), boxlite::error_chain(e))
}

/// The same, by value.
pub(crate) fn rest_to_py(e: boxlite_client::RemoteError) -> PyErr {
    rest_ref_to_py(&e)
}

/// A copy to or from a server that failed on either side.
pub(crate) fn copy_to_py(e: boxlite_client::api::CopyFailed) -> PyErr {
    use boxlite_client::api::CopyFailed as C;
    match e {
        C::Remote(r) => rest_to_py(r),
        C::Host(h) => to_py(boxlite::Error::from(h)),
        e @ C::Pack { .. } => error("InvalidArgumentError", boxlite::error_chain(&e)),
    }
}
