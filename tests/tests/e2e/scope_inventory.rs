//! Scoped readers and the inventory: which devices and services a subject bound on a subtree
//! sees (static members of groups in scope only), the reverse lookup, member pages, widget
//! data, and sweeps for a scoped admin. Scope positions: inside (Core, under Site-A), a
//! sibling (Site-B), an ancestor (Region), and groups moved in and out.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use corral_api::state::ApiConfig;
use corral_projections::sweeps::SweepConfig;
use corral_tests::TestApp;
use serde_json::{json, Value};

use super::membership::add;

const UPSERT_DEVICES: &str = "mutation($input: UpsertDevicesInput!) { upsertDevices(input: $input) { userErrors { message } } }";
const UPSERT_SERVICES: &str = "mutation($input: UpsertServicesInput!) { upsertServices(input: $input) { userErrors { message } } }";
const DEVICE: &str = "query($id: ID!) { device(id: $id) { id direct: groups(mode: DIRECT) { group { name } reasons { source } } effective: groups(mode: EFFECTIVE) { group { name } } } }";
const DEVICES: &str = "query($filter: String, $first: Int, $after: String) { devices(filter: $filter, first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { node { id } } } }";
const MEMBERS: &str = "query($id: ID!) { group(id: $id) { memberCount(mode: EFFECTIVE) members(mode: EFFECTIVE) { totalCount missingMemberIds edges { node { ... on Device { id } } } } } }";
const MOVE: &str = "mutation($id: ID!, $p: ID!) { moveGroup(input: { id: $id, newParentId: $p }) { userErrors { code } } }";
const SCHEDULE: &str = "mutation($input: ScheduleSweepInput!) { scheduleSweep(input: $input) { created run { id groupId } userErrors { field code message } } }";
const PREVIEW: &str = "query($input: ScheduleSweepInput!) { previewSweep(input: $input) { hostsTotal userErrors { code } } }";
const CANCEL: &str = "mutation($input: CancelSweepInput!) { cancelSweep(input: $input) { run { status } userErrors { code } } }";
const DATA: &str = "query($id: ID!, $group: ID) { dashboard(id: $id, group: $group) { widgets { title data { state group { id } memberCount } } } }";

/// Region > (Site-A > Core, Site-B).
struct Tree {
    region: String,
    site_a: String,
    core: String,
    site_b: String,
}

async fn tree(app: &TestApp) -> Tree {
    let region = app.create_group("Region", None).await;
    let site_a = app.create_group("Site-A", Some(&region)).await;
    let core = app.create_group("Core", Some(&site_a)).await;
    let site_b = app.create_group("Site-B", Some(&region)).await;
    Tree {
        region,
        site_a,
        core,
        site_b,
    }
}

async fn move_group(app: &TestApp, id: &str, parent: &str) {
    let moved = app
        .data(&app.admin, MOVE, json!({ "id": id, "p": parent }))
        .await;
    assert_eq!(moved["moveGroup"]["userErrors"], json!([]), "{moved}");
}

async fn upsert_devices(app: &TestApp, devices: Value) {
    let p = app
        .data(
            &app.operator,
            UPSERT_DEVICES,
            json!({ "input": { "devices": devices } }),
        )
        .await;
    assert_eq!(p["upsertDevices"]["userErrors"], json!([]), "{p}");
}

fn ids(conn: &Value) -> Vec<String> {
    conn["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_string())
        .collect()
}

fn names(list: &Value) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["group"]["name"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

async fn device_ids(app: &TestApp, token: &str, filter: Value) -> (i64, Vec<String>) {
    let d = app
        .data(token, DEVICES, json!({ "filter": filter, "first": 50 }))
        .await;
    (
        d["devices"]["totalCount"].as_i64().unwrap(),
        ids(&d["devices"]),
    )
}

/// Waits until `group`'s direct members (as admin sees them) include `member`.
async fn member_arrives(app: &TestApp, group: &str, member: &str) {
    let start = Instant::now();
    loop {
        let d = app.data(&app.admin, MEMBERS, json!({ "id": group })).await;
        if ids(&d["group"]["members"]).iter().any(|m| m == member) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{member} never joined: {d}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn scoped_readers_see_static_members_of_groups_in_scope_only() {
    let app = TestApp::spawn().await;
    let t = tree(&app).await;
    upsert_devices(
        &app,
        json!([
            { "id": "d1", "hostname": "h-1" },
            { "id": "d2", "hostname": "h-2" },
            { "id": "d3", "hostname": "rule-3" },
            { "id": "d4", "hostname": "h-4" },
        ]),
    )
    .await;
    // d1 is a static member of Core (inside) and of Site-B (sibling); d2 of Site-B; d4 of
    // Region (the ancestor); d3 a member of Site-A through its rule only.
    add(&app, &t.core, &["d1".into()]).await;
    add(&app, &t.site_b, &["d1".into(), "d2".into()]).await;
    add(&app, &t.region, &["d4".into()]).await;
    let rule = app
        .data(
            &app.admin,
            "mutation($input: SetGroupRuleInput!) { setGroupRule(input: $input) { userErrors { message } } }",
            json!({ "input": { "groupId": t.site_a, "rule": "hostname:rule-%", "enabled": true } }),
        )
        .await;
    assert_eq!(rule["setGroupRule"]["userErrors"], json!([]), "{rule}");
    member_arrives(&app, &t.site_a, "d3").await;

    let sally = app.scoped_token("sally", "viewer", &t.site_a).await;

    // By id: only d1; the rule member, the sibling's and the ancestor's are as unknown.
    for (id, seen) in [("d1", true), ("d2", false), ("d3", false), ("d4", false)] {
        let d = app.data(&sally, DEVICE, json!({ "id": id })).await;
        assert_eq!(!d["device"].is_null(), seen, "{id}: {d}");
        let d = app.data(&app.viewer, DEVICE, json!({ "id": id })).await;
        assert!(!d["device"].is_null(), "a global viewer sees {id}");
    }
    // Lists and counts are filtered in SQL.
    assert_eq!(
        device_ids(&app, &sally, Value::Null).await,
        (1, vec!["d1".to_string()])
    );
    assert_eq!(
        device_ids(&app, &sally, json!("hostname:h-%")).await,
        (1, vec!["d1".to_string()])
    );
    assert_eq!(
        device_ids(&app, &sally, json!("hostname:rule-%")).await,
        (0, vec![])
    );
    assert_eq!(device_ids(&app, &app.viewer, Value::Null).await.0, 4);
    // A filter on a group in scope works; one on a hidden group is an unknown group, like
    // one that does not exist (it must not tell that d1 is in Site-B).
    assert_eq!(
        device_ids(&app, &sally, json!("group:Inventory/Region/Site-A")).await,
        (1, vec!["d1".to_string()])
    );
    for hidden in [
        "group:Inventory/Region/Site-B",
        "group:Inventory/Region",
        "group:Inventory/Region/Nowhere",
    ] {
        let body = app
            .gql(&sally, DEVICES, json!({ "filter": hidden, "first": 5 }))
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "RULE_INVALID",
            "{hidden}: {body}"
        );
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("unknown group"),
            "{body}"
        );
    }
    assert_eq!(
        device_ids(&app, &app.viewer, json!("group:Inventory/Region/Site-B"))
            .await
            .0,
        2
    );

    // The reverse lookup lists only groups sally may read, though d1 is in Site-B too.
    let d = app.data(&sally, DEVICE, json!({ "id": "d1" })).await;
    assert_eq!(names(&d["device"]["direct"]), vec!["Core"]);
    assert_eq!(names(&d["device"]["effective"]), vec!["Core", "Site-A"]);
    let d = app.data(&app.viewer, DEVICE, json!({ "id": "d1" })).await;
    assert_eq!(names(&d["device"]["direct"]), vec!["Core", "Site-B"]);
    assert_eq!(
        names(&d["device"]["effective"]),
        vec!["Core", "Inventory", "Region", "Site-A", "Site-B"]
    );

    // Site-A's member list is whole, but d3's record is not sally's to see.
    let m = app.data(&sally, MEMBERS, json!({ "id": t.site_a })).await;
    assert_eq!(m["group"]["memberCount"], 2, "{m}");
    assert_eq!(m["group"]["members"]["totalCount"], 2);
    assert_eq!(ids(&m["group"]["members"]), vec!["d1"]);
    assert_eq!(m["group"]["members"]["missingMemberIds"], json!(["d3"]));
    let m = app
        .data(&app.viewer, MEMBERS, json!({ "id": t.site_a }))
        .await;
    assert_eq!(ids(&m["group"]["members"]), vec!["d1", "d3"]);
    assert_eq!(m["group"]["members"]["missingMemberIds"], json!([]));

    // Site-B moves into Site-A: d2 comes into view, and d1's Site-B membership with it.
    move_group(&app, &t.site_b, &t.site_a).await;
    assert_eq!(
        device_ids(&app, &sally, Value::Null).await,
        (2, vec!["d1".to_string(), "d2".to_string()])
    );
    let d = app.data(&sally, DEVICE, json!({ "id": "d1" })).await;
    assert_eq!(names(&d["device"]["direct"]), vec!["Core", "Site-B"]);
    // Paging a scoped list: cursors walk the visible devices only.
    let p = app.data(&sally, DEVICES, json!({ "first": 1 })).await;
    assert_eq!(ids(&p["devices"]), vec!["d1"]);
    assert_eq!(p["devices"]["pageInfo"]["hasNextPage"], true);
    let after = p["devices"]["pageInfo"]["endCursor"].clone();
    let p = app
        .data(&sally, DEVICES, json!({ "first": 1, "after": after }))
        .await;
    assert_eq!(ids(&p["devices"]), vec!["d2"]);
    assert_eq!(p["devices"]["pageInfo"]["hasNextPage"], false);

    // Core and Site-B move out again: nothing is left in view.
    move_group(&app, &t.core, &t.region).await;
    move_group(&app, &t.site_b, &t.region).await;
    assert_eq!(device_ids(&app, &sally, Value::Null).await, (0, vec![]));
    let d = app.data(&sally, DEVICE, json!({ "id": "d1" })).await;
    assert!(d["device"].is_null(), "{d}");
    app.shutdown().await;
}

#[tokio::test]
async fn services_follow_their_own_static_memberships() {
    let app = TestApp::spawn().await;
    let t = tree(&app).await;
    let svc = app
        .data(
            &app.admin,
            "mutation { createGroup(input: { name: \"Web\", type: SERVICE }) { group { id } userErrors { message } } }",
            json!({}),
        )
        .await["createGroup"]["group"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    upsert_devices(
        &app,
        json!([{ "id": "d1", "hostname": "h-1" }, { "id": "d2" }]),
    )
    .await;
    add(&app, &t.core, &["d1".into()]).await;
    let p = app
        .data(
            &app.operator,
            UPSERT_SERVICES,
            json!({ "input": { "services": [
                { "id": "s1", "deviceId": "d1", "type": "http", "name": "web" },
                { "id": "s2", "deviceId": "d2", "type": "http", "name": "web" },
            ] } }),
        )
        .await;
    assert_eq!(p["upsertServices"]["userErrors"], json!([]), "{p}");
    add(&app, &svc, &["s1".into()]).await;
    const SERVICE: &str = "query($id: ID!) { service(id: $id) { id device { id } groups { group { name } } } services { totalCount edges { node { id } } } }";

    // A reader of the device tree sees d1, but no service (none is a member of its groups).
    let sally = app.scoped_token("sally", "viewer", &t.site_a).await;
    let s = app.data(&sally, SERVICE, json!({ "id": "s1" })).await;
    assert!(s["service"].is_null(), "{s}");
    assert_eq!(s["services"]["totalCount"], 0);
    // A reader of the service group sees s1, but not its device (outside its scope).
    let wes = app.scoped_token("wes", "viewer", &svc).await;
    let s = app.data(&wes, SERVICE, json!({ "id": "s1" })).await;
    assert_eq!(s["service"]["id"], "s1", "{s}");
    assert!(s["service"]["device"].is_null(), "{s}");
    assert_eq!(names(&s["service"]["groups"]), vec!["Web"]);
    assert_eq!(s["services"]["totalCount"], 1);
    assert_eq!(ids(&s["services"]), vec!["s1"]);
    let s = app.data(&wes, SERVICE, json!({ "id": "s2" })).await;
    assert!(s["service"].is_null(), "{s}");
    // A global viewer sees both, and the device.
    let s = app.data(&app.viewer, SERVICE, json!({ "id": "s1" })).await;
    assert_eq!(s["service"]["device"]["id"], "d1");
    assert_eq!(s["services"]["totalCount"], 2);
    app.shutdown().await;
}

#[tokio::test]
async fn widgets_bound_to_groups_out_of_scope_are_redacted() {
    let app = TestApp::spawn().await;
    let t = tree(&app).await;
    upsert_devices(&app, json!([{ "id": "d1" }, { "id": "d2" }])).await;
    add(&app, &t.core, &["d1".into()]).await;
    add(&app, &t.site_b, &["d1".into(), "d2".into()]).await;
    let sally = app.scoped_token("sally", "viewer", &t.site_a).await;

    let created = app
        .data(
            &sally,
            "mutation { createDashboard(input: { name: \"Mine\" }) { dashboard { id } userErrors { message } } }",
            json!({}),
        )
        .await;
    let board = created["createDashboard"]["dashboard"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let missing = uuid::Uuid::new_v4().to_string();
    for (i, (title, group)) in [
        ("core", t.core.as_str()),
        ("site-b", t.site_b.as_str()),
        ("region", t.region.as_str()),
        ("missing", missing.as_str()),
        ("variable", "$group"),
    ]
    .into_iter()
    .enumerate()
    {
        let p = app
            .data(
                &sally,
                "mutation($input: AddWidgetInput!) { addWidget(input: $input) { userErrors { field code message } } }",
                json!({ "input": {
                    "dashboardId": board, "kind": "GROUP_MEMBER_COUNT", "title": title,
                    "config": { "group": group, "mode": "DIRECT" },
                    "position": { "x": 0, "y": i, "w": 4, "h": 1 },
                } }),
            )
            .await;
        assert_eq!(p["addWidget"]["userErrors"], json!([]), "{p}");
    }
    let states = |d: &Value| -> Vec<(String, String, Value, Value)> {
        d["dashboard"]["widgets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["title"].as_str().unwrap().to_string(),
                    w["data"]["state"].as_str().unwrap().to_string(),
                    w["data"]["memberCount"].clone(),
                    w["data"]["group"]["id"].clone(),
                )
            })
            .collect()
    };
    let d = app
        .data(&sally, DATA, json!({ "id": board, "group": t.site_b }))
        .await;
    let redacted = |title: &str| {
        (
            title.to_string(),
            "REDACTED".to_string(),
            Value::Null,
            Value::Null,
        )
    };
    assert_eq!(
        states(&d),
        vec![
            (
                "core".to_string(),
                "OK".to_string(),
                json!(1),
                json!(t.core)
            ),
            redacted("site-b"),
            redacted("region"),
            // A scoped caller cannot tell a missing group from a hidden one.
            redacted("missing"),
            redacted("variable"),
        ]
    );
    let d = app
        .data(&sally, DATA, json!({ "id": board, "group": t.core }))
        .await;
    assert_eq!(states(&d)[4].1, "OK");

    // Site-B moves into Site-A: its widget renders.
    move_group(&app, &t.site_b, &t.site_a).await;
    let d = app.data(&sally, DATA, json!({ "id": board })).await;
    let s = states(&d);
    assert_eq!(
        s[1],
        (
            "site-b".to_string(),
            "OK".to_string(),
            json!(2),
            json!(t.site_b)
        )
    );
    assert_eq!(s[2], redacted("region"));
    app.shutdown().await;
}

fn sweep_input(group: Option<&str>, targets: &[&str], key: &str) -> Value {
    json!({
        "pollerId": "p1", "targets": targets, "groupId": group, "ports": [22],
        "idempotencyKey": key,
    })
}

async fn sweep_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'SweepRun'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_scoped_admin_sweeps_groups_in_scope_only() {
    let app = TestApp::spawn_with(
        ApiConfig {
            sweeps: SweepConfig {
                allow: vec!["127.0.0.0/8".parse().unwrap()],
                enabled: true,
                ..SweepConfig::default()
            },
            ..ApiConfig::default()
        },
        true,
    )
    .await;
    let t = tree(&app).await;
    upsert_devices(
        &app,
        json!([{ "id": "d1", "ip": "127.0.0.5" }, { "id": "d2", "ip": "127.0.0.6" }]),
    )
    .await;
    add(&app, &t.core, &["d1".into()]).await;
    add(&app, &t.site_b, &["d2".into()]).await;
    let ada = app.scoped_token("ada", "admin", &t.site_a).await;

    // Out of scope: the sibling, the ancestor, a group that does not exist, and addresses
    // (which belong to no group). FORBIDDEN, and nothing is written.
    let missing = uuid::Uuid::new_v4().to_string();
    for (group, targets) in [
        (Some(t.site_b.as_str()), vec![]),
        (Some(t.region.as_str()), vec![]),
        (Some(missing.as_str()), vec![]),
        (None, vec!["127.0.0.1"]),
        (Some(t.core.as_str()), vec!["127.0.0.1"]),
    ] {
        let input = sweep_input(group, &targets, "k-out");
        let body = app.gql(&ada, SCHEDULE, json!({ "input": input })).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{input}: {body}"
        );
        let body = app.gql(&ada, PREVIEW, json!({ "input": input })).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{input}: {body}"
        );
    }
    assert_eq!(sweep_events(&app).await, 0);
    let reserved: i64 = sqlx::query_scalar("SELECT count(*) FROM sweep_idempotency_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(reserved, 0, "no idempotency key was reserved");

    // In scope: Core.
    let p = app
        .data(
            &ada,
            PREVIEW,
            json!({ "input": sweep_input(Some(&t.core), &[], "k") }),
        )
        .await;
    assert_eq!(p["previewSweep"]["userErrors"], json!([]), "{p}");
    assert_eq!(p["previewSweep"]["hostsTotal"], 1);
    let p = app
        .data(
            &ada,
            SCHEDULE,
            json!({ "input": sweep_input(Some(&t.core), &[], "k-core") }),
        )
        .await;
    assert_eq!(p["scheduleSweep"]["userErrors"], json!([]), "{p}");
    let mine = p["scheduleSweep"]["run"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(sweep_events(&app).await > 0);

    // A global admin's runs: of Site-B, and of addresses.
    let mut theirs = vec![];
    for input in [
        sweep_input(Some(&t.site_b), &[], "k-b"),
        sweep_input(None, &["127.0.0.1"], "k-addr"),
    ] {
        let p = app
            .data(&app.admin, SCHEDULE, json!({ "input": input }))
            .await;
        assert_eq!(p["scheduleSweep"]["userErrors"], json!([]), "{p}");
        theirs.push(
            p["scheduleSweep"]["run"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    const RUNS: &str = "{ sweepRuns { totalCount edges { node { id } } } }";
    let runs = app.data(&ada, RUNS, json!({})).await;
    assert_eq!(runs["sweepRuns"]["totalCount"], 1, "{runs}");
    assert_eq!(ids(&runs["sweepRuns"]), vec![mine.clone()]);
    let runs = app.data(&app.admin, RUNS, json!({})).await;
    assert_eq!(runs["sweepRuns"]["totalCount"], 3, "{runs}");
    for id in &theirs {
        let r = app
            .data(
                &ada,
                "query($id: ID!) { sweepRun(id: $id) { id } }",
                json!({ "id": id }),
            )
            .await;
        assert!(r["sweepRun"].is_null(), "{r}");
        let body = app
            .gql(&ada, CANCEL, json!({ "input": { "id": id } }))
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{body}"
        );
    }
    let body = app
        .gql(
            &ada,
            CANCEL,
            json!({ "input": { "id": uuid::Uuid::new_v4() } }),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );
    let r = app
        .data(
            &ada,
            "query($id: ID!) { sweepRun(id: $id) { id } }",
            json!({ "id": mine }),
        )
        .await;
    assert_eq!(r["sweepRun"]["id"], mine.as_str());
    let p = app
        .data(&ada, CANCEL, json!({ "input": { "id": mine } }))
        .await;
    assert_eq!(p["cancelSweep"]["userErrors"], json!([]), "{p}");

    // Core moves out of Site-A: ada's own run is out of reach at once.
    move_group(&app, &t.core, &t.region).await;
    let runs = app.data(&ada, RUNS, json!({})).await;
    assert_eq!(runs["sweepRuns"]["totalCount"], 0, "{runs}");
    app.shutdown().await;
}

/// A static add grants visibility, so a caller bound to Site-A may add only what it already
/// sees: another scope's device is refused exactly like an unknown id, and stays hidden. A
/// rule or a filter naming a group beyond the scope by id is an unknown group too.
#[tokio::test]
async fn scoped_writes_cannot_pull_in_or_probe_other_scopes() {
    const ADD: &str = "mutation($g: ID!, $m: [String!]!) { addGroupMembers(input: { groupId: $g, memberIds: $m }) { changed userErrors { field code message } } }";
    const SET_RULE: &str = "mutation($g: ID!, $r: String!) { setGroupRule(input: { groupId: $g, rule: $r }) { userErrors { code message } } }";
    const PREVIEW_RULE: &str =
        "query($r: String!) { previewRule(type: DEVICE, rule: $r) { count errors { message } } }";
    let app = TestApp::spawn().await;
    let t = tree(&app).await;
    upsert_devices(
        &app,
        json!([{ "id": "d1", "hostname": "a" }, { "id": "d2", "hostname": "b" }, { "id": "d5", "hostname": "e" }]),
    )
    .await;
    add(&app, &t.core, &["d1".to_string()]).await;
    add(&app, &t.site_b, &["d2".to_string()]).await;
    let operator = app.scoped_token("otto", "operator", &t.site_a).await;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    for hidden in [
        json!(["d2"]),
        json!(["d5"]),
        json!(["d1", "d2"]),
        json!(["nope"]),
    ] {
        let p = app
            .data(&operator, ADD, json!({ "g": t.core, "m": hidden }))
            .await;
        let e = &p["addGroupMembers"]["userErrors"][0];
        assert_eq!(e["code"], "UNKNOWN_MEMBER", "{hidden}: {p}");
        assert_eq!(e["field"], "memberIds", "{p}");
    }
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(before, after, "refused adds write nothing");
    let d2 = app.data(&operator, DEVICE, json!({ "id": "d2" })).await;
    assert_eq!(d2["device"], Value::Null, "{d2}");
    // What it sees, it may add to another of its groups.
    let ok = app
        .data(&operator, ADD, json!({ "g": t.site_a, "m": ["d1"] }))
        .await;
    assert_eq!(ok["addGroupMembers"]["userErrors"], json!([]), "{ok}");

    // A rule naming Site-B by id: unknown to a caller bound to Site-A.
    let admin = app.scoped_token("ada", "admin", &t.site_a).await;
    let rule = format!("group:{}", t.site_b);
    let set = app
        .data(&admin, SET_RULE, json!({ "g": t.core, "r": rule }))
        .await;
    assert_eq!(
        set["setGroupRule"]["userErrors"][0]["code"], "RULE_INVALID",
        "{set}"
    );
    let preview = app
        .data(&operator, PREVIEW_RULE, json!({ "r": rule }))
        .await;
    let message = preview["previewRule"]["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("unknown group"), "{preview}");
    // The same rule by a global admin is accepted.
    let global = app
        .data(&app.admin, SET_RULE, json!({ "g": t.core, "r": rule }))
        .await;
    assert_eq!(global["setGroupRule"]["userErrors"], json!([]), "{global}");

    // Deleting a group that Site-B's rule refers to: refused, without naming Site-B.
    let lab = app.create_group("Lab", Some(&t.site_a)).await;
    let refers = app
        .data(
            &app.admin,
            SET_RULE,
            json!({ "g": t.site_b, "r": format!("group:{lab}") }),
        )
        .await;
    assert_eq!(refers["setGroupRule"]["userErrors"], json!([]), "{refers}");
    const DELETE: &str =
        "mutation($id: ID!) { deleteGroup(input: { id: $id }) { userErrors { code message } } }";
    let refused = app.data(&admin, DELETE, json!({ "id": lab })).await;
    let e = &refused["deleteGroup"]["userErrors"][0];
    assert_eq!(e["code"], "REFERENCED", "{refused}");
    let message = e["message"].as_str().unwrap();
    assert!(!message.contains(&t.site_b), "{message}");
    assert!(
        message.contains("1 group(s) beyond your scope"),
        "{message}"
    );
    let named = app.data(&app.admin, DELETE, json!({ "id": lab })).await;
    assert!(
        named.to_string().contains(&t.site_b),
        "a global admin is told which group: {named}"
    );
    app.shutdown().await;
}
