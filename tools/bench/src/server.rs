//! The server under test: starting it, finding its URL, sampling its CPU
//! and memory from `/proc`, stopping it; and a description of the machine.
//!
//! Every child the harness starts is registered in [`CHILDREN`] so that the
//! hard deadline (see `main.rs`) can kill it even if the run hangs.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Pids of the servers the harness started and has not stopped yet.
pub static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// How long a server gets to print its URL.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A started server.
pub struct Server {
    child: Child,
    /// Its WebSocket URL (`ws://127.0.0.1:PORT/ws`).
    pub url: String,
    /// Its pid.
    pub pid: u32,
}

impl Server {
    /// Starts `argv` (stderr to `log`), and waits for the first `ws://` URL
    /// on its stdout; the rest of its stdout is drained and dropped.
    pub fn start(argv: &[String], log: &Path) -> Result<Server, String> {
        let (prog, args) = argv.split_first().ok_or("empty command")?;
        let err = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {prog}: {e}"))?;
        let pid = child.id();
        CHILDREN.lock().expect("lock").push(pid);
        let out = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(url) = find_ws_url(&line) {
                    sent = true;
                    let _ = tx.send(url);
                }
            }
        });
        let mut server = Server { child, url: String::new(), pid };
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(url) => {
                server.url = url;
                Ok(server)
            }
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                server.stop();
                let status = status.map_or("still running".into(), |s| s.to_string());
                Err(format!(
                    "{prog} printed no ws:// URL (waited up to {STARTUP_TIMEOUT:?}; {status}; see {})",
                    log.display()
                ))
            }
        }
    }

    /// SIGINT, then SIGKILL if it has not exited after 3 s.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        CHILDREN.lock().expect("lock").retain(|p| *p != self.pid);
    }
}

/// How long a target's `prepare` command may take (npm ci, pip, apt-get,
/// javac, cargo).
const PREPARE_LIMIT: Duration = Duration::from_secs(900);

/// Runs a target's `prepare` command (if any), bounded by [`PREPARE_LIMIT`];
/// on failure, its last line of stderr.
pub fn prepare(target: &crate::scenario::Target) -> Result<(), String> {
    let Some((prog, args)) = target.prepare.split_first() else { return Ok(()) };
    eprintln!("tickwire-bench: prepare {}: {}", target.name, target.prepare.join(" "));
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("prepare: starting {prog}: {e}"))?;
    let pid = child.id();
    CHILDREN.lock().expect("lock").push(pid);
    let err = child.stderr.take().expect("piped");
    let lines = std::thread::spawn(move || {
        BufReader::new(err).lines().map_while(Result::ok).collect::<Vec<String>>()
    });
    let end = Instant::now() + PREPARE_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    CHILDREN.lock().expect("lock").retain(|p| *p != pid);
    let lines = lines.join().unwrap_or_default();
    for l in &lines {
        eprintln!("   {l}");
    }
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(lines.last().cloned().unwrap_or_else(|| format!("prepare exited {s}"))),
        None => Err(format!("prepare took longer than {PREPARE_LIMIT:?}")),
    }
}

/// Kills every registered child (the hard deadline).
pub fn kill_children() {
    for pid in CHILDREN.lock().map(|c| c.clone()).unwrap_or_default() {
        let _ =
            Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
    }
}

/// The first `ws://...` token of a line, trailing punctuation removed.
pub fn find_ws_url(line: &str) -> Option<String> {
    let at = line.find("ws://")?;
    let url: String = line[at..]
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, ')' | '"' | '\'' | ','))
        .collect();
    Some(url)
}

/// Clock ticks per second of `/proc/PID/stat` times.
fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds (user + system) a process has used; `"self"` for this one.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clk_tck())
}

/// Resident set size in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples a process's RSS every 250 ms on a thread of its own.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(f64, u64)>>,
}

impl RssSampler {
    /// Starts sampling `pid` now.
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut out = Vec::new();
            loop {
                if let Some(kib) = rss_kib(pid) {
                    out.push((t0.elapsed().as_secs_f64(), kib));
                }
                if s.load(Ordering::Acquire) {
                    break out;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        RssSampler { stop, handle }
    }

    /// Stops (taking a last sample) and returns (seconds, KiB) samples.
    pub fn finish(self) -> Vec<(f64, u64)> {
        self.stop.store(true, Ordering::Release);
        self.handle.join().unwrap_or_default()
    }
}

/// `http://HOST:PORT/metrics` of a server's `ws://HOST:PORT/...` URL.
pub fn metrics_addr(ws_url: &str) -> Option<String> {
    let rest = ws_url.strip_prefix("ws://")?;
    let hostport = rest.split(['/', '?']).next()?;
    (!hostport.is_empty()).then(|| hostport.to_string())
}

/// Reads one counter or gauge (a line `NAME VALUE`, no labels) from
/// `GET /metrics` at `hostport`; None when the server has no such line or
/// does not answer within 500 ms.
pub fn read_metric(hostport: &str, name: &str) -> Option<f64> {
    metric_value(&metrics_page(hostport, Duration::from_millis(500))?, name)
}

/// The text of `GET /metrics` at `hostport`, if the server answers within
/// `limit` (per step: connect, write, read).
pub fn metrics_page(hostport: &str, limit: Duration) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport).ok()?.next()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.set_write_timeout(Some(limit)).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The value of the unlabelled line `NAME VALUE` of a Prometheus text page.
pub fn metric_value(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Polls one metric every 100 ms on a thread of its own.
pub struct MetricPoller {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(f64, f64)>>,
}

impl MetricPoller {
    /// Starts polling `name` at `hostport`; times are seconds since `t0`.
    pub fn start(hostport: String, name: &'static str, t0: Instant) -> MetricPoller {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut next = Instant::now();
            loop {
                if let Some(v) = read_metric(&hostport, name) {
                    out.push((t0.elapsed().as_secs_f64(), v));
                }
                if s.load(Ordering::Acquire) {
                    break out;
                }
                next += Duration::from_millis(100);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        MetricPoller { stop, handle }
    }

    /// Stops (after a last poll) and returns the (seconds, value) samples.
    pub fn finish(self) -> Vec<(f64, f64)> {
        self.stop.store(true, Ordering::Release);
        self.handle.join().unwrap_or_default()
    }
}

/// From polled samples of a counter, the time at which it had risen by
/// 1, 2, ... `n` above `base` (as many as it did).
pub fn rise_times(samples: &[(f64, f64)], base: f64, n: usize) -> Vec<f64> {
    (1..=n)
        .map_while(|k| samples.iter().find(|(_, v)| *v - base >= k as f64).map(|(t, _)| *t))
        .collect()
}

/// What the machine and the programs are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MachineInfo {
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs available to the harness.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// `rustc --version`, if rustc is on the PATH.
    pub rustc: Option<String>,
    /// The harness's version.
    pub harness: String,
    /// `git describe --always --dirty` of the working tree.
    pub git: Option<String>,
    /// When the run started (UTC, RFC 3339).
    pub date: String,
}

/// First line of `prog --version` (for the report), if it runs.
pub fn version_of(prog: &str) -> Option<String> {
    let o = Command::new(prog).arg("--version").stdin(Stdio::null()).output().ok()?;
    let s = String::from_utf8_lossy(if o.stdout.is_empty() { &o.stderr } else { &o.stdout })
        .lines()
        .next()?
        .trim()
        .to_string();
    (!s.is_empty()).then_some(s)
}

impl MachineInfo {
    /// Reads /proc and asks rustc and git.
    pub fn collect() -> MachineInfo {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let git = Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        MachineInfo {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            rustc: version_of("rustc"),
            harness: format!("tickwire-bench {}", env!("CARGO_PKG_VERSION")),
            git,
            date: utc_now(),
        }
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Formats Unix seconds as RFC 3339 UTC.
pub fn format_utc(secs: u64) -> String {
    let rem = secs % 86_400;
    let (y, m, d) = tickwire::files::civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_from_banners() {
        let tw = "tickwire listening on http://127.0.0.1:4242/ (WebSocket: ws://127.0.0.1:4242/ws)";
        assert_eq!(find_ws_url(tw).unwrap(), "ws://127.0.0.1:4242/ws");
        let peer = "listening on ws://127.0.0.1:5151/ws";
        assert_eq!(find_ws_url(peer).unwrap(), "ws://127.0.0.1:5151/ws");
        assert_eq!(find_ws_url("starting"), None);
    }

    #[test]
    fn metrics_parsing() {
        assert_eq!(metrics_addr("ws://127.0.0.1:4242/ws?stamps=1").unwrap(), "127.0.0.1:4242");
        assert_eq!(metrics_addr("wss://x/ws"), None);
        let page = "# TYPE tickwire_slow_disconnects_total counter\n\
                    tickwire_slow_disconnects_total 2\nother{a=\"b\"} 1\n";
        assert_eq!(metric_value(page, "tickwire_slow_disconnects_total"), Some(2.0));
        assert_eq!(metric_value(page, "other"), None);
        let samples = [(0.1, 0.0), (2.4, 1.0), (2.5, 1.0), (2.9, 3.0)];
        assert_eq!(rise_times(&samples, 0.0, 1), [2.4]);
        assert_eq!(rise_times(&samples, 0.0, 3), [2.4, 2.9, 2.9]);
        assert_eq!(rise_times(&samples, 1.0, 3), [2.9, 2.9]);
    }

    #[test]
    fn dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_795_683_479), "2026-11-26T08:57:59Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn own_process_stats() {
        assert!(cpu_seconds("self").is_some());
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
