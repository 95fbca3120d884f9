//! Image references, parsed and normalized the way Docker does.
//!
//! `python:3.12-slim` is `docker.io/library/python:3.12-slim`; `ghcr.io/org/app` is
//! `ghcr.io/org/app:latest`; `name@sha256:...` pins a digest (which wins over a tag).
//! The first component is a registry when it contains `.` or `:`, or is `localhost`.
//! Short names under `boxlite/` are the offline built-in images, never Docker Hub's.

use super::ImageError;

pub const DOCKER_HUB: &str = "docker.io";
/// The namespace Docker Hub gives one-component names.
const OFFICIAL: &str = "library";
/// The reserved namespace of the built-in images.
pub const BUILTIN: &str = "boxlite";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with a port if any: `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    /// `boxlite` for the built-in images.
    pub registry: String,
    /// Repository path: `library/python`, `org/app`.
    pub repository: String,
    /// Tag; `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

fn component_ok(c: &str) -> bool {
    // Lowercase letters and digits, with '.', '_' or '-' between them (never two dots).
    !c.is_empty()
        && c.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && c.bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && !c.contains("..")
}

pub(crate) fn registry_ok(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference, ImageError> {
        let bad = |reason: &str| ImageError::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("it is empty"));
        }
        if input.len() > 255 {
            return Err(bad("it is longer than 255 characters"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("a digest must look like sha256:<64 hex digits>"))?;
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(bad(
                        "a digest must look like sha256:<64 lowercase hex digits>",
                    ));
                }
                (rest, Some(d.to_string()))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/' (a registry port has a
        // '/' after it).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                let valid = !tag.is_empty()
                    && tag.len() <= 128
                    && tag
                        .bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && tag
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if !valid {
                    return Err(bad(
                        "a tag is 1-128 letters, digits, '.', '_' or '-', not starting with '.' or '-'",
                    ));
                }
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(bad("the name is empty"));
        }
        let parts: Vec<&str> = name.split('/').collect();
        let has_registry = parts.len() > 1
            && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost");
        let (registry, path) = if has_registry {
            if !registry_ok(parts[0]) {
                return Err(bad(
                    "the registry must be a host name or address, with an optional :port",
                ));
            }
            // Docker Hub's other names.
            let host = match parts[0] {
                "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
                h => h,
            };
            (host.to_string(), &parts[1..])
        } else if parts[0] == BUILTIN && parts.len() > 1 {
            (BUILTIN.to_string(), &parts[1..])
        } else {
            (DOCKER_HUB.to_string(), &parts[..])
        };
        if !path.iter().all(|c| component_ok(c)) {
            return Err(bad(
                "a name is lowercase letters and digits, separated by '.', '_' or '-', in '/'-separated parts",
            ));
        }
        let mut repository = path.join("/");
        if registry == DOCKER_HUB && path.len() == 1 {
            repository = format!("{OFFICIAL}/{repository}");
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    pub fn is_builtin(&self) -> bool {
        self.registry == BUILTIN
    }

    fn suffix(&self) -> String {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => format!("@{d}"),
            (Some(t), None) => format!(":{t}"),
            (None, None) => ":latest".into(),
        }
    }

    /// The full form every reference is stored under: `docker.io/library/python:3.12`.
    /// Built-in images keep their short form, `boxlite/busybox:latest`.
    pub fn canonical(&self) -> String {
        format!("{}/{}{}", self.registry, self.repository, self.suffix())
    }

    /// The short form Docker shows: `python:3.12`, `org/app:1`, `ghcr.io/org/app:1`.
    pub fn familiar(&self) -> String {
        let name = if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            format!("{}/{}", self.registry, self.repository)
        };
        format!("{name}{}", self.suffix())
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        Reference::parse(s).unwrap().canonical()
    }

    #[test]
    fn short_names_normalize_to_docker_hub_like_docker() {
        assert_eq!(canon("python"), "docker.io/library/python:latest");
        assert_eq!(
            canon("index.docker.io/python"),
            "docker.io/library/python:latest"
        );
        assert_eq!(
            canon("registry-1.docker.io/org/app:1"),
            "docker.io/org/app:1"
        );
        assert_eq!(
            canon("python:3.12-slim"),
            "docker.io/library/python:3.12-slim"
        );
        assert_eq!(canon("org/app"), "docker.io/org/app:latest");
        assert_eq!(canon("docker.io/python"), "docker.io/library/python:latest");
        assert_eq!(canon("ghcr.io/org/sub/app:v1"), "ghcr.io/org/sub/app:v1");
        assert_eq!(canon("localhost/app"), "localhost/app:latest");
        assert_eq!(canon("127.0.0.1:5000/a/b:t"), "127.0.0.1:5000/a/b:t");
        assert_eq!(canon("boxlite/busybox"), "boxlite/busybox:latest");
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            canon(&format!("app@{d}")),
            format!("docker.io/library/app@{d}")
        );
        assert_eq!(
            canon(&format!("app:1@{d}")),
            format!("docker.io/library/app@{d}")
        );
    }

    #[test]
    fn familiar_form_drops_what_docker_drops() {
        let r = Reference::parse("docker.io/library/python:3").unwrap();
        assert_eq!(r.familiar(), "python:3");
        assert_eq!(
            Reference::parse("ghcr.io/o/a").unwrap().familiar(),
            "ghcr.io/o/a:latest"
        );
        assert!(Reference::parse("boxlite/python").unwrap().is_builtin());
        assert!(!Reference::parse("boxlite").unwrap().is_builtin());
    }

    #[test]
    fn malformed_references_name_the_rule() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "app:",
            "app@md5:00",
            "app:t@g!",
            "-app",
            "app:.x",
            "bad host:5000/a",
            "host:99999999/a",
            "a/../b",
        ] {
            let err = Reference::parse(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid image reference {bad:?}")),
                "{bad}: {err}"
            );
        }
    }
}
