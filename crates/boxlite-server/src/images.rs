//! Image routes: pull (optionally streaming progress as JSON lines), list, get, head.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use boxlite::images::ImageInfo;
use boxlite::images::registry::Progress;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ErrorBody, ErrorResponse};

/// The document's `ImageInfo`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ImageInfo)]
pub struct ImageJson {
    /// Normalized, e.g. `docker.io/library/alpine:latest`.
    pub reference: String,
    pub repository: String,
    pub tag: String,
    /// The manifest digest.
    pub id: String,
    /// The image's creation time as its config says (the store does not record when it
    /// pulled an image); null when the config has none.
    #[serde(default)]
    pub cached_at: Option<String>,
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

impl From<&ImageInfo> for ImageJson {
    fn from(i: &ImageInfo) -> Self {
        let (repository, tag) = split_reference(&i.reference);
        ImageJson {
            reference: i.reference.clone(),
            repository,
            tag,
            id: i.digest.clone(),
            cached_at: i.created.clone(),
            size_bytes: Some(i.size),
        }
    }
}

/// A stored reference's repository (registry included) and tag, as the library parses
/// references; a reference pinned by digest alone has no tag (empty).
fn split_reference(r: &str) -> (String, String) {
    match boxlite::images::reference::Reference::parse(r) {
        Ok(p) => (
            format!("{}/{}", p.registry, p.repository),
            p.tag.unwrap_or_default(),
        ),
        // Stored references always parse; show one that does not as it is.
        Err(_) => (r.to_string(), String::new()),
    }
}

/// One line of a streamed pull (`Accept: application/x-ndjson`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PullEvent {
    /// The manifest is resolved.
    Resolved {
        layers: usize,
        total_bytes: u64,
    },
    /// A layer's download progress.
    Layer {
        digest: String,
        done: u64,
        total: u64,
        cached: bool,
    },
    /// The root filesystem is being built.
    Building {
        layers: usize,
    },
    Built {
        ms: u64,
        cached: bool,
    },
    /// The last line of a pull that succeeded.
    Done {
        image: ImageJson,
    },
    /// The last line of a pull that failed.
    Error {
        error: ErrorBody,
    },
}

fn progress_json(p: &Progress) -> PullEvent {
    match p {
        Progress::Resolved {
            layers,
            total_bytes,
        } => PullEvent::Resolved {
            layers: *layers,
            total_bytes: *total_bytes,
        },
        Progress::Layer {
            digest,
            done,
            total,
            cached,
        } => PullEvent::Layer {
            digest: digest.clone(),
            done: *done,
            total: *total,
            cached: *cached,
        },
        Progress::Building { layers } => PullEvent::Building { layers: *layers },
        Progress::Built { ms, cached, .. } => PullEvent::Built {
            ms: *ms,
            cached: *cached,
        },
    }
}

fn line(e: &PullEvent) -> String {
    let mut l = serde_json::to_string(e).unwrap_or_default();
    l.push('\n');
    l
}

/// `PullImageRequest`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = PullImageRequest)]
pub struct PullRequest {
    /// An image reference, e.g. `alpine:3.20` or `ghcr.io/org/app@sha256:...`.
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
#[utoipa::path(post, path = "/v1/images/pull", operation_id = "pullImage", tag = "images",
    request_body = PullRequest,
    responses(
        (status = 200, description = "Pulled and built; with `Accept: application/x-ndjson`, a stream of `PullEvent` lines",
            content(
                (ImageJson = "application/json"),
                (PullEvent = "application/x-ndjson"),
            )),
        (status = 400, body = ErrorResponse),
        (status = 422, description = "The pull failed", body = ErrorResponse),
    ))]
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
        return Ok(Json(ImageJson::from(&listed(&s, &img.reference).await?)).into_response());
    }
    // Progress events are small and few; a bounded channel keeps a stalled client from
    // holding more than a few of them.
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let events = tx.clone();
        let pulled =
            s.rt.pull(&req.reference, &move |p| {
                let _ = events.try_send(line(&progress_json(&p)));
            })
            .await;
        let last = match pulled {
            Ok(img) => match listed(&s, &img.reference).await {
                Ok(info) => PullEvent::Done {
                    image: ImageJson::from(&info),
                },
                Err(e) => PullEvent::Error { error: e.body() },
            },
            Err(e) => PullEvent::Error {
                error: ApiError::from(e).body(),
            },
        };
        let _ = tx.send(line(&last)).await;
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

/// `ListImagesResponse`: every image on one page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ListImagesResponse)]
pub struct ImageList {
    pub images: Vec<ImageJson>,
    /// Always null.
    pub next_page_token: Option<String>,
}

#[utoipa::path(get, path = "/v1/images", operation_id = "listImages", tag = "images",
    responses((status = 200, body = ImageList)))]
pub async fn list(State(s): State<AppState>) -> Json<ImageList> {
    let images = s.rt.images().await.iter().map(ImageJson::from).collect();
    Json(ImageList {
        images,
        next_page_token: None,
    })
}

/// The path parameter of an image's routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ImagePath {
    /// The manifest digest (`sha256:...`) or a reference (slashes and all).
    pub image_id: String,
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

#[utoipa::path(get, path = "/v1/images/{image_id}", operation_id = "getImage", tag = "images",
    params(ImagePath),
    responses((status = 200, body = ImageJson), (status = 404, body = ErrorResponse)))]
pub async fn get(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<ImageJson>, ApiError> {
    Ok(Json(ImageJson::from(&find(&s, &key).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Remove the reference even while boxes use the image (its files stay until the
    /// last such box goes).
    #[serde(default)]
    pub force: bool,
}

/// Remove an image's reference (by reference or digest prefix) and prune what nothing
/// needs; refused while a box uses it, unless forced (then only the reference goes).
#[utoipa::path(delete, path = "/v1/images/{image_id}", operation_id = "removeImage", tag = "images",
    params(ImagePath, RemoveQuery),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, body = ErrorResponse),
        (status = 409, description = "A box uses it", body = ErrorResponse),
    ))]
pub async fn remove(
    State(s): State<AppState>,
    Path(key): Path<String>,
    q: Result<axum::extract::Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let axum::extract::Query(q) = q.map_err(ApiError::from_query)?;
    s.rt.remove_image(key.trim_start_matches('/'), q.force)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(head, path = "/v1/images/{image_id}", operation_id = "imageExists", tag = "images",
    params(ImagePath),
    responses((status = 204, description = "Present"), (status = 404, description = "Absent")))]
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
        let split = split_reference;
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            split("boxlite/busybox:latest"),
            pair("boxlite/busybox", "latest")
        );
        assert_eq!(
            split("127.0.0.1:5000/a/b:v1"),
            pair("127.0.0.1:5000/a/b", "v1")
        );
        assert_eq!(
            split("127.0.0.1:5000/a/b"),
            pair("127.0.0.1:5000/a/b", "latest")
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            split(&format!("docker.io/library/alpine@{digest}")),
            pair("docker.io/library/alpine", "")
        );
    }
}
