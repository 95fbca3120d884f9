//! Executions: `boxlite_box_exec` returns a handle at once and starts the command on
//! the runtime; output chunks and the exit come back as events.
//!
//! The guarantees, and how they hold:
//! - A stream is read only once its callback is registered (BoxLite's lazy pumps), so no
//!   chunk is lost to a callback registered a moment after `boxlite_box_exec`. A stream
//!   never registered stays unread in the box.
//! - Chunks are posted as the library yields them: the bytes the process wrote, no
//!   newline added, no line splitting.
//! - One exit event per execution, the last: the exit task waits for the process, then
//!   *seals* the execution (no stream can be registered after), waits until every
//!   registered stream has reached its end, and only then claims the exit and posts it.
//!   Free races it for the same claim; whoever claims posts the one exit.
//! - Free kills a process that was not seen to exit (even when a wait failed, say the
//!   transport was lost), stops the stream readers, and posts the exit with
//!   `BOXLITE_EXIT_FORCE_CLOSED` if it was not already queued.

use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::boxes::{CBoxHandle, box_ref};
use crate::error::{BoxliteErrorCode, FFIError, Failure};
use crate::runtime::{Shared, need, submit_unit};
use crate::util::{UserData, entry, no_panic, opt_text, put, text, texts};

/// The exit codes boxlite adds to a process's own (0-255) and to minus a signal number
/// (-1..-64), as the exit and wait callbacks report them.
#[repr(C)]
#[allow(non_camel_case_types, clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy)]
pub enum BoxliteExitCode {
    /// The command could not be started, or its exit could not be learned (the box
    /// stopped, the transport was lost); `boxlite_execution_wait` gives the error.
    BOXLITE_EXIT_FAILED = -128,
    /// The execution was freed before its exit event was queued.
    BOXLITE_EXIT_FORCE_CLOSED = -129,
    /// The command's timeout expired and the agent killed it.
    BOXLITE_EXIT_TIMED_OUT = -130,
    /// The guest's out-of-memory killer ended the command.
    BOXLITE_EXIT_OUT_OF_MEMORY = -131,
}

pub(crate) const BOXLITE_EXIT_FAILED: c_int = BoxliteExitCode::BOXLITE_EXIT_FAILED as c_int;
pub(crate) const BOXLITE_EXIT_FORCE_CLOSED: c_int =
    BoxliteExitCode::BOXLITE_EXIT_FORCE_CLOSED as c_int;
pub(crate) const BOXLITE_EXIT_TIMED_OUT: c_int = BoxliteExitCode::BOXLITE_EXIT_TIMED_OUT as c_int;
pub(crate) const BOXLITE_EXIT_OUT_OF_MEMORY: c_int =
    BoxliteExitCode::BOXLITE_EXIT_OUT_OF_MEMORY as c_int;
/// Most bytes of stdin queued and not yet taken by the process.
pub const BOXLITE_STDIN_BUFFER_BYTES: usize = 16 << 20;

/// A command to run: BoxLite's descriptor. Strings are NULL for the default.
#[repr(C)]
#[derive(Debug)]
pub struct BoxliteCommand {
    /// Command to execute (required, must not be NULL).
    pub command: *const std::os::raw::c_char,
    /// Array of argument strings. NULL = no args.
    pub args: *const *const std::os::raw::c_char,
    /// Number of arguments in `args`.
    pub argc: c_int,
    /// Array of env var pairs: [key0, val0, key1, ...]. NULL = none added.
    pub env_pairs: *const *const std::os::raw::c_char,
    /// Number of strings in `env_pairs`; an odd trailing value is ignored.
    pub env_count: c_int,
    /// Working directory inside the box. NULL = the box's default.
    pub workdir: *const std::os::raw::c_char,
    /// User spec (e.g., "nobody", "1000:1000"). NULL = the image's user.
    pub user: *const std::os::raw::c_char,
    /// Timeout in seconds. 0.0 = no timeout.
    pub timeout_secs: f64,
    /// Non-zero: run under a terminal (24 rows, 80 columns; resize it after).
    pub tty: c_int,
}

/// Streaming stdout chunk callback: the bytes are borrowed for the call.
pub type CBoxStdoutCb = Option<unsafe extern "C" fn(*const u8, usize, *mut c_void)>;
/// Streaming stderr chunk callback: the bytes are borrowed for the call.
pub type CBoxStderrCb = Option<unsafe extern "C" fn(*const u8, usize, *mut c_void)>;
/// Process exit callback, once per execution and after its last chunk: the exit code
/// (0-255), minus the signal number (-1..-64) for a process killed by a signal, or one
/// of the `BOXLITE_EXIT_*` codes.
pub type CBoxExitCb = Option<unsafe extern "C" fn(c_int, *mut c_void)>;
/// Execution wait completion: the exit code as for the exit callback, or an error.
pub type CExecutionWaitCb =
    Option<unsafe extern "C" fn(c_int, *mut crate::CBoxliteError, *mut c_void)>;
/// Execution kill completion.
pub type CExecutionKillCb = Option<unsafe extern "C" fn(*mut crate::CBoxliteError, *mut c_void)>;
/// Execution signal completion.
pub type CExecutionSignalCb = Option<unsafe extern "C" fn(*mut crate::CBoxliteError, *mut c_void)>;
/// Execution terminal resize completion.
pub type CExecutionResizeCb = Option<unsafe extern "C" fn(*mut crate::CBoxliteError, *mut c_void)>;

type ChunkFn = unsafe extern "C" fn(*const u8, usize, *mut c_void);
type ExitFn = unsafe extern "C" fn(c_int, *mut c_void);

/// Opaque handle to an execution. Free it with `boxlite_execution_free`, which kills
/// the process if it is still running.
#[derive(Debug)]
pub struct ExecutionHandle {
    st: Arc<ExecState>,
}

pub type CExecutionHandle = ExecutionHandle;

type Started = Option<Result<boxlite::Execution, Failure>>;

#[derive(Debug)]
struct ExecState {
    sh: Arc<Shared>,
    started: watch::Sender<Started>,
    inner: Mutex<Inner>,
    /// The process was seen to exit (a wait succeeded): free need not kill it.
    exited: AtomicBool,
    stdin: Mutex<StdinSide>,
    stdin_pending: Arc<AtomicUsize>,
}

#[derive(Debug)]
enum StdinMsg {
    Data(Vec<u8>),
    Close,
}

#[derive(Debug)]
struct StdinSide {
    tx: Option<mpsc::UnboundedSender<StdinMsg>>,
    rx: Option<mpsc::UnboundedReceiver<StdinMsg>>,
    /// Why writing failed, once it has.
    failed: Arc<Mutex<Option<Failure>>>,
}

#[derive(Debug, Default)]
struct Stream {
    cb: Option<(ChunkFn, UserData)>,
    src: Option<boxlite::ExecOutput>,
    task: Option<JoinHandle<()>>,
    done: Option<oneshot::Receiver<()>>,
}

#[derive(Debug, Default)]
struct Inner {
    out: Stream,
    err: Stream,
    exit_cb: Option<(ExitFn, UserData)>,
    exit_task: Option<JoinHandle<()>>,
    /// The process exited and the exit task is collecting the streams: none may join.
    sealed: bool,
    /// The one exit event is queued or being queued.
    exit_claimed: bool,
    freed: bool,
}

impl ExecState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_result(&self) -> Started {
        self.started.borrow().clone()
    }

    /// Wait for the process and give its C exit code; once seen, its exit means free
    /// need not kill it.
    async fn wait_code(&self, ex: &boxlite::Execution) -> Result<c_int, Failure> {
        let s = ex.wait().await.map_err(Failure::from)?;
        self.exited.store(true, Ordering::Release);
        Ok(exit_code(s))
    }

    /// Start a stream's reader if it is registered, the command started, and it has not
    /// begun (called with the lock held).
    fn pump(self: &Arc<Self>, inner: &mut Inner, which: Which) {
        if inner.freed {
            return;
        }
        let s = match which {
            Which::Out => &mut inner.out,
            Which::Err => &mut inner.err,
        };
        // The callback first: the source is taken only when there is one to feed.
        let Some((cb, ud)) = s.cb else {
            return;
        };
        let Some(mut src) = s.src.take() else {
            return;
        };
        let (tx, rx) = oneshot::channel::<()>();
        s.done = Some(rx);
        let sh = self.sh.clone();
        s.task = Some(self.sh.tokio.spawn(async move {
            while let Some(Ok(chunk)) = src.next_chunk().await {
                if chunk.is_empty() {
                    continue;
                }
                let ud = ud;
                let ev: crate::queue::Event = Box::new(move || {
                    let ud = ud;
                    // SAFETY: the caller's non-NULL chunk callback; the bytes live until
                    // it returns.
                    unsafe { cb(chunk.as_ptr(), chunk.len(), ud.0) };
                });
                if sh.queue.post(ev).await.is_err() {
                    break;
                }
            }
            drop(tx);
        }));
    }

    /// Start the exit task if the exit callback is registered and the start is known.
    fn arm_exit(self: &Arc<Self>, inner: &mut Inner) {
        if inner.exit_cb.is_none() || inner.exit_task.is_some() || inner.exit_claimed {
            return;
        }
        let Some(started) = self.start_result() else {
            return;
        };
        let st = self.clone();
        inner.exit_task = Some(self.sh.tokio.spawn(async move {
            let code = match started {
                Err(_) => BOXLITE_EXIT_FAILED,
                Ok(ex) => st.wait_code(&ex).await.unwrap_or(BOXLITE_EXIT_FAILED),
            };
            let waits: Vec<oneshot::Receiver<()>> = {
                let mut g = st.lock();
                g.sealed = true;
                [g.out.done.take(), g.err.done.take()]
                    .into_iter()
                    .flatten()
                    .collect()
            };
            for w in waits {
                let _ = w.await;
            }
            let cb = {
                let mut g = st.lock();
                if g.exit_claimed {
                    return;
                }
                g.exit_claimed = true;
                g.exit_cb
            };
            if let Some((cb, ud)) = cb {
                let _ = st.sh.queue.post(exit_event(cb, ud, code)).await;
            }
        }));
    }
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Out,
    Err,
}

fn exit_event(cb: ExitFn, ud: UserData, code: c_int) -> crate::queue::Event {
    Box::new(move || {
        let ud = ud;
        // SAFETY: the caller's non-NULL exit callback.
        unsafe { cb(code, ud.0) };
    })
}

/// The C form of an exit status (see [`CBoxExitCb`]).
pub(crate) fn exit_code(s: boxlite::ExitStatus) -> c_int {
    match s {
        boxlite::ExitStatus::Code(c) => c,
        boxlite::ExitStatus::Signal { signal, .. } => -signal,
        boxlite::ExitStatus::TimedOut => BOXLITE_EXIT_TIMED_OUT,
        boxlite::ExitStatus::OutOfMemory => BOXLITE_EXIT_OUT_OF_MEMORY,
    }
}

/// The library command for a C descriptor, checked.
fn command_of(c: &BoxliteCommand) -> Result<boxlite::BoxCommand, Failure> {
    let program = text(c.command, "command")?;
    let mut cmd = boxlite::BoxCommand::new(program)
        .args(texts(c.args, c.argc, "args")?)
        .stdin(true);
    let env = texts(c.env_pairs, c.env_count, "env_pairs")?;
    for pair in env.chunks_exact(2) {
        boxlite::BoxCommand::check_env(&pair[0], &pair[1]).map_err(Failure::from)?;
        cmd = cmd.env(pair[0].clone(), pair[1].clone());
    }
    if let Some(dir) = opt_text(c.workdir, "workdir")? {
        boxlite::BoxCommand::check_working_dir(&dir).map_err(Failure::from)?;
        cmd = cmd.working_dir(dir);
    }
    if let Some(user) = opt_text(c.user, "user")? {
        cmd = cmd.user(user);
    }
    let t = c.timeout_secs;
    if !t.is_finite() || t < 0.0 {
        return Err(Failure::invalid(format!(
            "timeout_secs is {t}; give 0 (none) or a positive number of seconds"
        )));
    }
    if t > 0.0 {
        cmd = cmd.timeout(std::time::Duration::from_secs_f64(t.min(86_400.0 * 365.0)));
    }
    if c.tty != 0 {
        cmd = cmd.tty(24, 80);
    }
    cmd.validate().map_err(Failure::from)?;
    Ok(cmd)
}

/// Start a command in the box. Returns at once with `*out_execution` (the command
/// starts on the runtime; a box that is not running is started first). Register the
/// stream and exit callbacks next, before draining; a stream never registered is not
/// read. Free the handle with `boxlite_execution_free`.
///
/// # Safety
/// `handle` is a live box handle; `cmd` points to a valid descriptor whose strings are
/// NUL-terminated (they are copied); `out_execution` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_box_exec(
    handle: *mut CBoxHandle,
    cmd: *const BoxliteCommand,
    out_execution: *mut *mut CExecutionHandle,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        put(out_execution, std::ptr::null_mut(), "out_execution")?;
        let b = box_ref(handle)?;
        if cmd.is_null() {
            return Err(Failure::null("cmd"));
        }
        // SAFETY: not NULL; a valid descriptor by the contract above.
        let command = command_of(unsafe { &*cmd })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let st = Arc::new(ExecState {
            sh: b.sh.clone(),
            started: watch::channel(None).0,
            inner: Mutex::new(Inner::default()),
            exited: AtomicBool::new(false),
            stdin: Mutex::new(StdinSide {
                tx: Some(tx),
                rx: Some(rx),
                failed: Arc::new(Mutex::new(None)),
            }),
            stdin_pending: Arc::new(AtomicUsize::new(0)),
        });
        let lb = b.lb.clone();
        let task_st = st.clone();
        b.sh.tokio.spawn(async move {
            let st = task_st;
            let r = lb.exec(command).await.map_err(Failure::from);
            let counter = if r.is_ok() {
                &st.sh.execs
            } else {
                &st.sh.exec_errors
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let mut started = r;
            if let Ok(ex) = &mut started
                && let Some(pipe) = ex.take_stdin()
            {
                start_stdin_writer(&st, pipe);
            }
            let mut g = st.lock();
            if let Ok(ex) = &mut started {
                g.out.src = ex.take_stdout();
                g.err.src = ex.take_stderr();
            }
            st.started.send_replace(Some(started));
            st.pump(&mut g, Which::Out);
            st.pump(&mut g, Which::Err);
            st.arm_exit(&mut g);
        });
        put(
            out_execution,
            Box::into_raw(Box::new(ExecutionHandle { st })),
            "out_execution",
        )
    })
}

fn start_stdin_writer(st: &Arc<ExecState>, mut pipe: boxlite::ExecStdin) {
    let (rx, failed) = {
        let mut s = st.stdin.lock().unwrap_or_else(|p| p.into_inner());
        (s.rx.take(), s.failed.clone())
    };
    let Some(mut rx) = rx else { return };
    let pending = st.stdin_pending.clone();
    st.sh.tokio.spawn(async move {
        while let Some(m) = rx.recv().await {
            let (r, last) = match m {
                StdinMsg::Data(d) => {
                    let r = pipe.write_all(&d).await;
                    pending.fetch_sub(d.len(), Ordering::AcqRel);
                    (r, false)
                }
                StdinMsg::Close => (pipe.close().await.map(drop), true),
            };
            if let Err(e) = r {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Failure::from(e));
                return;
            }
            if last {
                return;
            }
        }
    });
}

/// An execution handle argument that must not be NULL, on a runtime still open.
fn exec_ref<'a>(e: *mut ExecutionHandle) -> Result<&'a Arc<ExecState>, Failure> {
    crate::runtime::derived_ref(e, "execution").map(|h| &h.st)
}

impl crate::runtime::Derived for ExecutionHandle {
    fn shared(&self) -> &Arc<Shared> {
        &self.st.sh
    }
}

fn register_stream(
    execution: *mut CExecutionHandle,
    cb: Option<ChunkFn>,
    user_data: *mut c_void,
    out_error: *mut FFIError,
    which: Which,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let st = exec_ref(execution)?;
        let cb = need(cb)?;
        let mut g = st.lock();
        let name = match which {
            Which::Out => "stdout",
            Which::Err => "stderr",
        };
        if g.sealed || g.exit_claimed {
            return Err(Failure::new(
                BoxliteErrorCode::InvalidState,
                format!("the execution has exited; its {name} can no longer be registered"),
            ));
        }
        let s = match which {
            Which::Out => &mut g.out,
            Which::Err => &mut g.err,
        };
        if s.cb.is_some() {
            return Err(Failure::new(
                BoxliteErrorCode::InvalidState,
                format!("a {name} callback is already registered for this execution"),
            ));
        }
        s.cb = Some((cb, UserData(user_data)));
        st.pump(&mut g, which);
        Ok(())
    })
}

/// Register the stdout callback (once). Chunks are the bytes as written.
///
/// # Safety
/// `execution` is a live execution handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_execution_on_stdout(
    execution: *mut CExecutionHandle,
    cb: CBoxStdoutCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    register_stream(execution, cb, user_data, out_error, Which::Out)
}

/// Register the stderr callback (once).
///
/// # Safety
/// `execution` is a live execution handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_execution_on_stderr(
    execution: *mut CExecutionHandle,
    cb: CBoxStderrCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    register_stream(execution, cb, user_data, out_error, Which::Err)
}

/// Register the exit callback (once): called exactly once, after every chunk of the
/// registered streams.
///
/// # Safety
/// `execution` is a live execution handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_execution_on_exit(
    execution: *mut CExecutionHandle,
    cb: CBoxExitCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let st = exec_ref(execution)?;
        let cb = need(cb)?;
        let mut g = st.lock();
        if g.exit_cb.is_some() {
            return Err(Failure::new(
                BoxliteErrorCode::InvalidState,
                "an exit callback is already registered for this execution",
            ));
        }
        g.exit_cb = Some((cb, UserData(user_data)));
        st.arm_exit(&mut g);
        Ok(())
    })
}

/// Queue `len` bytes for the process's stdin (copied; returns at once). At most 16 MiB
/// may wait for the process to read them: beyond, `ResourceExhausted`. After
/// `boxlite_execution_stdin_close`, `InvalidState`.
///
/// # Safety
/// `execution` is a live execution handle; `data` points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_execution_stdin_write(
    execution: *mut CExecutionHandle,
    data: *const u8,
    len: usize,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let st = exec_ref(execution)?;
        if len == 0 {
            return Ok(());
        }
        if data.is_null() {
            return Err(Failure::invalid(format!("data is NULL but len is {len}")));
        }
        let s = st.stdin.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = s.failed.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(f);
        }
        let Some(tx) = &s.tx else {
            return Err(Failure::new(
                BoxliteErrorCode::InvalidState,
                "stdin was closed",
            ));
        };
        let pending = st.stdin_pending.load(Ordering::Acquire);
        if pending.saturating_add(len) > BOXLITE_STDIN_BUFFER_BYTES {
            return Err(Failure::new(
                BoxliteErrorCode::ResourceExhausted,
                format!(
                    "{pending} bytes of stdin are still waiting for the process; writing {len} more would pass the {BOXLITE_STDIN_BUFFER_BYTES}-byte buffer"
                ),
            ));
        }
        // SAFETY: `data` is not NULL and points to `len` readable bytes (contract above).
        let bytes = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
        st.stdin_pending.fetch_add(len, Ordering::AcqRel);
        if tx.send(StdinMsg::Data(bytes)).is_err() {
            st.stdin_pending.fetch_sub(len, Ordering::AcqRel);
            return Err(Failure::new(
                BoxliteErrorCode::InvalidState,
                "the execution's stdin is gone",
            ));
        }
        Ok(())
    })
}

/// Close stdin (EOF for the process) once what was written has been delivered.
/// Idempotent.
///
/// # Safety
/// `execution` is a live execution handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_execution_stdin_close(
    execution: *mut CExecutionHandle,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let st = exec_ref(execution)?;
        let mut s = st.stdin.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = s.tx.take() {
            let _ = tx.send(StdinMsg::Close);
        }
        Ok(())
    })
}

/// The started execution, once known.
async fn started(st: &ExecState) -> Result<boxlite::Execution, Failure> {
    let mut rx = st.started.subscribe();
    let r = rx.wait_for(Option::is_some).await;
    match r.as_deref() {
        Ok(Some(r)) => r.clone(),
        _ => Err(Failure::closed()),
    }
}

/// Queue a wait for the process's exit: `cb(code, NULL, ud)`, or
/// `cb(BOXLITE_EXIT_FAILED, error, ud)` when the command did not start or the box went
/// away. May be called any number of times.
///
/// # Safety
/// `execution` is a live execution handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_execution_wait(
    execution: *mut CExecutionHandle,
    cb: CExecutionWaitCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let st = exec_ref(execution)?.clone();
        let cb = need(cb)?;
        let ud = UserData(user_data);
        let sh = st.sh.clone();
        let work = async move {
            let ex = started(&st).await?;
            st.wait_code(&ex).await
        };
        sh.submit(work, move |r| {
            Box::new(move || {
                let ud = ud;
                match r {
                    // SAFETY: the caller's non-NULL callback.
                    Ok(code) => unsafe { cb(code, std::ptr::null_mut(), ud.0) },
                    // SAFETY: as above; the error is borrowed for the call.
                    Err(f) => f.lend(|e| unsafe { cb(BOXLITE_EXIT_FAILED, e, ud.0) }),
                }
            })
        });
        Ok(())
    })
}

/// Queue a SIGKILL of the process and its process group.
///
/// # Safety
/// `execution` is a live execution handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_execution_kill(
    execution: *mut CExecutionHandle,
    cb: CExecutionKillCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let st = exec_ref(execution)?.clone();
        let cb = need(cb)?;
        let sh = st.sh.clone();
        let work = async move { Ok(started(&st).await?.kill().await?) };
        submit_unit(&sh, work, cb, UserData(user_data));
        Ok(())
    })
}

/// Queue a signal (1-64) to the process.
///
/// # Safety
/// `execution` is a live execution handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_execution_signal(
    execution: *mut CExecutionHandle,
    sig: c_int,
    cb: CExecutionSignalCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let st = exec_ref(execution)?.clone();
        let cb = need(cb)?;
        if !(1..=64).contains(&sig) {
            return Err(Failure::invalid(format!(
                "signal {sig} is not valid; give 1-64"
            )));
        }
        let sh = st.sh.clone();
        let work = async move { Ok(started(&st).await?.signal(sig).await?) };
        submit_unit(&sh, work, cb, UserData(user_data));
        Ok(())
    })
}

/// Queue a resize of the execution's terminal (rows and columns 1-65535).
///
/// # Safety
/// `execution` is a live execution handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_execution_tty_resize(
    execution: *mut CExecutionHandle,
    rows: c_int,
    cols: c_int,
    cb: CExecutionResizeCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let st = exec_ref(execution)?.clone();
        let cb = need(cb)?;
        let dim = |n: c_int, what: &str| {
            u16::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Failure::invalid(format!("{what} is {n}; give 1-65535")))
        };
        let (r, c) = (dim(rows, "rows")?, dim(cols, "cols")?);
        let sh = st.sh.clone();
        let work = async move { Ok(started(&st).await?.resize_tty(r, c).await?) };
        submit_unit(&sh, work, cb, UserData(user_data));
        Ok(())
    })
}

/// Free an execution. A process not seen to exit is killed (SIGKILL, its group too),
/// even if a wait failed. No chunk callback runs after this call returns, except for
/// chunks already queued; if an exit callback is registered and its event was not yet
/// queued, it still comes, once, with `BOXLITE_EXIT_FORCE_CLOSED`. NULL is a no-op.
///
/// # Safety
/// `execution` is NULL or a handle from `boxlite_box_exec`, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_execution_free(execution: *mut CExecutionHandle) {
    no_panic((), || {
        if execution.is_null() {
            return;
        }
        // SAFETY: made by `Box::into_raw` in `boxlite_box_exec`, given back once.
        let h = unsafe { Box::from_raw(execution) };
        let st = h.st;
        let (synth, tasks, exit_task) = {
            let mut g = st.lock();
            g.freed = true;
            let synth = g.exit_cb.filter(|_| !g.exit_claimed);
            if synth.is_some() {
                g.exit_claimed = true;
            }
            let tasks: Vec<JoinHandle<()>> = [g.out.task.take(), g.err.task.take()]
                .into_iter()
                .flatten()
                .collect();
            (synth, tasks, g.exit_task.take())
        };
        // stdin: what was written is still delivered, then EOF.
        if let Some(tx) = st.stdin.lock().unwrap_or_else(|p| p.into_inner()).tx.take() {
            let _ = tx.send(StdinMsg::Close);
        }
        // Once the runtime is freed its queue is closed and its workers are gone: nothing
        // can be delivered. After a shutdown alone both still run, and the exit owed to a
        // registered callback must still come.
        if st.sh.queue.is_closed() {
            for t in tasks {
                t.abort();
            }
            return;
        }
        let task_st = st.clone();
        let cleanup = st.sh.tokio.spawn(async move {
            let st = task_st;
            for t in tasks {
                t.abort();
                let _ = t.await;
            }
            if synth.is_some()
                && let Some(t) = exit_task
            {
                // It had not claimed the exit (we did), so it will post nothing.
                t.abort();
                let _ = t.await;
            }
            if let Ok(ex) = started(&st).await
                && !st.exited.load(Ordering::Acquire)
            {
                let _ = ex.kill().await;
            }
            if let Some((cb, ud)) = synth {
                let _ = st
                    .sh
                    .queue
                    .post(exit_event(cb, ud, BOXLITE_EXIT_FORCE_CLOSED))
                    .await;
            }
        });
        st.sh.keep_cleanup(cleanup);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_tell_a_code_from_a_signal() {
        use boxlite::ExitStatus as S;
        assert_eq!(exit_code(S::Code(0)), 0);
        assert_eq!(exit_code(S::Code(3)), 3);
        assert_eq!(
            exit_code(S::Signal {
                signal: 9,
                core_dumped: false
            }),
            -9
        );
        assert_eq!(exit_code(S::TimedOut), BOXLITE_EXIT_TIMED_OUT);
        assert_eq!(exit_code(S::OutOfMemory), BOXLITE_EXIT_OUT_OF_MEMORY);
        for special in [
            BOXLITE_EXIT_FAILED,
            BOXLITE_EXIT_FORCE_CLOSED,
            BOXLITE_EXIT_TIMED_OUT,
            BOXLITE_EXIT_OUT_OF_MEMORY,
        ] {
            assert!(special < -64, "{special} would read as a signal");
        }
    }

    #[test]
    fn a_bad_command_descriptor_is_refused_naming_the_field() {
        let prog = c"echo";
        let bad_dir = c"relative/dir";
        let mut c = BoxliteCommand {
            command: std::ptr::null(),
            args: std::ptr::null(),
            argc: 0,
            env_pairs: std::ptr::null(),
            env_count: 0,
            workdir: std::ptr::null(),
            user: std::ptr::null(),
            timeout_secs: 0.0,
            tty: 0,
        };
        let e = command_of(&c).unwrap_err();
        assert_eq!(e.code, BoxliteErrorCode::InvalidArgument);
        assert!(e.message.contains("command"), "{}", e.message);
        c.command = prog.as_ptr();
        c.argc = 2;
        let e = command_of(&c).unwrap_err();
        assert!(e.message.contains("args is NULL"), "{}", e.message);
        c.argc = -1;
        assert!(
            command_of(&c)
                .unwrap_err()
                .message
                .contains("count of args")
        );
        c.argc = 0;
        c.timeout_secs = f64::NAN;
        assert!(command_of(&c).unwrap_err().message.contains("timeout_secs"));
        c.timeout_secs = 0.0;
        c.workdir = bad_dir.as_ptr();
        assert_eq!(
            command_of(&c).unwrap_err().code,
            BoxliteErrorCode::InvalidArgument
        );
        c.workdir = std::ptr::null();
        assert!(command_of(&c).is_ok());
    }
}
