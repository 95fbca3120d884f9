//! Cases 9 to 15: rebinding, DNS over TCP and to other addresses, encrypted DNS, IPv6.

use super::*;

// ---------------------------------------------------------------------------------------
// Case 9: DNS rebinding
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn rebinding_answers_into_private_ranges_are_stripped_and_stay_unreachable() {
    let up = Upstream::scripted(|qname, _, n| {
        if qname != "rb.example.com" {
            return None;
        }
        let rb = "rb.example.com.";
        let answers = match n {
            0 => vec![a(rb, "198.51.100.5", 0)],
            1 => vec![a(rb, "127.0.0.1", 0)],
            2 => vec![a(rb, "10.0.0.1", 0)],
            3 => vec![a(rb, "169.254.169.254", 0)],
            4 => vec![cname(rb, "localhost."), a("localhost.", "127.0.0.1", 0)],
            5 => vec![a(rb, "198.51.100.6", 0), a(rb, "10.0.0.1", 0)],
            _ => return None,
        };
        Some((ResponseCode::NoError, answers))
    })
    .await;
    let (private, public) = (Fixture::echo().await, Fixture::echo().await);
    let mut c = cfg();
    c.dns_upstreams = vec![up.addr];
    c.test.dial_override = vec![
        (sa("10.0.0.1:80"), private.addr),
        (sa("169.254.169.254:80"), private.addr),
        (sa("198.51.100.5:80"), public.addr),
    ];
    let mut h = Harness::start(c).await.unwrap();
    let nx = (ResponseCode::NXDomain, vec![]);
    let want = [
        (ResponseCode::NoError, vec![ip("198.51.100.5")]),
        nx.clone(),
        nx.clone(),
        nx.clone(),
        nx,
        (ResponseCode::NoError, vec![ip("198.51.100.6")]),
    ];
    for (i, w) in want.into_iter().enumerate() {
        assert_eq!(
            resolve(&mut h.guest, "rb.example.com.").await,
            w,
            "answer {i}"
        );
    }
    // AAAA (where ::ffff:127.0.0.1 would hide) is never asked upstream.
    let r = h
        .guest
        .dns(DNS_IP, &query("rb.example.com.", AAAA))
        .await
        .unwrap();
    let m = Message::from_vec(&r).unwrap();
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0)
    );
    assert!(up.asked().iter().all(|(_, t)| *t == A), "{:?}", up.asked());

    for (dst, reason) in [
        ("10.0.0.1:80", "default: private addresses are denied"),
        (
            "169.254.169.254:80",
            "default: metadata addresses are denied",
        ),
        ("127.0.0.1:80", "default: loopback addresses are denied"),
    ] {
        assert_eq!(
            h.guest.connect(v4(dst)).await,
            Err(GuestError::Reset),
            "{dst}"
        );
        let e = last_for(&h.log(), dst);
        assert_eq!(summary(&e), ("deny", reason, None, None), "{dst}");
        assert!(e.names.is_empty(), "{dst} was pinned: {e:?}");
    }
    assert_eq!(private.accepts(), 0, "a rebound address was reached");

    // The public answer was pinned to the name.
    assert!(!first_flight(&mut h.guest, "198.51.100.5:80", b"hi").await);
    assert_eq!(
        last_for(&h.log(), "198.51.100.5:80").names,
        ["rb.example.com"]
    );
    no_guard_violations(&h.log());
}

#[tokio::test]
async fn an_explicit_address_rule_lets_a_private_answer_resolve_and_connect() {
    let up = Upstream::table(&[
        ("rb.example.com", "10.0.0.1"),
        ("lo.example.com", "127.0.0.1"),
    ])
    .await;
    let f = Fixture::echo().await;
    let mut c = cfg();
    c.dns_upstreams = vec![up.addr];
    c.rules.allow = vec!["10.0.0.0/8".into(), "*.example.com".into()];
    c.test.dial_override = vec![(sa("10.0.0.1:80"), f.addr)];
    let mut h = Harness::start(c).await.unwrap();
    assert_eq!(
        resolve(&mut h.guest, "rb.example.com.").await,
        (ResponseCode::NoError, vec![ip("10.0.0.1")])
    );
    assert_eq!(
        resolve(&mut h.guest, "lo.example.com.").await,
        (ResponseCode::NXDomain, vec![])
    );
    assert!(!first_flight(&mut h.guest, "10.0.0.1:80", b"ping").await);
    let e = last_for(&h.log(), "10.0.0.1:80");
    assert_eq!(
        summary(&e),
        ("allow", "allow rule 10.0.0.0/8", Some("10.0.0.0/8"), None)
    );
    assert_eq!(f.accepts(), 1);
    no_guard_violations(&h.log());
}

// ---------------------------------------------------------------------------------------
// Cases 10 and 11: DNS over TCP, and DNS to addresses other than the box's resolver
// ---------------------------------------------------------------------------------------

/// Send `queries` pipelined on one DNS-over-TCP connection; returns the replies in the
/// order they came.
async fn dns_over_tcp(
    g: &mut FakeGuest,
    server: &str,
    queries: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, GuestError> {
    let s = g.connect(v4(server)).await?;
    let mut wire = Vec::new();
    for q in queries {
        wire.extend_from_slice(&u16_len(q.len()));
        wire.extend_from_slice(q);
    }
    g.send(s, &wire).await?;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let end = Instant::now() + T;
    while out.len() < queries.len() && Instant::now() < end {
        buf.extend(g.read_n(s, 1, Duration::from_millis(200)).await);
        while buf.len() >= 2 {
            let n = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            if buf.len() < 2 + n {
                break;
            }
            out.push(buf[2..2 + n].to_vec());
            buf.drain(..2 + n);
        }
    }
    g.close(s).await;
    Ok(out)
}

/// (id, response code, A records, answer count) of a reply.
fn outline(reply: &[u8]) -> (u16, ResponseCode, Vec<Ipv4Addr>, usize) {
    let m = Message::from_vec(reply).unwrap();
    let (code, ips) = a_records(reply);
    (m.metadata.id, code, ips, m.answers.len())
}

#[tokio::test]
async fn dns_over_tcp_to_any_address_gets_the_udp_answers_and_no_upstream_at_that_address() {
    let up = Upstream::table(&[("www.example.com", "198.51.100.7")]).await;
    let sink = Sink::start().await;
    let mut c = cfg();
    c.dns_upstreams = vec![up.addr];
    c.rules.allow = vec!["*.example.com".into()];
    c.hosts = vec![host("static.example.com", "203.0.113.10")];
    // If DNS were ever relayed rather than answered, it would reach the sink.
    c.test.dial_override = vec![
        (sa("198.51.100.53:53"), sink.addr),
        (sa("10.0.2.3:53"), sink.addr),
    ];
    let mut h = Harness::start(c).await.unwrap();
    let questions = [
        ("secretdata.evil.test.", A),
        ("static.example.com.", A),
        ("www.example.com.", A),
        ("www.example.com.", AAAA),
    ];
    let queries: Vec<Vec<u8>> = questions
        .iter()
        .enumerate()
        .map(|(i, (n, t))| query_id(u16::try_from(i).unwrap() + 1, n, *t))
        .collect();
    let want = vec![
        (1, ResponseCode::NXDomain, vec![], 0),
        (2, ResponseCode::NoError, vec![ip("203.0.113.10")], 1),
        (3, ResponseCode::NoError, vec![ip("198.51.100.7")], 1),
        (4, ResponseCode::NoError, vec![], 0),
    ];
    for server in ["10.0.2.3", "198.51.100.53"] {
        let mut over_udp = Vec::new();
        for q in &queries {
            let r = h.guest.dns(ip(server), q).await.expect("answered over udp");
            over_udp.push(outline(&r));
        }
        assert_eq!(over_udp, want, "udp to {server}");
        let replies = dns_over_tcp(&mut h.guest, &format!("{server}:53"), &queries)
            .await
            .expect("dns over tcp is accepted");
        let mut over_tcp: Vec<_> = replies.iter().map(|r| outline(r)).collect();
        over_tcp.sort_by_key(|o| o.0);
        assert_eq!(over_tcp, want, "tcp to {server}");
    }
    // One byte per segment: the length prefix and the message are reassembled.
    h.guest.segment = Some(1);
    let replies = dns_over_tcp(&mut h.guest, "198.51.100.53:53", &queries[2..3])
        .await
        .unwrap();
    h.guest.segment = None;
    assert_eq!(
        replies.iter().map(|r| outline(r)).collect::<Vec<_>>(),
        want[2..3]
    );

    let denied = dns_entries(&h.log(), "secretdata.evil.test");
    assert_eq!(denied.len(), 4, "{denied:#?}");
    assert!(
        denied
            .iter()
            .all(|e| summary(e) == ("deny", ALLOW_LIST_MISS, None, Some("secretdata.evil.test"))),
        "{denied:#?}"
    );
    assert_eq!(
        up.asked(),
        vec![("www.example.com".to_string(), A); 5],
        "only the allowed A question went upstream, once per exchange"
    );
    assert_eq!(
        sink.touched(),
        (0, 0),
        "the resolver 'at' the address was reached"
    );
    no_guard_violations(&h.log());
}

// ---------------------------------------------------------------------------------------
// Cases 12 and 13: encrypted DNS
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn dns_over_tls_is_refused_by_default_even_to_a_resolved_name() {
    // Case 12.
    let (dot, f443) = (Sink::start().await, Fixture::echo().await);
    let mut c = cfg();
    c.hosts = vec![host("dot.example.net", "198.51.100.80")];
    c.test.dial_override = vec![
        (sa("198.51.100.80:853"), dot.addr),
        (sa("198.51.100.81:853"), dot.addr),
        (sa("198.51.100.80:443"), f443.addr),
    ];
    let mut h = Harness::start(c.clone()).await.unwrap();
    assert_eq!(
        resolve(&mut h.guest, "dot.example.net.").await.1,
        [ip("198.51.100.80")]
    );
    for (dst, names) in [
        ("198.51.100.81:853", vec![]),
        ("198.51.100.80:853", vec!["dot.example.net"]),
    ] {
        assert_eq!(
            h.guest.connect(v4(dst)).await,
            Err(GuestError::Reset),
            "{dst}"
        );
        let e = last_for(&h.log(), dst);
        assert_eq!(
            (e.verdict.as_str(), e.rule.as_deref()),
            ("deny", None),
            "{e:?}"
        );
        assert!(e.reason.contains("853"), "the reason names the port: {e:?}");
        assert_eq!(e.names, names);
    }

    // DNS over QUIC: the same port over UDP.
    h.guest
        .udp_send(7853, v4("198.51.100.80:853"), b"doq")
        .await;
    assert_eq!(
        h.guest.udp_recv(7853, Duration::from_millis(300)).await,
        None
    );
    let e = last_for(&h.log(), "198.51.100.80:853");
    assert_eq!(
        (e.verdict.as_str(), e.proto),
        ("deny", Some(boxlite_net::config::Proto::Udp))
    );
    assert!(e.reason.contains("853"), "{e:?}");
    assert_eq!(dot.touched(), (0, 0), "the DoT/DoQ fixture was reached");
    // The same address on 443 is ordinary public traffic.
    assert!(!first_flight(&mut h.guest, "198.51.100.80:443", b"x").await);
    no_guard_violations(&h.log());

    // An explicit address rule opens it.
    c.rules.allow = vec!["198.51.100.80:853".into()];
    let mut h = Harness::start(c).await.unwrap();
    assert!(!first_flight(&mut h.guest, "198.51.100.80:853", b"x").await);
    let e = last_for(&h.log(), "198.51.100.80:853");
    assert_eq!(
        (e.verdict.as_str(), e.rule.as_deref()),
        ("allow", Some("198.51.100.80:853"))
    );
    assert_eq!(dot.touched(), (1, 0));
    no_guard_violations(&h.log());
}

#[tokio::test]
async fn an_address_learned_over_doh_is_not_pinned_and_stays_unreachable() {
    // Case 13: the guest resolves hidden.example.org through an allowed DoH server; the
    // box's DNS never saw that name, so its address carries no pin.
    let up = Upstream::table(&[("doh.example.net", "203.0.113.53")]).await;
    let mut answer = Message::new(0, MessageType::Response, OpCode::Query);
    answer.add_query(hickory_proto::op::Query::query(
        name("hidden.example.org."),
        A,
    ));
    answer.answers = vec![a("hidden.example.org.", "203.0.113.77", 300)];
    let body = answer.to_vec().unwrap();
    let mut http = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/dns-message\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    http.extend_from_slice(&body);
    let doh = Fixture::replying(http.clone()).await;
    let victim = Fixture::echo().await;
    let mut c = cfg();
    c.dns_upstreams = vec![up.addr];
    c.rules.allow = vec!["doh.example.net:443".into(), "*.example.com".into()];
    c.test.dial_override = vec![
        (sa("203.0.113.53:443"), doh.addr),
        (sa("203.0.113.77:443"), victim.addr),
    ];
    let mut h = Harness::start(c).await.unwrap();
    assert_eq!(
        resolve(&mut h.guest, "doh.example.net.").await.1,
        [ip("203.0.113.53")]
    );
    let s = h.guest.connect(v4("203.0.113.53:443")).await.unwrap();
    let q = query_id(0, "hidden.example.org.", A);
    let mut req = format!(
        "POST /dns-query HTTP/1.1\r\nHost: doh.example.net\r\ncontent-type: application/dns-message\r\ncontent-length: {}\r\n\r\n",
        q.len()
    )
    .into_bytes();
    req.extend_from_slice(&q);
    h.guest.send(s, &req).await.unwrap();
    let resp = h.guest.read_n(s, http.len(), T).await;
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an http response")
        + 4;
    assert_eq!(a_records(&resp[at..]).1, [ip("203.0.113.77")]);
    assert!(doh.received(0).starts_with(b"POST /dns-query"));
    assert_eq!(
        last_for(&h.log(), "203.0.113.53:443").rule.as_deref(),
        Some("doh.example.net:443")
    );

    assert_eq!(
        h.guest.connect(v4("203.0.113.77:443")).await,
        Err(GuestError::Reset)
    );
    let e = last_for(&h.log(), "203.0.113.77:443");
    assert_eq!(
        summary(&e),
        ("deny", "not resolved by this box's DNS", None, None)
    );
    assert!(e.names.is_empty());
    assert_eq!(victim.accepts(), 0);
    assert_eq!(up.count("hidden.example.org"), 0);
    no_guard_violations(&h.log());
}

// ---------------------------------------------------------------------------------------
// Case 15: IPv6
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn ipv6_frames_are_dropped_counted_and_never_answered() {
    let up = Upstream::table(&[("www.example.com", "198.51.100.7")]).await;
    let mut c = cfg();
    c.dns_upstreams = vec![up.addr];
    c.hosts = vec![host("static.example.com", "203.0.113.10")];
    let mut h = Harness::start(c).await.unwrap();
    let s = h.guest.subnet().clone();
    let doc: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let mut doc_dns = doc;
    doc_dns[15] = 0x53;
    let all_routers: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let solicited: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2];
    let fe80_2: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let mut src_ll = vec![1, 1];
    src_ll.extend_from_slice(&s.guest_mac);

    // TCP SYN to [2001:db8::1]:443.
    let mut tcp = vec![
        0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff,
    ];
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    // Router solicitation, with the source link-layer option.
    let mut rs = vec![133, 0, 0, 0, 0, 0, 0, 0];
    rs.extend_from_slice(&src_ll);
    // Neighbor solicitation for fe80::2.
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&fe80_2);
    ns.extend_from_slice(&src_ll);
    // A DNS query to [2001:db8::53]:53.
    let dns = query("www.example.com.", A);
    let mut udp = vec![0x14, 0xe9, 0, 53];
    udp.extend_from_slice(&u16_len(8 + dns.len()));
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&dns);
    let frames = [
        ipv6_frame(&s, doc, 6, tcp, 16),
        ipv6_frame(&s, all_routers, 58, rs, 2),
        ipv6_frame(&s, solicited, 58, ns, 2),
        ipv6_frame(&s, doc_dns, 17, udp, 6),
    ];
    h.guest.seen = Some(Vec::new());
    for f in &frames {
        h.guest.raw(f).await;
    }
    h.guest.idle(Duration::from_millis(300)).await;
    let st = h.shared.stats.snapshot();
    assert_eq!(
        (st.dropped_ipv6, st.dns_queries, st.tcp_connections),
        (4, 0, 0),
        "{st:?}"
    );
    let seen = h.guest.seen.take().unwrap();
    assert!(
        seen.is_empty(),
        "the helper answered an IPv6 frame (RA, NA, RST or DNS): {seen:?}"
    );
    assert!(up.asked().is_empty());

    // AAAA: no data, for a forwarded name and a static one alike, and never asked upstream.
    for n in ["www.example.com.", "static.example.com."] {
        let r = h.guest.dns(DNS_IP, &query(n, AAAA)).await.unwrap();
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(
            (m.metadata.response_code, m.answers.len()),
            (ResponseCode::NoError, 0),
            "{n}"
        );
    }
    assert!(up.asked().is_empty(), "{:?}", up.asked());
}
