//! The recent past of every key: the last `depth` values of each key's
//! stream, each at its position in that stream (1, 2, 3...), for a reader
//! that missed some and wants them back (a client resuming after a
//! reconnect).
//!
//! One writer (the feed thread) records every value once, whoever reads it
//! later; any number of readers look up a (key, position). A key's storage
//! is a small seqlock ring of `depth` records ([`SeqSlots`]), allocated on
//! the key's first value: keys that never update cost one empty
//! `OnceLock` each, and memory is `depth` records per key that has updated
//! ([`History::bytes`]).
//!
//! Position `p` of a key lives in record `(p - 1) % depth`, stamped
//! `2 * (base + p)` once written (`- 1` while being written), where `base`
//! grows past every position used so far when the numbering restarts
//! ([`History::restart`]): stamps of a record only ever increase, so a
//! reader that expects position `p` and finds any other stamp knows the
//! value is gone (overwritten by a later position) or not there yet, and
//! can never mistake an older value for it.

use std::marker::PhantomData;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64 as StdAtomicU64, AtomicUsize, Ordering as StdOrdering};

use super::slot::SeqSlots;
use super::{MAX_WORDS, Slotted};

/// The last `depth` values of every key. See the module docs.
pub struct History<T: Slotted> {
    keys: Box<[OnceLock<SeqSlots>]>,
    depth: usize,
    /// Added to every position in stamps: see the module docs.
    base: StdAtomicU64,
    /// The highest position recorded since the last restart (writer only;
    /// atomic so that the struct is `Sync`).
    highest: StdAtomicU64,
    /// Bytes allocated for records.
    bytes: AtomicUsize,
    _values: PhantomData<T>,
}

impl<T: Slotted> History<T> {
    /// Room for keys `0..keys`, `depth` values each (0: keep nothing).
    pub fn new(keys: usize, depth: usize) -> Self {
        History {
            keys: (0..keys).map(|_| OnceLock::new()).collect(),
            depth,
            base: StdAtomicU64::new(0),
            highest: StdAtomicU64::new(0),
            bytes: AtomicUsize::new(0),
            _values: PhantomData,
        }
    }

    /// Values kept per key.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Bytes held by the records of every key that has updated.
    pub fn bytes(&self) -> usize {
        self.bytes.load(StdOrdering::Relaxed)
    }

    /// Records `value` at position `pos` (1 or more) of `key`, replacing
    /// position `pos - depth`. Never blocks; allocates on a key's first value.
    ///
    /// **Single writer only**, with increasing positions per key.
    pub fn store(&self, key: usize, pos: u64, value: T) {
        if self.depth == 0 || pos == 0 {
            return;
        }
        let Some(cell) = self.keys.get(key) else { return };
        let slots = cell.get_or_init(|| {
            let slots = SeqSlots::new(self.depth, T::WORDS);
            self.bytes.fetch_add(slots.bytes(), StdOrdering::Relaxed);
            slots
        });
        let mut buf = [0u64; MAX_WORDS];
        let words = &mut buf[..T::WORDS];
        value.to_words(words);
        let stamp = 2 * (self.base.load(StdOrdering::Relaxed) + pos);
        slots.write(Self::record(pos, self.depth), stamp - 1, stamp, words);
        if pos > self.highest.load(StdOrdering::Relaxed) {
            self.highest.store(pos, StdOrdering::Relaxed);
        }
    }

    /// The value at position `pos` of `key`, if it is still held (not yet
    /// replaced by position `pos + depth`, and written).
    pub fn load(&self, key: usize, pos: u64) -> Option<T> {
        if self.depth == 0 || pos == 0 {
            return None;
        }
        let slots = self.keys.get(key)?.get()?;
        let rec = Self::record(pos, self.depth);
        let expected = 2 * (self.base.load(StdOrdering::Acquire) + pos);
        let mut buf = [0u64; MAX_WORDS];
        let words = &mut buf[..T::WORDS];
        let s1 = slots.stamp_load_acquire(rec);
        // Another stamp: replaced, not written yet, or being written. A
        // value being written is one this reader cannot wait for: it was
        // published after the reader's view of the stream, or it is the
        // next lap's and `pos` is gone.
        if s1 != expected || slots.read_validate(rec, s1, words).is_err() {
            return None;
        }
        Some(T::from_words(words))
    }

    /// The numbering starts over (writer only): every position recorded so
    /// far is forgotten, and positions from 1 may be recorded again.
    pub fn restart(&self) {
        let highest = self.highest.swap(0, StdOrdering::Relaxed);
        // Release: a reader that sees the new base expects stamps that no
        // record of the old numbering carries.
        self.base.fetch_add(highest + 1, StdOrdering::Release);
    }

    fn record(pos: u64, depth: usize) -> usize {
        ((pos - 1) % depth as u64) as usize
    }
}

impl<T: Slotted> std::fmt::Debug for History<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("keys", &self.keys.len())
            .field("depth", &self.depth)
            .field("bytes", &self.bytes())
            .finish()
    }
}

#[cfg(all(test, not(tickwire_loom)))]
mod tests {
    use super::*;
    use crate::ring::test_support::Probe;

    #[test]
    fn holds_the_last_depth_positions_of_each_key() {
        let h: History<Probe<3>> = History::new(4, 8);
        for pos in 1..=20 {
            h.store(1, pos, Probe::new(pos));
        }
        // Positions 13..=20 are held, each as written.
        for pos in 13..=20 {
            assert_eq!(h.load(1, pos), Some(Probe::new(pos)), "pos {pos}");
        }
        // Older ones were replaced; later ones are not there yet.
        assert_eq!(h.load(1, 12), None);
        assert_eq!(h.load(1, 21), None);
        // Another key is untouched and unallocated.
        assert_eq!(h.load(2, 1), None);
        assert_eq!(h.bytes(), SeqSlots::new(8, 3).bytes());
    }

    #[test]
    fn a_restart_forgets_every_position() {
        let h: History<Probe<2>> = History::new(2, 4);
        for pos in 1..=3 {
            h.store(0, pos, Probe::new(pos));
        }
        h.restart();
        // Position 2 of the old numbering is not position 2 of the new one.
        assert_eq!(h.load(0, 2), None);
        h.store(0, 1, Probe::new(100));
        assert_eq!(h.load(0, 1), Some(Probe::new(100)));
        assert_eq!(h.load(0, 3), None);
    }

    #[test]
    fn depth_zero_keeps_nothing() {
        let h: History<Probe<1>> = History::new(2, 0);
        h.store(0, 1, Probe::new(1));
        assert_eq!((h.load(0, 1), h.bytes()), (None, 0));
    }

    #[test]
    fn a_racing_reader_gets_the_value_or_nothing_never_a_mixture() {
        // A writer laps a small history while a reader asks for every
        // position: whatever it gets is whole and at the position asked.
        let h = std::sync::Arc::new(History::<Probe<7>>::new(1, 4));
        let writer = {
            let h = h.clone();
            std::thread::spawn(move || {
                for pos in 1..=200_000 {
                    h.store(0, pos, Probe::new(pos));
                }
            })
        };
        for pos in (1..=200_000).step_by(7) {
            if let Some(v) = h.load(0, pos) {
                assert_eq!(v.seq(), Some(pos));
            }
        }
        writer.join().unwrap();
        // Once the writer is done, the last lap is there.
        assert_eq!(h.load(0, 200_000), Some(Probe::new(200_000)));
    }
}
