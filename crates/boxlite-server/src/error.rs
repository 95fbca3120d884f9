//! Library errors as HTTP responses: one table from error kind to status, and a JSON
//! body that says what went wrong without host paths or secrets.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error as the API returns it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable machine-readable kind, e.g. `not_found`.
    pub code: &'static str,
    /// For people; never a host path or a secret.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid API key is required (Authorization: Bearer <key>)",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    /// A JSON body that could not be taken: too large (413), not JSON (400, 415), or
    /// not the expected shape (422 in axum; 400 here, as the document says).
    pub fn from_json(e: axum::extract::rejection::JsonRejection) -> Self {
        match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "resource_exhausted",
                format!("the request body is larger than {} bytes", crate::MAX_BODY),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_argument",
                e.body_text(),
            ),
            _ => ApiError::bad_request(e.body_text()),
        }
    }

    /// A query string that is not what the route takes: 400, naming the parameter.
    pub fn from_query(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::bad_request(e.body_text())
    }
}

/// The HTTP status for a kind of library error.
fn status(kind: boxlite::ErrorKind) -> StatusCode {
    use StatusCode as S;
    use boxlite::ErrorKind as K;
    match kind {
        K::InvalidArgument => S::BAD_REQUEST,
        K::NotFound => S::NOT_FOUND,
        K::AlreadyExists | K::InvalidState => S::CONFLICT,
        // A pull that fails for any reason is BoxLite's 422 `image_pull_failed`.
        K::ImagePullFailed => S::UNPROCESSABLE_ENTITY,
        K::ResourceExhausted => S::INSUFFICIENT_STORAGE,
        K::Timeout => S::GATEWAY_TIMEOUT,
        K::Unavailable => S::SERVICE_UNAVAILABLE,
        K::Internal => S::INTERNAL_SERVER_ERROR,
    }
}

impl From<boxlite::Error> for ApiError {
    fn from(e: boxlite::Error) -> Self {
        let kind = e.kind();
        let (status, code) = (status(kind), kind.code());
        let message = if kind == boxlite::ErrorKind::Timeout {
            // The library's message names the agent's socket, a host path.
            tracing::warn!(error = %boxlite::error_chain(&e), "request timed out");
            "the box's agent did not answer in time".to_string()
        } else if kind != boxlite::ErrorKind::Internal {
            boxlite::error_chain(&e)
        } else {
            // Ours: the details go to the log, not to the caller.
            tracing::error!(error = %boxlite::error_chain(&e), "request failed");
            "internal error; the server's log has the details".to_string()
        };
        ApiError::new(status, code, message)
    }
}

/// The document's error `type` for a `code`.
pub fn error_type(code: &str) -> &'static str {
    match code {
        "invalid_argument" => "InvalidArgumentError",
        "unsupported" => "UnsupportedError",
        "unauthenticated" | "permission_denied" => "AuthError",
        "not_found" => "NotFoundError",
        "already_exists" => "AlreadyExistsError",
        "invalid_state" => "InvalidStateError",
        "stopped" => "StoppedError",
        "image_pull_failed" => "ImageError",
        "execution_failed" => "ExecutionError",
        "resource_exhausted" => "ResourceExhaustedError",
        "network_unavailable" => "NetworkError",
        "upstream_unavailable" => "UpstreamUnavailableError",
        "engine_unavailable" => "EngineError",
        "timeout" => "TimeoutError",
        _ => "InternalError",
    }
}

/// `ErrorResponse` of BoxLite's document; clients dispatch on `error.code`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// What went wrong (`ErrorModel` of the document).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = ErrorModel)]
pub struct ErrorBody {
    /// For people; never a host path or a secret.
    pub message: String,
    /// The error class, e.g. `NotFoundError`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Stable and machine-readable, e.g. `not_found`.
    pub code: String,
}

impl ApiError {
    /// The inside of the document's `ErrorResponse`.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            message: self.message.clone(),
            kind: error_type(self.code).to_string(),
            code: self.code.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse { error: self.body() };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was not read: the connection cannot carry another
            // request, and a client must not reuse it.
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxlite::BoxError;

    #[test]
    fn library_errors_map_to_statuses_and_internal_ones_say_nothing() {
        let nf: ApiError = boxlite::Error::Box(BoxError::NotFound("x".into())).into();
        assert_eq!((nf.status, nf.code), (StatusCode::NOT_FOUND, "not_found"));
        let busy: ApiError = boxlite::Error::Box(BoxError::Busy {
            id: "b".into(),
            state: boxlite::BoxState::Running,
        })
        .into();
        assert_eq!(busy.status, StatusCode::CONFLICT);
        let io: ApiError = boxlite::Error::Io {
            context: "reading /home/alice/.boxlite/secret".into(),
            source: std::io::Error::other("boom"),
        }
        .into();
        assert_eq!(io.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!io.message.contains("/home"), "{}", io.message);
    }
}
