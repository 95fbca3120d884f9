//! Case 30: flow, handshake, first-flight and DNS limits hold, and the helper stays
//! responsive.

use super::*;

// ---------------------------------------------------------------------------------------
// Case 30: limits
// ---------------------------------------------------------------------------------------

/// Resolve through bare frames; true once the reply came.
async fn raw_dns(rig: &mut RawRig, port: u16, name_: &str, limit: Duration) -> Option<Vec<u8>> {
    let q = query(name_, A);
    let f = frame::udp_from_guest(&rig.subnet, port, v4("10.0.2.3:53"), &q);
    let from = rig.frames.len();
    rig.send(&f).await;
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let subnet = rig.subnet.clone();
        if let Some(r) = rig.frames[from..]
            .iter()
            .filter_map(|f| udp_to_guest(f, &subnet))
            .find(|(p, _)| *p == port)
        {
            return Some(r.1);
        }
        rig.drain(Duration::from_millis(5)).await;
    }
    None
}

#[tokio::test]
async fn a_half_open_flood_on_a_shared_address_is_capped_and_expires_at_the_peek_timeout() {
    let (f, plain) = (Fixture::echo().await, Fixture::echo().await);
    let mut rig = RawRig::start(shared_cdn(f.addr, plain.addr)).await;
    for (i, n) in ["a.example.com.", "b.example.com."].iter().enumerate() {
        let port = 5300 + u16::try_from(i).unwrap();
        assert!(raw_dns(&mut rig, port, n, T).await.is_some(), "{n}");
    }
    let subnet = rig.subnet.clone();
    let flood = 2000u16;
    for p in 0..flood {
        rig.send(&syn(&subnet, 1000 + p, v4("203.0.113.20:443")))
            .await;
    }
    rig.drain(Duration::from_millis(300)).await;
    let st = rig.shared.stats.snapshot();
    assert!(st.tcp_active <= as_u64(MAX_PENDING_DIALS), "{st:?}");
    assert!(
        st.denied >= u64::from(flood) - as_u64(MAX_PENDING_DIALS),
        "{st:?}"
    );
    let e = last_for(&rig.log(), "203.0.113.20:443");
    assert_eq!(
        summary(&e),
        ("deny", "too many connections in progress", None, None)
    );

    // DNS is answered during the flood.
    let r = raw_dns(&mut rig, 5400, "host.boxlite.internal.", T).await;
    assert!(r.is_some());

    // Nothing completes a first flight, so each held handshake is refused at the peek
    // timeout (2 s), and the slots are free again.
    rig.drain(Duration::from_millis(2600)).await;
    let st = rig.shared.stats.snapshot();
    assert_eq!(st.tcp_active, 0, "{st:?}");
    let expired = rig
        .log()
        .iter()
        .filter(|e| e.dst.as_deref() == Some("203.0.113.20:443") && e.reason == NO_AUTHORITY)
        .count();
    // At least one per held handshake (a_refused_first_flight_is_one_decision_in_the_log
    // checks that it is exactly one).
    assert!(expired >= MAX_PENDING_DIALS, "{expired}");
    assert_eq!(f.accepts(), 0);

    let (mut guest, shared, engine) = rig.into_guest().await;
    assert!(!engine.is_finished());
    assert!(!first_flight(&mut guest, "203.0.113.40:80", b"still here").await);
    let hello = client_hello(Some("a.example.com"));
    assert!(!first_flight(&mut guest, "203.0.113.20:443", &hello).await);
    no_guard_violations(&shared.entries());
}

#[tokio::test]
async fn a_half_open_flood_to_an_allowed_address_stops_at_the_flow_cap() {
    // Paced so that the pending-dial cap never refuses: every dial completes (the fixture
    // accepts it) before the next batch, and the guest never completes a handshake.
    let f = Fixture::echo().await;
    let mut c = cfg();
    c.test.dial_override = vec![(sa("203.0.113.41:80"), f.addr)];
    let mut rig = RawRig::start(c).await;
    let subnet = rig.subnet.clone();
    let dst = v4("203.0.113.41:80");
    let (total, batch) = (MAX_TCP_FLOWS + 200, MAX_PENDING_DIALS / 2);
    let mut port = 1000u16;
    for start in (0..total).step_by(batch) {
        let n = batch.min(total - start);
        for _ in 0..n {
            rig.send(&syn(&subnet, port, dst)).await;
            port += 1;
        }
        let want = (start + n).min(MAX_TCP_FLOWS);
        let end = Instant::now() + T;
        while f.accepts() < want && Instant::now() < end {
            rig.drain(Duration::from_millis(5)).await;
        }
    }
    rig.drain(Duration::from_millis(200)).await;
    let st = rig.shared.stats.snapshot();
    assert_eq!(st.tcp_active, as_u64(MAX_TCP_FLOWS), "{st:?}");
    assert_eq!(f.accepts(), MAX_TCP_FLOWS);
    let refused = rig
        .log()
        .iter()
        .filter(|e| e.dst.as_deref() == Some("203.0.113.41:80") && e.verdict == "deny")
        .map(|e| e.reason.clone())
        .collect::<Vec<_>>();
    assert_eq!(
        refused,
        vec!["too many connections in progress".to_string(); total - MAX_TCP_FLOWS]
    );
    assert!(
        raw_dns(&mut rig, 5400, "host.boxlite.internal.", T)
            .await
            .is_some()
    );
    assert!(!rig.engine.is_finished());
    no_guard_violations(&rig.log());
}

#[tokio::test]
async fn a_syn_flood_on_port_53_is_held_to_the_flow_cap() {
    // DNS over TCP flows are connections too: a flood of them must not grow the flow
    // table past MAX_TCP_FLOWS.
    let mut rig = RawRig::start(cfg()).await;
    let subnet = rig.subnet.clone();
    let flood = u16::try_from(MAX_TCP_FLOWS + 500).unwrap();
    for p in 0..flood {
        rig.send(&syn(&subnet, 1000 + p, v4("198.51.100.53:53")))
            .await;
    }
    rig.drain(Duration::from_millis(500)).await;
    let started = Instant::now();
    let r = raw_dns(&mut rig, 5400, "host.boxlite.internal.", T).await;
    assert!(r.is_some(), "DNS over UDP stopped answering");
    let answered_in = started.elapsed();
    let st = rig.shared.stats.snapshot();
    assert!(!rig.engine.is_finished());
    assert!(
        st.tcp_active <= as_u64(MAX_TCP_FLOWS),
        "{} half-open DNS-over-TCP flows are held, past the cap of {MAX_TCP_FLOWS} \
         (DNS answered in {answered_in:?}): {st:?}",
        st.tcp_active
    );
}

#[tokio::test]
async fn a_slow_first_flight_on_a_shared_address_is_reset_at_the_peek_timeout() {
    // Slowloris: bytes trickle in and never complete a ClientHello or a request head.
    let f = Fixture::echo().await;
    let mut h = Harness::start(shared_cdn(f.addr, f.addr)).await.unwrap();
    resolve_shared(&mut h.guest).await;
    let started = Instant::now();
    let tls = h.guest.connect(v4("203.0.113.20:443")).await.unwrap();
    let http = h.guest.connect(v4("203.0.113.20:80")).await.unwrap();
    let hello = client_hello(Some("a.example.com"));
    let get = b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n".to_vec();
    let conns = [(tls, hello), (http, get)];
    let mut reset_after = [None, None];
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(20) {
        for (k, (s, bytes)) in conns.iter().enumerate() {
            if reset_after[k].is_none() {
                // One byte at a time, never the last one.
                if i + 1 < bytes.len() {
                    let _ = h.guest.send(*s, &bytes[i..=i]).await;
                }
                let (_, reset) = h.guest.read_to_end(*s, Duration::from_millis(75)).await;
                if reset {
                    reset_after[k] = Some(started.elapsed());
                }
            }
        }
        if reset_after.iter().all(Option::is_some) {
            break;
        }
        i += 1;
    }
    for (k, at) in reset_after.iter().enumerate() {
        let at = at.unwrap_or_else(|| panic!("connection {k} was never reset"));
        // Not before the peek timeout (2 s, less the connect): the trickle kept it
        // waiting, and only the timeout ended it.
        assert!(
            at >= Duration::from_millis(1800),
            "connection {k} reset after {at:?}"
        );
    }
    for dst in ["203.0.113.20:443", "203.0.113.20:80"] {
        let e = last_for(&h.log(), dst);
        assert_eq!(summary(&e), ("deny", NO_AUTHORITY, None, None), "{dst}");
    }
    assert_eq!(f.accepts(), 0);
    no_guard_violations(&h.log());
}

#[tokio::test]
async fn udp_flows_beyond_the_cap_are_refused_and_logged() {
    let sink = UdpFixture::echo().await;
    let mut c = cfg();
    c.test.dial_override = vec![(sa("203.0.113.30:7000"), sink.addr)];
    let mut h = Harness::start(c).await.unwrap();
    let dst = v4("203.0.113.30:7000");
    let extra = 88;
    for i in 0..MAX_UDP_FLOWS + extra {
        let port = 20000 + u16::try_from(i).unwrap();
        h.guest.udp_send(port, dst, b"x").await;
        if i % 32 == 0 {
            h.guest.step(Duration::ZERO).await;
        }
    }
    h.guest.idle(Duration::from_millis(300)).await;
    assert_eq!(
        sink.peers(),
        MAX_UDP_FLOWS,
        "flows past the cap were relayed"
    );
    let refused = h
        .log()
        .iter()
        .filter(|e| e.dst.as_deref() == Some("203.0.113.30:7000") && e.verdict == "deny")
        .map(|e| e.reason.clone())
        .collect::<Vec<_>>();
    assert_eq!(refused, vec!["too many udp flows".to_string(); extra]);

    // Flows already open keep working, and DNS is still answered.
    h.guest.udp.clear();
    h.guest.udp_send(20000, dst, b"again").await;
    assert_eq!(
        h.guest.udp_recv(20000, T).await.map(|(_, d)| d),
        Some(b"again".to_vec())
    );
    assert_eq!(
        resolve(&mut h.guest, "host.boxlite.internal.").await.1,
        [ip("10.0.2.2")]
    );
    no_guard_violations(&h.log());
}

/// A box whose upstream resolver never answers.
async fn silent_upstream() -> (Upstream, Harness) {
    let up = Upstream::scripted(|_, _, _| None).await;
    let mut c = cfg();
    c.dns_upstreams = vec![up.addr];
    let h = Harness::start(c).await.unwrap();
    (up, h)
}

#[tokio::test]
async fn forwarded_dns_over_udp_is_capped_in_flight_and_local_answers_continue() {
    let (up, mut h) = silent_upstream().await;
    for i in 0..300u16 {
        let q = query(&format!("q{i}.example.com."), A);
        h.guest.udp_send(30000 + i, v4("10.0.2.3:53"), &q).await;
        if i % 32 == 0 {
            h.guest.step(Duration::ZERO).await;
        }
    }
    // Wait (not time) for the forwards to reach the upstream: the cap holds them at
    // MAX_DNS_INFLIGHT however long the machine takes.
    let end = Instant::now() + T;
    while up.asked().len() < MAX_DNS_INFLIGHT && Instant::now() < end {
        h.guest.idle(Duration::from_millis(50)).await;
    }
    h.guest.idle(Duration::from_millis(300)).await;
    assert_eq!(up.asked().len(), MAX_DNS_INFLIGHT);

    assert_eq!(
        resolve(&mut h.guest, "host.boxlite.internal.").await.1,
        [ip("10.0.2.2")]
    );

    // Each forward gives up after the upstream timeout (2 s), is logged, and frees its
    // slot.
    let errors = |h: &Harness| {
        h.log()
            .iter()
            .filter(|e| e.kind == "dns" && e.verdict == "error")
            .count()
    };
    let end = Instant::now() + T;
    while errors(&h) < MAX_DNS_INFLIGHT && Instant::now() < end {
        h.guest.idle(Duration::from_millis(50)).await;
    }
    assert_eq!(errors(&h), MAX_DNS_INFLIGHT);
    h.guest
        .udp_send(39999, v4("10.0.2.3:53"), &query("late.example.com.", A))
        .await;
    h.guest.idle(Duration::from_millis(300)).await;
    assert_eq!(up.count("late.example.com"), 1);
}

#[tokio::test]
async fn forwarded_dns_over_tcp_obeys_the_same_in_flight_cap() {
    let (up, mut h) = silent_upstream().await;
    let n = 300;
    let queries: Vec<Vec<u8>> = (0..n)
        .map(|i| query(&format!("t{i}.example.com."), A))
        .collect();
    let s = h.guest.connect(v4("10.0.2.3:53")).await.unwrap();
    let mut wire = Vec::new();
    for q in &queries {
        wire.extend_from_slice(&u16_len(q.len()));
        wire.extend_from_slice(q);
    }
    let sent = Instant::now();
    h.guest.send(s, &wire).await.unwrap();
    h.guest.idle(Duration::from_millis(300)).await;
    assert_eq!(
        resolve(&mut h.guest, "host.boxlite.internal.").await.1,
        [ip("10.0.2.2")]
    );
    // Every forward ends in one `error` entry when the upstream times out (2 s); they all
    // started within the first few hundred milliseconds, so they were in flight together.
    // (The upstream's own count is no measure: its socket buffer drops the excess.)
    h.guest
        .idle(Duration::from_millis(2600).saturating_sub(sent.elapsed()))
        .await;
    let forwarded = h
        .log()
        .iter()
        .filter(|e| e.kind == "dns" && e.verdict == "error")
        .count();
    assert!(!up.asked().is_empty());
    assert!(
        forwarded <= MAX_DNS_INFLIGHT,
        "{forwarded} of {n} queries pipelined on one DNS-over-TCP connection were forwarded \
         at once; the in-flight cap is {MAX_DNS_INFLIGHT}"
    );
}
