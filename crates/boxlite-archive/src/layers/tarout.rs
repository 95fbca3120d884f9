//! The canonical tar stream the flattener writes: ustar headers, with a PAX header in
//! front only where a value does not fit (long names, large ids or sizes, extended
//! attributes). Numeric owners only, no user or group names, nothing else.

use std::io::{self, Write};

use super::tarin::Kind;

const BLOCK: usize = 512;

/// What an entry carries besides its name and kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug)]
pub struct TarWriter<W: Write> {
    w: W,
    written: u64,
}

impl<W: Write> TarWriter<W> {
    pub fn new(w: W) -> Self {
        TarWriter { w, written: 0 }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    /// Write one entry's header (and its PAX header when needed). A file's `size`
    /// bytes of content must follow through [`TarWriter::content`] and
    /// [`TarWriter::end_content`].
    pub fn header(
        &mut self,
        path: &[u8],
        kind: Kind,
        meta: &Meta,
        size: u64,
        link: &[u8],
        dev: (u32, u32),
    ) -> io::Result<()> {
        let mut name = path.to_vec();
        if kind == Kind::Dir {
            name.push(b'/');
        }
        let mtime = u64::try_from(meta.mtime.max(0)).unwrap_or(0);
        let mut pax: Vec<(&[u8], Vec<u8>)> = Vec::new();
        if name.len() > 99 {
            pax.push((b"path", name.clone()));
        }
        if link.len() > 99 {
            pax.push((b"linkpath", link.to_vec()));
        }
        const MAX7: u64 = 0o7777777;
        const MAX11: u64 = 0o77777777777;
        if u64::from(meta.uid) > MAX7 {
            pax.push((b"uid", meta.uid.to_string().into_bytes()));
        }
        if u64::from(meta.gid) > MAX7 {
            pax.push((b"gid", meta.gid.to_string().into_bytes()));
        }
        if size > MAX11 {
            pax.push((b"size", size.to_string().into_bytes()));
        }
        if mtime > MAX11 {
            pax.push((b"mtime", mtime.to_string().into_bytes()));
        }
        let xattr_keys: Vec<Vec<u8>> = meta
            .xattrs
            .iter()
            .map(|(k, _)| [&b"SCHILY.xattr."[..], k].concat())
            .collect();
        let mut records = Vec::new();
        // Names are bytes, not always UTF-8: say so, or a reader (libarchive in a C
        // locale) fails to convert them.
        if pax.iter().any(|(_, v)| std::str::from_utf8(v).is_err()) {
            records.extend(pax_record(b"hdrcharset", b"BINARY"));
        }
        for (k, v) in &pax {
            records.extend(pax_record(k, v));
        }
        for (k, (_, v)) in xattr_keys.iter().zip(&meta.xattrs) {
            records.extend(pax_record(k, v));
        }
        if !records.is_empty() {
            let h = ustar(
                b"././@PaxHeader",
                b'x',
                0o644,
                (0, 0),
                records.len() as u64,
                0,
                b"",
                (0, 0),
            );
            self.put(&h)?;
            self.put(&records)?;
            self.pad(records.len() as u64)?;
        }
        let flag = match kind {
            Kind::File => b'0',
            Kind::HardLink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        };
        let short = |v: &[u8]| -> Vec<u8> { v.iter().take(99).copied().collect() };
        let h = ustar(
            &short(&name),
            flag,
            meta.mode & 0o7777,
            (meta.uid.min(0o7777777), meta.gid.min(0o7777777)),
            size.min(MAX11),
            mtime.min(MAX11),
            &short(link),
            dev,
        );
        self.put(&h)
    }

    /// Part of the current file's content.
    pub fn content(&mut self, data: &[u8]) -> io::Result<()> {
        self.put(data)
    }

    /// Pad the file content of `size` bytes just written to a whole block.
    pub fn pad(&mut self, size: u64) -> io::Result<()> {
        let n = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        self.put(&[0u8; BLOCK][..usize::try_from(n).unwrap_or(0)])
    }

    /// End the archive and return the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.put(&[0u8; 2 * BLOCK])?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// One PAX record (`LEN KEY=VALUE\n`); its length counts its own digits.
pub fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

#[allow(clippy::too_many_arguments)]
fn ustar(
    name: &[u8],
    flag: u8,
    mode: u32,
    (uid, gid): (u32, u32),
    size: u64,
    mtime: u64,
    link: &[u8],
    (major, minor): (u32, u32),
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], u64::from(uid));
    octal(&mut h[116..124], u64::from(gid));
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = flag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], u64::from(major));
    octal(&mut h[337..345], u64::from(minor));
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// Zero-padded octal filling the field but its last byte (a NUL).
fn octal(field: &mut [u8], v: u64) {
    let width = field.len() - 1;
    let s = format!("{v:0width$o}");
    let s = s.as_bytes();
    let s = &s[s.len().saturating_sub(width)..];
    field[..width].copy_from_slice(s);
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        for value_len in [0, 1, 5, 6, 7, 90, 95, 96, 97, 98, 99, 990, 995, 996, 1000] {
            let v = vec![b'a'; value_len];
            let r = pax_record(b"path", &v);
            let len: usize = std::str::from_utf8(&r[..r.iter().position(|&b| b == b' ').unwrap()])
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, r.len(), "value of {value_len} bytes");
        }
    }
}
