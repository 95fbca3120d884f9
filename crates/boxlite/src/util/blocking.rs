//! The one place where the library blocks a thread on purpose.
//!
//! The host library runs on tokio, and a REST server or an SDK may drive many boxes from
//! one runtime: a runtime worker that waits on SQLite, a child process, a sleep or a
//! gigabyte hash stalls every other request on it. So slow synchronous work goes through
//! [`run`] (a `spawn_blocking` thread), and the few blocking primitives the library needs
//! (running a tool to completion, sleeping) live here. `clippy.toml` forbids them
//! everywhere else in the crate.

use std::io;
use std::process::{Command, Output};

/// Run `f` on tokio's blocking pool and wait for it without blocking the caller's worker.
/// A panic in `f` is resumed in the caller, as if `f` had run inline.
pub async fn run<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down under us (only then is a blocking task cancelled):
        // nothing is left to return to, and this task is dropped with the runtime. Waiting
        // for that, rather than panicking, keeps an embedding host's stderr quiet when it
        // frees a runtime with work in flight (the C ABI, the Go SDK's Close).
        Err(_) => std::future::pending().await,
    }
}

/// Run a command to completion and collect its output. Blocks the calling thread: call it
/// from [`run`] or from code that is itself off the async runtime.
#[allow(clippy::disallowed_methods)]
pub fn output(cmd: &mut Command) -> io::Result<Output> {
    cmd.output()
}

/// Run a tool whose stdin `feed` writes, on the calling thread. Returns what `feed`
/// returned, the tool's exit status and the start of its stderr (64 KiB at most). When
/// `feed` fails the tool is killed: a partial input is never taken as whole. Blocks the
/// calling thread, as [`output`] does.
#[allow(clippy::disallowed_methods)]
pub fn feed<T, E>(
    cmd: &mut Command,
    feed: impl FnOnce(std::process::ChildStdin) -> Result<T, E>,
) -> io::Result<(Result<T, E>, std::process::ExitStatus, String)> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = e.by_ref().take(64 << 10).read_to_string(&mut s);
            let _ = io::copy(&mut e, &mut io::sink());
            s
        })
    });
    let fed = match child.stdin.take() {
        Some(stdin) => {
            // A 1 MiB pipe rather than 64 KiB: far fewer wakeups between the two sides
            // of a long stream (1.5 s to 1.2 s feeding mke2fs 180 MB). 1 MiB is the
            // default limit for unprivileged processes; on failure the pipe stays as is.
            // SAFETY: fcntl on a descriptor this function owns.
            unsafe {
                libc::fcntl(
                    std::os::fd::AsRawFd::as_raw_fd(&stdin),
                    libc::F_SETPIPE_SZ,
                    1 << 20,
                );
            }
            feed(stdin)
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("the tool has no stdin"));
        }
    };
    if fed.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let text = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    Ok((fed, status, text))
}

/// Sleep the calling thread: for blocking code that must wait for another process (a
/// database another process is creating) and for tests that poll for an event.
#[allow(clippy::disallowed_methods)]
pub fn sleep(d: std::time::Duration) {
    std::thread::sleep(d);
}

/// Start a command, blocking until it has executed (or failed to). `std` waits for the
/// child's `execve`, so a `pre_exec` hook that waits (the spawn gate in
/// [`super::spawn`]) makes this wait too: call it from [`run`].
#[allow(clippy::disallowed_methods)]
pub fn spawn_tokio(cmd: &mut tokio::process::Command) -> io::Result<tokio::process::Child> {
    cmd.spawn()
}
