//! Secret substitution, in process and without a VM: the interception proxy driven by real
//! rustls and hyper clients over an in-memory stream, and the whole helper driven by the
//! fake guest (policy first, SNI to a secret host, interception), against recording HTTPS
//! fixtures on 127.0.0.1 signed by a test CA the helper is told to trust.
//!
//! Every test asserts over what the upstream received *and* over every byte the guest
//! received: the value must reach the one, and never the other.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use boxlite_net::config::{HostEntry, NetConfig, SecretConfig, SecretValue};
use boxlite_net::control::Shared;
use boxlite_net::fake_guest::Harness;
use boxlite_net::secrets::proxy::Interceptor;
use boxlite_net::secrets::{SecretSet, default_placeholder};
use boxlite_net::tls_fixture::{HttpsFixture, TestCa};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VALUE: &str = "sk-live-0123456789abcdefREAL";
const OTHER_VALUE: &str = "other-secret-value-XYZ";
const HOST: &str = "api.example.com";
const T: Duration = Duration::from_secs(20);

fn secret(name: &str, hosts: &[&str], value: &str, body: bool) -> SecretConfig {
    SecretConfig {
        name: name.into(),
        placeholder: default_placeholder(name),
        hosts: hosts.iter().map(|h| (*h).into()).collect(),
        value: SecretValue::new(value.into()),
        body,
    }
}

fn ph(name: &str) -> String {
    default_placeholder(name)
}

fn count(hay: &[u8], needle: &str) -> usize {
    let n = needle.as_bytes();
    hay.windows(n.len()).filter(|w| *w == n).count()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    count(hay, needle) > 0
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A guest-side TLS client that trusts only `ca_pem`.
fn client_config(
    ca_pem: &str,
    alpn: &[&[u8]],
    fragment: Option<usize>,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg.max_fragment_size = fragment;
    Arc::new(cfg)
}

/// The interception proxy with its own upstream fixture.
struct Rig {
    interceptor: Arc<Interceptor>,
    fixture: HttpsFixture,
    shared: Arc<Shared>,
}

impl Rig {
    async fn new(secrets: Vec<SecretConfig>, fixture_names: &[&str]) -> Rig {
        let upstream_ca = TestCa::new();
        let fixture = HttpsFixture::start(upstream_ca.server_config(fixture_names)).await;
        let set = SecretSet::new(&secrets).unwrap();
        let interceptor =
            Arc::new(Interceptor::new(set, &[upstream_ca.pem()], SystemTime::now()).unwrap());
        Rig {
            interceptor,
            fixture,
            shared: Arc::new(Shared::new(None)),
        }
    }

    /// One intercepted connection for `authority`: the guest's TLS stream, trusting only
    /// the box's CA.
    async fn connect(
        &self,
        authority: &str,
        alpn: &[&[u8]],
        fragment: Option<usize>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::io::DuplexStream>> {
        let (guest, proxy) = tokio::io::duplex(64 * 1024);
        let upstream = tokio::net::TcpStream::connect(self.fixture.addr).await?;
        tokio::spawn(self.interceptor.clone().serve(
            proxy,
            upstream,
            authority.to_owned(),
            SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 443),
            self.shared.clone(),
        ));
        let cfg = client_config(&self.interceptor.ca_pem(), alpn, fragment);
        tokio_rustls::TlsConnector::from(cfg)
            .connect(ServerName::try_from(authority.to_owned()).unwrap(), guest)
            .await
    }

    /// An HTTP/1.1 exchange written in `pieces` (each its own TLS record); returns every
    /// byte the guest received.
    async fn h1(&self, pieces: &[&[u8]], fragment: Option<usize>) -> Vec<u8> {
        let mut tls = self.connect(HOST, &[b"http/1.1"], fragment).await.unwrap();
        for p in pieces {
            tls.write_all(p).await.unwrap();
            tls.flush().await.unwrap();
        }
        let mut got = Vec::new();
        let _ = tokio::time::timeout(T, tls.read_to_end(&mut got)).await;
        got
    }

    fn log_text(&self) -> String {
        serde_json::to_string(&self.shared.entries()).unwrap()
    }
}

/// The placeholder percent-encoded, as clients write it in a query (`<` and `>` are not
/// valid in a request target).
fn ph_query(name: &str) -> String {
    ph(name)
        .replace('<', "%3C")
        .replace('>', "%3E")
        .replace(':', "%3A")
}

fn request(extra: &str) -> String {
    format!(
        "GET /v1/models?key={q}&x=1 HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {p}\r\n{extra}Connection: close\r\n\r\n",
        p = ph("KEY"),
        q = ph_query("KEY"),
    )
}

#[tokio::test]
async fn http1_headers_and_query_get_the_value_and_the_echo_comes_back_as_the_placeholder() {
    let rig = Rig::new(vec![secret("KEY", &[HOST], VALUE, false)], &[HOST]).await;
    let got = rig.h1(&[request("").as_bytes()], None).await;
    let reqs = rig.fixture.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let r = &reqs[0];
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {VALUE}").as_bytes())
    );
    assert!(r.uri.contains(&format!("key={VALUE}&x=1")), "{}", r.uri);
    assert_eq!(r.header("accept-encoding"), Some(&b"identity"[..]));
    // The fixture echoed the value in a header and the body; the guest sees placeholders.
    assert!(!contains(&got, VALUE), "{}", String::from_utf8_lossy(&got));
    assert!(contains(
        &got,
        &format!("x-echo-authorization: Bearer {}", ph("KEY"))
    ));
    assert!(contains(
        &got,
        &format!("authorization: Bearer {}", ph("KEY"))
    ));
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let log = rig.log_text();
    assert!(
        log.contains("\"intercept\"") && log.contains("\"substitute\""),
        "{log}"
    );
    assert!(!log.contains(VALUE));
}

#[tokio::test]
async fn a_placeholder_split_at_every_offset_and_in_one_byte_records_is_replaced_exactly_once() {
    let rig = Rig::new(vec![secret("KEY", &[HOST], VALUE, false)], &[HOST]).await;
    let req = request("");
    let bytes = req.as_bytes();
    let start = req.find("Authorization").unwrap();
    let end = start + 40 + ph("KEY").len();
    for k in start..end {
        let got = rig.h1(&[&bytes[..k], &bytes[k..]], None).await;
        assert!(!contains(&got, VALUE), "split at {k}");
    }
    // One byte per TLS record, the whole request.
    let ones: Vec<&[u8]> = bytes.chunks(1).collect();
    let got = rig.h1(&ones, None).await;
    assert!(!contains(&got, VALUE));
    // Tiny records (32 bytes, the smallest rustls allows) from the TLS layer itself.
    let got = rig.h1(&[bytes], Some(32)).await;
    assert!(!contains(&got, VALUE));
    let reqs = rig.fixture.requests();
    assert_eq!(reqs.len(), end - start + 2);
    for r in &reqs {
        let auth = r.header("authorization").unwrap();
        assert_eq!(count(auth, VALUE), 1, "{}", String::from_utf8_lossy(auth));
        assert_eq!(count(r.uri.as_bytes(), VALUE), 1, "{}", r.uri);
    }
}

#[tokio::test]
async fn keep_alive_basic_auth_and_a_secret_out_of_scope() {
    let rig = Rig::new(
        vec![
            secret("KEY", &[HOST], VALUE, false),
            secret("OTHER", &["other.example.com"], OTHER_VALUE, false),
        ],
        &[HOST],
    )
    .await;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let basic = b64.encode(format!("user:{}", ph("KEY")));
    let first = format!(
        "GET /a HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Basic {basic}\r\nX-Other: {}\r\n\r\n",
        ph("OTHER")
    );
    let second = format!(
        "GET /b HTTP/1.1\r\nHost: {HOST}:443\r\nX-Api-Key: {}\r\nConnection: close\r\n\r\n",
        ph("KEY")
    );
    let got = rig.h1(&[first.as_bytes(), second.as_bytes()], None).await;
    let reqs = rig.fixture.requests();
    assert_eq!(reqs.len(), 2, "both requests on one connection");
    assert_eq!(rig.fixture.connections(), 1);
    let sent = reqs[0].header("authorization").unwrap();
    let token = std::str::from_utf8(sent)
        .unwrap()
        .strip_prefix("Basic ")
        .unwrap();
    assert_eq!(
        b64.decode(token).unwrap(),
        format!("user:{VALUE}").as_bytes()
    );
    // A secret of another host is never sent here: its placeholder goes out unchanged.
    assert_eq!(reqs[0].header("x-other"), Some(ph("OTHER").as_bytes()));
    assert_eq!(reqs[1].header("x-api-key"), Some(VALUE.as_bytes()));
    // The echoed Basic token is the guest's own again.
    assert!(contains(
        &got,
        &format!("x-echo-authorization: Basic {basic}")
    ));
    assert!(!contains(&got, VALUE) && !contains(&got, OTHER_VALUE));
    assert!(
        !contains(&got, token),
        "the substituted basic token reached the guest"
    );
}

#[tokio::test]
async fn a_request_for_another_authority_gets_421_and_is_never_sent() {
    let rig = Rig::new(vec![secret("KEY", &[HOST], VALUE, false)], &[HOST]).await;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: evil.test\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        ph("KEY")
    );
    let got = rig.h1(&[req.as_bytes()], None).await;
    assert!(
        got.starts_with(b"HTTP/1.1 421"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // Absolute-form with another authority, too.
    let req = format!(
        "GET https://evil.test/ HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        ph("KEY")
    );
    let got = rig.h1(&[req.as_bytes()], None).await;
    assert!(
        got.starts_with(b"HTTP/1.1 421"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(rig.fixture.requests().is_empty());
    assert!(!contains(&rig.fixture.raw(), VALUE));
}

/// An HTTP/2 client over an intercepted connection.
async fn h2_client(rig: &Rig) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tls = rig
        .connect(HOST, &[b"h2", b"http/1.1"], None)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .max_header_list_size(1 << 20)
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn h2_send(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    authority: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, Vec<(String, Vec<u8>)>, Vec<u8>) {
    let mut b = http::Request::builder().method("POST").uri(format!(
        "https://{authority}/v1/chat?token={}",
        ph_query("KEY")
    ));
    for (n, v) in headers {
        b = b.header(*n, v.as_str());
    }
    send.ready().await.unwrap();
    let resp = send
        .send_request(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

#[tokio::test]
async fn http2_streams_are_substituted_and_a_coalesced_stream_for_another_host_gets_421() {
    let rig = Rig::new(vec![secret("KEY", &[HOST], VALUE, false)], &[HOST]).await;
    let mut send = h2_client(&rig).await;
    let auth = ("authorization", format!("Bearer {}", ph("KEY")));
    let (status, headers, body) =
        h2_send(&mut send, HOST, std::slice::from_ref(&auth), "hello").await;
    assert_eq!(status, 200);
    let (status2, _, _) = h2_send(
        &mut send,
        "other.example.com",
        std::slice::from_ref(&auth),
        "x",
    )
    .await;
    assert_eq!(status2, 421);
    let (status3, _, body3) = h2_send(&mut send, HOST, &[auth], "again").await;
    assert_eq!(status3, 200);
    let reqs = rig.fixture.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    for r in &reqs {
        assert_eq!(r.version, "HTTP/2.0");
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {VALUE}").as_bytes())
        );
        assert!(r.uri.contains(&format!("token={VALUE}")), "{}", r.uri);
    }
    // The body is not substituted by default.
    assert_eq!(reqs[0].body, b"hello");
    for (n, v) in &headers {
        assert!(!contains(v, VALUE), "{n}");
    }
    assert!(!contains(&body, VALUE) && !contains(&body3, VALUE));
    assert!(contains(&body, &format!("Bearer {}", ph("KEY"))));
}

#[tokio::test]
async fn a_placeholder_in_headers_split_over_continuation_frames_is_replaced() {
    let rig = Rig::new(vec![secret("KEY", &[HOST], VALUE, false)], &[HOST]).await;
    let mut send = h2_client(&rig).await;
    // ~48 KiB of header block: HEADERS plus at least two CONTINUATION frames at the
    // default 16 KiB frame size, with a placeholder every ~1 KiB, so some straddle them.
    let mut big = String::new();
    for i in 0..48 {
        big.push_str(&format!("{i:04}{}", "a".repeat(1000)));
        big.push_str(&ph("KEY"));
    }
    let (status, headers, body) = h2_send(&mut send, HOST, &[("x-big", big)], "").await;
    assert_eq!(status, 200);
    let r = &rig.fixture.requests()[0];
    assert_eq!(count(r.header("x-big").unwrap(), VALUE), 48);
    assert_eq!(count(r.header("x-big").unwrap(), &ph("KEY")), 0);
    assert!(!contains(&body, VALUE));
    assert!(headers.iter().all(|(_, v)| !contains(v, VALUE)));
}

#[tokio::test]
async fn bodies_are_substituted_only_when_the_secret_opts_in_and_streamed_ones_are_scrubbed() {
    let rig = Rig::new(
        vec![
            secret("KEY", &[HOST], VALUE, true),
            secret("OTHER", &[HOST], OTHER_VALUE, false),
        ],
        &[HOST],
    )
    .await;
    let body = format!(
        "{{\"key\":\"{}\",\"other\":\"{}\"}}",
        ph("KEY"),
        ph("OTHER")
    );
    let req = format!(
        "POST /chunked HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let got = rig.h1(&[req.as_bytes()], None).await;
    let r = &rig.fixture.requests()[0];
    let want = format!("{{\"key\":\"{VALUE}\",\"other\":\"{}\"}}", ph("OTHER"));
    assert_eq!(String::from_utf8_lossy(&r.body), want);
    assert_eq!(
        r.header("content-length"),
        Some(want.len().to_string().as_bytes())
    );
    // The fixture echoed the body back in 7-byte chunks: the value, split across chunks,
    // is scrubbed on the way back.
    assert!(!contains(&got, VALUE), "{}", String::from_utf8_lossy(&got));
    assert!(contains(&got, &ph("KEY")));

    // A chunked request body (no length) streams, split inside the placeholder.
    let p = ph("KEY");
    let (a, b) = p.split_at(9);
    let req = format!(
        "POST /x HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\npre-{a}\r\n{:x}\r\n{b}-post\r\n0\r\n\r\n",
        a.len() + 4,
        b.len() + 5
    );
    let got = rig.h1(&[req.as_bytes()], None).await;
    let r = &rig.fixture.requests()[1];
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!("pre-{VALUE}-post")
    );
    assert!(!contains(&got, VALUE));
}

#[tokio::test]
async fn an_encoded_response_from_a_secret_host_is_refused() {
    let rig = Rig::new(vec![secret("KEY", &[HOST], VALUE, false)], &[HOST]).await;
    let req = format!(
        "GET /gzip HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        ph("KEY")
    );
    let got = rig.h1(&[req.as_bytes()], None).await;
    assert!(
        got.starts_with(b"HTTP/1.1 502"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(!contains(&got, VALUE));
}

#[tokio::test]
async fn an_upstream_with_the_wrong_name_never_gets_a_byte() {
    // The fixture's certificate is valid, from a trusted CA, for another name.
    let rig = Rig::new(
        vec![secret("KEY", &[HOST], VALUE, false)],
        &["wrong.example.com"],
    )
    .await;
    let r = rig.connect(HOST, &[b"http/1.1"], None).await;
    match r {
        Err(_) => {}
        Ok(mut tls) => {
            // Even if a handshake ever finished, nothing may arrive upstream.
            let _ = tls.write_all(request("").as_bytes()).await;
            let mut got = Vec::new();
            let _ = tokio::time::timeout(T, tls.read_to_end(&mut got)).await;
            assert!(!contains(&got, VALUE));
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rig.fixture.requests().is_empty());
    assert!(
        rig.fixture.raw().is_empty(),
        "bytes reached the wrong upstream"
    );
    let log = rig.log_text();
    assert!(
        log.contains("upstream tls failed, nothing was sent"),
        "{log}"
    );
}

#[tokio::test]
async fn an_untrusted_upstream_never_gets_a_byte() {
    let rig = Rig::new(vec![secret("KEY", &[HOST], VALUE, false)], &[HOST]).await;
    // A second fixture with a cert from a CA nobody told the helper about.
    let rogue = HttpsFixture::start(TestCa::new().server_config(&[HOST])).await;
    let (guest, proxy) = tokio::io::duplex(64 * 1024);
    let upstream = tokio::net::TcpStream::connect(rogue.addr).await.unwrap();
    tokio::spawn(rig.interceptor.clone().serve(
        proxy,
        upstream,
        HOST.into(),
        SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 443),
        rig.shared.clone(),
    ));
    let cfg = client_config(&rig.interceptor.ca_pem(), &[b"http/1.1"], None);
    let r = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from(HOST).unwrap(), guest)
        .await;
    assert!(
        r.is_err(),
        "the guest handshake completed against an untrusted upstream"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rogue.raw().is_empty() && rogue.requests().is_empty());
}

#[tokio::test]
async fn websocket_upgrade_headers_are_substituted_and_frames_pass_through() {
    let rig = Rig::new(vec![secret("KEY", &[HOST], VALUE, false)], &[HOST]).await;
    let mut tls = rig.connect(HOST, &[b"http/1.1"], None).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate\r\nAuthorization: Bearer {}\r\n\r\n",
        ph("KEY")
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !contains(&head, "\r\n\r\n") {
        let n = tokio::time::timeout(T, tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert!(!contains(&head, VALUE));
    let r = &rig.fixture.requests()[0];
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {VALUE}").as_bytes())
    );
    assert_eq!(
        r.header("sec-websocket-extensions"),
        None,
        "compressed frames could hide a value"
    );
    // Raw bytes after the upgrade: the fixture echoes them; a placeholder in a frame is
    // not substituted (frames are passed through).
    let frame = format!("frame with {}", ph("KEY"));
    tls.write_all(frame.as_bytes()).await.unwrap();
    let mut echoed = Vec::new();
    while echoed.len() < frame.len() {
        let n = tokio::time::timeout(T, tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        echoed.extend_from_slice(&buf[..n]);
    }
    assert_eq!(echoed, frame.as_bytes());
    // Closing the guest side closes the upstream side too.
    tls.shutdown().await.unwrap();
    drop(tls);
}

#[tokio::test]
async fn the_helper_refuses_to_start_with_secrets_it_cannot_protect() {
    let mut cfg = NetConfig::new("/nonexistent/n".into(), "/nonexistent/c".into());
    cfg.secrets = vec![secret("KEY", &[], VALUE, false)];
    let e = boxlite_net::engine::Engine::new(cfg.clone(), Arc::new(Shared::new(None)))
        .map(|_| ())
        .unwrap_err();
    let text = chain(&e);
    assert!(text.contains("no hosts"), "{text}");
    assert!(!text.contains(VALUE));
    cfg.secrets = vec![secret("KEY", &[HOST], VALUE, false)];
    cfg.upstream_roots = vec!["not a certificate".into()];
    let e = boxlite_net::engine::Engine::new(cfg, Arc::new(Shared::new(None)))
        .map(|_| ())
        .unwrap_err();
    let text = chain(&e);
    assert!(text.contains("upstream_ca_files"), "{text}");
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}

// ---------------------------------------------------------------------------------------
// The whole helper, driven by the fake guest
// ---------------------------------------------------------------------------------------

const SECRET_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
const OTHER_HOST: &str = "other.example.org";

struct EngineRig {
    h: Harness,
    fixture: HttpsFixture,
    other: HttpsFixture,
    upstream_ca: TestCa,
}

async fn engine_rig(allow: &[&str], deny: &[&str]) -> EngineRig {
    let upstream_ca = TestCa::new();
    let fixture = HttpsFixture::start(upstream_ca.server_config(&[HOST])).await;
    let other = HttpsFixture::start(upstream_ca.server_config(&[OTHER_HOST])).await;
    let dir = std::env::temp_dir().join(format!("bxsec-{:016x}", rand::random::<u64>()));
    let mut cfg = NetConfig::new(dir.join("n.sock"), dir.join("nc.sock"));
    cfg.test.loopback_only = true;
    cfg.dns_upstreams = vec!["127.0.0.1:9".parse().unwrap()];
    cfg.hosts = vec![
        HostEntry {
            name: HOST.into(),
            ip: SECRET_IP,
        },
        HostEntry {
            name: OTHER_HOST.into(),
            ip: OTHER_IP,
        },
    ];
    cfg.rules.deny = deny.iter().map(|d| (*d).into()).collect();
    cfg.rules.allow = allow.iter().map(|d| (*d).into()).collect();
    cfg.test.dial_override = vec![
        (SocketAddrV4::new(SECRET_IP, 443).into(), fixture.addr),
        (SocketAddrV4::new(OTHER_IP, 443).into(), other.addr),
    ];
    cfg.secrets = vec![secret("KEY", &[HOST], VALUE, false)];
    cfg.upstream_roots = vec![upstream_ca.pem()];
    let h = Harness::start(cfg).await.unwrap();
    EngineRig {
        h,
        fixture,
        other,
        upstream_ca,
    }
}

/// A DNS A query for `name`, as a guest resolver sends it.
fn a_query(name: &str) -> Vec<u8> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

impl EngineRig {
    async fn resolve(&mut self, name: &str) {
        let dns_ip = self.h.guest.subnet().dns_ip;
        let reply = self.h.guest.dns(dns_ip, &a_query(name)).await;
        assert!(reply.is_some(), "no DNS answer for {name}");
    }

    /// One HTTPS request from the fake guest; the guest trusts `ca_pem` only.
    async fn https(
        &mut self,
        ip: Ipv4Addr,
        name: &str,
        ca_pem: &str,
        req: &str,
    ) -> Result<Vec<u8>, String> {
        let h = self
            .h
            .guest
            .connect(SocketAddrV4::new(ip, 443))
            .await
            .map_err(|e| format!("{e:?}"))?;
        let cfg = client_config(ca_pem, &[b"http/1.1"], None);
        let mut tls =
            rustls::ClientConnection::new(cfg, ServerName::try_from(name.to_owned()).unwrap())
                .unwrap();
        let r = self
            .h
            .guest
            .tls_exchange(h, &mut tls, req.as_bytes(), T)
            .await;
        self.h.guest.remove(h);
        r
    }
}

fn request_to(host: &str) -> String {
    format!(
        "GET /x HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        ph("KEY")
    )
}

#[tokio::test]
async fn the_helper_intercepts_only_secret_hosts_one_byte_per_segment() {
    let mut rig = engine_rig(&[], &[]).await;
    let ca = boxlite_net::control::Shared::answer(&rig.h.shared, "ca");
    let box_ca: Option<String> = serde_json::from_str(&ca).unwrap();
    let box_ca = box_ca.expect("the helper publishes its CA");
    assert!(box_ca.starts_with("-----BEGIN CERTIFICATE-----"));
    rig.resolve(HOST).await;
    rig.resolve(OTHER_HOST).await;
    rig.h.guest.segment = Some(1);
    let got = rig
        .https(SECRET_IP, HOST, &box_ca, &request_to(HOST))
        .await
        .unwrap();
    rig.h.guest.segment = None;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(!contains(&got, VALUE));
    assert!(contains(&got, &ph("KEY")));
    let reqs = rig.fixture.requests();
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {VALUE}").as_bytes())
    );

    // Another host: not intercepted (the guest verifies the fixture's own certificate
    // with the upstream CA alone), and the placeholder arrives as it was written.
    let upstream_pem = rig.upstream_ca.pem();
    let got = rig
        .https(OTHER_IP, OTHER_HOST, &upstream_pem, &request_to(OTHER_HOST))
        .await
        .unwrap();
    assert!(got.starts_with(b"HTTP/1.1 200"));
    let other = rig.other.requests();
    assert_eq!(
        other[0].header("authorization"),
        Some(format!("Bearer {}", ph("KEY")).as_bytes())
    );
    assert!(!contains(&rig.other.raw(), VALUE));

    // The SNI of the secret host on the other host's address: not pinned there, so the
    // connection is not intercepted (nor allowed by a name it never resolved to).
    let r = rig.https(OTHER_IP, HOST, &box_ca, &request_to(HOST)).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(rig.fixture.requests().len(), 1);

    let log = serde_json::to_string(&rig.h.log()).unwrap();
    assert!(
        log.contains("\"secret\"") && log.contains("\"intercept\""),
        "{log}"
    );
    assert!(!log.contains(VALUE));
}

#[tokio::test]
async fn the_policy_decides_before_any_interception() {
    // By address, and by an allow-list that does not name the secret host.
    for (allow, deny) in [(vec![], vec!["203.0.113.10"]), (vec![OTHER_HOST], vec![])] {
        let mut rig = engine_rig(&allow, &deny).await;
        let box_ca: Option<String> = serde_json::from_str(&rig.h.shared.answer("ca")).unwrap();
        rig.resolve(OTHER_HOST).await;
        let dns_ip = rig.h.guest.subnet().dns_ip;
        let _ = rig.h.guest.dns(dns_ip, &a_query(HOST)).await;
        let r = rig
            .https(SECRET_IP, HOST, &box_ca.unwrap(), &request_to(HOST))
            .await;
        assert!(r.is_err(), "{allow:?} {deny:?}: {r:?}");
        assert_eq!(rig.fixture.connections(), 0);
        assert!(rig.fixture.raw().is_empty());
        let log = serde_json::to_string(&rig.h.log()).unwrap();
        assert!(!log.contains("\"intercept\""), "{log}");
    }
}
