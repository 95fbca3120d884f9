//! UDP: DNS answered here, other datagrams relayed per flow through host sockets, and
//! published UDP ports.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;

use super::{Engine, Event, MAX_DNS_INFLIGHT, MAX_UDP_FLOWS, UDP_REFUSED_KEEP, UdpFlow};
use crate::config::Proto;
use crate::control::LogEntry;
use crate::dns::{self, Forward, QueryOutcome};
use crate::frame;
use crate::policy::{Decision, Verdict};

impl Engine {
    pub(super) fn on_inbound_udp(&mut self, port: usize, peer: SocketAddr, data: &[u8]) {
        let eph = match self.udp_peers.get(&(port, peer)) {
            Some(e) => *e,
            None => {
                if self.udp_peers.len() >= MAX_UDP_FLOWS {
                    return;
                }
                let Some(e) = self.ephemeral() else {
                    return;
                };
                self.udp_peers.insert((port, peer), e);
                e
            }
        };
        self.udp_peer_of.insert(eph, (port, peer, Instant::now()));
        let Some(guest_port) = self
            .cfg
            .ports
            .iter()
            .filter(|p| p.proto == Proto::Udp)
            .nth(port)
            .map(|p| p.guest_port)
        else {
            return;
        };
        let from = SocketAddrV4::new(self.cfg.subnet.gateway_ip, eph);
        self.shared.stats.add_udp_in(data.len());
        self.send_udp_to_guest(from, guest_port, data);
    }

    pub(super) fn send_udp_to_guest(&mut self, from: SocketAddrV4, guest_port: u16, data: &[u8]) {
        if let Some(f) = frame::udp_to_guest(&self.cfg.subnet, from, guest_port, data) {
            self.dev.tx.push(f);
        }
    }

    pub(super) fn on_udp(&mut self, guest: SocketAddrV4, dst: SocketAddrV4, data: &[u8]) {
        if dst.port() == 53 {
            self.on_dns_udp(guest, dst, data);
            return;
        }
        // A reply to a datagram that came in through a published UDP port.
        if *dst.ip() == self.cfg.subnet.gateway_ip
            && let Some((port, peer, _)) = self.udp_peer_of.get(&dst.port()).copied()
            && let Some(sock) = self.inbound_udp.get(port)
        {
            let _ = sock.send_to(data, peer);
            self.shared.stats.add_udp_out(data.len());
            return;
        }
        let key = (guest.port(), dst);
        if let Some(f) = self.udp.get_mut(&key) {
            f.last = Instant::now();
            let _ = f.send.send(data);
            self.shared.stats.add_udp_out(data.len());
            return;
        }
        if self.udp_refused.contains_key(&key) {
            self.shared.stats.add_denied();
            return;
        }
        let names = self.names(*dst.ip());
        let mut d = self
            .policy
            .decide_connect(*dst.ip(), dst.port(), Proto::Udp, &names);
        if d.verdict == Verdict::DeferL7 {
            // Datagrams carry no first flight to check: an undecided flow is refused.
            d = Decision {
                verdict: Verdict::Deny,
                reason: "udp cannot be checked by sni or host".into(),
                rule: d.rule,
            };
        }
        let full = self.udp.len() >= MAX_UDP_FLOWS && d.verdict == Verdict::Allow;
        if full {
            d = Decision {
                verdict: Verdict::Deny,
                reason: "too many udp flows".into(),
                rule: None,
            };
        }
        self.record(Proto::Udp, dst, &names, &d);
        if d.verdict != Verdict::Allow {
            // Only the policy's refusals are remembered; a full table may have room soon.
            if !full {
                if self.udp_refused.len() >= UDP_REFUSED_KEEP {
                    self.udp_refused.clear();
                }
                self.udp_refused.insert(key, Instant::now());
            }
            return;
        }
        let target = match self.guarded_target(Proto::Udp, dst, &names) {
            Ok(t) => t,
            Err(()) => {
                return;
            }
        };
        let opened = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| s.connect(target).map(|()| s))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .and_then(|s| Ok((s.try_clone()?, UdpSocket::from_std(s)?)));
        let (send, sock) = match opened {
            Ok((send, s)) => (send, Arc::new(s)),
            Err(e) => {
                self.shared.log(LogEntry::dial_failed(dst, &e.to_string()));
                return;
            }
        };
        let _ = send.send(data);
        self.shared.stats.add_udp_out(data.len());
        let tx = self.events.clone();
        let rsock = sock.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = rsock.recv(&mut buf).await {
                if tx
                    .send(Event::UdpIn {
                        key,
                        data: buf[..n].to_vec(),
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        self.udp.insert(
            key,
            UdpFlow {
                send,
                task,
                last: Instant::now(),
            },
        );
    }

    pub(super) fn note_dns(&self, decision: Option<(String, Decision)>) {
        if let Some((name, d)) = decision {
            if d.verdict == Verdict::Deny {
                self.shared.stats.add_denied();
            }
            self.shared.log(LogEntry::dns_decision(&name, &d));
        }
    }

    pub(super) fn on_dns_udp(&mut self, guest: SocketAddrV4, server: SocketAddrV4, data: &[u8]) {
        self.shared.stats.dns_query();
        match self
            .resolver
            .on_query(data, &self.policy, &mut self.pins, Instant::now())
        {
            QueryOutcome::Drop => {}
            QueryOutcome::Answer { reply, decision } => {
                self.note_dns(decision);
                self.send_udp_to_guest(server, guest.port(), &reply);
            }
            QueryOutcome::Forward(fwd) => {
                if self.dns_inflight >= MAX_DNS_INFLIGHT {
                    return;
                }
                self.dns_inflight += 1;
                let tx = self.events.clone();
                let ups = self.upstreams.clone();
                let guard = self.cfg.test.loopback_only;
                tokio::spawn(async move {
                    let reply = dns::forward(&fwd.query, &ups, guard)
                        .await
                        .map_err(|e| e.to_string());
                    let _ = tx
                        .send(Event::DnsUdp {
                            fwd,
                            server,
                            guest_port: guest.port(),
                            reply,
                        })
                        .await;
                });
            }
        }
    }

    pub(super) fn dns_reply(
        &mut self,
        fwd: &Forward,
        reply: Result<Vec<u8>, String>,
    ) -> Option<Vec<u8>> {
        // A failed forward or a reply that does not answer the query (wrong id or
        // question): the guest gets nothing and retries; the log says why.
        let answer = reply.and_then(|r| {
            self.resolver
                .on_reply(fwd, &r, &self.policy, &mut self.pins, Instant::now())
                .map_err(|e| e.to_string())
        });
        answer
            .map_err(|e| self.shared.log(LogEntry::dns(&fwd.name, "error", &e, None)))
            .ok()
    }
}
