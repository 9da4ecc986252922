//! Live ingest over TCP (`--tcp-feed HOST:PORT`): lines from an upstream
//! become updates; a dropped or silent upstream makes the feed `stale`; the
//! source reconnects by itself and `live` follows, with `seq` going on.
//! The upstream here is a plain `TcpListener` driven by the test.

use std::time::Duration;

use serde_json::{Value, json};
use tickwire::Config;
use tickwire::config::SourceChoice;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::util::{Client, TIMEOUT, http_get, metric, test_config};

/// Waits for the server's (re)connection to the upstream.
async fn accept(upstream: &TcpListener) -> TcpStream {
    let (s, _) = tokio::time::timeout(TIMEOUT, upstream.accept())
        .await
        .expect("the server connects to the upstream in time")
        .unwrap();
    s
}

/// Reads until a `status` message saying `feed` (a busy machine may add a
/// `stale`/`live` pair before the first line arrives).
async fn wait_status(c: &mut Client, feed: &str) {
    c.until(|m| m["type"] == "status" && m["feed"] == feed).await;
}

/// Reads until the next update of `kind`.
async fn next_update(c: &mut Client, kind: &str) -> Value {
    c.until(|m| m["type"] == kind).await
}

#[tokio::test]
async fn tcp_feed_goes_stale_on_disconnect_and_reconnects() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    let mut config = Config { source: SourceChoice::Tcp(addr.to_string()), ..test_config() };
    config.shard.hb = Duration::from_millis(400);
    let server = tickwire::start(&config).unwrap();
    let mut conn = accept(&upstream).await;
    let mut c = Client::connect(server.local_addr(), "").await;
    wait_status(&mut c, "live").await;
    c.subscribe(json!({"symbols": ["*"], "mode": "all"})).await;

    // A quote, a garbage line and a heartbeat (blank line).
    conn.write_all(b"{\"type\":\"q\",\"sym\":\"LIVE\",\"t\":1,\"bp\":10.5,\"bs\":1,\"ap\":10.6,\"as\":2}\nnot json\n\n")
        .await
        .unwrap();
    let q = next_update(&mut c, "q").await;
    assert_eq!(
        (q["sym"].as_str(), q["seq"].as_u64(), q["bp"].as_f64()),
        (Some("LIVE"), Some(1), Some(10.5))
    );

    // The upstream goes away: stale, then the source reconnects: live.
    drop(conn);
    wait_status(&mut c, "stale").await;
    let mut conn = accept(&upstream).await;
    wait_status(&mut c, "live").await;
    // Numbering goes on across the reconnect: same stream, same epoch.
    conn.write_all(
        b"{\"type\":\"q\",\"sym\":\"LIVE\",\"t\":2,\"bp\":10.4,\"bs\":1,\"ap\":10.6,\"as\":2}\n",
    )
    .await
    .unwrap();
    let q = next_update(&mut c, "q").await;
    assert_eq!((q["seq"].as_u64(), q["bp"].as_f64()), (Some(2), Some(10.4)));

    // Silence for a heartbeat interval: stale; a heartbeat line: live again.
    let quiet = tokio::time::Instant::now();
    wait_status(&mut c, "stale").await;
    // Within one heartbeat interval of the last line (plus scheduling slack).
    let waited = quiet.elapsed();
    assert!(waited < Duration::from_millis(400 + 500), "{waited:?}");
    conn.write_all(b"\n").await.unwrap();
    wait_status(&mut c, "live").await;

    let (_, body) = http_get(server.local_addr(), "/metrics").await;
    assert_eq!(metric(&body, "tickwire_feed_bad_records_total"), 1);
    assert_eq!(metric(&body, "tickwire_ticks_in_total"), 2);
    server.shutdown();
}

#[tokio::test]
async fn tcp_feed_without_upstream_is_stale_and_keeps_serving() {
    // A port with nothing listening (bound, then closed).
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let config = Config { source: SourceChoice::Tcp(addr.to_string()), ..test_config() };
    let server = tickwire::start(&config).unwrap();
    let mut c = Client::connect(server.local_addr(), "").await;
    wait_status(&mut c, "stale").await;
    // The server still answers requests.
    let pong = c.request(json!({"type": "ping", "ts": 5}), 9).await;
    assert_eq!(pong["type"], "pong");
    server.shutdown();
}

/// A source that is quiet for a moment, then panics.
struct Doomed {
    panic_at: std::time::Instant,
}

impl tickwire::feed::FeedSource for Doomed {
    fn poll(&mut self, _out: &mut Vec<tickwire::tick::Tick>) -> tickwire::feed::Poll {
        if std::time::Instant::now() < self.panic_at {
            return tickwire::feed::Poll::WaitUntil(self.panic_at);
        }
        panic!("a feed source bug (expected by this test)");
    }
}

#[tokio::test]
async fn a_source_that_panics_makes_the_feed_stale_and_the_server_keeps_serving() {
    let panic_at = std::time::Instant::now() + Duration::from_millis(300);
    let config = test_config();
    let server =
        tickwire::server::start_with(&config, move |_| Ok(Box::new(Doomed { panic_at }))).unwrap();
    let mut c = Client::connect(server.local_addr(), "").await;
    wait_status(&mut c, "stale").await;
    // Within one heartbeat interval of the failure.
    let late = std::time::Instant::now().saturating_duration_since(panic_at);
    assert!(late < config.shard.hb, "stale {late:?} after the panic");
    let pong = c.request(json!({"type": "ping"}), 3).await;
    assert_eq!(pong["type"], "pong");
    server.shutdown();
}
