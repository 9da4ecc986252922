//! Single-producer, multi-consumer broadcast ring with overwrite semantics.
//!
//! Every reader sees every value pushed after it was created, in order,
//! unless it falls more than one lap (`capacity` positions) behind the
//! producer; the producer never waits for anyone.
//!
//! # Positions and stamps
//!
//! Values are numbered by *position*: the `p`-th value ever pushed has
//! position `p` (from 0) and lives in slot `p & (capacity - 1)`. Each slot's
//! seqlock stamp says which position it holds:
//!
//! | stamp       | meaning                                  |
//! |-------------|------------------------------------------|
//! | `0`         | never written                            |
//! | `2 * p + 1` | position `p` is being written            |
//! | `2 * p + 2` | position `p` is complete                 |
//!
//! A reader expecting position `r` compares the stamp with `2 * r + 2`:
//! smaller means "not written yet" (impossible for `r` below the published
//! head, see below), equal means "valid", larger means "overwritten by a later
//! lap" (or being overwritten right now).
//!
//! # Invariants
//!
//! * `head` (the producer's published position) only grows, by one per push,
//!   and is stored with `Release` *after* the slot's final stamp, so a reader
//!   that loads `head = h` with `Acquire` sees, for every `r < h`, a stamp of
//!   at least `2 * r + 2` in slot `r`'s place.
//! * Slot `r & mask` holds position `r` from the end of push `r` until the
//!   start of push `r + capacity`; in particular positions `h - capacity .. h`
//!   are all intact at the instant `head == h` was published.
//! * A reader's position only ever takes values of `head` it has loaded (or
//!   grows by one per returned value below such a head), and later loads of
//!   `head` by the same thread never return less (coherence), so
//!   `lag() = head - position` never underflows.
//!
//! # Overrun
//!
//! A reader at position `r` is *overrun* when the value at `r` is gone: either
//! the head it loads is more than `capacity` ahead (`head - r > capacity`), or
//! the stamp check for `r` finds a later lap (the producer overtook it while it
//! was reading). Then [`RingReader::read_batch`] appends nothing, moves the
//! reader to the producer's current position `h'` (the head it loaded when it
//! detected the overrun), and reports `Overrun { lost: h' - r }`: exactly
//! the positions `r .. h'` are never returned to that reader, including any
//! of them that were still intact. Positions from `h'` on are delivered
//! normally unless the reader is lapped again.
//!
//! When an overwrite is detected in the middle of a batch, the values already
//! appended are kept and the call returns `Items(n)` for them; the overrun is
//! reported by the next call. So `Overrun` always means "nothing appended".
//!
//! # Progress
//!
//! `push` is wait-free (a fixed number of stores). `read_batch` is wait-free
//! too: it never spins or retries, it reads at most `min(max, capacity)`
//! slots and then returns.
//!
//! **Guarantee:** every value a reader returns is exactly the value pushed at
//! the position it is returned for (never torn, never from another lap), values
//! come out in strictly increasing position order, and for every reader
//! `items returned + sum of lost == final position - start position`.

use std::marker::PhantomData;
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::Slotted;
use super::slot::{MAX_WORDS, SeqSlots};
use super::sync::{AtomicU64, Ordering};

/// Stamp stored in a slot while position `pos` is being written.
#[inline]
fn stamp_writing(pos: u64) -> u64 {
    2 * pos + 1
}

/// Stamp stored in a slot once position `pos` is complete.
#[inline]
fn stamp_done(pos: u64) -> u64 {
    2 * pos + 2
}

/// A monotonically increasing position shared between threads; the method
/// names carry the memory ordering used.
struct Cursor(AtomicU64);

impl Cursor {
    fn new(v: u64) -> Self {
        Cursor(AtomicU64::new(v))
    }

    #[inline]
    fn load_acquire(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    #[inline]
    fn store_release(&self, v: u64) {
        self.0.store(v, Ordering::Release)
    }
}

/// State shared by the producer, the factories and all readers.
struct Shared {
    /// Number of values published (= position of the next value to be
    /// written). Own cache line: it is written on every push and polled by
    /// every reader, and must not false-share with the slot array's header
    /// or the constants below.
    head: CachePadded<Cursor>,
    /// The slots, seqlock per slot; see the module docs for the stamp values.
    slots: SeqSlots,
    /// `capacity - 1`; capacity is a power of two so `pos & mask` is the slot.
    mask: u64,
    /// Number of slots (a power of two, at least 2).
    capacity: u64,
}

/// Creates a broadcast ring; `capacity` is rounded up to a power of two, and
/// to at least 2.
///
/// # Panics
///
/// If `T::WORDS > MAX_WORDS` or the rounded capacity overflows.
pub fn ring<T: Slotted>(capacity: usize) -> (RingProducer<T>, RingReaderFactory<T>) {
    let capacity = capacity.max(2).checked_next_power_of_two().expect("ring capacity overflows");
    let shared = Arc::new(Shared {
        head: CachePadded::new(Cursor::new(0)),
        slots: SeqSlots::new(capacity, T::WORDS),
        mask: capacity as u64 - 1,
        capacity: capacity as u64,
    });
    (
        RingProducer { shared: shared.clone(), next: 0, _values: PhantomData },
        RingReaderFactory { shared, _values: PhantomData },
    )
}

/// The single writer of a ring. `Send`, not `Clone`.
pub struct RingProducer<T: Slotted> {
    /// Shared ring state.
    shared: Arc<Shared>,
    /// Position of the next push; the producer's private copy of `head`, so
    /// pushing never reads the shared cursor back.
    next: u64,
    /// Values of `T` move from this thread to the readers' threads, so the
    /// handles are `Send`/`Sync` only as far as `T` is.
    _values: PhantomData<T>,
}

impl<T: Slotted> RingProducer<T> {
    /// Writes one value; never blocks, never waits for readers; overwrites the oldest slot.
    #[inline]
    pub fn push(&mut self, value: T) {
        let pos = self.next;
        let mut buf = [0u64; MAX_WORDS];
        let words = &mut buf[..T::WORDS];
        value.to_words(words);
        let slot = (pos & self.shared.mask) as usize;
        self.shared.slots.write(slot, stamp_writing(pos), stamp_done(pos), words);
        self.next = pos + 1;
        // After the slot's release stamp: readers that see the new head see the slot.
        self.shared.head.store_release(self.next);
    }

    /// Position of the next value to be written == number of values ever pushed.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.shared.capacity as usize
    }
}

impl<T: Slotted> std::fmt::Debug for RingProducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingProducer")
            .field("position", &self.next)
            .field("capacity", &self.shared.capacity)
            .finish()
    }
}

/// Creates readers of a ring. Cheap to clone; `Send + Sync` (for `T: Send + Sync`).
pub struct RingReaderFactory<T: Slotted> {
    /// Shared ring state.
    shared: Arc<Shared>,
    /// See [`RingProducer::_values`].
    _values: PhantomData<T>,
}

impl<T: Slotted> Clone for RingReaderFactory<T> {
    fn clone(&self) -> Self {
        RingReaderFactory { shared: self.shared.clone(), _values: PhantomData }
    }
}

impl<T: Slotted> RingReaderFactory<T> {
    /// A new reader starting at the producer's current position (sees only values pushed from now on).
    pub fn reader(&self) -> RingReader<T> {
        RingReader {
            pos: self.shared.head.load_acquire(),
            shared: self.shared.clone(),
            _values: PhantomData,
        }
    }

    /// Number of slots (the requested capacity rounded up to a power of two, at least 2).
    pub fn capacity(&self) -> usize {
        self.shared.capacity as usize
    }
}

impl<T: Slotted> std::fmt::Debug for RingReaderFactory<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingReaderFactory").field("capacity", &self.shared.capacity).finish()
    }
}

/// Result of [`RingReader::read_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an Overrun means values were lost and must usually be handled"]
pub enum ReadOutcome {
    /// This many values were appended (0 when nothing new was published).
    Items(usize),
    /// The producer lapped the reader: nothing was appended, the reader has
    /// jumped to the producer's current position, and `lost` positions were
    /// skipped.
    Overrun {
        /// Number of positions skipped by the resync.
        lost: u64,
    },
}

/// One consumer's cursor into a ring. `Send`; use one per consumer thread.
pub struct RingReader<T: Slotted> {
    /// Shared ring state.
    shared: Arc<Shared>,
    /// Position of the next value to return. Private to this reader: readers
    /// never publish anything, which is what lets the producer ignore them.
    pos: u64,
    /// See [`RingProducer::_values`].
    _values: PhantomData<T>,
}

impl<T: Slotted> RingReader<T> {
    /// Appends up to `max` available values, in order, to `out`.
    ///
    /// Returns `ReadOutcome::Items(n)` (n may be 0 when nothing new), or
    /// `ReadOutcome::Overrun { lost }` when the producer lapped this reader:
    /// the reader has then already jumped to the producer's current position,
    /// `lost` says how many positions were skipped, and nothing was appended.
    /// See the module docs for exactly which positions are lost.
    pub fn read_batch(&mut self, out: &mut Vec<T>, max: usize) -> ReadOutcome {
        let shared = &*self.shared;
        let head = shared.head.load_acquire();
        let available = head - self.pos;
        if available > shared.capacity {
            // Slot of `self.pos` was already reused when `head` was published.
            return self.resync(head);
        }
        let n = (available as usize).min(max);
        out.reserve(n);
        let mut buf = [0u64; MAX_WORDS];
        let words = &mut buf[..T::WORDS];
        for i in 0..n {
            let pos = self.pos;
            let slot = (pos & shared.mask) as usize;
            let expected = stamp_done(pos);
            let s1 = shared.slots.stamp_load_acquire(slot);
            let seen = if s1 != expected {
                s1
            } else {
                match shared.slots.read_validate(slot, s1, words) {
                    Ok(()) => {
                        out.push(T::from_words(words));
                        self.pos = pos + 1;
                        continue;
                    }
                    Err(s2) => s2,
                }
            };
            // `pos < head` was published, so the slot can only have moved on.
            // Checked in debug and loom builds (loom runs in release): this is what
            // catches a head published without Release ordering.
            debug_assert!(seen > expected, "stamp {seen} older than published position {pos}");
            #[cfg(tickwire_loom)]
            assert!(seen > expected, "stamp {seen} older than published position {pos}");
            if i > 0 {
                // Keep what was read; the next call reports the overrun.
                return ReadOutcome::Items(i);
            }
            // Resync to a freshly loaded head (>= `head` > `pos` by coherence).
            // Deliberately not to the position named by `seen`: that stamp was
            // stored `Relaxed`, so seeing it does not guarantee that a later head
            // load returns at least that position, and the reader's position must
            // never pass a head it could load afterwards (`lag` would underflow).
            return self.resync(shared.head.load_acquire());
        }
        ReadOutcome::Items(n)
    }

    /// Jumps to `to` (a position the producer has reached) and reports the skip.
    #[cold]
    fn resync(&mut self, to: u64) -> ReadOutcome {
        let lost = to - self.pos;
        self.pos = to;
        ReadOutcome::Overrun { lost }
    }

    /// Position of the next value this reader will return.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.shared.capacity as usize
    }

    /// How many values are published but not yet read (producer position -
    /// reader position; may exceed capacity when overrun).
    pub fn lag(&self) -> u64 {
        self.shared.head.load_acquire() - self.pos
    }
}

impl<T: Slotted> std::fmt::Debug for RingReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingReader")
            .field("position", &self.pos)
            .field("capacity", &self.shared.capacity)
            .finish()
    }
}

#[cfg(all(test, not(tickwire_loom)))]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::*;
    use crate::ring::test_support::Probe;

    /// Locked reference model of the same semantics: keeps the last
    /// `capacity` values in a deque, readers are plain positions.
    struct RefRing {
        /// (retained values, oldest first; head position).
        inner: Mutex<(VecDeque<u64>, u64)>,
        capacity: u64,
    }

    impl RefRing {
        fn new(capacity: u64) -> Self {
            RefRing { inner: Mutex::new((VecDeque::new(), 0)), capacity }
        }

        fn push(&self, v: u64) {
            let mut g = self.inner.lock().unwrap();
            if g.0.len() as u64 == self.capacity {
                g.0.pop_front();
            }
            g.0.push_back(v);
            g.1 += 1;
        }

        fn head(&self) -> u64 {
            self.inner.lock().unwrap().1
        }

        fn read(&self, pos: &mut u64, out: &mut Vec<u64>, max: usize) -> ReadOutcome {
            let g = self.inner.lock().unwrap();
            let (buf, head) = (&g.0, g.1);
            let oldest = head - buf.len() as u64;
            if *pos < oldest {
                let lost = head - *pos;
                *pos = head;
                return ReadOutcome::Overrun { lost };
            }
            let n = ((head - *pos) as usize).min(max);
            let start = (*pos - oldest) as usize;
            out.extend(buf.range(start..start + n));
            *pos += n as u64;
            ReadOutcome::Items(n)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u64),
        Read { reader: usize, max: usize },
        AddReader,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u64>().prop_map(Op::Push),
            4 => (0usize..3, 0usize..20).prop_map(|(reader, max)| Op::Read { reader, max }),
            1 => Just(Op::AddReader),
        ]
    }

    /// Three-word value derived from an arbitrary u64, to exercise multi-word slots.
    fn value(v: u64) -> [u64; 3] {
        [v, !v, v.rotate_left(17)]
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Triple([u64; 3]);
    impl Slotted for Triple {
        const WORDS: usize = 3;
        fn to_words(&self, out: &mut [u64]) {
            out.copy_from_slice(&self.0);
        }
        fn from_words(w: &[u64]) -> Self {
            Triple([w[0], w[1], w[2]])
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn matches_locked_reference(requested in 0usize..17, ops in prop::collection::vec(op(), 0..200)) {
            let (mut tx, factory) = ring::<Triple>(requested);
            let cap = factory.capacity();
            // Capacity is the requested one rounded up to a power of two, minimum 2.
            prop_assert!(cap.is_power_of_two() && cap >= requested.max(2) && cap < 2 * requested.max(2));
            let model = RefRing::new(cap as u64);
            let mut readers = vec![(factory.reader(), 0u64)];
            for op in ops {
                match op {
                    Op::Push(v) => {
                        tx.push(Triple(value(v)));
                        model.push(v);
                        // The producer position counts every push, like the model's head.
                        prop_assert_eq!(tx.position(), model.head());
                    }
                    Op::AddReader => {
                        if readers.len() < 3 {
                            // A new reader starts at the current head in both implementations.
                            readers.push((factory.reader(), model.head()));
                        }
                    }
                    Op::Read { reader, max } => {
                        let Some((r, model_pos)) = readers.get_mut(reader) else { continue };
                        let (mut got, mut want) = (Vec::new(), Vec::new());
                        let outcome = r.read_batch(&mut got, max);
                        let want_outcome = model.read(model_pos, &mut want, max);
                        // Same Items(n) / Overrun{lost} decision as the locked model.
                        prop_assert_eq!(outcome, want_outcome);
                        let want: Vec<Triple> = want.into_iter().map(|v| Triple(value(v))).collect();
                        // Same values, in the same order.
                        prop_assert_eq!(got, want);
                        // Same position afterwards (including after a resync).
                        prop_assert_eq!(r.position(), *model_pos);
                        // Lag is head minus position.
                        prop_assert_eq!(r.lag(), model.head() - *model_pos);
                    }
                }
            }
        }
    }

    #[test]
    fn handles_have_the_promised_auto_traits() {
        fn send<X: Send>() {}
        fn send_sync<X: Send + Sync>() {}
        // Producer and readers move to their threads; the factory is shared.
        send::<RingProducer<Probe<7>>>();
        send::<RingReader<Probe<7>>>();
        send_sync::<RingReaderFactory<Probe<7>>>();
        send_sync::<LatestTableAlias>();
    }

    /// The table is shared via `Arc` between the writer and the readers.
    type LatestTableAlias = crate::ring::LatestTable<Probe<7>>;

    #[test]
    fn overrun_resyncs_to_head() {
        let (mut tx, factory) = ring::<Probe<1>>(3);
        let mut rx = factory.reader();
        // 3 is rounded up to 4.
        assert_eq!(factory.capacity(), 4);
        for i in 0..10 {
            tx.push(Probe::new(i));
        }
        let mut out = Vec::new();
        // 10 published, capacity 4: lapped, all 10 positions skipped, nothing appended.
        assert_eq!(rx.read_batch(&mut out, 100), ReadOutcome::Overrun { lost: 10 });
        assert!(out.is_empty());
        // The reader now sits at the head.
        assert_eq!((rx.position(), rx.lag()), (10, 0));
        tx.push(Probe::new(10));
        // Values pushed after the resync are delivered normally.
        assert_eq!(rx.read_batch(&mut out, 100), ReadOutcome::Items(1));
        assert_eq!(out, vec![Probe::new(10)]);
    }

    #[test]
    fn exactly_one_lap_behind_is_not_an_overrun() {
        let (mut tx, factory) = ring::<Probe<2>>(4);
        let mut rx = factory.reader();
        for i in 0..4 {
            tx.push(Probe::new(i));
        }
        let mut out = Vec::new();
        // Lag == capacity: every slot still holds the wanted position.
        assert_eq!(rx.read_batch(&mut out, 2), ReadOutcome::Items(2));
        assert_eq!(rx.read_batch(&mut out, 9), ReadOutcome::Items(2));
        // All four values, in order.
        assert_eq!(out, (0..4).map(Probe::new).collect::<Vec<_>>());
    }

    /// Per-reader tallies from the stress test.
    #[derive(Debug, Default)]
    struct Tally {
        items: u64,
        lost: u64,
        overruns: u64,
    }

    /// Drains `rx` until it reaches `end`, checking every value.
    fn stress_reader(mut rx: RingReader<Probe<7>>, end: u64, deadline: Instant) -> Tally {
        let start = rx.position();
        let mut t = Tally::default();
        let mut out = Vec::with_capacity(64);
        while rx.position() < end {
            // Bounded: a wedged producer fails the test instead of hanging it.
            assert!(Instant::now() < deadline, "reader stuck at {} of {end}", rx.position());
            let before = rx.position();
            out.clear();
            match rx.read_batch(&mut out, 64) {
                ReadOutcome::Items(n) => {
                    // The count returned is the count appended.
                    assert_eq!(n, out.len());
                    for (i, v) in out.iter().enumerate() {
                        // Every word agrees with word 0 (no torn read), and the value is the
                        // one pushed at exactly the position it was returned for.
                        assert_eq!(v.seq(), Some(before + i as u64), "torn or misplaced value");
                    }
                    // The position advanced by exactly the values returned (so strictly increasing).
                    assert_eq!(rx.position(), before + n as u64);
                    t.items += n as u64;
                    if n == 0 {
                        std::thread::yield_now();
                    }
                }
                ReadOutcome::Overrun { lost } => {
                    // An overrun appends nothing.
                    assert!(out.is_empty());
                    // It skips at least one position, and exactly `lost` of them.
                    assert!(lost > 0 && rx.position() == before + lost);
                    t.lost += lost;
                    t.overruns += 1;
                }
            }
        }
        // Everything between start and end was either delivered or reported lost.
        assert_eq!(t.items + t.lost, end - start);
        t
    }

    #[test]
    fn stress_one_producer_three_readers() {
        const N: u64 = 500_000;
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut tx, factory) = ring::<Probe<7>>(8);
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let rx = factory.reader();
                std::thread::spawn(move || stress_reader(rx, N, deadline))
            })
            .collect();
        let producer = std::thread::spawn(move || {
            for i in 0..N {
                tx.push(Probe::new(i));
                if i % 32 == 0 {
                    // Pacing only (not synchronisation): lets readers on a 2-core box keep
                    // up often enough that both the delivery and the overrun paths run.
                    std::thread::yield_now();
                }
            }
            tx.position()
        });
        // The producer finished without waiting for anyone.
        assert_eq!(producer.join().unwrap(), N);
        for (i, r) in readers.into_iter().enumerate() {
            let t = r.join().unwrap();
            eprintln!("reader {i}: {t:?}");
        }
    }

    /// `cargo test --release --lib -- --ignored throughput --nocapture`
    #[test]
    #[ignore]
    fn throughput() {
        const N: u64 = 20_000_000;
        let (mut tx, factory) = ring::<Probe<7>>(4096);
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let mut rx = factory.reader();
                std::thread::spawn(move || {
                    let mut out = Vec::with_capacity(256);
                    let (mut items, mut lost, mut checksum) = (0u64, 0u64, 0u64);
                    while rx.position() < N {
                        out.clear();
                        match rx.read_batch(&mut out, 256) {
                            ReadOutcome::Items(n) => {
                                items += n as u64;
                                checksum = out.iter().fold(checksum, |c, v| c ^ v.0[6]);
                            }
                            ReadOutcome::Overrun { lost: l } => lost += l,
                        }
                    }
                    (items, lost, checksum)
                })
            })
            .collect();
        let t0 = Instant::now();
        for i in 0..N {
            tx.push(Probe::new(i));
        }
        let push_secs = t0.elapsed().as_secs_f64();
        eprintln!("producer: {:.1} M items/s (7 words)", N as f64 / push_secs / 1e6);
        for (i, r) in readers.into_iter().enumerate() {
            let (items, lost, _) = r.join().unwrap();
            let secs = t0.elapsed().as_secs_f64();
            eprintln!(
                "reader {i}: {items} delivered, {lost} lost, {:.1} M delivered/s",
                items as f64 / secs / 1e6
            );
            // Every position is accounted for.
            assert_eq!(items + lost, N);
        }
    }
}

#[cfg(all(test, tickwire_loom))]
mod loom_tests {
    use super::*;
    use crate::ring::test_support::Probe;

    /// One producer pushing three 2-word values into a 2-slot ring (so the
    /// first slot is overwritten while the reader may be reading it), one
    /// reader doing two batches. Every interleaving loom explores must give
    /// only correct, untorn values at their positions and exact loss accounting.
    #[test]
    fn loom_ring_one_producer_one_reader() {
        loom::model(|| {
            let (mut tx, factory) = ring::<Probe<2>>(2);
            let mut rx = factory.reader();
            let producer = loom::thread::spawn(move || {
                for i in 0..3 {
                    tx.push(Probe::new(i));
                }
            });
            let mut out = Vec::new();
            let mut lost = 0;
            for _ in 0..2 {
                let before = rx.position();
                let start = out.len();
                match rx.read_batch(&mut out, 4) {
                    ReadOutcome::Items(n) => {
                        for (i, v) in out[start..].iter().enumerate() {
                            // Untorn, and exactly the value of the position it was returned for.
                            assert_eq!(v.seq(), Some(before + i as u64));
                        }
                        // Position advanced by the count returned.
                        assert_eq!(rx.position(), before + n as u64);
                    }
                    ReadOutcome::Overrun { lost: l } => {
                        // Overrun appends nothing and moves by exactly `lost`.
                        assert_eq!(out.len(), start);
                        assert_eq!(rx.position(), before + l);
                        lost += l;
                    }
                }
            }
            producer.join().unwrap();
            // Delivered plus lost is exactly how far the reader moved.
            assert_eq!(out.len() as u64 + lost, rx.position());
        });
    }

    /// Same scenario with the roles swapped (producer on the model's main
    /// thread, which loom runs first, reader spawned), so loom's partial-order
    /// reduction starts from the other end of the race.
    #[test]
    fn loom_ring_producer_first() {
        loom::model(|| {
            let (mut tx, factory) = ring::<Probe<2>>(2);
            let mut rx = factory.reader();
            let reader = loom::thread::spawn(move || {
                let mut out = Vec::new();
                let mut lost = 0;
                for _ in 0..2 {
                    let before = rx.position();
                    match rx.read_batch(&mut out, 4) {
                        ReadOutcome::Items(n) => {
                            for (i, v) in out[out.len() - n..].iter().enumerate() {
                                // Untorn, and exactly the value of the position it was returned for.
                                assert_eq!(v.seq(), Some(before + i as u64));
                            }
                        }
                        // Overrun skips at least one position.
                        ReadOutcome::Overrun { lost: l } => {
                            assert!(l > 0);
                            lost += l;
                        }
                    }
                }
                // Delivered plus lost is exactly how far the reader moved.
                assert_eq!(out.len() as u64 + lost, rx.position());
                // The reader never passes the producer.
                assert!(rx.position() <= 3);
            });
            for i in 0..3 {
                tx.push(Probe::new(i));
            }
            reader.join().unwrap();
        });
    }
}
