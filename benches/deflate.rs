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
use tickwire::socket::deflate::encoder::Encoder;
use tickwire::socket::deflate::{Settings, negotiate};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Status};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Which compressor a row measures.
#[derive(Clone, Copy)]
enum Engine {
    /// zlib-rs at this level and memory level.
    Zlib { level: u8, mem: u8 },
    /// tickwire's own encoder (`src/socket/deflate/encoder.rs`).
    Own,
}

/// One row of the table: an offer (what the client asks), the server's
/// window and the compressor.
struct Scheme {
    name: &'static str,
    offer: &'static str,
    window_bits: u8,
    engine: Engine,
}

const fn zlib(name: &'static str, offer: &'static str, w: u8, level: u8, mem: u8) -> Scheme {
    Scheme { name, offer, window_bits: w, engine: Engine::Zlib { level, mem } }
}

const fn own(name: &'static str, offer: &'static str, w: u8) -> Scheme {
    Scheme { name, offer, window_bits: w, engine: Engine::Own }
}

const TAKEOVER: &str = "permessage-deflate";
const NO_CONTEXT: &str = "permessage-deflate; server_no_context_takeover";

const SCHEMES: &[Scheme] = &[
    own("own, no context, window 15", NO_CONTEXT, 15),
    own("own, takeover, window 15", TAKEOVER, 15),
    own("own, takeover, window 12", TAKEOVER, 12),
    own("own, takeover, window 9", TAKEOVER, 9),
    zlib("zlib-rs, no context, window 15, mem 8, level 1", NO_CONTEXT, 15, 1, 8),
    zlib("zlib-rs, takeover, window 15, mem 8, level 1", TAKEOVER, 15, 1, 8),
    zlib("zlib-rs, takeover, window 15, mem 8, level 6", TAKEOVER, 15, 6, 8),
    zlib("zlib-rs, takeover, window 12, mem 1, level 1", TAKEOVER, 12, 1, 1),
    zlib("zlib-rs, takeover, window 12, mem 1, level 6", TAKEOVER, 12, 6, 1),
    zlib("zlib-rs, takeover, window 9, mem 1, level 1", TAKEOVER, 9, 1, 1),
];

/// A compressor of one connection, as the scheme makes it.
enum Compressor {
    Zlib { z: Box<Deflate>, reset_each: bool },
    Own { e: Box<Encoder>, reset_each: bool },
}

impl Compressor {
    fn new(s: &Scheme) -> Compressor {
        let settings = Settings { window_bits: s.window_bits };
        let agreement = negotiate(&[s.offer], &settings).expect("accepted");
        let reset_each = agreement.server_no_context_takeover;
        let window = agreement.server_max_window_bits;
        match s.engine {
            Engine::Own => Compressor::Own { e: Box::new(Encoder::new(window)), reset_each },
            Engine::Zlib { level, mem } => {
                let config = DeflateConfig {
                    level: i32::from(level),
                    window_bits: -i32::from(window),
                    mem_level: i32::from(mem),
                    ..DeflateConfig::default()
                };
                Compressor::Zlib { z: Box::new(Deflate::new_with_config(config)), reset_each }
            }
        }
    }

    /// Appends one message compressed and flushed, without its
    /// `00 00 ff ff`.
    fn compress(&mut self, msg: &[u8], out: &mut Vec<u8>) {
        match self {
            Compressor::Own { e, reset_each } => {
                e.compress(msg, out);
                if *reset_each {
                    e.reset();
                }
            }
            Compressor::Zlib { z, reset_each } => {
                let at = out.len();
                out.resize(at + zlib_rs::compress_bound(msg.len()) + 16, 0);
                let before = z.total_out();
                let status = z.compress(msg, &mut out[at..], DeflateFlush::SyncFlush);
                assert!(matches!(status, Ok(Status::Ok)), "{status:?}");
                out.truncate(at + (z.total_out() - before) as usize - 4);
                if *reset_each {
                    z.reset();
                }
            }
        }
    }
}

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
    let original: usize = frames.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut packed = 0;
    let mut times = Vec::new();
    for _ in 0..5 {
        let mut d = Compressor::new(s);
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
    let mut out = Vec::with_capacity(64 * 1024);
    let before = rss();
    let mut all: Vec<Compressor> = (0..N).map(|_| Compressor::new(s)).collect();
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
