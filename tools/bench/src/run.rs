//! One pass of one case on one target: start the server (or use the given
//! URL), run the load through its phases, sample the server's CPU and RSS,
//! check convergence, stop everything, and turn the counts into a
//! [`RunResult`].

use std::path::Path;
use std::time::{Duration, Instant};

use crate::client::{
    self, Latencies, Load, LoadPlan, LoadResult, Stalled, TIMELINE_BUCKET_NS, Window, now_ns,
};
use crate::results::{LatencySet, Percentiles, RunResult, TimePoint};
use crate::scenario::{Assertions, Case, Mode, Protocol, Scenario, Target};
use crate::server::{self, MetricPoller, RssSampler, Server};

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

/// The `subscribe` request of client `i`.
pub fn subscribe_request(case: &Case, peer: bool, symbols: Option<&[String]>) -> String {
    let syms = match symbols {
        None => "[\"*\"]".to_string(),
        Some(s) => serde_json::to_string(s).expect("strings"),
    };
    let hz = case.max_hz.map(|h| format!(",\"max_hz\":{h}")).unwrap_or_default();
    // Peers speak a subset: no `snapshot` field. tickwire: no snapshots, so
    // that a `["*"]` subscription does not start with 2,000 of them.
    let snap = if peer { "" } else { ",\"snapshot\":false" };
    format!(
        "{{\"type\":\"subscribe\",\"symbols\":{syms},\"mode\":\"{}\"{hz}{snap},\"id\":1}}",
        case.mode.as_str()
    )
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
    let fail = |e: String| Outcome {
        result: RunResult {
            run,
            error: Some(e),
            clients: case.clients,
            failed_clients: case.clients,
            ..Default::default()
        },
        latencies: None,
    };
    // 1. the server
    let (server, url, pid) = if let Some(url) = &target.url {
        (None, url.clone(), target.pid)
    } else {
        let argv = target.argv(case);
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
    let subscribes: Vec<String> = match case.subscribe {
        None => vec![subscribe_request(case, target.peer, None); case.clients],
        Some(k) => {
            let names =
                block_on(client::list_symbols(url)).map_err(|e| format!("listing symbols: {e}"))?;
            (0..case.clients)
                .map(|i| {
                    let seed = u64::from(run) << 32 | i as u64;
                    subscribe_request(case, target.peer, Some(&pick(&names, k as usize, seed)))
                })
                .collect()
        }
    };
    let rss_idle = pid.and_then(server::rss_kib);
    let binary = target.protocol == Protocol::Binary;
    // Stalled sessions subscribe like client 0, then never read.
    let mut stalled = (case.stalled_clients > 0).then(|| {
        let n = case.stalled_clients;
        Stalled::start(url.to_string(), binary, target.compression, subscribes[0].clone(), n)
    });
    // 3. connect, then subscribe; warm-up, window
    let plan = LoadPlan {
        url: url.to_string(),
        binary: target.protocol == Protocol::Binary,
        compressed: target.compression,
        subscribes,
        threads: sc.threads.min(case.clients),
    };
    let load = Load::start(plan, sc.duration);
    let connected = load.wait_connected(CONNECT_LIMIT);
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
    load.wait_subscribed(connected, SUBSCRIBE_LIMIT);
    let start_ns = now_ns() + sc.warmup.as_nanos() as u64;
    let w = Window { start_ns, end_ns: start_ns + sc.duration.as_nanos() as u64 };
    load.go(w);
    sleep_until_ns(w.start_ns);
    let pid_s = pid.map(|p| p.to_string());
    let cpu = || (pid_s.as_deref().and_then(server::cpu_seconds), server::cpu_seconds("self"));
    let (srv0, me0) = cpu();
    let rss_start = pid.and_then(server::rss_kib);
    let sampler = pid.map(RssSampler::start);
    sleep_until_ns(w.end_ns);
    let (srv1, me1) = cpu();
    let samples = sampler.map(RssSampler::finish).unwrap_or_default();
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
    let mut r = numbers(case, &lr, secs);
    r.run = run;
    r.connected = connected;
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

/// The counts of a load as rates and ratios.
fn numbers(case: &Case, lr: &LoadResult, secs: f64) -> RunResult {
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
    let ideal = case.ideal_per_s();
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
        source_coverage: per_s(n.cf_sum) / case.source_per_s(),
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
            max_hz: Some(4.0),
            converge: None,
            stalled_clients: 0,
            assert_stalled_closed_within: None,
            assert_p99_ratio_vs: None,
            max_p99_ratio: None,
            max_rss_growth_mb: None,
        };
        let v: serde_json::Value =
            serde_json::from_str(&subscribe_request(&case, false, None)).unwrap();
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
        let peer = subscribe_request(&case, true, Some(&p));
        assert!(!peer.contains("snapshot") && peer.contains(&format!("\"{}\"", p[0])));
    }
}
