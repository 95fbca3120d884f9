//! Landlock: the files a helper may reach, as a ruleset the spawner builds and the child
//! enforces on itself before `execve`.
//!
//! The ruleset handles every filesystem right the running kernel knows (ABI 1 to 5), so
//! whatever is not granted beneath one of the rule paths is refused, executing included.
//! With ABI 4, TCP `bind` and `connect` are handled too for helpers that use no TCP (all
//! but the network helper): none is granted, so they have no TCP at all. With ABI 6 a
//! helper can neither signal nor reach an abstract unix socket outside its own domain
//! (not the shim, which ends the other helpers of its box).
//!
//! Landlock cannot be combined with a helper that changes its own mount table (virtiofsd
//! with `--sandbox=namespace`, whose `pivot_root` it would refuse); that helper's own
//! sandbox takes its place.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;

// Filesystem rights, by the ABI that introduced them.
const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const REMOVE_DIR: u64 = 1 << 4;
const REMOVE_FILE: u64 = 1 << 5;
const MAKE_CHAR: u64 = 1 << 6;
const MAKE_DIR: u64 = 1 << 7;
const MAKE_REG: u64 = 1 << 8;
const MAKE_SOCK: u64 = 1 << 9;
const MAKE_FIFO: u64 = 1 << 10;
const MAKE_BLOCK: u64 = 1 << 11;
const MAKE_SYM: u64 = 1 << 12;
const REFER: u64 = 1 << 13; // ABI 2
const TRUNCATE: u64 = 1 << 14; // ABI 3
const IOCTL_DEV: u64 = 1 << 15; // ABI 5

const NET_BIND_TCP: u64 = 1 << 0; // ABI 4
const NET_CONNECT_TCP: u64 = 1 << 1;

const SCOPE_ABSTRACT_UNIX: u64 = 1 << 0; // ABI 6
const SCOPE_SIGNAL: u64 = 1 << 1;

/// Rights that apply to a file (as opposed to a directory): a rule on a file may only
/// grant these.
const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// How much of a tree a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read files and list directories.
    Read,
    /// Read, and execute files (a helper's own binary and its ELF interpreter).
    Exec,
    /// Read and change everything beneath, but make no device node and execute nothing.
    Write,
    /// A device: read, write, and its ioctls.
    Device,
}

/// One tree (or file) and what the helper may do beneath it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub path: PathBuf,
    pub access: Access,
}

/// What a ruleset restricts beyond files.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope {
    /// Refuse TCP bind and connect (ABI 4).
    pub no_tcp: bool,
    /// Refuse signals to, and abstract unix sockets of, processes outside the domain
    /// (ABI 6).
    pub isolate: bool,
}

/// The landlock ABI of the running kernel; 0: none (not built in, or disabled at boot).
pub fn abi() -> u32 {
    // SAFETY: the version query takes no attribute and returns a number or -1.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).unwrap_or(0)
}

fn handled_fs(abi: u32) -> u64 {
    let mut fs = EXECUTE
        | WRITE_FILE
        | READ_FILE
        | READ_DIR
        | REMOVE_DIR
        | REMOVE_FILE
        | MAKE_CHAR
        | MAKE_DIR
        | MAKE_REG
        | MAKE_SOCK
        | MAKE_FIFO
        | MAKE_BLOCK
        | MAKE_SYM;
    if abi >= 2 {
        fs |= REFER;
    }
    if abi >= 3 {
        fs |= TRUNCATE;
    }
    if abi >= 5 {
        fs |= IOCTL_DEV;
    }
    fs
}

fn rights(access: Access) -> u64 {
    match access {
        Access::Read => READ_FILE | READ_DIR,
        Access::Exec => READ_FILE | READ_DIR | EXECUTE,
        Access::Write => {
            READ_FILE
                | READ_DIR
                | WRITE_FILE
                | TRUNCATE
                | REMOVE_DIR
                | REMOVE_FILE
                | MAKE_DIR
                | MAKE_REG
                | MAKE_SOCK
                | MAKE_FIFO
                | MAKE_SYM
                | REFER
        }
        Access::Device => READ_FILE | WRITE_FILE | IOCTL_DEV,
    }
}

/// Build a ruleset for `rules` on a kernel of landlock `abi` (at least 1). A rule whose
/// path does not exist is skipped (a helper cannot reach what is not there; what it
/// creates lives under a directory rule). The descriptor is close-on-exec: the child
/// enforces it with [`restrict_self`] and `execve` closes it.
pub fn ruleset(abi: u32, rules: &[Rule], scope: Scope) -> io::Result<OwnedFd> {
    let handled = handled_fs(abi);
    let mut attr = RulesetAttr {
        handled_access_fs: handled,
        handled_access_net: 0,
        scoped: 0,
    };
    if abi >= 4 && scope.no_tcp {
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP;
    }
    if abi >= 6 && scope.isolate {
        attr.scoped = SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL;
    }
    // The kernel takes as much of the struct as its ABI knows.
    let size = match abi {
        1..=3 => 8,
        4 | 5 => 16,
        _ => std::mem::size_of::<RulesetAttr>(),
    };
    // SAFETY: the attribute lives across the call and `size` does not exceed it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &raw const attr,
            size,
            0u32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, owned by nobody else (landlock makes it close-on-exec).
    let ruleset = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap_or(-1)) };
    for rule in rules {
        add_path(&ruleset, &rule.path, rights(rule.access) & handled)?;
    }
    Ok(ruleset)
}

fn add_path(ruleset: &OwnedFd, path: &Path, allowed: u64) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("opening {} for a landlock rule: {e}", path.display()),
            ));
        }
    };
    let is_dir = file.metadata().is_ok_and(|m| m.is_dir());
    let allowed = if is_dir {
        allowed
    } else {
        allowed & FILE_RIGHTS
    };
    let attr = PathBeneathAttr {
        allowed_access: allowed,
        parent_fd: file.as_raw_fd(),
    };
    // SAFETY: the attribute and the descriptor live across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &raw const attr,
            0u32,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("adding the landlock rule for {}: {e}", path.display()),
        ));
    }
    Ok(())
}

/// Enforce a ruleset on the calling thread (and what it executes). Needs
/// `no_new_privs` first. Async-signal-safe.
pub fn restrict_self(ruleset: i32) -> io::Result<()> {
    // SAFETY: one syscall on a descriptor number.
    if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The file a dynamically linked ELF `binary` names as its interpreter (`PT_INTERP`),
/// which the kernel executes with it; `None` for a static binary or one that cannot be
/// read as a 64-bit ELF.
pub fn interpreter(binary: &Path) -> Option<PathBuf> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::ffi::OsStrExt;
    let mut f = std::fs::File::open(binary).ok()?;
    let mut h = [0u8; 64];
    f.read_exact(&mut h).ok()?;
    // 64-bit, little-endian ELF only (x86_64 and aarch64).
    if &h[..4] != b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
    let phoff = u64::from_le_bytes(h[32..40].try_into().ok()?);
    let phentsize = u64::from(u16_at(54));
    let phnum = u16_at(56).min(64);
    for i in 0..u64::from(phnum) {
        let mut ph = [0u8; 56];
        f.seek(SeekFrom::Start(phoff + i * phentsize)).ok()?;
        f.read_exact(&mut ph).ok()?;
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(ph[..4].try_into().ok()?) != PT_INTERP {
            continue;
        }
        let off = u64::from_le_bytes(ph[8..16].try_into().ok()?);
        let size = u64::from_le_bytes(ph[32..40].try_into().ok()?).min(4096);
        let mut name = vec![0u8; usize::try_from(size).ok()?];
        f.seek(SeekFrom::Start(off)).ok()?;
        f.read_exact(&mut name).ok()?;
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        return Some(PathBuf::from(std::ffi::OsStr::from_bytes(&name[..end])));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interpreter_of_a_dynamic_binary_is_found() {
        // /bin/sh is dynamically linked on every Debian system.
        let interp = interpreter(Path::new("/bin/sh")).expect("an interpreter");
        assert!(interp.to_string_lossy().contains("ld-"), "{interp:?}");
        assert!(interp.exists());
        assert_eq!(interpreter(Path::new("/etc/hostname")), None);
    }

    #[test]
    fn rights_stay_within_what_the_kernel_handles() {
        for abi in 1..=7 {
            let handled = handled_fs(abi);
            for a in [Access::Read, Access::Exec, Access::Write, Access::Device] {
                let r = rights(a) & handled;
                assert_eq!(r & !handled, 0);
                assert_eq!(r & (MAKE_CHAR | MAKE_BLOCK), 0, "{a:?}");
            }
            assert_eq!(rights(Access::Write) & EXECUTE, 0);
        }
    }
}
