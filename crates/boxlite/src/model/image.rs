//! What the store knows about an image: its record, layers and run settings.

use serde::{Deserialize, Serialize};

/// How a layer's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn of_media_type(mt: &str) -> Option<Compression> {
        match mt {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// One layer as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub digest: String,
    pub size: u64,
    pub compression: Compression,
}

/// The parts of an image config a box uses (the OCI `config` object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunConfig {
    #[serde(rename = "Env", skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(rename = "Entrypoint", skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(rename = "User", skip_serializing_if = "String::is_empty")]
    pub user: String,
}

impl RunConfig {
    /// What a box of this image runs by default with `args` in place of `Cmd` when any
    /// are given: `Entrypoint + (args or Cmd)`, as `docker run IMAGE [ARGS]` runs.
    pub fn argv(&self, args: &[String]) -> Vec<String> {
        let mut argv = self.entrypoint.clone().unwrap_or_default();
        if args.is_empty() {
            argv.extend(self.cmd.clone().unwrap_or_default());
        } else {
            argv.extend(args.iter().cloned());
        }
        argv
    }

    /// A box's overrides: an entrypoint replaces the image's and, as in Docker, drops
    /// its `Cmd`; a command replaces `Cmd`.
    pub fn with_overrides(
        mut self,
        entrypoint: Option<Vec<String>>,
        cmd: Option<Vec<String>>,
    ) -> Self {
        if let Some(ep) = entrypoint {
            self.entrypoint = Some(ep);
            self.cmd = None;
        }
        if let Some(c) = cmd {
            self.cmd = Some(c);
        }
        self
    }

    /// A box's defaults for its commands: variables over the image's (by name), and a
    /// working directory and user in place of the image's.
    pub fn with_box_defaults(
        mut self,
        env: &[(String, String)],
        working_dir: Option<String>,
        user: Option<String>,
    ) -> Self {
        for (k, v) in env {
            let prefix = format!("{k}=");
            self.env.retain(|kv| !kv.starts_with(&prefix) && kv != k);
            self.env.push(format!("{k}={v}"));
        }
        if let Some(d) = working_dir {
            self.working_dir = d;
        }
        if let Some(u) = user {
            self.user = u;
        }
        self
    }
}

/// A pulled image: what the store records about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub reference: String,
    /// Digest of the platform manifest (what a box's image is pinned to).
    pub manifest_digest: String,
    /// Digest of the multi-platform index the manifest was chosen from, if any.
    #[serde(default)]
    pub index_digest: Option<String>,
    pub config_digest: String,
    pub layers: Vec<Layer>,
    pub config: RunConfig,
    /// Compressed size of all layers.
    pub size: u64,
    pub created: Option<String>,
}

impl ImageRecord {
    /// A record for the canonical `reference`, its size being the layers'.
    pub fn new(
        reference: String,
        manifest_digest: String,
        index_digest: Option<String>,
        config_digest: String,
        layers: Vec<Layer>,
        (config, created): (RunConfig, Option<String>),
    ) -> Self {
        ImageRecord {
            reference,
            manifest_digest,
            index_digest,
            config_digest,
            size: layers.iter().map(|l| l.size).sum(),
            layers,
            config,
            created,
        }
    }
}

/// Which builder makes bases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageBuilder {
    /// On the host where `mke2fs` reads tar streams, else in a builder VM.
    #[default]
    Auto,
    /// On the host only; an error names what to install when it cannot.
    Host,
    /// In a builder VM always.
    Vm,
}

impl ImageBuilder {
    /// `BOXLITE_IMAGE_BUILDER` (`auto`, `host` or `vm`), else `auto`.
    pub fn from_env() -> Result<Self, InvalidImageBuilder> {
        match std::env::var("BOXLITE_IMAGE_BUILDER").ok().as_deref() {
            None | Some("" | "auto") => Ok(ImageBuilder::Auto),
            Some("host") => Ok(ImageBuilder::Host),
            Some("vm") => Ok(ImageBuilder::Vm),
            Some(other) => Err(InvalidImageBuilder(other.to_string())),
        }
    }
}

/// `BOXLITE_IMAGE_BUILDER` holds something else than `auto`, `host` or `vm`.
#[derive(Debug, thiserror::Error)]
#[error("invalid BOXLITE_IMAGE_BUILDER {0:?}; valid values are auto, host and vm")]
pub struct InvalidImageBuilder(pub String);

/// What a build did.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    /// Where the base was built: `host` (`mke2fs`) or `vm` (a builder VM).
    pub builder: String,
    pub layers: usize,
    /// Entries and bytes the layers unpacked.
    pub entries: u64,
    pub bytes: u64,
    /// The finished base's size.
    pub base_size: u64,
    /// Reading the layers' headers into the final tree.
    pub plan_ms: u64,
    /// Booting the builder VM (0 on the host).
    pub boot_ms: u64,
    /// Writing the tree into the filesystem.
    pub apply_ms: u64,
    pub finish_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunConfig {
        RunConfig {
            entrypoint: Some(vec!["/entry".into(), "-x".into()]),
            cmd: Some(vec!["serve".into()]),
            ..RunConfig::default()
        }
    }

    #[test]
    fn default_command_is_entrypoint_plus_args_or_cmd() {
        assert_eq!(run().argv(&[]), ["/entry", "-x", "serve"]);
        assert_eq!(run().argv(&["other".into()]), ["/entry", "-x", "other"]);
        let bare = RunConfig::default();
        assert!(bare.argv(&[]).is_empty());
        assert_eq!(bare.argv(&["sh".into()]), ["sh"]);
    }

    #[test]
    fn an_entrypoint_override_drops_cmd_and_a_cmd_override_replaces_it() {
        let image = RunConfig {
            env: vec!["PATH=/usr/bin".into(), "KEEP=1".into()],
            user: "app".into(),
            working_dir: "/srv".into(),
            ..run()
        };
        let boxed = image.with_box_defaults(
            &[
                ("PATH".into(), "/opt/bin".into()),
                ("NEW".into(), "1".into()),
            ],
            Some("/work".into()),
            None,
        );
        assert_eq!(boxed.env, ["KEEP=1", "PATH=/opt/bin", "NEW=1"], "{boxed:?}");
        assert_eq!(boxed.working_dir, "/work");
        assert_eq!(boxed.user, "app", "no user given: the image's stays");
        let ep = run().with_overrides(Some(vec!["/bin/sh".into()]), None);
        let cleared = run().with_overrides(Some(Vec::new()), None);
        let cmd = run().with_overrides(None, Some(vec!["work".into()]));
        let both = run().with_overrides(Some(vec!["env".into()]), Some(vec!["-i".into()]));

        assert_eq!(ep.argv(&[]), ["/bin/sh"]);
        assert!(cleared.argv(&[]).is_empty());
        assert_eq!(cmd.argv(&[]), ["/entry", "-x", "work"]);
        assert_eq!(both.argv(&[]), ["env", "-i"]);
    }
}
