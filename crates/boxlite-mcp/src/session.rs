//! Which boxes are whose, and their removal when a session ends.
//!
//! A box created through MCP carries three labels:
//! - [`LABEL_SESSION`]: the session that made it;
//! - [`LABEL_SERVER`]: the server process (`PID-STARTTIME`, so a reused pid is not
//!   mistaken for it);
//! - [`LABEL_REMOVE`]: `session-end` (removed when the session ends) or `never` (kept).
//!
//! A session removes its boxes when it ends (stdin closed, HTTP session deleted or
//! idle, server stopped). A server killed before it could do so leaves them labelled;
//! the next `boxlite mcp` on the same home removes boxes whose server is gone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxlite::{BoxInfo, Boxlite, LiteBox};
use tokio_util::task::TaskTracker;

use crate::McpConfig;

/// The session that created a box.
pub const LABEL_SESSION: &str = "boxlite.mcp.session";
/// The server process that created it: `PID-STARTTIME`.
pub const LABEL_SERVER: &str = "boxlite.mcp.server";
/// `session-end` or `never`.
pub const LABEL_REMOVE: &str = "boxlite.mcp.remove";

const REMOVE_AT_END: &str = "session-end";
const REMOVE_NEVER: &str = "never";

/// What every session of one server shares.
#[derive(Debug)]
pub struct Shared {
    pub rt: Boxlite,
    pub cfg: McpConfig,
    /// This process, as [`LABEL_SERVER`] names it.
    pub server: String,
    /// Bounds the tool calls in flight.
    pub calls: tokio::sync::Semaphore,
    cleanups: TaskTracker,
}

impl Shared {
    pub fn new(rt: Boxlite, cfg: McpConfig) -> Arc<Shared> {
        let calls = tokio::sync::Semaphore::new(cfg.max_concurrent_calls.max(1));
        Arc::new(Shared {
            rt,
            cfg,
            server: process_token(std::process::id())
                .unwrap_or_else(|| format!("{}-{}", std::process::id(), rand::random::<u64>())),
            calls,
            cleanups: TaskTracker::new(),
        })
    }

    /// Remove the boxes of servers that are gone without removing them (killed).
    pub async fn sweep_orphans(&self) {
        self.remove_due(
            |server| server != self.server && !server_alive(server),
            "gone",
        )
        .await;
    }

    /// Remove the boxes due for removal at their session's end whose server (the
    /// [`LABEL_SERVER`] value) `owner` accepts.
    async fn remove_due(&self, owner: impl Fn(&str) -> bool, whose: &str) {
        let Ok(list) = self.rt.list().await else {
            return;
        };
        let due: Vec<String> = list
            .iter()
            .filter(|b| {
                b.config.labels.get(LABEL_REMOVE).map(String::as_str) == Some(REMOVE_AT_END)
                    && b.config.labels.get(LABEL_SERVER).is_some_and(|s| owner(s))
            })
            .map(|b| b.id.clone())
            .collect();
        if !due.is_empty() {
            tracing::info!(
                count = due.len(),
                whose,
                "removing boxes of ended MCP sessions"
            );
            remove_all(&self.rt, due).await;
        }
    }

    /// Wait (at most `limit`) for the sessions' removals, then remove whatever box of
    /// this server is still due for removal: a session whose handler had not been
    /// dropped yet, or one dropped without a runtime to clean up on.
    pub async fn wait_cleanups(&self, limit: Duration) {
        self.cleanups.close();
        let _ = tokio::time::timeout(limit, self.cleanups.wait()).await;
        if !self.cfg.keep_boxes {
            self.remove_due(|server| server == self.server, "this server's")
                .await;
        }
    }
}

/// Remove boxes (forcefully: they may run) all at once; failures are logged.
async fn remove_all(rt: &Boxlite, ids: Vec<String>) {
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        let rt = rt.clone();
        set.spawn(async move {
            let r = match rt.get(&id).await {
                Ok(b) => b.remove(true).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => tracing::info!(box_id = %id, "removed a box of an ended MCP session"),
                Err(e) if e.kind() == boxlite::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(box_id = %id, error = %boxlite::error_chain(&e), "removing a box of an ended MCP session"),
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// `PID-STARTTIME` of a live process (start time in clock ticks since boot, field 22
/// of `/proc/PID/stat`).
fn process_token(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past its end.
    let after = &stat[stat.rfind(')')? + 1..];
    let start = after.split_whitespace().nth(19)?;
    Some(format!("{pid}-{start}"))
}

/// Whether the server a [`LABEL_SERVER`] value names still runs.
fn server_alive(token: &str) -> bool {
    let Some(pid) = token
        .split_once('-')
        .and_then(|(p, _)| p.parse::<u32>().ok())
    else {
        return false;
    };
    process_token(pid).as_deref() == Some(token)
}

/// One MCP session: the boxes it created, and its `run_code` box.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    shared: Arc<Shared>,
    boxes: Mutex<Vec<String>>,
    /// The box `run_code` uses when it is given none.
    pub code_box: tokio::sync::Mutex<Option<String>>,
    /// Bounds this session's tool calls in flight.
    pub calls: tokio::sync::Semaphore,
    /// Boxes being made (counted against the limit until they are added).
    making: Mutex<usize>,
    ended: std::sync::atomic::AtomicBool,
}

/// Room for one box being made; released when dropped.
#[derive(Debug)]
pub struct Room<'a>(&'a Session);

impl Drop for Room<'_> {
    fn drop(&mut self) {
        let mut n = self.0.making.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
    }
}

impl Session {
    pub fn new(shared: Arc<Shared>) -> Arc<Session> {
        Arc::new(Session {
            id: format!("{:016x}", rand::random::<u64>()),
            boxes: Mutex::new(Vec::new()),
            code_box: tokio::sync::Mutex::new(None),
            calls: tokio::sync::Semaphore::new(shared.cfg.max_session_calls.max(1)),
            making: Mutex::new(0),
            ended: false.into(),
            shared,
        })
    }

    pub fn max_calls(&self) -> usize {
        self.shared.cfg.max_session_calls
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn boxes(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.boxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The labels a box made by this session carries.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let remove = if self.shared.cfg.keep_boxes {
            REMOVE_NEVER
        } else {
            REMOVE_AT_END
        };
        BTreeMap::from([
            (LABEL_SESSION.to_string(), self.id.clone()),
            (LABEL_SERVER.to_string(), self.shared.server.clone()),
            (LABEL_REMOVE.to_string(), remove.to_string()),
        ])
    }

    /// Room for one more box, or why not: within this session's limit (boxes it holds
    /// that still exist, and boxes being made) and the server's.
    pub async fn reserve(&self) -> Result<Room<'_>, String> {
        if self.is_ended() {
            return Err("invalid_state: this session has ended".into());
        }
        let all = self
            .shared
            .rt
            .list()
            .await
            .map_err(|e| boxlite::error_chain(&e))?;
        let live: Vec<&BoxInfo> = all
            .iter()
            .filter(|b| b.config.labels.get(LABEL_SERVER) == Some(&self.shared.server))
            .collect();
        let mut making = self.making.lock().unwrap_or_else(|p| p.into_inner());
        let mut mine = self.boxes();
        // Boxes removed behind the session's back (the CLI, another session) no longer
        // count.
        mine.retain(|id| live.iter().any(|b| &b.id == id));
        let max = self.shared.cfg.max_boxes;
        if mine.len() + *making >= max {
            return Err(format!(
                "resource_exhausted: this session already has {} boxes, its limit; remove one with remove_box first",
                mine.len() + *making
            ));
        }
        let server_max = self.shared.cfg.max_server_boxes;
        if live.len() >= server_max {
            return Err(format!(
                "resource_exhausted: this server already runs {} boxes for its sessions, its limit",
                live.len()
            ));
        }
        *making += 1;
        Ok(Room(self))
    }

    pub fn add(&self, id: &str) {
        self.boxes().push(id.to_string());
    }

    pub fn forget(&self, id: &str) {
        self.boxes().retain(|b| b != id);
    }

    pub fn owns(&self, id: &str) -> bool {
        self.boxes().iter().any(|b| b == id)
    }

    /// Whether a tool may touch this box: one made through MCP, or any with
    /// [`McpConfig::all_boxes`].
    pub fn may_use(&self, info: &BoxInfo) -> bool {
        self.shared.cfg.all_boxes || info.config.labels.contains_key(LABEL_SESSION)
    }

    /// End the session: remove its boxes unless the server keeps them. Idempotent.
    pub async fn end(&self) {
        let ids = self.finish();
        if ids.is_empty() {
            return;
        }
        tracing::info!(session = %self.id, boxes = ids.len(), "MCP session ended: removing its boxes");
        remove_all(&self.shared.rt, ids).await;
    }

    /// Mark the session ended and take the boxes to remove: none if it had ended
    /// already or the server keeps boxes.
    fn finish(&self) -> Vec<String> {
        if self.ended.swap(true, std::sync::atomic::Ordering::SeqCst) || self.shared.cfg.keep_boxes
        {
            return Vec::new();
        }
        std::mem::take(&mut *self.boxes())
    }

    /// Resolve a box argument: by id, name or id prefix, within what the session may
    /// use.
    pub async fn get(&self, key: &str) -> Result<(LiteBox, BoxInfo), boxlite::Error> {
        let b = self.shared.rt.get(key).await?;
        let info = b.info().await?;
        if !self.may_use(&info) {
            return Err(boxlite::Error::InvalidOption(format!(
                "box {key:?} was not created through MCP; this server only reaches its own boxes (start it with --all-boxes to reach every box)"
            )));
        }
        Ok((b, info))
    }
}

impl Drop for Session {
    /// An HTTP session ends by dropping its handler: DELETE, idle timeout, or the
    /// server stopping. Its removals run on the runtime, tracked so the server waits.
    fn drop(&mut self) {
        let ids = self.finish();
        if ids.is_empty() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            // Nothing to run on: the server's last sweep (wait_cleanups) removes them.
            return;
        }
        let rt = self.shared.rt.clone();
        let session = self.id.clone();
        self.shared.cleanups.spawn(async move {
            tracing::info!(%session, boxes = ids.len(), "MCP session ended: removing its boxes");
            remove_all(&rt, ids).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_token_names_a_live_process_and_only_it() {
        let me = process_token(std::process::id()).unwrap();
        assert!(server_alive(&me));
        let (pid, start) = me.split_once('-').unwrap();
        assert!(!server_alive(&format!(
            "{pid}-{}",
            start.parse::<u64>().unwrap() + 1
        )));
        assert!(!server_alive("garbage"));
        assert!(!server_alive("-1"));
        // pid 0 has no /proc entry.
        assert!(!server_alive("0-1"));
    }
}
