//! Scale-out on NATS: one ingest numbers the feed and publishes it; any
//! number of edges take it from the bus as their feed source. Everything
//! from the ring on is the same program on both sides.
//!
//! ```text
//!  tickwire ingest: source ──▶ feed thread ──▶ ring ──▶ writer shards (its own /ws)
//!                                               └─────▶ publisher ([`publisher`]), a RingReader
//!                                                        │ core NATS: tw.v1.md (batches),
//!                                                        │            tw.v1.hb (heartbeats)
//!                                                        │ JetStream: tw.v1.lvc.<ch>.<sym>
//!                                                        ▼            (latest value per stream)
//!  tickwire serve --nats: bus thread ([`edge`]) ──▶ BusSource (numbered) ──▶ feed thread ──▶ ring ...
//! ```
//!
//! - [`codec`]: the versioned binary batches and heartbeats.
//! - [`publisher`]: the ingest's side: batches from the ring, heartbeats,
//!   and the latest-value table in a JetStream memory stream (one message
//!   per subject), rebuilt whenever NATS comes back.
//! - [`edge`]: an edge's [`crate::feed::FeedSource`]: live batches, the
//!   latest values read at start and after every gap, the feed's state
//!   from the heartbeats.
//! - [`metrics`]: what each side counts, for `/metrics`.
//!
//! The ingest's `epoch` and `seq` are the only numbering: an edge's feed
//! thread keeps them ([`crate::feed::FeedSource::numbered`]), so every
//! node gives an update the same position and a client can resume on any
//! of them. Core NATS delivers at most once; a lost batch is a `seq` jump
//! on the edge, which its writer shards turn into `overflow` (mode all) or
//! `cf` (latest), never silence.

pub mod codec;
pub mod edge;
pub mod metrics;
mod nats;
pub mod publisher;

use crate::tick::Channel;

/// Starts a `tickwire-bus` thread that runs `task` on its own
/// current-thread tokio runtime (the NATS client's), until it ends.
fn spawn_bus_thread<F>(
    task: impl FnOnce() -> F + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: std::future::Future<Output = ()>,
{
    std::thread::Builder::new().name("tickwire-bus".into()).spawn(move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(task()),
            Err(e) => tracing::error!(error = %e, "cannot build the bus runtime"),
        }
    })
}

/// The subject of live batches.
pub const LIVE_SUBJECT: &str = "tw.v1.md";
/// The subject of the ingest's heartbeats.
pub const HEARTBEAT_SUBJECT: &str = "tw.v1.hb";
/// What an edge subscribes to: both subjects in one subscription, so that
/// a heartbeat's "last batch" is seen after that batch (NATS keeps one
/// publisher's order within a subscription, not across two).
pub const LIVE_WILDCARD: &str = "tw.v1.*";
/// The JetStream stream of latest values.
pub const LVC_STREAM: &str = "TW_V1_LVC";
/// The subjects of latest values: `tw.v1.lvc.<q|t|s|m>.<symbol token>` (quotes, trades, bars_1s, bars_1m).
pub const LVC_SUBJECTS: &str = "tw.v1.lvc.>";

/// The subject of the latest value of the (`ch`, `name`) stream.
pub fn lvc_subject(ch: Channel, name: &str) -> String {
    let c = match ch {
        Channel::Quotes => 'q',
        Channel::Trades => 't',
        Channel::Bars1s => 's',
        Channel::Bars1m => 'm',
    };
    format!("tw.v1.lvc.{c}.{}", codec::subject_token(name))
}

/// Where and how a process reaches the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// The NATS server, `nats://HOST:PORT`.
    pub url: String,
    /// How often the ingest sends a heartbeat; an edge goes stale after
    /// one and a half of the intervals the heartbeats announce.
    pub hb: std::time::Duration,
    /// Ingest: the shortest time between two updates of one stream's latest
    /// value in JetStream. Stream capture costs NATS about five times a
    /// core message (FIELD-NOTES), so only streams that changed are
    /// published, at most this often.
    pub lvc_every: std::time::Duration,
}
