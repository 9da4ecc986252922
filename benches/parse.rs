//! Control-message parsing: one client request (`subscribe` with 10
//! symbols, `ping`) from its text frame to a typed request.
//!
//! - `harness_overhead`: copying the frame's bytes, which every case does
//!   first (the parsers work on a mutable copy or read the slice);
//! - `simd_json_parser`: tickwire's `protocol::request::Parser` (simd-json
//!   with reused buffers, then the typed `Request`), what the server runs;
//! - `serde_json_value`: `serde_json::from_slice::<Value>` alone, the
//!   baseline a typical server would use (without even building the typed
//!   request).
//!
//! `cargo bench --bench parse`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tickwire::protocol::request::Parser;

const SUBSCRIBE: &str = r#"{"type":"subscribe","id":42,"symbols":["AAPL","MSFT","NVDA","AMZN","GOOGL","META","TSLA","AVGO","JPM","V"],"channels":["quotes","trades"],"mode":"latest","max_hz":10,"snapshot":true}"#;
const PING: &str = r#"{"type":"ping","id":7,"ts":1764167400123}"#;

fn bench(c: &mut Criterion) {
    for (name, text) in [("subscribe_10", SUBSCRIBE), ("ping", PING)] {
        let mut g = c.benchmark_group(format!("parse/{name}"));
        let bytes = text.as_bytes();
        g.bench_function("harness_overhead", |b| b.iter(|| black_box(bytes.to_vec())));
        let mut parser = Parser::default();
        assert!(parser.parse(bytes).is_ok());
        g.bench_function("simd_json_parser", |b| {
            b.iter(|| black_box(parser.parse(black_box(bytes)).is_ok()))
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
