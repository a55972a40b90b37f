//! The NATS JetStream publisher of the event log: every sequenced event, in position order,
//! exactly once, to `<prefix>.<aggregate_type>.<aggregate_id>.<event_type>` in one stream
//! (file storage), with the public envelope as payload.
//!
//! The events table is the outbox; PostgreSQL stays the source of truth.
//!
//! - **One publisher per cluster**: it holds a session advisory lock on a connection of its own
//!   (not a row lock in an open transaction, which would hold a transaction open for as long
//!   as it leads). Other processes wait to take over.
//! - **Resume**: on start and after any error it reads the stream's last message and its
//!   `Corral-Position` header, and resumes after `max(checkpoint, that position)`. A killed
//!   publisher may have had acks in flight that never reached the checkpoint; the stream itself
//!   says what it holds, so restarts never publish an event twice, whatever the dedup window.
//! - **No reordering, no gaps**: a batch is pipelined (all sent, then the acks awaited in
//!   order) and each message carries `Nats-Expected-Last-Sequence`, so once one fails every later
//!   one of the batch is refused too; the publisher then re-syncs from the stream. `Nats-Msg-Id`
//!   (the event id) is a second line of defence. The checkpoint (`log_checkpoints`, named
//!   `nats-publisher:<stream>`) advances after the acks.
//! - **NATS down**: events wait in PostgreSQL; the publisher warns once per outage and retries
//!   with a capped back-off.

mod config;
pub(crate) mod js_stream;
pub(crate) mod message;
mod metrics;
pub(crate) mod plan;
mod stream;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use corral_projections::leader::{Leader, Leadership};
use corral_projections::public_log;
use sqlx::PgPool;
use tokio::sync::watch;

pub use config::{ConfigError, PublisherConfig};
pub use message::{headers, subject_token, Published};
pub use metrics::{lag, render_lag, PublishLag, PublisherStats};
use stream::publish_while_leader;

/// Header carrying the event's public log position (decimal).
pub const POSITION_HEADER: &str = "Corral-Position";
/// Header carrying the request's correlation id, when the event's metadata has one.
pub const CORRELATION_HEADER: &str = "Corral-Correlation-Id";
/// Prefix of the publisher's checkpoint names in `log_checkpoints` (the stream name follows).
pub const CHECKPOINT_PREFIX: &str = "nats-publisher:";

/// A running publisher ([`spawn`]); [`Publisher::shutdown`] stops it.
pub struct Publisher {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Stops the publisher and waits for it (a batch in flight is finished or abandoned; the
    /// next publisher re-syncs from the stream either way).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts [`run`] in a task of its own.
pub fn spawn(
    pool: PgPool,
    nats_url: String,
    config: PublisherConfig,
    stats: Arc<PublisherStats>,
) -> Publisher {
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(pool, nats_url, config, stats, stop_rx));
    Publisher { stop, task }
}

/// Resolves once `stop` turns true or its sender is gone.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps `d`, or less if `stop` turns true; returns whether to stop.
pub(crate) async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stopped(stop) => true,
        _ = tokio::time::sleep(d) => false,
    }
}

pub(crate) fn is_stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Publishes the log until `stop` turns true (or its sender is dropped): waits to become the
/// cluster's publisher, then keeps the stream level with the log. Errors are logged and
/// retried; the publisher never skips an event and never gives up while running.
pub async fn run(
    pool: PgPool,
    nats_url: String,
    config: PublisherConfig,
    stats: Arc<PublisherStats>,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(e) = config.validate() {
        tracing::error!(error = %e, "the NATS publisher cannot start");
        return;
    }
    let events_stats = stats.clone();
    let client = loop {
        let stats = events_stats.clone();
        let connecting = async_nats::ConnectOptions::new()
            .name("corral-publisher")
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let stats = stats.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            stats.connected.store(true, Ordering::Relaxed);
                            tracing::info!("NATS publisher connected");
                        }
                        async_nats::Event::Disconnected => {
                            stats.connected.store(false, Ordering::Relaxed);
                            tracing::warn!("NATS publisher disconnected; events wait in PostgreSQL until it reconnects");
                        }
                        other => tracing::debug!(event = %other, "NATS publisher connection event"),
                    }
                }
            })
            .connect(nats_url.as_str());
        match connecting.await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(error = %e, nats.url = %nats_url, "cannot use NATS_URL; trying again in 30 s");
                if pause(Duration::from_secs(30), &mut stop).await {
                    return;
                }
            }
        }
    };
    let js = jetstream::ContextBuilder::new()
        .timeout(config.timeout)
        .build(client.clone());
    let mut head = public_log::watch_head(pool.clone(), config.poll);
    loop {
        let Some(mut leader) = lead(&pool, &config, &stats, &mut stop).await else {
            return;
        };
        tracing::info!(nats.stream = %config.stream, nats.subject_prefix = %config.subject_prefix, "this process is the NATS publisher");
        publish_while_leader(
            leader.conn(),
            &client,
            &js,
            &config,
            &stats,
            &mut head,
            &mut stop,
        )
        .await;
        stats.leader.store(false, Ordering::Relaxed);
        // Ending the session releases the lock (a broken one is gone already).
        leader.resign().await;
        if is_stopped(&stop) {
            return;
        }
    }
}

/// Waits until this process leads the publishing of `config.stream` (`None`: stopped).
/// Creates the checkpoint row, so that the lag shows while NATS is unreachable.
async fn lead(
    pool: &PgPool,
    config: &PublisherConfig,
    stats: &PublisherStats,
    stop: &mut watch::Receiver<bool>,
) -> Option<Leader> {
    let leadership = Leadership::Publisher(config.stream.clone());
    loop {
        let mut leader = Leader::wait_for(pool, &leadership, Duration::from_secs(2), stop).await?;
        match public_log::advance(leader.conn(), &config.checkpoint_name(), 0).await {
            Ok(()) => {
                stats.leader.store(true, Ordering::Relaxed);
                return Some(leader);
            }
            Err(e) => {
                tracing::warn!(error = %e, "NATS publisher: cannot create its checkpoint");
                // The lock goes with the session.
                leader.resign().await;
                if pause(Duration::from_secs(1), stop).await {
                    return None;
                }
            }
        }
    }
}
