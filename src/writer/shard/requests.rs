//! Client requests on the shard's thread: the inbound rate limit, then
//! `subscribe` (entitlements, limits, snapshots), `unsubscribe`, `ping`,
//! `list` and `auth`, each answered in order with the session's next
//! `cseq`.

use super::resume::Resumed;
use super::*;
use crate::protocol::request::Resume;

impl Shard {
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
        let cseq = s.next_cseq();
        s.send(&Control::Error { id, cseq, code, msg, temporary });
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
            Request::Subscribe { id, symbols, channels, mode, max_hz, snapshot, resume } => {
                let opts = SubscribeOpts { channels, mode, max_hz, snapshot, resume };
                self.subscribe(slot, id, &symbols, opts);
                self.market.subscribed.store(true, std::sync::atomic::Ordering::Release);
            }
            Request::Unsubscribe { id, symbols, channels } => {
                self.unsubscribe(slot, id, &symbols, channels)
            }
            Request::Ping { id, ts } => {
                let Some(s) = self.session(slot) else { return };
                let cseq = s.next_cseq();
                // The parser kept `ts` as the JSON it came as.
                let ts = ts.and_then(|ts| serde_json::value::RawValue::from_string(ts).ok());
                let t = s.format.time_unit.from_ns(now_ns());
                s.send(&Control::Pong { id, cseq, ts: ts.as_deref(), t });
                ShardCounters::add(&self.metrics.counters.messages_out, 1);
            }
            Request::List { id, prefix } => {
                let mut list = self.market.symbols.list(&prefix);
                let Some(s) = self.session(slot) else { return };
                if let Some(e) = s.auth.entitlements() {
                    list.retain(|n| e.allows_symbol(n));
                }
                let cseq = s.next_cseq();
                let symbols = list.iter().map(|n| &**n).collect();
                s.send(&Control::Symbols { id, cseq, symbols });
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
                let cseq = s.next_cseq();
                let e = &p.entitlements;
                s.send(&Control::Authenticated {
                    id,
                    cseq,
                    principal: &p.id,
                    symbols: e.symbol_patterns(),
                    channels: e.channels().iter().map(Channel::name).collect(),
                });
                ShardCounters::add(&self.metrics.counters.messages_out, 1);
                self.access.audit.emit(self.who(slot), Event::Auth);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn subscribe(&mut self, slot: u32, id: Option<u64>, symbols: &[String], opts: SubscribeOpts) {
        let SubscribeOpts { channels, mode, max_hz, snapshot, resume } = opts;
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
            self.reply_subscribed(slot, id, &accepted, &[], &rejected, snapshot);
            self.audit_subscribe(slot, symbols, channels, 0, &rejected);
            return;
        }
        if channels.contains(Channel::Bars1s) || channels.contains(Channel::Bars1m) {
            // Bar records need room: every record of this session's binary
            // frames gets it from now on (`Format::bars`).
            if let Some(s) = self.session(slot)
                && s.format.binary
            {
                s.format.bars = true;
            }
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
            if s.entries.is_empty() {
                // Made symbol by symbol below: see `Subscriber::dense`.
                s.dense = channels;
            }
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
        let (resumed, gaps) = match &resume {
            Some(r) => self.resume_entries(slot, &accepted, r),
            None => (Vec::new(), Vec::new()),
        };
        self.reply_subscribed(slot, id, &accepted, &resumed, &rejected, snapshot);
        self.report_gaps(slot, gaps);
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

    pub(super) fn reply_subscribed(
        &mut self,
        slot: u32,
        id: Option<u64>,
        accepted: &[(u32, bool)],
        resumed: &[Option<Resumed>],
        rejected: &[(String, u16, &'static str)],
        snapshot: bool,
    ) {
        let Shard { sessions, names, market, metrics, .. } = self;
        let Some(s) = sessions.get_mut(slot as usize).and_then(Option::as_mut) else { return };
        // Snapshots come from one read of the table per entry.
        let mut snaps: Vec<Tick> = Vec::new();
        let now = Instant::now();
        let cseq = s.next_cseq();
        let binary = s.format.binary;
        let mut subs = Vec::with_capacity(accepted.len());
        for (i, &(idx, _new)) in accepted.iter().enumerate() {
            let e = &mut s.entries[idx as usize];
            // A stream continued from the client's position gets no snapshot.
            let resumed = resumed.get(i).copied().flatten();
            if snapshot
                && !resumed.is_some_and(|r| r.continued)
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
            subs.push(Sub {
                ch: e.ch.name(),
                sym: &names[e.sym.index()],
                id: binary.then_some(e.sym.0),
                // The position the stream's next `cf` counts from: the
                // snapshot's, or where a new subscription started.
                seq: match resumed {
                    Some(r) if r.continued => r.seq,
                    _ => e.sent_seq,
                },
                mode: e.mode.name(),
                max_hz: e.max_hz(),
                recovered: resumed.map(|r| r.recovered),
            });
        }
        let rejected =
            rejected.iter().map(|(sym, code, msg)| Rejected { sym, code: *code, msg }).collect();
        s.send(&Control::Subscribed { id, cseq, subs, rejected });
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
                    binary::set_snapshot(&mut buf, binary::record_len(format));
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
        let cseq = s.next_cseq();
        s.send(&Control::Unsubscribed {
            id,
            cseq,
            symbols: removed.iter().map(String::as_str).collect(),
            channels: removed_channels.iter().map(Channel::name).collect(),
        });
        ShardCounters::add(&self.metrics.counters.messages_out, 1);
    }
}

/// A `subscribe`'s options besides its names.
struct SubscribeOpts {
    channels: Channels,
    mode: Mode,
    max_hz: Option<f64>,
    snapshot: bool,
    resume: Option<Resume>,
}
