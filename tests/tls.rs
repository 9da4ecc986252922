//! TLS on the one port (`--tls-cert`/`--tls-key`). Every test makes its own
//! self-signed certificate for `localhost`/`127.0.0.1` with rcgen, writes it
//! to temporary files and trusts exactly that certificate on the client side
//! (tokio-rustls with the ring provider).
//!
//! Covered: a `wss://` session end to end (welcome, subscribe, data, the
//! 1012 close at shutdown), the HTTP routes over `https://`, a plain-TCP
//! client, a TLS 1.1-only and a garbage ClientHello, a client that says
//! nothing until the handshake timeout, the 503 of the connection limits, and bad certificate/key files (the
//! binary's message and exit status, and a key that is not the
//! certificate's).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tickwire::config::TlsFiles;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{BIN, Proc};
use crate::util::{TIMEOUT, TestServer, http_get, manual_server, metric};

/// A self-signed certificate and its key in a temporary directory (removed
/// on drop).
struct Certs {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Certs {
    /// A fresh certificate for `localhost` and `127.0.0.1`.
    fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("tickwire-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("rcgen makes a certificate");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        Certs { dir, cert, key, der: ck.cert.der().clone() }
    }

    fn files(&self) -> TlsFiles {
        TlsFiles { cert: self.cert.clone(), key: self.key.clone() }
    }

    /// A client config that trusts only this certificate, speaking `versions`.
    fn client(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }

    /// Opens a TLS connection to `addr` (TLS 1.3 or 1.2).
    async fn connect(&self, addr: SocketAddr) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
        tokio::time::timeout(TIMEOUT, self.client(&versions).connect(name, tcp))
            .await
            .expect("handshake in time")
            .expect("TLS handshake succeeds")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A manual-feed server serving TLS with `certs`.
fn tls_server(certs: &Certs, tweak: impl FnOnce(&mut tickwire::Config)) -> TestServer {
    manual_server(|c| {
        c.tls = Some(certs.files());
        tweak(c);
    })
}

/// Sends `GET path` on `stream` and reads the answer to the end:
/// (status, body).
async fn get_on<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("the server ends the answer with close_notify");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
    (status, body)
}

/// GET over https.
async fn https_get(certs: &Certs, addr: SocketAddr, path: &str) -> (u16, String) {
    get_on(certs.connect(addr).await, path).await
}

/// The TLS handshake failures counted so far (read over https).
async fn handshake_failures(certs: &Certs, addr: SocketAddr) -> u64 {
    metric(&https_get(certs, addr, "/metrics").await.1, "tickwire_tls_handshake_failures_total")
}

/// Waits until the failure counter reaches `n` (the count lands on the
/// shard just after the client sees the connection end).
async fn wait_failures(certs: &Certs, addr: SocketAddr, n: u64) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let got = handshake_failures(certs, addr).await;
        if got >= n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{got} handshake failures, want {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// The messages of the next frame; `None` once the connection closed
/// (`Some(code)` in `closed` when it was a close frame).
async fn next_frame(ws: &mut Wss, closed: &mut Option<u16>) -> Option<Vec<Value>> {
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next()).await.expect("frame in time")? {
            Ok(Message::Text(t)) => {
                return Some(serde_json::from_str::<Value>(&t).unwrap().as_array()?.clone());
            }
            Ok(Message::Close(frame)) => {
                *closed = frame.map(|f| u16::from(f.code));
                return None;
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Reads messages until one satisfies `pred`.
async fn until(ws: &mut Wss, pred: impl Fn(&Value) -> bool) -> Value {
    let mut closed = None;
    loop {
        let frame = next_frame(ws, &mut closed).await.expect("connection open");
        if let Some(m) = frame.into_iter().find(&pred) {
            return m;
        }
    }
}

#[tokio::test]
async fn wss_session_subscribes_receives_data_and_is_closed_with_1012() {
    let certs = Certs::new("wss");
    let ts = tls_server(&certs, |_| {});
    ts.feed.quote("AAPL", 10.0, 1, 10.1, 1);
    ts.flush();
    let tls = certs.connect(ts.addr).await;
    let url = format!("wss://localhost:{}/ws", ts.addr.port());
    let (mut ws, resp) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(url, tls))
        .await
        .expect("upgrade in time")
        .expect("the WebSocket upgrade works over TLS");
    assert_eq!(resp.status(), 101);
    // The session starts as on plain TCP: welcome, then status.
    let mut closed = None;
    let first = next_frame(&mut ws, &mut closed).await.expect("welcome");
    assert_eq!(first[0]["type"], "welcome", "{first:?}");
    until(&mut ws, |m| m["type"] == "status").await;
    let req = json!({"type": "subscribe", "id": 1, "symbols": ["AAPL"], "mode": "all"});
    ws.send(Message::Text(req.to_string().into())).await.unwrap();
    let sub = until(&mut ws, |m| m["type"] == "subscribed").await;
    assert_eq!(sub["rejected"], json!([]), "{sub}");
    // The snapshot, then a live update, arrive over TLS.
    let snap = until(&mut ws, |m| m["type"] == "snapshot").await;
    assert_eq!(snap["bp"], json!(10));
    ts.feed.quote("AAPL", 10.5, 2, 10.6, 2);
    ts.flush();
    let q = until(&mut ws, |m| m["type"] == "q").await;
    assert_eq!(
        (q["sym"].as_str(), q["seq"].as_u64(), q["bp"].as_f64()),
        (Some("AAPL"), Some(2), Some(10.5))
    );

    // Shutdown reaches TLS sessions too: `shutdown`, then 1012.
    let server = ts.server;
    let stopper = tokio::task::spawn_blocking(move || server.shutdown());
    let bye = until(&mut ws, |m| m["type"] == "shutdown").await;
    assert!(bye["reconnect_after_ms"].as_u64().is_some_and(|ms| (1000..2000).contains(&ms)));
    while next_frame(&mut ws, &mut closed).await.is_some() {}
    assert_eq!(closed, Some(1012));
    stopper.await.unwrap();
}

#[tokio::test]
async fn https_serves_the_http_routes() {
    let certs = Certs::new("https");
    let ts = tls_server(&certs, |_| {});
    let (status, body) = https_get(&certs, ts.addr, "/healthz").await;
    // /healthz over https, answered and closed with close_notify.
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    // The dashboard and the metrics too; no failed handshake so far.
    let (status, body) = https_get(&certs, ts.addr, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>tickwire"));
    assert_eq!(handshake_failures(&certs, ts.addr).await, 0);
    // TLS 1.2 is accepted as well as 1.3.
    let tcp = TcpStream::connect(ts.addr).await.unwrap();
    let tls12 = certs
        .client(&[&rustls::version::TLS12])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(tls12.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(get_on(tls12, "/healthz").await.0, 200);
}

#[tokio::test]
async fn a_plain_tcp_client_is_refused_without_harming_the_server() {
    let certs = Certs::new("plain");
    let ts = tls_server(&certs, |_| {});
    // Plain HTTP on the TLS port: a plain-text 400 that says what to use.
    let (status, body) = http_get(ts.addr, "/healthz").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("https://"), "{body}");
    // A plain ws:// client fails its upgrade.
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws", ts.addr)).await.unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
    // Both are counted, and TLS clients are served as before.
    wait_failures(&certs, ts.addr, 2).await;
    assert_eq!(https_get(&certs, ts.addr, "/healthz").await.0, 200);
}

#[tokio::test]
async fn connections_over_the_limit_get_503_over_tls() {
    let certs = Certs::new("limit");
    let ts = tls_server(&certs, |c| c.max_connections_per_ip = 1);
    // One connection holds the only slot (handshake done, no request yet)...
    let _held = certs.connect(ts.addr).await;
    // ...so the next is refused, and the refusal is readable over TLS.
    let (status, body) = https_get(&certs, ts.addr, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("connection limit"), "{body}");
}

/// A TLS 1.1 ClientHello (legacy version 0x0302, no `supported_versions`
/// extension), offering only TLS 1.1-era cipher suites.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version: TLS 1.1
    body.extend([7u8; 32]); // random
    body.push(0); // no session id
    body.extend([0x00, 0x04, 0xc0, 0x14, 0x00, 0x2f]); // 2 cipher suites
    body.extend([0x01, 0x00]); // compression: null
    let mut hs = vec![0x01, 0, 0, body.len() as u8]; // ClientHello
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01, 0, hs.len() as u8];
    record.extend(hs);
    record
}

/// Sends `bytes` as the first flight and reads what the server answers
/// until it closes: its bytes (an alert, or nothing).
async fn first_flight(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closes a failed handshake at once");
    buf
}

#[tokio::test]
async fn tls11_and_garbage_client_hellos_fail_the_handshake() {
    let certs = Certs::new("hello");
    let ts = tls_server(&certs, |_| {});
    // TLS 1.1 only: no ServerHello, at most an alert (content type 21).
    let answer = first_flight(ts.addr, &tls11_client_hello()).await;
    assert!(answer.is_empty() || answer[0] == 0x15, "not an alert: {answer:?}");
    // A handshake record that holds garbage: the same.
    let garbage = [0x16, 0x03, 0x01, 0x00, 0x06, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff];
    let answer = first_flight(ts.addr, &garbage).await;
    assert!(answer.is_empty() || answer[0] == 0x15, "not an alert: {answer:?}");
    // Both counted; the server still serves.
    wait_failures(&certs, ts.addr, 2).await;
    assert_eq!(https_get(&certs, ts.addr, "/healthz").await.0, 200);
}

#[tokio::test]
async fn a_silent_client_is_closed_at_the_handshake_timeout() {
    let certs = Certs::new("silent");
    let timeout = Duration::from_millis(300);
    let ts = tls_server(&certs, |c| c.handshake_timeout = timeout);
    // TCP open, not a byte sent: closed at the deadline, no sooner.
    let start = Instant::now();
    let mut s = TcpStream::connect(ts.addr).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf))
        .await
        .expect("closed well before the test's timeout")
        .expect("a clean close");
    let took = start.elapsed();
    assert!(buf.is_empty(), "nothing to say to a silent client: {buf:?}");
    assert!(took >= timeout - Duration::from_millis(20), "closed after {took:?}");
    wait_failures(&certs, ts.addr, 1).await;
    // Handshake done, but no request head: the same deadline, then 408.
    let start = Instant::now();
    let mut tls = certs.connect(ts.addr).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, tls.read_to_end(&mut buf)).await.expect("closed");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"), "{buf:?}");
    assert!(start.elapsed() < timeout + Duration::from_secs(1), "{:?}", start.elapsed());
}

#[tokio::test]
async fn a_key_that_is_not_the_certificates_is_a_startup_error() {
    let certs = Certs::new("mismatch");
    let other = Certs::new("mismatch-other");
    let config = tickwire::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles { cert: certs.cert.clone(), key: other.key.clone() }),
        ..tickwire::Config::default()
    };
    let err = tickwire::start(&config).err().expect("mismatched key refused");
    // The message names both files.
    let msg = err.to_string();
    assert!(msg.contains(&*certs.cert.to_string_lossy()), "{msg}");
    assert!(msg.contains(&*other.key.to_string_lossy()), "{msg}");
}

/// Runs `tickwire serve` with `args` and returns (exit status, stderr).
fn serve_fails(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut p =
        Proc::spawn(Command::new(BIN).args(["serve", "--listen", "127.0.0.1:0"]).args(args));
    let status = p.wait_exit(TIMEOUT).unwrap_or_else(|| panic!("`serve {args:?}` did not exit"));
    (status, p.output().1)
}

#[test]
fn the_cli_refuses_a_missing_key_file_naming_it() {
    let certs = Certs::new("cli-missing");
    let missing = certs.dir.join("no-such-key.pem");
    let cert = certs.cert.to_str().unwrap();
    let (status, stderr) =
        serve_fails(&["--tls-cert", cert, "--tls-key", missing.to_str().unwrap()]);
    // A startup failure (exit 1, as for an unreadable --replay file) that
    // names the flag and the file.
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--tls-key") && stderr.contains("no-such-key.pem"), "{stderr}");
    // A certificate file that holds no certificate: the same, for --tls-cert.
    let key = certs.key.to_str().unwrap();
    let (status, stderr) = serve_fails(&["--tls-cert", key, "--tls-key", key]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--tls-cert") && stderr.contains("no certificate"), "{stderr}");
    // One flag without the other is a usage error (exit 2).
    let (status, stderr) = serve_fails(&["--tls-cert", cert]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

#[tokio::test]
async fn the_cli_prints_https_and_wss_urls() {
    let certs = Certs::new("cli-url");
    let (cert, key) = (certs.cert.to_str().unwrap(), certs.key.to_str().unwrap());
    let p = Proc::spawn(Command::new(BIN).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--rate",
        "100",
        "--symbols",
        "5",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ]));
    let line =
        p.line_before(Instant::now() + TIMEOUT).unwrap_or_else(|e| panic!("{e:?}: {}", p.stderr()));
    let port: u16 = line
        .split("https://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no https:// URL in {line:?}"));
    assert!(line.contains(&format!("wss://127.0.0.1:{port}/ws")), "{line}");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(https_get(&certs, addr, "/healthz").await.0, 200);
}
