//! Telemetry ingest: validation, unknown ids, raw partitions, per-entity buckets and the
//! incremental update of group rollups, in one transaction per batch.
//!
//! - `validate`: which samples are stored, which are rejected and why (pure);
//! - `fold`: what a batch changes in the entity buckets and group rollups (pure);
//! - `write`: the SQL; the functions below put the three together.

mod fold;
mod validate;
mod write;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use corral_domain::codes::Code;
use serde::{Deserialize, Serialize, Serializer};
use sqlx::PgPool;

use super::{HealthConfig, MAX_INGEST_BATCH};
use crate::StoreError;

/// Longest device or service id accepted.
pub const MAX_ID_CHARS: usize = 256;
/// How many unknown ids a report lists (all are counted).
pub const MAX_REPORTED_UNKNOWN: usize = 100;
/// How many rejections a report lists (all are counted).
pub const MAX_REPORTED_REJECTIONS: usize = 100;

/// One sysmon sample (JSON as on NATS: `deviceId`, `ts`, `cpuPercent`, `memPercent`,
/// `diskPercent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SysmonSample {
    /// The device (`devices.id`).
    pub device_id: String,
    /// When it was measured.
    pub ts: DateTime<Utc>,
    /// CPU use, 0 to 100.
    pub cpu_percent: f64,
    /// Memory use, 0 to 100.
    pub mem_percent: f64,
    /// Disk use, 0 to 100.
    pub disk_percent: f64,
}

/// One service check (`serviceId`, `ts`, `available`, `latencyMs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceCheck {
    /// The service (`services.id`).
    pub service_id: String,
    /// When it was checked.
    pub ts: DateTime<Utc>,
    /// Whether the service answered.
    pub available: bool,
    /// Its response time in milliseconds, when measured (0 to 3,600,000).
    #[serde(default)]
    pub latency_ms: Option<f64>,
}

/// A sample that was not stored because it is invalid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    /// Its index in the batch.
    pub index: usize,
    /// The offending field (`cpuPercent`, `ts`, ...).
    pub field: &'static str,
    /// Why.
    pub message: String,
    /// [`Code::Invalid`], [`Code::TooOld`] or [`Code::InFuture`].
    #[serde(serialize_with = "code_text")]
    pub code: Code,
}

/// What one ingest call did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IngestReport {
    /// Samples stored.
    pub accepted: u64,
    /// Samples for devices or services the inventory does not know (counted, not stored).
    pub unknown: u64,
    /// Those ids, at most [`MAX_REPORTED_UNKNOWN`], sorted.
    pub unknown_ids: Vec<String>,
    /// Invalid samples (not stored).
    pub rejected: u64,
    /// The first [`MAX_REPORTED_REJECTIONS`] of them.
    pub rejections: Vec<Rejection>,
    /// Group rollup rows changed.
    pub rollups_updated: u64,
}

impl IngestReport {
    /// Adds another report's counts (for callers that ingest in several batches).
    pub fn merge(&mut self, other: IngestReport, index_offset: usize) {
        self.accepted += other.accepted;
        self.unknown += other.unknown;
        for id in other.unknown_ids {
            if self.unknown_ids.len() < MAX_REPORTED_UNKNOWN && !self.unknown_ids.contains(&id) {
                self.unknown_ids.push(id);
            }
        }
        self.unknown_ids.sort();
        self.rejected += other.rejected;
        for mut r in other.rejections {
            if self.rejections.len() < MAX_REPORTED_REJECTIONS {
                r.index += index_offset;
                self.rejections.push(r);
            }
        }
        self.rollups_updated += other.rollups_updated;
    }

    /// Counts samples of unknown ids (per id) and lists the first ids.
    fn note_unknown(&mut self, unknown: &BTreeMap<String, i64>) {
        if unknown.is_empty() {
            return;
        }
        self.unknown = unknown.values().map(|&n| n as u64).sum();
        self.unknown_ids = unknown.keys().take(MAX_REPORTED_UNKNOWN).cloned().collect();
    }

    fn reject(&mut self, index: usize, field: &'static str, code: Code, message: String) {
        self.rejected += 1;
        if self.rejections.len() < MAX_REPORTED_REJECTIONS {
            self.rejections.push(Rejection {
                index,
                field,
                message,
                code,
            });
        }
    }
}

fn code_text<S: Serializer>(code: &Code, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(code.as_str())
}

/// A message delivery (a JetStream stream sequence, per consumer) that must apply once.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryKey<'a> {
    /// The durable consumer.
    pub consumer: &'a str,
    /// The message's stream sequence.
    pub sequence: u64,
}

/// Stores sysmon samples: see the module docs. At most [`MAX_INGEST_BATCH`] per call.
pub async fn ingest_sysmon(
    pool: &PgPool,
    config: &HealthConfig,
    samples: &[SysmonSample],
) -> Result<IngestReport, StoreError> {
    Ok(ingest_sysmon_once(pool, config, samples, None)
        .await?
        .unwrap_or_default())
}

/// Like [`ingest_sysmon`], applying a delivery at most once: with a `key`, records it in the
/// batch's transaction and returns `None`, storing nothing, when it was applied before.
pub async fn ingest_sysmon_once(
    pool: &PgPool,
    config: &HealthConfig,
    samples: &[SysmonSample],
    key: Option<DeliveryKey<'_>>,
) -> Result<Option<IngestReport>, StoreError> {
    if samples.len() > MAX_INGEST_BATCH {
        return Err(StoreError::Data(format!(
            "at most {MAX_INGEST_BATCH} samples per call, not {}",
            samples.len()
        )));
    }
    let (mut report, mut valid) = validate::check_sysmon(samples, config, Utc::now());
    if valid.is_empty() {
        return Ok(Some(report));
    }
    let ids = validate::distinct_ids(&valid, |s| &s.device_id);
    // Partitions first, before this batch's transaction holds any lock (see
    // ensure_partitions).
    write::ensure_partitions(pool, &validate::days(&valid, |s| s.ts)).await?;
    let mut tx = pool.begin().await?;
    if !write::record_delivery(&mut tx, key).await? {
        return Ok(None);
    }
    let known = write::known_ids(&mut tx, "devices", &ids).await?;
    let unknown = validate::keep_known(&mut valid, &known, |s| &s.device_id);
    report.note_unknown(&unknown);
    write::store_unknown(&mut tx, "device", &unknown).await?;
    if valid.is_empty() {
        tx.commit().await?;
        return Ok(Some(report));
    }
    write::insert_sysmon(&mut tx, &valid).await?;
    report.accepted = valid.len() as u64;
    let buckets = fold::device_buckets(&valid);
    write::lock_health(&mut tx).await?;
    let changed = write::upsert_device_buckets(&mut tx, &buckets).await?;
    let groups = write::groups_of(&mut tx, "D", &ids).await?;
    let deltas = fold::device_deltas(&changed, &groups);
    report.rollups_updated = write::apply_deltas(&mut tx, &deltas).await?;
    tx.commit().await?;
    Ok(Some(report))
}

/// Stores service checks: see the module docs. At most [`MAX_INGEST_BATCH`] per call.
pub async fn ingest_services(
    pool: &PgPool,
    config: &HealthConfig,
    checks: &[ServiceCheck],
) -> Result<IngestReport, StoreError> {
    Ok(ingest_services_once(pool, config, checks, None)
        .await?
        .unwrap_or_default())
}

/// Like [`ingest_services`], applying a delivery at most once: with a `key`, records it in the
/// batch's transaction and returns `None`, storing nothing, when it was applied before.
pub async fn ingest_services_once(
    pool: &PgPool,
    config: &HealthConfig,
    checks: &[ServiceCheck],
    key: Option<DeliveryKey<'_>>,
) -> Result<Option<IngestReport>, StoreError> {
    if checks.len() > MAX_INGEST_BATCH {
        return Err(StoreError::Data(format!(
            "at most {MAX_INGEST_BATCH} checks per call, not {}",
            checks.len()
        )));
    }
    let (mut report, mut valid) = validate::check_services(checks, config, Utc::now());
    if valid.is_empty() {
        return Ok(Some(report));
    }
    let ids = validate::distinct_ids(&valid, |c| &c.service_id);
    write::ensure_partitions(pool, &validate::days(&valid, |c| c.ts)).await?;
    let mut tx = pool.begin().await?;
    if !write::record_delivery(&mut tx, key).await? {
        return Ok(None);
    }
    let known = write::known_ids(&mut tx, "services", &ids).await?;
    let unknown = validate::keep_known(&mut valid, &known, |c| &c.service_id);
    report.note_unknown(&unknown);
    write::store_unknown(&mut tx, "service", &unknown).await?;
    if valid.is_empty() {
        tx.commit().await?;
        return Ok(Some(report));
    }
    write::insert_services(&mut tx, &valid).await?;
    report.accepted = valid.len() as u64;
    let buckets = fold::service_buckets(&valid);
    write::lock_health(&mut tx).await?;
    let changed = write::upsert_service_buckets(&mut tx, &buckets).await?;
    let groups = write::groups_of(&mut tx, "S", &ids).await?;
    let deltas = fold::service_deltas(&changed, &groups);
    report.rollups_updated = write::apply_deltas(&mut tx, &deltas).await?;
    tx.commit().await?;
    Ok(Some(report))
}
