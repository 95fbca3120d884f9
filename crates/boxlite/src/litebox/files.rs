//! One file in or out of a box as bytes in memory, for frontends that move small files
//! whole (`boxlite mcp`'s `read_file` and `write_file`). Both ride the copy paths: the
//! guest unpacks and packs with `boxlite-archive`, resolving every path inside the
//! container root, and what comes back is parsed here as hostile (bounded while it
//! streams, only a single regular file accepted).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use super::LiteBox;
use super::copy::{CopyError, CopyOptions, TarPlacement};

/// Tar framing around one file: its header, a long-name header pair, padding and the
/// end blocks, with room to spare.
const TAR_OVERHEAD: u64 = 16 * 1024;

/// Split an absolute file path into its parent directory and its name.
fn parent_and_name(path: &str) -> Result<(&str, &str), CopyError> {
    let bad = |reason| {
        Err(CopyError::BoxPath {
            path: path.to_string(),
            reason,
        })
    };
    if !path.starts_with('/') {
        return bad("it must be absolute");
    }
    if path.contains('\0') {
        return bad("it contains a NUL byte");
    }
    if path.len() > 4096 {
        return bad("it is longer than 4096 bytes");
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.len() != path.len() || trimmed.is_empty() {
        return bad("it names a directory; give a file's path");
    }
    let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if matches!(name, "." | "..") {
        return bad("its last component cannot be . or ..");
    }
    Ok((if parent.is_empty() { "/" } else { parent }, name))
}

/// Collects a tar stream, refusing to grow past `limit` bytes.
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.buf.len() + data.len() > self.limit {
            self.over = true;
            return Poll::Ready(Err(std::io::Error::other("over the size limit")));
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The one regular file a tar stream from the box holds, or why it is not one. `Err` of
/// the outer result: the stream is malformed.
fn only_file(path: &str, tar: &[u8], limit: u64) -> Result<Vec<u8>, CopyError> {
    use std::io::Read;
    let malformed = |e: std::io::Error| CopyError::Stream {
        what: format!("{path} out of the box"),
        source: e,
    };
    let mut archive = tar::Archive::new(std::io::Cursor::new(tar));
    let mut entries = archive.entries().map_err(malformed)?;
    let Some(entry) = entries.next() else {
        return Err(malformed(std::io::Error::other("the box sent no entry")));
    };
    let mut entry = entry.map_err(malformed)?;
    let kind = entry.header().entry_type();
    if !kind.is_file() {
        let found = if kind.is_dir() {
            "directory"
        } else if kind.is_symlink() {
            "symbolic link"
        } else {
            "special file"
        };
        return Err(CopyError::NotAFile {
            path: path.to_string(),
            found,
        });
    }
    let size = entry.header().size().map_err(malformed)?;
    if size > limit {
        return Err(CopyError::TooLarge {
            path: path.to_string(),
            size: Some(size),
            limit,
        });
    }
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry
        .by_ref()
        .take(limit.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(malformed)?;
    if data.len() as u64 != size {
        return Err(malformed(std::io::Error::other(format!(
            "the entry's header says {size} bytes and the stream holds {}",
            data.len()
        ))));
    }
    Ok(data)
}

/// The size a truncated stream's first regular entry claims, if its header arrived.
fn claimed_size(tar: &[u8]) -> Option<u64> {
    let mut archive = tar::Archive::new(std::io::Cursor::new(tar));
    let entry = archive.entries().ok()?.next()?.ok()?;
    entry.header().size().ok()
}

impl LiteBox {
    /// Write `data` as the file `path` of the box (absolute; its directory must exist),
    /// replacing a file there, with permission bits `mode` (e.g. `0o644`), owned by
    /// root. A box that is not running is started first.
    pub async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<(), crate::Error> {
        let (parent, name) = parent_and_name(path)?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(mode & 0o7777);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(super::now_secs());
        let mut b = tar::Builder::new(Vec::with_capacity(data.len() + 2048));
        b.append_data(&mut header, name, data)
            .map_err(|source| CopyError::Stream {
                what: format!("{path} into the box"),
                source,
            })?;
        let tar = b.into_inner().map_err(|source| CopyError::Stream {
            what: format!("{path} into the box"),
            source,
        })?;
        self.copy_in_tar_as(
            std::io::Cursor::new(tar),
            parent,
            TarPlacement::Archive,
            true,
        )
        .await?;
        Ok(())
    }

    /// Read the regular file `path` of the box (absolute; links are followed inside the
    /// box) whole, refusing one larger than `limit` bytes with [`CopyError::TooLarge`].
    /// Memory stays bounded by the limit whatever the box sends.
    pub async fn read_file(&self, path: &str, limit: u64) -> Result<Vec<u8>, crate::Error> {
        parent_and_name(path)?;
        let mut out = Bounded {
            buf: Vec::new(),
            limit: usize::try_from(limit.saturating_add(TAR_OVERHEAD)).unwrap_or(usize::MAX),
            over: false,
        };
        let opts = CopyOptions {
            recursive: false,
            follow_symlinks: true,
            ..Default::default()
        };
        let r = self.copy_out_tar(path, &mut out, &opts).await;
        if out.over {
            return Err(CopyError::TooLarge {
                path: path.to_string(),
                size: claimed_size(&out.buf),
                limit,
            }
            .into());
        }
        // The guest refuses a directory source when not recursive.
        r?;
        Ok(only_file(path, &out.buf, limit)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(kind: tar::EntryType, data: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut h, "f", data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn paths_split_and_bad_ones_are_refused() {
        assert_eq!(parent_and_name("/a/b.txt").unwrap(), ("/a", "b.txt"));
        assert_eq!(parent_and_name("/b").unwrap(), ("/", "b"));
        for p in ["rel", "/", "/a/", "/a/..", "/a/.", "/a\0b", ""] {
            assert!(
                matches!(parent_and_name(p), Err(CopyError::BoxPath { .. })),
                "{p:?}"
            );
        }
        assert!(parent_and_name(&format!("/{}", "a".repeat(5000))).is_err());
    }

    #[test]
    fn only_a_regular_file_within_the_limit_is_read() {
        let t = tar_of(tar::EntryType::Regular, b"hello");
        assert_eq!(only_file("/f", &t, 5).unwrap(), b"hello");
        assert!(matches!(
            only_file("/f", &t, 4),
            Err(CopyError::TooLarge {
                size: Some(5),
                limit: 4,
                ..
            })
        ));
        let d = tar_of(tar::EntryType::Directory, b"");
        assert!(matches!(
            only_file("/f", &d, 5),
            Err(CopyError::NotAFile {
                found: "directory",
                ..
            })
        ));
        assert!(matches!(
            only_file("/f", &[], 5),
            Err(CopyError::Stream { .. })
        ));
        // A header claiming more than the stream holds is malformed, not a short read.
        let mut lying = t.clone();
        lying.truncate(512 + 2);
        assert!(only_file("/f", &lying, 100).is_err());
        assert_eq!(claimed_size(&t), Some(5));
    }

    #[test]
    fn the_bounded_sink_refuses_past_its_limit() {
        let mut b = Bounded {
            buf: Vec::new(),
            limit: 4,
            over: false,
        };
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(matches!(
            Pin::new(&mut b).poll_write(&mut cx, b"abcd"),
            Poll::Ready(Ok(4))
        ));
        assert!(matches!(
            Pin::new(&mut b).poll_write(&mut cx, b"e"),
            Poll::Ready(Err(_))
        ));
        assert!(b.over);
        assert_eq!(b.buf, b"abcd");
    }
}
