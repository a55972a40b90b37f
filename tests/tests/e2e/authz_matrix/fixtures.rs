//! The matrix's world: the tree with its six scope positions (in the device tree and a
//! mirror in the service tree), one static device and service member per position, a sweep
//! run per position, a template, and the callers (four scoped to Site-A, four global).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use corral_api::policy::PolicyTable;
use corral_tests::TestApp;
use serde_json::{json, Value};

/// Where the target sits relative to the scoped callers' binding on Site-A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pos {
    /// Core, under Site-A.
    Inside,
    /// Elsewhere, a branch of its own under the root.
    Outside,
    /// Region, Site-A's parent.
    Ancestor,
    /// Site-B, Site-A's sibling.
    Sibling,
    /// Moved-In: under Elsewhere when the bindings were granted, under Site-A now.
    MovedIn,
    /// Moved-Out: under Site-A when the bindings were granted, under Elsewhere now.
    MovedOut,
}

impl Pos {
    pub const ALL: [Pos; 6] = [
        Pos::Inside,
        Pos::Outside,
        Pos::Ancestor,
        Pos::Sibling,
        Pos::MovedIn,
        Pos::MovedOut,
    ];

    /// Whether it lies in Site-A's subtree as the tree stands now.
    pub fn in_scope(self) -> bool {
        matches!(self, Pos::Inside | Pos::MovedIn)
    }

    /// Its group's name (unique in each tree), and the stem of its members' ids.
    pub fn name(self) -> &'static str {
        match self {
            Pos::Inside => "Core",
            Pos::Outside => "Elsewhere",
            Pos::Ancestor => "Region",
            Pos::Sibling => "Site-B",
            Pos::MovedIn => "Moved-In",
            Pos::MovedOut => "Moved-Out",
        }
    }

    pub fn slug(self) -> String {
        self.name().to_lowercase()
    }

    pub fn label(self) -> &'static str {
        match self {
            Pos::Inside => "inside",
            Pos::Outside => "outside",
            Pos::Ancestor => "ancestor",
            Pos::Sibling => "sibling",
            Pos::MovedIn => "moved-in",
            Pos::MovedOut => "moved-out",
        }
    }

    /// Its static device member (`d-core`), a service member in the service tree (`s-core`).
    pub fn device(self) -> String {
        format!("d-{}", self.slug())
    }

    pub fn service(self) -> String {
        format!("s-{}", self.slug())
    }
}

/// How a caller holds its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Global,
    /// On Site-A (of both trees).
    SiteA,
}

pub struct Caller {
    pub role: &'static str,
    pub binding: Binding,
    pub subject: String,
    pub token: String,
    /// Its dashboard: one `GROUP_MEMBER_COUNT` widget on `$group`; its default.
    pub board: String,
}

impl Caller {
    pub fn label(&self) -> String {
        match self.binding {
            Binding::Global => format!("{} (global)", self.role),
            Binding::SiteA => format!("{} (Site-A)", self.role),
        }
    }
}

pub struct Env {
    pub app: TestApp,
    pub table: PolicyTable,
    /// The position's group in the device tree.
    pub groups: HashMap<Pos, String>,
    /// Its path (`Inventory/Region/Site-A/Core`).
    pub paths: HashMap<Pos, String>,
    /// The position's group in the service tree.
    pub service_groups: HashMap<Pos, String>,
    /// Site-A of the device tree and of the service tree: the scoped callers' bindings.
    pub scopes: Vec<String>,
    /// Site-A/Dock, inside the scope: where `moveGroup` cases move to or from.
    pub dock: String,
    /// A queued sweep run of the position's group.
    pub runs: HashMap<Pos, String>,
    /// A template published by the global admin.
    pub template: String,
    pub callers: Vec<Caller>,
    counter: AtomicUsize,
}

const CREATE: &str = "mutation($input: CreateGroupInput!) { createGroup(input: $input) { group { id path } userErrors { code message } } }";
const MOVE: &str = "mutation($id: ID!, $p: ID!) { moveGroup(input: { id: $id, newParentId: $p }) { userErrors { code message } } }";
pub const SCHEDULE: &str = "mutation($input: ScheduleSweepInput!) { scheduleSweep(input: $input) { created run { id } userErrors { code message } } }";

impl Env {
    /// A name or id not used before (`t17`).
    pub fn fresh(&self, stem: &str) -> String {
        format!("{stem}{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// Runs a mutation as the global admin; panics unless its payload has no userErrors.
    pub async fn setup(&self, query: &str, vars: Value) -> Value {
        let data = self.app.data(&self.app.admin, query, vars).await;
        let (field, payload) = data
            .as_object()
            .and_then(|o| o.iter().next())
            .expect("a payload");
        assert_eq!(payload["userErrors"], json!([]), "setup {field}: {data}");
        payload.clone()
    }

    /// Runs a mutation as `caller`; panics unless its payload has no userErrors.
    pub async fn setup_as(&self, caller: &Caller, query: &str, vars: Value) -> Value {
        let data = self.app.data(&caller.token, query, vars).await;
        let (field, payload) = data
            .as_object()
            .and_then(|o| o.iter().next())
            .expect("a payload");
        assert_eq!(payload["userErrors"], json!([]), "setup {field}: {data}");
        payload.clone()
    }

    /// A new group of type `kind` under `parent`, created by the global admin.
    pub async fn group(&self, kind: &str, name: &str, parent: Option<&str>) -> (String, String) {
        let p = self
            .setup(
                CREATE,
                json!({ "input": { "name": name, "type": kind, "parentId": parent } }),
            )
            .await;
        (
            p["group"]["id"].as_str().expect("id").to_string(),
            p["group"]["path"].as_str().expect("path").to_string(),
        )
    }

    /// A fresh, empty device group under `parent`.
    pub async fn child(&self, parent: &str) -> String {
        self.group("DEVICE", &self.fresh("t"), Some(parent)).await.0
    }

    /// A fresh queued run sweeping `group`, scheduled by the global admin.
    pub async fn run(&self, group: &str) -> String {
        let p = self
            .setup(
                SCHEDULE,
                json!({ "input": { "pollerId": "p1", "groupId": group, "ports": [22], "idempotencyKey": self.fresh("k") } }),
            )
            .await;
        p["run"]["id"].as_str().expect("run").to_string()
    }

    pub async fn events(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.app.pool)
            .await
            .expect("events")
    }
}

struct Tree {
    groups: HashMap<Pos, String>,
    paths: HashMap<Pos, String>,
    site_a: String,
    dock: String,
}

/// Inventory → Region → {Site-A → {Core, Dock, Moved-Out}, Site-B}; Elsewhere → Moved-In.
async fn tree(env: &Env, kind: &str) -> Tree {
    let (region, region_path) = env.group(kind, "Region", None).await;
    let (site_a, _) = env.group(kind, "Site-A", Some(&region)).await;
    let (core, core_path) = env.group(kind, "Core", Some(&site_a)).await;
    let (dock, _) = env.group(kind, "Dock", Some(&site_a)).await;
    let (site_b, site_b_path) = env.group(kind, "Site-B", Some(&region)).await;
    let (elsewhere, elsewhere_path) = env.group(kind, "Elsewhere", None).await;
    let (moved_in, _) = env.group(kind, "Moved-In", Some(&elsewhere)).await;
    let (moved_out, _) = env.group(kind, "Moved-Out", Some(&site_a)).await;
    let groups = HashMap::from([
        (Pos::Inside, core),
        (Pos::Outside, elsewhere),
        (Pos::Ancestor, region),
        (Pos::Sibling, site_b),
        (Pos::MovedIn, moved_in),
        (Pos::MovedOut, moved_out),
    ]);
    let paths = HashMap::from([
        (Pos::Inside, core_path),
        (Pos::Outside, elsewhere_path.clone()),
        (Pos::Ancestor, region_path.clone()),
        (Pos::Sibling, site_b_path),
        // Where they are once moved.
        (Pos::MovedIn, format!("{region_path}/Site-A/Moved-In")),
        (Pos::MovedOut, format!("{elsewhere_path}/Moved-Out")),
    ]);
    Tree {
        groups,
        paths,
        site_a,
        dock,
    }
}

const ADD: &str = "mutation($input: GroupMembersInput!) { addGroupMembers(input: $input) { userErrors { code message } } }";
const UPSERT_DEVICES: &str = "mutation($input: UpsertDevicesInput!) { upsertDevices(input: $input) { userErrors { code message } } }";
const UPSERT_SERVICES: &str = "mutation($input: UpsertServicesInput!) { upsertServices(input: $input) { userErrors { code message } } }";
const CREATE_DASHBOARD: &str = "mutation($input: CreateDashboardInput!) { createDashboard(input: $input) { dashboard { id } userErrors { code message } } }";
pub const ADD_WIDGET: &str = "mutation($input: AddWidgetInput!) { addWidget(input: $input) { widget { id } userErrors { code message } } }";
const SET_DEFAULT: &str = "mutation($id: ID!) { setDefaultDashboard(input: { id: $id }) { userErrors { code message } } }";
pub const PUBLISH: &str = "mutation($input: PublishDashboardTemplateInput!) { publishDashboardTemplate(input: $input) { dashboard { id } userErrors { code message } } }";

/// Builds the world: trees, members, runs, callers (scoped ones bound before the moves).
pub async fn build(app: TestApp) -> Env {
    let mut env = Env {
        app,
        table: PolicyTable::built_in().await.expect("policy"),
        groups: HashMap::new(),
        paths: HashMap::new(),
        service_groups: HashMap::new(),
        scopes: vec![],
        dock: String::new(),
        runs: HashMap::new(),
        template: String::new(),
        callers: vec![],
        counter: AtomicUsize::new(0),
    };
    let devices_tree = tree(&env, "DEVICE").await;
    let services_tree = tree(&env, "SERVICE").await;
    let devices: Vec<Value> = Pos::ALL
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({ "id": p.device(), "hostname": format!("h-{}", p.slug()), "ip": format!("127.0.0.{}", 10 + i) })
        })
        .collect();
    env.setup(UPSERT_DEVICES, json!({ "input": { "devices": devices } }))
        .await;
    let services: Vec<Value> = Pos::ALL
        .iter()
        .map(|p| json!({ "id": p.service(), "deviceId": p.device(), "type": "http", "name": p.slug() }))
        .collect();
    env.setup(
        UPSERT_SERVICES,
        json!({ "input": { "services": services } }),
    )
    .await;
    for p in Pos::ALL {
        env.setup(
            ADD,
            json!({ "input": { "groupId": devices_tree.groups[&p], "memberIds": [p.device()] } }),
        )
        .await;
        env.setup(
            ADD,
            json!({ "input": { "groupId": services_tree.groups[&p], "memberIds": [p.service()] } }),
        )
        .await;
    }

    // The callers: the four global tokens, and one token per role bound to Site-A (of the
    // device tree and of the service tree).
    let app = &env.app;
    let mut callers = vec![];
    for (role, token, subject) in [
        ("admin", &app.admin, "alice"),
        ("operator", &app.operator, "oscar"),
        ("viewer", &app.viewer, "vera"),
        ("auditor", &app.auditor, "audrey"),
    ] {
        callers.push((role, Binding::Global, subject.to_string(), token.clone()));
    }
    for role in ["admin", "operator", "viewer", "auditor"] {
        let subject = format!("scoped-{role}");
        let token = scoped_token(
            app,
            &subject,
            role,
            &[&devices_tree.site_a, &services_tree.site_a],
        )
        .await;
        callers.push((role, Binding::SiteA, subject, token));
    }

    // Moved after the bindings were granted.
    for t in [&devices_tree, &services_tree] {
        for (group, parent) in [
            (&t.groups[&Pos::MovedIn], &t.site_a),
            (&t.groups[&Pos::MovedOut], &t.groups[&Pos::Outside]),
        ] {
            env.setup(MOVE, json!({ "id": group, "p": parent })).await;
        }
    }

    for p in Pos::ALL {
        let run = env.run(&devices_tree.groups[&p]).await;
        env.runs.insert(p, run);
    }
    let published = env
        .setup(
            PUBLISH,
            json!({ "input": { "name": "Shared", "widgets": [] } }),
        )
        .await;
    env.template = published["dashboard"]["id"]
        .as_str()
        .expect("template")
        .to_string();

    for (role, binding, subject, token) in callers {
        let mut caller = Caller {
            role,
            binding,
            subject,
            token,
            board: String::new(),
        };
        caller.board = board(&env, &caller).await;
        env.callers.push(caller);
    }
    env.groups = devices_tree.groups;
    env.paths = devices_tree.paths;
    env.dock = devices_tree.dock;
    env.scopes = vec![devices_tree.site_a, services_tree.site_a];
    env.service_groups = services_tree.groups;
    env
}

/// A fresh dashboard of `caller`'s, empty.
pub async fn fresh_board(env: &Env, caller: &Caller) -> String {
    let p = env
        .setup_as(
            caller,
            CREATE_DASHBOARD,
            json!({ "input": { "name": env.fresh("b") } }),
        )
        .await;
    p["dashboard"]["id"].as_str().expect("board").to_string()
}

/// A widget on `board` counting the direct members of `$group`.
pub fn widget(board: &str, y: i64) -> Value {
    json!({ "input": {
        "dashboardId": board, "kind": "GROUP_MEMBER_COUNT", "title": "members",
        "config": { "group": "$group", "mode": "DIRECT" },
        "position": { "x": 0, "y": y, "w": 4, "h": 1 },
    } })
}

/// The caller's dashboard with its one widget, made its default.
async fn board(env: &Env, caller: &Caller) -> String {
    let board = fresh_board(env, caller).await;
    env.setup_as(caller, ADD_WIDGET, widget(&board, 0)).await;
    env.setup_as(caller, SET_DEFAULT, json!({ "id": board }))
        .await;
    board
}

/// A token of `subject` holding `role` on each of `scopes` (no global binding).
async fn scoped_token(app: &TestApp, subject: &str, role: &str, scopes: &[&str]) -> String {
    let commands = corral_projections::commands::access::access_commands(
        app.pool.clone(),
        corral_projections::wake::CommitSignal::new(vec![]),
    );
    let request = corral_api::auth::NewToken {
        subject: subject.to_string(),
        bindings: scopes
            .iter()
            .map(|s| corral_domain::access::Binding {
                role: role.to_string(),
                scope: Some(s.parse().expect("a group id")),
            })
            .collect(),
        expires_at: None,
    };
    corral_api::auth::issue(
        &commands,
        &app.pool,
        request,
        &corral_api::auth::cli_metadata(None),
    )
    .await
    .expect("scoped token")
    .secret
}
