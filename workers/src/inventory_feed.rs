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

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, Message};
use corral_domain::inventory::{device_from_json, service_from_json, FieldError};
use corral_projections::inventory::{upsert_devices, upsert_services, UpsertOutcome};
use corral_projections::StoreError;
use futures::StreamExt;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::Instrument;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where the feed reads. Tests give each run its own names.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// JetStream stream (file storage) holding both subjects.
    pub stream: String,
    /// Subject of device arrays.
    pub devices_subject: String,
    /// Subject of service arrays.
    pub services_subject: String,
    /// Durable consumer of the device subject.
    pub devices_consumer: String,
    /// Durable consumer of the service subject.
    pub services_consumer: String,
    /// How long JetStream waits before redelivering a message that failed on the database.
    pub retry_delay: Duration,
    /// How long the stream keeps messages.
    pub max_age: Duration,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            stream: "CORRAL_INVENTORY".into(),
            devices_subject: "corral.inventory.devices".into(),
            services_subject: "corral.inventory.services".into(),
            devices_consumer: "corral-inventory-devices".into(),
            services_consumer: "corral-inventory-services".into(),
            retry_delay: Duration::from_secs(5),
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What a feed carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Device arrays.
    Devices,
    /// Service arrays.
    Services,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Devices => "devices",
            Kind::Services => "services",
        }
    }
}

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

/// Applies one message: validates each item of the JSON array and upserts the valid ones.
pub async fn handle(pool: &PgPool, kind: Kind, payload: &[u8]) -> Result<Applied, FeedError> {
    let items: Vec<Value> =
        serde_json::from_slice(payload).map_err(|e| FeedError::Malformed(e.to_string()))?;
    let mut invalid = Vec::new();
    let outcome = match kind {
        Kind::Devices => {
            let valid = split(items, device_from_json, &mut invalid);
            upsert_devices(pool, &valid).await?
        }
        Kind::Services => {
            let valid = split(items, service_from_json, &mut invalid);
            upsert_services(pool, &valid).await?
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

/// Handles, then settles one message: ack after commit, term if malformed, nak on errors.
async fn process(pool: &PgPool, kind: Kind, msg: Message, config: &FeedConfig, stats: &FeedStats) {
    let started = std::time::Instant::now();
    let (settle, result) = match handle(pool, kind, &msg.payload).await {
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
            (AckKind::Ack, "ack")
        }
        Err(FeedError::Malformed(e)) => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "inventory message is not a JSON array; dropping it");
            (AckKind::Term, "term")
        }
        Err(FeedError::Store(e)) => {
            stats.retried.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, retry_in_ms = config.retry_delay.as_millis() as u64, "inventory message not applied; it will be redelivered");
            (AckKind::Nak(Some(config.retry_delay)), "nak")
        }
    };
    // An acknowledgement the server confirms: once this returns, a restart does not redeliver.
    let acked = if matches!(settle, AckKind::Ack) {
        msg.double_ack().await
    } else {
        msg.ack_with(settle).await
    };
    if let Err(e) = acked {
        // Redelivery applies the same (idempotent) upsert again.
        tracing::warn!(error = %e, nats.ack = result, "could not settle an inventory message");
    }
}

/// Resolves once `stop` turns true or its sender is gone (the guard it returns is not `Send`,
/// so it is dropped here).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One subject's durable consumer, until `stop` or an error.
async fn consume(
    pool: &PgPool,
    js: &jetstream::Context,
    config: &FeedConfig,
    kind: Kind,
    stats: &FeedStats,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), BoxError> {
    let stream = js
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![
                config.devices_subject.clone(),
                config.services_subject.clone(),
            ],
            storage: StorageType::File,
            max_age: config.max_age,
            ..Default::default()
        })
        .await?;
    let (name, subject) = match kind {
        Kind::Devices => (&config.devices_consumer, &config.devices_subject),
        Kind::Services => (&config.services_consumer, &config.services_subject),
    };
    let consumer: PullConsumer = stream
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: subject.clone(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    tracing::info!(nats.stream = %config.stream, nats.consumer = %name, nats.subject = %subject, "inventory feed consuming");
    loop {
        tokio::select! {
            _ = stopped(stop) => return Ok(()),
            next = messages.next() => match next {
                None => return Err("the message stream ended".into()),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(msg)) => {
                    let span = tracing::info_span!("inventory_feed.message", nats.subject = %msg.subject, inventory.kind = kind.as_str());
                    process(pool, kind, msg, config, stats).instrument(span).await;
                }
            }
        }
    }
}

/// Runs one consumer, starting it again (with back-off) after errors, until `stop`.
async fn run_kind(
    pool: PgPool,
    js: jetstream::Context,
    config: Arc<FeedConfig>,
    kind: Kind,
    stats: Arc<FeedStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let started = std::time::Instant::now();
        match consume(&pool, &js, &config, kind, &stats, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, inventory.kind = kind.as_str(), retry_in_ms = backoff.as_millis() as u64, "inventory feed interrupted; starting again")
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(250);
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Consumes both subjects until `stop` turns true (or its sender is dropped). Connection
/// problems are logged and retried; the feed never gives up while running.
pub async fn run(
    pool: PgPool,
    nats_url: String,
    config: FeedConfig,
    stats: Arc<FeedStats>,
    mut stop: watch::Receiver<bool>,
) {
    let client = loop {
        let connecting = async_nats::ConnectOptions::new()
            .name("corral-inventory-feed")
            .retry_on_initial_connect()
            .connect(nats_url.as_str());
        match connecting.await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(error = %e, nats.url = %nats_url, "cannot use NATS_URL; trying again in 30 s");
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        }
    };
    let js = jetstream::new(client);
    let config = Arc::new(config);
    tokio::join!(
        run_kind(
            pool.clone(),
            js.clone(),
            config.clone(),
            Kind::Devices,
            stats.clone(),
            stop.clone()
        ),
        run_kind(pool, js, config, Kind::Services, stats, stop),
    );
}
