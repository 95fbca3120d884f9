//! Guest frames, read before the stack sees them: what each one is, and whether the guest
//! was allowed to send it. Also the UDP frames the helper writes back to the guest itself
//! (DNS answers, relayed datagrams), which bypass smoltcp.
//!
//! Every byte here comes from the guest, so parsing is the checked `new_checked` path of
//! `smoltcp::wire` and never assumes a length.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress,
    IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, UdpPacket, UdpRepr,
};

use crate::config::{GATEWAY_MAC, Subnet};

/// The largest frame the helper accepts or builds: the MTU plus the Ethernet header.
pub fn max_frame(subnet: &Subnet) -> usize {
    usize::from(subnet.mtu) + 14
}

/// What a guest frame is, as far as the helper's dispatch cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// ARP from the guest's own address: for smoltcp, which answers for the gateway.
    Arp,
    /// A TCP segment. `syn` is a connection request (SYN without ACK).
    Tcp {
        src: SocketAddrV4,
        dst: SocketAddrV4,
        syn: bool,
    },
    /// A UDP datagram and where its payload sits in the frame.
    Udp {
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: std::ops::Range<usize>,
    },
    /// Another IPv4 protocol (ICMP), to `dst`: smoltcp answers pings to the gateway and
    /// the DNS address; nothing else of it leaves the box.
    OtherIpv4 { dst: Ipv4Addr },
    /// Dropped, and counted under this reason.
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropReason {
    /// Shorter than its headers say, or a bad checksum.
    Malformed,
    /// Larger than the MTU allows.
    Oversized,
    /// A source MAC or IPv4 address that is not the guest's.
    Spoofed,
    /// IPv6 is not offered (deliberately; see docs/network.md).
    Ipv6,
    /// IPv4 fragments: the guest's MTU is large enough that it never needs to send them.
    Fragment,
    /// Any other EtherType.
    Unsupported,
}

/// Classify one frame from the guest.
pub fn classify(frame: &[u8], subnet: &Subnet) -> Kind {
    if frame.len() > max_frame(subnet) {
        return Kind::Drop(DropReason::Oversized);
    }
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Kind::Drop(DropReason::Malformed);
    };
    if eth.src_addr() != EthernetAddress(subnet.guest_mac) {
        return Kind::Drop(DropReason::Spoofed);
    }
    match eth.ethertype() {
        EthernetProtocol::Arp => classify_arp(eth.payload(), subnet),
        EthernetProtocol::Ipv4 => classify_ipv4(eth.payload(), subnet),
        EthernetProtocol::Ipv6 => Kind::Drop(DropReason::Ipv6),
        _ => Kind::Drop(DropReason::Unsupported),
    }
}

fn classify_arp(payload: &[u8], subnet: &Subnet) -> Kind {
    let Ok(p) = ArpPacket::new_checked(payload) else {
        return Kind::Drop(DropReason::Malformed);
    };
    match ArpRepr::parse(&p) {
        Ok(ArpRepr::EthernetIpv4 {
            source_hardware_addr,
            source_protocol_addr,
            ..
        }) => {
            if source_hardware_addr != EthernetAddress(subnet.guest_mac)
                || (source_protocol_addr != subnet.guest_ip
                    && !source_protocol_addr.is_unspecified())
            {
                Kind::Drop(DropReason::Spoofed)
            } else {
                Kind::Arp
            }
        }
        _ => Kind::Drop(DropReason::Malformed),
    }
}

fn classify_ipv4(payload: &[u8], subnet: &Subnet) -> Kind {
    let Ok(ip) = Ipv4Packet::new_checked(payload) else {
        return Kind::Drop(DropReason::Malformed);
    };
    if !ip.verify_checksum() {
        return Kind::Drop(DropReason::Malformed);
    }
    if ip.src_addr() != subnet.guest_ip {
        return Kind::Drop(DropReason::Spoofed);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Kind::Drop(DropReason::Fragment);
    }
    let dst_ip = ip.dst_addr();
    let header = usize::from(ip.header_len());
    let body = ip.payload();
    match ip.next_header() {
        IpProtocol::Tcp => {
            let Ok(tcp) = TcpPacket::new_checked(body) else {
                return Kind::Drop(DropReason::Malformed);
            };
            // smoltcp checks these too, but the helper decides on a SYN before smoltcp
            // sees it: a SYN it would reject must not count as a connection attempt.
            if !tcp.verify_checksum(&IpAddress::Ipv4(ip.src_addr()), &IpAddress::Ipv4(dst_ip))
                || (tcp.syn() && (tcp.fin() || tcp.rst()))
            {
                return Kind::Drop(DropReason::Malformed);
            }
            Kind::Tcp {
                src: SocketAddrV4::new(ip.src_addr(), tcp.src_port()),
                dst: SocketAddrV4::new(dst_ip, tcp.dst_port()),
                syn: tcp.syn() && !tcp.ack(),
            }
        }
        IpProtocol::Udp => {
            let Ok(udp) = UdpPacket::new_checked(body) else {
                return Kind::Drop(DropReason::Malformed);
            };
            if !udp.verify_checksum(&IpAddress::Ipv4(ip.src_addr()), &IpAddress::Ipv4(dst_ip)) {
                return Kind::Drop(DropReason::Malformed);
            }
            let start = 14 + header + 8;
            let len = udp.payload().len();
            Kind::Udp {
                src: SocketAddrV4::new(ip.src_addr(), udp.src_port()),
                dst: SocketAddrV4::new(dst_ip, udp.dst_port()),
                payload: start..start + len,
            }
        }
        _ => Kind::OtherIpv4 { dst: dst_ip },
    }
}

/// A UDP datagram from `from` to the guest's `to_port`, as a complete Ethernet frame from
/// the gateway's MAC. `None` if it would not fit the MTU.
pub fn udp_to_guest(
    subnet: &Subnet,
    from: SocketAddrV4,
    to_port: u16,
    payload: &[u8],
) -> Option<Vec<u8>> {
    // Checked before building: an IPv4 length field cannot hold more.
    if 14 + 20 + 8 + payload.len() > max_frame(subnet) {
        return None;
    }
    let to = SocketAddrV4::new(subnet.guest_ip, to_port);
    Some(udp_frame(GATEWAY_MAC, subnet.guest_mac, from, to, payload))
}

/// A UDP frame as the guest would send it; for tests and the fake guest.
pub fn udp_from_guest(subnet: &Subnet, src_port: u16, to: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let from = SocketAddrV4::new(subnet.guest_ip, src_port);
    udp_frame(subnet.guest_mac, GATEWAY_MAC, from, to, payload)
}

fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    from: SocketAddrV4,
    to: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let udp = UdpRepr {
        src_port: from.port(),
        dst_port: to.port(),
    };
    let udp_len = udp.header_len() + payload.len();
    let ip = Ipv4Repr {
        src_addr: *from.ip(),
        dst_addr: *to.ip(),
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: 64,
    };
    let mut buf = vec![0u8; 14 + ip.buffer_len() + udp_len];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut eth);
    let caps = ChecksumCapabilities::default();
    let mut ipp = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip.emit(&mut ipp, &caps);
    let mut udpp = UdpPacket::new_unchecked(ipp.payload_mut());
    udp.emit(
        &mut udpp,
        &IpAddress::Ipv4(*from.ip()),
        &IpAddress::Ipv4(*to.ip()),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_frames_round_trip_through_classify() {
        let s = Subnet::default();
        let to = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 53);
        let f = udp_from_guest(&s, 4000, to, b"hello");
        match classify(&f, &s) {
            Kind::Udp { src, dst, payload } => {
                assert_eq!(src, SocketAddrV4::new(s.guest_ip, 4000));
                assert_eq!(dst, to);
                assert_eq!(&f[payload], b"hello");
            }
            k => panic!("{k:?}"),
        }
        let back = udp_to_guest(&s, to, 4000, b"answer").unwrap();
        // The reply comes from the gateway's MAC, so classify (guest frames only) calls it
        // spoofed: the guest cannot send as the gateway.
        assert_eq!(classify(&back, &s), Kind::Drop(DropReason::Spoofed));
    }

    #[test]
    fn spoofed_source_ip_and_mac_are_dropped() {
        let s = Subnet::default();
        let to = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 9);
        let mut f = udp_from_guest(&s, 1, to, b"x");
        f[6] ^= 1; // source MAC
        assert_eq!(classify(&f, &s), Kind::Drop(DropReason::Spoofed));
        let other = Subnet {
            guest_ip: Ipv4Addr::new(10, 0, 2, 99),
            ..Subnet::default()
        };
        let f = udp_from_guest(&other, 1, to, b"x");
        assert_eq!(classify(&f, &s), Kind::Drop(DropReason::Spoofed));
    }

    #[test]
    fn ipv6_oversized_and_truncated_frames_are_dropped() {
        let s = Subnet::default();
        let mut f = udp_from_guest(&s, 1, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9), b"x");
        f[12] = 0x86;
        f[13] = 0xdd;
        assert_eq!(classify(&f, &s), Kind::Drop(DropReason::Ipv6));
        let big = vec![0u8; max_frame(&s) + 1];
        assert_eq!(classify(&big, &s), Kind::Drop(DropReason::Oversized));
        let f = udp_from_guest(&s, 1, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9), b"xyz");
        for cut in 0..f.len() {
            // Every truncation is refused without a panic.
            assert!(
                matches!(classify(&f[..cut], &s), Kind::Drop(_)),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn a_datagram_too_large_for_the_mtu_is_refused_not_built() {
        let s = Subnet::default();
        let from = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), 7);
        let fits = vec![0u8; max_frame(&s) - 42];
        assert!(udp_to_guest(&s, from, 9, &fits).is_some());
        assert!(udp_to_guest(&s, from, 9, &[0u8; 65_527]).is_none());
    }

    #[test]
    fn a_syn_with_fin_or_rst_or_a_bad_checksum_is_no_connection_attempt() {
        use smoltcp::wire::{IpAddress, TcpPacket};
        let s = Subnet::default();
        let dst = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 443);
        let good = crate::fake_guest::raw_syn(&s, 4000, dst);
        assert!(matches!(classify(&good, &s), Kind::Tcp { syn: true, .. }));
        for flag in [0x01u8, 0x04] {
            let mut f = good.clone();
            f[14 + 20 + 13] |= flag;
            let mut tcp = TcpPacket::new_unchecked(&mut f[34..]);
            tcp.fill_checksum(&IpAddress::Ipv4(s.guest_ip), &IpAddress::Ipv4(*dst.ip()));
            assert_eq!(
                classify(&f, &s),
                Kind::Drop(DropReason::Malformed),
                "flag {flag}"
            );
        }
        let mut f = good.clone();
        f[34 + 16] ^= 0xff;
        assert_eq!(classify(&f, &s), Kind::Drop(DropReason::Malformed));
    }

    #[test]
    fn random_frames_never_panic() {
        let s = Subnet::default();
        for _ in 0..20_000 {
            let n = rand::random_range(0..200);
            let mut f: Vec<u8> = (0..n).map(|_| rand::random()).collect();
            if f.len() > 14 && rand::random::<bool>() {
                f[6..12].copy_from_slice(&s.guest_mac);
                f[12] = 0x08;
                f[13] = 0;
            }
            let _ = classify(&f, &s);
        }
    }
}
