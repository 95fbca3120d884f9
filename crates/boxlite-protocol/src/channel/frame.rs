//! The link's frames: a fixed header with its own checksum, a bounded payload and a
//! checksum of the payload.
//!
//! ```text
//!  0      4     5      6       8          16        20        24          24+len  28+len
//!  | BXCH | kind | flags | 0 0 | epoch u64 | len u32 | hcrc u32 | payload... | pcrc u32 |
//! ```
//!
//! All integers are little-endian. `hcrc` is the CRC-32 of bytes 0..20, `pcrc` the CRC-32 of
//! the payload. The decoder never trusts a length before the header's checksum matches, never
//! accepts a length above [`MAX_PAYLOAD`], and on any mismatch skips one byte and scans for
//! the next magic: a torn frame from an earlier session, or garbage from a hostile peer, costs
//! at most one frame's worth of bytes and never wedges or crashes the reader.

/// Marks the start of every frame.
pub const MAGIC: [u8; 4] = *b"BXCH";
/// Header length, checksum included.
pub const HEADER_LEN: usize = 24;
/// Largest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Largest encoded frame.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD + 4;

/// What a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Host to guest: a new session with this epoch begins; drop every stream of another.
    Hello,
    /// Guest to host: the guest is serving this epoch.
    HelloAck,
    /// Multiplexer bytes of this epoch.
    Data,
    /// Either way: the sender lost bytes of this epoch; the host opens a new one.
    Reset,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Hello => 1,
            Kind::HelloAck => 2,
            Kind::Data => 3,
            Kind::Reset => 4,
        }
    }
    fn from_code(c: u8) -> Option<Kind> {
        Some(match c {
            1 => Kind::Hello,
            2 => Kind::HelloAck,
            3 => Kind::Data,
            4 => Kind::Reset,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub epoch: u64,
    pub payload: Vec<u8>,
}

/// Append the encoding of a frame to `out`. Payloads above [`MAX_PAYLOAD`] are a caller
/// bug and are cut into several frames of the same kind.
pub fn encode(kind: Kind, epoch: u64, payload: &[u8], out: &mut Vec<u8>) {
    let mut chunks = payload.chunks(MAX_PAYLOAD);
    let first = chunks.next().unwrap_or(&[]);
    for chunk in std::iter::once(first).chain(chunks) {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(kind.code());
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&epoch.to_le_bytes());
        // A chunk is at most MAX_PAYLOAD (64 KiB) long.
        #[allow(clippy::cast_possible_truncation)]
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        let hcrc = crc32fast::hash(&out[start..start + 20]);
        out.extend_from_slice(&hcrc.to_le_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(&crc32fast::hash(chunk).to_le_bytes());
    }
}

/// Counters of what the decoder threw away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    /// Bytes skipped while looking for a valid frame.
    pub skipped_bytes: u64,
    /// Times a candidate frame failed a check (header or payload checksum, kind, length).
    pub resyncs: u64,
}

/// An incremental frame decoder. Feed it with [`Decoder::push`] and drain it with
/// [`Decoder::next_frame`] until it needs more: it then holds less than one maximal frame,
/// so its memory is bounded by one frame plus the largest chunk pushed.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    pos: usize,
    pub stats: DecodeStats,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            buf: Vec::new(),
            pos: 0,
            stats: DecodeStats::default(),
        }
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Add bytes read from the link.
    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    fn skip(&mut self, n: usize) {
        self.pos += n;
        self.stats.skipped_bytes += n as u64;
    }

    /// The next valid frame, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let rest = &self.buf[self.pos..];
            // Find the magic; keep a tail that could be its beginning.
            let Some(at) = find_magic(rest) else {
                let keep = partial_magic_suffix(rest);
                let drop = rest.len() - keep;
                self.skip(drop);
                return None;
            };
            if at > 0 {
                self.skip(at);
                continue;
            }
            if rest.len() < HEADER_LEN {
                return None;
            }
            let header = &rest[..HEADER_LEN];
            let hcrc = u32::from_le_bytes([header[20], header[21], header[22], header[23]]);
            let kind = Kind::from_code(header[4]);
            let len = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            let valid = crc32fast::hash(&header[..20]) == hcrc
                && header[5..8] == [0, 0, 0]
                && len <= MAX_PAYLOAD;
            let Some(kind) = kind.filter(|_| valid) else {
                self.stats.resyncs += 1;
                self.skip(1);
                continue;
            };
            let total = HEADER_LEN + len + 4;
            if rest.len() < total {
                return None;
            }
            let payload = &rest[HEADER_LEN..HEADER_LEN + len];
            let t = &rest[HEADER_LEN + len..total];
            let pcrc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
            if crc32fast::hash(payload) != pcrc {
                self.stats.resyncs += 1;
                self.skip(1);
                continue;
            }
            let epoch = u64::from_le_bytes(header[8..16].try_into().unwrap_or([0; 8]));
            let frame = Frame {
                kind,
                epoch,
                payload: payload.to_vec(),
            };
            self.pos += total;
            return Some(frame);
        }
    }
}

fn find_magic(b: &[u8]) -> Option<usize> {
    b.windows(MAGIC.len()).position(|w| w == MAGIC)
}

/// How many bytes at the end of `b` could be the start of a magic.
fn partial_magic_suffix(b: &[u8]) -> usize {
    (1..MAGIC.len())
        .rev()
        .find(|&k| b.len() >= k && b[b.len() - k..] == MAGIC[..k])
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(kind: Kind, epoch: u64, p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode(kind, epoch, p, &mut v);
        v
    }

    fn drain(d: &mut Decoder) -> Vec<Frame> {
        std::iter::from_fn(|| d.next_frame()).collect()
    }

    #[test]
    fn frames_round_trip_byte_by_byte() {
        let mut wire = enc(Kind::Hello, 7, b"");
        wire.extend(enc(Kind::Data, 7, &[0xab; 5000]));
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b));
            got.extend(drain(&mut d));
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].kind, Kind::Hello);
        assert_eq!(got[1].payload, vec![0xab; 5000]);
        assert_eq!(d.stats, DecodeStats::default());
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn oversized_payloads_are_split_into_bounded_frames() {
        let wire = enc(Kind::Data, 1, &vec![1u8; MAX_PAYLOAD * 2 + 3]);
        let mut d = Decoder::new();
        d.push(&wire);
        let lens: Vec<usize> = drain(&mut d).iter().map(|f| f.payload.len()).collect();
        assert_eq!(lens, vec![MAX_PAYLOAD, MAX_PAYLOAD, 3]);
    }

    #[test]
    fn a_torn_frame_before_a_new_session_costs_only_itself() {
        // An old session's frame cut after half its payload, then the new session.
        let old = enc(Kind::Data, 1, &[9u8; 1000]);
        let mut wire = old[..HEADER_LEN + 500].to_vec();
        wire.extend(vec![0u8; MAX_FRAME]); // the new owner's preamble
        wire.extend(enc(Kind::Hello, 2, b""));
        let mut d = Decoder::new();
        d.push(&wire);
        let got = drain(&mut d);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].kind, got[0].epoch), (Kind::Hello, 2));
        assert_eq!(d.stats.resyncs, 1);
    }

    #[test]
    fn a_corrupted_payload_is_dropped_and_the_next_frame_found() {
        let mut wire = enc(Kind::Data, 3, b"hello world");
        wire[HEADER_LEN + 2] ^= 1;
        wire.extend(enc(Kind::Data, 3, b"next"));
        let mut d = Decoder::new();
        d.push(&wire);
        let got = drain(&mut d);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload, b"next");
        assert!(d.stats.resyncs >= 1);
    }

    #[test]
    fn a_header_claiming_too_much_is_refused_without_waiting_for_it() {
        let mut h = Vec::new();
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&[3, 0, 0, 0]);
        h.extend_from_slice(&1u64.to_le_bytes());
        h.extend_from_slice(&u32::MAX.to_le_bytes());
        let c = crc32fast::hash(&h);
        h.extend_from_slice(&c.to_le_bytes());
        h.extend(enc(Kind::Reset, 1, b""));
        let mut d = Decoder::new();
        d.push(&h);
        let got = drain(&mut d);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, Kind::Reset);
    }

    #[test]
    fn garbage_never_grows_the_buffer() {
        let mut d = Decoder::new();
        let junk: Vec<u8> = (0..MAX_FRAME * 4)
            .map(|i| u8::try_from((i * 7 + 3) % 256).unwrap_or(0))
            .collect();
        for c in junk.chunks(4096) {
            d.push(c);
            assert!(drain(&mut d).is_empty());
            assert!(d.buffered() < MAX_FRAME + 4096);
        }
    }
}

/// The decoder against arbitrary input: a property test standing in for a fuzz target
/// (it runs in the normal test command).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn kind(k: u8) -> Kind {
        [Kind::Hello, Kind::HelloAck, Kind::Data, Kind::Reset][usize::from(k % 4)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes, in any chunking: no panic, and the buffer stays bounded.
        #[test]
        fn arbitrary_bytes_never_panic_or_grow(
            data in proptest::collection::vec(any::<u8>(), 0..200_000),
            chunk in 1usize..70_000,
        ) {
            let mut d = Decoder::new();
            for c in data.chunks(chunk) {
                d.push(c);
                while d.next_frame().is_some() {}
                prop_assert!(d.buffered() < MAX_FRAME + chunk);
            }
        }

        /// Valid frames with garbage between them and some of them cut short or corrupted:
        /// every frame left intact is decoded, in order, and nothing else is.
        #[test]
        fn intact_frames_survive_garbage_truncation_and_corruption(
            frames in proptest::collection::vec(
                (any::<u8>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..3000), 0u8..4, any::<u16>()),
                1..40,
            ),
            garbage in proptest::collection::vec(any::<u8>(), 0..500),
            chunk in 1usize..9000,
        ) {
            let mut wire = Vec::new();
            let mut expect = Vec::new();
            for (k, epoch, payload, fate, at) in &frames {
                let mut f = Vec::new();
                encode(kind(*k), *epoch, payload, &mut f);
                match fate {
                    // Cut short: a torn frame, then the zero preamble a new owner sends.
                    0 => {
                        f.truncate(usize::from(*at) % f.len());
                        f.extend(std::iter::repeat_n(0u8, MAX_FRAME));
                    }
                    // One byte flipped.
                    1 => {
                        let i = usize::from(*at) % f.len();
                        f[i] ^= 0x5a;
                    }
                    _ => expect.push(Frame { kind: kind(*k), epoch: *epoch, payload: payload.clone() }),
                }
                wire.extend_from_slice(&f);
                // Garbage that cannot hold a whole valid frame of its own.
                wire.extend_from_slice(&garbage);
            }
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                d.push(c);
                while let Some(f) = d.next_frame() {
                    got.push(f);
                }
            }
            prop_assert_eq!(got, expect);
        }
    }
}
