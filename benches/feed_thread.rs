//! What the feed thread pays per tick for two features of 1.1, on one
//! core, over ticks held in memory (no source, no I/O):
//!
//! - `history/depth_0` and `history/depth_256`: `publish` (number, store
//!   the latest value, push on the ring) of 1,000,000 quotes and trades over
//!   1,000 symbols, without and with the resume history (`--history 0`,
//!   and the default 256). The difference is the history's cost per tick.
//! - `bars/off` and `bars/on`: 1,000,000 trades over 8,000 symbols, source
//!   time advancing 5 µs per trade (200,000 trades/s, so 1 s and 1 m bars
//!   open and close as they would at that rate), published in batches of
//!   1,024 as the feed thread does; `on` also runs `Bars::on_trade` on
//!   every trade, `Bars::close_due` between batches and publishes the bar
//!   updates (two per trade, plus the closes). The difference is the cost
//!   of bars per trade.
//!
//! At the end it prints the history's memory (`History::bytes`, the figure
//! behind `tickwire_history_bytes`) after every stream of 1,000 and of
//! 10,000 symbols has updated.
//!
//! `cargo bench --bench feed_thread`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire::feed::bars::Bars;
use tickwire::feed::{Market, publish};
use tickwire::ring::ring;
use tickwire::tick::{Price, SymbolId, SymbolTable, Tick};

/// Ticks per iteration.
const TICKS: usize = 1_000_000;
/// The feed thread's batch.
const BATCH: usize = 1024;
/// The server's default ring.
const RING: usize = 65_536;
/// The server's default symbol capacity.
const CAPACITY: usize = 65_536;

/// A deterministic stream of ticks over `symbols` symbols (an LCG picks
/// the symbol and the price step), `gap_ns` of source time apart; every
/// `trade_every`th is a trade, the rest quotes.
fn ticks(symbols: u32, gap_ns: u64, trade_every: u64) -> Vec<Tick> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..TICKS as u64)
        .map(|i| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let sym = SymbolId(((x >> 33) % u64::from(symbols)) as u32);
            let px = 100_000_000 + ((x >> 20) % 10_000) as i64 * 100;
            let src_ns = 1_000_000_000 + i * gap_ns;
            if i % trade_every == 0 {
                Tick::trade(sym, src_ns, Price(px), 100)
            } else {
                Tick::quote(sym, src_ns, Price(px - 100), 200, Price(px + 100), 300)
            }
        })
        .collect()
}

fn bench_history(c: &mut Criterion) {
    let source = ticks(1_000, 5_000, 4);
    let mut g = c.benchmark_group("history");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(TICKS as u64));
    for depth in [0usize, 256] {
        let market = Market::with_history(Arc::new(SymbolTable::new(CAPACITY)), depth);
        let (mut producer, readers) = ring::<Tick>(RING);
        let mut seqs = vec![0u64; market.latest.capacity()];
        let mut batch = Vec::with_capacity(BATCH);
        g.bench_function(format!("depth_{depth}"), |b| {
            b.iter(|| {
                for chunk in source.chunks(BATCH) {
                    batch.clear();
                    batch.extend_from_slice(chunk);
                    publish(&mut batch, &mut seqs, &mut producer, &market);
                }
            })
        });
        drop(readers);
    }
    g.finish();
}

fn bench_bars(c: &mut Criterion) {
    let trades = ticks(8_000, 5_000, 1);
    let mut g = c.benchmark_group("bars");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(TICKS as u64));
    for on in [false, true] {
        let market = Market::new(Arc::new(SymbolTable::new(CAPACITY)));
        let (mut producer, readers) = ring::<Tick>(RING);
        let mut seqs = vec![0u64; market.latest.capacity()];
        let mut batch = Vec::with_capacity(BATCH);
        let mut bar_ticks = Vec::with_capacity(4 * BATCH);
        g.bench_function(if on { "on" } else { "off" }, |b| {
            b.iter(|| {
                let mut bars = Bars::default();
                for chunk in trades.chunks(BATCH) {
                    batch.clear();
                    batch.extend_from_slice(chunk);
                    if on {
                        // Between polls, on the source clock.
                        bars.close_due(chunk[0].src_ns, &mut bar_ticks);
                        publish(&mut bar_ticks, &mut seqs, &mut producer, &market);
                        bar_ticks.clear();
                    }
                    publish(&mut batch, &mut seqs, &mut producer, &market);
                    if on {
                        batch.iter().for_each(|t| bars.on_trade(t, &mut bar_ticks));
                        publish(&mut bar_ticks, &mut seqs, &mut producer, &market);
                        bar_ticks.clear();
                    }
                }
                black_box(bars.any_open())
            })
        });
        drop(readers);
    }
    g.finish();
}

/// The history's memory once every quote and trade stream of `symbols`
/// symbols has updated, at the default depth.
fn history_memory() {
    for symbols in [1_000u32, 10_000] {
        let market = Market::with_history(Arc::new(SymbolTable::new(CAPACITY)), 256);
        let (mut producer, _readers) = ring::<Tick>(RING);
        let mut seqs = vec![0u64; market.latest.capacity()];
        let mut all: Vec<Tick> = (0..symbols)
            .flat_map(|s| {
                let sym = SymbolId(s);
                [
                    Tick::quote(sym, 1, Price(99), 1, Price(101), 1),
                    Tick::trade(sym, 1, Price(100), 1),
                ]
            })
            .collect();
        publish(&mut all, &mut seqs, &mut producer, &market);
        let bytes = market.history.bytes();
        println!(
            "history memory, depth 256, {symbols} symbols x (quotes, trades): {} bytes ({:.1} MiB, {} bytes per stream)",
            bytes,
            bytes as f64 / (1024.0 * 1024.0),
            bytes / (2 * symbols as usize)
        );
    }
}

fn bench(c: &mut Criterion) {
    bench_history(c);
    bench_bars(c);
    history_memory();
}

criterion_group!(benches, bench);
criterion_main!(benches);
