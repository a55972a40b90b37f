//! The Group aggregate: a node in the device or service hierarchy.

mod aggregate;
mod commands;
mod error;
mod events;
mod services;

pub use aggregate::Group;
pub use commands::GroupCommand;
pub use error::GroupError;
pub use events::{GroupCapabilities, GroupDetails, GroupEvent};
pub use services::{
    rule_reaches, rules_read_effective, DirectoryEntry, DirectoryError, GroupDirectory,
    InMemoryDirectory,
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The two kinds of inventory a group can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GroupType {
    /// Devices (hosts, switches, ...).
    Device,
    /// Services running on devices.
    Service,
}

impl GroupType {
    /// Every group type.
    pub const ALL: [GroupType; 2] = [GroupType::Device, GroupType::Service];

    /// The stored name (`DEVICE`, `SERVICE`).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupType::Device => "DEVICE",
            GroupType::Service => "SERVICE",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "DEVICE" => Some(GroupType::Device),
            "SERVICE" => Some(GroupType::Service),
            _ => None,
        }
    }

    /// The well-known id of this type's system root group, the same on every installation so
    /// that creating it is idempotent.
    pub fn root_id(self) -> Uuid {
        let namespace = Uuid::from_u128(0x8d1c_57a4_0b6e_4f7e_9c55_2a1e_6b7d_c0de);
        Uuid::new_v5(&namespace, self.as_str().as_bytes())
    }
}

/// A `group:` reference of a rule, as stored in `GroupRuleSet` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct RuleRef {
    /// The referenced group.
    pub group_id: Uuid,
    /// `group:X:direct` (X's own members) rather than `group:X` (its effective members).
    pub direct: bool,
}

/// Name of every system root group.
pub const ROOT_NAME: &str = "Inventory";
/// How many levels a group may sit below its root.
pub const MAX_DEPTH: u32 = 10;
/// Longest group name, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4096;
/// Largest metadata object, serialized as JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
