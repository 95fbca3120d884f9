//! Guest assets: the kernel, the initramfs, built-in images and helper binaries, as built
//! by `scripts/build-assets.sh` and described by its `manifest.json`.
//!
//! Lookup order: `$BOXLITE_ASSETS`, then `assets/` beside the running binary, then
//! `$XDG_DATA_HOME/boxlite/assets` (`~/.local/share/boxlite/assets`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;

use crate::util::fsutil::sha256_file;

const HOW_TO_BUILD: &str = "build them with scripts/build-assets.sh (or scripts/setup.sh) and point BOXLITE_ASSETS at the output directory";

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("no guest assets found (looked in {searched}); {HOW_TO_BUILD}")]
    NotFound { searched: String },
    #[error("asset manifest {path} is unreadable; {HOW_TO_BUILD}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("asset manifest {path} is malformed: {reason}; {HOW_TO_BUILD}")]
    ManifestFormat { path: PathBuf, reason: String },
    #[error("asset {path} is missing; {HOW_TO_BUILD}")]
    Missing { path: PathBuf },
    #[error("asset {path} is corrupt: {reason}; {HOW_TO_BUILD}")]
    Corrupt { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
struct FileEntry {
    size: u64,
    sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Manifest {
    #[serde(default)]
    kernel_release: String,
    files: BTreeMap<String, FileEntry>,
    #[serde(default)]
    images: BTreeMap<String, String>,
    /// Per built-in image: what a box runs by default, and its environment.
    #[serde(default)]
    image_config: BTreeMap<String, crate::model::RunConfig>,
}

/// What identifies one version of a file: any write, truncate, chmod or rename changes
/// the ctime, which a user cannot set back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    sha256: String,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata, sha256: &str) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            sha256: sha256.to_string(),
        }
    }
}

/// A located, checked asset directory.
#[derive(Debug)]
pub struct Assets {
    dir: PathBuf,
    manifest: Manifest,
    /// Files whose sha256 has been checked, by absolute path, as they were then. Kept in
    /// memory, and in `stamp_file` when there is one, so that a short-lived CLI process
    /// does not hash the 50 MB kernel on every run.
    verified: Mutex<BTreeMap<String, FileStamp>>,
    stamp_file: Option<PathBuf>,
}

/// Candidate asset directories, in lookup order.
pub fn candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("BOXLITE_ASSETS") {
        v.push(PathBuf::from(p));
        return v;
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        v.push(dir.join("assets"));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    if let Some(d) = data {
        v.push(d.join("boxlite/assets"));
    }
    v
}

impl Assets {
    /// Find the first candidate directory with a manifest and load it.
    pub fn locate() -> Result<Assets, AssetError> {
        let cands = candidates();
        for dir in &cands {
            if dir.join("manifest.json").is_file() {
                return Assets::open(dir);
            }
        }
        Err(AssetError::NotFound {
            searched: cands
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    pub fn open(dir: &Path) -> Result<Assets, AssetError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|source| AssetError::Manifest {
            path: path.clone(),
            source,
        })?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| AssetError::ManifestFormat {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        for required in ["vmlinux", "initramfs.cpio"] {
            if !manifest.files.contains_key(required) {
                return Err(AssetError::ManifestFormat {
                    path,
                    reason: format!("no entry for {required}"),
                });
            }
        }
        Ok(Assets {
            dir: dir.to_path_buf(),
            manifest,
            verified: Mutex::new(BTreeMap::new()),
            stamp_file: None,
        })
    }

    /// Remember verified files across processes in `path` (best effort).
    pub fn with_stamp_file(mut self, path: PathBuf) -> Self {
        let stamps: BTreeMap<String, FileStamp> = std::fs::read(&path)
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default();
        self.verified = Mutex::new(stamps);
        self.stamp_file = Some(path);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn kernel_release(&self) -> &str {
        &self.manifest.kernel_release
    }

    /// The path of a manifest file, checked for presence and size, and its sha256 checked
    /// once per process (again if the file changes).
    pub fn file(&self, name: &str) -> Result<PathBuf, AssetError> {
        let path = self.dir.join(name);
        let entry = self
            .manifest
            .files
            .get(name)
            .ok_or_else(|| AssetError::Missing { path: path.clone() })?;
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(_) => return Err(AssetError::Missing { path }),
        };
        if meta.len() != entry.size {
            return Err(AssetError::Corrupt {
                path,
                reason: format!(
                    "size {} differs from the recorded {}",
                    meta.len(),
                    entry.size
                ),
            });
        }
        let key = path.display().to_string();
        let expected = FileStamp::of(&meta, &entry.sha256);
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.get(&key) != Some(&expected) {
            let actual =
                sha256_file(&path).map_err(|_| AssetError::Missing { path: path.clone() })?;
            if actual != entry.sha256 {
                return Err(AssetError::Corrupt {
                    path,
                    reason: format!("sha256 {actual} differs from the recorded {}", entry.sha256),
                });
            }
            verified.insert(key, expected);
            if let Some(stamp_file) = &self.stamp_file
                && let Ok(data) = serde_json::to_vec(&*verified)
            {
                let _ = std::fs::create_dir_all(stamp_file.parent().unwrap_or(Path::new("/")));
                let _ = crate::util::fsutil::write_atomic(stamp_file, &data);
            }
        }
        Ok(path)
    }

    pub fn kernel(&self) -> Result<PathBuf, AssetError> {
        self.file("vmlinux")
    }

    pub fn initramfs(&self) -> Result<PathBuf, AssetError> {
        self.file("initramfs.cpio")
    }

    /// Recorded sha256 of a manifest file.
    pub fn recorded_sha256(&self, name: &str) -> Option<&str> {
        self.manifest.files.get(name).map(|e| e.sha256.as_str())
    }

    /// Built-in images: reference to manifest file name.
    pub fn builtin_images(&self) -> &BTreeMap<String, String> {
        &self.manifest.images
    }

    /// The run settings of a built-in image, if the manifest gives them.
    pub fn builtin_config(&self, name: &str) -> Option<&crate::model::RunConfig> {
        self.manifest.image_config.get(name)
    }

    /// A helper binary shipped with the assets, if present.
    pub fn bin(&self, name: &str) -> Option<PathBuf> {
        let p = self.dir.join("bin").join(name);
        p.is_file().then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_assets(kernel: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bx-assets-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vmlinux"), kernel).unwrap();
        std::fs::write(dir.join("initramfs.cpio"), b"init").unwrap();
        let m = format!(
            r#"{{"format":1,"kernel_release":"x","files":{{"vmlinux":{{"size":{},"sha256":"{}"}},"initramfs.cpio":{{"size":4,"sha256":"{}"}}}},"images":{{}}}}"#,
            kernel.len(),
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(kernel)),
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"init")),
        );
        std::fs::write(dir.join("manifest.json"), m).unwrap();
        dir
    }

    #[test]
    fn missing_kernel_error_names_the_file_and_the_build_script() {
        let dir = fake_assets(b"kernel");
        std::fs::remove_file(dir.join("vmlinux")).unwrap();

        let err = Assets::open(&dir)
            .unwrap()
            .kernel()
            .unwrap_err()
            .to_string();

        assert!(
            err.contains(&dir.join("vmlinux").display().to_string()),
            "{err}"
        );
        assert!(err.contains("scripts/build-assets.sh"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_persisted_stamp_is_not_trusted_after_the_file_changes() {
        let dir = fake_assets(b"kernel");
        let stamps = dir.join("stamps.json");
        Assets::open(&dir)
            .unwrap()
            .with_stamp_file(stamps.clone())
            .kernel()
            .unwrap();
        std::fs::write(dir.join("vmlinux"), b"kernei").unwrap();

        let err = Assets::open(&dir)
            .unwrap()
            .with_stamp_file(stamps.clone())
            .kernel()
            .unwrap_err()
            .to_string();

        assert!(stamps.is_file());
        assert!(err.contains("is corrupt: sha256"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn same_size_corruption_is_detected_by_digest() {
        let dir = fake_assets(b"kernel");
        std::fs::write(dir.join("vmlinux"), b"kernei").unwrap();

        let err = Assets::open(&dir)
            .unwrap()
            .kernel()
            .unwrap_err()
            .to_string();

        assert!(err.contains("is corrupt: sha256"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
