//! The interception path alone, no VM (`bench/net.sh`, figure 6): a client that trusts the
//! box's CA talks through the interception proxy to an HTTPS fixture on 127.0.0.1, side by
//! side with the same client talking to the fixture directly (TLS, no interception).
//!
//! Prints, as median and spread over RUNS:
//! - throughput: a 64 MiB request body echoed back (so 128 MiB through TLS at both ends,
//!   with the response scrubbed as it streams), in MB/s each way summed;
//! - the round trip of a small GET with a substituted `Authorization` header on a
//!   keep-alive connection, and of the same GET directly: the difference is what
//!   substitution adds;
//! - a new connection with one request (both TLS handshakes, a leaf from the cache).
//!
//!   cargo run --release -p boxlite-net --example secrets_bench -- [RUNS]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use boxlite_net::config::{SecretConfig, SecretValue};
use boxlite_net::control::Shared;
use boxlite_net::secrets::proxy::Interceptor;
use boxlite_net::secrets::{SecretSet, default_placeholder};
use boxlite_net::tls_fixture::{HttpsFixture, TestCa};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

const HOST: &str = "api.example.com";
const BIG: usize = 64 << 20;
const RTT_REQUESTS: usize = 200;

fn client(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
        let _ = roots.add(c);
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

struct Bench {
    interceptor: Arc<Interceptor>,
    fixture: HttpsFixture,
    upstream_ca: String,
    shared: Arc<Shared>,
}

impl Bench {
    /// An HTTP/1.1 client connection: through the interception proxy, or directly.
    async fn connect(&self, intercepted: bool) -> SendRequest<Full<Bytes>> {
        let upstream = tokio::net::TcpStream::connect(self.fixture.addr)
            .await
            .expect("connect");
        let name = ServerName::try_from(HOST).expect("name");
        if intercepted {
            let (guest, proxy) = tokio::io::duplex(256 * 1024);
            tokio::spawn(self.interceptor.clone().serve(
                proxy,
                upstream,
                HOST.into(),
                SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 443),
                self.shared.clone(),
            ));
            let tls = tokio_rustls::TlsConnector::from(client(&self.interceptor.ca_pem()))
                .connect(name, guest)
                .await
                .expect("tls");
            handshake(tls).await
        } else {
            let tls = tokio_rustls::TlsConnector::from(client(&self.upstream_ca))
                .connect(name, upstream)
                .await
                .expect("tls");
            handshake(tls).await
        }
    }
}

async fn handshake<S>(io: S) -> SendRequest<Full<Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("http");
    tokio::spawn(conn);
    send
}

async fn request(send: &mut SendRequest<Full<Bytes>>, body: Bytes) -> usize {
    let req = http::Request::post("/bench")
        .header("host", HOST)
        .header(
            "authorization",
            format!("Bearer {}", default_placeholder("KEY")),
        )
        .body(Full::new(body))
        .expect("request");
    send.ready().await.expect("ready");
    let resp = send.send_request(req).await.expect("response");
    resp.into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .len()
}

fn stats(label: &str, unit: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    println!(
        "{label}: median {:.2} {unit} (min {:.2}, max {:.2}, {} runs)",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1],
        v.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5)
        .max(1);
    let ca = TestCa::new();
    let fixture = HttpsFixture::start(ca.server_config(&[HOST])).await;
    let secrets = vec![SecretConfig {
        name: "KEY".into(),
        placeholder: default_placeholder("KEY"),
        hosts: vec![HOST.into()],
        value: SecretValue::new("sk-bench-0123456789abcdef".into()),
        body: false,
    }];
    let interceptor = Interceptor::new(
        SecretSet::new(&secrets).expect("secrets"),
        &[ca.pem()],
        SystemTime::now(),
    )
    .expect("interceptor");
    let b = Bench {
        interceptor: Arc::new(interceptor),
        fixture,
        upstream_ca: ca.pem(),
        shared: Arc::new(Shared::new(None)),
    };
    let big = Bytes::from(vec![b'x'; BIG]);
    for (intercepted, label) in [(true, "intercepted"), (false, "direct tls")] {
        let mut rates = Vec::new();
        let mut rtts = Vec::new();
        let mut fresh = Vec::new();
        for _ in 0..runs {
            let mut send = b.connect(intercepted).await;
            let t = Instant::now();
            let got = request(&mut send, big.clone()).await;
            let secs = t.elapsed().as_secs_f64();
            rates.push((BIG + got) as f64 / 1e6 / secs);
            let mut one = Vec::new();
            for _ in 0..RTT_REQUESTS {
                let t = Instant::now();
                request(&mut send, Bytes::new()).await;
                one.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            one.sort_by(f64::total_cmp);
            rtts.push(one[one.len() / 2]);
            let t = Instant::now();
            let mut s = b.connect(intercepted).await;
            request(&mut s, Bytes::new()).await;
            fresh.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        stats(
            &format!("secrets, {label}: 64 MiB echoed, both ways"),
            "MB/s",
            rates,
        );
        stats(
            &format!("secrets, {label}: keep-alive request round trip"),
            "ms",
            rtts,
        );
        stats(
            &format!("secrets, {label}: new connection + one request"),
            "ms",
            fresh,
        );
    }
}
