//! Live ingest over TCP: `--tcp-feed HOST:PORT` connects to an upstream that
//! sends JSON lines (the schema of `feeds/README.md`, one quote or trade per
//! line) and turns them into ticks as they arrive.
//!
//! # Health
//!
//! - When the connection drops (EOF, reset, any read error) or cannot be
//!   made, the source reports [`FeedState::Stale`]: sessions get `status`
//!   `stale` and keep the last values.
//! - It reconnects with capped exponential backoff and jitter ([`Backoff`]):
//!   many servers behind one upstream that restarts do not reconnect in
//!   lockstep.
//! - Once connected again it reports [`FeedState::Live`] and data flows.
//! - A connection that stays open but says nothing for `stale_after` (the
//!   server's heartbeat interval) is also stale until the next line arrives.
//!   An upstream with quiet periods sends blank lines as heartbeats: they are
//!   ignored as data but count as signs of life.
//!
//! # Bad input
//!
//! A line that is not a valid record (or is longer than
//! [`jsonl::MAX_LINE`]) is skipped and counted, as in a replay file;
//! nothing the upstream sends can stop the source. Sequence numbers go on
//! across reconnects: the stream is the same, only the transport broke.
//!
//! Reads block for at most [`READ_WAIT`], so the feed thread notices
//! shutdown, and a tick is handed over as soon as its line is complete.

use std::io::{self, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::jsonl::{self, LineParser};
use super::synthetic::SplitMix64;
use super::{FeedSource, FeedState, Poll};
use crate::tick::{SymbolTable, Tick, now_ns};

/// Longest a read waits for data before the source answers the feed thread.
pub const READ_WAIT: Duration = Duration::from_millis(20);

/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Settings of a TCP feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConfig {
    /// The upstream, `HOST:PORT`.
    pub addr: String,
    /// Silence after which an open connection counts as stale.
    pub stale_after: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

impl TcpConfig {
    /// Defaults for `addr`: stale after 1 s of silence, reconnect after
    /// 100 ms doubling up to 5 s.
    pub fn new(addr: impl Into<String>) -> TcpConfig {
        TcpConfig {
            addr: addr.into(),
            stale_after: Duration::from_secs(1),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Capped exponential backoff with "equal jitter": attempt `k` waits a
/// uniformly random time in `[d/2, d]` with `d = min(max, min * 2^k)`.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// A backoff between `min` and `max`, with jitter seeded by `seed`.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff { min, max: max.max(min), attempt: 0, rng: SplitMix64::new(seed) }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        let d = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = d / 2;
        let nanos = half.as_nanos() as u64;
        let jitter = if nanos == 0 { 0 } else { self.rng.next_u64() % (nanos + 1) };
        half + Duration::from_nanos(jitter)
    }

    /// A connection succeeded: start again from `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The live TCP source. See the module docs.
pub struct TcpFeed {
    config: TcpConfig,
    parser: LineParser,
    conn: Option<TcpStream>,
    /// Bytes read from the socket.
    buf: Box<[u8]>,
    /// The incomplete line carried over from the previous read.
    line: Vec<u8>,
    /// The current line is over the limit: discard it up to its newline.
    overlong: bool,
    backoff: Backoff,
    next_attempt: Instant,
    last_data: Instant,
    /// What the source last told the feed thread.
    reported: FeedState,
    skipped: u64,
}

impl TcpFeed {
    /// A source for `config`, interning symbols in `table`. It connects on
    /// the first poll (an unreachable upstream is not an error: the feed is
    /// stale until it answers).
    pub fn new(config: TcpConfig, table: Arc<SymbolTable>) -> TcpFeed {
        let now = Instant::now();
        let backoff = Backoff::new(config.backoff_min, config.backoff_max, now_ns());
        TcpFeed {
            config,
            parser: LineParser::new(table),
            conn: None,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            line: Vec::with_capacity(512),
            overlong: false,
            backoff,
            next_attempt: now,
            last_data: now,
            reported: FeedState::Live,
            skipped: 0,
        }
    }

    /// Tells the feed thread about a change of health, once.
    fn report(&mut self, state: FeedState) -> Option<Poll> {
        (self.reported != state).then(|| {
            self.reported = state;
            Poll::State(state)
        })
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in self.config.addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    s.set_read_timeout(Some(READ_WAIT))?;
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn disconnect(&mut self, now: Instant, why: &dyn std::fmt::Display) -> Poll {
        tracing::warn!(upstream = %self.config.addr, reason = %why, "feed connection lost");
        self.conn = None;
        if !self.line.is_empty() || self.overlong {
            // A record cut in half by the disconnect.
            self.skipped += 1;
        }
        self.line.clear();
        self.overlong = false;
        self.next_attempt = now + self.backoff.next_delay();
        self.report(FeedState::Stale).unwrap_or(Poll::WaitUntil(self.next_attempt))
    }

    /// Splits `self.buf[..n]` into lines and parses the complete ones.
    fn take_lines(&mut self, n: usize, out: &mut Vec<Tick>) {
        let mut rest = &self.buf[..n];
        while !rest.is_empty() {
            let (chunk, done) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], Some(i + 1)),
                None => (rest, None),
            };
            if !self.overlong {
                if self.line.len() + chunk.len() > jsonl::MAX_LINE {
                    self.overlong = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            let Some(used) = done else { break };
            rest = &rest[used..];
            if std::mem::take(&mut self.overlong) {
                self.skipped += 1;
                continue;
            }
            let text = self.line.trim_ascii();
            if !text.is_empty() {
                let start = text.as_ptr() as usize - self.line.as_ptr() as usize;
                let end = start + text.len();
                match self.parser.parse(&mut self.line[start..end]) {
                    Ok(tick) => out.push(tick),
                    Err(why) => {
                        tracing::debug!(why, "skipped a feed line");
                        self.skipped += 1;
                    }
                }
            }
            self.line.clear();
        }
    }
}

impl FeedSource for TcpFeed {
    fn poll(&mut self, out: &mut Vec<Tick>) -> Poll {
        let now = Instant::now();
        let Some(conn) = self.conn.as_mut() else {
            if now < self.next_attempt {
                return Poll::WaitUntil(self.next_attempt);
            }
            return match self.connect() {
                Ok(stream) => {
                    tracing::info!(upstream = %self.config.addr, "feed connected");
                    self.conn = Some(stream);
                    self.backoff.reset();
                    self.last_data = now;
                    self.report(FeedState::Live).unwrap_or(Poll::Ready)
                }
                Err(e) => {
                    tracing::debug!(upstream = %self.config.addr, error = %e, "feed connect failed");
                    self.next_attempt = now + self.backoff.next_delay();
                    self.report(FeedState::Stale).unwrap_or(Poll::WaitUntil(self.next_attempt))
                }
            };
        };
        match conn.read(&mut self.buf) {
            Ok(0) => self.disconnect(now, &"upstream closed the connection"),
            Ok(n) => {
                self.last_data = now;
                self.take_lines(n, out);
                if out.is_empty() {
                    // Only heartbeats or garbage: still a sign of life.
                    self.report(FeedState::Live).unwrap_or(Poll::Ready)
                } else {
                    // The feed thread marks the feed live when it publishes.
                    self.reported = FeedState::Live;
                    Poll::Ready
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if now.duration_since(self.last_data) >= self.config.stale_after {
                    self.report(FeedState::Stale).unwrap_or(Poll::Ready)
                } else {
                    Poll::Ready
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Poll::Ready,
            Err(e) => self.disconnect(now, &e),
        }
    }

    fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), 7);
        let mut caps = Vec::new();
        for _ in 0..10 {
            let d = b.next_delay();
            caps.push(d);
        }
        // Attempt k lies in [d/2, d], d = min(5 s, 100 ms * 2^k).
        for (k, d) in caps.iter().enumerate() {
            let cap = Duration::from_millis(100 * (1 << k)).min(Duration::from_secs(5));
            assert!(*d >= cap / 2 && *d <= cap, "attempt {k}: {d:?} vs {cap:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        // Two servers with different seeds do not retry in lockstep.
        let mut a = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), 1);
        let mut c = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), 2);
        let same = (0..8).filter(|_| a.next_delay() == c.next_delay()).count();
        assert!(same < 8);
    }

    #[test]
    fn lines_split_across_reads_and_garbage_is_counted() {
        let table = Arc::new(SymbolTable::new(8));
        let mut f = TcpFeed::new(TcpConfig::new("127.0.0.1:1"), table.clone());
        let mut out = Vec::new();
        let feed = |f: &mut TcpFeed, bytes: &[u8], out: &mut Vec<Tick>| {
            f.buf[..bytes.len()].copy_from_slice(bytes);
            f.take_lines(bytes.len(), out);
        };
        feed(&mut f, b"{\"type\":\"t\",\"sym\":\"AA\",\"t\":1,\"p\":1.5,", &mut out);
        assert!(out.is_empty());
        feed(&mut f, b"\"s\":10}\n\nnot json\n{\"type\":\"t\",\"sym\":\"BB\",", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(table.name(out[0].sym).as_deref(), Some("AA"));
        assert_eq!(f.take_skipped(), 1);
        feed(&mut f, b"\"t\":2,\"p\":2,\"s\":1}\r\n", &mut out);
        assert_eq!(out.len(), 2);
        // An over-long line is skipped once, whatever its length.
        let long = vec![b'x'; jsonl::MAX_LINE / 2];
        for _ in 0..3 {
            feed(&mut f, &long, &mut out);
        }
        feed(&mut f, b"\n", &mut out);
        assert_eq!(f.take_skipped(), 1);
        assert_eq!(out.len(), 2);
    }
}
