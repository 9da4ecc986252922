//! tickwire's integration tests: one binary (see `autotests = false` in
//! Cargo.toml). Every test starts a real server on 127.0.0.1:0 and talks to
//! it as a client does.
//!
//! Index:
//! - `util`: the test server (manual feed) and a client that checks `cseq`.
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
//! - `binary`: the binary subprotocol `tickwire.v1.bin` (negotiation, records
//!   decoded against a JSON session on the same feed, stamps, overflow).
//! - `tls`: `--tls-cert`/`--tls-key` (rcgen certificates made per test):
//!   wss and https, plain-TCP and bad ClientHellos, the handshake timeout,
//!   bad certificate and key files.
//! - `browser`: the dashboard's protocol client under `node --test`, and the
//!   page itself in headless chromium (playwright-core).
//! - `compression`: permessage-deflate on `/ws` (a raw client inflating with
//!   zlib-rs): JSON and binary market data, `server_no_context_takeover`, a
//!   compressed `subscribe`, a decompression bomb.

mod util;

mod auth;
mod binary;
mod browser;
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
mod pipeline;
mod protocol;
mod replay;
mod resume;
mod tls;
