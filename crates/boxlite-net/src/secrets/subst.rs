//! Placeholders become values on the way out; values become placeholders on the way back.
//!
//! Everything here reads hostile input: the guest writes the requests, and the upstream may
//! echo anything. So:
//!
//! - **One pass.** Each rewrite is a single leftmost-longest aho-corasick pass over what the
//!   guest wrote; an inserted value is never searched again. A value that happens to contain
//!   another secret's placeholder goes out exactly as configured.
//! - **Only the guest's own forms are rewritten**, in the places the design names: header
//!   values (with `Basic` credentials decoded and re-encoded), the query (literal and
//!   percent-encoded placeholders), and bodies only for secrets that opt in (a body is what
//!   servers echo, BoxLite #1500).
//! - **Every form sent is remembered** ([`Reflections`]), so responses can be scrubbed back
//!   to the forms the guest wrote. This is best effort: an upstream that truncates, hashes or
//!   re-encodes a value differently defeats it. What holds regardless is that a value is only
//!   ever sent to its own hosts.
//! - **Linear time, bounded memory.** Rewritten headers and queries are capped
//!   ([`MAX_SUBSTITUTED`]), a connection's remembered forms are capped ([`MAX_RECORDED`]), and
//!   the streaming replacer holds back only bytes that could still start a match.
//!
//! Our own copies of values are zeroed on drop; the copies inside the aho-corasick automata
//! are not (that crate owns them), nor are the bytes once handed to hyper.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use aho_corasick::{AhoCorasick, Input, MatchKind};
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use http::HeaderName;
use http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};
use zeroize::Zeroizing;

use crate::config::SecretConfig;

/// Longest header value or query a substitution may produce. Far above any real credential;
/// it stops a guest from turning a 64 KiB header of placeholders into 64 MiB of values.
pub const MAX_SUBSTITUTED: usize = 256 * 1024;
/// Forms one connection may add to its [`Reflections`] beyond every secret's standard forms
/// (each distinct `Basic` token or encoded query form adds one). Past it nothing more is
/// substituted: a form that could not be remembered could not be scrubbed.
pub const MAX_RECORDED: usize = 1024;

/// Bytes that may carry (part of) a value: zeroed on drop.
type Form = Zeroizing<Vec<u8>>;

/// Clients differ on padding; accept either, send it padded.
const BASIC_DECODE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One in-scope secret, in the forms substitution needs.
struct Secret {
    placeholder: Vec<u8>,
    value: Zeroizing<String>,
    /// The value percent-encoded, as it goes into a query.
    value_pct: Zeroizing<String>,
    body: bool,
}

/// The placeholder→value substitutions allowed toward one host: only the secrets whose
/// hosts match it. A placeholder of any other secret goes out unchanged (it is worthless).
///
/// A header value this returns carries a secret: the proxy marks it
/// `HeaderValue::set_sensitive(true)` so HPACK never indexes it.
pub struct Substituter {
    secrets: Vec<Secret>,
    /// Pattern `i` is `secrets[i]`'s placeholder.
    literal: Option<Arc<Patterns>>,
    body: Option<Arc<Patterns>>,
    /// (sent, guest) for every form the body replacer can send.
    body_forms: Vec<(Form, Form)>,
}

impl std::fmt::Debug for Substituter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Substituter")
            .field("secrets", &self.secrets.len())
            .field("body", &self.body.is_some())
            .finish_non_exhaustive()
    }
}

impl Substituter {
    pub fn new(in_scope: &[&SecretConfig]) -> Substituter {
        // `validate` already refuses these; a secret that slipped through would produce an
        // invalid header, so it is skipped rather than trusted.
        let secrets: Vec<Secret> = in_scope
            .iter()
            .filter(|s| {
                let v = s.value.expose();
                !v.is_empty()
                    && v.bytes().all(header_safe)
                    && !s.placeholder.is_empty()
                    && s.placeholder.bytes().all(|b| b.is_ascii_graphic())
            })
            .map(|s| Secret {
                placeholder: s.placeholder.as_bytes().to_vec(),
                value: Zeroizing::new(s.value.expose().to_owned()),
                value_pct: Zeroizing::new(pct_encode(s.value.expose().as_bytes(), true)),
                body: s.body,
            })
            .collect();
        let literal = Patterns::build(
            secrets
                .iter()
                .map(|s| (form(&s.placeholder), form(s.value.as_bytes())))
                .collect(),
        );

        // In bodies, also the encodings clients apply to a placeholder: percent-encoding
        // (form posts) and Go's HTML-safe JSON (`\u003c...\u003e`). Each becomes the value
        // in the matching encoding, so the body still parses.
        let mut body_pairs: Vec<(Form, Form)> = Vec::new();
        for s in secrets.iter().filter(|s| s.body) {
            let ph = String::from_utf8_lossy(&s.placeholder);
            let json_value = form(json_escape(&s.value, Json::Minimal).as_bytes());
            let pct_value = form(s.value_pct.as_bytes());
            for (guest, sent) in [
                (form(&s.placeholder), form(s.value.as_bytes())),
                (
                    form(pct_encode(&s.placeholder, true).as_bytes()),
                    pct_value.clone(),
                ),
                (
                    form(pct_encode(&s.placeholder, false).as_bytes()),
                    pct_value,
                ),
                (form(json_escape(&ph, Json::Html).as_bytes()), json_value),
            ] {
                if !body_pairs.iter().any(|(g, _)| *g == guest) {
                    body_pairs.push((guest, sent));
                }
            }
        }
        let body_forms = body_pairs
            .iter()
            .map(|(guest, sent)| (sent.clone(), guest.clone()))
            .collect();
        let body = Patterns::build(body_pairs);
        Substituter {
            secrets,
            literal,
            body,
            body_forms,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// One request header value, with every placeholder replaced by its value. For
    /// `Authorization` and `Proxy-Authorization` values of the form `Basic <token>`, the
    /// token is decoded, substituted inside and re-encoded (padded standard base64), and the
    /// new token is recorded in `sent` against the guest's. None when nothing changed, or
    /// when the result would not be a valid header value or would exceed
    /// [`MAX_SUBSTITUTED`].
    pub fn header_value(
        &self,
        name: &HeaderName,
        value: &[u8],
        sent: &mut Reflections,
    ) -> Option<Vec<u8>> {
        let literal = self.literal.as_deref()?;
        if (name == AUTHORIZATION || name == PROXY_AUTHORIZATION)
            && let Some(out) = self.basic(literal, value, sent)
        {
            return Some(out);
        }
        let mut out = self.substitute(literal, value, sent)?;
        out.iter()
            .all(|b| header_safe(*b))
            .then(|| std::mem::take(&mut *out))
    }

    /// `Basic <token>` whose decoded credentials hold a placeholder. A token that does not
    /// decode, or decodes to no placeholder, is left to the literal pass (`Basic <ph>` where
    /// the value is itself a pre-encoded token).
    fn basic(&self, literal: &Patterns, value: &[u8], sent: &mut Reflections) -> Option<Vec<u8>> {
        let space = value.iter().position(|b| *b == b' ')?;
        if !value[..space].eq_ignore_ascii_case(b"basic") {
            return None;
        }
        let start = space + value[space..].iter().take_while(|b| **b == b' ').count();
        let trailing = value[start..]
            .iter()
            .rev()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        let end = value.len() - trailing;
        let token = &value[start..end];
        let decoded = Zeroizing::new(BASIC_DECODE.decode(token).ok()?);
        let credentials = self.substitute(literal, &decoded, sent)?;
        let encoded = Zeroizing::new(STANDARD.encode(&*credentials));
        if !sent.record(encoded.as_bytes(), token) {
            return None;
        }
        let mut out = Vec::with_capacity(value.len() - token.len() + encoded.len());
        out.extend_from_slice(&value[..start]);
        out.extend_from_slice(encoded.as_bytes());
        out.extend_from_slice(&value[end..]);
        Some(out)
    }

    /// Every placeholder in `hay` replaced by its raw value. None when there was none, or the
    /// result would exceed [`MAX_SUBSTITUTED`].
    fn substitute(&self, literal: &Patterns, hay: &[u8], sent: &mut Reflections) -> Option<Form> {
        let mut out = Form::default();
        let mut recorded = vec![false; self.secrets.len()];
        let mut last = 0;
        for m in literal.ac.find_iter(hay) {
            let i = m.pattern().as_usize();
            let secret = self.secrets.get(i)?;
            if !recorded[i] {
                if !sent.record(secret.value.as_bytes(), &secret.placeholder) {
                    return None;
                }
                recorded[i] = true;
            }
            out.extend_from_slice(&hay[last..m.start()]);
            out.extend_from_slice(secret.value.as_bytes());
            last = m.end();
            if out.len() > MAX_SUBSTITUTED {
                return None;
            }
        }
        if last == 0 {
            return None;
        }
        out.extend_from_slice(&hay[last..]);
        (out.len() <= MAX_SUBSTITUTED).then_some(out)
    }

    /// The query of a request target (without `?`). A placeholder counts whether written
    /// literally, percent-encoded (either hex case) or a mix: matching runs on the decoded
    /// query and maps back to what the guest wrote. The value goes in percent-encoded
    /// (everything outside the unreserved characters), whatever form the placeholder had: a
    /// raw `+`, `&`, `#` or `%` in a value would change what the server decodes. Each span
    /// the guest wrote is recorded in `sent`. None when unchanged (or the result would
    /// exceed [`MAX_SUBSTITUTED`]).
    pub fn query(&self, query: &str, sent: &mut Reflections) -> Option<String> {
        let literal = self.literal.as_deref()?;
        let (decoded, offsets) = pct_decode(query.as_bytes());
        let mut out = String::new();
        let mut last = 0;
        for m in literal.ac.find_iter(&decoded) {
            let secret = self.secrets.get(m.pattern().as_usize())?;
            let (start, end) = (offsets[m.start()], offsets[m.end()]);
            // Placeholders are ASCII, so a match starts and ends on ASCII bytes of `query`.
            let guest = query.get(start..end)?;
            if !sent.record(secret.value_pct.as_bytes(), guest.as_bytes()) {
                return None;
            }
            out.push_str(query.get(last..start)?);
            out.push_str(&secret.value_pct);
            last = end;
            if out.len() > MAX_SUBSTITUTED {
                return None;
            }
        }
        if last == 0 {
            return None;
        }
        out.push_str(query.get(last..)?);
        (out.len() <= MAX_SUBSTITUTED).then_some(out)
    }

    /// Whether any in-scope secret opted into body substitution.
    pub fn body_enabled(&self) -> bool {
        self.body.is_some()
    }

    /// A streaming replacer for a request body: the secrets with `body` only. A placeholder
    /// counts literal (replaced by the raw value), fully percent-encoded in either hex case
    /// (by the encoded value) or in Go's JSON escaping (by the JSON-escaped value); unlike
    /// the query, a mix of encoded and literal characters is not recognized. A no-op when
    /// none opted in.
    pub fn body_replacer(&self, sent: &mut Reflections) -> StreamReplacer {
        let Some(body) = &self.body else {
            return StreamReplacer::noop();
        };
        for (sent_form, guest) in &self.body_forms {
            if !sent.record(sent_form, guest) {
                return StreamReplacer::noop();
            }
        }
        StreamReplacer::new(Mode::Replace(body.clone()))
    }
}

/// What the helper sent upstream in place of what the guest wrote, for one connection.
/// Responses are scrubbed by turning each sent form back into the guest's form.
///
/// From the start it holds, for every secret of the box (not only those in scope for this
/// host: an upstream may know another secret's value), the raw value and its percent-encoded
/// and JSON-escaped forms (where they differ from the raw value), each mapped to the
/// placeholder in the same encoding. [`Substituter`] adds the forms it builds per request
/// (a re-encoded `Basic` token, an encoded query placeholder).
///
/// The scrubbers take a snapshot: build one after the request's forms are recorded.
#[derive(Clone)]
pub struct Reflections {
    /// (sent, guest), the standard forms first; no two share a sent form.
    forms: Vec<(Form, Form)>,
    standard: usize,
    /// The automaton over `forms`, built when first needed after a change.
    scrub: OnceLock<Scrub>,
}

#[derive(Clone)]
enum Scrub {
    Nothing,
    Ready(Arc<Patterns>),
    /// The automaton could not be built (it cannot for a validated secret set). Responses are
    /// then emptied rather than passed on unscrubbed.
    Failed,
}

impl std::fmt::Debug for Reflections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reflections")
            .field("forms", &self.forms.len())
            .field("recorded", &(self.forms.len() - self.standard))
            .finish_non_exhaustive()
    }
}

impl Reflections {
    pub fn new<'a>(all_secrets: impl Iterator<Item = &'a SecretConfig>) -> Reflections {
        let mut r = Reflections {
            forms: Vec::new(),
            standard: 0,
            scrub: OnceLock::new(),
        };
        for s in all_secrets {
            let (value, ph) = (s.value.expose(), s.placeholder.as_str());
            r.add(value.as_bytes(), ph.as_bytes());
            for upper in [true, false] {
                r.add(
                    pct_encode(value.as_bytes(), upper).as_bytes(),
                    pct_encode(ph.as_bytes(), upper).as_bytes(),
                );
            }
            for style in [Json::Minimal, Json::Slash, Json::Html, Json::Ascii] {
                r.add(
                    json_escape(value, style).as_bytes(),
                    json_escape(ph, style).as_bytes(),
                );
            }
        }
        r.standard = r.forms.len();
        r
    }

    /// Remember that `sent` went upstream where the guest wrote `guest`. False when the
    /// connection's budget ([`MAX_RECORDED`]) is spent: the caller must then not send it.
    pub fn record(&mut self, sent: &[u8], guest: &[u8]) -> bool {
        if sent.is_empty() || sent == guest || self.knows(sent) {
            return true;
        }
        if self.forms.len() - self.standard >= MAX_RECORDED {
            return false;
        }
        self.add(sent, guest);
        true
    }

    fn knows(&self, sent: &[u8]) -> bool {
        self.forms.iter().any(|(s, _)| s.as_slice() == sent)
    }

    fn add(&mut self, sent: &[u8], guest: &[u8]) {
        if !sent.is_empty() && sent != guest && !self.knows(sent) {
            self.forms.push((form(sent), form(guest)));
            self.scrub = OnceLock::new();
        }
    }

    fn scrub(&self) -> &Scrub {
        self.scrub.get_or_init(|| {
            if self.forms.is_empty() {
                return Scrub::Nothing;
            }
            match Patterns::build(self.forms.clone()) {
                Some(p) => Scrub::Ready(p),
                None => Scrub::Failed,
            }
        })
    }

    /// One response header value with every sent form turned back. None if unchanged.
    pub fn scrub_header(&self, value: &[u8]) -> Option<Vec<u8>> {
        match self.scrub() {
            Scrub::Nothing => None,
            Scrub::Ready(p) => {
                let mut out = Vec::with_capacity(value.len());
                p.replace_all(value, &mut out).then_some(out)
            }
            Scrub::Failed => Some(Vec::new()),
        }
    }

    /// A streaming scrubber for a response body (identity-encoded only: a compressed body
    /// hides the value from it).
    pub fn body_scrubber(&self) -> StreamReplacer {
        match self.scrub() {
            Scrub::Nothing => StreamReplacer::noop(),
            Scrub::Ready(p) => StreamReplacer::new(Mode::Replace(p.clone())),
            Scrub::Failed => StreamReplacer::new(Mode::Discard),
        }
    }
}

/// Streaming multi-pattern find and replace, leftmost-longest. The output is exactly what
/// one pass over the concatenated input would give, however it is chunked: a pattern split
/// across chunks is replaced exactly once.
///
/// Between calls it holds back only the bytes that could still begin a match (at most the
/// longest pattern less one): a chunk that ends mid-placeholder waits for the next, anything
/// else is emitted at once, so a server-sent event stream is not delayed by scrubbing.
///
/// A push costs time linear in the chunk plus the held-back bytes, which are searched again;
/// only one-byte chunks against self-similar patterns make that noticeable. Output can be
/// larger than input by the ratio of replacement to pattern length, per chunk.
pub struct StreamReplacer {
    mode: Mode,
    /// Held-back bytes; may be the start of a value.
    tail: Form,
    /// The prefix automaton's state after every byte pushed so far.
    state: u32,
}

enum Mode {
    Noop,
    Replace(Arc<Patterns>),
    Discard,
}

impl std::fmt::Debug for StreamReplacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let patterns = match &self.mode {
            Mode::Replace(p) => p.replacements.len(),
            Mode::Noop | Mode::Discard => 0,
        };
        f.debug_struct("StreamReplacer")
            .field("patterns", &patterns)
            .field("held", &self.tail.len())
            .finish_non_exhaustive()
    }
}

impl StreamReplacer {
    fn new(mode: Mode) -> StreamReplacer {
        StreamReplacer {
            mode,
            tail: Form::default(),
            state: ROOT,
        }
    }

    fn noop() -> StreamReplacer {
        StreamReplacer::new(Mode::Noop)
    }

    /// Feed one chunk; what can be decided is appended to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let StreamReplacer { mode, tail, state } = self;
        let patterns = match mode {
            Mode::Replace(p) => &**p,
            Mode::Noop => {
                out.extend_from_slice(chunk);
                return;
            }
            Mode::Discard => return,
        };
        // The state is the longest suffix a pattern could still complete, never longer than
        // the longest pattern less one: a long chunk's earlier bytes cannot affect it.
        let reach = patterns.ac.max_pattern_len().saturating_sub(1);
        let fed = if chunk.len() >= reach {
            *state = ROOT;
            &chunk[chunk.len() - reach..]
        } else {
            chunk
        };
        for b in fed {
            *state = patterns.prefixes.next(*state, *b);
        }
        if tail.is_empty() {
            let hold = patterns.scan(*state, chunk, out);
            tail.extend_from_slice(&chunk[hold..]);
        } else {
            tail.extend_from_slice(chunk);
            let buf = Form::new(std::mem::take(&mut **tail));
            let hold = patterns.scan(*state, &buf, out);
            tail.extend_from_slice(&buf[hold..]);
        }
    }

    /// The end of the input: the held-back bytes are decided and appended. The replacer can
    /// then take a new input.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Mode::Replace(p) = &self.mode {
            let buf = Form::new(std::mem::take(&mut *self.tail));
            p.replace_all(&buf, out);
        }
        self.state = ROOT;
    }

    /// Has no patterns: output is input.
    pub fn is_noop(&self) -> bool {
        matches!(self.mode, Mode::Noop)
    }
}

/// A compiled pattern→replacement set.
struct Patterns {
    ac: AhoCorasick,
    replacements: Vec<Form>,
    prefixes: PrefixTrie,
}

impl Patterns {
    /// None when there are no patterns, a pattern is empty, or the automaton cannot be built.
    fn build(pairs: Vec<(Form, Form)>) -> Option<Arc<Patterns>> {
        if pairs.is_empty() || pairs.iter().any(|(p, _)| p.is_empty()) {
            return None;
        }
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(pairs.iter().map(|(p, _)| p.as_slice()))
            .ok()?;
        let prefixes = PrefixTrie::new(pairs.iter().map(|(p, _)| p.as_slice()))?;
        let replacements = pairs.into_iter().map(|(_, r)| r).collect();
        Some(Arc::new(Patterns {
            ac,
            replacements,
            prefixes,
        }))
    }

    /// One pass over `hay` into `out`; whether anything matched.
    fn replace_all(&self, hay: &[u8], out: &mut Vec<u8>) -> bool {
        let mut last = 0;
        for m in self.ac.find_iter(hay) {
            out.extend_from_slice(&hay[last..m.start()]);
            out.extend_from_slice(&self.replacements[m.pattern().as_usize()]);
            last = m.end();
        }
        out.extend_from_slice(&hay[last..]);
        last != 0
    }

    /// Emit from `buf` every match that no later byte can change, and the bytes before the
    /// first position where a match could still begin; return that position. `state` is the
    /// prefix automaton's state after `buf`'s last byte.
    ///
    /// A match found at `p` is final when no position at or before `p` is the start of a
    /// proper prefix of a pattern running to the end of `buf`: nothing earlier can complete
    /// and nothing longer can start at `p`. That is exactly the one-pass result.
    fn scan(&self, state: u32, buf: &[u8], out: &mut Vec<u8>) -> usize {
        let n = buf.len();
        let mut start = 0;
        let mut open = state;
        loop {
            // The earliest position at or after `start` that may still begin a match.
            open = self.prefixes.within(open, n - start);
            let hold = n - self.prefixes.depth(open);
            if hold == start {
                // All that is left may still begin a match: nothing to decide yet.
                return hold;
            }
            match self.ac.find(Input::new(buf).span(start..n)) {
                Some(m) if m.start() < hold => {
                    out.extend_from_slice(&buf[start..m.start()]);
                    out.extend_from_slice(&self.replacements[m.pattern().as_usize()]);
                    start = m.end();
                }
                _ => {
                    out.extend_from_slice(&buf[start..hold]);
                    return hold;
                }
            }
        }
    }
}

const ROOT: u32 = 0;

/// The patterns' proper prefixes as an Aho-Corasick automaton (goto plus failure links).
/// Its state after a stream is the longest suffix of the stream that a pattern could still
/// complete, and the failure chain from there lists every shorter one: that is what the
/// streaming replacer must hold back. aho-corasick does not expose this, hence our own.
struct PrefixTrie {
    nodes: Vec<Node>,
    /// Each node's children, sorted by byte, as one contiguous run.
    edges: Zeroizing<Vec<(u8, u32)>>,
    /// The root's children, dense: most bytes of a stream are read at the root.
    root: Box<[u32; 256]>,
}

#[derive(Clone, Copy)]
struct Node {
    depth: u32,
    fail: u32,
    first: u32,
    len: u32,
}

impl PrefixTrie {
    fn new<'a>(patterns: impl Iterator<Item = &'a [u8]>) -> Option<PrefixTrie> {
        let mut children: Vec<Vec<(u8, u32)>> = vec![Vec::new()];
        let mut depth: Vec<u32> = vec![0];
        for p in patterns {
            let mut at = 0usize;
            for b in &p[..p.len().saturating_sub(1)] {
                at = match children[at].iter().find(|(c, _)| c == b) {
                    Some((_, next)) => ix(*next),
                    None => {
                        let next = children.len();
                        children[at].push((*b, u32::try_from(next).ok()?));
                        children.push(Vec::new());
                        depth.push(depth[at].checked_add(1)?);
                        next
                    }
                };
            }
        }
        let mut nodes = Vec::with_capacity(children.len());
        let mut edges = Zeroizing::new(Vec::new());
        for (kids, depth) in children.iter_mut().zip(depth) {
            kids.sort_unstable();
            nodes.push(Node {
                depth,
                fail: ROOT,
                first: u32::try_from(edges.len()).ok()?,
                len: u32::try_from(kids.len()).ok()?,
            });
            edges.extend_from_slice(kids);
        }
        let mut root = Box::new([ROOT; 256]);
        for (b, child) in &children[0] {
            root[usize::from(*b)] = *child;
        }
        let mut trie = PrefixTrie { nodes, edges, root };
        // Failure links breadth-first: a node's link is shallower, so it is already set.
        let mut queue: VecDeque<u32> = children[0].iter().map(|(_, c)| *c).collect();
        while let Some(u) = queue.pop_front() {
            for (b, v) in &children[ix(u)] {
                let mut f = trie.nodes[ix(u)].fail;
                let link = loop {
                    if let Some(t) = trie.child(f, *b) {
                        break t;
                    }
                    if f == ROOT {
                        break ROOT;
                    }
                    f = trie.nodes[ix(f)].fail;
                };
                trie.nodes[ix(*v)].fail = link;
                queue.push_back(*v);
            }
        }
        Some(trie)
    }

    fn child(&self, node: u32, b: u8) -> Option<u32> {
        if node == ROOT {
            let c = self.root[usize::from(b)];
            return (c != ROOT).then_some(c);
        }
        let n = self.nodes[ix(node)];
        let run = &self.edges[ix(n.first)..ix(n.first) + ix(n.len)];
        run.binary_search_by_key(&b, |(c, _)| *c)
            .ok()
            .map(|i| run[i].1)
    }

    fn next(&self, mut node: u32, b: u8) -> u32 {
        loop {
            if let Some(c) = self.child(node, b) {
                return c;
            }
            if node == ROOT {
                return ROOT;
            }
            node = self.nodes[ix(node)].fail;
        }
    }

    fn depth(&self, node: u32) -> usize {
        ix(self.nodes[ix(node)].depth)
    }

    /// The deepest node on `node`'s failure chain no deeper than `max` (the root at worst).
    fn within(&self, mut node: u32, max: usize) -> u32 {
        while self.depth(node) > max {
            node = self.nodes[ix(node)].fail;
        }
        node
    }
}

fn ix(i: u32) -> usize {
    i as usize
}

fn form(bytes: &[u8]) -> Form {
    Zeroizing::new(bytes.to_vec())
}

/// What `HeaderValue::from_bytes` accepts.
fn header_safe(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// `%XX` decoded (anything else, including a malformed escape, kept as is), with where each
/// decoded byte starts in the input and, last, the input's length.
fn pct_decode(raw: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut decoded = Vec::with_capacity(raw.len());
    let mut offsets = Vec::with_capacity(raw.len() + 1);
    let mut i = 0;
    while i < raw.len() {
        offsets.push(i);
        let hi = raw.get(i + 1).copied().and_then(hex_value);
        let lo = raw.get(i + 2).copied().and_then(hex_value);
        match (raw[i], hi, lo) {
            (b'%', Some(hi), Some(lo)) => {
                decoded.push(hi << 4 | lo);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    offsets.push(raw.len());
    (decoded, offsets)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Everything outside RFC 3986's unreserved characters as `%XX`.
fn pct_encode(bytes: &[u8], upper: bool) -> String {
    let digits = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(digits[usize::from(b >> 4)]));
            out.push(char::from(digits[usize::from(b & 0xf)]));
        }
    }
    out
}

/// How common JSON encoders escape a string's contents.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Json {
    /// serde_json, JavaScript: `"`, `\` and controls.
    Minimal,
    /// PHP: also `/`.
    Slash,
    /// Go's encoding/json: also `<`, `>`, `&`, U+2028 and U+2029.
    Html,
    /// Python's json.dumps: also everything outside ASCII.
    Ascii,
}

fn json_escape(s: &str, style: Json) -> String {
    fn unicode(out: &mut String, c: char) {
        let mut units = [0u16; 2];
        for u in c.encode_utf16(&mut units) {
            out.push_str(&format!("\\u{u:04x}"));
        }
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c < ' ' => unicode(&mut out, c),
            '/' if style == Json::Slash => out.push_str("\\/"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if style == Json::Html => {
                unicode(&mut out, c)
            }
            c if !c.is_ascii() && style == Json::Ascii => unicode(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretValue;
    use crate::secrets::default_placeholder;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn secret(name: &str, value: &str, body: bool) -> SecretConfig {
        SecretConfig {
            name: name.into(),
            placeholder: default_placeholder(name),
            hosts: vec!["api.example.com".into()],
            value: SecretValue::new(value.into()),
            body,
        }
    }

    /// A and B are in scope (B also in bodies); C belongs to another host.
    fn box_secrets() -> Vec<SecretConfig> {
        vec![
            secret("A", "sk-live-AAAA", false),
            secret("B", "b/+=&é\"x", true),
            secret("C", "other-host-value", false),
        ]
    }

    fn setup() -> (Substituter, Reflections) {
        let all = box_secrets();
        let sub = Substituter::new(&[&all[0], &all[1]]);
        (sub, Reflections::new(all.iter()))
    }

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    fn text(bytes: Option<Vec<u8>>) -> Option<String> {
        bytes.map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn header_values_get_in_scope_values_and_basic_credentials_are_reencoded() {
        let (sub, mut sent) = setup();
        let auth = AUTHORIZATION;
        let other = HeaderName::from_static("x-api-key");
        let cases: Vec<(&HeaderName, String, Option<String>)> = vec![
            (
                &auth,
                "Bearer <BOXLITE_SECRET:A>".into(),
                Some("Bearer sk-live-AAAA".into()),
            ),
            (
                &other,
                "<BOXLITE_SECRET:A>,<BOXLITE_SECRET:B>;<BOXLITE_SECRET:A>".into(),
                Some("sk-live-AAAA,b/+=&é\"x;sk-live-AAAA".into()),
            ),
            (&other, "<BOXLITE_SECRET:C>".into(), None),
            (&other, "<BOXLITE_SECRET:A".into(), None),
            (&other, "nothing here".into(), None),
            (
                &auth,
                format!("Basic {}", b64("user:<BOXLITE_SECRET:A>")),
                Some(format!("Basic {}", b64("user:sk-live-AAAA"))),
            ),
            (
                &auth,
                format!("basic  {} ", b64("<BOXLITE_SECRET:A>:x")),
                Some(format!("basic  {} ", b64("sk-live-AAAA:x"))),
            ),
            (
                &PROXY_AUTHORIZATION,
                format!(
                    "Basic {}",
                    b64("u:<BOXLITE_SECRET:B>").trim_end_matches('=')
                ),
                Some(format!("Basic {}", b64("u:b/+=&é\"x"))),
            ),
            // The value is itself a pre-encoded token.
            (
                &auth,
                "Basic <BOXLITE_SECRET:A>".into(),
                Some("Basic sk-live-AAAA".into()),
            ),
            // Only the credential headers are decoded.
            (
                &other,
                format!("Basic {}", b64("user:<BOXLITE_SECRET:A>")),
                None,
            ),
            (
                &auth,
                format!("Basic {}", b64("user:<BOXLITE_SECRET:C>")),
                None,
            ),
            (&auth, "Basic !!not base64!!".into(), None),
        ];
        for (name, value, want) in cases {
            let got = text(sub.header_value(name, value.as_bytes(), &mut sent));
            assert_eq!(got, want, "{name}: {value}");
        }
    }

    #[test]
    fn a_value_is_never_substituted_again() {
        let all = [
            secret("A", "x<BOXLITE_SECRET:B>y", false),
            secret("B", "vb", false),
        ];
        let sub = Substituter::new(&[&all[0], &all[1]]);
        let mut sent = Reflections::new(all.iter());
        let out = sub.header_value(
            &AUTHORIZATION,
            b"<BOXLITE_SECRET:A> <BOXLITE_SECRET:B>",
            &mut sent,
        );
        assert_eq!(text(out).unwrap(), "x<BOXLITE_SECRET:B>y vb");
        let back = sent.scrub_header(b"x<BOXLITE_SECRET:B>y vb").unwrap();
        assert_eq!(back, b"<BOXLITE_SECRET:A> <BOXLITE_SECRET:B>");
    }

    #[test]
    fn query_placeholders_match_literal_and_percent_encoded_and_values_go_in_encoded() {
        let (sub, mut sent) = setup();
        let b = "b%2F%2B%3D%26%C3%A9%22x";
        let cases: Vec<(&str, Option<String>)> = vec![
            (
                "k=<BOXLITE_SECRET:A>&x=1",
                Some("k=sk-live-AAAA&x=1".into()),
            ),
            ("k=%3CBOXLITE_SECRET%3AA%3E", Some("k=sk-live-AAAA".into())),
            ("k=%3cBOXLITE_SECRET%3aA%3e", Some("k=sk-live-AAAA".into())),
            ("k=<BOXLITE_SECRET%3AA%3e", Some("k=sk-live-AAAA".into())),
            ("k=%3C%42OXLITE_SECRET:B>", Some(format!("k={b}"))),
            (
                "a=<BOXLITE_SECRET:B>&b=%3CBOXLITE_SECRET%3AA%3E",
                Some(format!("a={b}&b=sk-live-AAAA")),
            ),
            ("é=<BOXLITE_SECRET:A>#", Some("é=sk-live-AAAA#".into())),
            ("k=%3CBOXLITE_SECRET%3AC%3E", None),
            ("k=%3CBOXLITE_SECRET%3AZ%3E", None),
            ("k=%3CBOXLITE_SECRET%3AA", None),
            ("k=%253CBOXLITE_SECRET%253AA%253E", None),
            ("k=%3", None),
            ("%zz%", None),
            ("", None),
        ];
        for (query, want) in cases {
            assert_eq!(sub.query(query, &mut sent), want, "{query}");
        }
        // What went out for an encoded placeholder scrubs back to what the guest wrote.
        assert_eq!(
            text(sent.scrub_header(b"echo: b%2F%2B%3D%26%C3%A9%22x")).unwrap(),
            "echo: %3CBOXLITE_SECRET%3AB%3E"
        );
    }

    #[test]
    fn every_form_of_every_value_is_scrubbed_back_to_the_placeholder() {
        let (sub, mut sent) = setup();
        let token = b64("user:<BOXLITE_SECRET:A>");
        let basic = format!("Basic {token}");
        let out = text(sub.header_value(&AUTHORIZATION, basic.as_bytes(), &mut sent)).unwrap();
        let sent_token = out.strip_prefix("Basic ").unwrap();
        let cases = [
            ("sk-live-AAAA", "<BOXLITE_SECRET:A>"),
            ("other-host-value", "<BOXLITE_SECRET:C>"),
            ("b/+=&é\"x", "<BOXLITE_SECRET:B>"),
            ("b%2F%2B%3D%26%C3%A9%22x", "%3CBOXLITE_SECRET%3AB%3E"),
            ("b%2f%2b%3d%26%c3%a9%22x", "%3cBOXLITE_SECRET%3aB%3e"),
            ("b/+=&é\\\"x", "<BOXLITE_SECRET:B>"),
            ("b\\/+=&é\\\"x", "<BOXLITE_SECRET:B>"),
            ("b/+=\\u0026é\\\"x", "\\u003cBOXLITE_SECRET:B\\u003e"),
            ("b/+=&\\u00e9\\\"x", "<BOXLITE_SECRET:B>"),
            (sent_token, token.as_str()),
        ];
        for (reflected, guest) in cases {
            let header = format!("[{reflected}]");
            assert_eq!(
                text(sent.scrub_header(header.as_bytes())).unwrap(),
                format!("[{guest}]"),
                "{reflected}"
            );
            let mut body = Vec::new();
            let mut scrubber = sent.body_scrubber();
            scrubber.push(header.as_bytes(), &mut body);
            scrubber.finish(&mut body);
            assert_eq!(String::from_utf8(body).unwrap(), format!("[{guest}]"));
        }
        assert_eq!(sent.scrub_header(b"nothing secret"), None);
    }

    #[test]
    fn bodies_substitute_only_opted_in_secrets_in_literal_percent_and_json_forms() {
        let (sub, mut sent) = setup();
        assert!(sub.body_enabled());
        let mut r = sub.body_replacer(&mut sent);
        assert!(!r.is_noop());
        let input = concat!(
            "{\"a\":\"<BOXLITE_SECRET:A>\",\"b\":\"\\u003cBOXLITE_SECRET:B\\u003e\"}",
            "&f=%3CBOXLITE_SECRET%3AB%3E&g=%3cBOXLITE_SECRET%3aB%3e&h=<BOXLITE_SECRET:B>"
        );
        let mut out = Vec::new();
        r.push(input.as_bytes(), &mut out);
        r.finish(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                "{\"a\":\"<BOXLITE_SECRET:A>\",\"b\":\"b/+=&é\\\"x\"}",
                "&f=b%2F%2B%3D%26%C3%A9%22x&g=b%2F%2B%3D%26%C3%A9%22x&h=b/+=&é\"x"
            )
        );
        let all = box_secrets();
        let headers_only = Substituter::new(&[&all[0]]);
        assert!(!headers_only.body_enabled());
        assert!(headers_only.body_replacer(&mut sent).is_noop());
        assert!(Substituter::new(&[]).is_empty());
    }

    #[test]
    fn outputs_are_bounded_and_the_recorded_forms_are_capped() {
        let all = [secret("A", &"v".repeat(8 * 1024), false)];
        let sub = Substituter::new(&[&all[0]]);
        let mut sent = Reflections::new(all.iter());
        let huge = "<BOXLITE_SECRET:A>".repeat(64 * 1024 / 18);
        let name = HeaderName::from_static("x-k");
        assert_eq!(sub.header_value(&name, huge.as_bytes(), &mut sent), None);
        assert_eq!(sub.query(&huge, &mut sent), None);

        let (sub, mut sent) = setup();
        for i in 0..MAX_RECORDED {
            let basic = format!("Basic {}", b64(&format!("u{i}:<BOXLITE_SECRET:A>")));
            assert!(
                sub.header_value(&AUTHORIZATION, basic.as_bytes(), &mut sent)
                    .is_some()
            );
        }
        let basic = format!("Basic {}", b64("one-too-many:<BOXLITE_SECRET:A>"));
        assert_eq!(
            sub.header_value(&AUTHORIZATION, basic.as_bytes(), &mut sent),
            None
        );
        // Forms already known still substitute.
        let again = format!("Basic {}", b64("u0:<BOXLITE_SECRET:A>"));
        assert!(
            sub.header_value(&AUTHORIZATION, again.as_bytes(), &mut sent)
                .is_some()
        );
    }

    #[test]
    fn debug_shows_no_values() {
        let (sub, mut sent) = setup();
        let mut r = sent.body_scrubber();
        let mut out = Vec::new();
        r.push(b"sk-live-AA", &mut out);
        let _ = sub.query("<BOXLITE_SECRET:B>", &mut sent);
        let debug = format!("{sub:?} {sent:?} {r:?}");
        for needle in ["sk-live", "b/+", "other-host", "BOXLITE_SECRET"] {
            assert!(!debug.contains(needle), "{debug}");
        }
    }

    /// A replacer over fixed pattern pairs, and the one-pass reference it must agree with.
    fn replacer(pairs: &[(&str, &str)]) -> (StreamReplacer, AhoCorasick) {
        let patterns = Patterns::build(
            pairs
                .iter()
                .map(|(p, r)| (form(p.as_bytes()), form(r.as_bytes())))
                .collect(),
        )
        .unwrap();
        let reference = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(pairs.iter().map(|(p, _)| p))
            .unwrap();
        (StreamReplacer::new(Mode::Replace(patterns)), reference)
    }

    fn streamed(r: &mut StreamReplacer, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            r.push(c, &mut out);
        }
        r.finish(&mut out);
        out
    }

    #[test]
    fn streaming_equals_one_pass_for_every_chunking() {
        // Overlapping, nested and self-similar patterns over a tiny alphabet, so inputs are
        // dense with partial and competing matches.
        let pairs = [
            ("<ab>", "1"),
            ("ab", "22"),
            ("abab", "333"),
            ("b>a", ""),
            ("aaaab", "4"),
            ("<ab>>", "55555"),
            ("a", "6"),
        ];
        let (mut r, reference) = replacer(&pairs);
        let replacements: Vec<&str> = pairs.iter().map(|(_, v)| *v).collect();
        let mut rng = StdRng::seed_from_u64(0x5ec2e7);
        for _ in 0..300 {
            let len = rng.random_range(0..40);
            let input: Vec<u8> = (0..len).map(|_| b"<ab>x"[rng.random_range(0..5)]).collect();
            let want = reference.replace_all_bytes(&input, &replacements);
            for split in 0..=input.len() {
                let (a, b) = input.split_at(split);
                assert_eq!(streamed(&mut r, &[a, b]), want, "{input:?} at {split}");
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(streamed(&mut r, &bytes), want, "{input:?} bytewise");
            let mut chunks = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let (c, tail) = rest.split_at(rng.random_range(1..=rest.len()));
                chunks.push(c);
                rest = tail;
            }
            assert_eq!(streamed(&mut r, &chunks), want, "{input:?} in {chunks:?}");
        }
    }

    #[test]
    fn streaming_holds_back_only_a_possible_match_start() {
        let (mut r, _) = replacer(&[("<BOXLITE_SECRET:A>", "v"), ("sk-live", "<A>")]);
        let mut out = Vec::new();
        r.push(b"data: {\"t\":1}\n\n", &mut out);
        assert_eq!(
            out, b"data: {\"t\":1}\n\n",
            "a complete event is not delayed"
        );
        out.clear();
        r.push(b"x <BOXLITE_SEC", &mut out);
        assert_eq!(out, b"x ");
        r.push(b"RET:A> sk-li", &mut out);
        assert_eq!(out, b"x v ");
        r.push(b"ve!", &mut out);
        assert_eq!(out, b"x v <A>!");
        r.push(b"<BOX", &mut out);
        r.finish(&mut out);
        assert_eq!(out, b"x v <A>!<BOX");
    }

    #[test]
    fn scrubbing_undoes_substitution_for_random_requests() {
        let all = box_secrets();
        let sub = Substituter::new(&[&all[0], &all[1]]);
        let pieces = [
            "<BOXLITE_SECRET:A>",
            "<BOXLITE_SECRET:B>",
            "<BOXLITE_SECRET:C>",
            "%3CBOXLITE_SECRET%3AB%3E",
            "<BOXLITE_SECRET:",
            "<",
            ">",
            "a",
            " ",
            "=",
            "%",
            "%3C",
            "k",
        ];
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..300 {
            let input: String = (0..rng.random_range(0..12))
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            let mut sent = Reflections::new(all.iter());
            let name = HeaderName::from_static("x-k");
            if let Some(out) = sub.header_value(&name, input.as_bytes(), &mut sent) {
                let back = sent.scrub_header(&out).unwrap();
                assert_eq!(String::from_utf8(back).unwrap(), input);
            }
            let mut body = sub.body_replacer(&mut sent);
            let mut out = Vec::new();
            for c in input.as_bytes().chunks(rng.random_range(1..8)) {
                body.push(c, &mut out);
            }
            body.finish(&mut out);
            let mut scrubber = sent.body_scrubber();
            let mut back = Vec::new();
            scrubber.push(&out, &mut back);
            scrubber.finish(&mut back);
            assert_eq!(String::from_utf8(back).unwrap(), input);
            // A placeholder may come back in another (equivalent) encoding than the guest's.
            if let Some(out) = sub.query(&input, &mut sent) {
                let back = sent.scrub_header(out.as_bytes()).unwrap();
                assert_eq!(pct_decode(&back).0, pct_decode(input.as_bytes()).0);
            }
        }
    }
}
