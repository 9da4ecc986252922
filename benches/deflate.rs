//! permessage-deflate on tickwire's own frames: what each compression
//! scheme saves (compressed payload bytes over original), what it costs per
//! frame, and how much memory a compressor holds per connection.
//!
//! It starts a server in the process (synthetic feed, 500 symbols, 20,000
//! updates/s), records the frames a `["*"]` subscriber gets for a few
//! seconds in JSON and in binary (`tickwire.v1.bin`), then replays them
//! through one compressor per scheme, as one connection would see them.
//! Time is the median of five passes. Memory is the RSS that 200
//! compressors add after each has compressed the first 400 JSON frames
//! (their windows and tables touched), divided by 200, measured in a fresh
//! process per scheme (this bench run again with `DEFLATE_MEMORY_OF=ROW`)
//! so that memory freed by one scheme cannot hide what the next one
//! costs.
//!
//! `cargo bench --bench deflate` (`DEFLATE_RECORD_SECS`, default 3, sets
//! how long to record).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tickwire::config::Config;
use tickwire::socket::deflate::{Deflater, Settings, negotiate};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One row of the table: an offer (what the client asks) and the server's
/// settings.
struct Scheme {
    name: &'static str,
    offer: &'static str,
    settings: Settings,
}

const fn scheme(name: &'static str, offer: &'static str, w: u8, level: u8, mem: u8) -> Scheme {
    Scheme { name, offer, settings: Settings { window_bits: w, level, mem_level: mem } }
}

const TAKEOVER: &str = "permessage-deflate";
const NO_CONTEXT: &str = "permessage-deflate; server_no_context_takeover";

const SCHEMES: &[Scheme] = &[
    scheme("no context, window 15, mem 8, level 1", NO_CONTEXT, 15, 1, 8),
    scheme("no context, window 15, mem 8, level 6", NO_CONTEXT, 15, 6, 8),
    scheme("takeover, window 15, mem 8, level 1", TAKEOVER, 15, 1, 8),
    scheme("takeover, window 15, mem 1, level 1", TAKEOVER, 15, 1, 1),
    scheme("takeover, window 15, mem 8, level 6", TAKEOVER, 15, 6, 8),
    scheme("takeover, window 12, mem 8, level 1", TAKEOVER, 12, 1, 8),
    scheme("takeover, window 12, mem 4, level 1", TAKEOVER, 12, 1, 4),
    scheme("takeover, window 12, mem 1, level 1", TAKEOVER, 12, 1, 1),
    scheme("takeover, window 12, mem 1, level 6", TAKEOVER, 12, 6, 1),
    scheme("takeover, window 9, mem 8, level 1", TAKEOVER, 9, 1, 8),
    scheme("takeover, window 9, mem 1, level 1", TAKEOVER, 9, 1, 1),
];

/// Records what a `["*"]` subscriber on `protocol` receives for `secs`.
async fn record(addr: std::net::SocketAddr, protocol: &str, secs: f64) -> Vec<Vec<u8>> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("connect");
    let sub = r#"{"type":"subscribe","symbols":["*"],"snapshot":true}"#;
    ws.send(Message::text(sub)).await.unwrap();
    let mut frames = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(end, ws.next()).await {
        match m {
            Message::Text(t) => frames.push(t.as_bytes().to_vec()),
            Message::Binary(b) => frames.push(b.to_vec()),
            _ => {}
        }
    }
    frames
}

fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (compressed / original, µs per frame) of `frames` through one
/// compressor made for `s`.
fn run(s: &Scheme, frames: &[Vec<u8>]) -> (f64, f64) {
    let agreement = negotiate(&[s.offer], &s.settings).expect("accepted");
    let original: usize = frames.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut packed = 0;
    let mut times = Vec::new();
    for _ in 0..5 {
        let mut d = Deflater::new(&agreement);
        packed = 0;
        let t = Instant::now();
        for f in frames {
            out.clear();
            d.compress(f, &mut out);
            packed += out.len();
        }
        times.push(t.elapsed().as_secs_f64() * 1e6 / frames.len() as f64);
    }
    (packed as f64 / original as f64, median(times))
}

/// RSS per compressor for `s`, after each has compressed `frames`.
fn memory(s: &Scheme, frames: &[Vec<u8>]) -> usize {
    const N: usize = 200;
    let agreement = negotiate(&[s.offer], &s.settings).expect("accepted");
    let mut out = Vec::with_capacity(64 * 1024);
    let before = rss();
    let mut all: Vec<Deflater> = (0..N).map(|_| Deflater::new(&agreement)).collect();
    for f in frames {
        for d in &mut all {
            out.clear();
            d.compress(f, &mut out);
        }
    }
    rss().saturating_sub(before) / N
}

/// [`memory`] of scheme `row` in a child process, fed `frames` through a
/// file.
fn memory_in_child(row: usize, frames: &[Vec<u8>]) -> usize {
    let path = std::env::temp_dir().join(format!("tickwire-deflate-{}.frames", std::process::id()));
    let mut file = Vec::new();
    for f in frames {
        file.extend_from_slice(&(f.len() as u32).to_le_bytes());
        file.extend_from_slice(f);
    }
    std::fs::write(&path, file).expect("write frames");
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env("DEFLATE_MEMORY_OF", row.to_string())
        .env("DEFLATE_FRAMES", &path)
        .output()
        .expect("child runs");
    let _ = std::fs::remove_file(&path);
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("child prints bytes")
}

/// The child's side of [`memory_in_child`].
fn child(row: &str) {
    let file = std::fs::read(std::env::var("DEFLATE_FRAMES").expect("frames file")).unwrap();
    let mut frames = Vec::new();
    let mut rest = &file[..];
    while rest.len() >= 4 {
        let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        frames.push(rest[4..4 + n].to_vec());
        rest = &rest[4 + n..];
    }
    println!("{}", memory(&SCHEMES[row.parse::<usize>().expect("row")], &frames));
}

fn main() {
    if let Ok(row) = std::env::var("DEFLATE_MEMORY_OF") {
        return child(&row);
    }
    let secs: f64 =
        std::env::var("DEFLATE_RECORD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let mut config =
        Config { listen: "127.0.0.1:0".parse().unwrap(), shards: 1, ..Config::default() };
    config.synthetic.symbols = 500;
    config.synthetic.rate = 20_000.0;
    let server = tickwire::start(&config).expect("server starts");
    let addr = server.local_addr();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (json, binary) = rt.block_on(async {
        let json = record(addr, tickwire::socket::JSON_PROTOCOL, secs);
        let binary = record(addr, tickwire::socket::BIN_PROTOCOL, secs);
        tokio::join!(json, binary)
    });
    server.shutdown();
    for (name, frames) in [("JSON", &json), ("binary", &binary)] {
        let mut lens: Vec<f64> = frames.iter().map(|f| f.len() as f64).collect();
        let total: f64 = lens.iter().sum();
        lens.sort_by(f64::total_cmp);
        println!(
            "{name}: {} frames in {secs} s, median {} B, {:.0} B/s",
            frames.len(),
            lens.get(lens.len() / 2).copied().unwrap_or(0.0),
            total / secs
        );
    }
    println!();
    println!(
        "| scheme | JSON ratio | JSON µs/frame | binary ratio | binary µs/frame | RSS per connection |"
    );
    println!("|---|---|---|---|---|---|");
    let first: Vec<Vec<u8>> = json.iter().take(400).cloned().collect();
    for (row, s) in SCHEMES.iter().enumerate() {
        let (jr, jt) = run(s, &json);
        let (br, bt) = run(s, &binary);
        let kib = memory_in_child(row, &first) as f64 / 1024.0;
        println!("| {} | {jr:.2} | {jt:.2} | {br:.2} | {bt:.2} | {kib:.0} KiB |", s.name);
    }
}
