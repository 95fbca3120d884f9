//! libboxlite: boxlite's C ABI. Names, signatures and types follow BoxLite's
//! `boxlite.h`, so C programs written for it build against this one; the header,
//! `include/boxlite.h`, is generated from this crate by cbindgen and checked in (a test
//! fails when it drifts).
//!
//! Post and drain: every long operation validates its arguments, queues the work on the
//! runtime's worker threads and returns at once. An error found before queueing comes
//! back through the return code and `out_error`; everything later is an event on the
//! runtime's bounded queue, which `boxlite_runtime_drain` dispatches on the caller's
//! thread. User callbacks never run on a worker, nor with the queue's lock held. See
//! `docs/c.md` for ownership and threading.
//!
//! No panic crosses the boundary: every entry point runs inside `catch_unwind`.

pub mod boxes;
pub mod error;
pub mod exec;
pub mod images;
pub mod options;
pub mod queue;
pub mod runtime;
pub mod simple;
pub(crate) mod util;
pub mod volumes;

pub use error::{BoxliteErrorCode, FFIError};

/// The error type of the C API, under BoxLite's name.
pub type CBoxliteError = FFIError;
