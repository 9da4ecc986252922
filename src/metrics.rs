//! The rendering of every counter, gauge and the ingest-to-send latency
//! histogram in the Prometheus text format for `GET /metrics`.
//!
//! The counting itself happens where the work is: every counter lives in
//! the struct of the one thread that bumps it ([`crate::feed::FeedMetrics`]
//! on the feed thread, [`ShardCounters`] on one writer shard,
//! [`crate::auth::AuthMetrics`] for rare authentication events) and is
//! bumped with a relaxed atomic add on a cache line no other thread writes,
//! so counting a million messages a second costs no cross-core traffic. A
//! scrape reads them and sums the shards.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::auth::AuthMetrics;
use crate::feed::Market;
use crate::socket::outbound::Cause;
use crate::writer::metrics::{ShardCounters, ShardMetrics, new_histogram};

/// Renders every metric in the Prometheus text exposition format.
pub fn render(
    market: &Market,
    shards: &[std::sync::Arc<ShardMetrics>],
    refused_connections: u64,
    auth: &AuthMetrics,
) -> String {
    let mut out = String::with_capacity(4096);
    let sum = |f: fn(&ShardCounters) -> &AtomicU64| -> u64 {
        shards.iter().map(|s| f(&s.counters).load(Ordering::Relaxed)).sum()
    };
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    metric(
        "tickwire_symbols",
        "gauge",
        "Symbols known to the server.",
        market.symbols.len() as u64,
    );
    metric(
        "tickwire_ticks_in_total",
        "counter",
        "Ticks ingested from the feed and published on the ring.",
        market.metrics.ticks_in.load(Ordering::Relaxed),
    );
    metric(
        "tickwire_feed_bad_records_total",
        "counter",
        "Feed records skipped as unusable.",
        market.metrics.bad_records.load(Ordering::Relaxed),
    );
    metric("tickwire_connections", "gauge", "Open WebSocket sessions.", sum(|c| &c.sessions));
    metric(
        "tickwire_connections_total",
        "counter",
        "WebSocket sessions accepted.",
        sum(|c| &c.sessions_total),
    );
    metric(
        "tickwire_subscriptions",
        "gauge",
        "Live (channel, symbol) subscriptions.",
        sum(|c| &c.subscriptions),
    );
    metric(
        "tickwire_messages_out_total",
        "counter",
        "Messages sent, control included.",
        sum(|c| &c.messages_out),
    );
    metric(
        "tickwire_updates_out_total",
        "counter",
        "Quote and trade updates sent.",
        sum(|c| &c.updates_out),
    );
    metric(
        "tickwire_frames_out_total",
        "counter",
        "WebSocket frames sent.",
        sum(|c| &c.frames_out),
    );
    metric(
        "tickwire_frames_direct_total",
        "counter",
        "Data frames a shard wrote into an idle plain-TCP socket itself, without waking its socket task.",
        sum(|c| &c.frames_direct),
    );
    metric(
        "tickwire_frames_direct_partial_total",
        "counter",
        "Of those, frames the socket took only in part (its socket task wrote the rest).",
        sum(|c| &c.frames_direct_partial),
    );
    metric("tickwire_bytes_out_total", "counter", "Payload bytes sent.", sum(|c| &c.bytes_out));
    metric(
        "tickwire_conflated_total",
        "counter",
        "Source updates folded into a newer one by latest-mode conflation.",
        sum(|c| &c.conflated),
    );
    metric(
        "tickwire_overflows_total",
        "counter",
        "overflow messages sent (mode all).",
        sum(|c| &c.overflows),
    );
    metric(
        "tickwire_overflow_lost_total",
        "counter",
        "Updates dropped and reported by overflow messages.",
        sum(|c| &c.overflow_lost),
    );
    metric(
        "tickwire_ring_overruns_total",
        "counter",
        "Times a writer shard was lapped by the feed.",
        sum(|c| &c.ring_overruns),
    );
    metric(
        "tickwire_ring_lost_total",
        "counter",
        "Ring positions skipped by overruns.",
        sum(|c| &c.ring_lost),
    );
    metric(
        "tickwire_messages_in_total",
        "counter",
        "Client messages received.",
        sum(|c| &c.messages_in),
    );
    metric("tickwire_errors_out_total", "counter", "error replies sent.", sum(|c| &c.errors_out));
    metric(
        "tickwire_slow_disconnects_total",
        "counter",
        "Sessions closed by the slow-client policy.",
        sum(|c| &c.slow_disconnects),
    );
    metric(
        "tickwire_http_requests_total",
        "counter",
        "Plain HTTP requests answered.",
        sum(|c| &c.http_requests),
    );
    metric(
        "tickwire_connections_refused_total",
        "counter",
        "Connections refused with 503 by the connection limits.",
        refused_connections,
    );
    metric(
        "tickwire_dead_peers_total",
        "counter",
        "Sessions dropped because the peer answered no ping for two heartbeat intervals.",
        sum(|c| &c.dead_peers),
    );
    metric(
        "tickwire_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed or timed out (plain-text clients on the TLS port included).",
        sum(|c| &c.tls_handshake_failures),
    );
    metric(
        "tickwire_close_resets_total",
        "counter",
        "Sessions whose close did not finish within its grace: the socket was reset and dropped.",
        sum(|c| &c.close_resets),
    );
    for (name, help, counter) in [
        (
            "tickwire_auth_reloads_total",
            "Reloads of the API-key file and JWT key (SIGHUP) that took effect.",
            &auth.reloads,
        ),
        (
            "tickwire_auth_reload_failures_total",
            "Reloads refused because a file could not be used; the old keys stayed in force.",
            &auth.reload_failures,
        ),
        (
            "tickwire_auth_failures_total",
            "Failed authentications (bad token or key, with the upgrade or in an auth message).",
            &auth.failures,
        ),
        (
            "tickwire_auth_blocked_ips_total",
            "Times a client IP reached --auth-max-failures and was blocked.",
            &auth.blocked_ips,
        ),
        (
            "tickwire_auth_rate_limited_total",
            "Upgrades refused with HTTP 429 because the client IP was blocked.",
            &auth.rate_limited,
        ),
    ] {
        metric(name, "counter", help, counter.load(Ordering::Relaxed));
    }

    let name = "tickwire_closes_total";
    let _ = writeln!(out, "# HELP {name} Sessions ended, by cause.\n# TYPE {name} counter");
    for cause in Cause::ALL {
        let n: u64 = shards.iter().map(|s| s.counters.close(cause).load(Ordering::Relaxed)).sum();
        let _ = writeln!(out, "{name}{{reason=\"{}\"}} {n}", cause.label());
    }

    let mut merged = new_histogram();
    for s in shards {
        let h = s.latency.lock().unwrap_or_else(|e| e.into_inner());
        let _ = merged.add(&*h);
    }
    let name = "tickwire_ingest_to_send_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Latency from feed ingest to the encoding of the frame that carries it, per update, since start."
    );
    let _ = writeln!(out, "# TYPE {name} summary");
    for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
        let v = if merged.is_empty() { 0 } else { merged.value_at_quantile(q) };
        let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {}", v as f64 / 1e9);
    }
    let total_ns = merged.mean() * merged.len() as f64;
    let _ = writeln!(out, "{name}_sum {}", total_ns / 1e9);
    let _ = writeln!(out, "{name}_count {}", merged.len());
    out
}
