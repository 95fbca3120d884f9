//! `cp --url`: copies through `PUT` and `GET /v1/boxes/{id}/files` with tar bodies.
//!
//! The host's halves are the library's own, the ones `copy_in` and `copy_out` use:
//! [`HostSource`] packs, and [`HostDestination`] places what comes from the server as
//! `docker cp` does and unpacks it as hostile (below the destination with
//! `RESOLVE_BENEATH`; `..`, absolute names, links leading out, devices refused, setuid
//! bits dropped; a new item staged under a hidden name until complete).

use std::path::Path;

use anyhow::{Context, Result};
use boxlite::{CopyOptions, HostDestination, HostSource, HostUnpackError};
use boxlite_archive::ArchiveError;
use futures_util::StreamExt;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{Body, Client, RemoteError, segment};
use crate::cp::Copy;

/// Chunks in flight between the tar halves and the HTTP body.
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
            copy_in(c, &host, &key, &path, follow, overwrite).await?;
        }
        Copy::Out { key, path, host } => {
            copy_out(c, &key, &path, Path::new(&host), follow, overwrite).await?;
        }
    }
    Ok(0)
}

/// `PUT` the tar arriving on `rx` at `path` in the box.
async fn upload(
    c: &Client,
    key: &str,
    path: &str,
    overwrite: bool,
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<(), RemoteError> {
    let id = segment("box", key)?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (Ok::<_, std::io::Error>(c), rx))
    });
    let overwrite = if overwrite { "true" } else { "false" };
    c.call(
        &format!("copying into box {key} at {path}"),
        Method::PUT,
        &["boxes", id, "files"],
        &[("path", path), ("overwrite", overwrite)],
        Body::Stream(reqwest::Body::wrap_stream(stream)),
    )
    .await
}

async fn download(
    c: &Client,
    key: &str,
    path: &str,
    follow: bool,
) -> Result<reqwest::Response, RemoteError> {
    let id = segment("box", key)?;
    let follow = if follow { "true" } else { "false" };
    c.send(
        &format!("copying {path} out of box {key}"),
        Method::GET,
        &["boxes", id, "files"],
        &[("path", path), ("follow_symlinks", follow)],
        Body::None,
        None,
    )
    .await
}

/// A host file or directory into the box, packed by the library's [`HostSource`] (as
/// `copy_in` packs it: the item under its own name, or a directory's contents for a
/// source ending in `/.`; owned by root).
async fn copy_in(
    c: &Client,
    host: &str,
    key: &str,
    path: &str,
    follow: bool,
    overwrite: bool,
) -> Result<()> {
    let opts = CopyOptions {
        follow_symlinks: follow,
        overwrite,
        ..CopyOptions::default()
    };
    let (rx, packer) = HostSource::new(Path::new(host), &opts)?.spawn_pack();
    let sent = upload(c, key, path, overwrite, rx).await;
    let packed = packer.await.context("packing the copy")?;
    match (packed, sent) {
        (Ok(()), Ok(())) => Ok(()),
        // The server's answer explains a stream it stopped reading.
        (Err(ArchiveError::Write(_)), Err(e)) | (Ok(()), Err(e)) => Err(e.into()),
        (Err(e), _) => {
            Err(anyhow::Error::new(e).context(format!("copying {host} into box {key} at {path}")))
        }
    }
}

/// A path of the box to the host, placed and unpacked by the library's
/// [`HostDestination`], as `copy_out` places it.
async fn copy_out(
    c: &Client,
    key: &str,
    box_path: &str,
    host: &Path,
    follow: bool,
    overwrite: bool,
) -> Result<()> {
    let what = format!("{box_path} out of box {key} to {}", host.display());
    let opts = CopyOptions {
        follow_symlinks: follow,
        overwrite,
        ..CopyOptions::default()
    };
    let dest = HostDestination::plan(box_path, host, &opts)?;
    let resp = download(c, key, dest.source(), follow).await?;
    let chunks = resp.bytes_stream().map(|r| r.map(|b| b.to_vec()));
    match dest.unpack(&what, chunks).await {
        Ok(_) => Ok(()),
        Err(HostUnpackError::Source(e)) => Err(RemoteError::Transport {
            what: format!("copying {what}"),
            url: c.ep.shown(),
            source: e.without_url(),
        }
        .into()),
        Err(HostUnpackError::Copy(e)) => Err(e.into()),
    }
}
