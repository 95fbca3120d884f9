//! A box's secrets on the host: checked and recorded when the box is created, and their
//! values read again from their sources every time the box's network helper starts.
//!
//! The values go to the helper only, inside its configuration on its stdin. The box's row
//! and `inspect` keep the source ([`StoredSource`]); a value given through the API is kept
//! in `boxes/<id>/secrets/<NAME>` (directory 0700, file 0600, created exclusively, never
//! through a symlink, refused if another user owns it or others can read it), which goes
//! with the box. Nothing here is reachable from the guest: volumes live elsewhere.
//!
//! Every check of the secrets themselves is the helper's own
//! ([`boxlite_net::secrets::validate`]), run here at creation and at every start, so a
//! value that changed since creation is checked again before it reaches the helper.

use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use boxlite_net::config::SecretConfig;
use boxlite_net::secrets::MAX_VALUE;

use crate::layout::BoxPaths;
use crate::model::secret::{
    Secret, SecretRecord, SecretSource, SecretValue, StoredSource, env_names,
};

/// What is wrong with a box's secrets, or why a value could not be read. Messages name
/// the secret and the source, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Invalid(#[from] boxlite_net::secrets::SecretError),
    #[error(
        "secret {name:?}: {var:?} is not an environment variable name (non-empty, without '=' or NUL)"
    )]
    EnvName { name: String, var: String },
    #[error("secret {name:?}: environment variable {var} is not set")]
    EnvNotSet { name: String, var: String },
    #[error("secret {name:?}: environment variable {var} is not valid UTF-8")]
    EnvNotUnicode { name: String, var: String },
    #[error("secret {name:?}: reading file {}", path.display())]
    File {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("secret {name:?}: file {} is not UTF-8 text", path.display())]
    FileNotText { name: String, path: PathBuf },
    #[error("secret {name:?}: file {} holds more than {MAX_VALUE} bytes", path.display())]
    FileTooLarge { name: String, path: PathBuf },
    #[error(
        "environment variable {var} of the box is where secret {name:?} puts its placeholder; rename one of them"
    )]
    EnvCollision { var: String, name: String },
    #[error(
        "secrets {first:?} and {second:?} would both put their placeholder in environment variable {var}; rename one of them"
    )]
    NameCollision {
        var: String,
        first: String,
        second: String,
    },
    #[error("secret {name:?}: the value stored with the box ({})", path.display())]
    Stored {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("secret {name:?}: the value stored with the box ({}) is refused: {problem}", path.display())]
    StoredUnsafe {
        name: String,
        path: PathBuf,
        problem: String,
    },
}

impl SecretError {
    /// Whether the fault is in the box's own files (this machine's), rather than in what
    /// the caller gave or the environment it runs in.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            SecretError::Stored { .. } | SecretError::StoredUnsafe { .. }
        )
    }
}

/// A box's secrets as checked at creation: what the row keeps, and the literal values
/// to write into the box's own files once its directory exists.
#[derive(Debug, Default)]
pub struct Planned {
    pub records: Vec<SecretRecord>,
    pub values: Vec<(String, SecretValue)>,
}

/// Check a box's secrets at creation: every source is read now (an environment variable
/// of this process, a file, made absolute against the current directory), and the values
/// are checked with the helper's own rules. Blocking: reads files.
pub fn plan(secrets: &[Secret]) -> Result<Planned, SecretError> {
    let mut records = Vec::with_capacity(secrets.len());
    let mut values = Vec::new();
    let mut configs = Vec::with_capacity(secrets.len());
    for s in secrets {
        let (value, source) = match &s.source {
            SecretSource::Env(var) => (read_env(&s.name, var)?, StoredSource::Env(var.clone())),
            SecretSource::File(p) => {
                let abs = std::path::absolute(p).map_err(|source| SecretError::File {
                    name: s.name.clone(),
                    path: p.clone(),
                    source,
                })?;
                (read_file(&s.name, &abs)?, StoredSource::File(abs))
            }
            SecretSource::Value(v) => {
                values.push((s.name.clone(), v.clone()));
                (v.clone(), StoredSource::Stored)
            }
        };
        let placeholder = s.effective_placeholder();
        configs.push(SecretConfig {
            name: s.name.clone(),
            placeholder: placeholder.clone(),
            hosts: s.hosts.clone(),
            value,
            body: s.body,
        });
        records.push(SecretRecord {
            name: s.name.clone(),
            hosts: s.hosts.clone(),
            placeholder,
            body: s.body,
            source,
        });
    }
    boxlite_net::secrets::validate(&configs)?;
    Ok(Planned { records, values })
}

/// The same secret with its value read now into a literal one: for a frontend that sends
/// the secret to a server, which never reads the caller's environment or files. Blocking
/// for a file source.
pub fn literal(secret: &Secret) -> Result<Secret, SecretError> {
    let value = match &secret.source {
        SecretSource::Env(var) => read_env(&secret.name, var)?,
        SecretSource::File(p) => read_file(&secret.name, p)?,
        SecretSource::Value(v) => v.clone(),
    };
    Ok(Secret {
        source: SecretSource::Value(value),
        ..secret.clone()
    })
}

/// Refuse a box environment variable that is where a secret puts its placeholder
/// (`NAME` or `BOXLITE_SECRET_<NAME>`), and two secrets that would use the same one.
pub fn check_env(secrets: &[Secret], env: &[(String, String)]) -> Result<(), SecretError> {
    let mut seen: Vec<(String, &str)> = Vec::new();
    for s in secrets {
        for var in env_names(&s.name) {
            if env.iter().any(|(k, _)| *k == var) {
                return Err(SecretError::EnvCollision {
                    var,
                    name: s.name.clone(),
                });
            }
            if let Some((_, first)) = seen.iter().find(|(v, o)| *v == var && *o != s.name) {
                return Err(SecretError::NameCollision {
                    var,
                    first: (*first).to_string(),
                    second: s.name.clone(),
                });
            }
            seen.push((var, &s.name));
        }
    }
    Ok(())
}

/// What every command in the box sees for its secrets: the placeholder as `NAME` and as
/// `BOXLITE_SECRET_<NAME>`.
pub fn box_env(records: &[SecretRecord]) -> Vec<(String, String)> {
    records
        .iter()
        .flat_map(|r| env_names(&r.name).map(|var| (var, r.placeholder.clone())))
        .collect()
}

/// Write the literal values into the box's own files: the directory 0700, each file 0600,
/// created exclusively and never through a symlink. Blocking.
pub fn store(paths: &BoxPaths, values: &[(String, SecretValue)]) -> Result<(), SecretError> {
    if values.is_empty() {
        return Ok(());
    }
    let dir = paths.secrets_dir();
    let failed = |name: &str, path: &Path, source| SecretError::Stored {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| failed(&values[0].0, &dir, e))?;
    check_private(&values[0].0, &dir, true)?;
    for (name, value) in values {
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| failed(name, &path, e))?;
        f.write_all(value.expose().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| failed(name, &path, e))?;
    }
    Ok(())
}

/// Each secret's value, read from its source now, ready for the helper and checked with
/// its rules. Environment variables are this process's (the one starting the box).
/// Blocking: reads files.
pub fn resolve(
    paths: &BoxPaths,
    records: &[SecretRecord],
) -> Result<Vec<SecretConfig>, SecretError> {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let value = match &r.source {
            StoredSource::Env(var) => read_env(&r.name, var)?,
            StoredSource::File(p) => read_file(&r.name, p)?,
            StoredSource::Stored => read_stored(&r.name, &paths.secrets_dir())?,
        };
        out.push(SecretConfig {
            name: r.name.clone(),
            placeholder: r.placeholder.clone(),
            hosts: r.hosts.clone(),
            value,
            body: r.body,
        });
    }
    boxlite_net::secrets::validate(&out)?;
    Ok(out)
}

fn read_env(name: &str, var: &str) -> Result<SecretValue, SecretError> {
    if var.is_empty() || var.contains(['=', '\0']) {
        return Err(SecretError::EnvName {
            name: name.to_string(),
            var: var.to_string(),
        });
    }
    match std::env::var(var) {
        Ok(v) => Ok(SecretValue::new(v)),
        Err(std::env::VarError::NotPresent) => Err(SecretError::EnvNotSet {
            name: name.to_string(),
            var: var.to_string(),
        }),
        Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::EnvNotUnicode {
            name: name.to_string(),
            var: var.to_string(),
        }),
    }
}

/// Read at most [`MAX_VALUE`] bytes of text (plus a line ending), without its trailing
/// newline.
fn read_text(name: &str, path: &Path, f: std::fs::File) -> Result<SecretValue, SecretError> {
    let mut bytes = Vec::new();
    let limit = u64::try_from(MAX_VALUE + 2).unwrap_or(u64::MAX);
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| SecretError::File {
            name: name.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(SecretError::FileTooLarge {
            name: name.to_string(),
            path: path.to_path_buf(),
        });
    }
    let mut text = String::from_utf8(bytes).map_err(|_| SecretError::FileNotText {
        name: name.to_string(),
        path: path.to_path_buf(),
    })?;
    let len = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(len);
    Ok(SecretValue::new(text))
}

fn read_file(name: &str, path: &Path) -> Result<SecretValue, SecretError> {
    let f = std::fs::File::open(path).map_err(|source| SecretError::File {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    read_text(name, path, f)
}

/// A value of the box's own: the directory and file must be this user's, private, and
/// not symlinks.
fn read_stored(name: &str, dir: &Path) -> Result<SecretValue, SecretError> {
    let path = dir.join(name);
    let failed = |source| SecretError::Stored {
        name: name.to_string(),
        path: path.clone(),
        source,
    };
    check_private(name, dir, true)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(failed)?;
    let meta = f.metadata().map_err(failed)?;
    check_meta(name, &path, &meta, false)?;
    read_text(name, &path, f).map_err(|e| match e {
        SecretError::File { source, .. } => SecretError::Stored {
            name: name.to_string(),
            path: path.clone(),
            source,
        },
        e => e,
    })
}

fn check_private(name: &str, path: &Path, dir: bool) -> Result<(), SecretError> {
    let meta = std::fs::symlink_metadata(path).map_err(|source| SecretError::Stored {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    check_meta(name, path, &meta, dir)
}

fn check_meta(
    name: &str,
    path: &Path,
    meta: &std::fs::Metadata,
    dir: bool,
) -> Result<(), SecretError> {
    let unsafe_because = |problem: String| {
        Err(SecretError::StoredUnsafe {
            name: name.to_string(),
            path: path.to_path_buf(),
            problem,
        })
    };
    let kind_ok = if dir {
        meta.file_type().is_dir()
    } else {
        meta.file_type().is_file()
    };
    if !kind_ok {
        return unsafe_because(format!(
            "not a {}",
            if dir { "directory" } else { "regular file" }
        ));
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    if meta.uid() != uid {
        return unsafe_because(format!(
            "owned by uid {}, not this user ({uid})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return unsafe_because(format!(
            "mode {:o} lets others in; it must be {}",
            meta.mode() & 0o777,
            if dir { "0700" } else { "0600" }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("bx-secrets-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn literal_values_are_stored_0600_in_a_0700_directory_and_read_back() {
        let d = tmp();
        let paths = BoxPaths { dir: d.clone() };
        let secret = Secret::from_value("TOKEN", SecretValue::new("v-123".into()), ["a.test"]);

        let planned = plan(std::slice::from_ref(&secret)).unwrap();
        store(&paths, &planned.values).unwrap();
        let resolved = resolve(&paths, &planned.records).unwrap();

        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&paths.secrets_dir()), 0o700);
        assert_eq!(mode(&paths.secrets_dir().join("TOKEN")), 0o600);
        assert_eq!(planned.records[0].source, StoredSource::Stored);
        assert_eq!(planned.records[0].placeholder, "<BOXLITE_SECRET:TOKEN>");
        assert_eq!(resolved[0].value.expose(), "v-123");
        // A second store of the same name never overwrites (O_EXCL).
        assert!(store(&paths, &planned.values).is_err());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_stored_value_others_can_read_or_behind_a_symlink_is_refused() {
        let d = tmp();
        let paths = BoxPaths { dir: d.clone() };
        let values = vec![("K".to_string(), SecretValue::new("v".repeat(9)))];
        store(&paths, &values).unwrap();
        let rec = SecretRecord {
            name: "K".into(),
            hosts: vec!["a.test".into()],
            placeholder: "PLACEHOLDER-K".into(),
            body: false,
            source: StoredSource::Stored,
        };
        let file = paths.secrets_dir().join("K");

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = resolve(&paths, std::slice::from_ref(&rec)).unwrap_err();
        std::fs::remove_file(&file).unwrap();
        std::fs::write(d.join("elsewhere"), "x").unwrap();
        std::os::unix::fs::symlink(d.join("elsewhere"), &file).unwrap();
        let link = resolve(&paths, std::slice::from_ref(&rec)).unwrap_err();

        assert!(open.to_string().contains("mode 644"), "{open}");
        assert!(open.is_internal());
        assert!(
            matches!(link, SecretError::Stored { .. }),
            "{}",
            crate::util::error_chain(&link)
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn file_sources_are_made_absolute_and_lose_their_trailing_newline() {
        let d = tmp();
        let f = d.join("token");
        std::fs::write(&f, "from-a-file\r\n").unwrap();
        let rel = pathdiff(&f);

        let planned = plan(&[Secret::from_file("F", &rel, ["a.test"])]).unwrap();
        let paths = BoxPaths { dir: d.clone() };
        let resolved = resolve(&paths, &planned.records).unwrap();

        let abs = std::env::current_dir().unwrap().join(&rel);
        assert_eq!(planned.records[0].source, StoredSource::File(abs));
        assert_eq!(resolved[0].value.expose(), "from-a-file");
        assert!(planned.values.is_empty());
        std::fs::remove_dir_all(d).unwrap();
    }

    /// `path` relative to the current directory.
    fn pathdiff(path: &Path) -> PathBuf {
        let cwd = std::env::current_dir().unwrap();
        let depth = cwd.components().count() - 1;
        let mut rel = PathBuf::new();
        for _ in 0..depth {
            rel.push("..");
        }
        rel.join(path.strip_prefix("/").unwrap())
    }

    #[test]
    fn unreadable_sources_name_the_secret_and_the_source_never_a_value() {
        let missing_var = "BOXLITE_TEST_SECRET_NEVER_SET_0F3A";
        let env = plan(&[Secret::from_env("E", missing_var, ["a.test"])]).unwrap_err();
        let file = plan(&[Secret::from_file("F", "/nonexistent/token", ["a.test"])]).unwrap_err();
        let bad_var = plan(&[Secret::from_env("E", "A=B", ["a.test"])]).unwrap_err();

        assert_eq!(
            env.to_string(),
            format!("secret \"E\": environment variable {missing_var} is not set")
        );
        assert!(
            file.to_string().contains("secret \"F\"")
                && file.to_string().contains("/nonexistent/token"),
            "{file}"
        );
        assert!(bad_var.to_string().contains("\"A=B\""), "{bad_var}");
    }

    #[test]
    fn the_helpers_rules_apply_at_creation_without_quoting_the_value() {
        let v = |s: &str| SecretValue::new(s.into());
        let no_hosts = plan(&[Secret::from_value(
            "K",
            v("sk-value-1"),
            Vec::<String>::new(),
        )])
        .unwrap_err()
        .to_string();
        let bad_name = plan(&[Secret::from_value("1K", v("sk-value-1"), ["a.test"])])
            .unwrap_err()
            .to_string();
        let control = plan(&[Secret::from_value("K", v("sk-value-1\n2"), ["a.test"])])
            .unwrap_err()
            .to_string();

        assert!(no_hosts.contains("no hosts"), "{no_hosts}");
        assert!(bad_name.contains("\"1K\""), "{bad_name}");
        assert!(control.contains("control character"), "{control}");
        for e in [no_hosts, bad_name, control] {
            assert!(!e.contains("sk-value"), "{e}");
        }
    }

    #[test]
    fn box_env_that_takes_a_secrets_variable_is_refused() {
        let s = [Secret::from_env("api", "X", ["a.test"])];
        let env = |k: &str| vec![(k.to_string(), "1".to_string())];

        let plain = check_env(&s, &env("api"));
        let boxlite = check_env(&s, &env("BOXLITE_SECRET_API"));
        let other = check_env(&s, &env("OTHER"));
        let twins = check_env(
            &[
                Secret::from_env("api", "X", ["a.test"]),
                Secret::from_env("API", "Y", ["a.test"]),
            ],
            &[],
        );

        assert!(matches!(plain, Err(SecretError::EnvCollision { ref var, .. }) if var == "api"));
        assert!(
            boxlite
                .unwrap_err()
                .to_string()
                .contains("BOXLITE_SECRET_API")
        );
        assert!(other.is_ok());
        assert!(matches!(twins, Err(SecretError::NameCollision { .. })));
    }
}
