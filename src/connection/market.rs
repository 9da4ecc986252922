//! A market-data session on an upgraded socket: a reader task that applies
//! the client's requests to the shard, a writer loop that writes what the
//! session's write side ([`crate::socket::outbound::Outbound`]) holds, and the guard that bounds how
//! long the connection may take to close.
//!
//! Every way a session ends goes through one place: a [`CloseRequest`] on
//! its write side, with a deadline (the request's grace). The writer loop
//! writes what is queued, then the close frame; [`run`] races it against
//! the deadline, and when the deadline comes first the socket is reset
//! (`SO_LINGER` 0) and dropped, whatever the loop was waiting for. So a
//! peer that stops reading, stops answering or never closes cannot hold a
//! socket past its close's grace.
//!
//! Both loops are generic over the socket's halves ([`ws::Reader`],
//! [`ws::Writer`]), so tests drive them over an in-memory pipe on tokio's
//! paused clock.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout_at};

use super::ConnContext;
use crate::auth::SessionAuth;
use crate::protocol::json::Format;
use crate::socket::deflate::{Agreement, Deflater};
use crate::socket::outbound::{CloseRequest, DirectWrite, Frame, Next, Signals};
use crate::socket::shared::SessionStream;
use crate::socket::ws::{self, Incoming, ReadError};
use crate::writer::metrics::ShardCounters;
use crate::writer::shard::Shard;

const RATE_LIMITED: &str = "rate limited: too many messages per second";
const BINARY_FROM_CLIENT: &str = "binary frames are not accepted; send requests as JSON text";

/// Runs a session on an upgraded socket (plain TCP or TLS). `auth` is where
/// it stands with authentication after the upgrade; `peer` is for the audit
/// log; `deflate` the permessage-deflate agreement, if any (the reader then
/// inflates compressed messages, and the session's write side compresses).
pub async fn run<S>(
    stream: S,
    rest: Vec<u8>,
    format: Format,
    auth: SessionAuth,
    peer: Option<SocketAddr>,
    deflate: Option<Agreement>,
    ctx: ConnContext,
) where
    S: SessionStream,
{
    let max = ctx.shard.borrow().config().max_message_bytes;
    let (rd, wr, socket) = stream.halves();
    let limits = ws::Limits { max_message: max, max_frame: max };
    let reader = ws::Reader::new(rd, &rest, limits).inflating(deflate.is_some());
    drop(rest);
    let uid = ctx.http.next_session.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let direct = socket.direct().map(|s| s as Rc<dyn DirectWrite>);
    let deflater = deflate.as_ref().map(Deflater::new);
    let (slot, signals) =
        ctx.shard.borrow_mut().open_session_as(format, uid, auth, peer, direct, deflater);
    let shard = ctx.shard.clone();
    let hb = shard.borrow().config().hb;
    // The reader is a task of its own, so that waking the writer for every
    // batch does not poll the socket for reading too.
    let mut reader =
        tokio::task::spawn_local(read_loop(reader, ReaderEnd { shard: shard.clone(), slot, uid }));
    let unread = || socket.has_unread();
    let write = write_loop(ws::Writer::new(wr), &shard, slot, &signals, hb, ctx.shutdown, unread);
    let ended = guarded(write, &shard, slot, &signals).await;
    match ended {
        // The close frame is out: the peer's reply ends the reader, within
        // what is left of the grace.
        Ended::Closed => {
            let deadline = shard.borrow().close_deadline(slot);
            if let Some(deadline) = deadline {
                let _ = timeout_at(deadline, &mut reader).await;
            }
        }
        Ended::OutOfTime | Ended::Dropped => {
            socket.reset();
            ShardCounters::add(&shard.borrow().counters().close_resets, 1);
        }
        Ended::Failed => {}
    }
    reader.abort();
    shard.borrow_mut().close_session(slot);
}

/// How a session's writing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The close frame was written.
    Closed,
    /// The close ended without a frame: nobody is there to read one.
    Dropped,
    /// A write failed: the socket is already gone.
    Failed,
    /// The close's deadline passed first.
    OutOfTime,
}

/// Runs `write` until it ends or the session's close deadline passes,
/// whichever comes first.
pub async fn guarded(
    write: impl Future<Output = Ended>,
    shard: &RefCell<Shard>,
    slot: u32,
    signals: &Signals,
) -> Ended {
    tokio::select! {
        ended = write => ended,
        () = close_deadline(shard, slot, signals) => Ended::OutOfTime,
    }
}

/// Returns when the session's close deadline has passed (never before a
/// close is requested).
async fn close_deadline(shard: &RefCell<Shard>, slot: u32, signals: &Signals) {
    loop {
        let deadline = shard.borrow().close_deadline(slot);
        match deadline {
            Some(deadline) => return sleep_until(deadline).await,
            // A permit stored by `notify_one` is not lost if the request
            // came before this wait started.
            None => signals.closing.notified().await,
        }
    }
}

/// Reads client messages until the peer closes or the connection fails.
/// A ping is answered by the writer loop (see
/// [`crate::socket::outbound::Outbound::pong`]); a close
/// is answered with the peer's own code, and ends the reading.
pub async fn read_loop<R>(mut reader: ws::Reader<R>, end: ReaderEnd)
where
    R: AsyncRead + Unpin,
{
    let (shard, slot) = (end.shard.clone(), end.slot);
    loop {
        let msg = reader.next().await;
        if msg.is_ok()
            && let Some(out) = shard.borrow_mut().outbound(slot)
        {
            out.peer_alive();
        }
        match msg {
            Ok(Incoming::Text(text)) => {
                let mut s = shard.borrow_mut();
                let parsed = crate::protocol::request::parse(text);
                if !s.admit_message(slot, Instant::now()) {
                    let id = match &parsed {
                        Ok(req) => req.id(),
                        Err(bad) => bad.id,
                    };
                    s.send_error(slot, id, 429, RATE_LIMITED, true);
                    continue;
                }
                match parsed {
                    Ok(req) => s.handle(slot, req),
                    Err(bad) => s.send_error(slot, bad.id, 400, &bad.msg, false),
                }
            }
            Ok(Incoming::Binary(_)) => {
                let mut s = shard.borrow_mut();
                if s.admit_message(slot, Instant::now()) {
                    s.send_error(slot, None, 400, BINARY_FROM_CLIENT, false);
                } else {
                    s.send_error(slot, None, 429, RATE_LIMITED, true);
                }
            }
            Ok(Incoming::Ping(payload)) => {
                if let Some(out) = shard.borrow_mut().outbound(slot) {
                    out.pong(payload);
                }
            }
            Ok(Incoming::Pong(_)) => {}
            Ok(Incoming::Close(code, _)) => {
                shard.borrow_mut().request_close(slot, CloseRequest::echo(code));
                break;
            }
            Err(e) => {
                if let Some(code) = e.close_code() {
                    let mut s = shard.borrow_mut();
                    if matches!(e, ReadError::TooLarge) {
                        s.send_error(slot, None, 413, "message too large", false);
                    }
                    s.request_close(slot, CloseRequest::protocol(code, e.close_reason()));
                }
                break;
            }
        }
    }
    // The peer is gone or being closed: `end`, dropped here, makes sure the
    // session closes.
}

/// Dropped when the reader stops, however it stops (a panic included):
/// asks for the session to close (the peer's stream ended) unless a close
/// is already under way. An abort of the reader after the session closed
/// does nothing, even if its slot was given to a new session meanwhile.
pub struct ReaderEnd {
    /// The session's shard.
    pub shard: Rc<RefCell<Shard>>,
    /// The session's slot.
    pub slot: u32,
    /// The session's server-wide id.
    pub uid: u64,
}

impl Drop for ReaderEnd {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shard.try_borrow_mut()
            && s.session_uid(self.slot) == Some(self.uid)
        {
            s.request_close(self.slot, CloseRequest::NETWORK);
        }
    }
}

/// Writes what the session's write side holds (the data frames the shard
/// builds when the socket is ready, replies, pings, pongs, heartbeats),
/// and ends with the close. Pings every `hb` unless the socket took market
/// data in that interval; a heartbeat after `hb` without a write; a peer
/// that answers no ping for two intervals, takes no market data and has
/// sent nothing still unread (`unread`) is dropped.
pub async fn write_loop<W>(
    mut writer: ws::Writer<W>,
    shard: &RefCell<Shard>,
    slot: u32,
    signals: &Signals,
    hb: Duration,
    mut shutdown: watch::Receiver<bool>,
    unread: impl Fn() -> bool,
) -> Ended
where
    W: AsyncWrite + Unpin,
{
    let start = Instant::now();
    let mut next_ping = start + hb;
    let mut shutting_down = *shutdown.borrow();
    // One timer for the heartbeat and the ping, made once: moving it later
    // only updates its deadline.
    let timer = tokio::time::sleep_until(next_ping);
    tokio::pin!(timer);
    // The frames of one write, emptied after each.
    let mut frames: Vec<Frame> = Vec::new();
    loop {
        let now = Instant::now();
        if now >= next_ping {
            next_ping = now + hb;
            let alive = shard.borrow_mut().ping(slot, now, hb);
            if !alive {
                if unread() {
                    // The peer's answer is in the socket, not yet read: a
                    // shard busy with a connect storm has not run this
                    // session's reader. It is alive; ping again.
                    if let Some(out) = shard.borrow_mut().outbound(slot) {
                        out.peer_alive();
                    }
                    shard.borrow_mut().ping(slot, now, hb);
                } else {
                    shard.borrow_mut().drop_dead_peer(slot);
                    DeadPeer { slot }.emit();
                    return Ended::Dropped;
                }
            }
        }
        if shutting_down {
            shard.borrow_mut().shutdown_session(slot);
        }
        frames.clear();
        let next = shard.borrow_mut().take_outgoing(slot, &mut frames, now);
        let wrote = match next {
            Next::Framed(bytes) => writer.send_raw(&bytes).await,
            Next::Frames => writer.send_each(&frames, |f: &Frame| f.op).await,
            Next::Close(close) => {
                let Some((code, reason)) = close.frame else { return Ended::Dropped };
                return match writer.close(code, reason).await {
                    Ok(()) => Ended::Closed,
                    Err(_) => Ended::Failed,
                };
            }
            Next::Idle => {
                let idle_at = shard.borrow().last_write(slot).unwrap_or(start).max(start) + hb;
                timer.as_mut().reset(idle_at.min(next_ping));
                tokio::select! {
                    _ = signals.wake.notified() => {}
                    // The ping is sent at the top of the loop.
                    () = &mut timer => {
                        if Instant::now() >= idle_at {
                            shard.borrow_mut().heartbeat(slot);
                        }
                    }
                    changed = shutdown.changed(), if !shutting_down => {
                        shutting_down = changed.is_err() || *shutdown.borrow();
                    }
                }
                continue;
            }
        };
        if wrote.is_err() {
            return Ended::Failed;
        }
        shard.borrow_mut().written(slot, Instant::now());
    }
}

/// A peer that answered no ping for two heartbeat intervals was dropped.
struct DeadPeer {
    slot: u32,
}

impl DeadPeer {
    fn emit(self) {
        tracing::debug!(slot = self.slot, "peer answered no ping for two intervals; dropped");
    }
}

#[cfg(test)]
mod tests {
    //! The write loop and its guard on tokio's paused clock, over a mock
    //! socket that takes a set number of bytes and then stalls, as a peer
    //! that stops reading does.

    use std::cell::Cell;
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use tokio::task::LocalSet;

    use super::*;
    use crate::protocol::request::{Mode, Request};
    use crate::tick::{Channels, Price, SymbolId, Tick};
    use crate::writer::shard::ShardConfig;

    /// What the mock socket took, and how much more it will take.
    #[derive(Default)]
    struct Wire {
        taken: RefCell<Vec<u8>>,
        writes: Cell<usize>,
        /// Bytes it will still take; `usize::MAX`: as many as come.
        budget: Cell<usize>,
        waker: RefCell<Option<Waker>>,
    }

    impl Wire {
        fn open(budget: usize) -> Rc<Wire> {
            Rc::new(Wire { budget: Cell::new(budget), ..Wire::default() })
        }

        /// The messages written so far: (opcode, payload), frames unmasked.
        fn frames(&self) -> Vec<(u8, Vec<u8>)> {
            self.frames_rsv1().into_iter().map(|(op, _, p)| (op, p)).collect()
        }

        /// [`Wire::frames`], with whether each came compressed (RSV1).
        fn frames_rsv1(&self) -> Vec<(u8, bool, Vec<u8>)> {
            let bytes = self.taken.borrow();
            let (mut out, mut at) = (Vec::new(), 0);
            while at + 2 <= bytes.len() {
                let op = bytes[at] & 0x0f;
                let (len, head) = match bytes[at + 1] {
                    126 => (u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize, 4),
                    127 => (
                        u64::from_be_bytes(bytes[at + 2..at + 10].try_into().unwrap()) as usize,
                        10,
                    ),
                    n => (n as usize, 2),
                };
                if at + head + len > bytes.len() {
                    break;
                }
                let rsv1 = bytes[at] & 0x40 != 0;
                out.push((op, rsv1, bytes[at + head..at + head + len].to_vec()));
                at += head + len;
            }
            out
        }

        /// JSON messages of every text frame, flattened.
        fn messages(&self) -> Vec<serde_json::Value> {
            self.frames()
                .into_iter()
                .filter(|(op, _)| *op == 1)
                .flat_map(|(_, p)| match serde_json::from_slice(&p) {
                    Ok(serde_json::Value::Array(v)) => v,
                    other => panic!("not a JSON array: {other:?}"),
                })
                .collect()
        }
    }

    struct MockSocket(Rc<Wire>);

    impl AsyncWrite for MockSocket {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let w = &self.0;
            let n = buf.len().min(w.budget.get());
            if n == 0 {
                *w.waker.borrow_mut() = Some(cx.waker().clone());
                return Poll::Pending;
            }
            w.budget.set(w.budget.get().saturating_sub(n));
            w.writes.set(w.writes.get() + 1);
            w.taken.borrow_mut().extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    const HB: Duration = Duration::from_millis(1000);

    /// A shard with one session (no direct socket: every write goes
    /// through the loop), and that session's slot and signals.
    fn session(config: ShardConfig) -> (Rc<RefCell<Shard>>, u32, Rc<Signals>) {
        let mut shard = Shard::for_tests(4, ShardConfig { hb: HB, ..config });
        let (slot, signals) = shard.open_session(Format::default(), 1);
        (Rc::new(RefCell::new(shard)), slot, signals)
    }

    fn subscribe(shard: &RefCell<Shard>, slot: u32, max_hz: Option<f64>) {
        let req = Request::Subscribe {
            id: None,
            symbols: vec!["S0".into()],
            channels: Channels::BOTH,
            mode: Mode::Latest,
            max_hz,
            snapshot: false,
            resume: None,
        };
        shard.borrow_mut().handle(slot, req);
    }

    /// A quote of S0 with `seq`, handed to the shard as the pump does.
    fn quote(shard: &RefCell<Shard>, seq: u64) {
        let t = Tick { seq, ..Tick::quote(SymbolId(0), seq, Price(100), 1, Price(101), 1) };
        let mut s = shard.borrow_mut();
        s.dispatch(&t);
        s.end_of_batch();
    }

    /// Runs the write loop under its guard on `wire` until it ends, with
    /// the pump's housekeeping (the slow-client check every 100 ms).
    async fn drive(
        shard: Rc<RefCell<Shard>>,
        slot: u32,
        signals: Rc<Signals>,
        wire: Rc<Wire>,
    ) -> (Ended, Instant) {
        drive_with(shard, slot, signals, wire, || false).await
    }

    /// [`drive`], with `unread` telling whether the peer's bytes wait unread.
    async fn drive_with(
        shard: Rc<RefCell<Shard>>,
        slot: u32,
        signals: Rc<Signals>,
        wire: Rc<Wire>,
        unread: impl Fn() -> bool,
    ) -> (Ended, Instant) {
        let (_tx, shutdown) = watch::channel(false);
        let housekeeping = {
            let shard = shard.clone();
            tokio::task::spawn_local(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    shard.borrow_mut().check_slow(Instant::now());
                }
            })
        };
        let writer = ws::Writer::new(MockSocket(wire));
        let write = write_loop(writer, &shard, slot, &signals, HB, shutdown, unread);
        let ended = guarded(write, &shard, slot, &signals).await;
        housekeeping.abort();
        (ended, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_is_reset_at_the_lag_limit() {
        LocalSet::new()
            .run_until(async {
                let config =
                    ShardConfig { lag_limit: Duration::from_secs(5), ..ShardConfig::default() };
                let (shard, slot, signals) = session(config);
                subscribe(&shard, slot, None);
                // The socket takes the welcome and a little more, then
                // nothing: the first data frame never completes.
                let wire = Wire::open(300);
                let start = Instant::now();
                let feed = {
                    let shard = shard.clone();
                    tokio::task::spawn_local(async move {
                        for seq in 1.. {
                            quote(&shard, seq);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    })
                };
                let (ended, at) = drive(shard.clone(), slot, signals, wire.clone()).await;
                feed.abort();
                assert_eq!(ended, Ended::OutOfTime);
                // Closed at the lag limit (checked every 100 ms), reset 50 ms
                // later: the stuck write never lets the close frame out.
                let took = at - start;
                assert!(
                    took >= Duration::from_secs(5) && took <= Duration::from_millis(5200),
                    "{took:?}"
                );
                let close = shard.borrow_mut().outbound(slot).unwrap().close_request();
                assert_eq!(close, Some(CloseRequest::SLOW_CLIENT));
                // Build-on-ready: one data frame was built for the stuck
                // socket, however many quotes came (they conflate).
                assert!(wire.writes.get() <= 3, "{} writes", wire.writes.get());
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_gets_heartbeats_and_a_silent_peer_is_dropped() {
        LocalSet::new()
            .run_until(async {
                let (shard, slot, signals) = session(ShardConfig::default());
                let wire = Wire::open(usize::MAX);
                let start = Instant::now();
                let (ended, at) = drive(shard.clone(), slot, signals, wire.clone()).await;
                // Nothing ever answers the pings: dropped without a close
                // frame after two intervals (pings go every interval; the
                // check comes with the third).
                assert_eq!(ended, Ended::Dropped);
                assert_eq!(at - start, 3 * HB);
                let kinds: Vec<String> = wire
                    .messages()
                    .iter()
                    .map(|m| m["type"].as_str().unwrap().to_string())
                    .collect();
                // welcome, status, then one heartbeat per idle interval.
                assert_eq!(kinds, ["welcome", "status", "heartbeat", "heartbeat"]);
                let pings = wire.frames().iter().filter(|(op, _)| *op == 0x9).count();
                assert_eq!(pings, 2);
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_whose_answer_waits_unread_is_not_dropped() {
        LocalSet::new()
            .run_until(async {
                // The shard never reads the pongs (a connect storm keeps it
                // busy), but they are in the socket: the peer stays.
                let (shard, slot, signals) = session(ShardConfig::default());
                let wire = Wire::open(usize::MAX);
                let closer = {
                    let shard = shard.clone();
                    tokio::task::spawn_local(async move {
                        tokio::time::sleep(10 * HB).await;
                        shard.borrow_mut().shutdown_session(slot);
                    })
                };
                let (ended, _) = drive_with(shard.clone(), slot, signals, wire, || true).await;
                closer.await.unwrap();
                assert_eq!(ended, Ended::Closed);
                let dead =
                    shard.borrow().counters().dead_peers.load(std::sync::atomic::Ordering::Relaxed);
                assert_eq!(dead, 0);
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_close_the_peer_cannot_take_ends_at_the_grace() {
        LocalSet::new()
            .run_until(async {
                let (shard, slot, signals) = session(ShardConfig::default());
                // Enough for the welcome and status only.
                let wire = Wire::open(200);
                let closer = {
                    let shard = shard.clone();
                    tokio::task::spawn_local(async move {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        shard.borrow_mut().shutdown_session(slot);
                        Instant::now()
                    })
                };
                let (ended, at) = drive(shard.clone(), slot, signals, wire).await;
                let asked = closer.await.unwrap();
                assert_eq!(ended, Ended::OutOfTime);
                assert_eq!(at - asked, crate::socket::outbound::CLOSE_GRACE);
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_close_writes_the_queue_then_the_close_frame() {
        LocalSet::new()
            .run_until(async {
                let (shard, slot, signals) = session(ShardConfig::default());
                let wire = Wire::open(usize::MAX);
                shard.borrow_mut().shutdown_session(slot);
                let (ended, _) = drive(shard, slot, signals, wire.clone()).await;
                assert_eq!(ended, Ended::Closed);
                let frames = wire.frames();
                let (op, payload) = frames.last().unwrap();
                assert_eq!((*op, &payload[..2]), (0x8, &1012u16.to_be_bytes()[..]));
                let last = wire.messages().pop().unwrap();
                assert_eq!(last["type"], "shutdown");
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_compressing_session_sends_every_message_compressed_in_cseq_order() {
        LocalSet::new()
            .run_until(async {
                let mut shard =
                    Shard::for_tests(4, ShardConfig { hb: HB, ..ShardConfig::default() });
                let settings = crate::socket::deflate::Settings { window_bits: 12 };
                let agreement =
                    crate::socket::deflate::negotiate(&["permessage-deflate"], &settings).unwrap();
                let deflater = Some(Deflater::new(&agreement));
                let (slot, signals) = shard.open_session_as(
                    Format::default(),
                    1,
                    SessionAuth::Off,
                    None,
                    None,
                    deflater,
                );
                let shard = Rc::new(RefCell::new(shard));
                subscribe(&shard, slot, None);
                let wire = Wire::open(usize::MAX);
                let feed = {
                    let shard = shard.clone();
                    tokio::task::spawn_local(async move {
                        for seq in 1..=50 {
                            quote(&shard, seq);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        tokio::time::sleep(2 * HB).await;
                        shard.borrow_mut().shutdown_session(slot);
                    })
                };
                let (ended, _) = drive(shard, slot, signals, wire.clone()).await;
                feed.await.unwrap();
                assert_eq!(ended, Ended::Closed);
                // The peer's one decompressor reads every data frame, in
                // order; pings and the close come uncompressed.
                let mut rx = crate::socket::deflate::testing::Receiver::new(12);
                let mut msgs: Vec<serde_json::Value> = Vec::new();
                for (op, rsv1, payload) in wire.frames_rsv1() {
                    match op {
                        0x1 => {
                            assert!(rsv1, "text frames are compressed");
                            let text = rx.receive(&payload);
                            let serde_json::Value::Array(v) =
                                serde_json::from_slice(&text).unwrap()
                            else {
                                panic!("a JSON array")
                            };
                            msgs.extend(v);
                        }
                        _ => assert!(!rsv1, "control frame {op:#x} compressed"),
                    }
                }
                let kinds = |k: &str| msgs.iter().filter(|m| m["type"] == k).count();
                assert_eq!((kinds("welcome"), kinds("status"), kinds("shutdown")), (1, 1, 1));
                assert!(kinds("q") > 0 && kinds("heartbeat") > 0, "{msgs:?}");
                // cseq rises by one per message after the welcome.
                for (i, m) in msgs.iter().enumerate().skip(1) {
                    assert_eq!(m["cseq"], i as u64, "{m}");
                }
                let frames = wire.frames();
                assert_eq!(frames.last().unwrap().0, 0x8, "ends with the close frame");
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn max_hz_holds_updates_back_on_the_paused_clock() {
        LocalSet::new()
            .run_until(async {
                let (shard, slot, signals) = session(ShardConfig::default());
                subscribe(&shard, slot, Some(2.0));
                let wire = Wire::open(usize::MAX);
                // 100 quotes a second for 2 s, with the pump's throttle.
                let feed = {
                    let shard = shard.clone();
                    tokio::task::spawn_local(async move {
                        for seq in 1..=200 {
                            quote(&shard, seq);
                            let now = Instant::now();
                            if shard.borrow_mut().run_throttle(now).is_some() {
                                shard.borrow_mut().end_of_batch();
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        shard.borrow_mut().request_close(slot, CloseRequest::SHUTDOWN);
                    })
                };
                drive(shard, slot, signals, wire.clone()).await;
                feed.await.unwrap();
                let quotes: Vec<(u64, u64)> = wire
                    .messages()
                    .iter()
                    .filter(|m| m["type"] == "q")
                    .map(|m| (m["seq"].as_u64().unwrap(), m["cf"].as_u64().unwrap_or(1)))
                    .collect();
                // At most 2 a second over 2 s (the first goes at once), and
                // `cf` accounts for every quote in between.
                assert!((4..=5).contains(&quotes.len()), "{quotes:?}");
                let mut last = 0;
                for (seq, cf) in &quotes {
                    assert_eq!(seq - last, *cf, "{quotes:?}");
                    last = *seq;
                }
            })
            .await;
    }
}
