//! The group hierarchy through GraphQL: queries, invariants, read-your-writes. Look-alike
//! names (NFC, invisible and reordering characters) are in the submodule.

mod names;

use corral_tests::TestApp;
use serde_json::{json, Value};

const CREATE: &str = "mutation($input: CreateGroupInput!) { createGroup(input: $input) { group { id name path depth version } position waitTimedOut userErrors { field code message } } }";
const MOVE: &str = "mutation($input: MoveGroupInput!) { moveGroup(input: $input) { group { path depth } userErrors { field code message } } }";
const RENAME: &str = "mutation($input: RenameGroupInput!) { renameGroup(input: $input) { group { name path version } userErrors { field code message } } }";
const DELETE: &str = "mutation($input: DeleteGroupInput!) { deleteGroup(input: $input) { deletedId userErrors { code } } }";

fn codes(payload: &Value) -> Vec<String> {
    payload["userErrors"]
        .as_array()
        .expect("userErrors")
        .iter()
        .map(|e| e["code"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn create(app: &TestApp, input: Value) -> Value {
    app.data(&app.admin, CREATE, json!({ "input": input }))
        .await["createGroup"]
        .clone()
}

#[tokio::test]
async fn a_created_group_is_immediately_visible_with_its_path_ancestors_and_children() {
    let app = TestApp::spawn().await;
    let site = app.create_group("Site-A", None).await;
    let core = app.create_group("Core", Some(&site)).await;
    app.create_group("b-edge", Some(&site)).await;
    app.create_group("A-edge", Some(&site)).await;
    // No sleep: the mutation returned after the read model reflected it.
    let q = "query($id: ID!) { group(id: $id) { name path depth isSystem parent { name } ancestors { name } children(first: 10) { totalCount edges { node { name } } } } }";
    let g = app.data(&app.viewer, q, json!({ "id": site })).await["group"].clone();
    assert_eq!(g["path"], "Inventory/Site-A");
    assert_eq!(g["depth"], 1);
    assert_eq!(g["parent"]["name"], "Inventory");
    assert_eq!(g["children"]["totalCount"], 3);
    let names: Vec<&str> = g["children"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        vec!["A-edge", "b-edge", "Core"],
        "ordered by name ignoring case"
    );
    let c = app.data(&app.viewer, q, json!({ "id": core })).await["group"].clone();
    assert_eq!(
        c["ancestors"],
        json!([{ "name": "Inventory" }, { "name": "Site-A" }])
    );

    let by_path = app.data(&app.viewer, "{ groupByPath(type: DEVICE, path: \"inventory/site-a/CORE\") { id } root(type: SERVICE) { name isSystem path } }", json!({})).await;
    assert_eq!(by_path["groupByPath"]["id"], core);
    assert_eq!(
        by_path["root"],
        json!({ "name": "Inventory", "isSystem": true, "path": "Inventory" })
    );
    app.shutdown().await;
}

#[tokio::test]
async fn pagination_search_and_total_count() {
    let app = TestApp::spawn().await;
    for i in 0..7 {
        app.create_group(&format!("rack-{i:02}"), None).await;
    }
    app.create_group("spine", None).await;
    let q = "query($after: String) { groups(type: DEVICE, search: \"RACK\", first: 3, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { node { name } } } }";
    let mut names = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = app.data(&app.viewer, q, json!({ "after": after })).await["groups"].clone();
        assert_eq!(page["totalCount"], 7);
        names.extend(
            page["edges"]
                .as_array()
                .expect("edges")
                .iter()
                .map(|e| e["node"]["name"].as_str().expect("n").to_string()),
        );
        if !page["pageInfo"]["hasNextPage"].as_bool().expect("bool") {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(
        names,
        (0..7).map(|i| format!("rack-{i:02}")).collect::<Vec<_>>()
    );
    let too_big = app
        .gql(
            &app.viewer,
            "{ groups(type: DEVICE, first: 1001) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(too_big["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    app.shutdown().await;
}

#[tokio::test]
async fn invariants_come_back_as_user_errors_with_codes() {
    let app = TestApp::spawn().await;
    let site = app.create_group("Site-A", None).await;
    assert_eq!(
        codes(&create(&app, json!({ "name": "site-a", "type": "DEVICE" })).await),
        vec!["NAME_TAKEN"]
    );
    assert_eq!(
        codes(&create(&app, json!({ "name": "a/b", "type": "DEVICE" })).await),
        vec!["INVALID"]
    );
    assert_eq!(
        codes(&create(&app, json!({ "name": "  ", "type": "DEVICE" })).await),
        vec!["INVALID"]
    );
    assert_eq!(
        codes(&create(&app, json!({ "name": "x".repeat(129), "type": "DEVICE" })).await),
        vec!["INVALID"]
    );
    assert_eq!(
        codes(
            &create(
                &app,
                json!({ "name": "svc", "type": "SERVICE", "parentId": site })
            )
            .await
        ),
        vec!["TYPE_MISMATCH"]
    );
    let missing = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        codes(
            &create(
                &app,
                json!({ "name": "x", "type": "DEVICE", "parentId": missing })
            )
            .await
        ),
        vec!["NOT_FOUND"]
    );
    let big = json!({ "blob": "x".repeat(17 * 1024) });
    assert_eq!(
        codes(
            &create(
                &app,
                json!({ "name": "big", "type": "DEVICE", "metadata": big })
            )
            .await
        ),
        vec!["INVALID"]
    );

    // Depth: ten levels below the root are allowed, the eleventh is not.
    let mut parent = site.clone();
    for level in 2..=10 {
        parent = app.create_group(&format!("L{level}"), Some(&parent)).await;
    }
    assert_eq!(
        codes(
            &create(
                &app,
                json!({ "name": "L11", "type": "DEVICE", "parentId": parent })
            )
            .await
        ),
        vec!["DEPTH_LIMIT"]
    );

    // Roots are system groups.
    let root = app
        .data(&app.viewer, "{ root(type: DEVICE) { id } }", json!({}))
        .await["root"]["id"]
        .clone();
    let r = app
        .data(
            &app.admin,
            RENAME,
            json!({ "input": { "id": root, "name": "Everything" } }),
        )
        .await;
    assert_eq!(codes(&r["renameGroup"]), vec!["SYSTEM_GROUP"]);
    let d = app
        .data(&app.admin, DELETE, json!({ "input": { "id": root } }))
        .await;
    assert_eq!(codes(&d["deleteGroup"]), vec!["SYSTEM_GROUP"]);
    let d = app
        .data(&app.admin, DELETE, json!({ "input": { "id": site } }))
        .await;
    assert_eq!(codes(&d["deleteGroup"]), vec!["HAS_CHILDREN"]);
    app.shutdown().await;
}

#[tokio::test]
async fn move_rename_delete_and_expected_version() {
    let app = TestApp::spawn().await;
    let a = app.create_group("A", None).await;
    let b = app.create_group("B", None).await;
    let a1 = app.create_group("A1", Some(&a)).await;
    let m = app
        .data(
            &app.admin,
            MOVE,
            json!({ "input": { "id": a, "newParentId": b } }),
        )
        .await;
    assert_eq!(
        m["moveGroup"]["group"],
        json!({ "path": "Inventory/B/A", "depth": 2 })
    );
    let q = "query($id: ID!) { group(id: $id) { path depth ancestors { name } } }";
    assert_eq!(
        app.data(&app.viewer, q, json!({ "id": a1 })).await["group"],
        json!({ "path": "Inventory/B/A/A1", "depth": 3, "ancestors": [{ "name": "Inventory" }, { "name": "B" }, { "name": "A" }] })
    );
    let cycle = app
        .data(
            &app.admin,
            MOVE,
            json!({ "input": { "id": b, "newParentId": a1 } }),
        )
        .await;
    assert_eq!(codes(&cycle["moveGroup"]), vec!["CYCLE"]);

    let r = app
        .data(
            &app.admin,
            RENAME,
            json!({ "input": { "id": b, "name": "Bee", "reason": "typo" } }),
        )
        .await;
    assert_eq!(r["renameGroup"]["group"]["path"], "Inventory/Bee");
    let version = r["renameGroup"]["group"]["version"]
        .as_i64()
        .expect("version");
    assert_eq!(
        app.data(&app.viewer, q, json!({ "id": a1 })).await["group"]["path"],
        "Inventory/Bee/A/A1",
        "descendant paths follow a rename"
    );

    let stale = app
        .data(
            &app.admin,
            RENAME,
            json!({ "input": { "id": b, "name": "Bea", "expectedVersion": version - 1 } }),
        )
        .await;
    let err = &stale["renameGroup"]["userErrors"][0];
    assert_eq!(err["code"], "VERSION_CONFLICT");
    assert!(
        err["message"]
            .as_str()
            .expect("message")
            .contains(&format!("current version is {version}")),
        "{err}"
    );
    let fresh = app
        .data(
            &app.admin,
            RENAME,
            json!({ "input": { "id": b, "name": "Bea", "expectedVersion": version } }),
        )
        .await;
    assert_eq!(codes(&fresh["renameGroup"]), Vec::<String>::new());

    let d = app
        .data(&app.admin, DELETE, json!({ "input": { "id": a1 } }))
        .await;
    assert_eq!(d["deleteGroup"]["deletedId"], a1);
    assert_eq!(
        app.data(&app.viewer, q, json!({ "id": a1 })).await["group"],
        Value::Null
    );
    // The name is free again once deleted.
    app.create_group("A1", Some(&a)).await;
    let reason: String = sqlx::query_scalar("SELECT metadata->>'reason' FROM events WHERE event_type = 'GroupRenamed' ORDER BY global_position LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .expect("reason");
    assert_eq!(reason, "typo");
    app.shutdown().await;
}

#[tokio::test]
async fn positions_are_decimal_strings_and_increase() {
    let app = TestApp::spawn().await;
    let one = create(&app, json!({ "name": "one", "type": "DEVICE" })).await;
    let two = create(&app, json!({ "name": "two", "type": "DEVICE" })).await;
    let p1: i64 = one["position"]
        .as_str()
        .expect("string")
        .parse()
        .expect("decimal");
    let p2: i64 = two["position"]
        .as_str()
        .expect("string")
        .parse()
        .expect("decimal");
    assert!(p2 > p1);
    assert_eq!(two["waitTimedOut"], false);
    app.shutdown().await;
}

#[tokio::test]
async fn health_and_metrics_endpoints() {
    let app = TestApp::spawn().await;
    app.create_group("x", None).await;
    let get = |path: &str| {
        axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("req")
    };
    assert_eq!(app.http(get("/healthz")).await.0, 200);
    assert_eq!(app.http(get("/readyz")).await.0, 200);
    let (status, body) = app.http(get("/metrics")).await;
    assert_eq!(status, 200);
    let text = body.as_str().expect("text");
    assert!(
        text.contains("corral_projector_lag_events{projector=\"group_tree\"}"),
        "{text}"
    );
    assert!(
        text.contains(
            "corral_http_requests_total{method=\"POST\",route=\"/graphql\",status=\"200\"}"
        ),
        "{text}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn update_changes_description_and_metadata_and_a_no_op_emits_nothing() {
    let app = TestApp::spawn().await;
    let id = app.create_group("Edge", None).await;
    let q = "mutation($input: UpdateGroupInput!) { updateGroup(input: $input) { group { description metadata version } position userErrors { code field } } }";
    let input = json!({ "input": { "id": id, "description": "edge routers", "metadata": { "rack": "R1", "floor": 2 } } });
    let first = app.data(&app.admin, q, input.clone()).await["updateGroup"].clone();
    assert_eq!(first["group"]["description"], "edge routers");
    assert_eq!(
        first["group"]["metadata"],
        json!({ "rack": "R1", "floor": 2 })
    );
    assert_eq!(first["group"]["version"], 2);
    let again = app.data(&app.admin, q, input).await["updateGroup"].clone();
    assert_eq!(again["group"]["version"], 2, "same values: no new event");
    assert_eq!(again["position"], first["position"]);
    let not_object = app
        .data(
            &app.admin,
            q,
            json!({ "input": { "id": id, "metadata": [1, 2] } }),
        )
        .await["updateGroup"]
        .clone();
    assert_eq!(
        not_object["userErrors"],
        json!([{ "code": "INVALID", "field": "metadata" }])
    );
    let missing = app
        .data(
            &app.admin,
            q,
            json!({ "input": { "id": uuid::Uuid::new_v4(), "description": "x" } }),
        )
        .await["updateGroup"]
        .clone();
    assert_eq!(missing["userErrors"][0]["code"], "NOT_FOUND");
    app.shutdown().await;
}

#[tokio::test]
async fn nested_fields_are_batched_not_one_query_per_node() {
    let app = TestApp::spawn().await;
    for i in 0..12 {
        let g = app.create_group(&format!("g{i:02}"), None).await;
        app.create_group("a", Some(&g)).await;
        app.create_group("b", Some(&g)).await;
    }
    let q = "{ groups(type: DEVICE, first: 100) { totalCount edges { node { name parent { name } ancestors { name }
              children(first: 5) { totalCount edges { node { name parent { name } } } } } } } }";
    let before = app.state.metrics.loader_batches_total();
    let data = app.data(&app.viewer, q, json!({})).await;
    let batches = app.state.metrics.loader_batches_total() - before;
    assert_eq!(data["groups"]["totalCount"], 37, "root + 36 groups");
    let per_loader: Vec<String> = app
        .state
        .metrics
        .render(&[])
        .lines()
        .filter(|l| l.starts_with("corral_dataloader_batches_total{"))
        .map(str::to_string)
        .collect();
    // Four fields below the page (parent, ancestors, children, their totalCount), one query
    // each; the children's `parent` is already known.
    assert!(
        batches <= 4,
        "{batches} loader queries for 37 groups and their children: {per_loader:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn paging_children_one_by_one_visits_each_once_even_with_non_ascii_names() {
    // Case is folded by the database's lower() (ASCII only on a C-locale server, which the
    // embedded one is), the same function that keeps sibling names unique.
    let app = TestApp::spawn().await;
    let parent = app.create_group("Ünicode", None).await;
    for name in ["Éa", "éb", "ec", "Ed", "ÆON", "zz", "Zy"] {
        app.create_group(name, Some(&parent)).await;
    }
    let q = "query($id: ID!, $after: String) { group(id: $id) { children(first: 1, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { node { name } } } } }";
    let mut seen = Vec::new();
    let mut after = Value::Null;
    for _ in 0..20 {
        let page = app
            .data(&app.viewer, q, json!({ "id": parent, "after": after }))
            .await["group"]["children"]
            .clone();
        seen.extend(
            page["edges"]
                .as_array()
                .expect("edges")
                .iter()
                .map(|e| e["node"]["name"].as_str().expect("name").to_string()),
        );
        if !page["pageInfo"]["hasNextPage"].as_bool().expect("bool") {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    let mut expected: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM rm_group_tree.groups WHERE parent_id = $1::uuid ORDER BY lower(name) COLLATE \"C\", id",
    )
    .bind(&parent)
    .fetch_all(&app.pool)
    .await
    .expect("names");
    assert_eq!(expected.len(), 7);
    assert_eq!(seen, std::mem::take(&mut expected));
    let by_path = app
        .data(
            &app.viewer,
            "{ groupByPath(type: DEVICE, path: \"INVENTORY/Ünicode/ÉA\") { name } }",
            json!({}),
        )
        .await;
    assert_eq!(by_path["groupByPath"]["name"], "Éa");
    app.shutdown().await;
}
