//! Decompressing layer blobs: gzip (any number of members) and zstd (any number of
//! frames), streamed.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A zstd stream of one or more frames.
struct ZstdFrames<R: BufRead> {
    cur: Option<StreamingDecoder<R, FrameDecoder>>,
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(d) = self.cur.as_mut() else {
                return Ok(0);
            };
            let n = d.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let Some(done) = self.cur.take() else {
                return Ok(0);
            };
            let mut src = done.into_inner();
            if src.fill_buf()?.is_empty() {
                return Ok(0);
            }
            self.cur = Some(StreamingDecoder::new(src).map_err(io::Error::other)?);
        }
    }
}

/// A reader of the layer's tar bytes.
pub fn decompress<'a, R: BufRead + Send + 'a>(
    r: R,
    c: Compression,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(ZstdFrames {
            cur: Some(StreamingDecoder::new(r).map_err(io::Error::other)?),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_and_multi_frame_zstd_decompress_to_the_original() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let mut gz = gz.finish().unwrap();
        // A second gzip member.
        let mut gz2 = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz2.write_all(b"tail").unwrap();
        gz.extend(gz2.finish().unwrap());
        // Two zstd frames back to back: the stored-block frame format, hand-made.
        let frame = |payload: &[u8]| {
            let mut f = vec![
                0x28,
                0xb5,
                0x2f,
                0xfd,
                0x20,
                u8::try_from(payload.len()).unwrap(),
            ];
            let hdr = (u32::try_from(payload.len()).unwrap() << 3) | 1; // last block, raw
            f.extend_from_slice(&hdr.to_le_bytes()[..3]);
            f.extend_from_slice(payload);
            f
        };
        let mut zst = frame(b"hello ");
        zst.extend(frame(b"world"));

        let mut out = Vec::new();
        decompress(&gz[..], Compression::Gzip)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        let mut text = Vec::new();
        decompress(&zst[..], Compression::Zstd)
            .unwrap()
            .read_to_end(&mut text)
            .unwrap();

        assert_eq!(&out[..data.len()], &data[..]);
        assert_eq!(&out[data.len()..], b"tail");
        assert_eq!(text, b"hello world");
    }
}
