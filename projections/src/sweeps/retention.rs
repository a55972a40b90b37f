//! Results retention: each run's results are deleted `retention_days` after it ended, and
//! whole daily partitions are dropped once no run can still need them.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::results::ensure_partitions;
use crate::StoreError;

/// What one cleanup pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Partitions created ahead.
    pub partitions_created: i32,
    /// Runs whose results were deleted.
    pub runs_purged: u64,
    /// Result rows deleted.
    pub results_deleted: u64,
    /// Partitions dropped.
    pub partitions_dropped: u64,
}

/// Longest retention any run may have plus the longest a run may last, plus a day for the
/// partition's own length and clock slack: a partition whose day ended longer ago than this
/// holds no result that is still kept.
pub fn partition_horizon(max_retention_days: u32, max_runtime: std::time::Duration) -> TimeDelta {
    TimeDelta::days(i64::from(max_retention_days) + 1)
        + TimeDelta::from_std(max_runtime).unwrap_or(TimeDelta::days(7))
}

/// One cleanup pass at `now`.
#[tracing::instrument(skip_all, err)]
pub async fn cleanup(
    pool: &PgPool,
    now: DateTime<Utc>,
    max_retention_days: u32,
    max_runtime: std::time::Duration,
) -> Result<Cleanup, StoreError> {
    let mut report = Cleanup {
        partitions_created: ensure_partitions(
            pool,
            now - TimeDelta::days(1),
            now + TimeDelta::days(2),
        )
        .await?,
        ..Default::default()
    };
    let expired: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM sweep_runs
          WHERE results_purged_at IS NULL
            AND status NOT IN ('QUEUED', 'DISPATCHED', 'ACKNOWLEDGED', 'RUNNING')
            AND coalesce(ended_at, deadline) + retention_days * interval '1 day' <= $1",
    )
    .bind(now)
    .fetch_all(pool)
    .await?;
    for chunk in expired.chunks(100) {
        let mut tx = pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM sweep_results WHERE run_id = ANY($1)")
            .bind(chunk)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM sweep_result_hosts WHERE run_id = ANY($1)")
            .bind(chunk)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE sweep_runs SET results_purged_at = $2 WHERE id = ANY($1)")
            .bind(chunk)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        report.runs_purged += chunk.len() as u64;
        report.results_deleted += deleted;
    }
    let horizon = (now - partition_horizon(max_retention_days, max_runtime)).date_naive();
    let parts: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
          WHERE p.relname = 'sweep_results' AND c.relname ~ '^sweep_results_p[0-9]{8}$'",
    )
    .fetch_all(pool)
    .await?;
    for part in parts {
        let day = chrono::NaiveDate::parse_from_str(&part["sweep_results_p".len()..], "%Y%m%d")
            .map_err(|e| StoreError::Data(format!("partition {part}: {e}")))?;
        if day < horizon {
            sqlx::query(&format!("DROP TABLE IF EXISTS public.\"{part}\""))
                .execute(pool)
                .await?;
            report.partitions_dropped += 1;
        }
    }
    Ok(report)
}
