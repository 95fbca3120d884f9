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

/// The files below a qcow2 image: its backing file, that file's backing file, and so
/// on (at most 16 deep), as QEMU resolves them (relative names against the directory of
/// the image that names them). A raw image, or one that cannot be read, ends the chain.
/// Blocking. The jail grants QEMU read access to exactly these.
pub fn backing_chain(image: &Path) -> Vec<PathBuf> {
    let mut chain = Vec::new();
    let mut current = image.to_path_buf();
    for _ in 0..16 {
        let Some(next) = backing_file(&current) else {
            break;
        };
        let next = match current.parent() {
            Some(dir) if next.is_relative() => dir.join(next),
            _ => next,
        };
        chain.push(next.clone());
        current = next;
    }
    chain
}

/// The backing file named in a qcow2 header, if any.
fn backing_file(image: &Path) -> Option<PathBuf> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::ffi::OsStrExt;
    let mut f = std::fs::File::open(image).ok()?;
    let mut h = [0u8; 20];
    f.read_exact(&mut h).ok()?;
    if &h[..4] != b"QFI\xfb" {
        return None;
    }
    let offset = u64::from_be_bytes(h[8..16].try_into().ok()?);
    let size = u32::from_be_bytes(h[16..20].try_into().ok()?);
    // QEMU caps backing file names at 1023 bytes.
    if offset == 0 || size == 0 || size > 1023 {
        return None;
    }
    let mut name = vec![0u8; usize::try_from(size).ok()?];
    f.seek(SeekFrom::Start(offset)).ok()?;
    f.read_exact(&mut name).ok()?;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(&name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backing_chain_of_an_overlay_on_an_overlay_is_followed() {
        let Some(qemu_img) = find_binary("qemu-img", "BOXLITE_QEMU_IMG") else {
            panic!("qemu-img is installed by setup");
        };
        let dir = std::env::temp_dir().join(format!("bx-chain-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("base.ext4");
        std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
        create_overlay(&base, &dir.join("mid.qcow2"), 1 << 20).unwrap();
        // A relative backing name resolves against the overlay's own directory.
        let out = crate::util::blocking::output(
            tool_command(&qemu_img)
                .current_dir(&dir)
                .args([
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "qcow2",
                    "-b",
                    "mid.qcow2",
                ])
                .arg(dir.join("top.qcow2")),
        )
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            backing_chain(&dir.join("top.qcow2")),
            vec![dir.join("mid.qcow2"), base.clone()]
        );
        assert!(backing_chain(&base).is_empty());
        assert!(backing_chain(&dir.join("missing")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
