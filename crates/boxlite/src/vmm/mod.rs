//! The VMM engine behind a narrow trait, so QEMU can be joined by other engines (libkrun,
//! Firecracker, Cloud Hypervisor) without touching the rest of the library.

pub mod accel;
pub mod qemu;
pub mod qmp;

use std::fmt;
use std::path::PathBuf;

pub use accel::{Accel, AccelChoice};

use crate::util::spawn::HelperCommand;

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("{binary} not found; {hint}")]
    BinaryMissing { binary: String, hint: String },
    #[error("{binary} --version failed: {detail}")]
    Version { binary: String, detail: String },
}

/// A virtio-fs device served by a vhost-user backend (virtiofsd).
#[derive(Debug, Clone)]
pub struct FsDevice {
    pub socket: PathBuf,
    /// The tag the guest mounts it by.
    pub tag: String,
}

/// Everything an engine needs to boot one box.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub accel: Accel,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Extra kernel command line words after the engine's own.
    pub cmdline: Vec<String>,
    /// The root disk, first virtio-blk device: qcow2, or raw when `root_raw`.
    pub root_disk: PathBuf,
    pub root_raw: bool,
    pub memory_mib: u32,
    pub cpus: u32,
    /// The engine's working directory (the box directory): relative paths below resolve
    /// there.
    pub dir: PathBuf,
    /// The agent's virtio-serial port: the engine listens on this unix socket (relative to
    /// `dir`) and the box's shim connects to it.
    pub agent_port: PathBuf,
    /// Guest RAM: a file on tmpfs, mapped shared (the box's own), or a snapshot's file
    /// mapped privately (a fork: pages are copied on write, never written back).
    pub ram_file: PathBuf,
    /// Map `ram_file` shared (`share=on`); false for a fork of a snapshot.
    pub ram_shared: bool,
    /// QEMU's monitor (QMP) socket, relative to `dir`.
    pub qmp_socket: PathBuf,
    /// Start with the vCPUs stopped, waiting for a saved state on the monitor
    /// (`-incoming defer`) instead of booting the kernel.
    pub incoming: bool,
    /// Shared directories, in order.
    pub fs: Vec<FsDevice>,
    /// The NIC, when the box has a network.
    pub net: Option<NetDevice>,
    pub console_log: PathBuf,
    pub vmm_log: PathBuf,
    /// Environment added to the engine process to mark it as this box's.
    pub marker: Vec<(String, String)>,
    /// The unprivileged uid and gid the engine switches to once its files and sockets
    /// are open (QEMU's `-runas`), when boxlite runs as root with the jail on.
    pub run_as: Option<(u32, u32)>,
    /// The root disk comes as two descriptors (read-write, then read-only) at
    /// [`crate::util::spawn::PASSED_FD_BASE`], not by path: QEMU reopens the image when
    /// a migration hands the disk over and back, which a QEMU that dropped to
    /// `run_as` could not do by path.
    pub root_disk_fds: bool,
}

/// A box's virtio-net device and its backend.
#[derive(Debug, Clone)]
pub struct NetDevice {
    pub mac: [u8; 6],
    pub mtu: u16,
    pub backend: NetBackend,
}

#[derive(Debug, Clone)]
pub enum NetBackend {
    /// The box's network helper, reached over a unix socket that carries
    /// length-prefixed Ethernet frames (QEMU's `-netdev stream`).
    Helper { socket: PathBuf },
    /// QEMU's own slirp (`-netdev user`), whose defaults are the helper's subnet. A
    /// benchmark yardstick only (`BOXLITE_BENCH_SLIRP=1`, for `bench/net.sh`): slirp applies
    /// no egress policy, so anything the guest dials is dialled.
    SlirpYardstick,
}

/// A VMM engine.
pub trait Vmm: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    /// The engine's version string, for `boxlite info`. Runs the engine binary: call it
    /// off the async runtime.
    fn version(&self) -> Result<String, VmmError>;
    /// The process that boots `cfg`; the caller starts it (behind the spawn gate) and
    /// owns it from then on.
    fn command(&self, cfg: &VmConfig) -> HelperCommand;
    /// What a saved state of `cfg` depends on besides the engine build: the machine, the
    /// accelerator, the CPU count and model, the memory size, and every device in order,
    /// with paths and other per-instance values left out. A state loads only into a VM
    /// whose machine is the same.
    fn machine(&self, cfg: &VmConfig) -> Vec<String>;
}
