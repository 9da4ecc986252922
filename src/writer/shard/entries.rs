//! Subscription entries and the per-stream index: adding, replacing and
//! removing a session's (channel, symbol) entries, and keeping each entry
//! either in the per-tick index of its stream or covered by the change
//! log's scan.

use super::*;

impl Shard {
    /// Adds or replaces the entry of (sym, ch). Returns its index and
    /// whether it is new.
    pub(super) fn upsert_entry(
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
        if s.dense_index(stream) != Some(idx) {
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
    pub(super) fn place_entries(&mut self, slot: u32) {
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

    pub(super) fn remove_entry(&mut self, slot: u32, idx: u32) {
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

pub(super) fn remove_ref(index: &mut [Vec<SubRef>], stream: usize, r: SubRef) {
    if let Some(list) = index.get_mut(stream)
        && let Some(pos) = list.iter().position(|x| *x == r)
    {
        list.swap_remove(pos);
    }
}
