//! The event catalog: the generated reference part of `docs/events.md`.
//!
//! For every aggregate and event type it gives the description (the variant's doc comment),
//! the current `eventVersion` and its history (from [`crate::upcast::STEPS`]), the JSON Schema
//! of the stored payload (derived from the Rust types with `schemars`) and an example payload
//! (real Rust values, serialized), so that none of it can drift from the code. A test in this
//! module fails when the committed file differs from what [`events_markdown`] produces;
//! `corral docs events --write` rewrites it.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::access::{AccessEvent, Binding, RoleEvent};
use crate::dashboard::{DashboardEvent, Widget, WidgetContent, WidgetKind, WidgetPosition};
use crate::group::{GroupCapabilities, GroupDetails, GroupEvent, GroupType, RuleRef};
use crate::inventory::events::{
    DeviceEvent, DeviceRecord, FieldChange, ServiceEvent, ServiceRecord,
};
use crate::membership::{MemberSource, MembershipEvent};
use crate::sweep::{SweepEvent, SweepPlan};
use crate::upcast::{current_version, STEPS};
use crate::watch::MembershipWatchEvent;

/// The line that opens the generated section of `docs/events.md`.
pub const BEGIN_MARKER: &str = "<!-- BEGIN GENERATED: corral docs events -->";
/// The line that closes it.
pub const END_MARKER: &str = "<!-- END GENERATED -->";
/// How to regenerate the section (for messages and the section's own header).
pub const REGENERATE: &str = "cargo run -p corral --bin corral -- docs events --write";

/// The documentation of one event type.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDoc {
    /// `Group` or `Membership`.
    pub aggregate_type: &'static str,
    /// The variant name, stored as `event_type`.
    pub event_type: String,
    /// What it means (the variant's doc comment).
    pub description: String,
    /// The version Corral writes now.
    pub version: &'static str,
    /// `(version, what changed)`, oldest first.
    pub history: Vec<(&'static str, &'static str)>,
    /// The JSON Schema of the stored payload, `{ "<EventType>": { ...fields } }`.
    pub schema: Value,
    /// An example stored payload; `None` when the catalog lacks one (a test forbids it).
    pub example: Option<Value>,
}

/// The aggregates whose events are stored, with what their aggregate id is.
pub const AGGREGATES: [(&str, &str); 9] = [
    ("Group", "the group's UUID"),
    (
        "Membership",
        "the group's UUID (a group's membership is an aggregate of its own)",
    ),
    ("Dashboard", "the dashboard's (or template's) UUID"),
    (
        "SweepRun",
        "the run's UUID (random, reserved for the asking subject's idempotency key)",
    ),
    (
        "Subject",
        "a UUIDv5 of the subject's name (a person or a service account; its tokens and role bindings)",
    ),
    (
        "Role",
        "a UUIDv5 of the custom role's name (a named set of permissions of the catalog)",
    ),
    (
        "Device",
        "the device's inventory id (its history: every real change, with before and after)",
    ),
    (
        "Service",
        "the service's inventory id (its history: every real change, with before and after)",
    ),
    (
        "MembershipWatch",
        "the watch's UUID (random): a durable watch of a group's membership, published to NATS",
    ),
];

/// Every event type, in declaration order.
pub fn catalog() -> Vec<EventDoc> {
    let mut out = event_docs::<GroupEvent>("Group", group_examples());
    out.extend(event_docs::<MembershipEvent>(
        "Membership",
        membership_examples(),
    ));
    out.extend(event_docs::<DashboardEvent>(
        "Dashboard",
        dashboard_examples(),
    ));
    out.extend(event_docs::<SweepEvent>("SweepRun", sweep_examples()));
    out.extend(event_docs::<AccessEvent>("Subject", access_examples()));
    out.extend(event_docs::<RoleEvent>("Role", role_examples()));
    out.extend(event_docs::<DeviceEvent>("Device", device_examples()));
    out.extend(event_docs::<ServiceEvent>("Service", service_examples()));
    out.extend(event_docs::<MembershipWatchEvent>(
        "MembershipWatch",
        watch_examples(),
    ));
    out
}

fn hostname_change() -> Vec<FieldChange> {
    vec![FieldChange {
        field: "hostname".into(),
        before: json!("web-01"),
        after: json!("web-01.ams1"),
    }]
}

fn device_examples() -> Vec<Value> {
    let seen = chrono::DateTime::parse_from_rfc3339("2026-05-01T10:00:00Z")
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc));
    let record = DeviceRecord {
        hostname: Some("web-01".into()),
        ip: Some("10.0.0.1".into()),
        site: Some("ams1".into()),
        tags: [("env".to_string(), "prod".to_string())].into(),
        discovery_sources: vec!["snmp".into()],
        is_available: Some(true),
        first_seen: seen,
        last_seen: seen,
        ..DeviceRecord::default()
    };
    let events = [
        DeviceEvent::DeviceRecorded {
            record: Box::new(record),
        },
        DeviceEvent::DeviceChanged {
            changes: hostname_change(),
        },
        DeviceEvent::DeviceRevived {
            changes: hostname_change(),
        },
        DeviceEvent::DeviceRemoved {},
    ];
    events.iter().map(to_json).collect()
}

fn service_examples() -> Vec<Value> {
    let record = ServiceRecord {
        device_id: "dev-1".into(),
        service_type: "http".into(),
        name: "web".into(),
        port: Some(443),
        status: Some("up".into()),
        ..ServiceRecord::default()
    };
    let port = vec![FieldChange {
        field: "port".into(),
        before: json!(443),
        after: json!(8443),
    }];
    let events = [
        ServiceEvent::ServiceRecorded {
            record: Box::new(record),
        },
        ServiceEvent::ServiceChanged {
            changes: port.clone(),
        },
        ServiceEvent::ServiceRevived { changes: port },
        ServiceEvent::ServiceRemoved {},
    ];
    events.iter().map(to_json).collect()
}

fn watch_examples() -> Vec<Value> {
    let events = [
        MembershipWatchEvent::MembershipWatchRegistered {
            group_id: Uuid::from_u128(0x0195_8a4e_7c10_7000_8000_0000_0000_0001),
            include_descendants: true,
            description: Some("CMDB sync of the Paris site".into()),
        },
        MembershipWatchEvent::MembershipWatchRemoved {},
    ];
    events.iter().map(to_json).collect()
}

fn role_examples() -> Vec<Value> {
    let events = [
        RoleEvent::RoleDefined {
            name: "site-operator".into(),
            permissions: vec![
                "group.edit".into(),
                "group.read".into(),
                "membership.edit".into(),
            ],
        },
        RoleEvent::RoleDeleted {
            name: "site-operator".into(),
        },
    ];
    events.iter().map(to_json).collect()
}

fn access_examples() -> Vec<Value> {
    let token_id = Uuid::from_u128(0x7d3c_9a10_4b2e_4f6a_8c1d_2e3f_4a5b_6c7d);
    let binding = Binding::global("viewer");
    let scoped = Binding {
        role: "operator".into(),
        scope: Some(Uuid::from_u128(0x0195_8a4e_7c10_7000_8000_0000_0000_0001)),
    };
    let events = [
        AccessEvent::SubjectCreated {
            subject: "feeder".into(),
        },
        AccessEvent::RoleGranted {
            binding: scoped.clone(),
        },
        AccessEvent::RoleRevoked { binding: scoped },
        AccessEvent::TokenCreated {
            token_id,
            prefix: "crl_5f1c09ab".into(),
            bindings: vec![binding],
            expires_at: chrono::DateTime::parse_from_rfc3339("2027-01-06T12:00:00Z")
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc)),
        },
        AccessEvent::TokenRevoked {
            token_id,
            reason: Some("rotated".into()),
        },
        AccessEvent::TokenExpired { token_id },
    ];
    events.iter().map(to_json).collect()
}

/// One [`EventDoc`] per variant of `E`, from its JSON Schema (`oneOf` one object per variant,
/// keyed by the variant name).
fn event_docs<E: JsonSchema>(aggregate_type: &'static str, examples: Vec<Value>) -> Vec<EventDoc> {
    let schema = SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<E>();
    let meta_schema = schema.get("$schema").cloned();
    let variants = schema
        .get("oneOf")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    variants
        .into_iter()
        .filter_map(|variant| {
            let Value::Object(mut variant) = variant else {
                return None;
            };
            let event_type = variant
                .get("required")
                .and_then(Value::as_array)
                .and_then(|r| r.first())
                .and_then(Value::as_str)?
                .to_string();
            let description = variant
                .remove("description")
                .and_then(|d| d.as_str().map(unwrap_lines))
                .unwrap_or_default();
            let version = current_version(aggregate_type, &event_type).unwrap_or("?");
            let mut history = vec![("1", "first version")];
            history.extend(
                STEPS
                    .iter()
                    .filter(|s| s.aggregate_type == aggregate_type && s.event_type == event_type)
                    .map(|s| (s.to, s.summary)),
            );
            let mut schema = Map::new();
            if let Some(meta) = &meta_schema {
                schema.insert("$schema".into(), meta.clone());
            }
            schema.insert(
                "title".into(),
                Value::String(format!("{aggregate_type}/{event_type} v{version}")),
            );
            schema.extend(variant);
            let example = examples
                .iter()
                .find(|e| e.get(&event_type).is_some())
                .cloned();
            Some(EventDoc {
                aggregate_type,
                event_type,
                description,
                version,
                history,
                schema: Value::Object(schema),
                example,
            })
        })
        .collect()
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| Value::String(format!("unserializable: {e}")))
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The example rule of `GroupRuleSet`: its `group:` reference.
const EXAMPLE_REF: Uuid = Uuid::from_u128(0x6f1c_2d4e_8a9b_4c3d_9e2f_1a2b_3c4d_5e6f);

fn example_rule_text() -> String {
    format!("in:devices hostname:%edge% tags.env:prod group:{EXAMPLE_REF}")
}

fn group_examples() -> Vec<Value> {
    let site = Uuid::from_u128(0x5b3e_9f2a_1c4d_4e6f_8a7b_9c0d_1e2f_3a4b);
    let other = Uuid::from_u128(0x7d2a_4b6c_8e0f_4a1b_9c3d_5e7f_0a2b_4c6d);
    let (rule, text) = match crate::rule::parse(&example_rule_text(), GroupType::Device) {
        Ok(parsed) => (parsed.rule.to_json(), parsed.rule.to_text()),
        Err(e) => (
            Value::String(format!("invalid example rule: {e}")),
            String::new(),
        ),
    };
    let events = [
        GroupEvent::GroupCreated {
            group_type: GroupType::Device,
            name: "Edge".into(),
            parent_id: Some(site),
            description: Some("edge routers".into()),
            metadata: object(json!({"owner": "netops"})),
            is_system: false,
        },
        GroupEvent::GroupRenamed {
            name: "Edge routers".into(),
            previous_name: "Edge".into(),
        },
        GroupEvent::GroupUpdated {
            description: Some("edge routers, site A".into()),
            metadata: object(json!({"owner": "netops", "site": "A"})),
            previous: Some(GroupDetails {
                description: Some("edge routers".into()),
                metadata: object(json!({"owner": "netops"})),
            }),
        },
        GroupEvent::GroupMoved {
            previous_parent_id: site,
            new_parent_id: other,
        },
        GroupEvent::GroupDeleted {},
        GroupEvent::GroupRuleSet {
            rule,
            text,
            enabled: true,
            rule_version: 1,
            refs: vec![RuleRef {
                group_id: EXAMPLE_REF,
                direct: false,
            }],
        },
        GroupEvent::GroupRuleCleared { rule_version: 2 },
        GroupEvent::GroupCapabilitiesChanged {
            has_sysmon: true,
            has_snmp: true,
            has_services: false,
            previous: GroupCapabilities {
                has_sysmon: false,
                has_snmp: true,
                has_services: false,
            },
        },
    ];
    events.iter().map(to_json).collect()
}

fn membership_examples() -> Vec<Value> {
    let events = [
        MembershipEvent::MembersAdded {
            member_type: GroupType::Device,
            member_ids: vec!["dev-1".into(), "dev-2".into()],
            source: MemberSource::Rule,
            rule_version: Some(3),
            cause: Some("inventory:devices:dev-1,dev-2".into()),
        },
        MembershipEvent::MembersRemoved {
            member_type: GroupType::Device,
            member_ids: vec!["dev-3".into()],
            source: MemberSource::Static,
            rule_version: None,
            cause: None,
        },
        MembershipEvent::MembersExcluded {
            member_type: GroupType::Device,
            member_ids: vec!["dev-4".into()],
        },
        MembershipEvent::MembersUnexcluded {
            member_type: GroupType::Device,
            member_ids: vec!["dev-4".into()],
        },
    ];
    events.iter().map(to_json).collect()
}

fn dashboard_examples() -> Vec<Value> {
    let group = Uuid::from_u128(0x5b3e_9f2a_1c4d_4e6f_8a7b_9c0d_1e2f_3a4b);
    let template = Uuid::from_u128(0x2c4e_6a8b_0d1f_4e3a_8b5c_7d9e_1f2a_3b4c);
    let cpu = Widget {
        id: Uuid::from_u128(0x9a8b_7c6d_5e4f_4a3b_8c2d_1e0f_9a8b_7c6d),
        kind: WidgetKind::GroupUtilization,
        title: "Site A CPU".into(),
        config: object(json!({"group": group.to_string(), "bucket": "ONE_HOUR", "rangeHours": 48})),
        position: WidgetPosition {
            x: 0,
            y: 0,
            w: 6,
            h: 4,
        },
    };
    let members = Widget {
        id: Uuid::from_u128(0x1b2c_3d4e_5f6a_4b7c_8d9e_0f1a_2b3c_4d5e),
        kind: WidgetKind::GroupMemberCount,
        title: "Members".into(),
        config: object(json!({"group": "$group", "mode": "EFFECTIVE"})),
        position: WidgetPosition {
            x: 6,
            y: 0,
            w: 3,
            h: 2,
        },
    };
    let events = [
        DashboardEvent::DashboardCreated {
            owner: Some("vera".into()),
            name: "Network overview".into(),
            is_template: false,
            copied_from: Some(template),
            widgets: vec![cpu.clone()],
            layout_version: 1,
        },
        DashboardEvent::DashboardRenamed {
            name: "Site A".into(),
            previous_name: "Network overview".into(),
        },
        DashboardEvent::DashboardDeleted {},
        DashboardEvent::DashboardMadeDefault {
            owner: "vera".into(),
        },
        DashboardEvent::WidgetAdded {
            widget: members.clone(),
            layout_version: 2,
        },
        DashboardEvent::WidgetUpdated {
            widget_id: members.id,
            kind: WidgetKind::GroupMemberCount,
            title: "Direct members".into(),
            config: object(json!({"group": "$group", "mode": "DIRECT"})),
            previous: WidgetContent {
                kind: members.kind,
                title: members.title.clone(),
                config: members.config.clone(),
            },
            layout_version: 3,
        },
        DashboardEvent::WidgetMoved {
            widget_id: members.id,
            position: WidgetPosition {
                x: 6,
                y: 4,
                w: 6,
                h: 2,
            },
            previous_position: members.position,
            layout_version: 4,
        },
        DashboardEvent::WidgetRemoved {
            widget: cpu,
            layout_version: 5,
        },
    ];
    events.iter().map(to_json).collect()
}

fn sweep_examples() -> Vec<Value> {
    let at = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default();
    let plan = SweepPlan {
        poller_id: "poller-1".into(),
        agent_id: Some("agent-1".into()),
        targets: vec!["127.0.0.0/28".into()],
        group_id: None,
        hosts: vec!["127.0.0.0-127.0.0.15".into()],
        hosts_total: 16,
        ports: vec![22, 443],
        icmp: true,
        timeout_ms: 1000,
        concurrency: 64,
        retention_days: 30,
        idempotency_key: "nightly-2026-12-04".into(),
        reason: Some("after the core switch change".into()),
    };
    let events = [
        SweepEvent::SweepScheduled {
            plan,
            requested_by: "alice".into(),
            deadline: at(600),
        },
        SweepEvent::SweepDispatched {
            job_key: "jobs.sweeps.poller-1.6f1c2a4e-8b3d-5e7f-9a1b-2c3d4e5f6a7b".into(),
            claim_by: at(300),
        },
        SweepEvent::SweepAcknowledged {
            poller_id: "poller-1".into(),
        },
        SweepEvent::SweepStarted {},
        SweepEvent::SweepCompleted { hosts_done: 16 },
        SweepEvent::SweepFailed {
            code: "POLLER_OFFLINE".into(),
            message: "poller poller-1 has not sent a heartbeat in 30 s".into(),
            hosts_done: 0,
        },
        SweepEvent::SweepTimedOut { hosts_done: 9 },
        SweepEvent::SweepCancelled {
            cancelled_by: "alice".into(),
            reason: Some("wrong window".into()),
            hosts_done: 4,
        },
        SweepEvent::SweepExpired {},
    ];
    events.iter().map(to_json).collect()
}

/// Keys sorted at every level (whatever serde_json's `preserve_order` says), so the output is
/// stable; in a schema (`schema`), the line breaks of doc comments are unwrapped too (a blank
/// line stays a paragraph break).
fn tidy(value: &Value, schema: bool) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(s) if schema && k == "description" => {
                                Value::String(unwrap_lines(s))
                            }
                            v => tidy(v, schema),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| tidy(v, schema)).collect()),
        other => other.clone(),
    }
}

/// Joins the lines of each paragraph with spaces.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.lines().map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn pretty(value: &Value, schema: bool) -> String {
    serde_json::to_string_pretty(&tidy(value, schema))
        .unwrap_or_else(|e| format!("unserializable: {e}"))
}

/// The generated section of `docs/events.md`, markers included.
pub fn events_markdown() -> String {
    let docs = catalog();
    let mut md = String::new();
    md.push_str(BEGIN_MARKER);
    md.push('\n');
    md.push_str(&format!(
        "<!-- Generated from the Rust event types; do not edit. Regenerate with `{REGENERATE}`. -->\n\n"
    ));
    md.push_str("## Reference (generated)\n\n");
    md.push_str(
        "Every event type with its current `eventVersion`, the JSON Schema (draft 2020-12) of \
         its stored payload and an example payload. The payload is serde's externally tagged \
         form, `{ \"<EventType>\": { ...fields } }`; the envelope (the `events` row, or the \
         public envelope on NATS and in exports) carries `aggregateType`, `eventType` (the tag) \
         and `eventVersion` beside it.\n\n",
    );
    md.push_str("| aggregateType | eventType | eventVersion | history |\n|---|---|---|---|\n");
    for d in &docs {
        let history = d
            .history
            .iter()
            .map(|(v, what)| format!("v{v}: {what}"))
            .collect::<Vec<_>>()
            .join("; ");
        md.push_str(&format!(
            "| `{}` | `{}` | `{}` | {} |\n",
            d.aggregate_type, d.event_type, d.version, history
        ));
    }
    for (aggregate_type, id) in AGGREGATES {
        md.push_str(&format!(
            "\n### {aggregate_type} events\n\n`aggregateType` `{aggregate_type}`; the aggregate id is {id}.\n"
        ));
        for d in docs.iter().filter(|d| d.aggregate_type == aggregate_type) {
            md.push_str(&format!("\n#### `{}`\n\n", d.event_type));
            if !d.description.is_empty() {
                md.push_str(&d.description);
                md.push_str("\n\n");
            }
            md.push_str(&format!(
                "Envelope: `aggregateType` `{}`, `eventType` `{}`, `eventVersion` `{}`.\n\n",
                d.aggregate_type, d.event_type, d.version
            ));
            md.push_str("Versions:\n\n");
            for (v, what) in &d.history {
                md.push_str(&format!("- `{v}`: {what}\n"));
            }
            md.push_str("\nSchema of the stored payload:\n\n```json\n");
            md.push_str(&pretty(&d.schema, true));
            md.push_str("\n```\n\nExample payload:\n\n```json\n");
            match &d.example {
                Some(example) => md.push_str(&pretty(example, false)),
                None => md.push_str("null"),
            }
            md.push_str("\n```\n");
        }
    }
    md.push_str(END_MARKER);
    md.push('\n');
    md
}

/// Why the generated section could not be found in a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the document has no `{BEGIN_MARKER}` ... `{END_MARKER}` section (each marker on a line of its own, in that order)")]
pub struct MissingMarkers;

/// The byte range of the generated section in `doc` (from the start of the begin marker to the
/// end of the end marker's line).
fn section_range(doc: &str) -> Result<std::ops::Range<usize>, MissingMarkers> {
    let start = doc.find(BEGIN_MARKER).ok_or(MissingMarkers)?;
    let end_marker = doc[start..].find(END_MARKER).ok_or(MissingMarkers)? + start;
    let mut end = end_marker + END_MARKER.len();
    if doc[end..].starts_with('\n') {
        end += 1;
    }
    Ok(start..end)
}

/// The generated section of `doc`, markers included.
pub fn generated_section(doc: &str) -> Result<&str, MissingMarkers> {
    Ok(&doc[section_range(doc)?])
}

/// `doc` with its generated section replaced by [`events_markdown`].
pub fn regenerate(doc: &str) -> Result<String, MissingMarkers> {
    let range = section_range(doc)?;
    let mut out = String::with_capacity(doc.len());
    out.push_str(&doc[..range.start]);
    out.push_str(&events_markdown());
    out.push_str(&doc[range.end..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use cqrs_es::DomainEvent;

    use super::*;

    /// CI fails when the committed reference drifts from the code.
    #[test]
    fn committed_events_doc_matches_the_code() {
        let committed = include_str!("../../docs/events.md");
        let section = generated_section(committed).expect("docs/events.md has the markers");
        assert!(
            section == events_markdown(),
            "docs/events.md is stale: run `{REGENERATE}`"
        );
    }

    #[test]
    fn every_event_type_has_a_version_a_description_and_an_example() {
        let docs = catalog();
        let types: BTreeSet<_> = docs.iter().map(|d| d.event_type.as_str()).collect();
        assert_eq!(types.len(), 47, "{types:?}");
        for d in &docs {
            assert_ne!(d.version, "?", "{} has no current version", d.event_type);
            assert!(
                !d.description.is_empty(),
                "{} has no doc comment",
                d.event_type
            );
            assert!(d.example.is_some(), "{} has no example", d.event_type);
        }
    }

    #[test]
    fn examples_deserialize_and_carry_their_version() {
        for d in catalog() {
            let example = d.example.expect("example");
            match d.aggregate_type {
                "Group" => {
                    let e: GroupEvent = serde_json::from_value(example).expect("group event");
                    assert_eq!(
                        (e.event_type(), e.event_version()),
                        (d.event_type, d.version.to_string())
                    );
                }
                "SweepRun" => {
                    let e: SweepEvent = serde_json::from_value(example).expect("sweep event");
                    assert_eq!(
                        (e.event_type(), e.event_version()),
                        (d.event_type, d.version.to_string())
                    );
                }
                "Dashboard" => {
                    let e: DashboardEvent =
                        serde_json::from_value(example).expect("dashboard event");
                    assert_eq!(
                        (e.event_type(), e.event_version()),
                        (d.event_type, d.version.to_string())
                    );
                }
                "Role" => {
                    let e: RoleEvent = serde_json::from_value(example).expect("role event");
                    assert_eq!(
                        (e.event_type(), e.event_version()),
                        (d.event_type, d.version.to_string())
                    );
                }
                "MembershipWatch" => {
                    let e: MembershipWatchEvent =
                        serde_json::from_value(example).expect("watch event");
                    assert_eq!(
                        (e.event_type(), e.event_version()),
                        (d.event_type, d.version.to_string())
                    );
                }
                "Subject" => {
                    let e: AccessEvent = serde_json::from_value(example).expect("access event");
                    assert_eq!(
                        (e.event_type(), e.event_version()),
                        (d.event_type, d.version.to_string())
                    );
                }
                "Device" => {
                    let e: DeviceEvent = serde_json::from_value(example).expect("device event");
                    assert_eq!(
                        (e.event_type(), e.event_version()),
                        (d.event_type, d.version.to_string())
                    );
                }
                "Service" => {
                    let e: ServiceEvent = serde_json::from_value(example).expect("service event");
                    assert_eq!(
                        (e.event_type(), e.event_version()),
                        (d.event_type, d.version.to_string())
                    );
                }
                _ => {
                    let e: MembershipEvent =
                        serde_json::from_value(example).expect("membership event");
                    assert_eq!(
                        (e.event_type(), e.event_version()),
                        (d.event_type, d.version.to_string())
                    );
                }
            }
        }
    }

    /// A light check of each example against its schema: the tag is the one property, and
    /// the fields are the schema's properties with every required one present.
    #[test]
    fn examples_fit_their_schemas() {
        for d in catalog() {
            let example = d.example.expect("example");
            let fields = example
                .get(&d.event_type)
                .and_then(Value::as_object)
                .expect("tagged object");
            let inner = &d.schema["properties"][&d.event_type];
            let properties = inner["properties"].as_object().cloned().unwrap_or_default();
            for key in fields.keys() {
                assert!(
                    properties.contains_key(key),
                    "{}: {key} not in the schema",
                    d.event_type
                );
            }
            for required in inner["required"].as_array().cloned().unwrap_or_default() {
                let required = required.as_str().expect("name");
                assert!(
                    fields.contains_key(required),
                    "{}: {required} missing",
                    d.event_type
                );
            }
        }
    }

    #[test]
    fn group_updated_v2_requires_previous_and_documents_v1() {
        let d = catalog()
            .into_iter()
            .find(|d| d.event_type == "GroupUpdated")
            .expect("GroupUpdated");
        assert_eq!(d.version, "2");
        assert_eq!(d.history.len(), 2);
        let required = &d.schema["properties"]["GroupUpdated"]["required"];
        assert!(
            required
                .as_array()
                .expect("required")
                .contains(&json!("previous")),
            "{required}"
        );
    }

    #[test]
    fn the_example_rule_parses_and_names_its_reference() {
        let parsed = crate::rule::parse(&example_rule_text(), GroupType::Device).expect("parses");
        assert_eq!(parsed.rule.group_refs().len(), 1);
    }

    #[test]
    fn regenerate_replaces_only_the_section() {
        let doc = format!("# Title\n\nprose\n\n{BEGIN_MARKER}\nold\n{END_MARKER}\n\nmore prose\n");
        let out = regenerate(&doc).expect("markers");
        assert!(out.starts_with("# Title\n\nprose\n\n"));
        assert!(out.ends_with("\n\nmore prose\n"));
        assert_eq!(generated_section(&out).expect("markers"), events_markdown());
        assert_eq!(regenerate(&out).expect("markers"), out);
        assert_eq!(regenerate("no markers"), Err(MissingMarkers));
    }
}
