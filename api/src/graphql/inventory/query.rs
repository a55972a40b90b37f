//! Inventory queries: by id, and pages with a rule `filter`.

use async_graphql::{Context, ErrorExtensions, Object, Result, ID};
use chrono::{DateTime, Utc};
use corral_domain::group::GroupType;
use corral_domain::rule::{self, RuleError, SqlFragment};
use corral_projections::inventory as store;
use sqlx::PgPool;

use std::sync::Arc;

use uuid::Uuid;

use super::{
    cursor, lazy_count, page_info, Device, DeviceConnection, DeviceEdge, Service,
    ServiceConnection, ServiceEdge,
};
use crate::error_codes::ErrorCode;
use crate::graphql::budget::DbBudget;
use crate::graphql::errors::{coded, internal};
use crate::graphql::history::requested_position;
use crate::graphql::scalars::Position;
use crate::graphql::types::{decode_cursor, page_size, DEFAULT_PAGE};

/// Complexity of one unit of a filter's compiled cost: a filter runs over the whole
/// inventory, not one page, so one `=` condition counts like a hundred fields.
pub const FILTER_WEIGHT: usize = 100;

/// What a rule filter adds to a query's complexity: [`FILTER_WEIGHT`] times its compiled
/// cost (a filter that does not parse adds nothing: it is refused before it runs).
pub(crate) fn filter_complexity(filter: Option<&str>, kind: GroupType) -> usize {
    let Some(text) = filter.filter(|t| !t.trim().is_empty()) else {
        return 0;
    };
    match rule::parse(text, kind) {
        Ok(parsed) => usize::try_from(parsed.rule.cost())
            .unwrap_or(usize::MAX)
            .saturating_mul(FILTER_WEIGHT),
        Err(_) => 0,
    }
}

fn rule_invalid(e: RuleError) -> async_graphql::Error {
    let message = match e.column {
        Some(c) => format!("filter is not a valid rule at column {c}: {}", e.message),
        None => format!("filter is not a valid rule: {}", e.message),
    };
    async_graphql::Error::new(message).extend_with(|_, x| {
        x.set("code", ErrorCode::RuleInvalid.as_str());
        if let Some(c) = e.column {
            x.set("column", c as u64);
        }
    })
}

/// Compiles a `filter` for `kind` into SQL, with its `group:<path>` references resolved: a
/// rule that does not parse (or names an unknown group) is `RULE_INVALID`, with the column in
/// the message and in `extensions.column`; a rule of the other kind is `BAD_USER_INPUT`.
///
/// For a scoped reader (`roots` not `None`), a `group:` reference (by path or id) to a group
/// it may not read is an unknown group, exactly like one that does not exist: a filter must
/// not tell which visible records belong to hidden groups, nor whether a hidden group exists.
pub async fn compile_filter(
    pool: &PgPool,
    filter: Option<&str>,
    kind: GroupType,
    roots: Option<&[Uuid]>,
) -> Result<Option<SqlFragment>> {
    let Some(text) = filter.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    if text.contains('\0') {
        // PostgreSQL text cannot hold it: refuse it here rather than fail in the query.
        return Err(coded(
            ErrorCode::BadUserInput,
            "filter must not contain NUL characters",
        ));
    }
    let mut rule = rule::parse(text, kind).map_err(rule_invalid)?.rule;
    if rule.kind() != kind {
        return Err(coded(
            ErrorCode::BadUserInput,
            format!(
                "filter selects {}s but this field lists {}s",
                rule.kind().as_str().to_lowercase(),
                kind.as_str().to_lowercase()
            ),
        ));
    }
    match roots {
        None => super::super::rules::resolve_group_paths(pool, &mut rule)
            .await?
            .map_err(rule_invalid)?,
        Some(roots) => resolve_readable_paths(pool, &mut rule, roots).await?,
    }
    Ok(Some(rule.to_sql(&store::sql_context(Utc::now()))))
}

/// Resolves the `group:` references of a scoped reader's filter: each must name a group in
/// the caller's scope `roots`, or the filter is `RULE_INVALID` (unknown group); a missing
/// group by id is unknown too.
async fn resolve_readable_paths(
    pool: &PgPool,
    rule: &mut rule::Rule,
    roots: &[Uuid],
) -> Result<()> {
    crate::graphql::rules::resolve_readable_paths(pool, rule, Some(roots))
        .await?
        .map_err(rule_invalid)
}

/// Decodes `after` and validates `first` (fetching one more row, to know of a next page).
fn page_args(first: Option<i32>, after: Option<&str>) -> Result<(i64, Option<String>)> {
    let first = page_size(first)?;
    let after = after.map(decode_cursor).transpose()?.map(|a| a.key);
    Ok((first, after))
}

/// Whether the caller may see a record's past: a global reader always, a scoped one while
/// it may see the record now (`visible_now`).
async fn past_visible(ctx: &Context<'_>, visible_now: bool) -> Result<bool> {
    Ok(roots(ctx).await?.is_none() || visible_now)
}

/// The caller's read roots (`None`: everything).
async fn roots(ctx: &Context<'_>) -> Result<Option<Arc<[Uuid]>>> {
    crate::graphql::scope::read_roots(ctx).await
}

/// Inventory queries (part of the `Query` root).
///
/// A scoped reader sees only the devices and services that are STATIC members of a group in
/// its scope (a subtree of one of its `group.read` bindings, as the tree stands now); rule
/// membership never makes a record visible. A record it may not see answers exactly like one
/// that does not exist: `null` by id, left out of pages and counts (filtered in SQL).
#[derive(Default)]
pub struct InventoryQuery;

#[Object]
impl InventoryQuery {
    /// A device by id (`null` when unknown or removed, or not visible to a scoped reader:
    /// see the visibility rule on `devices`).
    ///
    /// With `asOf` (the position of the last event recorded at or before that time) or
    /// `atPosition`: the record as it was then, folded from its `Device` events (`null` when
    /// it did not exist or was removed then; `updatedAt` is the time of its last change up to
    /// there). Only the record's own fields are historical: `groups` and the other nested
    /// fields answer for now. A scoped reader gets a device's past only while it may see the
    /// device now.
    async fn device(
        &self,
        ctx: &Context<'_>,
        id: ID,
        as_of: Option<DateTime<Utc>>,
        at_position: Option<Position>,
    ) -> Result<Option<Device>> {
        if id.0.contains('\0') {
            return Ok(None);
        }
        let Some(position) = requested_position(ctx, as_of, at_position).await? else {
            return super::device(ctx, id.0).await;
        };
        if !past_visible(ctx, super::device(ctx, id.0.clone()).await?.is_some()).await? {
            return Ok(None);
        }
        let mut conn = ctx
            .data_unchecked::<PgPool>()
            .acquire()
            .await
            .map_err(internal)?;
        Ok(store::device_at(&mut conn, &id.0, position)
            .await
            .map_err(internal)?
            .map(Device::from))
    }

    /// Devices in id order; `filter` is a device rule (`hostname:web-%  site:ams1`).
    /// A filter counts its compiled cost in the query's complexity. A scoped reader gets only
    /// the devices that are static members of a group in its scope (pages, cursors and
    /// `totalCount` count only those).
    #[graphql(
        complexity = "i64::from(first.unwrap_or(DEFAULT_PAGE)).max(1) as usize * child_complexity + 1 + filter_complexity(filter.as_deref(), GroupType::Device)"
    )]
    async fn devices(
        &self,
        ctx: &Context<'_>,
        filter: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<DeviceConnection> {
        let (first, after) = page_args(first, after.as_deref())?;
        let pool = ctx.data_unchecked::<PgPool>();
        let roots = roots(ctx).await?;
        let filter =
            compile_filter(pool, filter.as_deref(), GroupType::Device, roots.as_deref()).await?;
        // A filter's cost is the caller's to choose: it runs within the request's budget.
        let (f, after, r) = (filter.clone(), after.clone(), roots.clone());
        let mut rows = ctx
            .data::<DbBudget>()?
            .run_if(filter.is_some(), pool, move |c| {
                Box::pin(async move {
                    store::device_page_within(
                        c,
                        f.as_ref(),
                        after.as_deref(),
                        r.as_deref(),
                        first + 1,
                    )
                    .await
                })
            })
            .await?;
        let has_next = rows.len() as i64 > first;
        rows.truncate(first as usize);
        let edges: Vec<DeviceEdge> = rows
            .into_iter()
            .map(|r| DeviceEdge {
                cursor: cursor(&r.device.id),
                node: Device::from(r),
            })
            .collect();
        Ok(DeviceConnection {
            page_info: page_info(&edges, |e| &e.cursor, has_next),
            edges,
            count: lazy_count(filter, false, roots),
        })
    }

    /// A service by id (`null` when unknown or removed, or not visible to a scoped reader:
    /// see the visibility rule on `services`).
    ///
    /// With `asOf` or `atPosition`: the record as it was then, as for `device`.
    async fn service(
        &self,
        ctx: &Context<'_>,
        id: ID,
        as_of: Option<DateTime<Utc>>,
        at_position: Option<Position>,
    ) -> Result<Option<Service>> {
        if id.0.contains('\0') {
            return Ok(None);
        }
        let Some(position) = requested_position(ctx, as_of, at_position).await? else {
            return super::service(ctx, id.0).await;
        };
        if !past_visible(ctx, super::service(ctx, id.0.clone()).await?.is_some()).await? {
            return Ok(None);
        }
        let mut conn = ctx
            .data_unchecked::<PgPool>()
            .acquire()
            .await
            .map_err(internal)?;
        Ok(store::service_at(&mut conn, &id.0, position)
            .await
            .map_err(internal)?
            .map(Service::from))
    }

    /// Services in id order; `filter` is a service rule (`type:http port:443`).
    /// A filter counts its compiled cost in the query's complexity. A scoped reader gets only
    /// the services that are themselves static members of a group in its scope (pages,
    /// cursors and `totalCount` count only those).
    #[graphql(
        complexity = "i64::from(first.unwrap_or(DEFAULT_PAGE)).max(1) as usize * child_complexity + 1 + filter_complexity(filter.as_deref(), GroupType::Service)"
    )]
    async fn services(
        &self,
        ctx: &Context<'_>,
        filter: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<ServiceConnection> {
        let (first, after) = page_args(first, after.as_deref())?;
        let pool = ctx.data_unchecked::<PgPool>();
        let roots = roots(ctx).await?;
        let filter = compile_filter(
            pool,
            filter.as_deref(),
            GroupType::Service,
            roots.as_deref(),
        )
        .await?;
        // A filter's cost is the caller's to choose: it runs within the request's budget.
        let (f, after, r) = (filter.clone(), after.clone(), roots.clone());
        let mut rows = ctx
            .data::<DbBudget>()?
            .run_if(filter.is_some(), pool, move |c| {
                Box::pin(async move {
                    store::service_page_within(
                        c,
                        f.as_ref(),
                        after.as_deref(),
                        r.as_deref(),
                        first + 1,
                    )
                    .await
                })
            })
            .await?;
        let has_next = rows.len() as i64 > first;
        rows.truncate(first as usize);
        let edges: Vec<ServiceEdge> = rows
            .into_iter()
            .map(|r| ServiceEdge {
                cursor: cursor(&r.service.id),
                node: Service::from(r),
            })
            .collect();
        Ok(ServiceConnection {
            page_info: page_info(&edges, |e| &e.cursor, has_next),
            edges,
            count: lazy_count(filter, true, roots),
        })
    }
}
