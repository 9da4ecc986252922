//! Latest-value table: the newest value per key, one writer, many readers,
//! one seqlock per entry.
//!
//! # Stamps
//!
//! Each entry's stamp counts writes: `0` = never written, odd = a write is in
//! progress, even `2k` = the `k`-th write is complete. Stamps only grow.
//!
//! # Invariants and contract
//!
//! * **Single writer.** At most one thread calls [`LatestTable::store`] at a
//!   time (for the whole table, or at least per key). `store` takes `&self` so
//!   the table can live in one `Arc` shared by the writer and the readers,
//!   with no second handle type to thread through the server; the price is
//!   that the compiler cannot enforce the contract. Breaking it cannot cause
//!   undefined behaviour (every access is atomic and there is no `unsafe`),
//!   but two interleaved writers to one key could let a reader accept a
//!   mixture of their words. Debug builds detect a second concurrent writer
//!   (the writer claims the entry with a compare-exchange) and panic.
//! * A reader that returns `Some(v)` returns exactly the words of one complete
//!   `store` (the ordering argument is in the parent module's docs).
//! * For one reader thread, successive loads of the same key never go back in
//!   time: they return the values of non-decreasing write numbers.
//!
//! # Progress
//!
//! `store` never waits. `load` retries while the entry is being written, so a
//! reader can be delayed for as long as one `store` of that key takes (a few
//! word stores), or longer only if the writer is descheduled mid-store.

use std::marker::PhantomData;

use super::Slotted;
use super::slot::{MAX_WORDS, SeqSlots};
use super::sync::spin_loop;

/// Fixed-capacity table of the newest value per key, written by one thread, read by many, seqlock per entry.
///
/// Keys are `0..capacity`. `Send + Sync` (for `T: Send + Sync`); share it via `Arc`.
pub struct LatestTable<T: Slotted> {
    /// One seqlock record per key; the stamp counts writes (see module docs).
    slots: SeqSlots,
    /// Values of `T` cross threads through the table, so it is `Send`/`Sync`
    /// only as far as `T` is.
    _values: PhantomData<T>,
}

impl<T: Slotted> LatestTable<T> {
    /// A table for keys `0..capacity`, every key unwritten.
    ///
    /// # Panics
    ///
    /// If `T::WORDS > MAX_WORDS` or the storage size overflows.
    pub fn new(capacity: usize) -> Self {
        LatestTable { slots: SeqSlots::new(capacity, T::WORDS), _values: PhantomData }
    }

    /// Number of keys (`0..capacity`).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Makes `value` the newest value of `key`. Never blocks.
    ///
    /// **Single writer only:** must not run concurrently with another `store`
    /// (see the module docs; debug builds panic when they detect it).
    ///
    /// # Panics
    ///
    /// If `key >= capacity()`.
    #[inline]
    pub fn store(&self, key: usize, value: T) {
        let mut buf = [0u64; MAX_WORDS];
        let words = &mut buf[..T::WORDS];
        value.to_words(words);
        // The single writer reads back its own last stamp store.
        let seq = self.slots.stamp_load_relaxed(key);
        if cfg!(debug_assertions) {
            // Claim the entry atomically so a second writer is caught, not silently torn.
            let claimed = seq & 1 == 0
                && self.slots.stamp_compare_exchange_relaxed(key, seq, seq + 1).is_ok();
            assert!(claimed, "LatestTable::store called concurrently from two threads (key {key})");
            self.slots.write_after_claim(key, seq + 2, words);
        } else {
            self.slots.write(key, seq + 1, seq + 2, words);
        }
    }

    /// The newest value of `key`, or `None` when the key was never written.
    /// Retries while a write is in progress; never returns a torn value.
    ///
    /// # Panics
    ///
    /// If `key >= capacity()`.
    #[inline]
    pub fn load(&self, key: usize) -> Option<T> {
        let mut buf = [0u64; MAX_WORDS];
        let words = &mut buf[..T::WORDS];
        loop {
            let s1 = self.slots.stamp_load_acquire(key);
            if s1 == 0 {
                return None;
            }
            if s1 & 1 == 0 && self.slots.read_validate(key, s1, words).is_ok() {
                return Some(T::from_words(words));
            }
            // A write is in progress or completed while we read: try again.
            spin_loop();
        }
    }
}

impl<T: Slotted> std::fmt::Debug for LatestTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatestTable").field("capacity", &self.capacity()).finish()
    }
}

#[cfg(all(test, not(tickwire_loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::ring::test_support::Probe;

    #[test]
    fn none_before_first_store_then_latest() {
        let t = LatestTable::<Probe<3>>::new(4);
        // Capacity is exactly the requested number of keys.
        assert_eq!(t.capacity(), 4);
        // No key has been written yet.
        assert!((0..4).all(|k| t.load(k).is_none()));
        t.store(2, Probe::new(7));
        t.store(2, Probe::new(8));
        // The newest store wins.
        assert_eq!(t.load(2), Some(Probe::new(8)));
        // Other keys are unaffected.
        assert_eq!(t.load(1), None);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn key_out_of_range_panics() {
        // key == capacity is rejected rather than aliasing another entry.
        LatestTable::<Probe<1>>::new(2).load(2);
    }

    #[test]
    fn concurrent_writer_and_readers_never_tear() {
        const KEYS: usize = 4;
        const WRITES: u64 = 200_000;
        let deadline = Instant::now() + Duration::from_secs(60);
        let table = Arc::new(LatestTable::<Probe<7>>::new(KEYS));
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (table, done) = (table.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut last = [None::<u64>; KEYS];
                    let mut loads = 0u64;
                    let mut key = r;
                    while !done.load(Ordering::Acquire) {
                        // Bounded: a wedged writer fails the test instead of hanging it.
                        assert!(Instant::now() < deadline, "writer never finished");
                        key = (key + 1) % KEYS;
                        if let Some(v) = table.load(key) {
                            let seq = v.seq();
                            // Every word agrees with word 0: the value is not torn.
                            assert!(seq.is_some(), "torn value {v:?}");
                            // Written values for key k are k, k+KEYS, ...: it belongs to this key.
                            assert_eq!(seq.unwrap() as usize % KEYS, key);
                            // One reader never sees a key go back in time.
                            assert!(last[key] <= seq, "key {key} went back: {last:?} -> {seq:?}");
                            last[key] = seq;
                        }
                        loads += 1;
                    }
                    loads
                })
            })
            .collect();
        for i in 0..WRITES {
            table.store(i as usize % KEYS, Probe::new(i));
        }
        done.store(true, Ordering::Release);
        for r in readers {
            // Each reader got to run some loads.
            assert!(r.join().unwrap() > 0);
        }
        for k in 0..KEYS {
            // After the writer is done, every key holds its last written value.
            assert_eq!(table.load(k), Some(Probe::new(WRITES - KEYS as u64 + k as u64)));
        }
    }

    #[test]
    fn second_concurrent_writer_is_caught_in_debug() {
        if !cfg!(debug_assertions) {
            return;
        }
        let t = LatestTable::<Probe<1>>::new(1);
        // Simulate a writer stopped mid-store: the stamp is odd.
        t.slots.write(0, 1, 2, &[0]);
        assert!(t.slots.stamp_compare_exchange_relaxed(0, 2, 3).is_ok());
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.store(0, Probe::new(1))));
        // A store that finds another store in progress panics instead of interleaving.
        assert!(r.is_err());
    }
}

#[cfg(all(test, tickwire_loom))]
mod loom_tests {
    use loom::sync::Arc;

    use super::*;
    use crate::ring::test_support::Probe;

    /// One writer storing two 2-word values into key 0, one reader loading
    /// twice: each load is None or one of the stored values, never torn, and
    /// never older than the previous load.
    ///
    /// The writer runs on the model's main thread and the reader is spawned:
    /// loom runs the main thread first, and with the roles the other way
    /// round its partial-order reduction saw the writer's leading stamp load
    /// as independent of the reader's loads and explored a single
    /// interleaving (checked by breaking the stamp validation on purpose).
    #[test]
    fn loom_table_one_writer_one_reader() {
        loom::model(|| {
            let table = Arc::new(LatestTable::<Probe<2>>::new(1));
            let reader = {
                let table = table.clone();
                loom::thread::spawn(move || {
                    let first = table.load(0).map(|v| v.seq());
                    let second = table.load(0).map(|v| v.seq());
                    // Each load is None or exactly one stored value (seq 1 or 2), never a mixture.
                    for l in [first, second] {
                        assert!(matches!(l, None | Some(Some(1 | 2))), "bad load {l:?}");
                    }
                    // Loads by one thread never go back in time.
                    assert!(first <= second);
                })
            };
            table.store(0, Probe::new(1));
            table.store(0, Probe::new(2));
            reader.join().unwrap();
            // After both threads finished, the last store is visible.
            assert_eq!(table.load(0), Some(Probe::new(2)));
        });
    }
}
