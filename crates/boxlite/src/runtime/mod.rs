//! The runtime: the library's front door. One `BOXLITE_HOME`, its boxes, images and
//! volumes. Every frontend (the CLI, and the REST server and SDKs to come) is a thin
//! layer over this API.
//!
//! Files: `boxes.rs` (create, look up, list, remove, reconcile, shut down), `images.rs`
//! (pull, load, list, remove, prune, logins), `volumes.rs`.

mod boxes;
mod images;
mod volumes;
pub use images::RemovedImage;
pub use volumes::VolumeInfo;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::assets::AssetError;
use crate::context::{Context, SHIM, shim_binary};
use crate::images::ImageStore;
use crate::model::BoxState;
use crate::util::blocking;
use crate::vmm::accel::AccelChoice;
use crate::vmm::qemu::Qemu;

/// How to open a runtime.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// `BOXLITE_HOME`; default `$BOXLITE_HOME`, else `~/.boxlite`.
    pub home: Option<PathBuf>,
    /// Guest assets directory; default: `$BOXLITE_ASSETS`, else `assets/` beside the
    /// running binary, else `~/.local/share/boxlite/assets`.
    pub assets: Option<PathBuf>,
    /// Settings file (registries, `[network]`); default `BOXLITE_HOME/config.toml`
    /// (optional there, required when named here).
    pub config: Option<PathBuf>,
    /// Where image bases are built; default `$BOXLITE_IMAGE_BUILDER`, else
    /// [`ImageBuilder::Auto`](crate::model::ImageBuilder::Auto).
    pub image_builder: Option<crate::model::ImageBuilder>,
    /// Auto-pause for every box whose options leave it unset (`BoxOptions::auto_pause`):
    /// pause it after this long without an exec, attach or file transfer. Default:
    /// `$BOXLITE_AUTO_PAUSE` (seconds, or with an `s`/`m`/`h` suffix), else never.
    /// Boxes that cannot be paused (volumes, published ports) are left out.
    pub auto_pause: Option<std::time::Duration>,
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

use crate::util::random_id;

/// The boxlite runtime. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Boxlite {
    ctx: Arc<Context>,
    images: ImageStore,
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
    /// How the host reaches each box's agent: one virtio-serial port, multiplexed by the
    /// box's shim.
    pub agent_channel: &'static str,
    /// Where image bases are built, and why.
    pub image_builder: String,
    /// The host's `mke2fs` and its version, or why there is none.
    pub mke2fs: Result<String, String>,
    /// Where guest RAM files live while boxes run (tmpfs).
    pub ram_dir: PathBuf,
    pub assets: Result<PathBuf, String>,
    pub kernel: Result<PathBuf, String>,
    pub kernel_release: Option<String>,
    pub initramfs: Result<PathBuf, String>,
    pub virtiofsd: Result<PathBuf, String>,
    pub builtin_images: Vec<String>,
    pub boxes: usize,
    pub running: usize,
    pub volumes: usize,
    pub monitor: Result<PathBuf, String>,
    /// The network helper, `boxlite-net`: boxes with a network need it.
    pub network_helper: Result<PathBuf, String>,
    pub database: PathBuf,
    /// Whether helpers are jailed (`BOXLITE_JAIL`), and each wall of the jail on this
    /// host: active or not, and why.
    pub jail: bool,
    pub walls: Vec<crate::jailer::Wall>,
}

impl Boxlite {
    /// Open a runtime and reconcile its home with reality: boxes whose VM died are
    /// recorded as stopped, interrupted operations are finished (their processes ended),
    /// abandoned image builds are cleaned up, leftover sockets, lock files and
    /// directories are swept. Fails on an invalid `BOXLITE_ACCEL`, a missing QEMU or an
    /// unusable state database; missing assets are reported when a box first needs them.
    ///
    /// This does blocking I/O (SQLite, ending leftover processes) on the calling thread:
    /// from async code, use [`Boxlite::open`].
    pub fn new(opts: RuntimeOptions) -> Result<Self, crate::Error> {
        let home = opts.home.unwrap_or_else(default_home);
        let mut ctx = Context::open(&home, opts.assets)?;
        if let Some(b) = opts.image_builder {
            ctx.image_builder = b;
        }
        if let Some(c) = opts.config {
            ctx.config_file = (c, true);
        }
        if let Some(d) = opts.auto_pause {
            ctx.auto_pause_secs = crate::litebox::auto_pause_secs(d)?;
        }
        tracing::info!(accel = %ctx.accel.accel, reason = %ctx.accel.reason, "accelerator chosen");
        let rt = Boxlite {
            images: ImageStore::new(ctx.layout().images_dir()),
            ctx: Arc::new(ctx),
        };
        rt.reconcile_blocking()?;
        Ok(rt)
    }

    /// [`Boxlite::new`] on the blocking pool, for callers already on an async runtime
    /// (a server opening a home while it serves others).
    pub async fn open(opts: RuntimeOptions) -> Result<Self, crate::Error> {
        blocking::run(move || Boxlite::new(opts)).await
    }

    /// Open with defaults from the environment.
    pub fn from_env() -> Result<Self, crate::Error> {
        Boxlite::new(RuntimeOptions::default())
    }

    pub fn home(&self) -> &Path {
        self.ctx.layout().home()
    }

    pub fn accelerator(&self) -> &AccelChoice {
        &self.ctx.accel
    }

    /// What `boxlite info` shows: the accelerator, QEMU, assets, helpers and counts.
    /// How this runtime jails box helpers (`BOXLITE_JAIL`, `BOXLITE_JAIL_SECCOMP`).
    pub fn jail(&self) -> crate::jailer::Settings {
        self.ctx.jail
    }

    pub async fn info(&self) -> RuntimeInfo {
        let ctx = self.ctx.clone();
        let volumes = self.volumes().await.map(|v| v.len()).unwrap_or(0);
        blocking::run(move || {
            // One read of the rows serves both counts.
            let rows = ctx.home.db.list().unwrap_or_default();
            let assets = ctx.assets();
            let s = |r: Result<PathBuf, AssetError>| r.map_err(|e| e.to_string());
            RuntimeInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                home: ctx.layout().home().to_path_buf(),
                accelerator: ctx.accel.accel.to_string(),
                accelerator_reason: ctx.accel.reason.clone(),
                vmm: ctx.vmm.name().into(),
                vmm_binary: Qemu::locate()
                    .map(|q| q.binary().to_path_buf())
                    .unwrap_or_default(),
                vmm_version: ctx.vmm.version().map_err(|e| e.to_string()),
                agent_channel: "virtio-serial, multiplexed by boxlite-shim",
                image_builder: crate::builder::describe(ctx.image_builder),
                mke2fs: crate::builder::mke2fs()
                    .map(|m| format!("{} {}", m.path.display(), m.version))
                    .map_err(str::to_string),
                ram_dir: crate::layout::ram_root(),
                jail: ctx.jail.enabled,
                walls: crate::jailer::walls(ctx.jail),
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
                virtiofsd: ctx.virtiofsd_binary().map_err(|e| e.to_string()),
                builtin_images: assets
                    .as_ref()
                    .map(|a| a.builtin_images().keys().cloned().collect())
                    .unwrap_or_default(),
                boxes: rows.len(),
                running: rows
                    .iter()
                    .filter(|r| r.status.state() == BoxState::Running)
                    .count(),
                volumes,
                monitor: shim_binary().ok_or_else(|| format!("{SHIM} not found; set BOXLITE_SHIM")),
                network_helper: crate::context::net_binary().map_err(|e| e.to_string()),
                database: ctx.home.db.path().to_path_buf(),
            }
        })
        .await
    }
}
