//! One WebSocket session: a reader half that applies control requests to
//! the shard, and a writer half that writes what the shard encoded.
//!
//! Both halves run inside one task (`join`), generic over any
//! `Sink`/`Stream` of tungstenite messages so they can be driven by tests
//! without a socket. The writer takes everything queued for its session in
//! one go, `feed`s each frame and `flush`es once: one write system call per
//! wake-up, however many frames. While it waits for a flush, the shard keeps
//! conflating this session's updates instead of queueing bytes (see
//! [`crate::writer::session`]).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::ConnContext;
use crate::auth::SessionAuth;
use crate::writer::binary;
use crate::writer::encode::Format;
use crate::writer::session::{CloseRequest, Ctl};
use crate::writer::shard::Shard;

const RATE_LIMITED: &str = "rate limited: too many messages per second";
const BINARY_FROM_CLIENT: &str = "binary frames are not accepted; send requests as JSON text";

/// How long a closing session waits for its last frames and the peer's close.
const CLOSE_GRACE: Duration = Duration::from_millis(1000);

/// The tungstenite settings for this workload: small reads (clients send
/// small commands, and tungstenite zero-fills the read buffer on every read
/// attempt, so its size is paid per wake-up), inbound limits at the protocol's `max_message_bytes`, and
/// writes gathered up to 64 KiB so that the frames of one wake-up go out in
/// one system call at the `flush`. The write buffer bound is generous
/// because the shard never hands over more than one batch at a time: it is
/// the shard's build-on-ready policy, not this limit, that bounds memory.
pub fn ws_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(64 << 20)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
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
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let max = ctx.shard.borrow().config().max_message_bytes;
    let ws = WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(ws_config(max)))
        .await;
    let (sink, stream) = ws.split();
    let uid = ctx.http.next_session.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let (slot, ctl) = ctx.shard.borrow_mut().open_session_as(format, uid, auth, peer);
    let hb = ctx.shard.borrow().config().hb;
    let shard = ctx.shard.clone();
    // The reader is a task of its own: waking the writer for every batch
    // must not poll the reader too (each tungstenite read attempt zeroes its
    // read buffer).
    let mut reader = tokio::task::spawn_local(read_half(stream, ctx.shard.clone(), slot));
    let writer = write_half(sink, ctx.shard.clone(), slot, ctl, hb, ctx.shutdown.clone());
    tokio::pin!(writer);
    tokio::select! {
        // The peer left: the reader asked the writer to stop; let it.
        _ = &mut reader => { let _ = tokio::time::timeout(CLOSE_GRACE, writer).await; }
        // The server closed: wait a little for the peer's close reply.
        graceful = &mut writer => {
            if graceful {
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut reader).await;
            }
            reader.abort();
        }
    }
    shard.borrow_mut().close_session(slot);
}

/// Reads client messages until the peer closes or the connection fails.
pub async fn read_half<S>(mut stream: S, shard: Rc<RefCell<Shard>>, slot: u32)
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    while let Some(msg) = stream.next().await {
        shard.borrow_mut().peer_alive(slot);
        match msg {
            Ok(Message::Text(text)) => {
                let mut s = shard.borrow_mut();
                let parsed = s.parse_request(text.as_bytes());
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
            Ok(Message::Binary(_)) => {
                let mut s = shard.borrow_mut();
                if s.admit_message(slot, Instant::now()) {
                    s.send_error(slot, None, 400, BINARY_FROM_CLIENT, false);
                } else {
                    s.send_error(slot, None, 429, RATE_LIMITED, true);
                }
            }
            // Keep polling after a Close so its reply is flushed and the
            // stream ends cleanly.
            Ok(Message::Close(frame)) => {
                shard.borrow_mut().peer_closed(slot, frame.map_or(1005, |f| u16::from(f.code)));
            }
            // Pings are answered by tungstenite.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Err(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
                let mut s = shard.borrow_mut();
                s.send_error(slot, None, 413, "message too large", false);
                s.request_close(
                    slot,
                    CloseRequest { code: 1009, reason: "message too large", abort: false },
                );
                break;
            }
            Err(WsError::Utf8(_)) => {
                shard.borrow_mut().request_close(
                    slot,
                    CloseRequest { code: 1007, reason: "invalid UTF-8", abort: false },
                );
                break;
            }
            Err(WsError::Protocol(_)) => {
                shard.borrow_mut().request_close(
                    slot,
                    CloseRequest { code: 1002, reason: "protocol error", abort: false },
                );
                break;
            }
            Err(_) => break,
        }
    }
    // The peer is gone or being closed: make sure the writer half ends too.
    shard.borrow_mut().request_close(slot, CloseRequest { code: 1000, reason: "", abort: true });
}

/// Writes what the shard queued for this session, heartbeats when idle, and
/// closes the socket when asked to. Returns whether it ended with a clean
/// close frame (so the peer's reply is worth waiting for).
pub async fn write_half<K>(
    mut sink: K,
    shard: Rc<RefCell<Shard>>,
    slot: u32,
    ctl: Rc<Ctl>,
    hb: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> bool
where
    K: Sink<Message, Error = WsError> + Unpin,
{
    let mut last_sent = tokio::time::Instant::now();
    let mut next_ping = last_sent + hb;
    let mut shutting_down = *shutdown.borrow();
    loop {
        // Liveness: a WebSocket ping every `hb`; a peer that has sent
        // nothing (not even the pong) for two intervals is gone.
        let now = tokio::time::Instant::now();
        if now >= next_ping {
            if shard.borrow_mut().ping_overdue(slot, now.into_std(), 2 * hb) {
                DeadPeer { slot }.emit();
                return false;
            }
            if sink.feed(Message::Ping(bytes::Bytes::new())).await.is_err() {
                return false;
            }
            next_ping = now + hb;
        }
        if shutting_down {
            shard.borrow_mut().shutdown_session(slot);
        }
        let out = shard.borrow_mut().take_outgoing(slot);
        if let Some(close) = out.close {
            if !close.abort {
                let sent = tokio::time::timeout(CLOSE_GRACE, async {
                    for f in out.frames {
                        sink.feed(message(f)).await?;
                    }
                    let frame = CloseFrame {
                        code: CloseCode::from(close.code),
                        reason: close.reason.into(),
                    };
                    sink.send(Message::Close(Some(frame))).await
                })
                .await;
                return matches!(sent, Ok(Ok(())));
            }
            if close.code == 4008 {
                // Not reading: try to say why (the `slow` message and the
                // close frame) without waiting for a socket that is full.
                let frame =
                    CloseFrame { code: CloseCode::from(4008), reason: "slow client".into() };
                let _ = tokio::time::timeout(Duration::from_millis(50), async {
                    for f in out.frames {
                        sink.feed(message(f)).await?;
                    }
                    sink.send(Message::Close(Some(frame))).await
                })
                .await;
            }
            return false;
        }
        if out.frames.is_empty() {
            // A ping fed above goes out with the next frame or now.
            if sink.flush().await.is_err() {
                return false;
            }
            let idle = tokio::time::sleep_until(last_sent + hb);
            tokio::select! {
                _ = ctl.wake.notified() => {}
                _ = idle => shard.borrow_mut().heartbeat(slot),
                _ = tokio::time::sleep_until(next_ping) => {}
                changed = shutdown.changed(), if !shutting_down => {
                    shutting_down = changed.is_err() || *shutdown.borrow();
                }
            }
            continue;
        }
        let (n, bytes) = (out.frames.len(), out.frames.iter().map(|f| f.len()).sum::<usize>());
        let write = async {
            for f in out.frames {
                sink.feed(message(f)).await?;
            }
            sink.flush().await
        };
        tokio::pin!(write);
        let result = loop {
            tokio::select! {
                r = &mut write => break Some(r),
                // Only an abort (slow client) interrupts a write; anything
                // else the wake-up announced is picked up after it.
                _ = ctl.wake.notified() => {
                    if shard.borrow().close_request(slot).is_some_and(|c| c.abort) {
                        break None;
                    }
                }
            }
        };
        match result {
            Some(Ok(())) => {}
            Some(Err(_)) => return false,
            // Aborted: the top of the loop carries out the close.
            None => continue,
        }
        shard.borrow_mut().write_done(slot, n, bytes);
        last_sent = tokio::time::Instant::now();
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

/// The WebSocket message for an encoded frame: binary market data
/// (`tickwire.v1.bin`, told apart by its first byte) or JSON text.
fn message(frame: bytes::Bytes) -> Message {
    if binary::is_binary_frame(&frame) {
        return Message::Binary(frame);
    }
    // Frames are built from ASCII JSON and validated symbol names.
    Message::Text(Utf8Bytes::try_from(frame).unwrap_or_else(|_| Utf8Bytes::from_static("[]")))
}
