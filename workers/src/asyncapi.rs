//! The AsyncAPI 3 document of every NATS subject Corral publishes or consumes, and the JSON
//! Schemas of their messages as standalone files (`docs/asyncapi.json`, `docs/schemas/`).
//!
//! Everything comes from the code: the subjects from [`NatsNames::production`], the event
//! payloads from the event catalog (`corral_domain::catalog`, itself derived from the Rust event
//! types), the feed and sweep messages from their Rust types through `schemars`, the headers
//! from the publisher's header list. A test fails when a committed file differs from what
//! [`files`] produces, or when `docs/schemas/` holds a file it does not produce;
//! `corral docs asyncapi --write` rewrites them.

use std::collections::BTreeMap;

use corral_domain::catalog::{self, EventDoc};
use corral_domain::inventory::{DeviceInput, ServiceInput};
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::health::ingest::{ServiceCheck, SysmonSample};
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::membership_feed::plan::{sample_message, FeedChange};
use crate::nats_names::NatsNames;
use crate::sweeps::protocol::{PollerHeartbeat, SweepJob, SweepReport, JOB_KEY_PREFIX};

/// How to regenerate the files.
pub const REGENERATE: &str = "cargo run -p corral -- docs asyncapi --write";
/// The AsyncAPI document, relative to `docs/`.
pub const DOCUMENT: &str = "asyncapi.json";
/// The directory of the standalone schemas, relative to `docs/`.
pub const SCHEMAS_DIR: &str = "schemas";
/// The JSON Schema dialect of every schema file.
const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Every generated file: its path relative to `docs/` and its text (pretty JSON, final newline).
pub fn files() -> BTreeMap<String, String> {
    let mut schemas: BTreeMap<String, Value> = BTreeMap::new();
    let docs = catalog::catalog();
    schemas.insert(
        format!("{SCHEMAS_DIR}/events/envelope.json"),
        envelope_schema(None),
    );
    for doc in &docs {
        schemas.insert(event_schema_path(doc), envelope_schema(Some(doc)));
    }
    for (path, schema) in feed_schemas() {
        schemas.insert(path, schema);
    }
    let mut out: BTreeMap<String, String> = schemas
        .iter()
        .map(|(path, schema)| (path.clone(), pretty(schema)))
        .collect();
    out.insert(DOCUMENT.into(), pretty(&document(&docs)));
    out
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("\"{e}\""));
    text.push('\n');
    text
}

fn event_schema_path(doc: &EventDoc) -> String {
    format!(
        "{SCHEMAS_DIR}/events/{}.{}.json",
        doc.aggregate_type, doc.event_type
    )
}

/// The schema of `T` as Corral reads it (a message it consumes), as a standalone draft
/// 2020-12 document titled `title`.
fn schema_of<T: JsonSchema>(title: &str, description: &str) -> Value {
    standalone::<T>(
        SchemaSettings::draft2020_12().for_deserialize(),
        title,
        description,
    )
}

/// The schema of `T` as Corral writes it (a message it publishes).
fn schema_of_serialized<T: JsonSchema>(title: &str, description: &str) -> Value {
    standalone::<T>(
        SchemaSettings::draft2020_12().for_serialize(),
        title,
        description,
    )
}

fn standalone<T: JsonSchema>(settings: SchemaSettings, title: &str, description: &str) -> Value {
    let root = settings
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>();
    let mut schema = Map::new();
    schema.insert("$schema".into(), json!(DIALECT));
    schema.insert("title".into(), json!(title));
    schema.insert("description".into(), json!(description));
    if let Value::Object(fields) = root.to_value() {
        for (k, v) in fields {
            if k != "$schema" && k != "title" {
                schema.insert(k, v);
            }
        }
    }
    Value::Object(schema)
}

/// The metadata every event carries: the keys `EventMetadata::to_map` always writes are
/// required; `reason` and `client_addr` appear when known.
fn metadata_schema() -> Value {
    let always = EventMetadata::system(Source::Api, "x").to_map();
    let mut required: Vec<&String> = always.keys().collect();
    required.sort();
    let mut properties = Map::new();
    for key in &required {
        let schema = if key.as_str() == "source" {
            let mut sources: Vec<&str> = Source::ALL.iter().map(|s| s.as_str()).collect();
            sources.push(Source::MIGRATION);
            json!({
                "type": "string",
                "description": "Where the change came from (`migration`: the baseline a migration recorded)",
                "enum": sources,
            })
        } else {
            json!({"type": "string"})
        };
        properties.insert((*key).clone(), schema);
    }
    properties.insert(
        "reason".into(),
        json!({"type": "string", "description": "The reason given with the change"}),
    );
    properties.insert(
        "client_addr".into(),
        json!({"type": "string", "description": "The client's network address"}),
    );
    json!({
        "type": "object",
        "description": "Who made the change, from where and why (values are strings; accept keys you do not know)",
        "required": required,
        "properties": properties,
        "additionalProperties": {"type": "string"},
    })
}

/// The public envelope of one event (the NATS message body, the `events` subscription's item,
/// a line of the audit export); with `doc`, the envelope of that event type.
fn envelope_schema(doc: Option<&EventDoc>) -> Value {
    let aggregate_types: Vec<&str> = catalog::AGGREGATES.iter().map(|(t, _)| *t).collect();
    let (title, description, aggregate_type, event_type, payload) = match doc {
        Some(d) => {
            let mut payload = d.schema.clone();
            if let Value::Object(p) = &mut payload {
                p.remove("$schema");
                p.remove("title");
            }
            (
                format!("{}/{} (envelope)", d.aggregate_type, d.event_type),
                format!(
                    "{} The schema is of eventVersion {}; an older event keeps the version it was stored with (docs/events.md lists each version).",
                    d.description, d.version
                ),
                json!({"const": d.aggregate_type}),
                json!({"const": d.event_type}),
                payload,
            )
        }
        None => (
            "Corral event envelope".to_string(),
            "One event of Corral's public log, as published on NATS, delivered by the `events` subscription and exported by the audit export. `payload` is `{ \"<eventType>\": { ...fields } }`; each event type's schema is in schemas/events/<aggregateType>.<eventType>.json.".to_string(),
            json!({"type": "string", "enum": aggregate_types}),
            json!({"type": "string"}),
            json!({"type": "object", "minProperties": 1, "maxProperties": 1}),
        ),
    };
    json!({
        "$schema": DIALECT,
        "title": title,
        "description": description,
        "type": "object",
        "required": ENVELOPE_KEYS,
        "properties": {
            "position": {"type": "integer", "minimum": 1, "description": "Public log position: gapless, commit-ordered"},
            "eventId": {"type": "string", "format": "uuid", "description": "Unique event id (also Nats-Msg-Id and ce-id)"},
            "aggregateType": aggregate_type,
            "aggregateId": {"type": "string", "description": "The aggregate's id (docs/events.md says what it is per type)"},
            "version": {"type": "integer", "minimum": 1, "description": "The aggregate's version after this event"},
            "eventType": event_type,
            "eventVersion": {"type": "string", "description": "The version of the payload's shape"},
            "recordedAt": {"type": "string", "format": "date-time", "description": "When the event was recorded (UTC, microseconds)"},
            "metadata": metadata_schema(),
            "payload": payload,
            "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "sha256(previous hash || canonical event), hex"},
        },
    })
}

/// The keys of the envelope, as `LogEntry::envelope` writes them (a test checks).
const ENVELOPE_KEYS: [&str; 11] = [
    "position",
    "eventId",
    "aggregateType",
    "aggregateId",
    "version",
    "eventType",
    "eventVersion",
    "recordedAt",
    "metadata",
    "payload",
    "hash",
];

/// The standalone schemas of the feeds Corral consumes and of the sweep protocol.
fn feed_schemas() -> Vec<(String, Value)> {
    vec![
        (
            format!("{SCHEMAS_DIR}/inventory/devices.json"),
            schema_of::<Vec<DeviceInput>>(
                "Inventory feed: devices",
                "A JSON array of at most 1,000 devices; each item replaces the stored record (docs/inventory.md).",
            ),
        ),
        (
            format!("{SCHEMAS_DIR}/inventory/services.json"),
            schema_of::<Vec<ServiceInput>>(
                "Inventory feed: services",
                "A JSON array of at most 1,000 services; `id` defaults to `<deviceId>/<type>/<name>` (docs/inventory.md).",
            ),
        ),
        (
            format!("{SCHEMAS_DIR}/telemetry/sysmon.json"),
            schema_of::<Vec<SysmonSample>>(
                "Telemetry feed: sysmon samples",
                "A JSON array of sysmon samples (docs/health.md).",
            ),
        ),
        (
            format!("{SCHEMAS_DIR}/telemetry/services.json"),
            schema_of::<Vec<ServiceCheck>>(
                "Telemetry feed: service checks",
                "A JSON array of service checks (docs/health.md).",
            ),
        ),
        (
            format!("{SCHEMAS_DIR}/membership/change.json"),
            schema_of_serialized::<FeedChange>(
                "Membership feed: one change",
                "A member entering or leaving a registered watch's group (docs/integrators.md, \"The membership feed\").",
            ),
        ),
        (
            format!("{SCHEMAS_DIR}/sweeps/job.json"),
            schema_of::<SweepJob>(
                "Sweep job",
                "One run's work for one poller, the value of a key of the jobs bucket; deleting the key cancels the run (docs/sweeps.md).",
            ),
        ),
        (
            format!("{SCHEMAS_DIR}/sweeps/heartbeat.json"),
            schema_of::<PollerHeartbeat>(
                "Poller heartbeat",
                "A poller's heartbeat, the value at its id in the pollers bucket (docs/sweeps.md).",
            ),
        ),
        (
            format!("{SCHEMAS_DIR}/sweeps/report.json"),
            schema_of::<SweepReport>(
                "Sweep report",
                "One report of a poller on a run (docs/sweeps.md).",
            ),
        ),
    ]
}

/// The headers of an event message, from the publisher's header list.
fn event_headers() -> Value {
    headers_schema(&crate::publisher::message::sample_headers())
}

/// The headers of a membership-feed message, from the feed's header list.
fn membership_headers() -> Value {
    headers_schema(&sample_message().headers)
}

/// The schema of a message's headers, from the header list of a sample message.
fn headers_schema(sample: &[(&'static str, String)]) -> Value {
    let mut properties = Map::new();
    for (name, value) in sample {
        let schema = match *name {
            "Nats-Msg-Id" | "ce-id" if value.parse::<uuid::Uuid>().is_ok() => {
                json!({"type": "string", "format": "uuid", "description": "The event id"})
            }
            "Nats-Msg-Id" | "ce-id" => {
                json!({"type": "string", "pattern": "^[0-9a-f-]{36}:[0-9]+:[0-9]+$", "description": "<watchId>:<position>:<index>"})
            }
            "Corral-Change-Index" | "Corral-Feed-Ordinal" => {
                json!({"type": "string", "pattern": "^[0-9]+$", "description": format!("{name}, decimal (docs/integrators.md)")})
            }
            "Corral-Watch-Id" => {
                json!({"type": "string", "format": "uuid", "description": "The watch"})
            }
            "Corral-Position" => {
                json!({"type": "string", "pattern": "^[1-9][0-9]*$", "description": "The position, decimal"})
            }
            "Corral-Correlation-Id" => {
                json!({"type": "string", "description": "The request's correlation id, when the event has one"})
            }
            "ce-specversion" | "ce-source" | "Content-Type" => json!({"const": value}),
            "ce-type" => {
                json!({"type": "string", "pattern": "^io\\.corral\\.[A-Za-z]+\\.[A-Za-z]+$", "description": "io.corral.<aggregateType>.<eventType>, or io.corral.membership.Entered|Left"})
            }
            "ce-subject" => {
                json!({"type": "string", "description": "<aggregateType>/<aggregateId>, or Group/<groupId>/members/<memberId>"})
            }
            "ce-time" => {
                json!({"type": "string", "format": "date-time", "description": "When the event was recorded"})
            }
            other => {
                json!({"type": "string", "description": format!("{other} (see docs/integrators.md)")})
            }
        };
        properties.insert((*name).to_string(), schema);
    }
    let required: Vec<&str> = sample
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n != "Corral-Correlation-Id")
        .collect();
    json!({"type": "object", "required": required, "properties": properties})
}

fn message(
    name: &str,
    title: &str,
    summary: &str,
    payload_ref: &str,
    headers: Option<&str>,
) -> Value {
    let mut m = json!({
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": payload_ref},
    });
    if let Some(h) = headers {
        m["headers"] = json!({"$ref": h});
    }
    m
}

/// The AsyncAPI 3.0 document.
fn document(docs: &[EventDoc]) -> Value {
    let names = NatsNames::production();
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();

    // The event log.
    let mut event_messages = Map::new();
    let mut event_refs = Vec::new();
    for d in docs {
        let key = format!("{}.{}", d.aggregate_type, d.event_type);
        messages.insert(
            key.clone(),
            message(
                &d.event_type,
                &format!("{} {}", d.aggregate_type, d.event_type),
                d.description.lines().next().unwrap_or_default(),
                &event_schema_path(d),
                Some("#/components/schemas/EventHeaders"),
            ),
        );
        event_messages.insert(
            key.clone(),
            json!({"$ref": format!("#/components/messages/{key}")}),
        );
        event_refs.push(json!({"$ref": format!("#/channels/events/messages/{key}")}));
    }
    let aggregate_types: Vec<&str> = catalog::AGGREGATES.iter().map(|(t, _)| *t).collect();
    let mut event_types: Vec<&str> = docs.iter().map(|d| d.event_type.as_str()).collect();
    event_types.sort_unstable();
    event_types.dedup();
    channels.insert(
        "events".into(),
        json!({
            "address": format!("{}.{{aggregateType}}.{{aggregateId}}.{{eventType}}", names.events_subject_prefix),
            "title": "The event log",
            "description": format!(
                "Every event of the log, once, in position order, on stream {} (file storage, no age limit). Message n of a never-purged stream is position n. With CORRAL_NATS_NAMESPACE=<ns> the stream is {}_<ns> and the subjects corral.<ns>.events.>. docs/integrators.md.",
                names.events_stream, names.events_stream
            ),
            "parameters": {
                "aggregateType": {"enum": aggregate_types, "description": "The aggregate type"},
                "aggregateId": {"description": "The aggregate id; `.`, `*`, `>` and whitespace are published as `_`"},
                "eventType": {"enum": event_types, "description": "The event type"},
            },
            "messages": event_messages,
        }),
    );
    operations.insert(
        "publishEvents".into(),
        json!({
            "action": "send",
            "title": "Corral publishes each sequenced event",
            "description": "Exactly once in position order (deterministic Nats-Msg-Id, a checkpoint in PostgreSQL); one process of the cluster publishes.",
            "channel": {"$ref": "#/channels/events"},
            "messages": event_refs,
        }),
    );

    // The membership feed.
    messages.insert(
        "membershipChange".into(),
        message(
            "membershipChange",
            "Membership change",
            "A member entered or left a watched group",
            &format!("{SCHEMAS_DIR}/membership/change.json"),
            Some("#/components/schemas/MembershipHeaders"),
        ),
    );
    channels.insert(
        "membershipFeed".into(),
        json!({
            "address": format!("{}.{{watchId}}.{{change}}", names.membership_subject_prefix),
            "title": "Membership feed",
            "description": format!(
                "Each ENTERED/LEFT change of every registered watch (registerMembershipWatch, corral watch add), once, in position order, on stream {}; with CORRAL_NATS_NAMESPACE=<ns> the stream is {}_<ns> and the subjects corral.<ns>.membership.>. docs/integrators.md.",
                names.membership_stream, names.membership_stream
            ),
            "parameters": {
                "watchId": {"description": "The watch's UUID"},
                "change": {"enum": ["Entered", "Left"], "description": "Entered or left"},
            },
            "messages": {"membershipChange": {"$ref": "#/components/messages/membershipChange"}},
        }),
    );
    operations.insert(
        "publishMembershipFeed".into(),
        json!({
            "action": "send",
            "title": "Corral publishes each change of each registered watch",
            "description": "Exactly once in position order (Nats-Msg-Id <watchId>:<position>:<index>; the feed resumes from the stream's last message); one process of the cluster publishes.",
            "channel": {"$ref": "#/channels/membershipFeed"},
            "messages": [{"$ref": "#/channels/membershipFeed/messages/membershipChange"}],
        }),
    );

    // The feeds Corral consumes.
    let feeds = [
        (
            "inventoryDevices",
            &names.inventory.devices_subject,
            &names.inventory.stream,
            "devices",
            "inventory/devices.json",
            "Device inventory",
            "docs/inventory.md",
        ),
        (
            "inventoryServices",
            &names.inventory.services_subject,
            &names.inventory.stream,
            "services",
            "inventory/services.json",
            "Service inventory",
            "docs/inventory.md",
        ),
        (
            "telemetrySysmon",
            &names.telemetry.devices_subject,
            &names.telemetry.stream,
            "sysmon",
            "telemetry/sysmon.json",
            "Sysmon samples",
            "docs/health.md",
        ),
        (
            "telemetryServices",
            &names.telemetry.services_subject,
            &names.telemetry.stream,
            "serviceChecks",
            "telemetry/services.json",
            "Service checks",
            "docs/health.md",
        ),
    ];
    for (channel, subject, stream, msg, schema, title, doc) in feeds {
        messages.insert(
            msg.into(),
            message(
                msg,
                title,
                &format!("A batch: {title}"),
                &format!("{SCHEMAS_DIR}/{schema}"),
                None,
            ),
        );
        channels.insert(
            channel.into(),
            json!({
                "address": subject,
                "title": title,
                "description": format!("Corral consumes this subject from stream {stream} with a durable consumer; each message is a JSON array. {doc}."),
                "messages": {msg: {"$ref": format!("#/components/messages/{msg}")}},
            }),
        );
        operations.insert(
            format!("receive{}{}", channel[..1].to_uppercase(), &channel[1..]),
            json!({
                "action": "receive",
                "title": format!("Corral ingests {}", title.to_lowercase()),
                "channel": {"$ref": format!("#/channels/{channel}")},
                "messages": [{"$ref": format!("#/channels/{channel}/messages/{msg}")}],
            }),
        );
    }

    // Sweeps: the jobs and heartbeat buckets and the report stream.
    let sweeps = &names.sweeps;
    let sweep_channels = [
        ("sweepJobs", format!("$KV.{}.{JOB_KEY_PREFIX}.{{pollerId}}.{{runId}}", sweeps.jobs_bucket), "sweepJob", "sweeps/job.json", "Sweep jobs", "send", format!("Corral puts one key per run and poller in KV bucket {}; deleting it cancels the run.", sweeps.jobs_bucket)),
        ("pollerHeartbeats", format!("$KV.{}.{{pollerId}}", sweeps.pollers_bucket), "pollerHeartbeat", "sweeps/heartbeat.json", "Poller heartbeats", "receive", format!("Pollers put their heartbeat in KV bucket {}; Corral reads it to pick pollers.", sweeps.pollers_bucket)),
        ("sweepReports", format!("{}.{{runId}}", sweeps.reports_prefix), "sweepReport", "sweeps/report.json", "Sweep reports", "receive", format!("Pollers publish reports to stream {} with deterministic Nats-Msg-Ids; Corral consumes them durably.", sweeps.reports_stream)),
    ];
    for (channel, address, msg, schema, title, action, description) in sweep_channels {
        messages.insert(
            msg.into(),
            message(msg, title, title, &format!("{SCHEMAS_DIR}/{schema}"), None),
        );
        let mut parameters = Map::new();
        if address.contains("{pollerId}") {
            parameters.insert("pollerId".into(), json!({"description": "The poller's id"}));
        }
        if address.contains("{runId}") {
            parameters.insert(
                "runId".into(),
                json!({"description": "The sweep run's UUID"}),
            );
        }
        channels.insert(
            channel.into(),
            json!({
                "address": address,
                "title": title,
                "description": format!("{description} docs/sweeps.md."),
                "parameters": parameters,
                "messages": {msg: {"$ref": format!("#/components/messages/{msg}")}},
            }),
        );
        let verb = if action == "send" {
            "publish"
        } else {
            "receive"
        };
        operations.insert(
            format!("{verb}{}{}", channel[..1].to_uppercase(), &channel[1..]),
            json!({
                "action": action,
                "title": title,
                "channel": {"$ref": format!("#/channels/{channel}")},
                "messages": [{"$ref": format!("#/channels/{channel}/messages/{msg}")}],
            }),
        );
    }

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Corral",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Every NATS subject Corral publishes or consumes, under the production names (a namespace renames them as docs/integrators.md says). Generated from the Rust types; regenerate with `{REGENERATE}`."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "The NATS server with JetStream that NATS_URL names",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {"EventHeaders": event_headers(), "MembershipHeaders": membership_headers()},
            "messages": messages,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn docs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
    }

    fn committed() -> BTreeMap<String, String> {
        let root = docs_dir();
        let mut out = BTreeMap::new();
        let mut dirs = vec![root.join(SCHEMAS_DIR)];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let rel = path.strip_prefix(&root).expect("under docs");
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    out.insert(rel.to_string_lossy().replace('\\', "/"), text);
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string(root.join(DOCUMENT)) {
            out.insert(DOCUMENT.into(), text);
        }
        out
    }

    #[test]
    fn committed_files_match_the_code() {
        let generated = files();
        let committed = committed();
        let stale: Vec<&String> = committed
            .keys()
            .filter(|k| !generated.contains_key(*k))
            .collect();
        let missing: Vec<&String> = generated
            .keys()
            .filter(|k| !committed.contains_key(*k))
            .collect();
        let differ: Vec<&String> = generated
            .iter()
            .filter(|(k, v)| committed.get(*k).is_some_and(|c| c != *v))
            .map(|(k, _)| k)
            .collect();
        assert!(
            stale.is_empty() && missing.is_empty() && differ.is_empty(),
            "docs/ is out of date (stale {stale:?}, missing {missing:?}, different {differ:?}); run `{REGENERATE}`"
        );
    }

    #[test]
    fn the_envelope_schema_names_exactly_the_envelope_keys() {
        let entry = crate::publisher::message::tests::entry("Group", "g", json!({}));
        let envelope = entry.envelope();
        let mut keys: Vec<&str> = envelope
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut declared = ENVELOPE_KEYS.to_vec();
        declared.sort_unstable();
        assert_eq!(keys, declared);
    }

    #[test]
    fn every_event_type_has_a_message_and_a_schema() {
        let files = files();
        let doc: Value = serde_json::from_str(&files[DOCUMENT]).expect("json");
        for d in catalog::catalog() {
            let key = format!("{}.{}", d.aggregate_type, d.event_type);
            assert!(doc["components"]["messages"][&key].is_object(), "{key}");
            assert!(files.contains_key(&event_schema_path(&d)), "{key}");
        }
        // Every $ref to a component or a channel message resolves.
        let text = &files[DOCUMENT];
        for part in text.split("\"$ref\": \"").skip(1) {
            let target = &part[..part.find('"').expect("closing quote")];
            if let Some(pointer) = target.strip_prefix('#') {
                let resolved = pointer.split('/').skip(1).try_fold(&doc, |v, t| v.get(t));
                assert!(resolved.is_some(), "dangling {target}");
            } else {
                assert!(files.contains_key(target), "missing file {target}");
            }
        }
    }

    #[test]
    fn headers_schema_covers_the_publisher_headers() {
        let schema = event_headers();
        for (name, _) in crate::publisher::message::sample_headers() {
            assert!(schema["properties"][name].is_object(), "{name}");
        }
        let schema = membership_headers();
        for (name, _) in sample_message().headers {
            assert!(
                schema["properties"][name]["description"].is_string()
                    || schema["properties"][name]["const"].is_string(),
                "{name}"
            );
        }
    }

    #[test]
    fn a_membership_message_body_has_the_schema_keys() {
        let body: Value = serde_json::from_slice(&sample_message().body).expect("json");
        let schema = &files()[&format!("{SCHEMAS_DIR}/membership/change.json")];
        let schema: Value = serde_json::from_str(schema).expect("json");
        let mut keys: Vec<&String> = body.as_object().expect("object").keys().collect();
        let mut declared: Vec<&String> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .collect();
        keys.sort();
        declared.sort();
        assert_eq!(keys, declared);
    }
}
