//! One test per rule of the wire protocol. Every message read goes through
//! `util::Client`, which asserts that `cseq` rises by exactly 1.

use std::collections::HashMap;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tickwire::feed::FeedState;
use tokio_tungstenite::tungstenite::Message;

use crate::util::{Client, TestServer, manual_server, overflow_burst, subscribe_aapl_all};

fn seq(m: &Value) -> u64 {
    m["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {m}"))
}

fn is_update(m: &Value) -> bool {
    m["type"] == "q" || m["type"] == "t"
}

/// A server that knows AAPL, MSFT and IBM, with one quote and one trade each.
fn seeded() -> TestServer {
    let ts = manual_server(|_| {});
    for (sym, px) in [("AAPL", 190.0), ("MSFT", 410.0), ("IBM", 150.0)] {
        ts.feed.quote(sym, px, 100, px + 0.02, 200);
        ts.feed.trade(sym, px + 0.01, 50);
    }
    ts.flush();
    ts
}

#[tokio::test]
async fn welcome_then_status() {
    let ts = seeded();
    let mut c = Client::connect(ts.addr, "").await;
    let w = &c.welcome;
    // The welcome carries every field of the spec.
    for field in ["session", "server", "time_unit", "hb_ms", "epoch", "limits"] {
        assert!(w.get(field).is_some(), "welcome lacks {field}: {w}");
    }
    assert_eq!(w["time_unit"], "ms");
    for field in ["symbols", "msgs_in_per_s", "max_message_bytes"] {
        assert!(w["limits"][field].is_u64(), "limits lacks {field}");
    }
    // The first message after it is the feed status, cseq 1.
    let s = c.next().await;
    assert_eq!(s["type"], "status");
    assert_eq!(s["cseq"], 1);
    assert_eq!(s["feed"], "live");
    assert!(s["t"].is_u64());
}

#[tokio::test]
async fn subscribe_reports_positions_and_rejects_per_symbol() {
    let ts = seeded();
    let mut c = Client::connect(ts.addr, "").await;
    let r =
        c.subscribe(json!({"symbols": ["AAPL", "MSFT", "NOPE", "bad name"], "max_hz": 4})).await;
    let subs = r["subs"].as_array().unwrap();
    // Two symbols times two channels accepted, each at its current position.
    assert_eq!(subs.len(), 4, "{r}");
    for s in subs {
        assert_eq!(s["seq"], 1, "{s}");
        assert_eq!(s["mode"], "latest");
        assert_eq!(s["max_hz"], 4);
    }
    // Unknown symbols are rejected one by one with 404; the rest succeed.
    let rejected = r["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{r}");
    assert!(rejected.iter().all(|x| x["code"] == 404));
    assert_eq!(rejected[0]["sym"], "NOPE");
}

#[tokio::test]
async fn snapshot_comes_before_any_update_and_aligns_to_seq() {
    let ts = seeded();
    let mut c = Client::connect(ts.addr, "").await;
    c.subscribe(json!({"symbols": ["AAPL"], "channels": ["quotes"]})).await;
    let snap = c.next().await;
    // The snapshot reflects position 1 and carries the quote's fields.
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(snap["ch"], "quotes");
    assert_eq!(seq(&snap), 1);
    assert_eq!(snap["bp"], 190.0);
    assert_eq!(snap["as"], 200);
    ts.feed.quote("AAPL", 191.0, 100, 191.05, 100);
    ts.flush();
    let u = c.until(is_update).await;
    // The next update follows the snapshot's position.
    assert_eq!(seq(&u), 2);
    assert_eq!(u["bp"], 191.0);
    assert!(u.get("cf").is_none(), "cf is omitted when 1");
}

#[tokio::test]
async fn snapshot_false_sends_none() {
    let ts = seeded();
    let mut c = Client::connect(ts.addr, "").await;
    c.subscribe(json!({"symbols": ["AAPL"], "snapshot": false})).await;
    ts.feed.quote("AAPL", 191.0, 100, 191.05, 100);
    ts.flush();
    let m = c.until(|m| m["type"] != "heartbeat").await;
    // Without snapshots the first message is the next update.
    assert_eq!(m["type"], "q", "{m}");
    assert_eq!(seq(&m), 2);
}

#[tokio::test]
async fn no_snapshot_for_a_symbol_without_value() {
    let ts = seeded();
    ts.feed.add_symbol("NEW").unwrap();
    let mut c = Client::connect(ts.addr, "").await;
    let r = c.subscribe(json!({"symbols": ["NEW", "IBM"], "channels": ["quotes"]})).await;
    // A symbol with no value yet is at position 0...
    assert_eq!(r["subs"][0]["seq"], 0, "{r}");
    let snap = c.next().await;
    // ...and gets no snapshot: the only snapshot is IBM's.
    assert_eq!(snap["sym"], "IBM");
    ts.feed.quote("NEW", 1.0, 1, 1.1, 1);
    ts.flush();
    let u = c.until(is_update).await;
    assert_eq!((u["sym"].as_str(), seq(&u)), (Some("NEW"), 1));
}

#[tokio::test]
async fn latest_mode_seq_rises_by_exactly_cf() {
    let ts = seeded();
    let mut c = Client::connect(ts.addr, "").await;
    c.subscribe(json!({"symbols": ["AAPL", "MSFT"], "max_hz": 20})).await;
    let mut last: HashMap<(String, String), u64> = HashMap::new();
    let n = 3000;
    for i in 0..n {
        ts.feed.quote("AAPL", 190.0 + i as f64 * 0.01, 100, 191.0 + i as f64 * 0.01, 100);
        if i % 3 == 0 {
            ts.feed.trade("MSFT", 410.0, 10);
        }
    }
    ts.flush();
    let mut conflated = false;
    loop {
        let m = c.next().await;
        let kind = m["type"].as_str().unwrap().to_string();
        if kind != "snapshot" && !is_update(&m) {
            continue;
        }
        let ch =
            if kind == "snapshot" { m["ch"].as_str().unwrap().to_string() } else { kind.clone() };
        let ch = match ch.as_str() {
            "q" => "quotes".to_string(),
            "t" => "trades".to_string(),
            other => other.to_string(),
        };
        let key = (ch, m["sym"].as_str().unwrap().to_string());
        if kind != "snapshot" {
            let cf = m["cf"].as_u64().unwrap_or(1);
            conflated |= cf > 1;
            // For consecutive messages of a stream, seq rises by exactly cf.
            assert_eq!(seq(&m), last[&key] + cf, "{m}");
        }
        last.insert(key, seq(&m));
        if last.get(&("quotes".into(), "AAPL".into())) == Some(&(n + 1)) {
            break;
        }
    }
    // 3000 updates at 20 Hz cannot all be sent: some messages stood for several.
    assert!(conflated);
}

#[tokio::test]
async fn max_hz_is_honoured_per_stream() {
    let ts = seeded();
    // Send stamps (`to`) in microseconds tell when the server sent each message.
    let mut c = Client::connect(ts.addr, "stamps=1&time_unit=us").await;
    c.subscribe(
        json!({"symbols": ["AAPL"], "channels": ["quotes"], "max_hz": 10, "snapshot": false}),
    )
    .await;
    // Feed for about 0.6 s: 300 quotes, 2 ms apart.
    let feed = ts.feed.clone();
    let pusher = std::thread::spawn(move || {
        for i in 0..300 {
            feed.quote("AAPL", 100.0 + i as f64 * 0.01, 1, 101.0, 1);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });
    let mut sent_at = Vec::new();
    let mut last_seq = 1;
    while last_seq < 301 {
        let m = c.until(is_update).await;
        sent_at.push(m["to"].as_u64().unwrap());
        last_seq = seq(&m);
    }
    pusher.join().unwrap();
    // At most one message per 100 ms (10 Hz) of the stream...
    for w in sent_at.windows(2) {
        assert!(w[1] - w[0] >= 99_000, "messages {} us apart at max_hz 10", w[1] - w[0]);
    }
    // ...so about 6 messages stand for the 300 updates.
    assert!(sent_at.len() <= 12, "{} messages", sent_at.len());
}

#[tokio::test]
async fn all_mode_delivers_every_update_in_order() {
    let ts = seeded();
    let mut c = Client::connect(ts.addr, "").await;
    c.subscribe(json!({"symbols": ["AAPL"], "mode": "all", "channels": ["quotes"]})).await;
    let n = 2000u64;
    for i in 0..n {
        ts.feed.quote("AAPL", 100.0 + i as f64 * 0.0001, 1, 101.0, 1);
    }
    ts.flush();
    let mut expect = 2;
    while expect <= n + 1 {
        let m = c.until(is_update).await;
        // Every update, in order: seq rises by exactly 1 with no cf.
        assert_eq!(seq(&m), expect, "{m}");
        assert!(m.get("cf").is_none());
        expect += 1;
    }
}

#[tokio::test]
async fn all_mode_reports_drops_with_overflow() {
    // A queue of 16 overflows within one batch of the shard.
    let ts = manual_server(|c| c.shard.queue_cap = 16);
    let mut c = Client::connect(ts.addr, "").await;
    subscribe_aapl_all(&ts, &mut c).await;
    let lost = overflow_burst(&ts, &mut c, 5000).await;
    assert!(lost > 0, "a 16-slot queue must overflow on 5000 updates");
    let (_, metrics) = ts.get("/metrics").await;
    assert!(metrics.contains("tickwire_overflows_total "), "{metrics}");
    assert!(!metrics.contains("tickwire_overflows_total 0\n"));
}

#[tokio::test]
async fn unsubscribe_stops_updates() {
    let ts = seeded();
    let mut c = Client::connect(ts.addr, "").await;
    c.subscribe(json!({"symbols": ["AAPL", "MSFT"], "channels": ["quotes"], "snapshot": false}))
        .await;
    let r = c.request(json!({"type": "unsubscribe", "symbols": ["AAPL", "IBM"]}), 5).await;
    // Only what was subscribed is listed as removed: AAPL, on quotes.
    assert_eq!(r["type"], "unsubscribed");
    assert_eq!(r["symbols"], json!(["AAPL"]));
    assert_eq!(r["channels"], json!(["quotes"]));
    // AAPL first, MSFT last: once MSFT's update arrives, AAPL's was processed.
    ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
    ts.feed.quote("MSFT", 1.0, 1, 1.1, 1);
    ts.flush();
    let m = c.until(is_update).await;
    assert_eq!(m["sym"], "MSFT", "no AAPL update after unsubscribe: {m}");
}

#[tokio::test]
async fn channels_select_streams() {
    let ts = seeded();
    let mut c = Client::connect(ts.addr, "").await;
    let r =
        c.subscribe(json!({"symbols": ["AAPL"], "channels": ["trades"], "snapshot": false})).await;
    assert_eq!(r["subs"].as_array().unwrap().len(), 1);
    ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
    ts.feed.trade("AAPL", 1.05, 7);
    ts.flush();
    let m = c.until(is_update).await;
    // Only the trade arrives, with the trade fields.
    assert_eq!(m["type"], "t", "{m}");
    assert_eq!((m["p"].as_f64(), m["s"].as_u64()), (Some(1.05), Some(7)));
}

#[tokio::test]
async fn resubscribe_replaces_options_and_resends_snapshot() {
    let ts = seeded();
    let mut c = Client::connect(ts.addr, "").await;
    c.subscribe(json!({"symbols": ["AAPL"], "channels": ["quotes"]})).await;
    assert_eq!(c.next().await["type"], "snapshot");
    let r = c.subscribe(json!({"symbols": ["AAPL"], "channels": ["quotes"], "mode": "all"})).await;
    // The options are replaced...
    assert_eq!(r["subs"][0]["mode"], "all");
    // ...and a fresh snapshot follows.
    let s = c.next().await;
    assert_eq!((s["type"].as_str(), seq(&s)), (Some("snapshot"), 1));
}

#[tokio::test]
async fn wildcard_covers_symbols_that_appear_later() {
    let ts = seeded();
    let mut c = Client::connect(ts.addr, "").await;
    let r = c.subscribe(json!({"symbols": ["*"], "channels": ["quotes"], "snapshot": false})).await;
    // Every known symbol is listed.
    assert_eq!(r["subs"].as_array().unwrap().len(), 3, "{r}");
    ts.feed.quote("LATER", 5.0, 1, 5.1, 1);
    ts.flush();
    let m = c.until(is_update).await;
    // A symbol first seen after the subscription is covered too.
    assert_eq!((m["sym"].as_str(), seq(&m)), (Some("LATER"), 1));
    let r = c.request(json!({"type": "unsubscribe", "symbols": ["*"]}), 9).await;
    assert_eq!(r["symbols"], json!(["*"]));
}

#[tokio::test]
async fn ping_list_and_ids() {
    let ts = seeded();
    let mut c = Client::connect(ts.addr, "").await;
    let p = c.request(json!({"type": "ping", "ts": 12345}), 3).await;
    // pong echoes id and ts and adds the server time.
    assert_eq!((p["type"].as_str(), p["ts"].as_u64()), (Some("pong"), Some(12345)));
    assert!(p["t"].is_u64());
    let l = c.request(json!({"type": "list", "prefix": "M"}), 4).await;
    assert_eq!(l["symbols"], json!(["MSFT"]));
    let l = c.request(json!({"method": "list"}), 5).await;
    assert_eq!(l["symbols"], json!(["AAPL", "IBM", "MSFT"]));
    // Without an id, the reply has none.
    c.send(json!({"action": "ping"})).await;
    let p = c.until_type("pong").await;
    assert!(p.get("id").is_none(), "{p}");
}

#[tokio::test]
async fn bad_requests_get_400_and_keep_the_connection() {
    let ts = seeded();
    let mut c = Client::connect(ts.addr, "").await;
    let cases = [
        ("{nope", None),
        (r#"{"type":"subscribe","id":7,"symbols":"AAPL"}"#, Some(7)),
        (r#"{"type":"subscribe","id":8,"symbols":["AAPL"],"mode":"fast"}"#, Some(8)),
        (r#"{"type":"subscribe","id":9,"symbols":["AAPL"],"channels":["news"]}"#, Some(9)),
        (r#"{"type":"fly","id":10}"#, Some(10)),
        (r#"{"id":11}"#, Some(11)),
        ("[]", None),
        ("42", None),
    ];
    for (text, id) in cases {
        c.send_text(text).await;
        let e = c.until_type("error").await;
        // Each is a 400 naming the request when it had an id.
        assert_eq!(e["code"], 400, "{text}: {e}");
        assert_eq!(e["temporary"], false);
        assert_eq!(e.get("id").and_then(Value::as_u64), id, "{text}: {e}");
        assert!(e["msg"].is_string());
    }
    c.ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    let e = c.until_type("error").await;
    // A binary frame on a JSON session is a 400 too...
    assert_eq!(e["code"], 400);
    // ...and the connection still works.
    assert_eq!(c.request(json!({"type": "ping"}), 1).await["type"], "pong");
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let ts = manual_server(|c| c.shard.max_message_bytes = 1024);
    let mut c = Client::connect(ts.addr, "").await;
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(4096));
    c.send_text(&big).await;
    // The server refuses it and closes with 1009 (message too big).
    assert_eq!(c.closed().await, Some(1009));
    // Other sessions are unaffected.
    let mut d = Client::connect(ts.addr, "").await;
    assert_eq!(d.request(json!({"type": "ping"}), 1).await["type"], "pong");
}

#[tokio::test]
async fn symbol_limit_rejects_with_405_and_keeps_earlier() {
    let ts = manual_server(|c| c.shard.max_symbols = 2);
    for s in ["AAPL", "MSFT", "IBM"] {
        ts.feed.quote(s, 1.0, 1, 1.1, 1);
    }
    ts.flush();
    let mut c = Client::connect(ts.addr, "").await;
    let r = c.subscribe(json!({"symbols": ["AAPL", "MSFT", "IBM"], "snapshot": false})).await;
    // Two fit; the third is refused with 405.
    assert_eq!(r["rejected"], json!([{"sym": "IBM", "code": 405, "msg": "symbol limit exceeded"}]));
    assert_eq!(limits_subs(&r), 4);
    // Re-subscribing a held symbol is not a new one: still allowed.
    let r = c.subscribe(json!({"symbols": ["AAPL"], "snapshot": false})).await;
    assert_eq!(r["rejected"], json!([]));
    // A name the same request's "*" covers is not refused either.
    let r = c.subscribe(json!({"symbols": ["*", "IBM"], "snapshot": false})).await;
    assert_eq!(r["rejected"], json!([]));
}

fn limits_subs(r: &Value) -> usize {
    r["subs"].as_array().unwrap().len()
}

#[tokio::test]
async fn inbound_rate_limit_answers_429() {
    let ts = manual_server(|c| c.shard.msgs_in_per_s = 5);
    let mut c = Client::connect(ts.addr, "").await;
    for id in 0..10 {
        c.send(json!({"type": "ping", "id": id})).await;
    }
    let e = c.until_type("error").await;
    // Past the limit, requests are refused with a temporary 429...
    assert_eq!((e["code"].as_u64(), e["temporary"].as_bool()), (Some(429), Some(true)));
    // ...that names the request it refuses.
    assert!(e["id"].as_u64().is_some_and(|id| (5..10).contains(&id)), "{e}");
}

#[tokio::test]
async fn stamps_and_time_unit() {
    let ts = seeded();
    let mut c = Client::connect(ts.addr, "stamps=1&time_unit=us").await;
    assert_eq!(c.welcome["time_unit"], "us");
    c.subscribe(json!({"symbols": ["AAPL"], "channels": ["quotes"]})).await;
    let s = c.next().await;
    // With stamps=1, snapshots and updates carry ti and to, in microseconds.
    let (t, ti, to) =
        (s["t"].as_u64().unwrap(), s["ti"].as_u64().unwrap(), s["to"].as_u64().unwrap());
    assert!(t > 1_600_000_000_000_000 && t < 4_000_000_000_000_000, "t in us: {t}");
    assert!(t <= ti && ti <= to, "source <= ingest <= send: {s}");
    ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
    ts.flush();
    let u = c.until(is_update).await;
    assert!(u["ti"].is_u64() && u["to"].is_u64());
    // Without stamps=1 they never appear.
    let mut d = Client::connect(ts.addr, "").await;
    d.subscribe(json!({"symbols": ["AAPL"], "channels": ["quotes"]})).await;
    let s = d.next().await;
    assert!(s.get("ti").is_none() && s.get("to").is_none(), "{s}");
    assert!(s["t"].as_u64().unwrap() < 4_000_000_000_000, "t in ms by default");
}

#[tokio::test]
async fn heartbeat_when_idle() {
    let ts = manual_server(|c| c.shard.hb = std::time::Duration::from_millis(100));
    let mut c = Client::connect(ts.addr, "").await;
    assert_eq!(c.welcome["hb_ms"], 100);
    let h = c.until_type("heartbeat").await;
    // Heartbeats carry cseq (checked by the client) and the server time.
    assert!(h["t"].is_u64());
}

#[tokio::test]
async fn status_follows_the_feed_state() {
    let ts = seeded();
    let mut c = Client::connect(ts.addr, "").await;
    assert_eq!(c.next().await["feed"], "live");
    ts.feed.set_state(FeedState::Stale);
    ts.flush();
    // Every session hears when the feed goes stale...
    assert_eq!(c.until_type("status").await["feed"], "stale");
    ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
    ts.flush();
    // ...and when it is live again.
    assert_eq!(c.until_type("status").await["feed"], "live");
}

#[tokio::test]
async fn unknown_subprotocol_is_refused_and_json_is_accepted() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ts = seeded();
    let mut req = format!("ws://{}/ws", ts.addr).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "tickwire.v1.json".parse().unwrap());
    let (_ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    // The JSON subprotocol is selected when offered.
    assert_eq!(resp.headers()["sec-websocket-protocol"], "tickwire.v1.json");
    let mut req = format!("ws://{}/ws", ts.addr).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "chat".parse().unwrap());
    // An offer without any protocol we speak is refused before the upgrade.
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
}

#[tokio::test]
async fn switching_latest_to_all_never_jumps_seq_silently() {
    let ts = seeded();
    let mut c = Client::connect(ts.addr, "").await;
    // At 1 Hz the snapshot holds the stream back for a second...
    c.subscribe(json!({"symbols": ["AAPL"], "channels": ["quotes"], "max_hz": 1})).await;
    assert_eq!(seq(&c.next().await), 1);
    // ...so these ten updates are conflated and not yet sent...
    for i in 0..10 {
        ts.feed.quote("AAPL", 100.0 + f64::from(i), 1, 101.0 + f64::from(i), 1);
    }
    ts.flush();
    // ...when the client switches to mode all.
    let r = c
        .subscribe(
            json!({"symbols": ["AAPL"], "channels": ["quotes"], "mode": "all", "snapshot": false}),
        )
        .await;
    let mut at = r["subs"][0]["seq"].as_u64().unwrap();
    ts.feed.quote("AAPL", 200.0, 1, 201.0, 1);
    ts.flush();
    while at < 12 {
        let m = c.until(|m| is_update(m) || m["type"] == "overflow").await;
        if m["type"] == "overflow" {
            // What latest mode had folded away is reported, not skipped.
            assert_eq!(m["from_seq"].as_u64(), Some(at + 1), "{m}");
            at = m["to_seq"].as_u64().unwrap();
        } else {
            assert_eq!(seq(&m), at + 1, "mode all moves one seq at a time: {m}");
            assert!(m.get("cf").is_none());
            at += 1;
        }
    }
}

#[tokio::test]
async fn sustained_flooding_closes_with_1008() {
    let ts = manual_server(|c| c.shard.msgs_in_per_s = 5);
    let mut c = Client::connect(ts.addr, "").await;
    for _ in 0..20 {
        c.send(json!({"type": "ping"})).await;
    }
    // Three times the limit within a second is abuse, not a burst.
    assert_eq!(c.closed().await, Some(1008));
}

#[tokio::test]
async fn wildcard_can_be_refused() {
    let ts = manual_server(|c| c.shard.allow_wildcard = false);
    ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
    ts.flush();
    let mut c = Client::connect(ts.addr, "").await;
    let r = c.subscribe(json!({"symbols": ["*", "AAPL"], "snapshot": false})).await;
    // The wildcard is refused with 403; the named symbol is still subscribed.
    assert_eq!(r["rejected"][0]["sym"], "*");
    assert_eq!(r["rejected"][0]["code"], 403);
    assert_eq!(r["subs"].as_array().unwrap().len(), 2);
}
