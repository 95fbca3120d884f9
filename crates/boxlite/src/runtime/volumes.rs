//! The volume side of the runtime API: planning a box's mounts, and managing volumes.

use std::path::PathBuf;

use serde::Serialize;

use super::Boxlite;
use crate::model::{VolumeKind, VolumeMount};
use crate::util::blocking;
use crate::volumes::{self, VolumeError, VolumeSource, VolumeSpec};

/// The most volumes one box can mount (each is a virtio-mmio device).
pub const MAX_VOLUMES: usize = 8;

/// A managed volume, as `volume ls` and `volume inspect` show it.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeInfo {
    pub name: String,
    pub kind: VolumeKind,
    pub path: PathBuf,
    /// Unix seconds (the directory's modification time when it was made).
    pub created_at: u64,
    /// Ids of the boxes that mount it.
    pub used_by: Vec<String>,
}

/// Which box mounts which volume: `((kind, name), box id)`.
type Users = Vec<((VolumeKind, String), String)>;

impl Boxlite {
    /// Validate a box's volume specs, all of them before anything is created, and turn
    /// them into mounts. Host paths must pass the gate.
    pub(crate) fn plan_volumes(
        &self,
        specs: &[VolumeSpec],
    ) -> Result<Vec<VolumeMount>, crate::Error> {
        let layout = self.ctx.layout();
        if specs.len() > MAX_VOLUMES {
            return Err(VolumeError::InvalidSpec {
                spec: format!("{} volumes", specs.len()),
                reason: format!("a box can mount at most {MAX_VOLUMES}"),
            }
            .into());
        }
        let mut out: Vec<VolumeMount> = Vec::new();
        for spec in specs {
            spec.validate_guest_path()
                .map_err(|reason| VolumeError::InvalidSpec {
                    spec: spec.guest_path.clone(),
                    reason,
                })?;
            let (kind, name) = match &spec.source {
                VolumeSource::Named(n) => {
                    volumes::validate_name(n)?;
                    (VolumeKind::Named, n.clone())
                }
                VolumeSource::Anonymous => (VolumeKind::Anonymous, super::random_id()),
                VolumeSource::HostPath(p) => {
                    let (kind, name, _) = volumes::gate(layout, p)?;
                    (kind, name)
                }
            };
            if out.iter().any(|m| {
                m.guest_path.trim_end_matches('/') == spec.guest_path.trim_end_matches('/')
            }) {
                return Err(VolumeError::InvalidSpec {
                    spec: spec.guest_path.clone(),
                    reason: "two volumes cannot be mounted at the same guest path".into(),
                }
                .into());
            }
            out.push(VolumeMount {
                kind,
                name,
                guest_path: spec.guest_path.clone(),
                read_only: spec.read_only,
            });
        }
        Ok(out)
    }

    /// Create a named volume. Creating one that exists returns it unchanged.
    pub async fn create_volume(&self, name: &str) -> Result<VolumeInfo, crate::Error> {
        volumes::validate_name(name)?;
        let dir = self.ctx.layout().named_volumes_dir().join(name);
        volumes::ensure_dir(&dir)?;
        self.volume(name).await
    }

    /// Every managed volume, named first, each with the boxes that use it.
    pub async fn volumes(&self) -> Result<Vec<VolumeInfo>, crate::Error> {
        let users = self.volume_users().await?;
        let mut out = Vec::new();
        for kind in [VolumeKind::Named, VolumeKind::Anonymous] {
            let root = self.ctx.layout().volume_root(kind);
            let mut names: Vec<String> = std::fs::read_dir(&root)
                .map_err(|source| VolumeError::Io {
                    path: root.clone(),
                    source,
                })?
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            names.sort();
            for name in names {
                out.push(info(&root, kind, name, &users));
            }
        }
        Ok(out)
    }

    /// One volume, by name (named) or id (anonymous).
    pub async fn volume(&self, name: &str) -> Result<VolumeInfo, crate::Error> {
        volumes::validate_name(name)?;
        let users = self.volume_users().await?;
        for kind in [VolumeKind::Named, VolumeKind::Anonymous] {
            let root = self.ctx.layout().volume_root(kind);
            if root.join(name).is_dir() {
                return Ok(info(&root, kind, name.to_string(), &users));
            }
        }
        Err(VolumeError::NotFound(name.to_string()).into())
    }

    /// Remove a volume and its contents. A volume some box mounts is refused unless
    /// `force`.
    pub async fn remove_volume(&self, name: &str, force: bool) -> Result<(), crate::Error> {
        let v = self.volume(name).await?;
        if !v.used_by.is_empty() && !force {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                boxes: v.used_by.join(", "),
            }
            .into());
        }
        let path = v.path.clone();
        blocking::run(move || std::fs::remove_dir_all(&path))
            .await
            .map_err(|source| VolumeError::Io {
                path: v.path.clone(),
                source,
            })?;
        tracing::info!(volume = name, "volume removed");
        Ok(())
    }

    /// (kind, name) -> ids of the boxes that mount it.
    async fn volume_users(&self) -> Result<Users, crate::Error> {
        Ok(self
            .ctx
            .home
            .db(|db| db.list())
            .await?
            .into_iter()
            .flat_map(|row| {
                row.config
                    .volumes
                    .iter()
                    .map(|m| ((m.kind, m.name.clone()), row.id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect())
    }
}

fn info(root: &std::path::Path, kind: VolumeKind, name: String, users: &Users) -> VolumeInfo {
    let path = root.join(&name);
    let created_at = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let used_by = users
        .iter()
        .filter(|((k, n), _)| *k == kind && *n == name)
        .map(|(_, id)| id.clone())
        .collect();
    VolumeInfo {
        name,
        kind,
        path,
        created_at,
        used_by,
    }
}
