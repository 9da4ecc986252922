//! Client processes: a run's sessions split over several processes.
//!
//! A process may hold at most 20,000 descriptors here (a hard limit that
//! root cannot raise), so past that a load needs more than one client
//! process, and a connect storm of 18,000 is closer to real clients when it
//! comes from several. With `client_processes = P` in a case, the harness
//! starts P copies of itself (`tickwire-bench --worker`), each running a
//! [`Load`] over its contiguous share of the sessions, and drives them
//! through the same phases as a load in its own process; [`Clients`] hides
//! which one a run has.
//!
//! The conversation is lines on the worker's stdin and stdout:
//!
//! - parent → worker: first a [`WorkerPlan`] (JSON), then `subscribe`,
//!   `go START END` (the window, wall-clock ns), `targets JSON`, `finish`;
//! - worker → parent: `connected N` once its sessions are connected, then
//!   `subscribed N` and `converged N` whenever they change (polled every
//!   20 ms), and after `finish` one `result JSON` ([`WorkerResult`]: the
//!   counts, every histogram as (value, count) pairs, the sessions' ends).
//!
//! Its stderr is the harness's. A worker that dies or says something else
//! counts all its sessions as failed; every wait is bounded.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::{
    ClientResult, Counts, Latencies, Load, LoadPlan, LoadResult, Targets, ThreadStats, Window,
};
use crate::scenario::Protocol;

/// What one worker runs (the first line on its stdin).
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerPlan {
    url: String,
    protocol: Protocol,
    compressed: bool,
    cseq: bool,
    subscribes: Vec<String>,
    threads: usize,
    source_addresses: u8,
    first: usize,
    window_ns: u64,
    connect_limit_ms: u64,
    finish_limit_ms: u64,
}

/// A histogram as its recorded (value, count) pairs.
type Pairs = Vec<(u64, u64)>;

fn pairs(h: &Histogram<u64>) -> Pairs {
    h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
}

fn unpairs(into: &mut Histogram<u64>, p: &Pairs) {
    for &(v, n) in p {
        into.saturating_record_n(v, n);
    }
}

/// What a worker hands back after `finish`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    n: Counts,
    /// e2e, src_ingest, ingest_send, send_recv.
    lat: [Pairs; 4],
    timeline: Vec<Pairs>,
    clients: Vec<ClientResult>,
    connect_failures: Vec<String>,
}

impl WorkerResult {
    fn of(r: &LoadResult) -> WorkerResult {
        let l = &r.stats.lat;
        WorkerResult {
            n: r.stats.n.clone(),
            lat: [pairs(&l.e2e), pairs(&l.src_ingest), pairs(&l.ingest_send), pairs(&l.send_recv)],
            timeline: r.stats.timeline.buckets.iter().map(pairs).collect(),
            clients: r.clients.clone(),
            connect_failures: r.connect_failures.clone(),
        }
    }

    /// Adds this worker's numbers to `into`.
    fn merge(self, into: &mut LoadResult, window: Duration) {
        let mut st = ThreadStats::new(window);
        st.n = self.n;
        let l = &mut st.lat;
        for (h, p) in [&mut l.e2e, &mut l.src_ingest, &mut l.ingest_send, &mut l.send_recv]
            .into_iter()
            .zip(&self.lat)
        {
            unpairs(h, p);
        }
        for (h, p) in st.timeline.buckets.iter_mut().zip(&self.timeline) {
            unpairs(h, p);
        }
        into.stats.add(&st);
        into.clients.extend(self.clients);
        into.connect_failures.extend(self.connect_failures);
    }
}

/// The `--worker` side: reads its plan and commands on stdin, runs the
/// load, reports on stdout. Returns when the parent says `finish` or goes.
pub fn worker_main() -> Result<(), String> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let first = lines.next().ok_or("worker: no plan")?.map_err(|e| e.to_string())?;
    let wp: WorkerPlan = serde_json::from_str(&first).map_err(|e| format!("worker plan: {e}"))?;
    let window = Duration::from_nanos(wp.window_ns);
    let plan = LoadPlan {
        url: wp.url,
        protocol: wp.protocol,
        compressed: wp.compressed,
        cseq: wp.cseq,
        subscribes: wp.subscribes,
        threads: wp.threads,
        source_addresses: wp.source_addresses,
        first: wp.first,
    };
    let load = Arc::new(Load::start(plan, window));
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    say(format!("connected {}", load.wait_connected(Duration::from_millis(wp.connect_limit_ms))));
    // Progress: subscribed and converged counts, whenever they change.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reporter = {
        let (load, done) = (load.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut sub, mut conv) = (usize::MAX, usize::MAX);
            while !done.load(Ordering::Acquire) {
                let (s, c) = (load.subscribed(), load.converged());
                if s != sub {
                    sub = s;
                    say(format!("subscribed {s}"));
                }
                if c != conv {
                    conv = c;
                    say(format!("converged {c}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    for line in lines {
        let line = line.map_err(|e| e.to_string())?;
        let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match cmd {
            "subscribe" => load.subscribe(),
            "go" => {
                let mut it = arg.split(' ').filter_map(|v| v.parse::<u64>().ok());
                if let (Some(start_ns), Some(end_ns)) = (it.next(), it.next()) {
                    load.go(Window { start_ns, end_ns });
                }
            }
            "targets" => {
                let t: Targets = serde_json::from_str(arg).map_err(|e| format!("targets: {e}"))?;
                load.set_targets(t);
            }
            "finish" => break,
            other => return Err(format!("worker: unknown command {other:?}")),
        }
    }
    done.store(true, Ordering::Release);
    let _ = reporter.join();
    let load = Arc::try_unwrap(load).map_err(|_| "worker: load still shared")?;
    let r = load.finish(Duration::from_millis(wp.finish_limit_ms));
    let json = serde_json::to_string(&WorkerResult::of(&r)).map_err(|e| e.to_string())?;
    say(format!("result {json}"));
    Ok(())
}

/// What the parent knows of one worker, updated by its stdout reader.
#[derive(Default)]
struct Progress {
    /// Sessions connected, once the worker said (usize::MAX before).
    connected: AtomicUsize,
    subscribed: AtomicUsize,
    converged: AtomicUsize,
    result: Mutex<Option<Result<WorkerResult, String>>>,
}

/// One worker process, seen from the parent.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    progress: Arc<Progress>,
    sessions: usize,
}

impl Worker {
    fn start(plan: &WorkerPlan) -> Result<Worker, String> {
        // /proc/self/exe is this very program even when a rebuild has
        // replaced the file since it started (its path then names the new
        // one, or nothing).
        let exe = if std::path::Path::new("/proc/self/exe").exists() {
            std::path::PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe().map_err(|e| format!("worker: {e}"))?
        };
        let mut child = Command::new(exe)
            .arg("--worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting a worker: {e}"))?;
        crate::server::CHILDREN.lock().expect("lock").push(child.id());
        let mut stdin = child.stdin.take().expect("piped");
        let line = serde_json::to_string(plan).expect("serializable");
        writeln!(stdin, "{line}").map_err(|e| format!("worker plan: {e}"))?;
        let progress = Arc::new(Progress::default());
        progress.connected.store(usize::MAX, Ordering::Release);
        let out = child.stdout.take().expect("piped");
        let p = progress.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let (what, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                let n = arg.parse::<usize>().unwrap_or(0);
                match what {
                    "connected" => p.connected.store(n, Ordering::Release),
                    "subscribed" => p.subscribed.store(n, Ordering::Release),
                    "converged" => p.converged.store(n, Ordering::Release),
                    "result" => {
                        let r =
                            serde_json::from_str(arg).map_err(|e| format!("worker result: {e}"));
                        *p.result.lock().expect("lock") = Some(r);
                    }
                    _ => {}
                }
            }
            let mut r = p.result.lock().expect("lock");
            r.get_or_insert(Err("worker ended without a result".into()));
            // A worker that ended before connecting connected nothing.
            let _ =
                p.connected.compare_exchange(usize::MAX, 0, Ordering::AcqRel, Ordering::Acquire);
        });
        Ok(Worker { child, stdin, progress, sessions: plan.subscribes.len() })
    }

    fn tell(&mut self, line: &str) {
        let _ = writeln!(self.stdin, "{line}");
        let _ = self.stdin.flush();
    }
}

/// A run's client sessions: in this process, or spread over workers.
pub enum Clients {
    /// One [`Load`] in the harness's own process.
    Local(Load),
    /// Several worker processes.
    Spread {
        /// The workers, in session order.
        workers: Vec<Worker>,
        /// The window (for merging timelines).
        window: Duration,
    },
}

/// Polls `f` every 10 ms until it is true or `limit` has passed.
fn wait_until(limit: Duration, f: impl Fn() -> bool) {
    let end = Instant::now() + limit;
    while !f() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Clients {
    /// Starts `plan`'s sessions in this process (`processes` = 1) or split
    /// into `processes` contiguous shares, one worker each; every session
    /// connects at once.
    pub fn start(
        plan: LoadPlan,
        processes: usize,
        window: Duration,
        connect_limit: Duration,
        finish_limit: Duration,
    ) -> Result<Clients, String> {
        if processes <= 1 {
            return Ok(Clients::Local(Load::start(plan, window)));
        }
        let per = plan.subscribes.len().div_ceil(processes);
        let mut workers = Vec::new();
        for (k, share) in plan.subscribes.chunks(per).enumerate() {
            let wp = WorkerPlan {
                url: plan.url.clone(),
                protocol: plan.protocol,
                compressed: plan.compressed,
                cseq: plan.cseq,
                subscribes: share.to_vec(),
                threads: plan.threads.min(share.len()).max(1),
                source_addresses: plan.source_addresses,
                first: plan.first + k * per,
                window_ns: window.as_nanos() as u64,
                connect_limit_ms: connect_limit.as_millis() as u64,
                finish_limit_ms: finish_limit.as_millis() as u64,
            };
            workers.push(Worker::start(&wp)?);
        }
        Ok(Clients::Spread { workers, window })
    }

    /// Waits until every session tried to connect (or `limit`); returns
    /// how many did.
    pub fn wait_connected(&self, limit: Duration) -> usize {
        match self {
            Clients::Local(l) => l.wait_connected(limit),
            Clients::Spread { workers, .. } => {
                let known = |w: &Worker| w.progress.connected.load(Ordering::Acquire) != usize::MAX;
                wait_until(limit, || workers.iter().all(known));
                workers
                    .iter()
                    .filter(|w| known(w))
                    .map(|w| w.progress.connected.load(Ordering::Acquire))
                    .sum()
            }
        }
    }

    /// Every session sends its `subscribe`.
    pub fn subscribe(&mut self) {
        match self {
            Clients::Local(l) => l.subscribe(),
            Clients::Spread { workers, .. } => workers.iter_mut().for_each(|w| w.tell("subscribe")),
        }
    }

    /// Sessions with their `subscribed` reply.
    fn subscribed(&self) -> usize {
        match self {
            Clients::Local(l) => l.subscribed(),
            Clients::Spread { workers, .. } => {
                workers.iter().map(|w| w.progress.subscribed.load(Ordering::Acquire)).sum()
            }
        }
    }

    /// Waits until `sessions` have their `subscribed` reply (or `limit`);
    /// returns how many do.
    pub fn wait_subscribed(&self, sessions: usize, limit: Duration) -> usize {
        wait_until(limit, || self.subscribed() >= sessions);
        self.subscribed()
    }

    /// Sets the measured window.
    pub fn go(&mut self, w: Window) {
        match self {
            Clients::Local(l) => l.go(w),
            Clients::Spread { workers, .. } => {
                let line = format!("go {} {}", w.start_ns, w.end_ns);
                workers.iter_mut().for_each(|k| k.tell(&line));
            }
        }
    }

    /// Publishes the convergence targets.
    pub fn set_targets(&mut self, t: Targets) {
        match self {
            Clients::Local(l) => l.set_targets(t),
            Clients::Spread { workers, .. } => {
                let line = format!("targets {}", serde_json::to_string(&t).expect("serializable"));
                workers.iter_mut().for_each(|k| k.tell(&line));
            }
        }
    }

    /// CPU seconds the client processes have used: this one, plus its
    /// workers.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let me = crate::server::cpu_seconds("self")?;
        Some(match self {
            Clients::Local(_) => me,
            Clients::Spread { workers, .. } => {
                me + workers
                    .iter()
                    .filter_map(|w| crate::server::cpu_seconds(&w.child.id().to_string()))
                    .sum::<f64>()
            }
        })
    }

    /// Sessions that have reached every target so far.
    pub fn converged(&self) -> usize {
        match self {
            Clients::Local(l) => l.converged(),
            Clients::Spread { workers, .. } => {
                workers.iter().map(|w| w.progress.converged.load(Ordering::Acquire)).sum()
            }
        }
    }

    /// Stops every session and merges the results; a worker that does not
    /// answer within `limit` counts its sessions as failed.
    pub fn finish(self, limit: Duration) -> LoadResult {
        let (mut workers, window) = match self {
            Clients::Local(l) => return l.finish(limit),
            Clients::Spread { workers, window } => (workers, window),
        };
        workers.iter_mut().for_each(|w| w.tell("finish"));
        let mut out = LoadResult {
            stats: ThreadStats::new(window),
            clients: Vec::new(),
            connect_failures: Vec::new(),
        };
        // The workers' own finish limit, plus time to say so.
        let end = Instant::now() + limit + Duration::from_secs(5);
        for mut w in workers {
            let remaining = end.saturating_duration_since(Instant::now());
            wait_until(remaining, || w.progress.result.lock().expect("lock").is_some());
            let r = w.progress.result.lock().expect("lock").take();
            match r {
                Some(Ok(r)) => r.merge(&mut out, window),
                other => {
                    let why = match other {
                        Some(Err(e)) => e,
                        _ => "worker did not answer in time".into(),
                    };
                    out.connect_failures.extend((0..w.sessions).map(|_| why.clone()));
                }
            }
            let _ = w.child.kill();
            let _ = w.child.wait();
            crate::server::CHILDREN.lock().expect("lock").retain(|p| *p != w.child.id());
        }
        out
    }
}

impl Default for Latencies {
    fn default() -> Latencies {
        Latencies::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Timeline;

    #[test]
    fn histograms_travel_as_pairs() {
        let mut h = Histogram::<u64>::new_with_bounds(1, crate::client::HIST_MAX_NS, 3).unwrap();
        for v in [5, 5, 900, 1_234_567, 42_000_000] {
            h.record(v).unwrap();
        }
        let p = pairs(&h);
        let json = serde_json::to_string(&p).unwrap();
        let back: Pairs = serde_json::from_str(&json).unwrap();
        let mut h2 = Histogram::<u64>::new_with_bounds(1, crate::client::HIST_MAX_NS, 3).unwrap();
        unpairs(&mut h2, &back);
        assert_eq!(h2.len(), 5);
        assert_eq!(h2.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert_eq!(h2.max(), h.max());
    }

    #[test]
    fn results_merge() {
        let window = Duration::from_secs(1);
        let mut a = WorkerResult::default();
        a.n.updates = 3;
        a.lat[0] = vec![(1000, 3)];
        a.timeline = Timeline::new(window).buckets.iter().map(pairs).collect();
        a.timeline[2] = vec![(7, 2)];
        a.clients = vec![ClientResult { updates: 3, ..Default::default() }];
        let json = serde_json::to_string(&a).unwrap();
        let b: WorkerResult = serde_json::from_str(&json).unwrap();
        let mut out = LoadResult {
            stats: ThreadStats::new(window),
            clients: vec![],
            connect_failures: vec!["x".into()],
        };
        b.merge(&mut out, window);
        assert_eq!(out.stats.n.updates, 3);
        assert_eq!(out.stats.lat.e2e.len(), 3);
        assert_eq!(out.stats.timeline.buckets[2].len(), 2);
        assert_eq!((out.clients.len(), out.connect_failures.len()), (1, 1));
    }
}
