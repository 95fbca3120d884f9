//! The network helper alone, no VM, for `bench/net.sh`: the production engine between a
//! fake guest (a second smoltcp stack, in process, on a socket pair) and fixtures on
//! 127.0.0.1. Prints medians and spreads; asserts nothing.
//!
//!   cargo run --release -p boxlite-net --example net_bench [-- RUNS]   (default 5)
//!
//! Figures (goals from the network design memo, section 6):
//!   1. one stream, guest to host (upload) and host to guest (download), MB/s (>= 1 GB/s)
//!   2. new connections per second, one after another: connect, first byte, close
//!      (>= 5,000/s); sequential, so a round-trip figure more than a capacity one
//!   3. connect plus first byte, through the helper and directly on the host's loopback
//!      (the difference is what the helper adds: < 0.5 ms)
//!   4. DNS answer latency: a static name (`--add-host`), and a name forwarded to a fake
//!      upstream on 127.0.0.1
//!
//! The fake guest, the engine and the fixtures share one process and the host's cores, so
//! the figures are lower bounds for the engine (on two cores, the guest took a fifth to a
//! third of the CPU time in `perf`).
//!
//! Every dial goes to 127.0.0.1: the guest's "public" addresses are RFC 5737 ones mapped to
//! the fixtures (`dial_override`), the loopback guard is on, and the only upstream resolver
//! is the fake one.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use boxlite_net::config::{HostEntry, NetConfig};
use boxlite_net::fake_guest::Harness;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const LIMIT: Duration = Duration::from_secs(60);
/// Bytes per throughput sample, each way.
const STREAM_BYTES: usize = 256 << 20;
/// Connections per connection-rate sample.
const CONNECTIONS: usize = 2000;
/// Samples per latency figure per run.
const LATENCY_SAMPLES: usize = 200;

const SINK: &str = "203.0.113.10:9000";
const SOURCE: &str = "203.0.113.10:9001";
const FIRST_BYTE: &str = "203.0.113.10:9002";
const STATIC_NAME: &str = "bench.boxlite.test.";
const FORWARDED_NAME: &str = "www.example.com.";
/// What the fake upstream answers: a public (RFC 5737) address, so the rebinding filter
/// keeps it.
const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);

// The same figure printer as the library's bench examples.
#[path = "../../boxlite/examples/common/mod.rs"]
mod common;
use common::stats;

/// The 99th percentile of `v`.
fn p99(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get((v.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or(f64::NAN)
}

fn v4(s: &str) -> SocketAddrV4 {
    s.parse().expect("a literal address")
}

/// Reads everything until EOF, then answers one byte.
async fn sink() -> SocketAddr {
    serve(|mut s| async move {
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        let _ = s.write_all(b"k").await;
    })
    .await
}

/// Reads an 8-byte length, sends that many bytes and closes.
async fn source() -> SocketAddr {
    serve(|mut s| async move {
        let mut len = [0u8; 8];
        if s.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut left = usize::try_from(u64::from_be_bytes(len)).unwrap_or(0);
        let chunk = vec![0x5au8; 1 << 20];
        while left > 0 {
            let n = left.min(chunk.len());
            if s.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            left -= n;
        }
    })
    .await
}

/// Sends one byte on accept, then waits for the peer to close.
async fn first_byte() -> SocketAddr {
    serve(|mut s| async move {
        let _ = s.set_nodelay(true);
        if s.write_all(b"x").await.is_err() {
            return;
        }
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
}

async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(handler(s));
        }
    });
    addr
}

/// A resolver on 127.0.0.1 that answers every A question with [`UPSTREAM_ANSWER`].
async fn fake_upstream() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = s.local_addr().expect("local addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = s.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.queries = q.queries.clone();
            if let Some(question) = q.queries.first() {
                r.answers.push(Record::from_rdata(
                    question.name().clone(),
                    60,
                    RData::A(A(UPSTREAM_ANSWER)),
                ));
            }
            if let Ok(bytes) = r.to_vec() {
                let _ = s.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).expect("a valid name"),
        RecordType::A,
    ));
    m.to_vec().expect("encodes")
}

fn answered(reply: Option<Vec<u8>>) -> bool {
    reply
        .and_then(|r| Message::from_vec(&r).ok())
        .is_some_and(|m| !m.answers.is_empty())
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    // Bytes far below 2^52: the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    b / 1e6 / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let (sink, source, first, upstream) = (
        sink().await,
        source().await,
        first_byte().await,
        fake_upstream().await,
    );

    let dir = std::env::temp_dir().join(format!("bxnet-bench-{}", std::process::id()));
    let mut cfg = NetConfig::new(dir.join("n.sock"), dir.join("nc.sock"));
    cfg.test.loopback_only = true;
    cfg.test.dial_override = vec![
        (SINK.parse().expect("literal"), sink),
        (SOURCE.parse().expect("literal"), source),
        (FIRST_BYTE.parse().expect("literal"), first),
    ];
    cfg.dns_upstreams = vec![upstream];
    cfg.hosts = vec![HostEntry {
        name: STATIC_NAME.trim_end_matches('.').into(),
        ip: Ipv4Addr::new(203, 0, 113, 10),
    }];
    let mut h = Harness::start(cfg).await.expect("the engine starts");
    let g = &mut h.guest;
    let dns_ip = g.subnet().dns_ip;

    let payload = vec![0xa5u8; STREAM_BYTES];
    let (mut up, mut down, mut cps) = (Vec::new(), Vec::new(), Vec::new());
    let (mut lat, mut direct, mut dns_static, mut dns_fwd) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut failures = 0usize;
    for _ in 0..runs {
        // Upload: the time until the sink has read everything and said so.
        let t = Instant::now();
        let s = g.connect(v4(SINK)).await.expect("connect to the sink");
        if g.send(s, &payload).await.is_ok() {
            g.close(s).await;
            let (ack, _) = g.read_to_end(s, LIMIT).await;
            if ack == b"k" {
                up.push(mb_per_s(STREAM_BYTES, t.elapsed()));
            } else {
                failures += 1;
            }
        } else {
            failures += 1;
        }
        g.remove(s);

        // Download.
        let t = Instant::now();
        let s = g.connect(v4(SOURCE)).await.expect("connect to the source");
        let len = u64::try_from(STREAM_BYTES).unwrap_or(0).to_be_bytes();
        let _ = g.send(s, &len).await;
        // In pieces: one 256 MiB buffer would time the guest's page faults.
        let mut got = 0;
        loop {
            let n = g.read_n(s, 1 << 20, LIMIT).await.len();
            if n == 0 {
                break;
            }
            got += n;
        }
        if got == STREAM_BYTES {
            down.push(mb_per_s(STREAM_BYTES, t.elapsed()));
        } else {
            failures += 1;
        }
        g.close(s).await;
        g.remove(s);

        // New connections, one after another: connect, first byte, close.
        let t = Instant::now();
        let mut done = 0usize;
        for _ in 0..CONNECTIONS {
            let Ok(s) = g.connect(v4(FIRST_BYTE)).await else {
                failures += 1;
                continue;
            };
            if g.read_n(s, 1, LIMIT).await.len() == 1 {
                done += 1;
            } else {
                failures += 1;
            }
            g.close(s).await;
            g.remove(s);
        }
        #[allow(clippy::cast_precision_loss)]
        cps.push(done as f64 / t.elapsed().as_secs_f64());

        // Connect plus first byte, through the helper and directly.
        for _ in 0..LATENCY_SAMPLES {
            let t = Instant::now();
            let Ok(s) = g.connect(v4(FIRST_BYTE)).await else {
                failures += 1;
                continue;
            };
            let ok = g.read_n(s, 1, LIMIT).await.len() == 1;
            let d = t.elapsed();
            g.close(s).await;
            g.remove(s);
            if ok {
                lat.push(d.as_secs_f64() * 1e3);
            }
            let t = Instant::now();
            let mut c = TcpStream::connect(first).await.expect("direct connect");
            let mut b = [0u8; 1];
            let _ = c.read_exact(&mut b).await;
            direct.push(t.elapsed().as_secs_f64() * 1e3);
        }

        // DNS.
        let (sq, fq) = (query(STATIC_NAME), query(FORWARDED_NAME));
        for _ in 0..LATENCY_SAMPLES {
            let t = Instant::now();
            if answered(g.dns(dns_ip, &sq).await) {
                dns_static.push(t.elapsed().as_secs_f64() * 1e3);
            } else {
                failures += 1;
            }
            let t = Instant::now();
            if answered(g.dns(dns_ip, &fq).await) {
                dns_fwd.push(t.elapsed().as_secs_f64() * 1e3);
            } else {
                failures += 1;
            }
        }
    }
    let mib = STREAM_BYTES >> 20;
    stats(
        &format!("helper alone: upload {mib} MiB (1 stream)"),
        "MB/s",
        up,
    );
    stats(
        &format!("helper alone: download {mib} MiB (1 stream)"),
        "MB/s",
        down,
    );
    stats("helper alone: new connections (sequential)", "conn/s", cps);
    let (lat99, direct99) = (p99(&lat), p99(&direct));
    stats("helper alone: connect + first byte", "ms", lat);
    stats("direct loopback: connect + first byte", "ms", direct);
    let (s99, f99) = (p99(&dns_static), p99(&dns_fwd));
    stats("helper alone: DNS, static name", "ms", dns_static);
    stats(
        "helper alone: DNS, forwarded (fake upstream)",
        "ms",
        dns_fwd,
    );
    println!(
        "helper alone: p99 connect + first byte {lat99:.3} ms (direct {direct99:.3} ms); p99 DNS static {s99:.3} ms, forwarded {f99:.3} ms"
    );
    let log = h.log();
    let guard = log.iter().filter(|e| e.kind == "guard").count();
    if failures > 0 || guard > 0 {
        println!("helper alone: {failures} failed operations, {guard} guard refusals");
    }
    h.engine.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
