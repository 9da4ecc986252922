//! The data path's first half: ticks drained from the ring offered to
//! every local subscriber of their stream ([`Shard::dispatch`]), the
//! resync after a ring overrun, new symbols for `["*"]` subscriptions, and
//! the end of a feed epoch.

use super::*;

impl Shard {
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

    /// Learns symbols the feed announced since the last call, and extends
    /// `["*"]` subscriptions to them.
    pub fn sync_symbols(&mut self) {
        let known = self.names.len();
        if self.market.symbols.len() <= known {
            return;
        }
        let new = self.market.symbols.names_from(known);
        self.names.extend(new);
        self.index.resize_with(self.names.len() * CHANNELS, Vec::new);
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
                self.reply_subscribed(slot, None, &added, &[], &[], false);
            }
        }
    }

    /// Sizes `last` to the known streams; a stream with no tick yet holds a
    /// placeholder with `seq` 0.
    fn grow_last(&mut self) {
        let n = self.names.len() * CHANNELS;
        while self.last.len() < n {
            let (sym, ch) = stream_of(self.last.len());
            self.last.push(Tick::placeholder(sym, ch));
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
}
