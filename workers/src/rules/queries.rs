//! The evaluator's SQL: rules to run, rule runs, rule entries, the inventory change feed and
//! its cursor, and the compiled rule queries.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use corral_domain::group::GroupType;
use corral_domain::inventory::{Device, Service};
use corral_domain::rule::Rule;
use corral_projections::inventory::{
    self as inv, device_row, rule_arguments, service_row, DEVICE_COLUMNS, DEVICE_FROM,
    SERVICE_COLUMNS, SERVICE_FROM,
};
use corral_projections::log::parse_xid;
use corral_projections::StoreError;
use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{RuleWorkerError, RunOutcome};

/// The `FROM` clause, alias and table of the entities of `kind`.
pub(super) fn entity_table(kind: GroupType) -> (&'static str, &'static str, &'static str) {
    match kind {
        GroupType::Device => (DEVICE_FROM, "d", "devices"),
        GroupType::Service => (SERVICE_FROM, "s", "services"),
    }
}

/// A group's stored rule, as the registry holds it.
pub(super) struct StoredRule {
    pub(super) group: Uuid,
    pub(super) kind: GroupType,
    pub(super) version: u64,
    pub(super) rule: Option<Value>,
    pub(super) enabled: bool,
    /// Its last run of this version succeeded.
    pub(super) healthy: bool,
}

fn stored_rule(row: &sqlx::postgres::PgRow) -> Result<StoredRule, sqlx::Error> {
    Ok(StoredRule {
        group: row.try_get("id")?,
        kind: GroupType::parse(&row.try_get::<String, _>("group_type")?)
            .unwrap_or(GroupType::Device),
        version: row.try_get::<i64, _>("rule_version")? as u64,
        rule: row.try_get("rule")?,
        enabled: row.try_get("rule_enabled")?,
        healthy: row.try_get("healthy")?,
    })
}

/// Groups whose rule changed since their last run (at most 100).
pub(super) async fn changed_rules(pool: &PgPool) -> Result<Vec<StoredRule>, RuleWorkerError> {
    let rows = sqlx::query(
        "SELECT g.id, g.group_type, g.rule, g.rule_enabled, g.rule_version, false AS healthy
           FROM group_registry g LEFT JOIN rule_runs r ON r.group_id = g.id
          WHERE g.rule_version > 0 AND NOT g.deleted
            AND r.rule_version IS DISTINCT FROM g.rule_version
          ORDER BY g.id LIMIT 100",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(stored_rule).collect::<Result<_, _>>()?)
}

/// Enabled rules of live groups.
pub(super) async fn enabled_rules(pool: &PgPool) -> Result<Vec<StoredRule>, RuleWorkerError> {
    let rows = sqlx::query(
        "SELECT g.id, g.group_type, g.rule, g.rule_enabled, g.rule_version,
                coalesce(r.last_ok_version = g.rule_version, false) AS healthy
           FROM group_registry g LEFT JOIN rule_runs r ON r.group_id = g.id
          WHERE g.rule_enabled AND g.rule IS NOT NULL AND NOT g.deleted",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(stored_rule).collect::<Result<_, _>>()?)
}

/// The age (seconds) and failure of the last run of every enabled rule run at its version.
pub(super) async fn last_runs(
    pool: &PgPool,
) -> Result<HashMap<Uuid, (f64, bool)>, RuleWorkerError> {
    let rows = sqlx::query(
        "SELECT g.id, extract(epoch FROM now() - r.last_run_at)::float8 AS age,
                r.last_run_status = 'FAILED' AS failed
           FROM group_registry g JOIN rule_runs r ON r.group_id = g.id
          WHERE g.rule_enabled AND g.rule IS NOT NULL AND NOT g.deleted
            AND r.rule_version = g.rule_version",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| Ok((r.try_get("id")?, (r.try_get("age")?, r.try_get("failed")?))))
        .collect::<Result<_, sqlx::Error>>()?)
}

/// Records a run in `rule_runs` (`last_ok_version` only moves on `OK`).
pub(super) async fn record_run(
    pool: &PgPool,
    group: Uuid,
    version: u64,
    outcome: &RunOutcome,
    duration: Duration,
    cause: &str,
) -> Result<(), RuleWorkerError> {
    sqlx::query(
        "INSERT INTO rule_runs (group_id, rule_version, last_run_at, last_run_status,
                last_match_count, last_error, last_duration_ms, last_cause, last_ok_version)
         VALUES ($1, $2, now(), $3, $4, $5, $6, $7, CASE WHEN $3 = 'OK' THEN $2 END)
         ON CONFLICT (group_id) DO UPDATE SET rule_version = EXCLUDED.rule_version,
            last_run_at = EXCLUDED.last_run_at, last_run_status = EXCLUDED.last_run_status,
            last_match_count = EXCLUDED.last_match_count, last_error = EXCLUDED.last_error,
            last_duration_ms = EXCLUDED.last_duration_ms, last_cause = EXCLUDED.last_cause,
            last_ok_version = coalesce(EXCLUDED.last_ok_version, rule_runs.last_ok_version)",
    )
    .bind(group)
    .bind(version as i64)
    .bind(outcome.status)
    .bind(outcome.matches)
    .bind(&outcome.error)
    .bind(duration.as_millis() as i64)
    .bind(cause)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deleted groups that still hold entries (left behind when a purge after a delete failed).
pub(super) async fn deleted_groups_with_entries(
    pool: &PgPool,
) -> Result<Vec<Uuid>, RuleWorkerError> {
    Ok(sqlx::query_scalar(
        "SELECT g.id FROM group_registry g WHERE g.deleted
            AND EXISTS (SELECT 1 FROM membership_registry m WHERE m.group_id = g.id)",
    )
    .fetch_all(pool)
    .await?)
}

/// A group's rule entries.
pub(super) async fn rule_entries(
    pool: &PgPool,
    group: Uuid,
) -> Result<HashSet<String>, RuleWorkerError> {
    Ok(sqlx::query_scalar(
        "SELECT member_id FROM membership_registry WHERE group_id = $1 AND kind = 'R'",
    )
    .bind(group)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect())
}

/// The rule entries (group, member) and the static entries (per group) of `ids`, in every
/// group.
pub(super) async fn entries_of(
    pool: &PgPool,
    ids: &[String],
) -> Result<(HashSet<(Uuid, String)>, HashMap<Uuid, Vec<String>>), RuleWorkerError> {
    let rows = sqlx::query(
        "SELECT group_id, member_id, kind::text AS kind FROM membership_registry
          WHERE member_id = ANY($1) AND kind IN ('R', 'S')",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let mut rules: HashSet<(Uuid, String)> = HashSet::new();
    let mut statics: HashMap<Uuid, Vec<String>> = HashMap::new();
    for r in &rows {
        let group: Uuid = r.try_get("group_id")?;
        let member: String = r.try_get("member_id")?;
        if r.try_get::<String, _>("kind")? == "R" {
            rules.insert((group, member));
        } else {
            statics.entry(group).or_default().push(member);
        }
    }
    Ok((rules, statics))
}

/// How many rule entries a group holds.
pub(super) async fn rule_entry_count(pool: &PgPool, group: Uuid) -> Result<i64, RuleWorkerError> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce((SELECT n FROM membership_registry_counts
                           WHERE group_id = $1 AND kind = 'R'), 0)",
    )
    .bind(group)
    .fetch_one(pool)
    .await?)
}

/// Which of `ids` are live devices or services.
pub(super) async fn live_ids(
    pool: &PgPool,
    ids: &[String],
) -> Result<Vec<String>, RuleWorkerError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM devices WHERE id = ANY($1) AND removed_at IS NULL
         UNION ALL SELECT id FROM services WHERE id = ANY($1) AND removed_at IS NULL",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

/// The live services on the devices `device_ids`.
pub(super) async fn services_on(
    pool: &PgPool,
    device_ids: &[String],
) -> Result<Vec<Service>, RuleWorkerError> {
    let rows = sqlx::query(&format!(
        "SELECT {SERVICE_COLUMNS} FROM services s
          WHERE s.device_id = ANY($1) AND s.removed_at IS NULL"
    ))
    .bind(device_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| Ok(service_row(r)?.service))
        .collect::<Result<_, StoreError>>()?)
}

/// The devices `ids` (live or not), by id.
pub(super) async fn devices_by_id(
    pool: &PgPool,
    ids: &[String],
) -> Result<HashMap<String, Device>, RuleWorkerError> {
    Ok(inv::devices_by_ids(pool, ids)
        .await?
        .into_iter()
        .map(|r| (r.device.id.clone(), r.device))
        .collect())
}

/// One entity of the inventory change feed.
pub(super) enum Change {
    Device(Box<Device>),
    Service(Box<Service>),
}

/// One batch of the inventory change feed: the changes, each with its changed fields (`None`:
/// unknown) and whether it was removed.
pub(super) struct FeedBatch {
    pub(super) changes: Vec<(Change, Option<Vec<String>>, bool)>,
    /// The `(changed_tx, change_seq)` of the last row.
    pub(super) last: Option<(u64, i64)>,
    /// The xmin horizon the batch was read below.
    pub(super) horizon: u64,
}

/// Reads up to `batch` changes of `kind` after the feed's cursor, below the xmin horizon, in
/// `(changed_tx, change_seq)` order.
pub(super) async fn read_feed(
    pool: &PgPool,
    kind: GroupType,
    batch: i64,
) -> Result<FeedBatch, RuleWorkerError> {
    let (_, alias, table) = entity_table(kind);
    let columns = match kind {
        GroupType::Device => DEVICE_COLUMNS,
        GroupType::Service => SERVICE_COLUMNS,
    };
    sqlx::query("INSERT INTO inventory_cursors (name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(table)
        .execute(pool)
        .await?;
    let mut conn = pool.acquire().await?;
    let horizon: String =
        sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
            .fetch_one(&mut *conn)
            .await?;
    // The cursor is read first and bound: as a join filter it would make every step scan the
    // whole table.
    let (cur_tx, cur_seq): (String, i64) = sqlx::query_as(
        "SELECT changed_tx::text, change_seq FROM inventory_cursors WHERE name = $1",
    )
    .bind(table)
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query(&format!(
        "SELECT {columns}, {alias}.changed_fields, {alias}.changed_tx::text AS ctx,
                {alias}.change_seq, {alias}.removed_at IS NOT NULL AS removed
           FROM {table} {alias}
          WHERE ({alias}.changed_tx, {alias}.change_seq) > ($1::text::xid8, $2)
            AND {alias}.changed_tx < $3::text::xid8
          ORDER BY {alias}.changed_tx, {alias}.change_seq LIMIT $4"
    ))
    .bind(&cur_tx)
    .bind(cur_seq)
    .bind(&horizon)
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    drop(conn);
    let mut changes = Vec::with_capacity(rows.len());
    let mut last = None;
    for row in &rows {
        let fields: Option<Vec<String>> = row.try_get("changed_fields")?;
        let removed: bool = row.try_get("removed")?;
        let change = match kind {
            GroupType::Device => Change::Device(Box::new(device_row(row)?.device)),
            GroupType::Service => Change::Service(Box::new(service_row(row)?.service)),
        };
        changes.push((change, fields, removed));
        last = Some((
            parse_xid(&row.try_get::<String, _>("ctx")?)?,
            row.try_get::<i64, _>("change_seq")?,
        ));
    }
    Ok(FeedBatch {
        changes,
        last,
        horizon: parse_xid(&horizon)?,
    })
}

/// Moves the feed cursor of `kind` forward to `(tx, seq)` (never back).
pub(super) async fn advance_feed(
    pool: &PgPool,
    kind: GroupType,
    (tx, seq): (u64, i64),
) -> Result<(), RuleWorkerError> {
    let (_, _, table) = entity_table(kind);
    sqlx::query(
        "UPDATE inventory_cursors SET changed_tx = $2::text::xid8, change_seq = $3
          WHERE name = $1 AND (changed_tx, change_seq) < ($2::text::xid8, $3)",
    )
    .bind(table)
    .bind(tx.to_string())
    .bind(seq)
    .execute(pool)
    .await?;
    Ok(())
}

/// The live entities `rule` matches, through its compiled SQL; `Err` (a message) when more
/// than `max` match or the query outlives `timeout`.
pub async fn matching_ids(
    pool: &PgPool,
    kind: GroupType,
    rule: &Rule,
    max: i64,
    timeout: Duration,
) -> Result<Result<HashSet<String>, String>, RuleWorkerError> {
    let (from, alias, _) = entity_table(kind);
    let fragment = rule.to_sql(&inv::sql_context(Utc::now()));
    let next = fragment.params.len() + 1;
    let sql = format!(
        "SELECT {alias}.id FROM {from} WHERE {alias}.removed_at IS NULL AND ({}) LIMIT ${next}",
        fragment.sql
    );
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "SET LOCAL statement_timeout = {}",
        timeout.as_millis().max(1)
    ))
    .execute(&mut *tx)
    .await?;
    let args = rule_arguments(
        Some(&fragment),
        &[corral_domain::rule::SqlParam::Int(max + 1)],
    )?;
    let ids: Vec<String> = match sqlx::query_scalar_with(&sql, args)
        .fetch_all(&mut *tx)
        .await
    {
        Ok(ids) => ids,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("57014") => {
            return Ok(Err(format!(
                "evaluation timed out after {} s",
                timeout.as_secs_f64()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    if ids.len() as i64 > max {
        return Ok(Err(format!(
            "the rule matches more than the maximum of {max} entities; memberships were left unchanged"
        )));
    }
    Ok(Ok(ids.into_iter().collect()))
}
