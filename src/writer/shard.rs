//! The state of one writer shard: its sessions, the index from (channel,
//! symbol) stream to the local subscribers, and the two halves of the data
//! path that run on the shard thread:
//!
//! 1. [`Shard::dispatch`]: for each tick drained from the ring, offer it to
//!    every local subscriber of its stream (conflation happens there);
//! 2. [`Shard::end_of_batch`]: for every session that got something and whose
//!    socket is idle, encode one frame with all its pending updates.
//!
//! Control requests ([`Shard::handle`]) run on the same thread between
//! batches, so no lock is ever taken: the shard is an `Rc<RefCell<Shard>>`
//! owned by one current-thread runtime.
//!
//! Each update is encoded once per batch and shared: the [`EncodeCache`]
//! holds the tail of every tick encoded in the current batch (per session
//! format), and every subscriber's frame copies it behind its own head. On a
//! `tickwire.v1.bin` session the cached part is the binary record
//! ([`super::binary`]) and the per-connection part is its `cf` field; the
//! frame header carries the first `cseq`.
//!
//! Entitlements ([`crate::auth`]) are enforced where subscriptions are
//! made: a name the session is not entitled to is rejected with 403, and
//! `["*"]` expands (now and as new symbols appear in [`Shard::sync_symbols`])
//! only over entitled symbols and channels. Batches are never shared across
//! entitlement sets: every frame is built for one session from that
//! session's own entries, and the shared [`EncodeCache`] only holds the
//! encoded *tail* of a tick, copied into a frame only for a session that
//! has an entry for the tick's stream, which it could only get through the
//! entitlement check.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::changes::ChangeLog;
use super::subscriber::{Entry, Subscriber, WildOpts};
use crate::auth::audit::{Event, Who};
use crate::auth::{Access, SessionAuth};
use crate::feed::{FeedState, Market, epoch_name};
use crate::protocol::binary;
use crate::protocol::json::{self, Format, Obj};
use crate::protocol::request::{BadRequest, Mode, Parser, Request};
use crate::ring::{ReadOutcome, RingReader};
use crate::socket::outbound::{
    Cause, CloseRequest, DirectWrite, Frame, Next, Outbound, Pushed, Signals,
};
use crate::tick::{Channel, Channels, Price, SymbolId, Tick, now_ns, stream_index, valid_symbol};
use crate::writer::metrics::{MAX_LATENCY_NS, ShardCounters, ShardMetrics, new_histogram};

/// Settings a shard needs, fixed at start.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Heartbeat interval.
    pub hb: Duration,
    /// Most symbols one session may subscribe to by name.
    pub max_symbols: usize,
    /// Inbound messages allowed per second per connection.
    pub msgs_in_per_s: u32,
    /// Largest inbound text message.
    pub max_message_bytes: usize,
    /// All-mode queue length per session before updates are dropped.
    pub queue_cap: usize,
    /// A latest-mode session whose oldest unwritten frame has waited this
    /// long for its socket is told (`slow`) that it is being conflated.
    pub slow_warn: Duration,
    /// A session whose oldest unwritten frame has waited this long for its
    /// socket is closed with 4008.
    pub lag_limit: Duration,
    /// A session with this many bytes waiting is closed.
    pub max_queued_bytes: usize,
    /// Whether `["*"]` subscriptions are allowed (refused with 403 when not).
    pub allow_wildcard: bool,
    /// Per-session share of the time between two flushes of a busy shard
    /// (see `writer::flush_gap`).
    pub flush_share: Duration,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            hb: Duration::from_millis(1000),
            max_symbols: 1000,
            msgs_in_per_s: 50,
            max_message_bytes: 65536,
            queue_cap: 4096,
            slow_warn: Duration::from_secs(1),
            lag_limit: Duration::from_secs(5),
            max_queued_bytes: 4 << 20,
            allow_wildcard: true,
            flush_share: Duration::from_micros(48),
        }
    }
}

/// How a subscription entry came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Subscribed by name (counts against the symbol limit).
    Named,
    /// Covered by a `["*"]` subscription when it was made.
    Wildcard,
    /// Added to a `["*"]` subscription when the shard met a new symbol.
    NewSymbol,
}

/// A local subscriber of a stream: session slot and entry index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubRef {
    session: u32,
    entry: u32,
}

/// One cached tail.
#[derive(Debug, Clone, Copy, Default)]
struct CacheSlot {
    batch: u64,
    seq: u64,
    start: u32,
    len: u32,
    /// Messages that carried this tail so far in the batch.
    hits: u32,
    /// Ingest-to-send latency of the tick (the same for every message of the batch).
    latency_ns: u64,
}

/// Tails of the ticks encoded in the current batch, per format, and the
/// latency histogram they feed.
///
/// Every message that carries a cached tail has the same ingest-to-send
/// latency (same tick, same `to`), so the histogram is fed once per tail with
/// the number of messages (`record_n`) when the batch ends, not once per
/// message: a tenth of the cost at 100 subscribers.
pub struct EncodeCache {
    arena: Vec<u8>,
    /// One table per format (`Format::index`), by stream index: a table
    /// grows only for the formats sessions actually use.
    slots: Vec<Vec<CacheSlot>>,
    /// Slots (format, stream) filled in the current batch, to record their hits.
    filled: Vec<(u32, u32)>,
    batch: u64,
    /// Send stamp (`to`) of the current batch.
    to_ns: u64,
    /// Ingest-to-send latency of every update sent, in ns (shard-local;
    /// merged into the shared metrics periodically).
    latency: Histogram<u64>,
}

/// A batch older than this is renewed before use, so `to` stays honest.
const CACHE_MAX_AGE_NS: u64 = 500_000;

impl EncodeCache {
    fn new() -> EncodeCache {
        EncodeCache {
            arena: Vec::with_capacity(1 << 16),
            slots: vec![Vec::new(); Format::COUNT],
            filled: Vec::new(),
            batch: 1,
            to_ns: now_ns(),
            latency: new_histogram(),
        }
    }

    /// Starts a new batch: earlier tails are forgotten (and counted).
    fn begin(&mut self) {
        self.record_hits();
        self.arena.clear();
        self.batch += 1;
        self.to_ns = now_ns();
    }

    fn begin_if_stale(&mut self) {
        if now_ns().saturating_sub(self.to_ns) > CACHE_MAX_AGE_NS {
            self.begin();
        }
    }

    /// Records the latency of every message sent from this batch's tails.
    fn record_hits(&mut self) {
        for (f, idx) in self.filled.drain(..) {
            let slot = &mut self.slots[f as usize][idx as usize];
            if slot.hits > 0 {
                let _ = self
                    .latency
                    .record_n(slot.latency_ns.min(MAX_LATENCY_NS), u64::from(slot.hits));
                slot.hits = 0;
            }
        }
    }

    /// Appends the tail of `tick` in `format` to `out`, encoding it only if
    /// this batch has not encoded it yet.
    ///
    /// Hot path: a table lookup and a memcpy when cached.
    #[inline]
    fn tail(&mut self, out: &mut Vec<u8>, tick: &Tick, name: &str, format: Format) {
        let (f, idx) = (format.index(), tick.stream());
        let slots = &mut self.slots[f];
        if idx >= slots.len() {
            slots.resize(idx + 1, CacheSlot::default());
        }
        let slot = &mut slots[idx];
        if slot.batch == self.batch {
            if slot.seq == tick.seq {
                slot.hits += 1;
                out.extend_from_slice(
                    &self.arena[slot.start as usize..(slot.start + slot.len) as usize],
                );
                return;
            }
            // A newer tick of the stream in the same batch: count the old one now.
            if slot.hits > 0 {
                let _ = self
                    .latency
                    .record_n(slot.latency_ns.min(MAX_LATENCY_NS), u64::from(slot.hits));
            }
        } else {
            self.filled.push((f as u32, idx as u32));
        }
        let start = self.arena.len();
        if format.binary {
            binary::write_record(&mut self.arena, tick, format, self.to_ns);
        } else {
            json::write_tail(&mut self.arena, tick, name, format, self.to_ns);
        }
        let len = self.arena.len() - start;
        self.slots[f][idx] = CacheSlot {
            batch: self.batch,
            seq: tick.seq,
            start: start as u32,
            len: len as u32,
            hits: 1,
            latency_ns: self.to_ns.saturating_sub(tick.ingest_ns),
        };
        out.extend_from_slice(&self.arena[start..]);
    }

    /// Appends one update message with `cseq` and `cf` to a data frame:
    /// JSON head and cached tail (after a comma unless `first`), or the
    /// cached binary record with its `cf` set (`cseq` is implicit there).
    ///
    /// Hot path: a lookup, a memcpy and a few stores when cached.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn update(
        &mut self,
        out: &mut Vec<u8>,
        tick: &Tick,
        name: &str,
        format: Format,
        cseq: u64,
        cf: u64,
        first: bool,
    ) {
        if format.binary {
            self.tail(out, tick, name, format);
            binary::set_cf(out, binary::record_len(format.stamps), cf);
            return;
        }
        if !first {
            out.push(b',');
        }
        json::write_update_head(out, tick, cseq, cf);
        self.tail(out, tick, name, format);
    }
}

/// Budget of one data frame. A session with more pending gets it in
/// several frames, one per completed write: this bounds the bytes a session
/// holds (the frame being written) whatever its backlog.
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Base of the `reconnect_after_ms` a stopping server suggests; up to
/// [`SHUTDOWN_JITTER_MS`] is added per session, so that the clients of a
/// restarted server do not all return in the same millisecond.
const SHUTDOWN_RECONNECT_AFTER_MS: u64 = 1000;
/// Spread of the jitter added to [`SHUTDOWN_RECONNECT_AFTER_MS`].
const SHUTDOWN_JITTER_MS: u64 = 1000;

/// Base of the jittered `reconnect_after_ms` after an epoch restart: the
/// server is up, so clients may come back at once.
const EPOCH_RECONNECT_AFTER_MS: u64 = 100;

/// Most snapshot messages per frame.
const SNAPSHOTS_PER_FRAME: usize = 256;

/// State of one writer shard. See the module docs.
pub struct Shard {
    /// One request parser for every session of the shard: its buffers grow
    /// to the largest request once, instead of once per connection.
    parser: Parser,
    market: Arc<Market>,
    config: ShardConfig,
    metrics: Arc<ShardMetrics>,
    /// Names of the symbols this shard has met, by id.
    names: Vec<Arc<str>>,
    /// Subscriber slots.
    sessions: Vec<Option<Subscriber>>,
    free_slots: Vec<u32>,
    /// Subscribers per stream index.
    index: Vec<Vec<SubRef>>,
    /// Newest tick of every stream this shard has dispatched: the value a
    /// latest-mode subscriber is sent, shared by all of them.
    last: Vec<Tick>,
    /// Streams by the generation of their last change in `last`: what
    /// sessions that scan (latest mode on `["*"]`) read at frame-building
    /// time instead of being offered every tick.
    changes: ChangeLog,
    /// The change log's generation at the last end of batch: scanning
    /// sessions need a frame only when it moved.
    flushed_changes: u64,
    /// Slots of the sessions that scan the change log.
    scanners: Vec<u32>,
    /// Slots of sessions with a `["*"]` subscription.
    wild_sessions: Vec<u32>,
    /// Sessions with new data since the last end of batch.
    dirty: Vec<u32>,
    /// Updates offered to sessions since the last end of batch: a tick
    /// counts once per per-tick subscriber of its stream, plus once per
    /// scanning session when it is newer than the stream's last value
    /// (whether or not that session scans its channel). With the time since
    /// that flush, the rate the pump's flush decision reads
    /// ([`super::pacer::FlushPacer::due`]).
    news: u64,
    cache: EncodeCache,
    /// Pending `max_hz` wake-ups: (when, slot, uid).
    throttle: BinaryHeap<Reverse<(Instant, u32, u64)>>,
    /// Last feed-state generation told to sessions.
    state_gen: u64,
    /// This shard's cursor into the feed's ring.
    reader: RingReader<Tick>,
    /// The feed epoch this shard's sessions belong to.
    epoch: u64,
    /// Authentication state shared by the server (keys, audit log).
    access: Arc<Access>,
    /// The key-file generation this shard's sessions were last checked against.
    auth_gen: u64,
}

impl Shard {
    /// A shard over `symbols` symbols named `S0`, `S1`... with no feed:
    /// tests hand it ticks with [`Shard::dispatch`].
    #[cfg(test)]
    pub(crate) fn for_tests(symbols: u32, config: ShardConfig) -> Shard {
        let table = Arc::new(crate::tick::SymbolTable::new(4096));
        for i in 0..symbols {
            table.intern(&format!("S{i}")).expect("symbol");
        }
        let market = Arc::new(Market::new(table));
        let reader = crate::ring::ring::<Tick>(2).1.reader();
        Shard::new(market, reader, config, Arc::new(ShardMetrics::default()))
    }

    /// An empty shard reading the ring with `reader`.
    pub fn new(
        market: Arc<Market>,
        reader: RingReader<Tick>,
        config: ShardConfig,
        metrics: Arc<ShardMetrics>,
    ) -> Shard {
        let state_gen = market.state().1;
        let epoch = market.epoch().0;
        Shard {
            parser: Parser::default(),
            market,
            config,
            metrics,
            names: Vec::new(),
            sessions: Vec::new(),
            free_slots: Vec::new(),
            index: Vec::new(),
            last: Vec::new(),
            changes: ChangeLog::new(),
            flushed_changes: 0,
            scanners: Vec::new(),
            wild_sessions: Vec::new(),
            dirty: Vec::new(),
            news: 0,
            cache: EncodeCache::new(),
            throttle: BinaryHeap::new(),
            state_gen,
            reader,
            epoch,
            access: Arc::new(Access::default()),
            auth_gen: 0,
        }
    }

    /// Uses `access` for authentication, entitlements and the audit log
    /// (the default: authentication off, no audit log).
    pub fn set_access(&mut self, access: Arc<Access>) {
        self.auth_gen = access.generation();
        self.access = access;
    }

    /// Who a session is, for the audit log.
    fn who(&self, slot: u32) -> Who<'_> {
        match self.sessions.get(slot as usize).and_then(Option::as_ref) {
            Some(s) => Who { session: Some(s.uid), peer: s.peer, principal: s.auth.principal() },
            None => Who::default(),
        }
    }

    /// Catches up with a feed restart (see [`Market::epoch`]). The old
    /// epoch's ticks still in the ring go to the sessions they belong to,
    /// each session's backlog is framed, and every session then gets
    /// `shutdown` and close 1012; finally the feed thread is told. Called
    /// before anything that could hand a session data (a new session, every
    /// pump round), so no session ever mixes two epochs.
    pub fn sync_epoch(&mut self) {
        let (epoch, start) = self.market.epoch();
        if epoch == self.epoch {
            return;
        }
        // The feed thread publishes nothing new before our acknowledgement,
        // so everything up to `start` is the old epoch's.
        let mut batch = Vec::with_capacity(1024);
        while self.reader.position() < start {
            batch.clear();
            let max = (start - self.reader.position()).min(1024) as usize;
            match self.reader.read_batch(&mut batch, max) {
                ReadOutcome::Items(0) => break,
                ReadOutcome::Items(_) => batch.iter().for_each(|t| {
                    self.dispatch(t);
                }),
                ReadOutcome::Overrun { lost } => {
                    // The latest values are already forgotten: what the old
                    // sessions lost here is lost (they are closing anyway).
                    ShardCounters::add(&self.counters().ring_overruns, 1);
                    ShardCounters::add(&self.counters().ring_lost, lost);
                }
            }
        }
        self.epoch = epoch;
        let now = Instant::now();
        self.cache.begin_if_stale();
        for slot in 0..self.sessions.len() as u32 {
            let pending = self.pending_data(slot);
            if pending {
                while self.build_data_frame(slot, now) {}
            }
            let jitter = u64::from(slot) * 37 % 500;
            self.end_session(slot, EPOCH_RECONNECT_AFTER_MS + jitter, CloseRequest::EPOCH);
        }
        // Nothing of the old epoch may reach the new sessions.
        self.dirty.clear();
        self.last.iter_mut().for_each(|t| t.seq = 0);
        self.market.ack_epoch(epoch);
    }

    /// Slots in the feed's ring.
    pub fn ring_capacity(&self) -> usize {
        self.reader.capacity()
    }

    /// Reads the next ticks of the ring (see [`RingReader::read_batch`]).
    pub fn read_ring(&mut self, out: &mut Vec<Tick>, max: usize) -> ReadOutcome {
        self.reader.read_batch(out, max)
    }

    /// Parses a client's text message with the shard's parser.
    pub fn parse_request(&mut self, text: &[u8]) -> Result<Request, BadRequest> {
        self.parser.parse(text)
    }

    /// The shard's settings.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The shard's counters.
    pub fn counters(&self) -> &ShardCounters {
        &self.metrics.counters
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len() - self.free_slots.len()
    }

    /// Updates offered to this shard's sessions since the last end of
    /// batch (see the field).
    pub fn news(&self) -> u64 {
        self.news
    }

    /// Whether some session got data since the last end of batch.
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
            || (!self.scanners.is_empty() && self.changes.generation() > self.flushed_changes)
    }

    /// Whether a session that is not closing has market data to encode.
    fn pending_data(&self, slot: u32) -> bool {
        let generation = self.changes.generation();
        self.sessions
            .get(slot as usize)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.has_data(generation) && s.out.close_request().is_none())
    }

    fn session(&mut self, slot: u32) -> Option<&mut Subscriber> {
        self.sessions.get_mut(slot as usize).and_then(Option::as_mut)
    }

    // ----- session lifecycle -------------------------------------------------

    /// Registers a new connection (`uid` unique for the server's life) and
    /// queues its `welcome` and first `status`. Authentication is off for it.
    pub fn open_session(&mut self, format: Format, uid: u64) -> (u32, Rc<Signals>) {
        self.open_session_as(format, uid, SessionAuth::Off, None, None)
    }

    /// [`Shard::open_session`] for a session that stands at `auth` with
    /// authentication (`welcome` then says `"auth":"required"` or `"ok"`),
    /// from `peer`, whose data frames the shard may write into `direct`
    /// itself (see [`Outbound::push_data`]). Returns its slot and the
    /// wake-ups its tasks wait on.
    pub fn open_session_as(
        &mut self,
        format: Format,
        uid: u64,
        auth: SessionAuth,
        peer: Option<std::net::SocketAddr>,
        direct: Option<Rc<dyn DirectWrite>>,
    ) -> (u32, Rc<Signals>) {
        self.sync_epoch();
        let out = Outbound::new(direct);
        let signals = out.signals();
        let mut session = Subscriber::new(uid, format, out, Instant::now());
        let auth_label = match &auth {
            SessionAuth::Off => None,
            SessionAuth::Pending { .. } => Some("required"),
            SessionAuth::Ok(_) => Some("ok"),
        };
        session.auth = auth;
        session.peer = peer;
        let c = &self.config;
        let mut buf = Vec::with_capacity(256);
        buf.push(b'[');
        let welcome = Obj::new(&mut buf, "welcome")
            .str("session", &format!("s-{uid}"))
            .str("server", concat!("tickwire/", env!("CARGO_PKG_VERSION")))
            .str("time_unit", format.time_unit.name())
            .u64("hb_ms", c.hb.as_millis() as u64)
            .str("epoch", &epoch_name(self.epoch))
            .with("limits", |b| {
                Obj::object(b)
                    .u64("symbols", c.max_symbols as u64)
                    .u64("msgs_in_per_s", c.msgs_in_per_s.into())
                    .u64("max_message_bytes", c.max_message_bytes as u64)
                    .finish();
            });
        match auth_label {
            Some(label) => welcome.str("auth", label).finish(),
            None => welcome.finish(),
        }
        buf.push(b']');
        session.send(buf);
        let status = self.market.state().0;
        push_status(&mut session, status);
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.sessions[s as usize] = Some(session);
                s
            }
            None => {
                self.sessions.push(Some(session));
                (self.sessions.len() - 1) as u32
            }
        };
        let m = self.counters();
        ShardCounters::add(&m.sessions, 1);
        ShardCounters::add(&m.sessions_total, 1);
        ShardCounters::add(&m.messages_out, 2);
        let auth = auth_label.unwrap_or("off");
        self.access.audit.emit(self.who(slot), Event::Connect { auth });
        (slot, signals)
    }

    /// Forgets a session and all its subscriptions.
    /// Its socket task has ended: the close is counted by its cause.
    pub fn close_session(&mut self, slot: u32) {
        let Some(s) = self.sessions.get(slot as usize).and_then(Option::as_ref) else { return };
        let close = s.out.close_request().unwrap_or(CloseRequest::NETWORK);
        if self.access.audit.enabled() {
            let (code, by) = match (close.cause, close.frame) {
                (Cause::Client, Some((code, _))) => (code, "client"),
                (_, Some((code, _))) => (code, "server"),
                (_, None) => (1006, "network"),
            };
            self.access.audit.emit(self.who(slot), Event::Close { code, by });
        }
        ShardCounters::add(self.counters().close(close.cause), 1);
        let Some(session) = self.sessions.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        let mut removed = 0u64;
        for (i, e) in session.entries.iter().enumerate() {
            if e.live && e.in_index {
                remove_ref(
                    &mut self.index,
                    stream_index(e.sym, e.ch),
                    SubRef { session: slot, entry: i as u32 },
                );
            }
            removed += u64::from(e.live);
        }
        self.wild_sessions.retain(|&s| s != slot);
        self.scanners.retain(|&s| s != slot);
        self.dirty.retain(|&s| s != slot);
        self.free_slots.push(slot);
        let m = self.counters();
        ShardCounters::sub(&m.sessions, 1);
        ShardCounters::sub(&m.subscriptions, removed);
    }

    // ----- the data path -----------------------------------------------------

    /// Learns symbols the feed announced since the last call, and extends
    /// `["*"]` subscriptions to them.
    pub fn sync_symbols(&mut self) {
        let known = self.names.len();
        if self.market.symbols.len() <= known {
            return;
        }
        let new = self.market.symbols.names_from(known);
        self.names.extend(new);
        self.index.resize_with(self.names.len() * 2, Vec::new);
        self.grow_last();
        let wild = self.wild_sessions.clone();
        for slot in wild {
            let Some(s) = self.session(slot) else { continue };
            let (wc, binary) = (s.wildcard, s.format.binary);
            let entitled = s.auth.entitlements().cloned();
            let mut added = Vec::new();
            for id in known..self.names.len() {
                if entitled.as_ref().is_some_and(|e| !e.allows_symbol(&self.names[id])) {
                    continue;
                }
                for ch in Channel::ALL {
                    if let Some(opts) = wc[ch as usize] {
                        added.push(self.upsert_entry(
                            slot,
                            SymbolId(id as u32),
                            ch,
                            opts.mode,
                            opts.max_hz,
                            Origin::NewSymbol,
                        ));
                    }
                }
            }
            // Binary records name symbols by id only: announce the new ones
            // (an unsolicited `subscribed`, no `id`) before any record of them.
            if binary && !added.is_empty() {
                self.reply_subscribed(slot, None, &added, &[], false);
            }
        }
    }

    /// Sizes `last` to the known streams; a stream with no tick yet holds a
    /// placeholder with `seq` 0.
    fn grow_last(&mut self) {
        let n = self.names.len() * 2;
        while self.last.len() < n {
            let stream = self.last.len();
            let sym = SymbolId((stream / 2) as u32);
            let placeholder = if stream.is_multiple_of(2) {
                Tick::quote(sym, 0, Price(0), 0, Price(0), 0)
            } else {
                Tick::trade(sym, 0, Price(0), 0)
            };
            self.last.push(placeholder);
        }
        self.changes.grow(n);
    }

    /// Offers one tick to every local subscriber of its stream that takes
    /// it tick by tick, and records the change for the scanning sessions.
    /// Returns the number of subscribers offered.
    ///
    /// Hot path: no allocation, no lock, no await.
    #[inline]
    pub fn dispatch(&mut self, tick: &Tick) -> usize {
        let stream = tick.stream();
        if stream >= self.index.len() {
            self.sync_symbols();
            if stream >= self.index.len() {
                return 0;
            }
        }
        if tick.seq > self.last[stream].seq {
            self.last[stream] = *tick;
            self.changes.touch(stream);
            self.news += self.scanners.len() as u64;
        }
        self.news += self.index[stream].len() as u64;
        let queue_cap = self.config.queue_cap;
        // Per-tick subscribers only: sessions that scan read `changes` later.
        for r in &self.index[stream] {
            let Some(s) = self.sessions[r.session as usize].as_mut() else { continue };
            if s.offer(r.entry, tick, queue_cap) && !s.on_dirty_list {
                s.on_dirty_list = true;
                self.dirty.push(r.session);
            }
        }
        self.index[stream].len()
    }

    /// After a ring overrun: brings every subscription up to the latest-value
    /// table. Latest mode simply gets the newest value; all mode reports the
    /// gap as `overflow`.
    pub fn resync(&mut self) {
        self.sync_symbols();
        // Every stream's newest value, read once; sessions that scan find
        // the changed ones in the change log.
        for stream in 0..self.last.len() {
            let t = self.last[stream];
            let Some(latest) = self.market.latest(t.sym, t.channel()) else { continue };
            if latest.seq > t.seq {
                self.last[stream] = latest;
                self.changes.touch(stream);
            }
        }
        let queue_cap = self.config.queue_cap;
        for slot in 0..self.sessions.len() as u32 {
            let Some(s) = self.sessions[slot as usize].as_mut() else { continue };
            let mut touched = false;
            for i in 0..s.entries.len() as u32 {
                let e = &s.entries[i as usize];
                if !e.live || !e.in_index {
                    continue;
                }
                let Some(&latest) = self.last.get(stream_index(e.sym, e.ch)) else { continue };
                if latest.seq <= e.accepted_seq {
                    continue;
                }
                touched = true;
                match e.mode {
                    Mode::Latest => {
                        s.offer(i, &latest, queue_cap);
                    }
                    Mode::All => s.lose_through(i, latest.seq),
                }
            }
            if touched && !s.on_dirty_list {
                s.on_dirty_list = true;
                self.dirty.push(slot);
            }
        }
    }

    /// End of batch: encodes one frame for every dirty session whose socket
    /// is idle and hands it to the session's write side, which writes it or
    /// wakes the socket task ([`Outbound::push_data`]). Busy sessions keep
    /// their pending data (still conflating) until their socket task asks
    /// for more.
    pub fn end_of_batch(&mut self) {
        self.news = 0;
        let generation = self.changes.generation();
        if generation > self.flushed_changes {
            // Scanning sessions have news (whether it is news *for them* the
            // frame build finds out).
            self.flushed_changes = generation;
            let Shard { sessions, scanners, dirty, .. } = self;
            for &slot in scanners.iter() {
                let Some(s) = sessions.get_mut(slot as usize).and_then(Option::as_mut) else {
                    continue;
                };
                if !s.on_dirty_list {
                    s.on_dirty_list = true;
                    dirty.push(slot);
                }
            }
        }
        if self.dirty.is_empty() {
            return;
        }
        self.cache.begin();
        let now = Instant::now();
        let dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            let Some(s) = self.session(slot) else { continue };
            s.on_dirty_list = false;
            if s.out.ready_for_data() {
                self.build_data_frame(slot, now);
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    /// Encodes everything sendable of a session into one frame and hands
    /// it to the session's write side. Returns whether a frame was made.
    fn build_data_frame(&mut self, slot: u32, now: Instant) -> bool {
        let Shard { sessions, cache, names, metrics, throttle, last, changes, .. } = self;
        let Some(s) = sessions.get_mut(slot as usize).and_then(Option::as_mut) else {
            return false;
        };
        if !s.has_data(changes.generation()) {
            return false;
        }
        let format = s.format;
        let mut pending = s.queue.len() + s.dirty.len();
        if s.scanning {
            // At most one per tick since the cursor (usually far fewer).
            pending += (changes.generation() - s.scan_cursor).min(512) as usize;
        }
        let mut buf: Vec<u8> = Vec::with_capacity((64 + 160 * pending).min(MAX_FRAME_BYTES + 512));
        begin_data_frame(&mut buf, format, s.cseq + 1);
        let mut msgs = 0u64;
        let mut updates = 0u64;
        let mut conflated = 0u64;
        let mut overflows = 0u64;
        let mut lost_total = 0u64;
        // Mode all: queued updates, in order, up to the frame budget. The
        // queue holds only sendable updates and the entry's `sent_seq` is
        // derived when needed (see `Subscriber::queue`), so the entries are
        // not touched here. Debug builds keep `sent_seq` as they go and
        // check both rules (and `Subscriber::settle_sent` checks the
        // derivation against it).
        while buf.len() < MAX_FRAME_BYTES {
            let Some(q) = s.queue.pop_front() else { break };
            #[cfg(debug_assertions)]
            {
                let e = &mut s.entries[q.entry as usize];
                assert!(e.live && q.tick.seq == e.sent_seq + 1, "a stale update in the queue");
                e.sent_seq = q.tick.seq;
            }
            s.cseq += 1;
            let name = &names[q.tick.sym.index()];
            cache.update(&mut buf, &q.tick, name, format, s.cseq, 1, msgs == 0);
            msgs += 1;
            updates += 1;
        }
        // Mode all: losses, after every update queued before them.
        let lost_entries =
            if s.queue.is_empty() { std::mem::take(&mut s.lost_entries) } else { Vec::new() };
        for idx in lost_entries {
            let e = &mut s.entries[idx as usize];
            if !e.live || e.lost == 0 {
                continue;
            }
            s.cseq += 1;
            if format.binary {
                let (from, to) = (e.lost_from(), e.accepted_seq);
                binary::write_overflow(&mut buf, e.ch, e.sym, from, to, e.lost, format.stamps);
            } else {
                if msgs > 0 {
                    buf.push(b',');
                }
                Obj::new(&mut buf, "overflow")
                    .str("ch", e.ch.name())
                    .str("sym", &names[e.sym.index()])
                    .u64("lost", e.lost)
                    .u64("from_seq", e.lost_from())
                    .u64("to_seq", e.accepted_seq)
                    .u64("cseq", s.cseq)
                    .finish();
            }
            lost_total += e.lost;
            e.sent_seq = e.accepted_seq;
            e.lost = 0;
            msgs += 1;
            overflows += 1;
        }
        // Mode latest: the newest value of every dirty entry whose max_hz allows.
        let mut earliest: Option<Instant> = None;
        let mut dirty = std::mem::take(&mut s.dirty);
        dirty.retain(|&idx| {
            let e = &mut s.entries[idx as usize];
            if !e.live || !e.dirty {
                return false;
            }
            if buf.len() >= MAX_FRAME_BYTES {
                return true; // the next frame takes it
            }
            let tick = &last[stream_index(e.sym, e.ch)];
            let name = &names[tick.sym.index()];
            match send_latest(e, tick, now, &mut s.cseq, cache, &mut buf, name, format, msgs == 0) {
                LatestStep::Stale => {
                    e.dirty = false;
                    false
                }
                LatestStep::Held(at) => {
                    earliest = Some(earliest.map_or(at, |x: Instant| x.min(at)));
                    true
                }
                LatestStep::Sent(cf) => {
                    conflated += cf - 1;
                    msgs += 1;
                    updates += 1;
                    false
                }
            }
        });
        s.dirty = dirty;
        // Mode latest on `["*"]`: every stream changed since the cursor,
        // each once however many ticks it had. Past the frame budget they
        // wait on the dirty list for the next frame.
        let cursor = std::mem::replace(&mut s.scan_cursor, changes.generation());
        let changed = if s.scanning { Some(changes.changed_since(cursor)) } else { None };
        for stream in changed.into_iter().flatten() {
            let tick = &last[stream as usize];
            if !s.scans(tick.channel()) {
                continue;
            }
            let Some(idx) = s.entry_of(stream) else { continue };
            let e = &mut s.entries[idx as usize];
            if !e.live || e.in_index {
                continue; // offered tick by tick (mode all)
            }
            if buf.len() >= MAX_FRAME_BYTES {
                if tick.seq > e.sent_seq && !e.dirty {
                    e.dirty = true;
                    s.dirty.push(idx);
                }
                continue;
            }
            let name = &names[tick.sym.index()];
            match send_latest(e, tick, now, &mut s.cseq, cache, &mut buf, name, format, msgs == 0) {
                LatestStep::Stale => {}
                LatestStep::Held(at) => {
                    // The dirty list keeps it until `max_hz` lets it go.
                    if !e.dirty {
                        e.dirty = true;
                        s.dirty.push(idx);
                    }
                    earliest = Some(earliest.map_or(at, |x: Instant| x.min(at)));
                }
                LatestStep::Sent(cf) => {
                    conflated += cf - 1;
                    msgs += 1;
                    updates += 1;
                }
            }
        }
        if let Some(at) = earliest
            && s.throttle_at.is_none_or(|t| t > at)
        {
            s.throttle_at = Some(at);
            throttle.push(Reverse((at, slot, s.uid)));
        }
        if msgs == 0 {
            return false;
        }
        finish_data_frame(&mut buf, format);
        let m = &metrics.counters;
        ShardCounters::add(&m.messages_out, msgs);
        ShardCounters::add(&m.updates_out, updates);
        ShardCounters::add(&m.conflated, conflated);
        ShardCounters::add(&m.overflows, overflows);
        ShardCounters::add(&m.overflow_lost, lost_total);
        // A frame that reached the budget leaves more behind: the socket
        // task builds the next one as soon as the socket takes this one.
        let more = buf.len() >= MAX_FRAME_BYTES;
        let len = buf.len() as u64;
        match s.out.push_data(s.data_op(), buf, more, now) {
            Pushed::Queued => {}
            pushed => {
                ShardCounters::add(&m.frames_out, 1);
                ShardCounters::add(&m.frames_direct, 1);
                ShardCounters::add(&m.bytes_out, len);
                if pushed == Pushed::Partial {
                    ShardCounters::add(&m.frames_direct_partial, 1);
                }
            }
        }
        true
    }

    /// Wakes sessions whose `max_hz` delay has passed. Returns the next
    /// deadline, if any.
    pub fn run_throttle(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse((at, slot, uid))) = self.throttle.peek().copied() {
            if at > now {
                return Some(at);
            }
            self.throttle.pop();
            let Some(s) = self.session(slot) else { continue };
            if s.uid != uid || s.throttle_at != Some(at) {
                continue;
            }
            s.throttle_at = None;
            if !s.on_dirty_list {
                s.on_dirty_list = true;
                self.dirty.push(slot);
            }
        }
        None
    }

    // ----- socket task interface ---------------------------------------------

    /// Called by a socket task that is ready to write: builds a data frame
    /// first if the session has data and its socket is idle, then takes
    /// what its write side holds ([`Outbound::take`]). The socket task
    /// passes the same (emptied) vector every time, so that a frame costs
    /// no allocation of its own here.
    pub fn take_outgoing(&mut self, slot: u32, frames: &mut Vec<Frame>, now: Instant) -> Next {
        if self.pending_data(slot) && self.session(slot).is_some_and(|s| s.out.ready_for_data()) {
            self.cache.begin_if_stale();
            self.build_data_frame(slot, now);
        }
        match self.session(slot) {
            Some(s) => s.out.take(frames, now),
            None => Next::Close(CloseRequest::NETWORK),
        }
    }

    /// Called by a socket task after a write finished.
    pub fn written(&mut self, slot: u32, now: Instant) {
        let Some(s) = self.sessions.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let (frames, bytes) = s.out.written(now);
        let m = &self.metrics.counters;
        ShardCounters::add(&m.frames_out, frames as u64);
        ShardCounters::add(&m.bytes_out, bytes as u64);
    }

    /// Queues a heartbeat (the socket task found nothing sent for `hb`).
    pub fn heartbeat(&mut self, slot: u32) {
        if let Some(s) = self.session(slot) {
            let mut buf = Vec::with_capacity(96);
            let cseq = s.next_cseq();
            let t = s.format.time_unit.from_ns(now_ns());
            if s.format.binary {
                binary::begin_frame(&mut buf, s.format.stamps, cseq);
                binary::write_heartbeat(&mut buf, t, s.format.stamps);
                binary::finish_frame(&mut buf);
            } else {
                buf.push(b'[');
                Obj::new(&mut buf, "heartbeat").u64("cseq", cseq).u64("t", t).finish();
                buf.push(b']');
            }
            let op = s.data_op();
            s.out.push(op, buf);
            ShardCounters::add(&self.metrics.counters.messages_out, 1);
        }
    }

    /// Queues `shutdown` (reconnect after 1000 to 1999 ms, jittered by the
    /// session's server-wide id so sessions on different shards spread too)
    /// and a close with 1012 (server restarting).
    pub fn shutdown_session(&mut self, slot: u32) {
        let Some(uid) = self.session(slot).map(|s| s.uid) else { return };
        // A multiplicative hash spreads consecutive ids over the window.
        let jitter = uid.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let after = SHUTDOWN_RECONNECT_AFTER_MS + jitter % SHUTDOWN_JITTER_MS;
        self.end_session(slot, after, CloseRequest::SHUTDOWN);
    }

    /// Queues `shutdown` and then `close`.
    fn end_session(&mut self, slot: u32, reconnect_after_ms: u64, close: CloseRequest) {
        if let Some(s) = self.session(slot) {
            if s.out.close_request().is_some() {
                return;
            }
            let mut buf = Vec::with_capacity(64);
            buf.push(b'[');
            let cseq = s.next_cseq();
            Obj::new(&mut buf, "shutdown")
                .u64("cseq", cseq)
                .u64("reconnect_after_ms", reconnect_after_ms)
                .finish();
            buf.push(b']');
            s.send(buf);
            s.out.request_close(close, Instant::now());
            ShardCounters::add(&self.metrics.counters.messages_out, 1);
        }
    }

    /// The write side of the session in `slot`, if one is open there.
    pub fn outbound(&mut self, slot: u32) -> Option<&mut Outbound> {
        self.session(slot).map(|s| &mut s.out)
    }

    /// Time for a ping (see [`Outbound::ping`]): false when the peer is
    /// gone (counted as a dead peer).
    pub fn ping(&mut self, slot: u32, now: Instant, limit: Duration) -> bool {
        let Some(s) = self.session(slot) else { return false };
        let alive = s.out.ping(now, limit);
        if !alive {
            ShardCounters::add(&self.metrics.counters.dead_peers, 1);
        }
        alive
    }

    /// When the session's socket last took a write (the socket task's or
    /// the shard's own).
    pub fn last_write(&self, slot: u32) -> Option<Instant> {
        self.sessions.get(slot as usize).and_then(Option::as_ref).and_then(|s| s.out.last_write())
    }

    /// The server-wide id of the session in `slot`, if one is open there.
    pub fn session_uid(&self, slot: u32) -> Option<u64> {
        self.sessions.get(slot as usize).and_then(Option::as_ref).map(|s| s.uid)
    }

    /// When the session's socket is reset if its close has not finished
    /// (`None`: no close requested, or no session).
    pub fn close_deadline(&self, slot: u32) -> Option<Instant> {
        self.sessions
            .get(slot as usize)
            .and_then(Option::as_ref)
            .and_then(|s| s.out.close_deadline())
    }

    /// Asks for the session to end (the first request wins).
    pub fn request_close(&mut self, slot: u32, close: CloseRequest) {
        if let Some(s) = self.session(slot) {
            s.out.request_close(close, Instant::now());
        }
    }

    // ----- periodic duties ---------------------------------------------------

    /// The feed state now. The pump looks at it *before* reading the ring
    /// and applies it with [`Shard::check_feed_state`] once the ring is
    /// drained, so every tick published before a state change (the last
    /// ticks of a replay before `replay_done`) reaches sessions before the
    /// `status` that announces it.
    pub fn feed_state(&self) -> (FeedState, u64) {
        self.market.state()
    }

    /// Sends `status` to every session when the feed state `seen` is new,
    /// after whatever data the session still has pending (so the `status`
    /// never overtakes an update published before the change).
    pub fn check_feed_state(&mut self, seen: (FeedState, u64)) {
        let (state, gen_) = seen;
        if gen_ == self.state_gen {
            return;
        }
        self.state_gen = gen_;
        let now = Instant::now();
        let mut sent = 0;
        for slot in 0..self.sessions.len() as u32 {
            let pending = self.pending_data(slot);
            if pending {
                // As many frames as the backlog needs (each sends at least one
                // message, so this ends); state changes are rare.
                self.cache.begin_if_stale();
                while self.build_data_frame(slot, now) {}
            }
            let Some(s) = self.session(slot) else { continue };
            push_status(s, state);
            sent += 1;
        }
        ShardCounters::add(&self.metrics.counters.messages_out, sent);
    }

    /// Applies the slow-client policy: tell a latest-mode session whose
    /// socket has not drained for `slow_warn` that it is being conflated
    /// (mode all learns what it lost from `overflow`), close one stuck for
    /// `lag_limit` (4008).
    pub fn check_slow(&mut self, now: Instant) {
        let (warn, limit, max_bytes) =
            (self.config.slow_warn, self.config.lag_limit, self.config.max_queued_bytes);
        let mut disconnects = 0;
        for s in self.sessions.iter_mut().flatten() {
            let Some(lag) = s.out.lag(now) else { continue };
            if s.out.close_request().is_some() {
                continue;
            }
            if lag >= limit || s.out.queued_bytes() >= max_bytes {
                let who = Who { session: Some(s.uid), peer: s.peer, principal: s.auth.principal() };
                let lag_ms = lag.as_millis() as u64;
                self.access.audit.emit(who, Event::SlowDisconnect { lag_ms });
                push_slow(s, lag, "disconnecting");
                s.out.request_close(CloseRequest::SLOW_CLIENT, now);
                disconnects += 1;
            } else if lag >= warn && s.out.warn_slow() {
                if !s.entries.iter().any(|e| e.live && e.mode == Mode::Latest) {
                    continue;
                }
                push_slow(s, lag, "conflating");
            }
        }
        ShardCounters::add(&self.metrics.counters.slow_disconnects, disconnects);
    }

    /// Merges the local latency histogram into the shared one.
    pub fn publish_metrics(&mut self) {
        self.cache.record_hits();
        let local = &mut self.cache.latency;
        if local.is_empty() {
            return;
        }
        if let Ok(mut shared) = self.metrics.latency.lock() {
            let _ = shared.add(&*local);
        }
        local.reset();
    }

    // ----- control requests --------------------------------------------------

    /// Counts an inbound message against the rate limit. Returns false when
    /// over the limit (the caller answers 429).
    pub fn admit_message(&mut self, slot: u32, now: Instant) -> bool {
        let limit = self.config.msgs_in_per_s;
        ShardCounters::add(&self.metrics.counters.messages_in, 1);
        let Some(s) = self.session(slot) else { return false };
        if now.duration_since(s.rate_window) >= Duration::from_secs(1) {
            s.rate_window = now;
            s.rate_count = 0;
        }
        s.rate_count += 1;
        // Sustained abuse: three times the limit within one window closes
        // the connection with 1008 (policy violation) after the 429s.
        if s.rate_count == limit.saturating_mul(3) {
            s.out.request_close(CloseRequest::RATE_LIMIT, now);
        }
        s.rate_count <= limit
    }

    /// Queues an `error` reply.
    pub fn send_error(
        &mut self,
        slot: u32,
        id: Option<u64>,
        code: u16,
        msg: &str,
        temporary: bool,
    ) {
        let Some(s) = self.session(slot) else { return };
        let mut buf = Vec::with_capacity(96);
        buf.push(b'[');
        let cseq = s.next_cseq();
        Obj::new(&mut buf, "error")
            .opt_u64("id", id)
            .u64("cseq", cseq)
            .u64("code", code.into())
            .str("msg", msg)
            .bool("temporary", temporary)
            .finish();
        buf.push(b']');
        s.send(buf);
        let m = &self.metrics.counters;
        ShardCounters::add(&m.errors_out, 1);
        ShardCounters::add(&m.messages_out, 1);
    }

    /// Applies a client request and queues its reply. Until a session that
    /// must authenticate has done so, every request but `auth` gets `error`
    /// 401 and is dropped.
    pub fn handle(&mut self, slot: u32, req: Request) {
        let pending =
            self.session(slot).is_some_and(|s| matches!(s.auth, SessionAuth::Pending { .. }));
        if pending && !matches!(req, Request::Auth { .. }) {
            self.send_error(slot, req.id(), 401, "not authenticated: send auth first", false);
            return;
        }
        match req {
            Request::Subscribe { id, symbols, channels, mode, max_hz, snapshot } => {
                self.subscribe(slot, id, &symbols, channels, mode, max_hz, snapshot);
                self.market.subscribed.store(true, std::sync::atomic::Ordering::Release);
            }
            Request::Unsubscribe { id, symbols, channels } => {
                self.unsubscribe(slot, id, &symbols, channels)
            }
            Request::Ping { id, ts } => {
                let Some(s) = self.session(slot) else { return };
                let mut buf = Vec::with_capacity(96);
                buf.push(b'[');
                let cseq = s.next_cseq();
                let mut o = Obj::new(&mut buf, "pong").opt_u64("id", id).u64("cseq", cseq);
                if let Some(ts) = &ts {
                    o = o.raw("ts", ts);
                }
                o.u64("t", s.format.time_unit.from_ns(now_ns())).finish();
                buf.push(b']');
                s.send(buf);
                ShardCounters::add(&self.metrics.counters.messages_out, 1);
            }
            Request::List { id, prefix } => {
                let mut list = self.market.symbols.list(&prefix);
                let Some(s) = self.session(slot) else { return };
                if let Some(e) = s.auth.entitlements() {
                    list.retain(|n| e.allows_symbol(n));
                }
                let mut buf = Vec::with_capacity(64 + list.len() * 8);
                buf.push(b'[');
                let cseq = s.next_cseq();
                Obj::new(&mut buf, "symbols")
                    .opt_u64("id", id)
                    .u64("cseq", cseq)
                    .with("symbols", |b| write_str_array(b, list.iter().map(|n| &**n)))
                    .finish();
                buf.push(b']');
                s.send(buf);
                ShardCounters::add(&self.metrics.counters.messages_out, 1);
            }
            Request::Auth { id, token } => self.auth_message(slot, id, token),
        }
    }

    /// An `auth` message: ignored while authentication is off, 400 once
    /// authenticated; otherwise the token is checked, and a bad one gets
    /// `error` 402 and close 4002.
    fn auth_message(&mut self, slot: u32, id: Option<u64>, token: Option<crate::auth::Token>) {
        let Some(s) = self.session(slot) else { return };
        match s.auth {
            SessionAuth::Off => {}
            SessionAuth::Ok(_) => self.send_error(slot, id, 400, "already authenticated", false),
            SessionAuth::Pending { .. } => {
                let result = match &token {
                    Some(t) => self.access.authenticate(&t.0),
                    None => Err("auth message without a token"),
                };
                let p = match result {
                    Ok(p) => p,
                    Err(reason) => {
                        self.access.auth_failed(self.who(slot), reason, "message");
                        self.send_error(slot, id, 402, "authentication failed", false);
                        self.request_close(slot, CloseRequest::AUTH_FAILED);
                        return;
                    }
                };
                let Some(s) = self.session(slot) else { return };
                s.auth = SessionAuth::Ok(p.clone());
                let mut buf = Vec::with_capacity(128);
                buf.push(b'[');
                let cseq = s.next_cseq();
                let e = &p.entitlements;
                Obj::new(&mut buf, "authenticated")
                    .opt_u64("id", id)
                    .u64("cseq", cseq)
                    .str("principal", &p.id)
                    .with("symbols", |b| {
                        write_str_array(b, e.symbol_patterns().iter().map(String::as_str))
                    })
                    .with("channels", |b| {
                        write_str_array(b, e.channels().iter().map(Channel::name))
                    })
                    .finish();
                buf.push(b']');
                s.send(buf);
                ShardCounters::add(&self.metrics.counters.messages_out, 1);
                self.access.audit.emit(self.who(slot), Event::Auth);
            }
        }
    }

    /// Authentication housekeeping (every 100 ms): closes sessions that did
    /// not authenticate before their deadline, and, after a key-file reload
    /// or when a token expires, sessions whose credentials no longer hold
    /// (`error` 401, then close 4001). Their data stops at once: a closing
    /// session is never handed another data frame.
    pub fn check_auth(&mut self, now: Instant) {
        if !self.access.required() {
            return;
        }
        let access = self.access.clone();
        let generation = access.generation();
        let reloaded = generation != self.auth_gen;
        self.auth_gen = generation;
        let now_s = now_ns() / 1_000_000_000;
        for slot in 0..self.sessions.len() as u32 {
            let Some(s) = self.session(slot) else { continue };
            if s.out.close_request().is_some() {
                continue;
            }
            let (msg, close) = match &s.auth {
                SessionAuth::Pending { deadline } if now >= *deadline => {
                    let (reason, via) = ("no auth before the deadline", "timeout");
                    access.audit.emit(self.who(slot), Event::AuthFailure { reason, via });
                    ("authentication timeout: send auth first", CloseRequest::AUTH_TIMEOUT)
                }
                SessionAuth::Ok(p) if reloaded || p.expires() => {
                    let Err(reason) = access.still_valid(p, now_s) else { continue };
                    access.audit.emit(self.who(slot), Event::Revoked { reason });
                    if reason == "token expired" {
                        ("credentials expired", CloseRequest::EXPIRED)
                    } else {
                        ("credentials revoked", CloseRequest::REVOKED)
                    }
                }
                _ => continue,
            };
            self.send_error(slot, None, 401, msg, false);
            self.request_close(slot, close);
        }
    }

    /// Adds or replaces the entry of (sym, ch). Returns its index and
    /// whether it is new.
    fn upsert_entry(
        &mut self,
        slot: u32,
        sym: SymbolId,
        ch: Channel,
        mode: Mode,
        max_hz: Option<f64>,
        origin: Origin,
    ) -> (u32, bool) {
        let explicit = origin == Origin::Named;
        let stream = stream_index(sym, ch);
        let s = self.sessions[slot as usize].as_mut().expect("live session");
        if let Some(idx) = s.entry_of(stream as u32) {
            // A scanned entry first takes what the change log holds for it.
            catch_up(s, idx, &self.last);
            let e = &mut s.entries[idx as usize];
            let old_mode = e.mode;
            e.mode = mode;
            e.set_max_hz(max_hz);
            if explicit && !e.explicit {
                e.explicit = true;
                add_explicit(s, sym);
            }
            if old_mode == Mode::All && mode == Mode::Latest {
                // Latest mode sends the newest value: what was queued of
                // the entry, and a loss not yet reported, are conflated
                // into it. `reply_subscribed` takes the queued updates out
                // (one pass for the whole request), so none follows it.
                let e = &mut s.entries[idx as usize];
                e.lost = 0;
                if e.accepted_seq > e.sent_seq && !e.dirty {
                    e.dirty = true;
                    s.dirty.push(idx);
                    if !s.on_dirty_list {
                        s.on_dirty_list = true;
                        self.dirty.push(slot);
                    }
                }
            }
            if old_mode == Mode::Latest && mode == Mode::All {
                // What latest mode had conflated but not sent is reported
                // as lost: mode all never jumps a seq silently.
                let (sent, accepted) =
                    (s.entries[idx as usize].sent_seq, s.entries[idx as usize].accepted_seq);
                s.entries[idx as usize].accepted_seq = sent;
                s.entries[idx as usize].dirty = false;
                s.dirty.retain(|&i| i != idx);
                s.lose_through(idx, accepted);
            }
            self.place_entry(slot, idx);
            return (idx, false);
        }
        // A subscription starts at the current source position: older
        // updates still in flight on the ring are not for it. A symbol this
        // shard has just met starts at 0: all its updates are still ahead of
        // the shard's ring cursor (or are recovered by a resync).
        let position = match origin {
            Origin::NewSymbol => 0,
            Origin::Named | Origin::Wildcard => self.market.latest(sym, ch).map_or(0, |t| t.seq),
        };
        let entry = Entry::new(sym, ch, mode, max_hz, explicit, position);
        let idx = match s.free.pop() {
            Some(i) => {
                s.entries[i as usize] = entry;
                i
            }
            None => {
                s.entries.push(entry);
                (s.entries.len() - 1) as u32
            }
        };
        if idx as usize != stream {
            s.by_stream.insert(stream as u32, idx);
        }
        if explicit {
            add_explicit(s, sym);
        }
        if stream >= self.index.len() {
            self.index.resize_with(stream + 1, Vec::new);
        }
        self.place_entry(slot, idx);
        ShardCounters::add(&self.metrics.counters.subscriptions, 1);
        (idx, true)
    }

    /// Puts a live entry in the per-tick index of its stream or takes it
    /// out, as [`Subscriber::per_tick`] says. An entry leaving the scan first
    /// takes what the change log holds for it.
    fn place_entry(&mut self, slot: u32, idx: u32) {
        let Shard { sessions, index, last, .. } = self;
        let Some(s) = sessions.get_mut(slot as usize).and_then(Option::as_mut) else { return };
        let e = &s.entries[idx as usize];
        let want = s.per_tick(e.mode, e.ch);
        if !e.live || want == e.in_index {
            return;
        }
        let stream = stream_index(e.sym, e.ch);
        let r = SubRef { session: slot, entry: idx };
        if want {
            catch_up(s, idx, last);
            if stream >= index.len() {
                index.resize_with(stream + 1, Vec::new);
            }
            index[stream].push(r);
        } else {
            remove_ref(index, stream, r);
        }
        s.entries[idx as usize].in_index = want;
    }

    /// After a session's `["*"]` options changed: every entry where it
    /// belongs, and the scan of the change log started (from its end: the
    /// entries start at the current position) or stopped.
    fn place_entries(&mut self, slot: u32) {
        let Some(s) = self.session(slot) else { return };
        let n = s.entries.len() as u32;
        for idx in 0..n {
            self.place_entry(slot, idx);
        }
        let generation = self.changes.generation();
        let Some(s) = self.session(slot) else { return };
        let scanning = Channel::ALL.into_iter().any(|ch| s.scans(ch));
        let was = std::mem::replace(&mut s.scanning, scanning);
        if scanning && !was {
            s.scan_cursor = generation;
            self.scanners.push(slot);
        } else if was && !scanning {
            self.scanners.retain(|&w| w != slot);
        }
    }

    fn remove_entry(&mut self, slot: u32, idx: u32) {
        let s = self.sessions[slot as usize].as_mut().expect("live session");
        let e = &mut s.entries[idx as usize];
        if !e.live {
            return;
        }
        e.live = false;
        e.dirty = false;
        let (sym, ch, explicit, in_index) = (e.sym, e.ch, e.explicit, e.in_index);
        e.in_index = false;
        let stream = stream_index(sym, ch);
        s.by_stream.remove(&(stream as u32));
        s.free.push(idx);
        s.purge_entry(idx);
        if explicit && let Some(n) = s.explicit_by_sym.get_mut(&sym.0) {
            *n -= 1;
            if *n == 0 {
                s.explicit_by_sym.remove(&sym.0);
                s.explicit_symbols -= 1;
            }
        }
        if in_index {
            remove_ref(&mut self.index, stream, SubRef { session: slot, entry: idx });
        }
        ShardCounters::sub(&self.metrics.counters.subscriptions, 1);
    }

    #[allow(clippy::too_many_arguments)]
    fn subscribe(
        &mut self,
        slot: u32,
        id: Option<u64>,
        symbols: &[String],
        channels: Channels,
        mode: Mode,
        max_hz: Option<f64>,
        snapshot: bool,
    ) {
        self.sync_symbols();
        // Every entry's `sent_seq` is read or moved below.
        if let Some(s) = self.session(slot) {
            s.settle_sent();
        }
        let mut accepted: Vec<(u32, bool)> = Vec::new();
        let mut rejected: Vec<(String, u16, &'static str)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // The session's entitlements (`None`: authentication is off).
        let entitled = self.session(slot).and_then(|s| s.auth.entitlements().cloned());
        let channels = match &entitled {
            Some(e) => channels.intersection(e.channels()),
            None => channels,
        };
        if channels.is_empty() {
            for name in symbols {
                if !rejected.iter().any(|r| r.0 == *name) {
                    let name = name.chars().take(32).collect();
                    rejected.push((name, 403, "not entitled to these channels"));
                }
            }
            self.reply_subscribed(slot, id, &accepted, &rejected, snapshot);
            self.audit_subscribe(slot, symbols, channels, 0, &rejected);
            return;
        }
        let mut wildcard = symbols.iter().any(|s| s == "*");
        if wildcard && !self.config.allow_wildcard {
            rejected.push((
                "*".into(),
                403,
                "subscriptions to [\"*\"] are not allowed on this server",
            ));
            wildcard = false;
        }
        if wildcard {
            let Some(s) = self.session(slot) else { return };
            for ch in channels.iter() {
                s.wildcard[ch as usize] = Some(WildOpts { mode, max_hz });
            }
            if !self.wild_sessions.contains(&slot) {
                self.wild_sessions.push(slot);
            }
            for id in 0..self.names.len() as u32 {
                if entitled.as_ref().is_some_and(|e| !e.allows_symbol(&self.names[id as usize])) {
                    continue;
                }
                for ch in channels.iter() {
                    accepted.push(self.upsert_entry(
                        slot,
                        SymbolId(id),
                        ch,
                        mode,
                        max_hz,
                        Origin::Wildcard,
                    ));
                }
                seen.insert(id);
            }
        }
        for name in symbols.iter().filter(|s| *s != "*") {
            // Entitlement first: a name one may not have gets 403 whether or
            // not it exists, so refusals say nothing about other symbols.
            if entitled.as_ref().is_some_and(|e| !e.allows_symbol(name)) {
                if !rejected.iter().any(|r| r.0 == *name) {
                    rejected.push((name.chars().take(32).collect(), 403, "not entitled"));
                }
                continue;
            }
            let sym = if valid_symbol(name) { self.market.symbols.get(name) } else { None };
            let Some(sym) = sym else {
                if !rejected.iter().any(|r| r.0 == *name) {
                    rejected.push((name.chars().take(32).collect(), 404, "unknown symbol"));
                }
                continue;
            };
            if sym.index() >= self.names.len() {
                self.sync_symbols();
            }
            let s = self.sessions[slot as usize].as_ref().expect("live session");
            if !s.explicit_by_sym.contains_key(&sym.0)
                && s.explicit_symbols >= self.config.max_symbols
            {
                // Past the limit a name is refused, unless this request's
                // `"*"` already covers it.
                if !wildcard {
                    rejected.push((name.clone(), 405, "symbol limit exceeded"));
                }
                continue;
            }
            if !seen.insert(sym.0) && !wildcard {
                continue; // a repeated name
            }
            for ch in channels.iter() {
                let r = self.upsert_entry(slot, sym, ch, mode, max_hz, Origin::Named);
                if !accepted.contains(&r) && !accepted.iter().any(|a| a.0 == r.0) {
                    accepted.push(r);
                }
            }
        }
        if wildcard {
            self.place_entries(slot);
        }
        self.reply_subscribed(slot, id, &accepted, &rejected, snapshot);
        self.audit_subscribe(slot, symbols, channels, accepted.len(), &rejected);
    }

    /// Audit lines for a `subscribe`: what was asked and applied, and the
    /// names refused with 403.
    fn audit_subscribe(
        &self,
        slot: u32,
        symbols: &[String],
        channels: Channels,
        accepted: usize,
        rejected: &[(String, u16, &'static str)],
    ) {
        let audit = &self.access.audit;
        if !audit.enabled() {
            return;
        }
        let channels = channels.iter().map(Channel::name).collect();
        audit.emit(self.who(slot), Event::Subscribe { symbols, channels, accepted });
        let denied: Vec<&str> =
            rejected.iter().filter(|r| r.1 == 403).map(|r| r.0.as_str()).collect();
        if !denied.is_empty() {
            audit.emit(self.who(slot), Event::SubscribeDenied { symbols: denied });
        }
    }

    fn reply_subscribed(
        &mut self,
        slot: u32,
        id: Option<u64>,
        accepted: &[(u32, bool)],
        rejected: &[(String, u16, &'static str)],
        snapshot: bool,
    ) {
        let Shard { sessions, names, market, metrics, .. } = self;
        let Some(s) = sessions.get_mut(slot as usize).and_then(Option::as_mut) else { return };
        // Snapshots come from one read of the table per entry.
        let mut snaps: Vec<Tick> = Vec::new();
        let now = Instant::now();
        let mut buf = Vec::with_capacity(128 + accepted.len() * 72);
        buf.push(b'[');
        let cseq = s.next_cseq();
        let binary = s.format.binary;
        let entries = &mut s.entries;
        Obj::new(&mut buf, "subscribed")
            .opt_u64("id", id)
            .u64("cseq", cseq)
            .with("subs", |b| {
                b.push(b'[');
                for (n, &(idx, _new)) in accepted.iter().enumerate() {
                    let e = &mut entries[idx as usize];
                    if snapshot
                        && let Some(t) = market.latest(e.sym, e.ch)
                        && t.seq > 0
                    {
                        snaps.push(t);
                        e.sent_seq = t.seq;
                        e.accepted_seq = e.accepted_seq.max(t.seq);
                        e.lost = 0;
                        // A snapshot is a message of the stream for max_hz too.
                        e.next_allowed = e.min_interval().map(|d| now + d);
                    }
                    // The position the stream's next `cf` counts from: the
                    // snapshot's, or where a new subscription started.
                    let seq = e.sent_seq;
                    if n > 0 {
                        b.push(b',');
                    }
                    Obj::object(b)
                        .str("ch", e.ch.name())
                        .str("sym", &names[e.sym.index()])
                        .opt_u64("id", binary.then_some(u64::from(e.sym.0)))
                        .u64("seq", seq)
                        .str("mode", e.mode.name())
                        .with("max_hz", |b| match e.max_hz() {
                            Some(hz) => json::write_f64(b, hz),
                            None => b.extend_from_slice(b"null"),
                        })
                        .finish();
                }
                b.push(b']');
            })
            .with("rejected", |b| {
                b.push(b'[');
                for (n, (sym, code, msg)) in rejected.iter().enumerate() {
                    if n > 0 {
                        b.push(b',');
                    }
                    b.extend_from_slice(b"{\"sym\":");
                    json::write_str(b, sym);
                    b.extend_from_slice(b",\"code\":");
                    json::write_u64(b, u64::from(*code));
                    b.extend_from_slice(b",\"msg\":");
                    json::write_str(b, msg);
                    b.push(b'}');
                }
                b.push(b']');
            })
            .finish();
        buf.push(b']');
        s.send(buf);
        // Entries that got a snapshot or went to latest mode lose any stale
        // loss report; the queue loses what a snapshot covers and what a
        // switch to latest mode conflates (see `Subscriber::queue`).
        s.lost_entries.retain(|&i| s.entries[i as usize].lost > 0);
        if !s.queue.is_empty() {
            let entries = &s.entries;
            s.queue.retain(|q| {
                let e = &entries[q.entry as usize];
                e.mode == Mode::All && q.tick.seq > e.sent_seq
            });
        }
        let mut msgs = 1u64;
        let to_ns = now_ns();
        let format = s.format;
        for chunk in snaps.chunks(SNAPSHOTS_PER_FRAME) {
            let mut buf = Vec::with_capacity(32 + chunk.len() * 160);
            begin_data_frame(&mut buf, format, s.cseq + 1);
            for (n, t) in chunk.iter().enumerate() {
                let cseq = s.next_cseq();
                if format.binary {
                    binary::write_record(&mut buf, t, format, to_ns);
                    binary::set_snapshot(&mut buf, binary::record_len(format.stamps));
                } else {
                    if n > 0 {
                        buf.push(b',');
                    }
                    json::write_snapshot_head(&mut buf, t, cseq);
                    json::write_tail(&mut buf, t, &names[t.sym.index()], format, to_ns);
                }
                msgs += 1;
            }
            finish_data_frame(&mut buf, format);
            let op = s.data_op();
            s.out.push(op, buf);
        }
        ShardCounters::add(&metrics.counters.messages_out, msgs);
    }

    fn unsubscribe(&mut self, slot: u32, id: Option<u64>, symbols: &[String], channels: Channels) {
        let Some(s) = self.session(slot) else { return };
        let mut removed: Vec<String> = Vec::new();
        let mut removed_channels = Channels::EMPTY;
        let mut to_remove: Vec<u32> = Vec::new();
        if symbols.iter().any(|n| n == "*") {
            for ch in channels.iter() {
                if s.wildcard[ch as usize].take().is_some() {
                    removed_channels = removed_channels.with(ch);
                }
            }
            for (i, e) in s.entries.iter().enumerate() {
                if e.live && channels.contains(e.ch) {
                    to_remove.push(i as u32);
                    removed_channels = removed_channels.with(e.ch);
                }
            }
            if !removed_channels.is_empty() {
                removed.push("*".into());
            }
            if s.wildcard.iter().all(Option::is_none) {
                self.wild_sessions.retain(|&w| w != slot);
            }
        } else {
            for name in symbols {
                let Some(sym) = self.market.symbols.get(name) else { continue };
                let s = self.sessions[slot as usize].as_ref().expect("live session");
                let mut any = false;
                for ch in channels.iter() {
                    if let Some(idx) = s.entry_of(stream_index(sym, ch) as u32) {
                        to_remove.push(idx);
                        removed_channels = removed_channels.with(ch);
                        any = true;
                    }
                }
                if any && !removed.contains(name) {
                    removed.push(name.clone());
                }
            }
        }
        for idx in to_remove {
            self.remove_entry(slot, idx);
        }
        if !removed_channels.is_empty() && removed.iter().any(|n| n == "*") {
            self.place_entries(slot);
        }
        let Some(s) = self.session(slot) else { return };
        let mut buf = Vec::with_capacity(96 + removed.len() * 8);
        buf.push(b'[');
        let cseq = s.next_cseq();
        Obj::new(&mut buf, "unsubscribed")
            .opt_u64("id", id)
            .u64("cseq", cseq)
            .with("symbols", |b| write_str_array(b, removed.iter().map(String::as_str)))
            .with("channels", |b| write_str_array(b, removed_channels.iter().map(Channel::name)))
            .finish();
        buf.push(b']');
        s.send(buf);
        ShardCounters::add(&self.metrics.counters.messages_out, 1);
    }
}

/// Brings a latest-mode entry that the change log covers (not in the
/// per-tick index) up to the shard's newest value of its stream, as if it
/// had been offered every tick: before it leaves the scan or changes mode.
fn catch_up(s: &mut Subscriber, idx: u32, last: &[Tick]) {
    let Some(e) = s.entries.get(idx as usize) else { return };
    if !e.live || e.in_index || e.mode != Mode::Latest {
        return;
    }
    if let Some(t) = last.get(stream_index(e.sym, e.ch))
        && t.seq > e.accepted_seq
    {
        s.offer(idx, t, 0);
    }
}

fn add_explicit(s: &mut Subscriber, sym: SymbolId) {
    let n = s.explicit_by_sym.entry(sym.0).or_insert(0);
    if *n == 0 {
        s.explicit_symbols += 1;
    }
    *n += 1;
}

fn remove_ref(index: &mut [Vec<SubRef>], stream: usize, r: SubRef) {
    if let Some(list) = index.get_mut(stream)
        && let Some(pos) = list.iter().position(|x| *x == r)
    {
        list.swap_remove(pos);
    }
}

/// What became of a latest-mode entry offered its stream's newest value.
enum LatestStep {
    /// Nothing newer than what was sent.
    Stale,
    /// `max_hz` holds it back until then.
    Held(Instant),
    /// Encoded; the message stands for this many source updates (`cf`).
    Sent(u64),
}

/// Appends `tick`, the newest value of a latest-mode entry's stream, to a
/// data frame with the next `cseq`, unless the entry already sent it or
/// `max_hz` holds it back.
///
/// Hot path: a few compares, then the cached encode.
#[allow(clippy::too_many_arguments)]
#[inline]
fn send_latest(
    e: &mut Entry,
    tick: &Tick,
    now: Instant,
    cseq: &mut u64,
    cache: &mut EncodeCache,
    buf: &mut Vec<u8>,
    name: &str,
    format: Format,
    first: bool,
) -> LatestStep {
    if tick.seq <= e.sent_seq {
        return LatestStep::Stale;
    }
    if let Some(at) = e.next_allowed
        && at > now
    {
        return LatestStep::Held(at);
    }
    let cf = tick.seq - e.sent_seq;
    e.sent_seq = tick.seq;
    e.dirty = false;
    e.next_allowed = e.min_interval().map(|d| now + d);
    *cseq += 1;
    cache.update(buf, tick, name, format, *cseq, cf, first);
    LatestStep::Sent(cf)
}

/// Starts a data frame whose first message has `first_cseq`: a JSON array,
/// or a binary header for `tickwire.v1.bin` sessions.
fn begin_data_frame(buf: &mut Vec<u8>, format: Format, first_cseq: u64) {
    if format.binary {
        binary::begin_frame(buf, format.stamps, first_cseq);
    } else {
        buf.push(b'[');
    }
}

/// Closes a data frame started with [`begin_data_frame`].
fn finish_data_frame(buf: &mut Vec<u8>, format: Format) {
    if format.binary {
        binary::finish_frame(buf);
    } else {
        buf.push(b']');
    }
}

fn push_slow(s: &mut Subscriber, lag: Duration, action: &str) {
    let mut buf = Vec::with_capacity(96);
    buf.push(b'[');
    let cseq = s.next_cseq();
    Obj::new(&mut buf, "slow")
        .u64("cseq", cseq)
        .u64("lag_ms", lag.as_millis() as u64)
        .u64("queued_bytes", s.out.queued_bytes() as u64)
        .str("action", action)
        .finish();
    buf.push(b']');
    s.send(buf);
}

fn push_status(s: &mut Subscriber, state: FeedState) {
    let mut buf = Vec::with_capacity(64);
    buf.push(b'[');
    let cseq = s.next_cseq();
    Obj::new(&mut buf, "status")
        .u64("cseq", cseq)
        .str("feed", state.name())
        .u64("t", s.format.time_unit.from_ns(now_ns()))
        .finish();
    buf.push(b']');
    s.send(buf);
}

fn write_str_array<'a>(b: &mut Vec<u8>, items: impl Iterator<Item = &'a str>) {
    b.push(b'[');
    for (n, item) in items.enumerate() {
        if n > 0 {
            b.push(b',');
        }
        json::write_str(b, item);
    }
    b.push(b']');
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::protocol::binary::{Record, decode_header, decode_record, is_binary_frame};
    use crate::tick::Channels;

    const SYMBOLS: u32 = 20;

    fn shard() -> Shard {
        shard_of(SYMBOLS)
    }

    fn shard_of(symbols: u32) -> Shard {
        Shard::for_tests(symbols, ShardConfig::default())
    }

    fn subscribe(shard: &mut Shard, slot: u32, symbols: &[&str], mode: Mode) {
        let symbols = symbols.iter().map(|s| (*s).to_string()).collect();
        subscribe_with(shard, slot, symbols, mode, false);
    }

    /// A `subscribe` on both channels, without `max_hz`.
    fn subscribe_with(
        shard: &mut Shard,
        slot: u32,
        symbols: Vec<String>,
        mode: Mode,
        snapshot: bool,
    ) {
        let channels = Channels::BOTH;
        let req = Request::Subscribe { id: None, symbols, channels, mode, max_hz: None, snapshot };
        shard.handle(slot, req);
    }

    /// A `tickwire.v1.bin` session with the replies to its requests taken.
    fn session(shard: &mut Shard, uid: u64, symbols: &[&str], mode: Mode) -> u32 {
        let (slot, _ctl) = shard.open_session(Format { binary: true, ..Format::default() }, uid);
        subscribe(shard, slot, symbols, mode);
        take(shard, slot);
        slot
    }

    /// What the socket task would write now, as decoded market-data records.
    fn take(shard: &mut Shard, slot: u32) -> Vec<Record> {
        let mut frames = Vec::new();
        let now = Instant::now();
        shard.take_outgoing(slot, &mut frames, now);
        shard.written(slot, now);
        let mut records = Vec::new();
        for f in frames.iter().map(|f| &f.payload[..]).filter(|f| is_binary_frame(f)) {
            let h = decode_header(f).expect("a valid frame");
            records.extend((0..h.count as usize).map(|i| decode_record(f, &h, i)));
        }
        records
    }

    /// A tick of stream `stream` (`sym * 2 + channel`) with `seq`.
    fn tick(stream: u32, seq: u64) -> Tick {
        let sym = SymbolId(stream / 2);
        let t = if stream.is_multiple_of(2) {
            Tick::quote(sym, seq, Price(100 + seq as i64), 1, Price(200), 1)
        } else {
            Tick::trade(sym, seq, Price(100 + seq as i64), 1)
        };
        Tick { seq, ..t }
    }

    /// (ch, sym) -> (seq, cf) of every quote or trade record, in order.
    fn by_stream(records: &[Record]) -> BTreeMap<(u8, u32), Vec<(u64, u64)>> {
        let mut m: BTreeMap<(u8, u32), Vec<(u64, u64)>> = BTreeMap::new();
        for r in records.iter().filter(|r| r.kind == 1 || r.kind == 2) {
            m.entry((r.ch, r.sym)).or_default().push((r.seq, r.cf));
        }
        m
    }

    #[test]
    fn scanning_session_gets_what_a_per_tick_session_gets() {
        let mut shard = shard();
        let names: Vec<String> = (0..SYMBOLS).map(|i| format!("S{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        // The same streams, latest mode: through the change log, and named
        // (offered tick by tick, the reference).
        let scan = session(&mut shard, 1, &["*"], Mode::Latest);
        let named = session(&mut shard, 2, &names, Mode::Latest);
        assert!(shard.session(scan).expect("open").scanning);
        assert!(!shard.session(named).expect("open").scanning);
        let mut seqs = vec![0u64; SYMBOLS as usize * 2];
        let mut sent = vec![[0u64; 2]; SYMBOLS as usize * 2];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for round in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Busy streams and quiet ones, as in a real feed.
            let stream = ((x % 64) * (x % 64) / 100) as u32 % (SYMBOLS * 2);
            seqs[stream as usize] += 1;
            shard.dispatch(&tick(stream, seqs[stream as usize]));
            if !(x >> 20).is_multiple_of(7) && round != 2999 {
                continue;
            }
            shard.end_of_batch();
            let (a, b) = (take(&mut shard, scan), take(&mut shard, named));
            // Same updates, each stream once per frame, order aside.
            let (a, b) = (by_stream(&a), by_stream(&b));
            assert_eq!(a, b, "round {round}");
            for ((ch, sym), msgs) in a {
                let st = (sym * 2 + u32::from(ch)) as usize;
                for (seq, cf) in msgs {
                    // `seq` rises by exactly `cf` from the last message.
                    assert_eq!(seq, sent[st][0] + cf, "stream {st}");
                    sent[st][0] = seq;
                }
            }
        }
        // Converged: every stream's last message is its newest value.
        for (st, seq) in seqs.iter().enumerate() {
            assert_eq!(sent[st][0], *seq, "stream {st}");
        }
        // cseq contiguous: both sessions sent the same number of messages.
        let (a, b) =
            (shard.session(scan).expect("open").cseq, shard.session(named).expect("open").cseq);
        assert_eq!(a, b);
    }

    #[test]
    fn a_scan_past_the_frame_budget_goes_on_in_the_next_frame() {
        let mut shard = shard_of(1000);
        let slot = session(&mut shard, 1, &["*"], Mode::Latest);
        // 2,000 changed streams: more than one frame's budget.
        for stream in 0..2000 {
            shard.dispatch(&tick(stream, 1));
        }
        // One frame per take: the socket task's write loop.
        let mut got = BTreeMap::new();
        let mut frames = 0;
        loop {
            let records = take(&mut shard, slot);
            if records.is_empty() {
                break;
            }
            frames += 1;
            for (k, v) in by_stream(&records) {
                assert!(got.insert(k, v).is_none(), "{k:?} twice");
            }
        }
        assert!(frames > 1, "one frame of {} bytes", MAX_FRAME_BYTES);
        // Every stream once, nothing conflated.
        assert_eq!(got.len(), 2000);
        assert!(got.values().all(|v| *v == vec![(1, 1)]));
    }

    #[test]
    fn a_named_all_mode_stream_inside_a_latest_wildcard_gets_every_tick() {
        let mut shard = shard();
        let slot = session(&mut shard, 1, &["*"], Mode::Latest);
        subscribe(&mut shard, slot, &["S1"], Mode::All);
        take(&mut shard, slot);
        for seq in 1..=3 {
            shard.dispatch(&tick(2, seq)); // S1 quotes: mode all
            shard.dispatch(&tick(4, seq)); // S2 quotes: latest via the wildcard
        }
        shard.end_of_batch();
        let got = by_stream(&take(&mut shard, slot));
        assert_eq!(got[&(0, 1)], vec![(1, 1), (2, 1), (3, 1)]);
        assert_eq!(got[&(0, 2)], vec![(3, 3)]);
    }

    #[test]
    fn leaving_latest_mode_reports_what_the_scan_had_not_sent() {
        let mut shard = shard();
        let slot = session(&mut shard, 1, &["*"], Mode::Latest);
        for seq in 1..=5 {
            shard.dispatch(&tick(0, seq));
        }
        // Five updates conflated and not sent, then mode all.
        subscribe(&mut shard, slot, &["*"], Mode::All);
        assert!(!shard.session(slot).expect("open").scanning);
        // Until that loss is reported, more updates join it (one run per entry).
        shard.dispatch(&tick(0, 6));
        shard.end_of_batch();
        let got = take(&mut shard, slot);
        let overflow = got.iter().find(|r| r.kind == 3).expect("an overflow record");
        // from_seq 1, to_seq 6, lost 6: no seq jump without an overflow.
        assert_eq!((overflow.p1, overflow.seq, overflow.p2), (1, 6, 6));
        assert!(by_stream(&got).is_empty());
        // After it, every update.
        shard.dispatch(&tick(0, 7));
        shard.end_of_batch();
        assert_eq!(by_stream(&take(&mut shard, slot))[&(0, 0)], vec![(7, 1)]);
    }

    #[test]
    fn switching_all_to_latest_sends_the_newest_value_not_the_queue() {
        let mut shard = shard();
        shard.config.queue_cap = 2;
        let slot = session(&mut shard, 1, &["*"], Mode::All);
        for seq in 1..=5 {
            shard.dispatch(&tick(0, seq));
        }
        // Two updates queued and three lost, none sent or reported, then
        // mode latest: the newest value, and no overflow.
        subscribe(&mut shard, slot, &["*"], Mode::Latest);
        let got = take(&mut shard, slot);
        assert!(got.iter().all(|r| r.kind != 3), "{got:?}");
        assert_eq!(by_stream(&got)[&(0, 0)], vec![(5, 5)]);
        shard.dispatch(&tick(0, 6));
        shard.end_of_batch();
        assert_eq!(by_stream(&take(&mut shard, slot))[&(0, 0)], vec![(6, 1)]);
    }

    #[test]
    fn a_snapshot_takes_the_queued_updates_it_covers_out_of_the_queue() {
        let mut shard = shard();
        let slot = session(&mut shard, 1, &["S0"], Mode::All);
        let (mut ring, _) = crate::ring::ring::<Tick>(2);
        let mut seqs = vec![0u64; 2 * 4096];
        let mut publish = |shard: &mut Shard, n: usize| {
            let mut batch = vec![tick(0, 0); n];
            crate::feed::publish(&mut batch, &mut seqs, &mut ring, &shard.market);
            batch.iter().for_each(|t| {
                shard.dispatch(t);
            });
        };
        publish(&mut shard, 3); // queued, not sent
        subscribe_with(&mut shard, slot, vec!["S0".into()], Mode::All, true);
        let got = take(&mut shard, slot);
        let snapshot = |r: &&Record| r.flags & binary::RECORD_SNAPSHOT != 0;
        assert_eq!(got.iter().filter(snapshot).map(|r| r.seq).collect::<Vec<_>>(), [3]);
        assert!(got.iter().filter(|r| !snapshot(r)).all(|r| r.kind != 1), "{got:?}");
        publish(&mut shard, 1);
        shard.end_of_batch();
        assert_eq!(by_stream(&take(&mut shard, slot))[&(0, 0)], vec![(4, 1)]);
    }

    /// Checks records against the positions a client keeps per stream: an
    /// update rises by exactly its `cf`, an overflow starts right after
    /// the position and counts what it skips, a snapshot never goes back.
    fn check_positions(pos: &mut BTreeMap<(u8, u32), u64>, records: &[Record]) {
        for r in records {
            let p = pos.entry((r.ch, r.sym)).or_insert(0);
            match r.kind {
                1 | 2 if r.flags & binary::RECORD_SNAPSHOT != 0 => assert!(r.seq >= *p, "{r:?}"),
                1 | 2 => assert_eq!(r.seq, *p + r.cf, "{r:?}"),
                3 => assert_eq!((r.p1 as u64, r.p2 as u64), (*p + 1, r.seq - *p), "{r:?}"),
                _ => continue,
            }
            *p = r.seq;
        }
    }

    #[test]
    fn random_requests_keep_every_stream_accounted_for() {
        // Small queue (losses), snapshots, mode switches of the wildcard
        // and of named streams inside it, frames taken or left pending;
        // the debug checks in the frame build and `Subscriber::settle_sent`
        // run throughout.
        let mut shard = shard();
        shard.config.queue_cap = 6;
        let slot = session(&mut shard, 1, &["*"], Mode::All);
        let (mut ring, _) = crate::ring::ring::<Tick>(2);
        let mut seqs = vec![0u64; 2 * 4096];
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut pos = BTreeMap::new();
        for _ in 0..20_000 {
            let r = next();
            match r % 16 {
                0..=8 => {
                    let mut batch = vec![tick((r >> 8) as u32 % 8, 0)];
                    crate::feed::publish(&mut batch, &mut seqs, &mut ring, &shard.market);
                    shard.dispatch(&batch[0]);
                }
                9 | 10 => shard.end_of_batch(),
                11 | 12 => check_positions(&mut pos, &take(&mut shard, slot)),
                _ => {
                    let symbols = if r % 16 == 13 {
                        vec!["*".to_string()]
                    } else {
                        vec![format!("S{}", (r >> 8) % 4)]
                    };
                    let mode = if (r >> 16) % 2 == 0 { Mode::All } else { Mode::Latest };
                    subscribe_with(&mut shard, slot, symbols, mode, (r >> 17) % 3 == 0);
                }
            }
        }
        shard.end_of_batch();
        check_positions(&mut pos, &take(&mut shard, slot));
        assert!(pos.len() >= 8, "every stream was delivered: {pos:?}");
    }

    #[test]
    fn unsubscribing_the_wildcard_stops_the_scan() {
        let mut shard = shard();
        let slot = session(&mut shard, 1, &["*"], Mode::Latest);
        shard.dispatch(&tick(0, 1));
        let req =
            Request::Unsubscribe { id: None, symbols: vec!["*".into()], channels: Channels::BOTH };
        shard.handle(slot, req);
        take(&mut shard, slot);
        shard.dispatch(&tick(0, 2));
        // Nothing scans, so a batch of ticks leaves nothing to flush.
        assert!(!shard.has_dirty());
        assert!(take(&mut shard, slot).is_empty());
    }
}
