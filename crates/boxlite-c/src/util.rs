//! Reading C arguments and making C values, and the guard that keeps panics on this side.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{BoxliteErrorCode, FFIError, Failure, fail};

/// Run `f`, turning a panic (a bug of ours) into `on_panic`: no panic crosses the
/// boundary.
pub(crate) fn no_panic<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// The body of an entry point that returns a code: `f`'s failure goes to `out_error`,
/// a panic becomes `Internal`.
pub(crate) fn entry(
    out_error: *mut FFIError,
    f: impl FnOnce() -> Result<(), Failure>,
) -> BoxliteErrorCode {
    crate::error::clear(out_error);
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => BoxliteErrorCode::Ok,
        Ok(Err(e)) => fail(out_error, &e),
        Err(_) => fail(
            out_error,
            &Failure::new(
                BoxliteErrorCode::Internal,
                "internal error (a panic in boxlite)",
            ),
        ),
    }
}

/// The caller's `user_data`, carried to the draining thread. boxlite never reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserData(pub *mut c_void);

// SAFETY: the pointer is only handed back to the caller's own callback, on the thread
// that drains; boxlite never dereferences it. Whether that is sound for the caller's data
// is the caller's contract (documented in docs/c.md).
unsafe impl Send for UserData {}

/// A required C string argument, as UTF-8.
pub(crate) fn text(p: *const c_char, what: &str) -> Result<String, Failure> {
    opt_text(p, what)?.ok_or_else(|| Failure::null(what))
}

/// An optional C string argument (NULL is None), as UTF-8.
pub(crate) fn opt_text(p: *const c_char, what: &str) -> Result<Option<String>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: not NULL; every entry point documents that string arguments are
    // NUL-terminated and valid for the duration of the call.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map(|s| Some(s.to_string()))
        .map_err(|_| Failure::invalid(format!("{what} is not valid UTF-8")))
}

/// A counted array of C strings (`NULL` with a count of 0 is empty).
pub(crate) fn texts(p: *const *const c_char, n: c_int, what: &str) -> Result<Vec<String>, Failure> {
    let n = usize::try_from(n)
        .map_err(|_| Failure::invalid(format!("the count of {what} is {n}; give 0 or more")))?;
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(Failure::invalid(format!(
            "{what} is NULL but its count is {n}"
        )));
    }
    (0..n)
        .map(|i| {
            // SAFETY: `p` is not NULL and, by the entry point's contract, points to at
            // least `n` pointers.
            let item = unsafe { *p.add(i) };
            text(item, &format!("{what}[{i}]"))
        })
        .collect()
}

/// An owned C string for the caller (freed with `boxlite_free_string` or with the
/// structure that holds it). An interior NUL is shown as U+FFFD.
pub(crate) fn c_string(s: &str) -> *mut c_char {
    let clean = if s.contains('\0') {
        s.replace('\0', "\u{fffd}")
    } else {
        s.to_string()
    };
    CString::new(clean).map_or(std::ptr::null_mut(), CString::into_raw)
}

/// The same for an optional string (None is NULL).
pub(crate) fn opt_c_string(s: Option<&str>) -> *mut c_char {
    s.map_or(std::ptr::null_mut(), c_string)
}

/// Free a string made by [`c_string`].
pub(crate) fn free_c_string(p: *mut c_char) {
    if !p.is_null() {
        // SAFETY: every string this library hands out is made by `CString::into_raw`
        // (`c_string`); the caller gives each back once.
        drop(unsafe { CString::from_raw(p) });
    }
}

/// A vector as a C array (`items`, `count`); NULL for an empty one.
pub(crate) fn c_array<T>(v: Vec<T>) -> (*mut T, c_int) {
    if v.is_empty() {
        return (std::ptr::null_mut(), 0);
    }
    let n = c_int::try_from(v.len()).unwrap_or(c_int::MAX);
    let boxed = v.into_boxed_slice();
    (Box::into_raw(boxed).cast::<T>(), n)
}

/// Take back an array made by [`c_array`].
///
/// # Safety
/// `items` and `count` come from one `c_array` call and were not taken back before.
pub(crate) unsafe fn take_c_array<T>(items: *mut T, count: c_int) -> Vec<T> {
    let n = usize::try_from(count).unwrap_or(0);
    if items.is_null() || n == 0 {
        return Vec::new();
    }
    // SAFETY: by the contract above, `items` is a boxed slice of `n` elements leaked by
    // `c_array`.
    let slice = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(items, n)) };
    slice.into_vec()
}

/// Free a handle this library made with `Box::into_raw` (NULL is a no-op), keeping a
/// panic in its drop on this side.
///
/// # Safety
/// `p` is NULL or a pointer this library returned from `Box::into_raw` for a `T`, not
/// freed before.
pub(crate) unsafe fn free_boxed<T>(p: *mut T) {
    no_panic((), || {
        if !p.is_null() {
            // SAFETY: by the contract above, made by `Box::into_raw` and given back once.
            drop(unsafe { Box::from_raw(p) });
        }
    })
}

/// Write `value` to a required out-pointer.
pub(crate) fn put<T>(out: *mut T, value: T, what: &str) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: not NULL; the entry point's contract makes it writable.
    unsafe { out.write(value) };
    Ok(())
}

/// Free a string returned by boxlite (`boxlite_box_id`, ...). NULL is a no-op.
///
/// # Safety
/// `s` is NULL or a string this library returned and that was not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_free_string(s: *mut c_char) {
    no_panic((), || free_c_string(s))
}
