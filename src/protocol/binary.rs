//! Binary encoding of market data for `tickwire.v1.bin` sessions.
//!
//! A binary session gets its control messages as JSON text, exactly as a
//! JSON session does, and its market data (`q`, `t`, `snapshot`, `overflow`,
//! `heartbeat`) as binary frames: a 16-byte header followed by fixed-size
//! little-endian records, one per message. The layout is specified for
//! client authors in `docs/PROTOCOL.md` ("Binary subprotocol"); the offsets
//! below are that table.
//!
//! ```text
//! header  0 u8 magic 0x54 | 1 u8 flags (bit 0: stamps) | 2 u16 record_len
//!         4 u32 count | 8 u64 first_cseq
//! record  0 u8 kind | 1 u8 flags (bit 0: snapshot, bit 1: closed bar) | 2 u8 ch
//!         3 u8 0 | 4 u32 sym | 8 u64 seq | 16 u64 t | 24 i64 bp/p/c | 32 i64 ap/v
//!         40 u32 bs/s/n | 44 u32 as | 48 u64 cf | (stamps) 56 u64 ti | 64 u64 to
//!         (bars) B+0 i64 o | B+8 i64 h | B+16 i64 l | B+24 i64 vw
//! ```
//!
//! `B` is 56, or 72 with stamps: a session that subscribed to a bars
//! channel gets records 32 bytes longer, every record of its frames (the
//! header's `record_len` says so), so that a decoder that steps by
//! `record_len` and reads `ti`/`to` at 56 and 64 keeps working, and one
//! that does not know bars skips their kind.
//!
//! Like the JSON encoder, a record is split into what every subscriber of a
//! batch shares (everything but `flags` and `cf`, encoded once per batch by
//! the shard's encode cache) and what is per connection (`cf`, patched into
//! the copy with [`set_cf`]). The `cseq` of record *i* is `first_cseq + i`,
//! so it costs nothing per record. Nothing here allocates beyond the
//! growth of the caller's buffer.
//!
//! [`decode_header`] and [`decode_record`] are the reference decoder used by
//! the load tool and the tests.

use crate::protocol::json::Format;
use crate::tick::{Body, Channel, SymbolId, Tick};

/// First byte of every binary frame. A JSON frame always starts with `[`,
/// so this byte alone tells the socket task which frame type to send.
pub const MAGIC: u8 = 0x54;
/// Length of the frame header.
pub const HEADER_LEN: usize = 16;
/// Length of a record without stamps.
pub const RECORD_LEN: usize = 56;
/// Length of a record with the `ti`/`to` stamps (`stamps=1`).
pub const RECORD_LEN_STAMPS: usize = 72;
/// Bytes a session that takes bars adds to every record.
pub const BAR_EXTRA: usize = 32;
/// The longest record: stamps and bars.
const RECORD_MAX: usize = RECORD_LEN_STAMPS + BAR_EXTRA;
/// Record flag: a bar that is closed (`x`).
pub const RECORD_CLOSED: u8 = 2;
/// Header flag: the records carry `ti` and `to`.
pub const FRAME_STAMPS: u8 = 1;
/// Record flag: the record is a `snapshot`.
pub const RECORD_SNAPSHOT: u8 = 1;
/// Offset of `flags` in a record.
const FLAGS_AT: usize = 1;
/// Offset of `cf` in a record.
const CF_AT: usize = 48;

/// What a record is (its byte 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A quote (`q`, or a quotes `snapshot` with the snapshot flag).
    Quote = 1,
    /// A trade (`t`, or a trades `snapshot`).
    Trade = 2,
    /// An `overflow` (mode all): `seq` is `to_seq`, the price fields hold
    /// `from_seq` and `lost`.
    Overflow = 3,
    /// A `heartbeat`: only `t` is set.
    Heartbeat = 4,
    /// A bar (`b`, or a bars `snapshot`): `c` in the price, `v` in the ask
    /// price, `n` in the size, `o`/`h`/`l`/`vw` after the stamps.
    Bar = 5,
}

/// Record length for a session's format.
#[inline]
pub fn record_len(format: Format) -> usize {
    let base = if format.stamps { RECORD_LEN_STAMPS } else { RECORD_LEN };
    base + if format.bars { BAR_EXTRA } else { 0 }
}

/// Whether an encoded frame is a binary one (else it is JSON text).
#[inline]
pub fn is_binary_frame(frame: &[u8]) -> bool {
    frame.first() == Some(&MAGIC)
}

/// Starts a frame whose first record will have `cseq` `first_cseq`; the
/// count is filled in by [`finish_frame`].
pub fn begin_frame(buf: &mut Vec<u8>, format: Format, first_cseq: u64) {
    let mut h = [0u8; HEADER_LEN];
    h[0] = MAGIC;
    h[1] = if format.stamps { FRAME_STAMPS } else { 0 };
    h[2..4].copy_from_slice(&(record_len(format) as u16).to_le_bytes());
    h[8..16].copy_from_slice(&first_cseq.to_le_bytes());
    buf.extend_from_slice(&h);
}

/// Writes the record count into the header of a frame started at
/// `buf[0]`; returns it.
pub fn finish_frame(buf: &mut [u8]) -> u32 {
    let len = usize::from(u16::from_le_bytes([buf[2], buf[3]]));
    let count = ((buf.len() - HEADER_LEN) / len) as u32;
    buf[4..8].copy_from_slice(&count.to_le_bytes());
    count
}

/// A record being filled on the stack (no allocation), then appended.
struct Rec([u8; RECORD_MAX]);

impl Rec {
    fn new(kind: Kind, ch: Channel, sym: SymbolId) -> Rec {
        let mut r = [0u8; RECORD_MAX];
        r[0] = kind as u8;
        r[2] = ch as u8;
        r[4..8].copy_from_slice(&sym.0.to_le_bytes());
        Rec(r)
    }

    #[inline]
    fn u64(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    #[inline]
    fn u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn append(&self, buf: &mut Vec<u8>, format: Format) {
        buf.extend_from_slice(&self.0[..record_len(format)]);
    }
}

/// Appends the shared part of a quote or trade record: `flags` 0 and `cf`
/// 0, to be set per connection with [`set_cf`] and [`set_snapshot`].
///
/// Hot path: no allocation beyond `buf`'s growth.
#[inline]
pub fn write_record(buf: &mut Vec<u8>, tick: &Tick, format: Format, to_ns: u64) {
    let tu = format.time_unit;
    let (kind, p1, p2, s1, s2) = match tick.body {
        Body::Quote { bid, bid_size, ask, ask_size } => {
            (Kind::Quote, bid.0, ask.0, bid_size, ask_size)
        }
        Body::Trade { price, size } => (Kind::Trade, price.0, 0, size, 0),
        Body::Bar(b) => (Kind::Bar, b.close.0, i64::from(b.volume), b.trades, 0),
    };
    let mut r = Rec::new(kind, tick.channel(), tick.sym);
    if let Body::Bar(b) = tick.body
        && format.bars
    {
        if b.closed {
            r.0[FLAGS_AT] |= RECORD_CLOSED;
        }
        let base = if format.stamps { RECORD_LEN_STAMPS } else { RECORD_LEN };
        for (i, p) in [b.open, b.high, b.low, b.vwap].into_iter().enumerate() {
            r.u64(base + 8 * i, p.0 as u64);
        }
    }
    r.u64(8, tick.seq);
    r.u64(16, tu.from_ns(tick.src_ns));
    r.u64(24, p1 as u64);
    r.u64(32, p2 as u64);
    r.u32(40, s1);
    r.u32(44, s2);
    if format.stamps {
        r.u64(56, tu.from_ns(tick.ingest_ns));
        r.u64(64, tu.from_ns(to_ns));
    }
    r.append(buf, format);
}

/// Sets `cf` of the last record of `buf` (a record of `len` bytes).
#[inline]
pub fn set_cf(buf: &mut [u8], len: usize, cf: u64) {
    let at = buf.len() - len + CF_AT;
    buf[at..at + 8].copy_from_slice(&cf.to_le_bytes());
}

/// Marks the last record of `buf` (a record of `len` bytes) as a snapshot.
#[inline]
pub fn set_snapshot(buf: &mut [u8], len: usize) {
    let at = buf.len() - len + FLAGS_AT;
    buf[at] |= RECORD_SNAPSHOT;
}

/// Appends an `overflow` record: updates `from_seq..=to_seq` (`lost` of
/// them) of (ch, sym) were dropped.
pub fn write_overflow(
    buf: &mut Vec<u8>,
    ch: Channel,
    sym: SymbolId,
    from_seq: u64,
    to_seq: u64,
    lost: u64,
    format: Format,
) {
    let mut r = Rec::new(Kind::Overflow, ch, sym);
    r.u64(8, to_seq);
    r.u64(24, from_seq);
    r.u64(32, lost);
    r.append(buf, format);
}

/// Appends a `heartbeat` record with server time `t` (session unit).
pub fn write_heartbeat(buf: &mut Vec<u8>, t: u64, format: Format) {
    let mut r = Rec::new(Kind::Heartbeat, Channel::Quotes, SymbolId(0));
    r.u64(16, t);
    r.append(buf, format);
}

// ----- reference decoder -----------------------------------------------------

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Records carry `ti`/`to`.
    pub stamps: bool,
    /// Bytes per record.
    pub record_len: usize,
    /// Number of records.
    pub count: u32,
    /// `cseq` of the first record; record *i* has `first_cseq + i`.
    pub first_cseq: u64,
}

/// Why a binary frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than a header, or a first byte other than [`MAGIC`].
    #[error("not a tickwire.v1.bin frame")]
    NotBinary,
    /// The frame length disagrees with `count * record_len`.
    #[error("frame length does not match its record count")]
    BadLength,
}

/// Reads and checks a frame header.
pub fn decode_header(frame: &[u8]) -> Result<Header, DecodeError> {
    if frame.len() < HEADER_LEN || frame[0] != MAGIC {
        return Err(DecodeError::NotBinary);
    }
    let record_len = usize::from(u16::from_le_bytes([frame[2], frame[3]]));
    let count = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
    let first_cseq = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"));
    if record_len < RECORD_LEN || frame.len() != HEADER_LEN + record_len * count as usize {
        return Err(DecodeError::BadLength);
    }
    Ok(Header { stamps: frame[1] & FRAME_STAMPS != 0, record_len, count, first_cseq })
}

/// One decoded record, fields as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Byte 0: 1 quote, 2 trade, 3 overflow, 4 heartbeat, 5 bar.
    pub kind: u8,
    /// Byte 1: bit 0 snapshot, bit 1 closed bar.
    pub flags: u8,
    /// Byte 2: 0 quotes, 1 trades, 2 bars_1s, 3 bars_1m.
    pub ch: u8,
    /// Symbol id as announced in `subscribed`.
    pub sym: u32,
    /// `seq` (overflow: `to_seq`).
    pub seq: u64,
    /// `t` in the session's unit.
    pub t: u64,
    /// Bid price or trade price (overflow: `from_seq`).
    pub p1: i64,
    /// Ask price (overflow: `lost`).
    pub p2: i64,
    /// Bid size or trade size.
    pub s1: u32,
    /// Ask size.
    pub s2: u32,
    /// Conflation factor (1 or more on `q`/`t`; 0 elsewhere).
    pub cf: u64,
    /// Ingest stamp, when the frame has stamps.
    pub ti: Option<u64>,
    /// Send stamp, when the frame has stamps.
    pub to: Option<u64>,
    /// A bar's `o`, `h`, `l`, `vw`, when the frame's records are long
    /// enough for bars.
    pub bar: Option<[i64; 4]>,
}

/// Decodes record `i` of a frame whose header is `h` (`i < h.count`).
pub fn decode_record(frame: &[u8], h: &Header, i: usize) -> Record {
    let r = &frame[HEADER_LEN + i * h.record_len..][..h.record_len];
    let u64_at = |at: usize| u64::from_le_bytes(r[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(r[at..at + 4].try_into().expect("4 bytes"));
    Record {
        kind: r[0],
        flags: r[1],
        ch: r[2],
        sym: u32_at(4),
        seq: u64_at(8),
        t: u64_at(16),
        p1: u64_at(24) as i64,
        p2: u64_at(32) as i64,
        s1: u32_at(40),
        s2: u32_at(44),
        cf: u64_at(48),
        ti: h.stamps.then(|| u64_at(56)),
        to: h.stamps.then(|| u64_at(64)),
        bar: {
            let base = if h.stamps { RECORD_LEN_STAMPS } else { RECORD_LEN };
            (h.record_len >= base + BAR_EXTRA)
                .then(|| std::array::from_fn(|i| u64_at(base + 8 * i) as i64))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json::TimeUnit;
    use crate::tick::Price;

    fn fmt(stamps: bool) -> Format {
        Format { time_unit: TimeUnit::Us, stamps, binary: true, bars: false }
    }

    #[test]
    fn frame_of_every_kind_round_trips() {
        let quote = Tick {
            seq: 1047,
            ingest_ns: 2_000_000,
            ..Tick::quote(SymbolId(7), 1_000_000, Price(1_923_100), 300, Price(-5), 100)
        };
        let trade = Tick { seq: 12, ..Tick::trade(SymbolId(3), 4_000, Price(10_005), 9) };
        for stamps in [false, true] {
            let mut buf = Vec::new();
            begin_frame(&mut buf, fmt(stamps), 41);
            let len = record_len(fmt(stamps));
            write_record(&mut buf, &quote, fmt(stamps), 3_000_000);
            set_cf(&mut buf, len, 6);
            write_record(&mut buf, &trade, fmt(stamps), 3_000_000);
            set_snapshot(&mut buf, len);
            write_overflow(&mut buf, Channel::Trades, SymbolId(3), 13, 20, 8, fmt(stamps));
            write_heartbeat(&mut buf, 99, fmt(stamps));
            assert_eq!(finish_frame(&mut buf), 4);
            // Header and records are fixed-size and 8-byte aligned.
            assert_eq!(buf.len(), HEADER_LEN + 4 * len);
            assert_eq!(len % 8, 0);
            let h = decode_header(&buf).unwrap();
            assert_eq!(h, Header { stamps, record_len: len, count: 4, first_cseq: 41 });
            let r: Vec<Record> = (0..4).map(|i| decode_record(&buf, &h, i)).collect();
            // The quote keeps every field, in the session's unit (us here).
            let stamp = |v| stamps.then_some(v);
            assert_eq!(
                r[0],
                Record {
                    kind: 1,
                    flags: 0,
                    ch: 0,
                    sym: 7,
                    seq: 1047,
                    t: 1000,
                    p1: 1_923_100,
                    p2: -5,
                    s1: 300,
                    s2: 100,
                    cf: 6,
                    ti: stamp(2000),
                    to: stamp(3000),
                    bar: None,
                }
            );
            // The trade is a snapshot on channel trades, cf 0 like JSON's absent cf.
            assert_eq!((r[1].kind, r[1].flags, r[1].ch, r[1].sym), (2, RECORD_SNAPSHOT, 1, 3));
            assert_eq!((r[1].seq, r[1].p1, r[1].s1, r[1].cf), (12, 10_005, 9, 0));
            // The overflow names its range and count.
            assert_eq!((r[2].kind, r[2].ch, r[2].sym), (3, 1, 3));
            assert_eq!((r[2].p1, r[2].seq, r[2].p2), (13, 20, 8));
            // The heartbeat carries only its time.
            assert_eq!((r[3].kind, r[3].t, r[3].seq), (4, 99, 0));
        }
    }

    #[test]
    fn frames_are_told_apart_by_their_first_byte() {
        let mut buf = Vec::new();
        begin_frame(&mut buf, fmt(false), 1);
        // A binary frame starts with the magic byte, a JSON frame with `[`.
        assert!(is_binary_frame(&buf));
        assert!(!is_binary_frame(b"[{\"type\":\"heartbeat\"}]"));
        // A truncated frame is refused, not misread.
        write_heartbeat(&mut buf, 1, fmt(false));
        finish_frame(&mut buf);
        assert_eq!(decode_header(&buf[..buf.len() - 1]), Err(DecodeError::BadLength));
        assert_eq!(decode_header(b"[]"), Err(DecodeError::NotBinary));
    }

    /// The bytes of one frame of every kind, pinned: the same hex is decoded
    /// by the JavaScript client's test (tests/browser/binary.test.mjs), so
    /// encoder, decoder and docs/PROTOCOL.md cannot drift apart unnoticed.
    const GOLDEN: &str = "54014800040000000900000000000000010000000700000017040000000000005e24f0be9a0100001c581d0000000000fbffffffffffffff2c0100006400000006000000000000005f24f0be9a0100006024f0be9a01000002010100030000000c000000000000005e24f0be9a01000015270000000000000000000000000000090000000000000000000000000000005f24f0be9a0100006024f0be9a0100000300010003000000140000000000000000000000000000000d0000000000000008000000000000000000000000000000000000000000000000000000000000000000000000000000040000000000000000000000000000004828f0be9a010000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn golden_frame_is_stable() {
        let f = Format { time_unit: TimeUnit::Ms, stamps: true, binary: true, bars: false };
        let (src, ingest, to) =
            (1_764_140_000_350_000_000, 1_764_140_000_351_000_000, 1_764_140_000_352_000_000);
        let quote = Tick {
            seq: 1047,
            ingest_ns: ingest,
            ..Tick::quote(SymbolId(7), src, Price(1_923_100), 300, Price(-5), 100)
        };
        let trade =
            Tick { seq: 12, ingest_ns: ingest, ..Tick::trade(SymbolId(3), src, Price(10_005), 9) };
        let mut buf = Vec::new();
        begin_frame(&mut buf, f, 9);
        write_record(&mut buf, &quote, f, to);
        set_cf(&mut buf, RECORD_LEN_STAMPS, 6);
        write_record(&mut buf, &trade, f, to);
        set_snapshot(&mut buf, RECORD_LEN_STAMPS);
        write_overflow(&mut buf, Channel::Trades, SymbolId(3), 13, 20, 8, f);
        write_heartbeat(&mut buf, 1_764_140_001_352, f);
        finish_frame(&mut buf);
        let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        // A change here is a wire-format change: update the docs and the JS test.
        assert_eq!(hex, GOLDEN);
    }

    /// Frames of a session that takes bars, pinned like [`GOLDEN`] (and
    /// decoded from the same hex by tests/browser/binary.test.mjs), without
    /// and with stamps: a bars_1s update (cf 3), a closed bars_1m snapshot,
    /// a quote and a bars_1s overflow, every record 32 bytes longer.
    const GOLDEN_BARS: [&str; 2] = [
        "54005800040000001500000000000000050002000700000005000000000000000023f0be9a010000e4581d0000000000b004000000000000040000000000000003000000000000001c581d0000000000ac591d000000000054571d000000000090581d00000000000503030003000000280000000000000080eaeebe9a010000422700000000000088130000000000000c00000000000000000000000000000015270000000000007427000000000000ac260000000000002427000000000000010000000700000017040000000000005e24f0be9a0100001c581d0000000000e4581d00000000002c010000640000000100000000000000000000000000000000000000000000000000000000000000000000000000000003000200070000000900000000000000000000000000000006000000000000000400000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "54016800040000001500000000000000050002000700000005000000000000000023f0be9a010000e4581d0000000000b004000000000000040000000000000003000000000000005f24f0be9a0100006024f0be9a0100001c581d0000000000ac591d000000000054571d000000000090581d00000000000503030003000000280000000000000080eaeebe9a010000422700000000000088130000000000000c0000000000000000000000000000005f24f0be9a0100006024f0be9a01000015270000000000007427000000000000ac260000000000002427000000000000010000000700000017040000000000005e24f0be9a0100001c581d0000000000e4581d00000000002c0100006400000001000000000000005f24f0be9a0100006024f0be9a01000000000000000000000000000000000000000000000000000000000000000000000300020007000000090000000000000000000000000000000600000000000000040000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    ];

    #[test]
    fn golden_bars_frames_are_stable() {
        let (ingest, to) = (1_764_140_000_351_000_000, 1_764_140_000_352_000_000);
        // Prices o, h, l, c, vw in fixed point.
        let bar = |interval, [o, h, l, c, vw]: [i64; 5], volume, trades, closed| {
            let [open, high, low, close, vwap] = [o, h, l, c, vw].map(Price);
            Body::Bar(crate::tick::Bar {
                interval,
                open,
                high,
                low,
                close,
                volume,
                trades,
                vwap,
                closed,
            })
        };
        // The open 1 s bar of 06:53:20 UTC, and the closed minute 06:52-06:53.
        let prices = [1_923_100, 1_923_500, 1_922_900, 1_923_300, 1_923_216];
        let second = Tick {
            sym: SymbolId(7),
            seq: 5,
            src_ns: 1_764_140_000_000_000_000,
            ingest_ns: ingest,
            body: bar(Channel::Bars1s, prices, 1200, 4, false),
        };
        let minute = Tick {
            sym: SymbolId(3),
            seq: 40,
            src_ns: 1_764_139_920_000_000_000,
            ingest_ns: ingest,
            body: bar(Channel::Bars1m, [10_005, 10_100, 9_900, 10_050, 10_020], 5000, 12, true),
        };
        let (src, bid, ask) = (1_764_140_000_350_000_000, Price(1_923_100), Price(1_923_300));
        let quote = Tick {
            seq: 1047,
            ingest_ns: ingest,
            ..Tick::quote(SymbolId(7), src, bid, 300, ask, 100)
        };
        for (stamps, golden) in [false, true].into_iter().zip(GOLDEN_BARS) {
            let f = Format { time_unit: TimeUnit::Ms, stamps, binary: true, bars: true };
            let len = record_len(f);
            assert_eq!(len, if stamps { 104 } else { 88 });
            let mut buf = Vec::new();
            begin_frame(&mut buf, f, 21);
            write_record(&mut buf, &second, f, to);
            set_cf(&mut buf, len, 3);
            write_record(&mut buf, &minute, f, to);
            set_snapshot(&mut buf, len);
            write_record(&mut buf, &quote, f, to);
            set_cf(&mut buf, len, 1);
            write_overflow(&mut buf, Channel::Bars1s, SymbolId(7), 6, 9, 4, f);
            finish_frame(&mut buf);
            // The reference decoder reads the bar's fields back.
            let h = decode_header(&buf).unwrap();
            let r = decode_record(&buf, &h, 1);
            assert_eq!((r.kind, r.flags, r.ch), (5, RECORD_SNAPSHOT | RECORD_CLOSED, 3));
            assert_eq!((r.p1, r.p2, r.s1), (10_050, 5000, 12));
            assert_eq!(r.bar, Some([10_005, 10_100, 9_900, 10_020]));
            let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
            // A change here is a wire-format change: update the docs and the JS test.
            assert_eq!(hex, golden, "stamps: {stamps}");
        }
    }
}
