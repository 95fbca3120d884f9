//! Listing one directory inside a box ([`LiteBox::list_dir`]).
//!
//! The agent opens the directory inside the container root (links and `..` on the way
//! resolve as the container sees them, and never leave it) and describes each entry as
//! lstat sees it: a link is reported with its target, never followed.
//!
//! Its reply is guest-controlled, so it is checked before anyone sees it: a name that
//! is empty, `.` or `..`, contains `/` or NUL or is longer than any filesystem allows,
//! or an over-long link target, makes the whole reply an error (an honest agent never
//! sends one); the entries are sorted and deduplicated here, cut to what was asked,
//! and mode bits beyond `0o7777` are dropped. Names and link targets that are not UTF-8
//! are converted lossily (each invalid sequence becomes U+FFFD), so such a name shows
//! what it is but cannot be used to name the entry again.

use boxlite_protocol::v1;
use serde::{Deserialize, Serialize};

use super::LiteBox;
use crate::portal::PortalError;

/// The entries a listing returns when asked for 0.
pub const DEFAULT_MAX_ENTRIES: u32 = 1000;
/// The most entries a listing returns, whatever is asked.
pub const MAX_ENTRIES: u32 = 10_000;
/// The longest path accepted (`PATH_MAX`).
const MAX_PATH: usize = 4096;
/// The longest name accepted from the agent, in bytes: FUSE's bound (local
/// filesystems stop at 255).
const MAX_NAME: usize = 1024;
/// The longest link target accepted from the agent, in bytes (`PATH_MAX`).
const MAX_LINK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The path is not one a box can list: relative, with a NUL byte, too long, or
    /// refused by the agent (a loop of links, say).
    #[error("path {path:?} to list: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("listing {path:?} in box {id}: {message}")]
    NotFound {
        id: String,
        path: String,
        message: String,
    },
    /// The path names a file (or a FIFO, a socket, a device), or goes through one.
    #[error("listing {path:?} in box {id}: {message}")]
    NotADirectory {
        id: String,
        path: String,
        message: String,
    },
    /// The agent could not list the directory for another reason (permission denied
    /// on a volume, an I/O error).
    #[error("listing {path:?} in box {id}: {message}")]
    InBox {
        id: String,
        path: String,
        message: String,
    },
    /// The agent's reply breaks the protocol; see the module documentation.
    #[error("listing {path:?} in box {id}: the agent's reply is malformed: {reason}")]
    BadReply {
        id: String,
        path: String,
        reason: String,
    },
    #[error("listing {path:?} in box {id}")]
    Agent {
        id: String,
        path: String,
        #[source]
        source: PortalError,
    },
}

/// What an entry is, as lstat sees it (a link is a link, whatever it points to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A FIFO, a socket, a device node, or an entry that could not be examined.
    Other,
}

/// One entry of a directory in a box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The name, converted lossily if it is not UTF-8.
    pub name: String,
    pub kind: EntryKind,
    /// Bytes: a file's length, a link's target length.
    pub size: u64,
    /// Permission bits with setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Last modification, in seconds since the Unix epoch.
    pub mtime: i64,
    /// A symlink's target as stored (converted lossily if it is not UTF-8); `None` for
    /// other kinds, and for a link whose target could not be read.
    #[serde(default)]
    pub link_target: Option<String>,
    pub uid: u32,
    pub gid: u32,
}

/// A directory's entries, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirListing {
    /// The path as it was asked for.
    pub path: String,
    pub entries: Vec<DirEntry>,
    /// The directory holds more entries than these.
    pub truncated: bool,
}

impl LiteBox {
    /// List the directory `path` of the box (absolute, in the container root): at most
    /// `max_entries` entries, the first by name ([`DEFAULT_MAX_ENTRIES`] for 0, never
    /// more than [`MAX_ENTRIES`]), each described as lstat sees it. Links on the way to
    /// the directory, the directory itself included, are followed inside the container
    /// root, as `ls /link/` does; `..` never leaves the root. A box that is not running
    /// is started, as for a copy.
    ///
    /// Errors: [`ListError::InvalidPath`] for a path that is relative, has a NUL byte or
    /// is longer than 4096 bytes, [`ListError::NotFound`] when it does not exist,
    /// [`ListError::NotADirectory`] when it names a file.
    pub async fn list_dir(&self, path: &str, max_entries: u32) -> Result<DirListing, crate::Error> {
        check_path(path)?;
        let cap = match max_entries {
            0 => DEFAULT_MAX_ENTRIES,
            n => n.min(MAX_ENTRIES),
        };
        let (client, seen) = self.client_seen().await?;
        let reply = match client.list_dir(path, cap).await {
            Err(e) => match self.again_after_auto_pause(&e, seen).await? {
                Some((client, _)) => client.list_dir(path, cap).await,
                None => Err(e),
            },
            r => r,
        }
        .map_err(|e| agent_error(&self.id, path, e))?;
        let (entries, truncated) = checked_entries(reply, cap).map_err(|reason| {
            tracing::debug!(box_id = %self.id, path, %reason, "malformed ListDir reply");
            ListError::BadReply {
                id: self.id.clone(),
                path: path.to_string(),
                reason,
            }
        })?;
        Ok(DirListing {
            path: path.to_string(),
            entries,
            truncated,
        })
    }
}

fn check_path(path: &str) -> Result<(), ListError> {
    let reason = if !path.starts_with('/') {
        "must be absolute"
    } else if path.contains('\0') {
        "contains a NUL byte"
    } else if path.len() > MAX_PATH {
        "is longer than 4096 bytes"
    } else {
        return Ok(());
    };
    Err(ListError::InvalidPath {
        path: path.to_string(),
        reason: reason.to_string(),
    })
}

fn agent_error(id: &str, path: &str, e: PortalError) -> ListError {
    let (id, path) = (id.to_string(), path.to_string());
    let (code, message) = match e {
        PortalError::Rpc { code, message, .. }
            if !matches!(code, tonic::Code::Unavailable | tonic::Code::Cancelled) =>
        {
            (code, message)
        }
        source => return ListError::Agent { id, path, source },
    };
    let message = match code {
        tonic::Code::Unimplemented => {
            "the box's agent predates directory listing; restart the box".to_string()
        }
        _ if message.is_empty() => format!("the agent answered {code:?}"),
        _ => message,
    };
    match code {
        tonic::Code::NotFound => ListError::NotFound { id, path, message },
        tonic::Code::FailedPrecondition => ListError::NotADirectory { id, path, message },
        tonic::Code::InvalidArgument => ListError::InvalidPath {
            path,
            reason: message,
        },
        _ => ListError::InBox { id, path, message },
    }
}

/// The reply's entries, checked, sorted by name and cut to `cap`, and whether the
/// directory holds more; or why the reply is refused.
fn checked_entries(reply: v1::ListDirResponse, cap: u32) -> Result<(Vec<DirEntry>, bool), String> {
    let mut checked = reply
        .entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| checked_entry(e).map_err(|why| format!("entry {i}: {why}")))
        .collect::<Result<Vec<_>, _>>()?;
    // Sorted and unique by the name's bytes, whatever order the agent used.
    checked.sort_by(|a, b| a.0.cmp(&b.0));
    checked.dedup_by(|a, b| a.0 == b.0);
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let truncated = reply.truncated || checked.len() > cap;
    checked.truncate(cap);
    Ok((checked.into_iter().map(|(_, e)| e).collect(), truncated))
}

/// One entry with its raw name, or what is wrong with it.
fn checked_entry(e: v1::DirEntry) -> Result<(Vec<u8>, DirEntry), String> {
    let name = e.name;
    if name.is_empty() || name == b"." || name == b".." {
        return Err(format!("the name {:?} is not a name", lossy(&name)));
    }
    if name.len() > MAX_NAME {
        return Err(format!("a name of {} bytes", name.len()));
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(format!("the name {:?} contains '/' or NUL", lossy(&name)));
    }
    let kind = match v1::EntryKind::try_from(e.kind) {
        Ok(v1::EntryKind::File) => EntryKind::File,
        Ok(v1::EntryKind::Dir) => EntryKind::Dir,
        Ok(v1::EntryKind::Symlink) => EntryKind::Symlink,
        Ok(v1::EntryKind::Other) | Err(_) => EntryKind::Other,
    };
    let target = e.link_target;
    if target.len() > MAX_LINK || target.contains(&0) {
        return Err(format!(
            "the link target of {:?} ({} bytes) is too long or contains NUL",
            lossy(&name),
            target.len()
        ));
    }
    let link_target = (kind == EntryKind::Symlink && !target.is_empty()).then(|| lossy(&target));
    let entry = DirEntry {
        name: lossy(&name),
        kind,
        size: e.size,
        mode: e.mode & 0o7777,
        mtime: e.mtime,
        link_target,
        uid: e.uid,
        gid: e.gid,
    };
    Ok((name, entry))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &[u8], kind: v1::EntryKind) -> v1::DirEntry {
        v1::DirEntry {
            name: name.to_vec(),
            kind: kind.into(),
            size: 5,
            mode: 0o644,
            mtime: 1_700_000_000,
            ..Default::default()
        }
    }

    fn reply(entries: Vec<v1::DirEntry>) -> v1::ListDirResponse {
        v1::ListDirResponse {
            entries,
            truncated: false,
        }
    }

    fn refused(e: v1::DirEntry) -> String {
        checked_entries(reply(vec![e]), 10).unwrap_err()
    }

    #[test]
    fn an_honest_reply_keeps_every_field() {
        let mut link = entry(b"l", v1::EntryKind::Symlink);
        link.link_target = b"/etc".to_vec();
        link.uid = 7;
        link.gid = 8;

        let (entries, truncated) = checked_entries(reply(vec![link]), 10).unwrap();

        assert_eq!(
            entries,
            [DirEntry {
                name: "l".into(),
                kind: EntryKind::Symlink,
                size: 5,
                mode: 0o644,
                mtime: 1_700_000_000,
                link_target: Some("/etc".into()),
                uid: 7,
                gid: 8,
            }]
        );
        assert!(!truncated);
    }

    #[test]
    fn names_that_are_not_single_components_are_refused() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"../etc", b"a\0b"] {
            let why = refused(entry(bad, v1::EntryKind::File));

            assert!(why.starts_with("entry 0: "), "{why}");
        }
    }

    #[test]
    fn absurdly_long_names_and_link_targets_are_refused() {
        let mut long_link = entry(b"l", v1::EntryKind::Symlink);
        long_link.link_target = vec![b'a'; MAX_LINK + 1];
        let mut nul_link = entry(b"l", v1::EntryKind::Symlink);
        nul_link.link_target = b"a\0b".to_vec();

        let name = refused(entry(&[b'a'; MAX_NAME + 1], v1::EntryKind::File));
        let link = refused(long_link);
        let nul = refused(nul_link);

        assert!(name.contains("1025 bytes"), "{name}");
        assert!(link.contains("4097 bytes"), "{link}");
        assert!(nul.contains("NUL"), "{nul}");
    }

    #[test]
    fn more_entries_than_asked_are_cut_and_marked_truncated() {
        let many = (0..50)
            .map(|i| entry(format!("f{i:02}").as_bytes(), v1::EntryKind::File))
            .collect();

        let (entries, truncated) = checked_entries(reply(many), 10).unwrap();

        assert_eq!(entries.len(), 10);
        assert_eq!(entries[9].name, "f09");
        assert!(truncated);
    }

    #[test]
    fn entries_come_out_sorted_and_unique_whatever_the_agent_sent() {
        let sent = [&b"b"[..], b"a", b"b", b"c"]
            .into_iter()
            .map(|n| entry(n, v1::EntryKind::File))
            .collect();

        let (entries, _) = checked_entries(reply(sent), 10).unwrap();

        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn odd_fields_are_tamed_rather_than_trusted() {
        let mut file = entry(b"f", v1::EntryKind::File);
        file.mode = 0o170_755;
        file.link_target = b"/nowhere".to_vec();
        let mut unknown = entry(b"u", v1::EntryKind::File);
        unknown.kind = 99;
        let mut unread = entry(b"v", v1::EntryKind::Symlink);
        unread.link_target.clear();

        let (e, _) = checked_entries(reply(vec![file, unknown, unread]), 10).unwrap();

        assert_eq!((e[0].mode, e[0].link_target.as_deref()), (0o755, None));
        assert_eq!(e[1].kind, EntryKind::Other);
        assert_eq!(
            (e[2].kind, e[2].link_target.as_deref()),
            (EntryKind::Symlink, None)
        );
    }

    #[test]
    fn non_utf8_names_and_targets_are_converted_lossily() {
        let mut link = entry(b"caf\xe9", v1::EntryKind::Symlink);
        link.link_target = b"/t\xff".to_vec();

        let (e, _) = checked_entries(reply(vec![link]), 10).unwrap();

        assert_eq!(e[0].name, "caf\u{fffd}");
        assert_eq!(e[0].link_target.as_deref(), Some("/t\u{fffd}"));
    }

    #[test]
    fn host_refuses_paths_the_box_cannot_list() {
        let long = format!("/{}", "a".repeat(MAX_PATH));

        for bad in ["", "tmp", "./tmp", "/tmp\0x", long.as_str()] {
            let err = check_path(bad).unwrap_err();

            assert!(matches!(err, ListError::InvalidPath { .. }), "{bad:?}");
        }
        assert!(check_path("/").is_ok());
    }

    #[test]
    fn agent_statuses_become_typed_errors() {
        let rpc = |code| PortalError::Rpc {
            op: "ListDir",
            code,
            message: "m".into(),
        };
        let err = |code| agent_error("id", "/p", rpc(code));

        assert!(matches!(
            err(tonic::Code::NotFound),
            ListError::NotFound { .. }
        ));
        assert!(matches!(
            err(tonic::Code::FailedPrecondition),
            ListError::NotADirectory { .. }
        ));
        assert!(matches!(
            err(tonic::Code::InvalidArgument),
            ListError::InvalidPath { .. }
        ));
        assert!(matches!(
            err(tonic::Code::Internal),
            ListError::InBox { .. }
        ));
        assert!(matches!(
            err(tonic::Code::Unavailable),
            ListError::Agent { .. }
        ));
    }

    #[test]
    fn entry_kinds_serialize_in_lowercase() {
        let json = serde_json::to_string(&[EntryKind::File, EntryKind::Symlink]).unwrap();

        assert_eq!(json, r#"["file","symlink"]"#);
    }
}
