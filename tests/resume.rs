//! Resume (issue 15, docs/PROTOCOL.md "Resume"): a client that reconnects
//! with `subscribe.resume` continues every stream exactly where it
//! stopped: in `mode:"all"` each update once, in order, across both
//! connections, or an exact `overflow` for what the history no longer
//! holds; in `mode:"latest"` one update whose `cf` counts what it missed;
//! in another epoch a fresh start.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{Client, TIMEOUT, manual_server};

/// What one client has seen of every stream, across its connections: the
/// last `seq` handled per (channel, symbol), each update checked to follow
/// the one before (or an `overflow` to account for the gap exactly).
#[derive(Default)]
pub(crate) struct Streams {
    pub(crate) last: BTreeMap<(String, String), u64>,
    pub(crate) updates: u64,
    pub(crate) lost: u64,
}

impl Streams {
    /// Takes one message; panics on a duplicate or an unaccounted gap.
    pub(crate) fn take(&mut self, m: &Value) {
        let kind = m["type"].as_str().unwrap();
        let ch = match kind {
            "q" => "quotes".to_string(),
            "t" => "trades".to_string(),
            "snapshot" | "overflow" => m["ch"].as_str().unwrap().to_string(),
            _ => return,
        };
        let key = (ch, m["sym"].as_str().unwrap().to_string());
        let last = self.last.get(&key).copied();
        match kind {
            "overflow" => {
                let (from, to) = (m["from_seq"].as_u64().unwrap(), m["to_seq"].as_u64().unwrap());
                assert_eq!(Some(from - 1), last.or(Some(from - 1)), "overflow not adjacent: {m}");
                assert_eq!(m["lost"].as_u64().unwrap(), to - from + 1, "{m}");
                self.lost += to - from + 1;
                self.last.insert(key, to);
            }
            "snapshot" => {
                self.last.insert(key, m["seq"].as_u64().unwrap());
            }
            _ => {
                let seq = m["seq"].as_u64().unwrap();
                let cf = m["cf"].as_u64().unwrap_or(1);
                if let Some(last) = last {
                    assert_eq!(seq, last + cf, "{key:?}: after {last}, {m}");
                }
                self.updates += 1;
                self.last.insert(key, seq);
            }
        }
    }

    /// `resume.from` for the streams seen so far.
    pub(crate) fn from(&self) -> Value {
        let mut from = json!({});
        for ((ch, sym), seq) in &self.last {
            from[ch][sym] = json!(seq);
        }
        from
    }
}

/// Reads for `window`, feeding every message to `streams`.
pub(crate) async fn read_for(c: &mut Client, streams: &mut Streams, window: Duration) {
    let end = tokio::time::Instant::now() + window;
    while let Ok(Some(m)) = tokio::time::timeout_at(end, c.try_next()).await {
        streams.take(&m);
    }
}

/// Subscribes with `resume` from what `streams` has seen in `epoch`.
pub(crate) async fn resume(c: &mut Client, req: Value, epoch: &Value, streams: &Streams) -> Value {
    let mut req = req;
    req["resume"] = json!({"epoch": epoch, "from": streams.from()});
    c.subscribe(req).await
}

/// Every stream of `streams` that `reply` (a `subscribed`) names was
/// recovered, from the seq the client gave.
pub(crate) fn assert_recovered(reply: &Value, streams: &Streams) {
    for sub in reply["subs"].as_array().unwrap() {
        let key =
            (sub["ch"].as_str().unwrap().to_string(), sub["sym"].as_str().unwrap().to_string());
        if let Some(&seq) = streams.last.get(&key) {
            assert_eq!(sub["recovered"], true, "{sub}");
            assert_eq!(sub["seq"].as_u64(), Some(seq), "{sub}");
        }
    }
}

#[tokio::test]
async fn mode_all_is_contiguous_across_a_reset_in_the_middle_of_a_burst() {
    // The synthetic feed at 10,000 updates/s over 100 symbols, skewed as a
    // market is (the busiest stream takes over 1,000 a second): a history
    // and an all-mode queue that hold the whole second missed.
    let mut config = tickwire::Config {
        synthetic: tickwire::feed::synthetic::SyntheticConfig {
            symbols: 100,
            rate: 10_000.0,
            ..tickwire::Config::default().synthetic
        },
        history: 4096,
        ..crate::util::test_config()
    };
    config.shard.queue_cap = 1 << 16;
    let server = tickwire::start(&config).unwrap();
    let addr = server.local_addr();
    let req = json!({"symbols": ["*"], "mode": "all"});
    let mut streams = Streams::default();
    let mut a = Client::connect(addr, "").await;
    let epoch = a.welcome["epoch"].clone();
    let first = a.subscribe(req.clone()).await;
    assert_eq!(first["subs"].as_array().unwrap().len(), 200);
    read_for(&mut a, &mut streams, Duration::from_millis(500)).await;
    assert!(streams.updates > 0);
    // Reset in the middle of the stream: whatever was in flight is lost to
    // this connection.
    if let tokio_tungstenite::MaybeTlsStream::Plain(s) = a.ws.get_ref() {
        socket2::SockRef::from(s).set_linger(Some(Duration::ZERO)).unwrap();
    }
    drop(a);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut b = Client::connect(addr, "").await;
    assert_eq!(b.welcome["epoch"], epoch);
    assert_eq!(b.welcome["limits"]["history"], 4096);
    let before = streams.updates;
    let reply = resume(&mut b, req, &epoch, &streams).await;
    assert_recovered(&reply, &streams);
    read_for(&mut b, &mut streams, Duration::from_millis(500)).await;
    // The missed second came back, each update once: any duplicate or gap
    // failed `take`, and nothing was lost.
    assert!(streams.updates > before);
    assert_eq!(streams.lost, 0);
}

#[tokio::test]
async fn a_resume_past_the_history_gets_the_exact_overflow_then_what_is_left() {
    let ts = manual_server(|c| c.history = 8);
    ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
    ts.flush();
    let req = json!({"symbols": ["AAPL"], "channels": ["quotes"], "mode": "all"});
    let mut streams = Streams::default();
    let mut a = Client::connect(ts.addr, "").await;
    let epoch = a.welcome["epoch"].clone();
    a.subscribe(req.clone()).await;
    for i in 0..4 {
        ts.feed.quote("AAPL", 1.0 + f64::from(i) * 0.01, 1, 1.1, 1);
    }
    ts.flush();
    while streams.last.get(&("quotes".into(), "AAPL".into())) != Some(&5) {
        let m = a.next().await;
        streams.take(&m);
    }
    drop(a);
    // 30 more while away: the history keeps the last 8 (28..=35).
    for i in 0..30 {
        ts.feed.quote("AAPL", 2.0 + f64::from(i) * 0.01, 1, 1.1, 1);
    }
    ts.flush();
    let mut b = Client::connect(ts.addr, "").await;
    let reply = resume(&mut b, req, &epoch, &streams).await;
    assert_eq!(reply["subs"][0]["recovered"], false);
    assert_eq!(reply["subs"][0]["seq"], 5);
    let overflow = b.until_type("overflow").await;
    assert_eq!(
        (overflow["from_seq"].as_u64(), overflow["to_seq"].as_u64(), overflow["lost"].as_u64()),
        (Some(6), Some(27), Some(22)),
        "{overflow}"
    );
    streams.take(&overflow);
    while streams.last[&("quotes".to_string(), "AAPL".to_string())] < 35 {
        let m = b.next().await;
        assert_ne!(m["type"], "snapshot", "a resumed stream gets no snapshot: {m}");
        streams.take(&m);
    }
    assert_eq!((streams.updates, streams.lost), (5 - 1 + 8, 22));
}

#[tokio::test]
async fn mode_latest_resumes_with_one_update_whose_cf_counts_the_gap() {
    let ts = manual_server(|_| {});
    ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
    ts.flush();
    let req = json!({"symbols": ["AAPL"], "channels": ["quotes"]});
    let mut a = Client::connect(ts.addr, "").await;
    let epoch = a.welcome["epoch"].clone();
    let mut streams = Streams::default();
    let reply = a.subscribe(req.clone()).await;
    assert!(reply["subs"][0].get("recovered").is_none(), "no resume, no recovered: {reply}");
    streams.take(&a.until_type("snapshot").await);
    drop(a);
    for i in 0..10 {
        ts.feed.quote("AAPL", 2.0 + f64::from(i), 1, 20.0, 1);
    }
    ts.flush();
    let mut b = Client::connect(ts.addr, "").await;
    let reply = resume(&mut b, req, &epoch, &streams).await;
    assert_eq!(reply["subs"][0]["recovered"], true);
    let q = b.until_type("q").await;
    // The newest value, standing for the 10 missed.
    assert_eq!(
        (q["seq"].as_u64(), q["cf"].as_u64(), q["bp"].as_f64()),
        (Some(11), Some(10), Some(11.0))
    );
    // And nothing changed since: no further update.
    ts.feed.quote("AAPL", 3.0, 1, 20.0, 1);
    ts.flush();
    let q = b.until_type("q").await;
    assert_eq!((q["seq"].as_u64(), q.get("cf")), (Some(12), None));
}

#[tokio::test]
async fn a_resume_from_another_epoch_starts_fresh() {
    let ts = manual_server(|_| {});
    ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
    ts.flush();
    let mut c = Client::connect(ts.addr, "").await;
    let req = json!({"symbols": ["AAPL"], "mode": "all", "channels": ["quotes"],
        "resume": {"epoch": "e-1", "from": {"quotes": {"AAPL": 40}}}});
    let reply = c.subscribe(req).await;
    let sub = &reply["subs"][0];
    // Another numbering: not recovered, the current position, a snapshot.
    assert_eq!((sub["recovered"].as_bool(), sub["seq"].as_u64()), (Some(false), Some(1)));
    let snap = c.until_type("snapshot").await;
    assert_eq!(snap["seq"], 1);
}

#[tokio::test]
async fn a_looping_replay_that_started_over_is_a_new_epoch() {
    let t0: u64 = 1_764_167_400_000_000_000;
    // 50 trades 20 ms apart: a pass of one second, long enough for the
    // second client to subscribe within the pass after the first's.
    const TRADES: u64 = 50;
    let text: String = (0..TRADES)
        .map(|k| {
            format!(
                "{{\"type\":\"t\",\"sym\":\"LOOP\",\"t\":{},\"p\":1{k},\"s\":1}}\n",
                t0 + k * 20_000_000
            )
        })
        .collect();
    let path =
        std::env::temp_dir().join(format!("tickwire-{}-resume-loop.jsonl", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let config = tickwire::Config {
        source: tickwire::config::SourceChoice::Replay(tickwire::feed::replay::ReplayConfig {
            path: path.clone(),
            date: None,
            speed: tickwire::feed::replay::Speed::Factor(1.0),
            shift: Default::default(),
            wait_for_subscriber: false,
            looped: true,
            window: Default::default(),
        }),
        ..crate::util::test_config()
    };
    let server = tickwire::start(&config).unwrap();
    let req = json!({"symbols": ["LOOP"], "channels": ["trades"], "mode": "all"});
    // A client that got trades of one pass before its end (`shutdown`,
    // close 1012). One that subscribed too near the end got none and has
    // nothing to resume: the next pass gives another try.
    let mut tries = 0;
    let (epoch, streams) = loop {
        tries += 1;
        assert!(tries <= 5, "no client got a trade before its pass ended");
        let mut a = Client::connect(server.local_addr(), "").await;
        let epoch = a.welcome["epoch"].clone();
        let mut streams = Streams::default();
        a.subscribe(req.clone()).await;
        loop {
            let m = a.next().await;
            if m["type"] == "shutdown" {
                break;
            }
            streams.take(&m);
        }
        if !streams.last.is_empty() {
            break (epoch, streams);
        }
    };
    assert!(streams.last.values().all(|&s| s > 0));
    let mut b = Client::connect(server.local_addr(), "").await;
    assert_ne!(b.welcome["epoch"], epoch);
    let reply = resume(&mut b, req, &epoch, &streams).await;
    assert_eq!(reply["subs"][0]["recovered"], false, "{reply}");
    // The new numbering starts at 1 again; nothing of the old one is sent.
    let first = b.until(|m| m["type"] == "t" || m["type"] == "snapshot").await;
    assert!(first["seq"].as_u64().unwrap() <= TRADES, "{first}");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn bad_resumes_get_400_and_the_connection_stays_open() {
    let ts = manual_server(|_| {});
    ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
    ts.flush();
    let mut c = Client::connect(ts.addr, "").await;
    for (i, from) in
        [json!({"quotes": {"AAPL": -1}}), json!({"quotes": {"AAPL": 2.5}}), json!({"quotes": 3})]
            .into_iter()
            .enumerate()
    {
        let req = json!({"type": "subscribe", "symbols": ["AAPL"],
            "resume": {"epoch": c.welcome["epoch"], "from": from}});
        let reply = c.request(req, 10 + i as u64).await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_u64()),
            (Some("error"), Some(400)),
            "{reply}"
        );
    }
    // A stream the request does not subscribe is ignored, not an error.
    let reply = c
        .subscribe(json!({"symbols": ["AAPL"], "channels": ["quotes"],
            "resume": {"epoch": c.welcome["epoch"], "from": {"trades": {"AAPL": 0}, "quotes": {"NOPE": 3}}}}))
        .await;
    assert!(reply["subs"][0].get("recovered").is_none(), "{reply}");
    let pong = c.request(json!({"type": "ping"}), 99).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn many_random_reconnects_keep_every_stream_exact() {
    // A manual feed over 6 symbols, random bursts, and a client that drops
    // and resumes between them, sometimes after more than the history
    // holds: every stream's updates and overflows add up to exactly what
    // the feed published, none twice.
    let ts = manual_server(|c| c.history = 16);
    let names = ["A", "B", "C", "D", "E", "F"];
    let mut published: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let publish =
        |n: u64, published: &mut BTreeMap<(String, String), u64>, r: &mut dyn FnMut() -> u64| {
            for _ in 0..n {
                let sym = names[(r() % 6) as usize];
                if r().is_multiple_of(2) {
                    ts.feed.quote(sym, 1.0, 1, 1.1, 1);
                    *published.entry(("quotes".into(), sym.into())).or_default() += 1;
                } else {
                    ts.feed.trade(sym, 1.0, 1);
                    *published.entry(("trades".into(), sym.into())).or_default() += 1;
                }
            }
            ts.flush();
        };
    publish(12, &mut published, &mut next);
    let req = json!({"symbols": names, "mode": "all", "snapshot": false});
    let mut streams = Streams::default();
    let mut epoch = Value::Null;
    let start = Instant::now();
    for round in 0..12 {
        let mut c = Client::connect(ts.addr, "").await;
        if round == 0 {
            epoch = c.welcome["epoch"].clone();
            c.subscribe(req.clone()).await;
        } else {
            resume(&mut c, req.clone(), &epoch, &streams).await;
        }
        publish(next() % 60, &mut published, &mut next);
        // Read a random share of it, then drop the connection.
        let take = next() % 40;
        for _ in 0..take {
            match tokio::time::timeout(Duration::from_millis(200), c.try_next()).await {
                Ok(Some(m)) => streams.take(&m),
                _ => break,
            }
        }
        drop(c);
        assert!(start.elapsed() < TIMEOUT * 3, "rounds take too long");
    }
    // A last connection reads everything that is left.
    let mut c = Client::connect(ts.addr, "").await;
    resume(&mut c, req, &epoch, &streams).await;
    while streams.last != published {
        match tokio::time::timeout(Duration::from_secs(2), c.try_next()).await {
            Ok(Some(m)) => streams.take(&m),
            other => panic!("stopped at {:?} of {published:?}: {other:?}", streams.last),
        }
    }
    let total: u64 = published.values().sum();
    // Every update published (after each stream's first one the client saw)
    // was delivered once or reported lost once.
    assert!(streams.updates + streams.lost <= total);
    assert!(streams.updates > 0);
}
