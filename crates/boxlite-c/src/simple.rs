//! The synchronous convenience API (`boxlite_simple_*`): one box, started at once,
//! commands run to completion. It needs no drain: each call blocks its caller (never a
//! runtime worker) until done. The box is removed by `boxlite_simple_free`.

use std::os::raw::{c_char, c_int};
use std::time::Duration;

use crate::error::{BoxliteErrorCode, FFIError, Failure};
use crate::util::{c_string, entry, free_c_string, no_panic, put, text, texts};

/// Opaque handle for the simple API: a runtime of its own and one running box.
#[derive(Debug)]
pub struct BoxRunner {
    tokio: Option<tokio::runtime::Runtime>,
    lb: Option<boxlite::LiteBox>,
}

pub type CBoxliteSimple = BoxRunner;

/// A finished command: its exit code (as for `CBoxExitCb`), and its output as text
/// (invalid UTF-8 replaced with U+FFFD). Free it with `boxlite_result_free`.
#[repr(C)]
#[derive(Debug)]
pub struct ExecResult {
    pub exit_code: c_int,
    pub stdout_text: *mut c_char,
    pub stderr_text: *mut c_char,
}

pub type CBoxliteExecResult = ExecResult;

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure::new(BoxliteErrorCode::Internal, e.to_string())
}

/// Create and start a box of `image` in the default home (`$BOXLITE_HOME`, else
/// `~/.boxlite`); `cpus` and `memory_mib` of 0 take the defaults. Blocks until the box
/// runs. Free it with `boxlite_simple_free`.
///
/// # Safety
/// `image` is a NUL-terminated string; `out_box` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_simple_new(
    image: *const c_char,
    cpus: c_int,
    memory_mib: c_int,
    out_box: *mut *mut CBoxliteSimple,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        put(out_box, std::ptr::null_mut(), "out_box")?;
        let image = text(image, "image")?;
        let mut opts = boxlite::BoxOptions::new(image);
        match u32::try_from(cpus) {
            Ok(0) => {}
            Ok(n) => opts.cpus = n,
            Err(_) => {
                return Err(Failure::invalid(format!(
                    "cpus is {cpus}; give 0 (default) or more"
                )));
            }
        }
        match u32::try_from(memory_mib) {
            Ok(0) => {}
            Ok(n) => opts.memory_mib = n,
            Err(_) => {
                return Err(Failure::invalid(format!(
                    "memory_mib is {memory_mib}; give 0 (default) or more"
                )));
            }
        }
        opts.auto_remove = true;
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("boxlite-simple")
            .enable_all()
            .build()
            .map_err(internal)?;
        let lib = tokio.block_on(boxlite::Boxlite::open(boxlite::RuntimeOptions::default()))?;
        let lb = tokio.block_on(async {
            let lb = lib.create(opts).await?;
            if let Err(e) = lb.start().await {
                let _ = lb.remove(true).await;
                return Err(e);
            }
            Ok::<_, boxlite::Error>(lb)
        })?;
        let r = Box::new(BoxRunner {
            tokio: Some(tokio),
            lb: Some(lb),
        });
        put(out_box, Box::into_raw(r), "out_box")
    })
}

/// Run `command` with `argc` arguments in the box and wait for it; `*out_result` gets
/// its exit code and output. Blocks.
///
/// # Safety
/// `box_runner` is a live handle; `command` is NUL-terminated; `args` points to `argc`
/// NUL-terminated strings; `out_result` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_simple_run(
    box_runner: *mut CBoxliteSimple,
    command: *const c_char,
    args: *const *const c_char,
    argc: c_int,
    out_result: *mut *mut CBoxliteExecResult,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        put(out_result, std::ptr::null_mut(), "out_result")?;
        if box_runner.is_null() {
            return Err(Failure::null("box_runner"));
        }
        // SAFETY: not NULL; a live handle from `boxlite_simple_new`.
        let r = unsafe { &*box_runner };
        let program = text(command, "command")?;
        let args = texts(args, argc, "args")?;
        let (Some(tokio), Some(lb)) = (&r.tokio, &r.lb) else {
            return Err(Failure::closed());
        };
        let cmd = boxlite::BoxCommand::new(program).args(args);
        cmd.validate().map_err(Failure::from)?;
        let (code, out, err) = tokio.block_on(async {
            let mut ex = lb.exec(cmd).await?;
            let mut o = ex.take_stdout();
            let mut e = ex.take_stderr();
            let read = |s: Option<boxlite::ExecOutput>| async move {
                match s {
                    Some(mut s) => s.read_to_end().await,
                    None => Ok(Vec::new()),
                }
            };
            let (out, err) = tokio::join!(read(o.take()), read(e.take()));
            let status = ex.wait().await?;
            Ok::<_, Failure>((crate::exec::exit_code(status), out?, err?))
        })?;
        let res = Box::new(ExecResult {
            exit_code: code,
            stdout_text: c_string(&String::from_utf8_lossy(&out)),
            stderr_text: c_string(&String::from_utf8_lossy(&err)),
        });
        put(out_result, Box::into_raw(res), "out_result")
    })
}

/// Stop and remove the box, and free the handle. Blocks. NULL is a no-op.
///
/// # Safety
/// `box_runner` is NULL or a handle from `boxlite_simple_new`, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_simple_free(box_runner: *mut CBoxliteSimple) {
    no_panic((), || {
        if box_runner.is_null() {
            return;
        }
        // SAFETY: made by `Box::into_raw` in `boxlite_simple_new`, given back once.
        let mut r = unsafe { Box::from_raw(box_runner) };
        if let (Some(tokio), Some(lb)) = (r.tokio.take(), r.lb.take()) {
            tokio.block_on(async {
                let _ = lb.stop(Duration::from_secs(5)).await;
                let _ = lb.remove(true).await;
            });
            drop(r);
            tokio.shutdown_timeout(Duration::from_secs(5));
        }
    })
}

/// Free a result of `boxlite_simple_run`. NULL is a no-op.
///
/// # Safety
/// `result` is NULL or a result from `boxlite_simple_run`, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_result_free(result: *mut CBoxliteExecResult) {
    no_panic((), || {
        if !result.is_null() {
            // SAFETY: made by `Box::into_raw` in `boxlite_simple_run`, given back once.
            let r = unsafe { Box::from_raw(result) };
            free_c_string(r.stdout_text);
            free_c_string(r.stderr_text);
        }
    })
}
