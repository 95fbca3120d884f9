//! Applying image layers: decompression (gzip, zstd) and the layer-mode unpack, inside
//! the VM, so hostile archives are parsed where they can only hurt the sandbox.

use std::io::{self, BufRead, Read};
use std::os::fd::{AsFd, OwnedFd};

use boxlite_archive::layers::Compression;
use boxlite_archive::{ArchiveError, ChannelReader, Summary, UnpackOptions};
use boxlite_protocol::v1::LayerCompression;
use tokio::sync::mpsc;

/// A reader of the layer's tar bytes.
pub fn decompress<'a, R: BufRead + Send + 'a>(
    r: R,
    c: LayerCompression,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    boxlite_archive::layers::decompress(
        r,
        match c {
            LayerCompression::None => Compression::None,
            LayerCompression::Gzip => Compression::Gzip,
            LayerCompression::Zstd => Compression::Zstd,
        },
    )
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
