//! What the harness prints and writes: a terminal table per case, the
//! markdown comparison table for BENCHMARKS.md, and the per-case files
//! (`.hgrm` distributions, SVG charts).

use std::fmt::Write as _;
use std::path::Path;

use crate::client::Latencies;
use crate::results::{CaseResult, Summary, hgrm, percentile_curve};
use crate::svg::{Chart, Series, XAxis};

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.prec$}"))
}

/// Thousands separators: 1234567 -> 1,234,567.
pub fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// The terminal report of one (target, case): medians over its runs.
pub fn case_table(cr: &CaseResult) -> String {
    let s = &cr.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== {} / {}: {} clients, {} updates/s, {} symbols, mode {}, {} ({} of {} runs measured; medians)",
        cr.target,
        cr.case,
        cr.clients,
        thousands(cr.rate as f64),
        cr.symbols,
        cr.mode,
        cr.protocol,
        s.runs,
        cr.runs.len()
    );
    for r in cr.runs.iter().filter(|r| r.error.is_some()) {
        let _ = writeln!(out, "   run {} failed: {}", r.run, r.error.as_deref().unwrap_or(""));
    }
    if s.runs == 0 {
        return out;
    }
    let rows = [
        (
            "delivered msgs/s",
            format!(
                "{} of ideal {} ({:.1}%)",
                thousands(s.delivered_per_s),
                thousands(s.ideal_per_s),
                s.delivered_ratio * 100.0
            ),
        ),
        (
            "by mode, % of ideal",
            format!(
                "latest {}%, all {}%",
                opt(s.delivered_ratio_latest.map(|r| r * 100.0), 1),
                opt(s.delivered_ratio_all.map(|r| r * 100.0), 1)
            ),
        ),
        ("source coverage", format!("{:.1}% (delivered + conflated)", s.source_coverage * 100.0)),
        (
            "frames/s, bytes/s",
            format!("{} , {}", thousands(s.frames_per_s), thousands(s.bytes_per_s)),
        ),
        ("conflation (sum cf/msgs)", format!("{:.2}", s.conflation_ratio)),
        ("overflow lost", thousands(s.overflow_lost as f64)),
        ("cseq gaps / seq gaps", format!("{} / {}", s.cseq_gaps, s.seq_gaps)),
        ("failed clients", s.failed_clients.to_string()),
        (
            "server CPU",
            format!(
                "{} cores, {} µs/msg",
                opt(s.server_cpu_cores, 2),
                opt(s.server_cpu_us_per_msg, 3)
            ),
        ),
        ("client CPU", format!("{} cores", opt(s.client_cpu_cores, 2))),
        (
            "server RSS",
            format!(
                "max {} MB, growth over window {} MB",
                opt(s.rss_max_mb, 1),
                opt(s.rss_growth_mb, 1)
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "   {k:<26}{v}");
    }
    if let Some(last) = cr.runs.last().filter(|r| r.stalled_clients > 0) {
        let per_run: Vec<String> = cr
            .runs
            .iter()
            .map(|r| {
                let t: Vec<String> =
                    r.stalled_closed_after_s.iter().map(|t| format!("{t:.2}")).collect();
                format!("[{}]", t.join(", "))
            })
            .collect();
        let _ = writeln!(
            out,
            "   {:<26}{} per run (from {}; median of the last {}), not closed (worst run) {}",
            "stalled closed after (s)",
            per_run.join(" "),
            last.stalled_close_source.as_deref().unwrap_or("?"),
            opt(s.stalled_closed_after_s, 2),
            s.stalled_not_closed
        );
        let _ = writeln!(out, "   {:<26}{}", "stalled drain ended", last.stalled_how.join("; "));
    }
    if s.rss_window_growth_mb.is_some() {
        let _ = writeln!(
            out,
            "   {:<26}max − start of window {} MB; before subscribing → start {} MB",
            "RSS growth",
            opt(s.rss_window_growth_mb, 1),
            opt(subscribe_to_start(cr), 1)
        );
    }
    if let Some(c) = s.connect_s {
        let _ = writeln!(
            out,
            "   {:<26}all connected after {c:.2} s ({} /s), all subscribed {} s later; RSS {} KiB per connection",
            "connect storm",
            opt(s.connect_per_s, 0),
            opt(s.subscribe_s, 2),
            opt(s.rss_per_conn_kb, 1)
        );
    }
    for r in cr.runs.iter().filter(|r| r.server_closes.iter().any(|c| c.1 > 0.0)) {
        let c: Vec<String> = r.server_closes.iter().map(|(n, v)| format!("{n} {v}")).collect();
        let _ = writeln!(out, "   {:<26}run {}: {}", "server closed/refused", r.run, c.join(", "));
    }
    if s.stamps_ahead > 0 {
        let _ = writeln!(
            out,
            "   {:<26}{} updates sent (to) after their receipt: the server's clock runs ahead",
            "CLOCK AHEAD (worst run)", s.stamps_ahead
        );
    }
    if let Some(n) = s.not_converged {
        let _ = writeln!(out, "   {:<26}{}", "not converged (worst run)", n);
    }
    let _ = write!(out, "   {:<26}", "latency (ms)");
    for (name, _) in s.latency.e2e.columns() {
        let _ = write!(out, "{name:>10}");
    }
    out.push('\n');
    for (name, p) in s.latency.named() {
        let _ = write!(out, "   {name:<26}");
        for (_, v) in p.columns() {
            let _ = write!(out, "{v:>10.3}");
        }
        out.push('\n');
    }
    out
}

/// Median RSS growth from just before the subscriptions to the window.
fn subscribe_to_start(cr: &CaseResult) -> Option<f64> {
    crate::results::median(
        cr.runs.iter().filter_map(|r| Some(r.rss_start_mb? - r.rss_subscribe_mb?)).collect(),
    )
}

fn best_peer<'a>(all: &'a [CaseResult], case: &str) -> Option<&'a Summary> {
    all.iter()
        .filter(|c| c.peer && c.case == case && c.summary.runs > 0)
        .map(|c| &c.summary)
        .max_by(|a, b| a.delivered_per_s.total_cmp(&b.delivered_per_s))
}

/// The comparison table, one row per (case, target), in scenario order,
/// with ratios against the best peer of the case (the peer with the highest
/// delivered rate): rate × (higher is better) and p99 × (lower is better).
pub fn markdown(all: &[CaseResult]) -> String {
    let mut out = String::from(
        "| case | clients | feed/s | mode | server | delivered msgs/s | % of ideal | e2e p50 ms | e2e p99 ms | e2e p99.9 ms | e2e max ms | server CPU µs/msg | server CPU cores | client CPU cores | RSS max MB | overflow lost | gaps cseq/seq | failed clients | rate vs best peer | p99 vs best peer |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in all {
        let s = &c.summary;
        let head = format!(
            "| {} | {} | {} | {} | {} |",
            c.case,
            c.clients,
            thousands(c.rate as f64),
            c.mode,
            c.target
        );
        if s.runs == 0 {
            let why = c.runs.iter().find_map(|r| r.error.clone()).unwrap_or_default();
            let _ = writeln!(out, "{head} not measured: {} |||||||||||||||", why.replace('|', "/"));
            continue;
        }
        let (rate_vs, p99_vs) = match best_peer(all, &c.case) {
            Some(p) if !c.peer && p.delivered_per_s > 0.0 && p.latency.e2e.p99 > 0.0 => (
                format!("{:.2}×", s.delivered_per_s / p.delivered_per_s),
                format!("{:.2}×", s.latency.e2e.p99 / p.latency.e2e.p99),
            ),
            _ => ("—".into(), "—".into()),
        };
        let e = &s.latency.e2e;
        let _ = writeln!(
            out,
            "{head} {} | {:.1}% | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {}/{} | {} | {rate_vs} | {p99_vs} |",
            thousands(s.delivered_per_s),
            s.delivered_ratio * 100.0,
            e.p50,
            e.p99,
            e.p999,
            e.max,
            opt(s.server_cpu_us_per_msg, 2),
            opt(s.server_cpu_cores, 2),
            opt(s.client_cpu_cores, 2),
            opt(s.rss_max_mb, 0),
            thousands(s.overflow_lost as f64),
            s.cseq_gaps,
            s.seq_gaps,
            s.failed_clients,
        );
    }
    out
}

/// The connection table: per (case, target), the connect storm and memory
/// per connection (the connection-scale curve's numbers besides latency).
pub fn connections_markdown(all: &[CaseResult]) -> String {
    let mut out = String::from(
        "| case | server | connections | connected | all connected after s | accepted /s | all subscribed after s | RSS max MB | RSS per connection KiB | server CPU cores | e2e p50 ms | e2e p99 ms |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in all.iter().filter(|c| c.summary.runs > 0) {
        let s = &c.summary;
        let connected = c.runs.iter().map(|r| r.connected).min().unwrap_or(0);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |",
            c.case,
            c.target,
            thousands(c.clients as f64),
            thousands(connected as f64),
            opt(s.connect_s, 2),
            opt(s.connect_per_s, 0),
            opt(s.subscribe_s, 2),
            opt(s.rss_max_mb, 0),
            opt(s.rss_per_conn_kb, 1),
            opt(s.server_cpu_cores, 2),
            s.latency.e2e.p50,
            s.latency.e2e.p99,
        );
    }
    out
}

/// A case's family and size for curves: `hot-18k` is (`hot`, its
/// clients), as is `watchlists-100`; a name without a `-SIZE` suffix has
/// no curve.
fn family(case: &str) -> Option<&str> {
    let (fam, size) = case.rsplit_once('-')?;
    let digits = size.strip_suffix('k').unwrap_or(size);
    (!digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())).then_some(fam)
}

/// A latency of a row that received something (one that received nothing
/// has no latency, not 0 ms).
fn lat(s: &Summary, v: f64) -> Option<f64> {
    (s.latency.e2e.count > 0).then_some(v)
}

/// Writes one chart per (family of cases, number) with one line per target
/// over the number of clients: the connection-scale curve and the
/// watchlists' sizes. Returns the file names written.
pub fn write_curves(dir: &Path, all: &[CaseResult]) -> std::io::Result<Vec<String>> {
    type Metric = (&'static str, &'static str, fn(&Summary) -> Option<f64>);
    let metrics: [Metric; 6] = [
        ("p50", "end-to-end p50 (ms)", |s| lat(s, s.latency.e2e.p50)),
        ("p99", "end-to-end p99 (ms)", |s| lat(s, s.latency.e2e.p99)),
        ("delivered", "delivered, % of ideal", |s| Some(s.delivered_ratio * 100.0)),
        ("rss-per-conn", "server RSS per connection (KiB)", |s| s.rss_per_conn_kb),
        ("accepted", "connections accepted per second (storm)", |s| s.connect_per_s),
        ("cpu", "server CPU (cores)", |s| s.server_cpu_cores),
    ];
    let mut families: Vec<&str> = all.iter().filter_map(|c| family(&c.case)).collect();
    families.dedup();
    families.sort_unstable();
    families.dedup();
    let mut written = Vec::new();
    for fam in families {
        let rows: Vec<&CaseResult> =
            all.iter().filter(|c| family(&c.case) == Some(fam) && c.summary.runs > 0).collect();
        let mut targets: Vec<&str> = rows.iter().map(|c| c.target.as_str()).collect();
        targets.dedup();
        let sizes = rows.iter().map(|c| c.clients).collect::<std::collections::BTreeSet<_>>();
        if sizes.len() < 2 {
            continue;
        }
        for (key, label, f) in metrics {
            let mut series = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for t in &targets {
                if !seen.insert(*t) {
                    continue;
                }
                let mut points: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|c| c.target == *t)
                    .filter_map(|c| Some((c.clients as f64, f(&c.summary)?)))
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                if !points.is_empty() {
                    series.push(Series { name: (*t).to_string(), points });
                }
            }
            if series.is_empty() {
                continue;
            }
            // Sizes over two orders of magnitude or more read better on a
            // log axis.
            let (small, large) = (sizes.first().copied(), sizes.last().copied());
            let spread = large.unwrap_or(1) as f64 / small.unwrap_or(1).max(1) as f64;
            let chart = Chart {
                title: format!("{fam}: {label}"),
                x_label: "connections".into(),
                y_label: label.into(),
                x_axis: if spread >= 50.0 { XAxis::Log } else { XAxis::Linear },
                series,
            };
            let f = format!("curve-{fam}.{key}.svg");
            std::fs::write(dir.join(&f), chart.render())?;
            written.push(f);
        }
    }
    Ok(written)
}

/// File-name stem of a (target, case).
pub fn stem(cr: &CaseResult) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .collect::<String>()
    };
    format!("{}__{}", clean(&cr.target), clean(&cr.case))
}

/// Writes the `.hgrm` files (one per latency, all runs merged) and the two
/// charts of a (target, case); returns the file names written.
pub fn write_case_files(
    dir: &Path,
    cr: &CaseResult,
    lat: &Latencies,
) -> std::io::Result<Vec<String>> {
    let stem = stem(cr);
    let mut written = Vec::new();
    for (name, h) in lat.named() {
        let f = format!("{stem}.{name}.hgrm");
        std::fs::write(dir.join(&f), hgrm(h))?;
        written.push(f);
    }
    let label = |n: &str| match n {
        "e2e" => "end to end (recv − t)",
        "src_to_ingest" => "source → ingest (ti − t)",
        "ingest_to_send" => "ingest → send (to − ti)",
        _ => "send → receive (recv − to)",
    };
    let x_max = lat.e2e.len().max(10) as f64; // 1/(1-p) of the last sample
    let pct = Chart {
        title: format!("{} / {}: latency by percentile (all runs)", cr.target, cr.case),
        x_label: "percentile (log scale of 1/(1−p))".into(),
        y_label: "latency (ms)".into(),
        x_axis: XAxis::Percentile,
        series: lat
            .named()
            .iter()
            .map(|(n, h)| Series { name: label(n).into(), points: percentile_curve(h, x_max) })
            .collect(),
    };
    let f = format!("{stem}.percentiles.svg");
    std::fs::write(dir.join(&f), pct.render())?;
    written.push(f);
    if let Some(run) = cr.runs.iter().rev().find(|r| r.error.is_none()) {
        let pts = |g: fn(&crate::results::TimePoint) -> f64| {
            run.timeline.iter().filter(|p| p.count > 0).map(|p| (p.t, g(p))).collect::<Vec<_>>()
        };
        let tl = Chart {
            title: format!(
                "{} / {}: end-to-end latency per 100 ms (run {})",
                cr.target, cr.case, run.run
            ),
            x_label: "seconds into the measured window".into(),
            y_label: "latency (ms)".into(),
            x_axis: XAxis::Linear,
            series: vec![
                Series { name: "max".into(), points: pts(|p| p.max) },
                Series { name: "p99".into(), points: pts(|p| p.p99) },
                Series { name: "p50".into(), points: pts(|p| p.p50) },
            ],
        };
        let f = format!("{stem}.timeline.svg");
        std::fs::write(dir.join(&f), tl.render())?;
        written.push(f);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(target: &str, peer: bool, delivered: Option<f64>, p99: f64) -> CaseResult {
        let mut summary = Summary::default();
        let mut runs = vec![crate::results::RunResult { run: 1, ..Default::default() }];
        match delivered {
            Some(d) => {
                summary.runs = 1;
                summary.delivered_per_s = d;
                summary.latency.e2e.p99 = p99;
                summary.latency.e2e.count = 1;
            }
            None => runs[0].error = Some("node | missing".into()),
        }
        CaseResult {
            target: target.into(),
            case: "c1".into(),
            peer,
            protocol: "json".into(),
            mode: "all".into(),
            clients: 100,
            rate: 10_000,
            symbols: 1000,
            version: None,
            runs,
            summary,
            assertion_failures: vec![],
        }
    }

    #[test]
    fn markdown_rows_line_up_and_compare_with_the_best_peer() {
        let all = [
            case("tw", false, Some(900_000.0), 5.0),
            case("slow-peer", true, Some(50_000.0), 100.0),
            case("fast-peer", true, Some(300_000.0), 50.0),
            case("gone-peer", true, None, 0.0),
        ];
        let md = markdown(&all);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 6);
        let cells = |l: &str| l.matches('|').count();
        assert!(lines.iter().all(|l| cells(l) == cells(lines[0])), "{md}");
        assert!(lines[2].contains("| 3.00× | 0.10× |"), "{}", lines[2]);
        assert!(lines[3].ends_with("| — | — |"));
        assert!(lines[5].contains("not measured: node / missing"));
    }

    #[test]
    fn curves_by_family() {
        assert_eq!(family("hot-18k"), Some("hot"));
        assert_eq!(family("watchlists-100"), Some("watchlists"));
        assert_eq!(family("c100-r1k"), None);
        assert_eq!(family("plain"), None);
        let mut a = case("tw", false, Some(1.0), 2.0);
        a.case = "hot-1k".into();
        let mut b = a.clone();
        b.case = "hot-5k".into();
        b.clients = 5000;
        let dir = std::env::temp_dir().join(format!("bench-curves-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = write_curves(&dir, &[a, b]).unwrap();
        assert!(files.contains(&"curve-hot.p99.svg".to_string()), "{files:?}");
        let svg = std::fs::read_to_string(dir.join("curve-hot.p99.svg")).unwrap();
        assert!(svg.contains(r#"data-name="tw""#));
        std::fs::remove_dir_all(&dir).unwrap();
        let md = connections_markdown(&[case("tw", false, Some(1.0), 2.0)]);
        assert_eq!(md.lines().count(), 3);
    }

    #[test]
    fn numbers_format() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1,000");
    }
}
