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
