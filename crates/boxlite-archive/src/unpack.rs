//! Unpacking a tar stream below a directory fd, treating the stream as hostile.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::fs::{self, Resolve};
use crate::{ArchiveError, show};

/// Buffer for file contents: `io::copy` alone moves 8 KiB at a time, and every write
/// to a virtio-fs file is a request to the host.
pub(crate) const IO_BUF: usize = 1 << 20;

/// The buffer for a file of `size` bytes: no larger than the file, since a 1 MiB
/// allocation per small file (an mmap and munmap each) costs more than the copy.
pub(crate) fn io_buf(size: u64) -> usize {
    usize::try_from(size).map_or(IO_BUF, |s| s.clamp(8 << 10, IO_BUF))
}

/// A tar owner id as a Linux one; ids past 32 bits are malformed input.
fn id32(id: u64, what: &str) -> Result<u32, ArchiveError> {
    u32::try_from(id).map_err(|_| {
        ArchiveError::Tar(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what} {id} does not fit in 32 bits"),
        ))
    })
}

/// How archive paths map onto the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// Entries land under the base as they are named.
    AsIs,
    /// The archive has one top-level item, which lands under the base with this name.
    RenameTop(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// How paths and links are resolved below the root fd.
    pub resolve: Resolve,
    pub mapping: Mapping,
    /// Replace existing non-directories; otherwise they are an error.
    pub overwrite: bool,
    /// Give entries the archive's uid and gid; otherwise the caller's own.
    pub preserve_owner: bool,
    /// Keep setuid and setgid bits. A host destination drops them: a guest must not
    /// be able to plant a setuid binary owned by the user who ran the copy.
    pub keep_setid: bool,
    /// Create device nodes; otherwise they are refused.
    pub allow_devices: bool,
    /// Allow symlinks whose target is absolute or climbs out of the destination. In a
    /// container root they are ordinary; on the host they could aim later readers at
    /// host files, so they are refused there.
    pub allow_escaping_links: bool,
    /// Apply the archive as an image layer onto what is already there: `.wh.NAME`
    /// removes NAME from lower layers, `.wh..wh..opq` empties its directory of lower
    /// layers' entries, an entry replaces an existing one of another kind (a file over a
    /// directory too), and `SCHILY.xattr.*` records become extended attributes.
    pub layer: bool,
}

/// The name of an opaque-directory marker in a layer.
const OPAQUE: &[u8] = b".wh..wh..opq";
/// The prefix of a whiteout in a layer.
const WHITEOUT: &[u8] = b".wh.";

impl UnpackOptions {
    /// The options for applying an image layer onto a root filesystem being built:
    /// paths resolved inside that root, everything kept exactly (owners, setuid bits,
    /// devices, absolute links), layer semantics on.
    pub fn image_layer() -> Self {
        UnpackOptions {
            resolve: Resolve::InRoot,
            mapping: Mapping::AsIs,
            overwrite: true,
            preserve_owner: true,
            keep_setid: true,
            allow_devices: true,
            allow_escaping_links: true,
            layer: true,
        }
    }
}

/// What an unpack created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub entries: u64,
    pub bytes: u64,
}

/// A directory whose mode and time are set after its contents are in place (a 0555
/// directory must still take its files).
struct DirMeta {
    path: Vec<u8>,
    mode: u32,
    mtime: i64,
    owner: Option<(u32, u32)>,
}

/// Unpack `input` under `base` (a path below `root`, empty for `root` itself).
pub fn unpack<R: Read>(
    input: R,
    root: BorrowedFd<'_>,
    base: &[u8],
    opts: &UnpackOptions,
) -> Result<Summary, ArchiveError> {
    let mut archive = tar::Archive::new(input);
    let mut summary = Summary::default();
    let mut dirs: Vec<DirMeta> = Vec::new();
    let mut top: Option<Vec<u8>> = None;
    // Paths this archive created, so a layer's whiteouts only remove lower layers' files.
    let mut created: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for entry in archive.entries().map_err(ArchiveError::Tar)? {
        let mut entry = entry.map_err(ArchiveError::Tar)?;
        let raw = entry.path_bytes().into_owned();
        let Some(rel) = map_path(&raw, opts, &mut top)? else {
            continue;
        };
        let full = join(base, &rel);
        let (parent_path, name) = split_last(&full);
        let parent = ensure_dir(root, parent_path, opts.resolve)?;
        if opts.layer {
            let shown_full = show(&full);
            let io = |what| ArchiveError::io(&shown_full, what);
            if name == OPAQUE {
                for child in fs::list_dir(parent.as_fd()).map_err(io("listing"))? {
                    if !created.contains(&join(parent_path, &child)) {
                        fs::remove_tree_at(parent.as_fd(), &child).map_err(io("removing"))?;
                    }
                }
                continue;
            }
            if let Some(victim) = name.strip_prefix(WHITEOUT) {
                if victim.is_empty() || victim == b"." || victim == b".." {
                    return Err(refused(&raw, "a whiteout without a name"));
                }
                if !created.contains(&join(parent_path, victim)) {
                    fs::remove_tree_at(parent.as_fd(), victim).map_err(io("removing"))?;
                }
                continue;
            }
            created.insert(full.clone());
        }
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> = if opts.layer {
            entry
                .pax_extensions()
                .ok()
                .flatten()
                .map(|exts| {
                    exts.filter_map(Result::ok)
                        .filter_map(|e| {
                            let key = e.key_bytes().strip_prefix(b"SCHILY.xattr.")?.to_vec();
                            Some((key, e.value_bytes().to_vec()))
                        })
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let h = entry.header();
        let mode = h.mode().map_err(ArchiveError::Tar)?;
        let mode = if opts.keep_setid {
            mode & 0o7777
        } else {
            mode & 0o1777
        };
        let owner = if opts.preserve_owner {
            Some((
                id32(h.uid().map_err(ArchiveError::Tar)?, "uid")?,
                id32(h.gid().map_err(ArchiveError::Tar)?, "gid")?,
            ))
        } else {
            None
        };
        let mtime = i64::try_from(h.mtime().unwrap_or(0)).unwrap_or(i64::MAX);
        let kind = h.entry_type();
        let shown = show(&full);
        let io = |what| ArchiveError::io(&shown, what);
        match kind {
            tar::EntryType::Directory => {
                match fs::lstat_at(parent.as_fd(), name) {
                    Ok(st) if fs::is_dir(&st) => {}
                    Ok(_) => {
                        replace(parent.as_fd(), name, &shown, opts)?;
                        fs::mkdir_at(parent.as_fd(), name, 0o700).map_err(io("mkdir"))?;
                    }
                    Err(_) => fs::mkdir_at(parent.as_fd(), name, 0o700).map_err(io("mkdir"))?,
                }
                if !xattrs.is_empty() {
                    let d =
                        fs::open_name(parent.as_fd(), name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                            .map_err(io("opening"))?;
                    for (k, v) in &xattrs {
                        fs::set_xattr(d.as_fd(), k, v)
                            .map_err(io("setting an extended attribute"))?;
                    }
                }
                dirs.push(DirMeta {
                    path: full.clone(),
                    mode,
                    mtime,
                    owner,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let file = create(parent.as_fd(), name, &shown, opts)?;
                // Large writes: each one is a round trip on a virtio-fs mount.
                let cap = io_buf(entry.size());
                let mut file = std::io::BufWriter::with_capacity(cap, std::fs::File::from(file));
                let n = std::io::copy(&mut entry, &mut file)
                    .and_then(|n| file.flush().map(|_| n))
                    .map_err(|e| {
                        if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            ArchiveError::Tar(e)
                        } else {
                            ArchiveError::io(&shown, "writing")(e)
                        }
                    })?;
                summary.bytes += n;
                fs::set_meta_at(parent.as_fd(), name, owner, Some(mode), Some(mtime))
                    .map_err(io("setting metadata"))?;
                // After the owner: a chown drops `security.capability`.
                for (k, v) in &xattrs {
                    fs::set_xattr(file.get_ref().as_fd(), k, v)
                        .map_err(io("setting an extended attribute"))?;
                }
                drop(file);
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.is_empty() {
                    return Err(refused(&raw, "a symlink without a target"));
                }
                if !opts.allow_escaping_links {
                    check_link_target(&raw, &rel, &target)?;
                }
                clear(parent.as_fd(), name, &shown, opts)?;
                fs::symlink_at(&target, parent.as_fd(), name).map_err(io("symlink"))?;
                fs::set_meta_at(parent.as_fd(), name, owner, None, Some(mtime))
                    .map_err(io("setting metadata"))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let Some(trel) = map_path(&target, opts, &mut top.clone())? else {
                    return Err(refused(&raw, "a hard link to the archive's top directory"));
                };
                let tfull = join(base, &trel);
                let (tparent_path, tname) = split_last(&tfull);
                let tparent = fs::open_at(
                    root,
                    tparent_path,
                    libc::O_PATH | libc::O_DIRECTORY,
                    opts.resolve,
                )
                .map_err(ArchiveError::io(&show(&tfull), "opening link target"))?;
                if fs::is_dir(
                    &fs::lstat_at(tparent.as_fd(), tname)
                        .map_err(ArchiveError::io(&show(&tfull), "link target"))?,
                ) {
                    return Err(refused(&raw, "a hard link to a directory"));
                }
                clear(parent.as_fd(), name, &shown, opts)?;
                fs::link_at(tparent.as_fd(), tname, parent.as_fd(), name)
                    .map_err(io("hard link"))?;
            }
            tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block => {
                let (fmt, dev) = match kind {
                    tar::EntryType::Fifo => (libc::S_IFIFO, 0),
                    _ if !opts.allow_devices => {
                        return Err(refused(&raw, "device nodes are not created here"));
                    }
                    _ => {
                        let major = h.device_major().ok().flatten().unwrap_or(0);
                        let minor = h.device_minor().ok().flatten().unwrap_or(0);
                        let fmt = if kind == tar::EntryType::Char {
                            libc::S_IFCHR
                        } else {
                            libc::S_IFBLK
                        };
                        (fmt, libc::makedev(major, minor))
                    }
                };
                clear(parent.as_fd(), name, &shown, opts)?;
                fs::mknod_at(parent.as_fd(), name, fmt | 0o600, dev).map_err(io("mknod"))?;
                fs::set_meta_at(parent.as_fd(), name, owner, Some(mode), Some(mtime))
                    .map_err(io("setting metadata"))?;
            }
            tar::EntryType::GNUSparse => {
                return Err(refused(&raw, "sparse entries are not accepted"));
            }
            // Metadata records the tar reader applies itself.
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            other => {
                return Err(refused(&raw, &format!("unsupported entry type {other:?}")));
            }
        }
        summary.entries += 1;
    }
    // Innermost first, so a directory's time is set after its children changed it.
    for d in dirs.iter().rev() {
        let (parent_path, name) = split_last(&d.path);
        let shown = show(&d.path);
        let parent = fs::open_at(
            root,
            parent_path,
            libc::O_PATH | libc::O_DIRECTORY,
            opts.resolve,
        )
        .map_err(ArchiveError::io(&shown, "opening"))?;
        fs::set_meta_at(parent.as_fd(), name, d.owner, Some(d.mode), Some(d.mtime))
            .map_err(ArchiveError::io(&shown, "setting metadata"))?;
    }
    Ok(summary)
}

fn refused(entry: &[u8], reason: &str) -> ArchiveError {
    ArchiveError::Refused {
        entry: show(entry),
        reason: reason.into(),
    }
}

/// The normalized relative path of an archive entry, mapped onto the destination;
/// `None` for the archive's root (`.`). Absolute paths and `..` are refused.
fn map_path(
    raw: &[u8],
    opts: &UnpackOptions,
    top: &mut Option<Vec<u8>>,
) -> Result<Option<Vec<u8>>, ArchiveError> {
    if raw.starts_with(b"/") {
        return Err(refused(raw, "absolute paths are not accepted"));
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(refused(raw, "paths with `..` are not accepted")),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    if let Mapping::RenameTop(new) = &opts.mapping {
        match top {
            Some(t) if t.as_slice() != parts[0] => {
                return Err(refused(
                    raw,
                    "the archive has more than one top-level item, so it cannot be renamed",
                ));
            }
            Some(_) => {}
            None => *top = Some(parts[0].to_vec()),
        }
        parts[0] = new;
    }
    Ok(Some(parts.join(&b'/')))
}

/// Refuse a link target that is absolute or climbs above the destination, judged from
/// where the link sits (`rel`).
fn check_link_target(raw: &[u8], rel: &[u8], target: &[u8]) -> Result<(), ArchiveError> {
    if target.starts_with(b"/") {
        return Err(refused(
            raw,
            &format!("its symlink target {:?} is absolute", show(target)),
        ));
    }
    let mut depth = i64::try_from(rel.split(|b| *b == b'/').count()).unwrap_or(i64::MAX) - 1;
    for c in target.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(refused(
                        raw,
                        &format!(
                            "its symlink target {:?} leads outside the destination",
                            show(target)
                        ),
                    ));
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

fn join(base: &[u8], rel: &[u8]) -> Vec<u8> {
    let base = base.strip_suffix(b"/").unwrap_or(base);
    if base.is_empty() {
        return rel.to_vec();
    }
    let mut v = base.to_vec();
    v.push(b'/');
    v.extend_from_slice(rel);
    v
}

fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// Open directory `path` below `root`, creating missing components (mode 0755).
fn ensure_dir(
    root: BorrowedFd<'_>,
    path: &[u8],
    resolve: Resolve,
) -> Result<OwnedFd, ArchiveError> {
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    match fs::open_at(root, path, flags, resolve) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(ArchiveError::io(&show(path), "opening directory")(e)),
    }
    let mut cur = fs::open_at(root, b"", flags, resolve)
        .map_err(ArchiveError::io(&show(path), "opening directory"))?;
    let mut so_far: Vec<u8> = Vec::new();
    for c in path.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
        so_far = join(&so_far, c);
        let shown = show(&so_far);
        match fs::mkdir_at(cur.as_fd(), c, 0o755) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                return Err(ArchiveError::io(&shown, "mkdir")(e));
            }
            _ => {}
        }
        cur = fs::open_at(root, &so_far, flags, resolve)
            .map_err(ArchiveError::io(&shown, "opening directory"))?;
    }
    Ok(cur)
}

/// Make room for a new non-directory entry: an existing non-directory is removed if
/// overwriting is allowed; an existing directory is never replaced by a file.
fn clear(
    dir: BorrowedFd<'_>,
    name: &[u8],
    shown: &str,
    opts: &UnpackOptions,
) -> Result<(), ArchiveError> {
    match fs::lstat_at(dir, name) {
        Err(_) => Ok(()),
        // A layer may replace a lower layer's directory with a file or a link.
        Ok(st) if fs::is_dir(&st) && opts.layer => {
            fs::remove_tree_at(dir, name).map_err(ArchiveError::io(shown, "removing"))
        }
        Ok(st) if fs::is_dir(&st) => Err(ArchiveError::Refused {
            entry: shown.to_string(),
            reason: "a directory of that name exists and is not replaced by a non-directory".into(),
        }),
        Ok(_) => replace(dir, name, shown, opts),
    }
}

fn replace(
    dir: BorrowedFd<'_>,
    name: &[u8],
    shown: &str,
    opts: &UnpackOptions,
) -> Result<(), ArchiveError> {
    if !opts.overwrite {
        return Err(ArchiveError::Exists {
            path: shown.to_string(),
        });
    }
    fs::unlink_at(dir, name, false).map_err(ArchiveError::io(shown, "removing"))
}

/// Create a regular file for writing. Never opens through a link: an existing entry is
/// removed first (when allowed) and the new file is created exclusively.
fn create(
    dir: BorrowedFd<'_>,
    name: &[u8],
    shown: &str,
    opts: &UnpackOptions,
) -> Result<OwnedFd, ArchiveError> {
    clear(dir, name, shown, opts)?;
    fs::open_name(
        dir,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        0o600,
    )
    .map_err(ArchiveError::io(shown, "creating"))
}
