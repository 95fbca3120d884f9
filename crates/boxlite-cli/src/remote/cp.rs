//! `cp --url`: copies through `PUT` and `GET /v1/boxes/{id}/files` with tar bodies.
//!
//! The host's halves are the library's own, the ones `copy_in` and `copy_out` use:
//! [`boxlite::HostSource`] packs, and [`boxlite::HostDestination`] places what comes from the server as
//! `docker cp` does and unpacks it as hostile (below the destination with
//! `RESOLVE_BENEATH`; `..`, absolute names, links leading out, devices refused, setuid
//! bits dropped; a new item staged under a hidden name until complete).

use std::path::Path;

use anyhow::{Context, Result};
use boxlite::CopyOptions;
use boxlite_client::api::{copy_in, copy_out, download, upload};
use boxlite_client::{Client, RemoteError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cp::Copy;

/// Chunks in flight between stdin and the HTTP body.
const DEPTH: usize = 4;

pub(crate) async fn run(
    c: &Client,
    src: &str,
    dst: &str,
    follow: bool,
    overwrite: bool,
) -> Result<i32> {
    match Copy::parse(src, dst)? {
        Copy::TarIn { key, path } => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(DEPTH);
            let reader = tokio::spawn(async move {
                let mut stdin = tokio::io::stdin();
                let mut buf = vec![0u8; boxlite_archive::CHUNK];
                loop {
                    let n = stdin.read(&mut buf).await?;
                    if n == 0 || tx.send(buf[..n].to_vec()).await.is_err() {
                        return Ok::<_, std::io::Error>(());
                    }
                }
            });
            let sent = upload(c, &key, &path, overwrite, rx).await;
            reader
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .context("reading the tar stream on stdin")?;
            sent?;
        }
        Copy::TarOut { key, path } => {
            let mut resp = download(c, &key, &path, follow).await?;
            let mut out = tokio::io::stdout();
            while let Some(chunk) = resp.chunk().await.map_err(|e| RemoteError::Transport {
                what: format!("copying {path} out of box {key}"),
                url: c.ep.shown(),
                source: e.without_url(),
            })? {
                out.write_all(&chunk).await?;
            }
            out.flush().await?;
        }
        Copy::In { host, key, path } => {
            copy_in(
                c,
                Path::new(&host),
                &key,
                &path,
                &options(follow, overwrite),
            )
            .await?;
        }
        Copy::Out { key, path, host } => {
            let opts = options(follow, overwrite);
            copy_out(c, &key, &path, Path::new(&host), &opts).await?;
        }
    }
    Ok(0)
}

fn options(follow: bool, overwrite: bool) -> CopyOptions {
    CopyOptions {
        follow_symlinks: follow,
        overwrite,
        ..CopyOptions::default()
    }
}
