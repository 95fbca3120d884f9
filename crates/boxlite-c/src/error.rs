//! Error codes and messages across the boundary. Codes and names are BoxLite's
//! (`BoxliteErrorCode`, `FFIError`); the message is the library's whole error chain, as
//! the CLI prints it.

use std::ffi::CString;
use std::os::raw::c_char;

/// Error codes returned by the boxlite C API, BoxLite's numbering.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxliteErrorCode {
    /// Operation succeeded
    Ok = 0,
    /// Internal error (a fault of this machine or of boxlite)
    Internal = 1,
    /// Resource not found
    NotFound = 2,
    /// Resource already exists
    AlreadyExists = 3,
    /// Invalid state for the operation (including a runtime that was shut down)
    InvalidState = 4,
    /// Invalid argument provided (including a NULL pointer or callback)
    InvalidArgument = 5,
    /// Configuration error
    Config = 6,
    /// Storage error
    Storage = 7,
    /// Image error (pull failed, unreachable registry)
    Image = 8,
    /// Network error
    Network = 9,
    /// Execution error
    Execution = 10,
    /// Resource stopped
    Stopped = 11,
    /// Engine error
    Engine = 12,
    /// Unsupported operation or option
    Unsupported = 13,
    /// Database error
    Database = 14,
    /// Portal/communication error (the agent did not answer in time)
    Portal = 15,
    /// RPC error
    Rpc = 16,
    /// RPC transport error
    RpcTransport = 17,
    /// Metadata error
    Metadata = 18,
    /// Unsupported engine error
    UnsupportedEngine = 19,
    /// System resource limit reached (a full disk, a full stdin buffer)
    ResourceExhausted = 20,
    /// Interactive execution session was reaped (not produced by boxlite)
    SessionReaped = 21,
}

/// Extended error information: a code and a message.
///
/// The structure belongs to the caller. On a synchronous failure `message` is a string
/// the caller frees with `boxlite_error_free`. In a callback the error is borrowed: it is
/// valid only during the call.
#[repr(C)]
#[derive(Debug)]
pub struct FFIError {
    /// Error code
    pub code: BoxliteErrorCode,
    /// Detailed error message (NULL if none, freed with boxlite_error_free)
    pub message: *mut c_char,
}

/// An error on the Rust side, before it becomes an [`FFIError`].
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub code: BoxliteErrorCode,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: BoxliteErrorCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Failure::new(BoxliteErrorCode::InvalidArgument, message)
    }

    pub(crate) fn null(what: &str) -> Self {
        Failure::invalid(format!("{what} is NULL"))
    }

    /// The runtime this object belongs to was shut down or freed.
    pub(crate) fn closed() -> Self {
        Failure::new(
            BoxliteErrorCode::InvalidState,
            "the boxlite runtime has been shut down; open a new one",
        )
    }

    /// The message as a C string (an interior NUL, which a path could hold, is shown
    /// as U+FFFD rather than cutting the message short).
    fn c_message(&self) -> *mut c_char {
        let clean = self.message.replace('\0', "\u{fffd}");
        CString::new(clean).map_or(std::ptr::null_mut(), CString::into_raw)
    }

    /// Lend `call` this failure as a callback's error: the `FFIError` and its message
    /// live until `call` returns, then the message is freed (unless the callback freed
    /// it already with `boxlite_error_free`, which leaves NULL).
    pub(crate) fn lend(&self, call: impl FnOnce(*mut FFIError)) {
        let mut e = FFIError {
            code: self.code,
            message: self.c_message(),
        };
        call(&mut e);
        release(&mut e);
    }
}

impl From<boxlite::Error> for Failure {
    fn from(e: boxlite::Error) -> Self {
        Failure::new(code_of(&e), boxlite::error_chain(&e))
    }
}

impl From<boxlite::ExecError> for Failure {
    fn from(e: boxlite::ExecError) -> Self {
        boxlite::Error::from(e).into()
    }
}

/// BoxLite's code for a library error.
pub(crate) fn code_of(e: &boxlite::Error) -> BoxliteErrorCode {
    use BoxliteErrorCode as C;
    use boxlite::ErrorKind as K;
    match e.kind() {
        K::InvalidArgument => C::InvalidArgument,
        K::NotFound => C::NotFound,
        K::AlreadyExists => C::AlreadyExists,
        K::InvalidState => C::InvalidState,
        K::ImagePullFailed => C::Image,
        K::ResourceExhausted => C::ResourceExhausted,
        K::Timeout => C::Portal,
        K::Unavailable => C::InvalidState,
        K::Internal => match e {
            boxlite::Error::Image(_) => C::Image,
            boxlite::Error::Db(_) => C::Database,
            boxlite::Error::Portal(_) => C::Portal,
            boxlite::Error::Exec(_) => C::Execution,
            boxlite::Error::Vmm(_) | boxlite::Error::Accel(_) => C::Engine,
            boxlite::Error::Config(_) => C::Config,
            boxlite::Error::Disk(_) | boxlite::Error::Volume(_) => C::Storage,
            _ => C::Internal,
        },
    }
}

/// Fill the caller's `out_error` (when not NULL) and return the code.
pub(crate) fn fail(out: *mut FFIError, f: &Failure) -> BoxliteErrorCode {
    if !out.is_null() {
        // SAFETY: `out` is not NULL and, by the contract of every entry point, points to
        // a writable FFIError the caller owns. Any message already there is the caller's
        // to free; it is overwritten, as BoxLite's API does.
        unsafe {
            (*out).code = f.code;
            (*out).message = f.c_message();
        }
    }
    f.code
}

/// Reset the caller's `out_error` to "no error" (when not NULL).
pub(crate) fn clear(out: *mut FFIError) {
    if !out.is_null() {
        // SAFETY: as in `fail`: a writable FFIError of the caller's.
        unsafe {
            (*out).code = BoxliteErrorCode::Ok;
            (*out).message = std::ptr::null_mut();
        }
    }
}

/// Free an error's message, made by [`Failure::lend`] or by [`fail`] for the caller;
/// NULL (never set, or freed already) is a no-op.
fn release(e: &mut FFIError) {
    if !e.message.is_null() {
        // SAFETY: a non-NULL message here was made by `CString::into_raw` in
        // `c_message` and not yet freed: `boxlite_error_free` sets it to NULL when it
        // frees it.
        drop(unsafe { CString::from_raw(e.message) });
        e.message = std::ptr::null_mut();
    }
}

/// Free the message of an error (the structure itself belongs to the caller) and reset
/// it to `Ok`. NULL, and an error without a message, are no-ops.
///
/// # Safety
/// `error` is NULL or points to an `FFIError` whose message is NULL or was set by this
/// library and not freed since.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_error_free(error: *mut FFIError) {
    crate::util::no_panic((), || {
        if error.is_null() {
            return;
        }
        // SAFETY: not NULL; by the contract above a valid FFIError.
        let e = unsafe { &mut *error };
        release(e);
        e.code = BoxliteErrorCode::Ok;
    })
}
