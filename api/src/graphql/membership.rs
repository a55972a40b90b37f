//! Membership mutations: static members, exclusions, adding a rule's matches.

use std::sync::Arc;

use async_graphql::{Context, InputObject, Object, Result, SimpleObject, ID};
use corral_domain::membership::{MemberSource, MembershipCommand};
use corral_projections::executor::Committed;
use corral_projections::membership::{MembershipCommands, MEMBERSHIP};
use corral_projections::sequencer::SEQUENCER;
use sqlx::PgPool;
use uuid::Uuid;

use super::errors::{from_exec, internal, UserError};
use super::mutation::{event_metadata, settle};
use super::scalars::Position;
use super::types::{parse_id, Group};

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

/// How many ids the events of a commit carry.
async fn changed(pool: &PgPool, group: Uuid, committed: &Committed) -> Result<i64> {
    if committed.events == 0 {
        return Ok(0);
    }
    let n: Option<i64> = sqlx::query_scalar(
        "SELECT sum(jsonb_array_length(payload -> event_type -> 'member_ids'))::bigint FROM events
          WHERE aggregate_type = 'Membership' AND aggregate_id = $1
            AND sequence > $2 AND sequence <= $3",
    )
    .bind(group.to_string())
    .bind((committed.version - committed.events as u64) as i64)
    .bind(committed.version as i64)
    .fetch_one(pool)
    .await
    .map_err(internal)?;
    Ok(n.unwrap_or(0))
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
    let committed = match ctx
        .data_unchecked::<Arc<MembershipCommands>>()
        .execute(group, command(), &metadata)
        .await
    {
        Ok(c) => c,
        Err(e) => return Ok(MembershipPayload::error(from_exec(e)?)),
    };
    let pool = ctx.data_unchecked::<PgPool>();
    let changed = changed(pool, group, &committed).await?;
    let (position, wait_timed_out) = settle(
        ctx,
        committed.token,
        "Membership",
        &group.to_string(),
        &[SEQUENCER, MEMBERSHIP],
    )
    .await;
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
        changed,
        position,
        wait_timed_out,
        user_errors: vec![],
    })
}

/// Membership mutations (part of the `Mutation` root).
#[derive(Default)]
pub struct MembershipMutation;

#[Object]
impl MembershipMutation {
    /// Adds static members (operator). Ids already static members are skipped; unknown ids
    /// reject the whole call (`UNKNOWN_MEMBER`).
    async fn add_group_members(
        &self,
        ctx: &Context<'_>,
        input: GroupMembersInput,
    ) -> Result<MembershipPayload> {
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
