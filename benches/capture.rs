//! Replay throughput of a capture file at `--speed max` on one thread: a
//! capture of 2,000,000 ticks (500 symbols, 4 quotes to 1 trade, blocks of
//! 4,096) is written once to the temp directory, so it is in the page cache
//! (a cold read from disk is not measured), then read back:
//!
//! - `harness_overhead`: the loop and `black_box` over the same ticks
//!   already decoded in a `Vec` (the floor);
//! - `a_next`: every tick through `RecordReader::next`;
//! - `b_next_block`: every block through `CaptureReader::next_block`;
//! - `c_next_block_publish`: `next_block`, then what the feed thread does
//!   per tick (`publish` in `src/feed/mod.rs`: number it, store it in the
//!   latest-value table, push it on a 65,536-slot ring), as the server
//!   sizes them by default;
//! - `publish_only`: the same publication from the decoded `Vec`, the
//!   baseline that shows what reading adds.
//!
//! Each pass of a, b and c opens the file anew (map it, read the footer,
//! intern 500 symbols), so every block's crc is checked as in a real
//! replay, not only in the first pass. Throughput is ticks per second.
//!
//! `cargo bench --bench capture`

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire::capture::CaptureReader;
use tickwire::capture::CaptureWriter;
use tickwire::feed::Market;
use tickwire::record_reader::RecordReader as _;
use tickwire::ring::{RingProducer, ring};
use tickwire::tick::{Price, SymbolId, SymbolTable, Tick};

const TICKS: usize = 2_000_000;
const SYMBOLS: u32 = 500;
/// The server's default `--max-symbols` and `--ring-capacity`.
const MAX_SYMBOLS: usize = 65_536;
const RING: usize = 65_536;

/// Writes the capture and returns its path; the ticks are a seeded
/// random walk.
fn write_capture() -> PathBuf {
    let path = std::env::temp_dir().join(format!("tickwire-bench-{}.twc", std::process::id()));
    let table = Arc::new(SymbolTable::new(MAX_SYMBOLS));
    for i in 0..SYMBOLS {
        table.intern(&format!("S{i:04}")).unwrap();
    }
    let mut w = CaptureWriter::create(&path, table).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut t = 1_764_167_400_000_000_000u64;
    for i in 0..TICKS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        t += x % 2_000;
        let sym = SymbolId((x >> 20) as u32 % SYMBOLS);
        let px = 1_000_000 + (x >> 40) as i64 % 10_000;
        let tick = if i % 5 == 4 {
            Tick::trade(sym, t, Price(px), (x % 1_000) as u32)
        } else {
            Tick::quote(sym, t, Price(px), 100, Price(px + 100), (x % 500) as u32)
        };
        w.push(&tick).unwrap();
    }
    let s = w.finish().unwrap();
    assert_eq!(s.ticks(), TICKS as u64);
    path
}

/// What `publish` in `src/feed/mod.rs` does per tick.
///
/// Hot path: no allocation, no lock.
fn publish(batch: &mut [Tick], seqs: &mut [u64], ring: &mut RingProducer<Tick>, market: &Market) {
    let ingest_ns = tickwire::tick::now_ns();
    for tick in batch.iter_mut() {
        let stream = tick.stream();
        let Some(seq) = seqs.get_mut(stream) else { continue };
        *seq += 1;
        tick.seq = *seq;
        tick.ingest_ns = ingest_ns;
        market.latest.store(stream, *tick);
        ring.push(*tick);
    }
}

fn bench_replay(c: &mut Criterion) {
    let path = write_capture();
    let table = Arc::new(SymbolTable::new(MAX_SYMBOLS));
    let mut reader = CaptureReader::open(&path, table.clone()).unwrap();
    assert!(reader.info().finished);
    let mut decoded = Vec::with_capacity(TICKS);
    while reader.next_block(&mut decoded).is_some() {}
    assert_eq!(decoded.len(), TICKS);

    let mut g = c.benchmark_group("capture/replay_2M_ticks");
    g.throughput(Throughput::Elements(TICKS as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));

    g.bench_function("harness_overhead", |b| {
        b.iter(|| {
            for t in &decoded {
                black_box(t);
            }
        })
    });
    g.bench_function("a_next", |b| {
        b.iter(|| {
            let mut reader = CaptureReader::open(&path, table.clone()).unwrap();
            let mut n = 0usize;
            while let Some(r) = reader.next() {
                black_box(&r);
                n += 1;
            }
            assert_eq!(n, TICKS);
        })
    });
    let mut block = Vec::with_capacity(8192);
    g.bench_function("b_next_block", |b| {
        b.iter(|| {
            let mut reader = CaptureReader::open(&path, table.clone()).unwrap();
            let mut n = 0usize;
            loop {
                block.clear();
                if reader.next_block(&mut block).is_none() {
                    break;
                }
                n += black_box(&block).len();
            }
            assert_eq!(n, TICKS);
        })
    });
    let market = Market::new(table.clone());
    let (mut producer, readers) = ring::<Tick>(RING);
    let mut seqs = vec![0u64; market.latest.capacity()];
    g.bench_function("c_next_block_publish", |b| {
        b.iter(|| {
            let mut reader = CaptureReader::open(&path, table.clone()).unwrap();
            loop {
                block.clear();
                if reader.next_block(&mut block).is_none() {
                    break;
                }
                publish(&mut block, &mut seqs, &mut producer, &market);
            }
        })
    });
    let mut copy = decoded.clone();
    g.bench_function("publish_only", |b| {
        b.iter(|| {
            for chunk in copy.chunks_mut(4096) {
                publish(chunk, &mut seqs, &mut producer, &market);
            }
        })
    });
    g.finish();
    drop(readers);
    let _ = std::fs::remove_file(&path);
}

criterion_group!(benches, bench_replay);
criterion_main!(benches);
