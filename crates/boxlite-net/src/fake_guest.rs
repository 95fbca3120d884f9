//! A fake guest for tests and benchmarks: a second smoltcp stack on the other end of a
//! socket pair, speaking the same length-prefixed Ethernet framing as QEMU's stream
//! netdev, so the helper can be driven in-process in milliseconds, with no VM.
//!
//! It can do what a hostile guest would: open TCP connections one byte at a time, send raw
//! frames (spoofed, IPv6, malformed), and send UDP to any address.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::config::{NetConfig, Subnet};
use crate::control::Shared;
use crate::engine::{Engine, Listeners, Queues};
use crate::frame;

/// One read from the socket pair, and how many more a step takes without waiting.
const READ_CHUNK: usize = 256 * 1024;
const READ_BATCH: usize = 8;

/// Why a fake-guest operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestError {
    /// The connection was reset (a refusal).
    Reset,
    TimedOut,
}

/// The guest side of a helper under test.
pub struct FakeGuest {
    subnet: Subnet,
    iface: Interface,
    dev: Queues,
    sockets: SocketSet<'static>,
    stream: UnixStream,
    inbox: Vec<u8>,
    /// Read and write buffers, kept across steps.
    rbuf: Box<[u8]>,
    outbox: Vec<u8>,
    /// UDP datagrams that reached the guest: (from, to port, payload).
    pub udp: VecDeque<(SocketAddrV4, u16, Vec<u8>)>,
    /// Every frame the guest received, when recording is on.
    pub seen: Option<Vec<Vec<u8>>>,
    next_port: u16,
    epoch: Instant,
    /// Bytes per TCP segment the guest sends (tiny to split a request everywhere).
    pub segment: Option<usize>,
}

impl std::fmt::Debug for FakeGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGuest").finish_non_exhaustive()
    }
}

/// A helper engine on one end of a socket pair and a fake guest on the other.
#[derive(Debug)]
pub struct Harness {
    pub guest: FakeGuest,
    pub shared: Arc<Shared>,
    pub engine: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// Build through the production constructor, so the policy under test is the one
    /// that ships.
    pub async fn start(cfg: NetConfig) -> Result<Harness, crate::engine::EngineError> {
        let shared = Arc::new(Shared::new(cfg.decision_log.as_deref()));
        let (engine, parts) = Engine::new(cfg.clone(), shared.clone())?;
        let listeners = Listeners::bind(&cfg, &shared).await?;
        let (a, b) = UnixStream::pair().map_err(|source| crate::engine::EngineError::Bind {
            addr: ([0, 0, 0, 0], 0).into(),
            proto: crate::config::Proto::Tcp,
            source,
        })?;
        let task = tokio::spawn(engine.run(parts, a, listeners));
        Ok(Harness {
            guest: FakeGuest::new(b, cfg.subnet.clone()),
            shared,
            engine: task,
        })
    }

    /// The decision log so far.
    pub fn log(&self) -> Vec<crate::control::LogEntry> {
        self.shared.entries()
    }
}

impl FakeGuest {
    pub fn new(stream: UnixStream, subnet: Subnet) -> FakeGuest {
        let mut dev = Queues {
            rx: VecDeque::new(),
            tx: Vec::new(),
            mtu: usize::from(subnet.mtu),
        };
        let cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(subnet.guest_mac)));
        let mut iface = Interface::new(cfg, &mut dev, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(subnet.guest_ip.into(), subnet.prefix_len));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(subnet.gateway_ip);
        FakeGuest {
            subnet,
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            stream,
            inbox: Vec::new(),
            rbuf: vec![0u8; READ_CHUNK].into_boxed_slice(),
            outbox: Vec::new(),
            udp: VecDeque::new(),
            seen: None,
            next_port: 40000,
            epoch: Instant::now(),
            segment: None,
        }
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(
            i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX),
        )
    }

    /// Send one raw frame, as the guest's NIC would.
    pub async fn raw(&mut self, f: &[u8]) {
        let mut out = u32::try_from(f.len()).unwrap_or(0).to_be_bytes().to_vec();
        out.extend_from_slice(f);
        let _ = self.stream.write_all(&out).await;
    }

    /// Move frames both ways for up to `wait`, returning early once something arrived.
    pub async fn step(&mut self, wait: Duration) {
        self.poll_and_send().await;
        let got = tokio::time::timeout(wait, self.stream.read(&mut self.rbuf)).await;
        if let Ok(Ok(n)) = got {
            self.inbox.extend_from_slice(&self.rbuf[..n]);
            // Whatever else has already arrived, without waiting (bounded, so one step
            // stays short).
            for _ in 0..READ_BATCH {
                match self.stream.try_read(&mut self.rbuf) {
                    Ok(n) if n > 0 => self.inbox.extend_from_slice(&self.rbuf[..n]),
                    _ => break,
                }
            }
        }
        let mut off = 0;
        while self.inbox.len() - off >= 4 {
            let h = &self.inbox[off..off + 4];
            let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            if self.inbox.len() - off < 4 + n {
                break;
            }
            let f = self.inbox[off + 4..off + 4 + n].to_vec();
            off += 4 + n;
            if let Some(seen) = self.seen.as_mut() {
                seen.push(f.clone());
            }
            if let Some((from, port, data)) = udp_to_us(&f, &self.subnet) {
                self.udp.push_back((from, port, data));
            } else {
                self.dev.rx.push_back(f);
            }
        }
        self.inbox.drain(..off);
        self.poll_and_send().await;
    }

    /// Poll the stack and send what it queued, in one write.
    async fn poll_and_send(&mut self) {
        let now = self.now();
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        if self.dev.tx.is_empty() {
            return;
        }
        self.outbox.clear();
        for f in self.dev.tx.drain(..) {
            self.outbox
                .extend_from_slice(&u32::try_from(f.len()).unwrap_or(0).to_be_bytes());
            self.outbox.extend_from_slice(&f);
        }
        let _ = self.stream.write_all(&self.outbox).await;
    }

    async fn until<T>(
        &mut self,
        limit: Duration,
        mut f: impl FnMut(&mut FakeGuest) -> Option<T>,
    ) -> Option<T> {
        let end = Instant::now() + limit;
        loop {
            if let Some(v) = f(self) {
                return Some(v);
            }
            if Instant::now() > end {
                return None;
            }
            self.step(Duration::from_millis(5)).await;
        }
    }

    /// Open a TCP connection. A refusal (reset) is `Err(Reset)`.
    pub async fn connect(&mut self, dst: SocketAddrV4) -> Result<SocketHandle, GuestError> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; 512 * 1024]),
            tcp::SocketBuffer::new(vec![0u8; 512 * 1024]),
        );
        s.set_nagle_enabled(false);
        self.next_port = if self.next_port >= 60000 {
            40000
        } else {
            self.next_port + 1
        };
        let port = self.next_port;
        if s.connect(self.iface.context(), (*dst.ip(), dst.port()), port)
            .is_err()
        {
            return Err(GuestError::Reset);
        }
        let h = self.sockets.add(s);
        let r = self
            .until(Duration::from_secs(15), |g| {
                match g.sockets.get::<tcp::Socket>(h).state() {
                    tcp::State::Established => Some(Ok(())),
                    tcp::State::Closed => Some(Err(GuestError::Reset)),
                    _ => None,
                }
            })
            .await;
        match r {
            Some(Ok(())) => Ok(h),
            Some(Err(e)) => {
                self.sockets.remove(h);
                Err(e)
            }
            None => {
                self.sockets.remove(h);
                Err(GuestError::TimedOut)
            }
        }
    }

    /// Listen on `port` for one connection (a published port's traffic).
    pub fn listen(&mut self, port: u16) -> SocketHandle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; 512 * 1024]),
            tcp::SocketBuffer::new(vec![0u8; 512 * 1024]),
        );
        let _ = s.listen(port);
        self.sockets.add(s)
    }

    /// Wait until a listening socket has a connection.
    pub async fn accepted(&mut self, h: SocketHandle, limit: Duration) -> bool {
        self.until(limit, |g| {
            (g.sockets.get::<tcp::Socket>(h).state() == tcp::State::Established).then_some(())
        })
        .await
        .is_some()
    }

    /// Write all of `data` (in `segment`-sized pieces if set).
    pub async fn send(&mut self, h: SocketHandle, data: &[u8]) -> Result<(), GuestError> {
        let mut off = 0;
        let piece = self.segment.unwrap_or(usize::MAX);
        let end = Instant::now() + Duration::from_secs(30);
        while off < data.len() {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if !s.may_send() {
                return Err(GuestError::Reset);
            }
            if s.send_queue() == 0 || self.segment.is_none() {
                let upto = off.saturating_add(piece).min(data.len());
                off += s.send_slice(&data[off..upto]).unwrap_or(0);
            }
            if Instant::now() > end {
                return Err(GuestError::TimedOut);
            }
            self.step(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// Offer `data` (repeated) to a connection for `dur` without ever reading from it;
    /// returns how many bytes the peer took (sent and acknowledged).
    pub async fn offer(&mut self, h: SocketHandle, data: &[u8], dur: Duration) -> usize {
        let end = Instant::now() + dur;
        let mut queued = 0usize;
        while Instant::now() < end {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if !s.may_send() {
                break;
            }
            let off = queued % data.len();
            queued += s.send_slice(&data[off..]).unwrap_or(0);
            self.step(Duration::from_millis(2)).await;
        }
        queued - self.sockets.get::<tcp::Socket>(h).send_queue()
    }

    /// Read until the peer closes (or `limit` passes); returns what arrived and whether
    /// the connection ended with a reset rather than a close.
    pub async fn read_to_end(&mut self, h: SocketHandle, limit: Duration) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let end = Instant::now() + limit;
        loop {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            while s.can_recv() {
                let _ = s.recv(|b| {
                    out.extend_from_slice(b);
                    (b.len(), ())
                });
            }
            match s.state() {
                tcp::State::Closed => return (out, true),
                _ if !s.may_recv() => return (out, false),
                _ => {}
            }
            if Instant::now() > end {
                return (out, false);
            }
            self.step(Duration::from_millis(5)).await;
        }
    }

    /// Read at least `n` bytes.
    pub async fn read_n(&mut self, h: SocketHandle, n: usize, limit: Duration) -> Vec<u8> {
        let mut out = Vec::new();
        let end = Instant::now() + limit;
        while out.len() < n && Instant::now() < end {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            while s.can_recv() {
                let _ = s.recv(|b| {
                    out.extend_from_slice(b);
                    (b.len(), ())
                });
            }
            if out.len() >= n || !s.may_recv() {
                break;
            }
            self.step(Duration::from_millis(2)).await;
        }
        out
    }

    /// One TLS exchange on an open connection, driven through rustls' sans-IO client: the
    /// handshake, then `request` once it completes, then everything the server sends
    /// until it closes. Returns the plaintext received, or why it failed. Honours
    /// [`FakeGuest::segment`], so a request can cross the helper one byte per segment.
    pub async fn tls_exchange(
        &mut self,
        h: SocketHandle,
        tls: &mut rustls::ClientConnection,
        request: &[u8],
        limit: Duration,
    ) -> Result<Vec<u8>, String> {
        use std::io::{Read, Write};
        let end = Instant::now() + limit;
        let mut sent = false;
        let mut plain = Vec::new();
        loop {
            if !tls.is_handshaking() && !sent {
                tls.writer().write_all(request).map_err(|e| e.to_string())?;
                sent = true;
            }
            let mut out = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut out).map_err(|e| e.to_string())?;
            }
            if !out.is_empty() {
                self.send(h, &out).await.map_err(|e| format!("{e:?}"))?;
            }
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            let mut inbuf = Vec::new();
            while s.can_recv() {
                let _ = s.recv(|b| {
                    inbuf.extend_from_slice(b);
                    (b.len(), ())
                });
            }
            let closed = !s.may_recv();
            let mut rd = &inbuf[..];
            while !rd.is_empty() {
                tls.read_tls(&mut rd).map_err(|e| e.to_string())?;
                tls.process_new_packets().map_err(|e| e.to_string())?;
            }
            let mut buf = [0u8; 16 * 1024];
            loop {
                match tls.reader().read(&mut buf) {
                    Ok(0) => return Ok(plain),
                    Ok(n) => plain.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(plain),
                    Err(e) => return Err(e.to_string()),
                }
            }
            if closed {
                return if tls.is_handshaking() {
                    Err("the connection closed during the handshake".into())
                } else {
                    Ok(plain)
                };
            }
            if Instant::now() > end {
                return Err("timed out".into());
            }
            self.step(Duration::from_millis(2)).await;
        }
    }

    /// Half-close the guest's side.
    pub async fn close(&mut self, h: SocketHandle) {
        self.sockets.get_mut::<tcp::Socket>(h).close();
        self.step(Duration::from_millis(1)).await;
    }

    pub fn remove(&mut self, h: SocketHandle) {
        self.sockets.remove(h);
    }

    /// Send a UDP datagram from `src_port` to `dst`.
    pub async fn udp_send(&mut self, src_port: u16, dst: SocketAddrV4, data: &[u8]) {
        let f = frame::udp_from_guest(&self.subnet, src_port, dst, data);
        self.raw(&f).await;
    }

    /// Wait for a datagram to `port`.
    pub async fn udp_recv(
        &mut self,
        port: u16,
        limit: Duration,
    ) -> Option<(SocketAddrV4, Vec<u8>)> {
        self.until(limit, |g| {
            let i = g.udp.iter().position(|(_, p, _)| *p == port)?;
            g.udp.remove(i).map(|(from, _, d)| (from, d))
        })
        .await
    }

    /// One DNS exchange over UDP with `server` (any address; port 53).
    pub async fn dns(&mut self, server: Ipv4Addr, query: &[u8]) -> Option<Vec<u8>> {
        self.next_port = self.next_port.wrapping_add(1).max(40000);
        let port = self.next_port;
        self.udp_send(port, SocketAddrV4::new(server, 53), query)
            .await;
        self.udp_recv(port, Duration::from_secs(5))
            .await
            .map(|(_, d)| d)
    }

    /// Let time pass while still moving frames.
    pub async fn idle(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.step(Duration::from_millis(5)).await;
        }
    }

    pub fn subnet(&self) -> &Subnet {
        &self.subnet
    }
}

/// A UDP datagram the helper sent to the guest: (from, to port, payload).
fn udp_to_us(f: &[u8], subnet: &Subnet) -> Option<(SocketAddrV4, u16, Vec<u8>)> {
    // Reuse the guest-side classifier by viewing the frame from the other side: swap
    // nothing, just parse the headers directly.
    use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, UdpPacket};
    let eth = EthernetFrame::new_checked(f).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Udp || ip.dst_addr() != subnet.guest_ip {
        return None;
    }
    let udp = UdpPacket::new_checked(ip.payload()).ok()?;
    Some((
        SocketAddrV4::new(ip.src_addr(), udp.src_port()),
        udp.dst_port(),
        udp.payload().to_vec(),
    ))
}

/// A frame from the guest carrying one IPv4 packet of `proto`, whose payload `emit`
/// writes into the `len` bytes after the IPv4 header.
fn guest_ipv4_frame(
    s: &Subnet,
    dst: Ipv4Addr,
    proto: smoltcp::wire::IpProtocol,
    len: usize,
    emit: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{EthernetFrame, EthernetProtocol, EthernetRepr, Ipv4Packet, Ipv4Repr};
    let ip = Ipv4Repr {
        src_addr: s.guest_ip,
        dst_addr: dst,
        next_header: proto,
        payload_len: len,
        hop_limit: 64,
    };
    let mut buf = vec![0u8; 14 + ip.buffer_len() + len];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: EthernetAddress(s.guest_mac),
        dst_addr: EthernetAddress(crate::config::GATEWAY_MAC),
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut eth);
    let mut ipp = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip.emit(&mut ipp, &ChecksumCapabilities::default());
    emit(ipp.payload_mut());
    buf
}

/// A bare TCP SYN from the guest, outside any stack (floods, raw rigs).
pub fn raw_syn(s: &Subnet, sport: u16, dst: SocketAddrV4) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, IpProtocol, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber};
    let tcp = TcpRepr {
        src_port: sport,
        dst_port: dst.port(),
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(1000),
        ack_number: None,
        window_len: 1024,
        window_scale: None,
        max_seg_size: Some(1400),
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    guest_ipv4_frame(s, *dst.ip(), IpProtocol::Tcp, tcp.buffer_len(), |b| {
        tcp.emit(
            &mut TcpPacket::new_unchecked(b),
            &IpAddress::Ipv4(s.guest_ip),
            &IpAddress::Ipv4(*dst.ip()),
            &ChecksumCapabilities::default(),
        );
    })
}

/// An ICMP echo request from the guest to `dst`.
pub fn raw_echo_request(s: &Subnet, dst: Ipv4Addr, ident: u16) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpProtocol};
    let icmp = Icmpv4Repr::EchoRequest {
        ident,
        seq_no: 1,
        data: b"ping",
    };
    guest_ipv4_frame(s, dst, IpProtocol::Icmp, icmp.buffer_len(), |b| {
        icmp.emit(
            &mut Icmpv4Packet::new_unchecked(b),
            &ChecksumCapabilities::default(),
        );
    })
}
