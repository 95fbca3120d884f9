//! Warm starts: the first box of an image boots and, the moment its agent is ready,
//! leaves a template (its memory, device state and disk, saved like a snapshot); every
//! later box of that image, with the same CPUs, memory, disk size, network devices,
//! engine, kernel and initramfs, forks the template instead of booting.
//!
//! A template lives in `templates/<key>/` of the home: `state`, `ram`, `meta.json` (as a
//! saved state, [`super::snapshot`]), `disk.qcow2` (the disk at that moment, an overlay
//! on the image's base) and `template.json` ([`TemplateInfo`]). The key hashes
//! everything the saved machine depends on. A box that forks one gets a copy of its disk
//! and maps its RAM file privately (copy on write, never written back). A template that
//! fails to start a box is removed, and the box boots instead. Boxes with volumes, boxes
//! created with `warm_start` off, and every box when `BOXLITE_WARM_START=0` boot cold
//! and leave no template.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::LiteBox;
use super::snapshot::{SavedMeta, saved_state_complete};
use crate::context::Home;
use crate::layout::SocketPaths;
use crate::model::{BoxRow, StartKind};
use crate::util::blocking;
use crate::util::lock::{FileLock, LockMode};

/// `template.json`: what a template was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateInfo {
    pub key: String,
    pub image: String,
    pub image_digest: String,
    pub cpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub network: bool,
    /// Unix seconds.
    pub created_at: u64,
    /// The box whose first boot left it.
    pub source_box: String,
    /// Bytes on disk (RAM, device state and disk; filled in when listed).
    #[serde(default)]
    pub size_bytes: u64,
}

const INFO: &str = "template.json";
/// The disk, in a template and in a named snapshot.
pub(crate) const DISK: &str = "disk.qcow2";
/// A box's untouched disk while it tries a warm start, put back if the start fails.
const FRESH_DISK: &str = "disk.fresh.qcow2";

/// Whether warm starts are allowed in this process (`BOXLITE_WARM_START=0` turns them
/// off for every box).
fn allowed_here() -> bool {
    std::env::var("BOXLITE_WARM_START").map_or(true, |v| v != "0")
}

fn eligible(row: &BoxRow) -> bool {
    allowed_here() && row.config.warm_start && row.config.volumes.is_empty()
}

/// The template key of a box: a hash of everything its saved machine depends on.
fn key_of(row: &BoxRow, build: &(String, String, String)) -> String {
    let c = &row.config;
    let text = serde_json::json!({
        "format": 1,
        "image_digest": c.image_digest,
        "cpus": c.cpus,
        "memory_mib": c.memory_mib,
        "disk_bytes": c.disk_bytes,
        "network": c.network.enabled(),
        "engine": build.0,
        "kernel": build.1,
        "initrd": build.2,
    })
    .to_string();
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..12])
}

/// Every template of the home, complete ones only.
pub(crate) fn list_blocking(home: &Home) -> Vec<(PathBuf, TemplateInfo)> {
    let Ok(entries) = std::fs::read_dir(home.layout.templates_dir()) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, TemplateInfo)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && saved_state_complete(p))
        .filter_map(|p| {
            let mut info: TemplateInfo =
                serde_json::from_slice(&std::fs::read(p.join(INFO)).ok()?).ok()?;
            info.size_bytes = dir_bytes(&p);
            Some((p, info))
        })
        .collect();
    out.sort_by_key(|t| t.1.created_at);
    out
}

/// Bytes allocated on disk by the files of `dir`.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

/// Remove a template (its `meta.json` first, so a half-removed one is never used).
pub(crate) fn discard_blocking(dir: &Path) {
    let _ = crate::util::fsutil::remove_durably(&dir.join(super::snapshot::META));
    let _ = std::fs::remove_dir_all(dir);
}

pub(crate) async fn discard(dir: &Path) {
    let d = dir.to_path_buf();
    blocking::run(move || discard_blocking(&d)).await;
}

/// Remove the templates of the images whose digests `keep` does not accept, and every
/// template this host can no longer load. Returns what was removed.
pub(crate) fn prune_blocking(
    home: &Home,
    current: &(String, String, String),
    keep: impl Fn(&str) -> bool,
) -> Vec<TemplateInfo> {
    let mut removed = Vec::new();
    for (dir, info) in list_blocking(home) {
        let stale = super::snapshot::read_meta("template", &dir).is_ok_and(|m| {
            m.engine != current.0 || m.kernel_sha256 != current.1 || m.initrd_sha256 != current.2
        });
        if stale || !keep(&info.image_digest) {
            discard_blocking(&dir);
            removed.push(info);
        }
    }
    removed
}

/// A template being taken by a box's first boot: its lock is held until it is dropped.
pub(crate) struct Take {
    dir: PathBuf,
    info: TemplateInfo,
    meta: SavedMeta,
    box_dir: PathBuf,
    _lock: FileLock,
}

impl LiteBox {
    /// The template this box may fork at its first start, with the box's disk replaced
    /// by a copy of the template's (its own put aside, [`LiteBox::unfork_disk`]). None
    /// when there is none, it does not fit, or its disk cannot be copied.
    pub(super) async fn warm_template(&self, row: &BoxRow) -> Option<super::snapshot::Saved> {
        if !eligible(row) {
            return None;
        }
        let build = super::snapshot::current_build(&self.ctx).await.ok()?;
        let key = key_of(row, &build);
        let dir = self.home().layout.templates_dir().join(&key);
        let (id, d) = (self.id.clone(), dir.clone());
        let meta = blocking::run(move || super::snapshot::read_meta(&id, &d))
            .await
            .ok()?;
        if super::snapshot::check_compatible(&self.ctx, &self.id, &meta)
            .await
            .is_err()
        {
            return None;
        }
        let box_dir = self.home().box_paths(&self.id).dir;
        let src = dir.join(DISK);
        let copied = blocking::run(move || {
            std::fs::rename(box_dir.join(DISK), box_dir.join(FRESH_DISK))?;
            let r = crate::util::fsutil::copy_sparse(&src, &box_dir.join(DISK));
            if r.is_err() {
                let _ = std::fs::remove_file(box_dir.join(DISK));
                std::fs::rename(box_dir.join(FRESH_DISK), box_dir.join(DISK))?;
            }
            r
        })
        .await;
        if let Err(e) = copied {
            tracing::warn!(box_id = %self.id, template = %key, error = %e, "copying the template's disk; booting instead");
            return None;
        }
        Some(super::snapshot::Saved {
            meta,
            dir,
            own: false,
            kind: StartKind::Template { key },
        })
    }

    /// Put back the disk a failed warm start set aside.
    pub(super) async fn unfork_disk(&self) -> Result<(), crate::Error> {
        let dir = self.home().box_paths(&self.id).dir;
        blocking::run(move || {
            if dir.join(FRESH_DISK).exists() {
                std::fs::rename(dir.join(FRESH_DISK), dir.join(DISK)).map_err(|source| {
                    crate::Error::Io {
                        context: format!("restoring {}", dir.join(DISK).display()),
                        source,
                    }
                })?;
            }
            Ok(())
        })
        .await
    }

    /// Drop the disk a successful warm start set aside.
    pub(super) async fn forget_fresh_disk(&self) {
        let dir = self.home().box_paths(&self.id).dir;
        blocking::run(move || {
            let _ = std::fs::remove_file(dir.join(FRESH_DISK));
        })
        .await;
    }

    /// The template this first cold boot should leave: none when the box may not have
    /// one, one exists, or another box is taking it right now.
    pub(super) async fn template_to_take(&self, row: &BoxRow, first_boot: bool) -> Option<Take> {
        if !first_boot || !eligible(row) {
            return None;
        }
        let build = super::snapshot::current_build(&self.ctx).await.ok()?;
        let key = key_of(row, &build);
        let root = self.home().layout.templates_dir();
        let dir = root.join(&key);
        let lock_path = root.join(format!("{key}.lock"));
        let d = dir.clone();
        let lock = blocking::run(move || {
            std::fs::create_dir_all(&root).ok()?;
            let lock = FileLock::try_acquire(&lock_path, LockMode::Exclusive).ok()??;
            // Taken by another box meanwhile, or left whole by an earlier one.
            (!saved_state_complete(&d)).then_some(lock)
        })
        .await?;
        let mut meta = self.saved_meta(row).await.ok()?;
        meta.ram_file = true;
        let c = &row.config;
        Some(Take {
            dir,
            info: TemplateInfo {
                key,
                image: c.image.clone(),
                image_digest: c.image_digest.clone(),
                cpus: c.cpus,
                memory_mib: c.memory_mib,
                disk_bytes: c.disk_bytes,
                network: c.network.enabled(),
                created_at: super::now_secs(),
                source_box: self.id.clone(),
                size_bytes: 0,
            },
            meta,
            box_dir: self.home().box_paths(&self.id).dir,
            _lock: lock,
        })
    }
}

impl Take {
    /// The hook [`crate::vm::launch`] calls once the agent is ready: save the template,
    /// then let the box go on, whatever happened.
    pub(crate) fn hook(&self) -> crate::vm::TemplateHook {
        let (dir, info, meta, box_dir) = (
            self.dir.clone(),
            self.info.clone(),
            self.meta.clone(),
            self.box_dir.clone(),
        );
        crate::vm::TemplateHook(std::sync::Arc::new(move |client, machine| {
            let (dir, info, mut meta, box_dir) =
                (dir.clone(), info.clone(), meta.clone(), box_dir.clone());
            Box::pin(async move {
                meta.machine = machine;
                let id = info.source_box.clone();
                let ram = SocketPaths::for_box(&id).ram();
                let disk = box_dir.join(DISK);
                let json = serde_json::to_vec_pretty(&info).unwrap_or_default();
                let extra: super::snapshot::Extra = Box::new(move |t: &Path| {
                    crate::util::fsutil::copy_sparse(&disk, &t.join(DISK))
                        .and_then(|_| crate::util::fsutil::write_atomic(&t.join(INFO), &json))
                        .map_err(|source| super::snapshot::SnapshotError::Io {
                            id: info.source_box.clone(),
                            context: "saving the template's disk".into(),
                            source,
                        })
                });
                let t0 = std::time::Instant::now();
                match super::snapshot::save_live(
                    &id,
                    &box_dir,
                    &client,
                    &ram,
                    &dir,
                    meta,
                    Some(extra),
                )
                .await
                {
                    Ok(m) => {
                        tracing::info!(box_id = %id, template = %dir.display(), ms = crate::util::ms_since(t0), ram_bytes = m.ram_bytes, "template saved")
                    }
                    Err(e) => {
                        tracing::warn!(box_id = %id, error = %crate::util::error_chain(&e), "saving the template")
                    }
                }
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_changes_with_what_the_machine_depends_on_and_nothing_else() {
        let build = ("qemu 7.2".to_string(), "k".to_string(), "i".to_string());
        let row = BoxRow {
            id: "a".into(),
            name: None,
            created_at: 1,
            config: crate::model::BoxConfig {
                image_digest: "sha256:1".into(),
                ..Default::default()
            },
            status: Default::default(),
        };
        let mut named = row.clone();
        named.id = "b".into();
        named.name = Some("other".into());
        named.config.run.env.push("A=1".into());
        let mut cpus = row.clone();
        cpus.config.cpus += 1;
        let mut image = row.clone();
        image.config.image_digest = "sha256:2".into();
        let engine = ("qemu 8".to_string(), "k".to_string(), "i".to_string());

        let k = key_of(&row, &build);

        assert_eq!(k.len(), 24);
        assert_eq!(key_of(&named, &build), k);
        assert_ne!(key_of(&cpus, &build), k);
        assert_ne!(key_of(&image, &build), k);
        assert_ne!(key_of(&row, &engine), k);
    }
}
