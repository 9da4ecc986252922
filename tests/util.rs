//! Shared test helpers: a server with a test-controlled feed on
//! 127.0.0.1:0, and a WebSocket client that checks `cseq` contiguity on
//! every message it reads.

#![allow(dead_code)]

use std::collections::VecDeque;
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
}

impl Client {
    /// Connects to `/ws?query` and reads the welcome.
    pub async fn connect(addr: SocketAddr, query: &str) -> Client {
        let url = if query.is_empty() {
            format!("ws://{addr}/ws")
        } else {
            format!("ws://{addr}/ws?{query}")
        };
        let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("websocket connects");
        let mut c =
            Client { ws, welcome: Value::Null, cseq: 0, pending: VecDeque::new(), frames: 0 };
        let first = c.read_frame().await.expect("welcome frame");
        assert_eq!(first.len(), 1, "welcome travels alone");
        c.welcome = first.into_iter().next().unwrap();
        assert_eq!(c.welcome["type"], "welcome");
        assert!(c.welcome.get("cseq").is_none(), "welcome is cseq 0 implicitly");
        c
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
                    return Some(arr);
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
