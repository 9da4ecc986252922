//! Scale-out on NATS (issue 16): one `tickwire ingest` and several edges
//! (`tickwire serve --nats`) on a real `nats-server` that each test starts
//! on a free loopback port. Edges give every update the same `seq` and
//! fields; a client killed off one edge resumes on another; a NATS restart
//! is `stale` then `live` with every gap reported; a late edge has the
//! snapshots from its first subscription; garbage on the bus is counted;
//! a new ingest is a new epoch on every edge.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::{Proc, ServerProc, start_tickwire};
use crate::resume::{Streams, assert_recovered, read_for, resume};
use crate::util::{Client, TIMEOUT, http_get, metric};

/// A `nats-server` with JetStream on a free loopback port, in its own
/// store directory; killed when dropped.
struct Nats {
    proc: Option<Proc>,
    port: u16,
    dir: PathBuf,
}

/// The `nats-server` binary (Debian's package puts it in /usr/sbin),
/// installed by the tests themselves when it is missing and they run as
/// root (`tests/provision.rs`).
fn nats_server_bin() -> PathBuf {
    crate::provision::debian_tool(
        "nats-server",
        "/usr/sbin/nats-server",
        "the scale-out tests (tests/bus.rs)",
    )
}

impl Nats {
    fn start() -> Nats {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("tickwire-nats-{}-{port}", std::process::id()));
        let mut n = Nats { proc: None, port, dir };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let proc = Proc::spawn(Command::new(nats_server_bin()).args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-sd",
            self.dir.to_str().unwrap(),
        ]));
        // Ready when it answers with its INFO line.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::Read;
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 4];
                if (&s).read_exact(&mut buf).is_ok() && &buf == b"INFO" {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "nats-server did not start: {}", proc.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        self.proc = Some(proc);
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: its memory stream is gone) and starts it
    /// again on the same port.
    fn restart(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal("KILL");
            p.wait_exit(TIMEOUT).expect("nats-server exits after SIGKILL");
        }
        self.spawn();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.proc.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Heartbeat interval of every process in these tests (ms): short, so that
/// stale and live come quickly.
const HB: &str = "200";

/// `tickwire ingest` with the synthetic feed at `rate` over `symbols`.
fn ingest(nats: &Nats, rate: u32, symbols: u32, extra: &[&str]) -> ServerProc {
    let (rate, symbols, url) = (rate.to_string(), symbols.to_string(), nats.url());
    let mut args = vec!["--nats", &url, "--hb-ms", HB, "--rate", &rate];
    args.extend(["--symbols", &symbols, "--shards", "1"]);
    args.extend(extra);
    start_tickwire("ingest", &args)
}

/// An edge named `name` (heartbeats every [`HB`] unless `extra` says).
fn edge(nats: &Nats, name: &str, extra: &[&str]) -> ServerProc {
    let url = nats.url();
    let mut args = vec!["--nats", &url, "--node-name", name, "--shards", "1"];
    if !extra.contains(&"--hb-ms") {
        args.extend(["--hb-ms", HB]);
    }
    args.extend(extra);
    start_tickwire("serve", &args)
}

/// The value of a counter on a server's `/metrics`.
async fn counter(addr: SocketAddr, name: &str) -> u64 {
    metric(&http_get(addr, "/metrics").await.1, name)
}

/// Waits (bounded) until `pred` holds for the counter `name`.
async fn wait_counter(addr: SocketAddr, name: &str, pred: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let v = counter(addr, name).await;
        if pred(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} is {v} after {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message's fields without the per-connection ones.
fn fields(m: &Value) -> Value {
    let mut m = m.clone();
    let o = m.as_object_mut().unwrap();
    o.remove("cseq");
    o.remove("to");
    m
}

/// The (channel, symbol, seq) of a market-data message.
fn key(m: &Value) -> Option<(String, String, u64)> {
    let ch = match m["type"].as_str()? {
        "q" => "quotes",
        "t" => "trades",
        "b" | "snapshot" => m["ch"].as_str()?,
        _ => return None,
    };
    Some((ch.to_string(), m["sym"].as_str()?.to_string(), m["seq"].as_u64()?))
}

/// Reads for `window`, keeping every update by (channel, symbol, seq).
async fn collect(
    c: &mut Client,
    window: Duration,
    into: &mut BTreeMap<(String, String, u64), Value>,
) {
    let end = tokio::time::Instant::now() + window;
    while let Ok(Some(m)) = tokio::time::timeout_at(end, c.try_next()).await {
        if let Some(k) = key(&m)
            && m["type"] != "snapshot"
        {
            into.insert(k, fields(&m));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_deliver_the_same_seq_with_the_same_fields() {
    let nats = Nats::start();
    let ing = ingest(&nats, 2000, 50, &[]);
    let a = edge(&nats, "edge-a", &[]);
    let b = edge(&nats, "edge-b", &[]);
    let mut ca = Client::connect(a.addr, "stamps=1").await;
    let mut cb = Client::connect(b.addr, "stamps=1").await;
    let ci = Client::connect(ing.addr, "").await;
    // One numbering, named by the ingest, and a name per node.
    assert_eq!(ca.welcome["epoch"], ci.welcome["epoch"], "{} {}", ca.welcome, ci.welcome);
    assert_eq!(cb.welcome["epoch"], ci.welcome["epoch"]);
    assert_eq!(ca.welcome["node"], "edge-a");
    assert_eq!(cb.welcome["node"], "edge-b");
    // Bars too: the ingest builds them once, the edges pass them on.
    let channels = ["quotes", "trades", "bars_1s", "bars_1m"];
    let req = json!({"symbols": ["*"], "channels": channels, "mode": "all", "snapshot": false});
    ca.subscribe(req.clone()).await;
    cb.subscribe(req).await;
    let (mut got_a, mut got_b) = (BTreeMap::new(), BTreeMap::new());
    tokio::join!(
        collect(&mut ca, Duration::from_millis(1500), &mut got_a),
        collect(&mut cb, Duration::from_millis(1500), &mut got_b)
    );
    let common: Vec<_> = got_a.keys().filter(|k| got_b.contains_key(*k)).collect();
    assert!(common.len() > 500, "{} updates seen by both edges", common.len());
    for ch in channels {
        assert!(common.iter().any(|k| k.0 == ch), "no {ch} update seen by both edges");
    }
    // A 1 s bar closes within the window, on both edges alike.
    assert!(common.iter().any(|k| k.0 == "bars_1s" && got_a[*k]["x"] == true), "no closed bar");
    for k in common {
        // The same update on both: every field, `ti` (the ingest's stamp)
        // included.
        assert_eq!(got_a[k], got_b[k], "{k:?}");
    }
    // The NATS client's own count covers every batch and heartbeat the
    // edge handled (more would be messages the client dropped).
    let m = http_get(a.addr, "/metrics").await.1;
    let handled = metric(&m, "tickwire_bus_batches_in_total")
        + metric(&m, "tickwire_bus_heartbeats_in_total");
    assert!(handled > 0);
    assert!(metric(&m, "tickwire_bus_nats_in_messages_total") >= handled, "{m}");
}

/// Reads every client for `window` at once.
async fn read_all(clients: &mut [(Client, Value, Streams)], window: Duration) {
    let reads = clients.iter_mut().map(|(c, _, s)| read_for(c, s, window));
    futures_util::future::join_all(reads).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_edge_resume_on_another_contiguously() {
    let nats = Nats::start();
    let history = ["--history", "4096", "--all-queue", "65536"];
    let _ing = ingest(&nats, 10_000, 100, &history);
    let mut a = edge(&nats, "edge-a", &history);
    let b = edge(&nats, "edge-b", &history);
    let req = json!({"symbols": ["*"], "mode": "all"});
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(a.addr, "").await;
        let epoch = c.welcome["epoch"].clone();
        c.subscribe(req.clone()).await;
        clients.push((c, epoch, Streams::default()));
    }
    read_all(&mut clients, Duration::from_millis(300)).await;
    assert!(clients.iter().all(|(_, _, s)| s.updates > 0));
    // SIGKILL mid-stream: the clients lose whatever was in flight.
    a.proc.signal("KILL");
    a.proc.wait_exit(TIMEOUT).expect("the edge is gone");
    read_all(&mut clients, Duration::from_millis(100)).await;
    let lost_on_a: u64 = clients.iter().map(|(_, _, s)| s.lost).sum();
    for (old, epoch, streams) in &mut clients {
        let mut c = Client::connect(b.addr, "").await;
        assert_eq!(&c.welcome["epoch"], epoch, "one numbering on every edge");
        assert_eq!(c.welcome["node"], "edge-b");
        let reply = resume(&mut c, req.clone(), epoch, streams).await;
        // Edge B holds every update after each stream's last one on A.
        assert_recovered(&reply, streams);
        *old = c;
    }
    let before: Vec<u64> = clients.iter().map(|(_, _, s)| s.updates).collect();
    // Every update once, in order, across both edges: `take` fails on a
    // duplicate or a gap without its exact overflow.
    read_all(&mut clients, Duration::from_millis(500)).await;
    for ((_, _, s), before) in clients.iter().zip(before) {
        assert!(s.updates > before);
    }
    let lost: u64 = clients.iter().map(|(_, _, s)| s.lost).sum();
    let bus_lost = counter(b.addr, "tickwire_bus_batches_lost_total").await;
    // Overflows are exact but may happen: a debug-build client reading
    // 10,000 JSON updates/s on a shared machine can fall behind its edge.
    eprintln!(
        "overflows reported: {lost_on_a} updates on edge A, {} on edge B; edge B lost {bus_lost} batches",
        lost - lost_on_a
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_is_stale_then_live_and_every_gap_is_reported() {
    let mut nats = Nats::start();
    let ing = ingest(&nats, 2000, 20, &["--history", "4096"]);
    // The edge's own pings every second: the test does not read while it
    // restarts NATS, and a peer that leaves two unanswered while no data
    // flows is dropped as dead.
    let a =
        edge(&nats, "edge-a", &["--history", "4096", "--all-queue", "65536", "--hb-ms", "1000"]);
    let mut c = Client::connect(a.addr, "").await;
    let epoch = c.welcome["epoch"].clone();
    c.subscribe(json!({"symbols": ["*"], "mode": "all"})).await;
    let mut streams = Streams::default();
    read_for(&mut c, &mut streams, Duration::from_millis(300)).await;
    assert!(streams.updates > 0);
    nats.restart();
    // Stale, then live; every message in between checked by `take`
    // (no seq backwards, no duplicate, every gap an exact overflow).
    let mut seen = Vec::new();
    let deadline = Instant::now() + 2 * TIMEOUT;
    while seen != ["stale", "live"] {
        assert!(Instant::now() < deadline, "status seen: {seen:?}");
        let m = c.next().await;
        streams.take(&m);
        if m["type"] == "status" {
            seen.push(m["feed"].as_str().unwrap().to_string());
        }
    }
    let before = streams.updates;
    read_for(&mut c, &mut streams, Duration::from_millis(500)).await;
    assert!(streams.updates > before, "updates flow again");
    eprintln!("updates reported lost over the restart: {}", streams.lost);
    // The numbering did not change.
    let again = Client::connect(a.addr, "").await;
    assert_eq!(again.welcome["epoch"], epoch);
    // The ingest made the latest-value stream again and refilled it.
    wait_counter(ing.addr, "tickwire_bus_lvc_republished_total", |v| v >= 2).await;
}

/// Reads for `window`, keeping every update and snapshot by (channel,
/// symbol, seq), without the fields that name their message type.
async fn read_known(
    c: &mut Client,
    known: &mut BTreeMap<(String, String, u64), Value>,
    window: Duration,
) {
    let end = tokio::time::Instant::now() + window;
    while let Ok(Some(m)) = tokio::time::timeout_at(end, c.try_next()).await {
        if let Some(k) = key(&m) {
            known.insert(k, bare(&m));
        }
    }
}

/// [`fields`] without `type` and `ch`: a snapshot and the update it shows
/// compare equal.
fn bare(m: &Value) -> Value {
    let mut f = fields(m);
    let o = f.as_object_mut().unwrap();
    o.remove("type");
    o.remove("ch");
    f
}

/// Subscribes to every stream in latest mode and returns the snapshots
/// (one per stream with a value) by (channel, symbol).
async fn snapshots(c: &mut Client) -> BTreeMap<(String, String), Value> {
    let reply = c.subscribe(json!({"symbols": ["*"], "mode": "latest"})).await;
    let with_value = reply["subs"].as_array().unwrap().iter().filter(|s| s["seq"] != 0).count();
    let mut out = BTreeMap::new();
    let deadline = Instant::now() + TIMEOUT;
    while out.len() < with_value {
        assert!(Instant::now() < deadline, "{} of {with_value} snapshots", out.len());
        let m = c.next().await;
        if m["type"] == "snapshot" {
            let (ch, sym, _) = key(&m).unwrap();
            out.insert((ch, sym), m);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_edge_has_the_same_snapshots_from_its_first_subscription() {
    let nats = Nats::start();
    // Slow streams (about one update per stream per second): a late edge
    // can only know most of them from JetStream.
    let ing = ingest(&nats, 200, 100, &["--lvc-ms", "100"]);
    let a = edge(&nats, "edge-a", &[]);
    // The reference: every update the ingest itself delivers, by (channel,
    // symbol, seq), its snapshots included.
    let mut ci = Client::connect(ing.addr, "").await;
    ci.subscribe(json!({"symbols": ["*"], "mode": "all"})).await;
    let mut known: BTreeMap<(String, String, u64), Value> = BTreeMap::new();
    read_known(&mut ci, &mut known, Duration::from_millis(2500)).await;
    // Until the ingest has published the latest value of most streams.
    wait_counter(ing.addr, "tickwire_bus_lvc_out_total", |v| v >= 150).await;
    let streams_before: BTreeSet<(String, String)> =
        known.keys().map(|(ch, sym, _)| (ch.clone(), sym.clone())).collect();
    let c = edge(&nats, "edge-c", &[]);
    let mut cc = Client::connect(c.addr, "").await;
    let mut ca = Client::connect(a.addr, "").await;
    assert_eq!(cc.welcome["node"], "edge-c");
    assert_eq!(cc.welcome["epoch"], ca.welcome["epoch"]);
    let (late, old) = tokio::join!(snapshots(&mut cc), snapshots(&mut ca));
    read_known(&mut ci, &mut known, Duration::from_millis(300)).await;
    // Every stream the ingest had a value for before C started has one.
    let missing: Vec<_> = streams_before.iter().filter(|k| !late.contains_key(*k)).collect();
    assert!(missing.is_empty(), "no snapshot on the late edge for {missing:?}");
    // Each is an update the ingest delivered: same seq, same fields; and
    // where edge A's snapshot has the same seq, it is the same message.
    let mut same_seq = 0;
    for (k, m) in &late {
        assert_eq!(known.get(&key(m).unwrap()), Some(&bare(m)), "snapshot {m} vs the ingest");
        if let Some(o) = old.get(k)
            && o["seq"] == m["seq"]
        {
            assert_eq!(bare(o), bare(m));
            same_seq += 1;
        }
    }
    assert!(same_seq > late.len() / 2, "{same_seq} of {} at the same seq on A and C", late.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_bus_is_skipped_and_counted() {
    use futures_util::StreamExt;
    use tickwire::bus::codec::BatchWriter;
    use tickwire::tick::{Price, SymbolId, Tick};
    let nats = Nats::start();
    let _ing = ingest(&nats, 500, 10, &[]);
    let a = edge(&nats, "edge-a", &[]);
    let mut c = Client::connect(a.addr, "").await;
    c.subscribe(json!({"symbols": ["*"], "mode": "all"})).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    // Our own subscription sees what the edge sees, in the same order.
    let mut watch = client.subscribe("tw.v1.md").await.unwrap();
    let mut w = BatchWriter::default();
    w.begin(1, 1);
    w.push(&Tick::trade(SymbolId(0), 1, Price(10_000), 1), "AAPL");
    let good = w.finish().to_vec();
    let mut newer = good.clone();
    newer[2] = 9;
    let garbage: [&[u8]; 4] = [b"hello", &good[..good.len() - 3], &newer, b"TW"];
    for g in garbage {
        client.publish("tw.v1.md", g.to_vec().into()).await.unwrap();
    }
    client.flush().await.unwrap();
    // Wait until our subscription had all four, so the edge had them too.
    let mut n = 0;
    while n < 4 {
        let m = tokio::time::timeout(TIMEOUT, watch.next()).await.unwrap().unwrap();
        n += usize::from(garbage.contains(&&m.payload[..]));
    }
    wait_counter(a.addr, "tickwire_bus_garbage_total", |v| v == 4).await;
    // The edge is still serving the feed.
    let mut streams = Streams::default();
    let before = counter(a.addr, "tickwire_bus_updates_in_total").await;
    read_for(&mut c, &mut streams, Duration::from_millis(400)).await;
    assert!(streams.updates > 0);
    assert!(counter(a.addr, "tickwire_bus_updates_in_total").await > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_restart_is_a_new_epoch_on_every_edge() {
    let nats = Nats::start();
    let mut first = ingest(&nats, 500, 20, &[]);
    let e1 = Client::connect(first.addr, "").await.welcome["epoch"].clone();
    // The edges' own heartbeats (and WebSocket pings) every second: a
    // client the test does not read while it starts a process is not
    // dropped as a dead peer (two unanswered pings).
    let slow_pings = ["--hb-ms", "1000"];
    let a = edge(&nats, "edge-a", &slow_pings);
    let mut c = Client::connect(a.addr, "").await;
    assert_eq!(c.welcome["epoch"], e1);
    c.subscribe(json!({"symbols": ["*"], "mode": "all"})).await;
    // Streams well into their numbering.
    c.until(|m| m["seq"].as_u64().is_some_and(|s| s >= 40)).await;
    // The ingest stops: the edge's feed is stale, its numbering unchanged.
    first.proc.signal("TERM");
    first.proc.wait_exit(TIMEOUT).expect("the ingest exits after SIGTERM");
    c.until(|m| m["type"] == "status" && m["feed"] == "stale").await;
    // A new ingest numbers from 1 under its own epoch: the edge follows,
    // and its sessions of the old epoch are told to reconnect.
    let second = ingest(&nats, 500, 20, &[]);
    let e2 = Client::connect(second.addr, "").await.welcome["epoch"].clone();
    assert_ne!(e1, e2);
    c.until_type("shutdown").await;
    assert_eq!(c.closed().await, Some(1012));
    // Its snapshots are the new epoch's, never the old one's (the latest
    // values in JetStream were emptied by the new ingest), and so are a
    // late edge's.
    let late = edge(&nats, "edge-late", &slow_pings);
    let mut again = Client::connect(a.addr, "").await;
    let mut cl = Client::connect(late.addr, "").await;
    assert_eq!(again.welcome["epoch"], e2);
    assert_eq!(cl.welcome["epoch"], e2);
    let (now_a, now_late) = tokio::join!(snapshots(&mut again), snapshots(&mut cl));
    let mut ci = Client::connect(second.addr, "").await;
    let truth = snapshots(&mut ci).await;
    for (k, m) in now_a.iter().chain(now_late.iter()) {
        let newest = truth.get(k).map(|t| t["seq"].as_u64().unwrap());
        assert!(
            newest.is_some_and(|n| m["seq"].as_u64().unwrap() <= n),
            "a snapshot of the old epoch: {m}, the ingest has {newest:?}"
        );
    }
}
