//! Issue 15's resume benchmark: N clients lose their connections at once,
//! stay away for a gap while the feed runs on, and reconnect at once. In
//! a `resume` round they subscribe again with `resume` (epoch and the last
//! `seq` of each stream); in a `fresh` round, as a client without resume
//! would, with a snapshot. Rounds alternate, on one server.
//!
//! Per round it reports the time from the reconnect to the `subscribed`
//! reply and to the first *live* update (one the server ingested after the
//! reconnect began: `ti` at or after it, stamps on), over all clients, and
//! checks every resumed stream: `recovered: true`, then `seq` one by one
//! from where it stopped into the live updates (mode all), nothing missed
//! and nothing twice.
//!
//! ```sh
//! cargo build --release -p tickwire -p tickwire-bench
//! target/release/resume-storm --server target/release/tickwire --clients 1000 --rounds 3
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Resume benchmark: a reconnect storm with and without `resume`.
#[derive(Parser, Debug)]
struct Args {
    /// The tickwire binary to start (`serve` on 127.0.0.1:0).
    #[arg(long, default_value = "target/release/tickwire")]
    server: String,
    /// Clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Symbols per client (drawn at random from the server's).
    #[arg(long, default_value_t = 5)]
    per_client: usize,
    /// The synthetic feed's symbols.
    #[arg(long, default_value_t = 1000)]
    symbols: usize,
    /// The synthetic feed's rate, updates per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// How long the clients stay away, ms.
    #[arg(long, default_value_t = 1000)]
    gap_ms: u64,
    /// Rounds of each kind (resume, fresh), alternating.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Client threads (each a current-thread runtime).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Extra arguments for `tickwire serve`.
    #[arg(last = true)]
    extra: Vec<String>,
}

/// How long any one step may take before the run fails.
const STEP: Duration = Duration::from_secs(30);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The server, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(args: &Args) -> Server {
        let mut child = Command::new(&args.server)
            .args(["serve", "--listen", "127.0.0.1:0", "--max-connections-per-ip", "100000"])
            .args(["--symbols", &args.symbols.to_string(), "--rate", &args.rate.to_string()])
            .args(&args.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", args.server));
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("the server's first line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("ws://"))
            .map(|w| w.trim_end_matches(')').to_string())
            .unwrap_or_else(|| panic!("no ws:// URL in {line:?}"));
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection and the messages of its last frame not read yet (a frame
/// holds one message or an array of them).
struct Conn {
    ws: Ws,
    pending: std::collections::VecDeque<Value>,
}

impl Conn {
    async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.expect("send");
    }
}

async fn next_json(c: &mut Conn) -> Value {
    loop {
        if let Some(v) = c.pending.pop_front() {
            return v;
        }
        let m = tokio::time::timeout(STEP, c.ws.next()).await.expect("a message in time");
        match m.expect("connection open").expect("a frame") {
            Message::Text(t) => match serde_json::from_str(&t).expect("JSON") {
                Value::Array(a) => c.pending.extend(a),
                v => return v,
            },
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

async fn connect(url: &str) -> (Conn, String) {
    let (ws, _) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::connect_async(format!("{url}?stamps=1&time_unit=ns")),
    )
    .await
    .expect("connected in time")
    .expect("connected");
    let mut ws = Conn { ws, pending: Default::default() };
    let welcome = next_json(&mut ws).await;
    let epoch =
        welcome["epoch"].as_str().unwrap_or_else(|| panic!("no epoch in {welcome}")).to_string();
    (ws, epoch)
}

/// One client's streams: the last `seq` of each (channel, symbol).
#[derive(Debug, Default, Clone)]
struct Streams(HashMap<(String, String), u64>);

impl Streams {
    fn resume_from(&self) -> Value {
        let mut from = serde_json::Map::new();
        for ((ch, sym), seq) in &self.0 {
            from.entry(ch.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("object")
                .insert(sym.clone(), json!(seq));
        }
        Value::Object(from)
    }
}

/// What one client saw after its reconnect.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    subscribed_us: u64,
    first_live_us: u64,
    recovered_streams: u64,
    streams: u64,
    replayed: u64,
    errors: u64,
}

/// Takes one update into `streams`; counts a jump as an error (mode all:
/// one `seq` at a time, an `overflow` reports a hole).
fn apply(streams: &mut Streams, m: &Value, errors: &mut u64) {
    let ty = m["type"].as_str().unwrap_or("");
    let ch = match ty {
        "q" => "quotes",
        "t" => "trades",
        "snapshot" | "overflow" => m["ch"].as_str().unwrap_or(""),
        _ => return,
    };
    let key = (ch.to_string(), m["sym"].as_str().unwrap_or("").to_string());
    let last = streams.0.get(&key).copied().unwrap_or(0);
    match ty {
        "snapshot" => {
            streams.0.insert(key, m["seq"].as_u64().unwrap_or(0));
        }
        "overflow" => {
            if m["from_seq"].as_u64() != Some(last + 1) {
                *errors += 1;
            }
            streams.0.insert(key, m["to_seq"].as_u64().unwrap_or(last));
        }
        _ => {
            let seq = m["seq"].as_u64().unwrap_or(0);
            if seq != last + 1 {
                *errors += 1;
            }
            streams.0.insert(key, seq);
        }
    }
}

/// The client's first connection: subscribe, then read until `until`.
async fn first_session(url: &str, symbols: &[String], until: Instant) -> (String, Streams) {
    let (mut ws, epoch) = connect(url).await;
    let req = json!({"type": "subscribe", "id": 1, "symbols": symbols,
        "channels": ["quotes", "trades"], "mode": "all"});
    ws.send(req).await;
    let mut streams = Streams::default();
    let mut errors = 0;
    let deadline = tokio::time::Instant::from_std(until);
    while let Ok(m) = tokio::time::timeout_at(deadline, next_json(&mut ws)).await {
        if m["type"] == "subscribed" {
            for s in m["subs"].as_array().into_iter().flatten() {
                let key = (
                    s["ch"].as_str().unwrap_or("").to_string(),
                    s["sym"].as_str().unwrap_or("").to_string(),
                );
                streams.0.insert(key, s["seq"].as_u64().unwrap_or(0));
            }
        }
        apply(&mut streams, &m, &mut errors);
    }
    assert_eq!(errors, 0, "the first session saw seq jumps");
    // Dropped here: the connection goes away without a close handshake.
    (epoch, streams)
}

/// The reconnect: subscribe again (with `resume` or a snapshot) and read
/// until the first live update on the connection.
async fn reconnect(
    url: &str,
    symbols: &[String],
    epoch: &str,
    mut streams: Streams,
    resume: bool,
    t0: Instant,
    t0_ns: u64,
) -> Outcome {
    let (mut ws, now_epoch) = connect(url).await;
    assert_eq!(now_epoch, epoch, "the server's epoch changed");
    let mut req = json!({"type": "subscribe", "id": 2, "symbols": symbols,
        "channels": ["quotes", "trades"], "mode": "all"});
    if resume {
        req["resume"] = json!({"epoch": epoch, "from": streams.resume_from()});
    } else {
        streams = Streams::default();
    }
    ws.send(req).await;
    let mut out = Outcome::default();
    loop {
        let m = next_json(&mut ws).await;
        if m["type"] == "subscribed" {
            out.subscribed_us = t0.elapsed().as_micros() as u64;
            for s in m["subs"].as_array().into_iter().flatten() {
                out.streams += 1;
                if s["recovered"] == true {
                    out.recovered_streams += 1;
                }
                let key = (
                    s["ch"].as_str().unwrap_or("").to_string(),
                    s["sym"].as_str().unwrap_or("").to_string(),
                );
                if !resume {
                    streams.0.insert(key, s["seq"].as_u64().unwrap_or(0));
                }
            }
            continue;
        }
        let update = matches!(m["type"].as_str(), Some("q" | "t"));
        apply(&mut streams, &m, &mut out.errors);
        if update {
            if m["ti"].as_u64().unwrap_or(0) >= t0_ns {
                out.first_live_us = t0.elapsed().as_micros() as u64;
                return out;
            }
            out.replayed += 1;
        }
    }
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args = Args::parse();
    let server = Server::start(&args);
    let url = server.url.clone();
    eprintln!("server at {url}");
    // The symbols, once.
    let names: Vec<String> = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let (mut ws, _) = connect(&url).await;
            ws.send(json!({"type": "list", "id": 1})).await;
            loop {
                let m = next_json(&mut ws).await;
                if m["type"] == "symbols" || m.get("symbols").is_some_and(Value::is_array) {
                    return m["symbols"]
                        .as_array()
                        .expect("symbols")
                        .iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect();
                }
            }
        });
    assert!(names.len() >= args.per_client, "the server lists {} symbols", names.len());
    // Each client's symbols (an LCG: the same every run).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let lists: Vec<Vec<String>> = (0..args.clients)
        .map(|_| {
            let mut l: Vec<String> = Vec::new();
            while l.len() < args.per_client {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let s = &names[((x >> 33) % names.len() as u64) as usize];
                if !l.contains(s) {
                    l.push(s.clone());
                }
            }
            l
        })
        .collect();
    println!(
        "resume storm: {} clients x {} symbols (quotes, trades; mode all), feed {} updates/s over {} symbols, away {} ms",
        args.clients, args.per_client, args.rate, args.symbols, args.gap_ms
    );
    println!(
        "| round | kind | subscribed p50 / p99 / max ms | first live update p50 / p99 / max ms | resumed streams | updates replayed | seq errors |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut medians: HashMap<bool, Vec<u64>> = HashMap::new();
    for round in 0..2 * args.rounds {
        let resume = round % 2 == 0;
        let outcomes = Arc::new(Mutex::new(Vec::with_capacity(args.clients)));
        let first_until = Instant::now() + Duration::from_secs(3);
        let back_at = first_until + Duration::from_millis(args.gap_ms);
        let back_ns = now_ns() + (back_at - Instant::now()).as_nanos() as u64;
        let threads: Vec<_> = (0..args.threads)
            .map(|t| {
                let mine: Vec<Vec<String>> =
                    lists.iter().skip(t).step_by(args.threads).cloned().collect();
                let (url, outcomes) = (url.clone(), outcomes.clone());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, async move {
                        let tasks: Vec<_> = mine
                            .into_iter()
                            .map(|syms| {
                                let (url, outcomes) = (url.clone(), outcomes.clone());
                                tokio::task::spawn_local(async move {
                                    let (epoch, streams) =
                                        first_session(&url, &syms, first_until).await;
                                    tokio::time::sleep_until(tokio::time::Instant::from_std(
                                        back_at,
                                    ))
                                    .await;
                                    let o = reconnect(
                                        &url, &syms, &epoch, streams, resume, back_at, back_ns,
                                    )
                                    .await;
                                    outcomes.lock().expect("lock").push(o);
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.expect("client task");
                        }
                    });
                })
            })
            .collect();
        for t in threads {
            t.join().expect("client thread");
        }
        let o = outcomes.lock().expect("lock").clone();
        let mut sub: Vec<u64> = o.iter().map(|o| o.subscribed_us).collect();
        let mut live: Vec<u64> = o.iter().map(|o| o.first_live_us).collect();
        let ms = |us: u64| us as f64 / 1000.0;
        let (s50, s99, smax) =
            (percentile(&mut sub, 0.5), percentile(&mut sub, 0.99), percentile(&mut sub, 1.0));
        let (l50, l99, lmax) =
            (percentile(&mut live, 0.5), percentile(&mut live, 0.99), percentile(&mut live, 1.0));
        medians.entry(resume).or_default().push(l50);
        let recovered: u64 = o.iter().map(|o| o.recovered_streams).sum();
        let streams: u64 = o.iter().map(|o| o.streams).sum();
        let replayed: u64 = o.iter().map(|o| o.replayed).sum();
        let errors: u64 = o.iter().map(|o| o.errors).sum();
        println!(
            "| {} | {} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {} of {} | {} | {} |",
            round / 2 + 1,
            if resume { "resume" } else { "fresh" },
            ms(s50),
            ms(s99),
            ms(smax),
            ms(l50),
            ms(l99),
            ms(lmax),
            recovered,
            streams,
            replayed,
            errors
        );
        if resume {
            assert_eq!(errors, 0, "a resumed stream jumped a seq");
        }
    }
    for (kind, mut v) in medians {
        println!(
            "median over rounds of the p50 to the first live update, {}: {:.1} ms",
            if kind { "resume" } else { "fresh" },
            percentile(&mut v, 0.5) as f64 / 1000.0
        );
    }
    drop(server);
}
