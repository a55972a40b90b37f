//! The inventory tables (`devices`, `services`): plain tables that discovery feeds upsert, with
//! tombstones and a change feed for incremental rule evaluation (migration 0002).
//!
//! Writes keep the change feed exact:
//! - an upsert that changes nothing does not touch the row (no new `change_seq`);
//! - a real change stamps `changed_tx`, `change_seq`, `updated_at` and lists the changed
//!   columns in `changed_fields`, merged with the previous list while the evaluator has not
//!   consumed the previous change yet (its cursor in `inventory_cursors` is below it);
//! - a new, revived or removed row gets `changed_fields` NULL (every rule must look at it).
//!
//! An upsert replaces the whole record (omitted fields become NULL), except `first_seen`,
//! which keeps the earliest value reported (absent: the first `last_seen`, else the time of
//! the first upsert). Each batch of at most [`MAX_BATCH`](corral_domain::inventory::MAX_BATCH) items is one statement (one short
//! transaction); within a batch the last item with an id wins.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use corral_domain::inventory::{Device, Service};
use corral_domain::rule::{SqlContext, SqlFragment, SqlParam};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::types::Json;
use sqlx::{Arguments, PgPool, Row};

use crate::StoreError;

mod history;
mod write;

pub use history::{device_at, service_at};

pub use write::{
    remove_devices, remove_services, upsert_devices, upsert_devices_without_events,
    upsert_services, WriteContext,
};

/// Device rules and filters are SQL over alias `d` in this FROM clause.
pub const DEVICE_FROM: &str = "devices d";
/// Service rules and filters are SQL over `s` and its host device `sd` in this FROM clause.
/// A removed (tombstoned) host device counts as absent.
pub const SERVICE_FROM: &str =
    "services s LEFT JOIN devices sd ON sd.id = s.device_id AND sd.removed_at IS NULL";
/// `totalCount` counts at most this many rows (the count of a broad filter over a large
/// inventory would otherwise scan it all on every page).
pub const COUNT_CAP: i64 = 100_000;

/// The rule compiler's context for queries that run now: member sets of `group:` references
/// come from the membership read model (effective: the group's subtree; direct: its own).
pub fn sql_context(now: DateTime<Utc>) -> SqlContext {
    SqlContext {
        now,
        first_param: 1,
        effective_members_sql: "SELECT m.member_id FROM rm_membership.effective m \
            WHERE m.ancestor_id = {group}"
            .into(),
        direct_members_sql: "SELECT m.member_id FROM rm_membership.direct m \
            WHERE m.group_id = {group}"
            .into(),
    }
}

/// A stored device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    /// The record.
    pub device: Device,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A stored service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRow {
    /// The record.
    pub service: Service,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What an upsert did, counted over distinct ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertOutcome {
    /// Rows inserted, revived or changed.
    pub upserted: u64,
    /// Rows that already held exactly this record.
    pub unchanged: u64,
}

/// A `totalCount`: exact up to [`COUNT_CAP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Matching rows, at most [`COUNT_CAP`].
    pub total: i64,
    /// False when more than [`COUNT_CAP`] rows match.
    pub exact: bool,
}

/// The columns [`device_row`] reads, over alias `d`.
pub const DEVICE_COLUMNS: &str = "d.id, d.hostname, d.ip, d.mac, d.vendor, d.model, d.os, \
    d.os_version, d.partition, d.site, d.type, d.agent_id, d.poller_id, d.tags, d.metadata, \
    d.discovery_sources, d.is_available, d.first_seen, d.last_seen, d.updated_at";
/// The columns [`service_row`] reads, over alias `s`.
pub const SERVICE_COLUMNS: &str = "s.id, s.device_id, s.type, s.name, s.port, s.status, s.tags, \
    s.metadata, s.last_seen, s.updated_at";

/// Reads a row selected with [`DEVICE_COLUMNS`].
pub fn device_row(r: &PgRow) -> Result<DeviceRow, StoreError> {
    let map = |c: &str| -> Result<BTreeMap<String, String>, StoreError> {
        Ok(r.try_get::<Json<BTreeMap<String, String>>, _>(c)?.0)
    };
    Ok(DeviceRow {
        device: Device {
            id: r.try_get("id")?,
            hostname: r.try_get("hostname")?,
            ip: r.try_get("ip")?,
            mac: r.try_get("mac")?,
            vendor: r.try_get("vendor")?,
            model: r.try_get("model")?,
            os: r.try_get("os")?,
            os_version: r.try_get("os_version")?,
            partition: r.try_get("partition")?,
            site: r.try_get("site")?,
            device_type: r.try_get("type")?,
            agent_id: r.try_get("agent_id")?,
            poller_id: r.try_get("poller_id")?,
            tags: map("tags")?,
            metadata: map("metadata")?,
            discovery_sources: r.try_get("discovery_sources")?,
            is_available: r.try_get("is_available")?,
            first_seen: r.try_get("first_seen")?,
            last_seen: r.try_get("last_seen")?,
        },
        updated_at: r.try_get("updated_at")?,
    })
}

/// Reads a row selected with [`SERVICE_COLUMNS`].
pub fn service_row(r: &PgRow) -> Result<ServiceRow, StoreError> {
    let map = |c: &str| -> Result<BTreeMap<String, String>, StoreError> {
        Ok(r.try_get::<Json<BTreeMap<String, String>>, _>(c)?.0)
    };
    Ok(ServiceRow {
        service: Service {
            id: r.try_get("id")?,
            device_id: r.try_get("device_id")?,
            service_type: r.try_get("type")?,
            name: r.try_get("name")?,
            port: r.try_get("port")?,
            status: r.try_get("status")?,
            tags: map("tags")?,
            metadata: map("metadata")?,
            last_seen: r.try_get("last_seen")?,
        },
        updated_at: r.try_get("updated_at")?,
    })
}

/// Live devices by id (unknown and removed ids are left out).
pub async fn devices_by_ids(pool: &PgPool, ids: &[String]) -> Result<Vec<DeviceRow>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices d WHERE d.id = ANY($1) AND d.removed_at IS NULL"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await?;
    rows.iter().map(device_row).collect()
}

/// Live services by id (unknown and removed ids are left out).
pub async fn services_by_ids(pool: &PgPool, ids: &[String]) -> Result<Vec<ServiceRow>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {SERVICE_COLUMNS} FROM services s WHERE s.id = ANY($1) AND s.removed_at IS NULL"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await?;
    rows.iter().map(service_row).collect()
}

/// The SQL condition "member `column` is visible within the scope's groups in `$param`" (a
/// `uuid[]`: the scope's subtrees expanded, see
/// [`crate::group_tree::read::subtree_ids`]): it is a STATIC direct member (`source = 'S'`
/// in `rm_membership.direct`) of one of those groups. Rule-derived membership never makes a
/// record visible. An empty array shows nothing. Callers who see everything must leave the
/// condition out (it is not written to be trivially true for a NULL array).
pub fn visible_sql(column: &str, param: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM {m}.direct vm \
          WHERE vm.member_id = {column} AND vm.source = 'S' \
            AND vm.group_id = ANY({param}::uuid[]))",
        m = crate::membership::LIVE_SCHEMA,
    )
}

/// Like [`devices_by_ids`], keeping only devices visible within the scope's groups `roots` (its subtrees expanded)
/// (see [`visible_sql`]).
pub async fn visible_devices_by_ids(
    pool: &PgPool,
    ids: &[String],
    roots: &[uuid::Uuid],
) -> Result<Vec<DeviceRow>, StoreError> {
    if ids.is_empty() || roots.is_empty() {
        return Ok(vec![]);
    }
    let rows = sqlx::query(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices d
          WHERE d.id = ANY($1) AND d.removed_at IS NULL AND {}",
        visible_sql("d.id", "$2")
    ))
    .bind(ids)
    .bind(roots)
    .fetch_all(pool)
    .await?;
    rows.iter().map(device_row).collect()
}

/// Like [`services_by_ids`], keeping only services visible within the scope's groups `roots` (its subtrees expanded)
/// (see [`visible_sql`]: a service's own static memberships count, not its device's).
pub async fn visible_services_by_ids(
    pool: &PgPool,
    ids: &[String],
    roots: &[uuid::Uuid],
) -> Result<Vec<ServiceRow>, StoreError> {
    if ids.is_empty() || roots.is_empty() {
        return Ok(vec![]);
    }
    let rows = sqlx::query(&format!(
        "SELECT {SERVICE_COLUMNS} FROM services s
          WHERE s.id = ANY($1) AND s.removed_at IS NULL AND {}",
        visible_sql("s.id", "$2")
    ))
    .bind(ids)
    .bind(roots)
    .fetch_all(pool)
    .await?;
    rows.iter().map(service_row).collect()
}

/// The compiled filter's parameters as query arguments (`$1`..), then `extra`.
pub fn rule_arguments(
    filter: Option<&SqlFragment>,
    extra: &[SqlParam],
) -> Result<PgArguments, StoreError> {
    let mut args = PgArguments::default();
    let params = filter.map(|f| f.params.as_slice()).unwrap_or_default();
    for p in params.iter().chain(extra) {
        let added = match p {
            SqlParam::Text(v) => args.add(v.clone()),
            SqlParam::TextArray(v) => args.add(v.clone()),
            SqlParam::Bool(v) => args.add(*v),
            SqlParam::Int(v) => args.add(*v),
            SqlParam::Timestamp(v) => args.add(*v),
            SqlParam::Uuid(v) => args.add(*v),
        };
        added.map_err(|e| StoreError::Data(format!("binding a rule parameter: {e}")))?;
    }
    Ok(args)
}

/// `WHERE` conditions of a live, filtered, keyset page; `next` is the first free parameter.
/// With `scoped`, the roots of [`visible_sql`] are the parameter after `after`'s.
fn page_where(
    alias: &str,
    filter: Option<&SqlFragment>,
    after: bool,
    scoped: bool,
) -> (String, usize) {
    let mut next = filter.map_or(0, |f| f.params.len()) + 1;
    let mut sql = format!("{alias}.removed_at IS NULL");
    if let Some(f) = filter {
        sql += &format!(" AND ({})", f.sql);
    }
    if after {
        sql += &format!(" AND {alias}.id > ${next}");
        next += 1;
    }
    if scoped {
        sql += &format!(
            " AND {}",
            visible_sql(&format!("{alias}.id"), &format!("${next}"))
        );
        next += 1;
    }
    (sql, next)
}

/// The filter's parameters, then `after`, the roots (when scoped) and `last`, as
/// [`page_where`] numbers them.
fn page_arguments(
    filter: Option<&SqlFragment>,
    after: Option<&str>,
    roots: Option<&[uuid::Uuid]>,
    last: i64,
) -> Result<PgArguments, StoreError> {
    let mut args = rule_arguments(filter, &[])?;
    let bad = |e| StoreError::Data(format!("binding a page parameter: {e}"));
    if let Some(a) = after {
        args.add(a.to_string()).map_err(bad)?;
    }
    if let Some(r) = roots {
        args.add(r.to_vec()).map_err(bad)?;
    }
    args.add(last).map_err(bad)?;
    Ok(args)
}

#[allow(clippy::too_many_arguments)]
async fn page<'c>(
    pool: impl sqlx::PgExecutor<'c>,
    select: &str,
    from: &str,
    alias: &str,
    filter: Option<&SqlFragment>,
    after: Option<&str>,
    roots: Option<&[uuid::Uuid]>,
    limit: i64,
) -> Result<Vec<PgRow>, StoreError> {
    let (conditions, next) = page_where(alias, filter, after.is_some(), roots.is_some());
    let sql =
        format!("SELECT {select} FROM {from} WHERE {conditions} ORDER BY {alias}.id LIMIT ${next}");
    Ok(
        sqlx::query_with(&sql, page_arguments(filter, after, roots, limit)?)
            .fetch_all(pool)
            .await?,
    )
}

async fn count<'c>(
    pool: impl sqlx::PgExecutor<'c>,
    from: &str,
    alias: &str,
    filter: Option<&SqlFragment>,
    roots: Option<&[uuid::Uuid]>,
) -> Result<Count, StoreError> {
    let (conditions, next) = page_where(alias, filter, false, roots.is_some());
    let sql =
        format!("SELECT count(*) FROM (SELECT 1 FROM {from} WHERE {conditions} LIMIT ${next}) t");
    let n: i64 = sqlx::query_scalar_with(&sql, page_arguments(filter, None, roots, COUNT_CAP + 1)?)
        .fetch_one(pool)
        .await?;
    Ok(Count {
        total: n.min(COUNT_CAP),
        exact: n <= COUNT_CAP,
    })
}

/// Up to `limit` live devices with ids after `after`, in id order, matching `filter` (a device
/// rule compiled with [`sql_context`] over [`DEVICE_FROM`]).
pub async fn device_page<'c>(
    pool: impl sqlx::PgExecutor<'c>,
    filter: Option<&SqlFragment>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<DeviceRow>, StoreError> {
    device_page_within(pool, filter, after, None, limit).await
}

/// [`device_page`] of the devices visible within the scope's groups `roots` (its subtrees expanded) (see
/// [`visible_sql`]); `None` for every device (no extra condition at all).
pub async fn device_page_within<'c>(
    pool: impl sqlx::PgExecutor<'c>,
    filter: Option<&SqlFragment>,
    after: Option<&str>,
    roots: Option<&[uuid::Uuid]>,
    limit: i64,
) -> Result<Vec<DeviceRow>, StoreError> {
    let rows = page(
        pool,
        DEVICE_COLUMNS,
        DEVICE_FROM,
        "d",
        filter,
        after,
        roots,
        limit,
    )
    .await?;
    rows.iter().map(device_row).collect()
}

/// Like [`device_page`], for services and a service rule over [`SERVICE_FROM`].
pub async fn service_page<'c>(
    pool: impl sqlx::PgExecutor<'c>,
    filter: Option<&SqlFragment>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ServiceRow>, StoreError> {
    service_page_within(pool, filter, after, None, limit).await
}

/// Like [`device_page_within`], for services (a service's own static memberships count).
pub async fn service_page_within<'c>(
    pool: impl sqlx::PgExecutor<'c>,
    filter: Option<&SqlFragment>,
    after: Option<&str>,
    roots: Option<&[uuid::Uuid]>,
    limit: i64,
) -> Result<Vec<ServiceRow>, StoreError> {
    let rows = page(
        pool,
        SERVICE_COLUMNS,
        SERVICE_FROM,
        "s",
        filter,
        after,
        roots,
        limit,
    )
    .await?;
    rows.iter().map(service_row).collect()
}

/// Live devices matching `filter`, counted up to [`COUNT_CAP`].
pub async fn count_devices<'c>(
    pool: impl sqlx::PgExecutor<'c>,
    filter: Option<&SqlFragment>,
) -> Result<Count, StoreError> {
    count(pool, DEVICE_FROM, "d", filter, None).await
}

/// [`count_devices`] of the devices visible within the scope's groups `roots` (its subtrees expanded) (`None`: all).
pub async fn count_devices_within<'c>(
    pool: impl sqlx::PgExecutor<'c>,
    filter: Option<&SqlFragment>,
    roots: Option<&[uuid::Uuid]>,
) -> Result<Count, StoreError> {
    count(pool, DEVICE_FROM, "d", filter, roots).await
}

/// Live services matching `filter`, counted up to [`COUNT_CAP`].
pub async fn count_services<'c>(
    pool: impl sqlx::PgExecutor<'c>,
    filter: Option<&SqlFragment>,
) -> Result<Count, StoreError> {
    count(pool, SERVICE_FROM, "s", filter, None).await
}

/// [`count_services`] of the services visible within the scope's groups `roots` (its subtrees expanded) (`None`: all).
pub async fn count_services_within<'c>(
    pool: impl sqlx::PgExecutor<'c>,
    filter: Option<&SqlFragment>,
    roots: Option<&[uuid::Uuid]>,
) -> Result<Count, StoreError> {
    count(pool, SERVICE_FROM, "s", filter, roots).await
}
