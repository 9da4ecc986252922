//! Order books for ITCH: every live order by reference number, and per stock
//! locate the aggregated price levels of each side, so that the best bid and
//! offer (BBO) is one read away. Knows nothing about messages or ticks: the
//! [`super::Normalizer`] calls it and turns the BBO changes it reports into
//! quotes.
//!
//! # Data structures
//!
//! - Orders live in an open-addressing hash table keyed by order reference
//!   ([`OrderMap`]): Fibonacci (multiplicative) hashing, linear probing,
//!   backward-shift deletion (no tombstones), grown ×2 above half full. ITCH
//!   assigns references in increasing order, which multiplicative hashing
//!   spreads evenly; SipHash would cost more than the rest of a message.
//! - A side's levels are a vector sorted so that the best price is *last*
//!   (bids by price, asks by inverted price): most activity is near the top,
//!   so inserting or removing a level moves only a few entries, and the BBO
//!   is the last element of each vector.
//!
//! Nothing allocates per message once the table and the level vectors have
//! grown to the day's size.
//!
//! # Inconsistent input
//!
//! An operation on a reference that is not on the book fails with
//! [`UnknownOrder`] and changes nothing. An execution or cancel of more
//! shares than the order has removes the order (the applied count in
//! [`Fill::shares`] tells). An add of a reference already on the book fails
//! with [`DuplicateOrder`] and keeps the first order.

/// The side of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// A bid (`B`).
    Buy,
    /// An offer (`S`).
    Sell,
}

/// Best bid and offer of one stock. An empty side is price 0, size 0; sizes
/// above `u32::MAX` shares saturate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bbo {
    /// Best bid price (4 implied decimals).
    pub bid: u32,
    /// Shares at the best bid.
    pub bid_size: u32,
    /// Best offer price.
    pub ask: u32,
    /// Shares at the best offer.
    pub ask_size: u32,
}

/// A live order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// Stock locate.
    pub locate: u16,
    /// Side.
    pub side: Side,
    /// Shares still open.
    pub shares: u32,
    /// Limit price.
    pub price: u32,
}

/// The reference is not on the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownOrder;

/// The reference is already on the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateOrder;

/// What an execution, cancel, delete or replace did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// The order's stock locate.
    pub locate: u16,
    /// The order's price.
    pub price: u32,
    /// Shares taken off the order (at most what it had).
    pub shares: u32,
    /// The stock's new BBO if it changed.
    pub quote: Option<Bbo>,
}

/// One occupied or empty slot of the [`OrderMap`].
#[derive(Clone, Copy)]
struct Slot {
    key: u64,
    order: Order,
    used: bool,
}

const EMPTY: Slot =
    Slot { key: 0, order: Order { locate: 0, side: Side::Buy, shares: 0, price: 0 }, used: false };

/// Live orders by reference: open addressing, see the module docs.
pub struct OrderMap {
    slots: Vec<Slot>,
    /// `slots.len() - 1` (the length is a power of two).
    mask: usize,
    /// `64 - log2(slots.len())`: the hash keeps the top bits of the product.
    shift: u32,
    len: usize,
}

/// 2^64 / golden ratio: consecutive keys land far apart.
const FIB: u64 = 0x9E37_79B9_7F4A_7C15;

/// Slots of a new table (24 bytes each).
const INITIAL_SLOTS: usize = 1024;

impl Default for OrderMap {
    fn default() -> OrderMap {
        OrderMap::with_slots(INITIAL_SLOTS)
    }
}

impl OrderMap {
    fn with_slots(n: usize) -> OrderMap {
        debug_assert!(n.is_power_of_two());
        OrderMap { slots: vec![EMPTY; n], mask: n - 1, shift: 64 - n.trailing_zeros(), len: 0 }
    }

    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(FIB) >> self.shift) as usize
    }

    /// Number of orders.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no order.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn find(&self, key: u64) -> Option<usize> {
        let mut i = self.home(key);
        loop {
            let s = &self.slots[i];
            if !s.used {
                return None;
            }
            if s.key == key {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The order with reference `key`.
    pub fn get(&self, key: u64) -> Option<Order> {
        self.find(key).map(|i| self.slots[i].order)
    }

    /// Adds an order; fails if the reference is taken.
    pub fn insert(&mut self, key: u64, order: Order) -> Result<(), DuplicateOrder> {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mut i = self.home(key);
        loop {
            let s = &mut self.slots[i];
            if !s.used {
                *s = Slot { key, order, used: true };
                self.len += 1;
                return Ok(());
            }
            if s.key == key {
                return Err(DuplicateOrder);
            }
            i = (i + 1) & self.mask;
        }
    }

    fn grow(&mut self) {
        let bigger = OrderMap::with_slots(self.slots.len() * 2);
        let old = std::mem::replace(self, bigger);
        for s in old.slots.into_iter().filter(|s| s.used) {
            let _ = self.insert(s.key, s.order);
        }
    }

    /// Removes the slot at `i`, shifting later entries of its probe run back
    /// so that no lookup ever needs a tombstone.
    fn remove_at(&mut self, i: usize) -> Order {
        let removed = self.slots[i].order;
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            if !self.slots[j].used {
                break;
            }
            let home = self.home(self.slots[j].key);
            // The entry at j may fill the hole if the hole lies on its probe
            // path, i.e. between its home and j (cyclically).
            if j.wrapping_sub(home) & self.mask >= j.wrapping_sub(hole) & self.mask {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        removed
    }

    /// Removes and returns the order with reference `key`.
    pub fn remove(&mut self, key: u64) -> Option<Order> {
        self.find(key).map(|i| self.remove_at(i))
    }
}

/// One aggregated price level.
#[derive(Debug, Clone, Copy)]
struct Level {
    /// The price for bids, `!price` for asks: ascending keys, best last.
    key: u32,
    shares: u64,
}

/// One side of a book, sorted by key, best last.
#[derive(Default)]
struct Levels(Vec<Level>);

impl Levels {
    fn find(&self, key: u32) -> Result<usize, usize> {
        // Most updates hit the top level: try it before searching.
        match self.0.last() {
            Some(top) if top.key == key => Ok(self.0.len() - 1),
            Some(top) if top.key < key => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&key, |l| l.key),
        }
    }

    fn add(&mut self, key: u32, shares: u32) {
        if shares == 0 {
            return;
        }
        match self.find(key) {
            Ok(i) => self.0[i].shares += u64::from(shares),
            Err(i) => self.0.insert(i, Level { key, shares: u64::from(shares) }),
        }
    }

    fn remove(&mut self, key: u32, shares: u32) {
        if shares == 0 {
            return;
        }
        if let Ok(i) = self.find(key) {
            let level = &mut self.0[i];
            level.shares = level.shares.saturating_sub(u64::from(shares));
            if level.shares == 0 {
                self.0.remove(i);
            }
        }
    }

    /// `(key, shares)` of the best level.
    fn best(&self) -> Option<(u32, u32)> {
        self.0.last().map(|l| (l.key, u32::try_from(l.shares).unwrap_or(u32::MAX)))
    }
}

/// The book of one stock.
#[derive(Default)]
struct Book {
    bids: Levels,
    asks: Levels,
    /// The BBO last reported, to tell whether an update changed it.
    shown: Bbo,
}

impl Book {
    fn side(&mut self, side: Side) -> &mut Levels {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    fn bbo(&self) -> Bbo {
        let (bid, bid_size) = self.bids.best().unwrap_or((0, 0));
        let (ask, ask_size) = self.asks.best().map_or((0, 0), |(k, s)| (!k, s));
        Bbo { bid, bid_size, ask, ask_size }
    }

    /// The new BBO if it differs from the one last shown.
    fn changed(&mut self) -> Option<Bbo> {
        let now = self.bbo();
        (now != self.shown).then(|| {
            self.shown = now;
            now
        })
    }
}

/// The level key of a price on a side.
fn key(side: Side, price: u32) -> u32 {
    match side {
        Side::Buy => price,
        Side::Sell => !price,
    }
}

/// No book for this locate yet.
const NO_BOOK: u32 = u32::MAX;

/// Every live order and every stock's price levels.
pub struct OrderBooks {
    orders: OrderMap,
    books: Vec<Book>,
    /// Index in `books` of every stock locate (65,536 entries), so a stray
    /// locate in a garbage message costs one small book, not 65,536.
    book_of: Vec<u32>,
}

impl Default for OrderBooks {
    fn default() -> OrderBooks {
        OrderBooks::new()
    }
}

impl OrderBooks {
    /// Empty books.
    pub fn new() -> OrderBooks {
        OrderBooks {
            orders: OrderMap::default(),
            books: Vec::new(),
            book_of: vec![NO_BOOK; 1 << 16],
        }
    }

    fn book(&mut self, locate: u16) -> &mut Book {
        let slot = &mut self.book_of[usize::from(locate)];
        if *slot == NO_BOOK {
            *slot = self.books.len() as u32;
            self.books.push(Book::default());
        }
        &mut self.books[*slot as usize]
    }

    /// Adds an order; returns the stock's new BBO if it changed.
    pub fn add(
        &mut self,
        locate: u16,
        order_ref: u64,
        side: Side,
        shares: u32,
        price: u32,
    ) -> Result<Option<Bbo>, DuplicateOrder> {
        self.orders.insert(order_ref, Order { locate, side, shares, price })?;
        let book = self.book(locate);
        book.side(side).add(key(side, price), shares);
        Ok(book.changed())
    }

    /// Takes up to `shares` off an order (removing it at 0): an execution.
    pub fn execute(&mut self, order_ref: u64, shares: u32) -> Result<Fill, UnknownOrder> {
        self.reduce(order_ref, shares)
    }

    /// Takes up to `shares` off an order (removing it at 0): a partial cancel.
    pub fn cancel(&mut self, order_ref: u64, shares: u32) -> Result<Fill, UnknownOrder> {
        self.reduce(order_ref, shares)
    }

    /// Removes an order.
    pub fn delete(&mut self, order_ref: u64) -> Result<Fill, UnknownOrder> {
        self.reduce(order_ref, u32::MAX)
    }

    fn reduce(&mut self, order_ref: u64, shares: u32) -> Result<Fill, UnknownOrder> {
        let i = self.orders.find(order_ref).ok_or(UnknownOrder)?;
        let order = &mut self.orders.slots[i].order;
        let taken = shares.min(order.shares);
        order.shares -= taken;
        let o = *order;
        if o.shares == 0 {
            self.orders.remove_at(i);
        }
        let book = self.book(o.locate);
        book.side(o.side).remove(key(o.side, o.price), taken);
        Ok(Fill { locate: o.locate, price: o.price, shares: taken, quote: book.changed() })
    }

    /// Replaces an order by a new one with the same stock and side. The
    /// BBO is compared once, after both steps. The flag is false if the new
    /// reference was already taken (the old order is removed anyway).
    pub fn replace(
        &mut self,
        order_ref: u64,
        new_ref: u64,
        shares: u32,
        price: u32,
    ) -> Result<(Fill, bool), UnknownOrder> {
        let old = self.orders.remove(order_ref).ok_or(UnknownOrder)?;
        let (locate, side) = (old.locate, old.side);
        let added = self.orders.insert(new_ref, Order { locate, side, shares, price }).is_ok();
        let book = self.book(locate);
        let levels = book.side(side);
        levels.remove(key(side, old.price), old.shares);
        if added {
            levels.add(key(side, price), shares);
        }
        let fill = Fill { locate, price: old.price, shares: old.shares, quote: book.changed() };
        Ok((fill, added))
    }

    /// The current BBO of a stock (all zero if it has no book).
    pub fn bbo(&self, locate: u16) -> Bbo {
        match self.book_of[usize::from(locate)] {
            NO_BOOK => Bbo::default(),
            i => self.books[i as usize].bbo(),
        }
    }

    /// A live order.
    pub fn order(&self, order_ref: u64) -> Option<Order> {
        self.orders.get(order_ref)
    }

    /// Number of live orders.
    pub fn live_orders(&self) -> usize {
        self.orders.len()
    }

    /// `(price, shares)` of a side's levels, best first (for tests and tools).
    pub fn depth(&self, locate: u16, side: Side) -> Vec<(u32, u64)> {
        let Some(book) = self.books.get(self.book_of[usize::from(locate)] as usize) else {
            return Vec::new();
        };
        let levels = match side {
            Side::Buy => &book.bids,
            Side::Sell => &book.asks,
        };
        levels.0.iter().rev().map(|l| (key(side, l.key), l.shares)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::synthetic::SplitMix64;
    use std::collections::{BTreeMap, HashMap};

    const A: u16 = 1;

    fn bbo(bid: u32, bid_size: u32, ask: u32, ask_size: u32) -> Option<Bbo> {
        Some(Bbo { bid, bid_size, ask, ask_size })
    }

    #[test]
    fn adds_build_levels_and_report_only_bbo_changes() {
        let mut b = OrderBooks::new();
        // The first bid sets the BBO; the ask side stays empty (0, 0).
        assert_eq!(b.add(A, 1, Side::Buy, 100, 10_000), Ok(bbo(10_000, 100, 0, 0)));
        // A worse bid changes nothing visible.
        assert_eq!(b.add(A, 2, Side::Buy, 50, 9_900), Ok(None));
        // More size at the best bid is a change.
        assert_eq!(b.add(A, 3, Side::Buy, 20, 10_000), Ok(bbo(10_000, 120, 0, 0)));
        // Asks: the lowest price is best.
        assert_eq!(b.add(A, 4, Side::Sell, 70, 10_200), Ok(bbo(10_000, 120, 10_200, 70)));
        assert_eq!(b.add(A, 5, Side::Sell, 30, 10_100), Ok(bbo(10_000, 120, 10_100, 30)));
        assert_eq!(b.add(A, 6, Side::Sell, 30, 10_300), Ok(None));
        // A duplicate reference is refused and changes nothing.
        assert_eq!(b.add(A, 6, Side::Buy, 1, 99_999), Err(DuplicateOrder));
        assert_eq!(b.depth(A, Side::Buy), [(10_000, 120), (9_900, 50)]);
        assert_eq!(b.depth(A, Side::Sell), [(10_100, 30), (10_200, 70), (10_300, 30)]);
        // Another stock has its own book.
        assert_eq!(b.add(2, 7, Side::Sell, 5, 1), Ok(bbo(0, 0, 1, 5)));
        assert_eq!(b.bbo(A), bbo(10_000, 120, 10_100, 30).unwrap());
    }

    #[test]
    fn executions_cancels_deletes_replaces() {
        let mut b = OrderBooks::new();
        b.add(A, 1, Side::Buy, 100, 10_000).unwrap();
        b.add(A, 2, Side::Buy, 50, 9_900).unwrap();
        b.add(A, 3, Side::Sell, 40, 10_100).unwrap();
        // A partial execution shrinks the best bid.
        let f = b.execute(1, 30).unwrap();
        assert_eq!((f.locate, f.price, f.shares), (A, 10_000, 30));
        assert_eq!(f.quote, bbo(10_000, 70, 10_100, 40));
        assert_eq!(b.order(1).unwrap().shares, 70);
        // A partial cancel below the top is invisible.
        assert_eq!(b.cancel(2, 10).unwrap().quote, None);
        // Executing the rest removes the order and exposes the next level.
        let f = b.execute(1, 70).unwrap();
        assert_eq!(f.quote, bbo(9_900, 40, 10_100, 40));
        assert_eq!(b.order(1), None);
        assert_eq!(b.execute(1, 1), Err(UnknownOrder));
        // Over-executing is clamped to what the order had, and removes it.
        let f = b.cancel(3, 1_000).unwrap();
        assert_eq!((f.shares, f.quote), (40, bbo(9_900, 40, 0, 0)));
        // A replace moves the order: one BBO change for both steps.
        let (f, added) = b.replace(2, 20, 25, 10_050).unwrap();
        assert!(added);
        assert_eq!((f.price, f.shares, f.quote), (9_900, 40, bbo(10_050, 25, 0, 0)));
        assert_eq!(
            b.order(20).unwrap(),
            Order { locate: A, side: Side::Buy, shares: 25, price: 10_050 }
        );
        assert_eq!(b.replace(2, 21, 1, 1), Err(UnknownOrder));
        // Delete empties the book.
        assert_eq!(b.delete(20).unwrap().quote, bbo(0, 0, 0, 0));
        assert_eq!(b.live_orders(), 0);
        assert!(b.depth(A, Side::Buy).is_empty());
    }

    #[test]
    fn replace_onto_a_taken_reference_removes_the_old_order() {
        let mut b = OrderBooks::new();
        b.add(A, 1, Side::Buy, 10, 100).unwrap();
        b.add(A, 2, Side::Buy, 10, 90).unwrap();
        let (f, added) = b.replace(2, 1, 5, 95).unwrap();
        // Order 1 is untouched, order 2 is gone.
        assert!(!added);
        assert_eq!(f.quote, None);
        assert_eq!(b.depth(A, Side::Buy), [(100, 10)]);
        assert_eq!(b.live_orders(), 1);
    }

    #[test]
    fn order_map_matches_a_hashmap_through_growth_and_deletions() {
        let mut fast = OrderMap::with_slots(8);
        let mut slow: HashMap<u64, Order> = HashMap::new();
        let mut rng = SplitMix64::new(7);
        let mut next_ref = 1_000u64;
        for step in 0..50_000 {
            let order =
                Order { locate: 1, side: Side::Buy, shares: rng.below(1000) as u32, price: step };
            match rng.below(3) {
                // Increasing references, as ITCH assigns them, plus a few random ones.
                0 | 1 => {
                    let k = if rng.below(10) == 0 { rng.next_u64() } else { next_ref };
                    next_ref += 1 + rng.below(3);
                    let expect = match slow.entry(k) {
                        std::collections::hash_map::Entry::Occupied(_) => Err(DuplicateOrder),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(order);
                            Ok(())
                        }
                    };
                    assert_eq!(fast.insert(k, order), expect);
                }
                _ => {
                    let k = next_ref.saturating_sub(rng.below(200));
                    assert_eq!(fast.remove(k), slow.remove(&k));
                }
            }
            assert_eq!(fast.len(), slow.len());
        }
        // Every key the reference holds is found, after all the shifting.
        for (k, o) in &slow {
            assert_eq!(fast.get(*k), Some(*o));
        }
    }

    /// A plain reference book: a HashMap of orders and BTreeMaps of levels.
    #[derive(Default)]
    struct RefBook {
        orders: HashMap<u64, Order>,
        levels: HashMap<(u16, bool), BTreeMap<u32, u64>>,
    }

    impl RefBook {
        fn bump(&mut self, o: Order, delta: i64) {
            let side = self.levels.entry((o.locate, o.side == Side::Buy)).or_default();
            let l = side.entry(o.price).or_default();
            *l = (*l as i64 + delta) as u64;
            if *l == 0 {
                side.remove(&o.price);
            }
        }

        fn bbo(&self, locate: u16) -> Bbo {
            let bids = self.levels.get(&(locate, true));
            let asks = self.levels.get(&(locate, false));
            let (bid, bid_size) =
                bids.and_then(|m| m.iter().next_back()).map_or((0, 0), |(p, s)| (*p, *s as u32));
            let (ask, ask_size) =
                asks.and_then(|m| m.iter().next()).map_or((0, 0), |(p, s)| (*p, *s as u32));
            Bbo { bid, bid_size, ask, ask_size }
        }
    }

    #[test]
    fn books_match_a_reference_over_random_order_flow() {
        let mut fast = OrderBooks::new();
        let mut slow = RefBook::default();
        let mut rng = SplitMix64::new(42);
        let mut live: Vec<u64> = Vec::new();
        let mut next_ref = 1u64;
        let mut shown: HashMap<u16, Bbo> = HashMap::new();
        for _ in 0..100_000 {
            let locate = 1 + rng.below(3) as u16;
            let touched;
            let reported;
            if live.is_empty() || rng.below(5) < 2 {
                let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
                let price = 10_000 + rng.below(40) as u32 * 100;
                let shares = 1 + rng.below(500) as u32;
                let o = Order { locate, side, shares, price };
                reported = fast.add(locate, next_ref, side, shares, price).unwrap();
                slow.orders.insert(next_ref, o);
                slow.bump(o, i64::from(shares));
                live.push(next_ref);
                next_ref += 1;
                touched = locate;
            } else {
                let at = rng.below(live.len() as u64) as usize;
                let r = live[at];
                let o = slow.orders[&r];
                touched = o.locate;
                match rng.below(4) {
                    0 | 1 => {
                        let n = 1 + rng.below(u64::from(o.shares)) as u32;
                        reported = fast.execute(r, n).unwrap().quote;
                        slow.bump(o, -i64::from(n));
                        slow.orders.get_mut(&r).unwrap().shares -= n;
                        if n == o.shares {
                            slow.orders.remove(&r);
                            live.swap_remove(at);
                        }
                    }
                    2 => {
                        reported = fast.delete(r).unwrap().quote;
                        slow.bump(o, -i64::from(o.shares));
                        slow.orders.remove(&r);
                        live.swap_remove(at);
                    }
                    _ => {
                        let price = 10_000 + rng.below(40) as u32 * 100;
                        let shares = 1 + rng.below(500) as u32;
                        reported = fast.replace(r, next_ref, shares, price).unwrap().0.quote;
                        slow.bump(o, -i64::from(o.shares));
                        slow.orders.remove(&r);
                        let n = Order { shares, price, ..o };
                        slow.orders.insert(next_ref, n);
                        slow.bump(n, i64::from(shares));
                        live[at] = next_ref;
                        next_ref += 1;
                    }
                }
            }
            // The fast book's BBO is the reference's, and a change is reported
            // exactly when it differs from the last one reported.
            let expect = slow.bbo(touched);
            assert_eq!(fast.bbo(touched), expect);
            let before = shown.insert(touched, expect).unwrap_or_default();
            assert_eq!(reported, (before != expect).then_some(expect));
        }
        assert_eq!(fast.live_orders(), slow.orders.len());
    }
}
