//! The embedded default feed: a seeded random walk over a realistic symbol
//! list, paced open-loop at a fixed rate.
//!
//! The same seed, symbol count and rate give the same sequence of updates on
//! every run (the generator is a hand-written SplitMix64, not `rand`, whose
//! stream may change between versions). Tick `k` is *due* at
//! `start + k / rate` and carries that due time as its source time, whether
//! or not the feed thread got to it on time: latency measured from `t` is
//! free of coordinated omission.
//!
//! Busy names update more often (a squared-uniform pick favours the head of
//! the list, which is ordered by activity); about one update in eight is a
//! trade at the bid, the ask or inside the spread; sizes are round lots.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::symbols::SYMBOLS;
use super::{FeedSource, Poll};
use crate::tick::{Price, SymbolId, SymbolTable, Tick, now_ns};

/// Most ticks produced per poll, so publication stays batched when the
/// generator catches up after a stall.
const MAX_BATCH: u64 = 2048;

/// Options of the synthetic feed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticConfig {
    /// Number of symbols (the busiest names of the list first; beyond the
    /// list, generated names).
    pub symbols: usize,
    /// Updates per second over all symbols.
    pub rate: f64,
    /// Seed of the random walk.
    pub seed: u64,
    /// When set, the first 100 ms of every second run at this many times the
    /// rate (a market-open style burst).
    pub burst: Option<f64>,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig { symbols: 500, rate: 2_000.0, seed: 1, burst: None }
    }
}

/// SplitMix64: tiny, fast, and stable forever.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Per-symbol state of the walk.
struct Instrument {
    sym: SymbolId,
    /// Mid price in units of half a cent (so bid and ask land on cents).
    mid_half_cents: i64,
    /// Spread in cents (1..=5).
    spread_cents: i64,
}

/// The synthetic feed source.
pub struct Synthetic {
    instruments: Vec<Instrument>,
    rng: SplitMix64,
    rate: f64,
    burst: Option<f64>,
    /// Monotonic start of the schedule.
    start: Instant,
    /// Wall-clock start, for source times.
    start_ns: u64,
    /// Ticks produced so far (tick k is due at start + k / rate).
    emitted: u64,
}

/// The name of the `i`-th synthetic symbol: the list first, then generated
/// four-letter names with a `Z` prefix that no real listing uses.
pub fn symbol_name(i: usize) -> String {
    match SYMBOLS.get(i) {
        Some((name, _)) => (*name).to_string(),
        None => {
            let mut n = i - SYMBOLS.len();
            let mut s = String::from("Z");
            for _ in 0..4 {
                s.push((b'A' + (n % 26) as u8) as char);
                n /= 26;
            }
            s
        }
    }
}

impl Synthetic {
    /// Interns the symbols and seeds the walk.
    pub fn new(
        config: SyntheticConfig,
        table: &Arc<SymbolTable>,
    ) -> Result<Synthetic, crate::tick::SymbolError> {
        let mut rng = SplitMix64::new(config.seed);
        let mut instruments = Vec::with_capacity(config.symbols);
        for i in 0..config.symbols {
            let sym = table.intern(&symbol_name(i))?;
            let cents =
                SYMBOLS.get(i).map(|s| i64::from(s.1)).unwrap_or(1_000 + rng.below(20_000) as i64);
            instruments.push(Instrument {
                sym,
                mid_half_cents: cents * 2 + 1,
                spread_cents: 1 + rng.below(3) as i64,
            });
        }
        Ok(Synthetic {
            instruments,
            rng,
            rate: config.rate.max(0.001),
            burst: config.burst.filter(|f| *f > 1.0),
            start: Instant::now(),
            start_ns: now_ns(),
            emitted: 0,
        })
    }

    /// Ticks due by `elapsed` since the start, bursts included.
    fn due_by(&self, elapsed: Duration) -> u64 {
        let secs = elapsed.as_secs_f64();
        let mut due = secs * self.rate;
        if let Some(factor) = self.burst {
            let in_burst = elapsed.as_secs() as f64 * 0.1 + (secs.fract()).min(0.1);
            due += in_burst * self.rate * (factor - 1.0);
        }
        // Tick k is due at k / rate: at `elapsed`, ticks 0..=floor(secs *
        // rate) are due. (Counting floor(secs * rate) would send tick k only
        // at (k + 1) / rate while stamping it k / rate: 1/R of latency that
        // is not there, a full millisecond at 1,000 updates/s.)
        due as u64 + 1
    }

    /// Source time of tick `k` (exact without bursts, the poll time with).
    fn due_ns(&self, k: u64, now: Instant) -> u64 {
        if self.burst.is_some() {
            return self.start_ns + now.duration_since(self.start).as_nanos() as u64;
        }
        self.start_ns + (k as f64 * 1e9 / self.rate) as u64
    }

    /// One step of the walk for a random (skewed) symbol.
    fn next_tick(&mut self, src_ns: u64) -> Option<Tick> {
        let n = self.instruments.len() as f64;
        let u = self.rng.unit();
        let idx = ((u * u) * n) as usize;
        let rnd = self.rng.next_u64();
        let inst = self.instruments.get_mut(idx)?;
        // Mid moves by -2..=+2 half-cents, rarely by more.
        let step = (rnd % 5) as i64 - 2;
        let jump = if (rnd >> 8).is_multiple_of(64) { ((rnd >> 16) % 21) as i64 - 10 } else { 0 };
        inst.mid_half_cents = (inst.mid_half_cents + step + jump).max(4);
        if (rnd >> 24).is_multiple_of(16) {
            inst.spread_cents = 1 + ((rnd >> 28) % 5) as i64;
        }
        let half_spread = inst.spread_cents; // in half-cents: spread_cents / 2 * 2
        let bid_hc = inst.mid_half_cents - half_spread;
        let ask_hc = inst.mid_half_cents + half_spread;
        let to_price = |hc: i64| Price((hc.max(2) / 2) * 100);
        let lots = |r: u64| (1 + (r % 20) as u32) * 100;
        if (rnd >> 32).is_multiple_of(8) {
            let px = match (rnd >> 36) % 3 {
                0 => to_price(bid_hc),
                1 => to_price(ask_hc),
                _ => to_price(inst.mid_half_cents),
            };
            Some(Tick::trade(
                inst.sym,
                src_ns,
                px,
                lots(rnd >> 40) / (1 + ((rnd >> 50) % 4) as u32),
            ))
        } else {
            Some(Tick::quote(
                inst.sym,
                src_ns,
                to_price(bid_hc),
                lots(rnd >> 40),
                to_price(ask_hc),
                lots(rnd >> 48),
            ))
        }
    }
}

impl FeedSource for Synthetic {
    /// The wall clock (as the ticks read it: the start's, plus the time
    /// since), but never past the next tick not generated yet: due ticks
    /// are stamped with their schedule, which may be behind it.
    fn source_time(&self, now: Instant) -> Option<u64> {
        // The clock the ticks are stamped on (`due_ns`).
        let wall = self.start_ns + now.saturating_duration_since(self.start).as_nanos() as u64;
        if self.burst.is_some() {
            // Ticks are stamped with the poll's time: none is behind it.
            return Some(wall);
        }
        Some(wall.min(self.due_ns(self.emitted, now)))
    }

    fn poll(&mut self, out: &mut Vec<Tick>) -> Poll {
        let now = Instant::now();
        let due = self.due_by(now.duration_since(self.start));
        if due <= self.emitted {
            let next = Duration::from_secs_f64(self.emitted as f64 / self.rate);
            let at = self.start + next;
            // During a burst the next tick may be due sooner than the plain rate says.
            let at =
                if self.burst.is_some() { at.min(now + Duration::from_micros(200)) } else { at };
            return Poll::WaitUntil(at);
        }
        let n = (due - self.emitted).min(MAX_BATCH);
        for _ in 0..n {
            let src = self.due_ns(self.emitted, now);
            if let Some(tick) = self.next_tick(src) {
                out.push(tick);
            }
            self.emitted += 1;
        }
        Poll::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64) -> Vec<Tick> {
        let table = Arc::new(SymbolTable::new(1024));
        let mut feed =
            Synthetic::new(SyntheticConfig { symbols: 50, rate: 1e9, seed, burst: None }, &table)
                .unwrap();
        let mut out = Vec::new();
        while out.len() < 1000 {
            feed.poll(&mut out);
        }
        out.truncate(1000);
        // Source times are the schedule, not the clock: drop them for comparison.
        out.iter().map(|t| Tick { src_ns: 0, ..*t }).collect()
    }

    #[test]
    fn the_clock_never_passes_a_tick_not_generated_yet() {
        // 1,000 ticks/s: a feed thread polling late finds ticks due that it
        // has not generated; the clock stays at the first of them.
        let table = Arc::new(SymbolTable::new(1024));
        let config = SyntheticConfig { symbols: 5, rate: 1000.0, seed: 1, burst: None };
        let mut feed = Synthetic::new(config, &table).unwrap();
        let mut out = Vec::new();
        assert_eq!(feed.poll(&mut out), Poll::Ready);
        let later = Instant::now() + Duration::from_secs(2);
        let clock = feed.source_time(later).unwrap();
        assert_eq!(clock, feed.due_ns(feed.emitted, later));
        assert!(out.iter().all(|t| t.src_ns < clock));
        // Generating what is due moves it on: every later tick is at or past it.
        let mut rest = Vec::new();
        feed.poll(&mut rest);
        assert!(rest.iter().all(|t| t.src_ns >= clock));
    }

    #[test]
    fn same_seed_same_ticks() {
        // Determinism is what makes a synthetic run reproducible.
        assert_eq!(run(7), run(7));
        // And a different seed is a different market.
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn quotes_are_sane() {
        for tick in run(3) {
            match tick.body {
                crate::tick::Body::Quote { bid, ask, bid_size, ask_size } => {
                    // A synthetic book is never crossed and sizes are round lots.
                    assert!(bid < ask, "crossed {tick:?}");
                    assert!(bid.0 > 0);
                    assert_eq!(bid_size % 100, 0);
                    assert_eq!(ask_size % 100, 0);
                }
                crate::tick::Body::Trade { price, size } => {
                    assert!(price.0 > 0 && size > 0);
                }
                crate::tick::Body::Bar(_) => panic!("a source makes no bars: {tick:?}"),
            }
        }
    }

    #[test]
    fn generated_names_extend_the_list() {
        let n = SYMBOLS.len();
        // Past the reference list, names are generated and distinct.
        assert_ne!(symbol_name(n), symbol_name(n + 1));
        assert!(crate::tick::valid_symbol(&symbol_name(n + 5000)));
    }
}
