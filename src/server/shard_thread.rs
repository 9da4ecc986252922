//! The writer shard threads: one OS thread per shard, each running a
//! current-thread tokio runtime that owns, for life, the connections the
//! acceptor hands it (thread-per-core: no lock on the hot path, no task
//! migration). On it run the shard's pump ([`crate::writer::pump`]) and
//! one task per connection ([`crate::connection::serve`]).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::LocalSet;

use crate::connection::{self, HttpContext};
use crate::feed::ShardWake;
use crate::ring::RingReader;
use crate::socket::limits::Permit;
use crate::tick::Tick;
use crate::writer::metrics::ShardMetrics;
use crate::writer::pump;
use crate::writer::shard::{Shard, ShardConfig};

/// The acceptor's side of a shard.
pub struct ShardHandle {
    /// Sends accepted sockets to the shard.
    pub conns: mpsc::UnboundedSender<(std::net::TcpStream, Permit)>,
    /// Wakes the shard's pump (the feed thread holds a clone).
    pub wake: ShardWake,
    thread: JoinHandle<()>,
}

impl ShardHandle {
    /// Waits for the shard thread to end.
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Counts live connection tasks so a draining shard knows when it is done.
#[derive(Default)]
pub struct ConnTracker {
    live: Cell<usize>,
    idle: Notify,
}

impl ConnTracker {
    /// A connection task started.
    pub fn enter(self: &Rc<Self>) -> ConnGuard {
        self.live.set(self.live.get() + 1);
        ConnGuard(self.clone())
    }
}

/// Decrements the tracker when a connection task ends.
pub struct ConnGuard(Rc<ConnTracker>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let t = &self.0;
        t.live.set(t.live.get() - 1);
        if t.live.get() == 0 {
            t.idle.notify_waiters();
        }
    }
}

/// Everything a shard thread starts with.
pub struct ShardSetup {
    /// Shard number (for the thread name and session ids).
    pub index: usize,
    /// This shard's ring cursor.
    pub reader: RingReader<Tick>,
    /// Settings.
    pub config: ShardConfig,
    /// This shard's metrics.
    pub metrics: Arc<ShardMetrics>,
    /// Shared with the HTTP routes.
    pub http: Arc<HttpContext>,
    /// Flips to true on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// How long sessions get to close cleanly on shutdown.
    pub drain: Duration,
}

/// Starts a shard thread.
pub fn spawn_shard(setup: ShardSetup) -> std::io::Result<ShardHandle> {
    let wake = ShardWake::default();
    let (conns, conn_rx) = mpsc::unbounded_channel();
    let pump_wake = wake.clone();
    let thread = std::thread::Builder::new()
        .name(format!("tickwire-shard-{}", setup.index))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build shard runtime");
                    return;
                }
            };
            LocalSet::new().block_on(&rt, run_shard(setup, pump_wake, conn_rx));
        })?;
    Ok(ShardHandle { conns, wake, thread })
}

async fn run_shard(
    setup: ShardSetup,
    wake: ShardWake,
    mut conn_rx: mpsc::UnboundedReceiver<(std::net::TcpStream, Permit)>,
) {
    let ShardSetup { index: _, reader, config, metrics, http, mut shutdown, drain } = setup;
    let mut state = Shard::new(http.market.clone(), reader, config, metrics);
    state.set_access(http.access.clone());
    let shard = Rc::new(RefCell::new(state));
    let tracker = Rc::new(ConnTracker::default());
    let pump = tokio::task::spawn_local(pump(shard.clone(), wake, shutdown.clone()));
    loop {
        tokio::select! {
            conn = conn_rx.recv() => {
                let Some((conn, permit)) = conn else { break };
                let guard = tracker.enter();
                let ctx = connection::ConnContext {
                    shard: shard.clone(),
                    http: http.clone(),
                    shutdown: shutdown.clone(),
                };
                tokio::task::spawn_local(async move {
                    connection::serve(conn, ctx).await;
                    drop(permit);
                    drop(guard);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    // Drain: every session was told `shutdown`; give them `drain` to close.
    let idle = tracker.idle.notified();
    if tracker.live.get() > 0 {
        let _ = tokio::time::timeout(drain, idle).await;
    }
    pump.abort();
}
