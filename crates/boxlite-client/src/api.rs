//! The API's calls, typed with the server's own wire structs: boxes, executions, copies
//! and metrics. Every id that goes into a path is checked as one segment first, and every
//! id that comes back is checked and cleaned before it is used or shown.

use std::path::Path;

use boxlite::{CopyOptions, HostDestination, HostSource, HostUnpackError};
use boxlite_archive::ArchiveError;
use boxlite_server::boxes::{BoxJson, CreateBox};
use boxlite_server::exec::{ExecRequest, ExecResponse, ExecutionInfo};
use boxlite_server::metrics::{BoxMetrics, RuntimeMetrics};
use futures_util::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use crate::{Body, Client, RemoteError, clean, segment};

/// A copy that failed on the server's side or on the host's.
#[derive(Debug, thiserror::Error)]
pub enum CopyFailed {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The host's half refused (a bad host path, an unsafe archive entry, ...).
    #[error(transparent)]
    Host(#[from] boxlite::CopyError),
    #[error("packing {host} for the copy")]
    Pack {
        host: String,
        #[source]
        source: ArchiveError,
    },
}

/// Create a box; its id.
pub async fn create_box(c: &Client, body: &CreateBox) -> Result<String, RemoteError> {
    #[derive(Deserialize)]
    struct Created {
        box_id: String,
    }
    let body = serde_json::to_value(body).map_err(|e| RemoteError::Malformed {
        what: "creating a box".into(),
        reason: e.to_string(),
    })?;
    let b: Created = c
        .json(
            "creating a box",
            Method::POST,
            &["boxes"],
            &[],
            Body::Json(body),
        )
        .await?;
    segment("box id from the server", &b.box_id)?;
    Ok(clean(&b.box_id))
}

/// A box as the server describes it: its JSON object as sent (for `inspect`).
pub async fn box_value(c: &Client, key: &str) -> Result<Value, RemoteError> {
    let id = segment("box", key)?;
    c.json(
        &format!("getting box {id}"),
        Method::GET,
        &["boxes", id],
        &[],
        Body::None,
    )
    .await
}

/// A box as the server describes it.
pub async fn get_box(c: &Client, key: &str) -> Result<BoxJson, RemoteError> {
    let v = box_value(c, key).await?;
    serde_json::from_value(v).map_err(|e| RemoteError::Malformed {
        what: format!("getting box {key}"),
        reason: e.to_string(),
    })
}

/// Every box the server has, as its JSON objects and the fields read from them.
pub async fn list_boxes(c: &Client) -> Result<Vec<(Value, BoxJson)>, RemoteError> {
    #[derive(Deserialize)]
    struct List {
        boxes: Vec<Value>,
    }
    let list: List = c
        .json("listing boxes", Method::GET, &["boxes"], &[], Body::None)
        .await?;
    let mut out = Vec::with_capacity(list.boxes.len());
    for v in list.boxes {
        let b: BoxJson = serde_json::from_value(v.clone()).map_err(|e| RemoteError::Malformed {
            what: "listing boxes".into(),
            reason: e.to_string(),
        })?;
        out.push((v, b));
    }
    Ok(out)
}

pub async fn start(c: &Client, id: &str) -> Result<(), RemoteError> {
    action(c, id, "start", "starting").await
}

/// Pause a box (its memory saved, its VM ended).
pub async fn pause(c: &Client, id: &str) -> Result<(), RemoteError> {
    action(c, id, "pause", "pausing").await
}

/// Resume a paused box.
pub async fn resume(c: &Client, id: &str) -> Result<(), RemoteError> {
    action(c, id, "resume", "resuming").await
}

/// `POST /boxes/{id}/{verb}` with no body.
async fn action(c: &Client, id: &str, verb: &str, doing: &str) -> Result<(), RemoteError> {
    let id = segment("box", id)?;
    let what = format!("{doing} box {id}");
    c.call(&what, Method::POST, &["boxes", id, verb], &[], Body::None)
        .await
}

/// Stop a box, killing its VM after `timeout` seconds.
pub async fn stop(c: &Client, id: &str, timeout: u64) -> Result<(), RemoteError> {
    let id = segment("box", id)?;
    let what = format!("stopping box {id}");
    let body = serde_json::json!({ "timeout_seconds": timeout });
    c.call(
        &what,
        Method::POST,
        &["boxes", id, "stop"],
        &[],
        Body::Json(body),
    )
    .await
}

/// Remove a box; `force` stops a running one first.
pub async fn remove(c: &Client, id: &str, force: bool) -> Result<(), RemoteError> {
    let id = segment("box", id)?;
    let what = format!("removing box {id}");
    let q: &[(&str, &str)] = if force { &[("force", "true")] } else { &[] };
    c.call(&what, Method::DELETE, &["boxes", id], q, Body::None)
        .await
}

/// Start an execution; its id.
pub async fn start_exec(
    c: &Client,
    box_id: &str,
    body: &ExecRequest,
) -> Result<String, RemoteError> {
    let id = segment("box", box_id)?;
    let what = format!("running a command in box {id}");
    let body = serde_json::to_value(body).map_err(|e| RemoteError::Malformed {
        what: what.clone(),
        reason: e.to_string(),
    })?;
    let s: ExecResponse = c
        .json(
            &what,
            Method::POST,
            &["boxes", id, "exec"],
            &[],
            Body::Json(body),
        )
        .await?;
    segment("execution id from the server", &s.execution_id)?;
    Ok(clean(&s.execution_id))
}

/// An execution's state, and its exit once it has ended.
pub async fn execution(
    c: &Client,
    box_id: &str,
    exec_id: &str,
) -> Result<ExecutionInfo, RemoteError> {
    let b = segment("box", box_id)?;
    let e = segment("execution", exec_id)?;
    c.json(
        &format!("getting execution {e}"),
        Method::GET,
        &["boxes", b, "executions", e],
        &[],
        Body::None,
    )
    .await
}

/// Kill an execution (SIGKILL to its process group).
pub async fn kill(c: &Client, box_id: &str, exec_id: &str) -> Result<(), RemoteError> {
    let b = segment("box", box_id)?;
    let e = segment("execution", exec_id)?;
    c.call(
        &format!("killing execution {e}"),
        Method::DELETE,
        &["boxes", b, "executions", e],
        &[],
        Body::None,
    )
    .await
}

/// Send a signal to an execution.
pub async fn signal(c: &Client, box_id: &str, exec_id: &str, sig: i32) -> Result<(), RemoteError> {
    let b = segment("box", box_id)?;
    let e = segment("execution", exec_id)?;
    c.call(
        &format!("signalling execution {e}"),
        Method::POST,
        &["boxes", b, "executions", e, "signal"],
        &[],
        Body::Json(serde_json::json!({ "signal": sig })),
    )
    .await
}

/// Resize an execution's terminal.
pub async fn resize(
    c: &Client,
    box_id: &str,
    exec_id: &str,
    rows: u16,
    cols: u16,
) -> Result<(), RemoteError> {
    let b = segment("box", box_id)?;
    let e = segment("execution", exec_id)?;
    c.call(
        &format!("resizing execution {e}'s terminal"),
        Method::POST,
        &["boxes", b, "executions", e, "resize"],
        &[],
        Body::Json(serde_json::json!({ "rows": rows, "cols": cols })),
    )
    .await
}

/// What a box uses and has done.
pub async fn box_metrics(c: &Client, box_id: &str) -> Result<BoxMetrics, RemoteError> {
    let b = segment("box", box_id)?;
    c.json(
        &format!("getting box {b}'s metrics"),
        Method::GET,
        &["boxes", b, "metrics"],
        &[],
        Body::None,
    )
    .await
}

/// The server's counts of boxes.
pub async fn runtime_metrics(c: &Client) -> Result<RuntimeMetrics, RemoteError> {
    c.json(
        "getting the server's metrics",
        Method::GET,
        &["metrics"],
        &[],
        Body::None,
    )
    .await
}

/// `PUT` the tar arriving on `rx` at `path` in the box.
pub async fn upload(
    c: &Client,
    key: &str,
    path: &str,
    overwrite: bool,
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<(), RemoteError> {
    let id = segment("box", key)?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (Ok::<_, std::io::Error>(c), rx))
    });
    let overwrite = if overwrite { "true" } else { "false" };
    c.call(
        &format!("copying into box {key} at {path}"),
        Method::PUT,
        &["boxes", id, "files"],
        &[("path", path), ("overwrite", overwrite)],
        Body::Stream(reqwest::Body::wrap_stream(stream)),
    )
    .await
}

/// `GET` a path of the box as a tar stream.
pub async fn download(
    c: &Client,
    key: &str,
    path: &str,
    follow: bool,
) -> Result<reqwest::Response, RemoteError> {
    let id = segment("box", key)?;
    let follow = if follow { "true" } else { "false" };
    c.send(
        &format!("copying {path} out of box {key}"),
        Method::GET,
        &["boxes", id, "files"],
        &[("path", path), ("follow_symlinks", follow)],
        Body::None,
        None,
    )
    .await
}

/// A host file or directory into the box, packed by the library's [`HostSource`] (as
/// `copy_in` packs it: the item under its own name, or a directory's contents for a
/// source ending in `/.`; owned by root).
pub async fn copy_in(
    c: &Client,
    host: &Path,
    key: &str,
    path: &str,
    opts: &CopyOptions,
) -> Result<(), CopyFailed> {
    let (rx, packer) = HostSource::new(host, opts)?.spawn_pack();
    let sent = upload(c, key, path, opts.overwrite, rx).await;
    let packed = match packer.await {
        Ok(r) => r,
        Err(e) => Err(ArchiveError::Write(std::io::Error::other(e))),
    };
    match (packed, sent) {
        (Ok(()), Ok(())) => Ok(()),
        // The server's answer explains a stream it stopped reading.
        (Err(ArchiveError::Write(_)), Err(e)) | (Ok(()), Err(e)) => Err(e.into()),
        (Err(source), _) => Err(CopyFailed::Pack {
            host: host.display().to_string(),
            source,
        }),
    }
}

/// A path of the box to the host, placed and unpacked by the library's
/// [`HostDestination`], as `copy_out` places it: below the destination, hostile entries
/// refused, nothing left behind by a refused copy.
pub async fn copy_out(
    c: &Client,
    key: &str,
    box_path: &str,
    host: &Path,
    opts: &CopyOptions,
) -> Result<(), CopyFailed> {
    let what = format!("{box_path} out of box {key} to {}", host.display());
    let dest = HostDestination::plan(box_path, host, opts)?;
    let resp = download(c, key, dest.source(), opts.follow_symlinks).await?;
    let chunks = resp.bytes_stream().map(|r| r.map(|b| b.to_vec()));
    match dest.unpack(&what, chunks).await {
        Ok(_) => Ok(()),
        Err(HostUnpackError::Source(e)) => Err(RemoteError::Transport {
            what: format!("copying {what}"),
            url: c.ep.shown(),
            source: e.without_url(),
        }
        .into()),
        Err(HostUnpackError::Copy(e)) => Err(e.into()),
    }
}

/// A snapshot as the server describes it (BoxLite's `Snapshot`, whose fields the
/// library's description shares, and whether it holds memory).
pub type Snapshot = boxlite::SnapshotInfo;

/// Take a snapshot of box `id`.
pub async fn create_snapshot(
    c: &Client,
    id: &str,
    name: &str,
    disk_only: bool,
) -> Result<Snapshot, RemoteError> {
    let id = segment("box", id)?;
    let body = serde_json::json!({ "name": name, "disk_only": disk_only });
    c.json(
        &format!("taking snapshot {name:?} of box {id}"),
        Method::POST,
        &["boxes", id, "snapshots"],
        &[],
        Body::Json(body),
    )
    .await
}

/// Box `id`'s snapshots.
pub async fn list_snapshots(c: &Client, id: &str) -> Result<Vec<Snapshot>, RemoteError> {
    #[derive(Deserialize)]
    struct List {
        snapshots: Vec<Snapshot>,
    }
    let id = segment("box", id)?;
    let l: List = c
        .json(
            &format!("listing the snapshots of box {id}"),
            Method::GET,
            &["boxes", id, "snapshots"],
            &[],
            Body::None,
        )
        .await?;
    Ok(l.snapshots)
}

/// Snapshot `name` of box `id`.
pub async fn get_snapshot(c: &Client, id: &str, name: &str) -> Result<Snapshot, RemoteError> {
    let id = segment("box", id)?;
    let n = segment("snapshot", name)?;
    c.json(
        &format!("getting snapshot {n} of box {id}"),
        Method::GET,
        &["boxes", id, "snapshots", n],
        &[],
        Body::None,
    )
    .await
}

/// Remove snapshot `name` of box `id`.
pub async fn remove_snapshot(c: &Client, id: &str, name: &str) -> Result<(), RemoteError> {
    let id = segment("box", id)?;
    let n = segment("snapshot", name)?;
    c.call(
        &format!("removing snapshot {n} of box {id}"),
        Method::DELETE,
        &["boxes", id, "snapshots", n],
        &[],
        Body::None,
    )
    .await
}

/// Restore box `id` to its snapshot `name`.
pub async fn restore_snapshot(c: &Client, id: &str, name: &str) -> Result<(), RemoteError> {
    let id = segment("box", id)?;
    let n = segment("snapshot", name)?;
    c.call(
        &format!("restoring box {id} to snapshot {n}"),
        Method::POST,
        &["boxes", id, "snapshots", n, "restore"],
        &[],
        Body::None,
    )
    .await
}

/// Clone box `id` (or its snapshot); the clone's id.
pub async fn clone_box(
    c: &Client,
    id: &str,
    name: Option<&str>,
    snapshot: Option<&str>,
) -> Result<String, RemoteError> {
    #[derive(Deserialize)]
    struct Created {
        box_id: String,
    }
    let id = segment("box", id)?;
    let body = serde_json::json!({ "name": name, "snapshot": snapshot });
    let b: Created = c
        .json(
            &format!("cloning box {id}"),
            Method::POST,
            &["boxes", id, "clone"],
            &[],
            Body::Json(body),
        )
        .await?;
    segment("box id from the server", &b.box_id)?;
    Ok(clean(&b.box_id))
}
