//! The broadcast ring against the obvious alternatives, for bursts of 1, 10
//! and 100 ticks pushed and then read back by one reader on the same thread
//! (so the numbers are the data structure's cost, not scheduling):
//!
//! - `harness_overhead`: the loop and `black_box` alone;
//! - `ring`: tickwire's seqlock ring (`push` per tick, `read_batch`);
//! - `crossbeam_bounded`: a `crossbeam_channel::bounded` queue (`send`, `try_recv`);
//! - `mutex_vecdeque`: a `Mutex<VecDeque>` (lock per push, one lock per read batch).
//!
//! A broadcast to N readers costs the ring nothing extra per reader on the
//! producer side, while both baselines need one queue (and one copy) per
//! reader; `fanout_4_readers` shows that.
//!
//! `cargo bench --bench ring`

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Mutex;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tickwire::ring::{ReadOutcome, ring};
use tickwire::tick::{Price, SymbolId, Tick};

fn tick(i: u64) -> Tick {
    Tick {
        seq: i,
        ..Tick::quote(SymbolId(i as u32 & 1023), i, Price(1_000_000), 100, Price(1_000_100), 200)
    }
}

fn bench_bursts(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring/burst_one_reader");
    for burst in [1u64, 10, 100] {
        g.throughput(Throughput::Elements(burst));
        g.bench_with_input(BenchmarkId::new("harness_overhead", burst), &burst, |b, &n| {
            b.iter(|| {
                for i in 0..n {
                    black_box(tick(i));
                }
            })
        });
        g.bench_with_input(BenchmarkId::new("ring", burst), &burst, |b, &n| {
            let (mut tx, readers) = ring::<Tick>(4096);
            let mut rx = readers.reader();
            let mut out = Vec::with_capacity(128);
            b.iter(|| {
                for i in 0..n {
                    tx.push(tick(i));
                }
                out.clear();
                let r = rx.read_batch(&mut out, 128);
                assert!(matches!(r, ReadOutcome::Items(k) if k as u64 == n));
                black_box(out.len())
            })
        });
        g.bench_with_input(BenchmarkId::new("crossbeam_bounded", burst), &burst, |b, &n| {
            let (tx, rx) = crossbeam_channel::bounded::<Tick>(4096);
            b.iter(|| {
                for i in 0..n {
                    tx.send(tick(i)).unwrap();
                }
                let mut k = 0;
                while let Ok(t) = rx.try_recv() {
                    black_box(t);
                    k += 1;
                }
                assert_eq!(k, n);
            })
        });
        g.bench_with_input(BenchmarkId::new("mutex_vecdeque", burst), &burst, |b, &n| {
            let q = Mutex::new(VecDeque::<Tick>::with_capacity(4096));
            let mut out = Vec::with_capacity(128);
            b.iter(|| {
                for i in 0..n {
                    q.lock().unwrap().push_back(tick(i));
                }
                out.clear();
                out.extend(q.lock().unwrap().drain(..));
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn bench_fanout(c: &mut Criterion) {
    const READERS: usize = 4;
    const BURST: u64 = 100;
    let mut g = c.benchmark_group("ring/fanout_4_readers_burst_100");
    g.throughput(Throughput::Elements(BURST));
    g.bench_function("ring", |b| {
        let (mut tx, readers) = ring::<Tick>(4096);
        let mut rxs: Vec<_> = (0..READERS).map(|_| readers.reader()).collect();
        let mut out = Vec::with_capacity(128);
        b.iter(|| {
            for i in 0..BURST {
                tx.push(tick(i));
            }
            for rx in &mut rxs {
                out.clear();
                let _ = rx.read_batch(&mut out, 128);
                black_box(out.len());
            }
        })
    });
    g.bench_function("crossbeam_bounded_per_reader", |b| {
        let chans: Vec<_> =
            (0..READERS).map(|_| crossbeam_channel::bounded::<Tick>(4096)).collect();
        b.iter(|| {
            for i in 0..BURST {
                let t = tick(i);
                for (tx, _) in &chans {
                    tx.send(t).unwrap();
                }
            }
            for (_, rx) in &chans {
                while let Ok(t) = rx.try_recv() {
                    black_box(t);
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_bursts, bench_fanout);
criterion_main!(benches);
