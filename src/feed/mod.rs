//! STAGE 1: ingestion. One plain OS thread reads one [`FeedSource`],
//! normalizes its records into [`Tick`]s, numbers them per (channel, symbol)
//! stream, stores each in the latest-value table and publishes it on the ring.
//!
//! The feed thread owns the only `RingProducer`, so it never waits for a
//! consumer: market data must not stall because a writer shard is slow. It
//! does not allocate per tick (the batch vector and the sequence counters are
//! reused). Sources only produce ticks and say when the next one is due;
//! pacing, sequencing and publication live here, so every source gets the
//! same guarantees.
//!
//! Order of publication matters for readers that resync after an overrun,
//! and for sessions that resume after a reconnect: a tick is written to the
//! [`Market::history`] and the [`Market::latest`] table *before* it is
//! pushed on the ring, so any tick a shard has read from the ring, or lost
//! from it, is in both by the time the shard sees a later ring position.

pub mod bars;
pub mod itch;
pub mod jsonl;
pub mod manual;
pub mod replay;
pub mod symbols;
pub mod synthetic;
pub mod tcp;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::ring::{History, LatestTable, RingProducer};
use crate::tick::{Channel, SymbolId, SymbolTable, Tick, now_ns};
use bars::Bars;

/// What a source answered to [`FeedSource::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// The batch vector holds the ticks that are due (possibly none); poll
    /// again right away.
    Ready,
    /// Nothing is due before this instant.
    WaitUntil(Instant),
    /// The source changed state (went silent, came back...).
    State(FeedState),
    /// The source is finished for good (a replay without `--loop`). The
    /// server keeps serving the last values.
    Done,
    /// The source starts over (a replay with `--loop` reached its end and
    /// rewound): sequence numbering restarts under a new `epoch`. See
    /// [`Market::epoch`] for what sessions see.
    Restart,
    /// A numbered source ([`FeedSource::numbered`]) names the epoch of the
    /// ticks that follow (the number of `e-N`). A number other than the
    /// market's current one restarts the numbering under exactly that
    /// epoch, as [`Poll::Restart`] does under a new one.
    Epoch(u64),
}

/// The feed's health as sessions see it in `status` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FeedState {
    /// Updates are flowing (or can flow at any moment).
    Live = 0,
    /// The source went silent or disconnected; values may be old.
    Stale = 1,
    /// A replay without loop reached its end.
    ReplayDone = 2,
}

impl FeedState {
    /// The protocol name of the state.
    pub fn name(self) -> &'static str {
        match self {
            FeedState::Live => "live",
            FeedState::Stale => "stale",
            FeedState::ReplayDone => "replay_done",
        }
    }

    fn from_u8(v: u8) -> FeedState {
        match v {
            1 => FeedState::Stale,
            2 => FeedState::ReplayDone,
            _ => FeedState::Live,
        }
    }
}

/// A producer of normalized ticks, polled by the feed thread.
///
/// Implementations intern their symbols in the [`SymbolTable`] they were
/// built with and leave `seq` and `ingest_ns` at 0: the feed thread assigns
/// them.
pub trait FeedSource: Send + 'static {
    /// Appends the ticks that are due now to `out` (at most a few thousand
    /// per call, so that the feed thread publishes in batches).
    fn poll(&mut self, out: &mut Vec<Tick>) -> Poll;

    /// Records the source skipped since the last call (garbage in a file);
    /// the feed thread adds them to `tickwire_feed_bad_records_total` after
    /// every poll.
    fn take_skipped(&mut self) -> u64 {
        0
    }

    /// Whether the feed thread should hold the source (not poll it) until a
    /// session has subscribed (`--wait-for-subscriber`).
    fn hold_for_subscriber(&self) -> bool {
        false
    }

    /// Whether the source's ticks already carry their `seq` (a feed
    /// numbered upstream, such as an edge node's bus): the feed thread then
    /// keeps it (and a nonzero `ingest_ns`, the upstream's stamp) instead
    /// of numbering, and skips a tick at or below the
    /// stream's last `seq` (counted as a bad record). A jump is kept: the
    /// writer shards report the missed positions (`overflow`, `cf`).
    fn numbered(&self) -> bool {
        false
    }

    /// The source clock at wall time `now` (nanoseconds since the Unix
    /// epoch) up to which the source has handed over every record, which
    /// closes bars whose interval has passed. A source that knows its
    /// schedule (a paced replay, the synthetic feed) answers its clock, but
    /// never past the next record it has not handed over yet: a bar must
    /// not close while one of its trades is due and unread. A live source
    /// (the default) answers the wall clock less [`LIVE_BAR_GRACE`], for
    /// trades stamped upstream and still on their way. `None` when time
    /// moves only with the records (a replay at `--speed max`): bars then
    /// close when a later trade or the end of the source passes them.
    fn source_time(&self, now: Instant) -> Option<u64> {
        let _ = now;
        Some(now_ns().saturating_sub(LIVE_BAR_GRACE.as_nanos() as u64))
    }

    /// The epoch number a numbered source's ticks start in, when it knows
    /// it before the first poll (an edge that has heard its ingest): the
    /// market starts in it, so the first `welcome` names it. `None`: the
    /// market numbers its own epoch from the clock.
    fn first_epoch(&self) -> Option<u64> {
        None
    }
}

/// How far behind the wall clock a live source's bars close: the time a
/// trade stamped upstream may take to reach the feed thread and still be
/// counted in its bar. With [`BAR_CLOCK`] it keeps closes within the
/// 100 ms the protocol allows.
pub const LIVE_BAR_GRACE: Duration = Duration::from_millis(50);

/// Counters of the feed thread.
#[derive(Default)]
pub struct FeedMetrics {
    /// Ticks published on the ring.
    pub ticks_in: AtomicU64,
    /// Bar updates built from the trades and published on the ring.
    pub bars_built: AtomicU64,
    /// Trades left out of a bar because their interval's bar had closed
    /// (see [`bars`]).
    pub bars_late_trades: AtomicU64,
    /// Records a source produced that could not be used (unknown symbol id,
    /// garbage); skipped, never fatal.
    pub bad_records: AtomicU64,
}

/// What the feed thread shares with the writer shards, besides the ring.
pub struct Market {
    /// Every symbol the feed has announced.
    pub symbols: Arc<SymbolTable>,
    /// Newest tick of every (channel, symbol) stream, indexed by
    /// [`crate::tick::stream_index`]: the source of snapshots and of resyncs
    /// after a ring overrun.
    pub latest: LatestTable<Tick>,
    /// The last `--history` ticks of every stream, by `seq`: what a client
    /// that resumes after a reconnect missed.
    pub history: History<Tick>,
    /// The current [`FeedState`], as a `u8`.
    state: AtomicU8,
    /// Bumped on every state change, so shards notice a change even when the
    /// state flips and flips back between two of their looks.
    state_gen: AtomicU64,
    /// Names the current run of sequence numbers: the protocol's `epoch`
    /// is `e-<this number>`. It only grows.
    epoch: AtomicU64,
    /// Ring position of the first tick of the current epoch: older positions
    /// belong to an earlier epoch. Written before [`Market::epoch`] changes.
    epoch_start: AtomicU64,
    /// Writer shards that have closed their sessions of the earlier epoch
    /// (see [`Market::ack_epoch`]).
    epoch_acks: AtomicUsize,
    /// Ingest counters.
    pub metrics: FeedMetrics,
    /// Set by a writer shard once it has handled a `subscribe`: releases a
    /// source held by [`FeedSource::hold_for_subscriber`].
    pub subscribed: AtomicBool,
    /// Set by the feed thread once its first poll's ticks are published
    /// (see [`Market::has_polled`]).
    polled: AtomicBool,
}

impl Market {
    /// A market for up to `symbols.capacity()` symbols, keeping no history.
    pub fn new(symbols: Arc<SymbolTable>) -> Market {
        Market::with_history(symbols, 0)
    }

    /// A market that keeps the last `history` ticks of every stream.
    pub fn with_history(symbols: Arc<SymbolTable>, history: usize) -> Market {
        let streams = symbols.capacity() * crate::tick::CHANNELS;
        Market {
            symbols,
            latest: LatestTable::new(streams),
            history: History::new(streams, history),
            state: AtomicU8::new(FeedState::Live as u8),
            state_gen: AtomicU64::new(0),
            epoch: AtomicU64::new(now_ns() / 1_000_000),
            epoch_start: AtomicU64::new(0),
            epoch_acks: AtomicUsize::new(0),
            metrics: FeedMetrics::default(),
            subscribed: AtomicBool::new(false),
            polled: AtomicBool::new(false),
        }
    }

    /// Whether the feed thread has published what its source's first poll
    /// gave (an edge's latest values, read before it serves): a server
    /// waits for it before it accepts sessions, so their first snapshots
    /// have them.
    pub fn has_polled(&self) -> bool {
        self.polled.load(Ordering::Acquire)
    }

    /// The feed's current state and the generation of that state.
    pub fn state(&self) -> (FeedState, u64) {
        let gen_ = self.state_gen.load(Ordering::Acquire);
        (FeedState::from_u8(self.state.load(Ordering::Acquire)), gen_)
    }

    fn set_state(&self, state: FeedState) -> bool {
        let old = self.state.swap(state as u8, Ordering::AcqRel);
        if old != state as u8 {
            self.state_gen.fetch_add(1, Ordering::AcqRel);
            true
        } else {
            false
        }
    }

    /// Newest tick of a (channel, symbol) stream in the current epoch, if it
    /// has one.
    pub fn latest(&self, sym: SymbolId, ch: Channel) -> Option<Tick> {
        // A restart leaves a tick with `seq` 0 where a value was: "none yet".
        self.latest.load(crate::tick::stream_index(sym, ch)).filter(|t| t.seq > 0)
    }

    /// The current epoch number (the protocol's `epoch` is
    /// [`epoch_name`]`(n)`) and the ring position where it starts.
    ///
    /// # Epoch restarts
    ///
    /// When a source answers [`Poll::Restart`] the feed thread has published
    /// every tick of the old epoch. It then forgets the latest values,
    /// records the ring position, bumps the number and waits (bounded) until
    /// every writer shard has acknowledged with [`Market::ack_epoch`] before
    /// it publishes the new epoch's first tick. A shard that sees a new
    /// number closes every session it holds (`shutdown`, then close 1012:
    /// their `seq` numbering is over) and skips the old epoch's ticks still
    /// in the ring; sessions that connect afterwards get the new epoch in
    /// `welcome`.
    pub fn epoch(&self) -> (u64, u64) {
        let n = self.epoch.load(Ordering::Acquire);
        (n, self.epoch_start.load(Ordering::Relaxed))
    }

    /// Starts the market in epoch number `n` (before the feed thread is
    /// started: see [`FeedSource::first_epoch`]).
    pub fn start_in_epoch(&self, n: u64) {
        self.begin_epoch(0, Some(n));
    }

    /// A writer shard has left epoch `n` behind (see [`Market::epoch`]).
    pub fn ack_epoch(&self, n: u64) {
        if self.epoch.load(Ordering::Acquire) == n {
            self.epoch_acks.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Starts a new epoch at ring position `start` (feed thread only):
    /// number `n`, or the next free one from the clock.
    fn begin_epoch(&self, start: u64, n: Option<u64>) -> u64 {
        let old = self.epoch.load(Ordering::Relaxed);
        let n = n.unwrap_or((now_ns() / 1_000_000).max(old + 1));
        self.epoch_acks.store(0, Ordering::Relaxed);
        self.epoch_start.store(start, Ordering::Relaxed);
        self.epoch.store(n, Ordering::Release);
        n
    }
}

/// The protocol name of epoch number `n`.
pub fn epoch_name(n: u64) -> String {
    format!("e-{n}")
}

/// The feed's two wake-ups of one writer shard's pump.
#[derive(Clone, Default)]
pub struct ShardWake {
    /// After every publication.
    pub tick: Arc<Notify>,
    /// After every quarter of the ring published: a shard holding a flush
    /// listens only to this one (see `writer::pacer`).
    pub urgent: Arc<Notify>,
}

/// Wakes the writer shards after the feed thread publishes.
#[derive(Clone, Default)]
pub struct Wakers {
    shards: Vec<ShardWake>,
}

impl Wakers {
    /// Wakers for the given shards.
    pub fn new(shards: Vec<ShardWake>) -> Wakers {
        Wakers { shards }
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Whether there are no shards.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Wakes every shard (a stored permit if the shard is busy, so no wake-up
    /// is ever lost).
    pub fn wake_all(&self) {
        for s in &self.shards {
            s.tick.notify_one();
        }
    }

    /// Wakes every shard, even one that is holding a flush: a quarter of
    /// the ring was published since the last time.
    pub fn wake_urgent(&self) {
        for s in &self.shards {
            s.urgent.notify_one();
        }
    }
}

/// Longest the feed thread sleeps between polls, so it notices shutdown.
const MAX_SLEEP: Duration = Duration::from_millis(50);

/// Longest sleep while a bar is open: how late a bar may close after its
/// interval ends on the source clock (less than a tenth of a second of
/// source time at speeds up to 10).
const BAR_CLOCK: Duration = Duration::from_millis(5);

/// How often a held source checks for the first subscription.
const HOLD_POLL: Duration = Duration::from_millis(2);

/// Longest the feed thread waits for the writer shards to acknowledge a new
/// epoch before it publishes anyway (a shard is never that busy unless the
/// machine is stalled).
const EPOCH_ACK_WAIT: Duration = Duration::from_secs(2);

/// Waits at least this long are slept with a 1 µs timer slack; shorter ones
/// with the kernel's default, 50 µs.
const PRECISE_SLEEP_MIN: Duration = Duration::from_micros(200);

/// The feed thread's sleeps until a tick is due, and their timer slack.
///
/// With Linux's default slack a sleep may end up to 50 µs late, and at
/// 1,000 ticks/s every update carried that (BENCHMARKS.md, "The flush
/// pacer, the pump's wake-ups and timer slack"), so a wait of
/// [`PRECISE_SLEEP_MIN`] or more sleeps with 1 µs. Shorter waits keep the default: at 50,000 ticks/s a precise wake-up per
/// tick took a sixth of the server's CPU (about 3 µs each), while a late
/// one publishes the ticks due meanwhile together.
#[derive(Default)]
struct TimerSlack {
    /// Whether the thread's slack is the precise one (`None`: not set yet).
    precise: Option<bool>,
}

impl TimerSlack {
    fn sleep(&mut self, wait: Duration) {
        let precise = wait >= PRECISE_SLEEP_MIN;
        if self.precise != Some(precise) {
            // `None` restores the thread's default (50 µs unless the
            // service manager set another).
            #[cfg(target_os = "linux")]
            let _ = rustix::thread::set_current_timer_slack(
                precise.then_some(1_000).and_then(std::num::NonZeroU64::new),
            );
            self.precise = Some(precise);
        }
        std::thread::sleep(wait);
    }
}

/// Starts the feed thread. It runs until `stop` is set.
pub fn spawn_ingest(
    mut source: Box<dyn FeedSource>,
    mut ring: RingProducer<Tick>,
    market: Arc<Market>,
    wakers: Wakers,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("tickwire-feed".into()).spawn(move || {
        let mut batch: Vec<Tick> = Vec::with_capacity(4096);
        let mut seqs: Vec<u64> = vec![0; market.latest.capacity()];
        let mut slack = TimerSlack::default();
        // Ticks published since the last urgent wake-up, and how many make one.
        let mut since_urgent = 0usize;
        let urgent_every = (ring.capacity() / 4).max(1);
        let numbered = source.numbered();
        // A numbered source carries the bars its upstream built.
        let mut bars = (!numbered).then(Bars::default);
        let mut bar_ticks: Vec<Tick> = Vec::new();
        // Whether the first poll is done (see `Market::has_polled`).
        let mut first_poll_done = false;
        if source.hold_for_subscriber() {
            while !stop.load(Ordering::Acquire) && !market.subscribed.load(Ordering::Acquire) {
                std::thread::park_timeout(HOLD_POLL);
            }
        }
        while !stop.load(Ordering::Acquire) {
            batch.clear();
            if let Some(bars) = &mut bars
                && bars.any_open()
                && let Some(now_src) = source.source_time(Instant::now())
            {
                bars.close_due(now_src, &mut bar_ticks);
                publish_bars(&mut bar_ticks, &mut seqs, &mut ring, &market, &wakers);
            }
            // A source that panics (a bug, or a decoder meeting something
            // nobody expected) must not take the server down: sessions are
            // told `stale`, the last values stay served, and the source is
            // not polled again (its state is suspect).
            let polled =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| source.poll(&mut batch)));
            let Ok(polled) = polled else {
                tracing::error!("the feed source panicked; the feed is stale from now on");
                if market.set_state(FeedState::Stale) {
                    wakers.wake_all();
                }
                while !stop.load(Ordering::Acquire) {
                    std::thread::park_timeout(MAX_SLEEP);
                }
                break;
            };
            let skipped = source.take_skipped();
            if skipped > 0 {
                market.metrics.bad_records.fetch_add(skipped, Ordering::Relaxed);
            }
            match polled {
                Poll::Ready => {
                    if !batch.is_empty() {
                        market.set_state(FeedState::Live);
                        publish_as(&mut batch, &mut seqs, &mut ring, &market, numbered, false);
                        if let Some(bars) = &mut bars {
                            batch.iter().for_each(|t| bars.on_trade(t, &mut bar_ticks));
                            publish_as(&mut bar_ticks, &mut seqs, &mut ring, &market, false, true);
                            bar_ticks.clear();
                            let late = bars.take_late();
                            if late > 0 {
                                market.metrics.bars_late_trades.fetch_add(late, Ordering::Relaxed);
                            }
                        }
                        wakers.wake_all();
                        since_urgent += batch.len();
                        if since_urgent >= urgent_every {
                            since_urgent = 0;
                            wakers.wake_urgent();
                        }
                    }
                }
                Poll::WaitUntil(at) => {
                    let mut wait = at.saturating_duration_since(Instant::now()).min(MAX_SLEEP);
                    if bars.as_ref().is_some_and(Bars::any_open) {
                        // A bar may end before the next record is due.
                        wait = wait.min(BAR_CLOCK);
                    }
                    if !wait.is_zero() {
                        slack.sleep(wait);
                    }
                }
                Poll::State(state) => {
                    if market.set_state(state) {
                        wakers.wake_all();
                    }
                }
                Poll::Restart => {
                    // The old epoch's bars close within it.
                    if let Some(bars) = &mut bars {
                        bars.close_all(&mut bar_ticks);
                        publish_bars(&mut bar_ticks, &mut seqs, &mut ring, &market, &wakers);
                        bars.reset();
                    }
                    restart(&mut seqs, &ring, &market, &wakers, &stop, None);
                    market.set_state(FeedState::Live);
                }
                Poll::Epoch(n) => {
                    if n != market.epoch().0 {
                        restart(&mut seqs, &ring, &market, &wakers, &stop, Some(n));
                    }
                }
                Poll::Done => {
                    // The source's clock stops: what is open closes now.
                    if let Some(bars) = &mut bars {
                        bars.close_all(&mut bar_ticks);
                        publish_bars(&mut bar_ticks, &mut seqs, &mut ring, &market, &wakers);
                    }
                    // Waits below until the end: the first poll is done.
                    market.polled.store(true, Ordering::Release);
                    if market.set_state(FeedState::ReplayDone) {
                        wakers.wake_all();
                    }
                    while !stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(MAX_SLEEP);
                    }
                }
            }
            if !first_poll_done {
                first_poll_done = true;
                market.polled.store(true, Ordering::Release);
            }
        }
    })
}

/// Publishes the bar updates in `ticks` (if any) and wakes the shards.
fn publish_bars(
    ticks: &mut Vec<Tick>,
    seqs: &mut [u64],
    ring: &mut RingProducer<Tick>,
    market: &Market,
    wakers: &Wakers,
) {
    if !ticks.is_empty() {
        publish_as(ticks, seqs, ring, market, false, true);
        ticks.clear();
        wakers.wake_all();
    }
}

/// Ends the epoch: forgets the latest values and the sequence numbers,
/// starts a new epoch and waits for the shards (see [`Market::epoch`]).
fn restart(
    seqs: &mut [u64],
    ring: &RingProducer<Tick>,
    market: &Market,
    wakers: &Wakers,
    stop: &AtomicBool,
    epoch: Option<u64>,
) {
    for (stream, seq) in seqs.iter_mut().enumerate() {
        if *seq > 0 {
            // `seq` 0 reads as "no value" (see `Market::latest`).
            let (sym, ch) = crate::tick::stream_of(stream);
            market.latest.store(stream, Tick::placeholder(sym, ch));
            *seq = 0;
        }
    }
    market.history.restart();
    let n = market.begin_epoch(ring.position(), epoch);
    tracing::info!(epoch = %epoch_name(n), "feed restarted: new epoch");
    wakers.wake_all();
    let deadline = Instant::now() + EPOCH_ACK_WAIT;
    while market.epoch_acks.load(Ordering::Acquire) < wakers.len() {
        if stop.load(Ordering::Acquire) || Instant::now() >= deadline {
            break;
        }
        std::thread::park_timeout(Duration::from_millis(1));
    }
}

/// Numbers, stamps, stores and publishes one batch: what the feed thread
/// does with every batch a source hands over (public for the benchmarks).
/// `seqs` holds the last `seq` of every stream (`market.latest.capacity()`
/// entries, zeroed at the start of an epoch).
///
/// Hot path: no allocation, no lock.
pub fn publish(
    batch: &mut [Tick],
    seqs: &mut [u64],
    ring: &mut RingProducer<Tick>,
    market: &Market,
) {
    publish_as(batch, seqs, ring, market, false, false);
}

/// [`publish`], for a source whose ticks are `numbered` already (see
/// [`FeedSource::numbered`]) or not, or for the feed thread's own `bars`.
///
/// Hot path: no allocation, no lock.
fn publish_as(
    batch: &mut [Tick],
    seqs: &mut [u64],
    ring: &mut RingProducer<Tick>,
    market: &Market,
    numbered: bool,
    bars: bool,
) {
    let ingest_ns = now_ns();
    let mut published = 0u64;
    for tick in batch.iter_mut() {
        let stream = tick.stream();
        let Some(seq) = seqs.get_mut(stream) else {
            market.metrics.bad_records.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if numbered {
            if tick.seq <= *seq {
                // A repeat or a step back: never published twice.
                market.metrics.bad_records.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            *seq = tick.seq;
            // A numbered tick keeps the ingest time stamped upstream (an
            // edge's `ti` is the ingest's, the same on every node, and its
            // latency counts the bus).
            if tick.ingest_ns == 0 {
                tick.ingest_ns = ingest_ns;
            }
        } else {
            *seq += 1;
            tick.seq = *seq;
            tick.ingest_ns = ingest_ns;
        }
        // History and table first, ring second: see the module docs.
        market.history.store(stream, tick.seq, *tick);
        market.latest.store(stream, *tick);
        ring.push(*tick);
        published += 1;
    }
    let counter = if bars { &market.metrics.bars_built } else { &market.metrics.ticks_in };
    counter.fetch_add(published, Ordering::Relaxed);
}
