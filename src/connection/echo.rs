//! The conformance echo endpoint, `/echo`: every text message comes back as
//! text, every binary message as binary. It exists so that the Autobahn
//! test suite (`tools/autobahn.sh`) can drive tickwire's WebSocket layer,
//! and is served only with `--echo-endpoint` (a 404 otherwise).
//!
//! It goes through the same path as a market-data session: the hand-made
//! upgrade in [`super::serve`] and the framing of [`crate::socket::ws`]. Only the
//! inbound limits differ: sessions take small control messages, while the
//! Autobahn cases send messages up to 16 MiB (group 9), so the echo takes
//! [`ECHO_LIMITS`].
//!
//! It negotiates permessage-deflate when the client offers it and the
//! server allows it (`--compression`, [`crate::socket::deflate`]): compressed
//! messages are inflated as they are read, and the echo compresses what it
//! sends back, so that Autobahn's groups 12 and 13 test the extension.
//!
//! Pings get a pong with their payload. Errors fail the connection the way
//! a session does (1009 too large, 1007 invalid UTF-8 or a broken
//! compressed stream, 1002 protocol error); a close from the peer is
//! answered with its code, and the server then closes TCP first (RFC 6455
//! 7.1.1).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::socket::deflate::{Agreement, Deflater};
use crate::socket::ws::{Incoming, Limits, OpCode, Reader, Writer};

/// The echo's inbound limits: tungstenite's defaults, 64 MiB messages and
/// 16 MiB frames (the largest Autobahn message is 16 MiB, case 9.1.6).
pub const ECHO_LIMITS: Limits = Limits { max_message: 64 << 20, max_frame: 16 << 20 };
/// How long the echo waits for the peer's side of a close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Runs the echo on an upgraded socket; `rest` is what was read past the
/// request head, `deflate` the permessage-deflate agreement if any. Ends
/// with a close 1001 on shutdown.
pub async fn run<S>(
    stream: S,
    rest: Vec<u8>,
    deflate: Option<Agreement>,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (rd, wr) = tokio::io::split(stream);
    let reader = Reader::new(rd, &rest, ECHO_LIMITS).inflating(deflate.is_some());
    let writer = Writer::with_deflater(wr, deflate.as_ref().map(Deflater::new));
    echo(reader, writer, shutdown).await;
}

/// Echoes data messages until the peer closes, the connection fails or the
/// server shuts down.
pub async fn echo<R, W>(
    mut reader: Reader<R>,
    mut writer: Writer<W>,
    mut shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut shutting_down = *shutdown.borrow();
    loop {
        if shutting_down {
            if writer.close(1001, "server shutting down").await.is_ok() {
                // The peer's reply ends the handshake.
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    while !matches!(reader.next().await, Ok(Incoming::Close(..)) | Err(_)) {}
                })
                .await;
            }
            break;
        }
        let msg = tokio::select! {
            msg = reader.next() => msg,
            changed = shutdown.changed() => {
                shutting_down = changed.is_err() || *shutdown.borrow();
                continue;
            }
        };
        let sent = match msg {
            Ok(Incoming::Text(text)) => writer.send(OpCode::Text, text).await,
            Ok(Incoming::Binary(data)) => writer.send(OpCode::Binary, data).await,
            Ok(Incoming::Ping(payload)) => writer.send(OpCode::Pong, payload).await,
            Ok(Incoming::Pong(_)) => Ok(()),
            Ok(Incoming::Close(code, _)) => {
                let _ = writer.close(code, "").await;
                break;
            }
            Err(e) => {
                if let Some(code) = e.close_code()
                    && writer.close(code, e.close_reason()).await.is_ok()
                {
                    // Closing with unread bytes would reset the connection
                    // and could lose the close frame: drain until the peer
                    // hangs up.
                    let _ = tokio::time::timeout(CLOSE_GRACE, reader.discard_until_eof()).await;
                }
                break;
            }
        };
        if sent.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode as TOp};
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

    /// An echo with `limits` on one end of an in-memory pipe; a tungstenite
    /// client on the other.
    async fn pair(
        limits: Limits,
    ) -> (WebSocketStream<tokio::io::DuplexStream>, watch::Sender<bool>) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (tx, rx) = watch::channel(false);
        let (rd, wr) = tokio::io::split(server);
        tokio::spawn(echo(Reader::new(rd, &[], limits), Writer::new(wr), rx));
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
        let (mut ws, _tx) = pair(ECHO_LIMITS).await;
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
        let (mut ws, _tx) = pair(ECHO_LIMITS).await;
        let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
        ws.send(Message::Close(Some(bye))).await.unwrap();
        // The echo replies with the peer's code (RFC 6455 5.5.1)...
        assert_eq!(close_code(&mut ws).await, Some(1000));
        // ...and then the stream ends.
        assert!(ws.next().await.is_none());
    }

    #[tokio::test]
    async fn errors_fail_the_connection_with_their_code() {
        // Over the inbound limit: 1009.
        let (mut ws, _tx) = pair(Limits { max_message: 256, max_frame: 256 }).await;
        ws.send(Message::text("x".repeat(300))).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(1009));
        // A text message that is not UTF-8: 1007.
        let (mut ws, _tx) = pair(ECHO_LIMITS).await;
        let bad = Frame::message(vec![0xc3u8, 0x28], TOp::Data(Data::Text), true);
        ws.send(Message::Frame(bad)).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(1007));
    }

    #[tokio::test]
    async fn shutdown_closes_with_going_away() {
        let (mut ws, tx) = pair(ECHO_LIMITS).await;
        tx.send(true).unwrap();
        // A server shutting down says so with 1001.
        assert_eq!(close_code(&mut ws).await, Some(1001));
    }
}
