//! The harness's own feed, for servers that can take one over TCP
//! (tickwire's `--tcp-feed HOST:PORT`, JSON lines): a target whose command
//! holds `{feed}` gets the address of a [`Feed`] started for that run.
//!
//! It is what the peers generate themselves, so that every target of a case
//! serves the same market: symbols `S0000`.., quotes only, picked
//! round-robin or by Zipf weights ([`Weights`]), on the open-loop schedule of
//! the peer contract (update k due at start + k/R, a 1 ms tick writing every
//! update that is due, `t` = its due time). Before the schedule starts, one
//! quote of every symbol goes out, so that every name is known to the server
//! before any client subscribes. A feed quieter than [`HEARTBEAT`] sends a
//! blank line, the heartbeat of tickwire's TCP ingest (which takes a
//! second of silence for a stale feed): at one update a second, it would
//! otherwise flap between stale and live.

use std::io::{BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client::now_ns;

/// The name of symbol `i`, as the peers spell it.
pub fn symbol(i: usize) -> String {
    format!("S{i:04}")
}

/// How the feed picks the symbol of each update.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Cumulative probabilities, one per symbol; empty for round-robin.
    cumulative: Vec<f64>,
    symbols: usize,
}

impl Weights {
    /// Round-robin over `symbols`, or Zipf(`s`): symbol i with probability
    /// proportional to 1/(i+1)^s.
    pub fn new(symbols: usize, zipf: Option<f64>) -> Weights {
        let cumulative = match zipf {
            None => Vec::new(),
            Some(s) => {
                let mut sum = 0.0;
                let mut c: Vec<f64> = (0..symbols)
                    .map(|i| {
                        sum += 1.0 / ((i + 1) as f64).powf(s);
                        sum
                    })
                    .collect();
                c.iter_mut().for_each(|v| *v /= sum);
                c
            }
        };
        Weights { cumulative, symbols }
    }

    /// The share of all updates that go to symbol `i`.
    pub fn share(&self, i: usize) -> f64 {
        if self.cumulative.is_empty() {
            return 1.0 / self.symbols as f64;
        }
        let below = if i == 0 { 0.0 } else { self.cumulative[i - 1] };
        self.cumulative[i] - below
    }

    /// The symbol of update `k`, given a uniform `u` in [0, 1).
    pub fn pick(&self, k: u64, u: f64) -> usize {
        if self.cumulative.is_empty() {
            return (k % self.symbols as u64) as usize;
        }
        self.cumulative.partition_point(|&c| c < u).min(self.symbols - 1)
    }

    /// `k` distinct symbols drawn with these weights (uniform when
    /// round-robin), by `rng`; the draws are bounded: after 64 × k of them,
    /// the rest are the lowest numbers not taken.
    pub fn draw(&self, k: usize, rng: &mut impl FnMut() -> f64) -> Vec<usize> {
        let k = k.min(self.symbols);
        let mut taken = vec![false; self.symbols];
        let mut out = Vec::with_capacity(k);
        for _ in 0..64 * k {
            if out.len() == k {
                break;
            }
            let u = rng();
            let i = if self.cumulative.is_empty() {
                ((u * self.symbols as f64) as usize).min(self.symbols - 1)
            } else {
                self.pick(0, u)
            };
            if !taken[i] {
                taken[i] = true;
                out.push(i);
            }
        }
        let mut next = 0;
        while out.len() < k {
            if !taken[next] {
                taken[next] = true;
                out.push(next);
            }
            next += 1;
        }
        out
    }
}

/// A running feed: a listener and a thread that serves one server at a
/// time until [`Feed::stop`].
pub struct Feed {
    /// `127.0.0.1:PORT`, for `--tcp-feed`.
    pub addr: String,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

/// The longest the feed stays silent: a blank line then.
pub const HEARTBEAT: Duration = Duration::from_millis(100);

/// How often the listener looks at the stop flag while no server is
/// connected.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

impl Feed {
    /// Listens on a free loopback port and serves `rate` updates/s over
    /// `weights`' symbols to whoever connects.
    pub fn start(weights: Weights, rate: f64) -> std::io::Result<Feed> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::Builder::new().name("bench-feed".into()).spawn(move || {
            while !s.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        // One server at a time; when it goes, wait for the next.
                        let _ = serve(sock, &weights, rate, &s);
                    }
                    Err(_) => std::thread::sleep(ACCEPT_POLL),
                }
            }
        })?;
        Ok(Feed { addr, stop, handle })
    }

    /// Stops the feed (the connection closes) and joins its thread.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.handle.join();
    }
}

/// One quote line of the feed (`feeds/README.md` schema), into `out`.
fn quote_line(out: &mut impl Write, sym: usize, mid_cents: u64, t: u64) -> std::io::Result<()> {
    writeln!(
        out,
        "{{\"type\":\"q\",\"sym\":\"S{sym:04}\",\"t\":{t},\"bp\":{}.{:02},\"bs\":100,\"ap\":{}.{:02},\"as\":200}}",
        mid_cents / 100,
        mid_cents % 100,
        (mid_cents + 1) / 100,
        (mid_cents + 1) % 100
    )
}

/// Writes the preamble, then the schedule, until `stop` or a write fails.
fn serve(sock: TcpStream, w: &Weights, rate: f64, stop: &AtomicBool) -> std::io::Result<()> {
    sock.set_nonblocking(false)?;
    sock.set_nodelay(true)?;
    let mut out = BufWriter::with_capacity(64 * 1024, sock);
    // A small xorshift for the picks and the walk: no crate for this.
    let mut state = now_ns() | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut mid: Vec<u64> = (0..w.symbols).map(|_| 5_000 + next() % 20_000).collect();
    let t0 = now_ns();
    for (i, m) in mid.iter().enumerate() {
        quote_line(&mut out, i, *m, t0)?;
    }
    out.flush()?;
    let (start, start_ns) = (Instant::now(), now_ns());
    let mut emitted: u64 = 0;
    let mut last_write = Instant::now();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
        // Updates 0..=k with k/R <= elapsed are due: floor(elapsed * R) + 1.
        let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
        if emitted == due && last_write.elapsed() >= HEARTBEAT {
            out.write_all(b"\n")?;
            out.flush()?;
            last_write = Instant::now();
        }
        while emitted < due {
            last_write = Instant::now();
            let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
            let i = w.pick(emitted, u);
            mid[i] = (mid[i] + next() % 5).saturating_sub(2).max(100);
            let t = start_ns + (emitted as f64 * 1e9 / rate) as u64;
            quote_line(&mut out, i, mid[i], t)?;
            emitted += 1;
        }
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_weights() {
        let w = Weights::new(5000, Some(1.1));
        let total: f64 = (0..5000).map(|i| w.share(i)).sum();
        assert!((total - 1.0).abs() < 1e-9);
        // Zipf: share(i) / share(j) = ((j+1)/(i+1))^s
        assert!((w.share(0) / w.share(1) - 2f64.powf(1.1)).abs() < 1e-9);
        assert!(w.share(0) > 0.15 && w.share(0) < 0.17, "{}", w.share(0));
        assert_eq!(w.pick(7, 0.0), 0);
        assert_eq!(w.pick(7, 0.999_999_999), 4999);
        let rr = Weights::new(4, None);
        assert_eq!((rr.pick(5, 0.9), rr.share(3)), (1, 0.25));
    }

    #[test]
    fn draws_are_distinct_and_skewed() {
        let w = Weights::new(5000, Some(1.1));
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut rng = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut hits_top = 0;
        for _ in 0..200 {
            let d = w.draw(20, &mut rng);
            let mut s = d.clone();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), 20);
            hits_top += usize::from(d.contains(&0));
        }
        // The top symbol (16% of the feed) is in nearly every watchlist.
        assert!(hits_top > 180, "{hits_top}");
        // More than the symbols there are: all of them.
        assert_eq!(Weights::new(3, None).draw(5, &mut rng).len(), 3);
    }

    #[test]
    fn serves_lines_with_due_times() {
        use std::io::BufRead;
        let feed = Feed::start(Weights::new(3, None), 1000.0).unwrap();
        let sock = TcpStream::connect(&feed.addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let lines: Vec<String> =
            std::io::BufReader::new(sock).lines().take(10).map(|l| l.unwrap()).collect();
        feed.stop();
        let v: Vec<serde_json::Value> =
            lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        // the preamble names every symbol once, then round-robin
        let syms: Vec<&str> = v.iter().map(|q| q["sym"].as_str().unwrap()).collect();
        assert_eq!(syms[..5], ["S0000", "S0001", "S0002", "S0000", "S0001"]);
        let t: Vec<u64> = v[3..].iter().map(|q| q["t"].as_u64().unwrap()).collect();
        assert!(t.windows(2).all(|p| p[1] - p[0] == 1_000_000), "{t:?}");
        assert!(v.iter().all(|q| q["bp"].as_f64() < q["ap"].as_f64()));
    }
}
