//! First-flight parsing for deferred decisions: the TLS SNI or the HTTP/1 `Host` a guest
//! sends before the helper has dialled anything.
//!
//! When one address serves several names and only some are allowed, the policy defers
//! ([`crate::policy::Verdict::DeferL7`]) until it sees which name the guest asks for. The
//! bytes come from a hostile guest, so the parser is hand-written over slices with every
//! index checked, reads at most [`MAX_PEEK`] bytes, and answers "no name" whenever the input
//! is ambiguous: two `server_name` entries, two `Host` headers, a folded header line, a
//! bare CR or LF, an absolute-form target that disagrees with `Host`, or an encrypted
//! ClientHello that hides the real name. "No name" is the cautious answer; the policy then
//! allows the connection only if every name pinned to the address is allowed anyway.

use crate::policy::normalize_name;

/// The most the helper reads before deciding.
pub const MAX_PEEK: usize = 16 * 1024;

/// What the first flight says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// Looks like TLS or HTTP, but incomplete: read more (up to [`MAX_PEEK`]).
    NeedMore,
    /// A TLS ClientHello; its `host_name`, normalized, if it has one usable name.
    Tls { sni: Option<String> },
    /// An HTTP/1 request head; its `Host`, normalized with the port stripped, if it has
    /// exactly one usable one.
    Http { host: Option<String> },
    /// Neither.
    Other,
}

/// Classifies the first bytes a guest sent on a connection.
pub fn peek(buf: &[u8]) -> Peek {
    let buf = &buf[..buf.len().min(MAX_PEEK)];
    if buf.is_empty() {
        return Peek::NeedMore;
    }
    if buf[0] == TLS_HANDSHAKE {
        return peek_tls(buf);
    }
    peek_http(buf)
}

const TLS_HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
/// ECH, and the draft ESNI before it: the real name is encrypted, the visible one is a
/// front.
const EXT_HIDDEN_NAME: [u16; 2] = [0xfe0d, 0xffce];
const NAME_TYPE_HOST: u8 = 0;
/// A TLS record carries at most 2^14 bytes of plaintext.
const MAX_RECORD: usize = 1 << 14;

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Why the record layer stopped.
enum Records {
    /// The whole handshake message, reassembled from as many records as it took.
    Message(Vec<u8>),
    NeedMore,
    Malformed,
}

/// Reassembles the first handshake message from the records at the start of `buf`.
fn first_handshake_message(buf: &[u8]) -> Records {
    let mut hs = Vec::new();
    let mut rest = buf;
    loop {
        let Some(header) = rest.get(..5) else {
            return if valid_record_prefix(rest) {
                Records::NeedMore
            } else {
                Records::Malformed
            };
        };
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if !valid_record_prefix(header) || len == 0 || len > MAX_RECORD {
            return Records::Malformed;
        }
        // A record still arriving is used as far as it goes: its start may already show
        // the message is not a ClientHello, or too big, or complete.
        let body = &rest[5..];
        let fragment = &body[..len.min(body.len())];
        hs.extend_from_slice(fragment);
        if let [kind, a, b, c, ..] = hs[..] {
            if kind != CLIENT_HELLO {
                return Records::Malformed;
            }
            let body = (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c);
            if 4 + body > MAX_PEEK {
                return Records::Malformed;
            }
            if hs.len() >= 4 + body {
                hs.truncate(4 + body);
                return Records::Message(hs);
            }
        }
        if fragment.len() < len {
            return Records::NeedMore;
        }
        rest = &body[len..];
    }
}

/// The record header bytes present so far are a handshake record of TLS 1.x.
fn valid_record_prefix(bytes: &[u8]) -> bool {
    bytes.first().is_none_or(|b| *b == TLS_HANDSHAKE)
        && bytes.get(1).is_none_or(|b| *b == 0x03)
        && bytes.get(2).is_none_or(|b| *b <= 0x04)
}

fn peek_tls(buf: &[u8]) -> Peek {
    if !valid_record_prefix(&buf[..buf.len().min(3)]) {
        return Peek::Other;
    }
    match first_handshake_message(buf) {
        Records::Message(msg) => Peek::Tls {
            sni: client_hello_sni(&msg),
        },
        Records::NeedMore if buf.len() < MAX_PEEK => Peek::NeedMore,
        Records::NeedMore | Records::Malformed => Peek::Tls { sni: None },
    }
}

/// The one `host_name` of a ClientHello handshake message, or `None` if it has none, more
/// than one, an unusable one, or hides its real name behind ECH.
fn client_hello_sni(msg: &[u8]) -> Option<String> {
    let mut r = Reader::new(msg);
    if r.u8()? != CLIENT_HELLO {
        return None;
    }
    let len = r.u24()?;
    let mut body = Reader::new(r.take(len)?);
    body.take(2 + 32)?; // legacy_version, random
    body.vec8()?; // legacy_session_id
    body.vec16()?; // cipher_suites
    body.vec8()?; // legacy_compression_methods
    let mut exts = Reader::new(body.vec16()?);
    if !body.is_empty() {
        return None;
    }
    let mut seen = Vec::new();
    let mut sni = None;
    while !exts.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if seen.contains(&kind) || EXT_HIDDEN_NAME.contains(&kind) {
            return None;
        }
        seen.push(kind);
        if kind == EXT_SERVER_NAME {
            sni = Some(server_name(data)?);
        }
    }
    sni
}

/// The `host_name` in a `server_name` extension's body.
fn server_name(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    let mut list = Reader::new(r.vec16()?);
    if !r.is_empty() {
        return None;
    }
    let mut host = None;
    while !list.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?;
        if kind == NAME_TYPE_HOST {
            if host.is_some() {
                return None;
            }
            host = Some(name);
        }
    }
    usable_name(host?)
}

/// A name from the wire, if it is plain ASCII and a valid DNS name (not an IP literal).
fn usable_name(raw: &[u8]) -> Option<String> {
    if raw.is_empty() || !raw.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    normalize_name(std::str::from_utf8(raw).ok()?).ok()
}

const METHODS: [&[u8]; 9] = [
    b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
];

fn peek_http(buf: &[u8]) -> Peek {
    let method = METHODS
        .iter()
        .find(|m| buf.starts_with(m) && buf.get(m.len()) == Some(&b' '));
    let Some(method) = method else {
        let could_be = METHODS
            .iter()
            .any(|m| buf.len() <= m.len() && m.starts_with(buf));
        return if could_be {
            Peek::NeedMore
        } else {
            Peek::Other
        };
    };
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() < MAX_PEEK {
            Peek::NeedMore
        } else {
            Peek::Http { host: None }
        };
    };
    Peek::Http {
        host: http_host(method, &buf[..end + 2]),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `Host` of a request head (every line ending in CRLF, the blank line excluded).
fn http_host(method: &[u8], head: &[u8]) -> Option<String> {
    let mut lines = Vec::new();
    let mut rest = head;
    while let Some(i) = find(rest, b"\r\n") {
        let line = &rest[..i];
        if line.contains(&b'\r') || line.contains(&b'\n') {
            return None;
        }
        lines.push(line);
        rest = &rest[i + 2..];
    }
    let (request_line, headers) = lines.split_first()?;
    let target = request_target(method, request_line)?;

    let mut host = None;
    for line in headers {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return None; // obs-fold: a continuation some servers join and others reject
        }
        let colon = line.iter().position(|b| *b == b':')?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| is_token(*b)) {
            return None;
        }
        if name.eq_ignore_ascii_case(b"host") {
            if host.is_some() {
                return None;
            }
            host = Some(value.trim_ascii());
        }
    }
    let host = authority_name(host?)?;
    match target {
        Target::Origin => Some(host),
        Target::Authority(a) => (authority_name(a)? == host).then_some(host),
    }
}

enum Target<'a> {
    /// `/path` or `*`: the name is the `Host` header's.
    Origin,
    /// An absolute-form URI's or CONNECT's authority, which servers prefer to `Host`.
    Authority(&'a [u8]),
}

fn request_target<'a>(method: &[u8], line: &'a [u8]) -> Option<Target<'a>> {
    let mut parts = line.split(|b| *b == b' ');
    let (_, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !(version == b"HTTP/1.1" || version == b"HTTP/1.0") {
        return None;
    }
    if method == b"CONNECT" {
        return Some(Target::Authority(target));
    }
    if target.first() == Some(&b'/') || target == b"*" {
        return Some(Target::Origin);
    }
    let scheme_end = find(target, b"://")?;
    let after = &target[scheme_end + 3..];
    let end = after
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(after.len());
    Some(Target::Authority(&after[..end]))
}

/// `name[:port]` to a normalized name. Userinfo and bracketed IPv6 literals are refused.
fn authority_name(authority: &[u8]) -> Option<String> {
    if authority.contains(&b'@') || authority.first() == Some(&b'[') {
        return None;
    }
    let name = match authority.iter().rposition(|b| *b == b':') {
        Some(i) => {
            let port = &authority[i + 1..];
            if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
                return None;
            }
            &authority[..i]
        }
        None => authority,
    };
    usable_name(name)
}

/// An RFC 9110 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn vec16(body: &[u8]) -> Vec<u8> {
        let mut v = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn ext(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut v = kind.to_be_bytes().to_vec();
        v.extend(vec16(body));
        v
    }

    /// A `server_name` extension holding these `(name_type, name)` entries.
    fn sni_ext(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (kind, name) in entries {
            list.push(*kind);
            list.extend(vec16(name));
        }
        ext(EXT_SERVER_NAME, &vec16(&list))
    }

    /// A ClientHello handshake message with these extensions.
    fn hello_message(extensions: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend([0x5a; 32]); // random
        body.push(32);
        body.extend([0x11; 32]); // session id
        body.extend(vec16(&[0x13, 0x01, 0x13, 0x02]));
        body.extend([1, 0]); // compression: null
        body.extend(vec16(&extensions.concat()));
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut msg = vec![CLIENT_HELLO, len[1], len[2], len[3]];
        msg.extend(body);
        msg
    }

    /// Wraps a handshake message in TLS records of at most `chunk` bytes each.
    fn records(msg: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in msg.chunks(chunk) {
            out.extend([TLS_HANDSHAKE, 0x03, 0x01]);
            out.extend(vec16(piece));
        }
        out
    }

    /// A realistic ClientHello record carrying `sni`, with padding and a key share.
    pub(crate) fn client_hello(sni: Option<&str>) -> Vec<u8> {
        let mut exts = vec![ext(0x000a, &[0, 2, 0, 0x1d]), ext(0x0033, &[0x55; 38])];
        if let Some(name) = sni {
            exts.insert(0, sni_ext(&[(NAME_TYPE_HOST, name.as_bytes())]));
        }
        exts.push(ext(0x0015, &[0; 200])); // padding
        records(&hello_message(&exts), MAX_RECORD)
    }

    fn tls(sni: Option<&str>) -> Peek {
        Peek::Tls {
            sni: sni.map(str::to_owned),
        }
    }

    fn http(host: Option<&str>) -> Peek {
        Peek::Http {
            host: host.map(str::to_owned),
        }
    }

    #[test]
    fn client_hello_yields_its_normalized_sni() {
        assert_eq!(
            peek(&client_hello(Some("API.Example.com"))),
            tls(Some("api.example.com"))
        );
        assert_eq!(
            peek(&client_hello(Some("api.example.com."))),
            tls(Some("api.example.com"))
        );
        assert_eq!(peek(&client_hello(None)), tls(None));
    }

    #[test]
    fn client_hello_split_over_many_records_is_reassembled() {
        let msg = hello_message(&[sni_ext(&[(0, b"api.example.com")])]);
        for chunk in [1, 7, 64, 100] {
            assert_eq!(
                peek(&records(&msg, chunk)),
                tls(Some("api.example.com")),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn unusable_or_ambiguous_sni_gives_no_name() {
        let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            ("ipv4 literal", vec![sni_ext(&[(0, b"203.0.113.5")])]),
            ("ipv6 literal", vec![sni_ext(&[(0, b"::1")])]),
            ("bad characters", vec![sni_ext(&[(0, b"evil test")])]),
            (
                "non-ascii",
                vec![sni_ext(&[(0, "bücher.example".as_bytes())])],
            ),
            ("empty name", vec![sni_ext(&[(0, b"")])]),
            (
                "two host names",
                vec![sni_ext(&[(0, b"a.example.com"), (0, b"b.example.com")])],
            ),
            (
                "two server_name extensions",
                vec![
                    sni_ext(&[(0, b"a.example.com")]),
                    sni_ext(&[(0, b"b.example.com")]),
                ],
            ),
            (
                "encrypted client hello",
                vec![
                    sni_ext(&[(0, b"public.example.com")]),
                    ext(0xfe0d, &[0; 40]),
                ],
            ),
            (
                "only another name type",
                vec![sni_ext(&[(7, b"a.example.com")])],
            ),
        ];
        for (label, exts) in cases {
            let hello = records(&hello_message(&exts), MAX_RECORD);
            assert_eq!(peek(&hello), tls(None), "{label}");
        }
        let with_other_type = hello_message(&[sni_ext(&[(7, b"x"), (0, b"a.example.com")])]);
        assert_eq!(
            peek(&records(&with_other_type, MAX_RECORD)),
            tls(Some("a.example.com"))
        );
    }

    #[test]
    fn truncated_tls_asks_for_more_until_max_peek() {
        let full = client_hello(Some("api.example.com"));
        for n in 1..full.len() {
            assert_eq!(peek(&full[..n]), Peek::NeedMore, "prefix {n}");
        }
        // A handshake that claims more than MAX_PEEK is given up on at once.
        let mut huge = vec![
            TLS_HANDSHAKE,
            0x03,
            0x01,
            0x40,
            0x00,
            CLIENT_HELLO,
            0x00,
            0x50,
            0x00,
        ];
        huge.resize(100, 0);
        assert_eq!(peek(&huge), tls(None));
        // A hello that fits MAX_PEEK, but not with the headers of the many records it is
        // split into, is given up on once MAX_PEEK bytes are in.
        let msg = hello_message(&[sni_ext(&[(0, b"a.example.com")]), ext(0x0015, &[0; 15_900])]);
        assert!(msg.len() < MAX_PEEK);
        let split = records(&msg, 100);
        assert!(split.len() > MAX_PEEK);
        assert_eq!(peek(&split[..MAX_PEEK - 1]), Peek::NeedMore);
        assert_eq!(peek(&split), tls(None));
        assert_eq!(peek(&records(&msg, MAX_RECORD)), tls(Some("a.example.com")));
    }

    #[test]
    fn malformed_tls_is_tls_without_a_name() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("zero-length record", vec![0x16, 0x03, 0x01, 0x00, 0x00]),
            ("oversized record", vec![0x16, 0x03, 0x01, 0x48, 0x01]),
            ("server hello", records(&[2, 0, 0, 4, 1, 2, 3, 4], 100)),
            ("next record not handshake", {
                let msg = hello_message(&[sni_ext(&[(0, b"a.example.com")])]);
                let mut v = records(&msg[..10], 100);
                v.extend([0x17, 0x03, 0x03, 0x00, 0x05]);
                v
            }),
            ("extensions overrun", {
                let mut msg = hello_message(&[sni_ext(&[(0, b"a.example.com")])]);
                let last = msg.len() - 1;
                msg.truncate(last);
                let len = u32::try_from(msg.len() - 4).unwrap().to_be_bytes();
                msg[1..4].copy_from_slice(&len[1..]);
                records(&msg, 100)
            }),
        ];
        for (label, bytes) in cases {
            assert_eq!(peek(&bytes), tls(None), "{label}");
        }
        assert_eq!(peek(&[0x16, 0x03, 0x09]), Peek::Other);
        assert_eq!(peek(&[0x16, 0x02]), Peek::Other);
    }

    #[test]
    fn http_request_yields_its_host_without_port() {
        let cases: &[(&[u8], Peek)] = &[
            (b"GET / HTTP/1.1\r\nHost: Example.COM\r\n\r\n", http(Some("example.com"))),
            (b"POST /x HTTP/1.1\r\nhost:api.example.com:8080\r\nContent-Length: 0\r\n\r\n", http(Some("api.example.com"))),
            (b"HEAD / HTTP/1.0\r\nUser-Agent: x\r\nHOST:   a.example.com.  \r\n\r\n", http(Some("a.example.com"))),
            (b"OPTIONS * HTTP/1.1\r\nHost: a.example.com\r\n\r\n", http(Some("a.example.com"))),
            (b"GET http://a.example.com/x HTTP/1.1\r\nHost: a.example.com\r\n\r\n", http(Some("a.example.com"))),
            (b"CONNECT a.example.com:443 HTTP/1.1\r\nHost: a.example.com:443\r\n\r\n", http(Some("a.example.com"))),
            (b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\nGET / HTTP/1.1\r\nHost: evil.test\r\n\r\n", http(Some("a.example.com"))),
        ];
        for (bytes, want) in cases {
            assert_eq!(&peek(bytes), want, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn ambiguous_http_heads_give_no_host() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: evil.test\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.example.com\r\nhost: a.example.com\r\n\r\n",
            b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: 203.0.113.5\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: user@a.example.com\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.example.com:http\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.example.com, evil.test\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: y\r\n Host: evil.test\r\nHost: a.example.com\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a.example.com\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: y\nHost: evil.test\r\nHost: a.example.com\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.example.com\rX: y\r\n\r\n",
            b"GET http://evil.test/ HTTP/1.1\r\nHost: a.example.com\r\n\r\n",
            b"CONNECT evil.test:443 HTTP/1.1\r\nHost: a.example.com\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: a.example.com\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: a.example.com\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: b\xc3\xbccher.example\r\n\r\n",
        ];
        for bytes in cases {
            assert_eq!(
                peek(bytes),
                http(None),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn partial_http_asks_for_more_and_gives_up_at_max_peek() {
        let full = b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n";
        for n in 1..full.len() {
            assert_eq!(peek(&full[..n]), Peek::NeedMore, "prefix {n}");
        }
        let mut endless = b"GET / HTTP/1.1\r\n".to_vec();
        while endless.len() < MAX_PEEK {
            endless.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(peek(&endless), http(None));
        assert_eq!(peek(b"DELE"), Peek::NeedMore);
    }

    #[test]
    fn anything_else_is_other() {
        let cases: &[&[u8]] = &[
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"get / HTTP/1.1\r\n",
            b"GETX / HTTP/1.1\r\n",
            b"\x00\x01\x02",
            b"X",
        ];
        for bytes in cases {
            assert_eq!(
                peek(bytes),
                Peek::Other,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(peek(b""), Peek::NeedMore);
    }

    #[test]
    fn peek_never_panics_on_prefixes_or_random_bytes() {
        let mut samples = vec![
            client_hello(Some("api.example.com")),
            records(&hello_message(&[sni_ext(&[(0, b"a.example.com")])]), 5),
            b"GET http://a.example.com:80/x HTTP/1.1\r\nHost: a.example.com\r\nX: y\r\n\r\n"
                .to_vec(),
            b"CONNECT a.example.com:443 HTTP/1.1\r\nHost: a.example.com:443\r\n\r\n".to_vec(),
        ];
        for sample in &samples {
            for n in 0..=sample.len() {
                let _ = peek(&sample[..n]);
            }
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for i in 0..4000 {
            let len = rng.random_range(0..600);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Give half of them a plausible start so the parsers get past the first check.
            match i % 4 {
                0 => bytes.splice(0..0, [0x16, 0x03, 0x01]).for_each(drop),
                1 => bytes.splice(0..0, *b"GET / HTTP/1.1\r\n").for_each(drop),
                _ => {}
            }
            let _ = peek(&bytes);
        }
        // Random corruption of a valid hello, one byte at a time.
        let hello = samples.swap_remove(0);
        for _ in 0..2000 {
            let mut bytes = hello.clone();
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
            let _ = peek(&bytes);
        }
    }
}
