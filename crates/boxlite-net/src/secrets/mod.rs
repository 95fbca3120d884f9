//! Secrets that never enter the box: the box holds a placeholder, and the helper swaps in
//! the real value on intercepted TLS connections to the secret's own hosts.
//!
//! - [`validate`] is the one check of a secret list, run by the library when a box is
//!   created and again by the helper when it starts.
//! - [`SecretSet`] answers which secrets belong to a host, with the egress policy's name
//!   matcher ([`crate::policy::name_matches`]).
//! - [`ca`] mints the per-box CA (name-constrained to the secrets' hosts) and its leaves.
//! - [`subst`] substitutes placeholders in requests and scrubs values out of responses.
//! - [`proxy`] is the interception path itself: TLS toward the guest and the upstream,
//!   HTTP/1.1 and HTTP/2 proxying with hyper.

pub mod ca;
pub mod proxy;
pub mod subst;

use crate::config::SecretConfig;
use crate::policy::{NamePattern, name_matches, normalize_name};

/// The placeholder a secret gets when none is given.
pub fn default_placeholder(name: &str) -> String {
    format!("<BOXLITE_SECRET:{name}>")
}

/// The environment variable BoxLite uses for a secret's placeholder.
pub fn boxlite_env_name(name: &str) -> String {
    format!("BOXLITE_SECRET_{}", name.to_ascii_uppercase())
}

/// Longest secret name (an environment variable name).
pub const MAX_NAME: usize = 128;
/// Longest value: far above any API key, far below anything that strains a header.
pub const MAX_VALUE: usize = 8 * 1024;
/// Placeholders are at least this long, so they cannot occur by chance in traffic.
pub const MIN_PLACEHOLDER: usize = 8;
pub const MAX_PLACEHOLDER: usize = 256;
/// Hosts per secret and secrets per box.
pub const MAX_HOSTS: usize = 64;
pub const MAX_SECRETS: usize = 64;

/// What is wrong with a secret. Every variant names the secret and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "invalid secret name {0:?}: a secret name is an environment variable name, 1 to {MAX_NAME} \
         characters of A-Z, a-z, 0-9 and _, not starting with a digit"
    )]
    Name(String),
    #[error("secret {0:?} is given twice; each secret name may appear once")]
    Duplicate(String),
    #[error(
        "secret {0:?} has no hosts; name the hosts it may be sent to (api.example.com or \
         *.example.com): a secret valid for every host is refused"
    )]
    NoHosts(String),
    #[error("secret {name:?} has {count} hosts; at most {MAX_HOSTS} are allowed")]
    TooManyHosts { name: String, count: usize },
    #[error(
        "secret {name:?}: host {host:?} is not a valid host name or *.name wildcard ({problem}); \
         IP addresses and network groups are not secret hosts"
    )]
    Host {
        name: String,
        host: String,
        problem: String,
    },
    #[error("secret {0:?} has an empty value")]
    EmptyValue(String),
    #[error("secret {name:?}: the value is {len} bytes; at most {MAX_VALUE} are allowed")]
    ValueTooLong { name: String, len: usize },
    #[error(
        "secret {0:?}: the value contains a control character (CR, LF, NUL, ...), which no HTTP \
         header can carry"
    )]
    ValueControl(String),
    #[error(
        "secret {name:?}: invalid placeholder {placeholder:?}; a placeholder is {MIN_PLACEHOLDER} \
         to {MAX_PLACEHOLDER} printable ASCII characters without spaces"
    )]
    Placeholder { name: String, placeholder: String },
    #[error(
        "secrets {0:?} and {1:?} have the same placeholder, or one placeholder contains the other"
    )]
    PlaceholderClash(String, String),
    #[error("{count} secrets given; at most {MAX_SECRETS} are allowed")]
    TooMany { count: usize },
}

/// Is `name` usable as a secret name (an environment variable name).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A secret host pattern: `name` or `*.name`, normalized.
pub fn parse_host(host: &str) -> Result<NamePattern, String> {
    match host.strip_prefix("*.") {
        Some(rest) => normalize_name(rest)
            .map(NamePattern::Wildcard)
            .map_err(|e| e.to_string()),
        None if host.contains('*') => {
            Err("`*` may only be the whole first label, as in *.example.com".into())
        }
        None => normalize_name(host)
            .map(NamePattern::Exact)
            .map_err(|e| e.to_string()),
    }
}

/// A placeholder is printable ASCII without spaces, of a sane length.
pub fn valid_placeholder(p: &str) -> bool {
    (MIN_PLACEHOLDER..=MAX_PLACEHOLDER).contains(&p.len())
        && p.bytes().all(|b| b.is_ascii_graphic())
}

/// The one check of a box's secrets.
pub fn validate(secrets: &[SecretConfig]) -> Result<(), SecretError> {
    if secrets.len() > MAX_SECRETS {
        return Err(SecretError::TooMany {
            count: secrets.len(),
        });
    }
    for (i, s) in secrets.iter().enumerate() {
        if !valid_name(&s.name) {
            return Err(SecretError::Name(s.name.clone()));
        }
        if secrets[..i].iter().any(|o| o.name == s.name) {
            return Err(SecretError::Duplicate(s.name.clone()));
        }
        if s.hosts.is_empty() {
            return Err(SecretError::NoHosts(s.name.clone()));
        }
        if s.hosts.len() > MAX_HOSTS {
            return Err(SecretError::TooManyHosts {
                name: s.name.clone(),
                count: s.hosts.len(),
            });
        }
        for h in &s.hosts {
            parse_host(h).map_err(|problem| SecretError::Host {
                name: s.name.clone(),
                host: h.clone(),
                problem,
            })?;
        }
        let v = s.value.expose();
        if v.is_empty() {
            return Err(SecretError::EmptyValue(s.name.clone()));
        }
        if v.len() > MAX_VALUE {
            return Err(SecretError::ValueTooLong {
                name: s.name.clone(),
                len: v.len(),
            });
        }
        if v.chars().any(char::is_control) {
            return Err(SecretError::ValueControl(s.name.clone()));
        }
        if !valid_placeholder(&s.placeholder) {
            return Err(SecretError::Placeholder {
                name: s.name.clone(),
                placeholder: s.placeholder.clone(),
            });
        }
        if let Some(o) = secrets[..i].iter().find(|o| {
            o.placeholder.contains(&s.placeholder) || s.placeholder.contains(&o.placeholder)
        }) {
            return Err(SecretError::PlaceholderClash(
                o.name.clone(),
                s.name.clone(),
            ));
        }
    }
    Ok(())
}

/// A box's secrets with their host patterns parsed.
#[derive(Debug, Clone, Default)]
pub struct SecretSet {
    secrets: Vec<(SecretConfig, Vec<NamePattern>)>,
}

impl SecretSet {
    /// Validates and parses. The helper refuses to start on an error.
    pub fn new(secrets: &[SecretConfig]) -> Result<SecretSet, SecretError> {
        validate(secrets)?;
        let secrets = secrets
            .iter()
            .map(|s| {
                let patterns = s.hosts.iter().filter_map(|h| parse_host(h).ok()).collect();
                (s.clone(), patterns)
            })
            .collect();
        Ok(SecretSet { secrets })
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Every host pattern of every secret (for the CA's name constraints).
    pub fn patterns(&self) -> Vec<NamePattern> {
        let mut all: Vec<NamePattern> = Vec::new();
        for p in self.secrets.iter().flat_map(|(_, ps)| ps) {
            if !all.contains(p) {
                all.push(p.clone());
            }
        }
        all
    }

    /// Does any secret belong to `name` (normalized).
    pub fn covers(&self, name: &str) -> bool {
        self.secrets
            .iter()
            .any(|(_, ps)| ps.iter().any(|p| name_matches(p, name)))
    }

    /// The secrets that may be sent to `name` (normalized).
    pub fn for_host(&self, name: &str) -> Vec<&SecretConfig> {
        self.secrets
            .iter()
            .filter(|(_, ps)| ps.iter().any(|p| name_matches(p, name)))
            .map(|(s, _)| s)
            .collect()
    }

    /// Every secret (response scrubbing turns any value back into its placeholder).
    pub fn all(&self) -> impl Iterator<Item = &SecretConfig> {
        self.secrets.iter().map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretValue;

    fn secret(name: &str, hosts: &[&str], value: &str) -> SecretConfig {
        SecretConfig {
            name: name.into(),
            placeholder: default_placeholder(name),
            hosts: hosts.iter().map(|h| (*h).into()).collect(),
            value: SecretValue::new(value.into()),
            body: false,
        }
    }

    #[test]
    fn names_hosts_values_and_placeholders_are_checked_with_a_clear_error() {
        validate(&[secret(
            "OPENAI_API_KEY",
            &["api.openai.com", "*.example.com"],
            "sk-1",
        )])
        .unwrap();
        let cases: Vec<(SecretConfig, &str)> = vec![
            (secret("", &["a.test"], "v"), "environment variable name"),
            (secret("9X", &["a.test"], "v"), "environment variable name"),
            (secret("A-B", &["a.test"], "v"), "environment variable name"),
            (secret("K", &[], "v"), "no hosts"),
            (secret("K", &["203.0.113.5"], "v"), "IP address"),
            (secret("K", &["a.*.test"], "v"), "whole first label"),
            (secret("K", &["*"], "v"), "not a valid host"),
            (secret("K", &["a.test"], ""), "empty value"),
            (
                secret("K", &["a.test"], "a\r\nX-Injected: 1"),
                "control character",
            ),
            (
                secret("K", &["a.test"], &"x".repeat(MAX_VALUE + 1)),
                "at most",
            ),
        ];
        for (s, want) in cases {
            let e = validate(std::slice::from_ref(&s)).unwrap_err().to_string();
            assert!(e.contains(want), "{:?}: {e}", s.name);
            assert!(!e.contains("a\r\n"), "the value leaked into the error: {e}");
        }
        let mut short = secret("K", &["a.test"], "v");
        short.placeholder = "<K>".into();
        assert!(matches!(
            validate(&[short]),
            Err(SecretError::Placeholder { .. })
        ));
        let a = secret("K", &["a.test"], "v");
        assert_eq!(
            validate(&[a.clone(), a.clone()]),
            Err(SecretError::Duplicate("K".into()))
        );
        let mut b = secret("L", &["a.test"], "v");
        b.placeholder = format!("{}x", a.placeholder);
        assert!(matches!(
            validate(&[a, b]),
            Err(SecretError::PlaceholderClash(..))
        ));
    }

    #[test]
    fn hosts_use_the_policy_matcher() {
        let set = SecretSet::new(&[
            secret("A", &["API.Example.com."], "va"),
            secret("B", &["*.example.com"], "vb"),
        ])
        .unwrap();
        let names = |host: &str| -> Vec<String> {
            set.for_host(host).iter().map(|s| s.name.clone()).collect()
        };
        assert_eq!(names("api.example.com"), ["A", "B"]);
        assert_eq!(names("x.y.example.com"), ["B"]);
        assert!(names("example.com").is_empty());
        assert!(names("evilexample.com").is_empty());
        assert!(names("api.example.com.evil.test").is_empty());
        assert!(set.covers("a.example.com") && !set.covers("evil.test"));
        assert_eq!(set.patterns().len(), 2);
    }

    #[test]
    fn debug_never_shows_a_value() {
        let s = secret("K", &["a.test"], "sk-very-secret");
        assert!(!format!("{s:?}").contains("sk-very-secret"));
        let mut cfg = crate::config::NetConfig::new("/d".into(), "/c".into());
        cfg.secrets.push(s);
        assert!(!format!("{cfg:?}").contains("sk-very-secret"));
    }
}
