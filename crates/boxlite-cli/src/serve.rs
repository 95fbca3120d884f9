//! `boxlite serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use boxlite::Boxlite;
use boxlite_server::auth::ApiKey;
use boxlite_server::{ServeConfig, serve};

/// The API key: `--api-key-file`, else `BOXLITE_API_KEY`, else none.
pub(crate) fn api_key(file: Option<PathBuf>) -> Result<Option<ApiKey>> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(&f)
            .with_context(|| format!("reading the API key file {}", f.display()))?;
        let key = ApiKey::new(&text)
            .with_context(|| format!("the API key file {} is empty", f.display()))?;
        return Ok(Some(key));
    }
    Ok(std::env::var("BOXLITE_API_KEY")
        .ok()
        .and_then(|k| ApiKey::new(&k)))
}

pub(crate) async fn serve_cmd(
    rt: Boxlite,
    host: std::net::IpAddr,
    port: u16,
    api_key_file: Option<PathBuf>,
) -> Result<i32> {
    let cfg = ServeConfig::new(SocketAddr::new(host, port), api_key(api_key_file)?);
    let shutdown = async {
        terminated().await;
        tracing::info!("stopping: no new connections; boxes keep running");
    };
    serve(rt, cfg, shutdown).await?;
    Ok(0)
}

/// SIGTERM or SIGINT, whichever comes first (never, if no handler can be installed).
pub(crate) async fn terminated() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
