//! Per-box cgroups: the processes whose appetite a guest drives (QEMU, virtiofsd, the
//! network helper) share one cgroup per box with a memory, CPU and process-count limit,
//! so a box, or a helper a guest took over, cannot starve the host.
//!
//! cgroup v2 is used where its controllers are available to us: `$BOXLITE_CGROUP` (a
//! delegated directory), or, as root, `<cgroup2 mount>/boxlite`. On a hybrid host whose
//! memory, CPU and pids controllers sit on v1 hierarchies (as on our development
//! machines), each controller gets a `boxlite/<box id>` directory under this process's
//! cgroup in its own hierarchy. Elsewhere the wall is reported missing, with the reason.
//!
//! The spawner opens each directory's `cgroup.procs` and the child writes `0` to it (the
//! writer itself) before `execve`, so a helper never runs a single instruction of its
//! own outside the box's cgroup.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The controllers boxlite limits.
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// Where box cgroups go on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// One directory per box under this cgroup v2 directory.
    V2(PathBuf),
    /// One directory per box under each of these v1 directories (memory, cpu, pids).
    V1(Vec<PathBuf>),
}

impl Hierarchy {
    /// The directories box cgroups are made in.
    pub fn bases(&self) -> Vec<&Path> {
        match self {
            Hierarchy::V2(b) => vec![b.as_path()],
            Hierarchy::V1(bs) => bs.iter().map(PathBuf::as_path).collect(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Hierarchy::V2(p) => format!("cgroup v2 at {}", p.display()),
            Hierarchy::V1(ps) => format!(
                "cgroup v1 at {}",
                ps.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A box's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// CPU time per 100 ms period, in microseconds.
    pub cpu_quota_us: u64,
    pub pids: u64,
}

const CPU_PERIOD_US: u64 = 100_000;

impl Limits {
    /// The limits of a box with `cpus` vCPUs and `memory_mib` of guest RAM: the guest's
    /// RAM plus room for QEMU (its TCG translation cache included), virtiofsd and the
    /// network helper; one host core more than the vCPUs, for the helpers; and 1024
    /// processes and threads, well beyond what the helpers start.
    pub fn for_box(cpus: u32, memory_mib: u32) -> Limits {
        Limits {
            memory_bytes: (u64::from(memory_mib) + OVERHEAD_MIB) << 20,
            cpu_quota_us: (u64::from(cpus) + 1) * CPU_PERIOD_US,
            pids: 1024,
        }
    }
}

/// Memory a box's helpers may use beyond the guest's RAM.
pub const OVERHEAD_MIB: u64 = 768;

/// Find where box cgroups can go, or say why nowhere.
pub fn detect() -> Result<Hierarchy, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
    let mounts = parse_mounts(&mountinfo);
    if let Some(dir) = std::env::var_os("BOXLITE_CGROUP") {
        let dir = PathBuf::from(dir);
        return match missing_v2_controllers(&dir) {
            None => Ok(Hierarchy::V2(dir)),
            Some(why) => Err(format!("BOXLITE_CGROUP={}: {why}", dir.display())),
        };
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        return Err(
            "not running as root, and BOXLITE_CGROUP does not name a delegated cgroup v2 directory"
                .into(),
        );
    }
    let v2 = mounts.iter().find(|m| m.fstype == "cgroup2");
    if let Some(m) = v2
        && missing_v2_controllers(&m.point).is_none()
    {
        return Ok(Hierarchy::V2(m.point.join("boxlite")));
    }
    let mut dirs = Vec::new();
    for c in CONTROLLERS {
        let Some(m) = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.options.split(',').any(|o| o == c))
        else {
            return Err(match v2 {
                Some(m) => format!(
                    "the cgroup v2 hierarchy at {} lacks the {} controller, and no cgroup v1 hierarchy has it",
                    m.point.display(),
                    missing_v2_controllers(&m.point).unwrap_or_default()
                ),
                None => format!("no cgroup hierarchy offers the {c} controller"),
            });
        };
        let path = own_path(&own, c).unwrap_or_default();
        // The mount's root may itself be a subtree (a cgroup namespace).
        let rel = Path::new(&path)
            .strip_prefix(&m.root)
            .unwrap_or(Path::new(""))
            .to_path_buf();
        dirs.push(m.point.join(rel).join("boxlite"));
    }
    Ok(Hierarchy::V1(dirs))
}

/// Why a cgroup v2 directory cannot hold box cgroups; `None` if it can.
fn missing_v2_controllers(dir: &Path) -> Option<String> {
    let have = match std::fs::read_to_string(dir.join("cgroup.controllers")) {
        Ok(s) => s,
        Err(e) => return Some(format!("no cgroup.controllers ({e})")),
    };
    let lacking: Vec<&str> = CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !have.split_whitespace().any(|h| h == *c))
        .collect();
    (!lacking.is_empty()).then(|| lacking.join(", "))
}

struct Mount {
    root: PathBuf,
    point: PathBuf,
    fstype: String,
    options: String,
}

fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let p: Vec<&str> = post.split(' ').collect();
            Some(Mount {
                root: PathBuf::from(unescape(f.get(3)?)),
                point: PathBuf::from(unescape(f.get(4)?)),
                fstype: (*p.first()?).to_string(),
                options: (*p.get(2)?).to_string(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's path in the v1 hierarchy of `controller`.
fn own_path(own: &str, controller: &str) -> Option<String> {
    own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let _id = f.next()?;
        let list = f.next()?;
        let path = f.next()?;
        list.split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}

/// A box's cgroup directories, created with their limits.
#[derive(Debug, Clone)]
pub struct BoxCgroup {
    dirs: Vec<PathBuf>,
}

impl BoxCgroup {
    /// Create (or reuse, after a crash) box `id`'s cgroup with `limits`. Blocking.
    pub fn create(h: &Hierarchy, id: &str, limits: Limits) -> io::Result<BoxCgroup> {
        let name = leaf(id)?;
        match h {
            Hierarchy::V2(base) => {
                prepare_v2_parent(base)?;
                let dir = base.join(name);
                mkdir(&dir)?;
                write(&dir, "memory.max", &limits.memory_bytes.to_string())?;
                write(&dir, "pids.max", &limits.pids.to_string())?;
                write(
                    &dir,
                    "cpu.max",
                    &format!("{} {CPU_PERIOD_US}", limits.cpu_quota_us),
                )?;
                Ok(BoxCgroup { dirs: vec![dir] })
            }
            Hierarchy::V1(bases) => {
                let mut dirs = Vec::new();
                for base in bases {
                    std::fs::create_dir_all(base)?;
                    let dir = base.join(name);
                    mkdir(&dir)?;
                    let has = |f: &str| dir.join(f).exists();
                    if has("memory.limit_in_bytes") {
                        write(
                            &dir,
                            "memory.limit_in_bytes",
                            &limits.memory_bytes.to_string(),
                        )?;
                    }
                    if has("pids.max") {
                        write(&dir, "pids.max", &limits.pids.to_string())?;
                    }
                    if has("cpu.cfs_quota_us") {
                        write(&dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                        write(&dir, "cpu.cfs_quota_us", &limits.cpu_quota_us.to_string())?;
                    }
                    dirs.push(dir);
                }
                Ok(BoxCgroup { dirs })
            }
        }
    }

    /// The directories, one per hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// `cgroup.procs` of each directory, open for writing: a child joins by writing
    /// `0` to each.
    pub fn open_procs(&self) -> io::Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .map(|d| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))
                    .map(OwnedFd::from)
            })
            .collect()
    }
}

/// Remove box `id`'s cgroup directories, once its processes are gone. Returns false if
/// one still holds a process (a helper killed a moment ago may take a little while to
/// leave it); what does not exist counts as removed. Blocking.
pub fn remove(h: &Hierarchy, id: &str) -> bool {
    let Ok(name) = leaf(id) else { return true };
    let mut done = true;
    for b in h.bases() {
        let dir = b.join(name);
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::debug!(dir = %dir.display(), "removing a box cgroup: {e}");
                done = false;
            }
        }
    }
    done
}

/// The directory name of a box's cgroup: its id, which must be one path component.
fn leaf(id: &str) -> io::Result<&str> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{id:?} cannot name a cgroup"),
        ));
    }
    Ok(id)
}

/// Make `base` able to hold limited children: create it and enable the controllers in
/// its parent's and its own `cgroup.subtree_control`.
fn prepare_v2_parent(base: &Path) -> io::Result<()> {
    let enable = CONTROLLERS
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(parent) = base.parent() {
        let _ = write(parent, "cgroup.subtree_control", &enable);
    }
    mkdir(base)?;
    write(base, "cgroup.subtree_control", &enable)
}

fn mkdir(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io::Error::new(
            e.kind(),
            format!("creating the cgroup {}: {e}", dir.display()),
        )),
        _ => Ok(()),
    }
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {value:?} to {}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_and_own_paths_are_parsed() {
        let mi = "35 25 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                  36 25 0:31 /ns /sys/fs/cgroup/cpu\\040x rw - cgroup cgroup rw,cpu,cpuacct\n\
                  37 25 0:32 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let m = parse_mounts(mi);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].point, Path::new("/sys/fs/cgroup/cpu x"));
        assert_eq!(m[1].root, Path::new("/ns"));
        assert!(m[1].options.split(',').any(|o| o == "cpu"));
        assert_eq!(m[2].fstype, "cgroup2");
        let own = "4:memory:/a/b\n1:cpu,cpuacct:/\n0::/\n";
        assert_eq!(own_path(own, "memory").as_deref(), Some("/a/b"));
        assert_eq!(own_path(own, "cpuacct").as_deref(), Some("/"));
        assert_eq!(own_path(own, "pids"), None);
    }

    #[test]
    fn limits_leave_room_for_the_helpers() {
        let l = Limits::for_box(2, 512);
        assert_eq!(l.memory_bytes, (512 + OVERHEAD_MIB) << 20);
        assert_eq!(l.cpu_quota_us, 300_000);
    }

    #[test]
    fn only_plain_ids_name_a_cgroup() {
        assert!(leaf("0123abcd").is_ok());
        for bad in ["", "..", "a/b", "../../x", "a b"] {
            assert!(leaf(bad).is_err(), "{bad}");
        }
    }
}
