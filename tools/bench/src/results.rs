//! The numbers of a run, as written to the JSON result file and read back
//! by `--compare`; medians over runs; the `.hgrm` percentile distribution.
//!
//! Latencies are in milliseconds here (f64); the histograms behind them are
//! in nanoseconds.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::server::MachineInfo;

/// Percentiles of one latency, ms.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// 50th percentile.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// 99.99th.
    pub p9999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// From a histogram in ns.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |v: u64| v as f64 / 1e6;
        Percentiles {
            count: h.len(),
            mean: h.mean() / 1e6,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            p9999: ms(h.value_at_quantile(0.9999)),
            max: ms(h.max()),
        }
    }

    /// The named columns of reports.
    pub fn columns(&self) -> [(&'static str, f64); 6] {
        [
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p99.9", self.p999),
            ("p99.99", self.p9999),
            ("max", self.max),
        ]
    }
}

/// The four latencies of a run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencySet {
    /// Receive − `t` (end to end, from when the tick was due).
    pub e2e: Percentiles,
    /// `ti − t`.
    pub src_to_ingest: Percentiles,
    /// `to − ti`.
    pub ingest_to_send: Percentiles,
    /// Receive − `to`.
    pub send_to_recv: Percentiles,
}

impl LatencySet {
    /// The four, named as in reports.
    pub fn named(&self) -> [(&'static str, &Percentiles); 4] {
        [
            ("e2e", &self.e2e),
            ("src_to_ingest", &self.src_to_ingest),
            ("ingest_to_send", &self.ingest_to_send),
            ("send_to_recv", &self.send_to_recv),
        ]
    }
}

/// One latency-over-time point (per 100 ms of the window), ms.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct TimePoint {
    /// Seconds since the window started (bucket start).
    pub t: f64,
    /// Updates received in the bucket.
    pub count: u64,
    /// Median end-to-end latency.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// One pass of one case on one target.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// Pass number, from 1.
    pub run: u32,
    /// Why the run could not be measured at all (server did not start...).
    pub error: Option<String>,
    /// Sessions asked for.
    pub clients: usize,
    /// Sessions that connected.
    pub connected: usize,
    /// The server's counters of connections it closed or refused (tickwire:
    /// slow clients, dead peers, refused), read after the window.
    #[serde(default)]
    pub server_closes: Vec<(String, f64)>,
    /// Sessions that had their `subscribed` reply in time.
    #[serde(default)]
    pub subscribed: usize,
    /// Seconds from the start of the connect storm (every session
    /// connecting at once) until every session had its welcome.
    #[serde(default)]
    pub connect_s: Option<f64>,
    /// Seconds from the subscriptions going out until every session had its
    /// `subscribed` reply.
    #[serde(default)]
    pub subscribe_s: Option<f64>,
    /// Sessions that did not connect, or failed, or did not finish.
    pub failed_clients: usize,
    /// The first few failure reasons.
    pub failures: Vec<String>,
    /// Measured window, s.
    pub window_s: f64,
    /// Ideal delivered messages/s (see `Case::ideal_per_s`).
    pub ideal_per_s: f64,
    /// `q`/`t` messages received per second, all clients.
    pub delivered_per_s: f64,
    /// delivered / ideal.
    pub delivered_ratio: f64,
    /// With `all_share`: delivered / ideal of the clients in the case's
    /// mode (latest) alone.
    #[serde(default)]
    pub delivered_ratio_latest: Option<f64>,
    /// With `all_share`: delivered / ideal of the clients in mode all.
    #[serde(default)]
    pub delivered_ratio_all: Option<f64>,
    /// (sum of `cf`) / (C × R × share): source updates delivered or
    /// conflated; below 1 means updates were lost (or the client is behind).
    pub source_coverage: f64,
    /// Slowest client's delivered/s.
    pub client_min_per_s: f64,
    /// Fastest client's delivered/s.
    pub client_max_per_s: f64,
    /// Frames/s.
    pub frames_per_s: f64,
    /// Payload bytes/s.
    pub bytes_per_s: f64,
    /// Messages per frame.
    pub msgs_per_frame: f64,
    /// `cseq` discontinuities (transport loss; whole session).
    pub cseq_gaps: u64,
    /// `seq` jumps without `overflow` (a server bug; whole session).
    pub seq_gaps: u64,
    /// `overflow` messages.
    pub overflows: u64,
    /// Updates reported lost by them.
    pub overflow_lost: u64,
    /// Sum of `cf` / messages (1 = no conflation).
    pub conflation_ratio: f64,
    /// `slow` notices.
    pub slow_msgs: u64,
    /// Unreadable frames/messages.
    pub malformed: u64,
    /// Updates stamped `to` more than 50 µs after their receipt: the
    /// server's clock runs ahead of the harness's.
    #[serde(default)]
    pub stamps_ahead: u64,
    /// Server CPU over the window, cores (1.0 = one core busy).
    pub server_cpu_cores: Option<f64>,
    /// Server CPU per delivered message, µs.
    pub server_cpu_us_per_msg: Option<f64>,
    /// Harness CPU over the window, cores.
    pub client_cpu_cores: Option<f64>,
    /// Server RSS before clients connected, MiB.
    pub rss_idle_mb: Option<f64>,
    /// At the window's start.
    pub rss_start_mb: Option<f64>,
    /// Largest sample (every 250 ms) in the window.
    pub rss_max_mb: Option<f64>,
    /// At the window's end.
    pub rss_end_mb: Option<f64>,
    /// Every RSS sample of the window: (seconds into the window, MiB).
    #[serde(default)]
    pub rss_samples: Vec<(f64, f64)>,
    /// Just before the subscriptions were sent, MiB.
    #[serde(default)]
    pub rss_subscribe_mb: Option<f64>,
    /// Largest sample of the window − `rss_start_mb`, MiB.
    #[serde(default)]
    pub rss_window_growth_mb: Option<f64>,
    /// Stalled sessions asked for (`stalled_clients`).
    #[serde(default)]
    pub stalled_clients: usize,
    /// Stalled sessions the server had closed when they were drained.
    #[serde(default)]
    pub stalled_closed: usize,
    /// When the server closed them, seconds after the subscriptions, one
    /// per closed session, earliest first (see `stalled_close_source`).
    #[serde(default)]
    pub stalled_closed_after_s: Vec<f64>,
    /// `metrics`: the server's `tickwire_slow_disconnects_total`, polled
    /// every 100 ms; `drain`: the end of each session's drain after the
    /// window (an upper bound: no metrics).
    #[serde(default)]
    pub stalled_close_source: Option<String>,
    /// How each stalled session's drain ended.
    #[serde(default)]
    pub stalled_how: Vec<String>,
    /// Clients that reached every server position (mode latest), if checked.
    pub converged: Option<usize>,
    /// Seconds from the probe until the last client converged.
    pub converge_s: Option<f64>,
    /// Latencies.
    pub latency: LatencySet,
    /// End-to-end latency per 100 ms.
    pub timeline: Vec<TimePoint>,
}

/// Medians over the runs of a case (the numbers reports and `--compare`
/// use); counts of errors are the worst run's, not the median.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Runs that produced numbers.
    pub runs: usize,
    /// Ideal messages/s.
    pub ideal_per_s: f64,
    /// Median delivered messages/s.
    pub delivered_per_s: f64,
    /// Median delivered / ideal.
    pub delivered_ratio: f64,
    /// Median delivered / ideal of the latest-mode clients (`all_share`).
    #[serde(default)]
    pub delivered_ratio_latest: Option<f64>,
    /// Median delivered / ideal of the all-mode clients (`all_share`).
    #[serde(default)]
    pub delivered_ratio_all: Option<f64>,
    /// Median source coverage.
    pub source_coverage: f64,
    /// Median frames/s.
    pub frames_per_s: f64,
    /// Median bytes/s.
    pub bytes_per_s: f64,
    /// Median conflation ratio.
    pub conflation_ratio: f64,
    /// Median latencies (each percentile's median over runs).
    pub latency: LatencySet,
    /// Median server CPU per message, µs.
    pub server_cpu_us_per_msg: Option<f64>,
    /// Median server CPU, cores.
    pub server_cpu_cores: Option<f64>,
    /// Median harness CPU, cores.
    pub client_cpu_cores: Option<f64>,
    /// Median of the runs' RSS maxima, MiB.
    pub rss_max_mb: Option<f64>,
    /// Median RSS growth over the window (end − start), MiB.
    pub rss_growth_mb: Option<f64>,
    /// Median RSS growth in the window (largest sample − start), MiB.
    #[serde(default)]
    pub rss_window_growth_mb: Option<f64>,
    /// Median server RSS per connection: (largest sample − RSS before the
    /// clients connected) / connections, KiB.
    #[serde(default)]
    pub rss_per_conn_kb: Option<f64>,
    /// Median connect-storm time: every session connected, s.
    #[serde(default)]
    pub connect_s: Option<f64>,
    /// Median connections accepted per second in the storm.
    #[serde(default)]
    pub connect_per_s: Option<f64>,
    /// Median time until every session was subscribed, s.
    #[serde(default)]
    pub subscribe_s: Option<f64>,
    /// Worst run: updates stamped after their receipt (clock ahead).
    #[serde(default)]
    pub stamps_ahead: u64,
    /// Median over runs of the last stalled session's close time, s.
    #[serde(default)]
    pub stalled_closed_after_s: Option<f64>,
    /// Worst run: stalled sessions not closed by the server.
    #[serde(default)]
    pub stalled_not_closed: usize,
    /// Worst run: failed clients.
    pub failed_clients: usize,
    /// Worst run: `cseq` gaps.
    pub cseq_gaps: u64,
    /// Worst run: `seq` gaps without overflow.
    pub seq_gaps: u64,
    /// Median updates lost to overflow.
    pub overflow_lost: u64,
    /// Worst run: clients that did not converge (when checked).
    pub not_converged: Option<usize>,
}

/// Median of some values (mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

impl Summary {
    /// Medians over the runs that produced numbers.
    pub fn of(runs: &[RunResult]) -> Summary {
        let ok: Vec<&RunResult> = runs.iter().filter(|r| r.error.is_none()).collect();
        let med = |f: &dyn Fn(&RunResult) -> f64| {
            median(ok.iter().map(|r| f(r)).collect()).unwrap_or(0.0)
        };
        let med_opt = |f: &dyn Fn(&RunResult) -> Option<f64>| {
            median(ok.iter().filter_map(|r| f(r)).collect())
        };
        let pct = |f: &dyn Fn(&LatencySet) -> &Percentiles| Percentiles {
            count: med(&|r| f(&r.latency).count as f64) as u64,
            mean: med(&|r| f(&r.latency).mean),
            p50: med(&|r| f(&r.latency).p50),
            p90: med(&|r| f(&r.latency).p90),
            p99: med(&|r| f(&r.latency).p99),
            p999: med(&|r| f(&r.latency).p999),
            p9999: med(&|r| f(&r.latency).p9999),
            max: med(&|r| f(&r.latency).max),
        };
        Summary {
            runs: ok.len(),
            ideal_per_s: med(&|r| r.ideal_per_s),
            delivered_per_s: med(&|r| r.delivered_per_s),
            delivered_ratio: med(&|r| r.delivered_ratio),
            delivered_ratio_latest: med_opt(&|r| r.delivered_ratio_latest),
            delivered_ratio_all: med_opt(&|r| r.delivered_ratio_all),
            source_coverage: med(&|r| r.source_coverage),
            frames_per_s: med(&|r| r.frames_per_s),
            bytes_per_s: med(&|r| r.bytes_per_s),
            conflation_ratio: med(&|r| r.conflation_ratio),
            latency: LatencySet {
                e2e: pct(&|l| &l.e2e),
                src_to_ingest: pct(&|l| &l.src_to_ingest),
                ingest_to_send: pct(&|l| &l.ingest_to_send),
                send_to_recv: pct(&|l| &l.send_to_recv),
            },
            server_cpu_us_per_msg: med_opt(&|r| r.server_cpu_us_per_msg),
            server_cpu_cores: med_opt(&|r| r.server_cpu_cores),
            client_cpu_cores: med_opt(&|r| r.client_cpu_cores),
            rss_max_mb: med_opt(&|r| r.rss_max_mb),
            rss_growth_mb: med_opt(&|r| Some(r.rss_end_mb? - r.rss_start_mb?)),
            rss_window_growth_mb: med_opt(&|r| r.rss_window_growth_mb),
            rss_per_conn_kb: med_opt(&|r| {
                Some((r.rss_max_mb? - r.rss_idle_mb?) * 1024.0 / r.connected.max(1) as f64)
            }),
            connect_s: med_opt(&|r| r.connect_s),
            connect_per_s: med_opt(&|r| Some(r.connected as f64 / r.connect_s?)),
            subscribe_s: med_opt(&|r| r.subscribe_s),
            stamps_ahead: runs.iter().map(|r| r.stamps_ahead).max().unwrap_or(0),
            stalled_closed_after_s: med_opt(&|r| {
                r.stalled_closed_after_s.last().copied().filter(|_| r.stalled_clients > 0)
            }),
            stalled_not_closed: runs
                .iter()
                .map(|r| r.stalled_clients.saturating_sub(r.stalled_closed))
                .max()
                .unwrap_or(0),
            failed_clients: runs.iter().map(|r| r.failed_clients).max().unwrap_or(0),
            cseq_gaps: runs.iter().map(|r| r.cseq_gaps).max().unwrap_or(0),
            seq_gaps: runs.iter().map(|r| r.seq_gaps).max().unwrap_or(0),
            overflow_lost: med(&|r| r.overflow_lost as f64) as u64,
            not_converged: runs
                .iter()
                .filter_map(|r| Some(r.connected.saturating_sub(r.converged?)))
                .max(),
        }
    }
}

/// All runs of one case on one target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaseResult {
    /// Target name.
    pub target: String,
    /// Case name.
    pub case: String,
    /// The target is a reference server.
    pub peer: bool,
    /// `json` or `binary`.
    pub protocol: String,
    /// `all` or `latest`.
    pub mode: String,
    /// Sessions.
    pub clients: usize,
    /// Feed updates/s.
    pub rate: u64,
    /// Feed symbols.
    pub symbols: u32,
    /// `--version` of the target's program, if it answers.
    pub version: Option<String>,
    /// Every pass.
    pub runs: Vec<RunResult>,
    /// Medians.
    pub summary: Summary,
    /// Sanity-check failures (empty when none or none asked for).
    pub assertion_failures: Vec<String>,
}

/// The JSON result file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultFile {
    /// Scenario name.
    pub scenario_name: String,
    /// The scenario as run (after defaults), as JSON.
    pub scenario: serde_json::Value,
    /// Machine and versions.
    pub machine: MachineInfo,
    /// One per (target, case) run.
    pub results: Vec<CaseResult>,
}

/// Writes a histogram (ns) in HdrHistogram's percentile-distribution text
/// format (Java `outputPercentileDistribution`, 5 ticks per half distance),
/// values in milliseconds.
pub fn hgrm(h: &Histogram<u64>) -> String {
    const SCALE: f64 = 1e6; // ns per ms
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / SCALE;
            if q < 1.0 {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q));
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let (mean, sd, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / SCALE, h.stdev() / SCALE, h.max() as f64 / SCALE)
    };
    let sub_buckets = 1u64 << (2.0 * 10f64.powi(i32::from(h.sigfig()))).log2().ceil() as u32;
    let _ = writeln!(out, "#[Mean    = {mean:12.3}, StdDeviation   = {sd:12.3}]");
    let _ = writeln!(out, "#[Max     = {max:12.3}, Total count    = {:12}]", h.len());
    let _ = writeln!(out, "#[Buckets = {:12}, SubBuckets     = {sub_buckets:12}]", h.buckets());
    out
}

/// Points of a percentile curve: (1/(1−q), value in ms), as plotted by
/// HdrHistogram's plotter; the last point (q = 1) is placed at `x_max`.
pub fn percentile_curve(h: &Histogram<u64>, x_max: f64) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut pts: Vec<(f64, f64)> = h
        .iter_quantiles(5)
        .map(|v| {
            let q = v.quantile_iterated_to();
            let x = if q >= 1.0 { x_max } else { (1.0 / (1.0 - q)).min(x_max) };
            (x, v.value_iterated_to() as f64 / 1e6)
        })
        .collect();
    pts.dedup_by(|b, a| b.0 == a.0 && b.1 == a.1);
    pts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist() -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v * 1_000).unwrap(); // 1 µs .. 10 ms
        }
        h
    }

    #[test]
    fn percentiles_in_ms() {
        let p = Percentiles::of(&hist());
        assert_eq!(p.count, 10_000);
        assert!((p.p50 - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p99 - 9.9).abs() < 0.01);
        assert!((p.max - 10.0).abs() < 0.01);
        assert_eq!(Percentiles::of(&Histogram::new(3).unwrap()), Percentiles::default());
    }

    #[test]
    fn hgrm_layout() {
        let text = hgrm(&hist());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        assert_eq!(lines[1], "");
        let rows: Vec<Vec<&str>> = lines[2..]
            .iter()
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(rows.len() > 20);
        assert!(rows[..rows.len() - 1].iter().all(|r| r.len() == 4));
        let last = rows.last().unwrap();
        assert_eq!(last.len(), 3, "the 100% line has no 1/(1-p)");
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "10000");
        // cumulative counts and percentiles never go down
        let counts: Vec<u64> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
        assert!(text.contains("#[Max     =       10.00"), "{text}");
        assert!(text.contains(", Total count    =        10000]"));
        assert!(text.contains("SubBuckets     =         2048]"));
    }

    #[test]
    fn curve_is_monotonic_and_capped() {
        let pts = percentile_curve(&hist(), 1e6);
        assert_eq!(pts[0].0, 1.0);
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(pts.last().unwrap().0, 1e6);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        let r = |d: f64, gaps: u64| RunResult {
            delivered_per_s: d,
            seq_gaps: gaps,
            ..Default::default()
        };
        let s = Summary::of(&[r(10.0, 0), r(30.0, 2), r(20.0, 0)]);
        assert_eq!((s.runs, s.delivered_per_s, s.seq_gaps), (3, 20.0, 2));
    }
}
