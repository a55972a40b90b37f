//! Durable membership watches (`feed.manage`, global bindings only): a group (and with
//! `includeDescendants` its subtree) whose ENTERED/LEFT changes the NATS membership feed
//! publishes (`docs/integrators.md`). Registering and removing are events of the
//! `MembershipWatch` aggregate, so who asked for a feed is audited; the feed's worker and
//! `membershipWatches` fold those events from the log.

use async_graphql::{Context, InputObject, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use corral_domain::codes::Code;
use corral_domain::watch::MembershipWatchCommand;
use corral_projections::commands::Command;
use corral_projections::watch::registry::{self, RegisteredWatch, MAX_WATCHES};
use uuid::Uuid;

use super::errors::{from_command, internal, UserError};
use super::mutation::{event_metadata, execute};
use super::scalars::Position;
use crate::permissions::Permission;

/// A durable membership watch.
#[derive(SimpleObject, Debug, Clone)]
pub struct MembershipWatchInfo {
    /// Its id: the NATS subjects of its changes are `<feed prefix>.<id>.<Entered|Left>`.
    pub id: ID,
    /// The group watched.
    pub group_id: ID,
    /// Whether the group's descendants count (effective membership).
    pub include_descendants: bool,
    /// What it is for.
    pub description: Option<String>,
    /// The position of its registration: the feed publishes the changes of later events.
    pub registered_at_position: Position,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
    /// Who registered it.
    pub registered_by: String,
}

impl From<RegisteredWatch> for MembershipWatchInfo {
    fn from(w: RegisteredWatch) -> Self {
        Self {
            id: ID(w.id.to_string()),
            group_id: ID(w.group_id.to_string()),
            include_descendants: w.include_descendants,
            description: w.description,
            registered_at_position: Position(w.registered_at_position),
            registered_at: w.registered_at,
            registered_by: w.registered_by,
        }
    }
}

/// Input of `registerMembershipWatch`.
#[derive(InputObject)]
pub struct RegisterMembershipWatchInput {
    /// The group to watch.
    pub group_id: ID,
    /// Watch its effective membership (its subtree's members), not only its own.
    pub include_descendants: Option<bool>,
    /// What it is for (at most 500 characters).
    pub description: Option<String>,
    /// Why (recorded in the event and the audit trail).
    pub reason: Option<String>,
}

/// Input of `removeMembershipWatch`.
#[derive(InputObject)]
pub struct RemoveMembershipWatchInput {
    /// The watch.
    pub id: ID,
    /// Why (recorded in the event and the audit trail).
    pub reason: Option<String>,
}

/// The result of `registerMembershipWatch` and `removeMembershipWatch`.
#[derive(SimpleObject, Default)]
pub struct MembershipWatchPayload {
    /// The watch registered (`null` on error and after a removal).
    pub watch: Option<MembershipWatchInfo>,
    /// The position of the event written (the feed starts after it).
    pub position: Option<Position>,
    /// Expected failures; nothing was written when this is not empty.
    pub user_errors: Vec<UserError>,
}

fn failed(e: UserError) -> MembershipWatchPayload {
    MembershipWatchPayload {
        user_errors: vec![e],
        ..Default::default()
    }
}

async fn active(ctx: &Context<'_>) -> Result<Vec<RegisteredWatch>> {
    let pool = ctx.data_unchecked::<sqlx::PgPool>();
    let mut conn = pool.acquire().await.map_err(internal)?;
    let all = registry::watches_at(&mut conn, None)
        .await
        .map_err(internal)?;
    Ok(all
        .into_iter()
        .filter(|w| w.removed_at_position.is_none())
        .collect())
}

/// Watch queries (part of the `Query` root).
#[derive(Default)]
pub struct WatchQuery;

#[Object]
impl WatchQuery {
    /// The durable membership watches registered and not removed (`feed.manage`), in
    /// registration order (at most 100).
    async fn membership_watches(&self, ctx: &Context<'_>) -> Result<Vec<MembershipWatchInfo>> {
        super::scope::require_global(ctx, Permission::FeedManage).await?;
        Ok(active(ctx)
            .await?
            .into_iter()
            .map(MembershipWatchInfo::from)
            .collect())
    }
}

/// Watch mutations (part of the `Mutation` root).
#[derive(Default)]
pub struct WatchMutation;

#[Object]
impl WatchMutation {
    /// Registers a durable membership watch (`feed.manage`, global): from the event after
    /// this registration on, the NATS membership feed publishes each member entering or
    /// leaving the group's membership (effective with `includeDescendants`), exactly once and
    /// in position order. At most 100 watches at once (`TOO_MANY`). For the changes before
    /// the registration, replay `membershipChanges(fromPosition)` up to `position`.
    async fn register_membership_watch(
        &self,
        ctx: &Context<'_>,
        input: RegisterMembershipWatchInput,
    ) -> Result<MembershipWatchPayload> {
        super::scope::require_global(ctx, Permission::FeedManage).await?;
        let metadata = match event_metadata(ctx, input.reason)? {
            Ok(m) => m,
            Err(e) => return Ok(failed(e)),
        };
        let Ok(group) = input.group_id.parse::<Uuid>() else {
            return Ok(failed(UserError::new(
                Some("groupId"),
                Code::Invalid,
                "not a group id",
            )));
        };
        let pool = ctx.data_unchecked::<sqlx::PgPool>();
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM group_registry WHERE id = $1 AND NOT deleted)",
        )
        .bind(group)
        .fetch_one(pool)
        .await
        .map_err(internal)?;
        if !exists {
            return Ok(failed(UserError::new(
                Some("groupId"),
                Code::NotFound,
                format!("no group {group}"),
            )));
        }
        // Checked before the write: two registrations at the same instant may pass it both
        // (the limit bounds the feed's memory, not an invariant).
        if active(ctx).await?.len() >= MAX_WATCHES {
            return Ok(failed(UserError::new(
                None,
                Code::TooMany,
                format!("at most {MAX_WATCHES} membership watches at once; remove one first"),
            )));
        }
        let id = Uuid::new_v4();
        let command = MembershipWatchCommand::Register {
            group_id: group,
            include_descendants: input.include_descendants.unwrap_or(false),
            description: input.description,
        };
        let outcome = match execute(ctx, Command::Watch(id, command), &metadata).await {
            Ok(o) => o,
            Err(e) => return Ok(failed(from_command(e)?)),
        };
        let watch = active(ctx).await?.into_iter().find(|w| w.id == id);
        Ok(MembershipWatchPayload {
            watch: watch.map(MembershipWatchInfo::from),
            position: outcome.position.map(Position),
            user_errors: vec![],
        })
    }

    /// Removes a durable membership watch (`feed.manage`, global): the feed publishes nothing
    /// for it after this event. Removing it again writes nothing.
    async fn remove_membership_watch(
        &self,
        ctx: &Context<'_>,
        input: RemoveMembershipWatchInput,
    ) -> Result<MembershipWatchPayload> {
        super::scope::require_global(ctx, Permission::FeedManage).await?;
        let metadata = match event_metadata(ctx, input.reason)? {
            Ok(m) => m,
            Err(e) => return Ok(failed(e)),
        };
        let Ok(id) = input.id.parse::<Uuid>() else {
            return Ok(failed(UserError::new(
                Some("id"),
                Code::NotFound,
                "no membership watch of this id",
            )));
        };
        match execute(
            ctx,
            Command::Watch(id, MembershipWatchCommand::Remove),
            &metadata,
        )
        .await
        {
            Ok(outcome) => Ok(MembershipWatchPayload {
                watch: None,
                position: outcome.position.map(Position),
                user_errors: vec![],
            }),
            Err(e) => Ok(failed(from_command(e)?)),
        }
    }
}
