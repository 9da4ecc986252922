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
//! # Layout
//!
//! The modules follow the data path, **feed → ring → writer → socket**:
//!
//! - [`tick`]: the data model (`Tick`, `Price`, `SymbolId`, `SymbolTable`).
//! - [`record_reader`]: what every recorded-feed format shares (the
//!   `RecordReader` trait, `Skip`, gzip-aware opening); it sits below
//!   [`capture`] and the feed's formats, which implement it.
//! - [`feed`]: STAGE 1, the feed thread and its sources ([`feed::synthetic`],
//!   [`feed::manual`], [`feed::tcp`] for live JSON lines, and [`feed::replay`]
//!   of recorded files: [`feed::jsonl`], [`feed::itch`] for NASDAQ ITCH 5.0,
//!   and [`capture`], tickwire's own format).
//! - [`ring`]: STAGE 2, the lock-free broadcast ring and the latest-value
//!   table (seqlocks over atomics, no `unsafe`). The crate's only `unsafe`
//!   is the memory map of a capture file ([`capture`]'s `mmap` module).
//! - [`files`]: `tickwire record`, `convert` and `inspect`.
//! - [`writer`]: STAGE 3, one shard per core: dispatch, conflation, batching,
//!   encoding ([`writer::shard`], [`writer::session`], [`writer::encode`],
//!   [`writer::binary`] for the `tickwire.v1.bin` subprotocol).
//! - [`socket`]: STAGE 4, HTTP routing, the WebSocket framing
//!   ([`socket::ws`]), the session loops, the client request parser
//!   ([`socket::protocol`]), TLS ([`socket::tls`]) and the conformance echo
//!   ([`socket::echo`], only with `--echo-endpoint`).
//! - [`auth`]: API keys, JWTs, entitlements, the `Origin` allow-list and the
//!   audit log (all off by default).
//! - [`dashboard`]: the page at `/`, embedded in the binary.
//! - [`metrics`]: counters and the latency histogram behind `/metrics`.
//! - [`config`]: flags (`Args`) and validated settings (`Config`).
//! - [`server`]: setup, run and drain of the whole pipeline.
//!
//! # Lifecycle
//!
//! [`server::start`] binds and spawns every thread; [`server::Server::shutdown`]
//! closes the listener, tells every session `shutdown`, closes it with 1012
//! (server restarting), and joins the threads.

pub mod auth;
pub mod capture;
pub mod config;
pub mod dashboard;
pub mod feed;
pub mod files;
pub mod metrics;
pub mod record_reader;
pub mod ring;
pub mod server;
pub mod socket;
pub mod tick;
pub mod writer;

pub use config::{Args, Config};
pub use server::{Server, start, start_manual};
