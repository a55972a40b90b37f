//! The permission catalog, and the decision every GraphQL field needs.
//!
//! A role is a named set of permissions (`policy/policy.csv` for the built-in roles); a
//! binding gives a subject a role everywhere or on one group's subtree. Each field of the
//! `Query`, `Mutation` and `Subscription` roots (and the audit fields nested in `Group`) names
//! the one permission it needs in [`FIELDS`], or [`Decision::Anyone`]; a field with no entry
//! is refused to everyone, and a test fails when the schema has a field the table misses.
//!
//! How a permission meets a scope is its [`Reach`](crate::scope::Reach): a global binding
//! reaches every group, a binding on group G reaches G's subtree through the closure table, as
//! the tree stands at the request. Permissions marked [`Scoping::Global`] are granted by
//! global bindings only (the inventory and the access registry are not part of any subtree).

/// One permission of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Read groups, their members and health, the devices and services that are members.
    GroupRead,
    /// Create a group under a parent.
    GroupCreate,
    /// Rename a group, change its description or metadata.
    GroupEdit,
    /// Move a group (needed on the group's old parent and on its new parent).
    GroupMove,
    /// Delete a group.
    GroupDelete,
    /// Add, remove, exclude and unexclude members.
    MembershipEdit,
    /// Set or clear a group's rule.
    RuleEdit,
    /// Upsert and remove devices and services.
    InventoryWrite,
    /// Ingest telemetry (sysmon, service checks).
    TelemetryWrite,
    /// Read the audit trail and the event stream.
    AuditRead,
    /// Keep one's own dashboards.
    DashboardEdit,
    /// Publish and delete shared dashboard templates.
    DashboardTemplate,
    /// Schedule, cancel and follow sweeps.
    SweepRun,
    /// Tokens, role bindings and role definitions.
    AccessManage,
    /// Register and remove durable NATS membership watches.
    FeedManage,
}

/// Whether scoped bindings can grant a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoping {
    /// A binding on group G grants it for G's subtree.
    Subtree,
    /// Only global bindings grant it.
    Global,
}

/// The catalog: each permission, its name in policies, whether scopes apply, and what it
/// allows (`corral docs permissions` prints it).
pub const CATALOG: [(Permission, &str, Scoping, &str); 15] = [
    (
        Permission::GroupRead,
        "group.read",
        Scoping::Subtree,
        "read groups in scope: lookups, children, members, counts, health, capabilities, \
         rule previews and explanations; and the devices and services that are their direct members",
    ),
    (
        Permission::GroupCreate,
        "group.create",
        Scoping::Subtree,
        "create a group under a parent in scope",
    ),
    (
        Permission::GroupEdit,
        "group.edit",
        Scoping::Subtree,
        "rename a group in scope, change its description or metadata",
    ),
    (
        Permission::GroupMove,
        "group.move",
        Scoping::Subtree,
        "move a group: needed on its old parent and on its new parent",
    ),
    (
        Permission::GroupDelete,
        "group.delete",
        Scoping::Subtree,
        "delete a group in scope",
    ),
    (
        Permission::MembershipEdit,
        "membership.edit",
        Scoping::Subtree,
        "add, remove, exclude and unexclude members of a group in scope",
    ),
    (
        Permission::RuleEdit,
        "rule.edit",
        Scoping::Subtree,
        "set or clear the rule of a group in scope",
    ),
    (
        Permission::InventoryWrite,
        "inventory.write",
        Scoping::Global,
        "upsert and remove devices and services",
    ),
    (
        Permission::TelemetryWrite,
        "telemetry.write",
        Scoping::Global,
        "ingest sysmon metrics and service checks",
    ),
    (
        Permission::AuditRead,
        "audit.read",
        Scoping::Subtree,
        "read the audit trail, group history and the event stream (scoped: the events of groups in scope)",
    ),
    (
        Permission::DashboardEdit,
        "dashboard.edit",
        Scoping::Subtree,
        "keep one's own dashboards (widgets show data of groups in scope only)",
    ),
    (
        Permission::DashboardTemplate,
        "dashboard.template",
        Scoping::Global,
        "publish and delete shared dashboard templates",
    ),
    (
        Permission::SweepRun,
        "sweep.run",
        Scoping::Subtree,
        "schedule, cancel, preview and follow sweeps of groups in scope",
    ),
    (
        Permission::AccessManage,
        "access.manage",
        Scoping::Global,
        "create, list and revoke tokens; grant and revoke roles; define roles",
    ),
    (
        Permission::FeedManage,
        "feed.manage",
        Scoping::Global,
        "register, list and remove durable membership watches, whose changes are published \
         to NATS (the stream is not scoped, so neither is this)",
    ),
];

impl Permission {
    /// Its name in policies (`group.read`).
    pub fn as_str(self) -> &'static str {
        self.entry().1
    }

    /// Whether scoped bindings can grant it.
    pub fn scoping(self) -> Scoping {
        self.entry().2
    }

    /// The permission named `name`.
    pub fn parse(name: &str) -> Option<Permission> {
        CATALOG.iter().find(|e| e.1 == name).map(|e| e.0)
    }

    /// Every permission, in catalog order.
    pub fn all() -> impl Iterator<Item = Permission> {
        CATALOG.iter().map(|e| e.0)
    }

    fn entry(self) -> &'static (Permission, &'static str, Scoping, &'static str) {
        CATALOG.iter().find(|e| e.0 == self).unwrap_or(&CATALOG[0])
    }
}

/// What a field needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Any authenticated caller (`me`).
    Anyone,
    /// This permission, somewhere (the field then applies the scope to its arguments or its
    /// results).
    Needs(Permission),
}

use Permission::*;

/// Every field the authorization extension checks: the roots' fields, and the audit fields
/// nested elsewhere (`Group.history`). The order is the schema's.
pub const FIELDS: &[(&str, &str, Decision)] = &[
    ("Query", "root", Decision::Needs(GroupRead)),
    ("Query", "group", Decision::Needs(GroupRead)),
    ("Query", "groupByPath", Decision::Needs(GroupRead)),
    ("Query", "groups", Decision::Needs(GroupRead)),
    ("Query", "previewRule", Decision::Needs(GroupRead)),
    ("Query", "explainMembership", Decision::Needs(GroupRead)),
    ("Query", "device", Decision::Needs(GroupRead)),
    ("Query", "devices", Decision::Needs(GroupRead)),
    ("Query", "service", Decision::Needs(GroupRead)),
    ("Query", "services", Decision::Needs(GroupRead)),
    ("Query", "auditLog", Decision::Needs(AuditRead)),
    ("Query", "auditChainHead", Decision::Needs(AuditRead)),
    ("Query", "accessRefusals", Decision::Needs(AuditRead)),
    ("Query", "myDashboards", Decision::Needs(DashboardEdit)),
    (
        "Query",
        "myDefaultDashboard",
        Decision::Needs(DashboardEdit),
    ),
    ("Query", "dashboard", Decision::Needs(DashboardEdit)),
    (
        "Query",
        "dashboardTemplates",
        Decision::Needs(DashboardEdit),
    ),
    ("Query", "sweepRuns", Decision::Needs(SweepRun)),
    ("Query", "sweepRun", Decision::Needs(SweepRun)),
    ("Query", "previewSweep", Decision::Needs(SweepRun)),
    ("Query", "me", Decision::Anyone),
    ("Query", "tokens", Decision::Needs(AccessManage)),
    ("Query", "roles", Decision::Needs(AccessManage)),
    // Each node then follows its type's own root field (`graphql::node`): null when not granted.
    ("Query", "node", Decision::Anyone),
    ("Query", "nodes", Decision::Anyone),
    ("Query", "membershipWatches", Decision::Needs(FeedManage)),
    ("Mutation", "createGroup", Decision::Needs(GroupCreate)),
    ("Mutation", "renameGroup", Decision::Needs(GroupEdit)),
    ("Mutation", "updateGroup", Decision::Needs(GroupEdit)),
    ("Mutation", "moveGroup", Decision::Needs(GroupMove)),
    ("Mutation", "deleteGroup", Decision::Needs(GroupDelete)),
    (
        "Mutation",
        "addGroupMembers",
        Decision::Needs(MembershipEdit),
    ),
    (
        "Mutation",
        "removeGroupMembers",
        Decision::Needs(MembershipEdit),
    ),
    (
        "Mutation",
        "excludeGroupMembers",
        Decision::Needs(MembershipEdit),
    ),
    (
        "Mutation",
        "unexcludeGroupMembers",
        Decision::Needs(MembershipEdit),
    ),
    ("Mutation", "setGroupRule", Decision::Needs(RuleEdit)),
    ("Mutation", "clearGroupRule", Decision::Needs(RuleEdit)),
    (
        "Mutation",
        "addGroupMembersByRule",
        Decision::Needs(MembershipEdit),
    ),
    ("Mutation", "upsertDevices", Decision::Needs(InventoryWrite)),
    (
        "Mutation",
        "upsertServices",
        Decision::Needs(InventoryWrite),
    ),
    ("Mutation", "removeDevices", Decision::Needs(InventoryWrite)),
    (
        "Mutation",
        "removeServices",
        Decision::Needs(InventoryWrite),
    ),
    ("Mutation", "ingestSysmon", Decision::Needs(TelemetryWrite)),
    (
        "Mutation",
        "ingestServiceChecks",
        Decision::Needs(TelemetryWrite),
    ),
    (
        "Mutation",
        "createDashboard",
        Decision::Needs(DashboardEdit),
    ),
    (
        "Mutation",
        "renameDashboard",
        Decision::Needs(DashboardEdit),
    ),
    (
        "Mutation",
        "deleteDashboard",
        Decision::Needs(DashboardEdit),
    ),
    (
        "Mutation",
        "setDefaultDashboard",
        Decision::Needs(DashboardEdit),
    ),
    ("Mutation", "addWidget", Decision::Needs(DashboardEdit)),
    ("Mutation", "updateWidget", Decision::Needs(DashboardEdit)),
    ("Mutation", "moveWidget", Decision::Needs(DashboardEdit)),
    ("Mutation", "removeWidget", Decision::Needs(DashboardEdit)),
    (
        "Mutation",
        "publishDashboardTemplate",
        Decision::Needs(DashboardTemplate),
    ),
    (
        "Mutation",
        "cloneDashboardTemplate",
        Decision::Needs(DashboardEdit),
    ),
    (
        "Mutation",
        "deleteDashboardTemplate",
        Decision::Needs(DashboardTemplate),
    ),
    ("Mutation", "scheduleSweep", Decision::Needs(SweepRun)),
    ("Mutation", "cancelSweep", Decision::Needs(SweepRun)),
    ("Mutation", "createToken", Decision::Needs(AccessManage)),
    ("Mutation", "revokeToken", Decision::Needs(AccessManage)),
    ("Mutation", "grantRole", Decision::Needs(AccessManage)),
    ("Mutation", "revokeRole", Decision::Needs(AccessManage)),
    ("Mutation", "defineRole", Decision::Needs(AccessManage)),
    ("Mutation", "deleteRole", Decision::Needs(AccessManage)),
    (
        "Mutation",
        "registerMembershipWatch",
        Decision::Needs(FeedManage),
    ),
    (
        "Mutation",
        "removeMembershipWatch",
        Decision::Needs(FeedManage),
    ),
    ("Subscription", "events", Decision::Needs(AuditRead)),
    (
        "Subscription",
        "membershipChanges",
        Decision::Needs(GroupRead),
    ),
    ("Subscription", "sweepProgress", Decision::Needs(SweepRun)),
    ("Group", "history", Decision::Needs(AuditRead)),
];

/// Fields checked although they are not root fields.
pub fn checked_nested(parent: &str, name: &str) -> bool {
    parent != "Query"
        && parent != "Mutation"
        && parent != "Subscription"
        && FIELDS.iter().any(|f| f.0 == parent && f.1 == name)
}

/// What field `name` of type `parent` needs; `None`: nobody may call it.
pub fn decision(parent: &str, name: &str) -> Option<Decision> {
    FIELDS
        .iter()
        .find(|f| f.0 == parent && f.1 == name)
        .map(|f| f.2)
}

/// Where the generated section of `docs/access.md` begins and ends.
const BEGIN: &str = "<!-- BEGIN GENERATED: corral docs permissions -->\n";
const END: &str = "<!-- END GENERATED -->";

/// The generated section of `docs/access.md`: the catalog, what each built-in role holds
/// (`grants` answers for a role and a permission), and what each field needs.
pub fn markdown(grants: impl Fn(&str, Permission) -> bool) -> String {
    let mut out = String::from("### The permission catalog\n\n");
    out.push_str(&catalog_markdown());
    out.push_str("\n### The built-in roles\n\n| permission |");
    for role in corral_domain::access::BUILT_IN_ROLES {
        out.push_str(&format!(" `{role}` |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(corral_domain::access::BUILT_IN_ROLES.len()));
    out.push('\n');
    for p in Permission::all() {
        out.push_str(&format!("| `{}` |", p.as_str()));
        for role in corral_domain::access::BUILT_IN_ROLES {
            out.push_str(if grants(role, p) { " yes |" } else { " |" });
        }
        out.push('\n');
    }
    out.push_str("\n### What each field needs\n\n| field | permission |\n|---|---|\n");
    for (parent, name, d) in FIELDS {
        let need = match d {
            Decision::Anyone => "any authenticated caller".to_string(),
            Decision::Needs(p) => format!("`{}`", p.as_str()),
        };
        out.push_str(&format!("| `{parent}.{name}` | {need} |\n"));
    }
    out
}

/// `doc` with its generated section replaced by `generated` (`None`: the markers are
/// missing).
pub fn regenerate(doc: &str, generated: &str) -> Option<String> {
    let start = doc.find(BEGIN)? + BEGIN.len();
    let end = start + doc[start..].find(END)?;
    Some(format!("{}{}{}", &doc[..start], generated, &doc[end..]))
}

/// The catalog as a Markdown table.
pub fn catalog_markdown() -> String {
    let mut out =
        String::from("| permission | scoped bindings grant it | allows |\n|---|---|---|\n");
    for (_, name, scoping, what) in CATALOG {
        let scoped = match scoping {
            Scoping::Subtree => "yes, on the binding's subtree",
            Scoping::Global => "no: global bindings only",
        };
        out.push_str(&format!("| `{name}` | {scoped} | {what} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for p in Permission::all() {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        let mut names: Vec<_> = CATALOG.iter().map(|e| e.1).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len());
    }

    /// CI fails when docs/access.md drifts from the code. Regenerate with
    /// `cargo run -p corral --bin corral -- docs permissions --write`.
    #[tokio::test]
    async fn committed_permission_tables_match_the_code() {
        let table = crate::policy::PolicyTable::built_in()
            .await
            .expect("policy");
        let generated = markdown(|r, p| table.grants(r, p));
        let doc = include_str!("../../docs/access.md");
        assert!(
            regenerate(doc, &generated).as_deref() == Some(doc),
            "docs/access.md is stale: run `cargo run -p corral --bin corral -- docs permissions --write`"
        );
    }

    #[test]
    fn the_domain_knows_the_same_catalog() {
        let ours: Vec<&str> = CATALOG.iter().map(|e| e.1).collect();
        assert_eq!(ours, corral_domain::access::PERMISSIONS.to_vec());
    }

    #[test]
    fn each_field_is_listed_once() {
        for (i, f) in FIELDS.iter().enumerate() {
            assert!(
                !FIELDS[..i].iter().any(|g| g.0 == f.0 && g.1 == f.1),
                "{}.{} twice",
                f.0,
                f.1
            );
        }
        assert!(checked_nested("Group", "history"));
        assert!(!checked_nested("Query", "group"));
        assert_eq!(decision("Query", "me"), Some(Decision::Anyone));
        assert_eq!(decision("Query", "nope"), None);
    }
}
