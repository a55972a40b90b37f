//! A watch folded as of a position, and log entries applied to it.

use chrono::{DateTime, Utc};
use corral_domain::group::{Group, GroupEvent};
use corral_domain::membership::{Membership, MembershipEvent};
use cqrs_es::Aggregate;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::fold::{EffectiveWatch, Step, WatchChange};
use crate::history;
use crate::public_log::{LogEntry, LogFilter};
use crate::StoreError;

/// Why a watch could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The group was not alive at the position.
    #[error("no group {0} at that position")]
    NotFound(Uuid),
    /// It holds more entries than a watch may.
    #[error(
        "the watched groups hold {entries} membership entries, over the {max} a watch may hold"
    )]
    TooLarge {
        /// The entries.
        entries: usize,
        /// The limit.
        max: usize,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for LoadError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// An event a watch reads, decoded once for every watch it is applied to.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// A Membership event of a group.
    Membership(Uuid, MembershipEvent),
    /// A Group event.
    Group(Uuid, GroupEvent),
}

/// The entry as a [`WatchEvent`], if it is one (Group and Membership events; `None` for every
/// other aggregate type).
pub fn decode(entry: &LogEntry) -> Result<Option<WatchEvent>, StoreError> {
    let e = &entry.event;
    let Ok(id) = e.aggregate_id.parse::<Uuid>() else {
        return Ok(None);
    };
    Ok(match e.aggregate_type.as_str() {
        Membership::TYPE => Some(WatchEvent::Membership(id, e.decode()?)),
        Group::TYPE => Some(WatchEvent::Group(id, e.decode()?)),
        _ => None,
    })
}

/// The log entries a watch of `group` reads: Group and Membership events (of the group alone
/// without `descendants`; its deletion ends the watch).
pub fn filter(group: Uuid, descendants: bool) -> LogFilter {
    LogFilter {
        aggregate_types: vec![Group::TYPE.into(), Membership::TYPE.into()],
        aggregate_ids: if descendants {
            vec![]
        } else {
            vec![group.to_string()]
        },
        ..Default::default()
    }
}

/// A watch of `group` (and with `descendants` its subtree) as of position `at`: the tree and
/// the groups' entries folded then. Refuses, before folding, a group whose subtree holds more
/// than `max` entries now (a replay from `at` reaches today's state anyway), and after
/// folding one that held more at `at`. A group created after `at` gives an empty watch that
/// starts with its creation; one alive neither then nor later is `NotFound`.
pub async fn load(
    conn: &mut PgConnection,
    group: Uuid,
    descendants: bool,
    at: i64,
    max: usize,
) -> Result<EffectiveWatch, LoadError> {
    let tree = history::tree_at(conn, at).await?;
    let groups: Vec<(Uuid, i32)> = if descendants {
        tree.subtree(group)
    } else {
        tree.node(group)
            .map(|_| vec![(group, 0)])
            .unwrap_or_default()
    };
    if groups.is_empty() {
        // Not alive then: a group created later is watched from its creation on.
        let created_later: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events e JOIN event_log l USING (global_position)
                 WHERE e.aggregate_type = $1 AND e.aggregate_id = $2
                   AND e.event_type = 'GroupCreated' AND l.log_position > $3)",
        )
        .bind(Group::TYPE)
        .bind(group.to_string())
        .bind(at)
        .fetch_one(&mut *conn)
        .await?;
        return if created_later {
            Ok(EffectiveWatch::new(group, descendants))
        } else {
            Err(LoadError::NotFound(group))
        };
    }
    // The write-side registry counts the entries the watch would hold.
    let ids: Vec<Uuid> = groups.iter().map(|g| g.0).collect();
    let current: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(c.n), 0)::bigint FROM unnest($1::uuid[]) g(id)
           JOIN membership_registry_counts c ON c.group_id = g.id",
    )
    .bind(&ids)
    .fetch_one(&mut *conn)
    .await?;
    if current as usize > max {
        return Err(LoadError::TooLarge {
            entries: current as usize,
            max,
        });
    }
    let mut folds = history::membership_folds(conn, &groups, at).await?;
    let mut watch = EffectiveWatch::new(group, descendants);
    watch.add_groups(
        groups
            .iter()
            .map(|(g, _)| {
                let parent = tree.node(*g).and_then(|n| n.parent);
                (*g, parent, folds.remove(g).unwrap_or_default())
            })
            .collect(),
    );
    let entries = watch.entry_count();
    if entries > max {
        return Err(LoadError::TooLarge { entries, max });
    }
    Ok(watch)
}

/// Applies the event at `position` (recorded at `at`) to the watch, loading a subtree that
/// moved in as it was at that position; returns the changes it caused, in their order.
pub async fn apply(
    watch: &mut EffectiveWatch,
    pool: &PgPool,
    position: i64,
    at: DateTime<Utc>,
    event: &WatchEvent,
) -> Result<Vec<WatchChange>, StoreError> {
    Ok(match event {
        WatchEvent::Membership(group, e) => watch.membership(*group, e, at),
        WatchEvent::Group(group, e) => match watch.group(*group, e) {
            Step::Changes(changes) => changes,
            Step::LoadSubtree { group } => {
                let mut conn = pool.acquire().await?;
                let tree = history::tree_at(&mut conn, position).await?;
                let subtree = tree.subtree(group);
                let mut folds = history::membership_folds(&mut conn, &subtree, position).await?;
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
    })
}
