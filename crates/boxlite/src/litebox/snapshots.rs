//! Named snapshots of a box, and clones (forks) of a box or of one of its snapshots.
//!
//! A snapshot is a directory `snapshots/<name>/` in the box's directory: `disk.qcow2`
//! (a copy of the box's disk, an overlay on its image's base), `snapshot.json`
//! ([`SnapshotInfo`]) and, when it holds memory, a saved state (`state`, `ram`,
//! `meta.json`, [`super::snapshot`]). Like a saved state it is written under a temporary
//! name and renamed complete. A running box is snapshotted with its memory (it stops for
//! the time of the save and goes on); a stopped box, or any box with `disk_only`, has
//! its disk copied only; a paused box's saved state is copied with its disk.
//!
//! A clone is a new box with a copy of the source's disk (at the snapshot's moment). A
//! clone of a memory snapshot, of a running box (through a snapshot taken for it and
//! removed once the clones run) or of a paused box starts at once from that memory
//! state: it maps the RAM file privately, so clones share its pages copy on write and
//! never write it. It gets its own id, hostname, network helper and random seed. Other
//! clones are created stopped.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::snapshot::{Saved, SnapshotError, read_meta, saved_state_complete};
use super::template::{DISK, dir_bytes};
use super::{BoxError, LiteBox, Locked, now_secs};
use crate::layout::SocketPaths;
use crate::model::{BoxRow, BoxState, BoxStatus, StartKind};
use crate::util::blocking;
use crate::util::fsutil::{copy_sparse, remove_durably, sync_parent, write_atomic};
use crate::util::lock::LockMode;

/// A snapshot, as `snapshot ls` shows it (BoxLite's `Snapshot` fields, plus whether it
/// holds memory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub box_id: String,
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Whether it holds the box's memory (a clone or restore of it continues the
    /// processes); false: the disk only.
    #[serde(default)]
    pub memory: bool,
    /// Bytes of the disk copy on the host.
    #[serde(default)]
    pub container_disk_bytes: u64,
    /// Bytes of the whole snapshot on the host.
    #[serde(default)]
    pub size_bytes: u64,
}

/// How to take a snapshot.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// The disk only, even of a running box (which stops for the time of the copy).
    pub disk_only: bool,
}

/// Labels with this prefix are not inherited by clones (see [`CloneOptions::labels`]).
pub const RESERVED_LABELS: &str = "boxlite.";

/// How to clone a box.
#[derive(Debug, Clone, Default)]
pub struct CloneOptions {
    /// Clone this snapshot of the box rather than its present state.
    pub snapshot: Option<String>,
    /// The clone's name (with several clones, `NAME-1`, `NAME-2`, ...).
    pub name: Option<String>,
    /// Labels set on the clones over the source's, which they inherit except those
    /// under [`RESERVED_LABELS`] (`boxlite.`): a frontend's marks stay with its own boxes.
    pub labels: std::collections::BTreeMap<String, String>,
}

const INFO: &str = "snapshot.json";
/// The longest snapshot name.
pub const MAX_SNAPSHOT_NAME: usize = 128;

/// Check a snapshot name: 1 to 128 letters, digits, `_`, `.` and `-`, starting with a
/// letter or digit (so it is one path component, never `.`, `..` or hidden).
pub fn validate_snapshot_name(name: &str) -> Result<(), SnapshotError> {
    let bad = |why: &'static str| {
        Err(SnapshotError::InvalidName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() || name.len() > MAX_SNAPSHOT_NAME {
        return bad("it must be 1 to 128 characters long");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("it must start with a letter or a digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> crate::Error {
    move |source| crate::Error::Io { context, source }
}

/// Make `dir` by filling `<dir>.partial` with `fill` and renaming it; nothing is left
/// on failure.
fn write_dir(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), crate::Error>,
) -> Result<(), crate::Error> {
    use std::os::unix::fs::DirBuilderExt;
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    let r = std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&tmp)
        .map_err(io_err(format!("creating {}", tmp.display())))
        .and_then(|()| fill(&tmp))
        .and_then(|()| {
            std::fs::rename(&tmp, dir).map_err(io_err(format!("renaming {}", tmp.display())))
        })
        .and_then(|()| sync_parent(dir).map_err(io_err(format!("syncing {}", dir.display()))));
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    r
}

fn copy_into(src: &Path, dst: &Path) -> Result<u64, crate::Error> {
    copy_sparse(src, dst).map_err(io_err(format!(
        "copying {} to {}",
        src.display(),
        dst.display()
    )))
}

/// Copy a saved state's device state and RAM (when it has a RAM file) from `src` into
/// `dst`; its `meta.json` is the caller's to write, last.
fn copy_saved_state(src: &Path, dst: &Path) -> Result<(), crate::Error> {
    for f in [super::snapshot::STATE, super::snapshot::RAM] {
        if src.join(f).exists() {
            copy_into(&src.join(f), &dst.join(f))?;
        }
    }
    Ok(())
}

fn write_info(dir: &Path, info: &SnapshotInfo) -> Result<(), crate::Error> {
    let json = serde_json::to_vec_pretty(info).unwrap_or_default();
    write_atomic(&dir.join(INFO), &json).map_err(io_err(format!("writing {INFO}")))
}

fn read_info(dir: &Path) -> Option<SnapshotInfo> {
    let mut info: SnapshotInfo =
        serde_json::from_slice(&std::fs::read(dir.join(INFO)).ok()?).ok()?;
    info.memory = saved_state_complete(dir);
    info.size_bytes = dir_bytes(dir);
    info.container_disk_bytes = std::fs::metadata(dir.join(DISK))
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.blocks() * 512
        })
        .unwrap_or(0);
    Some(info)
}

/// Remove a snapshot directory (its description first, so a half-removed one is never
/// listed or used).
fn remove_snapshot_dir(dir: &Path) -> Result<(), crate::Error> {
    let _ = remove_durably(&dir.join(super::snapshot::META));
    remove_durably(&dir.join(INFO)).map_err(io_err(format!("removing {}", dir.display())))?;
    std::fs::remove_dir_all(dir).map_err(io_err(format!("removing {}", dir.display())))
}

impl LiteBox {
    fn snapshots_dir(&self) -> PathBuf {
        self.home().box_paths(&self.id).dir.join("snapshots")
    }

    fn snapshot_dir(&self, name: &str) -> Result<PathBuf, crate::Error> {
        validate_snapshot_name(name)?;
        Ok(self.snapshots_dir().join(name))
    }

    /// Take a snapshot named `name`: the memory and disk of a running box (it stops for
    /// the time of the save, then goes on), the saved state and disk of a paused one,
    /// the disk of a stopped one (or of any, with [`SnapshotOptions::disk_only`]).
    pub async fn snapshot_create(
        &self,
        name: &str,
        opts: &SnapshotOptions,
    ) -> Result<SnapshotInfo, crate::Error> {
        self.ctx.check_open()?;
        let dir = self.snapshot_dir(name)?;
        let mut l = self.lock_reconciled().await?;
        let d = dir.clone();
        if blocking::run(move || d.join(INFO).exists()).await {
            return Err(SnapshotError::Exists {
                id: self.id.clone(),
                name: name.to_string(),
            }
            .into());
        }
        let info = SnapshotInfo {
            id: crate::util::random_id(),
            box_id: self.id.clone(),
            name: name.to_string(),
            created_at: i64::try_from(now_secs()).unwrap_or(i64::MAX),
            memory: false,
            container_disk_bytes: 0,
            size_bytes: 0,
        };
        self.snapshot_locked(&mut l, &dir, info, opts.disk_only)
            .await?;
        let d = dir.clone();
        blocking::run(move || read_info(&d))
            .await
            .ok_or_else(|| crate::Error::Io {
                context: format!("reading {}", dir.join(INFO).display()),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
    }

    /// Write snapshot `info` of the locked box into `dir`.
    async fn snapshot_locked(
        &self,
        l: &mut Locked,
        dir: &Path,
        info: SnapshotInfo,
        disk_only: bool,
    ) -> Result<(), crate::Error> {
        let paths = self.home().box_paths(&self.id);
        let disk = paths.disk();
        let state = l.row.status.state();
        match state {
            BoxState::Running => {
                if !disk_only {
                    self.check_savable(&l.row).await?;
                }
                self.transition(&mut l.row, BoxState::Pausing).await?;
                let client = self.cached_client(&l.row).await;
                let r = match client {
                    Ok(client) if disk_only => {
                        self.disk_snapshot_live(&client, &paths.dir, dir, &info)
                            .await
                    }
                    Ok(client) => {
                        let meta = self.saved_meta(&l.row).await;
                        match meta {
                            Ok(meta) => {
                                let ram = SocketPaths::for_box(&self.id).ram();
                                let extra: super::snapshot::Extra = Box::new(move |t: &Path| {
                                    copy_sparse(&disk, &t.join(DISK))
                                        .and_then(|_| {
                                            write_atomic(
                                                &t.join(INFO),
                                                &serde_json::to_vec_pretty(&info)
                                                    .unwrap_or_default(),
                                            )
                                        })
                                        .map_err(|source| SnapshotError::Io {
                                            id: info.box_id.clone(),
                                            context: "copying the disk".into(),
                                            source,
                                        })
                                });
                                super::snapshot::save_live(
                                    &self.id,
                                    &paths.dir,
                                    &client,
                                    &ram,
                                    dir,
                                    meta,
                                    Some(extra),
                                )
                                .await
                                .map(drop)
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                self.transition(&mut l.row, BoxState::Running).await?;
                r
            }
            BoxState::Paused => {
                let (src, d) = (paths.paused_dir(), dir.to_path_buf());
                blocking::run(move || {
                    write_dir(&d, |t| {
                        copy_saved_state(&src, t)?;
                        copy_into(&disk, &t.join(DISK))?;
                        write_info(t, &info)?;
                        copy_into(
                            &src.join(super::snapshot::META),
                            &t.join(super::snapshot::META),
                        )
                        .map(drop)
                    })
                })
                .await
            }
            BoxState::Configured | BoxState::Stopped | BoxState::Failed => {
                let d = dir.to_path_buf();
                blocking::run(move || {
                    write_dir(&d, |t| {
                        copy_into(&disk, &t.join(DISK))?;
                        write_info(t, &info)
                    })
                })
                .await
            }
            state => Err(BoxError::Busy {
                id: self.id.clone(),
                state,
            }
            .into()),
        }
    }

    /// The disk of a running box, copied while its vCPUs are stopped (after the agent
    /// froze the workload and synced its files).
    async fn disk_snapshot_live(
        &self,
        client: &crate::portal::AgentClient,
        box_dir: &Path,
        dir: &Path,
        info: &SnapshotInfo,
    ) -> Result<(), crate::Error> {
        let stopped = super::snapshot::freeze_and_stop(&self.id, box_dir, client).await;
        let copied = match stopped {
            Ok(_qmp) => {
                let (disk, d, info) = (box_dir.join(DISK), dir.to_path_buf(), info.clone());
                blocking::run(move || {
                    write_dir(&d, |t| {
                        copy_into(&disk, &t.join(DISK))?;
                        write_info(t, &info)
                    })
                })
                .await
            }
            Err(e) => Err(e),
        };
        let cont = super::snapshot::continue_live(&self.id, box_dir, client).await;
        copied.and(cont)
    }

    /// The box's snapshots, oldest first.
    pub async fn snapshot_list(&self) -> Result<Vec<SnapshotInfo>, crate::Error> {
        let root = self.snapshots_dir();
        let _l = self.lock(LockMode::Shared).await?;
        Ok(blocking::run(move || {
            let mut v: Vec<SnapshotInfo> = std::fs::read_dir(&root)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.file_name()
                                .and_then(|n| n.to_str())
                                .is_some_and(|n| validate_snapshot_name(n).is_ok())
                                && p.extension().is_none_or(|x| x != "partial")
                        })
                        .filter_map(|p| read_info(&p))
                        .collect()
                })
                .unwrap_or_default();
            v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
            v
        })
        .await)
    }

    /// The snapshot named `name`.
    pub async fn snapshot_get(&self, name: &str) -> Result<SnapshotInfo, crate::Error> {
        let dir = self.snapshot_dir(name)?;
        let _l = self.lock(LockMode::Shared).await?;
        blocking::run(move || read_info(&dir))
            .await
            .ok_or_else(|| self.no_snapshot(name))
    }

    fn no_snapshot(&self, name: &str) -> crate::Error {
        SnapshotError::NotFound {
            id: self.id.clone(),
            name: name.to_string(),
        }
        .into()
    }

    /// Remove the snapshot named `name`. Clones made from it keep running.
    pub async fn snapshot_remove(&self, name: &str) -> Result<(), crate::Error> {
        let dir = self.snapshot_dir(name)?;
        let _l = self.lock(LockMode::Exclusive).await?;
        let d = dir.clone();
        if !blocking::run(move || d.join(INFO).exists()).await {
            return Err(self.no_snapshot(name));
        }
        blocking::run(move || remove_snapshot_dir(&dir)).await?;
        tracing::info!(box_id = %self.id, snapshot = name, "snapshot removed");
        Ok(())
    }

    /// Put the box back to snapshot `name`: its disk, and with a memory snapshot its
    /// memory (the box is then paused, and continues from that moment when started). A
    /// running box must be stopped or paused first; a paused box's own saved state is
    /// discarded.
    pub async fn snapshot_restore(&self, name: &str) -> Result<(), crate::Error> {
        self.ctx.check_open()?;
        let dir = self.snapshot_dir(name)?;
        let mut l = self.lock_reconciled().await?;
        let d = dir.clone();
        if !blocking::run(move || d.join(INFO).exists()).await {
            return Err(self.no_snapshot(name));
        }
        let memory = saved_state_complete(&dir);
        match l.row.status.state() {
            BoxState::Paused => self.discard_paused(&mut l).await?,
            BoxState::Stopped | BoxState::Failed => {}
            BoxState::Configured if !memory => {}
            state => {
                return Err(BoxError::Busy {
                    id: self.id.clone(),
                    state,
                }
                .into());
            }
        }
        let paths = self.home().box_paths(&self.id);
        let (disk, paused, n) = (paths.disk(), paths.paused_dir(), name.to_string());
        let id = self.id.clone();
        blocking::run(move || {
            let tmp = disk.with_extension("restoring");
            copy_into(&dir.join(DISK), &tmp)?;
            std::fs::rename(&tmp, &disk)
                .map_err(io_err(format!("replacing {}", disk.display())))?;
            if memory {
                let mut meta = read_meta(&id, &dir)?;
                meta.snapshot = Some(n);
                write_dir(&paused, |t| {
                    copy_saved_state(&dir, t)?;
                    write_atomic(
                        &t.join(super::snapshot::META),
                        &serde_json::to_vec_pretty(&meta).unwrap_or_default(),
                    )
                    .map_err(io_err("writing meta.json".into()))
                })?;
            }
            Ok::<(), crate::Error>(())
        })
        .await?;
        if memory {
            l.row.status.paused_at = Some(now_secs());
            self.transition(&mut l.row, BoxState::Paused).await?;
        }
        tracing::info!(box_id = %self.id, snapshot = name, memory, "snapshot restored");
        Ok(())
    }

    /// Clone the box (or its snapshot `opts.snapshot`); see [`LiteBox::clone_boxes`].
    pub async fn clone_box(&self, opts: CloneOptions) -> Result<LiteBox, crate::Error> {
        let mut v = self.clone_boxes(opts, 1).await?;
        Ok(v.remove(0))
    }

    /// Make `count` new boxes from this box's present state, or from its snapshot
    /// `opts.snapshot`. With memory (a running or paused box, or a memory snapshot) they
    /// start at once where the source was; otherwise they are created stopped with a
    /// copy of its disk. Each has its own disk, id, hostname, network helper and random
    /// seed. Published ports are not cloned (a host port serves one box). If one clone
    /// fails, those made by this call are removed.
    pub async fn clone_boxes(
        &self,
        opts: CloneOptions,
        count: usize,
    ) -> Result<Vec<LiteBox>, crate::Error> {
        self.ctx.check_open()?;
        if count == 0 || count > 64 {
            return Err(BoxError::InvalidOption(format!(
                "clone count {count} is out of range (1 to 64)"
            ))
            .into());
        }
        if let Some(n) = &opts.name {
            super::validate_name(n)?;
        }
        super::options::validate_labels(&opts.labels)?;
        let snap_dir = match &opts.snapshot {
            Some(s) => Some(self.snapshot_dir(s)?),
            None => None,
        };
        let mut l = self.lock_reconciled().await?;
        // Under the lock, a snapshot taken for a clone is one a killed clone left.
        let box_dir = self.home().box_paths(&self.id).dir;
        blocking::run(move || super::snapshot::sweep_partials(&box_dir)).await;
        if !l.row.config.volumes.is_empty() {
            return Err(SnapshotError::CloneVolumes {
                id: self.id.clone(),
            }
            .into());
        }
        let paths = self.home().box_paths(&self.id);
        // Where the clones' disk and memory come from; a snapshot taken for them goes
        // once they run.
        let mut implicit = None;
        let (source_dir, disk, memory) = match &snap_dir {
            Some(d) => {
                let dd = d.clone();
                if !blocking::run(move || dd.join(INFO).exists()).await {
                    return Err(self.no_snapshot(opts.snapshot.as_deref().unwrap_or("")));
                }
                (d.clone(), d.join(DISK), saved_state_complete(d))
            }
            None => match l.row.status.state() {
                BoxState::Running => {
                    let d = self
                        .snapshots_dir()
                        .join(format!(".clone-{}", crate::util::random_id()));
                    let info = SnapshotInfo {
                        id: crate::util::random_id(),
                        box_id: self.id.clone(),
                        name: "clone".into(),
                        created_at: i64::try_from(now_secs()).unwrap_or(i64::MAX),
                        memory: true,
                        container_disk_bytes: 0,
                        size_bytes: 0,
                    };
                    self.snapshot_locked(&mut l, &d, info, false).await?;
                    implicit = Some(d.clone());
                    (d.clone(), d.join(DISK), true)
                }
                BoxState::Paused => (paths.paused_dir(), paths.disk(), true),
                BoxState::Configured | BoxState::Stopped | BoxState::Failed => {
                    (paths.dir.clone(), paths.disk(), false)
                }
                state => {
                    return Err(BoxError::Busy {
                        id: self.id.clone(),
                        state,
                    }
                    .into());
                }
            },
        };
        let saved_meta = if memory {
            let (id, d) = (self.id.clone(), source_dir.clone());
            let meta = blocking::run(move || read_meta(&id, &d)).await?;
            super::snapshot::check_compatible(&self.ctx, &self.id, &meta).await?;
            Some(meta)
        } else {
            None
        };
        let result = self
            .make_clones(&l.row, &opts, count, &disk, saved_meta, &source_dir)
            .await;
        if let Some(d) = implicit {
            blocking::run(move || {
                let _ = remove_snapshot_dir(&d);
            })
            .await;
        }
        drop(l);
        result
    }

    async fn make_clones(
        &self,
        source: &BoxRow,
        opts: &CloneOptions,
        count: usize,
        disk: &Path,
        meta: Option<super::snapshot::SavedMeta>,
        source_dir: &Path,
    ) -> Result<Vec<LiteBox>, crate::Error> {
        let mut made: Vec<LiteBox> = Vec::new();
        for i in 1..=count {
            let name = opts.name.as_ref().map(|n| {
                if count == 1 {
                    n.clone()
                } else {
                    format!("{n}-{i}")
                }
            });
            let clone = match self.make_clone_row(source, name, &opts.labels, disk).await {
                Ok(c) => c,
                Err(e) => {
                    remove_all(made).await;
                    return Err(e);
                }
            };
            let r = async {
                if let Some(meta) = &meta {
                    let mut cl = clone.lock_reconciled().await?;
                    let fork = Saved {
                        meta: meta.clone(),
                        dir: source_dir.to_path_buf(),
                        own: false,
                        kind: StartKind::Cloned {
                            source: self.id.clone(),
                            snapshot: opts.snapshot.clone(),
                        },
                    };
                    clone.start_from(&mut cl, Some(fork)).await?;
                }
                Ok::<(), crate::Error>(())
            }
            .await;
            made.push(clone);
            if let Err(e) = r {
                remove_all(made).await;
                return Err(e);
            }
        }
        tracing::info!(box_id = %self.id, clones = count, memory = meta.is_some(), "box cloned");
        Ok(made)
    }

    /// A new box row and directory like `source`'s, with a copy of `disk`. On failure,
    /// nothing is left.
    async fn make_clone_row(
        &self,
        source: &BoxRow,
        name: Option<String>,
        labels: &std::collections::BTreeMap<String, String>,
        disk: &Path,
    ) -> Result<LiteBox, crate::Error> {
        let id = crate::util::random_id();
        let mut config = source.config.clone();
        // Labels under `boxlite.` belong to the frontend that set them (`boxlite mcp`
        // marks the boxes a session removes); a clone carries them only if given again.
        config.labels.retain(|k, _| !k.starts_with(RESERVED_LABELS));
        config
            .labels
            .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        super::options::validate_labels(&config.labels)?;
        config.auto_remove = false;
        config.network.ports.clear();
        config.warm_start = false;
        let row = BoxRow {
            id: id.clone(),
            name,
            created_at: now_secs(),
            config,
            status: BoxStatus::creating(),
        };
        let home = self.home().clone();
        let lock = super::lock_new_box(&home, &id).await?;
        let (disk, src_secrets) = (disk.to_path_buf(), home.box_paths(&source.id).secrets_dir());
        let made = blocking::run(move || {
            home.db.insert(&row)?;
            let mut row = row;
            let paths = home.box_paths(&row.id);
            let r = (|| {
                std::fs::create_dir_all(&paths.dir)
                    .map_err(io_err(format!("creating {}", paths.dir.display())))?;
                if src_secrets.is_dir() {
                    copy_secrets(&src_secrets, &paths.secrets_dir())?;
                }
                copy_into(&disk, &paths.disk())?;
                row.status
                    .transition(BoxState::Configured)
                    .map_err(|e| BoxError::transition(&row.id, e))?;
                home.db.update_status(&row.id, &row.status)?;
                Ok::<(), crate::Error>(())
            })();
            if let Err(e) = r {
                let _ = super::reconcile::remove_blocking(&home, &row);
                return Err(e);
            }
            Ok(row)
        })
        .await;
        match made {
            Ok(row) => {
                drop(lock);
                Ok(LiteBox::handle(self.ctx.clone(), id, Some(row.config)))
            }
            Err(e) => {
                lock.remove_file();
                Err(e)
            }
        }
    }
}

/// Remove the clones of a clone call that failed.
async fn remove_all(made: Vec<LiteBox>) {
    for c in made {
        if let Err(e) = c.remove(true).await {
            tracing::warn!(box_id = %c.id, error = %crate::util::error_chain(&e), "removing a clone of a failed clone call");
        }
    }
}

/// Copy a box's stored secret files (private, 0600 in a 0700 directory).
fn copy_secrets(src: &Path, dst: &Path) -> Result<(), crate::Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dst)
        .map_err(io_err(format!("creating {}", dst.display())))?;
    for e in std::fs::read_dir(src).map_err(io_err(format!("reading {}", src.display())))? {
        let e = e.map_err(io_err(format!("reading {}", src.display())))?;
        if e.file_type().is_ok_and(|t| t.is_file()) {
            copy_into(&e.path(), &dst.join(e.file_name()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_single_safe_path_components() {
        let ok = ["a", "before-upgrade", "v1.2_3", &"x".repeat(128)]
            .map(|n| validate_snapshot_name(n).is_ok());
        let bad = [
            "",
            ".",
            "..",
            ".hidden",
            "-x",
            "a/b",
            "../x",
            "a b",
            "é",
            &"x".repeat(129),
        ];

        assert_eq!(ok, [true; 4]);
        for n in bad {
            let e = validate_snapshot_name(n).unwrap_err();
            assert!(e.to_string().contains(&format!("{n:?}")), "{n:?}: {e}");
        }
    }
}
