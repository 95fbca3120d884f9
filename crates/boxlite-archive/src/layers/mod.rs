//! Flattening an image's layers into one canonical tar stream, on the host, without
//! unpacking anything.
//!
//! Two passes over the (decompressed) layers:
//! 1. [`plan`] reads every header, skipping contents, and applies the layers in order
//!    to an in-memory tree: whiteouts, opaque directories, an entry of one kind
//!    replacing another, hard links as shared inodes (so a link keeps its content when
//!    a later layer removes the path it was made from), parents resolved through
//!    symlinks inside the root as the kernel's `RESOLVE_IN_ROOT` would. Anything
//!    hostile is refused here, naming the layer and the entry.
//! 2. [`emit`] writes the final tree as one tar stream: every directory first (parents
//!    before children, names sorted), then links, devices and fifos, then each surviving
//!    regular file as its layer's stream passes by, followed by its other hard links.
//!    Only whole headers and file contents the plan accepted are written, so whatever
//!    parses that stream (`mke2fs -d`, in C) only ever sees what this module generated.
//!
//! Memory is bounded by the number of entries ([`Limits::max_entries`]), not by their
//! size: contents are streamed, never held.

mod decompress;
mod flatten;
mod tarin;
mod tarout;

pub use decompress::{Compression, decompress};
pub use flatten::{FlattenError, Limits, Plan, PlanStats, emit, plan};
pub use tarin::{Header, Kind, MAX_EXTENDED, MAX_XATTR_BYTES, TarError, TarReader};
pub use tarout::{Meta, TarWriter, pax_record};

#[cfg(test)]
mod tests;
