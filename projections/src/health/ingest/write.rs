//! The database side of ingest: partitions, the delivery record, unknown ids, the raw
//! samples, the entity buckets and the group rollups.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::fold::{
    stored, BucketKey, DeviceAcc, DeviceBucket, GroupKey, RollupDelta, ServiceAcc, ServiceBucket,
};
use super::{DeliveryKey, ServiceCheck, SysmonSample};
use crate::health::{BINS, ROLLUP_ADD};
use crate::StoreError;

/// Records `key` in `telemetry_feed_applied`; false when it was there already.
pub(super) async fn record_delivery(
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

/// Creates the daily partitions the samples' days need (own transaction: creating a
/// partition locks the parent table, which must not be held through an ingest).
pub(super) async fn ensure_partitions(
    pool: &PgPool,
    days: &BTreeSet<NaiveDate>,
) -> Result<(), StoreError> {
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
pub(super) async fn known_ids(
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

/// Counts samples of unknown ids in `telemetry_unknown`.
pub(super) async fn store_unknown(
    conn: &mut PgConnection,
    kind: &str,
    unknown: &BTreeMap<String, i64>,
) -> Result<(), StoreError> {
    if unknown.is_empty() {
        return Ok(());
    }
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
pub(super) async fn groups_of(
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

/// Takes the health lock for the rest of the transaction (see [`crate::locks::Lock::Health`]).
pub(super) async fn lock_health(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(crate::locks::Lock::Health.key())
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores the raw samples in `telemetry_sysmon`.
pub(super) async fn insert_sysmon(
    conn: &mut PgConnection,
    valid: &[&SysmonSample],
) -> Result<(), StoreError> {
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
    .bind(
        valid
            .iter()
            .map(|s| stored(s.cpu_percent))
            .collect::<Vec<_>>(),
    )
    .bind(
        valid
            .iter()
            .map(|s| stored(s.mem_percent))
            .collect::<Vec<_>>(),
    )
    .bind(
        valid
            .iter()
            .map(|s| stored(s.disk_percent))
            .collect::<Vec<_>>(),
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Adds the batch's buckets to `health_device_buckets`; returns each bucket as it is now
/// and as it was. `old` reads the rows as they were before this statement (one snapshot);
/// the health lock keeps anyone else from changing them in between.
pub(super) async fn upsert_device_buckets(
    conn: &mut PgConnection,
    buckets: &BTreeMap<BucketKey, DeviceAcc>,
) -> Result<Vec<DeviceBucket>, StoreError> {
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
    .fetch_all(&mut *conn)
    .await?;

    rows.iter()
        .map(|row| {
            Ok(DeviceBucket {
                device: row.try_get("device_id")?,
                size: row.try_get("bucket_size")?,
                start: row.try_get::<DateTime<Utc>, _>("bucket_start")?,
                samples: row.try_get("samples")?,
                sums: [
                    row.try_get("cpu_sum")?,
                    row.try_get("mem_sum")?,
                    row.try_get("disk_sum")?,
                ],
                maxes: [
                    row.try_get("cpu_max")?,
                    row.try_get("mem_max")?,
                    row.try_get("disk_max")?,
                ],
                old_samples: row.try_get("old_samples")?,
                old_sums: [
                    row.try_get("old_cpu")?,
                    row.try_get("old_mem")?,
                    row.try_get("old_disk")?,
                ],
            })
        })
        .collect()
}

/// Stores the raw checks in `telemetry_services`.
pub(super) async fn insert_services(
    conn: &mut PgConnection,
    valid: &[&ServiceCheck],
) -> Result<(), StoreError> {
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
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Adds the batch's buckets to `health_service_buckets`; returns each bucket as it is now,
/// as it was, and the checks added.
pub(super) async fn upsert_service_buckets(
    conn: &mut PgConnection,
    buckets: &BTreeMap<BucketKey, ServiceAcc>,
) -> Result<Vec<ServiceBucket>, StoreError> {
    let keys: Vec<&BucketKey> = buckets.keys().collect();
    let accs: Vec<&ServiceAcc> = buckets.values().collect();
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
    .bind(accs.iter().map(|a| a.checks).collect::<Vec<_>>())
    .bind(accs.iter().map(|a| a.up).collect::<Vec<_>>())
    .bind(accs.iter().map(|a| a.down).collect::<Vec<_>>())
    .bind(accs.iter().map(|a| a.latency_sum).collect::<Vec<_>>())
    .bind(accs.iter().map(|a| a.latency_n).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ServiceBucket {
                service: row.try_get("service_id")?,
                size: row.try_get("bucket_size")?,
                start: row.try_get::<DateTime<Utc>, _>("bucket_start")?,
                up: row.try_get("up")?,
                down: row.try_get("down")?,
                old_up: row.try_get("old_up")?,
                old_down: row.try_get("old_down")?,
                added: row.try_get("added")?,
            })
        })
        .collect()
}

/// Adds rollup deltas (sorted by key, so concurrent writers lock rows in one order).
pub(super) async fn apply_deltas(
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
