//! The box's DNS: the guest's only resolver, and the source of every pinned name.
//!
//! Domain rules can only hold if the helper sees every name the guest resolves, so the guest
//! is given this resolver and DNS to any address is answered here. Each question goes
//! through the policy before anything leaves the host: a denied name gets NXDOMAIN locally
//! and is never forwarded, which closes the channel a guest could otherwise use to smuggle
//! data out in the labels of names it may not reach. Allowed questions are forwarded to the
//! host's resolvers, rebuilt from the parsed question alone so nothing else the guest put in
//! the message travels with it.
//!
//! Upstream answers are filtered before the guest sees them. A records that point into
//! private, loopback, link-local or metadata ranges are stripped unless an address rule
//! allows them (DNS rebinding: an allowed name must not become a path to the host or the
//! cloud metadata service), and an answer left empty becomes NXDOMAIN. The A records that
//! survive are pinned to the queried name ([`PinSet`]); that pin is what later lets a
//! connection to the address match a domain rule. AAAA is answered with no data until the
//! helper handles IPv6, and SVCB/HTTPS with no data because their ECH keys would hide the
//! SNI the policy checks and their address hints would bypass the pins.
//!
//! Messages are parsed and built with hickory-proto only.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::ProtoError;
use hickory_proto::op::{
    Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, DecodeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::config::{HOST_ALIAS, HostEntry, Subnet};
use crate::policy::{Decision, NameError, PinSet, Policy, Verdict, normalize_name};

/// The largest DNS message: what a TCP length prefix can carry.
pub const MAX_DNS_TCP: usize = 65535;

/// How long one upstream gets, per transport, before the next one is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// TTL of locally answered static names.
const STATIC_TTL: u32 = 60;
/// The UDP payload size the helper advertises to the guest in EDNS.
const ADVERTISED_PAYLOAD: u16 = 1232;
/// Bounds on the UDP payload size a guest may ask for.
const MIN_UDP: u16 = 512;
const MAX_UDP: u16 = 4096;
/// TTLs above 2^31 - 1 mean zero (RFC 2181 section 8).
const MAX_TTL: u32 = 0x7fff_ffff;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("static host {name:?} is not a valid name")]
    BadHost {
        name: String,
        #[source]
        source: NameError,
    },
    #[error("the dns message does not parse")]
    Parse(#[source] DecodeError),
    #[error("the dns message could not be encoded")]
    Encode(#[source] ProtoError),
    #[error("the dns reply is not a response to a standard query")]
    NotResponse,
    #[error("dns reply id {got} does not match the query's id {want}")]
    IdMismatch { got: u16, want: u16 },
    #[error("dns reply is not for the forwarded question {name:?} type {qtype}")]
    QuestionMismatch { name: String, qtype: u16 },
    #[error("no dns upstream to forward to; set dns_upstreams or a nameserver in /etc/resolv.conf")]
    NoUpstream,
    #[error("dns upstream {0} is outside 127.0.0.0/8, and the test guard allows only loopback")]
    GuardViolation(SocketAddr),
    #[error("dns upstream {addr} failed over {transport}")]
    Io {
        addr: SocketAddr,
        transport: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("dns upstream {addr} did not answer over {transport} within 2 s")]
    Timeout {
        addr: SocketAddr,
        transport: &'static str,
    },
}

/// What to do with a query from the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryOutcome {
    /// Answered locally. `decision` is set when the policy refused the name, for the
    /// decision log.
    Answer {
        reply: Vec<u8>,
        decision: Option<(String, Decision)>,
    },
    /// Allowed, and not answerable here: send `query` upstream ([`forward`]) and hand the
    /// reply to [`Resolver::on_reply`].
    Forward(Forward),
    /// Not a query (unparseable header, or a response): no reply.
    Drop,
}

/// A query on its way upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The guest's transaction id.
    pub id: u16,
    /// The normalized question name.
    pub name: String,
    pub qtype: u16,
    /// The bytes to send upstream: the guest's question alone, rebuilt.
    pub query: Vec<u8>,
    /// The largest UDP reply the guest said it accepts (512 without EDNS).
    udp_limit: u16,
}

impl Forward {
    /// The largest UDP reply the guest said it accepts (512 without EDNS). A reply that the
    /// upstream sent over TCP can exceed it; see [`truncate_for_udp`].
    pub fn udp_limit(&self) -> usize {
        usize::from(self.udp_limit)
    }
}

/// The box's resolver: its static names and its filters. Stateless apart from the pins it
/// is handed.
#[derive(Debug, Clone)]
pub struct Resolver {
    hosts: HashMap<String, Vec<Ipv4Addr>>,
}

impl Resolver {
    /// Static names (`--add-host`), normalized, and [`HOST_ALIAS`] for the gateway unless
    /// a static entry names it.
    pub fn new(hosts: &[HostEntry], subnet: &Subnet) -> Result<Resolver, DnsError> {
        let mut map: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
        for entry in hosts {
            let name = normalize_name(&entry.name).map_err(|source| DnsError::BadHost {
                name: entry.name.clone(),
                source,
            })?;
            let ips = map.entry(name).or_default();
            if !ips.contains(&entry.ip) {
                ips.push(entry.ip);
            }
        }
        map.entry(HOST_ALIAS.to_owned())
            .or_insert_with(|| vec![subnet.gateway_ip]);
        Ok(Resolver { hosts: map })
    }

    /// A query from the guest. Answers locally or says to forward it.
    pub fn on_query(
        &self,
        msg: &[u8],
        policy: &Policy,
        pins: &mut PinSet,
        now: Instant,
    ) -> QueryOutcome {
        let Ok(header) = Header::read(&mut BinDecoder::new(msg)) else {
            return QueryOutcome::Drop;
        };
        if header.metadata.message_type != MessageType::Query {
            return QueryOutcome::Drop;
        }
        let mut meta = Metadata::response_from_request(&header.metadata);
        meta.recursion_available = true;
        let bare = |code| local(meta, code, None, Vec::new(), false, None);
        if header.metadata.op_code != OpCode::Query {
            return bare(ResponseCode::NotImp);
        }
        // Checked before the full parse, which would size its buffers by this count.
        if header.counts.queries != 1 {
            return bare(ResponseCode::FormErr);
        }
        let Ok(query) = Message::from_vec(msg) else {
            return bare(ResponseCode::FormErr);
        };
        let Some(question) = query.queries.first().cloned() else {
            return bare(ResponseCode::FormErr);
        };
        let edns = query.edns.is_some();
        let reply = |code, answers| local(meta, code, Some(question.clone()), answers, edns, None);

        if question.query_class() != DNSClass::IN {
            return reply(ResponseCode::Refused, Vec::new());
        }
        let Some(name) = wire_name(question.name()) else {
            return reply(ResponseCode::NXDomain, Vec::new());
        };
        let decision = policy.decide_query(&name);
        if decision.verdict != Verdict::Allow {
            let decision = Some((name, decision));
            return local(
                meta,
                ResponseCode::NXDomain,
                Some(question),
                Vec::new(),
                edns,
                decision,
            );
        }
        let qtype = question.query_type();
        if let Some(ips) = self.hosts.get(&name) {
            if qtype != RecordType::A {
                return reply(ResponseCode::NoError, Vec::new());
            }
            let answers = ips
                .iter()
                .map(|ip| {
                    pins.insert(*ip, &name, Duration::from_secs(STATIC_TTL.into()), now);
                    Record::from_rdata(question.name().clone(), STATIC_TTL, RData::A(A(*ip)))
                })
                .collect();
            return reply(ResponseCode::NoError, answers);
        }
        match qtype {
            RecordType::AAAA | RecordType::SVCB | RecordType::HTTPS => {
                reply(ResponseCode::NoError, Vec::new())
            }
            RecordType::ANY => reply(ResponseCode::NotImp, Vec::new()),
            _ => forward_query(&query, question, name, u16::from(qtype))
                .map_or(QueryOutcome::Drop, QueryOutcome::Forward),
        }
    }

    /// The upstream's reply to a forwarded query: filtered, pinned, rebuilt for the guest.
    pub fn on_reply(
        &self,
        q: &Forward,
        reply: &[u8],
        policy: &Policy,
        pins: &mut PinSet,
        now: Instant,
    ) -> Result<Vec<u8>, DnsError> {
        let upstream = Message::from_vec(reply).map_err(DnsError::Parse)?;
        let sent = Message::from_vec(&q.query).map_err(DnsError::Parse)?;
        let meta = upstream.metadata;
        if meta.message_type != MessageType::Response || meta.op_code != OpCode::Query {
            return Err(DnsError::NotResponse);
        }
        if meta.id != q.id {
            return Err(DnsError::IdMismatch {
                got: meta.id,
                want: q.id,
            });
        }
        let mismatch = || DnsError::QuestionMismatch {
            name: q.name.clone(),
            qtype: q.qtype,
        };
        let question = sent.queries.first().cloned().ok_or_else(mismatch)?;
        let [answered] = upstream.queries.as_slice() else {
            return Err(mismatch());
        };
        if wire_name(answered.name()).as_deref() != Some(q.name.as_str())
            || u16::from(answered.query_type()) != q.qtype
            || answered.query_class() != question.query_class()
        {
            return Err(mismatch());
        }

        let chain = cname_chain(&q.name, &upstream.answers);
        let mut answers = Vec::new();
        let mut pinned = Vec::new();
        let mut saw_a = false;
        let mut denied_target = false;
        for record in &upstream.answers {
            let in_chain = wire_name(&record.name).is_some_and(|n| chain.contains(&n));
            match &record.data {
                RData::A(A(ip)) => {
                    saw_a = true;
                    if in_chain && policy.answer_allowed(*ip) {
                        pinned.push((*ip, record.ttl));
                        answers.push(record.clone());
                    }
                }
                RData::AAAA(_) => {}
                RData::CNAME(target) => {
                    if !in_chain {
                        continue;
                    }
                    if wire_name(&target.0).is_some_and(|t| policy.name_denied(&t).is_some()) {
                        denied_target = true;
                    }
                    answers.push(record.clone());
                }
                _ if in_chain => answers.push(record.clone()),
                _ => {}
            }
        }

        let mut out = Metadata::response_from_request(&sent.metadata);
        out.id = q.id;
        out.recursion_available = true;
        let edns = sent.edns.is_some();
        if denied_target || (saw_a && pinned.is_empty()) {
            return encode(
                out,
                ResponseCode::NXDomain,
                Some(question),
                Vec::new(),
                edns,
            );
        }
        for (ip, ttl) in pinned {
            let ttl = if ttl > MAX_TTL { 0 } else { ttl };
            pins.insert(ip, &q.name, Duration::from_secs(ttl.into()), now);
        }
        out.truncation = meta.truncation;
        let mut msg = build(out, meta.response_code, Some(question), answers, edns);
        if !holds_address(&upstream.authorities) {
            msg.authorities = upstream.authorities;
        }
        if !holds_address(&upstream.additionals) {
            msg.additionals = upstream.additionals;
        }
        msg.to_vec().map_err(DnsError::Encode)
    }
}

/// Cuts a reply that exceeds the guest's UDP limit down to its header and question with
/// TC set, so the guest retries over TCP.
pub fn truncate_for_udp(reply: &[u8], limit: usize) -> Result<Vec<u8>, DnsError> {
    if reply.len() <= limit {
        return Ok(reply.to_vec());
    }
    let mut msg = Message::from_vec(reply).map_err(DnsError::Parse)?;
    msg.metadata.truncation = true;
    msg.answers.clear();
    msg.authorities.clear();
    msg.additionals.clear();
    msg.to_vec().map_err(DnsError::Encode)
}

/// The names an answer's CNAMEs lead to from `qname`, `qname` included.
fn cname_chain(qname: &str, answers: &[Record]) -> HashSet<String> {
    let mut links: HashMap<String, Vec<String>> = HashMap::new();
    for record in answers {
        if let RData::CNAME(target) = &record.data
            && let (Some(owner), Some(target)) = (wire_name(&record.name), wire_name(&target.0))
        {
            links.entry(owner).or_default().push(target);
        }
    }
    let mut chain = HashSet::from([qname.to_owned()]);
    let mut todo = vec![qname.to_owned()];
    while let Some(name) = todo.pop() {
        for target in links.remove(&name).unwrap_or_default() {
            if chain.insert(target.clone()) {
                todo.push(target);
            }
        }
    }
    chain
}

fn holds_address(records: &[Record]) -> bool {
    records
        .iter()
        .any(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
}

/// A name off the wire in normalized form. Labels must be plain host-name bytes: a label
/// holding a dot or non-ASCII bytes would read as a different name once joined.
fn wire_name(name: &Name) -> Option<String> {
    let mut text = String::with_capacity(name.len());
    for label in name.iter() {
        if label.is_empty()
            || !label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return None;
        }
        if !text.is_empty() {
            text.push('.');
        }
        text.push_str(std::str::from_utf8(label).ok()?);
    }
    normalize_name(&text).ok()
}

fn build(
    mut meta: Metadata,
    code: ResponseCode,
    question: Option<Query>,
    answers: Vec<Record>,
    edns: bool,
) -> Message {
    meta.response_code = code;
    let mut msg = Message::new(meta.id, MessageType::Response, meta.op_code);
    msg.metadata = meta;
    msg.queries.extend(question);
    msg.answers = answers;
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(ADVERTISED_PAYLOAD);
        msg.edns = Some(e);
    }
    msg
}

fn encode(
    meta: Metadata,
    code: ResponseCode,
    question: Option<Query>,
    answers: Vec<Record>,
    edns: bool,
) -> Result<Vec<u8>, DnsError> {
    build(meta, code, question, answers, edns)
        .to_vec()
        .map_err(DnsError::Encode)
}

fn local(
    meta: Metadata,
    code: ResponseCode,
    question: Option<Query>,
    answers: Vec<Record>,
    edns: bool,
    decision: Option<(String, Decision)>,
) -> QueryOutcome {
    match encode(meta, code, question, answers, edns) {
        Ok(reply) => QueryOutcome::Answer { reply, decision },
        Err(_) => QueryOutcome::Drop,
    }
}

/// The query sent upstream: the guest's id, RD and CD bits and its one question, and an
/// EDNS payload size only if the guest advertised one.
fn forward_query(query: &Message, question: Query, name: String, qtype: u16) -> Option<Forward> {
    let id = query.metadata.id;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = query.metadata.recursion_desired;
    msg.metadata.checking_disabled = query.metadata.checking_disabled;
    msg.queries.push(question);
    let mut udp_limit = MIN_UDP;
    if let Some(guest) = &query.edns {
        udp_limit = guest.max_payload().clamp(MIN_UDP, MAX_UDP);
        let mut e = Edns::new();
        e.set_max_payload(udp_limit);
        msg.edns = Some(e);
    }
    let query = msg.to_vec().ok()?;
    Some(Forward {
        id,
        name,
        qtype,
        query,
        udp_limit,
    })
}

/// Sends `query` to each upstream in turn until one answers: UDP first, TCP when the UDP
/// reply is truncated. The transaction id is replaced with a random one on the way out (the
/// guest chose it, so it adds nothing against spoofed replies) and restored on the way back.
/// With `loopback_only`, an upstream outside 127.0.0.0/8 fails the call before anything is
/// sent.
pub async fn forward(
    query: &[u8],
    upstreams: &[SocketAddr],
    loopback_only: bool,
) -> Result<Vec<u8>, DnsError> {
    if loopback_only && let Some(bad) = upstreams.iter().find(|a| !is_loopback_v4(a.ip())) {
        return Err(DnsError::GuardViolation(*bad));
    }
    let mut msg = Message::from_vec(query).map_err(DnsError::Parse)?;
    let guest_id = msg.metadata.id;
    let txid: u16 = rand::random();
    msg.metadata.id = txid;
    let wire = msg.to_vec().map_err(DnsError::Encode)?;

    let mut last = DnsError::NoUpstream;
    for &addr in upstreams {
        match exchange(&wire, txid, addr).await {
            Ok(mut reply) => {
                if let Some(id) = reply.get_mut(..2) {
                    id.copy_from_slice(&guest_id.to_be_bytes());
                }
                return Ok(reply);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn is_loopback_v4(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_loopback())
}

async fn exchange(wire: &[u8], txid: u16, addr: SocketAddr) -> Result<Vec<u8>, DnsError> {
    let reply = tokio::time::timeout(UPSTREAM_TIMEOUT, exchange_udp(wire, txid, addr))
        .await
        .map_err(|_| DnsError::Timeout {
            addr,
            transport: "udp",
        })??;
    let truncated = Header::read(&mut BinDecoder::new(&reply))
        .map_err(DnsError::Parse)?
        .metadata
        .truncation;
    if !truncated {
        return Ok(reply);
    }
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange_tcp(wire, txid, addr))
        .await
        .map_err(|_| DnsError::Timeout {
            addr,
            transport: "tcp",
        })?
}

/// The reply's header says it answers `txid`.
fn answers_id(reply: &[u8], txid: u16) -> bool {
    Header::read(&mut BinDecoder::new(reply))
        .is_ok_and(|h| h.metadata.id == txid && h.metadata.message_type == MessageType::Response)
}

async fn exchange_udp(wire: &[u8], txid: u16, addr: SocketAddr) -> Result<Vec<u8>, DnsError> {
    let io = |source| DnsError::Io {
        addr,
        transport: "udp",
        source,
    };
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local).await.map_err(io)?;
    sock.connect(addr).await.map_err(io)?;
    sock.send(wire).await.map_err(io)?;
    let mut buf = vec![0u8; MAX_DNS_TCP];
    loop {
        let n = sock.recv(&mut buf).await.map_err(io)?;
        let reply = &buf[..n];
        // Anything else on this socket is stale or forged; keep waiting for the answer.
        if answers_id(reply, txid) {
            return Ok(reply.to_vec());
        }
    }
}

async fn exchange_tcp(wire: &[u8], txid: u16, addr: SocketAddr) -> Result<Vec<u8>, DnsError> {
    let io = |source| DnsError::Io {
        addr,
        transport: "tcp",
        source,
    };
    let len = u16::try_from(wire.len()).map_err(|_| {
        io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "query too long",
        ))
    })?;
    let mut stream = TcpStream::connect(addr).await.map_err(io)?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    stream.write_all(&framed).await.map_err(io)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.map_err(io)?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await.map_err(io)?;
    if !answers_id(&reply, txid) {
        return Err(io(io::Error::new(
            io::ErrorKind::InvalidData,
            "reply is not an answer to the query",
        )));
    }
    Ok(reply)
}

/// The IPv4 nameservers in the host's `/etc/resolv.conf`, on port 53. IPv6 and malformed
/// lines are skipped.
pub fn host_upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|text| parse_resolv_conf(&text))
        .unwrap_or_default()
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            let ip: Ipv4Addr = words.next()?.parse().ok()?;
            Some(SocketAddr::from((ip, 53)))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Rules;
    use RecordType as T;
    use ResponseCode as Rc;
    use hickory_proto::rr::rdata::{AAAA, CNAME, SOA, TXT};
    use rand::{Rng, SeedableRng};

    /// A guest's query for `name`, with RD set and no EDNS.
    pub(crate) fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        query_with(0x4242, name, qtype, |_| {})
    }

    fn query_with(
        id: u16,
        qname: &str,
        qtype: RecordType,
        edit: impl FnOnce(&mut Message),
    ) -> Vec<u8> {
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(name(qname), qtype));
        edit(&mut msg);
        msg.to_vec().unwrap()
    }

    /// A policy from space-separated allow and deny rules.
    fn policy(allow: &str, deny: &str) -> Policy {
        let words = |s: &str| s.split_whitespace().map(str::to_owned).collect();
        let rules = Rules {
            allow: words(allow),
            deny: words(deny),
        };
        Policy::new(&rules, &Subnet::default()).unwrap()
    }

    fn resolver() -> Resolver {
        let host = |name: &str, ip: [u8; 4]| HostEntry {
            name: name.into(),
            ip: ip.into(),
        };
        let hosts = [
            host("DB.Internal.", [10, 0, 2, 50]),
            host("db.internal", [10, 0, 2, 51]),
        ];
        Resolver::new(&hosts, &Subnet::default()).unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn pinned(pins: &PinSet, addr: &str, at: Instant) -> Vec<String> {
        pins.lookup(ip(addr), at)
    }

    fn a(owner: &str, addr: &str, ttl: u32) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A(ip(addr))))
    }

    fn cname(owner: &str, target: &str) -> Record {
        Record::from_rdata(name(owner), 300, RData::CNAME(CNAME(name(target))))
    }

    fn a_records(msg: &Message) -> Vec<Ipv4Addr> {
        let addr = |r: &Record| match r.data {
            RData::A(A(ip)) => Some(ip),
            _ => None,
        };
        msg.answers.iter().filter_map(addr).collect()
    }

    /// Runs a query through the resolver with fresh pins.
    fn ask_with(p: &Policy, bytes: &[u8]) -> (QueryOutcome, PinSet) {
        let mut pins = PinSet::new(64);
        let out = resolver().on_query(bytes, p, &mut pins, Instant::now());
        (out, pins)
    }

    fn ask(p: &Policy, qname: &str, qtype: RecordType) -> (QueryOutcome, PinSet) {
        ask_with(p, &query(qname, qtype))
    }

    fn answered(outcome: QueryOutcome) -> (Message, Option<(String, Decision)>) {
        match outcome {
            QueryOutcome::Answer { reply, decision } => {
                (Message::from_vec(&reply).unwrap(), decision)
            }
            other => panic!("expected a local answer, got {other:?}"),
        }
    }

    fn forwarded(outcome: QueryOutcome) -> Forward {
        match outcome {
            QueryOutcome::Forward(f) => f,
            other => panic!("expected a forward, got {other:?}"),
        }
    }

    /// The upstream's reply to `fwd`: its id, its question, these records.
    fn upstream(fwd: &Forward, answers: Vec<Record>, edit: impl FnOnce(&mut Message)) -> Vec<u8> {
        let mut msg = Message::response(fwd.id, OpCode::Query);
        msg.metadata.recursion_available = true;
        msg.queries = Message::from_vec(&fwd.query).unwrap().queries;
        msg.answers = answers;
        edit(&mut msg);
        msg.to_vec().unwrap()
    }

    /// Forwards an A query for `qname`, has the upstream answer `answers`, and returns what
    /// the guest gets and what was pinned.
    fn resolve(p: &Policy, qname: &str, answers: Vec<Record>) -> (Message, PinSet) {
        let fwd = forwarded(ask(p, qname, T::A).0);
        let reply = upstream(&fwd, answers, |_| {});
        let mut pins = PinSet::new(64);
        let out = resolver()
            .on_reply(&fwd, &reply, p, &mut pins, Instant::now())
            .unwrap();
        (Message::from_vec(&out).unwrap(), pins)
    }

    #[test]
    fn denied_names_get_nxdomain_locally_and_are_never_forwarded() {
        let cases = [
            ("", "evil.test", "evil.test"),
            ("", "*.evil.test", "Secret-Data.Evil.Test."),
            // Memo case 14: exfiltration in allow-list mode.
            ("api.example.com", "", "secretdata.evil.test"),
        ];
        for (allow, deny, qname) in cases {
            let p = policy(allow, deny);
            for qtype in [T::A, T::TXT, T::MX, T::AAAA, T::ANY, T::HTTPS] {
                let (out, pins) = ask(&p, qname, qtype);
                let (msg, decision) = answered(out);
                assert_eq!(msg.metadata.response_code, Rc::NXDomain, "{qname} {qtype}");
                assert!(msg.answers.is_empty() && pins.is_empty());
                let (logged, d) = decision.expect("a denial is logged");
                assert_eq!(logged, normalize_name(qname).unwrap());
                assert_eq!(d.verdict, Verdict::Deny);
            }
        }
    }

    #[test]
    fn local_replies_echo_id_question_and_rd_and_set_ra() {
        let bytes = query_with(0x1234, "Some.Example.com", T::AAAA, |m| {
            m.metadata.recursion_desired = false;
        });
        let (msg, decision) = answered(ask_with(&policy("", ""), &bytes).0);
        assert_eq!(msg.metadata.id, 0x1234);
        assert_eq!(msg.metadata.message_type, MessageType::Response);
        assert!(!msg.metadata.recursion_desired);
        assert!(msg.metadata.recursion_available);
        assert_eq!(msg.queries.len(), 1);
        assert_eq!(msg.queries[0].name().to_ascii(), "Some.Example.com.");
        // AAAA: no IPv6 yet, so NODATA for every name.
        assert_eq!(msg.metadata.response_code, Rc::NoError);
        assert!(msg.answers.is_empty());
        assert!(decision.is_none());
    }

    #[test]
    fn aaaa_svcb_and_https_get_nodata_and_any_gets_notimp() {
        let p = policy("", "");
        for (qtype, code) in [
            (T::AAAA, Rc::NoError),
            (T::HTTPS, Rc::NoError),
            (T::SVCB, Rc::NoError),
            (T::ANY, Rc::NotImp),
        ] {
            let (msg, _) = answered(ask(&p, "www.example.com", qtype).0);
            assert_eq!(msg.metadata.response_code, code, "{qtype}");
            assert!(msg.answers.is_empty(), "{qtype}");
        }
    }

    #[test]
    fn other_classes_are_refused_and_odd_labels_get_nxdomain() {
        let p = policy("", "");
        let chaos = query_with(7, "version.bind", T::TXT, |m| {
            m.queries[0].set_query_class(DNSClass::CH);
        });
        assert_eq!(
            answered(ask_with(&p, &chaos).0).0.metadata.response_code,
            Rc::Refused
        );
        // Labels a stub never sends, and one that would read as two labels once joined.
        for labels in [
            &[&b"bad!"[..], b"example", b"com"],
            &[&b"api.example"[..], b"com", b"x"],
        ] {
            let odd = Name::from_labels(labels.iter().copied()).unwrap();
            assert_eq!(odd.num_labels(), 3);
            let bytes = query_with(8, "placeholder.example", T::A, |m| {
                m.queries[0].set_name(odd);
            });
            let (msg, _) = answered(ask_with(&p, &bytes).0);
            assert_eq!(msg.metadata.response_code, Rc::NXDomain);
        }
    }

    #[test]
    fn static_names_and_the_host_alias_answer_a_and_pin() {
        let p = policy("", "");
        let now = Instant::now();
        let (out, pins) = ask(&p, "db.INTERNAL", T::A);
        let (msg, _) = answered(out);
        assert_eq!(a_records(&msg), vec![ip("10.0.2.50"), ip("10.0.2.51")]);
        assert!(msg.answers.iter().all(|r| r.ttl == 60));
        assert_eq!(pinned(&pins, "10.0.2.51", now), vec!["db.internal"]);

        let (out, pins) = ask(&p, "host.boxlite.internal", T::A);
        assert_eq!(a_records(&answered(out).0), vec![ip("10.0.2.2")]);
        assert_eq!(pinned(&pins, "10.0.2.2", now), vec![HOST_ALIAS]);

        for qtype in [T::AAAA, T::TXT, T::MX] {
            let (out, pins) = ask(&p, "db.internal", qtype);
            let (msg, _) = answered(out);
            assert_eq!(msg.metadata.response_code, Rc::NoError, "{qtype}");
            assert!(msg.answers.is_empty() && pins.is_empty(), "{qtype}");
        }

        // Static names still answer to the policy.
        let (out, pins) = ask(
            &policy("api.example.com", ""),
            "host.boxlite.internal",
            T::A,
        );
        assert_eq!(answered(out).0.metadata.response_code, Rc::NXDomain);
        assert!(pins.is_empty());
    }

    #[test]
    fn malformed_queries_get_formerr_notimp_or_nothing() {
        let p = policy("", "");
        let code = |bytes: &[u8]| answered(ask_with(&p, bytes).0).0.metadata.response_code;
        let two = query_with(1, "a.example.com", T::A, |m| {
            m.add_query(Query::query(name("b.example.com"), T::A));
        });
        assert_eq!(code(&two), Rc::FormErr);
        let none = Message::new(2, MessageType::Query, OpCode::Query)
            .to_vec()
            .unwrap();
        assert_eq!(code(&none), Rc::FormErr);
        let mut cut = query("a.example.com", T::A);
        cut.truncate(16);
        assert_eq!(code(&cut), Rc::FormErr);
        // A header claiming 65535 questions is refused before anything sizes a buffer by it.
        let mut many = query("a.example.com", T::A);
        many[4..6].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(code(&many), Rc::FormErr);
        let notify = query_with(3, "a.example.com", T::SOA, |m| {
            m.metadata.op_code = OpCode::Notify
        });
        assert_eq!(code(&notify), Rc::NotImp);

        assert_eq!(ask_with(&p, &[0x12, 0x34, 0x01]).0, QueryOutcome::Drop);
        let response = query_with(4, "a.example.com", T::A, |m| {
            m.metadata.message_type = MessageType::Response;
        });
        assert_eq!(ask_with(&p, &response).0, QueryOutcome::Drop);
    }

    #[test]
    fn allowed_queries_are_forwarded_as_the_question_alone() {
        let p = policy("", "");
        let bytes = query_with(0x7777, "WWW.Example.com.", T::TXT, |m| {
            m.metadata.checking_disabled = true;
            m.add_additional(a("smuggled.example.com.", "198.51.100.1", 60));
            let mut e = Edns::new();
            e.set_max_payload(1400);
            m.set_edns(e);
        });
        let fwd = forwarded(ask_with(&p, &bytes).0);
        assert_eq!(
            (fwd.id, fwd.name.as_str(), fwd.qtype),
            (0x7777, "www.example.com", 16)
        );
        let sent = Message::from_vec(&fwd.query).unwrap();
        assert_eq!(sent.metadata.id, 0x7777);
        assert!(sent.metadata.recursion_desired && sent.metadata.checking_disabled);
        assert_eq!(sent.queries.len(), 1);
        assert_eq!(sent.queries[0].name().to_ascii(), "WWW.Example.com.");
        assert!(sent.answers.is_empty() && sent.authorities.is_empty());
        assert!(
            sent.additionals.is_empty(),
            "nothing the guest added travels upstream"
        );
        assert_eq!(sent.edns.map(|e| e.max_payload()), Some(1400));
        assert_eq!(fwd.udp_limit(), 1400);

        for qtype in [T::A, T::CNAME, T::MX, T::PTR, T::SRV] {
            let out = ask(&p, "www.example.com", qtype).0;
            assert!(matches!(out, QueryOutcome::Forward(_)), "{qtype}");
        }
        assert_eq!(
            forwarded(ask(&p, "www.example.com", T::A).0).udp_limit(),
            512
        );
    }

    /// Memo case 9.
    #[test]
    fn rebinding_answers_are_stripped_to_nxdomain_and_not_pinned() {
        let p = policy("", "");
        let rb = "rb.example.com.";
        let cases = [
            ("loopback", vec![a(rb, "127.0.0.1", 60)]),
            ("private", vec![a(rb, "10.0.0.1", 60)]),
            ("metadata", vec![a(rb, "169.254.169.254", 60)]),
            ("gateway", vec![a(rb, "10.0.2.2", 60)]),
            (
                "cname to localhost",
                vec![cname(rb, "localhost."), a("localhost.", "127.0.0.1", 60)],
            ),
        ];
        for (label, answers) in cases {
            let (msg, pins) = resolve(&p, "rb.example.com", answers);
            assert_eq!(msg.metadata.response_code, Rc::NXDomain, "{label}");
            assert!(msg.answers.is_empty() && pins.is_empty(), "{label}");
        }
    }

    #[test]
    fn mixed_answers_keep_and_pin_only_the_public_addresses() {
        let p = policy("", "");
        let now = Instant::now();
        let mapped = AAAA("::ffff:127.0.0.1".parse().unwrap());
        let answers = vec![
            a("rb.example.com.", "198.51.100.5", 3600),
            a("rb.example.com.", "127.0.0.1", 60),
            Record::from_rdata(name("rb.example.com."), 60, RData::AAAA(mapped)),
        ];
        let (msg, pins) = resolve(&p, "rb.example.com", answers);
        assert_eq!(msg.metadata.response_code, Rc::NoError);
        assert_eq!(msg.metadata.id, 0x4242);
        assert_eq!(msg.answers.len(), 1);
        assert_eq!(a_records(&msg), vec![ip("198.51.100.5")]);
        // Pinned for the record's TTL, under the queried name only.
        let later = now + Duration::from_secs(3590);
        assert_eq!(pinned(&pins, "198.51.100.5", later), vec!["rb.example.com"]);
        assert!(pinned(&pins, "127.0.0.1", now).is_empty());
    }

    #[test]
    fn an_explicit_address_rule_lets_a_private_answer_through() {
        let now = Instant::now();
        let answers = || vec![a("git.corp.example.", "10.0.0.1", 60)];
        let (msg, pins) = resolve(
            &policy("10.0.0.0/8 *.corp.example", ""),
            "git.corp.example",
            answers(),
        );
        assert_eq!(a_records(&msg), vec![ip("10.0.0.1")]);
        assert_eq!(pinned(&pins, "10.0.0.1", now), vec!["git.corp.example"]);
        // The same answer without the rule is stripped.
        let (msg, pins) = resolve(&policy("", ""), "git.corp.example", answers());
        assert_eq!(msg.metadata.response_code, Rc::NXDomain);
        assert!(pins.is_empty());
    }

    #[test]
    fn a_cname_into_a_denied_name_is_nxdomain() {
        let now = Instant::now();
        let answers = vec![
            cname("www.example.com.", "x.evil.test."),
            a("x.evil.test.", "198.51.100.9", 60),
        ];
        let (msg, pins) = resolve(&policy("", "*.evil.test"), "www.example.com", answers);
        assert_eq!(msg.metadata.response_code, Rc::NXDomain);
        assert!(pins.is_empty());

        // In allow-list mode a target no rule mentions is fine: only deny rules count.
        let cdn = "edge.cdn.example.net.";
        let answers = vec![cname("www.example.com.", cdn), a(cdn, "198.51.100.9", 60)];
        let (msg, pins) = resolve(&policy("www.example.com", ""), "www.example.com", answers);
        assert_eq!(msg.answers.len(), 2);
        assert_eq!(pinned(&pins, "198.51.100.9", now), vec!["www.example.com"]);
    }

    #[test]
    fn cname_chains_are_followed_in_any_order_and_loops_end() {
        let now = Instant::now();
        let answers = vec![
            a("c.example.net.", "198.51.100.3", 60),
            cname("b.example.net.", "c.example.net."),
            cname("www.example.com.", "b.example.net."),
            cname("c.example.net.", "www.example.com."),
        ];
        let (msg, pins) = resolve(&policy("", ""), "www.example.com", answers);
        assert_eq!(msg.answers.len(), 4);
        assert_eq!(pinned(&pins, "198.51.100.3", now), vec!["www.example.com"]);
    }

    #[test]
    fn records_outside_the_cname_chain_and_address_glue_are_dropped() {
        let now = Instant::now();
        let p = policy("", "");
        let fwd = forwarded(ask(&p, "www.example.com", T::A).0);
        let soa = SOA::new(
            name("ns.example.com."),
            name("admin.example.com."),
            1,
            2,
            3,
            4,
            5,
        );
        let answers = vec![
            a("www.example.com.", "198.51.100.5", 60),
            a("bank.example.org.", "198.51.100.66", 60),
        ];
        let reply = upstream(&fwd, answers, |m| {
            m.add_authority(Record::from_rdata(
                name("example.com."),
                60,
                RData::SOA(soa),
            ));
            m.add_additional(a("ns.example.com.", "198.51.100.53", 60));
        });
        let mut pins = PinSet::new(16);
        let out = resolver()
            .on_reply(&fwd, &reply, &p, &mut pins, now)
            .unwrap();
        let msg = Message::from_vec(&out).unwrap();
        assert_eq!(a_records(&msg), vec![ip("198.51.100.5")]);
        assert!(pinned(&pins, "198.51.100.66", now).is_empty());
        assert_eq!(msg.authorities.len(), 1, "the SOA is kept");
        assert!(msg.additionals.is_empty(), "glue is dropped");

        let txt = forwarded(ask(&p, "www.example.com", T::TXT).0);
        let record = RData::TXT(TXT::new(vec!["v=1".into()]));
        let reply = upstream(
            &txt,
            vec![Record::from_rdata(name("www.example.com."), 60, record)],
            |_| {},
        );
        let out = resolver()
            .on_reply(&txt, &reply, &p, &mut pins, now)
            .unwrap();
        let msg = Message::from_vec(&out).unwrap();
        assert_eq!(
            (msg.answers.len(), msg.metadata.response_code),
            (1, Rc::NoError)
        );
    }

    #[test]
    fn replies_that_do_not_match_the_forward_are_dropped() {
        let now = Instant::now();
        let p = policy("", "");
        let fwd = forwarded(ask(&p, "www.example.com", T::A).0);
        let good = || vec![a("www.example.com.", "198.51.100.5", 60)];
        let question = |q: &str, t| vec![Query::query(name(q), t)];
        #[rustfmt::skip]
        let cases = [
            ("id", upstream(&fwd, good(), |m| m.metadata.id = fwd.id.wrapping_add(1))),
            ("name", upstream(&fwd, good(), |m| m.queries = question("other.example.com.", T::A))),
            ("type", upstream(&fwd, good(), |m| m.queries = question("www.example.com.", T::TXT))),
            ("no question", upstream(&fwd, good(), |m| m.queries.clear())),
            ("not a response", upstream(&fwd, good(), |m| m.metadata.message_type = MessageType::Query)),
            ("garbage", vec![1, 2, 3]),
        ];
        for (label, reply) in cases {
            let mut pins = PinSet::new(16);
            assert!(
                resolver()
                    .on_reply(&fwd, &reply, &p, &mut pins, now)
                    .is_err(),
                "{label}"
            );
            assert!(pins.is_empty(), "{label}");
        }
        let upper = upstream(&fwd, good(), |m| {
            m.queries = question("WWW.EXAMPLE.COM.", T::A)
        });
        assert!(
            resolver()
                .on_reply(&fwd, &upper, &p, &mut PinSet::new(4), now)
                .is_ok()
        );
    }

    #[test]
    fn oversized_replies_are_truncated_for_udp() {
        let p = policy("", "");
        let fwd = forwarded(ask(&p, "www.example.com", T::A).0);
        let many = (0..60)
            .map(|i| a("www.example.com.", &format!("198.51.100.{i}"), 60))
            .collect();
        let reply = upstream(&fwd, many, |_| {});
        let out = resolver()
            .on_reply(&fwd, &reply, &p, &mut PinSet::new(128), Instant::now())
            .unwrap();
        assert!(out.len() > fwd.udp_limit());
        let cut = truncate_for_udp(&out, fwd.udp_limit()).unwrap();
        assert!(cut.len() <= 512);
        let msg = Message::from_vec(&cut).unwrap();
        assert!(msg.metadata.truncation);
        assert_eq!((msg.metadata.id, msg.queries.len()), (fwd.id, 1));
        assert_eq!(truncate_for_udp(&cut, 512).unwrap(), cut);
    }

    #[test]
    fn garbage_never_panics() {
        let p = policy("*.example.com 10.0.0.0/8", "evil.test");
        let r = resolver();
        let now = Instant::now();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xd15);
        let fwd = forwarded(ask(&policy("", ""), "www.example.com", T::A).0);
        let answers = vec![
            cname("www.example.com.", "a.example.com."),
            a("a.example.com.", "198.51.100.5", 60),
        ];
        let valid_reply = upstream(&fwd, answers, |_| {});
        let valid_query = query("www.example.com", T::A);
        let mutate = |rng: &mut rand::rngs::StdRng, valid: &[u8], times| {
            let mut b = valid.to_vec();
            for _ in 0..times {
                let at = rng.random_range(0..b.len());
                b[at] = rng.random();
            }
            b
        };
        for i in 0..3000 {
            let bytes: Vec<u8> = match i % 3 {
                0 => (0..rng.random_range(0..300))
                    .map(|_| rng.random())
                    .collect(),
                1 => mutate(&mut rng, &valid_query, 1),
                _ => mutate(&mut rng, &valid_reply, 3),
            };
            let mut pins = PinSet::new(8);
            let _ = r.on_query(&bytes, &p, &mut pins, now);
            let _ = r.on_reply(&fwd, &bytes, &p, &mut pins, now);
            let _ = truncate_for_udp(&bytes, 16);
        }
        for n in 0..valid_reply.len() {
            let _ = r.on_reply(&fwd, &valid_reply[..n], &p, &mut PinSet::new(8), now);
        }
    }

    #[test]
    fn resolv_conf_yields_ipv4_nameservers_on_port_53() {
        let text = "# comment\nnameserver 127.0.0.53\nnameserver ::1\nnameserver\n\
                    nameserver 10.0.0.1 # trailing\noptions edns0\n;nameserver 1.1.1.1\n\
                    nameserver 300.1.1.1\n  nameserver 192.0.2.1\n";
        let want: Vec<SocketAddr> = ["127.0.0.53:53", "10.0.0.1:53", "192.0.2.1:53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(parse_resolv_conf(text), want);
    }

    #[test]
    fn resolver_rejects_invalid_static_names() {
        let hosts = [HostEntry {
            name: "bad name".into(),
            ip: ip("10.0.2.50"),
        }];
        let err = Resolver::new(&hosts, &Subnet::default()).unwrap_err();
        assert!(err.to_string().contains("\"bad name\""), "{err}");
    }

    type Seen = tokio::sync::mpsc::UnboundedReceiver<Message>;

    /// A fake upstream on loopback: answers every UDP query with `reply(query)` and reports
    /// each query it got.
    async fn udp_upstream(
        reply: impl Fn(&Message) -> Message + Send + 'static,
    ) -> (SocketAddr, Seen) {
        udp_upstream_on(UdpSocket::bind("127.0.0.1:0").await.unwrap(), reply)
    }

    fn udp_upstream_on(
        sock: UdpSocket,
        reply: impl Fn(&Message) -> Message + Send + 'static,
    ) -> (SocketAddr, Seen) {
        let addr = sock.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                let q = Message::from_vec(&buf[..n]).unwrap();
                let out = reply(&q).to_vec().unwrap();
                let _ = tx.send(q);
                let _ = sock.send_to(&out, peer).await;
            }
        });
        (addr, rx)
    }

    /// An answer to `q` with one A record, 198.51.100.`last`.
    fn answer(q: &Message, last: u8) -> Message {
        let mut m = Message::response(q.metadata.id, OpCode::Query);
        m.queries = q.queries.clone();
        let addr = Ipv4Addr::new(198, 51, 100, last);
        m.answers.push(Record::from_rdata(
            q.queries[0].name().clone(),
            60,
            RData::A(A(addr)),
        ));
        m
    }

    #[tokio::test]
    async fn forward_sends_over_udp_and_restores_the_guest_id() {
        let (addr, mut seen) = udp_upstream(|q| answer(q, 5)).await;
        let q = query_with(0xbeef, "www.example.com", T::A, |_| {});
        let msg = Message::from_vec(&forward(&q, &[addr], true).await.unwrap()).unwrap();
        assert_eq!(msg.metadata.id, 0xbeef);
        assert_eq!(a_records(&msg), vec![ip("198.51.100.5")]);
        let sent = seen.recv().await.unwrap();
        assert_eq!(sent.queries[0].name().to_ascii(), "www.example.com.");
    }

    #[tokio::test]
    async fn forward_retries_over_tcp_when_the_udp_reply_is_truncated() {
        // One port for both transports, as a real resolver has.
        let mut tries = 0;
        let (tcp, udp) = loop {
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            match UdpSocket::bind(tcp.local_addr().unwrap()).await {
                Ok(udp) => break (tcp, udp),
                Err(_) if tries < 50 => tries += 1,
                Err(e) => panic!("no port free for both tcp and udp: {e}"),
            }
        };
        let (addr, mut seen) = udp_upstream_on(udp, |q| {
            let mut m = Message::response(q.metadata.id, OpCode::Query);
            m.queries = q.queries.clone();
            m.metadata.truncation = true;
            m
        });
        let server = tokio::spawn(async move {
            let (mut s, _) = tcp.accept().await.unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.unwrap();
            let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut body).await.unwrap();
            let q = Message::from_vec(&body).unwrap();
            let out = answer(&q, 77).to_vec().unwrap();
            s.write_all(&u16::try_from(out.len()).unwrap().to_be_bytes())
                .await
                .unwrap();
            s.write_all(&out).await.unwrap();
            q
        });
        let q = query_with(0x0102, "big.example.com", T::A, |_| {});
        let msg = Message::from_vec(&forward(&q, &[addr], true).await.unwrap()).unwrap();
        assert_eq!(msg.metadata.id, 0x0102);
        assert!(!msg.metadata.truncation);
        assert_eq!(a_records(&msg), vec![ip("198.51.100.77")]);
        let over_tcp = server.await.unwrap();
        let over_udp = seen.recv().await.unwrap();
        assert_eq!(
            over_tcp.metadata.id, over_udp.metadata.id,
            "one transaction, two transports"
        );
    }

    #[tokio::test]
    async fn forward_moves_on_to_the_next_upstream() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dead = silent.local_addr().unwrap();
        let (live, _seen) = udp_upstream(|q| answer(q, 9)).await;
        let q = query("www.example.com", T::A);
        let started = std::time::Instant::now();
        let reply = forward(&q, &[dead, live], true).await.unwrap();
        assert_eq!(
            a_records(&Message::from_vec(&reply).unwrap()),
            vec![ip("198.51.100.9")]
        );
        assert!(
            started.elapsed() >= UPSTREAM_TIMEOUT,
            "the silent upstream was given its 2 s"
        );
        drop(silent);

        // Nobody listens there now: the error names the upstream.
        let err = forward(&q, &[dead], true).await.unwrap_err();
        assert!(
            matches!(err, DnsError::Io { .. } | DnsError::Timeout { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&dead.to_string()), "{err}");
    }

    #[tokio::test]
    async fn forward_refuses_non_loopback_upstreams_under_the_test_guard() {
        let (live, mut seen) = udp_upstream(|q| answer(q, 9)).await;
        let outside: SocketAddr = "198.51.100.53:53".parse().unwrap();
        let q = query("www.example.com", T::A);
        let err = forward(&q, &[live, outside], true).await.unwrap_err();
        assert!(
            matches!(err, DnsError::GuardViolation(a) if a == outside),
            "{err}"
        );
        assert!(err.to_string().contains("198.51.100.53:53"));
        assert!(
            seen.try_recv().is_err(),
            "nothing was sent, not even to the loopback upstream"
        );
        assert!(matches!(
            forward(&q, &[], false).await,
            Err(DnsError::NoUpstream)
        ));
    }
}
