//! A box's network, as the caller asks for it and as it is stored: on or off, published
//! ports, extra DNS names, and the egress rules. Parsed and validated here, at creation;
//! the helper parses the rules again with the same code when it starts.
//!
//! The syntax follows Docker's flags where Docker has one (`-p`, `--add-host`,
//! `--network none`); the rules are boxlite's own (see `docs/network.md`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use boxlite_net::config::Proto;
use boxlite_net::policy::{Action, Rule};
use serde::{Deserialize, Serialize};

/// `--network`: on (the default) or `none` (no NIC and no helper at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    #[default]
    Enabled,
    None,
}

/// One published port: `[HOST_IP:]HOST_PORT:BOX_PORT[/tcp|/udp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// Where the host listens: 127.0.0.1 unless an address is written out. Port 0 picks a
    /// free port when the box starts (see the box's bound ports).
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub box_port: u16,
    #[serde(default = "tcp")]
    pub protocol: Proto,
}

fn tcp() -> Proto {
    Proto::Tcp
}

/// `--add-host NAME:IP` or `NAME:host-gateway`: a name the box's DNS answers itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    pub name: String,
    /// `None`: the host itself (the box's gateway address).
    pub ip: Option<Ipv4Addr>,
}

/// A box's network.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSpec {
    pub mode: NetworkMode,
    pub ports: Vec<PortSpec>,
    pub hosts: Vec<HostSpec>,
    /// `--allow-net` rules. One or more puts the box in allow-list mode.
    pub allow: Vec<String>,
    /// `--deny-net` rules; a deny beats any allow.
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NetworkSpecError {
    #[error(
        "invalid published port {0:?}: expected [HOST_IP:]HOST_PORT:BOX_PORT[/tcp|/udp], for example 8080:80 or 127.0.0.1:5353:53/udp"
    )]
    Port(String),
    #[error(
        "invalid --add-host {0:?}: expected NAME:IP or NAME:host-gateway, with an IPv4 address"
    )]
    Host(String),
    #[error(transparent)]
    Rule(#[from] boxlite_net::policy::RuleError),
    #[error("invalid host name {name:?} in --add-host")]
    Name {
        name: String,
        #[source]
        source: boxlite_net::policy::NameError,
    },
    #[error("{what} needs the network; it cannot be used with network mode none")]
    NeedsNetwork { what: &'static str },
    #[error("host port {port}/{proto} on {ip} is published twice")]
    DuplicatePort { ip: IpAddr, port: u16, proto: Proto },
    #[error("box port 0 cannot be published; give the port the box listens on")]
    BoxPortZero,
}

impl PortSpec {
    pub fn parse(text: &str) -> Result<PortSpec, NetworkSpecError> {
        let bad = || NetworkSpecError::Port(text.to_string());
        let (body, protocol) = match text.rsplit_once('/') {
            Some((b, "tcp")) => (b, Proto::Tcp),
            Some((b, "udp")) => (b, Proto::Udp),
            Some(_) => return Err(bad()),
            None => (text, Proto::Tcp),
        };
        let parts: Vec<&str> = body.rsplitn(3, ':').collect();
        let port = |s: &str| s.parse::<u16>().map_err(|_| bad());
        let (host_ip, host_port, box_port) = match parts.as_slice() {
            [b, h] => (IpAddr::V4(Ipv4Addr::LOCALHOST), port(h)?, port(b)?),
            [b, h, ip] => {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                (ip.parse().map_err(|_| bad())?, port(h)?, port(b)?)
            }
            _ => return Err(bad()),
        };
        if box_port == 0 {
            return Err(NetworkSpecError::BoxPortZero);
        }
        Ok(PortSpec {
            host_ip,
            host_port,
            box_port,
            protocol,
        })
    }

    pub fn host_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host_ip, self.host_port)
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}/{}",
            self.host_addr(),
            self.box_port,
            self.protocol
        )
    }
}

impl HostSpec {
    pub fn parse(text: &str) -> Result<HostSpec, NetworkSpecError> {
        let bad = || NetworkSpecError::Host(text.to_string());
        let (name, target) = text.split_once(':').ok_or_else(bad)?;
        let name =
            boxlite_net::policy::normalize_name(name).map_err(|source| NetworkSpecError::Name {
                name: name.to_string(),
                source,
            })?;
        let ip = match target {
            "host-gateway" => None,
            t => Some(t.parse::<Ipv4Addr>().map_err(|_| bad())?),
        };
        Ok(HostSpec { name, ip })
    }
}

impl NetworkSpec {
    /// No NIC, no helper.
    pub fn none() -> Self {
        NetworkSpec {
            mode: NetworkMode::None,
            ..NetworkSpec::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.mode == NetworkMode::Enabled
    }

    /// Check everything the helper will be given: rules parse, names are valid, ports
    /// are not published twice, nothing network-only is asked of a box without one.
    pub fn validate(&self) -> Result<(), NetworkSpecError> {
        if !self.enabled() {
            if !self.ports.is_empty() {
                return Err(NetworkSpecError::NeedsNetwork {
                    what: "publishing a port",
                });
            }
            if !self.hosts.is_empty() {
                return Err(NetworkSpecError::NeedsNetwork { what: "--add-host" });
            }
            if !self.allow.is_empty() || !self.deny.is_empty() {
                return Err(NetworkSpecError::NeedsNetwork {
                    what: "a network rule",
                });
            }
        }
        for r in &self.allow {
            Rule::parse(Action::Allow, r)?;
        }
        for r in &self.deny {
            Rule::parse(Action::Deny, r)?;
        }
        for h in &self.hosts {
            boxlite_net::policy::normalize_name(&h.name).map_err(|source| {
                NetworkSpecError::Name {
                    name: h.name.clone(),
                    source,
                }
            })?;
        }
        for (i, p) in self.ports.iter().enumerate() {
            if p.box_port == 0 {
                return Err(NetworkSpecError::BoxPortZero);
            }
            if p.host_port != 0
                && self.ports[..i].iter().any(|q| {
                    q.host_port == p.host_port && q.protocol == p.protocol && q.host_ip == p.host_ip
                })
            {
                return Err(NetworkSpecError::DuplicatePort {
                    ip: p.host_ip,
                    port: p.host_port,
                    proto: p.protocol,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_like_docker() {
        let p = PortSpec::parse("8080:80").unwrap();
        assert_eq!(p.host_addr(), "127.0.0.1:8080".parse().unwrap());
        assert_eq!((p.box_port, p.protocol), (80, Proto::Tcp));
        let p = PortSpec::parse("0.0.0.0:5353:53/udp").unwrap();
        assert_eq!(p.host_addr(), "0.0.0.0:5353".parse().unwrap());
        assert_eq!((p.box_port, p.protocol), (53, Proto::Udp));
        let p = PortSpec::parse("0:80/tcp").unwrap();
        assert_eq!(p.host_port, 0);
        for bad in [
            "80",
            "a:80",
            "80:b",
            "1:2:3:4",
            "8080:80/sctp",
            "70000:80",
            "x.y:1:2",
            "",
        ] {
            let e = PortSpec::parse(bad).unwrap_err();
            assert!(e.to_string().contains("HOST_PORT:BOX_PORT"), "{bad}: {e}");
        }
        assert_eq!(
            PortSpec::parse("8080:0"),
            Err(NetworkSpecError::BoxPortZero)
        );
    }

    #[test]
    fn add_host_takes_an_ip_or_the_host_gateway() {
        let h = HostSpec::parse("Web.Test.:203.0.113.7").unwrap();
        assert_eq!(h.name, "web.test");
        assert_eq!(h.ip, Some(Ipv4Addr::new(203, 0, 113, 7)));
        assert_eq!(HostSpec::parse("db:host-gateway").unwrap().ip, None);
        for bad in ["nocolon", "x:300.1.1.1", "x:::1", ":1.2.3.4"] {
            assert!(HostSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let mut s = NetworkSpec::none();
        s.ports.push(PortSpec::parse("8080:80").unwrap());
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("publishing a port")
        );
        let mut s = NetworkSpec::default();
        s.allow.push("exa mple.com".into());
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("exa mple.com")
        );
        let mut s = NetworkSpec::default();
        s.ports.push(PortSpec::parse("8080:80").unwrap());
        s.ports.push(PortSpec::parse("8080:81").unwrap());
        assert!(matches!(
            s.validate(),
            Err(NetworkSpecError::DuplicatePort { port: 8080, .. })
        ));
        s.ports[1] = PortSpec::parse("8080:81/udp").unwrap();
        s.validate().unwrap();
    }
}
