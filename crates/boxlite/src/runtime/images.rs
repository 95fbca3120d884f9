//! The runtime's image operations: pull (fetch, verify, build the base), list, remove,
//! prune, and registry logins.
//!
//! A prune never runs while a pull is between fetching blobs and recording them: pulls
//! hold `images/locks/gc` shared, a prune holds it exclusively.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::Boxlite;
use crate::config::{AuthStore, registry_config};
use crate::images::reference::Reference;
use crate::images::registry::{self, Credential, Progress, RegistryConfig};
use crate::images::{BUILTIN_NAMESPACE, Image, ImageError, ImageInfo, PruneReport};
use crate::model::ImageRecord;
use crate::util::blocking;
use crate::util::lock::{FileLock, LockMode};

/// What `remove_image` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RemovedImage {
    /// References removed.
    pub untagged: Vec<String>,
    /// What was freed once nothing used the image any more.
    pub pruned: PruneReport,
}

impl Boxlite {
    /// The settings file: `--config` (which must exist) or `BOXLITE_HOME/config.toml`
    /// (optional).
    pub fn config_path(&self) -> (PathBuf, bool) {
        self.ctx.config_file.clone()
    }

    /// Saved registry credentials (`boxlite login`).
    pub fn auth_store(&self) -> AuthStore {
        AuthStore::new(self.home().join("auth.json"))
    }

    /// Settings and credentials for pulls.
    pub fn registry_config(&self) -> Result<RegistryConfig, crate::Error> {
        let (path, required) = self.config_path();
        Ok(registry_config(&path, required, &self.auth_store())?)
    }

    /// Save credentials for a registry (normalized like a reference's registry part:
    /// `docker.io` for Docker Hub).
    pub fn login(&self, registry: &str, cred: Credential) -> Result<String, crate::Error> {
        let host = normalize_registry(registry)?;
        self.auth_store().save(&host, cred)?;
        Ok(host)
    }

    /// Forget a registry's saved credentials; false if there were none.
    pub fn logout(&self, registry: &str) -> Result<bool, crate::Error> {
        let host = normalize_registry(registry)?;
        Ok(self.auth_store().remove(&host)?)
    }

    fn gc_lock_path(&self) -> PathBuf {
        self.images.locks_dir().join("gc")
    }

    async fn gc_lock(&self, mode: LockMode) -> Result<FileLock, crate::Error> {
        let path = self.gc_lock_path();
        let _ = std::fs::create_dir_all(self.images.locks_dir());
        FileLock::acquire(&path, mode)
            .await
            .map_err(|source| crate::Error::Io {
                context: format!("locking {}", path.display()),
                source,
            })
    }

    /// Pull `reference` from its registry into the store and build its root filesystem,
    /// reporting progress. A built-in reference (`boxlite/...`) is imported from the
    /// assets instead. An image already pulled is checked against the registry again
    /// (its tag may have moved); blobs already here are not fetched twice.
    pub async fn pull(
        &self,
        reference: &str,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Image, crate::Error> {
        self.ctx.check_open()?;
        let r = Reference::parse(reference)?;
        let canonical = r.canonical();
        if canonical.starts_with(BUILTIN_NAMESPACE) {
            return match self.local_image(&canonical).await? {
                Some(img) => Ok(img),
                None => Err(ImageError::NotInStore {
                    reference: canonical,
                }
                .into()),
            };
        }
        let cfg = self.registry_config()?;
        let _gc = self.gc_lock(LockMode::Shared).await?;
        let rec = registry::pull(&self.images.blobs(), &r, &cfg, progress).await?;
        self.install(rec, progress).await
    }

    /// Record an image whose blobs are in the store, build its base, and point its
    /// reference at it.
    async fn install(
        &self,
        rec: ImageRecord,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Image, crate::Error> {
        let store = &self.images;
        {
            let (store, rec) = (store.clone(), rec.clone());
            blocking::run(move || store.save_record(&rec)).await?;
        }
        progress(Progress::Building {
            layers: rec.layers.len(),
        });
        let t = Instant::now();
        let (base, report) = crate::builder::ensure_base(&self.ctx, store, &rec).await?;
        progress(Progress::Built {
            ms: u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX),
            cached: report.is_none(),
            build: report,
        });
        {
            let (store, r, d) = (
                store.clone(),
                rec.reference.clone(),
                rec.manifest_digest.clone(),
            );
            blocking::run(move || store.tag(&r, &d)).await?;
        }
        Ok(Image {
            reference: rec.reference,
            digest: rec.manifest_digest,
            base,
            config: rec.config,
        })
    }

    /// Import images from an OCI image layout directory, an OCI archive or a `docker
    /// save` archive (gzip-compressed or not), and build their bases. `tag` names the
    /// image when the input does not, or renames it; it needs an input with one image.
    pub async fn load(
        &self,
        input: &Path,
        tag: Option<&str>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Vec<Image>, crate::Error> {
        self.ctx.check_open()?;
        let _gc = self.gc_lock(LockMode::Shared).await?;
        let blobs = self.images.blobs();
        let (input, tag) = (input.to_path_buf(), tag.map(str::to_string));
        let records =
            blocking::run(move || crate::images::load::load(&blobs, &input, tag.as_deref()))
                .await?;
        let mut out = Vec::new();
        for rec in records {
            out.push(self.install(rec, progress).await?);
        }
        Ok(out)
    }

    /// A local image (a built-in one is imported on first use, which copies and hashes
    /// it), or `None`.
    pub async fn local_image(&self, reference: &str) -> Result<Option<Image>, crate::Error> {
        let assets = self.ctx.assets()?;
        let (store, reference) = (self.images.clone(), reference.to_string());
        Ok(blocking::run(move || store.resolve_local(&reference, &assets)).await?)
    }

    /// A local image, pulled first if the store does not have it (as `docker run` does).
    pub async fn image(&self, reference: &str) -> Result<Image, crate::Error> {
        match self.local_image(reference).await? {
            Some(img) => Ok(img),
            None => self.pull(reference, &|_| {}).await,
        }
    }

    /// Every reference in the store.
    pub async fn images(&self) -> Vec<ImageInfo> {
        let store = self.images.clone();
        blocking::run(move || store.list()).await
    }

    /// Manifest digests the boxes are using.
    async fn digests_in_use(&self) -> Result<HashSet<String>, crate::Error> {
        Ok(self
            .ctx
            .home
            .db(|db| db.list())
            .await?
            .into_iter()
            .map(|r| r.config.image_digest)
            .filter(|d| !d.is_empty())
            .collect())
    }

    /// Remove an image by reference or digest (prefix). Refused while a box uses it
    /// unless `force`; a forced removal only drops the reference, and the files go once
    /// the last box using them is removed and the store is pruned.
    pub async fn remove_image(&self, key: &str, force: bool) -> Result<RemovedImage, crate::Error> {
        let store = &self.images;
        let hits = {
            let (store, key) = (store.clone(), key.to_string());
            blocking::run(move || store.find(&key)).await?
        };
        let digest = hits[0].digest.clone();
        let users: Vec<String> = self
            .ctx
            .home
            .db(|db| db.list())
            .await?
            .into_iter()
            .filter(|r| r.config.image_digest == digest)
            .map(|r| r.name.unwrap_or_else(|| r.id[..12].to_string()))
            .collect();
        if !users.is_empty() && !force {
            return Err(ImageError::InUse {
                reference: hits[0].reference.clone(),
                boxes: format!(
                    "{} box{} ({})",
                    users.len(),
                    if users.len() == 1 { "" } else { "es" },
                    users.join(", ")
                ),
            }
            .into());
        }
        let mut out = RemovedImage::default();
        for h in &hits {
            if store.untag(&h.reference)? {
                out.untagged.push(h.reference.clone());
            }
        }
        out.pruned = self.prune_images().await?;
        Ok(out)
    }

    /// Remove every base, record and blob that no reference and no box needs.
    pub async fn prune_images(&self) -> Result<PruneReport, crate::Error> {
        let _gc = self.gc_lock(LockMode::Exclusive).await?;
        let in_use = self.digests_in_use().await?;
        let store = self.images.clone();
        let build = crate::litebox::snapshot::current_build(&self.ctx)
            .await
            .ok();
        let home = self.ctx.home.clone();
        blocking::run(move || {
            let mut report = store.prune(&in_use)?;
            // Builds killed halfway: no pull runs during a prune, so every unlocked one
            // is abandoned.
            crate::builder::sweep(&store);
            // Templates go with their images (and when this host cannot load them).
            let kept: HashSet<String> = store.list().into_iter().map(|i| i.digest).collect();
            if let Some(build) = build {
                for t in crate::litebox::template::prune_blocking(&home, &build, |d| {
                    kept.contains(d) || in_use.contains(d)
                }) {
                    report.bytes += t.size_bytes;
                    report.templates.push(t.key);
                }
            }
            Ok::<_, crate::Error>(report)
        })
        .await
    }

    /// The warm-start templates of this home ([`crate::litebox::template`]), oldest first.
    pub async fn templates(&self) -> Vec<crate::litebox::template::TemplateInfo> {
        let home = self.ctx.home.clone();
        blocking::run(move || {
            crate::litebox::template::list_blocking(&home)
                .into_iter()
                .map(|(_, t)| t)
                .collect()
        })
        .await
    }
}

/// A registry host as the store keys credentials: `docker.io` for Docker Hub's aliases.
fn normalize_registry(registry: &str) -> Result<String, crate::Error> {
    let probe = format!("{}/x", registry.trim_end_matches('/'));
    let r = Reference::parse(&probe).map_err(|_| ImageError::InvalidReference {
        reference: registry.into(),
        reason: "not a registry host (for example docker.io, ghcr.io or 127.0.0.1:5000)".into(),
    })?;
    if !registry.contains('.') && !registry.contains(':') && registry != "localhost" {
        return Err(ImageError::InvalidReference {
            reference: registry.into(),
            reason: "a registry host has a dot or a port (for example docker.io or 127.0.0.1:5000)"
                .into(),
        }
        .into());
    }
    Ok(r.registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts_normalize_for_credentials() {
        assert_eq!(normalize_registry("docker.io").unwrap(), "docker.io");
        assert_eq!(normalize_registry("index.docker.io").unwrap(), "docker.io");
        assert_eq!(
            normalize_registry("127.0.0.1:5000").unwrap(),
            "127.0.0.1:5000"
        );
        assert_eq!(normalize_registry("ghcr.io/").unwrap(), "ghcr.io");
        for bad in ["", "nohost", "a b.io", "h.io:port"] {
            assert!(normalize_registry(bad).is_err(), "{bad}");
        }
    }
}
