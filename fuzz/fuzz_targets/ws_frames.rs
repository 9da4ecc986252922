//! The WebSocket frame reader (`socket::ws::Reader`) fed any bytes as the
//! client's side of a connection. The first byte picks the limits, so that
//! the size checks are reached with small inputs. Oracle: the stream read
//! whole and the stream read one byte per `read` call give the same
//! messages and end the same way (the reader's state survives any split of
//! its input), no message is over the limits, and text is UTF-8.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use tickwire::socket::ws::{Incoming, Limits, Reader};
use tokio::io::{AsyncRead, ReadBuf};

/// A client that sends `data`, at most `step` bytes per read, then hangs up.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.data.len().min(self.step).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// Everything the reader makes of `data`, as text.
fn read_all(data: &[u8], step: usize, limits: Limits) -> Vec<String> {
    let mut reader = Reader::new(Trickle { data, step }, &[], limits);
    let mut out = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        // Every read is ready at once, so one poll finishes each message.
        let mut next = Box::pin(reader.next());
        let Poll::Ready(msg) = next.as_mut().poll(&mut cx) else {
            panic!("the reader waited on a source that is always ready");
        };
        let (line, end) = match msg {
            Ok(Incoming::Text(t)) => {
                assert!(t.len() <= limits.max_message);
                assert!(std::str::from_utf8(t).is_ok(), "text that is not UTF-8");
                (format!("text {t:?}"), false)
            }
            Ok(Incoming::Binary(b)) => {
                assert!(b.len() <= limits.max_message);
                (format!("binary {b:?}"), false)
            }
            Ok(Incoming::Ping(p)) => (format!("ping {p:?}"), false),
            Ok(Incoming::Pong(p)) => (format!("pong {p:?}"), false),
            Ok(Incoming::Close(code, reason)) => (format!("close {code} {reason:?}"), true),
            Err(e) => (format!("error {:?}", e.close_code()), true),
        };
        out.push(line);
        if end {
            return out;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, stream)) = data.split_first() else { return };
    let limits = match pick % 3 {
        0 => Limits { max_message: 64, max_frame: 32 },
        1 => Limits { max_message: 300, max_frame: 300 },
        _ => Limits { max_message: 64 * 1024, max_frame: 64 * 1024 },
    };
    let whole = read_all(stream, usize::MAX, limits);
    let trickled = read_all(stream, 1, limits);
    assert_eq!(whole, trickled, "reading byte by byte changed the outcome");
});
