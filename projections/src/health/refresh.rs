//! Refreshing a group's rollups after its effective membership changed.
//!
//! `health_members` holds the members a group's rollups count. A refresh computes the group's
//! effective members from the read models (closure table + direct members), diffs them with
//! `health_members`, and then:
//! - members only joined: adds their buckets to the rollups (sums, counts and bins add, max
//!   takes the greater), a cost that grows with the joiners, not the group;
//! - some left (max cannot be subtracted) or the group has no rollups yet: recomputes the
//!   group's rollups inside the raw retention window from the buckets of all its members.
//!
//! Rollup buckets older than the raw retention window are left as they are: the buckets they
//! were built from are gone.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::{sql_bin, HealthConfig, MemberKind, BINS, ROLLUP_ADD};
use crate::StoreError;

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The group no longer exists: its rollups and bookkeeping were removed.
    Gone,
    /// Membership was unchanged.
    Unchanged,
    /// Members joined; their buckets were added.
    Added {
        /// How many joined.
        joined: usize,
    },
    /// The rollups were recomputed from the members' buckets.
    Recomputed {
        /// How many joined.
        joined: usize,
        /// How many left.
        left: usize,
        /// Effective members now.
        members: usize,
    },
}

/// The effective members of `group` per the membership read model's stored effective
/// membership (one index range; no DISTINCT over the subtree's direct rows).
pub(crate) const EFFECTIVE_MEMBERS: &str = "SELECT e.member_id AS id
      FROM rm_membership.effective e
     WHERE e.ancestor_id = $1";

/// Refreshes one group in its own transaction (see the module docs). `force` recomputes even
/// when membership is unchanged (backfill).
pub async fn refresh_group(
    pool: &PgPool,
    group: Uuid,
    config: &HealthConfig,
    force: bool,
) -> Result<RefreshOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(crate::locks::Lock::Health.key())
        .execute(&mut *tx)
        .await?;
    let outcome = refresh_in(&mut tx, group, config, force).await?;
    tx.commit().await?;
    Ok(outcome)
}

async fn refresh_in(
    conn: &mut PgConnection,
    group: Uuid,
    config: &HealthConfig,
    force: bool,
) -> Result<RefreshOutcome, StoreError> {
    let group_type: Option<String> =
        sqlx::query_scalar("SELECT group_type FROM rm_group_tree.groups WHERE id = $1")
            .bind(group)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(kind) = group_type.as_deref().and_then(MemberKind::of_group_type) else {
        for table in ["health_members", "health_rollups", "health_groups"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE group_id = $1"))
                .bind(group)
                .execute(&mut *conn)
                .await?;
        }
        return Ok(RefreshOutcome::Gone);
    };
    let known: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM health_groups WHERE group_id = $1)")
            .bind(group)
            .fetch_one(&mut *conn)
            .await?;
    let row = sqlx::query(&format!(
        "WITH e AS MATERIALIZED ({EFFECTIVE_MEMBERS}),
              joined AS (
                  INSERT INTO health_members (group_id, member_id, kind)
                  SELECT $1, id, $2::\"char\" FROM e ORDER BY id
                  ON CONFLICT (group_id, member_id) DO NOTHING
                  RETURNING member_id),
              left_ AS (
                  DELETE FROM health_members h
                   WHERE h.group_id = $1
                     AND NOT EXISTS (SELECT 1 FROM e WHERE e.id = h.member_id)
                  RETURNING member_id)
         SELECT coalesce((SELECT array_agg(member_id) FROM joined), '{{}}') AS joined,
                (SELECT count(*) FROM left_) AS left_count,
                (SELECT count(*) FROM e) AS members"
    ))
    .bind(group)
    .bind(kind.code())
    .fetch_one(&mut *conn)
    .await?;
    let joined: Vec<String> = row.try_get("joined")?;
    let left = row.try_get::<i64, _>("left_count")? as usize;
    let members = row.try_get::<i64, _>("members")? as usize;
    sqlx::query(
        "INSERT INTO health_groups (group_id, kind, members, refreshed_at)
         VALUES ($1, $2::\"char\", $3, now())
         ON CONFLICT (group_id) DO UPDATE SET members = EXCLUDED.members, refreshed_at = now()",
    )
    .bind(group)
    .bind(kind.code())
    .bind(members as i64)
    .execute(&mut *conn)
    .await?;
    let from = config.raw_cutoff(Utc::now());
    if left > 0 || !known || force {
        sqlx::query("DELETE FROM health_rollups WHERE group_id = $1 AND bucket_start >= $2")
            .bind(group)
            .bind(from)
            .execute(&mut *conn)
            .await?;
        add_buckets(conn, group, kind, None, from).await?;
        Ok(RefreshOutcome::Recomputed {
            joined: joined.len(),
            left,
            members,
        })
    } else if !joined.is_empty() {
        add_buckets(conn, group, kind, Some(&joined), from).await?;
        Ok(RefreshOutcome::Added {
            joined: joined.len(),
        })
    } else {
        Ok(RefreshOutcome::Unchanged)
    }
}

/// Adds the buckets (from `from` on) of `ids`, or of all the group's `health_members` when
/// `None`, to the group's rollups.
async fn add_buckets(
    conn: &mut PgConnection,
    group: Uuid,
    kind: MemberKind,
    ids: Option<&[String]>,
    from: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let members = match ids {
        Some(_) => "SELECT unnest($3::text[]) AS id",
        None => "SELECT member_id AS id FROM health_members WHERE group_id = $1",
    };
    let sql = match kind {
        MemberKind::Device => {
            let cpu = sql_bin("b.cpu_sum / b.samples");
            let mem = sql_bin("b.mem_sum / b.samples");
            let disk = sql_bin("b.disk_sum / b.samples");
            let last = BINS - 1;
            format!(
                "WITH m AS MATERIALIZED ({members}),
                      b AS MATERIALIZED (
                          SELECT b.* FROM health_device_buckets b JOIN m ON b.device_id = m.id
                           WHERE b.bucket_start >= $2),
                      agg AS (
                          SELECT bucket_size, bucket_start, sum(samples) AS n, count(*) AS dv,
                                 sum(cpu_sum) AS cs, max(cpu_max) AS cm,
                                 sum(mem_sum) AS ms, max(mem_max) AS mm,
                                 sum(disk_sum) AS ds, max(disk_max) AS dm
                            FROM b GROUP BY bucket_size, bucket_start),
                      bins AS (
                          SELECT b.bucket_size, b.bucket_start, v.metric, v.bin, count(*)::int AS k
                            FROM b CROSS JOIN LATERAL (VALUES (1, {cpu}), (2, {mem}), (3, {disk}))
                                 AS v(metric, bin)
                           GROUP BY 1, 2, 3, 4),
                      dense AS (
                          SELECT a.bucket_size, a.bucket_start, v.metric,
                                 array_agg(coalesce(x.k, 0) ORDER BY s.i) AS arr
                            FROM agg a CROSS JOIN (VALUES (1), (2), (3)) AS v(metric)
                           CROSS JOIN generate_series(0, {last}) AS s(i)
                            LEFT JOIN bins x ON x.bucket_size = a.bucket_size
                                  AND x.bucket_start = a.bucket_start
                                  AND x.metric = v.metric AND x.bin = s.i
                           GROUP BY 1, 2, 3)
                 INSERT INTO health_rollups AS r (group_id, bucket_size, bucket_start, samples,
                        devices_reporting, cpu_sum, cpu_max, cpu_bins, mem_sum, mem_max,
                        mem_bins, disk_sum, disk_max, disk_bins)
                 SELECT $1, a.bucket_size, a.bucket_start, a.n, a.dv, a.cs, a.cm, c.arr,
                        a.ms, a.mm, mm.arr, a.ds, a.dm, dd.arr
                   FROM agg a
                   JOIN dense c ON c.bucket_size = a.bucket_size
                        AND c.bucket_start = a.bucket_start AND c.metric = 1
                   JOIN dense mm ON mm.bucket_size = a.bucket_size
                        AND mm.bucket_start = a.bucket_start AND mm.metric = 2
                   JOIN dense dd ON dd.bucket_size = a.bucket_size
                        AND dd.bucket_start = a.bucket_start AND dd.metric = 3
                  ORDER BY a.bucket_size, a.bucket_start
                 {ROLLUP_ADD}"
            )
        }
        MemberKind::Service => format!(
            "WITH m AS MATERIALIZED ({members})
             INSERT INTO health_rollups AS r (group_id, bucket_size, bucket_start, checks,
                    services_up, services_down)
             SELECT $1, b.bucket_size, b.bucket_start, sum(b.checks),
                    count(*) FILTER (WHERE b.down = 0 AND b.up > 0),
                    count(*) FILTER (WHERE b.down > 0)
               FROM health_service_buckets b JOIN m ON b.service_id = m.id
              WHERE b.bucket_start >= $2
              GROUP BY b.bucket_size, b.bucket_start
              ORDER BY b.bucket_size, b.bucket_start
             {ROLLUP_ADD}"
        ),
    };
    let mut query = sqlx::query(&sql).bind(group).bind(from);
    if let Some(ids) = ids {
        query = query.bind(ids);
    }
    Ok(query.execute(conn).await?.rows_affected())
}

/// The ancestors of `groups` (and the groups themselves), walking the write-side registry,
/// which still knows deleted groups' parents.
pub async fn with_ancestors(pool: &PgPool, groups: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "WITH RECURSIVE up AS (
             SELECT r.id, r.parent_id, 0 AS hops FROM group_registry r
              WHERE r.id IN (SELECT unnest($1::uuid[]))
             UNION
             SELECT r.id, r.parent_id, up.hops + 1 FROM group_registry r
               JOIN up ON r.id = up.parent_id WHERE up.hops < 64)
         SELECT DISTINCT id FROM up",
    )
    .bind(groups)
    .fetch_all(pool)
    .await?)
}

/// What one pass over the queue did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingSummary {
    /// Queue rows taken.
    pub queued: usize,
    /// Groups refreshed (the queued ones and their ancestors).
    pub groups: usize,
    /// Of those, recomputed from all their members' buckets.
    pub recomputed: usize,
    /// Of those, that only added joiners' buckets.
    pub added: usize,
    /// Of those, that no longer exist.
    pub gone: usize,
}

/// Most queue rows one pass takes.
pub const MAX_QUEUE_BATCH: i64 = 10_000;

/// Refreshes the groups queued in `health_dirty` (and their ancestors) whose events the
/// membership and group tree read models have both passed; deletes the rows it took. Only the
/// leader of [`Lock::HealthRefresh`](crate::locks::Lock::HealthRefresh) calls it (the refresh
/// worker), so one process at a time works the queue. No transaction stays open across the
/// refreshes: an open one would hold every log reader back.
pub async fn refresh_pending(
    pool: &PgPool,
    config: &HealthConfig,
) -> Result<PendingSummary, StoreError> {
    let mut summary = PendingSummary::default();
    refresh_queue(pool, config, &mut summary).await?;
    Ok(summary)
}

async fn refresh_queue(
    pool: &PgPool,
    config: &HealthConfig,
    summary: &mut PendingSummary,
) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT id, group_id FROM health_dirty d
          WHERE (SELECT count(*) FROM projection_checkpoints
                  WHERE name IN ('membership', 'group_tree')) = 2
            AND NOT EXISTS (
                SELECT 1 FROM projection_checkpoints c
                 WHERE c.name IN ('membership', 'group_tree')
                   AND (c.transaction_id, c.global_position) < (d.transaction_id, d.global_position))
          ORDER BY id LIMIT $1",
    )
    .bind(MAX_QUEUE_BATCH)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    summary.queued = rows.len();
    let mut ids = Vec::with_capacity(rows.len());
    let mut groups = Vec::with_capacity(rows.len());
    for row in &rows {
        ids.push(row.try_get::<i64, _>("id")?);
        groups.push(row.try_get::<Uuid, _>("group_id")?);
    }
    groups.sort();
    groups.dedup();
    for group in with_ancestors(pool, &groups).await? {
        summary.groups += 1;
        match refresh_group(pool, group, config, false).await? {
            RefreshOutcome::Gone => summary.gone += 1,
            RefreshOutcome::Unchanged => {}
            RefreshOutcome::Added { .. } => summary.added += 1,
            RefreshOutcome::Recomputed { .. } => summary.recomputed += 1,
        }
    }
    sqlx::query("DELETE FROM health_dirty WHERE id = ANY($1)")
        .bind(&ids)
        .execute(pool)
        .await?;
    Ok(())
}
