//! An edge's feed source: the bus. A thread (`tickwire-bus`, a small tokio
//! runtime with the async-nats client) receives what the ingest publishes
//! and hands it over a bounded queue to [`BusSource`], which the feed
//! thread polls: it decodes the batches, interns the names and hands over
//! ticks that keep the ingest's `seq` ([`FeedSource::numbered`]).
//!
//! # Start
//!
//! 1. Subscribe to the live subjects ([`super::LIVE_WILDCARD`]) and wait
//!    until the server has the subscription (a probe through our own
//!    inbox), so nothing published from then on is missed.
//! 2. Wait (up to two heartbeat intervals) for the ingest's first
//!    heartbeat: it names the epoch, which the market starts in
//!    ([`FeedSource::first_epoch`]), so the first `welcome` already has it,
//!    and how long the latest values in JetStream may lag the live subject.
//! 3. Wait out that lag (so every update published before the
//!    subscription was live is in JetStream), then read the latest value
//!    of every stream (an ordered consumer, `LastPerSubject`), then the
//!    live messages buffered meanwhile. A stream's update at or below the
//!    `seq` already handed over is skipped, so the higher `seq` of the two
//!    wins, the two meet without a hole, and snapshots are right from the
//!    first second.
//!
//! # Loss and health
//!
//! - Batches are numbered; a heartbeat names the last one. A gap in the
//!   numbers is counted (`tickwire_bus_batches_lost_total`), and the
//!   streams it touched jump in `seq`, which the writer shards report
//!   (`overflow`, `cf`). The latest values are read again a little later,
//!   so a stream whose last update was lost is not left behind.
//! - Nothing from the ingest (batch or heartbeat) for one and a half of
//!   its heartbeat intervals, or the NATS connection down: `stale`. A
//!   message again: `live` (or the ingest's own state, which its
//!   heartbeats carry). When NATS comes back the latest values are read
//!   again too.
//! - A message that is not ours, truncated or of another version is
//!   skipped and counted (`tickwire_bus_garbage_total`).
//! - The epoch changes only when the ingest's does ([`Poll::Epoch`]).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Notify, mpsc};

use super::codec::{self, Kind};
use super::metrics::BusMetrics;
use super::nats::{self, Link};
use super::{BusConfig, LIVE_WILDCARD, LVC_STREAM, LVC_SUBJECTS};
use crate::feed::{FeedSource, FeedState, Poll};
use crate::tick::{SymbolTable, Tick, stream_index};

/// Messages queued between the bus thread and the feed thread. A full
/// queue means the feed thread is far behind: the message is dropped
/// and counted, and shows downstream as a gap.
const QUEUE: usize = 16_384;

/// Longest one poll waits for a message (the feed thread checks for
/// shutdown between polls).
const READ_WAIT: Duration = Duration::from_millis(20);

/// Most ticks handed over by one poll.
const MAX_TICKS: usize = 4096;

/// Longest the latest-value read may take.
const LVC_READ_WAIT: Duration = Duration::from_secs(5);

/// Shortest time between two latest-value reads asked for by gaps.
const LVC_MIN_GAP: Duration = Duration::from_secs(1);

/// The longest latest-value interval an edge waits out at start.
const LVC_LAG_MAX: Duration = Duration::from_secs(5);

/// Added to the wait for the latest values at start: the time JetStream
/// may take to store what the ingest published.
const LVC_SLACK: Duration = Duration::from_millis(20);

/// Tries of a latest-value read that fails (the stream not there yet).
const LVC_TRIES: u32 = 10;

/// What the bus thread hands the feed thread.
#[derive(Debug)]
enum Inbound {
    /// The start is done: the ingest's epoch, if one was heard.
    Known(Option<u64>),
    /// A message on the live subjects (a batch or a heartbeat).
    Live(Bytes),
    /// A latest value from JetStream (a batch of one).
    Lvc(Bytes),
    /// The connection came or went.
    Link(Link),
}

/// What the feed thread asks of the bus thread.
#[derive(Debug)]
enum Ask {
    /// Read the latest values again (after a gap).
    ReadLvc,
}

/// What an edge needs to start its source.
pub struct EdgeSetup {
    /// The bus (its `hb` bounds the wait for a first heartbeat; its
    /// `lvc_every` is the latest values' lag until a heartbeat tells).
    pub bus: BusConfig,
    /// Where names are interned.
    pub table: Arc<SymbolTable>,
    /// What it counts.
    pub metrics: Arc<BusMetrics>,
}

/// The bus as a feed source. See the module docs.
pub struct BusSource {
    rx: Receiver<Inbound>,
    ask: mpsc::UnboundedSender<Ask>,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
    table: Arc<SymbolTable>,
    metrics: Arc<BusMetrics>,
    /// The epoch the market starts in.
    first_epoch: Option<u64>,
    /// The epoch of the ticks handed over.
    epoch: Option<u64>,
    /// The last batch number seen in this epoch (0: none yet).
    last_batch: u64,
    /// The last `seq` handed over per stream.
    last_seq: Vec<u64>,
    /// A message to handle at the next poll (after answering an epoch change).
    held: Option<Inbound>,
    /// When the ingest was last heard from.
    last_alive: Option<Instant>,
    /// Whether the NATS connection is up.
    up: bool,
    /// Silence after which the feed is stale.
    stale_after: Duration,
    /// The ingest's own feed state, from its heartbeats.
    ingest_state: FeedState,
    /// The state the feed thread was last told.
    reported: FeedState,
    /// When the latest values were last asked for.
    lvc_asked: Option<Instant>,
    /// Records that could not be used (a full symbol table).
    skipped: u64,
}

impl BusSource {
    /// Connects to the bus and does the start (see the module docs):
    /// returns once the epoch is known and the latest values are queued,
    /// or, if no ingest is heard within two heartbeat intervals (or NATS is
    /// not there), with a source that starts stale.
    pub fn start(setup: EdgeSetup) -> std::io::Result<BusSource> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let (ask, asks) = mpsc::unbounded_channel();
        let stop = Arc::new(Notify::new());
        let EdgeSetup { bus, table, metrics } = setup;
        let hb = bus.hb;
        let (m, s) = (metrics.clone(), stop.clone());
        let thread = super::spawn_bus_thread(move || async move {
            tokio::select! {
                _ = run(bus, tx, asks, m) => {}
                _ = s.notified() => {}
            }
        })?;
        let mut source = BusSource::new(rx, ask, stop, Some(thread), table, metrics, hb);
        // The probe, the first heartbeat, the wait for the latest values
        // (the ingest's interval, up to a few seconds) and the read are each
        // bounded.
        let wait = nats::PROBE_WAIT + 2 * hb + LVC_READ_WAIT + Duration::from_secs(10);
        match source.rx.recv_timeout(wait) {
            Ok(Inbound::Known(epoch)) => {
                source.first_epoch = epoch;
                source.epoch = epoch;
                if epoch.is_some() {
                    source.up = true;
                    source.last_alive = Some(Instant::now());
                }
            }
            Ok(other) => source.held = Some(other),
            Err(_) => tracing::warn!("bus: no answer from the bus thread; starting stale"),
        }
        match source.epoch {
            Some(e) => {
                tracing::info!(epoch = %crate::feed::epoch_name(e), "bus: joined the ingest's epoch")
            }
            None => tracing::warn!("bus: no ingest heard yet; the feed is stale until one is"),
        }
        Ok(source)
    }

    /// A source fed by `rx` (the bus thread's end), stale after one and a
    /// half `hb` until a heartbeat says otherwise.
    fn new(
        rx: Receiver<Inbound>,
        ask: mpsc::UnboundedSender<Ask>,
        stop: Arc<Notify>,
        thread: Option<JoinHandle<()>>,
        table: Arc<SymbolTable>,
        metrics: Arc<BusMetrics>,
        hb: Duration,
    ) -> BusSource {
        BusSource {
            rx,
            ask,
            stop,
            thread,
            table,
            metrics,
            first_epoch: None,
            epoch: None,
            last_batch: 0,
            last_seq: Vec::new(),
            held: None,
            last_alive: None,
            up: false,
            stale_after: hb + hb / 2,
            ingest_state: FeedState::Live,
            reported: FeedState::Live,
            lvc_asked: None,
            skipped: 0,
        }
    }

    /// What the feed should be: stale while the bus or the ingest is
    /// silent, else the ingest's own state.
    fn wanted_state(&self) -> FeedState {
        let alive = self.up && self.last_alive.is_some_and(|t| t.elapsed() < self.stale_after);
        if alive { self.ingest_state } else { FeedState::Stale }
    }

    /// Asks the bus thread to read the latest values again (at most once
    /// per [`LVC_MIN_GAP`]).
    fn ask_lvc(&mut self) {
        if self.lvc_asked.is_none_or(|t| t.elapsed() >= LVC_MIN_GAP) {
            self.lvc_asked = Some(Instant::now());
            let _ = self.ask.send(Ask::ReadLvc);
        }
    }

    /// Handles one message; `Some` is what to answer the feed thread now.
    fn handle(&mut self, msg: Inbound, out: &mut Vec<Tick>) -> Option<Poll> {
        match msg {
            Inbound::Known(_) => None,
            Inbound::Link(Link::Up) => {
                self.up = true;
                None
            }
            Inbound::Link(Link::Down) => {
                self.up = false;
                None
            }
            Inbound::Link(Link::SlowConsumer) => None,
            Inbound::Live(bytes) => self.live(bytes, out),
            Inbound::Lvc(bytes) => {
                let Ok(h) = codec::header(&bytes) else {
                    BusMetrics::add(&self.metrics.garbage, 1);
                    return None;
                };
                // Another epoch's latest values are no use (and a purge
                // removes them soon).
                if Some(h.epoch) == self.epoch && h.kind == Kind::Batch {
                    let n = self.records(&bytes, &h, out);
                    BusMetrics::add(&self.metrics.lvc_in, n);
                }
                None
            }
        }
    }

    /// A message on the live subjects.
    fn live(&mut self, bytes: Bytes, out: &mut Vec<Tick>) -> Option<Poll> {
        let h = match codec::header(&bytes) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "bus: skipped a message");
                BusMetrics::add(&self.metrics.garbage, 1);
                return None;
            }
        };
        // Checked whole before anything in it is believed (its epoch too).
        let hb = match h.kind {
            Kind::Heartbeat => codec::heartbeat(&bytes).map(Some),
            Kind::Batch => codec::records(&bytes, &h, |_| {}).map(|()| None),
        };
        let Ok(hb) = hb else {
            BusMetrics::add(&self.metrics.garbage, 1);
            return None;
        };
        if Some(h.epoch) != self.epoch {
            // The ingest restarted its numbering. Ticks of the old epoch
            // go first; then the feed thread restarts, then this message.
            self.held = Some(Inbound::Live(bytes));
            if !out.is_empty() {
                return Some(Poll::Ready);
            }
            self.epoch = Some(h.epoch);
            self.last_batch = 0;
            self.last_seq.iter_mut().for_each(|s| *s = 0);
            return Some(Poll::Epoch(h.epoch));
        }
        match hb {
            Some(hb) => {
                BusMetrics::add(&self.metrics.heartbeats_in, 1);
                self.alive();
                let interval = Duration::from_millis(u64::from(hb.interval_ms.max(1)));
                self.stale_after = interval + interval / 2;
                self.ingest_state = hb.state;
                self.batches_up_to(hb.last_batch, false);
            }
            None => {
                let before = out.len();
                self.alive();
                self.batches_up_to(h.batch, true);
                self.records(&bytes, &h, out);
                BusMetrics::add(&self.metrics.batches_in, 1);
                BusMetrics::add(&self.metrics.updates_in, (out.len() - before) as u64);
            }
        }
        None
    }

    fn alive(&mut self) {
        self.last_alive = Some(Instant::now());
        self.up = true;
    }

    /// Batch `n` was seen (`is_batch`), or named as the last one sent by a
    /// heartbeat: counts the batches missed since the last one seen.
    fn batches_up_to(&mut self, n: u64, is_batch: bool) {
        let expected = if is_batch { self.last_batch + 1 } else { self.last_batch };
        if self.last_batch > 0 && n > expected {
            BusMetrics::add(&self.metrics.batches_lost, n - expected);
            self.ask_lvc();
        }
        if self.last_batch == 0 || n > self.last_batch {
            self.last_batch = n;
        }
    }

    /// Appends the records of a checked batch whose `seq` is new for their
    /// stream; returns how many.
    fn records(&mut self, bytes: &[u8], h: &codec::Header, out: &mut Vec<Tick>) -> u64 {
        let before = out.len();
        let (table, last_seq, metrics) = (&self.table, &mut self.last_seq, &self.metrics);
        let mut bad = 0u64;
        let _ = codec::records(bytes, h, |r| {
            let Ok(sym) = table.intern(r.name) else {
                bad += 1;
                return;
            };
            let tick = Tick { sym, ..r.tick };
            let stream = stream_index(sym, tick.channel());
            if stream >= last_seq.len() {
                last_seq.resize(stream + 1, 0);
            }
            if tick.seq <= last_seq[stream] {
                BusMetrics::add(&metrics.repeats, 1);
                return;
            }
            last_seq[stream] = tick.seq;
            out.push(tick);
        });
        self.skipped += bad;
        (out.len() - before) as u64
    }
}

impl FeedSource for BusSource {
    fn poll(&mut self, out: &mut Vec<Tick>) -> Poll {
        // Whether a message came: then answer as soon as the queue is
        // empty; else wait (once, briefly) for one.
        let mut came = false;
        while out.len() < MAX_TICKS {
            let msg = match self.held.take() {
                Some(m) => m,
                None => match self.rx.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Empty) if out.is_empty() && !came => {
                        match self.rx.recv_timeout(READ_WAIT) {
                            Ok(m) => m,
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => {
                                self.up = false;
                                break;
                            }
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        // The bus thread ended: nothing will come again.
                        self.up = false;
                        if out.is_empty() {
                            std::thread::sleep(READ_WAIT);
                        }
                        break;
                    }
                },
            };
            if let Some(answer) = self.handle(msg, out) {
                if answer == Poll::Ready {
                    self.reported = FeedState::Live;
                }
                return answer;
            }
            came = true;
        }
        if !out.is_empty() {
            // The feed thread marks the feed live when it publishes.
            self.reported = FeedState::Live;
            return Poll::Ready;
        }
        let want = self.wanted_state();
        if want != self.reported {
            tracing::info!(state = want.name(), "bus: feed state");
            self.reported = want;
            return Poll::State(want);
        }
        Poll::Ready
    }

    fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }

    fn numbered(&self) -> bool {
        true
    }

    fn first_epoch(&self) -> Option<u64> {
        self.first_epoch
    }
}

impl Drop for BusSource {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The bus thread: start, then forward messages until the source is gone.
async fn run(
    bus: BusConfig,
    tx: Sender<Inbound>,
    mut asks: mpsc::UnboundedReceiver<Ask>,
    metrics: Arc<BusMetrics>,
) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let client = match nats::connect(&bus.url, "tickwire-edge", events_tx, metrics.clone()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(url = %bus.url, error = %e, "cannot use NATS; the feed stays stale");
            let _ = tx.send(Inbound::Known(None));
            return;
        }
    };
    let js = async_nats::jetstream::new(client.clone());
    let mut sub = match client.subscribe(LIVE_WILDCARD).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot subscribe to the bus");
            let _ = tx.send(Inbound::Known(None));
            return;
        }
    };
    let reachable = nats::subscriptions_live(&client).await;
    if !reachable {
        tracing::warn!(url = %bus.url, "NATS did not confirm the subscription in time");
    }
    let live_at = tokio::time::Instant::now();
    // The first heartbeat names the epoch and how far the latest values
    // lag; it and whatever arrives before the read are forwarded after
    // the latest values.
    let mut first: Vec<Bytes> = Vec::new();
    let mut epoch = None;
    let mut lvc_lag = bus.lvc_every;
    let until = live_at + 2 * bus.hb;
    while let Ok(Some(m)) = tokio::time::timeout_at(until, sub.next()).await {
        let hb = codec::heartbeat(&m.payload);
        if epoch.is_none() || hb.is_ok() {
            epoch = codec::header(&m.payload).ok().map(|h| h.epoch).or(epoch);
        }
        first.push(m.payload);
        if let Ok(hb) = hb {
            lvc_lag = Duration::from_millis(u64::from(hb.lvc_ms)).min(LVC_LAG_MAX);
            break;
        }
    }
    // Every update published before the subscription was live reaches
    // JetStream within the ingest's latest-value interval: read after
    // that (and some slack for the stream's capture), so that the latest
    // values and the live stream meet without a hole.
    // (Nothing to read while NATS is not there: the read after it comes
    // back fills the table.)
    let lvc = if reachable {
        tokio::time::sleep_until(live_at + lvc_lag + lvc_lag / 2 + LVC_SLACK).await;
        read_lvc(&js).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let epoch =
        epoch.or_else(|| lvc.iter().filter_map(|b| codec::header(b).ok()).map(|h| h.epoch).max());
    let mut send = Forward { tx: &tx, metrics: &metrics };
    if !send.must(Inbound::Known(epoch)) {
        return;
    }
    for b in lvc {
        send.must(Inbound::Lvc(b));
    }
    for b in first {
        send.live(b);
    }
    // A read of the latest values that is due, and how many tries are left.
    let mut lvc_due: Option<tokio::time::Instant> = None;
    let mut lvc_tries = 0u32;
    let mut was_down = false;
    loop {
        let due =
            lvc_due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            m = sub.next() => match m {
                Some(m) => send.live(m.payload),
                None => return,
            },
            a = asks.recv() => match a {
                Some(Ask::ReadLvc) => {
                    lvc_due.get_or_insert(tokio::time::Instant::now() + 2 * lvc_lag);
                    lvc_tries = LVC_TRIES;
                }
                // The source is gone.
                None => return,
            },
            Some(link) = events.recv() => {
                if link == Link::Up && was_down {
                    // The ingest republishes its table when it is back too.
                    lvc_due = Some(tokio::time::Instant::now() + 2 * lvc_lag);
                    lvc_tries = LVC_TRIES;
                }
                match link {
                    Link::Up => was_down = false,
                    Link::Down => was_down = true,
                    Link::SlowConsumer => {}
                }
                send.must(Inbound::Link(link));
            }
            _ = tokio::time::sleep_until(due), if lvc_due.is_some() => {
                lvc_due = None;
                match read_lvc(&js).await {
                    Ok(values) => {
                        // A live batch reaches this connection before any
                        // latest value taken from it: hand over those that
                        // arrived during the read first, or a latest value
                        // would jump ahead of them (a gap that is none).
                        while let Some(Some(m)) = sub.next().now_or_never() {
                            send.live(m.payload);
                        }
                        for b in values {
                            send.must(Inbound::Lvc(b));
                        }
                    }
                    Err(e) => {
                        lvc_tries = lvc_tries.saturating_sub(1);
                        if lvc_tries > 0 {
                            tracing::debug!(error = %e, "bus: latest values not readable yet");
                            lvc_due = Some(tokio::time::Instant::now() + LVC_MIN_GAP);
                        }
                    }
                }
            }
        }
    }
}

/// Hands messages to the feed thread.
struct Forward<'a> {
    tx: &'a Sender<Inbound>,
    metrics: &'a BusMetrics,
}

impl Forward<'_> {
    /// A live message: dropped and counted if the queue is full (the gap
    /// shows downstream); never blocks the client.
    fn live(&mut self, b: Bytes) {
        match self.tx.try_send(Inbound::Live(b)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => BusMetrics::add(&self.metrics.queue_dropped, 1),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// A message that must arrive (bounded wait); `false` if the source is gone.
    fn must(&mut self, m: Inbound) -> bool {
        match self.tx.send_timeout(m, Duration::from_secs(1)) {
            Ok(()) => true,
            Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => {
                BusMetrics::add(&self.metrics.queue_dropped, 1);
                true
            }
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => false,
        }
    }
}

/// Reads the latest value of every stream: an ordered consumer delivering
/// the last message per subject, read until none is pending.
async fn read_lvc(js: &async_nats::jetstream::Context) -> Result<Vec<Bytes>, String> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    let read = async {
        let mut stream = js.get_stream(LVC_STREAM).await.map_err(|e| e.to_string())?;
        let held = stream.info().await.map_err(|e| e.to_string())?.state.messages;
        let mut out = Vec::with_capacity(held as usize);
        if held == 0 {
            return Ok::<_, String>(out);
        }
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: LVC_SUBJECTS.to_string(),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..OrderedConfig::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        while let Some(m) = messages.next().await {
            let m = m.map_err(|e| e.to_string())?;
            let pending = m.info().map(|i| i.pending).unwrap_or(0);
            out.push(m.message.payload.clone());
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    };
    let values = tokio::time::timeout(LVC_READ_WAIT, read)
        .await
        .map_err(|_| "no answer reading the latest values".to_string())??;
    tracing::debug!(values = values.len(), "bus: read the latest values");
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::FeedState;
    use crate::tick::{Price, SymbolId};
    use codec::{BatchWriter, Heartbeat};

    /// A source whose bus thread is the test: returns the queue's sending end.
    fn source(epoch: u64) -> (BusSource, Sender<Inbound>, Arc<BusMetrics>) {
        let (tx, rx) = crossbeam_channel::bounded(64);
        let (ask, _) = mpsc::unbounded_channel();
        let metrics = Arc::new(BusMetrics::default());
        let table = Arc::new(SymbolTable::new(16));
        let hb = Duration::from_secs(60);
        let mut s =
            BusSource::new(rx, ask, Arc::new(Notify::new()), None, table, metrics.clone(), hb);
        s.epoch = Some(epoch);
        s.up = true;
        s.last_alive = Some(Instant::now());
        (s, tx, metrics)
    }

    /// A batch of trades (`name`, `seq`) in `epoch`, numbered `batch`.
    fn batch(epoch: u64, batch: u64, trades: &[(&str, u64)]) -> Inbound {
        let mut w = BatchWriter::default();
        w.begin(epoch, batch);
        for &(name, seq) in trades {
            let t = Tick { seq, ingest_ns: 5, ..Tick::trade(SymbolId(0), 1, Price(10_000), 1) };
            w.push(&t, name);
        }
        Inbound::Live(Bytes::copy_from_slice(w.finish()))
    }

    fn heartbeat(epoch: u64, last_batch: u64, state: FeedState, interval_ms: u32) -> Inbound {
        let hb = Heartbeat { epoch, last_batch, state, interval_ms, lvc_ms: 1, sent_ns: 0 };
        Inbound::Live(Bytes::copy_from_slice(&codec::encode_heartbeat(&hb)))
    }

    fn seqs(out: &[Tick]) -> Vec<u64> {
        out.iter().map(|t| t.seq).collect()
    }

    #[test]
    fn batches_become_ticks_that_keep_the_ingests_numbering() {
        let (mut s, tx, m) = source(7);
        tx.send(batch(7, 1, &[("AAPL", 1), ("MSFT", 1), ("AAPL", 2)])).unwrap();
        let mut out = Vec::new();
        assert_eq!(s.poll(&mut out), Poll::Ready);
        // The ingest's seq and ingest time, the names interned here.
        assert_eq!(seqs(&out), [1, 1, 2]);
        assert!(out.iter().all(|t| t.ingest_ns == 5));
        assert_eq!(s.table.name(out[1].sym).as_deref(), Some("MSFT"));
        // A repeat is skipped and counted, the rest kept.
        tx.send(batch(7, 2, &[("AAPL", 2), ("AAPL", 3)])).unwrap();
        out.clear();
        assert_eq!(s.poll(&mut out), Poll::Ready);
        assert_eq!(seqs(&out), [3]);
        assert_eq!(m.repeats.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(m.batches_lost.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn garbage_is_skipped_and_counted_without_touching_the_epoch() {
        let (mut s, tx, m) = source(7);
        let Inbound::Live(good) = batch(9, 1, &[("AAPL", 1)]) else { unreachable!() };
        // Truncated (a header from another epoch), not ours, a newer version.
        tx.send(Inbound::Live(good.slice(..good.len() - 1))).unwrap();
        tx.send(Inbound::Live(Bytes::from_static(b"{\"x\":1}"))).unwrap();
        let mut newer = good.to_vec();
        newer[2] = 2;
        tx.send(Inbound::Live(newer.into())).unwrap();
        let mut out = Vec::new();
        assert_eq!(s.poll(&mut out), Poll::Ready);
        assert!(out.is_empty());
        assert_eq!(m.garbage.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(s.epoch, Some(7));
    }

    #[test]
    fn a_new_epoch_is_answered_before_its_ticks() {
        let (mut s, tx, _) = source(7);
        tx.send(batch(7, 1, &[("AAPL", 5)])).unwrap();
        tx.send(batch(8, 1, &[("AAPL", 1)])).unwrap();
        let mut out = Vec::new();
        // The old epoch's ticks first, then the restart, then the new ticks
        // (seq 1 again: the numbering started over).
        assert_eq!(s.poll(&mut out), Poll::Ready);
        assert_eq!(seqs(&out), [5]);
        out.clear();
        assert_eq!(s.poll(&mut out), Poll::Epoch(8));
        assert!(out.is_empty());
        assert_eq!(s.poll(&mut out), Poll::Ready);
        assert_eq!(seqs(&out), [1]);
    }

    #[test]
    fn numbering_gaps_are_counted_and_ask_for_the_latest_values() {
        let (mut s, tx, m) = source(7);
        let (ask, mut asks) = mpsc::unbounded_channel();
        s.ask = ask;
        tx.send(batch(7, 10, &[("AAPL", 1)])).unwrap();
        tx.send(batch(7, 13, &[("AAPL", 2)])).unwrap();
        // A heartbeat naming a batch never seen: lost too.
        tx.send(heartbeat(7, 15, FeedState::Live, 60_000)).unwrap();
        let mut out = Vec::new();
        while s.poll(&mut out) == Poll::Ready && !s.rx.is_empty() {}
        assert_eq!(m.batches_lost.load(std::sync::atomic::Ordering::Relaxed), 2 + 2);
        // One read of the latest values asked for (at most one a second).
        assert!(matches!(asks.try_recv(), Ok(Ask::ReadLvc)));
        assert!(asks.try_recv().is_err());
    }

    #[test]
    fn silence_or_a_lost_connection_is_stale_and_a_heartbeat_is_live_again() {
        let (mut s, tx, _) = source(7);
        let mut out = Vec::new();
        // The connection drops: stale at once.
        tx.send(Inbound::Link(Link::Down)).unwrap();
        assert_eq!(s.poll(&mut out), Poll::State(FeedState::Stale));
        // Back, and the ingest heard: live (its heartbeats come every 50 ms).
        tx.send(Inbound::Link(Link::Up)).unwrap();
        tx.send(heartbeat(7, 0, FeedState::Live, 50)).unwrap();
        assert_eq!(s.poll(&mut out), Poll::State(FeedState::Live));
        // Then nothing for longer than 75 ms (an idle poll waits 20 ms): stale.
        let mut answers = Vec::new();
        for _ in 0..20 {
            answers.push(s.poll(&mut out));
            if answers.last() != Some(&Poll::Ready) {
                break;
            }
        }
        assert!(answers.contains(&Poll::State(FeedState::Stale)), "{answers:?}");
        // The ingest's own state travels in its heartbeats.
        tx.send(heartbeat(7, 0, FeedState::ReplayDone, 60_000)).unwrap();
        assert_eq!(s.poll(&mut out), Poll::State(FeedState::ReplayDone));
        assert!(out.is_empty());
    }
}
