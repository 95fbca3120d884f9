//! Plain data: what is stored about boxes and images, and the lifecycle's states.
//!
//! The bottom layer of the library above `util`: everything else imports these types,
//! and they import nothing but `util` (see `docs/architecture.md`, "Layers").

pub mod boxes;
pub mod caps;
pub mod image;
pub mod network;
pub mod pause;
pub mod platform;
pub mod secret;
pub mod state;
pub mod time;
pub mod volume;

pub use boxes::{
    BootTimings, BoxConfig, BoxRow, BoxStatus, Health, HealthOptions, HealthState, LEGACY_RECORD,
    StartKind, VmBuild, default_warm_start, legacy_row,
};
pub use caps::{Capabilities, CapabilityError};
pub use image::{BuildReport, Compression, ImageBuilder, ImageRecord, Layer, RunConfig};
pub use network::{HostSpec, NetworkMode, NetworkSpec, NetworkSpecError, PortSpec};
pub use platform::Accel;
pub use secret::{Secret, SecretRecord, SecretSource, SecretValue, StoredSource};
pub use state::{ALL_STATES, BoxState, InvalidTransition};
pub use volume::{VolumeKind, VolumeMount};
