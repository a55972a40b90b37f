//! The inventory Corral mirrors: devices and services as discovery systems report them.
//! These are plain records (stored in the `devices` and `services` tables), the entities that
//! group rules match.
//!
//! Every feed (GraphQL, NATS, `corral import`) sends [`DeviceInput`] / [`ServiceInput`] (the
//! same camelCase JSON shape) and validates it here into a [`Device`] / [`Service`]: an item
//! is valid or not on its own, so a batch applies its valid items and reports the others.

mod check;
pub mod events;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use check::Check;

/// Most items one upsert or remove call takes (GraphQL) or one statement writes (feeds).
pub const MAX_BATCH: usize = 1000;
/// Longest id (characters).
pub const MAX_ID_CHARS: usize = 256;
/// Longest text field, tag value or metadata value (characters).
pub const MAX_TEXT_CHARS: usize = 1024;
/// Longest tag or metadata key (characters).
pub const MAX_KEY_CHARS: usize = 64;
/// Most tags, and most metadata keys, on one record.
pub const MAX_KEYS: usize = 64;
/// Most discovery sources on one device.
pub const MAX_DISCOVERY_SOURCES: usize = 32;

/// A device as stored. Optional fields are `None` when the source did not report them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// The source's id.
    pub id: String,
    /// Host name.
    pub hostname: Option<String>,
    /// One IP address (v4 or v6), in its canonical text form.
    pub ip: Option<String>,
    /// MAC address, lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    /// Vendor name.
    pub vendor: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Operating system name.
    pub os: Option<String>,
    /// Operating system version.
    pub os_version: Option<String>,
    /// Network partition.
    pub partition: Option<String>,
    /// Site.
    pub site: Option<String>,
    /// Device type (`type` in rules and GraphQL).
    pub device_type: Option<String>,
    /// Agent that reports it.
    pub agent_id: Option<String>,
    /// Poller that reports it.
    pub poller_id: Option<String>,
    /// Tags: lower-case key to value (`""` for a bare key).
    pub tags: BTreeMap<String, String>,
    /// Metadata: lower-case key to value.
    pub metadata: BTreeMap<String, String>,
    /// Which discovery sources saw it.
    pub discovery_sources: Vec<String>,
    /// Whether it is reachable.
    pub is_available: Option<bool>,
    /// First seen by a discovery source.
    pub first_seen: Option<DateTime<Utc>>,
    /// Last seen by a discovery source.
    pub last_seen: Option<DateTime<Utc>>,
}

/// A service running on a device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// The source's id, e.g. `<device_id>/<type>/<name>`.
    pub id: String,
    /// The host device's id.
    pub device_id: String,
    /// Service type (`type` in rules and GraphQL), e.g. `http`.
    pub service_type: String,
    /// Service name.
    pub name: String,
    /// Port, when it listens on one.
    pub port: Option<i32>,
    /// Last reported status.
    pub status: Option<String>,
    /// Tags: lower-case key to value (`""` for a bare key).
    pub tags: BTreeMap<String, String>,
    /// Metadata: lower-case key to value.
    pub metadata: BTreeMap<String, String>,
    /// Last seen.
    pub last_seen: Option<DateTime<Utc>>,
}

/// A device as a feed reports it (GraphQL `DeviceInput`, NATS, NDJSON). Unknown keys are
/// ignored; an upsert replaces the whole stored record with this one (omitted fields become
/// null), except `firstSeen`, which keeps the earliest value ever reported.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[expect(
    missing_docs,
    reason = "the fields are those of Device, documented there"
)]
pub struct DeviceInput {
    pub id: String,
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
    /// `key` or `key=value` strings.
    pub tags: Option<Vec<String>>,
    /// A JSON object of strings.
    pub metadata: Option<Value>,
    pub discovery_sources: Option<Vec<String>>,
    pub is_available: Option<bool>,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// A service as a feed reports it. `id` defaults to `<deviceId>/<type>/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[expect(
    missing_docs,
    reason = "the fields are those of Service, documented there"
)]
pub struct ServiceInput {
    pub id: Option<String>,
    pub device_id: String,
    #[serde(rename = "type")]
    pub service_type: String,
    pub name: String,
    pub port: Option<i64>,
    pub status: Option<String>,
    pub tags: Option<Vec<String>>,
    pub metadata: Option<Value>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// Why one input field is invalid. `field` is the camelCase path inside the item
/// (`ip`, `tags[2]`, `metadata.rack`); callers prefix the item's place (`devices[3].`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field inside the item.
    pub field: String,
    /// What is wrong, for humans.
    pub message: String,
}

impl DeviceInput {
    /// Validates and normalizes: texts trimmed (empty = absent), `ip` canonical, `mac`
    /// lower-case with colons, tag and metadata keys lower-case, sources deduplicated.
    pub fn validate(&self) -> Result<Device, Vec<FieldError>> {
        let mut c = Check::default();
        let device = Device {
            id: c.id("id", &self.id),
            hostname: c.text("hostname", self.hostname.as_deref()),
            ip: c.ip(self.ip.as_deref()),
            mac: c.mac(self.mac.as_deref()),
            vendor: c.text("vendor", self.vendor.as_deref()),
            model: c.text("model", self.model.as_deref()),
            os: c.text("os", self.os.as_deref()),
            os_version: c.text("osVersion", self.os_version.as_deref()),
            partition: c.text("partition", self.partition.as_deref()),
            site: c.text("site", self.site.as_deref()),
            device_type: c.text("type", self.device_type.as_deref()),
            agent_id: c.text("agentId", self.agent_id.as_deref()),
            poller_id: c.text("pollerId", self.poller_id.as_deref()),
            tags: c.tags(self.tags.as_deref()),
            metadata: c.metadata(self.metadata.as_ref()),
            discovery_sources: c.sources(self.discovery_sources.as_deref()),
            is_available: self.is_available,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
        };
        c.finish(device)
    }
}

impl ServiceInput {
    /// Validates and normalizes like [`DeviceInput::validate`]; `port` must be 1..=65535.
    pub fn validate(&self) -> Result<Service, Vec<FieldError>> {
        let mut c = Check::default();
        let device_id = c.id("deviceId", &self.device_id);
        let service_type = c.required("type", &self.service_type);
        let name = c.required("name", &self.name);
        let id = match &self.id {
            Some(id) => c.id("id", id),
            // Derived from checked parts: only its length can still be wrong.
            None if c.0.is_empty() => c.id("id", &format!("{device_id}/{service_type}/{name}")),
            None => String::new(),
        };
        let port = match self.port {
            None => None,
            Some(p) if (1..=65535).contains(&p) => i32::try_from(p).ok(),
            Some(_) => {
                c.fail("port", "must be between 1 and 65535");
                None
            }
        };
        let service = Service {
            id,
            device_id,
            service_type,
            name,
            port,
            status: c.text("status", self.status.as_deref()),
            tags: c.tags(self.tags.as_deref()),
            metadata: c.metadata(self.metadata.as_ref()),
            last_seen: self.last_seen,
        };
        c.finish(service)
    }
}

/// Reads one feed item (a JSON value in the input shape) and validates it. A value of the
/// wrong shape is one error on the item itself (field `""`).
pub fn device_from_json(value: Value) -> Result<Device, Vec<FieldError>> {
    serde_json::from_value::<DeviceInput>(value)
        .map_err(shape_error)?
        .validate()
}

/// Reads one service item; see [`device_from_json`].
pub fn service_from_json(value: Value) -> Result<Service, Vec<FieldError>> {
    serde_json::from_value::<ServiceInput>(value)
        .map_err(shape_error)?
        .validate()
}

fn shape_error(e: serde_json::Error) -> Vec<FieldError> {
    vec![FieldError {
        field: String::new(),
        message: e.to_string(),
    }]
}

#[cfg(test)]
mod tests;
