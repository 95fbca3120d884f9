//! A client of `boxlite serve`: the server's address, the API key, and what the server
//! answers, read with bounds and turned into typed errors. The remote CLI
//! (`boxlite --url`) and the SDKs' REST runtimes (`Boxlite.rest(...)`) share it; [`api`]
//! has the calls, [`attach`] an execution's streams over the attach WebSocket.
//!
//! Everything the server sends is treated as hostile: JSON bodies are read up to a limit,
//! its messages are stripped of control characters before they reach a terminal or an
//! exception, and a malformed answer is an error, never a panic.

pub mod api;
pub mod attach;

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use tokio_tungstenite::tungstenite;

/// The largest JSON answer read.
pub const MAX_JSON: usize = 16 << 20;
/// The largest error body read (its message is all that is shown).
const MAX_ERROR_BODY: usize = 1 << 20;
/// The largest single line of a progress stream.
pub const MAX_LINE: usize = 1 << 20;

/// Where the caller took the server's URL and key from, for messages that tell a user
/// what to change: the CLI's flag and variable, or an SDK's option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// E.g. `--url (or BOXLITE_URL)`.
    pub url: &'static str,
    /// E.g. `BOXLITE_API_KEY`.
    pub key: &'static str,
}

impl Origin {
    /// The CLI: `--url`/`BOXLITE_URL`, and the key in `BOXLITE_API_KEY`.
    pub const CLI: Origin = Origin {
        url: "--url (or BOXLITE_URL)",
        key: "BOXLITE_API_KEY",
    };
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "invalid {origin} {value:?}: {reason}; give http://HOST[:PORT][/PREFIX] or https://HOST[:PORT][/PREFIX]"
    )]
    InvalidUrl {
        origin: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid API key: {origin} holds characters an HTTP header cannot carry")]
    InvalidKey { origin: &'static str },
    #[error("invalid {what} {value:?}: `.`, `..` and empty names are not allowed")]
    InvalidName { what: &'static str, value: String },
    #[error("cannot reach the boxlite server at {url}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the server at {url} requires an API key: set {origin}")]
    NoKey { url: String, origin: &'static str },
    #[error("the server at {url} refused the API key: {origin} is missing or wrong")]
    BadKey { url: String, origin: &'static str },
    /// The server's own message (`{"error":{"message"}}`), cleaned for a terminal.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{what}: the server answered {status} without an error message")]
    Status { what: String, status: u16 },
    /// The execution's stream has ended: its stdin takes nothing more.
    #[error("{what}: the execution has ended (its stream from the server at {url} is closed)")]
    Ended { what: String, url: String },
    #[error("{what}: the server's answer is larger than {limit} bytes")]
    TooLarge { what: String, limit: usize },
    #[error("{what}: the server's answer is not what was expected: {reason}")]
    Malformed { what: String, reason: String },
    #[error("{what}: talking to the server at {url}")]
    Transport {
        what: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: the WebSocket to the server at {url}")]
    WebSocket {
        what: String,
        url: String,
        #[source]
        source: Box<tungstenite::Error>,
    },
}

/// Text from the server made safe for a terminal: control characters (escape sequences
/// included) are shown escaped, and it is cut at 4096 characters.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(4096));
    for (i, c) in s.chars().enumerate() {
        if i == 4096 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Where the server is: an `http` or `https` URL, optionally with a path prefix that
/// routes go under (`{url}/v1/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    base: Url,
    /// A routing segment after `v1` (BoxLite's `path_prefix`); none for `boxlite serve`.
    prefix: Option<String>,
    origin: Origin,
}

impl Endpoint {
    /// The CLI's endpoint: no routing prefix.
    pub fn parse(value: &str) -> Result<Endpoint, RemoteError> {
        Endpoint::parse_from(value, None, Origin::CLI)
    }

    /// An endpoint with an optional routing prefix (`{url}/v1/{prefix}/...`; empty is
    /// none), its messages naming `origin`.
    pub fn parse_from(
        value: &str,
        prefix: Option<&str>,
        origin: Origin,
    ) -> Result<Endpoint, RemoteError> {
        let bad = |shown: String, reason: &str| RemoteError::InvalidUrl {
            origin: origin.url,
            value: shown,
            reason: reason.to_string(),
        };
        let mut u =
            Url::parse(value.trim()).map_err(|e| bad(clean(value), &format!("not a URL ({e})")))?;
        if !u.username().is_empty() || u.password().is_some() {
            // Never echo a password back.
            let _ = u.set_username("");
            let _ = u.set_password(None);
            return Err(bad(
                u.to_string(),
                &format!(
                    "credentials do not go in the URL; put the API key in {}",
                    origin.key
                ),
            ));
        }
        if !matches!(u.scheme(), "http" | "https") {
            let reason = format!("the scheme {:?} is neither http nor https", u.scheme());
            return Err(bad(clean(value), &reason));
        }
        if u.host_str().is_none_or(str::is_empty) {
            return Err(bad(clean(value), "it names no host"));
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err(bad(clean(value), "a query or fragment has no meaning here"));
        }
        let prefix = match prefix.map(str::trim).filter(|p| !p.is_empty()) {
            None => None,
            Some(p) if p == "." || p == ".." || p.contains('/') => {
                return Err(bad(
                    clean(value),
                    &format!("the path prefix {:?} must be one path segment", clean(p)),
                ));
            }
            Some(p) => Some(p.to_string()),
        };
        Ok(Endpoint {
            base: u,
            prefix,
            origin,
        })
    }

    /// The base URL as given, for messages.
    pub fn shown(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    /// `{base}/v1/{segments}`, each segment percent-encoded (a `/` in one included).
    pub fn url(&self, segments: &[&str]) -> Result<Url, RemoteError> {
        let mut u = self.base.clone();
        {
            let Ok(mut p) = u.path_segments_mut() else {
                // Unreachable for http(s), which always have a path.
                return Err(RemoteError::InvalidUrl {
                    origin: self.origin.url,
                    value: self.shown(),
                    reason: "it cannot take a path".into(),
                });
            };
            p.pop_if_empty().push("v1");
            if let Some(prefix) = &self.prefix {
                p.push(prefix);
            }
            for s in segments {
                p.push(s);
            }
        }
        Ok(u)
    }

    /// The same as [`Endpoint::url`] with `ws` or `wss` for the scheme.
    pub fn ws_url(&self, segments: &[&str]) -> Result<Url, RemoteError> {
        let mut u = self.url(segments)?;
        let scheme = if u.scheme() == "https" { "wss" } else { "ws" };
        u.set_scheme(scheme).map_err(|()| RemoteError::InvalidUrl {
            origin: self.origin.url,
            value: self.shown(),
            reason: "it cannot be turned into a WebSocket URL".into(),
        })?;
        Ok(u)
    }
}

/// A box id or name, an execution id or a volume name as a path segment: the server's
/// router would read `.` and `..` as path steps.
pub fn segment<'a>(what: &'static str, value: &'a str) -> Result<&'a str, RemoteError> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(RemoteError::InvalidName {
            what,
            value: value.to_string(),
        });
    }
    Ok(value)
}

/// The API client: one HTTP connection pool, the endpoint and the key.
pub struct Client {
    http: reqwest::Client,
    pub ep: Endpoint,
    /// `Bearer <key>`, marked sensitive so no debug output shows it.
    auth: Option<HeaderValue>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("ep", &self.ep)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A WebSocket to the server.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A request body.
#[derive(Debug)]
pub enum Body {
    None,
    Json(serde_json::Value),
    Stream(reqwest::Body),
}

impl Client {
    /// The CLI's client for `url`, with the key from `BOXLITE_API_KEY`.
    pub fn from_env(url: &str) -> Result<Client, RemoteError> {
        let key = std::env::var("BOXLITE_API_KEY").ok();
        Client::new(Endpoint::parse(url)?, key.as_deref())
    }

    /// A client for `ep` with an API key (trimmed; empty is none).
    pub fn new(ep: Endpoint, key: Option<&str>) -> Result<Client, RemoteError> {
        let auth = match key.map(str::trim).filter(|k| !k.is_empty()) {
            Some(k) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| {
                    RemoteError::InvalidKey {
                        origin: ep.origin.key,
                    }
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| RemoteError::Transport {
                what: "setting up the HTTP client".into(),
                url: ep.shown(),
                source: e,
            })?;
        Ok(Client { http, ep, auth })
    }

    /// The error for a 401: no key given, or the wrong one.
    fn unauthorized(&self) -> RemoteError {
        let (url, origin) = (self.ep.shown(), self.ep.origin.key);
        if self.auth.is_none() {
            RemoteError::NoKey { url, origin }
        } else {
            RemoteError::BadKey { url, origin }
        }
    }

    fn transport(&self, what: &str, e: reqwest::Error) -> RemoteError {
        if e.is_connect() {
            return RemoteError::Connect {
                url: self.ep.shown(),
                source: innermost_io(&e),
            };
        }
        RemoteError::Transport {
            what: what.to_string(),
            url: self.ep.shown(),
            source: e.without_url(),
        }
    }

    /// Send a request and return the response if its status is a success; otherwise the
    /// server's error. `what` names the request in errors.
    pub async fn send(
        &self,
        what: &str,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Body,
        accept: Option<&'static str>,
    ) -> Result<reqwest::Response, RemoteError> {
        let mut url = self.ep.url(segments)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        tracing::debug!(%method, %url, "request");
        let mut req = self.http.request(method, url);
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        if let Some(a) = accept {
            req = req.header(ACCEPT, a);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(v.to_string()),
            Body::Stream(b) => req
                .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
                .body(b),
        };
        let resp = req.send().await.map_err(|e| self.transport(what, e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.error_of(what, resp).await)
    }

    /// The error a failed response carries.
    async fn error_of(&self, what: &str, mut resp: reqwest::Response) -> RemoteError {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return self.unauthorized();
        }
        let body = read_limited(&mut resp, MAX_ERROR_BODY).await.ok();
        error_from_body(what, status.as_u16(), body.as_deref())
    }

    /// A request whose answer is JSON, read up to [`MAX_JSON`] bytes.
    pub async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Body,
    ) -> Result<T, RemoteError> {
        let mut resp = self.send(what, method, segments, query, body, None).await?;
        let bytes = match read_limited(&mut resp, MAX_JSON).await {
            Ok(b) => b,
            Err(Limited::TooLarge) => {
                return Err(RemoteError::TooLarge {
                    what: what.to_string(),
                    limit: MAX_JSON,
                });
            }
            Err(Limited::Transport(e)) => return Err(self.transport(what, e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| RemoteError::Malformed {
            what: what.to_string(),
            reason: e.to_string(),
        })
    }

    /// A request whose answer has no body that matters.
    pub async fn call(
        &self,
        what: &str,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Body,
    ) -> Result<(), RemoteError> {
        self.send(what, method, segments, query, body, None)
            .await
            .map(drop)
    }

    /// Open the WebSocket at `segments`, with the key.
    pub async fn websocket(&self, what: &str, segments: &[&str]) -> Result<WebSocket, RemoteError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = self.ep.ws_url(segments)?;
        tracing::debug!(%url, "WebSocket");
        let ws_err = |e: tungstenite::Error| RemoteError::WebSocket {
            what: what.to_string(),
            url: self.ep.shown(),
            source: Box::new(e),
        };
        let mut req = url.as_str().into_client_request().map_err(ws_err)?;
        if let Some(a) = &self.auth {
            req.headers_mut().insert(AUTHORIZATION, a.clone());
        }
        // The server's frames are at most a chunk of output; this bounds a hostile one.
        let cfg = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(4 << 20))
            .max_frame_size(Some(4 << 20));
        match tokio_tungstenite::connect_async_with_config(req, Some(cfg), true).await {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                if status == 401 {
                    return Err(self.unauthorized());
                }
                let body = resp.body().as_deref().filter(|b| b.len() <= MAX_ERROR_BODY);
                Err(error_from_body(what, status, body))
            }
            Err(tungstenite::Error::Io(e)) => Err(RemoteError::Connect {
                url: self.ep.shown(),
                source: e,
            }),
            Err(e) => Err(ws_err(e)),
        }
    }
}

/// The server's `{"error":{"message","code"}}`, or its status alone.
fn error_from_body(what: &str, status: u16, body: Option<&[u8]>) -> RemoteError {
    let parsed =
        body.and_then(|b| serde_json::from_slice::<boxlite_server::error::ErrorResponse>(b).ok());
    match parsed {
        Some(o) => RemoteError::Api {
            status,
            code: clean(&o.error.code),
            message: clean(&o.error.message),
        },
        None => RemoteError::Status {
            what: what.to_string(),
            status,
        },
    }
}

/// The OS error under a connection failure (refused, unreachable, no such host).
fn innermost_io(e: &reqwest::Error) -> std::io::Error {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut last = None;
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            last = Some(std::io::Error::new(io.kind(), io.to_string()));
        }
        cur = c.source();
    }
    last.unwrap_or_else(|| {
        // DNS and TLS failures are not io errors; their innermost message says it.
        let mut msg = e.to_string();
        let mut cur = std::error::Error::source(e);
        while let Some(c) = cur {
            msg = c.to_string();
            cur = c.source();
        }
        std::io::Error::other(msg)
    })
}

#[derive(Debug)]
pub enum Limited {
    TooLarge,
    Transport(reqwest::Error),
}

/// A whole body, refusing more than `limit` bytes.
pub async fn read_limited(resp: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, Limited> {
    if resp
        .content_length()
        .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > limit))
    {
        return Err(Limited::TooLarge);
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Limited::Transport)? {
        if out.len() + chunk.len() > limit {
            return Err(Limited::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_go_under_v1_after_any_path_prefix() {
        let ep = Endpoint::parse("http://127.0.0.1:8100").unwrap();
        assert_eq!(
            ep.url(&["boxes", "b1", "start"]).unwrap().as_str(),
            "http://127.0.0.1:8100/v1/boxes/b1/start"
        );
        let ep = Endpoint::parse("https://host.example/api/").unwrap();
        assert_eq!(
            ep.url(&["boxes"]).unwrap().as_str(),
            "https://host.example/api/v1/boxes"
        );
        let ep = Endpoint::parse("http://h:1/a/b").unwrap();
        assert_eq!(ep.url(&[]).unwrap().as_str(), "http://h:1/a/b/v1");
        assert_eq!(
            ep.ws_url(&["x"]).unwrap().as_str(),
            "ws://h:1/a/b/v1/x",
            "http becomes ws"
        );
        let tls = Endpoint::parse("https://h").unwrap();
        assert_eq!(tls.ws_url(&["x"]).unwrap().scheme(), "wss");
    }

    #[test]
    fn a_path_prefix_goes_after_v1_and_must_be_one_segment() {
        let o = Origin {
            url: "BoxliteRestOptions.url",
            key: "credential",
        };
        let ep = Endpoint::parse_from("http://h:1/api", Some("acme"), o).unwrap();
        assert_eq!(
            ep.url(&["boxes"]).unwrap().as_str(),
            "http://h:1/api/v1/acme/boxes"
        );
        let ep = Endpoint::parse_from("http://h:1", Some(" "), o).unwrap();
        assert_eq!(ep.url(&["boxes"]).unwrap().as_str(), "http://h:1/v1/boxes");
        for bad in ["a/b", "..", "."] {
            let e = Endpoint::parse_from("http://h", Some(bad), o)
                .unwrap_err()
                .to_string();
            assert!(e.contains("one path segment"), "{bad}: {e}");
            assert!(e.starts_with("invalid BoxliteRestOptions.url"), "{e}");
        }
        let e = Endpoint::parse_from("http://u:pw@h", None, o)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("put the API key in credential") && !e.contains("pw"),
            "{e}"
        );
    }

    #[test]
    fn path_segments_are_encoded_not_interpreted() {
        let ep = Endpoint::parse("http://h").unwrap();
        assert_eq!(
            ep.url(&["boxes", "a/b?c#d"]).unwrap().as_str(),
            "http://h/v1/boxes/a%2Fb%3Fc%23d"
        );
        assert!(segment("box", "..").is_err());
        assert!(segment("box", ".").is_err());
        assert!(segment("box", "").is_err());
        assert_eq!(segment("box", "web").unwrap(), "web");
    }

    #[test]
    fn bad_urls_are_refused_naming_the_value_and_never_a_password() {
        for (bad, says) in [
            ("localhost:8100", "neither http nor https"),
            ("ftp://h", "neither http nor https"),
            ("not a url", "not a URL"),
            ("http://h/?x=1", "query"),
            ("http://", "not a URL"),
        ] {
            let e = Endpoint::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains("http://HOST"), "{bad}: {e}");
        }
        let e = Endpoint::parse("http://me:s3cret@h:1")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(e.contains("BOXLITE_API_KEY"), "{e}");
    }

    #[test]
    fn server_text_is_cleaned_of_terminal_escapes() {
        assert_eq!(clean("a\x1b[2Jb\n"), "a\\u{1b}[2Jb\\n");
        assert_eq!(clean(&"x".repeat(5000)).chars().count(), 4097);
    }

    #[test]
    fn error_bodies_give_the_servers_message_or_the_status() {
        let e = error_from_body(
            "x",
            404,
            Some(br#"{"error":{"message":"box \"nope\" not found","type":"NotFoundError","code":"not_found"}}"#),
        );
        assert!(matches!(e, RemoteError::Api { status: 404, .. }));
        assert_eq!(e.to_string(), "box \"nope\" not found");
        let e = error_from_body("getting box b", 502, Some(b"<html>"));
        assert_eq!(
            e.to_string(),
            "getting box b: the server answered 502 without an error message"
        );
    }
}
