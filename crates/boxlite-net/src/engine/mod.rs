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

mod datagrams;
mod flows;

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, UnixStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::config::{GATEWAY_MAC, NetConfig, Proto};
use crate::control::{LogEntry, Shared};
use crate::dns::{self, Forward, Resolver};
use crate::frame::{self, DropReason, Kind};
use crate::policy::{Decision, PinSet, Policy, Verdict};
use crate::secrets::SecretSet;
use crate::secrets::proxy::Interceptor;

/// Bytes each smoltcp socket buffers in each direction.
const TCP_BUFFER: usize = 256 * 1024;
/// One read from or write to a host socket.
const CHUNK: usize = 64 * 1024;
/// Chunks queued between the loop and one host socket, each way.
const CHANNEL_DEPTH: usize = 2;
/// Concurrent TCP flows per box, and how many of them may be waiting for a dial.
pub const MAX_TCP_FLOWS: usize = 1024;
pub const MAX_PENDING_DIALS: usize = 256;
/// A dial that takes longer is a refused connection.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// A handshake the guest does not finish in this time is dropped (half-open flood).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a deferred connection may take to show its SNI or Host.
const PEEK_TIMEOUT: Duration = Duration::from_secs(2);
pub const MAX_UDP_FLOWS: usize = 512;
const UDP_IDLE: Duration = Duration::from_secs(60);
/// Refused UDP flows remembered (for `UDP_IDLE`) before the memory is cleared.
const UDP_REFUSED_KEEP: usize = 4096;
const MAX_DNS_INFLIGHT: usize = 128;
/// DNS over TCP: the most a guest may have buffered unparsed, queries one connection may
/// have unanswered, and answers waiting for the guest to read them before the helper
/// stops reading its queries.
const MAX_DNS_TCP_BUFFER: usize = 2 + crate::dns::MAX_DNS_TCP;
const MAX_DNS_TCP_PER_FLOW: usize = 16;
const MAX_DNS_TCP_BACKLOG: usize = 64 * 1024;
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the network policy is invalid")]
    Policy(#[source] crate::policy::RuleError),
    #[error("the box's DNS settings are invalid")]
    Dns(#[source] crate::dns::DnsError),
    #[error("setting up the box's secrets")]
    Secrets(#[source] crate::secrets::proxy::InterceptError),
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
    /// Accepted to read the first flight; decided on SNI or Host. `decided` is set when
    /// the policy already allowed the connection and the peek only looks for a secret
    /// host's SNI to intercept.
    Peek {
        buf: Vec<u8>,
        deadline: Instant,
        decided: Option<Decision>,
    },
    /// Data flows both ways.
    Relay,
    /// DNS over TCP, answered here.
    Dns { buf: Vec<u8>, inflight: usize },
    /// Refused after its first flight: waiting for the reset to go out.
    Refused,
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
    /// Its socket was seen closed by an earlier pass.
    closed: bool,
    inbound: bool,
    /// The secret host this connection is intercepted for (its SNI), once decided.
    intercept: Option<String>,
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
            closed: false,
            inbound: false,
            intercept: None,
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
    /// Sockets of finished flows, for new ones ([`Engine::new_socket`]).
    spare_sockets: Vec<smoltcp::socket::tcp::Socket<'static>>,
    udp: HashMap<UdpKey, UdpFlow>,
    /// UDP flows refused lately: their next datagrams are dropped without a new decision
    /// or log entry, so a guest cannot flush the decision log or make the loop write per
    /// datagram.
    udp_refused: HashMap<UdpKey, Instant>,
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
    /// The interception path, when the box has secrets.
    interceptor: Option<Arc<Interceptor>>,
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
        // A box with secrets never runs without its CA and interception: the helper
        // refuses to start instead.
        let interceptor = if cfg.secrets.is_empty() {
            None
        } else {
            let set = SecretSet::new(&cfg.secrets).map_err(|e| {
                EngineError::Secrets(crate::secrets::proxy::InterceptError::Secrets(e))
            })?;
            let i = Interceptor::new(set, &cfg.upstream_roots, std::time::SystemTime::now())
                .map_err(EngineError::Secrets)?;
            shared.set_ca_pem(i.ca_pem());
            Some(Arc::new(i))
        };
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
        icfg.random_seed = rand::random();
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
                spare_sockets: Vec::new(),
                udp: HashMap::new(),
                udp_refused: HashMap::new(),
                dns_inflight: 0,
                inbound_udp: Vec::new(),
                udp_peers: HashMap::new(),
                udp_peer_of: HashMap::new(),
                next_ephemeral: *EPHEMERAL.start(),
                notify: Arc::new(Notify::new()),
                events: tx,
                last_sweep: now,
                epoch: now,
                interceptor,
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
                    self.shared.stats.frame_out();
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
        for f in self.flows.values() {
            if f.closed {
                // Seen closed: removed by the next pass.
                return d.min(Duration::from_millis(5));
            }
            if matches!(f.phase, Phase::Peek { .. }) {
                d = d.min(Duration::from_millis(100));
            }
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
                    *inflight = inflight.saturating_sub(1);
                    if let Some(b) = bytes {
                        flows::push_dns_tcp(&mut flow.pending, &b);
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

    fn on_frame(&mut self, f: Vec<u8>) {
        self.shared.stats.frame_in();
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

    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        self.udp.retain(|_, f| f.last.elapsed() < UDP_IDLE);
        self.udp_refused.retain(|_, at| at.elapsed() < UDP_IDLE);
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
                loop {
                    let Some(stream) = accept_or_wait(listener.accept().await).await else {
                        continue;
                    };
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

/// One accepted connection, or `None` after a failed accept (out of descriptors, an
/// aborted connection): a listener keeps serving after a short pause rather than going
/// away for the rest of the box's life.
pub(crate) async fn accept_or_wait<S, A>(r: std::io::Result<(S, A)>) -> Option<S> {
    match r {
        Ok((s, _)) => Some(s),
        Err(_) => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}
