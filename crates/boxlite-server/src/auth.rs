//! The bearer API key: `Authorization: Bearer <key>`, compared in constant time.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// A key; its value is never printed.
#[derive(Clone)]
pub struct ApiKey(std::sync::Arc<[u8]>);

impl ApiKey {
    /// A key from its text, trimmed of surrounding white space (a file's final newline).
    /// An empty key is none.
    pub fn new(text: &str) -> Option<ApiKey> {
        let t = text.trim();
        (!t.is_empty()).then(|| ApiKey(t.as_bytes().into()))
    }

    /// Whether `presented` is this key, in time that does not depend on where they
    /// differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.0.ct_eq(presented))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Refuse a request without the key (when one is set).
pub async fn require_key(
    State(key): State<Option<ApiKey>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(key) = &key {
        let presented = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if !key.matches(presented) {
            return Err(ApiError::unauthorized());
        }
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly_and_empty_keys_are_none() {
        let k = ApiKey::new("s3cret\n").unwrap();
        assert!(k.matches(b"s3cret"));
        assert!(!k.matches(b"s3cre"));
        assert!(!k.matches(b"s3cret2"));
        assert!(!k.matches(b""));
        assert!(ApiKey::new(" \n").is_none());
        assert_eq!(format!("{k:?}"), "ApiKey(<redacted>)");
    }
}
