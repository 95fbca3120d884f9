//! Files: `PUT /boxes/{id}/files?path=` unpacks a tar stream in the box, `GET` packs a
//! path of the box as one. Both go through the library's copy paths, which treat every
//! archive as hostile in the guest; the server only streams.
//!
//! Placement follows `docker cp`, as BoxLite's SDK expects: a tar whose first entry is
//! `./` puts its contents into `path` (created if missing); otherwise its one top-level
//! item lands inside `path` if that is an existing directory, else as `path`. A download
//! says whether the source was a directory in `x-boxlite-source-is-dir`.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use boxlite::{CopyOptions, TarPlacement};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_stream::StreamExt as _;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::{ApiError, ErrorResponse};

/// A tar stream, as the document describes the files routes' bodies.
#[derive(Debug, utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct TarStream(pub Vec<u8>);

/// The largest upload accepted, in bytes of tar stream.
pub const MAX_UPLOAD: u64 = 16 << 30;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Where the archive goes in the box (absolute).
    pub path: String,
    /// Replace existing files (default true).
    #[serde(default = "yes")]
    #[param(default = true)]
    pub overwrite: bool,
}

fn yes() -> bool {
    true
}

/// A path in the box must be absolute.
fn absolute(path: &str) -> Result<(), ApiError> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "path {path:?} must be absolute"
        )))
    }
}

/// Read up to `n` bytes (fewer only at end of stream).
async fn read_up_to<R: AsyncRead + Unpin>(r: &mut R, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let k = r.read(&mut buf[got..]).await?;
        if k == 0 {
            break;
        }
        got += k;
    }
    buf.truncate(got);
    Ok(buf)
}

/// The name in a tar header block (its first 100 bytes, NUL-terminated).
fn header_name(block: &[u8]) -> &[u8] {
    let f = &block[..block.len().min(100)];
    f.iter().position(|&b| b == 0).map_or(f, |i| &f[..i])
}

/// Counts what passes and fails past `limit`.
struct Limited<R> {
    inner: R,
    left: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Limited<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > self.left {
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the upload is larger than {MAX_UPLOAD} bytes"
            ))));
        }
        self.left -= n;
        r
    }
}

#[utoipa::path(put, path = "/v1/boxes/{box_id}/files", operation_id = "uploadFiles", tag = "files",
    params(crate::boxes::BoxPath, UploadQuery),
    request_body(content = TarStream, content_type = "application/x-tar",
        description = "A tar stream, at most 16 GiB; chunked is fine"),
    responses(
        (status = 204, description = "Unpacked (the box was started if it was not running)"),
        (status = 400, description = "Not a tar, a hostile entry, or a bad path", body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse),
    ))]
pub async fn upload(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let Query(q) = q.map_err(ApiError::from_query)?;
    absolute(&q.path)?;
    let b = s.rt.get(&id).await?;
    let stream = body
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let mut reader = Limited {
        inner: tokio_util::io::StreamReader::new(stream),
        left: MAX_UPLOAD,
    };
    let first = read_up_to(&mut reader, 512)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
    if first.len() < 512 {
        return Err(ApiError::bad_request("the upload is not a tar stream"));
    }
    let placement = match header_name(&first) {
        b"./" | b"." => TarPlacement::Contents,
        _ => TarPlacement::Item,
    };
    let reader = std::io::Cursor::new(first).chain(reader);
    b.copy_in_tar_as(reader, &q.path, placement, q.overwrite)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// What to pack (absolute).
    pub path: String,
    /// Pack what a symlink at `path` points to, not the link.
    #[serde(default)]
    pub follow_symlinks: bool,
}

#[utoipa::path(get, path = "/v1/boxes/{box_id}/files", operation_id = "downloadFiles", tag = "files",
    params(crate::boxes::BoxPath, DownloadQuery),
    responses(
        (status = 200, description = "A tar rooted at the path's name; header `x-boxlite-source-is-dir` says whether it was a directory",
            content_type = "application/x-tar", body = TarStream),
        (status = 400, body = ErrorResponse),
        (status = 404, description = "No such box or path", body = ErrorResponse),
    ))]
pub async fn download(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<DownloadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(ApiError::from_query)?;
    absolute(&q.path)?;
    let b = s.rt.get(&id).await?;
    // The tar streams through a small pipe: a slow client slows the box's packer.
    let (mut w, mut r) = tokio::io::duplex(256 << 10);
    let opts = CopyOptions {
        follow_symlinks: q.follow_symlinks,
        ..CopyOptions::default()
    };
    let path = q.path.clone();
    let packer = tokio::spawn(async move { b.copy_out_tar(&path, &mut w, &opts).await });
    let first = read_up_to(&mut r, 512).await.unwrap_or_default();
    if first.len() < 512 {
        // Nothing came: the packer's error says why.
        drop(r);
        return match packer.await {
            Ok(Err(e)) => Err(e.into()),
            _ => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the box sent no archive",
            )),
        };
    }
    let is_dir = first[156] == b'5' || header_name(&first).ends_with(b"/");
    let rest = tokio_util::io::ReaderStream::new(std::io::Cursor::new(first).chain(r));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::HeaderName::from_static("x-boxlite-source-is-dir"),
                is_dir.to_string(),
            ),
        ],
        Body::from_stream(rest),
    )
        .into_response())
}
