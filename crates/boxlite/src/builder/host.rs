//! Building a base on the host: the flattened layers, one canonical tar stream, piped
//! into `mke2fs -d -`, which writes them into a fresh ext4 image file.
//!
//! `mke2fs` reads tar streams since e2fsprogs 1.47.1, through libarchive (loaded at run
//! time). It only ever sees the stream the flattener generated: every name, link and
//! header in it was checked in Rust first. It writes into the image file only, never
//! into the host's directory tree.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use boxlite_archive::layers::{self, Plan, PlanStats};

use super::{BuildError, Failure, io_err, tool};
use crate::util::spawn::tool_command;

/// The extended attributes `mke2fs` sets from a tar stream (1.47.1 to at least 1.47.2;
/// it skips the rest).
pub(crate) const XATTRS_COPIED: &[&[u8]] = &[b"security.capability"];

/// The first e2fsprogs whose `mke2fs -d` takes a tarball.
const TAR_SINCE: (u32, u32, u32) = (1, 47, 1);

/// What the host's `mke2fs` can do.
#[derive(Debug, Clone)]
pub struct Mke2fs {
    pub path: PathBuf,
    /// As it prints it, e.g. `1.47.2`.
    pub version: String,
    /// `None` when it builds from a tar stream; else why not.
    pub no_tar: Option<String>,
}

static PROBED: OnceLock<Result<Mke2fs, String>> = OnceLock::new();

/// The host's `mke2fs`, probed once per process (its version, and a real build from a
/// one-entry tar stream, which needs libarchive).
pub fn mke2fs() -> Result<&'static Mke2fs, &'static str> {
    PROBED.get_or_init(probe).as_ref().map_err(String::as_str)
}

fn probe() -> Result<Mke2fs, String> {
    probe_at(tool("mke2fs").map_err(|e| e.to_string())?)
}

fn probe_at(path: PathBuf) -> Result<Mke2fs, String> {
    let out = crate::util::blocking::output(tool_command(&path).arg("-V"))
        .map_err(|e| format!("running {}: {e}", path.display()))?;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("mke2fs "))
        .and_then(|l| l.split_whitespace().next())
        .ok_or_else(|| format!("{} -V printed no version: {}", path.display(), text.trim()))?
        .to_string();
    let mut m = Mke2fs {
        path,
        version,
        no_tar: None,
    };
    if parse_version(&m.version).is_none_or(|v| v < TAR_SINCE) {
        m.no_tar = Some(format!(
            "mke2fs {} is older than 1.47.1, the first that builds from a tar stream",
            m.version
        ));
        return Ok(m);
    }
    if let Err(e) = try_tar(&m.path) {
        m.no_tar = Some(e);
    }
    Ok(m)
}

fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    Some((
        it.next()?.ok()?,
        it.next()?.ok()?,
        it.next().and_then(Result::ok).unwrap_or(0),
    ))
}

/// Build a 4 MiB image from a one-directory tar stream.
fn try_tar(mke2fs: &Path) -> Result<(), String> {
    let img = std::env::temp_dir().join(format!("boxlite-mke2fs-{:016x}", rand::random::<u64>()));
    let result = (|| {
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(4 << 20))
            .map_err(|e| format!("creating {}: {e}", img.display()))?;
        let mut tar = layers::TarWriter::new(Vec::new());
        tar.header(
            b"probe",
            layers::Kind::Dir,
            &layers::Meta {
                mode: 0o755,
                ..Default::default()
            },
            0,
            b"",
            (0, 0),
        )
        .map_err(|e| e.to_string())?;
        let tar = tar.finish().map_err(|e| e.to_string())?;
        let (_, status, err) = crate::util::blocking::feed(
            tool_command(mke2fs)
                .args(["-q", "-F", "-t", "ext4", "-d", "-"])
                .arg(&img),
            |mut stdin| stdin.write_all(&tar),
        )
        .map_err(|e| format!("running {}: {e}", mke2fs.display()))?;
        if status.success() {
            return Ok(());
        }
        Err(if err.contains("libarchive") {
            "mke2fs cannot load libarchive, which it needs to read a tar stream (Debian: apt-get install libarchive13)".to_string()
        } else {
            format!("mke2fs failed to build from a tar stream: {}", err.trim())
        })
    })();
    let _ = std::fs::remove_file(&img);
    result
}

/// The size of a filesystem for a tree (bytes) and its inode count: the content and
/// its metadata, plus free room as the builder VM left it (a quarter of the content, at
/// least 1 GiB). The file is sparse: room not written costs nothing.
pub(crate) fn fs_size(stats: &PlanStats) -> (u64, u64) {
    let data = stats.blocks * 4096;
    // Inode tables (256-byte inodes, a quarter spare), a 64 MiB journal, bitmaps and
    // descriptors, and a margin for the estimate.
    let meta = stats.inodes * 320 + (64 << 20) + data / 32 + (16 << 20);
    let used = data + meta;
    let headroom = (used / 4).max(1 << 30);
    let size = (used + headroom).div_ceil(1 << 20) << 20;
    // One inode per 16 KiB (mke2fs's default ratio), and never fewer than the tree
    // needs plus a quarter.
    let inodes = (size / 16384).max(stats.inodes + stats.inodes / 4 + 4096);
    (size, inodes)
}

/// Write the planned tree into a new ext4 image at `disk`; returns its size.
/// Blocking: runs `mke2fs` and feeds it.
pub(crate) fn build<R: Read>(
    mke2fs: &Mke2fs,
    plan: &Plan,
    open: impl FnMut(usize) -> io::Result<R>,
    disk: &Path,
) -> Result<u64, Failure> {
    let (size, inodes) = fs_size(&plan.stats);
    std::fs::File::create(disk)
        .and_then(|f| f.set_len(size))
        .map_err(io_err("creating", disk))?;
    let mut cmd = tool_command(&mke2fs.path);
    cmd.args(["-q", "-F", "-t", "ext4", "-L", "boxlite-root", "-N"])
        .arg(inodes.to_string())
        .args([
            "-E",
            "root_owner=0:0,lazy_itable_init=0,lazy_journal_init=1",
            "-d",
            "-",
        ])
        .arg(disk);
    // mke2fs ends with this thread: a build killed mid-stream leaves no process.
    // SAFETY: prctl is async-signal-safe and allocates nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (emitted, status, output) = crate::util::blocking::feed(&mut cmd, |stdin| {
        layers::emit(plan, open, io::BufWriter::with_capacity(1 << 20, stdin))
    })
    .map_err(io_err("running", &mke2fs.path))?;
    match emitted {
        // mke2fs stopped reading: its own error says why.
        Err(layers::FlattenError::Write(_)) | Ok(_) if !status.success() => {
            Err(BuildError::ToolFailed {
                tool: mke2fs.path.display().to_string(),
                status: status.to_string(),
                output: output.trim().to_string(),
            }
            .into())
        }
        Err(e) => Err(Failure::Flatten(e)),
        Ok(_) => Ok(size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in `mke2fs` (a shell script) for the probe's decisions.
    fn fake(dir: &Path, version: &str, on_build: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(format!("mke2fs-{version}"));
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\nif [ \"$1\" = -V ]; then echo 'mke2fs {version} (1-Jan-2025)' >&2; exit 0; fi\ncat >/dev/null\n{on_build}\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn the_probe_tells_an_old_mke2fs_and_a_missing_libarchive_from_a_working_one() {
        let dir = std::env::temp_dir().join(format!("boxlite-probe-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = probe_at(fake(&dir, "1.47.0", "exit 0")).unwrap();
        assert_eq!(old.version, "1.47.0");
        assert!(
            old.no_tar.as_deref().unwrap().contains("older than 1.47.1"),
            "{old:?}"
        );
        let no_lib = probe_at(fake(
            &dir,
            "1.47.2",
            "echo 'you need libarchive to be able to process tarballs' >&2; exit 1",
        ))
        .unwrap();
        assert!(
            no_lib.no_tar.as_deref().unwrap().contains("libarchive13"),
            "{no_lib:?}"
        );
        let good = probe_at(fake(&dir, "1.47.3", "exit 0")).unwrap();
        assert_eq!((good.version.as_str(), good.no_tar), ("1.47.3", None));
        assert!(probe_at(dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        // The real one on this machine: the setup script installs one that reads tar.
        let real = mke2fs().unwrap();
        assert_eq!(real.no_tar, None, "{real:?}");
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert_eq!(parse_version("1.47.2"), Some((1, 47, 2)));
        assert_eq!(parse_version("1.47.0-wip"), Some((1, 47, 0)));
        assert_eq!(parse_version("1.46"), Some((1, 46, 0)));
        assert!(parse_version("1.47.0").unwrap() < TAR_SINCE);
        assert!(parse_version("1.48.0").unwrap() > TAR_SINCE);
        assert_eq!(parse_version("x"), None);
    }

    #[test]
    fn a_filesystem_has_room_for_its_tree_and_at_least_a_gib_free() {
        let small = PlanStats {
            inodes: 10,
            blocks: 100,
            ..Default::default()
        };
        let (size, inodes) = fs_size(&small);
        assert!(
            ((1 << 30) + 100 * 4096..(1 << 30) + (200 << 20)).contains(&size),
            "{size}"
        );
        assert_eq!(inodes, size / 16384);
        // Many small files: the inode count follows the tree, not the ratio.
        let many = PlanStats {
            inodes: 2_000_000,
            blocks: 2_000_000,
            ..Default::default()
        };
        let (size, inodes) = fs_size(&many);
        assert_eq!(inodes, 2_000_000 + 500_000 + 4096);
        let used = 2_000_000 * 4096u64;
        assert!(size > used + used / 4, "{size}");
    }
}
