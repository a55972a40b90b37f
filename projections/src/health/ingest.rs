//! Telemetry ingest: validation, unknown ids, raw partitions, per-entity buckets and the
//! incremental update of group rollups, in one transaction per batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::{bin_of, BucketSize, HealthConfig, BINS, MAX_INGEST_BATCH, ROLLUP_ADD};
use crate::StoreError;

/// Longest device or service id accepted.
pub const MAX_ID_CHARS: usize = 256;
/// How many unknown ids a report lists (all are counted).
pub const MAX_REPORTED_UNKNOWN: usize = 100;
/// How many rejections a report lists (all are counted).
pub const MAX_REPORTED_REJECTIONS: usize = 100;

/// One sysmon sample (JSON as on NATS: `deviceId`, `ts`, `cpuPercent`, `memPercent`,
/// `diskPercent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// `INVALID`, `TOO_OLD` or `IN_FUTURE`.
    pub code: &'static str,
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

    fn reject(&mut self, index: usize, field: &'static str, code: &'static str, message: String) {
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

/// A message delivery (a JetStream stream sequence, per consumer) that must apply once.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryKey<'a> {
    /// The durable consumer.
    pub consumer: &'a str,
    /// The message's stream sequence.
    pub sequence: u64,
}

/// Records `key` in `telemetry_feed_applied`; false when it was there already.
async fn record_delivery(
    conn: &mut PgConnection,
    key: Option<DeliveryKey<'_>>,
) -> Result<bool, StoreError> {
    let Some(key) = key else {
        return Ok(true);
    };
    let inserted = sqlx::query(
        "INSERT INTO telemetry_feed_applied (consumer, stream_seq) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(key.consumer)
    .bind(key.sequence as i64)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Checks an entity id and timestamp; records a rejection and returns false when bad.
fn check_common(
    report: &mut IngestReport,
    index: usize,
    id_field: &'static str,
    id: &str,
    ts: DateTime<Utc>,
    config: &HealthConfig,
    now: DateTime<Utc>,
) -> bool {
    if id.trim().is_empty() || id.chars().count() > MAX_ID_CHARS {
        report.reject(
            index,
            id_field,
            "INVALID",
            format!("must be a non-empty id of at most {MAX_ID_CHARS} characters"),
        );
        return false;
    }
    // No inventory id holds one, and a NUL would fail the whole batch in PostgreSQL.
    if id.chars().any(char::is_control) {
        report.reject(
            index,
            id_field,
            "INVALID",
            "must not contain control characters".into(),
        );
        return false;
    }
    if ts < config.raw_cutoff(now) {
        report.reject(
            index,
            "ts",
            "TOO_OLD",
            format!(
                "{} is older than the telemetry retention ({} days)",
                ts.to_rfc3339(),
                config.raw_retention.num_days()
            ),
        );
        return false;
    }
    if ts > now + config.max_future {
        report.reject(
            index,
            "ts",
            "IN_FUTURE",
            format!(
                "{} is more than {} s in the future",
                ts.to_rfc3339(),
                config.max_future.num_seconds()
            ),
        );
        return false;
    }
    true
}

fn check_percent(report: &mut IngestReport, index: usize, field: &'static str, v: f64) -> bool {
    if v.is_finite() && (0.0..=100.0).contains(&v) {
        true
    } else {
        report.reject(
            index,
            field,
            "INVALID",
            format!("must be a number from 0 to 100, not {v}"),
        );
        false
    }
}

/// Creates the daily partitions the samples' days need (own transaction: creating a
/// partition locks the parent table, which must not be held through an ingest).
async fn ensure_partitions(pool: &PgPool, days: &BTreeSet<NaiveDate>) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (days.first(), days.last()) else {
        return Ok(());
    };
    let missing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::date[]) d
          WHERE to_regclass('public.telemetry_sysmon_p' || to_char(d, 'YYYYMMDD')) IS NULL
             OR to_regclass('public.telemetry_services_p' || to_char(d, 'YYYYMMDD')) IS NULL",
    )
    .bind(days.iter().copied().collect::<Vec<_>>())
    .fetch_one(pool)
    .await?;
    if missing > 0 {
        sqlx::query("SELECT corral_telemetry_partitions($1, $2)")
            .bind(first)
            .bind(last)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Which of `ids` the inventory knows (not removed).
async fn known_ids(
    conn: &mut PgConnection,
    table: &str,
    ids: &[String],
) -> Result<BTreeSet<String>, StoreError> {
    let rows: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT t.id FROM unnest($1::text[]) AS x(id) JOIN {table} t ON t.id = x.id
          WHERE t.removed_at IS NULL"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Counts samples of unknown ids in `telemetry_unknown` and in the report.
async fn count_unknown(
    conn: &mut PgConnection,
    kind: &str,
    unknown: &BTreeMap<String, i64>,
    report: &mut IngestReport,
) -> Result<(), StoreError> {
    if unknown.is_empty() {
        return Ok(());
    }
    report.unknown = unknown.values().map(|&n| n as u64).sum();
    report.unknown_ids = unknown.keys().take(MAX_REPORTED_UNKNOWN).cloned().collect();
    let ids: Vec<&String> = unknown.keys().collect();
    let counts: Vec<i64> = unknown.values().copied().collect();
    sqlx::query(
        "INSERT INTO telemetry_unknown (kind, entity_id, samples)
         SELECT $1, id, n FROM unnest($2::text[], $3::bigint[]) AS x(id, n) ORDER BY id
         ON CONFLICT (kind, entity_id) DO UPDATE
            SET samples = telemetry_unknown.samples + EXCLUDED.samples, last_seen = now()",
    )
    .bind(kind)
    .bind(ids)
    .bind(counts)
    .execute(conn)
    .await?;
    Ok(())
}

/// The groups (and kind) whose rollups count each of `ids`.
async fn groups_of(
    conn: &mut PgConnection,
    kind: &str,
    ids: &[String],
) -> Result<HashMap<String, Vec<Uuid>>, StoreError> {
    let rows = sqlx::query(
        "SELECT h.member_id, h.group_id FROM unnest($1::text[]) AS x(id)
           JOIN health_members h ON h.member_id = x.id AND h.kind = $2::\"char\"",
    )
    .bind(ids)
    .bind(kind)
    .fetch_all(conn)
    .await?;
    let mut out: HashMap<String, Vec<Uuid>> = HashMap::new();
    for row in rows {
        out.entry(row.try_get("member_id")?)
            .or_default()
            .push(row.try_get("group_id")?);
    }
    Ok(out)
}

type BucketKey = (String, i32, DateTime<Utc>);
type GroupKey = (Uuid, i32, DateTime<Utc>);

/// One device's bucket, accumulated from a batch.
#[derive(Debug, Clone, Copy, Default)]
struct DeviceAcc {
    samples: i32,
    sums: [f64; 3],
    maxes: [f32; 3],
}

/// The change to one group rollup row.
#[derive(Debug, Clone)]
struct RollupDelta {
    samples: i64,
    devices: i32,
    sums: [f64; 3],
    maxes: [Option<f32>; 3],
    bins: [[i32; BINS]; 3],
    checks: i64,
    up: i32,
    down: i32,
}

impl Default for RollupDelta {
    fn default() -> Self {
        RollupDelta {
            samples: 0,
            devices: 0,
            sums: [0.0; 3],
            maxes: [None; 3],
            bins: [[0; BINS]; 3],
            checks: 0,
            up: 0,
            down: 0,
        }
    }
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
    let now = Utc::now();
    let mut report = IngestReport::default();
    let mut valid: Vec<&SysmonSample> = Vec::with_capacity(samples.len());
    for (i, s) in samples.iter().enumerate() {
        if check_common(&mut report, i, "deviceId", &s.device_id, s.ts, config, now)
            && check_percent(&mut report, i, "cpuPercent", s.cpu_percent)
            && check_percent(&mut report, i, "memPercent", s.mem_percent)
            && check_percent(&mut report, i, "diskPercent", s.disk_percent)
        {
            valid.push(s);
        }
    }
    if valid.is_empty() {
        return Ok(Some(report));
    }
    let ids: Vec<String> = valid
        .iter()
        .map(|s| s.device_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Partitions first, before this batch's transaction holds any lock (see
    // ensure_partitions).
    let days: BTreeSet<NaiveDate> = valid.iter().map(|s| s.ts.date_naive()).collect();
    ensure_partitions(pool, &days).await?;
    let mut tx = pool.begin().await?;
    if !record_delivery(&mut tx, key).await? {
        return Ok(None);
    }
    let known = known_ids(&mut tx, "devices", &ids).await?;
    let mut unknown: BTreeMap<String, i64> = BTreeMap::new();
    valid.retain(|s| {
        let ok = known.contains(&s.device_id);
        if !ok {
            *unknown.entry(s.device_id.clone()).or_default() += 1;
        }
        ok
    });
    count_unknown(&mut tx, "device", &unknown, &mut report).await?;
    if valid.is_empty() {
        tx.commit().await?;
        return Ok(Some(report));
    }

    // Values are stored as real: fold the same rounded values into the buckets.
    let v = |x: f64| x as f32;
    sqlx::query(
        "INSERT INTO telemetry_sysmon (device_id, ts, cpu_percent, mem_percent, disk_percent)
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::real[], $4::real[], $5::real[])",
    )
    .bind(
        valid
            .iter()
            .map(|s| s.device_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(valid.iter().map(|s| s.ts).collect::<Vec<_>>())
    .bind(valid.iter().map(|s| v(s.cpu_percent)).collect::<Vec<_>>())
    .bind(valid.iter().map(|s| v(s.mem_percent)).collect::<Vec<_>>())
    .bind(valid.iter().map(|s| v(s.disk_percent)).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    report.accepted = valid.len() as u64;

    let mut buckets: BTreeMap<BucketKey, DeviceAcc> = BTreeMap::new();
    for s in &valid {
        let values = [v(s.cpu_percent), v(s.mem_percent), v(s.disk_percent)];
        for size in BucketSize::ALL {
            let acc = buckets
                .entry((s.device_id.clone(), size.column(), size.start_of(s.ts)))
                .or_default();
            acc.samples += 1;
            let first = acc.samples == 1;
            for ((sum, max), &v) in acc.sums.iter_mut().zip(&mut acc.maxes).zip(&values) {
                *sum += f64::from(v);
                *max = if first { v } else { max.max(v) };
            }
        }
    }

    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(crate::locks::Lock::Health.key())
        .execute(&mut *tx)
        .await?;
    let keys: Vec<&BucketKey> = buckets.keys().collect();
    let accs: Vec<&DeviceAcc> = buckets.values().collect();
    let col = |f: &dyn Fn(&DeviceAcc) -> f64| accs.iter().map(|a| f(a)).collect::<Vec<f64>>();
    let colf = |f: &dyn Fn(&DeviceAcc) -> f32| accs.iter().map(|a| f(a)).collect::<Vec<f32>>();
    // `old` reads the rows as they were before this statement (one snapshot); the lock
    // keeps anyone else from changing them in between.
    let rows = sqlx::query(
        "WITH d AS (
             SELECT * FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::int[],
                                  $5::float8[], $6::real[], $7::float8[], $8::real[],
                                  $9::float8[], $10::real[])
                 AS t(device_id, bucket_size, bucket_start, samples, cpu_sum, cpu_max,
                      mem_sum, mem_max, disk_sum, disk_max)),
         old AS (
             SELECT b.device_id, b.bucket_size, b.bucket_start, b.samples, b.cpu_sum,
                    b.mem_sum, b.disk_sum
               FROM health_device_buckets b
               JOIN d USING (device_id, bucket_size, bucket_start)),
         up AS (
             INSERT INTO health_device_buckets AS b
             SELECT * FROM d ORDER BY device_id, bucket_size, bucket_start
             ON CONFLICT (device_id, bucket_size, bucket_start) DO UPDATE
                SET samples = b.samples + EXCLUDED.samples,
                    cpu_sum = b.cpu_sum + EXCLUDED.cpu_sum,
                    cpu_max = greatest(b.cpu_max, EXCLUDED.cpu_max),
                    mem_sum = b.mem_sum + EXCLUDED.mem_sum,
                    mem_max = greatest(b.mem_max, EXCLUDED.mem_max),
                    disk_sum = b.disk_sum + EXCLUDED.disk_sum,
                    disk_max = greatest(b.disk_max, EXCLUDED.disk_max)
             RETURNING b.device_id, b.bucket_size, b.bucket_start, b.samples, b.cpu_sum,
                       b.cpu_max, b.mem_sum, b.mem_max, b.disk_sum, b.disk_max)
         SELECT up.*, old.samples AS old_samples, old.cpu_sum AS old_cpu,
                old.mem_sum AS old_mem, old.disk_sum AS old_disk
           FROM up LEFT JOIN old USING (device_id, bucket_size, bucket_start)",
    )
    .bind(keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
    .bind(accs.iter().map(|a| a.samples).collect::<Vec<_>>())
    .bind(col(&|a| a.sums[0]))
    .bind(colf(&|a| a.maxes[0]))
    .bind(col(&|a| a.sums[1]))
    .bind(colf(&|a| a.maxes[1]))
    .bind(col(&|a| a.sums[2]))
    .bind(colf(&|a| a.maxes[2]))
    .fetch_all(&mut *tx)
    .await?;

    let groups = groups_of(&mut tx, "D", &ids).await?;
    let mut deltas: BTreeMap<GroupKey, RollupDelta> = BTreeMap::new();
    for row in rows {
        let device: String = row.try_get("device_id")?;
        let Some(device_groups) = groups.get(&device) else {
            continue;
        };
        let size: i32 = row.try_get("bucket_size")?;
        let start: DateTime<Utc> = row.try_get("bucket_start")?;
        let samples: i32 = row.try_get("samples")?;
        let sums: [f64; 3] = [
            row.try_get("cpu_sum")?,
            row.try_get("mem_sum")?,
            row.try_get("disk_sum")?,
        ];
        let maxes: [f32; 3] = [
            row.try_get("cpu_max")?,
            row.try_get("mem_max")?,
            row.try_get("disk_max")?,
        ];
        let old_samples: Option<i32> = row.try_get("old_samples")?;
        let old_sums: [Option<f64>; 3] = [
            row.try_get("old_cpu")?,
            row.try_get("old_mem")?,
            row.try_get("old_disk")?,
        ];
        for &group in device_groups {
            let d = deltas.entry((group, size, start)).or_default();
            d.samples += i64::from(samples - old_samples.unwrap_or(0));
            if old_samples.is_none() {
                d.devices += 1;
            }
            for m in 0..3 {
                d.sums[m] += sums[m] - old_sums[m].unwrap_or(0.0);
                d.maxes[m] = Some(d.maxes[m].map_or(maxes[m], |x| x.max(maxes[m])));
                if let (Some(n), Some(s)) = (old_samples, old_sums[m]) {
                    d.bins[m][bin_of(s / f64::from(n))] -= 1;
                }
                d.bins[m][bin_of(sums[m] / f64::from(samples))] += 1;
            }
        }
    }
    report.rollups_updated = apply_deltas(&mut tx, &deltas).await?;
    tx.commit().await?;
    Ok(Some(report))
}

/// Adds rollup deltas (sorted by key, so concurrent writers lock rows in one order).
async fn apply_deltas(
    conn: &mut PgConnection,
    deltas: &BTreeMap<GroupKey, RollupDelta>,
) -> Result<u64, StoreError> {
    if deltas.is_empty() {
        return Ok(0);
    }
    let keys: Vec<&GroupKey> = deltas.keys().collect();
    let ds: Vec<&RollupDelta> = deltas.values().collect();
    let flat = |m: usize| -> Vec<i32> { ds.iter().flat_map(|d| d.bins[m]).collect() };
    let sums = |m: usize| -> Vec<f64> { ds.iter().map(|d| d.sums[m]).collect() };
    let maxes = |m: usize| -> Vec<Option<f32>> { ds.iter().map(|d| d.maxes[m]).collect() };
    let b = BINS as i64;
    let sql = format!(
        "INSERT INTO health_rollups AS r (group_id, bucket_size, bucket_start, samples,
             devices_reporting, cpu_sum, cpu_max, cpu_bins, mem_sum, mem_max, mem_bins,
             disk_sum, disk_max, disk_bins, checks, services_up, services_down)
         SELECT g, sz, st, n, dv, cs, cm,
                CASE WHEN cm IS NULL THEN NULL ELSE ($15::int[])[(i - 1) * {b} + 1 : i * {b}] END,
                ms, mm,
                CASE WHEN mm IS NULL THEN NULL ELSE ($16::int[])[(i - 1) * {b} + 1 : i * {b}] END,
                ds, dm,
                CASE WHEN dm IS NULL THEN NULL ELSE ($17::int[])[(i - 1) * {b} + 1 : i * {b}] END,
                ck, su, sd
           FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::bigint[], $5::int[],
                       $6::float8[], $7::real[], $8::float8[], $9::real[], $10::float8[],
                       $11::real[], $12::bigint[], $13::int[], $14::int[])
                WITH ORDINALITY AS t(g, sz, st, n, dv, cs, cm, ms, mm, ds, dm, ck, su, sd, i)
          ORDER BY g, sz, st
         {ROLLUP_ADD}"
    );
    let done = sqlx::query(&sql)
        .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
        .bind(ds.iter().map(|d| d.samples).collect::<Vec<_>>())
        .bind(ds.iter().map(|d| d.devices).collect::<Vec<_>>())
        .bind(sums(0))
        .bind(maxes(0))
        .bind(sums(1))
        .bind(maxes(1))
        .bind(sums(2))
        .bind(maxes(2))
        .bind(ds.iter().map(|d| d.checks).collect::<Vec<_>>())
        .bind(ds.iter().map(|d| d.up).collect::<Vec<_>>())
        .bind(ds.iter().map(|d| d.down).collect::<Vec<_>>())
        .bind(flat(0))
        .bind(flat(1))
        .bind(flat(2))
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Service status in a bucket: down when any check failed, up when all passed.
fn status(up: i32, down: i32) -> Option<bool> {
    if down > 0 {
        Some(false)
    } else if up > 0 {
        Some(true)
    } else {
        None
    }
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
    let now = Utc::now();
    let mut report = IngestReport::default();
    let mut valid: Vec<&ServiceCheck> = Vec::with_capacity(checks.len());
    for (i, c) in checks.iter().enumerate() {
        if !check_common(
            &mut report,
            i,
            "serviceId",
            &c.service_id,
            c.ts,
            config,
            now,
        ) {
            continue;
        }
        if let Some(l) = c.latency_ms {
            if !(l.is_finite() && (0.0..=3_600_000.0).contains(&l)) {
                report.reject(
                    i,
                    "latencyMs",
                    "INVALID",
                    format!("must be a number of milliseconds from 0 to 3600000, not {l}"),
                );
                continue;
            }
        }
        valid.push(c);
    }
    if valid.is_empty() {
        return Ok(Some(report));
    }
    let ids: Vec<String> = valid
        .iter()
        .map(|c| c.service_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let days: BTreeSet<NaiveDate> = valid.iter().map(|c| c.ts.date_naive()).collect();
    ensure_partitions(pool, &days).await?;
    let mut tx = pool.begin().await?;
    if !record_delivery(&mut tx, key).await? {
        return Ok(None);
    }
    let known = known_ids(&mut tx, "services", &ids).await?;
    let mut unknown: BTreeMap<String, i64> = BTreeMap::new();
    valid.retain(|c| {
        let ok = known.contains(&c.service_id);
        if !ok {
            *unknown.entry(c.service_id.clone()).or_default() += 1;
        }
        ok
    });
    count_unknown(&mut tx, "service", &unknown, &mut report).await?;
    if valid.is_empty() {
        tx.commit().await?;
        return Ok(Some(report));
    }
    sqlx::query(
        "INSERT INTO telemetry_services (service_id, ts, available, latency_ms)
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bool[], $4::real[])",
    )
    .bind(
        valid
            .iter()
            .map(|c| c.service_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(valid.iter().map(|c| c.ts).collect::<Vec<_>>())
    .bind(valid.iter().map(|c| c.available).collect::<Vec<_>>())
    .bind(
        valid
            .iter()
            .map(|c| c.latency_ms.map(|l| l as f32))
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    report.accepted = valid.len() as u64;

    // (checks, up, down, latency sum, latency count) per service bucket.
    let mut buckets: BTreeMap<BucketKey, (i32, i32, i32, f64, i32)> = BTreeMap::new();
    for c in &valid {
        for size in BucketSize::ALL {
            let acc = buckets
                .entry((c.service_id.clone(), size.column(), size.start_of(c.ts)))
                .or_default();
            acc.0 += 1;
            if c.available {
                acc.1 += 1;
            } else {
                acc.2 += 1;
            }
            if let Some(l) = c.latency_ms {
                acc.3 += f64::from(l as f32);
                acc.4 += 1;
            }
        }
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(crate::locks::Lock::Health.key())
        .execute(&mut *tx)
        .await?;
    let keys: Vec<&BucketKey> = buckets.keys().collect();
    let accs: Vec<&(i32, i32, i32, f64, i32)> = buckets.values().collect();
    let rows = sqlx::query(
        "WITH d AS (
             SELECT * FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::int[],
                                  $5::int[], $6::int[], $7::float8[], $8::int[])
                 AS t(service_id, bucket_size, bucket_start, checks, up, down, latency_sum,
                      latency_n)),
         old AS (
             SELECT b.service_id, b.bucket_size, b.bucket_start, b.up, b.down
               FROM health_service_buckets b
               JOIN d USING (service_id, bucket_size, bucket_start)),
         up AS (
             INSERT INTO health_service_buckets AS b
             SELECT * FROM d ORDER BY service_id, bucket_size, bucket_start
             ON CONFLICT (service_id, bucket_size, bucket_start) DO UPDATE
                SET checks = b.checks + EXCLUDED.checks, up = b.up + EXCLUDED.up,
                    down = b.down + EXCLUDED.down,
                    latency_sum = b.latency_sum + EXCLUDED.latency_sum,
                    latency_n = b.latency_n + EXCLUDED.latency_n
             RETURNING b.service_id, b.bucket_size, b.bucket_start, b.up, b.down)
         SELECT up.*, old.up AS old_up, old.down AS old_down, d.checks AS added
           FROM up JOIN d USING (service_id, bucket_size, bucket_start)
           LEFT JOIN old USING (service_id, bucket_size, bucket_start)",
    )
    .bind(keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
    .bind(accs.iter().map(|a| a.0).collect::<Vec<_>>())
    .bind(accs.iter().map(|a| a.1).collect::<Vec<_>>())
    .bind(accs.iter().map(|a| a.2).collect::<Vec<_>>())
    .bind(accs.iter().map(|a| a.3).collect::<Vec<_>>())
    .bind(accs.iter().map(|a| a.4).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let groups = groups_of(&mut tx, "S", &ids).await?;
    let mut deltas: BTreeMap<GroupKey, RollupDelta> = BTreeMap::new();
    for row in rows {
        let service: String = row.try_get("service_id")?;
        let Some(service_groups) = groups.get(&service) else {
            continue;
        };
        let size: i32 = row.try_get("bucket_size")?;
        let start: DateTime<Utc> = row.try_get("bucket_start")?;
        let new = status(row.try_get("up")?, row.try_get("down")?);
        let old_up: Option<i32> = row.try_get("old_up")?;
        let old_down: Option<i32> = row.try_get("old_down")?;
        let old = status(old_up.unwrap_or(0), old_down.unwrap_or(0));
        let added: i32 = row.try_get("added")?;
        for &group in service_groups {
            let d = deltas.entry((group, size, start)).or_default();
            d.checks += i64::from(added);
            match old {
                Some(true) => d.up -= 1,
                Some(false) => d.down -= 1,
                None => {}
            }
            match new {
                Some(true) => d.up += 1,
                Some(false) => d.down += 1,
                None => {}
            }
        }
    }
    report.rollups_updated = apply_deltas(&mut tx, &deltas).await?;
    tx.commit().await?;
    Ok(Some(report))
}
