//! PID-1 duties: early mounts, kernel modules, the rootfs disk and the container root.
//!
//! The order matters. `/proc`, `/sys` and `/dev` come first because module loading and
//! device discovery need them. Modules are loaded in the order the asset build resolved
//! from the kernel's own `modules.dep`, written to [`MODULE_LIST`]. Module parameters on
//! the kernel command line (`virtio_mmio.device=...`) are passed to the module as
//! `modprobe` would, because the kernel only applies them itself for built-in drivers.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sys;

/// File in the initramfs listing the modules to load before serving, one file
/// name per line, in order.
pub const MODULE_LIST: &str = "/lib/modules/boxlite.load";
/// Modules loaded in the background once the agent is serving.
pub const MODULE_LIST_LATER: &str = "/lib/modules/boxlite.later";
/// Directory in the initramfs holding the module files.
pub const MODULE_DIR: &str = "/lib/modules";
/// The rootfs block device (the first virtio-blk disk).
pub const ROOT_DEVICE: &str = "/dev/vda";
/// Where the container root is mounted in the agent's namespace.
pub const CONTAINER_ROOT: &str = "/rootfs";

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("mounting {fstype} on {target}")]
    Mount {
        fstype: String,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("loading kernel module {name}")]
    Module {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("reading module list {0}")]
    ModuleList(&'static str, #[source] io::Error),
    #[error("root disk {ROOT_DEVICE} did not appear within {0:?}")]
    NoRootDisk(Duration),
    #[error("the workload's namespaces")]
    Container(#[from] crate::container::ContainerError),
    #[error("preparing container root at {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Settings the host passes on the kernel command line. Nothing secret ever goes there.
#[derive(Debug, Clone)]
pub struct BootConfig {
    pub hostname: Option<String>,
    /// The image builder: the root disk is a blank ext4 that layers are applied to, so
    /// no container root is prepared on it and it is never grown.
    pub builder: bool,
    /// `module.param=value` pairs, grouped by module name (dashes folded to underscores).
    pub module_params: HashMap<String, Vec<String>>,
    /// The box's network; `None` when the host gave it no NIC.
    pub net: Option<NetConfig>,
}

/// The kernel command-line key carrying the box's network settings.
pub const CMDLINE_NET: &str = "boxlite.net";

/// A box's IPv4 settings, from `boxlite.net=<ip>/<prefix_len>,<gateway>,<dns>,<mtu>`
/// (for example `boxlite.net=10.0.2.15/24,10.0.2.2,10.0.2.3,65520`). The host's network
/// helper answers at the gateway and DNS addresses; there is no DHCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
    pub mtu: u32,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{CMDLINE_NET}={value:?} ignored, {reason} (expected <ip>/<prefix_len>,<gateway>,<dns>,<mtu>)"
)]
pub struct BadNetConfig {
    value: String,
    reason: &'static str,
}

impl NetConfig {
    /// The smallest MTU IPv4 allows, and the largest a virtio-net device takes.
    const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

    /// Parse the value of `boxlite.net=`. Strict: exactly four comma-separated fields.
    pub fn parse(value: &str) -> Result<Self, BadNetConfig> {
        let bad = |reason| BadNetConfig {
            value: value.to_string(),
            reason,
        };
        let fields: Vec<&str> = value.split(',').collect();
        let [cidr, gateway, dns, mtu] = fields[..] else {
            return Err(bad("not four comma-separated fields"));
        };
        let (ip, prefix_len) = cidr
            .split_once('/')
            .ok_or_else(|| bad("the guest address has no /prefix_len"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad("bad guest IPv4 address"))?;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err(bad("the guest address is not a unicast address"));
        }
        let prefix_len: u8 = prefix_len
            .parse()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| bad("the prefix length is not 1 to 32"))?;
        let gateway = gateway
            .parse()
            .map_err(|_| bad("bad gateway IPv4 address"))?;
        let dns = dns.parse().map_err(|_| bad("bad DNS IPv4 address"))?;
        let mtu = mtu
            .parse()
            .ok()
            .filter(|m| Self::MTU_RANGE.contains(m))
            .ok_or_else(|| bad("the MTU is not 68 to 65535"))?;
        Ok(NetConfig {
            ip,
            prefix_len,
            gateway,
            dns,
            mtu,
        })
    }

    /// The netmask of [`Self::prefix_len`].
    pub fn netmask(&self) -> Ipv4Addr {
        let host_bits = 32 - u32::from(self.prefix_len.min(32));
        Ipv4Addr::from(u32::MAX.checked_shl(host_bits).unwrap_or(0))
    }
}

impl BootConfig {
    pub fn parse(cmdline: &str) -> Self {
        let mut cfg = BootConfig {
            hostname: None,
            builder: false,
            module_params: HashMap::new(),
            net: None,
        };
        for word in cmdline.split_ascii_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            match key {
                "boxlite.hostname" => cfg.hostname = Some(value.to_string()),
                "boxlite.builder" => cfg.builder = value == "1",
                // The last word wins, as for any kernel parameter; a malformed one leaves
                // the box without a network rather than failing its boot.
                CMDLINE_NET => {
                    cfg.net = NetConfig::parse(value)
                        .inspect_err(|e| eprintln!("boxlite-guest: {e}"))
                        .ok();
                }
                _ => {
                    if let Some((module, param)) = key.split_once('.') {
                        cfg.module_params
                            .entry(module.replace('-', "_"))
                            .or_default()
                            .push(format!("{param}={value}"));
                    }
                }
            }
        }
        cfg
    }
}

fn mount_at(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), InitError> {
    fs::create_dir_all(target).map_err(|source| InitError::Mount {
        fstype: fstype.into(),
        target: target.into(),
        source,
    })?;
    match sys::mount(source, target, fstype, flags, data) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        Err(source) => Err(InitError::Mount {
            fstype: fstype.into(),
            target: target.into(),
            source,
        }),
    }
}

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// `/proc` and `/sys` under `root`: the agent's own and the container's are the same.
fn mount_proc_sys(root: &Path) -> Result<(), InitError> {
    mount_at(
        "proc",
        &root.join("proc"),
        "proc",
        NOSUID_NODEV_NOEXEC,
        None,
    )?;
    mount_at(
        "sysfs",
        &root.join("sys"),
        "sysfs",
        NOSUID_NODEV_NOEXEC,
        None,
    )
}

/// Mount the agent's own `/proc`, `/sys`, `/dev` and `/run`.
pub fn early_mounts() -> Result<(), InitError> {
    mount_proc_sys(Path::new("/"))?;
    mount_at(
        "devtmpfs",
        Path::new("/dev"),
        "devtmpfs",
        libc::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mount_at(
        "tmpfs",
        Path::new("/run"),
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )?;
    Ok(())
}

/// Load the modules named in `list_path`, in order. Already-present modules (built in,
/// or loaded before) are fine.
pub fn load_modules(cfg: &BootConfig, list_path: &'static str) -> Result<usize, InitError> {
    let list = match fs::read_to_string(list_path) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(InitError::ModuleList(list_path, e)),
    };
    let mut loaded = 0;
    for file in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let name = file
            .trim_end_matches(".ko")
            .rsplit('/')
            .next()
            .unwrap_or(file)
            .replace('-', "_");
        let params = cfg
            .module_params
            .get(&name)
            .map(|p| p.join(" "))
            .unwrap_or_default();
        let path = Path::new(MODULE_DIR).join(file);
        let f = fs::File::open(&path).map_err(|source| InitError::Module {
            name: name.clone(),
            source,
        })?;
        match sys::finit_module(&f, &params) {
            Ok(()) => loaded += 1,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(source) => return Err(InitError::Module { name, source }),
        }
    }
    Ok(loaded)
}

/// Wait for the root disk to show up in devtmpfs, then mount it at [`CONTAINER_ROOT`].
/// A box's root is `nodev`: a device node the image ships or the workload makes there
/// opens nothing (only the agent's `/dev` has devices); the image builder's is not.
pub fn mount_rootfs(builder: bool) -> Result<(), InitError> {
    let limit = Duration::from_secs(10);
    let start = Instant::now();
    while !Path::new(ROOT_DEVICE).exists() {
        if start.elapsed() > limit {
            return Err(InitError::NoRootDisk(limit));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let flags = if builder { 0 } else { libc::MS_NODEV };
    mount_at(ROOT_DEVICE, Path::new(CONTAINER_ROOT), "ext4", flags, None)
}

/// Grow the mounted root ext4 online to fill its disk, which the host makes larger than
/// the image when the box asks for more room. Returns the sizes when it grew.
pub fn grow_rootfs() -> io::Result<Option<(u64, u64)>> {
    use std::io::{Read, Seek, SeekFrom};
    let sectors: u64 = fs::read_to_string("/sys/block/vda/size")?
        .trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("disk size: {e}")))?;
    let mut sb = [0u8; 1024];
    let mut dev = fs::File::open(ROOT_DEVICE)?;
    dev.seek(SeekFrom::Start(1024))?;
    dev.read_exact(&mut sb)?;
    let (blocks, block_size) = ext4_size(&sb)?;
    let wanted = sectors * 512 / block_size;
    if wanted <= blocks {
        return Ok(None);
    }
    // The ioctl needs a real descriptor, not an O_PATH one.
    let root = fs::File::open(CONTAINER_ROOT)?;
    sys::ext4_resize(&root, wanted)?;
    // The new group descriptors must reach the disk before anything else happens: a VM
    // killed with them still in memory leaves a filesystem that no longer mounts.
    sys::sync();
    Ok(Some((blocks * block_size, wanted * block_size)))
}

/// Block count and block size from an ext4 superblock.
fn ext4_size(sb: &[u8; 1024]) -> io::Result<(u64, u64)> {
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an ext4 superblock",
        ));
    }
    let log = u32_at(0x18);
    if log > 6 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad block size"));
    }
    let incompat_64bit = u32_at(0x60) & 0x80 != 0;
    let hi = if incompat_64bit {
        u32_at(0x150) as u64
    } else {
        0
    };
    Ok(((hi << 32) | u32_at(0x4) as u64, 1024u64 << log))
}

/// The device nodes of the container's `/dev`: each is an empty file of the `nodev`
/// tmpfs with the agent's own node bind-mounted over it, so these open and nothing the
/// workload creates in `/dev` (with `CAP_MKNOD`) does.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Give the container root its own `/proc`, `/sys`, a minimal `/dev`, and a `/tmp`.
pub fn prepare_container_root(root: &Path) -> Result<(), InitError> {
    let prep = |path: &Path, r: io::Result<()>| {
        r.map_err(|source| InitError::Prepare {
            path: path.to_path_buf(),
            source,
        })
    };
    mount_proc_sys(root)?;
    let dev = root.join("dev");
    mount_at(
        "tmpfs",
        &dev,
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        Some("mode=0755"),
    )?;
    for name in DEVICES {
        let p = dev.join(name);
        prep(&p, fs::File::create(&p).map(drop))?;
        let source = Path::new("/dev").join(name);
        prep(&p, sys::chmod(&source, 0o666))?;
        prep(
            &p,
            sys::mount(&source.to_string_lossy(), &p, "", libc::MS_BIND, None),
        )?;
    }
    mount_at(
        "devpts",
        &dev.join("pts"),
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    mount_at(
        "shm",
        &dev.join("shm"),
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let p = dev.join(link);
        match std::os::unix::fs::symlink(target, &p) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => prep(&p, Err(e))?,
            _ => {}
        }
    }
    let tmp = root.join("tmp");
    if !tmp.exists() {
        prep(&tmp, fs::create_dir(&tmp))?;
        prep(&tmp, sys::chmod(&tmp, 0o1777))?;
    }
    Ok(())
}

/// Everything PID 1 does before it serves the agent protocol. Returns the container
/// the workload runs in (none for the image builder, which runs no workload).
pub fn boot(cfg: &BootConfig) -> Result<Option<crate::container::Container>, InitError> {
    let t = Instant::now();
    // PR_SET_CHILD_SUBREAPER is implied for PID 1; set it anyway so the agent behaves the
    // same when run as a child (tests, debugging).
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    early_mounts()?;
    let n = load_modules(cfg, MODULE_LIST)?;
    let t_modules = t.elapsed();
    if let Err(e) = sys::loopback_up() {
        eprintln!("boxlite-guest: loopback not configured: {e}");
    }
    if let Some(h) = &cfg.hostname
        && let Err(e) = sys::sethostname(h)
    {
        eprintln!("boxlite-guest: hostname not set: {e}");
    }
    mount_rootfs(cfg.builder)?;
    let mut container = None;
    if !cfg.builder {
        match grow_rootfs() {
            Ok(Some((from, to))) => {
                eprintln!("boxlite-guest: root filesystem grown from {from} to {to} bytes")
            }
            Ok(None) => {}
            // The box still works, with the image's size.
            Err(e) => eprintln!("boxlite-guest: root filesystem not grown: {e}"),
        }
        prepare_container_root(Path::new(CONTAINER_ROOT))?;
        container = Some(crate::container::Container::start(Path::new(
            CONTAINER_ROOT,
        ))?);
    }
    eprintln!(
        "boxlite-guest: {n} modules in {} ms, rootfs ready in {} ms",
        t_modules.as_millis(),
        t.elapsed().as_millis()
    );
    Ok(container)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_module_params_are_grouped_by_module() {
        let c = BootConfig::parse(
            "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 virtio-mmio.device=512@0xfeb00c00:11 quiet",
        );
        assert_eq!(
            c.module_params["virtio_mmio"],
            vec!["device=512@0xfeb00e00:12", "device=512@0xfeb00c00:11"]
        );
        assert!(!c.module_params.contains_key("console"));
    }

    #[test]
    fn cmdline_builder_flag() {
        assert!(BootConfig::parse("quiet boxlite.builder=1").builder);
        assert!(!BootConfig::parse("quiet boxlite.builder=0").builder);
        assert!(!BootConfig::parse("quiet").builder);
    }

    #[test]
    fn ext4_superblock_sizes_are_read() {
        let mut sb = [0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        sb[0x4..0x8].copy_from_slice(&65536u32.to_le_bytes());
        assert_eq!(ext4_size(&sb).unwrap(), (65536, 4096));
        sb[0x60..0x64].copy_from_slice(&0x80u32.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(ext4_size(&sb).unwrap(), ((1 << 32) + 65536, 4096));
        sb[0x38] = 0;
        assert!(ext4_size(&sb).is_err());
    }

    #[test]
    fn cmdline_net_word_is_parsed_into_net_config() {
        let c = BootConfig::parse(
            "console=ttyS0 boxlite.hostname=web boxlite.net=10.0.2.15/24,10.0.2.2,10.0.2.3,65520 quiet",
        );

        assert_eq!(
            c.net,
            Some(NetConfig {
                ip: Ipv4Addr::new(10, 0, 2, 15),
                prefix_len: 24,
                gateway: Ipv4Addr::new(10, 0, 2, 2),
                dns: Ipv4Addr::new(10, 0, 2, 3),
                mtu: 65520,
            })
        );
        assert_eq!(c.hostname.as_deref(), Some("web"));
        assert!(!c.module_params.contains_key("boxlite"));
    }

    #[test]
    fn cmdline_without_net_word_has_no_network() {
        let c = BootConfig::parse("console=ttyS0 boxlite.hostname=web quiet");

        assert_eq!(c.net, None);
    }

    #[test]
    fn cmdline_malformed_net_words_are_ignored_and_the_rest_still_parses() {
        let malformed = [
            "",
            "10.0.2.15,10.0.2.2,10.0.2.3,65520",
            "10.0.2.15/24,10.0.2.2,10.0.2.3",
            "10.0.2.15/24,10.0.2.2,10.0.2.3,65520,",
            "10.0.2.15/24,10.0.2.2,10.0.2.3,65520,1",
            "10.0.2.15/0,10.0.2.2,10.0.2.3,65520",
            "10.0.2.15/33,10.0.2.2,10.0.2.3,65520",
            "10.0.2.15/,10.0.2.2,10.0.2.3,65520",
            "10.0.2/24,10.0.2.2,10.0.2.3,65520",
            "0.0.0.0/24,10.0.2.2,10.0.2.3,65520",
            "224.0.0.1/24,10.0.2.2,10.0.2.3,65520",
            "fd00::15/64,fd00::2,fd00::3,65520",
            "10.0.2.15/24,gateway,10.0.2.3,65520",
            "10.0.2.15/24,10.0.2.2,,65520",
            "10.0.2.15/24,10.0.2.2,10.0.2.3,67",
            "10.0.2.15/24,10.0.2.2,10.0.2.3,65536",
            "10.0.2.15/24,10.0.2.2,10.0.2.3,-1",
            "10.0.2.15/24,10.0.2.2,10.0.2.3,big",
        ];

        let parsed: Vec<_> = malformed
            .iter()
            .map(|v| {
                BootConfig::parse(&format!(
                    "boxlite.hostname=h boxlite.net={v} boxlite.builder=1"
                ))
            })
            .collect();

        for (v, c) in malformed.iter().zip(&parsed) {
            assert_eq!(c.net, None, "boxlite.net={v} accepted");
            assert_eq!(c.hostname.as_deref(), Some("h"));
            assert!(c.builder);
            assert!(!c.module_params.contains_key("boxlite"));
        }
    }

    #[test]
    fn cmdline_last_net_word_wins_and_a_malformed_last_word_means_no_network() {
        let good = "boxlite.net=10.0.2.15/24,10.0.2.2,10.0.2.3,65520";

        let later_good = BootConfig::parse(&format!(
            "boxlite.net=10.9.9.9/8,10.0.0.1,10.0.0.1,1500 {good}"
        ));
        let later_bad = BootConfig::parse(&format!("{good} boxlite.net=oops"));

        assert_eq!(
            later_good.net.map(|n| n.ip),
            Some(Ipv4Addr::new(10, 0, 2, 15))
        );
        assert_eq!(later_bad.net, None);
    }

    #[test]
    fn netmask_follows_the_prefix_length() {
        let net = |prefix_len| NetConfig {
            ip: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Ipv4Addr::new(10, 0, 2, 3),
            mtu: 1500,
        };

        let masks: Vec<Ipv4Addr> = [1, 8, 24, 31, 32].map(|p| net(p).netmask()).into();

        assert_eq!(
            masks,
            [
                Ipv4Addr::new(128, 0, 0, 0),
                Ipv4Addr::new(255, 0, 0, 0),
                Ipv4Addr::new(255, 255, 255, 0),
                Ipv4Addr::new(255, 255, 255, 254),
                Ipv4Addr::new(255, 255, 255, 255),
            ]
        );
    }
}
