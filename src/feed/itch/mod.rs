//! NASDAQ TotalView-ITCH 5.0: framing, message decoding, and the
//! [`Normalizer`] that turns a message stream into quotes and trades by
//! keeping a full order book per stock ([`book`]).
//!
//! # Framing
//!
//! As in NASDAQ's binary files, every message is preceded by its length as a
//! 2-byte big-endian integer. Every message type has one fixed length
//! ([`spec_len`]). A frame of an unknown type, a frame whose length is not
//! its type's length, an empty frame and a truncated final frame are *bad
//! records*: skipped, counted ([`ItchStats::bad_records`]) and reported as a
//! [`Skip`], never fatal. A frame's length is read before its bytes, and
//! bytes of a bad frame are skipped without being stored, so garbage costs no
//! allocation.
//!
//! # What becomes a tick
//!
//! [`decode`] reads one frame into a [`Message`] without copying more than
//! 8-byte fields. The [`Normalizer`] applies it:
//!
//! - `R` (stock directory) names a stock locate: the name (8 bytes, right
//!   padded with spaces) is interned in the [`SymbolTable`].
//! - `A`/`F`/`E`/`C`/`X`/`D`/`U` change the book. Whenever a stock's best bid
//!   or best offer changes (price or size), a quote is emitted (an empty
//!   side is price 0, size 0). A replace emits at most one quote.
//! - Trades come from `E` (at the resting order's price), `C` when printable
//!   (at the execution price), `P`, and `Q` when its shares are above 0. For
//!   an execution, the trade comes before the quote it causes.
//! - `S`, `H`, `B` are decoded but produce no tick (a broken trade cannot be
//!   taken back from subscribers); every other known type is only counted.
//!
//! The [`Normalizer`] stamps a tick with its message's timestamp as on the
//! wire, nanoseconds since midnight; the [`ItchReader`] adds the UTC time of
//! that midnight in New York on the file's trading day ([`clock`]), so the
//! ticks it yields carry UTC times since the Unix epoch like every other
//! format's.
//!
//! **Stocks without a directory entry.** Messages for a locate that no `R`
//! has named yet still update that locate's book, but their ticks are
//! dropped (counted in [`ItchStats::unnamed_ticks`]): the book is then right
//! as soon as the name arrives, and no tick is published under a made-up
//! name. NASDAQ sends the whole directory before the first order, so this
//! only happens on files cut from the middle of a day.
//!
//! **Inconsistent order flow** (a reference not on the book, executing or
//! cancelling more shares than the order has, adding a reference twice) is
//! not a bad record: the frame is well formed. It is counted in
//! [`ItchStats::unknown_orders`] / [`ItchStats::inconsistent`] and applied as
//! far as it makes sense (see [`book`]).

pub mod book;
pub mod clock;
// `gen` is a reserved word since edition 2024: the file keeps the short
// name, callers use the re-export.
pub mod r#gen;

pub use self::r#gen::generate;

use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use self::book::{Bbo, OrderBooks, Side};
use self::clock::{DateOrigin, TradingDay};
use crate::record_reader::{RecordReader, Skip, open_input_counted};
use crate::tick::{Price, SymbolId, SymbolTable, Tick};

/// Length of a message of `kind` per the ITCH 5.0 specification (type byte
/// included, length prefix excluded); `None` for a type ITCH 5.0 does not
/// define.
pub const fn spec_len(kind: u8) -> Option<usize> {
    let len = match kind {
        b'S' => 12,
        b'R' => 39,
        b'H' => 25,
        b'Y' => 20,
        b'L' => 26,
        b'V' => 35,
        b'W' => 12,
        b'K' => 28,
        b'J' => 35,
        b'h' => 21,
        b'A' => 36,
        b'F' => 40,
        b'E' => 31,
        b'C' => 36,
        b'X' => 23,
        b'D' => 19,
        b'U' => 35,
        b'P' => 44,
        b'Q' => 40,
        b'B' => 19,
        b'I' => 50,
        b'N' => 20,
        b'O' => 48,
        _ => return None,
    };
    Some(len)
}

/// Every message type ITCH 5.0 defines, in specification order.
pub const KNOWN_TYPES: &[u8] = b"SRHYLVWKJhAFECXDUPQBINO";

/// Longest message of any type (`I`, 50 bytes).
pub const MAX_MESSAGE_LEN: usize = 50;

/// Why a frame was not a usable message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// A frame of length 0.
    Empty,
    /// The type byte is not an ITCH 5.0 message type.
    UnknownType(u8),
    /// The frame's length is not the type's specified length.
    Length {
        /// The type byte.
        kind: u8,
        /// The frame's length.
        len: usize,
    },
    /// The file ends inside a frame.
    Truncated,
    /// An add order whose side is neither `B` nor `S`.
    Side(u8),
}

impl Bad {
    /// A short reason, for [`Skip::why`].
    pub fn why(self) -> &'static str {
        match self {
            Bad::Empty => "empty ITCH frame",
            Bad::UnknownType(_) => "unknown ITCH message type",
            Bad::Length { .. } => "ITCH frame length does not match its type",
            Bad::Truncated => "truncated ITCH frame",
            Bad::Side(_) => "ITCH add order side is neither B nor S",
        }
    }
}

/// An 8-byte stock symbol, right-padded with spaces, as on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stock(pub [u8; 8]);

impl Stock {
    /// The symbol without its padding, if it is ASCII (`None` otherwise).
    pub fn trimmed(&self) -> Option<&str> {
        let end = self.0.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
        std::str::from_utf8(&self.0[..end]).ok().filter(|s| s.is_ascii())
    }
}

impl std::fmt::Debug for Stock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// The header every message starts with, after its type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Locate code of the security (0 for market-wide messages).
    pub locate: u16,
    /// NASDAQ internal tracking number.
    pub tracking: u16,
    /// Nanoseconds since midnight (6 bytes on the wire).
    pub ts: u64,
}

/// One decoded ITCH 5.0 message. Prices are the raw `Price(4)` fields (4
/// implied decimals); every field has its specification name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// `S`: a market or feed event (`O` start of messages, `S`/`Q`/`M`/`E`
    /// system and market hours, `C` end of messages).
    SystemEvent {
        /// Common header.
        header: Header,
        /// The event code.
        event_code: u8,
    },
    /// `R`: names a stock locate for the day.
    StockDirectory {
        /// Common header (its locate is the one being named).
        header: Header,
        /// Symbol.
        stock: Stock,
        /// Listing market (`Q`, `G`, `S`, `N`, `A`, `P`, `Z`, `V`, ` `).
        market_category: u8,
        /// Financial status (`N` normal, `D` deficient, ...).
        financial_status_indicator: u8,
        /// Shares in a round lot.
        round_lot_size: u32,
        /// `Y` if only round lots are accepted.
        round_lots_only: u8,
        /// Security class (`C` common stock, `Q` ETF...).
        issue_classification: u8,
        /// Security sub-type (`Z ` not applicable...).
        issue_sub_type: [u8; 2],
        /// `P` production, `T` test.
        authenticity: u8,
        /// Reg SHO 203(b)(3) threshold indicator.
        short_sale_threshold_indicator: u8,
        /// IPO flag.
        ipo_flag: u8,
        /// LULD reference price tier.
        luld_ref: u8,
        /// `Y` for an exchange-traded product.
        etp_flag: u8,
        /// ETP leverage factor.
        etp_leverage_factor: u32,
        /// `Y` for an inverse ETP.
        inverse_indicator: u8,
    },
    /// `H`: the trading state of a stock changed.
    TradingAction {
        /// Common header.
        header: Header,
        /// Symbol.
        stock: Stock,
        /// `H` halted, `P` paused, `Q` quotation only, `T` trading.
        trading_state: u8,
        /// Reserved.
        reserved: u8,
        /// Reason code.
        reason: [u8; 4],
    },
    /// `A` (no attribution) or `F` (with the market participant id).
    AddOrder {
        /// Common header.
        header: Header,
        /// The new order's reference.
        order_ref: u64,
        /// Buy or sell.
        side: Side,
        /// Displayed shares.
        shares: u32,
        /// Symbol.
        stock: Stock,
        /// Limit price.
        price: u32,
        /// The MPID of an `F` message; `None` for `A`.
        attribution: Option<[u8; 4]>,
    },
    /// `E`: part or all of a resting order executed at its price.
    Executed {
        /// Common header.
        header: Header,
        /// The resting order.
        order_ref: u64,
        /// Shares executed.
        executed_shares: u32,
        /// Trade id.
        match_number: u64,
    },
    /// `C`: part or all of a resting order executed at another price.
    ExecutedWithPrice {
        /// Common header.
        header: Header,
        /// The resting order.
        order_ref: u64,
        /// Shares executed.
        executed_shares: u32,
        /// Trade id.
        match_number: u64,
        /// `Y` if the trade should be shown on time and sales.
        printable: u8,
        /// Execution price.
        execution_price: u32,
    },
    /// `X`: part of an order was cancelled.
    Cancel {
        /// Common header.
        header: Header,
        /// The order.
        order_ref: u64,
        /// Shares removed.
        cancelled_shares: u32,
    },
    /// `D`: the rest of an order was removed.
    Delete {
        /// Common header.
        header: Header,
        /// The order.
        order_ref: u64,
    },
    /// `U`: an order was replaced by a new one (same side and stock).
    Replace {
        /// Common header.
        header: Header,
        /// The order removed.
        order_ref: u64,
        /// The order added.
        new_order_ref: u64,
        /// Shares of the new order.
        shares: u32,
        /// Price of the new order.
        price: u32,
    },
    /// `P`: an execution against a non-displayed order.
    Trade {
        /// Common header.
        header: Header,
        /// Always 0 since 2010.
        order_ref: u64,
        /// Raw side byte (always `B` since 2014).
        side: u8,
        /// Shares executed.
        shares: u32,
        /// Symbol.
        stock: Stock,
        /// Execution price.
        price: u32,
        /// Trade id.
        match_number: u64,
    },
    /// `Q`: the result of an opening, closing, halt or IPO cross.
    Cross {
        /// Common header.
        header: Header,
        /// Shares matched (8 bytes on the wire).
        shares: u64,
        /// Symbol.
        stock: Stock,
        /// Cross price.
        cross_price: u32,
        /// Trade id.
        match_number: u64,
        /// `O`, `C`, `H` or `I`.
        cross_type: u8,
    },
    /// `B`: a trade previously reported was broken.
    BrokenTrade {
        /// Common header.
        header: Header,
        /// Trade id of the broken trade.
        match_number: u64,
    },
    /// Any other ITCH 5.0 type: well formed (length checked), not decoded.
    Other {
        /// The type byte.
        kind: u8,
        /// Common header.
        header: Header,
    },
}

impl Message {
    /// The header of any message.
    pub fn header(&self) -> Header {
        match *self {
            Message::SystemEvent { header, .. }
            | Message::StockDirectory { header, .. }
            | Message::TradingAction { header, .. }
            | Message::AddOrder { header, .. }
            | Message::Executed { header, .. }
            | Message::ExecutedWithPrice { header, .. }
            | Message::Cancel { header, .. }
            | Message::Delete { header, .. }
            | Message::Replace { header, .. }
            | Message::Trade { header, .. }
            | Message::Cross { header, .. }
            | Message::BrokenTrade { header, .. }
            | Message::Other { header, .. } => header,
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u48_at(b: &[u8], at: usize) -> u64 {
    (u64::from(u16_at(b, at)) << 32) | u64::from(u32_at(b, at + 2))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    (u64::from(u32_at(b, at)) << 32) | u64::from(u32_at(b, at + 4))
}

fn stock_at(b: &[u8], at: usize) -> Stock {
    let mut s = [0u8; 8];
    s.copy_from_slice(&b[at..at + 8]);
    Stock(s)
}

/// Decodes one message (a frame without its length prefix). Checks the
/// type and the length, and the side of add orders; nothing else.
///
/// Hot path: no allocation.
pub fn decode(frame: &[u8]) -> Result<Message, Bad> {
    let &kind = frame.first().ok_or(Bad::Empty)?;
    let len = spec_len(kind).ok_or(Bad::UnknownType(kind))?;
    if frame.len() != len {
        return Err(Bad::Length { kind, len: frame.len() });
    }
    let b = frame;
    let header = Header { locate: u16_at(b, 1), tracking: u16_at(b, 3), ts: u48_at(b, 5) };
    let msg = match kind {
        b'A' | b'F' => Message::AddOrder {
            header,
            order_ref: u64_at(b, 11),
            side: match b[19] {
                b'B' => Side::Buy,
                b'S' => Side::Sell,
                other => return Err(Bad::Side(other)),
            },
            shares: u32_at(b, 20),
            stock: stock_at(b, 24),
            price: u32_at(b, 32),
            attribution: (kind == b'F').then(|| [b[36], b[37], b[38], b[39]]),
        },
        b'E' => Message::Executed {
            header,
            order_ref: u64_at(b, 11),
            executed_shares: u32_at(b, 19),
            match_number: u64_at(b, 23),
        },
        b'C' => Message::ExecutedWithPrice {
            header,
            order_ref: u64_at(b, 11),
            executed_shares: u32_at(b, 19),
            match_number: u64_at(b, 23),
            printable: b[31],
            execution_price: u32_at(b, 32),
        },
        b'X' => {
            Message::Cancel { header, order_ref: u64_at(b, 11), cancelled_shares: u32_at(b, 19) }
        }
        b'D' => Message::Delete { header, order_ref: u64_at(b, 11) },
        b'U' => Message::Replace {
            header,
            order_ref: u64_at(b, 11),
            new_order_ref: u64_at(b, 19),
            shares: u32_at(b, 27),
            price: u32_at(b, 31),
        },
        b'P' => Message::Trade {
            header,
            order_ref: u64_at(b, 11),
            side: b[19],
            shares: u32_at(b, 20),
            stock: stock_at(b, 24),
            price: u32_at(b, 32),
            match_number: u64_at(b, 36),
        },
        b'Q' => Message::Cross {
            header,
            shares: u64_at(b, 11),
            stock: stock_at(b, 19),
            cross_price: u32_at(b, 27),
            match_number: u64_at(b, 31),
            cross_type: b[39],
        },
        b'B' => Message::BrokenTrade { header, match_number: u64_at(b, 11) },
        b'S' => Message::SystemEvent { header, event_code: b[11] },
        b'R' => Message::StockDirectory {
            header,
            stock: stock_at(b, 11),
            market_category: b[19],
            financial_status_indicator: b[20],
            round_lot_size: u32_at(b, 21),
            round_lots_only: b[25],
            issue_classification: b[26],
            issue_sub_type: [b[27], b[28]],
            authenticity: b[29],
            short_sale_threshold_indicator: b[30],
            ipo_flag: b[31],
            luld_ref: b[32],
            etp_flag: b[33],
            etp_leverage_factor: u32_at(b, 34),
            inverse_indicator: b[38],
        },
        b'H' => Message::TradingAction {
            header,
            stock: stock_at(b, 11),
            trading_state: b[19],
            reserved: b[20],
            reason: [b[21], b[22], b[23], b[24]],
        },
        _ => Message::Other { kind, header },
    };
    Ok(msg)
}

/// Whether `head` (the first bytes of a file, decompressed) looks like
/// length-prefixed ITCH 5.0: the first frame is complete, and it and the
/// next two (as far as `head` shows their length and type) each have a
/// known type and exactly that type's length. A JSON line (`{"`) reads as length 31522 and never matches.
pub fn looks_like_itch(head: &[u8]) -> bool {
    let (mut at, mut seen) = (0, 0);
    while seen < 3 {
        let [hi, lo, kind, ..] = head[at..] else { break };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if spec_len(kind) != Some(len) {
            return false;
        }
        if head.len() < at + 2 + len {
            // Cut by the end of `head`, but its length and type agree.
            break;
        }
        at += 2 + len;
        seen += 1;
    }
    seen > 0
}

/// Iterator over the frames of an in-memory ITCH buffer: yields each frame's
/// byte offset (of its length prefix) and its bytes, or [`Bad::Truncated`]
/// once if the buffer ends inside a frame. Zero-copy.
pub struct Frames<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Frames<'a> {
    /// Frames of `buf`, from its start.
    pub fn new(buf: &'a [u8]) -> Frames<'a> {
        Frames { buf, at: 0 }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = (u64, Result<&'a [u8], Bad>);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.at..];
        if rest.is_empty() {
            return None;
        }
        let at = self.at as u64;
        let frame = match rest {
            [hi, lo, body @ ..] => {
                let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                body.get(..len).ok_or(Bad::Truncated)
            }
            _ => Err(Bad::Truncated),
        };
        self.at = match frame {
            Ok(f) => self.at + 2 + f.len(),
            Err(_) => self.buf.len(),
        };
        Some((at, frame))
    }
}

/// Counters of an ITCH stream.
#[derive(Clone, PartialEq, Eq)]
pub struct ItchStats {
    /// Well-formed messages per type byte (decoded or only counted). Bad
    /// records are not in here.
    pub by_type: [u64; 256],
    /// Frames skipped: unknown type, wrong length, empty, truncated, bad side.
    pub bad_records: u64,
    /// Timestamp (ns since midnight) of the first well-formed message.
    pub first_ts: Option<u64>,
    /// Timestamp of the last well-formed message.
    pub last_ts: Option<u64>,
    /// Executions, cancels, deletes and replaces of an order reference that
    /// is not on the book.
    pub unknown_orders: u64,
    /// Other inconsistent order flow: an add of a reference already on the
    /// book (ignored), an execution or cancel of more shares than the order
    /// has (applied as a full removal).
    pub inconsistent: u64,
    /// Ticks dropped because their stock locate has no directory entry (or a
    /// name the symbol table refused).
    pub unnamed_ticks: u64,
    /// Quote ticks emitted.
    pub quotes: u64,
    /// Trade ticks emitted.
    pub trades: u64,
}

impl Default for ItchStats {
    fn default() -> ItchStats {
        ItchStats {
            by_type: [0; 256],
            bad_records: 0,
            first_ts: None,
            last_ts: None,
            unknown_orders: 0,
            inconsistent: 0,
            unnamed_ticks: 0,
            quotes: 0,
            trades: 0,
        }
    }
}

impl ItchStats {
    /// Well-formed messages of type `kind`.
    pub fn count(&self, kind: u8) -> u64 {
        self.by_type[usize::from(kind)]
    }

    /// Well-formed messages of every type.
    pub fn messages(&self) -> u64 {
        self.by_type.iter().sum()
    }

    /// `(type, count)` for every type seen, in byte order.
    pub fn types(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        (0..=255u8).map(|k| (k, self.count(k))).filter(|&(_, n)| n > 0)
    }
}

impl std::fmt::Debug for ItchStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let types: Vec<(char, u64)> = self.types().map(|(k, n)| (char::from(k), n)).collect();
        f.debug_struct("ItchStats")
            .field("by_type", &types)
            .field("bad_records", &self.bad_records)
            .field("first_ts", &self.first_ts)
            .field("last_ts", &self.last_ts)
            .field("unknown_orders", &self.unknown_orders)
            .field("inconsistent", &self.inconsistent)
            .field("unnamed_ticks", &self.unnamed_ticks)
            .field("quotes", &self.quotes)
            .field("trades", &self.trades)
            .finish()
    }
}

/// No symbol for this locate yet.
const UNNAMED: u32 = u32::MAX;

/// Turns ITCH frames into ticks: owns the order books, the locate -> symbol
/// directory and the counters. Knows nothing about files.
pub struct Normalizer {
    table: Arc<SymbolTable>,
    books: OrderBooks,
    /// Symbol of every stock locate (a `u16`, so 65,536 entries, 256 KiB),
    /// [`UNNAMED`] until its `R` message.
    symbols: Vec<u32>,
    stats: ItchStats,
}

impl Normalizer {
    /// A normalizer that interns stock names in `table`.
    pub fn new(table: Arc<SymbolTable>) -> Normalizer {
        Normalizer {
            table,
            books: OrderBooks::new(),
            symbols: vec![UNNAMED; 1 << 16],
            stats: ItchStats::default(),
        }
    }

    /// Forgets every order, name and counter (the symbol table keeps its names).
    pub fn reset(&mut self) {
        self.books = OrderBooks::new();
        self.symbols.fill(UNNAMED);
        self.stats = ItchStats::default();
    }

    /// The counters so far.
    pub fn stats(&self) -> &ItchStats {
        &self.stats
    }

    /// The order books.
    pub fn books(&self) -> &OrderBooks {
        &self.books
    }

    /// The symbol of a stock locate, once its directory entry was read.
    pub fn symbol(&self, locate: u16) -> Option<SymbolId> {
        let id = self.symbols[usize::from(locate)];
        (id != UNNAMED).then_some(SymbolId(id))
    }

    /// Counts a frame that could not be read at all (truncated by the end of
    /// the input).
    pub fn count_bad(&mut self) {
        self.stats.bad_records += 1;
    }

    /// Applies one frame (without its length prefix), appending the ticks it
    /// causes to `out` (at most two: a trade, then a quote).
    ///
    /// Hot path: no allocation once `out` has room for two ticks (a new
    /// stock name or a deeper book than before allocates once).
    pub fn apply(&mut self, frame: &[u8], out: &mut Vec<Tick>) -> Result<(), Bad> {
        let msg = match decode(frame) {
            Ok(m) => m,
            Err(bad) => {
                self.stats.bad_records += 1;
                return Err(bad);
            }
        };
        let header = msg.header();
        self.stats.by_type[usize::from(frame[0])] += 1;
        self.stats.first_ts.get_or_insert(header.ts);
        self.stats.last_ts = Some(header.ts);
        let (locate, ts) = (header.locate, header.ts);
        match msg {
            Message::AddOrder { order_ref, side, shares, price, .. } => {
                match self.books.add(locate, order_ref, side, shares, price) {
                    Ok(quote) => self.quote(locate, ts, quote, out),
                    Err(_) => self.stats.inconsistent += 1,
                }
            }
            Message::Executed { order_ref, executed_shares, .. } => {
                match self.books.execute(order_ref, executed_shares) {
                    Ok(fill) => {
                        self.trade(fill.locate, ts, fill.price, executed_shares, out);
                        self.count_short(fill.shares, executed_shares);
                        self.quote(fill.locate, ts, fill.quote, out);
                    }
                    Err(_) => self.stats.unknown_orders += 1,
                }
            }
            Message::ExecutedWithPrice {
                order_ref,
                executed_shares,
                printable,
                execution_price,
                ..
            } => match self.books.execute(order_ref, executed_shares) {
                Ok(fill) => {
                    if printable == b'Y' {
                        self.trade(fill.locate, ts, execution_price, executed_shares, out);
                    }
                    self.count_short(fill.shares, executed_shares);
                    self.quote(fill.locate, ts, fill.quote, out);
                }
                Err(_) => self.stats.unknown_orders += 1,
            },
            Message::Cancel { order_ref, cancelled_shares, .. } => {
                match self.books.cancel(order_ref, cancelled_shares) {
                    Ok(fill) => {
                        self.count_short(fill.shares, cancelled_shares);
                        self.quote(fill.locate, ts, fill.quote, out);
                    }
                    Err(_) => self.stats.unknown_orders += 1,
                }
            }
            Message::Delete { order_ref, .. } => match self.books.delete(order_ref) {
                Ok(fill) => self.quote(fill.locate, ts, fill.quote, out),
                Err(_) => self.stats.unknown_orders += 1,
            },
            Message::Replace { order_ref, new_order_ref, shares, price, .. } => {
                match self.books.replace(order_ref, new_order_ref, shares, price) {
                    Ok((fill, added)) => {
                        if !added {
                            self.stats.inconsistent += 1;
                        }
                        self.quote(fill.locate, ts, fill.quote, out);
                    }
                    Err(_) => self.stats.unknown_orders += 1,
                }
            }
            Message::Trade { shares, price, .. } => self.trade(locate, ts, price, shares, out),
            Message::Cross { shares, cross_price, .. } => {
                if shares > 0 {
                    let shares = u32::try_from(shares).unwrap_or(u32::MAX);
                    self.trade(locate, ts, cross_price, shares, out);
                }
            }
            Message::StockDirectory { stock, .. } => self.name(locate, stock),
            Message::SystemEvent { .. }
            | Message::TradingAction { .. }
            | Message::BrokenTrade { .. }
            | Message::Other { .. } => {}
        }
        Ok(())
    }

    /// Counts an execution or cancel larger than the order it applied to.
    fn count_short(&mut self, applied: u32, asked: u32) {
        if applied < asked {
            self.stats.inconsistent += 1;
        }
    }

    fn name(&mut self, locate: u16, stock: Stock) {
        let id = stock.trimmed().and_then(|name| self.table.intern(name).ok());
        self.symbols[usize::from(locate)] = id.map_or(UNNAMED, |id| id.0);
    }

    fn quote(&mut self, locate: u16, ts: u64, bbo: Option<Bbo>, out: &mut Vec<Tick>) {
        let Some(b) = bbo else { return };
        match self.symbol(locate) {
            Some(sym) => {
                self.stats.quotes += 1;
                out.push(Tick::quote(
                    sym,
                    ts,
                    Price(i64::from(b.bid)),
                    b.bid_size,
                    Price(i64::from(b.ask)),
                    b.ask_size,
                ));
            }
            None => self.stats.unnamed_ticks += 1,
        }
    }

    fn trade(&mut self, locate: u16, ts: u64, price: u32, shares: u32, out: &mut Vec<Tick>) {
        match self.symbol(locate) {
            Some(sym) => {
                self.stats.trades += 1;
                out.push(Tick::trade(sym, ts, Price(i64::from(price)), shares));
            }
            None => self.stats.unnamed_ticks += 1,
        }
    }
}

/// A [`RecordReader`] over an ITCH 5.0 file, plain or gzip-compressed. A
/// [`Skip`]'s `at` is the byte offset of the bad frame's length prefix in
/// the decompressed stream. Its ticks carry UTC times: the file's
/// [`TradingDay`] plus the message timestamps.
pub struct ItchReader {
    path: PathBuf,
    input: Box<dyn BufRead + Send>,
    norm: Normalizer,
    /// The day the message timestamps count from.
    day: TradingDay,
    /// Ticks of the last frame not handed out yet (`pending[next..]`).
    pending: Vec<Tick>,
    next: usize,
    /// Offset of the next frame in the decompressed stream.
    offset: u64,
    /// The input failed or ended: report nothing more until a rewind.
    ended: bool,
    /// Bytes read from the file (compressed bytes for a `.gz`).
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl ItchReader {
    /// Opens `path` (gzip detected from its magic bytes), on the trading day
    /// its name gives (`MMDDYYYY.NASDAQ_ITCH50`), or 1970-01-01. Symbols are
    /// interned in `table` as their directory messages are read.
    pub fn open(path: &Path, table: Arc<SymbolTable>) -> io::Result<ItchReader> {
        ItchReader::open_on(path, table, TradingDay::of_file(path, None))
    }

    /// [`ItchReader::open`] on the given trading day. A day of unknown
    /// origin (1970-01-01) is said once in the log.
    pub fn open_on(
        path: &Path,
        table: Arc<SymbolTable>,
        day: TradingDay,
    ) -> io::Result<ItchReader> {
        let (input, read) = open_input_counted(path)?;
        if day.origin() == DateOrigin::Unknown {
            tracing::warn!(
                path = %path.display(),
                "no trading date: the file is not named MMDDYYYY.NASDAQ_ITCH50 and no --date was given; its times are read as {} in {}",
                day.date(),
                clock::ZONE,
            );
        }
        Ok(ItchReader {
            path: path.to_path_buf(),
            input,
            read,
            norm: Normalizer::new(table),
            day,
            pending: Vec::with_capacity(4),
            next: 0,
            offset: 0,
            ended: false,
        })
    }

    /// The trading day the file's timestamps count from.
    pub fn trading_day(&self) -> TradingDay {
        self.day
    }

    /// The counters of the current pass over the file (reset by `rewind`).
    pub fn stats(&self) -> &ItchStats {
        self.norm.stats()
    }

    /// The order books as of the last frame read.
    pub fn books(&self) -> &OrderBooks {
        self.norm.books()
    }

    /// Reads and applies the next frame into `self.pending`. `Ok(None)` at
    /// the end; `Ok(Some(Err))` for a bad frame.
    fn step(&mut self) -> io::Result<Option<Result<(), Bad>>> {
        let ItchReader { input, norm, pending, offset, .. } = self;
        pending.clear();
        let at = *offset;
        // Fast path: the whole frame is in the input's buffer.
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        if let [hi, lo, rest @ ..] = buf {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            if let Some(frame) = rest.get(..len) {
                let r = norm.apply(frame, pending);
                input.consume(2 + len);
                *offset = at + 2 + len as u64;
                return Ok(Some(r));
            }
        }
        // Slow path: the frame crosses the buffer's end.
        let mut prefix = [0u8; 2];
        if let Err(e) = input.read_exact(&mut prefix) {
            return truncated(e, norm);
        }
        let len = usize::from(u16::from_be_bytes(prefix));
        *offset = at + 2 + len as u64;
        if len <= MAX_MESSAGE_LEN {
            let mut frame = [0u8; MAX_MESSAGE_LEN];
            if let Err(e) = input.read_exact(&mut frame[..len]) {
                return truncated(e, norm);
            }
            return Ok(Some(norm.apply(&frame[..len], pending)));
        }
        // Too long for any type: skip its bytes without storing them.
        let mut kind = [0u8; 1];
        if let Err(e) = input.read_exact(&mut kind) {
            return truncated(e, norm);
        }
        let want = len as u64 - 1;
        let skipped = io::copy(&mut input.take(want), &mut io::sink())?;
        norm.count_bad();
        if skipped < want {
            return Ok(Some(Err(Bad::Truncated)));
        }
        let kind = kind[0];
        Ok(Some(Err(match spec_len(kind) {
            Some(_) => Bad::Length { kind, len },
            None => Bad::UnknownType(kind),
        })))
    }
}

/// The input ended inside a frame: a bad record (an I/O error is passed on).
fn truncated(e: io::Error, norm: &mut Normalizer) -> io::Result<Option<Result<(), Bad>>> {
    if e.kind() != io::ErrorKind::UnexpectedEof {
        return Err(e);
    }
    norm.count_bad();
    Ok(Some(Err(Bad::Truncated)))
}

impl RecordReader for ItchReader {
    fn next(&mut self) -> Option<Result<Tick, Skip>> {
        loop {
            if let Some(&tick) = self.pending.get(self.next) {
                self.next += 1;
                return Some(Ok(Tick { src_ns: self.day.utc_ns(tick.src_ns), ..tick }));
            }
            if self.ended {
                return None;
            }
            self.next = 0;
            let at = self.offset;
            match self.step() {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(bad))) => {
                    if bad == Bad::Truncated {
                        self.ended = true;
                    }
                    return Some(Err(Skip { at, why: bad.why() }));
                }
                Ok(None) => {
                    self.ended = true;
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // A truncated gzip stream or a failing disk: report it
                    // once as a skipped record and end there.
                    tracing::warn!(path = %self.path.display(), offset = at, error = %e, "feed file unreadable past this point");
                    self.ended = true;
                    return Some(Err(Skip { at, why: "read error" }));
                }
            }
        }
    }

    fn bytes_read(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn local_midnight_ns(&self) -> Option<u64> {
        Some(self.day.midnight_ns())
    }

    fn details(&self) -> Vec<(String, u64)> {
        let st = self.stats();
        let mut out: Vec<(String, u64)> =
            st.types().map(|(kind, n)| (format!("{}", kind as char), n)).collect();
        out.push(("bad records".into(), st.bad_records));
        out.push(("unknown orders".into(), st.unknown_orders));
        out.push(("inconsistent".into(), st.inconsistent));
        out.push(("unnamed ticks".into(), st.unnamed_ticks));
        out
    }

    fn rewind(&mut self) -> io::Result<()> {
        (self.input, self.read) = open_input_counted(&self.path)?;
        self.norm.reset();
        self.pending.clear();
        self.next = 0;
        self.offset = 0;
        self.ended = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::synthetic::SplitMix64;
    use crate::tick::Body;

    /// A well-formed message of `kind`: the type byte, locate 7, tracking 2,
    /// timestamp 0x0102_0304_0506, then `fill` up to the spec length.
    fn message(kind: u8, fill: u8) -> Vec<u8> {
        let mut m = vec![kind, 0, 7, 0, 2, 1, 2, 3, 4, 5, 6];
        m.resize(spec_len(kind).unwrap(), fill);
        m
    }

    /// Length-prefixed frames.
    fn framed(messages: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.extend_from_slice(&(m.len() as u16).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    #[test]
    fn every_type_decodes_at_its_spec_length_and_only_there() {
        let expected: [(u8, usize); 23] = [
            (b'S', 12),
            (b'R', 39),
            (b'H', 25),
            (b'Y', 20),
            (b'L', 26),
            (b'V', 35),
            (b'W', 12),
            (b'K', 28),
            (b'J', 35),
            (b'h', 21),
            (b'A', 36),
            (b'F', 40),
            (b'E', 31),
            (b'C', 36),
            (b'X', 23),
            (b'D', 19),
            (b'U', 35),
            (b'P', 44),
            (b'Q', 40),
            (b'B', 19),
            (b'I', 50),
            (b'N', 20),
            (b'O', 48),
        ];
        assert_eq!(expected.len(), KNOWN_TYPES.len());
        for (kind, len) in expected {
            let name = char::from(kind);
            // The table agrees with the specification.
            assert_eq!(spec_len(kind), Some(len), "{name}");
            // Exactly the spec length decodes (side byte B for adds).
            let m = message(kind, b'B');
            let header = decode(&m).unwrap_or_else(|e| panic!("{name}: {e:?}")).header();
            assert_eq!(header, Header { locate: 7, tracking: 2, ts: 0x0102_0304_0506 }, "{name}");
            // One byte short or long is a bad record, and so is a type byte alone.
            for wrong in [len - 1, len + 1, 1] {
                let mut bad = message(kind, b'B');
                bad.resize(wrong, b'B');
                assert_eq!(decode(&bad), Err(Bad::Length { kind, len: wrong }), "{name} {wrong}");
            }
        }
        assert!(expected.iter().all(|(k, l)| *l <= MAX_MESSAGE_LEN && KNOWN_TYPES.contains(k)));
        // Every other byte is an unknown type; an empty frame is its own case.
        for kind in (0..=255u8).filter(|k| !KNOWN_TYPES.contains(k)) {
            assert_eq!(spec_len(kind), None);
            assert_eq!(decode(&[kind; 20]), Err(Bad::UnknownType(kind)));
        }
        assert_eq!(decode(&[]), Err(Bad::Empty));
    }

    #[test]
    fn fields_land_where_the_spec_puts_them() {
        let mut a = message(b'F', 0);
        a[11..19].copy_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
        a[19] = b'S';
        a[20..24].copy_from_slice(&300u32.to_be_bytes());
        a[24..32].copy_from_slice(b"BRK.B   ");
        a[32..36].copy_from_slice(&1_923_100u32.to_be_bytes());
        a[36..40].copy_from_slice(b"GSCO");
        let Ok(Message::AddOrder { order_ref, side, shares, stock, price, attribution, .. }) =
            decode(&a)
        else {
            panic!("{:?}", decode(&a))
        };
        assert_eq!(
            (order_ref, side, shares, price),
            (0x1122_3344_5566_7788, Side::Sell, 300, 1_923_100)
        );
        assert_eq!((stock.trimmed(), attribution), (Some("BRK.B"), Some(*b"GSCO")));
        // An add whose side is neither B nor S is refused.
        a[19] = b'Z';
        assert_eq!(decode(&a), Err(Bad::Side(b'Z')));
        // The cross shares field is 8 bytes wide.
        let mut q = message(b'Q', b' ');
        q[11..19].copy_from_slice(&(u64::from(u32::MAX) + 5).to_be_bytes());
        q[39] = b'O';
        let Ok(Message::Cross { shares, cross_type, .. }) = decode(&q) else { panic!() };
        assert_eq!((shares, cross_type), (u64::from(u32::MAX) + 5, b'O'));
    }

    /// A normalizer with stock locate 7 named `ACME`.
    fn named() -> (Normalizer, Arc<SymbolTable>) {
        let table = Arc::new(SymbolTable::new(16));
        let mut n = Normalizer::new(table.clone());
        let mut r = message(b'R', b' ');
        r[11..19].copy_from_slice(b"ACME    ");
        let mut out = Vec::new();
        n.apply(&r, &mut out).unwrap();
        assert!(out.is_empty());
        (n, table)
    }

    fn add(order_ref: u64, side: u8, shares: u32, price: u32) -> Vec<u8> {
        let mut m = message(b'A', b' ');
        m[11..19].copy_from_slice(&order_ref.to_be_bytes());
        m[19] = side;
        m[20..24].copy_from_slice(&shares.to_be_bytes());
        m[32..36].copy_from_slice(&price.to_be_bytes());
        m
    }

    fn with_ref(kind: u8, order_ref: u64, rest: &[u8]) -> Vec<u8> {
        let mut m = message(kind, b' ');
        m[11..19].copy_from_slice(&order_ref.to_be_bytes());
        m[19..19 + rest.len()].copy_from_slice(rest);
        m
    }

    fn quote(bid: i64, bs: u32, ask: i64, asks: u32) -> Body {
        Body::Quote { bid: Price(bid), bid_size: bs, ask: Price(ask), ask_size: asks }
    }

    fn trade(price: i64, size: u32) -> Body {
        Body::Trade { price: Price(price), size }
    }

    /// Applies one message and returns the bodies of the ticks it caused.
    fn ticks(n: &mut Normalizer, m: &[u8]) -> Vec<Body> {
        let mut out = Vec::new();
        n.apply(m, &mut out).unwrap();
        assert!(out.iter().all(|t| t.src_ns == 0x0102_0304_0506 && t.seq == 0));
        out.iter().map(|t| t.body).collect()
    }

    #[test]
    fn book_messages_emit_exactly_the_expected_ticks() {
        let (mut n, table) = named();
        let sym = table.get("ACME").unwrap();
        assert_eq!(n.symbol(7), Some(sym));
        // A first bid: a quote with an empty ask side.
        assert_eq!(ticks(&mut n, &add(10, b'B', 100, 1_000_000)), [quote(1_000_000, 100, 0, 0)]);
        // A bid below the best: no tick.
        assert_eq!(ticks(&mut n, &add(11, b'B', 200, 990_000)), []);
        assert_eq!(
            ticks(&mut n, &add(12, b'S', 300, 1_010_000)),
            [quote(1_000_000, 100, 1_010_000, 300)]
        );
        // E: a trade at the resting price, then the smaller bid.
        let mut e = 40u32.to_be_bytes().to_vec();
        e.extend_from_slice(&77u64.to_be_bytes());
        assert_eq!(
            ticks(&mut n, &with_ref(b'E', 10, &e)),
            [trade(1_000_000, 40), quote(1_000_000, 60, 1_010_000, 300)]
        );
        // C printable: a trade at the execution price.
        let mut c = e.clone();
        c.push(b'Y');
        c.extend_from_slice(&1_005_000u32.to_be_bytes());
        assert_eq!(
            ticks(&mut n, &with_ref(b'C', 12, &c)),
            [trade(1_005_000, 40), quote(1_000_000, 60, 1_010_000, 260)]
        );
        // C not printable: only the book changes.
        c[12] = b'N';
        assert_eq!(ticks(&mut n, &with_ref(b'C', 12, &c)), [quote(1_000_000, 60, 1_010_000, 220)]);
        // X: a partial cancel of the best bid.
        assert_eq!(
            ticks(&mut n, &with_ref(b'X', 10, &10u32.to_be_bytes())),
            [quote(1_000_000, 50, 1_010_000, 220)]
        );
        // X below the top of the book: nothing visible.
        assert_eq!(ticks(&mut n, &with_ref(b'X', 11, &10u32.to_be_bytes())), []);
        // D of the best bid: the next level shows.
        assert_eq!(ticks(&mut n, &with_ref(b'D', 10, &[])), [quote(990_000, 190, 1_010_000, 220)]);
        // U: the ask moves down and shrinks, one quote.
        let mut u = 13u64.to_be_bytes().to_vec();
        u.extend_from_slice(&100u32.to_be_bytes());
        u.extend_from_slice(&1_008_000u32.to_be_bytes());
        assert_eq!(ticks(&mut n, &with_ref(b'U', 12, &u)), [quote(990_000, 190, 1_008_000, 100)]);
        // The replaced reference is gone, the new one is live.
        assert_eq!(ticks(&mut n, &with_ref(b'D', 12, &[])), []);
        assert_eq!(n.stats().unknown_orders, 1);
        assert_eq!(ticks(&mut n, &with_ref(b'D', 13, &[])), [quote(990_000, 190, 0, 0)]);
        // P: a trade; the book is untouched.
        let mut p = message(b'P', b' ');
        p[20..24].copy_from_slice(&25u32.to_be_bytes());
        p[32..36].copy_from_slice(&995_000u32.to_be_bytes());
        assert_eq!(ticks(&mut n, &p), [trade(995_000, 25)]);
        // Q: a trade only when shares > 0.
        let mut q = message(b'Q', b' ');
        q[11..19].copy_from_slice(&0u64.to_be_bytes());
        q[27..31].copy_from_slice(&996_000u32.to_be_bytes());
        assert_eq!(ticks(&mut n, &q), []);
        q[11..19].copy_from_slice(&500u64.to_be_bytes());
        assert_eq!(ticks(&mut n, &q), [trade(996_000, 500)]);
        // S, H, B and the undecoded types: no tick.
        for kind in [b'S', b'H', b'B', b'L', b'I', b'N', b'Y'] {
            assert_eq!(ticks(&mut n, &message(kind, b' ')), [], "{}", char::from(kind));
        }
        let s = n.stats();
        assert_eq!((s.count(b'A'), s.count(b'D'), s.count(b'R'), s.count(b'I')), (3, 3, 1, 1));
        assert_eq!((s.quotes, s.trades, s.bad_records, s.inconsistent), (9, 4, 0, 0));
        assert_eq!((s.first_ts, s.last_ts), (Some(0x0102_0304_0506), Some(0x0102_0304_0506)));
    }

    #[test]
    fn unnamed_locates_keep_a_book_but_emit_nothing() {
        let table = Arc::new(SymbolTable::new(4));
        let mut n = Normalizer::new(table);
        let mut out = Vec::new();
        n.apply(&add(1, b'B', 100, 5_000), &mut out).unwrap();
        // No name: no tick, but the order is on the book and counted.
        assert!(out.is_empty());
        assert_eq!(n.stats().unnamed_ticks, 1);
        assert_eq!(n.books().bbo(7).bid_size, 100);
        // Once named, the next change is published with the whole book.
        let mut r = message(b'R', b' ');
        r[11..19].copy_from_slice(b"LATE    ");
        n.apply(&r, &mut out).unwrap();
        assert_eq!(ticks(&mut n, &add(2, b'S', 10, 6_000)), [quote(5_000, 100, 6_000, 10)]);
    }

    #[test]
    fn inconsistent_flow_is_counted_not_fatal() {
        let (mut n, _) = named();
        ticks(&mut n, &add(1, b'B', 100, 5_000));
        // The same reference again: ignored.
        assert_eq!(ticks(&mut n, &add(1, b'S', 100, 6_000)), []);
        // Executing more than the order has: the trade prints as reported,
        // the order is gone.
        let mut e = 500u32.to_be_bytes().to_vec();
        e.extend_from_slice(&1u64.to_be_bytes());
        assert_eq!(ticks(&mut n, &with_ref(b'E', 1, &e)), [trade(5_000, 500), quote(0, 0, 0, 0)]);
        // Unknown references.
        assert_eq!(ticks(&mut n, &with_ref(b'E', 1, &e)), []);
        assert_eq!(ticks(&mut n, &with_ref(b'X', 9, &[0, 0, 0, 1])), []);
        let s = n.stats();
        assert_eq!((s.inconsistent, s.unknown_orders, s.bad_records), (2, 2, 0));
    }

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("tickwire-itch-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn read_all(r: &mut ItchReader) -> (Vec<Tick>, Vec<Skip>) {
        let (mut ticks, mut skips) = (Vec::new(), Vec::new());
        while let Some(x) = r.next() {
            match x {
                Ok(t) => ticks.push(t),
                Err(s) => skips.push(s),
            }
        }
        (ticks, skips)
    }

    #[test]
    fn reader_skips_and_counts_garbage_empty_and_truncated_frames() {
        let mut r = message(b'R', b' ');
        r[11..19].copy_from_slice(b"ACME    ");
        let mut bytes = framed(&[r, add(1, b'B', 100, 5_000)]);
        let bad_at = bytes.len() as u64;
        // Unknown type, wrong length, empty frame, a long unknown frame.
        bytes.extend_from_slice(&framed(&[
            vec![b'Z'; 12],
            vec![b'A'; 35],
            vec![],
            vec![b'x'; 5000],
        ]));
        bytes.extend_from_slice(&framed(&[add(2, b'S', 10, 6_000)]));
        let cut_at = bytes.len() as u64;
        // A final frame cut short.
        bytes.extend_from_slice(&framed(&[add(3, b'S', 10, 5_500)])[..20]);
        let path = temp_file("garbage", &bytes);
        let table = Arc::new(SymbolTable::new(4));
        let mut reader = ItchReader::open(&path, table).unwrap();
        let (ticks, skips) = read_all(&mut reader);
        // The good frames around the garbage still produce their quotes.
        let bodies: Vec<Body> = ticks.iter().map(|t| t.body).collect();
        assert_eq!(bodies, [quote(5_000, 100, 0, 0), quote(5_000, 100, 6_000, 10)]);
        // Every bad frame is one skip, at its offset, with its reason.
        let whys: Vec<&str> = skips.iter().map(|s| s.why).collect();
        assert_eq!(
            whys,
            [
                Bad::UnknownType(b'Z').why(),
                Bad::Length { kind: b'A', len: 35 }.why(),
                Bad::Empty.why(),
                Bad::UnknownType(b'x').why(),
                Bad::Truncated.why(),
            ]
        );
        assert_eq!((skips[0].at, skips[1].at, skips[4].at), (bad_at, bad_at + 14, cut_at));
        assert_eq!(reader.stats().bad_records, 5);
        assert_eq!(reader.stats().messages(), 3);
        // Rewind starts over with a fresh book and fresh counters.
        reader.rewind().unwrap();
        assert_eq!(read_all(&mut reader).0, ticks);
        assert_eq!(reader.stats().bad_records, 5);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn reader_slow_path_frames_across_the_read_buffer() {
        let mut r = message(b'R', b' ');
        r[11..19].copy_from_slice(b"ACME    ");
        let mut size = 2 + r.len();
        let mut msgs = vec![r];
        // Deletes of unknown orders (well formed, no tick) up to just below
        // the 64 KiB read buffer, so that the next frame crosses its end.
        while size < (1 << 16) - 30 {
            msgs.push(with_ref(b'D', 1, &[]));
            size += 21;
        }
        let deletes = msgs.len() as u64 - 1;
        // A long unknown frame across the boundary: skipped without being stored.
        msgs.push(vec![b'Z'; 5_000]);
        // A known type at a wrong length above any spec length.
        msgs.push(vec![b'A'; 60]);
        msgs.push(add(1, b'B', 100, 5_000));
        let mut bytes = framed(&msgs);
        // The file ends inside a long frame.
        bytes.extend_from_slice(&framed(&[vec![b'Z'; 3_000]])[..100]);
        let path = temp_file("slow", &bytes);
        let mut reader = ItchReader::open(&path, Arc::new(SymbolTable::new(4))).unwrap();
        let (ticks, skips) = read_all(&mut reader);
        assert_eq!(ticks.iter().map(|t| t.body).collect::<Vec<_>>(), [quote(5_000, 100, 0, 0)]);
        let whys: Vec<&str> = skips.iter().map(|s| s.why).collect();
        assert_eq!(
            whys,
            [
                Bad::UnknownType(b'Z').why(),
                Bad::Length { kind: b'A', len: 60 }.why(),
                Bad::Truncated.why()
            ]
        );
        let s = reader.stats();
        assert_eq!((s.messages(), s.unknown_orders, s.bad_records), (deletes + 2, deletes, 3));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn reader_matches_the_in_memory_normalizer_plain_and_gzipped() {
        let buf = generate(5, 20_000);
        let table = Arc::new(SymbolTable::new(64));
        let mut norm = Normalizer::new(table.clone());
        let mut expect = Vec::new();
        for (_, frame) in Frames::new(&buf) {
            norm.apply(frame.unwrap(), &mut expect).unwrap();
        }
        assert!(expect.len() > 5_000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &buf).unwrap();
        // The reader stamps UTC times: midnight of the trading day in New
        // York plus the timestamps the normalizer gives.
        let day = TradingDay::new(jiff::civil::date(2024, 1, 30), DateOrigin::Flag).unwrap();
        let expect: Vec<Tick> =
            expect.iter().map(|t| Tick { src_ns: t.src_ns + day.midnight_ns(), ..*t }).collect();
        for (name, bytes) in [("plain", buf.clone()), ("gz", gz.finish().unwrap())] {
            let path = temp_file(name, &bytes);
            let mut reader = ItchReader::open_on(&path, table.clone(), day).unwrap();
            let (ticks, skips) = read_all(&mut reader);
            // Frames that straddle the read buffer change nothing.
            assert_eq!(ticks, expect, "{name}");
            assert!(skips.is_empty());
            assert_eq!(reader.stats(), norm.stats(), "{name}");
            assert_eq!(reader.stats().messages(), 20_000);
            std::fs::remove_file(path).unwrap();
        }
        // Every generated book is uncrossed.
        for locate in 0..=u16::MAX {
            let b = norm.books().bbo(locate);
            assert!(b.bid == 0 || b.ask == 0 || b.bid < b.ask, "locate {locate}: {b:?}");
        }
    }

    #[test]
    fn random_bytes_never_panic_and_every_frame_is_accounted_for() {
        let mut rng = SplitMix64::new(11);
        let table = Arc::new(SymbolTable::new(1 << 12));
        for round in 0..300 {
            // Random bytes, or a valid feed with random bytes flipped.
            let mut buf: Vec<u8> = if round % 2 == 0 {
                (0..rng.below(4096)).map(|_| rng.next_u64() as u8).collect()
            } else {
                generate(round, 300)
            };
            if round % 2 == 1 {
                for _ in 0..1 + rng.below(40) {
                    let at = rng.below(buf.len() as u64) as usize;
                    buf[at] = rng.next_u64() as u8;
                }
            }
            let mut n = Normalizer::new(table.clone());
            let mut out = Vec::new();
            let (mut frames, mut bad) = (0u64, 0u64);
            for (_, frame) in Frames::new(&buf) {
                frames += 1;
                match frame {
                    Ok(f) => bad += u64::from(n.apply(f, &mut out).is_err()),
                    Err(_) => {
                        n.count_bad();
                        bad += 1;
                    }
                }
            }
            // Every frame is either a counted message or a bad record.
            assert_eq!(n.stats().messages() + n.stats().bad_records, frames);
            assert_eq!(n.stats().bad_records, bad);
            assert!(looks_like_itch(&buf) || round % 2 == 0 || bad > 0);
        }
    }

    #[test]
    fn detection_checks_the_first_frames() {
        let feed = generate(1, 100);
        // A generated feed, from its first bytes on.
        assert!(looks_like_itch(&feed));
        assert!(looks_like_itch(&feed[..14]));
        // Too short for one frame, JSON, text, a wrong length, a wrong second frame.
        assert!(!looks_like_itch(&feed[..5]));
        assert!(!looks_like_itch(b""));
        assert!(!looks_like_itch(br#"{"type":"q","sym":"AAPL"}"#));
        assert!(!looks_like_itch(b"\x00\x0cShello world and more"));
        let mut bad = feed.clone();
        bad[1] = 13;
        assert!(!looks_like_itch(&bad));
        let mut bad = feed.clone();
        bad[14 + 2] = b'Z';
        assert!(!looks_like_itch(&bad));
    }
}
