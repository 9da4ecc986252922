//! One pass of one case on one target: start the server (or use the given
//! URL), run the load through its phases, sample the server's CPU and RSS,
//! check convergence, stop everything, and turn the counts into a
//! [`RunResult`].

use std::path::Path;
use std::time::{Duration, Instant};

use crate::client::{
    self, Latencies, LoadPlan, LoadResult, Stalled, TIMELINE_BUCKET_NS, Window, now_ns,
};
use crate::feed::{self, Feed, Weights};
use crate::results::{LatencySet, Percentiles, RunResult, TimePoint};
use crate::scenario::{Assertions, Case, Mode, Protocol, Scenario, Target};
use crate::server::{self, MetricPoller, RssSampler, Server};
use crate::workers::Clients;

/// Time every thread gets to stop and hand back its numbers.
const FINISH_LIMIT: Duration = Duration::from_secs(10);
/// Time the sessions get to connect.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);
/// Time the sessions get to have their `subscribed` replies.
const SUBSCRIBE_LIMIT: Duration = Duration::from_secs(15);
/// Time each stalled session gets, after the window, to read up to the
/// server's close.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);
/// The counter that dates the closes of stalled sessions.
const SLOW_DISCONNECTS: &str = "tickwire_slow_disconnects_total";
/// The server's own counts of the connections it ended or refused, read
/// from `/metrics` after the window (a server without them has none): why
/// clients failed, from the server's side.
const SERVER_CLOSES: [&str; 3] =
    [SLOW_DISCONNECTS, "tickwire_dead_peers_total", "tickwire_connections_refused_total"];

/// Upper bound of one run's wall time (for the hard deadline).
pub fn budget(sc: &Scenario, case: &Case) -> Duration {
    let converge = if case.converges() { sc.converge_timeout } else { Duration::ZERO };
    let drain = if case.stalled_clients > 0 {
        DRAIN_LIMIT + Duration::from_secs(3)
    } else {
        Duration::ZERO
    };
    drain
        + Duration::from_secs(15 + 10 + 3)
        + CONNECT_LIMIT
        + SUBSCRIBE_LIMIT
        + sc.warmup
        + sc.duration
        + converge
        + FINISH_LIMIT
}

/// A run's numbers plus its histograms (for `.hgrm` files and charts).
pub struct Outcome {
    /// The numbers.
    pub result: RunResult,
    /// The latency histograms (None when the run failed to start).
    pub latencies: Option<Latencies>,
}

impl Outcome {
    /// A run that could not be measured, and why.
    pub fn failed(case: &Case, run: u32, error: String) -> Outcome {
        Outcome {
            result: RunResult {
                run,
                error: Some(error),
                clients: case.clients,
                failed_clients: case.clients,
                ..Default::default()
            },
            latencies: None,
        }
    }
}

/// A `subscribe` request: `symbols` (None: `["*"]`) in `mode`, with the
/// case's `max_hz` in mode latest.
pub fn subscribe_request(
    case: &Case,
    mode: Mode,
    peer: bool,
    symbols: Option<&[String]>,
) -> String {
    let syms = match symbols {
        None => "[\"*\"]".to_string(),
        Some(s) => serde_json::to_string(s).expect("strings"),
    };
    let hz = case
        .max_hz
        .filter(|_| mode == Mode::Latest)
        .map(|h| format!(",\"max_hz\":{h}"))
        .unwrap_or_default();
    // Peers speak a subset: no `snapshot` field. tickwire: no snapshots, so
    // that a `["*"]` subscription does not start with 2,000 of them.
    let snap = if peer { "" } else { ",\"snapshot\":false" };
    format!(
        "{{\"type\":\"subscribe\",\"symbols\":{syms},\"mode\":\"{}\"{hz}{snap},\"id\":1}}",
        mode.as_str()
    )
}

/// Whether client `i` of `case` subscribes in mode all (the `all_share`
/// clients, spread evenly: client i is one when ⌊(i+1)·share⌋ > ⌊i·share⌋).
pub fn client_mode(case: &Case, i: usize) -> Mode {
    match case.all_share {
        Some(a) if ((i + 1) as f64 * a).floor() > (i as f64 * a).floor() => Mode::All,
        _ => case.mode,
    }
}

/// The subscriptions of a run, and what the rules allow them.
pub struct Plan {
    /// One `subscribe` request per client.
    pub requests: Vec<String>,
    /// Messages/s the clients should get at most: per stream, every update
    /// in mode all, min(updates/s, `max_hz`) in mode latest.
    pub ideal_per_s: f64,
    /// Source updates/s their streams carry.
    pub source_per_s: f64,
    /// Per client: its ideal messages/s and whether it is in mode all
    /// (empty when the market is not known: tickwire's own feed).
    pub clients: Vec<(f64, bool)>,
}

/// Whether the target's feed is the harness's own (`{feed}` in its command).
fn harness_fed(target: &Target) -> bool {
    target.command.iter().any(|a| a.contains("{feed}"))
}

/// The subscriptions of pass `run` of `case` on `target`. With the
/// harness's feed, or on a peer, the market is known (symbols `S0000`..,
/// quotes only, round-robin or Zipf) and the ideal is summed per stream from
/// each symbol's share of the rate; with tickwire's own synthetic feed the
/// names come from `names` (a probe) and the ideal is the case's estimate.
pub fn plan(case: &Case, target: &Target, run: u32, names: Option<&[String]>) -> Plan {
    let known_market = target.peer || harness_fed(target);
    let weights = Weights::new(case.symbols() as usize, case.zipf);
    let rate = case.rate as f64;
    let (mut requests, mut ideal, mut source) = (Vec::new(), 0.0, 0.0);
    let mut clients = Vec::new();
    for i in 0..case.clients {
        let mode = client_mode(case, i);
        let seed = u64::from(run) << 32 | i as u64;
        let (symbols, per_s): (Option<Vec<String>>, Vec<f64>) = match (case.subscribe, names) {
            (None, _) => {
                (None, (0..case.symbols() as usize).map(|j| rate * weights.share(j)).collect())
            }
            (Some(k), Some(all)) if !known_market => {
                (Some(pick(all, k as usize, seed)), Vec::new())
            }
            (Some(k), _) => {
                let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
                let mut unit = || (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
                let drawn = weights.draw(k as usize, &mut unit);
                let per_s = drawn.iter().map(|&j| rate * weights.share(j)).collect();
                (Some(drawn.into_iter().map(feed::symbol).collect()), per_s)
            }
        };
        requests.push(subscribe_request(case, mode, target.peer, symbols.as_deref()));
        if !known_market {
            continue;
        }
        let hz = case.max_hz.filter(|_| mode == Mode::Latest && target.conflates());
        let mine = per_s.iter().map(|r| hz.map_or(*r, |h| r.min(h))).sum::<f64>();
        ideal += mine;
        source += per_s.iter().sum::<f64>();
        clients.push((mine, mode == Mode::All));
    }
    if !known_market {
        (ideal, source) = (case.ideal_per_s(), case.source_per_s());
    }
    Plan { requests, ideal_per_s: ideal, source_per_s: source, clients }
}

/// Delivered / ideal of the clients in mode latest and of those in mode
/// all, from each client's own count and ideal (None for a class with no
/// client, or when the plan has no per-client ideal).
fn by_mode(plan: &[(f64, bool)], clients: &[client::ClientResult], secs: f64) -> [Option<f64>; 2] {
    [false, true].map(|all| {
        let (mut got, mut ideal) = (0.0, 0.0);
        for c in clients {
            if let Some(&(i, _)) = plan.get(c.index).filter(|p| p.1 == all) {
                got += c.updates as f64 / secs;
                ideal += i;
            }
        }
        (ideal > 0.0).then(|| got / ideal)
    })
}

/// A small seeded generator (xorshift64*) for the random subscriptions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// `k` distinct names of `all`, chosen by `seed`.
pub fn pick(all: &[String], k: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut v: Vec<&String> = all.iter().collect();
    let k = k.min(v.len());
    for i in 0..k {
        let j = i + (rng.next() % (v.len() - i) as u64) as usize;
        v.swap(i, j);
    }
    v[..k].iter().map(|s| s.to_string()).collect()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

fn with_stamps(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}stamps=1&time_unit=ns")
}

fn sleep_until_ns(t: u64) {
    let now = now_ns();
    if t > now {
        std::thread::sleep(Duration::from_nanos(t - now));
    }
}

/// Runs pass `run` of `case` on `target`; server logs go to `logs`.
pub fn run_once(sc: &Scenario, target: &Target, case: &Case, run: u32, logs: &Path) -> Outcome {
    // The harness's feed, for a target that takes it.
    let feed = if harness_fed(target) {
        match Feed::start(Weights::new(case.symbols() as usize, case.zipf), case.rate as f64) {
            Ok(f) => Some(f),
            Err(e) => return Outcome::failed(case, run, format!("feed: {e}")),
        }
    } else {
        None
    };
    let out = run_with_feed(sc, target, case, run, logs, feed.as_ref().map(|f| f.addr.as_str()));
    if let Some(f) = feed {
        f.stop();
    }
    out
}

fn run_with_feed(
    sc: &Scenario,
    target: &Target,
    case: &Case,
    run: u32,
    logs: &Path,
    feed: Option<&str>,
) -> Outcome {
    let fail = |e: String| Outcome::failed(case, run, e);
    // 1. the server
    let (server, url, pid) = if let Some(url) = &target.url {
        (None, url.clone(), target.pid)
    } else {
        let mut argv = target.argv(case);
        if let Some(addr) = feed {
            argv.iter_mut().for_each(|a| *a = a.replace("{feed}", addr));
        }
        if argv[0].contains('/') && !Path::new(&argv[0]).exists() {
            return fail(format!(
                "{} not found (build it first, e.g. cargo build --release)",
                argv[0]
            ));
        }
        let log = logs.join(format!("{}__{}__run{run}.log", target.name, case.name));
        match Server::start(&argv, &log) {
            Ok(s) => {
                let (u, p) = (s.url.clone(), s.pid);
                (Some(s), u, Some(p))
            }
            Err(e) => return fail(e),
        }
    };
    let url = with_stamps(&url);
    let out = measure(sc, target, case, run, &url, pid);
    if let Some(s) = server {
        s.stop();
    }
    match out {
        Ok(o) => o,
        Err(e) => fail(e),
    }
}

fn measure(
    sc: &Scenario,
    target: &Target,
    case: &Case,
    run: u32,
    url: &str,
    pid: Option<u32>,
) -> Result<Outcome, String> {
    // 2. the subscriptions
    let names = if case.subscribe.is_some() && !target.peer && !harness_fed(target) {
        Some(block_on(client::list_symbols(url)).map_err(|e| format!("listing symbols: {e}"))?)
    } else {
        None
    };
    let plan = plan(case, target, run, names.as_deref());
    let subscribes = plan.requests.clone();
    let rss_idle = pid.and_then(server::rss_kib);
    let binary = target.protocol == Protocol::Binary;
    // Stalled sessions subscribe like client 0, then never read.
    let mut stalled = (case.stalled_clients > 0).then(|| {
        let n = case.stalled_clients;
        Stalled::start(url.to_string(), binary, target.compression, subscribes[0].clone(), n)
    });
    // 3. connect, then subscribe; warm-up, window
    let load_plan = LoadPlan {
        url: url.to_string(),
        protocol: target.protocol,
        cseq: target.cseq,
        compressed: target.compression,
        subscribes,
        threads: sc.threads.min(case.clients),
        source_addresses: case.source_addresses.unwrap_or(1),
        first: 0,
    };
    // All sessions connect at once (a connect storm); how long until every
    // one has its welcome, and later its `subscribed` reply.
    let storm = Instant::now();
    let processes = case.client_processes.unwrap_or(1);
    let mut load = Clients::start(load_plan, processes, sc.duration, CONNECT_LIMIT, FINISH_LIMIT)?;
    let connected = load.wait_connected(CONNECT_LIMIT);
    let connect_s = storm.elapsed().as_secs_f64();
    if let Some(s) = &stalled {
        s.wait_connected(CONNECT_LIMIT)?;
    }
    let rss_subscribe = pid.and_then(server::rss_kib);
    // The close times of stalled sessions: the server's counter of
    // slow-client closes, when it has one (tickwire's /metrics).
    let metrics = stalled.as_ref().and_then(|_| server::metrics_addr(url));
    let base = metrics.as_deref().and_then(|m| server::read_metric(m, SLOW_DISCONNECTS));
    let t0 = Instant::now();
    let poller =
        metrics.filter(|_| base.is_some()).map(|m| MetricPoller::start(m, SLOW_DISCONNECTS, t0));
    load.subscribe();
    if let Some(s) = &mut stalled {
        s.go(t0);
    }
    // The warm-up starts once every session has its `subscribed` reply: a
    // thousand sessions' replies and snapshots can take longer than the
    // warm-up itself, and would otherwise be measured as latency.
    let subscribed = load.wait_subscribed(connected, SUBSCRIBE_LIMIT);
    let subscribe_s = t0.elapsed().as_secs_f64();
    let start_ns = now_ns() + sc.warmup.as_nanos() as u64;
    let w = Window { start_ns, end_ns: start_ns + sc.duration.as_nanos() as u64 };
    load.go(w);
    sleep_until_ns(w.start_ns);
    let pid_s = pid.map(|p| p.to_string());
    let cpu = || (pid_s.as_deref().and_then(server::cpu_seconds), load.cpu_seconds());
    let (srv0, me0) = cpu();
    let rss_start = pid.and_then(server::rss_kib);
    let sampler = pid.map(RssSampler::start);
    sleep_until_ns(w.end_ns);
    let (srv1, me1) = cpu();
    let samples = sampler.map(RssSampler::finish).unwrap_or_default();
    // One page, with time to answer: a server busy with 18,000 sockets may
    // take more than the poller's 500 ms.
    let page = server::metrics_addr(url)
        .and_then(|m| server::metrics_page(&m, Duration::from_secs(3)))
        .unwrap_or_default();
    let closes: Vec<(String, f64)> = SERVER_CLOSES
        .iter()
        .filter_map(|name| Some((name.to_string(), server::metric_value(&page, name)?)))
        .collect();
    let stalled = stalled.map(|s| s.drain(DRAIN_LIMIT));
    let polled = poller.map(MetricPoller::finish);
    // 4. convergence
    let (mut converged, mut converge_s) = (None, None);
    if case.converges() {
        let t0 = Instant::now();
        match block_on(client::probe(url, None)) {
            Ok(targets) => {
                load.set_targets(targets);
                while load.converged() < connected && t0.elapsed() < sc.converge_timeout {
                    std::thread::sleep(Duration::from_millis(20));
                }
                converged = Some(load.converged());
                converge_s = Some(t0.elapsed().as_secs_f64());
            }
            Err(e) => eprintln!("tickwire-bench: convergence probe failed: {e}"),
        }
    }
    let lr = load.finish(FINISH_LIMIT);
    let secs = sc.duration.as_secs_f64();
    let cores = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / secs);
    let mut r = numbers(case, &lr, secs, plan.ideal_per_s, plan.source_per_s);
    r.run = run;
    r.connected = connected;
    r.subscribed = subscribed;
    r.connect_s = Some(connect_s);
    r.subscribe_s = Some(subscribe_s);
    r.server_closes = closes;
    if case.all_share.is_some() {
        [r.delivered_ratio_latest, r.delivered_ratio_all] =
            by_mode(&plan.clients, &lr.clients, secs);
    }
    r.server_cpu_cores = cores(srv0, srv1);
    r.client_cpu_cores = cores(me0, me1);
    r.server_cpu_us_per_msg = r
        .server_cpu_cores
        .filter(|_| lr.stats.n.updates > 0)
        .map(|c| c * secs * 1e6 / lr.stats.n.updates as f64);
    let mb = |kib: u64| kib as f64 / 1024.0;
    r.rss_idle_mb = rss_idle.map(mb);
    r.rss_start_mb = rss_start.map(mb);
    r.rss_max_mb = samples.iter().map(|s| s.1).max().map(mb);
    r.rss_end_mb = samples.last().map(|s| mb(s.1));
    r.rss_samples = samples.iter().map(|&(t, kib)| (t, mb(kib))).collect();
    r.rss_subscribe_mb = rss_subscribe.map(mb);
    r.rss_window_growth_mb = r.rss_max_mb.zip(r.rss_start_mb).map(|(m, s)| m - s);
    if let Some(st) = stalled {
        r.stalled_clients = case.stalled_clients;
        r.stalled_closed = st.iter().filter(|s| s.closed).count();
        r.stalled_how =
            st.iter().map(|s| format!("{} ({} bytes drained)", s.how, s.drained_bytes)).collect();
        if let (Some(base), Some(polled)) = (base, polled) {
            r.stalled_closed_after_s = server::rise_times(&polled, base, case.stalled_clients);
            r.stalled_close_source = Some("metrics".into());
        } else {
            let mut t: Vec<f64> = st.iter().filter_map(|s| s.drained_after_s).collect();
            t.sort_by(f64::total_cmp);
            r.stalled_closed_after_s = t;
            r.stalled_close_source = Some("drain".into());
        }
    }
    r.converged = converged;
    r.converge_s = converge_s;
    Ok(Outcome { result: r, latencies: Some(lr.stats.lat) })
}

/// The counts of a load as rates and ratios; `ideal` and `source` per
/// second from the [`Plan`].
fn numbers(case: &Case, lr: &LoadResult, secs: f64, ideal: f64, source: f64) -> RunResult {
    let n = &lr.stats.n;
    let per_s = |v: u64| v as f64 / secs;
    let mut failures: Vec<String> = lr.connect_failures.clone();
    failures.extend(lr.clients.iter().filter_map(|c| c.error.clone()));
    failures.extend(lr.clients.iter().filter_map(|c| {
        let (n, example) = c.behind.as_ref()?;
        Some(format!("not converged: {n} streams behind, e.g. {example}"))
    }));
    let missing = case.clients.saturating_sub(lr.connect_failures.len() + lr.clients.len());
    if missing > 0 {
        failures.push(format!("{missing} sessions did not finish in time"));
    }
    let failed = lr.connect_failures.len()
        + lr.clients.iter().filter(|c| c.error.is_some()).count()
        + missing;
    failures.truncate(5);
    let delivered = per_s(n.updates);
    let lat = &lr.stats.lat;
    RunResult {
        clients: case.clients,
        failed_clients: failed,
        failures,
        window_s: secs,
        ideal_per_s: ideal,
        delivered_per_s: delivered,
        delivered_ratio: if ideal > 0.0 { delivered / ideal } else { 0.0 },
        source_coverage: if source > 0.0 { per_s(n.cf_sum) / source } else { 0.0 },
        client_min_per_s: per_s(lr.clients.iter().map(|c| c.updates).min().unwrap_or(0)),
        client_max_per_s: per_s(lr.clients.iter().map(|c| c.updates).max().unwrap_or(0)),
        frames_per_s: per_s(n.frames),
        bytes_per_s: per_s(n.bytes),
        msgs_per_frame: if n.frames == 0 { 0.0 } else { n.msgs as f64 / n.frames as f64 },
        cseq_gaps: n.cseq_gaps,
        seq_gaps: n.seq_gaps,
        overflows: n.overflows,
        overflow_lost: n.overflow_lost,
        conflation_ratio: if n.updates == 0 { 0.0 } else { n.cf_sum as f64 / n.updates as f64 },
        slow_msgs: n.slow,
        malformed: n.malformed,
        stamps_ahead: n.stamps_ahead,
        latency: LatencySet {
            e2e: Percentiles::of(&lat.e2e),
            src_to_ingest: Percentiles::of(&lat.src_ingest),
            ingest_to_send: Percentiles::of(&lat.ingest_send),
            send_to_recv: Percentiles::of(&lat.send_recv),
        },
        timeline: lr
            .stats
            .timeline
            .buckets
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let ms = |us: u64| us as f64 / 1000.0;
                let q = |p: f64| if h.is_empty() { 0.0 } else { ms(h.value_at_quantile(p)) };
                TimePoint {
                    t: (i as u64 * TIMELINE_BUCKET_NS) as f64 / 1e9,
                    count: h.len(),
                    p50: q(0.5),
                    p99: q(0.99),
                    max: if h.is_empty() { 0.0 } else { ms(h.max()) },
                }
            })
            .collect(),
        ..Default::default()
    }
}

/// The sanity checks of the scenario, on one run; one line per failure.
pub fn check(sc: &Scenario, case: &Case, r: &RunResult) -> Vec<String> {
    // The case's own assertions (stalled clients, RSS) apply without an
    // [assert] table too.
    let case_checks = case.stalled_close_limit().is_some() || case.max_rss_growth_mb.is_some();
    if sc.assert.is_none() && !case_checks {
        return Vec::new();
    }
    let off = Assertions {
        min_delivered_ratio: 0.0,
        no_seq_gaps: false,
        no_cseq_gaps: false,
        no_failed_clients: false,
    };
    let a = sc.assert.as_ref().unwrap_or(&off);
    let mut out = Vec::new();
    if let Some(e) = &r.error {
        out.push(format!("run {}: {e}", r.run));
        return out;
    }
    let (what, ratio) = match case.mode {
        Mode::All => ("delivered", r.delivered_ratio),
        Mode::Latest => ("source coverage", r.source_coverage),
    };
    if ratio < a.min_delivered_ratio {
        out.push(format!(
            "run {}: {what} {:.1}% of ideal, below {:.0}%",
            r.run,
            ratio * 100.0,
            a.min_delivered_ratio * 100.0
        ));
    }
    if a.no_seq_gaps && r.seq_gaps > 0 {
        out.push(format!("run {}: {} seq gaps without overflow", r.run, r.seq_gaps));
    }
    if a.no_cseq_gaps && r.cseq_gaps > 0 {
        out.push(format!("run {}: {} cseq gaps", r.run, r.cseq_gaps));
    }
    if a.no_failed_clients && r.failed_clients > 0 {
        out.push(format!(
            "run {}: {} failed clients ({:?})",
            r.run,
            r.failed_clients,
            r.failures.first()
        ));
    }
    if let Some(limit) = case.stalled_close_limit() {
        let n = r.stalled_clients;
        let late = r.stalled_closed_after_s.iter().filter(|t| **t > limit.as_secs_f64()).count();
        let undated = n.saturating_sub(r.stalled_closed_after_s.len());
        if r.stalled_closed < n || late > 0 || undated > 0 {
            out.push(format!(
                "run {}: stalled clients: {} of {n} closed by the server, closed after {:?} s \
                 ({}), limit {:.1} s; {:?}",
                r.run,
                r.stalled_closed,
                r.stalled_closed_after_s,
                r.stalled_close_source.as_deref().unwrap_or("?"),
                limit.as_secs_f64(),
                r.stalled_how
            ));
        }
    }
    if let Some(max) = case.max_rss_growth_mb {
        match r.rss_window_growth_mb {
            Some(g) if g < max => {}
            Some(g) => out.push(format!(
                "run {}: server RSS grew by {g:.1} MiB (largest sample of the window − its \
                 start), limit {max} MiB",
                r.run
            )),
            None => out.push(format!("run {}: no server RSS for max_rss_growth_mb", r.run)),
        }
    }
    if let Some(c) = r.converged
        && c < r.connected
    {
        let example = r.failures.iter().find(|f| f.starts_with("not converged")).cloned();
        out.push(format!(
            "run {}: {} of {} clients did not converge ({})",
            r.run,
            r.connected - c,
            r.connected,
            example.unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions() {
        let case = Case {
            name: "c".into(),
            clients: 1,
            rate: 1,
            mode: Mode::Latest,
            symbols: Some(3),
            subscribe: None,
            zipf: None,
            all_share: None,
            peers_send_all: false,
            source_addresses: None,
            client_processes: None,
            max_hz: Some(4.0),
            converge: None,
            stalled_clients: 0,
            assert_stalled_closed_within: None,
            assert_p99_ratio_vs: None,
            max_p99_ratio: None,
            max_rss_growth_mb: None,
        };
        let v: serde_json::Value =
            serde_json::from_str(&subscribe_request(&case, Mode::Latest, false, None)).unwrap();
        assert_eq!(v["symbols"][0], "*");
        assert_eq!(v["mode"], "latest");
        assert_eq!(v["max_hz"], 4.0);
        assert_eq!(v["snapshot"], false);
        assert_eq!(v["id"], 1);
        let names: Vec<String> = ["A", "B", "C", "D"].map(String::from).to_vec();
        let p = pick(&names, 2, 7);
        assert_eq!(p.len(), 2);
        assert_ne!(p[0], p[1]);
        assert_eq!(p, pick(&names, 2, 7));
        let peer = subscribe_request(&case, Mode::All, true, Some(&p));
        assert!(!peer.contains("snapshot") && peer.contains(&format!("\"{}\"", p[0])));
        // mode all: no max_hz
        assert!(!peer.contains("max_hz") && peer.contains("\"mode\":\"all\""));
    }

    #[test]
    fn watchlist_plan() {
        let text = r#"
            name = "w"
            [[targets]]
            name = "tw"
            command = ["tickwire", "--tcp-feed", "{feed}"]
            [[targets]]
            name = "peer"
            command = ["peer"]
            modes = ["all"]
            peer = true
            [[cases]]
            name = "w"
            clients = 100
            rate = 50000
            symbols = 5000
            subscribe = 20
            zipf = 1.1
            mode = "latest"
            max_hz = 10
            all_share = 0.1
            peers_send_all = true
        "#;
        let sc = crate::scenario::Scenario::parse(text).unwrap();
        let case = &sc.cases[0];
        // every tenth client in mode all, spread evenly
        let all: Vec<usize> = (0..100).filter(|&i| client_mode(case, i) == Mode::All).collect();
        assert_eq!(all.len(), 10);
        assert_eq!(all[..3], [9, 19, 29]);
        let tw = plan(case, &sc.targets[0], 1, None);
        let peer = plan(case, &sc.targets[1], 1, None);
        assert_eq!(tw.requests.len(), 100);
        assert_eq!(
            tw.requests,
            peer.requests
                .iter()
                .map(|r| r.replace(",\"id\"", ",\"snapshot\":false,\"id\""))
                .collect::<Vec<_>>()
        );
        let v: serde_json::Value = serde_json::from_str(&tw.requests[0]).unwrap();
        assert_eq!((v["mode"].as_str(), v["max_hz"].as_f64()), (Some("latest"), Some(10.0)));
        assert_eq!(v["symbols"].as_array().unwrap().len(), 20);
        // The same streams, so the same source; the peer sends every
        // update, so its ideal is all of it, and tickwire's much less.
        assert!((tw.source_per_s - peer.source_per_s).abs() < 1e-6);
        assert!((peer.ideal_per_s - peer.source_per_s).abs() < 1e-6);
        assert!(tw.ideal_per_s < 0.5 * peer.ideal_per_s);
        // 90 latest clients: at most 10 per stream per second, 18,000/s in
        // all; the 10 others about a tenth of the source (their own draws)
        assert!(tw.ideal_per_s <= 90.0 * 20.0 * 10.0 + 0.2 * peer.source_per_s);
        assert!(tw.ideal_per_s >= 0.05 * peer.source_per_s);
    }
}
