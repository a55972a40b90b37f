//! Queries over the dashboards read model.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use corral_domain::dashboard::Widget;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{widget_from_row, LIVE_SCHEMA};
use crate::group_tree::read::After;
use crate::StoreError;

/// A dashboard or template as queries return it.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardView {
    /// Dashboard id.
    pub id: Uuid,
    /// Owning subject (`None` for a template).
    pub owner: Option<String>,
    /// Shared template?
    pub is_template: bool,
    /// Whether it is its owner's default dashboard.
    pub is_default: bool,
    /// Name.
    pub name: String,
    /// `lower(name)`, the sort key of pages.
    pub name_key: String,
    /// Template it was cloned from, or dashboard a template was published from.
    pub copied_from: Option<Uuid>,
    /// Layout version.
    pub layout_version: i64,
    /// Aggregate version.
    pub version: i64,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
    /// Widgets, top to bottom, left to right.
    pub widgets: Vec<Widget>,
}

const COLUMNS: &str = "d.id, d.owner, d.is_template, d.name, d.name_key, d.copied_from, \
    d.layout_version, d.version, d.created_at, d.updated_at, \
    (df.dashboard_id IS NOT NULL) AS is_default";

fn from_row(r: &PgRow) -> Result<DashboardView, StoreError> {
    Ok(DashboardView {
        id: r.try_get("id")?,
        owner: r.try_get("owner")?,
        is_template: r.try_get("is_template")?,
        is_default: r.try_get("is_default")?,
        name: r.try_get("name")?,
        name_key: r.try_get("name_key")?,
        copied_from: r.try_get("copied_from")?,
        layout_version: r.try_get("layout_version")?,
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        widgets: vec![],
    })
}

/// Reads `rows` and their widgets (one query for all of them).
async fn with_widgets(pool: &PgPool, rows: &[PgRow]) -> Result<Vec<DashboardView>, StoreError> {
    let mut out: Vec<DashboardView> = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    if out.is_empty() {
        return Ok(out);
    }
    let ids: Vec<Uuid> = out.iter().map(|d| d.id).collect();
    let widgets = sqlx::query(&format!(
        "SELECT dashboard_id, id, kind, title, config, x, y, w, h
           FROM {LIVE_SCHEMA}.widgets WHERE dashboard_id = ANY($1)
          ORDER BY dashboard_id, y, x, id"
    ))
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut by_dashboard: HashMap<Uuid, Vec<Widget>> = HashMap::new();
    for r in &widgets {
        by_dashboard
            .entry(r.try_get("dashboard_id")?)
            .or_default()
            .push(widget_from_row(r)?);
    }
    for d in &mut out {
        d.widgets = by_dashboard.remove(&d.id).unwrap_or_default();
    }
    Ok(out)
}

/// A live dashboard or template by id.
pub async fn by_id(pool: &PgPool, id: Uuid) -> Result<Option<DashboardView>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {LIVE_SCHEMA}.dashboards d
           LEFT JOIN {LIVE_SCHEMA}.defaults df ON df.owner = d.owner AND df.dashboard_id = d.id
          WHERE d.id = $1"
    ))
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(with_widgets(pool, &rows).await?.pop())
}

/// Up to `limit` dashboards of `owner` by name (ignoring case), after `after`, and how many
/// the owner has.
///
/// `backward` (`last`/`before`): the dashboards before `after` instead, nearest first.
pub async fn owned(
    pool: &PgPool,
    owner: &str,
    limit: i64,
    after: Option<&After>,
    backward: bool,
) -> Result<(Vec<DashboardView>, i64), StoreError> {
    let (cmp, order) = if backward {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {LIVE_SCHEMA}.dashboards d
           LEFT JOIN {LIVE_SCHEMA}.defaults df ON df.owner = d.owner AND df.dashboard_id = d.id
          WHERE d.owner = $1 AND NOT d.is_template
            AND ($3::text IS NULL OR (d.name_key, d.id) {cmp} ($3::text COLLATE \"C\", $4::uuid))
          ORDER BY d.name_key {order}, d.id {order} LIMIT $2"
    ))
    .bind(owner)
    .bind(limit)
    .bind(after.map(|a| a.key.clone()))
    .bind(after.map(|a| a.id))
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {LIVE_SCHEMA}.dashboards WHERE owner = $1 AND NOT is_template"
    ))
    .bind(owner)
    .fetch_one(pool)
    .await?;
    Ok((with_widgets(pool, &rows).await?, total))
}

/// Up to `limit` templates by name (ignoring case), after `after`, and how many there are.
///
/// `backward` (`last`/`before`): the templates before `after` instead, nearest first.
pub async fn templates(
    pool: &PgPool,
    limit: i64,
    after: Option<&After>,
    backward: bool,
) -> Result<(Vec<DashboardView>, i64), StoreError> {
    let (cmp, order) = if backward {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {LIVE_SCHEMA}.dashboards d
           LEFT JOIN {LIVE_SCHEMA}.defaults df ON false
          WHERE d.is_template
            AND ($2::text IS NULL OR (d.name_key, d.id) {cmp} ($2::text COLLATE \"C\", $3::uuid))
          ORDER BY d.name_key {order}, d.id {order} LIMIT $1"
    ))
    .bind(limit)
    .bind(after.map(|a| a.key.clone()))
    .bind(after.map(|a| a.id))
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {LIVE_SCHEMA}.dashboards WHERE is_template"
    ))
    .fetch_one(pool)
    .await?;
    Ok((with_widgets(pool, &rows).await?, total))
}

/// The default dashboard of `owner`, if they chose one that still exists.
pub async fn default_of(pool: &PgPool, owner: &str) -> Result<Option<DashboardView>, StoreError> {
    let id: Option<Uuid> = sqlx::query_scalar(&format!(
        "SELECT dashboard_id FROM {LIVE_SCHEMA}.defaults WHERE owner = $1"
    ))
    .bind(owner)
    .fetch_optional(pool)
    .await?;
    match id {
        Some(id) => by_id(pool, id).await,
        None => Ok(None),
    }
}
