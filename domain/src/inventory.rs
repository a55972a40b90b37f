//! The inventory Corral mirrors: devices and services as discovery systems report them.
//! These are plain records (stored in the `devices` and `services` tables), the entities that
//! group rules match.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A device as stored. Optional fields are `None` when the source did not report them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// The source's id.
    pub id: String,
    /// Host name.
    pub hostname: Option<String>,
    /// One IP address (v4 or v6), in its canonical text form.
    pub ip: Option<String>,
    /// MAC address as reported.
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
    /// Tags: key to value (`""` for a bare key).
    pub tags: BTreeMap<String, String>,
    /// Metadata: key to value.
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
    /// Tags: key to value (`""` for a bare key).
    pub tags: BTreeMap<String, String>,
    /// Metadata: key to value.
    pub metadata: BTreeMap<String, String>,
    /// Last seen.
    pub last_seen: Option<DateTime<Utc>>,
}
