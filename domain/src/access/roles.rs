//! The RoleDefinition aggregate: a custom role, a named set of permissions of the catalog,
//! defined by an admin at run time. Every process puts a definition in force within a second
//! of its commit (the access registry's epoch moves), so the role → permission table is data,
//! audited and time-travelling like the rest of the log. The built-in roles (`admin`,
//! `operator`, `viewer`, `auditor`) come from the embedded policy and cannot be redefined.

use std::collections::BTreeSet;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AccessError, BUILT_IN_ROLES};

/// Every permission of the catalog, by its name in policies (the API's
/// `permissions::CATALOG` describes each).
pub const PERMISSIONS: [&str; 15] = [
    "group.read",
    "group.create",
    "group.edit",
    "group.move",
    "group.delete",
    "membership.edit",
    "rule.edit",
    "inventory.write",
    "telemetry.write",
    "audit.read",
    "dashboard.edit",
    "dashboard.template",
    "sweep.run",
    "access.manage",
    "feed.manage",
];

/// Longest role name, in characters.
pub const MAX_ROLE_CHARS: usize = 64;

/// The namespace of role aggregate ids (UUIDv5 of the role's name).
const ROLE_NAMESPACE: Uuid = Uuid::from_u128(0x2b7e_51a0_93c4_4d1f_8e26_7a95_c3d0_11f2);

/// The aggregate id of role `name`.
pub fn role_id(name: &str) -> Uuid {
    Uuid::new_v5(&ROLE_NAMESPACE, name.as_bytes())
}

/// Checks a role name: 1 to 64 characters of `a-z`, `0-9`, `-`, `_` and `.`, starting with a
/// letter.
pub fn valid_role_name(name: &str) -> Result<(), AccessError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ROLE_CHARS
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AccessError::invalid(
            "role",
            format!(
                "a role name is 1 to {MAX_ROLE_CHARS} characters of a-z, 0-9, '-', '_' and '.', starting with a letter; got {:?}",
                name.chars().take(MAX_ROLE_CHARS + 1).collect::<String>()
            ),
        ))
    }
}

/// What happened to a custom role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum RoleEvent {
    /// The role was defined, or its permissions replaced; bindings to it grant these at once.
    RoleDefined {
        /// Its name.
        name: String,
        /// Its permissions, sorted (names of the catalog).
        permissions: Vec<String>,
    },
    /// The role was deleted: bindings to it grant nothing from now on (they stay recorded,
    /// and work again if the role is defined again).
    RoleDeleted {
        /// Its name.
        name: String,
    },
}

impl RoleEvent {
    /// `RoleDefined`.
    pub const ROLE_DEFINED: &'static str = "RoleDefined";
    /// `RoleDeleted`.
    pub const ROLE_DELETED: &'static str = "RoleDeleted";
    /// Every event type.
    pub const TYPES: [&'static str; 2] = [Self::ROLE_DEFINED, Self::ROLE_DELETED];

    /// The event type's name.
    pub fn name(&self) -> &'static str {
        match self {
            RoleEvent::RoleDefined { .. } => Self::ROLE_DEFINED,
            RoleEvent::RoleDeleted { .. } => Self::ROLE_DELETED,
        }
    }

    /// The current version of an event type, or `None` for a type this code does not know.
    pub fn current_version(event_type: &str) -> Option<&'static str> {
        Self::TYPES.contains(&event_type).then_some("1")
    }
}

impl DomainEvent for RoleEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// What may be asked of a custom role.
#[derive(Debug, Clone, PartialEq)]
pub enum RoleCommand {
    /// Define the role, or replace its permissions (a no-op when they are the same).
    Define {
        /// Its name (not a built-in role's).
        name: String,
        /// Names of the catalog, at least one.
        permissions: Vec<String>,
    },
    /// Delete the role (a no-op when it is not defined).
    Delete {
        /// Its name.
        name: String,
    },
}

/// A custom role's state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleDefinition {
    name: Option<String>,
    permissions: Option<Vec<String>>,
}

impl RoleDefinition {
    /// Its permissions, while it is defined.
    pub fn permissions(&self) -> Option<&[String]> {
        self.permissions.as_deref()
    }

    /// What `command` records, or why it is refused.
    pub fn decide(&self, command: RoleCommand) -> Result<Vec<RoleEvent>, AccessError> {
        match command {
            RoleCommand::Define { name, permissions } => {
                check_name(&name)?;
                if permissions.is_empty() {
                    return Err(AccessError::invalid(
                        "permissions",
                        "a role needs at least one permission",
                    ));
                }
                let mut set = BTreeSet::new();
                for p in permissions {
                    if !PERMISSIONS.contains(&p.as_str()) {
                        return Err(AccessError::invalid(
                            "permissions",
                            format!(
                                "unknown permission {:?}; expected some of {}",
                                p.chars().take(64).collect::<String>(),
                                PERMISSIONS.join(", ")
                            ),
                        ));
                    }
                    set.insert(p);
                }
                let permissions: Vec<String> = set.into_iter().collect();
                if self.permissions.as_ref() == Some(&permissions) {
                    return Ok(vec![]);
                }
                Ok(vec![RoleEvent::RoleDefined { name, permissions }])
            }
            RoleCommand::Delete { name } => {
                check_name(&name)?;
                if self.permissions.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![RoleEvent::RoleDeleted { name }])
            }
        }
    }
}

fn check_name(name: &str) -> Result<(), AccessError> {
    valid_role_name(name)?;
    if BUILT_IN_ROLES.contains(&name) {
        return Err(AccessError::invalid(
            "role",
            format!("{name} is a built-in role; it cannot be redefined or deleted"),
        ));
    }
    Ok(())
}

impl Aggregate for RoleDefinition {
    const TYPE: &'static str = "Role";
    type Command = RoleCommand;
    type Event = RoleEvent;
    type Error = AccessError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _service: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            RoleEvent::RoleDefined { name, permissions } => {
                self.name = Some(name);
                self.permissions = Some(permissions);
            }
            RoleEvent::RoleDeleted { name } => {
                self.name = Some(name);
                self.permissions = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn define(name: &str, permissions: &[&str]) -> RoleCommand {
        RoleCommand::Define {
            name: name.into(),
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn roles_are_sets_of_catalog_permissions() {
        let mut role = RoleDefinition::default();
        let events = role
            .decide(define(
                "netops",
                &["membership.edit", "group.read", "group.read"],
            ))
            .expect("defined");
        assert_eq!(
            events,
            vec![RoleEvent::RoleDefined {
                name: "netops".into(),
                permissions: vec!["group.read".into(), "membership.edit".into()],
            }]
        );
        role.apply(events[0].clone());
        assert!(role
            .decide(define("netops", &["group.read", "membership.edit"]))
            .expect("same")
            .is_empty());
        assert!(role.decide(define("netops", &["group.fly"])).is_err());
        assert!(role.decide(define("netops", &[])).is_err());
        let deleted = role
            .decide(RoleCommand::Delete {
                name: "netops".into(),
            })
            .expect("deleted");
        role.apply(deleted[0].clone());
        assert!(role.permissions().is_none());
        assert!(role
            .decide(RoleCommand::Delete {
                name: "netops".into()
            })
            .expect("no-op")
            .is_empty());
    }

    #[test]
    fn built_in_roles_and_bad_names_are_refused() {
        let role = RoleDefinition::default();
        assert!(role.decide(define("admin", &["group.read"])).is_err());
        assert!(role.decide(define("Net Ops", &["group.read"])).is_err());
        assert!(role.decide(define("", &["group.read"])).is_err());
        assert!(valid_role_name("site-ops.v2").is_ok());
        assert_ne!(role_id("a"), role_id("b"));
    }
}
