//! The host side of the agent protocol: one gRPC channel per box handle, over the box
//! shim's socket (each connection there is one stream of the agent channel).
//!
//! Generated protocol types stop here; the rest of the library sees its own types.

use std::path::{Path, PathBuf};
use std::time::Duration;

use boxlite_protocol::v1;
use boxlite_protocol::v1::agent_client::AgentClient as Stub;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("connecting to the agent of {target}")]
    Connect {
        /// The box and the socket tried.
        target: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("agent call {op} failed: {message}")]
    Rpc {
        op: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("the agent of {target} did not answer within {}s", after.as_secs_f32())]
    Timeout {
        target: String,
        after: std::time::Duration,
    },
}

impl PortalError {
    pub(crate) fn rpc(op: &'static str, s: tonic::Status) -> Self {
        PortalError::Rpc {
            op,
            code: s.code(),
            message: s.message().to_string(),
        }
    }

    /// Whether the connection failed rather than the agent: no connection was made, or
    /// it broke (a call that ends with `Unavailable`, `Unknown` or `Cancelled` without an
    /// answer from the agent; the agent's own errors carry other codes).
    pub fn is_transport(&self) -> bool {
        match self {
            PortalError::Connect { .. } => true,
            PortalError::Rpc { code, .. } => matches!(
                code,
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ),
            PortalError::Timeout { .. } => false,
        }
    }

    /// The gRPC code of a failed call, if this is one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            PortalError::Rpc { code, .. } => Some(*code),
            PortalError::Connect { .. } | PortalError::Timeout { .. } => None,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ExitStatus {
    /// Exited normally with this code.
    Code(i32),
    /// Terminated by this signal.
    Signal { signal: i32, core_dumped: bool },
    /// Killed by the agent because the exec's timeout expired.
    TimedOut,
    /// The guest kernel's out-of-memory killer ended the process (or a process of its
    /// group, after which it exited with 137) while it ran.
    OutOfMemory,
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exited with code {c}"),
            ExitStatus::Signal {
                signal,
                core_dumped,
            } => write!(
                f,
                "killed by signal {signal}{}",
                if *core_dumped { " (core dumped)" } else { "" }
            ),
            ExitStatus::TimedOut => write!(f, "killed because its timeout expired"),
            ExitStatus::OutOfMemory => write!(
                f,
                "killed by the out-of-memory killer: the box ran out of memory (give it more with --memory)"
            ),
        }
    }
}

impl ExitStatus {
    /// The shell convention: the exit code, or 128 + signal number.
    pub fn shell_code(&self) -> i32 {
        match self {
            ExitStatus::Code(c) => *c,
            ExitStatus::Signal { signal, .. } => 128 + signal,
            // As coreutils `timeout` reports it.
            ExitStatus::TimedOut => 124,
            ExitStatus::OutOfMemory => 128 + libc::SIGKILL,
        }
    }

    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }
}

/// What to start in the guest.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub stdin: bool,
    pub timeout: Option<std::time::Duration>,
    pub user: Option<String>,
    /// Run on a pseudo-terminal of (rows, columns).
    pub tty: Option<(u16, u16)>,
    /// The capabilities to keep (a mask of `CAP_*` numbers); `None`: the agent's
    /// default, Docker's set.
    pub capabilities: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
pub enum Pipe {
    Stdout,
    Stderr,
}

/// A guest's activity, as its agent reports it (`Ping`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activity {
    /// Calls in progress other than Ping and Stats.
    pub calls_in_progress: u32,
    /// Executions whose process still runs.
    pub running_executions: u32,
    /// Seconds since the last call or execution ended; 0 while one is in progress.
    pub idle_secs: f64,
    /// Busy CPU time of the whole guest since boot, in seconds.
    pub cpu_busy_secs: f64,
    /// Guest uptime, in seconds.
    pub uptime_secs: f64,
}

/// A connection to one box's agent. Cheap to clone; clones share the HTTP/2 connection,
/// on which every call is its own stream, so no call waits behind another.
#[derive(Debug, Clone)]
pub struct AgentClient {
    stub: Stub<Channel>,
}

/// How errors name a box's agent: the box (or build) and the socket it was reached at.
pub fn target(id: &str, socket: &Path) -> String {
    format!("box {} ({})", &id[..id.len().min(12)], socket.display())
}

/// Connect afresh to the agent of box `id` through `socket` and ping it, within `timeout`.
pub async fn ping_agent(socket: &Path, id: &str, timeout: Duration) -> Result<(), PortalError> {
    let target = target(id, socket);
    let fut = async {
        let c = AgentClient::connect(socket, id).await?;
        c.ping().await.map(|_| ())
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(PortalError::Timeout {
            target,
            after: timeout,
        }),
    }
}

impl AgentClient {
    /// Connect to the agent of box `id` (named in errors) through its shim's `socket`.
    /// The connection is made at once; if it breaks later (the shim restarted), the next
    /// call connects again.
    pub async fn connect(socket: &Path, id: &str) -> Result<Self, PortalError> {
        let target = target(id, socket);
        let socket: PathBuf = socket.to_path_buf();
        let endpoint = Endpoint::from_static("http://boxlite-agent")
            .connect_timeout(Duration::from_secs(10))
            .initial_stream_window_size(boxlite_protocol::STREAM_WINDOW)
            .initial_connection_window_size(boxlite_protocol::CONNECTION_WINDOW)
            // Fewer, larger frames: per-frame work in the guest is expensive under TCG.
            .max_frame_size(boxlite_protocol::MAX_FRAME)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(false);
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    let conn = UnixStream::connect(&socket).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(conn))
                }
            }))
            .await
            .map_err(|source| PortalError::Connect {
                target: target.clone(),
                source,
            })?;
        let stub = Stub::new(channel)
            .max_decoding_message_size(boxlite_protocol::MAX_MESSAGE)
            .max_encoding_message_size(boxlite_protocol::MAX_MESSAGE);
        Ok(AgentClient { stub })
    }

    pub async fn ping(&self) -> Result<v1::PingResponse, PortalError> {
        self.stub
            .clone()
            .ping(v1::PingRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| PortalError::rpc("Ping", s))
    }

    /// What the agent reports about its activity (a ping, which is not activity itself);
    /// `None` from an agent too old to report it.
    pub async fn activity(&self) -> Result<Option<Activity>, PortalError> {
        let r = self.ping().await?;
        Ok(r.reports_activity.then_some(Activity {
            calls_in_progress: r.calls_in_progress,
            running_executions: r.running_executions,
            idle_secs: r.idle_secs,
            cpu_busy_secs: r.cpu_busy_secs,
            uptime_secs: r.uptime_secs,
        }))
    }

    /// Start a process; returns its execution id.
    pub async fn exec(&self, spec: &ExecSpec) -> Result<String, PortalError> {
        let req = v1::ExecRequest {
            program: spec.program.clone(),
            args: spec.args.clone(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| v1::EnvVar {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            working_dir: spec.working_dir.clone().unwrap_or_default(),
            stdin: spec.stdin,
            user: spec.user.clone().unwrap_or_default(),
            timeout_ms: spec
                .timeout
                .map(|t| u64::try_from(t.as_millis().max(1)).unwrap_or(u64::MAX))
                .unwrap_or(0),
            tty: spec.tty.is_some(),
            tty_rows: spec.tty.map_or(0, |t| t.0.into()),
            tty_cols: spec.tty.map_or(0, |t| t.1.into()),
            capabilities: spec.capabilities,
        };
        self.stub
            .clone()
            .exec(req)
            .await
            .map(|r| r.into_inner().exec_id)
            .map_err(|s| PortalError::rpc("Exec", s))
    }

    pub async fn read_output(
        &self,
        exec_id: &str,
        pipe: Pipe,
    ) -> Result<tonic::Streaming<v1::OutputChunk>, PortalError> {
        let stream = match pipe {
            Pipe::Stdout => v1::OutputStream::Stdout,
            Pipe::Stderr => v1::OutputStream::Stderr,
        };
        self.stub
            .clone()
            .read_output(v1::ReadOutputRequest {
                exec_id: exec_id.to_string(),
                stream: stream as i32,
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| PortalError::rpc("ReadOutput", s))
    }

    /// Feed stdin from a stream of chunks. The caller sends the execution id in the
    /// first chunk and sets `eof` on the last.
    pub async fn write_stdin(
        &self,
        chunks: impl tokio_stream::Stream<Item = v1::StdinChunk> + Send + 'static,
    ) -> Result<u64, PortalError> {
        self.stub
            .clone()
            .write_stdin(chunks)
            .await
            .map(|r| r.into_inner().bytes_written)
            .map_err(|s| PortalError::rpc("WriteStdin", s))
    }

    pub async fn wait(&self, exec_id: &str) -> Result<ExitStatus, PortalError> {
        let r = self
            .stub
            .clone()
            .wait(v1::WaitRequest {
                exec_id: exec_id.to_string(),
            })
            .await
            .map_err(|s| PortalError::rpc("Wait", s))?
            .into_inner();
        let status = r.status.unwrap_or_default();
        if status.timed_out {
            return Ok(ExitStatus::TimedOut);
        }
        if status.oom_killed {
            return Ok(ExitStatus::OutOfMemory);
        }
        Ok(match status.kind {
            Some(v1::exit_status::Kind::Signal(signal)) => ExitStatus::Signal {
                signal,
                core_dumped: status.core_dumped,
            },
            Some(v1::exit_status::Kind::Code(c)) => ExitStatus::Code(c),
            None => ExitStatus::Code(0),
        })
    }

    pub async fn signal(&self, exec_id: &str, signal: i32, group: bool) -> Result<(), PortalError> {
        self.stub
            .clone()
            .signal(v1::SignalRequest {
                exec_id: exec_id.to_string(),
                signal,
                process_group: group,
            })
            .await
            .map(|_| ())
            .map_err(|s| PortalError::rpc("Signal", s))
    }

    /// Mount virtio-fs volumes: `(tag, guest path, read only)`.
    pub async fn mount_volumes(
        &self,
        mounts: &[(String, String, bool)],
    ) -> Result<(), PortalError> {
        self.stub
            .clone()
            .mount_volumes(v1::MountVolumesRequest {
                mounts: mounts
                    .iter()
                    .map(|(tag, path, ro)| v1::VolumeMount {
                        tag: tag.clone(),
                        path: path.clone(),
                        read_only: *ro,
                    })
                    .collect(),
            })
            .await
            .map(|_| ())
            .map_err(|s| PortalError::rpc("MountVolumes", s))
    }

    pub async fn resize_tty(&self, exec_id: &str, rows: u16, cols: u16) -> Result<(), PortalError> {
        self.stub
            .clone()
            .resize_tty(v1::ResizeTtyRequest {
                exec_id: exec_id.to_string(),
                rows: rows.into(),
                cols: cols.into(),
            })
            .await
            .map(|_| ())
            .map_err(|s| PortalError::rpc("ResizeTty", s))
    }

    /// Send a tar stream to be unpacked in the box. The first chunk carries the header.
    pub async fn copy_in(
        &self,
        chunks: impl tokio_stream::Stream<Item = v1::CopyInChunk> + Send + 'static,
    ) -> Result<v1::CopyInResponse, PortalError> {
        self.stub
            .clone()
            .copy_in(chunks)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| PortalError::rpc("CopyIn", s))
    }

    pub async fn copy_out(
        &self,
        req: v1::CopyOutRequest,
    ) -> Result<tonic::Streaming<v1::OutputChunk>, PortalError> {
        self.stub
            .clone()
            .copy_out(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| PortalError::rpc("CopyOut", s))
    }

    /// List one directory of the container root (the reply is the guest's, unchecked).
    pub async fn list_dir(
        &self,
        path: &str,
        max_entries: u32,
    ) -> Result<v1::ListDirResponse, PortalError> {
        self.stub
            .clone()
            .list_dir(v1::ListDirRequest {
                path: path.to_string(),
                max_entries,
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| PortalError::rpc("ListDir", s))
    }

    /// Send an image layer to be applied onto the container root.
    pub async fn apply_layer(
        &self,
        chunks: impl tokio_stream::Stream<Item = v1::LayerChunk> + Send + 'static,
    ) -> Result<v1::ApplyLayerResponse, PortalError> {
        self.stub
            .clone()
            .apply_layer(chunks)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| PortalError::rpc("ApplyLayer", s))
    }

    /// Make the box trust the CA `ca_pem` (one PEM certificate): the agent adds it to
    /// every CA bundle of the image (by bind mounts; the image is unchanged) and to the
    /// environment of every later execution. Calling it again replaces the CA. Returns
    /// the container paths that now hold the combined bundle.
    pub async fn install_ca(&self, ca_pem: &str) -> Result<Vec<String>, PortalError> {
        self.stub
            .clone()
            .install_ca(v1::InstallCaRequest {
                ca_pem: ca_pem.to_string(),
            })
            .await
            .map(|r| r.into_inner().covered)
            .map_err(|s| PortalError::rpc("InstallCa", s))
    }

    /// Hold the box's workload still before a memory snapshot: every process started by
    /// exec (and its descendants) is frozen, and new executions wait until
    /// [`Self::resume`]. Returns whether the guest had a freezer; without one, running
    /// processes go on. Calling it again changes nothing.
    pub async fn quiesce(&self) -> Result<bool, PortalError> {
        self.stub
            .clone()
            .quiesce(v1::QuiesceRequest {})
            .await
            .map(|r| r.into_inner().frozen)
            .map_err(|s| PortalError::rpc("Quiesce", s))
    }

    /// Make a restored guest its own, then let its workload run again: set its wall clock
    /// to `wall_clock_ns` since the Unix epoch (0 leaves it), mix `seed` (32 to 512 bytes
    /// of host entropy) into its kernel's pool and reseed, and rename it `hostname`
    /// (empty keeps the name), in that order, before the workload thaws. An invalid
    /// argument changes nothing. Safe without a prior [`Self::quiesce`].
    pub async fn resume(
        &self,
        wall_clock_ns: i64,
        seed: &[u8],
        hostname: &str,
    ) -> Result<(), PortalError> {
        self.stub
            .clone()
            .resume(v1::ResumeRequest {
                wall_clock_ns,
                seed: seed.to_vec(),
                hostname: hostname.to_string(),
            })
            .await
            .map(|_| ())
            .map_err(|s| PortalError::rpc("Resume", s))
    }

    pub async fn stats(&self) -> Result<v1::StatsResponse, PortalError> {
        self.stub
            .clone()
            .stats(v1::StatsRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| PortalError::rpc("Stats", s))
    }

    pub async fn shutdown(&self) -> Result<(), PortalError> {
        self.stub
            .clone()
            .shutdown(v1::ShutdownRequest {})
            .await
            .map(|_| ())
            .map_err(|s| PortalError::rpc("Shutdown", s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection the shim gives up on (or the HTTP/2 keep-alive does, when a shim
    /// holds it for a guest that takes longer to boot than the keep-alive allows: 50 s,
    /// the same `Unavailable` "http2 error") is a transport error the boot tries again,
    /// not an answer of the agent's.
    #[tokio::test]
    async fn a_connection_that_breaks_before_an_answer_is_a_transport_error() {
        let path = std::env::temp_dir().join(format!(
            "bx-portal-broken-{}-{:x}.sock",
            std::process::id(),
            rand::random::<u32>()
        ));
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let peer = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            // Take the client's preface and request, then drop the connection unanswered.
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await;
        });
        let client = AgentClient::connect(&path, "0123456789abcdef0123456789abcdef")
            .await
            .expect("connect");
        let err = client.ping().await.expect_err("nobody answers");
        let _ = std::fs::remove_file(&path);
        peer.abort();
        assert!(err.is_transport(), "{err:?}");
        assert!(
            matches!(err.code(), Some(tonic::Code::Unavailable)),
            "{err:?}"
        );
        // What the agent itself answers is not a transport error, nor is a timeout.
        let own = PortalError::rpc("Ping", tonic::Status::invalid_argument("no"));
        assert!(!own.is_transport());
        let timeout = PortalError::Timeout {
            target: "t".into(),
            after: Duration::from_secs(1),
        };
        assert!(!timeout.is_transport());
    }
}
