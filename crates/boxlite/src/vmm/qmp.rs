//! A small QMP client: QEMU's JSON machine protocol over the unix socket every box's QEMU
//! listens on (`qmp.sock` in the box directory). Only what memory snapshots need: stop and
//! continue the vCPUs, save the device state to a file and load it back (with guest RAM
//! left out, `x-ignore-shared`, since it lives in a file of its own), and quit.
//!
//! File descriptors travel over the socket with `SCM_RIGHTS` (`getfd`), so QEMU, which
//! runs under `-sandbox on`, never opens a path or spawns a process for a migration.
//!
//! Everything QEMU sends is parsed as untrusted input: a line is at most 1 MiB, and a reply
//! that is not what the command expects is an error that names the command.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// The longest line QEMU may send.
const MAX_LINE: usize = 1 << 20;

/// How long a migration to or from a file may take: device state is kilobytes, but a box
/// whose RAM is private (a clone) streams all of it.
const MIGRATION_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("connecting to QEMU's monitor socket {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to QEMU's monitor ({what})")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU's monitor closed the connection during {what}")]
    Closed { what: String },
    #[error("QEMU refused {command}: {class}: {desc}")]
    Refused {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QEMU's monitor sent something unexpected during {what}: {detail}")]
    Protocol { what: String, detail: String },
    #[error("the migration {direction} the state file failed: {detail}")]
    Migration {
        direction: &'static str,
        detail: String,
    },
    #[error("QEMU's monitor did not answer {what} within {}s", after.as_secs())]
    Timeout { what: String, after: Duration },
}

/// One QMP session, capabilities negotiated.
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp").finish_non_exhaustive()
    }
}

/// The longest socket path `connect` takes as it is (sun_path is 108 bytes with its NUL).
const SUN_PATH_MAX: usize = 107;

/// `path` if a socket can be reached by it, else a `/proc/self/fd/N/NAME` path through
/// its directory, opened (and kept open by the returned descriptor).
fn short_socket_path(path: &Path) -> std::io::Result<(PathBuf, Option<std::fs::File>)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().len() <= SUN_PATH_MAX {
        return Ok((path.to_path_buf(), None));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok((path.to_path_buf(), None));
    };
    let d = std::fs::File::open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", d.as_raw_fd())).join(name);
    Ok((short, Some(d)))
}

impl Qmp {
    /// Connect to `path`, waiting up to `wait` for QEMU to create and listen on it, and
    /// leave negotiation mode.
    pub async fn connect(path: &Path, wait: Duration) -> Result<Qmp, QmpError> {
        let deadline = Instant::now() + wait;
        let failed = |source| QmpError::Connect {
            path: path.to_path_buf(),
            source,
        };
        // A socket path longer than sun_path holds (a long home) is reached through its
        // directory, opened here: /proc/self/fd/N/qmp.sock is short.
        let (short, _dir) = short_socket_path(path).map_err(failed)?;
        let stream = loop {
            match UnixStream::connect(&short).await {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(source) => return Err(failed(source)),
            }
        };
        let (r, w) = stream.into_split();
        let mut q = Qmp {
            reader: BufReader::new(r),
            writer: w,
            next_id: 1,
        };
        let greeting = q.read_message("the greeting").await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol {
                what: "the greeting".into(),
                detail: truncate(&greeting.to_string()),
            });
        }
        q.execute("qmp_capabilities", None).await?;
        Ok(q)
    }

    async fn read_message(&mut self, what: &str) -> Result<Value, QmpError> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = AsyncReadExt::take(&mut self.reader, MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .await
                .map_err(|source| QmpError::Io {
                    what: what.into(),
                    source,
                })?;
            if n == 0 {
                return Err(QmpError::Closed { what: what.into() });
            }
            if line.len() > MAX_LINE {
                return Err(QmpError::Protocol {
                    what: what.into(),
                    detail: format!("a line over {MAX_LINE} bytes"),
                });
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return serde_json::from_slice(&line).map_err(|e| QmpError::Protocol {
                what: what.into(),
                detail: e.to_string(),
            });
        }
    }

    /// Run one command and return its `return` value. Events that arrive in between are
    /// skipped.
    pub async fn execute(&mut self, command: &str, args: Option<Value>) -> Result<Value, QmpError> {
        self.send(command, args, None).await
    }

    async fn send(
        &mut self,
        command: &str,
        args: Option<Value>,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(b'\n');
        let io = |source| QmpError::Io {
            what: command.into(),
            source,
        };
        match fd {
            Some(fd) => send_with_fd(&self.writer, &bytes, fd).await.map_err(io)?,
            None => self.writer.write_all(&bytes).await.map_err(io)?,
        }
        loop {
            let reply = self.read_message(command).await?;
            if reply.get("event").is_some() {
                continue;
            }
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                return Err(QmpError::Protocol {
                    what: command.into(),
                    detail: format!(
                        "a reply to another command: {}",
                        truncate(&reply.to_string())
                    ),
                });
            }
            if let Some(err) = reply.get("error") {
                return Err(QmpError::Refused {
                    command: command.into(),
                    class: err
                        .get("class")
                        .and_then(Value::as_str)
                        .unwrap_or("Error")
                        .into(),
                    desc: err
                        .get("desc")
                        .and_then(Value::as_str)
                        .map(truncate)
                        .unwrap_or_default(),
                });
            }
            return Ok(reply.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// Hand QEMU a file descriptor under `name` (`getfd`), for `fd:NAME` migration URIs.
    pub async fn send_fd(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        self.send("getfd", Some(json!({ "fdname": name })), Some(fd))
            .await
            .map(drop)
    }

    /// Stop the vCPUs. QEMU drains and flushes the block devices before it answers.
    pub async fn stop(&mut self) -> Result<(), QmpError> {
        self.execute("stop", None).await.map(drop)
    }

    /// Run the vCPUs (again). After an outgoing migration this also takes the block
    /// devices back, which the migration handed over.
    pub async fn cont(&mut self) -> Result<(), QmpError> {
        self.execute("cont", None).await.map(drop)
    }

    /// QEMU's run state (`running`, `paused`, `postmigrate`, `inmigrate`, ...).
    pub async fn status(&mut self) -> Result<String, QmpError> {
        let v = self.execute("query-status", None).await?;
        v.get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| QmpError::Protocol {
                what: "query-status".into(),
                detail: truncate(&v.to_string()),
            })
    }

    async fn migration_setup(&mut self) -> Result<(), QmpError> {
        self.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": [
                { "capability": "x-ignore-shared", "state": true },
            ]})),
        )
        .await?;
        // QEMU 7.2 throttles migration to 128 MiB/s by default; a file has no peer to
        // protect, and a clone whose RAM is private streams all of it.
        self.execute(
            "migrate-set-parameters",
            Some(json!({ "max-bandwidth": 100u64 << 30 })),
        )
        .await
        .map(drop)
    }

    /// Save the device state (and any RAM that is not in a shared file) into `file`,
    /// which must be open for writing. The VM should be stopped first; afterwards it is
    /// in `postmigrate` and its block devices are released until [`Qmp::cont`].
    pub async fn save_state(&mut self, file: &std::fs::File) -> Result<(), QmpError> {
        self.migration_setup().await?;
        self.send_fd("boxlite-state", file_fd(file)).await?;
        self.execute("migrate", Some(json!({ "uri": "fd:boxlite-state" })))
            .await?;
        self.wait_migration("into").await
    }

    /// Load a state saved by [`Qmp::save_state`] into a QEMU started with
    /// `-incoming defer`. The VM stays paused until [`Qmp::cont`].
    pub async fn load_state(&mut self, file: &std::fs::File) -> Result<(), QmpError> {
        self.migration_setup().await?;
        self.send_fd("boxlite-state", file_fd(file)).await?;
        self.execute(
            "migrate-incoming",
            Some(json!({ "uri": "fd:boxlite-state" })),
        )
        .await?;
        self.wait_migration("from").await
    }

    async fn wait_migration(&mut self, direction: &'static str) -> Result<(), QmpError> {
        let t0 = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let v = self.execute("query-migrate", None).await?;
            match v.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some(s @ ("failed" | "cancelled")) => {
                    let detail = v
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .map_or_else(|| s.to_string(), truncate);
                    return Err(QmpError::Migration { direction, detail });
                }
                _ => {}
            }
            if t0.elapsed() > MIGRATION_LIMIT {
                return Err(QmpError::Timeout {
                    what: format!("the migration {direction} the state file"),
                    after: MIGRATION_LIMIT,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

fn file_fd(file: &std::fs::File) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    file.as_fd()
}

fn truncate(s: &str) -> String {
    const MAX: usize = 500;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Write `bytes` with `fd` attached to the first byte (SCM_RIGHTS), then the rest.
async fn send_with_fd(w: &OwnedWriteHalf, bytes: &[u8], fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let sock: &UnixStream = w.as_ref();
    let mut sent = 0usize;
    while sent < bytes.len() {
        sock.writable().await?;
        let attach = sent == 0;
        let rest = &bytes[sent..];
        match sock.try_io(tokio::io::Interest::WRITABLE, || {
            sendmsg(sock.as_raw_fd(), rest, attach.then_some(fd.as_raw_fd()))
        }) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn sendmsg(sock: i32, data: &[u8], fd: Option<i32>) -> std::io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // Room for one descriptor, aligned as the kernel expects.
    let mut cmsg_buf = [0u64; 4];
    // SAFETY: msghdr is plain data; a zeroed one is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // The size of one descriptor, 4 bytes.
        #[allow(clippy::cast_possible_truncation)] // 4 fits
        const FD_LEN: u32 = std::mem::size_of::<i32>() as u32;
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(FD_LEN) } as usize;
        debug_assert!(space <= std::mem::size_of_val(&cmsg_buf));
        msg.msg_control = cmsg_buf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg_control points at a buffer of `space` bytes, enough for one header
        // carrying one int; the header pointer is therefore valid to write.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&raw const msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(FD_LEN) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
        }
    }
    // SAFETY: `msg` points at live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(sock, &raw const msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::cast_sign_loss)]
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake QEMU monitor: sends the greeting, then answers each line with `answer`.
    async fn fake(
        answer: impl Fn(&Value) -> Vec<String> + Send + 'static,
    ) -> (PathBuf, tokio::task::JoinHandle<()>) {
        let dir = std::env::temp_dir().join(format!("bx-qmp-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qmp.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .await
                .unwrap();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&l).unwrap();
                for out in answer(&v) {
                    if w.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        });
        (path, task)
    }

    #[tokio::test]
    async fn a_socket_path_longer_than_sun_path_is_reached_through_its_directory() {
        let base = std::env::temp_dir().join(format!("bx-qmp-long-{}", rand::random::<u64>()));
        let dir = base.join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qmp.sock");
        let (short, _d) = short_socket_path(&path).unwrap();
        let listener = tokio::net::UnixListener::bind(&short).unwrap();
        let serve = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            w.write_all(b"{\"QMP\": {}}\r\n").await.unwrap();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&l).unwrap();
                let _ = w.write_all(ok(&v).as_bytes()).await;
            }
        });

        let direct = UnixStream::connect(&path).await;
        let q = Qmp::connect(&path, Duration::from_secs(2)).await;

        assert!(path.as_os_str().len() > SUN_PATH_MAX);
        assert!(
            direct.is_err(),
            "the long path itself cannot be connected to"
        );
        assert!(q.is_ok(), "{:?}", q.err());
        assert!(short.as_os_str().len() < 40, "{}", short.display());
        serve.abort();
        std::fs::remove_dir_all(&base).unwrap();
    }

    fn ok(v: &Value) -> String {
        format!("{{\"return\": {{}}, \"id\": {}}}\r\n", v["id"])
    }

    #[tokio::test]
    async fn events_in_between_are_skipped_and_errors_name_the_command() {
        let (path, _t) = fake(|v| {
            if v["execute"] == "stop" {
                vec![
                    "{\"event\": \"STOP\", \"timestamp\": {}}\r\n".into(),
                    format!(
                        "{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"no\"}}, \"id\": {}}}\r\n",
                        v["id"]
                    ),
                ]
            } else {
                vec![
                    "{\"event\": \"RESUME\", \"timestamp\": {}}\r\n".into(),
                    ok(v),
                ]
            }
        })
        .await;
        let mut q = Qmp::connect(&path, Duration::from_secs(2)).await.unwrap();

        let cont = q.cont().await;
        let stop = q.stop().await.unwrap_err().to_string();

        assert!(cont.is_ok(), "{cont:?}");
        assert_eq!(stop, "QEMU refused stop: GenericError: no");
    }

    #[tokio::test]
    async fn a_hostile_monitor_gets_an_error_never_a_hang_or_a_panic() {
        // A line longer than the limit, then a reply to another command, then garbage.
        let (path, _t) = fake(|v| match v["execute"].as_str() {
            Some("qmp_capabilities") => vec![ok(v)],
            Some("query-status") => vec![format!("{}\n", "x".repeat(MAX_LINE + 10))],
            _ => vec![],
        })
        .await;
        let mut q = Qmp::connect(&path, Duration::from_secs(2)).await.unwrap();
        let long = q.status().await.unwrap_err().to_string();
        assert!(long.contains("a line over"), "{long}");

        let (path, _t) = fake(|v| match v["execute"].as_str() {
            Some("qmp_capabilities") => vec![ok(v)],
            Some("stop") => vec!["{\"return\": {}, \"id\": 999}\n".into()],
            _ => vec!["not json\n".into()],
        })
        .await;
        let mut q = Qmp::connect(&path, Duration::from_secs(2)).await.unwrap();
        let other = q.stop().await.unwrap_err().to_string();
        let junk = q.cont().await.unwrap_err().to_string();
        assert!(other.contains("a reply to another command"), "{other}");
        assert!(junk.contains("unexpected during cont"), "{junk}");
    }

    #[tokio::test]
    async fn a_failed_migration_reports_qemus_reason() {
        let (path, _t) = fake(|v| match v["execute"].as_str() {
            Some("query-migrate") => vec![format!(
                "{{\"return\": {{\"status\": \"failed\", \"error-desc\": \"State blocked by non-migratable device\"}}, \"id\": {}}}\n",
                v["id"]
            )],
            _ => vec![ok(v)],
        })
        .await;
        let mut q = Qmp::connect(&path, Duration::from_secs(2)).await.unwrap();
        let f = tempfile_for_test();

        let e = q.save_state(&f).await.unwrap_err().to_string();

        assert_eq!(
            e,
            "the migration into the state file failed: State blocked by non-migratable device"
        );
    }

    fn tempfile_for_test() -> std::fs::File {
        let p = std::env::temp_dir().join(format!("bx-qmp-f-{}", rand::random::<u64>()));
        let f = std::fs::File::create(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        f
    }
}
