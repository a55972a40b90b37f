//! Consistent walks (issue 16): cursors record the state their first page was read at, and a
//! later page answers as of it or fails with `CURSOR_STALE`; `last`/`before` pages backward.

use corral_tests::TestApp;
use serde_json::{json, Value};

use super::membership::{add, devices};

const REMOVE: &str = "mutation($input: GroupMembersInput!) { removeGroupMembers(input: $input) { changed userErrors { code message } } }";
const MEMBERS: &str = "query($id: ID!, $mode: MembershipMode, $first: Int, $after: String, $last: Int, $before: String) { group(id: $id) { members(mode: $mode, first: $first, after: $after, last: $last, before: $before) { pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { ... on Device { id } } } } } }";
const MEMBERS_AT: &str = "query($id: ID!, $p: Position, $after: String) { group(id: $id, atPosition: $p) { members(first: 100, after: $after) { edges { node { ... on Device { id } } } } } }";
const GROUPS: &str = "query($first: Int, $after: String, $last: Int, $before: String) { groups(type: DEVICE, first: $first, after: $after, last: $last, before: $before) { totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { path } } } }";

fn ids(conn: &Value, field: &str) -> Vec<String> {
    conn["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"][field].as_str().expect("id").to_string())
        .collect()
}

async fn members(app: &TestApp, group: &str, mode: &str, args: Value) -> Value {
    let mut vars = json!({ "id": group, "mode": mode });
    for (k, v) in args.as_object().expect("args") {
        vars[k] = v.clone();
    }
    app.gql(&app.viewer, MEMBERS, vars).await
}

fn code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

/// Walks all pages of `group`'s members forward (`first`/`after`) or backward
/// (`last`/`before`), returning ids in member order.
async fn walk(app: &TestApp, group: &str, mode: &str, backward: bool, size: i64) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let mut cursor = Value::Null;
    loop {
        let args = if backward {
            json!({ "last": size, "before": cursor })
        } else {
            json!({ "first": size, "after": cursor })
        };
        let body = members(app, group, mode, args).await;
        assert!(body.get("errors").is_none(), "{body}");
        let conn = &body["data"]["group"]["members"];
        let page = ids(conn, "id");
        let info = &conn["pageInfo"];
        if backward {
            out.splice(0..0, page);
            assert_eq!(info["hasNextPage"], json!(!cursor.is_null()), "{info}");
            if !info["hasPreviousPage"].as_bool().expect("bool") {
                return out;
            }
            cursor = info["startCursor"].clone();
        } else {
            out.extend(page);
            assert_eq!(info["hasPreviousPage"], json!(!cursor.is_null()), "{info}");
            if !info["hasNextPage"].as_bool().expect("bool") {
                return out;
            }
            cursor = info["endCursor"].clone();
        }
    }
}

#[tokio::test]
async fn a_member_walk_reads_its_first_pages_state_or_says_the_set_moved() {
    let app = TestApp::spawn().await;
    let g = app.create_group("Walked", None).await;
    let other = app.create_group("Other", None).await;
    let ids0 = devices(&app, "d", 20).await;
    let extra = devices(&app, "e", 3).await;
    assert_eq!(add(&app, &g, &ids0).await["userErrors"], json!([]));

    // Page 1, then a change to ANOTHER group: the walk goes on, exactly the first state.
    let p1 = members(&app, &g, "DIRECT", json!({ "first": 8 })).await;
    let conn = &p1["data"]["group"]["members"];
    assert_eq!(ids(conn, "id"), ids0[..8].to_vec());
    assert!(conn["pageInfo"]["endCursor"]
        .as_str()
        .expect("cursor")
        .starts_with("w1."));
    assert_eq!(add(&app, &other, &extra).await["userErrors"], json!([]));
    let p2 = members(
        &app,
        &g,
        "DIRECT",
        json!({ "first": 8, "after": conn["pageInfo"]["endCursor"] }),
    )
    .await;
    assert!(p2.get("errors").is_none(), "{p2}");
    let conn2 = &p2["data"]["group"]["members"];
    assert_eq!(ids(conn2, "id"), ids0[8..16].to_vec());
    assert_eq!(conn2["pageInfo"]["hasPreviousPage"], true);

    // Members of the walked group removed and added between pages: the next page says so,
    // with the position its first page reflected...
    let removed = app
        .data(
            &app.operator,
            REMOVE,
            json!({ "input": { "groupId": g, "memberIds": [ids0[17].clone()] } }),
        )
        .await;
    assert_eq!(removed["removeGroupMembers"]["changed"], 1);
    assert_eq!(add(&app, &g, &extra[..1]).await["userErrors"], json!([]));
    let p3 = members(
        &app,
        &g,
        "DIRECT",
        json!({ "first": 8, "after": conn2["pageInfo"]["endCursor"] }),
    )
    .await;
    assert_eq!(code(&p3), Some("CURSOR_STALE"), "{p3}");
    let position = p3["errors"][0]["extensions"]["position"]
        .as_str()
        .expect("position")
        .to_string();
    // ...and paging that position gives the first page's state exactly.
    let at = app
        .data(
            &app.viewer,
            MEMBERS_AT,
            json!({ "id": g, "p": position, "after": null }),
        )
        .await;
    assert_eq!(ids(&at["group"]["members"], "id"), ids0);
    // A stale walk is stale backward too; a new walk sees the new state.
    let back = members(
        &app,
        &g,
        "DIRECT",
        json!({ "last": 3, "before": conn2["pageInfo"]["startCursor"] }),
    )
    .await;
    assert_eq!(code(&back), Some("CURSOR_STALE"), "{back}");
    let mut now: Vec<String> = ids0.iter().filter(|i| **i != ids0[17]).cloned().collect();
    now.push(extra[0].clone());
    now.sort();
    assert_eq!(walk(&app, &g, "DIRECT", false, 6).await, now);
    app.shutdown().await;
}

#[tokio::test]
async fn an_effective_walk_ends_when_its_subtree_changes() {
    let app = TestApp::spawn().await;
    let top = app.create_group("Top", None).await;
    let child = app.create_group("Child", Some(&top)).await;
    let outside = app.create_group("Outside", None).await;
    let ids0 = devices(&app, "d", 12).await;
    let extra = devices(&app, "x", 2).await;
    assert_eq!(add(&app, &top, &ids0[..6]).await["userErrors"], json!([]));
    assert_eq!(add(&app, &child, &ids0[6..]).await["userErrors"], json!([]));

    let p1 = members(&app, &top, "EFFECTIVE", json!({ "first": 5 })).await;
    let c1 = p1["data"]["group"]["members"]["pageInfo"]["endCursor"].clone();
    // Outside the subtree: the walk goes on.
    assert_eq!(add(&app, &outside, &extra).await["userErrors"], json!([]));
    let p2 = members(&app, &top, "EFFECTIVE", json!({ "first": 5, "after": c1 })).await;
    assert!(p2.get("errors").is_none(), "{p2}");
    assert_eq!(
        ids(&p2["data"]["group"]["members"], "id"),
        ids0[5..10].to_vec()
    );
    let c2 = p2["data"]["group"]["members"]["pageInfo"]["endCursor"].clone();
    // A descendant's member added: stale.
    assert_eq!(
        add(&app, &child, &extra[..1]).await["userErrors"],
        json!([])
    );
    let p3 = members(
        &app,
        &top,
        "EFFECTIVE",
        json!({ "first": 5, "after": c2.clone() }),
    )
    .await;
    assert_eq!(code(&p3), Some("CURSOR_STALE"), "{p3}");

    // A new walk; then the subtree reshaped (a group moved in): stale too.
    let p1 = members(&app, &top, "EFFECTIVE", json!({ "first": 5 })).await;
    let c1 = p1["data"]["group"]["members"]["pageInfo"]["endCursor"].clone();
    let moved = app
        .data(
            &app.admin,
            "mutation($input: MoveGroupInput!) { moveGroup(input: $input) { userErrors { code } } }",
            json!({ "input": { "id": outside, "newParentId": top } }),
        )
        .await;
    assert_eq!(moved["moveGroup"]["userErrors"], json!([]));
    let p2 = members(&app, &top, "EFFECTIVE", json!({ "first": 5, "after": c1 })).await;
    assert_eq!(code(&p2), Some("CURSOR_STALE"), "{p2}");
    app.shutdown().await;
}

#[tokio::test]
async fn backward_member_pages_are_forward_pages_reversed() {
    let app = TestApp::spawn().await;
    let top = app.create_group("Top", None).await;
    let a = app.create_group("A", Some(&top)).await;
    let b = app.create_group("B", Some(&a)).await;
    let ids0 = devices(&app, "d", 23).await;
    assert_eq!(add(&app, &top, &ids0[..9]).await["userErrors"], json!([]));
    assert_eq!(add(&app, &a, &ids0[5..17]).await["userErrors"], json!([]));
    assert_eq!(add(&app, &b, &ids0[14..]).await["userErrors"], json!([]));
    for (group, mode, expected) in [
        (&top, "DIRECT", ids0[..9].to_vec()),
        (&a, "DIRECT", ids0[5..17].to_vec()),
        (&top, "EFFECTIVE", ids0.clone()),
        (&a, "EFFECTIVE", ids0[5..].to_vec()),
    ] {
        for size in [1, 4, 7, 50] {
            assert_eq!(walk(&app, group, mode, false, size).await, expected);
            assert_eq!(
                walk(&app, group, mode, true, size).await,
                expected,
                "{mode} backward by {size}"
            );
        }
    }
    // The nearest group is still `viaGroup` backward (the first and last pages alike).
    let q = "query($id: ID!, $last: Int) { group(id: $id) { members(mode: EFFECTIVE, last: $last) { edges { node { ... on Device { id } } viaGroup { name } } } } }";
    let back = app
        .data(&app.viewer, q, json!({ "id": top, "last": 23 }))
        .await;
    let vias: Vec<String> = back["group"]["members"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["viaGroup"]["name"].as_str().expect("name").to_string())
        .collect();
    let want: Vec<String> = (0..23)
        .map(|i| match i {
            0..=8 => "Top",
            9..=16 => "A",
            _ => "B",
        })
        .map(str::to_string)
        .collect();
    assert_eq!(vias, want);
    // Argument rules.
    for (args, msg) in [
        (json!({ "first": 2, "last": 2 }), "not both"),
        (json!({ "last": 1001 }), "last must be"),
        (json!({ "last": -1 }), "last must be"),
        (
            json!({ "first": 2, "before": "x" }),
            "before goes with last",
        ),
        (json!({ "last": 2, "before": "nonsense" }), "not a cursor"),
    ] {
        let body = members(&app, &top, "DIRECT", args.clone()).await;
        assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{args}: {body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(msg),
            "{args}: {body}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_groups_walk_pages_both_ways_and_ends_when_the_tree_reshapes() {
    let app = TestApp::spawn().await;
    for i in 0..9 {
        app.create_group(&format!("g{i}"), None).await;
    }
    let all = |body: &Value| ids(&body["data"]["groups"], "path");
    let forward = {
        let mut out = vec![];
        let mut after = Value::Null;
        loop {
            let body = app
                .gql(&app.viewer, GROUPS, json!({ "first": 4, "after": after }))
                .await;
            out.extend(all(&body));
            let info = &body["data"]["groups"]["pageInfo"];
            assert_eq!(info["hasPreviousPage"], json!(!after.is_null()));
            if info["hasNextPage"] != true {
                break out;
            }
            after = info["endCursor"].clone();
        }
    };
    assert_eq!(forward.len(), 10, "{forward:?}"); // the root, Inventory, and nine
    let backward = {
        let mut out: Vec<String> = vec![];
        let mut before = Value::Null;
        loop {
            let body = app
                .gql(&app.viewer, GROUPS, json!({ "last": 4, "before": before }))
                .await;
            out.splice(0..0, all(&body));
            let info = &body["data"]["groups"]["pageInfo"];
            assert_eq!(info["hasNextPage"], json!(!before.is_null()));
            if info["hasPreviousPage"] != true {
                break out;
            }
            before = info["startCursor"].clone();
        }
    };
    assert_eq!(backward, forward);

    // A metadata edit does not end a walk; a new group does.
    let p1 = app.gql(&app.viewer, GROUPS, json!({ "first": 3 })).await;
    let c1 = p1["data"]["groups"]["pageInfo"]["endCursor"].clone();
    let g0 = app
        .data(
            &app.viewer,
            "query { groupByPath(type: DEVICE, path: \"Inventory/g0\") { id version } }",
            json!({}),
        )
        .await;
    let updated = app
        .data(
            &app.admin,
            "mutation($input: UpdateGroupInput!) { updateGroup(input: $input) { userErrors { code message } } }",
            json!({ "input": { "id": g0["groupByPath"]["id"], "description": "edited" } }),
        )
        .await;
    assert_eq!(updated["updateGroup"]["userErrors"], json!([]));
    let p2 = app
        .gql(
            &app.viewer,
            GROUPS,
            json!({ "first": 3, "after": c1.clone() }),
        )
        .await;
    assert!(p2.get("errors").is_none(), "{p2}");
    assert_eq!(all(&p2), forward[3..6].to_vec());
    app.create_group("a-new-one", None).await;
    let p3 = app
        .gql(&app.viewer, GROUPS, json!({ "first": 3, "after": c1 }))
        .await;
    assert_eq!(code(&p3), Some("CURSOR_STALE"), "{p3}");
    app.shutdown().await;
}

#[tokio::test]
async fn children_page_backward_too_directly_and_prefetched() {
    let app = TestApp::spawn().await;
    let parent = app.create_group("Parent", None).await;
    let mut names = vec![];
    for i in [5, 1, 8, 3, 0, 7, 2, 6, 4] {
        let name = format!("c{i}");
        app.create_group(&name, Some(&parent)).await;
        names.push(name);
    }
    names.sort();
    const CHILDREN: &str = "query($id: ID!, $first: Int, $after: String, $last: Int, $before: String) { group(id: $id) { children(first: $first, after: $after, last: $last, before: $before) { totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { node { name } } } } }";
    for size in [1, 2, 4, 9, 20] {
        for backward in [false, true] {
            let mut out: Vec<String> = vec![];
            let mut cursor = Value::Null;
            loop {
                let vars = if backward {
                    json!({ "id": parent, "last": size, "before": cursor })
                } else {
                    json!({ "id": parent, "first": size, "after": cursor })
                };
                let data = app.data(&app.viewer, CHILDREN, vars).await;
                let conn = &data["group"]["children"];
                assert_eq!(conn["totalCount"], 9);
                let page = ids(conn, "name");
                let info = &conn["pageInfo"];
                let (more, next) = if backward {
                    out.splice(0..0, page);
                    (info["hasPreviousPage"].clone(), info["startCursor"].clone())
                } else {
                    out.extend(page);
                    (info["hasNextPage"].clone(), info["endCursor"].clone())
                };
                if more != true {
                    break;
                }
                cursor = next;
            }
            assert_eq!(out, names, "size {size}, backward {backward}");
        }
    }
    // Through the page prefetch of `groups` (one batch for every node's children page).
    let data = app
        .data(
            &app.viewer,
            "query { groups(type: DEVICE, search: \"Parent\", first: 5) { edges { node { children(last: 3) { pageInfo { hasPreviousPage hasNextPage } edges { node { name } } } } } } }",
            json!({}),
        )
        .await;
    let conn = &data["groups"]["edges"][0]["node"]["children"];
    assert_eq!(ids(conn, "name"), names[6..].to_vec());
    assert_eq!(conn["pageInfo"]["hasPreviousPage"], true);
    assert_eq!(conn["pageInfo"]["hasNextPage"], false);
    app.shutdown().await;
}

/// All pages of the connection `field` of `query` (which takes `$first $after $last $before`),
/// forward or backward, as the values of `node.<key>`.
async fn pages(
    app: &TestApp,
    token: &str,
    query: &str,
    field: &str,
    key: &str,
    size: i64,
    backward: bool,
) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let mut cursor = Value::Null;
    loop {
        let vars = if backward {
            json!({ "last": size, "before": cursor })
        } else {
            json!({ "first": size, "after": cursor })
        };
        let data = app.data(token, query, vars).await;
        let conn = &data[field];
        let page = ids(conn, key);
        let info = &conn["pageInfo"];
        let (more, next) = if backward {
            out.splice(0..0, page);
            assert_eq!(info["hasNextPage"], json!(!cursor.is_null()), "{info}");
            (info["hasPreviousPage"].clone(), info["startCursor"].clone())
        } else {
            out.extend(page);
            assert_eq!(info["hasPreviousPage"], json!(!cursor.is_null()), "{info}");
            (info["hasNextPage"].clone(), info["endCursor"].clone())
        };
        if more != true {
            return out;
        }
        cursor = next;
    }
}

#[tokio::test]
async fn dashboard_lists_page_backward() {
    let app = TestApp::spawn().await;
    let mut names = vec![];
    for i in [4, 0, 6, 2, 5, 1, 3] {
        let name = format!("Board {i}");
        let p = app
            .data(
                &app.viewer,
                "mutation($n: String!) { createDashboard(input: { name: $n }) { userErrors { message } } }",
                json!({ "n": name }),
            )
            .await;
        assert_eq!(p["createDashboard"]["userErrors"], json!([]));
        names.push(name);
    }
    names.sort();
    const MINE: &str = "query($first: Int, $after: String, $last: Int, $before: String) { myDashboards(first: $first, after: $after, last: $last, before: $before) { pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { node { name } } } }";
    for size in [1, 3, 7, 10] {
        for backward in [false, true] {
            assert_eq!(
                pages(
                    &app,
                    &app.viewer,
                    MINE,
                    "myDashboards",
                    "name",
                    size,
                    backward
                )
                .await,
                names,
                "size {size}, backward {backward}"
            );
        }
    }
    app.shutdown().await;
}
