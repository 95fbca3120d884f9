//! The host-guest agent protocol.
//!
//! One crate owns the schema so that the host library and the guest agent cannot drift.
//! Generated types stay behind this crate and the host's `portal` module; they never
//! appear in the public `boxlite` API.

#![allow(missing_debug_implementations)]

pub mod caps;
pub mod channel;

/// Generated gRPC types and stubs for `boxlite.agent.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("boxlite.agent.v1");
}

/// Name of the virtio-serial port that carries the agent channel (`virtserialport
/// name=`); the guest finds it under `/sys/class/virtio-ports/*/name`.
pub const PORT_NAME: &str = "boxlite.agent";

/// Largest output chunk the agent sends in one message.
pub const MAX_CHUNK: usize = 64 * 1024;

/// Largest gRPC message either side accepts.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// HTTP/2 frame size both sides advertise: a whole output chunk fits in one frame.
pub const MAX_FRAME: u32 = 256 * 1024;

/// HTTP/2 flow-control windows both sides use. A stream's window bounds what one reader
/// that stops can leave buffered (2 MiB). The connection window is far larger than any
/// sum of stream windows there will be: one connection carries every execution of a box
/// in a process, and a connection window filled by stalled streams would stop the
/// others, new calls included (at 8 MiB, four stalled readers did).
pub const STREAM_WINDOW: u32 = 2 << 20;
pub const CONNECTION_WINDOW: u32 = 1 << 30;
