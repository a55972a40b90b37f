//! Membership mutations: static members, exclusions, adding a rule's matches.

use async_graphql::{Context, InputObject, Object, Result, SimpleObject, ID};
use corral_domain::membership::{MemberSource, MembershipCommand, MembershipError, MAX_LISTED};
use corral_projections::commands::Command;
use sqlx::PgPool;

use super::errors::{from_command, UserError};
use super::mutation::{event_metadata, execute, require_on};
use super::scalars::Position;
use super::types::{parse_id, Group};
use crate::permissions::Permission;

/// The result of a membership mutation.
#[derive(SimpleObject, Default)]
pub struct MembershipPayload {
    /// The group (`null` on error).
    pub group: Option<Group>,
    /// How many entries the call added or removed (ids already in the requested state do
    /// not count: the call is idempotent).
    pub changed: i64,
    /// Log position of the last event written (consistency token); for a no-op, the position
    /// of the membership state it confirmed.
    pub position: Option<Position>,
    /// True when the read models did not catch up within the wait; the change is committed.
    pub wait_timed_out: bool,
    /// Expected failures; nothing was changed when this is not empty.
    pub user_errors: Vec<UserError>,
}

impl MembershipPayload {
    fn error(e: UserError) -> Self {
        Self {
            user_errors: vec![e],
            ..Default::default()
        }
    }
}

/// Input of the member-list mutations.
#[derive(InputObject)]
pub struct GroupMembersInput {
    /// The group.
    pub group_id: ID,
    /// Device ids (device groups) or service ids (service groups), at most 10,000.
    pub member_ids: Vec<String>,
    /// Why (kept in the audit trail).
    pub reason: Option<String>,
}

/// Runs a membership command for the calling actor, waits for the read models, and answers
/// with the group.
pub(crate) async fn run(
    ctx: &Context<'_>,
    group_id: &ID,
    command: impl FnOnce() -> MembershipCommand,
    reason: Option<String>,
) -> Result<MembershipPayload> {
    let group = match parse_id(group_id, "groupId") {
        Ok(g) => g,
        Err(e) => return Ok(MembershipPayload::error(e)),
    };
    let metadata = match event_metadata(ctx, reason)? {
        Ok(m) => m,
        Err(e) => return Ok(MembershipPayload::error(e)),
    };
    let outcome = match execute(ctx, Command::Membership(group, command()), &metadata).await {
        Ok(o) => o,
        Err(e) => return Ok(MembershipPayload::error(from_command(e)?)),
    };
    let pool = ctx.data_unchecked::<PgPool>();
    let group = corral_projections::group_tree::read::by_ids(pool, &[group])
        .await
        .unwrap_or_else(|err| {
            tracing::warn!(error = %err, "could not read a group after changing its members");
            vec![]
        })
        .pop()
        .map(Group::from);
    Ok(MembershipPayload {
        group,
        changed: outcome.changed as i64,
        position: outcome.position.map(Position),
        wait_timed_out: outcome.wait_timed_out,
        user_errors: vec![],
    })
}

/// For a caller who may read only some groups: the ids among `ids` it may not see, refused
/// exactly as ids missing from the inventory are (`UNKNOWN_MEMBER` on `memberIds`).
async fn hidden_members(ctx: &Context<'_>, ids: &[String]) -> Result<Option<UserError>> {
    let Some(roots) = super::scope::read_roots(ctx).await? else {
        return Ok(None);
    };
    let pool = ctx.data_unchecked::<PgPool>();
    let visible: std::collections::HashSet<String> =
        corral_projections::group_tree::read::visible_members(pool, ids, &roots)
            .await
            .map_err(super::errors::internal)?
            .into_iter()
            .collect();
    let hidden: Vec<String> = ids
        .iter()
        .filter(|id| !visible.contains(*id))
        .cloned()
        .collect();
    if hidden.is_empty() {
        return Ok(None);
    }
    let e = MembershipError::UnknownMember {
        count: hidden.len(),
        listed: hidden.into_iter().take(MAX_LISTED).collect(),
    };
    Ok(Some(UserError::new(
        e.field(),
        corral_domain::codes::Code::UnknownMember,
        e.to_string(),
    )))
}

/// Membership mutations (part of the `Mutation` root).
#[derive(Default)]
pub struct MembershipMutation;

#[Object]
impl MembershipMutation {
    /// Adds static members (operator). Ids already static members are skipped; unknown ids
    /// reject the whole call (`UNKNOWN_MEMBER`). A caller bound to groups may add only the
    /// devices and services it may already see: any other id is unknown to it, so that a
    /// static add (which grants visibility) cannot pull another scope's records into its own.
    async fn add_group_members(
        &self,
        ctx: &Context<'_>,
        input: GroupMembersInput,
    ) -> Result<MembershipPayload> {
        require_on(ctx, Permission::MembershipEdit, &input.group_id).await?;
        if let Some(e) = hidden_members(ctx, &input.member_ids).await? {
            return Ok(MembershipPayload::error(e));
        }
        let ids = input.member_ids;
        run(
            ctx,
            &input.group_id,
            || MembershipCommand::Add {
                member_ids: ids,
                source: MemberSource::Static,
                rule_version: None,
                cause: None,
            },
            input.reason,
        )
        .await
    }

    /// Removes static members (operator). Rule matches stay members while the rule matches
    /// them; exclude them to block them.
    async fn remove_group_members(
        &self,
        ctx: &Context<'_>,
        input: GroupMembersInput,
    ) -> Result<MembershipPayload> {
        require_on(ctx, Permission::MembershipEdit, &input.group_id).await?;
        let ids = input.member_ids;
        run(
            ctx,
            &input.group_id,
            || MembershipCommand::Remove {
                member_ids: ids,
                source: MemberSource::Static,
                rule_version: None,
                cause: None,
            },
            input.reason,
        )
        .await
    }

    /// Blocks members from the group whatever its rule or static entries say (operator).
    async fn exclude_group_members(
        &self,
        ctx: &Context<'_>,
        input: GroupMembersInput,
    ) -> Result<MembershipPayload> {
        require_on(ctx, Permission::MembershipEdit, &input.group_id).await?;
        let ids = input.member_ids;
        run(
            ctx,
            &input.group_id,
            || MembershipCommand::Exclude { member_ids: ids },
            input.reason,
        )
        .await
    }

    /// Lifts blocks (operator).
    async fn unexclude_group_members(
        &self,
        ctx: &Context<'_>,
        input: GroupMembersInput,
    ) -> Result<MembershipPayload> {
        require_on(ctx, Permission::MembershipEdit, &input.group_id).await?;
        let ids = input.member_ids;
        run(
            ctx,
            &input.group_id,
            || MembershipCommand::Unexclude { member_ids: ids },
            input.reason,
        )
        .await
    }
}
