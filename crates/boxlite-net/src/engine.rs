//! The helper's core: one event loop that owns the smoltcp interface, every guest flow and
//! the decision state (policy, DNS pins), with host sockets served by small tokio tasks.
//!
//! Frames are sorted before smoltcp sees them ([`crate::frame`]): spoofed, IPv6 and
//! malformed frames are dropped; UDP never enters smoltcp (DNS is answered here, other
//! datagrams are relayed per flow); a TCP SYN is decided by the policy first. An allowed
//! connection is dialled on the host *before* the guest's handshake completes, so a refused
//! upstream shows the guest a reset, as a real network would. Only then is a smoltcp socket
//! created for it and the held SYN handed in. A denied SYN reaches smoltcp with no socket
//! listening, which answers it with a reset. Connections whose decision needs the first
//! bytes (a shared address where only some of its names are allowed) are accepted, read
//! up to the TLS SNI or HTTP `Host`, decided, and only then dialled.
//!
//! The helper always dials the address the guest asked for (or, for the gateway, the host's
//! loopback), never a name, so what the policy approved is what gets connected.
//!
//! Every producer (the frame reader, the host sockets' tasks) wakes the loop, through the
//! event channel or a shared [`Notify`]; nothing polls on a timer except smoltcp's own
//! retransmission deadlines.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, IpListenEndpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, UnixStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::config::{GATEWAY_MAC, NetConfig, Proto, Subnet};
use crate::control::{LogEntry, Shared};
use crate::dns::{self, Forward, QueryOutcome, Resolver};
use crate::frame::{self, DropReason, Kind};
use crate::l7::{self, Peek};
use crate::policy::{Decision, PinSet, Policy, Verdict};

/// Bytes each smoltcp socket buffers in each direction.
const TCP_BUFFER: usize = 512 * 1024;
/// One read from or write to a host socket.
const CHUNK: usize = 64 * 1024;
/// Chunks queued between the loop and one host socket, each way.
const CHANNEL_DEPTH: usize = 4;
/// Concurrent TCP flows per box, and how many of them may be waiting for a dial.
pub const MAX_TCP_FLOWS: usize = 4096;
pub const MAX_PENDING_DIALS: usize = 256;
/// A dial that takes longer is a refused connection.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// A handshake the guest does not finish in this time is dropped (half-open flood).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a deferred connection may take to show its SNI or Host.
const PEEK_TIMEOUT: Duration = Duration::from_secs(2);
pub const MAX_UDP_FLOWS: usize = 512;
const UDP_IDLE: Duration = Duration::from_secs(60);
const MAX_DNS_INFLIGHT: usize = 128;
/// DNS over TCP: the most a guest may have buffered unparsed.
const MAX_DNS_TCP_BUFFER: usize = 65_537;
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the network policy is invalid")]
    Policy(#[source] crate::policy::RuleError),
    #[error("the box's DNS settings are invalid")]
    Dns(#[source] crate::dns::DnsError),
    #[error("binding published port {addr}/{proto}")]
    Bind {
        addr: SocketAddr,
        proto: Proto,
        #[source]
        source: std::io::Error,
    },
}

/// Messages from the tasks to the loop.
enum Event {
    Frame(Vec<u8>),
    GuestGone,
    Connected {
        id: u64,
        result: Result<TcpStream, String>,
    },
    DnsUdp {
        fwd: Forward,
        server: SocketAddrV4,
        guest_port: u16,
        reply: Result<Vec<u8>, String>,
    },
    DnsTcp {
        id: u64,
        fwd: Forward,
        reply: Result<Vec<u8>, String>,
    },
    UdpIn {
        key: UdpKey,
        data: Vec<u8>,
    },
    Inbound {
        stream: TcpStream,
        guest_port: u16,
    },
    InboundUdp {
        port: usize,
        peer: SocketAddr,
        data: Vec<u8>,
    },
}

/// A guest UDP flow: its source port and the destination it addressed.
type UdpKey = (u16, SocketAddrV4);

enum Phase {
    /// Waiting for the host dial; the guest's SYN is held (`syn`) or, after a deferred
    /// decision, the guest connection is already open.
    Dialing,
    /// Accepted to read the first flight; decided on SNI or Host.
    Peek { buf: Vec<u8>, deadline: Instant },
    /// Data flows both ways.
    Relay,
    /// DNS over TCP, answered here.
    Dns { buf: Vec<u8>, inflight: usize },
}

struct Flow {
    handle: Option<SocketHandle>,
    guest: SocketAddrV4,
    dst: SocketAddrV4,
    names: Vec<String>,
    phase: Phase,
    syn: Option<Vec<u8>>,
    /// Bytes for the host once connected (a peeked first flight).
    preface: Vec<u8>,
    to_host: Option<mpsc::Sender<Vec<u8>>>,
    from_host: Option<mpsc::Receiver<Vec<u8>>>,
    pending: Vec<u8>,
    pending_off: usize,
    host_eof: bool,
    closing: bool,
    tasks: Vec<JoinHandle<()>>,
    started: Instant,
    inbound: bool,
}

impl Flow {
    fn new(guest: SocketAddrV4, dst: SocketAddrV4, names: Vec<String>, phase: Phase) -> Self {
        Flow {
            handle: None,
            guest,
            dst,
            names,
            phase,
            syn: None,
            preface: Vec::new(),
            to_host: None,
            from_host: None,
            pending: Vec::new(),
            pending_off: 0,
            host_eof: false,
            closing: false,
            tasks: Vec::new(),
            started: Instant::now(),
            inbound: false,
        }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct UdpFlow {
    /// Sends go through the std socket: a tokio socket's `try_send` refuses until the
    /// reactor has seen it writable once.
    send: std::net::UdpSocket,
    task: JoinHandle<()>,
    last: Instant,
}

impl Drop for UdpFlow {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The smoltcp device: frames queued in memory, moved to and from the data socket by the
/// loop. The fake guest uses the same device.
pub(crate) struct Queues {
    pub(crate) rx: VecDeque<Vec<u8>>,
    pub(crate) tx: Vec<Vec<u8>>,
    pub(crate) mtu: usize,
}

pub(crate) struct RxTok(Vec<u8>);
pub(crate) struct TxTok<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = RxTok;
    type TxToken<'a> = TxTok<'a>;

    fn receive(
        &mut self,
        _: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let f = self.rx.pop_front()?;
        Some((RxTok(f), TxTok(&mut self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(TxTok(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        caps
    }
}

/// Everything the loop owns.
pub struct Engine {
    cfg: NetConfig,
    policy: Policy,
    resolver: Resolver,
    upstreams: Vec<SocketAddr>,
    pins: PinSet,
    shared: Arc<Shared>,
    iface: Interface,
    dev: Queues,
    sockets: SocketSet<'static>,
    flows: HashMap<u64, Flow>,
    by_tuple: HashMap<(SocketAddrV4, SocketAddrV4), u64>,
    next_id: u64,
    udp: HashMap<UdpKey, UdpFlow>,
    dns_inflight: usize,
    inbound_udp: Vec<std::net::UdpSocket>,
    /// Inbound UDP: (published port, peer) <-> the gateway port the guest sees it from.
    udp_peers: HashMap<(usize, SocketAddr), u16>,
    udp_peer_of: HashMap<u16, (usize, SocketAddr, Instant)>,
    next_ephemeral: u16,
    notify: Arc<Notify>,
    events: mpsc::Sender<Event>,
    last_sweep: Instant,
    epoch: Instant,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("flows", &self.flows.len())
            .field("udp", &self.udp.len())
            .finish_non_exhaustive()
    }
}

/// Published ports, bound before the helper reports ready (so a port in use fails the
/// box's start with a clear message).
#[derive(Debug)]
pub struct Listeners {
    tcp: Vec<(tokio::net::TcpListener, u16)>,
    udp: Vec<(UdpSocket, std::net::UdpSocket, u16)>,
}

impl Listeners {
    /// Bind every published port of `cfg`; records the bound addresses in `shared`.
    pub async fn bind(cfg: &NetConfig, shared: &Shared) -> Result<Listeners, EngineError> {
        let mut out = Listeners {
            tcp: Vec::new(),
            udp: Vec::new(),
        };
        for p in &cfg.ports {
            let err = |source| EngineError::Bind {
                addr: p.host,
                proto: p.proto,
                source,
            };
            let bound = match p.proto {
                Proto::Tcp => {
                    let l = tokio::net::TcpListener::bind(p.host).await.map_err(err)?;
                    let a = l.local_addr().map_err(err)?;
                    out.tcp.push((l, p.guest_port));
                    a
                }
                Proto::Udp => {
                    let std_sock = std::net::UdpSocket::bind(p.host).map_err(err)?;
                    std_sock.set_nonblocking(true).map_err(err)?;
                    let send = std_sock.try_clone().map_err(err)?;
                    let a = std_sock.local_addr().map_err(err)?;
                    let s = UdpSocket::from_std(std_sock).map_err(err)?;
                    out.udp.push((s, send, p.guest_port));
                    a
                }
            };
            shared.add_port(crate::control::BoundPort {
                host: bound,
                guest_port: p.guest_port,
                proto: p.proto,
            });
        }
        Ok(out)
    }
}

impl Engine {
    /// The production constructor; tests build their engines through it too, so a policy
    /// under test is the policy that ships.
    pub fn new(cfg: NetConfig, shared: Arc<Shared>) -> Result<(Engine, EngineParts), EngineError> {
        let policy = Policy::new(&cfg.rules, &cfg.subnet).map_err(EngineError::Policy)?;
        let resolver = Resolver::new(&cfg.hosts, &cfg.subnet).map_err(EngineError::Dns)?;
        let upstreams = if cfg.dns_upstreams.is_empty() {
            dns::host_upstreams()
        } else {
            cfg.dns_upstreams.clone()
        };
        let mut dev = Queues {
            rx: VecDeque::new(),
            tx: Vec::new(),
            mtu: usize::from(cfg.subnet.mtu),
        };
        let mut icfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(GATEWAY_MAC)));
        icfg.random_seed = rand_seed();
        let mut iface = Interface::new(icfg, &mut dev, smoltcp::time::Instant::ZERO);
        let s = &cfg.subnet;
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(s.gateway_ip.into(), s.prefix_len));
            let _ = a.push(IpCidr::new(s.dns_ip.into(), s.prefix_len));
        });
        // Accept segments for any destination: every guest connection ends here.
        iface.set_any_ip(true);
        let _ = iface.routes_mut().add_default_ipv4_route(s.gateway_ip);
        let (tx, rx) = mpsc::channel(1024);
        let now = Instant::now();
        Ok((
            Engine {
                cfg,
                policy,
                resolver,
                upstreams,
                pins: PinSet::new(4096),
                shared,
                iface,
                dev,
                sockets: SocketSet::new(Vec::new()),
                flows: HashMap::new(),
                by_tuple: HashMap::new(),
                next_id: 1,
                udp: HashMap::new(),
                dns_inflight: 0,
                inbound_udp: Vec::new(),
                udp_peers: HashMap::new(),
                udp_peer_of: HashMap::new(),
                next_ephemeral: *EPHEMERAL.start(),
                notify: Arc::new(Notify::new()),
                events: tx,
                last_sweep: now,
                epoch: now,
            },
            EngineParts { events: rx },
        ))
    }

    /// Serve the guest on `data` until it hangs up (QEMU exited).
    pub async fn run(mut self, parts: EngineParts, data: UnixStream, listeners: Listeners) {
        let mut events = parts.events;
        let (mut rd, mut wr) = data.into_split();
        let max = frame::max_frame(&self.cfg.subnet);
        let tx = self.events.clone();
        let shared = self.shared.clone();
        let reader = tokio::spawn(async move {
            loop {
                let mut len = [0u8; 4];
                if rd.read_exact(&mut len).await.is_err() {
                    break;
                }
                let n = u32::from_be_bytes(len) as usize;
                if n > (1 << 20) {
                    // Not a frame stream any more: nothing after this can be trusted.
                    break;
                }
                let mut f = vec![0u8; n];
                if rd.read_exact(&mut f).await.is_err() {
                    break;
                }
                if n > max {
                    shared.count_drop(DropReason::Oversized);
                    continue;
                }
                if tx.send(Event::Frame(f)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::GuestGone).await;
        });
        self.spawn_listeners(listeners);
        let mut out = Vec::with_capacity(CHUNK);
        loop {
            self.pump();
            if !self.dev.tx.is_empty() {
                out.clear();
                for f in self.dev.tx.drain(..) {
                    self.shared.stats.add_out(f.len());
                    out.extend_from_slice(&u32::try_from(f.len()).unwrap_or(0).to_be_bytes());
                    out.extend_from_slice(&f);
                }
                if wr.write_all(&out).await.is_err() {
                    break;
                }
                continue;
            }
            let delay = self.next_wake();
            tokio::select! {
                biased;
                ev = events.recv() => {
                    match ev {
                        None | Some(Event::GuestGone) => break,
                        Some(ev) => self.on_event(ev),
                    }
                    // Take whatever else is queued before polling the stack.
                    for _ in 0..256 {
                        match events.try_recv() {
                            Ok(Event::GuestGone) => { reader.abort(); return; }
                            Ok(ev) => self.on_event(ev),
                            Err(_) => break,
                        }
                    }
                }
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(delay) => {}
            }
        }
        reader.abort();
    }

    fn smol_now(&self) -> smoltcp::time::Instant {
        let us = i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX);
        smoltcp::time::Instant::from_micros(us)
    }

    fn next_wake(&mut self) -> Duration {
        let now = self.smol_now();
        let mut d = self
            .iface
            .poll_delay(now, &self.sockets)
            .map_or(Duration::from_secs(5), |d| {
                Duration::from_micros(d.total_micros())
            });
        if self
            .flows
            .values()
            .any(|f| matches!(f.phase, Phase::Peek { .. }))
        {
            d = d.min(Duration::from_millis(100));
        }
        d.min(Duration::from_secs(5))
    }

    /// Poll the stack and service every flow until nothing moves.
    fn pump(&mut self) {
        for _ in 0..64 {
            let now = self.smol_now();
            self.iface.poll(now, &mut self.dev, &mut self.sockets);
            let moved = self.service_flows();
            if !moved && self.dev.rx.is_empty() {
                break;
            }
        }
        if self.last_sweep.elapsed() > Duration::from_secs(1) {
            self.sweep();
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Frame(f) => self.on_frame(f),
            Event::GuestGone => {}
            Event::Connected { id, result } => self.on_connected(id, result),
            Event::DnsUdp {
                fwd,
                server,
                guest_port,
                reply,
            } => {
                self.dns_inflight = self.dns_inflight.saturating_sub(1);
                // A reply the upstream gave over TCP may not fit the guest's UDP limit:
                // it gets a truncated one and retries over TCP.
                if let Some(bytes) = self
                    .dns_reply(&fwd, reply)
                    .and_then(|b| dns::truncate_for_udp(&b, fwd.udp_limit()).ok())
                {
                    self.send_udp_to_guest(server, guest_port, &bytes);
                }
            }
            Event::DnsTcp { id, fwd, reply } => {
                self.dns_inflight = self.dns_inflight.saturating_sub(1);
                let bytes = self.dns_reply(&fwd, reply);
                if let Some(flow) = self.flows.get_mut(&id)
                    && let Phase::Dns { inflight, .. } = &mut flow.phase
                {
                    *inflight -= 1;
                    if let Some(b) = bytes {
                        push_dns_tcp(&mut flow.pending, &b);
                    }
                }
            }
            Event::UdpIn { key, data } => {
                if let Some(f) = self.udp.get_mut(&key) {
                    f.last = Instant::now();
                    self.shared.stats.add_udp_in(data.len());
                    self.send_udp_to_guest(key.1, key.0, &data);
                }
            }
            Event::Inbound { stream, guest_port } => self.on_inbound(stream, guest_port),
            Event::InboundUdp { port, peer, data } => self.on_inbound_udp(port, peer, &data),
        }
    }

    fn dns_reply(&mut self, fwd: &Forward, reply: Result<Vec<u8>, String>) -> Option<Vec<u8>> {
        match reply {
            Ok(r) => {
                match self
                    .resolver
                    .on_reply(fwd, &r, &self.policy, &mut self.pins, Instant::now())
                {
                    Ok(b) => Some(b),
                    Err(e) => {
                        tracing_debug(&format!("dropping a dns reply for {}: {e}", fwd.name));
                        None
                    }
                }
            }
            Err(e) => {
                self.shared.log(LogEntry::dns(&fwd.name, "error", &e, None));
                None
            }
        }
    }

    fn on_frame(&mut self, f: Vec<u8>) {
        self.shared.stats.add_in(f.len());
        match frame::classify(&f, &self.cfg.subnet) {
            Kind::Drop(r) => self.shared.count_drop(r),
            Kind::Arp => self.dev.rx.push_back(f),
            // smoltcp would answer a ping to any address (it accepts every destination);
            // only the gateway and the DNS address are really there.
            Kind::OtherIpv4 { dst }
                if dst == self.cfg.subnet.gateway_ip || dst == self.cfg.subnet.dns_ip =>
            {
                self.dev.rx.push_back(f)
            }
            Kind::OtherIpv4 { .. } => self.shared.count_drop(DropReason::Unsupported),
            Kind::Udp { src, dst, payload } => {
                let data = f[payload].to_vec();
                self.on_udp(src, dst, &data);
            }
            Kind::Tcp { src, dst, syn } => {
                if syn {
                    self.on_syn(src, dst, f);
                } else {
                    self.dev.rx.push_back(f);
                }
            }
        }
    }

    fn names(&self, ip: Ipv4Addr) -> Vec<String> {
        self.pins.lookup(ip, Instant::now())
    }

    fn record(&self, proto: Proto, dst: SocketAddrV4, names: &[String], d: &Decision) {
        if d.verdict == Verdict::Deny {
            self.shared.stats.add_denied();
        }
        self.shared.log(LogEntry::connect(proto, dst, names, d));
    }

    fn on_syn(&mut self, guest: SocketAddrV4, dst: SocketAddrV4, syn: Vec<u8>) {
        if let Some(id) = self.by_tuple.get(&(guest, dst)).copied() {
            let stale = self.flows.get(&id).is_some_and(|f| {
                f.handle.is_some_and(|h| {
                    matches!(
                        self.sockets.get::<tcp::Socket>(h).state(),
                        tcp::State::Closed | tcp::State::TimeWait
                    )
                })
            });
            if !stale {
                // A retransmitted SYN: held while dialing, else the socket handles it.
                if self.flows.get(&id).is_some_and(|f| f.handle.is_some()) {
                    self.dev.rx.push_back(syn);
                }
                return;
            }
            self.remove_flow(id);
        }
        let names = self.names(*dst.ip());
        // DNS over TCP to any address is answered here, under the same policy as UDP.
        if dst.port() == 53 {
            let id = self.add_flow(Flow::new(
                guest,
                dst,
                names,
                Phase::Dns {
                    buf: Vec::new(),
                    inflight: 0,
                },
            ));
            self.open_guest_side(id, syn);
            return;
        }
        if self.flows.len() >= MAX_TCP_FLOWS
            || self
                .flows
                .values()
                .filter(|f| matches!(f.phase, Phase::Dialing | Phase::Peek { .. }))
                .count()
                >= MAX_PENDING_DIALS
        {
            let d = Decision {
                verdict: Verdict::Deny,
                reason: "too many connections in progress".into(),
                rule: None,
            };
            self.record(Proto::Tcp, dst, &names, &d);
            self.dev.rx.push_back(syn);
            return;
        }
        let d = self
            .policy
            .decide_connect(*dst.ip(), dst.port(), Proto::Tcp, &names);
        self.record(Proto::Tcp, dst, &names, &d);
        match d.verdict {
            // No socket listens: smoltcp answers with a reset.
            Verdict::Deny => self.dev.rx.push_back(syn),
            Verdict::Allow => {
                let mut flow = Flow::new(guest, dst, names, Phase::Dialing);
                flow.syn = Some(syn);
                let id = self.add_flow(flow);
                self.dial(id);
            }
            Verdict::DeferL7 => {
                let id = self.add_flow(Flow::new(
                    guest,
                    dst,
                    names,
                    Phase::Peek {
                        buf: Vec::new(),
                        deadline: Instant::now() + PEEK_TIMEOUT,
                    },
                ));
                self.open_guest_side(id, syn);
            }
        }
    }

    fn add_flow(&mut self, flow: Flow) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if !flow.inbound {
            self.by_tuple.insert((flow.guest, flow.dst), id);
        }
        self.flows.insert(id, flow);
        self.shared.stats.tcp_opened();
        id
    }

    fn new_socket() -> tcp::Socket<'static> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
        );
        s.set_nagle_enabled(false);
        s.set_ack_delay(None);
        s
    }

    /// Listen on the flow's destination and hand the guest's SYN in.
    fn open_guest_side(&mut self, id: u64, syn: Vec<u8>) {
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        let mut s = Self::new_socket();
        let ep = IpListenEndpoint {
            addr: Some((*flow.dst.ip()).into()),
            port: flow.dst.port(),
        };
        if s.listen(ep).is_err() {
            self.dev.rx.push_back(syn);
            self.remove_flow(id);
            return;
        }
        flow.handle = Some(self.sockets.add(s));
        self.dev.rx.push_back(syn);
    }

    /// Where a dial to `dst` really goes: the gateway is the host's loopback; tests map
    /// virtual addresses to local fixtures; the test guard refuses anything else that
    /// would leave 127.0.0.0/8.
    fn dial_target(&self, dst: SocketAddrV4) -> Result<SocketAddr, String> {
        let mut target = if *dst.ip() == self.cfg.subnet.gateway_ip {
            SocketAddr::from((Ipv4Addr::LOCALHOST, dst.port()))
        } else {
            SocketAddr::V4(dst)
        };
        if let Some((_, real)) = self
            .cfg
            .test
            .dial_override
            .iter()
            .find(|(v, _)| *v == SocketAddr::V4(dst))
        {
            target = *real;
        }
        if self.cfg.test.loopback_only && !target.ip().is_loopback() {
            return Err(format!(
                "guard: refusing to dial {target} outside 127.0.0.0/8"
            ));
        }
        Ok(target)
    }

    /// [`Engine::dial_target`], logging a refusal by the test guard.
    fn guarded_target(
        &self,
        proto: Proto,
        dst: SocketAddrV4,
        names: &[String],
    ) -> Result<SocketAddr, ()> {
        self.dial_target(dst).map_err(|reason| {
            let d = Decision {
                verdict: Verdict::Deny,
                reason,
                rule: None,
            };
            self.shared
                .log(LogEntry::connect(proto, dst, names, &d).guard());
        })
    }

    fn dial(&mut self, id: u64) {
        let Some(flow) = self.flows.get(&id) else {
            return;
        };
        let target = match self.guarded_target(Proto::Tcp, flow.dst, &flow.names) {
            Ok(t) => t,
            Err(()) => {
                self.on_connected(id, Err("guard".into()));
                return;
            }
        };
        let tx = self.events.clone();
        let task = tokio::spawn(async move {
            let result = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(target)).await
            {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    Ok(s)
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".into()),
            };
            let _ = tx.send(Event::Connected { id, result }).await;
        });
        if let Some(flow) = self.flows.get_mut(&id) {
            flow.tasks.push(task);
        }
    }

    fn on_connected(&mut self, id: u64, result: Result<TcpStream, String>) {
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        match result {
            Err(e) => {
                self.shared.log(LogEntry::dial_failed(flow.dst, &e));
                match flow.handle {
                    Some(h) => self.sockets.get_mut::<tcp::Socket>(h).abort(),
                    None => {
                        if let Some(syn) = flow.syn.take() {
                            self.dev.rx.push_back(syn);
                        }
                    }
                }
                self.remove_flow(id);
            }
            Ok(stream) => {
                let preface = std::mem::take(&mut flow.preface);
                let (to_host, from_host, tasks) = relay_tasks(stream, self.notify.clone());
                if !preface.is_empty() {
                    let _ = to_host.try_send(preface);
                }
                flow.to_host = Some(to_host);
                flow.from_host = Some(from_host);
                flow.tasks.extend(tasks);
                flow.phase = Phase::Relay;
                if flow.handle.is_none()
                    && let Some(syn) = flow.syn.take()
                {
                    self.open_guest_side(id, syn);
                }
            }
        }
    }

    fn on_inbound(&mut self, stream: TcpStream, guest_port: u16) {
        if self.flows.len() >= MAX_TCP_FLOWS {
            return;
        }
        let Some(eph) = self.ephemeral() else {
            return;
        };
        let s = &self.cfg.subnet;
        let guest = SocketAddrV4::new(s.guest_ip, guest_port);
        let local = SocketAddrV4::new(s.gateway_ip, eph);
        let mut sock = Self::new_socket();
        if sock
            .connect(
                self.iface.context(),
                (s.guest_ip, guest_port),
                (s.gateway_ip, eph),
            )
            .is_err()
        {
            return;
        }
        let _ = stream.set_nodelay(true);
        let mut flow = Flow::new(guest, local, Vec::new(), Phase::Relay);
        flow.inbound = true;
        let (to_host, from_host, tasks) = relay_tasks(stream, self.notify.clone());
        flow.to_host = Some(to_host);
        flow.from_host = Some(from_host);
        flow.tasks.extend(tasks);
        flow.handle = Some(self.sockets.add(sock));
        self.shared.stats.inbound();
        self.add_flow(flow);
    }

    fn ephemeral(&mut self) -> Option<u16> {
        let in_use = |p: u16, e: &Engine| {
            e.udp_peer_of.contains_key(&p)
                || e.flows.values().any(|f| f.inbound && f.dst.port() == p)
        };
        for _ in 0..EPHEMERAL.len() {
            let p = self.next_ephemeral;
            self.next_ephemeral = if p == *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                p + 1
            };
            if !in_use(p, self) {
                return Some(p);
            }
        }
        None
    }

    fn on_inbound_udp(&mut self, port: usize, peer: SocketAddr, data: &[u8]) {
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

    fn send_udp_to_guest(&mut self, from: SocketAddrV4, guest_port: u16, data: &[u8]) {
        if let Some(f) = frame::udp_to_guest(&self.cfg.subnet, from, guest_port, data) {
            self.dev.tx.push(f);
        }
    }

    fn on_udp(&mut self, guest: SocketAddrV4, dst: SocketAddrV4, data: &[u8]) {
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
        if self.udp.len() >= MAX_UDP_FLOWS && d.verdict == Verdict::Allow {
            d = Decision {
                verdict: Verdict::Deny,
                reason: "too many udp flows".into(),
                rule: None,
            };
        }
        self.record(Proto::Udp, dst, &names, &d);
        if d.verdict != Verdict::Allow {
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

    fn note_dns(&self, decision: Option<(String, Decision)>) {
        if let Some((name, d)) = decision {
            if d.verdict == Verdict::Deny {
                self.shared.stats.add_denied();
            }
            self.shared.log(LogEntry::dns_decision(&name, &d));
        }
    }

    fn on_dns_udp(&mut self, guest: SocketAddrV4, server: SocketAddrV4, data: &[u8]) {
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

    /// Move data between each flow's smoltcp socket and its host side. True if anything
    /// moved.
    fn service_flows(&mut self) -> bool {
        let mut moved = false;
        let ids: Vec<u64> = self.flows.keys().copied().collect();
        let mut done = Vec::new();
        let mut decided = Vec::new();
        let mut dns_queries = Vec::new();
        for id in ids {
            let Some(flow) = self.flows.get_mut(&id) else {
                continue;
            };
            let Some(h) = flow.handle else {
                continue;
            };
            let sock = self.sockets.get_mut::<tcp::Socket>(h);
            match &mut flow.phase {
                Phase::Dialing => {}
                Phase::Peek { buf, deadline } => {
                    while sock.can_recv() && buf.len() < l7::MAX_PEEK {
                        let room = l7::MAX_PEEK - buf.len();
                        let _ = sock.recv(|b| {
                            let n = b.len().min(room);
                            buf.extend_from_slice(&b[..n]);
                            (n, ())
                        });
                        moved = true;
                    }
                    let peek = l7::peek(buf);
                    let authority = match peek {
                        Peek::NeedMore
                            if buf.len() < l7::MAX_PEEK
                                && Instant::now() < *deadline
                                && !guest_closed(sock) =>
                        {
                            None
                        }
                        Peek::Tls { sni } => Some(sni),
                        Peek::Http { host } => Some(host),
                        _ => Some(None),
                    };
                    if let Some(a) = authority {
                        decided.push((id, a));
                    }
                }
                Phase::Dns { buf, inflight } => {
                    while sock.can_recv() && buf.len() < MAX_DNS_TCP_BUFFER {
                        let room = MAX_DNS_TCP_BUFFER - buf.len();
                        let _ = sock.recv(|b| {
                            let n = b.len().min(room);
                            buf.extend_from_slice(&b[..n]);
                            (n, ())
                        });
                        moved = true;
                    }
                    while buf.len() >= 2 {
                        let n = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                        if buf.len() < 2 + n {
                            break;
                        }
                        let msg: Vec<u8> = buf.drain(..2 + n).skip(2).collect();
                        *inflight += 1;
                        dns_queries.push((id, msg));
                    }
                    moved |= flush_pending(sock, &mut flow.pending, &mut flow.pending_off);
                    if !sock.may_recv()
                        && *inflight == 0
                        && flow.pending.is_empty()
                        && !flow.closing
                    {
                        sock.close();
                        flow.closing = true;
                    }
                }
                Phase::Relay => {
                    // Guest to host.
                    if let Some(tx) = &flow.to_host {
                        while sock.can_recv() {
                            match tx.try_reserve() {
                                Ok(permit) => {
                                    let data = sock
                                        .recv(|b| {
                                            let n = b.len().min(CHUNK);
                                            (n, b[..n].to_vec())
                                        })
                                        .unwrap_or_default();
                                    self.shared.stats.add_tcp_out(data.len());
                                    permit.send(data);
                                    moved = true;
                                }
                                Err(mpsc::error::TrySendError::Full(())) => break,
                                Err(mpsc::error::TrySendError::Closed(())) => {
                                    sock.abort();
                                    break;
                                }
                            }
                        }
                        if guest_closed(sock) && !sock.can_recv() {
                            // The guest sent FIN: the writer task shuts the host side.
                            flow.to_host = None;
                        }
                    }
                    // Host to guest.
                    loop {
                        if flow.pending_off < flow.pending.len() {
                            let before = flow.pending_off;
                            moved |= flush_pending(sock, &mut flow.pending, &mut flow.pending_off);
                            let _ = before;
                            if !flow.pending.is_empty() {
                                break;
                            }
                        }
                        let Some(rx) = flow.from_host.as_mut() else {
                            break;
                        };
                        match rx.try_recv() {
                            Ok(d) => {
                                self.shared.stats.add_tcp_in(d.len());
                                flow.pending = d;
                                flow.pending_off = 0;
                            }
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => {
                                flow.host_eof = true;
                                flow.from_host = None;
                                break;
                            }
                        }
                    }
                    if flow.host_eof && flow.pending.is_empty() && !flow.closing && sock.may_send()
                    {
                        sock.close();
                        flow.closing = true;
                        moved = true;
                    }
                }
            }
            let state = sock.state();
            let expired = matches!(
                state,
                tcp::State::SynReceived | tcp::State::SynSent | tcp::State::Listen
            ) && flow.started.elapsed() > HANDSHAKE_TIMEOUT;
            if state == tcp::State::Closed || state == tcp::State::TimeWait || expired {
                done.push(id);
            }
        }
        for (id, authority) in decided {
            moved = true;
            self.decide_deferred(id, authority);
        }
        for (id, msg) in dns_queries {
            moved = true;
            self.on_dns_tcp(id, &msg);
        }
        for id in done {
            moved = true;
            self.remove_flow(id);
        }
        moved
    }

    fn decide_deferred(&mut self, id: u64, authority: Option<String>) {
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        let Phase::Peek { buf, .. } = &mut flow.phase else {
            return;
        };
        let preface = std::mem::take(buf);
        let d = self.policy.decide_authority(
            *flow.dst.ip(),
            flow.dst.port(),
            authority.as_deref(),
            &flow.names,
        );
        let (dst, names) = (flow.dst, flow.names.clone());
        self.shared.log(
            LogEntry::connect(Proto::Tcp, dst, &names, &d).with_authority(authority.as_deref()),
        );
        if d.verdict == Verdict::Allow {
            flow.preface = preface;
            flow.phase = Phase::Dialing;
            self.dial(id);
        } else {
            self.shared.stats.add_denied();
            if let Some(h) = flow.handle {
                self.sockets.get_mut::<tcp::Socket>(h).abort();
            }
        }
    }

    fn on_dns_tcp(&mut self, id: u64, msg: &[u8]) {
        self.shared.stats.dns_query();
        match self
            .resolver
            .on_query(msg, &self.policy, &mut self.pins, Instant::now())
        {
            QueryOutcome::Drop => {
                if let Some(f) = self.flows.get_mut(&id)
                    && let Phase::Dns { inflight, .. } = &mut f.phase
                {
                    *inflight -= 1;
                }
            }
            QueryOutcome::Answer { reply, decision } => {
                self.note_dns(decision);
                if let Some(f) = self.flows.get_mut(&id) {
                    if let Phase::Dns { inflight, .. } = &mut f.phase {
                        *inflight -= 1;
                    }
                    push_dns_tcp(&mut f.pending, &reply);
                }
            }
            QueryOutcome::Forward(fwd) => {
                let tx = self.events.clone();
                let ups = self.upstreams.clone();
                let guard = self.cfg.test.loopback_only;
                self.dns_inflight += 1;
                tokio::spawn(async move {
                    let reply = dns::forward(&fwd.query, &ups, guard)
                        .await
                        .map_err(|e| e.to_string());
                    let _ = tx.send(Event::DnsTcp { id, fwd, reply }).await;
                });
            }
        }
    }

    fn remove_flow(&mut self, id: u64) {
        if let Some(flow) = self.flows.remove(&id) {
            if !flow.inbound {
                self.by_tuple.remove(&(flow.guest, flow.dst));
            }
            if let Some(h) = flow.handle {
                self.sockets.remove(h);
            }
            self.shared.stats.tcp_closed();
        }
    }

    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        self.udp.retain(|_, f| f.last.elapsed() < UDP_IDLE);
        let idle: Vec<u16> = self
            .udp_peer_of
            .iter()
            .filter(|(_, (_, _, last))| last.elapsed() >= UDP_IDLE)
            .map(|(eph, _)| *eph)
            .collect();
        for eph in idle {
            if let Some((port, peer, _)) = self.udp_peer_of.remove(&eph) {
                self.udp_peers.remove(&(port, peer));
            }
        }
        let stuck: Vec<u64> = self
            .flows
            .iter()
            .filter(|(_, f)| {
                f.handle.is_none() && f.started.elapsed() > DIAL_TIMEOUT + Duration::from_secs(5)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stuck {
            self.remove_flow(id);
        }
        self.shared
            .stats
            .set_active(self.flows.len(), self.udp.len());
    }

    fn spawn_listeners(&mut self, l: Listeners) {
        for (listener, guest_port) in l.tcp {
            let tx = self.events.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    if tx
                        .send(Event::Inbound { stream, guest_port })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        for (i, (sock, send, _)) in l.udp.into_iter().enumerate() {
            self.inbound_udp.push(send);
            let tx = self.events.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                    let ev = Event::InboundUdp {
                        port: i,
                        peer,
                        data: buf[..n].to_vec(),
                    };
                    if tx.send(ev).await.is_err() {
                        break;
                    }
                }
            });
        }
    }
}

/// What [`Engine::new`] hands to [`Engine::run`].
#[derive(Debug)]
pub struct EngineParts {
    events: mpsc::Receiver<Event>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Event")
    }
}

/// Whether the guest has closed its sending side (sent FIN) or the connection is gone.
/// Not the same as `!may_recv()`, which is also true before the handshake completes.
fn guest_closed(sock: &tcp::Socket) -> bool {
    matches!(
        sock.state(),
        tcp::State::CloseWait
            | tcp::State::LastAck
            | tcp::State::Closing
            | tcp::State::TimeWait
            | tcp::State::Closed
    )
}

fn push_dns_tcp(pending: &mut Vec<u8>, msg: &[u8]) {
    if let Ok(n) = u16::try_from(msg.len()) {
        pending.extend_from_slice(&n.to_be_bytes());
        pending.extend_from_slice(msg);
    }
}

/// Write what fits of `pending[off..]` into the socket; clears it when all is written.
fn flush_pending(sock: &mut tcp::Socket, pending: &mut Vec<u8>, off: &mut usize) -> bool {
    if *off >= pending.len() {
        pending.clear();
        *off = 0;
        return false;
    }
    let n = sock.send_slice(&pending[*off..]).unwrap_or(0);
    *off += n;
    if *off >= pending.len() {
        pending.clear();
        *off = 0;
    }
    n > 0
}

/// A host socket's two channels (to it, from it) and the tasks that serve them.
type Relay = (
    mpsc::Sender<Vec<u8>>,
    mpsc::Receiver<Vec<u8>>,
    [JoinHandle<()>; 2],
);

/// Start the two tasks that move bytes between a host socket and the loop.
fn relay_tasks(stream: TcpStream, notify: Arc<Notify>) -> Relay {
    let (mut rd, mut wr) = stream.into_split();
    let (to_host, mut for_host) = mpsc::channel::<Vec<u8>>(CHANNEL_DEPTH);
    let (from_host_tx, from_host) = mpsc::channel::<Vec<u8>>(CHANNEL_DEPTH);
    let n1 = notify.clone();
    let writer = tokio::spawn(async move {
        while let Some(buf) = for_host.recv().await {
            if wr.write_all(&buf).await.is_err() {
                break;
            }
            // Room in the channel again: the loop may read more from the guest.
            n1.notify_one();
        }
        let _ = wr.shutdown().await;
        n1.notify_one();
    });
    let reader = tokio::spawn(async move {
        loop {
            let mut buf = vec![0u8; CHUNK];
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if from_host_tx.send(buf).await.is_err() {
                        break;
                    }
                    notify.notify_one();
                }
            }
        }
        drop(from_host_tx);
        notify.notify_one();
    });
    (to_host, from_host, [writer, reader])
}

fn rand_seed() -> u64 {
    let mut b = [0u8; 8];
    // getrandom never fails for 8 bytes on Linux >= 3.17; a zero seed is only weaker.
    // SAFETY: the buffer is valid for its length.
    let _ = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    u64::from_ne_bytes(b)
}

/// Guest-triggered events are logged only when asked (RUST_LOG-like switch), so a hostile
/// guest cannot flood the helper's log.
fn tracing_debug(msg: &str) {
    if std::env::var_os("BOXLITE_NET_DEBUG").is_some() {
        eprintln!("boxlite-net: {msg}");
    }
}

/// A subnet accessor for the fake guest.
pub fn subnet_of(cfg: &NetConfig) -> &Subnet {
    &cfg.subnet
}
