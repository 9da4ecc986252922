//! tokio-broadcast peer: a reference market-data server for tickwire-bench,
//! written the way a typical developer writes a broadcast server with
//! tokio-tungstenite and a `tokio::sync::broadcast` channel.
//!
//! Versions: Rust 1.88+, tokio 1.54, tokio-tungstenite 0.30 (default
//! `WebSocketConfig`), serde_json 1, clap 4 (the versions of the root
//! Cargo.lock).
//!
//! What it does (see ../README.md for the contract): welcome; subscribe to
//! `["*"]` or to named symbols (each client task receives every quote and
//! skips those of symbols it did not ask for); `ping` answered with `pong`;
//! one `q` message per text frame per client, stamped `t` (due time), `ti` (created), `to` (serialized for this
//! client), all in ns since the Unix epoch. A feed task on a 1 ms
//! `tokio::time::interval` emits every update that is due on an open-loop
//! schedule (update k is due at start + k/R) into a broadcast channel of
//! capacity 1024; one task per client `recv()`s, serializes and `send`s each
//! quote (feed + flush: one write per message).
//!
//! What it deliberately does not do: no batching of several quotes per frame,
//! no encode-once (each client task runs serde_json itself, because `cseq` and
//! `to` are per client), no conflation (`mode` and `max_hz` are ignored), no
//! heartbeats. On overload it does what typical code does: a receiver that
//! falls more than 1024 quotes behind gets `RecvError::Lagged(n)`, skips those
//! quotes silently (no `overflow` message; the count goes to stderr when the
//! client leaves), so `seq` jumps while `cseq` stays contiguous.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

/// The peer's name and the WebSocket library version, for `welcome.server`.
const SERVER: &str = "tokio-broadcast/0.30.0";

/// Capacity of the broadcast channel: how many quotes a client may fall
/// behind before it starts skipping (`Lagged`).
const CHANNEL_CAPACITY: usize = 1024;

#[derive(Parser, Debug)]
#[command(about = "tokio-tungstenite + tokio::sync::broadcast reference peer")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Number of symbols (S0000, S0001, ...).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    symbols: u32,
    /// Quote updates per second over all symbols.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Pick symbol i with probability proportional to 1/(i+1)^S instead of
    /// round-robin (0: round-robin).
    #[arg(long, default_value_t = 0.0)]
    zipf: f64,
}

/// One quote as it goes on the wire (inside a one-element array).
#[derive(Clone, Debug, Serialize)]
struct Quote {
    #[serde(rename = "type")]
    kind: &'static str,
    sym: String,
    seq: u64,
    cseq: u64,
    bp: f64,
    bs: u32,
    ap: f64,
    #[serde(rename = "as")]
    ask_size: u32,
    t: u64,
    ti: u64,
    to: u64,
}

/// Wall-clock ns since the Unix epoch.
fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// xorshift64: enough randomness for a price walk, without another crate.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.below(1 << 53) as f64 / (1u64 << 53) as f64
    }
}

/// One symbol's random walk (prices in cents).
struct Instrument {
    sym: String,
    seq: u64,
    mid: i64,
    spread: i64,
}

/// The open-loop feed: update k is due at `start + k / rate`; every 1 ms tick
/// emits all updates that are due.
async fn feed(tx: broadcast::Sender<Quote>, symbols: u32, rate: f64, zipf: f64) {
    let mut rng = Rng(now_ns() | 1);
    // Cumulative Zipf weights (empty: round-robin).
    let mut sum = 0.0;
    let mut cumulative: Vec<f64> = (0..symbols)
        .filter(|_| zipf > 0.0)
        .map(|i| {
            sum += 1.0 / f64::from(i + 1).powf(zipf);
            sum
        })
        .collect();
    cumulative.iter_mut().for_each(|c| *c /= sum);
    let mut instruments: Vec<Instrument> = (0..symbols)
        .map(|i| Instrument {
            sym: format!("S{i:04}"),
            seq: 0,
            mid: 5000 + rng.below(20_000) as i64,
            spread: 1 + rng.below(3) as i64,
        })
        .collect();
    let start = Instant::now();
    let start_ns = now_ns();
    let mut emitted: u64 = 0;
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        // Updates 0..=k with k/R <= elapsed are due: floor(elapsed * R) + 1.
        let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
        while emitted < due {
            let i = if cumulative.is_empty() {
                (emitted % u64::from(symbols)) as usize // round-robin
            } else {
                let u = rng.unit();
                cumulative.partition_point(|&c| c < u).min(symbols as usize - 1)
            };
            let inst = &mut instruments[i];
            inst.mid = (inst.mid + rng.below(5) as i64 - 2).max(100);
            inst.seq += 1;
            let quote = Quote {
                kind: "q",
                sym: inst.sym.clone(),
                seq: inst.seq,
                cseq: 0,
                bp: inst.mid as f64 / 100.0,
                bs: 100 * (1 + rng.below(20) as u32),
                ap: (inst.mid + inst.spread) as f64 / 100.0,
                ask_size: 100 * (1 + rng.below(20) as u32),
                t: start_ns + (emitted as f64 * 1e9 / rate) as u64,
                ti: now_ns(),
                to: 0,
            };
            // Err only means that nobody is subscribed right now.
            let _ = tx.send(quote);
            emitted += 1;
        }
    }
}

/// Accepts the upgrade on `/ws` (any query string), 404 elsewhere.
// The signature is tungstenite's handshake `Callback`: its error type is not ours to shrink.
#[allow(clippy::result_large_err)]
fn only_ws_path(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() == "/ws" {
        Ok(resp)
    } else {
        let mut err = ErrorResponse::new(Some("not found".into()));
        *err.status_mut() = StatusCode::NOT_FOUND;
        Err(err)
    }
}

/// One client: welcome, wait for `subscribe`, then forward every quote.
async fn handle_client(
    stream: TcpStream,
    tx: broadcast::Sender<Quote>,
    session: u64,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let _ = stream.set_nodelay(true);
    let mut ws = tokio_tungstenite::accept_hdr_async(stream, only_ws_path).await?;
    let welcome = serde_json::json!([{
        "type": "welcome",
        "session": format!("p-{session}"),
        "server": SERVER,
        "time_unit": "ns",
        "hb_ms": 1000,
        "epoch": "peer",
    }]);
    ws.send(Message::text(welcome.to_string())).await?;

    let mut cseq: u64 = 0;
    let mut rx: Option<broadcast::Receiver<Quote>> = None;
    // The symbols asked for by name; `None` after a `["*"]` subscription.
    let mut wanted: Option<HashSet<String>> = Some(HashSet::new());
    let mut lagged: u64 = 0;
    let result = loop {
        tokio::select! {
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => break Ok(()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break Err(e),
                };
                let Ok(msg) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                let reply = if msg["type"] == "subscribe" {
                    if rx.is_none() {
                        rx = Some(tx.subscribe());
                    }
                    let names = msg["symbols"].as_array().map(|a| a.iter().filter_map(|s| s.as_str()));
                    match names {
                        Some(names) if !msg["symbols"].as_array().is_some_and(|a| a.iter().any(|s| s == "*")) => {
                            if let Some(w) = wanted.as_mut() {
                                w.extend(names.map(String::from));
                            }
                        }
                        _ => wanted = None,
                    }
                    serde_json::json!({"type": "subscribed", "id": msg["id"], "subs": [], "rejected": []})
                } else if msg["type"] == "ping" {
                    serde_json::json!({"type": "pong", "id": msg["id"], "ts": msg["ts"], "t": now_ns()})
                } else {
                    continue;
                };
                cseq += 1;
                let mut reply = reply;
                reply["cseq"] = cseq.into();
                if let Err(e) = ws.send(Message::text(serde_json::json!([reply]).to_string())).await {
                    break Err(e);
                }
            }
            quote = async { rx.as_mut().expect("guarded by is_some").recv().await }, if rx.is_some() => {
                let mut quote = match quote {
                    Ok(quote) => quote,
                    Err(RecvError::Lagged(n)) => {
                        lagged += n;
                        continue;
                    }
                    Err(RecvError::Closed) => break Ok(()),
                };
                if wanted.as_ref().is_some_and(|w| !w.contains(&quote.sym)) {
                    continue;
                }
                cseq += 1;
                quote.cseq = cseq;
                quote.to = now_ns();
                let text = serde_json::to_string(&[&quote]).expect("a quote always serializes");
                if let Err(e) = ws.send(Message::text(text)).await {
                    break Err(e);
                }
            }
        }
    };
    if lagged > 0 {
        eprintln!("p-{session}: skipped {lagged} quotes (lagged)");
    }
    result
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if !(args.rate > 0.0 && args.rate.is_finite() && args.zipf >= 0.0) {
        eprintln!("--rate must be > 0 and --zipf >= 0");
        std::process::exit(2);
    }
    let listener = TcpListener::bind((args.host.as_str(), args.port)).await?;
    let port = listener.local_addr()?.port();
    println!("listening on ws://{}:{port}/ws", args.host);
    std::io::stdout().flush()?;

    let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
    tokio::spawn(feed(tx.clone(), args.symbols, args.rate, args.zipf));

    let mut sessions: u64 = 0;
    let accept = async {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            };
            sessions += 1;
            let session = sessions;
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = handle_client(stream, tx, session).await;
            });
        }
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = accept => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
    Ok(())
}
