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
//! ([`crate::protocol::binary`]) and the per-connection part is its `cf` field; the
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
//!
//! # Layout
//!
//! - this file: the [`Shard`] state and its settings;
//! - `dispatch`: ticks from the ring to the subscribers of their stream,
//!   resyncs, new symbols, epoch ends;
//! - `frame`: the end of a batch, data frames, `max_hz`;
//! - `cache`: the encode-once cache ([`EncodeCache`]);
//! - `entries`: subscription entries and the per-stream index;
//! - `requests`: client requests and their replies;
//! - `housekeeping`: feed state, the slow-client policy, authentication
//!   deadlines;
//! - `sessions`: opening and closing sessions, and what a connection's tasks
//!   ask of the shard.

mod cache;
mod dispatch;
mod entries;
mod frame;
mod housekeeping;
mod requests;
mod resume;
mod sessions;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

pub use cache::EncodeCache;
use entries::remove_ref;
use frame::{begin_data_frame, finish_data_frame};
use housekeeping::push_status;

use super::changes::ChangeLog;
use super::subscriber::{Entry, Subscriber, WildOpts};
use crate::auth::audit::{Event, Who};
use crate::auth::{Access, SessionAuth};
use crate::feed::{FeedState, Market, epoch_name};
use crate::protocol::binary;
use crate::protocol::control::{Control, Limits, Rejected, Sub};
use crate::protocol::json::{self, Format};
use crate::protocol::request::{Mode, Request};
use crate::ring::{ReadOutcome, RingReader};
use crate::socket::deflate::Deflater;
use crate::socket::outbound::{
    Cause, CloseRequest, DirectWrite, Frame, Next, Outbound, Pushed, Signals,
};
use crate::socket::ws::OpCode;
use crate::tick::{
    CHANNELS, Channel, Channels, SymbolId, Tick, now_ns, stream_index, stream_of, valid_symbol,
};
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
    /// This server's name in `welcome.node` when several nodes serve one
    /// feed (`None`: a single server, and `node` is left out).
    pub node: Option<String>,
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
            node: None,
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

    /// Slots in the feed's ring.
    pub fn ring_capacity(&self) -> usize {
        self.reader.capacity()
    }

    /// Reads the next ticks of the ring (see [`RingReader::read_batch`]).
    pub fn read_ring(&mut self, out: &mut Vec<Tick>, max: usize) -> ReadOutcome {
        self.reader.read_batch(out, max)
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
}
