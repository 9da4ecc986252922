//! A session's socket, shared by its reader task, its writer task and (for
//! plain TCP) its shard, which writes a data frame it has just built
//! straight into the socket ([`super::outbound::Outbound::push_data`])
//! instead of waking the writer task to do it.
//!
//! Plain TCP: each side uses the socket through `&TcpStream`: readiness,
//! then a non-blocking `try_read`/`try_write_vectored` (the pattern tokio
//! documents for them). The reader and the writer wait on different
//! directions, which tokio tracks apart; the shard only ever tries, and
//! leaves the frame to the writer task when the socket is full. TLS: the
//! stream sits in an `Rc<RefCell<_>>` that each half borrows for one poll
//! (a session lives on one shard thread, so the borrows never overlap).
//! Nothing here locks.
//!
//! A third handle, [`SocketHandle`], outlives the halves' tasks long enough
//! to reset the socket when a close runs out of time.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

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

/// The TLS stream of a session, shared by its two halves (see the module docs).
pub struct SharedTls(pub Rc<RefCell<TlsStream<TcpStream>>>);

impl AsyncRead for SharedTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.borrow().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_shutdown(cx)
    }
}

/// A session's socket beside its halves: for the shard's direct writes
/// (plain TCP) and for a reset when a close runs out of time.
pub enum SocketHandle {
    /// A plain TCP socket.
    Tcp(Rc<TcpStream>),
    /// A TLS stream.
    Tls(Rc<RefCell<TlsStream<TcpStream>>>),
}

impl SocketHandle {
    /// The socket the shard may write data frames into itself (plain TCP
    /// only: TLS records must go through the stream's own state).
    pub fn direct(&self) -> Option<Rc<TcpStream>> {
        match self {
            SocketHandle::Tcp(s) => Some(s.clone()),
            SocketHandle::Tls(_) => None,
        }
    }

    /// Whether the peer sent bytes that nobody has read yet (a look at the
    /// socket's receive queue, which takes nothing from it).
    pub fn has_unread(&self) -> bool {
        let peek = |s: &TcpStream| {
            let mut one = [std::mem::MaybeUninit::uninit(); 1];
            socket2::SockRef::from(s).peek(&mut one).is_ok_and(|n| n > 0)
        };
        match self {
            SocketHandle::Tcp(s) => peek(s),
            SocketHandle::Tls(s) => s.try_borrow().is_ok_and(|s| peek(s.get_ref().0)),
        }
    }

    /// Makes the close of the socket a reset (`SO_LINGER` 0): when the last
    /// handle drops, the kernel frees it at once instead of keeping unsent
    /// bytes for a peer that does not read them.
    pub fn reset(&self) {
        let linger = Some(std::time::Duration::ZERO);
        let _ = match self {
            SocketHandle::Tcp(s) => socket2::SockRef::from(&**s).set_linger(linger),
            SocketHandle::Tls(s) => {
                socket2::SockRef::from(s.borrow().get_ref().0).set_linger(linger)
            }
        };
    }
}

/// A session's socket, split for its reader and writer.
pub trait SessionStream: AsyncRead + AsyncWrite + Unpin + 'static {
    /// The reader's half.
    type Read: AsyncRead + Unpin + 'static;
    /// The writer's half.
    type Write: AsyncWrite + Unpin + 'static;

    /// The two halves, and the handle for the shard and the reset.
    fn halves(self) -> (Self::Read, Self::Write, SocketHandle);
}

impl SessionStream for TcpStream {
    type Read = SharedTcp;
    type Write = SharedTcp;

    fn halves(self) -> (SharedTcp, SharedTcp, SocketHandle) {
        let s = Rc::new(self);
        (SharedTcp(s.clone()), SharedTcp(s.clone()), SocketHandle::Tcp(s))
    }
}

impl SessionStream for TlsStream<TcpStream> {
    type Read = SharedTls;
    type Write = SharedTls;

    fn halves(self) -> (SharedTls, SharedTls, SocketHandle) {
        let s = Rc::new(RefCell::new(self));
        (SharedTls(s.clone()), SharedTls(s.clone()), SocketHandle::Tls(s))
    }
}
