//! A shard's side of its connections: opening and closing sessions, and
//! what a connection's tasks ask of the shard (the next frames to write, a
//! finished write, a ping, a heartbeat, a close).

use super::*;

impl Shard {
    /// Registers a new connection (`uid` unique for the server's life) and
    /// queues its `welcome` and first `status`. Authentication is off for it.
    pub fn open_session(&mut self, format: Format, uid: u64) -> (u32, Rc<Signals>) {
        self.open_session_as(format, uid, SessionAuth::Off, None, None, None)
    }

    /// [`Shard::open_session`] for a session that stands at `auth` with
    /// authentication (`welcome` then says `"auth":"required"` or `"ok"`),
    /// from `peer`, whose data frames the shard may write into `direct`
    /// itself (see [`Outbound::push_data`]), and whose text and binary
    /// frames go through `deflater` when permessage-deflate was
    /// negotiated. Returns its slot and the wake-ups its tasks wait on.
    pub fn open_session_as(
        &mut self,
        format: Format,
        uid: u64,
        auth: SessionAuth,
        peer: Option<std::net::SocketAddr>,
        direct: Option<Rc<dyn DirectWrite>>,
        deflater: Option<Deflater>,
    ) -> (u32, Rc<Signals>) {
        self.sync_epoch();
        let out = Outbound::new(direct, deflater);
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
        session.send(&Control::Welcome {
            session: format!("s-{uid}"),
            server: concat!("tickwire/", env!("CARGO_PKG_VERSION")),
            time_unit: format.time_unit.name(),
            hb_ms: c.hb.as_millis() as u64,
            epoch: epoch_name(self.epoch),
            limits: Limits {
                symbols: c.max_symbols as u64,
                msgs_in_per_s: c.msgs_in_per_s.into(),
                max_message_bytes: c.max_message_bytes as u64,
                history: self.market.history.depth() as u64,
            },
            auth: auth_label,
            node: c.node.as_deref(),
        });
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
            let cseq = s.next_cseq();
            let t = s.format.time_unit.from_ns(now_ns());
            if s.format.binary {
                let mut buf = Vec::with_capacity(64);
                binary::begin_frame(&mut buf, s.format, cseq);
                binary::write_heartbeat(&mut buf, t, s.format);
                binary::finish_frame(&mut buf);
                s.out.push(OpCode::Binary, buf);
            } else {
                s.send(&Control::Heartbeat { cseq, t });
            }
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
    pub(super) fn end_session(&mut self, slot: u32, reconnect_after_ms: u64, close: CloseRequest) {
        if let Some(s) = self.session(slot) {
            if s.out.close_request().is_some() {
                return;
            }
            let cseq = s.next_cseq();
            s.send(&Control::Shutdown { cseq, reconnect_after_ms });
            s.out.request_close(close, Instant::now());
            ShardCounters::add(&self.metrics.counters.messages_out, 1);
        }
    }

    /// The write side of the session in `slot`, if one is open there.
    pub fn outbound(&mut self, slot: u32) -> Option<&mut Outbound> {
        self.session(slot).map(|s| &mut s.out)
    }

    /// Time for a ping, every heartbeat interval `hb` (see
    /// [`Outbound::ping`]): false when the peer looks gone.
    pub fn ping(&mut self, slot: u32, now: Instant, hb: Duration) -> bool {
        self.session(slot).is_some_and(|s| s.out.ping(now, hb))
    }

    /// Drops a peer that answered no ping: counted, and closed without a
    /// close frame.
    pub fn drop_dead_peer(&mut self, slot: u32) {
        ShardCounters::add(&self.metrics.counters.dead_peers, 1);
        self.request_close(slot, CloseRequest::DEAD_PEER);
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
}
