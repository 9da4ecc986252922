//! What the pump does between batches: feed-state changes (`status`), the
//! slow-client policy, authentication deadlines and revocations, and the
//! latency histogram's merge.

use super::*;

impl Shard {
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
}

/// Queues `slow` with `action` (`conflating` or `disconnecting`).
fn push_slow(s: &mut Subscriber, lag: Duration, action: &'static str) {
    let cseq = s.next_cseq();
    let (lag_ms, queued_bytes) = (lag.as_millis() as u64, s.out.queued_bytes() as u64);
    s.send(&Control::Slow { cseq, lag_ms, queued_bytes, action });
}

/// Queues `status` with the feed's `state`.
pub(super) fn push_status(s: &mut Subscriber, state: FeedState) {
    let cseq = s.next_cseq();
    let t = s.format.time_unit.from_ns(now_ns());
    s.send(&Control::Status { cseq, feed: state.name(), t });
}
