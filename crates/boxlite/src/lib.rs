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

pub mod config;
pub mod db;
pub mod disk;
pub mod images;
pub mod litebox;
pub mod monitor;
pub mod portal;
pub mod runtime;
mod util;
pub mod vmm;
pub mod volumes;

pub use litebox::{
    BootStages, BoxCommand, BoxError, BoxInfo, BoxMetrics, BoxOptions, BoxState, CopyError,
    CopyOptions, CopyStats, ExecError, ExecOutput, ExecStdin, Execution, Health, HealthOptions,
    HealthState, LiteBox,
};
pub use portal::ExitStatus;
pub use runtime::VolumeInfo;
pub use runtime::{Boxlite, RuntimeInfo, RuntimeOptions};
pub use util::process::ProcessId;
pub use vmm::{Accel, AccelChoice};
pub use volumes::{VolumeSource, VolumeSpec};

/// Every error the library returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Assets(#[from] runtime::assets::AssetError),
    #[error(transparent)]
    Accel(#[from] vmm::accel::AccelError),
    #[error(transparent)]
    Vmm(#[from] vmm::VmmError),
    #[error(transparent)]
    Image(#[from] images::ImageError),
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error(transparent)]
    Portal(#[from] portal::PortalError),
    #[error(transparent)]
    Box(#[from] BoxError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    SocketDir(#[from] runtime::layout::SocketDirError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Volume(#[from] volumes::VolumeError),
    #[error(transparent)]
    Copy(#[from] litebox::CopyError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// An error and its sources on one line, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
