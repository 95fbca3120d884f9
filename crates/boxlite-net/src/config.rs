//! What the library tells the helper when it starts it: one JSON document on stdin.
//!
//! Validated by the library when the box is created (names, rules and ports are parsed
//! there and stored as text); the helper parses the rules again with the same code and
//! refuses to start on any error, so a hand-edited database cannot widen a policy.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The guest-facing addresses. A virtual subnet, never routed on the host, so it cannot
/// collide with the host's networks (slirp's defaults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    pub guest_ip: Ipv4Addr,
    pub gateway_ip: Ipv4Addr,
    pub dns_ip: Ipv4Addr,
    pub prefix_len: u8,
    /// The guest NIC's MAC, which QEMU is given too: frames from any other source are
    /// dropped.
    pub guest_mac: [u8; 6],
    pub mtu: u16,
}

impl Default for Subnet {
    fn default() -> Self {
        Subnet {
            guest_ip: Ipv4Addr::new(10, 0, 2, 15),
            gateway_ip: Ipv4Addr::new(10, 0, 2, 2),
            dns_ip: Ipv4Addr::new(10, 0, 2, 3),
            prefix_len: 24,
            guest_mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            mtu: 65520,
        }
    }
}

/// The gateway's MAC, as the guest sees it.
pub const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One published port: the helper listens on `host` and forwards each connection (or
/// datagram) to the guest's `guest_port`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PortMap {
    pub host: SocketAddr,
    pub guest_port: u16,
    pub proto: Proto,
}

/// A name the box's DNS answers locally (`--add-host`). Operator-trusted like
/// `/etc/hosts`: skips the rebinding filter, but not the policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    pub name: String,
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// `--allow-net` rule texts, in order. Non-empty means allow-list mode.
    #[serde(default)]
    pub allow: Vec<String>,
    /// `--deny-net` rule texts.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// Test-only settings: where dials really go, and a guard that fails any dial that would
/// leave the loopback range.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TestHooks {
    /// Virtual destination -> real host address (always 127.0.0.0/8 in tests).
    #[serde(default)]
    pub dial_override: Vec<(SocketAddr, SocketAddr)>,
    /// Refuse (and log a `guard-violation` decision for) any dial outside 127.0.0.0/8.
    #[serde(default)]
    pub loopback_only: bool,
}

/// A secret's real value. Never printed: `Debug` shows `[redacted]`, and the memory is
/// zeroed when the value is dropped. It crosses from the library to the helper only inside
/// the configuration on the helper's stdin.
#[derive(
    Clone, PartialEq, Eq, Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop,
)]
#[serde(transparent)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: String) -> Self {
        SecretValue(value)
    }

    /// The value itself, for the one place that substitutes it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One secret the helper substitutes on intercepted connections to its hosts. Checked with
/// [`crate::secrets::validate`] by the library at creation and by the helper at start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    /// An environment variable name: the box sees the placeholder as `$NAME`.
    pub name: String,
    /// What the box sends in place of the value (`<BOXLITE_SECRET:NAME>` by default).
    pub placeholder: String,
    /// `name` or `*.name` patterns, the egress policy's matcher: the only hosts the value
    /// is ever sent to.
    pub hosts: Vec<String>,
    pub value: SecretValue,
    /// Also substitute in request bodies (off by default: a body is what servers echo).
    #[serde(default)]
    pub body: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    #[serde(default)]
    pub subnet: Subnet,
    #[serde(default)]
    pub rules: Rules,
    #[serde(default)]
    pub ports: Vec<PortMap>,
    #[serde(default)]
    pub hosts: Vec<HostEntry>,
    /// Resolvers the helper forwards allowed queries to. Empty: the host's
    /// `/etc/resolv.conf`.
    #[serde(default)]
    pub dns_upstreams: Vec<SocketAddr>,
    /// The unix socket QEMU connects to (`-netdev stream`). The helper binds it before it
    /// reports ready, accepts one connection from its own uid, and unlinks it.
    pub data_socket: PathBuf,
    /// The control socket: stats and the decision log, one JSON request per line.
    pub control_socket: PathBuf,
    /// Where decisions are appended as JSON lines (size-capped), readable after the box
    /// stops.
    pub decision_log: Option<PathBuf>,
    /// Secrets substituted at this box's network boundary. Non-empty means the helper mints
    /// a CA and intercepts TLS to the secrets' hosts (and only to them).
    #[serde(default)]
    pub secrets: Vec<SecretConfig>,
    /// Extra roots (PEM text) the helper trusts for upstream certificates on intercepted
    /// connections, besides the host's system roots (`[network] upstream_ca_files`).
    #[serde(default)]
    pub upstream_roots: Vec<String>,
    /// The uid and gid to drop to once QEMU has connected (the library sets it when it
    /// runs as root): from then on the helper holds no privilege at all.
    #[serde(default)]
    pub run_as: Option<(u32, u32)>,
    #[serde(default)]
    pub test: TestHooks,
}

impl NetConfig {
    pub fn new(data_socket: PathBuf, control_socket: PathBuf) -> Self {
        NetConfig {
            subnet: Subnet::default(),
            rules: Rules::default(),
            ports: Vec::new(),
            hosts: Vec::new(),
            dns_upstreams: Vec::new(),
            data_socket,
            control_socket,
            decision_log: None,
            secrets: Vec::new(),
            upstream_roots: Vec::new(),
            run_as: None,
            test: TestHooks::default(),
        }
    }
}

/// The name under which the host is reachable from every box: the gateway address.
pub const HOST_ALIAS: &str = "host.boxlite.internal";
