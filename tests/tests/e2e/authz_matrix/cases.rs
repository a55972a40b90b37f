//! The matrix table: one or more cases per root field, each with its scope kind and a real
//! operation (fresh targets for mutations, so that cells stay independent).

use serde_json::{json, Value};

use corral_api::graphql::node::global_id;

use super::fixtures::{fresh_board, widget, Caller, Env, Pos, ADD_WIDGET, PUBLISH};

/// How a field meets the caller's scope (what a position changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The caller's own data, or nothing tied to a group: the position does not matter.
    Own,
    /// Needs a global binding (a global-only permission, or a resolver's `require_global`):
    /// `FORBIDDEN` for a scoped-only caller.
    GlobalOnly,
    /// A group above every scope (the root): null for a scoped caller.
    AboveScopes,
    /// Reads one group (or a record reached through it): null / not known beyond the scope.
    Read,
    /// A list: the position's item is left out beyond the scope.
    List,
    /// Writes to the position's group: `FORBIDDEN` and no event beyond the scope.
    Write,
    /// A subscription on one group or run: `FORBIDDEN` beyond the scope.
    SubscribeGroup,
    /// A stream filtered by scope: nothing delivered beyond it.
    SubscribeList,
    /// `node`/`nodes` of a type whose own root field is this one: as `Read` of that field,
    /// except that a caller the field refuses gets null (hidden), never `FORBIDDEN`.
    NodeOf(&'static str),
    /// As [`Kind::NodeOf`], for the caller's own object (as `Own` of that field).
    OwnNodeOf(&'static str),
}

impl Kind {
    /// Whether the position changes the outcome for a scoped caller.
    pub fn positional(self) -> bool {
        !matches!(
            self,
            Kind::Own | Kind::GlobalOnly | Kind::AboveScopes | Kind::OwnNodeOf(_)
        )
    }
}

/// What is looked at in `data.<field>` (or the stream's first item).
#[derive(Debug, Clone)]
pub enum Look {
    /// Allowed: non-null. Hidden: null.
    NonNull,
    /// Allowed: the array at the pointer holds a node with this `id`. Hidden: it does not.
    Has(&'static str, String),
    /// Allowed: the value at the pointer is the first value; hidden: the second.
    At(&'static str, Value, Value),
    /// Allowed: the number at the pointer is positive. Hidden: zero.
    Count(&'static str),
    /// A mutation's payload, whose userErrors may only carry these codes (where the
    /// operation cannot succeed for data reasons; none of the cases needs one now).
    Payload(&'static [&'static str]),
    /// A subscription: allowed, its first item arrives with data; hidden, nothing arrives.
    Delivers,
    /// A subscription on a group that says nothing until its members change: allowed, no
    /// error arrives, and once a fresh device is added to the group its change does.
    Changes(String),
}

pub struct Case {
    pub root: &'static str,
    pub field: &'static str,
    /// Tells several cases of one field apart.
    pub label: &'static str,
    pub kind: Kind,
}

const fn case(root: &'static str, field: &'static str, kind: Kind) -> Case {
    Case {
        root,
        field,
        label: "",
        kind,
    }
}

use Kind::*;

/// Every root field, in the schema's order. A field added to the schema without a case here
/// fails `every_root_field_has_a_decision_and_a_case`.
pub const CASES: &[Case] = &[
    case("Query", "root", AboveScopes),
    case("Query", "group", Read),
    case("Query", "groupByPath", Read),
    case("Query", "groups", List),
    case("Query", "previewRule", Read),
    case("Query", "explainMembership", Read),
    case("Query", "device", Read),
    case("Query", "devices", List),
    case("Query", "service", Read),
    case("Query", "services", List),
    case("Query", "auditLog", List),
    // The head of the whole chain (a position and a hash): it describes the whole log, so
    // only a global audit.read reads it.
    case("Query", "auditChainHead", GlobalOnly),
    case("Query", "accessRefusals", GlobalOnly),
    case("Query", "myDashboards", Own),
    // The caller's default dashboard, its widget rendered for `$group` = the position.
    case("Query", "myDefaultDashboard", Read),
    case("Query", "dashboard", Read),
    case("Query", "dashboardTemplates", Own),
    case("Query", "sweepRuns", List),
    case("Query", "sweepRun", Read),
    case("Query", "previewSweep", Write),
    case("Query", "me", Own),
    case("Query", "tokens", GlobalOnly),
    case("Query", "roles", GlobalOnly),
    Case {
        root: "Query",
        field: "node",
        label: "group",
        kind: NodeOf("group"),
    },
    Case {
        root: "Query",
        field: "node",
        label: "device",
        kind: NodeOf("device"),
    },
    Case {
        root: "Query",
        field: "node",
        label: "service",
        kind: NodeOf("service"),
    },
    Case {
        root: "Query",
        field: "node",
        label: "sweepRun",
        kind: NodeOf("sweepRun"),
    },
    Case {
        root: "Query",
        field: "node",
        label: "dashboard",
        kind: OwnNodeOf("dashboard"),
    },
    Case {
        root: "Query",
        field: "nodes",
        label: "group",
        kind: NodeOf("group"),
    },
    Case {
        root: "Query",
        field: "nodes",
        label: "device",
        kind: NodeOf("device"),
    },
    case("Query", "membershipWatches", GlobalOnly),
    case("Mutation", "createGroup", Write),
    case("Mutation", "renameGroup", Write),
    case("Mutation", "updateGroup", Write),
    Case {
        root: "Mutation",
        field: "moveGroup",
        label: "from the position to Site-A/Dock",
        kind: Write,
    },
    Case {
        root: "Mutation",
        field: "moveGroup",
        label: "from Site-A/Dock to the position",
        kind: Write,
    },
    case("Mutation", "deleteGroup", Write),
    case("Mutation", "addGroupMembers", Write),
    case("Mutation", "removeGroupMembers", Write),
    case("Mutation", "excludeGroupMembers", Write),
    case("Mutation", "unexcludeGroupMembers", Write),
    case("Mutation", "setGroupRule", Write),
    case("Mutation", "clearGroupRule", Write),
    case("Mutation", "addGroupMembersByRule", Write),
    case("Mutation", "upsertDevices", GlobalOnly),
    case("Mutation", "upsertServices", GlobalOnly),
    case("Mutation", "removeDevices", GlobalOnly),
    case("Mutation", "removeServices", GlobalOnly),
    case("Mutation", "ingestSysmon", GlobalOnly),
    case("Mutation", "ingestServiceChecks", GlobalOnly),
    case("Mutation", "createDashboard", Own),
    case("Mutation", "renameDashboard", Own),
    case("Mutation", "deleteDashboard", Own),
    case("Mutation", "setDefaultDashboard", Own),
    // Widgets may name groups beyond the scope; their data is redacted when rendered.
    case("Mutation", "addWidget", Own),
    case("Mutation", "updateWidget", Own),
    case("Mutation", "moveWidget", Own),
    case("Mutation", "removeWidget", Own),
    case("Mutation", "publishDashboardTemplate", GlobalOnly),
    case("Mutation", "cloneDashboardTemplate", Own),
    case("Mutation", "deleteDashboardTemplate", GlobalOnly),
    case("Mutation", "scheduleSweep", Write),
    case("Mutation", "cancelSweep", Write),
    case("Mutation", "createToken", GlobalOnly),
    case("Mutation", "revokeToken", GlobalOnly),
    case("Mutation", "grantRole", GlobalOnly),
    case("Mutation", "revokeRole", GlobalOnly),
    case("Mutation", "defineRole", GlobalOnly),
    case("Mutation", "deleteRole", GlobalOnly),
    case("Mutation", "registerMembershipWatch", GlobalOnly),
    case("Mutation", "removeMembershipWatch", GlobalOnly),
    case("Subscription", "events", SubscribeList),
    case("Subscription", "membershipChanges", SubscribeGroup),
    case("Subscription", "sweepProgress", SubscribeGroup),
];

/// One cell's request.
pub struct Op {
    pub query: &'static str,
    pub vars: Value,
    pub look: Look,
}

fn op(query: &'static str, vars: Value, look: Look) -> Op {
    Op { query, vars, look }
}

const OK: Look = Look::Payload(&[]);

/// The operation of `case` for `caller` at `pos`, with its fixtures made (as the global
/// admin, or as the caller for its own dashboards). `None`: the table has a case the
/// builder does not know.
pub async fn build(env: &Env, caller: &Caller, case: &Case, pos: Pos) -> Option<Op> {
    let g = env.groups[&pos].clone();
    let device = pos.device();
    Some(match (case.root, case.field, case.label) {
        ("Query", "root", _) => op("{ root(type: DEVICE) { id } }", json!({}), Look::NonNull),
        ("Query", "group", _) => op(
            "query($id: ID!) { group(id: $id) { id } }",
            json!({ "id": g }),
            Look::NonNull,
        ),
        ("Query", "groupByPath", _) => op(
            "query($p: String!) { groupByPath(type: DEVICE, path: $p) { id } }",
            json!({ "p": env.paths[&pos] }),
            Look::NonNull,
        ),
        ("Query", "groups", _) => op(
            "query($s: String) { groups(type: DEVICE, search: $s, first: 50) { edges { node { id } } } }",
            json!({ "s": pos.name() }),
            Look::Has("/edges", g),
        ),
        ("Query", "previewRule", _) => op(
            "query($r: String!) { previewRule(type: DEVICE, rule: $r) { valid count } }",
            json!({ "r": format!("group:{}", env.paths[&pos]) }),
            Look::At("/valid", json!(true), json!(false)),
        ),
        ("Query", "explainMembership", _) => op(
            "query($g: ID!, $m: String!) { explainMembership(groupId: $g, memberId: $m) { member known } }",
            json!({ "g": g, "m": device }),
            Look::At("/member", json!(true), json!(false)),
        ),
        ("Query", "device", _) => op(
            "query($id: ID!) { device(id: $id) { id } }",
            json!({ "id": device }),
            Look::NonNull,
        ),
        ("Query", "devices", _) => op(
            "query($f: String) { devices(filter: $f, first: 50) { edges { node { id } } } }",
            json!({ "f": format!("hostname:h-{}", pos.slug()) }),
            Look::Has("/edges", device),
        ),
        ("Query", "service", _) => op(
            "query($id: ID!) { service(id: $id) { id } }",
            json!({ "id": pos.service() }),
            Look::NonNull,
        ),
        ("Query", "services", _) => op(
            "{ services(first: 200) { edges { node { id } } } }",
            json!({}),
            Look::Has("/edges", pos.service()),
        ),
        ("Query", "auditLog", _) => op(
            "query($g: ID) { auditLog(filter: { groupId: $g }, first: 1) { totalCount } }",
            json!({ "g": g }),
            Look::Count("/totalCount"),
        ),
        ("Query", "auditChainHead", _) => {
            op("{ auditChainHead { position hash } }", json!({}), Look::NonNull)
        }
        ("Query", "accessRefusals", _) => op(
            "{ accessRefusals(first: 1) { edges { cursor } } }",
            json!({}),
            Look::NonNull,
        ),
        ("Query", "myDashboards", _) => op(
            "{ myDashboards(first: 10) { totalCount } }",
            json!({}),
            Look::Count("/totalCount"),
        ),
        ("Query", "myDefaultDashboard", _) => op(
            "query($g: ID) { myDefaultDashboard(group: $g) { widgets { data { state } } } }",
            json!({ "g": g }),
            Look::At("/widgets/0/data/state", json!("OK"), json!("REDACTED")),
        ),
        ("Query", "dashboard", _) => op(
            "query($id: ID!, $g: ID) { dashboard(id: $id, group: $g) { widgets { data { state } } } }",
            json!({ "id": caller.board, "g": g }),
            Look::At("/widgets/0/data/state", json!("OK"), json!("REDACTED")),
        ),
        ("Query", "dashboardTemplates", _) => op(
            "{ dashboardTemplates(first: 10) { totalCount } }",
            json!({}),
            Look::Count("/totalCount"),
        ),
        ("Query", "sweepRuns", _) => op(
            "{ sweepRuns(first: 100) { edges { node { id } } } }",
            json!({}),
            Look::Has("/edges", env.runs[&pos].clone()),
        ),
        ("Query", "sweepRun", _) => op(
            "query($id: ID!) { sweepRun(id: $id) { id } }",
            json!({ "id": env.runs[&pos] }),
            Look::NonNull,
        ),
        ("Query", "previewSweep", _) => op(
            "query($input: ScheduleSweepInput!) { previewSweep(input: $input) { hostsTotal userErrors { code } } }",
            json!({ "input": { "pollerId": "p1", "groupId": g, "ports": [22], "idempotencyKey": "preview" } }),
            OK,
        ),
        ("Query", "me", _) => op("{ me { subject } }", json!({}), Look::NonNull),
        ("Query", "tokens", _) => op("{ tokens(first: 5) { id } }", json!({}), Look::NonNull),
        ("Query", "roles", _) => op("{ roles { name } }", json!({}), Look::NonNull),
        ("Query", "node", label) => {
            let id = match label {
                "group" => global_id("Group", &g),
                "device" => global_id("Device", &device),
                "service" => global_id("Service", &pos.service()),
                "sweepRun" => global_id("SweepRun", &env.runs[&pos]),
                "dashboard" => global_id("Dashboard", caller.board.as_str()),
                _ => return None,
            };
            op(
                "query($id: ID!) { node(id: $id) { nodeId } }",
                json!({ "id": id }),
                Look::NonNull,
            )
        }
        ("Query", "nodes", label) => {
            let id = match label {
                "group" => global_id("Group", &g),
                "device" => global_id("Device", &device),
                _ => return None,
            };
            op(
                "query($ids: [ID!]!) { nodes(ids: $ids) { nodeId } }",
                json!({ "ids": [id.0.clone()] }),
                Look::At("/0", json!({ "nodeId": id.0 }), Value::Null),
            )
        }
        ("Query", "membershipWatches", _) => op(
            "{ membershipWatches { id } }",
            json!({}),
            Look::NonNull,
        ),

        ("Mutation", "createGroup", _) => op(
            "mutation($input: CreateGroupInput!) { createGroup(input: $input) { group { id } userErrors { code } } }",
            json!({ "input": { "name": env.fresh("t"), "type": "DEVICE", "parentId": g } }),
            OK,
        ),
        ("Mutation", "renameGroup", _) => op(
            "mutation($input: RenameGroupInput!) { renameGroup(input: $input) { group { id } userErrors { code } } }",
            json!({ "input": { "id": env.child(&g).await, "name": env.fresh("t") } }),
            OK,
        ),
        ("Mutation", "updateGroup", _) => op(
            "mutation($input: UpdateGroupInput!) { updateGroup(input: $input) { group { id } userErrors { code } } }",
            json!({ "input": { "id": env.child(&g).await, "description": "matrix" } }),
            OK,
        ),
        ("Mutation", "moveGroup", label) => {
            let (child, to) = if label.starts_with("from the position") {
                (env.child(&g).await, env.dock.clone())
            } else {
                (env.child(&env.dock).await, g)
            };
            op(
                "mutation($input: MoveGroupInput!) { moveGroup(input: $input) { group { id } userErrors { code } } }",
                json!({ "input": { "id": child, "newParentId": to } }),
                OK,
            )
        }
        ("Mutation", "deleteGroup", _) => op(
            "mutation($input: DeleteGroupInput!) { deleteGroup(input: $input) { deletedId userErrors { code } } }",
            json!({ "input": { "id": env.child(&g).await } }),
            OK,
        ),
        ("Mutation", field @ ("addGroupMembers" | "removeGroupMembers" | "excludeGroupMembers" | "unexcludeGroupMembers"), _) => {
            let child = env.child(&g).await;
            let input = json!({ "input": { "groupId": child, "memberIds": [device] } });
            // Something to remove or lift first.
            let first = match field {
                "removeGroupMembers" => Some("mutation($input: GroupMembersInput!) { addGroupMembers(input: $input) { userErrors { code } } }"),
                "unexcludeGroupMembers" => Some("mutation($input: GroupMembersInput!) { excludeGroupMembers(input: $input) { userErrors { code } } }"),
                _ => None,
            };
            if let Some(first) = first {
                env.setup(first, input.clone()).await;
            }
            let query = match field {
                "addGroupMembers" => "mutation($input: GroupMembersInput!) { addGroupMembers(input: $input) { changed userErrors { code } } }",
                "removeGroupMembers" => "mutation($input: GroupMembersInput!) { removeGroupMembers(input: $input) { changed userErrors { code } } }",
                "excludeGroupMembers" => "mutation($input: GroupMembersInput!) { excludeGroupMembers(input: $input) { changed userErrors { code } } }",
                _ => "mutation($input: GroupMembersInput!) { unexcludeGroupMembers(input: $input) { changed userErrors { code } } }",
            };
            op(query, input, OK)
        }
        ("Mutation", "setGroupRule", _) => op(
            "mutation($input: SetGroupRuleInput!) { setGroupRule(input: $input) { group { id } userErrors { code } } }",
            json!({ "input": { "groupId": env.child(&g).await, "rule": "hostname:none-%" } }),
            OK,
        ),
        ("Mutation", "clearGroupRule", _) => {
            let child = env.child(&g).await;
            env.setup(
                "mutation($input: SetGroupRuleInput!) { setGroupRule(input: $input) { userErrors { code } } }",
                json!({ "input": { "groupId": child, "rule": "hostname:none-%" } }),
            )
            .await;
            op(
                "mutation($input: ClearGroupRuleInput!) { clearGroupRule(input: $input) { group { id } userErrors { code } } }",
                json!({ "input": { "groupId": child } }),
                OK,
            )
        }
        ("Mutation", "addGroupMembersByRule", _) => op(
            "mutation($input: AddGroupMembersByRuleInput!) { addGroupMembersByRule(input: $input) { changed userErrors { code } } }",
            json!({ "input": { "groupId": env.child(&g).await, "rule": format!("hostname:h-{}", pos.slug()) } }),
            OK,
        ),
        ("Mutation", "upsertDevices", _) => op(
            "mutation($input: UpsertDevicesInput!) { upsertDevices(input: $input) { upserted userErrors { code } } }",
            json!({ "input": { "devices": [{ "id": env.fresh("x") }] } }),
            OK,
        ),
        ("Mutation", "upsertServices", _) => op(
            "mutation($input: UpsertServicesInput!) { upsertServices(input: $input) { upserted userErrors { code } } }",
            json!({ "input": { "services": [{ "id": env.fresh("y"), "deviceId": device, "type": "http", "name": "m" }] } }),
            OK,
        ),
        ("Mutation", "removeDevices", _) => {
            let id = env.fresh("x");
            env.setup(
                "mutation($input: UpsertDevicesInput!) { upsertDevices(input: $input) { userErrors { code } } }",
                json!({ "input": { "devices": [{ "id": id }] } }),
            )
            .await;
            op(
                "mutation($input: RemoveInventoryInput!) { removeDevices(input: $input) { removed userErrors { code } } }",
                json!({ "input": { "ids": [id] } }),
                OK,
            )
        }
        ("Mutation", "removeServices", _) => {
            let id = env.fresh("y");
            env.setup(
                "mutation($input: UpsertServicesInput!) { upsertServices(input: $input) { userErrors { code } } }",
                json!({ "input": { "services": [{ "id": id, "deviceId": device, "type": "http", "name": "m" }] } }),
            )
            .await;
            op(
                "mutation($input: RemoveInventoryInput!) { removeServices(input: $input) { removed userErrors { code } } }",
                json!({ "input": { "ids": [id] } }),
                OK,
            )
        }
        ("Mutation", "ingestSysmon", _) => op(
            "mutation($input: IngestSysmonInput!) { ingestSysmon(input: $input) { accepted userErrors { code } } }",
            json!({ "input": { "samples": [{ "deviceId": device, "ts": chrono::Utc::now(), "cpuPercent": 1.0, "memPercent": 1.0, "diskPercent": 1.0 }] } }),
            OK,
        ),
        ("Mutation", "ingestServiceChecks", _) => op(
            "mutation($input: IngestServiceChecksInput!) { ingestServiceChecks(input: $input) { accepted userErrors { code } } }",
            json!({ "input": { "checks": [{ "serviceId": pos.service(), "ts": chrono::Utc::now(), "available": true }] } }),
            OK,
        ),
        ("Mutation", "createDashboard", _) => op(
            "mutation($input: CreateDashboardInput!) { createDashboard(input: $input) { dashboard { id } userErrors { code } } }",
            json!({ "input": { "name": env.fresh("b") } }),
            OK,
        ),
        ("Mutation", "renameDashboard", _) => op(
            "mutation($input: RenameDashboardInput!) { renameDashboard(input: $input) { dashboard { id } userErrors { code } } }",
            json!({ "input": { "id": own_board(env, caller).await, "name": env.fresh("b") } }),
            OK,
        ),
        ("Mutation", "deleteDashboard", _) => op(
            "mutation($input: DashboardIdInput!) { deleteDashboard(input: $input) { deletedId userErrors { code } } }",
            json!({ "input": { "id": own_board(env, caller).await } }),
            OK,
        ),
        ("Mutation", "setDefaultDashboard", _) => op(
            "mutation($input: DashboardIdInput!) { setDefaultDashboard(input: $input) { dashboard { id } userErrors { code } } }",
            json!({ "input": { "id": caller.board } }),
            OK,
        ),
        ("Mutation", "addWidget", _) => {
            let board = own_board(env, caller).await;
            let mut input = widget(&board, 0);
            // A group beyond the scope may be named: its data is redacted when rendered.
            input["input"]["config"]["group"] = json!(g);
            op(
                "mutation($input: AddWidgetInput!) { addWidget(input: $input) { widget { id } userErrors { code } } }",
                input,
                OK,
            )
        }
        ("Mutation", field @ ("updateWidget" | "moveWidget" | "removeWidget"), _) => {
            let (board, widget_id) = own_widget(env, caller).await;
            let (query, input) = match field {
                "updateWidget" => (
                    "mutation($input: UpdateWidgetInput!) { updateWidget(input: $input) { widget { id } userErrors { code } } }",
                    json!({ "dashboardId": board, "widgetId": widget_id, "title": "renamed" }),
                ),
                "moveWidget" => (
                    "mutation($input: MoveWidgetInput!) { moveWidget(input: $input) { widget { id } userErrors { code } } }",
                    json!({ "dashboardId": board, "widgetId": widget_id, "position": { "x": 4, "y": 0, "w": 4, "h": 1 } }),
                ),
                _ => (
                    "mutation($input: RemoveWidgetInput!) { removeWidget(input: $input) { dashboard { id } userErrors { code } } }",
                    json!({ "dashboardId": board, "widgetId": widget_id }),
                ),
            };
            op(query, json!({ "input": input }), OK)
        }
        ("Mutation", "publishDashboardTemplate", _) => op(
            "mutation($input: PublishDashboardTemplateInput!) { publishDashboardTemplate(input: $input) { dashboard { id } userErrors { code } } }",
            json!({ "input": { "name": env.fresh("template "), "widgets": [] } }),
            OK,
        ),
        ("Mutation", "cloneDashboardTemplate", _) => op(
            "mutation($input: CloneDashboardTemplateInput!) { cloneDashboardTemplate(input: $input) { dashboard { id } userErrors { code } } }",
            json!({ "input": { "templateId": env.template, "name": env.fresh("b") } }),
            OK,
        ),
        ("Mutation", "deleteDashboardTemplate", _) => {
            let p = env
                .setup(PUBLISH, json!({ "input": { "name": env.fresh("template "), "widgets": [] } }))
                .await;
            op(
                "mutation($input: DashboardIdInput!) { deleteDashboardTemplate(input: $input) { deletedId userErrors { code } } }",
                json!({ "input": { "id": p["dashboard"]["id"] } }),
                OK,
            )
        }
        ("Mutation", "scheduleSweep", _) => op(
            "mutation($input: ScheduleSweepInput!) { scheduleSweep(input: $input) { run { id } userErrors { code } } }",
            json!({ "input": { "pollerId": "p1", "groupId": g, "ports": [22], "idempotencyKey": env.fresh("k") } }),
            OK,
        ),
        ("Mutation", "cancelSweep", _) => op(
            "mutation($input: CancelSweepInput!) { cancelSweep(input: $input) { run { id } userErrors { code } } }",
            json!({ "input": { "id": env.run(&g).await } }),
            OK,
        ),
        ("Mutation", "createToken", _) => op(
            "mutation($input: CreateTokenInput!) { createToken(input: $input) { token { id } userErrors { code } } }",
            json!({ "input": { "subject": env.fresh("u"), "role": "viewer" } }),
            OK,
        ),
        ("Mutation", "revokeToken", _) => {
            let p = env
                .setup(
                    "mutation($input: CreateTokenInput!) { createToken(input: $input) { token { id } userErrors { code } } }",
                    json!({ "input": { "subject": env.fresh("u"), "role": "viewer" } }),
                )
                .await;
            op(
                "mutation($input: RevokeTokenInput!) { revokeToken(input: $input) { token { id } userErrors { code } } }",
                json!({ "input": { "token": p["token"]["id"] } }),
                OK,
            )
        }
        ("Mutation", "grantRole", _) => op(
            "mutation($input: RoleInput!) { grantRole(input: $input) { subject userErrors { code } } }",
            json!({ "input": { "subject": env.fresh("u"), "role": "viewer" } }),
            OK,
        ),
        ("Mutation", "revokeRole", _) => {
            let input = json!({ "input": { "subject": env.fresh("u"), "role": "viewer" } });
            env.setup(
                "mutation($input: RoleInput!) { grantRole(input: $input) { userErrors { code } } }",
                input.clone(),
            )
            .await;
            op(
                "mutation($input: RoleInput!) { revokeRole(input: $input) { subject userErrors { code } } }",
                input,
                OK,
            )
        }
        ("Mutation", "defineRole", _) => op(
            "mutation($input: DefineRoleInput!) { defineRole(input: $input) { role { name } userErrors { code } } }",
            json!({ "input": { "name": env.fresh("r"), "permissions": ["group.read"] } }),
            OK,
        ),
        ("Mutation", "deleteRole", _) => {
            let name = env.fresh("r");
            env.setup(
                "mutation($input: DefineRoleInput!) { defineRole(input: $input) { userErrors { code } } }",
                json!({ "input": { "name": name, "permissions": ["group.read"] } }),
            )
            .await;
            op(
                "mutation($input: DeleteRoleInput!) { deleteRole(input: $input) { role { name } userErrors { code } } }",
                json!({ "input": { "name": name } }),
                OK,
            )
        }

        ("Mutation", "registerMembershipWatch", _) => op(
            "mutation($input: RegisterMembershipWatchInput!) { registerMembershipWatch(input: $input) { watch { id } userErrors { code } } }",
            json!({ "input": { "groupId": g, "includeDescendants": true } }),
            OK,
        ),
        ("Mutation", "removeMembershipWatch", _) => {
            let registered = env
                .setup(
                    "mutation($input: RegisterMembershipWatchInput!) { registerMembershipWatch(input: $input) { watch { id } userErrors { code } } }",
                    json!({ "input": { "groupId": g } }),
                )
                .await;
            op(
                "mutation($input: RemoveMembershipWatchInput!) { removeMembershipWatch(input: $input) { position userErrors { code } } }",
                json!({ "input": { "id": registered["watch"]["id"] } }),
                OK,
            )
        }

        // The position's Group events, replayed from the start.
        ("Subscription", "events", _) => op(
            "subscription($g: ID!) { events(fromPosition: 0, filter: { aggregateIds: [$g] }) { eventType } }",
            json!({ "g": g }),
            Look::Delivers,
        ),
        ("Subscription", "membershipChanges", _) => op(
            "subscription($g: ID!) { membershipChanges(groupId: $g) { change } }",
            json!({ "g": g }),
            Look::Changes(g),
        ),
        // Its state now comes first.
        ("Subscription", "sweepProgress", _) => op(
            "subscription($r: ID!) { sweepProgress(runId: $r) { status } }",
            json!({ "r": env.runs[&pos] }),
            Look::Delivers,
        ),
        _ => return None,
    })
}

/// A fresh dashboard of the caller's (every built-in role keeps dashboards; a role that
/// could not is refused before the board would matter, so it gets the admin's).
async fn own_board(env: &Env, caller: &Caller) -> String {
    if may_keep_dashboards(env, caller) {
        fresh_board(env, caller).await
    } else {
        env.callers[0].board.clone()
    }
}

/// A fresh dashboard of the caller's with one widget.
async fn own_widget(env: &Env, caller: &Caller) -> (String, String) {
    let board = own_board(env, caller).await;
    if !may_keep_dashboards(env, caller) {
        return (board, uuid::Uuid::new_v4().to_string());
    }
    let p = env.setup_as(caller, ADD_WIDGET, widget(&board, 0)).await;
    (
        board,
        p["widget"]["id"].as_str().expect("widget").to_string(),
    )
}

fn may_keep_dashboards(env: &Env, caller: &Caller) -> bool {
    env.table.grants(
        caller.role,
        corral_api::permissions::Permission::DashboardEdit,
    )
}
