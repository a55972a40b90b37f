//! Group mutations. Each returns after the read models reflect it (bounded wait).
//!
//! Scope: each checks its permission on the group it changes (`createGroup`: on the parent;
//! `moveGroup`: on the group's current parent and on the new one) before anything is written,
//! and answers `FORBIDDEN` (a top-level error, no event) when the caller's bindings do not
//! reach it, whether the group exists or not.

use corral_domain::codes::Code;
use std::time::Duration;

use async_graphql::{Context, InputObject, Json, Object, Result, SimpleObject, ID};
use corral_domain::group::{GroupCommand, GroupType as DomainGroupType};
use corral_domain::metadata::{EventMetadata, Source};
use corral_domain::text::check_free_text;
use corral_projections::commands::{Command, CommandError, Commands, GroupCommands, Outcome, Wait};
use serde_json::{Map, Value};
use sqlx::PgPool;
use std::sync::Arc;
use uuid::Uuid;

use super::errors::{from_command, UserError};
use super::scalars::Position;
use super::scope;
use super::types::{parse_id, Group, GroupType};
use crate::auth::Actor;
use crate::permissions::Permission;

/// How long a mutation waits for the read models.
#[derive(Debug, Clone, Copy)]
pub struct MutationWait(pub Duration);

/// Longest `reason`.
pub const MAX_REASON_CHARS: usize = 1024;

/// The result of a group mutation.
#[derive(SimpleObject, Default)]
pub struct GroupPayload {
    /// The group after the change (`null` on error).
    pub group: Option<Group>,
    /// Log position of the change (consistency token); for a no-op, the position of the state
    /// it confirmed; `null` on error or when the wait timed out before the change was sequenced.
    pub position: Option<Position>,
    /// True when the read models did not catch up within the wait; the change is committed.
    pub wait_timed_out: bool,
    /// Expected failures; nothing was changed when this is not empty.
    pub user_errors: Vec<UserError>,
}

/// The result of `deleteGroup`.
#[derive(SimpleObject, Default)]
pub struct DeleteGroupPayload {
    /// The id of the deleted group.
    pub deleted_id: Option<ID>,
    /// Log position of the deletion.
    pub position: Option<Position>,
    /// True when the read models did not catch up within the wait.
    pub wait_timed_out: bool,
    /// Expected failures.
    pub user_errors: Vec<UserError>,
}

/// Input of `createGroup`.
#[derive(InputObject)]
pub struct CreateGroupInput {
    /// Name, 1-128 characters after trimming, no `/`, unique among siblings ignoring case.
    /// Stored in Unicode NFC, so a precomposed and a decomposed `é` are the same name.
    /// Refused: control characters, format characters (zero-width spaces and joiners, the
    /// byte order mark, the soft hyphen, bidirectional marks, embeddings, overrides and
    /// isolates, tag characters), U+2028 and U+2029, and noncharacters. Private-use
    /// characters are allowed.
    pub name: String,
    /// Device or service group.
    #[graphql(name = "type")]
    pub group_type: GroupType,
    /// Parent group; defaults to the root of the type.
    pub parent_id: Option<ID>,
    /// Free text, at most 4096 characters, kept as sent. Tabs and line breaks are allowed;
    /// other control characters and bidirectional embeddings, overrides and isolates
    /// (U+202A-U+202E, U+2066-U+2069) are refused.
    pub description: Option<String>,
    /// A JSON object, at most 16 KiB.
    pub metadata: Option<Json<Value>>,
    /// Why (kept in the audit trail). At most 1024 characters, refused with the characters
    /// a `description` may not hold; the same holds for every mutation's `reason`.
    pub reason: Option<String>,
}

/// Input of `renameGroup`.
#[derive(InputObject)]
pub struct RenameGroupInput {
    /// The group.
    pub id: ID,
    /// The new name, as `CreateGroupInput.name`: NFC, unique among siblings ignoring case,
    /// without control, format or separator characters.
    pub name: String,
    /// Refuse unless the group is at this version.
    pub expected_version: Option<i64>,
    /// Why.
    pub reason: Option<String>,
}

/// Input of `updateGroup`; omitted fields keep their values.
#[derive(InputObject)]
pub struct UpdateGroupInput {
    /// The group.
    pub id: ID,
    /// New description (empty string clears it), as `CreateGroupInput.description`.
    pub description: Option<String>,
    /// New metadata object (replaces the old one).
    pub metadata: Option<Json<Value>>,
    /// Refuse unless the group is at this version.
    pub expected_version: Option<i64>,
    /// Why.
    pub reason: Option<String>,
}

/// Input of `moveGroup`.
#[derive(InputObject)]
pub struct MoveGroupInput {
    /// The group to move (with its subtree).
    pub id: ID,
    /// Its new parent, of the same type.
    pub new_parent_id: ID,
    /// Refuse unless the group is at this version.
    pub expected_version: Option<i64>,
    /// Why.
    pub reason: Option<String>,
}

/// Input of `deleteGroup`.
#[derive(InputObject)]
pub struct DeleteGroupInput {
    /// The group; it must have no children.
    pub id: ID,
    /// Refuse unless the group is at this version.
    pub expected_version: Option<i64>,
    /// Why.
    pub reason: Option<String>,
}

fn metadata_object(
    m: Option<Json<Value>>,
) -> std::result::Result<Option<Map<String, Value>>, UserError> {
    match m.map(|j| j.0) {
        None => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(UserError::new(
            Some("metadata"),
            Code::Invalid,
            "metadata must be a JSON object",
        )),
    }
}

pub(crate) fn expected(v: Option<i64>) -> std::result::Result<Option<u64>, UserError> {
    match v {
        Some(n) if n < 0 => Err(UserError::new(
            Some("expectedVersion"),
            Code::Invalid,
            "expectedVersion must not be negative",
        )),
        other => Ok(other.map(|n| n as u64)),
    }
}

/// `FORBIDDEN` unless the caller may use `p` on the group `id` names. An `id` that is no
/// group id is left to the mutation's own userError (it names no group to protect).
pub(crate) async fn require_on(ctx: &Context<'_>, p: Permission, id: &ID) -> Result<()> {
    match id.parse::<Uuid>() {
        Ok(g) => scope::require(ctx, p, g).await,
        Err(_) => Ok(()),
    }
}

/// The group's current parent in the live tree (`None`: a root, or no such group).
async fn current_parent(ctx: &Context<'_>, id: Uuid) -> Result<Option<Uuid>> {
    let pool = ctx.data_unchecked::<PgPool>();
    Ok(corral_projections::group_tree::read::by_ids(pool, &[id])
        .await
        .map_err(super::errors::internal)?
        .pop()
        .and_then(|n| n.parent_id))
}

pub(crate) struct GroupOutcome {
    group_id: Uuid,
    position: Option<Position>,
    wait_timed_out: bool,
}

/// The metadata of a change made by the calling actor, or a userError for a bad reason.
pub(crate) fn event_metadata(
    ctx: &Context<'_>,
    reason: Option<String>,
) -> Result<std::result::Result<EventMetadata, UserError>> {
    // Every mutation's reason comes through here: refuse what would hide or reorder text in
    // the audit trail (control characters other than tab and line breaks, bidi overrides).
    if let Some(Err(err)) = reason
        .as_deref()
        .map(|r| check_free_text("reason", r, MAX_REASON_CHARS))
    {
        return Ok(Err(UserError::new(
            Some("reason"),
            Code::Invalid,
            err.to_string(),
        )));
    }
    let actor = ctx.data::<Actor>()?;
    Ok(Ok(EventMetadata {
        actor_subject: actor.subject.clone(),
        actor_role: actor.role.clone(),
        source: Source::Api,
        correlation_id: actor.request_id.clone(),
        causation_id: actor.request_id.clone(),
        reason: reason
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty()),
        client_addr: actor.client_addr.clone(),
    }))
}

/// Runs a command for the caller, waiting for the read models its events feed (bounded by
/// the configured wait), and forgets what this operation's loaders cached before it.
pub(crate) async fn execute(
    ctx: &Context<'_>,
    command: Command,
    metadata: &EventMetadata,
) -> std::result::Result<Outcome, CommandError> {
    let commands = ctx.data_unchecked::<Arc<Commands>>();
    let wait = ctx.data_unchecked::<MutationWait>().0;
    let outcome = commands
        .execute(command, metadata, Wait::ReadModels(wait))
        .await;
    super::loaders::clear_caches(ctx);
    outcome
}

/// Runs a Group command for the calling actor and waits for the read models.
pub(crate) async fn run(
    ctx: &Context<'_>,
    command: GroupCommand,
    expected_version: Option<u64>,
    reason: Option<String>,
) -> Result<std::result::Result<GroupOutcome, UserError>> {
    let metadata = match event_metadata(ctx, reason)? {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let group_id = GroupCommands::target(&command);
    match execute(ctx, Command::Group(command, expected_version), &metadata).await {
        Ok(outcome) => Ok(Ok(GroupOutcome {
            group_id,
            position: outcome.position.map(Position),
            wait_timed_out: outcome.wait_timed_out,
        })),
        Err(e) => Ok(Err(from_command(e)?)),
    }
}

pub(crate) async fn group_payload(
    ctx: &Context<'_>,
    outcome: std::result::Result<GroupOutcome, UserError>,
) -> Result<GroupPayload> {
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            return Ok(GroupPayload {
                user_errors: vec![e],
                ..Default::default()
            })
        }
    };
    // A fresh read: the request's loader may have cached the group before the change.
    let group = corral_projections::group_tree::read::by_ids(
        ctx.data_unchecked::<PgPool>(),
        &[outcome.group_id],
    )
    .await
    .unwrap_or_else(|err| {
        // The change is committed; answer without the group rather than with an error.
        tracing::warn!(error = %err, "could not read a group after changing it");
        vec![]
    })
    .pop()
    .map(Group::from);
    Ok(GroupPayload {
        group,
        position: outcome.position,
        wait_timed_out: outcome.wait_timed_out,
        user_errors: vec![],
    })
}

macro_rules! try_input {
    ($e:expr, $payload:ty) => {
        match $e {
            Ok(v) => v,
            Err(err) => return Ok(<$payload>::from_error(err)),
        }
    };
}

trait FromUserError: Default {
    fn from_error(e: UserError) -> Self;
}
impl GroupPayload {
    /// A payload carrying one userError.
    pub fn from_error(e: UserError) -> Self {
        <Self as FromUserError>::from_error(e)
    }
}

impl FromUserError for GroupPayload {
    fn from_error(e: UserError) -> Self {
        Self {
            user_errors: vec![e],
            ..Default::default()
        }
    }
}
impl FromUserError for DeleteGroupPayload {
    fn from_error(e: UserError) -> Self {
        Self {
            user_errors: vec![e],
            ..Default::default()
        }
    }
}

/// Group mutations (part of the `Mutation` root).
#[derive(Default)]
pub struct GroupMutation;

#[Object]
impl GroupMutation {
    /// Creates a group (`group.create` on the parent).
    async fn create_group(
        &self,
        ctx: &Context<'_>,
        input: CreateGroupInput,
    ) -> Result<GroupPayload> {
        let group_type = DomainGroupType::from(input.group_type);
        let parent_id = match &input.parent_id {
            Some(p) => try_input!(parse_id(p, "parentId"), GroupPayload),
            None => group_type.root_id(),
        };
        scope::require(ctx, Permission::GroupCreate, parent_id).await?;
        let metadata = try_input!(metadata_object(input.metadata), GroupPayload);
        let command = GroupCommand::Create {
            id: Uuid::new_v4(),
            name: input.name,
            group_type,
            parent_id,
            description: input.description,
            metadata,
        };
        let outcome = run(ctx, command, None, input.reason).await?;
        group_payload(ctx, outcome).await
    }

    /// Renames a group (`group.edit` on it).
    async fn rename_group(
        &self,
        ctx: &Context<'_>,
        input: RenameGroupInput,
    ) -> Result<GroupPayload> {
        let id = try_input!(parse_id(&input.id, "id"), GroupPayload);
        scope::require(ctx, Permission::GroupEdit, id).await?;
        let expected_version = try_input!(expected(input.expected_version), GroupPayload);
        let outcome = run(
            ctx,
            GroupCommand::Rename {
                id,
                name: input.name,
            },
            expected_version,
            input.reason,
        )
        .await?;
        group_payload(ctx, outcome).await
    }

    /// Changes a group's description and/or metadata (`group.edit` on it).
    async fn update_group(
        &self,
        ctx: &Context<'_>,
        input: UpdateGroupInput,
    ) -> Result<GroupPayload> {
        let id = try_input!(parse_id(&input.id, "id"), GroupPayload);
        scope::require(ctx, Permission::GroupEdit, id).await?;
        let expected_version = try_input!(expected(input.expected_version), GroupPayload);
        let metadata = try_input!(metadata_object(input.metadata), GroupPayload);
        let command = GroupCommand::Update {
            id,
            description: input.description,
            metadata,
        };
        let outcome = run(ctx, command, expected_version, input.reason).await?;
        group_payload(ctx, outcome).await
    }

    /// Moves a group and its subtree under another parent (`group.move` on its current
    /// parent and on the new parent).
    async fn move_group(&self, ctx: &Context<'_>, input: MoveGroupInput) -> Result<GroupPayload> {
        let id = try_input!(parse_id(&input.id, "id"), GroupPayload);
        let new_parent_id = try_input!(parse_id(&input.new_parent_id, "newParentId"), GroupPayload);
        // The group leaves its parent's subtree and joins the new parent's: both must be
        // reached (the group itself is then, under its parent). A root or a missing group is
        // checked on itself.
        // A global mover needs no lookup.
        if scope::reach(ctx, Permission::GroupMove).await? != scope::Reach::All {
            let from = current_parent(ctx, id).await?.unwrap_or(id);
            scope::require(ctx, Permission::GroupMove, from).await?;
            scope::require(ctx, Permission::GroupMove, new_parent_id).await?;
        }
        let expected_version = try_input!(expected(input.expected_version), GroupPayload);
        let outcome = run(
            ctx,
            GroupCommand::Move { id, new_parent_id },
            expected_version,
            input.reason,
        )
        .await?;
        group_payload(ctx, outcome).await
    }

    /// Deletes a group that has no children (`group.delete` on it).
    async fn delete_group(
        &self,
        ctx: &Context<'_>,
        input: DeleteGroupInput,
    ) -> Result<DeleteGroupPayload> {
        let id = try_input!(parse_id(&input.id, "id"), DeleteGroupPayload);
        scope::require(ctx, Permission::GroupDelete, id).await?;
        let expected_version = try_input!(expected(input.expected_version), DeleteGroupPayload);
        Ok(
            match run(
                ctx,
                GroupCommand::Delete { id },
                expected_version,
                input.reason,
            )
            .await?
            {
                Ok(o) => DeleteGroupPayload {
                    deleted_id: Some(ID(o.group_id.to_string())),
                    position: o.position,
                    wait_timed_out: o.wait_timed_out,
                    user_errors: vec![],
                },
                Err(e) => DeleteGroupPayload::from_error(hide_referrers(ctx, e).await?),
            },
        )
    }
}

/// A `REFERENCED` refusal names the groups whose rules refer to the group; a caller bound to
/// groups sees only the ids it may read, and a count of the others.
async fn hide_referrers(ctx: &Context<'_>, e: UserError) -> Result<UserError> {
    if Code::from(e.code) != Code::Referenced {
        return Ok(e);
    }
    let Some((head, listed)) = e.message.rsplit_once(": ") else {
        return Ok(e);
    };
    let ids: Vec<Uuid> = listed
        .split(", ")
        .filter_map(|id| id.parse().ok())
        .collect();
    let readable = scope::readable(ctx, &ids).await?;
    if readable.len() == ids.len() {
        return Ok(e);
    }
    let mut shown: Vec<String> = ids
        .iter()
        .filter(|id| readable.contains(id))
        .map(ToString::to_string)
        .collect();
    shown.push(format!(
        "{} group(s) beyond your scope",
        ids.len() - readable.len()
    ));
    Ok(UserError {
        message: format!("{head}: {}", shown.join(", ")),
        ..e
    })
}
