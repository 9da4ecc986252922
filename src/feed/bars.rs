//! OHLCV bars, built once per symbol on the feed thread from the trades it
//! publishes: the `bars_1s` and `bars_1m` streams (docs/PROTOCOL.md,
//! "Bars").
//!
//! Every trade updates the open bar of its symbol in each interval (one
//! update of each bars stream); a bar closes when the source clock passes
//! its end (one more update, `closed`), whether or not a later trade comes:
//! the feed thread asks [`Bars::close_due`] with the source's clock
//! ([`super::FeedSource::source_time`]) between polls. An interval without
//! trades has no bar. The updates are ticks like any other, so numbering,
//! the latest-value table, history, conflation and every session rule
//! apply to them unchanged.
//!
//! A trade older than its symbol's open bar (an out-of-order record) is
//! counted in that open bar. A bar that has closed never changes again and
//! its interval never opens again: a trade for an interval whose bar has
//! closed, with no later bar open, is *late* and left out of the bars
//! ([`Bars::take_late`], `tickwire_bars_late_trades_total`). The feed
//! thread closes bars only on a clock up to which its source has handed
//! over every record ([`super::FeedSource::source_time`]), so only a live
//! source whose upstream stamps trades later than the grace it is given
//! has late trades.

use crate::tick::{Bar, Body, Channel, Price, SymbolId, Tick};

/// The intervals, in the order of [`Bars::open`]'s pairs.
const INTERVALS: [Channel; 2] = [Channel::Bars1s, Channel::Bars1m];

/// A bar being built.
#[derive(Debug, Clone, Copy)]
struct Open {
    start_ns: u64,
    bar: Bar,
    /// Sum of price x size, for the VWAP (in price units x shares).
    notional: i128,
}

/// The open bars of every symbol. See the module docs.
#[derive(Debug, Default)]
pub struct Bars {
    /// Per symbol: the open 1 s and 1 m bars.
    open: Vec<[Option<Open>; 2]>,
    /// Per symbol: the end of the last closed 1 s and 1 m bar (0: none),
    /// before which no bar opens again.
    closed_end: Vec<[u64; 2]>,
    /// Per interval: the symbols with an open bar, and the earliest end.
    pending: [Vec<SymbolId>; 2],
    next_end: [Option<u64>; 2],
    /// Late trades since the last [`Bars::take_late`].
    late: u64,
}

impl Bars {
    /// Updates the bars of `trade`'s symbol and appends their updates (and
    /// the closes of the bars it ends) to `out`. Anything but a trade is
    /// ignored.
    pub fn on_trade(&mut self, trade: &Tick, out: &mut Vec<Tick>) {
        let Body::Trade { price, size } = trade.body else { return };
        let i = trade.sym.index();
        if i >= self.open.len() {
            self.open.resize(i + 1, [None, None]);
            self.closed_end.resize(i + 1, [0, 0]);
        }
        let mut late = false;
        for (k, interval) in INTERVALS.into_iter().enumerate() {
            let width = interval.bar_ns().expect("a bars channel");
            let start = trade.src_ns - trade.src_ns % width;
            let slot = &mut self.open[i][k];
            if slot.is_none() && start < self.closed_end[i][k] {
                // Its interval's bar has closed and nothing later is open.
                late = true;
                continue;
            }
            // Already in `pending` (an entry stays until `close_due` finds
            // the slot empty or its bar closed).
            let listed = slot.is_some();
            if let Some(o) = slot
                && start > o.start_ns
            {
                // A trade past the bar: its close, then a new one.
                o.bar.closed = true;
                out.push(tick(trade.sym, o));
                self.closed_end[i][k] = o.start_ns + width;
                *slot = None;
            }
            let o = match slot {
                Some(o) => {
                    o.bar.high = o.bar.high.max(price);
                    o.bar.low = o.bar.low.min(price);
                    o.bar.close = price;
                    o.bar.volume = o.bar.volume.saturating_add(size);
                    o.bar.trades += 1;
                    o.notional += i128::from(price.0) * i128::from(size);
                    o
                }
                None => {
                    let end = start + width;
                    self.next_end[k] = Some(self.next_end[k].map_or(end, |e| e.min(end)));
                    if !listed {
                        self.pending[k].push(trade.sym);
                    }
                    slot.insert(Open {
                        start_ns: start,
                        bar: Bar {
                            interval,
                            open: price,
                            high: price,
                            low: price,
                            close: price,
                            volume: size,
                            trades: 1,
                            vwap: price,
                            closed: false,
                        },
                        notional: i128::from(price.0) * i128::from(size),
                    })
                }
            };
            if o.bar.volume > 0 {
                o.bar.vwap = Price((o.notional / i128::from(o.bar.volume)) as i64);
            }
            out.push(tick(trade.sym, o));
        }
        self.late += u64::from(late);
    }

    /// Trades left out of some bar since the last call because they came
    /// after their interval's bar had closed (see the module docs).
    pub fn take_late(&mut self) -> u64 {
        std::mem::take(&mut self.late)
    }

    /// Closes every open bar whose interval ended at or before `now_ns` on
    /// the source clock, appending the closes to `out`.
    pub fn close_due(&mut self, now_ns: u64, out: &mut Vec<Tick>) {
        for k in 0..INTERVALS.len() {
            if self.next_end[k].is_none_or(|end| end > now_ns) {
                continue;
            }
            let width = INTERVALS[k].bar_ns().expect("a bars channel");
            let mut next_end: Option<u64> = None;
            let (open, closed_end) = (&mut self.open, &mut self.closed_end);
            self.pending[k].retain(|&sym| {
                let slot = &mut open[sym.index()][k];
                let Some(o) = slot else { return false };
                let end = o.start_ns + width;
                if end > now_ns {
                    next_end = Some(next_end.map_or(end, |e| e.min(end)));
                    return true;
                }
                o.bar.closed = true;
                out.push(tick(sym, o));
                closed_end[sym.index()][k] = end;
                *slot = None;
                false
            });
            self.next_end[k] = next_end;
        }
    }

    /// Closes every open bar (the source ended: its clock will not move on).
    pub fn close_all(&mut self, out: &mut Vec<Tick>) {
        self.close_due(u64::MAX, out);
    }

    /// Forgets every bar (the numbering starts over).
    pub fn reset(&mut self) {
        *self = Bars::default();
    }

    /// Whether some bar is open (and so waits for the clock).
    pub fn any_open(&self) -> bool {
        self.next_end.iter().any(Option::is_some)
    }
}

/// The update of an open bar, as a tick of its bars stream.
fn tick(sym: SymbolId, o: &Open) -> Tick {
    Tick { sym, seq: 0, src_ns: o.start_ns, ingest_ns: 0, body: Body::Bar(o.bar) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(sym: u32, s: f64, price: i64, size: u32) -> Tick {
        Tick::trade(SymbolId(sym), (s * 1e9) as u64, Price(price), size)
    }

    fn bars(out: &[Tick], ch: Channel) -> Vec<Bar> {
        out.iter()
            .filter(|t| t.channel() == ch)
            .map(|t| match t.body {
                Body::Bar(b) => b,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn every_trade_updates_the_open_bars_and_the_clock_closes_them() {
        let mut b = Bars::default();
        let mut out = Vec::new();
        b.on_trade(&trade(0, 10.1, 100, 10), &mut out);
        b.on_trade(&trade(0, 10.5, 130, 30), &mut out);
        b.on_trade(&trade(0, 10.9, 90, 60), &mut out);
        let s = bars(&out, Channel::Bars1s);
        // One update per trade, each the bar as it stands.
        assert_eq!(s.len(), 3);
        let last = s[2];
        assert_eq!(
            (last.open, last.high, last.low, last.close),
            (Price(100), Price(130), Price(90), Price(90))
        );
        assert_eq!((last.volume, last.trades, last.closed), (100, 3, false));
        // VWAP: (100*10 + 130*30 + 90*60) / 100 = 103.
        assert_eq!(last.vwap, Price(103));
        // The bar started on its whole second.
        assert_eq!(out[0].src_ns, 10_000_000_000);
        // Before the second ends nothing closes; at its end the 1 s bar does.
        out.clear();
        b.close_due(10_999_999_999, &mut out);
        assert!(out.is_empty());
        b.close_due(11_000_000_000, &mut out);
        let closed = bars(&out, Channel::Bars1s);
        assert_eq!(closed.len(), 1);
        assert!(closed[0].closed && closed[0].close == Price(90));
        // The minute bar stays open; a trade in the next second opens a new 1 s bar.
        assert!(b.any_open());
        out.clear();
        b.on_trade(&trade(0, 11.2, 95, 5), &mut out);
        let s = bars(&out, Channel::Bars1s);
        assert_eq!((s[0].open, s[0].volume, s[0].trades), (Price(95), 5, 1));
        let m = bars(&out, Channel::Bars1m);
        assert_eq!(
            (m[0].open, m[0].high, m[0].volume, m[0].trades),
            (Price(100), Price(130), 105, 4)
        );
    }

    #[test]
    fn a_closed_interval_never_opens_again() {
        let mut b = Bars::default();
        let mut out = Vec::new();
        b.on_trade(&trade(1, 5.2, 100, 1), &mut out);
        b.close_due(6_000_000_000, &mut out);
        out.clear();
        // A trade of the closed second arrives late: no second bar for it
        // (the minute bar, still open, counts it).
        b.on_trade(&trade(1, 5.9, 120, 2), &mut out);
        assert!(bars(&out, Channel::Bars1s).is_empty(), "{out:?}");
        let m = bars(&out, Channel::Bars1m);
        assert_eq!((m[0].volume, m[0].trades, m[0].high), (3, 2, Price(120)));
        assert_eq!(b.take_late(), 1);
        assert_eq!(b.take_late(), 0);
        // The next second opens as usual; a late trade for the closed second
        // now counts in that open bar, like any out-of-order record.
        out.clear();
        b.on_trade(&trade(1, 6.1, 90, 1), &mut out);
        b.on_trade(&trade(1, 5.5, 95, 1), &mut out);
        let s = bars(&out, Channel::Bars1s);
        assert_eq!(s.len(), 2);
        assert_eq!(
            out.iter().rfind(|t| t.channel() == Channel::Bars1s).unwrap().src_ns,
            6_000_000_000
        );
        assert_eq!((s[1].volume, s[1].low, s[1].trades), (2, Price(90), 2));
        assert_eq!(b.take_late(), 0);
    }

    #[test]
    fn a_trade_past_the_bar_closes_it_first() {
        // No clock (a replay at full speed): the next trade closes the bar.
        let mut b = Bars::default();
        let mut out = Vec::new();
        b.on_trade(&trade(3, 1.0, 10, 1), &mut out);
        out.clear();
        b.on_trade(&trade(3, 2.5, 20, 1), &mut out);
        let s = bars(&out, Channel::Bars1s);
        assert_eq!(s.len(), 2);
        assert!(s[0].closed && s[0].close == Price(10));
        assert!(!s[1].closed && s[1].open == Price(20));
        // close_all ends what is left.
        out.clear();
        b.close_all(&mut out);
        assert_eq!(out.len(), 2);
        assert!(!b.any_open());
    }
}
