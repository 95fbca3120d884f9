//! The OpenAPI document, generated from the handlers and their types. The checked-in
//! copy (`openapi/boxlite.openapi.json` at the repository's top) is compared with it by a
//! test, so the two cannot drift; `BOXLITE_UPDATE_OPENAPI=1 cargo test -p boxlite-server
//! openapi` rewrites it.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{boxes, error, exec, files, images, metrics, volumes};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "boxlite REST API",
        description = "Boxes (micro-VMs), executions, files, images and volumes. Compatible with BoxLite's REST API (base path /v1, no routing prefix). Every route needs `Authorization: Bearer <key>` unless the server runs without a key on loopback.",
        license(name = "Apache-2.0"),
    ),
    paths(
        crate::config,
        crate::me,
        boxes::create,
        boxes::list,
        boxes::get,
        boxes::head,
        boxes::remove,
        boxes::start,
        boxes::stop,
        exec::start,
        exec::status,
        exec::kill,
        exec::attach,
        exec::signal,
        exec::resize,
        files::upload,
        files::download,
        metrics::runtime,
        metrics::of_box,
        images::pull,
        images::list,
        images::get,
        images::head,
        images::remove,
        volumes::create,
        volumes::list,
        volumes::get,
        volumes::remove,
    ),
    components(schemas(error::ErrorResponse, error::ErrorBody, images::PullEvent)),
    modifiers(&BearerAuth),
    tags(
        (name = "server", description = "What this server is and can do"),
        (name = "boxes", description = "Box life cycle"),
        (name = "executions", description = "Commands in a box, streamed over a WebSocket"),
        (name = "files", description = "Tar streams in and out of a box"),
        (name = "metrics"),
        (name = "images"),
        (name = "volumes", description = "Managed volumes (host paths are never mounted)"),
    ),
)]
pub struct ApiDoc;

/// The bearer key, required by every operation.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "BearerAuth",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "BearerAuth",
            Vec::<String>::new(),
        )]);
    }
}

/// The document as pretty JSON, with this build's version.
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut text = doc.to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

/// `GET /openapi.json`.
pub async fn serve() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked_in() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/boxlite.openapi.json")
    }

    #[test]
    fn openapi_document_matches_the_checked_in_copy() {
        let now = document();
        if std::env::var_os("BOXLITE_UPDATE_OPENAPI").is_some() {
            std::fs::write(checked_in(), &now).unwrap();
        }
        let file = std::fs::read_to_string(checked_in()).unwrap_or_default();
        assert!(
            file == now,
            "openapi/boxlite.openapi.json is not what the code generates; run \
             BOXLITE_UPDATE_OPENAPI=1 cargo test -p boxlite-server openapi and commit it"
        );
    }
}
