//! The `membershipChanges` subscription: the watch folded as of the position it starts after,
//! then fed by the log (replay and live tail are one loop). The decisions are
//! `corral_projections::watch`'s, shared with the NATS membership feed.

use std::collections::VecDeque;

use async_graphql::{Context, Enum, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use corral_projections::public_log;
use corral_projections::watch::{self, ChangeCursor, EffectiveWatch, LoadError, NumberedChange};
use futures::Stream;
use sqlx::PgPool;
use uuid::Uuid;

use super::super::errors::{coded, internal};
use super::super::scalars::Position;
use super::follow;
use super::LogHead;
use crate::error_codes::ErrorCode;

pub use watch::MAX_WATCHED_ENTRIES;

/// Whether a member entered or left.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChangeKind {
    /// It became a member.
    Entered,
    /// It stopped being one.
    Left,
}

impl From<watch::MembershipChangeKind> for MembershipChangeKind {
    fn from(kind: watch::MembershipChangeKind) -> Self {
        match kind {
            watch::MembershipChangeKind::Entered => Self::Entered,
            watch::MembershipChangeKind::Left => Self::Left,
        }
    }
}

/// A member entering or leaving a group's membership.
#[derive(SimpleObject, Clone, Debug)]
pub struct MembershipChange {
    /// The position of the event that caused it.
    pub position: Position,
    /// Its index among the changes that event caused in this watch (from 0; one event can
    /// cause many, e.g. a subtree moving in).
    pub index: i32,
    /// Whether it is the last change of its position: a client that stores only positions
    /// may store this one (and resume with `fromPosition` = it + 1) once it sees this flag.
    pub last_of_position: bool,
    /// `"<position>:<index>"`: pass it as `after` to resume exactly after this change.
    pub cursor: String,
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
    /// a whole descendant moved in or out, `deleted` when it was deleted, or null for a
    /// direct edit.
    pub cause: Option<String>,
}

impl From<NumberedChange> for MembershipChange {
    fn from(c: NumberedChange) -> Self {
        Self {
            position: Position(c.position),
            index: i32::try_from(c.index).unwrap_or(i32::MAX),
            last_of_position: c.last,
            cursor: c.cursor().to_string(),
            recorded_at: c.recorded_at,
            change: c.change.kind.into(),
            member_id: c.change.member_id,
            source: super::super::rules::MembershipSource::from_code(
                corral_domain::membership::EntryKind::from(c.change.source).code(),
            ),
            group_id: ID(c.change.group.to_string()),
            cause: c.change.cause,
        }
    }
}

/// Where a `membershipChanges` stream starts.
#[derive(Debug, Clone, Copy)]
pub(super) enum Start {
    /// With the next event.
    Now,
    /// With the changes of this position (replayed) and every later one.
    From(i64),
    /// Right after this change.
    After(ChangeCursor),
}

fn load_error(err: LoadError, descendants: bool) -> async_graphql::Error {
    match err {
        LoadError::NotFound(group) => coded(ErrorCode::NotFound, format!("no group {group}")),
        LoadError::TooLarge { entries, max } => coded(
            ErrorCode::TooLarge,
            format!(
                "the group{} holds {entries} membership entries, over the {max} one subscription may watch; subscribe to a smaller subtree, or to `events` filtered on Membership",
                if descendants { " and its descendants" } else { "" }
            ),
        ),
        LoadError::Store(err) => internal(err),
    }
}

/// `membershipChanges`: the watch folded as of the position before its first, then fed by
/// the log.
pub(super) async fn membership_stream(
    ctx: &Context<'_>,
    group: Uuid,
    descendants: bool,
    start: Start,
) -> Result<impl Stream<Item = Result<MembershipChange>>> {
    let (pool, head) = ctx
        .data_unchecked::<LogHead>()
        .get(ctx.data_unchecked::<PgPool>())
        .await;
    let mut conn = pool.acquire().await.map_err(internal)?;
    let (top, _) = public_log::head(&mut conn).await.map_err(internal)?;
    let (after, skip) = match start {
        Start::Now => (top, None),
        Start::From(p) => ((p - 1).max(0), None),
        Start::After(c) => (c.position - 1, Some(c)),
    };
    if after > top {
        return Err(coded(
            ErrorCode::BadUserInput,
            format!(
                "the log ends at position {top}: start at {} at most",
                top + 1
            ),
        ));
    }
    let watch = watch::load(&mut conn, group, descendants, after, MAX_WATCHED_ENTRIES)
        .await
        .map_err(|e| load_error(e, descendants))?;
    drop(conn);
    let entries = Box::pin(follow(
        pool.clone(),
        head,
        watch::filter(group, descendants),
        after,
        None,
    ));
    struct State<S> {
        entries: S,
        watch: EffectiveWatch,
        pending: VecDeque<NumberedChange>,
        pool: PgPool,
        skip: Option<ChangeCursor>,
        failed: bool,
    }
    let state = State {
        entries,
        watch,
        pending: VecDeque::new(),
        pool,
        skip,
        failed: false,
    };
    Ok(futures::stream::unfold(state, |mut s| async move {
        if s.failed {
            return None;
        }
        loop {
            if let Some(item) = s.pending.pop_front() {
                return Some((Ok(MembershipChange::from(item)), s));
            }
            if s.watch.ended {
                return None;
            }
            let entry = match futures::StreamExt::next(&mut s.entries).await? {
                Ok(entry) => entry,
                Err(err) => {
                    s.failed = true;
                    return Some((Err(internal(err)), s));
                }
            };
            let applied = async {
                let Some(event) = watch::decode(&entry)? else {
                    return Ok(vec![]);
                };
                watch::apply(
                    &mut s.watch,
                    &s.pool,
                    entry.position,
                    entry.event.recorded_at,
                    &event,
                )
                .await
            };
            match applied.await {
                Ok(changes) => {
                    let numbered = watch::number(entry.position, entry.event.recorded_at, changes);
                    let skip = s.skip;
                    s.pending.extend(
                        numbered
                            .into_iter()
                            .filter(|c| skip.is_none_or(|k| k.precedes(c))),
                    );
                    if entry.position > skip.map_or(0, |k| k.position) {
                        s.skip = None;
                    }
                }
                Err(err) => {
                    s.failed = true;
                    return Some((Err(internal(err)), s));
                }
            }
        }
    }))
}
