//! The tools. Each is a thin call into the library; what goes wrong comes back as a
//! tool error (`isError`) carrying the library's message and error code, never as a
//! protocol failure, so the model reads it and can act on it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use boxlite::{BoxCommand, BoxInfo, BoxOptions, ExitStatus, LiteBox};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::{ToolCallContext, schema_for_output};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ProtocolVersion, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::output::Capped;
use crate::session::{Session, Shared};

/// The longest timeout a call may ask for (an HTTP session idles out after twice that).
pub const MAX_TIMEOUT_SECS: u64 = 3600;
/// How long the host waits past a command's own timeout (which the guest enforces)
/// before it gives up on the box answering.
const HOST_MARGIN: Duration = Duration::from_secs(30);
/// How long output may keep flowing after the command exited: a process it left in
/// the background (a server started with `&`) may hold its stdout open for good.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Egress a box made through MCP never gets, whatever its rules say: a deny beats any
/// allow, a name that resolves there included (`--allow-private-net` lifts it).
pub const DENIED_GROUPS: [&str; 5] = ["private", "loopback", "link-local", "metadata", "host"];
/// Entries `list_files` returns unless asked, and at most.
const DEFAULT_ENTRIES: u32 = 1000;
const MAX_ENTRIES: u32 = 10_000;

const INSTRUCTIONS: &str = "boxlite runs commands in hardware-isolated micro-VMs (boxes). \
Typical use: run_code to run Python or shell code (a box is created for you and reused), \
or create_box, then exec, write_file, read_file and list_files on it, then remove_box. \
Boxes created here are removed when this session ends unless the server keeps them. \
Every box has its own kernel, filesystem and network: the public internet by default \
(allow_net narrows it to what you list); private ranges, the host and cloud metadata are \
unreachable.";

/// The MCP handler of one session.
#[derive(Debug, Clone)]
pub struct BoxliteMcp {
    session: Arc<Session>,
    tool_router: ToolRouter<Self>,
}

type ToolResult = Result<CallToolResult, String>;

/// A failure as the model reads it: the library's error code and its message.
fn fail(e: &boxlite::Error) -> String {
    format!("{}: {}", e.kind().code(), boxlite::error_chain(e))
}

/// A result with its structured value and a text for the model (the JSON itself
/// unless `text` says otherwise).
fn done<T: Serialize>(value: &T, text: Option<String>) -> ToolResult {
    let v = serde_json::to_value(value).map_err(|e| format!("internal: {e}"))?;
    let mut r = CallToolResult::structured(v);
    if let Some(t) = text {
        r.content = vec![ContentBlock::text(t)];
    }
    Ok(r)
}

/// What a lifecycle tool did to a box.
fn box_done(b: &LiteBox, what: &str) -> ToolResult {
    done(
        &BoxDone {
            box_id: b.id().to_string(),
            done: what.to_string(),
        },
        None,
    )
}

fn state(i: &BoxInfo) -> String {
    format!("{:?}", i.state).to_lowercase()
}

/// Whether an allow rule names what boxes made here never reach: one of
/// [`DENIED_GROUPS`], or an address outside the public internet.
fn names_denied_group(rule: &str) -> bool {
    let dest = rule.split([':', '/']).next().unwrap_or_default();
    if DENIED_GROUPS.iter().any(|g| g.eq_ignore_ascii_case(dest)) {
        return true;
    }
    dest.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| {
        let [a, b, ..] = ip.octets();
        ip.is_private()
            || ip.is_loopback()
            || ip.is_link_local()
            || ip.is_unspecified()
            || ip.is_broadcast()
            || ip.is_multicast()
            || a == 0
            || (a == 100 && (64..128).contains(&b))
    })
}

fn timeout(secs: Option<u64>, default: Duration) -> Result<Duration, String> {
    match secs {
        None | Some(0) => Ok(default),
        Some(s) if s > MAX_TIMEOUT_SECS => Err(format!(
            "invalid_argument: timeout_secs {s} is too long; at most {MAX_TIMEOUT_SECS}"
        )),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

// ---- parameters and results ----

/// A box's network.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A network under the egress policy (the default).
    Default,
    /// No network device at all.
    None,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBoxParams {
    /// OCI image reference (pulled if needed), e.g. `python:3.12-slim`, or a built-in:
    /// `boxlite/python` (Debian with Python 3, the default) or `boxlite/busybox`.
    #[serde(default)]
    pub image: Option<String>,
    /// A unique name to address the box by instead of its id.
    #[serde(default)]
    pub name: Option<String>,
    /// Guest memory in MiB (64-65536; default 512).
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Virtual CPUs (1-64; default 2).
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Environment variables for every command in the box.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Default working directory of the box's commands.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Default user of the box's commands: `name|uid[:group|gid]`.
    #[serde(default)]
    pub user: Option<String>,
    /// `default` (egress policy: public internet allowed; private ranges, the host and
    /// cloud metadata denied) or `none` (no network).
    #[serde(default)]
    pub network: Option<NetworkMode>,
    /// Egress allow rules: a name, `*.name`, an IP or a CIDR, with an optional `:PORT`
    /// (e.g. `pypi.org`, `*.github.com:443`). One rule switches the box to allow-list
    /// mode. Private ranges, the host and cloud metadata stay unreachable.
    #[serde(default)]
    pub allow_net: Vec<String>,
    /// Egress deny rules, same syntax; a deny beats any allow.
    #[serde(default)]
    pub deny_net: Vec<String>,
    /// Volumes: `/guest/path` (a fresh volume for this box, removed with it). Host
    /// directories are never mounted; named volumes shared with other boxes
    /// (`NAME:/guest/path[:ro]`) only when the server allows every box.
    #[serde(default)]
    pub volumes: Vec<String>,
}

/// A box, as the tools that make one return it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BoxSummary {
    pub box_id: String,
    pub name: Option<String>,
    pub image: String,
    /// configured, starting, running, paused, stopped, failed, ...
    pub state: String,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// Whether this MCP session created it (and removes it when it ends).
    pub this_session: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct BoxList {
    pub boxes: Vec<BoxSummary>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BoxParam {
    /// The box: its id, a unique id prefix, or its name.
    #[serde(rename = "box")]
    pub key: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopParams {
    /// The box: its id, a unique id prefix, or its name.
    #[serde(rename = "box")]
    pub key: String,
    /// Seconds to wait for a clean shutdown before the VM is killed (default 10).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveParams {
    /// The box: its id, a unique id prefix, or its name.
    #[serde(rename = "box")]
    pub key: String,
    /// Remove a running box too, stopping it first (default true).
    #[serde(default)]
    pub force: Option<bool>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct BoxDone {
    pub box_id: String,
    /// What was done: stopped, started, removed, paused, resumed.
    pub done: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecParams {
    /// The box: its id, a unique id prefix, or its name.
    #[serde(rename = "box")]
    pub key: String,
    /// The program to run, found on the box's PATH (no shell: for pipes and
    /// redirections run `sh` with args `["-c", "..."]`).
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Text given to the command on stdin (then closed).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Working directory (absolute; default the box's).
    #[serde(default)]
    pub working_dir: Option<String>,
    /// User: `name|uid[:group|gid]` (default the box's).
    #[serde(default)]
    pub user: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Kill the command after this many seconds (default the server's, 300).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// Languages `run_code` runs.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Python 3 (`python3`).
    #[serde(alias = "python3", alias = "py")]
    Python,
    /// POSIX shell (`sh`).
    #[serde(alias = "sh")]
    Shell,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCodeParams {
    /// `python` or `shell`.
    pub language: Language,
    /// The program's source.
    pub code: String,
    /// The box to run in. Default: this session's code box, created from
    /// `boxlite/python` on first use and reused.
    #[serde(default, rename = "box")]
    pub key: Option<String>,
    /// Text given to the program on stdin.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Kill the program after this many seconds (default the server's, 300).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// What a command did.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ExecResult {
    pub box_id: String,
    /// The exit code; null when the command was killed (by a signal, its timeout or the
    /// out-of-memory killer).
    pub exit_code: Option<i32>,
    /// How it ended, in words: "exited with code 0", "killed by signal 9", ...
    pub status: String,
    /// Whether it was killed because its timeout expired.
    pub timed_out: bool,
    /// Its output (capped: see `stdout_dropped_bytes`).
    pub stdout: String,
    pub stderr: String,
    /// Bytes written in all to stdout and stderr.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Bytes of each stream dropped from the middle of the output (0: it is whole).
    pub stdout_dropped_bytes: u64,
    pub stderr_dropped_bytes: u64,
    /// The command exited but a process it left behind (a server started with `&`)
    /// still holds its output open: that process keeps running, and output it writes
    /// after the exit is not collected.
    pub output_left_open: bool,
}

/// How file content is written in a call.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// UTF-8 text.
    Text,
    /// Base64 (standard alphabet), for binary content.
    Base64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFileParams {
    /// The box: its id, a unique id prefix, or its name.
    #[serde(rename = "box")]
    pub key: String,
    /// Absolute path of the file in the box; an existing file is replaced.
    pub path: String,
    /// The content, as `encoding` says.
    pub content: String,
    /// `text` (default) or `base64`.
    #[serde(default)]
    pub encoding: Option<Encoding>,
    /// Permission bits in octal (default "644").
    #[serde(default)]
    pub mode: Option<String>,
    /// Create missing parent directories (default true).
    #[serde(default)]
    pub create_dirs: Option<bool>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct WriteFileResult {
    pub box_id: String,
    pub path: String,
    /// Bytes written.
    pub bytes: u64,
}

/// How `read_file` returns content.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReadEncoding {
    /// Text when the file is UTF-8, else base64 (the default).
    Auto,
    /// UTF-8 text; a file that is not is an error.
    Text,
    /// Base64, whatever the file holds.
    Base64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFileParams {
    /// The box: its id, a unique id prefix, or its name.
    #[serde(rename = "box")]
    pub key: String,
    /// Absolute path of a regular file in the box (links are followed in the box).
    pub path: String,
    /// `auto` (default), `text` or `base64`.
    #[serde(default)]
    pub encoding: Option<ReadEncoding>,
    /// Refuse a file larger than this many bytes (default and maximum: the server's
    /// limit, 8 MiB unless configured).
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ReadFileResult {
    pub box_id: String,
    pub path: String,
    /// The file's size in bytes.
    pub size: u64,
    /// `text` or `base64`: how `content` is written.
    pub encoding: Encoding,
    pub content: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListFilesParams {
    /// The box: its id, a unique id prefix, or its name.
    #[serde(rename = "box")]
    pub key: String,
    /// Absolute path of a directory in the box (default "/").
    #[serde(default)]
    pub path: Option<String>,
    /// The most entries to return (default 1000, at most 10000).
    #[serde(default)]
    pub max_entries: Option<u32>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FileEntry {
    pub name: String,
    /// file, dir, symlink or other.
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    /// Permission bits in octal, e.g. "755".
    pub mode: String,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// A symbolic link's target (not followed).
    pub link_target: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListFilesResult {
    pub box_id: String,
    pub path: String,
    /// Sorted by name.
    pub entries: Vec<FileEntry>,
    /// Whether there were more entries than returned.
    pub truncated: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneParams {
    /// The box to clone: its id, a unique id prefix, or its name.
    #[serde(rename = "box")]
    pub key: String,
    /// The clone's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Clone this snapshot of the box instead of its present state.
    #[serde(default)]
    pub snapshot: Option<String>,
}

// ---- the tools ----

#[tool_router]
impl BoxliteMcp {
    pub fn new(shared: Arc<Shared>) -> BoxliteMcp {
        BoxliteMcp {
            session: Session::new(shared),
            tool_router: Self::tool_router(),
        }
    }

    /// This handler's session.
    pub fn session(&self) -> Arc<Session> {
        self.session.clone()
    }

    fn shared(&self) -> &Shared {
        self.session.shared()
    }

    /// A slot among this session's calls in flight and the server's, or a tool error
    /// when there is none: one session cannot take every slot of the server.
    fn permit(
        &self,
    ) -> Result<
        (
            tokio::sync::SemaphorePermit<'_>,
            tokio::sync::SemaphorePermit<'_>,
        ),
        String,
    > {
        let mine = self.session.calls.try_acquire().map_err(|_| {
            format!(
                "resource_exhausted: {} tool calls of this session are already running; wait for one to finish",
                self.session.max_calls()
            )
        })?;
        let all = self.shared().calls.try_acquire().map_err(|_| {
            format!(
                "resource_exhausted: {} tool calls are already running on this server; wait for one to finish",
                self.shared().cfg.max_concurrent_calls
            )
        })?;
        Ok((mine, all))
    }

    async fn get(&self, key: &str) -> Result<(LiteBox, BoxInfo), String> {
        self.session.get(key).await.map_err(|e| fail(&e))
    }

    fn summary(&self, i: &BoxInfo) -> BoxSummary {
        BoxSummary {
            box_id: i.id.clone(),
            name: i.name.clone(),
            image: i.image.clone(),
            state: state(i),
            created_at: boxlite::model::time::rfc3339(i.created_at),
            this_session: self.session.owns(&i.id),
        }
    }

    /// Create and start a box of the session's own from `opts`; nothing is left if it
    /// fails.
    async fn make_box(&self, mut opts: BoxOptions) -> Result<(LiteBox, BoxInfo), String> {
        let _room = self.session.reserve().await?;
        opts.labels = self.session.labels();
        if opts.network.enabled() && !self.shared().cfg.allow_private_net {
            opts.network
                .deny
                .extend(DENIED_GROUPS.iter().map(|g| g.to_string()));
        }
        let b = self.shared().rt.create(opts).await.map_err(|e| fail(&e))?;
        self.session.add(b.id());
        let started = b.start().await;
        // A session that ended while this box was made has already removed its boxes.
        if started.is_err() || self.session.is_ended() {
            self.session.forget(b.id());
            let _ = b.remove(true).await;
            return Err(match started {
                Err(e) => fail(&e),
                Ok(()) => {
                    "invalid_state: the session ended while the box was created; it was removed"
                        .into()
                }
            });
        }
        let info = b.info().await.map_err(|e| fail(&e))?;
        Ok((b, info))
    }

    #[tool(
        description = "Create and start a box (a micro-VM) from an OCI image. Returns its box_id, which the other tools take as `box`. Boxes created here are removed when the MCP session ends unless the server keeps them.",
        output_schema = schema_for_output::<BoxSummary>()
    )]
    async fn create_box(&self, Parameters(p): Parameters<CreateBoxParams>) -> ToolResult {
        let _slot = self.permit()?;
        let image = p
            .image
            .unwrap_or_else(|| self.shared().cfg.code_image.clone());
        let mut o = BoxOptions::new(image);
        if let Some(n) = p.name {
            o = o.name(n);
        }
        let cfg = &self.shared().cfg;
        if let Some(m) = p.memory_mib {
            if m > cfg.max_memory_mib {
                return Err(format!(
                    "invalid_argument: memory_mib {m} is over this server's limit of {} MiB",
                    cfg.max_memory_mib
                ));
            }
            o = o.memory_mib(m);
        }
        if let Some(c) = p.cpus {
            if c > cfg.max_cpus {
                return Err(format!(
                    "invalid_argument: cpus {c} is over this server's limit of {}",
                    cfg.max_cpus
                ));
            }
            o = o.cpus(c);
        }
        for (k, v) in p.env {
            o = o.env(k, v);
        }
        if let Some(d) = p.working_dir {
            o = o.working_dir(d);
        }
        if let Some(u) = p.user {
            o = o.user(u);
        }
        let mut net = if p.network == Some(NetworkMode::None) {
            boxlite::model::NetworkSpec::none()
        } else {
            boxlite::model::NetworkSpec::default()
        };
        if net.enabled()
            && !cfg.allow_private_net
            && let Some(r) = p.allow_net.iter().find(|r| names_denied_group(r))
        {
            return Err(format!(
                "invalid_argument: allow_net rule {r:?} opens what boxes made here never reach (private ranges, loopback, link-local, cloud metadata, the host); allow public names and addresses"
            ));
        }
        net.allow = p.allow_net;
        net.deny.extend(p.deny_net);
        o = o.network(net);
        for v in &p.volumes {
            let spec = boxlite::VolumeSpec::parse(v)
                .map_err(|e| format!("invalid_argument: volume {v:?}: {e}"))?;
            if !matches!(spec.source, boxlite::VolumeSource::Anonymous) && !cfg.all_boxes {
                return Err(format!(
                    "invalid_argument: volume {v:?} is a named volume, which other boxes may share; this server mounts only fresh volumes (/guest/path) unless started with --all-boxes"
                ));
            }
            o = o.volume(spec);
        }
        let (_, info) = self.make_box(o).await?;
        let s = self.summary(&info);
        done(&s, None)
    }

    #[tool(
        description = "List the boxes this server can reach (those created through MCP, or every box if the server allows it), in every state.",
        output_schema = schema_for_output::<BoxList>(),
        annotations(read_only_hint = true)
    )]
    async fn list_boxes(&self) -> ToolResult {
        let _slot = self.permit()?;
        let all = self.shared().rt.list().await.map_err(|e| fail(&e))?;
        let boxes = all
            .iter()
            .filter(|i| self.session.may_use(i))
            .map(|i| self.summary(i))
            .collect();
        done(&BoxList { boxes }, None)
    }

    #[tool(
        description = "Stop a running box (its disk is kept; start_box or exec starts it again).",
        output_schema = schema_for_output::<BoxDone>()
    )]
    async fn stop_box(&self, Parameters(p): Parameters<StopParams>) -> ToolResult {
        let _slot = self.permit()?;
        let t = timeout(p.timeout_secs, Duration::from_secs(10))?;
        let (b, _) = self.get(&p.key).await?;
        b.stop(t).await.map_err(|e| fail(&e))?;
        box_done(&b, "stopped")
    }

    #[tool(
        description = "Start a stopped box again, with its disk as it was left.",
        output_schema = schema_for_output::<BoxDone>()
    )]
    async fn start_box(&self, Parameters(p): Parameters<BoxParam>) -> ToolResult {
        let _slot = self.permit()?;
        let (b, _) = self.get(&p.key).await?;
        b.start().await.map_err(|e| fail(&e))?;
        box_done(&b, "started")
    }

    #[tool(
        description = "Remove a box and its disk (stopping it first unless force is false).",
        output_schema = schema_for_output::<BoxDone>(),
        annotations(destructive_hint = true)
    )]
    async fn remove_box(&self, Parameters(p): Parameters<RemoveParams>) -> ToolResult {
        let _slot = self.permit()?;
        let (b, _) = self.get(&p.key).await?;
        b.remove(p.force.unwrap_or(true))
            .await
            .map_err(|e| fail(&e))?;
        self.session.forget(b.id());
        let mut code = self.session.code_box.lock().await;
        if code.as_deref() == Some(b.id()) {
            *code = None;
        }
        box_done(&b, "removed")
    }

    #[tool(
        description = "Run a program in a box and wait for it: returns its exit code, stdout and stderr (each capped; what is dropped is counted and marked). No shell unless you run one: use command \"sh\" with args [\"-c\", \"...\"] for pipes.",
        output_schema = schema_for_output::<ExecResult>()
    )]
    async fn exec(
        &self,
        Parameters(p): Parameters<ExecParams>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let _slot = self.permit()?;
        let t = timeout(p.timeout_secs, self.shared().cfg.exec_timeout)?;
        let (b, _) = self.get(&p.key).await?;
        let mut cmd = BoxCommand::new(p.command).args(p.args).timeout(t);
        for (k, v) in p.env {
            cmd = cmd.env(k, v);
        }
        if let Some(d) = p.working_dir {
            cmd = cmd.working_dir(d);
        }
        if let Some(u) = p.user {
            cmd = cmd.user(u);
        }
        let r = self.run(&b, cmd, p.stdin, t, &ctx.ct).await?;
        let text = exec_text(&r);
        done(&r, Some(text))
    }

    #[tool(
        description = "Run Python or shell code and return its output. Without `box`, it runs in this session's code box (boxlite/python, created on first use and reused, so files and installed packages persist between calls).",
        output_schema = schema_for_output::<ExecResult>()
    )]
    async fn run_code(
        &self,
        Parameters(p): Parameters<RunCodeParams>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let _slot = self.permit()?;
        let t = timeout(p.timeout_secs, self.shared().cfg.exec_timeout)?;
        self.check_size(p.code.len() as u64, "code")?;
        let b = match &p.key {
            Some(k) => self.get(k).await?.0,
            None => self.code_box().await?,
        };
        let (ext, program) = match p.language {
            Language::Python => ("py", "python3"),
            Language::Shell => ("sh", "sh"),
        };
        let path = format!("/tmp/.boxlite-mcp-{:016x}.{ext}", rand::random::<u64>());
        b.write_file(&path, p.code.as_bytes(), 0o644)
            .await
            .map_err(|e| fail(&e))?;
        let cmd = BoxCommand::new(program).arg(&path).timeout(t);
        let r = self.run(&b, cmd, p.stdin, t, &ctx.ct).await?;
        let text = exec_text(&r);
        done(&r, Some(text))
    }

    #[tool(
        description = "Write a file in a box (text or base64 content; an existing file is replaced; missing parent directories are created).",
        output_schema = schema_for_output::<WriteFileResult>()
    )]
    async fn write_file(&self, Parameters(p): Parameters<WriteFileParams>) -> ToolResult {
        let _slot = self.permit()?;
        let data = match p.encoding.unwrap_or(Encoding::Text) {
            Encoding::Text => p.content.into_bytes(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(p.content.trim())
                .map_err(|e| format!("invalid_argument: content is not valid base64: {e}"))?,
        };
        self.check_size(data.len() as u64, "the file")?;
        let mode = match p.mode.as_deref() {
            None => 0o644,
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    format!("invalid_argument: mode {m:?} is not octal permission bits such as \"644\" or \"0755\"")
                })?,
        };
        let (b, _) = self.get(&p.key).await?;
        let mut r = b.write_file(&p.path, &data, mode).await;
        if let Err(e) = &r
            && e.kind() == boxlite::ErrorKind::NotFound
            && p.create_dirs.unwrap_or(true)
            && let Some((parent, _)) = p.path.rsplit_once('/')
            && !parent.is_empty()
        {
            self.mkdirs(&b, parent).await?;
            r = b.write_file(&p.path, &data, mode).await;
        }
        r.map_err(|e| fail(&e))?;
        done(
            &WriteFileResult {
                box_id: b.id().to_string(),
                path: p.path,
                bytes: data.len() as u64,
            },
            None,
        )
    }

    #[tool(
        description = "Read a regular file of a box, as text (UTF-8) or base64. Files over the size limit are refused with their size; read parts of them with exec (head, tail, sed -n).",
        output_schema = schema_for_output::<ReadFileResult>(),
        annotations(read_only_hint = true)
    )]
    async fn read_file(&self, Parameters(p): Parameters<ReadFileParams>) -> ToolResult {
        let _slot = self.permit()?;
        let max = self.shared().cfg.max_file_bytes;
        let limit = p.max_bytes.map_or(max, |m| m.min(max));
        let (b, _) = self.get(&p.key).await?;
        let data = b.read_file(&p.path, limit).await.map_err(|e| fail(&e))?;
        let size = data.len() as u64;
        let as_b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let (encoding, content) = match p.encoding.unwrap_or(ReadEncoding::Auto) {
            ReadEncoding::Base64 => (Encoding::Base64, as_b64(&data)),
            want => match String::from_utf8(data) {
                Ok(s) => (Encoding::Text, s),
                Err(e) if want == ReadEncoding::Auto => (Encoding::Base64, as_b64(e.as_bytes())),
                Err(e) => {
                    return Err(format!(
                        "invalid_argument: {} is not UTF-8 text (invalid byte at offset {}); read it with encoding base64",
                        p.path,
                        e.utf8_error().valid_up_to()
                    ));
                }
            },
        };
        let text = match encoding {
            Encoding::Text => content.clone(),
            Encoding::Base64 => format!("(binary, {size} bytes, base64)\n{content}"),
        };
        done(
            &ReadFileResult {
                box_id: b.id().to_string(),
                path: p.path,
                size,
                encoding,
                content,
            },
            Some(text),
        )
    }

    #[tool(
        description = "List a directory of a box: each entry's name, type, size, permissions, modification time and link target (links are not followed).",
        output_schema = schema_for_output::<ListFilesResult>(),
        annotations(read_only_hint = true)
    )]
    async fn list_files(&self, Parameters(p): Parameters<ListFilesParams>) -> ToolResult {
        let _slot = self.permit()?;
        let max = p
            .max_entries
            .unwrap_or(DEFAULT_ENTRIES)
            .clamp(1, MAX_ENTRIES);
        let path = p.path.unwrap_or_else(|| "/".into());
        let (b, _) = self.get(&p.key).await?;
        let l = b.list_dir(&path, max).await.map_err(|e| fail(&e))?;
        let entries: Vec<FileEntry> = l
            .entries
            .into_iter()
            .map(|e| FileEntry {
                kind: format!("{:?}", e.kind).to_lowercase(),
                mode: format!("{:o}", e.mode & 0o7777),
                name: e.name,
                size: e.size,
                mtime: e.mtime,
                link_target: e.link_target,
            })
            .collect();
        let mut text: String = entries
            .iter()
            .map(|e| {
                let tail = match (&e.link_target, e.kind.as_str()) {
                    (Some(t), _) => format!(" -> {t}"),
                    (None, "dir") => "/".into(),
                    _ => String::new(),
                };
                format!("{:>4} {:>12} {}{tail}\n", e.mode, e.size, e.name)
            })
            .collect();
        if l.truncated {
            text.push_str(&format!(
                "[... more entries not shown: only the first {max} are listed ...]\n"
            ));
        }
        done(
            &ListFilesResult {
                box_id: b.id().to_string(),
                path,
                entries,
                truncated: l.truncated,
            },
            Some(text),
        )
    }

    #[tool(
        description = "Pause a running box: its memory is saved to disk and its VM exits, so it uses no CPU or RAM. resume_box continues it where it was.",
        output_schema = schema_for_output::<BoxDone>()
    )]
    async fn pause_box(&self, Parameters(p): Parameters<BoxParam>) -> ToolResult {
        let _slot = self.permit()?;
        let (b, _) = self.get(&p.key).await?;
        b.pause().await.map_err(|e| fail(&e))?;
        box_done(&b, "paused")
    }

    #[tool(
        description = "Resume a paused box where it was, its processes still running.",
        output_schema = schema_for_output::<BoxDone>()
    )]
    async fn resume_box(&self, Parameters(p): Parameters<BoxParam>) -> ToolResult {
        let _slot = self.permit()?;
        let (b, _) = self.get(&p.key).await?;
        b.resume().await.map_err(|e| fail(&e))?;
        box_done(&b, "resumed")
    }

    #[tool(
        description = "Clone a box (or one of its snapshots): a running box's clone starts at once where the source was, memory and processes included; a stopped one's gets a copy of its disk. The clone belongs to this session.",
        output_schema = schema_for_output::<BoxSummary>()
    )]
    async fn clone_box(&self, Parameters(p): Parameters<CloneParams>) -> ToolResult {
        let _slot = self.permit()?;
        let _room = self.session.reserve().await?;
        let (b, _) = self.get(&p.key).await?;
        let c = b
            .clone_box(boxlite::CloneOptions {
                snapshot: p.snapshot,
                name: p.name,
                labels: self.session.labels(),
            })
            .await
            .map_err(|e| fail(&e))?;
        self.session.add(c.id());
        if self.session.is_ended() {
            self.session.forget(c.id());
            let _ = c.remove(true).await;
            return Err(
                "invalid_state: the session ended while the box was cloned; the clone was removed"
                    .into(),
            );
        }
        let info = c.info().await.map_err(|e| fail(&e))?;
        done(&self.summary(&info), None)
    }
}

impl BoxliteMcp {
    fn check_size(&self, n: u64, what: &str) -> Result<(), String> {
        let max = self.shared().cfg.max_file_bytes;
        if n > max {
            return Err(format!(
                "invalid_argument: {what} is {n} bytes, more than the limit of {max} bytes"
            ));
        }
        Ok(())
    }

    /// This session's `run_code` box, created (and started) on first use.
    async fn code_box(&self) -> Result<LiteBox, String> {
        let mut slot = self.session.code_box.lock().await;
        if let Some(id) = slot.as_deref() {
            match self.shared().rt.get(id).await {
                Ok(b) => return Ok(b),
                Err(e) if e.kind() == boxlite::ErrorKind::NotFound => {}
                Err(e) => return Err(fail(&e)),
            }
        }
        let (b, _) = self
            .make_box(BoxOptions::new(self.shared().cfg.code_image.clone()))
            .await?;
        *slot = Some(b.id().to_string());
        Ok(b)
    }

    async fn mkdirs(&self, b: &LiteBox, dir: &str) -> Result<(), String> {
        let t = Duration::from_secs(60);
        let cmd = BoxCommand::new("mkdir").args(["-p", "--", dir]).timeout(t);
        let r = self.run(b, cmd, None, t, &CancellationToken::new()).await?;
        if r.exit_code != Some(0) {
            return Err(format!(
                "not_found: creating the directory {dir} in the box failed ({}): {}",
                r.status,
                r.stderr.trim()
            ));
        }
        Ok(())
    }

    /// Run `cmd`, feed it `stdin`, and collect its capped output and its status.
    ///
    /// The command is killed if the client cancels the call (`cancel`), and given up on
    /// if the box does not answer within its timeout `t` plus a margin (the guest
    /// enforces `t` itself). Output still open [`DRAIN_GRACE`] after the exit belongs to
    /// a process left in the background: it keeps running, and the call returns.
    async fn run(
        &self,
        b: &LiteBox,
        cmd: BoxCommand,
        stdin: Option<String>,
        t: Duration,
        cancel: &CancellationToken,
    ) -> Result<ExecResult, String> {
        let limit = self.shared().cfg.max_output_bytes;
        let mut ex = b
            .exec(cmd.stdin(stdin.is_some()))
            .await
            .map_err(|e| fail(&e))?;
        let feed = ex.take_stdin().map(|mut pipe| {
            let data = stdin.unwrap_or_default();
            tokio::spawn(async move {
                // A command that exits without reading its input closes the pipe;
                // that is its business.
                let _ = pipe.write_all(data.as_bytes()).await;
                let _ = pipe.close().await;
            })
        });
        let out = Arc::new(Mutex::new(Capped::new(limit)));
        let err = Arc::new(Mutex::new(Capped::new(limit)));
        let mut readers = Readers(vec![
            collect(ex.take_stdout(), out.clone()),
            collect(ex.take_stderr(), err.clone()),
        ]);
        let status = tokio::select! {
            s = ex.wait() => s.map_err(|e| fail(&boxlite::Error::from(e)))?,
            () = cancel.cancelled() => {
                let _ = ex.kill().await;
                return Err("cancelled: the client cancelled the call; the command was killed".into());
            }
            () = tokio::time::sleep(t + HOST_MARGIN) => {
                let _ = ex.kill().await;
                return Err(format!(
                    "timeout: the box did not report the command's end within {} s of its {} s timeout; it was killed",
                    HOST_MARGIN.as_secs(),
                    t.as_secs()
                ));
            }
        };
        if let Some(f) = feed {
            f.abort();
        }
        let output_left_open = match tokio::time::timeout(DRAIN_GRACE, readers.finish()).await {
            Ok(r) => {
                r?;
                false
            }
            Err(_) => true,
        };
        drop(readers);
        let (out, err) = (lock(&out), lock(&err));
        Ok(ExecResult {
            box_id: b.id().to_string(),
            exit_code: match status {
                ExitStatus::Code(c) => Some(c),
                _ => None,
            },
            status: status.to_string(),
            timed_out: status == ExitStatus::TimedOut,
            stdout: out.text("stdout"),
            stderr: err.text("stderr"),
            stdout_bytes: out.total(),
            stderr_bytes: err.total(),
            stdout_dropped_bytes: out.dropped(),
            stderr_dropped_bytes: err.dropped(),
            output_left_open,
        })
    }
}

fn lock(c: &Mutex<Capped>) -> std::sync::MutexGuard<'_, Capped> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read one output stream into `into` until its end.
fn collect(
    stream: Option<boxlite::ExecOutput>,
    into: Arc<Mutex<Capped>>,
) -> tokio::task::JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        let Some(mut stream) = stream else {
            return Ok(());
        };
        while let Some(chunk) = stream.next_chunk().await {
            match chunk {
                Ok(d) => lock(&into).push(&d),
                Err(e) => return Err(format!("internal: {}", boxlite::error_chain(&e))),
            }
        }
        Ok(())
    })
}

/// An execution's output readers, stopped when dropped (a call that returned early,
/// or output a background process keeps open).
struct Readers(Vec<tokio::task::JoinHandle<Result<(), String>>>);

impl Readers {
    /// Wait for every stream's end; the first read error.
    async fn finish(&mut self) -> Result<(), String> {
        for h in &mut self.0 {
            h.await
                .map_err(|e| format!("internal: reading output: {e}"))??;
        }
        Ok(())
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// An execution's result as the model reads it.
fn exec_text(r: &ExecResult) -> String {
    let mut t = r.status.clone();
    if !r.stdout.is_empty() {
        t.push_str("\n--- stdout ---\n");
        t.push_str(&r.stdout);
    }
    if !r.stderr.is_empty() {
        t.push_str("\n--- stderr ---\n");
        t.push_str(&r.stderr);
    }
    t
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for BoxliteMcp {
    /// Tools run within a session only. Over HTTP a request can skip the session (the
    /// stateless lifecycle of later revisions); its boxes would then belong to nobody, so
    /// it is refused.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let sessionless = context
            .extensions
            .get::<axum::http::request::Parts>()
            .is_some_and(|p| !p.headers.contains_key("mcp-session-id"));
        if sessionless {
            return Ok(CallToolResult::error(vec![ContentBlock::text(
                "invalid_state: this server runs tools within a session only: send initialize first and then the Mcp-Session-Id it returns",
            )])
            .into());
        }
        let tcc = ToolCallContext::new(self, request, context);
        self.tool_router.call(tcc).await
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("boxlite", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS.to_string())
    }

    /// Up to 2025-11-25: the last revision with sessions, which decide when a
    /// session's boxes are removed.
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_rules_into_what_mcp_boxes_never_reach_are_recognized() {
        for r in [
            "private",
            "LOOPBACK",
            "host:80",
            "metadata/tcp",
            "link-local",
            "10.0.2.2",
            "127.0.0.1:8080",
            "169.254.169.254",
            "192.168.0.0/16",
            "172.16.5.4/tcp",
            "100.100.100.200",
            "0.0.0.0/0",
            "224.0.0.1",
        ] {
            assert!(names_denied_group(r), "{r}");
        }
        for r in [
            "public",
            "pypi.org",
            "*.github.com:443",
            "8.8.8.8",
            "1.1.1.0/24",
            "100.128.0.1",
            "hostname.example",
        ] {
            assert!(!names_denied_group(r), "{r}");
        }
    }

    #[test]
    fn timeouts_default_and_refuse_the_absurd() {
        let d = Duration::from_secs(7);
        assert_eq!(timeout(None, d).unwrap(), d);
        assert_eq!(timeout(Some(0), d).unwrap(), d);
        assert_eq!(timeout(Some(5), d).unwrap(), Duration::from_secs(5));
        assert!(
            timeout(Some(MAX_TIMEOUT_SECS + 1), d)
                .unwrap_err()
                .contains("timeout_secs")
        );
    }
}
