//! Advisory file locks (`flock`) that coordinate processes sharing one `BOXLITE_HOME`.
//!
//! A box operation that takes seconds (boot, shutdown, removal) holds its box's lock for
//! the whole operation; SQLite alone only serializes single statements. The lock dies with
//! its process, so a crashed CLI never leaves a box locked, and "can I take the lock
//! without waiting" is how recovery tells an abandoned operation from one in progress.
//!
//! Lock files may be unlinked by whoever removes a box. A waiter that wakes up holding a
//! lock on an unlinked file would share "the" lock with a newcomer that created a fresh
//! file at the same path, so after locking, the file is checked to still be the one at the
//! path, and the acquisition retried if not.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

/// Shared locks for operations that only need the box to stay as it is (exec), exclusive
/// ones for operations that change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// The descriptors of the locks this process holds (-1: a free slot), so that a child
/// forked to start a helper can close its copies at once (`util::spawn`): until its
/// `execve` it would otherwise keep the locks of a spawner that has died, and the next
/// command would take that dying child for a live holder. Registered after the
/// descriptor is open and removed before it is closed, so a slot never names a
/// descriptor that is not a lock. Past the last slot a lock is simply not listed.
static HELD: [AtomicI32; 256] = [const { AtomicI32::new(-1) }; 256];

fn register(fd: i32) {
    for slot in &HELD {
        if slot
            .compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
}

fn unregister(fd: i32) {
    for slot in &HELD {
        if slot
            .compare_exchange(fd, -1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
}

/// In a forked child: close its copies of the parent's lock descriptors, except those
/// in `keep`. The parent still holds the locks; they are released when it closes them
/// or dies. Async-signal-safe (atomic loads and `close`).
pub(crate) fn close_held_locks_in_child(keep: &[i32]) {
    for slot in &HELD {
        let fd = slot.load(Ordering::SeqCst);
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: close on a descriptor number of this (forked) process.
            unsafe { libc::close(fd) };
        }
    }
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

fn flock(file: &File, mode: LockMode, wait: bool) -> io::Result<bool> {
    let mut op = match mode {
        LockMode::Shared => libc::LOCK_SH,
        LockMode::Exclusive => libc::LOCK_EX,
    };
    if !wait {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if !wait => return Ok(false),
            _ => return Err(e),
        }
    }
}

impl FileLock {
    fn attempt(path: &Path, mode: LockMode, wait: bool) -> io::Result<Option<FileLock>> {
        loop {
            // std opens with O_CLOEXEC, so helpers spawned while the lock is held (QEMU)
            // never inherit it.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            if !flock(&file, mode, wait)? {
                return Ok(None);
            }
            let held = file.metadata()?;
            match std::fs::metadata(path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    register(file.as_raw_fd());
                    return Ok(Some(FileLock {
                        file,
                        path: path.to_path_buf(),
                    }));
                }
                // Unlinked (or replaced) while we waited: lock the current file instead.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Take the lock, blocking this thread until it is free.
    #[cfg(test)]
    pub fn acquire_blocking(path: &Path, mode: LockMode) -> io::Result<FileLock> {
        Self::attempt(path, mode, true).map(|l| l.expect("a waiting flock always returns a lock"))
    }

    /// Take the lock without blocking the async runtime. A lock held elsewhere (a box
    /// booting, for as long as two minutes under TCG) is retried with a growing pause
    /// of up to 25 ms, on the runtime's timer: waiters never occupy blocking threads, so
    /// any number of them cannot starve the pool that the holder's own SQLite calls need.
    pub async fn acquire(path: &Path, mode: LockMode) -> io::Result<FileLock> {
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            if let Some(l) = Self::attempt(path, mode, false)? {
                return Ok(l);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(25));
        }
    }

    /// Take the lock only if nobody holds it.
    pub fn try_acquire(path: &Path, mode: LockMode) -> io::Result<Option<FileLock>> {
        Self::attempt(path, mode, false)
    }

    /// Unlink the lock file while still holding the lock, for a box that is gone.
    pub fn remove_file(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        unregister(self.file.as_raw_fd());
        // Closing the descriptor releases the lock; unlock explicitly anyway so a clone of
        // the descriptor elsewhere cannot keep it.
        // SAFETY: flock on a descriptor we own.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path() -> PathBuf {
        std::env::temp_dir().join(format!("bx-lock-{:016x}", rand::random::<u64>()))
    }

    /// Wait until some process waits for a lock on `path`'s inode, as `/proc/locks`
    /// shows it: a `->` line for that inode.
    fn wait_until_blocked_on(path: &Path) {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(path).unwrap().ino();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
            let waiting = locks.lines().any(|l| {
                l.contains("->")
                    && l.split_whitespace()
                        .any(|f| f.ends_with(&format!(":{ino}")))
            });
            if waiting {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the waiter never blocked"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn exclusive_lock_excludes_a_second_holder_until_dropped() {
        let p = temp_path();
        let first = FileLock::try_acquire(&p, LockMode::Exclusive).unwrap();
        assert!(first.is_some());

        let second = FileLock::try_acquire(&p, LockMode::Exclusive).unwrap();
        let shared = FileLock::try_acquire(&p, LockMode::Shared).unwrap();
        drop(first);
        let third = FileLock::try_acquire(&p, LockMode::Exclusive).unwrap();

        std::fs::remove_file(&p).unwrap();
        assert!(second.is_none());
        assert!(shared.is_none());
        assert!(third.is_some());
    }

    #[test]
    fn shared_locks_coexist_and_block_exclusive() {
        let p = temp_path();
        let a = FileLock::try_acquire(&p, LockMode::Shared).unwrap();
        let b = FileLock::try_acquire(&p, LockMode::Shared).unwrap();
        let x = FileLock::try_acquire(&p, LockMode::Exclusive).unwrap();

        std::fs::remove_file(&p).unwrap();
        assert!(a.is_some() && b.is_some());
        assert!(x.is_none());
    }

    #[test]
    fn waiter_on_an_unlinked_lock_file_takes_the_new_file() {
        let p = temp_path();
        let holder = FileLock::try_acquire(&p, LockMode::Exclusive)
            .unwrap()
            .unwrap();
        let path = p.clone();
        let (started, waiting) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            started.send(()).unwrap();
            FileLock::acquire_blocking(&path, LockMode::Exclusive)
        });
        // The waiter is blocked in flock once its thread shows the lock file open and
        // the kernel lists it as waiting (a `->` entry in /proc/locks).
        waiting.recv().unwrap();
        wait_until_blocked_on(&p);
        holder.remove_file();
        drop(holder);
        let won = waiter.join().unwrap().unwrap();

        let newcomer = FileLock::try_acquire(&p, LockMode::Exclusive).unwrap();
        std::fs::remove_file(&p).unwrap();
        // The waiter holds the file now at the path, so a newcomer is excluded.
        assert!(newcomer.is_none());
        drop(won);
    }
}
