//! A box's secrets: as the caller gives them ([`Secret`]) and as they are stored
//! ([`SecretRecord`]).
//!
//! The box never holds a secret's value: it sees a placeholder (as `$NAME` and
//! `$BOXLITE_SECRET_<NAME>`), and the box's network helper swaps the value in on
//! intercepted TLS connections to the secret's own hosts (`docs/network.md`). What is
//! stored about a box (its row, `inspect`) is where the value comes from, never the value:
//! an environment variable of the process that starts the box, a file of the caller, or a
//! file of the box's own (`boxes/<id>/secrets/<NAME>`, mode 0600) for a value given
//! through the API.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use boxlite_net::config::SecretValue;

/// Where a secret's value comes from.
///
/// Deserialized from `{"env": "VAR"}`, `{"file": "/path"}` or `{"value": "..."}`.
/// Serializing a [`SecretSource::Value`] is an error: a value is never written anywhere
/// but its own 0600 file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretSource {
    /// An environment variable of the process that starts the box, read at every start.
    Env(String),
    /// A file of the caller's (made absolute at creation), read at every start, its
    /// trailing newline removed.
    File(PathBuf),
    /// A literal value given through the API: kept in a 0600 file of the box's own.
    Value(SecretValue),
}

impl Serialize for SecretSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let (key, text) = match self {
            SecretSource::Env(v) => ("env", v.clone()),
            SecretSource::File(p) => ("file", p.display().to_string()),
            SecretSource::Value(_) => {
                return Err(S::Error::custom(
                    "a secret's value is never serialized; store its source instead",
                ));
            }
        };
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(key, &text)?;
        m.end()
    }
}

/// One secret of a box, as the caller gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// An environment variable name (`[A-Za-z_][A-Za-z0-9_]*`): the box sees the
    /// placeholder as `$NAME` and as `$BOXLITE_SECRET_<NAME in upper case>`.
    pub name: String,
    /// The only hosts the value is ever sent to: `api.example.com` or `*.example.com`.
    /// At least one: a secret valid for every host is refused.
    pub hosts: Vec<String>,
    pub source: SecretSource,
    /// What the box sees instead of the value; default `<BOXLITE_SECRET:NAME>`.
    #[serde(default)]
    pub placeholder: Option<String>,
    /// Also substitute in request bodies (off by default: a body is what servers echo).
    #[serde(default)]
    pub body: bool,
}

impl Secret {
    fn new<I, S>(name: impl Into<String>, source: SecretSource, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Secret {
            name: name.into(),
            hosts: hosts.into_iter().map(Into::into).collect(),
            source,
            placeholder: None,
            body: false,
        }
    }

    /// A secret whose value is the environment variable `var` of the process that
    /// starts the box.
    pub fn from_env<I, S>(name: impl Into<String>, var: impl Into<String>, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Secret::new(name, SecretSource::Env(var.into()), hosts)
    }

    /// A secret whose value is the content of `path` (without its trailing newline).
    pub fn from_file<I, S>(name: impl Into<String>, path: impl Into<PathBuf>, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Secret::new(name, SecretSource::File(path.into()), hosts)
    }

    /// A secret with a literal value, kept in a 0600 file of the box's own.
    pub fn from_value<I, S>(name: impl Into<String>, value: SecretValue, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Secret::new(name, SecretSource::Value(value), hosts)
    }

    /// Use `placeholder` instead of `<BOXLITE_SECRET:NAME>`.
    pub fn placeholder(mut self, placeholder: impl Into<String>) -> Self {
        self.placeholder = Some(placeholder.into());
        self
    }

    /// Substitute in request bodies too.
    pub fn body(mut self, yes: bool) -> Self {
        self.body = yes;
        self
    }

    /// The placeholder the box sees.
    pub fn effective_placeholder(&self) -> String {
        self.placeholder
            .clone()
            .unwrap_or_else(|| boxlite_net::secrets::default_placeholder(&self.name))
    }
}

/// The environment variables through which a box sees secret `name`'s placeholder:
/// `NAME` and `BOXLITE_SECRET_<NAME in upper case>`.
pub fn env_names(name: &str) -> [String; 2] {
    [
        name.to_string(),
        boxlite_net::secrets::boxlite_env_name(name),
    ]
}

/// Where a stored secret's value comes from: `{"env": "VAR"}`, `{"file": "/abs/path"}` or
/// `{"stored": true}` (the box's own `secrets/<NAME>` file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSource", into = "RawSource")]
pub enum StoredSource {
    Env(String),
    File(PathBuf),
    Stored,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct RawSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stored: bool,
}

impl TryFrom<RawSource> for StoredSource {
    type Error = String;
    fn try_from(r: RawSource) -> Result<Self, String> {
        match (r.env, r.file, r.stored) {
            (Some(v), None, false) => Ok(StoredSource::Env(v)),
            (None, Some(p), false) => Ok(StoredSource::File(p)),
            (None, None, true) => Ok(StoredSource::Stored),
            _ => Err("a secret's source is one of {\"env\": VAR}, {\"file\": PATH} or {\"stored\": true}".into()),
        }
    }
}

impl From<StoredSource> for RawSource {
    fn from(s: StoredSource) -> Self {
        match s {
            StoredSource::Env(v) => RawSource {
                env: Some(v),
                ..RawSource::default()
            },
            StoredSource::File(p) => RawSource {
                file: Some(p),
                ..RawSource::default()
            },
            StoredSource::Stored => RawSource {
                stored: true,
                ..RawSource::default()
            },
        }
    }
}

impl std::fmt::Display for StoredSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredSource::Env(v) => write!(f, "environment variable {v}"),
            StoredSource::File(p) => write!(f, "file {}", p.display()),
            StoredSource::Stored => f.write_str("the value stored with the box"),
        }
    }
}

/// A secret as stored with its box: everything but the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub name: String,
    pub hosts: Vec<String>,
    /// What the box sees instead of the value (the default filled in at creation).
    pub placeholder: String,
    #[serde(default)]
    pub body: bool,
    pub source: StoredSource,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_sources_have_one_shape_each_and_never_a_value() {
        let records = [
            (StoredSource::Env("TOKEN".into()), r#"{"env":"TOKEN"}"#),
            (StoredSource::File("/k/t".into()), r#"{"file":"/k/t"}"#),
            (StoredSource::Stored, r#"{"stored":true}"#),
        ];
        for (source, json) in records {
            assert_eq!(serde_json::to_string(&source).unwrap(), json);
            assert_eq!(serde_json::from_str::<StoredSource>(json).unwrap(), source);
        }
        for bad in [
            r#"{}"#,
            r#"{"env":"A","stored":true}"#,
            r#"{"stored":false}"#,
        ] {
            assert!(serde_json::from_str::<StoredSource>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_literal_value_never_serializes_and_never_shows_in_debug() {
        let s = Secret::from_value("K", SecretValue::new("hunter2-value".into()), ["a.test"]);

        let json = serde_json::to_string(&s);
        let debug = format!("{s:?}");

        assert!(json.unwrap_err().to_string().contains("never serialized"));
        assert!(!debug.contains("hunter2"), "{debug}");
        let env = Secret::from_env("K", "VAR", ["a.test"]).body(true);
        let back: Secret = serde_json::from_str(&serde_json::to_string(&env).unwrap()).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn a_secret_is_seen_under_its_name_and_boxlites_variable_with_the_default_placeholder() {
        let s = Secret::from_env("api_key", "X", ["a.test"]);

        assert_eq!(env_names(&s.name), ["api_key", "BOXLITE_SECRET_API_KEY"]);
        assert_eq!(s.effective_placeholder(), "<BOXLITE_SECRET:api_key>");
        assert_eq!(
            s.placeholder("PLACEHOLDER1").effective_placeholder(),
            "PLACEHOLDER1"
        );
    }
}
