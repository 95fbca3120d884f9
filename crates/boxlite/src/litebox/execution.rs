//! `Execution` is a running process with its streams, shaped like BoxLite's.
//!
//! Every method on [`Execution`] takes `&self` and is its own call on the shared agent
//! connection, so a `wait()` in flight never blocks `kill()` or `signal()`. An
//! `Execution` is cheap to clone; clones share its streams (each can be taken once) and
//! its exit status, which is kept on the host once known: waiting again after the agent
//! has forgotten the execution still answers.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use boxlite_protocol::v1;
use tokio::sync::{OnceCell, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::ExecError;
use crate::portal::{AgentClient, ExitStatus, Pipe, PortalError};

/// A process running in a box. Cheap to clone; see the module documentation.
#[derive(Debug, Clone)]
pub struct Execution {
    id: String,
    client: AgentClient,
    streams: Arc<Mutex<Streams>>,
    status: Arc<OnceCell<ExitStatus>>,
    /// The box's console log, to explain an agent that went away.
    console_log: Option<PathBuf>,
    /// The box, to resume it if it paused itself before a call of this handle.
    owner: Option<Resumer>,
}

/// Resumes a box that paused itself (auto-pause) before a call of an execution's handle:
/// the call is then made again, and its connection, which names the shim's socket,
/// reaches the new shim by itself. A call in progress keeps a box awake, so only a call
/// made after the pause meets one.
#[derive(Clone)]
pub(crate) struct Resumer {
    lite: super::LiteBox,
    /// The box's auto-pause count when this handle last saw it running.
    seen: Arc<AtomicU64>,
}

impl Resumer {
    pub(crate) fn new(lite: super::LiteBox, seen: u64) -> Self {
        Resumer {
            lite,
            seen: Arc::new(AtomicU64::new(seen)),
        }
    }
}

impl std::fmt::Debug for Resumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Resumer").field(&self.lite.id()).finish()
    }
}

/// Whether `owner`'s box paused itself since the handle last saw it, and runs again now
/// (resumed here, or by another caller meanwhile).
async fn resumed(owner: Option<&Resumer>) -> bool {
    let Some(r) = owner else {
        return false;
    };
    match r
        .lite
        .auto_paused_since(r.seen.load(Ordering::SeqCst))
        .await
    {
        Some(now) => {
            r.seen.store(now, Ordering::SeqCst);
            r.lite.running_client().await.is_ok()
        }
        None => false,
    }
}

/// Make a call with `client`, and once more if the connection was lost because the box
/// paused itself (resuming it first).
async fn call<T, F, Fut>(
    client: &AgentClient,
    owner: Option<&Resumer>,
    f: F,
) -> Result<T, PortalError>
where
    F: Fn(AgentClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, PortalError>>,
{
    match f(client.clone()).await {
        Err(e) if agent_lost(&e) && resumed(owner).await => f(client.clone()).await,
        r => r,
    }
}

#[derive(Debug, Default)]
struct Streams {
    stdin: Option<ExecStdin>,
    stdout: Option<ExecOutput>,
    stderr: Option<ExecOutput>,
}

impl Execution {
    pub(crate) fn new(
        client: AgentClient,
        id: String,
        stdin: bool,
        console_log: Option<PathBuf>,
        owner: Option<Resumer>,
    ) -> Self {
        let output = |pipe| ExecOutput::new(client.clone(), id.clone(), pipe, owner.clone());
        let streams = Streams {
            stdin: stdin.then(|| ExecStdin::new(client.clone(), id.clone())),
            stdout: Some(output(Pipe::Stdout)),
            stderr: Some(output(Pipe::Stderr)),
        };
        Execution {
            streams: Arc::new(Mutex::new(streams)),
            status: Arc::new(OnceCell::new()),
            client,
            id,
            console_log,
            owner,
        }
    }

    /// A handle to an execution someone else started, for its remaining output and its
    /// exit status. It has no stdin: closing stdin is the starter's business.
    pub(crate) fn attached(
        client: AgentClient,
        id: String,
        console_log: Option<PathBuf>,
        owner: Option<Resumer>,
    ) -> Self {
        Execution::new(client, id, false, console_log, owner)
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, Streams> {
        // Taking an Option out cannot be interrupted halfway: a poisoned lock is fine.
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The execution id; any client of the same box can use it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether stdin has not been taken yet (by this handle or a clone).
    pub fn has_stdin(&self) -> bool {
        self.streams().stdin.is_some()
    }

    /// Take the stdin pipe; `None` if there is none or it was taken.
    pub fn take_stdin(&mut self) -> Option<ExecStdin> {
        self.streams().stdin.take()
    }

    /// Take stdout; `None` once taken.
    pub fn take_stdout(&mut self) -> Option<ExecOutput> {
        self.streams().stdout.take()
    }

    /// Take stderr; `None` once taken.
    pub fn take_stderr(&mut self) -> Option<ExecOutput> {
        self.streams().stderr.take()
    }

    /// [`Execution::take_stdin`] under BoxLite's name.
    pub fn stdin(&mut self) -> Option<ExecStdin> {
        self.take_stdin()
    }

    /// [`Execution::take_stdout`] under BoxLite's name.
    pub fn stdout(&mut self) -> Option<ExecOutput> {
        self.take_stdout()
    }

    /// [`Execution::take_stderr`] under BoxLite's name.
    pub fn stderr(&mut self) -> Option<ExecOutput> {
        self.take_stderr()
    }

    /// Wait for the process to exit. The status is kept once known, so later calls (and
    /// clones) get it without asking the agent. If the box dies first (its kernel
    /// panics, its VM is killed, it powers off), the error says so, with what the
    /// console showed.
    pub async fn wait(&self) -> Result<ExitStatus, ExecError> {
        self.status
            .get_or_try_init(|| self.wait_agent())
            .await
            .copied()
    }

    async fn wait_agent(&self) -> Result<ExitStatus, ExecError> {
        let id = &self.id;
        match call(&self.client, self.owner.as_ref(), |c| async move {
            c.wait(id).await
        })
        .await
        {
            Ok(s) => Ok(s),
            Err(e) if agent_lost(&e) => {
                // Give the console a moment to receive the kernel's last words.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                let hint = self
                    .console_log
                    .as_deref()
                    .map(super::console_hint_at)
                    .unwrap_or_default();
                Err(ExecError::BoxStopped {
                    id: self.id.clone(),
                    detail: crate::util::error_chain(&e),
                    hint,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Change the window size of the execution's terminal; the process gets SIGWINCH.
    pub async fn resize_tty(&self, rows: u16, cols: u16) -> Result<(), ExecError> {
        let id = &self.id;
        call(&self.client, self.owner.as_ref(), |c| async move {
            c.resize_tty(id, rows.max(1), cols.max(1)).await
        })
        .await
        .map_err(|e| match e.code() {
            Some(tonic::Code::FailedPrecondition) => ExecError::NoTty {
                id: self.id.clone(),
            },
            _ => self.call_failed(e),
        })
    }

    /// End the process and its process group for certain (SIGKILL).
    pub async fn kill(&self) -> Result<(), ExecError> {
        self.send_signal(libc::SIGKILL, true).await
    }

    /// Send a signal to the process.
    pub async fn signal(&self, signal: i32) -> Result<(), ExecError> {
        self.send_signal(signal, false).await
    }

    /// Deliver `signal` to the process's whole process group (it and the children it
    /// started), as a terminal's Ctrl-C does.
    pub async fn signal_group(&self, signal: i32) -> Result<(), ExecError> {
        self.send_signal(signal, true).await
    }

    async fn send_signal(&self, signal: i32, group: bool) -> Result<(), ExecError> {
        let id = &self.id;
        call(&self.client, self.owner.as_ref(), |c| async move {
            c.signal(id, signal, group).await
        })
        .await
        .map_err(|e| self.call_failed(e))
    }

    /// A call that failed because the box is gone (stopped, removed, its shim away) says
    /// so, as `wait` does; anything else is the agent's answer.
    fn call_failed(&self, e: PortalError) -> ExecError {
        if e.code() == Some(tonic::Code::NotFound) {
            // The agent no longer has it: the box was restarted, or restored to a moment
            // before the execution began.
            return ExecError::NoSuchExecution(self.id.clone());
        }
        if agent_lost(&e) {
            ExecError::BoxStopped {
                id: self.id.clone(),
                detail: crate::util::error_chain(&e),
                hint: String::new(),
            }
        } else {
            ExecError::Agent(e)
        }
    }
}

type Opening =
    Pin<Box<dyn Future<Output = Result<tonic::Streaming<v1::OutputChunk>, PortalError>> + Send>>;

/// One output pipe of an execution, as raw byte chunks exactly as the process wrote them,
/// read with [`ExecOutput::next_chunk`] or as a [`Stream`]. The pipe is opened on the
/// first read; until then (and when this handle is dropped) the agent keeps it for
/// whoever reads next, and the process blocks once the bounded buffer fills, as with an
/// unread pipe.
pub struct ExecOutput {
    client: AgentClient,
    id: String,
    pipe: Pipe,
    state: OutState,
    owner: Option<Resumer>,
}

enum OutState {
    Idle,
    Opening(Opening),
    Open(Box<tonic::Streaming<v1::OutputChunk>>),
    Done,
}

impl std::fmt::Debug for ExecOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecOutput")
            .field("id", &self.id)
            .field("pipe", &self.pipe)
            .finish()
    }
}

impl ExecOutput {
    fn new(client: AgentClient, id: String, pipe: Pipe, owner: Option<Resumer>) -> Self {
        ExecOutput {
            client,
            id,
            pipe,
            state: OutState::Idle,
            owner,
        }
    }

    fn stream_error(&self, status: &tonic::Status) -> ExecError {
        ExecError::Stream {
            id: self.id.clone(),
            what: format!("reading {:?}", self.pipe).to_lowercase(),
            source: PortalError::Rpc {
                op: "ReadOutput",
                code: status.code(),
                message: status.message().to_string(),
            },
        }
    }

    /// The next chunk, or `None` at end of file.
    pub async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, ExecError>> {
        self.next().await
    }

    /// Copy every chunk to `w` as it arrives, flushing after each so interactive output
    /// is not held back. Returns the number of bytes copied.
    pub async fn copy_to<W>(&mut self, w: &mut W) -> Result<u64, ExecError>
    where
        W: tokio::io::AsyncWrite + Unpin + ?Sized,
    {
        use tokio::io::AsyncWriteExt;
        let mut total = 0u64;
        while let Some(chunk) = self.next_chunk().await {
            let chunk = chunk?;
            let io = |e: std::io::Error| ExecError::Output {
                id: self.id.clone(),
                source: e,
            };
            w.write_all(&chunk).await.map_err(io)?;
            w.flush().await.map_err(io)?;
            total += chunk.len() as u64;
        }
        Ok(total)
    }

    /// Read to end of file, for small outputs and tests.
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>, ExecError> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next_chunk().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(all)
    }
}

impl Stream for ExecOutput {
    type Item = Result<Vec<u8>, ExecError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                OutState::Done => return Poll::Ready(None),
                OutState::Idle => {
                    let (client, id, pipe) = (this.client.clone(), this.id.clone(), this.pipe);
                    let owner = this.owner.clone();
                    this.state = OutState::Opening(Box::pin(async move {
                        let id = &id;
                        call(&client, owner.as_ref(), |c| async move {
                            c.read_output(id, pipe).await
                        })
                        .await
                    }));
                }
                OutState::Opening(fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(s)) => this.state = OutState::Open(Box::new(s)),
                    Poll::Ready(Err(e)) => {
                        this.state = OutState::Done;
                        return Poll::Ready(Some(Err(ExecError::Agent(e))));
                    }
                },
                OutState::Open(s) => match Pin::new(s.as_mut()).poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(chunk))) => return Poll::Ready(Some(Ok(chunk.data))),
                    Poll::Ready(None) => {
                        this.state = OutState::Done;
                        return Poll::Ready(None);
                    }
                    Poll::Ready(Some(Err(status))) => {
                        let e = this.stream_error(&status);
                        this.state = OutState::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
            }
        }
    }
}

/// Largest stdin chunk put in one message.
const STDIN_CHUNK: usize = 256 * 1024;

/// The stdin pipe of an execution. [`ExecStdin::close`] (or dropping it) delivers end of
/// file; writing after that is [`ExecError::StdinClosed`].
#[derive(Debug)]
pub struct ExecStdin {
    id: String,
    tx: Option<mpsc::Sender<v1::StdinChunk>>,
    call: Option<JoinHandle<Result<u64, PortalError>>>,
}

impl ExecStdin {
    fn new(client: AgentClient, id: String) -> Self {
        let (tx, rx) = mpsc::channel(4);
        let call = tokio::spawn(async move { client.write_stdin(ReceiverStream::new(rx)).await });
        ExecStdin {
            id,
            tx: Some(tx),
            call: Some(call),
        }
    }

    fn chunk(&self, data: Vec<u8>, eof: bool) -> v1::StdinChunk {
        v1::StdinChunk {
            exec_id: self.id.clone(),
            data,
            eof,
        }
    }

    fn closed(&self) -> ExecError {
        ExecError::StdinClosed {
            id: self.id.clone(),
        }
    }

    /// Whether stdin has been closed, by [`ExecStdin::close`] or because the process or
    /// its box went away.
    pub fn is_closed(&self) -> bool {
        self.tx.as_ref().is_none_or(|tx| tx.is_closed())
    }

    async fn failed(&mut self) -> ExecError {
        self.tx = None;
        match self.call.take() {
            Some(call) => match call.await {
                Ok(Err(e)) => ExecError::Stream {
                    id: self.id.clone(),
                    what: "writing stdin".into(),
                    source: e,
                },
                _ => self.closed(),
            },
            None => self.closed(),
        }
    }

    /// Write all of `data` to the process's stdin.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), ExecError> {
        for piece in data.chunks(STDIN_CHUNK) {
            let msg = self.chunk(piece.to_vec(), false);
            let Some(tx) = self.tx.as_ref() else {
                return Err(self.closed());
            };
            if tx.send(msg).await.is_err() {
                return Err(self.failed().await);
            }
        }
        Ok(())
    }

    /// [`ExecStdin::write_all`] under BoxLite's name.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), ExecError> {
        self.write_all(data).await
    }

    /// Close stdin: the process reads end of file. Returns once the agent has closed it,
    /// with the number of bytes it took. Closing again is an error.
    pub async fn close(&mut self) -> Result<u64, ExecError> {
        let eof = self.chunk(Vec::new(), true);
        let Some(tx) = self.tx.take() else {
            return Err(self.closed());
        };
        let _ = tx.send(eof).await;
        drop(tx);
        let Some(call) = self.call.take() else {
            return Err(self.closed());
        };
        match call.await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(ExecError::Stream {
                id: self.id.clone(),
                what: "closing stdin".into(),
                source: e,
            }),
            Err(_) => Err(self.closed()),
        }
    }
}

impl Drop for ExecStdin {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let eof = self.chunk(Vec::new(), true);
            if tx.try_send(eof.clone()).is_err()
                && let Ok(h) = tokio::runtime::Handle::try_current()
            {
                h.spawn(async move {
                    let _ = tx.send(eof).await;
                });
            }
        }
    }
}

/// Whether a failed call means the connection to the agent broke, rather than the
/// agent answering with an error.
pub(super) fn agent_lost(e: &PortalError) -> bool {
    match e {
        PortalError::Rpc { code, message, .. } => {
            matches!(code, tonic::Code::Unavailable | tonic::Code::Cancelled)
                || (*code == tonic::Code::Unknown
                    && (message.contains("transport")
                        || message.contains("h2")
                        // The shim's socket is gone (ENOENT) or nobody listens on it,
                        // or the connection broke under the call (ECONNRESET, EPIPE).
                        || message.contains("(os error 2)")
                        || message.contains("(os error 111)")
                        || message.contains("(os error 104)")
                        || message.contains("(os error 32)")
                        || message.contains("connection closed")))
        }
        PortalError::Connect { .. } => true,
        PortalError::Timeout { .. } => false,
    }
}
