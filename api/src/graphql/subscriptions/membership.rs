//! The `membershipChanges` subscription: the watch loaded at the head, then fed by the log.

use std::collections::VecDeque;

use async_graphql::{Context, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use corral_domain::group::{Group, GroupEvent};
use corral_domain::membership::{Membership, MembershipEvent};
use corral_projections::history;
use corral_projections::public_log::{self, LogEntry, LogFilter};
use corral_projections::StoreError;
use cqrs_es::Aggregate;
use futures::Stream;
use sqlx::PgPool;
use uuid::Uuid;

use super::super::errors::{coded, internal};
use super::super::scalars::Position;
use super::follow;
use super::watch::{MembershipChangeKind, MembershipWatch, Step, WatchChange};
use super::LogHead;
use crate::error_codes::ErrorCode;

/// A member entering or leaving a group's membership.
#[derive(SimpleObject, Clone, Debug)]
pub struct MembershipChange {
    /// The position of the event that caused it.
    pub position: Position,
    /// When that event was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Entered or left.
    pub change: MembershipChangeKind,
    /// The device or service id.
    pub member_id: String,
    /// `STATIC` or `RULE`: how it is (ENTERED) or was (LEFT) a direct member of `groupId`.
    pub source: super::super::rules::MembershipSource,
    /// The group whose direct membership changed: the group subscribed to or, with
    /// `includeDescendants`, the descendant through which the member entered or left.
    pub group_id: ID,
    /// Why: the rule evaluation's cause (`rule_changed`, `inventory:<id>`, ...), `moved` when
    /// a whole descendant moved in or out, or null for a direct edit.
    pub cause: Option<String>,
}

impl MembershipChange {
    fn of(entry: &LogEntry, change: WatchChange) -> Self {
        Self {
            position: Position(entry.position),
            recorded_at: entry.event.recorded_at,
            change: change.kind,
            member_id: change.member_id,
            source: super::super::rules::MembershipSource::from_code(
                corral_domain::membership::EntryKind::from(change.source).code(),
            ),
            group_id: ID(change.group.to_string()),
            cause: change.cause,
        }
    }
}

/// Applies one log entry to the watch (loading a subtree that moved in at the entry's
/// position); returns the changes it caused.
async fn apply(
    watch: &mut MembershipWatch,
    pool: &PgPool,
    entry: &LogEntry,
) -> Result<Vec<MembershipChange>, StoreError> {
    let e = &entry.event;
    let Ok(id) = e.aggregate_id.parse::<Uuid>() else {
        return Ok(vec![]);
    };
    let changes = match e.aggregate_type.as_str() {
        Membership::TYPE => watch.membership(id, &e.decode::<MembershipEvent>()?, e.recorded_at),
        Group::TYPE => match watch.group(id, &e.decode::<GroupEvent>()?) {
            Step::Changes(changes) => changes,
            Step::LoadSubtree { group } => {
                // A subtree moved in: its members as they are at this position.
                let mut conn = pool.acquire().await?;
                let tree = history::tree_at(&mut conn, entry.position).await?;
                let subtree = tree.subtree(group);
                let mut folds =
                    history::membership_folds(&mut conn, &subtree, entry.position).await?;
                let added = subtree
                    .iter()
                    .map(|(g, _)| {
                        let parent = tree.node(*g).and_then(|n| n.parent);
                        (*g, parent, folds.remove(g).unwrap_or_default())
                    })
                    .collect();
                watch.subtree_moved_in(added)
            }
        },
        _ => vec![],
    };
    Ok(changes
        .into_iter()
        .map(|c| MembershipChange::of(entry, c))
        .collect())
}

/// Most membership entries one `membershipChanges` subscription may watch (its memory).
pub const MAX_WATCHED_ENTRIES: usize = 500_000;

fn too_large(entries: usize, descendants: bool) -> async_graphql::Error {
    coded(
        ErrorCode::TooLarge,
        format!(
            "the group{} holds {entries} membership entries, over the {MAX_WATCHED_ENTRIES} one subscription may watch; subscribe to a smaller subtree, or to `events` filtered on Membership",
            if descendants { " and its descendants" } else { "" }
        ),
    )
}

/// `membershipChanges`: the watch, loaded at the head, then fed by the log.
pub(super) async fn membership_stream(
    ctx: &Context<'_>,
    group: Uuid,
    descendants: bool,
) -> Result<impl Stream<Item = Result<MembershipChange>>> {
    let (pool, head) = ctx
        .data_unchecked::<LogHead>()
        .get(ctx.data_unchecked::<PgPool>())
        .await;
    let mut conn = pool.acquire().await.map_err(internal)?;
    let (start, _) = public_log::head(&mut conn).await.map_err(internal)?;
    let tree = history::tree_at(&mut conn, start).await.map_err(internal)?;
    let groups: Vec<(Uuid, i32)> = if descendants {
        tree.subtree(group)
    } else {
        tree.node(group)
            .map(|_| vec![(group, 0)])
            .unwrap_or_default()
    };
    if groups.is_empty() {
        return Err(coded(ErrorCode::NotFound, format!("no group {group}")));
    }
    // Refuse before folding: the write-side registry counts the entries the watch would hold.
    let ids: Vec<Uuid> = groups.iter().map(|g| g.0).collect();
    let current: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(c.n), 0)::bigint FROM unnest($1::uuid[]) g(id)
           JOIN membership_registry_counts c ON c.group_id = g.id",
    )
    .bind(&ids)
    .fetch_one(&mut *conn)
    .await
    .map_err(internal)?;
    if current as usize > MAX_WATCHED_ENTRIES {
        return Err(too_large(current as usize, descendants));
    }
    let mut folds = history::membership_folds(&mut conn, &groups, start)
        .await
        .map_err(internal)?;
    drop(conn);
    let mut watch = MembershipWatch::new(group, descendants);
    watch.add_groups(
        groups
            .iter()
            .map(|(g, _)| {
                let parent = tree.node(*g).and_then(|n| n.parent);
                (*g, parent, folds.remove(g).unwrap_or_default())
            })
            .collect::<Vec<_>>(),
    );
    let entries = watch.entry_count();
    if entries > MAX_WATCHED_ENTRIES {
        return Err(too_large(entries, descendants));
    }
    let filter = if descendants {
        LogFilter {
            aggregate_types: vec![Group::TYPE.into(), Membership::TYPE.into()],
            ..Default::default()
        }
    } else {
        // The group's own Group events too (its deletion ends the stream).
        LogFilter {
            aggregate_types: vec![Group::TYPE.into(), Membership::TYPE.into()],
            aggregate_ids: vec![group.to_string()],
            ..Default::default()
        }
    };
    let entries = Box::pin(follow(pool.clone(), head, filter, start, None));
    let state = (
        entries,
        watch,
        VecDeque::<MembershipChange>::new(),
        pool,
        false,
    );
    Ok(futures::stream::unfold(
        state,
        |(mut entries, mut watch, mut pending, pool, failed)| async move {
            if failed {
                return None;
            }
            loop {
                if let Some(item) = pending.pop_front() {
                    return Some((Ok(item), (entries, watch, pending, pool, false)));
                }
                if watch.ended {
                    return None;
                }
                let entry = match futures::StreamExt::next(&mut entries).await? {
                    Ok(entry) => entry,
                    Err(err) => {
                        return Some((Err(internal(err)), (entries, watch, pending, pool, true)))
                    }
                };
                match apply(&mut watch, &pool, &entry).await {
                    Ok(changes) => pending.extend(changes),
                    Err(err) => {
                        return Some((Err(internal(err)), (entries, watch, pending, pool, true)))
                    }
                }
            }
        },
    ))
}
