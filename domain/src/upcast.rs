//! Upcasting: turning a stored event of an older version into the current shape before it is
//! deserialized into a Rust event type.
//!
//! Events are immutable (the sequencer's hash chain covers their stored bytes), so a change to
//! an event's shape bumps its `event_version` and adds a step here that rewrites the older
//! payload, on the raw JSON, into the next version. [`upcast`] applies the steps in turn until
//! the event reaches the version this code writes. Corral upcasts whenever it reads events into
//! Rust types (loading aggregates, and every projector and reader of the log through
//! `projections::log::decode_stored`); readers of raw JSON (NATS, integrators) see the stored
//! version and must accept what every version holds.
//!
//! The stored payload is serde's externally tagged form, `{ "<EventType>": { ...fields } }`;
//! steps work on the inner object.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::Aggregate;
use serde_json::{Map, Value};

use crate::access::{AccessEvent, RoleDefinition, RoleEvent, Subject};
use crate::dashboard::{Dashboard, DashboardEvent};
use crate::group::{Group, GroupEvent};
use crate::membership::{Membership, MembershipEvent};
use crate::sweep::{SweepEvent, SweepRun};
use crate::watch::{MembershipWatch, MembershipWatchEvent};

/// One step of the chain: rewrites the fields of an event of version `from` into version `to`.
#[derive(Debug, Clone, Copy)]
pub struct UpcastStep {
    /// The aggregate type (`Group`, `Membership`, `Dashboard`).
    pub aggregate_type: &'static str,
    /// The event type (the variant name).
    pub event_type: &'static str,
    /// The version this step reads.
    pub from: &'static str,
    /// The version it produces.
    pub to: &'static str,
    /// What it changes, for the event catalog.
    pub summary: &'static str,
    /// Rewrites the event's fields (the object inside the payload's tag).
    pub apply: fn(&mut Map<String, Value>) -> Result<(), String>,
}

/// Every upcasting step, in the order they apply.
pub const STEPS: &[UpcastStep] = &[UpcastStep {
    aggregate_type: Group::TYPE,
    event_type: "GroupUpdated",
    from: "1",
    to: "2",
    summary: "adds `previous` (null: version 1 did not record the replaced values)",
    apply: group_updated_v1_to_v2,
}];

/// `GroupUpdated` v1 -> v2: `previous` is null, "not recorded".
fn group_updated_v1_to_v2(fields: &mut Map<String, Value>) -> Result<(), String> {
    fields.entry("previous").or_insert(Value::Null);
    Ok(())
}

/// Why an event could not be brought to its current version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    /// The aggregate type or event type is not one this code knows (written by a newer Corral,
    /// or not Corral's).
    #[error("unknown event type {aggregate_type}/{event_type}: written by a newer Corral? upgrade before reading it")]
    UnknownEventType {
        /// The aggregate type.
        aggregate_type: String,
        /// The event type.
        event_type: String,
    },
    /// The event's version is newer than the one this code writes.
    #[error("{aggregate_type}/{event_type} event version {version} is newer than this Corral understands (it writes version {current}): upgrade Corral before reading it")]
    FutureVersion {
        /// The aggregate type.
        aggregate_type: String,
        /// The event type.
        event_type: String,
        /// The stored version.
        version: String,
        /// The version this code writes.
        current: &'static str,
    },
    /// No step leads from the event's version to the current one.
    #[error("{aggregate_type}/{event_type} event version {version} cannot be upcast to version {current}: no upcaster step from version {version}")]
    NoStep {
        /// The aggregate type.
        aggregate_type: String,
        /// The event type.
        event_type: String,
        /// The version reached.
        version: String,
        /// The version this code writes.
        current: &'static str,
    },
    /// The payload is not `{ "<EventType>": { ...fields } }`, or a step refused it.
    #[error("{aggregate_type}/{event_type} event version {version}: {message}")]
    Malformed {
        /// The aggregate type.
        aggregate_type: String,
        /// The event type.
        event_type: String,
        /// The version being upcast.
        version: String,
        /// What is wrong.
        message: String,
    },
}

/// The version this code writes for an event type, or `None` for an unknown one.
pub fn current_version(aggregate_type: &str, event_type: &str) -> Option<&'static str> {
    match aggregate_type {
        Group::TYPE => GroupEvent::current_version(event_type),
        Membership::TYPE => MembershipEvent::current_version(event_type),
        Dashboard::TYPE => DashboardEvent::current_version(event_type),
        SweepRun::TYPE => SweepEvent::current_version(event_type),
        Subject::TYPE => AccessEvent::current_version(event_type),
        RoleDefinition::TYPE => RoleEvent::current_version(event_type),
        crate::inventory::events::DEVICE => {
            crate::inventory::events::DeviceEvent::current_version(event_type)
        }
        crate::inventory::events::SERVICE => {
            crate::inventory::events::ServiceEvent::current_version(event_type)
        }
        MembershipWatch::TYPE => MembershipWatchEvent::current_version(event_type),
        _ => None,
    }
}

/// Brings a stored event to its current version: returns that version and the payload to
/// deserialize. Events already current are returned unchanged.
pub fn upcast(
    aggregate_type: &str,
    event_type: &str,
    event_version: &str,
    payload: Value,
) -> Result<(String, Value), UpcastError> {
    let Some(current) = current_version(aggregate_type, event_type) else {
        return Err(UpcastError::UnknownEventType {
            aggregate_type: aggregate_type.to_string(),
            event_type: event_type.to_string(),
        });
    };
    if event_version == current {
        return Ok((event_version.to_string(), payload));
    }
    if is_newer(event_version, current) {
        return Err(UpcastError::FutureVersion {
            aggregate_type: aggregate_type.to_string(),
            event_type: event_type.to_string(),
            version: event_version.to_string(),
            current,
        });
    }
    let malformed = |version: &str, message: String| UpcastError::Malformed {
        aggregate_type: aggregate_type.to_string(),
        event_type: event_type.to_string(),
        version: version.to_string(),
        message,
    };
    let mut payload = payload;
    let mut version = event_version;
    // Each step moves to another version; more steps than the table holds would be a loop.
    for _ in 0..=STEPS.len() {
        if version == current {
            return Ok((version.to_string(), payload));
        }
        let Some(step) = STEPS.iter().find(|s| {
            s.aggregate_type == aggregate_type && s.event_type == event_type && s.from == version
        }) else {
            break;
        };
        let fields = payload
            .get_mut(event_type)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| {
                malformed(
                    version,
                    format!("the payload is not {{\"{event_type}\": {{...}}}}"),
                )
            })?;
        (step.apply)(fields).map_err(|m| malformed(version, m))?;
        version = step.to;
    }
    Err(UpcastError::NoStep {
        aggregate_type: aggregate_type.to_string(),
        event_type: event_type.to_string(),
        version: version.to_string(),
        current,
    })
}

/// Upcasts a [`SerializedEvent`] (as cqrs-es and the executor build them from rows).
pub fn upcast_serialized(event: SerializedEvent) -> Result<SerializedEvent, UpcastError> {
    let (event_version, payload) = upcast(
        &event.aggregate_type,
        &event.event_type,
        &event.event_version,
        event.payload,
    )?;
    Ok(SerializedEvent {
        event_version,
        payload,
        ..event
    })
}

/// Whether version `a` is newer than `b`, comparing numerically where both are numbers
/// (`"10"` > `"9"`), else as text.
fn is_newer(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a > b,
        _ => a > b,
    }
}

/// The chain as a cqrs-es [`EventUpcaster`], for `PersistedEventStore::with_upcasters`.
///
/// cqrs-es's trait cannot fail, so an event this chain cannot upcast (a future version, say)
/// is passed on unchanged and then fails to deserialize; Corral's own loading path (the
/// projections crate's executor) calls [`upcast`] and reports the [`UpcastError`] instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct CorralUpcaster;

impl CorralUpcaster {
    /// The upcaster list for `PersistedEventStore::with_upcasters`.
    pub fn boxed() -> Vec<Box<dyn EventUpcaster>> {
        vec![Box::new(CorralUpcaster)]
    }
}

impl EventUpcaster for CorralUpcaster {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        STEPS
            .iter()
            .any(|s| s.event_type == event_type && s.from == event_version)
    }

    fn upcast(&self, event: SerializedEvent) -> SerializedEvent {
        let original = event.clone();
        upcast_serialized(event).unwrap_or(original)
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::persist::SerializedEvent;
    use cqrs_es::{DomainEvent, EventEnvelope};
    use serde_json::json;

    use super::*;
    use crate::group::{GroupDetails, GroupType};
    use crate::membership::MemberSource;

    fn v1_updated() -> Value {
        json!({"GroupUpdated": {"description": "edge", "metadata": {"rack": "R1"}}})
    }

    #[test]
    fn a_v1_group_updated_does_not_deserialize_without_the_upcaster() {
        let err = serde_json::from_value::<GroupEvent>(v1_updated())
            .expect_err("v1 lacks the required `previous`");
        assert!(err.to_string().contains("previous"), "{err}");
    }

    #[test]
    fn a_v1_group_updated_is_upcast_to_v2_with_previous_null() {
        let (version, payload) =
            upcast("Group", "GroupUpdated", "1", v1_updated()).expect("upcast");
        assert_eq!(version, "2");
        assert_eq!(
            payload,
            json!({"GroupUpdated": {"description": "edge", "metadata": {"rack": "R1"}, "previous": null}})
        );
        let event: GroupEvent = serde_json::from_value(payload).expect("v2");
        assert_eq!(
            event,
            GroupEvent::GroupUpdated {
                description: Some("edge".into()),
                metadata: json!({"rack": "R1"}).as_object().cloned().expect("object"),
                previous: None,
            }
        );
    }

    #[test]
    fn current_events_pass_unchanged() {
        let v2 = GroupEvent::GroupUpdated {
            description: None,
            metadata: Map::new(),
            previous: Some(GroupDetails::default()),
        };
        let payload = serde_json::to_value(&v2).expect("json");
        assert_eq!(v2.event_version(), "2");
        assert_eq!(
            upcast("Group", "GroupUpdated", "2", payload.clone()).expect("current"),
            ("2".to_string(), payload)
        );
        let added = MembershipEvent::MembersAdded {
            member_type: GroupType::Device,
            member_ids: vec!["d1".into()],
            source: MemberSource::Static,
            rule_version: None,
            cause: None,
        };
        let payload = serde_json::to_value(&added).expect("json");
        assert_eq!(
            upcast("Membership", "MembersAdded", "1", payload.clone()).expect("current"),
            ("1".to_string(), payload)
        );
    }

    #[test]
    fn future_versions_and_unknown_types_are_clear_errors() {
        let err = upcast("Group", "GroupUpdated", "3", v1_updated()).expect_err("future");
        assert!(matches!(err, UpcastError::FutureVersion { .. }));
        assert!(
            err.to_string()
                .contains("newer than this Corral understands"),
            "{err}"
        );
        let err = upcast("Group", "GroupRenamed", "10", json!({})).expect_err("future");
        assert!(matches!(err, UpcastError::FutureVersion { .. }), "{err}");
        let err = upcast("Group", "GroupArchived", "1", json!({})).expect_err("unknown");
        assert!(matches!(err, UpcastError::UnknownEventType { .. }), "{err}");
        let err = upcast("Group", "GroupUpdated", "0", v1_updated()).expect_err("no step");
        assert!(matches!(err, UpcastError::NoStep { .. }), "{err}");
        let err = upcast("Group", "GroupUpdated", "1", json!({"Other": {}})).expect_err("shape");
        assert!(matches!(err, UpcastError::Malformed { .. }), "{err}");
    }

    #[test]
    fn every_step_leads_to_the_current_version() {
        for step in STEPS {
            let current =
                current_version(step.aggregate_type, step.event_type).expect("a known event type");
            assert!(is_newer(step.to, step.from), "{step:?} goes backwards");
            assert!(
                !is_newer(step.to, current),
                "{step:?} passes the current version"
            );
            let payload = json!({ step.event_type: {} });
            let (version, _) = upcast(step.aggregate_type, step.event_type, step.from, payload)
                .expect("the chain reaches the current version");
            assert_eq!(version, current);
        }
    }

    #[test]
    fn the_cqrs_es_upcaster_upcasts_through_envelope_deserialization() {
        let upcaster = CorralUpcaster;
        assert!(upcaster.can_upcast("GroupUpdated", "1"));
        assert!(!upcaster.can_upcast("GroupUpdated", "2"));
        assert!(!upcaster.can_upcast("GroupCreated", "1"));
        let stored = SerializedEvent::new(
            "g".into(),
            2,
            "Group".into(),
            "GroupUpdated".into(),
            "1".into(),
            v1_updated(),
            json!({}),
        );
        assert!(EventEnvelope::<Group>::try_from(stored.clone()).is_err());
        let upcast = upcaster.upcast(stored);
        assert_eq!(upcast.event_version, "2");
        let envelope = EventEnvelope::<Group>::try_from(upcast).expect("v2 deserializes");
        assert!(matches!(
            envelope.payload,
            GroupEvent::GroupUpdated { previous: None, .. }
        ));
    }
}
