//! Seeded mutations of valid frames through the whole engine: a fuzz smoke test that runs
//! on stable in every `cargo test` (the libFuzzer targets are in `fuzz/`).

use super::*;

// ---------------------------------------------------------------------------------------
// Malformed frames through the whole engine
// ---------------------------------------------------------------------------------------

/// Recompute the IPv4 header checksum and the UDP or TCP checksum, as far as the
/// (possibly mutated) lengths allow, so mutations get past the checksum checks.
fn fix_checksums(f: &mut [u8]) {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    if ihl < 20 || 14 + ihl > f.len() {
        return;
    }
    f[24..26].fill(0);
    let c = csum_fold(csum_add(0, &f[14..14 + ihl]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let l4 = 14 + ihl;
    let mut end = (14 + usize::from(u16::from_be_bytes([f[16], f[17]]))).min(f.len());
    let proto = f[23];
    let at = match proto {
        6 => l4 + 16,
        17 => l4 + 6,
        _ => return,
    };
    if at + 2 > end {
        return;
    }
    if proto == 17 {
        let ulen = usize::from(u16::from_be_bytes([f[l4 + 4], f[l4 + 5]]));
        if ulen >= 8 && l4 + ulen <= end {
            end = l4 + ulen;
        }
    }
    f[at..at + 2].fill(0);
    let mut sum = csum_add(0, &f[26..34]);
    sum = csum_add(sum, &[0, proto]);
    sum = csum_add(sum, &u16_len(end - l4));
    sum = csum_add(sum, &f[l4..end]);
    let mut c = csum_fold(sum);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// One to four mutations of `base`: bit flips, random bytes, truncation, extension,
/// insertion, and length and offset fields set to edge or random values.
fn mutate(rng: &mut StdRng, base: &[u8], s: &boxlite_net::config::Subnet) -> Vec<u8> {
    // (offset, width) of IHL, total length, flags/fragment offset, UDP length, TCP data
    // offset, with a 20-byte IPv4 header.
    const FIELDS: [(usize, usize); 5] = [(14, 1), (16, 2), (20, 2), (38, 2), (46, 1)];
    let mut f = base.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if f.is_empty() {
            break;
        }
        let at = rng.random_range(0..f.len());
        match rng.random_range(0..6) {
            0 => f[at] ^= 1 << rng.random_range(0..8),
            1 => f[at] = rng.random(),
            2 => f.truncate(at),
            3 => {
                let n = rng.random_range(1..64);
                f.extend((0..n).map(|_| rng.random::<u8>()));
            }
            4 => {
                let n = rng.random_range(1..16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                f.splice(at..at, bytes);
            }
            _ => {
                let (off, width) = FIELDS[rng.random_range(0..FIELDS.len())];
                let edges = [0u16, 1, 0x7f, 0xff, 0xffff, u16::try_from(f.len()).unwrap()];
                let v = if rng.random_bool(0.5) {
                    edges[rng.random_range(0..edges.len())]
                } else {
                    rng.random()
                };
                if off + width <= f.len() {
                    let b = v.to_be_bytes();
                    f[off..off + width].copy_from_slice(&b[2 - width..]);
                }
            }
        }
    }
    if f.len() >= 12 && rng.random_bool(0.9) {
        f[6..12].copy_from_slice(&s.guest_mac);
    }
    if rng.random_bool(0.6) {
        fix_checksums(&mut f);
    }
    f
}

#[tokio::test]
async fn seeded_mutations_of_valid_frames_never_stop_the_engine() {
    let fixture = Fixture::echo().await;
    let up = Upstream::scripted(|qname, qtype, _| {
        (qtype == A).then(|| {
            let owner = format!("{qname}.");
            (ResponseCode::NoError, vec![a(&owner, "198.51.100.9", 60)])
        })
    })
    .await;
    let mut c = cfg();
    c.dns_upstreams = vec![up.addr];
    c.test.dial_override = vec![(sa("203.0.113.40:80"), fixture.addr)];
    let mut h = Harness::start(c).await.unwrap();
    let s = h.guest.subnet().clone();
    let seeds = [
        arp_request(&s, s.gateway_ip),
        syn(&s, 4444, v4("203.0.113.40:80")),
        frame::udp_from_guest(
            &s,
            5353,
            v4("10.0.2.3:53"),
            &query_id(7, "www.example.com.", A),
        ),
    ];
    let mut rng = StdRng::seed_from_u64(0x5eed_b0c5);
    let rounds = 24_000;
    for i in 0..rounds {
        let f = mutate(&mut rng, &seeds[i % seeds.len()], &s);
        h.guest.raw(&f).await;
        if i % 16 == 0 {
            h.guest.step(Duration::ZERO).await;
        }
    }
    // Edges of the framing itself: an empty frame, one byte over the MTU, and the largest
    // length the reader accepts at all.
    h.guest.raw(&[]).await;
    h.guest.raw(&vec![0u8; frame::max_frame(&s) + 1]).await;
    h.guest.raw(&vec![0u8; 1 << 20]).await;
    h.guest.idle(Duration::from_millis(300)).await;

    assert!(!h.engine.is_finished(), "the engine task ended");
    assert_eq!(
        resolve(&mut h.guest, "host.boxlite.internal.").await.1,
        [ip("10.0.2.2")]
    );
    assert!(!first_flight(&mut h.guest, "203.0.113.40:80", b"after the storm").await);
    let st = h.shared.stats.snapshot();
    assert!(
        st.frames_in > as_u64(rounds),
        "frames were lost or the stream lost sync: {st:?}"
    );
    assert!(st.dropped_malformed >= 2, "{st:?}");
    // Mutated destinations are refused by the loopback guard rather than dialled; no
    // log entry may show a dial that left it.
    assert!(
        h.log()
            .iter()
            .filter(|e| e.kind == "guard")
            .all(|e| e.reason.starts_with("guard: refusing")),
        "{:#?}",
        h.log()
    );
}
