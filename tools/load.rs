//! tickwire-load: a small load client for a tickwire server.
//!
//! Opens `--clients` WebSocket sessions (`?stamps=1&time_unit=ns`), each
//! subscribes once, then reads continuously. After `--warmup` (not
//! measured) it measures for `--duration` and prints one table: updates,
//! frames and payload bytes delivered per second (summed over clients),
//! messages per frame, `cseq` gaps, `overflow` losses, conflation (`cf`),
//! and two latencies per update: end-to-end (receive wall clock minus the
//! source time `t`) and send-to-receive (receive wall clock minus the
//! server's send stamp `to`).
//!
//! Limits, read the numbers with them in mind:
//! - Latencies subtract wall-clock stamps, so client and server must share
//!   the clock: run both on one machine. They then share its cores too, and
//!   the client competes with the server for CPU (see "client cpu").
//! - The receive time is taken once per frame when the client task gets to
//!   parse it, so it includes the client's own queueing and scheduling
//!   delay; a saturated client (cpu near 100% x threads) inflates the
//!   latencies and caps the throughput it can observe.
//! - `to` is stamped by the server when it builds the frame, not when the
//!   kernel sends it; send-to-receive covers socket buffers, the loopback
//!   and the client, not the server's own batching.
//! - `cseq` gaps are counted over the whole session (warm-up included);
//!   every other number covers the measured window only. Frames still in
//!   flight when the window closes are not read.
//!
//! With `--binary` the sessions offer `tickwire.v1.bin` and decode its binary
//! market-data frames (header `first_cseq`, fixed records) with the
//! library's reference decoder; the checks and numbers are the same.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use simd_json::prelude::*;
use tickwire::protocol::binary;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(3);
/// Largest latency the histograms hold (larger values saturate): 100 s.
const HIST_MAX_NS: u64 = 100_000_000_000;

/// Load client for tickwire: measures delivered rate and latency.
#[derive(Debug, Parser)]
#[command(name = "tickwire-load", version, about, long_about = None)]
struct Args {
    /// WebSocket URL of the server (`?stamps=1&time_unit=ns` is appended).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Number of WebSocket connections.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Symbols to subscribe to: `*` for all, else a comma-separated list.
    #[arg(long, default_value = "*")]
    symbols: String,
    /// Subscription mode.
    #[arg(long, default_value = "all", value_parser = ["all", "latest"])]
    mode: String,
    /// `max_hz` of the subscription (only meaningful in mode latest).
    #[arg(long)]
    max_hz: Option<f64>,
    /// Time before measuring (e.g. 2s, 500ms, 1m; a bare number is seconds).
    #[arg(long, default_value = "2s", value_parser = tickwire::config::parse_duration)]
    warmup: Duration,
    /// Length of the measured window.
    #[arg(long, default_value = "10s", value_parser = tickwire::config::parse_duration)]
    duration: Duration,
    /// Worker threads of the client runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also print the results as one JSON line.
    #[arg(long)]
    json: bool,
    /// Use the binary subprotocol `tickwire.v1.bin` (market data in binary
    /// frames) instead of JSON.
    #[arg(long)]
    binary: bool,
}

/// Plain counters of one client (`Default` is all zero), summed after the run.
#[derive(Default)]
struct Counts {
    updates: u64,
    frames: u64,
    bytes: u64,
    msgs: u64,
    gaps: u64,
    missing: u64,
    seq_jumps: u64,
    overflows: u64,
    lost: u64,
    conflated: u64,
    slow: u64,
    rejected: u64,
    bad: u64,
}

macro_rules! add_fields {
    ($a:expr, $b:expr; $($f:ident),*) => { $($a.$f += $b.$f;)* };
}

/// One client's results; each task owns its own, so the hot path takes no locks.
struct Stats {
    n: Counts,
    e2e: Histogram<u64>,
    s2r: Histogram<u64>,
    error: Option<String>,
}

impl Stats {
    fn new() -> Stats {
        let h = || Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("histogram bounds");
        Stats { n: Counts::default(), e2e: h(), s2r: h(), error: None }
    }

    fn merge(&mut self, o: &Stats) {
        add_fields!(self.n, o.n; updates, frames, bytes, msgs, gaps, missing, seq_jumps, overflows,
            lost, conflated, slow, rejected, bad);
        self.e2e.add(&o.e2e).expect("same bounds");
        self.s2r.add(&o.s2r).expect("same bounds");
    }
}

/// Per-session state of the reader.
struct Session {
    cseq: u64,
    subscribed: bool,
    buf: Vec<u8>,
    /// Last `seq` seen per symbol, quotes and trades.
    seqs: [HashMap<String, u64>; 2],
    /// The same for binary records, by symbol id.
    seqs_by_id: [HashMap<u32, u64>; 2],
}

/// Checks that `seq` rises by exactly `step` (`cf`, or 1) for a symbol;
/// `step` 0 (an `overflow`) only moves the position.
fn check_seq(last_seq: &mut HashMap<String, u64>, sym: &str, seq: u64, step: u64) -> bool {
    match last_seq.get_mut(sym) {
        Some(last) => std::mem::replace(last, seq) + step == seq || step == 0,
        None => {
            last_seq.insert(sym.to_string(), seq);
            true
        }
    }
}

/// [`check_seq`] for binary records, keyed by symbol id.
fn check_seq_id(last_seq: &mut HashMap<u32, u64>, sym: u32, seq: u64, step: u64) -> bool {
    match last_seq.insert(sym, seq) {
        Some(last) => last + step == seq || step == 0,
        None => true,
    }
}

/// Counts a `cseq` run of `count` messages starting at `first`.
fn check_cseq(n: &mut Counts, cseq: &mut u64, first: u64, count: u64) {
    if first != *cseq + 1 {
        n.gaps += 1;
        n.missing += first.saturating_sub(*cseq + 1);
    }
    *cseq = first + count.saturating_sub(1);
}

/// Reads one binary frame (`tickwire.v1.bin`); `measured` is false during warm-up.
fn on_binary_frame(st: &mut Stats, s: &mut Session, frame: &[u8], now: u64, measured: bool) {
    let Ok(h) = binary::decode_header(frame) else {
        st.n.bad += 1;
        return;
    };
    let n = &mut st.n;
    check_cseq(n, &mut s.cseq, h.first_cseq, h.count.into());
    if measured {
        n.frames += 1;
        n.bytes += frame.len() as u64;
        n.msgs += u64::from(h.count);
    }
    for i in 0..h.count as usize {
        let r = binary::decode_record(frame, &h, i);
        let ch = usize::from(r.ch == 1);
        match r.kind {
            1 | 2 => {
                let snapshot = r.flags & binary::RECORD_SNAPSHOT != 0;
                let step = if snapshot { 0 } else { r.cf };
                if !check_seq_id(&mut s.seqs_by_id[ch], r.sym, r.seq, step) {
                    n.seq_jumps += 1;
                }
                if measured && !snapshot {
                    n.updates += 1;
                    n.conflated += r.cf.saturating_sub(1);
                    st.e2e.saturating_record(now.saturating_sub(r.t));
                    if let Some(to) = r.to {
                        st.s2r.saturating_record(now.saturating_sub(to));
                    }
                }
            }
            3 => {
                check_seq_id(&mut s.seqs_by_id[ch], r.sym, r.seq, 0);
                if measured {
                    n.overflows += 1;
                    n.lost += r.p2 as u64;
                }
            }
            _ => {}
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Parses one server frame; `measured` is false during warm-up.
fn on_frame(st: &mut Stats, s: &mut Session, text: &[u8], now: u64, measured: bool) {
    s.buf.clear();
    s.buf.extend_from_slice(text);
    let Ok(v) = simd_json::to_borrowed_value(&mut s.buf) else {
        st.n.bad += 1;
        return;
    };
    let Some(arr) = v.as_array() else {
        st.n.bad += 1;
        return;
    };
    let n = &mut st.n;
    if measured {
        n.frames += 1;
        n.bytes += text.len() as u64;
        n.msgs += arr.len() as u64;
    }
    for m in arr {
        match m.get("cseq").and_then(|c| c.as_u64()) {
            Some(c) => check_cseq(n, &mut s.cseq, c, 1),
            None => n.bad += 1,
        }
        let u64_of = |k: &str| m.get(k).and_then(|v| v.as_u64());
        let sym = m.get("sym").and_then(|v| v.as_str()).unwrap_or("");
        match m.get("type").and_then(|t| t.as_str()).unwrap_or("") {
            kind @ ("q" | "t") => {
                let cf = u64_of("cf").unwrap_or(1);
                let seq = u64_of("seq").unwrap_or(0);
                if !check_seq(&mut s.seqs[usize::from(kind == "t")], sym, seq, cf) {
                    n.seq_jumps += 1;
                }
                if measured {
                    n.updates += 1;
                    n.conflated += cf.saturating_sub(1);
                    if let Some(t) = u64_of("t") {
                        st.e2e.saturating_record(now.saturating_sub(t));
                    }
                    if let Some(to) = u64_of("to") {
                        st.s2r.saturating_record(now.saturating_sub(to));
                    }
                }
            }
            "overflow" => {
                let ch = usize::from(m.get("ch").and_then(|v| v.as_str()) == Some("trades"));
                check_seq(&mut s.seqs[ch], sym, u64_of("to_seq").unwrap_or(0), 0);
                if measured {
                    n.overflows += 1;
                    n.lost += u64_of("lost").unwrap_or(0);
                }
            }
            "subscribed" => {
                s.subscribed = true;
                n.rejected +=
                    m.get("rejected").and_then(|r| r.as_array()).map_or(0, |r| r.len() as u64);
            }
            "slow" => n.slow += 1,
            "error" | "shutdown" if st.error.is_none() => {
                let mut t = m.encode();
                t.truncate(200);
                st.error = Some(format!("server sent {t}"));
            }
            _ => {}
        }
    }
}

/// Connects (offering `tickwire.v1.bin` when `binary`) and reads the
/// welcome; checks the selected subprotocol and that the session uses ns.
async fn connect(url: String, binary: bool) -> Result<Ws, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    const BIN: &str = "tickwire.v1.bin";
    let fut = async {
        let mut req = url.into_client_request().map_err(|e| format!("url: {e}"))?;
        if binary {
            req.headers_mut().insert("Sec-WebSocket-Protocol", BIN.parse().expect("header value"));
        }
        let (mut ws, resp) =
            tokio_tungstenite::connect_async(req).await.map_err(|e| format!("connect: {e}"))?;
        let selected = resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok());
        if binary && selected != Some(BIN) {
            return Err(format!("the server did not select {BIN} (got {selected:?})"));
        }
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let ok = t.contains("\"welcome\"") && t.contains("\"time_unit\":\"ns\"");
                    return if ok { Ok(ws) } else { Err(format!("unexpected first frame: {t}")) };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("reading welcome: {e}")),
                None => return Err("closed before welcome".into()),
            }
        }
    };
    timeout(CONNECT_TIMEOUT, fut).await.map_err(|_| "connect timed out".to_string())?
}

/// Subscribes, then reads until `end`.
async fn run_client(mut ws: Ws, subscribe: String, start: Instant, end: Instant) -> Stats {
    let mut st = Stats::new();
    let buf = Vec::with_capacity(64 * 1024);
    let mut s = Session {
        cseq: 0,
        subscribed: false,
        buf,
        seqs: Default::default(),
        seqs_by_id: Default::default(),
    };
    if let Err(e) = ws.send(Message::Text(subscribe.into())).await {
        st.error = Some(format!("sending subscribe: {e}"));
        return st;
    }
    // `timeout_at` alone never fires while frames are always ready (a
    // backlog), so the deadline is also checked before every read.
    while Instant::now() < end {
        let msg = match timeout_at(end, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(m))) => m,
            Ok(e) => {
                let e = match e.and_then(Result::err) {
                    Some(e) => format!("read: {e}"),
                    None => "connection closed by server".into(),
                };
                st.error.get_or_insert(e);
                return st;
            }
        };
        match msg {
            Message::Text(t) => {
                let measured = Instant::now() >= start;
                on_frame(&mut st, &mut s, t.as_bytes(), now_ns(), measured);
            }
            Message::Binary(b) => {
                let measured = Instant::now() >= start;
                on_binary_frame(&mut st, &mut s, &b, now_ns(), measured);
            }
            Message::Close(f) => {
                st.error.get_or_insert_with(|| format!("closed by server: {f:?}"));
                return st;
            }
            _ => {}
        }
    }
    if !s.subscribed {
        st.error.get_or_insert_with(|| "no subscribed reply".into());
    }
    let _ = timeout(Duration::from_millis(500), ws.close(None)).await;
    st
}

/// CPU seconds (user + system) used by this process so far; Linux only.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0) // USER_HZ is 100 on Linux
}

fn subscribe_request(a: &Args) -> String {
    let syms: Vec<String> = if a.symbols.trim() == "*" {
        vec!["\"*\"".into()]
    } else {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        a.symbols
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| format!("\"{}\"", esc(s)))
            .collect()
    };
    let mode = &a.mode;
    let hz = a.max_hz.map(|h| format!(",\"max_hz\":{h}")).unwrap_or_default();
    format!(
        "{{\"type\":\"subscribe\",\"id\":1,\"symbols\":[{}],\"mode\":\"{mode}\"{hz},\"snapshot\":false}}",
        syms.join(",")
    )
}

fn main() -> ExitCode {
    let a = Args::parse();
    let bad_hz = a.max_hz.is_some_and(|h| !(h.is_finite() && h > 0.0));
    if a.clients == 0 || a.threads == 0 || a.duration.is_zero() || bad_hz {
        eprintln!("tickwire-load: --clients, --threads, --duration and --max-hz must be > 0");
        return ExitCode::from(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let sep = if a.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}stamps=1&time_unit=ns", a.url);
    let subscribe = subscribe_request(&a);
    let (total, failures, cpu, per_client, connected) = rt.block_on(async {
        let conns: Vec<_> =
            (0..a.clients).map(|_| tokio::spawn(connect(url.clone(), a.binary))).collect();
        let mut failures: Vec<String> = Vec::new();
        let mut socks = Vec::new();
        for c in conns {
            match c.await {
                Ok(Ok(ws)) => socks.push(ws),
                Ok(Err(e)) => failures.push(e),
                Err(e) => failures.push(format!("connect task: {e}")),
            }
        }
        let connected = socks.len();
        let start = Instant::now() + a.warmup;
        let end = start + a.duration;
        let tasks: Vec<_> = socks
            .into_iter()
            .map(|ws| tokio::spawn(run_client(ws, subscribe.clone(), start, end)))
            .collect();
        tokio::time::sleep_until(start).await;
        let cpu0 = cpu_seconds();
        tokio::time::sleep_until(end).await;
        let cpu = cpu0.zip(cpu_seconds()).map(|(c0, c1)| (c1 - c0) / a.duration.as_secs_f64());
        let mut total = Stats::new();
        let mut per_client = Vec::new();
        for mut t in tasks {
            match timeout_at(end + GRACE, &mut t).await {
                Ok(Ok(st)) => {
                    total.merge(&st);
                    per_client.push(st.n.updates);
                    if let Some(e) = st.error {
                        failures.push(e);
                    }
                }
                Ok(Err(e)) => failures.push(format!("client task: {e}")),
                Err(_) => {
                    t.abort();
                    failures.push("client did not finish in time".into());
                }
            }
        }
        (total, failures, cpu, per_client, connected)
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    report(&a, &total, &failures, cpu, &per_client, connected);
    if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn report(a: &Args, st: &Stats, fails: &[String], cpu: Option<f64>, per: &[u64], conn: usize) {
    let (t, secs) = (&st.n, a.duration.as_secs_f64());
    let per_s = |n: u64| format!("{:.0}", n as f64 / secs);
    let mpf = if t.frames == 0 { 0.0 } else { t.msgs as f64 / t.frames as f64 };
    let rows: Vec<(&str, String)> = vec![
        ("binary", a.binary.to_string()),
        ("clients", a.clients.to_string()),
        ("connected", conn.to_string()),
        ("failed", fails.len().to_string()),
        ("window_s", format!("{secs}")),
        ("updates_per_s", per_s(t.updates)),
        ("client_min_updates_per_s", per_s(per.iter().copied().min().unwrap_or(0))),
        ("client_max_updates_per_s", per_s(per.iter().copied().max().unwrap_or(0))),
        ("frames_per_s", per_s(t.frames)),
        ("bytes_per_s", per_s(t.bytes)),
        ("msgs_per_frame", format!("{mpf:.2}")),
        ("cseq_gaps", t.gaps.to_string()),
        ("cseq_missing", t.missing.to_string()),
        ("seq_jumps", t.seq_jumps.to_string()),
        ("overflows", t.overflows.to_string()),
        ("overflow_lost", t.lost.to_string()),
        ("conflated", t.conflated.to_string()),
        ("slow_msgs", t.slow.to_string()),
        ("rejected_symbols", t.rejected.to_string()),
        ("malformed", t.bad.to_string()),
        ("client_cpu", cpu.map_or("null".into(), |c| format!("{c:.2}"))),
    ];
    for (k, v) in &rows {
        println!("{k:<26}{v}");
    }
    let qs = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0)];
    let ms = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1e6 }
    };
    let lats = [("e2e_ms", &st.e2e), ("send_to_recv_ms", &st.s2r)];
    println!("{:<26}{}", "latency (ms)", qs.map(|(n, _)| format!("{n:>10}")).join(""));
    for (name, h) in lats {
        println!("{name:<26}{}", qs.map(|(_, q)| format!("{:>10.3}", ms(h, q))).join(""));
    }
    for f in fails.iter().take(5) {
        eprintln!("tickwire-load: client failed: {f}");
    }
    if fails.len() > 5 {
        eprintln!("tickwire-load: ... {} failures in all", fails.len());
    }
    if a.json {
        let mut out: Vec<String> = rows.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        for (name, h) in lats {
            let v = qs.map(|(n, q)| format!("\"{n}\":{:.3}", ms(h, q))).join(",");
            out.push(format!("\"{name}\":{{{v}}}"));
        }
        println!("{{{}}}", out.join(","));
    }
}
