//! What both sides of the bus do with NATS: connect (in the background,
//! retrying, with connection events sent to the bus thread), the
//! latest-value stream's settings, and the check that a subscription is
//! live.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::{Config as StreamConfig, DiscardPolicy, StorageType};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::metrics::BusMetrics;

/// Longest reconnect delay. async-nats' default grows to 4 s; a bus that
/// comes back should be used within about a second.
const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// Messages the client may hold for one subscription before it drops
/// (FIELD-NOTES: the default, 65,536, dropped up to 10% of a fast burst
/// while the server saw no slow consumer; 2^21 dropped nothing).
const SUBSCRIPTION_CAPACITY: usize = 1 << 21;

/// How long [`subscriptions_live`] waits for its probe.
pub(super) const PROBE_WAIT: Duration = Duration::from_secs(5);

/// A connection event, as the bus thread sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Link {
    /// Connected (the first time, or again after an outage).
    Up,
    /// The connection dropped; the client is reconnecting.
    Down,
    /// The client dropped messages of a subscription that was full.
    SlowConsumer,
}

/// Connects to `url` in the background (the client retries until the
/// server is there, for ever) and sends [`Link`] events to `events`.
pub(super) async fn connect(
    url: &str,
    name: &str,
    events: mpsc::UnboundedSender<Link>,
    metrics: Arc<BusMetrics>,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let stats = metrics.clone();
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .reconnect_delay_callback(|attempts| {
            let ms = 50u64.saturating_mul(1 << attempts.min(10));
            Duration::from_millis(ms).min(RECONNECT_MAX)
        })
        .event_callback(move |event| {
            let link = match event {
                async_nats::Event::Connected => {
                    BusMetrics::add(&metrics.connects, 1);
                    metrics.connected.store(1, std::sync::atomic::Ordering::Relaxed);
                    Some(Link::Up)
                }
                async_nats::Event::Disconnected => {
                    metrics.connected.store(0, std::sync::atomic::Ordering::Relaxed);
                    Some(Link::Down)
                }
                async_nats::Event::SlowConsumer(_) => {
                    BusMetrics::add(&metrics.slow_consumer_events, 1);
                    Some(Link::SlowConsumer)
                }
                other => {
                    tracing::warn!(event = %other, "NATS");
                    None
                }
            };
            if let Some(l) = link {
                // The bus thread gone means the process is stopping.
                let _ = events.send(l);
            }
            async {}
        })
        .connect(url)
        .await
        .inspect(|client| {
            let _ = stats.client.set(client.statistics());
        })
}

/// The latest-value stream: in memory (it is rebuilt from the ingest's
/// table whenever it is lost), one message per subject.
pub(super) fn lvc_stream_config() -> StreamConfig {
    StreamConfig {
        name: super::LVC_STREAM.to_string(),
        subjects: vec![super::LVC_SUBJECTS.to_string()],
        storage: StorageType::Memory,
        max_messages_per_subject: 1,
        discard: DiscardPolicy::Old,
        allow_direct: true,
        ..StreamConfig::default()
    }
}

/// Returns once the server has registered every subscription this client
/// made before the call: it publishes to a fresh inbox of its own and waits
/// for the message (the server handles one connection's commands in order).
/// `Client::flush` is not enough: it does not wait for the server
/// (FIELD-NOTES). `false` if the probe did not come back in time.
pub(super) async fn subscriptions_live(client: &async_nats::Client) -> bool {
    let inbox = client.new_inbox();
    let Ok(mut probe) = client.subscribe(inbox.clone()).await else { return false };
    if client.publish(inbox, "probe".into()).await.is_err() {
        return false;
    }
    let live = tokio::time::timeout(PROBE_WAIT, probe.next()).await.is_ok_and(|m| m.is_some());
    let _ = probe.unsubscribe().await;
    live
}
