//! TCP: a guest SYN decided, dialled and handed to smoltcp; data moved between each
//! flow's smoltcp socket and its host socket; deferred (first-flight) decisions; DNS over
//! TCP; published TCP ports.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use smoltcp::socket::tcp;
use smoltcp::wire::IpListenEndpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::{
    CHANNEL_DEPTH, CHUNK, DIAL_TIMEOUT, EPHEMERAL, Engine, Event, Flow, HANDSHAKE_TIMEOUT,
    MAX_DNS_INFLIGHT, MAX_DNS_TCP_BACKLOG, MAX_DNS_TCP_BUFFER, MAX_DNS_TCP_PER_FLOW,
    MAX_PENDING_DIALS, MAX_TCP_FLOWS, PEEK_TIMEOUT, Phase, TCP_BUFFER,
};
use crate::config::Proto;
use crate::control::LogEntry;
use crate::dns::{self, QueryOutcome};
use crate::l7::{self, Peek};
use crate::policy::{Decision, Verdict};

impl Engine {
    pub(super) fn on_syn(&mut self, guest: SocketAddrV4, dst: SocketAddrV4, syn: Vec<u8>) {
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
        if self.flows.len() >= MAX_TCP_FLOWS
            || self
                .flows
                .values()
                .filter(|f| match f.phase {
                    Phase::Dialing | Phase::Peek { .. } => true,
                    // A DNS-over-TCP flow whose handshake is not finished.
                    Phase::Dns { .. } => f.handle.is_none_or(|h| {
                        self.sockets.get::<tcp::Socket>(h).state() != tcp::State::Established
                    }),
                    Phase::Relay | Phase::Refused => false,
                })
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
        let d = self
            .policy
            .decide_connect(*dst.ip(), dst.port(), Proto::Tcp, &names);
        self.record(Proto::Tcp, dst, &names, &d);
        // An allowed connection to an address a secret host resolved to: read its SNI
        // first, to intercept it if it names that host.
        let secret_host = d.verdict == Verdict::Allow
            && self
                .interceptor
                .as_ref()
                .is_some_and(|i| names.iter().any(|n| i.covers(n)));
        match d.verdict {
            // No socket listens: smoltcp answers with a reset.
            Verdict::Deny => self.dev.rx.push_back(syn),
            Verdict::Allow if !secret_host => {
                let mut flow = Flow::new(guest, dst, names, Phase::Dialing);
                flow.syn = Some(syn);
                let id = self.add_flow(flow);
                self.dial(id);
            }
            // Decided on the first flight: by the policy's second half (DeferL7), or,
            // already allowed, only to see whether it is TLS to the secret host.
            Verdict::Allow | Verdict::DeferL7 => {
                let decided = (d.verdict == Verdict::Allow).then_some(d);
                let id = self.add_flow(Flow::new(
                    guest,
                    dst,
                    names,
                    Phase::Peek {
                        buf: Vec::new(),
                        deadline: Instant::now() + PEEK_TIMEOUT,
                        decided,
                    },
                ));
                self.open_guest_side(id, syn);
            }
        }
    }

    pub(super) fn add_flow(&mut self, flow: Flow) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if !flow.inbound {
            self.by_tuple.insert((flow.guest, flow.dst), id);
        }
        self.flows.insert(id, flow);
        self.shared.stats.tcp_opened();
        id
    }

    /// A closed socket for a new flow: one a finished flow left, or a new one. Reusing
    /// them saves zeroing two buffers per connection, which was most of the cost of a
    /// short connection. `listen` and `connect` reset a reused socket's state and buffer
    /// positions; smoltcp never hands out bytes that were not written for the
    /// connection at hand.
    pub(super) fn new_socket(&mut self) -> tcp::Socket<'static> {
        let mut s = self.spare_sockets.pop().unwrap_or_else(|| {
            tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
                tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
            )
        });
        s.set_nagle_enabled(false);
        s.set_ack_delay(None);
        s
    }

    /// Listen on the flow's destination and hand the guest's SYN in.
    pub(super) fn open_guest_side(&mut self, id: u64, syn: Vec<u8>) {
        let Some(dst) = self.flows.get(&id).map(|f| f.dst) else {
            return;
        };
        let mut s = self.new_socket();
        let ep = IpListenEndpoint {
            addr: Some((*dst.ip()).into()),
            port: dst.port(),
        };
        if s.listen(ep).is_err() {
            self.dev.rx.push_back(syn);
            self.remove_flow(id);
            return;
        }
        let handle = self.sockets.add(s);
        if let Some(flow) = self.flows.get_mut(&id) {
            flow.handle = Some(handle);
        }
        self.dev.rx.push_back(syn);
    }

    /// Where a dial to `dst` really goes: the gateway is the host's loopback; tests map
    /// virtual addresses to local fixtures; the test guard refuses anything else that
    /// would leave 127.0.0.0/8.
    pub(super) fn dial_target(&self, dst: SocketAddrV4) -> Result<SocketAddr, String> {
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
    pub(super) fn guarded_target(
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

    pub(super) fn dial(&mut self, id: u64) {
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

    pub(super) fn on_connected(&mut self, id: u64, result: Result<TcpStream, String>) {
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
                let (to_host, from_host, tasks) = match (&flow.intercept, &self.interceptor) {
                    // The flow's "host side" is the interception proxy, in memory.
                    (Some(authority), Some(i)) => {
                        let (ours, proxy) = tokio::io::duplex(INTERCEPT_BUFFER);
                        let task = tokio::spawn(i.clone().serve(
                            proxy,
                            stream,
                            authority.clone(),
                            flow.dst,
                            self.shared.clone(),
                        ));
                        flow.tasks.push(task);
                        let (rd, wr) = tokio::io::split(ours);
                        relay_halves(rd, wr, self.notify.clone())
                    }
                    _ => relay_tasks(stream, self.notify.clone()),
                };
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

    pub(super) fn on_inbound(&mut self, stream: TcpStream, guest_port: u16) {
        if self.flows.len() >= MAX_TCP_FLOWS {
            return;
        }
        let Some(eph) = self.ephemeral() else {
            return;
        };
        let s = self.cfg.subnet.clone();
        let guest = SocketAddrV4::new(s.guest_ip, guest_port);
        let local = SocketAddrV4::new(s.gateway_ip, eph);
        let mut sock = self.new_socket();
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

    pub(super) fn ephemeral(&mut self) -> Option<u16> {
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

    /// Move data between each flow's smoltcp socket and its host side. True if anything
    /// moved.
    pub(super) fn service_flows(&mut self) -> bool {
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
                Phase::Dialing | Phase::Refused => {}
                Phase::Peek { buf, deadline, .. } => {
                    let had = buf.len();
                    while sock.can_recv() && buf.len() < l7::MAX_PEEK {
                        let room = l7::MAX_PEEK - buf.len();
                        let _ = sock.recv(|b| {
                            let n = b.len().min(room);
                            buf.extend_from_slice(&b[..n]);
                            (n, ())
                        });
                        moved = true;
                    }
                    // Parse again only when bytes arrived (or time is up).
                    let waiting =
                        buf.len() == had && Instant::now() < *deadline && !guest_closed(sock);
                    let peek = if waiting && had > 0 {
                        Peek::NeedMore
                    } else {
                        l7::peek(buf)
                    };
                    let authority = match peek {
                        Peek::NeedMore
                            if buf.len() < l7::MAX_PEEK
                                && Instant::now() < *deadline
                                && !guest_closed(sock) =>
                        {
                            None
                        }
                        Peek::Tls { sni } => Some((sni, true)),
                        Peek::Http { host } => Some((host, false)),
                        _ => Some((None, false)),
                    };
                    if let Some((a, tls)) = authority {
                        decided.push((id, a, tls));
                    }
                }
                Phase::Dns { buf, inflight } => {
                    // A guest that sends queries and never reads the answers stops
                    // being read: answers wait in `pending`, which stays bounded.
                    let backlog = flow.pending.len() - flow.pending_off;
                    while sock.can_recv()
                        && buf.len() < MAX_DNS_TCP_BUFFER
                        && backlog < MAX_DNS_TCP_BACKLOG
                        && *inflight < MAX_DNS_TCP_PER_FLOW
                    {
                        let room = MAX_DNS_TCP_BUFFER - buf.len();
                        let _ = sock.recv(|b| {
                            let n = b.len().min(room);
                            buf.extend_from_slice(&b[..n]);
                            (n, ())
                        });
                        moved = true;
                    }
                    while buf.len() >= 2 && *inflight < MAX_DNS_TCP_PER_FLOW {
                        let n = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                        if buf.len() < 2 + n {
                            break;
                        }
                        let msg: Vec<u8> = buf.drain(..2 + n).skip(2).collect();
                        *inflight += 1;
                        dns_queries.push((id, msg));
                    }
                    moved |= flush_pending(sock, &mut flow.pending, &mut flow.pending_off);
                    if guest_closed(sock)
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
                            moved |= flush_pending(sock, &mut flow.pending, &mut flow.pending_off);
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
            let expired = matches!(state, tcp::State::SynReceived | tcp::State::SynSent)
                && flow.started.elapsed() > HANDSHAKE_TIMEOUT;
            // Its SYN was handed in before this poll: a socket still listening refused
            // it (or went back to listening on a reset) and must not accept another
            // guest connection in its place.
            let relisten = state == tcp::State::Listen;
            let hijacked = !flow.inbound
                && sock
                    .remote_endpoint()
                    .is_some_and(|r| r != smoltcp::wire::IpEndpoint::from(flow.guest));
            // A socket seen closed goes one poll later, so the reset of an aborted one
            // (sent by that poll) reaches the guest.
            let gone =
                (state == tcp::State::Closed && flow.closed) || state == tcp::State::TimeWait;
            flow.closed |= state == tcp::State::Closed;
            if expired || relisten || hijacked {
                sock.abort();
            }
            if gone || relisten {
                done.push(id);
            }
        }
        for (id, authority, tls) in decided {
            moved = true;
            self.decide_deferred(id, authority, tls);
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

    /// Decide a connection on its first flight: the policy's second half, unless the
    /// policy had already allowed it; then intercept it if it is TLS to a secret host that
    /// resolved to this address in this box.
    pub(super) fn decide_deferred(&mut self, id: u64, authority: Option<String>, tls: bool) {
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        let Phase::Peek { buf, decided, .. } = &mut flow.phase else {
            return;
        };
        let preface = std::mem::take(buf);
        let already = decided.take();
        let d = match already.clone() {
            Some(d) => d,
            None => self.policy.decide_authority(
                *flow.dst.ip(),
                flow.dst.port(),
                authority.as_deref(),
                &flow.names,
            ),
        };
        let (dst, names) = (flow.dst, flow.names.clone());
        if already.is_none() {
            self.shared.log(
                LogEntry::connect(Proto::Tcp, dst, &names, &d).with_authority(authority.as_deref()),
            );
        }
        if d.verdict == Verdict::Allow {
            flow.intercept = match (&self.interceptor, &authority) {
                (Some(i), Some(a)) if tls && names.contains(a) && i.covers(a) => Some(a.clone()),
                _ => None,
            };
            flow.preface = preface;
            flow.phase = Phase::Dialing;
            self.dial(id);
        } else {
            self.shared.stats.add_denied();
            // Decided once: the reset goes out with the next poll, and the flow is
            // removed when its socket is closed.
            flow.phase = Phase::Refused;
            if let Some(h) = flow.handle {
                self.sockets.get_mut::<tcp::Socket>(h).abort();
            }
        }
    }

    pub(super) fn on_dns_tcp(&mut self, id: u64, msg: &[u8]) {
        self.shared.stats.dns_query();
        match self
            .resolver
            .on_query(msg, &self.policy, &mut self.pins, Instant::now())
        {
            QueryOutcome::Drop => {
                if let Some(f) = self.flows.get_mut(&id)
                    && let Phase::Dns { inflight, .. } = &mut f.phase
                {
                    *inflight = inflight.saturating_sub(1);
                }
            }
            QueryOutcome::Answer { reply, decision } => {
                self.note_dns(decision);
                if let Some(f) = self.flows.get_mut(&id) {
                    if let Phase::Dns { inflight, .. } = &mut f.phase {
                        *inflight = inflight.saturating_sub(1);
                    }
                    push_dns_tcp(&mut f.pending, &reply);
                }
            }
            QueryOutcome::Forward(fwd) => {
                if self.dns_inflight >= MAX_DNS_INFLIGHT {
                    // Dropped, as over UDP: the client's own timeout retries it.
                    if let Some(f) = self.flows.get_mut(&id)
                        && let Phase::Dns { inflight, .. } = &mut f.phase
                    {
                        *inflight = inflight.saturating_sub(1);
                    }
                    return;
                }
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

    pub(super) fn remove_flow(&mut self, id: u64) {
        if let Some(flow) = self.flows.remove(&id) {
            if !flow.inbound {
                self.by_tuple.remove(&(flow.guest, flow.dst));
            }
            if let Some(h) = flow.handle
                && let smoltcp::socket::Socket::Tcp(mut sock) = self.sockets.remove(h)
                && self.spare_sockets.len() < SPARE_SOCKETS
            {
                // Closed without a word to the guest: the flow is over either way.
                sock.abort();
                self.spare_sockets.push(sock);
            }
            self.shared.stats.tcp_closed();
        }
    }
}

/// Whether the guest has closed its sending side (sent FIN) or the connection is gone.
/// Not the same as `!may_recv()`, which is also true before the handshake completes.
pub(super) fn guest_closed(sock: &tcp::Socket) -> bool {
    matches!(
        sock.state(),
        tcp::State::CloseWait
            | tcp::State::LastAck
            | tcp::State::Closing
            | tcp::State::TimeWait
            | tcp::State::Closed
    )
}

pub(super) fn push_dns_tcp(pending: &mut Vec<u8>, msg: &[u8]) {
    if let Ok(n) = u16::try_from(msg.len()) {
        pending.extend_from_slice(&n.to_be_bytes());
        pending.extend_from_slice(msg);
    }
}

/// Write what fits of `pending[off..]` into the socket; clears it when all is written.
pub(super) fn flush_pending(
    sock: &mut tcp::Socket,
    pending: &mut Vec<u8>,
    off: &mut usize,
) -> bool {
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
    [JoinHandle<()>; 1],
);

/// Closed sockets kept for new flows.
const SPARE_SOCKETS: usize = 64;

/// How long a write to a host socket may stall before the writer gives up.
const WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// Start the two tasks that move bytes between a host socket and the loop. Only the
/// reader is returned, to be aborted with the flow: the writer ends by itself once the
/// flow drops its sender, after writing what the guest sent last (a guest's final data
/// and FIN can arrive in the same poll that ends the flow), or after a stall.
pub(super) fn relay_tasks(stream: TcpStream, notify: Arc<Notify>) -> Relay {
    let (rd, wr) = stream.into_split();
    relay_halves(rd, wr, notify)
}

/// Bytes buffered each way between a flow and its interception proxy.
const INTERCEPT_BUFFER: usize = 256 * 1024;

/// [`relay_tasks`] over any byte stream's two halves.
pub(super) fn relay_halves<R, W>(mut rd: R, mut wr: W, notify: Arc<Notify>) -> Relay
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (to_host, mut for_host) = mpsc::channel::<Vec<u8>>(CHANNEL_DEPTH);
    let (from_host_tx, from_host) = mpsc::channel::<Vec<u8>>(CHANNEL_DEPTH);
    let n1 = notify.clone();
    let writer = tokio::spawn(async move {
        while let Some(buf) = for_host.recv().await {
            if !matches!(
                tokio::time::timeout(WRITE_STALL, wr.write_all(&buf)).await,
                Ok(Ok(()))
            ) {
                break;
            }
            // Room in the channel again: the loop may read more from the guest.
            n1.notify_one();
        }
        let _ = tokio::time::timeout(WRITE_STALL, wr.shutdown()).await;
        n1.notify_one();
    });
    drop(writer);
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
    (to_host, from_host, [reader])
}
