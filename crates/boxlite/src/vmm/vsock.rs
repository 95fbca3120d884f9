//! The host side of the agent's virtio-vsock transport.
//!
//! Two device backends, chosen per host:
//! - kernel `vhost-vsock` where `/dev/vhost-vsock` opens: the host reaches the guest with
//!   `AF_VSOCK` sockets addressed by the guest's CID;
//! - otherwise `vhost-user-vsock`, served by one `vhost-device-vsock` process per box.
//!   Its host side is a unix socket speaking the hybrid-vsock handshake: the client sends
//!   `CONNECT <port>\n` and gets `OK <hostport>\n`. Connections the guest opens to host
//!   port P arrive on the unix socket `<uds>_P`.
//!
//! Both give one byte stream per connection, so everything above this module is the same.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{UnixListener, UnixStream};

pub use crate::model::VsockMode;

impl VsockMode {
    /// Kernel vhost-vsock when `/dev/vhost-vsock` is usable, else vhost-user.
    /// `BOXLITE_VSOCK=kernel|vhost-user` overrides.
    pub fn detect() -> VsockMode {
        match std::env::var("BOXLITE_VSOCK").ok().as_deref() {
            Some("kernel") => return VsockMode::Kernel,
            Some("vhost-user") => return VsockMode::VhostUser,
            _ => {}
        }
        let usable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/vhost-vsock")
            .is_ok();
        if usable {
            VsockMode::Kernel
        } else {
            VsockMode::VhostUser
        }
    }
}

/// Where the host reaches a box's agent.
#[derive(Debug, Clone)]
pub enum AgentAddr {
    /// Hybrid vsock through vhost-device-vsock's unix socket.
    Hybrid { uds: PathBuf },
    /// Kernel vsock to this guest CID.
    Kernel { cid: u32 },
}

impl AgentAddr {
    /// Where the agent of box `id` is reached, by the status of its last start.
    pub fn of_box(status: &crate::model::BoxStatus, id: &str) -> AgentAddr {
        match (status.vsock_mode, status.cid) {
            (Some(VsockMode::Kernel), Some(cid)) => AgentAddr::Kernel { cid },
            _ => AgentAddr::Hybrid {
                uds: crate::layout::SocketPaths::for_box(id).agent(),
            },
        }
    }
}

impl std::fmt::Display for AgentAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentAddr::Hybrid { uds } => write!(f, "{}", uds.display()),
            AgentAddr::Kernel { cid } => write!(f, "vsock cid {cid}"),
        }
    }
}

/// One connection to the guest.
#[derive(Debug)]
pub enum VsockConn {
    Unix(UnixStream),
    Vsock(tokio_vsock::VsockStream),
}

impl AsyncRead for VsockConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            VsockConn::Unix(s) => Pin::new(s).poll_read(cx, buf),
            VsockConn::Vsock(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for VsockConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            VsockConn::Unix(s) => Pin::new(s).poll_write(cx, buf),
            VsockConn::Vsock(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            VsockConn::Unix(s) => Pin::new(s).poll_flush(cx),
            VsockConn::Vsock(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            VsockConn::Unix(s) => Pin::new(s).poll_shutdown(cx),
            VsockConn::Vsock(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Longest handshake reply accepted from vhost-device-vsock.
const MAX_HANDSHAKE_LINE: usize = 64;

/// Parse the `OK <port>` reply of the hybrid handshake.
fn parse_ok_line(line: &[u8]) -> io::Result<u32> {
    let text = std::str::from_utf8(line).unwrap_or("");
    text.strip_prefix("OK ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "vsock handshake refused: {:?}",
                    String::from_utf8_lossy(line)
                ),
            )
        })
}

/// Open a connection to `port` in the guest.
pub async fn connect(addr: &AgentAddr, port: u32) -> io::Result<VsockConn> {
    match addr {
        AgentAddr::Hybrid { uds } => {
            let mut s = UnixStream::connect(uds).await?;
            s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
            // Read the reply a byte at a time: anything after the newline belongs to the
            // protocol that runs on this connection.
            let mut line = Vec::with_capacity(16);
            loop {
                let b = s.read_u8().await?;
                if b == b'\n' {
                    break;
                }
                line.push(b);
                if line.len() > MAX_HANDSHAKE_LINE {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "vsock handshake reply too long",
                    ));
                }
            }
            parse_ok_line(&line)?;
            Ok(VsockConn::Unix(s))
        }
        AgentAddr::Kernel { cid } => {
            let s =
                tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, port)).await?;
            Ok(VsockConn::Vsock(s))
        }
    }
}

/// The host end of the agent's readiness connection, bound before the VM starts.
#[derive(Debug)]
pub enum ReadyListener {
    Unix(UnixListener, PathBuf),
    Vsock(tokio_vsock::VsockListener, u32),
}

impl ReadyListener {
    pub fn bind(addr: &AgentAddr, uds_for_port: &Path, port: u32) -> io::Result<Self> {
        match addr {
            AgentAddr::Hybrid { .. } => {
                let _ = std::fs::remove_file(uds_for_port);
                Ok(ReadyListener::Unix(
                    UnixListener::bind(uds_for_port)?,
                    uds_for_port.to_path_buf(),
                ))
            }
            AgentAddr::Kernel { cid } => Ok(ReadyListener::Vsock(
                tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(
                    tokio_vsock::VMADDR_CID_ANY,
                    port,
                ))?,
                *cid,
            )),
        }
    }

    /// Wait for the agent to connect and announce itself.
    pub async fn accept_ready(&self) -> io::Result<()> {
        let line = boxlite_protocol::READY_LINE;
        loop {
            let mut conn = match self {
                ReadyListener::Unix(l, _) => VsockConn::Unix(l.accept().await?.0),
                ReadyListener::Vsock(l, cid) => {
                    let (s, peer) = l.accept().await?;
                    if peer.cid() != *cid {
                        continue;
                    }
                    VsockConn::Vsock(s)
                }
            };
            let mut buf = vec![0u8; line.len()];
            let read =
                tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut buf)).await;
            if matches!(read, Ok(Ok(_))) && buf == line {
                return Ok(());
            }
            tracing::debug!("ignoring a readiness connection with an unexpected greeting");
        }
    }
}

impl Drop for ReadyListener {
    fn drop(&mut self) {
        if let ReadyListener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A fresh random guest CID for kernel vhost-vsock (0-2 are reserved).
pub fn random_cid() -> u32 {
    rand::random_range(3..u32::MAX - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_reply_is_parsed_or_refused() {
        assert_eq!(parse_ok_line(b"OK 1073741824").unwrap(), 1073741824);
        assert!(parse_ok_line(b"").is_err());
        assert!(parse_ok_line(b"ERR").is_err());
    }

    #[tokio::test]
    async fn hybrid_connect_consumes_only_the_handshake_line() {
        let dir = std::env::temp_dir().join(format!("bx-vs-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("a.sock");
        let l = UnixListener::bind(&uds).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = [0u8; 13];
            s.read_exact(&mut req).await.unwrap();
            s.write_all(b"OK 99\npayload").await.unwrap();
            req
        });

        let mut c = connect(&AgentAddr::Hybrid { uds }, 1024).await.unwrap();
        let mut rest = [0u8; 7];
        c.read_exact(&mut rest).await.unwrap();

        assert_eq!(&server.await.unwrap(), b"CONNECT 1024\n");
        assert_eq!(&rest, b"payload");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
