//! Fixtures and frame builders for the adversarial suite: recording TCP and UDP fixtures on
//! 127.0.0.1, a scripted upstream resolver, a hand-built TLS ClientHello, raw IPv4/IPv6
//! frames, and a "raw rig" that drives the engine through bare frames, without a guest
//! TCP/IP stack that would answer its SYN-ACKs with resets.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxlite_net::config::{GATEWAY_MAC, NetConfig, Subnet};
use boxlite_net::control::{LogEntry, Shared};
use boxlite_net::engine::{Engine, Listeners};
use boxlite_net::fake_guest::FakeGuest;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

pub const T: Duration = Duration::from_secs(10);
/// The box's DNS address and gateway in the default subnet.
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);

pub fn v4(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A config whose every dial is checked by the loopback guard and whose DNS goes nowhere
/// real.
pub fn cfg() -> NetConfig {
    let dir = std::env::temp_dir().join(format!("bxadv-{:016x}", rand::random::<u64>()));
    let mut c = NetConfig::new(dir.join("n.sock"), dir.join("nc.sock"));
    c.test.loopback_only = true;
    c.dns_upstreams = vec![sa("127.0.0.1:9")];
    c
}

pub fn u16_len(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap().to_be_bytes()
}

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// A TCP fixture on 127.0.0.1 that records the bytes of each connection and echoes them
/// (or, with `reply`, answers the first read with `reply` and then only listens).
#[derive(Clone)]
pub struct Fixture {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Fixture {
    pub async fn echo() -> Fixture {
        Self::on(Self::listener().await, None)
    }

    pub async fn replying(reply: Vec<u8>) -> Fixture {
        Self::on(Self::listener().await, Some(reply))
    }

    async fn listener() -> tokio::net::TcpListener {
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
    }

    fn on(l: tokio::net::TcpListener, reply: Option<Vec<u8>>) -> Fixture {
        let addr = l.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let c = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let i = {
                    let mut v = c.lock().unwrap();
                    v.push(Vec::new());
                    v.len() - 1
                };
                let c = c.clone();
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut replied = false;
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        c.lock().unwrap()[i].extend_from_slice(&buf[..n]);
                        let out: &[u8] = match &reply {
                            None => &buf[..n],
                            Some(_) if replied => continue,
                            Some(r) => {
                                replied = true;
                                r
                            }
                        };
                        if s.write_all(out).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Fixture { addr, conns }
    }

    pub fn accepts(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// The bytes connection `i` has received so far.
    pub fn received(&self, i: usize) -> Vec<u8> {
        self.conns
            .lock()
            .unwrap()
            .get(i)
            .cloned()
            .unwrap_or_default()
    }
}

/// A UDP fixture on 127.0.0.1: counts datagrams and distinct peers, and echoes.
#[derive(Clone)]
pub struct UdpFixture {
    pub addr: SocketAddr,
    pub datagrams: Arc<AtomicUsize>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl UdpFixture {
    pub async fn echo() -> UdpFixture {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Self::on(s, true)
    }

    fn on(s: tokio::net::UdpSocket, echo: bool) -> UdpFixture {
        let addr = s.local_addr().unwrap();
        let datagrams = Arc::new(AtomicUsize::new(0));
        let peers: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let (d, p) = (datagrams.clone(), peers.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, peer)) = s.recv_from(&mut buf).await {
                d.fetch_add(1, Ordering::SeqCst);
                {
                    let mut p = p.lock().unwrap();
                    if !p.contains(&peer) {
                        p.push(peer);
                    }
                }
                if echo {
                    let _ = s.send_to(&buf[..n], peer).await;
                }
            }
        });
        UdpFixture {
            addr,
            datagrams,
            peers,
        }
    }

    pub fn peers(&self) -> usize {
        self.peers.lock().unwrap().len()
    }
}

/// An echo fixture for both TCP and UDP on one 127.0.0.1 port, counting everything: one
/// `dial_override` target serves both protocols of a virtual address.
pub struct Sink {
    pub addr: SocketAddr,
    pub tcp: Fixture,
    pub udp: UdpFixture,
}

impl Sink {
    pub async fn start() -> Sink {
        for _ in 0..50 {
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = tcp.local_addr().unwrap();
            let Ok(udp) = tokio::net::UdpSocket::bind(addr).await else {
                continue;
            };
            return Sink {
                addr,
                tcp: Fixture::on(tcp, None),
                udp: UdpFixture::on(udp, true),
            };
        }
        panic!("no port free for both tcp and udp");
    }

    /// (TCP connections, UDP datagrams) so far.
    pub fn touched(&self) -> (usize, usize) {
        (
            self.tcp.accepts(),
            self.udp.datagrams.load(Ordering::SeqCst),
        )
    }
}

// ---------------------------------------------------------------------------------------
// DNS
// ---------------------------------------------------------------------------------------

pub fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

pub fn a(owner: &str, ip: &str, ttl: u32) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(ip.parse().unwrap())))
}

pub fn cname(owner: &str, target: &str) -> Record {
    Record::from_rdata(name(owner), 0, RData::CNAME(CNAME(name(target))))
}

pub fn query(name_: &str, t: RecordType) -> Vec<u8> {
    query_id(rand::random(), name_, t)
}

pub fn query_id(id: u16, name_: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(name_), t));
    m.to_vec().unwrap()
}

/// Response code and A records of a reply.
pub fn a_records(reply: &[u8]) -> (ResponseCode, Vec<Ipv4Addr>) {
    let m = Message::from_vec(reply).unwrap();
    let ips = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    (m.metadata.response_code, ips)
}

/// What a scripted upstream does with one question: answer with a code and records, or
/// stay silent.
pub type Answer = Option<(ResponseCode, Vec<Record>)>;

/// A fake upstream resolver on 127.0.0.1 (UDP). `script(name, type, n)` is called with the
/// question's lowercased name without its dot, its type, and how many times that name was
/// asked before. Every question it gets is recorded.
pub struct Upstream {
    pub addr: SocketAddr,
    asked: Arc<Mutex<Vec<(String, RecordType)>>>,
}

impl Upstream {
    pub async fn scripted(
        script: impl Fn(&str, RecordType, usize) -> Answer + Send + 'static,
    ) -> Upstream {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        let asked: Arc<Mutex<Vec<(String, RecordType)>>> = Arc::default();
        let log = asked.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut seen: HashMap<String, usize> = HashMap::new();
            while let Ok((n, peer)) = s.recv_from(&mut buf).await {
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(question) = q.queries.first() else {
                    continue;
                };
                let qname = question
                    .name()
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                let qtype = question.query_type();
                log.lock().unwrap().push((qname.clone(), qtype));
                let count = seen.entry(qname.clone()).or_default();
                let answer = script(&qname, qtype, *count);
                *count += 1;
                let Some((code, answers)) = answer else {
                    continue;
                };
                let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                m.metadata.recursion_desired = q.metadata.recursion_desired;
                m.metadata.recursion_available = true;
                m.metadata.response_code = code;
                m.queries = q.queries.clone();
                m.answers = answers;
                let _ = s.send_to(&m.to_vec().unwrap(), peer).await;
            }
        });
        Upstream { addr, asked }
    }

    /// An upstream that answers every A question from a fixed table and is silent
    /// otherwise.
    pub async fn table(entries: &[(&str, &str)]) -> Upstream {
        let table: HashMap<String, String> = entries
            .iter()
            .map(|(n, ip)| ((*n).to_owned(), (*ip).to_owned()))
            .collect();
        Self::scripted(move |qname, qtype, _| {
            let ip = table.get(qname)?;
            (qtype == RecordType::A).then(|| (ResponseCode::NoError, vec![a(qname, ip, 60)]))
        })
        .await
    }

    pub fn asked(&self) -> Vec<(String, RecordType)> {
        self.asked.lock().unwrap().clone()
    }

    pub fn count(&self, qname: &str) -> usize {
        self.asked().iter().filter(|(n, _)| n == qname).count()
    }
}

// ---------------------------------------------------------------------------------------
// Decision log
// ---------------------------------------------------------------------------------------

/// The decision on the latest connection (or UDP flow) to `dst`: its one `connect` entry,
/// or for a shared address the first entry after its interim `defer-l7` one (the decision
/// made on the SNI or Host).
pub fn last_for(log: &[LogEntry], dst: &str) -> LogEntry {
    let for_dst: Vec<&LogEntry> = log
        .iter()
        .filter(|e| e.dst.as_deref() == Some(dst) && e.kind == "connect")
        .collect();
    let found = match for_dst.iter().rposition(|e| e.verdict == "defer-l7") {
        Some(i) => for_dst.get(i + 1),
        None => for_dst.last(),
    };
    found
        .map(|e| (*e).clone())
        .unwrap_or_else(|| panic!("no decision for {dst} in {log:#?}"))
}

/// (verdict, reason, rule, SNI/Host) of an entry, for one-line assertions.
pub fn summary(e: &LogEntry) -> (&str, &str, Option<&str>, Option<&str>) {
    (
        e.verdict.as_str(),
        e.reason.as_str(),
        e.rule.as_deref(),
        e.name.as_deref(),
    )
}

pub fn dns_entries(log: &[LogEntry], name_: &str) -> Vec<LogEntry> {
    log.iter()
        .filter(|e| e.kind == "dns" && e.name.as_deref() == Some(name_))
        .cloned()
        .collect()
}

pub fn no_guard_violations(log: &[LogEntry]) {
    let bad: Vec<_> = log.iter().filter(|e| e.kind == "guard").collect();
    assert!(bad.is_empty(), "a dial left 127.0.0.0/8: {bad:#?}");
}

// ---------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------

fn push_ext(exts: &mut Vec<u8>, kind: u16, data: &[u8]) {
    exts.extend_from_slice(&kind.to_be_bytes());
    exts.extend_from_slice(&u16_len(data.len()));
    exts.extend_from_slice(data);
}

/// A TLS 1.3 ClientHello in one record, shaped like a current browser's (GREASE, ALPN,
/// key_share, supported_versions...), with `sni` as its one `host_name` if given.
pub fn client_hello(sni: Option<&str>) -> Vec<u8> {
    let mut exts = Vec::new();
    push_ext(&mut exts, 0x0a0a, &[]); // GREASE
    if let Some(host) = sni {
        let mut list = vec![0u8];
        list.extend_from_slice(&u16_len(host.len()));
        list.extend_from_slice(host.as_bytes());
        let mut data = u16_len(list.len()).to_vec();
        data.extend_from_slice(&list);
        push_ext(&mut exts, 0x0000, &data);
    }
    push_ext(&mut exts, 0x0017, &[]); // extended_master_secret
    push_ext(&mut exts, 0xff01, &[0]); // renegotiation_info
    push_ext(&mut exts, 0x000a, &[0, 6, 0, 0x1d, 0, 0x17, 0, 0x18]); // groups
    push_ext(&mut exts, 0x000b, &[1, 0]); // ec_point_formats
    push_ext(&mut exts, 0x0023, &[]); // session_ticket
    push_ext(&mut exts, 0x0010, b"\x00\x0c\x02h2\x08http/1.1"); // ALPN
    push_ext(&mut exts, 0x0005, &[1, 0, 0, 0, 0]); // status_request
    push_ext(&mut exts, 0x000d, &[0, 8, 4, 3, 8, 4, 4, 1, 5, 3]); // signature_algorithms
    push_ext(&mut exts, 0x0012, &[]); // signed_certificate_timestamp
    let mut key_share = vec![0, 0x24, 0, 0x1d, 0, 0x20];
    key_share.extend_from_slice(&[0x5a; 32]);
    push_ext(&mut exts, 0x0033, &key_share);
    push_ext(&mut exts, 0x002d, &[1, 1]); // psk_key_exchange_modes
    push_ext(&mut exts, 0x002b, &[4, 3, 4, 3, 3]); // supported_versions
    push_ext(&mut exts, 0x1a1a, &[0]); // GREASE

    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x11; 32]); // random
    body.push(32);
    body.extend_from_slice(&[0x22; 32]); // legacy_session_id
    let suites: [u16; 6] = [0x1a1a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f];
    body.extend_from_slice(&u16_len(suites.len() * 2));
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    body.extend_from_slice(&u16_len(exts.len()));
    body.extend_from_slice(&exts);

    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let mut hs = vec![0x01, len[1], len[2], len[3]];
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16_len(hs.len()));
    record.extend_from_slice(&hs);
    record
}

// ---------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------

/// The internet checksum of `data`, continuing from `sum`.
pub fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

pub fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap()
}

/// An ARP request from the guest for `target`.
pub fn arp_request(s: &Subnet, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&s.guest_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&s.guest_mac);
    f.extend_from_slice(&s.guest_ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// The guest's IPv6 link-local address, from its MAC (EUI-64).
pub fn guest_ll(s: &Subnet) -> [u8; 16] {
    let m = s.guest_mac;
    [
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 2,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ]
}

/// An IPv6 packet from the guest's link-local address to `dst`, in a frame to the
/// gateway's MAC (or the multicast MAC of a multicast `dst`). `next` is the upper-layer
/// protocol, whose checksum (at `csum_at` within `l4`) is filled in over the pseudo-header.
pub fn ipv6_frame(s: &Subnet, dst: [u8; 16], next: u8, mut l4: Vec<u8>, csum_at: usize) -> Vec<u8> {
    let src = guest_ll(s);
    let len = u32::try_from(l4.len()).unwrap();
    let mut sum = csum_add(0, &src);
    sum = csum_add(sum, &dst);
    sum = csum_add(sum, &len.to_be_bytes());
    sum = csum_add(sum, &[0, 0, 0, next]);
    sum = csum_add(sum, &l4);
    l4[csum_at..csum_at + 2].copy_from_slice(&csum_fold(sum).to_be_bytes());
    let dst_mac = if dst[0] == 0xff {
        [0x33, 0x33, dst[12], dst[13], dst[14], dst[15]]
    } else {
        GATEWAY_MAC
    };
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&s.guest_mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&u16_len(l4.len()));
    f.extend_from_slice(&[next, 255]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&l4);
    f
}

/// A UDP datagram to the guest (`to_port`) in a frame the engine sent, if it is one.
pub fn udp_to_guest(f: &[u8], s: &Subnet) -> Option<(u16, Vec<u8>)> {
    use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, UdpPacket};
    let eth = EthernetFrame::new_checked(f).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Udp || ip.dst_addr() != s.guest_ip {
        return None;
    }
    let udp = UdpPacket::new_checked(ip.payload()).ok()?;
    Some((udp.dst_port(), udp.payload().to_vec()))
}

// ---------------------------------------------------------------------------------------
// The raw rig
// ---------------------------------------------------------------------------------------

/// The production engine on one end of a socket pair, driven by bare frames from the
/// other: nothing answers the engine's SYN-ACKs, so handshakes stay half-open. When the
/// flood is over, [`RawRig::into_guest`] hands the same socket to a [`FakeGuest`].
pub struct RawRig {
    pub shared: Arc<Shared>,
    pub engine: tokio::task::JoinHandle<()>,
    pub subnet: Subnet,
    raw: UnixStream,
    guest_end: UnixStream,
    inbox: Vec<u8>,
    /// Every frame the engine sent, in order.
    pub frames: Vec<Vec<u8>>,
}

impl RawRig {
    pub async fn start(cfg: NetConfig) -> RawRig {
        let shared = Arc::new(Shared::new(None));
        let (engine, parts) = Engine::new(cfg.clone(), shared.clone()).unwrap();
        let listeners = Listeners::bind(&cfg, &shared).await.unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let b2 = b.try_clone().unwrap();
        for s in [&a, &b, &b2] {
            s.set_nonblocking(true).unwrap();
        }
        let task = tokio::spawn(engine.run(parts, UnixStream::from_std(a).unwrap(), listeners));
        RawRig {
            shared,
            engine: task,
            subnet: cfg.subnet.clone(),
            raw: UnixStream::from_std(b).unwrap(),
            guest_end: UnixStream::from_std(b2).unwrap(),
            inbox: Vec::new(),
            frames: Vec::new(),
        }
    }

    pub fn log(&self) -> Vec<LogEntry> {
        self.shared.entries()
    }

    fn read_available(&mut self) {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match self.raw.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.inbox.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("reading from the engine: {e}"),
            }
        }
        while self.inbox.len() >= 4 {
            let n = usize::try_from(u32::from_be_bytes([
                self.inbox[0],
                self.inbox[1],
                self.inbox[2],
                self.inbox[3],
            ]))
            .unwrap();
            if self.inbox.len() < 4 + n {
                break;
            }
            let f: Vec<u8> = self.inbox.drain(..4 + n).skip(4).collect();
            self.frames.push(f);
        }
    }

    /// Send one frame, reading whatever the engine sends meanwhile (so neither side can
    /// block the other on a full socket).
    pub async fn send(&mut self, f: &[u8]) {
        let mut out = Vec::with_capacity(4 + f.len());
        out.extend_from_slice(&u32::try_from(f.len()).unwrap().to_be_bytes());
        out.extend_from_slice(f);
        let mut off = 0;
        while off < out.len() {
            let ready = self
                .raw
                .ready(Interest::READABLE | Interest::WRITABLE)
                .await
                .unwrap();
            if ready.is_readable() {
                self.read_available();
            }
            if ready.is_writable() {
                match self.raw.try_write(&out[off..]) {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("writing to the engine: {e}"),
                }
            }
        }
    }

    /// Keep reading the engine's frames for `d`.
    pub async fn drain(&mut self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Ok(Ok(())) = tokio::time::timeout(left, self.raw.readable()).await {
                self.read_available();
            }
        }
    }

    /// Hand the socket to a fake guest, at a frame boundary.
    pub async fn into_guest(mut self) -> (FakeGuest, Arc<Shared>, tokio::task::JoinHandle<()>) {
        let end = Instant::now() + T;
        while !self.inbox.is_empty() && Instant::now() < end {
            self.drain(Duration::from_millis(10)).await;
        }
        assert!(self.inbox.is_empty(), "stuck mid-frame");
        let _ = self.raw.flush().await;
        drop(self.raw);
        (
            FakeGuest::new(self.guest_end, self.subnet),
            self.shared,
            self.engine,
        )
    }
}

pub use boxlite_net::fake_guest::raw_syn as syn;
