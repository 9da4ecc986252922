//! The limit on failed authentications per client IP
//! (`--auth-max-failures`, `--auth-failure-window-ms`).
//!
//! Every failed authentication (a bad, expired or forged token or an unknown
//! API key, with the upgrade or in an `auth` message) is [`recorded`]
//! against the client's IP. When an IP reaches the limit within one window
//! (the window opens at its first failure), it is blocked for one window:
//! the socket layer asks [`check`] before every upgrade and answers a
//! blocked IP with HTTP 429 and `Retry-After`. The decisions and the clock
//! are here; the counting in `/metrics` and the audit line are the caller's
//! ([`crate::auth::Access`]).
//!
//! The table has a fixed capacity: an attacker with many addresses evicts
//! the oldest entries (earliest window start) instead of growing it. Like
//! [`crate::socket::limits`], it is a mutex over a map touched once per
//! failure or upgrade, never per message.
//!
//! [`recorded`]: FailureLimit::record
//! [`check`]: FailureLimit::check

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures within [`DEFAULT_WINDOW`] that block an IP. 10 per 60 s
/// leaves room for an operator's typos and a client retrying with a stale
/// token, and holds a guesser to about 14,400 attempts a day per address.
pub const DEFAULT_MAX_FAILURES: u32 = 10;

/// See [`DEFAULT_MAX_FAILURES`].
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// IPs tracked at most. An entry is about 64 bytes with the map's
/// overhead, so the table stays under 1 MB; when it is full, a new IP
/// first clears the expired entries, then evicts the oldest one.
pub const TRACKED_IPS: usize = 10_000;

/// One IP's failures in its current window.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the window opened (the first failure of it).
    since: Instant,
    /// Failures in the window.
    failures: u32,
    /// Set when the limit was reached: refused until then.
    blocked_until: Option<Instant>,
}

impl Entry {
    /// Whether the entry no longer matters at `now`: not blocked and its
    /// window closed, or its block is over.
    fn expired(&self, now: Instant, window: Duration) -> bool {
        match self.blocked_until {
            Some(until) => now >= until,
            None => now >= self.since + window,
        }
    }
}

/// The per-IP failure counts. See the module docs.
#[derive(Debug)]
pub struct FailureLimit {
    /// Failures within `window` that block an IP; 0 turns the limit off.
    max_failures: u32,
    window: Duration,
    capacity: usize,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

impl FailureLimit {
    /// Blocks an IP for `window` once it failed `max_failures` times within
    /// `window` (0: never), tracking at most `capacity` IPs.
    pub fn new(max_failures: u32, window: Duration, capacity: usize) -> FailureLimit {
        FailureLimit { max_failures, window, capacity: capacity.max(1), table: Mutex::default() }
    }

    /// Before an upgrade from `ip`: `Err(retry_after)` while it is blocked.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.max_failures == 0 {
            return Ok(());
        }
        let ip = ip.to_canonical();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let Some(e) = table.get(&ip) else { return Ok(()) };
        match e.blocked_until {
            Some(until) if now < until => Err(until - now),
            Some(_) => {
                // The block is over: the IP starts again from zero.
                table.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed authentication from `ip`. Returns the failure count
    /// when this failure blocked the IP (for the audit log).
    ///
    /// A successful authentication resets nothing: an attacker who holds
    /// one valid key (or shares a NAT with a legitimate client) could
    /// otherwise interleave successes with guesses and never be blocked.
    pub fn record(&self, ip: IpAddr, now: Instant) -> Option<u32> {
        if self.max_failures == 0 {
            return None;
        }
        let ip = ip.to_canonical();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.contains_key(&ip) && table.len() >= self.capacity {
            self.make_room(&mut table, now);
        }
        let fresh = Entry { since: now, failures: 0, blocked_until: None };
        let e = table.entry(ip).or_insert(fresh);
        if e.expired(now, self.window) {
            *e = fresh;
        } else if e.blocked_until.is_some() {
            // Already blocked (a session that upgraded before the block):
            // the block runs its course, it is not extended.
            return None;
        }
        e.failures += 1;
        if e.failures < self.max_failures {
            return None;
        }
        e.blocked_until = Some(now + self.window);
        Some(e.failures)
    }

    /// Frees one slot: drops the expired entries, or else the oldest.
    fn make_room(&self, table: &mut HashMap<IpAddr, Entry>, now: Instant) {
        table.retain(|_, e| !e.expired(now, self.window));
        if table.len() >= self.capacity
            && let Some(oldest) = table.iter().min_by_key(|(_, e)| e.since).map(|(ip, _)| *ip)
        {
            table.remove(&oldest);
        }
    }

    /// How long a window (and a block) lasts.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Number of IPs tracked.
    pub fn tracked(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Default for FailureLimit {
    fn default() -> Self {
        FailureLimit::new(DEFAULT_MAX_FAILURES, DEFAULT_WINDOW, TRACKED_IPS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_limit_blocks_for_one_window() {
        let l = FailureLimit::new(3, W, 100);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        // Two failures: still allowed.
        assert_eq!(l.record(a, t0), None);
        assert_eq!(l.record(a, t0 + Duration::from_secs(1)), None);
        assert_eq!(l.check(a, t0 + Duration::from_secs(1)), Ok(()));
        // The third blocks it, for one window from that failure.
        let t3 = t0 + Duration::from_secs(2);
        assert_eq!(l.record(a, t3), Some(3));
        assert_eq!(l.check(a, t3), Err(W));
        assert_eq!(l.check(a, t3 + W - Duration::from_secs(1)), Err(Duration::from_secs(1)));
        // Other addresses are not affected.
        assert_eq!(l.check(ip("10.0.0.2"), t3), Ok(()));
        // After the window it starts again from zero.
        assert_eq!(l.check(a, t3 + W), Ok(()));
        assert_eq!(l.record(a, t3 + W), None);
    }

    #[test]
    fn failures_in_different_windows_do_not_add_up() {
        let l = FailureLimit::new(2, W, 100);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        assert_eq!(l.record(a, t0), None);
        // The next failure comes after the window closed: a new window.
        assert_eq!(l.record(a, t0 + W), None);
        assert_eq!(l.record(a, t0 + W + Duration::from_secs(1)), Some(2));
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_the_ipv4_one() {
        let l = FailureLimit::new(2, W, 100);
        let t0 = Instant::now();
        assert_eq!(l.record(ip("10.0.0.1"), t0), None);
        assert_eq!(l.record(ip("::ffff:10.0.0.1"), t0), Some(2));
        assert!(l.check(ip("10.0.0.1"), t0).is_err());
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let l = FailureLimit::new(0, W, 100);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(l.record(ip("10.0.0.1"), t0), None);
        }
        assert_eq!(l.check(ip("10.0.0.1"), t0), Ok(()));
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn the_table_never_grows_past_its_capacity() {
        let l = FailureLimit::new(2, W, 4);
        let t0 = Instant::now();
        // Block one address, then fail once from many others.
        let a = ip("10.0.0.1");
        l.record(a, t0);
        l.record(a, t0);
        for i in 0..1000u32 {
            let other = IpAddr::from((0x0b00_0000 + i).to_be_bytes());
            l.record(other, t0 + Duration::from_millis(u64::from(i) + 1));
            assert!(l.tracked() <= 4);
        }
        // The oldest entry (the blocked one) was evicted to make room.
        assert_eq!(l.check(a, t0 + Duration::from_secs(1)), Ok(()));
        // Expired entries go before live ones: after the window, four new
        // addresses fit without evicting each other.
        let later = t0 + 2 * W;
        for i in 0..4u8 {
            l.record(IpAddr::from([12, 0, 0, i]), later);
        }
        assert_eq!(l.tracked(), 4);
        assert_eq!(l.record(IpAddr::from([12, 0, 0, 0]), later), Some(2));
    }
}
