//! The adversarial cases of the network design's test plan that need no secrets, against
//! the production engine in-process: a fake guest (or bare frames) on one end of a socket
//! pair, fixtures and a scripted upstream resolver on 127.0.0.1. Every refusal is asserted
//! in the decision log (verdict, reason, rule) and at the fixture that must not have been
//! reached; every dial is checked by the loopback guard.
//!
//! Here: pins and first flights (cases 3 to 5, 29). `dns`: rebinding, DNS over TCP and to
//! other addresses, DoT, DoH, IPv6 (cases 9 to 15). `limits`: floods, slowloris, UDP and
//! DNS caps (case 30). `fuzz_smoke`: seeded mutations of valid frames through the engine.
//!
//! Guest-visible public addresses are RFC 5737's 198.51.100.0/24 and 203.0.113.0/24, mapped
//! to fixtures with `dial_override`.

#[path = "adversarial/dns.rs"]
mod dns;
#[path = "adversarial/fuzz_smoke.rs"]
mod fuzz_smoke;
#[path = "adversarial/limits.rs"]
mod limits;
#[path = "adversarial/support.rs"]
mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use boxlite_net::config::{HostEntry, NetConfig};
use boxlite_net::engine::{MAX_PENDING_DIALS, MAX_TCP_FLOWS, MAX_UDP_FLOWS};
use boxlite_net::fake_guest::{FakeGuest, GuestError, Harness};
use boxlite_net::frame;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::*;

const A: RecordType = RecordType::A;
const AAAA: RecordType = RecordType::AAAA;
const ALLOW_LIST_MISS: &str = "allow-list: no rule allows it";
const NO_AUTHORITY: &str = "no sni or host to check";
/// engine.rs `MAX_DNS_INFLIGHT` (private there).
const MAX_DNS_INFLIGHT: usize = 128;

fn host(name: &str, ip: &str) -> HostEntry {
    HostEntry {
        name: name.into(),
        ip: ip.parse().unwrap(),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap()
}

/// Ask the box's DNS (UDP) for `name`'s A records.
async fn resolve(g: &mut FakeGuest, name: &str) -> (ResponseCode, Vec<Ipv4Addr>) {
    let r = g
        .dns(DNS_IP, &query(name, A))
        .await
        .expect("the helper answers");
    a_records(&r)
}

/// Connect, send `first`, and return whether the helper reset the connection; if it did
/// not, `first` must come back from the echo fixture.
async fn first_flight(g: &mut FakeGuest, dst: &str, first: &[u8]) -> bool {
    let s = g
        .connect(v4(dst))
        .await
        .expect("the guest side is accepted");
    let _ = g.send(s, first).await;
    let echoed = g.read_n(s, first.len(), T).await;
    if echoed.len() == first.len() {
        assert!(echoed == first, "the relayed bytes differ");
        g.close(s).await;
        return false;
    }
    let (_, reset) = g.read_to_end(s, T).await;
    assert!(reset, "neither echoed nor reset");
    true
}

// ---------------------------------------------------------------------------------------
// Cases 3 and 4: pins decide which names an address carries
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_address_pinned_for_a_name_allowed_only_on_another_port_is_refused() {
    // Case 3: evil.test may be resolved (its rule names port 25), so its address is pinned
    // to it, but nothing allows that address on 443.
    let up = Upstream::table(&[("evil.test", "198.51.100.66")]).await;
    let (f443, f25) = (Fixture::echo().await, Fixture::echo().await);
    let mut c = cfg();
    c.dns_upstreams = vec![up.addr];
    c.rules.allow = vec!["*.example.com".into(), "evil.test:25".into()];
    c.test.dial_override = vec![
        (sa("198.51.100.66:443"), f443.addr),
        (sa("198.51.100.66:25"), f25.addr),
    ];
    let mut h = Harness::start(c).await.unwrap();
    assert_eq!(
        resolve(&mut h.guest, "evil.test.").await,
        (ResponseCode::NoError, vec![ip("198.51.100.66")])
    );
    assert_eq!(up.count("evil.test"), 1);

    assert_eq!(
        h.guest.connect(v4("198.51.100.66:443")).await,
        Err(GuestError::Reset)
    );
    let e = last_for(&h.log(), "198.51.100.66:443");
    assert_eq!(summary(&e), ("deny", ALLOW_LIST_MISS, None, None));
    assert_eq!(e.names, ["evil.test"]);
    assert_eq!(f443.accepts(), 0, "the fixture on 443 saw a connection");

    // The pin itself is real: on the port its rule names, the address is reachable.
    assert!(!first_flight(&mut h.guest, "198.51.100.66:25", b"EHLO x\r\n").await);
    let e = last_for(&h.log(), "198.51.100.66:25");
    assert_eq!(
        (e.verdict.as_str(), e.rule.as_deref()),
        ("allow", Some("evil.test:25"))
    );
    no_guard_violations(&h.log());
}

#[tokio::test]
async fn a_port_scoped_deny_holds_for_the_address_its_name_resolved_to() {
    // Case 3 in the default posture: `--deny-net evil.test:443` leaves the name resolvable
    // (only the port is closed), and its address is closed on that port.
    let up = Upstream::table(&[("evil.test", "198.51.100.67")]).await;
    let f = Fixture::echo().await;
    let mut c = cfg();
    c.dns_upstreams = vec![up.addr];
    c.rules.deny = vec!["evil.test:443".into()];
    c.test.dial_override = vec![(sa("198.51.100.67:443"), f.addr)];
    let mut h = Harness::start(c).await.unwrap();
    assert_eq!(
        resolve(&mut h.guest, "evil.test.").await.1,
        [ip("198.51.100.67")]
    );
    assert_eq!(
        h.guest.connect(v4("198.51.100.67:443")).await,
        Err(GuestError::Reset)
    );
    let e = last_for(&h.log(), "198.51.100.67:443");
    assert_eq!(
        summary(&e),
        (
            "deny",
            "deny rule evil.test:443",
            Some("evil.test:443"),
            None
        )
    );
    assert_eq!(f.accepts(), 0);
    no_guard_violations(&h.log());
}

#[tokio::test]
async fn an_sni_not_pinned_to_the_destination_address_is_refused() {
    // Case 4. evil.test resolves to .66 (its own) and .70 (shared with www.example.com);
    // api.example.com resolves to .71. Borrowing api.example.com's name as SNI gets the
    // guest nowhere on either of evil.test's addresses.
    let up = Upstream::scripted(|qname, qtype, _| {
        let ips: &[&str] = match (qname, qtype) {
            ("evil.test", A) => &["198.51.100.66", "198.51.100.70"],
            ("www.example.com", A) => &["198.51.100.70"],
            ("api.example.com", A) => &["198.51.100.71"],
            _ => return None,
        };
        let owner = format!("{qname}.");
        let answers = ips.iter().map(|i| a(&owner, i, 60)).collect();
        Some((ResponseCode::NoError, answers))
    })
    .await;
    let f = Fixture::echo().await;
    let mut c = cfg();
    c.dns_upstreams = vec![up.addr];
    c.rules.allow = vec!["*.example.com".into(), "evil.test:25".into()];
    c.test.dial_override = vec![
        (sa("198.51.100.66:443"), f.addr),
        (sa("198.51.100.70:443"), f.addr),
        (sa("198.51.100.71:443"), f.addr),
    ];
    let mut h = Harness::start(c).await.unwrap();
    for n in ["evil.test.", "www.example.com.", "api.example.com."] {
        assert_eq!(
            resolve(&mut h.guest, n).await.0,
            ResponseCode::NoError,
            "{n}"
        );
    }

    // evil.test's own address: refused at the SYN, before any SNI is sent.
    assert_eq!(
        h.guest.connect(v4("198.51.100.66:443")).await,
        Err(GuestError::Reset)
    );
    let e = last_for(&h.log(), "198.51.100.66:443");
    assert_eq!(summary(&e), ("deny", ALLOW_LIST_MISS, None, None));

    // The shared address waits for the SNI, and an SNI pinned elsewhere is refused.
    let hello = client_hello(Some("api.example.com"));
    assert!(first_flight(&mut h.guest, "198.51.100.70:443", &hello).await);
    let e = last_for(&h.log(), "198.51.100.70:443");
    assert_eq!(
        summary(&e),
        (
            "deny",
            "sni/host api.example.com was not resolved to this address",
            None,
            Some("api.example.com")
        )
    );
    assert_eq!(e.names, ["evil.test", "www.example.com"]);
    // So is the name that is pinned there but not allowed on 443.
    let hello = client_hello(Some("evil.test"));
    assert!(first_flight(&mut h.guest, "198.51.100.70:443", &hello).await);
    let e = last_for(&h.log(), "198.51.100.70:443");
    assert_eq!(
        summary(&e),
        ("deny", ALLOW_LIST_MISS, None, Some("evil.test"))
    );
    assert_eq!(f.accepts(), 0, "a refused first flight reached the fixture");

    // The allowed name pinned there is relayed, hello and all.
    let hello = client_hello(Some("www.example.com"));
    assert!(!first_flight(&mut h.guest, "198.51.100.70:443", &hello).await);
    let e = last_for(&h.log(), "198.51.100.70:443");
    assert_eq!(
        summary(&e),
        (
            "allow",
            "allow rule *.example.com",
            Some("*.example.com"),
            Some("www.example.com")
        )
    );
    assert_eq!((f.accepts(), f.received(0)), (1, hello));
    no_guard_violations(&h.log());
}

// ---------------------------------------------------------------------------------------
// Case 5: a shared CDN address, decided by the ClientHello
// ---------------------------------------------------------------------------------------

/// a.example.com and b.example.com share 203.0.113.20; only a is allowed on 443 (b may
/// be resolved: its rule names 8443). 203.0.113.40 is allowed by address.
fn shared_cdn(fixture: std::net::SocketAddr, plain: std::net::SocketAddr) -> NetConfig {
    let mut c = cfg();
    c.rules.allow = vec![
        "a.example.com".into(),
        "b.example.com:8443".into(),
        "203.0.113.40".into(),
    ];
    c.hosts = vec![
        host("a.example.com", "203.0.113.20"),
        host("b.example.com", "203.0.113.20"),
    ];
    c.test.dial_override = vec![
        (sa("203.0.113.20:443"), fixture),
        (sa("203.0.113.20:80"), fixture),
        (sa("203.0.113.40:80"), plain),
    ];
    c
}

async fn resolve_shared(g: &mut FakeGuest) {
    for n in ["a.example.com.", "b.example.com."] {
        assert_eq!(resolve(g, n).await.1, [ip("203.0.113.20")], "{n}");
    }
}

#[tokio::test]
async fn a_shared_address_is_decided_by_the_client_hello_sni() {
    let f = Fixture::echo().await;
    let mut h = Harness::start(shared_cdn(f.addr, f.addr)).await.unwrap();
    resolve_shared(&mut h.guest).await;
    let dst = "203.0.113.20:443";

    let refused = [
        (Some("b.example.com"), ALLOW_LIST_MISS),
        // An IP literal is not a name: no SNI, and b is pinned there too.
        (Some("203.0.113.20"), NO_AUTHORITY),
        (None, NO_AUTHORITY),
    ];
    for (sni, reason) in refused {
        assert!(
            first_flight(&mut h.guest, dst, &client_hello(sni)).await,
            "{sni:?} was relayed"
        );
        let e = last_for(&h.log(), dst);
        let shown = sni.filter(|s| s.ends_with(".com"));
        assert_eq!(summary(&e), ("deny", reason, None, shown), "{sni:?}");
        assert_eq!(e.names, ["a.example.com", "b.example.com"]);
    }
    assert_eq!(f.accepts(), 0, "a refused hello reached the fixture");

    let hello = client_hello(Some("a.example.com"));
    assert!(!first_flight(&mut h.guest, dst, &hello).await);
    let e = last_for(&h.log(), dst);
    assert_eq!(
        summary(&e),
        (
            "allow",
            "allow rule a.example.com",
            Some("a.example.com"),
            Some("a.example.com")
        )
    );
    assert_eq!((f.accepts(), f.received(0)), (1, hello));
    no_guard_violations(&h.log());
}

#[tokio::test]
async fn a_client_hello_in_one_byte_segments_is_reassembled_before_deciding() {
    let f = Fixture::echo().await;
    let mut h = Harness::start(shared_cdn(f.addr, f.addr)).await.unwrap();
    resolve_shared(&mut h.guest).await;
    h.guest.segment = Some(1);
    let dst = "203.0.113.20:443";

    assert!(first_flight(&mut h.guest, dst, &client_hello(Some("b.example.com"))).await);
    let e = last_for(&h.log(), dst);
    assert_eq!(
        summary(&e),
        ("deny", ALLOW_LIST_MISS, None, Some("b.example.com"))
    );
    assert_eq!(f.accepts(), 0);

    let hello = client_hello(Some("a.example.com"));
    assert!(!first_flight(&mut h.guest, dst, &hello).await);
    let e = last_for(&h.log(), dst);
    assert_eq!(
        (e.verdict.as_str(), e.name.as_deref()),
        ("allow", Some("a.example.com"))
    );
    assert_eq!(f.received(0), hello, "the fixture got the hello intact");
    no_guard_violations(&h.log());
}

#[tokio::test]
async fn a_refused_first_flight_is_one_decision_in_the_log() {
    // Each connection to a shared address gets one interim `defer-l7` entry and then
    // exactly one decision, and counts once as denied.
    let f = Fixture::echo().await;
    let mut h = Harness::start(shared_cdn(f.addr, f.addr)).await.unwrap();
    resolve_shared(&mut h.guest).await;
    let sni_b = client_hello(Some("b.example.com"));
    assert!(first_flight(&mut h.guest, "203.0.113.20:443", &sni_b).await);
    let host_b = b"GET / HTTP/1.1\r\nHost: b.example.com\r\n\r\n";
    assert!(first_flight(&mut h.guest, "203.0.113.20:80", host_b).await);
    h.guest.idle(Duration::from_millis(300)).await;
    for dst in ["203.0.113.20:443", "203.0.113.20:80"] {
        let entries: Vec<_> = h
            .log()
            .into_iter()
            .filter(|e| e.dst.as_deref() == Some(dst))
            .map(|e| (e.verdict, e.reason, e.name))
            .collect();
        assert_eq!(
            entries,
            [
                (
                    "defer-l7".to_string(),
                    "address shared with names no rule allows: checking sni/host".to_string(),
                    None
                ),
                (
                    "deny".to_string(),
                    ALLOW_LIST_MISS.to_string(),
                    Some("b.example.com".to_string())
                ),
            ],
            "{dst}"
        );
    }
    assert_eq!(h.shared.stats.snapshot().denied, 2);
}

// ---------------------------------------------------------------------------------------
// Case 29: port-scoped domain rule
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_port_scoped_domain_rule_opens_only_its_port() {
    let (f443, f80) = (Sink::start().await, Fixture::echo().await);
    let mut c = cfg();
    c.rules.allow = vec!["api.example.com:443".into()];
    c.hosts = vec![host("api.example.com", "203.0.113.10")];
    c.test.dial_override = vec![
        (sa("203.0.113.10:443"), f443.addr),
        (sa("203.0.113.10:80"), f80.addr),
    ];
    let mut h = Harness::start(c).await.unwrap();
    assert_eq!(
        resolve(&mut h.guest, "api.example.com.").await.1,
        [ip("203.0.113.10")]
    );
    assert!(!first_flight(&mut h.guest, "203.0.113.10:443", b"x").await);
    let e = last_for(&h.log(), "203.0.113.10:443");
    assert_eq!(
        summary(&e),
        (
            "allow",
            "allow rule api.example.com:443",
            Some("api.example.com:443"),
            None
        )
    );

    assert_eq!(
        h.guest.connect(v4("203.0.113.10:80")).await,
        Err(GuestError::Reset)
    );
    let e = last_for(&h.log(), "203.0.113.10:80");
    assert_eq!(summary(&e), ("deny", ALLOW_LIST_MISS, None, None));
    assert_eq!(e.names, ["api.example.com"]);
    assert_eq!(f80.accepts(), 0);

    // Nor does it open 443/udp.
    h.guest
        .udp_send(6443, v4("203.0.113.10:443"), b"quic")
        .await;
    assert_eq!(
        h.guest.udp_recv(6443, Duration::from_millis(300)).await,
        None
    );
    let e = last_for(&h.log(), "203.0.113.10:443");
    assert_eq!(
        (e.verdict.as_str(), e.proto),
        ("deny", Some(boxlite_net::config::Proto::Udp))
    );
    assert_eq!(f443.touched(), (1, 0), "443/udp was relayed");
    no_guard_violations(&h.log());
}
