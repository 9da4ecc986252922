//! ITCH 5.0 ingest on one core, over a generated ~1M-message day held in
//! memory (no I/O): how many messages per second tickwire frames, decodes,
//! and decodes *and* books (order book per stock, BBO changes and trades
//! turned into ticks). The target is 10 M messages/s decoded and booked.
//!
//! - `frames_only`: walking the length prefixes, the floor under everything.
//! - `decode`: `itch::decode` of every frame.
//! - `decode_and_book`: `itch::Normalizer::apply` of every frame (a fresh
//!   normalizer per iteration, built outside the timing).
//! - `baseline_std_book`: the same decoding into the book most code would
//!   write first: `std::collections::HashMap` (SipHash) for orders and a
//!   `BTreeMap` per side for levels.
//!
//! `cargo bench --bench itch`
//!
//! Measured 2026-11-26 on the 2-core KVM dev machine (Rust 1.95, criterion
//! 0.8, other builds running), 1,000,000 messages (`generate(1, 1_000_000)`),
//! medians: frames_only 312 M msg/s, decode 48.7 M msg/s, decode_and_book
//! 19.1 M msg/s, baseline_std_book 9.1 M msg/s.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tickwire::feed::itch::book::Side;
use tickwire::feed::itch::{Frames, Message, Normalizer, decode, generate};
use tickwire::tick::{SymbolTable, Tick};

/// Messages in the generated day.
const MESSAGES: usize = 1_000_000;

/// The naive book: what `baseline_std_book` measures.
#[derive(Default)]
struct StdBook {
    orders: HashMap<u64, (u16, Side, u32, u32)>,
    levels: HashMap<(u16, Side), BTreeMap<u32, u64>>,
}

impl StdBook {
    fn level(&mut self, locate: u16, side: Side, price: u32, delta: i64) {
        let side_levels = self.levels.entry((locate, side)).or_default();
        let l = side_levels.entry(price).or_default();
        *l = (*l as i64 + delta).max(0) as u64;
        if *l == 0 {
            side_levels.remove(&price);
        }
    }

    fn best(&self, locate: u16) -> (Option<u32>, Option<u32>) {
        let bid = self.levels.get(&(locate, Side::Buy)).and_then(|m| m.keys().next_back());
        let ask = self.levels.get(&(locate, Side::Sell)).and_then(|m| m.keys().next());
        (bid.copied(), ask.copied())
    }

    fn reduce(&mut self, order_ref: u64, shares: u32) -> Option<u16> {
        let o = self.orders.get_mut(&order_ref)?;
        let taken = shares.min(o.2);
        o.2 -= taken;
        let (locate, side, left, price) = *o;
        if left == 0 {
            self.orders.remove(&order_ref);
        }
        self.level(locate, side, price, -i64::from(taken));
        Some(locate)
    }

    fn apply(&mut self, m: Message) -> Option<(Option<u32>, Option<u32>)> {
        let locate = match m {
            Message::AddOrder { header, order_ref, side, shares, price, .. } => {
                self.orders.insert(order_ref, (header.locate, side, shares, price));
                self.level(header.locate, side, price, i64::from(shares));
                header.locate
            }
            Message::Executed { order_ref, executed_shares: n, .. }
            | Message::ExecutedWithPrice { order_ref, executed_shares: n, .. }
            | Message::Cancel { order_ref, cancelled_shares: n, .. } => {
                self.reduce(order_ref, n)?
            }
            Message::Delete { order_ref, .. } => self.reduce(order_ref, u32::MAX)?,
            Message::Replace { order_ref, new_order_ref, shares, price, .. } => {
                let (locate, side, left, old_price) = self.orders.remove(&order_ref)?;
                self.level(locate, side, old_price, -i64::from(left));
                self.orders.insert(new_order_ref, (locate, side, shares, price));
                self.level(locate, side, price, i64::from(shares));
                locate
            }
            _ => return None,
        };
        Some(self.best(locate))
    }
}

fn bench_itch(c: &mut Criterion) {
    let day = generate(1, MESSAGES);
    let n = Frames::new(&day).count() as u64;
    let mut g = c.benchmark_group(format!("itch/{}k_messages", n / 1000));
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(6));
    // The harness alone: the frame walk every case below also does.
    g.bench_function("frames_only", |b| {
        b.iter(|| {
            let mut kinds = 0u64;
            for (_, f) in Frames::new(black_box(&day)) {
                kinds += u64::from(f.map_or(0, |f| f[0]));
            }
            black_box(kinds)
        })
    });
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for (_, f) in Frames::new(black_box(&day)) {
                if let Ok(m) = decode(f.unwrap_or(&[])) {
                    sum = sum.wrapping_add(m.header().ts);
                }
            }
            black_box(sum)
        })
    });
    let table = Arc::new(SymbolTable::new(64));
    g.bench_function("decode_and_book", |b| {
        b.iter_batched(
            || (Normalizer::new(table.clone()), Vec::<Tick>::with_capacity(64)),
            |(mut norm, mut out)| {
                let mut ticks = 0usize;
                for (_, f) in Frames::new(black_box(&day)) {
                    out.clear();
                    let _ = norm.apply(f.unwrap_or(&[]), &mut out);
                    ticks += out.len();
                }
                black_box(ticks);
                norm
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("baseline_std_book", |b| {
        b.iter_batched(
            StdBook::default,
            |mut book| {
                let mut changes = 0usize;
                for (_, f) in Frames::new(black_box(&day)) {
                    if let Ok(m) = decode(f.unwrap_or(&[])) {
                        changes += usize::from(book.apply(m).is_some());
                    }
                }
                black_box(changes);
                book
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_itch);
criterion_main!(benches);
