#![no_main]

use boxlite_net::config::Subnet;
use boxlite_net::frame::{Kind, classify};
use libfuzzer_sys::fuzz_target;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, UdpPacket,
};

fn check(frame: &[u8], subnet: &Subnet) {
    if let Kind::Udp { payload, .. } = classify(frame, subnet) {
        // The payload range must lie inside the frame it came from.
        assert!(payload.start <= payload.end && payload.end <= frame.len());
    }
}

/// The input as the guest itself would send it: its own MAC and IPv4 source, and valid
/// IPv4 and UDP checksums, so the fuzzer reaches the parsing behind those checks (it
/// cannot solve a checksum or a 6-byte comparison by itself without a sanitizer's hooks).
fn as_from_guest(data: &[u8], subnet: &Subnet) -> Option<Vec<u8>> {
    let mut f = data.to_vec();
    f.get_mut(6..12)?.copy_from_slice(&subnet.guest_mac);
    if EthernetFrame::new_checked(&f[..]).ok()?.ethertype() != EthernetProtocol::Ipv4 {
        return Some(f);
    }
    let mut ip = Ipv4Packet::new_checked(&mut f[14..]).ok()?;
    ip.set_src_addr(subnet.guest_ip);
    ip.fill_checksum();
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if ip.next_header() == IpProtocol::Udp
        && let Ok(mut udp) = UdpPacket::new_checked(ip.payload_mut())
    {
        udp.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
    }
    Some(f)
}

fuzz_target!(|data: &[u8]| {
    let subnet = Subnet::default();
    check(data, &subnet);
    if let Some(f) = as_from_guest(data, &subnet) {
        check(&f, &subnet);
    }
});
