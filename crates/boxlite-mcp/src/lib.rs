//! `boxlite mcp`: boxes as tools for any client of the Model Context Protocol.
//!
//! Built on `rmcp`, the official Rust MCP SDK: it speaks the protocol (stdio or
//! streamable HTTP) and routes tool calls; [`tools`] turns each call into the same
//! library calls the CLI makes. One [`session::Session`] per MCP session (the stdio
//! connection, or one HTTP session) records the boxes it created; they carry labels
//! naming the session and this server, and are removed when the session ends unless
//! the server keeps them ([`McpConfig::keep_boxes`]).
//!
//! Every argument is hostile: sizes are bounded before anything is allocated for them
//! (the transport's line or body limit, then each tool's own), outputs are capped with
//! a note of what was dropped, and host paths are never reachable: files move as bytes
//! through the tool calls, volumes are managed volumes only.

pub mod output;
pub mod session;
pub mod tools;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

/// What the server allows and how it cleans up.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// Keep the boxes a session created when it ends (default: remove them).
    pub keep_boxes: bool,
    /// Let the tools reach every box of the home, not only boxes created through MCP.
    pub all_boxes: bool,
    /// The most bytes of stdout, and of stderr, an `exec` or `run_code` returns; the
    /// rest is dropped with a note saying how much.
    pub max_output_bytes: usize,
    /// The largest file `write_file` accepts and `read_file` returns.
    pub max_file_bytes: u64,
    /// An `exec` or `run_code` without its own timeout ends after this.
    pub exec_timeout: Duration,
    /// The most boxes one session may have at a time.
    pub max_boxes: usize,
    /// The most boxes all sessions of this server may have at a time.
    pub max_server_boxes: usize,
    /// The most memory and vCPUs `create_box` gives a box.
    pub max_memory_mib: u32,
    pub max_cpus: u32,
    /// Let `allow_net` open private ranges, loopback, link-local, metadata and the host
    /// (denied to MCP boxes by default, whatever their rules say).
    pub allow_private_net: bool,
    /// The most tool calls that run at once per server, and per session; more are
    /// refused.
    pub max_concurrent_calls: usize,
    pub max_session_calls: usize,
    /// The image `run_code` creates its box from.
    pub code_image: String,
    /// An HTTP session with no message for this long ends (and its boxes go, unless
    /// kept); a call in flight is not a message, so this stays above the longest
    /// timeout a call may ask for.
    pub session_idle: Duration,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            keep_boxes: false,
            all_boxes: false,
            max_output_bytes: 64 * 1024,
            max_file_bytes: 8 << 20,
            exec_timeout: Duration::from_secs(300),
            max_boxes: 8,
            max_server_boxes: 32,
            max_memory_mib: 4096,
            max_cpus: 4,
            allow_private_net: false,
            max_concurrent_calls: 32,
            max_session_calls: 8,
            code_image: "boxlite/python".into(),
            // Twice the longest timeout a call may ask for: a session is never idle
            // while its calls run.
            session_idle: Duration::from_secs(2 * tools::MAX_TIMEOUT_SECS),
        }
    }
}

impl McpConfig {
    /// The largest request the transport reads: a file at the limit, base64-encoded,
    /// with room for the rest of the call.
    pub fn max_request_bytes(&self) -> usize {
        let file = usize::try_from(self.max_file_bytes).unwrap_or(usize::MAX);
        (file / 3 + 1).saturating_mul(4).saturating_add(1 << 20)
    }
}

/// Why the server stopped or would not start.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// Off loopback without a key, or the address cannot be bound (as for `serve`).
    #[error(transparent)]
    Listen(#[from] boxlite_server::ServeError),
    #[error("serving MCP")]
    Io(#[source] std::io::Error),
}

/// Serve one MCP session on stdin and stdout until the client closes stdin or
/// `shutdown` resolves; then remove the session's boxes (unless kept) and return.
///
/// Standard output carries JSON-RPC only: the protocol writes to a duplicate of it,
/// and file descriptor 1 itself is pointed at stderr, so nothing else (a stray print,
/// a helper that inherits it) can corrupt the stream.
pub async fn serve_stdio(
    rt: boxlite::Boxlite,
    cfg: McpConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), McpError> {
    let out = protocol_stdout().map_err(McpError::Io)?;
    let shared = session::Shared::new(rt, cfg);
    shared.sweep_orphans().await;
    let handler = tools::BoxliteMcp::new(shared.clone());
    let sess = handler.session();
    let transport = rmcp::transport::async_rw::AsyncRwTransport::new_server(
        tokio::io::stdin(),
        tokio::fs::File::from_std(out),
    )
    .with_max_line_length(shared.cfg.max_request_bytes());
    // A client that goes away before it initializes has ended its session, not
    // broken ours.
    match handler.serve(transport).await {
        Err(e) => tracing::info!(error = %e, "the MCP client left before the session began"),
        Ok(running) => {
            let token = running.cancellation_token();
            tokio::select! {
                r = running.waiting() => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "the MCP session ended with an error");
                    }
                }
                () = shutdown => token.cancel(),
            }
        }
    }
    sess.end().await;
    shared.wait_cleanups(Duration::from_secs(60)).await;
    Ok(())
}

/// A duplicate of stdout for the protocol; fd 1 then points at stderr.
fn protocol_stdout() -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_DUPFD_CLOEXEC on fd 1 makes a new descriptor or fails; nothing else
    // owns the new one.
    let fd = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just made and is owned by nobody else.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    // SAFETY: dup2 of two open descriptors; fd 1 is replaced atomically.
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// The most HTTP requests `/mcp` serves at once (open event streams included); more
/// wait their turn.
const MAX_CONNECTIONS: usize = 64;

/// How the HTTP transport listens.
#[derive(Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// Required off loopback; checked on every request as `Authorization: Bearer`.
    pub api_key: Option<boxlite_server::auth::ApiKey>,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("addr", &self.addr)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// A bound HTTP server, not yet serving.
#[derive(Debug)]
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    shared: Arc<session::Shared>,
    key: Option<boxlite_server::auth::ApiKey>,
}

impl HttpServer {
    /// Check the configuration (a key off loopback) and bind.
    pub async fn bind(
        rt: boxlite::Boxlite,
        cfg: McpConfig,
        http: HttpConfig,
    ) -> Result<HttpServer, McpError> {
        let listener = boxlite_server::bind_listener(http.addr, http.api_key.as_ref()).await?;
        Ok(HttpServer {
            listener,
            shared: session::Shared::new(rt, cfg),
            key: http.api_key,
        })
    }

    /// Where it listens (the port chosen, for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve `/mcp` (and an open `/health`) until `shutdown` resolves; then end every
    /// session, remove their boxes (unless kept) and return.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), McpError> {
        let HttpServer {
            listener,
            shared,
            key,
        } = self;
        shared.sweep_orphans().await;
        let ct = CancellationToken::new();
        let loopback = listener
            .local_addr()
            .map_err(McpError::Io)?
            .ip()
            .is_loopback();
        let mut config = StreamableHttpServerConfig::default()
            .with_max_request_body_bytes(shared.cfg.max_request_bytes())
            .with_cancellation_token(ct.child_token());
        // On loopback the Host header must be a loopback name (DNS rebinding); off
        // loopback the key is the wall, and the Host is whatever the clients use.
        if !loopback {
            config = config.disable_allowed_hosts();
        }
        let mut sessions = LocalSessionManager::default();
        sessions.session_config.keep_alive = Some(shared.cfg.session_idle);
        let factory_shared = shared.clone();
        let service = StreamableHttpService::new(
            move || Ok(tools::BoxliteMcp::new(factory_shared.clone())),
            Arc::new(sessions),
            config,
        );
        let app = axum::Router::new()
            .nest_service(
                "/mcp",
                tower::ServiceBuilder::new()
                    .concurrency_limit(MAX_CONNECTIONS)
                    .service(service),
            )
            .layer(axum::middleware::from_fn_with_state(
                key.clone(),
                boxlite_server::auth::require_key,
            ))
            .route("/health", axum::routing::get(|| async { "ok" }));
        let stop = ct.clone();
        let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
        let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            // Ends every session: their handlers drop, and their boxes are removed.
            stop.cancel();
            let _ = stopping_tx.send(());
        });
        // A client that keeps a connection busy (a body dribbled in, a reply not read)
        // would hold a graceful shutdown forever: connections get a bounded time to end.
        let served = tokio::select! {
            r = serving => r.map_err(McpError::Io),
            () = async {
                if stopping.await.is_ok() {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!("connections still open 30 s after the shutdown began; closing them");
                Ok(())
            }
        };
        ct.cancel();
        shared.wait_cleanups(Duration::from_secs(60)).await;
        served
    }
}
