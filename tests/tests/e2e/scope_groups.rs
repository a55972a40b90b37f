//! Scoped access to groups: reads answer nothing beyond the caller's scope (lookups null, lists
//! and counts filtered), time travel decides by the current tree, and writes beyond the scope
//! are `FORBIDDEN` with nothing written.
//!
//! The tree of every test: `Inventory` (the root, an ancestor of the scope) with `Site-A` (the
//! scope) holding `Core`, and its sibling `Site-B` holding `Edge`.

use corral_tests::TestApp;
use serde_json::{json, Value};

const GROUP: &str = "query($id: ID!) { group(id: $id) { id name parent { name } ancestors { name } children { totalCount edges { node { name } } } } }";
const GROUP_AT: &str = "query($id: ID!, $p: Position) { group(id: $id, atPosition: $p) { name path parent { name } ancestors { name } children { totalCount edges { node { name } } } } }";
const BY_PATH: &str = "query($path: String!) { groupByPath(type: DEVICE, path: $path) { name } }";
const GROUPS: &str = "query($first: Int, $after: String, $search: String) { groups(type: DEVICE, first: $first, after: $after, search: $search) { totalCount pageInfo { hasNextPage endCursor } edges { node { name } } } }";
const MOVE: &str = "mutation($id: ID!, $p: ID!) { moveGroup(input: { id: $id, newParentId: $p }) { position group { name } userErrors { code message } } }";

struct Tree {
    root: String,
    site_a: String,
    core: String,
    site_b: String,
    edge: String,
}

async fn tree(app: &TestApp) -> Tree {
    let root = app
        .data(&app.admin, "{ root(type: DEVICE) { id } }", json!({}))
        .await["root"]["id"]
        .as_str()
        .expect("root")
        .to_string();
    let site_a = app.create_group("Site-A", None).await;
    let core = app.create_group("Core", Some(&site_a)).await;
    let site_b = app.create_group("Site-B", None).await;
    let edge = app.create_group("Edge", Some(&site_b)).await;
    Tree {
        root,
        site_a,
        core,
        site_b,
        edge,
    }
}

async fn events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

async fn group(app: &TestApp, token: &str, id: &str) -> Value {
    app.data(token, GROUP, json!({ "id": id })).await["group"].clone()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|g| {
            g["name"]
                .as_str()
                .or(g["node"]["name"].as_str())
                .expect("a name")
                .to_string()
        })
        .collect()
}

async fn move_group(app: &TestApp, token: &str, id: &str, parent: &str) -> Value {
    app.gql(token, MOVE, json!({ "id": id, "p": parent })).await
}

#[tokio::test]
async fn scoped_lookups_lists_and_links_stop_at_the_scope() {
    let app = TestApp::spawn().await;
    let t = tree(&app).await;
    let viewer = app.scoped_token("vera", "viewer", &t.site_a).await;

    // Inside: the scope and its subtree.
    let a = group(&app, &viewer, &t.site_a).await;
    assert_eq!(a["name"], "Site-A");
    assert_eq!(a["parent"], Value::Null, "the parent is beyond the scope");
    assert_eq!(a["ancestors"], json!([]));
    assert_eq!(names(&a["children"]["edges"]), ["Core"]);
    let core = group(&app, &viewer, &t.core).await;
    assert_eq!(core["parent"]["name"], "Site-A");
    assert_eq!(names(&core["ancestors"]), ["Site-A"]);
    // Outside (sibling, its child) and the ancestor: as if they did not exist.
    for id in [&t.site_b, &t.edge, &t.root] {
        assert_eq!(group(&app, &viewer, id).await, Value::Null, "{id}");
    }
    let root = app
        .data(&viewer, "{ root(type: DEVICE) { id } }", json!({}))
        .await;
    assert_eq!(root["root"], Value::Null);
    for (path, found) in [
        ("Inventory/Site-A/Core", true),
        ("inventory/site-a", true),
        ("Inventory/Site-B", false),
        ("Inventory/Site-B/Edge", false),
        ("Inventory", false),
    ] {
        let g = app.data(&viewer, BY_PATH, json!({ "path": path })).await;
        assert_eq!(!g["groupByPath"].is_null(), found, "{path}: {g}");
    }
    // A global viewer still sees it all.
    let global = group(&app, &app.viewer, &t.core).await;
    assert_eq!(names(&global["ancestors"]), ["Inventory", "Site-A"]);

    // groups: filtered in SQL, so the count and the keyset pages hold.
    let all = app.data(&app.viewer, GROUPS, json!({ "first": 100 })).await;
    assert_eq!(all["groups"]["totalCount"], 5);
    let page = app.data(&viewer, GROUPS, json!({ "first": 1 })).await["groups"].clone();
    assert_eq!(page["totalCount"], 2, "{page}");
    assert_eq!(names(&page["edges"]), ["Site-A"]);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let next = app
        .data(
            &viewer,
            GROUPS,
            json!({ "first": 1, "after": page["pageInfo"]["endCursor"] }),
        )
        .await["groups"]
        .clone();
    assert_eq!(names(&next["edges"]), ["Core"]);
    assert_eq!(next["pageInfo"]["hasNextPage"], false, "{next}");
    let search = app
        .data(&viewer, GROUPS, json!({ "first": 10, "search": "site" }))
        .await["groups"]
        .clone();
    assert_eq!(search["totalCount"], 1);
    assert_eq!(names(&search["edges"]), ["Site-A"]);

    // Moved in: Edge under Site-A is readable at once, its parent now in scope.
    let moved = move_group(&app, &app.admin, &t.edge, &t.site_a).await;
    assert!(moved.get("errors").is_none(), "{moved}");
    let edge = group(&app, &viewer, &t.edge).await;
    assert_eq!(edge["parent"]["name"], "Site-A");
    assert_eq!(names(&edge["ancestors"]), ["Site-A"]);
    let count = app.data(&viewer, GROUPS, json!({ "first": 0 })).await;
    assert_eq!(count["groups"]["totalCount"], 3);
    // Moved out: Core under Site-B disappears at once, from lookups, lists and children.
    let moved = move_group(&app, &app.admin, &t.core, &t.site_b).await;
    assert!(moved.get("errors").is_none(), "{moved}");
    assert_eq!(group(&app, &viewer, &t.core).await, Value::Null);
    let g = app
        .data(&viewer, BY_PATH, json!({ "path": "Inventory/Site-B/Core" }))
        .await;
    assert_eq!(g["groupByPath"], Value::Null);
    let list = app.data(&viewer, GROUPS, json!({ "first": 10 })).await;
    assert_eq!(list["groups"]["totalCount"], 2);
    assert_eq!(names(&list["groups"]["edges"]), ["Site-A", "Edge"]);
    let a = group(&app, &viewer, &t.site_a).await;
    assert_eq!(names(&a["children"]["edges"]), ["Edge"]);
    app.shutdown().await;
}

async fn head(app: &TestApp) -> String {
    let p: i64 = sqlx::query_scalar("SELECT coalesce(max(log_position), 0) FROM event_log")
        .fetch_one(&app.pool)
        .await
        .expect("head");
    p.to_string()
}

#[tokio::test]
async fn time_travel_decides_readability_by_the_current_tree() {
    let app = TestApp::spawn().await;
    let t = tree(&app).await;
    insert_devices(&app, &["d0"]).await;
    let add = app
        .data(
            &app.operator,
            &members_mutation("addGroupMembers"),
            json!({ "id": t.core, "ids": ["d0"] }),
        )
        .await;
    assert_eq!(add["addGroupMembers"]["userErrors"], json!([]));
    let gone = app.create_group("Gone", Some(&t.site_a)).await;
    let then = head(&app).await;
    let viewer = app.scoped_token("tim", "viewer", &t.site_a).await;
    let at = |id: &str| json!({ "id": id, "p": then });

    // Moved in since: readable as of then, but its parent then (Site-B) is beyond the scope.
    assert!(move_group(&app, &app.admin, &t.edge, &t.site_a)
        .await
        .get("errors")
        .is_none());
    // Moved out since: not readable, even as of a time it was inside.
    assert!(move_group(&app, &app.admin, &t.core, &t.site_b)
        .await
        .get("errors")
        .is_none());
    // Deleted since: only a global reader may read it as of the past.
    let deleted = app
        .data(
            &app.admin,
            "mutation($id: ID!) { deleteGroup(input: { id: $id }) { userErrors { code } } }",
            json!({ "id": gone }),
        )
        .await;
    assert_eq!(deleted["deleteGroup"]["userErrors"], json!([]));

    let edge = app.data(&viewer, GROUP_AT, at(&t.edge)).await["group"].clone();
    assert_eq!(edge["name"], "Edge");
    assert_eq!(edge["parent"], Value::Null, "{edge}");
    assert_eq!(edge["ancestors"], json!([]));
    assert_eq!(edge["path"], "Edge", "no name beyond the scope: {edge}");
    let admin_edge = app.data(&app.admin, GROUP_AT, at(&t.edge)).await["group"].clone();
    assert_eq!(admin_edge["parent"]["name"], "Site-B");
    assert_eq!(admin_edge["path"], "Inventory/Site-B/Edge");
    assert_eq!(names(&admin_edge["ancestors"]), ["Inventory", "Site-B"]);
    for id in [&t.core, &gone, &t.site_b, &t.root] {
        let g = app.data(&viewer, GROUP_AT, at(id)).await;
        assert_eq!(g["group"], Value::Null, "{id}: {g}");
        let g = app.data(&app.admin, GROUP_AT, at(id)).await;
        assert!(!g["group"].is_null(), "a global reader reads {id}");
    }
    // Site-A's children then were Core and Gone: neither is readable now.
    let a = app.data(&viewer, GROUP_AT, at(&t.site_a)).await["group"].clone();
    assert_eq!(a["parent"], Value::Null);
    assert_eq!(a["children"]["totalCount"], 0, "{a}");
    assert_eq!(a["children"]["edges"], json!([]));
    let a = app.data(&app.admin, GROUP_AT, at(&t.site_a)).await["group"].clone();
    assert_eq!(names(&a["children"]["edges"]), ["Core", "Gone"]);
    // Site-A's effective members then still count d0 (the group's data), but d0 came
    // through Core, beyond the scope now, so its record is not visible: it is listed in
    // missingMemberIds, with no edge.
    let via = "query($id: ID!, $p: Position) { group(id: $id, atPosition: $p) { members(mode: EFFECTIVE) { totalCount missingMemberIds edges { viaGroup { name } node { ... on Device { id } } } } } }";
    let m = app.data(&viewer, via, at(&t.site_a)).await;
    assert_eq!(m["group"]["members"]["edges"], json!([]), "{m}");
    assert_eq!(
        m["group"]["members"]["missingMemberIds"],
        json!(["d0"]),
        "{m}"
    );
    assert_eq!(m["group"]["members"]["totalCount"], 1, "{m}");
    let m = app.data(&app.admin, via, at(&t.site_a)).await;
    assert_eq!(
        m["group"]["members"]["edges"][0]["viaGroup"]["name"],
        "Core"
    );
    // As of now, Edge's parent is Site-A again.
    let now = json!({ "id": t.edge, "p": head(&app).await });
    let edge = app.data(&viewer, GROUP_AT, now).await["group"].clone();
    assert_eq!(edge["parent"]["name"], "Site-A");
    assert_eq!(names(&edge["ancestors"]), ["Site-A"]);
    app.shutdown().await;
}

/// Runs `query` with `token` and checks that it is refused with `FORBIDDEN`, without data
/// for the field and without an event.
async fn forbidden(app: &TestApp, token: &str, field: &str, query: &str, vars: Value) {
    let before = events(app).await;
    let body = app.gql(token, query, vars.clone()).await;
    assert_eq!(code(&body), "FORBIDDEN", "{field} {vars}: {body}");
    assert!(body["data"][field].is_null(), "{field}: {body}");
    assert_eq!(events(app).await, before, "{field} wrote an event");
}

async fn allowed(app: &TestApp, token: &str, field: &str, query: &str, vars: Value) -> Value {
    let body = app.data(token, query, vars.clone()).await;
    assert_eq!(
        body[field]["userErrors"],
        json!([]),
        "{field} {vars}: {body}"
    );
    body[field].clone()
}

const CREATE: &str = "mutation($name: String!, $p: ID) { createGroup(input: { name: $name, type: DEVICE, parentId: $p }) { group { id } userErrors { code message } } }";
const RENAME: &str = "mutation($id: ID!, $name: String!) { renameGroup(input: { id: $id, name: $name }) { group { name } userErrors { code message } } }";
const UPDATE: &str = "mutation($id: ID!) { updateGroup(input: { id: $id, description: \"d\" }) { group { name } userErrors { code message } } }";
const DELETE: &str = "mutation($id: ID!) { deleteGroup(input: { id: $id }) { deletedId userErrors { code message } } }";
const SET_RULE: &str = "mutation($id: ID!, $rule: String!) { setGroupRule(input: { groupId: $id, rule: $rule }) { group { name } userErrors { code message } } }";
const CLEAR_RULE: &str = "mutation($id: ID!) { clearGroupRule(input: { groupId: $id }) { group { name } userErrors { code message } } }";

#[tokio::test]
async fn scoped_group_writes_outside_the_scope_are_forbidden_and_write_nothing() {
    let app = TestApp::spawn().await;
    let t = tree(&app).await;
    let admin = app.scoped_token("ada", "admin", &t.site_a).await;
    let missing = uuid::Uuid::new_v4().to_string();

    // Inside.
    let made = allowed(
        &app,
        &admin,
        "createGroup",
        CREATE,
        json!({ "name": "Lab", "p": t.site_a }),
    )
    .await;
    let lab = made["group"]["id"].as_str().expect("id").to_string();
    allowed(
        &app,
        &admin,
        "renameGroup",
        RENAME,
        json!({ "id": t.core, "name": "Core-1" }),
    )
    .await;
    allowed(
        &app,
        &admin,
        "renameGroup",
        RENAME,
        json!({ "id": t.site_a, "name": "Site-A1" }),
    )
    .await;
    allowed(&app, &admin, "updateGroup", UPDATE, json!({ "id": t.core })).await;
    allowed(
        &app,
        &admin,
        "setGroupRule",
        SET_RULE,
        json!({ "id": t.core, "rule": "hostname:x%" }),
    )
    .await;
    allowed(
        &app,
        &admin,
        "clearGroupRule",
        CLEAR_RULE,
        json!({ "id": t.core }),
    )
    .await;
    let moved = move_group(&app, &admin, &t.core, &lab).await;
    assert_eq!(
        moved["data"]["moveGroup"]["userErrors"],
        json!([]),
        "{moved}"
    );

    // Outside (the sibling, its child, the root, a group that does not exist).
    for p in [&t.site_b, &t.edge, &t.root, &missing] {
        forbidden(
            &app,
            &admin,
            "createGroup",
            CREATE,
            json!({ "name": "X", "p": p }),
        )
        .await;
    }
    forbidden(
        &app,
        &admin,
        "createGroup",
        CREATE,
        json!({ "name": "X", "p": null }),
    )
    .await;
    for id in [&t.site_b, &t.edge, &t.root, &missing] {
        forbidden(
            &app,
            &admin,
            "renameGroup",
            RENAME,
            json!({ "id": id, "name": "X" }),
        )
        .await;
        forbidden(&app, &admin, "updateGroup", UPDATE, json!({ "id": id })).await;
        forbidden(&app, &admin, "deleteGroup", DELETE, json!({ "id": id })).await;
        forbidden(
            &app,
            &admin,
            "setGroupRule",
            SET_RULE,
            json!({ "id": id, "rule": "hostname:x%" }),
        )
        .await;
        forbidden(
            &app,
            &admin,
            "clearGroupRule",
            CLEAR_RULE,
            json!({ "id": id }),
        )
        .await;
    }
    // A rule inside may not name a group beyond the scope: it is unknown, as a missing one.
    let refs = app
        .data(
            &admin,
            SET_RULE,
            json!({ "id": t.core, "rule": "group:Inventory/Site-B" }),
        )
        .await;
    assert_eq!(
        refs["setGroupRule"]["userErrors"][0]["code"], "RULE_INVALID",
        "{refs}"
    );
    // Moves: out of the scope (the new parent), into it (the old parent), the scope itself.
    let mv = |id: &str, p: &str| json!({ "id": id, "p": p });
    forbidden(&app, &admin, "moveGroup", MOVE, mv(&t.core, &t.site_b)).await;
    forbidden(&app, &admin, "moveGroup", MOVE, mv(&t.edge, &t.site_a)).await;
    forbidden(&app, &admin, "moveGroup", MOVE, mv(&t.site_a, &t.site_b)).await;
    forbidden(&app, &admin, "moveGroup", MOVE, mv(&missing, &t.site_a)).await;
    // Delete inside, last (Lab holds Core: move it back first).
    let back = move_group(&app, &admin, &t.core, &t.site_a).await;
    assert_eq!(back["data"]["moveGroup"]["userErrors"], json!([]), "{back}");
    allowed(&app, &admin, "deleteGroup", DELETE, json!({ "id": lab })).await;

    // Moved out by a global admin: the scoped admin loses it at once.
    let out = move_group(&app, &app.admin, &t.core, &t.site_b).await;
    assert_eq!(out["data"]["moveGroup"]["userErrors"], json!([]), "{out}");
    forbidden(
        &app,
        &admin,
        "renameGroup",
        RENAME,
        json!({ "id": t.core, "name": "Y" }),
    )
    .await;
    assert_eq!(group(&app, &admin, &t.core).await, Value::Null);
    app.shutdown().await;
}

const MEMBERS: [&str; 4] = [
    "addGroupMembers",
    "removeGroupMembers",
    "excludeGroupMembers",
    "unexcludeGroupMembers",
];

fn members_mutation(field: &str) -> String {
    format!("mutation($id: ID!, $ids: [String!]!) {{ {field}(input: {{ groupId: $id, memberIds: $ids }}) {{ changed userErrors {{ code message }} }} }}")
}

const BY_RULE: &str = "mutation($id: ID!, $rule: String!) { addGroupMembersByRule(input: { groupId: $id, rule: $rule }) { changed userErrors { code message } } }";
const PREVIEW: &str = "query($rule: String!) { previewRule(type: DEVICE, rule: $rule, first: 10) { valid count sample { ... on Device { id } } errors { message } } }";
const EXPLAIN: &str = "query($g: ID!, $m: String!) { explainMembership(groupId: $g, memberId: $m) { member directMember staticEntry known rule reasons { viaGroupId } } }";

async fn insert_devices(app: &TestApp, ids: &[&str]) {
    sqlx::query(
        "INSERT INTO devices (id, hostname, is_available)
         SELECT x, 'host-' || x, true FROM unnest($1::text[]) x",
    )
    .bind(ids)
    .execute(&app.pool)
    .await
    .expect("insert devices");
}

#[tokio::test]
async fn scoped_operators_edit_memberships_only_inside_and_see_only_their_devices() {
    let app = TestApp::spawn().await;
    let t = tree(&app).await;
    insert_devices(&app, &["d-in", "d-out", "d-none", "d-rule"]).await;
    let operator = app.scoped_token("otto", "operator", &t.site_a).await;
    // A scoped operator adds only what it sees: a global operator places d-in in a group of
    // the scope (Shelf, under Site-A).
    let shelf = app.create_group("Shelf", Some(&t.site_a)).await;
    super::membership::add(&app, &shelf, &["d-in".to_string()]).await;
    let ids = json!(["d-in"]);

    // Inside: every membership mutation works on the scope's subtree.
    for field in MEMBERS {
        allowed(
            &app,
            &operator,
            field,
            &members_mutation(field),
            json!({ "id": t.core, "ids": ids }),
        )
        .await;
    }
    allowed(
        &app,
        &operator,
        "addGroupMembers",
        &members_mutation("addGroupMembers"),
        json!({ "id": t.core, "ids": ids }),
    )
    .await;
    // Outside: FORBIDDEN, nothing written, for the sibling, its child, the root, a missing group.
    let missing = uuid::Uuid::new_v4().to_string();
    for id in [&t.site_b, &t.edge, &t.root, &missing] {
        for field in MEMBERS {
            forbidden(
                &app,
                &operator,
                field,
                &members_mutation(field),
                json!({ "id": id, "ids": ["d-out"] }),
            )
            .await;
        }
        forbidden(
            &app,
            &operator,
            "addGroupMembersByRule",
            BY_RULE,
            json!({ "id": id, "rule": "hostname:host-%" }),
        )
        .await;
    }
    // Group writes need rights an operator holds nowhere: refused before they run.
    for (field, query, vars) in [
        ("createGroup", CREATE, json!({ "name": "X", "p": t.site_a })),
        (
            "setGroupRule",
            SET_RULE,
            json!({ "id": t.core, "rule": "hostname:x%" }),
        ),
    ] {
        forbidden(&app, &operator, field, query, vars).await;
    }

    // d-out is a static member beyond the scope; d-rule a member of Core by its rule only.
    let add = members_mutation("addGroupMembers");
    allowed(
        &app,
        &app.operator,
        "addGroupMembers",
        &add,
        json!({ "id": t.site_b, "ids": ["d-out"] }),
    )
    .await;
    sqlx::query(
        "INSERT INTO rm_membership.direct (group_id, member_id, source, since)
         VALUES ($1::uuid, 'd-rule', 'R', now())",
    )
    .bind(&t.core)
    .execute(&app.pool)
    .await
    .expect("a rule member");

    // previewRule lists and counts only devices visible in the scope (static membership).
    let all = app
        .data(&app.viewer, PREVIEW, json!({ "rule": "hostname:host-%" }))
        .await;
    assert_eq!(all["previewRule"]["count"], 4, "{all}");
    let mine = app
        .data(&operator, PREVIEW, json!({ "rule": "hostname:host-%" }))
        .await;
    assert_eq!(mine["previewRule"]["count"], 1, "{mine}");
    assert_eq!(mine["previewRule"]["sample"], json!([{ "id": "d-in" }]));
    // A group beyond the scope is unknown to the rule, as a missing one.
    let hidden = app
        .data(
            &operator,
            PREVIEW,
            json!({ "rule": "group:Inventory/Site-B" }),
        )
        .await;
    assert_eq!(hidden["previewRule"]["valid"], false, "{hidden}");
    let shown = app
        .data(
            &app.viewer,
            PREVIEW,
            json!({ "rule": "group:Inventory/Site-B" }),
        )
        .await;
    assert_eq!(shown["previewRule"]["count"], 1, "{shown}");

    // addGroupMembersByRule adds only the matches the caller may see.
    let by_rule = allowed(
        &app,
        &operator,
        "addGroupMembersByRule",
        BY_RULE,
        json!({ "id": t.site_a, "rule": "hostname:host-d-%" }),
    )
    .await;
    assert_eq!(by_rule["changed"], 1, "only d-in: {by_rule}");

    // explainMembership: a group beyond the scope answers as a missing group would.
    let out = app
        .data(&operator, EXPLAIN, json!({ "g": t.site_b, "m": "d-out" }))
        .await;
    assert_eq!(
        out["explainMembership"],
        json!({ "member": false, "directMember": false, "staticEntry": false, "known": false, "rule": null, "reasons": [] })
    );
    let missing = app
        .data(&operator, EXPLAIN, json!({ "g": missing, "m": "d-out" }))
        .await;
    assert_eq!(missing["explainMembership"], out["explainMembership"]);
    let global = app
        .data(&app.viewer, EXPLAIN, json!({ "g": t.site_b, "m": "d-out" }))
        .await;
    assert_eq!(global["explainMembership"]["staticEntry"], true);
    assert_eq!(global["explainMembership"]["known"], true);
    // Inside: the group's own members are its data, rule-derived ones included.
    let core = app
        .data(&operator, EXPLAIN, json!({ "g": t.core, "m": "d-in" }))
        .await;
    assert_eq!(core["explainMembership"]["directMember"], true, "{core}");
    assert_eq!(core["explainMembership"]["known"], true);
    let ruled = app
        .data(&operator, EXPLAIN, json!({ "g": t.core, "m": "d-rule" }))
        .await;
    assert_eq!(ruled["explainMembership"]["member"], true, "{ruled}");
    // A device seen nowhere in the scope is unknown in a readable group.
    let none = app
        .data(&operator, EXPLAIN, json!({ "g": t.core, "m": "d-none" }))
        .await;
    assert_eq!(none["explainMembership"]["known"], false, "{none}");
    app.shutdown().await;
}
