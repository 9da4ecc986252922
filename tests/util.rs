//! Shared test helpers: a server with a test-controlled feed on
//! 127.0.0.1:0, and a WebSocket client that checks `cseq` contiguity on
//! every message it reads.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tickwire::feed::manual::ManualFeedHandle;
use tickwire::{Config, Server};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest any single wait in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A server fed by the test.
pub struct TestServer {
    pub server: Server,
    pub feed: ManualFeedHandle,
    pub addr: SocketAddr,
}

impl TestServer {
    /// Pushes everything queued through the feed thread.
    pub fn flush(&self) {
        assert!(self.feed.flush(TIMEOUT), "feed did not publish in time");
    }

    /// The current value of an unlabelled metric.
    pub async fn metric(&self, name: &str) -> u64 {
        metric(&self.get("/metrics").await.1, name)
    }

    /// GET `path`, returning (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }
}

/// Default test settings: ephemeral port, two shards.
pub fn test_config() -> Config {
    Config { listen: "127.0.0.1:0".parse().unwrap(), shards: 2, ..Config::default() }
}

/// Starts a server with a manual feed; `tweak` adjusts the settings.
pub fn manual_server(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = test_config();
    tweak(&mut config);
    let (server, feed) = tickwire::start_manual(&config).expect("server starts");
    let addr = server.local_addr();
    TestServer { server, feed, addr }
}

/// The value of an unlabelled metric in a `/metrics` body.
pub fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// A minimal HTTP/1.1 GET over a raw socket.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf))
        .await
        .expect("http response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
    (status, body)
}

/// A protocol client that checks `cseq` on every message.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The welcome message.
    pub welcome: Value,
    /// The last `cseq` seen.
    pub cseq: u64,
    /// Messages of frames read but not yet returned.
    pending: VecDeque<Value>,
    /// Number of frames read.
    pub frames: u64,
    /// On a `tickwire.v1.bin` session: symbol names by the ids announced in
    /// `subscribed` (`None` on a JSON session).
    pub sym_ids: Option<HashMap<u64, String>>,
    /// Number of binary frames read.
    pub binary_frames: u64,
}

impl Client {
    /// Connects to `/ws?query` and reads the welcome.
    pub async fn connect(addr: SocketAddr, query: &str) -> Client {
        Client::connect_with(addr, query, None).await
    }

    /// Connects offering the binary subprotocol `tickwire.v1.bin`, checks
    /// that the server selected it, and reads the welcome. Binary frames
    /// are decoded into the JSON messages they stand for ([`decode_binary`]).
    pub async fn connect_binary(addr: SocketAddr, query: &str) -> Client {
        Client::connect_with(addr, query, Some(BIN)).await
    }

    /// Connects offering `protocol` (if any) and reads the welcome.
    pub async fn connect_with(addr: SocketAddr, query: &str, protocol: Option<&str>) -> Client {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = if query.is_empty() {
            format!("ws://{addr}/ws")
        } else {
            format!("ws://{addr}/ws?{query}")
        };
        let mut req = url.into_client_request().unwrap();
        if let Some(p) = protocol {
            req.headers_mut().insert("Sec-WebSocket-Protocol", p.parse().unwrap());
        }
        Client::connect_request(req, protocol).await.expect("websocket connects")
    }

    /// Connects to `/ws?query` with extra request `headers` (such as
    /// `Authorization` or `Origin`) and reads the welcome; `Err` is the
    /// HTTP status of a refused upgrade.
    pub async fn connect_headers(
        addr: SocketAddr,
        query: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("ws://{addr}/ws?{query}");
        let mut req = url.into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(*k, v.parse().unwrap());
        }
        Client::connect_request(req, None).await.map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => resp.status().as_u16(),
            e => panic!("upgrade failed without an HTTP status: {e}"),
        })
    }

    async fn connect_request(
        req: tokio_tungstenite::tungstenite::handshake::client::Request,
        protocol: Option<&str>,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let (ws, resp) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect in time")?;
        let selected = resp.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap());
        let binary = selected == Some(BIN);
        if protocol == Some(BIN) {
            assert!(binary, "the server selects tickwire.v1.bin when offered: {selected:?}");
        }
        let mut c = Client {
            ws,
            welcome: Value::Null,
            cseq: 0,
            pending: VecDeque::new(),
            frames: 0,
            sym_ids: binary.then(HashMap::new),
            binary_frames: 0,
        };
        let first = c.read_frame().await.expect("welcome frame");
        assert_eq!(first.len(), 1, "welcome travels alone");
        c.welcome = first.into_iter().next().unwrap();
        assert_eq!(c.welcome["type"], "welcome");
        assert!(c.welcome.get("cseq").is_none(), "welcome is cseq 0 implicitly");
        Ok(c)
    }

    /// Sends a JSON request.
    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::Text(s.to_string().into())).await.unwrap();
    }

    /// Reads one frame as an array of messages; `None` when the connection
    /// closed (the close frame, if any, is returned by [`Client::closed`]).
    async fn read_frame(&mut self) -> Option<Vec<Value>> {
        loop {
            let msg =
                tokio::time::timeout(TIMEOUT, self.ws.next()).await.expect("message in time")?;
            match msg.ok()? {
                Message::Text(t) => {
                    self.frames += 1;
                    let v: Value = serde_json::from_str(&t).expect("server frames are JSON");
                    let arr = v.as_array().expect("every server frame is a JSON array").clone();
                    assert!(!arr.is_empty(), "no empty frames");
                    if let Some(ids) = &mut self.sym_ids {
                        for m in arr.iter().filter(|m| m["type"] == "subscribed") {
                            for sub in m["subs"].as_array().unwrap() {
                                let id = sub["id"].as_u64().expect("subs carry an id on binary");
                                ids.insert(id, sub["sym"].as_str().unwrap().to_string());
                            }
                        }
                        for m in &arr {
                            let t = m["type"].as_str().unwrap();
                            assert!(!DATA_TYPES.contains(&t), "market data as JSON on binary: {m}");
                        }
                    }
                    return Some(arr);
                }
                Message::Binary(b) => {
                    let ids = self.sym_ids.as_ref().expect("binary frames only on binary sessions");
                    self.frames += 1;
                    self.binary_frames += 1;
                    return Some(decode_binary(&b, ids));
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// The next message; checks `cseq` contiguity. Panics on close or timeout.
    pub async fn next(&mut self) -> Value {
        self.try_next().await.expect("connection still open")
    }

    /// The next message, or `None` when the connection closed.
    pub async fn try_next(&mut self) -> Option<Value> {
        if self.pending.is_empty() {
            let frame = self.read_frame().await?;
            self.pending.extend(frame);
        }
        let m = self.pending.pop_front()?;
        let cseq = m["cseq"].as_u64().unwrap_or_else(|| panic!("message without cseq: {m}"));
        assert_eq!(cseq, self.cseq + 1, "cseq must rise by exactly 1: {m}");
        self.cseq = cseq;
        Some(m)
    }

    /// Reads until a message satisfies `pred`, returning it.
    pub async fn until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "condition not met in time");
            let m = self.next().await;
            if pred(&m) {
                return m;
            }
        }
    }

    /// Reads until a message of type `kind`.
    pub async fn until_type(&mut self, kind: &str) -> Value {
        self.until(|m| m["type"] == kind).await
    }

    /// Sends a request and returns the reply that carries its `id`.
    pub async fn request(&mut self, mut req: Value, id: u64) -> Value {
        req["id"] = json!(id);
        self.send(req).await;
        self.until(|m| m["id"] == json!(id)).await
    }

    /// Subscribes and returns the `subscribed` reply.
    pub async fn subscribe(&mut self, req: Value) -> Value {
        let mut req = req;
        req["type"] = json!("subscribe");
        let id = 1000 + self.cseq;
        let reply = self.request(req, id).await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        reply
    }

    /// Reads until the connection closes; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = tokio::time::timeout(left, self.ws.next()).await.expect("close in time");
            match msg {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// The binary subprotocol.
pub const BIN: &str = "tickwire.v1.bin";

/// Message types that travel as binary records on a `tickwire.v1.bin` session.
pub const DATA_TYPES: [&str; 5] = ["q", "t", "snapshot", "overflow", "heartbeat"];

/// Decodes a `tickwire.v1.bin` frame into the JSON messages it stands for,
/// as a JSON session would get them (`cf` omitted when 1, prices as the
/// shortest decimal). Written from the tables in docs/PROTOCOL.md, not from
/// the server's encoder, so that it checks the documentation too.
pub fn decode_binary(frame: &[u8], ids: &HashMap<u64, String>) -> Vec<Value> {
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as usize;
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    assert!(frame.len() >= 16 && frame[0] == 0x54, "binary frame header: {frame:?}");
    let stamps = frame[1] & 1 != 0;
    let (len, count, first_cseq) = (u16_at(frame, 2), u32_at(frame, 4) as usize, u64_at(frame, 8));
    // A session that takes bars gets records 32 bytes longer.
    let base = if stamps { 72 } else { 56 };
    assert!(len == base || len == base + 32, "record length {len}");
    assert_eq!(frame.len(), 16 + count * len, "frame length = header + count records");
    assert!(count > 0, "no empty frames");
    let price = |v: i64| {
        if v % 10_000 == 0 { json!(v / 10_000) } else { json!(v as f64 / 10_000.0) }
    };
    (0..count)
        .map(|i| {
            let r = &frame[16 + i * len..][..len];
            let ch = match r[2] {
                0 => "quotes",
                1 => "trades",
                2 => "bars_1s",
                3 => "bars_1m",
                c => panic!("channel byte {c}"),
            };
            let sym = || {
                let id = u64::from(u32_at(r, 4));
                json!(ids.get(&id).unwrap_or_else(|| panic!("symbol id {id} never announced")))
            };
            let mut m = serde_json::Map::new();
            let snapshot = r[1] & 1 != 0;
            let cf = u64_at(r, 48);
            match r[0] {
                1 | 2 => {
                    let quote = r[0] == 1;
                    assert_eq!(ch, if quote { "quotes" } else { "trades" });
                    if snapshot {
                        m.insert("type".into(), json!("snapshot"));
                        m.insert("ch".into(), json!(ch));
                        assert_eq!(cf, 0, "snapshots have no cf");
                    } else {
                        m.insert("type".into(), json!(if quote { "q" } else { "t" }));
                        assert!(cf >= 1, "updates have cf >= 1");
                        if cf > 1 {
                            m.insert("cf".into(), json!(cf));
                        }
                    }
                    m.insert("sym".into(), sym());
                    m.insert("seq".into(), json!(u64_at(r, 8)));
                    let (p1, p2) = (u64_at(r, 24) as i64, u64_at(r, 32) as i64);
                    if quote {
                        m.insert("bp".into(), price(p1));
                        m.insert("bs".into(), json!(u32_at(r, 40)));
                        m.insert("ap".into(), price(p2));
                        m.insert("as".into(), json!(u32_at(r, 44)));
                    } else {
                        m.insert("p".into(), price(p1));
                        m.insert("s".into(), json!(u32_at(r, 40)));
                    }
                    m.insert("t".into(), json!(u64_at(r, 16)));
                    if stamps {
                        m.insert("ti".into(), json!(u64_at(r, 56)));
                        m.insert("to".into(), json!(u64_at(r, 64)));
                    }
                }
                3 => {
                    m.insert("type".into(), json!("overflow"));
                    m.insert("ch".into(), json!(ch));
                    m.insert("sym".into(), sym());
                    m.insert("lost".into(), json!(u64_at(r, 32)));
                    m.insert("from_seq".into(), json!(u64_at(r, 24)));
                    m.insert("to_seq".into(), json!(u64_at(r, 8)));
                }
                4 => {
                    m.insert("type".into(), json!("heartbeat"));
                    m.insert("t".into(), json!(u64_at(r, 16)));
                }
                5 => {
                    assert_eq!(len, base + 32, "a bar in a short record");
                    if snapshot {
                        m.insert("type".into(), json!("snapshot"));
                        assert_eq!(cf, 0, "snapshots have no cf");
                    } else {
                        m.insert("type".into(), json!("b"));
                        if cf > 1 {
                            m.insert("cf".into(), json!(cf));
                        }
                    }
                    m.insert("ch".into(), json!(ch));
                    m.insert("sym".into(), sym());
                    m.insert("seq".into(), json!(u64_at(r, 8)));
                    m.insert("t".into(), json!(u64_at(r, 16)));
                    m.insert("c".into(), price(u64_at(r, 24) as i64));
                    m.insert("v".into(), json!(u64_at(r, 32)));
                    m.insert("n".into(), json!(u32_at(r, 40)));
                    for (k, key) in ["o", "h", "l", "vw"].into_iter().enumerate() {
                        m.insert(key.into(), price(u64_at(r, base + 8 * k) as i64));
                    }
                    m.insert("x".into(), json!(r[1] & 2 != 0));
                    if stamps {
                        m.insert("ti".into(), json!(u64_at(r, 56)));
                        m.insert("to".into(), json!(u64_at(r, 64)));
                    }
                }
                k => panic!("unknown record kind {k}"),
            }
            m.insert("cseq".into(), json!(first_cseq + i as u64));
            Value::Object(m)
        })
        .collect()
}

/// Names AAPL to the feed (its quote stream at seq 1: a symbol the feed has
/// not named is refused), then subscribes `c` to AAPL quotes in mode all
/// without snapshot. Returns the `subscribed` reply.
pub async fn subscribe_aapl_all(ts: &TestServer, c: &mut Client) -> Value {
    ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
    ts.flush();
    c.subscribe(
        json!({"symbols": ["AAPL"], "mode": "all", "channels": ["quotes"], "snapshot": false}),
    )
    .await
}

/// Pushes `n` AAPL quotes through a server whose mode-all queue is tiny,
/// to a client subscribed to AAPL quotes in mode all without snapshot
/// (the stream at seq 1), and checks the accounting: every update arrives
/// in order, and every gap is named exactly by the `overflow` before it.
/// Returns the number of updates reported lost.
pub async fn overflow_burst(ts: &TestServer, c: &mut Client, n: u64) -> u64 {
    for _ in 0..n {
        ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
    }
    ts.flush();
    let (mut next, mut lost) = (2u64, 0);
    while next <= n + 1 {
        let m = c.until(|m| ["q", "t", "overflow"].contains(&m["type"].as_str().unwrap())).await;
        if m["type"] == "overflow" {
            // The overflow names exactly the gap that follows.
            assert_eq!(m["from_seq"], next, "{m}");
            assert_eq!((m["ch"].as_str(), m["sym"].as_str()), (Some("quotes"), Some("AAPL")));
            let to = m["to_seq"].as_u64().unwrap();
            assert_eq!(m["lost"], to - next + 1);
            lost += to - next + 1;
            next = to + 1;
        } else {
            // No seq jump without an overflow.
            assert_eq!(m["seq"], next, "{m}");
            next += 1;
        }
    }
    lost
}

/// A client frame: FIN, `opcode`, masked with a fixed key unless `unmasked`.
pub fn client_frame(opcode: u8, payload: &[u8], unmasked: bool) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let mask_bit = if unmasked { 0 } else { 0x80 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if unmasked {
        f.extend_from_slice(payload);
    } else {
        let key = [0x12, 0x34, 0x56, 0x78];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    }
    f
}
