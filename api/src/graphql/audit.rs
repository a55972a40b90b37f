//! The audit trail: `auditLog`, `group.history` and `auditChainHead` (auditors and admins;
//! the policy names these fields `Audit.*`, which viewers do not have).

use std::sync::Arc;

use async_graphql::{Context, InputObject, Json, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use corral_projections::public_log::{self, LogFilter};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::errors::{coded, internal};
use super::scalars::Position;
use super::types::{page_size, PageInfo, DEFAULT_PAGE};
use crate::audit::{self, AuditRecord};
use crate::error_codes::ErrorCode;

/// Which audit entries to list. Every condition given must hold.
#[derive(InputObject, Default, Debug, Clone)]
pub struct AuditLogFilter {
    /// Changes made by this subject (`metadata.actor_subject`).
    pub actor: Option<String>,
    /// Events of this group: its own (Group) and its membership's.
    pub group_id: Option<ID>,
    /// With `groupId`: also the events of its current descendants.
    pub include_descendants: Option<bool>,
    /// Only these aggregate types (`Group`, `Membership`, ...).
    pub aggregate_types: Option<Vec<String>>,
    /// Only these event types (`GroupRenamed`, `MembersAdded`, ...).
    pub event_types: Option<Vec<String>>,
    /// Recorded at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only the events of one request.
    pub correlation_id: Option<String>,
    /// Only the events naming this device or service id, in position order: every
    /// Membership event listing it (static, rule and exclude alike, in any group) and its own
    /// Device / Service events (its inventory history). A scoped auditor gets only the
    /// Membership events of groups in its scope.
    pub member_id: Option<String>,
}

impl AuditLogFilter {
    fn into_filter(self) -> Result<audit::AuditFilter> {
        let group_id =
            match self.group_id {
                None => None,
                Some(id) => Some(id.parse::<Uuid>().map_err(|_| {
                    coded(ErrorCode::BadUserInput, "filter.groupId is not a group id")
                })?),
            };
        Ok(audit::AuditFilter {
            actor: self.actor,
            group_id,
            include_descendants: self.include_descendants.unwrap_or(false),
            aggregate_types: self.aggregate_types.unwrap_or_default(),
            event_types: self.event_types.unwrap_or_default(),
            from: self.from,
            to: self.to,
            correlation_id: self.correlation_id,
            member_id: self.member_id,
        })
    }
}

/// Who made a change.
#[derive(SimpleObject, Clone, Debug)]
pub struct AuditActor {
    /// The authenticated subject (`corral` for the system itself).
    pub subject: String,
    /// Its role at the time (`system` for the system).
    pub role: String,
}

/// One field a Group event changed.
#[derive(SimpleObject, Clone, Debug)]
pub struct FieldChange {
    /// `type`, `name`, `parentId`, `description`, `metadata`, `rule`, `ruleEnabled`,
    /// `deleted`, `hasSysmon`, `hasSnmp` or `hasServices`.
    pub field: String,
    /// The value before (null when unset).
    pub before: Json<Value>,
    /// The value after.
    pub after: Json<Value>,
}

/// One event of the log, as auditors read it.
#[derive(SimpleObject, Clone, Debug)]
pub struct AuditEntry {
    /// Its position in the commit-ordered log.
    pub position: Position,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Who caused it.
    pub actor: AuditActor,
    /// `api`, `worker`, `cli` or `rule`.
    pub source: String,
    /// `Group`, `Membership`, ...
    pub aggregate_type: String,
    /// The aggregate's id (for Membership, the group's id).
    pub aggregate_id: ID,
    /// The aggregate's version after the event.
    pub version: i64,
    /// The event's unique id (NATS `Nats-Msg-Id`).
    pub event_id: ID,
    /// The event type.
    pub event_type: String,
    /// The stored payload's schema version.
    pub event_version: String,
    /// The stored payload, `{ "<eventType>": { ... } }`.
    pub payload: Json<Value>,
    /// The reason the actor gave.
    pub reason: Option<String>,
    /// The request that caused it (shared by every event of that request).
    pub correlation_id: Option<String>,
    /// The event or request that directly caused it.
    pub causation_id: Option<String>,
    /// The client's network address, when known.
    pub client_address: Option<String>,
    /// For Group events: the fields it changed, with their values before and after.
    pub changes: Option<Vec<FieldChange>>,
    /// Its link in the hash chain (hex).
    pub hash: String,
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> Self {
        let e = &r.entry.event;
        Self {
            position: Position(r.entry.position),
            recorded_at: e.recorded_at,
            actor: AuditActor {
                subject: r.actor_subject().to_string(),
                role: r.actor_role().to_string(),
            },
            source: r.source().to_string(),
            aggregate_type: e.aggregate_type.clone(),
            aggregate_id: ID(e.aggregate_id.clone()),
            version: e.sequence,
            event_id: ID(e.event_id.to_string()),
            event_type: e.event_type.clone(),
            event_version: e.event_version.clone(),
            payload: Json(e.payload.clone()),
            reason: r.reason().map(str::to_string),
            correlation_id: r.correlation_id().map(str::to_string),
            causation_id: r.causation_id().map(str::to_string),
            client_address: r.client_address().map(str::to_string),
            changes: r.changes.as_ref().map(|list| {
                list.iter()
                    .map(|c| FieldChange {
                        field: c.field.to_string(),
                        before: Json(c.before.clone()),
                        after: Json(c.after.clone()),
                    })
                    .collect()
            }),
            hash: hex::encode(&r.entry.hash),
        }
    }
}

/// One entry in a page.
#[derive(SimpleObject, Clone, Debug)]
pub struct AuditEdge {
    /// The entry's position, for `after`.
    pub cursor: String,
    /// The entry.
    pub node: AuditEntry,
}

/// A page of the audit log, in position order.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct AuditConnection {
    /// The entries in this page.
    pub edges: Vec<AuditEdge>,
    /// Where this page stands.
    pub page_info: PageInfo,
    #[graphql(skip)]
    filter: Arc<LogFilter>,
    #[graphql(skip)]
    total: Arc<OnceCell<i64>>,
}

#[async_graphql::ComplexObject]
impl AuditConnection {
    /// Entries in all pages (counted when asked: a scan of the matching entries).
    async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let pool = ctx.data_unchecked::<PgPool>();
        Ok(*self
            .total
            .get_or_try_init(|| audit::count(pool, &self.filter))
            .await
            .map_err(internal)?)
    }
}

/// A recorded chain head: check later that the log up to it never changed.
#[derive(SimpleObject, Clone, Debug)]
pub struct ChainHead {
    /// The last sequenced position (0 for an empty log).
    pub position: Position,
    /// Its chain hash (hex; 64 zeros for an empty log).
    pub hash: String,
}

fn parse_after(after: Option<String>) -> Result<i64> {
    match after {
        None => Ok(0),
        Some(s) => s.parse::<i64>().ok().filter(|p| *p >= 0).ok_or_else(|| {
            coded(
                ErrorCode::BadUserInput,
                "after is not a cursor of this list",
            )
        }),
    }
}

/// A page of entries passing `filter`, within the caller's `audit.read` reach: a scoped
/// auditor lists only the Group and Membership events of the groups in its subtrees (live
/// tree at the request), filtered in SQL so `totalCount`, pages and cursors stay right; this
/// also scopes `Group.history` (a group beyond the auditor's reach has an empty history).
pub(crate) async fn entries(
    ctx: &Context<'_>,
    filter: audit::AuditFilter,
    first: Option<i32>,
    after: Option<String>,
) -> Result<AuditConnection> {
    let first = page_size(first)?;
    let after = parse_after(after)?;
    let pool = ctx.data_unchecked::<PgPool>();
    let reach = super::scope::reach(ctx, crate::permissions::Permission::AuditRead).await?;
    let filter = match filter
        .resolve_within(pool, reach.roots())
        .await
        .map_err(internal)?
    {
        Ok(f) => f,
        Err(e) => {
            return Err(coded(
                ErrorCode::BadUserInput,
                format!("filter.{}: {}", e.field, e.message),
            ))
        }
    };
    let mut views = corral_projections::audit::ViewCache::new();
    let mut records = audit::page(pool, &filter, after, None, first + 1, &mut views)
        .await
        .map_err(internal)?;
    let has_next_page = records.len() as i64 > first;
    records.truncate(first as usize);
    let edges: Vec<AuditEdge> = records
        .into_iter()
        .map(|r| AuditEdge {
            cursor: r.entry.position.to_string(),
            node: AuditEntry::from(r),
        })
        .collect();
    Ok(AuditConnection {
        page_info: PageInfo {
            has_next_page,
            has_previous_page: after > 0,
            start_cursor: edges.first().map(|e| e.cursor.clone()),
            end_cursor: edges.last().map(|e| e.cursor.clone()),
        },
        edges,
        filter: Arc::new(filter),
        total: Arc::new(OnceCell::new()),
    })
}

/// A refused attempt: a `FORBIDDEN` answer, or an `UNAUTHENTICATED` request whose bearer
/// token had the prefix of a token Corral issued (revoked, expired or a wrong secret).
#[derive(SimpleObject, Clone, Debug)]
pub struct AccessRefusal {
    /// When.
    pub refused_at: DateTime<Utc>,
    /// The caller; for an unauthenticated request, the subject of the token with its prefix.
    pub subject: Option<String>,
    /// For an unauthenticated request: the token prefix it gave (`crl_` and 8 hex digits).
    pub token_prefix: Option<String>,
    /// What was refused: `Mutation.createGroup`, `Subscription.events`, `POST /graphql`,
    /// `GET /audit/export`.
    pub operation: String,
    /// The group it was about, when known.
    pub group_id: Option<ID>,
    /// `FORBIDDEN` or `UNAUTHENTICATED`.
    pub code: String,
    /// The message the caller got.
    pub reason: String,
    /// The client's network address, when known.
    pub client_address: Option<String>,
}

/// One refused attempt in a page.
#[derive(SimpleObject, Clone, Debug)]
pub struct AccessRefusalEdge {
    /// For `after`.
    pub cursor: String,
    /// The refused attempt.
    pub node: AccessRefusal,
}

/// A page of refused attempts, newest first.
#[derive(SimpleObject, Clone, Debug)]
pub struct AccessRefusalConnection {
    /// The refused attempts in this page.
    pub edges: Vec<AccessRefusalEdge>,
    /// Where this page stands.
    pub page_info: PageInfo,
}

/// Audit queries (part of the `Query` root).
#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The commit-ordered log of changes (auditors and admins), oldest first, filtered.
    #[graphql(
        complexity = "i64::from(first.unwrap_or(DEFAULT_PAGE)).max(1) as usize * child_complexity + 1"
    )]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        filter: Option<AuditLogFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<AuditConnection> {
        let filter = filter.unwrap_or_default().into_filter()?;
        entries(ctx, filter, first, after).await
    }

    /// Refused attempts, newest first (auditors and admins with a global binding): every
    /// `FORBIDDEN` answer and every unauthenticated request whose token prefix is one of ours.
    /// The store is bounded (`CORRAL_REFUSALS_MAX_ROWS`, `CORRAL_REFUSALS_RETENTION_DAYS`) and
    /// written in the background, a moment after the refusal.
    #[graphql(
        complexity = "i64::from(first.unwrap_or(DEFAULT_PAGE)).max(1) as usize * child_complexity + 1"
    )]
    async fn access_refusals(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        subject: Option<String>,
    ) -> Result<AccessRefusalConnection> {
        super::scope::require_global(ctx, crate::permissions::Permission::AuditRead).await?;
        let first = page_size(first)?;
        let before = match after {
            None => None,
            Some(a) => Some(a.parse::<i64>().map_err(|_| {
                coded(
                    ErrorCode::BadUserInput,
                    "after is not a cursor of this list",
                )
            })?),
        };
        let pool = ctx.data_unchecked::<PgPool>();
        let mut rows = crate::refusals::page(pool, subject.as_deref(), before, first + 1)
            .await
            .map_err(internal)?;
        let has_next_page = rows.len() as i64 > first;
        rows.truncate(first as usize);
        let edges: Vec<AccessRefusalEdge> = rows
            .into_iter()
            .map(|r| AccessRefusalEdge {
                cursor: r.id.to_string(),
                node: AccessRefusal {
                    refused_at: r.refusal.at,
                    subject: r.refusal.subject,
                    token_prefix: r.refusal.token_prefix,
                    operation: r.refusal.operation,
                    group_id: r.refusal.group_id.map(|g| ID(g.to_string())),
                    code: r.refusal.code,
                    reason: r.refusal.reason,
                    client_address: r.refusal.client_addr,
                },
            })
            .collect();
        Ok(AccessRefusalConnection {
            page_info: PageInfo {
                has_next_page,
                has_previous_page: before.is_some(),
                start_cursor: edges.first().map(|e| e.cursor.clone()),
                end_cursor: edges.last().map(|e| e.cursor.clone()),
            },
            edges,
        })
    }

    /// The last link of the hash chain. Record it; `corral audit verify` (and this field)
    /// later show whether the history up to it is unchanged. It describes the whole log (its
    /// length and the hash of everything in it), so it needs `audit.read` globally: an
    /// auditor bound to groups gets `FORBIDDEN`.
    async fn audit_chain_head(&self, ctx: &Context<'_>) -> Result<ChainHead> {
        super::scope::require_global(ctx, crate::permissions::Permission::AuditRead).await?;
        let mut conn = ctx
            .data_unchecked::<PgPool>()
            .acquire()
            .await
            .map_err(internal)?;
        let (position, hash) = public_log::head(&mut conn).await.map_err(internal)?;
        Ok(ChainHead {
            position: Position(position),
            hash: hex::encode(hash),
        })
    }
}
