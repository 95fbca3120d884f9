//! The command line's shape: every subcommand and flag, parsed by clap.

use std::path::PathBuf;

use anyhow::Result;
use boxlite::{BoxOptions, HealthOptions};
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "boxlite", version, about = "Run OCI images in lightweight VMs")]
pub(crate) struct Cli {
    /// Log to stderr at debug level.
    #[arg(long, global = true)]
    pub(crate) debug: bool,
    /// The boxlite home directory (default: $BOXLITE_HOME, else ~/.boxlite).
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,
    /// Registry settings file (default: BOXLITE_HOME/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Run box commands against a boxlite server (`boxlite serve`) at this http(s) URL
    /// instead of a local home. The API key comes from BOXLITE_API_KEY only.
    #[arg(long, global = true, value_name = "URL", env = "BOXLITE_URL")]
    pub(crate) url: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Args, Debug)]
pub(crate) struct ExecArgs {
    /// Keep stdin open and forward it to the command.
    #[arg(short, long)]
    pub(crate) interactive: bool,
    /// Run the command on a terminal in the box. With -i, the local terminal is put in
    /// raw mode and its size follows the window.
    #[arg(short, long)]
    pub(crate) tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Working directory inside the box.
    #[arg(short, long = "workdir", value_name = "DIR")]
    pub(crate) workdir: Option<String>,
    /// Run as name|uid[:group|gid], resolved in the image like `docker exec --user`.
    #[arg(short, long, value_name = "USER")]
    pub(crate) user: Option<String>,
    /// Kill the command (its whole process group) after SECS seconds, enforced inside
    /// the box; boxlite then exits with 124, as coreutils `timeout` does.
    #[arg(long, value_name = "SECS")]
    pub(crate) timeout: Option<f64>,
}

#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    /// A unique name for the box, usable wherever a box id is.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Remove the box as soon as it stops, however it stops.
    #[arg(long)]
    pub(crate) rm: bool,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512)]
    pub(crate) memory: u32,
    /// Number of virtual CPUs.
    #[arg(long, default_value_t = 2)]
    pub(crate) cpus: u32,
    /// Seconds between agent health pings while the box runs; 0 turns them off.
    #[arg(long, value_name = "SECS", default_value_t = HealthOptions::default().interval_secs)]
    pub(crate) health_interval: u32,
    /// Seconds a health ping may take.
    #[arg(long, value_name = "SECS", default_value_t = HealthOptions::default().timeout_secs)]
    pub(crate) health_timeout: u32,
    /// Consecutive failed pings before the box is marked unhealthy.
    #[arg(long, value_name = "N", default_value_t = HealthOptions::default().retries)]
    pub(crate) health_retries: u32,
    /// Mount a managed volume: /guest/path (a new anonymous volume, removed with the
    /// box) or NAME:/guest/path[:ro] (a named volume, created on first use). Host
    /// directories cannot be mounted; use `boxlite cp`.
    #[arg(short = 'v', long = "volume", value_name = "SPEC")]
    pub(crate) volumes: Vec<String>,
    /// Root disk size (MiB, or with K, M, G or T), at least the image's (the default).
    /// The filesystem grows at first boot; the disk file only by what is written.
    #[arg(long, value_name = "SIZE")]
    pub(crate) disk_size: Option<String>,
    /// Replace the image's entrypoint with this program ("" for none); the image's
    /// default command is dropped with it, as in Docker.
    #[arg(long, value_name = "PROGRAM")]
    pub(crate) entrypoint: Option<String>,
    /// The box's network: on by default; `none` gives it no network device at all.
    #[arg(long, value_name = "MODE", value_parser = ["none", "default", "bridge"])]
    pub(crate) network: Option<String>,
    /// Publish a box port on the host: [HOST_IP:]HOST_PORT:BOX_PORT[/tcp|/udp], bound to
    /// 127.0.0.1 unless an address is written out. Repeatable.
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub(crate) publish: Vec<String>,
    /// Add a name to the box's DNS: NAME:IP, or NAME:host-gateway for the host. The name
    /// still needs a rule to be reachable, like any other. Repeatable.
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub(crate) add_host: Vec<String>,
    /// Allow egress to RULE (a name, *.name, an IP, a CIDR, or a group: public, private,
    /// loopback, link-local, metadata, host; optionally :PORT or :LOW-HIGH and /tcp or
    /// /udp). One allow rule switches the box to allow-list mode. Repeatable.
    #[arg(long = "allow-net", value_name = "RULE")]
    pub(crate) allow_net: Vec<String>,
    /// Deny egress to RULE (same syntax); a deny beats any allow. Repeatable.
    #[arg(long = "deny-net", value_name = "RULE")]
    pub(crate) deny_net: Vec<String>,
    /// A secret the box uses without holding it: NAME@HOST[,HOST...] takes the value from
    /// this command's environment variable NAME, NAME=ENVVAR@HOST[,HOST...] from ENVVAR
    /// (read again at every start; never a value on the command line). The box sees a
    /// placeholder as $NAME and $BOXLITE_SECRET_<NAME>; the value replaces it on HTTPS
    /// requests to the hosts (api.example.com or *.example.com) only. Repeatable.
    #[arg(long = "secret", value_name = "NAME[=ENVVAR]@HOSTS")]
    pub(crate) secret: Vec<String>,
    /// Also substitute secret NAME in request bodies (off by default: servers echo
    /// bodies). Repeatable.
    #[arg(long = "secret-body", value_name = "NAME")]
    pub(crate) secret_body: Vec<String>,
    /// Boot the kernel even when the image has a warm-start template, and leave none.
    #[arg(long = "no-warm-start")]
    pub(crate) no_warm_start: bool,
    /// Give every command of the box this Linux capability on top of Docker's default
    /// set (CAP_ prefix optional, any case; ALL for all). Repeatable.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub(crate) cap_add: Vec<String>,
    /// Take this capability out of the default set (ALL: all of them). Repeatable.
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub(crate) cap_drop: Vec<String>,
    /// Give every command every capability (for Docker inside a box): root in the box
    /// can then mount, load modules and reach every device of the VM.
    #[arg(long)]
    pub(crate) privileged: bool,
    /// Set a label on the box: KEY=VALUE (or KEY, with an empty value). Repeatable;
    /// shown by inspect, matched by ls --filter label=KEY[=VALUE].
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// Pause the box after this long without an exec, attach or copy (seconds, or 90s,
    /// 5m, 1h; 0 or off: never). The next command that needs it resumes it. Default:
    /// $BOXLITE_AUTO_PAUSE, else never.
    #[arg(long = "auto-pause", value_name = "DURATION")]
    pub(crate) auto_pause: Option<String>,
}

/// `--secret NAME@HOST[,HOST...]` or `NAME=ENVVAR@HOST[,HOST...]`: a secret whose value
/// is an environment variable of this command (NAME, or ENVVAR). Nothing of the spec is
/// ever a value, so a spec that does not parse is quoted only when it cannot be one.
pub(crate) fn parse_secret(spec: &str) -> Result<boxlite::Secret> {
    const FORM: &str = "expected NAME@HOST[,HOST...] or NAME=ENVVAR@HOST[,HOST...]; the value \
        comes from the environment variable NAME (or ENVVAR), never from the command line";
    let Some((who, hosts)) = spec.split_once('@') else {
        anyhow::bail!("invalid --secret: no '@' before the hosts; {FORM}");
    };
    let (name, var) = match who.split_once('=') {
        Some((name, var)) => (name, var),
        None => (who, who),
    };
    if !env_name(name) {
        anyhow::bail!(
            "invalid --secret: the secret's name must be an environment variable name \
             (letters, digits and _, not starting with a digit); {FORM}"
        );
    }
    if !env_name(var) {
        anyhow::bail!(
            "invalid --secret {name}: ENVVAR must be an environment variable name (letters, \
             digits and _, not starting with a digit); {FORM}"
        );
    }
    let hosts: Vec<&str> = hosts.split(',').map(str::trim).collect();
    if hosts.iter().any(|h| h.is_empty()) {
        anyhow::bail!(
            "invalid --secret {name}: a host is empty; name the hosts the value may be sent \
             to after '@', comma-separated (api.example.com or *.example.com)"
        );
    }
    Ok(boxlite::Secret::from_env(name, var, hosts))
}

fn env_name(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| !b.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl CreateArgs {
    /// The box options these flags ask for; `cmd` replaces the image's default command.
    pub(crate) fn options(&self, image: &str, cmd: &[String]) -> Result<BoxOptions> {
        let mut o = BoxOptions::new(image)
            .warm_start(!self.no_warm_start)
            .memory_mib(self.memory)
            .cpus(self.cpus)
            .auto_remove(self.rm)
            .privileged(self.privileged)
            .health(HealthOptions {
                interval_secs: self.health_interval,
                timeout_secs: self.health_timeout,
                retries: self.health_retries,
            });
        if let Some(n) = &self.name {
            o = o.name(n);
        }
        o.cap_add.clone_from(&self.cap_add);
        o.cap_drop.clone_from(&self.cap_drop);
        for l in &self.labels {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            o = o.label(k, v);
        }
        boxlite::litebox::validate_labels(&o.labels)?;
        if let Some(a) = &self.auto_pause {
            o.auto_pause_secs = Some(boxlite::parse_auto_pause("--auto-pause", a)?);
        }
        // Parse every spec before anything is created.
        for v in &self.volumes {
            o = o.volume(boxlite::VolumeSpec::parse(v)?);
        }
        if let Some(d) = &self.disk_size {
            o = o.disk_size_mib(crate::images::parse_size_mib(d)?);
        }
        if let Some(e) = &self.entrypoint {
            o.entrypoint = Some(if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            });
        }
        if !cmd.is_empty() {
            o.cmd = Some(cmd.to_vec());
        }
        let mut net = if self.network.as_deref() == Some("none") {
            boxlite::model::NetworkSpec::none()
        } else {
            boxlite::model::NetworkSpec::default()
        };
        for p in &self.publish {
            net.ports.push(boxlite::model::PortSpec::parse(p)?);
        }
        for h in &self.add_host {
            net.hosts.push(boxlite::model::HostSpec::parse(h)?);
        }
        net.allow = self.allow_net.clone();
        net.deny = self.deny_net.clone();
        net.validate()?;
        o.network = net;
        for spec in &self.secret {
            o = o.secret(parse_secret(spec)?);
        }
        for name in &self.secret_body {
            let Some(s) = o.secrets.iter_mut().find(|s| s.name == *name) else {
                anyhow::bail!("--secret-body {name}: no --secret is named {name}");
            };
            s.body = true;
        }
        Ok(o)
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create and start a box from an image and run a command in it. In the foreground
    /// the box stops when the command ends; with -d it keeps running and its id is
    /// printed.
    Run {
        #[command(flatten)]
        exec: ExecArgs,
        #[command(flatten)]
        create: CreateArgs,
        /// Detach: leave the box running and print its id.
        #[arg(short, long)]
        detach: bool,
        /// Image reference, for example boxlite/busybox or python:3.12-slim; pulled if
        /// it is not in the local store.
        image: String,
        /// Command and arguments, after the image's entrypoint (default: the image's
        /// command).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Pull images from their registries and build their root filesystems.
    Pull {
        /// No progress output.
        #[arg(short, long)]
        quiet: bool,
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// List images in the local store.
    Images {
        /// Print only references.
        #[arg(short, long)]
        quiet: bool,
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Remove images (by reference or digest prefix). Refused while a box uses one,
    /// unless forced.
    Rmi {
        /// Remove the reference even if boxes use the image; its files go with the last
        /// such box.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Manage images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Import images from an OCI layout directory, an OCI archive or a `docker save`
    /// archive.
    Load {
        /// The directory or archive.
        #[arg(short, long, value_name = "PATH")]
        input: String,
        /// Name the image (needed when the input does not name it).
        #[arg(short, long, value_name = "REFERENCE")]
        tag: Option<String>,
    },
    /// Save credentials for a registry. The secret is read from stdin (typed without
    /// echo on a terminal), never from the command line.
    Login {
        /// User name; the password is read from stdin.
        #[arg(short, long)]
        username: Option<String>,
        /// Read a bearer token from stdin instead of a password.
        #[arg(long)]
        token: bool,
        /// Registry host, for example docker.io, ghcr.io or 127.0.0.1:5000.
        registry: String,
    },
    /// Forget the saved credentials of a registry.
    Logout { registry: String },
    /// Run a command in an existing box, starting it if it is stopped.
    Exec {
        #[command(flatten)]
        exec: ExecArgs,
        /// Start the command and print its execution id instead of waiting; `boxlite
        /// attach` picks it up later.
        #[arg(short, long, conflicts_with = "interactive")]
        detach: bool,
        #[arg(value_name = "BOX")]
        id: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Attach to an execution by id: print its remaining output and exit with its code.
    Attach {
        #[arg(value_name = "BOX")]
        id: String,
        #[arg(value_name = "EXEC_ID")]
        exec_id: String,
    },
    /// Create a box without starting it, and print its id.
    Create {
        #[command(flatten)]
        create: CreateArgs,
        image: String,
    },
    /// Start boxes.
    Start {
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Stop boxes: shut the guest down cleanly, then end the VM after the timeout.
    Stop {
        /// Seconds to wait for a clean shutdown before killing the VM.
        #[arg(short = 't', long = "time", default_value_t = 10)]
        timeout: u64,
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Pause boxes: save each one's memory and device state in its directory and end its
    /// VM. A paused box uses no CPU or memory and survives a host reboot; `resume`, `start`,
    /// `exec` or `attach` continues it where it was.
    Pause {
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Resume paused boxes: processes, executions and files in memory are as they were.
    Resume {
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Snapshots of a box: its memory and disk (running), its saved state and disk
    /// (paused), or its disk (stopped, or with --disk-only).
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// New boxes from a box's present state or one of its snapshots (BOX@SNAPSHOT). With
    /// memory (a running or paused box, a memory snapshot) they run at once where the
    /// source was, each with its own disk, id, hostname, network and random seed;
    /// otherwise they are created stopped. Prints their ids.
    Clone {
        /// BOX or BOX@SNAPSHOT.
        #[arg(value_name = "BOX[@SNAPSHOT]")]
        source: String,
        /// The clone's name (NAME-1, NAME-2, ... with -n).
        #[arg(long)]
        name: Option<String>,
        /// How many clones.
        #[arg(short = 'n', long = "count", default_value_t = 1)]
        count: usize,
    },
    /// Stop and start boxes.
    Restart {
        #[arg(short = 't', long = "time", default_value_t = 10)]
        timeout: u64,
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Remove boxes.
    Rm {
        /// Remove running boxes too, killing their VMs.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// List boxes (running ones unless -a).
    #[command(alias = "ps")]
    Ls {
        /// Show every box, not only running ones.
        #[arg(short, long)]
        all: bool,
        /// Print only ids.
        #[arg(short, long)]
        quiet: bool,
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
        /// Only boxes matching: label=KEY (has the label) or label=KEY=VALUE.
        /// Repeatable; every filter must match.
        #[arg(short, long = "filter", value_name = "FILTER")]
        filter: Vec<String>,
    },
    /// List a box's published ports as bound (HOST -> BOX/PROTO).
    Port {
        #[arg(value_name = "BOX")]
        id: String,
    },
    /// A box's network: the egress decisions its policy made.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Show boxes as JSON.
    Inspect {
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Show a box's console log (kernel and boot messages).
    Logs {
        /// Keep printing as the log grows, until the box stops.
        #[arg(short, long)]
        follow: bool,
        #[arg(value_name = "BOX")]
        id: String,
    },
    /// Copy files between the host and a box: `cp HOST BOX:PATH`, `cp BOX:PATH HOST`,
    /// `cp - BOX:DIR` (a tar on stdin), `cp BOX:PATH -` (a tar on stdout). A source
    /// ending in `/.` copies a directory's contents. A box that is stopped is started.
    Cp {
        /// Follow symlinks in the source instead of copying them as links.
        #[arg(short = 'L', long = "follow-link")]
        follow_link: bool,
        /// Fail instead of replacing files that exist at the destination.
        #[arg(long)]
        no_overwrite: bool,
        /// Source: a host path, BOX:PATH, or -.
        src: String,
        /// Destination: a host path, BOX:PATH, or -.
        dst: String,
    },
    /// Show live CPU, memory, disk and exec figures of running boxes (or the named ones).
    Stats {
        /// Print one snapshot and exit.
        #[arg(long)]
        no_stream: bool,
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
        #[arg(value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Manage volumes.
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// Serve BoxLite's REST API (base path /v1) over this home. The API key comes from
    /// BOXLITE_API_KEY or --api-key-file, never the command line; without one, only a
    /// loopback address is served.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Port to listen on.
        #[arg(long, default_value_t = 8100)]
        port: u16,
        /// A file holding the API key (its surrounding white space is ignored).
        #[arg(long)]
        api_key_file: Option<std::path::PathBuf>,
    },
    /// Serve boxes as Model Context Protocol tools: over stdin/stdout (the default, for
    /// a client that starts this command), or over streamable HTTP at /mcp with --http.
    /// Boxes a session creates are removed when it ends, unless --keep-boxes.
    Mcp {
        #[command(flatten)]
        flags: McpFlags,
    },
    /// Show the accelerator, QEMU, kernel and asset paths.
    Info {
        /// Output format: text or json.
        #[arg(long, default_value = "text")]
        format: String,
    },
}

/// `boxlite mcp`'s flags; `crate::mcp` turns them into the server's configuration.
#[derive(clap::Args, Debug)]
pub(crate) struct McpFlags {
    /// Serve streamable HTTP on [HOST:]PORT (host default 127.0.0.1) instead of
    /// stdio. Off loopback an API key is required (BOXLITE_API_KEY or
    /// --api-key-file), as for serve.
    #[arg(long, value_name = "[HOST:]PORT")]
    pub(crate) http: Option<String>,
    /// A file holding the API key for --http (its surrounding white space is ignored).
    #[arg(long, requires = "http")]
    pub(crate) api_key_file: Option<std::path::PathBuf>,
    /// Keep the boxes a session created when it ends.
    #[arg(long)]
    pub(crate) keep_boxes: bool,
    /// Let the tools reach every box of this home, not only those created through MCP.
    #[arg(long)]
    pub(crate) all_boxes: bool,
    /// The most bytes of stdout and of stderr a command returns (the middle of longer
    /// output is dropped, with a note of how much).
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub(crate) max_output: usize,
    /// The largest file write_file and read_file move (e.g. 8M).
    #[arg(long, value_name = "SIZE", default_value = "8M")]
    pub(crate) max_file_size: String,
    /// Default timeout of exec and run_code, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub(crate) exec_timeout: u64,
    /// The most boxes one session may have at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub(crate) max_boxes: usize,
    /// The image run_code creates its box from.
    #[arg(long, value_name = "IMAGE", default_value = "boxlite/python")]
    pub(crate) code_image: String,
    /// The most memory (MiB) and vCPUs create_box gives a box.
    #[arg(long, value_name = "MIB", default_value_t = 4096)]
    pub(crate) max_memory: u32,
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub(crate) max_cpus: u32,
    /// Let allow_net rules open private ranges, loopback, link-local, cloud metadata
    /// and the host, which MCP boxes never reach otherwise.
    #[arg(long)]
    pub(crate) allow_private_net: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ImageCommand {
    /// List images (as `boxlite images`).
    Ls {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Remove images (as `boxlite rmi`).
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Remove root filesystems and blobs that no image reference and no box uses, and
    /// the warm-start templates of images that are gone.
    Prune,
    /// List the warm-start templates (one per image, CPU count, memory size, disk size
    /// and network; made by an image's first box).
    Templates {
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SnapshotCommand {
    /// Take a snapshot (named snap-<time> unless NAME is given) and print its name.
    Create {
        #[arg(value_name = "BOX")]
        id: String,
        name: Option<String>,
        /// The disk only, even of a running box.
        #[arg(long)]
        disk_only: bool,
    },
    /// List a box's snapshots.
    Ls {
        #[arg(value_name = "BOX")]
        id: String,
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Remove snapshots.
    Rm {
        #[arg(value_name = "BOX")]
        id: String,
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Put a stopped or paused box back to a snapshot: its disk, and its memory for a
    /// memory snapshot (the box is then paused; start, exec or resume continues it).
    Restore {
        #[arg(value_name = "BOX")]
        id: String,
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum NetworkCommand {
    /// Show the decisions of a box's egress policy, oldest first: what was allowed or
    /// refused, the destination, and the rule or default that decided.
    Log {
        /// Only refusals.
        #[arg(long)]
        denied: bool,
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
        #[arg(value_name = "BOX")]
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum VolumeCommand {
    /// Create a named volume (nothing happens if it exists).
    Create { name: String },
    /// List volumes.
    Ls {
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Show volumes as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes and their contents.
    Rm {
        /// Remove even if a box uses it.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxlite::SecretSource;

    fn create_args(args: &[&str]) -> CreateArgs {
        let mut all = vec!["boxlite", "create"];
        all.extend_from_slice(args);
        all.push("img");
        match Cli::parse_from(all).command {
            Command::Create { create, .. } => create,
            _ => unreachable!(),
        }
    }

    #[test]
    fn secret_flags_name_an_environment_variable_and_hosts() {
        let o = create_args(&[
            "--secret",
            "OPENAI_KEY@api.openai.com",
            "--secret",
            "gh=GITHUB_TOKEN@api.github.com, *.githubusercontent.com",
            "--secret-body",
            "gh",
        ])
        .options("img", &[])
        .unwrap();

        let s = &o.secrets;
        assert_eq!(s.len(), 2);
        assert_eq!(
            (&s[0].name, &s[0].source, &s[0].hosts, s[0].body),
            (
                &"OPENAI_KEY".to_string(),
                &SecretSource::Env("OPENAI_KEY".into()),
                &vec!["api.openai.com".to_string()],
                false
            )
        );
        assert_eq!(
            (&s[1].name, &s[1].source, &s[1].hosts, s[1].body),
            (
                &"gh".to_string(),
                &SecretSource::Env("GITHUB_TOKEN".into()),
                &vec![
                    "api.github.com".to_string(),
                    "*.githubusercontent.com".to_string()
                ],
                true
            )
        );
    }

    #[test]
    fn malformed_secret_flags_are_refused_without_quoting_what_could_be_a_value() {
        let cases = [
            (&["--secret", "KEY"][..], "no '@'"),
            (&["--secret", "KEY@"], "a host is empty"),
            (&["--secret", "KEY@a.test,"], "a host is empty"),
            (&["--secret", "KEY=sk-live-123@a.test"], "ENVVAR must be"),
            (&["--secret", "sk-live-123@a.test"], "secret's name must be"),
            (
                &["--secret", "K@a.test", "--secret-body", "OTHER"],
                "no --secret is named OTHER",
            ),
        ];
        for (flags, want) in cases {
            let e = create_args(flags)
                .options("img", &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{flags:?}: {e}");
            assert!(!e.contains("sk-live"), "{flags:?}: {e}");
        }
    }
}
