//! A feed driven by the program that embeds the server: tests push exactly
//! the ticks (and state changes) they want, and nothing else arrives.
//!
//! The pushing side is a [`ManualFeedHandle`]; the feed thread drains its
//! channel. Pushes are batched the way a real source would batch: whatever
//! is queued when the feed thread looks is published together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::{FeedSource, FeedState, Poll};
use crate::tick::{Price, SymbolError, SymbolTable, Tick, now_ns};

/// What a test can tell the manual feed.
#[derive(Debug, Clone)]
enum Event {
    Tick(Tick),
    State(FeedState),
    Barrier(Sender<()>),
}

/// The pushing side, cheap to clone and usable from any thread.
#[derive(Clone)]
pub struct ManualFeedHandle {
    tx: Sender<Event>,
    table: Arc<SymbolTable>,
}

/// The source the feed thread polls.
pub struct ManualFeed {
    rx: Receiver<Event>,
    /// A state change seen while collecting a batch, reported on the next poll
    /// so that ticks queued before it are published first.
    pending_state: Option<FeedState>,
    /// Barriers to release once the batch before them is published.
    barriers: Vec<Sender<()>>,
}

/// Creates a manual feed over `table`.
pub fn manual(table: Arc<SymbolTable>) -> (ManualFeed, ManualFeedHandle) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (ManualFeed { rx, pending_state: None, barriers: Vec::new() }, ManualFeedHandle { tx, table })
}

impl ManualFeedHandle {
    /// Interns `name` (so it becomes a known symbol without any tick).
    pub fn add_symbol(&self, name: &str) -> Result<(), SymbolError> {
        self.table.intern(name).map(|_| ())
    }

    /// Queues a quote stamped now; prices in currency units.
    pub fn quote(&self, sym: &str, bid: f64, bid_size: u32, ask: f64, ask_size: u32) {
        let id = self.table.intern(sym).expect("valid test symbol");
        let tick = Tick::quote(
            id,
            now_ns(),
            Price::from_f64(bid),
            bid_size,
            Price::from_f64(ask),
            ask_size,
        );
        let _ = self.tx.send(Event::Tick(tick));
    }

    /// Queues a trade stamped now.
    pub fn trade(&self, sym: &str, price: f64, size: u32) {
        let id = self.table.intern(sym).expect("valid test symbol");
        let _ = self.tx.send(Event::Tick(Tick::trade(id, now_ns(), Price::from_f64(price), size)));
    }

    /// Queues a feed state change.
    pub fn set_state(&self, state: FeedState) {
        let _ = self.tx.send(Event::State(state));
    }

    /// Blocks until everything queued before this call has been published
    /// (or `timeout` passes; returns false then).
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.tx.send(Event::Barrier(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }
}

impl FeedSource for ManualFeed {
    fn poll(&mut self, out: &mut Vec<Tick>) -> Poll {
        // Barriers collected last time: their batch is published by now.
        for b in self.barriers.drain(..) {
            let _ = b.send(());
        }
        if let Some(state) = self.pending_state.take() {
            return Poll::State(state);
        }
        loop {
            match self.rx.try_recv() {
                Ok(Event::Tick(t)) => {
                    out.push(t);
                    if out.len() >= 4096 {
                        return Poll::Ready;
                    }
                }
                Ok(Event::State(s)) => {
                    if out.is_empty() {
                        return Poll::State(s);
                    }
                    self.pending_state = Some(s);
                    return Poll::Ready;
                }
                Ok(Event::Barrier(b)) => {
                    self.barriers.push(b);
                    return Poll::Ready;
                }
                Err(TryRecvError::Empty) => {
                    return if out.is_empty() {
                        Poll::WaitUntil(Instant::now() + Duration::from_millis(1))
                    } else {
                        Poll::Ready
                    };
                }
                Err(TryRecvError::Disconnected) => {
                    return if out.is_empty() {
                        Poll::WaitUntil(Instant::now() + Duration::from_millis(20))
                    } else {
                        Poll::Ready
                    };
                }
            }
        }
    }
}
