//! Content-addressed blobs: layers, manifests and configs, each stored under its digest
//! and trusted only after its bytes hashed to that digest.
//!
//! ```text
//! images/blobs/sha256/<hex>    complete, verified content (read-only, never rewritten)
//! images/blobs/tmp/<random>    downloads in progress; removed on failure or by sweep
//! ```
//!
//! A blob is written to a private temporary file, hashed as it is written, and renamed
//! into place only if the digest (and the expected size, when known) match; two
//! processes writing the same blob both succeed and leave one copy. Readers re-hash
//! while they stream a blob ([`BlobStore::open_verified`]), so a blob corrupted on disk
//! after the fact is detected at use, reported as [`BlobError::Corrupt`] and removed,
//! never silently used.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),
    #[error("blob {digest} is not in the store")]
    Missing { digest: String },
    #[error("blob {expected} arrived with digest sha256:{actual} ({size} bytes); it was discarded")]
    Mismatch {
        expected: String,
        actual: String,
        size: u64,
    },
    #[error(
        "blob {digest} arrived with {actual} bytes, the manifest says {expected}; it was discarded"
    )]
    WrongSize {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} is larger than the {limit} bytes its manifest allows")]
    TooLarge { digest: String, limit: u64 },
    #[error(
        "blob {digest} in the store is corrupt (its content hashes to sha256:{actual}); it was removed and must be fetched again"
    )]
    Corrupt { digest: String, actual: String },
    #[error("blob store {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The hex part of a `sha256:<hex>` digest, validated.
pub fn digest_hex(digest: &str) -> Result<&str, BlobError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| BlobError::InvalidDigest(digest.to_string()))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(BlobError::InvalidDigest(digest.to_string()));
    }
    Ok(hex)
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        BlobStore { dir: dir.into() }
    }

    fn io(&self, path: &Path) -> impl FnOnce(io::Error) -> BlobError {
        let path = path.to_path_buf();
        move |source| BlobError::Io { path, source }
    }

    pub fn path(&self, digest: &str) -> Result<PathBuf, BlobError> {
        Ok(self.dir.join("sha256").join(digest_hex(digest)?))
    }

    pub fn has(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|p| p.is_file())
    }

    /// Start writing a blob that must hash to `digest` and, if given, be `size` bytes.
    pub fn writer(&self, digest: &str, size: Option<u64>) -> Result<BlobWriter, BlobError> {
        let final_path = self.path(digest)?;
        let tmp_dir = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(self.io(&tmp_dir))?;
        std::fs::create_dir_all(self.dir.join("sha256")).map_err(self.io(&self.dir))?;
        let tmp = tmp_dir.join(format!(
            "{}.{}.{:016x}",
            &digest_hex(digest)?[..16],
            std::process::id(),
            rand::random::<u64>()
        ));
        let file = std::fs::File::create(&tmp).map_err(self.io(&tmp))?;
        Ok(BlobWriter {
            digest: digest.to_string(),
            size,
            written: 0,
            hasher: Sha256::new(),
            file: Some(io::BufWriter::with_capacity(1 << 20, file)),
            tmp,
            final_path,
        })
    }

    /// Start writing a blob whose digest is whatever its content hashes to (a layer of a
    /// `docker save` archive, which names layers by path). See
    /// [`BlobWriter::commit_computed`].
    pub fn writer_computed(&self) -> Result<BlobWriter, BlobError> {
        let tmp_dir = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(self.io(&tmp_dir))?;
        std::fs::create_dir_all(self.dir.join("sha256")).map_err(self.io(&self.dir))?;
        let tmp = tmp_dir.join(format!(
            "computed.{}.{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let file = std::fs::File::create(&tmp).map_err(self.io(&tmp))?;
        Ok(BlobWriter {
            digest: String::new(),
            size: None,
            written: 0,
            hasher: Sha256::new(),
            file: Some(io::BufWriter::with_capacity(1 << 20, file)),
            tmp,
            final_path: PathBuf::new(),
        })
    }

    /// Store `data` as a blob (a manifest or a config, read whole).
    pub fn put(&self, digest: &str, data: &[u8]) -> Result<PathBuf, BlobError> {
        let mut w = self.writer(digest, Some(data.len() as u64))?;
        w.write_all(data).map_err(self.io(&w.tmp.clone()))?;
        w.commit()
    }

    /// Read a small blob whole, verifying it.
    pub fn read(&self, digest: &str) -> Result<Vec<u8>, BlobError> {
        let mut r = self.open_verified(digest)?;
        let mut data = Vec::new();
        r.read_to_end(&mut data)
            .map_err(|e| match e.downcast::<BlobError>() {
                Ok(b) => b,
                Err(e) => BlobError::Io {
                    path: PathBuf::from(digest),
                    source: e,
                },
            })?;
        Ok(data)
    }

    /// A reader of the blob that hashes what it reads; at end of file a mismatch removes
    /// the blob and fails the read with [`BlobError::Corrupt`] (wrapped in the
    /// `io::Error`).
    pub fn open_verified(&self, digest: &str) -> Result<VerifiedReader, BlobError> {
        let path = self.path(digest)?;
        let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BlobError::Missing {
                digest: digest.to_string(),
            },
            _ => BlobError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        Ok(VerifiedReader {
            inner: io::BufReader::with_capacity(1 << 20, file),
            hasher: Some(Sha256::new()),
            digest: digest.to_string(),
            path,
        })
    }

    /// Re-hash a stored blob. A corrupt one is removed and reported as
    /// [`BlobError::Corrupt`].
    pub fn verify(&self, digest: &str) -> Result<(), BlobError> {
        let mut r = self.open_verified(digest)?;
        std::io::copy(&mut r, &mut std::io::sink())
            .map(|_| ())
            .map_err(|e| match e.downcast::<BlobError>() {
                Ok(b) => b,
                Err(e) => BlobError::Io {
                    path: r.path.clone(),
                    source: e,
                },
            })
    }

    pub fn remove(&self, digest: &str) -> Result<(), BlobError> {
        let p = self.path(digest)?;
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(BlobError::Io { path: p, source: e })
            }
            _ => Ok(()),
        }
    }

    /// Every stored digest.
    pub fn list(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.dir.join("sha256")) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|hex| format!("sha256:{hex}"))
            .filter(|d| digest_hex(d).is_ok())
            .collect()
    }
}

/// An in-progress blob. Dropping it without [`BlobWriter::commit`] removes the temporary
/// file, so an interrupted download leaves nothing that could later be trusted.
#[derive(Debug)]
pub struct BlobWriter {
    digest: String,
    size: Option<u64>,
    written: u64,
    hasher: Sha256,
    file: Option<io::BufWriter<std::fs::File>>,
    tmp: PathBuf,
    final_path: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(limit) = self.size
            && self.written + data.len() as u64 > limit
        {
            return Err(io::Error::other(BlobError::TooLarge {
                digest: self.digest.clone(),
                limit,
            }));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let n = file.write(data)?;
        self.hasher.update(&data[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl BlobWriter {
    /// Move a blob started with [`BlobStore::writer_computed`] into place under the
    /// digest of what was written, and return that digest.
    pub fn commit_computed(mut self) -> Result<String, BlobError> {
        let file = self.file.take().expect("commit runs once");
        let tmp = self.tmp.clone();
        let io_err = |source| BlobError::Io {
            path: tmp.clone(),
            source,
        };
        let file = file.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)?;
        drop(file);
        let hex = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let dir = self
            .tmp
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."));
        std::fs::rename(&self.tmp, dir.join("sha256").join(&hex)).map_err(io_err)?;
        Ok(format!("sha256:{hex}"))
    }

    /// Check size and digest, then move the blob into place (atomically; if another
    /// process already stored it, theirs stays). Returns the blob's path.
    pub fn commit(mut self) -> Result<PathBuf, BlobError> {
        let io_err = |source| BlobError::Io {
            path: self.tmp.clone(),
            source,
        };
        let file = self.file.take().expect("commit runs once");
        let file = file.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)?;
        drop(file);
        if let Some(expected) = self.size
            && expected != self.written
        {
            return Err(BlobError::WrongSize {
                digest: self.digest.clone(),
                expected,
                actual: self.written,
            });
        }
        let actual = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if format!("sha256:{actual}") != self.digest {
            return Err(BlobError::Mismatch {
                expected: self.digest.clone(),
                actual,
                size: self.written,
            });
        }
        std::fs::rename(&self.tmp, &self.final_path).map_err(io_err)?;
        Ok(self.final_path.clone())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Gone after a successful rename; otherwise an abandoned or refused download.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Reads a stored blob while hashing it; see [`BlobStore::open_verified`].
#[derive(Debug)]
pub struct VerifiedReader {
    inner: io::BufReader<std::fs::File>,
    hasher: Option<Sha256>,
    digest: String,
    path: PathBuf,
}

impl Read for VerifiedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match (&mut self.hasher, n) {
            (Some(h), 0) => {
                let actual = hex::encode(std::mem::take(h).finalize());
                self.hasher = None;
                if format!("sha256:{actual}") != self.digest {
                    let _ = std::fs::remove_file(&self.path);
                    return Err(io::Error::other(BlobError::Corrupt {
                        digest: self.digest.clone(),
                        actual,
                    }));
                }
            }
            (Some(h), n) => h.update(&buf[..n]),
            (None, _) => {}
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (BlobStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("bxblob-{:016x}", rand::random::<u64>()));
        (BlobStore::new(&dir), dir)
    }

    fn digest_of(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    #[test]
    fn a_blob_is_stored_only_when_its_bytes_match_the_digest() {
        let (s, dir) = store();
        let good = digest_of(b"layer");

        s.put(&good, b"layer").unwrap();
        let wrong = s.put(&digest_of(b"other"), b"tampered").unwrap_err();
        let short = s.writer(&good, Some(10)).unwrap().commit().unwrap_err();

        assert!(s.has(&good));
        assert_eq!(s.read(&good).unwrap(), b"layer");
        assert!(matches!(wrong, BlobError::Mismatch { .. }), "{wrong}");
        assert!(matches!(short, BlobError::WrongSize { .. }), "{short}");
        assert!(!s.has(&digest_of(b"other")));
        assert_eq!(
            std::fs::read_dir(dir.join("tmp")).unwrap().count(),
            0,
            "no temp files left"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_blob_flipped_on_disk_is_detected_at_use_and_removed() {
        let (s, dir) = store();
        let d = digest_of(b"0123456789");
        let path = s.put(&d, b"0123456789").unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, bytes).unwrap();

        let err = s.read(&d).unwrap_err();

        assert!(matches!(err, BlobError::Corrupt { .. }), "{err}");
        assert!(
            !s.has(&d),
            "the corrupt copy is gone, so it is fetched again"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_abandoned_or_oversized_write_leaves_nothing() {
        let (s, dir) = store();
        let d = digest_of(b"abc");
        let mut w = s.writer(&d, Some(3)).unwrap();
        w.write_all(b"ab").unwrap();
        drop(w);
        let mut w = s.writer(&d, Some(3)).unwrap();
        let over = w.write_all(b"abcd").unwrap_err();

        assert!(
            over.to_string().contains("larger than the 3 bytes"),
            "{over}"
        );
        drop(w);
        assert!(!s.has(&d));
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        assert!(matches!(
            digest_hex("sha256:XYZ"),
            Err(BlobError::InvalidDigest(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
