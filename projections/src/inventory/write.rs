//! Upserts and removals: one `INSERT .. ON CONFLICT DO UPDATE .. WHERE <changed>` per batch,
//! stamping the change feed only on real changes (see the parent module).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use corral_domain::inventory::{Device, Service, MAX_BATCH};
use serde_json::Value;
use sqlx::PgPool;

use super::UpsertOutcome;
use crate::StoreError;

/// One column of an upsert: its name, the element type of its `unnest` array, how a new row
/// takes it from the input row `i`, and how an existing row `d` takes it from `excluded`.
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
        None,
    ),
    Col("is_available", "bool", None, None),
    Col(
        "first_seen",
        "timestamptz",
        Some("coalesce(i.first_seen, i.last_seen, now())"),
        Some("least(d.first_seen, excluded.first_seen)"),
    ),
    Col("last_seen", "timestamptz", None, None),
];

const SERVICE_COLS: &[Col] = &[
    Col("device_id", "text", None, None),
    Col("type", "text", None, None),
    Col("name", "text", None, None),
    Col("port", "int4", None, None),
    Col("status", "text", None, None),
    Col("tags", "jsonb", None, None),
    Col("metadata", "jsonb", None, None),
    Col("last_seen", "timestamptz", None, None),
];

/// `INSERT .. SELECT FROM unnest(..) ON CONFLICT DO UPDATE .. WHERE <something changed>`,
/// returning the ids it wrote.
fn upsert_sql(table: &str, cols: &[Col]) -> String {
    let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
    let arrays: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(n, c)| format!("${}::{}[]", n + 2, c.1))
        .collect();
    let inserts: Vec<String> = cols
        .iter()
        .map(|c| c.2.map_or_else(|| format!("i.{}", c.0), str::to_string))
        .collect();
    let updated = |c: &Col| {
        c.3.map_or_else(|| format!("excluded.{}", c.0), str::to_string)
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

static UPSERT_DEVICES: LazyLock<String> = LazyLock::new(|| upsert_sql("devices", DEVICE_COLS));
static UPSERT_SERVICES: LazyLock<String> = LazyLock::new(|| upsert_sql("services", SERVICE_COLS));

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

/// Upserts devices (see the module docs), one statement per [`MAX_BATCH`] distinct ids.
#[tracing::instrument(skip_all, fields(inventory.items = devices.len()), err)]
pub async fn upsert_devices(
    pool: &PgPool,
    devices: &[Device],
) -> Result<UpsertOutcome, StoreError> {
    let mut outcome = UpsertOutcome::default();
    for batch in last_by_id(devices, |d| &d.id).chunks(MAX_BATCH) {
        let text = |f: fn(&Device) -> &Option<String>| -> Vec<Option<String>> {
            batch.iter().map(|d| f(d).clone()).collect()
        };
        let written = sqlx::query(&UPSERT_DEVICES)
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
            .fetch_all(pool)
            .await?
            .len() as u64;
        outcome.upserted += written;
        outcome.unchanged += batch.len() as u64 - written;
    }
    Ok(outcome)
}

/// Upserts services (see the module docs), one statement per [`MAX_BATCH`] distinct ids.
/// The host device need not exist (feeds may deliver services first).
#[tracing::instrument(skip_all, fields(inventory.items = services.len()), err)]
pub async fn upsert_services(
    pool: &PgPool,
    services: &[Service],
) -> Result<UpsertOutcome, StoreError> {
    let mut outcome = UpsertOutcome::default();
    for batch in last_by_id(services, |s| &s.id).chunks(MAX_BATCH) {
        let text = |f: fn(&Service) -> &String| -> Vec<String> {
            batch.iter().map(|s| f(s).clone()).collect()
        };
        let written = sqlx::query(&UPSERT_SERVICES)
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
            .fetch_all(pool)
            .await?
            .len() as u64;
        outcome.upserted += written;
        outcome.unchanged += batch.len() as u64 - written;
    }
    Ok(outcome)
}

/// Tombstones live rows by id (stamping the change feed, `changed_fields` NULL); returns how
/// many were removed. Unknown or already removed ids are not counted.
async fn remove(pool: &PgPool, table: &str, ids: &[String]) -> Result<u64, StoreError> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    let mut removed = 0;
    for batch in ids.chunks(MAX_BATCH) {
        removed += sqlx::query(&format!(
            "UPDATE {table} SET removed_at = now(), updated_at = now(),
                    changed_tx = pg_current_xact_id(),
                    change_seq = nextval('inventory_change_seq'), changed_fields = NULL
              WHERE id IN (SELECT id FROM {table} WHERE id = ANY($1) AND removed_at IS NULL
                            ORDER BY id FOR UPDATE)"
        ))
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok(removed)
}

/// Removes devices (tombstones them); their services are left as they are.
#[tracing::instrument(skip_all, fields(inventory.items = ids.len()), err)]
pub async fn remove_devices(pool: &PgPool, ids: &[String]) -> Result<u64, StoreError> {
    remove(pool, "devices", ids).await
}

/// Removes services (tombstones them).
#[tracing::instrument(skip_all, fields(inventory.items = ids.len()), err)]
pub async fn remove_services(pool: &PgPool, ids: &[String]) -> Result<u64, StoreError> {
    remove(pool, "services", ids).await
}
