//! Tar streams for moving files between the host and a box.
//!
//! Both directions use the same two halves:
//! - [`pack`] walks a path below a directory fd and writes a tar stream. It never
//!   follows a symlink unless asked, and then only as the [`Resolve`] policy allows.
//! - [`unpack`] reads a tar stream and creates its entries below a directory fd. Every
//!   path it touches is resolved with `openat2`, so neither `..`, absolute names,
//!   symlinks planted by earlier entries, nor links already on disk can carry a write
//!   outside that directory.
//!
//! The guest runs them against the container root (`Resolve::InRoot`: absolute links
//! mean container paths). The host runs `unpack` against the destination directory of a
//! `copy_out` with `Resolve::Beneath` and the hostile-input options, because what comes
//! out of a box is untrusted.

mod chan;
pub mod fs;
pub mod layers;
mod pack;
mod unpack;

pub use chan::{ChannelReader, ChannelWriter};
pub use fs::Resolve;
pub use pack::{PackOptions, pack};
pub use unpack::{Mapping, Summary, UnpackOptions, unpack};

/// Bytes per chunk when a tar stream crosses a channel.
pub const CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive entry {entry:?} is refused: {reason}")]
    Refused { entry: String, reason: String },
    #[error("{path:?} already exists (overwriting was not allowed)")]
    Exists { path: String },
    #[error("{path:?} does not exist")]
    NotFound { path: String },
    #[error("{path:?} is not a directory")]
    NotDir { path: String },
    #[error("{path:?} is a directory (a recursive copy was not allowed)")]
    IsDir { path: String },
    #[error("{path:?}: {what}")]
    Io {
        path: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the tar stream")]
    Tar(#[source] std::io::Error),
    #[error("writing the tar stream")]
    Write(#[source] std::io::Error),
}

impl ArchiveError {
    pub(crate) fn io(path: &str, what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_string();
        move |source| match source.raw_os_error() {
            Some(libc::ENOENT) => ArchiveError::NotFound { path },
            Some(libc::ENOTDIR) => ArchiveError::NotDir { path },
            Some(libc::EXDEV) | Some(libc::ELOOP) => ArchiveError::Refused {
                entry: path,
                reason: "its path leads outside the destination through a symlink".into(),
            },
            _ => ArchiveError::Io { path, what, source },
        }
    }
}

/// Display form of a path held as bytes.
pub(crate) fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
