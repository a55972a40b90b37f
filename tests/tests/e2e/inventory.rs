//! The inventory through GraphQL: upserts with per-item userErrors, removal, queries with
//! rule filters, permissions. The change feed and the NATS feed are in the submodules.

mod change_feed;
mod feed;

use corral_tests::TestApp;
use serde_json::{json, Value};

const UPSERT_DEVICES: &str = "mutation($input: UpsertDevicesInput!) { upsertDevices(input: $input) { upserted unchanged userErrors { field message code } } }";
const UPSERT_SERVICES: &str = "mutation($input: UpsertServicesInput!) { upsertServices(input: $input) { upserted unchanged userErrors { field message code } } }";
const REMOVE_DEVICES: &str = "mutation($input: RemoveInventoryInput!) { removeDevices(input: $input) { removed userErrors { field code } } }";
const REMOVE_SERVICES: &str = "mutation($input: RemoveInventoryInput!) { removeServices(input: $input) { removed userErrors { field code } } }";
const DEVICES: &str = "query($filter: String, $first: Int, $after: String) { devices(filter: $filter, first: $first, after: $after) { totalCount totalCountExact pageInfo { hasNextPage endCursor } edges { cursor node { id } } } }";

async fn upsert_devices(app: &TestApp, devices: Value) -> Value {
    app.data(
        &app.operator,
        UPSERT_DEVICES,
        json!({ "input": { "devices": devices } }),
    )
    .await["upsertDevices"]
        .clone()
}

fn fields(payload: &Value) -> Vec<String> {
    payload["userErrors"]
        .as_array()
        .expect("userErrors")
        .iter()
        .map(|e| e["field"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Ids of a `devices` query, and the page.
async fn device_ids(app: &TestApp, filter: &str) -> Vec<String> {
    let page = app
        .data(
            &app.viewer,
            DEVICES,
            json!({ "filter": filter, "first": 1000 }),
        )
        .await["devices"]
        .clone();
    page["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn upserts_apply_valid_items_and_report_invalid_ones_by_index() {
    let app = TestApp::spawn().await;
    let p = upsert_devices(
        &app,
        json!([
            { "id": "dev-a", "hostname": " web-01 ", "ip": "2001:DB8::0:1", "mac": "AA-BB-CC-DD-EE-01",
              "type": "server", "tags": ["Env=prod", "critical"], "metadata": { "Rack": "r1" },
              "discoverySources": ["snmp", "armis"], "isAvailable": true,
              "firstSeen": "2026-01-01T00:00:00Z", "lastSeen": "2026-01-02T00:00:00Z" },
            { "id": "dev-b", "ip": "10.0.0.300" },
            { "id": "dev-c", "ip": "10.0.0.3" },
            { "id": "dev-d", "mac": "nope", "tags": ["bad key"] },
        ]),
    )
    .await;
    assert_eq!(p["upserted"], 2, "{p}");
    assert_eq!(p["unchanged"], 0);
    assert_eq!(
        fields(&p),
        vec!["devices[1].ip", "devices[3].mac", "devices[3].tags[0]"]
    );
    assert!(p["userErrors"]
        .as_array()
        .expect("errors")
        .iter()
        .all(|e| e["code"] == "INVALID"));

    let q = "query($id: ID!) { device(id: $id) { id hostname ip mac type tags metadata discoverySources isAvailable firstSeen lastSeen updatedAt osVersion } }";
    let d = app.data(&app.viewer, q, json!({ "id": "dev-a" })).await["device"].clone();
    assert_eq!(d["hostname"], "web-01");
    assert_eq!(d["ip"], "2001:db8::1");
    assert_eq!(d["mac"], "aa:bb:cc:dd:ee:01");
    assert_eq!(d["type"], "server");
    assert_eq!(d["tags"], json!({ "env": "prod", "critical": "" }));
    assert_eq!(d["metadata"], json!({ "rack": "r1" }));
    assert_eq!(d["discoverySources"], json!(["snmp", "armis"]));
    assert_eq!(d["isAvailable"], true);
    assert_eq!(d["osVersion"], Value::Null);
    assert!(d["firstSeen"]
        .as_str()
        .is_some_and(|s| s.starts_with("2026-01-01")));
    let missing = app.data(&app.viewer, q, json!({ "id": "dev-b" })).await;
    assert_eq!(
        missing["device"],
        Value::Null,
        "invalid items are not applied"
    );

    // The same again changes nothing; the last of a repeated id wins.
    let p = upsert_devices(
        &app,
        json!([{ "id": "dev-c", "ip": "10.0.0.9" }, { "id": "dev-c", "ip": "10.0.0.3" }]),
    )
    .await;
    assert_eq!(
        (p["upserted"].as_i64(), p["unchanged"].as_i64()),
        (Some(0), Some(1))
    );
    app.shutdown().await;
}

#[tokio::test]
async fn more_than_1000_items_are_too_many_and_nothing_applies() {
    let app = TestApp::spawn().await;
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({ "id": format!("d{i}") }))
        .collect();
    let p = upsert_devices(&app, json!(many)).await;
    assert_eq!(p["upserted"], 0);
    assert_eq!(p["userErrors"][0]["code"], "TOO_MANY");
    assert_eq!(p["userErrors"][0]["field"], "devices");
    assert!(device_ids(&app, "").await.is_empty());
    let p = upsert_devices(&app, json!(many[..1000])).await;
    assert_eq!(p["upserted"], 1000, "{}", p["userErrors"]);
    let ids: Vec<String> = (0..1001).map(|i| format!("d{i}")).collect();
    let r = app
        .data(
            &app.operator,
            REMOVE_DEVICES,
            json!({ "input": { "ids": ids } }),
        )
        .await;
    assert_eq!(r["removeDevices"]["userErrors"][0]["code"], "TOO_MANY");
    assert_eq!(r["removeDevices"]["removed"], 0);
    app.shutdown().await;
}

#[tokio::test]
async fn viewers_cannot_write_the_inventory() {
    let app = TestApp::spawn().await;
    let calls = [
        (UPSERT_DEVICES, json!({ "devices": [{ "id": "x" }] })),
        (
            UPSERT_SERVICES,
            json!({ "services": [{ "deviceId": "x", "type": "t", "name": "n" }] }),
        ),
        (REMOVE_DEVICES, json!({ "ids": ["x"] })),
        (REMOVE_SERVICES, json!({ "ids": ["x"] })),
    ];
    for (mutation, input) in &calls {
        let body = app
            .gql(&app.viewer, mutation, json!({ "input": input }))
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{body}"
        );
        let body = app
            .gql(&app.operator, mutation, json!({ "input": input }))
            .await;
        assert!(body.get("errors").is_none(), "operator: {body}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn devices_and_services_page_by_id_and_removed_ones_disappear() {
    let app = TestApp::spawn().await;
    let devices: Vec<Value> = (0..5)
        .map(|i| json!({ "id": format!("dev-{i}"), "hostname": format!("host-{i}") }))
        .collect();
    upsert_devices(&app, json!(devices)).await;
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = app
            .data(&app.viewer, DEVICES, json!({ "first": 2, "after": after }))
            .await["devices"]
            .clone();
        assert_eq!(page["totalCount"], 5);
        assert_eq!(page["totalCountExact"], true);
        for e in page["edges"].as_array().expect("edges") {
            seen.push(e["node"]["id"].as_str().expect("id").to_string());
        }
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, vec!["dev-0", "dev-1", "dev-2", "dev-3", "dev-4"]);
    let bad = app
        .gql(&app.viewer, DEVICES, json!({ "first": 1001 }))
        .await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    let p = app
        .data(
            &app.operator,
            UPSERT_SERVICES,
            json!({ "input": { "services": [
                { "deviceId": "dev-1", "type": "http", "name": "web", "port": 443, "tags": ["tls"] },
                { "deviceId": "dev-2", "type": "ssh", "name": "sshd", "port": 22 },
                { "deviceId": "dev-9", "type": "ssh", "name": "sshd", "port": 70000 },
            ] } }),
        )
        .await["upsertServices"]
        .clone();
    assert_eq!(p["upserted"], 2);
    assert_eq!(fields(&p), vec!["services[2].port"]);
    let q = "{ services(first: 10) { totalCount edges { node { id deviceId type name port tags device { id hostname } } } } }";
    let page = app.data(&app.viewer, q, json!({})).await["services"].clone();
    assert_eq!(page["totalCount"], 2);
    let first = &page["edges"][0]["node"];
    assert_eq!(first["id"], "dev-1/http/web");
    assert_eq!(first["device"]["hostname"], "host-1");
    assert_eq!(first["tags"], json!({ "tls": "" }));
    let filtered =
        "query($f: String) { services(filter: $f) { totalCount edges { node { id } } } }";
    for (filter, expected) in [
        ("type:http", "dev-1/http/web"),
        ("port:>100", "dev-1/http/web"),
        ("device.hostname:host-2", "dev-2/ssh/sshd"),
    ] {
        let page = app
            .data(&app.viewer, filtered, json!({ "f": filter }))
            .await["services"]
            .clone();
        assert_eq!(page["totalCount"], 1, "{filter}");
        assert_eq!(page["edges"][0]["node"]["id"], expected, "{filter}");
    }
    let batches = app.state.metrics.loader_batches_total();

    let r = app
        .data(
            &app.operator,
            REMOVE_DEVICES,
            json!({ "input": { "ids": ["dev-1", "dev-1", "nope"] } }),
        )
        .await;
    assert_eq!(
        r["removeDevices"]["removed"], 1,
        "unknown ids are not counted"
    );
    let page = app.data(&app.viewer, q, json!({})).await["services"].clone();
    assert_eq!(
        page["edges"][0]["node"]["device"],
        Value::Null,
        "a removed host is absent"
    );
    assert!(
        app.state.metrics.loader_batches_total() - batches <= 1,
        "one batch loads the hosts of a whole page"
    );
    assert_eq!(device_ids(&app, "").await.len(), 4);
    let r = app
        .data(
            &app.operator,
            REMOVE_SERVICES,
            json!({ "input": { "ids": ["dev-2/ssh/sshd"] } }),
        )
        .await;
    assert_eq!(r["removeServices"]["removed"], 1);
    let one = app
        .data(
            &app.viewer,
            "{ service(id: \"dev-2/ssh/sshd\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(one["service"], Value::Null);
    // Upserting a removed device revives it.
    upsert_devices(&app, json!([{ "id": "dev-1" }])).await;
    assert_eq!(device_ids(&app, "").await.len(), 5);
    app.shutdown().await;
}

#[tokio::test]
async fn filters_are_rules() {
    let app = TestApp::spawn().await;
    upsert_devices(
        &app,
        json!([
            { "id": "a", "hostname": "web-01", "ip": "10.1.0.5", "site": "ams1", "tags": ["env=prod"], "type": "server" },
            { "id": "b", "hostname": "web-02", "ip": "10.2.0.5", "site": "fra1", "tags": ["env=dev"] },
            { "id": "c", "hostname": "db-01", "ip": "192.168.1.1", "site": "ams1", "mac": "aa:bb:cc:dd:ee:ff" },
        ]),
    )
    .await;
    for (filter, expected) in [
        ("hostname:web-%", vec!["a", "b"]),
        ("hostname:web-% site:ams1", vec!["a"]),
        ("ip:10.0.0.0/8", vec!["a", "b"]),
        ("tags.env:prod", vec!["a"]),
        ("tags:env", vec!["a", "b"]),
        ("mac:AABBCCDDEEFF", vec!["c"]),
        ("in:devices type:server", vec!["a"]),
    ] {
        assert_eq!(device_ids(&app, filter).await, expected, "{filter}");
    }
    // `group:` references read the membership read model: effective members by default.
    let site = app.create_group("Site-A", None).await;
    let rack = app.create_group("Rack-1", Some(&site)).await;
    let add = "mutation($input: GroupMembersInput!) { addGroupMembers(input: $input) { userErrors { code } } }";
    for (group, id) in [(&site, "a"), (&rack, "c")] {
        let r = app
            .data(
                &app.operator,
                add,
                json!({ "input": { "groupId": group, "memberIds": [id] } }),
            )
            .await;
        assert_eq!(r["addGroupMembers"]["userErrors"], json!([]));
    }
    assert_eq!(
        device_ids(&app, "group:Inventory/Site-A").await,
        vec!["a", "c"]
    );
    assert_eq!(
        device_ids(&app, "group:Inventory/Site-A:direct").await,
        vec!["a"]
    );
    assert_eq!(
        device_ids(&app, "hostname:db-% OR group:Inventory/Site-A/Rack-1").await,
        vec!["c"]
    );
    let unknown = app
        .gql(
            &app.viewer,
            DEVICES,
            json!({ "filter": "site:ams1 group:Inventory/Nope" }),
        )
        .await;
    assert_eq!(
        unknown["errors"][0]["extensions"]["code"], "RULE_INVALID",
        "{unknown}"
    );
    assert_eq!(unknown["errors"][0]["extensions"]["column"], 11);
    let page = app
        .data(
            &app.viewer,
            DEVICES,
            json!({ "filter": "hostname:web-%", "first": 1 }),
        )
        .await["devices"]
        .clone();
    assert_eq!(page["totalCount"], 2, "totalCount counts the filtered set");
    assert_eq!(page["pageInfo"]["hasNextPage"], true);

    let bad = app
        .gql(
            &app.viewer,
            DEVICES,
            json!({ "filter": "hostname:web nosuchfield:x" }),
        )
        .await;
    let err = &bad["errors"][0];
    assert_eq!(err["extensions"]["code"], "RULE_INVALID", "{bad}");
    let column = err["extensions"]["column"].as_u64().expect("column");
    assert!(
        err["message"]
            .as_str()
            .expect("message")
            .contains(&format!("column {column}")),
        "{err}"
    );
    let wrong_kind = app
        .gql(
            &app.viewer,
            "{ services(filter: \"in:devices hostname:web-01\") { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        wrong_kind["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{wrong_kind}"
    );
    app.shutdown().await;
}
