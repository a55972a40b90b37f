use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{GroupType, RuleRef};

/// What happened to a group. `event_type` is the variant name; field names are part of the
/// stored contract (the `group_registry` trigger and integrators read them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GroupEvent {
    /// The group came into being.
    GroupCreated {
        group_type: GroupType,
        name: String,
        parent_id: Option<Uuid>,
        description: Option<String>,
        metadata: Map<String, Value>,
        is_system: bool,
    },
    /// The group got a new name.
    GroupRenamed { name: String, previous_name: String },
    /// Description and/or metadata changed; both carry their new values.
    GroupUpdated {
        description: Option<String>,
        metadata: Map<String, Value>,
    },
    /// The group moved to another parent.
    GroupMoved {
        previous_parent_id: Uuid,
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
    GroupRuleCleared { rule_version: u64 },
}

impl DomainEvent for GroupEvent {
    fn event_type(&self) -> String {
        match self {
            GroupEvent::GroupCreated { .. } => "GroupCreated",
            GroupEvent::GroupRenamed { .. } => "GroupRenamed",
            GroupEvent::GroupUpdated { .. } => "GroupUpdated",
            GroupEvent::GroupMoved { .. } => "GroupMoved",
            GroupEvent::GroupDeleted { .. } => "GroupDeleted",
            GroupEvent::GroupRuleSet { .. } => "GroupRuleSet",
            GroupEvent::GroupRuleCleared { .. } => "GroupRuleCleared",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
