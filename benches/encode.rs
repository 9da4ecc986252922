//! JSON encoding of market-data updates: tickwire's hand-written encoder
//! against `serde_json` (what a typical server would use), and a fan-out
//! frame built by encoding each update once and copying it behind every
//! subscriber's head, against encoding it per subscriber; and the binary
//! subprotocol `tickwire.v1.bin` on the same update and the same batch
//! (records encoded once, copied with each subscriber's `cf`).
//!
//! `cargo bench --bench encode`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire::protocol::binary;
use tickwire::protocol::json::{Format, TimeUnit, write_tail, write_update_head};
use tickwire::tick::{Price, SymbolId, Tick};

fn quote(i: u64) -> Tick {
    Tick {
        seq: 1_000 + i,
        ingest_ns: 1_764_140_000_351_000_000 + i,
        ..Tick::quote(
            SymbolId(i as u32 % 1000),
            1_764_140_000_350_000_000 + i,
            Price(1_923_100 + i as i64),
            300,
            Price(1_923_300),
            100,
        )
    }
}

fn bench_one_update(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode/one_update");
    g.throughput(Throughput::Elements(1));
    let tick = quote(7);
    let format = Format { time_unit: TimeUnit::Ms, stamps: true, binary: false, bars: false };
    let mut buf = Vec::with_capacity(256);
    // The harness alone: clearing a buffer and passing a tick through black_box.
    g.bench_function("harness_overhead", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&mut buf);
            black_box(tick)
        })
    });
    g.bench_function("tickwire", |b| {
        b.iter(|| {
            buf.clear();
            let t = black_box(tick);
            write_update_head(&mut buf, &t, 9, 6);
            write_tail(&mut buf, &t, "AAPL", format, 1_764_140_000_352_000_000);
            black_box(buf.len())
        })
    });
    g.bench_function("tickwire_binary", |b| {
        let format = Format { binary: true, ..format };
        b.iter(|| {
            buf.clear();
            let t = black_box(tick);
            binary::write_record(&mut buf, &t, format, 1_764_140_000_352_000_000);
            binary::set_cf(&mut buf, binary::RECORD_LEN_STAMPS, 6);
            black_box(buf.len())
        })
    });
    g.bench_function("serde_json_value", |b| {
        b.iter(|| {
            buf.clear();
            let t = black_box(tick);
            let tickwire::tick::Body::Quote { bid, bid_size, ask, ask_size } = t.body else { unreachable!() };
            let v = serde_json::json!({
                "type": "q", "cseq": 9, "cf": 6, "sym": "AAPL", "seq": t.seq,
                "bp": bid.to_f64(), "bs": bid_size, "ap": ask.to_f64(), "as": ask_size,
                "t": t.src_ns / 1_000_000, "ti": t.ingest_ns / 1_000_000, "to": 1_764_140_000_352u64,
            });
            serde_json::to_writer(&mut buf, &v).unwrap();
            black_box(buf.len())
        })
    });
    g.finish();
}

fn bench_fanout_frame(c: &mut Criterion) {
    const UPDATES: u64 = 64;
    const SUBSCRIBERS: u64 = 100;
    let mut g = c.benchmark_group("encode/batch_64_updates_100_subscribers");
    g.throughput(Throughput::Elements(UPDATES * SUBSCRIBERS));
    let ticks: Vec<Tick> = (0..UPDATES).map(quote).collect();
    let format = Format::default();
    let mut frame = Vec::with_capacity(16 * 1024);
    g.bench_function("encode_once_copy_per_subscriber", |b| {
        let mut tails: Vec<u8> = Vec::with_capacity(8 * 1024);
        let mut ranges = Vec::with_capacity(UPDATES as usize);
        b.iter(|| {
            tails.clear();
            ranges.clear();
            for t in &ticks {
                let start = tails.len();
                write_tail(&mut tails, t, "AAPL", format, 0);
                ranges.push(start..tails.len());
            }
            for sub in 0..SUBSCRIBERS {
                frame.clear();
                frame.push(b'[');
                for (i, (t, r)) in ticks.iter().zip(&ranges).enumerate() {
                    if i > 0 {
                        frame.push(b',');
                    }
                    write_update_head(&mut frame, t, sub * UPDATES + i as u64, 1);
                    frame.extend_from_slice(&tails[r.clone()]);
                }
                frame.push(b']');
                black_box(frame.len());
            }
        })
    });
    g.bench_function("binary_encode_once_copy_per_subscriber", |b| {
        let format = Format { binary: true, ..format };
        let len = binary::record_len(format);
        let mut records: Vec<u8> = Vec::with_capacity(8 * 1024);
        b.iter(|| {
            records.clear();
            for t in &ticks {
                binary::write_record(&mut records, t, format, 0);
            }
            for sub in 0..SUBSCRIBERS {
                frame.clear();
                binary::begin_frame(&mut frame, format, sub * UPDATES + 1);
                for r in records.chunks_exact(len) {
                    frame.extend_from_slice(r);
                    binary::set_cf(&mut frame, len, 1);
                }
                binary::finish_frame(&mut frame);
                black_box(frame.len());
            }
        })
    });
    g.bench_function("encode_per_subscriber", |b| {
        b.iter(|| {
            for sub in 0..SUBSCRIBERS {
                frame.clear();
                frame.push(b'[');
                for (i, t) in ticks.iter().enumerate() {
                    if i > 0 {
                        frame.push(b',');
                    }
                    write_update_head(&mut frame, t, sub * UPDATES + i as u64, 1);
                    write_tail(&mut frame, t, "AAPL", format, 0);
                }
                frame.push(b']');
                black_box(frame.len());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_one_update, bench_fanout_frame);
criterion_main!(benches);
