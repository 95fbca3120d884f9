//! boxlite's per-box network helper, `boxlite-net`.
//!
//! One helper runs next to each box that has a network. QEMU's `virtio-net` device is
//! attached to it with `-netdev stream`: every Ethernet frame the guest sends arrives here,
//! framed with a 4-byte big-endian length, over a unix socket. The helper runs a user-space
//! TCP/IP stack ([smoltcp]) that terminates every guest TCP connection and UDP flow and opens
//! it again as an ordinary host socket, after the egress [`policy`] has approved it. It is
//! the guest's only DNS resolver ([`dns`]), which is what lets domain rules hold: a
//! connection matches a domain rule only if this box's own DNS answers returned its
//! destination address for that name ([`policy::PinSet`]).
//!
//! The helper needs no privileges. Its whole configuration ([`config::NetConfig`]) arrives on
//! stdin, a pipe from the library, never in argv or the environment.

pub mod config;
pub mod control;
pub mod dns;
pub mod engine;
#[doc(hidden)]
pub mod fake_guest;
pub mod frame;
pub mod l7;
pub mod policy;
pub mod secrets;
#[doc(hidden)]
pub mod tls_fixture;
