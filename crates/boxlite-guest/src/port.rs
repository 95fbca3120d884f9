//! The agent's end of its virtio-serial port ([`boxlite_protocol::PORT_NAME`]), as tokio
//! byte streams for the agent channel.
//!
//! A `virtio_console` port is not a pipe, and these are the semantics the reader and
//! writer here are built around (drivers/char/virtio_console.c):
//!
//! - While no host process holds the host end, `read()` returns 0 at once and `poll()`
//!   reports `POLLIN | POLLHUP`. That is not end of file: the host end can be connected
//!   again at any time, and the agent outlives every host session.
//! - `write()` blocks (`EAGAIN` when non-blocking) until a host process connects, and
//!   takes at most 32 KiB at a time.
//! - A host connect or disconnect, arriving data and finished writes all wake the port's
//!   wait queue.
//!
//! tokio's reactor cannot watch the port directly: it treats `POLLHUP` as a final state
//! (it is never cleared again), so after the first host disconnect the port would look
//! ready forever and a waiting reader or writer would spin. So each direction has an
//! epoll instance of its own with the port registered edge-triggered, and tokio watches
//! that instance instead: it becomes readable after each wake-up of the port's wait
//! queue and never hangs up. A direction that finds nothing to do (a read of 0 bytes, or
//! `EAGAIN`) consumes the queued wake-ups and, when there are none, waits for the next.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Where the kernel lists virtio-serial ports, each with a `name` attribute.
pub const SYS_PORTS: &str = "/sys/class/virtio-ports";
/// Where devtmpfs puts the ports' device nodes.
pub const DEV_DIR: &str = "/dev";
/// How long to wait for the port to appear after the boot modules are loaded.
pub const FIND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("no virtio-serial port named {name:?} appeared under {dir} within {waited:?}")]
    NotFound {
        name: String,
        dir: PathBuf,
        waited: Duration,
    },
    #[error("opening virtio-serial port {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("watching virtio-serial port {path} for readiness")]
    Watch {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("waiting for virtio-serial port {name:?}")]
    Wait {
        name: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Wait for the agent's port and open it: a reader and a writer over one descriptor.
pub async fn open() -> Result<(PortReader, PortWriter), PortError> {
    let name = boxlite_protocol::PORT_NAME;
    let (fd, path) = tokio::task::spawn_blocking(move || {
        wait_and_open(Path::new(SYS_PORTS), Path::new(DEV_DIR), name, FIND_TIMEOUT)
    })
    .await
    .map_err(|source| PortError::Wait {
        name: name.to_string(),
        source,
    })??;
    split(fd).map_err(|source| PortError::Watch { path, source })
}

/// The device name (`vport0p1`) of the port under `sys_dir` whose `name` is `want`.
fn find(sys_dir: &Path, want: &str) -> Option<OsString> {
    fs::read_dir(sys_dir)
        .ok()?
        .flatten()
        .map(|entry| entry.file_name())
        .filter(|dev| dev.as_bytes().starts_with(b"vport"))
        .find(|dev| {
            fs::read_to_string(sys_dir.join(dev).join("name")).is_ok_and(|n| n.trim() == want)
        })
}

/// Poll until the port named `name` is listed and its device node opens, for at most
/// `limit`. Blocking: the kernel announces the port's name a moment after the driver
/// binds, with no event to wait on.
fn wait_and_open(
    sys_dir: &Path,
    dev_dir: &Path,
    name: &str,
    limit: Duration,
) -> Result<(OwnedFd, PathBuf), PortError> {
    let start = Instant::now();
    loop {
        if let Some(dev) = find(sys_dir, name) {
            let path = dev_dir.join(dev);
            match open_port(&path) {
                Ok(fd) => return Ok((fd, path)),
                // The device node is not in devtmpfs yet.
                Err(e) if e.kind() == io::ErrorKind::NotFound && start.elapsed() < limit => {}
                Err(source) => return Err(PortError::Open { path, source }),
            }
        } else if start.elapsed() >= limit {
            return Err(PortError::NotFound {
                name: name.to_string(),
                dir: sys_dir.to_path_buf(),
                waited: limit,
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Open read-write, non-blocking and close-on-exec (std always sets `O_CLOEXEC`).
fn open_port(path: &Path) -> io::Result<OwnedFd> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map(OwnedFd::from)
}

/// Reader and writer over one non-blocking descriptor; the descriptor closes when both
/// are dropped. Must be called within a tokio runtime.
pub fn split(port: OwnedFd) -> io::Result<(PortReader, PortWriter)> {
    let port = Arc::new(port);
    Ok((
        PortReader(Half::new(port.clone(), libc::EPOLLIN)?),
        PortWriter(Half::new(port, libc::EPOLLOUT)?),
    ))
}

/// The reading half of the port. It never reports end of file: while the host end is
/// not connected, a read waits for it.
#[derive(Debug)]
pub struct PortReader(Half);

/// The writing half of the port. While the host end is not connected, a write waits
/// for it.
#[derive(Debug)]
pub struct PortWriter(Half);

/// One direction of the port: the port, and an epoll instance that becomes readable
/// whenever the port's wait queue is woken.
#[derive(Debug)]
struct Half {
    port: Arc<OwnedFd>,
    wake: AsyncFd<OwnedFd>,
}

impl Half {
    /// `events` is the direction (`EPOLLIN` or `EPOLLOUT`); it is registered
    /// edge-triggered, so the instance queues one event per wake-up of the port.
    fn new(port: Arc<OwnedFd>, events: libc::c_int) -> io::Result<Half> {
        // SAFETY: epoll_create1 takes only flags; the result is checked.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: epoll_create1 returned a new descriptor that nothing else owns.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut ev = libc::epoll_event {
            events: (events | libc::EPOLLET).cast_unsigned(),
            u64: 0,
        };
        // SAFETY: both descriptors are open for the duration of the call and `ev` is a
        // valid epoll_event that outlives it.
        let r = unsafe {
            libc::epoll_ctl(
                ep.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                port.as_raw_fd(),
                &mut ev,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd is moved in, so it stays open and keeps its number for as
        // long as the AsyncFd owns it.
        let wake = unsafe { AsyncFd::register_with_interest(ep, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Half { port, wake })
    }

    /// Consume the wake-ups queued on the epoll instance; true if there were any.
    fn drain(&self) -> io::Result<bool> {
        // The instance watches one descriptor, so it has at most one event.
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `event` has room for the one entry asked for and outlives the call; a
        // zero timeout never blocks.
        let n = unsafe { libc::epoll_wait(self.wake.as_raw_fd(), &mut event, 1, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            // Interrupted before it looked: try the port again, as after a wake-up.
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(true)
            } else {
                Err(e)
            };
        }
        Ok(n > 0)
    }

    /// Run `op` on the port until it moves bytes. `Ok(0)` and `EAGAIN` from `op` both mean
    /// "nothing for this direction now" (for a read, a host end that is not connected), so
    /// it waits for the port's next wake-up rather than returning them.
    fn poll_op(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(RawFd) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            match op(self.port.as_raw_fd()) {
                Ok(0) => {}
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
            let mut guard = ready!(self.wake.poll_read_ready(cx))?;
            // A wake-up queued since `op` ran: try again. None: forget the readiness
            // (unless another wake-up arrived meanwhile, which tokio keeps), and try once
            // more before waiting, so a wake-up between `op` and here is not lost.
            if !self.drain()? {
                guard.clear_ready();
            }
        }
    }
}

fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

impl AsyncRead for PortReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let unfilled = buf.initialize_unfilled();
        let n = ready!(self.0.poll_op(cx, |fd| read(fd, unfilled)))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PortWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.0.poll_op(cx, |fd| write(fd, data))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn scratch_dir(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("boxlite-guest-port-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn fake_port(sys: &Path, dev: &str, name: &str) {
        fs::create_dir_all(sys.join(dev)).unwrap();
        fs::write(sys.join(dev).join("name"), format!("{name}\n")).unwrap();
    }

    fn nonblocking_pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    #[test]
    fn the_port_is_found_by_its_name_among_other_ports() {
        let dir = scratch_dir("find");
        fake_port(&dir, "vport0p1", "org.qemu.guest_agent.0");
        fake_port(&dir, "vport0p2", boxlite_protocol::PORT_NAME);
        fs::create_dir_all(dir.join("hvc0")).unwrap();

        let found = find(&dir, boxlite_protocol::PORT_NAME);

        assert_eq!(found, Some(OsString::from("vport0p2")));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_port_is_reported_after_the_wait() {
        let dir = scratch_dir("missing");
        fake_port(&dir, "vport0p1", "something.else");

        let err = wait_and_open(
            &dir,
            &dir,
            boxlite_protocol::PORT_NAME,
            Duration::from_millis(30),
        )
        .unwrap_err();

        assert!(matches!(err, PortError::NotFound { .. }), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_named_port_s_device_node_is_opened() {
        let dir = scratch_dir("open");
        let sys = dir.join("sys");
        let dev = dir.join("dev");
        fake_port(&sys, "vport1p1", boxlite_protocol::PORT_NAME);
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("vport1p1"), b"").unwrap();

        let (_, path) = wait_and_open(
            &sys,
            &dev,
            boxlite_protocol::PORT_NAME,
            Duration::from_millis(30),
        )
        .unwrap();

        assert_eq!(path, dev.join("vport1p1"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn bytes_cross_in_both_directions_with_backpressure() {
        let (ours, theirs) = nonblocking_pair();
        let (mut r, mut w) = split(ours.into()).unwrap();
        let (theirs_r, theirs_w) = split(theirs.into()).unwrap();
        let data: Vec<u8> = (0..=250u8).cycle().take(4 << 20).collect();

        // More than the socket buffers hold, so the writer has to wait for the reader.
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w
        });
        let mut echo_r = theirs_r;
        let mut got = vec![0u8; data.len()];
        echo_r.read_exact(&mut got).await.unwrap();
        let _w = writer.await.unwrap();
        let mut back = theirs_w;
        back.write_all(b"pong").await.unwrap();
        let mut pong = [0u8; 4];
        r.read_exact(&mut pong).await.unwrap();

        assert!(got == data);
        assert_eq!(&pong, b"pong");
    }

    #[tokio::test]
    async fn a_read_of_zero_bytes_waits_for_more_instead_of_ending() {
        // A datagram socket reads 0 for an empty datagram, as the port does while its
        // host end is not connected, without the stream ending.
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let (mut r, _w) = split(a.into()).unwrap();
        b.send(b"").unwrap();

        let reading = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let n = r.read(&mut buf).await.unwrap();
            buf[..n].to_vec()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.send(b"hello").unwrap();

        assert_eq!(reading.await.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn a_hung_up_peer_parks_the_reader_instead_of_spinning() {
        // Reads 0 and polls POLLIN | POLLHUP for good, like a port with no host end.
        let (ours, theirs) = nonblocking_pair();
        drop(theirs);
        let (r, _w) = split(ours.into()).unwrap();
        let attempts = AtomicUsize::new(0);
        let mut buf = [0u8; 16];

        let waited = tokio::time::timeout(
            Duration::from_millis(300),
            std::future::poll_fn(|cx| {
                r.0.poll_op(cx, |fd| {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    read(fd, &mut buf)
                })
            }),
        )
        .await;

        assert!(waited.is_err(), "the read returned: {waited:?}");
        // A few to consume the wake-ups queued at setup, one when the timeout fires; a
        // spinning reader would make thousands.
        assert!(attempts.load(Ordering::Relaxed) <= 5, "{attempts:?} reads");
    }
}
