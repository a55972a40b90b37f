use serde_json::{Map, Value};
use uuid::Uuid;

use super::GroupType;

/// What a caller may ask a group to do. Ids of the group itself travel in the command because
/// some checks (cycles) need it; the executor routes the command to that aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupCommand {
    /// Create the system root of a type if it does not exist yet (idempotent).
    EnsureRoot { group_type: GroupType },
    /// Create a group under a parent of the same type.
    Create {
        id: Uuid,
        name: String,
        group_type: GroupType,
        parent_id: Uuid,
        description: Option<String>,
        metadata: Option<Map<String, Value>>,
    },
    /// Give the group a new name.
    Rename { id: Uuid, name: String },
    /// Change description and/or metadata; `None` keeps the current value.
    Update {
        id: Uuid,
        description: Option<String>,
        metadata: Option<Map<String, Value>>,
    },
    /// Put the group (and its subtree) under another parent.
    Move { id: Uuid, new_parent_id: Uuid },
    /// Delete a group that has no children.
    Delete { id: Uuid },
    /// Give the group a rule, parsed and validated by `corral_domain::rule` (group paths
    /// resolved to ids); the aggregate checks what needs other groups.
    SetRule {
        id: Uuid,
        /// The rule's canonical JSON form.
        rule: Value,
        /// Its normalized text.
        text: String,
        /// The kind of entity it selects.
        kind: GroupType,
        /// Its `group:` references.
        refs: Vec<super::RuleRef>,
        enabled: bool,
    },
    /// Remove the group's rule.
    ClearRule { id: Uuid },
    /// Record the capability flags the capabilities worker computed; a no-op when they equal
    /// the group's current ones. Allowed on system roots (the flags are not a user edit).
    SetCapabilities {
        id: Uuid,
        capabilities: super::GroupCapabilities,
    },
}

impl GroupCommand {
    /// Whether retrying this command after a version conflict gives the same outcome as if it
    /// had run first (it commutes with any concurrent change).
    pub fn commutes(&self) -> bool {
        // SetCapabilities sets absolute flags whatever else changed meanwhile.
        matches!(
            self,
            GroupCommand::EnsureRoot { .. } | GroupCommand::SetCapabilities { .. }
        )
    }
}
