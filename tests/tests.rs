//! tickwire's integration tests: one binary (see `autotests = false` in
//! Cargo.toml). Every test starts a real server on 127.0.0.1:0 and talks to
//! it as a client does.
//!
//! Index:
//! - `util`: the test server (manual feed) and a client that checks `cseq`.
//! - `provision`: the outside tools some tests need (a Python venv, npm
//!   packages, Debian's chromium), installed by the tests themselves once
//!   and reused by later runs.
//! - `auth`: API keys, JWTs, entitlements, revocation and reloads, the limit
//!   on failed authentications per IP, the Origin allow-list,
//!   the audit log.
//! - `protocol`: one test per rule of docs/PROTOCOL.md (replies, snapshots,
//!   `seq`/`cf`/`overflow`, `max_hz`, wildcard, errors and limits).
//! - `pipeline`: convergence after bursts, isolation from a client that
//!   never reads, shutdown.
//! - `http`: the plain HTTP routes on the WebSocket port.
//! - `cli`: the `tickwire` binary itself (printed URL, signals, exit code).
//! - `external`: a client outside the Rust stack (Python `websockets`).
//! - `itch`: the ITCH 5.0 decoder against the Python `itchfeed` oracle, and
//!   the committed `feeds/sample.itch`.
//! - `replay`: recorded feeds (`--replay`): delivery, garbage, pacing, determinism,
//!   `--loop` epochs, `--from`/`--to`, source time (ITCH trading days in New
//!   York, `--date`, `--time-shift`).
//! - `resume`: reconnects with `subscribe.resume`: contiguous `mode:"all"`
//!   streams, exact overflows past the history, `cf` in latest mode, new
//!   epochs, bad input, and many random reconnects.
//! - `files`: `record`, `convert`, `inspect`; the ITCH -> capture -> JSON lines
//!   -> capture round trip and a replay of each; a recorder killed mid-write.
//! - `closes`: every way a session ends releases its socket in bounded
//!   time, against clients that never read (descriptors counted).
//! - `hardening`: malformed frames, slowloris, reset storms, memory per
//!   idle connection (raw TCP clients that break the rules).
//! - `layering`: modules import downward only (the order in src/lib.rs),
//!   and no two sibling modules import each other.
//! - `live`: live ingest over TCP (`--tcp-feed`): stale, reconnect, live; a
//!   source that panics makes the feed stale.
//! - `bars`: `bars_1s`/`bars_1m` against a reference built from the same
//!   trades (a JSON-lines fixture, the ITCH sample), closing on time, `cf`.
//! - `binary`: the binary subprotocol `tickwire.v1.bin` (negotiation, records
//!   decoded against a JSON session on the same feed, stamps, overflow).
//! - `tls`: `--tls-cert`/`--tls-key` (rcgen certificates made per test):
//!   wss and https, plain-TCP and bad ClientHellos, the handshake timeout,
//!   bad certificate and key files.
//! - `bus`: scale-out on NATS (a real `nats-server` per test): two edges
//!   agree on every update, clients of a killed edge resume on another, a
//!   NATS restart is stale then live with every gap reported, a late edge's
//!   snapshots, garbage on the bus, an ingest restart (a new epoch).
//! - `browser`: the dashboard's protocol client under `node --test`, and the
//!   page itself in headless chromium (playwright-core).
//! - `autobahn`: the Autobahn WebSocket conformance cases (`tools/autobahn.sh`).
//! - `peers`: the reference peers of `tickwire-bench` follow their contract
//!   (`tools/peers/check.py`).
//! - `compression`: permessage-deflate on `/ws` (a raw client inflating with
//!   zlib-rs): JSON and binary market data, `server_no_context_takeover`, a
//!   compressed `subscribe`, a decompression bomb.

mod provision;
mod util;

mod auth;
mod autobahn;
mod bars;
mod binary;
mod browser;
mod bus;
mod cli;
mod closes;
mod compression;
mod external;
mod files;
mod hardening;
mod http;
mod itch;
mod layering;
mod live;
mod peers;
mod pipeline;
mod protocol;
mod replay;
mod resume;
mod tls;
