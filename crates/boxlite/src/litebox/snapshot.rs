//! Memory snapshots of a running box: pause (save the memory and device state, then end
//! the VM) and resume (start a new VM from that state).
//!
//! A saved state is a directory of three files: `state`, QEMU's migration stream of the
//! devices (kilobytes: guest RAM is left out with `x-ignore-shared`, since it is a file
//! of its own), `ram`, a sparse copy of the guest RAM file, and `meta.json`, what made
//! it (the engine build, the machine, the kernel and initramfs). It is written under a
//! temporary name and renamed into place complete, so a directory by its final name is
//! always whole; `meta.json` is removed first when the state is consumed (the moment a
//! restored guest runs again and its disk moves on), so a consumed state is never used
//! twice.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::reconcile::settle_blocking;
use super::{BoxError, LiteBox, Locked, now_secs};
use crate::context::{Context, Home};
use crate::layout::SocketPaths;
use crate::model::{BoxRow, BoxState, VmBuild};
use crate::util::{blocking, ms_since};
use crate::vmm::qmp::{Qmp, QmpError};

/// What a saved state's `meta.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedMeta {
    pub format: u32,
    /// The engine's version line (`qemu-system-x86_64 --version`).
    pub engine: String,
    /// The machine the state describes ([`crate::vmm::Vmm::machine`]).
    pub machine: Vec<String>,
    pub kernel_sha256: String,
    pub initrd_sha256: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Whether guest RAM is in the `ram` file; false: it is inside `state` (a box whose
    /// RAM was mapped privately, a clone, streams it).
    pub ram_file: bool,
    /// Bytes of RAM written (non-zero data) and of the state stream.
    pub ram_bytes: u64,
    pub state_bytes: u64,
    /// The snapshot this state was restored from (a box's own `paused` state only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

const META_FORMAT: u32 = 1;
pub(crate) const META: &str = "meta.json";
pub(crate) const STATE: &str = "state";
pub(crate) const RAM: &str = "ram";

/// How long the agent may take to freeze or thaw the workload.
const AGENT_CALL: Duration = Duration::from_secs(10);
/// How long QEMU may take to accept a monitor connection.
const QMP_CONNECT: Duration = Duration::from_secs(5);

/// Why a pause, a snapshot or a resume was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "box {id} has volumes, and QEMU {engine} cannot save a VM with virtio-fs devices (vhost-user-fs is not migratable before QEMU 8.2, with virtiofsd 1.11 or newer); pause, snapshot and clone work only for boxes without volumes"
    )]
    Volumes { id: String, engine: String },
    #[error(
        "the saved state of box {id} was made by {what} {saved:?}, and this host has {now:?}; it cannot be loaded (stop the box to discard it and boot afresh)"
    )]
    Incompatible {
        id: String,
        what: &'static str,
        saved: String,
        now: String,
    },
    #[error("the saved state of box {id} in {} is unreadable: {detail}", dir.display())]
    Unreadable {
        id: String,
        dir: PathBuf,
        detail: String,
    },
    #[error(
        "no room to save the state of box {id} in {}: the disk is full (the partial state was removed; the box carries on)",
        dir.display()
    )]
    DiskFull { id: String, dir: PathBuf },
    #[error("box {id}: a client arrived while it was being auto-paused; it carries on")]
    ClientArrived { id: String },
    #[error("box {id}: the agent did not freeze the workload")]
    Quiesce {
        id: String,
        #[source]
        source: crate::portal::PortalError,
    },
    #[error("box {id}: QEMU's monitor")]
    Monitor {
        id: String,
        #[source]
        source: QmpError,
    },
    #[error("box {id} has no snapshot named {name:?}")]
    NotFound { id: String, name: String },
    #[error("box {id} already has a snapshot named {name:?}; remove it first or pick another name")]
    Exists { id: String, name: String },
    #[error("invalid snapshot name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error(
        "box {id} has volumes, which a clone cannot share or copy; clone a box without volumes"
    )]
    CloneVolumes { id: String },
    #[error("box {id}: {context}")]
    Io {
        id: String,
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl SnapshotError {
    fn io(id: &str, dir: &Path, context: String, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return SnapshotError::DiskFull {
                id: id.to_string(),
                dir: dir.to_path_buf(),
            };
        }
        SnapshotError::Io {
            id: id.to_string(),
            context,
            source,
        }
    }
}

/// Remove what a save that died left in box directory `dir`: `paused.partial`, and in
/// `snapshots/` every `*.partial` and every snapshot taken for a clone (`.clone-*`).
pub(crate) fn sweep_partials(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir.join("paused.partial"));
    let Ok(rd) = std::fs::read_dir(dir.join("snapshots")) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".partial") || name.starts_with(".clone-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Whether `dir` holds a complete saved state (its `meta.json` exists).
pub(crate) fn saved_state_complete(dir: &Path) -> bool {
    dir.join(META).is_file()
}

/// The saved state in `dir`.
pub(crate) fn read_meta(id: &str, dir: &Path) -> Result<SavedMeta, SnapshotError> {
    let unreadable = |detail: String| SnapshotError::Unreadable {
        id: id.to_string(),
        dir: dir.to_path_buf(),
        detail,
    };
    let text = std::fs::read(dir.join(META)).map_err(|e| unreadable(e.to_string()))?;
    let meta: SavedMeta = serde_json::from_slice(&text).map_err(|e| unreadable(e.to_string()))?;
    if meta.format != META_FORMAT {
        return Err(unreadable(format!(
            "format {} (this version reads {META_FORMAT})",
            meta.format
        )));
    }
    Ok(meta)
}

/// The engine version and guest assets a saved state would be loaded with now.
pub(crate) async fn current_build(ctx: &Context) -> Result<(String, String, String), crate::Error> {
    let assets = ctx.assets()?;
    let engine = ctx.engine_version().await?;
    let sha = |name: &str| assets.recorded_sha256(name).unwrap_or_default().to_string();
    Ok((engine, sha("vmlinux"), sha("initramfs.cpio")))
}

/// [`current_build`] as a [`VmBuild`]: what a VM started now runs.
pub(crate) async fn current_vm_build(ctx: &Context) -> Result<VmBuild, crate::Error> {
    let (engine, kernel_sha256, initrd_sha256) = current_build(ctx).await?;
    Ok(VmBuild {
        engine,
        kernel_sha256,
        initrd_sha256,
    })
}

/// Refuse a saved state this host cannot load: another engine build, kernel or initramfs.
/// (The machine is compared when the VM is built, [`crate::vm::launch`].)
pub(crate) async fn check_compatible(
    ctx: &Context,
    id: &str,
    meta: &SavedMeta,
) -> Result<(), crate::Error> {
    let (engine, kernel, initrd) = current_build(ctx).await?;
    for (what, saved, now) in [
        ("the engine", &meta.engine, &engine),
        ("the guest kernel (sha256)", &meta.kernel_sha256, &kernel),
        ("the guest initramfs (sha256)", &meta.initrd_sha256, &initrd),
    ] {
        if saved != now {
            return Err(SnapshotError::Incompatible {
                id: id.to_string(),
                what,
                saved: saved.clone(),
                now: now.clone(),
            }
            .into());
        }
    }
    Ok(())
}

/// What a save adds to the directory before it is renamed into place (a snapshot's disk
/// and description); blocking, given the temporary directory.
pub(crate) type Extra = Box<dyn FnOnce(&Path) -> Result<(), SnapshotError> + Send>;

/// Save the stopped VM's state into a new directory `dir` (which must not exist): the
/// device state through `qmp`, then guest RAM from `ram` when `ram_file`, then `extra`.
/// Written under a temporary name and renamed complete; on failure nothing is left.
pub(crate) async fn save_state(
    id: &str,
    qmp: &mut Qmp,
    ram: &Path,
    ram_file: bool,
    dir: &Path,
    mut meta: SavedMeta,
    extra: Option<Extra>,
) -> Result<SavedMeta, SnapshotError> {
    let tmp = dir.with_extension("partial");
    let result = async {
        let (t, d, i) = (tmp.clone(), dir.to_path_buf(), id.to_string());
        let state = blocking::run(move || {
            let _ = std::fs::remove_dir_all(&t);
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(&t)
                .and_then(|()| std::fs::File::create(t.join(STATE)))
                .map_err(|e| SnapshotError::io(&i, &d, format!("creating {}", t.display()), e))
        })
        .await?;
        qmp.save_state(&state)
            .await
            .map_err(|source| match source {
                QmpError::Migration { ref detail, .. } if detail.contains("No space left") => {
                    SnapshotError::DiskFull {
                        id: id.to_string(),
                        dir: dir.to_path_buf(),
                    }
                }
                source => SnapshotError::Monitor {
                    id: id.to_string(),
                    source,
                },
            })?;
        let (t, d, i, ram) = (
            tmp.clone(),
            dir.to_path_buf(),
            id.to_string(),
            ram.to_path_buf(),
        );
        blocking::run(move || {
            let io = |what: String| {
                let (i, d) = (i.clone(), d.clone());
                move |e| SnapshotError::io(&i, &d, what, e)
            };
            state
                .sync_all()
                .map_err(io("syncing the device state".into()))?;
            meta.state_bytes = state
                .metadata()
                .map_err(io("reading the device state".into()))?
                .len();
            if ram_file {
                meta.ram_bytes = crate::util::fsutil::copy_sparse(&ram, &t.join(RAM))
                    .map_err(io(format!("copying guest RAM from {}", ram.display())))?;
            }
            if let Some(extra) = extra {
                extra(&t)?;
            }
            let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
            crate::util::fsutil::write_atomic(&t.join(META), &json)
                .map_err(io("writing meta.json".into()))?;
            std::fs::rename(&t, &d).map_err(io(format!("renaming into {}", d.display())))?;
            crate::util::fsutil::sync_parent(&d).map_err(io("syncing".into()))?;
            Ok(meta)
        })
        .await
    }
    .await;
    if result.is_err() {
        let t = tmp.clone();
        blocking::run(move || {
            let _ = std::fs::remove_dir_all(&t);
        })
        .await;
    }
    result
}

use std::os::unix::fs::DirBuilderExt;

/// A VM that a pause left stopped, with its workload frozen, without saving its state:
/// run its vCPUs and thaw it, with the clock and entropy of now.
pub(crate) async fn continue_vm(home: &Home, row: &BoxRow) -> Result<(), crate::Error> {
    let dir = home.box_paths(&row.id).dir;
    let client = super::connect_agent(&row.id, row).await?;
    continue_live(&row.id, &dir, &client).await
}

/// Run the vCPUs of box `id` (in `box_dir`) if they are stopped, and thaw its workload
/// with the clock and entropy of now.
pub(crate) async fn continue_live(
    id: &str,
    box_dir: &Path,
    client: &crate::portal::AgentClient,
) -> Result<(), crate::Error> {
    let monitor = |source| SnapshotError::Monitor {
        id: id.to_string(),
        source,
    };
    // The vCPUs first, if the monitor can be reached; the workload is thawed either way
    // (a save that failed to reach the monitor never stopped them).
    let ran = async {
        let mut qmp = monitor_of(id, box_dir).await?;
        if qmp.status().await.map_err(monitor)? != "running" {
            qmp.cont().await.map_err(monitor)?;
        }
        Ok::<(), SnapshotError>(())
    }
    .await;
    let thawed = tokio::time::timeout(AGENT_CALL, crate::vm::resume_guest(client, id))
        .await
        .map_err(|_| crate::portal::PortalError::Timeout {
            target: id.to_string(),
            after: AGENT_CALL,
        })
        .and_then(|r| r);
    ran?;
    thawed?;
    Ok(())
}

/// Freeze the workload of box `id` (the agent also syncs its files), then stop the
/// vCPUs. Returns the monitor session, to save the state or continue.
pub(crate) async fn freeze_and_stop(
    id: &str,
    box_dir: &Path,
    client: &crate::portal::AgentClient,
) -> Result<Qmp, crate::Error> {
    let frozen = tokio::time::timeout(AGENT_CALL, client.quiesce())
        .await
        .map_err(|_| crate::portal::PortalError::Timeout {
            target: id.to_string(),
            after: AGENT_CALL,
        })
        .and_then(|r| r)
        .map_err(|source| SnapshotError::Quiesce {
            id: id.to_string(),
            source,
        })?;
    if !frozen {
        tracing::warn!(box_id = %id, "the guest has no freezer; its processes run until the VM stops");
    }
    let mut qmp = monitor_of(id, box_dir).await?;
    qmp.stop().await.map_err(|source| SnapshotError::Monitor {
        id: id.to_string(),
        source,
    })?;
    Ok(qmp)
}

/// A monitor session with the QEMU of box `id`.
async fn monitor_of(id: &str, box_dir: &Path) -> Result<Qmp, SnapshotError> {
    Qmp::connect(&box_dir.join(crate::layout::BoxPaths::QMP), QMP_CONNECT)
        .await
        .map_err(|source| SnapshotError::Monitor {
            id: id.to_string(),
            source,
        })
}

/// Save the state of running box `id` into `dir` (RAM from `ram`, then `extra`) and let
/// it go on: freeze, stop, save, then run the vCPUs again and give the guest the clock
/// and entropy of now. The box goes on whether or not the save worked.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn save_live(
    id: &str,
    box_dir: &Path,
    client: &crate::portal::AgentClient,
    ram: &Path,
    dir: &Path,
    meta: SavedMeta,
    extra: Option<Extra>,
) -> Result<SavedMeta, crate::Error> {
    let saved = match freeze_and_stop(id, box_dir, client).await {
        Ok(mut qmp) => {
            let ram_file = meta.ram_file;
            save_state(id, &mut qmp, ram, ram_file, dir, meta, extra)
                .await
                .map_err(crate::Error::from)
        }
        Err(e) => Err(e),
    };
    let cont = continue_live(id, box_dir, client).await;
    match (saved, cont) {
        (Ok(m), Ok(())) => Ok(m),
        (Err(e), Err(ce)) => {
            tracing::warn!(box_id = %id, error = %crate::util::error_chain(&ce), "continuing the box after a failed save");
            Err(e)
        }
        (Err(e), Ok(())) | (Ok(_), Err(e)) => Err(e),
    }
}

impl LiteBox {
    /// Save the box's memory and device state in its directory and end its VM: a paused
    /// box uses no CPU and no memory, and survives a host reboot. Any command that needs
    /// the box ([`LiteBox::start`], `exec`, `attach`) resumes it where it was. Pausing a
    /// paused box does nothing. Boxes with volumes cannot be paused
    /// ([`SnapshotError::Volumes`]).
    pub async fn pause(&self) -> Result<(), crate::Error> {
        self.ctx.check_open()?;
        let mut l = self.lock_reconciled().await?;
        match l.row.status.state() {
            BoxState::Running => {}
            BoxState::Paused => return Ok(()),
            state => {
                return Err(BoxError::NotRunning {
                    id: self.id.clone(),
                    state,
                }
                .into());
            }
        }
        self.check_savable(&l.row).await?;
        let client = self.cached_client(&l.row).await?;
        let meta = self.saved_meta(&l.row).await?;
        let paused = pause_held(self.home(), &mut l, &client, meta, &PauseBy::Caller).await;
        if l.row.status.state() == BoxState::Paused {
            *self.client.lock().await = None;
            self.ctx.forget_shared(&self.id);
        }
        paused
    }

    /// Continue a paused box from its saved state (what [`LiteBox::start`] does for a
    /// paused box). Resuming a running box does nothing; a box that is neither is
    /// [`BoxError::NotPaused`].
    pub async fn resume(&self) -> Result<(), crate::Error> {
        self.ctx.check_open()?;
        let mut l = self.lock_reconciled().await?;
        match l.row.status.state() {
            BoxState::Paused => self.start_locked(&mut l).await,
            BoxState::Running => Ok(()),
            state => Err(BoxError::NotPaused {
                id: self.id.clone(),
                state,
            }
            .into()),
        }
    }

    /// Refuse boxes whose VM cannot be saved.
    pub(super) async fn check_savable(&self, row: &BoxRow) -> Result<(), crate::Error> {
        if !row.config.volumes.is_empty() {
            return Err(SnapshotError::Volumes {
                id: self.id.clone(),
                engine: self.ctx.engine_version().await.unwrap_or_default(),
            }
            .into());
        }
        Ok(())
    }

    /// What a state saved from this box now records about how to load it.
    pub(super) async fn saved_meta(&self, row: &BoxRow) -> Result<SavedMeta, crate::Error> {
        let build = match &row.status.build {
            Some(b) => b.clone(),
            None => current_vm_build(&self.ctx).await?,
        };
        Ok(saved_meta_of(row, build))
    }
}

/// What a state saved from `row`'s VM, which runs `build`, records about how to load it.
pub(crate) fn saved_meta_of(row: &BoxRow, build: VmBuild) -> SavedMeta {
    SavedMeta {
        format: META_FORMAT,
        engine: build.engine,
        machine: row.status.machine.clone(),
        kernel_sha256: build.kernel_sha256,
        initrd_sha256: build.initrd_sha256,
        created_at: now_secs(),
        ram_file: ram_is_own(row),
        ram_bytes: 0,
        state_bytes: 0,
        snapshot: None,
    }
}

/// Who pauses a box.
pub(crate) enum PauseBy<'a> {
    /// A caller of [`LiteBox::pause`].
    Caller,
    /// The box's own shim (`me`), after the box was idle for its auto-pause interval.
    /// The shim is not ended with the VM (it exits once the VM is gone), and the pause
    /// is abandoned, before the state is saved, if `cancelled` says a client came.
    Shim {
        me: crate::util::process::ProcessId,
        cancelled: &'a (dyn Fn() -> bool + Send + Sync),
    },
}

/// Pause the running box locked in `l`, reached through `client`: freeze its workload,
/// stop the vCPUs, save the state into its `paused` directory and end its processes.
/// On failure before the state is saved, the VM carries on (or, if it cannot, is
/// stopped) and the error is returned.
pub(crate) async fn pause_held(
    home: &Home,
    l: &mut Locked,
    client: &crate::portal::AgentClient,
    meta: SavedMeta,
    by: &PauseBy<'_>,
) -> Result<(), crate::Error> {
    let id = l.row.id.clone();
    let t0 = Instant::now();
    super::set_state(home, &mut l.row, BoxState::Pausing).await?;
    let box_dir = home.box_paths(&id).dir;
    let saved = async {
        let mut qmp = freeze_and_stop(&id, &box_dir, client).await?;
        if let PauseBy::Shim { cancelled, .. } = by
            && cancelled()
        {
            return Err(SnapshotError::ClientArrived { id: id.clone() }.into());
        }
        let ram = SocketPaths::for_box(&id).ram();
        let ram_file = meta.ram_file;
        let dir = home.box_paths(&id).paused_dir();
        Ok::<_, crate::Error>(save_state(&id, &mut qmp, &ram, ram_file, &dir, meta, None).await?)
    }
    .await;
    match saved {
        Ok(meta) => {
            tracing::debug!(ms = ms_since(t0), ram = meta.ram_bytes, "state saved");
            let h = home.clone();
            let mut r = l.row.clone();
            let auto = match by {
                PauseBy::Shim { me, .. } => {
                    // The shim pausing its own box exits once the VM is gone.
                    if r.status.monitor == Some(*me) {
                        r.status.monitor = None;
                    }
                    true
                }
                PauseBy::Caller => false,
            };
            let r = blocking::run(move || {
                settle_blocking(&h, &mut r);
                r
            })
            .await;
            l.row.status = r.status;
            l.row.status.paused_at = Some(now_secs());
            l.row.status.auto_paused = auto;
            l.row.status.auto_pauses += u64::from(auto);
            l.row.status.last_error = None;
            super::set_state(home, &mut l.row, BoxState::Paused).await?;
            tracing::info!(box_id = %id, ms = ms_since(t0), ram_bytes = meta.ram_bytes, auto, "box paused");
            Ok(())
        }
        Err(e) => {
            // Nothing was saved: the VM carries on (or, if it cannot, is stopped).
            if !matches!(
                e,
                crate::Error::Snapshot(SnapshotError::ClientArrived { .. })
            ) {
                tracing::warn!(box_id = %id, error = %crate::util::error_chain(&e), "pause failed; continuing the box");
            }
            let cont = continue_vm(home, &l.row).await;
            let h = home.clone();
            let mut r = l.row.clone();
            let to = match cont {
                Ok(()) => BoxState::Running,
                Err(ce) => {
                    tracing::warn!(box_id = %id, error = %crate::util::error_chain(&ce), "the box could not be continued after a failed pause; stopping it");
                    r = blocking::run(move || {
                        settle_blocking(&h, &mut r);
                        r
                    })
                    .await;
                    r.status.last_error = Some(format!(
                        "a pause failed ({}) and the VM could not be continued ({})",
                        crate::util::error_chain(&e),
                        crate::util::error_chain(&ce)
                    ));
                    BoxState::Stopped
                }
            };
            l.row.status = r.status;
            super::set_state(home, &mut l.row, to).await?;
            Err(e)
        }
    }
}

impl LiteBox {}

/// Whether the box's guest RAM is its own file, mapped shared (false for a fork, whose
/// RAM is a snapshot's file mapped privately: its pages live in QEMU's memory).
fn ram_is_own(row: &BoxRow) -> bool {
    !row.status.ram_private
}

/// A saved state a start begins from instead of booting: a paused box's own, or a
/// snapshot or template that the box forks.
pub(crate) struct Saved {
    pub meta: SavedMeta,
    pub dir: PathBuf,
    /// The box's own `paused` state: its RAM is copied back to tmpfs, and the state is
    /// consumed. Otherwise a fork: the RAM file is mapped privately, never written, and
    /// the state stays for the next fork.
    pub own: bool,
    /// How the box will have started.
    pub kind: crate::model::StartKind,
}

impl LiteBox {
    /// Read and check a paused box's saved state before anything changes. A state this
    /// host cannot load is refused and the box stays paused.
    pub(super) async fn prepare_resume(&self) -> Result<Saved, crate::Error> {
        let dir = self.home().box_paths(&self.id).paused_dir();
        let (id, d) = (self.id.clone(), dir.clone());
        let meta = blocking::run(move || read_meta(&id, &d)).await?;
        check_compatible(&self.ctx, &self.id, &meta).await?;
        let kind = match &meta.snapshot {
            Some(s) => crate::model::StartKind::Restored {
                snapshot: s.clone(),
            },
            None => crate::model::StartKind::Resumed,
        };
        Ok(Saved {
            meta,
            dir,
            own: true,
            kind,
        })
    }
}

impl Saved {
    /// Put the saved RAM where the VM maps it (for the box's own state, a sparse copy
    /// onto tmpfs), and describe the restore for [`crate::vm::launch`].
    pub(crate) async fn stage(
        &self,
        id: &str,
        sockets: &SocketPaths,
    ) -> Result<crate::vm::Restore, crate::Error> {
        let shared_ram = if !self.meta.ram_file {
            None
        } else if self.own {
            let (src, dst, i) = (self.dir.join(RAM), sockets.ram(), id.to_string());
            blocking::run(move || {
                let _ = std::fs::remove_file(&dst);
                crate::util::fsutil::copy_sparse(&src, &dst).map_err(|source| SnapshotError::Io {
                    id: i,
                    context: format!("copying guest RAM to {}", dst.display()),
                    source,
                })
            })
            .await?;
            None
        } else {
            Some(self.dir.join(RAM))
        };
        Ok(crate::vm::Restore {
            state: self.dir.join(STATE),
            shared_ram,
            ram_in_state: !self.meta.ram_file,
            consumed: self.own.then(|| self.dir.join(META)),
            machine: self.meta.machine.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_another_format_is_refused() {
        let dir = std::env::temp_dir().join(format!("bx-meta-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let meta = SavedMeta {
            format: META_FORMAT,
            engine: "QEMU emulator version 7.2.22".into(),
            machine: vec!["-M microvm".into()],
            kernel_sha256: "k".into(),
            initrd_sha256: "i".into(),
            created_at: 1,
            ram_file: true,
            ram_bytes: 2,
            state_bytes: 3,
            snapshot: None,
        };
        std::fs::write(dir.join(META), serde_json::to_vec(&meta).unwrap()).unwrap();
        let back = read_meta("b", &dir).unwrap();
        std::fs::write(dir.join(META), br#"{"format": 9}"#).unwrap();
        let newer = read_meta("b", &dir).unwrap_err().to_string();
        std::fs::write(dir.join(META), b"garbage").unwrap();
        let junk = read_meta("b", &dir).unwrap_err().to_string();

        assert_eq!(back, meta);
        assert!(saved_state_complete(&dir));
        assert!(newer.contains("unreadable"), "{newer}");
        assert!(junk.contains(&dir.display().to_string()), "{junk}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!saved_state_complete(&dir));
    }
}
