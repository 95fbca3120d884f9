//! The byte pipe one session's multiplexer runs over.
//!
//! Inbound, the link reader hands it the payloads of the session's `Data` frames through a
//! bounded queue. Outbound, writes land in an [`Outbox`] that the link writer drains into
//! `Data` frames. The outbox accepts writes up to [`OUTBOX_CAP`] bytes, far more than the
//! peer's total flow-control window, so an honest peer never makes the multiplexer wait on a
//! write: it then always keeps reading, and two sides with full pipes cannot deadlock. A
//! peer that ignores its windows meets the cap and only stalls itself.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::{Notify, mpsc};

use super::frame::MAX_PAYLOAD;

/// Most bytes waiting in one session's outbox before writers wait.
pub const OUTBOX_CAP: usize = super::MAX_SESSION_WINDOW + (16 << 20);

#[derive(Debug, Default)]
struct OutboxInner {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    closed: bool,
    waker: Option<Waker>,
}

/// Outbound bytes of one session, waiting for the link writer.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<OutboxInner>,
    kick: Arc<Notify>,
}

impl Outbox {
    pub fn new(kick: Arc<Notify>) -> Arc<Self> {
        Arc::new(Outbox {
            inner: Mutex::new(OutboxInner::default()),
            kick,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to one frame's worth of bytes, or `None` when empty.
    pub fn take(&self) -> Option<Vec<u8>> {
        let mut g = self.lock();
        let chunk = g.chunks.pop_front()?;
        g.bytes -= chunk.len();
        if let Some(w) = g.waker.take() {
            w.wake();
        }
        Some(chunk)
    }

    /// The session ended: writes fail from now on and queued bytes are dropped.
    pub fn close(&self) {
        let mut g = self.lock();
        g.closed = true;
        g.chunks.clear();
        g.bytes = 0;
        if let Some(w) = g.waker.take() {
            w.wake();
        }
    }

    pub fn queued(&self) -> usize {
        self.lock().bytes
    }

    fn poll_push(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut g = self.lock();
        if g.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if g.bytes >= OUTBOX_CAP {
            g.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len();
        let mut rest = buf;
        if let Some(back) = g.chunks.back_mut() {
            let room = MAX_PAYLOAD.saturating_sub(back.len()).min(rest.len());
            back.extend_from_slice(&rest[..room]);
            rest = &rest[room..];
        }
        for c in rest.chunks(MAX_PAYLOAD) {
            g.chunks.push_back(c.to_vec());
        }
        g.bytes += n;
        drop(g);
        self.kick.notify_one();
        Poll::Ready(Ok(n))
    }
}

/// One session's end of the pipe, as the multiplexer sees it (futures-io traits, which
/// `yamux` takes).
#[derive(Debug)]
pub struct SessionIo {
    inbound: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    at: usize,
    outbox: Arc<Outbox>,
}

impl SessionIo {
    pub fn new(inbound: mpsc::Receiver<Vec<u8>>, outbox: Arc<Outbox>) -> Self {
        SessionIo {
            inbound,
            cur: Vec::new(),
            at: 0,
            outbox,
        }
    }
}

impl futures::io::AsyncRead for SessionIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        while this.at >= this.cur.len() {
            match this.inbound.poll_recv(cx) {
                Poll::Ready(Some(c)) => {
                    this.cur = c;
                    this.at = 0;
                }
                // The session ended: end of stream for the multiplexer.
                Poll::Ready(None) => return Poll::Ready(Ok(0)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = buf.len().min(this.cur.len() - this.at);
        buf[..n].copy_from_slice(&this.cur[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(n))
    }
}

impl futures::io::AsyncWrite for SessionIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.outbox.poll_push(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_are_coalesced_into_frame_sized_chunks_and_reads_end_with_the_session() {
        let kick = Arc::new(Notify::new());
        let outbox = Outbox::new(kick);
        let (tx, rx) = mpsc::channel(4);
        let mut io = SessionIo::new(rx, outbox.clone());
        io.write_all(&[1u8; 10]).await.unwrap();
        io.write_all(&vec![2u8; MAX_PAYLOAD]).await.unwrap();
        assert_eq!(outbox.queued(), MAX_PAYLOAD + 10);
        let first = outbox.take().unwrap();
        assert_eq!(first.len(), MAX_PAYLOAD);
        assert_eq!(outbox.take().unwrap().len(), 10);
        assert!(outbox.take().is_none());

        tx.send(b"abc".to_vec()).await.unwrap();
        drop(tx);
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"abc");

        outbox.close();
        assert!(io.write_all(b"x").await.is_err());
    }
}
