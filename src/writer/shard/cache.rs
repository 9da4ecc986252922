//! The encode-once cache: the tail of every tick encoded in the current
//! batch, per session format, shared by every subscriber's frame, and the
//! latency histogram it feeds.

use super::*;

/// One cached tail.
#[derive(Debug, Clone, Copy, Default)]
struct CacheSlot {
    batch: u64,
    seq: u64,
    start: u32,
    len: u32,
    /// Messages that carried this tail so far in the batch.
    hits: u32,
    /// Ingest-to-send latency of the tick (the same for every message of the batch).
    latency_ns: u64,
}

/// Tails of the ticks encoded in the current batch, per format, and the
/// latency histogram they feed.
///
/// Every message that carries a cached tail has the same ingest-to-send
/// latency (same tick, same `to`), so the histogram is fed once per tail with
/// the number of messages (`record_n`) when the batch ends, not once per
/// message: a tenth of the cost at 100 subscribers.
pub struct EncodeCache {
    arena: Vec<u8>,
    /// One table per format (`Format::index`), by stream index: a table
    /// grows only for the formats sessions actually use.
    slots: Vec<Vec<CacheSlot>>,
    /// Slots (format, stream) filled in the current batch, to record their hits.
    filled: Vec<(u32, u32)>,
    batch: u64,
    /// Send stamp (`to`) of the current batch.
    to_ns: u64,
    /// Ingest-to-send latency of every update sent, in ns (shard-local;
    /// merged into the shared metrics periodically).
    pub(super) latency: Histogram<u64>,
}

/// A batch older than this is renewed before use, so `to` stays honest.
const CACHE_MAX_AGE_NS: u64 = 500_000;

impl EncodeCache {
    pub(super) fn new() -> EncodeCache {
        EncodeCache {
            arena: Vec::with_capacity(1 << 16),
            slots: vec![Vec::new(); Format::COUNT],
            filled: Vec::new(),
            batch: 1,
            to_ns: now_ns(),
            latency: new_histogram(),
        }
    }

    /// Starts a new batch: earlier tails are forgotten (and counted).
    pub(super) fn begin(&mut self) {
        self.record_hits();
        self.arena.clear();
        self.batch += 1;
        self.to_ns = now_ns();
    }

    pub(super) fn begin_if_stale(&mut self) {
        if now_ns().saturating_sub(self.to_ns) > CACHE_MAX_AGE_NS {
            self.begin();
        }
    }

    /// Records the latency of every message sent from this batch's tails.
    pub(super) fn record_hits(&mut self) {
        for (f, idx) in self.filled.drain(..) {
            let slot = &mut self.slots[f as usize][idx as usize];
            if slot.hits > 0 {
                let _ = self
                    .latency
                    .record_n(slot.latency_ns.min(MAX_LATENCY_NS), u64::from(slot.hits));
                slot.hits = 0;
            }
        }
    }

    /// Appends the tail of `tick` in `format` to `out`, encoding it only if
    /// this batch has not encoded it yet.
    ///
    /// Hot path: a table lookup and a memcpy when cached.
    #[inline]
    fn tail(&mut self, out: &mut Vec<u8>, tick: &Tick, name: &str, format: Format) {
        let (f, idx) = (format.index(), tick.stream());
        let slots = &mut self.slots[f];
        if idx >= slots.len() {
            slots.resize(idx + 1, CacheSlot::default());
        }
        let slot = &mut slots[idx];
        if slot.batch == self.batch {
            if slot.seq == tick.seq {
                slot.hits += 1;
                out.extend_from_slice(
                    &self.arena[slot.start as usize..(slot.start + slot.len) as usize],
                );
                return;
            }
            // A newer tick of the stream in the same batch: count the old one now.
            if slot.hits > 0 {
                let _ = self
                    .latency
                    .record_n(slot.latency_ns.min(MAX_LATENCY_NS), u64::from(slot.hits));
            }
        } else {
            self.filled.push((f as u32, idx as u32));
        }
        let start = self.arena.len();
        if format.binary {
            binary::write_record(&mut self.arena, tick, format, self.to_ns);
        } else {
            json::write_tail(&mut self.arena, tick, name, format, self.to_ns);
        }
        let len = self.arena.len() - start;
        self.slots[f][idx] = CacheSlot {
            batch: self.batch,
            seq: tick.seq,
            start: start as u32,
            len: len as u32,
            hits: 1,
            latency_ns: self.to_ns.saturating_sub(tick.ingest_ns),
        };
        out.extend_from_slice(&self.arena[start..]);
    }

    /// Appends one update message with `cseq` and `cf` to a data frame:
    /// JSON head and cached tail (after a comma unless `first`), or the
    /// cached binary record with its `cf` set (`cseq` is implicit there).
    ///
    /// Hot path: a lookup, a memcpy and a few stores when cached.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(super) fn update(
        &mut self,
        out: &mut Vec<u8>,
        tick: &Tick,
        name: &str,
        format: Format,
        cseq: u64,
        cf: u64,
        first: bool,
    ) {
        if format.binary {
            self.tail(out, tick, name, format);
            binary::set_cf(out, binary::record_len(format), cf);
            return;
        }
        if !first {
            out.push(b',');
        }
        json::write_update_head(out, tick, cseq, cf);
        self.tail(out, tick, name, format);
    }
}
