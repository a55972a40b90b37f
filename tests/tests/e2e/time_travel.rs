//! Time travel: `group(id, asOf | atPosition)` and `group.members(mode, asOf)` answer as the
//! group, the tree and the memberships were at a past log position.

use chrono::{DateTime, Utc};
use corral_tests::TestApp;
use serde_json::{json, Value};

use super::membership::devices;

const CREATE: &str = "mutation($input: CreateGroupInput!) { createGroup(input: $input) { group { id } position userErrors { code message } } }";
const RENAME: &str = "mutation($input: RenameGroupInput!) { renameGroup(input: $input) { position userErrors { code message } } }";
const MOVE: &str = "mutation($input: MoveGroupInput!) { moveGroup(input: $input) { position userErrors { code message } } }";
const DELETE: &str = "mutation($input: DeleteGroupInput!) { deleteGroup(input: $input) { position userErrors { code message } } }";
const SET_RULE: &str = "mutation($input: SetGroupRuleInput!) { setGroupRule(input: $input) { position userErrors { code message } } }";
const GROUP_AT: &str = "query($id: ID!, $p: Position, $t: DateTime) { group(id: $id, atPosition: $p, asOf: $t) { id name path depth version deletedAt asOfPosition parent { name asOfPosition } ancestors { name } rule { text enabled version lastRunAt lastRunStatus } children(first: 10) { totalCount edges { node { name path } } } } }";

/// Runs a mutation as admin; returns its payload's position (panics on userErrors).
async fn mutate(app: &TestApp, query: &str, field: &str, input: Value) -> (Value, i64) {
    let data = app.data(&app.admin, query, json!({ "input": input })).await;
    let payload = data[field].clone();
    assert_eq!(payload["userErrors"], json!([]), "{field}: {payload}");
    let position = payload["position"]
        .as_str()
        .expect("position")
        .parse()
        .expect("decimal position");
    (payload, position)
}

async fn create(app: &TestApp, name: &str, parent: Option<&str>) -> (String, i64) {
    let (payload, p) = mutate(
        app,
        CREATE,
        "createGroup",
        json!({ "name": name, "type": "DEVICE", "parentId": parent }),
    )
    .await;
    let id = payload["group"]["id"].as_str().expect("id").to_string();
    (id, p)
}

async fn group_at(app: &TestApp, id: &str, position: i64) -> Value {
    app.data(
        &app.viewer,
        GROUP_AT,
        json!({ "id": id, "p": position.to_string() }),
    )
    .await["group"]
        .clone()
}

async fn group_as_of(app: &TestApp, id: &str, t: DateTime<Utc>) -> Value {
    app.data(
        &app.viewer,
        GROUP_AT,
        json!({ "id": id, "t": t.to_rfc3339() }),
    )
    .await["group"]
        .clone()
}

fn names(conn: &Value) -> Vec<String> {
    conn["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["name"].as_str().expect("name").to_string())
        .collect()
}

/// A moment after everything recorded so far (and before anything recorded later).
async fn now(app: &TestApp) -> DateTime<Utc> {
    let t: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&app.pool)
        .await
        .expect("clock");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    t
}

#[tokio::test]
async fn a_group_is_read_as_it_was_at_each_step_including_after_its_deletion() {
    let app = TestApp::spawn().await;
    let (a, _) = create(&app, "Site-A", None).await;
    let (b, _) = create(&app, "Site-B", None).await;
    let (c, created) = create(&app, "rack", Some(&a)).await;
    let t_created = now(&app).await;
    let (_, renamed) = mutate(
        &app,
        RENAME,
        "renameGroup",
        json!({ "id": c, "name": "Rack-1" }),
    )
    .await;
    let t_renamed = now(&app).await;
    let (_, moved) = mutate(
        &app,
        MOVE,
        "moveGroup",
        json!({ "id": c, "newParentId": b }),
    )
    .await;
    let (_, ruled) = mutate(
        &app,
        SET_RULE,
        "setGroupRule",
        json!({ "groupId": c, "rule": "hostname:web%", "enabled": false }),
    )
    .await;
    let t_ruled = now(&app).await;
    let (_, deleted) = mutate(&app, DELETE, "deleteGroup", json!({ "id": c })).await;
    assert!(created < renamed && renamed < moved && moved < ruled && ruled < deleted);

    // Before it was created: null.
    assert_eq!(group_at(&app, &c, created - 1).await, Value::Null);

    let g = group_at(&app, &c, created).await;
    assert_eq!(g["name"], "rack");
    assert_eq!(g["path"], "Inventory/Site-A/rack");
    assert_eq!(g["depth"], 2);
    assert_eq!(g["version"], 1);
    assert_eq!(g["asOfPosition"], created.to_string());
    assert_eq!(g["parent"]["name"], "Site-A");
    assert_eq!(g["parent"]["asOfPosition"], created.to_string());
    assert_eq!(
        g["ancestors"],
        json!([{ "name": "Inventory" }, { "name": "Site-A" }])
    );
    assert_eq!(g["rule"], Value::Null);
    assert!(g["deletedAt"].is_string(), "deleted since: {g}");

    let g = group_at(&app, &c, renamed).await;
    assert_eq!(
        (g["name"].as_str(), g["path"].as_str()),
        (Some("Rack-1"), Some("Inventory/Site-A/Rack-1"))
    );
    let g = group_at(&app, &c, moved).await;
    assert_eq!(g["path"], "Inventory/Site-B/Rack-1");
    assert_eq!(g["parent"]["name"], "Site-B");
    assert_eq!(g["rule"], Value::Null);
    let g = group_at(&app, &c, ruled).await;
    assert_eq!(g["rule"]["text"], "in:devices hostname:web%");
    assert_eq!(g["rule"]["enabled"], false);
    assert_eq!(g["rule"]["version"], 1);
    assert_eq!(
        g["rule"]["lastRunAt"],
        Value::Null,
        "no run statistics in the past"
    );
    assert_eq!(g["rule"]["lastRunStatus"], Value::Null);

    // At and after its deletion: still readable, with deletedAt (then at or before).
    let g = group_at(&app, &c, deleted).await;
    assert_eq!(g["name"], "Rack-1");
    assert_eq!(g["path"], "Inventory/Site-B/Rack-1");
    let deleted_at = g["deletedAt"].as_str().expect("deletedAt").to_string();
    assert_eq!(
        group_at(&app, &c, created).await["deletedAt"],
        deleted_at.as_str()
    );
    // The live group is gone.
    let live = app
        .data(
            &app.viewer,
            "query($id: ID!) { group(id: $id) { id } }",
            json!({ "id": c }),
        )
        .await;
    assert_eq!(live["group"], Value::Null);

    // The tree then: children of the parents at each step.
    assert_eq!(
        names(&group_at(&app, &a, created).await["children"]),
        vec!["rack"]
    );
    assert_eq!(group_at(&app, &a, moved).await["children"]["totalCount"], 0);
    assert_eq!(
        names(&group_at(&app, &b, moved).await["children"]),
        vec!["Rack-1"]
    );
    assert_eq!(
        group_at(&app, &b, deleted).await["children"]["totalCount"],
        0
    );
    // A live group has no asOfPosition nor deletedAt.
    let live = app
        .data(
            &app.viewer,
            "query($id: ID!) { group(id: $id) { asOfPosition deletedAt } }",
            json!({ "id": b }),
        )
        .await;
    assert_eq!(
        live["group"],
        json!({ "asOfPosition": null, "deletedAt": null })
    );

    // asOf: the last event recorded at or before the time.
    let g = group_as_of(&app, &c, t_created).await;
    assert_eq!(g["path"], "Inventory/Site-A/rack");
    let g = group_as_of(&app, &c, t_renamed).await;
    assert_eq!(g["path"], "Inventory/Site-A/Rack-1");
    let g = group_as_of(&app, &c, t_ruled).await;
    assert_eq!(g["path"], "Inventory/Site-B/Rack-1");
    assert_eq!(g["rule"]["text"], "in:devices hostname:web%");
    let before_everything = "2000-01-01T00:00:00Z".parse().expect("time");
    assert_eq!(group_as_of(&app, &a, before_everything).await, Value::Null);

    // Both at once, or a position beyond the head: BAD_USER_INPUT.
    let both = app
        .gql(
            &app.viewer,
            GROUP_AT,
            json!({ "id": c, "p": "1", "t": t_created.to_rfc3339() }),
        )
        .await;
    assert_eq!(
        both["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{both}"
    );
    let beyond = app
        .gql(
            &app.viewer,
            GROUP_AT,
            json!({ "id": c, "p": (deleted + 1_000_000).to_string() }),
        )
        .await;
    assert_eq!(
        beyond["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{beyond}"
    );
    app.shutdown().await;
}

const ADD: &str = "mutation($input: GroupMembersInput!) { addGroupMembers(input: $input) { position userErrors { code message } } }";
const REMOVE: &str = "mutation($input: GroupMembersInput!) { removeGroupMembers(input: $input) { position userErrors { code message } } }";
const EXCLUDE: &str = "mutation($input: GroupMembersInput!) { excludeGroupMembers(input: $input) { position userErrors { code message } } }";
const MEMBERS_AS_OF: &str = "query($id: ID!, $mode: MembershipMode, $t: DateTime, $first: Int, $after: String) { group(id: $id) { members(mode: $mode, asOf: $t, first: $first, after: $after) { totalCount missingMemberIds pageInfo { hasNextPage endCursor } edges { source viaGroup { name asOfPosition } node { ... on Device { id } } } } } }";
const MEMBERS_AT: &str = "query($id: ID!, $mode: MembershipMode, $p: Position) { group(id: $id, atPosition: $p) { memberCount(mode: $mode) members(mode: $mode, first: 1000) { totalCount edges { viaGroup { name } node { ... on Device { id } } } } } }";

async fn members_op(app: &TestApp, query: &str, field: &str, group: &str, ids: &[&str]) -> i64 {
    let data = app
        .data(
            &app.operator,
            query,
            json!({ "input": { "groupId": group, "memberIds": ids } }),
        )
        .await;
    assert_eq!(data[field]["userErrors"], json!([]), "{field}: {data}");
    data[field]["position"]
        .as_str()
        .expect("position")
        .parse()
        .expect("decimal")
}

/// Every member id (and viaGroup name) as of `t`, paging by `first`.
async fn members_as_of(
    app: &TestApp,
    group: &str,
    mode: &str,
    t: DateTime<Utc>,
    first: i64,
) -> (Vec<(String, String)>, i64) {
    let mut out = vec![];
    let mut after = Value::Null;
    let mut total = -1;
    loop {
        let data = app
            .data(
                &app.viewer,
                MEMBERS_AS_OF,
                json!({ "id": group, "mode": mode, "t": t.to_rfc3339(), "first": first, "after": after }),
            )
            .await;
        let conn = &data["group"]["members"];
        total = conn["totalCount"].as_i64().expect("totalCount").max(total);
        for e in conn["edges"].as_array().expect("edges") {
            out.push((
                e["node"]["id"].as_str().expect("id").to_string(),
                e["viaGroup"]["name"].as_str().expect("via").to_string(),
            ));
        }
        if !conn["pageInfo"]["hasNextPage"]
            .as_bool()
            .expect("hasNextPage")
        {
            return (out, total);
        }
        after = conn["pageInfo"]["endCursor"].clone();
    }
}

async fn ids_at(app: &TestApp, group: &str, mode: &str, p: i64) -> Vec<String> {
    let data = app
        .data(
            &app.viewer,
            MEMBERS_AT,
            json!({ "id": group, "mode": mode, "p": p.to_string() }),
        )
        .await;
    let g = &data["group"];
    let ids: Vec<String> = g["members"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(g["memberCount"], ids.len(), "memberCount as of {p}: {g}");
    assert_eq!(g["members"]["totalCount"], ids.len());
    ids
}

fn v(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn members_are_read_as_they_were_across_adds_removes_excludes_moves_and_deletes() {
    let app = TestApp::spawn().await;
    let ids = devices(&app, "d", 6).await;
    let d: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (g, _) = create(&app, "G", None).await;
    let (c1, _) = create(&app, "C1", Some(&g)).await;
    let (c2, _) = create(&app, "C2", Some(&g)).await;
    let (other, _) = create(&app, "Other", None).await;

    members_op(&app, ADD, "addGroupMembers", &g, &[d[0], d[1], d[2]]).await;
    members_op(&app, ADD, "addGroupMembers", &c1, &[d[3], d[4]]).await;
    let p_added = members_op(&app, ADD, "addGroupMembers", &c2, &[d[1], d[5]]).await;
    let t_added = now(&app).await;
    let p_excluded = members_op(&app, EXCLUDE, "excludeGroupMembers", &g, &[d[2]]).await;
    let t_excluded = now(&app).await;
    let p_removed = members_op(&app, REMOVE, "removeGroupMembers", &g, &[d[0]]).await;
    let t_removed = now(&app).await;
    let (_, p_moved) = mutate(
        &app,
        MOVE,
        "moveGroup",
        json!({ "id": c1, "newParentId": other }),
    )
    .await;
    let t_moved = now(&app).await;
    let (_, p_deleted) = mutate(&app, DELETE, "deleteGroup", json!({ "id": c2 })).await;
    let t_deleted = now(&app).await;

    // By position (on a historical group), direct and effective.
    assert_eq!(
        ids_at(&app, &g, "DIRECT", p_added).await,
        v(&[d[0], d[1], d[2]])
    );
    assert_eq!(ids_at(&app, &g, "EFFECTIVE", p_added).await, v(&d));
    assert_eq!(
        ids_at(&app, &g, "DIRECT", p_excluded).await,
        v(&[d[0], d[1]])
    );
    assert_eq!(
        ids_at(&app, &g, "EFFECTIVE", p_excluded).await,
        v(&[d[0], d[1], d[3], d[4], d[5]])
    );
    assert_eq!(ids_at(&app, &g, "DIRECT", p_removed).await, v(&[d[1]]));
    assert_eq!(
        ids_at(&app, &g, "EFFECTIVE", p_moved).await,
        v(&[d[1], d[5]])
    );
    assert_eq!(
        ids_at(&app, &other, "EFFECTIVE", p_moved).await,
        v(&[d[3], d[4]])
    );
    assert_eq!(ids_at(&app, &g, "EFFECTIVE", p_deleted).await, v(&[d[1]]));
    assert_eq!(ids_at(&app, &c2, "DIRECT", p_moved).await, v(&[d[1], d[5]]));

    // By time on the live group, with viaGroup as of then (C2 is deleted now).
    let (got, total) = members_as_of(&app, &g, "EFFECTIVE", t_added, 2).await;
    assert_eq!(total, 6);
    assert_eq!(
        got,
        pairs(&[
            (d[0], "G"),
            (d[1], "G"),
            (d[2], "G"),
            (d[3], "C1"),
            (d[4], "C1"),
            (d[5], "C2")
        ])
    );
    let (got, _) = members_as_of(&app, &g, "EFFECTIVE", t_excluded, 2).await;
    assert_eq!(
        got,
        pairs(&[
            (d[0], "G"),
            (d[1], "G"),
            (d[3], "C1"),
            (d[4], "C1"),
            (d[5], "C2")
        ])
    );
    let (got, _) = members_as_of(&app, &g, "EFFECTIVE", t_removed, 50).await;
    assert_eq!(
        got,
        pairs(&[(d[1], "G"), (d[3], "C1"), (d[4], "C1"), (d[5], "C2")])
    );
    let (got, _) = members_as_of(&app, &g, "EFFECTIVE", t_moved, 50).await;
    assert_eq!(got, pairs(&[(d[1], "G"), (d[5], "C2")]));
    let (got, _) = members_as_of(&app, &g, "EFFECTIVE", t_deleted, 50).await;
    assert_eq!(got, pairs(&[(d[1], "G")]), "C2 is gone");
    let (got, _) = members_as_of(&app, &g, "DIRECT", t_excluded, 50).await;
    assert_eq!(got, pairs(&[(d[0], "G"), (d[1], "G")]));

    // The viaGroup of a historical edge is the group as of then.
    let data = app
        .data(
            &app.viewer,
            MEMBERS_AS_OF,
            json!({ "id": g, "mode": "EFFECTIVE", "t": t_added.to_rfc3339(), "first": 10 }),
        )
        .await;
    let via = &data["group"]["members"]["edges"][5]["viaGroup"];
    assert_eq!(via["name"], "C2");
    assert!(via["asOfPosition"].is_string(), "{via}");

    // A member that has left the inventory since: no edge, listed, still counted.
    sqlx::query("DELETE FROM devices WHERE id = $1")
        .bind(d[4])
        .execute(&app.pool)
        .await
        .expect("delete a device");
    let data = app
        .data(
            &app.viewer,
            MEMBERS_AS_OF,
            json!({ "id": g, "mode": "EFFECTIVE", "t": t_added.to_rfc3339(), "first": 10 }),
        )
        .await;
    let conn = &data["group"]["members"];
    assert_eq!(conn["totalCount"], 6);
    assert_eq!(conn["edges"].as_array().expect("edges").len(), 5);
    assert_eq!(conn["missingMemberIds"], json!([d[4]]));
    app.shutdown().await;
}

#[tokio::test]
async fn historical_members_page_by_member_id() {
    let app = TestApp::spawn().await;
    let ids = devices(&app, "p", 40).await;
    let (g, _) = create(&app, "Paged", None).await;
    let (child, _) = create(&app, "Child", Some(&g)).await;
    let odd: Vec<&str> = ids.iter().skip(1).step_by(2).map(String::as_str).collect();
    let even: Vec<&str> = ids.iter().step_by(2).map(String::as_str).collect();
    members_op(&app, ADD, "addGroupMembers", &g, &even).await;
    members_op(&app, ADD, "addGroupMembers", &child, &odd).await;
    let t = now(&app).await;
    // Later changes do not show.
    members_op(&app, REMOVE, "removeGroupMembers", &child, &odd[..10]).await;
    let (got, total) = members_as_of(&app, &g, "EFFECTIVE", t, 7).await;
    assert_eq!(total, 40);
    let got_ids: Vec<String> = got.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(got_ids, ids);
    assert!(got
        .iter()
        .all(|(id, via)| (via == "Child") == odd.contains(&id.as_str())));
    let (now_ids, total) = members_as_of(&app, &g, "EFFECTIVE", now(&app).await, 1000).await;
    assert_eq!((now_ids.len(), total), (30, 30));
    // A bad page size is refused as live.
    let bad = app
        .gql(
            &app.viewer,
            MEMBERS_AS_OF,
            json!({ "id": g, "mode": "DIRECT", "t": t.to_rfc3339(), "first": 1001 }),
        )
        .await;
    assert_eq!(
        bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{bad}"
    );
    app.shutdown().await;
}
