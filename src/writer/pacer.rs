//! When a busy shard flushes: at once, or after holding its sessions'
//! updates back so that they share frames.
//!
//! Every flush costs each waiting session a frame: a wake-up, a header and a
//! `write` system call, several microseconds whatever the frame holds
//! (BENCHMARKS.md). So a busy shard may hold its updates for up to a *gap*
//! after its last flush, `--flush-share-us` per session (capped at
//! [`MAX_FLUSH_GAP`]), so that they share frames. But holding only pays
//! when more are coming before the gap ends: a session that gets one
//! update per millisecond gains nothing from a 1.6 ms gap but a
//! millisecond of latency, while one that gets ten gains frames of ten.
//!
//! [`FlushPacer`] therefore holds a flush only while at least two more
//! updates per session are expected before the gap ends, at the lower of
//! two rates: the one since the last flush, which sees a quiet spell (the
//! first update after it goes at once), and a moving average over recent
//! flushes, which does not mistake a late flush for a faster stream (after
//! a flush that came late, the next update comes early by as much). The
//! rate is per session of the shard, not per session that got something:
//! sessions on different symbols each have one update soon after a flush
//! whatever their rate. So a session gets a frame at most once per gap
//! while its updates come faster than two per gap, and one per update
//! while they come slower: the frame rate never exceeds the update rate,
//! and the gap bounds it for fast streams.
//!
//! While it holds a flush, the pump does not wake for every tick the feed
//! publishes (at 10,000 updates/s, skipping those wake-ups cut the server's
//! CPU per message by 30%): the ticks wait in the ring and are dispatched
//! when the hold ends. [`FlushPacer::wake_by`] bounds that sleep so that the ring,
//! at the tick rate seen, fills at most a quarter of the way meanwhile.

use std::time::Duration;

use tokio::time::Instant;

/// Longest a busy shard holds a flush back, however many sessions it has.
pub const MAX_FLUSH_GAP: Duration = Duration::from_millis(10);

/// Updates per waiting session that must be expected before the gap ends
/// for a flush to be held. Holding for one more would at best halve the
/// frames, at the cost of a whole interval between updates of latency for
/// everything pending, and the rate it is expected at is an estimate: two
/// keeps a stream at about one update per gap from being held half the
/// time on jitter alone.
const HOLD_MIN_EXPECTED: f64 = 2.0;

/// Weight of the newest flush in the moving average of the update rate.
const EWMA_WEIGHT: f64 = 0.25;

/// Longest a busy shard with `sessions` sessions holds a flush, `share` per
/// session (`--flush-share-us`), at most [`MAX_FLUSH_GAP`].
///
/// A frame costs about 5-8 us here, so 48 us per session keeps a saturated
/// shard's frames to a sixth of a core; 50 sessions are held at most
/// 2.4 ms.
pub fn flush_gap(sessions: usize, share: Duration) -> Duration {
    share.saturating_mul(u32::try_from(sessions).unwrap_or(u32::MAX)).min(MAX_FLUSH_GAP)
}

/// Decides, for one shard, when its pending updates are flushed.
#[derive(Debug, Clone)]
pub struct FlushPacer {
    last_flush: Instant,
    /// Moving average of the updates per session per second.
    rate: f64,
    /// Moving average of the ticks read from the ring per second.
    tick_rate: f64,
}

impl FlushPacer {
    /// A pacer whose last flush was at `now` and that has seen no update.
    pub fn new(now: Instant) -> FlushPacer {
        FlushPacer { last_flush: now, rate: 0.0, tick_rate: 0.0 }
    }

    /// `None` to flush now, or when to flush: `news` updates went to the
    /// shard's `sessions` since the last flush, and `gap` is its current
    /// gap.
    pub fn due(&self, now: Instant, gap: Duration, news: u64, sessions: usize) -> Option<Instant> {
        let due = self.last_flush + gap;
        if now >= due {
            return None;
        }
        let elapsed = now.saturating_duration_since(self.last_flush).as_secs_f64();
        let per_session = news as f64 / sessions.max(1) as f64;
        let recent = if elapsed > 0.0 { per_session / elapsed } else { f64::INFINITY };
        let expected = recent.min(self.rate) * (due - now).as_secs_f64();
        (expected >= HOLD_MIN_EXPECTED).then_some(due)
    }

    /// A flush happened at `now`, after `news` updates to the shard's
    /// `sessions` and `ticks` ticks read from the ring.
    pub fn flushed(&mut self, now: Instant, news: u64, sessions: usize, ticks: u64) {
        let elapsed = now.saturating_duration_since(self.last_flush).as_secs_f64();
        if elapsed > 0.0 {
            let sample = news as f64 / sessions.max(1) as f64 / elapsed;
            self.rate += EWMA_WEIGHT * (sample - self.rate);
            self.tick_rate += EWMA_WEIGHT * (ticks as f64 / elapsed - self.tick_rate);
        }
        self.last_flush = now;
    }

    /// Latest time a pump holding a flush until `hold` may sleep without
    /// reading the ring, which has `capacity` slots: a quarter of it at the
    /// higher of the tick rate since the last flush (`ticks` read) and the
    /// moving average, so a burst shortens the sleep at once.
    pub fn wake_by(&self, now: Instant, hold: Instant, ticks: u64, capacity: usize) -> Instant {
        let elapsed = now.saturating_duration_since(self.last_flush).as_secs_f64();
        let recent = if elapsed > 0.0 { ticks as f64 / elapsed } else { 0.0 };
        let rate = recent.max(self.tick_rate);
        if rate <= 0.0 {
            return hold;
        }
        let blind = Duration::from_secs_f64((capacity as f64 / 4.0 / rate).min(1.0));
        hold.min(now + blind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const US: Duration = Duration::from_micros(1);

    #[test]
    fn the_gap_grows_with_the_sessions_up_to_its_cap() {
        assert_eq!(flush_gap(50, 8 * US), 400 * US);
        assert_eq!(flush_gap(0, 8 * US), Duration::ZERO);
        assert_eq!(flush_gap(5000, 8 * US), MAX_FLUSH_GAP);
    }

    /// Sessions on the shard in these tests.
    const SESSIONS: usize = 50;

    /// Drives a pacer: at each of the `arrivals` (offsets from the start),
    /// `news` updates reach the shard's [`SESSIONS`] sessions, and the pump
    /// decides, as it does on each wake-up. Returns each arrival's hold
    /// (time from it to the flush that carries it).
    fn holds(arrivals: impl Iterator<Item = Duration>, news: u64, gap: Duration) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut p = FlushPacer::new(t0);
        let mut unsent = 0u64;
        let mut pending: Vec<Instant> = Vec::new();
        let mut flush_at: Option<Instant> = None;
        let mut out = Vec::new();
        let mut flush =
            |p: &mut FlushPacer, at: Instant, unsent: &mut u64, pending: &mut Vec<Instant>| {
                p.flushed(at, *unsent, SESSIONS, 1);
                *unsent = 0;
                out.extend(pending.drain(..).map(|arrived| at - arrived));
            };
        for offset in arrivals {
            let arrive = t0 + offset;
            if let Some(at) = flush_at.take_if(|at| *at <= arrive) {
                flush(&mut p, at, &mut unsent, &mut pending);
            }
            unsent += news;
            pending.push(arrive);
            flush_at = p.due(arrive, gap, unsent, SESSIONS);
            if flush_at.is_none() {
                flush(&mut p, arrive, &mut unsent, &mut pending);
            }
        }
        out
    }

    /// `n` updates for every session, `every` apart, the k-th late by
    /// `jitter[k % jitter.len()]`.
    fn broadcast(every: Duration, jitter: &[Duration], gap: Duration, n: u32) -> Vec<Duration> {
        let arrivals = (1..=n).map(|k| every * k + jitter[k as usize % jitter.len()]);
        holds(arrivals, SESSIONS as u64, gap)
    }

    #[test]
    fn a_stream_slower_than_the_gap_is_flushed_at_once() {
        // One update per millisecond, a 1.6 ms gap: nothing to batch.
        let h = broadcast(MS, &[Duration::ZERO], 1600 * US, 200);
        assert!(h.iter().all(|d| d.is_zero()), "{h:?}");
    }

    #[test]
    fn a_late_flush_does_not_hold_the_next_update() {
        // Every fifth update comes 0.6 ms late, so the one after it comes
        // 0.4 ms after its flush: at the rate since that flush (2.5/ms, 3
        // more expected in the 1.2 ms left) holding would look worth it;
        // the average says it is not.
        let jitter = [Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO, 600 * US];
        let h = broadcast(MS, &jitter, 1600 * US, 200);
        assert!(h.iter().all(|d| d.is_zero()), "{h:?}");
    }

    #[test]
    fn a_fast_stream_shares_frames_within_the_gap() {
        // Ten updates per millisecond, a 1.6 ms gap: about 16 per frame,
        // none held longer than the gap.
        let h = broadcast(100 * US, &[Duration::ZERO], 1600 * US, 2000);
        let held = h.iter().filter(|d| !d.is_zero()).count();
        assert!(held > h.len() * 9 / 10, "{held} of {}", h.len());
        assert!(h.iter().all(|d| *d <= 1600 * US), "{h:?}");
    }

    /// A pacer that flushed every millisecond for 100 ms, each time after
    /// `news` updates to `waiting` sessions; and the time of its last flush.
    fn steady(news: u64, waiting: usize) -> (FlushPacer, Instant) {
        let t0 = Instant::now();
        let mut p = FlushPacer::new(t0);
        for k in 1..=100u32 {
            p.flushed(t0 + k * MS, news, waiting, news);
        }
        (p, t0 + 100 * MS)
    }

    #[test]
    fn the_first_update_after_a_quiet_spell_goes_at_once() {
        // A busy spell: ten updates per ms per session.
        let (p, last) = steady(10, 1);
        assert!(p.due(last + 100 * US, 1600 * US, 1, 1).is_some());
        // Then a second of silence.
        assert_eq!(p.due(last + 1000 * MS, 1600 * US, 1, 1), None);
    }

    #[test]
    fn independent_slow_streams_are_not_held() {
        // Every session on its own symbols, each with an update every 5 ms
        // on average, at random (0.48 expected in a 2.4 ms gap): nothing to
        // batch, although each session that got one soon after a flush
        // would look fast if only the sessions with news were counted.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut t = Duration::ZERO;
        let arrivals = std::iter::repeat_with(|| {
            // xorshift64, then an exponential gap of mean 5 ms / 50 sessions.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            t += Duration::from_secs_f64(-(1.0 - u).ln() * 100e-6);
            t
        });
        // A few are still held, after runs of arrivals close together (8%
        // with this seed).
        let h = holds(arrivals.take(20_000), 1, 2400 * US);
        let held = h.iter().filter(|d| !d.is_zero()).count();
        assert!(held < h.len() / 10, "{held} of {} held", h.len());
    }

    #[test]
    fn the_rate_is_per_session() {
        // 100 updates per ms to a shard of 2 sessions: 50 each; 25 more
        // expected in the 0.5 ms left: hold.
        let (p, last) = steady(100, 2);
        assert!(p.due(last + 500 * US, MS, 100, 2).is_some());
        // The same 100 on a shard of 100 sessions: one each per ms, 0.5
        // more expected: not worth it.
        let (q, last) = steady(100, 100);
        assert_eq!(q.due(last + 500 * US, MS, 100, 100), None);
    }

    #[test]
    fn a_hold_sleeps_no_longer_than_a_quarter_ring_takes_to_fill() {
        // 1,000 ticks per ms (a million a second) into a 4,096-slot ring:
        // a quarter fills in 1.024 ms, well before a 10 ms hold ends.
        let (p, last) = steady(1000, 1);
        let now = last + 10 * US;
        let wake = p.wake_by(now, now + 10 * MS, 10, 4096);
        assert_eq!(wake - now, Duration::from_micros(1024));
        // A default ring at ten ticks per ms: the hold itself is shorter.
        let (q, last) = steady(10, 1);
        let now = last + 10 * US;
        assert_eq!(q.wake_by(now, now + 2 * MS, 0, 65536), now + 2 * MS);
        // A burst since the last flush counts at once: 1,000 ticks in
        // 0.1 ms, ten million a second, fill a quarter of 4,096 in 102.4 us.
        let burst = q.wake_by(last + 100 * US, last + 2 * MS, 1000, 4096);
        assert_eq!(burst - (last + 100 * US), Duration::from_nanos(102_400));
    }
}
