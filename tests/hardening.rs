//! Hostile and broken clients, with numbers (issue 6): malformed frames get
//! the right close code quickly without a large allocation; slowloris
//! sockets are closed at the handshake timeout while a normal client
//! streams; thousands of abrupt resets leave no connection, session or file
//! descriptor behind; 5,000 subscribed connections that each sent a 64 KiB
//! request have a bounded cost (about 28 KB each, under the issue's 64 KiB
//! target; with permessage-deflate, issue 19's target is 32 KiB more: see
//! those tests).
//!
//! These talk raw TCP: the frames are written by hand, so a client can
//! break the rules no WebSocket library would let it break.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{Client, TIMEOUT, client_frame as frame, manual_server};

/// A frame header that announces `len` payload bytes (none follow).
fn header_only(len: u64) -> Vec<u8> {
    let mut f = vec![0x81, 0x80 | 127];
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    f
}

/// A raw upgraded connection that has read the server's `welcome`.
async fn raw_session(addr: SocketAddr) -> TcpStream {
    raw_session_offering(addr, "").await.0
}

/// [`raw_session`] with the request header lines `extra` (each ending in
/// CRLF); also returns what was read past the response head.
async fn raw_session_offering(addr: SocketAddr, extra: &str) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // The response head, then at least the first frame (welcome).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "no upgrade response");
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed during the upgrade");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(buf.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&buf));
            if buf.len() > end + 4 {
                return (s, buf.split_off(end + 4));
            }
        }
    }
}

/// Reads server frames until a close frame; returns its code, or `None`
/// when the connection ends without one (or `within` passes: "timeout").
async fn close_code(s: &mut TcpStream, within: Duration) -> Result<Option<u16>, &'static str> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        // Parse whole frames from the front of `buf` (server frames are unmasked).
        while buf.len() >= 2 {
            let (len, hdr) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => {
                    (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if buf.len() < hdr + len {
                break;
            }
            if buf[0] & 0x0f == 0x8 {
                return Ok((len >= 2).then(|| u16::from_be_bytes([buf[hdr], buf[hdr + 1]])));
            }
            buf.drain(..hdr + len);
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Err("timeout"),
        }
    }
}

fn rss_bytes(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn malformed_frames_get_the_right_close_code_quickly() {
    let ts = manual_server(|_| {});
    ts.feed.quote("OK", 1.0, 1, 1.1, 1);
    ts.flush();
    // A healthy session on the same server throughout.
    let mut healthy = Client::connect(ts.addr, "").await;
    healthy.subscribe(json!({"symbols": ["OK"], "mode": "all"})).await;
    let rss_before = rss_bytes("self");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("oversized frame", frame(0x1, &vec![b' '; 70_000], false), 1009),
        ("2^63-1 length header", header_only((1 << 63) - 1), 1009),
        ("2^63 length header", header_only(1 << 63), 1009),
        ("unmasked client frame", frame(0x1, b"{\"type\":\"ping\"}", true), 1002),
        ("invalid UTF-8", frame(0x1, b"{\"type\":\"p\xff\xfe\"}", false), 1007),
        ("reserved opcode", frame(0x3, b"x", false), 1002),
        (
            "reserved bits",
            {
                let mut f = frame(0x1, b"{}", false);
                f[0] |= 0x40;
                f
            },
            1002,
        ),
        ("binary garbage", (0..4096u32).map(|i| (i.wrapping_mul(97) as u8) | 0x30).collect(), 1002),
    ];
    for (what, bytes, want) in cases {
        let mut s = raw_session(ts.addr).await;
        let sent = Instant::now();
        s.write_all(&bytes).await.unwrap();
        let got = close_code(&mut s, Duration::from_secs(2)).await;
        let took = sent.elapsed();
        // Bounded by `close_code`'s wait; how fast is for the benchmarks.
        assert_eq!(got, Ok(Some(want)), "{what} (after {took:?})");
    }
    // No large allocation: a 2^63-byte announcement cost nothing like it.
    let grew = rss_bytes("self").saturating_sub(rss_before);
    assert!(grew < 16 << 20, "RSS grew by {grew} bytes");
    // The healthy session never noticed.
    ts.feed.quote("OK", 1.0, 2, 1.1, 1);
    ts.flush();
    let q = healthy.until_type("q").await;
    assert_eq!(q["bs"], 2);
    let pong = healthy.request(json!({"type": "ping"}), 7).await;
    assert_eq!(pong["type"], "pong");
    ts.server.shutdown();
}

#[tokio::test]
async fn slowloris_sockets_are_closed_at_the_handshake_timeout() {
    const SOCKETS: usize = 500;
    let timeout = Duration::from_secs(2);
    let ts = manual_server(|c| {
        c.handshake_timeout = timeout;
        c.max_connections_per_ip = 10_000;
    });
    // A normal client streaming throughout.
    let mut normal = Client::connect(ts.addr, "").await;
    ts.feed.quote("LIVE", 1.0, 1, 1.1, 1);
    ts.flush();
    normal.subscribe(json!({"symbols": ["LIVE"], "mode": "all"})).await;

    // 500 sockets that start a request head and never finish it.
    let mut slow = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        let mut s = TcpStream::connect(ts.addr).await.unwrap();
        let opened = Instant::now();
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: slow\r\n").await.unwrap();
        slow.push((s, opened));
    }
    // Each is closed by the server: read sees the end (or a reset).
    let closers = slow.into_iter().map(|(mut s, opened)| {
        tokio::spawn(async move {
            let mut b = [0u8; 512];
            loop {
                match tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return opened.elapsed(),
                    Ok(Ok(_)) => {} // a 408 answer before the close is fine
                    Err(_) => panic!("a slowloris socket was never closed"),
                }
            }
        })
    });
    let closers: Vec<_> = closers.collect();

    // Meanwhile the normal client streams: a quote every 5 ms for 3 s.
    let feed = ts.feed.clone();
    let pusher = std::thread::spawn(move || {
        for i in 0..600u32 {
            feed.quote("LIVE", 1.0, i + 2, 1.1, 1);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    // Every quote arrives, in order (mode all: a stalled shard would
    // overflow or close the session instead).
    let mut sizes = Vec::new();
    while sizes.len() < 600 {
        let m = normal.until_type("q").await;
        sizes.push(m["bs"].as_u64().unwrap());
    }
    assert_eq!(sizes, (2..602).collect::<Vec<u64>>());
    pusher.join().unwrap();
    let mut closed_after = Vec::new();
    for c in closers {
        closed_after.push(c.await.unwrap());
    }
    // None closed before the timeout (counted from a little before its
    // connect), and each within the 10 s its reader waits.
    for d in &closed_after {
        assert!(
            *d + Duration::from_millis(100) >= timeout,
            "a slowloris socket closed after {d:?}, before the timeout ({timeout:?})"
        );
    }
    ts.server.shutdown();
}

/// Closes `s` with a TCP reset (SO_LINGER 0).
fn reset(s: TcpStream) {
    let s = s.into_std().unwrap();
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

fn open_fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `tickwire_connections` of a server, read over HTTP.
async fn sessions(addr: SocketAddr) -> u64 {
    crate::util::metric(&crate::util::http_get(addr, "/metrics").await.1, "tickwire_connections")
}

#[tokio::test]
async fn ten_thousand_resets_leave_nothing_behind() {
    // The server in its own process, so its file descriptors are its own;
    // the synthetic feed runs throughout, so "mid-batch" resets hit live
    // writers.
    let srv = crate::cli::start_server(&["--max-connections-per-ip", "100000", "--rate", "5000"]);
    let pid = srv.proc.pid().to_string();
    let addr = srv.addr;
    // Baseline after one full session, so lazily opened descriptors count.
    drop(raw_session(addr).await);
    let deadline = Instant::now() + TIMEOUT;
    while sessions(addr).await > 0 {
        assert!(Instant::now() < deadline, "the warm-up session never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let baseline_fds = open_fds(&pid);
    let sub = frame(0x1, br#"{"type":"subscribe","symbols":["*"],"mode":"all"}"#, false);
    for i in 0..10_000u32 {
        match i % 3 {
            // Mid-handshake: half a request head, then RST.
            0 => {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(b"GET /ws HTTP/1.1\r\nHost: r").await.unwrap();
                reset(s);
            }
            // Right after the upgrade.
            1 => reset(raw_session(addr).await),
            // Subscribed, data flowing: RST mid-batch.
            _ => {
                let mut s = raw_session(addr).await;
                s.write_all(&sub).await.unwrap();
                let mut b = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_millis(5), s.read(&mut b)).await;
                reset(s);
            }
        }
    }
    // Within 2 s: no session and no file descriptor left.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (n, fds) = (sessions(addr).await, open_fds(&pid));
        if n == 0 && fds <= baseline_fds {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 2 s: {n} sessions, {fds} fds (baseline {baseline_fds})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No panic, and the server still serves.
    let mut c = Client::connect(addr, "").await;
    let pong = c.request(json!({"type": "ping"}), 1).await;
    assert_eq!(pong["type"], "pong");
    assert!(!srv.proc.stderr().contains("panicked"), "{}", srv.proc.stderr());
}

/// Opens a session, sends `msg` (one masked text frame), reads until
/// `snapshots` snapshot messages have arrived, then keeps reading (and
/// discarding) what follows until aborted, as a live client does. With
/// `compressed`, it offers permessage-deflate and inflates every frame
/// (one decompressor, its window kept, as a browser's is).
async fn subscribed_session(
    addr: SocketAddr,
    msg: Arc<Vec<u8>>,
    snapshots: usize,
    compressed: bool,
    ready: tokio::sync::mpsc::Sender<()>,
) {
    let offer = if compressed { "Sec-WebSocket-Extensions: permessage-deflate\r\n" } else { "" };
    let (mut s, first) = raw_session_offering(addr, offer).await;
    s.write_all(&msg).await.unwrap();
    let mut frames = Frames::new(compressed);
    let mut seen = frames.snapshots_in(&first);
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while seen < snapshots {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("{seen} of {snapshots} snapshots in time"))
            .unwrap();
        assert!(n > 0, "closed before the snapshots arrived");
        seen += frames.snapshots_in(&chunk[..n]);
    }
    assert_eq!(seen, snapshots);
    ready.send(()).await.unwrap();
    while let Ok(n) = s.read(&mut chunk).await {
        assert!(n > 0, "the server closed a healthy session");
    }
}

/// Server frames as they arrive, cut into messages (inflated when the
/// frame says so), in which snapshots are counted.
struct Frames {
    buf: Vec<u8>,
    z: Option<zlib_rs::Inflate>,
}

impl Frames {
    fn new(compressed: bool) -> Frames {
        Frames { buf: Vec::new(), z: compressed.then(|| zlib_rs::Inflate::new(false, 15)) }
    }

    /// The snapshots in the frames that `bytes` completes.
    fn snapshots_in(&mut self, bytes: &[u8]) -> usize {
        self.buf.extend_from_slice(bytes);
        let pat = b"\"type\":\"snapshot\"";
        let (mut seen, mut at) = (0, 0);
        loop {
            let b = &self.buf[at..];
            if b.len() < 2 {
                break;
            }
            let (len, head) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 if b.len() >= 10 => {
                    (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10)
                }
                126 | 127 => break,
                n => (usize::from(n), 2),
            };
            if b.len() < head + len {
                break;
            }
            let payload = &b[head..head + len];
            let text = match (&mut self.z, b[0] & 0x40 != 0) {
                (Some(z), true) => {
                    let input = [payload, &[0, 0, 0xff, 0xff]].concat();
                    let mut out = vec![0u8; 1 << 20];
                    let before = z.total_out();
                    let status = z.decompress(&input, &mut out, zlib_rs::InflateFlush::SyncFlush);
                    assert!(status.is_ok(), "{status:?}");
                    out.truncate((z.total_out() - before) as usize);
                    out
                }
                (None, true) => panic!("a compressed frame without permessage-deflate"),
                (_, false) => payload.to_vec(),
            };
            seen += text.windows(pat.len()).filter(|w| w == pat).count();
            at += head + len;
        }
        self.buf.drain(..at);
        seen
    }
}

/// The server's RSS growth per subscribed connection: 5,000 connections,
/// each after a 64 KiB subscribe and 100 snapshots, while updates trickle
/// in; with `compression`, every one offers permessage-deflate (context
/// takeover) and the server runs with `--compression on`.
async fn memory_per_subscribed_connection(compression: bool) -> u64 {
    const CONNS: usize = 5000;
    const SYMBOLS: usize = 100;
    // A replay that quotes every symbol at once, then 20 quotes a second
    // for two minutes, so every session gets 100 snapshots and a trickle of
    // updates.
    let mut feed = String::new();
    let t0: u64 = 1_764_167_400_000_000_000;
    for i in 0..SYMBOLS + 2400 {
        let t = t0 + (i.saturating_sub(SYMBOLS) as u64) * 50_000_000;
        feed.push_str(&format!(
            "{{\"type\":\"q\",\"sym\":\"S{:03}\",\"t\":{t},\"bp\":10.5,\"bs\":{i},\"ap\":10.6,\"as\":1}}\n",
            i % SYMBOLS
        ));
    }
    let path = std::env::temp_dir()
        .join(format!("tickwire-hardening-{}-{compression}.jsonl", std::process::id()));
    std::fs::write(&path, feed).unwrap();
    // The server in its own process, so its RSS is its own. One test
    // thread reads all 5,000 sessions, slower than the feed on a loaded
    // machine: the lag limit is raised so that the slow-client policy does
    // not close them before the measurement (build-on-ready keeps what a
    // slow session waits for bounded by its subscriptions).
    let srv = crate::cli::start_server(&[
        "--replay",
        path.to_str().unwrap(),
        "--max-connections-per-ip",
        "20000",
        "--lag-limit-ms",
        "600000",
        "--compression",
        if compression { "on" } else { "off" },
    ]);
    let pid = srv.proc.pid().to_string();
    // The replay's first 100 quotes must be in before anyone subscribes:
    // a symbol the feed has not named yet is rejected (404), and one
    // without a value gets no snapshot.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let body = crate::util::http_get(srv.addr, "/metrics").await.1;
        if crate::util::metric(&body, "tickwire_ticks_in_total") >= SYMBOLS as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "the replay's first quotes never came in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A 64 KiB subscribe for the 100 symbols, padded to the message limit.
    let names: Vec<String> = (0..SYMBOLS).map(|i| format!("S{i:03}")).collect();
    let mut text =
        json!({"type": "subscribe", "symbols": names, "channels": ["quotes"], "pad": ""})
            .to_string();
    let pad = 65_536 - text.len();
    text = text.replace("\"pad\":\"\"", &format!("\"pad\":\"{}\"", "x".repeat(pad)));
    assert_eq!(text.len(), 65_536);
    let msg = Arc::new(frame(0x1, text.as_bytes(), false));
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(CONNS + 1);
    let mut sessions = tokio::task::JoinSet::new();
    let session = |msg: &Arc<Vec<u8>>, ready_tx: &tokio::sync::mpsc::Sender<()>| {
        subscribed_session(srv.addr, msg.clone(), SYMBOLS, compression, ready_tx.clone())
    };
    // Warm up with one session, so allocator arenas and lazily built tables
    // are in the baseline.
    sessions.spawn(session(&msg, &ready_tx));
    // A session that fails panics in its task (saying why, within TIMEOUT)
    // and never reports ready.
    let mut ready_one = async || {
        let wait = TIMEOUT + Duration::from_secs(2);
        tokio::time::timeout(wait, ready.recv()).await.expect("a session got ready in time")
    };
    ready_one().await.unwrap();
    let baseline = rss_bytes(&pid);
    for i in 0..CONNS {
        // At most 64 handshakes in flight.
        if i >= 64 {
            ready_one().await.unwrap();
        }
        sessions.spawn(session(&msg, &ready_tx));
    }
    for _ in 0..64 {
        ready_one().await.unwrap();
    }
    let after = rss_bytes(&pid);
    let per_conn = after.saturating_sub(baseline) / CONNS as u64;
    eprintln!(
        "compression {compression}: server RSS {baseline} -> {after} bytes: {per_conn} bytes per \
         connection"
    );
    // Every session is still open and reading.
    assert!(sessions.try_join_next().is_none(), "a session ended early");
    sessions.abort_all();
    let _ = std::fs::remove_file(&path);
    per_conn
}

#[tokio::test]
async fn subscribed_connections_memory_per_connection_is_bounded() {
    let per_conn = memory_per_subscribed_connection(false).await;
    // The issue's target: 64 KiB. About 28 KB is measured: the session
    // tasks, 100 subscription entries and a 1 KiB read buffer. The 64 KiB
    // request's buffer is freed once it has been handled, and frames are
    // written without a write buffer (src/socket/ws.rs); with tungstenite,
    // which keeps both buffers at their high-water mark, it was 140 KB.
    assert!(per_conn < 64 * 1024, "{per_conn} bytes per connection");
}

#[tokio::test]
async fn compressing_connections_memory_per_connection_is_bounded() {
    let per_conn = memory_per_subscribed_connection(true).await;
    // Issue 19's target: at most 32 KiB more than the same connection
    // without compression (about 28 KB, the test above). The compressor
    // holds 16 KiB (src/socket/deflate/encoder.rs).
    assert!(per_conn < 28 * 1000 + 32 * 1024, "{per_conn} bytes per connection");
}
