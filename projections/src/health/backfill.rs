//! `corral rollups backfill`: rebuilds per-entity buckets from raw samples, then recomputes
//! group rollups from them.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::refresh::{refresh_group, with_ancestors, RefreshOutcome, EFFECTIVE_MEMBERS};
use super::{BucketSize, HealthConfig};
use crate::StoreError;

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    /// Hours of raw samples folded again.
    pub hours: i64,
    /// Device and service buckets written.
    pub buckets: u64,
    /// Groups recomputed.
    pub groups: usize,
}

/// Rebuilds the buckets of `[from, now)` (of `group`'s effective members only, when given)
/// one hour per transaction, then recomputes `group` and its ancestors, or every live group.
/// `progress` is called after each hour and each group.
pub async fn backfill(
    pool: &PgPool,
    config: &HealthConfig,
    from: DateTime<Utc>,
    group: Option<Uuid>,
    mut progress: impl FnMut(&str),
) -> Result<BackfillReport, StoreError> {
    let mut report = BackfillReport::default();
    let now = Utc::now();
    let mut at = BucketSize::OneHour.start_of(from.max(config.raw_cutoff(now)));
    let members = match group {
        Some(_) => format!("AND x.id IN ({EFFECTIVE_MEMBERS})"),
        None => String::new(),
    };
    let members = members.replace("$1", "$3");
    while at < now {
        let end = at + TimeDelta::hours(1);
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(crate::locks::Lock::Health.key())
            .execute(&mut *tx)
            .await?;
        for (table, id, raw, fold) in [
            (
                "health_device_buckets",
                "device_id",
                "telemetry_sysmon",
                "count(*)::int, sum(cpu_percent::float8), max(cpu_percent),
                 sum(mem_percent::float8), max(mem_percent),
                 sum(disk_percent::float8), max(disk_percent)",
            ),
            (
                "health_service_buckets",
                "service_id",
                "telemetry_services",
                "count(*)::int, (count(*) FILTER (WHERE available))::int,
                 (count(*) FILTER (WHERE NOT available))::int,
                 coalesce(sum(latency_ms::float8), 0), count(latency_ms)::int",
            ),
        ] {
            let scope = if group.is_some() {
                members.replace("x.id", &format!("b.{id}"))
            } else {
                String::new()
            };
            let sql = format!(
                "DELETE FROM {table} b WHERE b.bucket_start >= $1 AND b.bucket_start < $2 {scope}"
            );
            let mut delete = sqlx::query(&sql).bind(at).bind(end);
            if let Some(g) = group {
                delete = delete.bind(g);
            }
            delete.execute(&mut *tx).await?;
            let scope = if group.is_some() {
                members.replace("x.id", &format!("t.{id}"))
            } else {
                String::new()
            };
            for size in BucketSize::ALL {
                let sql = format!(
                    "INSERT INTO {table}
                     SELECT t.{id}, {size}, date_bin(make_interval(secs => {size}), t.ts,
                                                     timestamptz 'epoch'), {fold}
                       FROM {raw} t
                      WHERE t.ts >= $1 AND t.ts < $2 {scope}
                      GROUP BY 1, 2, 3",
                    size = size.seconds()
                );
                let mut insert = sqlx::query(&sql).bind(at).bind(end);
                if let Some(g) = group {
                    insert = insert.bind(g);
                }
                report.buckets += insert.execute(&mut *tx).await?.rows_affected();
            }
        }
        tx.commit().await?;
        report.hours += 1;
        progress(&format!("buckets rebuilt up to {}", end.to_rfc3339()));
        at = end;
    }
    let groups: Vec<Uuid> = match group {
        Some(g) => with_ancestors(pool, &[g]).await?,
        None => {
            sqlx::query_scalar("SELECT id FROM rm_group_tree.groups ORDER BY depth DESC, id")
                .fetch_all(pool)
                .await?
        }
    };
    let total = groups.len();
    for (i, g) in groups.into_iter().enumerate() {
        let outcome = refresh_group(pool, g, config, true).await?;
        report.groups += 1;
        let what = match outcome {
            RefreshOutcome::Recomputed { members, .. } => format!("{members} members"),
            RefreshOutcome::Gone => "gone".to_string(),
            other => format!("{other:?}"),
        };
        progress(&format!("group {}/{total} {g}: recomputed ({what})", i + 1));
    }
    Ok(report)
}
