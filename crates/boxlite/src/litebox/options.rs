//! How a box is built: [`BoxOptions`], validated once when the box is created.

use serde::{Deserialize, Serialize};

use super::BoxError;
use crate::model::{HealthOptions, NetworkSpec, NetworkSpecError, Secret};
use crate::volumes::VolumeSpec;

fn default_memory() -> u32 {
    crate::model::boxes::default_memory()
}

fn default_cpus() -> u32 {
    crate::model::boxes::default_cpus()
}

/// How a box is built. Validated when the box is created.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxOptions {
    pub image: String,
    /// A unique name; the box can be addressed by it wherever an id is accepted.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// Remove the box as soon as it stops, including when its VM dies on its own.
    #[serde(default)]
    pub auto_remove: bool,
    #[serde(default)]
    pub health: HealthOptions,
    /// Managed volumes to mount; see [`crate::volumes`].
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// The root disk's size in MiB: at least the image's. Default: the image's (built
    /// images carry at least 1 GiB of free space). A larger disk is grown into at the
    /// box's first boot, which costs boot time under TCG (about 0.5 s per GiB). The disk
    /// file is sparse and only grows by what the box writes.
    #[serde(default)]
    pub disk_size_mib: Option<u64>,
    /// Replaces the image's entrypoint (empty: none), and, as in Docker, drops its
    /// default command.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's default command (`Cmd`), as `docker create IMAGE CMD` does.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// The box's network: on by default (public internet allowed, private ranges, the
    /// host and metadata denied); see `docs/network.md`.
    #[serde(default)]
    pub network: NetworkSpec,
    /// Environment for every command in the box, over the image's `Env` (a command's
    /// own variables win over both).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory of every command that does not set one, instead of the
    /// image's `WorkingDir`.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// User of every command that does not set one (`name|uid[:group|gid]`), instead
    /// of the image's `User`.
    #[serde(default)]
    pub user: Option<String>,
    /// Secrets the box can use without ever holding them: it sees a placeholder (as
    /// `$NAME` and `$BOXLITE_SECRET_<NAME>`), and its network helper puts the value in
    /// place of it on TLS connections to the secret's hosts (`docs/network.md`). Needs
    /// the network. Each source is read when the box is created (to check it) and every
    /// time it starts.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Start by forking the image's template when there is one (warm start), and leave
    /// one at the first boot when there is none. On by default; off boots the kernel.
    #[serde(default = "crate::model::default_warm_start")]
    pub warm_start: bool,
    /// Capabilities every command gets on top of Docker's default set (`CAP_` prefix
    /// optional, any case, `ALL` for all); see [`crate::model::caps`].
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// Capabilities taken out of Docker's default set (`ALL`: all of them).
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// Every capability for every command (for Docker inside a box): root in the box
    /// can then do anything the VM's kernel allows. The PID, mount, IPC and UTS
    /// namespaces stay.
    #[serde(default)]
    pub privileged: bool,
    /// Labels: free key-value metadata kept with the box and shown by `inspect` (Docker's
    /// `--label`). The runtime never reads them; frontends mark their boxes with them
    /// (`boxlite mcp` does). See [`validate_labels`].
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Pause the box after this many seconds without an exec, attach or file transfer
    /// (`Some(0)`: never; `None`: the runtime's default,
    /// [`crate::RuntimeOptions::auto_pause`]). A running execution keeps it awake; the
    /// next call that needs it resumes it. Not for boxes with volumes or published
    /// ports. See [`BoxOptions::auto_pause`].
    #[serde(default)]
    pub auto_pause_secs: Option<u32>,
}

impl BoxOptions {
    pub fn new(image: impl Into<String>) -> Self {
        BoxOptions {
            image: image.into(),
            name: None,
            memory_mib: default_memory(),
            cpus: default_cpus(),
            auto_remove: false,
            health: HealthOptions::default(),
            volumes: Vec::new(),
            disk_size_mib: None,
            entrypoint: None,
            cmd: None,
            network: NetworkSpec::default(),
            env: Vec::new(),
            working_dir: None,
            user: None,
            secrets: Vec::new(),
            warm_start: true,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            privileged: false,
            labels: Default::default(),
            auto_pause_secs: None,
        }
    }

    /// Pause the box after `idle` without an exec, attach or file transfer (zero:
    /// never, whatever the runtime's default). Whole seconds, rounded up; at most
    /// [`MAX_AUTO_PAUSE_SECS`].
    pub fn auto_pause(mut self, idle: std::time::Duration) -> Self {
        let secs = idle.as_secs() + u64::from(idle.subsec_nanos() > 0);
        self.auto_pause_secs = Some(u32::try_from(secs).unwrap_or(u32::MAX));
        self
    }

    /// A label (replacing one of the same key).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// A capability for every command on top of the default set; see
    /// [`BoxOptions::cap_add`].
    pub fn cap_add(mut self, name: impl Into<String>) -> Self {
        self.cap_add.push(name.into());
        self
    }

    /// A capability taken out of the default set; see [`BoxOptions::cap_drop`].
    pub fn cap_drop(mut self, name: impl Into<String>) -> Self {
        self.cap_drop.push(name.into());
        self
    }

    /// Every capability; see [`BoxOptions::privileged`].
    pub fn privileged(mut self, yes: bool) -> Self {
        self.privileged = yes;
        self
    }

    /// The checked, normalized capability settings of the box.
    pub fn capabilities(&self) -> Result<crate::model::Capabilities, BoxError> {
        Ok(crate::model::Capabilities::new(
            &self.cap_add,
            &self.cap_drop,
            self.privileged,
        )?)
    }

    /// Whether the box may start from its image's template; see
    /// [`BoxOptions::warm_start`].
    pub fn warm_start(mut self, on: bool) -> Self {
        self.warm_start = on;
        self
    }

    /// A secret for the box; see [`BoxOptions::secrets`].
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secrets.push(secret);
        self
    }

    /// An environment variable for every command in the box.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The working directory of commands that do not set one.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// The user of commands that do not set one.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The root disk's size; see [`BoxOptions::disk_size_mib`].
    pub fn disk_size_mib(mut self, mib: u64) -> Self {
        self.disk_size_mib = Some(mib);
        self
    }

    /// Replace the image's entrypoint; see [`BoxOptions::entrypoint`].
    pub fn entrypoint<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.entrypoint = Some(argv.into_iter().map(Into::into).collect());
        self
    }

    /// Replace the image's default command; see [`BoxOptions::cmd`].
    pub fn cmd<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cmd = Some(argv.into_iter().map(Into::into).collect());
        self
    }

    pub fn network(mut self, network: NetworkSpec) -> Self {
        self.network = network;
        self
    }

    pub fn volume(mut self, spec: VolumeSpec) -> Self {
        self.volumes.push(spec);
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    pub fn auto_remove(mut self, yes: bool) -> Self {
        self.auto_remove = yes;
        self
    }

    pub fn health(mut self, health: HealthOptions) -> Self {
        self.health = health;
        self
    }

    /// Check every option that does not depend on the image. The runtime calls this
    /// once, before it pulls or creates anything (see `Boxlite::create`).
    pub fn validate(&self) -> Result<(), BoxError> {
        let bad = |m: String| Err(BoxError::InvalidOption(m));
        if !(64..=65536).contains(&self.memory_mib) {
            return bad(format!(
                "memory {} MiB is out of range (64-65536)",
                self.memory_mib
            ));
        }
        if !(1..=64).contains(&self.cpus) {
            return bad(format!("cpus {} is out of range (1-64)", self.cpus));
        }
        if let Some(n) = &self.name {
            validate_name(n)?;
        }
        validate_labels(&self.labels)?;
        if let Some(d) = self.disk_size_mib
            && !(64..=(16 << 20)).contains(&d)
        {
            return bad(format!(
                "disk size {d} MiB is out of range (64 MiB - 16 TiB)"
            ));
        }
        // An empty entrypoint clears the image's; one with an empty program is a mistake.
        if self
            .entrypoint
            .as_ref()
            .and_then(|e| e.first())
            .is_some_and(|p| p.is_empty())
        {
            return bad("an entrypoint's program cannot be empty".into());
        }
        for arg in self.entrypoint.iter().chain(self.cmd.iter()).flatten() {
            if arg.contains('\0') {
                return bad(format!("command argument {arg:?} contains a NUL byte"));
            }
        }
        self.capabilities()?;
        self.network.validate().map_err(BoxError::Network)?;
        if !self.secrets.is_empty() && !self.network.enabled() {
            return Err(BoxError::Network(NetworkSpecError::NeedsNetwork {
                what: "a secret",
            }));
        }
        crate::net::secrets::check_env(&self.secrets, &self.env)?;
        let invalid = |e: super::exec::ExecError| BoxError::InvalidOption(e.to_string());
        for (k, v) in &self.env {
            super::exec::BoxCommand::check_env(k, v).map_err(invalid)?;
        }
        if let Some(d) = &self.working_dir {
            super::exec::BoxCommand::check_working_dir(d).map_err(invalid)?;
        }
        if let Some(u) = &self.user
            && (u.is_empty() || u.contains('\0'))
        {
            return bad(format!(
                "user {u:?} must be a name or uid, optionally :group or :gid"
            ));
        }
        if let Some(n) = self.auto_pause_secs.filter(|n| *n > 0) {
            crate::model::pause::check_auto_pause("auto_pause", n)
                .map_err(|e| BoxError::InvalidOption(e.to_string()))?;
            if !self.volumes.is_empty() {
                return bad(format!(
                    "auto_pause ({n}s) cannot be used with volumes: a box with volumes cannot be paused"
                ));
            }
            if !self.network.ports.is_empty() {
                return bad(format!(
                    "auto_pause ({n}s) cannot be used with published ports: a paused box accepts no connections"
                ));
            }
        }
        let h = &self.health;
        if h.interval_secs > 0 && (h.timeout_secs == 0 || h.retries == 0) {
            return bad(format!(
                "health check timeout ({}s) and retries ({}) must be at least 1 when checks are on (interval {}s)",
                h.timeout_secs, h.retries, h.interval_secs
            ));
        }
        Ok(())
    }
}

pub use crate::model::pause::{MAX_AUTO_PAUSE_SECS, parse_auto_pause};

/// An auto-pause interval in whole seconds (rounded up), checked.
pub fn auto_pause_secs(d: std::time::Duration) -> Result<u32, BoxError> {
    crate::model::pause::auto_pause_secs(d).map_err(|e| BoxError::InvalidOption(e.to_string()))
}

/// The most labels a box can carry.
pub const MAX_LABELS: usize = 64;
/// The longest label key, in bytes.
pub const MAX_LABEL_KEY: usize = 128;
/// The longest label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 1024;

/// Check labels: at most [`MAX_LABELS`]; keys of 1 to [`MAX_LABEL_KEY`] ASCII letters,
/// digits, `.`, `_`, `-` and `/`, starting with a letter or digit (reverse-DNS style,
/// `com.example.team`); values of at most [`MAX_LABEL_VALUE`] bytes with no control
/// characters.
pub fn validate_labels(
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<(), BoxError> {
    let bad = |m: String| Err(BoxError::InvalidOption(m));
    if labels.len() > MAX_LABELS {
        return bad(format!(
            "{} labels are too many; a box carries at most {MAX_LABELS}",
            labels.len()
        ));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_LABEL_KEY
            && k.starts_with(|c: char| c.is_ascii_alphanumeric())
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        if !key_ok {
            return bad(format!(
                "label key {k:?} is invalid: 1 to {MAX_LABEL_KEY} ASCII letters, digits, '.', '_', '-' or '/', starting with a letter or digit"
            ));
        }
        if v.len() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return bad(format!(
                "label {k:?}'s value is invalid: at most {MAX_LABEL_VALUE} bytes, no control characters"
            ));
        }
    }
    Ok(())
}

/// Names follow Docker's rule: a letter or digit, then letters, digits, `_`, `.` or `-`;
/// at most 64 characters. A name cannot be 32 hex digits, which reads as a box id.
pub fn validate_name(name: &str) -> Result<(), BoxError> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let looks_like_id = name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok_first || !ok_rest || name.len() > 64 || looks_like_id {
        return Err(BoxError::InvalidOption(format!(
            "invalid name {name:?}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit, and not a 32-digit hex id"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CapabilityError;

    #[test]
    fn labels_are_checked_for_count_keys_and_values() {
        let ok = BoxOptions::new("i")
            .label("com.example/team", "core")
            .label("a", "")
            .label("x_1-2.y", "any text, even unicode: ü");
        assert!(ok.validate().is_ok());
        for (k, v) in [
            ("", "v"),
            ("-a", "v"),
            (".a", "v"),
            ("a b", "v"),
            ("a=b", "v"),
            ("ü", "v"),
            ("a", "line\nbreak"),
            ("a", "nul\0"),
        ] {
            let e = BoxOptions::new("i").label(k, v).validate().unwrap_err();
            assert!(
                matches!(e, BoxError::InvalidOption(ref m) if m.contains("label")),
                "{k:?}={v:?}: {e}"
            );
        }
        let long_key = "k".repeat(MAX_LABEL_KEY + 1);
        assert!(
            BoxOptions::new("i")
                .label(long_key, "v")
                .validate()
                .is_err()
        );
        let long_value = "v".repeat(MAX_LABEL_VALUE + 1);
        assert!(
            BoxOptions::new("i")
                .label("k", long_value)
                .validate()
                .is_err()
        );
        let mut many = BoxOptions::new("i");
        for i in 0..=MAX_LABELS {
            many = many.label(format!("k{i}"), "v");
        }
        let e = many.validate().unwrap_err().to_string();
        assert!(e.contains("at most 64"), "{e}");
    }

    #[test]
    fn an_unknown_capability_fails_validation_with_the_typed_error() {
        let opts = BoxOptions::new("boxlite/busybox")
            .cap_add("sys_admin")
            .cap_drop("CAP_TELEPORT");

        let err = opts.validate().unwrap_err();

        assert!(
            matches!(
                &err,
                BoxError::Capability(CapabilityError::Unknown { name, list: "cap_drop", .. })
                    if name == "CAP_TELEPORT"
            ),
            "{err:?}"
        );
    }

    #[test]
    fn capability_names_are_stored_normalized() {
        let opts = BoxOptions::new("boxlite/busybox")
            .cap_add("sys_ptrace")
            .cap_drop("all")
            .privileged(false);

        let caps = opts.capabilities().unwrap();

        assert_eq!(caps.add, ["CAP_SYS_PTRACE"]);
        assert_eq!(caps.drop, ["ALL"]);
        assert_eq!(caps.mask(), 1 << 19);
    }

    #[test]
    fn auto_pause_is_refused_for_boxes_that_cannot_pause_or_would_stop_serving() {
        let with = |o: BoxOptions| o.auto_pause(std::time::Duration::from_secs(30)).validate();
        let vol = with(BoxOptions::new("b").volume(crate::volumes::VolumeSpec::anonymous("/data")))
            .unwrap_err();
        let mut net = NetworkSpec::default();
        net.ports
            .push(crate::model::PortSpec::parse("8080:80").unwrap());
        let port = with(BoxOptions::new("b").network(net.clone())).unwrap_err();
        let off = BoxOptions::new("b")
            .network(net)
            .auto_pause(std::time::Duration::ZERO)
            .validate();

        assert!(vol.to_string().contains("volumes"), "{vol}");
        assert!(port.to_string().contains("published ports"), "{port}");
        assert!(off.is_ok(), "{off:?}");
    }
}
