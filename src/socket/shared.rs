//! A plain TCP session's socket, shared by its reader, its writer and its
//! shard, so that the shard can write a frame it has just built straight
//! into the socket ([`crate::writer::shard::Shard::end_of_batch`]) instead
//! of waking the connection's writer task to do it.
//!
//! Each side uses the socket through `&TcpStream`: readiness, then a
//! non-blocking `try_read`/`try_write_vectored` (the pattern tokio
//! documents for them). The reader and the writer wait on different
//! directions, which tokio tracks apart; the shard only ever tries, and
//! leaves the frame to the writer task when the socket is full. Nothing
//! here locks: a session lives on one shard thread. TLS sessions keep
//! tokio's split halves and the writer task.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// One half of a session's shared socket (see the module docs).
pub struct SharedTcp(pub Rc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale: tokio cleared it, so the next poll
                // registers for the next edge.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

/// A session's socket, split for its reader and writer; plain TCP is also
/// handed to the shard for direct writes.
pub trait SessionStream: AsyncRead + AsyncWrite + Unpin + 'static {
    /// The reader's half.
    type Read: AsyncRead + Unpin + 'static;
    /// The writer's half.
    type Write: AsyncWrite + Unpin + 'static;

    /// The two halves, and the socket for the shard (plain TCP only).
    fn halves(self) -> (Self::Read, Self::Write, Option<Rc<TcpStream>>);
}

impl SessionStream for TcpStream {
    type Read = SharedTcp;
    type Write = SharedTcp;

    fn halves(self) -> (SharedTcp, SharedTcp, Option<Rc<TcpStream>>) {
        let s = Rc::new(self);
        (SharedTcp(s.clone()), SharedTcp(s.clone()), Some(s))
    }
}

impl SessionStream for tokio_rustls::server::TlsStream<TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;

    fn halves(self) -> (Self::Read, Self::Write, Option<Rc<TcpStream>>) {
        let (r, w) = tokio::io::split(self);
        (r, w, None)
    }
}
