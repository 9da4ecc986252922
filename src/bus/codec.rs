//! The bus's wire format, version 1: what `tickwire ingest` publishes and
//! edges decode. Hand-written little-endian, like the binary subprotocol:
//! a batch is a fixed header then records of a few fixed fields, so a
//! general serializer would add a dependency and a format to pin for no
//! gain.
//!
//! ```text
//! header (24 bytes): magic "TW" | version u8 = 1 | kind u8 | count u32
//!                    | epoch u64 | batch u64
//! kind 1, a batch: `count` records, each
//!     channel u8 (0 quotes, 1 trades, 2 bars_1s, 3 bars_1m)
//!     | name length u8 (1..=16) | name
//!     | seq u64 | source time u64 (ns) | ingest time u64 (ns)
//!     | quote: bid i64, ask i64, bid size u32, ask size u32 (24 bytes)
//!     | trade: price i64, size u32 (12 bytes)
//!     | bar: open i64, high i64, low i64, close i64, vwap i64,
//!       volume u32, trades u32, closed u8 (0 or 1) (49 bytes; source
//!       time is the bar's start)
//! kind 2, a heartbeat (count 0; `batch` = the last batch number sent):
//!     feed state u8 | 3 bytes zero | interval u32 (ms)
//!     | latest-value interval u32 (ms) | 4 bytes zero | sent at u64 (ns)
//! ```
//!
//! Symbols travel by name, not by id: ids are interned per process and
//! differ between the ingest and every edge. A message that is not ours
//! (another magic), of an unknown version or kind, truncated, or with a
//! bad record is [`Garbage`]: the decoder returns an error and the caller
//! skips the whole message; nothing here panics on any input.

use crate::feed::FeedState;
use crate::tick::{Bar, Body, Channel, MAX_SYMBOL_LEN, Price, Tick, valid_symbol};

/// The first two bytes of every message.
pub const MAGIC: [u8; 2] = *b"TW";
/// The format version this module writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 24;
/// Bytes of a heartbeat.
pub const HEARTBEAT_LEN: usize = HEADER_LEN + 24;
/// Bytes of a quote record after its name.
const QUOTE_TAIL: usize = 24 + 24;
/// Bytes of a trade record after its name.
const TRADE_TAIL: usize = 24 + 12;
/// Bytes of a bar record after its name.
const BAR_TAIL: usize = 24 + 49;
/// The longest record: a bar with the longest name.
pub const MAX_RECORD_LEN: usize = 2 + MAX_SYMBOL_LEN + BAR_TAIL;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Updates.
    Batch,
    /// The ingest is alive.
    Heartbeat,
}

/// Why a message was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Garbage {
    /// Not a tickwire bus message (another magic, or too short to say).
    #[error("not a tickwire bus message")]
    NotOurs,
    /// A version or kind this build does not know (a newer ingest).
    #[error("unknown version {0} or kind")]
    Unknown(u8),
    /// Shorter than its header says.
    #[error("truncated")]
    Truncated,
    /// A record with a bad channel, name or length.
    #[error("bad record")]
    BadRecord,
}

/// A message's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Batch or heartbeat.
    pub kind: Kind,
    /// Records that follow (0 for a heartbeat).
    pub count: u32,
    /// The ingest's epoch number (the protocol's `e-<epoch>`).
    pub epoch: u64,
    /// A batch's number (1, 2, ... within the epoch); for a heartbeat, the
    /// last batch number sent.
    pub batch: u64,
}

/// A heartbeat's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The ingest's epoch.
    pub epoch: u64,
    /// The last batch number the ingest sent.
    pub last_batch: u64,
    /// The ingest's feed state.
    pub state: FeedState,
    /// How often the ingest sends a heartbeat.
    pub interval_ms: u32,
    /// The longest a stream's latest value in JetStream lags behind the
    /// live subject (the ingest's `--lvc-ms`).
    pub lvc_ms: u32,
    /// When it was sent (the ingest's clock, ns since the Unix epoch).
    pub sent_ns: u64,
}

/// One decoded record: a tick whose symbol is still a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The symbol's name.
    pub name: &'a str,
    /// The tick (its `sym` is 0: the reader interns `name`).
    pub tick: Tick,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Reads a message's header.
pub fn header(msg: &[u8]) -> Result<Header, Garbage> {
    if msg.len() < 2 || msg[..2] != MAGIC {
        return Err(Garbage::NotOurs);
    }
    if msg.len() < 4 {
        return Err(Garbage::Truncated);
    }
    if msg[2] != VERSION {
        return Err(Garbage::Unknown(msg[2]));
    }
    let kind = match msg[3] {
        1 => Kind::Batch,
        2 => Kind::Heartbeat,
        k => return Err(Garbage::Unknown(k)),
    };
    if msg.len() < HEADER_LEN {
        return Err(Garbage::Truncated);
    }
    Ok(Header { kind, count: u32_at(msg, 4), epoch: u64_at(msg, 8), batch: u64_at(msg, 16) })
}

/// Decodes every record of a batch `msg` whose header is `h`, calling
/// `each` on each in order. Checks the whole message first: on garbage
/// `each` is never called, so a caller never applies half a batch.
pub fn records<'a>(
    msg: &'a [u8],
    h: &Header,
    mut each: impl FnMut(Record<'a>),
) -> Result<(), Garbage> {
    let end = check_records(msg, h)?;
    debug_assert_eq!(end, msg.len());
    let mut at = HEADER_LEN;
    for _ in 0..h.count {
        let (record, next) = record_at(msg, at).ok_or(Garbage::BadRecord)?;
        each(record);
        at = next;
    }
    Ok(())
}

/// Walks the records without decoding them: where they end, or why not.
fn check_records(msg: &[u8], h: &Header) -> Result<usize, Garbage> {
    if h.kind != Kind::Batch {
        return Err(Garbage::BadRecord);
    }
    let mut at = HEADER_LEN;
    for _ in 0..h.count {
        let (_, next) = record_at(msg, at).ok_or(if msg.len() < at + 2 {
            Garbage::Truncated
        } else {
            Garbage::BadRecord
        })?;
        at = next;
    }
    if at != msg.len() {
        // Bytes after the last record: a count that does not match.
        return Err(Garbage::BadRecord);
    }
    Ok(at)
}

/// The record at `at` and where the next one starts; `None` if it is
/// truncated or bad.
fn record_at(msg: &[u8], at: usize) -> Option<(Record<'_>, usize)> {
    let ch = match *msg.get(at)? {
        0 => Channel::Quotes,
        1 => Channel::Trades,
        2 => Channel::Bars1s,
        3 => Channel::Bars1m,
        _ => return None,
    };
    let len = usize::from(*msg.get(at + 1)?);
    let name = std::str::from_utf8(msg.get(at + 2..at + 2 + len)?).ok()?;
    if !valid_symbol(name) {
        return None;
    }
    let f = at + 2 + len;
    let tail = match ch {
        Channel::Quotes => QUOTE_TAIL,
        Channel::Trades => TRADE_TAIL,
        Channel::Bars1s | Channel::Bars1m => BAR_TAIL,
    };
    let b = msg.get(f..f + tail)?;
    let price = |at: usize| Price(u64_at(b, at) as i64);
    let body = match ch {
        Channel::Quotes => Body::Quote {
            bid: Price(u64_at(b, 24) as i64),
            ask: Price(u64_at(b, 32) as i64),
            bid_size: u32_at(b, 40),
            ask_size: u32_at(b, 44),
        },
        Channel::Trades => Body::Trade { price: price(24), size: u32_at(b, 32) },
        Channel::Bars1s | Channel::Bars1m => Body::Bar(Bar {
            interval: ch,
            open: price(24),
            high: price(32),
            low: price(40),
            close: price(48),
            vwap: price(56),
            volume: u32_at(b, 64),
            trades: u32_at(b, 68),
            closed: match b[72] {
                0 => false,
                1 => true,
                _ => return None,
            },
        }),
    };
    let tick = Tick {
        sym: crate::tick::SymbolId(0),
        seq: u64_at(b, 0),
        src_ns: u64_at(b, 8),
        ingest_ns: u64_at(b, 16),
        body,
    };
    Some((Record { name, tick }, f + tail))
}

/// Reads a heartbeat.
pub fn heartbeat(msg: &[u8]) -> Result<Heartbeat, Garbage> {
    let h = header(msg)?;
    if h.kind != Kind::Heartbeat {
        return Err(Garbage::BadRecord);
    }
    if msg.len() != HEARTBEAT_LEN {
        return Err(Garbage::Truncated);
    }
    let state = match msg[HEADER_LEN] {
        0 => FeedState::Live,
        1 => FeedState::Stale,
        2 => FeedState::ReplayDone,
        _ => return Err(Garbage::BadRecord),
    };
    Ok(Heartbeat {
        epoch: h.epoch,
        last_batch: h.batch,
        state,
        interval_ms: u32_at(msg, HEADER_LEN + 4),
        lvc_ms: u32_at(msg, HEADER_LEN + 8),
        sent_ns: u64_at(msg, HEADER_LEN + 16),
    })
}

/// Encodes a heartbeat.
pub fn encode_heartbeat(hb: &Heartbeat) -> [u8; HEARTBEAT_LEN] {
    let mut out = [0u8; HEARTBEAT_LEN];
    write_header(&mut out, Kind::Heartbeat, 0, hb.epoch, hb.last_batch);
    out[HEADER_LEN] = hb.state as u8;
    out[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&hb.interval_ms.to_le_bytes());
    out[HEADER_LEN + 8..HEADER_LEN + 12].copy_from_slice(&hb.lvc_ms.to_le_bytes());
    out[HEADER_LEN + 16..].copy_from_slice(&hb.sent_ns.to_le_bytes());
    out
}

fn write_header(out: &mut [u8], kind: Kind, count: u32, epoch: u64, batch: u64) {
    out[..2].copy_from_slice(&MAGIC);
    out[2] = VERSION;
    out[3] = match kind {
        Kind::Batch => 1,
        Kind::Heartbeat => 2,
    };
    out[4..8].copy_from_slice(&count.to_le_bytes());
    out[8..16].copy_from_slice(&epoch.to_le_bytes());
    out[16..24].copy_from_slice(&batch.to_le_bytes());
}

/// Builds one batch in a reused buffer.
#[derive(Debug, Default)]
pub struct BatchWriter {
    buf: Vec<u8>,
    count: u32,
}

impl BatchWriter {
    /// Starts a batch (dropping whatever the buffer held).
    pub fn begin(&mut self, epoch: u64, batch: u64) {
        self.buf.clear();
        self.buf.resize(HEADER_LEN, 0);
        self.count = 0;
        write_header(&mut self.buf, Kind::Batch, 0, epoch, batch);
    }

    /// Appends a record: `tick` under the name `name` (a valid symbol).
    ///
    /// Hot path: no allocation once the buffer has grown to a batch's size.
    pub fn push(&mut self, tick: &Tick, name: &str) {
        debug_assert!(valid_symbol(name));
        let ch = tick.channel();
        self.buf.push(ch as u8);
        self.buf.push(name.len() as u8);
        self.buf.extend_from_slice(name.as_bytes());
        for w in [tick.seq, tick.src_ns, tick.ingest_ns] {
            self.buf.extend_from_slice(&w.to_le_bytes());
        }
        match tick.body {
            Body::Quote { bid, bid_size, ask, ask_size } => {
                self.buf.extend_from_slice(&bid.0.to_le_bytes());
                self.buf.extend_from_slice(&ask.0.to_le_bytes());
                self.buf.extend_from_slice(&bid_size.to_le_bytes());
                self.buf.extend_from_slice(&ask_size.to_le_bytes());
            }
            Body::Trade { price, size } => {
                self.buf.extend_from_slice(&price.0.to_le_bytes());
                self.buf.extend_from_slice(&size.to_le_bytes());
            }
            Body::Bar(b) => {
                for p in [b.open, b.high, b.low, b.close, b.vwap] {
                    self.buf.extend_from_slice(&p.0.to_le_bytes());
                }
                self.buf.extend_from_slice(&b.volume.to_le_bytes());
                self.buf.extend_from_slice(&b.trades.to_le_bytes());
                self.buf.push(u8::from(b.closed));
            }
        }
        self.count += 1;
    }

    /// Records in the batch.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes the batch takes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the batch has no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished message (the header's count filled in).
    pub fn finish(&mut self) -> &[u8] {
        let count = self.count;
        self.buf[4..8].copy_from_slice(&count.to_le_bytes());
        &self.buf
    }
}

/// The subject token of a symbol name: NATS splits subjects at `.` and
/// treats `*` and `>` as wildcards, so those (and `~`, the escape itself)
/// become `~` and two hex digits: `BRK.B` is `BRK~2EB`, one token.
pub fn subject_token(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for b in name.bytes() {
        match b {
            b'.' | b'*' | b'>' | b'~' => {
                out.push('~');
                out.push_str(&format!("{b:02X}"));
            }
            _ => out.push(b as char),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::SymbolId;

    fn quote(seq: u64) -> Tick {
        Tick {
            seq,
            ingest_ns: 7,
            ..Tick::quote(
                SymbolId(0),
                1_700_000_000_000_000_000,
                Price(1_923_100),
                200,
                Price(-1),
                3,
            )
        }
    }

    fn trade(seq: u64) -> Tick {
        Tick { seq, ingest_ns: 9, ..Tick::trade(SymbolId(0), 5, Price(i64::MAX), u32::MAX) }
    }

    fn batch(ticks: &[(Tick, &str)]) -> Vec<u8> {
        let mut w = BatchWriter::default();
        w.begin(42, 3);
        for (t, n) in ticks {
            w.push(t, n);
        }
        w.finish().to_vec()
    }

    fn decode(msg: &[u8]) -> Result<Vec<(String, Tick)>, Garbage> {
        let h = header(msg)?;
        let mut out = Vec::new();
        records(msg, &h, |r| out.push((r.name.to_string(), r.tick)))?;
        Ok(out)
    }

    #[test]
    fn batches_round_trip() {
        let ticks =
            [(quote(1), "AAPL"), (trade(2), "BRK.B"), (quote(u64::MAX), "ABCDEFGHIJKLMNOP")];
        let msg = batch(&ticks);
        let h = header(&msg).unwrap();
        // The header says what the writer was told.
        assert_eq!(h, Header { kind: Kind::Batch, count: 3, epoch: 42, batch: 3 });
        // Every field comes back, the symbol as its name.
        let back = decode(&msg).unwrap();
        let want: Vec<(String, Tick)> = ticks.iter().map(|(t, n)| (n.to_string(), *t)).collect();
        assert_eq!(back, want);
        // A quote record is 2 + name + 48 bytes; a trade 2 + name + 36.
        assert_eq!(msg.len(), HEADER_LEN + (2 + 4 + 48) + (2 + 5 + 36) + (2 + 16 + 48));
    }

    fn bar(seq: u64, interval: Channel, closed: bool) -> Tick {
        let b = Bar {
            interval,
            open: Price(100),
            high: Price(i64::MAX),
            low: Price(-5),
            close: Price(101),
            volume: u32::MAX,
            trades: 7,
            vwap: Price(100_5000),
            closed,
        };
        Tick { sym: SymbolId(0), seq, src_ns: 60_000_000_000, ingest_ns: 11, body: Body::Bar(b) }
    }

    #[test]
    fn bars_round_trip() {
        let ticks = [
            (bar(1, Channel::Bars1s, false), "SPY"),
            (bar(2, Channel::Bars1m, true), "BRK.B"),
            (trade(3), "SPY"),
        ];
        let msg = batch(&ticks);
        let back = decode(&msg).unwrap();
        let want: Vec<(String, Tick)> = ticks.iter().map(|(t, n)| (n.to_string(), *t)).collect();
        assert_eq!(back, want);
        // A bar record is 2 + name + 73 bytes.
        assert_eq!(msg.len(), HEADER_LEN + (2 + 3 + 73) + (2 + 5 + 73) + (2 + 3 + 36));
        // A closed flag other than 0 or 1 is a bad record, the batch refused.
        let mut bad = msg.clone();
        bad[HEADER_LEN + 2 + 3 + 72] = 2;
        assert_eq!(decode(&bad), Err(Garbage::BadRecord));
    }

    #[test]
    fn heartbeats_round_trip() {
        let hb = Heartbeat {
            epoch: 9,
            last_batch: 12,
            state: FeedState::Stale,
            interval_ms: 250,
            lvc_ms: 100,
            sent_ns: 123,
        };
        assert_eq!(heartbeat(&encode_heartbeat(&hb)), Ok(hb));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let good = batch(&[(quote(1), "AAPL"), (trade(2), "MSFT")]);
        // Not ours, another version, another kind.
        assert_eq!(decode(b"{\"hello\":1}"), Err(Garbage::NotOurs));
        assert_eq!(decode(b""), Err(Garbage::NotOurs));
        let mut v2 = good.clone();
        v2[2] = 2;
        assert_eq!(decode(&v2), Err(Garbage::Unknown(2)));
        let mut k9 = good.clone();
        k9[3] = 9;
        assert_eq!(decode(&k9), Err(Garbage::Unknown(9)));
        // Every truncation of a good batch is refused whole.
        for len in 0..good.len() {
            assert!(decode(&good[..len]).is_err(), "truncated at {len}");
        }
        // A count that does not match the records.
        let mut more = good.clone();
        more[4] = 3;
        assert!(decode(&more).is_err());
        let mut fewer = good.clone();
        fewer[4] = 1;
        assert_eq!(decode(&fewer), Err(Garbage::BadRecord));
        // A bad channel byte, a name that is no symbol.
        let mut ch = good.clone();
        ch[HEADER_LEN] = 7;
        assert_eq!(decode(&ch), Err(Garbage::BadRecord));
        let mut name = good.clone();
        name[HEADER_LEN + 2] = b' ';
        assert_eq!(decode(&name), Err(Garbage::BadRecord));
        // A heartbeat is not a batch, and the other way round.
        let hb = encode_heartbeat(&Heartbeat {
            epoch: 1,
            last_batch: 0,
            state: FeedState::Live,
            interval_ms: 1,
            lvc_ms: 1,
            sent_ns: 0,
        });
        assert!(decode(&hb).is_err());
        assert!(heartbeat(&good).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        // Mutations of a good batch and plain noise: decoding returns, and
        // a batch it accepts has the count its header says.
        let good = batch(&[(quote(1), "AAPL"), (trade(2), "MSFT"), (quote(3), "X")]);
        let mut rng = crate::feed::synthetic::SplitMix64::new(5);
        for i in 0..20_000 {
            let mut msg = if i % 2 == 0 {
                good.clone()
            } else {
                (0..rng.next_u64() % 200).map(|_| rng.next_u64() as u8).collect()
            };
            for _ in 0..1 + rng.next_u64() % 4 {
                if msg.is_empty() {
                    break;
                }
                let at = (rng.next_u64() % msg.len() as u64) as usize;
                msg[at] = rng.next_u64() as u8;
            }
            if let Ok(ticks) = decode(&msg) {
                assert_eq!(ticks.len() as u32, header(&msg).unwrap().count);
            }
            let _ = heartbeat(&msg);
        }
    }

    #[test]
    fn subject_tokens_are_one_token() {
        assert_eq!(subject_token("AAPL"), "AAPL");
        assert_eq!(subject_token("BRK.B"), "BRK~2EB");
        assert_eq!(subject_token("A*>~"), "A~2A~3E~7E");
        // Distinct names stay distinct.
        assert_ne!(subject_token("A.B"), subject_token("A~2EB"));
    }
}
