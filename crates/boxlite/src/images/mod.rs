//! The local image store: a cached ext4 base image per image digest, and an index from
//! reference to digest.
//!
//! Images arrive through an [`ImageSource`]. Today the only source is the built-in one,
//! which imports the offline images shipped with the assets (`boxlite/...`) on first use;
//! a registry source slots in beside it.
//!
//! ```text
//! images/
//!   bases/<sha256 hex>.ext4     one per image digest, never modified after import
//!   refs/<escaped reference>    the digest a reference points at
//! ```

use std::path::{Path, PathBuf};

pub mod blobs;
pub mod reference;
pub mod registry;

use crate::runtime::assets::{AssetError, Assets};
use crate::util::fsutil::{copy_sparse_hashed, write_atomic};

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
        store.import_base(reference, &src, &expected).map(Some)
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
            _ => (b as char).to_string(),
        })
        .collect()
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

    pub fn base_path(&self, digest_hex: &str) -> PathBuf {
        self.bases().join(format!("{digest_hex}.ext4"))
    }

    /// A reference already in the store.
    pub fn lookup(&self, reference: &str) -> Option<Image> {
        let digest = std::fs::read_to_string(self.refs().join(escape_ref(reference))).ok()?;
        let hex = digest.trim().strip_prefix("sha256:")?.to_string();
        let base = self.base_path(&hex);
        base.is_file().then(|| Image {
            reference: reference.to_string(),
            digest: format!("sha256:{hex}"),
            base,
        })
    }

    /// Copy an ext4 base into the store, verifying its digest on the way. Concurrent
    /// imports of the same image are safe: each writes a private temporary file and the
    /// rename is atomic.
    pub fn import_base(
        &self,
        reference: &str,
        src: &Path,
        expected_hex: &str,
    ) -> Result<Image, ImageError> {
        let io_err = |source| ImageError::Import {
            reference: reference.to_string(),
            source,
        };
        std::fs::create_dir_all(self.bases()).map_err(io_err)?;
        std::fs::create_dir_all(self.refs()).map_err(io_err)?;
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
        write_atomic(
            &self.refs().join(escape_ref(reference)),
            format!("sha256:{expected_hex}\n").as_bytes(),
        )
        .map_err(io_err)?;
        Ok(Image {
            reference: reference.to_string(),
            digest: format!("sha256:{expected_hex}"),
            base,
        })
    }

    /// Resolve a reference to a local image, importing it from a source if needed.
    pub fn resolve(&self, reference: &str, assets: &Assets) -> Result<Image, ImageError> {
        let normalized = normalize(reference)?;
        if let Some(img) = self.lookup(&normalized) {
            return Ok(img);
        }
        let builtin = BuiltinSource { assets };
        if let Some(img) = builtin.fetch(&normalized, self)? {
            return Ok(img);
        }
        if normalized.starts_with(BUILTIN_NAMESPACE) {
            return Err(ImageError::UnknownBuiltin {
                reference: reference.to_string(),
                builtins: builtin.names(),
            });
        }
        Err(ImageError::NotLocal {
            reference: reference.to_string(),
            builtins: builtin.names(),
        })
    }
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
