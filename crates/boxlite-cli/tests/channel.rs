//! The agent channel's host end, tested against the real `boxlite-shim` binary with the
//! test playing QEMU and the guest: it listens on the box's `port.sock` as QEMU does, and
//! serves the other end with the agent's own link code (`run_guest`) or writes raw bytes
//! as a hostile guest would. VM-level tests of the same properties are in `lifecycle.rs`
//! and the exec suites.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use boxlite_protocol::channel::frame::{self, Decoder, Kind};
use boxlite_protocol::channel::{LinkStats, Stream, run_guest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

const SHIM: &str = env!("CARGO_BIN_EXE_boxlite-shim");

/// A box directory with QEMU's end of the port, and the shim's socket root.
struct Fixture {
    root: PathBuf,
    dir: PathBuf,
    sock_root: PathBuf,
    id: String,
    port: Option<UnixListener>,
    shims: Vec<Child>,
}

impl Fixture {
    fn new() -> Fixture {
        let n: u64 = rand::random();
        let root = std::env::temp_dir().join(format!("bxch-{n:016x}"));
        let dir = root.join("home/boxes/box");
        std::fs::create_dir_all(&dir).unwrap();
        let sock_root = PathBuf::from(format!("/tmp/bxs-{n:08x}"));
        let port = UnixListener::bind(dir.join("port.sock")).unwrap();
        Fixture {
            id: format!("{n:016x}{n:016x}"),
            root,
            dir,
            sock_root,
            port: Some(port),
            shims: Vec::new(),
        }
    }

    /// Start a shim, which connects to the port at once.
    fn shim(&mut self) -> u32 {
        let child = Command::new(SHIM)
            .args(["--home"])
            .arg(self.root.join("home"))
            .args(["--box", &self.id, "--channel-only"])
            .current_dir(&self.dir)
            .env("BOXLITE_SOCKET_DIR", &self.sock_root)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.root.join(format!("shim-{}.log", self.shims.len())))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let pid = child.id();
        self.shims.push(child);
        pid
    }

    fn client_socket(&self) -> PathBuf {
        self.sock_root.join(&self.id[..12]).join("a.sock")
    }

    async fn client(&self) -> UnixStream {
        let path = self.client_socket();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match UnixStream::connect(&path).await {
                Ok(s) => return s,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("connecting to {}: {e}", path.display()),
            }
        }
    }

    /// Play QEMU and the agent: one agent (the agent's own link code, `run_guest`) for the
    /// fixture's life, reached through the port by one shim connection at a time. As with
    /// QEMU, bytes the guest wrote that were in flight when a shim went away are lost, and
    /// the guest's writes wait while no shim is connected. Every stream the agent accepts
    /// goes to `serve`. Returns the agent's link counters.
    fn guest<F, Fut>(&mut self, serve: F) -> Arc<LinkStats>
    where
        F: Fn(Stream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = self.port.take().expect("the port is served once");
        let (qemu_end, guest_end) = tokio::io::duplex(64 * 1024);
        let stats = Arc::new(LinkStats::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let st = stats.clone();
        tokio::spawn(async move {
            let (r, w) = tokio::io::split(guest_end);
            let _ = run_guest(r, w, tx, st, |_| {}).await;
        });
        let serve = Arc::new(serve);
        tokio::spawn(async move {
            while let Some(s) = rx.recv().await {
                tokio::spawn((*serve)(s));
            }
        });
        tokio::spawn(async move {
            let (mut from_guest, mut to_guest) = tokio::io::split(qemu_end);
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (mut cr, mut cw) = conn.into_split();
                let up = async {
                    let _ = tokio::io::copy(&mut cr, &mut to_guest).await;
                };
                let down = async {
                    loop {
                        let n = match from_guest.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                // A shim connection lasts until it closes either way.
                tokio::select! {
                    () = up => {}
                    () = down => {}
                }
            }
        });
        stats
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for c in &mut self.shims {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_dir_all(&self.sock_root);
    }
}

async fn echo(mut s: Stream) {
    let mut buf = vec![0u8; 16384];
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

async fn roundtrip(c: &mut UnixStream, msg: &[u8]) -> Vec<u8> {
    c.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(20), c.read_exact(&mut got))
        .await
        .expect("the echo came back")
        .unwrap();
    got
}

#[tokio::test]
async fn each_client_gets_its_own_stream_and_never_another_clients_bytes() {
    let mut f = Fixture::new();
    f.shim();
    f.guest(echo);
    let mut a = f.client().await;
    let mut b = f.client().await;
    for i in 0..50u8 {
        let ma = vec![b'a'; 1000 + usize::from(i)];
        let mb = vec![b'b'; 3000 - usize::from(i)];
        a.write_all(&ma).await.unwrap();
        assert_eq!(roundtrip(&mut b, &mb).await, mb);
        let mut got = vec![0u8; ma.len()];
        a.read_exact(&mut got).await.unwrap();
        assert_eq!(got, ma);
    }
}

#[tokio::test]
async fn rapid_connects_and_disconnects_leave_the_shim_serving() {
    let mut f = Fixture::new();
    f.shim();
    f.guest(echo);
    for i in 0..300 {
        let mut c = f.client().await;
        if i % 2 == 0 {
            // Some say something first, then vanish.
            let _ = c.write_all(b"hello").await;
        }
        drop(c);
    }
    let mut c = f.client().await;
    assert_eq!(roundtrip(&mut c, b"still here").await, b"still here");
}

#[tokio::test]
async fn a_client_that_closes_right_after_writing_a_mebibyte_loses_nothing() {
    let mut f = Fixture::new();
    f.shim();
    let (tx, mut rx) = mpsc::unbounded_channel();
    f.guest(move |mut s: Stream| {
        let tx = tx.clone();
        async move {
            // Reply at once, so the shim's write toward the closed client fails while the
            // client's bytes are still in flight.
            let _ = s.write_all(b"ack").await;
            let mut v = Vec::new();
            let _ = s.read_to_end(&mut v).await;
            let _ = tx.send(v);
        }
    });
    let data: Vec<u8> = (0u32..1 << 20)
        .map(|i| u8::try_from(i % 253).unwrap_or(0))
        .collect();
    for _ in 0..3 {
        let mut c = f.client().await;
        c.write_all(&data).await.unwrap();
        drop(c);
        let got = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the guest saw the stream end")
            .unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "the bytes arrived changed");
    }
}

/// A positional byte pattern: byte `i` of a stream is a function of `i` and the stream's
/// tag, so any byte in the wrong place or from another stream is detectable.
fn pattern(tag: u8, from: u64, len: usize) -> Vec<u8> {
    (from..from + len as u64)
        .map(|i| tag ^ u8::try_from(i % 251).unwrap_or(0))
        .collect()
}

#[tokio::test]
async fn a_new_shim_opens_a_new_session_and_no_byte_of_the_old_one_reaches_it() {
    let mut f = Fixture::new();
    let first = f.shim();
    // Every stream the guest serves carries the positional pattern of its own tag forever;
    // the tag is the first byte the client sends.
    let serve = |mut s: Stream| async move {
        let mut tag = [0u8; 1];
        if s.read_exact(&mut tag).await.is_err() {
            return;
        }
        let mut at = 0u64;
        loop {
            let chunk = pattern(tag[0], at, 40_000);
            if s.write_all(&chunk).await.is_err() {
                return;
            }
            at += chunk.len() as u64;
        }
    };
    let stats = f.guest(serve);
    let mut old = f.client().await;
    old.write_all(&[1]).await.unwrap();
    let mut got = vec![0u8; 3 << 20];
    old.read_exact(&mut got).await.unwrap();
    assert!(got == pattern(1, 0, got.len()));

    // The shim dies mid-stream (SIGKILL), with the guest still writing the old stream.
    let pid = i32::try_from(first).unwrap();
    // SAFETY: kill on the pid of our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), old.read_to_end(&mut rest)).await;

    // A new shim takes the port: the same agent must drop the old stream and serve a new
    // session, whose streams carry only their own bytes.
    f.shim();
    let mut new = f.client().await;
    new.write_all(&[2]).await.unwrap();
    let mut got = vec![0u8; 4 << 20];
    tokio::time::timeout(Duration::from_secs(30), new.read_exact(&mut got))
        .await
        .expect("the new stream flows")
        .unwrap();
    assert!(
        got == pattern(2, 0, got.len()),
        "the new stream carries only its own bytes"
    );
    assert_eq!(LinkStats::get(&stats.sessions), 2);
}

/// The port's far end, played by hand.
struct RawGuest {
    port: UnixStream,
    dec: Decoder,
}

impl RawGuest {
    async fn frame(&mut self) -> frame::Frame {
        let mut buf = vec![0u8; 65536];
        loop {
            if let Some(f) = self.dec.next_frame() {
                return f;
            }
            let n = tokio::time::timeout(Duration::from_secs(20), self.port.read(&mut buf))
                .await
                .expect("the shim wrote")
                .unwrap();
            assert!(n > 0, "the shim closed the port");
            self.dec.push(&buf[..n]);
        }
    }

    /// The next frame of `kind`, skipping others.
    async fn frame_of(&mut self, kind: Kind) -> frame::Frame {
        loop {
            let f = self.frame().await;
            if f.kind == kind {
                return f;
            }
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_hostile_guest_cannot_make_the_shim_grow_or_stop_serving() {
    let mut f = Fixture::new();
    let pid = f.shim();
    let (conn, _) = f.port.as_ref().unwrap().accept().await.unwrap();
    let mut g = RawGuest {
        port: conn,
        dec: Decoder::new(),
    };
    let epoch = g.frame_of(Kind::Hello).await.epoch;
    let mut ack = Vec::new();
    frame::encode(Kind::HelloAck, epoch, &[], &mut ack);
    g.port.write_all(&ack).await.unwrap();
    let before = rss_kib(pid);

    // 1. 64 MiB of garbage, with magics sprinkled in so the decoder has to look at them.
    let mut junk = vec![0u8; 1 << 20];
    for (i, b) in junk.iter_mut().enumerate() {
        *b = u8::try_from((i * 31 + 7) % 256).unwrap_or(0);
    }
    for at in (0..junk.len() - 4).step_by(4099) {
        junk[at..at + 4].copy_from_slice(&frame::MAGIC);
    }
    // 2. Valid headers claiming the largest payload, never completed but by more junk.
    let mut claim = Vec::new();
    frame::encode(
        Kind::Data,
        epoch,
        &vec![0u8; frame::MAX_PAYLOAD],
        &mut claim,
    );
    claim.truncate(frame::HEADER_LEN + 10);
    // 3. Stream openings by the guest (yamux SYN window updates, even ids), 20,000 of them.
    let mut syns = Vec::new();
    for i in 0..20_000u32 {
        let mut hdr = vec![0u8, 1, 0, 1];
        hdr.extend_from_slice(&(2 * (i + 1)).to_be_bytes());
        hdr.extend_from_slice(&0u32.to_be_bytes());
        frame::encode(Kind::Data, epoch, &hdr, &mut syns);
    }
    g.port.write_all(&syns).await.unwrap();
    for _ in 0..64 {
        g.port.write_all(&junk).await.unwrap();
        g.port.write_all(&claim).await.unwrap();
    }
    // The shim answers the loss with a new epoch; it is still there and still small.
    let hello = g.frame_of(Kind::Hello).await;
    assert_ne!(hello.epoch, epoch);
    let after = rss_kib(pid);
    assert!(
        after < before + 32 * 1024,
        "the shim grew from {before} KiB to {after} KiB"
    );

    // It keeps serving: a client's stream opens once the new epoch is answered (after a
    // preamble, as the agent sends: the last claim above is still waiting for its payload).
    let mut ack = vec![0u8; frame::MAX_FRAME];
    frame::encode(Kind::HelloAck, hello.epoch, &[], &mut ack);
    g.port.write_all(&ack).await.unwrap();
    let mut c = f.client().await;
    c.write_all(b"x").await.unwrap();
    let data = g.frame_of(Kind::Data).await;
    assert_eq!(data.epoch, hello.epoch);
}

#[tokio::test]
async fn a_deleted_socket_directory_is_bound_again() {
    let mut f = Fixture::new();
    f.shim();
    f.guest(echo);
    let mut c = f.client().await;
    assert_eq!(roundtrip(&mut c, b"before").await, b"before");
    // A temp cleaner removes the whole socket root.
    std::fs::remove_dir_all(&f.sock_root).unwrap();
    assert!(!Path::new(&f.client_socket()).exists());
    // The shim binds it again (within its one-second check).
    let mut c2 = f.client().await;
    assert_eq!(roundtrip(&mut c2, b"after").await, b"after");
    // The connection made before the removal is unaffected.
    assert_eq!(roundtrip(&mut c, b"old one").await, b"old one");
}
