//! The client control-message parser (`protocol::request::Parser`) on any
//! text frame. Oracle: a parser reused across messages, as a session reuses
//! it, answers exactly as a fresh one.
//!
//! One allowance: a `ping`'s `ts` is re-encoded from simd-json's DOM, whose
//! objects of more than 32 keys are hash maps with a per-map random order,
//! so the echo of such a `ts` may list its keys in another order (the same
//! JSON object). The oracle compares `ts` as JSON values.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use tickwire::protocol::request::{BadRequest, Parser, Request};

thread_local! {
    static REUSED: RefCell<Parser> = RefCell::new(Parser::default());
}

/// `r` with a ping's `ts` replaced by its canonical form (sorted keys).
fn canonical(r: Result<Request, BadRequest>) -> Result<Request, BadRequest> {
    match r {
        Ok(Request::Ping { id, ts: Some(ts) }) => {
            let v: serde_json::Value = serde_json::from_str(&ts)
                .unwrap_or_else(|e| panic!("the echoed ts is not JSON ({e}): {ts}"));
            Ok(Request::Ping { id, ts: Some(v.to_string()) })
        }
        other => other,
    }
}

fuzz_target!(|data: &[u8]| {
    // tungstenite hands the session only valid UTF-8 text frames.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let fresh = canonical(Parser::default().parse(text.as_bytes()));
    let reused = canonical(REUSED.with(|p| p.borrow_mut().parse(text.as_bytes())));
    assert_eq!(fresh, reused, "a reused parser must not remember earlier messages");
});
