//! `GET /metrics`: every counter, gauge and the ingest-to-send latency, in
//! the OpenMetrics text format, rendered by the `prometheus-client` crate
//! from a [`Collector`] that reads tickwire's own counters at scrape time.
//!
//! The counting itself stays where the work is: every counter lives in the
//! struct of the one thread that bumps it ([`crate::feed::FeedMetrics`] on
//! the feed thread, [`ShardCounters`] on one writer shard,
//! [`crate::auth::AuthMetrics`] for rare authentication events) and is
//! bumped with a relaxed atomic add on a cache line no other thread
//! writes, so counting a million messages a second costs no cross-core
//! traffic. A registry's own counter types would put shared atomics on the
//! hot path (every shard bumping one cache line); a collector costs the hot
//! path nothing, and the crate owns the format (names, `_total`, label
//! escaping, histogram buckets, `# EOF`), which was the part worth not
//! writing by hand.
//!
//! The latency is an HdrHistogram per shard, merged a few times a second.
//! It is exposed as a Prometheus histogram (fixed buckets from 50 µs to
//! 10 s, counted from the HdrHistogram at scrape time) rather than a
//! summary: histograms from several servers can be summed, summaries
//! cannot.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::auth::Access;
use crate::feed::Market;
use crate::socket::limits::ConnLimits;
use crate::socket::outbound::Cause;
use crate::writer::metrics::{ShardCounters, ShardMetrics, new_histogram};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// What a scrape reads: the feed, every shard, the connection limits and
/// authentication.
pub struct Sources {
    /// Feed state, symbols, the feed thread's counters.
    pub market: Arc<Market>,
    /// Every shard's counters and latency.
    pub shards: Vec<Arc<ShardMetrics>>,
    /// The connection limits (refusals).
    pub limits: Arc<ConnLimits>,
    /// Authentication's counters.
    pub access: Arc<Access>,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources").field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

/// A registry whose one collector reads `sources` at every scrape.
pub fn registry(sources: Sources) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(sources));
    registry
}

/// Renders every metric of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

impl Sources {
    fn sum(&self, f: fn(&ShardCounters) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|s| f(&s.counters).load(Ordering::Relaxed)).sum()
    }
}

/// One metric without labels.
fn one(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    value: u64,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => m.encode_counter::<NoLabelSet, _, u64>(&value, None),
        _ => m.encode_gauge(&value),
    }
}

impl Collector for Sources {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        use MetricType::{Counter, Gauge};
        let feed = &self.market.metrics;
        let gauges: [(&str, &str, u64); 5] = [
            ("tickwire_symbols", "Symbols known to the server.", self.market.symbols.len() as u64),
            ("tickwire_connections", "Open WebSocket sessions.", self.sum(|c| &c.sessions)),
            (
                "tickwire_subscriptions",
                "Live (channel, symbol) subscriptions.",
                self.sum(|c| &c.subscriptions),
            ),
            (
                "tickwire_history_bytes",
                "Memory held by the resume history (--history updates per stream that has updated).",
                self.market.history.bytes() as u64,
            ),
            (
                "tickwire_history_depth",
                "Updates kept per stream for resume (--history).",
                self.market.history.depth() as u64,
            ),
        ];
        for (name, help, v) in gauges {
            one(&mut e, name, help, Gauge, v)?;
        }
        let auth = &self.access.metrics;
        let counters: [(&str, &str, u64); 29] = [
            (
                "tickwire_ticks_in",
                "Ticks ingested from the feed and published on the ring.",
                feed.ticks_in.load(Ordering::Relaxed),
            ),
            (
                "tickwire_bars_built",
                "Bar updates (bars_1s, bars_1m) built from the feed's trades.",
                feed.bars_built.load(Ordering::Relaxed),
            ),
            (
                "tickwire_bars_late_trades",
                "Trades left out of the bars: they came after their interval's bar had closed.",
                feed.bars_late_trades.load(Ordering::Relaxed),
            ),
            (
                "tickwire_feed_bad_records",
                "Feed records skipped as unusable.",
                feed.bad_records.load(Ordering::Relaxed),
            ),
            // Not `tickwire_connections`: OpenMetrics allows one family per
            // name, and that one is the gauge of open sessions.
            (
                "tickwire_connections_accepted",
                "WebSocket sessions accepted.",
                self.sum(|c| &c.sessions_total),
            ),
            (
                "tickwire_messages_out",
                "Messages sent, control included.",
                self.sum(|c| &c.messages_out),
            ),
            (
                "tickwire_updates_out",
                "Quote, trade and bar updates sent.",
                self.sum(|c| &c.updates_out),
            ),
            ("tickwire_frames_out", "WebSocket frames sent.", self.sum(|c| &c.frames_out)),
            (
                "tickwire_frames_direct",
                "Data frames a shard wrote into an idle plain-TCP socket itself, without waking its socket task.",
                self.sum(|c| &c.frames_direct),
            ),
            (
                "tickwire_frames_direct_partial",
                "Of those, frames the socket took only in part (its socket task wrote the rest).",
                self.sum(|c| &c.frames_direct_partial),
            ),
            ("tickwire_bytes_out", "Payload bytes sent.", self.sum(|c| &c.bytes_out)),
            (
                "tickwire_conflated",
                "Source updates folded into a newer one by latest-mode conflation.",
                self.sum(|c| &c.conflated),
            ),
            (
                "tickwire_overflows",
                "overflow messages sent (mode all).",
                self.sum(|c| &c.overflows),
            ),
            (
                "tickwire_overflow_lost",
                "Updates dropped and reported by overflow messages.",
                self.sum(|c| &c.overflow_lost),
            ),
            (
                "tickwire_ring_overruns",
                "Times a writer shard was lapped by the feed.",
                self.sum(|c| &c.ring_overruns),
            ),
            (
                "tickwire_ring_lost",
                "Ring positions skipped by overruns.",
                self.sum(|c| &c.ring_lost),
            ),
            ("tickwire_messages_in", "Client messages received.", self.sum(|c| &c.messages_in)),
            ("tickwire_errors_out", "error replies sent.", self.sum(|c| &c.errors_out)),
            (
                "tickwire_slow_disconnects",
                "Sessions closed by the slow-client policy.",
                self.sum(|c| &c.slow_disconnects),
            ),
            (
                "tickwire_http_requests",
                "Plain HTTP requests answered.",
                self.sum(|c| &c.http_requests),
            ),
            (
                "tickwire_connections_refused",
                "Connections refused with 503 by the connection limits.",
                self.limits.refused.load(Ordering::Relaxed),
            ),
            (
                "tickwire_dead_peers",
                "Sessions dropped because the peer answered no ping for two heartbeat intervals.",
                self.sum(|c| &c.dead_peers),
            ),
            (
                "tickwire_tls_handshake_failures",
                "TLS handshakes that failed or timed out (plain-text clients on the TLS port included).",
                self.sum(|c| &c.tls_handshake_failures),
            ),
            (
                "tickwire_close_resets",
                "Sessions whose close did not finish within its grace: the socket was reset and dropped.",
                self.sum(|c| &c.close_resets),
            ),
            (
                "tickwire_auth_reloads",
                "Reloads of the API-key file and JWT key (SIGHUP) that took effect.",
                auth.reloads.load(Ordering::Relaxed),
            ),
            (
                "tickwire_auth_reload_failures",
                "Reloads refused because a file could not be used; the old keys stayed in force.",
                auth.reload_failures.load(Ordering::Relaxed),
            ),
            (
                "tickwire_auth_failures",
                "Failed authentications (bad token or key, with the upgrade or in an auth message).",
                auth.failures.load(Ordering::Relaxed),
            ),
            (
                "tickwire_auth_blocked_ips",
                "Times a client IP reached --auth-max-failures and was blocked.",
                auth.blocked_ips.load(Ordering::Relaxed),
            ),
            (
                "tickwire_auth_rate_limited",
                "Upgrades refused with HTTP 429 because the client IP was blocked.",
                auth.rate_limited.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            one(&mut e, name, help, Counter, v)?;
        }
        let mut m =
            e.encode_descriptor("tickwire_closes", "Sessions ended, by cause.", None, Counter)?;
        for cause in Cause::ALL {
            let n: u64 =
                self.shards.iter().map(|s| s.counters.close(cause).load(Ordering::Relaxed)).sum();
            m.encode_family(&[("reason", cause.label())])?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        self.encode_latency(&mut e)
    }
}

impl Sources {
    /// The ingest-to-send latency of every update sent since start, all
    /// shards merged, as a histogram.
    fn encode_latency(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let mut merged = new_histogram();
        for s in &self.shards {
            let h = s.latency.lock().unwrap_or_else(|e| e.into_inner());
            let _ = merged.add(&*h);
        }
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        let mut below = 0u64;
        for bound in LATENCY_BUCKETS {
            let ns = (bound * 1e9) as u64;
            let n = if merged.is_empty() { 0 } else { merged.count_between(0, ns) };
            buckets.push((bound, n - below));
            below = n;
        }
        buckets.push((f64::INFINITY, merged.len() - below));
        let sum = merged.mean() * merged.len() as f64 / 1e9;
        let help = "Latency from feed ingest to the encoding of the frame that carries it, per update, since start.";
        e.encode_descriptor(
            "tickwire_ingest_to_send",
            help,
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(sum, merged.len(), &buckets, None)
    }
}
