//! A strict, bounded tar reader for image layers.
//!
//! Layers are hostile. This reader accepts ustar, GNU and PAX headers as image builders
//! write them, and refuses what it cannot bound: an extended header or long name larger
//! than [`MAX_EXTENDED`], sparse entries, types it does not know, bad checksums and
//! numbers that do not parse. It never allocates more than one extended header at a time,
//! and file contents are only ever streamed through.

use std::io::{self, Read};

/// The largest PAX header, GNU long name or global header accepted, in bytes.
pub const MAX_EXTENDED: u64 = 1 << 20;

/// Extended attributes of one entry, at most this many bytes in all (names and values;
/// ext4 keeps them in one block).
pub const MAX_XATTR_BYTES: usize = 64 << 10;

const BLOCK: usize = 512;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    Fifo,
    Char,
    Block,
}

/// One entry's header, after its extended headers were applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Kind,
    /// Permission bits, setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    /// Bytes of content that follow the header.
    pub size: u64,
    pub dev: (u32, u32),
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why the stream was refused: the entry (when one was being read) and the reason.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("entry {entry:?}: {reason}")]
    Entry { entry: String, reason: String },
    #[error("{0}")]
    Stream(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn stream(reason: impl Into<String>) -> TarError {
    TarError::Stream(reason.into())
}

fn entry_err(path: &[u8], reason: impl Into<String>) -> TarError {
    TarError::Entry {
        entry: crate::show(path),
        reason: reason.into(),
    }
}

/// Reads entries one after another; the content of the current entry may be read
/// through [`TarReader::content`] and is skipped otherwise.
pub struct TarReader<R> {
    r: R,
    /// Content bytes of the current entry not yet read.
    left: u64,
    /// Padding after the current entry's content.
    pad: u64,
    /// Bytes read from `r` so far.
    consumed: u64,
    done: bool,
}

impl<R> std::fmt::Debug for TarReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarReader")
            .field("consumed", &self.consumed)
            .finish_non_exhaustive()
    }
}

impl<R: Read> TarReader<R> {
    pub fn new(r: R) -> Self {
        TarReader {
            r,
            left: 0,
            pad: 0,
            consumed: 0,
            done: false,
        }
    }

    /// Bytes of the tar stream read so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The underlying reader, for draining what follows the end of the archive.
    pub fn into_inner(self) -> R {
        self.r
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), TarError> {
        match self.r.read_exact(buf) {
            Ok(()) => {
                self.consumed += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(stream("the tar stream ends in the middle of an entry"))
            }
            Err(e) => Err(TarError::Io(e)),
        }
    }

    fn skip(&mut self, mut n: u64) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = usize::try_from(n.min(buf.len() as u64)).unwrap_or(buf.len());
            self.read_exact(&mut buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Whatever of the current entry is left, and its padding.
    fn finish_entry(&mut self) -> Result<(), TarError> {
        let n = self.left + self.pad;
        self.left = 0;
        self.pad = 0;
        self.skip(n)
    }

    /// The content of the current entry (bounded by its size).
    pub fn content(&mut self) -> Content<'_, R> {
        Content { t: self }
    }

    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>, TarError> {
        let mut b = [0u8; BLOCK];
        // End of input exactly at a block boundary (no end-of-archive blocks) ends the
        // archive, as every tar reader allows.
        let mut got = 0;
        while got < BLOCK {
            match self.r.read(&mut b[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(stream("the tar stream ends inside a header")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TarError::Io(e)),
            }
        }
        self.consumed += BLOCK as u64;
        Ok(Some(b))
    }

    /// The body of an extended header of `size` bytes.
    fn read_extended(&mut self, size: u64, what: &str) -> Result<Vec<u8>, TarError> {
        if size > MAX_EXTENDED {
            return Err(stream(format!(
                "a {what} of {size} bytes (at most {MAX_EXTENDED} are accepted)"
            )));
        }
        let mut v = vec![0u8; usize::try_from(size).unwrap_or(0)];
        self.read_exact(&mut v)?;
        self.skip(padding(size))?;
        Ok(v)
    }

    /// The next entry, or `None` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<Header>, TarError> {
        if self.done {
            return Ok(None);
        }
        self.finish_entry()?;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Records> = None;
        loop {
            let Some(b) = self.read_block()? else {
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(stream("an extended header with no entry after it"));
                }
                self.done = true;
                return Ok(None);
            };
            if b.iter().all(|&x| x == 0) {
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(stream("an extended header with no entry after it"));
                }
                self.done = true;
                return Ok(None);
            }
            if !checksum_ok(&b) {
                return Err(stream(format!(
                    "a header with a bad checksum at byte {} (the stream is not a tar archive, or is corrupt)",
                    self.consumed - BLOCK as u64
                )));
            }
            let raw_name = field_bytes(&b[0..100]).to_vec();
            let size = number(&b[124..136]).ok_or_else(|| entry_err(&raw_name, "bad size"))?;
            let flag = b[156];
            match flag {
                b'x' => {
                    if pax.is_some() {
                        return Err(stream("two PAX headers for one entry"));
                    }
                    let body = self.read_extended(size, "PAX header")?;
                    pax = Some(parse_pax(&body)?);
                    continue;
                }
                b'g' => {
                    // Global headers carry defaults no image builder relies on; read
                    // (bounded) and ignored, as before.
                    self.read_extended(size, "global PAX header")?;
                    continue;
                }
                b'L' | b'K' => {
                    let slot = if flag == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(stream("two GNU long names for one entry"));
                    }
                    let mut body = self.read_extended(size, "GNU long name")?;
                    while body.last() == Some(&0) {
                        body.pop();
                    }
                    if flag == b'L' {
                        long_name = Some(body);
                    } else {
                        long_link = Some(body);
                    }
                    continue;
                }
                _ => {}
            }
            let ustar = &b[257..263] == b"ustar\0";
            let mut path = match long_name.take() {
                Some(n) => n,
                None if ustar && b[345] != 0 => {
                    let mut p = field_bytes(&b[345..500]).to_vec();
                    p.push(b'/');
                    p.extend_from_slice(&raw_name);
                    p
                }
                None => raw_name.clone(),
            };
            let mut link = long_link
                .take()
                .unwrap_or_else(|| field_bytes(&b[157..257]).to_vec());
            let num = |range: std::ops::Range<usize>, what: &str| {
                number(&b[range]).ok_or_else(|| entry_err(&path, format!("bad {what}")))
            };
            let mode = u32::try_from(num(100..108, "mode")? & 0o7777).unwrap_or(0);
            let mut uid = num(108..116, "uid")?;
            let mut gid = num(116..124, "gid")?;
            let mut mtime = i64::try_from(num(136..148, "mtime")?).unwrap_or(i64::MAX);
            let mut size = size;
            let (mut major, mut minor) = (0, 0);
            if matches!(flag, b'3' | b'4') {
                major = num(329..337, "device major")?;
                minor = num(337..345, "device minor")?;
            }
            let mut xattrs = Vec::new();
            let mut xattr_bytes = 0usize;
            for (k, v) in pax.take().unwrap_or_default() {
                let dec = |v: &[u8]| -> Result<u64, TarError> {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| {
                            entry_err(
                                &path,
                                format!("bad PAX {} {:?}", crate::show(&k), crate::show(v)),
                            )
                        })
                };
                match k.as_slice() {
                    b"path" => path = v,
                    b"linkpath" => link = v,
                    b"size" => size = dec(&v)?,
                    b"uid" => uid = dec(&v)?,
                    b"gid" => gid = dec(&v)?,
                    b"mtime" => {
                        // Seconds, maybe with a fraction; the fraction is dropped.
                        let s = std::str::from_utf8(&v).unwrap_or("");
                        let whole = s.split('.').next().unwrap_or("");
                        mtime = whole
                            .parse::<i64>()
                            .map_err(|_| entry_err(&path, format!("bad PAX mtime {s:?}")))?;
                    }
                    k if k.starts_with(b"GNU.sparse.") => {
                        return Err(entry_err(&path, "sparse entries are not accepted"));
                    }
                    k if k.starts_with(b"SCHILY.xattr.") => {
                        let name = k[b"SCHILY.xattr.".len()..].to_vec();
                        check_xattr_name(&path, &name)?;
                        xattr_bytes += name.len() + v.len();
                        if xattr_bytes > MAX_XATTR_BYTES {
                            return Err(entry_err(
                                &path,
                                format!("more than {MAX_XATTR_BYTES} bytes of extended attributes"),
                            ));
                        }
                        xattrs.retain(|(n, _): &(Vec<u8>, Vec<u8>)| *n != name);
                        xattrs.push((name, v));
                    }
                    _ => {}
                }
            }
            let kind = match flag {
                b'0' | 0 | b'7' if path.ends_with(b"/") => Kind::Dir,
                b'0' | 0 | b'7' => Kind::File,
                b'1' => Kind::HardLink,
                b'2' => Kind::Symlink,
                b'3' => Kind::Char,
                b'4' => Kind::Block,
                b'5' => Kind::Dir,
                b'6' => Kind::Fifo,
                b'S' => return Err(entry_err(&path, "sparse entries are not accepted")),
                other => {
                    return Err(entry_err(
                        &path,
                        format!(
                            "unsupported entry type {:?}",
                            char::from(other).escape_default().to_string()
                        ),
                    ));
                }
            };
            let id = |v: u64, what: &str| {
                u32::try_from(v)
                    .map_err(|_| entry_err(&path, format!("{what} {v} does not fit in 32 bits")))
            };
            let header = Header {
                kind,
                mode,
                uid: id(uid, "uid")?,
                gid: id(gid, "gid")?,
                mtime,
                size,
                dev: (id(major, "device major")?, id(minor, "device minor")?),
                xattrs,
                link: std::mem::take(&mut link),
                path: std::mem::take(&mut path),
            };
            self.left = size;
            self.pad = padding(size);
            return Ok(Some(header));
        }
    }
}

/// Reads the current entry's content.
#[derive(Debug)]
pub struct Content<'a, R> {
    t: &'a mut TarReader<R>,
}

impl<R: Read> Read for Content<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.t.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let k = usize::try_from(self.t.left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = self.t.r.read(&mut buf[..k])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the tar stream ends in the middle of a file",
            ));
        }
        self.t.left -= n as u64;
        self.t.consumed += n as u64;
        Ok(n)
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// A NUL-terminated field's bytes.
fn field_bytes(f: &[u8]) -> &[u8] {
    match f.iter().position(|&b| b == 0) {
        Some(i) => &f[..i],
        None => f,
    }
}

/// A numeric field: octal (spaces and NULs around it), or GNU base-256.
fn number(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|b| b & 0x80 != 0) {
        if f[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut v: u64 = u64::from(f[0] & 0x3f);
        for &b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s = field_bytes(f);
    let s = trim(s);
    if s.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for &b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' '] = s {
        s = rest;
    }
    s
}

fn checksum_ok(b: &[u8; BLOCK]) -> bool {
    let Some(want) = number(&b[148..156]) else {
        return false;
    };
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &x) in b.iter().enumerate() {
        let x = if (148..156).contains(&i) { b' ' } else { x };
        unsigned += u64::from(x);
        signed += i64::from(x.cast_signed());
    }
    want == unsigned || i64::try_from(want).is_ok_and(|w| w == signed)
}

/// PAX records: `LEN KEY=VALUE\n`, LEN counting the whole record.
/// Key and value pairs, as bytes.
type Records = Vec<(Vec<u8>, Vec<u8>)>;

fn parse_pax(mut body: &[u8]) -> Result<Records, TarError> {
    let bad = || stream("a malformed PAX header");
    let mut out = Vec::new();
    while !body.is_empty() {
        if body.iter().all(|&b| b == 0) {
            break;
        }
        let sp = body.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&body[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= sp + 1 || len > body.len() || body[len - 1] != b'\n' {
            return Err(bad());
        }
        let rec = &body[sp + 1..len - 1];
        let eq = rec.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        body = &body[len..];
    }
    Ok(out)
}

/// Extended attribute names an image may carry: the namespaces a Linux root
/// filesystem uses. Anything else could not be set in the guest either.
fn check_xattr_name(path: &[u8], name: &[u8]) -> Result<(), TarError> {
    let in_ns = [&b"user."[..], b"security.", b"trusted."]
        .iter()
        .any(|p| name.starts_with(p) && name.len() > p.len());
    let acl = name == b"system.posix_acl_access" || name == b"system.posix_acl_default";
    let ok_ns = in_ns || acl;
    if !ok_ns || name.len() > 255 || name.contains(&0) || std::str::from_utf8(name).is_err() {
        return Err(entry_err(
            path,
            format!(
                "extended attribute {:?} is not accepted (only user., security., trusted. and POSIX ACLs)",
                crate::show(name)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_octal_and_base256_and_refuse_junk() {
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(b"  755 \0"), Some(0o755));
        assert_eq!(number(b"\0\0\0\0"), Some(0));
        assert_eq!(number(&[0x80, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(number(b"12x4\0"), None);
        assert_eq!(number(&[0xff, 0xff, 0, 0]), None, "negative");
    }

    #[test]
    fn pax_records_parse_and_malformed_ones_are_refused() {
        let recs = parse_pax(b"16 path=a/b/c/d\n12 uid=1234\n").unwrap();
        assert_eq!(recs[0], (b"path".to_vec(), b"a/b/c/d".to_vec()));
        assert_eq!(recs[1], (b"uid".to_vec(), b"1234".to_vec()));
        for bad in [
            &b"99 path=x\n"[..],
            b"5 p=x\n",
            b"x path=y\n",
            b"10 pathxxx\n",
        ] {
            assert!(parse_pax(bad).is_err(), "{:?}", crate::show(bad));
        }
    }
}
