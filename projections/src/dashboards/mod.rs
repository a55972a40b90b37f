//! Dashboards: the commands (`DashboardCommands`), the read model `rm_dashboards` built from
//! Dashboard events by a catch-up projector, and the queries over it.
//!
//! The read model keeps each live dashboard and template with its widgets, and, per owner,
//! the default dashboard: the dashboard of the owner's latest `DashboardMadeDefault` event in
//! log order, as long as it is not deleted.

mod fold;
pub mod read;

use std::collections::HashSet;

use async_trait::async_trait;
use corral_domain::dashboard::{Widget, WidgetKind, WidgetPosition};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

pub use crate::commands::dashboards::{dashboard_commands, DashboardCommands};
pub use fold::{applies_without_row, decode, DashboardFold, DashboardRow};

use crate::log::EventRecord;
use crate::projection::{schema_ident, Projection};
use crate::StoreError;

/// Projector and checkpoint name.
pub const DASHBOARDS: &str = "dashboards";
/// The schema that serves queries.
pub const LIVE_SCHEMA: &str = "rm_dashboards";

/// Builds `dashboards`, `widgets` and `defaults`.
#[derive(Debug, Default, Clone, Copy)]
pub struct DashboardsProjection;

#[async_trait]
impl Projection for DashboardsProjection {
    fn name(&self) -> &'static str {
        DASHBOARDS
    }

    fn aggregate_types(&self) -> Vec<String> {
        vec!["Dashboard".to_string()]
    }

    fn needs_metadata(&self) -> bool {
        false
    }

    fn live_schema(&self) -> Option<&'static str> {
        Some(LIVE_SCHEMA)
    }

    async fn create_tables(&self, conn: &mut PgConnection, schema: &str) -> Result<(), StoreError> {
        let s = schema_ident(schema)?;
        let ddl = [
            // name_key is lower(name) with byte ordering, so that keyset cursors compare as
            // pages sort.
            format!(
                "CREATE TABLE {s}.dashboards (
                    id uuid PRIMARY KEY, owner text, is_template boolean NOT NULL,
                    name text NOT NULL, name_key text COLLATE \"C\" NOT NULL, copied_from uuid,
                    layout_version bigint NOT NULL, version bigint NOT NULL,
                    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)"
            ),
            format!("CREATE INDEX dashboards_owner_idx ON {s}.dashboards (owner, name_key, id)"),
            format!(
                "CREATE INDEX dashboards_template_idx ON {s}.dashboards (name_key, id)
                  WHERE is_template"
            ),
            format!(
                "CREATE TABLE {s}.widgets (
                    dashboard_id uuid NOT NULL, id uuid NOT NULL, ord int NOT NULL,
                    kind text NOT NULL, title text NOT NULL, config jsonb NOT NULL,
                    x int NOT NULL, y int NOT NULL, w int NOT NULL, h int NOT NULL,
                    PRIMARY KEY (dashboard_id, id))"
            ),
            format!(
                "CREATE TABLE {s}.defaults (owner text PRIMARY KEY, dashboard_id uuid NOT NULL)"
            ),
            format!("CREATE INDEX defaults_dashboard_idx ON {s}.defaults (dashboard_id)"),
        ];
        for statement in ddl {
            sqlx::query(&statement).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        schema: &str,
        events: &[EventRecord],
    ) -> Result<(), StoreError> {
        let s = schema_ident(schema)?;
        let mut fold = load(conn, s, events).await?;
        for event in events {
            fold.apply(event)?;
        }
        write(conn, s, &fold).await
    }
}

/// Loads the dashboards (with their widgets) that a batch changes without creating them.
async fn load(
    conn: &mut PgConnection,
    s: &str,
    events: &[EventRecord],
) -> Result<DashboardFold, StoreError> {
    let ids: HashSet<Uuid> = events
        .iter()
        .filter(|e| !applies_without_row(&e.event_type))
        .filter_map(|e| e.aggregate_id.parse().ok())
        .collect();
    let mut fold = DashboardFold::default();
    if ids.is_empty() {
        return Ok(fold);
    }
    let ids: Vec<Uuid> = ids.into_iter().collect();
    let rows = sqlx::query(&format!(
        "SELECT id, owner, is_template, name, copied_from, layout_version, version, created_at,
                updated_at
           FROM {s}.dashboards WHERE id = ANY($1)"
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for r in &rows {
        let id: Uuid = r.try_get("id")?;
        fold.rows.insert(
            id,
            DashboardRow {
                id,
                owner: r.try_get("owner")?,
                is_template: r.try_get("is_template")?,
                name: r.try_get("name")?,
                copied_from: r.try_get("copied_from")?,
                layout_version: r.try_get("layout_version")?,
                version: r.try_get("version")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
                widgets: vec![],
            },
        );
    }
    let widgets = sqlx::query(&format!(
        "SELECT dashboard_id, id, kind, title, config, x, y, w, h
           FROM {s}.widgets WHERE dashboard_id = ANY($1) ORDER BY dashboard_id, ord"
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for r in &widgets {
        let dashboard: Uuid = r.try_get("dashboard_id")?;
        let widget = widget_from_row(r)?;
        if let Some(row) = fold.rows.get_mut(&dashboard) {
            row.widgets.push(widget);
        }
    }
    Ok(fold)
}

/// Decodes a `widgets` row (`id, kind, title, config, x, y, w, h`).
pub(crate) fn widget_from_row(r: &sqlx::postgres::PgRow) -> Result<Widget, StoreError> {
    let kind: String = r.try_get("kind")?;
    let config: serde_json::Value = r.try_get("config")?;
    let cell = |name: &str| -> Result<u32, StoreError> {
        let v: i32 = r.try_get(name)?;
        u32::try_from(v).map_err(|_| StoreError::Data(format!("widget {name} {v}")))
    };
    Ok(Widget {
        id: r.try_get("id")?,
        kind: WidgetKind::parse(&kind)
            .ok_or_else(|| StoreError::Data(format!("unknown widget kind {kind}")))?,
        title: r.try_get("title")?,
        config: match config {
            serde_json::Value::Object(m) => m,
            other => return Err(StoreError::Data(format!("widget config {other}"))),
        },
        position: WidgetPosition {
            x: cell("x")?,
            y: cell("y")?,
            w: cell("w")?,
            h: cell("h")?,
        },
    })
}

async fn write(conn: &mut PgConnection, s: &str, fold: &DashboardFold) -> Result<(), StoreError> {
    if !fold.deleted.is_empty() {
        let deleted: Vec<Uuid> = fold.deleted.iter().copied().collect();
        for table in ["widgets", "dashboards"] {
            let column = if table == "widgets" {
                "dashboard_id"
            } else {
                "id"
            };
            sqlx::query(&format!("DELETE FROM {s}.{table} WHERE {column} = ANY($1)"))
                .bind(&deleted)
                .execute(&mut *conn)
                .await?;
        }
    }
    let dirty: Vec<&DashboardRow> = fold
        .dirty
        .iter()
        .filter_map(|id| fold.rows.get(id))
        .collect();
    if !dirty.is_empty() {
        sqlx::query(&format!(
            "INSERT INTO {s}.dashboards (id, owner, is_template, name, copied_from,
                    layout_version, version, created_at, updated_at, name_key)
             SELECT u.*, lower(u.name)
               FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::text[], $5::uuid[],
                    $6::bigint[], $7::bigint[], $8::timestamptz[], $9::timestamptz[])
                    AS u(id, owner, is_template, name, copied_from, layout_version, version,
                         created_at, updated_at)
             ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner,
                is_template = EXCLUDED.is_template, name = EXCLUDED.name,
                copied_from = EXCLUDED.copied_from, layout_version = EXCLUDED.layout_version,
                version = EXCLUDED.version, created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at, name_key = EXCLUDED.name_key"
        ))
        .bind(dirty.iter().map(|d| d.id).collect::<Vec<_>>())
        .bind(dirty.iter().map(|d| d.owner.clone()).collect::<Vec<_>>())
        .bind(dirty.iter().map(|d| d.is_template).collect::<Vec<_>>())
        .bind(dirty.iter().map(|d| d.name.clone()).collect::<Vec<_>>())
        .bind(dirty.iter().map(|d| d.copied_from).collect::<Vec<_>>())
        .bind(dirty.iter().map(|d| d.layout_version).collect::<Vec<_>>())
        .bind(dirty.iter().map(|d| d.version).collect::<Vec<_>>())
        .bind(dirty.iter().map(|d| d.created_at).collect::<Vec<_>>())
        .bind(dirty.iter().map(|d| d.updated_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
        let ids: Vec<Uuid> = dirty.iter().map(|d| d.id).collect();
        sqlx::query(&format!(
            "DELETE FROM {s}.widgets WHERE dashboard_id = ANY($1)"
        ))
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
        let widgets: Vec<(Uuid, i32, &Widget)> = dirty
            .iter()
            .flat_map(|d| {
                d.widgets
                    .iter()
                    .enumerate()
                    .map(move |(i, w)| (d.id, i as i32, w))
            })
            .collect();
        if !widgets.is_empty() {
            sqlx::query(&format!(
                "INSERT INTO {s}.widgets (dashboard_id, id, ord, kind, title, config, x, y, w, h)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::text[],
                        $6::jsonb[], $7::int[], $8::int[], $9::int[], $10::int[])"
            ))
            .bind(widgets.iter().map(|w| w.0).collect::<Vec<_>>())
            .bind(widgets.iter().map(|w| w.2.id).collect::<Vec<_>>())
            .bind(widgets.iter().map(|w| w.1).collect::<Vec<_>>())
            .bind(
                widgets
                    .iter()
                    .map(|w| w.2.kind.as_str().to_string())
                    .collect::<Vec<_>>(),
            )
            .bind(
                widgets
                    .iter()
                    .map(|w| w.2.title.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                widgets
                    .iter()
                    .map(|w| serde_json::Value::Object(w.2.config.clone()))
                    .collect::<Vec<_>>(),
            )
            .bind(cells(&widgets, |p| p.x))
            .bind(cells(&widgets, |p| p.y))
            .bind(cells(&widgets, |p| p.w))
            .bind(cells(&widgets, |p| p.h))
            .execute(&mut *conn)
            .await?;
        }
    }
    let (set, cleared): (Vec<_>, Vec<_>) = fold.defaults.iter().partition(|(_, d)| d.is_some());
    if !set.is_empty() {
        sqlx::query(&format!(
            "INSERT INTO {s}.defaults (owner, dashboard_id)
             SELECT * FROM unnest($1::text[], $2::uuid[])
             ON CONFLICT (owner) DO UPDATE SET dashboard_id = EXCLUDED.dashboard_id"
        ))
        .bind(set.iter().map(|(o, _)| (*o).clone()).collect::<Vec<_>>())
        .bind(set.iter().filter_map(|(_, d)| **d).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !cleared.is_empty() {
        sqlx::query(&format!("DELETE FROM {s}.defaults WHERE owner = ANY($1)"))
            .bind(
                cleared
                    .iter()
                    .map(|(o, _)| (*o).clone())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *conn)
            .await?;
    }
    if !fold.deleted.is_empty() {
        // A deleted dashboard is nobody's default, whether this batch chose it or an earlier.
        let deleted: Vec<Uuid> = fold.deleted.iter().copied().collect();
        sqlx::query(&format!(
            "DELETE FROM {s}.defaults WHERE dashboard_id = ANY($1)"
        ))
        .bind(&deleted)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

fn cells(widgets: &[(Uuid, i32, &Widget)], f: impl Fn(&WidgetPosition) -> u32) -> Vec<i32> {
    widgets.iter().map(|w| f(&w.2.position) as i32).collect()
}
