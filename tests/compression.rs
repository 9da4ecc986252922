//! permessage-deflate on `/ws` sessions (issue 19), read by a client of
//! our own on a raw socket that inflates with zlib-rs, one decompressor for
//! the connection (its window kept across messages, as a browser's is):
//! market data in JSON and binary, whole and in order, at well under 60% of
//! its bytes; `server_no_context_takeover`; a compressed `subscribe`; and a
//! decompression bomb, closed with 1009 without being inflated.

use std::collections::HashMap;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Status};

use crate::util::{BIN, TIMEOUT, TestServer, client_frame, decode_binary, manual_server};

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// A server with compression on (the default window).
fn compressing_server() -> TestServer {
    manual_server(|c| c.compression = Some(tickwire::socket::deflate::Settings { window_bits: 12 }))
}

/// A client that offered permessage-deflate.
struct Client {
    s: TcpStream,
    /// The server's answer in `Sec-WebSocket-Extensions` (lowercase).
    extensions: String,
    z: Inflate,
    /// A fresh decompressor per message (`server_no_context_takeover`).
    fresh_each: bool,
    /// Payload bytes on the wire, and the same once inflated.
    wire: usize,
    plain: usize,
    /// Symbol names by the ids `subscribed` announced (binary sessions).
    ids: Option<HashMap<u64, String>>,
    cseq: u64,
    pending: std::collections::VecDeque<Value>,
}

impl Client {
    async fn connect(ts: &TestServer, offer: &str, protocol: Option<&str>) -> Client {
        let mut s = TcpStream::connect(ts.addr).await.unwrap();
        let protocol_line =
            protocol.map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n")).unwrap_or_default();
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             {protocol_line}Sec-WebSocket-Extensions: {offer}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        // Byte by byte, so that nothing past the head is consumed.
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(TIMEOUT, s.read(&mut byte)).await.unwrap().unwrap();
            assert_eq!(n, 1, "closed in the head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        let extensions = head
            .lines()
            .find_map(|l| l.strip_prefix("sec-websocket-extensions: "))
            .unwrap_or("")
            .to_string();
        let fresh_each = extensions.contains("server_no_context_takeover");
        let mut c = Client {
            s,
            extensions,
            z: Inflate::new(false, 15),
            fresh_each,
            wire: 0,
            plain: 0,
            ids: (protocol == Some(BIN)).then(HashMap::new),
            cseq: 0,
            pending: Default::default(),
        };
        let (op, compressed, welcome) = c.read_frame().await.expect("welcome");
        assert_eq!((op, compressed), (1, !c.extensions.is_empty()), "the welcome, compressed");
        let welcome: Value = serde_json::from_slice(&welcome).unwrap();
        assert_eq!(welcome[0]["type"], "welcome");
        c
    }

    /// The next frame: its opcode, whether it came compressed, and its
    /// payload (inflated). `None` when the connection ends.
    async fn read_frame(&mut self) -> Option<(u8, bool, Vec<u8>)> {
        let mut h = [0u8; 2];
        tokio::time::timeout(TIMEOUT, self.s.read_exact(&mut h)).await.expect("in time").ok()?;
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                self.s.read_exact(&mut l).await.ok()?;
                usize::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                self.s.read_exact(&mut l).await.ok()?;
                u64::from_be_bytes(l) as usize
            }
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        self.s.read_exact(&mut payload).await.ok()?;
        let (op, compressed) = (h[0] & 0x0f, h[0] & 0x40 != 0);
        assert!(!compressed || op < 8, "a control frame is never compressed");
        if !compressed {
            return Some((op, false, payload));
        }
        self.wire += len;
        if self.fresh_each {
            self.z = Inflate::new(false, 15);
        }
        let input = [&payload[..], &TAIL].concat();
        let mut out = vec![0u8; 1 << 20];
        let before = (self.z.total_in(), self.z.total_out());
        let status = self.z.decompress(&input, &mut out, InflateFlush::SyncFlush);
        assert!(matches!(status, Ok(Status::Ok)), "{status:?}");
        assert_eq!((self.z.total_in() - before.0) as usize, input.len(), "inflated whole");
        out.truncate((self.z.total_out() - before.1) as usize);
        self.plain += out.len();
        Some((op, true, out))
    }

    /// The next protocol message (`cseq` checked), decoding binary frames.
    async fn next(&mut self) -> Value {
        loop {
            if let Some(m) = self.pending.pop_front() {
                if let Some(c) = m.get("cseq").and_then(Value::as_u64) {
                    assert_eq!(c, self.cseq + 1, "cseq contiguous: {m}");
                    self.cseq = c;
                }
                return m;
            }
            let (op, compressed, payload) = self.read_frame().await.expect("a frame");
            assert!(compressed, "every data frame compressed");
            match op {
                1 => {
                    let Value::Array(msgs) = serde_json::from_slice(&payload).unwrap() else {
                        panic!("a JSON array")
                    };
                    for m in &msgs {
                        if let (Some(ids), "subscribed") =
                            (&mut self.ids, m["type"].as_str().unwrap())
                        {
                            for sub in m["subs"].as_array().unwrap() {
                                ids.insert(
                                    sub["id"].as_u64().unwrap(),
                                    sub["sym"].as_str().unwrap().to_string(),
                                );
                            }
                        }
                    }
                    self.pending.extend(msgs);
                }
                2 => self.pending.extend(decode_binary(&payload, self.ids.as_ref().unwrap())),
                other => panic!("opcode {other}"),
            }
        }
    }

    async fn until(&mut self, kind: &str) -> Value {
        loop {
            let m = self.next().await;
            if m["type"] == kind {
                return m;
            }
        }
    }

    /// Sends a text message, compressed (RSV1) when `compress`, as a
    /// client compresses: each message alone (`client_no_context_takeover`).
    async fn send(&mut self, text: &[u8], compress: bool) {
        let frame = if compress {
            client_frame(0x41, &client_deflate(text, 6), false)
        } else {
            client_frame(0x1, text, false)
        };
        self.s.write_all(&frame).await.unwrap();
    }
}

/// `payload` deflated alone by zlib, window 15, without the tail.
fn client_deflate(payload: &[u8], level: i32) -> Vec<u8> {
    let config = DeflateConfig { level, window_bits: -15, ..DeflateConfig::default() };
    let mut z = Deflate::new_with_config(config);
    let mut out = vec![0; zlib_rs::compress_bound(payload.len()) + 16];
    let status = z.compress(payload, &mut out, DeflateFlush::SyncFlush);
    assert!(matches!(status, Ok(Status::Ok)), "{status:?}");
    out.truncate(z.total_out() as usize - TAIL.len());
    out
}

/// Quotes and trades for 50 symbols, `rounds` updates each, in batches.
fn feed(ts: &TestServer, rounds: u32) {
    for r in 0..rounds {
        for i in 0..50u32 {
            let sym = format!("S{i:02}");
            let px = 100.0 + f64::from(i) + f64::from(r % 7) * 0.01;
            ts.feed.quote(&sym, px, 100 + r, px + 0.02, 200);
            if r % 3 == 0 {
                ts.feed.trade(&sym, px + 0.01, 10 + r);
            }
        }
        ts.flush();
    }
}

/// Reads updates until the last round's quote of every symbol arrived.
async fn read_until_last_round(c: &mut Client, rounds: u32) -> usize {
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut updates = 0;
    while last.len() < 50 || last.values().any(|&s| s < u64::from(rounds)) {
        let m = c.next().await;
        if ["q", "snapshot"].contains(&m["type"].as_str().unwrap())
            && m.get("ch").is_none_or(|ch| ch == "quotes")
        {
            updates += 1;
            last.insert(m["sym"].to_string(), m["seq"].as_u64().unwrap());
        }
    }
    updates
}

async fn market_data_compressed(protocol: Option<&str>) -> f64 {
    let ts = compressing_server();
    feed(&ts, 1);
    let mut c = Client::connect(&ts, "permessage-deflate; client_max_window_bits", protocol).await;
    assert_eq!(
        c.extensions,
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=12"
    );
    let sub = json!({"type": "subscribe", "id": 1, "symbols": ["*"], "mode": "all"});
    c.send(sub.to_string().as_bytes(), false).await;
    c.until("subscribed").await;
    let rounds = 40;
    feed(&ts, rounds);
    read_until_last_round(&mut c, rounds + 1).await;
    let ratio = c.wire as f64 / c.plain as f64;
    eprintln!("{protocol:?}: {} bytes on the wire for {} inflated: {ratio:.2}", c.wire, c.plain);
    ratio
}

#[tokio::test]
async fn json_market_data_is_compressed_whole_and_in_order() {
    let ratio = market_data_compressed(None).await;
    // The issue's target is 60% on a `["*"]` session.
    assert!(ratio < 0.6, "{ratio}");
}

#[tokio::test]
async fn binary_market_data_is_compressed_whole_and_in_order() {
    let ratio = market_data_compressed(Some(BIN)).await;
    assert!(ratio < 0.8, "{ratio}");
}

#[tokio::test]
async fn without_context_takeover_each_frame_inflates_alone() {
    let ts = compressing_server();
    feed(&ts, 1);
    let offer = "permessage-deflate; server_no_context_takeover; server_max_window_bits=10";
    let mut c = Client::connect(&ts, offer, None).await;
    assert_eq!(
        c.extensions,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=10"
    );
    c.send(json!({"type": "subscribe", "symbols": ["*"]}).to_string().as_bytes(), false).await;
    feed(&ts, 10);
    read_until_last_round(&mut c, 11).await;
}

#[tokio::test]
async fn a_compressed_subscribe_is_read() {
    let ts = compressing_server();
    feed(&ts, 1);
    let mut c = Client::connect(&ts, "permessage-deflate", None).await;
    let sub = json!({"type": "subscribe", "id": 7, "symbols": ["S01", "S02"], "snapshot": true});
    c.send(sub.to_string().as_bytes(), true).await;
    let reply = c.until("subscribed").await;
    assert_eq!(reply["id"], 7);
    assert_eq!(reply["subs"].as_array().unwrap().len(), 4, "{reply}");
    // A ping gets its answer too, compressed like any reply.
    c.send(br#"{"type":"ping","id":8,"ts":5}"#, true).await;
    assert_eq!(c.until("pong").await["ts"], 5);
}

#[tokio::test]
async fn a_decompression_bomb_closes_1009_before_inflating_it() {
    let ts = compressing_server();
    let mut c = Client::connect(&ts, "permessage-deflate", None).await;
    // Ten MiB of spaces inside a JSON string: about ten KiB on the wire,
    // well under the 64 KiB message limit, far over it once inflated.
    let bomb = [&b"{\"type\":\"ping\",\"x\":\""[..], &vec![b' '; 10 << 20], b"\"}"].concat();
    let packed = client_deflate(&bomb, 9);
    assert!(packed.len() < 64 * 1024, "{}", packed.len());
    c.s.write_all(&client_frame(0x41, &packed, false)).await.unwrap();
    // The error, then the close: 1009.
    let error = c.until("error").await;
    assert_eq!(error["code"], 413, "{error}");
    let (op, compressed, close) = c.read_frame().await.expect("a close frame");
    assert_eq!((op, compressed), (8, false));
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1009);
    // And the server held no more than the limit for it.
    assert!(c.plain < 64 * 1024);
}
