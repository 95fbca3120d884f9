//! The local image store: content-addressed blobs, a record per image, a cached ext4
//! base per image, and an index from reference to image digest.
//!
//! Images arrive through a registry pull ([`registry::pull`] then [`build`]) or, for the
//! offline images shipped with the assets (`boxlite/...`), through the built-in source.
//!
//! ```text
//! images/
//!   blobs/sha256/<hex>          manifests, configs and layers, verified on write and use
//!   records/<hex>.json          what the store knows of the image with manifest <hex>
//!   bases/<hex>.ext4            its root filesystem, never modified after it is built
//!   refs/<escaped reference>    the manifest digest a reference points at
//!   locks/<hex>                 one build of an image at a time
//!   tmp/img-<random>/           a build in progress
//! ```
//!
//! A reference is written last, once its image's base exists, so a reference always
//! names a usable image.

use std::path::{Path, PathBuf};

pub mod blobs;
pub(crate) mod load;
pub mod reference;
pub mod registry;

use crate::assets::{AssetError, Assets};
use crate::model::{ImageRecord, RunConfig};
use crate::util::fsutil::{copy_sparse_hashed, write_atomic};

/// PATH in a box when the image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The namespace reserved for offline built-in images.
pub const BUILTIN_NAMESPACE: &str = "boxlite/";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {reference:?} not found; the built-in images are: {builtins}")]
    UnknownBuiltin { reference: String, builtins: String },
    #[error(
        "image {reference:?} is not in the local store, and pulling from registries is not available in this build; the built-in images are: {builtins}"
    )]
    NotLocal { reference: String, builtins: String },
    #[error("importing image {reference:?}")]
    Import {
        reference: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image {reference:?}: digest of {path} is {actual}, expected {expected}")]
    DigestMismatch {
        reference: String,
        path: PathBuf,
        actual: String,
        expected: String,
    },
    #[error(transparent)]
    Assets(#[from] AssetError),
    #[error(transparent)]
    Blob(#[from] blobs::BlobError),
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },
    #[error(
        "authentication failed for registry {registry}: check the credentials (`boxlite login {registry}`)"
    )]
    AuthFailed { registry: String },
    #[error("image {reference} was not found in its registry ({detail}); check the name and tag")]
    NotFoundRemote { reference: String, detail: String },
    #[error("registry {registry} is unreachable: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("image {reference} has no linux/amd64 variant; it offers: {offered}")]
    NoPlatform { reference: String, offered: String },
    #[error("cannot load {input}: {reason}")]
    Load { input: PathBuf, reason: String },
    #[error("image {reference:?} is not in the local store (`boxlite images` lists what is)")]
    NotInStore { reference: String },
    #[error("image {reference} is used by {boxes}; remove them first, or force")]
    InUse { reference: String, boxes: String },
    #[error("image store: {what} {path}")]
    Store {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {reference}: unsupported media type {media_type}")]
    UnsupportedMediaType {
        reference: String,
        media_type: String,
    },
}

/// A resolved local image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The normalized reference, e.g. `boxlite/busybox:latest`.
    pub reference: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// The ext4 base image.
    pub base: PathBuf,
    /// What a box of this image runs, and as whom.
    pub config: RunConfig,
}

/// Normalize and validate a reference to the form the store keys it by (see
/// [`reference::Reference::canonical`]).
pub fn normalize(reference: &str) -> Result<String, ImageError> {
    Ok(reference::Reference::parse(reference)?.canonical())
}

/// Something that can put an image into the store.
pub trait ImageSource: std::fmt::Debug + Send + Sync {
    /// Import `reference` (normalized) into `store`; `Ok(None)` if this source does not
    /// have it.
    fn fetch(&self, reference: &str, store: &ImageStore) -> Result<Option<Image>, ImageError>;
}

/// The offline images shipped with the assets.
#[derive(Debug)]
pub struct BuiltinSource<'a> {
    pub assets: &'a Assets,
}

impl BuiltinSource<'_> {
    pub fn names(&self) -> String {
        let names: Vec<&str> = self
            .assets
            .builtin_images()
            .keys()
            .map(String::as_str)
            .collect();
        if names.is_empty() {
            "(none)".to_string()
        } else {
            names.join(", ")
        }
    }
}

impl ImageSource for BuiltinSource<'_> {
    fn fetch(&self, reference: &str, store: &ImageStore) -> Result<Option<Image>, ImageError> {
        let name = reference.strip_suffix(":latest").unwrap_or(reference);
        let Some(file) = self.assets.builtin_images().get(name) else {
            return Ok(None);
        };
        let src = self.assets.dir().join(file);
        let expected = self
            .assets
            .recorded_sha256(file)
            .ok_or_else(|| AssetError::Missing { path: src.clone() })?
            .to_string();
        if !src.is_file() {
            return Err(AssetError::Missing { path: src }.into());
        }
        // The manifest's settings, else a shell; PATH as Docker sets it unless given.
        let mut config = self
            .assets
            .builtin_config(name)
            .cloned()
            .unwrap_or_else(|| RunConfig {
                cmd: Some(vec!["/bin/sh".into()]),
                ..RunConfig::default()
            });
        if !config.env.iter().any(|e| e.starts_with("PATH=")) {
            config.env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        store
            .import_base(reference, &src, &expected, config)
            .map(Some)
    }
}

/// The store under `BOXLITE_HOME/images`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

fn escape_ref(reference: &str) -> String {
    reference
        .bytes()
        .map(|b| match b {
            b'/' => "%2F".to_string(),
            b':' => "%3A".to_string(),
            b'@' => "%40".to_string(),
            b'%' => "%25".to_string(),
            _ => (b as char).to_string(),
        })
        .collect()
}

fn unescape_ref(name: &str) -> String {
    name.replace("%2F", "/")
        .replace("%3A", ":")
        .replace("%40", "@")
        .replace("%25", "%")
}

/// One reference in the store, as `boxlite images` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageInfo {
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
    /// Bytes of the ext4 base on disk (it is sparse), or of the layers if not built.
    pub size: u64,
    /// When the image was created, as its config says (RFC 3339), if it says.
    pub created: Option<String>,
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    pub bases: usize,
    pub records: usize,
    pub blobs: usize,
    /// Warm-start templates removed (of images no longer kept, or that this host can no
    /// longer load), by key.
    #[serde(default)]
    pub templates: Vec<String>,
    pub bytes: u64,
}

fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

impl ImageStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ImageStore { dir: dir.into() }
    }

    fn bases(&self) -> PathBuf {
        self.dir.join("bases")
    }

    fn refs(&self) -> PathBuf {
        self.dir.join("refs")
    }

    fn records(&self) -> PathBuf {
        self.dir.join("records")
    }

    pub(crate) fn locks_dir(&self) -> PathBuf {
        self.dir.join("locks")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// The content-addressed blobs.
    pub fn blobs(&self) -> blobs::BlobStore {
        blobs::BlobStore::new(self.dir.join("blobs"))
    }

    pub fn base_path(&self, digest_hex: &str) -> PathBuf {
        self.bases().join(format!("{digest_hex}.ext4"))
    }

    fn store_err(what: &str, path: &Path, source: std::io::Error) -> ImageError {
        ImageError::Store {
            what: what.into(),
            path: path.to_path_buf(),
            source,
        }
    }

    /// The record of the image with manifest `digest`.
    pub fn record(&self, digest: &str) -> Option<ImageRecord> {
        let hex = blobs::digest_hex(digest).ok()?;
        let data = std::fs::read(self.records().join(format!("{hex}.json"))).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Save a record (atomically; the same image pulled twice writes the same record).
    pub fn save_record(&self, rec: &ImageRecord) -> Result<(), ImageError> {
        let hex = blobs::digest_hex(&rec.manifest_digest)?;
        let path = self.records().join(format!("{hex}.json"));
        std::fs::create_dir_all(self.records())
            .and_then(|()| {
                write_atomic(
                    &path,
                    &serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?,
                )
            })
            .map_err(|e| Self::store_err("writing", &path, e))
    }

    /// Point `reference` at the image with manifest `digest`.
    pub fn tag(&self, reference: &str, digest: &str) -> Result<(), ImageError> {
        let path = self.refs().join(escape_ref(reference));
        std::fs::create_dir_all(self.refs())
            .and_then(|()| write_atomic(&path, format!("{digest}\n").as_bytes()))
            .map_err(|e| Self::store_err("writing", &path, e))
    }

    fn ref_digest(&self, reference: &str) -> Option<String> {
        let digest = std::fs::read_to_string(self.refs().join(escape_ref(reference))).ok()?;
        let digest = digest.trim().to_string();
        blobs::digest_hex(&digest).ok()?;
        Some(digest)
    }

    /// A reference already in the store, with its base built.
    pub fn lookup(&self, reference: &str) -> Option<Image> {
        let digest = self.ref_digest(reference)?;
        let hex = blobs::digest_hex(&digest).ok()?;
        let base = self.base_path(hex);
        let config = self.record(&digest).map(|r| r.config).unwrap_or_default();
        base.is_file().then(|| Image {
            reference: reference.to_string(),
            digest: digest.clone(),
            base,
            config,
        })
    }

    /// Every reference, sorted.
    pub fn list(&self) -> Vec<ImageInfo> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.refs())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let reference = unescape_ref(&name);
            let Some(digest) = self.ref_digest(&reference) else {
                continue;
            };
            let rec = self.record(&digest);
            let hex = blobs::digest_hex(&digest).unwrap_or_default();
            let base = self.base_path(hex);
            let size = if base.is_file() {
                disk_usage(&base)
            } else {
                rec.as_ref().map_or(0, |r| r.size)
            };
            out.push(ImageInfo {
                reference,
                digest,
                size,
                created: rec.and_then(|r| r.created),
            });
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        out
    }

    /// Resolve what a user typed to references in the store: a reference (normalized),
    /// or a digest or a unique digest prefix of at least 4 hex digits (all references
    /// of that image).
    pub fn find(&self, key: &str) -> Result<Vec<ImageInfo>, ImageError> {
        let all = self.list();
        if let Ok(n) = normalize(key)
            && let Some(i) = all.iter().find(|i| i.reference == n)
        {
            return Ok(vec![i.clone()]);
        }
        let hex = key.strip_prefix("sha256:").unwrap_or(key);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<ImageInfo> = all
                .iter()
                .filter(|i| i.digest["sha256:".len()..].starts_with(hex))
                .cloned()
                .collect();
            let digests: std::collections::BTreeSet<&str> =
                hits.iter().map(|i| i.digest.as_str()).collect();
            if digests.len() == 1 {
                return Ok(hits);
            }
            if digests.len() > 1 {
                return Err(ImageError::InvalidReference {
                    reference: key.into(),
                    reason: format!(
                        "the digest prefix matches {} images; give more of it",
                        digests.len()
                    ),
                });
            }
        }
        Err(ImageError::NotInStore {
            reference: key.to_string(),
        })
    }

    /// Remove a reference. The image's files stay until a prune finds nothing using
    /// them.
    pub fn untag(&self, reference: &str) -> Result<bool, ImageError> {
        let path = self.refs().join(escape_ref(reference));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Self::store_err("removing", &path, e)),
        }
    }

    /// Remove bases, records and blobs that no reference and no box (`in_use`: manifest
    /// digests) needs, and downloads a killed pull left. Images being built hold their
    /// lock and are skipped. The caller holds the gc lock, so no pull is running.
    pub fn prune(
        &self,
        in_use: &std::collections::HashSet<String>,
    ) -> Result<PruneReport, ImageError> {
        use std::collections::HashSet;
        let mut keep: HashSet<String> = in_use
            .iter()
            .filter_map(|d| blobs::digest_hex(d).ok().map(str::to_string))
            .collect();
        for i in self.list() {
            if let Ok(h) = blobs::digest_hex(&i.digest) {
                keep.insert(h.to_string());
            }
        }
        let mut report = PruneReport::default();
        let building = |hex: &str| {
            matches!(
                crate::util::lock::FileLock::try_acquire(
                    &self.locks_dir().join(hex),
                    crate::util::lock::LockMode::Exclusive
                ),
                Ok(None)
            )
        };
        for e in std::fs::read_dir(self.bases())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(hex) = name.strip_suffix(".ext4") else {
                continue;
            };
            if keep.contains(hex) || building(hex) {
                continue;
            }
            report.bytes += disk_usage(&e.path());
            std::fs::remove_file(e.path())
                .map_err(|x| Self::store_err("removing", &e.path(), x))?;
            report.bases += 1;
        }
        // Blobs the kept records name; records of unkept images go.
        let mut blobs_kept: HashSet<String> = HashSet::new();
        for e in std::fs::read_dir(self.records())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            if keep.contains(hex) || building(hex) {
                if let Some(r) = self.record(&format!("sha256:{hex}")) {
                    blobs_kept.insert(r.manifest_digest.clone());
                    blobs_kept.insert(r.config_digest.clone());
                    if let Some(i) = &r.index_digest {
                        blobs_kept.insert(i.clone());
                    }
                    blobs_kept.extend(r.layers.iter().map(|l| l.digest.clone()));
                }
                continue;
            }
            std::fs::remove_file(e.path())
                .map_err(|x| Self::store_err("removing", &e.path(), x))?;
            report.records += 1;
        }
        let blobs = self.blobs();
        for d in blobs.list() {
            if blobs_kept.contains(&d) {
                continue;
            }
            if let Ok(p) = blobs.path(&d) {
                report.bytes += disk_usage(&p);
            }
            blobs.remove(&d)?;
            report.blobs += 1;
        }
        // Half-written downloads of killed pulls: no pull runs during a prune (the caller
        // holds the gc lock), so every one of them is abandoned.
        for e in std::fs::read_dir(self.dir.join("blobs/tmp"))
            .into_iter()
            .flatten()
            .flatten()
        {
            report.bytes += disk_usage(&e.path());
            let _ = std::fs::remove_file(e.path());
        }
        Ok(report)
    }

    /// Copy an ext4 base into the store, verifying its digest on the way, and record it
    /// as an image without layers. Concurrent imports of the same image are safe: each
    /// writes a private temporary file and the rename is atomic.
    pub fn import_base(
        &self,
        reference: &str,
        src: &Path,
        expected_hex: &str,
        config: RunConfig,
    ) -> Result<Image, ImageError> {
        let io_err = |source| ImageError::Import {
            reference: reference.to_string(),
            source,
        };
        std::fs::create_dir_all(self.bases()).map_err(io_err)?;
        let base = self.base_path(expected_hex);
        if !base.is_file() {
            let tmp = self.bases().join(format!(
                ".{expected_hex}.{}.{}.tmp",
                std::process::id(),
                rand::random::<u32>()
            ));
            let actual = copy_sparse_hashed(src, &tmp).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                io_err(e)
            })?;
            if actual != expected_hex {
                let _ = std::fs::remove_file(&tmp);
                return Err(ImageError::DigestMismatch {
                    reference: reference.to_string(),
                    path: src.to_path_buf(),
                    actual,
                    expected: expected_hex.to_string(),
                });
            }
            std::fs::rename(&tmp, &base).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                io_err(e)
            })?;
        }
        let digest = format!("sha256:{expected_hex}");
        let created = std::fs::metadata(src)
            .and_then(|m| m.modified())
            .ok()
            .map(humantime_rfc3339);
        self.save_record(&ImageRecord {
            reference: reference.to_string(),
            manifest_digest: digest.clone(),
            index_digest: None,
            config_digest: String::new(),
            layers: Vec::new(),
            config: config.clone(),
            size: disk_usage(&base),
            created,
        })?;
        self.tag(reference, &digest)?;
        Ok(Image {
            reference: reference.to_string(),
            digest,
            base,
            config,
        })
    }

    /// Resolve a reference to a local image, importing a built-in one if needed.
    /// `Ok(None)` when it is neither local nor built-in (a registry may have it).
    pub fn resolve_local(
        &self,
        reference: &str,
        assets: &Assets,
    ) -> Result<Option<Image>, ImageError> {
        let normalized = normalize(reference)?;
        if let Some(img) = self.lookup(&normalized) {
            return Ok(Some(img));
        }
        let builtin = BuiltinSource { assets };
        if let Some(img) = builtin.fetch(&normalized, self)? {
            return Ok(Some(img));
        }
        if normalized.starts_with(BUILTIN_NAMESPACE) {
            return Err(ImageError::UnknownBuiltin {
                reference: reference.to_string(),
                builtins: builtin.names(),
            });
        }
        Ok(None)
    }
}

/// RFC 3339 (UTC, seconds) for a file time.
fn humantime_rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    crate::model::time::rfc3339(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalize_like_docker() {
        assert_eq!(
            normalize("boxlite/busybox").unwrap(),
            "boxlite/busybox:latest"
        );
        assert_eq!(
            normalize("python:3.12-slim").unwrap(),
            "docker.io/library/python:3.12-slim"
        );
        assert_eq!(
            normalize("localhost:5000/app").unwrap(),
            "localhost:5000/app:latest"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize(&format!("app@{d}")).unwrap(),
            format!("docker.io/library/app@{d}")
        );
    }

    #[test]
    fn escaped_references_round_trip() {
        for r in [
            "docker.io/library/python:3.12",
            "h:5000/a/b@sha256:00",
            "odd%name",
        ] {
            assert_eq!(unescape_ref(&escape_ref(r)), r);
            assert!(!escape_ref(r).contains('/'));
        }
    }

    #[test]
    fn file_times_format_as_rfc3339() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(humantime_rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(
            humantime_rfc3339(std::time::UNIX_EPOCH),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn malformed_references_are_rejected_with_the_rule() {
        for bad in ["", "UPPER", "a//b", "app:", "app@md5:00", "app:t@g!"] {
            let err = normalize(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid image reference {bad:?}")),
                "{err}"
            );
        }
    }
}
