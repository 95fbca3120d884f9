//! Building an image's ext4 base in a builder VM.
//!
//! Layers are hostile input, so they are never unpacked on the host. The host makes a
//! blank sparse ext4 file (`mkfs.ext4`, no root needed), boots the ordinary guest kernel
//! and agent on it in builder mode (`boxlite.builder=1`: the agent mounts the disk and
//! prepares nothing on it), and streams each verified layer blob to the agent's
//! `ApplyLayer`, which decompresses and unpacks it inside the VM under
//! `RESOLVE_IN_ROOT`. Whatever a layer does, it can only write into that disk, and only
//! as much as the disk holds. After a clean power-off the host checks the filesystem
//! (`e2fsck`), shrinks it to the content plus headroom (`resize2fs`), and renames it into
//! `bases/<manifest hex>.ext4`.
//!
//! One build per image at a time: builds take `locks/<manifest hex>` and re-check for a
//! finished base once they hold it. Each build works in `tmp/img-<random>/`, locked by
//! its `lock` file for as long as it runs, so cleanup can tell a live build from the
//! leftovers of a killed one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::blobs::digest_hex;
use super::registry::ImageRecord;
use super::{ImageError, ImageStore};
use crate::litebox::boot::{BootGuard, DiskFormat, VmSpec, launch};
use crate::litebox::record::BoxStatus;
use crate::runtime::RuntimeInner;
use crate::runtime::layout::{BoxPaths, SocketPaths, socket_root};
use crate::util::lock::{FileLock, LockMode};
use crate::util::process::find_binary;

/// Prefix of a build's work and socket directories. Not a hex digit, so never a box id.
pub const BUILD_PREFIX: &str = "img-";

/// The builder disk's size when the layers are small. It is a sparse file: only what
/// the layers write takes space. It also caps what a layer can write (a decompression
/// bomb fills it and fails the build).
const MIN_BUILD_DISK: u64 = 16 << 30;

/// Builder VM memory.
const BUILD_MEMORY_MIB: u32 = 512;

/// How long the builder may take to power off after the last layer.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(60);

/// What a build did.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub layers: usize,
    /// Entries and bytes the layers unpacked.
    pub entries: u64,
    pub bytes: u64,
    /// The finished base's size.
    pub base_size: u64,
    pub boot_ms: u64,
    pub apply_ms: u64,
    pub finish_ms: u64,
}

fn build_error(rec: &ImageRecord, reason: impl Into<String>) -> crate::Error {
    ImageError::Build {
        reference: rec.reference.clone(),
        reason: reason.into(),
    }
    .into()
}

fn tool(rec: &ImageRecord, name: &str) -> Result<PathBuf, crate::Error> {
    find_binary(
        name,
        &format!("BOXLITE_{}", name.replace('.', "_").to_uppercase()),
    )
    .ok_or_else(|| {
        build_error(
            rec,
            format!("{name} not found; install e2fsprogs (Debian: apt-get install e2fsprogs)"),
        )
    })
}

/// Run a tool, returning its exit code and output; `ok` lists the codes that count as
/// success.
fn run(
    rec: &ImageRecord,
    binary: &Path,
    args: &[&std::ffi::OsStr],
    ok: &[i32],
) -> Result<String, crate::Error> {
    let out = std::process::Command::new(binary)
        .args(args)
        .output()
        .map_err(|e| build_error(rec, format!("running {}: {e}", binary.display())))?;
    let code = out.status.code().unwrap_or(-1);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !ok.contains(&code) {
        return Err(build_error(
            rec,
            format!(
                "{} failed ({}): {}",
                binary.display(),
                out.status,
                text.trim()
            ),
        ));
    }
    Ok(text)
}

/// The ext4 base of `rec`, built now if the store does not have it yet.
pub(crate) async fn ensure_base(
    rt: &RuntimeInner,
    store: &ImageStore,
    rec: &ImageRecord,
) -> Result<(PathBuf, Option<BuildReport>), crate::Error> {
    let hex = digest_hex(&rec.manifest_digest)
        .map_err(ImageError::from)?
        .to_string();
    let base = store.base_path(&hex);
    if base.is_file() {
        return Ok((base, None));
    }
    let io = |what: &str, p: &Path, e: std::io::Error| {
        build_error(rec, format!("{what} {}: {e}", p.display()))
    };
    let locks = store.locks_dir();
    std::fs::create_dir_all(&locks).map_err(|e| io("creating", &locks, e))?;
    let lock_path = locks.join(&hex);
    let _lock = FileLock::acquire(&lock_path, LockMode::Exclusive)
        .await
        .map_err(|e| io("locking", &lock_path, e))?;
    if base.is_file() {
        return Ok((base, None));
    }
    let name = format!("{BUILD_PREFIX}{:08x}", rand::random::<u32>());
    let work = store.tmp_dir().join(&name);
    std::fs::create_dir_all(&work).map_err(|e| io("creating", &work, e))?;
    let work_lock = FileLock::acquire(&work.join("lock"), LockMode::Exclusive)
        .await
        .map_err(|e| io("locking", &work, e))?;
    let sockets = SocketPaths {
        dir: socket_root().join(&name),
    };
    let result = build_in(rt, store, rec, &work, &sockets, &base).await;
    sockets.remove();
    drop(work_lock);
    let _ = std::fs::remove_dir_all(&work);
    result.map(|r| (base, Some(r)))
}

async fn build_in(
    rt: &RuntimeInner,
    store: &ImageStore,
    rec: &ImageRecord,
    work: &Path,
    sockets: &SocketPaths,
    base: &Path,
) -> Result<BuildReport, crate::Error> {
    let mut report = BuildReport {
        layers: rec.layers.len(),
        ..Default::default()
    };
    let mkfs = tool(rec, "mkfs.ext4")?;
    let e2fsck = tool(rec, "e2fsck")?;
    let resize2fs = tool(rec, "resize2fs")?;
    // Every blob is checked before the VM boots: a missing one fails fast, a corrupt
    // one is removed (and re-fetched by the next pull).
    let blobs = store.blobs();
    for l in &rec.layers {
        blobs.verify(&l.digest).map_err(ImageError::from)?;
    }

    let t = Instant::now();
    let disk = work.join("rootfs.ext4");
    let compressed: u64 = rec.layers.iter().map(|l| l.size).sum();
    let size = MIN_BUILD_DISK.max(compressed.saturating_mul(8));
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(size))
        .map_err(|e| build_error(rec, format!("creating {}: {e}", disk.display())))?;
    run(
        rec,
        &mkfs,
        &[
            "-q".as_ref(),
            "-F".as_ref(),
            "-L".as_ref(),
            "boxlite-root".as_ref(),
            "-E".as_ref(),
            "root_owner=0:0,lazy_itable_init=0,lazy_journal_init=1".as_ref(),
            disk.as_os_str(),
        ],
        &[0],
    )?;

    sockets.create(rt.layout.home())?;
    let mut guard = BootGuard {
        procs: Vec::new(),
        sockets: sockets.clone(),
        armed: true,
    };
    let id = work
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let spec = VmSpec {
        id: &id,
        paths: BoxPaths {
            dir: work.to_path_buf(),
        },
        root_disk: disk.clone(),
        root_format: DiskFormat::Raw,
        memory_mib: BUILD_MEMORY_MIB,
        cpus: 2,
        volumes: &[],
        cmdline: vec!["boxlite.builder=1".into()],
    };
    let mut status = BoxStatus::default();
    let applied = async {
        let client = launch(rt, &spec, &mut status, &mut guard, &|_| Ok(())).await?;
        report.boot_ms = t.elapsed().as_millis() as u64;
        let t_apply = Instant::now();
        for l in &rec.layers {
            let reader = blobs.open_verified(&l.digest).map_err(ImageError::from)?;
            let what = format!("layer {} of {}", l.digest, rec.reference);
            let stats =
                crate::litebox::copy::send_layer(&client, &what, reader, l.compression, &l.digest)
                    .await?;
            report.entries += stats.entries;
            report.bytes += stats.bytes;
        }
        report.apply_ms = t_apply.elapsed().as_millis() as u64;
        client
            .shutdown()
            .await
            .map_err(|e| build_error(rec, format!("asking the builder to power off: {e}")))?;
        Ok::<_, crate::Error>(())
    }
    .await;
    if let Err(e) = applied {
        guard.cleanup().await;
        guard.armed = false;
        let console = crate::util::fsutil::tail_file(&spec.paths.console_log(), 2000);
        let err = crate::error_chain(&e);
        // Keep the error's own type where it has one the caller acts on (a corrupt blob).
        return Err(match e {
            crate::Error::Image(ImageError::Blob(_)) => e,
            _ if console.trim().is_empty() => build_error(rec, err),
            _ => build_error(
                rec,
                format!("{err}\n--- builder console (tail) ---\n{}", console.trim()),
            ),
        });
    }
    // The agent syncs, unmounts and powers off; wait for QEMU to go. The vsock helper
    // outlives it and is stopped with the rest.
    let t_finish = Instant::now();
    if let Some(vmm) = status.vmm
        && !vmm.wait_gone(POWEROFF_TIMEOUT).await
    {
        guard.cleanup().await;
        guard.armed = false;
        return Err(build_error(rec, "the builder VM did not power off"));
    }
    guard.cleanup().await;
    guard.armed = false;

    // e2fsck: 0 clean, 1 errors fixed (a journal replayed).
    run(
        rec,
        &e2fsck,
        &["-f".as_ref(), "-y".as_ref(), disk.as_os_str()],
        &[0, 1],
    )?;
    let (blocks, free, block_size) = ext4_counts(rec, &disk)?;
    let min = run(rec, &resize2fs, &["-P".as_ref(), disk.as_os_str()], &[0])?;
    let min: u64 = min
        .lines()
        .find_map(|l| l.split("minimum size of the filesystem:").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| build_error(rec, format!("unexpected resize2fs -P output: {min}")))?;
    let target = shrunk_size(blocks - free, min, block_size);
    if target < blocks {
        run(
            rec,
            &resize2fs,
            &[disk.as_os_str(), target.to_string().as_ref()],
            &[0],
        )?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&disk)
            .and_then(|f| f.set_len(target * block_size))
            .map_err(|e| build_error(rec, format!("truncating {}: {e}", disk.display())))?;
    }
    report.base_size = target.min(blocks) * block_size;
    let parent = base.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .and_then(|()| std::fs::rename(&disk, base))
        .map_err(|e| build_error(rec, format!("storing {}: {e}", base.display())))?;
    report.finish_ms = t_finish.elapsed().as_millis() as u64;
    tracing::info!(
        image = %rec.reference, layers = report.layers, entries = report.entries,
        bytes = report.bytes, base_size = report.base_size, boot_ms = report.boot_ms,
        apply_ms = report.apply_ms, finish_ms = report.finish_ms, "image base built"
    );
    Ok(report)
}

/// Block count, free blocks and block size of an ext4 image, from `dumpe2fs -h`.
fn ext4_counts(rec: &ImageRecord, disk: &Path) -> Result<(u64, u64, u64), crate::Error> {
    let dumpe2fs = tool(rec, "dumpe2fs")?;
    let text = run(rec, &dumpe2fs, &["-h".as_ref(), disk.as_os_str()], &[0])?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim_start_matches(':').trim().parse::<u64>().ok())
            .ok_or_else(|| build_error(rec, format!("dumpe2fs shows no {name:?}")))
    };
    Ok((
        field("Block count")?,
        field("Free blocks")?,
        field("Block size")?,
    ))
}

/// Headroom over the content of a built base: a quarter of it, at least 1 GiB, so a box
/// has room to install things without growing its disk at boot (which is slow under
/// TCG). The file is sparse: the free space costs nothing on the host.
fn shrunk_size(used_blocks: u64, min_blocks: u64, block_size: u64) -> u64 {
    let headroom = (used_blocks / 4).max((1 << 30) / block_size);
    let mib = (1 << 20) / block_size;
    let target = (used_blocks + headroom).max(min_blocks);
    target.div_ceil(mib) * mib
}

/// Remove what killed builds left: work directories and socket directories whose build
/// no longer holds its lock.
pub(crate) fn sweep(store: &ImageStore) {
    for e in std::fs::read_dir(store.tmp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with(BUILD_PREFIX) {
            continue;
        }
        let held = FileLock::try_acquire(&e.path().join("lock"), LockMode::Exclusive);
        if matches!(held, Ok(Some(_)) | Err(_)) {
            tracing::info!(dir = %e.path().display(), "removing an abandoned image build");
            let _ = std::fs::remove_dir_all(e.path());
            SocketPaths {
                dir: socket_root().join(&name),
            }
            .remove();
        }
    }
}

/// Whether a socket directory belongs to an image build that is still running.
pub(crate) fn is_live_build(store: &ImageStore, socket_dir_name: &str) -> bool {
    socket_dir_name.starts_with(BUILD_PREFIX)
        && matches!(
            FileLock::try_acquire(
                &store.tmp_dir().join(socket_dir_name).join("lock"),
                LockMode::Exclusive
            ),
            Ok(None)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_get_a_quarter_or_1_gib_of_headroom_rounded_to_a_mib() {
        // 100 MiB used in 4 KiB blocks: 1 GiB of headroom.
        assert_eq!(shrunk_size(25_600, 1_000, 4096), 25_600 + 262_144);
        // 8 GiB used (and a little): a quarter, rounded up to a MiB.
        let used = 2_097_152 + 3;
        assert_eq!(
            shrunk_size(used, 1_000, 4096),
            (used + used / 4).div_ceil(256) * 256
        );
        // Never below resize2fs's minimum.
        assert_eq!(shrunk_size(10, 500_000, 4096), 500_224);
    }
}
