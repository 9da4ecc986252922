//! The write side of one connection: everything waiting for its socket,
//! where the socket stands, and how the connection ends.
//!
//! Two parties write into one socket, and this type is the only place that
//! knows which may:
//!
//! - the **shard** hands it frames: control replies ([`Outbound::push`])
//!   and data frames it has just built ([`Outbound::push_data`]). A data
//!   frame for an idle plain-TCP socket with nothing else queued is written
//!   straight into the socket with one non-blocking `writev` on the shard's
//!   thread, which spares the connection's task a wake-up per frame (about a
//!   tenth of the server's CPU at 1,000 sessions: BENCHMARKS.md, "The
//!   1,000-client row"). Anything else is queued and the task is woken.
//! - the connection's **socket task** takes what is queued
//!   ([`Outbound::take`]), writes it, and reports it done
//!   ([`Outbound::written`]).
//!
//! The states are explicit ([`State`]): idle; writing since T (the task
//! took frames); a partial frame (a direct write the socket took only in
//! part: the task must finish it before anything else, since nothing may
//! come between the pieces of a frame). Build-on-ready follows from them:
//! the shard builds a data frame only for an idle socket
//! ([`Outbound::ready_for_data`]), so a slow socket leaves its updates
//! conflating in the subscriptions instead of piling up here as bytes.
//!
//! **Compression.** With permessage-deflate negotiated, the write side
//! holds the connection's compressor ([`Deflater`]). With context takeover
//! every compressed message may refer to the ones before it, so each text
//! and binary frame is compressed exactly once, in wire order, at the
//! moment it is sure to be written: a direct write compresses the frame,
//! then offers it to the socket, and whatever the socket does not take
//! (all of it, when it is full) stays as the rest for the socket task;
//! the socket task's [`Outbound::take`] compresses the frames it takes, and
//! hands them over already framed. Control frames (ping, pong, close) are
//! never compressed (RFC 7692 6.1).
//!
//! **Closing** is a state of its own with a deadline. Every way a
//! connection ends asks for a [`CloseRequest`]; the first one wins. The
//! task writes what is queued and the close frame, and the connection's
//! guard ([`crate::connection::market`]) resets the socket (`SO_LINGER` 0)
//! and drops it when the deadline passes first, whatever the task is
//! waiting for: a peer that never reads cannot hold a socket.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::rc::Rc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::deflate::Deflater;
use super::ws::{self, OpCode};

/// How long a clean close may take: the frames still queued, the close
/// frame, and the peer's close in reply.
pub const CLOSE_GRACE: Duration = Duration::from_millis(1000);

/// How long a slow client's close may take: a peer that has not drained
/// its socket for the whole lag limit will not drain it now, so the `slow`
/// message and the close frame get one short chance.
pub const SLOW_CLOSE_GRACE: Duration = Duration::from_millis(50);

/// Why a connection ended: the label of `tickwire_closes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The peer sent a close frame (the server echoes its code).
    Client,
    /// The peer went away without a close frame (end of stream, reset).
    Network,
    /// The peer broke the WebSocket framing, sent invalid UTF-8 or a
    /// message over the limit (1002, 1007, 1009).
    Protocol,
    /// Sustained flooding (1008).
    RateLimit,
    /// The slow-client policy (4008).
    SlowClient,
    /// No answer to pings for two heartbeat intervals while taking no
    /// market data.
    DeadPeer,
    /// No `auth` before the deadline (4001).
    AuthTimeout,
    /// A bad token in `auth` (4002).
    AuthFailed,
    /// The session's key was revoked or changed, or its token expired (4001).
    Revoked,
    /// The server is stopping (1012).
    Shutdown,
    /// The feed restarted its numbering under a new epoch (1012).
    Epoch,
}

impl Cause {
    /// Every cause, in the order `/metrics` lists them.
    pub const ALL: [Cause; 11] = [
        Cause::Client,
        Cause::Network,
        Cause::Protocol,
        Cause::RateLimit,
        Cause::SlowClient,
        Cause::DeadPeer,
        Cause::AuthTimeout,
        Cause::AuthFailed,
        Cause::Revoked,
        Cause::Shutdown,
        Cause::Epoch,
    ];

    /// The `reason` label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Cause::Client => "client",
            Cause::Network => "network",
            Cause::Protocol => "protocol",
            Cause::RateLimit => "rate_limit",
            Cause::SlowClient => "slow_client",
            Cause::DeadPeer => "dead_peer",
            Cause::AuthTimeout => "auth_timeout",
            Cause::AuthFailed => "auth_failed",
            Cause::Revoked => "revoked",
            Cause::Shutdown => "shutdown",
            Cause::Epoch => "epoch",
        }
    }
}

/// A close the server carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseRequest {
    /// Why.
    pub cause: Cause,
    /// The close frame (code, reason); `None` when nobody is there to read
    /// one (the peer vanished or stopped answering).
    pub frame: Option<(u16, &'static str)>,
}

impl CloseRequest {
    /// After `shutdown` when the server stops (SIGTERM, SIGINT): 1012
    /// "service restart", because a stopping server is, to its clients, one
    /// about to come back. 1001 would tell a browser the endpoint is going
    /// away for good.
    pub const SHUTDOWN: CloseRequest =
        CloseRequest { cause: Cause::Shutdown, frame: Some((1012, "server restarting")) };
    /// After `shutdown` when the feed restarted under a new epoch.
    pub const EPOCH: CloseRequest =
        CloseRequest { cause: Cause::Epoch, frame: Some((1012, "feed restarted: new epoch")) };
    /// After `error` 401 when no `auth` came before the deadline.
    pub const AUTH_TIMEOUT: CloseRequest =
        CloseRequest { cause: Cause::AuthTimeout, frame: Some((4001, "authentication timeout")) };
    /// After `error` 402 for a bad token in an `auth` message.
    pub const AUTH_FAILED: CloseRequest =
        CloseRequest { cause: Cause::AuthFailed, frame: Some((4002, "authentication failed")) };
    /// After `error` 401 when a live session's key was revoked.
    pub const REVOKED: CloseRequest =
        CloseRequest { cause: Cause::Revoked, frame: Some((4001, "credentials revoked")) };
    /// After `error` 401 when a live session's token expired.
    pub const EXPIRED: CloseRequest =
        CloseRequest { cause: Cause::Revoked, frame: Some((4001, "credentials expired")) };
    /// After `slow` with `"disconnecting"`.
    pub const SLOW_CLIENT: CloseRequest =
        CloseRequest { cause: Cause::SlowClient, frame: Some((4008, "slow client")) };
    /// Three times the inbound rate limit within one window.
    pub const RATE_LIMIT: CloseRequest =
        CloseRequest { cause: Cause::RateLimit, frame: Some((1008, "rate limit abuse")) };
    /// The peer answered no ping in time.
    pub const DEAD_PEER: CloseRequest = CloseRequest { cause: Cause::DeadPeer, frame: None };
    /// The peer's stream ended without a close frame.
    pub const NETWORK: CloseRequest = CloseRequest { cause: Cause::Network, frame: None };

    /// The answer to the peer's close frame: its own code, as RFC 6455
    /// asks (1005, no code, is answered without one).
    pub fn echo(code: u16) -> CloseRequest {
        CloseRequest { cause: Cause::Client, frame: Some((code, "")) }
    }

    /// The close after a framing or content error of the peer's.
    pub fn protocol(code: u16, reason: &'static str) -> CloseRequest {
        CloseRequest { cause: Cause::Protocol, frame: Some((code, reason)) }
    }

    /// How long the close may take before the socket is reset.
    pub fn grace(&self) -> Duration {
        match (self.cause, self.frame) {
            (_, None) => Duration::ZERO,
            (Cause::SlowClient, _) => SLOW_CLOSE_GRACE,
            _ => CLOSE_GRACE,
        }
    }
}

/// One WebSocket message waiting for the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Text, binary, ping or pong.
    pub op: OpCode,
    /// The message, unframed.
    pub payload: Vec<u8>,
    /// Whether it carries market data built by the shard (a peer whose
    /// socket keeps taking market data is alive; see [`Outbound::ping`]).
    data: bool,
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.payload
    }
}

/// What the socket task should do next ([`Outbound::take`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Write these bytes, already framed: the rest of a frame a direct
    /// write started (it comes before anything else), or the frames taken,
    /// compressed.
    Framed(Vec<u8>),
    /// Write the frames put in the caller's vector.
    Frames,
    /// Nothing is left to write: send this close (if it has a frame) and end.
    Close(CloseRequest),
    /// Nothing to do: wait for a wake-up.
    Idle,
}

/// What became of a data frame handed over with [`Outbound::push_data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Written whole into the socket by the caller's thread.
    Direct,
    /// Written in part; the rest waits for the socket task.
    Partial,
    /// Left for the socket task to write (queued; or compressed, which
    /// commits it to the stream, and refused whole by a full socket).
    Queued,
}

/// Where the socket stands.
#[derive(Debug)]
enum State {
    /// Nothing in flight.
    Idle,
    /// The socket task is writing frames it took at `since`.
    Writing {
        since: Instant,
        /// Frames and payload bytes in flight (counted when done).
        frames: usize,
        bytes: usize,
        /// Whether any of them carries market data.
        data: bool,
    },
    /// A direct write at `since` left the rest of a frame, already framed,
    /// which the socket task must write before anything else. `frames` and
    /// `bytes` are counted when it is done: 0 when the direct write counted
    /// the frame, which it does when the socket took part of it.
    Partial { since: Instant, rest: Vec<u8>, frames: usize, bytes: usize },
}

/// The socket a shard may write into directly: a plain TCP stream, or a
/// mock in tests.
pub trait DirectWrite {
    /// A non-blocking vectored write: how many bytes the socket took, or
    /// `WouldBlock` when it took none.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl DirectWrite for TcpStream {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }
}

/// The wake-ups a connection's tasks wait on.
#[derive(Default)]
pub struct Signals {
    /// The socket task: something was queued, or a close was requested.
    pub wake: Notify,
    /// The connection's guard: a close was requested (its deadline is set).
    pub closing: Notify,
}

/// A close under way.
#[derive(Debug, Clone, Copy)]
struct Closing {
    request: CloseRequest,
    deadline: Instant,
}

/// The write side of one connection. See the module docs.
pub struct Outbound {
    /// Messages waiting for the socket task, in `cseq` order.
    queue: VecDeque<Frame>,
    /// Payload bytes in `queue`.
    queue_bytes: usize,
    state: State,
    closing: Option<Closing>,
    /// The pong owed for the peer's latest ping (RFC 6455 5.5.3 lets a
    /// pong answer only the most recent one), written before the queue.
    pong: Option<Vec<u8>>,
    /// A ping to write before the queue.
    ping: bool,
    /// When the oldest ping that nothing has answered since was sent.
    ping_sent: Option<Instant>,
    /// The socket, for direct writes (plain TCP only).
    direct: Option<Rc<dyn DirectWrite>>,
    signals: Rc<Signals>,
    /// When the socket last took a whole write (any frame).
    last_write: Option<Instant>,
    /// When the socket last took a write that carried market data.
    last_data_write: Option<Instant>,
    /// A `slow` warning was sent for the current write.
    slow_warned: bool,
    /// The compressor, when permessage-deflate was negotiated (see the
    /// module docs).
    deflater: Option<Deflater>,
}

impl Outbound {
    /// An idle write side; `direct` is the socket for direct writes,
    /// `deflater` the compressor when permessage-deflate was negotiated.
    pub fn new(direct: Option<Rc<dyn DirectWrite>>, deflater: Option<Deflater>) -> Outbound {
        Outbound {
            queue: VecDeque::new(),
            queue_bytes: 0,
            state: State::Idle,
            closing: None,
            pong: None,
            ping: false,
            ping_sent: None,
            direct,
            signals: Rc::new(Signals::default()),
            last_write: None,
            last_data_write: None,
            slow_warned: false,
            deflater,
        }
    }

    /// The wake-ups of the connection's tasks.
    pub fn signals(&self) -> Rc<Signals> {
        self.signals.clone()
    }

    /// Queues a message (a control reply, snapshots, a heartbeat) and wakes
    /// the socket task.
    pub fn push(&mut self, op: OpCode, payload: Vec<u8>) {
        self.enqueue(Frame { op, payload, data: false });
    }

    fn enqueue(&mut self, frame: Frame) {
        self.queue_bytes += frame.payload.len();
        self.queue.push_back(frame);
        self.signals.wake.notify_one();
    }

    /// Whether the shard may build a data frame now: the socket is idle and
    /// the connection is not closing (build-on-ready: see the module docs).
    pub fn ready_for_data(&self) -> bool {
        matches!(self.state, State::Idle) && self.closing.is_none()
    }

    /// Hands over a data frame the shard has just built. It is written
    /// straight into the socket when that is safe (a direct socket, idle,
    /// nothing queued, not closing); otherwise it is queued. The socket task
    /// is woken whenever it has something to do: a queued frame, the rest
    /// of a partial write, or, after a whole direct write of a frame that
    /// filled the frame budget (`more`), the next frame of the backlog.
    ///
    /// Hot path: one `writev`, no allocation unless the socket takes the
    /// frame only in part (compressed: one write of the frame built in a
    /// buffer of its own, kept as the rest if the socket does not take it
    /// all).
    pub fn push_data(&mut self, op: OpCode, payload: Vec<u8>, more: bool, now: Instant) -> Pushed {
        if let Some(socket) = &self.direct
            && matches!(self.state, State::Idle)
            && self.closing.is_none()
            && self.queue.is_empty()
        {
            if let Some(deflater) = &mut self.deflater {
                let mut framed = Vec::with_capacity(10 + Deflater::bound(payload.len()));
                ws::compressed_frame(deflater, op, &payload, &mut framed);
                let (n, counted) = match socket.try_write_vectored(&[IoSlice::new(&framed)]) {
                    Ok(n) if n >= framed.len() => {
                        self.took_write(now, true);
                        if more {
                            self.signals.wake.notify_one();
                        }
                        return Pushed::Direct;
                    }
                    Ok(n) => (n, true),
                    // Full (or failed: the socket task meets the error). The
                    // frame is part of the compressed stream now: it goes
                    // next, whole.
                    Err(_) => (0, false),
                };
                framed.drain(..n);
                let (frames, bytes) = if counted { (0, 0) } else { (1, payload.len()) };
                self.state = State::Partial { since: now, rest: framed, frames, bytes };
                self.signals.wake.notify_one();
                return if counted { Pushed::Partial } else { Pushed::Queued };
            }
            let mut head = [0u8; 10];
            let h = ws::write_head(&mut head, op, payload.len());
            let total = h + payload.len();
            if let Ok(n) =
                socket.try_write_vectored(&[IoSlice::new(&head[..h]), IoSlice::new(&payload)])
            {
                if n >= total {
                    self.took_write(now, true);
                    if more {
                        self.signals.wake.notify_one();
                    }
                    return Pushed::Direct;
                }
                let mut rest = Vec::with_capacity(total - n);
                if n < h {
                    rest.extend_from_slice(&head[n..h]);
                }
                rest.extend_from_slice(&payload[n.saturating_sub(h)..]);
                self.state = State::Partial { since: now, rest, frames: 0, bytes: 0 };
                self.signals.wake.notify_one();
                return Pushed::Partial;
            }
            // WouldBlock (full) or an error: the socket task meets it.
        }
        self.enqueue(Frame { op, payload, data: true });
        Pushed::Queued
    }

    /// The socket task is ready to write: what it should do next. Frames go
    /// into `frames` (which the caller empties after each write, so that a
    /// frame costs no allocation of its own here), an owed ping and pong
    /// first; with compression they come back framed and compressed, in
    /// one buffer, instead.
    pub fn take(&mut self, frames: &mut Vec<Frame>, now: Instant) -> Next {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Partial { since, rest, frames, bytes } => {
                self.state = State::Writing { since, frames, bytes, data: true };
                return Next::Framed(rest);
            }
            State::Writing { .. } => unreachable!("take while a write is in flight"),
            State::Idle => {}
        }
        let start = frames.len();
        if std::mem::take(&mut self.ping) {
            frames.push(Frame { op: OpCode::Ping, payload: Vec::new(), data: false });
        }
        if let Some(payload) = self.pong.take() {
            frames.push(Frame { op: OpCode::Pong, payload, data: false });
        }
        frames.extend(self.queue.drain(..));
        self.queue_bytes = 0;
        let taken = &frames[start..];
        if !taken.is_empty() {
            self.state = State::Writing {
                since: now,
                frames: taken.len(),
                bytes: taken.iter().map(|f| f.payload.len()).sum(),
                data: taken.iter().any(|f| f.data),
            };
            if let Some(deflater) = &mut self.deflater {
                let len = taken.iter().map(|f| 10 + Deflater::bound(f.payload.len())).sum();
                let mut framed = Vec::with_capacity(len);
                ws::append_frames(&mut framed, Some(deflater), taken, |f| f.op);
                frames.truncate(start);
                return Next::Framed(framed);
            }
            return Next::Frames;
        }
        match self.closing {
            Some(c) => Next::Close(c.request),
            None => Next::Idle,
        }
    }

    /// The socket task's write finished: returns the frames and payload
    /// bytes it carried (for the counters).
    pub fn written(&mut self, now: Instant) -> (usize, usize) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Writing { frames, bytes, data, .. } => {
                self.took_write(now, data);
                (frames, bytes)
            }
            other => {
                self.state = other;
                (0, 0)
            }
        }
    }

    fn took_write(&mut self, now: Instant, data: bool) {
        self.last_write = Some(now);
        if data {
            self.last_data_write = Some(now);
        }
        self.slow_warned = false;
    }

    /// How long the write in flight has waited for the socket, if one is.
    pub fn lag(&self, now: Instant) -> Option<Duration> {
        match self.state {
            State::Idle => None,
            State::Writing { since, .. } | State::Partial { since, .. } => {
                Some(now.saturating_duration_since(since))
            }
        }
    }

    /// Bytes waiting for the socket: queued, and in flight.
    pub fn queued_bytes(&self) -> usize {
        self.queue_bytes
            + match &self.state {
                State::Idle => 0,
                State::Writing { bytes, .. } => *bytes,
                State::Partial { rest, .. } => rest.len(),
            }
    }

    /// True the first time it is asked during one stuck write: the
    /// slow-client warning is sent once per write.
    pub fn warn_slow(&mut self) -> bool {
        !std::mem::replace(&mut self.slow_warned, true)
    }

    /// When the socket last took a whole write of any frame.
    pub fn last_write(&self) -> Option<Instant> {
        self.last_write
    }

    /// The peer sent a ping: the pong replaces any pong still owed.
    pub fn pong(&mut self, payload: &[u8]) {
        self.pong = Some(payload[..payload.len().min(125)].to_vec());
        self.signals.wake.notify_one();
    }

    /// The peer sent something (any frame): it is alive.
    pub fn peer_alive(&mut self) {
        self.ping_sent = None;
    }

    /// Time for a ping, every heartbeat interval `hb`: false when a ping
    /// sent two intervals or more ago is still unanswered and the socket has
    /// taken no market data since (the peer is gone). Otherwise true, with a
    /// ping queued unless the socket took market data within the last
    /// interval.
    ///
    /// A peer that is behind on a busy stream may not read our ping for a
    /// while, but its TCP stack still takes market data: that peer is alive,
    /// and if it stops taking it the slow-client policy deals with it. So a
    /// ping to a socket that takes market data would prove nothing more
    /// (and the data keeps a proxy's idle timer from firing): it is not
    /// sent, which at 10,000 connections on 5 symbols each saves 10,000
    /// pings and their pongs a second (BENCHMARKS.md, "Pings to sockets that
    /// take market data"). (Heartbeats and pings alone do not count: a hung
    /// peer's kernel takes those for ever.)
    pub fn ping(&mut self, now: Instant, hb: Duration) -> bool {
        if self.last_data_write.is_some_and(|w| now.saturating_duration_since(w) < hb) {
            self.ping_sent = None;
            return true;
        }
        let limit = 2 * hb;
        match self.ping_sent {
            Some(since) if self.last_data_write.is_some_and(|w| w > since) => {
                self.ping_sent = Some(now);
            }
            Some(since) if now.saturating_duration_since(since) >= limit => return false,
            Some(_) => {}
            None => self.ping_sent = Some(now),
        }
        self.ping = true;
        true
    }

    /// Asks for the connection to end. The first request wins; its
    /// deadline is `now` plus its grace.
    pub fn request_close(&mut self, request: CloseRequest, now: Instant) {
        if self.closing.is_none() {
            self.closing = Some(Closing { request, deadline: now + request.grace() });
        }
        self.signals.wake.notify_one();
        self.signals.closing.notify_one();
    }

    /// The close under way, if any.
    pub fn close_request(&self) -> Option<CloseRequest> {
        self.closing.map(|c| c.request)
    }

    /// When the socket is reset if the close has not finished.
    pub fn close_deadline(&self) -> Option<Instant> {
        self.closing.map(|c| c.deadline)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;
    use crate::socket::deflate;

    /// A socket that takes at most `budget` bytes per write (0: full, so
    /// `WouldBlock`) and records what it took.
    #[derive(Default)]
    struct MockSocket {
        budget: Cell<usize>,
        writes: Cell<usize>,
        taken: RefCell<Vec<u8>>,
    }

    impl DirectWrite for MockSocket {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.budget.get() == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.writes.set(self.writes.get() + 1);
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.budget.get() - n);
                self.taken.borrow_mut().extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }
    }

    fn direct(budget: usize) -> (Rc<MockSocket>, Outbound) {
        let socket = Rc::new(MockSocket { budget: Cell::new(budget), ..MockSocket::default() });
        let out = Outbound::new(Some(socket.clone() as Rc<dyn DirectWrite>), None);
        (socket, out)
    }

    fn framed(op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut head = [0u8; 10];
        let h = ws::write_head(&mut head, op, payload.len());
        [&head[..h], payload].concat()
    }

    #[test]
    fn an_idle_socket_takes_a_data_frame_directly() {
        let (socket, mut out) = direct(1 << 20);
        let t0 = Instant::now();
        // One writev with the head and the payload; nothing left to do.
        assert_eq!(out.push_data(OpCode::Text, b"[1]".to_vec(), false, t0), Pushed::Direct);
        assert_eq!(socket.writes.get(), 1);
        assert_eq!(*socket.taken.borrow(), framed(OpCode::Text, b"[1]"));
        assert_eq!(out.take(&mut Vec::new(), t0), Next::Idle);
        // The write counts as market data taken.
        assert_eq!(out.last_data_write, Some(t0));
        assert!(out.ready_for_data());
    }

    #[test]
    fn a_frame_taken_in_part_is_finished_by_the_task_before_anything_else() {
        let (socket, mut out) = direct(5);
        let t0 = Instant::now();
        let payload = b"[0123456789]".to_vec();
        assert_eq!(out.push_data(OpCode::Text, payload.clone(), false, t0), Pushed::Partial);
        // The socket is busy: no data frame may be built, and a reply waits.
        assert!(!out.ready_for_data());
        out.push(OpCode::Text, b"[\"reply\"]".to_vec());
        let mut frames = Vec::new();
        let Next::Framed(rest) = out.take(&mut frames, t0) else { panic!("the rest comes first") };
        // The socket's part and the rest make the whole frame.
        let whole = [socket.taken.borrow().as_slice(), &rest].concat();
        assert_eq!(whole, framed(OpCode::Text, &payload));
        assert_eq!(out.written(t0), (0, 0));
        // Then the reply.
        assert_eq!(out.take(&mut frames, t0), Next::Frames);
        assert_eq!(frames[0].payload, b"[\"reply\"]");
    }

    #[test]
    fn a_full_socket_queues_and_a_busy_one_is_never_written_directly() {
        let (socket, mut out) = direct(0);
        let t0 = Instant::now();
        // Full: queued for the task.
        assert_eq!(out.push_data(OpCode::Binary, vec![1; 100], false, t0), Pushed::Queued);
        let mut frames = Vec::new();
        assert_eq!(out.take(&mut frames, t0), Next::Frames);
        // While the task writes, the shard neither builds nor writes.
        socket.budget.set(1 << 20);
        assert!(!out.ready_for_data());
        assert_eq!(out.push_data(OpCode::Binary, vec![2; 10], false, t0), Pushed::Queued);
        assert_eq!(socket.writes.get(), 0);
        assert_eq!(out.queued_bytes(), 110);
        assert_eq!(out.written(t0), (1, 100));
    }

    #[test]
    fn control_frames_go_first_and_a_pong_answers_the_latest_ping() {
        let mut out = Outbound::new(None, None);
        let t0 = Instant::now();
        out.push(OpCode::Text, b"[\"a\"]".to_vec());
        out.pong(b"one");
        out.pong(b"two");
        assert!(out.ping(t0, Duration::from_secs(1)));
        let mut frames = Vec::new();
        assert_eq!(out.take(&mut frames, t0), Next::Frames);
        let ops: Vec<OpCode> = frames.iter().map(|f| f.op).collect();
        assert_eq!(ops, [OpCode::Ping, OpCode::Pong, OpCode::Text]);
        assert_eq!(frames[1].payload, b"two");
    }

    #[test]
    fn a_peer_that_answers_no_ping_and_takes_no_data_is_dead() {
        let mut out = Outbound::new(None, None);
        let t0 = Instant::now();
        let hb = Duration::from_secs(1);
        let limit = 2 * hb;
        assert!(out.ping(t0, hb));
        // Not yet overdue: another ping, the oldest unanswered one counts.
        assert!(out.ping(t0 + hb, hb));
        assert!(!out.ping(t0 + limit, hb));
        // An answer (any frame) resets it.
        out.peer_alive();
        assert!(out.ping(t0 + limit, hb));
        // Market data taken after the ping also proves the peer alive.
        out.took_write(t0 + limit + Duration::from_millis(1), true);
        assert!(out.ping(t0 + 3 * limit, hb));
    }

    #[test]
    fn a_socket_that_took_market_data_within_the_interval_gets_no_ping() {
        let mut out = Outbound::new(None, None);
        let t0 = Instant::now();
        let hb = Duration::from_secs(1);
        let mut frames = Vec::new();
        // Data taken half an interval ago: alive, no ping.
        out.took_write(t0, true);
        assert!(out.ping(t0 + hb / 2, hb));
        assert_eq!(out.take(&mut frames, t0 + hb / 2), Next::Idle);
        // A whole interval without data: a ping goes out.
        assert!(out.ping(t0 + hb, hb));
        assert_eq!(out.take(&mut frames, t0 + hb), Next::Frames);
        assert_eq!(frames.iter().map(|f| f.op).collect::<Vec<_>>(), [OpCode::Ping]);
        // Unanswered, with no data since, for two intervals: gone.
        assert!(out.ping(t0 + 2 * hb, hb));
        assert!(!out.ping(t0 + 3 * hb, hb));
    }

    #[test]
    fn the_first_close_wins_and_comes_after_the_queue() {
        let mut out = Outbound::new(None, None);
        let t0 = Instant::now();
        out.push(OpCode::Text, b"[\"shutdown\"]".to_vec());
        out.request_close(CloseRequest::SHUTDOWN, t0);
        out.request_close(CloseRequest::NETWORK, t0);
        assert_eq!(out.close_deadline(), Some(t0 + CLOSE_GRACE));
        assert!(!out.ready_for_data());
        let mut frames = Vec::new();
        assert_eq!(out.take(&mut frames, t0), Next::Frames);
        out.written(t0);
        frames.clear();
        assert_eq!(out.take(&mut frames, t0), Next::Close(CloseRequest::SHUTDOWN));
    }

    #[test]
    fn graces_follow_the_cause() {
        assert_eq!(CloseRequest::SHUTDOWN.grace(), CLOSE_GRACE);
        assert_eq!(CloseRequest::SLOW_CLIENT.grace(), SLOW_CLOSE_GRACE);
        // Nobody to send a close frame to: no grace.
        assert_eq!(CloseRequest::DEAD_PEER.grace(), Duration::ZERO);
        assert_eq!(CloseRequest::NETWORK.grace(), Duration::ZERO);
    }

    /// A compressor as a client offering plain `permessage-deflate` gets
    /// (context takeover, the default window).
    fn deflater() -> Deflater {
        let settings = deflate::Settings { window_bits: 12 };
        Deflater::new(&deflate::negotiate(&["permessage-deflate"], &settings).unwrap())
    }

    fn compressing(budget: usize) -> (Rc<MockSocket>, Outbound) {
        let socket = Rc::new(MockSocket { budget: Cell::new(budget), ..MockSocket::default() });
        let out = Outbound::new(Some(socket.clone() as Rc<dyn DirectWrite>), Some(deflater()));
        (socket, out)
    }

    /// What the mock socket took since the last call.
    fn drain(socket: &MockSocket) -> Vec<u8> {
        std::mem::take(&mut *socket.taken.borrow_mut())
    }

    /// The messages on `wire`, as the peer reads them: opcode bits, RSV1,
    /// and the payload, inflated (RSV1) by one decompressor that keeps its
    /// window, as the client's does.
    fn read_wire(wire: &[u8]) -> Vec<(u8, bool, Vec<u8>)> {
        let mut rx = deflate::testing::Receiver::new(12);
        let (mut out, mut at) = (Vec::new(), 0);
        while at < wire.len() {
            let (b0, b1) = (wire[at], wire[at + 1]);
            assert_eq!(b0 & 0x80, 0x80, "FIN");
            let (len, head) = match b1 {
                126 => (usize::from(u16::from_be_bytes([wire[at + 2], wire[at + 3]])), 4),
                127 => panic!("no frame this large here"),
                n => (usize::from(n), 2),
            };
            let payload = &wire[at + head..at + head + len];
            let rsv1 = b0 & 0x40 != 0;
            let payload = if rsv1 { rx.receive(payload) } else { payload.to_vec() };
            out.push((b0 & 0x0f, rsv1, payload));
            at += head + len;
        }
        out
    }

    #[test]
    fn compressed_direct_writes_inflate_in_order() {
        let (socket, mut out) = compressing(1 << 20);
        let t0 = Instant::now();
        let msgs = deflate::testing::frames(50);
        for m in &msgs {
            assert_eq!(out.push_data(OpCode::Text, m.clone(), false, t0), Pushed::Direct);
        }
        // One write per frame, nothing left for the task.
        assert_eq!(socket.writes.get(), 50);
        assert_eq!(out.take(&mut Vec::new(), t0), Next::Idle);
        let wire = drain(&socket);
        let got = read_wire(&wire);
        // Every frame compressed (RSV1) and whole, in order...
        assert!(got.iter().all(|(op, rsv1, _)| *op == 0x1 && *rsv1));
        let payloads: Vec<Vec<u8>> = got.into_iter().map(|(_, _, p)| p).collect();
        assert_eq!(payloads, msgs);
        // ...and much smaller than the frames were.
        let plain: usize = msgs.iter().map(Vec::len).sum();
        assert!(wire.len() * 2 < plain, "{} of {plain}", wire.len());
    }

    #[test]
    fn a_compressed_frame_taken_in_part_is_finished_by_the_task() {
        let (socket, mut out) = compressing(9);
        let t0 = Instant::now();
        let msgs = deflate::testing::frames(3);
        assert_eq!(out.push_data(OpCode::Text, msgs[0].clone(), false, t0), Pushed::Partial);
        // A reply waits behind the rest of the frame.
        out.push(OpCode::Text, msgs[1].clone());
        let mut wire = drain(&socket);
        assert_eq!(wire.len(), 9);
        let mut frames = Vec::new();
        let Next::Framed(rest) = out.take(&mut frames, t0) else { panic!("the rest comes first") };
        wire.extend_from_slice(&rest);
        // The direct write counted the frame.
        assert_eq!(out.written(t0), (0, 0));
        // Then the reply, compressed by the task after the frame before it.
        let Next::Framed(reply) = out.take(&mut frames, t0) else { panic!("the reply") };
        assert!(frames.is_empty(), "handed over framed, not as frames");
        wire.extend_from_slice(&reply);
        assert_eq!(out.written(t0), (1, msgs[1].len()));
        // Idle again: the next frame goes direct.
        socket.budget.set(1 << 20);
        assert_eq!(out.push_data(OpCode::Text, msgs[2].clone(), false, t0), Pushed::Direct);
        wire.extend(drain(&socket));
        let payloads: Vec<Vec<u8>> = read_wire(&wire).into_iter().map(|(_, _, p)| p).collect();
        assert_eq!(payloads, msgs);
    }

    #[test]
    fn a_full_socket_gets_the_compressed_frame_whole_from_the_task() {
        let (socket, mut out) = compressing(0);
        let t0 = Instant::now();
        let msgs = deflate::testing::frames(2);
        // Refused whole: compressed already, so it is the next thing to
        // write, and the socket task writes (and counts) it.
        assert_eq!(out.push_data(OpCode::Binary, msgs[0].clone(), false, t0), Pushed::Queued);
        assert!(!out.ready_for_data());
        assert!(out.queued_bytes() > 0);
        let Next::Framed(mut wire) = out.take(&mut Vec::new(), t0) else { panic!("the frame") };
        assert_eq!(out.written(t0), (1, msgs[0].len()));
        socket.budget.set(1 << 20);
        assert_eq!(out.push_data(OpCode::Binary, msgs[1].clone(), false, t0), Pushed::Direct);
        wire.extend(drain(&socket));
        let got = read_wire(&wire);
        assert_eq!(got, vec![(0x2, true, msgs[0].clone()), (0x2, true, msgs[1].clone())]);
    }

    #[test]
    fn the_task_compresses_what_it_takes_but_never_control_frames() {
        let mut out = Outbound::new(None, Some(deflater()));
        let t0 = Instant::now();
        let msgs = deflate::testing::frames(3);
        for m in &msgs {
            out.push(OpCode::Text, m.clone());
        }
        out.pong(b"pong payload");
        assert!(out.ping(t0, Duration::from_secs(1)));
        assert_eq!(out.push_data(OpCode::Binary, vec![7; 300], false, t0), Pushed::Queued);
        let mut frames = Vec::new();
        let Next::Framed(wire) = out.take(&mut frames, t0) else { panic!("framed") };
        assert!(frames.is_empty());
        // Six frames and their payload bytes (uncompressed), counted when
        // the write is done.
        let bytes = msgs.iter().map(Vec::len).sum::<usize>() + 12 + 300;
        assert_eq!(out.written(t0), (6, bytes));
        let mut want = vec![(0x9, false, Vec::new()), (0xA, false, b"pong payload".to_vec())];
        want.extend(msgs.iter().map(|m| (0x1, true, m.clone())));
        want.push((0x2, true, vec![7; 300]));
        assert_eq!(read_wire(&wire), want);
    }

    #[test]
    fn lag_counts_from_the_start_of_the_write_in_flight() {
        let (_socket, mut out) = direct(1);
        let t0 = Instant::now();
        assert_eq!(out.lag(t0), None);
        out.push_data(OpCode::Text, b"[12]".to_vec(), false, t0);
        let later = t0 + Duration::from_secs(3);
        assert_eq!(out.lag(later), Some(Duration::from_secs(3)));
        // The task takes the rest: the write is still the same one.
        out.take(&mut Vec::new(), later);
        assert_eq!(out.lag(later), Some(Duration::from_secs(3)));
        assert!(out.warn_slow());
        assert!(!out.warn_slow());
        out.written(later);
        assert_eq!(out.lag(later), None);
        assert!(out.warn_slow());
    }
}
