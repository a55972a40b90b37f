//! Dashboards: a user's grids of widgets, and the shared templates admins publish.
//!
//! Every role may use its own dashboards. Ownership is not a policy matter: every query here
//! answers only with the caller's dashboards (and templates), and every command carries the
//! caller's subject, which the aggregate checks; someone else's dashboard behaves exactly like
//! one that does not exist. `Widget.data` checks again, at read time, that the caller may read
//! the widget's group (`group.read` on it or an ancestor, or everywhere), and answers
//! `REDACTED` without any figure or group when not, whether the group exists or not.

mod data;
mod mutation;

use async_graphql::{ComplexObject, Context, Enum, Json, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use corral_domain::dashboard::{
    Widget as DomainWidget, WidgetKind as DomainWidgetKind, MAX_WIDGETS,
};
use corral_projections::dashboards::read::{self, DashboardView};
use corral_projections::group_tree::read::After;
use sqlx::PgPool;

pub use data::{WidgetData, WidgetDataState};
pub use mutation::DashboardMutation;

use super::errors::internal;
use super::types::{
    decode_cursor, encode_cursor, page_info, paging, PageInfo, Paging, DEFAULT_PAGE,
};
use crate::auth::Actor;

/// What a widget shows.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum WidgetKind {
    /// CPU, memory and disk of the group's devices (a health series).
    GroupUtilization,
    /// Availability of the group's services (a health series).
    GroupAvailability,
    /// How many members the group has.
    GroupMemberCount,
    /// Every health figure of the group (a health series).
    GroupHealthSummary,
}

impl From<DomainWidgetKind> for WidgetKind {
    fn from(k: DomainWidgetKind) -> Self {
        match k {
            DomainWidgetKind::GroupUtilization => WidgetKind::GroupUtilization,
            DomainWidgetKind::GroupAvailability => WidgetKind::GroupAvailability,
            DomainWidgetKind::GroupMemberCount => WidgetKind::GroupMemberCount,
            DomainWidgetKind::GroupHealthSummary => WidgetKind::GroupHealthSummary,
        }
    }
}

/// Where a widget sits on the dashboard's 12-column grid, in cells.
#[derive(SimpleObject, Clone, Copy, Debug)]
pub struct WidgetPosition {
    /// First column, 0-11.
    pub x: i32,
    /// First row.
    pub y: i32,
    /// Width in columns, 1-12 (`x + w` at most 12).
    pub w: i32,
    /// Height in rows, 1-12.
    pub h: i32,
}

/// One widget of a dashboard.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Widget {
    /// The widget's id.
    pub id: ID,
    /// What it shows.
    pub kind: WidgetKind,
    /// Its title.
    pub title: String,
    /// Its settings: `group` (a group id, or `"$group"` for the dashboard's group variable),
    /// `bucket` (`FIVE_MINUTES` or `ONE_HOUR`) and `rangeHours` (1-168) for health kinds,
    /// `mode` (`DIRECT` or `EFFECTIVE`) for `GROUP_MEMBER_COUNT`.
    pub config: Json<serde_json::Value>,
    /// Where it sits.
    pub position: WidgetPosition,
    #[graphql(skip)]
    pub(crate) inner: DomainWidget,
    /// The `group` the dashboard was read with (the value of `$group`).
    #[graphql(skip)]
    pub(crate) group_variable: Option<ID>,
}

impl Widget {
    fn new(w: DomainWidget, group_variable: Option<ID>) -> Self {
        Widget {
            id: ID(w.id.to_string()),
            kind: w.kind.into(),
            title: w.title.clone(),
            config: Json(serde_json::Value::Object(w.config.clone())),
            position: WidgetPosition {
                x: w.position.x as i32,
                y: w.position.y as i32,
                w: w.position.w as i32,
                h: w.position.h as i32,
            },
            inner: w,
            group_variable,
        }
    }
}

#[ComplexObject]
impl Widget {
    /// What the widget shows, read now: for `GROUP_MEMBER_COUNT` the member count, for the
    /// health kinds the group's health over the last `rangeHours` (ending at `to`, default
    /// now) in `bucket` buckets. `group` gives the group of a widget bound to `$group`
    /// (overriding the one the dashboard was read with); a widget bound to a group ignores
    /// it. A caller who may not read that group (it lies outside the scope of its
    /// `group.read` bindings) gets `REDACTED`, and never any figure or group.
    #[graphql(complexity = 50)]
    async fn data(
        &self,
        ctx: &Context<'_>,
        group: Option<ID>,
        to: Option<DateTime<Utc>>,
    ) -> Result<WidgetData> {
        data::resolve(
            ctx,
            &self.inner,
            group.or_else(|| self.group_variable.clone()),
            to,
        )
        .await
    }
}

/// A dashboard of the caller's, or a shared template.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Dashboard {
    /// The dashboard's id (its aggregate id).
    pub id: ID,
    /// Its name.
    pub name: String,
    /// True for a shared template (clone it with `cloneDashboardTemplate`).
    pub is_template: bool,
    /// Whether it is the caller's default dashboard (at most one is).
    pub is_default: bool,
    /// The owning subject (the caller); null for a template.
    pub owner: Option<String>,
    /// The template it was cloned from, or the dashboard a template was published from.
    pub copied_from: Option<ID>,
    /// 1 at creation, one more per widget change; pass it as `expectedLayoutVersion` to
    /// refuse changes made on a stale layout.
    pub layout_version: i64,
    /// The aggregate version.
    pub version: i64,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
    #[graphql(skip)]
    pub(crate) widgets: Vec<DomainWidget>,
    #[graphql(skip)]
    pub(crate) group_variable: Option<ID>,
}

impl Dashboard {
    pub(crate) fn new(d: DashboardView, group_variable: Option<ID>) -> Self {
        Dashboard {
            id: ID(d.id.to_string()),
            name: d.name,
            is_template: d.is_template,
            is_default: d.is_default,
            owner: d.owner,
            copied_from: d.copied_from.map(|c| ID(c.to_string())),
            layout_version: d.layout_version,
            version: d.version,
            created_at: d.created_at,
            updated_at: d.updated_at,
            widgets: d.widgets,
            group_variable,
        }
    }
}

#[ComplexObject]
impl Dashboard {
    /// The global id (for `node`/`nodes`); `id` stays the dashboard's UUID.
    pub(crate) async fn node_id(&self) -> ID {
        super::node::global_id("Dashboard", &self.id)
    }

    /// Its widgets (at most 50), top to bottom, then left to right.
    #[graphql(complexity = "MAX_WIDGETS * child_complexity")]
    async fn widgets(&self) -> Vec<Widget> {
        self.widgets
            .iter()
            .map(|w| Widget::new(w.clone(), self.group_variable.clone()))
            .collect()
    }
}

/// One dashboard in a page.
#[derive(SimpleObject, Clone, Debug)]
pub struct DashboardEdge {
    /// Opaque position of this edge, for `after`.
    pub cursor: String,
    /// The dashboard.
    pub node: Dashboard,
}

/// A page of dashboards, by name (ignoring case).
#[derive(SimpleObject, Clone, Debug)]
pub struct DashboardConnection {
    /// The dashboards in this page.
    pub edges: Vec<DashboardEdge>,
    /// Where this page stands.
    pub page_info: PageInfo,
    /// Dashboards in all pages.
    pub total_count: i64,
}

impl DashboardConnection {
    /// A page from `size + 1` rows read `paging`'s way (nearest first when backward).
    fn page(mut rows: Vec<DashboardView>, paging: &Paging, total: i64) -> Self {
        let more = rows.len() as i64 > paging.size;
        rows.truncate(paging.size as usize);
        if paging.backward {
            rows.reverse();
        }
        let edges: Vec<DashboardEdge> = rows
            .into_iter()
            .map(|d| DashboardEdge {
                cursor: encode_cursor(&After {
                    key: d.name_key.clone(),
                    id: d.id,
                }),
                node: Dashboard::new(d, None),
            })
            .collect();
        DashboardConnection {
            page_info: page_info(
                paging,
                more,
                edges.first().map(|e| e.cursor.clone()),
                edges.last().map(|e| e.cursor.clone()),
            ),
            edges,
            total_count: total,
        }
    }
}

/// A dashboard the caller may read: their own, or a template.
pub(crate) async fn readable(ctx: &Context<'_>, id: uuid::Uuid) -> Result<Option<DashboardView>> {
    let actor = ctx.data::<Actor>()?;
    let found = read::by_id(ctx.data_unchecked::<PgPool>(), id)
        .await
        .map_err(internal)?;
    Ok(found.filter(|d| d.is_template || d.owner.as_deref() == Some(actor.subject.as_str())))
}

/// Dashboard queries (part of the `Query` root). Every role may call them; they answer with
/// the caller's own dashboards and the templates only.
#[derive(Default)]
pub struct DashboardQuery;

#[Object]
impl DashboardQuery {
    /// The caller's dashboards, by name (ignoring case). `last`/`before` page backward
    /// (limits as for `first`).
    #[graphql(
        complexity = "i64::from(first.or(last).unwrap_or(DEFAULT_PAGE)).max(1) as usize * child_complexity + 1"
    )]
    async fn my_dashboards(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<DashboardConnection> {
        let paging = paging(first, after, last, before)?;
        let cursor = paging.cursor.as_deref().map(decode_cursor).transpose()?;
        let actor = ctx.data::<Actor>()?;
        let (rows, total) = read::owned(
            ctx.data_unchecked::<PgPool>(),
            &actor.subject,
            paging.size + 1,
            cursor.as_ref(),
            paging.backward,
        )
        .await
        .map_err(internal)?;
        Ok(DashboardConnection::page(rows, &paging, total))
    }

    /// The caller's default dashboard, if they chose one (`setDefaultDashboard`). `group`
    /// is the value of `$group` for its widgets.
    async fn my_default_dashboard(
        &self,
        ctx: &Context<'_>,
        group: Option<ID>,
    ) -> Result<Option<Dashboard>> {
        let actor = ctx.data::<Actor>()?;
        let found = read::default_of(ctx.data_unchecked::<PgPool>(), &actor.subject)
            .await
            .map_err(internal)?;
        Ok(found.map(|d| Dashboard::new(d, group)))
    }

    /// A dashboard of the caller's, or a template, by id; null for anything else (another
    /// user's dashboard included). `group` is the value of `$group` for its widgets.
    async fn dashboard(
        &self,
        ctx: &Context<'_>,
        id: ID,
        group: Option<ID>,
    ) -> Result<Option<Dashboard>> {
        let Ok(id) = id.parse::<uuid::Uuid>() else {
            return Ok(None);
        };
        Ok(readable(ctx, id).await?.map(|d| Dashboard::new(d, group)))
    }

    /// The shared templates, by name (ignoring case). `last`/`before` page backward (limits
    /// as for `first`).
    #[graphql(
        complexity = "i64::from(first.or(last).unwrap_or(DEFAULT_PAGE)).max(1) as usize * child_complexity + 1"
    )]
    async fn dashboard_templates(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<DashboardConnection> {
        let paging = paging(first, after, last, before)?;
        let cursor = paging.cursor.as_deref().map(decode_cursor).transpose()?;
        let (rows, total) = read::templates(
            ctx.data_unchecked::<PgPool>(),
            paging.size + 1,
            cursor.as_ref(),
            paging.backward,
        )
        .await
        .map_err(internal)?;
        Ok(DashboardConnection::page(rows, &paging, total))
    }
}
