//! Test fixtures for the interception path: a test CA and an HTTPS server on 127.0.0.1
//! that speaks HTTP/1.1 and HTTP/2 (by ALPN), records every request it receives (and the
//! decrypted bytes of every connection), and echoes requests back so tests can check that
//! nothing the upstream reflects carries a secret value into the box.
//!
//! Paths:
//! - any path: `200`, the request's headers echoed as `x-echo-<name>` response headers and
//!   as `name: value` lines in the body, then a blank line, then the request body;
//! - `/chunked`: the same body without a length, in 7-byte chunks;
//! - `/gzip`: a body with `Content-Encoding: gzip` (which the proxy must refuse to pass);
//! - `/ws` with `Upgrade`: `101`, then every byte is echoed back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A CA for test upstreams: the helper is told to trust it (`upstream_roots`).
pub struct TestCa {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCa")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "boxlite test upstream CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed");
        TestCa {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn pem(&self) -> String {
        self.pem.clone()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.der.clone()
    }

    /// A server configuration presenting a leaf for `names`, offering h2 and http/1.1.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().expect("key");
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        let chain = vec![cert.der().clone(), self.der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("cert");
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

/// One request as the fixture's HTTP layer saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

#[derive(Debug, Default)]
struct Log {
    requests: Vec<Recorded>,
    /// Decrypted bytes received, all connections concatenated.
    raw: Vec<u8>,
    connections: usize,
}

/// An HTTPS server on 127.0.0.1 (see the module docs for what it answers).
#[derive(Debug, Clone)]
pub struct HttpsFixture {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl HttpsFixture {
    /// Serve on the current tokio runtime.
    pub async fn start(config: Arc<rustls::ServerConfig>) -> HttpsFixture {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve(l, config)
    }

    /// Serve on a thread of its own (for synchronous tests); lives as long as the process.
    pub fn spawn(config: Arc<rustls::ServerConfig>) -> HttpsFixture {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let f = Self::start(config).await;
                let _ = tx.send(f);
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("fixture started")
    }

    fn serve(l: tokio::net::TcpListener, config: Arc<rustls::ServerConfig>) -> HttpsFixture {
        let addr = l.local_addr().expect("addr");
        let log: Arc<Mutex<Log>> = Arc::default();
        let f = HttpsFixture {
            addr,
            log: log.clone(),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        return;
                    };
                    if let Ok(mut l) = log.lock() {
                        l.connections += 1;
                    }
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let io = TokioIo::new(Recording {
                        inner: tls,
                        log: log.clone(),
                    });
                    let svc = hyper::service::service_fn(move |req| {
                        let log = log.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(req, log).await) }
                    });
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .max_header_list_size(1 << 20)
                            .serve_connection(io, svc)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .with_upgrades()
                            .await;
                    }
                });
            }
        });
        f
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log
            .lock()
            .map(|l| l.requests.clone())
            .unwrap_or_default()
    }

    /// Every decrypted byte received so far.
    pub fn raw(&self) -> Vec<u8> {
        self.log.lock().map(|l| l.raw.clone()).unwrap_or_default()
    }

    /// TLS handshakes completed.
    pub fn connections(&self) -> usize {
        self.log.lock().map(|l| l.connections).unwrap_or(0)
    }
}

type FixtureBody = BoxBody<Bytes, std::convert::Infallible>;

async fn answer(mut req: Request<Incoming>, log: Arc<Mutex<Log>>) -> Response<FixtureBody> {
    let upgrade = req
        .headers()
        .contains_key(http::header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .unwrap_or_default();
    let rec = Recorded {
        version: format!("{:?}", parts.version),
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: body.clone(),
    };
    if let Ok(mut l) = log.lock() {
        l.requests.push(rec.clone());
    }
    let mut echo = Vec::new();
    for (n, v) in &rec.headers {
        echo.extend_from_slice(n.as_bytes());
        echo.extend_from_slice(b": ");
        echo.extend_from_slice(v);
        echo.push(b'\n');
    }
    echo.push(b'\n');
    echo.extend_from_slice(&body);
    let mut resp = Response::builder().status(StatusCode::OK);
    for (n, v) in &rec.headers {
        if n.starts_with(':') || n == "host" || n == "content-length" {
            continue;
        }
        resp = resp.header(format!("x-echo-{n}"), v.as_slice());
    }
    let path = parts.uri.path();
    if path == "/ws"
        && let Some(up) = upgrade
    {
        tokio::spawn(async move {
            if let Ok(u) = up.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(u));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        return resp
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(http::header::CONNECTION, "upgrade")
            .header(http::header::UPGRADE, "websocket")
            .body(empty())
            .unwrap_or_default();
    }
    match path {
        "/chunked" => {
            let chunks = echo.chunks(7).map(Bytes::copy_from_slice).collect();
            resp.body(Chunks(chunks).boxed()).unwrap_or_default()
        }
        "/gzip" => resp
            .header(http::header::CONTENT_ENCODING, "gzip")
            .body(full(echo))
            .unwrap_or_default(),
        _ => resp.body(full(echo)).unwrap_or_default(),
    }
}

fn full(b: Vec<u8>) -> FixtureBody {
    Full::new(Bytes::from(b)).boxed()
}

fn empty() -> FixtureBody {
    full(Vec::new())
}

/// A body sent as the given chunks, one frame each, with no length.
struct Chunks(std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

/// An IO that appends every byte read to the fixture's raw log.
struct Recording<S> {
    inner: S,
    log: Arc<Mutex<Log>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &r
            && let Ok(mut l) = self.log.lock()
        {
            l.raw.extend_from_slice(&buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
