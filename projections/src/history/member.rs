//! One member's memberships as they were at a position: the Membership events that name it
//! (found through `member_events`, migration 0011), folded per group with the domain's one
//! fold restricted to that member ([`GroupEntries::apply_to`]), then resolved to groups through
//! the tree as it was at the position ([`groups_at`]) or as it is now.
//!
//! Cost: one query for the member's Membership events (an index range of `member_events`,
//! joined to the log by primary keys), plus [`groups_at`] for the groups it had entries in
//! (one query per level of the deepest chain) or one closure-table query for today's tree.
//! Nothing here reads other members' events or the whole tree.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use corral_domain::membership::{Entry, GroupEntries, Membership, MembershipEvent};
use cqrs_es::Aggregate;
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::query::groups_at;
use crate::group_tree::LIVE_SCHEMA as T;
use crate::log::decode_stored;
use crate::membership::read::{Belonging, MemberRow, Mode};
use crate::StoreError;

/// Which tree turns a member's direct groups into its effective ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TreeAt {
    /// The tree as it was at the position (groups deleted by then count for nothing).
    #[default]
    Position,
    /// Today's tree (groups deleted since count for nothing).
    Now,
}

/// The member's entries in every group it had any in at `position` (static and rule since
/// when, excluded), folded from its Membership events.
pub async fn member_entries_at(
    conn: &mut PgConnection,
    member: &str,
    position: i64,
) -> Result<BTreeMap<Uuid, Entry>, StoreError> {
    let rows = sqlx::query(
        "SELECT e.aggregate_id, e.event_type, e.event_version, e.payload, e.recorded_at
           FROM member_events m
           JOIN event_log l ON l.global_position = m.global_position
           JOIN events e ON e.global_position = m.global_position
          WHERE m.member_id = $1 AND e.aggregate_type = $2 AND l.log_position <= $3
          ORDER BY l.log_position",
    )
    .bind(member)
    .bind(Membership::TYPE)
    .bind(position)
    .fetch_all(&mut *conn)
    .await?;
    let mut folds: HashMap<Uuid, GroupEntries> = HashMap::new();
    for r in &rows {
        let aggregate_id: String = r.try_get("aggregate_id")?;
        let group: Uuid = aggregate_id
            .parse()
            .map_err(|_| StoreError::Data(format!("group id {aggregate_id:?}")))?;
        let event_type: String = r.try_get("event_type")?;
        let event_version: String = r.try_get("event_version")?;
        let payload: Value = r.try_get("payload")?;
        let at: DateTime<Utc> = r.try_get("recorded_at")?;
        let event: MembershipEvent = decode_stored(
            Membership::TYPE,
            &aggregate_id,
            &event_type,
            &event_version,
            &payload,
        )?;
        folds.entry(group).or_default().apply_to(&event, at, member);
    }
    Ok(folds
        .into_iter()
        .filter_map(|(g, f)| f.entry(member).copied().map(|e| (g, e)))
        .collect())
}

/// The groups `member` belonged to at `position`, each with its reasons (as
/// [`crate::membership::read::groups_of`] answers for now), ordered by group id: its direct
/// groups, and for [`Mode::Effective`] their ancestors in the tree `tree` names. A group that
/// did not exist in that tree (not yet created, deleted by then, or for [`TreeAt::Now`]
/// deleted since) counts for nothing.
pub async fn groups_of_at(
    conn: &mut PgConnection,
    member: &str,
    position: i64,
    mode: Mode,
    tree: TreeAt,
) -> Result<Vec<Belonging>, StoreError> {
    let entries = member_entries_at(conn, member, position).await?;
    let direct: Vec<(Uuid, MemberRow)> = entries
        .iter()
        .filter_map(|(g, e)| {
            let (source, since) = e.direct()?;
            Some((
                *g,
                MemberRow {
                    member_id: member.to_string(),
                    source: corral_domain::membership::EntryKind::from(source).code(),
                    via_group: *g,
                    since,
                },
            ))
        })
        .collect();
    let ids: Vec<Uuid> = direct.iter().map(|(g, _)| *g).collect();
    // Each live direct group with its ancestors (root first) in the chosen tree.
    let chains: HashMap<Uuid, Vec<Uuid>> = match tree {
        TreeAt::Position => groups_at(conn, &ids, position)
            .await?
            .into_iter()
            .filter(|(_, g)| g.deleted_at.is_none())
            .map(|(id, g)| (id, g.ancestors))
            .collect(),
        TreeAt::Now => {
            let rows: Vec<(Uuid, Uuid, i32)> = sqlx::query_as(&format!(
                "SELECT c.descendant_id, c.ancestor_id, c.depth
                   FROM {T}.group_closure c
                  WHERE c.descendant_id = ANY($1) AND c.depth > 0
                  ORDER BY c.descendant_id, c.depth DESC"
            ))
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
            let live: Vec<Uuid> =
                sqlx::query_scalar(&format!("SELECT id FROM {T}.groups WHERE id = ANY($1)"))
                    .bind(&ids)
                    .fetch_all(&mut *conn)
                    .await?;
            let mut chains: HashMap<Uuid, Vec<Uuid>> =
                live.into_iter().map(|g| (g, Vec::new())).collect();
            for (descendant, ancestor, _) in rows {
                if let Some(chain) = chains.get_mut(&descendant) {
                    chain.push(ancestor);
                }
            }
            chains
        }
    };
    let mut out: BTreeMap<Uuid, Vec<MemberRow>> = BTreeMap::new();
    for (g, row) in direct {
        let Some(ancestors) = chains.get(&g) else {
            continue;
        };
        out.entry(g).or_default().push(row.clone());
        if mode == Mode::Effective {
            for a in ancestors {
                out.entry(*a).or_default().push(row.clone());
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|(group_id, reasons)| Belonging { group_id, reasons })
        .collect())
}

/// The group sets of `member` at `position` for evaluating a rule's `group:` conditions as
/// of then (direct and effective, in the tree `tree` names).
pub async fn group_sets_at(
    conn: &mut PgConnection,
    member: &str,
    position: i64,
    tree: TreeAt,
) -> Result<crate::membership::read::GroupSets, StoreError> {
    let effective = groups_of_at(conn, member, position, Mode::Effective, tree).await?;
    let mut sets = Vec::new();
    for b in effective {
        if b.reasons.iter().any(|r| r.via_group == b.group_id) {
            sets.push((b.group_id, true));
        }
        sets.push((b.group_id, false));
    }
    Ok(crate::membership::read::GroupSets::of(member, sets))
}
