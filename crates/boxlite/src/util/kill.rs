//! The one way the library ends processes: stopping a box, a failed start, cleaning up
//! after an image build, and reconciliation all come here.
//!
//! 1. The recorded processes and all their descendants are found first (descendants
//!    before any signal, so none is reparented out of sight), and a pidfd is opened for
//!    each and checked against its recorded start time. From then on the pidfd names
//!    that very process: a pid recycled in the meantime is never signalled.
//! 2. Each gets the signal through its pidfd (`pidfd_send_signal`).
//! 3. Then we wait on the pidfds (they turn readable when the process exits), up to the
//!    grace period; whatever is left gets SIGKILL and a last wait.
//!
//! Waiting blocks the thread (`poll`): async callers use [`terminate`], which runs it on
//! the blocking pool. Where the kernel has no pidfds (before 5.3, or a seccomp filter
//! that refuses them), the same steps use `kill(2)` right after checking the start time
//! and poll `/proc` for the exit: a narrow pid-reuse window instead of none.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::process::{ProcessId, descendants};

/// How long processes get after SIGKILL before we stop waiting for them.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// A process checked to be the process `id` names, pinned by a pidfd where the kernel
/// gives one.
struct Pinned {
    id: ProcessId,
    fd: Option<OwnedFd>,
}

/// Pin `id`, only if it is still the very process recorded. `None` when it is gone (or
/// its pid now belongs to another process).
fn pin(id: ProcessId) -> Option<Pinned> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, id.pid, 0) };
    let fd = match i32::try_from(r).ok().filter(|fd| *fd >= 0) {
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        Some(fd) => Some(unsafe { OwnedFd::from_raw_fd(fd) }),
        None if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) => {
            return None;
        }
        // No pidfds here: fall back on the start-time check alone.
        None => None,
    };
    // The pid could have been recycled before the pidfd was opened; now that the pidfd
    // holds the process, its start time tells whether it is ours.
    id.is_alive().then_some(Pinned { id, fd })
}

fn send(p: &Pinned, sig: i32) {
    let r = match &p.fd {
        // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo.
        Some(fd) => unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        },
        None if p.id.is_alive() => {
            // SAFETY: kill has no memory-safety preconditions.
            i64::from(unsafe { libc::kill(p.id.pid, sig) })
        }
        None => return,
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            tracing::debug!(pid = p.id.pid, sig, error = %e, "signalling a process");
        }
    }
}

/// Whether the pinned process has exited, every thread of it: its pidfd is readable
/// then (a main thread that became a zombie while others still run does not count).
fn exited(p: &Pinned) -> bool {
    match &p.fd {
        Some(fd) => {
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call; no wait.
            unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
        }
        None => !p.id.is_alive(),
    }
}

/// Wait until every pinned process has exited or `timeout` passes; returns those left.
fn wait_all(mut left: Vec<Pinned>, timeout: Duration) -> Vec<Pinned> {
    let deadline = Instant::now() + timeout;
    loop {
        left.retain(|p| !exited(p));
        let now = Instant::now();
        if left.is_empty() || now >= deadline {
            return left;
        }
        // Readable pidfds wake us at once; without them (or for a process whose parent
        // reaps it just as we poll) the /proc check above settles it, at least every
        // 50 ms.
        let mut fds: Vec<libc::pollfd> = left
            .iter()
            .filter_map(|p| p.fd.as_ref())
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = (deadline - now).as_millis().clamp(1, 50);
        let ms = i32::try_from(ms).unwrap_or(50);
        let n = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `fds` is a valid array of `n` pollfd structs (possibly none) that
        // outlives the call.
        unsafe { libc::poll(fds.as_mut_ptr(), n, ms) };
    }
}

/// Pin the processes and every descendant of them that is still running.
fn pin_tree(procs: &[ProcessId]) -> Vec<Pinned> {
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    // Descendants first: once a parent dies, its children are reparented and can no
    // longer be found from it.
    let mut all = descendants(procs);
    all.extend_from_slice(procs);
    let mut seen = Vec::new();
    all.into_iter()
        .filter(|p| p.pid != me)
        .filter(|p| {
            let new = !seen.contains(p);
            seen.push(*p);
            new
        })
        .filter_map(pin)
        .collect()
}

/// Send `sig` to the processes and their descendants, without waiting. For `Drop`
/// paths, which cannot wait; reconciliation finishes the job later.
pub fn signal_tree(procs: &[ProcessId], sig: i32) {
    for p in pin_tree(procs) {
        send(&p, sig);
    }
}

/// End the processes and their descendants: SIGTERM, up to `grace` for them to exit,
/// then SIGKILL (a zero `grace` sends SIGKILL at once). Blocks the thread until they are
/// gone. Processes already gone, and the calling process itself, are skipped. Returns
/// those still running five seconds after SIGKILL (a process stuck in the kernel), so
/// the caller keeps them recorded.
pub fn terminate_blocking(procs: &[ProcessId], grace: Duration) -> Vec<ProcessId> {
    let pinned = pin_tree(procs);
    if pinned.is_empty() {
        return Vec::new();
    }
    let left = if grace.is_zero() {
        pinned
    } else {
        for p in &pinned {
            send(p, libc::SIGTERM);
        }
        wait_all(pinned, grace)
    };
    for p in &left {
        send(p, libc::SIGKILL);
    }
    let survivors: Vec<ProcessId> = wait_all(left, KILL_WAIT).iter().map(|p| p.id).collect();
    for p in &survivors {
        tracing::warn!(pid = p.pid, "a process did not exit after SIGKILL");
    }
    survivors
}

/// [`terminate_blocking`] on the blocking pool.
pub async fn terminate(procs: Vec<ProcessId>, grace: Duration) -> Vec<ProcessId> {
    super::blocking::run(move || terminate_blocking(&procs, grace)).await
}

/// Wait until the process exits, up to `timeout`; false on timeout. Async: waits on the
/// process's pidfd (on the blocking pool, polling, where there is none).
pub async fn wait_exit(id: ProcessId, timeout: Duration) -> bool {
    let Some(p) = pin(id) else {
        return true;
    };
    if let Some(fd) = p.fd {
        // SAFETY: the AsyncFd owns the pidfd for its whole life; nothing else closes or
        // replaces the descriptor.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        if let Ok(afd) = registered {
            return tokio::time::timeout(timeout, afd.readable()).await.is_ok() || !id.is_alive();
        }
    }
    super::blocking::run(move || pin(id).is_none_or(|p| wait_all(vec![p], timeout).is_empty()))
        .await
}

#[cfg(test)]
// The tests drive their own child processes synchronously, off any async runtime.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn spawn_sh(script: &str) -> (std::process::Child, ProcessId) {
        #[allow(clippy::disallowed_methods)]
        let child = std::process::Command::new("sh")
            .args(["-c", script])
            .spawn()
            .unwrap();
        let id = ProcessId::of(i32::try_from(child.id()).unwrap()).unwrap();
        (child, id)
    }

    /// Wait (bounded) until `id` has `n` descendants: the shell has forked them.
    fn wait_for_children(id: ProcessId, n: usize) -> Vec<ProcessId> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let kids = descendants(&[id]);
            if kids.len() >= n || Instant::now() > deadline {
                return kids;
            }
            crate::util::blocking::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn terminate_takes_the_children_of_a_forking_helper_too() {
        let (mut child, sh) = spawn_sh("sleep 300 & sleep 300 & wait");
        let kids = wait_for_children(sh, 2);

        terminate_blocking(&[sh], Duration::ZERO);

        let _ = child.wait();
        assert_eq!(kids.len(), 2);
        assert!(kids.iter().all(|k| !k.is_alive()));
    }

    #[test]
    fn terminate_gives_sigterm_first_and_a_handler_can_finish() {
        let dir = std::env::temp_dir().join(format!("bx-kill-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("termed");
        let (mut child, sh) = spawn_sh(&format!(
            "trap 'echo bye > {}; exit 0' TERM; echo ready > {}/ready; while :; do sleep 0.05; done",
            marker.display(),
            dir.display()
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join("ready").exists() && Instant::now() < deadline {
            crate::util::blocking::sleep(Duration::from_millis(5));
        }

        terminate_blocking(&[sh], Duration::from_secs(5));

        let _ = child.wait();
        let said = std::fs::read_to_string(&marker).unwrap_or_default();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(said, "bye\n");
        assert!(!sh.is_alive());
    }

    #[test]
    fn a_recycled_pid_is_never_signalled() {
        let (mut child, me) = spawn_sh("sleep 300");
        let stale = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };

        terminate_blocking(&[stale], Duration::ZERO);
        let still = me.is_alive();
        terminate_blocking(&[me], Duration::ZERO);

        let _ = child.wait();
        assert!(still, "a process with another start time was killed");
        assert!(!me.is_alive());
    }
}
