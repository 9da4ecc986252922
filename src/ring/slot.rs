//! Seqlock-guarded word storage shared by the broadcast ring and the latest
//! table.
//!
//! A [`SeqSlots`] is `len` records, each one stamp word followed by `words`
//! data words, laid out back to back (stride `words + 1`) in 64-byte aligned
//! lines, so a record of 7 data words occupies exactly one cache line.
//!
//! Invariants:
//! * only one thread at a time calls [`SeqSlots::write`] for a given record
//!   (the callers guarantee it: the ring has one producer, the table one writer);
//! * the stamps a writer stores into one record strictly increase, with an odd
//!   value while the words are being changed and an even value once they are
//!   complete. What the numbers mean beyond that is up to the caller.
//!
//! The ordering protocol is the one documented on the parent module.

use super::sync::{AtomicU64, Ordering, fence};

/// Largest number of data words per record.
pub(crate) const MAX_WORDS: usize = 8;

/// Words per cache line.
const LINE_WORDS: usize = 8;

/// One 64-byte cache line of words. The alignment is what makes a 7-word
/// record (stamp + 7 words = 8 words) sit in exactly one line instead of
/// straddling two, so a reader touches one line per item.
#[repr(C, align(64))]
struct Line([AtomicU64; LINE_WORDS]);

/// `len` seqlock-protected records of `words` u64 words each.
pub(crate) struct SeqSlots {
    /// Flat storage; record `r` starts at word `r * stride` (its stamp), its
    /// data words follow. A flat array of plain atomics (rather than a struct
    /// per record) keeps the record size a run-time value without `unsafe`.
    lines: Box<[Line]>,
    /// Words per record including the stamp: `words + 1`.
    stride: usize,
    /// Data words per record (`Slotted::WORDS` of the stored type).
    words: usize,
    /// Number of records, checked on every access so an out-of-range index
    /// panics with a clear message instead of silently aliasing padding.
    len: usize,
}

impl SeqSlots {
    /// `len` records of `words` data words, every stamp and word zero.
    pub(crate) fn new(len: usize, words: usize) -> Self {
        assert!(words <= MAX_WORDS, "a record holds at most {MAX_WORDS} words, got {words}");
        let stride = words + 1;
        let total = len.checked_mul(stride).expect("record storage size overflows usize");
        let lines = (0..total.div_ceil(LINE_WORDS))
            .map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0))))
            .collect();
        SeqSlots { lines, stride, words, len }
    }

    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of storage.
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.lines)
    }

    /// The `k`-th word of the flat storage.
    #[inline]
    fn word(&self, k: usize) -> &AtomicU64 {
        &self.lines[k / LINE_WORDS].0[k % LINE_WORDS]
    }

    /// Index of record `rec`'s stamp word, checking `rec < len`.
    #[inline]
    fn base(&self, rec: usize) -> usize {
        assert!(rec < self.len, "record index {rec} out of range (len {})", self.len);
        rec * self.stride
    }

    /// Record `rec`'s stamp, loaded with `Acquire` (reader step 1, `s1`).
    #[inline]
    pub(crate) fn stamp_load_acquire(&self, rec: usize) -> u64 {
        self.word(self.base(rec)).load(Ordering::Acquire)
    }

    /// Record `rec`'s stamp, loaded `Relaxed`. Only meaningful for the
    /// record's single writer, which reads back its own last store.
    #[inline]
    pub(crate) fn stamp_load_relaxed(&self, rec: usize) -> u64 {
        self.word(self.base(rec)).load(Ordering::Relaxed)
    }

    /// Atomically replaces the stamp `current` by `new`; used only by debug
    /// checks that catch a second, concurrent writer.
    pub(crate) fn stamp_compare_exchange_relaxed(
        &self,
        rec: usize,
        current: u64,
        new: u64,
    ) -> Result<u64, u64> {
        self.word(self.base(rec)).compare_exchange(
            current,
            new,
            Ordering::Relaxed,
            Ordering::Relaxed,
        )
    }

    /// Writer protocol: stamp `writing` (odd), release fence, the words,
    /// then stamp `done` (even) with `Release`. The `writing` store is
    /// `Relaxed`: the release fence that follows it does the ordering.
    #[inline]
    pub(crate) fn write(&self, rec: usize, writing: u64, done: u64, src: &[u64]) {
        debug_assert!(writing & 1 == 1 && done & 1 == 0 && done > writing);
        debug_assert_eq!(src.len(), self.words);
        let base = self.base(rec);
        self.word(base).store(writing, Ordering::Relaxed);
        self.write_words_publish(base, done, src);
    }

    /// The writer protocol after the odd stamp has been installed in some
    /// way: release fence, words, `done` stamp with `Release`.
    #[inline]
    pub(crate) fn write_after_claim(&self, rec: usize, done: u64, src: &[u64]) {
        debug_assert_eq!(src.len(), self.words);
        let base = self.base(rec);
        self.write_words_publish(base, done, src);
    }

    #[inline]
    fn write_words_publish(&self, base: usize, done: u64, src: &[u64]) {
        // Orders the odd stamp before every word store: a reader that sees any
        // of the new words will then see the odd (or a later) stamp in `s2`.
        fence(Ordering::Release);
        for (i, &w) in src.iter().enumerate() {
            self.word(base + 1 + i).store(w, Ordering::Relaxed);
        }
        // Publishes the words: a reader whose `s1` load sees `done` sees them.
        self.word(base).store(done, Ordering::Release);
    }

    /// Reader protocol after `s1 = stamp_load_acquire(rec)`: copies the data
    /// words into `dst` and re-checks the stamp. `Ok(())` means `dst` holds
    /// exactly the words written together with stamp `s1`; `Err(s2)` means
    /// the record changed meanwhile (`s2` is the stamp seen afterwards) and
    /// `dst` must be discarded.
    #[inline]
    pub(crate) fn read_validate(&self, rec: usize, s1: u64, dst: &mut [u64]) -> Result<(), u64> {
        debug_assert_eq!(dst.len(), self.words);
        let base = self.base(rec);
        for (i, d) in dst.iter_mut().enumerate() {
            *d = self.word(base + 1 + i).load(Ordering::Relaxed);
        }
        // Pairs with the writer's release fence: if a word above came from a
        // later write, that write's odd stamp is visible to the load below.
        fence(Ordering::Acquire);
        let s2 = self.word(base).load(Ordering::Relaxed);
        if s2 == s1 { Ok(()) } else { Err(s2) }
    }
}

#[cfg(all(test, not(tickwire_loom)))]
mod tests {
    use super::*;

    #[test]
    fn seven_word_records_are_line_aligned() {
        let s = SeqSlots::new(4, 7);
        // Stride 8 words == one 64-byte line, so record r's stamp is the first word of line r.
        assert_eq!(s.stride * 8, 64);
        // The line type is 64-byte aligned, so every record starts a cache line.
        assert_eq!(std::mem::align_of::<Line>(), 64);
        // Exactly one line per record: no wasted or shared lines.
        assert_eq!(s.lines.len(), 4);
    }

    #[test]
    fn write_then_read_round_trips() {
        let s = SeqSlots::new(3, 5);
        s.write(1, 1, 2, &[1, 2, 3, 4, 5]);
        let s1 = s.stamp_load_acquire(1);
        // The completed write left its even stamp.
        assert_eq!(s1, 2);
        let mut dst = [0u64; 5];
        // With no concurrent writer the stamp is unchanged, so the read validates.
        assert_eq!(s.read_validate(1, s1, &mut dst), Ok(()));
        // The words read are the words written.
        assert_eq!(dst, [1, 2, 3, 4, 5]);
        // A neighbouring record was not touched by the write.
        assert_eq!(s.stamp_load_acquire(0), 0);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn out_of_range_record_panics() {
        // Index == len must panic instead of reading padding words.
        SeqSlots::new(2, 1).stamp_load_acquire(2);
    }
}
