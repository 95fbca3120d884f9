//! The runtime handle: the library's `Boxlite`, the tokio runtime its work runs on, and
//! the event queue its results come back through; plus how an asynchronous call is
//! queued and how its result reaches the caller's callback.

use std::future::Future;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{BoxliteErrorCode, FFIError, Failure};
use crate::queue::{EventQueue, QUEUE_CAPACITY};
use crate::util::{UserData, entry, no_panic, opt_text, put};

/// Opaque handle to a boxlite runtime: the library over one home, its worker threads,
/// and the event queue that `boxlite_runtime_drain` dispatches.
pub struct RuntimeHandle {
    pub(crate) shared: Arc<Shared>,
    tokio: Option<tokio::runtime::Runtime>,
}

pub type CBoxliteRuntime = RuntimeHandle;

impl std::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("home", &self.shared.lib.home())
            .finish()
    }
}

/// What every handle derived from a runtime shares with it.
#[derive(Debug)]
pub(crate) struct Shared {
    pub lib: boxlite::Boxlite,
    pub queue: EventQueue,
    pub tokio: tokio::runtime::Handle,
    /// Set by shutdown and free: later calls fail at once.
    closed: AtomicBool,
    /// Counted here, for `boxlite_runtime_metrics`: commands started through this
    /// runtime, and those that failed to start.
    pub execs: AtomicU64,
    pub exec_errors: AtomicU64,
    /// Kills started by freeing executions, and a shutdown's stopping: the runtime's free
    /// waits for them (10 s at most), so freeing an execution, or shutting down, and then
    /// at once freeing the runtime still kills the process or stops the boxes.
    cleanups: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Shared {
    pub(crate) fn check_open(&self) -> Result<(), Failure> {
        if self.closed.load(Ordering::Acquire) {
            Err(Failure::closed())
        } else {
            Ok(())
        }
    }

    /// Run `work` on the runtime, then post what `deliver` makes of its result. The
    /// event is dropped (and with it the result) if the queue closed meanwhile.
    pub(crate) fn submit<T, F>(
        self: &Arc<Self>,
        work: F,
        deliver: impl FnOnce(T) -> crate::queue::Event + Send + 'static,
    ) where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        drop(self.spawn_posting(work, deliver));
    }

    /// Keep `task` for the runtime's free to wait for (dropping those already done).
    pub(crate) fn keep_cleanup(&self, task: tokio::task::JoinHandle<()>) {
        let mut all = self.cleanups.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|c| !c.is_finished());
        all.push(task);
    }

    /// [`submit`](Self::submit), returning the task.
    fn spawn_posting<T, F>(
        self: &Arc<Self>,
        work: F,
        deliver: impl FnOnce(T) -> crate::queue::Event + Send + 'static,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let sh = self.clone();
        self.tokio.spawn(async move {
            let out = work.await;
            let _ = sh.queue.post(deliver(out)).await;
        })
    }
}

/// A completion with no value: `(error, user_data)`.
pub(crate) type ErrCb = unsafe extern "C" fn(*mut FFIError, *mut c_void);

/// A completion with a value: `(value, error, user_data)`; the value is NULL on error.
pub(crate) type ValueCb<X> = unsafe extern "C" fn(*mut X, *mut FFIError, *mut c_void);

/// A callback argument that must not be NULL.
pub(crate) fn need<F>(cb: Option<F>) -> Result<F, Failure> {
    cb.ok_or_else(|| Failure::null("cb (the callback)"))
}

/// The event that calls `cb(error, user_data)`.
pub(crate) fn err_event(r: Result<(), Failure>, cb: ErrCb, ud: UserData) -> crate::queue::Event {
    Box::new(move || {
        let ud = ud;
        match r {
            // SAFETY: `cb` is the caller's non-NULL callback of this shape; it runs on
            // the draining thread, with no lock held.
            Ok(()) => unsafe { cb(std::ptr::null_mut(), ud.0) },
            // SAFETY: as above; the error is borrowed for the call.
            Err(f) => f.lend(|e| unsafe { cb(e, ud.0) }),
        }
    })
}

/// The event that calls `cb(value, error, user_data)`; `make` turns the value into its C
/// form only when the event runs, so an event that never runs leaks nothing.
pub(crate) fn value_event<T: Send + 'static, X: 'static>(
    r: Result<T, Failure>,
    cb: ValueCb<X>,
    ud: UserData,
    make: fn(T) -> *mut X,
) -> crate::queue::Event {
    Box::new(move || {
        let ud = ud;
        match r {
            Ok(v) => {
                let p = make(v);
                // SAFETY: `cb` is the caller's non-NULL callback; ownership of `p` passes
                // to it, as documented for each call.
                unsafe { cb(p, std::ptr::null_mut(), ud.0) };
            }
            // SAFETY: as above; the error is borrowed for the call.
            Err(f) => f.lend(|e| unsafe { cb(std::ptr::null_mut(), e, ud.0) }),
        }
    })
}

/// The event that calls `cb(&value, error, user_data)` with a value the callback only
/// borrows (metrics, as in BoxLite: valid during the call, nothing to free).
pub(crate) fn borrowed_event<X: Send + 'static>(
    r: Result<X, Failure>,
    cb: ValueCb<X>,
    ud: UserData,
) -> crate::queue::Event {
    Box::new(move || {
        let ud = ud;
        match r {
            Ok(mut v) => {
                // SAFETY: `cb` is the caller's non-NULL callback; `v` outlives the call.
                unsafe { cb(&mut v, std::ptr::null_mut(), ud.0) };
            }
            // SAFETY: as above; the error is borrowed for the call.
            Err(f) => f.lend(|e| unsafe { cb(std::ptr::null_mut(), e, ud.0) }),
        }
    })
}

/// Queue `work` whose completion is `cb(error, user_data)`.
pub(crate) fn submit_unit<F>(sh: &Arc<Shared>, work: F, cb: ErrCb, ud: UserData)
where
    F: Future<Output = Result<(), Failure>> + Send + 'static,
{
    sh.submit(work, move |r| err_event(r, cb, ud));
}

/// Queue `work` whose completion is `cb(value, error, user_data)`.
pub(crate) fn submit_value<T, X, F>(
    sh: &Arc<Shared>,
    work: F,
    cb: ValueCb<X>,
    ud: UserData,
    make: fn(T) -> *mut X,
) where
    F: Future<Output = Result<T, Failure>> + Send + 'static,
    T: Send + 'static,
    X: 'static,
{
    sh.submit(work, move |r| value_event(r, cb, ud, make));
}

/// A runtime handle argument that must not be NULL.
pub(crate) fn runtime_ref<'a>(rt: *mut RuntimeHandle) -> Result<&'a RuntimeHandle, Failure> {
    if rt.is_null() {
        return Err(Failure::null("runtime"));
    }
    // SAFETY: not NULL; the caller passes a handle from `boxlite_runtime_new` that it
    // has not freed (the documented contract of every call that takes one).
    Ok(unsafe { &*rt })
}

/// A handle derived from a runtime (box, execution, images, volumes).
pub(crate) trait Derived {
    fn shared(&self) -> &Arc<Shared>;
}

/// A derived handle that carries only its runtime: the image and volume handles.
pub(crate) trait OfRuntime: Derived + Sized {
    fn of(sh: Arc<Shared>) -> Self;
}

/// A derived handle argument (named `what` in the error) that must not be NULL, on a
/// runtime still open.
pub(crate) fn derived_ref<'a, T: Derived>(h: *mut T, what: &str) -> Result<&'a T, Failure> {
    if h.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: not NULL; a live handle this library made (`derive`) and the caller has
    // not freed, by the contract of every call that takes one.
    let h = unsafe { &*h };
    h.shared().check_open()?;
    Ok(h)
}

/// The body of `boxlite_runtime_images` and `boxlite_runtime_volumes`: a new derived
/// handle of `runtime` into `out_handle`.
pub(crate) fn derive<T: OfRuntime>(
    runtime: *mut RuntimeHandle,
    out_handle: *mut *mut T,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        put(out_handle, std::ptr::null_mut(), "out_handle")?;
        let rt = runtime_ref(runtime)?;
        rt.shared.check_open()?;
        let h = Box::new(T::of(rt.shared.clone()));
        put(out_handle, Box::into_raw(h), "out_handle")
    })
}

/// Registry settings passed at runtime creation (BoxLite's shape).
#[repr(C)]
#[derive(Debug)]
pub enum BoxliteRegistryTransport {
    BoxliteRegistryTransportHttps = 0,
    BoxliteRegistryTransportHttp = 1,
}

/// A registry to configure for this runtime. boxlite reads registries from
/// `BOXLITE_HOME/config.toml`; passing any here is refused with `Unsupported`.
#[repr(C)]
#[derive(Debug)]
pub struct BoxliteImageRegistry {
    pub host: *const c_char,
    pub transport: BoxliteRegistryTransport,
    pub skip_verify: c_int,
    pub search: c_int,
    pub username: *const c_char,
    pub password: *const c_char,
    pub bearer_token: *const c_char,
}

/// The library's version, a static string (never freed).
#[unsafe(no_mangle)]
pub extern "C" fn boxlite_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Open a runtime over `home_dir` (NULL: `$BOXLITE_HOME`, else `~/.boxlite`). Guest
/// assets come from `$BOXLITE_ASSETS` or the default places. Synchronous.
///
/// On success `*out_runtime` is a handle the caller frees with `boxlite_runtime_free`.
///
/// # Safety
/// `home_dir` is NULL or a NUL-terminated string; `image_registries` points to
/// `image_registries_count` entries (or is NULL with 0); `out_runtime` is writable;
/// `out_error` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_runtime_new(
    home_dir: *const c_char,
    image_registries: *const BoxliteImageRegistry,
    image_registries_count: c_int,
    out_runtime: *mut *mut CBoxliteRuntime,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        put(out_runtime, std::ptr::null_mut(), "out_runtime")?;
        if image_registries_count < 0 {
            return Err(Failure::invalid(format!(
                "image_registries_count is {image_registries_count}; give 0 or more"
            )));
        }
        if image_registries_count > 0 {
            return Err(Failure::new(
                BoxliteErrorCode::Unsupported,
                "image registries are configured in BOXLITE_HOME/config.toml (see docs/c.md); pass NULL and 0 here",
            ));
        }
        // The array itself is never read: a count of 0 means there is nothing in it.
        let _ = image_registries;
        let home = opt_text(home_dir, "home_dir")?.map(std::path::PathBuf::from);
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("boxlite-c")
            .enable_all()
            .build()
            .map_err(|e| {
                Failure::new(
                    BoxliteErrorCode::Internal,
                    format!("cannot start worker threads: {e}"),
                )
            })?;
        let lib = tokio.block_on(boxlite::Boxlite::open(boxlite::RuntimeOptions {
            home,
            assets: None,
            config: None,
            image_builder: None,
            auto_pause: None,
        }))?;
        let shared = Arc::new(Shared {
            lib,
            queue: EventQueue::new(QUEUE_CAPACITY),
            tokio: tokio.handle().clone(),
            closed: AtomicBool::new(false),
            execs: AtomicU64::new(0),
            exec_errors: AtomicU64::new(0),
            cleanups: std::sync::Mutex::new(Vec::new()),
        });
        let h = Box::new(RuntimeHandle {
            shared,
            tokio: Some(tokio),
        });
        put(out_runtime, Box::into_raw(h), "out_runtime")
    })
}

/// Runtime shutdown completion.
pub type CRuntimeShutdownCb = Option<unsafe extern "C" fn(*mut crate::CBoxliteError, *mut c_void)>;

/// Shut the runtime down: it is marked closed at once (every later call fails with
/// `InvalidState`), then the boxes this runtime started are stopped (each within
/// `timeout_secs`, 0 for the default of 10, negative to wait as long as it takes) and
/// `cb` is posted. Boxes are durable: they are stopped, not removed. Drain to receive
/// `cb`; free the runtime afterwards.
///
/// # Safety
/// `runtime` is a live handle; `out_error` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_runtime_shutdown(
    runtime: *mut CBoxliteRuntime,
    timeout_secs: c_int,
    cb: CRuntimeShutdownCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let rt = runtime_ref(runtime)?;
        let cb = need(cb)?;
        // One shutdown: a second, even racing the first, is refused as on a closed runtime.
        if rt.shared.closed.swap(true, Ordering::AcqRel) {
            return Err(Failure::closed());
        }
        let t = match timeout_secs {
            0 => Duration::from_secs(10),
            t if t < 0 => Duration::from_secs(86_400 * 365),
            t => Duration::from_secs(u64::from(t.unsigned_abs())),
        };
        let lib = rt.shared.lib.clone();
        let ud = UserData(user_data);
        // Kept with the kills of freed executions: a free right after this call still
        // lets the boxes stop (within free's bound) rather than cancelling the stop.
        let task = rt.shared.spawn_posting(
            async move { lib.shutdown(t).await.map_err(Failure::from) },
            move |r| err_event(r, cb, ud),
        );
        rt.shared.keep_cleanup(task);
        Ok(())
    })
}

/// Free the runtime: it is closed; it waits (10 s at most) for the kills of executions
/// freed before and for a shutdown in progress; events still queued are dropped (their
/// payloads freed, their callbacks never called), other work in flight is cancelled, and
/// the worker threads are stopped (waiting up to 5 s for blocking work). Boxes keep
/// running; they are durable. Handles derived from it (boxes, executions, images, volumes) must still
/// be freed; every call on them fails with `InvalidState`. Never call it from a
/// callback, or while another thread drains this runtime. NULL is a no-op.
///
/// # Safety
/// `runtime` is NULL or a handle from `boxlite_runtime_new` not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_runtime_free(runtime: *mut CBoxliteRuntime) {
    no_panic((), || {
        if runtime.is_null() {
            return;
        }
        // SAFETY: by the contract above, a live handle from `Box::into_raw`, given back
        // once.
        let mut rt = unsafe { Box::from_raw(runtime) };
        rt.shared.closed.store(true, Ordering::Release);
        let cleanups =
            std::mem::take(&mut *rt.shared.cleanups.lock().unwrap_or_else(|p| p.into_inner()));
        if let (Some(t), false) = (&rt.tokio, cleanups.is_empty()) {
            t.block_on(async {
                let all = async {
                    for c in cleanups {
                        let _ = c.await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), all).await;
            });
        }
        rt.shared.queue.close();
        if let Some(t) = rt.tokio.take() {
            t.shutdown_timeout(Duration::from_secs(5));
        }
        // Events posted by tasks that finished during the shutdown are dropped too.
        rt.shared.queue.close();
    })
}

/// Dispatch pending callbacks on the calling thread. `timeout_ms`: 0 polls, negative
/// blocks until at least one event is available, positive waits at most that long.
/// Returns the number of events dispatched (each ran its callback), or -1 with
/// `out_error` set (a NULL runtime). Events run in the order they were queued, at most
/// those queued when the wait ended. The queue's lock is released before any callback
/// runs, so a callback may call boxlite, including this function: a nested call runs
/// the events that come next, so the order holds.
///
/// # Safety
/// `runtime` is a live handle; `out_error` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_runtime_drain(
    runtime: *mut CBoxliteRuntime,
    timeout_ms: c_int,
    out_error: *mut FFIError,
) -> c_int {
    let mut n = 0usize;
    let code = entry(out_error, || {
        let rt = runtime_ref(runtime)?;
        let wait = match timeout_ms {
            t if t < 0 => None,
            t => Some(Duration::from_millis(u64::from(t.unsigned_abs()))),
        };
        n = rt.shared.queue.drain(wait);
        Ok(())
    });
    if code == BoxliteErrorCode::Ok {
        c_int::try_from(n).unwrap_or(c_int::MAX)
    } else {
        -1
    }
}

/// Runtime-wide counts.
#[repr(C)]
#[derive(Debug)]
pub struct CRuntimeMetrics {
    /// Boxes that exist in the home now (boxlite keeps no total of removed ones).
    pub boxes_created_total: c_int,
    /// Boxes in the Failed state.
    pub boxes_failed_total: c_int,
    /// Boxes running.
    pub num_running_boxes: c_int,
    /// Commands started through this runtime handle.
    pub total_commands_executed: c_int,
    /// Commands that failed to start through this runtime handle.
    pub total_exec_errors: c_int,
}

/// Runtime metrics completion; the metrics are borrowed for the call.
pub type CRuntimeMetricsCb =
    Option<unsafe extern "C" fn(*mut CRuntimeMetrics, *mut crate::CBoxliteError, *mut c_void)>;

fn count(n: u64) -> c_int {
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

/// Queue a count of this runtime's boxes and commands.
///
/// # Safety
/// `runtime` is a live handle; `out_error` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_runtime_metrics(
    runtime: *mut CBoxliteRuntime,
    cb: CRuntimeMetricsCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let rt = runtime_ref(runtime)?;
        let cb = need(cb)?;
        rt.shared.check_open()?;
        let sh = rt.shared.clone();
        let work = async move {
            let list = sh.lib.list().await?;
            let with = |s: boxlite::BoxState| list.iter().filter(|b| b.state == s).count() as u64;
            Ok::<_, Failure>(CRuntimeMetrics {
                boxes_created_total: count(list.len() as u64),
                boxes_failed_total: count(with(boxlite::BoxState::Failed)),
                num_running_boxes: count(with(boxlite::BoxState::Running)),
                total_commands_executed: count(sh.execs.load(Ordering::Relaxed)),
                total_exec_errors: count(sh.exec_errors.load(Ordering::Relaxed)),
            })
        };
        let ud = UserData(user_data);
        rt.shared.submit(work, move |r| borrowed_event(r, cb, ud));
        Ok(())
    })
}
