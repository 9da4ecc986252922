//! The load client: C WebSocket sessions spread over T OS threads.
//!
//! Each thread runs a current-thread tokio runtime that owns its sessions
//! for life (the server's own thread-per-core shape), so the hot path takes
//! no lock: the sessions of one thread share one [`ThreadStats`] through a
//! `RefCell`. A run has phases, all on the wall clock (nanoseconds since
//! the Unix epoch, the clock of the server's stamps):
//!
//! 1. connect every session and read its `welcome` ([`Load::start`],
//!    [`Load::wait_connected`]);
//! 2. [`Load::subscribe`]: every session sends its `subscribe`; the harness
//!    waits until each has its `subscribed` reply ([`Load::subscribed`]),
//!    so that the warm-up starts after the subscriptions, however long a
//!    thousand of them take; messages received before the window are
//!    checked but not measured (warm-up);
//! 3. [`Load::go`] sets the measured window: every message in it is checked
//!    and measured;
//! 4. optionally, convergence ([`Load::set_targets`]): each session counts
//!    the streams still behind the server's positions and reports when none
//!    is;
//! 5. [`Load::finish`]: sessions stop reading and close.
//!
//! Parsing and the checks follow `tools/load.rs`: `cseq` must rise by one
//! per message (a gap is transport loss), `seq` by `cf` per stream unless an
//! `overflow` came first (a jump without one is a server bug). Binary frames
//! (`tickwire.v1.bin`) are decoded with the library's reference decoder.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use simd_json::prelude::*;
use tickwire::protocol::binary;

use crate::scenario::Protocol;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::inflating::Inflating;

type Ws = WebSocketStream<Inflating<TcpStream>>;

/// Largest latency the histograms hold (larger values saturate): 100 s.
pub const HIST_MAX_NS: u64 = 100_000_000_000;
/// Width of one latency-over-time bucket.
pub const TIMELINE_BUCKET_NS: u64 = 100_000_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often an idle session looks at the stop flag and the targets.
const POLL: Duration = Duration::from_millis(50);
const BIN_PROTOCOL: &str = "tickwire.v1.bin";
/// How far a server's send stamp may be past our receipt before its clock
/// counts as ahead of ours (`Counts::stamps_ahead`).
pub const CLOCK_SLACK_NS: u64 = 50_000;

/// Wall clock in nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("histogram bounds")
}

/// What the sessions do.
pub struct LoadPlan {
    /// Full URL, query included (`?stamps=1&time_unit=ns`).
    pub url: String,
    /// JSON, `tickwire.v1.bin` (offered in the handshake), or JSON inside
    /// Socket.IO packets.
    pub protocol: Protocol,
    /// Whether messages carry a `cseq` to check.
    pub cseq: bool,
    /// Offer permessage-deflate (and inflate what comes compressed).
    pub compressed: bool,
    /// One `subscribe` request per session; its length is C.
    pub subscribes: Vec<String>,
    /// OS threads (each a current-thread runtime).
    pub threads: usize,
    /// Session i binds to 127.0.0.(1 + (first + i) mod N) before
    /// connecting.
    pub source_addresses: u8,
    /// The number of this plan's first session among all of the run's
    /// (client processes share a run's sessions).
    pub first: usize,
}

/// The measured window, wall-clock ns.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// First instant measured.
    pub start_ns: u64,
    /// First instant no longer measured.
    pub end_ns: u64,
}

/// The server's positions at the end of the window, per (channel, symbol):
/// a converged session has reached each of them.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Targets {
    /// (channel: 0 quotes, 1 trades; symbol; seq).
    pub streams: Vec<(u8, String, u64)>,
}

/// Counters of one thread's sessions (or all of them, merged).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// `q`/`t` messages in the window (snapshots excluded).
    pub updates: u64,
    /// Sum of their `cf` (1 when absent): source updates they stand for.
    pub cf_sum: u64,
    /// Frames in the window.
    pub frames: u64,
    /// Payload bytes in the window.
    pub bytes: u64,
    /// Messages of every type in the window.
    pub msgs: u64,
    /// `cseq` discontinuities (whole session).
    pub cseq_gaps: u64,
    /// Messages those gaps skipped.
    pub cseq_missing: u64,
    /// `seq` jumps without an `overflow` (whole session).
    pub seq_gaps: u64,
    /// `overflow` messages in the window.
    pub overflows: u64,
    /// Updates they reported lost.
    pub overflow_lost: u64,
    /// `slow` notices.
    pub slow: u64,
    /// Symbols rejected in `subscribed`.
    pub rejected: u64,
    /// Frames or messages that could not be read.
    pub malformed: u64,
    /// Updates whose send stamp `to` is later than their receipt by more
    /// than [`CLOCK_SLACK_NS`]: the server's clock runs ahead of ours.
    pub stamps_ahead: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        macro_rules! add {
            ($($f:ident),*) => { $(self.$f += o.$f;)* };
        }
        add!(
            updates,
            cf_sum,
            frames,
            bytes,
            msgs,
            cseq_gaps,
            cseq_missing,
            seq_gaps,
            overflows,
            overflow_lost,
            slow,
            rejected,
            malformed,
            stamps_ahead
        );
    }
}

/// Latency distributions, ns.
pub struct Latencies {
    /// Receive wall clock − source time `t` (when the tick was due).
    pub e2e: Histogram<u64>,
    /// `ti − t`: source to the server's ingest.
    pub src_ingest: Histogram<u64>,
    /// `to − ti`: ingest to the frame's encoding.
    pub ingest_send: Histogram<u64>,
    /// Receive wall clock − `to`: socket buffers, loopback, client.
    pub send_recv: Histogram<u64>,
}

impl Latencies {
    /// Empty histograms.
    pub fn new() -> Latencies {
        Latencies {
            e2e: new_hist(),
            src_ingest: new_hist(),
            ingest_send: new_hist(),
            send_recv: new_hist(),
        }
    }

    /// Adds another set (same bounds).
    pub fn add(&mut self, o: &Latencies) {
        self.e2e.add(&o.e2e).expect("same bounds");
        self.src_ingest.add(&o.src_ingest).expect("same bounds");
        self.ingest_send.add(&o.ingest_send).expect("same bounds");
        self.send_recv.add(&o.send_recv).expect("same bounds");
    }

    /// The four, named as in reports.
    pub fn named(&self) -> [(&'static str, &Histogram<u64>); 4] {
        [
            ("e2e", &self.e2e),
            ("src_to_ingest", &self.src_ingest),
            ("ingest_to_send", &self.ingest_send),
            ("send_to_recv", &self.send_recv),
        ]
    }
}

/// End-to-end latency per [`TIMELINE_BUCKET_NS`] of the window, in µs
/// (2 significant digits: enough for a chart, small enough per bucket).
pub struct Timeline {
    /// One histogram per bucket.
    pub buckets: Vec<Histogram<u64>>,
}

impl Timeline {
    /// Empty buckets covering `window`.
    pub fn new(window: Duration) -> Timeline {
        let n = (window.as_nanos() as u64).div_ceil(TIMELINE_BUCKET_NS).max(1) as usize;
        let h = || Histogram::new_with_bounds(1, HIST_MAX_NS / 1000, 2).expect("bounds");
        Timeline { buckets: (0..n).map(|_| h()).collect() }
    }

    /// Adds another timeline of the same window.
    pub fn add(&mut self, o: &Timeline) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            a.add(b).expect("same bounds");
        }
    }
}

/// Everything one thread measured.
pub struct ThreadStats {
    /// Counters.
    pub n: Counts,
    /// Latencies.
    pub lat: Latencies,
    /// End-to-end over time.
    pub timeline: Timeline,
}

impl ThreadStats {
    /// Nothing measured yet, over `window`.
    pub fn new(window: Duration) -> ThreadStats {
        ThreadStats { n: Counts::default(), lat: Latencies::new(), timeline: Timeline::new(window) }
    }

    /// Adds another thread's (or process's) measurements.
    pub fn add(&mut self, o: &ThreadStats) {
        self.n.add(&o.n);
        self.lat.add(&o.lat);
        self.timeline.add(&o.timeline);
    }

    /// Records one update's stamps; `now` is inside the window.
    fn record(&mut self, start_ns: u64, now: u64, t: u64, ti: Option<u64>, to: Option<u64>) {
        let (origin, from_t) = latency_origin(t, ti);
        let e2e = now.saturating_sub(origin);
        self.lat.e2e.saturating_record(e2e);
        if let Some(ti) = ti {
            if from_t {
                self.lat.src_ingest.saturating_record(ti - t);
            }
            if let Some(to) = to {
                self.lat.ingest_send.saturating_record(to.saturating_sub(ti));
            }
        }
        if let Some(to) = to {
            self.lat.send_recv.saturating_record(now.saturating_sub(to));
            self.n.stamps_ahead += u64::from(to > now + CLOCK_SLACK_NS);
        }
        let i = ((now - start_ns) / TIMELINE_BUCKET_NS) as usize;
        if let Some(b) = self.timeline.buckets.get_mut(i) {
            b.saturating_record(e2e / 1000);
        }
    }
}

/// Where an update's end-to-end latency counts from, and whether that is
/// its source time `t`. `t` when the server stamped it on its own clock at
/// most [`SOURCE_ON_SERVER_CLOCK`] before ingesting it (`ti`), or when there
/// is no `ti` (peers): the synthetic feed's `t` is when the tick was due
/// (so stalls count in full), and so is a replay's with `--time-shift now`
/// at `--speed 1`. Otherwise `ti`: a replay's `t` is the time recorded in
/// the file (another day, or shifted off the server's clock), and latency
/// then counts from the server's ingest on the replay's schedule.
fn latency_origin(t: u64, ti: Option<u64>) -> (u64, bool) {
    match ti {
        Some(ti) if t > ti || ti - t > SOURCE_ON_SERVER_CLOCK => (ti, false),
        _ => (t, true),
    }
}

/// See [`latency_origin`]: 10 s, far beyond any feed delay a run survives,
/// far below the distance of a recorded time from the run.
const SOURCE_ON_SERVER_CLOCK: u64 = 10_000_000_000;

/// How one session ended.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ClientResult {
    /// The session's number in the run (its `subscribe` in the plan).
    pub index: usize,
    /// Updates it received in the window.
    pub updates: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Convergence runs: streams still below the server's position at the
    /// end, and one of them as an example.
    pub behind: Option<(usize, String)>,
}

/// The merged outcome of a load.
pub struct LoadResult {
    /// All threads' measurements.
    pub stats: ThreadStats,
    /// One per session that connected.
    pub clients: Vec<ClientResult>,
    /// Sessions that never connected, with the reason. Sessions of threads
    /// that did not stop in time are in neither list.
    pub connect_failures: Vec<String>,
}

/// State shared by the threads and the harness (touched per phase, not per
/// message, except `stop` and `targets`: one relaxed load each per frame).
struct Shared {
    stop: AtomicBool,
    targets: OnceLock<Targets>,
    converged: AtomicUsize,
    /// Threads done connecting.
    connect_done: AtomicUsize,
    connected: AtomicUsize,
    /// Sessions that have their `subscribed` reply.
    subscribed: AtomicUsize,
    /// The measured window, once [`Load::go`] set it.
    window: OnceLock<Window>,
    connect_failures: Mutex<Vec<String>>,
}

/// A running load.
pub struct Load {
    threads: Vec<JoinHandle<(ThreadStats, Vec<ClientResult>)>>,
    shared: Arc<Shared>,
    /// Flips to true at [`Load::subscribe`].
    go: watch::Sender<bool>,
    window: Duration,
}

impl Load {
    /// Starts the threads; each connects its sessions right away.
    /// `window` sizes the latency-over-time buckets.
    pub fn start(plan: LoadPlan, window: Duration) -> Load {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            targets: OnceLock::new(),
            converged: AtomicUsize::new(0),
            connect_done: AtomicUsize::new(0),
            connected: AtomicUsize::new(0),
            subscribed: AtomicUsize::new(0),
            window: OnceLock::new(),
            connect_failures: Mutex::new(Vec::new()),
        });
        let (go, go_rx) = watch::channel(false);
        let plan = Arc::new(plan);
        let threads = (0..plan.threads)
            .map(|t| {
                let (plan, shared, go_rx) = (plan.clone(), shared.clone(), go_rx.clone());
                std::thread::Builder::new()
                    .name(format!("bench-client-{t}"))
                    .spawn(move || thread_main(t, &plan, shared, go_rx, window))
                    .expect("spawn client thread")
            })
            .collect();
        Load { threads, shared, go, window }
    }

    /// Waits until every thread has finished connecting (or `limit`);
    /// returns the number of sessions connected.
    pub fn wait_connected(&self, limit: Duration) -> usize {
        let end = Instant::now() + limit;
        while self.shared.connect_done.load(Ordering::Acquire) < self.threads.len()
            && Instant::now() < end
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Every session sends its `subscribe`.
    pub fn subscribe(&self) {
        self.go.send_replace(true);
    }

    /// Sessions that have their `subscribed` reply so far.
    pub fn subscribed(&self) -> usize {
        self.shared.subscribed.load(Ordering::Acquire)
    }

    /// Sets the measured window, from `w.start_ns` to `w.end_ns`.
    pub fn go(&self, w: Window) {
        debug_assert!(w.end_ns - w.start_ns <= self.window.as_nanos() as u64 + TIMELINE_BUCKET_NS);
        let _ = self.shared.window.set(w);
    }

    /// Publishes the convergence targets.
    pub fn set_targets(&self, t: Targets) {
        let _ = self.shared.targets.set(t);
    }

    /// Sessions that have reached every target so far.
    pub fn converged(&self) -> usize {
        self.shared.converged.load(Ordering::Acquire)
    }

    /// Stops every session and merges the threads' results; threads still
    /// running after `limit` are left behind and counted.
    pub fn finish(self, limit: Duration) -> LoadResult {
        self.shared.stop.store(true, Ordering::Release);
        self.go.send_replace(true); // wakes threads still waiting; they see `stop`
        let end = Instant::now() + limit;
        let mut stats = ThreadStats::new(self.window);
        let mut clients = Vec::new();
        for t in self.threads {
            while !t.is_finished() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !t.is_finished() {
                continue;
            }
            if let Ok((st, cl)) = t.join() {
                stats.add(&st);
                clients.extend(cl);
            }
        }
        let connect_failures =
            std::mem::take(&mut *self.shared.connect_failures.lock().expect("lock"));
        LoadResult { stats, clients, connect_failures }
    }
}

/// One client thread: connect its share of sessions and run them (each
/// subscribes when `go` flips).
fn thread_main(
    t: usize,
    plan: &LoadPlan,
    shared: Arc<Shared>,
    go: watch::Receiver<bool>,
    window: Duration,
) -> (ThreadStats, Vec<ClientResult>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let mine: Vec<(usize, String)> =
        plan.subscribes.iter().cloned().enumerate().skip(t).step_by(plan.threads).collect();
    local.block_on(&rt, async move {
        // Each session runs as soon as it is connected: it reads (and so
        // answers the server's pings: a session left idle while the rest of
        // a connect storm connects would be closed as a dead peer) and sends
        // its `subscribe` when `go` flips. The thread is done connecting
        // when its last attempt has ended.
        let stats = Rc::new(RefCell::new(ThreadStats::new(window)));
        let names = Rc::new(RefCell::new(Names::default()));
        let framing = Framing { socketio: plan.protocol == Protocol::SocketIo, cseq: plan.cseq };
        let attempts_left = Rc::new(std::cell::Cell::new(mine.len()));
        let mut tasks = Vec::new();
        for (i, sub) in mine {
            let (stats, names, shared) = (stats.clone(), names.clone(), shared.clone());
            let (go, left) = (go.clone(), attempts_left.clone());
            let (url, protocol, compressed) = (plan.url.clone(), plan.protocol, plan.compressed);
            let from = source_address(plan.first + i, plan.source_addresses);
            let task = tokio::task::spawn_local(async move {
                let c = connect(url, protocol, compressed, None, from).await;
                match &c {
                    Ok(_) => _ = shared.connected.fetch_add(1, Ordering::AcqRel),
                    Err(e) => shared.connect_failures.lock().expect("lock").push(e.clone()),
                }
                left.set(left.get() - 1);
                if left.get() == 0 {
                    shared.connect_done.fetch_add(1, Ordering::AcqRel);
                }
                match c {
                    Ok(ws) => Some(run_session(ws, sub, go, framing, stats, names, shared).await),
                    Err(_) => None,
                }
            });
            tasks.push((plan.first + i, task));
        }
        if tasks.is_empty() {
            shared.connect_done.fetch_add(1, Ordering::AcqRel);
        }
        let mut results = Vec::new();
        for (index, t) in tasks {
            let mut r = match t.await {
                Ok(Some(r)) => r,
                Ok(None) => continue, // never connected: a connect failure
                Err(e) => {
                    ClientResult { error: Some(format!("session task: {e}")), ..Default::default() }
                }
            };
            r.index = index;
            results.push(r);
        }
        let stats = Rc::try_unwrap(stats).map(RefCell::into_inner).unwrap_or_else(|rc| {
            let mut s = ThreadStats::new(window);
            s.add(&rc.borrow());
            s
        });
        (stats, results)
    })
}

/// The first frame must be `[{"type":"welcome",...}]`, in ns if it says.
fn check_welcome(text: &str) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("welcome is not JSON: {e}"))?;
    let w = v.get(0).filter(|w| w["type"] == "welcome");
    match w {
        None => Err(format!("first frame is not a welcome: {:.200}", text)),
        Some(w) => match w.get("time_unit").and_then(|u| u.as_str()) {
            Some(u) if u != "ns" => Err(format!("welcome time_unit is {u}, not ns")),
            _ => Ok(()),
        },
    }
}

/// `SO_RCVBUF` of a stalled session (the kernel doubles it and keeps a
/// floor): small, so that the server's writes block soon after it stops
/// reading, as a far-away client that does not read would make them.
pub const STALLED_RCVBUF: u32 = 4096;

/// How one stalled session ended (see [`Stalled`]).
#[derive(Debug, Clone, Default)]
pub struct StalledResult {
    /// The server had closed it: the drain ended on a close frame, EOF or
    /// a reset.
    pub closed: bool,
    /// How the drain ended (`close 4008 "slow client"`, `EOF`, `reset`,
    /// `still open`, or why it never subscribed).
    pub how: String,
    /// Seconds from the subscription to the end of the drain (EOF, close
    /// frame or error). An upper bound of when the server closed it.
    pub drained_after_s: Option<f64>,
    /// Payload bytes read while draining.
    pub drained_bytes: u64,
}

/// Sessions that open, subscribe like the healthy ones, and then never
/// read: nothing touches their sockets (not even a peek) until
/// [`Stalled::drain`], after the measured window. Their receive buffer is
/// [`STALLED_RCVBUF`], set before `connect` so that the advertised window
/// is small too. They run on a thread of their own and appear in none of
/// the load's numbers. Draining reads and discards until the server's
/// close (close frame, EOF or reset) or a time limit: a session still
/// getting data then was never closed.
pub struct Stalled {
    handle: JoinHandle<Vec<StalledResult>>,
    connected: std::sync::mpsc::Receiver<Result<usize, String>>,
    go: Option<tokio::sync::oneshot::Sender<Instant>>,
    drain: Option<tokio::sync::oneshot::Sender<Duration>>,
}

impl Stalled {
    /// Starts a thread that connects `n` sessions to `url` right away.
    pub fn start(
        url: String,
        binary: bool,
        compressed: bool,
        subscribe: String,
        n: usize,
    ) -> Stalled {
        let (ctx, crx) = std::sync::mpsc::channel();
        let (go, go_rx) = tokio::sync::oneshot::channel::<Instant>();
        let (drain, drain_rx) = tokio::sync::oneshot::channel::<Duration>();
        let handle = std::thread::Builder::new()
            .name("bench-stalled".into())
            .spawn(move || {
                block_on_local(async move {
                    let protocol = if binary { Protocol::Binary } else { Protocol::Json };
                    let conns = futures_util::future::join_all((0..n).map(|_| {
                        connect(url.clone(), protocol, compressed, Some(STALLED_RCVBUF), None)
                    }))
                    .await;
                    let mut socks = Vec::new();
                    let mut errors = Vec::new();
                    for c in conns {
                        match c {
                            Ok(ws) => socks.push(ws),
                            Err(e) => errors.push(e),
                        }
                    }
                    let _ = ctx.send(match errors.first() {
                        None => Ok(socks.len()),
                        Some(e) => Err(format!("{} stalled sessions failed: {e}", errors.len())),
                    });
                    let failed = |how: String| StalledResult { how, ..Default::default() };
                    let mut out: Vec<StalledResult> =
                        errors.into_iter().map(|e| failed(format!("connect: {e}"))).collect();
                    let Ok(t0) = go_rx.await else { return out };
                    let mut subscribed = Vec::new();
                    for mut ws in socks {
                        match ws.send(Message::Text(subscribe.clone().into())).await {
                            Ok(()) => subscribed.push(ws),
                            Err(e) => out.push(failed(format!("sending subscribe: {e}"))),
                        }
                    }
                    // Never read: wait, without touching the sockets.
                    let limit = drain_rx.await.unwrap_or(Duration::ZERO);
                    let drained = futures_util::future::join_all(
                        subscribed.into_iter().map(|ws| drain_stalled(ws, t0, limit)),
                    )
                    .await;
                    out.extend(drained);
                    out
                })
            })
            .expect("spawn stalled thread");
        Stalled { handle, connected: crx, go: Some(go), drain: Some(drain) }
    }

    /// Waits until the sessions are connected (welcome read); their count.
    pub fn wait_connected(&self, limit: Duration) -> Result<usize, String> {
        match self.connected.recv_timeout(limit) {
            Ok(r) => r,
            Err(_) => Err("stalled sessions did not connect in time".into()),
        }
    }

    /// Sends every `subscribe` now; `t0` is when the subscriptions went out
    /// (the origin of the close times).
    pub fn go(&mut self, t0: Instant) {
        if let Some(g) = self.go.take() {
            let _ = g.send(t0);
        }
    }

    /// Reads and discards until the server's close, for at most `limit`
    /// per session; how each ended.
    pub fn drain(mut self, limit: Duration) -> Vec<StalledResult> {
        self.go.take(); // never subscribed: the thread returns
        if let Some(d) = self.drain.take() {
            let _ = d.send(limit);
        }
        let end = Instant::now() + limit + FINISH_SLACK;
        while !self.handle.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !self.handle.is_finished() {
            return vec![StalledResult {
                how: "drain did not finish".into(),
                ..Default::default()
            }];
        }
        self.handle.join().unwrap_or_default()
    }
}

/// Time a stalled thread gets beyond its drain limit to hand back results.
const FINISH_SLACK: Duration = Duration::from_secs(3);

fn block_on_local<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    tokio::task::LocalSet::new().block_on(&rt, f)
}

/// Bytes a session asks of its socket per read. tungstenite zeroes this
/// much of its buffer before every read: its default, 128 KiB, made that
/// memset 13% of the client's CPU at 10,000 updates/s (frames of 1-2 KB),
/// CPU the server under test then lacked. 16 KiB still takes a few frames
/// per read at 50,000/s.
const READ_BUFFER: usize = 16 * 1024;

/// The local address of session `i` when sessions spread over `n` source
/// addresses (127.0.0.1 .. 127.0.0.n); None for `n` = 1 (the kernel's
/// choice).
fn source_address(i: usize, n: u8) -> Option<std::net::SocketAddr> {
    (n > 1).then(|| std::net::SocketAddr::from(([127, 0, 0, 1 + (i % usize::from(n)) as u8], 0)))
}

/// How a session's text frames are wrapped.
#[derive(Debug, Clone, Copy)]
struct Framing {
    /// Socket.IO 4 over Engine.IO v4: requests go out as
    /// `42["msg",{...}]`, the contract's arrays come in as `42["md",[...]]`,
    /// and every Engine.IO ping (`2`) is answered with a pong (`3`).
    socketio: bool,
    /// Messages carry `cseq` (checked); servers that broadcast one encoding
    /// to every socket send none.
    cseq: bool,
}

/// The Socket.IO event that carries the contract's arrays.
const SOCKETIO_MD: &str = "42[\"md\",";

/// The contract's JSON array inside a Socket.IO `md` event, or None for
/// another packet.
fn socketio_payload(text: &str) -> Option<&str> {
    text.strip_prefix(SOCKETIO_MD)?.strip_suffix(']')
}

/// Opens the Socket.IO session on a fresh Engine.IO WebSocket: reads the
/// open packet (`0{...}`), joins the main namespace (`40`), reads its
/// answer (`40{...}`).
async fn socketio_open(ws: &mut Ws) -> Result<(), String> {
    async fn next_text(ws: &mut Ws, what: &str) -> Result<String, String> {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_string()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("reading {what}: {e}")),
                None => return Err(format!("closed before {what}")),
            }
        }
    }
    let open = next_text(ws, "the Engine.IO open packet").await?;
    if !open.starts_with("0{") {
        return Err(format!("Engine.IO open packet expected, got {open:.100}"));
    }
    ws.send(Message::text("40")).await.map_err(|e| format!("Socket.IO connect: {e}"))?;
    let ok = next_text(ws, "the Socket.IO connect reply").await?;
    if !ok.starts_with("40") {
        return Err(format!("Socket.IO connect reply expected, got {ok:.100}"));
    }
    Ok(())
}

/// Connects (offering `tickwire.v1.bin` for the binary protocol,
/// permessage-deflate when `compressed`, opening the Socket.IO session for
/// Socket.IO, with `rcvbuf` as the socket's
/// `SO_RCVBUF` and `from` as its local address when given) and reads the
/// welcome, which must come first; if it names a `time_unit`, it must be ns.
async fn connect(
    url: String,
    protocol: Protocol,
    compressed: bool,
    rcvbuf: Option<u32>,
    from: Option<std::net::SocketAddr>,
) -> Result<Ws, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let binary = protocol == Protocol::Binary;
    let fut = async {
        let mut req = url.into_client_request().map_err(|e| format!("url: {e}"))?;
        if binary {
            let v = BIN_PROTOCOL.parse().expect("header value");
            req.headers_mut().insert("Sec-WebSocket-Protocol", v);
        }
        if compressed {
            let v = "permessage-deflate".parse().expect("header value");
            req.headers_mut().insert("Sec-WebSocket-Extensions", v);
        }
        let host = req.uri().host().unwrap_or("127.0.0.1").trim_matches(['[', ']']).to_string();
        let port = req.uri().port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("resolve {host}: no address"))?;
        let sock = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| format!("socket: {e}"))?;
        if let Some(bytes) = rcvbuf {
            sock.set_recv_buffer_size(bytes).map_err(|e| format!("SO_RCVBUF: {e}"))?;
        }
        if let Some(from) = from {
            sock.bind(from).map_err(|e| format!("bind {from}: {e}"))?;
        }
        let tcp = sock.connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let tcp = Inflating::new(tcp, compressed);
        let (mut ws, resp) = tokio_tungstenite::client_async_with_config(req, tcp, Some(config))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let selected = resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok());
        if binary && selected != Some(BIN_PROTOCOL) {
            return Err(format!("the server did not select {BIN_PROTOCOL} (got {selected:?})"));
        }
        if protocol == Protocol::SocketIo {
            socketio_open(&mut ws).await?;
        }
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if protocol == Protocol::SocketIo => {
                    match socketio_payload(t.as_str()) {
                        Some(p) => return check_welcome(p).map(|()| ws),
                        None => continue, // an Engine.IO ping: none is due this early
                    }
                }
                Some(Ok(Message::Text(t))) => return check_welcome(t.as_str()).map(|()| ws),
                Some(Ok(Message::Close(f))) => return Err(format!("closed before welcome: {f:?}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("reading welcome: {e}")),
                None => return Err("closed before welcome".into()),
            }
        }
    };
    timeout(CONNECT_TIMEOUT, fut).await.map_err(|_| "connect timed out".to_string())?
}

/// Reads and discards until the server's close or `limit`.
async fn drain_stalled(mut ws: Ws, t0: Instant, limit: Duration) -> StalledResult {
    let mut bytes = 0u64;
    let read = async {
        loop {
            match ws.next().await {
                None => return "EOF".to_string(),
                Some(Err(e)) => return format!("read error: {e}"),
                Some(Ok(Message::Close(f))) => {
                    return match f {
                        Some(f) => format!("close {} {:?}", u16::from(f.code), f.reason.as_str()),
                        None => "close (no code)".into(),
                    };
                }
                Some(Ok(m)) => bytes += m.len() as u64,
            }
        }
    };
    let r = timeout(limit, read).await;
    match r {
        Ok(how) => StalledResult {
            closed: true,
            how,
            drained_after_s: Some(t0.elapsed().as_secs_f64()),
            drained_bytes: bytes,
        },
        Err(_) => StalledResult {
            closed: false,
            how: format!("still open after draining for {limit:?}"),
            drained_after_s: None,
            drained_bytes: bytes,
        },
    }
}

/// Position of one (channel, symbol) stream in a session.
#[derive(Debug, Default, Clone, Copy)]
struct Stream {
    /// A message of the stream arrived (the first one is taken as it is).
    seen: bool,
    last: u64,
    /// The convergence target (0: none).
    target: u64,
}

/// The streams of a binary session by symbol id: ids are dense (the
/// server numbers its symbols from 0), so a table indexed by id, where a
/// hash map's probes missed the cache on every record (44% of the client's
/// CPU at 1,000 symbols × 100 sessions). An id past [`Self::MAX_IDS`]
/// (or a JSON session's 65,537th name) is counted as `malformed`, and its
/// stream is not followed.
#[derive(Default)]
struct ById(Vec<Option<Stream>>);

impl ById {
    /// Ids past this are taken as malformed rather than sized for (a
    /// NASDAQ day has about 12,000 symbols).
    const MAX_IDS: u32 = 1 << 16;

    /// The stream of `id`, made if new; `None` past [`Self::MAX_IDS`].
    fn entry(&mut self, id: u32) -> Option<&mut Stream> {
        if id >= Self::MAX_IDS {
            return None;
        }
        let i = id as usize;
        if i >= self.0.len() {
            self.0.resize_with(i + 1, || None);
        }
        Some(self.0[i].get_or_insert_with(Stream::default))
    }

    /// Sets the stream of `id`; false past [`Self::MAX_IDS`].
    fn insert(&mut self, id: u32, s: Stream) -> bool {
        self.entry(id).map(|e| *e = s).is_some()
    }

    /// Whether the stream of `id` is known (a load of its slot).
    fn known(&self, id: u32) -> bool {
        self.0.get(id as usize).is_some_and(Option::is_some)
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut Stream> {
        self.0.get_mut(id as usize).and_then(Option::as_mut)
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &Stream)> {
        self.0.iter().enumerate().filter_map(|(i, s)| Some((i as u32, s.as_ref()?)))
    }
}

/// Per-session reader state.
struct Session {
    cseq: u64,
    /// Whether messages must carry `cseq` ([`Framing::cseq`]).
    cseq_checked: bool,
    subscribed: bool,
    buf: Vec<u8>,
    /// JSON sessions, by the thread's number for the symbol name
    /// ([`Names`]); quotes and trades.
    by_name: [ById; 2],
    /// The thread's symbol names.
    names: Rc<RefCell<Names>>,
    /// Binary sessions, by symbol id.
    by_id: [ById; 2],
    /// Binary sessions: symbol name -> id, from `subscribed`.
    ids: HashMap<String, u32>,
    updates: u64,
    error: Option<String>,
    /// Streams below their target; `None` until the targets are applied.
    behind: Option<usize>,
}

impl Session {
    fn new(names: Rc<RefCell<Names>>) -> Session {
        Session {
            cseq: 0,
            cseq_checked: true,
            subscribed: false,
            buf: Vec::with_capacity(64 * 1024),
            by_name: Default::default(),
            names,
            by_id: Default::default(),
            ids: HashMap::new(),
            updates: 0,
            error: None,
            behind: None,
        }
    }

    /// Applies the targets to the streams this session subscribed to.
    fn apply(&mut self, t: &Targets, binary: bool) {
        let mut behind = 0;
        for (ch, sym, seq) in &t.streams {
            let ch = usize::from(*ch == 1);
            let s = if binary {
                self.ids.get(sym).and_then(|&id| self.by_id[ch].get_mut(id))
            } else {
                let id = self.names.borrow().get(sym);
                id.and_then(|id| self.by_name[ch].get_mut(id))
            };
            if let Some(s) = s {
                s.target = *seq;
                if s.last < *seq {
                    behind += 1;
                }
            }
        }
        self.behind = Some(behind);
    }

    /// One stream below its target, for the report.
    fn lagging_example(&self) -> String {
        let ch_name = |ch: usize| if ch == 0 { "quotes" } else { "trades" };
        for ch in 0..2 {
            for (id, st) in self.by_name[ch].iter() {
                if st.last < st.target {
                    let names = self.names.borrow();
                    let sym = names.name(id);
                    return format!("{} {sym} at seq {} < {}", ch_name(ch), st.last, st.target);
                }
            }
            for (id, st) in self.by_id[ch].iter() {
                if st.last < st.target {
                    let sym = self.ids.iter().find(|(_, i)| **i == id).map_or("?", |(n, _)| n);
                    return format!(
                        "{} {sym} (id {id}) at seq {} < {}",
                        ch_name(ch),
                        st.last,
                        st.target
                    );
                }
            }
        }
        String::new()
    }

    fn converged(&self) -> bool {
        self.behind == Some(0)
    }
}

/// Moves a stream to `seq`; `step` is the expected rise (`cf`), 0 for an
/// `overflow` (which only moves the position). False on a jump.
fn advance(s: &mut Stream, seq: u64, step: u64, behind: &mut Option<usize>) -> bool {
    let ok = !s.seen || step == 0 || s.last + step == seq;
    if s.last < s.target
        && seq >= s.target
        && let Some(b) = behind
    {
        *b = b.saturating_sub(1);
    }
    s.seen = true;
    s.last = seq;
    ok
}

/// The stream of symbol `sym` in a JSON session's `table` (one channel of
/// `Session::by_name`), made if new; `None` past [`ById::MAX_IDS`] names.
fn named<'a>(names: &RefCell<Names>, table: &'a mut ById, sym: &str) -> Option<&'a mut Stream> {
    let id = names.borrow_mut().id(sym);
    table.entry(id)
}

/// The symbol names one client thread's JSON sessions met, numbered in
/// order of first sight, so that each session keeps its streams in a table
/// ([`ById`]): with a map keyed by name per session, the lookups (hash,
/// probe, compare) were a third of the client's CPU at 100 sessions and
/// 10,000 updates/s, since 100 maps of 2,000 names do not stay in cache
/// and this one does.
#[derive(Default)]
struct Names {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    /// The number of `name`, given now if new.
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(name.to_string(), id);
        self.names.push(name.to_string());
        id
    }

    fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("?", String::as_str)
    }
}

/// Counts a `cseq` run of `count` messages starting at `first`.
fn check_cseq(n: &mut Counts, cseq: &mut u64, first: u64, count: u64) {
    if first != *cseq + 1 {
        n.cseq_gaps += 1;
        n.cseq_missing += first.saturating_sub(*cseq + 1);
    }
    *cseq = first + count.saturating_sub(1);
}

/// Reads from the connection on, sends the subscription when `go` flips,
/// and reads until told to stop.
async fn run_session(
    mut ws: Ws,
    subscribe: String,
    mut go: watch::Receiver<bool>,
    framing: Framing,
    stats: Rc<RefCell<ThreadStats>>,
    names: Rc<RefCell<Names>>,
    shared: Arc<Shared>,
) -> ClientResult {
    let mut s = Session::new(names);
    s.cseq_checked = framing.cseq;
    let subscribe = if framing.socketio { format!("42[\"msg\",{subscribe}]") } else { subscribe };
    // The request, until it is sent.
    let mut pending = Some(subscribe);
    let mut is_binary = false;
    let mut counted_converged = false;
    let mut counted_subscribed = false;
    // Before `go` sets the window nothing is measured.
    let unset = Window { start_ns: u64::MAX, end_ns: u64::MAX };
    // One timer for the whole session: a `timeout` per read made and
    // dropped a timer entry for every frame.
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        if pending.is_some()
            && *go.borrow_and_update()
            && let Some(req) = pending.take()
            && let Err(e) = ws.send(Message::Text(req.into())).await
        {
            s.error.get_or_insert(format!("sending subscribe: {e}"));
            break;
        }
        if s.behind.is_none()
            && s.subscribed
            && let Some(t) = shared.targets.get()
        {
            s.apply(t, is_binary);
        }
        if !counted_converged && s.converged() {
            counted_converged = true;
            shared.converged.fetch_add(1, Ordering::AcqRel);
        }
        let next = tokio::select! {
            biased;
            next = ws.next() => next,
            _ = go.changed(), if pending.is_some() => continue,
            _ = poll.tick() => continue,
        };
        let msg = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                s.error.get_or_insert(format!("read: {e}"));
                break;
            }
            None => {
                s.error.get_or_insert("connection closed by server".into());
                break;
            }
        };
        let now = now_ns();
        let w = shared.window.get().copied().unwrap_or(unset);
        let measured = now >= w.start_ns && now < w.end_ns;
        let mut st = stats.borrow_mut();
        match msg {
            Message::Text(t) if framing.socketio => match socketio_payload(t.as_str()) {
                Some(p) => on_text(&mut st, &mut s, p.as_bytes(), now, measured, w.start_ns),
                None if t.as_str() == "2" => {
                    drop(st);
                    if let Err(e) = ws.send(Message::text("3")).await {
                        s.error.get_or_insert(format!("Engine.IO pong: {e}"));
                        break;
                    }
                }
                None => {}
            },
            Message::Text(t) => on_text(&mut st, &mut s, t.as_bytes(), now, measured, w.start_ns),
            Message::Binary(b) => {
                is_binary = true;
                on_binary(&mut st, &mut s, &b, now, measured, w.start_ns);
            }
            Message::Close(f) => {
                s.error.get_or_insert_with(|| format!("closed by server: {f:?}"));
                break;
            }
            _ => {}
        }
        if s.subscribed && !counted_subscribed {
            counted_subscribed = true;
            shared.subscribed.fetch_add(1, Ordering::AcqRel);
        }
    }
    if !s.subscribed {
        s.error.get_or_insert_with(|| "no subscribed reply".into());
    }
    let _ = timeout(Duration::from_millis(500), ws.close(None)).await;
    let behind = s.behind.filter(|b| *b > 0).map(|b| (b, s.lagging_example()));
    ClientResult { updates: s.updates, error: s.error, behind, ..Default::default() }
}

/// Reads one binary frame (`tickwire.v1.bin`).
fn on_binary(
    st: &mut ThreadStats,
    s: &mut Session,
    frame: &[u8],
    now: u64,
    measured: bool,
    start: u64,
) {
    let Ok(h) = binary::decode_header(frame) else {
        st.n.malformed += 1;
        return;
    };
    check_cseq(&mut st.n, &mut s.cseq, h.first_cseq, h.count.into());
    if measured {
        st.n.frames += 1;
        st.n.bytes += frame.len() as u64;
        st.n.msgs += u64::from(h.count);
    }
    // Each record's stream is likely a cache miss with many sessions (at
    // 1,000 sessions of 2,000 streams, the lookup was a quarter of the
    // client's CPU): load them all first, so that the misses overlap
    // rather than follow one another.
    for i in 0..h.count as usize {
        let r = binary::decode_record(frame, &h, i);
        std::hint::black_box(s.by_id[usize::from(r.ch == 1)].known(r.sym));
    }
    for i in 0..h.count as usize {
        let r = binary::decode_record(frame, &h, i);
        let ch = usize::from(r.ch == 1);
        match r.kind {
            1 | 2 => {
                let snapshot = r.flags & binary::RECORD_SNAPSHOT != 0;
                let step = if snapshot { 0 } else { r.cf.max(1) };
                let Some(stream) = s.by_id[ch].entry(r.sym) else {
                    st.n.malformed += 1;
                    continue;
                };
                if !advance(stream, r.seq, step, &mut s.behind) {
                    st.n.seq_gaps += 1;
                }
                if measured && !snapshot {
                    s.updates += 1;
                    st.n.updates += 1;
                    st.n.cf_sum += r.cf.max(1);
                    st.record(start, now, r.t, r.ti, r.to);
                }
            }
            3 => {
                if measured {
                    st.n.overflows += 1;
                    st.n.overflow_lost += r.p2 as u64;
                }
                match s.by_id[ch].entry(r.sym) {
                    Some(stream) => {
                        advance(stream, r.seq, 0, &mut s.behind);
                    }
                    None => st.n.malformed += 1,
                }
            }
            _ => {}
        }
    }
}

/// Parses one JSON frame: an array of message objects.
fn on_text(
    st: &mut ThreadStats,
    s: &mut Session,
    text: &[u8],
    now: u64,
    measured: bool,
    start: u64,
) {
    s.buf.clear();
    s.buf.extend_from_slice(text);
    let Ok(v) = simd_json::to_borrowed_value(&mut s.buf) else {
        st.n.malformed += 1;
        return;
    };
    let Some(arr) = v.as_array() else {
        st.n.malformed += 1;
        return;
    };
    if measured {
        st.n.frames += 1;
        st.n.bytes += text.len() as u64;
        st.n.msgs += arr.len() as u64;
    }
    for m in arr {
        match m.get("cseq").and_then(|c| c.as_u64()) {
            Some(c) => check_cseq(&mut st.n, &mut s.cseq, c, 1),
            None if !s.cseq_checked => {}
            None => st.n.malformed += 1,
        }
        let u64_of = |k: &str| m.get(k).and_then(|v| v.as_u64());
        let sym = m.get("sym").and_then(|v| v.as_str()).unwrap_or("");
        match m.get("type").and_then(|t| t.as_str()).unwrap_or("") {
            kind @ ("q" | "t") => {
                let cf = u64_of("cf").unwrap_or(1);
                let seq = u64_of("seq").unwrap_or(0);
                let Some(stream) = named(&s.names, &mut s.by_name[usize::from(kind == "t")], sym)
                else {
                    st.n.malformed += 1;
                    continue;
                };
                if !advance(stream, seq, cf, &mut s.behind) {
                    st.n.seq_gaps += 1;
                }
                if measured {
                    s.updates += 1;
                    st.n.updates += 1;
                    st.n.cf_sum += cf;
                    if let Some(t) = u64_of("t") {
                        st.record(start, now, t, u64_of("ti"), u64_of("to"));
                    }
                }
            }
            "snapshot" => {
                let ch = usize::from(m.get("ch").and_then(|v| v.as_str()) == Some("trades"));
                let seq = u64_of("seq").unwrap_or(0);
                match named(&s.names, &mut s.by_name[ch], sym) {
                    Some(stream) => {
                        advance(stream, seq, 0, &mut s.behind);
                    }
                    None => st.n.malformed += 1,
                }
            }
            "overflow" => {
                let ch = usize::from(m.get("ch").and_then(|v| v.as_str()) == Some("trades"));
                let to_seq = u64_of("to_seq").unwrap_or(0);
                match named(&s.names, &mut s.by_name[ch], sym) {
                    Some(stream) => {
                        advance(stream, to_seq, 0, &mut s.behind);
                    }
                    None => st.n.malformed += 1,
                }
                if measured {
                    st.n.overflows += 1;
                    st.n.overflow_lost += u64_of("lost").unwrap_or(0);
                }
            }
            "subscribed" => {
                s.subscribed = true;
                st.n.rejected +=
                    m.get("rejected").and_then(|r| r.as_array()).map_or(0, |r| r.len() as u64);
                // Register every subscribed stream at the position the
                // reply names (the base of its next `seq`, per the protocol),
                // so that the first update is checked too and convergence
                // covers streams that send nothing after the subscription.
                for sub in m.get("subs").and_then(|r| r.as_array()).into_iter().flatten() {
                    let (Some(name), Some(ch)) = (
                        sub.get("sym").and_then(|v| v.as_str()),
                        sub.get("ch").and_then(|v| v.as_str()),
                    ) else {
                        continue;
                    };
                    let ch = usize::from(ch == "trades");
                    let base = match sub.get("seq").and_then(|v| v.as_u64()) {
                        Some(seq) => Stream { seen: true, last: seq, target: 0 },
                        None => Stream::default(),
                    };
                    match named(&s.names, &mut s.by_name[ch], name) {
                        Some(stream) => *stream = base,
                        None => st.n.malformed += 1,
                    }
                    if let Some(id) = sub.get("id").and_then(|v| v.as_u64()) {
                        let id = id as u32;
                        s.ids.insert(name.to_string(), id);
                        if !s.by_id[ch].insert(id, base) {
                            st.n.malformed += 1;
                        }
                    }
                }
            }
            "slow" => st.n.slow += 1,
            "error" | "shutdown" if s.error.is_none() => {
                let mut t = m.encode();
                t.truncate(200);
                s.error = Some(format!("server sent {t}"));
            }
            _ => {}
        }
    }
}

/// Reads the server's current position of every stream: a separate JSON
/// session subscribes to `symbols` (or `["*"]`) without snapshots, and the
/// `subscribed` reply names each stream's `seq`. Also used to list symbols.
pub async fn probe(url: &str, symbols: Option<&[String]>) -> Result<Targets, String> {
    let mut ws = connect(url.to_string(), Protocol::Json, false, None, None).await?;
    let syms = match symbols {
        None => "[\"*\"]".to_string(),
        Some(s) => serde_json::to_string(s).expect("strings"),
    };
    let req = format!(
        "{{\"type\":\"subscribe\",\"id\":7,\"symbols\":{syms},\"mode\":\"latest\",\"snapshot\":false}}"
    );
    ws.send(Message::Text(req.into())).await.map_err(|e| format!("probe: {e}"))?;
    let fut = async {
        while let Some(m) = ws.next().await {
            let Ok(Message::Text(t)) = m else { continue };
            let v: serde_json::Value =
                serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
            for m in v.as_array().into_iter().flatten() {
                if m["type"] == "subscribed" && m["id"] == 7 {
                    let mut out = Targets::default();
                    for s in m["subs"].as_array().into_iter().flatten() {
                        let ch = u8::from(s["ch"] == "trades");
                        let sym = s["sym"].as_str().unwrap_or("").to_string();
                        out.streams.push((ch, sym, s["seq"].as_u64().unwrap_or(0)));
                    }
                    return Ok(out);
                }
            }
        }
        Err("probe: closed before subscribed".to_string())
    };
    let r =
        timeout(Duration::from_secs(10), fut).await.map_err(|_| "probe timed out".to_string())?;
    let _ = timeout(Duration::from_millis(500), ws.close(None)).await;
    r
}

/// The symbol names a server knows (from a `["*"]` probe).
pub async fn list_symbols(url: &str) -> Result<Vec<String>, String> {
    let t = probe(url, None).await?;
    let mut names: Vec<String> =
        t.streams.into_iter().filter(|(ch, _, _)| *ch == 0).map(|(_, s, _)| s).collect();
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_and_convergence() {
        let mut behind = None;
        let mut s = Stream::default();
        assert!(advance(&mut s, 40, 1, &mut behind)); // first one taken as is
        assert!(advance(&mut s, 41, 1, &mut behind));
        assert!(!advance(&mut s, 43, 1, &mut behind)); // a jump
        assert!(advance(&mut s, 50, 0, &mut behind)); // overflow to_seq
        assert!(advance(&mut s, 53, 3, &mut behind)); // cf 3
        s.target = 60;
        behind = Some(1);
        advance(&mut s, 55, 2, &mut behind);
        assert_eq!(behind, Some(1));
        advance(&mut s, 61, 6, &mut behind);
        assert_eq!(behind, Some(0));
    }

    #[test]
    fn cseq_gaps() {
        let mut n = Counts::default();
        let mut c = 0;
        check_cseq(&mut n, &mut c, 1, 1);
        check_cseq(&mut n, &mut c, 2, 10);
        assert_eq!((n.cseq_gaps, c), (0, 11));
        check_cseq(&mut n, &mut c, 15, 1);
        assert_eq!((n.cseq_gaps, n.cseq_missing, c), (1, 3, 15));
    }

    #[test]
    fn json_frames_are_checked_and_measured() {
        let mut st = ThreadStats::new(Duration::from_secs(1));
        let mut s = Session::new(Rc::default());
        let f1 = br#"[{"type":"subscribed","id":1,"cseq":1,"subs":[{"ch":"quotes","sym":"A","seq":3},{"ch":"trades","sym":"A","seq":1}],"rejected":[]}]"#;
        on_text(&mut st, &mut s, f1, 1_000, true, 0);
        let f2 = br#"[{"type":"q","cseq":2,"sym":"A","seq":4,"t":100,"ti":200,"to":400},{"type":"q","cseq":3,"cf":3,"sym":"A","seq":7,"t":300,"ti":350,"to":400}]"#;
        on_text(&mut st, &mut s, f2, 1_000, true, 0);
        assert!(s.subscribed);
        assert_eq!(st.n.updates, 2);
        assert_eq!(st.n.cf_sum, 4);
        assert_eq!(st.n.seq_gaps, 0);
        assert_eq!(st.n.cseq_gaps, 0);
        assert_eq!(st.lat.e2e.max(), 900);
        assert_eq!(st.lat.ingest_send.min(), 50);
        // the trade stream sent nothing since the subscription: it is at its target
        s.apply(&Targets { streams: vec![(0, "A".into(), 9), (1, "A".into(), 1)] }, false);
        assert_eq!(s.behind, Some(1));
        let f3 = br#"[{"type":"q","cseq":5,"sym":"A","seq":9,"t":300}]"#;
        on_text(&mut st, &mut s, f3, 1_000, false, 0);
        assert_eq!((st.n.seq_gaps, st.n.cseq_gaps, st.n.updates), (1, 1, 2));
        assert!(s.converged());
    }

    #[test]
    fn welcome_check() {
        assert!(check_welcome(r#"[{"type":"welcome","time_unit":"ns"}]"#).is_ok());
        assert!(check_welcome(r#"[{"type":"welcome"}]"#).is_ok());
        assert!(check_welcome(r#"[{"type":"welcome","time_unit":"ms"}]"#).is_err());
        assert!(check_welcome(r#"[{"type":"status"}]"#).is_err());
    }

    #[test]
    fn latency_counts_from_t_only_on_the_servers_clock() {
        let s = 1_000_000_000;
        let ti = 1_800_000_000 * s;
        // The synthetic feed: due shortly before ingest, or without stamps.
        assert_eq!(latency_origin(ti - 5_000, Some(ti)), (ti - 5_000, true));
        assert_eq!(latency_origin(ti - 5 * s, Some(ti)), (ti - 5 * s, true));
        assert_eq!(latency_origin(ti, None), (ti, true));
        // A replay: the recorded time is a day back, or ahead when shifted.
        assert_eq!(latency_origin(ti - 86_400 * s, Some(ti)), (ti, false));
        assert_eq!(latency_origin(ti + 1, Some(ti)), (ti, false));
    }
}
