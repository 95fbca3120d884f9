//! The interception path: one guest TLS connection to a secret's host, terminated here
//! and proxied to the real host, request by request.
//!
//! The engine has already decided the connection (the egress policy approved it, its SNI
//! is a secret host, and that name resolved to the destination in this box's own DNS) and
//! dialled the destination. Here:
//! 1. the guest's ClientHello is read ([`LazyConfigAcceptor`]);
//! 2. TLS to the upstream is completed first, verified against the system roots plus the
//!    configured extra roots, offering the protocols the guest offered. A certificate that
//!    does not verify ends the connection before the guest's handshake completes, so not
//!    one request, and no secret, is ever written to that peer;
//! 3. the guest's handshake completes with a leaf of the per-box CA for that name, and
//!    only the protocol the upstream chose (so HTTP/2 meets HTTP/2, HTTP/1.1 meets
//!    HTTP/1.1, and no request is translated);
//! 4. hyper serves the guest and a hyper client speaks to the upstream. Each request
//!    whose `Host`/`:authority` is the SNI gets its placeholders replaced (headers, query,
//!    and the body when a secret opts in) and asks for an identity-encoded response; any
//!    other authority gets 421 and is not sent. Responses are scrubbed: every form of a
//!    value the helper sent, and every secret's raw value, is turned back into what the
//!    guest wrote before any byte reaches the guest.
//!
//! hyper reassembles HTTP/1 heads and HTTP/2 HEADERS + CONTINUATION, so a placeholder split
//! across TCP segments, TLS records or frames is whole by the time it is matched; bodies
//! are matched by a streaming replacer that carries a tail across chunks.

use std::convert::Infallible;
use std::net::SocketAddrV4;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};

use super::SecretSet;
use super::ca::{CaError, CertAuthority};
use super::subst::{Reflections, StreamReplacer, Substituter};
use crate::control::{LogEntry, Shared};
use crate::policy::{normalize_name, quote_within};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// How long each TLS handshake (guest and upstream) may take.
const HANDSHAKE: Duration = Duration::from_secs(20);
/// Request bodies up to this size are substituted whole, with a correct `Content-Length`;
/// larger ones stream with chunked framing.
const BUFFER_REQUEST: u64 = 8 << 20;
/// Response bodies up to this size are scrubbed whole and keep a `Content-Length`.
const BUFFER_RESPONSE: u64 = 1 << 20;
/// The largest HTTP/2 header block a guest may send (hyper's default is 16 KiB, below
/// what real clients send with large cookies or tokens).
const MAX_HEADER_LIST: u32 = 256 * 1024;
/// The most of a request path the decision log quotes.
const MAX_LOGGED_PATH: usize = 200;
const H2: &[u8] = b"h2";
const H1: &[u8] = b"http/1.1";

#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error("the box's secrets are invalid")]
    Secrets(#[source] super::SecretError),
    #[error("minting the box's CA")]
    Ca(#[source] CaError),
    #[error("upstream_ca_files: entry {index} holds no PEM certificate")]
    NoRoot { index: usize },
    #[error("upstream_ca_files: entry {index} is not a usable certificate: {problem}")]
    BadRoot { index: usize, problem: String },
    #[error(
        "no trusted roots at all: the host has no system certificates and none were configured"
    )]
    NoRoots,
    #[error("building the TLS configuration")]
    Tls(#[source] rustls::Error),
}

/// What every intercepted connection of one box shares: the secrets, the CA, and the
/// upstream TLS configuration.
pub struct Interceptor {
    secrets: SecretSet,
    ca: CertAuthority,
    upstream: rustls::ClientConfig,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor").finish_non_exhaustive()
    }
}

impl Interceptor {
    /// Mints the box's CA and loads the upstream roots: the host's system roots plus
    /// `extra_roots` (PEM texts). Fails rather than run with secrets it cannot protect.
    pub fn new(
        secrets: SecretSet,
        extra_roots: &[String],
        now: SystemTime,
    ) -> Result<Interceptor, InterceptError> {
        let ca = CertAuthority::mint(&secrets.patterns(), now).map_err(InterceptError::Ca)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        for (index, pem) in extra_roots.iter().enumerate() {
            use rustls::pki_types::pem::PemObject;
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.as_bytes())
                    .filter_map(Result::ok)
                    .collect();
            if certs.is_empty() {
                return Err(InterceptError::NoRoot { index });
            }
            for c in certs {
                roots.add(c).map_err(|e| InterceptError::BadRoot {
                    index,
                    problem: e.to_string(),
                })?;
            }
        }
        if roots.is_empty() {
            return Err(InterceptError::NoRoots);
        }
        let upstream = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(InterceptError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Interceptor {
            secrets,
            ca,
            upstream,
            provider,
        })
    }

    /// The CA certificate the box must trust (public).
    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem()
    }

    /// Does any secret belong to `name` (normalized).
    pub fn covers(&self, name: &str) -> bool {
        self.secrets.covers(name)
    }

    /// Serve one intercepted connection until either side is done. `guest` carries the
    /// guest's bytes from its ClientHello on; `upstream` is connected to the approved
    /// destination; `authority` is the SNI the engine decided on.
    pub async fn serve<G>(
        self: Arc<Self>,
        guest: G,
        upstream: TcpStream,
        authority: String,
        dst: SocketAddrV4,
        shared: Arc<Shared>,
    ) where
        G: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let log = |verdict: &str, reason: String, names: Vec<String>| {
            shared.log(LogEntry::secret(dst, &authority, verdict, reason, names));
        };
        let start = match tokio::time::timeout(
            HANDSHAKE,
            LazyConfigAcceptor::new(rustls::server::Acceptor::default(), guest),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return log("error", format!("guest tls: {e}"), Vec::new()),
            Err(_) => return log("error", "guest tls: timed out".into(), Vec::new()),
        };
        let hello = start.client_hello();
        let sni = hello.server_name().and_then(|n| normalize_name(n).ok());
        if sni.as_deref() != Some(authority.as_str()) {
            // The engine read this very ClientHello; anything else is a guest playing games.
            return log(
                "deny",
                "the client hello changed between the peek and the handshake".into(),
                Vec::new(),
            );
        }
        let offered: Vec<Vec<u8>> = hello
            .alpn()
            .map(|protos| {
                protos
                    .filter(|p| *p == H2 || *p == H1)
                    .map(<[u8]>::to_vec)
                    .collect()
            })
            .unwrap_or_default();

        // The upstream first: nothing is sent to a peer whose certificate fails.
        let mut cfg = self.upstream.clone();
        cfg.alpn_protocols = if offered.is_empty() {
            vec![H1.to_vec()]
        } else {
            offered.clone()
        };
        let Ok(server_name) = ServerName::try_from(authority.clone()) else {
            return log(
                "error",
                "the sni is not a valid server name".into(),
                Vec::new(),
            );
        };
        let up = match tokio::time::timeout(
            HANDSHAKE,
            TlsConnector::from(Arc::new(cfg)).connect(server_name, upstream),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return log(
                    "deny",
                    format!("upstream tls failed, nothing was sent: {e}"),
                    Vec::new(),
                );
            }
            Err(_) => {
                return log(
                    "deny",
                    "upstream tls timed out, nothing was sent".into(),
                    Vec::new(),
                );
            }
        };
        let h2 = up.get_ref().1.alpn_protocol() == Some(H2);

        let leaf = match self.ca.leaf(&authority) {
            Ok(l) => l,
            Err(e) => return log("error", format!("issuing a leaf: {e}"), Vec::new()),
        };
        let mut server = match rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
        {
            Ok(b) => b
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(OneCert(leaf))),
            Err(e) => return log("error", format!("guest tls config: {e}"), Vec::new()),
        };
        server.alpn_protocols = if offered.is_empty() {
            Vec::new()
        } else if h2 {
            vec![H2.to_vec()]
        } else {
            vec![H1.to_vec()]
        };
        let guest_tls =
            match tokio::time::timeout(HANDSHAKE, start.into_stream(Arc::new(server))).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return log("error", format!("guest tls: {e}"), Vec::new()),
                Err(_) => return log("error", "guest tls: timed out".into(), Vec::new()),
            };

        let in_scope = self.secrets.for_host(&authority);
        let names: Vec<String> = in_scope.iter().map(|s| s.name.clone()).collect();
        log(
            "intercept",
            format!(
                "secret host: substituting {} over {}",
                names.join(", "),
                if h2 { "h2" } else { "http/1.1" }
            ),
            names,
        );
        let Some(upstream) = Upstream::connect(up, h2).await else {
            return log(
                "error",
                "the http handshake with the upstream failed".into(),
                Vec::new(),
            );
        };
        let conn = Arc::new(Conn {
            authority: authority.clone(),
            sub: Substituter::new(&in_scope),
            names: in_scope.iter().map(|s| s.name.clone()).collect(),
            sent: Mutex::new(Reflections::new(self.secrets.all())),
            upstream,
            dst,
            shared: shared.clone(),
        });
        let svc = hyper::service::service_fn(move |req| {
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(conn.handle(req).await) }
        });
        let io = TokioIo::new(guest_tls);
        if h2 {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .max_header_list_size(MAX_HEADER_LIST)
                .serve_connection(io, svc)
                .await;
        } else {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .with_upgrades()
                .await;
        }
    }
}

/// A rustls resolver that always presents one certificate.
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The client half toward the upstream, in the protocol the upstream chose.
enum Upstream {
    H1(tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<ProxyBody>>),
    H2(hyper::client::conn::http2::SendRequest<ProxyBody>),
}

impl Upstream {
    async fn connect<S>(io: S, h2: bool) -> Option<Upstream>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .max_header_list_size(MAX_HEADER_LIST)
                .handshake(io)
                .await
                .ok()?;
            tokio::spawn(conn);
            Some(Upstream::H2(send))
        } else {
            let (send, conn) = hyper::client::conn::http1::Builder::new()
                .handshake(io)
                .await
                .ok()?;
            tokio::spawn(conn.with_upgrades());
            Some(Upstream::H1(tokio::sync::Mutex::new(send)))
        }
    }

    async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, hyper::Error> {
        match self {
            // One request at a time: the guest's HTTP/1 connection is served in order.
            Upstream::H1(send) => {
                let mut send = send.lock().await;
                send.ready().await?;
                send.send_request(req).await
            }
            Upstream::H2(send) => {
                let mut send = send.clone();
                send.ready().await?;
                send.send_request(req).await
            }
        }
    }
}

/// One intercepted connection.
struct Conn {
    authority: String,
    sub: Substituter,
    /// The secrets in scope, by name, for the log.
    names: Vec<String>,
    /// Every form of a value sent on this connection, for scrubbing its responses.
    sent: Mutex<Reflections>,
    upstream: Upstream,
    dst: SocketAddrV4,
    shared: Arc<Shared>,
}

impl Conn {
    fn log(&self, verdict: &str, reason: String, names: Vec<String>) {
        self.shared.log(LogEntry::secret(
            self.dst,
            &self.authority,
            verdict,
            reason,
            names,
        ));
    }

    /// The authority a request names: `:authority` (HTTP/2, or an absolute-form target)
    /// and `Host` must agree, and be the SNI.
    fn authority_matches(&self, req: &Request<Incoming>) -> bool {
        let from_uri = req.uri().authority().map(|a| a.host().to_owned());
        let mut hosts = req.headers().get_all(header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (None, _) => None,
            (Some(h), None) => match h.to_str() {
                Ok(h) => Some(strip_port(h).to_owned()),
                Err(_) => return false,
            },
            (Some(_), Some(_)) => return false,
        };
        let names: Vec<String> = from_uri.into_iter().chain(host).collect();
        !names.is_empty()
            && names
                .iter()
                .all(|n| normalize_name(n).is_ok_and(|n| n == self.authority))
    }

    async fn handle(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        if !self.authority_matches(&req) {
            self.log(
                "deny",
                "request authority differs from the sni: 421, not sent, nothing substituted".into(),
                Vec::new(),
            );
            return text(
                StatusCode::MISDIRECTED_REQUEST,
                "boxlite: this request names another host than the TLS connection it came on",
            );
        }
        let upgrade = req
            .headers()
            .contains_key(header::UPGRADE)
            .then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let mut changed = false;
        {
            let Ok(mut sent) = self.sent.lock() else {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "boxlite: internal error");
            };
            for (name, value) in parts.headers.iter_mut() {
                if let Some(new) = self.sub.header_value(name, value.as_bytes(), &mut sent) {
                    match HeaderValue::from_bytes(&new) {
                        Ok(mut v) => {
                            // Never HPACK-indexed toward the upstream.
                            v.set_sensitive(true);
                            *value = v;
                            changed = true;
                        }
                        Err(_) => {
                            return text(
                                StatusCode::BAD_REQUEST,
                                "boxlite: a substituted header would not be a valid header",
                            );
                        }
                    }
                }
            }
            if let Some(q) = parts.uri.query()
                && let Some(new_q) = self.sub.query(q, &mut sent)
            {
                let path = parts.uri.path();
                let mut uparts = parts.uri.clone().into_parts();
                match format!("{path}?{new_q}").parse() {
                    Ok(pq) => {
                        uparts.path_and_query = Some(pq);
                        if let Ok(u) = http::Uri::from_parts(uparts) {
                            parts.uri = u;
                            changed = true;
                        }
                    }
                    Err(_) => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            "boxlite: the substituted query would not be a valid URI",
                        );
                    }
                }
            }
        }
        // Bodies must be scannable as they stream back.
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        // WebSocket frames pass through as they are; compressed frames could hide a value.
        parts.headers.remove("sec-websocket-extensions");

        let body: ProxyBody = if self.sub.body_enabled() {
            let replacer = match self.sent.lock() {
                Ok(mut sent) => self.sub.body_replacer(&mut sent),
                Err(_) => {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, "boxlite: internal error");
                }
            };
            changed = true;
            match content_length(&parts.headers) {
                Some(n) if n <= BUFFER_REQUEST => {
                    match Limited::new(body, usize::try_from(BUFFER_REQUEST).unwrap_or(usize::MAX))
                        .collect()
                        .await
                    {
                        Ok(c) => {
                            let bytes = rewrite_all(replacer, &c.to_bytes());
                            parts
                                .headers
                                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                            full(bytes)
                        }
                        Err(_) => {
                            return text(
                                StatusCode::BAD_REQUEST,
                                "boxlite: the request body ended early",
                            );
                        }
                    }
                }
                _ => {
                    parts.headers.remove(header::CONTENT_LENGTH);
                    Rewrite::new(body.map_err(BoxError::from).boxed(), replacer, None).boxed()
                }
            }
        } else {
            body.map_err(BoxError::from).boxed()
        };
        if changed {
            self.log(
                "substitute",
                format!(
                    "{} {}",
                    parts.method,
                    quote_within(parts.uri.path(), MAX_LOGGED_PATH)
                ),
                self.names.clone(),
            );
        }
        let head_only = parts.method == http::Method::HEAD;
        let resp = match self.upstream.send(Request::from_parts(parts, body)).await {
            Ok(r) => r,
            Err(e) => {
                self.log("error", format!("upstream request failed: {e}"), Vec::new());
                return text(
                    StatusCode::BAD_GATEWAY,
                    "boxlite: the upstream request failed",
                );
            }
        };
        self.respond(resp, upgrade, head_only).await
    }

    async fn respond(
        &self,
        mut resp: Response<Incoming>,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        head_only: bool,
    ) -> Response<ProxyBody> {
        let sent = match self.sent.lock() {
            Ok(s) => s.clone(),
            Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "boxlite: internal error"),
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(guest_up) = upgrade else {
                return text(
                    StatusCode::BAD_GATEWAY,
                    "boxlite: the upstream switched protocols unasked",
                );
            };
            let upstream_up = hyper::upgrade::on(&mut resp);
            let (mut parts, _) = resp.into_parts();
            scrub_headers(&mut parts.headers, &sent);
            tokio::spawn(splice_upgraded(guest_up, upstream_up));
            return Response::from_parts(parts, full(Bytes::new()));
        }
        let (mut parts, body) = resp.into_parts();
        scrub_headers(&mut parts.headers, &sent);
        let no_body = head_only
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED
            || parts.status.is_informational();
        if no_body {
            return Response::from_parts(parts, full(Bytes::new()));
        }
        if let Some(enc) = parts.headers.get(header::CONTENT_ENCODING)
            && !enc.as_bytes().eq_ignore_ascii_case(b"identity")
        {
            self.log(
                "deny",
                "the upstream sent an encoded body that cannot be scanned for secret values: 502"
                    .into(),
                Vec::new(),
            );
            return text(
                StatusCode::BAD_GATEWAY,
                "boxlite: the upstream answered with a compressed body, which cannot be checked for secret values",
            );
        }
        let scrubber = sent.body_scrubber();
        match content_length(&parts.headers) {
            Some(n) if n <= BUFFER_RESPONSE => {
                match Limited::new(body, usize::try_from(BUFFER_RESPONSE).unwrap_or(usize::MAX))
                    .collect()
                    .await
                {
                    Ok(c) => {
                        let bytes = rewrite_all(scrubber, &c.to_bytes());
                        parts
                            .headers
                            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                        Response::from_parts(parts, full(bytes))
                    }
                    Err(_) => text(
                        StatusCode::BAD_GATEWAY,
                        "boxlite: the upstream response ended early",
                    ),
                }
            }
            _ => {
                parts.headers.remove(header::CONTENT_LENGTH);
                Response::from_parts(
                    parts,
                    Rewrite::new(body.map_err(BoxError::from).boxed(), scrubber, Some(sent))
                        .boxed(),
                )
            }
        }
    }
}

/// Joins the guest's and the upstream's upgraded connections (WebSocket): bytes pass
/// through unchanged, and when either side is done both are closed.
async fn splice_upgraded(guest: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (Ok(g), Ok(u)) = tokio::join!(guest, upstream) else {
        return;
    };
    let (mut g, mut u) = (TokioIo::new(g), TokioIo::new(u));
    let (mut gr, mut gw) = tokio::io::split(&mut g);
    let (mut ur, mut uw) = tokio::io::split(&mut u);
    tokio::select! {
        _ = tokio::io::copy(&mut gr, &mut uw) => {}
        _ = tokio::io::copy(&mut ur, &mut gw) => {}
    }
    // Dropping both ends closes both directions together.
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn text(status: StatusCode, msg: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(full(format!("{msg}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn scrub_headers(headers: &mut HeaderMap, sent: &Reflections) {
    for value in headers.values_mut() {
        if let Some(clean) = sent.scrub_header(value.as_bytes()) {
            // A scrubbed value that is no longer a valid header is emptied rather than
            // passed through as it was.
            *value =
                HeaderValue::from_bytes(&clean).unwrap_or_else(|_| HeaderValue::from_static(""));
        }
    }
}

fn rewrite_all(mut r: StreamReplacer, input: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(input.len());
    r.push(input, &mut out);
    r.finish(&mut out);
    out.into()
}

/// A body passed through a [`StreamReplacer`].
struct Rewrite {
    inner: ProxyBody,
    replacer: StreamReplacer,
    /// Scrubs the trailers of a response (gRPC status messages can echo a request).
    trailer_scrub: Option<Reflections>,
    /// Trailers held until the replacer's tail is out.
    trailers: Option<HeaderMap>,
    done: bool,
}

impl Rewrite {
    fn new(
        inner: ProxyBody,
        replacer: StreamReplacer,
        trailer_scrub: Option<Reflections>,
    ) -> Rewrite {
        Rewrite {
            inner,
            replacer,
            trailer_scrub,
            trailers: None,
            done: false,
        }
    }
}

impl Body for Rewrite {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.done {
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let mut out = Vec::with_capacity(data.len());
                        self.replacer.push(&data, &mut out);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(mut t) = frame.into_trailers() {
                            if let Some(r) = &self.trailer_scrub {
                                scrub_headers(&mut t, r);
                            }
                            self.trailers = Some(t);
                        }
                    }
                },
                Poll::Ready(None) => {
                    self.done = true;
                    let mut out = Vec::new();
                    self.replacer.finish(&mut out);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
