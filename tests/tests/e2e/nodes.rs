//! The Relay `Node` interface (issue 16): `node(id)` / `nodes(ids)` by global id (`nodeId`),
//! with each type's own access rules (hidden = null, never FORBIDDEN).

use corral_tests::TestApp;
use serde_json::{json, Value};

use super::membership::add;

const NODE: &str = "query($id: ID!) { node(id: $id) { __typename nodeId ... on Group { id name } ... on Device { id hostname } ... on Service { id deviceId } ... on Dashboard { id name } } }";
const NODES: &str = "query($ids: [ID!]!) { nodes(ids: $ids) { __typename nodeId ... on Group { name } ... on Device { id } ... on Service { id } } }";

async fn node_id(app: &TestApp, query: &str, vars: Value, pointer: &str) -> String {
    let data = app.data(&app.admin, query, vars).await;
    data.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} in {data}"))
        .to_string()
}

#[tokio::test]
async fn nodes_of_every_type_by_global_id_and_only_the_visible_ones() {
    let app = TestApp::spawn().await;
    let region = app.create_group("Region", None).await;
    let site_a = app.create_group("Site-A", Some(&region)).await;
    let core = app.create_group("Core", Some(&site_a)).await;
    let site_b = app.create_group("Site-B", Some(&region)).await;
    // A device and a service with the same source id: their global ids differ.
    sqlx::query(
        "INSERT INTO devices (id, hostname, is_available) VALUES ('same', 'h-same', true),
                ('other', 'h-other', true)",
    )
    .execute(&app.pool)
    .await
    .expect("devices");
    sqlx::query(
        "INSERT INTO services (id, device_id, type, name) VALUES ('same', 'same', 'http', 'web')",
    )
    .execute(&app.pool)
    .await
    .expect("service");
    assert_eq!(
        add(&app, &core, &["same".to_string()]).await["userErrors"],
        json!([])
    );
    assert_eq!(
        add(&app, &site_b, &["other".to_string()]).await["userErrors"],
        json!([])
    );

    let g_core = node_id(
        &app,
        "query($id: ID!) { group(id: $id) { nodeId } }",
        json!({ "id": core }),
        "/group/nodeId",
    )
    .await;
    let g_b = node_id(
        &app,
        "query($id: ID!) { group(id: $id) { nodeId } }",
        json!({ "id": site_b }),
        "/group/nodeId",
    )
    .await;
    let d_same = node_id(
        &app,
        "{ device(id: \"same\") { nodeId } }",
        json!({}),
        "/device/nodeId",
    )
    .await;
    let d_other = node_id(
        &app,
        "{ device(id: \"other\") { nodeId } }",
        json!({}),
        "/device/nodeId",
    )
    .await;
    let s_same = node_id(
        &app,
        "{ service(id: \"same\") { nodeId } }",
        json!({}),
        "/service/nodeId",
    )
    .await;
    assert_ne!(d_same, s_same);
    // The existing ids are unchanged.
    let node = |id: &str| json!({ "id": id });
    let n = app.data(&app.viewer, NODE, node(&g_core)).await;
    assert_eq!(
        n["node"],
        json!({ "__typename": "Group", "nodeId": g_core, "id": core, "name": "Core" })
    );
    let n = app.data(&app.viewer, NODE, node(&d_same)).await;
    assert_eq!(
        n["node"],
        json!({ "__typename": "Device", "nodeId": d_same, "id": "same", "hostname": "h-same" })
    );
    let n = app.data(&app.viewer, NODE, node(&s_same)).await;
    assert_eq!(
        n["node"],
        json!({ "__typename": "Service", "nodeId": s_same, "id": "same", "deviceId": "same" })
    );
    // A dashboard: its owner's only.
    let board = app
        .data(
            &app.viewer,
            "mutation { createDashboard(input: { name: \"Mine\" }) { dashboard { id nodeId } userErrors { message } } }",
            json!({}),
        )
        .await;
    let b = board["createDashboard"]["dashboard"].clone();
    let n = app
        .data(&app.viewer, NODE, node(b["nodeId"].as_str().expect("id")))
        .await;
    assert_eq!(n["node"]["id"], b["id"]);
    assert_eq!(n["node"]["name"], "Mine");
    let n = app
        .data(&app.operator, NODE, node(b["nodeId"].as_str().expect("id")))
        .await;
    assert_eq!(n["node"], Value::Null, "another's dashboard is hidden");

    // Unknown, malformed and deleted-kind ids are null, not errors.
    for id in ["nonsense", "R3JvdXA6eA", "VG9rZW46eA", ""] {
        let n = app.data(&app.viewer, NODE, node(id)).await;
        assert_eq!(n["node"], Value::Null, "{id}");
    }

    // A reader bound to Site-A sees Core and its member (and that member's service, as
    // `service` shows it), not Site-B nor its member: null, as for what does not exist.
    let sally = app.scoped_token("sally", "viewer", &site_a).await;
    let all = json!({ "ids": [g_core, g_b, d_same, d_other, s_same, "nonsense"] });
    let n = app.gql(&sally, NODES, all.clone()).await;
    assert!(n.get("errors").is_none(), "{n}");
    assert_eq!(
        n["data"]["nodes"],
        json!([
            { "__typename": "Group", "nodeId": g_core, "name": "Core" },
            null,
            { "__typename": "Device", "nodeId": d_same, "id": "same" },
            null,
            { "__typename": "Service", "nodeId": s_same, "id": "same" },
            null,
        ])
    );
    // The same as the types' own queries answer her.
    let own = app
        .data(
            &sally,
            "query($b: ID!) { group(id: $b) { id } device(id: \"other\") { id } service(id: \"same\") { id } }",
            json!({ "b": site_b }),
        )
        .await;
    assert_eq!(
        own,
        json!({ "group": null, "device": null, "service": { "id": "same" } })
    );
    // Global readers see all of them, in order.
    let n = app.data(&app.viewer, NODES, all).await;
    let types: Vec<Value> = n["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|x| x["__typename"].clone())
        .collect();
    assert_eq!(
        types,
        vec![
            json!("Group"),
            json!("Group"),
            json!("Device"),
            json!("Device"),
            json!("Service"),
            Value::Null
        ]
    );

    // At most 100 ids.
    let many: Vec<String> = (0..101).map(|_| g_core.clone()).collect();
    let n = app.gql(&app.viewer, NODES, json!({ "ids": many })).await;
    assert_eq!(
        n["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{n}"
    );
    app.shutdown().await;
}
