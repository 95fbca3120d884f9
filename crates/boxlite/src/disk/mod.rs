//! Box disks: a qcow2 overlay per box on top of the image's read-only ext4 base.
//! Writes land in the overlay; the base never changes, so any number of boxes share it.

use std::path::{Path, PathBuf};

use crate::util::process::find_binary;
use crate::util::spawn::tool_command;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("qemu-img not found; install it (Debian: apt-get install qemu-utils)")]
    QemuImgMissing,
    #[error("creating overlay {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating overlay {path} on {base} failed: {stderr}")]
    Create {
        path: PathBuf,
        base: PathBuf,
        stderr: String,
    },
}

/// Create `path` as a qcow2 overlay backed by the raw ext4 image `base`, `size` bytes
/// large (at least the base's; the guest grows the filesystem into the rest). Blocking:
/// runs `qemu-img`.
pub fn create_overlay(base: &Path, path: &Path, size: u64) -> Result<(), DiskError> {
    let qemu_img = find_binary("qemu-img", "BOXLITE_QEMU_IMG").ok_or(DiskError::QemuImgMissing)?;
    let out = crate::util::blocking::output(
        tool_command(&qemu_img)
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(base)
            .arg(path)
            .arg(size.to_string()),
    )
    .map_err(|source| DiskError::Spawn {
        path: path.to_path_buf(),
        source,
    })?;
    if !out.status.success() {
        let _ = std::fs::remove_file(path);
        return Err(DiskError::Create {
            path: path.to_path_buf(),
            base: base.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}
