//! What the helper shows the outside: counters, the decision log and the bound ports, over
//! a control socket (one request line, one JSON answer) and in an append-only JSON-lines
//! file that outlives the helper.
//!
//! Every entry the guest can cause is bounded: the in-memory log keeps the last
//! [`LOG_KEEP`] decisions and the file is rotated once at [`LOG_FILE_MAX`] bytes, so a
//! guest that tries a million connections costs a few megabytes at most.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;

use crate::config::Proto;
use crate::frame::DropReason;
use crate::policy::{Decision, Verdict};

pub const LOG_KEEP: usize = 1000;
pub const LOG_FILE_MAX: u64 = 1 << 20;
/// The longest request line the control socket reads.
const MAX_REQUEST: usize = 64;

/// One decision, as the log and `boxlite network log` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogEntry {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// `connect` (a TCP connection or UDP flow), `dns` (a query), `dial` (the host side
    /// failed) or `guard` (the test guard refused a dial).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    /// The destination the guest addressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// The DNS name, or the SNI/Host a deferred decision was made on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Names this box's DNS had resolved to the destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// `allow`, `deny`, `defer-l7` or `error`.
    pub verdict: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// For `secret` entries: the names (never the values) of the secrets in play.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn verdict_text(v: &Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
        Verdict::DeferL7 => "defer-l7",
    }
}

impl LogEntry {
    pub fn connect(proto: Proto, dst: SocketAddrV4, names: &[String], d: &Decision) -> Self {
        LogEntry {
            ts_ms: now_ms(),
            kind: "connect".into(),
            proto: Some(proto),
            dst: Some(dst.to_string()),
            name: None,
            names: names.to_vec(),
            verdict: verdict_text(&d.verdict).into(),
            reason: d.reason.clone(),
            rule: d.rule.clone(),
            secrets: Vec::new(),
        }
    }

    pub fn dns_decision(name: &str, d: &Decision) -> Self {
        Self::dns(name, verdict_text(&d.verdict), &d.reason, d.rule.clone())
    }

    pub fn dns(name: &str, verdict: &str, reason: &str, rule: Option<String>) -> Self {
        LogEntry {
            ts_ms: now_ms(),
            kind: "dns".into(),
            proto: None,
            dst: None,
            name: Some(name.to_string()),
            names: Vec::new(),
            verdict: verdict.into(),
            reason: reason.into(),
            rule,
            secrets: Vec::new(),
        }
    }

    pub fn dial_failed(dst: SocketAddrV4, err: &str) -> Self {
        LogEntry {
            ts_ms: now_ms(),
            kind: "dial".into(),
            proto: Some(Proto::Tcp),
            dst: Some(dst.to_string()),
            name: None,
            names: Vec::new(),
            verdict: "error".into(),
            reason: err.into(),
            rule: None,
            secrets: Vec::new(),
        }
    }

    /// What the interception path did on a connection to a secret host (`kind` is
    /// `secret`): `intercept`, `substitute` (one request), `deny` (nothing sent) or `error`.
    /// The reason never holds a value: only names, methods and paths.
    pub fn secret(
        dst: SocketAddrV4,
        host: &str,
        verdict: &str,
        reason: String,
        secrets: Vec<String>,
    ) -> Self {
        LogEntry {
            ts_ms: now_ms(),
            kind: "secret".into(),
            proto: Some(Proto::Tcp),
            dst: Some(dst.to_string()),
            name: Some(host.to_string()),
            names: Vec::new(),
            verdict: verdict.into(),
            reason,
            rule: None,
            secrets,
        }
    }

    pub fn guard(mut self) -> Self {
        self.kind = "guard".into();
        self
    }

    pub fn with_authority(mut self, a: Option<&str>) -> Self {
        self.name = a.map(str::to_string);
        self
    }
}

/// Counters. Bytes are payload bytes (TCP stream bytes, UDP datagram bytes); frames count
/// the Ethernet frames exchanged with the guest.
#[derive(Debug, Default)]
pub struct Stats {
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_from_guest: AtomicU64,
    bytes_to_guest: AtomicU64,
    tcp_connections: AtomicU64,
    tcp_active: AtomicU64,
    inbound_connections: AtomicU64,
    udp_flows: AtomicU64,
    dns_queries: AtomicU64,
    denied: AtomicU64,
    dropped_spoofed: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_ipv6: AtomicU64,
    dropped_other: AtomicU64,
}

/// [`Stats`] as read at one moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub frames_in: u64,
    pub frames_out: u64,
    /// Payload bytes the box sent out (TCP and UDP).
    pub bytes_out: u64,
    /// Payload bytes the box received.
    pub bytes_in: u64,
    pub tcp_connections: u64,
    pub tcp_active: u64,
    pub inbound_connections: u64,
    pub udp_flows: u64,
    pub dns_queries: u64,
    pub denied: u64,
    pub dropped_spoofed: u64,
    pub dropped_malformed: u64,
    pub dropped_ipv6: u64,
    pub dropped_other: u64,
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl Stats {
    pub fn frame_in(&self) {
        add(&self.frames_in, 1);
    }
    pub fn frame_out(&self) {
        add(&self.frames_out, 1);
    }
    pub fn add_tcp_out(&self, n: usize) {
        add(&self.bytes_from_guest, n);
    }
    pub fn add_tcp_in(&self, n: usize) {
        add(&self.bytes_to_guest, n);
    }
    pub fn add_udp_out(&self, n: usize) {
        add(&self.bytes_from_guest, n);
    }
    pub fn add_udp_in(&self, n: usize) {
        add(&self.bytes_to_guest, n);
    }
    pub fn tcp_opened(&self) {
        add(&self.tcp_connections, 1);
        add(&self.tcp_active, 1);
    }
    pub fn tcp_closed(&self) {
        let _ = self
            .tcp_active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
    }
    pub fn inbound(&self) {
        add(&self.inbound_connections, 1);
    }
    pub fn dns_query(&self) {
        add(&self.dns_queries, 1);
    }
    pub fn add_denied(&self) {
        add(&self.denied, 1);
    }
    pub fn set_active(&self, tcp: usize, udp: usize) {
        self.tcp_active
            .store(u64::try_from(tcp).unwrap_or(0), Ordering::Relaxed);
        self.udp_flows
            .store(u64::try_from(udp).unwrap_or(0), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            frames_in: g(&self.frames_in),
            frames_out: g(&self.frames_out),
            bytes_out: g(&self.bytes_from_guest),
            bytes_in: g(&self.bytes_to_guest),
            tcp_connections: g(&self.tcp_connections),
            tcp_active: g(&self.tcp_active),
            inbound_connections: g(&self.inbound_connections),
            udp_flows: g(&self.udp_flows),
            dns_queries: g(&self.dns_queries),
            denied: g(&self.denied),
            dropped_spoofed: g(&self.dropped_spoofed),
            dropped_malformed: g(&self.dropped_malformed),
            dropped_ipv6: g(&self.dropped_ipv6),
            dropped_other: g(&self.dropped_other),
        }
    }
}

/// A published port as bound (the host port is known once bound, for `-p 0:80`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BoundPort {
    pub host: SocketAddr,
    pub guest_port: u16,
    pub proto: Proto,
}

/// State the loop and the control socket share.
#[derive(Debug)]
pub struct Shared {
    pub stats: Stats,
    log: Mutex<VecDeque<LogEntry>>,
    file: Mutex<Option<LogFile>>,
    ports: Mutex<Vec<BoundPort>>,
    /// The per-box CA certificate (PEM; public), when the box has secrets.
    ca_pem: Mutex<Option<String>>,
}

/// The decision log and its previous generation, both opened at start: the helper may
/// have dropped to a uid that can no longer reach the box directory by path, so rotation
/// copies through the descriptors instead of renaming.
#[derive(Debug)]
struct LogFile {
    file: std::fs::File,
    old: std::fs::File,
    size: u64,
}

impl LogFile {
    fn open(path: &Path) -> Option<LogFile> {
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(p)
                .ok()
        };
        let file = open(path)?;
        let old = open(&path.with_extension("jsonl.1"))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Some(LogFile { file, old, size })
    }

    /// Keep one previous generation; the rest is gone.
    fn rotate(&mut self) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        self.old.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        std::io::copy(&mut self.file, &mut self.old)?;
        self.file.set_len(0)?;
        self.size = 0;
        Ok(())
    }
}

impl Shared {
    pub fn new(log_file: Option<&Path>) -> Shared {
        let file = log_file.and_then(LogFile::open);
        Shared {
            stats: Stats::default(),
            log: Mutex::new(VecDeque::new()),
            file: Mutex::new(file),
            ports: Mutex::new(Vec::new()),
            ca_pem: Mutex::new(None),
        }
    }

    /// Publish the CA certificate the `ca` request answers with.
    pub fn set_ca_pem(&self, pem: String) {
        if let Ok(mut c) = self.ca_pem.lock() {
            *c = Some(pem);
        }
    }

    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.lock().ok().and_then(|c| c.clone())
    }

    pub fn count_drop(&self, r: DropReason) {
        let c = match r {
            DropReason::Spoofed => &self.stats.dropped_spoofed,
            DropReason::Malformed | DropReason::Oversized => &self.stats.dropped_malformed,
            DropReason::Ipv6 => &self.stats.dropped_ipv6,
            DropReason::Fragment | DropReason::Unsupported => &self.stats.dropped_other,
        };
        add(c, 1);
    }

    pub fn log(&self, e: LogEntry) {
        if let Ok(mut f) = self.file.lock()
            && let Some(lf) = f.as_mut()
            && let Ok(mut line) = serde_json::to_vec(&e)
        {
            line.push(b'\n');
            if lf.size + line.len() as u64 > LOG_FILE_MAX {
                let _ = lf.rotate();
            }
            if lf.file.write_all(&line).is_ok() {
                lf.size += line.len() as u64;
            }
        }
        if let Ok(mut l) = self.log.lock() {
            if l.len() >= LOG_KEEP {
                l.pop_front();
            }
            l.push_back(e);
        }
    }

    pub fn entries(&self) -> Vec<LogEntry> {
        self.log
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn add_port(&self, p: BoundPort) {
        if let Ok(mut ports) = self.ports.lock() {
            ports.push(p);
        }
    }

    pub fn ports(&self) -> Vec<BoundPort> {
        self.ports.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The answer to one control request.
    pub fn answer(&self, request: &str) -> String {
        let v = match request.trim() {
            "stats" => serde_json::to_value(self.stats.snapshot()),
            "log" => serde_json::to_value(self.entries()),
            "ports" => serde_json::to_value(self.ports()),
            // The CA certificate (public) as a JSON string, or null without secrets.
            "ca" => serde_json::to_value(self.ca_pem()),
            other => Ok(serde_json::json!({
                "error": format!("unknown request {other:?}; valid: stats, log, ports, ca")
            })),
        };
        v.map(|v| v.to_string()).unwrap_or_else(|e| e.to_string())
    }
}

/// Serve the control socket until the process exits. Only this uid may connect.
pub async fn serve(listener: tokio::net::UnixListener, shared: std::sync::Arc<Shared>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    loop {
        let Some(stream) = crate::engine::accept_or_wait(listener.accept().await).await else {
            continue;
        };
        if stream.peer_cred().map(|c| c.uid()).ok() != Some(me) {
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut line = String::new();
            let mut rd = tokio::io::BufReader::new(rd).take(MAX_REQUEST as u64);
            if rd.read_line(&mut line).await.is_err() {
                return;
            }
            let mut answer = shared.answer(&line);
            answer.push('\n');
            let _ = wr.write_all(answer.as_bytes()).await;
        });
    }
}

/// Ask a running helper (blocking; for the library and tests).
pub fn request(socket: &Path, what: &str) -> std::io::Result<String> {
    use std::io::{BufRead, BufReader};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    s.write_all(format!("{what}\n").as_bytes())?;
    let mut out = String::new();
    BufReader::new(s).read_line(&mut out)?;
    Ok(out)
}

/// Read the decision log file (and its previous generation), oldest first.
pub fn read_log_file(path: &Path) -> Vec<LogEntry> {
    let mut out = Vec::new();
    for p in [path.with_extension("jsonl.1"), path.to_path_buf()] {
        if let Ok(text) = std::fs::read_to_string(&p) {
            out.extend(
                text.lines()
                    .filter_map(|l| serde_json::from_str::<LogEntry>(l).ok()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_file_is_capped_and_rotated_once() {
        let dir = std::env::temp_dir().join(format!("bxnet-log-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("net.jsonl");
        let s = Shared::new(Some(&path));
        for i in 0..30_000u32 {
            s.log(LogEntry::dns(&format!("n{i}.test"), "deny", "x", None));
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= LOG_FILE_MAX, "{size}");
        let old = std::fs::metadata(path.with_extension("jsonl.1"))
            .unwrap()
            .len();
        assert!(old <= LOG_FILE_MAX);
        let all = read_log_file(&path);
        assert_eq!(
            all.last().unwrap().name.as_deref(),
            Some("n29999.test"),
            "newest entry last"
        );
        assert_eq!(s.entries().len(), LOG_KEEP);
        assert!(s.answer("bogus").contains("valid: stats, log, ports"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
