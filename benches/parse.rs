//! Control-message parsing: one client request (`subscribe` with 10
//! symbols, `ping`) from its text frame to a typed request.
//!
//! - `harness_overhead`: copying the frame's bytes (what a parser that
//!   works in place, as simd-json does, must do first);
//! - `serde_typed`: tickwire's `protocol::request::parse` (serde-derived,
//!   with its field checks), what the server runs;
//! - `simd_json_dom`: simd-json's borrowed DOM alone on a copy, the fastest
//!   way to read JSON here, without even building the typed request;
//! - `serde_json_value`: `serde_json::from_slice::<Value>` alone, the DOM a
//!   typical server would build.
//!
//! `cargo bench --bench parse`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tickwire::protocol::request::parse;

const SUBSCRIBE: &str = r#"{"type":"subscribe","id":42,"symbols":["AAPL","MSFT","NVDA","AMZN","GOOGL","META","TSLA","AVGO","JPM","V"],"channels":["quotes","trades"],"mode":"latest","max_hz":10,"snapshot":true}"#;
const PING: &str = r#"{"type":"ping","id":7,"ts":1764167400123}"#;

fn bench(c: &mut Criterion) {
    for (name, text) in [("subscribe_10", SUBSCRIBE), ("ping", PING)] {
        let mut g = c.benchmark_group(format!("parse/{name}"));
        let bytes = text.as_bytes();
        g.bench_function("harness_overhead", |b| b.iter(|| black_box(bytes.to_vec())));
        assert!(parse(bytes).is_ok());
        g.bench_function("serde_typed", |b| b.iter(|| black_box(parse(black_box(bytes)).is_ok())));
        let mut buffers = simd_json::Buffers::new(256);
        g.bench_function("simd_json_dom", |b| {
            b.iter(|| {
                let mut copy = black_box(bytes).to_vec();
                let v = simd_json::to_borrowed_value_with_buffers(&mut copy, &mut buffers);
                black_box(v.is_ok())
            })
        });
        g.bench_function("serde_json_value", |b| {
            b.iter(|| {
                let v: serde_json::Value = serde_json::from_slice(black_box(bytes)).unwrap();
                black_box(v)
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
