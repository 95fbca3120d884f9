//! The OpenAPI document, generated from the handlers and their types. The checked-in
//! copy (`openapi/boxlite.openapi.json` at the repository's top) is compared with it by a
//! test, so the two cannot drift; `BOXLITE_UPDATE_OPENAPI=1 cargo test -p boxlite-server
//! openapi` rewrites it.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{boxes, error, exec, files, images, metrics, snapshots, volumes};

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
        snapshots::create,
        snapshots::list,
        snapshots::get,
        snapshots::remove,
        snapshots::restore,
        snapshots::clone,
        snapshots::pause,
        snapshots::resume,
    ),
    components(schemas(error::ErrorResponse, error::ErrorBody, images::PullEvent)),
    modifiers(&BearerAuth, &CommonErrors),
    tags(
        (name = "server", description = "What this server is and can do"),
        (name = "boxes", description = "Box life cycle"),
        (name = "executions", description = "Commands in a box, streamed over a WebSocket"),
        (name = "files", description = "Tar streams in and out of a box"),
        (name = "metrics"),
        (name = "images"),
        (name = "volumes", description = "Managed volumes (host paths are never mounted)"),
        (name = "snapshots", description = "Snapshots (memory and disk), clones, pause and resume"),
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

/// Answers every operation can give, documented once here: 401 without the key; 400 for
/// a parameter or body that does not parse; 413 and 415 for a JSON body too large or not
/// JSON.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorResponse")))
                        .build(),
                )
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.head,
            ];
            for op in ops.into_iter().flatten() {
                let r = &mut op.responses.responses;
                let takes_input = op.parameters.as_ref().is_some_and(|p| !p.is_empty())
                    || op.request_body.is_some();
                r.entry("401".into())
                    .or_insert_with(|| error("No key, or the wrong one").into());
                if takes_input {
                    r.entry("400".into())
                        .or_insert_with(|| error("A parameter or the body is invalid").into());
                }
                let json_body = op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("application/json"));
                if json_body {
                    r.entry("413".into())
                        .or_insert_with(|| error("The body is larger than 1 MiB").into());
                    r.entry("415".into())
                        .or_insert_with(|| error("The body is not JSON").into());
                }
            }
        }
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
