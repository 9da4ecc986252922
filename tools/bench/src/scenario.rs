//! Scenario files: which servers to measure (targets), which client loads to
//! run against each (cases), and for how long.
//!
//! A scenario is TOML, read with serde into [`RawScenario`] (what the file
//! says) and checked into [`Scenario`] (durations parsed, defaults filled in,
//! every case's mode known). Nothing here starts a process or opens a socket.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A scenario as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    /// Name printed in reports.
    pub name: String,
    /// Passes over every (target, case); the report gives medians.
    #[serde(default = "one")]
    pub runs: u32,
    /// Time after the subscriptions before measuring (`"2s"`, `"500ms"`).
    #[serde(default = "default_warmup")]
    pub warmup: String,
    /// Length of the measured window.
    #[serde(default = "default_duration")]
    pub duration: String,
    /// Client threads (each a current-thread tokio runtime).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Symbols of the synthetic feed, unless a case says otherwise.
    #[serde(default = "default_symbols")]
    pub symbols: u32,
    /// How long `latest`-mode clients get to reach the server's last values.
    #[serde(default = "default_converge")]
    pub converge_timeout: String,
    /// Run the passes round by round (every pair's pass 1, then every
    /// pair's pass 2...) instead of pair by pair.
    #[serde(default)]
    pub interleave: bool,
    /// Sanity checks that fail the run (for CI); none by default.
    #[serde(default)]
    pub assert: Option<Assertions>,
    /// Commands run once before anything else (e.g. building the servers,
    /// so that a stale binary is never measured); any failure stops the run.
    #[serde(default)]
    pub setup: Vec<Vec<String>>,
    /// Servers to measure.
    pub targets: Vec<Target>,
    /// Loads to run against each target.
    pub cases: Vec<Case>,
}

fn one() -> u32 {
    1
}
fn default_warmup() -> String {
    "2s".into()
}
fn default_duration() -> String {
    "8s".into()
}
fn default_threads() -> usize {
    2
}
fn default_symbols() -> u32 {
    1000
}
fn default_converge() -> String {
    "5s".into()
}

/// A server to measure: a command the harness starts once per (case, run),
/// or the URL of a server that is already running.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Name in reports (`tickwire-json`, `node-ws`).
    pub name: String,
    /// Program and arguments. `{symbols}` and `{rate}` are replaced by the
    /// case's values; the program must print a `ws://` URL on stdout (its
    /// first line, for peers) and serve the feed at that rate.
    #[serde(default)]
    pub command: Vec<String>,
    /// A running server instead of a command (its feed must match the
    /// cases' `rate` and `symbols`: the harness cannot set them).
    #[serde(default)]
    pub url: Option<String>,
    /// Its pid, for CPU and RSS (only with `url`).
    #[serde(default)]
    pub pid: Option<u32>,
    /// `json` (default) or `binary` (`tickwire.v1.bin`).
    #[serde(default)]
    pub protocol: Protocol,
    /// Modes the target supports; cases in other modes are skipped for it.
    #[serde(default = "all_modes")]
    pub modes: Vec<Mode>,
    /// A reference server (a peer): the markdown table compares against the
    /// best peer of each row.
    #[serde(default)]
    pub peer: bool,
    /// Whether the server takes symbols by name in `subscribe` (cases with
    /// `subscribe = K` run only on those that do).
    #[serde(default = "yes")]
    pub named_symbols: bool,
    /// Whether every message carries the connection's `cseq`. Servers that
    /// encode a broadcast once for every socket (Socket.IO rooms, Netty's
    /// `ChannelGroup`) cannot: their messages are not checked for `cseq`.
    #[serde(default = "yes")]
    pub cseq: bool,
    /// A command run once before the target's first run (provisioning:
    /// `tools/peers/run PEER --prepare`); if it fails, the target's rows are
    /// "not measured" with its last line of stderr.
    #[serde(default)]
    pub prepare: Vec<String>,
    /// Sessions offer permessage-deflate (and inflate what comes
    /// compressed, see `inflating.rs`).
    #[serde(default)]
    pub compression: bool,
}

fn all_modes() -> Vec<Mode> {
    vec![Mode::All, Mode::Latest]
}

/// Wire format of a target.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `tickwire.v1.json` (or whatever a peer speaks without a subprotocol).
    #[default]
    Json,
    /// `tickwire.v1.bin`.
    Binary,
    /// The same JSON inside Socket.IO 4 packets over Engine.IO v4's
    /// WebSocket transport (`tools/peers/socketio`).
    #[serde(rename = "socketio")]
    SocketIo,
}

/// Subscription mode (protocol `mode`).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every update, or an `overflow` naming what was dropped.
    #[default]
    All,
    /// The newest value per stream, conflated (`cf`), at most `max_hz`.
    Latest,
}

impl Mode {
    /// The protocol's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::All => "all",
            Mode::Latest => "latest",
        }
    }
}

/// One client load.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Name in reports (`c100-r10k`).
    pub name: String,
    /// WebSocket connections.
    pub clients: usize,
    /// Feed updates per second over all symbols (quotes and trades).
    pub rate: u64,
    /// Subscription mode.
    #[serde(default)]
    pub mode: Mode,
    /// Symbols of the feed; default: the scenario's.
    #[serde(default)]
    pub symbols: Option<u32>,
    /// Each client subscribes to this many random symbols; absent: `["*"]`.
    #[serde(default)]
    pub subscribe: Option<u32>,
    /// Skew: the feed picks symbol i (from 0) with probability proportional
    /// to 1/(i+1)^zipf, and `subscribe = K` draws each client's K symbols
    /// with the same weights. Absent: the feed goes round-robin (the
    /// harness's feed, peers) and subscriptions are uniform.
    #[serde(default)]
    pub zipf: Option<f64>,
    /// This share of the clients (spread evenly) subscribe in mode `all`
    /// instead of the case's `mode`: 0.1 for the watchlists' 10%.
    #[serde(default)]
    pub all_share: Option<f64>,
    /// Targets without mode `latest` (peers) still run this case: they get
    /// the same requests, ignore `mode` and `max_hz`, send every update, and
    /// their ideal is every update.
    #[serde(default)]
    pub peers_send_all: bool,
    /// Client sockets bind to 127.0.0.1 .. 127.0.0.N in turn, so that more
    /// connections than the ephemeral port range holds can reach one
    /// server address (default 1: the kernel's choice).
    #[serde(default)]
    pub source_addresses: Option<u8>,
    /// Client processes the sessions are split over (default 1: the
    /// harness's own). A process may hold 20,000 descriptors here.
    #[serde(default)]
    pub client_processes: Option<usize>,
    /// `max_hz` of the subscriptions (mode `latest` only).
    #[serde(default)]
    pub max_hz: Option<f64>,
    /// Check convergence after the window (default: true in mode `latest`).
    #[serde(default)]
    pub converge: Option<bool>,
    /// Extra sessions that subscribe like the others and then never read
    /// (small `SO_RCVBUF`); excluded from every other number. See
    /// `client::Stalled`.
    #[serde(default)]
    pub stalled_clients: usize,
    /// Fail unless every stalled session is closed by the server within
    /// this long after the subscriptions (`"3s"`).
    #[serde(default)]
    pub assert_stalled_closed_within: Option<String>,
    /// Fail when this case's e2e p99 (median over runs) is above
    /// `max_p99_ratio` × that of the named case, same target, same run.
    #[serde(default)]
    pub assert_p99_ratio_vs: Option<String>,
    /// The ratio for `assert_p99_ratio_vs` (default 1.5).
    #[serde(default)]
    pub max_p99_ratio: Option<f64>,
    /// Fail when the server's RSS grows by this many MiB or more in a run
    /// (largest sample of the window − RSS at its start).
    #[serde(default)]
    pub max_rss_growth_mb: Option<f64>,
}

/// Sanity checks of a run (not speed targets).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Assertions {
    /// Delivered / ideal must be at least this (0.9 = 90%); in mode latest,
    /// source coverage (delivered + conflated) is checked instead.
    #[serde(default = "default_min_ratio")]
    pub min_delivered_ratio: f64,
    /// No `seq` jump without an `overflow` (a server bug).
    #[serde(default = "yes")]
    pub no_seq_gaps: bool,
    /// No `cseq` gap (transport loss).
    #[serde(default = "yes")]
    pub no_cseq_gaps: bool,
    /// Every client connected, subscribed and ran to the end.
    #[serde(default = "yes")]
    pub no_failed_clients: bool,
}

fn default_min_ratio() -> f64 {
    0.9
}
fn yes() -> bool {
    true
}

/// A checked scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Name printed in reports.
    pub name: String,
    /// Passes over every (target, case).
    pub runs: u32,
    /// Warm-up before the window.
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    /// The measured window.
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// Client threads.
    pub threads: usize,
    /// Convergence deadline (mode latest).
    #[serde(serialize_with = "secs")]
    pub converge_timeout: Duration,
    /// Passes round by round.
    pub interleave: bool,
    /// Sanity checks, if any.
    pub assert: Option<Assertions>,
    /// Commands to run first.
    pub setup: Vec<Vec<String>>,
    /// Servers.
    pub targets: Vec<Target>,
    /// Loads, with `symbols` filled in.
    pub cases: Vec<Case>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Scenario {
    /// Parses and checks a scenario file's text.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| e.to_string())?;
        Scenario::check(raw)
    }

    /// Checks a raw scenario: durations, names, counts, modes.
    pub fn check(raw: RawScenario) -> Result<Scenario, String> {
        let warmup = parse_duration(&raw.warmup).map_err(|e| format!("warmup: {e}"))?;
        let duration = parse_duration(&raw.duration).map_err(|e| format!("duration: {e}"))?;
        let converge_timeout =
            parse_duration(&raw.converge_timeout).map_err(|e| format!("converge_timeout: {e}"))?;
        if duration.is_zero() {
            return Err("duration must be > 0".into());
        }
        if raw.runs == 0 || raw.threads == 0 {
            return Err("runs and threads must be > 0".into());
        }
        if raw.setup.iter().any(Vec::is_empty) {
            return Err("setup: an empty command".into());
        }
        if raw.targets.is_empty() || raw.cases.is_empty() {
            return Err("a scenario needs at least one target and one case".into());
        }
        let mut names = HashSet::new();
        for t in &raw.targets {
            if !names.insert(&t.name) {
                return Err(format!("target name {:?} used twice", t.name));
            }
            if t.command.is_empty() == t.url.is_none() {
                return Err(format!("target {:?}: give exactly one of command and url", t.name));
            }
            if t.pid.is_some() && t.url.is_none() {
                return Err(format!("target {:?}: pid goes with url", t.name));
            }
            if t.modes.is_empty() {
                return Err(format!("target {:?}: modes is empty", t.name));
            }
        }
        let mut names = HashSet::new();
        let mut cases = raw.cases;
        for c in &mut cases {
            if !names.insert(c.name.clone()) {
                return Err(format!("case name {:?} used twice", c.name));
            }
            if c.clients == 0 || c.rate == 0 {
                return Err(format!("case {:?}: clients and rate must be > 0", c.name));
            }
            if c.max_hz.is_some_and(|h| !(h.is_finite() && h > 0.0)) {
                return Err(format!("case {:?}: max_hz must be > 0", c.name));
            }
            let symbols = *c.symbols.get_or_insert(raw.symbols);
            if symbols == 0 || c.subscribe.is_some_and(|k| k == 0 || k > symbols) {
                return Err(format!("case {:?}: subscribe must be 1..=symbols", c.name));
            }
            if c.zipf.is_some_and(|z| !(z.is_finite() && z > 0.0)) {
                return Err(format!("case {:?}: zipf must be > 0", c.name));
            }
            if c.all_share.is_some_and(|a| !(0.0..=1.0).contains(&a)) {
                return Err(format!("case {:?}: all_share must be 0..=1", c.name));
            }
            if c.client_processes.is_some_and(|p| p == 0 || p > c.clients) {
                return Err(format!("case {:?}: client_processes must be 1..=clients", c.name));
            }
            if c.source_addresses == Some(0) {
                return Err(format!("case {:?}: source_addresses must be 1..=255", c.name));
            }
            if c.converge.unwrap_or(false) && c.mode != Mode::Latest {
                return Err(format!("case {:?}: converge needs mode latest", c.name));
            }
            if let Some(d) = &c.assert_stalled_closed_within {
                parse_duration(d)
                    .map_err(|e| format!("case {:?}: assert_stalled_closed_within: {e}", c.name))?;
                if c.stalled_clients == 0 {
                    return Err(format!(
                        "case {:?}: assert_stalled_closed_within needs stalled_clients",
                        c.name
                    ));
                }
            }
            if c.max_p99_ratio.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return Err(format!("case {:?}: max_p99_ratio must be > 0", c.name));
            }
            if c.max_p99_ratio.is_some() && c.assert_p99_ratio_vs.is_none() {
                return Err(format!("case {:?}: max_p99_ratio needs assert_p99_ratio_vs", c.name));
            }
        }
        for c in &cases {
            if let Some(vs) = &c.assert_p99_ratio_vs
                && (vs == &c.name || !cases.iter().any(|o| &o.name == vs))
            {
                return Err(format!(
                    "case {:?}: assert_p99_ratio_vs: no other case {vs:?}",
                    c.name
                ));
            }
        }
        Ok(Scenario {
            name: raw.name,
            runs: raw.runs,
            warmup,
            duration,
            threads: raw.threads,
            converge_timeout,
            interleave: raw.interleave,
            assert: raw.assert,
            setup: raw.setup,
            targets: raw.targets,
            cases,
        })
    }
}

impl Case {
    /// Symbols of the feed (filled in by [`Scenario::check`]).
    pub fn symbols(&self) -> u32 {
        self.symbols.unwrap_or(1000)
    }

    /// The `assert_stalled_closed_within` limit (checked by
    /// [`Scenario::check`]).
    pub fn stalled_close_limit(&self) -> Option<Duration> {
        self.assert_stalled_closed_within.as_deref().and_then(|d| parse_duration(d).ok())
    }

    /// Whether the run ends with a convergence check.
    pub fn converges(&self) -> bool {
        self.converge.unwrap_or(self.mode == Mode::Latest)
    }

    /// Fraction of the feed one client subscribes to. The synthetic feed
    /// spreads updates over symbols unevenly, so with `subscribe = K` this
    /// is an estimate (K / symbols).
    pub fn share(&self) -> f64 {
        self.subscribe.map_or(1.0, |k| f64::from(k) / f64::from(self.symbols()))
    }

    /// Ideal delivered messages per second over all clients.
    ///
    /// - `all`: every update of the subscribed symbols to every client,
    ///   C × R × share.
    /// - `latest` without `max_hz`: the same (conflation is what the server
    ///   does when a client cannot take that).
    /// - `latest` with `max_hz`: at most `max_hz` per (channel, symbol), so
    ///   per client min(R × share, 2 × K × max_hz) (quotes and trades are two
    ///   streams per symbol); an upper bound, since quiet streams update
    ///   less often than `max_hz`.
    pub fn ideal_per_s(&self) -> f64 {
        let per_client_feed = self.rate as f64 * self.share();
        let k = f64::from(self.subscribe.unwrap_or(self.symbols()));
        let per_client = match (self.mode, self.max_hz) {
            (Mode::Latest, Some(hz)) => per_client_feed.min(2.0 * k * hz),
            _ => per_client_feed,
        };
        per_client * self.clients as f64
    }

    /// Source updates per second the clients' subscriptions cover
    /// (delivered + conflated should reach it in mode `latest`).
    pub fn source_per_s(&self) -> f64 {
        self.rate as f64 * self.share() * self.clients as f64
    }
}

impl Target {
    /// The command line for a case, placeholders replaced.
    pub fn argv(&self, case: &Case) -> Vec<String> {
        self.command
            .iter()
            .map(|a| {
                a.replace("{symbols}", &case.symbols().to_string())
                    .replace("{rate}", &case.rate.to_string())
                    .replace("{zipf}", &case.zipf.unwrap_or(0.0).to_string())
            })
            .collect()
    }

    /// Whether this target runs `case`.
    pub fn supports(&self, case: &Case) -> bool {
        let mode = self.modes.contains(&case.mode) || case.peers_send_all;
        let hz = case.max_hz.is_none() || self.conflates() || case.peers_send_all;
        mode && hz && (case.subscribe.is_none() || self.named_symbols)
    }

    /// Whether the target conflates (mode `latest`, `max_hz`); one that
    /// does not sends every update to everyone.
    pub fn conflates(&self) -> bool {
        self.modes.contains(&Mode::Latest)
    }
}

/// Parses `2s`, `500ms`, `1m`, or a bare number of seconds (the server's
/// own parser, so scenario files and flags read the same).
pub use tickwire::config::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = r#"
        name = "mini"
        runs = 3
        warmup = "500ms"
        duration = "2s"
        setup = [["cargo", "build", "--release"]]
        [[targets]]
        name = "tw"
        command = ["target/release/tickwire", "serve", "--symbols", "{symbols}", "--rate", "{rate}"]
        [[targets]]
        name = "peer"
        command = ["node", "server.js"]
        modes = ["all"]
        peer = true
        [[cases]]
        name = "a"
        clients = 10
        rate = 1000
        [[cases]]
        name = "b"
        clients = 100
        rate = 200000
        mode = "latest"
        symbols = 50
    "#;

    #[test]
    fn parses_and_fills_defaults() {
        let s = Scenario::parse(MINI).unwrap();
        assert_eq!(s.runs, 3);
        assert_eq!(s.setup, [["cargo", "build", "--release"]]);
        assert_eq!(s.warmup, Duration::from_millis(500));
        assert_eq!(s.threads, 2);
        assert_eq!(s.cases[0].symbols(), 1000);
        assert_eq!(s.cases[1].symbols(), 50);
        assert_eq!(s.cases[0].mode, Mode::All);
        assert!(s.cases[1].converges() && !s.cases[0].converges());
        assert_eq!(
            s.targets[0].argv(&s.cases[1]),
            ["target/release/tickwire", "serve", "--symbols", "50", "--rate", "200000"]
        );
        assert!(s.targets[1].supports(&s.cases[0]) && !s.targets[1].supports(&s.cases[1]));
        assert_eq!(s.targets[0].protocol, Protocol::Json);
    }

    #[test]
    fn ideal_rates() {
        let s = Scenario::parse(MINI).unwrap();
        assert_eq!(s.cases[0].ideal_per_s(), 10_000.0);
        let mut c = s.cases[1].clone();
        assert_eq!(c.ideal_per_s(), 20_000_000.0);
        c.max_hz = Some(10.0);
        assert_eq!(c.ideal_per_s(), 100.0 * 2.0 * 50.0 * 10.0);
        c.subscribe = Some(5);
        assert_eq!(c.share(), 0.1);
        assert_eq!(c.ideal_per_s(), 100.0 * 100.0); // 2 x 5 x 10 Hz per client
    }

    #[test]
    fn rejects_mistakes() {
        let bad = |from: &str, to: &str| Scenario::parse(&MINI.replacen(from, to, 1)).unwrap_err();
        assert!(bad("runs = 3", "runs = 0").contains("runs"));
        assert!(bad("duration = \"2s\"", "duration = \"soon\"").contains("duration"));
        assert!(bad("name = \"peer\"", "name = \"tw\"").contains("twice"));
        assert!(bad("clients = 10", "clients = 0").contains("clients"));
        assert!(bad("mode = \"latest\"", "mode = \"newest\"").contains("newest"));
        assert!(bad("rate = 1000", "rate = 1000\nbogus = 1").contains("bogus"));
        assert!(bad("symbols = 50", "symbols = 50\nsubscribe = 51").contains("subscribe"));
        let vs = "rate = 1000\nassert_p99_ratio_vs = \"zz\"";
        assert!(bad("rate = 1000", vs).contains("no other case"));
        let within = "rate = 1000\nassert_stalled_closed_within = \"3s\"";
        assert!(bad("rate = 1000", within).contains("needs stalled_clients"));
    }

    #[test]
    fn stalled_options() {
        let extra = "rate = 1000\nstalled_clients = 1\nassert_stalled_closed_within = \"3s\"\n\
                     assert_p99_ratio_vs = \"b\"\nmax_p99_ratio = 1.5\nmax_rss_growth_mb = 16";
        let s = Scenario::parse(&MINI.replacen("rate = 1000", extra, 1)).unwrap();
        let c = &s.cases[0];
        assert_eq!(c.stalled_clients, 1);
        assert_eq!(c.stalled_close_limit(), Some(Duration::from_secs(3)));
        assert_eq!(c.assert_p99_ratio_vs.as_deref(), Some("b"));
        assert_eq!((c.max_p99_ratio, c.max_rss_growth_mb), (Some(1.5), Some(16.0)));
        assert_eq!(s.cases[1].stalled_clients, 0);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = format!("{}/scenarios", env!("CARGO_MANIFEST_DIR"));
        let mut n = 0;
        for f in std::fs::read_dir(&dir).unwrap() {
            let path = f.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                Scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 3, "the shipped scenarios are in {dir}");
    }
}
