//! Holding the workload still around a memory snapshot (`Quiesce`, then `Resume`).
//!
//! Every process `Exec` starts joins one cgroup, [`WORKLOAD`], in a cgroup2 hierarchy
//! the agent mounts in its own namespace ([`CGROUP_MOUNT`], out of the container's
//! sight), so that its descendants, double-forked daemons included, stay in it. The
//! child joins in its `pre_exec` hook, before `chroot` and before any user code, by
//! writing `0` to the cgroup's `cgroup.procs` through a descriptor the agent opened
//! once (close-on-exec, so the program never inherits it). The agent itself, with its
//! reaping and output threads, stays in the root cgroup.
//!
//! Freezing is the cgroup v2 freezer: `1` in `cgroup.freeze`, then waiting for
//! `frozen 1` in `cgroup.events`, which the kernel reports once every task has stopped
//! (Linux 5.2 and later). A kernel without it, or a cgroup2 that cannot be mounted,
//! leaves the agent without a [`Workload`]: Quiesce then answers that nothing was frozen.
//!
//! New executions are held by the agent rather than frozen at birth: a child that joined
//! a frozen cgroup would stop before `execve`, and the spawning thread (which waits for
//! the `execve`, holding the process table) with it. So an Exec waits, before it forks,
//! while the workload is held, and [`Quiescer::quiesce`] waits for spawns in progress
//! (each holds an [`Admission`]) before it freezes: no process is ever between fork and
//! `execve` while the cgroup freezes.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedRwLockReadGuard, RwLock, watch};

use crate::sys;

/// Where the agent mounts cgroup2, in its own namespace (the container cannot see it).
pub const CGROUP_MOUNT: &str = "/run/boxlite-cgroup";
/// The cgroup of every process Exec starts, under [`CGROUP_MOUNT`].
pub const WORKLOAD: &str = "workload";
/// How long Quiesce waits for the kernel to report the workload frozen.
const FREEZE_WAIT: Duration = Duration::from_secs(2);
/// How often it looks.
const FREEZE_POLL: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("mounting cgroup2 at {0}")]
    Mount(PathBuf, #[source] io::Error),
    #[error("creating the cgroup {0}")]
    Create(PathBuf, #[source] io::Error),
    #[error("{0} has no cgroup.freeze (the cgroup v2 freezer needs Linux 5.2 or later)")]
    NoFreezer(PathBuf),
    #[error("opening {0}")]
    Open(PathBuf, #[source] io::Error),
    #[error("writing {0}")]
    Write(PathBuf, #[source] io::Error),
    #[error("reading {0}")]
    Read(PathBuf, #[source] io::Error),
    #[error("{0} has no \"frozen\" line")]
    NoFrozenLine(PathBuf),
    #[error("the workload was not frozen within {0:?}, so it was thawed again")]
    NotFrozen(Duration),
}

/// The workload's cgroup.
#[derive(Debug)]
pub struct Workload {
    dir: PathBuf,
    /// `cgroup.procs`, open for writing; children write `0` to it to join.
    procs: OwnedFd,
}

impl Workload {
    /// Mount cgroup2 at `mount` (created if missing) and create [`WORKLOAD`] in it.
    pub fn setup(mount: &Path) -> Result<Self, FreezeError> {
        fs::create_dir_all(mount).map_err(|e| FreezeError::Mount(mount.into(), e))?;
        sys::mount(
            "cgroup2",
            mount,
            "cgroup2",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        )
        .map_err(|e| FreezeError::Mount(mount.into(), e))?;
        let dir = mount.join(WORKLOAD);
        match fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(FreezeError::Create(dir, e));
            }
            _ => {}
        }
        Self::open(dir)
    }

    /// An existing cgroup directory (or, in tests, a directory of plain files that look
    /// like one).
    pub fn open(dir: PathBuf) -> Result<Self, FreezeError> {
        if !dir.join("cgroup.freeze").exists() {
            return Err(FreezeError::NoFreezer(dir));
        }
        let path = dir.join("cgroup.procs");
        // std opens with O_CLOEXEC: the descriptor is there in `pre_exec`, gone after.
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| FreezeError::Open(path, e))?;
        Ok(Workload {
            dir,
            procs: procs.into(),
        })
    }

    /// The descriptor a child writes `0` to in order to join (see [`join`]).
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), FreezeError> {
        let path = self.dir.join("cgroup.freeze");
        fs::write(&path, if frozen { "1" } else { "0" }).map_err(|e| FreezeError::Write(path, e))
    }

    fn is_frozen(&self) -> Result<bool, FreezeError> {
        let path = self.dir.join("cgroup.events");
        let events = fs::read_to_string(&path).map_err(|e| FreezeError::Read(path.clone(), e))?;
        parse_frozen(&events).ok_or(FreezeError::NoFrozenLine(path))
    }
}

/// Move the calling process into the cgroup whose `cgroup.procs` is open as `procs_fd`.
/// Async-signal-safe: for a child's `pre_exec` hook.
pub fn join(procs_fd: RawFd) -> io::Result<()> {
    loop {
        // SAFETY: the buffer is a valid one-byte static; the fd is the caller's.
        let n = unsafe { libc::write(procs_fd, b"0".as_ptr().cast(), 1) };
        if n == 1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if n < 0 && e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(e);
    }
}

/// The `frozen` value of a `cgroup.events` file (`populated 1\nfrozen 0\n`).
pub fn parse_frozen(events: &str) -> Option<bool> {
    events.lines().find_map(|l| match l.split_once(' ')? {
        ("frozen", "1") => Some(true),
        ("frozen", "0") => Some(false),
        _ => None,
    })
}

/// An Exec's permission to spawn: Quiesce waits until every one is dropped.
pub type Admission = OwnedRwLockReadGuard<()>;

/// Whether the workload is held, and the freezer when there is one.
#[derive(Debug)]
pub struct Quiescer {
    workload: Option<Arc<Workload>>,
    /// True from Quiesce until Resume: Exec waits while it is.
    held: watch::Sender<bool>,
    /// Shared by spawns in progress, exclusive while the state changes.
    gate: Arc<RwLock<()>>,
    freeze_wait: Duration,
}

impl Quiescer {
    pub fn new(workload: Option<Arc<Workload>>) -> Self {
        Quiescer {
            workload,
            held: watch::Sender::new(false),
            gate: Arc::new(RwLock::new(())),
            freeze_wait: FREEZE_WAIT,
        }
    }

    /// Wait until the workload is not held, then return the permission to spawn one
    /// process; Quiesce waits for it to be dropped.
    pub async fn admit(&self) -> Admission {
        let mut held = self.held.subscribe();
        loop {
            // The sender lives in self, so this cannot fail.
            let _ = held.wait_for(|h| !h).await;
            let admission = self.gate.clone().read_owned().await;
            if !*self.held.borrow() {
                return admission;
            }
        }
    }

    /// Hold new executions and freeze the running ones. Returns whether there was a
    /// freezer. If the kernel does not report the workload frozen in time, it is thawed
    /// and released again: a failed Quiesce leaves things as they were.
    pub async fn quiesce(&self) -> Result<bool, FreezeError> {
        let _gate = self.gate.write().await;
        self.held.send_replace(true);
        let Some(w) = &self.workload else {
            return Ok(false);
        };
        let frozen = async {
            w.set_frozen(true)?;
            let start = Instant::now();
            loop {
                if w.is_frozen()? {
                    return Ok(true);
                }
                if start.elapsed() >= self.freeze_wait {
                    return Err(FreezeError::NotFrozen(self.freeze_wait));
                }
                tokio::time::sleep(FREEZE_POLL).await;
            }
        }
        .await;
        if frozen.is_err() {
            if let Err(e) = w.set_frozen(false) {
                eprintln!(
                    "boxlite-guest: thawing after a failed quiesce: {}",
                    crate::error_chain(&e)
                );
            }
            self.held.send_replace(false);
        }
        frozen
    }

    /// Thaw the workload and let new executions start. Harmless when not quiesced.
    pub async fn thaw(&self) -> Result<(), FreezeError> {
        let _gate = self.gate.write().await;
        if let Some(w) = &self.workload {
            w.set_frozen(false)?;
        }
        self.held.send_replace(false);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::tests::Scratch;

    /// A directory of plain files standing in for a cgroup, reporting `frozen`.
    fn fake_cgroup(name: &str, frozen: &str) -> (Scratch, Arc<Workload>) {
        let s = Scratch::new(name);
        fs::write(s.0.join("cgroup.freeze"), "0").unwrap();
        fs::write(s.0.join("cgroup.procs"), "").unwrap();
        fs::write(
            s.0.join("cgroup.events"),
            format!("populated 1\nfrozen {frozen}\n"),
        )
        .unwrap();
        let w = Arc::new(Workload::open(s.0.clone()).unwrap());
        (s, w)
    }

    fn freeze_file(s: &Scratch) -> String {
        fs::read_to_string(s.0.join("cgroup.freeze")).unwrap()
    }

    #[test]
    fn frozen_is_read_from_its_own_events_line() {
        assert_eq!(parse_frozen("populated 1\nfrozen 1\n"), Some(true));
        assert_eq!(parse_frozen("populated 0\nfrozen 0\n"), Some(false));
        assert_eq!(parse_frozen("populated 1\nfrozen_x 1\n"), None);
        assert_eq!(parse_frozen("populated 1\n"), None);
    }

    #[test]
    fn a_cgroup_without_cgroup_freeze_is_no_freezer() {
        let s = Scratch::new("freeze-none");
        fs::write(s.0.join("cgroup.procs"), "").unwrap();

        let r = Workload::open(s.0.clone());

        assert!(matches!(r, Err(FreezeError::NoFreezer(_))), "{r:?}");
    }

    #[tokio::test]
    async fn quiesce_freezes_and_thaw_undoes_it() {
        let (s, w) = fake_cgroup("freeze-ok", "1");
        let q = Quiescer::new(Some(w));

        let frozen = q.quiesce().await.unwrap();
        let during = freeze_file(&s);
        let again = q.quiesce().await.unwrap();
        q.thaw().await.unwrap();

        assert!(frozen);
        assert!(again);
        assert_eq!(during, "1");
        assert_eq!(freeze_file(&s), "0");
    }

    #[tokio::test]
    async fn a_workload_that_does_not_freeze_in_time_is_thawed_and_released() {
        let (s, w) = fake_cgroup("freeze-slow", "0");
        let mut q = Quiescer::new(Some(w));
        q.freeze_wait = Duration::from_millis(30);

        let r = q.quiesce().await;
        let admitted = tokio::time::timeout(Duration::from_secs(5), q.admit()).await;

        assert!(matches!(r, Err(FreezeError::NotFrozen(_))), "{r:?}");
        assert_eq!(freeze_file(&s), "0");
        assert!(admitted.is_ok());
    }

    #[tokio::test]
    async fn without_a_freezer_quiesce_answers_false_and_still_holds_execs() {
        let q = Quiescer::new(None);

        let frozen = q.quiesce().await.unwrap();
        let held = tokio::time::timeout(Duration::from_millis(50), q.admit()).await;

        assert!(!frozen);
        assert!(held.is_err());
    }

    #[tokio::test]
    async fn an_exec_waits_while_quiesced_and_starts_after_thaw() {
        let q = Arc::new(Quiescer::new(None));
        q.quiesce().await.unwrap();
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { drop(q.admit().await) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let finished_while_held = waiting.is_finished();

        q.thaw().await.unwrap();
        let after = tokio::time::timeout(Duration::from_secs(5), waiting).await;

        assert!(!finished_while_held);
        assert!(matches!(after, Ok(Ok(()))), "{after:?}");
    }

    #[tokio::test]
    async fn quiesce_waits_for_a_spawn_in_progress() {
        let q = Arc::new(Quiescer::new(None));
        let admission = q.admit().await;
        let quiescing = tokio::spawn({
            let q = q.clone();
            async move { q.quiesce().await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let finished_during_spawn = quiescing.is_finished();

        drop(admission);
        let after = tokio::time::timeout(Duration::from_secs(5), quiescing).await;

        assert!(!finished_during_spawn);
        assert!(matches!(after, Ok(Ok(false))), "{after:?}");
    }

    #[test]
    fn join_writes_zero_to_the_procs_file() {
        let (s, w) = fake_cgroup("freeze-join", "0");

        join(w.procs_fd()).unwrap();

        assert_eq!(fs::read_to_string(s.0.join("cgroup.procs")).unwrap(), "0");
    }
}
