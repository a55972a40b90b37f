//! Groups as they were at a position, with the paths their parent chains gave them then.

use std::collections::{HashMap, HashSet};

use corral_domain::group::{Group, GroupEvent};
use cqrs_es::Aggregate;
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::group_fold::{GroupEventRow, GroupFold, HistoricalGroup};
use super::tree::tree_at;
use super::MAX_CHAIN;
use crate::StoreError;

/// Reads the Group events of `(group, position)` pairs: those at or before the position and
/// any `GroupDeleted`, in sequence order per pair.
async fn group_events(
    conn: &mut PgConnection,
    keys: &[(Uuid, i64)],
) -> Result<HashMap<(Uuid, i64), Vec<GroupEventRow>>, StoreError> {
    let ids: Vec<String> = keys.iter().map(|k| k.0.to_string()).collect();
    let positions: Vec<i64> = keys.iter().map(|k| k.1).collect();
    let rows = sqlx::query(
        "SELECT q.id, q.pos, l.log_position, e.sequence, e.recorded_at, e.event_type,
                e.event_version, e.payload
           FROM unnest($1::text[], $2::bigint[]) AS q(id, pos)
           JOIN events e ON e.aggregate_type = $3 AND e.aggregate_id = q.id
           JOIN event_log l ON l.global_position = e.global_position
          WHERE l.log_position <= q.pos OR e.event_type = $4
          ORDER BY q.id, q.pos, e.sequence",
    )
    .bind(&ids)
    .bind(&positions)
    .bind(Group::TYPE)
    .bind(GroupEvent::DELETED)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: HashMap<(Uuid, i64), Vec<GroupEventRow>> = HashMap::new();
    for r in &rows {
        let id: String = r.try_get("id")?;
        let id: Uuid = id
            .parse()
            .map_err(|_| StoreError::Data(format!("group id {id:?}")))?;
        let pos: i64 = r.try_get("pos")?;
        let event_type: String = r.try_get("event_type")?;
        let event_version: String = r.try_get("event_version")?;
        let payload: Value = r.try_get("payload")?;
        out.entry((id, pos))
            .or_default()
            .push(GroupEventRow::decode(
                r.try_get("log_position")?,
                r.try_get("sequence")?,
                r.try_get("recorded_at")?,
                &id.to_string(),
                &event_type,
                &event_version,
                &payload,
            )?);
    }
    Ok(out)
}

/// Groups as they were at `position`, with their paths then. Groups not yet created by then
/// are left out; groups deleted by then are included (with `deleted_at`, and the path they
/// had when deleted). One query per level of the deepest parent chain.
pub async fn groups_at(
    conn: &mut PgConnection,
    ids: &[Uuid],
    position: i64,
) -> Result<HashMap<Uuid, HistoricalGroup>, StoreError> {
    let mut folds: HashMap<(Uuid, i64), GroupFold> = HashMap::new();
    let mut wanted: Vec<(Uuid, i64)> = ids.iter().map(|id| (*id, position)).collect();
    wanted.sort();
    wanted.dedup();
    for _ in 0..=MAX_CHAIN {
        if wanted.is_empty() {
            break;
        }
        let mut events = group_events(conn, &wanted).await?;
        let mut next = Vec::new();
        for key in wanted {
            let rows = events.remove(&key).unwrap_or_default();
            let fold = GroupFold::fold(key.0, &rows, key.1);
            if let Some(parent) = fold.group().and_then(|g| g.parent_id) {
                let parent_key = (parent, fold.chain_position(key.1));
                if !folds.contains_key(&parent_key) && parent_key != key {
                    next.push(parent_key);
                }
            }
            folds.insert(key, fold);
        }
        next.sort();
        next.dedup();
        next.retain(|k| !folds.contains_key(k));
        wanted = next;
    }
    let mut out = HashMap::new();
    for id in ids {
        let Some(fold) = folds.get(&(*id, position)) else {
            continue;
        };
        let Some(group) = fold.group() else {
            continue;
        };
        let mut group = group.clone();
        let (path, ancestors) = chain(&folds, &group, fold.chain_position(position));
        group.depth = ancestors.len() as i32;
        group.state_position = fold.chain_position(position);
        group.path = path;
        group.ancestors = ancestors;
        out.insert(*id, group);
    }
    Ok(out)
}

/// The path of `group` and its ancestors (root first), from folded parents.
fn chain(
    folds: &HashMap<(Uuid, i64), GroupFold>,
    group: &HistoricalGroup,
    at: i64,
) -> (String, Vec<Uuid>) {
    let mut names = vec![group.name.clone()];
    let mut ancestors = Vec::new();
    let mut seen = HashSet::from([group.id]);
    let mut parent = group.parent_id;
    while let Some(p) = parent {
        if !seen.insert(p) || ancestors.len() >= MAX_CHAIN {
            break;
        }
        let Some(g) = folds.get(&(p, at)).and_then(GroupFold::group) else {
            break;
        };
        names.push(g.name.clone());
        ancestors.push(p);
        parent = g.parent_id;
    }
    names.reverse();
    ancestors.reverse();
    (names.join("/"), ancestors)
}

/// One group as it was at `position` (see [`groups_at`]); `None` if not yet created then.
pub async fn group_at(
    conn: &mut PgConnection,
    id: Uuid,
    position: i64,
) -> Result<Option<HistoricalGroup>, StoreError> {
    Ok(groups_at(conn, &[id], position).await?.remove(&id))
}

/// The children of `id` at `position`, as groups then (ordered by lower-cased name, id).
pub async fn children_at(
    conn: &mut PgConnection,
    id: Uuid,
    position: i64,
) -> Result<Vec<HistoricalGroup>, StoreError> {
    let tree = tree_at(conn, position).await?;
    let ids = tree.children(id).to_vec();
    let mut groups = groups_at(conn, &ids, position).await?;
    Ok(ids.iter().filter_map(|c| groups.remove(c)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::group_fold::tests::{ev, id};
    use serde_json::json;

    #[test]
    fn the_path_follows_the_parents_at_the_chain_position() {
        let root = id(1);
        let mid = id(2);
        let leaf = id(3);
        let mk = |gid: Uuid, name: &str, parent: Option<Uuid>| {
            GroupFold::fold(
                gid,
                &[ev(
                    1,
                    1,
                    "GroupCreated",
                    json!({"group_type": "DEVICE", "name": name,
                           "parent_id": parent.map(|p| p.to_string()), "metadata": {}, "is_system": false}),
                )],
                5,
            )
        };
        let folds: HashMap<(Uuid, i64), GroupFold> = [
            ((root, 5), mk(root, "Inventory", None)),
            ((mid, 5), mk(mid, "Site", Some(root))),
            ((leaf, 5), mk(leaf, "Rack", Some(mid))),
        ]
        .into_iter()
        .collect();
        let g = folds[&(leaf, 5)].group().expect("leaf").clone();
        let (path, ancestors) = chain(&folds, &g, 5);
        assert_eq!(path, "Inventory/Site/Rack");
        assert_eq!(ancestors, vec![root, mid]);
    }
}
