//! Runtime configuration and registry credentials.
//!
//! Settings live in `BOXLITE_HOME/config.toml`, or in the file `--config` names:
//!
//! ```toml
//! [registries."127.0.0.1:5000"]
//! insecure_http = true            # plain HTTP, for this host only
//!
//! [registries."registry.example.com"]
//! ca_file = "certs/example-ca.pem" # relative to this file
//!
//! [network]
//! # Roots the network helper trusts, besides the host's, for the upstream servers of
//! # connections it intercepts to substitute a box's secrets (relative to this file).
//! upstream_ca_files = ["certs/internal-ca.pem"]
//! ```
//!
//! Credentials never go in that file. `boxlite login` stores them in
//! `BOXLITE_HOME/auth.json` (mode 0600; a file others can read is refused, as ssh
//! refuses a readable key), and `BOXLITE_REGISTRY_USERNAME` with
//! `BOXLITE_REGISTRY_PASSWORD` (or `BOXLITE_REGISTRY_TOKEN`) supply them for the
//! registry in `BOXLITE_REGISTRY` (default `docker.io`) without touching disk.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::images::registry::{Credential, RegistryConfig, RegistrySettings};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: registry {registry:?}: {reason}")]
    Invalid {
        path: PathBuf,
        registry: String,
        reason: String,
    },
    #[error("config file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("config file {path}: [network] upstream_ca_files: {}: {reason}", file.display())]
    UpstreamCa {
        path: PathBuf,
        file: PathBuf,
        reason: String,
    },
    #[error("config file {path}: [network] upstream_ca_files: reading {}", file.display())]
    UpstreamCaIo {
        path: PathBuf,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "credentials file {path} can be read by other users (mode {mode:o}); run chmod 600 on it"
    )]
    OpenAuth { path: PathBuf, mode: u32 },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    registries: BTreeMap<String, RegistrySettings>,
    #[serde(default)]
    network: NetworkConfig,
}

/// `[network]`: settings of every box's network helper.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkConfig {
    /// PEM files of extra roots for upstream certificates on intercepted connections.
    #[serde(default)]
    upstream_ca_files: Vec<PathBuf>,
}

/// The largest `upstream_ca_files` entry: a few CA certificates, not a system bundle
/// (the host's roots are trusted anyway), so the helper's configuration stays small.
const MAX_CA_FILE: u64 = 256 * 1024;

/// Read and parse the file; `None` when it is missing and not `required`.
fn read_config(path: &Path, required: bool) -> Result<Option<FileConfig>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(None);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::Missing {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(ConfigError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })
}

/// Read registry settings from `path`. A missing file is an empty configuration unless
/// `required` (the user named it with `--config`).
pub fn load(path: &Path, required: bool) -> Result<HashMap<String, RegistrySettings>, ConfigError> {
    let Some(file) = read_config(path, required)? else {
        return Ok(HashMap::new());
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = HashMap::new();
    for (registry, mut s) in file.registries {
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            registry: registry.clone(),
            reason,
        };
        if !crate::images::reference::registry_ok(&registry) {
            return Err(invalid(
                "not a registry host: give a host name or address with an optional :port".into(),
            ));
        }
        if let Some(ca) = &s.ca_file {
            let ca = if ca.is_absolute() {
                ca.clone()
            } else {
                base.join(ca)
            };
            if !ca.is_file() {
                return Err(invalid(format!(
                    "ca_file {} is not a readable file",
                    ca.display()
                )));
            }
            s.ca_file = Some(ca);
        }
        out.insert(registry, s);
    }
    Ok(out)
}

/// The extra roots for the network helpers' upstream connections: every file of
/// `[network] upstream_ca_files` (relative to the config file's directory), read now, as
/// PEM text holding at least one certificate. A missing config file gives none unless
/// `required`.
pub fn upstream_roots(path: &Path, required: bool) -> Result<Vec<String>, ConfigError> {
    let Some(file) = read_config(path, required)? else {
        return Ok(Vec::new());
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for f in file.network.upstream_ca_files {
        let f = base.join(f);
        let invalid = |reason: &str| ConfigError::UpstreamCa {
            path: path.to_path_buf(),
            file: f.clone(),
            reason: reason.to_string(),
        };
        let io = |source| ConfigError::UpstreamCaIo {
            path: path.to_path_buf(),
            file: f.clone(),
            source,
        };
        let meta = std::fs::metadata(&f).map_err(io)?;
        if !meta.is_file() {
            return Err(invalid("not a regular file"));
        }
        if meta.len() > MAX_CA_FILE {
            return Err(invalid(&format!(
                "larger than {} KiB; give the CA certificates the upstreams need (the host's roots are trusted anyway)",
                MAX_CA_FILE / 1024
            )));
        }
        let bytes = std::fs::read(&f).map_err(io)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| invalid("not PEM text (expected -----BEGIN CERTIFICATE-----)"))?;
        use rustls_pki_types::pem::PemObject;
        let mut certs = 0;
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(text.as_bytes()) {
            c.map_err(|e| invalid(&format!("not valid PEM ({e})")))?;
            certs += 1;
        }
        if certs == 0 {
            return Err(invalid(
                "holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            ));
        }
        out.push(text);
    }
    Ok(out)
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    registries: BTreeMap<String, Credential>,
}

/// `BOXLITE_HOME/auth.json`: credentials saved by `boxlite login`.
#[derive(Debug, Clone)]
pub struct AuthStore {
    path: PathBuf,
}

impl AuthStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuthStore { path: path.into() }
    }

    fn read(&self) -> Result<AuthFile, ConfigError> {
        let io = |source| ConfigError::Io {
            path: self.path.clone(),
            source,
        };
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AuthFile::default()),
            Err(e) => return Err(io(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::OpenAuth {
                path: self.path.clone(),
                mode,
            });
        }
        let text = std::fs::read_to_string(&self.path).map_err(io)?;
        // The parse error is not shown: it could quote a secret.
        serde_json::from_str(&text).map_err(|e| ConfigError::Parse {
            path: self.path.clone(),
            message: format!(
                "not valid credentials JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        })
    }

    pub fn load(&self) -> Result<HashMap<String, Credential>, ConfigError> {
        Ok(self.read()?.registries.into_iter().collect())
    }

    /// Save (or replace) the credential for `registry`; the file is written 0600 and
    /// renamed into place.
    pub fn save(&self, registry: &str, cred: Credential) -> Result<(), ConfigError> {
        let mut f = self.read()?;
        f.registries.insert(registry.to_string(), cred);
        self.write(&f)
    }

    /// Forget `registry`'s credential; true if there was one.
    pub fn remove(&self, registry: &str) -> Result<bool, ConfigError> {
        let mut f = self.read()?;
        let had = f.registries.remove(registry).is_some();
        if had {
            self.write(&f)?;
        }
        Ok(had)
    }

    fn write(&self, f: &AuthFile) -> Result<(), ConfigError> {
        let io = |source| ConfigError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(format!(".auth.{:016x}.tmp", rand::random::<u64>()));
        let body = serde_json::to_vec_pretty(f).expect("credentials serialize");
        let written = (|| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&body)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io)
    }
}

/// Credentials from the environment, for one registry.
pub fn env_credential(get: impl Fn(&str) -> Option<String>) -> Option<(String, Credential)> {
    let registry =
        get("BOXLITE_REGISTRY").unwrap_or_else(|| crate::images::reference::DOCKER_HUB.into());
    if let Some(token) = get("BOXLITE_REGISTRY_TOKEN") {
        return Some((registry, Credential::Bearer { token }));
    }
    match (
        get("BOXLITE_REGISTRY_USERNAME"),
        get("BOXLITE_REGISTRY_PASSWORD"),
    ) {
        (Some(username), Some(password)) => {
            Some((registry, Credential::Basic { username, password }))
        }
        _ => None,
    }
}

/// Settings and credentials together, as a pull needs them: the environment's
/// credential wins over a saved one for the same registry.
pub fn registry_config(
    config_file: &Path,
    required: bool,
    auth: &AuthStore,
) -> Result<RegistryConfig, ConfigError> {
    let hosts = load(config_file, required)?;
    let mut credentials = auth.load()?;
    if let Some((r, c)) = env_credential(|k| std::env::var(k).ok()) {
        credentials.insert(r, c);
    }
    Ok(RegistryConfig { hosts, credentials })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("bxcfg-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn registries_load_with_relative_ca_files_and_bad_entries_are_named() {
        let d = tmp();
        std::fs::write(d.join("ca.pem"), "x").unwrap();
        let good = d.join("config.toml");
        std::fs::write(
            &good,
            "[registries.\"127.0.0.1:5000\"]\ninsecure_http = true\n[registries.\"r.example.com\"]\nca_file = \"ca.pem\"\n",
        )
        .unwrap();
        let typo = d.join("typo.toml");
        std::fs::write(&typo, "[registries.\"r.example.com\"]\ninsecure = true\n").unwrap();
        let badhost = d.join("host.toml");
        std::fs::write(&badhost, "[registries.\"bad host\"]\n").unwrap();
        let noca = d.join("noca.toml");
        std::fs::write(
            &noca,
            "[registries.\"r.example.com\"]\nca_file = \"missing.pem\"\n",
        )
        .unwrap();

        let cfg = load(&good, true).unwrap();
        let typo_err = load(&typo, true).unwrap_err().to_string();
        let host_err = load(&badhost, true).unwrap_err().to_string();
        let ca_err = load(&noca, true).unwrap_err().to_string();

        assert!(cfg["127.0.0.1:5000"].insecure_http);
        assert_eq!(
            cfg["r.example.com"].ca_file.as_deref(),
            Some(d.join("ca.pem").as_path())
        );
        assert!(
            typo_err.contains("insecure") && typo_err.contains("typo.toml"),
            "{typo_err}"
        );
        assert!(
            host_err.contains("\"bad host\"") && host_err.contains("not a registry host"),
            "{host_err}"
        );
        assert!(ca_err.contains("missing.pem"), "{ca_err}");
        assert!(load(&d.join("absent.toml"), false).unwrap().is_empty());
        assert!(matches!(
            load(&d.join("absent.toml"), true),
            Err(ConfigError::Missing { .. })
        ));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn upstream_ca_files_are_read_relative_to_the_config_and_must_be_pem_certificates() {
        let d = tmp();
        let pem = "-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n";
        std::fs::create_dir_all(d.join("certs")).unwrap();
        std::fs::write(d.join("certs/ca.pem"), pem).unwrap();
        std::fs::write(
            d.join("key.pem"),
            "-----BEGIN PRIVATE KEY-----\nMIIBAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::write(d.join("junk.pem"), "not a certificate").unwrap();
        let cfg = |name: &str, files: &str| {
            let p = d.join(name);
            std::fs::write(&p, format!("[network]\nupstream_ca_files = [{files}]\n")).unwrap();
            p
        };
        let good = cfg("good.toml", "\"certs/ca.pem\"");
        let key = cfg("key.toml", "\"key.pem\"");
        let junk = cfg("junk.toml", "\"junk.pem\"");
        let missing = cfg("missing.toml", "\"nowhere.pem\"");
        let typo = d.join("typo.toml");
        std::fs::write(&typo, "[network]\nupstream_ca_file = []\n").unwrap();

        let roots = upstream_roots(&good, true).unwrap();
        let errs: Vec<String> = [&key, &junk, &missing, &typo]
            .iter()
            .map(|p| crate::util::error_chain(&upstream_roots(p, true).unwrap_err()))
            .collect();

        assert_eq!(roots, [pem]);
        assert!(
            upstream_roots(&d.join("absent.toml"), false)
                .unwrap()
                .is_empty()
        );
        assert!(
            errs[0].contains("key.pem") && errs[0].contains("no PEM certificate"),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].contains("junk.pem") && errs[1].contains("no PEM certificate"),
            "{}",
            errs[1]
        );
        assert!(errs[2].contains("nowhere.pem"), "{}", errs[2]);
        assert!(errs[3].contains("upstream_ca_file"), "{}", errs[3]);
        // The registries of the same file still load.
        assert!(load(&good, true).unwrap().is_empty());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn credentials_are_saved_0600_refused_when_readable_and_never_shown() {
        let d = tmp();
        let store = AuthStore::new(d.join("auth.json"));
        let cred = Credential::Basic {
            username: "me".into(),
            password: "hunter2".into(),
        };

        store.save("ghcr.io", cred.clone()).unwrap();
        let mode = std::fs::metadata(d.join("auth.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        let loaded = store.load().unwrap();
        std::fs::set_permissions(d.join("auth.json"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let open = store.load().unwrap_err();
        std::fs::set_permissions(d.join("auth.json"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let removed = store.remove("ghcr.io").unwrap();
        std::fs::write(d.join("auth.json"), "{\"registries\": {\"x\": \"hunter2\"").unwrap();
        let corrupt = store.load().unwrap_err().to_string();

        assert_eq!(mode, 0o600);
        assert_eq!(loaded["ghcr.io"], cred);
        assert!(
            matches!(open, ConfigError::OpenAuth { mode: 0o644, .. }),
            "{open}"
        );
        assert!(removed && !corrupt.contains("hunter2"), "{corrupt}");
        assert!(!format!("{loaded:?}").contains("hunter2"));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn the_environment_supplies_a_credential_for_one_registry() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };

        let basic = env_credential(env(&[
            ("BOXLITE_REGISTRY_USERNAME", "u"),
            ("BOXLITE_REGISTRY_PASSWORD", "p"),
        ]));
        let token = env_credential(env(&[
            ("BOXLITE_REGISTRY", "ghcr.io"),
            ("BOXLITE_REGISTRY_TOKEN", "t"),
        ]));
        let half = env_credential(env(&[("BOXLITE_REGISTRY_USERNAME", "u")]));

        assert_eq!(
            basic,
            Some((
                "docker.io".into(),
                Credential::Basic {
                    username: "u".into(),
                    password: "p".into()
                }
            ))
        );
        assert_eq!(
            token,
            Some(("ghcr.io".into(), Credential::Bearer { token: "t".into() }))
        );
        assert_eq!(half, None);
    }
}
