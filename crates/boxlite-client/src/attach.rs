//! An execution's streams over the attach WebSocket, for the SDKs: stdout and stderr as
//! chunk streams, stdin as a writer, and the exit code once the server reports it.
//!
//! The protocol: binary frames `[1|2] + bytes` carry stdout and stderr, a text
//! `{"type":"exit","exit_code":N}` ends the execution; stdin goes up as binary frames,
//! then `{"type":"stdin_eof"}`.
//!
//! One task reads the socket. What it reads waits in memory until the caller takes it,
//! so `wait()` never depends on the output being read, up to [`MAX_UNREAD`] bytes per
//! stream; past that the task stops reading and the server's socket fills (backpressure
//! reaches the command), until the caller reads.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::{Client, RemoteError, segment};

/// Unread output held per stream before the socket is no longer read.
pub const MAX_UNREAD: usize = 64 << 20;

/// How an attached execution ended, as the stream saw it: the exit code the server
/// reported, or why the stream ended without one (shared by every waiter).
pub type Exit = Result<i64, Arc<RemoteError>>;

/// One output stream of an attached execution.
#[derive(Debug)]
pub struct Output {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    budget: Arc<Semaphore>,
}

impl Output {
    /// The next chunk, exactly as written; None at the end.
    pub async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        let chunk = self.rx.recv().await?;
        self.budget.add_permits(permits(chunk.len()));
        Some(chunk)
    }
}

/// The permits a chunk takes: one per KiB (a semaphore counts in u32-sized units).
fn permits(len: usize) -> usize {
    len.div_ceil(1024)
}

/// An attached execution's stdin.
#[derive(Debug, Clone)]
pub struct Input {
    tx: mpsc::Sender<Message>,
    url: String,
    /// Set before the exit is published: once `wait()` has returned, writes fail.
    ended: Arc<std::sync::atomic::AtomicBool>,
}

impl Input {
    fn gone(&self) -> RemoteError {
        RemoteError::Ended {
            what: "writing to the command's stdin".into(),
            url: self.url.clone(),
        }
    }

    fn check(&self) -> Result<(), RemoteError> {
        if self.ended.load(std::sync::atomic::Ordering::Acquire) {
            return Err(self.gone());
        }
        Ok(())
    }

    /// Write bytes to the command's stdin.
    pub async fn write_all(&self, data: &[u8]) -> Result<(), RemoteError> {
        self.check()?;
        // Frames stay well under the server's limit.
        for chunk in data.chunks(1 << 20) {
            self.tx
                .send(Message::Binary(chunk.to_vec().into()))
                .await
                .map_err(|_| self.gone())?;
        }
        Ok(())
    }

    /// Close the command's stdin: it reads end of file.
    pub async fn close(&self) -> Result<(), RemoteError> {
        self.check()?;
        self.tx
            .send(Message::Text(r#"{"type":"stdin_eof"}"#.into()))
            .await
            .map_err(|_| self.gone())
    }
}

/// An execution attached over the WebSocket.
#[derive(Debug)]
pub struct Attached {
    pub stdout: Output,
    pub stderr: Output,
    pub stdin: Input,
    /// None until the stream ends.
    pub exit: watch::Receiver<Option<Exit>>,
}

#[derive(Deserialize)]
struct ServerText {
    #[serde(rename = "type")]
    kind: String,
    exit_code: Option<i64>,
}

/// Attach to an execution: its output from where it is (all of it, for a new one).
pub async fn attach(c: &Client, box_id: &str, exec_id: &str) -> Result<Attached, RemoteError> {
    let b = segment("box", box_id)?;
    let e = segment("execution", exec_id)?;
    let ws = c
        .websocket(
            &format!("attaching to execution {e}"),
            &["boxes", b, "executions", e, "attach"],
        )
        .await?;
    let url = c.ep.shown();
    let (mut sink, mut source) = ws.split();
    let (in_tx, mut in_rx) = mpsc::channel::<Message>(8);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut done_rx = done_rx;
        loop {
            tokio::select! {
                m = in_rx.recv() => match m {
                    Some(m) => {
                        if sink.send(m).await.is_err() {
                            break;
                        }
                    }
                    // Stdin done (or dropped) is not the end: closing our half would
                    // end the output too. The socket closes when the reader is done.
                    None => {
                        let _ = (&mut done_rx).await;
                        break;
                    }
                },
                // The execution has ended: later writes fail instead of vanishing.
                _ = &mut done_rx => break,
            }
        }
        in_rx.close();
        drop(sink);
    });
    let budget = || Arc::new(Semaphore::new(permits(MAX_UNREAD)));
    let (out_budget, err_budget) = (budget(), budget());
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (err_tx, err_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (exit_tx, exit_rx) = watch::channel::<Option<Exit>>(None);
    let what = format!("streaming execution {e}");
    let shown = url.clone();
    let (ob, eb) = (out_budget.clone(), err_budget.clone());
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ended_here = ended.clone();
    tokio::spawn(async move {
        let mut code: Option<i64> = None;
        let ended: Result<(), RemoteError> = loop {
            match source.next().await {
                None | Some(Ok(Message::Close(_))) => break Ok(()),
                Some(Err(err)) => {
                    break Err(RemoteError::WebSocket {
                        what: what.clone(),
                        url: shown.clone(),
                        source: Box::new(err),
                    });
                }
                Some(Ok(Message::Binary(data))) => {
                    let (tx, budget) = match data.first() {
                        Some(1) => (&out_tx, &ob),
                        Some(2) => (&err_tx, &eb),
                        _ => continue,
                    };
                    let chunk = data[1..].to_vec();
                    if chunk.is_empty() || tx.is_closed() {
                        continue;
                    }
                    // Waits while the caller has MAX_UNREAD bytes of this stream unread.
                    let n = u32::try_from(permits(chunk.len())).unwrap_or(u32::MAX);
                    match budget.acquire_many(n).await {
                        Ok(p) => p.forget(),
                        Err(_) => continue,
                    }
                    let _ = tx.send(chunk);
                }
                Some(Ok(Message::Text(t))) => {
                    if let Ok(m) = serde_json::from_str::<ServerText>(&t)
                        && m.kind == "exit"
                    {
                        // The server sends every byte of output before the exit: the
                        // streams are complete, and nothing waits for the Close.
                        code = Some(m.exit_code.unwrap_or(-1));
                        break Ok(());
                    }
                }
                Some(Ok(_)) => {}
            }
        };
        drop(out_tx);
        drop(err_tx);
        let exit = match (code, ended) {
            (Some(c), _) => Ok(c),
            (None, Err(e)) => Err(Arc::new(e)),
            (None, Ok(())) => Err(Arc::new(RemoteError::Malformed {
                what,
                reason: "the connection closed before the execution reported its exit".into(),
            })),
        };
        ended_here.store(true, std::sync::atomic::Ordering::Release);
        let _ = exit_tx.send(Some(exit));
        let _ = done_tx.send(());
    });
    Ok(Attached {
        stdout: Output {
            rx: out_rx,
            budget: out_budget,
        },
        stderr: Output {
            rx: err_rx,
            budget: err_budget,
        },
        stdin: Input {
            tx: in_tx,
            url,
            ended,
        },
        exit: exit_rx,
    })
}

/// Wait for the exit an [`Attached::exit`] receiver reports.
pub async fn wait(exit: &mut watch::Receiver<Option<Exit>>) -> Exit {
    match exit.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or(Ok(-1)),
        // The reader task is gone without a word: it panicked.
        Err(_) => Err(Arc::new(RemoteError::Malformed {
            what: "waiting for an execution".into(),
            reason: "the stream's reader ended without an exit".into(),
        })),
    }
}
