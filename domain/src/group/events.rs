use cqrs_es::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{GroupType, RuleRef};

/// A group's description and metadata, as `GroupUpdated` records the values it replaced.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct GroupDetails {
    /// The description (null when the group had none).
    pub description: Option<String>,
    /// The metadata object.
    pub metadata: Map<String, Value>,
}

/// What a group's effective members offer, as the capabilities worker computes it from recent
/// data (`docs/capabilities.md`). A group that never had a `GroupCapabilitiesChanged` has
/// every flag false.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub struct GroupCapabilities {
    /// Some effective member device sent sysmon telemetry in the recent window.
    pub has_sysmon: bool,
    /// Some effective member device that is not removed lists `snmp` among its discovery
    /// sources.
    pub has_snmp: bool,
    /// Some effective member service (service groups), or some service of an effective
    /// member device (device groups), was checked in the recent window.
    pub has_services: bool,
}

/// What happened to a group. `event_type` is the variant name; field names are part of the
/// stored contract (the `group_registry` trigger and integrators read them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum GroupEvent {
    /// The group came into being.
    GroupCreated {
        /// `DEVICE` or `SERVICE`: the kind of members it holds.
        group_type: GroupType,
        /// Its name, unique (case-insensitively) among its siblings; in Unicode NFC (events
        /// written before names were normalized may hold another form).
        name: String,
        /// Its parent; null only for a system root.
        parent_id: Option<Uuid>,
        /// Free text, or null.
        description: Option<String>,
        /// A JSON object of the caller's choosing.
        metadata: Map<String, Value>,
        /// True for the system roots (`Inventory`), which cannot be edited.
        is_system: bool,
    },
    /// The group got a new name.
    GroupRenamed {
        /// The new name, in Unicode NFC.
        name: String,
        /// The name it replaced.
        previous_name: String,
    },
    /// Description and/or metadata changed; both carry their new values, and `previous` the
    /// values they replaced.
    GroupUpdated {
        /// The new description (null: none).
        description: Option<String>,
        /// The new metadata object.
        metadata: Map<String, Value>,
        /// The description and metadata before the change. Version 2 added it; it is null
        /// only for version-1 events (upcast), which did not record it. Required, so a
        /// version-1 payload that was not upcast does not deserialize.
        #[serde(deserialize_with = "present")]
        previous: Option<GroupDetails>,
    },
    /// The group moved to another parent.
    GroupMoved {
        /// The parent it left.
        previous_parent_id: Uuid,
        /// The parent it is under now.
        new_parent_id: Uuid,
    },
    /// The group was deleted.
    GroupDeleted {},
    /// The group got a (new) rule, or its rule was enabled or disabled.
    GroupRuleSet {
        /// The canonical JSON form (see `corral_domain::rule`).
        rule: Value,
        /// The normalized text form.
        text: String,
        /// Whether workers evaluate it.
        enabled: bool,
        /// 1, 2, ... per group; rule-driven membership events name it.
        rule_version: u64,
        /// Its `group:` references (cycle checks read them).
        refs: Vec<RuleRef>,
    },
    /// The group's rule was removed; its rule-driven members leave.
    GroupRuleCleared {
        /// 1, 2, ... per group, continuing the sequence of `GroupRuleSet`.
        rule_version: u64,
    },
    /// At least one of the group's capability flags changed. Written by the capabilities
    /// worker (metadata `source` `worker`) from recent telemetry and the inventory, only when a
    /// flag changes; the flags describe the group's effective members (its own and every
    /// descendant's). See `docs/capabilities.md`.
    GroupCapabilitiesChanged {
        /// Some effective member device sent sysmon telemetry in the recent window.
        has_sysmon: bool,
        /// Some effective member device that is not removed lists `snmp` (any case) among its
        /// discovery sources.
        has_snmp: bool,
        /// Service groups: some effective member service was checked in the recent window.
        /// Device groups: some service (not removed) of an effective member device was.
        has_services: bool,
        /// The flags before the change (all false for a group that had none yet).
        previous: GroupCapabilities,
    },
    /// Test-only (the `probe-variant` feature, never enabled in a build that ships): a
    /// variant no reader handles, so that a build with it shows every reader that must.
    #[cfg(feature = "probe-variant")]
    Probe {},
}

/// Deserializes an `Option` that must be present (serde treats a missing `Option` field as
/// `None` unless the field has a `deserialize_with`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

impl GroupEvent {
    /// `GroupCreated`: the stored `event_type` of [`GroupEvent::GroupCreated`].
    pub const CREATED: &'static str = "GroupCreated";
    /// `GroupRenamed`.
    pub const RENAMED: &'static str = "GroupRenamed";
    /// `GroupUpdated`.
    pub const UPDATED: &'static str = "GroupUpdated";
    /// `GroupMoved`.
    pub const MOVED: &'static str = "GroupMoved";
    /// `GroupDeleted`.
    pub const DELETED: &'static str = "GroupDeleted";
    /// `GroupRuleSet`.
    pub const RULE_SET: &'static str = "GroupRuleSet";
    /// `GroupRuleCleared`.
    pub const RULE_CLEARED: &'static str = "GroupRuleCleared";
    /// `GroupCapabilitiesChanged`.
    pub const CAPABILITIES_CHANGED: &'static str = "GroupCapabilitiesChanged";
    /// `Probe`: the test-only variant of the `probe-variant` feature.
    #[cfg(feature = "probe-variant")]
    pub const PROBE: &'static str = "Probe";

    /// Every event type, in declaration order (SQL filters that name event types build their
    /// lists from these constants, so they cannot drift from the enum).
    pub const TYPES: &'static [&'static str] = &[
        Self::CREATED,
        Self::RENAMED,
        Self::UPDATED,
        Self::MOVED,
        Self::DELETED,
        Self::RULE_SET,
        Self::RULE_CLEARED,
        Self::CAPABILITIES_CHANGED,
        #[cfg(feature = "probe-variant")]
        Self::PROBE,
    ];

    /// The stored `event_type` of this event (the variant name), without allocating.
    pub fn name(&self) -> &'static str {
        match self {
            GroupEvent::GroupCreated { .. } => Self::CREATED,
            GroupEvent::GroupRenamed { .. } => Self::RENAMED,
            GroupEvent::GroupUpdated { .. } => Self::UPDATED,
            GroupEvent::GroupMoved { .. } => Self::MOVED,
            GroupEvent::GroupDeleted { .. } => Self::DELETED,
            GroupEvent::GroupRuleSet { .. } => Self::RULE_SET,
            GroupEvent::GroupRuleCleared { .. } => Self::RULE_CLEARED,
            GroupEvent::GroupCapabilitiesChanged { .. } => Self::CAPABILITIES_CHANGED,
            #[cfg(feature = "probe-variant")]
            GroupEvent::Probe {} => Self::PROBE,
        }
    }

    /// The current version of an event type (the one [`DomainEvent::event_version`] writes),
    /// or `None` for a type this code does not know.
    pub fn current_version(event_type: &str) -> Option<&'static str> {
        match event_type {
            // 2: `previous`.
            Self::UPDATED => Some("2"),
            t if Self::TYPES.contains(&t) => Some("1"),
            _ => None,
        }
    }
}

impl DomainEvent for GroupEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        Self::current_version(&self.event_type())
            .unwrap_or("1")
            .to_string()
    }
}
