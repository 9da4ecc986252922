//! Connection limits, in total and per client IP, checked by the acceptor
//! before a socket reaches a shard. A refused client gets HTTP 503 and no
//! upgrade, so it costs the server one small write.
//!
//! Counting happens once per connection (accept and close), never per
//! message, so a mutex over the per-IP map is cheap enough; the total is an
//! atomic so the common check needs no lock when the server is far from it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The limits and the live counts.
#[derive(Debug)]
pub struct ConnLimits {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Connections refused since start (for `/metrics`).
    pub refused: AtomicU64,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `--max-connections` connections.
    Total,
    /// This IP holds `--max-connections-per-ip` connections.
    PerIp,
}

impl Refusal {
    /// The body of the 503 answer.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Total => "connection limit reached (server); retry later\n",
            Refusal::PerIp => "connection limit reached (per client address); retry later\n",
        }
    }
}

/// One admitted connection; dropping it gives the slot back.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl ConnLimits {
    /// Limits of `max_total` connections, `max_per_ip` from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
        })
    }

    /// Admits a connection from `ip`, or says which limit it hits.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let refuse = |r| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Err(r)
        };
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return refuse(Refusal::Total);
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            drop(per_ip);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return refuse(Refusal::PerIp);
        }
        *n += 1;
        Ok(Permit { limits: self.clone(), ip })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut per_ip = self.limits.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        drop(per_ip);
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_and_release() {
        let l = ConnLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.admit(a).unwrap();
        let _p2 = l.admit(a).unwrap();
        // A third from the same address is over the per-IP limit...
        assert_eq!(l.admit(a).unwrap_err(), Refusal::PerIp);
        let _p3 = l.admit(b).unwrap();
        // ...and a fourth in all is over the total.
        assert_eq!(l.admit(b).unwrap_err(), Refusal::Total);
        // Closing one gives its slot back.
        drop(p1);
        assert!(l.admit(a).is_ok());
        assert_eq!(l.refused.load(Ordering::Relaxed), 2);
    }
}
