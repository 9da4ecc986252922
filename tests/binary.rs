//! The binary subprotocol `tickwire.v1.bin`: negotiation, market data in
//! binary frames decoded (by `util::decode_binary`, written from
//! docs/PROTOCOL.md) into the same messages a JSON session gets, `cseq`
//! contiguous across text and binary frames (checked by `util::Client` on
//! every message), stamps, overflow, heartbeat, and client binary frames.

use std::collections::HashMap;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::util::{BIN, Client, TestServer, manual_server, overflow_burst, subscribe_aapl_all};

/// A server that knows AAPL, MSFT and IBM, with one quote and one trade each.
fn seeded() -> TestServer {
    let ts = manual_server(|_| {});
    for (sym, px) in [("AAPL", 190.0), ("MSFT", 410.0), ("IBM", 150.25)] {
        ts.feed.quote(sym, px, 100, px + 0.02, 200);
        ts.feed.trade(sym, px + 0.01, 50);
    }
    ts.flush();
    ts
}

fn is_data(m: &Value) -> bool {
    ["q", "t", "b", "snapshot", "overflow"].contains(&m["type"].as_str().unwrap())
}

/// A message without its per-connection `cseq`.
fn without_cseq(m: &Value) -> Value {
    let mut m = m.clone();
    m.as_object_mut().unwrap().remove("cseq");
    m
}

/// The subprotocol the server selects for an offer (`None`: no header).
async fn selected(ts: &TestServer, offer: Option<&str>) -> Option<String> {
    let mut req = format!("ws://{}/ws", ts.addr).into_client_request().unwrap();
    if let Some(o) = offer {
        req.headers_mut().insert("Sec-WebSocket-Protocol", o.parse().unwrap());
    }
    let (_ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    resp.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn the_clients_first_known_subprotocol_is_selected() {
    let ts = seeded();
    // Offered alone, the binary protocol is picked; offered with JSON, the
    // client's first choice is...
    assert_eq!(selected(&ts, Some(BIN)).await.as_deref(), Some(BIN));
    let bin_first = Some("tickwire.v1.bin, tickwire.v1.json");
    assert_eq!(selected(&ts, bin_first).await.as_deref(), Some(BIN));
    let json_first = Some("tickwire.v1.json, tickwire.v1.bin");
    assert_eq!(selected(&ts, json_first).await.as_deref(), Some("tickwire.v1.json"));
    // ...and unknown names before a known one are skipped.
    let other_first = Some("chat, tickwire.v1.bin");
    assert_eq!(selected(&ts, other_first).await.as_deref(), Some(BIN));
    // ...JSON when only JSON is offered, and no header when nothing is.
    assert_eq!(selected(&ts, Some("tickwire.v1.json")).await.as_deref(), Some("tickwire.v1.json"));
    assert_eq!(selected(&ts, None).await, None);
    // The subs of a binary session carry the symbol ids its records use...
    let mut b = Client::connect_binary(ts.addr, "").await;
    let r = b.subscribe(json!({"symbols": ["AAPL", "MSFT"]})).await;
    let ids: Vec<u64> =
        r["subs"].as_array().unwrap().iter().map(|s| s["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[0], ids[1], "one id per symbol, both channels");
    assert_ne!(ids[0], ids[2]);
    // ...and the JSON protocol is unchanged.
    let mut j = Client::connect(ts.addr, "").await;
    let r = j.subscribe(json!({"symbols": ["AAPL"]})).await;
    assert!(r["subs"][0].get("id").is_none(), "{r}");
}

/// Subscribes a JSON and a binary session alike, plays `updates` quotes and
/// trades, and returns what each got until every stream reached its last seq.
async fn json_and_binary(
    ts: &TestServer,
    query: &str,
    sub: Value,
    updates: u64,
) -> (Vec<Value>, Vec<Value>, Client) {
    let mut j = Client::connect(ts.addr, query).await;
    let mut b = Client::connect_binary(ts.addr, query).await;
    j.subscribe(sub.clone()).await;
    b.subscribe(sub).await;
    for i in 0..updates {
        let px = 100.0 + i as f64 * 0.0001;
        ts.feed.quote("AAPL", px, i as u32, px + 0.5, 7);
        ts.feed.trade("MSFT", 400.0 + i as f64 * 0.25, 10 + i as u32);
    }
    ts.flush();
    let mut out = Vec::new();
    for c in [&mut j, &mut b] {
        // AAPL quotes and MSFT trades end at seq updates + 1 (seeded 1).
        let mut done = HashMap::new();
        let mut got = Vec::new();
        while done.len() < 2 {
            let m = c.until(is_data).await;
            if m["seq"] == updates + 1 || m["to_seq"] == updates + 1 {
                done.insert(m["sym"].as_str().unwrap().to_string(), ());
            }
            got.push(m);
        }
        out.push(got);
    }
    assert_eq!(j.binary_frames, 0);
    assert!(b.binary_frames > 0, "market data came in binary frames");
    let bin = out.pop().unwrap();
    (out.pop().unwrap(), bin, b)
}

#[tokio::test]
async fn mode_all_decodes_to_the_same_messages_as_json() {
    let ts = seeded();
    let sub = json!({"symbols": ["AAPL", "MSFT"], "mode": "all"});
    let (json_msgs, bin_msgs, _) = json_and_binary(&ts, "", sub, 500).await;
    // Snapshots then every update, in order, with the same fields and values:
    // prices from fixed-point i64, sizes, seq, t (cseq checked by the client).
    assert_eq!(json_msgs.len(), 4 + 1000);
    let strip = |v: &[Value]| v.iter().map(without_cseq).collect::<Vec<_>>();
    assert_eq!(strip(&bin_msgs), strip(&json_msgs));
    assert_eq!(bin_msgs.iter().filter(|m| m["type"] == "snapshot").count(), 4);
}

#[tokio::test]
async fn bars_decode_to_the_same_messages_as_json() {
    let ts = seeded();
    // Bars make every record of the binary session 32 bytes longer, the
    // quotes and trades included; stamps go before the bar fields.
    let sub = json!({"symbols": ["AAPL", "MSFT"], "mode": "all",
        "channels": ["quotes", "trades", "bars_1s", "bars_1m"]});
    let mut j = Client::connect(ts.addr, "stamps=1").await;
    let mut b = Client::connect_binary(ts.addr, "stamps=1").await;
    j.subscribe(sub.clone()).await;
    b.subscribe(sub).await;
    for i in 0..50 {
        ts.feed.trade("MSFT", 400.0 + f64::from(i) * 0.25, 10 + i as u32);
    }
    ts.flush();
    let mut out = Vec::new();
    for c in [&mut j, &mut b] {
        // The trade's bars: MSFT's 1 m bar reaches seq 51 (the seed + 50),
        // as does its 1 s bars stream (updates and closes) at least.
        let mut got = Vec::new();
        loop {
            let m = c.until(is_data).await;
            let last = m["ch"] == "bars_1m" && m["seq"].as_u64() >= Some(51);
            got.push(without_stamps(&without_cseq(&m)));
            if last {
                break;
            }
        }
        out.push(got);
    }
    assert!(b.binary_frames > 0);
    let (bin, json) = (out.pop().unwrap(), out.pop().unwrap());
    assert_eq!(bin, json);
    assert!(json.iter().filter(|m| m["type"] == "b").count() >= 100, "{json:?}");
}

/// A message without `ti` and `to` (the two sessions' frames were built at
/// different moments).
fn without_stamps(m: &Value) -> Value {
    let mut m = m.clone();
    if let Some(o) = m.as_object_mut() {
        o.remove("ti");
        o.remove("to");
    }
    m
}

#[tokio::test]
async fn mode_latest_conflates_with_cf_and_ends_on_the_same_values() {
    let ts = seeded();
    let sub = json!({"symbols": ["AAPL", "MSFT"]});
    let (json_msgs, bin_msgs, _) = json_and_binary(&ts, "time_unit=us", sub, 3000).await;
    for msgs in [&json_msgs, &bin_msgs] {
        // seq rises by exactly cf per stream; a snapshot is the base.
        let mut last: HashMap<String, u64> = HashMap::new();
        for m in msgs.iter() {
            let ch = match m["type"].as_str().unwrap() {
                "q" => "quotes",
                "t" => "trades",
                _ => m["ch"].as_str().unwrap(),
            };
            let key = format!("{ch}:{}", m["sym"]);
            let seq = m["seq"].as_u64().unwrap();
            if m["type"] != "snapshot" {
                let cf = m.get("cf").map_or(1, |c| c.as_u64().unwrap());
                assert_eq!(seq, last[&key] + cf, "{m}");
            }
            last.insert(key, seq);
        }
    }
    // The snapshots and the final values are the same on both protocols.
    let snaps = |v: &[Value]| {
        v.iter().filter(|m| m["type"] == "snapshot").map(without_cseq).collect::<Vec<_>>()
    };
    assert_eq!(snaps(&bin_msgs), snaps(&json_msgs));
    let last_of = |v: &[Value], kind: &str| {
        let mut m = without_cseq(v.iter().rev().find(|m| m["type"] == kind).unwrap());
        m.as_object_mut().unwrap().remove("cf");
        m
    };
    for kind in ["q", "t"] {
        assert_eq!(last_of(&bin_msgs, kind), last_of(&json_msgs, kind), "{kind}");
    }
}

#[tokio::test]
async fn stamps_make_records_72_bytes_with_ti_and_to() {
    let ts = seeded();
    let sub = json!({"symbols": ["AAPL", "MSFT"], "mode": "all"});
    let (json_msgs, bin_msgs, mut b) = json_and_binary(&ts, "stamps=1&time_unit=ns", sub, 50).await;
    for (j, m) in json_msgs.iter().zip(&bin_msgs) {
        // Every update and snapshot carries ti and to, in the session's unit...
        let (t, ti, to) = (m["t"].as_u64().unwrap(), m["ti"].as_u64(), m["to"].as_u64());
        let (ti, to) = (ti.expect("ti"), to.expect("to"));
        assert!(t <= ti && ti <= to, "t <= ti <= to: {m}");
        assert!(t > 1_000_000_000_000_000_000, "ns: {m}");
        // ...and everything but the send stamp matches the JSON session.
        let strip = |v: &Value| {
            let mut v = without_cseq(v);
            v.as_object_mut().unwrap().remove("to");
            v
        };
        assert_eq!(strip(m), strip(j));
    }
    // The raw frame: stamps flag set, 72-byte records, count and first_cseq.
    let before = b.cseq;
    ts.feed.quote("AAPL", 1.5, 1, 1.6, 2);
    ts.flush();
    let frame = loop {
        let next = tokio::time::timeout(crate::util::TIMEOUT, b.ws.next()).await;
        match next.expect("frame in time").expect("open").expect("no error") {
            Message::Binary(f) => break f,
            Message::Text(t) => panic!("expected the quote in a binary frame: {t}"),
            _ => {}
        }
    };
    assert_eq!(frame[0], 0x54);
    assert_eq!(frame[1] & 1, 1);
    assert_eq!(u16::from_le_bytes([frame[2], frame[3]]), 72);
    assert_eq!(u32::from_le_bytes(frame[4..8].try_into().unwrap()), 1);
    assert_eq!(u64::from_le_bytes(frame[8..16].try_into().unwrap()), before + 1);
    assert_eq!(frame.len(), 16 + 72);
    // bid 1.5 as i64 with four implied decimals at offset 16 + 24.
    assert_eq!(i64::from_le_bytes(frame[40..48].try_into().unwrap()), 15_000);
}

#[tokio::test]
async fn overflow_records_name_the_gap() {
    let ts = manual_server(|c| c.shard.queue_cap = 16);
    let mut c = Client::connect_binary(ts.addr, "").await;
    subscribe_aapl_all(&ts, &mut c).await;
    let lost = overflow_burst(&ts, &mut c, 5000).await;
    assert!(lost > 0, "a 16-slot queue must overflow on 5000 updates");
}

#[tokio::test]
async fn heartbeat_is_a_binary_record() {
    let ts = manual_server(|c| c.shard.hb = std::time::Duration::from_millis(100));
    let mut c = Client::connect_binary(ts.addr, "").await;
    let h = c.until_type("heartbeat").await;
    // It came in a binary frame, with cseq (checked) and the server time.
    assert_eq!(c.binary_frames, 1);
    assert!(h["t"].as_u64().unwrap() > 1_700_000_000_000);
}

#[tokio::test]
async fn new_symbols_under_wildcard_are_announced_before_their_records() {
    let ts = seeded();
    let mut c = Client::connect_binary(ts.addr, "").await;
    c.subscribe(json!({"symbols": ["*"], "channels": ["quotes"], "snapshot": false})).await;
    ts.feed.quote("NEWCO", 5.0, 1, 5.5, 1);
    ts.flush();
    // An unsolicited `subscribed` (no id) gives the new symbol's id first...
    let s = c.until_type("subscribed").await;
    assert!(s.get("id").is_none(), "{s}");
    assert_eq!(s["subs"][0]["sym"], "NEWCO");
    assert_eq!(s["subs"][0]["seq"], 0);
    // ...so its first record decodes (the decoder panics on an unknown id).
    let q = c.until_type("q").await;
    assert_eq!((q["sym"].as_str(), q["seq"].as_u64()), (Some("NEWCO"), Some(1)));
}

#[tokio::test]
async fn binary_frame_from_the_client_is_error_400() {
    let ts = seeded();
    let mut c = Client::connect_binary(ts.addr, "").await;
    c.ws.send(Message::Binary(vec![0x54, 0, 0].into())).await.unwrap();
    let e = c.until_type("error").await;
    // Requests are JSON text on a binary session too: 400, not temporary...
    assert_eq!((e["code"].as_u64(), e["temporary"].as_bool()), (Some(400), Some(false)));
    // ...and the connection still works.
    assert_eq!(c.request(json!({"type": "ping"}), 1).await["type"], "pong");
}
