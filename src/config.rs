//! The command line ([`Args`], raw flags as typed, no I/O) and the validated
//! [`Config`] the server runs with. Every default is explained where it is
//! set.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::auth::jwt::JwtAlg;
use crate::auth::{AuthConfig, JwtConfig, normalize_origin};
use crate::bus::BusConfig;
use crate::feed::itch::clock::parse_date;
use crate::feed::replay::{ReplayConfig, Speed, TimeShift, Window, parse_time_of_day};
use crate::feed::synthetic::SyntheticConfig;
use crate::writer::shard::ShardConfig;

/// tickwire: a market-data streaming server.
#[derive(Debug, Parser)]
#[command(name = "tickwire", version, about, long_about = None)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
// Parsed once at start: the size of the `serve` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve market data over WebSocket (and HTTP on the same port); with
    /// `--nats`, as an edge whose feed is the bus.
    Serve(ServeArgs),
    /// Read one feed, number it and publish it on NATS for edges
    /// (`serve --nats`), serving it here too.
    Ingest(IngestArgs),
    /// Record a feed (synthetic, replayed or live) into a file.
    Record(RecordArgs),
    /// Convert a feed file to another format (ITCH, capture or JSON lines
    /// in; capture or JSON lines out).
    Convert(ConvertArgs),
    /// Summarize a feed file: counts by type and symbol, time range, rate,
    /// skipped records.
    Inspect(InspectArgs),
    /// Print the SHA-256 (hex) of an API key read from standard input, as
    /// the `sha256` of a line of the `--api-keys` file.
    HashKey,
}

/// Flags of `tickwire record`, as typed.
#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    /// The file to write: `.twc` for a capture, `.jsonl` (or `.jsonl.gz`)
    /// for JSON lines.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Output format when the name does not say: `capture` or `jsonl`.
    #[arg(long)]
    pub format: Option<String>,
    /// Stop after this long (`500ms`, `10s`, `2m`, `1h`); default: until the
    /// source ends or SIGINT/SIGTERM.
    #[arg(long)]
    pub duration: Option<String>,
    /// The feed source.
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Flags of `tickwire convert`, as typed.
#[derive(Debug, Clone, clap::Args)]
pub struct ConvertArgs {
    /// The input file (format detected from the content).
    pub input: PathBuf,
    /// The output file: `.twc` for a capture, `.jsonl` (or `.jsonl.gz`) for
    /// JSON lines.
    pub output: PathBuf,
    /// Output format when the name does not say: `capture` or `jsonl`.
    #[arg(long)]
    pub format: Option<String>,
    /// The trading day of an ITCH input (YYYY-MM-DD), instead of the date in
    /// its name (`MMDDYYYY.NASDAQ_ITCH50`).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    pub date: Option<jiff::civil::Date>,
}

/// Flags of `tickwire inspect`, as typed.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// The feed file (format detected from the content).
    pub file: PathBuf,
    /// The trading day of an ITCH file (YYYY-MM-DD), instead of the date in
    /// its name (`MMDDYYYY.NASDAQ_ITCH50`).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    pub date: Option<jiff::civil::Date>,
}

/// Flags that choose and shape the feed source, as typed (shared by
/// `serve` and `record`).
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Synthetic feed: number of symbols.
    #[arg(long, default_value_t = 500)]
    pub symbols: usize,
    /// Synthetic feed: updates per second over all symbols.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Synthetic feed: random seed (same seed, same market).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Synthetic feed: run the first 100 ms of every second at this many times the rate.
    #[arg(long)]
    pub burst: Option<f64>,
    /// Serve a recorded feed from FILE instead of the synthetic feed (JSON
    /// lines, a capture or NASDAQ ITCH 5.0, optionally gzip-compressed; the
    /// format is detected from the content).
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Replay pace: a factor of the recorded pace (2 = twice as fast), or `max` for no pacing.
    #[arg(long, default_value = "1", requires = "replay")]
    pub speed: String,
    /// Start the replay over at the end of the file, under a new epoch
    /// (sessions are asked to reconnect: `shutdown`, close 1012).
    #[arg(long = "loop", requires = "replay")]
    pub looped: bool,
    /// Replay only from this time of day of the file (HH:MM:SS[.fff]).
    #[arg(long, value_name = "TIME", requires = "replay")]
    pub from: Option<String>,
    /// Replay only up to this time of day of the file (HH:MM:SS[.fff]).
    #[arg(long, value_name = "TIME", requires = "replay")]
    pub to: Option<String>,
    /// The trading day of an ITCH replay (YYYY-MM-DD): its timestamps are ns
    /// since midnight of that day in New York. Wins over the date in the
    /// file's name (`MMDDYYYY.NASDAQ_ITCH50`); without either, 1970-01-01.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date, requires = "replay")]
    pub date: Option<jiff::civil::Date>,
    /// Move every source time `t` of the replay by one constant: a duration
    /// (`90m`, `-2h`, `1.5s`), or `now` to make each pass's first record
    /// read the wall clock when the pass starts.
    #[arg(long, value_name = "now|DURATION", value_parser = parse_time_shift, allow_hyphen_values = true, requires = "replay")]
    pub time_shift: Option<TimeShift>,
    /// Ingest a live feed of JSON lines from an upstream TCP server at
    /// HOST:PORT (reconnects with capped, jittered backoff).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "replay")]
    pub tcp_feed: Option<String>,
}

/// Flags of `tickwire serve`, as typed.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The feed source.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Address to listen on (port 0 picks a free port; the bound URL is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Writer shards (threads); default: one per core.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub hb_ms: u64,
    /// Most symbols one connection may subscribe to by name (`limits.symbols`).
    #[arg(long, default_value_t = 1000)]
    pub max_subscriptions: usize,
    /// Inbound messages allowed per second per connection (`limits.msgs_in_per_s`).
    #[arg(long, default_value_t = 50)]
    pub msgs_in_per_s: u32,
    /// Largest inbound text message in bytes (`limits.max_message_bytes`); larger closes with 1009.
    #[arg(long, default_value_t = 65536)]
    pub max_message_bytes: usize,
    /// Ring capacity in ticks (rounded up to a power of two).
    #[arg(long, default_value_t = 65536)]
    pub ring_capacity: usize,
    /// Most symbols the server can know.
    #[arg(long, default_value_t = 65536)]
    pub max_symbols: usize,
    /// Updates queued per session in mode "all" before they are dropped and reported as overflow.
    #[arg(long, default_value_t = 4096)]
    pub all_queue: usize,
    /// Recent updates kept per (channel, symbol) stream for clients that
    /// resume after a reconnect (`limits.history`); 0 keeps none.
    #[arg(long, default_value_t = 256)]
    pub history: usize,
    /// Refuse `["*"]` subscriptions (403): clients must name their symbols.
    #[arg(long)]
    pub no_wildcard: bool,
    /// Most connections the server holds; more are answered 503 before the upgrade.
    #[arg(long, default_value_t = 10000)]
    pub max_connections: usize,
    /// Most connections from one client IP address; more are answered 503.
    #[arg(long, default_value_t = 1000)]
    pub max_connections_per_ip: usize,
    /// SO_SNDBUF of client sockets in bytes; 0 leaves it to the kernel's autotuning.
    #[arg(long, default_value_t = 131072)]
    pub send_buffer: usize,
    /// Per-session share (µs) of the longest time a busy shard holds updates
    /// back so that they share frames: more batches more updates per frame
    /// (less CPU per message), less cuts latency. Updates are held only
    /// while at least two more per session are expected within that time
    /// (see `writer::pacer`).
    #[arg(long, default_value_t = 48)]
    pub flush_share_us: u64,
    /// Close a session (4008) whose oldest unwritten frame has waited this long (ms) for its socket.
    #[arg(long, default_value_t = 5000)]
    pub lag_limit_ms: u64,
    /// Hold the replay until the first subscription arrives.
    #[arg(long, requires = "replay")]
    pub wait_for_subscriber: bool,
    /// Serve TLS only (`https://`, `wss://`) with this PEM certificate chain
    /// (leaf first). Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Authentication, entitlements, Origin allow-list, audit log.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Conformance aid: also serve `/echo`, a WebSocket endpoint that echoes
    /// every message back, for the Autobahn test suite (`tools/autobahn.sh`).
    /// Off by default (`/echo` is then a 404).
    #[arg(long)]
    pub echo_endpoint: bool,
    /// permessage-deflate (RFC 7692) with clients that offer it: `on` or
    /// `off` (each compressing connection holds about 16 KiB more).
    #[arg(long, default_value = "off", value_parser = ["on", "off"])]
    pub compression: String,
    /// The server's compression window in bits (9 to 15); a client may ask for less.
    #[arg(long, default_value_t = 12)]
    pub compression_window_bits: u8,
    /// Scale-out: the NATS server of the bus (`nats://HOST:PORT`). On
    /// `serve` the bus is the feed source (an edge node); on `ingest` it is
    /// where the feed is published.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// The node's name in `welcome.node` (with --nats); default: the host
    /// name and the listening port.
    #[arg(long, value_name = "NAME", requires = "nats")]
    pub node_name: Option<String>,
}

/// Flags of `tickwire ingest`, as typed: those of `serve` (the source, and
/// what its own `/ws` serves) with a required `--nats`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// The server's flags (`--nats` is required here).
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Shortest time (ms) between two updates of one stream's latest value
    /// in JetStream.
    #[arg(long, default_value_t = 250)]
    pub lvc_ms: u64,
}

impl Default for ServeArgs {
    fn default() -> Self {
        match Args::parse_from(["tickwire", "serve"]).command {
            Command::Serve(a) => a,
            _ => unreachable!("parsed a serve command"),
        }
    }
}

/// Parses a duration as the command-line tools take it: `500ms`, `10s`,
/// `2m`, `1h`, or plain seconds (`1.5`); zero included, negative and
/// absurd (a billion seconds or more) refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a duration such as 500ms, 10s, 2m or 1h");
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    let secs = v * scale;
    if !(0.0..1e9).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Authentication flags of `tickwire serve`, as typed.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// Require an API key from FILE (JSON lines: id, sha256 of the key,
    /// symbols, channels); reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub api_keys: Option<PathBuf>,
    /// Accept HS256 JWTs signed with the secret in FILE (at least 32
    /// bytes); reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", conflicts_with = "jwt_rs256_public_key")]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// Accept RS256 JWTs verified with the PEM public key in FILE; reloaded
    /// on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub jwt_rs256_public_key: Option<PathBuf>,
    /// Require this `aud` in JWTs.
    #[arg(long)]
    pub jwt_audience: Option<String>,
    /// Require this `iss` in JWTs.
    #[arg(long)]
    pub jwt_issuer: Option<String>,
    /// Milliseconds a session without a token in its upgrade gets to send `auth`.
    #[arg(long, default_value_t = 5000)]
    pub auth_timeout_ms: u64,
    /// Failed authentications from one client IP within
    /// --auth-failure-window-ms after which its upgrades get HTTP 429 for
    /// one window; 0: no limit.
    #[arg(long, default_value_t = crate::auth::failures::DEFAULT_MAX_FAILURES)]
    pub auth_max_failures: u32,
    /// The window of --auth-max-failures, in milliseconds (also how long a
    /// blocked IP stays blocked).
    #[arg(long, default_value_t = crate::auth::failures::DEFAULT_WINDOW.as_millis() as u64)]
    pub auth_failure_window_ms: u64,
    /// Browser origins allowed to connect (comma-separated `scheme://host[:port]`);
    /// a request with any other `Origin` gets HTTP 403. Default: any.
    #[arg(long, value_name = "ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Append audit events (JSON lines) to FILE.
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
}

impl AuthArgs {
    /// Checks the flags (no file is read here).
    pub fn config(&self) -> Result<AuthConfig, ConfigError> {
        let invalid = |flag, msg: String| ConfigError { flag, msg };
        let jwt = match (&self.jwt_hs256_secret_file, &self.jwt_rs256_public_key) {
            (Some(f), _) => Some((JwtAlg::Hs256, f.clone())),
            (None, Some(f)) => Some((JwtAlg::Rs256, f.clone())),
            (None, None) => None,
        };
        if jwt.is_none() && (self.jwt_audience.is_some() || self.jwt_issuer.is_some()) {
            let flag = if self.jwt_audience.is_some() { "jwt-audience" } else { "jwt-issuer" };
            return Err(invalid(
                flag,
                "needs --jwt-hs256-secret-file or --jwt-rs256-public-key".into(),
            ));
        }
        if self.auth_timeout_ms == 0 {
            return Err(invalid("auth-timeout-ms", "must be > 0".into()));
        }
        if self.auth_failure_window_ms == 0 {
            return Err(invalid("auth-failure-window-ms", "must be > 0".into()));
        }
        let allowed_origins = self
            .allowed_origins
            .iter()
            .filter(|o| !o.trim().is_empty())
            .map(|o| {
                normalize_origin(o).ok_or_else(|| {
                    invalid("allowed-origins", format!("{o:?} is not scheme://host[:port]"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AuthConfig {
            api_keys: self.api_keys.clone(),
            jwt: jwt.map(|(alg, key_file)| JwtConfig {
                alg,
                key_file,
                audience: self.jwt_audience.clone(),
                issuer: self.jwt_issuer.clone(),
            }),
            timeout: Duration::from_millis(self.auth_timeout_ms),
            max_failures: self.auth_max_failures,
            failure_window: Duration::from_millis(self.auth_failure_window_ms),
            allowed_origins,
            audit_log: self.audit_log.clone(),
        })
    }
}

/// Parses `--time-shift`: `now`, or a duration as [`parse_duration`] takes
/// it with an optional sign (`-2h` moves times back).
pub fn parse_time_shift(s: &str) -> Result<TimeShift, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(TimeShift::Now);
    }
    let (sign, d) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let ns = parse_duration(d)
        .map_err(|_| format!("{s:?} is neither \"now\" nor a duration such as 90m, -2h or 1.5s"))?
        .as_nanos();
    // parse_duration keeps durations under a billion seconds, well inside i64 ns.
    Ok(TimeShift::By(sign * ns as i64))
}

/// A flag value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid --{flag}: {msg}")]
pub struct ConfigError {
    /// The flag, without dashes.
    pub flag: &'static str,
    /// What is wrong with it.
    pub msg: String,
}

fn invalid(flag: &'static str, msg: impl Into<String>) -> ConfigError {
    ConfigError { flag, msg: msg.into() }
}

/// The feed source of a server.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceChoice {
    /// The seeded random walk of [`Config::synthetic`] (the default).
    Synthetic,
    /// A recorded feed (`--replay FILE`).
    Replay(ReplayConfig),
    /// A live feed of JSON lines from an upstream (`--tcp-feed HOST:PORT`).
    Tcp(String),
}

/// The certificate and key files of a TLS server (read at startup, by
/// [`crate::server::start`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
}

/// Validated settings of a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Number of writer shards.
    pub shards: usize,
    /// Which feed source the server runs.
    pub source: SourceChoice,
    /// The synthetic feed, when it is the source.
    pub synthetic: SyntheticConfig,
    /// Ring capacity (power of two). 65,536 ticks is 4 MiB and a third of a
    /// second at 200,000 updates/s: a shard must stall that long to be lapped.
    pub ring_capacity: usize,
    /// Capacity of the symbol and latest-value tables. 65,536 covers every
    /// US equity (about 12,000) with room for a live feed's new names.
    pub max_symbols: usize,
    /// Recent updates kept per stream for resume (`--history`). 256 is
    /// 16 KiB per stream that has updated (32 MiB for 1,000 symbols with
    /// quotes and trades), and covers a reconnect of several seconds on a
    /// stream updating 50 times a second: see BENCHMARKS.md, "Resume".
    pub history: usize,
    /// Per-session settings.
    pub shard: ShardConfig,
    /// Deadline for a client to finish the TLS handshake (when TLS is on)
    /// and send its request head: 10 s is ample on any real link, and a
    /// client that holds a connection open without finishing (slowloris)
    /// is dropped then.
    pub handshake_timeout: Duration,
    /// Serve TLS only, with these files (`--tls-cert`, `--tls-key`); `None`:
    /// plain TCP.
    pub tls: Option<TlsFiles>,
    /// Most connections in total (10,000: about 1 GB at the measured ~0.1-0.9
    /// MB per subscribed connection) and per client IP (1,000: one host
    /// cannot take the whole server; a load test from one address needs
    /// more).
    pub max_connections: usize,
    /// See `max_connections`.
    pub max_connections_per_ip: usize,
    /// `SO_SNDBUF` of client sockets. The kernel's autotuning lets a
    /// socket queue megabytes for a reader that is behind, and every byte
    /// queued there is old news by the time it is read. A bounded send
    /// buffer makes the socket report "full" early, so the shard conflates
    /// (`latest`) or reports drops (`all`) instead. 128 KiB (the kernel
    /// doubles it) still fills a LAN link; raise it for high-latency links.
    /// `None`: leave it to the kernel.
    pub send_buffer: Option<usize>,
    /// How long sessions get to close on shutdown (the process exits within
    /// about this plus a few hundred ms).
    pub drain: Duration,
    /// Authentication and the audit log (off by default).
    pub auth: crate::auth::AuthConfig,
    /// Whether `/echo` is served ([`crate::socket::echo`]). Off by default:
    /// it is a conformance aid, and an echo open to anyone is a free
    /// bandwidth reflector.
    pub echo_endpoint: bool,
    /// permessage-deflate with clients that offer it (`None`: declined).
    /// Off by default, because it meets two of issue 19's three targets
    /// by far but misses the third for JSON (BENCHMARKS.md,
    /// "permessage-deflate"): a JSON `["*"]` stream takes 0.33 of its bytes
    /// (target 0.6) and a compressing connection holds 18 KiB more (target
    /// 32 KiB), but the server's CPU per delivered JSON message is about
    /// 1.5 times the row without (1.56 on the cleanest run; target 1.5;
    /// binary 1.25 to 1.38). Window 12 compresses tickwire's frames within
    /// 2 points of window 15 for a quarter of the memory; window 9 loses 4
    /// points.
    pub compression: Option<crate::socket::deflate::Settings>,
    /// Scale-out: this node's part on the bus (`None`: a single server).
    pub bus: Option<BusRole>,
    /// The name in `welcome.node` (`--node-name`; with a bus and no name,
    /// [`crate::server::start`] names it after the host and the port).
    pub node_name: Option<String>,
}

/// A server's part on the NATS bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusRole {
    /// `tickwire ingest`: publishes its feed.
    Ingest(BusConfig),
    /// `tickwire serve --nats`: an edge, the bus is its feed source.
    Edge(BusConfig),
}

impl Default for Config {
    fn default() -> Self {
        Config::from_args(&ServeArgs::default()).expect("defaults are valid")
    }
}

impl SourceArgs {
    /// Checks the source flags: the source, and the synthetic feed's
    /// settings (used when it is the source). `max_symbols` bounds the
    /// synthetic feed's symbol count.
    pub fn choice(
        &self,
        wait_for_subscriber: bool,
        max_symbols: usize,
    ) -> Result<(SourceChoice, SyntheticConfig), ConfigError> {
        let a = self;
        if !(a.rate.is_finite() && a.rate > 0.0) {
            return Err(invalid("rate", "must be a number > 0"));
        }
        if a.symbols == 0 || a.symbols > max_symbols {
            return Err(invalid("symbols", format!("must be 1..={}", max_symbols)));
        }
        if let Some(b) = a.burst
            && !(b.is_finite() && b >= 1.0)
        {
            return Err(invalid("burst", "must be a factor >= 1"));
        }
        let source = match &a.replay {
            None => SourceChoice::Synthetic,
            Some(path) => {
                let time = |flag, v: &Option<String>| {
                    v.as_deref().map(parse_time_of_day).transpose().map_err(|e| invalid(flag, e))
                };
                let window = Window { from: time("from", &a.from)?, to: time("to", &a.to)? };
                if let (Some(f), Some(t)) = (window.from, window.to)
                    && f > t
                {
                    return Err(invalid("to", "must not be earlier than --from"));
                }
                SourceChoice::Replay(ReplayConfig {
                    path: path.clone(),
                    date: a.date,
                    speed: a.speed.parse::<Speed>().map_err(|e| invalid("speed", e))?,
                    shift: a.time_shift.unwrap_or_default(),
                    wait_for_subscriber,
                    looped: a.looped,
                    window,
                })
            }
        };
        let source = match &a.tcp_feed {
            None => source,
            Some(addr) => {
                if addr
                    .rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
                {
                    return Err(invalid("tcp-feed", format!("{addr:?} is not HOST:PORT")));
                }
                SourceChoice::Tcp(addr.clone())
            }
        };
        let synthetic =
            SyntheticConfig { symbols: a.symbols, rate: a.rate, seed: a.seed, burst: a.burst };
        Ok((source, synthetic))
    }
}

impl Config {
    /// Checks the flags and derives the settings.
    pub fn from_args(a: &ServeArgs) -> Result<Config, ConfigError> {
        let listen: SocketAddr =
            a.listen.parse().map_err(|e| invalid("listen", format!("{:?}: {e}", a.listen)))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = a.shards.unwrap_or(cores);
        if !(1..=256).contains(&shards) {
            return Err(invalid("shards", "must be 1..=256"));
        }
        if a.max_symbols == 0 || a.max_symbols > 1 << 24 {
            return Err(invalid("max-symbols", "must be 1..=16777216"));
        }
        if a.hb_ms == 0 {
            return Err(invalid("hb-ms", "must be > 0"));
        }
        if a.ring_capacity < 2 || a.ring_capacity > 1 << 26 {
            return Err(invalid("ring-capacity", "must be 2..=67108864"));
        }
        if a.max_message_bytes < 256 {
            return Err(invalid("max-message-bytes", "must be at least 256"));
        }
        if a.msgs_in_per_s == 0 {
            return Err(invalid("msgs-in-per-s", "must be > 0"));
        }
        if a.all_queue == 0 {
            return Err(invalid("all-queue", "must be > 0"));
        }
        if a.history > 1 << 16 {
            return Err(invalid("history", "must be 0..=65536"));
        }
        if !(9..=15).contains(&a.compression_window_bits) {
            return Err(invalid("compression-window-bits", "must be 9..=15"));
        }
        let (source, synthetic) = a.source.choice(a.wait_for_subscriber, a.max_symbols)?;
        Ok(Config {
            listen,
            shards,
            source,
            synthetic,
            ring_capacity: a.ring_capacity.next_power_of_two(),
            max_symbols: a.max_symbols,
            history: a.history,
            shard: ShardConfig {
                hb: Duration::from_millis(a.hb_ms),
                max_symbols: a.max_subscriptions,
                msgs_in_per_s: a.msgs_in_per_s,
                max_message_bytes: a.max_message_bytes,
                allow_wildcard: !a.no_wildcard,
                queue_cap: a.all_queue,
                lag_limit: Duration::from_millis(a.lag_limit_ms.max(1)),
                slow_warn: Duration::from_millis((a.lag_limit_ms / 5).max(1)),
                flush_share: Duration::from_micros(a.flush_share_us),
                ..ShardConfig::default()
            },
            send_buffer: (a.send_buffer > 0).then_some(a.send_buffer),
            max_connections: a.max_connections.max(1),
            max_connections_per_ip: a.max_connections_per_ip.max(1),
            handshake_timeout: Duration::from_secs(10),
            tls: match (&a.tls_cert, &a.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.clone(), key: key.clone() }),
                (None, None) => None,
                // clap's `requires` already refuses one without the other.
                _ => return Err(invalid("tls-cert", "--tls-cert and --tls-key go together")),
            },
            drain: Duration::from_millis(1500),
            auth: a.auth.config()?,
            echo_endpoint: a.echo_endpoint,
            compression: (a.compression == "on").then_some(crate::socket::deflate::Settings {
                window_bits: a.compression_window_bits,
            }),
            bus: match &a.nats {
                None => None,
                Some(url) => {
                    if a.source.replay.is_some() || a.source.tcp_feed.is_some() {
                        return Err(invalid(
                            "nats",
                            "an edge's feed is the bus: drop --replay and --tcp-feed (or run `tickwire ingest`)",
                        ));
                    }
                    Some(BusRole::Edge(bus_config(url, a.hb_ms, 250)?))
                }
            },
            node_name: a.node_name.clone(),
        })
    }

    /// Checks the flags of `tickwire ingest`.
    pub fn from_ingest_args(a: &IngestArgs) -> Result<Config, ConfigError> {
        let Some(url) = &a.serve.nats else {
            return Err(invalid("nats", "ingest needs --nats nats://HOST:PORT"));
        };
        if a.lvc_ms == 0 {
            return Err(invalid("lvc-ms", "must be > 0"));
        }
        let serve = ServeArgs { nats: None, ..a.serve.clone() };
        let mut config = Config::from_args(&serve)?;
        config.bus = Some(BusRole::Ingest(bus_config(url, a.serve.hb_ms, a.lvc_ms)?));
        Ok(config)
    }
}

/// The bus settings from `--nats`, `--hb-ms` and `--lvc-ms`.
fn bus_config(url: &str, hb_ms: u64, lvc_ms: u64) -> Result<BusConfig, ConfigError> {
    let rest = url.strip_prefix("nats://").unwrap_or(url);
    if rest.is_empty() || rest.contains('/') || rest.contains(' ') {
        return Err(invalid("nats", format!("{url:?} is not nats://HOST:PORT")));
    }
    Ok(BusConfig {
        url: url.to_string(),
        hb: Duration::from_millis(hb_ms),
        lvc_every: Duration::from_millis(lvc_ms),
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn flags_are_checked() {
        use clap::Parser;
        let parse = |argv: &[&str]| match Args::try_parse_from(argv).map(|a| a.command) {
            Ok(Command::Serve(a)) => Config::from_args(&a).map(|c| c.auth).map_err(|e| e.flag),
            _ => Err("clap"),
        };
        // Off by default.
        assert_eq!(parse(&["t", "serve"]), Ok(AuthConfig::default()));
        let c = parse(&[
            "t",
            "serve",
            "--api-keys",
            "k.jsonl",
            "--jwt-hs256-secret-file",
            "s",
            "--jwt-audience",
            "a",
            "--auth-timeout-ms",
            "250",
            "--auth-max-failures",
            "3",
            "--auth-failure-window-ms",
            "1500",
            "--allowed-origins",
            "https://A.example:443,http://b:8080",
        ])
        .unwrap();
        assert_eq!(c.jwt.map(|j| (j.alg, j.audience)), Some((JwtAlg::Hs256, Some("a".into()))));
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!((c.max_failures, c.failure_window), (3, Duration::from_millis(1500)));
        assert_eq!(c.allowed_origins, ["https://a.example", "http://b:8080"]);
        // Audience without a JWT key, two JWT keys, a bad origin, a zero timeout.
        assert_eq!(parse(&["t", "serve", "--jwt-audience", "a"]), Err("jwt-audience"));
        let two = ["t", "serve", "--jwt-hs256-secret-file", "s", "--jwt-rs256-public-key", "p"];
        assert_eq!(parse(&two), Err("clap"));
        assert_eq!(
            parse(&["t", "serve", "--allowed-origins", "example.com"]),
            Err("allowed-origins")
        );
        assert_eq!(parse(&["t", "serve", "--auth-timeout-ms", "0"]), Err("auth-timeout-ms"));
        assert_eq!(
            parse(&["t", "serve", "--auth-failure-window-ms", "0"]),
            Err("auth-failure-window-ms")
        );
        // 0 failures is allowed: it turns the limit off.
        assert_eq!(
            parse(&["t", "serve", "--auth-max-failures", "0"]).map(|c| c.max_failures),
            Ok(0)
        );
    }

    use super::*;

    #[test]
    fn defaults_match_the_design_card() {
        let c = Config::default();
        // `tickwire serve` listens on 127.0.0.1:8080 by default.
        assert_eq!(c.listen, "127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap());
        assert!(c.shards >= 1);
        assert!(c.ring_capacity.is_power_of_two());
    }

    #[test]
    fn bad_flags_name_themselves() {
        let mut a = ServeArgs::default();
        a.source.rate = 0.0;
        // The error says which flag to fix.
        assert_eq!(Config::from_args(&a).unwrap_err().flag, "rate");
        let a = ServeArgs { listen: "nope".into(), ..ServeArgs::default() };
        assert_eq!(Config::from_args(&a).unwrap_err().flag, "listen");
        let mut a = ServeArgs::default();
        a.source.replay = Some("f.jsonl".into());
        a.source.speed = "0".into();
        assert_eq!(Config::from_args(&a).unwrap_err().flag, "speed");
    }

    #[test]
    fn replay_flags() {
        // The synthetic feed is the default source.
        assert_eq!(Config::default().source, SourceChoice::Synthetic);
        let parse = |argv: &[&str]| match Args::try_parse_from(argv).map(|a| a.command) {
            Ok(Command::Serve(a)) => Config::from_args(&a).map(|c| c.source).ok(),
            _ => None,
        };
        let c = parse(&["tickwire", "serve", "--replay", "x.jsonl", "--speed", "max"]);
        assert_eq!(
            c,
            Some(SourceChoice::Replay(ReplayConfig {
                path: "x.jsonl".into(),
                date: None,
                speed: Speed::Max,
                shift: TimeShift::By(0),
                wait_for_subscriber: false,
                looped: false,
                window: Window::default(),
            }))
        );
        let c = parse(&["tickwire", "serve", "--replay", "x", "--wait-for-subscriber"]);
        let Some(SourceChoice::Replay(r)) = c else { panic!("{c:?}") };
        assert_eq!((r.speed, r.wait_for_subscriber), (Speed::Factor(1.0), true));
        // Replay options need --replay.
        assert_eq!(parse(&["tickwire", "serve", "--speed", "2"]), None);
        assert_eq!(parse(&["tickwire", "serve", "--loop"]), None);
        let c = parse(&[
            "tickwire",
            "serve",
            "--replay",
            "x",
            "--loop",
            "--from",
            "09:30",
            "--to",
            "09:31:00.5",
        ]);
        let Some(SourceChoice::Replay(r)) = c else { panic!("{c:?}") };
        assert!(r.looped);
        assert_eq!(r.window.from, Some(34_200_000_000_000));
        assert_eq!(r.window.to, Some(34_260_500_000_000));
        // An empty window and a bad time are refused.
        assert_eq!(
            parse(&["tickwire", "serve", "--replay", "x", "--from", "10:00", "--to", "09:00"]),
            None
        );
        assert_eq!(parse(&["tickwire", "serve", "--replay", "x", "--from", "25:00"]), None);
        // The trading day and the shift.
        let c = parse(&[
            "tickwire",
            "serve",
            "--replay",
            "01302024.NASDAQ_ITCH50",
            "--date",
            "2024-07-15",
            "--time-shift",
            "-90m",
        ]);
        let Some(SourceChoice::Replay(r)) = c else { panic!("{c:?}") };
        assert_eq!(r.date, Some(jiff::civil::date(2024, 7, 15)));
        assert_eq!(r.shift, TimeShift::By(-5_400_000_000_000));
        let c = parse(&["tickwire", "serve", "--replay", "x", "--time-shift", "now"]);
        let Some(SourceChoice::Replay(r)) = c else { panic!("{c:?}") };
        assert_eq!(r.shift, TimeShift::Now);
        for bad in [
            &["tickwire", "serve", "--replay", "x", "--date", "2024-02-30"][..],
            &["tickwire", "serve", "--replay", "x", "--time-shift", "later"],
            &["tickwire", "serve", "--date", "2024-01-30"],
            &["tickwire", "serve", "--time-shift", "now"],
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bus_flags() {
        use clap::Parser;
        let command = |argv: &[&str]| Args::try_parse_from(argv).map(|a| a.command).ok();
        // An edge: the bus is its source, named after --node-name.
        let Some(Command::Serve(a)) =
            command(&["t", "serve", "--nats", "nats://h:4222", "--node-name", "e1"])
        else {
            panic!("serve parses")
        };
        let c = Config::from_args(&a).unwrap();
        let Some(BusRole::Edge(bus)) = &c.bus else { panic!("{:?}", c.bus) };
        assert_eq!(bus.url, "nats://h:4222");
        assert_eq!(c.node_name.as_deref(), Some("e1"));
        // An edge takes no other source; a URL must be one.
        let Some(Command::Serve(a)) = command(&["t", "serve", "--nats", "n:1", "--replay", "f"])
        else {
            panic!("serve parses")
        };
        assert_eq!(Config::from_args(&a).unwrap_err().flag, "nats");
        let Some(Command::Serve(a)) = command(&["t", "serve", "--nats", "nats://h/x"]) else {
            panic!("serve parses")
        };
        assert_eq!(Config::from_args(&a).unwrap_err().flag, "nats");
        // --node-name needs --nats.
        assert!(command(&["t", "serve", "--node-name", "x"]).is_none());
        // An ingest: any source, --nats required, the latest-value interval.
        let Some(Command::Ingest(a)) =
            command(&["t", "ingest", "--nats", "nats://h:1", "--replay", "f", "--lvc-ms", "100"])
        else {
            panic!("ingest parses")
        };
        let c = Config::from_ingest_args(&a).unwrap();
        assert!(matches!(c.source, SourceChoice::Replay(_)));
        let Some(BusRole::Ingest(bus)) = &c.bus else { panic!("{:?}", c.bus) };
        assert_eq!(bus.lvc_every, Duration::from_millis(100));
        let Some(Command::Ingest(a)) = command(&["t", "ingest"]) else { panic!("ingest parses") };
        assert_eq!(Config::from_ingest_args(&a).unwrap_err().flag, "nats");
    }

    #[test]
    fn time_shifts_parse() {
        assert_eq!(parse_time_shift("now"), Ok(TimeShift::Now));
        assert_eq!(parse_time_shift("1.5s"), Ok(TimeShift::By(1_500_000_000)));
        assert_eq!(parse_time_shift("+2m"), Ok(TimeShift::By(120_000_000_000)));
        assert_eq!(parse_time_shift("-1h"), Ok(TimeShift::By(-3_600_000_000_000)));
        for bad in ["", "-", "soon", "--1h", "1d"] {
            assert!(parse_time_shift(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_flags_go_together() {
        let parse = |argv: &[&str]| match Args::try_parse_from(argv).map(|a| a.command) {
            Ok(Command::Serve(a)) => Config::from_args(&a).map(|c| c.tls).map_err(|e| e.flag),
            _ => Err("clap"),
        };
        // Plain TCP by default.
        assert_eq!(parse(&["tickwire", "serve"]), Ok(None));
        // Both files: TLS, with the paths as given (read at start, not here).
        assert_eq!(
            parse(&["tickwire", "serve", "--tls-cert", "c.pem", "--tls-key", "k.pem"]),
            Ok(Some(TlsFiles { cert: "c.pem".into(), key: "k.pem".into() }))
        );
        // One without the other is a usage error.
        assert_eq!(parse(&["tickwire", "serve", "--tls-cert", "c.pem"]), Err("clap"));
        assert_eq!(parse(&["tickwire", "serve", "--tls-key", "k.pem"]), Err("clap"));
    }

    #[test]
    fn compression_flags() {
        let parse = |argv: &[&str]| match Args::try_parse_from(argv).map(|a| a.command) {
            Ok(Command::Serve(a)) => {
                Config::from_args(&a).map(|c| c.compression).map_err(|e| e.flag)
            }
            _ => Err("clap"),
        };
        let defaults = crate::socket::deflate::Settings { window_bits: 12 };
        // Off by default; on, with the measured window.
        assert_eq!(parse(&["tickwire", "serve"]), Ok(None));
        assert_eq!(parse(&["tickwire", "serve", "--compression", "on"]), Ok(Some(defaults)));
        assert_eq!(
            parse(
                &["tickwire", "serve", "--compression", "on", "--compression-window-bits", "15",]
            ),
            Ok(Some(crate::socket::deflate::Settings { window_bits: 15 }))
        );
        assert_eq!(parse(&["tickwire", "serve", "--compression", "maybe"]), Err("clap"));
        // zlib cannot raw-deflate with a window of 8.
        assert_eq!(
            parse(&["tickwire", "serve", "--compression-window-bits", "8"]),
            Err("compression-window-bits")
        );
        assert_eq!(
            parse(&["tickwire", "serve", "--compression-window-bits", "16"]),
            Err("compression-window-bits")
        );
    }

    #[test]
    fn tcp_feed_flag() {
        let parse = |argv: &[&str]| match Args::try_parse_from(argv).map(|a| a.command) {
            Ok(Command::Serve(a)) => Config::from_args(&a).map(|c| c.source).map_err(|e| e.flag),
            _ => Err("clap"),
        };
        assert_eq!(
            parse(&["tickwire", "serve", "--tcp-feed", "127.0.0.1:9000"]),
            Ok(SourceChoice::Tcp("127.0.0.1:9000".into()))
        );
        assert_eq!(parse(&["tickwire", "serve", "--tcp-feed", "nohost"]), Err("tcp-feed"));
        assert_eq!(
            parse(&["tickwire", "serve", "--tcp-feed", "h:1", "--replay", "x"]),
            Err("clap")
        );
    }
}
