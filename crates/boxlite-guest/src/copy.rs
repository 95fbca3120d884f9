//! Copying into and out of the container root: where a copy lands, and the mapping of
//! archive errors onto protocol status codes. The tar work itself is `boxlite-archive`,
//! resolving every path inside the container root, so absolute links mean container
//! paths and nothing can reach the agent's own filesystem.

use std::os::fd::{AsFd, OwnedFd};

use boxlite_archive::{ArchiveError, ChannelReader, Mapping, Resolve, Summary, UnpackOptions};
use boxlite_protocol::v1;
use tokio::sync::mpsc;
use tonic::Status;

pub fn status(e: ArchiveError) -> Status {
    let msg = crate::error_chain(&e);
    match e {
        ArchiveError::NotFound { .. } => Status::not_found(msg),
        ArchiveError::Exists { .. } => Status::already_exists(msg),
        ArchiveError::NotDir { .. } | ArchiveError::IsDir { .. } => {
            Status::failed_precondition(msg)
        }
        ArchiveError::Refused { .. } | ArchiveError::Tar(_) => Status::invalid_argument(msg),
        ArchiveError::Write(_) => Status::aborted(msg),
        // Out of room: the host tells a full disk from other failures by this code.
        ArchiveError::Io { ref source, .. }
            if matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG)
            ) =>
        {
            Status::resource_exhausted(msg)
        }
        ArchiveError::Io { .. } => Status::internal(msg),
    }
}

fn absolute(path: &str) -> Result<(), Status> {
    if !path.starts_with('/') {
        return Err(Status::invalid_argument(format!(
            "path {path:?} in the box must be absolute"
        )));
    }
    if path.contains('\0') {
        return Err(Status::invalid_argument(format!(
            "path {path:?} contains a NUL byte"
        )));
    }
    Ok(())
}

/// Whether `path` exists in the container root and is a directory (links followed
/// inside the root); `None` if it does not exist.
fn dir_kind(root: &OwnedFd, path: &str) -> Result<Option<bool>, Status> {
    match boxlite_archive::fs::open_at(root.as_fd(), path.as_bytes(), libc::O_PATH, Resolve::InRoot)
    {
        Ok(fd) => {
            let st = boxlite_archive::fs::fstat(fd.as_fd())
                .map_err(|e| Status::internal(format!("stat {path:?}: {e}")))?;
            Ok(Some(boxlite_archive::fs::is_dir(&st)))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Err(Status::failed_precondition(
            format!("a component of {path:?} in the box is not a directory"),
        )),
        Err(e) => Err(Status::internal(format!("{path:?} in the box: {e}"))),
    }
}

fn split(path: &str) -> (&str, &str) {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((parent, name)) => (parent, name),
        None => ("/", trimmed),
    }
}

/// Where the entries of a CopyIn archive go: the base directory and the name mapping,
/// following `docker cp`'s rules for the destination.
pub fn plan_copy_in(
    root: &OwnedFd,
    dest: &str,
    mode: v1::CopyInMode,
) -> Result<(Vec<u8>, Mapping), Status> {
    absolute(dest)?;
    let kind = dir_kind(root, dest)?;
    let missing_dir = |what: &str| {
        Status::not_found(format!(
            "destination directory {dest:?} does not exist in the box{what}"
        ))
    };
    match mode {
        v1::CopyInMode::Archive => match kind {
            Some(true) => Ok((dest.as_bytes().to_vec(), Mapping::AsIs)),
            Some(false) => Err(Status::failed_precondition(format!(
                "destination {dest:?} in the box is not a directory"
            ))),
            None => Err(missing_dir("")),
        },
        v1::CopyInMode::Contents => match kind {
            Some(true) => Ok((dest.as_bytes().to_vec(), Mapping::AsIs)),
            Some(false) => Err(Status::failed_precondition(format!(
                "destination {dest:?} in the box is not a directory"
            ))),
            None => {
                let (parent, _) = split(dest);
                if dir_kind(root, parent)? != Some(true) {
                    return Err(Status::not_found(format!(
                        "the parent directory {parent:?} of {dest:?} does not exist in the box"
                    )));
                }
                let parent_fd = boxlite_archive::fs::open_at(
                    root.as_fd(),
                    parent.as_bytes(),
                    libc::O_PATH | libc::O_DIRECTORY,
                    Resolve::InRoot,
                )
                .map_err(|e| Status::internal(format!("{parent:?}: {e}")))?;
                let (_, name) = split(dest);
                boxlite_archive::fs::mkdir_at(parent_fd.as_fd(), name.as_bytes(), 0o755)
                    .map_err(|e| Status::internal(format!("creating {dest:?}: {e}")))?;
                Ok((dest.as_bytes().to_vec(), Mapping::AsIs))
            }
        },
        v1::CopyInMode::Item => match kind {
            Some(true) => Ok((dest.as_bytes().to_vec(), Mapping::AsIs)),
            _ if dest.ends_with('/') => Err(missing_dir("")),
            _ => {
                let (parent, name) = split(dest);
                if dir_kind(root, parent)? != Some(true) {
                    return Err(Status::not_found(format!(
                        "the parent directory {parent:?} of {dest:?} does not exist in the box"
                    )));
                }
                Ok((
                    parent.as_bytes().to_vec(),
                    Mapping::RenameTop(name.as_bytes().to_vec()),
                ))
            }
        },
    }
}

/// Unpack the archive arriving on `rx` under `base`. Entries keep the archive's owners
/// and modes: the host decides them (root for a copied host tree, as `docker cp`).
pub fn unpack_into(
    root: &OwnedFd,
    base: &[u8],
    mapping: Mapping,
    overwrite: bool,
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
) -> Result<Summary, ArchiveError> {
    let opts = UnpackOptions {
        resolve: Resolve::InRoot,
        mapping,
        overwrite,
        preserve_owner: true,
        keep_setid: true,
        allow_devices: true,
        allow_escaping_links: true,
        layer: false,
    };
    let mut reader = ChannelReader::new(rx);
    let r = boxlite_archive::unpack(&mut reader, root.as_fd(), base, &opts);
    // Drain what the host still sends, so its stream ends cleanly with our answer.
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
    r
}

/// The path to archive and the name its top entry gets: its own name, or `.` for a
/// source ending in `/.` (its contents) or for `/`.
pub fn plan_copy_out(
    root: &OwnedFd,
    path: &str,
    follow: bool,
) -> Result<(Vec<u8>, Vec<u8>), Status> {
    absolute(path)?;
    let contents = path.ends_with("/.") || path.trim_end_matches('/').is_empty();
    let flags = if follow {
        libc::O_PATH
    } else {
        libc::O_PATH | libc::O_NOFOLLOW
    };
    match boxlite_archive::fs::open_at(root.as_fd(), path.as_bytes(), flags, Resolve::InRoot) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            return Err(Status::not_found(format!(
                "{path:?} does not exist in the box"
            )));
        }
        Err(e) => return Err(Status::internal(format!("{path:?} in the box: {e}"))),
    }
    let top = if contents {
        b".".to_vec()
    } else {
        split(path).1.as_bytes().to_vec()
    };
    Ok((path.as_bytes().to_vec(), top))
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_names_parent_and_last_component() {
        assert_eq!(split("/a/b"), ("/a", "b"));
        assert_eq!(split("/a/b/"), ("/a", "b"));
        assert_eq!(split("/a"), ("/", "a"));
    }
}
