//! `--compare`: a new result file against an old one, case by case, on the
//! medians (delivered rate, end-to-end p50/p99/p99.9, server CPU per
//! message, RSS) and the correctness counters. A change for the worse
//! beyond the threshold (and beyond a small absolute floor, so that noise on
//! tiny values does not fail CI) is a regression.

use crate::results::{ResultFile, Summary};

/// One compared number.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `target/case`.
    pub key: String,
    /// Metric name.
    pub metric: &'static str,
    /// Old median (None: not measured).
    pub old: Option<f64>,
    /// New median.
    pub new: Option<f64>,
    /// Relative change, new vs old (+ = larger).
    pub change: Option<f64>,
    /// Worse beyond the threshold.
    pub regression: bool,
}

struct Metric {
    name: &'static str,
    get: fn(&Summary) -> Option<f64>,
    higher_is_better: bool,
    /// Differences below this are never regressions.
    floor: f64,
    /// Any increase is a regression (correctness counters).
    strict: bool,
}

const METRICS: [Metric; 8] = [
    Metric {
        name: "delivered/s",
        get: |s| Some(s.delivered_per_s),
        higher_is_better: true,
        floor: 0.0,
        strict: false,
    },
    Metric {
        name: "e2e p50 ms",
        get: |s| Some(s.latency.e2e.p50),
        higher_is_better: false,
        floor: 0.1,
        strict: false,
    },
    Metric {
        name: "e2e p99 ms",
        get: |s| Some(s.latency.e2e.p99),
        higher_is_better: false,
        floor: 0.1,
        strict: false,
    },
    Metric {
        name: "e2e p99.9 ms",
        get: |s| Some(s.latency.e2e.p999),
        higher_is_better: false,
        floor: 0.1,
        strict: false,
    },
    Metric {
        name: "server CPU µs/msg",
        get: |s| s.server_cpu_us_per_msg,
        higher_is_better: false,
        floor: 0.05,
        strict: false,
    },
    Metric {
        name: "server RSS max MB",
        get: |s| s.rss_max_mb,
        higher_is_better: false,
        floor: 2.0,
        strict: false,
    },
    Metric {
        name: "seq gaps",
        get: |s| Some(s.seq_gaps as f64),
        higher_is_better: false,
        floor: 0.0,
        strict: true,
    },
    Metric {
        name: "failed clients",
        get: |s| Some(s.failed_clients as f64),
        higher_is_better: false,
        floor: 0.0,
        strict: true,
    },
];

/// Compares every (target, case) of `old` with the same one in `new`;
/// `threshold` is relative (0.1 = 10%). A case of `old` missing from `new`
/// (or without numbers there) is a regression.
pub fn compare(old: &ResultFile, new: &ResultFile, threshold: f64) -> Vec<Row> {
    let mut rows = Vec::new();
    for o in &old.results {
        if o.summary.runs == 0 {
            continue;
        }
        let key = format!("{}/{}", o.target, o.case);
        let n = new.results.iter().find(|n| n.target == o.target && n.case == o.case);
        let Some(n) = n.filter(|n| n.summary.runs > 0) else {
            rows.push(Row {
                key,
                metric: "measured",
                old: Some(1.0),
                new: None,
                change: None,
                regression: true,
            });
            continue;
        };
        for m in &METRICS {
            let (a, b) = ((m.get)(&o.summary), (m.get)(&n.summary));
            let (change, regression) = match (a, b) {
                (Some(a), Some(b)) => {
                    let change = if a != 0.0 { Some((b - a) / a.abs()) } else { None };
                    let worse_by = if m.higher_is_better { a - b } else { b - a };
                    let regression = if m.strict {
                        worse_by > 0.0
                    } else {
                        worse_by > m.floor && worse_by > threshold * a.abs()
                    };
                    (change, regression)
                }
                _ => (None, false),
            };
            rows.push(Row { key: key.clone(), metric: m.name, old: a, new: b, change, regression });
        }
    }
    rows
}

/// A markdown table of the rows (regressions marked), and a closing line.
pub fn render(rows: &[Row], threshold: f64) -> String {
    let f = |v: Option<f64>| match v {
        None => "—".to_string(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.3}"),
    };
    let mut out =
        String::from("| case | metric | old | new | change | |\n|---|---|---|---|---|---|\n");
    for r in rows {
        let change = r.change.map_or("—".into(), |c| format!("{:+.1}%", c * 100.0));
        let flag = if r.regression { "**REGRESSION**" } else { "" };
        out += &format!(
            "| {} | {} | {} | {} | {change} | {flag} |\n",
            r.key,
            r.metric,
            f(r.old),
            f(r.new)
        );
    }
    let n = rows.iter().filter(|r| r.regression).count();
    out += &format!("\n{n} regression(s) beyond {:.0}%\n", threshold * 100.0);
    out
}

/// Parses `10%` or `0.1`.
pub fn parse_threshold(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s.parse::<f64>(),
    }
    .map_err(|_| format!("bad threshold {s:?} (try 10%)"))?;
    if !(0.0..10.0).contains(&v) {
        return Err(format!("threshold {s:?} out of range"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{CaseResult, Summary};
    use crate::server::MachineInfo;

    fn file(delivered: f64, p99: f64, cpu: f64, gaps: u64) -> ResultFile {
        let mut s = Summary {
            runs: 3,
            delivered_per_s: delivered,
            server_cpu_us_per_msg: Some(cpu),
            seq_gaps: gaps,
            ..Default::default()
        };
        s.latency.e2e.p99 = p99;
        s.latency.e2e.p50 = 1.0;
        ResultFile {
            scenario_name: "t".into(),
            scenario: serde_json::Value::Null,
            machine: MachineInfo::default(),
            results: vec![CaseResult {
                target: "tw".into(),
                case: "c1".into(),
                peer: false,
                protocol: "json".into(),
                mode: "all".into(),
                clients: 1,
                rate: 1,
                symbols: 1,
                version: None,
                runs: vec![],
                summary: s,
                assertion_failures: vec![],
            }],
        }
    }

    fn regressions(rows: &[Row]) -> Vec<&'static str> {
        rows.iter().filter(|r| r.regression).map(|r| r.metric).collect()
    }

    #[test]
    fn flags_only_changes_for_the_worse_beyond_threshold() {
        let old = file(100_000.0, 10.0, 1.0, 0);
        assert!(regressions(&compare(&old, &old, 0.1)).is_empty());
        // 5% slower delivery, 5% higher p99: within 10%
        assert!(regressions(&compare(&old, &file(95_000.0, 10.5, 1.0, 0), 0.1)).is_empty());
        // better is never a regression
        assert!(regressions(&compare(&old, &file(200_000.0, 1.0, 0.5, 0), 0.1)).is_empty());
        let rows = compare(&old, &file(80_000.0, 12.0, 1.2, 1), 0.1);
        assert_eq!(
            regressions(&rows),
            ["delivered/s", "e2e p99 ms", "server CPU µs/msg", "seq gaps"]
        );
        let dr = rows.iter().find(|r| r.metric == "delivered/s").unwrap();
        assert!((dr.change.unwrap() + 0.2).abs() < 1e-9);
        assert!(render(&rows, 0.1).contains("4 regression(s) beyond 10%"));
    }

    #[test]
    fn floors_and_missing_cases() {
        let old = file(100.0, 0.05, 0.01, 0);
        // p99 doubled but by less than 0.1 ms; CPU doubled but by < 0.05 µs
        assert!(regressions(&compare(&old, &file(100.0, 0.1, 0.02, 0), 0.1)).is_empty());
        let mut new = file(100.0, 0.05, 0.01, 0);
        new.results[0].case = "other".into();
        assert_eq!(regressions(&compare(&old, &new, 0.1)), ["measured"]);
    }

    #[test]
    fn thresholds() {
        assert_eq!(parse_threshold("10%").unwrap(), 0.1);
        assert_eq!(parse_threshold("0.25").unwrap(), 0.25);
        assert!(parse_threshold("ten").is_err());
    }
}
