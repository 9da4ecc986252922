//! The counters of one writer shard and its ingest-to-send latency
//! histogram, read by `/metrics` ([`crate::metrics`]).
//!
//! Every counter is bumped by the shard's own thread only, with a relaxed
//! atomic add on a cache line no other shard writes ([`ShardMetrics`] is
//! padded), so counting a million messages a second costs no cross-core
//! traffic. The latency histogram is shard-local and merged into the shared
//! copy a few times a second, off the hot path.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;

use crate::socket::outbound::Cause;

/// Counters of one writer shard (a cache line of its own).
#[derive(Default)]
pub struct ShardCounters {
    /// Open WebSocket sessions (gauge).
    pub sessions: AtomicU64,
    /// WebSocket sessions ever accepted.
    pub sessions_total: AtomicU64,
    /// Live (channel, symbol) subscriptions (gauge).
    pub subscriptions: AtomicU64,
    /// Messages sent (every array element, control included).
    pub messages_out: AtomicU64,
    /// Market-data updates sent (`q` and `t`).
    pub updates_out: AtomicU64,
    /// WebSocket frames sent.
    pub frames_out: AtomicU64,
    /// Of those, data frames the shard wrote into the socket itself.
    pub frames_direct: AtomicU64,
    /// Of those, frames the socket took only in part (the socket task
    /// wrote the rest).
    pub frames_direct_partial: AtomicU64,
    /// Payload bytes sent.
    pub bytes_out: AtomicU64,
    /// Source updates that were folded into a newer one (`cf - 1` summed).
    pub conflated: AtomicU64,
    /// `overflow` messages sent.
    pub overflows: AtomicU64,
    /// Updates dropped and reported by `overflow`.
    pub overflow_lost: AtomicU64,
    /// Times this shard's ring reader was lapped by the feed.
    pub ring_overruns: AtomicU64,
    /// Ring positions skipped by those overruns.
    pub ring_lost: AtomicU64,
    /// Client messages received.
    pub messages_in: AtomicU64,
    /// `error` replies sent.
    pub errors_out: AtomicU64,
    /// Sessions closed by the slow-client policy.
    pub slow_disconnects: AtomicU64,
    /// HTTP requests answered without upgrading.
    pub http_requests: AtomicU64,
    /// Sessions dropped because the peer answered no ping for two intervals.
    pub dead_peers: AtomicU64,
    /// TLS handshakes that failed or timed out (`--tls-cert` only).
    pub tls_handshake_failures: AtomicU64,
    /// Sessions ended, by cause (in [`Cause::ALL`] order).
    pub closes: [AtomicU64; Cause::ALL.len()],
    /// Sessions whose close did not finish within its grace: their socket
    /// was reset (`SO_LINGER` 0) and dropped.
    pub close_resets: AtomicU64,
}

impl ShardCounters {
    /// Adds `n` to a counter (relaxed: only sums are ever read).
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counter of sessions ended by `cause`.
    pub fn close(&self, cause: Cause) -> &AtomicU64 {
        &self.closes[cause as usize]
    }

    /// Subtracts `n` from a gauge.
    #[inline]
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Highest latency the histograms track (60 s in ns); larger values saturate.
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Creates an empty latency histogram (ns, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("static histogram bounds are valid")
}

/// What one shard exposes to scrapes.
pub struct ShardMetrics {
    /// The counters, padded so shards never share a cache line.
    pub counters: CachePadded<ShardCounters>,
    /// Ingest-to-send latency of every update sent, merged from the shard's
    /// local histogram a few times a second.
    pub latency: Mutex<Histogram<u64>>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            counters: CachePadded::new(ShardCounters::default()),
            latency: Mutex::new(new_histogram()),
        }
    }
}
