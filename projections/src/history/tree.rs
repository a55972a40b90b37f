//! The tree's shape at a position: which groups were alive, under which parent, named how.

use std::collections::{HashMap, HashSet};

use corral_domain::group::{Group, GroupEvent};
use cqrs_es::Aggregate;
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::log::decode_stored;
use crate::StoreError;

/// A structural change to the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEvent {
    /// A group was created.
    Created {
        /// The group.
        id: Uuid,
        /// Its parent.
        parent: Option<Uuid>,
        /// Its name.
        name: String,
    },
    /// A group was renamed.
    Renamed {
        /// The group.
        id: Uuid,
        /// The new name.
        name: String,
    },
    /// A group moved.
    Moved {
        /// The group.
        id: Uuid,
        /// The new parent.
        parent: Uuid,
    },
    /// A group was deleted.
    Deleted {
        /// The group.
        id: Uuid,
    },
}

/// One group of a [`TreeFold`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeNode {
    /// Its parent then.
    pub parent: Option<Uuid>,
    /// Its name then.
    pub name: String,
}

/// The tree of groups alive at a position, folded from [`TreeEvent`]s in log order.
#[derive(Debug, Clone, Default)]
pub struct TreeFold {
    nodes: HashMap<Uuid, TreeNode>,
    children: HashMap<Uuid, Vec<Uuid>>,
}

impl TreeFold {
    /// Folds structural events in log order.
    pub fn from_events(events: impl IntoIterator<Item = TreeEvent>) -> Self {
        let mut nodes: HashMap<Uuid, TreeNode> = HashMap::new();
        for e in events {
            match e {
                TreeEvent::Created { id, parent, name } => {
                    nodes.insert(id, TreeNode { parent, name });
                }
                TreeEvent::Renamed { id, name } => {
                    if let Some(n) = nodes.get_mut(&id) {
                        n.name = name;
                    }
                }
                TreeEvent::Moved { id, parent } => {
                    if let Some(n) = nodes.get_mut(&id) {
                        n.parent = Some(parent);
                    }
                }
                TreeEvent::Deleted { id } => {
                    nodes.remove(&id);
                }
            }
        }
        let mut children: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for (id, n) in &nodes {
            if let Some(p) = n.parent {
                children.entry(p).or_default().push(*id);
            }
        }
        for list in children.values_mut() {
            list.sort_by_cached_key(|id| {
                let name = nodes.get(id).map(|n| n.name.to_lowercase());
                (name, *id)
            });
        }
        Self { nodes, children }
    }

    /// The group, if alive at the position.
    pub fn node(&self, id: Uuid) -> Option<&TreeNode> {
        self.nodes.get(&id)
    }

    /// Groups alive at the position.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// No group was alive.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The children of `id` then, ordered by lower-cased name, then id.
    pub fn children(&self, id: Uuid) -> &[Uuid] {
        self.children.get(&id).map_or(&[], Vec::as_slice)
    }

    /// `id` and its descendants then, each with its distance from `id` (0 for itself);
    /// empty if `id` was not alive.
    pub fn subtree(&self, id: Uuid) -> Vec<(Uuid, i32)> {
        if !self.nodes.contains_key(&id) {
            return Vec::new();
        }
        let mut out = vec![(id, 0)];
        let mut seen = HashSet::from([id]);
        let mut i = 0;
        while i < out.len() {
            let (g, depth) = out[i];
            for c in self.children(g) {
                if seen.insert(*c) {
                    out.push((*c, depth + 1));
                }
            }
            i += 1;
        }
        out
    }
}

impl TreeEvent {
    /// The Group event types that change the tree's shape (the ones [`TreeEvent::of`] maps to
    /// `Some`); [`tree_at`] reads only these.
    pub const GROUP_EVENT_TYPES: [&'static str; 4] = [
        GroupEvent::CREATED,
        GroupEvent::RENAMED,
        GroupEvent::MOVED,
        GroupEvent::DELETED,
    ];

    /// The structural change a Group event of group `id` makes, if any.
    pub fn of(id: Uuid, event: GroupEvent) -> Option<Self> {
        match event {
            GroupEvent::GroupCreated {
                parent_id, name, ..
            } => Some(TreeEvent::Created {
                id,
                parent: parent_id,
                name,
            }),
            GroupEvent::GroupRenamed { name, .. } => Some(TreeEvent::Renamed { id, name }),
            GroupEvent::GroupMoved { new_parent_id, .. } => Some(TreeEvent::Moved {
                id,
                parent: new_parent_id,
            }),
            GroupEvent::GroupDeleted {} => Some(TreeEvent::Deleted { id }),
            GroupEvent::GroupUpdated { .. }
            | GroupEvent::GroupRuleSet { .. }
            | GroupEvent::GroupRuleCleared { .. }
            | GroupEvent::GroupCapabilitiesChanged { .. } => None,
        }
    }
}

/// The tree as it was at `position`: every structural Group event up to it, in one query.
/// A creation's metadata is left out of the read (the tree needs only names and parents).
pub async fn tree_at(conn: &mut PgConnection, position: i64) -> Result<TreeFold, StoreError> {
    let rows = sqlx::query(
        "SELECT e.aggregate_id, e.event_type, e.event_version,
                CASE WHEN e.event_type = $3
                     THEN jsonb_set(e.payload, ARRAY[e.event_type, 'metadata'], '{}'::jsonb)
                     ELSE e.payload END AS payload
           FROM events e JOIN event_log l ON l.global_position = e.global_position
          WHERE e.aggregate_type = $4
            AND e.event_type = ANY($2::text[])
            AND l.log_position <= $1
          ORDER BY l.log_position",
    )
    .bind(position)
    .bind(TreeEvent::GROUP_EVENT_TYPES.as_slice())
    .bind(GroupEvent::CREATED)
    .bind(Group::TYPE)
    .fetch_all(&mut *conn)
    .await?;
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        let aggregate_id: String = r.try_get("aggregate_id")?;
        let id: Uuid = aggregate_id
            .parse()
            .map_err(|_| StoreError::Data(format!("group id {aggregate_id:?}")))?;
        let event_type: String = r.try_get("event_type")?;
        let event_version: String = r.try_get("event_version")?;
        let payload: Value = r.try_get("payload")?;
        let event: GroupEvent = decode_stored(
            Group::TYPE,
            &aggregate_id,
            &event_type,
            &event_version,
            &payload,
        )?;
        events.extend(TreeEvent::of(id, event));
    }
    Ok(TreeFold::from_events(events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::group_fold::tests::{ev, id};
    use serde_json::json;

    #[test]
    fn the_tree_folds_creates_renames_moves_and_deletes() {
        let (r, a, b, c) = (id(1), id(2), id(3), id(4));
        let tree = TreeFold::from_events(vec![
            TreeEvent::Created {
                id: r,
                parent: None,
                name: "Inventory".into(),
            },
            TreeEvent::Created {
                id: a,
                parent: Some(r),
                name: "b-site".into(),
            },
            TreeEvent::Created {
                id: b,
                parent: Some(r),
                name: "A-site".into(),
            },
            TreeEvent::Created {
                id: c,
                parent: Some(a),
                name: "rack".into(),
            },
            TreeEvent::Renamed {
                id: a,
                name: "z-site".into(),
            },
            TreeEvent::Moved { id: c, parent: b },
        ]);
        assert_eq!(tree.children(r), &[b, a]);
        assert_eq!(tree.subtree(r), vec![(r, 0), (b, 1), (a, 1), (c, 2)]);
        assert_eq!(tree.subtree(a), vec![(a, 0)]);
        let deleted = TreeFold::from_events(vec![
            TreeEvent::Created {
                id: r,
                parent: None,
                name: "Inventory".into(),
            },
            TreeEvent::Created {
                id: a,
                parent: Some(r),
                name: "a".into(),
            },
            TreeEvent::Deleted { id: a },
        ]);
        assert!(deleted.node(a).is_none());
        assert!(deleted.subtree(a).is_empty());
        assert_eq!(deleted.subtree(r), vec![(r, 0)]);
        assert_eq!(deleted.len(), 1);
    }

    #[test]
    fn the_types_tree_at_reads_are_exactly_the_structural_ones() {
        let events = [
            ev(
                1,
                1,
                "GroupCreated",
                json!({"group_type": "DEVICE", "name": "a",
                "parent_id": null, "description": null, "metadata": {}, "is_system": true}),
            ),
            ev(
                2,
                2,
                "GroupRenamed",
                json!({"name": "b", "previous_name": "a"}),
            ),
            ev(
                3,
                3,
                "GroupUpdated",
                json!({"description": null, "metadata": {}, "previous": null}),
            ),
            ev(
                4,
                4,
                "GroupMoved",
                json!({"previous_parent_id": id(1), "new_parent_id": id(2)}),
            ),
            ev(5, 5, "GroupRuleCleared", json!({"rule_version": 1})),
            ev(6, 6, "GroupDeleted", json!({})),
        ];
        for e in events {
            let name = e.event.name();
            assert_eq!(
                TreeEvent::of(id(9), e.event).is_some(),
                TreeEvent::GROUP_EVENT_TYPES.contains(&name),
                "{name}"
            );
        }
    }
}
