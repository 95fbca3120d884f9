//! The agent channel: many byte streams over one virtio-serial port, safe across
//! reconnects of its host-side owner.
//!
//! One process on the host (the per-box shim) owns the host end of the port; the agent owns
//! the guest end. A bare virtio-serial port is unsafe across reconnects (unread bytes of one
//! host session reach the next, a blocked write completes into the next, a fast reconnect is
//! invisible to the guest), so the port carries [`frame`]s, and everything is scoped to a
//! **session epoch**:
//!
//! 1. The host owner connects, picks a random non-zero epoch, and sends a preamble of zero
//!    bytes (one maximal frame long, so a frame torn by the previous owner is completed with
//!    garbage and discarded, never waited on) followed by `Hello(epoch)`.
//! 2. The agent drops every stream of any other epoch, starts a fresh multiplexer session
//!    for this one, and answers with a preamble and `HelloAck(epoch)`.
//! 3. Both sides then exchange `Data(epoch)` frames that carry one `yamux` session: a client
//!    stream per host connection, each with its own flow-control window.
//!
//! Frames of any other epoch are dropped on arrival, so no byte of an old session can be read
//! as part of a new one. A frame that fails its checks is skipped (the decoder resynchronizes
//! on the next magic); if that happens inside an established session, bytes of the
//! multiplexer were lost, so the host opens a new epoch (the agent asks for one with
//! `Reset(epoch)`). Every buffer is bounded; see [`frame`] and [`pipe`].

pub mod frame;
pub mod pipe;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use frame::{Decoder, Frame, Kind, MAX_FRAME};
use pipe::{Outbox, SessionIo};

/// A multiplexed stream (tokio I/O traits).
pub type Stream = Compat<yamux::Stream>;

/// Streams one session may hold open at once. The multiplexer ends the whole session when
/// a peer opens more, so the host keeps well below it.
pub const MAX_STREAMS: usize = 256;
/// Upper bound of the receive windows of all streams of a session together: each stream's
/// 256 KiB base window plus room for the busiest ones to grow.
pub const MAX_SESSION_WINDOW: usize = 96 << 20;
/// Inbound payloads queued for the multiplexer before the reader waits.
const INBOUND_QUEUE: usize = 64;
/// How often the host repeats `Hello` until the agent answers.
const HELLO_REPEAT: Duration = Duration::from_secs(2);

fn mux_config() -> yamux::Config {
    let mut c = yamux::Config::default();
    c.set_max_num_streams(MAX_STREAMS);
    c.set_max_connection_receive_window(Some(MAX_SESSION_WINDOW));
    c
}

/// What a link has seen, for `info` and tests.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Frames dropped because they carried another epoch.
    pub stale_frames: AtomicU64,
    /// Candidate frames that failed a check.
    pub resyncs: AtomicU64,
    /// Bytes skipped while resynchronizing.
    pub skipped_bytes: AtomicU64,
    /// Sessions started.
    pub sessions: AtomicU64,
    /// Streams the peer tried to open where it may not (the guest, toward the host).
    pub refused_streams: AtomicU64,
}

impl LinkStats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// The link writer: the only writer of the port. Control bytes go first, then the current
/// session's data; a session's data is only written while it is current.
#[derive(Debug)]
struct Writer {
    control: Mutex<VecDeque<Vec<u8>>>,
    current: Mutex<Option<(u64, Arc<Outbox>)>>,
    kick: Arc<Notify>,
}

impl Writer {
    fn new() -> Arc<Self> {
        Arc::new(Writer {
            control: Mutex::new(VecDeque::new()),
            current: Mutex::new(None),
            kick: Arc::new(Notify::new()),
        })
    }

    fn send_control(&self, kind: Kind, epoch: u64, preamble: bool) {
        let mut bytes = Vec::new();
        if preamble {
            bytes.resize(MAX_FRAME, 0);
        }
        frame::encode(kind, epoch, &[], &mut bytes);
        self.control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(bytes);
        self.kick.notify_one();
    }

    fn set_current(&self, s: Option<(u64, Arc<Outbox>)>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = s;
        self.kick.notify_one();
    }

    /// Write until the port fails.
    async fn run<W: AsyncWrite + Unpin>(&self, mut port: W, stats: &LinkStats) -> io::Result<()> {
        let mut buf = Vec::with_capacity(4 * MAX_FRAME);
        loop {
            buf.clear();
            {
                let mut c = self.control.lock().unwrap_or_else(|p| p.into_inner());
                while let Some(b) = c.pop_front() {
                    buf.extend_from_slice(&b);
                }
            }
            let current = self
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let mut frames = 0u64;
            if let Some((epoch, outbox)) = current {
                // Several frames per write: each write is a guest exit under emulation.
                while buf.len() < 3 * MAX_FRAME {
                    let Some(chunk) = outbox.take() else { break };
                    frame::encode(Kind::Data, epoch, &chunk, &mut buf);
                    frames += 1;
                }
            }
            if buf.is_empty() {
                self.kick.notified().await;
                continue;
            }
            port.write_all(&buf).await?;
            port.flush().await?;
            LinkStats::add(&stats.frames_out, frames);
            LinkStats::add(&stats.bytes_out, buf.len() as u64);
        }
    }
}

/// One multiplexer session.
struct Session {
    epoch: u64,
    inbound: mpsc::Sender<Vec<u8>>,
    outbox: Arc<Outbox>,
    driver: tokio::task::JoinHandle<()>,
}

type OpenRequest = oneshot::Sender<io::Result<Stream>>;
/// Where the current session takes requests for new streams, with its epoch.
type Opener = Arc<Mutex<Option<(u64, mpsc::Sender<OpenRequest>)>>>;

impl Session {
    /// Start a session: `opens` (host) receives requests for outbound streams, `accepted`
    /// (guest) gets the streams the peer opens. `ended` is told when the driver stops.
    fn start(
        epoch: u64,
        writer: &Writer,
        mode: yamux::Mode,
        opens: Option<mpsc::Receiver<OpenRequest>>,
        accepted: Option<mpsc::UnboundedSender<Stream>>,
        ended: mpsc::UnboundedSender<u64>,
        stats: Arc<LinkStats>,
    ) -> Session {
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        let outbox = Outbox::new(writer.kick.clone());
        let io = SessionIo::new(rx, outbox.clone());
        LinkStats::add(&stats.sessions, 1);
        let driver = tokio::spawn(async move {
            drive(io, mode, opens, accepted, &stats).await;
            let _ = ended.send(epoch);
        });
        writer.set_current(Some((epoch, outbox.clone())));
        Session {
            epoch,
            inbound: tx,
            outbox,
            driver,
        }
    }

    /// Hand the multiplexer a payload. False when the session is gone.
    async fn deliver(&self, payload: Vec<u8>) -> bool {
        self.inbound.send(payload).await.is_ok()
    }

    /// End the session: its multiplexer sees end of stream, its writes fail, and every
    /// stream of it is closed.
    fn end(self, writer: &Writer) {
        writer.set_current(None);
        self.outbox.close();
        drop(self.inbound);
        // The driver notices the end of its input and closes its streams; it never waits on
        // the port, but is aborted if it somehow takes long.
        let d = self.driver;
        tokio::spawn(async move {
            let abort = d.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), d)
                .await
                .is_err()
            {
                abort.abort();
            }
        });
    }
}

/// Run one multiplexer session until its input ends or it fails.
async fn drive(
    io: SessionIo,
    mode: yamux::Mode,
    mut opens: Option<mpsc::Receiver<OpenRequest>>,
    accepted: Option<mpsc::UnboundedSender<Stream>>,
    stats: &LinkStats,
) {
    let mut conn = yamux::Connection::new(io, mux_config(), mode);
    let mut waiting: VecDeque<OpenRequest> = VecDeque::new();
    poll_fn(|cx| {
        loop {
            if let Some(rx) = opens.as_mut() {
                while let Poll::Ready(Some(req)) = rx.poll_recv(cx) {
                    waiting.push_back(req);
                }
            }
            while !waiting.is_empty() {
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(Ok(s)) => {
                        if let Some(req) = waiting.pop_front() {
                            let _ = req.send(Ok(s.compat()));
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        for req in waiting.drain(..) {
                            let _ = req.send(Err(io::Error::other(e.to_string())));
                        }
                        return Poll::Ready(());
                    }
                    Poll::Pending => break,
                }
            }
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(s))) => match &accepted {
                    Some(tx) => {
                        // Unbounded, but never holds more than the session's stream limit.
                        if tx.send(s.compat()).is_err() {
                            LinkStats::add(&stats.refused_streams, 1);
                        }
                    }
                    None => LinkStats::add(&stats.refused_streams, 1),
                },
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    for req in waiting {
        let _ = req.send(Err(io::ErrorKind::ConnectionAborted.into()));
    }
}

/// What the port delivered.
enum Event {
    Frame(Frame),
    /// Bytes were skipped: a torn or corrupted frame.
    Resync,
}

/// Reads frames off the port.
struct FrameReader<R> {
    port: R,
    dec: Decoder,
    buf: Vec<u8>,
    stash: Option<Frame>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(port: R) -> Self {
        FrameReader {
            port,
            dec: Decoder::new(),
            buf: vec![0u8; MAX_FRAME],
            stash: None,
        }
    }

    /// The next event, or `None` at the port's end of file.
    async fn next(&mut self, stats: &LinkStats) -> io::Result<Option<Event>> {
        loop {
            if let Some(f) = self.stash.take() {
                LinkStats::add(&stats.frames_in, 1);
                return Ok(Some(Event::Frame(f)));
            }
            let before = self.dec.stats;
            let next = self.dec.next_frame();
            let resyncs = self.dec.stats.resyncs - before.resyncs;
            LinkStats::add(&stats.resyncs, resyncs);
            LinkStats::add(
                &stats.skipped_bytes,
                self.dec.stats.skipped_bytes - before.skipped_bytes,
            );
            if resyncs > 0 {
                // Report the loss first, then the frame found after it.
                self.stash = next;
                return Ok(Some(Event::Resync));
            }
            if let Some(f) = next {
                LinkStats::add(&stats.frames_in, 1);
                return Ok(Some(Event::Frame(f)));
            }
            let n = self.port.read(&mut self.buf).await?;
            if n == 0 {
                return Ok(None);
            }
            LinkStats::add(&stats.bytes_in, n as u64);
            self.dec.push(&self.buf[..n]);
        }
    }
}

fn random_epoch(not: u64) -> u64 {
    loop {
        let e: u64 = rand::random();
        if e != 0 && e != not {
            return e;
        }
    }
}

/// The host link's state, as its clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// `Hello(epoch)` sent, no answer yet (the guest may still be booting).
    Connecting { epoch: u64 },
    /// The agent serves this epoch.
    Up { epoch: u64 },
    /// The port is gone (the VM exited).
    Closed,
}

/// The host end of the link: opens streams to the agent. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HostLink {
    state: watch::Receiver<LinkState>,
    opens: Opener,
    reset: Arc<Notify>,
    pub stats: Arc<LinkStats>,
}

/// Runs the host end of the link over a port; see [`host_link`].
#[derive(Debug)]
pub struct HostDriver {
    state: watch::Sender<LinkState>,
    opens: Opener,
    reset: Arc<Notify>,
    stats: Arc<LinkStats>,
}

/// A host link and the driver that runs it.
pub fn host_link() -> (HostLink, HostDriver) {
    let (tx, rx) = watch::channel(LinkState::Connecting { epoch: 0 });
    let opens = Arc::new(Mutex::new(None));
    let reset = Arc::new(Notify::new());
    let stats = Arc::new(LinkStats::default());
    (
        HostLink {
            state: rx,
            opens: opens.clone(),
            reset: reset.clone(),
            stats: stats.clone(),
        },
        HostDriver {
            state: tx,
            opens,
            reset,
            stats,
        },
    )
}

fn closed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the link to the agent is closed (the VM exited)",
    )
}

impl HostLink {
    /// Open a stream to the agent, waiting until the link is up. Returns the stream and
    /// the epoch it belongs to; it ends when that epoch does.
    pub async fn open(&self) -> io::Result<(u64, Stream)> {
        let mut st = self.state.clone();
        loop {
            let state = *st.borrow_and_update();
            match state {
                LinkState::Closed => return Err(closed_error()),
                LinkState::Up { epoch } => {
                    let tx = self
                        .opens
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_ref()
                        .filter(|(e, _)| *e == epoch)
                        .map(|(_, t)| t.clone());
                    if let Some(tx) = tx {
                        let (rtx, rrx) = oneshot::channel();
                        if tx.send(rtx).await.is_ok()
                            && let Ok(Ok(s)) = rrx.await
                        {
                            return Ok((epoch, s));
                        }
                    }
                    // The session ended meanwhile; the next one is on its way.
                }
                LinkState::Connecting { .. } => {}
            }
            st.changed().await.map_err(|_| closed_error())?;
        }
    }

    /// The link's state, to watch epochs change.
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// End the current session and open a new epoch.
    pub fn reset(&self) {
        self.reset.notify_one();
    }
}

impl HostDriver {
    /// Own the port until it reaches end of file (the VM is gone) or fails.
    pub async fn run<R, W>(self, read: R, write: W) -> io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let writer = Writer::new();
        let result = tokio::select! {
            r = writer.run(write, &self.stats) => r,
            r = self.read_loop(read, &writer) => r,
        };
        *self.opens.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.state.send_replace(LinkState::Closed);
        result
    }

    async fn read_loop<R: AsyncRead + Unpin>(&self, read: R, writer: &Writer) -> io::Result<()> {
        let mut reader = FrameReader::new(read);
        let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
        let mut session: Option<Session> = None;
        let mut epoch = 0;
        let restart = |session: &mut Option<Session>, epoch: &mut u64| {
            if let Some(s) = session.take() {
                s.end(writer);
            }
            *self.opens.lock().unwrap_or_else(|p| p.into_inner()) = None;
            *epoch = random_epoch(*epoch);
            self.state
                .send_replace(LinkState::Connecting { epoch: *epoch });
            writer.send_control(Kind::Hello, *epoch, true);
        };
        restart(&mut session, &mut epoch);
        let mut hello = tokio::time::interval(HELLO_REPEAT);
        hello.tick().await;
        loop {
            tokio::select! {
                ev = reader.next(&self.stats) => match ev? {
                    None => {
                        if let Some(s) = session.take() {
                            s.end(writer);
                        }
                        return Ok(());
                    }
                    Some(Event::Resync) => {
                        // Inside a session, bytes of the multiplexer were lost.
                        if session.is_some() {
                            restart(&mut session, &mut epoch);
                        }
                    }
                    Some(Event::Frame(f)) if f.epoch != epoch => {
                        LinkStats::add(&self.stats.stale_frames, 1);
                    }
                    Some(Event::Frame(f)) => match f.kind {
                        Kind::HelloAck if session.is_none() => {
                            let (otx, orx) = mpsc::channel(64);
                            session = Some(Session::start(
                                epoch,
                                writer,
                                yamux::Mode::Client,
                                Some(orx),
                                None,
                                ended_tx.clone(),
                                self.stats.clone(),
                            ));
                            *self.opens.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some((epoch, otx));
                            self.state.send_replace(LinkState::Up { epoch });
                        }
                        Kind::Data => {
                            let delivered = match &session {
                                Some(s) => s.deliver(f.payload).await,
                                None => true,
                            };
                            if !delivered {
                                restart(&mut session, &mut epoch);
                            }
                        }
                        Kind::Reset => restart(&mut session, &mut epoch),
                        Kind::HelloAck | Kind::Hello => {}
                    },
                },
                Some(e) = ended_rx.recv() => {
                    if session.as_ref().is_some_and(|s| s.epoch == e) {
                        restart(&mut session, &mut epoch);
                    }
                }
                _ = hello.tick(), if session.is_none() => {
                    writer.send_control(Kind::Hello, epoch, false);
                }
                _ = self.reset.notified() => restart(&mut session, &mut epoch),
            }
        }
    }
}

/// Serve the guest end of the link: every stream the host opens is sent to `accepted`
/// (at most [`MAX_STREAMS`] are open at once, so that queue stays bounded);
/// `on_session` is called with each new epoch. Returns when the port fails.
pub async fn run_guest<R, W>(
    read: R,
    write: W,
    accepted: mpsc::UnboundedSender<Stream>,
    stats: Arc<LinkStats>,
    mut on_session: impl FnMut(u64),
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let writer = Writer::new();
    let read_loop = async {
        let mut reader = FrameReader::new(read);
        let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
        let mut session: Option<Session> = None;
        let mut reset_sent = false;
        loop {
            tokio::select! {
                ev = reader.next(&stats) => match ev? {
                    None => return Ok::<(), io::Error>(()),
                    Some(Event::Resync) => {
                        if let Some(s) = &session
                            && !reset_sent
                        {
                            writer.send_control(Kind::Reset, s.epoch, false);
                            reset_sent = true;
                        }
                    }
                    Some(Event::Frame(f)) => {
                        let current = session.as_ref().map(|s| s.epoch);
                        match f.kind {
                            Kind::Hello if current != Some(f.epoch) && f.epoch != 0 => {
                                if let Some(s) = session.take() {
                                    s.end(&writer);
                                }
                                session = Some(Session::start(
                                    f.epoch,
                                    &writer,
                                    yamux::Mode::Server,
                                    None,
                                    Some(accepted.clone()),
                                    ended_tx.clone(),
                                    stats.clone(),
                                ));
                                reset_sent = false;
                                writer.send_control(Kind::HelloAck, f.epoch, true);
                                on_session(f.epoch);
                            }
                            Kind::Hello if current == Some(f.epoch) => {
                                writer.send_control(Kind::HelloAck, f.epoch, false);
                            }
                            Kind::Data if current == Some(f.epoch) => {
                                let ok = match &session {
                                    Some(s) => s.deliver(f.payload).await,
                                    None => true,
                                };
                                if !ok && !reset_sent {
                                    writer.send_control(Kind::Reset, f.epoch, false);
                                    reset_sent = true;
                                }
                            }
                            _ => LinkStats::add(&stats.stale_frames, 1),
                        }
                    }
                },
                Some(e) = ended_rx.recv() => {
                    // The session failed (a protocol error): ask for a new one.
                    if session.as_ref().is_some_and(|s| s.epoch == e) && !reset_sent {
                        writer.send_control(Kind::Reset, e, false);
                        reset_sent = true;
                    }
                }
            }
        }
    };
    tokio::select! {
        r = writer.run(write, &stats) => r,
        r = read_loop => r,
    }
}

#[cfg(test)]
mod tests;
