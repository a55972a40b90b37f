//! The pure part of the group tree projection: events folded over the affected nodes, with no
//! database. The store loads the nodes a batch touches, folds, and writes the dirty ones.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use corral_domain::group::GroupEvent;
use serde_json::Value;
use uuid::Uuid;

use crate::log::EventRecord;
use crate::StoreError;

/// One group as the read model stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Group id.
    pub id: Uuid,
    /// `DEVICE` or `SERVICE`.
    pub group_type: String,
    /// Parent group (`None` for a root).
    pub parent_id: Option<Uuid>,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Metadata object.
    pub metadata: Value,
    /// System root?
    pub is_system: bool,
    /// Levels below the root.
    pub depth: i32,
    /// `Inventory/Site-A/Core`.
    pub path: String,
    /// Aggregate version.
    pub version: i64,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
    /// Ancestor ids, root first, without the node itself.
    pub ancestors: Vec<Uuid>,
    /// `lower(name)` as the database folds case; read from the database (the fold leaves it
    /// as loaded, and the write computes it).
    pub name_key: String,
    /// `lower(path)`, likewise.
    pub path_key: String,
}

/// Nodes touched by a batch and what must be written back.
#[derive(Debug, Default)]
pub struct TreeFold {
    /// Every loaded or created node.
    pub nodes: HashMap<Uuid, Node>,
    /// Nodes whose row changed.
    pub dirty: HashSet<Uuid>,
    /// Nodes whose ancestors changed (closure rows to rewrite).
    pub closure_dirty: HashSet<Uuid>,
    /// Nodes deleted.
    pub deleted: HashSet<Uuid>,
    /// Description/metadata changes of groups that were not loaded (written as UPDATEs).
    pub patches: HashMap<Uuid, Patch>,
}

/// A `GroupUpdated` for a group the batch did not need to load.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// New description.
    pub description: Option<String>,
    /// New metadata.
    pub metadata: Value,
    /// Aggregate version after the change.
    pub version: i64,
    /// When it changed.
    pub updated_at: DateTime<Utc>,
}

/// Whether an event can be applied without the group's current row.
pub fn applies_without_row(event: &GroupEvent) -> bool {
    match event {
        GroupEvent::GroupCreated { .. }
        | GroupEvent::GroupUpdated { .. }
        | GroupEvent::GroupDeleted { .. } => true,
        GroupEvent::GroupRenamed { .. }
        | GroupEvent::GroupMoved { .. }
        | GroupEvent::GroupRuleSet { .. }
        | GroupEvent::GroupRuleCleared { .. }
        | GroupEvent::GroupCapabilitiesChanged { .. } => false,
    }
}

/// What the projector must load for an event: the parent it names (creates and moves), and
/// whether the group's subtree moves with it (renames and moves).
pub fn anchors(event: &GroupEvent) -> (Option<Uuid>, bool) {
    match event {
        GroupEvent::GroupCreated { parent_id, .. } => (*parent_id, false),
        GroupEvent::GroupMoved { new_parent_id, .. } => (Some(*new_parent_id), true),
        GroupEvent::GroupRenamed { .. } => (None, true),
        GroupEvent::GroupUpdated { .. }
        | GroupEvent::GroupDeleted { .. }
        | GroupEvent::GroupRuleSet { .. }
        | GroupEvent::GroupRuleCleared { .. }
        | GroupEvent::GroupCapabilitiesChanged { .. } => (None, false),
    }
}

impl TreeFold {
    /// Applies one Group event.
    pub fn apply(&mut self, event: &EventRecord) -> Result<(), StoreError> {
        self.apply_decoded(event, event.decode()?)
    }

    /// Applies one Group event already decoded from `event` (the projector decodes each
    /// event once, for [`anchors`] and for the fold).
    pub fn apply_decoded(
        &mut self,
        event: &EventRecord,
        decoded: GroupEvent,
    ) -> Result<(), StoreError> {
        let id: Uuid = event
            .aggregate_id
            .parse()
            .map_err(|_| StoreError::Data(format!("group id {:?}", event.aggregate_id)))?;
        let unknown = || StoreError::Data(format!("{} for unknown group {id}", event.event_type));
        match decoded {
            GroupEvent::GroupCreated {
                group_type,
                name,
                parent_id,
                description,
                metadata,
                is_system,
            } => {
                let node = Node {
                    id,
                    group_type: group_type.as_str().to_string(),
                    parent_id,
                    name,
                    description,
                    metadata: Value::Object(metadata),
                    is_system,
                    depth: 0,
                    path: String::new(),
                    version: event.sequence,
                    created_at: event.recorded_at,
                    updated_at: event.recorded_at,
                    ancestors: vec![],
                    name_key: String::new(),
                    path_key: String::new(),
                };
                self.nodes.insert(id, node);
                self.deleted.remove(&id);
                // A new group has no children yet: only its own position needs computing.
                self.place(id)?;
            }
            GroupEvent::GroupUpdated {
                description,
                metadata,
                ..
            } => match self.nodes.get_mut(&id) {
                None => {
                    self.patches.insert(
                        id,
                        Patch {
                            description,
                            metadata: Value::Object(metadata),
                            version: event.sequence,
                            updated_at: event.recorded_at,
                        },
                    );
                }
                Some(node) => {
                    node.description = description;
                    node.metadata = Value::Object(metadata);
                    self.touch(id, event);
                }
            },
            GroupEvent::GroupDeleted {} => {
                self.nodes.remove(&id);
                self.dirty.remove(&id);
                self.closure_dirty.remove(&id);
                self.patches.remove(&id);
                self.deleted.insert(id);
            }
            GroupEvent::GroupRenamed { name, .. } => {
                self.nodes.get_mut(&id).ok_or_else(unknown)?.name = name;
                self.touch(id, event);
                self.recompute_subtree(id)?;
            }
            GroupEvent::GroupMoved { new_parent_id, .. } => {
                self.nodes.get_mut(&id).ok_or_else(unknown)?.parent_id = Some(new_parent_id);
                self.touch(id, event);
                self.recompute_subtree(id)?;
            }
            // Rule changes move only the version (clients pass it as expectedVersion), and
            // count as a change (`updated_at`).
            GroupEvent::GroupRuleSet { .. } | GroupEvent::GroupRuleCleared { .. } => {
                if !self.nodes.contains_key(&id) {
                    return Err(unknown());
                }
                self.touch(id, event);
            }
            // Capability flags (the capabilities read model) move the version too, or a
            // client's expectedVersion would conflict with a version it cannot read; no field
            // of the row changed, so `updated_at` stays (as in time travel).
            GroupEvent::GroupCapabilitiesChanged { .. } => {
                if let Some(node) = self.nodes.get_mut(&id) {
                    node.version = event.sequence;
                    self.dirty.insert(id);
                }
            }
        }
        Ok(())
    }

    /// Moves a loaded node's version and `updated_at` to `event`'s and marks it dirty.
    fn touch(&mut self, id: Uuid, event: &EventRecord) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.version = event.sequence;
            node.updated_at = event.recorded_at;
            self.dirty.insert(id);
        }
    }

    /// Computes depth, path and ancestors of `id` from its parent.
    fn place(&mut self, id: Uuid) -> Result<(), StoreError> {
        let parent = match self.nodes.get(&id).and_then(|n| n.parent_id) {
            Some(p) => {
                let parent = self.nodes.get(&p).ok_or_else(|| {
                    StoreError::Data(format!("group {id} has unknown parent {p}"))
                })?;
                let mut ancestors = parent.ancestors.clone();
                ancestors.push(p);
                Some((parent.depth + 1, parent.path.clone(), ancestors))
            }
            None => None,
        };
        if let Some(node) = self.nodes.get_mut(&id) {
            match parent {
                Some((depth, path, ancestors)) => {
                    node.depth = depth;
                    node.path = format!("{path}/{}", node.name);
                    node.ancestors = ancestors;
                }
                None => {
                    node.depth = 0;
                    node.path = node.name.clone();
                    node.ancestors.clear();
                }
            }
        }
        self.dirty.insert(id);
        self.closure_dirty.insert(id);
        Ok(())
    }

    /// Recomputes `root` and every loaded descendant (after a rename or a move).
    fn recompute_subtree(&mut self, root: Uuid) -> Result<(), StoreError> {
        let mut children: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for node in self.nodes.values() {
            if let Some(p) = node.parent_id {
                children.entry(p).or_default().push(node.id);
            }
        }
        let mut queue = VecDeque::from([root]);
        let mut visited = HashSet::new();
        while let Some(id) = queue.pop_front() {
            if !visited.insert(id) {
                return Err(StoreError::Data(format!("group {id} is its own ancestor")));
            }
            self.place(id)?;
            queue.extend(children.get(&id).into_iter().flatten().copied());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(id: u128, seq: i64, event_type: &str, body: Value) -> EventRecord {
        EventRecord {
            global_position: seq,
            transaction_id: 1,
            event_id: Uuid::from_u128(1000 + id),
            aggregate_type: "Group".into(),
            aggregate_id: Uuid::from_u128(id).to_string(),
            sequence: seq,
            event_type: event_type.into(),
            event_version: "1".into(),
            payload: json!({ event_type: body }),
            metadata: json!({}),
            recorded_at: Utc::now(),
        }
    }

    fn created(id: u128, parent: Option<u128>, name: &str) -> EventRecord {
        event(
            id,
            1,
            "GroupCreated",
            json!({
                "group_type": "DEVICE", "name": name,
                "parent_id": parent.map(|p| Uuid::from_u128(p).to_string()),
                "description": null, "metadata": {}, "is_system": parent.is_none()
            }),
        )
    }

    fn fold(events: &[EventRecord]) -> TreeFold {
        let mut f = TreeFold::default();
        for e in events {
            f.apply(e).expect("apply");
        }
        f
    }

    fn node(f: &TreeFold, id: u128) -> &Node {
        &f.nodes[&Uuid::from_u128(id)]
    }

    #[test]
    fn created_groups_get_paths_depths_and_ancestors() {
        let f = fold(&[
            created(1, None, "Inventory"),
            created(2, Some(1), "Site-A"),
            created(3, Some(2), "Core"),
        ]);
        assert_eq!(node(&f, 3).path, "Inventory/Site-A/Core");
        assert_eq!(node(&f, 3).depth, 2);
        assert_eq!(
            node(&f, 3).ancestors,
            vec![Uuid::from_u128(1), Uuid::from_u128(2)]
        );
    }

    #[test]
    fn rename_and_move_rewrite_the_whole_subtree() {
        let f = fold(&[
            created(1, None, "Inventory"),
            created(2, Some(1), "Site-A"),
            created(3, Some(2), "Core"),
            created(4, Some(1), "Site-B"),
            event(
                2,
                2,
                "GroupRenamed",
                json!({"name": "HQ", "previous_name": "Site-A"}),
            ),
            event(
                2,
                3,
                "GroupMoved",
                json!({"previous_parent_id": Uuid::from_u128(1), "new_parent_id": Uuid::from_u128(4)}),
            ),
        ]);
        assert_eq!(node(&f, 3).path, "Inventory/Site-B/HQ/Core");
        assert_eq!(node(&f, 3).depth, 3);
        assert_eq!(
            node(&f, 3).ancestors,
            vec![Uuid::from_u128(1), Uuid::from_u128(4), Uuid::from_u128(2)]
        );
        assert_eq!(node(&f, 2).version, 3);
    }

    #[test]
    fn delete_removes_the_node_and_marks_it() {
        let f = fold(&[
            created(1, None, "Inventory"),
            created(2, Some(1), "Gone"),
            event(2, 2, "GroupDeleted", json!({})),
        ]);
        assert!(!f.nodes.contains_key(&Uuid::from_u128(2)));
        assert!(f.deleted.contains(&Uuid::from_u128(2)));
        assert!(!f.dirty.contains(&Uuid::from_u128(2)));
    }

    #[test]
    fn updates_of_unloaded_groups_become_patches_and_deletes_need_no_row() {
        let mut f = TreeFold::default();
        f.apply(&event(
            5,
            3,
            "GroupUpdated",
            json!({"description": "d", "metadata": {"k": "v"}}),
        ))
        .expect("patch");
        f.apply(&event(
            5,
            4,
            "GroupUpdated",
            json!({"description": "e", "metadata": {}}),
        ))
        .expect("patch");
        let patch = &f.patches[&Uuid::from_u128(5)];
        assert_eq!(
            (patch.description.as_deref(), patch.version),
            (Some("e"), 4)
        );
        f.apply(&event(5, 5, "GroupDeleted", json!({})))
            .expect("delete");
        assert!(f.patches.is_empty());
        assert!(f.deleted.contains(&Uuid::from_u128(5)));
    }

    #[test]
    fn a_cycle_is_an_error_not_an_endless_loop() {
        let mut f = fold(&[
            created(1, None, "Inventory"),
            created(2, Some(1), "A"),
            created(3, Some(2), "B"),
        ]);
        let moved = event(
            2,
            2,
            "GroupMoved",
            json!({"previous_parent_id": Uuid::from_u128(1), "new_parent_id": Uuid::from_u128(3)}),
        );
        assert!(f.apply(&moved).is_err());
    }

    #[test]
    fn capability_changes_move_only_the_version() {
        let mut f = fold(&[created(1, None, "Inventory"), created(2, Some(1), "Edge")]);
        let before = node(&f, 2).clone();
        f.apply(&event(
            2,
            2,
            "GroupCapabilitiesChanged",
            json!({"has_sysmon": true, "has_snmp": false, "has_services": false,
                   "previous": {"has_sysmon": false, "has_snmp": false, "has_services": false}}),
        ))
        .expect("apply");
        let after = node(&f, 2);
        assert_eq!(after.version, 2);
        assert_eq!(
            Node {
                version: before.version,
                ..after.clone()
            },
            before,
            "nothing but the version changes"
        );
        assert!(f.dirty.contains(&Uuid::from_u128(2)));
    }

    #[test]
    fn events_for_unloaded_groups_are_errors_not_silently_skipped() {
        let mut f = TreeFold::default();
        assert!(f
            .apply(&event(9, 2, "GroupRenamed", json!({"name": "x"})))
            .is_err());
    }
}
