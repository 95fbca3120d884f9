use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// A host link and a guest serving it over an in-memory port; every stream the guest
/// accepts goes to `serve`.
fn pair<F, Fut>(
    serve: F,
) -> (
    HostLink,
    tokio::task::JoinHandle<io::Result<()>>,
    Arc<LinkStats>,
)
where
    F: Fn(Stream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (host_end, guest_end) = tokio::io::duplex(256 * 1024);
    let (link, driver) = host_link();
    let host = tokio::spawn(async move {
        let (r, w) = tokio::io::split(host_end);
        driver.run(r, w).await
    });
    let gstats = Arc::new(LinkStats::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let gs = gstats.clone();
    tokio::spawn(async move {
        let (r, w) = tokio::io::split(guest_end);
        let _ = run_guest(r, w, tx, gs, |_| {}).await;
    });
    tokio::spawn(async move {
        while let Some(s) = rx.recv().await {
            tokio::spawn(serve(s));
        }
    });
    (link, host, gstats)
}

async fn echo(mut s: Stream) {
    let mut buf = vec![0u8; 8192];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = s.shutdown().await;
}

#[tokio::test]
async fn streams_are_independent_and_echo() {
    let (link, _h, _) = pair(echo);
    let (_, mut a) = link.open().await.unwrap();
    let (_, mut b) = link.open().await.unwrap();
    a.write_all(b"from a").await.unwrap();
    b.write_all(b"from b").await.unwrap();
    let mut got = [0u8; 6];
    b.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"from b");
    a.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"from a");
}

#[tokio::test]
async fn a_paused_reader_does_not_block_other_streams() {
    let (link, _h, _) = pair(|mut s: Stream| async move {
        // Once the client spoke (a yamux stream reaches the peer with its first frame),
        // send 4 MiB whether or not anyone reads.
        let mut b = [0u8; 1];
        let _ = s.read_exact(&mut b).await;
        let _ = s.write_all(&vec![7u8; 4 << 20]).await;
        let _ = s.shutdown().await;
    });
    let (_, mut paused) = link.open().await.unwrap();
    paused.write_all(b"?").await.unwrap();
    let (_, mut other) = link.open().await.unwrap();
    other.write_all(b"?").await.unwrap();
    let mut all = Vec::new();
    other.read_to_end(&mut all).await.unwrap();
    assert_eq!(all.len(), 4 << 20);
}

#[tokio::test]
async fn closing_right_after_a_write_loses_nothing() {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (link, _h, _) = pair(move |mut s: Stream| {
        let done = done_tx.clone();
        async move {
            let mut v = Vec::new();
            let _ = s.read_to_end(&mut v).await;
            let _ = done.send(v);
        }
    });
    let (_, mut s) = link.open().await.unwrap();
    let data: Vec<u8> = (0u32..1 << 20)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();
    s.write_all(&data).await.unwrap();
    s.shutdown().await.unwrap();
    drop(s);
    assert_eq!(done_rx.recv().await.unwrap(), data);
}

#[tokio::test]
async fn a_new_epoch_closes_the_old_streams_and_serves_new_ones() {
    let (link, _h, _) = pair(echo);
    let (e1, mut old) = link.open().await.unwrap();
    old.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    old.read_exact(&mut one).await.unwrap();

    link.reset();
    let mut rest = Vec::new();
    // The old stream ends (end of file or an error), and never sees new bytes.
    let _ = tokio::time::timeout(Duration::from_secs(10), old.read_to_end(&mut rest))
        .await
        .expect("the old stream ended");
    assert!(rest.is_empty());

    let (e2, mut new) = link.open().await.unwrap();
    assert_ne!(e1, e2);
    new.write_all(b"fresh").await.unwrap();
    let mut got = [0u8; 5];
    new.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"fresh");
}

/// The host end of a port whose guest side the test plays by hand.
struct RawGuest {
    port: DuplexStream,
    dec: Decoder,
}

impl RawGuest {
    async fn frame(&mut self) -> Frame {
        let mut buf = vec![0u8; 4096];
        loop {
            if let Some(f) = self.dec.next_frame() {
                return f;
            }
            let n = self.port.read(&mut buf).await.unwrap();
            assert!(n > 0, "host closed the port");
            self.dec.push(&buf[..n]);
        }
    }
    async fn send(&mut self, kind: Kind, epoch: u64, payload: &[u8]) {
        let mut v = Vec::new();
        frame::encode(kind, epoch, payload, &mut v);
        self.port.write_all(&v).await.unwrap();
    }
}

fn raw_host() -> (HostLink, RawGuest) {
    let (host_end, guest_end) = tokio::io::duplex(1 << 20);
    let (link, driver) = host_link();
    tokio::spawn(async move {
        let (r, w) = tokio::io::split(host_end);
        let _ = driver.run(r, w).await;
    });
    (
        link,
        RawGuest {
            port: guest_end,
            dec: Decoder::new(),
        },
    )
}

#[tokio::test]
async fn garbage_and_old_epochs_from_the_guest_never_reach_a_stream() {
    let (link, mut g) = raw_host();
    let hello = g.frame().await;
    assert_eq!(hello.kind, Kind::Hello);
    let epoch = hello.epoch;
    // Garbage, a stale epoch's data and an oversized header before the answer.
    g.port.write_all(&[0x42; 10_000]).await.unwrap();
    g.send(Kind::Data, epoch ^ 1, b"stale bytes").await;
    g.send(Kind::HelloAck, epoch, b"").await;
    let opened = tokio::spawn({
        let link = link.clone();
        async move { link.open().await }
    });
    // yamux's SYN for the new stream.
    let f = g.frame().await;
    assert_eq!((f.kind, f.epoch), (Kind::Data, epoch));
    assert!(
        link.stats.stale_frames.load(Ordering::Relaxed) >= 1,
        "stale frame counted"
    );
    assert!(LinkStats::get(&link.stats.skipped_bytes) >= 10_000);
    drop(opened);
}

#[tokio::test]
async fn a_flood_of_guest_opened_streams_is_refused_with_bounded_memory() {
    let (link, mut g) = raw_host();
    let epoch = g.frame().await.epoch;
    g.send(Kind::HelloAck, epoch, b"").await;
    // yamux window-update frames with SYN, stream ids even (the server side's), 5000 of them.
    let mut wire = Vec::new();
    for i in 0..5000u32 {
        let id = 2 * (i + 1);
        let mut hdr = vec![0u8, 1, 0, 1]; // version, type WindowUpdate, flags SYN
        hdr.extend_from_slice(&id.to_be_bytes());
        hdr.extend_from_slice(&0u32.to_be_bytes());
        frame::encode(Kind::Data, epoch, &hdr, &mut wire);
    }
    g.port.write_all(&wire).await.unwrap();
    // The host stays usable: a stream it opens is still answered.
    let t = tokio::spawn({
        let link = link.clone();
        async move { link.open().await.map(|_| ()) }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while LinkStats::get(&link.stats.refused_streams) + LinkStats::get(&link.stats.sessions) < 2
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        LinkStats::get(&link.stats.refused_streams) > 0 || LinkStats::get(&link.stats.sessions) > 1,
        "the streams were refused or the session reset"
    );
    t.abort();
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Feed `bytes` to one end of a link (guest or host) and check it neither panics nor
    /// stops reading.
    fn feed(guest_side: bool, bytes: Vec<u8>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (mut peer, end) = tokio::io::duplex(1 << 16);
            let task = if guest_side {
                let (tx, _rx) = mpsc::unbounded_channel();
                tokio::spawn(async move {
                    let (r, w) = tokio::io::split(end);
                    run_guest(r, w, tx, Arc::new(LinkStats::default()), |_| {}).await
                })
            } else {
                let (_link, driver) = host_link();
                tokio::spawn(async move {
                    let (r, w) = tokio::io::split(end);
                    driver.run(r, w).await
                })
            };
            // Drain what the link writes, so it never blocks on us.
            let (mut pr, mut pw) = tokio::io::split(peer_take(&mut peer));
            let drain = tokio::spawn(async move {
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut pr, &mut sink).await;
            });
            pw.write_all(&bytes).await.unwrap();
            // Still reading: more bytes are accepted.
            let more = vec![0u8; 200_000];
            tokio::time::timeout(Duration::from_secs(10), pw.write_all(&more))
                .await
                .expect("the link kept reading")
                .unwrap();
            assert!(!task.is_finished(), "the link ended on hostile input");
            task.abort();
            drain.abort();
        });
    }

    fn peer_take(p: &mut DuplexStream) -> DuplexStream {
        std::mem::replace(p, tokio::io::duplex(1).0)
    }

    /// Arbitrary bytes, with real frames of a session mixed in.
    fn hostile() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..5000),
                (
                    any::<u64>(),
                    0u8..4,
                    proptest::collection::vec(any::<u8>(), 0..2000)
                )
                    .prop_map(|(epoch, k, payload)| {
                        let kind =
                            [Kind::Hello, Kind::HelloAck, Kind::Data, Kind::Reset][usize::from(k)];
                        let mut v = Vec::new();
                        frame::encode(kind, epoch % 3 + 1, &payload, &mut v);
                        v
                    }),
            ],
            0..30,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn the_guest_end_survives_hostile_input(bytes in hostile()) {
            feed(true, bytes);
        }

        #[test]
        fn the_host_end_survives_hostile_input(bytes in hostile()) {
            feed(false, bytes);
        }
    }
}
