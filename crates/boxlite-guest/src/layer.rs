//! Applying image layers: decompression (gzip, zstd) and the layer-mode unpack, inside
//! the VM, so hostile archives are parsed where they can only hurt the sandbox.

use std::io::{self, BufRead, Read};
use std::os::fd::{AsFd, OwnedFd};

use boxlite_archive::{ArchiveError, ChannelReader, Summary, UnpackOptions};
use boxlite_protocol::v1::LayerCompression;
use ruzstd::decoding::{FrameDecoder, StreamingDecoder};
use tokio::sync::mpsc;

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
            let mut src = self.cur.take().expect("checked above").into_inner();
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
    c: LayerCompression,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match c {
        LayerCompression::None => Box::new(r),
        LayerCompression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        LayerCompression::Zstd => Box::new(ZstdFrames {
            cur: Some(StreamingDecoder::new(r).map_err(io::Error::other)?),
        }),
    })
}

/// Apply the layer arriving on `rx` onto the container root.
pub fn apply(
    root: &OwnedFd,
    compression: LayerCompression,
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
) -> Result<Summary, ArchiveError> {
    let opts = UnpackOptions::image_layer();
    let mut reader = io::BufReader::with_capacity(1 << 20, ChannelReader::new(rx));
    let r = match decompress(&mut reader, compression) {
        Ok(tar) => boxlite_archive::unpack(tar, root.as_fd(), b"", &opts),
        Err(e) => Err(ArchiveError::Tar(e)),
    };
    // Drain what the host still sends, so its stream ends cleanly with our answer.
    let _ = io::copy(&mut reader, &mut io::sink());
    r
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
        let gz = gz.finish().unwrap();
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
        decompress(&gz[..], LayerCompression::Gzip)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        let mut text = Vec::new();
        decompress(&zst[..], LayerCompression::Zstd)
            .unwrap()
            .read_to_end(&mut text)
            .unwrap();

        assert_eq!(out, data);
        assert_eq!(text, b"hello world");
    }
}
