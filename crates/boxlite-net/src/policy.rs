//! The egress policy: rule parsing, name normalization, the one name matcher, the per-box
//! DNS pin set, and the decision functions every outbound connection goes through.
//!
//! The guest is hostile, so the policy never trusts a name the guest *claims*. A domain
//! rule can only match a connection through the [`PinSet`]: the names this box's own DNS
//! answered with the connection's destination address. A guest that dials a hard-coded
//! address, or resolves a name some other way (DoH, a hosts file), carries no pinned name and
//! so is judged by address rules and the default alone. When one address serves several
//! names and only some are allowed (a shared CDN address), the decision is deferred to the
//! first flight ([`Verdict::DeferL7`]), and the SNI or `Host` the guest sends must itself be a
//! name pinned to that address.
//!
//! Names are compared in one canonical form ([`normalize_name`]) by one matcher
//! ([`name_matches`]). The policy, the DNS filter and the SNI/`Host` check all call it, so a
//! wildcard cannot mean one thing to the resolver and another to the connection check.
//!
//! Precedence is explicit deny, then explicit allow, then the default. By default the public
//! internet is reachable and everything else (private ranges, loopback, link-local, cloud
//! metadata, and the host behind the gateway address) is not. One allow rule switches the
//! box to allow-list mode, where only what an allow rule names is reachable.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub use crate::config::Proto;
use crate::config::{Rules, Subnet};

/// Whether a rule opens or closes what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

/// A class of IPv4 addresses. Every address belongs to exactly one ([`classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    Public,
    Private,
    Loopback,
    LinkLocal,
    Metadata,
    Host,
}

impl Group {
    const ALL: [Group; 6] = [
        Group::Public,
        Group::Private,
        Group::Loopback,
        Group::LinkLocal,
        Group::Metadata,
        Group::Host,
    ];

    /// The spelling used in rules and reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Public => "public",
            Group::Private => "private",
            Group::Loopback => "loopback",
            Group::LinkLocal => "link-local",
            Group::Metadata => "metadata",
            Group::Host => "host",
        }
    }

    fn from_rule(text: &str) -> Option<Group> {
        Group::ALL
            .into_iter()
            .find(|g| g.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Ip(Ipv4Addr),
    Cidr(Ipv4Net),
    /// A normalized name.
    Name(String),
    /// `*.suffix`: the normalized suffix, without `*.`. Matches any depth of subdomain,
    /// never the suffix itself.
    Wildcard(String),
    Group(Group),
}

/// One `--allow-net` or `--deny-net` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub dest: Dest,
    /// Inclusive port range; `None` is every port.
    pub ports: Option<(u16, u16)>,
    /// `None` is both TCP and UDP.
    pub proto: Option<Proto>,
    /// The rule as written, for reasons and logs.
    pub text: String,
}

/// What is wrong with a rule. Part of [`RuleError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleProblem {
    #[error("the rule is empty")]
    Empty,
    #[error("it contains whitespace")]
    Whitespace,
    #[error("the destination is empty")]
    EmptyDest,
    #[error("destination {0:?} is IPv6, which is not supported yet")]
    Ipv6(String),
    #[error("port {0:?} is not a number from 1 to 65535")]
    BadPort(String),
    #[error("port 0 is not a port; ports are 1 to 65535")]
    PortZero,
    #[error("port range {0}-{1} runs backwards; write LOW-HIGH with LOW <= HIGH")]
    ReversedRange(u16, u16),
    #[error("protocol {0:?} is neither tcp nor udp")]
    BadProto(String),
    #[error("`*` alone matches nothing; use `public` for the internet or `*.name` for subdomains")]
    BareWildcard,
    #[error("`*` may only be the whole first label, as in *.example.com")]
    MisplacedWildcard,
    #[error("{0:?} is not a valid IPv4 address or CIDR")]
    BadAddress(String),
    #[error("cidr {given} has host bits set; its network is {network}")]
    HostBits { given: Ipv4Net, network: Ipv4Net },
    #[error("{0}")]
    BadName(NameError),
    #[error("domain rules never open udp; allow an IPv4 address or CIDR for udp instead")]
    UdpDomainAllow,
}

/// A rule that does not parse. Names the rule and says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid network rule {text:?}: {problem}; a rule is DEST[:PORT|:LOW-HIGH][/tcp|/udp] where \
     DEST is a name, *.name, an IPv4 address or CIDR, or one of public, private, loopback, \
     link-local, metadata, host"
)]
pub struct RuleError {
    pub text: String,
    pub problem: RuleProblem,
}

impl Rule {
    /// Parses `DEST[:PORT|:LOW-HIGH][/tcp|/udp]`. The text is kept verbatim in
    /// [`Rule::text`].
    pub fn parse(action: Action, text: &str) -> Result<Rule, RuleError> {
        let fail = |problem| RuleError {
            text: text.to_owned(),
            problem,
        };
        let (dest, ports, proto) = split_rule(text).map_err(fail)?;
        let dest = parse_dest(dest).map_err(fail)?;
        let is_name = matches!(dest, Dest::Name(_) | Dest::Wildcard(_));
        if action == Action::Allow && is_name && proto == Some(Proto::Udp) {
            return Err(fail(RuleProblem::UdpDomainAllow));
        }
        Ok(Rule {
            action,
            dest,
            ports,
            proto,
            text: text.to_owned(),
        })
    }

    /// The name pattern of a domain rule, for the matchers outside the policy.
    pub fn pattern(&self) -> Option<NamePattern> {
        match &self.dest {
            Dest::Name(n) => Some(NamePattern::Exact(n.clone())),
            Dest::Wildcard(s) => Some(NamePattern::Wildcard(s.clone())),
            _ => None,
        }
    }

    fn is_domain(&self) -> bool {
        matches!(self.dest, Dest::Name(_) | Dest::Wildcard(_))
    }

    /// Covers every port and both protocols.
    fn is_unrestricted(&self) -> bool {
        self.ports.is_none() && self.proto.is_none()
    }

    /// `None` for `port` or `proto` means "whatever the rule says".
    fn scope_matches(&self, port: Option<u16>, proto: Option<Proto>) -> bool {
        let port_ok = match (self.ports, port) {
            (Some((lo, hi)), Some(p)) => (lo..=hi).contains(&p),
            _ => true,
        };
        let proto_ok = match (self.proto, proto) {
            (Some(want), Some(got)) => want == got,
            _ => true,
        };
        port_ok && proto_ok
    }

    fn matches_addr(&self, ip: Ipv4Addr, group: Group) -> bool {
        match &self.dest {
            Dest::Ip(a) => *a == ip,
            // A range never opens the host, its loopback or a metadata service by
            // accident (`10.0.0.0/8` holds the gateway, `100.64.0.0/10` a metadata
            // address, `0.0.0.0/0` everything): those need their group or their exact
            // address.
            Dest::Cidr(net) => {
                net.contains(&ip)
                    && !matches!(group, Group::Host | Group::Loopback | Group::Metadata)
            }
            Dest::Group(g) => *g == group,
            Dest::Name(_) | Dest::Wildcard(_) => false,
        }
    }

    fn matches_name(&self, name: &str) -> bool {
        self.pattern().is_some_and(|p| name_matches(&p, name))
    }
}

type RuleParts<'a> = (&'a str, Option<(u16, u16)>, Option<Proto>);

/// Splits a rule into its destination, port range and protocol.
fn split_rule(text: &str) -> Result<RuleParts<'_>, RuleProblem> {
    if text.is_empty() {
        return Err(RuleProblem::Empty);
    }
    if text.chars().any(char::is_whitespace) {
        return Err(RuleProblem::Whitespace);
    }
    // A protocol suffix is letters after the last '/'; digits there are a CIDR prefix.
    let (rest, proto) = match text.rsplit_once('/') {
        Some((rest, tail)) if tail.bytes().all(|b| b.is_ascii_alphabetic()) => {
            let proto = if tail.eq_ignore_ascii_case("tcp") {
                Proto::Tcp
            } else if tail.eq_ignore_ascii_case("udp") {
                Proto::Udp
            } else {
                return Err(RuleProblem::BadProto(tail.to_owned()));
            };
            (rest, Some(proto))
        }
        _ => (text, None),
    };
    if rest.contains('[') || rest.matches(':').count() > 1 {
        return Err(RuleProblem::Ipv6(rest.to_owned()));
    }
    let (dest, ports) = match rest.split_once(':') {
        Some((dest, spec)) => (dest, Some(parse_ports(spec)?)),
        None => (rest, None),
    };
    if dest.is_empty() {
        return Err(RuleProblem::EmptyDest);
    }
    Ok((dest, ports, proto))
}

fn parse_ports(spec: &str) -> Result<(u16, u16), RuleProblem> {
    let one = |s: &str| -> Result<u16, RuleProblem> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RuleProblem::BadPort(s.to_owned()));
        }
        match s.parse::<u16>() {
            Ok(0) => Err(RuleProblem::PortZero),
            Ok(p) => Ok(p),
            Err(_) => Err(RuleProblem::BadPort(s.to_owned())),
        }
    };
    match spec.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (one(lo)?, one(hi)?);
            if lo > hi {
                return Err(RuleProblem::ReversedRange(lo, hi));
            }
            Ok((lo, hi))
        }
        None => one(spec).map(|p| (p, p)),
    }
}

fn parse_dest(dest: &str) -> Result<Dest, RuleProblem> {
    if let Some(group) = Group::from_rule(dest) {
        return Ok(Dest::Group(group));
    }
    if dest == "*" {
        return Err(RuleProblem::BareWildcard);
    }
    if let Some(suffix) = dest.strip_prefix("*.") {
        if suffix.contains('*') {
            return Err(RuleProblem::MisplacedWildcard);
        }
        return normalize_name(suffix)
            .map(Dest::Wildcard)
            .map_err(RuleProblem::BadName);
    }
    if dest.contains('*') {
        return Err(RuleProblem::MisplacedWildcard);
    }
    // Digits, dots and a slash are always meant as an address; never fall back to a name.
    if dest
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'/')
    {
        return parse_address(dest);
    }
    normalize_name(dest)
        .map(Dest::Name)
        .map_err(RuleProblem::BadName)
}

fn parse_address(dest: &str) -> Result<Dest, RuleProblem> {
    let bad = || RuleProblem::BadAddress(dest.to_owned());
    if dest.contains('/') {
        let given: Ipv4Net = dest.parse().map_err(|_| bad())?;
        let network = given.trunc();
        if network != given {
            return Err(RuleProblem::HostBits { given, network });
        }
        return Ok(Dest::Cidr(network));
    }
    dest.parse().map(Dest::Ip).map_err(|_| bad())
}

/// A name that [`normalize_name`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty; a name has at least one label")]
    Empty,
    #[error("{0:?} is an IP address, not a name")]
    IpLiteral(String),
    #[error("{0:?} is not a valid internationalized name (UTS-46)")]
    Idna(String),
    #[error("{0:?} has an empty label; labels are 1 to 63 bytes")]
    EmptyLabel(String),
    #[error("{0:?} has a label longer than 63 bytes")]
    LabelTooLong(String),
    #[error("{name:?} is {len} bytes long; names are at most 253")]
    TooLong { name: String, len: usize },
    #[error("{name:?} contains {ch:?}; labels hold only letters, digits, '-' and '_'")]
    BadChar { name: String, ch: char },
}

/// Longest name the errors quote, so a hostile SNI cannot flood a log line.
const QUOTE_MAX: usize = 80;

/// A name as errors and reasons quote it: at most [`QUOTE_MAX`] bytes.
fn quote(s: &str) -> String {
    quote_within(s, QUOTE_MAX)
}

/// A guest-chosen string as a log line quotes it: at most `max` bytes (cut at a character
/// boundary), marked with `...` when cut.
pub(crate) fn quote_within(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The canonical form of a DNS name: lowercase, without its trailing dot, IDNA (UTS-46)
/// A-labels, labels of 1 to 63 bytes of `[a-z0-9-_]`, at most 253 bytes.
///
/// IP literals are refused, including the legacy forms `inet_aton` accepts (`127.1`,
/// `0x7f.1`, `2130706433`): a name whose last label is a number is an address to every
/// guest libc, so it must never pass as a name.
pub fn normalize_name(name: &str) -> Result<String, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let unbracketed = name
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(name);
    if unbracketed.parse::<Ipv6Addr>().is_ok() {
        return Err(NameError::IpLiteral(quote(name)));
    }
    let ascii = Uts46::new()
        .to_ascii(
            name.as_bytes(),
            AsciiDenyList::EMPTY,
            Hyphens::Allow,
            DnsLength::Ignore,
        )
        .map_err(|_| NameError::Idna(quote(name)))?;
    let ascii = ascii.to_ascii_lowercase();
    let bare = ascii.strip_suffix('.').unwrap_or(&ascii);
    if bare.is_empty() {
        return Err(NameError::Empty);
    }
    if bare.parse::<Ipv4Addr>().is_ok() {
        return Err(NameError::IpLiteral(quote(name)));
    }
    if bare.len() > 253 {
        return Err(NameError::TooLong {
            name: quote(name),
            len: bare.len(),
        });
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel(quote(name)));
        }
        if label.len() > 63 {
            return Err(NameError::LabelTooLong(quote(name)));
        }
        if let Some(ch) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(NameError::BadChar {
                name: quote(name),
                ch,
            });
        }
    }
    let last = bare.rsplit('.').next().unwrap_or(bare);
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if hex || last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NameError::IpLiteral(quote(name)));
    }
    Ok(bare.to_owned())
}

/// A domain rule's name, as the one matcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePattern {
    /// Exactly this normalized name.
    Exact(String),
    /// Any name strictly below this normalized suffix, at any depth; not the suffix itself.
    Wildcard(String),
}

/// The one name matcher, shared by the policy, DNS and the SNI/`Host` checks. Both inputs
/// must already be normalized ([`normalize_name`]).
///
/// `Wildcard("example.com")` matches `a.example.com` and `a.b.example.com`, and not
/// `example.com`, `evilexample.com` or `example.com.evil.test`.
pub fn name_matches(pattern: &NamePattern, name: &str) -> bool {
    match pattern {
        NamePattern::Exact(exact) => name == exact,
        NamePattern::Wildcard(suffix) => below_suffix(suffix, name),
    }
}

/// `name` is `<one or more labels>.<suffix>`.
fn below_suffix(suffix: &str, name: &str) -> bool {
    !suffix.is_empty()
        && name
            .strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|labels| !labels.is_empty())
}

const METADATA: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
];

/// Ranges that never reach the public internet: RFC 1918, CGNAT, IETF
/// protocol assignments, benchmarking, multicast and reserved (with broadcast).
const PRIVATE: [(Ipv4Addr, u8); 8] = [
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

fn in_range(ip: Ipv4Addr, (base, len): (Ipv4Addr, u8)) -> bool {
    Ipv4Net::new(base, len).is_ok_and(|net| net.contains(&ip))
}

/// The one group an address belongs to. Metadata addresses are checked before the
/// link-local and CGNAT ranges that contain them; the gateway address is the host (it maps
/// to the host's own loopback), not just another address of the box's subnet.
pub fn classify(ip: Ipv4Addr, subnet: &Subnet) -> Group {
    if METADATA.contains(&ip) {
        Group::Metadata
    } else if ip == subnet.gateway_ip {
        Group::Host
    } else if ip.is_loopback() || in_range(ip, (Ipv4Addr::UNSPECIFIED, 8)) {
        // A host socket connecting to 0.0.0.0/8 reaches the host itself.
        Group::Loopback
    } else if ip.is_link_local() {
        Group::LinkLocal
    } else if PRIVATE.iter().any(|r| in_range(ip, *r))
        || in_range(ip, (subnet.guest_ip, subnet.prefix_len))
    {
        Group::Private
    } else {
        Group::Public
    }
}

/// What to do with a connection or query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Allow,
    Deny,
    /// Accept the guest's connection, read its first flight, then call
    /// [`Policy::decide_authority`]. Only ever returned for TCP.
    DeferL7,
}

/// A verdict with the reason the decision log records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: String,
    /// The text of the rule that decided, if a rule did.
    pub rule: Option<String>,
}

impl Decision {
    fn new(verdict: Verdict, reason: impl Into<String>) -> Decision {
        Decision {
            verdict,
            reason: reason.into(),
            rule: None,
        }
    }

    fn by_rule(rule: &Rule) -> Decision {
        let verdict = match rule.action {
            Action::Allow => Verdict::Allow,
            Action::Deny => Verdict::Deny,
        };
        Decision {
            verdict,
            reason: format!("{} rule {}", rule.action, rule.text),
            rule: Some(rule.text.clone()),
        }
    }

    fn allow(reason: impl Into<String>) -> Decision {
        Decision::new(Verdict::Allow, reason)
    }

    fn deny(reason: impl Into<String>) -> Decision {
        Decision::new(Verdict::Deny, reason)
    }
}

const ALLOW_LIST_MISS: &str = "allow-list: no rule allows it";
/// DNS over TLS and over QUIC.
const DOT_PORT: u16 = 853;
const DEFAULT_DOT: &str =
    "default: port 853 (dns over tls or quic) is denied; the box's dns is its resolver";
const NOT_RESOLVED: &str = "not resolved by this box's DNS";
const NO_UDP: &str = "domain rules never open UDP";
const DEFAULT_PUBLIC: &str = "default: public internet";

/// The parsed rules of one box, and the decisions made from them.
#[derive(Debug, Clone)]
pub struct Policy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    subnet: Subnet,
}

impl Policy {
    /// Parses every rule; the first bad one is the error.
    pub fn new(rules: &Rules, subnet: &Subnet) -> Result<Policy, RuleError> {
        let parse = |action, texts: &[String]| {
            texts
                .iter()
                .map(|t| Rule::parse(action, t))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Policy {
            allow: parse(Action::Allow, &rules.allow)?,
            deny: parse(Action::Deny, &rules.deny)?,
            subnet: subnet.clone(),
        })
    }

    /// True as soon as one allow rule exists: then only what an allow rule names is
    /// reachable.
    pub fn allow_list_mode(&self) -> bool {
        !self.allow.is_empty()
    }

    /// The group of `ip` in this box's subnet.
    pub fn classify(&self, ip: Ipv4Addr) -> Group {
        classify(ip, &self.subnet)
    }

    fn addr_rule(
        rules: &[Rule],
        ip: Ipv4Addr,
        group: Group,
        port: u16,
        proto: Proto,
    ) -> Option<&Rule> {
        rules
            .iter()
            .find(|r| r.matches_addr(ip, group) && r.scope_matches(Some(port), Some(proto)))
    }

    fn name_rule<'a>(
        rules: &'a [Rule],
        name: &str,
        port: Option<u16>,
        proto: Option<Proto>,
    ) -> Option<&'a Rule> {
        rules
            .iter()
            .find(|r| r.matches_name(name) && r.scope_matches(port, proto))
    }

    /// A deny rule that forbids the name outright, whatever the port: the rules that
    /// keep the name from being resolved at all. A port-scoped deny (`evil.test:25`) only
    /// closes that port.
    pub(crate) fn name_denied(&self, name: &str) -> Option<&Rule> {
        self.deny
            .iter()
            .find(|r| r.is_unrestricted() && r.matches_name(name))
    }

    /// The allow rule that admits `name` on `port`/`proto`, unless a deny rule closes it.
    fn name_allowed(&self, name: &str, port: u16, proto: Proto) -> Option<&Rule> {
        if Self::name_rule(&self.deny, name, Some(port), Some(proto)).is_some() {
            return None;
        }
        Self::name_rule(&self.allow, name, Some(port), Some(proto))
    }

    /// The decision for a new connection (a TCP SYN or a UDP flow) to `dst:port`. `names`
    /// are the names this box's DNS pinned to `dst` ([`PinSet::lookup`]).
    pub fn decide_connect(
        &self,
        dst: Ipv4Addr,
        port: u16,
        proto: Proto,
        names: &[String],
    ) -> Decision {
        let group = self.classify(dst);
        if let Some(rule) = Self::addr_rule(&self.deny, dst, group, port, proto) {
            return Decision::by_rule(rule);
        }
        let denied_names: Vec<&Rule> = names
            .iter()
            .filter_map(|n| Self::name_rule(&self.deny, n, Some(port), Some(proto)))
            .collect();
        if let Some(rule) = denied_names.first()
            && denied_names.len() == names.len()
        {
            return Decision::by_rule(rule);
        }
        if let Some(rule) = Self::addr_rule(&self.allow, dst, group, port, proto) {
            // A deny by name still wins on an address the rule opens: when the box
            // resolved a denied name to it, the first flight must name another.
            return match (denied_names.is_empty(), proto) {
                (true, _) => Decision::by_rule(rule),
                (false, Proto::Udp) => {
                    Decision::deny("udp to an address shared with a denied name")
                }
                (false, Proto::Tcp) => Decision::new(
                    Verdict::DeferL7,
                    "address shared with a denied name: checking sni/host",
                ),
            };
        }
        let allowed: Vec<&Rule> = names
            .iter()
            .filter_map(|n| self.name_allowed(n, port, proto))
            .collect();
        if let Some(rule) = allowed.first() {
            if proto == Proto::Udp {
                return Decision::deny(NO_UDP);
            }
            if allowed.len() == names.len() {
                return Decision::by_rule(rule);
            }
            return Decision::new(
                Verdict::DeferL7,
                "address shared with names no rule allows: checking sni/host",
            );
        }
        if self.allow_list_mode() {
            let has_domain_allow = self.allow.iter().any(Rule::is_domain);
            let reason = if names.is_empty() && has_domain_allow {
                NOT_RESOLVED
            } else {
                ALLOW_LIST_MISS
            };
            return Decision::deny(reason);
        }
        match group {
            // Encrypted DNS would resolve names this box's DNS never sees, so nothing it
            // returns could be pinned; it needs an explicit rule. (DoH is ordinary HTTPS:
            // its answers are never pinned either.)
            Group::Public if port == DOT_PORT => Decision::deny(DEFAULT_DOT),
            Group::Public if denied_names.is_empty() => Decision::allow(DEFAULT_PUBLIC),
            Group::Public if proto == Proto::Udp => {
                Decision::deny("udp to an address shared with a denied name")
            }
            Group::Public => Decision::new(
                Verdict::DeferL7,
                "address shared with a denied name: checking sni/host",
            ),
            other => Decision::deny(format!("default: {other} addresses are denied")),
        }
    }

    /// The second half of a [`Verdict::DeferL7`]: the SNI or HTTP `Host` (port already
    /// stripped) the guest sent on a TCP connection to `dst:port`. The authority must be a
    /// name pinned to `dst`, so a guest cannot borrow an allowed name for an address that
    /// name never resolved to.
    pub fn decide_authority(
        &self,
        dst: Ipv4Addr,
        port: u16,
        authority: Option<&str>,
        names: &[String],
    ) -> Decision {
        let group = self.classify(dst);
        if let Some(rule) = Self::addr_rule(&self.deny, dst, group, port, Proto::Tcp) {
            return Decision::by_rule(rule);
        }
        let addr_allow = Self::addr_rule(&self.allow, dst, group, port, Proto::Tcp);
        let default_open = !self.allow_list_mode() && group == Group::Public && port != DOT_PORT;
        let open = default_open || addr_allow.is_some();
        let Some(raw) = authority else {
            let every_name_allowed = !names.is_empty()
                && names.iter().all(|n| {
                    Self::name_rule(&self.deny, n, Some(port), Some(Proto::Tcp)).is_none()
                        && (open
                            || Self::name_rule(&self.allow, n, Some(port), Some(Proto::Tcp))
                                .is_some())
                });
            return if every_name_allowed {
                Decision::allow("no sni or host, but every name pinned to this address is allowed")
            } else {
                Decision::deny("no sni or host to check")
            };
        };
        let Ok(name) = normalize_name(raw) else {
            return Decision::deny(format!("sni/host {} is not a valid name", quote(raw)));
        };
        if !names.contains(&name) {
            return Decision::deny(format!(
                "sni/host {} was not resolved to this address",
                quote(&name)
            ));
        }
        if let Some(rule) = Self::name_rule(&self.deny, &name, Some(port), Some(Proto::Tcp)) {
            return Decision::by_rule(rule);
        }
        if let Some(rule) = Self::name_rule(&self.allow, &name, Some(port), Some(Proto::Tcp)) {
            return Decision::by_rule(rule);
        }
        if let Some(rule) = addr_allow {
            return Decision::by_rule(rule);
        }
        if default_open {
            return Decision::allow(DEFAULT_PUBLIC);
        }
        if self.allow_list_mode() {
            Decision::deny(ALLOW_LIST_MISS)
        } else {
            Decision::deny(format!("default: {group} addresses are denied"))
        }
    }

    /// May a DNS question for `name` be answered or forwarded at all. A denied name is
    /// answered NXDOMAIN locally and never leaves the host, so a guest cannot tunnel data
    /// out through the labels of names it is not allowed to reach.
    pub fn decide_query(&self, name: &str) -> Decision {
        let name = match normalize_name(name) {
            Ok(n) => n,
            Err(e) => return Decision::deny(format!("invalid name: {e}")),
        };
        if let Some(rule) = self.name_denied(&name) {
            return Decision::by_rule(rule);
        }
        if !self.allow_list_mode() {
            return Decision::allow("default: names may be resolved");
        }
        if let Some(rule) = Self::name_rule(&self.allow, &name, None, None) {
            return Decision::by_rule(rule);
        }
        // An allow rule for a whole group answers for the names that denote it: the
        // host's alias resolves when the host may be reached, and any name when the
        // public internet may be (refusing its DNS would protect nothing then: the box
        // can reach any public address already).
        let group_rule = |g: Group| {
            self.allow
                .iter()
                .find(|r| matches!(r.dest, Dest::Group(x) if x == g))
        };
        if name == crate::config::HOST_ALIAS
            && let Some(rule) = group_rule(Group::Host)
        {
            return Decision::by_rule(rule);
        }
        if let Some(rule) = group_rule(Group::Public) {
            return Decision::by_rule(rule);
        }
        Decision::deny(ALLOW_LIST_MISS)
    }

    /// The rebinding filter for upstream DNS answers: a public address, or one an explicit
    /// address rule allows, and never one a deny address rule covers outright.
    pub fn answer_allowed(&self, ip: Ipv4Addr) -> bool {
        let group = self.classify(ip);
        let denied = self
            .deny
            .iter()
            .any(|r| r.is_unrestricted() && r.matches_addr(ip, group));
        let allowed =
            group == Group::Public || self.allow.iter().any(|r| r.matches_addr(ip, group));
        allowed && !denied
    }
}

/// Shortest life of a pin: longer than most answers' TTLs, so a guest that caches an
/// answer for its TTL can still connect a little after it.
const MIN_PIN: Duration = Duration::from_secs(300);
/// Longest life of a pin, whatever the TTL says.
const MAX_PIN: Duration = Duration::from_secs(7 * 24 * 3600);
/// Names kept per address (a CDN address may serve thousands).
const MAX_NAMES_PER_IP: usize = 32;

/// Address -> names that this box's own DNS answers returned for it, each with an expiry.
/// Bounded in addresses and in names per address; when full, the entry expiring soonest
/// goes.
#[derive(Debug, Clone)]
pub struct PinSet {
    max_ips: usize,
    by_ip: HashMap<Ipv4Addr, Vec<(String, Instant)>>,
}

impl PinSet {
    pub fn new(max_ips: usize) -> Self {
        PinSet {
            max_ips,
            by_ip: HashMap::new(),
        }
    }

    /// Pins `name` to `ip` until `now + max(ttl, 300 s)`. An existing pin is only ever
    /// extended.
    pub fn insert(&mut self, ip: Ipv4Addr, name: &str, ttl: Duration, now: Instant) {
        let Some(expiry) = now.checked_add(ttl.clamp(MIN_PIN, MAX_PIN)) else {
            return;
        };
        if self.max_ips == 0 {
            return;
        }
        if !self.by_ip.contains_key(&ip) && self.by_ip.len() >= self.max_ips {
            self.by_ip
                .retain(|_, names| names.iter().any(|(_, exp)| *exp > now));
            if self.by_ip.len() >= self.max_ips {
                let soonest = self
                    .by_ip
                    .iter()
                    .filter_map(|(ip, names)| names.iter().map(|(_, e)| *e).max().map(|e| (e, *ip)))
                    .min();
                if let Some((_, victim)) = soonest {
                    self.by_ip.remove(&victim);
                }
            }
        }
        let names = self.by_ip.entry(ip).or_default();
        if let Some(entry) = names.iter_mut().find(|(n, _)| n == name) {
            entry.1 = entry.1.max(expiry);
            return;
        }
        names.retain(|(_, exp)| *exp > now);
        if names.len() >= MAX_NAMES_PER_IP
            && let Some(soonest) = names
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, exp))| *exp)
                .map(|(i, _)| i)
        {
            names.swap_remove(soonest);
        }
        names.push((name.to_owned(), expiry));
    }

    /// The unexpired names pinned to `ip`, sorted.
    pub fn lookup(&self, ip: Ipv4Addr, now: Instant) -> Vec<String> {
        let mut names: Vec<String> = self
            .by_ip
            .get(&ip)
            .into_iter()
            .flatten()
            .filter(|(_, exp)| *exp > now)
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// Addresses held, expired or not (for stats).
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{QueryOutcome, Resolver};
    use crate::l7::{self, Peek};
    use Verdict::{Allow, DeferL7, Deny};

    /// A policy from space-separated allow and deny rules.
    fn policy(allow: &str, deny: &str) -> Policy {
        let rules = Rules {
            allow: list(allow),
            deny: list(deny),
        };
        Policy::new(&rules, &Subnet::default()).unwrap()
    }

    #[test]
    fn ranges_never_open_the_host_its_loopback_or_metadata_and_0_0_0_0_is_loopback() {
        let p = policy("10.0.0.0/8 100.64.0.0/10 0.0.0.0/0", "");
        for (dst, group) in [
            ("10.0.2.2", Group::Host),
            ("100.100.100.200", Group::Metadata),
            ("127.0.0.1", Group::Loopback),
            ("0.0.0.0", Group::Loopback),
            ("0.1.2.3", Group::Loopback),
        ] {
            assert_eq!(p.classify(ip(dst)), group, "{dst}");
            let d = p.decide_connect(ip(dst), 80, Proto::Tcp, &[]);
            assert_eq!(d.verdict, Deny, "{dst}: {d:?}");
            assert!(!p.answer_allowed(ip(dst)), "{dst}");
        }
        assert_eq!(
            p.decide_connect(ip("10.1.2.3"), 80, Proto::Tcp, &[])
                .verdict,
            Allow
        );
        // The group or the exact address still opens them.
        let p = policy("host 169.254.169.254", "");
        assert_eq!(
            p.decide_connect(ip("10.0.2.2"), 80, Proto::Tcp, &[])
                .verdict,
            Allow
        );
        assert_eq!(
            p.decide_connect(ip("169.254.169.254"), 80, Proto::Tcp, &[])
                .verdict,
            Allow
        );
    }

    #[test]
    fn a_denied_name_holds_on_an_address_an_address_rule_opens() {
        let p = policy("203.0.113.0/24", "evil.test");
        let names = vec!["evil.test".to_string(), "good.test".to_string()];
        let dst = ip("203.0.113.9");
        assert_eq!(
            p.decide_connect(dst, 443, Proto::Tcp, &names).verdict,
            DeferL7
        );
        assert_eq!(p.decide_connect(dst, 443, Proto::Udp, &names).verdict, Deny);
        assert_eq!(
            p.decide_authority(dst, 443, Some("evil.test"), &names)
                .verdict,
            Deny
        );
        let d = p.decide_authority(dst, 443, Some("good.test"), &names);
        assert_eq!(
            (d.verdict, d.rule.as_deref()),
            (Allow, Some("203.0.113.0/24"))
        );
        assert_eq!(p.decide_authority(dst, 443, None, &names).verdict, Deny);
        // Without a denied name pinned there, the address rule decides at once.
        assert_eq!(p.decide_connect(dst, 443, Proto::Tcp, &[]).verdict, Allow);
    }

    #[test]
    fn dns_over_tls_and_quic_need_an_explicit_rule() {
        let p = policy("", "");
        for proto in [Proto::Tcp, Proto::Udp] {
            let d = p.decide_connect(ip("198.51.100.9"), 853, proto, &[]);
            assert_eq!(d.verdict, Deny);
            assert!(d.reason.contains("853"), "{d:?}");
        }
        assert_eq!(
            p.decide_connect(ip("198.51.100.9"), 443, Proto::Tcp, &[])
                .verdict,
            Allow
        );
        let p = policy("", "x.test");
        let names = vec!["x.test".to_string(), "y.test".to_string()];
        assert_eq!(
            p.decide_authority(ip("198.51.100.9"), 853, Some("y.test"), &names)
                .verdict,
            Deny
        );
        let p = policy("198.51.100.9:853", "");
        assert_eq!(
            p.decide_connect(ip("198.51.100.9"), 853, Proto::Tcp, &[])
                .verdict,
            Allow
        );
    }

    #[test]
    fn group_allow_rules_let_the_names_of_their_group_resolve() {
        // Only IP rules: no name resolves (nothing to exfiltrate through).
        let p = policy("203.0.113.5", "");
        assert_eq!(p.decide_query("example.com").verdict, Deny);
        assert_eq!(p.decide_query(crate::config::HOST_ALIAS).verdict, Deny);
        // `host` lets the host's alias resolve, and nothing else.
        let p = policy("host", "");
        assert_eq!(p.decide_query("host.boxlite.internal.").verdict, Allow);
        assert_eq!(p.decide_query("example.com").verdict, Deny);
        // `public`: any name, except what a deny rule names.
        let p = policy("public", "evil.test");
        let d = p.decide_query("www.example.com");
        assert_eq!((d.verdict, d.rule.as_deref()), (Allow, Some("public")));
        assert_eq!(p.decide_query("evil.test").verdict, Deny);
    }

    fn list(words: &str) -> Vec<String> {
        words.split_whitespace().map(str::to_owned).collect()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// `"198.51.100.5:443/tcp"` as a destination.
    fn to(s: &str) -> (Ipv4Addr, u16, Proto) {
        let (addr, proto) = s.split_once('/').unwrap();
        let (addr, port) = addr.split_once(':').unwrap();
        let proto = if proto == "udp" {
            Proto::Udp
        } else {
            Proto::Tcp
        };
        (ip(addr), port.parse().unwrap(), proto)
    }

    fn name(s: &str) -> Dest {
        Dest::Name(s.into())
    }

    fn parse(text: &str) -> Rule {
        Rule::parse(Action::Allow, text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn valid_rules_parse_into_dest_ports_and_proto() {
        use Proto::{Tcp, Udp};
        let cidr = |s: &str| Dest::Cidr(s.parse().unwrap());
        #[rustfmt::skip]
        let cases = [
            ("example.com", name("example.com"), None, None),
            ("Example.COM.", name("example.com"), None, None),
            ("Bücher.example", name("xn--bcher-kva.example"), None, None),
            ("_dmarc.example.com", name("_dmarc.example.com"), None, None),
            ("*.example.com:443", Dest::Wildcard("example.com".into()), Some((443, 443)), None),
            ("api.example.com:8000-9000/tcp", name("api.example.com"), Some((8000, 9000)), Some(Tcp)),
            ("10.0.0.0/8", cidr("10.0.0.0/8"), None, None),
            ("10.0.0.0/8:22/TCP", cidr("10.0.0.0/8"), Some((22, 22)), Some(Tcp)),
            ("203.0.113.7:53/udp", Dest::Ip(ip("203.0.113.7")), Some((53, 53)), Some(Udp)),
            ("public", Dest::Group(Group::Public), None, None),
            ("PRIVATE", Dest::Group(Group::Private), None, None),
            ("loopback", Dest::Group(Group::Loopback), None, None),
            ("link-local:80", Dest::Group(Group::LinkLocal), Some((80, 80)), None),
            ("metadata", Dest::Group(Group::Metadata), None, None),
            ("host:1-65535/udp", Dest::Group(Group::Host), Some((1, 65535)), Some(Udp)),
        ];
        for (text, dest, ports, proto) in cases {
            let rule = parse(text);
            assert_eq!(
                (&rule.dest, rule.ports, rule.proto),
                (&dest, ports, proto),
                "{text}"
            );
            assert_eq!(rule.text, text, "rule text is kept verbatim");
        }
    }

    type ProblemCheck = fn(&RuleProblem) -> bool;

    #[test]
    fn invalid_rules_are_rejected_with_an_error_naming_the_rule() {
        use Action::Deny as D;
        use RuleProblem as P;
        #[rustfmt::skip]
        let cases: [(Action, &str, ProblemCheck); 30] = [
            (D, "", |p| *p == P::Empty),
            (D, " example.com", |p| *p == P::Whitespace),
            (D, "exa mple.com", |p| *p == P::Whitespace),
            (D, "::1", |p| matches!(p, P::Ipv6(_))),
            (D, "2001:db8::/32", |p| matches!(p, P::Ipv6(_))),
            (D, "[::1]:443", |p| matches!(p, P::Ipv6(_))),
            (D, "example.com:0", |p| *p == P::PortZero),
            (D, "example.com:90-80", |p| *p == P::ReversedRange(90, 80)),
            (D, "example.com:http", |p| matches!(p, P::BadPort(_))),
            (D, "example.com:65536", |p| matches!(p, P::BadPort(_))),
            (D, "example.com:", |p| matches!(p, P::BadPort(_))),
            (D, "example.com:1-", |p| matches!(p, P::BadPort(_))),
            (D, ":443", |p| *p == P::EmptyDest),
            (D, "example.com/quic", |p| matches!(p, P::BadProto(_))),
            (D, "10.0.0.0/8/sctp", |p| matches!(p, P::BadProto(_))),
            (D, "example.com/", |p| matches!(p, P::BadProto(_))),
            (D, "*", |p| *p == P::BareWildcard),
            (D, "*:443", |p| *p == P::BareWildcard),
            (D, "a.*.com", |p| *p == P::MisplacedWildcard),
            (D, "*.*.com", |p| *p == P::MisplacedWildcard),
            (D, "ex*ample.com", |p| *p == P::MisplacedWildcard),
            (D, "*.", |p| matches!(p, P::BadName(NameError::Empty))),
            (D, "256.0.0.1", |p| matches!(p, P::BadAddress(_))),
            (D, "1.2.3", |p| matches!(p, P::BadAddress(_))),
            (D, "10.0.0.0/33", |p| matches!(p, P::BadAddress(_))),
            (D, "10.0.0.1/8", |p| matches!(p, P::HostBits { .. })),
            (D, "0x7f.1", |p| matches!(p, P::BadName(NameError::IpLiteral(_)))),
            (D, "exa$mple.com", |p| matches!(p, P::BadName(NameError::BadChar { .. }))),
            (Action::Allow, "api.example.com/udp", |p| *p == P::UdpDomainAllow),
            (Action::Allow, "*.example.com:443/udp", |p| *p == P::UdpDomainAllow),
        ];
        for (action, text, check) in cases {
            let err = Rule::parse(action, text).expect_err(text);
            assert!(check(&err.problem), "{text}: got {:?}", err.problem);
            let msg = err.to_string();
            assert!(msg.contains(&format!("{text:?}")), "{msg}");
            assert!(msg.contains("DEST[:PORT|:LOW-HIGH][/tcp|/udp]"), "{msg}");
        }
        // As a deny rule the same text is fine: it closes UDP to those names.
        assert!(Rule::parse(Action::Deny, "api.example.com/udp").is_ok());
    }

    #[test]
    fn policy_new_reports_the_first_bad_rule() {
        let rules = Rules {
            allow: list("example.com a.*.com"),
            deny: vec![],
        };
        assert_eq!(
            Policy::new(&rules, &Subnet::default()).unwrap_err().text,
            "a.*.com"
        );
    }

    type NameCheck = fn(&NameError) -> bool;

    #[test]
    fn names_normalize_to_one_canonical_form() {
        let good = [
            ("Example.COM", "example.com"),
            ("example.com.", "example.com"),
            ("Bücher.example", "xn--bcher-kva.example"),
            ("XN--BCHER-KVA.example.", "xn--bcher-kva.example"),
            ("_srv._tcp.Example.com", "_srv._tcp.example.com"),
            ("r3---sn-abc.example", "r3---sn-abc.example"),
            ("ＥＸＡＭＰＬＥ.com", "example.com"),
        ];
        for (raw, want) in good {
            assert_eq!(normalize_name(raw).as_deref(), Ok(want), "{raw}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        use NameError as E;
        #[rustfmt::skip]
        let bad: [(&str, NameCheck); 18] = [
            ("", |e| *e == E::Empty),
            (".", |e| *e == E::Empty),
            ("127.0.0.1", |e| matches!(e, E::IpLiteral(_))),
            ("127.0.0.1.", |e| matches!(e, E::IpLiteral(_))),
            ("127.1", |e| matches!(e, E::IpLiteral(_))),
            ("0x7f.0.0.1", |e| matches!(e, E::IpLiteral(_))),
            ("2130706433", |e| matches!(e, E::IpLiteral(_))),
            ("example.123", |e| matches!(e, E::IpLiteral(_))),
            ("１２７.０.０.１", |e| matches!(e, E::IpLiteral(_))),
            ("::1", |e| matches!(e, E::IpLiteral(_))),
            ("[::1]", |e| matches!(e, E::IpLiteral(_))),
            ("a..b", |e| matches!(e, E::EmptyLabel(_))),
            ("example.com..", |e| matches!(e, E::EmptyLabel(_))),
            (&long_label, |e| matches!(e, E::LabelTooLong(_))),
            (&long_name, |e| matches!(e, E::TooLong { .. })),
            ("exa mple.com", |e| matches!(e, E::BadChar { ch: ' ', .. })),
            ("a/b.com", |e| matches!(e, E::BadChar { ch: '/', .. })),
            ("*.example.com", |e| matches!(e, E::BadChar { ch: '*', .. })),
        ];
        for (raw, check) in bad {
            let err = normalize_name(raw).expect_err(raw);
            assert!(check(&err), "{raw}: got {err:?}");
        }
    }

    #[test]
    fn name_errors_quote_a_bounded_prefix_of_the_input() {
        let hostile = format!("{}!", "a".repeat(5000));
        let msg = normalize_name(&hostile).unwrap_err().to_string();
        assert!(msg.len() < 300, "{msg}");
    }

    /// Memo case 28: one wildcard, and the matcher, the DNS resolver, the connect decision
    /// and the SNI check all give the same answer.
    #[test]
    fn wildcard_semantics_agree_across_matcher_dns_connect_and_sni() {
        let cases = [
            ("example.com", false),
            ("example.com.", false),
            ("a.example.com", true),
            ("a.b.example.com", true),
            ("evilexample.com", false),
            ("example.com.evil.test", false),
            ("a.example.com.evil.test", false),
            ("A.Example.COM", true),
            ("a.example.com.", true),
            ("Bücher.Example.com", true),
            ("xn--bcher-kva.example.com", true),
            ("bücher.example", false),
        ];
        let pattern = NamePattern::Wildcard("example.com".into());
        let allow = policy("*.example.com", "");
        let deny = policy("", "*.example.com");
        let resolver = Resolver::new(&[], &Subnet::default()).unwrap();
        let dst = ip("198.51.100.7");
        for (raw, want) in cases {
            let norm = normalize_name(raw).unwrap();
            let pinned = vec![norm.clone()];
            let allowed = |d: Decision| d.verdict == Allow;
            assert_eq!(name_matches(&pattern, &norm), want, "matcher: {raw}");
            assert_eq!(allowed(allow.decide_query(raw)), want, "query: {raw}");
            assert_eq!(!allowed(deny.decide_query(raw)), want, "deny query: {raw}");
            let connect = allow.decide_connect(dst, 443, Proto::Tcp, &pinned);
            assert_eq!(allowed(connect), want, "connect: {raw}");
            let connect = deny.decide_connect(dst, 443, Proto::Tcp, &pinned);
            assert_eq!(!allowed(connect), want, "deny connect: {raw}");

            // DNS and SNI as a guest's stub resolver and TLS library put the name: A-labels,
            // case as typed.
            let wire = hickory_proto::rr::Name::from_utf8(raw).unwrap().to_ascii();
            let query = crate::dns::tests::query(&wire, hickory_proto::rr::RecordType::A);
            let outcome = resolver.on_query(&query, &allow, &mut PinSet::new(4), Instant::now());
            assert_eq!(
                matches!(outcome, QueryOutcome::Forward(_)),
                want,
                "dns: {raw}"
            );

            let Peek::Tls { sni } = l7::peek(&l7::tests::client_hello(Some(&wire))) else {
                panic!("not tls: {raw}");
            };
            assert_eq!(sni.as_deref(), Some(norm.as_str()), "sni: {raw}");
            let authority = allow.decide_authority(dst, 443, sni.as_deref(), &pinned);
            assert_eq!(allowed(authority), want, "sni: {raw}");
            let authority = deny.decide_authority(dst, 443, sni.as_deref(), &pinned);
            assert_eq!(!allowed(authority), want, "deny sni: {raw}");
        }
    }

    #[test]
    fn every_address_falls_in_exactly_the_documented_group() {
        use Group::*;
        let s = Subnet {
            guest_ip: ip("192.0.2.15"),
            gateway_ip: ip("192.0.2.2"),
            dns_ip: ip("192.0.2.3"),
            ..Subnet::default()
        };
        #[rustfmt::skip]
        let cases = [
            ("127.0.0.1", Loopback), ("127.255.255.254", Loopback),
            ("169.254.169.254", Metadata), ("169.254.170.2", Metadata),
            ("100.100.100.200", Metadata), ("169.254.1.1", LinkLocal),
            ("192.0.2.2", Host), ("192.0.2.3", Private), ("192.0.2.99", Private),
            ("10.0.2.2", Private), ("10.255.0.1", Private),
            ("172.16.0.1", Private), ("172.31.255.255", Private), ("172.32.0.1", Public),
            ("192.168.1.1", Private), ("100.64.0.1", Private), ("100.127.255.255", Private),
            ("100.128.0.1", Public), ("0.0.0.0", Loopback), ("192.0.0.9", Private),
            ("198.18.0.1", Private), ("198.19.255.255", Private), ("224.0.0.251", Private),
            ("239.255.255.250", Private), ("240.0.0.1", Private), ("255.255.255.255", Private),
            ("198.51.100.7", Public), ("203.0.113.9", Public), ("8.8.8.8", Public),
        ];
        for (addr, want) in cases {
            assert_eq!(classify(ip(addr), &s), want, "{addr}");
        }
        assert_eq!(classify(ip("10.0.2.2"), &Subnet::default()), Host);
    }

    #[test]
    fn decide_connect_follows_deny_then_allow_then_default() {
        let shared = "address shared with names no rule allows: checking sni/host";
        let denied_shared = "address shared with a denied name: checking sni/host";
        let ab = "a.example.com b.example.com";
        // (allow rules, deny rules, destination, pinned names, verdict, reason)
        #[rustfmt::skip]
        let cases = [
            // 1. Deny rules on the address, scoped by port and protocol.
            ("", "203.0.113.7", "203.0.113.7:443/tcp", "", Deny, "deny rule 203.0.113.7"),
            ("10.0.0.0/8", "10.0.0.0/8:22", "10.1.1.1:22/tcp", "", Deny, "deny rule 10.0.0.0/8:22"),
            ("10.0.0.0/8", "10.0.0.0/8:22", "10.1.1.1:80/tcp", "", Allow, "allow rule 10.0.0.0/8"),
            ("", "203.0.113.0/24/udp", "203.0.113.9:53/udp", "", Deny, "deny rule 203.0.113.0/24/udp"),
            ("", "203.0.113.0/24/udp", "203.0.113.9:53/tcp", "", Allow, "default: public internet"),
            ("", "public", "8.8.8.8:53/udp", "", Deny, "deny rule public"),
            // 1. Every pinned name denied: that beats even an address allow.
            ("198.51.100.5", "evil.test", "198.51.100.5:443/tcp", "evil.test", Deny, "deny rule evil.test"),
            ("", "*.evil.test", "198.51.100.5:443/tcp", "a.evil.test b.evil.test", Deny, "deny rule *.evil.test"),
            // 2. Address allows, groups included (memo case 17: the host needs `host`).
            ("198.51.100.0/24", "", "198.51.100.5:8080/tcp", "", Allow, "allow rule 198.51.100.0/24"),
            ("host:8000-9000", "", "10.0.2.2:8080/tcp", "", Allow, "allow rule host:8000-9000"),
            ("203.0.113.0/24:53/udp", "", "203.0.113.9:53/udp", "", Allow, "allow rule 203.0.113.0/24:53/udp"),
            // 3. Domain rules, through pinned names only (memo cases 16 and 29).
            ("api.example.com:443", "", "198.51.100.5:443/tcp", "api.example.com", Allow, "allow rule api.example.com:443"),
            ("api.example.com:443", "", "198.51.100.5:80/tcp", "api.example.com", Deny, "allow-list: no rule allows it"),
            ("api.example.com", "", "198.51.100.5:443/udp", "api.example.com", Deny, "domain rules never open UDP"),
            ("a.example.com", "", "198.51.100.5:443/tcp", ab, DeferL7, shared),
            ("*.example.com", "b.example.com", "198.51.100.5:443/tcp", ab, DeferL7, shared),
            // 4. The allow-list default (memo cases 1, 2 and 3).
            ("api.example.com", "", "203.0.113.99:443/tcp", "", Deny, "not resolved by this box's DNS"),
            ("api.example.com", "", "203.0.113.99:443/tcp", "evil.test", Deny, "allow-list: no rule allows it"),
            ("198.51.100.0/24", "", "203.0.113.1:443/tcp", "", Deny, "allow-list: no rule allows it"),
            // 4. The default posture (memo cases 9, 17 and 18).
            ("", "", "203.0.113.1:443/tcp", "", Allow, "default: public internet"),
            ("", "", "203.0.113.1:443/udp", "a.example.com", Allow, "default: public internet"),
            ("", "b.example.com", "203.0.113.1:443/tcp", ab, DeferL7, denied_shared),
            ("", "b.example.com", "203.0.113.1:443/udp", ab, Deny, "udp to an address shared with a denied name"),
            ("", "", "10.0.0.1:80/tcp", "", Deny, "default: private addresses are denied"),
            ("", "", "10.0.0.1:443/tcp", "rb.example.com", Deny, "default: private addresses are denied"),
            ("", "", "127.0.0.1:80/tcp", "", Deny, "default: loopback addresses are denied"),
            ("", "", "169.254.1.1:80/tcp", "", Deny, "default: link-local addresses are denied"),
            ("", "", "169.254.169.254:80/tcp", "", Deny, "default: metadata addresses are denied"),
            ("", "", "10.0.2.2:8080/udp", "", Deny, "default: host addresses are denied"),
        ];
        for (allow, deny, dest, pinned, verdict, reason) in cases {
            let (dst, port, proto) = to(dest);
            let d = policy(allow, deny).decide_connect(dst, port, proto, &list(pinned));
            let label = format!("allow [{allow}] deny [{deny}] -> {dest} pins [{pinned}]");
            assert_eq!(
                (&d.verdict, d.reason.as_str()),
                (&verdict, reason),
                "{label}"
            );
            let rule = reason
                .strip_prefix("allow rule ")
                .or(reason.strip_prefix("deny rule "));
            assert_eq!(d.rule.as_deref(), rule, "{label}");
        }
    }

    #[test]
    fn decide_authority_requires_a_pinned_allowed_name() {
        let ab = "a.example.com b.example.com";
        let every = "no sni or host, but every name pinned to this address is allowed";
        // (allow rules, deny rules, destination, authority, pinned names, verdict, reason)
        #[rustfmt::skip]
        let cases = [
            // No authority: only if every pinned name is allowed.
            ("*.example.com", "", "198.51.100.5:443", None, ab, Allow, every),
            ("a.example.com", "", "198.51.100.5:443", None, ab, Deny, "no sni or host to check"),
            ("", "b.example.com", "198.51.100.5:443", None, ab, Deny, "no sni or host to check"),
            ("a.example.com", "", "198.51.100.5:443", None, "", Deny, "no sni or host to check"),
            // Memo case 4: an allowed name on an address it never resolved to.
            ("api.example.com", "", "198.51.100.5:443", Some("api.example.com"), "evil.test", Deny,
                "sni/host api.example.com was not resolved to this address"),
            ("a.example.com", "", "198.51.100.5:443", Some("1.2.3.4"), ab, Deny,
                "sni/host 1.2.3.4 is not a valid name"),
            // Memo cases 5 and 6: a shared address.
            ("a.example.com", "", "198.51.100.5:443", Some("A.Example.com."), ab, Allow, "allow rule a.example.com"),
            ("a.example.com", "", "198.51.100.5:443", Some("b.example.com"), ab, Deny, "allow-list: no rule allows it"),
            ("a.example.com:443", "", "198.51.100.5:80", Some("a.example.com"), ab, Deny, "allow-list: no rule allows it"),
            // The default posture with a denied name on a shared address.
            ("", "b.example.com", "198.51.100.5:443", Some("b.example.com"), ab, Deny, "deny rule b.example.com"),
            ("", "b.example.com", "198.51.100.5:443", Some("a.example.com"), ab, Allow, "default: public internet"),
            ("", "b.example.com", "10.0.0.5:443", Some("a.example.com"), ab, Deny, "default: private addresses are denied"),
            // An address deny rule still holds at L7.
            ("*.example.com", "198.51.100.0/24:443", "198.51.100.5:443", Some("a.example.com"), ab, Deny,
                "deny rule 198.51.100.0/24:443"),
        ];
        for (allow, deny, dest, authority, pinned, verdict, reason) in cases {
            let (dst, port, _) = to(&format!("{dest}/tcp"));
            let d = policy(allow, deny).decide_authority(dst, port, authority, &list(pinned));
            let label = format!("allow [{allow}] deny [{deny}] -> {dest} {authority:?} [{pinned}]");
            assert_eq!(
                (&d.verdict, d.reason.as_str()),
                (&verdict, reason),
                "{label}"
            );
        }
    }

    #[test]
    fn decide_query_denies_by_deny_rule_or_allow_list_miss() {
        let miss = "allow-list: no rule allows it";
        let open = "default: names may be resolved";
        #[rustfmt::skip]
        let cases = [
            ("", "", "anything.example", Allow, open),
            ("", "evil.test", "evil.test", Deny, "deny rule evil.test"),
            ("", "evil.test", "EVIL.test.", Deny, "deny rule evil.test"),
            ("", "*.evil.test", "secretdata.evil.test", Deny, "deny rule *.evil.test"),
            // A port-scoped deny closes a port, not the name.
            ("", "evil.test:25", "evil.test", Allow, open),
            ("api.example.com", "", "secretdata.evil.test", Deny, miss),
            ("api.example.com:443", "", "api.example.com", Allow, "allow rule api.example.com:443"),
            ("*.example.com", "x.example.com", "x.example.com", Deny, "deny rule x.example.com"),
            ("10.0.0.0/8", "", "api.example.com", Deny, miss),
            ("", "", "127.0.0.1", Deny, "invalid name: \"127.0.0.1\" is an IP address, not a name"),
        ];
        for (allow, deny, qname, verdict, reason) in cases {
            let d = policy(allow, deny).decide_query(qname);
            assert_eq!(
                (&d.verdict, d.reason.as_str()),
                (&verdict, reason),
                "{qname}"
            );
        }
    }

    #[test]
    fn answer_filter_passes_public_and_explicitly_allowed_addresses_only() {
        #[rustfmt::skip]
        let cases = [
            ("", "", "198.51.100.5", true),
            ("", "", "127.0.0.1", false),
            ("", "", "10.0.0.1", false),
            ("", "", "169.254.169.254", false),
            ("", "", "10.0.2.2", false),
            ("10.0.0.0/8", "", "10.0.0.1", true),
            ("10.0.0.0/8:443", "", "10.0.0.1", true),
            ("private", "10.0.0.1", "10.0.0.1", false),
            ("private", "10.0.0.1", "10.0.0.2", true),
            ("", "198.51.100.0/24", "198.51.100.5", false),
            ("", "198.51.100.0/24:22", "198.51.100.5", true),
            ("api.example.com", "", "127.0.0.1", false),
        ];
        for (allow, deny, addr, want) in cases {
            let got = policy(allow, deny).answer_allowed(ip(addr));
            assert_eq!(got, want, "allow [{allow}] deny [{deny}] {addr}");
        }
    }

    #[test]
    fn allow_list_mode_starts_with_the_first_allow_rule() {
        assert!(!policy("", "evil.test").allow_list_mode());
        assert!(policy("public", "").allow_list_mode());
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn pins_live_for_the_longer_of_ttl_and_five_minutes() {
        let t0 = Instant::now();
        let a = ip("198.51.100.5");
        let mut pins = PinSet::new(8);
        pins.insert(a, "short.example", secs(10), t0);
        pins.insert(a, "long.example", secs(600), t0);
        assert_eq!(
            pins.lookup(a, t0 + secs(299)),
            list("long.example short.example")
        );
        assert_eq!(pins.lookup(a, t0 + secs(300)), list("long.example"));
        assert_eq!(pins.lookup(a, t0 + secs(600)), list(""));
        assert_eq!(pins.lookup(ip("198.51.100.6"), t0), list(""));
    }

    #[test]
    fn a_pin_is_extended_and_never_shortened() {
        let t0 = Instant::now();
        let a = ip("198.51.100.5");
        let mut pins = PinSet::new(8);
        pins.insert(a, "x.example", secs(1000), t0);
        pins.insert(a, "x.example", secs(1), t0 + secs(10));
        assert_eq!(pins.lookup(a, t0 + secs(999)), list("x.example"));
        pins.insert(a, "x.example", secs(1000), t0 + secs(500));
        assert_eq!(pins.lookup(a, t0 + secs(1499)), list("x.example"));
    }

    #[test]
    fn pin_set_evicts_the_address_expiring_soonest_when_full() {
        let t0 = Instant::now();
        let mut pins = PinSet::new(2);
        pins.insert(ip("198.51.100.1"), "one.example", secs(1000), t0);
        pins.insert(ip("198.51.100.2"), "two.example", secs(400), t0);
        pins.insert(ip("198.51.100.3"), "three.example", secs(700), t0);
        assert_eq!(pins.len(), 2);
        assert_eq!(pins.lookup(ip("198.51.100.1"), t0), list("one.example"));
        assert_eq!(pins.lookup(ip("198.51.100.2"), t0), list(""));
        assert_eq!(pins.lookup(ip("198.51.100.3"), t0), list("three.example"));

        let mut none = PinSet::new(0);
        none.insert(ip("198.51.100.1"), "one.example", secs(1000), t0);
        assert!(none.is_empty());
    }

    #[test]
    fn pin_set_keeps_at_most_32_names_per_address() {
        let t0 = Instant::now();
        let a = ip("198.51.100.5");
        let mut pins = PinSet::new(4);
        for i in 0..40u64 {
            pins.insert(a, &format!("n{i:02}.example"), secs(1000 + i), t0);
        }
        let held = pins.lookup(a, t0);
        assert_eq!(held.len(), 32);
        assert_eq!(held.first().map(String::as_str), Some("n08.example"));
        assert_eq!(held.last().map(String::as_str), Some("n39.example"));
    }

    #[test]
    fn decisions_serialize_with_kebab_case_verdicts() {
        let pinned = list("a.example.com b.example.com");
        let d = policy("a.example.com", "").decide_connect(
            ip("198.51.100.5"),
            443,
            Proto::Tcp,
            &pinned,
        );
        assert_eq!(serde_json::to_value(&d).unwrap()["verdict"], "defer-l7");
        assert_eq!(
            serde_json::to_value(Group::LinkLocal).unwrap(),
            "link-local"
        );
    }
}
