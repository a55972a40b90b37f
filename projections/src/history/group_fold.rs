//! One group as it was at a position, folded from its Group events.

use chrono::{DateTime, Utc};
use corral_domain::group::{Group, GroupCapabilities, GroupEvent};
use cqrs_es::Aggregate;
use serde_json::Value;
use uuid::Uuid;

use crate::log::decode_stored;
use crate::StoreError;

/// A group's rule as it was.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoricalRule {
    /// The normalized text form.
    pub text: String,
    /// The canonical JSON form.
    pub json: Value,
    /// Whether workers evaluated it.
    pub enabled: bool,
    /// The rule's version (1, 2, ... per group).
    pub version: i64,
}

/// A group as it was at a position.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoricalGroup {
    /// The group's id.
    pub id: Uuid,
    /// `DEVICE` or `SERVICE`.
    pub group_type: String,
    /// Its name then.
    pub name: String,
    /// Its parent then (`None` for a root).
    pub parent_id: Option<Uuid>,
    /// Its description then.
    pub description: Option<String>,
    /// Its metadata then.
    pub metadata: Value,
    /// A system root.
    pub is_system: bool,
    /// The aggregate version then (the sequence of its last event at or before the position).
    pub version: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed at or before the position (as the live tree counts changes).
    pub updated_at: DateTime<Utc>,
    /// Its rule then.
    pub rule: Option<HistoricalRule>,
    /// Its capability flags then (all false before its first `GroupCapabilitiesChanged`).
    pub capabilities: GroupCapabilities,
    /// When it was deleted, if that was at or before the position.
    pub deleted_at: Option<DateTime<Utc>>,
    /// When it was deleted, if that was after the position ("deleted since").
    pub deleted_since: Option<DateTime<Utc>>,
    /// Names from the root down, joined by `/`. For a group deleted at or before the position,
    /// the path it had when it was deleted.
    pub path: String,
    /// Levels below the root.
    pub depth: i32,
    /// Its ancestors from the root down to the parent (the chain `path` was built from).
    pub ancestors: Vec<Uuid>,
    /// The position asked for.
    pub position: i64,
    /// The position its path and membership are read at: `position`, or just before its
    /// deletion for a group deleted by then (its members as they were when it was deleted,
    /// not as the purge that followed left them).
    pub state_position: i64,
}

/// One Group event, decoded for the folds.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupEventRow {
    /// Its public log position.
    pub position: i64,
    /// The aggregate sequence (the group's version after it).
    pub sequence: i64,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The event, upcast to the version this code reads.
    pub event: GroupEvent,
}

impl GroupEventRow {
    /// Decodes a stored Group event (upcasting it first).
    pub fn decode(
        position: i64,
        sequence: i64,
        recorded_at: DateTime<Utc>,
        group: &str,
        event_type: &str,
        event_version: &str,
        payload: &Value,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            position,
            sequence,
            recorded_at,
            event: decode_stored(Group::TYPE, group, event_type, event_version, payload)?,
        })
    }
}

/// Folds one group's events (in sequence order) as of a position.
#[derive(Debug, Clone, Default)]
pub struct GroupFold {
    group: Option<HistoricalGroup>,
    /// The position of its `GroupDeleted`, when at or before the position.
    deleted_position: Option<i64>,
}

impl GroupFold {
    /// Folds `events` of group `id` (any order of positions; sequence order expected) as of
    /// `position`: events after it only tell whether the group was deleted since.
    pub fn fold(id: Uuid, events: &[GroupEventRow], position: i64) -> Self {
        let mut fold = Self::default();
        for e in events {
            fold.apply(id, e, position);
        }
        if let Some(g) = fold.group.as_mut() {
            g.position = position;
        }
        fold
    }

    /// Applies one event.
    fn apply(&mut self, id: Uuid, e: &GroupEventRow, position: i64) {
        if e.position > position {
            let deleted = match &e.event {
                GroupEvent::GroupDeleted {} => true,
                GroupEvent::GroupCreated { .. }
                | GroupEvent::GroupRenamed { .. }
                | GroupEvent::GroupUpdated { .. }
                | GroupEvent::GroupMoved { .. }
                | GroupEvent::GroupRuleSet { .. }
                | GroupEvent::GroupRuleCleared { .. }
                | GroupEvent::GroupCapabilitiesChanged { .. } => false,
            };
            if let Some(g) = self.group.as_mut().filter(|_| deleted) {
                g.deleted_since = Some(e.recorded_at);
            }
            return;
        }
        if let GroupEvent::GroupCreated {
            group_type,
            name,
            parent_id,
            description,
            metadata,
            is_system,
        } = &e.event
        {
            self.group = Some(HistoricalGroup {
                id,
                group_type: group_type.as_str().to_string(),
                name: name.clone(),
                parent_id: *parent_id,
                description: description.clone(),
                metadata: Value::Object(metadata.clone()),
                is_system: *is_system,
                version: e.sequence,
                created_at: e.recorded_at,
                updated_at: e.recorded_at,
                rule: None,
                capabilities: GroupCapabilities::default(),
                deleted_at: None,
                deleted_since: None,
                path: String::new(),
                depth: 0,
                ancestors: Vec::new(),
                position,
                state_position: position,
            });
            self.deleted_position = None;
            return;
        }
        let Some(g) = self.group.as_mut() else {
            return;
        };
        g.version = e.sequence;
        match &e.event {
            // Handled above.
            GroupEvent::GroupCreated { .. } => return,
            GroupEvent::GroupRenamed { name, .. } => g.name = name.clone(),
            // Only the new values: the event carries the previous ones too.
            GroupEvent::GroupUpdated {
                description,
                metadata,
                ..
            } => {
                g.description = description.clone();
                g.metadata = Value::Object(metadata.clone());
            }
            GroupEvent::GroupMoved { new_parent_id, .. } => g.parent_id = Some(*new_parent_id),
            GroupEvent::GroupRuleSet {
                rule,
                text,
                enabled,
                rule_version,
                ..
            } => {
                g.rule = Some(HistoricalRule {
                    text: text.clone(),
                    json: rule.clone(),
                    enabled: *enabled,
                    version: *rule_version as i64,
                });
            }
            GroupEvent::GroupRuleCleared { .. } => g.rule = None,
            // Computed flags, not an edit: like the live tree, `updated_at` stays.
            GroupEvent::GroupCapabilitiesChanged {
                has_sysmon,
                has_snmp,
                has_services,
                ..
            } => {
                g.capabilities = GroupCapabilities {
                    has_sysmon: *has_sysmon,
                    has_snmp: *has_snmp,
                    has_services: *has_services,
                };
                return;
            }
            GroupEvent::GroupDeleted {} => {
                g.deleted_at = Some(e.recorded_at);
                self.deleted_position = Some(e.position);
                return;
            }
        }
        g.updated_at = e.recorded_at;
    }

    /// The group, if it had been created by the position.
    pub fn group(&self) -> Option<&HistoricalGroup> {
        self.group.as_ref()
    }

    /// The position its path is computed at: the position asked for, or just before its
    /// deletion when it was deleted by then.
    pub(super) fn chain_position(&self, position: i64) -> i64 {
        self.deleted_position
            .map_or(position, |d| (d - 1).min(position))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    pub(crate) fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0)
            .single()
            .expect("time")
    }

    pub(crate) fn ev(position: i64, sequence: i64, event_type: &str, body: Value) -> GroupEventRow {
        let version = GroupEvent::current_version(event_type).expect("a Group event type");
        GroupEventRow::decode(
            position,
            sequence,
            t(position),
            "g",
            event_type,
            version,
            &json!({ event_type: body }),
        )
        .expect("a valid event")
    }

    pub(crate) fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn history() -> Vec<GroupEventRow> {
        vec![
            ev(
                10,
                1,
                "GroupCreated",
                json!({"group_type": "DEVICE", "name": "A", "parent_id": id(1).to_string(),
                       "description": null, "metadata": {}, "is_system": false}),
            ),
            ev(
                20,
                2,
                "GroupRenamed",
                json!({"name": "B", "previous_name": "A"}),
            ),
            ev(
                30,
                3,
                "GroupUpdated",
                json!({"description": "d", "metadata": {"k": 1}, "previous": {"description": null, "metadata": {}}}),
            ),
            ev(
                40,
                4,
                "GroupMoved",
                json!({"previous_parent_id": id(1).to_string(), "new_parent_id": id(2).to_string()}),
            ),
            ev(
                50,
                5,
                "GroupRuleSet",
                json!({"rule": {"op": "x"}, "text": "hostname:a%", "enabled": true, "rule_version": 1, "refs": []}),
            ),
            ev(60, 6, "GroupRuleCleared", json!({"rule_version": 1})),
            ev(70, 7, "GroupDeleted", json!({})),
        ]
    }

    #[test]
    fn a_group_folds_as_of_each_position() {
        let g = id(9);
        let events = history();
        assert!(GroupFold::fold(g, &events, 9).group().is_none());
        let at = |p| {
            GroupFold::fold(g, &events, p)
                .group()
                .cloned()
                .expect("group")
        };
        let created = at(10);
        assert_eq!(
            (created.name.as_str(), created.parent_id, created.version),
            ("A", Some(id(1)), 1)
        );
        assert_eq!(created.deleted_since, Some(t(70)));
        assert_eq!(created.deleted_at, None);
        assert_eq!(at(25).name, "B");
        assert_eq!(at(25).updated_at, t(20));
        assert_eq!(at(35).description.as_deref(), Some("d"));
        assert_eq!(at(35).metadata, json!({"k": 1}));
        assert_eq!(at(45).parent_id, Some(id(2)));
        let ruled = at(55).rule.expect("rule");
        assert_eq!(
            (ruled.text.as_str(), ruled.enabled, ruled.version),
            ("hostname:a%", true, 1)
        );
        assert_eq!(at(65).rule, None);
        assert_eq!(at(65).version, 6);
        let deleted = GroupFold::fold(g, &events, 80);
        let group = deleted.group().expect("deleted group");
        assert_eq!(group.deleted_at, Some(t(70)));
        assert_eq!(group.deleted_since, None);
        assert_eq!(group.updated_at, t(60));
        assert_eq!(deleted.chain_position(80), 69);
        assert_eq!(GroupFold::fold(g, &events, 65).chain_position(65), 65);
    }

    #[test]
    fn capabilities_fold_as_of_each_position_without_touching_updated_at() {
        let g = id(9);
        let changed = |position, sequence, sysmon: bool, previous: bool| {
            ev(
                position,
                sequence,
                "GroupCapabilitiesChanged",
                json!({"has_sysmon": sysmon, "has_snmp": false, "has_services": true,
                       "previous": {"has_sysmon": previous, "has_snmp": false, "has_services": false}}),
            )
        };
        let events = vec![
            history()[0].clone(),
            changed(15, 2, true, false),
            changed(25, 3, false, true),
        ];
        let at = |p| {
            GroupFold::fold(g, &events, p)
                .group()
                .cloned()
                .expect("group")
        };
        assert_eq!(at(10).capabilities, GroupCapabilities::default());
        let first = at(15);
        assert_eq!(
            first.capabilities,
            GroupCapabilities {
                has_sysmon: true,
                has_snmp: false,
                has_services: true
            }
        );
        assert_eq!((first.version, first.updated_at), (2, t(10)));
        assert!(!at(30).capabilities.has_sysmon);
        assert_eq!(at(30).version, 3);
    }
}
