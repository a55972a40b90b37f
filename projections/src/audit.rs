//! What a Group, Device or Service event changed: `changes { field before after }` of audit
//! entries. Device and Service events carry their before and after values
//! ([`inventory_changes`]).
//!
//! Events say what is new (GroupRenamed also what was), not always what was before, so the
//! before values come from folding the group's earlier events: a small, flat view of the
//! fields an auditor cares about, compared before and after each event.

use std::collections::{BTreeMap, HashMap};

use corral_domain::group::{Group, GroupEvent};
use cqrs_es::Aggregate;
use serde_json::{Map, Value};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::log::decode_stored;
use crate::StoreError;

/// One field an event changed.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    /// `name`, `parentId`, `description`, `metadata`, `rule`, `ruleEnabled`, `deleted`,
    /// `hasSysmon`, `hasSnmp`, `hasServices`, ...; for Device and Service events the stored
    /// column name (`hostname`, `os_version`, ...) or `removed`.
    pub field: std::borrow::Cow<'static, str>,
    /// The value before the event (`null` when unset).
    pub before: Value,
    /// The value after it.
    pub after: Value,
}

/// The audited fields of a group, in the order changes are listed.
const FIELDS: [&str; 11] = [
    "type",
    "name",
    "parentId",
    "description",
    "metadata",
    "rule",
    "ruleEnabled",
    "deleted",
    "hasSysmon",
    "hasSnmp",
    "hasServices",
];

/// The capability flags: false until the capabilities worker says otherwise.
const CAPABILITIES: [&str; 3] = ["hasSysmon", "hasSnmp", "hasServices"];

/// The audited view of one group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupView(BTreeMap<&'static str, Value>);

impl GroupView {
    fn get(&self, field: &'static str) -> Value {
        match self.0.get(field) {
            Some(v) => v.clone(),
            // A group is not deleted until it is: creating one changes no `deleted` field.
            // Likewise it has no capability until the worker finds one.
            None if field == "deleted" || CAPABILITIES.contains(&field) => Value::Bool(false),
            None => Value::Null,
        }
    }

    fn set(&mut self, field: &'static str, value: Value) {
        self.0.insert(field, value);
    }

    /// Applies one Group event.
    pub fn apply(&mut self, event: &GroupEvent) {
        let uuid = |id: &Option<Uuid>| id.map_or(Value::Null, |id| Value::String(id.to_string()));
        let text = |t: &Option<String>| t.clone().map_or(Value::Null, Value::String);
        match event {
            GroupEvent::GroupCreated {
                group_type,
                name,
                parent_id,
                description,
                metadata,
                is_system: _,
            } => {
                self.set("type", Value::String(group_type.as_str().to_string()));
                self.set("name", Value::String(name.clone()));
                self.set("parentId", uuid(parent_id));
                self.set("description", text(description));
                self.set("metadata", Value::Object(metadata.clone()));
            }
            GroupEvent::GroupRenamed { name, .. } => self.set("name", Value::String(name.clone())),
            GroupEvent::GroupUpdated {
                description,
                metadata,
                ..
            } => {
                self.set("description", text(description));
                self.set("metadata", Value::Object(metadata.clone()));
            }
            GroupEvent::GroupMoved { new_parent_id, .. } => {
                self.set("parentId", uuid(&Some(*new_parent_id)));
            }
            GroupEvent::GroupDeleted {} => self.set("deleted", Value::Bool(true)),
            GroupEvent::GroupRuleSet { text, enabled, .. } => {
                self.set("rule", Value::String(text.clone()));
                self.set("ruleEnabled", Value::Bool(*enabled));
            }
            GroupEvent::GroupRuleCleared { .. } => {
                self.set("rule", Value::Null);
                self.set("ruleEnabled", Value::Null);
            }
            GroupEvent::GroupCapabilitiesChanged {
                has_sysmon,
                has_snmp,
                has_services,
                ..
            } => {
                for (field, flag) in [
                    ("hasSysmon", has_sysmon),
                    ("hasSnmp", has_snmp),
                    ("hasServices", has_services),
                ] {
                    self.set(field, Value::Bool(*flag));
                }
            }
        }
    }

    /// The fields that differ from `before`, in [`FIELDS`] order.
    pub fn changes_since(&self, before: &GroupView) -> Vec<FieldChange> {
        FIELDS
            .iter()
            .filter_map(|&field| {
                let (b, a) = (before.get(field), self.get(field));
                (!same(&b, &a)).then_some(FieldChange {
                    field: field.into(),
                    before: b,
                    after: a,
                })
            })
            .collect()
    }
}

/// Equal values, with an empty metadata object equal to a missing one.
fn same(a: &Value, b: &Value) -> bool {
    let empty = |v: &Value| v.is_null() || v.as_object().is_some_and(Map::is_empty);
    a == b || (empty(a) && empty(b) && (a.is_object() || b.is_object()))
}

/// What a Device or Service event changed (`None` for other aggregates): the fields with
/// before and after as the event carries them; a first event lists every field it sets.
pub fn inventory_changes(
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    event_version: &str,
    payload: &Value,
) -> Result<Option<Vec<FieldChange>>, StoreError> {
    use corral_domain::inventory::events::{
        DeviceEvent, RecordHistory, ServiceEvent, DEVICE, SERVICE,
    };
    let changes = match aggregate_type {
        DEVICE => RecordHistory::changes_of_device(&decode_stored::<DeviceEvent>(
            aggregate_type,
            aggregate_id,
            event_type,
            event_version,
            payload,
        )?),
        SERVICE => RecordHistory::changes_of_service(&decode_stored::<ServiceEvent>(
            aggregate_type,
            aggregate_id,
            event_type,
            event_version,
            payload,
        )?),
        _ => return Ok(None),
    };
    Ok(Some(
        changes
            .into_iter()
            .map(|c| FieldChange {
                field: c.field.into(),
                before: c.before,
                after: c.after,
            })
            .collect(),
    ))
}

/// Groups folded so far, by id: the last sequence folded and the view after it. Carried from
/// page to page (an export), each group's events are read once, not from the start per page.
pub type ViewCache = HashMap<String, (i64, GroupView)>;

/// The changes of the Group events `wanted` (`(group id, sequence)` pairs), found by folding
/// each group's events up to the latest wanted sequence, in one query, starting where `views`
/// left each group.
pub async fn group_changes(
    conn: &mut PgConnection,
    wanted: &[(String, i64)],
    views: &mut ViewCache,
) -> Result<HashMap<(String, i64), Vec<FieldChange>>, StoreError> {
    let mut upto: BTreeMap<&str, i64> = BTreeMap::new();
    for (id, sequence) in wanted {
        let e = upto.entry(id.as_str()).or_insert(0);
        *e = (*e).max(*sequence);
    }
    if upto.is_empty() {
        return Ok(HashMap::new());
    }
    // Where each group's fold starts: after its cached sequence, unless an event at or before
    // that is wanted (pages out of order): then from the start.
    let mut from: BTreeMap<&str, i64> = BTreeMap::new();
    for (id, sequence) in wanted {
        let cached = views.get(id.as_str()).map_or(0, |v| v.0);
        let start = from.entry(id.as_str()).or_insert(cached);
        if *sequence <= cached {
            *start = 0;
        }
    }
    let ids: Vec<String> = upto.keys().map(|s| s.to_string()).collect();
    let limits: Vec<i64> = upto.values().copied().collect();
    let starts: Vec<i64> = upto.keys().map(|id| from[id]).collect();
    let rows = sqlx::query(
        "SELECT e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload
           FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS w(id, upto, after)
           JOIN events e ON e.aggregate_type = 'Group' AND e.aggregate_id = w.id
                        AND e.sequence > w.after AND e.sequence <= w.upto
          ORDER BY e.aggregate_id, e.sequence",
    )
    .bind(&ids)
    .bind(&limits)
    .bind(&starts)
    .fetch_all(&mut *conn)
    .await?;
    let wanted: std::collections::HashSet<(&str, i64)> =
        wanted.iter().map(|(id, s)| (id.as_str(), *s)).collect();
    let mut out = HashMap::new();
    let mut current: Option<(String, i64, GroupView)> = None;
    let finish = |current: Option<(String, i64, GroupView)>, views: &mut ViewCache| {
        if let Some((id, sequence, view)) = current {
            views.insert(id, (sequence, view));
        }
    };
    for row in &rows {
        let id: String = row.try_get("aggregate_id")?;
        let sequence: i64 = row.try_get("sequence")?;
        let event_type: String = row.try_get("event_type")?;
        let event_version: String = row.try_get("event_version")?;
        let payload: Value = row.try_get("payload")?;
        let event: GroupEvent =
            decode_stored(Group::TYPE, &id, &event_type, &event_version, &payload)?;
        if current.as_ref().is_none_or(|(c, _, _)| *c != id) {
            finish(current.take(), views);
            let start = from.get(id.as_str()).copied().unwrap_or(0);
            let view = match views.get(&id) {
                Some((s, v)) if start > 0 && *s == start => v.clone(),
                _ => GroupView::default(),
            };
            current = Some((id.clone(), start, view));
        }
        let Some((_, folded, view)) = current.as_mut() else {
            continue;
        };
        let before = view.clone();
        view.apply(&event);
        *folded = sequence;
        if wanted.contains(&(id.as_str(), sequence)) {
            out.insert((id, sequence), view.changes_since(&before));
        }
    }
    finish(current, views);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Parent ids (events carry UUIDs).
    const P1: &str = "00000000-0000-0000-0000-0000000000a1";
    const P2: &str = "00000000-0000-0000-0000-0000000000a2";

    fn fold(events: &[(&str, Value)]) -> Vec<Vec<(String, Value, Value)>> {
        let mut view = GroupView::default();
        events
            .iter()
            .map(|(t, body)| {
                let before = view.clone();
                let version = GroupEvent::current_version(t).expect("a Group event type");
                let event: GroupEvent =
                    decode_stored(Group::TYPE, "g", t, version, &json!({ *t: body }))
                        .expect("a valid event");
                view.apply(&event);
                view.changes_since(&before)
                    .into_iter()
                    .map(|c| (c.field.to_string(), c.before, c.after))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn each_event_lists_what_it_changed_with_the_value_before() {
        let changes = fold(&[
            (
                "GroupCreated",
                json!({"group_type": "DEVICE", "name": "a", "parent_id": P1,
                       "description": null, "metadata": {}, "is_system": false}),
            ),
            ("GroupRenamed", json!({"name": "b", "previous_name": "a"})),
            (
                "GroupUpdated",
                json!({"description": "d", "metadata": {"k": "v"}, "previous": null}),
            ),
            (
                "GroupMoved",
                json!({"previous_parent_id": P1, "new_parent_id": P2}),
            ),
            (
                "GroupRuleSet",
                json!({"rule": {}, "text": "os:linux", "enabled": true, "rule_version": 1,
                       "refs": []}),
            ),
            ("GroupRuleCleared", json!({"rule_version": 1})),
            ("GroupDeleted", json!({})),
        ]);
        assert_eq!(
            changes[0].iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
            ["type", "name", "parentId"],
            "empty description and metadata, and not being deleted, are not changes"
        );
        assert_eq!(changes[1], [("name".into(), json!("a"), json!("b"))]);
        assert_eq!(
            changes[2],
            [
                ("description".into(), json!(null), json!("d")),
                ("metadata".into(), json!({}), json!({"k": "v"})),
            ]
        );
        assert_eq!(changes[3], [("parentId".into(), json!(P1), json!(P2))]);
        assert_eq!(
            changes[4],
            [
                ("rule".into(), json!(null), json!("os:linux")),
                ("ruleEnabled".into(), json!(null), json!(true)),
            ]
        );
        assert_eq!(
            changes[5],
            [
                ("rule".into(), json!("os:linux"), json!(null)),
                ("ruleEnabled".into(), json!(true), json!(null)),
            ]
        );
        assert_eq!(changes[6], [("deleted".into(), json!(false), json!(true))]);
    }

    #[test]
    fn capability_changes_list_only_the_flags_that_flipped() {
        let flags = |sysmon: bool, snmp: bool| {
            json!({"has_sysmon": sysmon, "has_snmp": snmp, "has_services": false,
                   "previous": {"has_sysmon": false, "has_snmp": false, "has_services": false}})
        };
        let changes = fold(&[
            (
                "GroupCreated",
                json!({"group_type": "DEVICE", "name": "a", "parent_id": P1,
                       "description": null, "metadata": {}, "is_system": false}),
            ),
            ("GroupCapabilitiesChanged", flags(true, false)),
            ("GroupCapabilitiesChanged", flags(false, true)),
        ]);
        assert!(
            !changes[0].iter().any(|c| c.0.starts_with("has")),
            "a new group has no capability, and that is no change"
        );
        assert_eq!(
            changes[1],
            [("hasSysmon".into(), json!(false), json!(true))]
        );
        assert_eq!(
            changes[2],
            [
                ("hasSysmon".into(), json!(true), json!(false)),
                ("hasSnmp".into(), json!(false), json!(true)),
            ]
        );
    }
}
