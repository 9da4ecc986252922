//! The ingest's side of the bus: a thread that reads the ring like a writer
//! shard (its own [`RingReader`], woken by the feed thread) and publishes
//! what it reads to core NATS, in batches, under the market's epoch.
//!
//! Besides the batches it sends:
//! - a heartbeat on [`super::HEARTBEAT_SUBJECT`] every `hb` (and at once
//!   when the feed's state changes): epoch, feed state, last batch number,
//!   so that an edge can tell a silent feed (heartbeats, no batches) from a
//!   dead bus (nothing), and count the batches it missed;
//! - the latest value of every stream into a JetStream memory stream, one
//!   message per subject ([`super::lvc_subject`]), with plain core
//!   publishes (no acks) and only for the streams that changed, at most
//!   every `lvc_every`. When NATS comes back after an outage the stream
//!   may be gone (a memory stream does not survive a server restart): the
//!   publisher creates it again and republishes its whole table. A new
//!   epoch purges it.
//!
//! Loss is never hidden, only reported downstream: a ring overrun of the
//! publisher, or batches it could not send while NATS was down, are gaps
//! in the streams' `seq` that edges report exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use super::codec::{self, BatchWriter};
use super::metrics::BusMetrics;
use super::nats::{self, Link};
use super::{BusConfig, HEARTBEAT_SUBJECT, LIVE_SUBJECT};
use crate::feed::{Market, ShardWake};
use crate::ring::{ReadOutcome, RingReader};
use crate::tick::{Tick, now_ns};

/// Most updates read from the ring at once, and so the most in one batch
/// (about 55 KB of quotes, well under NATS' 1 MiB payload limit).
const MAX_BATCH: usize = 1024;

/// Longest one publish may wait for the client (its queue is full while it
/// reconnects); the batch counts as unsent then.
const PUBLISH_WAIT: Duration = Duration::from_millis(200);

/// Longest the publisher waits for its first connection before it reads
/// the ring (what it reads while NATS is down is not sent).
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(5);

/// How long after a failure the publisher tries again to create the
/// latest-value stream (a server without JetStream fails every time).
const STREAM_RETRY: Duration = Duration::from_secs(5);

/// What the ingest hands the publisher.
pub struct PublisherSetup {
    /// The bus.
    pub bus: BusConfig,
    /// The publisher's own cursor into the ring.
    pub reader: RingReader<Tick>,
    /// Names, epoch and feed state.
    pub market: Arc<Market>,
    /// Woken by the feed thread after every publication; counted among the
    /// readers that acknowledge a new epoch ([`Market::ack_epoch`]).
    pub wake: ShardWake,
    /// What it counts.
    pub metrics: Arc<BusMetrics>,
}

/// The running publisher thread.
pub struct Publisher {
    stop: Arc<AtomicBool>,
    stop_wake: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    /// Starts the publisher thread `tickwire-bus`. It connects to NATS in
    /// the background: until NATS is there, batches count as unsent.
    pub fn spawn(setup: PublisherSetup) -> std::io::Result<Publisher> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_wake = Arc::new(Notify::new());
        let (flag, wake) = (stop.clone(), stop_wake.clone());
        let thread = super::spawn_bus_thread(move || run(setup, flag, wake))?;
        Ok(Publisher { stop, stop_wake, thread: Some(thread) })
    }

    /// Stops the thread and waits for it (what it had sent is flushed).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.stop_wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The publisher's state, on its thread.
struct State {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    reader: RingReader<Tick>,
    market: Arc<Market>,
    metrics: Arc<BusMetrics>,
    bus: BusConfig,
    /// The epoch of what is being published.
    epoch: u64,
    /// The last batch number sent (or counted as unsent) in this epoch.
    batch_no: u64,
    writer: BatchWriter,
    ticks: Vec<Tick>,
    /// Symbol names by id, copied from the market's table when first met.
    names: Vec<Arc<str>>,
    /// The newest published update of every stream (`seq` 0: none).
    lvc: Vec<Tick>,
    /// Streams whose latest value changed since the last JetStream round.
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    /// Whether NATS is connected.
    up: bool,
    /// Whether the latest-value stream exists (as far as we know).
    stream_ok: bool,
    /// When to try creating it again after a failure.
    stream_retry_at: Instant,
    /// The feed-state generation last announced in a heartbeat.
    state_gen: u64,
}

async fn run(setup: PublisherSetup, stop: Arc<AtomicBool>, stop_wake: Arc<Notify>) {
    let PublisherSetup { bus, reader, market, wake, metrics } = setup;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let client = match nats::connect(&bus.url, "tickwire-ingest", events_tx, metrics.clone()).await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(url = %bus.url, error = %e, "cannot use NATS; nothing is published");
            return;
        }
    };
    let js = async_nats::jetstream::new(client.clone());
    let epoch = market.epoch().0;
    let mut s = State {
        client,
        js,
        reader,
        market,
        metrics,
        epoch,
        batch_no: 0,
        writer: BatchWriter::default(),
        ticks: Vec::with_capacity(MAX_BATCH),
        names: Vec::new(),
        lvc: Vec::new(),
        dirty: Vec::new(),
        is_dirty: Vec::new(),
        up: false,
        stream_ok: false,
        stream_retry_at: Instant::now(),
        state_gen: 0,
        bus,
    };
    // The first batches wait (bounded) for the first connection, so that
    // an ingest started with its NATS sends its feed from the first update.
    if let Ok(Some(link)) = tokio::time::timeout(FIRST_CONNECT_WAIT, events.recv()).await {
        s.link(link).await;
    }
    let mut hb = tokio::time::interval(s.bus.hb);
    hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lvc = tokio::time::interval(s.bus.lvc_every);
    lvc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Acquire) {
        tokio::select! {
            _ = stop_wake.notified() => {}
            _ = wake.tick.notified() => {}
            _ = wake.urgent.notified() => {}
            _ = hb.tick() => s.heartbeat().await,
            _ = lvc.tick() => s.publish_lvc().await,
            Some(link) = events.recv() => s.link(link).await,
        }
        s.drain(&mut events).await;
        let (_, gen_) = s.market.state();
        if gen_ != s.state_gen {
            s.heartbeat().await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), s.client.flush()).await;
}

impl State {
    /// Publishes everything the ring holds, epoch by epoch, taking
    /// connection events as they come (a drain that meets an outage does
    /// not wait for it to end to learn of it).
    async fn drain(&mut self, events: &mut mpsc::UnboundedReceiver<Link>) {
        loop {
            while let Ok(link) = events.try_recv() {
                self.link(link).await;
            }
            let (epoch, start) = self.market.epoch();
            if epoch != self.epoch {
                // Whatever lies before `start` is the old epoch's (the feed
                // thread publishes nothing new before our acknowledgement,
                // or before its wait for it ran out).
                while self.reader.position() < start {
                    if !self.publish_some(start - self.reader.position()).await {
                        break;
                    }
                }
                self.new_epoch(epoch).await;
                continue;
            }
            if !self.publish_some(u64::MAX).await {
                return;
            }
        }
    }

    /// Reads up to `limit` ring positions and publishes them as one batch;
    /// `false` when the ring had nothing new.
    async fn publish_some(&mut self, limit: u64) -> bool {
        self.ticks.clear();
        let max = limit.min(MAX_BATCH as u64) as usize;
        match self.reader.read_batch(&mut self.ticks, max) {
            ReadOutcome::Items(0) => return false,
            ReadOutcome::Items(_) => {}
            ReadOutcome::Overrun { lost } => {
                // A gap on the bus: edges see the streams' seq jump.
                BusMetrics::add(&self.metrics.ring_lost, lost);
                return true;
            }
        }
        self.writer.begin(self.epoch, self.batch_no + 1);
        for i in 0..self.ticks.len() {
            let tick = self.ticks[i];
            let Some(name) = self.name(tick.sym) else { continue };
            self.writer.push(&tick, &name);
            self.remember(tick);
        }
        self.batch_no += 1;
        let count = u64::from(self.writer.count());
        let payload = Bytes::copy_from_slice(self.writer.finish());
        let bytes = payload.len() as u64;
        if self.send(LIVE_SUBJECT.to_string(), payload).await {
            BusMetrics::add(&self.metrics.batches_out, 1);
            BusMetrics::add(&self.metrics.updates_out, count);
            BusMetrics::add(&self.metrics.bytes_out, bytes);
        } else {
            BusMetrics::add(&self.metrics.batches_unsent, 1);
        }
        true
    }

    /// Publishes on core NATS unless it is down; `false` if not sent.
    async fn send(&mut self, subject: String, payload: Bytes) -> bool {
        if !self.up {
            return false;
        }
        let publish = self.client.publish(subject, payload);
        matches!(tokio::time::timeout(PUBLISH_WAIT, publish).await, Ok(Ok(())))
    }

    /// The name of symbol `id` (copied from the market's table once).
    fn name(&mut self, id: crate::tick::SymbolId) -> Option<Arc<str>> {
        if id.index() >= self.names.len() {
            let more = self.market.symbols.names_from(self.names.len());
            self.names.extend(more);
        }
        self.names.get(id.index()).cloned()
    }

    /// Keeps `tick` as its stream's latest value, to publish next round.
    fn remember(&mut self, tick: Tick) {
        let stream = tick.stream();
        if stream >= self.lvc.len() {
            let empty = Tick { seq: 0, ..tick };
            self.lvc.resize(stream + 1, empty);
            self.is_dirty.resize(stream + 1, false);
        }
        self.lvc[stream] = tick;
        if !self.is_dirty[stream] {
            self.is_dirty[stream] = true;
            self.dirty.push(stream as u32);
        }
    }

    /// Sends the latest value of every stream that changed.
    async fn publish_lvc(&mut self) {
        if !self.up {
            return;
        }
        if !self.stream_ok {
            if Instant::now() < self.stream_retry_at {
                return;
            }
            self.ensure_stream().await;
            if !self.stream_ok {
                return;
            }
            self.mark_all_dirty();
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for &stream in &dirty {
            self.is_dirty[stream as usize] = false;
            let tick = self.lvc[stream as usize];
            if tick.seq == 0 {
                continue;
            }
            let Some(name) = self.name(tick.sym) else { continue };
            self.writer.begin(self.epoch, self.batch_no);
            self.writer.push(&tick, &name);
            let payload = Bytes::copy_from_slice(self.writer.finish());
            if self.send(super::lvc_subject(tick.channel(), &name), payload).await {
                BusMetrics::add(&self.metrics.lvc_out, 1);
            } else {
                // Down meanwhile: the whole table goes again next round.
                self.mark_all_dirty();
                return;
            }
        }
        // The list's allocation is kept for the next round.
        dirty.clear();
        self.dirty = dirty;
    }

    /// Creates the latest-value stream if it is not there.
    async fn ensure_stream(&mut self) {
        let config = nats::lvc_stream_config();
        let created =
            tokio::time::timeout(Duration::from_secs(2), self.js.get_or_create_stream(config));
        self.stream_retry_at = Instant::now() + STREAM_RETRY;
        match created.await {
            Ok(Ok(_)) => self.stream_ok = true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "JetStream: cannot create the latest-value stream; edges start without snapshots");
            }
            Err(_) => tracing::warn!("JetStream: no answer creating the latest-value stream"),
        }
    }

    /// NATS came or went.
    async fn link(&mut self, link: Link) {
        match link {
            Link::Up => {
                self.up = true;
                tracing::info!(url = %self.bus.url, "NATS connected");
                // A restarted server has lost the memory stream: create it
                // and send the whole table. A stream that survived holds
                // what this process last sent, or an earlier ingest's
                // epoch: emptied first, so it never serves that.
                self.stream_ok = false;
                self.ensure_stream().await;
                if self.stream_ok {
                    self.purge_lvc().await;
                    self.mark_all_dirty();
                    BusMetrics::add(&self.metrics.lvc_republished, 1);
                    self.publish_lvc().await;
                }
                self.heartbeat().await;
            }
            Link::Down => {
                self.up = false;
                tracing::warn!(url = %self.bus.url, "NATS connection lost; reconnecting");
            }
            Link::SlowConsumer => {}
        }
    }

    /// Marks every stream that has a value for the next round.
    fn mark_all_dirty(&mut self) {
        self.dirty.clear();
        for (stream, tick) in self.lvc.iter().enumerate() {
            self.is_dirty[stream] = tick.seq > 0;
            if tick.seq > 0 {
                self.dirty.push(stream as u32);
            }
        }
    }

    /// The feed restarted its numbering: batches start again at 1, and the
    /// latest values of the old epoch are forgotten here and in JetStream.
    async fn new_epoch(&mut self, epoch: u64) {
        tracing::info!(epoch = %crate::feed::epoch_name(epoch), "bus: new epoch");
        self.epoch = epoch;
        self.batch_no = 0;
        self.lvc.iter_mut().for_each(|t| t.seq = 0);
        self.is_dirty.iter_mut().for_each(|d| *d = false);
        self.dirty.clear();
        if self.up && self.stream_ok {
            self.purge_lvc().await;
        }
        self.market.ack_epoch(epoch);
        self.heartbeat().await;
    }

    /// Empties the latest-value stream.
    async fn purge_lvc(&mut self) {
        let purge = async {
            let stream = self.js.get_stream(super::LVC_STREAM).await.ok()?;
            stream.purge().await.ok()
        };
        if tokio::time::timeout(Duration::from_secs(2), purge).await.ok().flatten().is_none() {
            tracing::warn!("JetStream: could not empty the latest-value stream");
        }
    }

    /// Sends a heartbeat.
    async fn heartbeat(&mut self) {
        let (state, gen_) = self.market.state();
        self.state_gen = gen_;
        let hb = codec::Heartbeat {
            epoch: self.epoch,
            last_batch: self.batch_no,
            state,
            interval_ms: millis(self.bus.hb),
            lvc_ms: millis(self.bus.lvc_every),
            sent_ns: now_ns(),
        };
        let payload = Bytes::copy_from_slice(&codec::encode_heartbeat(&hb));
        if self.send(HEARTBEAT_SUBJECT.to_string(), payload).await {
            BusMetrics::add(&self.metrics.heartbeats_out, 1);
        }
    }
}

/// A duration in whole milliseconds, as the heartbeat carries it.
fn millis(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}
