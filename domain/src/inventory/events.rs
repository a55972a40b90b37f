//! Inventory history: every real change to a device or service is an event in the log
//! (aggregates `Device` and `Service`, aggregate id = the record's id), written by the
//! inventory's bulk write path in the transaction that changes the table (migration 0011).
//!
//! The first event of a record carries the whole record; later ones carry the fields that
//! changed, each with its value before and after (field names are the stored column names:
//! `os_version`, `type`, ...). [`RecordHistory`] folds them back into the record as it was.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The aggregate type of device events.
pub const DEVICE: &str = "Device";
/// The aggregate type of service events.
pub const SERVICE: &str = "Service";

/// One field an inventory event changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FieldChange {
    /// The stored column name (`hostname`, `os_version`, `type`, `tags`, ...).
    pub field: String,
    /// The value before (JSON `null` when unset).
    pub before: Value,
    /// The value after.
    pub after: Value,
}

/// A device's stored fields (everything but its id), as the first event of its history
/// records them. Timestamps are RFC 3339 in UTC with microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[expect(
    missing_docs,
    reason = "the fields are those of inventory::Device, documented there"
)]
pub struct DeviceRecord {
    pub hostname: Option<String>,
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub partition: Option<String>,
    pub site: Option<String>,
    #[serde(rename = "type")]
    pub device_type: Option<String>,
    pub agent_id: Option<String>,
    pub poller_id: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub discovery_sources: Vec<String>,
    pub is_available: Option<bool>,
    #[schemars(with = "Option<String>")]
    pub first_seen: Option<DateTime<Utc>>,
    #[schemars(with = "Option<String>")]
    pub last_seen: Option<DateTime<Utc>>,
}

/// A service's stored fields (everything but its id).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[expect(
    missing_docs,
    reason = "the fields are those of inventory::Service, documented there"
)]
pub struct ServiceRecord {
    pub device_id: String,
    #[serde(rename = "type")]
    pub service_type: String,
    pub name: String,
    pub port: Option<i32>,
    pub status: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    #[schemars(with = "Option<String>")]
    pub last_seen: Option<DateTime<Utc>>,
}

/// What happened to a device. Field names are part of the stored contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum DeviceEvent {
    /// The device entered the inventory (or its history starts here: the migration that
    /// introduced inventory events recorded every existing device once, with source
    /// `migration`). Carries the whole record.
    DeviceRecorded {
        /// The record as stored.
        record: Box<DeviceRecord>,
    },
    /// An upsert changed fields of a live device.
    DeviceChanged {
        /// The fields that changed, in name order, with before and after.
        changes: Vec<FieldChange>,
    },
    /// An upsert brought a removed device back; `changes` compares with the record it had
    /// when it was removed.
    DeviceRevived {
        /// The fields that changed, in name order, with before and after.
        changes: Vec<FieldChange>,
    },
    /// The device was removed (tombstoned); its services stay.
    DeviceRemoved {},
}

/// What happened to a service. Field names are part of the stored contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceEvent {
    /// The service entered the inventory (or its history starts here, source `migration`).
    /// Carries the whole record.
    ServiceRecorded {
        /// The record as stored.
        record: Box<ServiceRecord>,
    },
    /// An upsert changed fields of a live service.
    ServiceChanged {
        /// The fields that changed, in name order, with before and after.
        changes: Vec<FieldChange>,
    },
    /// An upsert brought a removed service back; `changes` compares with the record it had
    /// when it was removed.
    ServiceRevived {
        /// The fields that changed, in name order, with before and after.
        changes: Vec<FieldChange>,
    },
    /// The service was removed (tombstoned).
    ServiceRemoved {},
}

impl DeviceRecord {
    /// The device `id` with these fields.
    pub fn into_device(self, id: String) -> super::Device {
        super::Device {
            id,
            hostname: self.hostname,
            ip: self.ip,
            mac: self.mac,
            vendor: self.vendor,
            model: self.model,
            os: self.os,
            os_version: self.os_version,
            partition: self.partition,
            site: self.site,
            device_type: self.device_type,
            agent_id: self.agent_id,
            poller_id: self.poller_id,
            tags: self.tags,
            metadata: self.metadata,
            discovery_sources: self.discovery_sources,
            is_available: self.is_available,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
        }
    }
}

impl ServiceRecord {
    /// The service `id` with these fields.
    pub fn into_service(self, id: String) -> super::Service {
        super::Service {
            id,
            device_id: self.device_id,
            service_type: self.service_type,
            name: self.name,
            port: self.port,
            status: self.status,
            tags: self.tags,
            metadata: self.metadata,
            last_seen: self.last_seen,
        }
    }
}

impl DeviceEvent {
    /// The current version of an event type, or `None` for a type this code does not know.
    pub fn current_version(event_type: &str) -> Option<&'static str> {
        match event_type {
            "DeviceRecorded" | "DeviceChanged" | "DeviceRevived" | "DeviceRemoved" => Some("1"),
            _ => None,
        }
    }
}

impl ServiceEvent {
    /// The current version of an event type, or `None` for a type this code does not know.
    pub fn current_version(event_type: &str) -> Option<&'static str> {
        match event_type {
            "ServiceRecorded" | "ServiceChanged" | "ServiceRevived" | "ServiceRemoved" => Some("1"),
            _ => None,
        }
    }
}

impl cqrs_es::DomainEvent for DeviceEvent {
    fn event_type(&self) -> String {
        match self {
            DeviceEvent::DeviceRecorded { .. } => "DeviceRecorded",
            DeviceEvent::DeviceChanged { .. } => "DeviceChanged",
            DeviceEvent::DeviceRevived { .. } => "DeviceRevived",
            DeviceEvent::DeviceRemoved {} => "DeviceRemoved",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        Self::current_version(&self.event_type())
            .unwrap_or("1")
            .to_string()
    }
}

impl cqrs_es::DomainEvent for ServiceEvent {
    fn event_type(&self) -> String {
        match self {
            ServiceEvent::ServiceRecorded { .. } => "ServiceRecorded",
            ServiceEvent::ServiceChanged { .. } => "ServiceChanged",
            ServiceEvent::ServiceRevived { .. } => "ServiceRevived",
            ServiceEvent::ServiceRemoved {} => "ServiceRemoved",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        Self::current_version(&self.event_type())
            .unwrap_or("1")
            .to_string()
    }
}

/// A device's or service's record folded from its events, up to some position.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordHistory {
    /// The fields (JSON, by column name); `None` before the first event.
    pub fields: Option<Map<String, Value>>,
    /// Whether the record was removed.
    pub removed: bool,
    /// Events folded (the record's version).
    pub version: i64,
}

impl RecordHistory {
    fn record<T: Serialize>(&mut self, record: &T) {
        self.fields = match serde_json::to_value(record) {
            Ok(Value::Object(map)) => Some(map),
            _ => Some(Map::new()),
        };
        self.removed = false;
    }

    fn change(&mut self, changes: &[FieldChange]) {
        let fields = self.fields.get_or_insert_with(Map::new);
        for c in changes {
            fields.insert(c.field.clone(), c.after.clone());
        }
    }

    /// Applies one device event.
    pub fn apply_device(&mut self, event: &DeviceEvent) {
        self.version += 1;
        match event {
            DeviceEvent::DeviceRecorded { record } => self.record(record),
            DeviceEvent::DeviceChanged { changes } => self.change(changes),
            DeviceEvent::DeviceRevived { changes } => {
                self.change(changes);
                self.removed = false;
            }
            DeviceEvent::DeviceRemoved {} => self.removed = true,
        }
    }

    /// Applies one service event.
    pub fn apply_service(&mut self, event: &ServiceEvent) {
        self.version += 1;
        match event {
            ServiceEvent::ServiceRecorded { record } => self.record(record),
            ServiceEvent::ServiceChanged { changes } => self.change(changes),
            ServiceEvent::ServiceRevived { changes } => {
                self.change(changes);
                self.removed = false;
            }
            ServiceEvent::ServiceRemoved {} => self.removed = true,
        }
    }

    /// The folded fields as a `T` (`None` before the first event or when they do not decode).
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        let fields = self.fields.clone()?;
        serde_json::from_value(Value::Object(fields)).ok()
    }

    /// What an event changed, as audit `changes`: for a first event every field that is set
    /// (before `null`), for a removal `removed` false → true.
    pub fn changes_of_device(event: &DeviceEvent) -> Vec<FieldChange> {
        match event {
            DeviceEvent::DeviceRecorded { record } => set_fields(record),
            DeviceEvent::DeviceChanged { changes } | DeviceEvent::DeviceRevived { changes } => {
                changes.clone()
            }
            DeviceEvent::DeviceRemoved {} => vec![removed()],
        }
    }

    /// [`RecordHistory::changes_of_device`] for services.
    pub fn changes_of_service(event: &ServiceEvent) -> Vec<FieldChange> {
        match event {
            ServiceEvent::ServiceRecorded { record } => set_fields(record),
            ServiceEvent::ServiceChanged { changes } | ServiceEvent::ServiceRevived { changes } => {
                changes.clone()
            }
            ServiceEvent::ServiceRemoved {} => vec![removed()],
        }
    }
}

fn removed() -> FieldChange {
    FieldChange {
        field: "removed".into(),
        before: Value::Bool(false),
        after: Value::Bool(true),
    }
}

/// The fields of a first record that hold something (not null, not an empty list or object).
fn set_fields<T: Serialize>(record: &T) -> Vec<FieldChange> {
    let Ok(Value::Object(map)) = serde_json::to_value(record) else {
        return Vec::new();
    };
    let empty = |v: &Value| {
        v.is_null()
            || v.as_object().is_some_and(Map::is_empty)
            || v.as_array().is_some_and(Vec::is_empty)
    };
    let mut out: Vec<FieldChange> = map
        .into_iter()
        .filter(|(_, v)| !empty(v))
        .map(|(field, after)| FieldChange {
            field,
            before: Value::Null,
            after,
        })
        .collect();
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn device(v: Value) -> DeviceEvent {
        serde_json::from_value(v).expect("a device event")
    }

    #[test]
    fn folding_recorded_changed_removed_revived_gives_the_record_at_each_step() {
        let mut h = RecordHistory::default();
        h.apply_device(&device(json!({"DeviceRecorded": {"record": {
            "hostname": "a", "ip": null, "mac": null, "vendor": null, "model": null, "os": null,
            "os_version": null, "partition": null, "site": "ams", "type": null, "agent_id": null,
            "poller_id": null, "tags": {"env": "prod"}, "metadata": {}, "discovery_sources": [],
            "is_available": true, "first_seen": "2026-01-01T00:00:00.000000Z", "last_seen": null
        }}})));
        let first: DeviceRecord = h.decode().expect("a record");
        assert_eq!(first.hostname.as_deref(), Some("a"));
        assert_eq!(first.tags.get("env").map(String::as_str), Some("prod"));
        h.apply_device(&device(json!({"DeviceChanged": {"changes": [
            {"field": "hostname", "before": "a", "after": "b"}]}})));
        h.apply_device(&device(json!({"DeviceRemoved": {}})));
        assert!(h.removed);
        h.apply_device(&device(json!({"DeviceRevived": {"changes": [
            {"field": "site", "before": "ams", "after": null}]}})));
        let last: DeviceRecord = h.decode().expect("a record");
        assert!(!h.removed);
        assert_eq!(h.version, 4);
        assert_eq!(last.hostname.as_deref(), Some("b"));
        assert_eq!(last.site, None);
        assert_eq!(last.is_available, Some(true));
    }

    #[test]
    fn a_first_record_lists_only_the_fields_it_sets() {
        let record = DeviceRecord {
            hostname: Some("a".into()),
            ..DeviceRecord::default()
        };
        let changes = RecordHistory::changes_of_device(&DeviceEvent::DeviceRecorded {
            record: Box::new(record),
        });
        assert_eq!(
            changes,
            [FieldChange {
                field: "hostname".into(),
                before: Value::Null,
                after: json!("a")
            }]
        );
    }
}
