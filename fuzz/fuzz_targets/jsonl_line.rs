//! One line of a JSON-lines feed (`feed::jsonl::LineParser::parse`), any
//! bytes (files are not required to be UTF-8). Oracle: a parser reused
//! across lines, as the reader reuses it (with its name cache), answers
//! exactly as a fresh one.
#![no_main]

use std::cell::RefCell;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tickwire::feed::jsonl::LineParser;
use tickwire::tick::SymbolTable;

/// Room for every name a fuzzer can make up in one run.
const NAMES: usize = 1 << 24;

thread_local! {
    static REUSED: RefCell<(Arc<SymbolTable>, LineParser)> = {
        let table = Arc::new(SymbolTable::new(NAMES));
        RefCell::new((table.clone(), LineParser::new(table)))
    };
}

fuzz_target!(|data: &[u8]| {
    let table = Arc::new(SymbolTable::new(NAMES));
    let fresh = LineParser::new(table.clone()).parse(&mut data.to_vec());
    REUSED.with(|r| {
        let (reused_table, parser) = &mut *r.borrow_mut();
        match (fresh, parser.parse(&mut data.to_vec())) {
            (Ok(a), Ok(b)) => {
                // The same tick; symbol ids differ (two tables), names not.
                assert_eq!(table.name(a.sym), reused_table.name(b.sym));
                assert_eq!((a.src_ns, a.body), (b.src_ns, b.body));
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            (a, b) => panic!("fresh {a:?} vs reused {b:?}"),
        }
    });
});
