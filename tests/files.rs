//! The file tools and every recorded format end to end: ITCH -> capture ->
//! JSON lines -> capture keeps every tick; a replay of each delivers them
//! all over WebSocket in order; `tickwire inspect`, `convert` and `record`
//! as a user runs them, including a recorder killed mid-write.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tickwire::capture::CaptureReader;
use tickwire::feed::replay::{self, Speed};
use tickwire::files::{self, OutFormat};
use tickwire::record_reader::RecordReader;
use tickwire::tick::{Body, SymbolTable, Tick};

use crate::cli::{BIN, Proc};
use crate::replay::{collect, itch_sample_as, replay_server};
use crate::util::TIMEOUT;

/// A file in `feeds/`.
fn feed(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("feeds").join(name)
}

/// A path under the temp dir unique to this process and `name`, removed on drop.
struct Temp(PathBuf);

impl Temp {
    fn new(name: &str) -> Temp {
        Temp(std::env::temp_dir().join(format!("tickwire-files-{}-{name}", std::process::id())))
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A tick as names and values, independent of the table it was read with.
#[derive(Debug, Clone, PartialEq)]
struct Named {
    sym: String,
    src_ns: u64,
    body: Body,
}

/// Every tick of a feed file, in order; panics on a skipped record.
fn read_all(path: &Path) -> Vec<Named> {
    let table = Arc::new(SymbolTable::new(1 << 16));
    let mut reader = replay::open_reader(path, &table, None).unwrap();
    let mut out = Vec::new();
    while let Some(r) = reader.next() {
        let t: Tick = r.unwrap_or_else(|s| panic!("{}: skipped {s:?}", path.display()));
        let sym = table.name(t.sym).unwrap().to_string();
        out.push(Named { sym, src_ns: t.src_ns, body: t.body });
    }
    out
}

/// What a mode-all subscriber should receive for `ticks`: kind, symbol,
/// per-stream seq from 1, and the values as JSON numbers.
fn expected(ticks: &[Named]) -> Vec<Value> {
    let mut seqs = std::collections::HashMap::new();
    ticks
        .iter()
        .map(|t| {
            let kind = if matches!(t.body, Body::Quote { .. }) { "q" } else { "t" };
            let seq = seqs.entry((kind, t.sym.clone())).or_insert(0u64);
            *seq += 1;
            match t.body {
                Body::Quote { bid, bid_size, ask, ask_size } => serde_json::json!({
                    "type": "q", "sym": t.sym, "seq": *seq, "bp": bid.to_f64(),
                    "bs": bid_size, "ap": ask.to_f64(), "as": ask_size
                }),
                Body::Trade { price, size } => serde_json::json!({
                    "type": "t", "sym": t.sym, "seq": *seq, "p": price.to_f64(), "s": size
                }),
                Body::Bar(_) => unreachable!("files hold no bars"),
            }
        })
        .collect()
}

/// The fields of a received update that [`expected`] lists.
fn comparable(m: &Value) -> Value {
    let keys: &[&str] = if m["type"] == "q" {
        &["type", "sym", "seq", "bp", "bs", "ap", "as"]
    } else {
        &["type", "sym", "seq", "p", "s"]
    };
    let mut out = serde_json::Map::new();
    for k in keys {
        let v = &m[*k];
        // Prices compare as numbers (`10` and `10.0` are the same price).
        let v = if v.is_f64() || v.is_u64() && ["bp", "ap", "p"].contains(k) {
            serde_json::json!(v.as_f64().unwrap())
        } else {
            v.clone()
        };
        out.insert(k.to_string(), v);
    }
    Value::Object(out)
}

#[tokio::test]
async fn itch_to_capture_to_json_lines_to_capture_keeps_every_tick_and_replays() {
    // The ITCH sample under a NASDAQ file name: its ticks carry full UTC
    // times of 2024-01-30, which every format keeps to the nanosecond.
    let (_dir, itch) = itch_sample_as("01302024.NASDAQ_ITCH50");
    let cap = Temp::new("rt.twc");
    let jsonl = Temp::new("rt.jsonl");
    let cap2 = Temp::new("rt2.twc");
    files::convert(&itch, &cap.0, OutFormat::Capture, None).unwrap();
    files::convert(&cap.0, &jsonl.0, OutFormat::JsonLines, None).unwrap();
    let c = files::convert(&jsonl.0, &cap2.0, OutFormat::Capture, None).unwrap();
    assert_eq!(c.skips.count, 0);
    let want = read_all(&itch);
    assert!(want.len() > 3000, "the ITCH sample yields {} ticks", want.len());
    // 09:30:00.00001 in New York (EST) is 14:30:00.00001 UTC.
    assert_eq!(want[0].src_ns, 1_706_625_000_000_010_000);
    for path in [&cap.0, &jsonl.0, &cap2.0] {
        let got = read_all(path);
        assert_eq!(got.len(), want.len(), "{}", path.display());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{} tick {i}", path.display());
        }
    }
    // Each format replays over WebSocket: every tick, in order, seq
    // contiguous from 1 per stream (the client checks cseq too).
    let want = expected(&want);
    for path in [&itch, &cap.0, &jsonl.0, &cap2.0] {
        let server = replay_server(path, Speed::Max);
        let got: Vec<Value> = collect(&server, "").await.iter().map(comparable).collect();
        server.shutdown();
        assert_eq!(got.len(), want.len(), "{}", path.display());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, &comparable(w), "{} update {i}", path.display());
        }
    }
}

/// Runs `tickwire <args>` to completion; returns (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let mut p = Proc::spawn(Command::new(BIN).args(args));
    let status = p.wait_exit(TIMEOUT).expect("tickwire exits in time");
    let (out, err) = p.output();
    (status.success(), out, err)
}

#[test]
fn inspect_summarizes_each_format() {
    let itch = feed("sample.itch");
    let (ok, out, err) = run(&["inspect", itch.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("format    NASDAQ ITCH 5.0"), "{out}");
    // No date in the name: 1970-01-01 in New York, said so, and the times
    // as dates, in UTC and on the exchange's clock.
    assert!(out.contains("date      1970-01-01 in America/New_York (no date:"), "{out}");
    assert!(
        out.contains("time      1970-01-01 14:30:00.000010000 UTC to 1970-01-01 14:30:03."),
        "{out}"
    );
    assert!(out.contains("          1970-01-01 09:30:00.000010000 EST to "), "{out}");
    assert!(out.contains("symbols   8"), "{out}");
    // Messages by type, from the decoder's counters.
    assert!(out.contains("messages by type"), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("A ")), "{out}");
    // The capture of the same session says the same.
    let (ok, cap_out, err) = run(&["inspect", feed("sample.twc").to_str().unwrap()]);
    assert!(ok, "{err}");
    // It was converted with --date 2025-11-26 (tools/regen-feeds.sh).
    assert!(cap_out.contains("time      2025-11-26 14:30:00.000010000 UTC"), "{cap_out}");
    // --date gives the ITCH file its day: EDT in July.
    let (ok, out, err) = run(&["inspect", "--date", "2024-07-15", itch.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("date      2024-07-15 in America/New_York (from --date)"), "{out}");
    assert!(out.contains("time      2024-07-15 13:30:00.000010000 UTC"), "{out}");
    assert!(out.contains("          2024-07-15 09:30:00.000010000 EDT to "), "{out}");
    let ticks_line = |s: &str| s.lines().find(|l| l.starts_with("ticks")).unwrap().to_string();
    assert_eq!(ticks_line(&out), ticks_line(&cap_out));
    // Garbage is counted and located.
    let (ok, out, _) = run(&["inspect", feed("bad.jsonl").to_str().unwrap()]);
    assert!(ok);
    assert!(out.contains("9 records skipped"), "{out}");
    assert!(out.contains("line 2: not JSON"), "{out}");
    // Not a feed: a clear error and a failing exit.
    let (ok, _, err) = run(&["inspect", feed("README.md").to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("unknown feed format"), "{err}");
}

#[test]
fn convert_needs_a_known_output_format() {
    let out = Temp::new("out.xyz");
    let (ok, _, err) =
        run(&["convert", feed("sample.jsonl").to_str().unwrap(), out.0.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("--format"), "{err}");
    let (ok, _, err) = run(&[
        "convert",
        feed("sample.jsonl").to_str().unwrap(),
        out.0.to_str().unwrap(),
        "--format",
        "capture",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("400 ticks"), "{err}");
    assert_eq!(read_all(&out.0), read_all(&feed("sample.jsonl")));
}

#[test]
fn convert_writes_an_itch_file_with_its_full_times() {
    // An ITCH file without a date in its name, given one with --date: the
    // JSON lines hold UTC times of that day, every tick one for one.
    let out = Temp::new("dated.jsonl");
    let itch = feed("sample.itch");
    let args = ["convert", "--date", "2024-07-15", itch.to_str().unwrap(), out.0.to_str().unwrap()];
    let (ok, _, err) = run(&args);
    assert!(ok, "{err}");
    let got = read_all(&out.0);
    // Without --date the same file reads on 1970-01-01 (EST, UTC-5); the
    // July day is in daylight time (UTC-4).
    let undated = read_all(&itch);
    let shift = 1_721_001_600_000_000_000 + 4 * 3_600_000_000_000 - 5 * 3_600_000_000_000;
    let want: Vec<Named> =
        undated.into_iter().map(|t| Named { src_ns: t.src_ns + shift, ..t }).collect();
    assert_eq!(got, want);
    // 09:30:00.00001 EDT.
    assert_eq!(got[0].src_ns, 1_721_050_200_000_010_000);
}

#[test]
fn record_writes_a_capture_for_a_duration() {
    let out = Temp::new("rec.twc");
    let (ok, _, err) = run(&[
        "record",
        "--out",
        out.0.to_str().unwrap(),
        "--duration",
        "300ms",
        "--symbols",
        "20",
        "--rate",
        "5000",
    ]);
    assert!(ok, "{err}");
    let ticks = read_all(&out.0);
    // About 1,500 ticks; generous bounds for a loaded machine.
    assert!((100..3000).contains(&ticks.len()), "{} ticks", ticks.len());
    let mut names: Vec<&str> = ticks.iter().map(|t| t.sym.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 20);
    let info = CaptureReader::open(&out.0, Arc::new(SymbolTable::new(64))).unwrap().info();
    assert!(info.finished);
}

#[tokio::test]
async fn a_recorder_killed_mid_write_leaves_a_replayable_capture() {
    let out = Temp::new("killed.twc");
    let mut rec = Proc::spawn(Command::new(BIN).args([
        "record",
        "--out",
        out.0.to_str().unwrap(),
        "--symbols",
        "50",
        "--rate",
        "20000",
    ]));
    // Wait (bounded) until a few blocks are on disk, then SIGKILL it.
    let deadline = Instant::now() + TIMEOUT;
    while std::fs::metadata(&out.0).map_or(0, |m| m.len()) < 300_000 {
        assert!(Instant::now() < deadline, "the recorder wrote too little: {}", rec.stderr());
        assert!(rec.wait_exit(Duration::from_millis(20)).is_none(), "{}", rec.stderr());
    }
    rec.signal("KILL");
    rec.wait_exit(TIMEOUT).expect("killed");
    // Every complete block replays; at most the one in progress is reported.
    let mut reader = CaptureReader::open(&out.0, Arc::new(SymbolTable::new(64))).unwrap();
    let mut ticks = 0u64;
    let mut skipped = 0u64;
    while let Some(r) = reader.next() {
        match r {
            Ok(_) => ticks += 1,
            Err(_) => skipped += 1,
        }
    }
    let info = reader.info();
    assert!(!info.finished);
    assert!(ticks >= 4096, "{ticks} ticks");
    assert!(skipped <= 1, "{:?}", info.problems);
    // And it serves: a replay delivers exactly those ticks, then replay_done.
    let server = replay_server(&out.0, Speed::Max);
    let got = collect(&server, "").await;
    server.shutdown();
    assert_eq!(got.len() as u64, ticks);
}
