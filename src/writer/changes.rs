//! The shard's change log: every stream whose newest value changed, in the
//! order of its last change, so that a `mode:"latest"` session on `["*"]`
//! finds what is new for it at frame-building time instead of being told
//! about every tick.
//!
//! Telling every subscriber about every tick costs one write into each
//! subscriber's entry per tick: 50 sessions on a shard and 200,000 updates/s
//! are 10 M of them per second, scattered over 9 MB of entries, which is more
//! than a shard's share of the CPU (BENCHMARKS.md, "The latest-mode row").
//! With the log a tick costs O(1) whatever the number of sessions: the
//! stream moves to the end of the log with a new generation. A session
//! keeps the generation it has seen everything up to (its cursor), and a
//! frame build walks the log from there: O(streams changed since its last
//! frame), each visited once however many ticks it had.
//!
//! The log is an intrusive doubly-linked list over stream indices (no
//! allocation after growth, no per-tick garbage), ordered by generation:
//! generations strictly increase from head to tail. A session far behind
//! (most streams changed since its cursor) is better served by a sweep over
//! the streams in index order: its entries are then read in order, which
//! the CPU prefetches, instead of one cache miss each;
//! [`ChangeLog::changed_since`] picks one or the other.

/// No stream: the end of the list.
const NIL: u32 = u32::MAX;

/// [`ChangeLog::changed_since`] walks the list while fewer than one stream
/// in `SWEEP_RATIO` can have changed since the cursor, and sweeps every
/// stream in index order otherwise.
const SWEEP_RATIO: u64 = 4;

/// Streams ordered by the generation of their last change. See the module docs.
#[derive(Debug, Default)]
pub struct ChangeLog {
    /// Generation of the newest change (0: nothing changed yet).
    generation: u64,
    /// Per stream: generation of its last change; 0 while it never changed
    /// (and then it is not in the list).
    stamp: Vec<u64>,
    /// Per stream: the stream changed just before it (`NIL` at the head).
    prev: Vec<u32>,
    /// Per stream: the stream changed just after it (`NIL` at the tail).
    next: Vec<u32>,
    /// The stream whose last change is the oldest.
    head: u32,
    /// The stream changed last.
    tail: u32,
}

impl ChangeLog {
    /// An empty log.
    pub fn new() -> ChangeLog {
        ChangeLog { head: NIL, tail: NIL, ..ChangeLog::default() }
    }

    /// Generation of the newest change: a session whose cursor is here has
    /// seen every change.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Makes room for streams `0..streams`.
    pub fn grow(&mut self, streams: usize) {
        if streams > self.stamp.len() {
            self.stamp.resize(streams, 0);
            self.prev.resize(streams, NIL);
            self.next.resize(streams, NIL);
        }
    }

    /// Records a change of `stream` (which must be below the size given to
    /// [`ChangeLog::grow`]): it moves to the tail with a new generation.
    ///
    /// Hot path: a few stores into arrays of one word per stream.
    #[inline]
    pub fn touch(&mut self, stream: usize) {
        let s = stream as u32;
        self.generation += 1;
        if self.stamp[stream] != 0 {
            if self.tail == s {
                self.stamp[stream] = self.generation;
                return;
            }
            // Unlink: it is not the tail, so it has a successor.
            let (p, n) = (self.prev[stream], self.next[stream]);
            self.prev[n as usize] = p;
            if p == NIL {
                self.head = n;
            } else {
                self.next[p as usize] = n;
            }
        }
        self.stamp[stream] = self.generation;
        self.prev[stream] = self.tail;
        self.next[stream] = NIL;
        if self.tail == NIL {
            self.head = s;
        } else {
            self.next[self.tail as usize] = s;
        }
        self.tail = s;
    }

    /// The stream with the oldest change after generation `cursor`, if any
    /// (walks back from the tail over the streams changed after `cursor`).
    pub fn first_after(&self, cursor: u64) -> Option<u32> {
        if cursor >= self.generation {
            return None;
        }
        if self.head != NIL && self.stamp[self.head as usize] > cursor {
            return Some(self.head);
        }
        let mut first = self.tail;
        loop {
            let p = self.prev[first as usize];
            if p == NIL || self.stamp[p as usize] <= cursor {
                return Some(first);
            }
            first = p;
        }
    }

    /// The stream changed after `stream` (in log order), if any.
    #[inline]
    pub fn next(&self, stream: u32) -> Option<u32> {
        let n = self.next[stream as usize];
        (n != NIL).then_some(n)
    }

    /// Generation of the last change of `stream` (0: never changed).
    #[inline]
    pub fn stamp(&self, stream: u32) -> u64 {
        self.stamp[stream as usize]
    }

    /// Every stream changed after generation `cursor`, each once: in the
    /// order of their changes when few can have changed (a walk back from
    /// the tail, then forward), in index order otherwise (a sweep).
    pub fn changed_since(&self, cursor: u64) -> Changed<'_> {
        let behind = self.generation.saturating_sub(cursor);
        if behind.saturating_mul(SWEEP_RATIO) < self.stamp.len() as u64 {
            Changed::Walk { log: self, node: self.first_after(cursor).unwrap_or(NIL) }
        } else {
            Changed::Sweep { stamps: &self.stamp, cursor, next: 0 }
        }
    }
}

/// The streams changed after a cursor: see [`ChangeLog::changed_since`].
pub enum Changed<'a> {
    /// Along the list, from the oldest change after the cursor.
    Walk {
        /// The log.
        log: &'a ChangeLog,
        /// The next stream to yield (`NIL`: done).
        node: u32,
    },
    /// Over every stream in index order.
    Sweep {
        /// Every stream's last change.
        stamps: &'a [u64],
        /// Streams changed after this generation are yielded.
        cursor: u64,
        /// The next stream to look at.
        next: usize,
    },
}

impl Iterator for Changed<'_> {
    type Item = u32;

    #[inline]
    fn next(&mut self) -> Option<u32> {
        match self {
            Changed::Walk { log, node } => {
                let s = *node;
                if s == NIL {
                    return None;
                }
                *node = log.next[s as usize];
                Some(s)
            }
            Changed::Sweep { stamps, cursor, next } => {
                while let Some(&stamp) = stamps.get(*next) {
                    *next += 1;
                    if stamp > *cursor {
                        return Some((*next - 1) as u32);
                    }
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::ChangeLog;

    /// The simple reference: generation -> stream, and stream -> its last generation.
    #[derive(Default)]
    struct RefLog {
        generation: u64,
        by_gen: BTreeMap<u64, u32>,
        last: HashMap<u32, u64>,
    }

    impl RefLog {
        fn touch(&mut self, stream: u32) {
            self.generation += 1;
            if let Some(old) = self.last.insert(stream, self.generation) {
                self.by_gen.remove(&old);
            }
            self.by_gen.insert(self.generation, stream);
        }

        fn after(&self, cursor: u64) -> Vec<(u32, u64)> {
            self.by_gen.range(cursor + 1..).map(|(&g, &s)| (s, g)).collect()
        }
    }

    fn walk(log: &ChangeLog, cursor: u64) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        let mut node = log.first_after(cursor);
        while let Some(s) = node {
            out.push((s, log.stamp(s)));
            node = log.next(s);
        }
        out
    }

    #[test]
    fn empty_log_has_nothing_after_any_cursor() {
        let mut log = ChangeLog::new();
        log.grow(8);
        assert_eq!(log.generation(), 0);
        assert_eq!(log.first_after(0), None);
    }

    #[test]
    fn a_stream_changed_again_moves_to_the_tail() {
        let mut log = ChangeLog::new();
        log.grow(4);
        for s in [0, 1, 2, 1, 3, 0] {
            log.touch(s);
        }
        // Order of last change: 2 (gen 3), 1 (4), 3 (5), 0 (6).
        assert_eq!(walk(&log, 0), vec![(2, 3), (1, 4), (3, 5), (0, 6)]);
        // From a cursor, only what changed after it, oldest first.
        assert_eq!(walk(&log, 4), vec![(3, 5), (0, 6)]);
        assert_eq!(walk(&log, 6), vec![]);
    }

    #[test]
    fn matches_the_reference_under_random_changes() {
        // A small deterministic generator (xorshift) so the test needs no crate.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for streams in [1u32, 2, 7, 64] {
            let mut log = ChangeLog::new();
            log.grow(streams as usize);
            let mut reference = RefLog::default();
            for _ in 0..2000 {
                let s = rnd(u64::from(streams)) as u32;
                log.touch(s as usize);
                reference.touch(s);
                assert_eq!(log.generation(), reference.generation);
                // Every cursor from "never looked" to "seen everything".
                let cursor = rnd(reference.generation + 1);
                let want = reference.after(cursor);
                assert_eq!(walk(&log, cursor), want, "cursor {cursor}");
                // Walk or sweep, the same streams, each once.
                let mut got: Vec<u32> = log.changed_since(cursor).collect();
                let mut want: Vec<u32> = want.iter().map(|w| w.0).collect();
                got.sort_unstable();
                want.sort_unstable();
                assert_eq!(got, want, "cursor {cursor}");
            }
        }
    }
}
