//! File helpers: sparse verified copies and atomic writes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Copy `src` to `dst`, skipping all-zero blocks so the copy stays sparse, and return the
/// sha256 of the content.
pub fn copy_sparse_hashed(src: &Path, dst: &Path) -> io::Result<String> {
    const BLOCK: usize = 1 << 20;
    let mut input = File::open(src)?;
    let mut out = File::create(dst)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    let mut len = 0u64;
    loop {
        let mut n = 0;
        while n < BLOCK {
            let r = input.read(&mut buf[n..])?;
            if r == 0 {
                break;
            }
            n += r;
        }
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        if buf[..n].iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(i64::try_from(n).unwrap_or(i64::MAX)))?;
        } else {
            out.write_all(&buf[..n])?;
        }
        len += n as u64;
    }
    out.set_len(len)?;
    out.sync_all()?;
    Ok(hex::encode(h.finalize()))
}

/// Copy `src` to a new file `dst` (which must not exist), keeping it sparse: holes of
/// `src` are skipped (`SEEK_DATA`), and so are all-zero blocks inside its data. Returns
/// the bytes written. `dst` is synced. Used for guest RAM files, where most of a large
/// file is untouched.
pub fn copy_sparse(src: &Path, dst: &Path) -> io::Result<u64> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const BLOCK: usize = 256 << 10;
    let input = File::open(src)?;
    let len = input.metadata()?.len();
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)?;
    out.set_len(len)?;
    let mut buf = vec![0u8; BLOCK];
    let mut written = 0u64;
    let mut pos = 0u64;
    while pos < len {
        let Some(data) = seek_data(&input, pos)? else {
            break;
        };
        let end = seek_hole(&input, data)?.min(len);
        let mut at = data;
        while at < end {
            let want = usize::try_from((end - at).min(BLOCK as u64)).unwrap_or(BLOCK);
            let n = input.read_at(&mut buf[..want], at)?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|&b| b != 0) {
                out.write_all_at(&buf[..n], at)?;
                written += n as u64;
            }
            at += n as u64;
        }
        pos = end.max(at);
    }
    out.sync_all()?;
    Ok(written)
}

/// The next offset at or after `from` that holds data, or `None` past the last.
fn seek_data(f: &File, from: u64) -> io::Result<Option<u64>> {
    lseek(f, from, libc::SEEK_DATA)
}

/// The next hole at or after `from` (the end of the file counts as one).
fn seek_hole(f: &File, from: u64) -> io::Result<u64> {
    Ok(lseek(f, from, libc::SEEK_HOLE)?.unwrap_or(from))
}

fn lseek(f: &File, from: u64, whence: i32) -> io::Result<Option<u64>> {
    use std::os::fd::AsRawFd;
    let off = i64::try_from(from).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek on a descriptor we own; it does not touch memory.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            // A filesystem without SEEK_DATA: treat everything as data.
            Some(libc::EINVAL) if whence == libc::SEEK_DATA => Ok(Some(from)),
            Some(libc::EINVAL) => Ok(Some(f.metadata()?.len())),
            _ => Err(e),
        };
    }
    #[allow(clippy::cast_sign_loss)]
    Ok(Some(r as u64))
}

/// Remove a file and sync its directory, so the removal survives a crash. A file that is
/// already gone is fine.
pub fn remove_durably(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    sync_parent(path)
}

/// fsync the directory holding `path`.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Write a file atomically: a temporary sibling, fsync, rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Last `max` bytes of a text file, lossily decoded, for error messages. Reads only the
/// tail: the console log is written by the guest and can be arbitrarily large.
pub fn tail_file(path: &Path, max: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(max as u64)))
        .is_err()
    {
        return String::new();
    }
    let mut data = Vec::with_capacity(max.min(1 << 20));
    let _ = f.take(max as u64).read_to_end(&mut data);
    String::from_utf8_lossy(&data).replace('\r', "")
}

/// Create `path` empty (mode 0600) unless it exists; an existing file is left as it is.
/// For files a jailed helper is granted one by one, which it could not create itself.
pub fn ensure_private_file(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map(drop)
}

#[cfg(test)]
mod sparse_tests {
    use super::*;

    #[test]
    fn a_sparse_copy_keeps_content_and_leaves_holes_and_zero_blocks_out() {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let dir = std::env::temp_dir().join(format!("bx-sparse-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let (src, dst) = (dir.join("src"), dir.join("dst"));
        let f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(&vec![0u8; 4 << 20], 8 << 20).unwrap(); // data, all zero
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        drop(f);

        let written = copy_sparse(&src, &dst).unwrap();
        let again = copy_sparse(&src, &dst).unwrap_err();

        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert!(written < 1 << 20, "{written} bytes written");
        assert!(std::fs::metadata(&dst).unwrap().blocks() * 512 < 2 << 20);
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_preserves_content_and_hash() {
        let dir = std::env::temp_dir().join(format!("bx-fs-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src");
        let mut data = vec![0u8; 3 << 20];
        data[5] = 1;
        data[(3 << 20) - 1] = 9;
        std::fs::write(&src, &data).unwrap();

        let hash = copy_sparse_hashed(&src, &dir.join("dst")).unwrap();

        assert_eq!(std::fs::read(dir.join("dst")).unwrap(), data);
        assert_eq!(hash, sha256_file(&src).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tail_reads_only_the_last_bytes_of_a_large_file() {
        let path = std::env::temp_dir().join(format!("bx-tail-{}", rand::random::<u64>()));
        let mut data = vec![b'x'; 5 << 20];
        data.extend_from_slice(b"\r\nKernel panic - the end");
        std::fs::write(&path, &data).unwrap();

        let tail = tail_file(&path, 24);

        std::fs::remove_file(&path).unwrap();
        assert_eq!(tail, "\nKernel panic - the end");
    }
}

/// Whether a unix socket bound at `path` is ready to accept connections, as far as this
/// network namespace can tell.
///
/// `bind(2)` creates the file before `listen(2)` runs, so a connect in between is refused.
/// `/proc/net/unix` shows the listening flag (`__SO_ACCEPTCON`). A socket bound in another
/// network namespace is not listed there; then the file's existence is all we can see.
pub fn unix_socket_ready(path: &Path) -> bool {
    if !path.exists() {
        return false;
    }
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return true;
    };
    let want = path.as_os_str().to_string_lossy();
    listening_in_table(&table, &want).unwrap_or(true)
}

/// `Some(listening)` for the socket bound at `path` in a `/proc/net/unix` table, `None` if absent.
fn listening_in_table(table: &str, path: &str) -> Option<bool> {
    const SO_ACCEPTCON: u32 = 0x10000;
    let mut seen = None;
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 8 || cols[7..].join(" ") != path {
            continue;
        }
        let flags = u32::from_str_radix(cols[3], 16).unwrap_or(0);
        let listening = flags & SO_ACCEPTCON != 0;
        seen = Some(seen.unwrap_or(false) || listening);
    }
    seen
}

#[cfg(test)]
mod socket_tests {
    use super::*;

    #[test]
    fn bound_but_not_listening_is_not_ready() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000001: 00000002 00000000 00000000 0001 01 11 /tmp/b/v.sock\n\
            0000000002: 00000002 00000000 00010000 0001 01 12 /tmp/a/v.sock\n";
        assert_eq!(listening_in_table(table, "/tmp/b/v.sock"), Some(false));
        assert_eq!(listening_in_table(table, "/tmp/a/v.sock"), Some(true));
        assert_eq!(listening_in_table(table, "/tmp/c/v.sock"), None);
    }

    #[test]
    fn a_real_listener_is_seen() {
        let dir = std::env::temp_dir().join(format!("bl-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.sock");
        assert!(!unix_socket_ready(&p));
        let _l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        assert!(unix_socket_ready(&p));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
