//! A stream of NASDAQ ITCH 5.0 frames (`feed::itch::Frames`, `decode` and
//! `Normalizer::apply`) made of any bytes, as a replay reads a file.
//! Oracle: `apply` fails exactly when `decode` does, and every tick it
//! makes names a symbol the stream defined.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tickwire::feed::itch::{Frames, Normalizer, decode};
use tickwire::tick::SymbolTable;

fuzz_target!(|data: &[u8]| {
    let table = Arc::new(SymbolTable::new(1 << 16));
    let mut norm = Normalizer::new(table.clone());
    let mut out = Vec::new();
    for (_at, frame) in Frames::new(data) {
        let Ok(frame) = frame else {
            norm.count_bad();
            continue;
        };
        out.clear();
        let decoded = decode(frame);
        let applied = norm.apply(frame, &mut out);
        assert_eq!(decoded.err(), applied.err(), "apply and decode disagree");
        for t in &out {
            assert!(table.name(t.sym).is_some(), "tick for an unknown symbol id");
        }
    }
    let _ = norm.stats().messages();
});
