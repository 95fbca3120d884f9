//! The runtime: one `BOXLITE_HOME`, its assets, the chosen accelerator and VMM engine.

pub mod assets;
mod images;
pub mod layout;
mod volumes;
pub use images::RemovedImage;
pub use volumes::VolumeInfo;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use assets::{AssetError, Assets};
use layout::{BoxPaths, Layout};

use crate::db::Db;
use crate::images::ImageStore;
use crate::litebox::record::{BoxConfig, BoxRow, BoxStatus};
use crate::litebox::{self, BoxError, BoxInfo, BoxOptions, BoxState, LiteBox};
use crate::util::lock::{FileLock, LockMode};
use crate::util::process::{ProcessId, find_binary};
use crate::vmm::accel::{self, AccelChoice};
use crate::vmm::qemu::Qemu;
use crate::vmm::vsock::VsockMode;
use crate::vmm::{Vmm, VmmError};

/// How to open a runtime.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// `BOXLITE_HOME`; default `$BOXLITE_HOME`, else `~/.boxlite`.
    pub home: Option<PathBuf>,
    /// Guest assets directory; default: see [`assets::candidates`].
    pub assets: Option<PathBuf>,
    /// Registry settings file; default `BOXLITE_HOME/config.toml` (optional there, required
    /// when named here).
    pub config: Option<PathBuf>,
}

/// The default home: `$BOXLITE_HOME`, else `~/.boxlite`.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("BOXLITE_HOME") {
        return PathBuf::from(h);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join(".boxlite")
}

#[derive(Debug)]
pub(crate) struct RuntimeInner {
    pub layout: Layout,
    pub accel: AccelChoice,
    pub vmm: Arc<dyn Vmm>,
    pub vsock_mode: VsockMode,
    pub boot_timeout: Duration,
    assets_dir: Option<PathBuf>,
    assets: OnceLock<Arc<Assets>>,
    pub images: ImageStore,
    pub db: Db,
}

impl RuntimeInner {
    /// Open a home without reconciling it: for the box monitor, which works on one box.
    pub(crate) fn open_light(home: &Path) -> Result<RuntimeInner, crate::Error> {
        Self::open(home.to_path_buf(), None)
    }

    fn open(home: PathBuf, assets_dir: Option<PathBuf>) -> Result<RuntimeInner, crate::Error> {
        let accel = accel::detect()?;
        let qemu = Qemu::locate()?;
        let layout = Layout::new(home);
        layout.ensure().map_err(|source| crate::Error::Io {
            context: format!("creating {}", layout.home().display()),
            source,
        })?;
        let boot_timeout = std::env::var("BOXLITE_BOOT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(match accel.accel {
                accel::Accel::Tcg => 120,
                _ => 30,
            }));
        let images = ImageStore::new(layout.images_dir());
        let db = Db::open(&layout.db_path())?;
        Ok(RuntimeInner {
            accel,
            vmm: Arc::new(qemu),
            vsock_mode: VsockMode::detect(),
            boot_timeout,
            assets_dir,
            assets: OnceLock::new(),
            images,
            db,
            layout,
        })
    }

    /// The guest assets, located and opened on first use. Failures are not cached, so
    /// assets built after the runtime was opened are found.
    pub fn assets(&self) -> Result<Arc<Assets>, AssetError> {
        if let Some(a) = self.assets.get() {
            return Ok(a.clone());
        }
        let opened = match &self.assets_dir {
            Some(d) => Assets::open(d)?,
            None => Assets::locate()?,
        };
        let opened =
            Arc::new(opened.with_stamp_file(self.layout.cache_dir().join("verified-assets.json")));
        Ok(self.assets.get_or_init(|| opened).clone())
    }

    pub fn box_paths(&self, id: &str) -> BoxPaths {
        BoxPaths {
            dir: self.layout.box_dir(id),
        }
    }

    /// vhost-device-vsock: see [`RuntimeInner::helper_binary`].
    pub fn vhost_vsock_binary(&self) -> Result<PathBuf, VmmError> {
        self.helper_binary(
            "vhost-device-vsock",
            "BOXLITE_VHOST_VSOCK",
            "build the assets with scripts/build-assets.sh (it builds it), or set BOXLITE_VHOST_VSOCK",
        )
    }

    /// virtiofsd: see [`RuntimeInner::helper_binary`].
    pub fn virtiofsd_binary(&self) -> Result<PathBuf, VmmError> {
        self.helper_binary(
            "virtiofsd",
            "BOXLITE_VIRTIOFSD",
            "volumes need it; build the assets with scripts/build-assets.sh (it installs it), or set BOXLITE_VIRTIOFSD",
        )
    }

    /// A helper binary: `$<env>`, else the copy in the assets, else `PATH`, else cargo's
    /// bin directory.
    fn helper_binary(&self, name: &str, env: &str, hint: &str) -> Result<PathBuf, VmmError> {
        if let Some(p) = std::env::var_os(env) {
            return Ok(PathBuf::from(p));
        }
        let cargo_bin = || {
            let home = std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
            Some(home.join("bin").join(name)).filter(|p| p.is_file())
        };
        self.assets()
            .ok()
            .and_then(|a| a.bin(name))
            .or_else(|| find_binary(name, env))
            .or_else(cargo_bin)
            .ok_or_else(|| VmmError::BinaryMissing {
                binary: name.into(),
                hint: hint.into(),
            })
    }
}

/// The boxlite runtime. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Boxlite {
    inner: Arc<RuntimeInner>,
    config_file: Option<PathBuf>,
}

/// What `boxlite info` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeInfo {
    pub version: String,
    pub home: PathBuf,
    pub accelerator: String,
    pub accelerator_reason: String,
    pub vmm: String,
    pub vmm_binary: PathBuf,
    pub vmm_version: Result<String, String>,
    pub vsock: VsockMode,
    pub assets: Result<PathBuf, String>,
    pub kernel: Result<PathBuf, String>,
    pub kernel_release: Option<String>,
    pub initramfs: Result<PathBuf, String>,
    pub vhost_vsock: Result<PathBuf, String>,
    pub virtiofsd: Result<PathBuf, String>,
    pub builtin_images: Vec<String>,
    pub boxes: usize,
    pub running: usize,
    pub volumes: usize,
    pub monitor: Result<PathBuf, String>,
    pub database: PathBuf,
}

fn new_box_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

impl Boxlite {
    /// Open a runtime and reconcile its home with reality: boxes whose VM died are
    /// recorded as stopped, abandoned operations are finished, leftover sockets, lock
    /// files and directories are swept. Fails on an invalid `BOXLITE_ACCEL`, a missing
    /// QEMU or an unusable state database; missing assets are reported when a box first
    /// needs them.
    pub fn new(opts: RuntimeOptions) -> Result<Self, crate::Error> {
        let home = opts.home.unwrap_or_else(default_home);
        let inner = RuntimeInner::open(home, opts.assets)?;
        tracing::info!(accel = %inner.accel.accel, reason = %inner.accel.reason, "accelerator chosen");
        let rt = Boxlite {
            inner: Arc::new(inner),
            config_file: opts.config,
        };
        rt.reconcile()?;
        Ok(rt)
    }

    /// Open with defaults from the environment.
    pub fn from_env() -> Result<Self, crate::Error> {
        Boxlite::new(RuntimeOptions::default())
    }

    pub fn home(&self) -> &Path {
        self.inner.layout.home()
    }

    pub fn accelerator(&self) -> &AccelChoice {
        &self.inner.accel
    }

    /// Create a box: resolve its image and give it a disk. Does not boot it.
    ///
    /// The row is inserted first, marked as being created, under the box's lock; the
    /// files follow. A creation killed halfway leaves a row that reconciliation marks
    /// Failed and that can be removed like any other.
    pub async fn create(&self, opts: BoxOptions) -> Result<LiteBox, crate::Error> {
        opts.validate()?;
        // Every volume spec is checked before anything is made.
        let volumes = self.plan_volumes(&opts.volumes)?;
        let image = self.image(&opts.image).await?;
        let base_bytes = std::fs::metadata(&image.base)
            .map(|m| m.len())
            .map_err(|source| crate::Error::Io {
                context: format!("reading {}", image.base.display()),
                source,
            })?;
        let disk_bytes = match opts.disk_size_mib {
            Some(mib) if mib << 20 < base_bytes => {
                return Err(BoxError::InvalidOption(format!(
                    "disk size {mib} MiB is smaller than image {} ({} MiB); give at least {} MiB",
                    image.reference,
                    base_bytes.div_ceil(1 << 20),
                    base_bytes.div_ceil(1 << 20)
                ))
                .into());
            }
            Some(mib) => mib << 20,
            None => base_bytes,
        };
        let mut run = image.config.clone();
        if let Some(ep) = &opts.entrypoint {
            run.entrypoint = Some(ep.clone());
            run.cmd = None;
        }
        let rt = &self.inner;
        let id = new_box_id();
        let lock_path = rt.layout.lock_path(&id);
        let lock = FileLock::acquire(&lock_path, LockMode::Exclusive)
            .await
            .map_err(|source| BoxError::Lock {
                id: id.clone(),
                path: lock_path,
                source,
            })?;
        let mut row = BoxRow {
            id: id.clone(),
            name: opts.name.clone(),
            created_at: litebox::now_secs(),
            config: BoxConfig {
                image: image.reference.clone(),
                image_digest: image.digest.clone(),
                memory_mib: opts.memory_mib,
                cpus: opts.cpus,
                auto_remove: opts.auto_remove,
                health: opts.health,
                volumes: volumes.clone(),
                run,
                disk_bytes,
            },
            status: BoxStatus {
                creating: ProcessId::of(std::process::id() as i32).ok(),
                ..BoxStatus::default()
            },
        };
        if let Err(e) = rt.db.insert(&row) {
            lock.remove_file();
            return Err(e.into());
        }
        let paths = rt.box_paths(&id);
        let mut new_named = Vec::new();
        let made = std::fs::create_dir_all(&paths.dir)
            .map_err(|source| crate::Error::Io {
                context: format!("creating {}", paths.dir.display()),
                source,
            })
            .and_then(|()| {
                Ok(crate::disk::create_overlay(
                    &image.base,
                    &paths.disk(),
                    disk_bytes,
                )?)
            })
            .and_then(|()| {
                new_named = crate::volumes::create_dirs(&rt.layout, &volumes)?;
                Ok(())
            })
            .and_then(|()| {
                row.status.creating = None;
                Ok(rt.db.update_status(&id, &row.status).map(|_| ())?)
            });
        if let Err(e) = made {
            let _ = litebox::remove_locked(rt, &row, &lock);
            for d in new_named {
                let _ = std::fs::remove_dir(d);
            }
            return Err(e);
        }
        tracing::info!(box_id = %id, image = %image.reference, name = row.name.as_deref().unwrap_or(""), "box created");
        Ok(LiteBox::handle(rt.clone(), id))
    }

    /// A handle to an existing box, by full id, name, or unique id prefix (in that
    /// order of precedence).
    pub fn get(&self, key: &str) -> Result<LiteBox, crate::Error> {
        if key.is_empty() {
            return Err(BoxError::NotFound(key.into()).into());
        }
        let (ids, by_name) = self.inner.db.lookup(key)?;
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
        Ok(LiteBox::handle(self.inner.clone(), id))
    }

    /// Every box, oldest first, each reconciled with reality unless another process is
    /// working on it right now.
    pub fn list(&self) -> Result<Vec<BoxInfo>, crate::Error> {
        let mut out = Vec::new();
        for row in self.inner.db.list()? {
            match litebox::reconcile_if_idle(&self.inner, row) {
                Ok(row) => out.push(BoxInfo::from_row(&self.inner, &row)),
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

    /// Entries of a per-box directory (`boxes/`, `locks/`) whose name is no box's id.
    fn entries_without_a_box(&self, dir: &Path) -> Result<Vec<(String, PathBuf)>, crate::Error> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if self.inner.db.get(&name)?.is_none() {
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
        let row = litebox::record::legacy_row(id, text).unwrap_or_else(|| BoxRow {
            id: id.to_string(),
            name: None,
            created_at: 0,
            config: BoxConfig::default(),
            status: BoxStatus {
                state: BoxState::Failed,
                last_error: Some(format!("unreadable legacy record {}", file.display())),
                ..BoxStatus::default()
            },
        });
        self.inner.db.insert(&row)?;
        let _ = std::fs::remove_file(file);
        tracing::info!(box_id = id, "imported a box record from version 0.1");
        Ok(())
    }

    /// Bring the whole home in line with reality (see [`Boxlite::new`]). Boxes another
    /// process is operating on are left alone.
    pub fn reconcile(&self) -> Result<(), crate::Error> {
        let rt = &self.inner;
        // Box directories without a row. A `box.json` in one is a box of version 0.1,
        // from before the state database: import it. Anything else is a leftover (rows
        // are inserted before a box's directory is made and deleted after it is gone),
        // and a fresh lookup tells it from a box being created right now.
        for (name, path) in self.entries_without_a_box(&rt.layout.boxes_dir())? {
            let legacy = path.join(litebox::record::LEGACY_RECORD);
            match std::fs::read_to_string(&legacy) {
                Ok(text) => self.import_legacy(&name, &text, &legacy)?,
                Err(_) => {
                    tracing::info!(dir = %path.display(), "removing box directory without a box");
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
        let rows = self.list()?;
        // Socket directories of this home whose box is gone or not running.
        let root = layout::socket_root();
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let sockets = layout::SocketPaths { dir: e.path() };
            if sockets.owner_home().as_deref() != Some(rt.layout.home()) {
                continue;
            }
            let prefix = e.file_name().to_string_lossy().to_string();
            if prefix.starts_with(crate::images::build::BUILD_PREFIX) {
                // An image build's: stale once the build no longer holds its lock.
                if !crate::images::build::is_live_build(&rt.images, &prefix) {
                    sockets.remove();
                }
                continue;
            }
            let owner = rows.iter().find(|r| r.id.starts_with(&prefix));
            // Hold the box's lock while removing, so a start cannot begin in between.
            let (stale, _held) = match owner {
                None => (rt.db.lookup(&prefix)?.0.is_empty(), None),
                Some(r) if !r.state.is_active() => {
                    let held =
                        FileLock::try_acquire(&rt.layout.lock_path(&r.id), LockMode::Exclusive)
                            .ok()
                            .flatten();
                    // Judge by the row as it is now, under the lock, not the snapshot.
                    let idle = held.is_some()
                        && rt
                            .db
                            .get(&r.id)?
                            .is_none_or(|now| !now.status.state.is_active());
                    (idle, held)
                }
                Some(_) => (false, None),
            };
            if stale {
                tracing::info!(dir = %sockets.dir.display(), "removing stale socket directory");
                sockets.remove();
            }
        }
        crate::images::build::sweep(&rt.images);
        for (name, path) in self.entries_without_a_box(&rt.layout.locks_dir())? {
            if let Ok(Some(lock)) = FileLock::try_acquire(&path, LockMode::Exclusive)
                && rt.db.get(&name)?.is_none()
            {
                lock.remove_file();
            }
        }
        Ok(())
    }

    pub fn info(&self) -> RuntimeInfo {
        let inner = &self.inner;
        // One read of the rows serves both counts.
        let rows = inner.db.list().unwrap_or_default();
        let assets = inner.assets();
        let s = |r: Result<PathBuf, AssetError>| r.map_err(|e| e.to_string());
        RuntimeInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            home: inner.layout.home().to_path_buf(),
            accelerator: inner.accel.accel.to_string(),
            accelerator_reason: inner.accel.reason.clone(),
            vmm: inner.vmm.name().into(),
            vmm_binary: Qemu::locate()
                .map(|q| q.binary().to_path_buf())
                .unwrap_or_default(),
            vmm_version: inner.vmm.version().map_err(|e| e.to_string()),
            vsock: inner.vsock_mode,
            assets: assets
                .as_ref()
                .map(|a| a.dir().to_path_buf())
                .map_err(|e| e.to_string()),
            kernel: assets
                .as_ref()
                .map_err(|e| e.to_string())
                .and_then(|a| s(a.kernel())),
            kernel_release: assets.as_ref().ok().map(|a| a.kernel_release().to_string()),
            initramfs: assets
                .as_ref()
                .map_err(|e| e.to_string())
                .and_then(|a| s(a.initramfs())),
            vhost_vsock: inner.vhost_vsock_binary().map_err(|e| e.to_string()),
            virtiofsd: inner.virtiofsd_binary().map_err(|e| e.to_string()),
            builtin_images: assets
                .as_ref()
                .map(|a| a.builtin_images().keys().cloned().collect())
                .unwrap_or_default(),
            boxes: rows.len(),
            running: rows
                .iter()
                .filter(|r| r.status.state == BoxState::Running)
                .count(),
            volumes: self.volumes().map(|v| v.len()).unwrap_or(0),
            monitor: crate::monitor::shim_binary()
                .ok_or_else(|| format!("{} not found; set BOXLITE_SHIM", crate::monitor::SHIM)),
            database: inner.db.path().to_path_buf(),
        }
    }
}
