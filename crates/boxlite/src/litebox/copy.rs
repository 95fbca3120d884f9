//! Moving files between the host and a box as tar streams.
//!
//! The host packs and the agent unpacks (`copy_in`), or the agent packs and the host
//! unpacks (`copy_out`), with `boxlite-archive` on both sides. Data flows through
//! bounded channels, so memory stays flat whatever the size. What comes out of a box is
//! hostile: the host unpacks it below the destination with `RESOLVE_BENEATH`, refuses
//! `..`, absolute names, links that lead out, hard links out and device nodes, and drops
//! setuid bits.

use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use boxlite_archive::{ArchiveError, ChannelReader, ChannelWriter, Mapping, Resolve};
use boxlite_protocol::v1;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::LiteBox;
use crate::portal::PortalError;

/// Channel depth, in 64 KiB chunks, between a tar stream and its RPC.
const DEPTH: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("host path {path}: {reason}")]
    HostPath { path: PathBuf, reason: String },
    #[error("copying {what}")]
    Archive {
        what: String,
        #[source]
        source: ArchiveError,
    },
    #[error("copying {what}: {message}")]
    InBox {
        what: String,
        kind: InBoxKind,
        message: String,
    },
    #[error("copying {what}")]
    Agent {
        what: String,
        #[source]
        source: PortalError,
    },
    #[error("copying {what}: the tar stream")]
    Stream {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A path given to `read_file` or `write_file` that cannot name a file in the box.
    #[error("box path {path:?}: {reason}")]
    BoxPath { path: String, reason: &'static str },
    /// A file read whole into memory is larger than the caller's limit.
    #[error("{path} in the box is {} bytes, more than the limit of {limit} bytes", size.map_or_else(|| "more than that".to_string(), |s| s.to_string()))]
    TooLarge {
        path: String,
        size: Option<u64>,
        limit: u64,
    },
    /// `read_file` found something other than a regular file.
    #[error("{path} in the box is a {found}, not a regular file")]
    NotAFile { path: String, found: &'static str },
}

/// What kind of failure the box reported for a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InBoxKind {
    /// The destination's filesystem is full.
    NoSpace,
    /// An entry was refused: it would land outside the destination, or is malformed.
    Refused,
    /// A path is missing, or of the wrong kind.
    NotFound,
    Other,
}

/// How a copy treats its source and destination. The defaults are `docker cp`'s.
#[derive(Debug, Clone, Serialize)]
pub struct CopyOptions {
    /// Copy directories with their contents; without it a directory source is an error.
    pub recursive: bool,
    /// Replace existing files at the destination; without it they are an error.
    pub overwrite: bool,
    /// Copy what symlinks point to instead of the links (inside a box, links are
    /// resolved inside the box).
    pub follow_symlinks: bool,
    /// A directory source lands under its own name when the destination is an existing
    /// directory. Without it only its contents are copied into the destination (as a
    /// source ending in `/.` does).
    pub include_parent: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            recursive: true,
            overwrite: true,
            follow_symlinks: false,
            include_parent: true,
        }
    }
}

/// What a copy moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CopyStats {
    /// Archive entries (files, directories, links).
    pub entries: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

fn ends_with_dot(p: &[u8]) -> bool {
    p == b"." || p.ends_with(b"/.")
}

fn last_name(p: &Path) -> Option<Vec<u8>> {
    p.file_name().map(|n| n.as_bytes().to_vec())
}

fn in_box_error(what: &str, e: PortalError) -> CopyError {
    match e {
        PortalError::Rpc { message, code, .. }
            if !matches!(code, tonic::Code::Unavailable | tonic::Code::Cancelled) =>
        {
            CopyError::InBox {
                what: what.to_string(),
                kind: match code {
                    tonic::Code::ResourceExhausted => InBoxKind::NoSpace,
                    tonic::Code::InvalidArgument => InBoxKind::Refused,
                    tonic::Code::NotFound | tonic::Code::FailedPrecondition => InBoxKind::NotFound,
                    _ => InBoxKind::Other,
                },
                message: if message.is_empty() {
                    format!("the agent answered {code:?}")
                } else {
                    message
                },
            }
        }
        source => CopyError::Agent {
            what: what.to_string(),
            source,
        },
    }
}

/// Where a tar stream copied into a box lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarPlacement {
    /// Its entries as they are, into an existing directory (`boxlite cp - BOX:DIR`).
    Archive,
    /// Its one top-level item (a file, or a directory and its contents) into the path
    /// if that is an existing directory, else as the path itself (`docker cp`).
    Item,
    /// Its one top-level directory's contents into the path, created if missing
    /// (`docker cp DIR/. BOX:PATH`).
    Contents,
}

/// A host file or directory read for a copy into a box, as `docker cp HOST BOX:PATH`
/// reads it: the item under its own name, or a directory's contents for a source ending
/// in `/.` (or any directory without [`CopyOptions::include_parent`]). Entries are owned
/// by root. [`LiteBox::copy_in`] sends it to the agent; a client of the REST API sends
/// the same stream to `PUT /files`.
#[derive(Debug)]
pub struct HostSource {
    abs: PathBuf,
    top: Vec<u8>,
    pack: boxlite_archive::PackOptions,
    /// Where the stream's entries go in the box.
    pub placement: TarPlacement,
}

impl HostSource {
    pub fn new(host: &Path, opts: &CopyOptions) -> Result<HostSource, CopyError> {
        let bad = |reason: String| CopyError::HostPath {
            path: host.to_path_buf(),
            reason,
        };
        let meta = if opts.follow_symlinks {
            std::fs::metadata(host)
        } else {
            std::fs::symlink_metadata(host)
        }
        .map_err(|e| bad(e.to_string()))?;
        if meta.is_dir() && !opts.recursive {
            return Err(bad(
                "is a directory (a recursive copy was not asked for)".into()
            ));
        }
        let abs = std::path::absolute(host).map_err(|e| bad(e.to_string()))?;
        let contents =
            meta.is_dir() && (!opts.include_parent || ends_with_dot(host.as_os_str().as_bytes()));
        let (top, placement) = if contents {
            (b".".to_vec(), TarPlacement::Contents)
        } else {
            let name = last_name(&abs).unwrap_or_else(|| b".".to_vec());
            (name, TarPlacement::Item)
        };
        Ok(HostSource {
            abs,
            top,
            pack: boxlite_archive::PackOptions {
                follow_symlinks: opts.follow_symlinks,
                recursive: opts.recursive,
                owner: Some((0, 0)),
            },
            placement,
        })
    }

    /// Pack it on a blocking thread into 64 KiB chunks on the returned channel (a few
    /// in flight); the task's result says whether packing finished. Dropping the
    /// receiver stops the packer.
    pub fn spawn_pack(
        self,
    ) -> (
        mpsc::Receiver<Vec<u8>>,
        tokio::task::JoinHandle<Result<(), ArchiveError>>,
    ) {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(DEPTH);
        let packer = tokio::task::spawn_blocking(move || {
            let root = std::fs::File::open("/").map_err(|e| ArchiveError::Io {
                path: "/".into(),
                what: "opening",
                source: e,
            })?;
            boxlite_archive::pack(
                ChannelWriter::new(tx),
                root.as_fd(),
                self.abs.as_os_str().as_bytes(),
                &self.top,
                Resolve::Normal,
                &self.pack,
            )
            .map(drop)
        });
        (rx, packer)
    }
}

/// Where a copy out of a box lands on the host, decided before anything is read, as
/// `docker cp BOX:PATH HOST` places it: into an existing directory under the source's
/// name, else as the path (whose parent must exist); a source ending in `/.` puts its
/// contents into the directory (created if missing). A new item is unpacked under a
/// hidden staging name and renamed into place once complete, so a refused or failed
/// copy leaves nothing behind. What arrives is hostile: it is unpacked below the
/// destination with `RESOLVE_BENEATH`; `..`, absolute names, links leading out, hard
/// links out and devices are refused and setuid bits dropped.
#[derive(Debug)]
pub struct HostDestination {
    source: String,
    base: PathBuf,
    mapping: Mapping,
    staged: Option<(PathBuf, PathBuf)>,
    host: PathBuf,
    overwrite: bool,
}

/// Why unpacking a copy on the host failed: the stream's own error, or the copy's.
#[derive(Debug)]
pub enum HostUnpackError<E> {
    Source(E),
    Copy(CopyError),
}

impl HostDestination {
    pub fn plan(
        box_path: &str,
        host: &Path,
        opts: &CopyOptions,
    ) -> Result<HostDestination, CopyError> {
        let bad = |reason: String| CopyError::HostPath {
            path: host.to_path_buf(),
            reason,
        };
        let contents = !opts.include_parent || ends_with_dot(box_path.as_bytes());
        let source = if contents && !ends_with_dot(box_path.as_bytes()) {
            format!("{}/.", box_path.trim_end_matches('/'))
        } else {
            box_path.to_string()
        };
        let dest_is_dir = std::fs::metadata(host).map(|m| m.is_dir()).ok();
        let item = box_path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or(".")
            .to_string();
        let stage = format!(".boxlite-cp-{:016x}", rand::random::<u64>());
        let (base, mapping, staged) = match dest_is_dir {
            Some(true) if contents => (host.to_path_buf(), Mapping::AsIs, None),
            Some(true) => {
                let fin = host.join(&item);
                if fin.symlink_metadata().is_ok() {
                    if !opts.overwrite && !fin.is_dir() {
                        return Err(bad(format!("{} already exists", fin.display())));
                    }
                    (host.to_path_buf(), Mapping::AsIs, None)
                } else {
                    let staged = (host.join(&stage), fin);
                    (
                        host.to_path_buf(),
                        Mapping::RenameTop(stage.clone().into_bytes()),
                        Some(staged),
                    )
                }
            }
            Some(false) if contents => return Err(bad("is not a directory".into())),
            Some(false) if !opts.overwrite => {
                return Err(bad("already exists (overwriting was not allowed)".into()));
            }
            None if host.as_os_str().as_bytes().ends_with(b"/") => {
                return Err(bad("directory does not exist".into()));
            }
            _ => {
                let abs = std::path::absolute(host).map_err(|e| bad(e.to_string()))?;
                let parent = abs.parent().map(Path::to_path_buf).unwrap_or_default();
                if !parent.is_dir() {
                    return Err(bad(format!(
                        "its parent directory {} does not exist",
                        parent.display()
                    )));
                }
                if contents {
                    std::fs::create_dir(&abs).map_err(|e| bad(e.to_string()))?;
                    (abs, Mapping::AsIs, None)
                } else {
                    let staged = (parent.join(&stage), abs);
                    (
                        parent,
                        Mapping::RenameTop(stage.clone().into_bytes()),
                        Some(staged),
                    )
                }
            }
        };
        Ok(HostDestination {
            source,
            base,
            mapping,
            staged,
            host: host.to_path_buf(),
            overwrite: opts.overwrite,
        })
    }

    /// The path to ask the box to pack (with `/.` for a contents copy).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Unpack the tar arriving as `chunks`, then move a staged item into place, or
    /// remove it if anything failed. `what` names the copy in errors.
    pub async fn unpack<S, E>(self, what: &str, chunks: S) -> Result<CopyStats, HostUnpackError<E>>
    where
        S: tokio_stream::Stream<Item = Result<Vec<u8>, E>>,
        E: std::fmt::Display,
    {
        let HostDestination {
            base,
            mapping,
            staged,
            host,
            overwrite,
            ..
        } = self;
        let (tx, rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(DEPTH);
        let unpack_opts = boxlite_archive::UnpackOptions {
            resolve: Resolve::Beneath,
            mapping,
            overwrite,
            preserve_owner: false,
            keep_setid: false,
            allow_devices: false,
            allow_escaping_links: false,
            layer: false,
        };
        let unpacker = tokio::task::spawn_blocking(move || {
            let dir = std::fs::File::open(&base).map_err(|e| ArchiveError::Io {
                path: base.display().to_string(),
                what: "opening",
                source: e,
            })?;
            let mut reader = ChannelReader::new(rx);
            boxlite_archive::unpack(&mut reader, dir.as_fd(), b"", &unpack_opts)
        });
        let mut source_error = None;
        let mut chunks = std::pin::pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(data) => {
                    if tx.send(Ok(data)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    source_error = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let unpacked = unpacker.await;
        let result = match (source_error, unpacked) {
            (Some(e), _) => Err(HostUnpackError::Source(e)),
            (None, Err(e)) => Err(HostUnpackError::Copy(CopyError::Stream {
                what: what.to_string(),
                source: std::io::Error::other(e),
            })),
            (None, Ok(Err(source))) => Err(HostUnpackError::Copy(CopyError::Archive {
                what: what.to_string(),
                source,
            })),
            (None, Ok(Ok(s))) => Ok(CopyStats {
                entries: s.entries,
                bytes: s.bytes,
            }),
        };
        let Some((tmp, fin)) = staged else {
            return result;
        };
        let placed = match &result {
            Ok(_) => std::fs::rename(&tmp, &fin).map_err(|e| CopyError::HostPath {
                path: host,
                reason: format!("moving the copy into place: {e}"),
            }),
            Err(_) => Ok(()),
        };
        if result.is_err() || placed.is_err() {
            // A refused copy can leave a large partial tree: off the runtime.
            crate::util::blocking::run(move || {
                let _ = match std::fs::symlink_metadata(&tmp) {
                    Ok(m) if m.is_dir() => std::fs::remove_dir_all(&tmp),
                    Ok(_) => std::fs::remove_file(&tmp),
                    Err(_) => Ok(()),
                };
            })
            .await;
        }
        placed.map_err(HostUnpackError::Copy)?;
        result
    }
}

fn header_chunk(dest: &str, mode: v1::CopyInMode, overwrite: bool) -> v1::CopyInChunk {
    v1::CopyInChunk {
        header: Some(v1::CopyInHeader {
            dest: dest.to_string(),
            mode: mode as i32,
            overwrite,
        }),
        data: Vec::new(),
    }
}

impl LiteBox {
    /// Copy a host file or directory into the box, as `docker cp HOST BOX:PATH` does:
    /// into `box_path` if it is an existing directory, else as `box_path` (whose parent
    /// must exist). Files land owned by root with their modes and times; a box that is
    /// not running is started first.
    pub async fn copy_in(
        &self,
        host_path: impl AsRef<Path>,
        box_path: &str,
        opts: &CopyOptions,
    ) -> Result<CopyStats, crate::Error> {
        let host = host_path.as_ref();
        let what = format!("{} into box {} at {box_path}", host.display(), self.id);
        // Checked before the box is started; planned afresh for a second attempt.
        let mut first = Some(HostSource::new(host, opts)?);
        let (mut client, seen) = self.client_seen().await?;
        let mut again = true;
        loop {
            let src = match first.take() {
                Some(src) => src,
                None => HostSource::new(host, opts)?,
            };
            let mode = match src.placement {
                TarPlacement::Contents => v1::CopyInMode::Contents,
                _ => v1::CopyInMode::Item,
            };
            let (rx, packer) = src.spawn_pack();
            let stream = tokio_stream::once(header_chunk(box_path, mode, opts.overwrite))
                .chain(ReceiverStream::new(rx).map(|data| v1::CopyInChunk { header: None, data }));
            let sent = client.copy_in(stream).await;
            let packed = packer.await.map_err(|e| CopyError::Stream {
                what: what.clone(),
                source: std::io::Error::other(e),
            })?;
            return match (packed, sent) {
                (Ok(()), Ok(r)) => Ok(CopyStats {
                    entries: r.entries,
                    bytes: r.bytes,
                }),
                // The guest's answer explains a stream it stopped reading; a box that
                // paused itself meanwhile took nothing and is asked again.
                (Ok(()) | Err(ArchiveError::Write(_)), Err(e)) => {
                    if again && let Some((c, _)) = self.again_after_auto_pause(&e, seen).await? {
                        client = c;
                        again = false;
                        continue;
                    }
                    Err(in_box_error(&what, e).into())
                }
                (Err(source), _) => Err(CopyError::Archive { what, source }.into()),
            };
        }
    }

    /// Unpack a tar stream into `box_dir`, an existing directory in the box (`boxlite
    /// cp - BOX:DIR`). Entries keep the archive's owners and modes.
    pub async fn copy_in_tar<R>(
        &self,
        tar: R,
        box_dir: &str,
        overwrite: bool,
    ) -> Result<CopyStats, crate::Error>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        self.copy_in_tar_as(tar, box_dir, TarPlacement::Archive, overwrite)
            .await
    }

    /// Unpack a tar stream at `box_path` as `placement` says (see [`TarPlacement`]);
    /// the stream is treated as hostile in the guest, as every copy is.
    pub async fn copy_in_tar_as<R>(
        &self,
        mut tar: R,
        box_dir: &str,
        placement: TarPlacement,
        overwrite: bool,
    ) -> Result<CopyStats, crate::Error>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let mode = match placement {
            TarPlacement::Archive => v1::CopyInMode::Archive,
            TarPlacement::Item => v1::CopyInMode::Item,
            TarPlacement::Contents => v1::CopyInMode::Contents,
        };
        let what = format!("a tar stream into box {} at {box_dir}", self.id);
        let client = self.client().await?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>(DEPTH);
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; boxlite_archive::CHUNK];
            loop {
                let n = tar.read(&mut buf).await?;
                if n == 0 || tx.send(buf[..n].to_vec()).await.is_err() {
                    return Ok::<_, std::io::Error>(());
                }
            }
        });
        let stream = tokio_stream::once(header_chunk(box_dir, mode, overwrite))
            .chain(ReceiverStream::new(rx).map(|data| v1::CopyInChunk { header: None, data }));
        let sent = client.copy_in(stream).await;
        reader
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|source| CopyError::Stream {
                what: what.clone(),
                source,
            })?;
        let r = sent.map_err(|e| in_box_error(&what, e))?;
        Ok(CopyStats {
            entries: r.entries,
            bytes: r.bytes,
        })
    }

    /// Copy a file or directory out of the box to the host, as `docker cp BOX:PATH
    /// HOST` does: into `host_path` if it is an existing directory, else as
    /// `host_path`. The archive the box sends is treated as hostile; see the module
    /// documentation. Files belong to the calling user.
    pub async fn copy_out(
        &self,
        box_path: &str,
        host_path: impl AsRef<Path>,
        opts: &CopyOptions,
    ) -> Result<CopyStats, crate::Error> {
        let host = host_path.as_ref();
        let what = format!("{box_path} out of box {} to {}", self.id, host.display());
        let dest = HostDestination::plan(box_path, host, opts)?;
        let req = v1::CopyOutRequest {
            path: dest.source().to_string(),
            follow_symlinks: opts.follow_symlinks,
            no_recursive: !opts.recursive,
        };
        let stream = self
            .copy_out_stream(req)
            .await?
            .map_err(|e| in_box_error(&what, e))?;
        let chunks = stream.map(|m| {
            m.map(|chunk| chunk.data)
                .map_err(|status| PortalError::rpc("CopyOut", status))
        });
        match dest.unpack(&what, chunks).await {
            Ok(stats) => Ok(stats),
            Err(HostUnpackError::Source(e)) => Err(in_box_error(&what, e).into()),
            Err(HostUnpackError::Copy(e)) => Err(e.into()),
        }
    }

    /// Write a path of the box to `out` as a tar stream, unchanged (`boxlite cp
    /// BOX:PATH -`). Returns the bytes written.
    pub async fn copy_out_tar<W>(
        &self,
        box_path: &str,
        out: &mut W,
        opts: &CopyOptions,
    ) -> Result<u64, crate::Error>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let what = format!("{box_path} out of box {} as a tar stream", self.id);
        let req = v1::CopyOutRequest {
            path: box_path.to_string(),
            follow_symlinks: opts.follow_symlinks,
            no_recursive: !opts.recursive,
        };
        let mut stream = self
            .copy_out_stream(req)
            .await?
            .map_err(|e| in_box_error(&what, e))?;
        let mut total = 0u64;
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| in_box_error(&what, PortalError::rpc("CopyOut", s)))?
        {
            out.write_all(&chunk.data)
                .await
                .map_err(|source| CopyError::Stream {
                    what: what.clone(),
                    source,
                })?;
            total += chunk.data.len() as u64;
        }
        out.flush().await.map_err(|source| CopyError::Stream {
            what: what.clone(),
            source,
        })?;
        Ok(total)
    }

    /// Start a CopyOut on the agent, once more if the box paused itself meanwhile.
    async fn copy_out_stream(
        &self,
        req: v1::CopyOutRequest,
    ) -> Result<Result<tonic::Streaming<v1::OutputChunk>, PortalError>, crate::Error> {
        let (client, seen) = self.client_seen().await?;
        Ok(match client.copy_out(req.clone()).await {
            Err(e) => match self.again_after_auto_pause(&e, seen).await? {
                Some((client, _)) => client.copy_out(req).await,
                None => Err(e),
            },
            r => r,
        })
    }

    /// Apply an image layer (a tar, compressed as `compression` says) onto the box's
    /// root filesystem the way a layered filesystem stacks it: whiteouts remove,
    /// opaque markers empty directories, owners, modes, setuid bits, links, devices and
    /// xattrs are kept exactly. Decompression and tar parsing happen in the guest.
    /// `layer` is read on a blocking thread; a read error (such as a blob found corrupt
    /// while it streams) stops the transfer and is the error returned.
    pub async fn apply_layer<R>(
        &self,
        layer: R,
        compression: crate::model::Compression,
        digest: &str,
    ) -> Result<CopyStats, crate::Error>
    where
        R: std::io::Read + Send + 'static,
    {
        let what = format!("layer {digest} into box {}", self.id);
        send_layer(&self.client().await?, &what, layer, compression, digest).await
    }
}

/// Stream a layer to an agent's ApplyLayer (see [`LiteBox::apply_layer`]); `what` names
/// the transfer in errors.
pub(crate) async fn send_layer<R>(
    client: &crate::portal::AgentClient,
    what: &str,
    mut layer: R,
    compression: crate::model::Compression,
    digest: &str,
) -> Result<CopyStats, crate::Error>
where
    R: std::io::Read + Send + 'static,
{
    use crate::model::Compression as C;
    let (tx, rx) = mpsc::channel::<Vec<u8>>(DEPTH);
    let reader = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; boxlite_archive::CHUNK];
        loop {
            let n = layer.read(&mut buf)?;
            if n == 0 || tx.blocking_send(buf[..n].to_vec()).is_err() {
                return Ok::<_, std::io::Error>(());
            }
        }
    });
    let header = v1::LayerChunk {
        header: Some(v1::LayerHeader {
            compression: match compression {
                C::None => v1::LayerCompression::None,
                C::Gzip => v1::LayerCompression::Gzip,
                C::Zstd => v1::LayerCompression::Zstd,
            } as i32,
            digest: digest.to_string(),
        }),
        data: Vec::new(),
    };
    let stream = tokio_stream::once(header)
        .chain(ReceiverStream::new(rx).map(|data| v1::LayerChunk { header: None, data }));
    let sent = client.apply_layer(stream).await;
    let read = reader.await.map_err(std::io::Error::other).and_then(|r| r);
    if let Err(source) = read {
        return Err(CopyError::Stream {
            what: what.to_string(),
            source,
        }
        .into());
    }
    let r = sent.map_err(|e| in_box_error(what, e))?;
    Ok(CopyStats {
        entries: r.entries,
        bytes: r.bytes,
    })
}
