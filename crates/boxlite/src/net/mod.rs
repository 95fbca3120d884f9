//! The host side of a box's network: what the network helper (`boxlite-net`, crate
//! `boxlite-net`) is told when it starts, and what the library reads back from it.
//!
//! The helper is one process per box with a network, started before QEMU and recorded
//! like every other helper ([`crate::model::BoxStatus::net_helper`]). Its configuration goes
//! down its stdin as JSON ([`boxlite_net::config::NetConfig`]), never argv or the
//! environment. Its counters and bound ports come back over its control socket while it
//! runs; its decisions are also appended to `net.jsonl` in the box directory, so they can
//! be read after the box stops.
//!
//! `secrets.rs`: a box's secrets, checked and recorded at creation, their values read
//! from their sources at every start for the helper.

pub mod secrets;

use std::net::{Ipv4Addr, SocketAddr};

use boxlite_net::config::{HostEntry, NetConfig, PortMap, Rules, SecretConfig, Subnet, TestHooks};
pub use boxlite_net::control::{BoundPort, LogEntry, StatsSnapshot};

use crate::layout::{BoxPaths, SocketPaths};
use crate::model::NetworkSpec;

/// Settings of the runtime rather than of a box: which resolvers the helpers forward to,
/// and the test guard.
#[derive(Debug, Clone, Default)]
pub struct NetSettings {
    /// `BOXLITE_NET_DNS` (comma-separated `IP:PORT`): resolvers for every box's DNS.
    /// Default: the host's `/etc/resolv.conf`.
    pub dns: Vec<SocketAddr>,
    /// `BOXLITE_NET_TEST_GUARD=1`: every helper refuses, and logs, a dial outside
    /// 127.0.0.0/8. The test suite sets it.
    pub loopback_only: bool,
    /// `BOXLITE_BENCH_SLIRP=1`: a benchmark yardstick only, never for real use. Boxes with
    /// a network get QEMU's own slirp (`-netdev user`) instead of the helper, so
    /// `bench/net.sh` can compare the two on the same machine. It bypasses everything the
    /// helper enforces: the egress policy, published ports, `--add-host`, the DNS
    /// filter and the test guard.
    pub bench_slirp: bool,
}

impl NetSettings {
    pub fn from_env() -> Self {
        let dns = std::env::var("BOXLITE_NET_DNS")
            .ok()
            .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
            .unwrap_or_default();
        NetSettings {
            dns,
            loopback_only: std::env::var("BOXLITE_NET_TEST_GUARD").is_ok_and(|v| v == "1"),
            bench_slirp: std::env::var("BOXLITE_BENCH_SLIRP").is_ok_and(|v| v == "1"),
        }
    }
}

/// The kernel command line word that tells the agent to configure `eth0`.
pub fn cmdline_word(subnet: &Subnet) -> String {
    format!(
        "boxlite.net={}/{},{},{},{}",
        subnet.guest_ip, subnet.prefix_len, subnet.gateway_ip, subnet.dns_ip, subnet.mtu
    )
}

/// What a box's helper is told at this start besides its network spec: the secrets'
/// values, read from their sources just now, and the extra roots it trusts upstream.
#[derive(Debug, Clone, Default)]
pub struct HelperSecrets {
    pub secrets: Vec<SecretConfig>,
    /// PEM texts (`[network] upstream_ca_files` of the runtime's config file).
    pub upstream_roots: Vec<String>,
}

/// What the helper of a box is told.
pub fn helper_config(
    spec: &NetworkSpec,
    sockets: &SocketPaths,
    paths: &BoxPaths,
    settings: &NetSettings,
    secrets: &HelperSecrets,
) -> NetConfig {
    let subnet = Subnet::default();
    let mut cfg = NetConfig::new(sockets.net(), sockets.net_control());
    cfg.rules = Rules {
        allow: spec.allow.clone(),
        deny: spec.deny.clone(),
    };
    cfg.ports = spec
        .ports
        .iter()
        .map(|p| PortMap {
            host: p.host_addr(),
            guest_port: p.box_port,
            proto: p.protocol,
        })
        .collect();
    cfg.hosts = spec
        .hosts
        .iter()
        .map(|h| HostEntry {
            name: h.name.clone(),
            ip: h.ip.unwrap_or(subnet.gateway_ip),
        })
        .collect();
    cfg.dns_upstreams = settings.dns.clone();
    cfg.decision_log = Some(paths.net_decisions());
    cfg.test = TestHooks {
        dial_override: Vec::new(),
        loopback_only: settings.loopback_only,
    };
    cfg.subnet = subnet;
    cfg.secrets = secrets.secrets.clone();
    cfg.upstream_roots = secrets.upstream_roots.clone();
    cfg
}

/// The guest's address, as the box's network shows it.
pub fn guest_ip() -> Ipv4Addr {
    Subnet::default().guest_ip
}

/// Counters of a running helper, or `None` if it does not answer.
pub fn stats(sockets: &SocketPaths) -> Option<StatsSnapshot> {
    let text = boxlite_net::control::request(&sockets.net_control(), "stats").ok()?;
    serde_json::from_str(&text).ok()
}

/// Ports a running helper has bound (with the real port for `-p 0:...`).
pub fn bound_ports(sockets: &SocketPaths) -> Option<Vec<BoundPort>> {
    let text = boxlite_net::control::request(&sockets.net_control(), "ports").ok()?;
    serde_json::from_str(&text).ok()
}

/// The decisions recorded for a box, oldest first (from the file: works after it stops).
pub fn decisions(paths: &BoxPaths) -> Vec<LogEntry> {
    boxlite_net::control::read_log_file(&paths.net_decisions())
}

/// The CA certificate (PEM) a running helper minted for the box's secrets; `None` if the
/// box has no secrets or the helper does not answer.
pub fn ca_pem(sockets: &SocketPaths) -> Option<String> {
    let text = boxlite_net::control::request(&sockets.net_control(), "ca").ok()?;
    serde_json::from_str::<Option<String>>(&text).ok().flatten()
}
