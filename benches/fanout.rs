//! A writer shard's data path without sockets: dispatch a batch of 1,024
//! ticks over 1,000 symbols to S sessions subscribed to `["*"]`, encode one
//! frame per session at the end of the batch, and hand the frames over as a
//! socket task would. Throughput counts delivered messages (ticks x S in
//! mode all; fewer in mode latest, where a batch conflates).
//!
//! `cargo bench --bench fanout`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tickwire::feed::Market;
use tickwire::protocol::json::Format;
use tickwire::protocol::request::{Mode, Request};
use tickwire::tick::Channels;
use tickwire::tick::{Price, SymbolId, SymbolTable, Tick};
use tickwire::writer::metrics::ShardMetrics;
use tickwire::writer::shard::{Shard, ShardConfig};
use tokio::time::Instant;

const SYMBOLS: u32 = 1000;
const BATCH: u64 = 1024;

fn shard_with(sessions: usize, mode: Mode) -> (Shard, Vec<u32>) {
    let table = Arc::new(SymbolTable::new(4096));
    for i in 0..SYMBOLS {
        table.intern(&format!("S{i:04}")).unwrap();
    }
    let market = Arc::new(Market::new(table));
    let config = ShardConfig { queue_cap: 1 << 20, ..ShardConfig::default() };
    let reader = tickwire::ring::ring::<Tick>(2).1.reader();
    let mut shard = Shard::new(market, reader, config, Arc::new(ShardMetrics::default()));
    let mut slots = Vec::new();
    for uid in 0..sessions {
        let (slot, _ctl) = shard.open_session(Format::default(), uid as u64 + 1);
        let req = Request::Subscribe {
            id: None,
            symbols: vec!["*".into()],
            channels: Channels::BOTH,
            mode,
            max_hz: None,
            snapshot: false,
            resume: None,
        };
        shard.handle(slot, req);
        let now = Instant::now();
        shard.take_outgoing(slot, &mut Vec::new(), now);
        shard.written(slot, now);
        slots.push(slot);
    }
    (shard, slots)
}

fn bench_fanout(c: &mut Criterion) {
    for mode in [Mode::All, Mode::Latest] {
        let mut g = c.benchmark_group(format!("fanout/batch_1024_mode_{}", mode.name()));
        for sessions in [1usize, 10, 100] {
            g.throughput(Throughput::Elements(BATCH * sessions as u64));
            g.bench_with_input(BenchmarkId::from_parameter(sessions), &sessions, |b, &n| {
                let (mut shard, slots) = shard_with(n, mode);
                let mut seq = 0u64;
                let mut frames = Vec::new();
                b.iter(|| {
                    for i in 0..BATCH {
                        seq += 1;
                        let sym = SymbolId((i as u32 * 7919) % SYMBOLS);
                        let t = Tick {
                            seq,
                            ..Tick::quote(
                                sym,
                                seq,
                                Price(1_000_000 + i as i64),
                                100,
                                Price(1_000_100),
                                200,
                            )
                        };
                        shard.dispatch(&t);
                    }
                    shard.end_of_batch();
                    for &slot in &slots {
                        frames.clear();
                        let now = Instant::now();
                        shard.take_outgoing(slot, &mut frames, now);
                        black_box(frames.len());
                        shard.written(slot, now);
                    }
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench_fanout);
criterion_main!(benches);
