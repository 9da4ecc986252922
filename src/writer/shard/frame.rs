//! The data path's second half: at the end of a batch, one data frame per
//! dirty session whose socket is idle, built from its pending updates
//! (`mode:"all"` queue, losses, latest values, the change log for
//! `["*"]`), and the `max_hz` wake-ups.

use super::*;

impl Shard {
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
    pub(super) fn build_data_frame(&mut self, slot: u32, now: Instant) -> bool {
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
                binary::write_overflow(&mut buf, e.ch, e.sym, from, to, e.lost, format);
            } else {
                if msgs > 0 {
                    buf.push(b',');
                }
                Control::Overflow {
                    ch: e.ch.name(),
                    sym: &names[e.sym.index()],
                    lost: e.lost,
                    from_seq: e.lost_from(),
                    to_seq: e.accepted_seq,
                    cseq: s.cseq,
                }
                .write(&mut buf);
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
pub(super) fn begin_data_frame(buf: &mut Vec<u8>, format: Format, first_cseq: u64) {
    if format.binary {
        binary::begin_frame(buf, format, first_cseq);
    } else {
        buf.push(b'[');
    }
}

/// Closes a data frame started with [`begin_data_frame`].
pub(super) fn finish_data_frame(buf: &mut Vec<u8>, format: Format) {
    if format.binary {
        binary::finish_frame(buf);
    } else {
        buf.push(b']');
    }
}
