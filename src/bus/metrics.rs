//! The bus's counters, for `/metrics`: what an ingest published and what an
//! edge received, lost and skipped. Each counter is bumped by the one bus
//! thread (or the feed thread, for what an edge decodes) with a relaxed
//! add, and read at scrape time by [`BusMetrics`]' [`Collector`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Counters of one process's side of the bus (an ingest's or an edge's).
#[derive(Default)]
pub struct BusMetrics {
    /// 1 while the NATS connection is up.
    pub connected: AtomicU64,
    /// Connections made to NATS, the first included.
    pub connects: AtomicU64,
    /// Ingest: batches published on the live subject.
    pub batches_out: AtomicU64,
    /// Ingest: updates published in those batches.
    pub updates_out: AtomicU64,
    /// Ingest: bytes of those batches (payloads, NATS framing excluded).
    pub bytes_out: AtomicU64,
    /// Ingest: heartbeats published.
    pub heartbeats_out: AtomicU64,
    /// Ingest: latest values published into JetStream.
    pub lvc_out: AtomicU64,
    /// Ingest: whole latest-value tables republished (after NATS came back).
    pub lvc_republished: AtomicU64,
    /// Ingest: updates the publisher lost to a ring overrun (a gap on the bus).
    pub ring_lost: AtomicU64,
    /// Ingest: batches not published because NATS was down (a gap on the bus).
    pub batches_unsent: AtomicU64,
    /// Edge: batches received.
    pub batches_in: AtomicU64,
    /// Edge: updates received in batches.
    pub updates_in: AtomicU64,
    /// Edge: heartbeats received.
    pub heartbeats_in: AtomicU64,
    /// Edge: batches missed (numbering gaps), wherever they were lost.
    pub batches_lost: AtomicU64,
    /// Edge: messages dropped by this process because the feed thread was
    /// behind (its queue was full).
    pub queue_dropped: AtomicU64,
    /// Edge: slow-consumer events from the NATS client (it dropped
    /// messages; under-counted by the client's bounded event queue).
    pub slow_consumer_events: AtomicU64,
    /// Edge: messages on the live subjects that were not ours, truncated,
    /// of an unknown version, or bad: skipped.
    pub garbage: AtomicU64,
    /// Edge: latest values read from JetStream.
    pub lvc_in: AtomicU64,
    /// Edge: updates already held (their `seq` at or below the stream's):
    /// latest values older than the live stream, skipped.
    pub repeats: AtomicU64,
    /// The NATS client's own counts (messages and bytes in and out, every
    /// subject and JetStream included), once it exists.
    pub client: OnceLock<Arc<async_nats::Statistics>>,
}

impl BusMetrics {
    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

impl fmt::Debug for BusMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusMetrics").finish_non_exhaustive()
    }
}

impl BusMetrics {
    /// What a `/metrics` registry reads these counters through.
    pub fn collector(self: &Arc<Self>) -> Box<dyn Collector> {
        Box::new(Scrape(self.clone()))
    }
}

/// The collector of [`BusMetrics::collector`].
#[derive(Debug)]
struct Scrape(Arc<BusMetrics>);

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        let m = &*self.0;
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        {
            let mut g = e.encode_descriptor(
                "tickwire_bus_connected",
                "1 while the NATS connection is up.",
                None,
                MetricType::Gauge,
            )?;
            g.encode_gauge(&v(&m.connected))?;
        }
        let mut counters: Vec<(&str, &str, u64)> = vec![
            ("tickwire_bus_connects", "Connections made to NATS.", v(&m.connects)),
            ("tickwire_bus_batches_out", "Batches published (ingest).", v(&m.batches_out)),
            ("tickwire_bus_updates_out", "Updates published (ingest).", v(&m.updates_out)),
            ("tickwire_bus_bytes_out", "Batch payload bytes published (ingest).", v(&m.bytes_out)),
            ("tickwire_bus_heartbeats_out", "Heartbeats published (ingest).", v(&m.heartbeats_out)),
            (
                "tickwire_bus_lvc_out",
                "Latest values published into JetStream (ingest).",
                v(&m.lvc_out),
            ),
            (
                "tickwire_bus_lvc_republished",
                "Whole latest-value tables republished after NATS came back (ingest).",
                v(&m.lvc_republished),
            ),
            (
                "tickwire_bus_ring_lost",
                "Updates the publisher lost to a ring overrun (ingest).",
                v(&m.ring_lost),
            ),
            (
                "tickwire_bus_batches_unsent",
                "Batches not published while NATS was down (ingest).",
                v(&m.batches_unsent),
            ),
            ("tickwire_bus_batches_in", "Batches received (edge).", v(&m.batches_in)),
            ("tickwire_bus_updates_in", "Updates received in batches (edge).", v(&m.updates_in)),
            ("tickwire_bus_heartbeats_in", "Heartbeats received (edge).", v(&m.heartbeats_in)),
            (
                "tickwire_bus_batches_lost",
                "Batches missed: gaps in the batch numbers (edge).",
                v(&m.batches_lost),
            ),
            (
                "tickwire_bus_queue_dropped",
                "Messages dropped because the feed thread was behind (edge).",
                v(&m.queue_dropped),
            ),
            (
                "tickwire_bus_slow_consumer_events",
                "Slow-consumer events of the NATS client (edge).",
                v(&m.slow_consumer_events),
            ),
            (
                "tickwire_bus_garbage",
                "Messages on the bus that were not ours, truncated or of an unknown version (edge).",
                v(&m.garbage),
            ),
            ("tickwire_bus_lvc_in", "Latest values read from JetStream (edge).", v(&m.lvc_in)),
            ("tickwire_bus_repeats", "Updates skipped as already held (edge).", v(&m.repeats)),
        ];
        if let Some(st) = m.client.get() {
            // What the client itself saw on its connection: on an edge,
            // messages in well above batches + heartbeats + latest values
            // read mean messages the client dropped before we saw them.
            counters.extend([
                (
                    "tickwire_bus_nats_in_messages",
                    "Messages the NATS client received.",
                    st.in_messages.load(Ordering::Relaxed),
                ),
                (
                    "tickwire_bus_nats_in_bytes",
                    "Payload bytes the NATS client received.",
                    st.in_bytes.load(Ordering::Relaxed),
                ),
                (
                    "tickwire_bus_nats_out_messages",
                    "Messages the NATS client sent.",
                    st.out_messages.load(Ordering::Relaxed),
                ),
                (
                    "tickwire_bus_nats_out_bytes",
                    "Payload bytes the NATS client sent.",
                    st.out_bytes.load(Ordering::Relaxed),
                ),
            ]);
        }
        for (name, help, n) in counters {
            let mut d = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            d.encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        Ok(())
    }
}
