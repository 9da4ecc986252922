//! A deterministic ITCH 5.0 *writer*: [`generate`] produces a spec-valid,
//! length-prefixed message stream for fixtures (`feeds/sample.itch`), the
//! oracle test and the benchmark. The same seed and count always give the
//! same bytes.
//!
//! # What a generated day looks like
//!
//! 1. `S` start of messages; per stock a directory entry `R` (spec-valid
//!    fields: category `Q`, status `N`, round lot 100, class `C`, sub-type
//!    `"Z "`, production), a trading action `H` (`T`, trading), a Reg SHO
//!    `Y` and a market-maker position `L`; `S` start of system hours; `S`
//!    start of market hours; an opening cross `Q` per stock (one with 0
//!    shares, which is not a trade).
//! 2. The continuous session: adds (`A`, and `F` with an MPID), executions
//!    (`E`, and `C` printable or not), partial cancels (`X`), deletes (`D`),
//!    replaces (`U`), hidden trades (`P`), broken trades (`B`) and a few
//!    types a book does not use (`I` imbalance, `N` retail interest).
//! 3. A closing cross `Q` per stock; `S` end of market hours, end of system
//!    hours, end of messages.
//!
//! The order flow is consistent: each stock's price walks in cents, bids
//! rest below the best offer and offers above the best bid (the book is
//! never crossed), executions take the best order of a side (earliest at its
//! price first), and no message executes, cancels or replaces more shares
//! than an order has or names a removed order. Order references and match
//! numbers increase. The day is compressed: messages are about 500 µs apart
//! from 09:30, so the sample file lasts a few seconds at replay speed 1.

use super::spec_len;
use crate::feed::synthetic::SplitMix64;

/// The stocks of a generated day: name and opening price (4 decimals).
const STOCKS: [(&str, u32); 8] = [
    ("AAPL", 2_301_500),
    ("AMZN", 2_204_200),
    ("GOOGL", 1_702_700),
    ("META", 5_904_100),
    ("MSFT", 4_803_300),
    ("NVDA", 1_800_900),
    ("QQQ", 5_101_200),
    ("TSLA", 3_402_500),
];

/// Market participant ids used in `F` and `L` messages.
const MPIDS: [&[u8; 4]; 4] = [b"GSCO", b"MSCO", b"NITE", b"CDRG"];

/// A cent in price units.
const CENT: u32 = 100;

/// Live orders per stock the flow steers towards.
const TARGET_ORDERS: usize = 120;

/// 09:30:00 in ns since midnight.
const MARKET_OPEN_NS: u64 = 34_200_000_000_000;

/// Mean gap between messages in the continuous session.
const MEAN_GAP_NS: f64 = 500_000.0;

/// Messages outside the continuous session: `S`, 4 per stock (`R`, `H`,
/// `Y`, `L`), 2 `S`, an opening cross per stock; a closing cross per stock
/// and 3 `S` (54 for 8 stocks).
const FIXED_MESSAGES: usize = 1 + 4 * STOCKS.len() + 2 + STOCKS.len() + STOCKS.len() + 3;

/// One field of a message body, in wire order.
enum F<'a> {
    B(u8),
    U32(u32),
    U64(u64),
    S(&'a [u8]),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Buy,
    Sell,
}

#[derive(Clone, Copy)]
struct Live {
    order_ref: u64,
    side: Side,
    shares: u32,
    price: u32,
}

struct Stock {
    locate: u16,
    name: [u8; 8],
    /// Mid price of the walk, on whole cents.
    mid: u32,
    orders: Vec<Live>,
}

impl Stock {
    /// Index of the best order of a side (earliest at the best price).
    fn best(&self, side: Side) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, o) in self.orders.iter().enumerate().filter(|(_, o)| o.side == side) {
            let better = match best.map(|b| self.orders[b].price) {
                None => true,
                Some(p) => {
                    (side == Side::Buy && o.price > p) || (side == Side::Sell && o.price < p)
                }
            };
            if better {
                best = Some(i);
            }
        }
        best
    }

    fn best_price(&self, side: Side) -> Option<u32> {
        self.best(side).map(|i| self.orders[i].price)
    }
}

struct Gen {
    rng: SplitMix64,
    out: Vec<u8>,
    ts: u64,
    next_ref: u64,
    next_match: u64,
    /// Recent match numbers that a `B` may break.
    matches: Vec<u64>,
    stocks: Vec<Stock>,
}

/// Writes `messages` ITCH 5.0 messages (at least the fixed opening and
/// closing sequence, 54 messages) for 8 stocks, deterministically from
/// `seed`. See the module docs for the content.
pub fn generate(seed: u64, messages: usize) -> Vec<u8> {
    let mut g = Gen {
        rng: SplitMix64::new(seed),
        out: Vec::with_capacity(messages * 36 + 4096),
        ts: MARKET_OPEN_NS - 6 * 3_600_000_000_000 - 25 * 60_000_000_000,
        next_ref: 1 + seed % 1000 * 4,
        next_match: 1,
        matches: Vec::with_capacity(64),
        stocks: STOCKS
            .iter()
            .enumerate()
            .map(|(i, &(name, mid))| {
                let mut padded = [b' '; 8];
                padded[..name.len()].copy_from_slice(name.as_bytes());
                Stock { locate: 1 + i as u16 * 3, name: padded, mid, orders: Vec::new() }
            })
            .collect(),
    };
    g.opening();
    for _ in 0..messages.saturating_sub(FIXED_MESSAGES) {
        g.step();
    }
    g.closing();
    g.out
}

impl Gen {
    /// Writes one message: length prefix, type, header, then `fields`.
    fn frame(&mut self, kind: u8, locate: u16, fields: &[F<'_>]) {
        let start = self.out.len();
        let tracking = 1 + self.rng.below(4) as u16;
        self.out.extend_from_slice(&[0, 0, kind]);
        self.out.extend_from_slice(&locate.to_be_bytes());
        self.out.extend_from_slice(&tracking.to_be_bytes());
        self.out.extend_from_slice(&self.ts.to_be_bytes()[2..]);
        for f in fields {
            match *f {
                F::B(b) => self.out.push(b),
                F::U32(v) => self.out.extend_from_slice(&v.to_be_bytes()),
                F::U64(v) => self.out.extend_from_slice(&v.to_be_bytes()),
                F::S(s) => self.out.extend_from_slice(s),
            }
        }
        let len = self.out.len() - start - 2;
        debug_assert_eq!(Some(len), spec_len(kind), "message {}", char::from(kind));
        self.out[start..start + 2].copy_from_slice(&(len as u16).to_be_bytes());
    }

    /// Advances the clock by `ns`.
    fn wait(&mut self, ns: u64) {
        self.ts += ns;
    }

    /// Advances the clock by an exponential gap (at least 1 ns).
    fn tick_clock(&mut self) {
        let u = 1.0 - self.rng.unit();
        self.ts += (-u.ln() * MEAN_GAP_NS).max(1.0) as u64;
    }

    fn system(&mut self, event: u8) {
        self.frame(b'S', 0, &[F::B(event)]);
    }

    fn opening(&mut self) {
        self.system(b'O');
        self.wait(60_000_000_000);
        for i in 0..self.stocks.len() {
            let (locate, name) = (self.stocks[i].locate, self.stocks[i].name);
            self.wait(1_000_000);
            self.frame(
                b'R',
                locate,
                &[
                    F::S(&name),
                    F::B(b'Q'),
                    F::B(b'N'),
                    F::U32(100),
                    F::B(b'N'),
                    F::B(if &name[..3] == b"QQQ" { b'Q' } else { b'C' }),
                    F::S(b"Z "),
                    F::B(b'P'),
                    F::B(b'N'),
                    F::B(b'N'),
                    F::B(if &name[..3] == b"QQQ" { b'1' } else { b'2' }),
                    F::B(if &name[..3] == b"QQQ" { b'Y' } else { b'N' }),
                    F::U32(if &name[..3] == b"QQQ" { 1 } else { 0 }),
                    F::B(b'N'),
                ],
            );
            self.frame(b'H', locate, &[F::S(&name), F::B(b'T'), F::B(b' '), F::S(b"    ")]);
            self.frame(b'Y', locate, &[F::S(&name), F::B(b'0')]);
            let mpid = MPIDS[i % MPIDS.len()];
            self.frame(
                b'L',
                locate,
                &[F::S(mpid), F::S(&name), F::B(b'Y'), F::B(b'N'), F::B(b'A')],
            );
        }
        self.ts = MARKET_OPEN_NS - 5 * 3_600_000_000_000 - 30 * 60_000_000_000;
        self.system(b'S');
        self.ts = MARKET_OPEN_NS;
        self.system(b'Q');
        self.crosses(b'O');
    }

    fn closing(&mut self) {
        self.wait(1_000_000);
        self.crosses(b'C');
        self.wait(1_000_000);
        self.system(b'M');
        self.wait(1_000_000);
        self.system(b'E');
        self.wait(1_000_000);
        self.system(b'C');
    }

    /// One cross per stock; the second stock's has no shares (no trade).
    fn crosses(&mut self, cross_type: u8) {
        for i in 0..self.stocks.len() {
            self.wait(10_000);
            let shares = if i == 1 { 0 } else { 1_000 + 100 * self.rng.below(500) };
            let (locate, name, mid) =
                (self.stocks[i].locate, self.stocks[i].name, self.stocks[i].mid);
            let m = self.match_number();
            self.frame(
                b'Q',
                locate,
                &[F::U64(shares), F::S(&name), F::U32(mid), F::U64(m), F::B(cross_type)],
            );
        }
    }

    fn match_number(&mut self) -> u64 {
        let m = self.next_match;
        self.next_match += 1 + self.rng.below(3);
        if self.matches.len() == 64 {
            self.matches.remove(0);
        }
        self.matches.push(m);
        m
    }

    fn shares(&mut self) -> u32 {
        // Mostly round lots, sometimes odd lots.
        if self.rng.below(5) == 0 {
            1 + self.rng.below(99) as u32
        } else {
            100 * (1 + self.rng.below(10) as u32)
        }
    }

    /// A price for a new order on `side` of stock `s`: a few cents from the
    /// mid, never at or through the other side's best price.
    fn price(&mut self, s: usize, side: Side) -> u32 {
        if self.rng.below(8) == 0 {
            let mid = &mut self.stocks[s].mid;
            *mid = if self.rng.below(2) == 0 { *mid + CENT } else { *mid - CENT };
        }
        let away = CENT * (1 + self.rng.below(3) as u32 + self.rng.below(8) as u32 / 3);
        let stock = &self.stocks[s];
        match side {
            Side::Buy => {
                let p = stock.mid - away;
                stock.best_price(Side::Sell).map_or(p, |ask| p.min(ask - CENT))
            }
            Side::Sell => {
                let p = stock.mid + away;
                stock.best_price(Side::Buy).map_or(p, |bid| p.max(bid + CENT))
            }
        }
    }

    /// Writes one message of the continuous session.
    fn step(&mut self) {
        self.tick_clock();
        let s = self.rng.below(self.stocks.len() as u64) as usize;
        let live = self.stocks[s].orders.len();
        let roll = self.rng.below(1000);
        // Steer the book size: add when thin, remove when deep.
        let roll = if live < TARGET_ORDERS / 8 {
            roll % 340
        } else if live > TARGET_ORDERS * 2 && roll < 340 {
            600 + roll
        } else {
            roll
        };
        match roll {
            0..=299 => self.add(s, false),
            300..=339 => self.add(s, true),
            340..=429 => self.execute(s, false),
            430..=469 => self.execute(s, true),
            470..=539 => self.cancel(s),
            540..=759 => self.delete(s),
            760..=879 => self.replace(s),
            880..=939 => self.hidden_trade(s),
            940..=949 => self.broken_trade(s),
            950..=984 => self.imbalance(s),
            _ => self.retail_interest(s),
        }
    }

    fn add(&mut self, s: usize, with_mpid: bool) {
        let side = if self.rng.below(2) == 0 { Side::Buy } else { Side::Sell };
        let price = self.price(s, side);
        let shares = self.shares();
        let order_ref = self.next_ref;
        self.next_ref += 1 + self.rng.below(4);
        let stock = &mut self.stocks[s];
        stock.orders.push(Live { order_ref, side, shares, price });
        let (locate, name) = (stock.locate, stock.name);
        let side = if side == Side::Buy { b'B' } else { b'S' };
        if with_mpid {
            let mpid = MPIDS[self.rng.below(MPIDS.len() as u64) as usize];
            self.frame(
                b'F',
                locate,
                &[
                    F::U64(order_ref),
                    F::B(side),
                    F::U32(shares),
                    F::S(&name),
                    F::U32(price),
                    F::S(mpid),
                ],
            );
        } else {
            self.frame(
                b'A',
                locate,
                &[F::U64(order_ref), F::B(side), F::U32(shares), F::S(&name), F::U32(price)],
            );
        }
    }

    /// A random live order of stock `s`, or an add when it has none.
    fn pick(&mut self, s: usize) -> Option<usize> {
        let n = self.stocks[s].orders.len();
        if n == 0 {
            self.add(s, false);
            return None;
        }
        Some(self.rng.below(n as u64) as usize)
    }

    /// Takes `shares` off order `i` of stock `s`, removing it at 0.
    fn take(&mut self, s: usize, i: usize, shares: u32) {
        let o = &mut self.stocks[s].orders[i];
        o.shares -= shares;
        if o.shares == 0 {
            // `remove`, not `swap_remove`: the vector's order is time priority.
            self.stocks[s].orders.remove(i);
        }
    }

    fn execute(&mut self, s: usize, with_price: bool) {
        let side = if self.rng.below(2) == 0 { Side::Buy } else { Side::Sell };
        let side = if self.stocks[s].best(side).is_some() {
            side
        } else if side == Side::Buy {
            Side::Sell
        } else {
            Side::Buy
        };
        let Some(i) = self.stocks[s].best(side) else {
            self.add(s, false);
            return;
        };
        let o = self.stocks[s].orders[i];
        let shares = if self.rng.below(2) == 0 {
            o.shares
        } else {
            1 + self.rng.below(u64::from(o.shares)) as u32
        };
        let locate = self.stocks[s].locate;
        let m = self.match_number();
        if with_price {
            let printable = if self.rng.below(4) == 0 { b'N' } else { b'Y' };
            let price = if side == Side::Buy { o.price + CENT } else { o.price - CENT };
            self.frame(
                b'C',
                locate,
                &[F::U64(o.order_ref), F::U32(shares), F::U64(m), F::B(printable), F::U32(price)],
            );
        } else {
            self.frame(b'E', locate, &[F::U64(o.order_ref), F::U32(shares), F::U64(m)]);
        }
        self.take(s, i, shares);
    }

    fn cancel(&mut self, s: usize) {
        let Some(i) = self.pick(s) else { return };
        let o = self.stocks[s].orders[i];
        if o.shares < 2 {
            return self.delete_at(s, i);
        }
        let shares = 1 + self.rng.below(u64::from(o.shares - 1)) as u32;
        let locate = self.stocks[s].locate;
        self.frame(b'X', locate, &[F::U64(o.order_ref), F::U32(shares)]);
        self.take(s, i, shares);
    }

    fn delete(&mut self, s: usize) {
        if let Some(i) = self.pick(s) {
            self.delete_at(s, i);
        }
    }

    fn delete_at(&mut self, s: usize, i: usize) {
        let o = self.stocks[s].orders.remove(i);
        let locate = self.stocks[s].locate;
        self.frame(b'D', locate, &[F::U64(o.order_ref)]);
    }

    fn replace(&mut self, s: usize) {
        let Some(i) = self.pick(s) else { return };
        let old = self.stocks[s].orders.remove(i);
        let price = self.price(s, old.side);
        let shares = self.shares();
        let new_ref = self.next_ref;
        self.next_ref += 1 + self.rng.below(4);
        let stock = &mut self.stocks[s];
        stock.orders.push(Live { order_ref: new_ref, side: old.side, shares, price });
        let locate = stock.locate;
        self.frame(
            b'U',
            locate,
            &[F::U64(old.order_ref), F::U64(new_ref), F::U32(shares), F::U32(price)],
        );
    }

    /// A `P`: an execution against a hidden order, between the best prices.
    fn hidden_trade(&mut self, s: usize) {
        let shares = self.shares();
        let stock = &self.stocks[s];
        let price = match (stock.best_price(Side::Buy), stock.best_price(Side::Sell)) {
            (Some(b), Some(a)) => (b + a) / 2 / CENT * CENT,
            _ => stock.mid,
        };
        let (locate, name) = (stock.locate, stock.name);
        let m = self.match_number();
        self.frame(
            b'P',
            locate,
            &[F::U64(0), F::B(b'B'), F::U32(shares), F::S(&name), F::U32(price), F::U64(m)],
        );
    }

    fn broken_trade(&mut self, s: usize) {
        if self.matches.is_empty() {
            return self.hidden_trade(s);
        }
        let at = self.rng.below(self.matches.len() as u64) as usize;
        let m = self.matches.remove(at);
        self.frame(b'B', self.stocks[s].locate, &[F::U64(m)]);
    }

    /// An `I` (net order imbalance indicator): counted, not used by a book.
    fn imbalance(&mut self, s: usize) {
        let (locate, name, mid) = (self.stocks[s].locate, self.stocks[s].name, self.stocks[s].mid);
        let paired = 100 * self.rng.below(1000);
        let imbalance = 100 * self.rng.below(100);
        let direction = [b'B', b'S', b'N', b'O'][self.rng.below(4) as usize];
        self.frame(
            b'I',
            locate,
            &[
                F::U64(paired),
                F::U64(imbalance),
                F::B(direction),
                F::S(&name),
                F::U32(mid + CENT),
                F::U32(mid - CENT),
                F::U32(mid),
                F::B(b'C'),
                F::B(b'L'),
            ],
        );
    }

    /// An `N` (retail price improvement indicator): counted, not used.
    fn retail_interest(&mut self, s: usize) {
        let (locate, name) = (self.stocks[s].locate, self.stocks[s].name);
        let flag = [b'B', b'S', b'A', b'N'][self.rng.below(4) as usize];
        self.frame(b'N', locate, &[F::S(&name), F::B(flag)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::itch::{Frames, Message, decode};
    use std::collections::HashMap;

    #[test]
    fn same_seed_same_bytes_exact_count() {
        let a = generate(9, 2_000);
        // Deterministic.
        assert_eq!(a, generate(9, 2_000));
        assert_ne!(a, generate(10, 2_000));
        // Exactly the number of messages asked for, all well formed.
        let frames: Vec<_> = Frames::new(&a).map(|(_, f)| decode(f.unwrap()).unwrap()).collect();
        assert_eq!(frames.len(), 2_000);
        // Fewer than the fixed sequence: the fixed sequence alone.
        assert_eq!(Frames::new(&generate(1, 0)).count(), FIXED_MESSAGES);
    }

    #[test]
    fn order_flow_is_consistent_and_timestamps_increase() {
        let buf = generate(3, 30_000);
        let mut live: HashMap<u64, u32> = HashMap::new();
        let mut kinds: HashMap<u8, usize> = HashMap::new();
        let mut last_ts = 0;
        for (_, f) in Frames::new(&buf) {
            let f = f.unwrap();
            *kinds.entry(f[0]).or_default() += 1;
            let m = decode(f).unwrap();
            assert!(m.header().ts >= last_ts);
            last_ts = m.header().ts;
            let mut take = |r: u64, n: u32| {
                let left = live.get_mut(&r).expect("order on the book");
                assert!(n <= *left, "takes at most what is left");
                *left -= n;
                if *left == 0 {
                    live.remove(&r);
                }
            };
            match m {
                Message::AddOrder { order_ref, shares, .. } => {
                    assert!(live.insert(order_ref, shares).is_none());
                }
                Message::Executed { order_ref, executed_shares, .. }
                | Message::ExecutedWithPrice { order_ref, executed_shares, .. } => {
                    take(order_ref, executed_shares)
                }
                Message::Cancel { order_ref, cancelled_shares, .. } => {
                    take(order_ref, cancelled_shares)
                }
                Message::Delete { order_ref, .. } => assert!(live.remove(&order_ref).is_some()),
                Message::Replace { order_ref, new_order_ref, shares, .. } => {
                    assert!(live.remove(&order_ref).is_some());
                    assert!(live.insert(new_order_ref, shares).is_none());
                }
                _ => {}
            }
        }
        // Every type the generator promises is there.
        for k in b"SRHYLAFECXDUPQBIN" {
            assert!(kinds.get(k).copied().unwrap_or(0) > 0, "type {}", char::from(*k));
        }
    }
}
