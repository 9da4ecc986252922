//! One WebSocket session: a reader half that applies control requests to
//! the shard, and a writer half that writes what the shard encoded.
//!
//! The reader is a task of its own; the writer runs in the connection's
//! task. Both are generic over the socket's halves ([`ws::Reader`],
//! [`ws::Writer`]), so tests can drive them over an in-memory pipe. The
//! writer takes everything queued for its session in one go and writes it
//! with one vectored write: one system call per wake-up, however many
//! frames. While it waits for a flush, the shard keeps
//! conflating this session's updates instead of queueing bytes (see
//! [`crate::writer::subscriber`]).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::timeout;

use super::ConnContext;
use crate::auth::SessionAuth;
use crate::protocol::binary;
use crate::protocol::json::Format;
use crate::socket::shared::SessionStream;
use crate::socket::ws::{self, Incoming, OpCode, ReadError};
use crate::writer::shard::Shard;
use crate::writer::subscriber::{CloseRequest, Ctl};

const RATE_LIMITED: &str = "rate limited: too many messages per second";
const BINARY_FROM_CLIENT: &str = "binary frames are not accepted; send requests as JSON text";

/// How long a closing session waits for its last frames and the peer's close.
const CLOSE_GRACE: Duration = Duration::from_millis(1000);

/// The pong owed for the peer's latest ping (RFC 6455 5.5.3 lets a pong
/// answer only the most recent ping), handed from the reader to the writer.
#[derive(Clone, Copy)]
struct Pong {
    payload: [u8; 125],
    len: u8,
}

impl Pong {
    fn new(ping: &[u8]) -> Pong {
        let mut payload = [0u8; 125];
        let len = ping.len().min(125);
        payload[..len].copy_from_slice(&ping[..len]);
        Pong { payload, len: len as u8 }
    }
}

/// What the reader half tells the writer half, besides the shard.
#[derive(Default)]
pub struct PeerSignals {
    pong: Cell<Option<Pong>>,
}

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
    let (rd, wr, direct) = stream.halves();
    let limits = ws::Limits { max_message: max, max_frame: max };
    let reader = ws::Reader::new(rd, &rest, limits);
    drop(rest);
    let uid = ctx.http.next_session.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let (slot, ctl) = ctx.shard.borrow_mut().open_session_as(format, uid, auth, peer);
    if let Some(socket) = direct {
        ctx.shard.borrow_mut().set_direct(slot, socket);
    }
    let hb = ctx.shard.borrow().config().hb;
    let shard = ctx.shard.clone();
    let signals = Rc::new(PeerSignals::default());
    // The reader is a task of its own, so that waking the writer for every
    // batch does not poll the socket for reading too.
    let mut reader = tokio::task::spawn_local(read_half(
        reader,
        ReaderEnd { shard: ctx.shard.clone(), slot, uid },
        ctl.clone(),
        signals.clone(),
    ));
    let writer = ws::Writer::new(wr);
    // The writer alone decides when the connection ends: a reader that
    // stops always asks it to close first (see `read_half`), and the
    // writer bounds a close by `CLOSE_GRACE` itself. Waiting on the
    // reader's handle too would poll it at every frame the writer is
    // woken for.
    let graceful =
        write_half(writer, ctx.shard.clone(), slot, ctl, signals, hb, ctx.shutdown.clone()).await;
    // The server closed: wait a little for the peer's close reply.
    if graceful {
        let _ = timeout(CLOSE_GRACE, &mut reader).await;
    }
    reader.abort();
    shard.borrow_mut().close_session(slot);
}

/// Reads client messages until the peer closes or the connection fails.
/// A ping is answered by the writer half (through `signals`); a close is
/// answered with the peer's own code, and ends the reading.
pub async fn read_half<R>(
    mut reader: ws::Reader<R>,
    end: ReaderEnd,
    ctl: Rc<Ctl>,
    signals: Rc<PeerSignals>,
) where
    R: AsyncRead + Unpin,
{
    let (shard, slot) = (end.shard.clone(), end.slot);
    loop {
        let msg = reader.next().await;
        if msg.is_ok() {
            shard.borrow_mut().peer_alive(slot);
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
                signals.pong.set(Some(Pong::new(payload)));
                ctl.wake.notify_one();
            }
            Ok(Incoming::Pong(_)) => {}
            Ok(Incoming::Close(code, _)) => {
                let mut s = shard.borrow_mut();
                s.peer_closed(slot, code);
                s.request_close(slot, CloseRequest { code, reason: "", abort: false });
                break;
            }
            Err(e) => {
                if let Some(code) = e.close_code() {
                    let mut s = shard.borrow_mut();
                    if matches!(e, ReadError::TooLarge) {
                        s.send_error(slot, None, 413, "message too large", false);
                    }
                    s.request_close(
                        slot,
                        CloseRequest { code, reason: e.close_reason(), abort: false },
                    );
                }
                break;
            }
        }
    }
    // The peer is gone or being closed: `end`, dropped here, makes sure the
    // writer half ends too.
}

/// Dropped when the reader stops, however it stops (a panic included):
/// asks the writer to close, since the connection's task waits on the
/// writer alone. An abort of the reader after the session closed does
/// nothing, even if its slot was given to a new session meanwhile.
pub struct ReaderEnd {
    shard: Rc<RefCell<Shard>>,
    slot: u32,
    uid: u64,
}

impl Drop for ReaderEnd {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shard.try_borrow_mut()
            && s.session_uid(self.slot) == Some(self.uid)
        {
            s.request_close(self.slot, CloseRequest { code: 1000, reason: "", abort: true });
        }
    }
}

/// Writes what the shard queued for this session, pongs and heartbeats,
/// and closes the socket when asked to. Returns whether it ended with a
/// clean close frame (so the peer's reply is worth waiting for).
pub async fn write_half<W>(
    mut writer: ws::Writer<W>,
    shard: Rc<RefCell<Shard>>,
    slot: u32,
    ctl: Rc<Ctl>,
    signals: Rc<PeerSignals>,
    hb: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> bool
where
    W: AsyncWrite + Unpin,
{
    let mut last_sent = tokio::time::Instant::now();
    let mut next_ping = last_sent + hb;
    let mut shutting_down = *shutdown.borrow();
    // One timer for the heartbeat and the ping, made once: moving it later
    // (every write moves the heartbeat) only updates its deadline, where a
    // new timer per idle spell cost a registration and a removal per frame.
    let timer = tokio::time::sleep_until(next_ping);
    tokio::pin!(timer);
    // The frames of one write, emptied after each.
    let mut frames: Vec<Vec<u8>> = Vec::new();
    loop {
        // First the rest of a frame the shard wrote into the socket only
        // in part: nothing may come between its pieces.
        let rest = shard.borrow_mut().take_partial(slot);
        if let Some(rest) = rest {
            let close = shard.borrow().close_request(slot);
            let write = writer.send_raw(&rest);
            // Aborted (now or while writing), failed or out of time: the
            // connection is dropped, since no close frame can follow half
            // a frame.
            let done = match close {
                Some(c) if c.abort => return false,
                Some(_) => timeout(CLOSE_GRACE, write).await.ok(),
                None => write_unless_aborted(write, &shard, slot, &ctl).await,
            };
            if !matches!(done, Some(Ok(()))) {
                return false;
            }
            shard.borrow_mut().write_done(slot, 0, 0);
            last_sent = tokio::time::Instant::now();
        }
        // Liveness: a WebSocket ping every `hb`; a peer that has sent
        // nothing (not even the pong) for two intervals is gone.
        let now = tokio::time::Instant::now();
        if now >= next_ping {
            if shard.borrow_mut().ping_overdue(slot, now.into_std(), 2 * hb) {
                DeadPeer { slot }.emit();
                return false;
            }
            next_ping = now + hb;
            let ping = writer.send(OpCode::Ping, &[]);
            match write_unless_aborted(ping, &shard, slot, &ctl).await {
                Some(Ok(())) => {}
                Some(Err(_)) => return false,
                // Aborted: the close is carried out below.
                None => continue,
            }
        }
        if let Some(pong) = signals.pong.take() {
            let pong = writer.send(OpCode::Pong, &pong.payload[..usize::from(pong.len)]);
            match write_unless_aborted(pong, &shard, slot, &ctl).await {
                Some(Ok(())) => {}
                Some(Err(_)) => return false,
                None => continue,
            }
        }
        if shutting_down {
            shard.borrow_mut().shutdown_session(slot);
        }
        frames.clear();
        let close = shard.borrow_mut().take_outgoing(slot, &mut frames);
        if let Some(close) = close {
            if !close.abort {
                let sent = timeout(CLOSE_GRACE, async {
                    writer.send_each(&frames, opcode).await?;
                    writer.close(close.code, close.reason).await
                })
                .await;
                return matches!(sent, Ok(Ok(())));
            }
            if close.code == 4008 {
                // Not reading: try to say why (the `slow` message and the
                // close frame) without waiting for a socket that is full.
                let _ = timeout(Duration::from_millis(50), async {
                    writer.send_each(&frames, opcode).await?;
                    writer.close(4008, "slow client").await
                })
                .await;
            }
            return false;
        }
        if frames.is_empty() {
            timer.as_mut().reset(idle_at(&shard, slot, last_sent, hb).min(next_ping));
            tokio::select! {
                _ = ctl.wake.notified() => {}
                // The ping is sent at the top of the loop; frames the shard
                // wrote itself meanwhile count as traffic.
                () = &mut timer => {
                    if tokio::time::Instant::now() >= idle_at(&shard, slot, last_sent, hb) {
                        shard.borrow_mut().heartbeat(slot);
                    }
                }
                changed = shutdown.changed(), if !shutting_down => {
                    shutting_down = changed.is_err() || *shutdown.borrow();
                }
            }
            continue;
        }
        let (n, bytes) = (frames.len(), frames.iter().map(Vec::len).sum::<usize>());
        let write = writer.send_each(&frames, opcode);
        match write_unless_aborted(write, &shard, slot, &ctl).await {
            Some(Ok(())) => {}
            Some(Err(_)) => return false,
            // Aborted: the top of the loop carries out the close.
            None => continue,
        }
        shard.borrow_mut().write_done(slot, n, bytes);
        last_sent = tokio::time::Instant::now();
    }
}

/// Runs one write of the socket task. Only an abort (slow client, or the
/// reader gone) interrupts it: `None`. A clean close requested meanwhile
/// gives it `CLOSE_GRACE` to finish; anything else a wake-up announced is
/// picked up after it.
///
/// While it runs, the shard writes nothing into the socket itself
/// (`Ctl::writing`).
async fn write_unless_aborted(
    write: impl Future<Output = std::io::Result<()>>,
    shard: &RefCell<Shard>,
    slot: u32,
    ctl: &Ctl,
) -> Option<std::io::Result<()>> {
    /// Clears `Ctl::writing` however the write ends.
    struct Writing<'a>(&'a Ctl);
    impl Drop for Writing<'_> {
        fn drop(&mut self) {
            self.0.writing.set(false);
        }
    }
    ctl.writing.set(true);
    let _writing = Writing(ctl);
    tokio::pin!(write);
    loop {
        tokio::select! {
            r = &mut write => return Some(r),
            _ = ctl.wake.notified() => {
                let close = shard.borrow().close_request(slot);
                match close {
                    Some(c) if c.abort => return None,
                    Some(_) => {
                        let r = timeout(CLOSE_GRACE, &mut write).await;
                        return Some(r.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())));
                    }
                    None => {}
                }
            }
        }
    }
}

/// When the connection has been idle for `hb`: `hb` after the later of the
/// socket task's last write and the session's last market-data write (which
/// the shard may have made itself).
fn idle_at(
    shard: &RefCell<Shard>,
    slot: u32,
    last_sent: tokio::time::Instant,
    hb: Duration,
) -> tokio::time::Instant {
    let data = shard.borrow().last_write(slot).map(tokio::time::Instant::from_std);
    data.map_or(last_sent, |d| d.max(last_sent)) + hb
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

/// The opcode of an encoded frame: binary market data (`tickwire.v1.bin`,
/// told apart by its first byte) or JSON text (built from ASCII JSON and
/// validated symbol names).
fn opcode(frame: &[u8]) -> OpCode {
    if binary::is_binary_frame(frame) { OpCode::Binary } else { OpCode::Text }
}
