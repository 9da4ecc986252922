//! The data model every stage shares: [`Tick`], [`Price`], [`SymbolId`] and
//! the [`SymbolTable`] that interns ticker names.
//!
//! A `Tick` is a fixed-size `Copy` value (56 bytes, seven `u64` words in the
//! ring) so that the feed thread never allocates per update and the ring can
//! move it with plain word copies. Prices are fixed-point integers with four
//! implied decimals, as in NASDAQ ITCH and IEX: `Price(1_923_100)` is 192.31.
//! Nothing in this module does I/O.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ring::Slotted;

/// An interned ticker symbol: an index into the [`SymbolTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymbolId(pub u32);

impl SymbolId {
    /// The id as a table index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A fixed-point price with four implied decimals (`10_000` is 1.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Price(pub i64);

impl Price {
    /// Number of price units in one currency unit.
    pub const SCALE: i64 = 10_000;

    /// Rounds a float to the nearest price unit (for parsing and tests only).
    pub fn from_f64(value: f64) -> Price {
        Price((value * Self::SCALE as f64).round() as i64)
    }

    /// The price as a float (for display and tests only; never on the wire).
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / Self::SCALE as f64
    }
}

impl fmt::Display for Price {
    /// Shortest decimal form: `192.31`, `5`, `-0.0001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(24);
        write_price(&mut buf, *self);
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

/// Appends a fixed-point price as its shortest decimal form (`192.31`).
#[inline]
pub fn write_price(buf: &mut Vec<u8>, p: Price) {
    let v = p.0;
    if v < 0 {
        buf.push(b'-');
    }
    let abs = v.unsigned_abs();
    let scale = Price::SCALE as u64;
    buf.extend_from_slice(itoa::Buffer::new().format(abs / scale).as_bytes());
    let mut frac = abs % scale;
    if frac != 0 {
        buf.push(b'.');
        let mut digits = 4;
        while frac.is_multiple_of(10) {
            frac /= 10;
            digits -= 1;
        }
        let s = itoa::Buffer::new().format(frac).as_bytes().to_vec();
        for _ in s.len()..digits {
            buf.push(b'0');
        }
        buf.extend_from_slice(&s);
    }
}

/// The streams a symbol has. The discriminant is the wire index used in
/// per-(channel, symbol) tables: `sym * CHANNELS + channel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// Top-of-book quotes (`q` messages).
    Quotes = 0,
    /// Last-sale trades (`t` messages).
    Trades = 1,
    /// One-second OHLCV bars built from the trades (`b` messages).
    Bars1s = 2,
    /// One-minute OHLCV bars built from the trades (`b` messages).
    Bars1m = 3,
}

/// Channels per symbol: the stride of per-stream tables.
pub const CHANNELS: usize = 4;

impl Channel {
    /// Every channel, in wire order.
    pub const ALL: [Channel; CHANNELS] =
        [Channel::Quotes, Channel::Trades, Channel::Bars1s, Channel::Bars1m];

    /// The name used in the protocol (`"quotes"`, `"trades"`, `"bars_1s"`,
    /// `"bars_1m"`).
    pub fn name(self) -> &'static str {
        match self {
            Channel::Quotes => "quotes",
            Channel::Trades => "trades",
            Channel::Bars1s => "bars_1s",
            Channel::Bars1m => "bars_1m",
        }
    }

    /// Parses a protocol channel name.
    pub fn from_name(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The channel of index `i` (`ch as usize`), if any.
    pub fn from_index(i: usize) -> Option<Channel> {
        Channel::ALL.get(i).copied()
    }

    /// The bar interval of a bars channel, in nanoseconds.
    pub fn bar_ns(self) -> Option<u64> {
        match self {
            Channel::Bars1s => Some(1_000_000_000),
            Channel::Bars1m => Some(60_000_000_000),
            Channel::Quotes | Channel::Trades => None,
        }
    }
}

/// A set of channels (bit per [`Channel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channels(u8);

impl Channels {
    /// Quotes and trades: a `subscribe`'s default.
    pub const BOTH: Channels = Channels(0b11);
    /// Every channel.
    pub const ALL: Channels = Channels(0b1111);
    /// No channel.
    pub const EMPTY: Channels = Channels(0);

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `ch` is in the set.
    pub fn contains(self, ch: Channel) -> bool {
        self.0 & (1 << ch as u8) != 0
    }

    /// The channels in the set, in wire order.
    pub fn iter(self) -> impl Iterator<Item = Channel> {
        Channel::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    /// The channels in both sets.
    pub fn intersection(self, other: Channels) -> Channels {
        Channels(self.0 & other.0)
    }

    /// The set with `ch` added.
    pub fn with(self, ch: Channel) -> Channels {
        Channels(self.0 | 1 << ch as u8)
    }

    /// Number of channels in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Where (sym, ch) falls in a table of this set's channels laid out
    /// symbol by symbol: `sym * len + ch's rank in the set`.
    pub fn index_of(self, sym: SymbolId, ch: Channel) -> u32 {
        let rank = (self.0 & ((1u8 << ch as u8) - 1)).count_ones();
        sym.0 * self.len() as u32 + rank
    }
}

/// What a tick says: a top-of-book quote or a trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// Best bid and offer with their sizes (shares).
    Quote {
        /// Best bid price.
        bid: Price,
        /// Shares at the best bid.
        bid_size: u32,
        /// Best ask (offer) price.
        ask: Price,
        /// Shares at the best ask.
        ask_size: u32,
    },
    /// A last sale.
    Trade {
        /// Execution price.
        price: Price,
        /// Shares executed.
        size: u32,
    },
    /// An OHLCV bar of the trades in one interval (its channel says which),
    /// as it stands after its latest trade, or closed. The tick's `src_ns`
    /// is the bar's start on the source clock.
    Bar(Bar),
}

/// Open, high, low, close, volume, trade count and VWAP of the trades of
/// one interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// `bars_1s` or `bars_1m`.
    pub interval: Channel,
    /// First trade's price.
    pub open: Price,
    /// Highest price.
    pub high: Price,
    /// Lowest price.
    pub low: Price,
    /// Latest trade's price.
    pub close: Price,
    /// Shares traded.
    pub volume: u32,
    /// Trades.
    pub trades: u32,
    /// Volume-weighted average price.
    pub vwap: Price,
    /// The interval has passed on the source clock: the bar will not change
    /// again.
    pub closed: bool,
}

/// One normalized market-data update.
///
/// `seq` and `ingest_ns` are assigned by the feed thread (see
/// [`crate::feed`]); a source leaves them at 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick {
    /// The instrument.
    pub sym: SymbolId,
    /// Position in this (channel, symbol) stream: 1 for the first update of
    /// an epoch, +1 for every later one.
    pub seq: u64,
    /// Source time, nanoseconds since the Unix epoch (when the update was
    /// due or stamped by the exchange).
    pub src_ns: u64,
    /// When the feed thread normalized it, nanoseconds since the Unix epoch.
    pub ingest_ns: u64,
    /// The quote or trade itself.
    pub body: Body,
}

impl Tick {
    /// A quote with seq and ingest time left for the feed thread.
    pub fn quote(
        sym: SymbolId,
        src_ns: u64,
        bid: Price,
        bid_size: u32,
        ask: Price,
        ask_size: u32,
    ) -> Tick {
        Tick {
            sym,
            seq: 0,
            src_ns,
            ingest_ns: 0,
            body: Body::Quote { bid, bid_size, ask, ask_size },
        }
    }

    /// A trade with seq and ingest time left for the feed thread.
    pub fn trade(sym: SymbolId, src_ns: u64, price: Price, size: u32) -> Tick {
        Tick { sym, seq: 0, src_ns, ingest_ns: 0, body: Body::Trade { price, size } }
    }

    /// A stand-in for a stream with no value yet: `seq` 0, the channel's
    /// body, every field zero.
    pub fn placeholder(sym: SymbolId, ch: Channel) -> Tick {
        match ch {
            Channel::Quotes => Tick::quote(sym, 0, Price(0), 0, Price(0), 0),
            Channel::Trades => Tick::trade(sym, 0, Price(0), 0),
            Channel::Bars1s | Channel::Bars1m => Tick {
                sym,
                seq: 0,
                src_ns: 0,
                ingest_ns: 0,
                body: Body::Bar(Bar {
                    interval: ch,
                    open: Price(0),
                    high: Price(0),
                    low: Price(0),
                    close: Price(0),
                    volume: 0,
                    trades: 0,
                    vwap: Price(0),
                    closed: false,
                }),
            },
        }
    }

    /// The channel this tick belongs to.
    pub fn channel(&self) -> Channel {
        match self.body {
            Body::Quote { .. } => Channel::Quotes,
            Body::Trade { .. } => Channel::Trades,
            Body::Bar(b) => b.interval,
        }
    }

    /// Index of this tick's (channel, symbol) stream in per-stream tables.
    pub fn stream(&self) -> usize {
        stream_index(self.sym, self.channel())
    }
}

/// Index of a (channel, symbol) stream in per-stream tables.
pub fn stream_index(sym: SymbolId, ch: Channel) -> usize {
    sym.index() * CHANNELS + ch as usize
}

/// The (symbol, channel) of a stream index.
pub fn stream_of(stream: usize) -> (SymbolId, Channel) {
    let ch = Channel::from_index(stream % CHANNELS).expect("a channel index");
    (SymbolId((stream / CHANNELS) as u32), ch)
}

/// Seven words, so that a slot with its seqlock stamp fills one cache
/// line:
///
/// ```text
///        w0 (sym | kind << 32)   w1   w2      w3         w4     w5     w6
/// quote  sym | 0                 seq  src_ns  ingest_ns  bid    ask    bid_size | ask_size << 32
/// trade  sym | 1                 seq  src_ns  ingest_ns  price  0      size
/// bar    sym | (2 + start_s)     seq  see    ingest_ns  close  open-close | high-close << 32
///                                     below                    low-close | vwap-close << 32 (w6)
/// ```
///
/// A bar starts on a whole second (`start_s`, seconds since the Unix
/// epoch, in w0), so its `src_ns` needs no word of its own; w2 holds
/// `volume | trades << 32 | 1m << 62 | closed << 63` (30 bits of trades),
/// and the other prices are 32-bit offsets from the close (214,748 in
/// currency units either way; a bar wider than that is clamped).
impl Slotted for Tick {
    const WORDS: usize = 7;

    fn to_words(&self, out: &mut [u64]) {
        out[1] = self.seq;
        out[3] = self.ingest_ns;
        let sym = u64::from(self.sym.0);
        match self.body {
            Body::Quote { bid, bid_size, ask, ask_size } => {
                out[0] = sym;
                out[2] = self.src_ns;
                out[4] = bid.0 as u64;
                out[5] = ask.0 as u64;
                out[6] = u64::from(bid_size) | u64::from(ask_size) << 32;
            }
            Body::Trade { price, size } => {
                out[0] = sym | 1 << 32;
                out[2] = self.src_ns;
                out[4] = price.0 as u64;
                out[5] = 0;
                out[6] = u64::from(size);
            }
            Body::Bar(b) => {
                let start_s = (self.src_ns / 1_000_000_000).min(u64::from(u32::MAX) - 2);
                out[0] = sym | (2 + start_s) << 32;
                out[2] = u64::from(b.volume)
                    | u64::from(b.trades & ((1 << 30) - 1)) << 32
                    | u64::from(b.interval == Channel::Bars1m) << 62
                    | u64::from(b.closed) << 63;
                out[4] = b.close.0 as u64;
                let off = |p: Price| {
                    let d = p.0.saturating_sub(b.close.0);
                    u64::from(d.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32 as u32)
                };
                out[5] = off(b.open) | off(b.high) << 32;
                out[6] = off(b.low) | off(b.vwap) << 32;
            }
        }
    }

    fn from_words(w: &[u64]) -> Self {
        let sym = SymbolId(w[0] as u32);
        let (lo6, hi6) = (w[6] as u32, (w[6] >> 32) as u32);
        let (body, src_ns) = match w[0] >> 32 {
            0 => {
                let body = Body::Quote {
                    bid: Price(w[4] as i64),
                    bid_size: lo6,
                    ask: Price(w[5] as i64),
                    ask_size: hi6,
                };
                (body, w[2])
            }
            1 => (Body::Trade { price: Price(w[4] as i64), size: lo6 }, w[2]),
            start => {
                let close = w[4] as i64;
                let at = |off: u32| Price(close + i64::from(off as i32));
                let bar = Bar {
                    interval: if w[2] >> 62 & 1 == 1 { Channel::Bars1m } else { Channel::Bars1s },
                    open: at(w[5] as u32),
                    high: at((w[5] >> 32) as u32),
                    low: at(lo6),
                    close: Price(close),
                    volume: w[2] as u32,
                    trades: (w[2] >> 32) as u32 & ((1 << 30) - 1),
                    vwap: at(hi6),
                    closed: w[2] >> 63 == 1,
                };
                (Body::Bar(bar), (start - 2) * 1_000_000_000)
            }
        };
        Tick { sym, seq: w[1], src_ns, ingest_ns: w[3], body }
    }
}

/// Nanoseconds since the Unix epoch by the system clock.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Longest symbol name accepted (ITCH uses 8, options and crypto pairs more).
pub const MAX_SYMBOL_LEN: usize = 16;

/// Why a name could not be interned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymbolError {
    /// Empty, too long, or with characters outside printable ASCII (quotes
    /// and backslashes excluded so names never need JSON escaping).
    #[error("invalid symbol name")]
    Invalid,
    /// The table is full; raise `--max-symbols`.
    #[error("symbol table full ({0} symbols)")]
    Full(usize),
}

/// Checks that a name can be a symbol: 1..=16 printable ASCII characters,
/// no space, quote or backslash.
pub fn valid_symbol(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SYMBOL_LEN
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// Append-only interning table of symbol names, shared by every thread.
///
/// The feed thread interns; sessions look names up on subscribe; writer
/// shards copy new names into a local cache when they meet an id they do not
/// know yet, so the hot path never takes the lock.
pub struct SymbolTable {
    /// Names and the reverse map; a `RwLock` because writes happen only when
    /// a feed announces a new symbol and reads only on control paths.
    inner: RwLock<Names>,
    /// Number of interned symbols, readable without the lock.
    len: AtomicUsize,
    /// Most symbols the table (and the latest-value table) will hold.
    capacity: usize,
}

#[derive(Default)]
struct Names {
    names: Vec<Arc<str>>,
    by_name: HashMap<Arc<str>, SymbolId>,
}

impl SymbolTable {
    /// An empty table that holds at most `capacity` symbols.
    pub fn new(capacity: usize) -> SymbolTable {
        SymbolTable { inner: RwLock::new(Names::default()), len: AtomicUsize::new(0), capacity }
    }

    /// Most symbols the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Returns the id of `name`, adding it if it is new.
    pub fn intern(&self, name: &str) -> Result<SymbolId, SymbolError> {
        if let Some(id) = self.get(name) {
            return Ok(id);
        }
        if !valid_symbol(name) {
            return Err(SymbolError::Invalid);
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = inner.by_name.get(name) {
            return Ok(id);
        }
        if inner.names.len() >= self.capacity {
            return Err(SymbolError::Full(self.capacity));
        }
        let id = SymbolId(inner.names.len() as u32);
        let name: Arc<str> = Arc::from(name);
        inner.names.push(name.clone());
        inner.by_name.insert(name, id);
        self.len.store(inner.names.len(), Ordering::Release);
        Ok(id)
    }

    /// The id of a known name.
    pub fn get(&self, name: &str) -> Option<SymbolId> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).by_name.get(name).copied()
    }

    /// The name of a known id.
    pub fn name(&self, id: SymbolId) -> Option<Arc<str>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).names.get(id.index()).cloned()
    }

    /// Number of interned symbols (lock-free).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// True when nothing has been interned yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Names with ids `from..`, in id order (for extending a local cache).
    pub fn names_from(&self, from: usize) -> Vec<Arc<str>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.names.get(from..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// Known names starting with `prefix`, sorted.
    pub fn list(&self, prefix: &str) -> Vec<Arc<str>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Arc<str>> =
            inner.names.iter().filter(|n| n.starts_with(prefix)).cloned().collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(v: i64) -> String {
        let mut b = Vec::new();
        write_price(&mut b, Price(v));
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn prices_are_shortest_decimals() {
        // Trailing zeros of the four implied decimals are dropped...
        assert_eq!(price(1_923_100), "192.31");
        assert_eq!(price(50_000), "5");
        // ...leading zeros of the fraction are kept...
        assert_eq!(price(10_005), "1.0005");
        assert_eq!(price(1), "0.0001");
        // ...and negative prices (spreads, some futures) keep their sign.
        assert_eq!(price(-12_500), "-1.25");
        assert_eq!(price(i64::MIN), "-922337203685477.5808");
    }

    #[test]
    fn prices_match_a_float_reference() {
        // A simple reference: format the float with 4 decimals and trim.
        for v in [0i64, 7, 70, 700, 7000, 123_456_789, 99_999, 100_000, 3_1415] {
            let reference = format!("{:.4}", v as f64 / 1e4);
            let reference = reference.trim_end_matches('0').trim_end_matches('.');
            assert_eq!(price(v), reference, "price {v}");
        }
    }

    #[test]
    fn tick_round_trips_through_words() {
        let q = Tick {
            seq: 42,
            ingest_ns: 7,
            ..Tick::quote(SymbolId(9), 123, Price(-5), u32::MAX, Price(i64::MAX), 1)
        };
        let t = Tick { seq: u64::MAX, ..Tick::trade(SymbolId(u32::MAX), 1, Price(i64::MIN), 100) };
        for tick in [q, t] {
            let mut w = [0u64; 7];
            tick.to_words(&mut w);
            // Every field, including extreme values and the body kind, survives.
            assert_eq!(Tick::from_words(&w), tick);
        }
    }

    #[test]
    fn interning_is_stable_and_validated() {
        let table = SymbolTable::new(2);
        let a = table.intern("AAPL").unwrap();
        // Interning again returns the same id.
        assert_eq!(table.intern("AAPL").unwrap(), a);
        // Names that would need JSON escaping are refused.
        assert_eq!(table.intern("A\"B"), Err(SymbolError::Invalid));
        table.intern("MSFT").unwrap();
        // The capacity is a hard limit.
        assert_eq!(table.intern("NVDA"), Err(SymbolError::Full(2)));
        assert_eq!(table.list("M").len(), 1);
        assert_eq!(&*table.name(a).unwrap(), "AAPL");
    }
}
