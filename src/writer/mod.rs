//! STAGE 3: writer shards, one per core.
//!
//! A shard's state ([`shard::Shard`]) lives on its own thread (see
//! [`crate::server`] for the thread and its runtime). Its *pump* task drains the ring
//! in batches of up to [`BATCH`] ticks, dispatches each tick to the local
//! subscribers of its stream ([`shard::Shard::dispatch`]), and at the end of
//! every batch encodes one frame per dirty, idle session
//! ([`shard::Shard::end_of_batch`]) and yields so the socket tasks can write.
//! When the ring is empty it sleeps until the feed thread wakes it, a
//! `max_hz` delay expires, or housekeeping is due.

pub mod changes;
pub mod metrics;
pub mod pacer;
pub mod shard;
pub mod subscriber;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::feed::ShardWake;
use crate::ring::ReadOutcome;
use crate::tick::Tick;
use metrics::ShardCounters;
use pacer::{FlushPacer, flush_gap};
use shard::Shard;

/// Most ticks read from the ring at once.
pub const BATCH: usize = 1024;

/// Work the pump does before it encodes and yields to the socket tasks: one
/// unit per tick read, plus one per subscriber the tick is offered to.
///
/// Ticks that only a scanning session wants (latest mode on `["*"]`, see
/// [`changes`]) cost one unit, so the pump drains up to 32 batches and the
/// frames built next hold values at most one round old: at 200,000 updates/s
/// a shard reading one batch per round falls a lap behind the ring while
/// its sockets write. A batch offered to 50 `mode:"all"` sessions costs 52K
/// units: one batch per round, so their frames do not wait for more.
const DRAIN_WORK: usize = 32 * 1024;

/// Resolution of tokio's timer: a sleep ends on the first whole
/// millisecond past its deadline.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// How often slow clients are checked and latency merged into the metrics.
const HOUSEKEEPING: Duration = Duration::from_millis(100);

/// The pump: ring -> dispatch -> end of batch -> yield.
pub async fn pump(shard: Rc<RefCell<Shard>>, wake: ShardWake, mut shutdown: watch::Receiver<bool>) {
    let mut batch: Vec<Tick> = Vec::with_capacity(BATCH);
    let mut housekeeping = Instant::now() + HOUSEKEEPING;
    let mut pacer = FlushPacer::new(Instant::now());
    let capacity = shard.borrow().ring_capacity();
    // Ticks read from the ring since the last flush.
    let mut ticks = 0u64;
    loop {
        batch.clear();
        // Feed state first, ring second: see `Shard::feed_state`.
        let seen = shard.borrow().feed_state();
        shard.borrow_mut().sync_epoch();
        let mut drained = false;
        let mut got = 0;
        let mut work = 0;
        while !drained && work < DRAIN_WORK {
            batch.clear();
            let outcome = shard.borrow_mut().read_ring(&mut batch, BATCH);
            match outcome {
                ReadOutcome::Items(n) => {
                    drained = n < BATCH;
                    let mut s = shard.borrow_mut();
                    for t in &batch {
                        work += 1 + s.dispatch(t);
                    }
                    got += n;
                    ticks += n as u64;
                }
                ReadOutcome::Overrun { lost } => {
                    let mut s = shard.borrow_mut();
                    ShardCounters::add(&s.counters().ring_overruns, 1);
                    ShardCounters::add(&s.counters().ring_lost, lost);
                    s.resync();
                    got += 1;
                    break;
                }
            }
        }
        let (next_throttle, flush_at) = {
            let mut s = shard.borrow_mut();
            let now = Instant::now();
            let next = s.run_throttle(now);
            let mut flush_at = None;
            if s.has_dirty() {
                let (news, sessions) = (s.news(), s.session_count());
                let gap = flush_gap(sessions, s.config().flush_share);
                match pacer.due(now, gap, news, sessions) {
                    None => {
                        s.end_of_batch();
                        pacer.flushed(now, news, sessions, ticks);
                        ticks = 0;
                    }
                    Some(at) => {
                        let wake = pacer.wake_by(now, at, ticks, capacity);
                        flush_at = Some(wake);
                    }
                }
            }
            if drained {
                s.check_feed_state(seen);
            }
            if now >= housekeeping {
                s.check_slow(now);
                s.check_auth(now);
                s.publish_metrics();
                housekeeping = now + HOUSEKEEPING;
            }
            (next, flush_at)
        };
        if got > 0 {
            // Let the socket tasks write what this batch produced.
            tokio::task::yield_now().await;
            if !drained {
                continue;
            }
        }
        // Drained: wait for the feed's next publication (its wake-up is a
        // stored permit when it came meanwhile) instead of polling the ring
        // in a loop, which would take the CPU the clients on this machine
        // and the socket tasks need. While a flush is held, not even that:
        // the ticks wait in the ring until the hold ends (`pacer`). tokio's
        // timer wakes on whole milliseconds, late by up to one, so a hold
        // sleeps to a millisecond before its end, then takes the feed's
        // wake-ups again: the pacer ends it on the tick that makes waiting
        // on no longer worth it. The feed's urgent wake-up, once per quarter
        // of the ring, cuts any hold short, so a burst the tick rate seen
        // so far did not announce cannot lap the shard.
        let mut until = next_throttle.map_or(housekeeping, |t| t.min(housekeeping));
        let mut listen = true;
        if let Some(at) = flush_at {
            let now = Instant::now();
            if at > now + TIMER_TICK {
                listen = false;
                until = until.min(at - TIMER_TICK);
            } else {
                until = until.min(at);
            }
        }
        tokio::select! {
            _ = wake.tick.notified(), if listen => {}
            _ = wake.urgent.notified() => {}
            _ = tokio::time::sleep_until(until) => {}
            _ = shutdown.changed() => return,
        }
    }
}
