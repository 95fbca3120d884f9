//! One Python exception class per kind of library error ([`boxlite::ErrorKind`]), under a
//! common base class; the message is the library's whole error chain, as the CLI prints it.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    _native,
    BoxliteError,
    PyException,
    "Base class of every boxlite error."
);
create_exception!(
    _native,
    InvalidArgumentError,
    BoxliteError,
    "A bad argument: an option, a name, an image reference, a command, a path."
);
create_exception!(
    _native,
    NotFoundError,
    BoxliteError,
    "No such box, execution, image, volume or path."
);
create_exception!(
    _native,
    AlreadyExistsError,
    BoxliteError,
    "The name is taken."
);
create_exception!(
    _native,
    InvalidStateError,
    BoxliteError,
    "Not possible in the current state: the box is not running (or is), the image is in use, stdin is closed."
);
create_exception!(
    _native,
    ImageError,
    BoxliteError,
    "An image could not be pulled."
);
create_exception!(
    _native,
    ResourceExhaustedError,
    BoxliteError,
    "A disk in the box is full."
);
create_exception!(
    _native,
    TimeoutError,
    BoxliteError,
    "The box's agent did not answer in time."
);
create_exception!(
    _native,
    EngineError,
    BoxliteError,
    "The runtime has been shut down."
);
create_exception!(
    _native,
    InternalError,
    BoxliteError,
    "A fault of this machine or of boxlite; the message says what."
);

/// The Python exception for a library error.
pub(crate) fn to_py(e: boxlite::Error) -> PyErr {
    use boxlite::ErrorKind as K;
    let msg = boxlite::error_chain(&e);
    match e.kind() {
        K::InvalidArgument => InvalidArgumentError::new_err(msg),
        K::NotFound => NotFoundError::new_err(msg),
        K::AlreadyExists => AlreadyExistsError::new_err(msg),
        K::InvalidState => InvalidStateError::new_err(msg),
        K::ImagePullFailed => ImageError::new_err(msg),
        K::ResourceExhausted => ResourceExhaustedError::new_err(msg),
        K::Timeout => TimeoutError::new_err(msg),
        K::Unavailable => EngineError::new_err(msg),
        K::Internal => InternalError::new_err(msg),
    }
}

/// The same for an error of the library's exec layer.
pub(crate) fn exec_to_py(e: boxlite::ExecError) -> PyErr {
    to_py(boxlite::Error::from(e))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("BoxliteError", py.get_type::<BoxliteError>())?;
    m.add(
        "InvalidArgumentError",
        py.get_type::<InvalidArgumentError>(),
    )?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("AlreadyExistsError", py.get_type::<AlreadyExistsError>())?;
    m.add("InvalidStateError", py.get_type::<InvalidStateError>())?;
    m.add("ImageError", py.get_type::<ImageError>())?;
    m.add(
        "ResourceExhaustedError",
        py.get_type::<ResourceExhaustedError>(),
    )?;
    m.add("TimeoutError", py.get_type::<TimeoutError>())?;
    m.add("EngineError", py.get_type::<EngineError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    Ok(())
}
