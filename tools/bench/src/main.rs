//! tickwire-bench: the latency and throughput harness for tickwire and its
//! reference peers. See `tools/bench/README.md`.
//!
//! # Layout
//!
//! - `scenario`: the TOML scenario files (targets × cases × runs), checked.
//! - `server`: starting a server, finding its URL, `/proc` CPU and RSS,
//!   machine info.
//! - `client`: the multi-threaded WebSocket load client, its checks and
//!   histograms.
//! - `feed`: the harness's own feed over TCP (round-robin or Zipf), for
//!   servers that take one.
//! - `run`: one pass of one case on one target, through its phases.
//! - `results`: the numbers (JSON result file), medians, `.hgrm` writer.
//! - `report`: terminal and markdown tables, per-case files.
//! - `svg`: the hand-written charts.
//! - `compare`: `--compare OLD.json`, regression flags for CI.
//! - `workers`: a run's sessions split over several client processes
//!   (`tickwire-bench --worker`).
//!
//! `main` only parses flags, runs the scenario under a hard deadline, and
//! writes the files.

mod client;
mod compare;
mod feed;
mod inflating;
mod report;
mod results;
mod run;
mod scenario;
mod server;
mod svg;
mod workers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::results::{CaseResult, ResultFile, Summary};
use crate::scenario::{Protocol, Scenario, Target};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Latency and throughput harness: starts servers, drives them with many
/// WebSocket clients, writes tables, JSON, .hgrm and SVG charts.
#[derive(Debug, Parser)]
#[command(name = "tickwire-bench", version, about, long_about = None)]
struct Args {
    /// Scenario file (TOML), e.g. tools/bench/scenarios/smoke.toml.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Directory for results.json, summary.md, .hgrm, .svg and server logs.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Override the scenario's number of runs.
    #[arg(long)]
    runs: Option<u32>,
    /// Override the warm-up (`2s`, `500ms`).
    #[arg(long)]
    warmup: Option<String>,
    /// Override the measured window.
    #[arg(long)]
    duration: Option<String>,
    /// Override the client threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Only these targets (repeatable).
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
    /// Only these cases (repeatable).
    #[arg(long = "case", value_name = "NAME")]
    cases: Vec<String>,
    /// Measure a running server instead of the scenario's targets (its feed
    /// must match the cases' rate and symbols).
    #[arg(long)]
    url: Option<String>,
    /// Pid of the server at --url, for CPU and RSS.
    #[arg(long, requires = "url")]
    pid: Option<u32>,
    /// Protocol for --url: json or binary.
    #[arg(long, default_value = "json", requires = "url", value_parser = ["json", "binary"])]
    protocol: String,
    /// Compare with an older result file; exit 1 on a regression.
    #[arg(long, value_name = "OLD.json")]
    compare: Option<PathBuf>,
    /// With --compare and no --scenario: the new result file.
    #[arg(long, value_name = "NEW.json", requires = "compare")]
    result: Option<PathBuf>,
    /// Relative change that counts as a regression (`10%` or `0.1`).
    #[arg(long, default_value = "10%", value_parser = compare::parse_threshold)]
    threshold: f64,
    /// Skip the scenario's setup commands (e.g. its cargo build).
    #[arg(long)]
    no_setup: bool,
    /// Kill everything and exit 3 after this many seconds (default: the
    /// scenario's own budget plus a minute).
    #[arg(long)]
    hard_timeout: Option<u64>,
    /// Write the tables and curve charts of these result files (one
    /// invocation's or several, merged) into --out, without running
    /// anything (repeatable).
    #[arg(long = "report", value_name = "RESULTS.json")]
    reports: Vec<PathBuf>,
    /// Internal: run as a client process of another tickwire-bench (plan
    /// and commands on stdin, see `workers`).
    #[arg(long, hide = true)]
    worker: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    if a.worker {
        return match workers::worker_main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tickwire-bench worker: {e}");
                ExitCode::from(2)
            }
        };
    }
    match real_main(a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tickwire-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn read_results(p: &PathBuf) -> Result<ResultFile, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
}

fn real_main(a: Args) -> Result<ExitCode, String> {
    if !a.reports.is_empty() {
        return report_only(&a);
    }
    let Some(path) = &a.scenario else {
        // Compare two files without running anything.
        let (Some(old), Some(new)) = (&a.compare, &a.result) else {
            return Err("give --scenario FILE, or --compare OLD.json --result NEW.json".into());
        };
        return Ok(compare_and_print(&read_results(old)?, &read_results(new)?, a.threshold));
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut sc = Scenario::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    apply_overrides(&mut sc, &a)?;
    let old = a.compare.as_ref().map(read_results).transpose()?;

    if !a.no_setup {
        for cmd in &sc.setup {
            eprintln!("tickwire-bench: setup: {}", cmd.join(" "));
            let ok = std::process::Command::new(&cmd[0])
                .args(&cmd[1..])
                .status()
                .map_err(|e| format!("setup {}: {e}", cmd[0]))?
                .success();
            if !ok {
                return Err(format!("setup failed: {}", cmd.join(" ")));
            }
        }
    }
    std::fs::create_dir_all(a.out.join("logs")).map_err(|e| format!("{}: {e}", a.out.display()))?;
    // Each target's `prepare` command (provisioning), once, before the hard
    // deadline starts: a first run may install packages for minutes.
    let prepared: std::collections::HashMap<String, Result<(), String>> = sc
        .targets
        .iter()
        .filter(|t| sc.cases.iter().any(|c| t.supports(c)))
        .map(|t| (t.name.clone(), server::prepare(t)))
        .collect();
    let budget: Duration = sc
        .targets
        .iter()
        .flat_map(|t| sc.cases.iter().filter(move |c| t.supports(c)))
        .map(|c| run::budget(&sc, c) * sc.runs)
        .sum();
    let hard = a.hard_timeout.map_or(budget + Duration::from_secs(60), Duration::from_secs);
    std::thread::spawn(move || {
        std::thread::sleep(hard);
        eprintln!("tickwire-bench: hard deadline of {hard:?} reached; killing the servers");
        server::kill_children();
        std::process::exit(3);
    });
    eprintln!(
        "tickwire-bench: scenario {:?}: {} targets × {} cases × {} runs, {:?} warm-up + {:?} measured each (deadline {:?})",
        sc.name,
        sc.targets.len(),
        sc.cases.len(),
        sc.runs,
        sc.warmup,
        sc.duration,
        hard
    );

    let machine = server::MachineInfo::collect();
    let mut all = Vec::new();
    let mut assertion_failures = 0;
    // Every (case, target), in scenario order; each pass of each, either
    // pair by pair or (interleave = true) round by round, so that a noisy
    // machine weighs on every pair alike.
    let pairs: Vec<(&scenario::Case, &Target)> = sc
        .cases
        .iter()
        .flat_map(|c| sc.targets.iter().filter(move |t| t.supports(c)).map(move |t| (c, t)))
        .collect();
    let order: Vec<(usize, u32)> = if sc.interleave {
        (1..=sc.runs).flat_map(|r| (0..pairs.len()).map(move |i| (i, r))).collect()
    } else {
        (0..pairs.len()).flat_map(|i| (1..=sc.runs).map(move |r| (i, r))).collect()
    };
    let mut pair_runs: Vec<Vec<results::RunResult>> = vec![Vec::new(); pairs.len()];
    let mut pair_merged: Vec<Option<client::Latencies>> = pairs.iter().map(|_| None).collect();
    for (i, run) in order {
        let (case, target) = pairs[i];
        let runs = &mut pair_runs[i];
        let merged = &mut pair_merged[i];
        eprintln!("tickwire-bench: {} / {} run {run}/{}", target.name, case.name, sc.runs);
        let o = match prepared[&target.name].clone() {
            Ok(()) => run::run_once(&sc, target, case, run, &a.out.join("logs")),
            Err(e) => run::Outcome::failed(case, run, e),
        };
        let r = &o.result;
        eprintln!(
            "   delivered {}/s ({:.1}% of ideal), e2e p50 {:.2} ms p99 {:.2} ms, failed clients {}{}",
            report::thousands(r.delivered_per_s),
            r.delivered_ratio * 100.0,
            r.latency.e2e.p50,
            r.latency.e2e.p99,
            r.failed_clients,
            r.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
        );
        if let Some(l) = o.latencies {
            match merged {
                Some(m) => m.add(&l),
                None => *merged = Some(l),
            }
        }
        runs.push(o.result);
        if run < sc.runs {
            continue;
        }
        let runs = std::mem::take(runs);
        let merged = merged.take();
        let failures: Vec<String> = runs.iter().flat_map(|r| run::check(&sc, case, r)).collect();
        let cr = CaseResult {
            target: target.name.clone(),
            case: case.name.clone(),
            peer: target.peer,
            protocol: match target.protocol {
                Protocol::Json => "json".into(),
                Protocol::Binary => "binary".into(),
                Protocol::SocketIo => "socketio".into(),
            },
            mode: case.mode.as_str().into(),
            clients: case.clients,
            rate: case.rate,
            symbols: case.symbols(),
            // Peers start through tools/peers/run, which has no --version:
            // their `welcome.server` names them.
            version: target
                .command
                .first()
                .filter(|_| !target.peer)
                .and_then(|p| server::version_of(p)),
            summary: Summary::of(&runs),
            runs,
            assertion_failures: failures,
        };
        print!("{}", report::case_table(&cr));
        for f in &cr.assertion_failures {
            println!("   ASSERTION FAILED: {f}");
        }
        assertion_failures += cr.assertion_failures.len();
        if let Some(l) = &merged
            && let Err(e) = report::write_case_files(&a.out, &cr, l)
        {
            eprintln!("tickwire-bench: writing files of {}: {e}", report::stem(&cr));
        }
        all.push(cr);
    }

    // Cases compared with another case of the same run (same target).
    for case in &sc.cases {
        let Some(vs) = &case.assert_p99_ratio_vs else { continue };
        if !sc.cases.iter().any(|c| &c.name == vs) {
            println!("   {}: p99 ratio not checked ({vs} not run: --case)", case.name);
            continue;
        }
        let max = case.max_p99_ratio.unwrap_or(1.5);
        for i in 0..all.len() {
            if all[i].case != case.name {
                continue;
            }
            let base = all.iter().find(|o| &o.case == vs && o.target == all[i].target);
            let line = p99_ratio_check(&all[i], base, vs, max);
            println!("   {} / {}: {}", all[i].target, case.name, line.0);
            if let Some(f) = line.1 {
                println!("   ASSERTION FAILED: {f}");
                all[i].assertion_failures.push(f);
                assertion_failures += 1;
            }
        }
    }

    let file = ResultFile {
        scenario_name: sc.name.clone(),
        scenario: serde_json::to_value(&sc).unwrap_or_default(),
        machine,
        results: all,
    };
    let json = serde_json::to_string_pretty(&file).expect("serializable");
    let json_path = a.out.join("results.json");
    std::fs::write(&json_path, json).map_err(|e| format!("{}: {e}", json_path.display()))?;
    let md = format!(
        "{}\nConnections (connect storm, memory):\n\n{}",
        report::markdown(&file.results),
        report::connections_markdown(&file.results)
    );
    match report::write_curves(&a.out, &file.results) {
        Ok(files) if !files.is_empty() => println!("curves: {}", files.join(", ")),
        Ok(_) => {}
        Err(e) => eprintln!("tickwire-bench: writing curves: {e}"),
    }
    let m = &file.machine;
    let md = format!(
        "Scenario `{}`, {} run(s) per row, medians; {} ({} cores), Linux {}, {}, {}.\n\n{md}",
        file.scenario_name,
        sc.runs,
        m.cpu_model,
        m.cores,
        m.kernel,
        m.rustc.as_deref().unwrap_or("rustc ?"),
        m.git.as_deref().map_or(String::new(), |g| format!("commit {g}"))
    );
    std::fs::write(a.out.join("summary.md"), &md).map_err(|e| e.to_string())?;
    println!("\n{md}");
    println!("results: {} (and summary.md, *.hgrm, *.svg, logs/)", json_path.display());

    let mut code = ExitCode::SUCCESS;
    if assertion_failures > 0 {
        println!("{assertion_failures} sanity check(s) failed");
        code = ExitCode::FAILURE;
    }
    if let Some(old) = old
        && compare_and_print(&old, &file, a.threshold) != ExitCode::SUCCESS
    {
        code = ExitCode::FAILURE;
    }
    Ok(code)
}

/// `--report`: the markdown tables and the curves of result files, merged
/// in the order given.
fn report_only(a: &Args) -> Result<ExitCode, String> {
    let mut all = Vec::new();
    for p in &a.reports {
        all.extend(read_results(p)?.results);
    }
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let md = format!(
        "{}\nConnections (connect storm, memory):\n\n{}",
        report::markdown(&all),
        report::connections_markdown(&all)
    );
    std::fs::write(a.out.join("summary.md"), &md).map_err(|e| e.to_string())?;
    println!("{md}");
    let files = report::write_curves(&a.out, &all).map_err(|e| e.to_string())?;
    println!("curves: {}", files.join(", "));
    Ok(ExitCode::SUCCESS)
}

/// The e2e p99 (medians over runs) of `cr` against case `vs` of the same
/// target: a line for the log and the failure, if any.
fn p99_ratio_check(
    cr: &CaseResult,
    base: Option<&CaseResult>,
    vs: &str,
    max: f64,
) -> (String, Option<String>) {
    let Some(b) = base.filter(|b| b.summary.runs > 0 && b.summary.latency.e2e.p99 > 0.0) else {
        let f = format!("p99 ratio: case {vs:?} was not measured for {}", cr.target);
        return (f.clone(), Some(f));
    };
    if cr.summary.runs == 0 {
        let f = format!("p99 ratio: case {:?} was not measured", cr.case);
        return (f.clone(), Some(f));
    }
    let (p, q) = (cr.summary.latency.e2e.p99, b.summary.latency.e2e.p99);
    let ratio = p / q;
    let line = format!(
        "e2e p99 {p:.3} ms vs {q:.3} ms in {vs} (medians of {} and {} runs): ratio {ratio:.2} (limit {max})",
        cr.summary.runs, b.summary.runs
    );
    let fail = (ratio > max).then(|| format!("p99 ratio {ratio:.2} above {max}: {line}"));
    (line, fail)
}

fn apply_overrides(sc: &mut Scenario, a: &Args) -> Result<(), String> {
    if let Some(r) = a.runs {
        sc.runs = r.max(1);
    }
    if let Some(w) = &a.warmup {
        sc.warmup = scenario::parse_duration(w)?;
    }
    if let Some(d) = &a.duration {
        sc.duration = scenario::parse_duration(d)?;
    }
    if let Some(t) = a.threads {
        sc.threads = t.max(1);
    }
    if let Some(url) = &a.url {
        let protocol = if a.protocol == "binary" { Protocol::Binary } else { Protocol::Json };
        sc.targets = vec![Target {
            name: "external".into(),
            command: Vec::new(),
            url: Some(url.clone()),
            pid: a.pid,
            protocol,
            modes: vec![scenario::Mode::All, scenario::Mode::Latest],
            peer: false,
            named_symbols: true,
            cseq: true,
            prepare: Vec::new(),
            compression: false,
        }];
    }
    if !a.targets.is_empty() {
        sc.targets.retain(|t| a.targets.contains(&t.name));
    }
    if !a.cases.is_empty() {
        sc.cases.retain(|c| a.cases.contains(&c.name));
    }
    if sc.targets.is_empty() || sc.cases.is_empty() {
        return Err("no target or no case left after --target/--case".into());
    }
    Ok(())
}

fn compare_and_print(old: &ResultFile, new: &ResultFile, threshold: f64) -> ExitCode {
    let rows = compare::compare(old, new, threshold);
    println!("\n{}", compare::render(&rows, threshold));
    if rows.iter().any(|r| r.regression) { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
