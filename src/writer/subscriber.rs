//! What a writer shard keeps for one connection (a [`Subscriber`]): its
//! subscriptions, conflation slots and `mode:"all"` queue, and its write
//! side ([`Outbound`]).
//!
//! Memory is bounded by the subscriptions, never by the feed rate:
//! - `mode:"latest"`: a dirty flag per (channel, symbol) entry. The value
//!   itself is the shard's newest tick of the stream, shared by every
//!   subscriber (see `Shard::last`); `cf` is derived from the sequence
//!   numbers (`seq` of the new message minus `seq` of the last one sent), so
//!   it is exact without counting. A session with `["*"]` in latest mode on
//!   a channel is not told about each tick of that channel at all: it reads
//!   the shard's change log from its `scan_cursor` when a frame is built
//!   (see `super::changes`), and its dirty list only holds what `max_hz`
//!   held back.
//! - `mode:"all"`: a FIFO of at most `queue_cap` ticks for the whole session.
//!   When it is full, further ticks of an entry are counted as lost until an
//!   `overflow` message naming them is encoded. Losses of an entry are always
//!   one contiguous run ending at `accepted_seq`, so a count is enough.
//! - a data frame is only built when the connection's socket is idle
//!   ([`Outbound::ready_for_data`]), so a slow socket leaves its updates
//!   conflating in the slots instead of piling up as bytes.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::auth::SessionAuth;
use crate::protocol::control::Control;
use crate::protocol::json::Format;
use crate::protocol::request::Mode;
use crate::socket::outbound::Outbound;
use crate::socket::ws::OpCode;
use crate::tick::{CHANNELS, Channel, Channels, SymbolId, Tick, stream_of};

/// One (channel, symbol) subscription of a session.
///
/// One cache line each (64 bytes, aligned): `dispatch` reads the entry of
/// every subscriber of a tick, and with 1,000 sessions of 2,000 entries
/// that is a cache miss per message, which an entry straddling two lines
/// could double. `max_hz` is kept as its bits to fit (BENCHMARKS.md, "The
/// 1,000-client row": 10 MB less memory at 1,000 sessions than 72-byte
/// entries, the same CPU).
#[derive(Debug, Clone)]
#[repr(align(64))]
pub struct Entry {
    /// Whether the slot is in use (entries are recycled through a free list).
    pub live: bool,
    /// The instrument.
    pub sym: SymbolId,
    /// The channel.
    pub ch: Channel,
    /// Delivery mode.
    pub mode: Mode,
    /// The client's `max_hz` as its bits, 0 for none (a `max_hz` is above
    /// 0): see [`Entry::max_hz`]. Half the size of an `Option<f64>`.
    max_hz_bits: u64,
    /// Subscribed by name (counts against the symbol limit) rather than
    /// through `["*"]`.
    pub explicit: bool,
    /// Latest mode: the entry is on the session's dirty list (the shard's
    /// newest tick of the stream may be newer than `sent_seq`).
    pub dirty: bool,
    /// The entry is in the shard's per-tick index of its stream (every tick
    /// is offered to it). False for a latest-mode entry on a channel the
    /// session scans ([`Subscriber::scans`]): the change log covers it, and its
    /// `accepted_seq` is only brought up to date when it leaves the scan.
    pub in_index: bool,
    /// Highest `seq` accepted for delivery (dirty, queued or sent);
    /// anything at or below it is old news and skipped.
    pub accepted_seq: u64,
    /// `seq` of the last message of this entry put in the outbox (snapshot
    /// included): the base of `cf`. In mode all, only up to date after
    /// [`Subscriber::settle_sent`] (frame builds leave it behind).
    pub sent_seq: u64,
    /// Latest mode with `max_hz`: earliest time the next message may go.
    pub next_allowed: Option<Instant>,
    /// All mode: updates dropped and not yet reported: the run
    /// `accepted_seq - lost + 1 ..= accepted_seq`.
    pub lost: u64,
}

impl Entry {
    /// A live entry starting at source position `position`.
    pub fn new(
        sym: SymbolId,
        ch: Channel,
        mode: Mode,
        max_hz: Option<f64>,
        explicit: bool,
        position: u64,
    ) -> Entry {
        Entry {
            live: true,
            sym,
            ch,
            mode,
            max_hz_bits: max_hz.map_or(0, f64::to_bits),
            explicit,
            dirty: false,
            in_index: false,
            accepted_seq: position,
            sent_seq: position,
            next_allowed: None,
            lost: 0,
        }
    }

    /// The client's `max_hz`, for the `subscribed` reply and
    /// [`Entry::min_interval`].
    pub fn max_hz(&self) -> Option<f64> {
        (self.max_hz_bits != 0).then(|| f64::from_bits(self.max_hz_bits))
    }

    /// Sets the client's `max_hz` (above 0, as the protocol requires).
    pub fn set_max_hz(&mut self, max_hz: Option<f64>) {
        debug_assert!(max_hz.is_none_or(|hz| hz > 0.0));
        self.max_hz_bits = max_hz.map_or(0, f64::to_bits);
    }

    /// Minimum time between two messages (from `max_hz`, latest mode only).
    /// Derived when needed rather than stored: entries are most of a
    /// session's memory, and only throttled ones need it.
    #[inline]
    pub fn min_interval(&self) -> Option<Duration> {
        min_interval(self.mode, self.max_hz())
    }

    /// First `seq` of the unreported loss.
    pub fn lost_from(&self) -> u64 {
        self.accepted_seq + 1 - self.lost
    }
}

/// Minimum time between two messages of a stream: from `max_hz`, in latest
/// mode only.
pub fn min_interval(mode: Mode, max_hz: Option<f64>) -> Option<Duration> {
    match mode {
        Mode::Latest => max_hz.map(|hz| Duration::from_secs_f64(1.0 / hz)),
        Mode::All => None,
    }
}

/// Hashing for maps keyed by stream index: a multiply instead of SipHash.
/// Keys are small integers the server assigns, not client input, so there
/// is nothing to defend against, and a scanning session looks one up per
/// message it sends.
pub type StreamHash = BuildHasherDefault<StreamHasher>;

/// See [`StreamHash`].
#[derive(Default)]
pub struct StreamHasher(u64);

impl Hasher for StreamHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: an odd multiplier spreads consecutive keys.
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A queued update in mode all.
#[derive(Debug, Clone, Copy)]
pub struct Queued {
    /// Index of the entry in [`Subscriber::entries`].
    pub entry: u32,
    /// The update.
    pub tick: Tick,
}

/// Options of a `["*"]` subscription on one channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WildOpts {
    /// Delivery mode.
    pub mode: Mode,
    /// Rate cap.
    pub max_hz: Option<f64>,
}

/// Everything a shard knows about one connection.
pub struct Subscriber {
    /// Unique for the life of the server (slots are reused, uids are not).
    pub uid: u64,
    /// How updates are encoded for this session.
    pub format: Format,
    /// Messages sent so far after `welcome` (the last `cseq` used).
    pub cseq: u64,
    /// Subscription slots.
    pub entries: Vec<Entry>,
    /// Free slots of `entries`.
    pub free: Vec<u32>,
    /// Entry index by stream index (`sym * CHANNELS + channel`), for the
    /// entries that are not where [`Subscriber::dense`] puts them (see
    /// [`Subscriber::entry_of`]): a session whose first subscription was
    /// `["*"]` keeps this map nearly empty.
    pub by_stream: HashMap<u32, u32, StreamHash>,
    /// The channels of a first subscription to `["*"]`, whose entries were
    /// made symbol by symbol, channel by channel: the entry of (sym, ch) is
    /// then at `sym * dense.len() + ch's rank in dense`. Empty otherwise.
    pub dense: Channels,
    /// `["*"]` options per channel, when subscribed to all.
    pub wildcard: [Option<WildOpts>; CHANNELS],
    /// Number of distinct symbols subscribed by name.
    pub explicit_symbols: usize,
    /// Explicit subscriptions per symbol (0, 1 or 2 channels), to count distinct symbols.
    pub explicit_by_sym: HashMap<u32, u8>,
    /// Latest-mode entries that may have something newer to send.
    pub dirty: Vec<u32>,
    /// Generation of the shard's change log up to which every change of a
    /// scanned channel was looked at (meaningful while [`Subscriber::scanning`]).
    pub scan_cursor: u64,
    /// Whether the session scanned the change log at the last check: set
    /// when it starts, so the cursor starts at the log's end.
    pub scanning: bool,
    /// All-mode queue. Everything in it is sendable: its entry is live and
    /// its `seq` is above the entry's `sent_seq`. Whatever removes an entry
    /// or moves its `sent_seq` past a queued update (a snapshot, a switch
    /// to latest mode) takes the stale updates out, so that a frame build
    /// does not touch the entry of each update it sends: at 1,000 sessions
    /// those entries are 128 MB, and that access missed the cache (and the
    /// TLB) for every message. It does not write `sent_seq` either, for the
    /// same reason: see [`Subscriber::settle_sent`].
    pub queue: VecDeque<Queued>,
    /// All-mode entries with unreported losses.
    pub lost_entries: Vec<u32>,
    /// Whether the session is on the shard's dirty list.
    pub on_dirty_list: bool,
    /// When a throttle wake-up is already scheduled for this session.
    pub throttle_at: Option<Instant>,
    /// Inbound rate limiting: start of the current one-second window.
    pub rate_window: Instant,
    /// Messages received in the current window.
    pub rate_count: u32,
    /// Where the session stands with authentication; its entitlements
    /// limit every subscription.
    pub auth: SessionAuth,
    /// The client's address (for the audit log).
    pub peer: Option<SocketAddr>,
    /// The connection's write side: every frame for the socket goes
    /// through it.
    pub out: Outbound,
}

impl Subscriber {
    /// A session with no subscriptions.
    pub fn new(uid: u64, format: Format, out: Outbound, now: Instant) -> Subscriber {
        Subscriber {
            uid,
            format,
            cseq: 0,
            entries: Vec::new(),
            free: Vec::new(),
            by_stream: HashMap::default(),
            dense: Channels::EMPTY,
            wildcard: [None; CHANNELS],
            explicit_symbols: 0,
            explicit_by_sym: HashMap::new(),
            dirty: Vec::new(),
            scan_cursor: 0,
            scanning: false,
            queue: VecDeque::new(),
            lost_entries: Vec::new(),
            on_dirty_list: false,
            throttle_at: None,
            rate_window: now,
            rate_count: 0,
            auth: SessionAuth::Off,
            peer: None,
            out,
        }
    }

    /// Queues a control message, alone in its frame, for the socket.
    pub fn send(&mut self, msg: &Control) {
        self.out.push(OpCode::Text, msg.frame());
    }

    /// The opcode of this session's data frames: binary records on a
    /// `tickwire.v1.bin` session, JSON text otherwise.
    pub fn data_op(&self) -> OpCode {
        if self.format.binary { OpCode::Binary } else { OpCode::Text }
    }

    /// Takes the next `cseq`.
    #[inline]
    pub fn next_cseq(&mut self) -> u64 {
        self.cseq += 1;
        self.cseq
    }

    /// Whether there is market data waiting to be encoded, the changes a
    /// scanning session has not looked at included (`changes` is the
    /// generation of the shard's change log).
    pub fn has_data(&self, changes: u64) -> bool {
        !self.dirty.is_empty()
            || !self.queue.is_empty()
            || !self.lost_entries.is_empty()
            || (self.scanning && changes > self.scan_cursor)
    }

    /// Whether latest-mode entries of channel `ch` are served from the
    /// shard's change log instead of tick by tick: the session has `["*"]`
    /// in latest mode on it, so it takes (nearly) every stream of the
    /// channel anyway.
    #[inline]
    pub fn scans(&self, ch: Channel) -> bool {
        matches!(self.wildcard[ch as usize], Some(WildOpts { mode: Mode::Latest, .. }))
    }

    /// Where [`Subscriber::dense`] puts the entry of stream `stream`, if
    /// its channel is one of them.
    #[inline]
    pub fn dense_index(&self, stream: usize) -> Option<u32> {
        let (sym, ch) = stream_of(stream);
        self.dense.contains(ch).then(|| self.dense.index_of(sym, ch))
    }

    /// The entry of stream `stream` (`sym * CHANNELS + channel`), if any.
    ///
    /// A session that subscribed to `["*"]` before anything else has its
    /// entries in stream order ([`Subscriber::dense`]), so that place is
    /// checked first: a sweep over the streams then reads the entries in
    /// order instead of probing the map for each.
    #[inline]
    pub fn entry_of(&self, stream: u32) -> Option<u32> {
        if let Some(idx) = self.dense_index(stream as usize)
            && let Some(e) = self.entries.get(idx as usize)
            && e.live
            && crate::tick::stream_index(e.sym, e.ch) == stream as usize
        {
            return Some(idx);
        }
        self.by_stream.get(&stream).copied()
    }

    /// Whether an entry of mode `mode` on channel `ch` must be offered every
    /// tick of its stream (it is then in the shard's per-tick index).
    #[inline]
    pub fn per_tick(&self, mode: Mode, ch: Channel) -> bool {
        mode == Mode::All || !self.scans(ch)
    }

    /// Offers a tick to an entry. Returns true when the session now has
    /// something new to send.
    ///
    /// Hot path: no allocation except the amortized growth of the dirty
    /// list and queue, both bounded by the subscriptions.
    #[inline]
    pub fn offer(&mut self, entry_idx: u32, tick: &Tick, queue_cap: usize) -> bool {
        let Some(e) = self.entries.get_mut(entry_idx as usize) else { return false };
        if !e.live || tick.seq <= e.accepted_seq {
            return false;
        }
        match e.mode {
            Mode::Latest => {
                e.accepted_seq = tick.seq;
                if !e.dirty {
                    e.dirty = true;
                    self.dirty.push(entry_idx);
                }
            }
            Mode::All => {
                // A jump (a numbered feed that lost updates upstream, such
                // as an edge's bus) is a loss like a full queue: reported
                // by `overflow`, in order, the tick with it.
                if e.lost > 0 || self.queue.len() >= queue_cap || tick.seq > e.accepted_seq + 1 {
                    self.lose_through(entry_idx, tick.seq);
                } else {
                    e.accepted_seq = tick.seq;
                    self.queue.push_back(Queued { entry: entry_idx, tick: *tick });
                }
            }
        }
        true
    }

    /// Records that everything after `accepted_seq` up to `seq` (inclusive)
    /// of an all-mode entry was lost (a full queue, or a ring overrun).
    pub fn lose_through(&mut self, entry_idx: u32, seq: u64) {
        let Some(e) = self.entries.get_mut(entry_idx as usize) else { return };
        if !e.live || seq <= e.accepted_seq {
            return;
        }
        if e.lost == 0 {
            self.lost_entries.push(entry_idx);
        }
        e.lost += seq - e.accepted_seq;
        e.accepted_seq = seq;
    }

    /// Brings the `sent_seq` of every all-mode entry up to date; called
    /// before a request reads or moves them.
    ///
    /// A frame build does not write it: an all-mode entry takes every
    /// update of its stream, one `seq` after the other (from its start
    /// position, or after a snapshot or a loss), and each update it took
    /// is queued, counted in `lost` or sent. So the last one sent is
    /// `accepted_seq - lost - (its updates in the queue)`. Debug builds
    /// keep `sent_seq` as frames are built and check this against it.
    pub fn settle_sent(&mut self) {
        if self.entries.is_empty() {
            return;
        }
        let mut queued = vec![0u64; self.entries.len()];
        for q in &self.queue {
            queued[q.entry as usize] += 1;
        }
        for (e, n) in self.entries.iter_mut().zip(queued) {
            if e.live && e.mode == Mode::All {
                let sent = e.accepted_seq.saturating_sub(e.lost + n);
                debug_assert_eq!(sent, e.sent_seq, "an all-mode entry skipped a seq");
                e.sent_seq = sent;
            }
        }
    }

    /// Drops every trace of an entry from the dirty list, queue and loss list.
    pub fn purge_entry(&mut self, entry_idx: u32) {
        self.dirty.retain(|&i| i != entry_idx);
        self.queue.retain(|q| q.entry != entry_idx);
        self.lost_entries.retain(|&i| i != entry_idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_one_cache_line_and_keeps_its_max_hz() {
        assert_eq!(std::mem::size_of::<Entry>(), 64);
        let mut e = Entry::new(SymbolId(1), Channel::Quotes, Mode::Latest, Some(0.1), false, 0);
        assert_eq!(e.max_hz(), Some(0.1));
        assert_eq!(e.min_interval(), Some(Duration::from_secs(10)));
        e.set_max_hz(None);
        assert_eq!((e.max_hz(), e.min_interval()), (None, None));
    }
}
