//! The plain HTTP routes that share the WebSocket port.

use crate::util::manual_server;

#[tokio::test]
async fn routes_answer_as_documented() {
    let ts = manual_server(|_| {});
    ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
    ts.flush();
    let (status, body) = ts.get("/healthz").await;
    // Health: 200 with the feed state.
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["status"].as_str(), v["feed"].as_str()), (Some("ok"), Some("live")));
    // The page at / shows the server is alive.
    let (status, body) = ts.get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>tickwire"));
    // /ws without an upgrade is a bad request; unknown paths are 404.
    assert_eq!(ts.get("/ws").await.0, 400);
    assert_eq!(ts.get("/nope").await.0, 404);
}

#[tokio::test]
async fn metrics_are_openmetrics_text() {
    let ts = manual_server(|_| {});
    ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
    ts.flush();
    let (status, body) = ts.get("/metrics").await;
    assert_eq!(status, 200);
    // Every family is exported, with HELP and TYPE lines (counters' samples
    // end in `_total`).
    for (name, kind) in [
        ("tickwire_connections", "gauge"),
        ("tickwire_subscriptions", "gauge"),
        ("tickwire_ticks_in", "counter"),
        ("tickwire_messages_out", "counter"),
        ("tickwire_frames_out", "counter"),
        ("tickwire_frames_direct", "counter"),
        ("tickwire_frames_direct_partial", "counter"),
        ("tickwire_bytes_out", "counter"),
        ("tickwire_conflated", "counter"),
        ("tickwire_overflows", "counter"),
        ("tickwire_ring_overruns", "counter"),
        ("tickwire_closes", "counter"),
        ("tickwire_close_resets", "counter"),
        ("tickwire_ingest_to_send_seconds", "histogram"),
    ] {
        assert!(body.contains(&format!("# TYPE {name} {kind}\n")), "{name} missing: {body}");
    }
    // One family per name: OpenMetrics parsers refuse a name twice.
    let mut families: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
    let n = families.len();
    families.sort();
    families.dedup();
    assert_eq!(families.len(), n, "a family declared twice: {body}");
    assert!(body.contains("tickwire_ticks_in_total 1\n"), "{body}");
    assert!(body.contains("tickwire_closes_total{reason=\"slow_client\"} 0\n"), "{body}");
    assert!(body.contains("tickwire_ingest_to_send_seconds_bucket{le=\"+Inf\"}"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ts = manual_server(|_| {});
    let mut s = tokio::net::TcpStream::connect(ts.addr).await.unwrap();
    let head = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(16 * 1024));
    let _ = s.write_all(head.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(crate::util::TIMEOUT, s.read_to_end(&mut buf))
        .await
        .expect("answer in time");
    // 431: the head is larger than the server accepts.
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}

#[tokio::test]
async fn latency_histogram_counts_every_update_sent() {
    use serde_json::json;
    let ts = manual_server(|_| {});
    ts.feed.quote("AAPL", 1.0, 1, 1.1, 1);
    ts.flush();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = crate::util::Client::connect(ts.addr, "").await;
        c.subscribe(json!({"symbols": ["AAPL"], "mode": "all", "snapshot": false})).await;
        clients.push(c);
    }
    for i in 0..50 {
        ts.feed.quote("AAPL", 1.0 + f64::from(i) * 0.01, 1, 1.2, 1);
    }
    ts.flush();
    for c in &mut clients {
        c.until(|m| m["seq"] == 51).await;
    }
    // The histogram is merged every 100 ms; wait for it (bounded).
    let deadline = tokio::time::Instant::now() + crate::util::TIMEOUT;
    loop {
        let (_, body) = ts.get("/metrics").await;
        let (sent, counted) = (
            crate::util::metric(&body, "tickwire_updates_out_total"),
            crate::util::metric(&body, "tickwire_ingest_to_send_seconds_count"),
        );
        // One latency sample per update sent, though shared tails record them in bulk.
        if sent == 150 && counted == sent {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "sent {sent}, counted {counted}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_over_the_per_ip_limit_get_503() {
    let ts = manual_server(|c| c.max_connections_per_ip = 2);
    let a = crate::util::Client::connect(ts.addr, "").await;
    let _b = crate::util::Client::connect(ts.addr, "").await;
    // A third connection from the same address is refused before the upgrade...
    let (status, body) = ts.get("/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("connection limit"));
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws", ts.addr)).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    drop(a);
    // Closing one gives its slot back (the close completes on the shard).
    let deadline = tokio::time::Instant::now() + crate::util::TIMEOUT;
    loop {
        let (status, body) = ts.get("/metrics").await;
        if status == 200 {
            let refused = crate::util::metric(&body, "tickwire_connections_refused_total");
            // The two above, plus any of these polls that came too early.
            assert!(refused >= 2, "{refused}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never released");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn echo_endpoint_only_with_its_flag() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let ts = manual_server(|_| {});
    // Off by default: /echo is an unknown path, upgrade or not.
    assert_eq!(ts.get("/echo").await.0, 404);
    assert!(tokio_tungstenite::connect_async(format!("ws://{}/echo", ts.addr)).await.is_err());
    let ts = manual_server(|c| c.echo_endpoint = true);
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://{}/echo", ts.addr)).await.unwrap();
    // On: an upgrade without a subprotocol, and whatever is sent comes back.
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
    ws.send(Message::text("{\"type\":\"ping\"}")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("{\"type\":\"ping\"}"));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(vec![1u8, 2, 3]));
    ws.close(None).await.unwrap();
}

/// Sends an upgrade to `path` offering `extensions` over raw TCP; returns
/// the socket and the response head.
async fn upgrade_offering(
    addr: std::net::SocketAddr,
    path: &str,
    extensions: &str,
) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: {extensions}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let read_head = async {
        let mut byte = [0u8];
        // Byte by byte, so that nothing past the head is consumed.
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed in the head");
            head.push(byte[0]);
        }
    };
    tokio::time::timeout(crate::util::TIMEOUT, read_head).await.expect("response head in time");
    (s, String::from_utf8(head).unwrap())
}

#[tokio::test]
async fn echo_negotiates_permessage_deflate() {
    use tickwire::socket::{deflate, ws};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let on = Some(deflate::Settings { window_bits: 12 });
    let ts = manual_server(|c| {
        c.echo_endpoint = true;
        c.compression = on;
    });
    // What browsers offer: accepted, with the server's window and no
    // context kept for the client's messages.
    let offer = "permessage-deflate; client_max_window_bits";
    let (mut s, head) = upgrade_offering(ts.addr, "/echo", offer).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let agreed = "sec-websocket-extensions: permessage-deflate; client_no_context_takeover; server_max_window_bits=12\r\n";
    assert!(head.to_ascii_lowercase().contains(agreed), "{head}");
    // A compressed text message, masked as a client sends it...
    let text = r#"{"type":"subscribe","symbols":["AAPL","MSFT"]}"#.repeat(3);
    let settings = deflate::Settings { window_bits: 15 };
    let agreement = deflate::negotiate(&["permessage-deflate"], &settings).unwrap();
    let mut payload = Vec::new();
    deflate::Deflater::new(&agreement).compress(text.as_bytes(), &mut payload);
    assert!(payload.len() < 126 && payload.len() < text.len());
    let mask = [1, 2, 3, 4];
    let mut frame = vec![0xC1, 0x80 | payload.len() as u8, 1, 2, 3, 4];
    ws::unmask(&mut payload, mask, 0);
    frame.extend_from_slice(&payload);
    s.write_all(&frame).await.unwrap();
    // ...comes back compressed (RSV1), and inflates to the same text.
    let mut head = [0u8; 2];
    tokio::time::timeout(crate::util::TIMEOUT, s.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(head[0], 0xC1, "FIN, RSV1, text");
    let mut back = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut back).await.unwrap();
    let mut inflated = Vec::new();
    deflate::inflate(&back, 1 << 16, &mut inflated).unwrap();
    assert_eq!(inflated, text.as_bytes());
    // Sessions negotiate it the same way, and `--compression off` turns
    // it off for both.
    let (_s, head) = upgrade_offering(ts.addr, "/ws", offer).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains(agreed), "{head}");
    let ts = manual_server(|c| {
        c.echo_endpoint = true;
        c.compression = None;
    });
    for path in ["/echo", "/ws"] {
        let (_s, head) = upgrade_offering(ts.addr, path, offer).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("sec-websocket-extensions"), "{head}");
    }
}
