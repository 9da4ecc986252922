//! tickwire: a market-data streaming server.
//!
//! A feed of quotes and trades goes in on one side; WebSocket subscribers get
//! the latest ticks of the symbols they asked for, at the rate they asked
//! for, on the other, and can always tell what they missed.
//!
//! ```text
//!  source ──▶ feed thread ──Tick──▶ ring (SPMC, overwrite) ──▶ writer shard 1..N (one per core)
//!  (synthetic,  number +          + latest-value table           conflate per subscriber,
//!   replay,     stamp             (snapshots, resync)            batch, encode once,
//!   TCP)                                                         write each socket once per flush
//! ```
//!
//! # Layers
//!
//! Each module imports only the modules above it in this list (a test,
//! `tests/layering.rs`, holds the tree to it), so the list reads from the
//! ground up: the generic ring and the data model, the stages of the data
//! path, then what wires them together.
//!
//! 1. [`ring`]: the lock-free broadcast ring and the latest-value table
//!    (seqlocks over atomics, generic over the value, no `unsafe`).
//! 2. [`tick`]: the data model (`Tick`, `Price`, `SymbolId`, `SymbolTable`,
//!    `Channel`).
//! 3. [`record_reader`]: what every recorded-feed format shares (the
//!    `RecordReader` trait, `Skip`, gzip-aware opening), below [`capture`]
//!    and the feed's formats, which implement it.
//! 4. [`auth`]: API keys, JWTs, entitlements, the `Origin` allow-list and
//!    the audit log (all off by default).
//! 5. [`capture`]: tickwire's recorded-feed format (rkyv blocks; the
//!    crate's one `unsafe` is the memory map of a capture file).
//! 6. [`feed`]: STAGE 1, the feed thread and its sources
//!    ([`feed::synthetic`], [`feed::manual`], [`feed::tcp`] for live JSON
//!    lines, [`feed::replay`] of recorded files: [`feed::jsonl`],
//!    [`feed::itch`] for NASDAQ ITCH 5.0, and captures).
//! 7. [`bus`]: scale-out on NATS: the ingest's publisher (a ring reader)
//!    and an edge's feed source (the bus), their wire format and counters.
//! 8. [`protocol`]: the wire protocol: client requests in, JSON and binary
//!    market data and typed control messages out.
//! 9. [`socket`]: the transport: HTTP heads and answers, WebSocket framing,
//!    TLS, connection limits, and a connection's write side
//!    ([`socket::outbound`]).
//! 10. [`writer`]: STAGE 3 (the ring is stage 2), one shard per core:
//!     dispatch, conflation, batching, frames ([`writer::shard`],
//!     [`writer::subscriber`]).
//! 11. [`metrics`]: `/metrics`, read from every stage's own counters.
//! 12. [`dashboard`]: the page at `/`, embedded in the binary.
//! 13. [`connection`]: STAGE 4, one accepted connection: routing, the
//!     upgrade, a market-data session's tasks, the conformance echo.
//! 14. [`config`]: flags (`Args`) and validated settings (`Config`).
//! 15. [`server`]: setup, run and drain of the whole pipeline, and the
//!     shard threads.
//! 16. [`files`]: `tickwire record`, `convert` and `inspect`.
//!
//! # Lifecycle
//!
//! [`server::start`] binds and spawns every thread; [`server::Server::shutdown`]
//! closes the listener, tells every session `shutdown`, closes it with 1012
//! (server restarting), and joins the threads.

pub mod auth;
pub mod bus;
pub mod capture;
pub mod config;
pub mod connection;
pub mod dashboard;
pub mod feed;
pub mod files;
pub mod metrics;
pub mod protocol;
pub mod record_reader;
pub mod ring;
pub mod server;
pub mod socket;
pub mod tick;
pub mod writer;

pub use config::{Args, Config};
pub use server::{Server, start, start_manual};
