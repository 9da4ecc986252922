//! tickwire's own raw-DEFLATE compressor (RFC 1951) for permessage-deflate,
//! sized for many connections: its whole state is a buffer of twice the
//! window and a hash table of 4,096 positions, 16 KiB at the default
//! window of 12 bits (zlib-rs holds 175 KiB whatever its settings:
//! BENCHMARKS.md, "permessage-deflate").
//!
//! How it compresses: LZ77 over the window (context takeover: a message
//! may refer to the ones before it), greedy, one candidate per hash of the
//! next four bytes (no chains), matches checked byte by byte so a stale
//! table entry can only cost ratio, never correctness; then the fixed
//! Huffman codes of RFC 1951 3.2.6 (`BTYPE=01`), which cost no table in the
//! stream: a message of 200 bytes cannot pay for a dynamic block's code
//! lengths. Each message is one fixed block, ended by the empty stored
//! block of a sync flush whose `00 00 ff ff` RFC 7692 has the sender strip;
//! a message that would come out larger than stored goes stored.
//!
//! The reference it is tested against is zlib-rs's inflate (the tests
//! below, and `benches/deflate.rs` for ratio and time).

/// Shortest match looked for (the hash covers four bytes; DEFLATE allows
/// three, which rarely pay with fixed codes).
const MIN_MATCH: usize = 4;
/// Longest match DEFLATE can say.
const MAX_MATCH: usize = 258;
/// Bits of the hash table's index: 4,096 entries of 16 bits.
const HASH_BITS: u32 = 12;
/// Largest stored block's payload.
const STORED_MAX: usize = 65_535;

/// The compressor of one connection (see the module docs).
pub struct Encoder {
    /// The last `window` bytes compressed (or fewer), then the message
    /// being compressed: `2 * window` bytes, slid down when full.
    buf: Box<[u8]>,
    /// Bytes of `buf` in use.
    len: usize,
    /// For each hash of four bytes, the last position in `buf` where they
    /// started (a hint: checked before use). An array, so that a hash
    /// needs no bounds check.
    head: Box<[u16; 1 << HASH_BITS]>,
    /// The LZ77 window: the farthest a match may reach back.
    window: usize,
}

impl Encoder {
    /// A compressor whose matches reach back at most `2^window_bits` bytes
    /// (9 to 15).
    pub fn new(window_bits: u8) -> Encoder {
        assert!((9..=15).contains(&window_bits), "window bits {window_bits}");
        let window = 1 << window_bits;
        Encoder {
            buf: vec![0; 2 * window].into_boxed_slice(),
            len: 0,
            head: Box::new([0; 1 << HASH_BITS]),
            window,
        }
    }

    /// Forgets every message compressed so far: the next one refers to
    /// none of them (`server_no_context_takeover`). Table entries stay: a
    /// match is only taken from before the current position, where every
    /// byte is then the new message's, and is checked against those bytes.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Appends `msg` compressed to `out`, flushed to a byte boundary, and
    /// without the `00 00 ff ff` that ends every flushed message (RFC 7692
    /// 7.2.1: the receiver appends it).
    pub fn compress(&mut self, msg: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        if msg.is_empty() {
            // The empty stored block's header alone (RFC 7692 7.2.3.6).
            out.push(0x00);
            return;
        }
        out.resize(start + bound(msg.len()), 0);
        let mut bits = Bits::new(&mut out[start..]);
        // BFINAL 0, BTYPE 01: a block with the fixed codes.
        bits.put(0b010, 3);
        for chunk in msg.chunks(self.window) {
            self.make_room(chunk.len());
            let end = self.len + chunk.len();
            self.buf[self.len..end].copy_from_slice(chunk);
            self.encode(self.len, end, &mut bits);
            self.len = end;
        }
        let (code, n) = LITERAL[256];
        bits.put(u32::from(code), n);
        // The sync flush: an empty stored block's header, then up to the
        // byte boundary; its `00 00 ff ff` is left to the receiver.
        bits.put(0, 3);
        let written = bits.finish();
        out.truncate(start + written);
        let stored = stored_len(msg.len());
        if written > stored {
            out.truncate(start);
            write_stored(msg, out);
        }
    }

    /// Makes room for `n` more bytes (at most the window): when `buf`
    /// cannot take them, keeps only its last `window` bytes, at its start.
    fn make_room(&mut self, n: usize) {
        if self.len + n <= self.buf.len() {
            return;
        }
        let shift = self.len - self.window.min(self.len);
        self.buf.copy_within(shift..self.len, 0);
        self.len -= shift;
        // Positions before the kept bytes become 0: a hint like any other.
        let shift = shift as u16;
        for h in self.head.iter_mut() {
            *h = h.saturating_sub(shift);
        }
    }

    /// Encodes `buf[from..end]`, whose bytes before `from` are the window.
    ///
    /// Hot path: no allocation; a table lookup and a compare per literal.
    fn encode(&mut self, from: usize, end: usize, bits: &mut Bits<'_>) {
        let buf = &self.buf[..end];
        let mut i = from;
        while i < end {
            if i + MIN_MATCH <= end {
                let word = read_u32(buf, i);
                let h = hash(word);
                let candidate = usize::from(self.head[h]);
                self.head[h] = i as u16;
                if candidate < i && i - candidate <= self.window && read_u32(buf, candidate) == word
                {
                    let len = match_len(buf, candidate, i, (end - i).min(MAX_MATCH));
                    put_match(bits, len, i - candidate);
                    // The match's last position starts the next likely
                    // repeat (a key after a value, the next message's
                    // head): worth a table entry.
                    let last = i + len - 1;
                    if last + MIN_MATCH <= end {
                        self.head[hash(read_u32(buf, last))] = last as u16;
                    }
                    i += len;
                    continue;
                }
            }
            let (code, n) = LITERAL[usize::from(buf[i])];
            bits.put(u32::from(code), n);
            i += 1;
        }
    }
}

/// The most bytes a message of `len` bytes compresses to: a literal takes
/// at most 9 bits, a match of 4 bytes or more at most 31, and the headers,
/// end of block and padding 20 (stored blocks take less).
pub fn bound(len: usize) -> usize {
    len + len / 8 + 8
}

/// The table index of four bytes (multiplicative hashing).
#[inline]
fn hash(word: u32) -> usize {
    (word.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
}

#[inline]
fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

/// How many bytes at `at` repeat those at `earlier` (at least
/// [`MIN_MATCH`], already checked), up to `max`; eight at a time.
#[inline]
fn match_len(buf: &[u8], earlier: usize, at: usize, max: usize) -> usize {
    let mut n = MIN_MATCH;
    while n + 8 <= max {
        let a = u64::from_le_bytes(buf[earlier + n..earlier + n + 8].try_into().expect("8"));
        let b = u64::from_le_bytes(buf[at + n..at + n + 8].try_into().expect("8"));
        let diff = a ^ b;
        if diff != 0 {
            return n + (diff.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    while n < max && buf[earlier + n] == buf[at + n] {
        n += 1;
    }
    n
}

/// Writes a match of `len` bytes `dist` back: its length code and extra
/// bits, then its distance code and extra bits.
#[inline]
fn put_match(bits: &mut Bits<'_>, len: usize, dist: usize) {
    let (code, n) = LENGTH[len - 3];
    bits.put(code, n);
    let x = (dist - 1) as u32;
    if x < 4 {
        bits.put(u32::from(DISTANCE[x as usize]), 5);
    } else {
        // Codes 4 and up: two per power of two, the bit under the top one
        // picks which; the bits below it are the extra bits.
        let top = 31 - x.leading_zeros();
        let code = 2 * top + ((x >> (top - 1)) & 1);
        let extra = top - 1;
        bits.put(u32::from(DISTANCE[code as usize]) | ((x & ((1 << extra) - 1)) << 5), 5 + extra);
    }
}

/// The size of `len` bytes in stored blocks, with the header of the
/// flush's empty stored block.
fn stored_len(len: usize) -> usize {
    len + 5 * len.div_ceil(STORED_MAX) + 1
}

/// Appends `msg` as stored blocks (`BTYPE=00`, from a byte boundary), then
/// the flush's empty stored block header.
fn write_stored(msg: &[u8], out: &mut Vec<u8>) {
    for chunk in msg.chunks(STORED_MAX) {
        let n = chunk.len() as u16;
        out.push(0x00);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.push(0x00);
}

/// A bit writer, least significant bit first (RFC 1951 3.1.1), into a
/// buffer sized for the worst case.
struct Bits<'a> {
    out: &'a mut [u8],
    /// Bytes written.
    at: usize,
    acc: u64,
    n: u32,
}

impl<'a> Bits<'a> {
    fn new(out: &'a mut [u8]) -> Bits<'a> {
        Bits { out, at: 0, acc: 0, n: 0 }
    }

    /// Appends the low `n` bits of `v` (at most 32).
    #[inline]
    fn put(&mut self, v: u32, n: u32) {
        self.acc |= u64::from(v) << self.n;
        self.n += n;
        if self.n >= 32 {
            self.out[self.at..self.at + 4].copy_from_slice(&(self.acc as u32).to_le_bytes());
            self.at += 4;
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    /// Writes out what is left, up to the byte boundary; returns the bytes
    /// written in all.
    fn finish(self) -> usize {
        let bytes = self.n.div_ceil(8) as usize;
        self.out[self.at..self.at + bytes].copy_from_slice(&self.acc.to_le_bytes()[..bytes]);
        self.at + bytes
    }
}

/// `code`'s low `n` bits in reverse order: Huffman codes are sent from
/// their most significant bit, into a stream filled from the least.
const fn reverse(code: u32, n: u32) -> u32 {
    code.reverse_bits() >> (32 - n)
}

/// The fixed literal/length code (RFC 1951 3.2.6) of symbols 0 to 256,
/// bit-reversed, and its length.
const LITERAL: [(u16, u32); 257] = {
    let mut t = [(0, 0); 257];
    let mut s = 0;
    while s < 257 {
        let (code, n) = fixed_code(s);
        t[s as usize] = (reverse(code, n) as u16, n);
        s += 1;
    }
    t
};

/// The fixed code of literal/length symbol `s`, and its length.
const fn fixed_code(s: u32) -> (u32, u32) {
    match s {
        0..=143 => (0x30 + s, 8),
        144..=255 => (0x190 + s - 144, 9),
        256..=279 => (s - 256, 7),
        _ => (0xC0 + s - 280, 8),
    }
}

/// First length of each length code 257 to 285, and its extra bits.
const LENGTH_BASE: [u32; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u32; 29] =
    [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];

/// For each match length 3 to 258: its code (bit-reversed) with the extra
/// bits above it, and the total bit count.
const LENGTH: [(u32, u32); 256] = {
    let mut t = [(0, 0); 256];
    let mut len = 3;
    while len <= 258 {
        // The last code whose base is at most `len` (258 has a code of its
        // own, 285, and must use it).
        let mut i = 28;
        while LENGTH_BASE[i] > len {
            i -= 1;
        }
        let (code, n) = fixed_code(257 + i as u32);
        let extra = LENGTH_EXTRA[i];
        t[len as usize - 3] = (reverse(code, n) | ((len - LENGTH_BASE[i]) << n), n + extra);
        len += 1;
    }
    t
};

/// The fixed 5-bit distance codes 0 to 29, bit-reversed.
const DISTANCE: [u16; 30] = {
    let mut t = [0; 30];
    let mut c = 0;
    while c < 30 {
        t[c as usize] = reverse(c, 5) as u16;
        c += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testing::{Receiver, frames};
    use super::*;

    /// Compresses `msgs` in order with one encoder and checks that one
    /// receiver (or a fresh one per message, with `reset_each`) gets every
    /// message back. Returns the compressed bytes.
    fn round_trip(window_bits: u8, reset_each: bool, msgs: &[Vec<u8>]) -> usize {
        let mut enc = Encoder::new(window_bits);
        let mut rx = Receiver::new(window_bits);
        let mut packed = 0;
        for (i, m) in msgs.iter().enumerate() {
            let mut out = Vec::new();
            enc.compress(m, &mut out);
            if reset_each {
                enc.reset();
                rx = Receiver::new(window_bits);
            }
            assert_eq!(rx.receive(&out), *m, "window {window_bits}, message {i}");
            // Never larger than stored.
            assert!(out.len() <= stored_len(m.len()), "{} > stored {}", out.len(), m.len());
            packed += out.len();
        }
        packed
    }

    #[test]
    fn the_tables_match_rfc_1951() {
        // Literal 0 is 00110000, sent from its first bit.
        assert_eq!(LITERAL[0], (0b0000_1100, 8));
        // End of block is seven zeros.
        assert_eq!(LITERAL[256], (0, 7));
        // Literal 255: 111111111 (9 bits).
        assert_eq!(LITERAL[255], (0x1ff, 9));
        // Length 3 is code 257 (0000001, reversed 1000000), no extra bits.
        assert_eq!(LENGTH[0], (0b100_0000, 7));
        // Length 258 is code 285 (11000101), not 284 with extra 31.
        assert_eq!(LENGTH[255], (reverse(0b1100_0101, 8), 8));
        // Length 12: code 265 (0001001) and extra bit 1.
        assert_eq!(LENGTH[9], (reverse(0b000_1001, 7) | 1 << 7, 8));
    }

    #[test]
    fn every_length_and_distance_decodes() {
        // A run of distinct bytes, then copies of it at every length, each
        // from a different distance up to the window.
        for window_bits in [9u8, 12, 15] {
            let window = 1usize << window_bits;
            let mut msg: Vec<u8> = (0..window as u32).map(|i| (i * 7 + i / 251) as u8).collect();
            let mut rng = 1u32;
            for len in MIN_MATCH..=MAX_MATCH {
                rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let dist = (rng as usize % (window - MAX_MATCH)) + len;
                let from = msg.len() - dist;
                let copy: Vec<u8> = msg[from..from + len].to_vec();
                msg.extend_from_slice(&copy);
                msg.push(0xAB);
            }
            round_trip(window_bits, false, &[msg]);
        }
    }

    #[test]
    fn many_messages_with_context_takeover_at_every_window() {
        let msgs = frames(3000);
        let plain: usize = msgs.iter().map(Vec::len).sum();
        for window_bits in 9..=15 {
            let packed = round_trip(window_bits, false, &msgs);
            // Context takeover is what pays: repeated keys and symbols
            // shrink to back-references.
            assert!(packed * 5 < plain * 2, "window {window_bits}: {packed} of {plain}");
        }
    }

    #[test]
    fn without_context_takeover_each_message_inflates_alone() {
        let msgs = frames(300);
        for window_bits in [9, 12, 15] {
            round_trip(window_bits, true, &msgs);
        }
    }

    #[test]
    fn large_empty_and_incompressible_messages() {
        let mut x = 0x2545_f491_u32;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let zeros = vec![0u8; 100_000];
        let msgs = vec![noise.clone(), Vec::new(), b"hello hello hello".to_vec(), zeros, noise];
        for window_bits in [9, 15] {
            let packed = round_trip(window_bits, false, &msgs);
            // The noise went stored, the zeros shrank to almost nothing.
            assert!(packed < 2 * stored_len(200_000) + 1000, "{packed}");
        }
    }

    #[test]
    fn the_servers_own_inflate_reads_it() {
        let msg = frames(50).concat();
        let mut out = Vec::new();
        Encoder::new(12).compress(&msg, &mut out);
        let mut back = Vec::new();
        super::super::inflate(&out, msg.len(), &mut back).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn memory_is_twice_the_window_and_the_table() {
        let e = Encoder::new(12);
        assert_eq!(e.buf.len() + 2 * e.head.len(), 16 * 1024);
    }

    /// Messages drawn from a small alphabet (many repeats), from all
    /// bytes, or from the bytes whose literal codes are longest, of any
    /// length up to past the largest window.
    fn message() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'{')], 0..3000),
            proptest::collection::vec(any::<u8>(), 0..300),
            // Only 9-bit literals: the worst case the output is sized for.
            proptest::collection::vec(144u8..=255, 0..3000),
            proptest::collection::vec(0u8..4, 30_000..40_000),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn random_messages_round_trip(
            msgs in proptest::collection::vec(message(), 1..12),
            window_bits in 9u8..=15,
            reset_each in any::<bool>(),
        ) {
            round_trip(window_bits, reset_each, &msgs);
        }
    }
}
