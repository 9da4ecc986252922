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
use crate::socket::outbound::{CloseRequest, DirectWrite, Frame, Next, Signals};
use crate::socket::shared::SessionStream;
use crate::socket::ws::{self, Incoming, ReadError};
use crate::writer::metrics::ShardCounters;
use crate::writer::shard::Shard;

const RATE_LIMITED: &str = "rate limited: too many messages per second";
const BINARY_FROM_CLIENT: &str = "binary frames are not accepted; send requests as JSON text";

/// Runs a session on an upgraded socket (plain TCP or TLS). `auth` is where
/// it stands with authentication after the upgrade; `peer` is for the audit
/// log.
pub async fn run<S>(
    stream: S,
    rest: Vec<u8>,
    format: Format,
    auth: SessionAuth,
    peer: Option<SocketAddr>,
    ctx: ConnContext,
) where
    S: SessionStream,
{
    let max = ctx.shard.borrow().config().max_message_bytes;
    let (rd, wr, socket) = stream.halves();
    let limits = ws::Limits { max_message: max, max_frame: max };
    let reader = ws::Reader::new(rd, &rest, limits);
    drop(rest);
    let uid = ctx.http.next_session.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let direct = socket.direct().map(|s| s as Rc<dyn DirectWrite>);
    let (slot, signals) = ctx.shard.borrow_mut().open_session_as(format, uid, auth, peer, direct);
    let shard = ctx.shard.clone();
    let hb = shard.borrow().config().hb;
    // The reader is a task of its own, so that waking the writer for every
    // batch does not poll the socket for reading too.
    let mut reader =
        tokio::task::spawn_local(read_loop(reader, ReaderEnd { shard: shard.clone(), slot, uid }));
    let ended = guarded(
        write_loop(ws::Writer::new(wr), &shard, slot, &signals, hb, ctx.shutdown),
        &shard,
        slot,
        &signals,
    )
    .await;
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
                let parsed = s.parse_request(text);
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
/// and ends with the close. Pings every `hb`; a heartbeat after `hb`
/// without a write; a peer that answers no ping for two intervals (and
/// takes no market data) is dropped.
pub async fn write_loop<W>(
    mut writer: ws::Writer<W>,
    shard: &RefCell<Shard>,
    slot: u32,
    signals: &Signals,
    hb: Duration,
    mut shutdown: watch::Receiver<bool>,
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
            if !shard.borrow_mut().ping(slot, now, 2 * hb) {
                shard.borrow_mut().request_close(slot, CloseRequest::DEAD_PEER);
                DeadPeer { slot }.emit();
                return Ended::Dropped;
            }
        }
        if shutting_down {
            shard.borrow_mut().shutdown_session(slot);
        }
        frames.clear();
        let next = shard.borrow_mut().take_outgoing(slot, &mut frames, now);
        let wrote = match next {
            Next::Rest(rest) => writer.send_raw(&rest).await,
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
