//! The shared runtime context: one `BOXLITE_HOME` (its layout and state database), and
//! for runtimes that boot VMs, the accelerator, the VMM engine, the guest assets and the
//! helper binaries.
//!
//! It sits below the box lifecycle and the image builder, which receive it; nothing here
//! calls back up into them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::assets::{AssetError, Assets};
use crate::db::{Db, DbError};
use crate::layout::{BoxPaths, Layout};
use crate::util::process::find_binary;
use crate::vmm::accel::{self, Accel, AccelChoice};
use crate::vmm::qemu::Qemu;
use crate::vmm::{Vmm, VmmError};

/// The shim binary's name: one per running box (or image build), owner of the agent
/// channel, and the box's monitor.
pub const SHIM: &str = "boxlite-shim";
pub const NET_HELPER: &str = "boxlite-net";

/// One home: where things are and the state database. Cheap to clone. This is all the
/// box monitor opens.
#[derive(Debug, Clone)]
pub(crate) struct Home {
    pub layout: Layout,
    pub db: Db,
}

impl Home {
    /// Open a home, creating its directories (0700) and migrating its database.
    pub fn open(home: &Path) -> Result<Home, crate::Error> {
        let layout = Layout::new(home);
        layout.ensure().map_err(|source| crate::Error::Io {
            context: format!("creating {}", layout.home().display()),
            source,
        })?;
        let db = Db::open(&layout.db_path())?;
        Ok(Home { layout, db })
    }

    pub fn box_paths(&self, id: &str) -> BoxPaths {
        BoxPaths {
            dir: self.layout.box_dir(id),
        }
    }

    /// Run `f` against the state database on the blocking pool: SQLite may wait up to
    /// its busy timeout for another process's write.
    pub async fn db<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.db.clone();
        crate::util::blocking::run(move || f(&db)).await
    }
}

/// What a runtime that boots VMs shares with every box handle it gives out.
#[derive(Debug)]
pub(crate) struct Context {
    pub home: Home,
    pub accel: AccelChoice,
    pub vmm: Arc<dyn Vmm>,
    pub boot_timeout: Duration,
    /// How long a cold boot may go without its agent starting before it is taken for
    /// stalled, stopped and booted once more (`None`: never; see [`boot_stall`]).
    pub boot_stall: Option<Duration>,
    /// Resolvers and the test guard for every box's network helper.
    pub net: crate::net::NetSettings,
    /// The runtime's settings file (`--config`, which must then exist, or
    /// `BOXLITE_HOME/config.toml`), read where it is needed: pulls, and box starts
    /// (`[network] upstream_ca_files`).
    pub config_file: (PathBuf, bool),
    /// Where image bases are built.
    pub image_builder: crate::model::ImageBuilder,
    /// How helpers are jailed (`BOXLITE_JAIL`, `BOXLITE_JAIL_SECCOMP`).
    pub jail: crate::jailer::Settings,
    /// Auto-pause for boxes whose options leave it unset, in seconds (0: never):
    /// [`crate::RuntimeOptions::auto_pause`], else `BOXLITE_AUTO_PAUSE`.
    pub auto_pause_secs: u32,
    assets_dir: Option<PathBuf>,
    assets: OnceLock<Arc<Assets>>,
    /// The engine's version line, asked once (it runs the binary).
    engine_version: tokio::sync::OnceCell<String>,
    /// Boxes this runtime started, which [`Context::shut_down`] stops.
    started: Mutex<HashSet<String>>,
    closed: AtomicBool,
    /// What every handle of a box in this runtime shares (its agent connection above
    /// all), kept while the box exists, so a handle from `get` and the executions of
    /// earlier handles use one connection. The shim bridges a bounded number of clients
    /// per box (128): one connection per handle, each kept alive by its executions, ran
    /// out under a server that takes a handle per request.
    shared: Mutex<HashMap<String, SharedClient>>,
}

/// The agent connection of a box, shared by its handles in one runtime.
pub(crate) type SharedClient = Arc<tokio::sync::Mutex<Option<crate::portal::AgentClient>>>;

/// Entries of [`Context::shared_client`]'s map before unused ones are dropped.
const SHARED_BOUND: usize = 1024;

impl Context {
    /// Open a home for booting boxes: fails on an invalid `BOXLITE_ACCEL`, a missing QEMU
    /// or an unusable state database.
    pub fn open(home: &Path, assets_dir: Option<PathBuf>) -> Result<Context, crate::Error> {
        let accel = accel::detect()?;
        let qemu = Qemu::locate()?;
        let home = Home::open(home)?;
        let config_file = (home.layout.home().join("config.toml"), false);
        let boot_timeout = std::env::var("BOXLITE_BOOT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(match accel.accel {
                Accel::Tcg => 120,
                Accel::Kvm | Accel::Hvf => 30,
            }));
        let boot_stall = boot_stall(
            accel.accel,
            boot_timeout,
            std::env::var("BOXLITE_BOOT_STALL").ok().as_deref(),
        )
        .map_err(crate::Error::InvalidOption)?;
        Ok(Context {
            home,
            accel,
            vmm: Arc::new(qemu),
            boot_timeout,
            boot_stall,
            net: crate::net::NetSettings::from_env(),
            config_file,
            image_builder: crate::model::ImageBuilder::from_env()
                .map_err(|e| crate::Error::InvalidOption(e.to_string()))?,
            jail: crate::jailer::Settings::from_env()
                .map_err(|e| crate::Error::InvalidOption(e.to_string()))?,
            auto_pause_secs: match std::env::var("BOXLITE_AUTO_PAUSE") {
                Ok(v) => crate::model::pause::parse_auto_pause("BOXLITE_AUTO_PAUSE", &v)
                    .map_err(|e| crate::Error::InvalidOption(e.to_string()))?,
                Err(_) => 0,
            },
            assets_dir,
            assets: OnceLock::new(),
            engine_version: tokio::sync::OnceCell::new(),
            started: Mutex::new(HashSet::new()),
            closed: AtomicBool::new(false),
            shared: Mutex::new(HashMap::new()),
        })
    }

    /// The engine's version line (`qemu-system-x86_64 --version`), which saved states
    /// record and are checked against.
    pub(crate) async fn engine_version(&self) -> Result<String, crate::Error> {
        let vmm = self.vmm.clone();
        self.engine_version
            .get_or_try_init(
                || async move { crate::util::blocking::run(move || vmm.version()).await },
            )
            .await
            .cloned()
            .map_err(Into::into)
    }

    /// The agent connection the handles of box `id` share (none yet: connected on first
    /// use).
    pub(crate) fn shared_client(&self, id: &str) -> SharedClient {
        let mut map = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(id) {
            return s.clone();
        }
        // Boxes removed by other processes leave entries behind; past a bound, drop the
        // ones no handle holds (they are made again on use).
        if map.len() >= SHARED_BOUND {
            map.retain(|_, s| Arc::strong_count(s) > 1);
        }
        let s = SharedClient::default();
        map.insert(id.to_string(), s.clone());
        s
    }

    /// Forget the connection of a removed box.
    pub(crate) fn forget_shared(&self, id: &str) {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    pub fn layout(&self) -> &Layout {
        &self.home.layout
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
        let opened = Arc::new(
            opened.with_stamp_file(self.layout().cache_dir().join("verified-assets.json")),
        );
        Ok(self.assets.get_or_init(|| opened).clone())
    }

    /// Refuse new work once the runtime has been shut down.
    pub fn check_open(&self) -> Result<(), crate::Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(crate::Error::ShutDown);
        }
        Ok(())
    }

    /// Note a box this runtime booted. False when the runtime was shut down meanwhile:
    /// [`Context::close`] did not see the box, so its starter must stop it.
    pub fn note_started(&self, id: &str) -> bool {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        // Under the same lock as `close`: either close sees the box, or we see close.
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        started.insert(id.to_string());
        true
    }

    /// Refuse new work from now on, and return the boxes this runtime started.
    pub fn close(&self) -> Vec<String> {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        self.closed.store(true, Ordering::Release);
        let mut ids: Vec<String> = started.drain().collect();
        ids.sort();
        ids
    }

    /// virtiofsd: see [`Context::helper_binary`].
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

/// Where the shim binary is: `$BOXLITE_SHIM`, else next to the running executable (or
/// one level up, for test binaries in `target/*/deps`), else `PATH`.
pub fn shim_binary() -> Option<PathBuf> {
    sibling_binary(SHIM, "BOXLITE_SHIM")
}

/// The network helper: `$BOXLITE_NET`, else next to the running executable, else `PATH`.
pub fn net_binary() -> Result<PathBuf, VmmError> {
    sibling_binary(NET_HELPER, "BOXLITE_NET").ok_or_else(|| VmmError::BinaryMissing {
        binary: NET_HELPER.into(),
        hint: "it is built with boxlite (cargo build --release puts it next to boxlite), or set BOXLITE_NET; --network none needs no helper".into(),
    })
}

/// A binary built with boxlite: `$env`, else next to the running executable (or one
/// level up, for test binaries in `target/*/deps`), else `PATH`.
fn sibling_binary(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join(name), dir.parent()?.join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .or_else(|| find_binary(name, env))
}

/// How long a cold boot may go without its agent starting (its first console line)
/// before it counts as stalled: `BOXLITE_BOOT_STALL` seconds (0: never), else 30 s under
/// TCG and never on KVM or HVF, and never beyond the boot timeout.
///
/// Under TCG a cold boot of the tickless guest (docs/environment.md, "Where an idle box's
/// CPU goes") stalls in the guest kernel about once in a hundred boots on a loaded host,
/// before its agent runs: the boot CPU's local APIC timer left masked after calibration,
/// or both vCPUs caught in the breakpoint handler while the kernel patches its code.
/// Such a guest never recovers; booting again does. A healthy kernel starts the agent
/// within a few seconds even on a busy 2-core host.
pub(crate) fn boot_stall(
    accel: crate::model::Accel,
    timeout: Duration,
    var: Option<&str>,
) -> Result<Option<Duration>, String> {
    let stall = match var {
        Some(v) => match v.trim().parse::<u64>() {
            Ok(0) => None,
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => {
                return Err(format!(
                    "BOXLITE_BOOT_STALL={v:?} is not a number of seconds (0 turns the stall check off)"
                ));
            }
        },
        None => match accel {
            crate::model::Accel::Tcg => Some(Duration::from_secs(30)),
            crate::model::Accel::Kvm | crate::model::Accel::Hvf => None,
        },
    };
    Ok(stall.filter(|s| *s < timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Accel;

    #[test]
    fn boot_stall_defaults_to_tcg_only_and_takes_the_variable() {
        let t = Duration::from_secs(120);
        assert_eq!(
            boot_stall(Accel::Tcg, t, None),
            Ok(Some(Duration::from_secs(30)))
        );
        assert_eq!(
            boot_stall(Accel::Kvm, Duration::from_secs(30), None),
            Ok(None)
        );
        assert_eq!(
            boot_stall(Accel::Kvm, t, Some("12")),
            Ok(Some(Duration::from_secs(12)))
        );
        assert_eq!(boot_stall(Accel::Tcg, t, Some("0")), Ok(None));
        // Never at or past the boot's own deadline.
        assert_eq!(
            boot_stall(Accel::Tcg, Duration::from_secs(20), None),
            Ok(None)
        );
        let e = boot_stall(Accel::Tcg, t, Some("soon")).unwrap_err();
        assert!(
            e.contains("BOXLITE_BOOT_STALL") && e.contains("\"soon\""),
            "{e}"
        );
    }
}
