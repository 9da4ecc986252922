//! permessage-deflate (RFC 7692): the negotiation in the upgrade, and the
//! compressor and decompressor of one connection. Framing (the RSV1 bit,
//! where a compressed message starts and ends) stays in [`super::ws`].
//!
//! The negotiation accepts the client's first `permessage-deflate` offer it
//! can honour and answers with the parameters the server settles on:
//!
//! - always `client_no_context_takeover` (RFC 7692 7.1.1.2 lets a server
//!   add it to any offer): every client message is then a deflate stream
//!   of its own, so a connection keeps no inflate window between messages
//!   (clients send small commands; keeping 32 KiB of window per connection
//!   for them would cost more than it saves);
//! - `server_no_context_takeover` when the client asks for it (the server
//!   then resets its compressor after every message);
//! - `server_max_window_bits` when the server's window is smaller than 15
//!   or the client limits it (the smaller of the two; a client that insists
//!   on 8 is declined, since zlib cannot raw-deflate with a 256-byte
//!   window).
//!
//! An offer with an unknown, duplicate or malformed parameter is declined
//! (RFC 7692 7), and the next offer is tried.
//!
//! Compression is tickwire's own encoder ([`encoder`]): 16 KiB per
//! connection at the default window, where zlib-rs holds 175 KiB whatever
//! its settings (its hash table alone is 128 KiB), for a ratio within a few
//! points of zlib-rs's level 1 at the same CPU (BENCHMARKS.md,
//! "permessage-deflate"). Inflating client messages, rarer and each alone,
//! stays with zlib-rs.

pub mod encoder;

use zlib_rs::{Inflate, InflateFlush, Status};

use encoder::Encoder;

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// What every flushed message ends with, and what RFC 7692 7.2.1 has the
/// sender strip and the receiver append.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The server's compression settings (validated flags, see
/// [`crate::config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// LZ77 window of the server's compressor, 9 to 15
    /// (`--compression-window-bits`); a compressor holds twice the window
    /// and an 8 KiB table.
    pub window_bits: u8,
}

/// What the server and one client agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// The server compresses every message on its own (the client asked
    /// with `server_no_context_takeover`).
    pub server_no_context_takeover: bool,
    /// The server's window: at most the configured one and at most what
    /// the client allowed.
    pub server_max_window_bits: u8,
    /// Whether the answer names `server_max_window_bits` (it must when the
    /// client named it; it need not when the window is 15).
    announce_window: bool,
}

impl Agreement {
    /// The `Sec-WebSocket-Extensions` value of the server's answer.
    pub fn response(&self) -> String {
        let mut s = String::from(EXTENSION);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        s.push_str("; client_no_context_takeover");
        if self.announce_window {
            s.push_str("; server_max_window_bits=");
            s.push_str(&self.server_max_window_bits.to_string());
        }
        s
    }
}

/// Picks the first `permessage-deflate` offer that the server can accept
/// from the `Sec-WebSocket-Extensions` header values of a request (in
/// order; a client lists its preference first). `None`: no offer, or none
/// acceptable; the connection then goes uncompressed.
pub fn negotiate<S: AsRef<str>>(header_values: &[S], settings: &Settings) -> Option<Agreement> {
    header_values
        .iter()
        .flat_map(|v| split_outside_quotes(v.as_ref(), ','))
        .find_map(|offer| accept(offer, settings))
}

/// Accepts one extension offer (`name; param; param=value`), or declines
/// it (`None`).
fn accept(offer: &str, settings: &Settings) -> Option<Agreement> {
    let mut parts = split_outside_quotes(offer, ';');
    if !parts.next()?.trim().eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut server_no_context = false;
    let mut client_no_context = false;
    let mut server_window: Option<u8> = None;
    let mut client_window: Option<Option<u8>> = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) if !server_no_context => {
                server_no_context = true;
            }
            ("client_no_context_takeover", None) if !client_no_context => {
                client_no_context = true;
            }
            ("server_max_window_bits", Some(v)) if server_window.is_none() => {
                server_window = Some(window_bits(v)?);
            }
            ("client_max_window_bits", v) if client_window.is_none() => {
                client_window = Some(match v {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                });
            }
            // Unknown, duplicate, or a value where none belongs (or none
            // where one must be): decline (RFC 7692 7).
            _ => return None,
        }
    }
    // A 256-byte window is declined: zlib, which most clients inflate
    // with, treats a raw window of 8 as 9.
    if server_window == Some(8) {
        return None;
    }
    let window = settings.window_bits.min(server_window.unwrap_or(15));
    Some(Agreement {
        server_no_context_takeover: server_no_context,
        server_max_window_bits: window,
        announce_window: window < 15 || server_window.is_some(),
    })
}

/// A window size parameter's value: 8 to 15, digits only, without a
/// leading zero (RFC 7692 7.1.2).
fn window_bits(v: &str) -> Option<u8> {
    match v.as_bytes() {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// A parameter value as a token or a quoted string (RFC 6455 9.1: the
/// quoted form must hold a token after unescaping; window sizes have no
/// characters to escape, so a backslash is refused). `None`: malformed.
fn unquote(v: &str) -> Option<&str> {
    let v = match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => v,
    };
    (!v.is_empty() && !v.contains(['"', '\\'])).then_some(v)
}

/// Splits `s` at `sep` where it is not inside a quoted string.
fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut escaped = false;
    s.split(move |c: char| {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            return true;
        }
        false
    })
    .filter(|p| !p.trim().is_empty())
}

/// The compressor of one connection: every message it compresses becomes
/// the payload of one frame with RSV1 set, in the order compressed. With
/// context takeover each message may refer to the ones before it, so every
/// compressed message must reach the peer, in that order.
pub struct Deflater {
    /// Boxed: a writer that does not compress (most) keeps only this
    /// pointer's `None`.
    e: Box<Encoder>,
    /// Forget the history after every message (`server_no_context_takeover`).
    reset_each: bool,
}

impl Deflater {
    /// A compressor for what `agreement` says.
    pub fn new(agreement: &Agreement) -> Deflater {
        Deflater {
            e: Box::new(Encoder::new(agreement.server_max_window_bits)),
            reset_each: agreement.server_no_context_takeover,
        }
    }

    /// The most bytes [`Deflater::compress`] appends for `len` bytes: room
    /// to reserve so that compressing costs one allocation.
    pub fn bound(len: usize) -> usize {
        encoder::bound(len)
    }

    /// Appends the compressed form of one message to `out`, without the
    /// `00 00 ff ff` every flushed message ends with (RFC 7692 7.2.1).
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        self.e.compress(payload, out);
        if self.reset_each {
            self.e.reset();
        }
    }
}

/// Why a compressed message could not be inflated. Each says how to fail
/// the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the message limit: close 1009.
    TooLarge,
    /// Not a deflate stream: close 1007 (the payload does not fit the
    /// message's declared encoding, as for bad UTF-8).
    Corrupt,
}

/// The first step of inflation's output: the inflated message grows from
/// this, doubling, so a small message that claims to inflate to a lot
/// costs no more than the limit.
const INFLATE_STEP: usize = 16 * 1024;

/// Inflates one client message (its payload as it came, without the tail)
/// into `out`, which it replaces, stopping as soon as the output passes
/// `limit`: a decompression bomb costs at most `limit` plus one byte. Every
/// client message is a deflate stream of its own (the server always
/// answers `client_no_context_takeover`), so the decompressor lives for
/// this call only.
pub fn inflate(payload: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
    out.clear();
    // A 15-bit window decodes a stream made with any smaller one.
    let mut z = Inflate::new(false, 15);
    let mut inputs = [payload, &TAIL[..]];
    let mut which = 0;
    loop {
        if which == 0 && inputs[0].is_empty() {
            which = 1;
        }
        let at = out.len();
        if at > limit {
            return Err(InflateError::TooLarge);
        }
        // Doubling, but exactly up to the limit and one byte more (plain
        // doubling would take a buffer at the limit to twice it).
        let step = INFLATE_STEP.max(at).min(limit + 1 - at);
        out.reserve_exact(step);
        out.resize(at + step, 0);
        let before = (z.total_in(), z.total_out());
        let status = z.decompress(inputs[which], &mut out[at..], InflateFlush::SyncFlush);
        let read = (z.total_in() - before.0) as usize;
        let wrote = (z.total_out() - before.1) as usize;
        out.truncate(at + wrote);
        inputs[which] = &inputs[which][read..];
        let all_in = which == 1 && inputs[1].is_empty();
        match status {
            Err(_) => return Err(InflateError::Corrupt),
            // A final block (BFINAL) ends the stream: nothing of the
            // message may follow it (the tail added here may).
            Ok(Status::StreamEnd) if !inputs[0].is_empty() => return Err(InflateError::Corrupt),
            Ok(Status::StreamEnd) => return check(out, limit),
            // Done when every byte is in and the output has room left
            // (a full output may hide more to come).
            Ok(_) if all_in && wrote < step => return check(out, limit),
            Ok(_) if read == 0 && wrote == 0 => {
                // No progress: finished if all is in, else stuck.
                return if all_in { check(out, limit) } else { Err(InflateError::Corrupt) };
            }
            Ok(_) => {}
        }
    }
}

fn check(out: &[u8], limit: usize) -> Result<(), InflateError> {
    if out.len() > limit { Err(InflateError::TooLarge) } else { Ok(()) }
}

/// The peer's side of the extension for tests, done by zlib-rs (the
/// reference): a decompressor that keeps its window, a client's message
/// compressed alone, and frames like the server's.
#[cfg(test)]
pub(crate) mod testing {
    use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Status};

    use super::TAIL;

    /// The client's decompressor: its window kept across messages (as a
    /// client that was not asked for `server_no_context_takeover` keeps
    /// it), or a fresh one per message.
    pub(crate) struct Receiver(Inflate);

    impl Receiver {
        pub(crate) fn new(window_bits: u8) -> Receiver {
            Receiver(Inflate::new(false, window_bits))
        }

        /// One message's payload (without the tail), inflated; panics if
        /// it does not inflate whole.
        pub(crate) fn receive(&mut self, payload: &[u8]) -> Vec<u8> {
            let input = [payload, &TAIL[..]].concat();
            let mut rest = &input[..];
            let mut out = Vec::new();
            loop {
                let at = out.len();
                out.resize(at + 64 * 1024, 0);
                let before = (self.0.total_in(), self.0.total_out());
                let status = self.0.decompress(rest, &mut out[at..], InflateFlush::SyncFlush);
                assert!(matches!(status, Ok(Status::Ok)), "{status:?}");
                rest = &rest[(self.0.total_in() - before.0) as usize..];
                let wrote = (self.0.total_out() - before.1) as usize;
                out.truncate(at + wrote);
                if rest.is_empty() && wrote < 64 * 1024 {
                    return out;
                }
            }
        }
    }

    /// `payload` compressed alone by zlib at `level`, window 15, without
    /// the tail: what a client told `client_no_context_takeover` sends.
    pub(crate) fn client_deflate(payload: &[u8], level: i32) -> Vec<u8> {
        let config = DeflateConfig { level, window_bits: -15, ..DeflateConfig::default() };
        let mut z = Deflate::new_with_config(config);
        let mut out = vec![0; zlib_rs::compress_bound(payload.len()) + 16];
        let status = z.compress(payload, &mut out, DeflateFlush::SyncFlush);
        assert!(matches!(status, Ok(Status::Ok)), "{status:?}");
        out.truncate(z.total_out() as usize);
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - TAIL.len());
        out
    }

    /// JSON frames like the server's: a rising `cseq`, the same symbols
    /// again and again.
    pub(crate) fn frames(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let sym = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA"][i % 7];
                format!(
                    r#"[{{"type":"q","sym":"{sym}","seq":{},"cseq":{i},"bp":{}.{:02},"bs":{},"ap":{}.{:02},"as":100,"t":{}}}]"#,
                    1000 + i,
                    180 + i % 13,
                    i % 100,
                    100 * (1 + i % 5),
                    180 + i % 13,
                    (i + 1) % 100,
                    1_764_140_000_000u64 + 7 * i as u64
                )
                .into_bytes()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Receiver, client_deflate, frames};
    use super::*;

    const SETTINGS: Settings = Settings { window_bits: 15 };

    /// The answer to a request's extension headers, or "declined".
    fn answer(values: &[&str], settings: &Settings) -> String {
        negotiate(values, settings).map_or("declined".into(), |a| a.response())
    }

    #[test]
    fn offers_and_answers() {
        let ncp = "; client_no_context_takeover";
        let cases: Vec<(&str, Vec<&str>, Settings, String)> = vec![
            ("no header", vec![], SETTINGS, "declined".into()),
            ("another extension", vec!["x-webkit-deflate-frame"], SETTINGS, "declined".into()),
            (
                "bare offer",
                vec!["permessage-deflate"],
                SETTINGS,
                format!("permessage-deflate{ncp}"),
            ),
            (
                "what browsers send",
                vec!["permessage-deflate; client_max_window_bits"],
                SETTINGS,
                format!("permessage-deflate{ncp}"),
            ),
            (
                "client_max_window_bits with a value",
                vec!["permessage-deflate; client_max_window_bits=10"],
                SETTINGS,
                format!("permessage-deflate{ncp}"),
            ),
            (
                "the server's smaller window is announced",
                vec!["permessage-deflate"],
                Settings { window_bits: 12 },
                format!("permessage-deflate{ncp}; server_max_window_bits=12"),
            ),
            (
                "the client's limit wins when smaller",
                vec!["permessage-deflate; server_max_window_bits=10"],
                Settings { window_bits: 12 },
                format!("permessage-deflate{ncp}; server_max_window_bits=10"),
            ),
            (
                "the server's window wins when smaller",
                vec!["permessage-deflate; server_max_window_bits=14"],
                Settings { window_bits: 12 },
                format!("permessage-deflate{ncp}; server_max_window_bits=12"),
            ),
            (
                "a named limit is always answered",
                vec!["permessage-deflate; server_max_window_bits=15"],
                SETTINGS,
                format!("permessage-deflate{ncp}; server_max_window_bits=15"),
            ),
            (
                "server_no_context_takeover is honoured",
                vec!["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
                SETTINGS,
                format!("permessage-deflate; server_no_context_takeover{ncp}"),
            ),
            (
                "quoted values and spacing",
                vec![
                    r#"permessage-deflate ;server_max_window_bits="9" ; client_max_window_bits = "12""#,
                ],
                SETTINGS,
                format!("permessage-deflate{ncp}; server_max_window_bits=9"),
            ),
            (
                "a window of 8 is declined",
                vec!["permessage-deflate; server_max_window_bits=8"],
                SETTINGS,
                "declined".into(),
            ),
            (
                "...and the next offer taken",
                vec!["permessage-deflate; server_max_window_bits=8, permessage-deflate"],
                SETTINGS,
                format!("permessage-deflate{ncp}"),
            ),
            (
                "offers over several header lines, first acceptable wins",
                vec![
                    "foo; bar=\"a,b\"",
                    "permessage-deflate; x=1",
                    "permessage-deflate; server_no_context_takeover",
                ],
                SETTINGS,
                format!("permessage-deflate; server_no_context_takeover{ncp}"),
            ),
            (
                "client_max_window_bits=8 is only the client's own window",
                vec!["permessage-deflate; client_max_window_bits=8"],
                SETTINGS,
                format!("permessage-deflate{ncp}"),
            ),
            ("unknown parameter", vec!["permessage-deflate; foo"], SETTINGS, "declined".into()),
            (
                "duplicate parameter",
                vec!["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
                SETTINGS,
                "declined".into(),
            ),
            (
                "duplicate window",
                vec!["permessage-deflate; client_max_window_bits; client_max_window_bits=9"],
                SETTINGS,
                "declined".into(),
            ),
            (
                "a value on a flag",
                vec!["permessage-deflate; server_no_context_takeover=1"],
                SETTINGS,
                "declined".into(),
            ),
            (
                "server_max_window_bits without a value",
                vec!["permessage-deflate; server_max_window_bits"],
                SETTINGS,
                "declined".into(),
            ),
            (
                "a window out of range",
                vec!["permessage-deflate; server_max_window_bits=16"],
                SETTINGS,
                "declined".into(),
            ),
            (
                "a leading zero",
                vec!["permessage-deflate; client_max_window_bits=09"],
                SETTINGS,
                "declined".into(),
            ),
            (
                "not a number",
                vec!["permessage-deflate; client_max_window_bits=x"],
                SETTINGS,
                "declined".into(),
            ),
            (
                "an empty value",
                vec!["permessage-deflate; client_max_window_bits="],
                SETTINGS,
                "declined".into(),
            ),
            (
                "an unterminated quote",
                vec![r#"permessage-deflate; client_max_window_bits="10"#],
                SETTINGS,
                "declined".into(),
            ),
        ];
        for (name, values, settings, want) in cases {
            assert_eq!(answer(&values, &settings), want, "{name}");
        }
    }

    #[test]
    fn a_writer_without_compression_pays_a_pointer() {
        assert_eq!(std::mem::size_of::<Option<Deflater>>(), 16);
    }

    #[test]
    fn the_agreement_sets_the_compressor() {
        let offer = ["permessage-deflate; server_no_context_takeover; server_max_window_bits=10"];
        let a = negotiate(&offer, &Settings { window_bits: 12 }).unwrap();
        assert!(a.server_no_context_takeover);
        assert_eq!(a.server_max_window_bits, 10);
    }

    #[test]
    fn without_context_takeover_each_message_inflates_alone() {
        let offer = ["permessage-deflate; server_no_context_takeover"];
        let mut d = Deflater::new(&negotiate(&offer, &SETTINGS).unwrap());
        for m in frames(50) {
            let mut out = Vec::new();
            d.compress(&m, &mut out);
            // A fresh decompressor for every message: no message refers
            // to an earlier one.
            assert_eq!(Receiver::new(15).receive(&out), m);
        }
    }

    #[test]
    fn with_context_takeover_messages_refer_to_earlier_ones() {
        let mut d = Deflater::new(&negotiate(&["permessage-deflate"], &SETTINGS).unwrap());
        let mut rx = Receiver::new(15);
        let msgs = frames(200);
        let mut packed = 0;
        for m in &msgs {
            let mut out = Vec::new();
            d.compress(m, &mut out);
            assert_eq!(rx.receive(&out), *m);
            packed += out.len();
        }
        let plain: usize = msgs.iter().map(Vec::len).sum();
        assert!(packed * 2 < plain, "{packed} of {plain}");
    }

    #[test]
    fn a_bomb_stops_at_the_limit_without_inflating_it_all() {
        // What a hostile client sends: zlib at its best.
        let bomb = client_deflate(&vec![0u8; 10 << 20], 9);
        // Ten MiB of zeros fit in about ten KiB...
        assert!(bomb.len() < 16 * 1024, "{}", bomb.len());
        let limit = 64 * 1024;
        let mut out = Vec::new();
        assert_eq!(inflate(&bomb, limit, &mut out), Err(InflateError::TooLarge));
        // ...and inflating them stopped one byte past the limit, the
        // buffer never grown to the inflated size.
        assert!(out.capacity() <= limit + 1, "{}", out.capacity());
        // Exactly at the limit is fine.
        let exact = client_deflate(&vec![7u8; limit], 1);
        assert_eq!(inflate(&exact, limit, &mut out), Ok(()));
        assert_eq!(out.len(), limit);
        assert_eq!(inflate(&exact, limit - 1, &mut out), Err(InflateError::TooLarge));
    }

    #[test]
    fn broken_streams_are_corrupt() {
        let a = negotiate(&["permessage-deflate"], &SETTINGS).unwrap();
        let mut good = Vec::new();
        Deflater::new(&a).compress(b"a message long enough to be worth compressing", &mut good);
        let mut out = Vec::new();
        assert_eq!(inflate(&good, 1024, &mut out), Ok(()));
        // A reserved block type (BTYPE 11).
        assert_eq!(inflate(&[0xff, 0xff], 1024, &mut out), Err(InflateError::Corrupt));
        // A stored block whose length and its complement disagree.
        assert_eq!(
            inflate(&[0x00, 0x05, 0x00, 0x00, 0x00], 1024, &mut out),
            Err(InflateError::Corrupt)
        );
        // A message cut short is caught when the cut leaves bits that do
        // not decode (deflate has no length to check it against
        // otherwise): it never passes for the whole message.
        let cut = inflate(&good[..good.len() / 2], 1024, &mut out);
        assert!(cut.is_err() || out != b"a message long enough to be worth compressing");
        // A final block followed by more data.
        let mut fin = vec![0x01, 0x01, 0x00, 0xfe, 0xff, b'x'];
        assert_eq!(inflate(&fin, 1024, &mut out), Ok(()));
        assert_eq!(out, b"x");
        fin.push(0x00);
        assert_eq!(inflate(&fin, 1024, &mut out), Err(InflateError::Corrupt));
        // An empty payload is an empty stream cut short... but RFC 7692
        // 7.2.3.6 makes a lone 0x00 the empty message.
        assert_eq!(inflate(&[0x00], 1024, &mut out), Ok(()));
        assert!(out.is_empty());
    }
}
