//! A command's output, capped: the first and last bytes are kept and what lies between
//! is dropped and counted, so a model sees how the output began and how it ended and
//! is told exactly how much it did not see. Memory stays at the cap whatever the
//! command writes.

use std::collections::VecDeque;

/// One stream's output, at most `limit` bytes of it kept.
#[derive(Debug)]
pub struct Capped {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    head_limit: usize,
    tail_limit: usize,
    total: u64,
}

impl Capped {
    pub fn new(limit: usize) -> Capped {
        let head_limit = limit / 2;
        Capped {
            head: Vec::new(),
            tail: VecDeque::new(),
            head_limit,
            tail_limit: limit - head_limit,
            total: 0,
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.head_limit - self.head.len();
        if room > 0 {
            let n = room.min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if data.len() >= self.tail_limit {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_limit..]);
            return;
        }
        let over = (self.tail.len() + data.len()).saturating_sub(self.tail_limit);
        self.tail.drain(..over);
        self.tail.extend(data);
    }

    /// Bytes written in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes not kept.
    pub fn dropped(&self) -> u64 {
        self.total - (self.head.len() + self.tail.len()) as u64
    }

    /// The kept output as text (invalid UTF-8 shown as U+FFFD), with a note where
    /// bytes were dropped naming how many, what was kept, and the stream.
    pub fn text(&self, stream: &str) -> String {
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let dropped = self.dropped();
        if dropped == 0 {
            // Whole: a character across the head and tail stays one character.
            let mut all = self.head.clone();
            all.extend_from_slice(&tail);
            return String::from_utf8_lossy(&all).into_owned();
        }
        let head = String::from_utf8_lossy(&self.head);
        let tail = String::from_utf8_lossy(&tail);
        format!(
            "{head}\n[... {dropped} bytes of {stream} dropped: it wrote {} bytes; the first {} and the last {} are shown ...]\n{tail}",
            self.total,
            self.head.len(),
            self.tail.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_under_the_limit_is_kept_whole() {
        let mut c = Capped::new(10);
        c.push(b"abc");
        c.push(b"defg");
        assert_eq!(c.text("stdout"), "abcdefg");
        assert_eq!(c.dropped(), 0);
        let mut exact = Capped::new(4);
        exact.push(b"ab");
        exact.push(b"cd");
        assert_eq!(exact.text("stdout"), "abcd");
    }

    #[test]
    fn the_middle_of_long_output_is_dropped_and_counted() {
        let mut c = Capped::new(6);
        for chunk in [&b"0123"[..], b"456789", b"ab", b"cdef"] {
            c.push(chunk);
        }
        assert_eq!(c.total(), 16);
        assert_eq!(c.dropped(), 10);
        assert_eq!(
            c.text("stderr"),
            "012\n[... 10 bytes of stderr dropped: it wrote 16 bytes; the first 3 and the last 3 are shown ...]\ndef"
        );
        // One huge chunk keeps its own head and tail.
        let mut big = Capped::new(4);
        big.push(&[b'x'; 1000]);
        big.push(b"yz");
        assert_eq!(big.dropped(), 998);
        assert_eq!(
            big.text("stdout"),
            "xx\n[... 998 bytes of stdout dropped: it wrote 1002 bytes; the first 2 and the last 2 are shown ...]\nyz"
        );
    }

    #[test]
    fn a_character_across_head_and_tail_survives_when_nothing_is_dropped() {
        let mut c = Capped::new(4);
        c.push("aé!".as_bytes()); // 4 bytes: the é straddles the 2-byte head
        assert_eq!(c.text("stdout"), "aé!");
    }

    #[test]
    fn a_zero_limit_keeps_nothing_and_says_so() {
        let mut c = Capped::new(0);
        c.push(b"abc");
        assert_eq!(c.dropped(), 3);
        assert!(c.text("stdout").contains("3 bytes of stdout dropped"));
    }
}
