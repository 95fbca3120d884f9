//! The runtime: one `BOXLITE_HOME`, its assets, the chosen accelerator and VMM engine.

pub mod assets;
pub mod layout;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use assets::{AssetError, Assets};
use layout::{BoxPaths, Layout};

use crate::images::{Image, ImageStore};
use crate::litebox::{BoxError, BoxOptions, BoxRecord, BoxState, LiteBox};
use crate::util::process::find_binary;
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
}

impl RuntimeInner {
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

    /// vhost-device-vsock: `$BOXLITE_VHOST_VSOCK`, else the copy in the assets, else
    /// `PATH`, else cargo's bin directory.
    pub fn vhost_vsock_binary(&self) -> Result<PathBuf, VmmError> {
        const NAME: &str = "vhost-device-vsock";
        if let Some(p) = std::env::var_os("BOXLITE_VHOST_VSOCK") {
            return Ok(PathBuf::from(p));
        }
        let cargo_bin = || {
            let home = std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
            Some(home.join("bin").join(NAME)).filter(|p| p.is_file())
        };
        self.assets()
            .ok()
            .and_then(|a| a.bin(NAME))
            .or_else(|| find_binary(NAME, "BOXLITE_VHOST_VSOCK"))
            .or_else(cargo_bin)
            .ok_or_else(|| VmmError::BinaryMissing {
                binary: NAME.into(),
                hint: "build the assets with scripts/build-assets.sh (it installs it), run 'cargo install vhost-device-vsock', or set BOXLITE_VHOST_VSOCK".into(),
            })
    }
}

/// The boxlite runtime. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Boxlite {
    inner: Arc<RuntimeInner>,
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
    pub builtin_images: Vec<String>,
    pub boxes: usize,
}

fn new_box_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

impl Boxlite {
    /// Open a runtime. Fails on an invalid `BOXLITE_ACCEL` or a missing QEMU; missing
    /// assets are reported when a box first needs them.
    pub fn new(opts: RuntimeOptions) -> Result<Self, crate::Error> {
        let accel = accel::detect()?;
        let qemu = Qemu::locate()?;
        let home = opts.home.unwrap_or_else(default_home);
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
        tracing::info!(accel = %accel.accel, reason = %accel.reason, "accelerator chosen");
        let images = ImageStore::new(layout.images_dir());
        Ok(Boxlite {
            inner: Arc::new(RuntimeInner {
                accel,
                vmm: Arc::new(qemu),
                vsock_mode: VsockMode::detect(),
                boot_timeout,
                assets_dir: opts.assets,
                assets: OnceLock::new(),
                images,
                layout,
            }),
        })
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

    /// Resolve an image, importing a built-in one on first use.
    pub fn image(&self, reference: &str) -> Result<Image, crate::Error> {
        let assets = self.inner.assets()?;
        Ok(self.inner.images.resolve(reference, &assets)?)
    }

    /// Create a box: resolve its image and give it a disk. Does not boot it.
    pub async fn create(&self, opts: BoxOptions) -> Result<LiteBox, crate::Error> {
        opts.validate()?;
        let image = self.image(&opts.image)?;
        let id = new_box_id();
        let paths = self.inner.box_paths(&id);
        let io_err = |context: String| move |source| crate::Error::Io { context, source };
        std::fs::create_dir_all(&paths.dir)
            .map_err(io_err(format!("creating {}", paths.dir.display())))?;
        let result = (|| {
            crate::disk::create_overlay(&image.base, &paths.disk())?;
            let record = LiteBox::new_record(id.clone(), &opts, image.digest.clone());
            record.save(&paths.record())?;
            Ok::<_, crate::Error>(record)
        })();
        match result {
            Ok(record) => {
                tracing::info!(box_id = %id, image = %image.reference, "box created");
                Ok(LiteBox::from_record(self.inner.clone(), record))
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&paths.dir);
                Err(e)
            }
        }
    }

    fn box_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.inner.layout.boxes_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        ids.sort();
        ids
    }

    /// A handle to an existing box, by full id or unique id prefix.
    pub fn get(&self, id_or_prefix: &str) -> Result<LiteBox, crate::Error> {
        if id_or_prefix.is_empty() {
            return Err(BoxError::NotFound(id_or_prefix.into()).into());
        }
        let matches: Vec<String> = self
            .box_ids()
            .into_iter()
            .filter(|id| id.starts_with(id_or_prefix))
            .collect();
        let id = match matches.as_slice() {
            [one] => one.clone(),
            [] => return Err(BoxError::NotFound(id_or_prefix.into()).into()),
            many => {
                return Err(BoxError::Ambiguous {
                    prefix: id_or_prefix.into(),
                    candidates: many.join(", "),
                }
                .into());
            }
        };
        let mut record = BoxRecord::load(&self.inner.box_paths(&id).record())?;
        // Reconcile: a box recorded as running whose VMM is gone is stopped.
        if record.state == BoxState::Running && !record.vmm_alive() {
            record.state = BoxState::Stopped;
            record.vmm = None;
            record.last_error = Some("the VM process is gone".into());
        }
        Ok(LiteBox::from_record(self.inner.clone(), record))
    }

    /// Remove a box: its processes (when forced), disk, logs and sockets.
    pub async fn remove(&self, b: &LiteBox, force: bool) -> Result<(), crate::Error> {
        let state = b.state().await;
        if matches!(state, BoxState::Running | BoxState::Stopping) {
            if !force {
                return Err(BoxError::Busy {
                    id: b.id().into(),
                    state,
                }
                .into());
            }
            b.kill_now().await;
        }
        let dir = self.inner.box_paths(b.id()).dir;
        std::fs::remove_dir_all(&dir).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(crate::Error::Io {
                    context: format!("removing {}", dir.display()),
                    source: e,
                })
            }
        })?;
        tracing::info!(box_id = %b.id(), "box removed");
        Ok(())
    }

    pub fn info(&self) -> RuntimeInfo {
        let inner = &self.inner;
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
            builtin_images: assets
                .as_ref()
                .map(|a| a.builtin_images().keys().cloned().collect())
                .unwrap_or_default(),
            boxes: self.box_ids().len(),
        }
    }
}
