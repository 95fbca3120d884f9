//! `boxlite serve`: BoxLite's REST API (base path `/v1`) over the boxlite library.
//!
//! A thin frontend: every handler calls the same library API the CLI uses, and maps its
//! errors onto HTTP statuses in one table ([`error`]). Authentication is a bearer API
//! key compared in constant time; without a key the server only listens on loopback.

pub mod auth;
pub mod boxes;
pub mod error;
pub mod exec;
pub mod files;
pub mod images;
pub mod metrics;
pub mod openapi;
pub mod snapshots;
pub mod volumes;

use std::net::SocketAddr;

use axum::Router;
use axum::routing::{get, post};

/// How the server runs.
#[derive(Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    /// The bearer key every route but the health probe requires; `None` only on loopback.
    pub api_key: Option<auth::ApiKey>,
    /// How long a finished execution stays known ([`exec::KEEP_FINISHED`] by default).
    pub keep_finished: std::time::Duration,
}

impl ServeConfig {
    pub fn new(addr: SocketAddr, api_key: Option<auth::ApiKey>) -> Self {
        ServeConfig {
            addr,
            api_key,
            keep_finished: exec::KEEP_FINISHED,
        }
    }
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("addr", &self.addr)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("keep_finished", &self.keep_finished)
            .finish()
    }
}

/// Why the server would not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on {0} without an API key: set BOXLITE_API_KEY or --api-key-file, or listen on a loopback address"
    )]
    NoKeyOffLoopback(SocketAddr),
    #[error("listening on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving")]
    Serve(#[source] std::io::Error),
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub rt: boxlite::Boxlite,
    pub executions: std::sync::Arc<exec::Executions>,
    /// How long a finished execution stays known ([`exec::KEEP_FINISHED`]).
    pub keep_finished: std::time::Duration,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The whole API: `/health` open, everything under `/v1` behind the key.
pub fn router(state: AppState, key: Option<auth::ApiKey>) -> Router {
    let v1 = Router::new()
        .route("/config", get(config))
        .route("/boxes", post(boxes::create).get(boxes::list))
        .route(
            "/boxes/{id}",
            get(boxes::get).head(boxes::head).delete(boxes::remove),
        )
        .route("/boxes/{id}/start", post(boxes::start))
        .route("/boxes/{id}/stop", post(boxes::stop))
        .route("/boxes/{id}/pause", post(snapshots::pause))
        .route("/boxes/{id}/resume", post(snapshots::resume))
        .route("/boxes/{id}/clone", post(snapshots::clone))
        .route(
            "/boxes/{id}/snapshots",
            post(snapshots::create).get(snapshots::list),
        )
        .route(
            "/boxes/{id}/snapshots/{name}",
            get(snapshots::get).delete(snapshots::remove),
        )
        .route(
            "/boxes/{id}/snapshots/{name}/restore",
            post(snapshots::restore),
        )
        .route("/boxes/{id}/exec", post(exec::start))
        .route("/boxes/{id}/attach", get(main_attach))
        .route("/metrics", get(metrics::runtime))
        .route("/boxes/{id}/metrics", get(metrics::of_box))
        .route("/me", get(me))
        .route("/volumes", post(volumes::create).get(volumes::list))
        .route("/volumes/{name}", get(volumes::get).delete(volumes::remove))
        .route("/images/pull", post(images::pull))
        .route("/images", get(images::list))
        .route(
            "/images/{*key}",
            get(images::get).head(images::head).delete(images::remove),
        )
        .route(
            "/boxes/{id}/executions/{exec_id}",
            get(exec::status).delete(exec::kill),
        )
        .route("/boxes/{id}/executions/{exec_id}/attach", get(exec::attach))
        .route(
            "/boxes/{id}/executions/{exec_id}/signal",
            post(exec::signal),
        )
        .route(
            "/boxes/{id}/executions/{exec_id}/resize",
            post(exec::resize),
        )
        .fallback(no_route)
        .with_state(state.clone())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        // Uploads stream, bounded by their own limit (files::MAX_UPLOAD).
        .merge(
            Router::new()
                .route(
                    "/boxes/{id}/files",
                    axum::routing::put(files::upload).get(files::download),
                )
                .with_state(state),
        )
        .layer(axum::middleware::from_fn_with_state(
            key.clone(),
            auth::require_key,
        ));
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .nest("/v1", v1)
        .merge(
            Router::new()
                .route("/openapi.json", get(openapi::serve))
                .layer(axum::middleware::from_fn_with_state(key, auth::require_key)),
        )
}

/// `ServerConfig`: what this server can do. Features it lacks are `false`, so BoxLite's
/// SDK refuses them cleanly (`UnsupportedError`) instead of calling missing routes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ServerConfig {
    /// This server's version.
    pub version: String,
    pub defaults: ConfigDefaults,
    pub capabilities: Capabilities,
}

/// What a box gets when the request does not say.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ConfigDefaults {
    pub cpus: u32,
    pub memory_mib: u32,
}

/// Feature flags and limits.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Capabilities {
    pub tty_enabled: bool,
    pub streaming_enabled: bool,
    pub snapshots_enabled: bool,
    pub clone_enabled: bool,
    pub export_enabled: bool,
    pub import_enabled: bool,
    pub linux_capabilities_enabled: bool,
    /// The largest JSON request body, in bytes.
    pub max_request_body_bytes: u64,
    /// The largest file upload (tar stream), in bytes.
    pub file_transfer_max_bytes: u64,
}

#[utoipa::path(get, path = "/v1/config", operation_id = "getConfig", tag = "server",
    responses((status = 200, body = ServerConfig)))]
pub async fn config() -> axum::Json<ServerConfig> {
    let d = boxlite::BoxOptions::new("");
    axum::Json(ServerConfig {
        version: env!("CARGO_PKG_VERSION").to_string(),
        defaults: ConfigDefaults {
            cpus: d.cpus,
            memory_mib: d.memory_mib,
        },
        capabilities: Capabilities {
            tty_enabled: true,
            streaming_enabled: true,
            snapshots_enabled: true,
            clone_enabled: true,
            export_enabled: false,
            import_enabled: false,
            linux_capabilities_enabled: false,
            max_request_body_bytes: MAX_BODY as u64,
            file_transfer_max_bytes: files::MAX_UPLOAD,
        },
    })
}

/// `Principal`: one key, one local principal, no routing prefix.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Principal {
    pub sub: String,
    /// `user` or `service_account`.
    pub principal_type: String,
    pub scopes: Vec<String>,
    /// Always null: routes have no prefix segment.
    pub path_prefix: Option<String>,
}

#[utoipa::path(get, path = "/v1/me", operation_id = "getCurrentPrincipal", tag = "server",
    responses((status = 200, body = Principal), (status = 401, body = error::ErrorResponse)))]
pub async fn me() -> axum::Json<Principal> {
    axum::Json(Principal {
        sub: "local".into(),
        principal_type: "service_account".into(),
        scopes: vec!["boxes".into(), "images".into()],
        path_prefix: None,
    })
}

/// Any other path: the error envelope clients parse, not an empty 404.
async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {method} {}", uri.path()),
    )
}

/// BoxLite's main-session attach. A box here runs nothing until asked (`run -d` and
/// the SDKs start commands as executions), so there is no session to attach to.
async fn main_attach() -> error::ApiError {
    error::ApiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "unsupported",
        "a box has no main session here: start a command with POST /v1/boxes/{id}/exec and \
         attach to /v1/boxes/{id}/executions/{execution_id}/attach",
    )
}

/// The largest JSON request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// Bind `addr` for a server whose requests need `key`: without a key only a loopback
/// address is accepted (and a warning says who can reach it). Shared with `boxlite mcp`.
pub async fn bind_listener(
    addr: SocketAddr,
    key: Option<&auth::ApiKey>,
) -> Result<tokio::net::TcpListener, ServeError> {
    if key.is_none() && !addr.ip().is_loopback() {
        return Err(ServeError::NoKeyOffLoopback(addr));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    if key.is_none() {
        tracing::warn!(%addr, "no API key: serving on loopback only, to this machine's users");
    }
    Ok(listener)
}

/// A bound server, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Router,
}

impl Server {
    /// Check the configuration and bind. Without a key only a loopback address is
    /// accepted.
    pub async fn bind(rt: boxlite::Boxlite, cfg: ServeConfig) -> Result<Server, ServeError> {
        let listener = bind_listener(cfg.addr, cfg.api_key.as_ref()).await?;
        Ok(Server {
            listener,
            app: router(
                AppState {
                    rt,
                    executions: Default::default(),
                    keep_finished: cfg.keep_finished,
                },
                cfg.api_key,
            ),
        })
    }

    /// Where it listens (the port chosen, for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` resolves: then stop accepting, let in-flight requests
    /// finish, and return. Boxes keep running: they are durable and outlive the server.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        if let Ok(a) = self.listener.local_addr() {
            tracing::info!(addr = %a, "serving the boxlite REST API");
        }
        use axum::serve::ListenerExt;
        // No Nagle: an execution's small frames (interactive output, the exit message
        // and the Close after it) go out at once, not after the peer's delayed ACK.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "setting TCP_NODELAY");
            }
        });
        axum::serve(listener, self.app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Serve)
    }
}

/// Bind and serve until `shutdown` resolves.
pub async fn serve(
    rt: boxlite::Boxlite,
    cfg: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    Server::bind(rt, cfg).await?.run(shutdown).await
}
