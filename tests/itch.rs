//! NASDAQ ITCH 5.0 decoding checked against an independent decoder:
//! `tests/python/itch_oracle.py` decodes `feeds/sample.itch` with the PyPI
//! package `itchfeed` (pure Python) and prints every message's fields; every
//! field of every message must equal what `tickwire::feed::itch::decode`
//! reads. Also: the committed sample is exactly what the generator writes,
//! and it replays through the order book without a bad record or an
//! inconsistency.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tickwire::feed::itch::book::Side;
use tickwire::feed::itch::{Frames, ItchReader, Message, Stock, decode, generate};
use tickwire::record_reader::RecordReader;
use tickwire::tick::SymbolTable;

use crate::cli::Proc;
use crate::provision;

/// The oracle script.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/itch_oracle.py");

/// The fixture, as `tickwire-feedgen --format itch --messages 8000 --seed 1` writes it.
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/feeds/sample.itch");
const SAMPLE_SEED: u64 = 1;
const SAMPLE_MESSAGES: usize = 8_000;

/// How long the oracle may run (it takes about a second).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

fn text(bytes: &[u8]) -> Value {
    // Latin-1, as the oracle prints byte fields.
    Value::String(bytes.iter().map(|&b| char::from(b)).collect())
}

fn ch(b: u8) -> Value {
    text(&[b])
}

fn stock(s: Stock) -> Value {
    text(&s.0)
}

/// A decoded message as the oracle prints it: itchfeed's field names, raw
/// values. `None` for the types tickwire only counts (their header is
/// compared on its own).
fn fields(kind: u8, m: &Message) -> Option<Map<String, Value>> {
    let h = m.header();
    let mut v = json!({
        "message_type": ch(kind),
        "stock_locate": h.locate,
        "tracking_number": h.tracking,
        "timestamp": h.ts,
    });
    let extra = match *m {
        Message::SystemEvent { event_code, .. } => json!({ "event_code": ch(event_code) }),
        Message::StockDirectory {
            stock: s,
            market_category,
            financial_status_indicator,
            round_lot_size,
            round_lots_only,
            issue_classification,
            issue_sub_type,
            authenticity,
            short_sale_threshold_indicator,
            ipo_flag,
            luld_ref,
            etp_flag,
            etp_leverage_factor,
            inverse_indicator,
            ..
        } => json!({
            "stock": stock(s),
            "market_category": ch(market_category),
            "financial_status_indicator": ch(financial_status_indicator),
            "round_lot_size": round_lot_size,
            "round_lots_only": ch(round_lots_only),
            "issue_classification": ch(issue_classification),
            "issue_sub_type": text(&issue_sub_type),
            "authenticity": ch(authenticity),
            "short_sale_threshold_indicator": ch(short_sale_threshold_indicator),
            "ipo_flag": ch(ipo_flag),
            "luld_ref": ch(luld_ref),
            "etp_flag": ch(etp_flag),
            "etp_leverage_factor": etp_leverage_factor,
            "inverse_indicator": ch(inverse_indicator),
        }),
        Message::TradingAction { stock: s, trading_state, reserved, reason, .. } => json!({
            "stock": stock(s),
            "trading_state": ch(trading_state),
            "reserved": ch(reserved),
            "reason": text(&reason),
        }),
        Message::AddOrder { order_ref, side, shares, stock: s, price, attribution, .. } => {
            let mut a = json!({
                "order_reference_number": order_ref,
                "buy_sell_indicator": ch(if side == Side::Buy { b'B' } else { b'S' }),
                "shares": shares,
                "stock": stock(s),
                "price": price,
            });
            if let Some(mpid) = attribution {
                a["attribution"] = text(&mpid);
            }
            a
        }
        Message::Executed { order_ref, executed_shares, match_number, .. } => json!({
            "order_reference_number": order_ref,
            "executed_shares": executed_shares,
            "match_number": match_number,
        }),
        Message::ExecutedWithPrice {
            order_ref,
            executed_shares,
            match_number,
            printable,
            execution_price,
            ..
        } => json!({
            "order_reference_number": order_ref,
            "executed_shares": executed_shares,
            "match_number": match_number,
            "printable": ch(printable),
            "execution_price": execution_price,
        }),
        Message::Cancel { order_ref, cancelled_shares, .. } => json!({
            "order_reference_number": order_ref,
            "cancelled_shares": cancelled_shares,
        }),
        Message::Delete { order_ref, .. } => json!({ "order_reference_number": order_ref }),
        Message::Replace { order_ref, new_order_ref, shares, price, .. } => json!({
            "order_reference_number": order_ref,
            "new_order_reference_number": new_order_ref,
            "shares": shares,
            "price": price,
        }),
        Message::Trade { order_ref, side, shares, stock: s, price, match_number, .. } => json!({
            "order_reference_number": order_ref,
            "buy_sell_indicator": ch(side),
            "shares": shares,
            "stock": stock(s),
            "price": price,
            "match_number": match_number,
        }),
        Message::Cross { shares, stock: s, cross_price, match_number, cross_type, .. } => json!({
            "shares": shares,
            "stock": stock(s),
            "cross_price": cross_price,
            "match_number": match_number,
            "cross_type": ch(cross_type),
        }),
        Message::BrokenTrade { match_number, .. } => json!({ "match_number": match_number }),
        Message::Other { .. } => return None,
    };
    let Value::Object(extra) = extra else { unreachable!() };
    v.as_object_mut().unwrap().extend(extra);
    let Value::Object(map) = v else { unreachable!() };
    Some(map)
}

#[test]
fn sample_decodes_field_for_field_like_itchfeed() {
    let python = provision::python();
    let started = Instant::now();
    let mut py = Proc::spawn(Command::new(python).arg(SCRIPT).arg(SAMPLE).env("ITCH_NO_CPP", "1"));
    let Some(status) = py.wait_exit(SCRIPT_TIMEOUT) else {
        panic!(
            "{SCRIPT} did not finish within {SCRIPT_TIMEOUT:?} (killed); stderr: {}",
            py.stderr()
        );
    };
    let (stdout, stderr) = py.output();
    assert!(status.success(), "{SCRIPT} {SAMPLE} failed ({status}): {stderr}");
    let oracle: Vec<Map<String, Value>> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("oracle line {l:?}: {e}")))
        .collect();

    let bytes = std::fs::read(SAMPLE).expect("feeds/sample.itch");
    let ours: Vec<(u64, &[u8])> =
        Frames::new(&bytes).map(|(at, f)| (at, f.expect("no truncated frame"))).collect();
    // Same framing: the same number of messages (itchfeed stops after the
    // end-of-messages event, which the sample has last).
    assert_eq!(oracle.len(), ours.len(), "message count (oracle: {stderr})");

    let mut compared_fully = 0;
    for (i, ((at, frame), theirs)) in ours.iter().zip(&oracle).enumerate() {
        let kind = frame[0];
        let m = decode(frame).unwrap_or_else(|e| panic!("message {i} at byte {at}: {e:?}"));
        match fields(kind, &m) {
            // Every field, and no field more or less than itchfeed has.
            Some(mine) => {
                assert_eq!(&mine, theirs, "message {i} ({}) at byte {at}", char::from(kind));
                compared_fully += 1;
            }
            // A type tickwire only counts: the type and the header.
            None => {
                let h = m.header();
                for (key, value) in [
                    ("message_type", ch(kind)),
                    ("stock_locate", json!(h.locate)),
                    ("tracking_number", json!(h.tracking)),
                    ("timestamp", json!(h.ts)),
                ] {
                    assert_eq!(theirs.get(key), Some(&value), "message {i} at byte {at}: {key}");
                }
            }
        }
    }
    assert!(compared_fully > ours.len() * 9 / 10, "{compared_fully} of {}", ours.len());
    eprintln!("{} messages agree with itchfeed [{:?}]", ours.len(), started.elapsed());
}

#[test]
fn sample_is_the_generator_output_and_replays_cleanly() {
    let bytes = std::fs::read(SAMPLE).expect("feeds/sample.itch");
    // Regenerate with `tickwire-feedgen --format itch --messages 8000 --seed 1 --out feeds/sample.itch`.
    assert!(
        bytes == generate(SAMPLE_SEED, SAMPLE_MESSAGES),
        "feeds/sample.itch differs from the generator's output: regenerate it"
    );
    let table = Arc::new(SymbolTable::new(64));
    let mut reader = ItchReader::open(Path::new(SAMPLE), table.clone()).unwrap();
    let mut ticks = 0;
    while let Some(r) = reader.next() {
        r.unwrap_or_else(|skip| panic!("{skip:?}"));
        ticks += 1;
    }
    let s = reader.stats();
    // Spec-valid and consistent: nothing skipped, no order the book does not know.
    assert_eq!(s.messages(), SAMPLE_MESSAGES as u64);
    assert_eq!((s.bad_records, s.unknown_orders, s.inconsistent, s.unnamed_ticks), (0, 0, 0, 0));
    assert_eq!(ticks, s.quotes + s.trades);
    assert_eq!(table.len(), 8);
    for k in b"SRHYLAFECXDUPQBIN" {
        assert!(s.count(*k) > 0, "no {} message", char::from(*k));
    }
}
