//! Image routes: pull (optionally streaming progress as JSON lines), list, get, head.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use boxlite::images::ImageInfo;
use boxlite::images::registry::Progress;
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;

/// The document's `ImageInfo`. `cached_at` is the image's creation time as its config
/// says: the store does not record when it pulled an image.
fn image_json(i: &ImageInfo) -> serde_json::Value {
    let (repository, tag) = split_reference(&i.reference);
    serde_json::json!({
        "reference": i.reference,
        "repository": repository,
        "tag": tag,
        "id": i.digest,
        "cached_at": i.created,
        "size_bytes": i.size,
    })
}

/// `repo/name:tag` into its repository and tag (a tag never holds a `/`).
fn split_reference(r: &str) -> (&str, &str) {
    let name_start = r.rfind('/').map_or(0, |i| i + 1);
    match r[name_start..].rfind(':') {
        Some(i) => (&r[..name_start + i], &r[name_start + i + 1..]),
        None => (r, "latest"),
    }
}

fn progress_json(p: &Progress) -> serde_json::Value {
    match p {
        Progress::Resolved {
            layers,
            total_bytes,
        } => serde_json::json!({"type": "resolved", "layers": layers, "total_bytes": total_bytes}),
        Progress::Layer {
            digest,
            done,
            total,
            cached,
        } => serde_json::json!({"type": "layer", "digest": digest, "done": done,
            "total": total, "cached": cached}),
        Progress::Building { layers } => serde_json::json!({"type": "building", "layers": layers}),
        Progress::Built { ms, cached, .. } => {
            serde_json::json!({"type": "built", "ms": ms, "cached": cached})
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct PullRequest {
    pub reference: String,
}

async fn listed(s: &AppState, reference: &str) -> Result<ImageInfo, ApiError> {
    s.rt.images()
        .await
        .into_iter()
        .find(|i| i.reference == reference)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no image {reference:?}"),
            )
        })
}

/// Pull an image. With `Accept: application/x-ndjson` the answer is a stream of JSON
/// lines: progress events, then `{"type":"done","image":{..}}` or
/// `{"type":"error","error":{..}}`; otherwise one `ImageInfo` once the pull is done.
pub async fn pull(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<PullRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(ApiError::from_json)?;
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    if !streaming {
        let img = s.rt.pull(&req.reference, &|_| {}).await?;
        return Ok(Json(image_json(&listed(&s, &img.reference).await?)).into_response());
    }
    // Progress events are small and few; a bounded channel keeps a stalled client from
    // holding more than a few of them.
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let events = tx.clone();
        let pulled =
            s.rt.pull(&req.reference, &move |p| {
                let _ = events.try_send(progress_json(&p).to_string() + "\n");
            })
            .await;
        let last = match pulled {
            Ok(img) => match listed(&s, &img.reference).await {
                Ok(info) => serde_json::json!({"type": "done", "image": image_json(&info)}),
                Err(e) => serde_json::json!({"type": "error", "error": e.body()}),
            },
            Err(e) => serde_json::json!({"type": "error", "error": ApiError::from(e).body()}),
        };
        let _ = tx.send(last.to_string() + "\n").await;
    });
    let stream =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

use tokio_stream::StreamExt as _;

pub async fn list(State(s): State<AppState>) -> Json<serde_json::Value> {
    let images: Vec<serde_json::Value> = s.rt.images().await.iter().map(image_json).collect();
    Json(serde_json::json!({"images": images, "next_page_token": null}))
}

/// An image by manifest digest, or by reference.
async fn find(s: &AppState, key: &str) -> Result<ImageInfo, ApiError> {
    let key = key.trim_start_matches('/');
    let normalized = boxlite::images::normalize(key).ok();
    s.rt.images()
        .await
        .into_iter()
        .find(|i| i.digest == key || Some(&i.reference) == normalized.as_ref())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no image {key:?}"),
            )
        })
}

pub async fn get(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(image_json(&find(&s, &key).await?)))
}

#[derive(Debug, Deserialize)]
pub struct RemoveQuery {
    #[serde(default)]
    pub force: bool,
}

/// Remove an image's reference (by reference or digest prefix) and prune what nothing
/// needs; refused while a box uses it, unless forced (then only the reference goes).
pub async fn remove(
    State(s): State<AppState>,
    Path(key): Path<String>,
    axum::extract::Query(q): axum::extract::Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    s.rt.remove_image(key.trim_start_matches('/'), q.force)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn head(State(s): State<AppState>, Path(key): Path<String>) -> StatusCode {
    match find(&s, &key).await {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(e) => e.status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(
            split_reference("boxlite/busybox:latest"),
            ("boxlite/busybox", "latest")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/a/b:v1"),
            ("127.0.0.1:5000/a/b", "v1")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b", "latest")
        );
    }
}
