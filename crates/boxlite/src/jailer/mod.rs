//! The jail every helper runs in: the walls around the host processes that read bytes a
//! guest or an image controls (QEMU, virtiofsd, the network helper, the shim, the image
//! tools). The VM is the main wall; these limit what a helper a guest took over could do.
//!
//! The spawner prepares a [`Prepared`] jail from a [`JailSpec`] (landlock ruleset,
//! seccomp program, cgroup descriptors: everything that allocates or opens), and the
//! forked child applies it with [`Prepared::apply`] just before `execve`, with
//! async-signal-safe calls only, in this order:
//!
//! 1. resource limits: no core dumps, a bounded descriptor table;
//! 2. the box's cgroup (memory, CPU, process count; see [`cgroup`]);
//! 3. fresh mount, IPC and UTS namespaces (as root, or in a new user namespace where
//!    unprivileged ones are allowed);
//! 4. the capability bounding set cut to what the helper needs as root (QEMU and the
//!    network helper then drop to a per-box unprivileged uid themselves, once their
//!    files and sockets are open);
//! 5. `no_new_privs`;
//! 6. landlock ([`landlock`]): the files the helper may reach;
//! 7. seccomp ([`seccomp`]): the system calls it may make.
//!
//! `BOXLITE_JAIL=off` turns all of it off, for debugging, with a warning at every spawn;
//! `boxlite info` shows which walls are up on this host ([`walls`]) and why any is not.

pub mod cgroup;
pub mod landlock;
pub mod seccomp;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use landlock::{Access, Rule};

/// The kinds of helper, each with its own seccomp list, capabilities and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Helper {
    Vmm,
    Virtiofsd,
    Net,
    Shim,
    /// `qemu-img`, `mke2fs` and the like.
    Tool,
    /// The test suite's probe: the base list only.
    Probe,
}

impl Helper {
    pub fn name(self) -> &'static str {
        match self {
            Helper::Vmm => "vmm",
            Helper::Virtiofsd => "virtiofsd",
            Helper::Net => "net",
            Helper::Shim => "shim",
            Helper::Tool => "tool",
            Helper::Probe => "probe",
        }
    }

    /// Capabilities kept in the bounding set when running as root.
    fn kept_caps(self) -> &'static [u32] {
        const SETUID: u32 = 7;
        const SETGID: u32 = 6;
        const KILL: u32 = 5;
        const DAC_OVERRIDE: u32 = 1;
        const DAC_READ_SEARCH: u32 = 2;
        const FOWNER: u32 = 3;
        const NET_BIND_SERVICE: u32 = 10;
        match self {
            // To drop to the box's uid (`-runas`) once its files are open.
            Helper::Vmm => &[SETUID, SETGID],
            // The same, and published ports below 1024.
            Helper::Net => &[SETUID, SETGID, NET_BIND_SERVICE],
            // Ends the box's helpers (which run as another uid) and removes what the
            // guest made in its volumes when the box is removed.
            Helper::Shim => &[KILL, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER],
            // Reads image trees whatever their owners.
            Helper::Tool => &[DAC_OVERRIDE, DAC_READ_SEARCH],
            // Its own sandbox and the guest's file ownership need them; it drops what
            // it does not use itself.
            Helper::Virtiofsd => &[],
            Helper::Probe => &[],
        }
    }

    /// virtiofsd keeps its capabilities (see [`Helper::kept_caps`]).
    fn bounds_caps(self) -> bool {
        self != Helper::Virtiofsd
    }

    /// The descriptor limit (soft and hard); `None`: inherited (virtiofsd raises its own
    /// to hold a descriptor per guest inode).
    fn nofile(self) -> Option<u64> {
        match self {
            Helper::Vmm | Helper::Shim | Helper::Tool | Helper::Probe => Some(4096),
            Helper::Net => Some(16384),
            Helper::Virtiofsd => None,
        }
    }
}

/// How a seccomp filter treats a call off its list; see [`seccomp`].
pub use seccomp::Default as SeccompDefault;

/// Whether to jail, and how strictly. Read once per runtime from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    pub seccomp: SeccompDefault,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            seccomp: SeccompDefault::Refuse,
        }
    }
}

/// A bad jail setting in the environment.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("{var}={value:?} is not valid; use {valid}")]
    BadSetting {
        var: &'static str,
        value: String,
        valid: &'static str,
    },
}

impl Settings {
    /// `BOXLITE_JAIL` (`on`, the default, or `off`) and `BOXLITE_JAIL_SECCOMP`
    /// (`enosys`, the default; `kill`, what the test suite runs with, so a call missing
    /// from a list fails loudly; `log`, which allows and logs calls off the list to the
    /// kernel log, to find what a new helper version needs).
    pub fn from_env() -> Result<Settings, JailError> {
        Self::parse(
            std::env::var("BOXLITE_JAIL").ok().as_deref(),
            std::env::var("BOXLITE_JAIL_SECCOMP").ok().as_deref(),
        )
    }

    fn parse(jail: Option<&str>, sc: Option<&str>) -> Result<Settings, JailError> {
        let enabled = match jail.map(str::trim) {
            None | Some("" | "on" | "1") => true,
            Some("off" | "0") => false,
            Some(v) => {
                return Err(JailError::BadSetting {
                    var: "BOXLITE_JAIL",
                    value: v.into(),
                    valid: "on or off",
                });
            }
        };
        let seccomp = match sc.map(str::trim) {
            None | Some("" | "enosys") => SeccompDefault::Refuse,
            Some("kill") => SeccompDefault::Kill,
            Some("log") => SeccompDefault::Log,
            Some(v) => {
                return Err(JailError::BadSetting {
                    var: "BOXLITE_JAIL_SECCOMP",
                    value: v.into(),
                    valid: "enosys, kill or log",
                });
            }
        };
        Ok(Settings { enabled, seccomp })
    }
}

/// What one helper is allowed.
#[derive(Debug, Clone)]
pub struct JailSpec {
    pub helper: Helper,
    pub settings: Settings,
    /// The binary it executes (granted execution, with its ELF interpreter).
    pub binary: PathBuf,
    /// The files it may reach beyond the system's libraries and configuration.
    pub rules: Vec<Rule>,
    /// No landlock: the helper changes its own mount table (virtiofsd's sandbox).
    pub no_landlock: bool,
    /// Refuse TCP (landlock ABI 4).
    pub no_tcp: bool,
    /// The box's cgroup to join.
    pub cgroup: Option<cgroup::BoxCgroup>,
}

impl JailSpec {
    pub fn new(helper: Helper, settings: Settings, binary: &Path) -> JailSpec {
        JailSpec {
            helper,
            settings,
            binary: binary.to_path_buf(),
            rules: Vec::new(),
            no_landlock: false,
            no_tcp: helper != Helper::Net,
            cgroup: None,
        }
    }

    pub fn read(mut self, path: impl Into<PathBuf>) -> Self {
        self.rules.push(Rule {
            path: path.into(),
            access: Access::Read,
        });
        self
    }

    pub fn write(mut self, path: impl Into<PathBuf>) -> Self {
        self.rules.push(Rule {
            path: path.into(),
            access: Access::Write,
        });
        self
    }

    pub fn device(mut self, path: impl Into<PathBuf>) -> Self {
        self.rules.push(Rule {
            path: path.into(),
            access: Access::Device,
        });
        self
    }
}

/// What every helper may read: the system's programs, libraries and configuration, and
/// the kernel's views of processes and devices; plus the harmless devices.
fn system_rules(rules: &mut Vec<Rule>, binary: &Path) {
    for p in ["/usr", "/lib", "/lib64", "/lib32", "/etc", "/proc", "/sys"] {
        rules.push(Rule {
            path: p.into(),
            access: Access::Read,
        });
    }
    for d in [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/urandom",
        "/dev/random",
    ] {
        rules.push(Rule {
            path: d.into(),
            access: Access::Device,
        });
    }
    let binary = std::fs::canonicalize(binary).unwrap_or_else(|_| binary.to_path_buf());
    if let Some(interp) = landlock::interpreter(&binary) {
        let interp = std::fs::canonicalize(&interp).unwrap_or(interp);
        rules.push(Rule {
            path: interp,
            access: Access::Exec,
        });
    }
    rules.push(Rule {
        path: binary,
        access: Access::Exec,
    });
}

/// A jail ready for a child to enter: everything opened and compiled.
#[derive(Debug)]
pub struct Prepared {
    helper: Helper,
    nofile: Option<u64>,
    cgroup_procs: Vec<OwnedFd>,
    namespaces: libc::c_int,
    /// `uid_map`/`gid_map` contents for a new user namespace (unprivileged).
    user_maps: Option<(Vec<u8>, Vec<u8>)>,
    drop_caps: Vec<u32>,
    landlock: Option<OwnedFd>,
    filter: Vec<libc::sock_filter>,
}

// SAFETY: `sock_filter` is plain data; nothing in `Prepared` is tied to a thread.
unsafe impl Send for Prepared {}
// SAFETY: as above; `apply` only reads it.
unsafe impl Sync for Prepared {}

impl JailSpec {
    /// Open and compile everything the child will need. Blocking (a few file opens).
    pub fn prepare(&self) -> io::Result<Prepared> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let host = host();
        let mut namespaces = 0;
        let mut user_maps = None;
        if root {
            namespaces = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        } else if host.userns {
            namespaces =
                libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
            // SAFETY: getuid and getgid have no preconditions.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            user_maps = Some((
                format!("{uid} {uid} 1\n").into_bytes(),
                format!("{gid} {gid} 1\n").into_bytes(),
            ));
        }
        let drop_caps = if root && self.helper.bounds_caps() {
            let kept = self.helper.kept_caps();
            (0..=host.cap_last).filter(|c| !kept.contains(c)).collect()
        } else {
            Vec::new()
        };
        let landlock = if host.landlock_abi > 0 && !self.no_landlock {
            let mut rules = Vec::new();
            system_rules(&mut rules, &self.binary);
            rules.extend(self.rules.iter().cloned());
            let scope = landlock::Scope {
                no_tcp: self.no_tcp,
                isolate: self.helper != Helper::Shim,
            };
            Some(landlock::ruleset(host.landlock_abi, &rules, scope)?)
        } else {
            None
        };
        let cgroup_procs = match &self.cgroup {
            Some(c) => c.open_procs()?,
            None => Vec::new(),
        };
        Ok(Prepared {
            helper: self.helper,
            nofile: self.helper.nofile(),
            cgroup_procs,
            namespaces,
            user_maps,
            drop_caps,
            landlock,
            filter: seccomp::compile(self.helper, self.settings.seccomp),
        })
    }
}

impl Prepared {
    /// Enter the jail: the forked child's last steps before `execve`. Async-signal-safe:
    /// system calls on data prepared before the fork, no allocation.
    pub fn apply(&self) -> io::Result<()> {
        let err = io::Error::last_os_error;
        // SAFETY: plain system calls on descriptors and buffers this struct owns, which
        // the fork copied into the child.
        unsafe {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &no_core) < 0 {
                return Err(err());
            }
            if let Some(n) = self.nofile {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) < 0 {
                    return Err(err());
                }
            }
            for fd in &self.cgroup_procs {
                if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(err());
                }
            }
            if self.namespaces != 0 {
                if libc::unshare(self.namespaces) < 0 {
                    return Err(err());
                }
                if let Some((uid_map, gid_map)) = &self.user_maps {
                    write_proc(c"/proc/self/setgroups", b"deny")?;
                    write_proc(c"/proc/self/uid_map", uid_map)?;
                    write_proc(c"/proc/self/gid_map", gid_map)?;
                }
            }
            for cap in &self.drop_caps {
                // EINVAL: a capability this kernel does not have.
                if libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(*cap), 0, 0, 0) < 0
                    && err().raw_os_error() != Some(libc::EINVAL)
                {
                    return Err(err());
                }
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(err());
            }
            if let Some(fd) = &self.landlock {
                landlock::restrict_self(fd.as_raw_fd())?;
            }
            let prog = libc::sock_fprog {
                len: u16::try_from(self.filter.len()).unwrap_or(u16::MAX),
                filter: self.filter.as_ptr().cast_mut(),
            };
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &raw const prog,
                0,
                0,
            ) < 0
            {
                return Err(err());
            }
        }
        Ok(())
    }

    pub fn helper(&self) -> Helper {
        self.helper
    }
}

/// Write `data` to a `/proc/self` file. Async-signal-safe.
fn write_proc(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: open, write and close on a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        if usize::try_from(n).ok() != Some(data.len()) {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What this host offers the jail, probed once.
#[derive(Debug, Clone)]
pub struct Host {
    pub landlock_abi: u32,
    pub seccomp: bool,
    /// Unprivileged user namespaces can be created.
    pub userns: bool,
    pub cap_last: u32,
    pub cgroups: Result<cgroup::Hierarchy, String>,
}

pub fn host() -> &'static Host {
    static HOST: std::sync::OnceLock<Host> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        Host {
            landlock_abi: landlock::abi(),
            seccomp: status.lines().any(|l| l.starts_with("Seccomp:")),
            userns: userns_allowed(),
            cap_last: std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(40),
            cgroups: cgroup::detect(),
        }
    })
}

fn userns_allowed() -> bool {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return false;
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return false;
    }
    // Ubuntu's AppArmor switch.
    read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() != Some("1")
}

/// The unprivileged uid (and gid) a box's `helper` drops to when boxlite runs as root:
/// one per box and helper, derived from the box id, in a range no distribution hands
/// out (above 2^31, below the 2^32 - 1 that means "no id"), so two boxes' helpers never
/// share a uid (short of a 1 in 2^28 collision) and cannot signal or trace each other.
pub fn helper_uid(box_id: &str, helper: Helper) -> u32 {
    // FNV-1a: stable across versions and platforms, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in box_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let slot = match helper {
        Helper::Vmm => 0,
        Helper::Net => 1,
        _ => 2,
    };
    0x8000_0000 | ((h & 0x0fff_ffff) << 2) | slot
}

/// One wall, as `info` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Wall {
    pub name: &'static str,
    pub active: bool,
    /// What it does here, or why it is missing.
    pub detail: String,
}

/// The walls helpers get on this host with `settings`.
pub fn walls(settings: Settings) -> Vec<Wall> {
    let h = host();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let wall = |name, active, detail: String| Wall {
        name,
        active,
        detail,
    };
    let walls = vec![
        wall(
            "no_new_privs",
            true,
            "every helper; nothing it executes can gain privileges".into(),
        ),
        wall(
            "seccomp",
            h.seccomp,
            if h.seccomp {
                format!(
                    "an allowlist per helper; a call off it {}",
                    match settings.seccomp {
                        SeccompDefault::Refuse => "fails with ENOSYS",
                        SeccompDefault::Kill => "kills the helper (BOXLITE_JAIL_SECCOMP=kill)",
                        SeccompDefault::Log =>
                            "is allowed and logged (BOXLITE_JAIL_SECCOMP=log: learning mode)",
                    }
                )
            } else {
                "this kernel has no seccomp filters".into()
            },
        ),
        wall(
            "landlock",
            h.landlock_abi > 0,
            if h.landlock_abi > 0 {
                format!(
                    "ABI {}: each helper reaches only its box's files, the assets and the system's libraries{}{} (virtiofsd: its own namespace sandbox instead)",
                    h.landlock_abi,
                    if h.landlock_abi >= 4 {
                        "; no TCP except the network helper"
                    } else {
                        ""
                    },
                    if h.landlock_abi >= 6 {
                        "; no signals out of its domain"
                    } else {
                        ""
                    }
                )
            } else {
                "this kernel has no landlock (needs Linux 5.13 with landlock in the lsm= list)"
                    .into()
            },
        ),
        wall(
            "namespaces",
            root || h.userns,
            if root {
                "fresh mount, IPC and UTS namespaces per helper".into()
            } else if h.userns {
                "a user namespace with fresh mount, IPC and UTS namespaces per helper".into()
            } else {
                "not root, and unprivileged user namespaces are disabled on this host".into()
            },
        ),
        wall(
            "unprivileged_user",
            root,
            if root {
                "QEMU and the network helper drop to a uid of their own per box once started; the shim and the tools keep uid 0 with a cut capability set; virtiofsd keeps its capabilities (it creates files as the guest's users) inside its own sandbox".into()
            } else {
                "helpers run as the invoking user, which is not root".into()
            },
        ),
        wall(
            "capabilities",
            root,
            if root {
                "bounding set cut per helper to what it needs".into()
            } else {
                "not root: helpers have no capabilities to cut".into()
            },
        ),
        match &h.cgroups {
            Ok(hier) => wall(
                "cgroups",
                true,
                format!(
                    "{}; per box: guest memory + {} MiB, vCPUs + 1 cores, 1024 tasks",
                    hier.describe(),
                    cgroup::OVERHEAD_MIB
                ),
            ),
            Err(why) => wall("cgroups", false, why.clone()),
        },
        wall(
            "rlimits",
            true,
            "no core dumps; a bounded descriptor table".into(),
        ),
    ];
    if settings.enabled {
        return walls;
    }
    walls
        .into_iter()
        .map(|w| Wall {
            active: false,
            detail: "BOXLITE_JAIL=off (debugging only)".into(),
            ..w
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_bad_values_name_the_choices() {
        assert_eq!(Settings::parse(None, None).unwrap(), Settings::default());
        let off = Settings::parse(Some("off"), Some("kill")).unwrap();
        assert!(!off.enabled);
        assert_eq!(off.seccomp, SeccompDefault::Kill);
        let e = Settings::parse(Some("maybe"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("BOXLITE_JAIL=\"maybe\"") && e.contains("on or off"),
            "{e}"
        );
        let e = Settings::parse(None, Some("trap")).unwrap_err().to_string();
        assert!(e.contains("enosys, kill or log"), "{e}");
    }

    #[test]
    fn helper_uids_are_unprivileged_distinct_and_stable() {
        let a = helper_uid("0123456789abcdef", Helper::Vmm);
        assert_eq!(a, helper_uid("0123456789abcdef", Helper::Vmm));
        assert_ne!(a, helper_uid("0123456789abcdef", Helper::Net));
        assert_ne!(a, helper_uid("fedcba9876543210", Helper::Vmm));
        for id in ["a", "b", "0123456789abcdef"] {
            for h in [Helper::Vmm, Helper::Net] {
                let u = helper_uid(id, h);
                assert!((0x8000_0000..u32::MAX).contains(&u), "{u:#x}");
            }
        }
    }
}
