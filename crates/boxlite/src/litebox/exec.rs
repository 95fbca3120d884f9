//! Commands and executions: `BoxCommand` is a builder like `std::process::Command`;
//! `Execution` is a running process with its streams.
//!
//! Every method on [`Execution`] takes `&self` and is its own call on the shared agent
//! connection, so a `wait()` in flight never blocks `kill()` or `signal()`.

use boxlite_protocol::v1;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::portal::{AgentClient, ExecSpec, ExitStatus, Pipe, PortalError};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    CommandNotFound(String),
    #[error(
        "no execution with id {0:?} in this box (finished executions are kept for a while, the oldest forgotten first)"
    )]
    NoSuchExecution(String),
    #[error("{0}")]
    NotExecutable(String),
    #[error("{0}")]
    InvalidCommand(String),
    #[error("execution {id}: {what}")]
    Stream {
        id: String,
        what: String,
        #[source]
        source: PortalError,
    },
    #[error(
        "execution {id}: the box stopped while the command was running ({detail}){hint}; `boxlite logs` shows its console"
    )]
    BoxStopped {
        id: String,
        detail: String,
        hint: String,
    },
    #[error("execution {id} has no terminal; start it with a TTY to resize one")]
    NoTty { id: String },
    #[error("execution {id}: stdin is closed")]
    StdinClosed { id: String },
    #[error("execution {id}: writing its output")]
    Output {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Agent(#[from] PortalError),
}

impl ExecError {
    /// Map the agent's answer to `Exec` onto the caller's vocabulary.
    pub(crate) fn from_exec_rpc(e: PortalError) -> Self {
        match (e.code(), &e) {
            (Some(tonic::Code::NotFound), PortalError::Rpc { message, .. }) => {
                ExecError::CommandNotFound(message.clone())
            }
            (Some(tonic::Code::PermissionDenied), PortalError::Rpc { message, .. }) => {
                ExecError::NotExecutable(message.clone())
            }
            (Some(tonic::Code::InvalidArgument), PortalError::Rpc { message, .. }) => {
                ExecError::InvalidCommand(message.clone())
            }
            _ => ExecError::Agent(e),
        }
    }
}

/// A command to run in a box.
#[derive(Debug, Clone, Default)]
pub struct BoxCommand {
    pub(crate) spec: ExecSpec,
}

impl BoxCommand {
    pub fn new(program: impl Into<String>) -> Self {
        BoxCommand {
            spec: ExecSpec {
                program: program.into(),
                ..Default::default()
            },
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.spec.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Set an environment variable; later settings of the same key win.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.spec.env.retain(|(k, _)| *k != key);
        self.spec.env.push((key, value.into()));
        self
    }

    /// Working directory inside the box; absolute.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.spec.working_dir = Some(dir.into());
        self
    }

    /// Give the process a stdin pipe (otherwise it reads `/dev/null`).
    pub fn stdin(mut self, piped: bool) -> Self {
        self.spec.stdin = piped;
        self
    }

    /// End the process group after `limit`; the result is then
    /// [`ExitStatus::TimedOut`](crate::ExitStatus::TimedOut). Enforced in the guest, so it
    /// holds even if this process goes away. A zero duration means no limit.
    pub fn timeout(mut self, limit: std::time::Duration) -> Self {
        self.spec.timeout = (!limit.is_zero()).then_some(limit);
        self
    }

    /// Run as `name|uid[:group|gid]`, resolved against the image's `/etc/passwd` and
    /// `/etc/group` with `docker exec --user` rules (supplementary groups included).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.spec.user = Some(user.into());
        self
    }

    /// Run on a pseudo-terminal of `rows` x `cols` (`boxlite exec -t`): the process
    /// gets a controlling terminal, output arrives on stdout only, and
    /// [`Execution::resize_tty`] changes the size later.
    pub fn tty(mut self, rows: u16, cols: u16) -> Self {
        self.spec.tty = Some((rows.max(1), cols.max(1)));
        self
    }

    pub fn program(&self) -> &str {
        &self.spec.program
    }
}

/// A process running in a box.
#[derive(Debug)]
pub struct Execution {
    id: String,
    client: AgentClient,
    stdin: Option<ExecStdin>,
    stdout: Option<ExecOutput>,
    stderr: Option<ExecOutput>,
    /// The box's console log, to explain an agent that went away.
    console_log: Option<std::path::PathBuf>,
}

impl Execution {
    pub(crate) fn new(
        client: AgentClient,
        id: String,
        stdin: bool,
        console_log: Option<std::path::PathBuf>,
    ) -> Self {
        Execution {
            stdin: stdin.then(|| ExecStdin::new(client.clone(), id.clone())),
            stdout: Some(ExecOutput::new(client.clone(), id.clone(), Pipe::Stdout)),
            stderr: Some(ExecOutput::new(client.clone(), id.clone(), Pipe::Stderr)),
            client,
            id,
            console_log,
        }
    }

    /// A handle to an execution someone else started, for its remaining output and its
    /// exit status. It has no stdin: closing stdin is the starter's business.
    pub(crate) fn attached(
        client: AgentClient,
        id: String,
        console_log: Option<std::path::PathBuf>,
    ) -> Self {
        let mut e = Execution::new(client, id, false, console_log);
        e.stdin = None;
        e
    }

    /// The execution id; any client of the same box can use it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this handle still holds the execution's stdin.
    pub fn has_stdin(&self) -> bool {
        self.stdin.is_some()
    }

    pub fn take_stdin(&mut self) -> Option<ExecStdin> {
        self.stdin.take()
    }

    pub fn take_stdout(&mut self) -> Option<ExecOutput> {
        self.stdout.take()
    }

    pub fn take_stderr(&mut self) -> Option<ExecOutput> {
        self.stderr.take()
    }

    /// Wait for the process to exit. If the box dies first (its kernel panics, its VM is
    /// killed, it powers off), the error says so, with what the console showed.
    pub async fn wait(&self) -> Result<ExitStatus, ExecError> {
        match self.client.wait(&self.id).await {
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
                    detail: crate::error_chain(&e),
                    hint,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Change the window size of the execution's terminal; the process gets SIGWINCH.
    pub async fn resize_tty(&self, rows: u16, cols: u16) -> Result<(), ExecError> {
        self.client
            .resize_tty(&self.id, rows.max(1), cols.max(1))
            .await
            .map_err(|e| match e.code() {
                Some(tonic::Code::FailedPrecondition) => ExecError::NoTty {
                    id: self.id.clone(),
                },
                _ => ExecError::Agent(e),
            })
    }

    /// End the process and its process group for certain (SIGKILL).
    pub async fn kill(&self) -> Result<(), ExecError> {
        Ok(self.client.signal(&self.id, libc::SIGKILL, true).await?)
    }

    /// Send a signal to the process.
    pub async fn signal(&self, signal: i32) -> Result<(), ExecError> {
        Ok(self.client.signal(&self.id, signal, false).await?)
    }

    /// Deliver `signal` to the process's whole process group (it and the children it
    /// started), as a terminal's Ctrl-C does.
    pub async fn signal_group(&self, signal: i32) -> Result<(), ExecError> {
        Ok(self.client.signal(&self.id, signal, true).await?)
    }
}

/// One output pipe of an execution, as raw byte chunks exactly as the process wrote them.
/// The pipe is opened on the first read; until then (and when this handle is dropped)
/// the agent keeps it for whoever reads next, and the process blocks once the bounded
/// buffer fills, as with an unread pipe.
#[derive(Debug)]
pub struct ExecOutput {
    client: AgentClient,
    id: String,
    pipe: Pipe,
    stream: Option<tonic::Streaming<v1::OutputChunk>>,
    done: bool,
}

impl ExecOutput {
    fn new(client: AgentClient, id: String, pipe: Pipe) -> Self {
        ExecOutput {
            client,
            id,
            pipe,
            stream: None,
            done: false,
        }
    }

    /// The next chunk, or `None` at end of file.
    pub async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, ExecError>> {
        if self.done {
            return None;
        }
        if self.stream.is_none() {
            match self.client.read_output(&self.id, self.pipe).await {
                Ok(s) => self.stream = Some(s),
                Err(e) => {
                    self.done = true;
                    return Some(Err(ExecError::Agent(e)));
                }
            }
        }
        let stream = self.stream.as_mut()?;
        match stream.message().await {
            Ok(Some(chunk)) => Some(Ok(chunk.data)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(status) => {
                self.done = true;
                Some(Err(ExecError::Stream {
                    id: self.id.clone(),
                    what: format!("reading {:?}", self.pipe).to_lowercase(),
                    source: PortalError::Rpc {
                        op: "ReadOutput",
                        code: status.code(),
                        message: status.message().to_string(),
                    },
                }))
            }
        }
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

/// Largest stdin chunk put in one message.
const STDIN_CHUNK: usize = 256 * 1024;

/// The stdin pipe of an execution. `close()` (or dropping it) delivers end of file.
#[derive(Debug)]
pub struct ExecStdin {
    id: String,
    tx: Option<mpsc::Sender<v1::StdinChunk>>,
    call: JoinHandle<Result<u64, PortalError>>,
}

impl ExecStdin {
    fn new(client: AgentClient, id: String) -> Self {
        let (tx, rx) = mpsc::channel(4);
        let call = tokio::spawn(async move { client.write_stdin(ReceiverStream::new(rx)).await });
        ExecStdin {
            id,
            tx: Some(tx),
            call,
        }
    }

    fn chunk(&self, data: Vec<u8>, eof: bool) -> v1::StdinChunk {
        v1::StdinChunk {
            exec_id: self.id.clone(),
            data,
            eof,
        }
    }

    async fn failed(&mut self) -> ExecError {
        self.tx = None;
        match (&mut self.call).await {
            Ok(Err(e)) => ExecError::Stream {
                id: self.id.clone(),
                what: "writing stdin".into(),
                source: e,
            },
            _ => ExecError::StdinClosed {
                id: self.id.clone(),
            },
        }
    }

    /// Write all of `data` to the process's stdin.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), ExecError> {
        for piece in data.chunks(STDIN_CHUNK) {
            let msg = self.chunk(piece.to_vec(), false);
            let Some(tx) = self.tx.as_ref() else {
                return Err(ExecError::StdinClosed {
                    id: self.id.clone(),
                });
            };
            if tx.send(msg).await.is_err() {
                return Err(self.failed().await);
            }
        }
        Ok(())
    }

    /// Close stdin: the process reads end of file. Returns once the agent has closed it.
    pub async fn close(mut self) -> Result<u64, ExecError> {
        let eof = self.chunk(Vec::new(), true);
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(eof).await;
        }
        match (&mut self.call).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(ExecError::Stream {
                id: self.id.clone(),
                what: "closing stdin".into(),
                source: e,
            }),
            Err(_) => Err(ExecError::StdinClosed {
                id: self.id.clone(),
            }),
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
fn agent_lost(e: &PortalError) -> bool {
    match e {
        PortalError::Rpc { code, message, .. } => {
            matches!(code, tonic::Code::Unavailable | tonic::Code::Cancelled)
                || (*code == tonic::Code::Unknown
                    && (message.contains("transport") || message.contains("h2")))
        }
        PortalError::Connect(_) => true,
        PortalError::Timeout(_) => false,
    }
}
