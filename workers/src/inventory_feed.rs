//! The NATS inventory feed: discovery systems publish JSON arrays of device (or service)
//! inputs to `corral.inventory.devices` (`corral.inventory.services`); a durable JetStream pull
//! consumer per subject applies each message's valid items and acks it after the commit.
//!
//! - Invalid items are logged and counted; the rest of the message applies.
//! - A malformed message (not a JSON array) is terminated (`+TERM`): never redelivered.
//! - A database error naks the message with a delay, so JetStream redelivers it.
//!
//! Redelivery is harmless: upserts are idempotent, and a repeated one changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::Message;
use corral_domain::inventory::{device_from_json, service_from_json, FieldError};
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::inventory::{upsert_devices, upsert_services, UpsertOutcome, WriteContext};
use corral_projections::StoreError;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::feed::MessageHandler;
pub use crate::feed::{FeedConfig, Kind};

/// Counters of the feed (all kinds together), for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Messages applied and acked.
    pub messages: AtomicU64,
    /// Items written (new, revived or changed).
    pub upserted: AtomicU64,
    /// Valid items that changed nothing.
    pub unchanged: AtomicU64,
    /// Items rejected by validation.
    pub invalid: AtomicU64,
    /// Messages that were not JSON arrays (terminated).
    pub malformed: AtomicU64,
    /// Messages nak'ed after a database error (to be redelivered).
    pub retried: AtomicU64,
}

impl FeedStats {
    /// The counters in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            (
                "messages",
                "Inventory feed messages applied",
                &self.messages,
            ),
            ("upserted", "Inventory feed items written", &self.upserted),
            (
                "unchanged",
                "Inventory feed items that changed nothing",
                &self.unchanged,
            ),
            ("invalid", "Inventory feed items rejected", &self.invalid),
            (
                "malformed",
                "Inventory feed messages that were not JSON arrays",
                &self.malformed,
            ),
            (
                "retried",
                "Inventory feed messages redelivered after a database error",
                &self.retried,
            ),
        ] {
            let metric = format!("corral_inventory_feed_{name}_total");
            out += &format!("# HELP {metric} {help}.\n# TYPE {metric} counter\n");
            out += &format!("{metric} {}\n", v.load(Ordering::Relaxed));
        }
        out
    }
}

/// What one message did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Rows written and valid no-ops.
    pub outcome: UpsertOutcome,
    /// Invalid items: index in the array and why.
    pub invalid: Vec<(usize, Vec<FieldError>)>,
}

/// Why a message was not applied.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Not a JSON array: retrying cannot help.
    #[error("not a JSON array: {0}")]
    Malformed(String),
    /// The database failed: retry later.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who a feed message writes as: actor `<consumer>` with role `feed`, source `feed`,
/// `metadata.feed` = `<stream>/<subject>`, and the message's stream sequence as correlation
/// id (a redelivered message keeps it).
pub fn feed_writer(stream: &str, subject: &str, consumer: &str, message: &str) -> WriteContext {
    let correlation = format!("{stream}:{message}");
    WriteContext {
        metadata: EventMetadata {
            // The durable's name, without the stream's creation time.
            actor_subject: consumer.split('@').next().unwrap_or(consumer).to_string(),
            actor_role: "feed".into(),
            source: Source::Feed,
            causation_id: correlation.clone(),
            correlation_id: correlation,
            reason: None,
            client_addr: None,
        },
        feed: Some(format!("{stream}/{subject}")),
    }
}

/// Applies one message: validates each item of the JSON array and upserts the valid ones.
pub async fn handle(
    pool: &PgPool,
    kind: Kind,
    payload: &[u8],
    by: &WriteContext,
) -> Result<Applied, FeedError> {
    let items: Vec<Value> =
        serde_json::from_slice(payload).map_err(|e| FeedError::Malformed(e.to_string()))?;
    let mut invalid = Vec::new();
    let outcome = match kind {
        Kind::Devices => {
            let valid = split(items, device_from_json, &mut invalid);
            upsert_devices(pool, &valid, by).await?
        }
        Kind::Services => {
            let valid = split(items, service_from_json, &mut invalid);
            upsert_services(pool, &valid, by).await?
        }
    };
    Ok(Applied { outcome, invalid })
}

fn split<T>(
    items: Vec<Value>,
    validate: fn(Value) -> Result<T, Vec<FieldError>>,
    invalid: &mut Vec<(usize, Vec<FieldError>)>,
) -> Vec<T> {
    let mut valid = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match validate(item) {
            Ok(v) => valid.push(v),
            Err(e) => invalid.push((i, e)),
        }
    }
    valid
}

/// The inventory feed's handler.
struct InventoryHandler {
    pool: PgPool,
    stats: Arc<FeedStats>,
    retry_delay: Duration,
}

#[async_trait::async_trait]
impl MessageHandler for InventoryHandler {
    fn name(&self) -> &'static str {
        "inventory"
    }

    /// Ack after commit, term if malformed, nak on errors.
    async fn handle(&self, kind: Kind, consumer: &str, msg: &Message) -> AckKind {
        let (pool, stats) = (&self.pool, &self.stats);
        let started = std::time::Instant::now();
        let (stream, sequence) = match msg.info() {
            Ok(info) => (info.stream.to_string(), info.stream_sequence.to_string()),
            Err(_) => (String::new(), String::new()),
        };
        let by = feed_writer(&stream, &msg.subject, consumer, &sequence);
        match handle(pool, kind, &msg.payload, &by).await {
            Ok(applied) => {
                for (i, errors) in applied.invalid.iter().take(10) {
                    for e in errors {
                        tracing::warn!(item.index = i, item.field = %e.field, "invalid inventory item: {}", e.message);
                    }
                }
                stats.messages.fetch_add(1, Ordering::Relaxed);
                stats
                    .upserted
                    .fetch_add(applied.outcome.upserted, Ordering::Relaxed);
                stats
                    .unchanged
                    .fetch_add(applied.outcome.unchanged, Ordering::Relaxed);
                stats
                    .invalid
                    .fetch_add(applied.invalid.len() as u64, Ordering::Relaxed);
                tracing::info!(
                    inventory.upserted = applied.outcome.upserted,
                    inventory.unchanged = applied.outcome.unchanged,
                    inventory.invalid = applied.invalid.len(),
                    duration_ms = started.elapsed().as_millis() as u64,
                    "inventory message applied"
                );
                AckKind::Ack
            }
            Err(FeedError::Malformed(e)) => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "inventory message is not a JSON array; dropping it");
                AckKind::Term
            }
            Err(FeedError::Store(e)) => {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, retry_in_ms = self.retry_delay.as_millis() as u64, "inventory message not applied; it will be redelivered");
                AckKind::Nak(Some(self.retry_delay))
            }
        }
    }
}

/// Consumes both subjects until `stop` turns true (or its sender is dropped). Connection
/// problems are logged and retried; the feed never gives up while running.
pub async fn run(
    pool: PgPool,
    nats_url: String,
    config: FeedConfig,
    stats: Arc<FeedStats>,
    stop: watch::Receiver<bool>,
) {
    let handler = Arc::new(InventoryHandler {
        pool,
        stats,
        retry_delay: config.retry_delay,
    });
    crate::feed::run(handler, nats_url, config, stop).await;
}
