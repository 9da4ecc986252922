//! Bars (issue 17, docs/PROTOCOL.md "Bars"): `bars_1s` and `bars_1m` built
//! on the feed side from the trades, checked field for field against a
//! reference computed here from the same trades (prices in exact fixed
//! point); a bar closes on time with no later trade; latest mode conflates
//! a busy bar with the right `cf`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tickwire::config::SourceChoice;
use tickwire::feed::replay::{ReplayConfig, Speed};

use crate::util::{Client, TIMEOUT, manual_server, test_config};

/// A price of a message, in fixed-point units (four decimals).
fn units(v: &Value) -> i64 {
    (v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")) * 10_000.0).round() as i64
}

/// One bar as the reference builds it.
#[derive(Debug, Clone, PartialEq)]
struct Bar {
    start_ms: u64,
    o: i64,
    h: i64,
    l: i64,
    c: i64,
    v: u64,
    n: u64,
    vw: i64,
    x: bool,
}

impl Bar {
    fn of(m: &Value) -> Bar {
        Bar {
            start_ms: m["t"].as_u64().unwrap(),
            o: units(&m["o"]),
            h: units(&m["h"]),
            l: units(&m["l"]),
            c: units(&m["c"]),
            v: m["v"].as_u64().unwrap(),
            n: m["n"].as_u64().unwrap(),
            vw: units(&m["vw"]),
            x: m["x"].as_bool().unwrap(),
        }
    }
}

/// The bar updates a sequence of trades (time in ns, price in units, size)
/// makes on an interval of `width_ms`: one per trade, a close before the
/// first trade of a later interval, and a close of the last bar at the end.
fn reference(trades: &[(u64, i64, u64)], width_ms: u64) -> Vec<Bar> {
    let mut out = Vec::new();
    let mut open: Option<(Bar, i128)> = None;
    for &(t_ns, p, s) in trades {
        let start = t_ns / 1_000_000 / width_ms * width_ms;
        if let Some((mut b, _)) = open.clone()
            && start > b.start_ms
        {
            b.x = true;
            out.push(b);
            open = None;
        }
        let (b, notional) = open.get_or_insert((
            Bar { start_ms: start, o: p, h: p, l: p, c: p, v: 0, n: 0, vw: p, x: false },
            0,
        ));
        b.h = b.h.max(p);
        b.l = b.l.min(p);
        b.c = p;
        b.v += s;
        b.n += 1;
        *notional += i128::from(p) * i128::from(s as i64);
        b.vw = (*notional / i128::from(b.v as i64)) as i64;
        out.push(b.clone());
    }
    if let Some((mut b, _)) = open {
        b.x = true;
        out.push(b);
    }
    out
}

/// Replays `path` at full speed, held until the first subscription.
fn replay(path: PathBuf) -> tickwire::Server {
    let mut config = test_config();
    config.shard.queue_cap = 1 << 20;
    config.source = SourceChoice::Replay(ReplayConfig {
        path,
        date: None,
        speed: Speed::Max,
        shift: Default::default(),
        wait_for_subscriber: true,
        looped: false,
        window: Default::default(),
    });
    tickwire::start(&config).unwrap()
}

/// Subscribes to trades and both bars channels of everything in mode all
/// and reads until `replay_done`: the trades per symbol, and the bars per
/// (channel, symbol) in order, `seq` checked contiguous from 1.
async fn collect(
    server: &tickwire::Server,
) -> (BTreeMap<String, Vec<(u64, i64, u64)>>, BTreeMap<(String, String), Vec<Bar>>) {
    let mut c = Client::connect(server.local_addr(), "time_unit=ns").await;
    c.subscribe(
        json!({"symbols": ["*"], "mode": "all", "channels": ["trades", "bars_1s", "bars_1m"]}),
    )
    .await;
    let (mut trades, mut bars) = (BTreeMap::new(), BTreeMap::<(String, String), Vec<Bar>>::new());
    let mut seqs: BTreeMap<(String, String), u64> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no replay_done in time");
        let m = c.next().await;
        let sym = m["sym"].as_str().map(str::to_string);
        match m["type"].as_str().unwrap() {
            "t" => trades.entry(sym.unwrap()).or_insert_with(Vec::new).push((
                m["t"].as_u64().unwrap(),
                units(&m["p"]),
                m["s"].as_u64().unwrap(),
            )),
            "b" => {
                let key = (m["ch"].as_str().unwrap().to_string(), sym.unwrap());
                let seq = seqs.entry(key.clone()).or_default();
                *seq += 1;
                assert_eq!(m["seq"], *seq, "{m}");
                // Bar times are in the session's unit (ns here): back to ms.
                let mut bar = Bar::of(&m);
                bar.start_ms /= 1_000_000;
                bars.entry(key).or_default().push(bar);
            }
            "status" if m["feed"] == "replay_done" => break,
            _ => {}
        }
    }
    (trades, bars)
}

#[tokio::test]
async fn bars_from_known_trades_equal_a_reference_field_for_field() {
    // Two symbols, trades over three seconds and across a minute boundary,
    // prices with every decimal.
    let t0: u64 = 1_764_167_459_000_000_000; // 14:30:59 UTC
    let rows: [(u64, &str, f64, u64); 9] = [
        (0, "AAA", 192.3101, 100),
        (120, "BBB", 10.5, 7),
        (400, "AAA", 192.35, 300),
        (990, "AAA", 192.2999, 50),
        (1_010, "AAA", 192.4, 10), // the next minute, and the next second
        (1_500, "BBB", 10.25, 3),
        (2_700, "AAA", 191.0001, 1),
        (2_710, "AAA", 193.0, 1_000),
        (2_999, "BBB", 11.0, 40),
    ];
    let text: String = rows
        .iter()
        .map(|(ms, sym, p, s)| {
            format!(
                "{{\"type\":\"t\",\"sym\":\"{sym}\",\"t\":{},\"p\":{p},\"s\":{s}}}\n",
                t0 + ms * 1_000_000
            )
        })
        .collect();
    let path = std::env::temp_dir().join(format!("tickwire-{}-bars.jsonl", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let server = replay(path.clone());
    let (trades, bars) = collect(&server).await;
    assert_eq!(trades["AAA"].len(), 6);
    for (sym, ts) in &trades {
        for (ch, width) in [("bars_1s", 1_000), ("bars_1m", 60_000)] {
            let got = &bars[&(ch.to_string(), sym.clone())];
            assert_eq!(got, &reference(ts, width), "{ch} {sym}");
        }
    }
    // AAA's second second, by hand: 192.4 then its close.
    let aaa = &bars[&("bars_1s".to_string(), "AAA".to_string())];
    assert_eq!(
        aaa[4],
        Bar {
            start_ms: (t0 + 1_000_000_000) / 1_000_000,
            o: 1_924_000,
            h: 1_924_000,
            l: 1_924_000,
            c: 1_924_000,
            v: 10,
            n: 1,
            vw: 1_924_000,
            x: false,
        }
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn bars_over_the_itch_sample_agree_with_the_trades_of_the_same_replay() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("feeds/sample.itch");
    let server = replay(path);
    let (trades, bars) = collect(&server).await;
    assert!(!trades.is_empty(), "the sample has trades");
    let mut checked = 0;
    for (sym, ts) in &trades {
        for (ch, width) in [("bars_1s", 1_000), ("bars_1m", 60_000)] {
            let got = &bars[&(ch.to_string(), sym.clone())];
            assert_eq!(got, &reference(ts, width), "{ch} {sym}");
            checked += got.len();
        }
    }
    // Nothing but what the trades make: no bar of a symbol without trades.
    assert_eq!(bars.values().map(Vec::len).sum::<usize>(), checked);
}

#[tokio::test]
async fn a_bar_closes_on_time_with_no_later_trade() {
    let ts = manual_server(|_| {});
    ts.feed.add_symbol("AAPL").unwrap();
    let mut c = Client::connect(ts.addr, "").await;
    c.subscribe(json!({"symbols": ["AAPL"], "channels": ["bars_1s"], "mode": "all"})).await;
    ts.feed.trade("AAPL", 100.5, 10);
    ts.flush();
    let open = c.until_type("b").await;
    assert_eq!((open["x"].as_bool(), open["n"].as_u64()), (Some(false), Some(1)), "{open}");
    // No other trade: the source clock alone closes it, once its second is over.
    let closed = c.until_type("b").await;
    let now_ms = tickwire::tick::now_ns() / 1_000_000;
    assert_eq!((closed["x"].as_bool(), closed["seq"].as_u64()), (Some(true), Some(2)), "{closed}");
    assert_eq!(closed["t"], open["t"]);
    let end_ms = open["t"].as_u64().unwrap() + 1_000;
    assert!(now_ms >= end_ms, "closed {} ms before its end", end_ms - now_ms);
    assert_eq!((closed["c"].as_f64(), closed["v"].as_u64()), (Some(100.5), Some(10)));
}

#[tokio::test]
async fn latest_mode_conflates_a_busy_bar_with_the_right_cf() {
    let ts = manual_server(|_| {});
    ts.feed.trade("AAPL", 1.0, 1);
    ts.flush();
    let mut c = Client::connect(ts.addr, "").await;
    let reply =
        c.subscribe(json!({"symbols": ["AAPL"], "channels": ["bars_1m"], "max_hz": 4})).await;
    let mut last = reply["subs"][0]["seq"].as_u64().unwrap();
    // The snapshot is the open bar.
    let snap = c.until_type("snapshot").await;
    assert_eq!((snap["ch"].as_str(), snap["x"].as_bool()), (Some("bars_1m"), Some(false)));
    last = last.max(snap["seq"].as_u64().unwrap());
    // 40 trades, as fast as the feed takes them: far more than 4 a second.
    for i in 0..40 {
        ts.feed.trade("AAPL", 1.0 + f64::from(i) * 0.01, 1);
    }
    ts.flush();
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while last < 41 {
        assert!(tokio::time::Instant::now() < deadline, "the last update never came");
        let m = match tokio::time::timeout(Duration::from_secs(5), c.next()).await {
            Ok(m) => m,
            Err(_) => panic!("stopped at seq {last}"),
        };
        if m["type"] != "b" {
            continue;
        }
        // `seq` rises by exactly `cf` (a new minute would add a close and a
        // new bar: still one update each).
        let (seq, cf) = (m["seq"].as_u64().unwrap(), m["cf"].as_u64().unwrap_or(1));
        assert_eq!(seq, last + cf, "{m}");
        last = seq;
        seen += 1;
    }
    assert!(seen < 40, "{seen} messages for 40 updates: nothing was conflated");
}
