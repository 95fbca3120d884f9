//! Executions: start (`POST /boxes/{id}/exec`), status, kill, signal, resize, and attach
//! over a WebSocket in BoxLite's frame protocol:
//! - server to client: binary `[0x01|0x02][bytes]` (stdout, stderr), then a text
//!   `{"type":"exit","exit_code":N}` and a normal close; a ping at once on upgrade (the
//!   released SDK drops a socket that says nothing for 10 s) and every 15 s;
//! - client to server: binary frames are stdin, text `{"type":"stdin_eof"}` closes it,
//!   `{"type":"resize","cols","rows"}` and `{"type":"signal","sig"}` as the REST routes.
//!
//! Output waits in the agent until someone reads it, so a command that finishes before
//! the attach loses nothing, and the server holds at most one chunk per stream: each is
//! read only after the previous one was written to the socket (a slow client slows the
//! process, never grows the server's memory).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use boxlite::{BoxCommand, ExecStdin, Execution, ExitStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ErrorResponse};

/// Executions this server started, by id.
#[derive(Debug, Default)]
pub struct Executions {
    map: std::sync::Mutex<HashMap<String, Arc<Entry>>>,
}

#[derive(Debug)]
struct Entry {
    box_id: String,
    /// A handle for status, kill, signal and resize (clones share the status).
    handle: Execution,
    /// The first handle's output streams, for the first attach; later attaches ask the
    /// agent for what is left.
    first: std::sync::Mutex<Option<Execution>>,
    /// Kept across attaches: an execution has one stdin.
    stdin: tokio::sync::Mutex<Option<ExecStdin>>,
    attached: std::sync::atomic::AtomicBool,
}

/// How long a finished execution stays known (for its status and a late attach).
pub const KEEP_FINISHED: Duration = Duration::from_secs(300);

impl Executions {
    /// An execution of the box `box_key` (an id, a name or a unique id prefix, resolved
    /// by the library as in every box route).
    async fn find(s: &AppState, box_key: &str, exec_id: &str) -> Result<Arc<Entry>, ApiError> {
        let b = s.rt.get(box_key).await?;
        // An execution of a paused box goes on once the box does: a call to it resumes
        // the box, as an exec or an attach would.
        if b.state().await? == boxlite::BoxState::Paused {
            b.resume().await?;
        }
        let map = s.executions.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(exec_id) {
            Some(e) if e.box_id == b.id() => Ok(e.clone()),
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no execution {exec_id:?} in box {box_key:?}"),
            )),
        }
    }

    fn forget(&self, exec_id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(exec_id);
    }

    /// Forget `entry` once it has been finished for [`KEEP_FINISHED`] (unless it was
    /// already forgotten or replaced), so a long-running server's table holds only
    /// running executions and recent ones.
    fn reap_later(self: &Arc<Self>, exec_id: String, entry: &Arc<Entry>, keep: Duration) {
        let table = Arc::downgrade(self);
        let handle = entry.handle.clone();
        let entry = Arc::downgrade(entry);
        tokio::spawn(async move {
            let _ = handle.wait().await;
            tokio::time::sleep(keep).await;
            let (Some(table), Some(entry)) = (table.upgrade(), entry.upgrade()) else {
                return;
            };
            let mut map = table.map.lock().unwrap_or_else(|p| p.into_inner());
            if map.get(&exec_id).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
                map.remove(&exec_id);
            }
        });
    }
}

/// `ExecRequest` of the document (and the upstream server's `stdin`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecRequest {
    /// The program: a path, or a name looked up in the command's `PATH`. Empty (or
    /// absent) only with `default_command`.
    #[serde(default)]
    pub command: String,
    /// Run the box's default command instead, as `docker run IMAGE [ARGS]` does: the
    /// image's entrypoint (or the box's) followed by `args`, or by the image's (or the
    /// box's) command when `args` is empty. Not in BoxLite's document.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default_command: bool,
    #[serde(default)]
    pub args: Vec<String>,
    /// Added to the box's default environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Kill the command (its process group) after this many seconds; it then ends as
    /// `timed_out` with exit code 124.
    pub timeout_seconds: Option<f64>,
    pub working_dir: Option<String>,
    /// Run on a terminal (80x24 until resized); output then comes on stdout only.
    #[serde(default)]
    pub tty: bool,
    /// Run as `name|uid[:group|gid]`, resolved in the image (not in BoxLite's document;
    /// the box's default user otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Written to the process's stdin, which is then closed. Without it, stdin stays
    /// open for an attached client.
    pub stdin: Option<String>,
}

/// `ExecResponse`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecResponse {
    pub execution_id: String,
}

/// `ExecutionStatus` of the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Running,
    Completed,
    Killed,
    TimedOut,
}

/// `ExecutionInfo`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecutionInfo {
    pub execution_id: String,
    pub status: ExecutionStatus,
    /// Null while running; 128+N for a signal N, 124 for a timeout, 137 for the OOM
    /// killer, -1 when the box went away.
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// The path parameters of an execution's routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ExecPath {
    /// The box's id, a unique prefix of it, or its name.
    pub box_id: String,
    /// As `POST /exec` returned it.
    pub exec_id: String,
}

/// The box id as the library knows it (a name or prefix resolved).
async fn resolve(s: &AppState, id: &str) -> Result<boxlite::LiteBox, ApiError> {
    Ok(s.rt.get(id).await?)
}

#[utoipa::path(post, path = "/v1/boxes/{box_id}/exec", operation_id = "startExecution",
    tag = "executions", params(crate::boxes::BoxPath), request_body = ExecRequest,
    responses(
        (status = 201, description = "Started (the box too, if it was not running)", body = ExecResponse),
        (status = 400, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse),
    ))]
pub async fn start(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<ExecRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(ApiError::from_json)?;
    let b = resolve(&s, &id).await?;
    let base = match (req.default_command, req.command.is_empty()) {
        (true, true) => b.image_command(&req.args).await?,
        (false, false) => BoxCommand::new(req.command).args(req.args),
        (true, false) => {
            return Err(ApiError::bad_request(
                "command and default_command exclude each other; give one",
            ));
        }
        (false, true) => {
            return Err(ApiError::bad_request(
                "command is empty; give the program to run (or default_command: true)",
            ));
        }
    };
    let mut cmd = base.stdin(true);
    for (k, v) in req.env {
        cmd = cmd.env(k, v);
    }
    if let Some(d) = req.working_dir {
        cmd = cmd.working_dir(d);
    }
    if let Some(u) = req.user {
        cmd = cmd.user(u);
    }
    if let Some(t) = req.timeout_seconds {
        if !(t.is_finite() && t > 0.0) {
            return Err(ApiError::bad_request(format!(
                "invalid timeout_seconds {t}: a positive number of seconds"
            )));
        }
        cmd = cmd.timeout(Duration::from_secs_f64(t.min(86_400.0)));
    }
    if req.tty {
        cmd = cmd.tty(24, 80);
    }
    let mut ex = b.exec(cmd).await?;
    let mut stdin = ex.take_stdin();
    if let (Some(text), Some(pipe)) = (req.stdin, stdin.as_mut()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(boxlite::Error::from)?;
        pipe.close().await.map_err(boxlite::Error::from)?;
        stdin = None;
    }
    let exec_id = ex.id().to_string();
    let entry = Arc::new(Entry {
        box_id: b.id().to_string(),
        handle: ex.clone(),
        first: std::sync::Mutex::new(Some(ex)),
        stdin: tokio::sync::Mutex::new(stdin),
        attached: std::sync::atomic::AtomicBool::new(false),
    });
    s.executions
        .map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(exec_id.clone(), entry.clone());
    s.executions
        .reap_later(exec_id.clone(), &entry, s.keep_finished);
    let location = format!("/v1/boxes/{id}/executions/{exec_id}");
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        Json(ExecResponse {
            execution_id: exec_id,
        }),
    )
        .into_response())
}

/// The document's status and exit code for a finished execution.
fn finished(st: &ExitStatus) -> (ExecutionStatus, i64) {
    match *st {
        ExitStatus::Code(c) => (ExecutionStatus::Completed, i64::from(c)),
        ExitStatus::Signal { signal, .. } => (ExecutionStatus::Killed, 128 + i64::from(signal)),
        ExitStatus::TimedOut => (ExecutionStatus::TimedOut, 124),
        ExitStatus::OutOfMemory => (ExecutionStatus::Killed, 137),
    }
}

#[utoipa::path(get, path = "/v1/boxes/{box_id}/executions/{exec_id}", operation_id = "getExecution",
    tag = "executions", params(ExecPath),
    responses((status = 200, body = ExecutionInfo), (status = 404, body = ErrorResponse)))]
pub async fn status(
    State(s): State<AppState>,
    Path((id, exec_id)): Path<(String, String)>,
) -> Result<Json<ExecutionInfo>, ApiError> {
    let e = Executions::find(&s, &id, &exec_id).await?;
    // Finished executions answer at once; a running one does not within the moment.
    let info = match tokio::time::timeout(Duration::from_millis(50), e.handle.wait()).await {
        Ok(Ok(st)) => {
            let (status, code) = finished(&st);
            ExecutionInfo {
                execution_id: exec_id,
                status,
                exit_code: Some(code),
                error_message: None,
            }
        }
        Ok(Err(err)) => ExecutionInfo {
            execution_id: exec_id,
            status: ExecutionStatus::Killed,
            exit_code: Some(-1),
            error_message: Some(ApiError::from(boxlite::Error::from(err)).message),
        },
        Err(_) => ExecutionInfo {
            execution_id: exec_id,
            status: ExecutionStatus::Running,
            exit_code: None,
            error_message: None,
        },
    };
    Ok(Json(info))
}

/// Kill and forget.
#[utoipa::path(delete, path = "/v1/boxes/{box_id}/executions/{exec_id}", operation_id = "killExecution",
    tag = "executions", params(ExecPath),
    responses(
        (status = 204, description = "Killed (SIGKILL to its process group) and forgotten"),
        (status = 404, body = ErrorResponse),
    ))]
pub async fn kill(
    State(s): State<AppState>,
    Path((id, exec_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let e = Executions::find(&s, &id, &exec_id).await?;
    // An execution that already ended has nothing to kill.
    if tokio::time::timeout(Duration::from_millis(20), e.handle.wait())
        .await
        .is_err()
    {
        match e.handle.kill().await {
            // Its box stopped: the process went with it.
            Ok(()) | Err(boxlite::ExecError::BoxStopped { .. }) => {}
            Err(err) => return Err(boxlite::Error::from(err).into()),
        }
    }
    s.executions.forget(&exec_id);
    Ok(StatusCode::NO_CONTENT)
}

/// `SignalRequest`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignalRequest {
    /// One of 1, 2, 3, 6, 10, 12, 15, 28 (kill with `DELETE`).
    pub signal: i32,
}

/// Signals a client may send (SIGKILL is `DELETE`).
const SIGNALS: &[i32] = &[
    libc_sig::HUP,
    libc_sig::INT,
    libc_sig::QUIT,
    libc_sig::ABRT,
    libc_sig::USR1,
    libc_sig::USR2,
    libc_sig::TERM,
    libc_sig::WINCH,
];

mod libc_sig {
    pub const HUP: i32 = 1;
    pub const INT: i32 = 2;
    pub const QUIT: i32 = 3;
    pub const ABRT: i32 = 6;
    pub const USR1: i32 = 10;
    pub const USR2: i32 = 12;
    pub const TERM: i32 = 15;
    pub const WINCH: i32 = 28;
}

#[utoipa::path(post, path = "/v1/boxes/{box_id}/executions/{exec_id}/signal",
    operation_id = "signalExecution", tag = "executions", params(ExecPath),
    request_body = SignalRequest,
    responses(
        (status = 204, description = "Delivered"),
        (status = 400, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 409, description = "The box is not running", body = ErrorResponse),
    ))]
pub async fn signal(
    State(s): State<AppState>,
    Path((id, exec_id)): Path<(String, String)>,
    body: Result<Json<SignalRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(req) = body.map_err(ApiError::from_json)?;
    if !SIGNALS.contains(&req.signal) {
        return Err(ApiError::bad_request(format!(
            "signal {} is not accepted; valid: {SIGNALS:?} (use DELETE to kill)",
            req.signal
        )));
    }
    let e = Executions::find(&s, &id, &exec_id).await?;
    e.handle
        .signal(req.signal)
        .await
        .map_err(boxlite::Error::from)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `ResizeRequest`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResizeRequest {
    #[schema(minimum = 1)]
    pub cols: u16,
    #[schema(minimum = 1)]
    pub rows: u16,
}

#[utoipa::path(post, path = "/v1/boxes/{box_id}/executions/{exec_id}/resize",
    operation_id = "resizeExecution", tag = "executions", params(ExecPath),
    request_body = ResizeRequest,
    responses(
        (status = 204, description = "Resized"),
        (status = 400, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 409, description = "Not a terminal, or the box is not running", body = ErrorResponse),
    ))]
pub async fn resize(
    State(s): State<AppState>,
    Path((id, exec_id)): Path<(String, String)>,
    body: Result<Json<ResizeRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(req) = body.map_err(ApiError::from_json)?;
    if req.cols == 0 || req.rows == 0 {
        return Err(ApiError::bad_request("cols and rows must be 1 or more"));
    }
    let e = Executions::find(&s, &id, &exec_id).await?;
    e.handle
        .resize_tty(req.rows, req.cols)
        .await
        .map_err(boxlite::Error::from)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The WebSocket attach. Server to client: binary `[0x01|0x02][bytes]` (stdout, stderr),
/// then text `{"type":"exit","exit_code":N}` and a normal close. Client to server: binary
/// frames are stdin; text `{"type":"stdin_eof"}`, `{"type":"resize","cols","rows"}`,
/// `{"type":"signal","sig"}`.
#[utoipa::path(get, path = "/v1/boxes/{box_id}/executions/{exec_id}/attach",
    operation_id = "attachExecution", tag = "executions", params(ExecPath),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade"),
        (status = 404, body = ErrorResponse),
        (status = 409, description = "Another client is attached", body = ErrorResponse),
    ))]
pub async fn attach(
    State(s): State<AppState>,
    Path((id, exec_id)): Path<(String, String)>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let e = Executions::find(&s, &id, &exec_id).await?;
    if e.attached.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_exists",
            format!("another client is attached to execution {exec_id:?}"),
        ));
    }
    let first = e.first.lock().unwrap_or_else(|p| p.into_inner()).take();
    let ex = match first {
        Some(ex) => ex,
        None => match resolve(&s, &id).await {
            Ok(b) => match b.attach(&exec_id).await {
                Ok(ex) => ex,
                Err(err) => {
                    e.attached.store(false, std::sync::atomic::Ordering::SeqCst);
                    return Err(err.into());
                }
            },
            Err(err) => {
                e.attached.store(false, std::sync::atomic::Ordering::SeqCst);
                return Err(err);
            }
        },
    };
    Ok(ws
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| async move {
            pump(socket, ex, &e).await;
            e.attached.store(false, std::sync::atomic::Ordering::SeqCst);
        }))
}

/// Where to cut `buf` so a multi-byte UTF-8 character is never split across two
/// frames: BoxLite's SDK decodes each frame on its own. Holds back at most 3 bytes of
/// an unfinished character; bytes that are not UTF-8 are cut anywhere.
fn utf8_cut(buf: &[u8]) -> usize {
    let n = buf.len();
    for back in 1..=3.min(n) {
        let b = buf[n - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead
        }
        let width = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if width > back { n - back } else { n };
    }
    n
}

/// One output stream's bytes held back for the next frame.
#[derive(Default)]
struct Carry(Vec<u8>);

impl Carry {
    /// The frame to send for `chunk` (with what was held back), keeping an unfinished
    /// character for later; `None` when there is nothing whole to send yet.
    fn frame(&mut self, channel: u8, chunk: &[u8]) -> Option<Message> {
        self.0.extend_from_slice(chunk);
        let cut = utf8_cut(&self.0);
        if cut == 0 {
            return None;
        }
        let rest = self.0.split_off(cut);
        let whole = std::mem::replace(&mut self.0, rest);
        Some(framed(channel, &whole))
    }

    /// What is left at end of stream.
    fn flush(&mut self, channel: u8) -> Option<Message> {
        (!self.0.is_empty()).then(|| framed(channel, &std::mem::take(&mut self.0)))
    }
}

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_end_on_whole_utf8_characters() {
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(utf8_cut(b"abc"), 3);
        assert_eq!(utf8_cut(&[b'a', euro[0]]), 1);
        assert_eq!(utf8_cut(&[b'a', euro[0], euro[1]]), 1);
        assert_eq!(utf8_cut(&[b'a', euro[0], euro[1], euro[2]]), 4);
        assert_eq!(utf8_cut(&[0xff, 0xfe]), 2, "not UTF-8: cut anywhere");
        let mut c = Carry::default();
        assert!(c.frame(1, &[euro[0]]).is_none(), "nothing whole yet");
        let Some(Message::Binary(b)) = c.frame(1, &[euro[1], euro[2], b'!']) else {
            panic!("a frame")
        };
        assert_eq!(&b[..], [&[1u8][..], euro, b"!"].concat());
        assert!(c.flush(1).is_none());
        let _ = c.frame(2, &[b'x', euro[0]]);
        let Some(Message::Binary(tail)) = c.flush(2) else {
            panic!("the tail at end of stream")
        };
        assert_eq!(&tail[..], [2u8, euro[0]]);
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    StdinEof,
    Resize { cols: u16, rows: u16 },
    Signal { sig: i32 },
}

/// Move bytes between the socket and the execution until it exits or the client goes.
async fn pump(mut socket: WebSocket, mut ex: Execution, e: &Entry) {
    if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
        return;
    }
    let mut out = ex.take_stdout();
    let mut err = ex.take_stderr();
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    ping.tick().await;
    let (mut carry_out, mut carry_err) = (Carry::default(), Carry::default());
    loop {
        if out.is_none() && err.is_none() {
            break;
        }
        let frame = tokio::select! {
            chunk = async { out.as_mut()?.next_chunk().await }, if out.is_some() => match chunk {
                Some(Ok(c)) => carry_out.frame(1, &c),
                _ => { out = None; carry_out.flush(1) }
            },
            chunk = async { err.as_mut()?.next_chunk().await }, if err.is_some() => match chunk {
                Some(Ok(c)) => carry_err.frame(2, &c),
                _ => { err = None; carry_err.flush(2) }
            },
            msg = socket.recv() => match msg {
                Some(Ok(m)) => { if !client_message(m, &ex, e).await { return } None }
                _ => return,
            },
            _ = ping.tick() => Some(Message::Ping(Vec::new().into())),
        };
        if let Some(f) = frame
            && socket.send(f).await.is_err()
        {
            return;
        }
    }
    let code = match ex.wait().await {
        Ok(st) => finished(&st).1,
        Err(_) => -1,
    };
    let exit = serde_json::json!({"type": "exit", "exit_code": code}).to_string();
    let _ = socket.send(Message::Text(exit.into())).await;
    let _ = socket
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: 1000,
            reason: "exited".into(),
        })))
        .await;
    // Finish the closing handshake: read until the client's Close (or 5 s). Dropping the
    // socket with the client's last frames unread (a Pong, stdin sent late, its Close)
    // makes the kernel answer with a reset, which can discard the exit message and the
    // Close still unread on the client's side.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Handle one message from the client; false when it closed.
async fn client_message(m: Message, ex: &Execution, e: &Entry) -> bool {
    match m {
        Message::Binary(data) => {
            if let Some(stdin) = e.stdin.lock().await.as_mut() {
                let _ = stdin.write_all(&data).await;
            }
        }
        Message::Text(t) => match serde_json::from_str::<Control>(&t) {
            Ok(Control::StdinEof) => {
                if let Some(mut stdin) = e.stdin.lock().await.take() {
                    let _ = stdin.close().await;
                }
            }
            Ok(Control::Resize { cols, rows }) => {
                let _ = ex.resize_tty(rows.max(1), cols.max(1)).await;
            }
            Ok(Control::Signal { sig }) if SIGNALS.contains(&sig) => {
                let _ = ex.signal(sig).await;
            }
            // Unknown messages are ignored, as the protocol says.
            _ => {}
        },
        Message::Close(_) => return false,
        Message::Ping(_) | Message::Pong(_) => {}
    }
    true
}
