//! Replay of recorded feeds (`--replay FILE`): every tick of a file arrives,
//! in order, numbered from 1 per stream, with the file's values; then
//! `status` `replay_done`. Garbage lines are skipped and counted; pacing
//! follows the file's timestamps; the same file gives the same stream on
//! every run, compressed or not. `t` is the recorded time at every speed:
//! for ITCH, the file's trading day in New York (from NASDAQ's file name or
//! `--date`) as UTC; `--time-shift` moves every time by one constant.
//!
//! Expected values come from reading the file with `serde_json`, not with
//! tickwire's own parser.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tickwire::config::SourceChoice;
use tickwire::feed::itch::{Frames, Normalizer};
use tickwire::feed::replay::{ReplayConfig, Speed, TimeShift, Window};
use tickwire::server::StartError;
use tickwire::tick::SymbolTable;
use tickwire::{Config, Server};

use crate::util::{Client, http_get, metric, test_config};

/// Longest a replay test waits for the end of a (small) file.
const REPLAY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The sample file shipped in `feeds/`.
fn feed(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("feeds").join(name)
}

/// A file under the temp dir, unique to this process and `name`.
fn temp_file(name: &str, content: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("tickwire-{}-{name}", std::process::id()));
    std::fs::write(&path, content).unwrap();
    path
}

fn replay_config(path: &Path, speed: Speed) -> Config {
    let mut base = test_config();
    // A --speed max replay outruns the test client; a deep mode-all queue
    // keeps every tick (the files here are small), instead of `overflow`.
    base.shard.queue_cap = 1 << 20;
    Config {
        source: SourceChoice::Replay(ReplayConfig {
            path: path.to_path_buf(),
            date: None,
            speed,
            shift: TimeShift::default(),
            wait_for_subscriber: true,
            looped: false,
            window: Window::default(),
        }),
        ..base
    }
}

/// Starts a replay server that holds the file until the first subscription.
pub(crate) fn replay_server(path: &Path, speed: Speed) -> Server {
    tickwire::start(&replay_config(path, speed)).expect("replay server starts")
}

/// The updates a file should produce, as the server sends them: type,
/// symbol, per-stream seq and the value fields, in file order. Lines that
/// are not a valid record are left out.
fn expected(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut seqs: HashMap<(String, String), u64> = HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        let kind = v["type"].as_str().unwrap_or_default().to_string();
        let fields: &[&str] = match kind.as_str() {
            "q" => &["bp", "bs", "ap", "as"],
            "t" => &["p", "s"],
            _ => continue,
        };
        let sym = v["sym"].as_str().unwrap().to_string();
        let seq = seqs.entry((kind.clone(), sym.clone())).or_default();
        *seq += 1;
        let mut m = json!({"type": kind, "sym": sym, "seq": *seq});
        for f in fields {
            m[*f] = v[*f].clone();
        }
        out.push(m);
    }
    out
}

/// The fields of a received update that `expected` lists.
fn comparable(m: &Value) -> Value {
    let fields: &[&str] = if m["type"] == "q" { &["bp", "bs", "ap", "as"] } else { &["p", "s"] };
    let mut out = json!({"type": m["type"], "sym": m["sym"], "seq": m["seq"]});
    for f in fields {
        out[*f] = m[*f].clone();
    }
    out
}

/// Subscribes to everything in mode all and reads until `replay_done`;
/// returns every update received (whole messages).
pub(crate) async fn collect(server: &Server, query: &str) -> Vec<Value> {
    let mut c = Client::connect(server.local_addr(), query).await;
    let status = c.next().await;
    assert_eq!(status["feed"], "live", "{status}");
    let r = c.subscribe(json!({"symbols": ["*"], "mode": "all"})).await;
    // The replay was held: every stream is still at position 0 (and the file
    // was read ahead, so every symbol is already known).
    let subs = r["subs"].as_array().unwrap();
    assert!(!subs.is_empty(), "{r}");
    assert!(subs.iter().all(|s| s["seq"] == 0), "{r}");
    let mut updates = Vec::new();
    let deadline = tokio::time::Instant::now() + REPLAY_TIMEOUT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no replay_done in time");
        let m = c.next().await;
        match m["type"].as_str().unwrap() {
            "q" | "t" => updates.push(m),
            "status" => {
                assert_eq!(m["feed"], "replay_done", "{m}");
                break;
            }
            "heartbeat" => {}
            other => panic!("unexpected {other}: {m}"),
        }
    }
    updates
}

#[tokio::test]
async fn replay_delivers_every_tick_in_order_then_replay_done() {
    let path = feed("sample.jsonl");
    let server = replay_server(&path, Speed::Max);
    let got = collect(&server, "").await;
    let want = expected(&path);
    assert_eq!(want.len(), 400, "the sample has 400 ticks");
    // Every tick, in file order, seq contiguous from 1 per stream, values as written.
    let got: Vec<Value> = got.iter().map(comparable).collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "tick {i}");
    }
    let (_, body) = http_get(server.local_addr(), "/metrics").await;
    assert_eq!(metric(&body, "tickwire_ticks_in_total"), 400);
    assert_eq!(metric(&body, "tickwire_feed_bad_records_total"), 0);
    server.shutdown();
}

#[tokio::test]
async fn garbage_lines_are_skipped_and_counted() {
    let path = feed("bad.jsonl");
    let server = replay_server(&path, Speed::Max);
    let got: Vec<Value> = collect(&server, "").await.iter().map(comparable).collect();
    // The five valid lines arrive; the nine bad ones (see feeds/README.md)
    // are skipped without stopping the feed, and the blank line is ignored.
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(
        got[0],
        json!({"type":"q","sym":"AAPL","seq":1,"bp":192.31,"bs":200,"ap":192.33,"as":100})
    );
    assert_eq!(got[1], json!({"type":"t","sym":"AAPL","seq":1,"p":192.32,"s":50}));
    // 0.30000000000000004 is 0.3 at 4 decimals.
    assert_eq!(
        got[2],
        json!({"type":"q","sym":"MSFT","seq":1,"bp":0.1,"bs":100,"ap":0.3,"as":300})
    );
    // 410.12345 rounds half away from zero as written.
    assert_eq!(got[3], json!({"type":"t","sym":"MSFT","seq":1,"p":410.1235,"s":7}));
    assert_eq!(got[4], json!({"type":"t","sym":"AAPL","seq":2,"p":192.34,"s":100}));
    let (_, body) = http_get(server.local_addr(), "/metrics").await;
    assert_eq!(metric(&body, "tickwire_feed_bad_records_total"), 9);
    assert_eq!(metric(&body, "tickwire_ticks_in_total"), 5);
    server.shutdown();
}

#[tokio::test]
async fn paced_replay_follows_the_file_scaled_by_speed() {
    // 41 trades 50 ms apart: 2 s of source time, 200 ms at --speed 10.
    let t0: u64 = 1_764_167_400_000_000_000;
    let step: u64 = 50_000_000;
    let mut text = String::new();
    for k in 0..41u64 {
        let t = t0 + k * step;
        text.push_str(&format!(
            "{{\"type\":\"t\",\"sym\":\"PACE\",\"t\":{t},\"p\":{}.5,\"s\":{}}}\n",
            100 + k,
            k + 1
        ));
    }
    let path = temp_file("paced.jsonl", text.as_bytes());
    let server = replay_server(&path, Speed::Factor(10.0));
    let got = collect(&server, "stamps=1&time_unit=us").await;
    server.shutdown();
    let _ = std::fs::remove_file(&path);
    assert_eq!(got.len(), 41);
    let t: Vec<i64> = got.iter().map(|m| m["t"].as_i64().unwrap()).collect();
    let ti: Vec<i64> = got.iter().map(|m| m["ti"].as_i64().unwrap()).collect();
    // `t` is the recorded time, untouched by pacing.
    let file: Vec<i64> = (0..41).map(|k| ((t0 + k * step) / 1_000) as i64).collect();
    assert_eq!(t, file);
    // Each tick was published on the schedule: the file's offsets / 10
    // after the first (due at +5 ms each), at or after its due time and
    // not much later.
    for k in 0..ti.len() {
        let late = ti[k] - ti[0] - (t[k] - t[0]) / 10;
        assert!((-1_000..150_000).contains(&late), "tick {k} published {late} µs after due");
    }
    // The whole replay took about 2 s / 10 of wall time (generous bounds).
    let span = ti[40] - ti[0];
    assert!((190_000..1_000_000).contains(&span), "replay span {span} µs");
}

#[tokio::test]
async fn same_file_same_stream_compressed_or_not() {
    let path = feed("sample.jsonl");
    let server = replay_server(&path, Speed::Max);
    let first: Vec<Value> = collect(&server, "").await.iter().map(comparable).collect();
    server.shutdown();
    // The same file gzip-compressed, under a name that does not say so.
    let raw = std::fs::read(&path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let gz_path = temp_file("sample.feed", &gz.finish().unwrap());
    let server = replay_server(&gz_path, Speed::Max);
    let second: Vec<Value> = collect(&server, "").await.iter().map(comparable).collect();
    server.shutdown();
    let _ = std::fs::remove_file(&gz_path);
    // Same seq and values, tick for tick.
    assert_eq!(first.len(), 400);
    assert_eq!(first, second);
}

#[test]
fn unknown_format_is_a_startup_error_naming_the_file() {
    let path = temp_file("notafeed.bin", b"\x00\x01binary garbage");
    let err = tickwire::start(&replay_config(&path, Speed::Max)).err().expect("start fails");
    let msg = err.to_string();
    assert!(matches!(err, StartError::Source(_)), "{msg}");
    assert!(msg.contains(&*path.to_string_lossy()) && msg.contains("unknown feed format"), "{msg}");
    let _ = std::fs::remove_file(&path);
    let missing = Path::new("/nonexistent/feed.jsonl");
    let err = tickwire::start(&replay_config(missing, Speed::Max)).err().expect("start fails");
    assert!(err.to_string().contains("/nonexistent/feed.jsonl"), "{err}");
}

/// Reads the updates of one pass of a looping replay, up to the `shutdown`
/// that ends the epoch, and checks the close code.
async fn one_pass(c: &mut Client) -> Vec<Value> {
    let mut updates = Vec::new();
    let deadline = tokio::time::Instant::now() + REPLAY_TIMEOUT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no shutdown in time");
        let m = c.next().await;
        match m["type"].as_str().unwrap() {
            "t" | "q" | "snapshot" => updates.push(m),
            "heartbeat" | "status" => {}
            "shutdown" => {
                let after = m["reconnect_after_ms"].as_u64().unwrap();
                assert!(after < 1000, "{m}");
                break;
            }
            other => panic!("unexpected {other}: {m}"),
        }
    }
    // 1012: service restart, reconnect for the new numbering.
    assert_eq!(c.closed().await, Some(1012));
    updates
}

#[tokio::test]
async fn loop_restarts_under_a_new_epoch_and_sessions_reconnect() {
    // Three trades 10 ms apart, looping at real pace.
    let t0: u64 = 1_764_167_400_000_000_000;
    let text: String = (0..3u64)
        .map(|k| {
            format!(
                "{{\"type\":\"t\",\"sym\":\"LOOP\",\"t\":{},\"p\":1{k},\"s\":{k}}}\n",
                t0 + k * 10_000_000
            )
        })
        .collect();
    let path = temp_file("loop.jsonl", text.as_bytes());
    let mut config = replay_config(&path, Speed::Factor(1.0));
    if let SourceChoice::Replay(r) = &mut config.source {
        r.looped = true;
    }
    let server = tickwire::start(&config).unwrap();
    let mut first = Client::connect(server.local_addr(), "").await;
    first.subscribe(json!({"symbols": ["LOOP"], "mode": "all"})).await;
    // The whole first pass arrives before the epoch ends.
    let got = one_pass(&mut first).await;
    let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3], "{got:?}");
    let prices: Vec<f64> = got.iter().map(|m| m["p"].as_f64().unwrap()).collect();
    assert_eq!(prices, [10.0, 11.0, 12.0]);
    // A client that reconnects is in a new epoch, numbered from 1 again,
    // and is told again when that pass ends.
    let mut epochs = vec![first.welcome["epoch"].clone()];
    for _ in 0..2 {
        let mut c = Client::connect(server.local_addr(), "").await;
        assert!(!epochs.contains(&c.welcome["epoch"]), "{} in {epochs:?}", c.welcome);
        epochs.push(c.welcome["epoch"].clone());
        c.subscribe(json!({"symbols": ["LOOP"], "mode": "all"})).await;
        let got = one_pass(&mut c).await;
        // Joined mid-pass: a snapshot maybe, then contiguous seqs up to 3.
        let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
        assert!(seqs.last().is_none_or(|&s| s == 3), "{got:?}");
    }
    server.shutdown();
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn from_and_to_select_a_time_window() {
    // Trades at 09:29:59, 09:30:00 ... 09:30:04 UTC on some day.
    let day: u64 = 20_418 * 86_400_000_000_000;
    let at = |s: u64| day + (9 * 3600 + 29 * 60 + 59 + s) * 1_000_000_000;
    let text: String = (0..6u64)
        .map(|k| {
            format!(
                "{{\"type\":\"t\",\"sym\":\"WIN\",\"t\":{},\"p\":{},\"s\":1}}\n",
                at(k),
                100 + k
            )
        })
        .collect();
    let path = temp_file("window.jsonl", text.as_bytes());
    let mut config = replay_config(&path, Speed::Max);
    if let SourceChoice::Replay(r) = &mut config.source {
        r.window = Window { from: Some(34_200_000_000_000), to: Some(34_202_000_000_000) };
    }
    let server = tickwire::start(&config).unwrap();
    let got = collect(&server, "").await;
    let prices: Vec<f64> = got.iter().map(|m| m["p"].as_f64().unwrap()).collect();
    // 09:30:00 to 09:30:02 inclusive.
    assert_eq!(prices, [101.0, 102.0, 103.0]);
    let (_, body) = http_get(server.local_addr(), "/metrics").await;
    assert_eq!(metric(&body, "tickwire_feed_bad_records_total"), 0);
    server.shutdown();
    let _ = std::fs::remove_file(&path);
}

/// `config` with its replay's settings changed by `tweak`.
fn with_replay(mut config: Config, tweak: impl FnOnce(&mut ReplayConfig)) -> Config {
    if let SourceChoice::Replay(r) = &mut config.source {
        tweak(r);
    }
    config
}

/// A new directory under the temp dir, removed on drop: ITCH files need
/// names of their own (NASDAQ's), and two tests may want the same one.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tickwire-{}-{n}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The ITCH sample copied under `name` (NASDAQ's names carry the date)
/// into a directory of its own; the directory goes when the first value
/// is dropped.
pub(crate) fn itch_sample_as(name: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(&format!("itch-{name}"));
    let path = dir.0.join(name);
    std::fs::copy(feed("sample.itch"), &path).unwrap();
    (dir, path)
}

/// The ITCH timestamp (ns since midnight) of every tick of the ITCH sample,
/// in the order a replay sends them.
fn itch_sample_timestamps() -> Vec<u64> {
    let bytes = std::fs::read(feed("sample.itch")).unwrap();
    let mut norm = Normalizer::new(std::sync::Arc::new(SymbolTable::new(64)));
    let mut ticks = Vec::new();
    for (_, frame) in Frames::new(&bytes) {
        norm.apply(frame.unwrap(), &mut ticks).unwrap();
    }
    ticks.iter().map(|t| t.src_ns).collect()
}

/// Every update's `t` in ns (the session asks for `time_unit=ns`).
async fn times_ns(config: &Config) -> Vec<u64> {
    let server = tickwire::start(config).unwrap();
    let got = collect(&server, "time_unit=ns").await;
    server.shutdown();
    got.iter().map(|m| m["t"].as_u64().unwrap()).collect()
}

const HOUR_NS: u64 = 3_600_000_000_000;
const S: u64 = 1_000_000_000;

#[tokio::test]
async fn itch_times_are_the_file_date_in_new_york_as_utc() {
    let stamps = itch_sample_timestamps();
    assert!(stamps.len() > 3000 && stamps[0] >= 9 * HOUR_NS, "{}", stamps.len());
    let dir = TempDir::new("itch-dates");
    let sample = std::fs::read(feed("sample.itch")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &sample).unwrap();
    let gz = gz.finish().unwrap();
    // (file name, content, UTC midnight of the date in seconds, UTC offset
    // of New York that day in hours). The Friday before and the Monday after
    // the spring change to daylight time (Sunday 2024-03-10) are the edge.
    let cases = [
        ("01302024.NASDAQ_ITCH50", &sample, 1_706_572_800u64, 5u64),
        ("07152024.NASDAQ_ITCH50.gz", &gz, 1_721_001_600, 4),
        ("03082024.NASDAQ_ITCH50", &sample, 1_709_856_000, 5),
        ("03112024.NASDAQ_ITCH50", &sample, 1_710_115_200, 4),
    ];
    for (name, bytes, utc_midnight_s, offset_h) in cases {
        let path = dir.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        // --speed max: no collapsing to the time a batch was read.
        let got = times_ns(&replay_config(&path, Speed::Max)).await;
        let midnight = utc_midnight_s * S + offset_h * HOUR_NS;
        let want: Vec<u64> = stamps.iter().map(|ts| midnight + ts).collect();
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{name}: update {i}");
        }
    }
}

#[tokio::test]
async fn the_date_flag_wins_and_no_date_is_1970() {
    let stamps = itch_sample_timestamps();
    let (_dir, path) = itch_sample_as("01302024.NASDAQ_ITCH50");
    // --date 2024-07-15 over the name's January date: EDT, UTC-4.
    let config = with_replay(replay_config(&path, Speed::Max), |r| {
        r.date = Some(jiff::civil::date(2024, 7, 15));
    });
    let got = times_ns(&config).await;
    assert_eq!(got[0], 1_721_001_600 * S + 4 * HOUR_NS + stamps[0]);
    assert_eq!(got.last(), Some(&(1_721_001_600 * S + 4 * HOUR_NS + stamps[stamps.len() - 1])));
    // A name without a date, and no --date: 1970-01-01 in New York (EST).
    let got = times_ns(&replay_config(&feed("sample.itch"), Speed::Max)).await;
    let want: Vec<u64> = stamps.iter().map(|ts| 5 * HOUR_NS + ts).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn max_speed_keeps_times_distinct_and_ordered() {
    // The sample's 400 times are distinct and rising; a replay at max
    // sends them as written, each its own.
    let path = feed("sample.jsonl");
    let file: Vec<u64> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["t"].as_u64().unwrap())
        .collect();
    assert!(file.windows(2).all(|w| w[0] < w[1]));
    let got = times_ns(&replay_config(&path, Speed::Max)).await;
    assert_eq!(got, file);
}

#[tokio::test]
async fn a_time_shift_keeps_every_difference() {
    let path = feed("sample.jsonl");
    let file = times_ns(&replay_config(&path, Speed::Max)).await;
    // A duration: every time moves by exactly that much.
    let back = with_replay(replay_config(&path, Speed::Max), |r| {
        r.shift = TimeShift::By(-36 * HOUR_NS as i64 - 1);
    });
    let got = times_ns(&back).await;
    let want: Vec<u64> = file.iter().map(|t| t - 36 * HOUR_NS - 1).collect();
    assert_eq!(got, want);
    // `now`: the first update reads the wall clock at the start of the
    // replay, and every difference is the file's.
    let before = tickwire::tick::now_ns();
    let now = with_replay(replay_config(&path, Speed::Max), |r| r.shift = TimeShift::Now);
    let got = times_ns(&now).await;
    assert!((before..=tickwire::tick::now_ns()).contains(&got[0]), "{} not now", got[0]);
    let diffs = |ts: &[u64]| ts.iter().map(|t| t - ts[0]).collect::<Vec<u64>>();
    assert_eq!(diffs(&got), diffs(&file));
}

#[tokio::test]
async fn shifted_to_now_at_speed_1_t_is_the_schedule() {
    // Ten trades 20 ms apart, recorded a year before the test runs.
    let t0 = tickwire::tick::now_ns() - 365 * 24 * HOUR_NS;
    let text: String = (0..10u64)
        .map(|k| {
            format!(
                "{{\"type\":\"t\",\"sym\":\"NOW\",\"t\":{},\"p\":1,\"s\":{k}}}\n",
                t0 + k * 20_000_000
            )
        })
        .collect();
    let path = temp_file("shift-now.jsonl", text.as_bytes());
    let config =
        with_replay(replay_config(&path, Speed::Factor(1.0)), |r| r.shift = TimeShift::Now);
    let server = tickwire::start(&config).unwrap();
    let got = collect(&server, "stamps=1&time_unit=us").await;
    server.shutdown();
    let _ = std::fs::remove_file(&path);
    assert_eq!(got.len(), 10);
    for (k, m) in got.iter().enumerate() {
        let (t, ti) = (m["t"].as_i64().unwrap(), m["ti"].as_i64().unwrap());
        // 20 ms apart as recorded, and each published when it read: `t`
        // is the tick's due time on the server's clock.
        assert_eq!(t - got[0]["t"].as_i64().unwrap(), k as i64 * 20_000, "{m}");
        let late = ti - t;
        assert!((0..150_000).contains(&late), "tick {k} published {late} µs after its t");
    }
}

#[tokio::test]
async fn the_window_of_an_itch_file_reads_new_york_times_of_day() {
    // --from 09:30:01 --to 09:30:02 on a July file (EDT): ticks from 13:30:01
    // to 13:30:02 UTC, exactly those of the sample in that second.
    let stamps = itch_sample_timestamps();
    let (_dir, path) = itch_sample_as("07152024.NASDAQ_ITCH50");
    let (from, to) = (34_201 * S, 34_202 * S);
    let config = with_replay(replay_config(&path, Speed::Max), |r| {
        r.window = Window { from: Some(from), to: Some(to) };
    });
    let got = times_ns(&config).await;
    let midnight = 1_721_001_600 * S + 4 * HOUR_NS;
    let want: Vec<u64> =
        stamps.iter().filter(|&&ts| (from..=to).contains(&ts)).map(|ts| midnight + ts).collect();
    assert!(want.len() > 100, "{}", want.len());
    assert_eq!(got, want);
}
