//! The shim's side of the agent channel: it owns the host end of the box's virtio-serial
//! port (the only process that ever connects to it) and serves host clients on a unix
//! socket, one multiplexed stream per client connection. The framing and the multiplexer
//! are in `boxlite_protocol::channel`.
//!
//! - **One owner.** A lock file in the box directory makes a second shim of the same box
//!   exit at once, so QEMU's socket never has two candidates.
//! - **Sessions.** When this shim connects, the link opens a new epoch: the agent drops every
//!   stream of the previous shim's, and nothing of those reaches a client of this one. A
//!   client whose epoch ends (a corrupted frame, a reset) sees its connection closed.
//! - **Self-healing socket.** Temp cleaners may delete the socket directory under `/tmp`.
//!   Every second the shim checks that its socket path still names its listener, and binds a
//!   new one (recreating the directory, owner-checked) when it does not. Clients that find no
//!   socket wait for it (`litebox::connect_agent`).
//! - **The gate.** While the shim auto-pauses its box it closes the [`Gate`]: bytes a
//!   client sends are held, never forwarded, and a client that sends any abandons the
//!   pause before the state is saved. Clients that outlive a pause see their connection
//!   close with nothing of theirs delivered. The shim's own connections (health checks,
//!   the pause itself) pass.
//! - **Bounded.** At most [`MAX_CLIENTS`] client connections are bridged at once, and a
//!   bounded number wait for a slot; more are closed at once. Each stream's buffering is
//!   bounded by the multiplexer's windows.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxlite_protocol::channel::{HostLink, LinkState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, Semaphore};

use crate::layout::SocketPaths;

/// Client connections served at once: well under the multiplexer's stream limit
/// (`boxlite_protocol::channel::MAX_STREAMS`), which a session must never reach (the
/// multiplexer ends the whole session there), with room for streams the agent has not
/// finished closing.
pub const MAX_CLIENTS: usize = boxlite_protocol::channel::MAX_STREAMS / 2;
/// Clients waiting for a free slot; beyond these, new ones are closed at once.
const MAX_WAITING: usize = 4 * MAX_CLIENTS;
/// How long a client waits for a free slot.
const SLOT_WAIT: Duration = Duration::from_secs(30);
/// How often the shim checks that its socket still exists.
const SOCKET_CHECK: Duration = Duration::from_secs(1);
/// How long the shim tries to reach QEMU's end of the port (QEMU creates it early in its
/// start-up).
pub const PORT_CONNECT: Duration = Duration::from_secs(30);
/// The lock file that keeps one shim per box, in the box directory.
pub const SHIM_LOCK: &str = "shim.lock";

/// Whether client bytes flow to the agent, and when they last did.
#[derive(Debug, Default)]
pub struct Gate {
    closed: AtomicBool,
    /// A client sent something while the gate was closed.
    held: AtomicBool,
    opened: Notify,
    /// When a client's bytes were last forwarded.
    last: Mutex<Option<Instant>>,
}

impl Gate {
    /// Wait until the gate is open; a client waiting here marks the gate as having held
    /// one.
    async fn pass(&self) {
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if !self.closed.load(Ordering::SeqCst) {
                return;
            }
            self.held.store(true, Ordering::SeqCst);
            opened.await;
        }
    }

    fn forwarded(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Hold every client's bytes from now on.
    pub fn close(&self) {
        self.held.store(false, Ordering::SeqCst);
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Let the held bytes go.
    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    /// Whether a client sent something since [`Gate::close`].
    pub fn held_any(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// How long since a client's bytes were last forwarded (`None`: never).
    pub fn quiet_for(&self) -> Option<Duration> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }
}

/// Whether the peer of `client` is this very process (its own health checks and
/// pauses), which the gate never holds.
fn is_own(client: &UnixStream) -> bool {
    client
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .is_some_and(|pid| u32::try_from(pid).is_ok_and(|p| p == std::process::id()))
}

/// Connect to QEMU's end of the agent port, retrying while QEMU has not created it yet.
pub async fn connect_port(path: &Path, within: Duration) -> io::Result<UnixStream> {
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = Duration::from_millis(1);
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("connecting to the agent port {}: {e}", path.display()),
                ));
            }
        }
    }
}

/// The client listener and the identity of the socket file it is bound to.
struct Bound {
    listener: UnixListener,
    path: PathBuf,
    ino: (u64, u64),
}

fn bind(sockets: &SocketPaths, home: &Path) -> io::Result<Bound> {
    sockets.ensure(home).map_err(io::Error::other)?;
    let path = sockets.agent();
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    let m = std::fs::symlink_metadata(&path)?;
    Ok(Bound {
        listener,
        ino: (m.dev(), m.ino()),
        path,
    })
}

impl Bound {
    /// Whether the socket path still names this listener.
    fn intact(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.ino)
    }
}

/// Serve host clients until an unrecoverable error. Each accepted connection is bridged to
/// one stream of the link, opened once the agent serves.
pub async fn serve_clients(
    link: HostLink,
    sockets: SocketPaths,
    home: PathBuf,
    gate: Arc<Gate>,
) -> io::Result<()> {
    let mut bound = bind(&sockets, &home)?;
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let waiting = Arc::new(Semaphore::new(MAX_WAITING));
    let mut check = tokio::time::interval(SOCKET_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = bound.listener.accept() => match r {
                Ok((client, _)) => match waiting.clone().try_acquire_owned() {
                    Ok(queued) => {
                        let (link, slots) = (link.clone(), slots.clone());
                        let gate = (!is_own(&client)).then(|| gate.clone());
                        tokio::spawn(async move {
                            let slot = tokio::time::timeout(SLOT_WAIT, slots.acquire_owned()).await;
                            drop(queued);
                            if let Ok(Ok(slot)) = slot {
                                bridge(link, client, gate).await;
                                drop(slot);
                            }
                        });
                    }
                    Err(_) => tracing::debug!("{MAX_WAITING} clients waiting already; closing a new one"),
                },
                Err(e) => {
                    tracing::debug!(error = %e, "accepting a client");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = check.tick() => {
                if !bound.intact() {
                    match bind(&sockets, &home) {
                        Ok(b) => {
                            tracing::info!(socket = %b.path.display(), "the socket was removed; bound it again");
                            bound = b;
                        }
                        Err(e) => tracing::warn!(error = %e, "binding the socket again"),
                    }
                }
            }
        }
    }
}

/// Carry one client connection over one stream until both directions end, or the
/// stream's epoch does. The directions are independent: a client that closes right after
/// writing still has every byte it wrote delivered (the agent's replies to it are then
/// read and dropped), so no tail is lost.
///
/// The stream is opened when the client first sends something: the multiplexer announces a
/// stream to the agent only with its first frame, so a stream opened for a client that
/// closes without a word would never be known to the agent, and never be closed by it.
///
/// Every chunk from the client passes `gate` (none: the shim's own connection) first.
async fn bridge(link: HostLink, mut client: UnixStream, gate: Option<Arc<Gate>>) {
    let pass = |gate: &Option<Arc<Gate>>| {
        let gate = gate.clone();
        async move {
            if let Some(g) = gate {
                g.pass().await;
                g.forwarded();
            }
        }
    };
    let mut first = vec![0u8; COPY_BUF];
    let n = match client.read(&mut first).await {
        Ok(0) | Err(_) => return,
        Ok(n) => n,
    };
    first.truncate(n);
    pass(&gate).await;
    let (epoch, mut stream) = match link.open().await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "opening a stream for a client");
            return;
        }
    };
    let mut state = link.state();
    let ended = async {
        loop {
            if !matches!(*state.borrow_and_update(), LinkState::Up { epoch: e } if e == epoch) {
                return;
            }
            if state.changed().await.is_err() {
                return;
            }
        }
    };
    if stream.write_all(&first).await.is_err() {
        return;
    }
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = tokio::io::split(stream);
    let up = async {
        let mut buf = first;
        buf.resize(COPY_BUF, 0);
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(error = %e, "client to agent");
                    break;
                }
            };
            pass(&gate).await;
            if let Err(e) = sw.write_all(&buf[..n]).await {
                tracing::debug!(error = %e, "client to agent");
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async {
        let mut reader = tokio::io::BufReader::with_capacity(COPY_BUF, &mut sr);
        if let Err(e) = tokio::io::copy_buf(&mut reader, &mut cw).await {
            tracing::debug!(error = %e, "agent to client; dropping the rest");
            let _ = tokio::io::copy_buf(&mut reader, &mut tokio::io::sink()).await;
        }
        let _ = cw.shutdown().await;
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        () = ended => tracing::debug!("a client's session ended"),
    }
}

/// Buffer size of each direction of a bridge.
const COPY_BUF: usize = 64 * 1024;
