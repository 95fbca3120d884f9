//! Managed volumes: directories boxlite creates for boxes and shares into them with
//! virtiofs, and the gate that keeps every other host path out.
//!
//! ```text
//! $BOXLITE_HOME/volumes/
//!   named/<name>        persistent; any box may mount it by name
//!   anonymous/<id>      belongs to one box; removed with it
//! ```
//!
//! A box can only ever be given a directory that is exactly one level below one of the
//! two managed roots, after canonicalization. The check runs in the library, at creation
//! and again at every start (a volume directory swapped for a symlink in between is
//! caught then), so no frontend can route around it.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout::Layout;
pub use crate::model::{VolumeKind, VolumeMount};

/// The longest guest mount point accepted.
pub const MAX_GUEST_PATH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "volume source {path} is not a boxlite volume: a box can only mount directories that boxlite manages, exactly one level below {named} or {anonymous}. Use a named volume (NAME:/guest/path), an anonymous one (/guest/path), or copy files in and out with `boxlite cp`"
    )]
    Unmanaged {
        path: PathBuf,
        named: PathBuf,
        anonymous: PathBuf,
    },
    #[error(
        "volume source {path} does not exist; managed volumes live one level below {named} or {anonymous}"
    )]
    Missing {
        path: PathBuf,
        named: PathBuf,
        anonymous: PathBuf,
    },
    #[error("volume source {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "volume source {path} is a symbolic link; only real managed directories can be mounted"
    )]
    Symlink { path: PathBuf },
    #[error("invalid volume spec {spec:?}: {reason}")]
    InvalidSpec { spec: String, reason: String },
    #[error(
        "invalid volume name {0:?}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("no volume named {0:?}")]
    NotFound(String),
    #[error("volume {name:?} is used by box {boxes}; remove the box first or force the removal")]
    InUse { name: String, boxes: String },
    #[error("volume {name:?} already exists")]
    Exists { name: String },
    #[error("volume {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a mount's directory comes from, as a caller says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VolumeSource {
    /// A named volume, created on first use.
    Named(String),
    /// A fresh volume for this box alone.
    Anonymous,
    /// A host directory. Accepted only if it is a managed volume directory.
    HostPath(PathBuf),
}

/// One mount a caller asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    pub source: VolumeSource,
    /// Absolute path inside the box.
    pub guest_path: String,
    #[serde(default)]
    pub read_only: bool,
}

impl VolumeSpec {
    pub fn named(name: impl Into<String>, guest_path: impl Into<String>) -> Self {
        VolumeSpec {
            source: VolumeSource::Named(name.into()),
            guest_path: guest_path.into(),
            read_only: false,
        }
    }

    pub fn anonymous(guest_path: impl Into<String>) -> Self {
        VolumeSpec {
            source: VolumeSource::Anonymous,
            guest_path: guest_path.into(),
            read_only: false,
        }
    }

    pub fn host_path(path: impl Into<PathBuf>, guest_path: impl Into<String>) -> Self {
        VolumeSpec {
            source: VolumeSource::HostPath(path.into()),
            guest_path: guest_path.into(),
            read_only: false,
        }
    }

    pub fn read_only(mut self, ro: bool) -> Self {
        self.read_only = ro;
        self
    }

    /// Parse the CLI form: `/guest/path` (anonymous), `NAME:/guest/path[:ro|:rw]`
    /// (named). A host path (`/host:/guest`) or a relative guest path is refused with a
    /// message that explains the supported forms.
    pub fn parse(spec: &str) -> Result<VolumeSpec, VolumeError> {
        let bad = |reason: &str| VolumeError::InvalidSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let forms =
            "use /guest/path for an anonymous volume or NAME:/guest/path[:ro] for a named one";
        let parts: Vec<&str> = spec.split(':').collect();
        let (source, guest, mode) = match parts.as_slice() {
            [guest] => (None, *guest, None),
            [a, b] if b.starts_with('/') => (Some(*a), *b, None),
            [guest, m] if matches!(*m, "ro" | "rw") => (None, *guest, Some(*m)),
            [a, b, m] => (Some(*a), *b, Some(*m)),
            _ => return Err(bad(forms)),
        };
        let read_only = match mode {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(m) => return Err(bad(&format!("unknown mode {m:?}; use ro or rw"))),
        };
        let source = match source {
            None => VolumeSource::Anonymous,
            Some(s) if s.starts_with('/') || s.starts_with('.') || s.starts_with('~') => {
                return Err(bad(&format!(
                    "host directories cannot be mounted ({s} is a host path); {forms}, and copy host files with `boxlite cp`"
                )));
            }
            Some(name) => VolumeSource::Named(name.to_string()),
        };
        let v = VolumeSpec {
            source,
            guest_path: guest.to_string(),
            read_only,
        };
        v.validate_guest_path().map_err(|reason| bad(&reason))?;
        Ok(v)
    }

    /// The guest path must be absolute, normal (no `.` or `..`), not `/` itself.
    pub fn validate_guest_path(&self) -> Result<(), String> {
        let g = &self.guest_path;
        if !g.starts_with('/') {
            return Err(format!("the guest path {g:?} must be absolute"));
        }
        if g.len() > MAX_GUEST_PATH || g.contains('\0') {
            return Err(format!(
                "the guest path must be at most {MAX_GUEST_PATH} bytes, without NUL"
            ));
        }
        let p = Path::new(g);
        if p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err(format!("the guest path {g:?} must not contain . or .."));
        }
        if p.components().count() < 2 {
            return Err("the guest path cannot be / itself".into());
        }
        Ok(())
    }
}

/// Docker's name rule, so names never contain `/` or start with `.`.
pub fn validate_name(name: &str) -> Result<(), VolumeError> {
    let ok = name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(VolumeError::InvalidName(name.to_string()))
    }
}

/// Check that `path` is a managed volume directory and say which one. The path is
/// canonicalized; it must then sit exactly one level below the canonical named or
/// anonymous root. Roots themselves, deeper paths, files, symlinks (at the last
/// component, or anywhere that leads outside) and missing paths are refused, each with
/// the path and the managed roots in the message.
pub fn gate(layout: &Layout, path: &Path) -> Result<(VolumeKind, String, PathBuf), VolumeError> {
    let named = layout.named_volumes_dir();
    let anonymous = layout.anonymous_volumes_dir();
    let unmanaged = || VolumeError::Unmanaged {
        path: path.to_path_buf(),
        named: named.clone(),
        anonymous: anonymous.clone(),
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VolumeError::Missing {
                path: path.to_path_buf(),
                named: named.clone(),
                anonymous: anonymous.clone(),
            });
        }
        Err(source) => {
            return Err(VolumeError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let canonical = std::fs::canonicalize(path).map_err(|source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let roots = [
        (VolumeKind::Named, std::fs::canonicalize(&named).ok()),
        (
            VolumeKind::Anonymous,
            std::fs::canonicalize(&anonymous).ok(),
        ),
    ];
    let kind = roots
        .iter()
        .find(|(_, root)| {
            root.as_deref()
                .is_some_and(|r| canonical.parent() == Some(r))
        })
        .map(|(k, _)| *k)
        .ok_or_else(unmanaged)?;
    if meta.file_type().is_symlink() {
        return Err(VolumeError::Symlink {
            path: path.to_path_buf(),
        });
    }
    if !meta.is_dir() {
        return Err(VolumeError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    let name = canonical
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(unmanaged)?
        .to_string();
    Ok((kind, name, canonical))
}

/// The virtio-fs tag of a box's `index`-th volume.
pub fn tag(index: usize) -> String {
    format!("bxvol{index}")
}

/// virtiofsd's own sandbox: `namespace` (its own mount, pid and net namespaces, with
/// the shared directory as its root) when this user can create namespaces, else `none`.
pub fn virtiofsd_sandbox() -> &'static str {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 || crate::jailer::host().userns {
        "namespace"
    } else {
        "none"
    }
}

/// Create a volume directory (0700) if it does not exist yet.
pub fn ensure_dir(path: &Path) -> Result<bool, VolumeError> {
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(VolumeError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Make the directories of a box's volumes. Returns the named volume directories this
/// call created, so a failed creation can take them back.
pub fn create_dirs(layout: &Layout, mounts: &[VolumeMount]) -> Result<Vec<PathBuf>, VolumeError> {
    let mut made = Vec::new();
    for m in mounts {
        let dir = layout.volume_root(m.kind).join(&m.name);
        if ensure_dir(&dir)? && m.kind == VolumeKind::Named {
            made.push(dir);
        }
    }
    Ok(made)
}

/// Remove a box's anonymous volumes.
pub fn remove_anonymous(layout: &Layout, mounts: &[VolumeMount]) -> Result<(), VolumeError> {
    for m in mounts.iter().filter(|m| m.kind == VolumeKind::Anonymous) {
        let dir = layout.anonymous_volumes_dir().join(&m.name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(VolumeError::Io { path: dir, source }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_forms_parse_into_named_anonymous_and_read_only() {
        assert_eq!(
            VolumeSpec::parse("/data").unwrap(),
            VolumeSpec::anonymous("/data")
        );
        assert_eq!(
            VolumeSpec::parse("cache:/var/cache").unwrap(),
            VolumeSpec::named("cache", "/var/cache")
        );
        assert_eq!(
            VolumeSpec::parse("cache:/var/cache:ro").unwrap(),
            VolumeSpec::named("cache", "/var/cache").read_only(true)
        );
        assert_eq!(
            VolumeSpec::parse("/scratch:ro").unwrap(),
            VolumeSpec::anonymous("/scratch").read_only(true)
        );
    }

    #[test]
    fn host_bind_is_refused_with_the_supported_forms_and_cp() {
        let err = VolumeSpec::parse("/etc:/host-etc").unwrap_err().to_string();

        assert!(err.contains("host directories cannot be mounted"), "{err}");
        assert!(err.contains("NAME:/guest/path"), "{err}");
        assert!(err.contains("boxlite cp"), "{err}");
    }

    #[test]
    fn relative_or_dotted_guest_paths_are_refused() {
        for spec in ["data:ro", "data", "v:data", "/a/../b", "v:/", "/"] {
            let err = VolumeSpec::parse(spec);
            assert!(err.is_err(), "{spec} was accepted: {err:?}");
        }
    }

    #[test]
    fn names_follow_the_docker_rule() {
        assert!(validate_name("cache-1.x_y").is_ok());
        for bad in ["", "../x", ".hidden", "a/b", &"n".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
