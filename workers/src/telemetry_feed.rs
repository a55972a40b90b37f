//! The NATS telemetry feed: JSON arrays of sysmon samples on `corral.telemetry.sysmon` and of
//! service checks on `corral.telemetry.services`, one durable JetStream pull consumer each
//! (the shared machinery in [`crate::feed`]). Each message is ingested in one transaction
//! (`docs/health.md`), which also records the message's stream sequence: a redelivered message
//! (an ack lost after the commit) stores nothing twice.
//!
//! - Items that are not samples (checks) are counted and logged; the others apply.
//! - A message that is not a JSON array, or holds more than 5000 items, is terminated (`+TERM`)
//!   and counted as malformed: split such batches before publishing.
//! - A database error naks the message with a delay, so JetStream redelivers it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::Message;
use corral_projections::health::ingest::{ingest_services_once, ingest_sysmon_once, DeliveryKey};
use corral_projections::health::{
    HealthConfig, IngestReport, ServiceCheck, SysmonSample, MAX_INGEST_BATCH,
};
use corral_projections::StoreError;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::feed::{FeedConfig, Kind, MessageHandler};

/// The telemetry feed's defaults: stream `CORRAL_TELEMETRY`; the `devices_*` fields carry
/// sysmon samples, the `services_*` fields service checks. The stream keeps messages a day.
pub fn default_config() -> FeedConfig {
    FeedConfig {
        stream: "CORRAL_TELEMETRY".into(),
        devices_subject: "corral.telemetry.sysmon".into(),
        services_subject: "corral.telemetry.services".into(),
        devices_consumer: "corral-telemetry-sysmon".into(),
        services_consumer: "corral-telemetry-services".into(),
        retry_delay: Duration::from_secs(5),
        max_age: Duration::from_secs(24 * 3600),
    }
}

/// Counters of the telemetry feed, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct TelemetryStats {
    /// Messages applied and acked.
    pub messages: AtomicU64,
    /// Samples and checks stored.
    pub accepted: AtomicU64,
    /// Samples of unknown devices or services (counted, not stored).
    pub unknown: AtomicU64,
    /// Items that were not valid samples or checks, or were rejected (too old, ...).
    pub rejected: AtomicU64,
    /// Messages that were not JSON arrays of at most 5000 items (terminated).
    pub malformed: AtomicU64,
    /// Messages redelivered after they had been applied (nothing stored again).
    pub duplicates: AtomicU64,
    /// Messages nak'ed after a database error (to be redelivered).
    pub retried: AtomicU64,
}

impl TelemetryStats {
    /// The counters in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            (
                "messages",
                "Telemetry feed messages applied",
                &self.messages,
            ),
            (
                "accepted",
                "Telemetry samples and checks stored",
                &self.accepted,
            ),
            (
                "unknown",
                "Telemetry samples of unknown devices or services",
                &self.unknown,
            ),
            (
                "rejected",
                "Telemetry items invalid or rejected",
                &self.rejected,
            ),
            (
                "malformed",
                "Telemetry messages that were not JSON arrays of at most 5000 items",
                &self.malformed,
            ),
            (
                "duplicates",
                "Telemetry messages redelivered after being applied",
                &self.duplicates,
            ),
            (
                "retried",
                "Telemetry messages redelivered after a database error",
                &self.retried,
            ),
        ] {
            let metric = format!("corral_telemetry_feed_{name}_total");
            out += &format!("# HELP {metric} {help}.\n# TYPE {metric} counter\n");
            out += &format!("{metric} {}\n", v.load(Ordering::Relaxed));
        }
        out
    }
}

/// Why a message did not apply.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// Not a JSON array of at most 5000 items: retrying cannot help.
    #[error("{0}")]
    Malformed(String),
    /// The database failed: retry later.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one message did: `None` when it had been applied before.
#[derive(Debug, Default)]
pub struct TelemetryApplied {
    /// The ingest report (`None`: a duplicate delivery).
    pub report: Option<IngestReport>,
    /// Items that did not parse as samples (checks).
    pub invalid: u64,
}

fn parse_all<T: DeserializeOwned>(items: Vec<Value>, invalid: &mut u64) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match serde_json::from_value(item) {
            Ok(v) => out.push(v),
            Err(e) => {
                *invalid += 1;
                if *invalid <= 10 {
                    tracing::warn!(item.index = i, "invalid telemetry item: {e}");
                }
            }
        }
    }
    out
}

/// Applies one message of `kind` (Devices: sysmon samples, Services: checks) once per `key`.
pub async fn handle(
    pool: &PgPool,
    config: &HealthConfig,
    kind: Kind,
    payload: &[u8],
    key: Option<DeliveryKey<'_>>,
) -> Result<TelemetryApplied, TelemetryError> {
    let items: Vec<Value> = serde_json::from_slice(payload)
        .map_err(|e| TelemetryError::Malformed(format!("not a JSON array: {e}")))?;
    if items.len() > MAX_INGEST_BATCH {
        return Err(TelemetryError::Malformed(format!(
            "{} items; at most {MAX_INGEST_BATCH} per message",
            items.len()
        )));
    }
    let mut invalid = 0;
    let report = match kind {
        Kind::Devices => {
            let samples: Vec<SysmonSample> = parse_all(items, &mut invalid);
            ingest_sysmon_once(pool, config, &samples, key).await?
        }
        Kind::Services => {
            let checks: Vec<ServiceCheck> = parse_all(items, &mut invalid);
            ingest_services_once(pool, config, &checks, key).await?
        }
    };
    Ok(TelemetryApplied { report, invalid })
}

struct TelemetryHandler {
    pool: PgPool,
    config: HealthConfig,
    stats: Arc<TelemetryStats>,
    retry_delay: Duration,
}

#[async_trait::async_trait]
impl MessageHandler for TelemetryHandler {
    fn name(&self) -> &'static str {
        "telemetry"
    }

    async fn handle(&self, kind: Kind, consumer: &str, msg: &Message) -> AckKind {
        let stats = &self.stats;
        let key = match msg.info() {
            Ok(info) => Some(DeliveryKey {
                consumer,
                sequence: info.stream_sequence,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "telemetry message without JetStream metadata; applying it without duplicate protection");
                None
            }
        };
        match handle(&self.pool, &self.config, kind, &msg.payload, key).await {
            Ok(applied) => {
                stats.messages.fetch_add(1, Ordering::Relaxed);
                stats.rejected.fetch_add(applied.invalid, Ordering::Relaxed);
                match applied.report {
                    None => {
                        stats.duplicates.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            "telemetry message had been applied already; nothing stored again"
                        );
                    }
                    Some(r) => {
                        stats.accepted.fetch_add(r.accepted, Ordering::Relaxed);
                        stats.unknown.fetch_add(r.unknown, Ordering::Relaxed);
                        stats.rejected.fetch_add(r.rejected, Ordering::Relaxed);
                        if r.unknown > 0 {
                            tracing::warn!(telemetry.unknown = r.unknown, telemetry.unknown_ids = ?r.unknown_ids, "telemetry for unknown devices or services (not stored)");
                        }
                        tracing::debug!(
                            telemetry.accepted = r.accepted,
                            telemetry.rejected = r.rejected,
                            "telemetry message applied"
                        );
                    }
                }
                AckKind::Ack
            }
            Err(TelemetryError::Malformed(e)) => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "dropping a malformed telemetry message");
                AckKind::Term
            }
            Err(TelemetryError::Store(e)) => {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, retry_in_ms = self.retry_delay.as_millis() as u64, "telemetry message not applied; it will be redelivered");
                AckKind::Nak(Some(self.retry_delay))
            }
        }
    }
}

/// Consumes both telemetry subjects until `stop` turns true.
pub async fn run(
    pool: PgPool,
    nats_url: String,
    config: FeedConfig,
    health: HealthConfig,
    stats: Arc<TelemetryStats>,
    stop: watch::Receiver<bool>,
) {
    let handler = Arc::new(TelemetryHandler {
        pool,
        config: health,
        stats,
        retry_delay: config.retry_delay,
    });
    crate::feed::run(handler, nats_url, config, stop).await;
}
