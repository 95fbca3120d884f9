//! Building a tar stream from a path below a directory fd.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::fs::{self, Resolve};
use crate::{ArchiveError, show};

#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Archive what symlinks point to instead of the links. Loops are refused.
    pub follow_symlinks: bool,
    /// Descend into directories; without it a directory source is an error.
    pub recursive: bool,
    /// Write this owner into every entry instead of the files' own (the host side of a
    /// copy into a box uses root, as `docker cp` does).
    pub owner: Option<(u32, u32)>,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            follow_symlinks: false,
            recursive: true,
            owner: None,
        }
    }
}

struct Packer<'a, W: Write> {
    tar: tar::Builder<W>,
    root: BorrowedFd<'a>,
    resolve: Resolve,
    opts: &'a PackOptions,
    /// First archive name of each multiply-linked file, by (dev, inode).
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Directories on the current path when following links, to refuse loops.
    stack: Vec<(u64, u64)>,
    entries: u64,
}

/// Write `path` (resolved below `root`) as a tar stream whose top-level entry is named
/// `top`: the source's own name, or `.` to archive a directory's contents. Returns the
/// number of entries written. The stream is flushed, and `out` is dropped on return (a
/// channel writer's receiver then sees the end); pass `&mut w` to keep a writer.
pub fn pack<W: Write>(
    out: W,
    root: BorrowedFd<'_>,
    path: &[u8],
    top: &[u8],
    resolve: Resolve,
    opts: &PackOptions,
) -> Result<u64, ArchiveError> {
    let nofollow = if opts.follow_symlinks {
        0
    } else {
        libc::O_NOFOLLOW
    };
    let shown = show(path);
    let fd = fs::open_at(root, path, libc::O_PATH | nofollow, resolve)
        .map_err(ArchiveError::io(&shown, "opening"))?;
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    let mut p = Packer {
        tar,
        root,
        resolve,
        opts,
        links: HashMap::new(),
        stack: Vec::new(),
        entries: 0,
    };
    let st = fs::fstat(fd.as_fd()).map_err(ArchiveError::io(&shown, "stat"))?;
    if fs::is_dir(&st) && !opts.recursive {
        return Err(ArchiveError::IsDir { path: shown });
    }
    p.entry(Some(&fd), None, path, top, &st)?;
    let mut out = p.tar.into_inner().map_err(ArchiveError::Write)?;
    out.flush().map_err(ArchiveError::Write)?;
    Ok(p.entries)
}

fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = a.to_vec();
    if !v.is_empty() && !v.ends_with(b"/") {
        v.push(b'/');
    }
    v.extend_from_slice(b);
    v
}

impl<W: Write> Packer<'_, W> {
    fn header(&self, st: &libc::stat, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        let (uid, gid) = self.opts.owner.unwrap_or((st.st_uid, st.st_gid));
        h.set_uid(uid.into());
        h.set_gid(gid.into());
        h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
        h.set_size(0);
        h
    }

    /// Open the object `st` describes for reading, and check it is still that object.
    /// Without link following it is opened by name in its parent (never through a
    /// link); with it, or at the top, by its path from the root.
    fn reopen(
        &self,
        parent: Option<(BorrowedFd<'_>, &[u8])>,
        src: &[u8],
        flags: libc::c_int,
        st: &libc::stat,
    ) -> Result<OwnedFd, ArchiveError> {
        let shown = show(src);
        let fd = match parent {
            Some((dir, name)) if !self.opts.follow_symlinks => fs::open_name(dir, name, flags, 0),
            _ => {
                let nofollow = if self.opts.follow_symlinks {
                    0
                } else {
                    libc::O_NOFOLLOW
                };
                fs::open_at(self.root, src, flags | nofollow, self.resolve)
            }
        }
        .map_err(ArchiveError::io(&shown, "opening"))?;
        let now = fs::fstat(fd.as_fd()).map_err(ArchiveError::io(&shown, "stat"))?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            return Err(ArchiveError::Refused {
                entry: shown,
                reason: "it was replaced while being archived".into(),
            });
        }
        Ok(fd)
    }

    /// Archive one filesystem object, described by `st`. `link_fd` is an `O_PATH`
    /// descriptor of it for reading a top-level link; `parent` is its directory and its
    /// name there; `src` its path from the root; `name` its archive path.
    fn entry(
        &mut self,
        link_fd: Option<&OwnedFd>,
        parent: Option<(BorrowedFd<'_>, &[u8])>,
        src: &[u8],
        name: &[u8],
        st: &libc::stat,
    ) -> Result<(), ArchiveError> {
        let shown = show(src);
        let io = |what| ArchiveError::io(&shown, what);
        let w = ArchiveError::Write;
        self.entries += 1;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let key = (st.st_dev, st.st_ino);
                if self.stack.contains(&key) {
                    return Err(ArchiveError::Refused {
                        entry: shown,
                        reason: "following symlinks leads back into a directory being archived"
                            .into(),
                    });
                }
                let mut h = self.header(st, tar::EntryType::Directory);
                self.tar
                    .append_data(&mut h, path_of(&join(name, b"")), std::io::empty())
                    .map_err(w)?;
                let dir = self.reopen(parent, src, libc::O_RDONLY | libc::O_DIRECTORY, st)?;
                self.stack.push(key);
                for child in fs::list_dir(dir.as_fd()).map_err(io("listing directory"))? {
                    let child_src = join(src, &child);
                    let child_name = join(name, &child);
                    let cst = self.stat_child(dir.as_fd(), &child, &child_src)?;
                    self.entry(
                        None,
                        Some((dir.as_fd(), &child)),
                        &child_src,
                        &child_name,
                        &cst,
                    )?;
                }
                self.stack.pop();
            }
            libc::S_IFREG => {
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = self.links.get(&key) {
                        let mut h = self.header(st, tar::EntryType::Link);
                        let first = first.clone();
                        self.tar
                            .append_link(&mut h, path_of(name), path_of(&first))
                            .map_err(w)?;
                        return Ok(());
                    }
                    self.links.insert(key, name.to_vec());
                }
                let file = self.reopen(parent, src, libc::O_RDONLY, st)?;
                let mut h = self.header(st, tar::EntryType::Regular);
                let size = u64::try_from(st.st_size).unwrap_or(0);
                h.set_size(size);
                // A file that changes size while it is read would corrupt the stream;
                // read exactly the size in the header, padding a shrunken file.
                let file = std::io::BufReader::with_capacity(
                    crate::unpack::io_buf(size),
                    std::fs::File::from(file),
                );
                let reader =
                    std::io::Read::chain(std::io::Read::take(file, size), std::io::repeat(0));
                self.tar
                    .append_data(&mut h, path_of(name), std::io::Read::take(reader, size))
                    .map_err(w)?;
            }
            libc::S_IFLNK => {
                let target = match (parent, link_fd) {
                    (Some((dir, last)), _) => fs::readlink_at(dir, last),
                    (None, Some(fd)) => fs::readlink_at(fd.as_fd(), b""),
                    (None, None) => Err(std::io::Error::from_raw_os_error(libc::EBADF)),
                }
                .map_err(io("reading link"))?;
                let mut h = self.header(st, tar::EntryType::Symlink);
                self.tar
                    .append_link(&mut h, path_of(name), path_of(&target))
                    .map_err(w)?;
            }
            kind @ (libc::S_IFIFO | libc::S_IFCHR | libc::S_IFBLK) => {
                let t = match kind {
                    libc::S_IFIFO => tar::EntryType::Fifo,
                    libc::S_IFCHR => tar::EntryType::Char,
                    _ => tar::EntryType::Block,
                };
                let mut h = self.header(st, t);
                if kind != libc::S_IFIFO {
                    h.set_device_major(libc::major(st.st_rdev)).map_err(w)?;
                    h.set_device_minor(libc::minor(st.st_rdev)).map_err(w)?;
                }
                self.tar
                    .append_data(&mut h, path_of(name), std::io::empty())
                    .map_err(w)?;
            }
            // Sockets have no meaning in an archive.
            _ => self.entries -= 1,
        }
        Ok(())
    }

    /// The metadata of a directory entry: of the entry itself, or, when following
    /// links, of what it points to (resolved from the root).
    fn stat_child(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        src: &[u8],
    ) -> Result<libc::stat, ArchiveError> {
        let shown = show(src);
        let lst = fs::lstat_at(dir, name).map_err(ArchiveError::io(&shown, "stat"))?;
        if !(self.opts.follow_symlinks && lst.st_mode & libc::S_IFMT == libc::S_IFLNK) {
            return Ok(lst);
        }
        let fd = fs::open_at(self.root, src, libc::O_PATH, self.resolve)
            .map_err(ArchiveError::io(&shown, "following link"))?;
        fs::fstat(fd.as_fd()).map_err(ArchiveError::io(&shown, "stat"))
    }
}

fn path_of(bytes: &[u8]) -> &std::path::Path {
    std::path::Path::new(std::ffi::OsStr::from_bytes(bytes))
}

use std::os::unix::ffi::OsStrExt;
