//! Boxes on the runtime: create, look up, list, remove, reconcile the home, shut down.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Boxlite;
use crate::db::DbError;
use crate::images::Image;
use crate::layout::SocketPaths;
use crate::litebox::reconcile::{reconcile_blocking, remove_blocking};
use crate::litebox::{self, BoxError, BoxInfo, BoxOptions, LiteBox, now_secs};
use crate::model::{
    BoxConfig, BoxRow, BoxState, BoxStatus, LEGACY_RECORD, SecretValue, VolumeMount, legacy_row,
};
use crate::net::secrets::Planned;
use crate::util::blocking;
use crate::util::lock::{FileLock, LockMode};

/// Options that passed every check that does not need the image.
struct Checked {
    opts: BoxOptions,
    volumes: Vec<VolumeMount>,
    secrets: Planned,
}

impl Checked {
    /// The last check, once the image is known: the disk must hold it. Returns the disk
    /// size in bytes.
    fn disk_bytes(&self, image: &Image, base_bytes: u64) -> Result<u64, BoxError> {
        match self.opts.disk_size_mib {
            Some(mib) if mib << 20 < base_bytes => Err(BoxError::InvalidOption(format!(
                "disk size {mib} MiB is smaller than image {} ({} MiB); give at least {} MiB",
                image.reference,
                base_bytes.div_ceil(1 << 20),
                base_bytes.div_ceil(1 << 20)
            ))),
            Some(mib) => Ok(mib << 20),
            None => Ok(base_bytes),
        }
    }
}

impl Boxlite {
    /// Every check of a box's options, in one place, before anything is pulled or
    /// created: the options themselves, then the volumes (each spec, and host paths
    /// through the gate), then the secrets (each source read once, here). The disk size
    /// is checked against the image once it is known.
    async fn check(&self, opts: BoxOptions) -> Result<Checked, crate::Error> {
        opts.validate()?;
        let volumes = self.plan_volumes(&opts.volumes)?;
        let secrets = if opts.secrets.is_empty() {
            Planned::default()
        } else {
            let s = opts.secrets.clone();
            blocking::run(move || crate::net::secrets::plan(&s))
                .await
                .map_err(BoxError::Secret)?
        };
        Ok(Checked {
            opts,
            volumes,
            secrets,
        })
    }

    /// Create a box: resolve its image (pulling it if needed) and give it a disk. Does not
    /// boot it.
    ///
    /// The row is inserted first, in state Creating, under the box's lock; the files
    /// follow, and the box becomes Configured. A creation killed halfway leaves a row
    /// that reconciliation marks Failed and that can be removed like any other; a
    /// creation that fails removes what it made.
    pub async fn create(&self, opts: BoxOptions) -> Result<LiteBox, crate::Error> {
        self.ctx.check_open()?;
        let checked = self.check(opts).await?;
        let image = self.image(&checked.opts.image).await?;
        let base_bytes = {
            let base = image.base.clone();
            blocking::run(move || std::fs::metadata(&base).map(|m| m.len()))
                .await
                .map_err(|source| crate::Error::Io {
                    context: format!("reading {}", image.base.display()),
                    source,
                })?
        };
        let disk_bytes = checked.disk_bytes(&image, base_bytes)?;
        let Checked {
            opts,
            volumes,
            secrets,
        } = checked;
        // Every command sees each secret's placeholder, like the box's own variables
        // (which cannot take the same names).
        let mut env = opts.env.clone();
        env.extend(crate::net::secrets::box_env(&secrets.records));
        let run = image
            .config
            .clone()
            .with_overrides(opts.entrypoint.clone(), opts.cmd.clone())
            .with_box_defaults(&env, opts.working_dir.clone(), opts.user.clone());
        let id = super::random_id();
        let home = self.ctx.home.clone();
        let lock = litebox::lock_new_box(&home, &id).await?;
        let row = BoxRow {
            id: id.clone(),
            name: opts.name.clone(),
            created_at: now_secs(),
            config: BoxConfig {
                image: image.reference.clone(),
                image_digest: image.digest.clone(),
                memory_mib: opts.memory_mib,
                cpus: opts.cpus,
                auto_remove: opts.auto_remove,
                health: opts.health,
                volumes,
                run,
                disk_bytes,
                network: opts.network.clone(),
                secrets: secrets.records,
                warm_start: opts.warm_start,
                capabilities: opts.capabilities()?,
                labels: opts.labels.clone(),
                auto_pause_secs: opts.auto_pause_secs.unwrap_or(
                    if opts.volumes.is_empty() && opts.network.ports.is_empty() {
                        self.ctx.auto_pause_secs
                    } else {
                        0
                    },
                ),
            },
            status: BoxStatus::creating(),
        };
        let base = image.base.clone();
        let values = secrets.values;
        let (row, lock) = blocking::run(move || {
            let r = make_box(&home, &row, &base, &values);
            match r {
                Ok(row) => Ok((row, lock)),
                Err(e) => {
                    lock.remove_file();
                    Err(e)
                }
            }
        })
        .await?;
        drop(lock);
        tracing::info!(box_id = %id, image = %image.reference, name = row.name.as_deref().unwrap_or(""), "box created");
        Ok(LiteBox::handle(self.ctx.clone(), id, Some(row.config)))
    }

    /// A handle to an existing box, by full id, name, or unique id prefix (in that
    /// order of precedence).
    pub async fn get(&self, key: &str) -> Result<LiteBox, crate::Error> {
        if key.is_empty() {
            return Err(BoxError::NotFound(key.into()).into());
        }
        let k = key.to_string();
        let (ids, by_name) = self.ctx.home.db(move |db| db.lookup(&k)).await?;
        let id = if ids.iter().any(|i| i == key) {
            key.to_string()
        } else if let Some(id) = by_name {
            id
        } else {
            match ids.as_slice() {
                [one] => one.clone(),
                [] => return Err(BoxError::NotFound(key.into()).into()),
                many => {
                    return Err(BoxError::Ambiguous {
                        prefix: key.into(),
                        candidates: many.join(", "),
                    }
                    .into());
                }
            }
        };
        Ok(LiteBox::handle(self.ctx.clone(), id, None))
    }

    /// The box named `name`, or a new one created from `options` under that name.
    /// Returns whether it was created. Safe against a concurrent creation of the same
    /// name (one creates, the other gets it). `options.name`, if set, must be `name`.
    pub async fn get_or_create(
        &self,
        name: &str,
        mut options: BoxOptions,
    ) -> Result<(LiteBox, bool), crate::Error> {
        litebox::validate_name(name)?;
        match &options.name {
            Some(n) if n != name => {
                return Err(BoxError::InvalidOption(format!(
                    "the options name the box {n:?}, but {name:?} was asked for"
                ))
                .into());
            }
            _ => options.name = Some(name.to_string()),
        }
        if let Some(b) = self.get_by_name(name).await? {
            return Ok((b, false));
        }
        match self.create(options).await {
            Ok(b) => Ok((b, true)),
            Err(crate::Error::Db(DbError::NameTaken(_))) => match self.get_by_name(name).await? {
                Some(b) => Ok((b, false)),
                None => Err(BoxError::NotFound(name.into()).into()),
            },
            Err(e) => Err(e),
        }
    }

    async fn get_by_name(&self, name: &str) -> Result<Option<LiteBox>, crate::Error> {
        let n = name.to_string();
        let (_, by_name) = self.ctx.home.db(move |db| db.lookup(&n)).await?;
        Ok(by_name.map(|id| LiteBox::handle(self.ctx.clone(), id, None)))
    }

    /// Every box, oldest first, each reconciled with reality unless another process is
    /// working on it right now.
    pub async fn list(&self) -> Result<Vec<BoxInfo>, crate::Error> {
        let home = &self.ctx.home;
        let mut out = Vec::new();
        for row in home.db(|db| db.list()).await? {
            match litebox::reconcile_if_idle(home, row).await {
                Ok(row) => out.push(BoxInfo::from_row(home, &row)),
                Err(crate::Error::Box(BoxError::NotFound(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Remove a box: its processes (when forced), disk, logs and sockets.
    pub async fn remove(&self, b: &LiteBox, force: bool) -> Result<(), crate::Error> {
        b.remove(force).await
    }

    /// Stop every box this runtime started (each within `timeout`, then killed), and
    /// refuse new work from then on with [`crate::Error::ShutDown`]. Boxes started by
    /// other processes are left running. Returns the first failure, after trying all.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), crate::Error> {
        let ids = self.ctx.close();
        let mut set = tokio::task::JoinSet::new();
        for id in ids {
            let b = LiteBox::handle(self.ctx.clone(), id, None);
            set.spawn(async move { b.stop(timeout).await });
        }
        let mut first = None;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(())) | Ok(Err(crate::Error::Box(BoxError::NotFound(_)))) => {}
                Ok(Err(e)) => {
                    first.get_or_insert(e);
                }
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Bring the whole home in line with reality (see [`Boxlite::new`]). Boxes another
    /// process is operating on are left alone.
    pub async fn reconcile(&self) -> Result<(), crate::Error> {
        let rt = self.clone();
        blocking::run(move || rt.reconcile_blocking()).await?;
        // What the blocking pass cannot do: restart monitors of running boxes.
        self.list().await.map(|_| ())
    }

    /// [`Boxlite::reconcile`] on the calling thread, except for restarting monitors
    /// (which the next operation on such a box does).
    pub(super) fn reconcile_blocking(&self) -> Result<(), crate::Error> {
        let home = &self.ctx.home;
        // Box directories without a row. A `box.json` in one is a box of version 0.1,
        // from before the state database: import it. Anything else is a leftover (rows
        // are inserted before a box's directory is made and deleted after it is gone),
        // and a fresh lookup tells it from a box being created right now.
        for (name, path) in self.entries_without_a_box(&home.layout.boxes_dir())? {
            let legacy = path.join(LEGACY_RECORD);
            match std::fs::read_to_string(&legacy) {
                Ok(text) => self.import_legacy(&name, &text, &legacy)?,
                Err(_) => {
                    tracing::info!(dir = %path.display(), "removing box directory without a box");
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
        // Every box nobody is working on, through the same decision as everywhere. One
        // box that cannot be reconciled does not stop the others (or the command).
        for row in home.db.list()? {
            let lock_path = home.layout.lock_path(&row.id);
            if !litebox::reconcile::needs_reconcile(home, &row) {
                continue;
            }
            let Ok(Some(lock)) = FileLock::try_acquire(&lock_path, LockMode::Exclusive) else {
                continue;
            };
            let Some(mut row) = home.db.get(&row.id)? else {
                continue;
            };
            if let Err(e) = reconcile_blocking(home, &mut row, &lock) {
                tracing::warn!(box_id = %row.id, error = %crate::util::error_chain(&e), "reconciling a box");
            }
        }
        let rows = home.db.list()?;
        // Socket directories of this home whose box is gone or not running.
        let root = crate::layout::socket_root();
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let sockets = SocketPaths { dir: e.path() };
            if sockets.owner_home().as_deref() != Some(home.layout.home()) {
                continue;
            }
            let prefix = e.file_name().to_string_lossy().to_string();
            if prefix.starts_with(crate::builder::BUILD_PREFIX) {
                // An image build's: stale once the build no longer holds its lock.
                if !crate::builder::is_live_build(&self.images, &prefix) {
                    sockets.remove();
                }
                continue;
            }
            let owner = rows.iter().find(|r| r.id.starts_with(&prefix));
            // Hold the box's lock while removing, so a start cannot begin in between.
            let (stale, _held) = match owner {
                None => (home.db.lookup(&prefix)?.0.is_empty(), None),
                Some(r) if !r.status.state().is_active() => {
                    let held =
                        FileLock::try_acquire(&home.layout.lock_path(&r.id), LockMode::Exclusive)
                            .ok()
                            .flatten();
                    // Judge by the row as it is now, under the lock, not the snapshot.
                    let idle = held.is_some()
                        && home
                            .db
                            .get(&r.id)?
                            .is_none_or(|now| !now.status.state().is_active());
                    (idle, held)
                }
                Some(_) => (false, None),
            };
            if stale {
                tracing::info!(dir = %sockets.dir.display(), "removing stale socket directory");
                sockets.remove();
            }
        }
        crate::builder::sweep(&self.images);
        for (name, path) in self.entries_without_a_box(&home.layout.locks_dir())? {
            if let Ok(Some(lock)) = FileLock::try_acquire(&path, LockMode::Exclusive)
                && home.db.get(&name)?.is_none()
            {
                lock.remove_file();
            }
        }
        Ok(())
    }

    /// Entries of a per-box directory (`boxes/`, `locks/`) whose name is no box's id.
    fn entries_without_a_box(&self, dir: &Path) -> Result<Vec<(String, PathBuf)>, crate::Error> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if self.ctx.home.db.get(&name)?.is_none() {
                out.push((name, e.path()));
            }
        }
        Ok(out)
    }

    /// Move a version 0.1 box record into the database. One that does not parse is kept
    /// as a Failed row that says so, so the box can still be listed and removed.
    fn import_legacy(&self, id: &str, text: &str, file: &Path) -> Result<(), crate::Error> {
        let valid_id = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid_id {
            return Ok(());
        }
        let row = legacy_row(id, text).unwrap_or_else(|| BoxRow {
            id: id.to_string(),
            name: None,
            created_at: 0,
            config: BoxConfig::default(),
            status: BoxStatus::unreadable(format!("unreadable legacy record {}", file.display())),
        });
        self.ctx.home.db.insert(&row)?;
        let _ = std::fs::remove_file(file);
        tracing::info!(box_id = id, "imported a box record from version 0.1");
        Ok(())
    }
}

/// Insert a box's row (Creating), make its directory, its secrets' files, disk and volume
/// directories, and mark it Configured. On failure, removes what it made (the row
/// included). Blocking: SQLite and `qemu-img`.
fn make_box(
    home: &crate::context::Home,
    row: &BoxRow,
    base: &Path,
    secret_values: &[(String, SecretValue)],
) -> Result<BoxRow, crate::Error> {
    home.db.insert(row)?;
    let mut row = row.clone();
    let paths = home.box_paths(&row.id);
    let mut new_named = Vec::new();
    let made = std::fs::create_dir_all(&paths.dir)
        .map_err(|source| crate::Error::Io {
            context: format!("creating {}", paths.dir.display()),
            source,
        })
        .and_then(|()| {
            crate::net::secrets::store(&paths, secret_values).map_err(BoxError::Secret)?;
            Ok(())
        })
        .and_then(|()| {
            Ok(crate::disk::create_overlay(
                base,
                &paths.disk(),
                row.config.disk_bytes,
            )?)
        })
        .and_then(|()| {
            new_named = crate::volumes::create_dirs(&home.layout, &row.config.volumes)?;
            Ok(())
        })
        .and_then(|()| {
            row.status
                .transition(BoxState::Configured)
                .map_err(|e| BoxError::transition(&row.id, e))?;
            Ok(home.db.update_status(&row.id, &row.status).map(|_| ())?)
        });
    if let Err(e) = made {
        let _ = remove_blocking(home, &row);
        for d in new_named {
            let _ = std::fs::remove_dir(d);
        }
        return Err(e);
    }
    Ok(row)
}
