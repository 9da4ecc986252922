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

/// The two streams a symbol has. The discriminant is the wire index used in
/// per-(channel, symbol) tables: `sym * 2 + channel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// Top-of-book quotes (`q` messages).
    Quotes = 0,
    /// Last-sale trades (`t` messages).
    Trades = 1,
}

impl Channel {
    /// Both channels, in wire order.
    pub const ALL: [Channel; 2] = [Channel::Quotes, Channel::Trades];

    /// The name used in the protocol (`"quotes"`, `"trades"`).
    pub fn name(self) -> &'static str {
        match self {
            Channel::Quotes => "quotes",
            Channel::Trades => "trades",
        }
    }

    /// Parses a protocol channel name.
    pub fn from_name(name: &str) -> Option<Channel> {
        match name {
            "quotes" => Some(Channel::Quotes),
            "trades" => Some(Channel::Trades),
            _ => None,
        }
    }
}

/// A set of channels (bit per [`Channel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channels(u8);

impl Channels {
    /// Quotes and trades.
    pub const BOTH: Channels = Channels(0b11);
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

    /// The channel this tick belongs to.
    pub fn channel(&self) -> Channel {
        match self.body {
            Body::Quote { .. } => Channel::Quotes,
            Body::Trade { .. } => Channel::Trades,
        }
    }

    /// Index of this tick's (channel, symbol) stream in per-stream tables.
    pub fn stream(&self) -> usize {
        stream_index(self.sym, self.channel())
    }
}

/// Index of a (channel, symbol) stream in per-stream tables.
pub fn stream_index(sym: SymbolId, ch: Channel) -> usize {
    sym.index() * 2 + ch as usize
}

impl Slotted for Tick {
    const WORDS: usize = 7;

    fn to_words(&self, out: &mut [u64]) {
        let (kind, p1, p2, s1, s2) = match self.body {
            Body::Quote { bid, bid_size, ask, ask_size } => {
                (0u64, bid.0, ask.0, bid_size, ask_size)
            }
            Body::Trade { price, size } => (1u64, price.0, 0, size, 0),
        };
        out[0] = u64::from(self.sym.0) | kind << 32;
        out[1] = self.seq;
        out[2] = self.src_ns;
        out[3] = self.ingest_ns;
        out[4] = p1 as u64;
        out[5] = p2 as u64;
        out[6] = u64::from(s1) | u64::from(s2) << 32;
    }

    fn from_words(w: &[u64]) -> Self {
        let sym = SymbolId(w[0] as u32);
        let (s1, s2) = (w[6] as u32, (w[6] >> 32) as u32);
        let body = if w[0] >> 32 == 0 {
            Body::Quote {
                bid: Price(w[4] as i64),
                bid_size: s1,
                ask: Price(w[5] as i64),
                ask_size: s2,
            }
        } else {
            Body::Trade { price: Price(w[4] as i64), size: s1 }
        };
        Tick { sym, seq: w[1], src_ns: w[2], ingest_ns: w[3], body }
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
