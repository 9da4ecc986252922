//! The command line ([`Args`], raw flags as typed, no I/O) and the validated
//! [`Config`] the server runs with. Every default is explained where it is
//! set.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::feed::replay::{ReplayConfig, Speed};
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
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve market data over WebSocket (and HTTP on the same port).
    Serve(ServeArgs),
}

/// Flags of `tickwire serve`, as typed.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound URL is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Writer shards (threads); default: one per core.
    #[arg(long)]
    pub shards: Option<usize>,
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
    /// Close a session (4008) whose oldest unwritten frame has waited this long (ms) for its socket.
    #[arg(long, default_value_t = 5000)]
    pub lag_limit_ms: u64,
    /// Serve a recorded feed from FILE instead of the synthetic feed (JSON
    /// lines, optionally gzip-compressed; the format is detected from the content).
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Replay pace: a factor of the recorded pace (2 = twice as fast), or `max` for no pacing.
    #[arg(long, default_value = "1", requires = "replay")]
    pub speed: String,
    /// Hold the replay until the first subscription arrives.
    #[arg(long, requires = "replay")]
    pub wait_for_subscriber: bool,
}

impl Default for ServeArgs {
    fn default() -> Self {
        match Args::parse_from(["tickwire", "serve"]).command {
            Command::Serve(a) => a,
        }
    }
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
    /// Per-session settings.
    pub shard: ShardConfig,
    /// Deadline for a client to send its request head.
    pub handshake_timeout: Duration,
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
}

impl Default for Config {
    fn default() -> Self {
        Config::from_args(&ServeArgs::default()).expect("defaults are valid")
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
        if !(a.rate.is_finite() && a.rate > 0.0) {
            return Err(invalid("rate", "must be a number > 0"));
        }
        if a.max_symbols == 0 || a.max_symbols > 1 << 24 {
            return Err(invalid("max-symbols", "must be 1..=16777216"));
        }
        if a.symbols == 0 || a.symbols > a.max_symbols {
            return Err(invalid("symbols", format!("must be 1..={}", a.max_symbols)));
        }
        if let Some(b) = a.burst
            && !(b.is_finite() && b >= 1.0)
        {
            return Err(invalid("burst", "must be a factor >= 1"));
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
        let source = match &a.replay {
            None => SourceChoice::Synthetic,
            Some(path) => SourceChoice::Replay(ReplayConfig {
                path: path.clone(),
                speed: a.speed.parse::<Speed>().map_err(|e| invalid("speed", e))?,
                wait_for_subscriber: a.wait_for_subscriber,
            }),
        };
        Ok(Config {
            listen,
            shards,
            source,
            synthetic: SyntheticConfig {
                symbols: a.symbols,
                rate: a.rate,
                seed: a.seed,
                burst: a.burst,
            },
            ring_capacity: a.ring_capacity.next_power_of_two(),
            max_symbols: a.max_symbols,
            shard: ShardConfig {
                hb: Duration::from_millis(a.hb_ms),
                max_symbols: a.max_subscriptions,
                msgs_in_per_s: a.msgs_in_per_s,
                max_message_bytes: a.max_message_bytes,
                allow_wildcard: !a.no_wildcard,
                queue_cap: a.all_queue,
                lag_limit: Duration::from_millis(a.lag_limit_ms.max(1)),
                slow_warn: Duration::from_millis((a.lag_limit_ms / 5).max(1)),
                ..ShardConfig::default()
            },
            send_buffer: (a.send_buffer > 0).then_some(a.send_buffer),
            max_connections: a.max_connections.max(1),
            max_connections_per_ip: a.max_connections_per_ip.max(1),
            handshake_timeout: Duration::from_secs(10),
            drain: Duration::from_millis(1500),
        })
    }
}

#[cfg(test)]
mod tests {
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
        let a = ServeArgs { rate: 0.0, ..ServeArgs::default() };
        // The error says which flag to fix.
        assert_eq!(Config::from_args(&a).unwrap_err().flag, "rate");
        let a = ServeArgs { listen: "nope".into(), ..ServeArgs::default() };
        assert_eq!(Config::from_args(&a).unwrap_err().flag, "listen");
        let a =
            ServeArgs { replay: Some("f.jsonl".into()), speed: "0".into(), ..ServeArgs::default() };
        assert_eq!(Config::from_args(&a).unwrap_err().flag, "speed");
    }

    #[test]
    fn replay_flags() {
        // The synthetic feed is the default source.
        assert_eq!(Config::default().source, SourceChoice::Synthetic);
        let parse = |argv: &[&str]| match Args::try_parse_from(argv).map(|a| a.command) {
            Ok(Command::Serve(a)) => Config::from_args(&a).map(|c| c.source).ok(),
            Err(_) => None,
        };
        let c = parse(&["tickwire", "serve", "--replay", "x.jsonl", "--speed", "max"]);
        assert_eq!(
            c,
            Some(SourceChoice::Replay(ReplayConfig {
                path: "x.jsonl".into(),
                speed: Speed::Max,
                wait_for_subscriber: false
            }))
        );
        let c = parse(&["tickwire", "serve", "--replay", "x", "--wait-for-subscriber"]);
        let Some(SourceChoice::Replay(r)) = c else { panic!("{c:?}") };
        assert_eq!((r.speed, r.wait_for_subscriber), (Speed::Factor(1.0), true));
        // Replay options need --replay.
        assert_eq!(parse(&["tickwire", "serve", "--speed", "2"]), None);
    }
}
