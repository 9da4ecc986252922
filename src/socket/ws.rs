//! WebSocket framing for the server side (RFC 6455 section 5), written here
//! instead of taken from tungstenite, for memory.
//!
//! tungstenite keeps its read and write buffers at their high-water mark:
//! after one 64 KiB request a connection holds about 66 KB of read buffer
//! and, after a large snapshot, about 20 KB of write buffer, for as long as
//! it lives. With thousands of subscribers that is most of the server's
//! memory (`tests/hardening.rs` measures it). This module holds, per
//! connection:
//!
//! - a [`READ_BUF`]-byte read buffer, where small requests are read whole;
//! - the message being assembled, read straight into its own buffer,
//!   which is freed once the message has been handled if it grew past
//!   [`KEEP_MESSAGE_BUF`];
//! - no write buffer: frames are written with one vectored write per batch
//!   (a header of 2 to 10 bytes beside each payload), so the shard's
//!   encoded frames go to the socket without a copy.
//!
//! With permessage-deflate negotiated ([`super::deflate`]), the reader
//! inflates messages whose first frame has RSV1 set (after the whole
//! message has arrived, into a second buffer bounded by the message limit)
//! and the writer compresses data frames ([`compressed_frame`]), building
//! them in a buffer of its own since their bytes are new.
//!
//! The handshake stays with tungstenite's `derive_accept_key`, and the
//! tests drive this code with tungstenite's client. Conformance is checked
//! by the Autobahn suite against the `/echo` endpoint, which uses this
//! module too (`tools/autobahn.sh`).
//!
//! [`Reader::next`] is cancel-safe: all progress lives in the reader, and
//! its only await is a socket read, so it can sit in a `select!`.

use std::io::{self, IoSlice};

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::deflate::{self, Deflater, InflateError};

/// Bytes of the read buffer. Requests are small JSON commands; a frame
/// whose payload does not fit is read into the message buffer directly.
pub const READ_BUF: usize = 1024;

/// A message buffer that grew past this is freed after its message is
/// handled, so that one large request does not cost memory for the rest of
/// the connection's life.
pub const KEEP_MESSAGE_BUF: usize = 4096;

/// Most payload bytes reserved ahead of their arrival: a frame that
/// announces a large length gets its memory as the bytes come in, not up
/// front.
const RESERVE_AHEAD: usize = 256 * 1024;

/// Frames per vectored write (two slices each, a header and a payload).
pub const FRAMES_PER_WRITE: usize = 32;

/// Largest payload of a control frame (RFC 6455 5.5).
const MAX_CONTROL: usize = 125;

/// Inbound limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message (after reassembly of its fragments).
    pub max_message: usize,
    /// Largest single frame.
    pub max_frame: usize,
}

/// Frame opcodes (RFC 6455 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// Continuation of a fragmented message.
    Continuation,
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
    /// Close, with an optional code and reason.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A message from the peer, borrowed from the reader until the next call
/// to [`Reader::next`].
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A text message, its bytes: valid UTF-8, checked once as they
    /// arrived (no second pass to make a `&str`).
    Text(&'a [u8]),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping; the caller answers with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// The peer closes: its code (1005 when it sent none) and reason. The
    /// caller answers with a close and stops reading.
    Close(u16, &'a str),
}

/// Why reading stopped. Each variant says how to fail the connection.
#[derive(Debug)]
pub enum ReadError {
    /// A frame or message over the [`Limits`] (a compressed message: once
    /// inflated): close with 1009.
    TooLarge,
    /// A text message or close reason that is not UTF-8: close with 1007.
    InvalidUtf8,
    /// A compressed message that does not inflate: close with 1007.
    BadCompression,
    /// A frame that breaks RFC 6455 (what, for the log): close with 1002.
    Protocol(&'static str),
    /// The connection ended, cleanly between frames or not: nothing to
    /// send.
    Closed,
    /// The socket failed: nothing to send.
    Io(io::Error),
}

impl ReadError {
    /// The close code to fail the connection with, or `None` when the peer
    /// is gone.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ReadError::TooLarge => Some(1009),
            ReadError::InvalidUtf8 | ReadError::BadCompression => Some(1007),
            ReadError::Protocol(_) => Some(1002),
            ReadError::Closed | ReadError::Io(_) => None,
        }
    }

    /// The close reason that goes with [`ReadError::close_code`].
    pub fn close_reason(&self) -> &'static str {
        match self {
            ReadError::TooLarge => "message too large",
            ReadError::InvalidUtf8 => "invalid UTF-8",
            ReadError::BadCompression => "invalid compressed data",
            ReadError::Protocol(_) => "protocol error",
            ReadError::Closed | ReadError::Io(_) => "",
        }
    }
}

/// Whether a peer may send this close code (RFC 6455 7.4: the defined
/// codes that may appear on the wire, and the registered and private
/// ranges).
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// The frame being read: its header and how far its payload has come.
#[derive(Debug, Clone, Copy)]
struct FrameHead {
    fin: bool,
    op: OpCode,
    mask: [u8; 4],
    len: u64,
    done: u64,
}

/// Reads and checks the peer's frames and reassembles its messages.
pub struct Reader<R> {
    io: R,
    /// Read buffer; bytes `start..end` are unread.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    limits: Limits,
    /// The frame whose payload is being read.
    frame: Option<FrameHead>,
    /// The data message being assembled, and its kind.
    msg: Vec<u8>,
    msg_op: Option<OpCode>,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    inflate: bool,
    /// `msg` holds a compressed message (its first frame had RSV1).
    msg_compressed: bool,
    /// The last compressed message, inflated.
    inflated: Vec<u8>,
    /// Bytes of `msg` known to be valid UTF-8 (text only): checked as they
    /// arrive, so that bad text fails at once, not at the end.
    utf8_valid: usize,
    /// Payload of the control frame being read.
    control: [u8; MAX_CONTROL],
    control_len: usize,
    /// `msg` held a message returned by the last call: clear it first.
    handed_out: bool,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// A reader on `io`; `rest` is what was read past the HTTP request
    /// head (a client may send its first frame right behind it).
    pub fn new(io: R, rest: &[u8], limits: Limits) -> Reader<R> {
        let mut buf = vec![0u8; READ_BUF.max(rest.len())].into_boxed_slice();
        buf[..rest.len()].copy_from_slice(rest);
        Reader {
            io,
            buf,
            start: 0,
            end: rest.len(),
            limits,
            frame: None,
            msg: Vec::new(),
            msg_op: None,
            inflate: false,
            msg_compressed: false,
            inflated: Vec::new(),
            utf8_valid: 0,
            control: [0; MAX_CONTROL],
            control_len: 0,
            handed_out: false,
        }
    }

    /// Accepts compressed messages (RSV1), when permessage-deflate was
    /// negotiated; without it RSV1 is a protocol error.
    pub fn inflating(mut self, on: bool) -> Reader<R> {
        self.inflate = on;
        self
    }

    /// The next message. Errors end the connection: see [`ReadError`].
    pub async fn next(&mut self) -> Result<Incoming<'_>, ReadError> {
        if self.handed_out {
            self.handed_out = false;
            for buf in [&mut self.msg, &mut self.inflated] {
                if buf.capacity() > KEEP_MESSAGE_BUF {
                    *buf = Vec::new();
                } else {
                    buf.clear();
                }
            }
        }
        loop {
            let head = match self.frame {
                Some(head) => head,
                None => {
                    let head = self.read_head().await?;
                    self.frame = Some(head);
                    head
                }
            };
            if head.done < head.len {
                self.read_payload(head).await?;
                continue;
            }
            self.frame = None;
            if head.op.is_control() {
                let payload = &self.control[..self.control_len];
                self.control_len = 0;
                return control_message(head.op, payload);
            }
            if !head.fin {
                continue;
            }
            let op = self.msg_op.take().unwrap_or(OpCode::Binary);
            self.handed_out = true;
            if self.msg_compressed {
                return self.inflate_message(op);
            }
            if op == OpCode::Text {
                // Whatever the last check left (an empty final fragment
                // after a cut character) is checked now.
                self.check_utf8(true)?;
                return Ok(Incoming::Text(&self.msg));
            }
            return Ok(Incoming::Binary(&self.msg));
        }
    }

    /// Inflates the compressed message just completed, and checks it is
    /// UTF-8 if it is text.
    fn inflate_message(&mut self, op: OpCode) -> Result<Incoming<'_>, ReadError> {
        deflate::inflate(&self.msg, self.limits.max_message, &mut self.inflated).map_err(|e| {
            match e {
                InflateError::TooLarge => ReadError::TooLarge,
                InflateError::Corrupt => ReadError::BadCompression,
            }
        })?;
        if op == OpCode::Text {
            std::str::from_utf8(&self.inflated).map_err(|_| ReadError::InvalidUtf8)?;
            return Ok(Incoming::Text(&self.inflated));
        }
        Ok(Incoming::Binary(&self.inflated))
    }

    /// Reads and checks a frame header.
    async fn read_head(&mut self) -> Result<FrameHead, ReadError> {
        self.fill_to(2).await?;
        let (b0, b1) = (self.buf[self.start], self.buf[self.start + 1]);
        // RSV1 is permessage-deflate's "compressed" bit when it was
        // negotiated (RFC 7692 6); RSV2 and RSV3 belong to no extension.
        let rsv1 = b0 & 0x40 != 0;
        if b0 & 0x30 != 0 || (rsv1 && !self.inflate) {
            return Err(ReadError::Protocol("reserved bits set without an extension"));
        }
        let op = OpCode::from_bits(b0 & 0x0F).ok_or(ReadError::Protocol("reserved opcode"))?;
        if rsv1 && op.is_control() {
            return Err(ReadError::Protocol("compressed control frame"));
        }
        if rsv1 && op == OpCode::Continuation {
            return Err(ReadError::Protocol("RSV1 on a continuation frame"));
        }
        let fin = b0 & 0x80 != 0;
        if b1 & 0x80 == 0 {
            return Err(ReadError::Protocol("unmasked client frame"));
        }
        let ext = match b1 & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        self.fill_to(2 + ext + 4).await?;
        let h = &self.buf[self.start..self.start + 2 + ext + 4];
        let len = match ext {
            2 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            8 => u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
            _ => u64::from(b1 & 0x7F),
        };
        let mask: [u8; 4] = h[2 + ext..].try_into().expect("4 bytes");
        self.start += 2 + ext + 4;
        if op.is_control() {
            if !fin {
                return Err(ReadError::Protocol("fragmented control frame"));
            }
            if len > MAX_CONTROL as u64 {
                return Err(ReadError::Protocol("control frame over 125 bytes"));
            }
        } else {
            if len > self.limits.max_frame as u64
                || self.msg.len() as u64 + len > self.limits.max_message as u64
            {
                return Err(ReadError::TooLarge);
            }
            match (op, self.msg_op) {
                (OpCode::Continuation, None) => {
                    return Err(ReadError::Protocol("continuation without a message"));
                }
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return Err(ReadError::Protocol("new message inside a fragmented one"));
                }
                (OpCode::Text | OpCode::Binary, None) => {
                    self.msg_op = Some(op);
                    self.msg_compressed = rsv1;
                    self.utf8_valid = 0;
                }
                _ => {}
            }
        }
        Ok(FrameHead { fin, op, mask, len, done: 0 })
    }

    /// Reads some of the current frame's payload: from the read buffer if
    /// it holds any, else from the socket (into the message buffer
    /// directly when the rest of the frame would not fit the read buffer).
    async fn read_payload(&mut self, mut head: FrameHead) -> Result<(), ReadError> {
        let left = head.len - head.done;
        let phase = (head.done % 4) as usize;
        let into_msg = !head.op.is_control();
        let got = if self.start < self.end {
            let n = (self.end - self.start).min(usize::try_from(left).unwrap_or(usize::MAX));
            let src = &self.buf[self.start..self.start + n];
            if into_msg {
                self.msg.extend_from_slice(src);
            } else {
                self.control[self.control_len..self.control_len + n].copy_from_slice(src);
            }
            self.start += n;
            n
        } else if into_msg && left > (self.buf.len() / 2) as u64 {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(RESERVE_AHEAD);
            self.msg.reserve(want);
            let n = self.io.read_buf(&mut (&mut self.msg).limit(want)).await.map_err(io_error)?;
            if n == 0 {
                return Err(ReadError::Closed);
            }
            n
        } else {
            self.fill_to(1).await?;
            return Ok(());
        };
        if into_msg {
            let len = self.msg.len();
            unmask(&mut self.msg[len - got..], head.mask, phase);
            // Compressed text is checked once inflated.
            if self.msg_op == Some(OpCode::Text) && !self.msg_compressed {
                self.check_utf8(head.fin && head.done + got as u64 == head.len)?;
            }
        } else {
            let end = self.control_len + got;
            unmask(&mut self.control[self.control_len..end], head.mask, phase);
            self.control_len = end;
        }
        head.done += got as u64;
        self.frame = Some(head);
        Ok(())
    }

    /// Checks the text received since the last check. An incomplete
    /// character at the end waits for more bytes, unless `complete`.
    fn check_utf8(&mut self, complete: bool) -> Result<(), ReadError> {
        match std::str::from_utf8(&self.msg[self.utf8_valid..]) {
            Ok(_) => self.utf8_valid = self.msg.len(),
            Err(e) if e.error_len().is_none() && !complete => self.utf8_valid += e.valid_up_to(),
            Err(_) => return Err(ReadError::InvalidUtf8),
        }
        Ok(())
    }

    /// Reads until at least `n` unread bytes are buffered (`n` is at most
    /// a frame header, which always fits).
    async fn fill_to(&mut self, n: usize) -> Result<(), ReadError> {
        while self.end - self.start < n {
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.buf.len() - self.start < n {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            let got = self.io.read(&mut self.buf[self.end..]).await.map_err(io_error)?;
            if got == 0 {
                return Err(ReadError::Closed);
            }
            self.end += got;
        }
        Ok(())
    }

    /// Reads and drops whatever the peer still sends, until it closes the
    /// connection: after failing a connection, so that closing the socket
    /// with unread bytes does not reset it before the peer has read the
    /// close frame.
    pub async fn discard_until_eof(&mut self) {
        while let Ok(n) = self.io.read(&mut self.buf[..]).await {
            if n == 0 {
                break;
            }
        }
        (self.start, self.end) = (0, 0);
    }
}

/// A complete control frame as a message, with its close payload checked.
fn control_message(op: OpCode, payload: &[u8]) -> Result<Incoming<'_>, ReadError> {
    Ok(match op {
        OpCode::Ping => Incoming::Ping(payload),
        OpCode::Pong => Incoming::Pong(payload),
        _ => match payload {
            [] => Incoming::Close(1005, ""),
            [_] => return Err(ReadError::Protocol("close payload of one byte")),
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !close_code_allowed(code) {
                    return Err(ReadError::Protocol("close code not allowed"));
                }
                let reason = std::str::from_utf8(reason).map_err(|_| ReadError::InvalidUtf8)?;
                Incoming::Close(code, reason)
            }
        },
    })
}

fn io_error(e: io::Error) -> ReadError {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => ReadError::Closed,
        _ => ReadError::Io(e),
    }
}

/// XORs `data` with the masking key, starting `phase` bytes into it.
pub fn unmask(data: &mut [u8], mask: [u8; 4], phase: usize) {
    let key = [0, 1, 2, 3].map(|i| mask[(phase + i) % 4]);
    let mut words = data.chunks_exact_mut(4);
    for w in &mut words {
        for (b, k) in w.iter_mut().zip(key) {
            *b ^= k;
        }
    }
    for (b, k) in words.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
}

/// Writes the header of an unmasked final frame; returns its length.
pub(crate) fn write_head(out: &mut [u8; 10], op: OpCode, len: usize) -> usize {
    write_head_rsv1(out, op, len, false)
}

/// [`write_head`], with RSV1 set when `compressed` (permessage-deflate).
fn write_head_rsv1(out: &mut [u8; 10], op: OpCode, len: usize, compressed: bool) -> usize {
    out[0] = 0x80 | if compressed { 0x40 } else { 0 } | op.bits();
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Appends one whole frame to `out`: the header, with RSV1 set, and
/// `payload` compressed by `deflater` (permessage-deflate, RFC 7692 7.2.1).
/// Frames compressed by one [`Deflater`] must reach the peer in the order
/// they were made, every one of them: with context takeover each may refer
/// to the ones before.
pub fn compressed_frame(deflater: &mut Deflater, op: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    // The header's size depends on the compressed length: compress behind
    // room for the longest header, then close the gap.
    let at = out.len();
    out.extend_from_slice(&[0; 10]);
    deflater.compress(payload, out);
    let len = out.len() - at - 10;
    let mut head = [0u8; 10];
    let h = write_head_rsv1(&mut head, op, len, true);
    out.copy_within(at + 10.., at + h);
    out.truncate(at + h + len);
    out[at..at + h].copy_from_slice(&head[..h]);
}

/// Appends frames to `out`, one per payload, each with the opcode `op_of`
/// gives it; data frames compressed when there is a `deflater`.
pub(crate) fn append_frames<T: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    mut deflater: Option<&mut Deflater>,
    payloads: &[T],
    op_of: impl Fn(&T) -> OpCode,
) {
    for p in payloads {
        let op = op_of(p);
        let p = p.as_ref();
        match deflater.as_deref_mut() {
            // Control frames are never compressed (RFC 7692 6.1).
            Some(d) if !op.is_control() => compressed_frame(d, op, p, out),
            _ => {
                let mut head = [0u8; 10];
                let n = write_head(&mut head, op, p.len());
                out.extend_from_slice(&head[..n]);
                out.extend_from_slice(p);
            }
        }
    }
}

/// Writes frames to the peer. Uncompressed, it keeps no buffer: see the
/// module docs.
pub struct Writer<W> {
    io: W,
    /// The compressor, when permessage-deflate was negotiated.
    deflater: Option<Deflater>,
    /// Compressed frames on their way out, freed after a write that grew
    /// it past [`KEEP_MESSAGE_BUF`].
    out: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// A writer on `io`.
    pub fn new(io: W) -> Writer<W> {
        Writer::with_deflater(io, None)
    }

    /// A writer on `io` that compresses data frames with `deflater`, when
    /// there is one.
    pub fn with_deflater(io: W, deflater: Option<Deflater>) -> Writer<W> {
        Writer { io, deflater, out: Vec::new() }
    }

    /// Writes one frame per payload, in order, each with the opcode
    /// `op_of` gives it (one system call per [`FRAMES_PER_WRITE`] frames
    /// when the socket takes vectored writes), and flushes.
    pub async fn send_each<T: AsRef<[u8]>>(
        &mut self,
        payloads: &[T],
        op_of: impl Fn(&T) -> OpCode,
    ) -> io::Result<()> {
        if self.deflater.is_some() {
            return self.send_compressed(payloads, op_of).await;
        }
        if !self.io.is_write_vectored() {
            return self.send_copied(payloads, op_of).await;
        }
        for group in payloads.chunks(FRAMES_PER_WRITE) {
            let mut heads = [[0u8; 10]; FRAMES_PER_WRITE];
            let mut lens = [0usize; FRAMES_PER_WRITE];
            for (i, p) in group.iter().enumerate() {
                lens[i] = write_head(&mut heads[i], op_of(p), p.as_ref().len());
            }
            let mut slices = [IoSlice::new(&[]); 2 * FRAMES_PER_WRITE];
            for (i, p) in group.iter().enumerate() {
                slices[2 * i] = IoSlice::new(&heads[i][..lens[i]]);
                slices[2 * i + 1] = IoSlice::new(p.as_ref());
            }
            let mut left = &mut slices[..2 * group.len()];
            while !left.is_empty() {
                let n = self.io.write_vectored(left).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                IoSlice::advance_slices(&mut left, n);
            }
        }
        self.io.flush().await
    }

    /// [`Writer::send_each`] for a socket without vectored writes: one
    /// copy into a buffer that lives for this call only.
    async fn send_copied<T: AsRef<[u8]>>(
        &mut self,
        payloads: &[T],
        op_of: impl Fn(&T) -> OpCode,
    ) -> io::Result<()> {
        let total = payloads.iter().map(|p| p.as_ref().len() + 10).sum::<usize>();
        let mut out = Vec::with_capacity(total);
        append_frames(&mut out, None, payloads, op_of);
        self.io.write_all(&out).await?;
        self.io.flush().await
    }

    /// [`Writer::send_each`] with permessage-deflate: the frames are built
    /// in the writer's buffer.
    async fn send_compressed<T: AsRef<[u8]>>(
        &mut self,
        payloads: &[T],
        op_of: impl Fn(&T) -> OpCode,
    ) -> io::Result<()> {
        self.out.clear();
        append_frames(&mut self.out, self.deflater.as_mut(), payloads, op_of);
        let written = self.io.write_all(&self.out).await;
        if self.out.capacity() > KEEP_MESSAGE_BUF {
            self.out = Vec::new();
        }
        written?;
        self.io.flush().await
    }

    /// Writes bytes that are already framed (the rest of a frame another
    /// writer started), and flushes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Writes one frame and flushes.
    pub async fn send(&mut self, op: OpCode, payload: &[u8]) -> io::Result<()> {
        self.send_each(&[payload], |_| op).await
    }

    /// Sends a close frame with `code` (none for 1005) and `reason`.
    pub async fn close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        let mut payload = [0u8; MAX_CONTROL];
        let len = if code == 1005 {
            0
        } else {
            let reason = &reason.as_bytes()[..reason.len().min(MAX_CONTROL - 2)];
            payload[..2].copy_from_slice(&code.to_be_bytes());
            payload[2..2 + reason.len()].copy_from_slice(reason);
            2 + reason.len()
        };
        self.send(OpCode::Close, &payload[..len]).await
    }

    /// Shuts the writing side down (TCP FIN, or TLS close_notify first).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.io.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::DuplexStream;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame as TFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode as TOp};
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

    const LIMITS: Limits = Limits { max_message: 64 * 1024, max_frame: 64 * 1024 };

    /// A tungstenite client on one end of a pipe (the reference
    /// implementation), our reader and writer on the other. The pipe is
    /// small so that large frames arrive in pieces.
    async fn pair(
        limits: Limits,
    ) -> (
        WebSocketStream<DuplexStream>,
        Reader<tokio::io::ReadHalf<DuplexStream>>,
        Writer<tokio::io::WriteHalf<DuplexStream>>,
    ) {
        let (client, server) = tokio::io::duplex(4096);
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let (rd, wr) = tokio::io::split(server);
        (client, Reader::new(rd, &[], limits), Writer::new(wr))
    }

    /// The next message, owned.
    async fn next_owned<R: AsyncRead + Unpin>(r: &mut Reader<R>) -> Result<String, String> {
        match r.next().await {
            Ok(Incoming::Text(t)) => Ok(format!("text:{}", std::str::from_utf8(t).unwrap())),
            Ok(Incoming::Binary(b)) => Ok(format!("binary:{}", b.len())),
            Ok(Incoming::Ping(p)) => Ok(format!("ping:{}", String::from_utf8_lossy(p))),
            Ok(Incoming::Pong(p)) => Ok(format!("pong:{}", String::from_utf8_lossy(p))),
            Ok(Incoming::Close(c, reason)) => Ok(format!("close:{c}:{reason}")),
            Err(e) => Err(format!("{:?}", e.close_code())),
        }
    }

    #[test]
    fn unmask_matches_the_byte_by_byte_definition() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for phase in 0..4 {
            for len in 0..40 {
                let data: Vec<u8> = (0..len as u8).collect();
                let mut fast = data.clone();
                unmask(&mut fast, mask, phase);
                // RFC 6455 5.3: octet i XOR mask[i mod 4], counted from the
                // start of the payload.
                let slow: Vec<u8> =
                    data.iter().enumerate().map(|(i, b)| b ^ mask[(phase + i) % 4]).collect();
                assert_eq!(fast, slow, "phase {phase} len {len}");
            }
        }
    }

    #[test]
    fn headers_use_the_shortest_length_encoding() {
        let mut h = [0u8; 10];
        assert_eq!(write_head(&mut h, OpCode::Text, 125), 2);
        assert_eq!(h[..2], [0x81, 125]);
        assert_eq!(write_head(&mut h, OpCode::Binary, 126), 4);
        assert_eq!(h[..4], [0x82, 126, 0, 126]);
        assert_eq!(write_head(&mut h, OpCode::Binary, 70_000), 10);
        assert_eq!(h[..10], [0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    #[tokio::test]
    async fn reads_what_the_reference_client_sends() {
        let (mut client, mut reader, _w) = pair(LIMITS).await;
        // The client writes from its own task: a large message does not
        // fit the pipe, so it is read while it is being written.
        let send = tokio::spawn(async move {
            let close = CloseFrame { code: 4000.into(), reason: "bye".into() };
            let msgs = [
                Message::text("héllo"),
                Message::binary(vec![7u8; 60_000]),
                Message::Ping("p".into()),
                Message::Pong("q".into()),
                Message::Close(Some(close)),
            ];
            for m in msgs {
                client.send(m).await.unwrap();
            }
            client
        });
        assert_eq!(next_owned(&mut reader).await, Ok("text:héllo".into()));
        // A large message arrives in many reads and straight into the
        // message buffer...
        assert_eq!(reader.next().await.unwrap(), Incoming::Binary(&vec![7u8; 60_000]));
        // ...which is freed once the next message is read.
        assert_eq!(next_owned(&mut reader).await, Ok("ping:p".into()));
        assert_eq!(reader.msg.capacity(), 0);
        assert_eq!(next_owned(&mut reader).await, Ok("pong:q".into()));
        assert_eq!(next_owned(&mut reader).await, Ok("close:4000:bye".into()));
        send.await.unwrap();
    }

    #[tokio::test]
    async fn reassembles_fragments_around_control_frames() {
        let (mut client, mut reader, _w) = pair(LIMITS).await;
        let first = TFrame::message("frag".as_bytes().to_vec(), TOp::Data(Data::Text), false);
        let ping = TFrame::ping(b"x".to_vec());
        let last = TFrame::message("ments é".as_bytes().to_vec(), TOp::Data(Data::Continue), true);
        for f in [first, ping, last] {
            client.send(Message::Frame(f)).await.unwrap();
        }
        // The ping comes out between the fragments, then the whole text.
        assert_eq!(next_owned(&mut reader).await, Ok("ping:x".into()));
        assert_eq!(next_owned(&mut reader).await, Ok("text:fragments é".into()));
    }

    #[tokio::test]
    async fn a_character_split_across_fragments_is_valid_text() {
        let (mut client, mut reader, _w) = pair(LIMITS).await;
        let bytes = "€".as_bytes();
        let first = TFrame::message(bytes[..1].to_vec(), TOp::Data(Data::Text), false);
        let last = TFrame::message(bytes[1..].to_vec(), TOp::Data(Data::Continue), true);
        for f in [first, last] {
            client.send(Message::Frame(f)).await.unwrap();
        }
        assert_eq!(next_owned(&mut reader).await, Ok("text:€".into()));
    }

    /// A client frame as raw bytes: `b0` (FIN, RSV, opcode), a 7-bit or
    /// 16-bit length, and the payload masked with a fixed key.
    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![b0];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        let start = out.len();
        out.extend_from_slice(payload);
        unmask(&mut out[start..], mask, 0);
        out
    }

    /// The close code each broken input gets (`None`: the peer is gone).
    #[tokio::test]
    async fn broken_frames_fail_with_their_close_code() {
        let small = Limits { max_message: 256, max_frame: 1024 };
        let cases: Vec<(&str, Vec<u8>, Limits, Option<u16>)> = vec![
            ("message too large", masked(0x82, &[0; 300]), small, Some(1009)),
            (
                "frame too large",
                masked(0x82, &[0; 300]),
                Limits { max_message: 1024, max_frame: 256 },
                Some(1009),
            ),
            (
                "fragments too large together",
                [masked(0x02, &[0; 200]), masked(0x80, &[0; 100])].concat(),
                small,
                Some(1009),
            ),
            ("invalid UTF-8", masked(0x81, &[0xc3, 0x28]), LIMITS, Some(1007)),
            (
                "a character cut by an empty final fragment",
                [masked(0x01, &[b'a', 0xe2, 0x82]), masked(0x80, b"")].concat(),
                LIMITS,
                Some(1007),
            ),
            ("continuation first", masked(0x80, b"x"), LIMITS, Some(1002)),
            (
                "new message inside a fragmented one",
                [masked(0x01, b"a"), masked(0x81, b"b")].concat(),
                LIMITS,
                Some(1002),
            ),
            ("reserved opcode", masked(0x83, b"x"), LIMITS, Some(1002)),
            ("reserved bit", masked(0xC1, b"x"), LIMITS, Some(1002)),
            ("unmasked", vec![0x81, 0x01, b'x'], LIMITS, Some(1002)),
            ("fragmented ping", masked(0x09, b"x"), LIMITS, Some(1002)),
            ("ping over 125 bytes", masked(0x89, &[0; 126]), LIMITS, Some(1002)),
            (
                "close code 1005 on the wire",
                masked(0x88, &1005u16.to_be_bytes()),
                LIMITS,
                Some(1002),
            ),
            ("close payload of one byte", masked(0x88, &[3]), LIMITS, Some(1002)),
            ("close reason not UTF-8", masked(0x88, &[3, 232, 0xff]), LIMITS, Some(1007)),
            ("cut in the header", vec![0x81], LIMITS, None),
            ("cut in the payload", masked(0x81, b"hello")[..8].to_vec(), LIMITS, None),
        ];
        for (name, bytes, limits, code) in cases {
            let (mut client, server) = tokio::io::duplex(4096);
            let mut reader = Reader::new(server, &[], limits);
            client.write_all(&bytes).await.unwrap();
            drop(client);
            assert_eq!(next_owned(&mut reader).await, Err(format!("{code:?}")), "{name}");
        }
    }

    /// `payload` compressed alone, as a client that was told
    /// `client_no_context_takeover` sends it.
    fn deflated(payload: &[u8]) -> Vec<u8> {
        deflate::testing::client_deflate(payload, 9)
    }

    #[tokio::test]
    async fn compressed_messages_are_inflated_fragmented_or_not() {
        let text = "q".repeat(3000) + "é";
        let packed = deflated(text.as_bytes());
        let (a, b) = packed.split_at(packed.len() / 2);
        let bytes = [
            // Whole, RSV1 on its only frame.
            masked(0xC1, &packed),
            // In two fragments: RSV1 on the first only, a ping between.
            masked(0x41, a),
            masked(0x89, b"p"),
            masked(0x80, b),
            // An uncompressed message on the same connection.
            masked(0x82, &[1, 2, 3]),
            // Compressed binary.
            masked(0xC2, &deflated(&[9; 500])),
        ]
        .concat();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = Reader::new(server, &[], LIMITS).inflating(true);
        client.write_all(&bytes).await.unwrap();
        assert_eq!(next_owned(&mut reader).await, Ok(format!("text:{text}")));
        assert_eq!(next_owned(&mut reader).await, Ok("ping:p".into()));
        assert_eq!(next_owned(&mut reader).await, Ok(format!("text:{text}")));
        assert_eq!(reader.next().await.unwrap(), Incoming::Binary(&[1, 2, 3]));
        assert_eq!(reader.next().await.unwrap(), Incoming::Binary(&[9; 500]));
    }

    /// The close code each broken compressed input gets, with
    /// permessage-deflate negotiated.
    #[tokio::test]
    async fn broken_compressed_frames_fail_with_their_close_code() {
        let small = Limits { max_message: 1024, max_frame: 1024 };
        let bomb = deflated(&[b'a'; 1 << 19]);
        let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
            // 512 KiB that arrive as about 512 bytes: refused as they inflate.
            ("inflates past the limit", masked(0xC2, &bomb), Some(1009)),
            ("not a deflate stream", masked(0xC1, &[0xff, 0xff, 0xff]), Some(1007)),
            ("compressed text not UTF-8", masked(0xC1, &deflated(&[b'a', 0xff])), Some(1007)),
            (
                "RSV1 on a continuation",
                [masked(0x41, &deflated(b"ab")), masked(0xC0, b"")].concat(),
                Some(1002),
            ),
            ("RSV1 on a ping", masked(0xC9, b""), Some(1002)),
            ("RSV2 set", masked(0xA1, b"x"), Some(1002)),
            ("RSV3 set", masked(0x91, b"x"), Some(1002)),
        ];
        assert!(bomb.len() < small.max_frame, "{}", bomb.len());
        for (name, bytes, code) in cases {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let mut reader = Reader::new(server, &[], small).inflating(true);
            client.write_all(&bytes).await.unwrap();
            drop(client);
            assert_eq!(next_owned(&mut reader).await, Err(format!("{code:?}")), "{name}");
            // The bomb cost the limit, not what it claimed.
            assert!(reader.inflated.capacity() <= small.max_message + 1, "{name}");
        }
    }

    #[tokio::test]
    async fn the_writer_compresses_data_frames_with_context_takeover() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let offer = ["permessage-deflate"];
        let settings = deflate::Settings { window_bits: 12 };
        let agreement = deflate::negotiate(&offer, &settings).unwrap();
        let mut writer = Writer::with_deflater(server, Some(Deflater::new(&agreement)));
        let msgs: Vec<String> = (0..200)
            .map(|i| format!(r#"[{{"type":"heartbeat","cseq":{i},"t":1764140001352}}]"#))
            .collect();
        for group in msgs.chunks(7) {
            writer.send_each(group, |_| OpCode::Text).await.unwrap();
        }
        writer.send(OpCode::Ping, b"still here").await.unwrap();
        drop(writer);
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.unwrap();
        // The peer's side: one decompressor, its window kept across
        // messages.
        let mut rx = deflate::testing::Receiver::new(12);
        let mut rest = &wire[..];
        let mut got = Vec::new();
        while !rest.is_empty() {
            let (b0, len) = (rest[0], usize::from(rest[1]));
            assert!(len < 126, "short frames only here");
            let payload = &rest[2..2 + len];
            rest = &rest[2 + len..];
            if b0 == 0x89 {
                // Control frames go uncompressed, RSV1 clear.
                assert_eq!(payload, b"still here");
                continue;
            }
            assert_eq!(b0, 0xC1, "FIN, RSV1, text");
            got.push(String::from_utf8(rx.receive(payload)).unwrap());
        }
        assert_eq!(got, msgs);
        // Each heartbeat after the first is mostly a back-reference.
        assert!(wire.len() * 3 < msgs.iter().map(String::len).sum::<usize>(), "{}", wire.len());
    }

    #[tokio::test]
    async fn invalid_text_fails_before_the_message_ends() {
        let (mut client, mut reader, _w) = pair(LIMITS).await;
        // An invalid first fragment: the error comes without the rest.
        let first = TFrame::message(vec![b'a', 0xff], TOp::Data(Data::Text), false);
        client.send(Message::Frame(first)).await.unwrap();
        assert_eq!(next_owned(&mut reader).await, Err("Some(1007)".into()));
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_is_closed_not_an_error_to_answer() {
        let (client, mut reader, _w) = pair(LIMITS).await;
        drop(client);
        assert_eq!(next_owned(&mut reader).await, Err("None".into()));
    }

    #[tokio::test]
    async fn the_reference_client_reads_what_we_write() {
        let (mut client, _r, mut writer) = pair(LIMITS).await;
        let big = vec![b'b'; 70_000];
        let payloads: [&[u8]; 3] = [b"[1]", &big, b""];
        let read = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(Ok(m)) = client.next().await {
                let close = matches!(m, Message::Close(_));
                got.push(m);
                if close {
                    break;
                }
            }
            got
        });
        // Opcodes by payload: what the session does to tell binary
        // market data from JSON text.
        let op_of = |p: &&[u8]| match p.first() {
            Some(b'[') => OpCode::Text,
            Some(_) => OpCode::Binary,
            None => OpCode::Ping,
        };
        writer.send_each(&payloads, op_of).await.unwrap();
        writer.close(4008, "slow client").await.unwrap();
        let got = read.await.unwrap();
        assert_eq!(got[0], Message::text("[1]"));
        assert_eq!(got[1], Message::binary(big));
        assert_eq!(got[2], Message::Ping(bytes::Bytes::new()));
        let close = CloseFrame { code: 4008.into(), reason: "slow client".into() };
        assert_eq!(got[3], Message::Close(Some(close)));
    }

    #[tokio::test]
    async fn bytes_read_past_the_request_head_are_the_first_frame() {
        // A masked "hi" text frame, as a client sends it right behind its
        // upgrade request.
        let mask = [1, 2, 3, 4];
        let mut frame = vec![0x81, 0x82, 1, 2, 3, 4, b'h', b'i'];
        unmask(&mut frame[6..], mask, 0);
        let (_client, server) = tokio::io::duplex(64);
        let mut reader = Reader::new(server, &frame, LIMITS);
        assert_eq!(next_owned(&mut reader).await, Ok("text:hi".into()));
    }
}
