//! Retention: daily partitions ahead, old partitions, buckets, rollups and unknown-id counts
//! dropped once they leave their windows.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::HealthConfig;
use crate::StoreError;

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Partitions created ahead (yesterday to two days on).
    pub partitions_created: i64,
    /// Raw partitions dropped whole.
    pub partitions_dropped: Vec<String>,
    /// Per-entity buckets deleted.
    pub buckets_deleted: u64,
    /// Group rollup rows deleted.
    pub rollups_deleted: u64,
    /// Unknown-id counters deleted.
    pub unknown_deleted: u64,
}

/// The day a partition holds, from its name (`telemetry_sysmon_p20261204`).
fn partition_day(name: &str) -> Option<NaiveDate> {
    let (_, day) = name.rsplit_once("_p")?;
    NaiveDate::parse_from_str(day, "%Y%m%d").ok()
}

/// One retention pass at `now`.
pub async fn run_retention(
    pool: &PgPool,
    config: &HealthConfig,
    now: DateTime<Utc>,
) -> Result<RetentionReport, StoreError> {
    let mut report = RetentionReport::default();
    let today = now.date_naive();
    report.partitions_created =
        sqlx::query_scalar::<_, i32>("SELECT corral_telemetry_partitions($1, $2)")
            .bind(today - TimeDelta::days(1))
            .bind(today + TimeDelta::days(2))
            .fetch_one(pool)
            .await?
            .into();
    let cutoff = config.raw_cutoff(now);
    let children: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
          WHERE p.relname IN ('telemetry_sysmon', 'telemetry_services')
          ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    for name in children {
        let Some(day) = partition_day(&name) else {
            continue;
        };
        let Some(end) = (day + TimeDelta::days(1)).and_hms_opt(0, 0, 0) else {
            continue;
        };
        if end.and_utc() <= cutoff {
            // The name comes from the catalog and matched the partition pattern.
            sqlx::query(&format!("DROP TABLE IF EXISTS public.\"{name}\""))
                .execute(pool)
                .await?;
            tracing::info!(partition = %name, "dropped telemetry partition past retention");
            report.partitions_dropped.push(name);
        }
    }
    // Under the health lock: an ingest that is folding a sample near the window's edge into
    // a bucket must not see that bucket vanish half-way.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(crate::locks::Lock::Health.key())
        .execute(&mut *tx)
        .await?;
    for table in ["health_device_buckets", "health_service_buckets"] {
        report.buckets_deleted +=
            sqlx::query(&format!("DELETE FROM {table} WHERE bucket_start < $1"))
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
    }
    tx.commit().await?;
    report.rollups_deleted = sqlx::query("DELETE FROM health_rollups WHERE bucket_start < $1")
        .bind(now - config.rollup_retention)
        .execute(pool)
        .await?
        .rows_affected();
    // The feed's stream keeps messages a day: older delivery records cannot be redelivered.
    sqlx::query("DELETE FROM telemetry_feed_applied WHERE applied_at < $1")
        .bind(now - TimeDelta::days(2))
        .execute(pool)
        .await?;
    report.unknown_deleted = sqlx::query("DELETE FROM telemetry_unknown WHERE last_seen < $1")
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn partition_days_parse_from_names() {
        assert_eq!(
            super::partition_day("telemetry_services_p20261204"),
            chrono::NaiveDate::from_ymd_opt(2026, 12, 4)
        );
        assert_eq!(super::partition_day("telemetry_sysmon"), None);
    }
}
