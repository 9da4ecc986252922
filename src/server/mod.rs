//! Builds and runs the pipeline: feed thread, ring, writer shards and the
//! acceptor, and takes them down again.
//!
//! Lifecycle: **setup** ([`start`]: bind, create the tables and the ring,
//! spawn the threads) -> **run** (until [`Server::shutdown`]) -> **drain**
//! (the listener is closed first, so new connections are refused; then every
//! session gets `shutdown` with a jittered `reconnect_after_ms` and a close
//! with 1012; shards wait up to `drain` for them; the feed thread stops; every
//! thread is joined). Nothing is left running when `shutdown` returns.

mod shard_thread;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::watch;

use crate::auth::{Access, AuthSetupError, Reloaded};
use crate::bus::edge::{BusSource, EdgeSetup};
use crate::bus::metrics::BusMetrics;
use crate::bus::publisher::{Publisher, PublisherSetup};
use crate::config::{BusRole, Config, SourceChoice};
use crate::connection::HttpContext;
use crate::feed::manual::{ManualFeedHandle, manual};
use crate::feed::replay::Replay;
use crate::feed::synthetic::{Synthetic, SyntheticConfig};
use crate::feed::tcp::{self, TcpConfig, TcpFeed};
use crate::feed::{FeedSource, Market, ShardWake, Wakers, spawn_ingest};
use crate::ring::ring;
use crate::socket::limits::{ConnLimits, Permit, Refusal};
use crate::socket::tls::{self, TlsError};
use crate::tick::{SymbolTable, Tick};
use crate::writer::metrics::ShardMetrics;
use shard_thread::{ShardHandle, ShardSetup, spawn_shard};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address is taken or not ours; pick another `--listen`.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The feed source could not be set up.
    #[error("feed source: {0}")]
    Source(String),
    /// A thread could not be started (out of resources).
    #[error("cannot start thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The TLS certificate or key cannot be used; the message names the file.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The key file, the JWT key or the audit log could not be used; the
    /// message names the file.
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthSetupError),
}

/// Longest [`start`] waits for the feed thread to publish an edge's
/// latest values before it accepts sessions.
const FIRST_POLL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A running server.
pub struct Server {
    addr: SocketAddr,
    market: Arc<Market>,
    /// Stops the acceptor (and so closes the listener) before anything else.
    stop_accept: watch::Sender<bool>,
    /// Tells the shards and their sessions to drain.
    access: Arc<Access>,
    shutdown_tx: watch::Sender<bool>,
    stop_feed: Arc<AtomicBool>,
    feed: Option<JoinHandle<()>>,
    acceptor: Option<JoinHandle<()>>,
    shards: Vec<ShardHandle>,
    /// `tickwire ingest`: the thread that publishes the ring on the bus.
    publisher: Option<Publisher>,
}

/// Starts a server fed by the source of `config`: the synthetic feed, or a
/// replay of a recorded file (an unreadable file or an unknown format is a
/// [`StartError::Source`] that names the file).
///
/// With a bus (`config.bus`), an edge's source is the bus
/// ([`crate::bus::edge`]: this returns once it has heard the ingest, or
/// after a bounded wait), and an ingest also publishes its ring there
/// ([`crate::bus::publisher`]).
pub fn start(config: &Config) -> Result<Server, StartError> {
    let bus_metrics = config.bus.as_ref().map(|_| Arc::new(BusMetrics::default()));
    match (&config.bus, &bus_metrics) {
        (Some(BusRole::Edge(bus)), Some(metrics)) => {
            start_inner(config, bus_metrics.clone(), |table| {
                let setup =
                    EdgeSetup { bus: bus.clone(), table: table.clone(), metrics: metrics.clone() };
                Ok(Box::new(BusSource::start(setup)?) as Box<dyn FeedSource>)
            })
        }
        _ => start_inner(config, bus_metrics.clone(), |table| {
            build_source(&config.source, config.synthetic, config.shard.hb, table)
        }),
    }
}

/// Builds the feed source `choice` over `table`: the synthetic feed (with
/// `synthetic`), a replay, or a live TCP feed (stale after one heartbeat
/// interval `hb` of silence).
pub fn build_source(
    choice: &SourceChoice,
    synthetic: SyntheticConfig,
    hb: std::time::Duration,
    table: &Arc<SymbolTable>,
) -> Result<Box<dyn FeedSource>, StartError> {
    match choice {
        SourceChoice::Synthetic => Synthetic::new(synthetic, table)
            .map(|s| Box::new(s) as Box<dyn FeedSource>)
            .map_err(|e| StartError::Source(e.to_string())),
        SourceChoice::Replay(replay) => Replay::open(replay, table)
            .map(|r| Box::new(r) as Box<dyn FeedSource>)
            .map_err(|e| StartError::Source(e.to_string())),
        SourceChoice::Tcp(addr) => {
            // Stale within one heartbeat interval of silence, read wait included.
            let tcp = TcpConfig {
                stale_after: hb.saturating_sub(2 * tcp::READ_WAIT).max(hb / 2),
                ..TcpConfig::new(addr.clone())
            };
            Ok(Box::new(TcpFeed::new(tcp, table.clone())))
        }
    }
}

/// Starts a server fed by a [`crate::feed::manual`] feed; the handle pushes ticks.
pub fn start_manual(config: &Config) -> Result<(Server, ManualFeedHandle), StartError> {
    let mut handle = None;
    let server = start_with(config, |table| {
        let (feed, h) = manual(table.clone());
        handle = Some(h);
        Ok(Box::new(feed) as Box<dyn FeedSource>)
    })?;
    Ok((server, handle.expect("source built")))
}

/// Starts a server with the source `make_source` builds over the symbol table.
pub fn start_with(
    config: &Config,
    make_source: impl FnOnce(&Arc<SymbolTable>) -> Result<Box<dyn FeedSource>, StartError>,
) -> Result<Server, StartError> {
    start_inner(config, None, make_source)
}

/// [`start_with`], counting the bus in `bus_metrics` (with `config.bus`).
fn start_inner(
    config: &Config,
    bus_metrics: Option<Arc<BusMetrics>>,
    make_source: impl FnOnce(&Arc<SymbolTable>) -> Result<Box<dyn FeedSource>, StartError>,
) -> Result<Server, StartError> {
    // Certificate and key first: a bad file fails before the port is taken.
    let tls = match &config.tls {
        Some(files) => Some(tls::load(&files.cert, &files.key)?),
        None => None,
    };
    let listener = bind_listener(config.listen)
        .map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;

    let access = Arc::new(Access::open(&config.auth)?);
    let table = Arc::new(SymbolTable::new(config.max_symbols));
    let source = make_source(&table)?;
    let market = Arc::new(Market::with_history(table, config.history));
    if let Some(n) = source.first_epoch() {
        market.start_in_epoch(n);
    }
    let (producer, readers) = ring::<Tick>(config.ring_capacity);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let limits = ConnLimits::new(config.max_connections, config.max_connections_per_ip);
    let metrics: Vec<Arc<ShardMetrics>> =
        (0..config.shards).map(|_| Arc::new(ShardMetrics::default())).collect();
    let mut registry = crate::metrics::registry(crate::metrics::Sources {
        market: market.clone(),
        shards: metrics.clone(),
        limits: limits.clone(),
        access: access.clone(),
    });
    if let Some(m) = &bus_metrics {
        registry.register_collector(m.collector());
    }
    let mut shard_config = config.shard.clone();
    if config.bus.is_some() || config.node_name.is_some() {
        shard_config.node = Some(match &config.node_name {
            Some(name) => name.clone(),
            None => format!("{}:{}", host_name(), addr.port()),
        });
    }
    let http = Arc::new(HttpContext {
        market: market.clone(),
        metrics: registry,
        started: Instant::now(),
        handshake_timeout: config.handshake_timeout,
        tls: tls.clone(),
        next_session: std::sync::atomic::AtomicU64::new(0),
        send_buffer: config.send_buffer,
        limits: limits.clone(),
        access: access.clone(),
        echo_endpoint: config.echo_endpoint,
        compression: config.compression,
    });
    let mut shards = Vec::with_capacity(config.shards);
    for (index, m) in metrics.into_iter().enumerate() {
        shards.push(spawn_shard(ShardSetup {
            index,
            reader: readers.reader(),
            config: shard_config.clone(),
            metrics: m,
            http: http.clone(),
            shutdown: shutdown_rx.clone(),
            drain: config.drain,
        })?);
    }
    let mut wakes: Vec<ShardWake> = shards.iter().map(|s| s.wake.clone()).collect();
    let publisher = match (&config.bus, bus_metrics) {
        (Some(BusRole::Ingest(bus)), Some(metrics)) => {
            // Woken like a shard, and acknowledges new epochs like one.
            let wake = ShardWake::default();
            wakes.push(wake.clone());
            Some(Publisher::spawn(PublisherSetup {
                bus: bus.clone(),
                reader: readers.reader(),
                market: market.clone(),
                wake,
                metrics,
            })?)
        }
        _ => None,
    };
    let wakers = Wakers::new(wakes);
    let stop_feed = Arc::new(AtomicBool::new(false));
    // A source that starts from what it knows (an edge's latest values)
    // has it published before the first session is accepted.
    let wait_first_poll = source.first_epoch().is_some();
    let feed = spawn_ingest(source, producer, market.clone(), wakers, stop_feed.clone())?;
    let deadline = Instant::now() + FIRST_POLL_WAIT;
    while wait_first_poll && !market.has_polled() && Instant::now() < deadline {
        std::thread::park_timeout(std::time::Duration::from_millis(1));
    }
    let conns: Vec<_> = shards.iter().map(|s| s.conns.clone()).collect();
    let (stop_accept, accept_rx) = watch::channel(false);
    let acceptor = spawn_acceptor(listener, conns, limits, tls, accept_rx)?;
    Ok(Server {
        addr,
        market,
        stop_accept,
        access,
        shutdown_tx,
        stop_feed,
        feed: Some(feed),
        acceptor: Some(acceptor),
        shards,
        publisher,
    })
}

/// This machine's host name (for a node's default name).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl Server {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The market state (symbols, latest values, feed state).
    pub fn market(&self) -> &Arc<Market> {
        &self.market
    }

    /// Re-reads the API-key file and the JWT key (SIGHUP in the binary),
    /// all or nothing ([`Access::reload`]). Sessions whose key was removed
    /// or changed, or whose token does not verify under a new JWT key, are
    /// closed with 4001 within about 100 ms; on an error (logged and counted
    /// in `tickwire_auth_reload_failures_total`) the old keys stay in force.
    pub fn reload_auth(&self) -> Result<Reloaded, AuthSetupError> {
        self.access.reload()
    }

    /// Stops the server: see the module docs. Returns when every thread has ended.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        // Stop listening first: once the acceptor has ended, the listener is
        // closed and a new connection is refused, so no client can arrive
        // after the sessions were told to go.
        let _ = self.stop_accept.send(true);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let _ = self.shutdown_tx.send(true);
        for shard in self.shards.drain(..) {
            shard.join();
        }
        self.stop_feed.store(true, Ordering::Release);
        if let Some(f) = self.feed.take() {
            let _ = f.join();
        }
        if let Some(p) = self.publisher.take() {
            p.stop();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Answers a connection over the limits with 503, before any upgrade (over
/// TLS when the port serves TLS), within one second.
async fn refuse(
    stream: tokio::net::TcpStream,
    refusal: Refusal,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    async fn write_503<S: tokio::io::AsyncWrite + Unpin>(
        mut stream: S,
        refusal: Refusal,
    ) -> std::io::Result<()> {
        crate::socket::http::respond_unavailable(&mut stream, refusal.message()).await
    }
    let write = async {
        match tls {
            None => write_503(stream, refusal).await,
            Some(acceptor) => write_503(acceptor.accept(stream).await?, refusal).await,
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
}

/// Connections the kernel may hold completed for the acceptor: as many as
/// it allows (`net.core.somaxconn`, 4096 on current Linux; a larger
/// request is cut to it). `std`'s listener asks for 128: a connect storm
/// (every dashboard of a desk reconnecting after a restart) then overflows
/// the queue, the kernel drops the SYNs past it, and those clients wait
/// for their SYN retransmits, 1 s, then 3 s, then 7 s.
const LISTEN_BACKLOG: i32 = 65_535;

/// Binds the listening socket (`SO_REUSEADDR`, as `std` sets it, and the
/// deep accept queue of [`LISTEN_BACKLOG`]).
fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// The acceptor thread: accepts sockets, applies the connection limits and
/// deals the admitted ones to the shards in turn.
fn spawn_acceptor(
    listener: std::net::TcpListener,
    shards: Vec<tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, Permit)>>,
    limits: Arc<ConnLimits>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("tickwire-accept".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot build acceptor runtime");
                return;
            }
        };
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let mut next = 0usize;
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => match limits.admit(peer.ip()) {
                            Ok(permit) => {
                                let Ok(std_stream) = stream.into_std() else { continue };
                                let _ = shards[next % shards.len()].send((std_stream, permit));
                                next = next.wrapping_add(1);
                            }
                            Err(refusal) => {
                                tokio::spawn(refuse(stream, refusal, tls.clone()));
                            }
                        },
                        Err(e) => {
                            // Out of file descriptors and the like: back off briefly.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                    },
                    _ = shutdown.changed() => break,
                }
            }
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_accept_queue_holds_a_connect_storm() {
        // Nobody accepts: every connect must still complete, held in the
        // kernel's queue. With std's backlog of 128 the 130th would not (its
        // SYN dropped, retried after 1 s, 3 s...), and this would time out.
        let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let held: Vec<_> = (0..1000)
            .map(|i| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("connect {i} of 1000: {e}"))
            })
            .collect();
        assert_eq!(held.len(), 1000);
    }
}
