//! The conformance echo endpoint, `/echo`: every text message comes back as
//! text, every binary message as binary. It exists so that the Autobahn
//! test suite (`tools/autobahn.sh`) can drive tickwire's WebSocket layer,
//! and is served only with `--echo-endpoint` (a 404 otherwise).
//!
//! It goes through the same path as a market-data session: the hand-made
//! upgrade in [`super::serve`] and the socket settings of
//! [`super::session::ws_config`] (read and write buffers). Only the inbound
//! limits differ: sessions take small control messages, while the Autobahn
//! cases send messages up to 16 MiB (group 9), so the echo uses
//! tungstenite's default limits ([`ECHO_MAX_MESSAGE`], [`ECHO_MAX_FRAME`]).
//!
//! Pings are answered by tungstenite. Errors end the connection the way a
//! session does (1009 too large, 1007 invalid UTF-8, 1002 protocol error),
//! and after any close the stream is polled until it ends, so that the
//! close reply is flushed and the server closes TCP first (RFC 6455 7.1.1).

use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::session::ws_config;

/// Largest message the echo takes: tungstenite's default (64 MiB). The
/// largest Autobahn message is 16 MiB (case 9.1.6).
pub const ECHO_MAX_MESSAGE: usize = 64 << 20;
/// Largest frame the echo takes: tungstenite's default (16 MiB), which is
/// the largest single-frame Autobahn message.
pub const ECHO_MAX_FRAME: usize = 16 << 20;
/// How long the echo waits for the peer's side of a close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The session settings with tungstenite's default inbound limits.
pub fn echo_config() -> WebSocketConfig {
    ws_config(ECHO_MAX_MESSAGE).max_frame_size(Some(ECHO_MAX_FRAME))
}

/// Runs the echo on an upgraded socket; `rest` is what was read past the
/// request head. Ends with a close 1001 on shutdown.
pub async fn run<S>(stream: S, rest: Vec<u8>, shutdown: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let ws =
        WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(echo_config())).await;
    echo(ws, shutdown).await;
}

/// Echoes data messages until the peer closes, the connection fails or the
/// server shuts down. Generic over the WebSocket so tests can pick limits.
pub async fn echo<W>(mut ws: W, mut shutdown: watch::Receiver<bool>)
where
    W: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let mut shutting_down = *shutdown.borrow();
    let close = loop {
        if shutting_down {
            break Some(close_frame(CloseCode::Away, "server shutting down"));
        }
        let msg = tokio::select! {
            msg = ws.next() => msg,
            changed = shutdown.changed() => {
                shutting_down = changed.is_err() || *shutdown.borrow();
                continue;
            }
        };
        match msg {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                if ws.send(m).await.is_err() {
                    return;
                }
            }
            // tungstenite queued the reply; it goes out on the next poll.
            Some(Ok(Message::Close(_))) => break None,
            // Pings are answered by tungstenite; pongs need nothing.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Err(e)) => match close_for(&e) {
                Some(frame) => break Some(frame),
                None => return,
            },
            None => return,
        }
    };
    if let Some(frame) = close
        && ws.send(Message::Close(Some(frame))).await.is_err()
    {
        return;
    }
    // Flush our reply or wait for theirs; the stream ends when the
    // handshake is complete (tungstenite then has the server close TCP).
    let _ = tokio::time::timeout(CLOSE_GRACE, async { while let Some(Ok(_)) = ws.next().await {} })
        .await;
}

/// The close frame that fails the connection after a read error, or `None`
/// when the peer is already gone.
fn close_for(e: &WsError) -> Option<CloseFrame> {
    match e {
        WsError::Capacity(_) => Some(close_frame(CloseCode::Size, "message too large")),
        WsError::Utf8(_) => Some(close_frame(CloseCode::Invalid, "invalid UTF-8")),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some(close_frame(CloseCode::Protocol, "protocol error")),
        _ => None,
    }
}

fn close_frame(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame { code, reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    /// An echo on one end of an in-memory pipe, with `config`; the client end.
    async fn pair(
        config: WebSocketConfig,
    ) -> (WebSocketStream<tokio::io::DuplexStream>, watch::Sender<bool>) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (tx, rx) = watch::channel(false);
        let server = WebSocketStream::from_raw_socket(server, Role::Server, Some(config)).await;
        tokio::spawn(echo(server, rx));
        (WebSocketStream::from_raw_socket(client, Role::Client, None).await, tx)
    }

    async fn close_code(ws: &mut WebSocketStream<tokio::io::DuplexStream>) -> Option<u16> {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(frame) = m {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    }

    #[tokio::test]
    async fn echoes_text_as_text_and_binary_as_binary() {
        let (mut ws, _tx) = pair(echo_config()).await;
        ws.send(Message::text("héllo")).await.unwrap();
        // Text comes back as the same text...
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("héllo"));
        ws.send(Message::binary(vec![0u8, 255, 1])).await.unwrap();
        // ...and binary as the same bytes.
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(vec![0u8, 255, 1]));
        ws.send(Message::Ping("p".into())).await.unwrap();
        // A ping is answered with a pong carrying its payload.
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::Pong("p".into()));
    }

    #[tokio::test]
    async fn close_handshake_is_answered_with_the_same_code() {
        let (mut ws, _tx) = pair(echo_config()).await;
        ws.send(Message::Close(Some(close_frame(CloseCode::Normal, "bye")))).await.unwrap();
        // The echo replies with the peer's code (RFC 6455 5.5.1)...
        assert_eq!(close_code(&mut ws).await, Some(1000));
        // ...and then the stream ends.
        assert!(ws.next().await.is_none());
    }

    #[tokio::test]
    async fn errors_fail_the_connection_with_their_code() {
        // Over the inbound limit: 1009.
        let (mut ws, _tx) = pair(ws_config(256)).await;
        ws.send(Message::text("x".repeat(300))).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(1009));
        // A text message that is not UTF-8: 1007.
        let (mut ws, _tx) = pair(echo_config()).await;
        let bad = Frame::message(vec![0xc3u8, 0x28], OpCode::Data(Data::Text), true);
        ws.send(Message::Frame(bad)).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(1007));
    }

    #[tokio::test]
    async fn shutdown_closes_with_going_away() {
        let (mut ws, tx) = pair(echo_config()).await;
        tx.send(true).unwrap();
        // A server shutting down says so with 1001.
        assert_eq!(close_code(&mut ws).await, Some(1001));
    }
}
