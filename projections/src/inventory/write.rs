//! Upserts and removals. Each batch is one statement in one short transaction that appends
//! an event per real change to `events` (aggregates `Device` / `Service`, migration 0011)
//! and writes the table, stamping the change feed only on real changes (see the parent
//! module).
//!
//! The statement reads the stored records (no lock), computes each new record and what
//! changed, inserts the events (`sequence` = the record's `version` + 1) and then writes the
//! rows whose `version` is still the one it read. The events are inserted before any row is
//! written, so the transaction's first write is to `events`. Two writers of one record race on
//! the events' key: the second fails with a unique violation and the batch is retried (it
//! then reads the winner's record). A no-op upsert writes neither event nor row.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use corral_domain::inventory::{Device, Service, MAX_BATCH};
use corral_domain::metadata::EventMetadata;
use serde_json::Value;
use sqlx::{PgPool, Row};

use super::UpsertOutcome;
use crate::StoreError;

/// Who writes: the metadata every event of the write carries, and for a feed its name
/// (stored as `metadata.feed`).
#[derive(Debug, Clone)]
pub struct WriteContext {
    /// Actor, source, correlation id (`EventMetadata`).
    pub metadata: EventMetadata,
    /// The feed (stream and subject) for writes from NATS.
    pub feed: Option<String>,
}

impl WriteContext {
    /// A write with this metadata.
    pub fn new(metadata: EventMetadata) -> Self {
        Self {
            metadata,
            feed: None,
        }
    }

    /// The `metadata` column of the events.
    pub fn metadata_json(&self) -> Value {
        let mut map: serde_json::Map<String, Value> = self
            .metadata
            .to_map()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        if let Some(feed) = &self.feed {
            map.insert("feed".into(), Value::String(feed.clone()));
        }
        Value::Object(map)
    }
}

/// How often a batch is tried when a concurrent writer of one of its records wins the race.
/// Every lost race means another batch committed, so the writers as a whole always make
/// progress; a record written by many writers at once may need as many tries as writers.
const ATTEMPTS: usize = 100;

/// One column of an upsert: its name, the element type of its `unnest` array, how the new
/// record takes it (from input `i` and stored `o`), and its JSON form in events (`{}` is the
/// row alias).
struct Col(
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

const DEVICE_COLS: &[Col] = &[
    Col("hostname", "text", None, None),
    Col("ip", "text", None, None),
    Col("mac", "text", None, None),
    Col("vendor", "text", None, None),
    Col("model", "text", None, None),
    Col("os", "text", None, None),
    Col("os_version", "text", None, None),
    Col("partition", "text", None, None),
    Col("site", "text", None, None),
    Col("type", "text", None, None),
    Col("agent_id", "text", None, None),
    Col("poller_id", "text", None, None),
    Col("tags", "jsonb", None, None),
    Col("metadata", "jsonb", None, None),
    Col(
        "discovery_sources",
        "jsonb",
        Some("ARRAY(SELECT jsonb_array_elements_text(i.discovery_sources))"),
        Some("to_jsonb({}.discovery_sources)"),
    ),
    Col("is_available", "bool", None, None),
    Col(
        "first_seen",
        "timestamptz",
        Some(
            "CASE WHEN o.id IS NULL THEN coalesce(i.first_seen, i.last_seen, now())
                  ELSE least(o.first_seen, i.first_seen) END",
        ),
        Some("corral_ts_json({}.first_seen)"),
    ),
    Col(
        "last_seen",
        "timestamptz",
        None,
        Some("corral_ts_json({}.last_seen)"),
    ),
];

const SERVICE_COLS: &[Col] = &[
    Col("device_id", "text", None, None),
    Col("type", "text", None, None),
    Col("name", "text", None, None),
    Col("port", "int4", None, None),
    Col("status", "text", None, None),
    Col("tags", "jsonb", None, None),
    Col("metadata", "jsonb", None, None),
    Col(
        "last_seen",
        "timestamptz",
        None,
        Some("corral_ts_json({}.last_seen)"),
    ),
];

/// `jsonb_build_object(...)` of a record's columns over `alias`.
fn record_json(cols: &[Col], alias: &str) -> String {
    let parts: Vec<String> = cols
        .iter()
        .map(|c| {
            let value =
                c.3.map_or_else(|| format!("{alias}.{}", c.0), |j| j.replace("{}", alias));
            format!("'{}', {value}", c.0)
        })
        .collect();
    format!("jsonb_build_object({})", parts.join(", "))
}

/// The upsert statement of `table` (aggregate `aggregate`): see the module docs. Returns one
/// row: `events` inserted and `written` rows.
fn upsert_sql(table: &str, aggregate: &str, cols: &[Col]) -> String {
    let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
    let arrays: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(n, c)| format!("${}::{}[]", n + 2, c.1))
        .collect();
    let meta = format!("${}::jsonb", cols.len() + 2);
    let news: Vec<String> = cols
        .iter()
        .map(|c| format!("{} AS {}", c.2.unwrap_or(&format!("i.{}", c.0)), c.0))
        .collect();
    let sets: Vec<String> = names
        .iter()
        .map(|n| format!("{n} = excluded.{n}"))
        .collect();
    let mut by_name: Vec<&str> = names.clone();
    by_name.sort();
    let changed: Vec<String> = by_name
        .iter()
        .map(|n| format!("CASE WHEN d.{n} IS DISTINCT FROM excluded.{n} THEN '{n}' END"))
        .collect();
    let changed = format!("array_remove(ARRAY[{}]::text[], NULL)", changed.join(", "));
    let ev_cols: Vec<String> = names.iter().map(|n| format!("ev.{n}")).collect();
    format!(
        "WITH i AS (
             SELECT * FROM unnest($1::text[], {arrays}) AS i(id, {names})
         ), o AS (
             SELECT d.*, {old_rec} AS rec FROM {table} d WHERE d.id = ANY($1::text[])
         ), n AS (
             SELECT i.id, o.id IS NOT NULL AS existed, coalesce(o.version, 0) AS version,
                    o.removed_at IS NOT NULL AS removed, o.rec AS old, {news}
               FROM i LEFT JOIN o ON o.id = i.id
         ), r AS (
             SELECT n.*, {new_rec} AS rec FROM n
         ), ev AS (
             SELECT r.*, CASE WHEN NOT r.existed OR r.version = 0 THEN '{aggregate}Recorded'
                              WHEN r.removed THEN '{aggregate}Revived'
                              ELSE '{aggregate}Changed' END AS event_type
               FROM r
              WHERE NOT r.existed OR r.removed OR r.version = 0 OR r.old <> r.rec
         ), ins AS (
             INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                 event_version, payload, metadata)
             SELECT '{aggregate}', ev.id, ev.version + 1, ev.event_type, '1',
                    jsonb_build_object(ev.event_type,
                        CASE WHEN ev.event_type = '{aggregate}Recorded'
                             THEN jsonb_build_object('record', ev.rec)
                             ELSE jsonb_build_object('changes', coalesce((
                                 SELECT jsonb_agg(jsonb_build_object('field', k,
                                            'before', ev.old -> k, 'after', ev.rec -> k)
                                            ORDER BY k)
                                   FROM jsonb_object_keys(ev.rec) k
                                  WHERE ev.old -> k IS DISTINCT FROM ev.rec -> k), '[]'))
                        END),
                    {meta}
               FROM ev ORDER BY ev.id
             RETURNING aggregate_id, sequence
         ), up AS (
             INSERT INTO {table} AS d (id, version, {names})
             SELECT ev.id, ins.sequence, {ev_cols}
               FROM ins JOIN ev ON ev.id = ins.aggregate_id
             ON CONFLICT (id) DO UPDATE SET {sets}, version = excluded.version,
                 removed_at = NULL, updated_at = now(),
                 changed_tx = pg_current_xact_id(), change_seq = nextval('inventory_change_seq'),
                 changed_fields = CASE
                     WHEN d.removed_at IS NOT NULL THEN NULL
                     WHEN coalesce((d.changed_tx, d.change_seq) <= (
                              SELECT c.changed_tx, c.change_seq FROM inventory_cursors c
                               WHERE c.name = '{table}'), false) THEN {changed}
                     WHEN d.changed_fields IS NULL THEN NULL
                     ELSE ARRAY(SELECT DISTINCT f FROM unnest(d.changed_fields || {changed}) f ORDER BY f)
                 END
             WHERE d.version = excluded.version - 1
             RETURNING d.id
         )
         SELECT (SELECT count(*) FROM ins) AS events, (SELECT count(*) FROM up) AS written",
        names = names.join(", "),
        arrays = arrays.join(", "),
        news = news.join(", "),
        sets = sets.join(", "),
        ev_cols = ev_cols.join(", "),
        old_rec = record_json(cols, "d"),
        new_rec = record_json(cols, "n"),
    )
}

/// The upsert of before migration 0011 (no events, no versions; the same change-feed
/// stamps), for the benchmark's same-run baseline only.
fn plain_upsert_sql(table: &str, cols: &[Col]) -> String {
    let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
    let arrays: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(n, c)| format!("${}::{}[]", n + 2, c.1))
        .collect();
    let inserts: Vec<String> = cols
        .iter()
        .map(|c| match c.0 {
            "first_seen" => "coalesce(i.first_seen, i.last_seen, now())".to_string(),
            _ => c.2.map_or_else(|| format!("i.{}", c.0), str::to_string),
        })
        .collect();
    let updated = |c: &Col| match c.0 {
        "first_seen" => "least(d.first_seen, excluded.first_seen)".to_string(),
        n => format!("excluded.{n}"),
    };
    let sets: Vec<String> = cols
        .iter()
        .map(|c| format!("{} = {}", c.0, updated(c)))
        .collect();
    let olds: Vec<String> = names.iter().map(|n| format!("d.{n}")).collect();
    let news: Vec<String> = cols.iter().map(updated).collect();
    let mut by_name: Vec<&Col> = cols.iter().collect();
    by_name.sort_by_key(|c| c.0);
    let changed: Vec<String> = by_name
        .iter()
        .map(|c| {
            format!(
                "CASE WHEN d.{0} IS DISTINCT FROM {1} THEN '{0}' END",
                c.0,
                updated(c)
            )
        })
        .collect();
    let changed = format!("array_remove(ARRAY[{}]::text[], NULL)", changed.join(", "));
    format!(
        "INSERT INTO {table} AS d (id, {names})
         SELECT i.id, {inserts} FROM unnest($1::text[], {arrays}) AS i(id, {names})
         ON CONFLICT (id) DO UPDATE SET {sets},
             removed_at = NULL, updated_at = now(),
             changed_tx = pg_current_xact_id(), change_seq = nextval('inventory_change_seq'),
             changed_fields = CASE
                 WHEN d.removed_at IS NOT NULL THEN NULL
                 WHEN coalesce((d.changed_tx, d.change_seq) <= (
                          SELECT c.changed_tx, c.change_seq FROM inventory_cursors c
                           WHERE c.name = '{table}'), false) THEN {changed}
                 WHEN d.changed_fields IS NULL THEN NULL
                 ELSE ARRAY(SELECT DISTINCT f FROM unnest(d.changed_fields || {changed}) f ORDER BY f)
             END
         WHERE d.removed_at IS NOT NULL OR ({olds}) IS DISTINCT FROM ({news})
         RETURNING d.id",
        names = names.join(", "),
        inserts = inserts.join(", "),
        arrays = arrays.join(", "),
        sets = sets.join(", "),
        olds = olds.join(", "),
        news = news.join(", "),
    )
}

static UPSERT_DEVICES: LazyLock<String> =
    LazyLock::new(|| upsert_sql("devices", "Device", DEVICE_COLS));
static UPSERT_SERVICES: LazyLock<String> =
    LazyLock::new(|| upsert_sql("services", "Service", SERVICE_COLS));
static PLAIN_UPSERT_DEVICES: LazyLock<String> =
    LazyLock::new(|| plain_upsert_sql("devices", DEVICE_COLS));

/// The last item of each id, in id order (a fixed lock order, so concurrent batches that share
/// ids cannot deadlock).
fn last_by_id<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<&T> {
    let mut by_id: BTreeMap<&str, &T> = BTreeMap::new();
    for item in items {
        by_id.insert(id(item), item);
    }
    by_id.into_values().collect()
}

fn string_map(m: &BTreeMap<String, String>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn bind_devices<'q>(sql: &'q str, batch: &[&Device]) -> PgQuery<'q> {
    let text = |f: fn(&Device) -> &Option<String>| -> Vec<Option<String>> {
        batch.iter().map(|d| f(d).clone()).collect()
    };
    sqlx::query(sql)
        .bind(batch.iter().map(|d| d.id.clone()).collect::<Vec<_>>())
        .bind(text(|d| &d.hostname))
        .bind(text(|d| &d.ip))
        .bind(text(|d| &d.mac))
        .bind(text(|d| &d.vendor))
        .bind(text(|d| &d.model))
        .bind(text(|d| &d.os))
        .bind(text(|d| &d.os_version))
        .bind(text(|d| &d.partition))
        .bind(text(|d| &d.site))
        .bind(text(|d| &d.device_type))
        .bind(text(|d| &d.agent_id))
        .bind(text(|d| &d.poller_id))
        .bind(
            batch
                .iter()
                .map(|d| string_map(&d.tags))
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|d| string_map(&d.metadata))
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|d| Value::from(d.discovery_sources.clone()))
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|d| d.is_available).collect::<Vec<_>>())
        .bind(batch.iter().map(|d| d.first_seen).collect::<Vec<_>>())
        .bind(batch.iter().map(|d| d.last_seen).collect::<Vec<_>>())
}

fn bind_services<'q>(sql: &'q str, batch: &[&Service]) -> PgQuery<'q> {
    let text = |f: fn(&Service) -> &String| -> Vec<String> {
        batch.iter().map(|s| f(s).clone()).collect()
    };
    sqlx::query(sql)
        .bind(text(|s| &s.id))
        .bind(text(|s| &s.device_id))
        .bind(text(|s| &s.service_type))
        .bind(text(|s| &s.name))
        .bind(batch.iter().map(|s| s.port).collect::<Vec<_>>())
        .bind(batch.iter().map(|s| s.status.clone()).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|s| string_map(&s.tags))
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|s| string_map(&s.metadata))
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|s| s.last_seen).collect::<Vec<_>>())
}

/// Whether `err` is a lost race on the events' key (a concurrent writer of the same record
/// appended the same sequence first).
fn lost_race(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e)
        if e.code().as_deref() == Some("23505") && e.constraint() == Some("events_pkey"))
}

/// 0-3 ms of jitter (from the clock: no RNG needed for spreading retries).
fn rand_jitter() -> u64 {
    u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            % 4,
    )
}

/// Runs one batch statement (built by `query`) in its own transaction, retrying lost races;
/// returns how many rows it wrote (as many as events it appended).
async fn write_batch<'q>(
    pool: &PgPool,
    query: impl Fn() -> PgQuery<'q>,
) -> Result<u64, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut tx = pool.begin().await?;
        match query().fetch_one(&mut *tx).await {
            Ok(row) => {
                let events: i64 = row.try_get("events")?;
                let written: i64 = row.try_get("written")?;
                if events != written {
                    // A row changed between the read and the write without an event (a write
                    // outside this path): roll back rather than log what was not written.
                    tx.rollback().await?;
                    if attempt < ATTEMPTS {
                        continue;
                    }
                    return Err(StoreError::Data(format!(
                        "inventory write: {events} events but {written} rows written"
                    )));
                }
                tx.commit().await?;
                return Ok(written as u64);
            }
            Err(err) if lost_race(&err) && attempt < ATTEMPTS => {
                tx.rollback().await?;
                // A short, growing pause, so that a crowd of writers spreads out.
                let pause = (attempt as u64).min(20) + rand_jitter();
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Upserts devices (see the module docs), one statement per [`MAX_BATCH`] distinct ids,
/// appending a `Device` event per real change.
#[tracing::instrument(skip_all, fields(inventory.items = devices.len()), err)]
pub async fn upsert_devices(
    pool: &PgPool,
    devices: &[Device],
    by: &WriteContext,
) -> Result<UpsertOutcome, StoreError> {
    let meta = by.metadata_json();
    let mut outcome = UpsertOutcome::default();
    for batch in last_by_id(devices, |d| &d.id).chunks(MAX_BATCH) {
        let written = write_batch(pool, || {
            bind_devices(&UPSERT_DEVICES, batch).bind(meta.clone())
        })
        .await?;
        outcome.upserted += written;
        outcome.unchanged += batch.len() as u64 - written;
    }
    Ok(outcome)
}

/// The device upsert of before inventory events (no events, no versions): the benchmark's
/// same-run baseline. Never used to write real inventory.
#[doc(hidden)]
pub async fn upsert_devices_without_events(
    pool: &PgPool,
    devices: &[Device],
) -> Result<UpsertOutcome, StoreError> {
    let mut outcome = UpsertOutcome::default();
    for batch in last_by_id(devices, |d| &d.id).chunks(MAX_BATCH) {
        let written = bind_devices(&PLAIN_UPSERT_DEVICES, batch)
            .fetch_all(pool)
            .await?
            .len() as u64;
        outcome.upserted += written;
        outcome.unchanged += batch.len() as u64 - written;
    }
    Ok(outcome)
}

/// Upserts services (see the module docs), one statement per [`MAX_BATCH`] distinct ids,
/// appending a `Service` event per real change. The host device need not exist (feeds may
/// deliver services first).
#[tracing::instrument(skip_all, fields(inventory.items = services.len()), err)]
pub async fn upsert_services(
    pool: &PgPool,
    services: &[Service],
    by: &WriteContext,
) -> Result<UpsertOutcome, StoreError> {
    let meta = by.metadata_json();
    let mut outcome = UpsertOutcome::default();
    for batch in last_by_id(services, |s| &s.id).chunks(MAX_BATCH) {
        let written = write_batch(pool, || {
            bind_services(&UPSERT_SERVICES, batch).bind(meta.clone())
        })
        .await?;
        outcome.upserted += written;
        outcome.unchanged += batch.len() as u64 - written;
    }
    Ok(outcome)
}

/// Tombstones live rows by id (stamping the change feed, `changed_fields` NULL) and appends
/// a `<Aggregate>Removed` event for each; returns how many were removed. Unknown or already
/// removed ids are not counted.
async fn remove(
    pool: &PgPool,
    table: &str,
    aggregate: &str,
    ids: &[String],
    by: &WriteContext,
) -> Result<u64, StoreError> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    let meta = by.metadata_json();
    let sql = format!(
        "WITH r AS (
             SELECT id, version FROM {table} WHERE id = ANY($1) AND removed_at IS NULL
         ), ins AS (
             INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                 event_version, payload, metadata)
             SELECT '{aggregate}', r.id, r.version + 1, '{aggregate}Removed', '1',
                    '{{\"{aggregate}Removed\": {{}}}}'::jsonb, $2::jsonb
               FROM r ORDER BY r.id
             RETURNING aggregate_id, sequence
         ), up AS (
             UPDATE {table} d SET removed_at = now(), updated_at = now(),
                    version = ins.sequence, changed_tx = pg_current_xact_id(),
                    change_seq = nextval('inventory_change_seq'), changed_fields = NULL
               FROM ins
              WHERE d.id = ins.aggregate_id AND d.version = ins.sequence - 1
                AND d.removed_at IS NULL
             RETURNING d.id
         )
         SELECT (SELECT count(*) FROM ins) AS events, (SELECT count(*) FROM up) AS written"
    );
    let mut removed = 0;
    for batch in ids.chunks(MAX_BATCH) {
        removed += write_batch(pool, || sqlx::query(&sql).bind(batch).bind(meta.clone())).await?;
    }
    Ok(removed)
}

/// Removes devices (tombstones them); their services are left as they are.
#[tracing::instrument(skip_all, fields(inventory.items = ids.len()), err)]
pub async fn remove_devices(
    pool: &PgPool,
    ids: &[String],
    by: &WriteContext,
) -> Result<u64, StoreError> {
    remove(pool, "devices", "Device", ids, by).await
}

/// Removes services (tombstones them).
#[tracing::instrument(skip_all, fields(inventory.items = ids.len()), err)]
pub async fn remove_services(
    pool: &PgPool,
    ids: &[String],
    by: &WriteContext,
) -> Result<u64, StoreError> {
    remove(pool, "services", "Service", ids, by).await
}
