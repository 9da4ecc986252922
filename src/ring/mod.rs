//! Lock-free, `unsafe`-free building blocks for fanning data out from one
//! writer thread to many reader threads:
//!
//! * [`ring`] — a single-producer, multi-consumer **broadcast** ring with
//!   overwrite semantics (tokio `broadcast` / Aeron "untethered" style). The
//!   producer never waits for readers; a reader that falls more than one lap
//!   behind is told how many positions it lost and resynchronised to the
//!   producer's current position.
//! * [`LatestTable`] — a fixed-capacity table holding the newest value per
//!   key, one seqlock per entry, one writer and any number of readers.
//! * [`History`] — the last `depth` values of every key, by position in
//!   the key's stream, one writer and any number of readers.
//!
//! Both are generic over [`Slotted`] values and know nothing about what the
//! values mean.
//!
//! # Why there is no `unsafe` here
//!
//! Values are stored as arrays of `AtomicU64` words guarded by a seqlock stamp
//! (see the private `slot` module and H.-J. Boehm, *Can seqlocks get along with
//! programming language memory models?*, MSPC 2012). Every shared memory
//! access is an atomic access, so a reader racing with the writer can at worst
//! observe a *mixture* of old and new words — never undefined behaviour — and
//! the stamp check rejects every such mixture before it is turned back into a
//! `T`. This module tree is `#![forbid(unsafe_code)]`.
//!
//! # Memory-ordering contract (shared by the ring and the table)
//!
//! Writer, for one record:
//!
//! ```text
//! stamp.store(WRITING, Relaxed)   // odd value: "record is being changed"
//! fence(Release)                  // orders the WRITING store before every word store below
//! word[i].store(w_i, Relaxed)     // for every word
//! stamp.store(DONE, Release)      // even value: publishes the words
//! ```
//!
//! Reader:
//!
//! ```text
//! s1 = stamp.load(Acquire)        // if s1 == DONE, every word store of that write is visible
//! w_i = word[i].load(Relaxed)     // may see words of a *later* write too
//! fence(Acquire)                  // if any w_i came from a later write, that write's
//!                                 //   WRITING store happens-before the next load
//! s2 = stamp.load(Relaxed)
//! valid  <=>  s1 == s2 == expected DONE stamp
//! ```
//!
//! If a word load read a value stored by a later write, the writer's release
//! fence synchronises with the reader's acquire fence, so `s2` is at least that
//! later write's WRITING stamp and differs from `s1`; if `s1 == s2`, every
//! word therefore came from the write that stored `s1`. Stamps only ever
//! increase, which makes the `==` comparison ABA-free.
//!
//! The ring additionally publishes a head cursor with `store_release` after
//! each push; readers `load_acquire` it, so every slot below the loaded head
//! is visible with a stamp at least as new as the one for its position.

#![forbid(unsafe_code)]

mod broadcast;
mod history;
mod latest;
mod slot;

pub use broadcast::{ReadOutcome, RingProducer, RingReader, RingReaderFactory, ring};
pub use history::History;
pub use latest::LatestTable;

/// Largest [`Slotted::WORDS`] accepted by [`ring`] and [`LatestTable`].
pub const MAX_WORDS: usize = slot::MAX_WORDS;

/// A value that can travel through the ring as a fixed number of u64 words.
///
/// `from_words(to_words(v))` must reproduce `v`. Readers only ever call
/// `from_words` on a word array that some `to_words` call produced (torn
/// mixtures are rejected first), but `from_words` must not panic on any such
/// array.
pub trait Slotted: Copy {
    /// Number of u64 words one value occupies (at most 8, see [`MAX_WORDS`]).
    const WORDS: usize;
    /// Encodes `self` into `out`; `out.len() == WORDS`.
    fn to_words(&self, out: &mut [u64]);
    /// Decodes a value; `words.len() == WORDS`; must not panic on any bit
    /// pattern produced by [`to_words`](Slotted::to_words).
    fn from_words(words: &[u64]) -> Self;
}

/// Atomics used by the ring: `std`'s normally, loom's model types under
/// `--cfg tickwire_loom` so the loom tests explore the real code.
mod sync {
    #[cfg(tickwire_loom)]
    pub(crate) use loom::hint::spin_loop;
    #[cfg(tickwire_loom)]
    pub(crate) use loom::sync::atomic::{AtomicU64, Ordering, fence};
    #[cfg(not(tickwire_loom))]
    pub(crate) use std::hint::spin_loop;
    #[cfg(not(tickwire_loom))]
    pub(crate) use std::sync::atomic::{AtomicU64, Ordering, fence};
}

/// Value types shared by the tests of the ring and the table.
#[cfg(test)]
mod test_support {
    use super::Slotted;

    /// Multiplier used to derive every word of a [`Probe`] from its sequence
    /// number: word `i` is `seq * PROBE_K + i`, so any mixture of two probes
    /// (a torn read) is detectable.
    pub(crate) const PROBE_K: u64 = 1_000_003;

    /// An `N`-word value whose words all derive from one sequence number.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) struct Probe<const N: usize>(pub(crate) [u64; N]);

    impl<const N: usize> Probe<N> {
        /// The probe for sequence number `seq`.
        pub(crate) fn new(seq: u64) -> Self {
            Probe(std::array::from_fn(|i| seq.wrapping_mul(PROBE_K).wrapping_add(i as u64)))
        }

        /// The sequence number, if every word is consistent with word 0.
        pub(crate) fn seq(&self) -> Option<u64> {
            let seq = self.0.first().map_or(0, |w| w / PROBE_K);
            (*self == Self::new(seq)).then_some(seq)
        }
    }

    impl<const N: usize> Slotted for Probe<N> {
        const WORDS: usize = N;
        fn to_words(&self, out: &mut [u64]) {
            out.copy_from_slice(&self.0);
        }
        fn from_words(words: &[u64]) -> Self {
            Probe(std::array::from_fn(|i| words[i]))
        }
    }
}
