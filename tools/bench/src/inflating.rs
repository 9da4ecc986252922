//! permessage-deflate for the load client. tungstenite 0.30 does not speak
//! the extension, so a session that offers it reads its TCP stream through
//! [`Inflating`], which hands tungstenite every compressed server frame
//! inflated: RSV1 cleared, the inflated length in the header. One zlib-rs
//! decompressor per session keeps its window across messages (context
//! takeover), as a browser's does. Only the bytes the server sends are
//! touched, and only after the HTTP response head; what the client sends
//! goes out uncompressed (RFC 7692 lets it).
//!
//! Without compression the adapter passes reads straight through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use zlib_rs::{Inflate, InflateFlush, Status};

/// What RFC 7692 has the sender strip from every message and the receiver
/// append.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A server stream whose compressed frames come out inflated (see the
/// module docs).
pub struct Inflating<S> {
    io: S,
    /// The session's decompressor; `None`: pass through.
    z: Option<Box<Inflate>>,
    /// Read from `io`, not yet turned into output.
    raw: Vec<u8>,
    /// Ready for the reader, from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
    /// The HTTP response head has gone through.
    head_done: bool,
}

impl<S> Inflating<S> {
    /// `io`, inflating when `compressed` (the session offered the extension).
    pub fn new(io: S, compressed: bool) -> Inflating<S> {
        Inflating {
            io,
            z: compressed.then(|| Box::new(Inflate::new(false, 15))),
            raw: Vec::new(),
            out: Vec::new(),
            out_at: 0,
            head_done: false,
        }
    }

    /// Moves what `raw` completes (the response head, whole frames) to
    /// `out`, inflating compressed frames.
    fn process(&mut self) -> io::Result<()> {
        if !self.head_done {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(());
            };
            self.out.extend(self.raw.drain(..end + 4));
            self.head_done = true;
        }
        let mut at = 0;
        while let Some((head, len)) = frame_len(&self.raw[at..]) {
            let frame = &self.raw[at..at + head + len];
            at += head + len;
            if frame[0] & 0x40 == 0 {
                self.out.extend_from_slice(frame);
                continue;
            }
            let z = self.z.as_mut().ok_or_else(|| bad("RSV1 without permessage-deflate"))?;
            // Inflated straight into `out`, behind room for the longest
            // header, which is written (and the gap closed) once the
            // length is known.
            let start = self.out.len();
            self.out.resize(start + 10, 0);
            for input in [&frame[head..], &TAIL[..]] {
                let mut rest = input;
                loop {
                    let at = self.out.len();
                    self.out.resize(at + (4 * rest.len()).max(4096), 0);
                    let before = (z.total_in(), z.total_out());
                    let status = z.decompress(rest, &mut self.out[at..], InflateFlush::SyncFlush);
                    if !matches!(status, Ok(Status::Ok | Status::BufError)) {
                        return Err(bad("a frame that does not inflate"));
                    }
                    rest = &rest[(z.total_in() - before.0) as usize..];
                    let wrote = (z.total_out() - before.1) as usize;
                    let room = self.out.len() - at;
                    self.out.truncate(at + wrote);
                    if rest.is_empty() && wrote < room {
                        break;
                    }
                }
            }
            let n = self.out.len() - start - 10;
            let mut h = Vec::with_capacity(10);
            write_head(&mut h, frame[0] & !0x40, n);
            self.out.copy_within(start + 10.., start + h.len());
            self.out.truncate(start + h.len() + n);
            self.out[start..start + h.len()].copy_from_slice(&h);
        }
        self.raw.drain(..at);
        Ok(())
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A whole server frame at the start of `b`: its header and payload
/// lengths (`None` until all of it is there).
fn frame_len(b: &[u8]) -> Option<(usize, usize)> {
    let (head, len) = match *b.get(1)? & 0x7f {
        126 => (4, usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]))),
        127 => (10, u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize),
        n => (2, usize::from(n)),
    };
    (b.len() >= head + len).then_some((head, len))
}

/// Appends an unmasked frame header: `b0` (FIN, opcode), payload `len`.
fn write_head(out: &mut Vec<u8>, b0: u8, len: usize) {
    out.push(b0);
    if len < 126 {
        out.push(len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.z.is_none() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        loop {
            if this.out_at < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_at);
                buf.put_slice(&this.out[this.out_at..this.out_at + n]);
                this.out_at += n;
                if this.out_at == this.out.len() {
                    this.out.clear();
                    this.out_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.raw.extend_from_slice(rb.filled());
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inflating<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn compressed_frames_come_out_inflated_and_the_rest_unchanged() {
        // A stored deflate block holding "hi" (what a server may send for a
        // short message), then an uncompressed ping.
        let mut wire = b"HTTP/1.1 101 OK\r\n\r\n".to_vec();
        // Stored block: header byte, LEN 2, NLEN, "hi", then the flush's
        // empty stored block header (its `00 00 ff ff` stripped).
        wire.extend_from_slice(&[0xC1, 8, 0x00, 0x02, 0x00, 0xfd, 0xff, b'h', b'i', 0x00]);
        wire.extend_from_slice(&[0x89, 1, b'p']);
        let (mut server, client) = tokio::io::duplex(64);
        let mut inflating = Inflating::new(client, true);
        let writer = tokio::spawn(async move {
            // A byte at a time: frames cut anywhere still come out whole.
            for b in wire {
                server.write_all(&[b]).await.unwrap();
            }
        });
        let mut got = Vec::new();
        let want =
            [&b"HTTP/1.1 101 OK\r\n\r\n"[..], &[0x81, 2, b'h', b'i', 0x89, 1, b'p']].concat();
        while got.len() < want.len() {
            let mut b = [0u8; 64];
            let n = inflating.read(&mut b).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&b[..n]);
        }
        writer.await.unwrap();
        assert_eq!(got, want);
    }
}
