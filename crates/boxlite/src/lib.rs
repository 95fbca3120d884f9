//! boxlite: an embeddable micro-VM runtime. Each box is one lightweight VM, with its own
//! kernel, running one container image; commands run in it with streamed I/O.
//!
//! ```no_run
//! # async fn demo() -> Result<(), boxlite::Error> {
//! use boxlite::{BoxCommand, BoxOptions, Boxlite};
//!
//! let rt = Boxlite::from_env()?;
//! let b = rt.create(BoxOptions::new("boxlite/busybox")).await?;
//! b.start().await?;
//! let mut run = b.exec(BoxCommand::new("echo").arg("hello")).await?;
//! let out = run.take_stdout().unwrap().read_to_end().await?;
//! assert_eq!(out, b"hello\n");
//! assert!(run.wait().await?.success());
//! b.stop(std::time::Duration::from_secs(10)).await?;
//! b.remove(false).await?;
//! # Ok(()) }
//! ```
//!
//! The modules are layered: each imports only those below it (`docs/architecture.md`
//! draws the diagram, and `tests/module_layers.rs` fails on an upward import).

// An embeddable library never takes over its host process.
#![deny(clippy::exit)]

// Layers 0-1: the helpers' jail, helpers and plain data.
pub mod jailer;
pub mod model;
pub(crate) mod util;
// Layers 2-4: where things are, what is stored, the engine, the agent protocol.
pub(crate) mod assets;
pub(crate) mod db;
pub(crate) mod disk;
pub(crate) mod layout;
pub mod net;
pub(crate) mod portal;
pub(crate) mod vmm;
pub mod volumes;
// Layers 5-7: the shared context, the image store, registry settings.
pub mod config;
pub(crate) mod context;
pub mod images;
// Layers 8-10: booting a VM, the box lifecycle, the image builder.
pub(crate) mod builder;
pub mod litebox;
pub(crate) mod vm;
// Layers 11-12: the monitor process and the runtime facade.
pub(crate) mod monitor;
pub mod runtime;

pub use assets::AssetError;
pub use builder::Mke2fs;
pub use builder::{BuildError, BuildFailed};
pub use db::DbError;
pub use disk::DiskError;
pub use layout::{SocketDirError, ram_root, socket_root};
pub use litebox::listing::{DirEntry, DirListing, EntryKind, ListError};
pub use litebox::snapshot::SnapshotError;
pub use litebox::snapshots::{CloneOptions, SnapshotInfo, SnapshotOptions, validate_snapshot_name};
pub use litebox::template::TemplateInfo;
pub use litebox::{
    BootStages, BoxCommand, BoxError, BoxInfo, BoxMetrics, BoxOptions, BoxState, CopyError,
    CopyOptions, CopyStats, ExecError, ExecOutput, ExecStdin, Execution, Health, HealthOptions,
    HealthState, HostDestination, HostSource, HostUnpackError, InBoxKind, LiteBox,
    MAX_AUTO_PAUSE_SECS, TarPlacement, parse_auto_pause,
};
pub use model::pause::AutoPauseError;
pub use model::{ImageBuilder, Secret, SecretSource, SecretValue};
pub use portal::{ExitStatus, PortalError};
pub use runtime::{Boxlite, RemovedImage, RuntimeInfo, RuntimeOptions, VolumeInfo};
pub use util::error_chain;
pub use util::process::ProcessId;
pub use util::spawn::SpawnError;
pub use vm::BootError;
pub use vmm::accel::AccelError;
pub use vmm::{Accel, AccelChoice, VmmError};
pub use volumes::{VolumeSource, VolumeSpec};

/// Every error the library returns. Each module has its own typed error; this enum
/// gathers them, so callers (the CLI, the REST server, the SDKs) can map kinds to codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Assets(#[from] AssetError),
    #[error(transparent)]
    Accel(#[from] AccelError),
    #[error(transparent)]
    Vmm(#[from] VmmError),
    #[error(transparent)]
    Image(#[from] images::ImageError),
    #[error(transparent)]
    Build(#[from] BuildFailed),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Portal(#[from] PortalError),
    #[error(transparent)]
    Box(#[from] BoxError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Snapshot(#[from] litebox::snapshot::SnapshotError),
    #[error(transparent)]
    SocketDir(#[from] SocketDirError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Volume(#[from] volumes::VolumeError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    List(#[from] litebox::listing::ListError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("the boxlite runtime has been shut down; open a new one")]
    ShutDown,
    #[error("{0}")]
    InvalidOption(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// What kind of failure an [`Error`] is, for frontends that map kinds onto their own
/// codes (HTTP statuses, Python exception classes, C error codes). The names follow
/// BoxLite's error codes ([`ErrorKind::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A bad argument: an option, a name, a reference, a command, a path.
    InvalidArgument,
    NotFound,
    AlreadyExists,
    /// Not now: the box is not running (or is), the image is in use, the stream closed.
    InvalidState,
    /// An image could not be pulled (unreachable, refused, not there).
    ImagePullFailed,
    /// A disk in the box is full.
    ResourceExhausted,
    Timeout,
    /// The runtime has been shut down.
    Unavailable,
    /// Anything else: a fault of this machine or of boxlite; its message may name host
    /// paths, so servers log it instead of showing it.
    Internal,
}

impl ErrorKind {
    /// BoxLite's code for the kind (`not_found`, `invalid_state`, ...).
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::InvalidState => "invalid_state",
            ErrorKind::ImagePullFailed => "image_pull_failed",
            ErrorKind::ResourceExhausted => "resource_exhausted",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "engine_unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

impl Error {
    /// The kind of failure (one table for every frontend).
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        use images::ImageError as I;
        use volumes::VolumeError as V;
        match self {
            Error::Box(BoxError::NotFound(_)) => K::NotFound,
            Error::Box(
                BoxError::Ambiguous { .. }
                | BoxError::InvalidOption(_)
                | BoxError::Network(_)
                | BoxError::Capability(_),
            ) => K::InvalidArgument,
            Error::Box(BoxError::Secret(e)) if e.is_internal() => K::Internal,
            Error::Box(BoxError::Secret(_)) => K::InvalidArgument,
            Error::Box(
                BoxError::InvalidTransition { .. }
                | BoxError::Busy { .. }
                | BoxError::NotRunning { .. }
                | BoxError::NotPaused { .. },
            ) => K::InvalidState,
            Error::InvalidOption(_) => K::InvalidArgument,
            Error::Exec(ExecError::NoSuchExecution(_)) => K::NotFound,
            Error::Exec(
                ExecError::CommandNotFound(_)
                | ExecError::NotExecutable(_)
                | ExecError::InvalidCommand(_),
            ) => K::InvalidArgument,
            Error::Exec(
                ExecError::BoxStopped { .. }
                | ExecError::NoTty { .. }
                | ExecError::StdinClosed { .. },
            ) => K::InvalidState,
            Error::Image(
                I::InvalidReference { .. } | I::UnknownBuiltin { .. } | I::NoPlatform { .. },
            ) => K::InvalidArgument,
            Error::Image(I::NotLocal { .. } | I::NotInStore { .. }) => K::NotFound,
            Error::Image(
                I::NotFoundRemote { .. }
                | I::AuthFailed { .. }
                | I::Unreachable { .. }
                | I::Registry { .. },
            ) => K::ImagePullFailed,
            Error::Image(I::InUse { .. }) => K::InvalidState,
            Error::Copy(CopyError::InBox { kind, .. }) => match kind {
                InBoxKind::NotFound => K::NotFound,
                InBoxKind::Refused => K::InvalidArgument,
                InBoxKind::NoSpace => K::ResourceExhausted,
                InBoxKind::Other => K::Internal,
            },
            Error::Copy(
                CopyError::Archive { .. } | CopyError::BoxPath { .. } | CopyError::NotAFile { .. },
            ) => K::InvalidArgument,
            Error::Copy(CopyError::TooLarge { .. }) => K::ResourceExhausted,
            Error::List(ListError::InvalidPath { .. } | ListError::NotADirectory { .. }) => {
                K::InvalidArgument
            }
            Error::List(ListError::NotFound { .. }) => K::NotFound,
            Error::Volume(V::NotFound(_)) => K::NotFound,
            Error::Volume(V::InvalidName(_) | V::InvalidSpec { .. }) => K::InvalidArgument,
            Error::Volume(V::InUse { .. }) => K::InvalidState,
            Error::Volume(V::Exists { .. }) => K::AlreadyExists,
            Error::Db(DbError::NameTaken(_)) => K::AlreadyExists,
            Error::Portal(PortalError::Timeout { .. }) => K::Timeout,
            Error::Snapshot(SnapshotError::Volumes { .. } | SnapshotError::Incompatible { .. }) => {
                K::InvalidState
            }
            Error::Snapshot(SnapshotError::DiskFull { .. }) => K::ResourceExhausted,
            Error::Snapshot(SnapshotError::NotFound { .. }) => K::NotFound,
            Error::Snapshot(SnapshotError::Exists { .. }) => K::AlreadyExists,
            Error::Snapshot(SnapshotError::InvalidName { .. }) => K::InvalidArgument,
            Error::Snapshot(SnapshotError::CloneVolumes { .. }) => K::InvalidState,
            Error::ShutDown => K::Unavailable,
            _ => K::Internal,
        }
    }
}

/// The body of the `boxlite-shim` binary: monitor box `id` of `home` until its VM
/// stops. Not for applications; the runtime starts it.
#[doc(hidden)]
pub async fn run_box_monitor(
    home: &std::path::Path,
    id: &str,
    channel_only: bool,
) -> Result<(), Error> {
    monitor::run(home, id, channel_only).await
}
