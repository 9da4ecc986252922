//! The pipeline as a whole: convergence after bursts, isolation from a
//! client that never reads, shutdown.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::util::{Client, TIMEOUT, manual_server, subscribe_aapl_all};

/// The last quote and trade the test pushed for each symbol, and their seqs.
#[derive(Default)]
struct Expected {
    quotes: HashMap<String, (u64, [f64; 4])>,
    trades: HashMap<String, (u64, [f64; 2])>,
}

/// Pushes `n` updates over `symbols` symbols, deterministic but irregular.
fn burst(
    feed: &tickwire::feed::manual::ManualFeedHandle,
    symbols: usize,
    n: usize,
    exp: &mut Expected,
) {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let sym = format!("S{:03}", x % symbols as u64);
        let px = 10.0 + (x % 10_000) as f64 / 100.0;
        if x.is_multiple_of(5) {
            let size = (x % 900 + 1) as f64;
            feed.trade(&sym, px, size as u32);
            let e = exp.trades.entry(sym).or_insert((0, [0.0; 2]));
            *e = (e.0 + 1, [px, size]);
        } else {
            let (bs, asz) = ((x % 7 + 1) as f64 * 100.0, (x % 11 + 1) as f64 * 100.0);
            feed.quote(&sym, px, bs as u32, px + 0.01, asz as u32);
            let e = exp.quotes.entry(sym).or_insert((0, [0.0; 4]));
            *e = (e.0 + 1, [px, bs, px + 0.01, asz]);
        }
    }
}

type Held = HashMap<(String, String), Value>;

/// Records a message in what a latest-mode client holds, checking that each
/// stream moves forward by exactly `cf`.
fn absorb(held: &mut Held, m: Value) {
    let ch = match m["type"].as_str().unwrap() {
        "q" => "quotes",
        "t" => "trades",
        "snapshot" => m["ch"].as_str().unwrap(),
        _ => return,
    };
    let key = (ch.to_string(), m["sym"].as_str().unwrap().to_string());
    if let (Some(prev), false) = (held.get(&key), m["type"] == "snapshot") {
        let cf = m["cf"].as_u64().unwrap_or(1);
        assert_eq!(m["seq"].as_u64().unwrap(), prev["seq"].as_u64().unwrap() + cf, "{m}");
    }
    held.insert(key, m);
}

/// Reads until the client holds the last seq of every stream of `exp`.
async fn hold_until_converged(c: &mut Client, exp: &Expected, held: &mut Held) {
    let done = |held: &HashMap<(String, String), Value>| {
        exp.quotes.iter().all(|(s, (seq, _))| {
            held.get(&("quotes".into(), s.clone())).map(|m| &m["seq"]) == Some(&json!(seq))
        }) && exp.trades.iter().all(|(s, (seq, _))| {
            held.get(&("trades".into(), s.clone())).map(|m| &m["seq"]) == Some(&json!(seq))
        })
    };
    while !done(held) {
        absorb(held, c.next().await);
    }
}

fn assert_holds_latest(held: &HashMap<(String, String), Value>, exp: &Expected) {
    for (sym, (_, [bp, bs, ap, asz])) in &exp.quotes {
        let m = &held[&("quotes".to_string(), sym.clone())];
        // Exactly the latest quote the feed produced.
        assert_eq!(m["bp"].as_f64().unwrap(), (bp * 1e4).round() / 1e4, "{m}");
        assert_eq!(m["ap"].as_f64().unwrap(), (ap * 1e4).round() / 1e4, "{m}");
        assert_eq!((m["bs"].as_f64(), m["as"].as_f64()), (Some(*bs), Some(*asz)));
    }
    for (sym, (_, [p, s])) in &exp.trades {
        let m = &held[&("trades".to_string(), sym.clone())];
        assert_eq!(
            (m["p"].as_f64().unwrap(), m["s"].as_f64().unwrap()),
            ((p * 1e4).round() / 1e4, *s),
            "{m}"
        );
    }
}

#[tokio::test]
async fn every_subscriber_converges_to_the_latest_values_after_a_burst() {
    let ts = manual_server(|_| {});
    let mut exp = Expected::default();
    // Symbols exist (with a first value) before anyone subscribes.
    burst(&ts.feed, 40, 200, &mut exp);
    ts.flush();
    let mut clients = Vec::new();
    for i in 0..12 {
        let mut c = Client::connect(ts.addr, "").await;
        let max_hz = if i % 3 == 0 { json!(5) } else { Value::Null };
        c.subscribe(json!({"symbols": ["*"], "max_hz": max_hz})).await;
        clients.push(c);
    }
    burst(&ts.feed, 40, 20_000, &mut exp);
    ts.flush();
    for c in &mut clients {
        let mut held = Held::new();
        hold_until_converged(c, &exp, &mut held).await;
        assert_holds_latest(&held, &exp);
    }
}

type Positions = HashMap<(String, String), u64>;

/// The seq each stream of `exp` has reached.
fn positions(exp: &Expected) -> Positions {
    exp.quotes
        .iter()
        .map(|(s, (q, _))| (("quotes".to_string(), s.clone()), *q))
        .chain(exp.trades.iter().map(|(s, (t, _))| (("trades".to_string(), s.clone()), *t)))
        .collect()
}

/// Reads a mode-all client from `start` until it reaches `target`, checking
/// that every update or reported loss continues exactly where its stream
/// was. Returns whether any loss was reported.
async fn account_all_mode(c: &mut Client, start: Positions, target: &Positions) -> bool {
    let mut pos = start;
    let mut overflowed = false;
    while pos != *target {
        let m = c.next().await;
        let (ch, from, to) = match m["type"].as_str().unwrap() {
            "q" => ("quotes", m["seq"].as_u64().unwrap(), m["seq"].as_u64().unwrap()),
            "t" => ("trades", m["seq"].as_u64().unwrap(), m["seq"].as_u64().unwrap()),
            "overflow" => {
                overflowed = true;
                (
                    m["ch"].as_str().unwrap(),
                    m["from_seq"].as_u64().unwrap(),
                    m["to_seq"].as_u64().unwrap(),
                )
            }
            _ => continue,
        };
        let key = (ch.to_string(), m["sym"].as_str().unwrap().to_string());
        assert_eq!(from, pos.get(&key).copied().unwrap_or(0) + 1, "no silent gap: {m}");
        pos.insert(key, to);
    }
    overflowed
}

#[tokio::test]
async fn all_mode_accounts_for_every_update_of_a_burst() {
    let ts = manual_server(|_| {});
    let mut exp = Expected::default();
    burst(&ts.feed, 20, 100, &mut exp);
    ts.flush();
    let mut c = Client::connect(ts.addr, "").await;
    c.subscribe(json!({"symbols": ["*"], "mode": "all", "snapshot": false})).await;
    let start = positions(&exp);
    burst(&ts.feed, 20, 30_000, &mut exp);
    ts.flush();
    account_all_mode(&mut c, start, &positions(&exp)).await;
}

/// RSS of this process (the server runs in it), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `tickwire_slow_disconnects_total`, read with a blocking GET (for threads).
fn slow_disconnects_blocking(addr: std::net::SocketAddr) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    crate::util::metric(&body, "tickwire_slow_disconnects_total")
}

#[tokio::test]
async fn a_client_that_never_reads_is_isolated_and_closed() {
    let ts = manual_server(|c| {
        c.shard.lag_limit = Duration::from_millis(1000);
        c.shard.slow_warn = Duration::from_millis(200);
    });
    let mut exp = Expected::default();
    burst(&ts.feed, 200, 400, &mut exp);
    ts.flush();
    let rss_before = rss_bytes();
    // The stuck client: subscribes to everything in mode all, then never reads.
    let (mut stuck, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?stamps=1", ts.addr)).await.unwrap();
    let sub = json!({"type": "subscribe", "symbols": ["*"], "mode": "all"}).to_string();
    stuck.send(Message::Text(sub.into())).await.unwrap();
    let mut healthy = Client::connect(ts.addr, "").await;
    healthy.subscribe(json!({"symbols": ["*"]})).await;
    // Bursts until the stuck client is closed: loopback buffers can hold tens
    // of MiB, so how much it takes depends on the machine (bounded at 400
    // bursts, about 80 M of JSON).
    let feed = ts.feed.clone();
    let addr = ts.addr;
    let pusher = std::thread::spawn(move || {
        let mut exp = Expected::default();
        for _ in 0..400 {
            burst(&feed, 200, 10_000, &mut exp);
            assert!(feed.flush(TIMEOUT), "the feed is never held back");
            if slow_disconnects_blocking(addr) > 0 {
                return (exp, true);
            }
        }
        (exp, false)
    });
    // The healthy client keeps up meanwhile.
    let mut held = Held::new();
    let mut updates = 0;
    while !pusher.is_finished() {
        let m = healthy.next().await;
        updates += u64::from(m["type"] == "q" || m["type"] == "t");
        absorb(&mut held, m);
    }
    assert!(updates > 0);
    let (pushed, closed) = pusher.join().unwrap();
    // The stuck client was closed by the slow-client policy...
    assert!(closed, "stuck client was not closed:\n{}", ts.get("/metrics").await.1);
    for (sym, (n, v)) in pushed.quotes {
        let e = exp.quotes.entry(sym).or_insert((0, [0.0; 4]));
        *e = (e.0 + n, v);
    }
    for (sym, (n, v)) in pushed.trades {
        let e = exp.trades.entry(sym).or_insert((0, [0.0; 2]));
        *e = (e.0 + n, v);
    }
    // ...while the healthy one converged to the latest values.
    hold_until_converged(&mut healthy, &exp, &mut held).await;
    assert_holds_latest(&held, &exp);
    // ...and what it cost stayed bounded (server and both clients share this process).
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(grown < 64 << 20, "RSS grew by {} MiB", grown >> 20);
    // The closed session's resources are released (bounded wait: the close
    // completes on the shard right after the policy fires).
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while ts.metric("tickwire_connections").await != 1 {
        assert!(tokio::time::Instant::now() < deadline, "stuck session not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_stops_listening_tells_sessions_and_closes_with_1012() {
    let ts = manual_server(|_| {});
    let mut c = Client::connect(ts.addr, "").await;
    assert_eq!(c.next().await["type"], "status");
    let server = ts.server;
    let stopper = tokio::task::spawn_blocking(move || {
        let start = std::time::Instant::now();
        server.shutdown();
        start.elapsed()
    });
    let m = c.until_type("shutdown").await;
    // The session is told, with a jittered reconnect hint...
    let after = m["reconnect_after_ms"].as_u64().unwrap();
    assert!((1000..2000).contains(&after), "{m}");
    // ...by then the listener is closed: nobody new can connect...
    let addr = ts.addr;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting");
    // ...then it is closed with 1012 (server restarting).
    assert_eq!(c.closed().await, Some(1012));
    let took = stopper.await.unwrap();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
}

#[tokio::test]
async fn ring_overruns_resync_from_the_latest_value_table() {
    // A 16-slot ring is lapped by every burst: shards must resync.
    let ts = manual_server(|c| c.ring_capacity = 16);
    let mut exp = Expected::default();
    burst(&ts.feed, 30, 100, &mut exp);
    ts.flush();
    let mut latest = Client::connect(ts.addr, "").await;
    latest.subscribe(json!({"symbols": ["*"]})).await;
    let mut all = Client::connect(ts.addr, "").await;
    all.subscribe(json!({"symbols": ["*"], "mode": "all", "snapshot": false})).await;
    let start = positions(&exp);
    burst(&ts.feed, 30, 20_000, &mut exp);
    ts.flush();
    // Latest mode still converges exactly...
    let mut held = Held::new();
    hold_until_converged(&mut latest, &exp, &mut held).await;
    assert_holds_latest(&held, &exp);
    // ...and mode all reports every skipped update as overflow, never a silent gap.
    let overflowed = account_all_mode(&mut all, start, &positions(&exp)).await;
    assert!(overflowed, "an overrun in mode all must show as overflow");
    assert!(
        ts.metric("tickwire_ring_overruns_total").await > 0,
        "the test must really overrun the ring"
    );
}

#[tokio::test]
async fn a_peer_that_answers_no_ping_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ts = manual_server(|c| c.shard.hb = Duration::from_millis(100));
    // A raw socket: completes the upgrade, then never answers anything.
    let mut dead = tokio::net::TcpStream::connect(ts.addr).await.unwrap();
    let upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    // Time counts from the dead peer's upgrade, not from the other client's.
    let started = tokio::time::Instant::now();
    dead.write_all(upgrade.as_bytes()).await.unwrap();
    // A live client that reads (and so answers pings) all along.
    let mut alive = Client::connect(ts.addr, "").await;
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            n = dead.read(&mut buf) => {
                // EOF or reset: the server dropped the silent peer.
                if n.map_or(true, |n| n == 0) {
                    break;
                }
            }
            m = alive.next() => { assert_ne!(m["type"], "shutdown"); }
        }
        assert!(started.elapsed() < Duration::from_secs(5), "silent peer not dropped");
    }
    // Two 100 ms intervals without an answer, give or take scheduling.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "dropped too early: {:?}",
        started.elapsed()
    );
    // The live client is still served.
    assert_eq!(alive.request(json!({"type": "ping"}), 1).await["type"], "pong");
    assert_eq!(ts.metric("tickwire_connections").await, 1);
    assert_eq!(ts.metric("tickwire_dead_peers_total").await, 1);
}

/// A client that stops reading until its socket is full, then reads
/// again, gets every frame whole and every update in order. The shard
/// writes data frames into an idle socket itself; when a full socket takes
/// only part of one, the connection's socket task must write the rest
/// before anything else.
#[tokio::test]
async fn a_reader_that_stalls_until_a_frame_is_split_gets_every_frame_whole() {
    let ts = manual_server(|c| {
        c.shard.queue_cap = 1 << 20;
        c.shard.lag_limit = Duration::from_secs(60);
        c.shard.slow_warn = Duration::from_secs(60);
        c.shard.max_queued_bytes = 1 << 30;
    });
    let mut c = Client::connect(ts.addr, "").await;
    let reply = subscribe_aapl_all(&ts, &mut c).await;
    assert_eq!(reply["subs"][0]["seq"], 1, "{reply}");
    // Not reading: bursts of one frame each (about 30 KB, under the
    // 64 KiB budget, so the shard writes them itself) until the server
    // reports a frame the socket took only in part.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut sent = 0u64;
    while ts.metric("tickwire_frames_direct_partial_total").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the socket never filled ({sent} sent)");
        for _ in 0..200 {
            ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
        }
        sent += 200;
        ts.flush();
    }
    assert!(ts.metric("tickwire_frames_direct_total").await > 0);
    // Reading again: every update, in order, none lost (`next` checks that
    // `cseq` rises by one; a broken frame fails the read).
    for seq in 2..=sent + 1 {
        let m = c.until(|m| m["type"] == "q").await;
        assert_eq!(m["seq"], seq, "{m}");
    }
    assert_eq!(ts.metric("tickwire_overflows_total").await, 0);
}

/// A burst larger than one frame, then silence: every update arrives
/// without waiting for the next tick or a heartbeat. A frame the shard
/// wrote into the socket itself must not leave the rest of the burst
/// waiting (the heartbeat is a minute here, so that would time out).
#[tokio::test]
async fn a_burst_larger_than_a_frame_arrives_whole_without_more_ticks() {
    let ts = manual_server(|c| {
        c.shard.queue_cap = 1 << 16;
        c.shard.hb = Duration::from_secs(60);
    });
    let mut c = Client::connect(ts.addr, "").await;
    subscribe_aapl_all(&ts, &mut c).await;
    // About 150 bytes each: several 64 KiB frames.
    let n = 5_000;
    for _ in 0..n {
        ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
    }
    ts.flush();
    for seq in 2..=n + 1 {
        let m = c.until(|m| m["type"] == "q").await;
        assert_eq!(m["seq"], seq, "{m}");
    }
    assert!(c.frames > 3, "the burst took several frames");
}
