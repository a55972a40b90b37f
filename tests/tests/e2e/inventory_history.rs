//! Inventory history: every real change to a device or service is an event in the log with
//! its actor and before/after values, covered by the hash chain; `device(asOf | atPosition)`
//! folds them; `auditLog(filter: {memberId})` lists a member's membership and inventory
//! events in position order.

use std::time::Duration;

use corral_projections::public_log::{verify, ChainCheck};
use corral_tests::TestApp;
use serde_json::{json, Value};

use super::membership::add;

const UPSERT: &str = "mutation($input: UpsertDevicesInput!) { upsertDevices(input: $input) { upserted unchanged userErrors { field message code } } }";
const UPSERT_SERVICES: &str = "mutation($input: UpsertServicesInput!) { upsertServices(input: $input) { upserted unchanged userErrors { code } } }";
const REMOVE: &str =
    "mutation($input: RemoveInventoryInput!) { removeDevices(input: $input) { removed } }";
const LOG: &str = "query($filter: AuditLogFilter) { auditLog(filter: $filter, first: 100) { totalCount edges { node { position aggregateType aggregateId version eventType actor { subject role } source changes { field before after } } } } }";
const DEVICE_AT: &str = "query($id: ID!, $at: Position, $asOf: DateTime) { device(id: $id, atPosition: $at, asOf: $asOf) { id hostname site tags updatedAt } }";

async fn upsert(app: &TestApp, devices: Value) -> Value {
    app.data(
        &app.operator,
        UPSERT,
        json!({ "input": { "devices": devices } }),
    )
    .await["upsertDevices"]
        .clone()
}

/// Waits until the sequencer has numbered everything written so far; returns the head.
async fn sequenced(app: &TestApp) -> i64 {
    for _ in 0..500 {
        let (events, logged): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM event_log)",
        )
        .fetch_one(&app.pool)
        .await
        .expect("counts");
        if events == logged {
            return logged;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the sequencer did not catch up");
}

/// `(event_type, sequence, metadata)` of a record's events.
async fn events_of(app: &TestApp, aggregate: &str, id: &str) -> Vec<(String, i64, Value, Value)> {
    sqlx::query_as(
        "SELECT event_type, sequence, payload, metadata FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
    )
    .bind(aggregate)
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .expect("events")
}

async fn log(app: &TestApp, token: &str, filter: Value) -> Vec<Value> {
    app.data(token, LOG, json!({ "filter": filter })).await["auditLog"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

#[tokio::test]
async fn graphql_inventory_writes_are_events_with_the_caller_and_before_and_after_values() {
    let app = TestApp::spawn().await;
    let p = upsert(
        &app,
        json!([{ "id": "d1", "hostname": "web-01", "site": "ams1", "tags": ["env=prod"] }]),
    )
    .await;
    assert_eq!(p["upserted"], 1);
    // The same record again is a no-op: no event, no version.
    let p = upsert(
        &app,
        json!([{ "id": "d1", "hostname": "web-01", "site": "ams1", "tags": ["env=prod"] }]),
    )
    .await;
    assert_eq!(
        (p["upserted"].clone(), p["unchanged"].clone()),
        (json!(0), json!(1))
    );
    let first = events_of(&app, "Device", "d1").await;
    assert_eq!(first.len(), 1, "a no-op upsert appends nothing: {first:?}");
    let (event_type, sequence, payload, metadata) = &first[0];
    assert_eq!((event_type.as_str(), *sequence), ("DeviceRecorded", 1));
    assert_eq!(payload["DeviceRecorded"]["record"]["hostname"], "web-01");
    assert_eq!(
        payload["DeviceRecorded"]["record"]["tags"],
        json!({ "env": "prod" })
    );
    assert_eq!(metadata["actor_subject"], "oscar");
    assert_eq!(metadata["actor_role"], "operator");
    assert_eq!(metadata["source"], "api");
    assert!(metadata["correlation_id"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
    let at_first = sequenced(&app).await;

    let group = app.create_group("Edge", None).await;
    assert_eq!(
        add(&app, &group, &["d1".to_string()]).await["userErrors"],
        json!([])
    );
    upsert(
        &app,
        json!([{ "id": "d1", "hostname": "web-02", "site": "ams1", "tags": ["env=prod"] }]),
    )
    .await;
    let changed = events_of(&app, "Device", "d1").await;
    assert_eq!(changed[1].0, "DeviceChanged");
    assert_eq!(
        changed[1].2["DeviceChanged"]["changes"],
        json!([{ "field": "hostname", "before": "web-01", "after": "web-02" }])
    );
    let removed = app
        .data(
            &app.operator,
            REMOVE,
            json!({ "input": { "ids": ["d1", "nobody"] } }),
        )
        .await;
    assert_eq!(removed["removeDevices"]["removed"], 1);
    upsert(&app, json!([{ "id": "d1", "hostname": "web-02" }])).await;
    let all = events_of(&app, "Device", "d1").await;
    let kinds: Vec<(&str, i64)> = all.iter().map(|e| (e.0.as_str(), e.1)).collect();
    assert_eq!(
        kinds,
        [
            ("DeviceRecorded", 1),
            ("DeviceChanged", 2),
            ("DeviceRemoved", 3),
            ("DeviceRevived", 4)
        ]
    );
    assert_eq!(
        all[3].2["DeviceRevived"]["changes"],
        json!([
            { "field": "site", "before": "ams1", "after": null },
            { "field": "tags", "before": { "env": "prod" }, "after": {} },
        ])
    );
    let version: i64 = sqlx::query_scalar("SELECT version FROM devices WHERE id = 'd1'")
        .fetch_one(&app.pool)
        .await
        .expect("version");
    assert_eq!(version, 4);
    // Services have their own history.
    let s = app
        .data(
            &app.operator,
            UPSERT_SERVICES,
            json!({ "input": { "services": [{ "deviceId": "d1", "type": "http", "name": "web", "port": 80 }] } }),
        )
        .await;
    assert_eq!(s["upsertServices"]["upserted"], 1);
    assert_eq!(
        events_of(&app, "Service", "d1/http/web").await[0].0,
        "ServiceRecorded"
    );
    let head = sequenced(&app).await;

    // The chain covers them.
    let check = verify(&app.pool, 1, 1000, |_, _| {})
        .await
        .expect("verify runs");
    assert!(matches!(check, ChainCheck::Verified { .. }), "{check:?}");

    // The record as it was.
    let then = app
        .data(
            &app.viewer,
            DEVICE_AT,
            json!({ "id": "d1", "at": at_first.to_string() }),
        )
        .await;
    assert_eq!(then["device"]["hostname"], "web-01");
    assert_eq!(then["device"]["site"], "ams1");
    assert_eq!(then["device"]["tags"], json!({ "env": "prod" }));
    let now = app
        .data(
            &app.viewer,
            DEVICE_AT,
            json!({ "id": "d1", "at": head.to_string() }),
        )
        .await;
    assert_eq!(now["device"]["hostname"], "web-02");
    assert_eq!(now["device"]["site"], Value::Null);
    let before_it = app
        .data(
            &app.viewer,
            DEVICE_AT,
            json!({ "id": "d1", "asOf": "2000-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(before_it["device"], Value::Null, "it did not exist yet");
    let removed_at: i64 = sqlx::query_scalar(
        "SELECT l.log_position FROM events e JOIN event_log l USING (global_position)
          WHERE e.aggregate_type = 'Device' AND e.aggregate_id = 'd1' AND e.sequence = 3",
    )
    .fetch_one(&app.pool)
    .await
    .expect("removal position");
    let gone = app
        .data(
            &app.viewer,
            DEVICE_AT,
            json!({ "id": "d1", "at": removed_at.to_string() }),
        )
        .await;
    assert_eq!(gone["device"], Value::Null, "removed at that position");
    let both = app
        .gql(
            &app.viewer,
            DEVICE_AT,
            json!({ "id": "d1", "at": "1", "asOf": "2000-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(both["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    // The member-centric audit: membership and inventory events of d1, in position order.
    let entries = log(&app, &app.auditor, json!({ "memberId": "d1" })).await;
    let listed: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["aggregateType"].as_str().expect("type"),
                e["eventType"].as_str().expect("event type"),
            )
        })
        .collect();
    // Removing d1 from the inventory makes the purge take it out of Edge, asynchronously: that
    // MembersRemoved comes after the DeviceRemoved, before or after the revival.
    let removed_from_edge = listed
        .iter()
        .position(|e| *e == ("Membership", "MembersRemoved"));
    let mut expected = vec![
        ("Device", "DeviceRecorded"),
        ("Membership", "MembersAdded"),
        ("Device", "DeviceChanged"),
        ("Device", "DeviceRemoved"),
        ("Device", "DeviceRevived"),
    ];
    if let Some(i) = removed_from_edge {
        assert!(
            i > 3,
            "removed from Edge before the device was removed: {listed:?}"
        );
        expected.insert(i, ("Membership", "MembersRemoved"));
    }
    assert_eq!(listed, expected);
    let positions: Vec<i64> = entries
        .iter()
        .map(|e| {
            e["position"]
                .as_str()
                .expect("position")
                .parse()
                .expect("number")
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert_eq!(
        entries[2]["changes"],
        json!([{ "field": "hostname", "before": "web-01", "after": "web-02" }])
    );
    assert_eq!(
        entries[0]["actor"],
        json!({ "subject": "oscar", "role": "operator" })
    );
    assert_eq!(
        entries[3]["changes"],
        json!([{ "field": "removed", "before": false, "after": true }])
    );

    // A scoped auditor sees the Membership events of its groups only, never inventory events.
    let scoped = app.scoped_token("sam", "auditor", &group).await;
    let mine = log(&app, &scoped, json!({ "memberId": "d1" })).await;
    let mine: Vec<&str> = mine
        .iter()
        .map(|e| e["eventType"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(mine.first(), Some(&"MembersAdded"), "{mine:?}");
    assert!(
        mine[1..].iter().all(|t| *t == "MembersRemoved") && mine.len() <= 2,
        "only Edge's Membership events: {mine:?}"
    );

    // The index is a function of the log: rebuilding it gives the same rows.
    let snapshot = "SELECT coalesce(array_agg(member_id || ':' || global_position ORDER BY member_id, global_position), '{}') FROM member_events";
    let before: Vec<String> = sqlx::query_scalar(snapshot)
        .fetch_one(&app.pool)
        .await
        .expect("index");
    sqlx::query("SELECT corral_member_events_rebuild()")
        .execute(&app.pool)
        .await
        .expect("rebuild");
    let after: Vec<String> = sqlx::query_scalar(snapshot)
        .fetch_one(&app.pool)
        .await
        .expect("index");
    assert_eq!(before, after);
    assert!(before.iter().any(|r| r.starts_with("d1:")));
}

#[tokio::test]
async fn concurrent_writers_of_one_device_each_get_their_own_version() {
    let app = TestApp::spawn_with(Default::default(), false).await;
    let by = corral_projections::inventory::WriteContext::new(
        corral_domain::metadata::EventMetadata::system(corral_domain::metadata::Source::Cli, "t"),
    );
    let mut tasks = Vec::new();
    for k in 0..8 {
        let (pool, by) = (app.pool.clone(), by.clone());
        tasks.push(tokio::spawn(async move {
            let d = corral_domain::inventory::device_from_json(
                json!({ "id": "hot", "hostname": format!("h{k}") }),
            )
            .expect("valid");
            corral_projections::inventory::upsert_devices(&pool, &[d], &by).await
        }));
    }
    let mut written = 0;
    for t in tasks {
        written += t.await.expect("task").expect("upsert").upserted;
    }
    let events = events_of(&app, "Device", "hot").await;
    assert_eq!(events.len() as u64, written, "one event per row written");
    let sequences: Vec<i64> = events.iter().map(|e| e.1).collect();
    assert_eq!(sequences, (1..=written as i64).collect::<Vec<_>>());
    let (version, hostname): (i64, String) =
        sqlx::query_as("SELECT version, hostname FROM devices WHERE id = 'hot'")
            .fetch_one(&app.pool)
            .await
            .expect("row");
    assert_eq!(version, written as i64);
    // The last event's after-value is what the table holds.
    let last = &events[events.len() - 1].2;
    let after = last
        .get("DeviceChanged")
        .and_then(|c| c["changes"][0]["after"].as_str())
        .or_else(|| last["DeviceRecorded"]["record"]["hostname"].as_str());
    assert_eq!(after, Some(hostname.as_str()));
}
