//! Group capability flags: the capabilities worker computes them from recent telemetry and
//! the inventory over effective members, writes `GroupCapabilitiesChanged` (source `worker`)
//! only when a flag changes, and GraphQL, time travel and the audit log show them.

use std::time::Duration;

use corral_domain::group::GroupType;
use corral_tests::TestApp;
use corral_workers::capabilities::{run_once, CapabilityConfig};
use serde_json::{json, Value};

const CAPS: &str =
    "query($id: ID!) { group(id: $id) { version capabilities { hasSysmon hasSnmp hasServices } } }";
const CAPS_AT: &str = "query($id: ID!, $at: Position) { group(id: $id, atPosition: $at) { asOfPosition capabilities { hasSysmon hasSnmp hasServices } } }";
const LOG: &str = "query($filter: AuditLogFilter) { auditLog(filter: $filter, first: 50) { edges { node { position source actor { subject role } eventType changes { field before after } } } } }";
const ADD: &str = "mutation($input: GroupMembersInput!) { addGroupMembers(input: $input) { changed waitTimedOut userErrors { code message } } }";
const UPDATE: &str = "mutation($input: UpdateGroupInput!) { updateGroup(input: $input) { group { version } userErrors { code message } } }";

fn flags(sysmon: bool, snmp: bool, services: bool) -> Value {
    json!({ "hasSysmon": sysmon, "hasSnmp": snmp, "hasServices": services })
}

async fn sql(app: &TestApp, statement: &str) {
    sqlx::query(statement)
        .execute(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

async fn add(app: &TestApp, group: &str, ids: &[&str]) {
    let data = app
        .data(
            &app.operator,
            ADD,
            json!({ "input": { "groupId": group, "memberIds": ids } }),
        )
        .await;
    assert_eq!(data["addGroupMembers"]["userErrors"], json!([]), "{data}");
    assert_eq!(data["addGroupMembers"]["waitTimedOut"], false);
}

async fn create_service_group(app: &TestApp, name: &str) -> String {
    let data = app
        .data(
            &app.admin,
            "mutation($input: CreateGroupInput!) { createGroup(input: $input) { group { id } userErrors { code message } } }",
            json!({ "input": { "name": name, "type": "SERVICE" } }),
        )
        .await;
    assert_eq!(data["createGroup"]["userErrors"], json!([]));
    data["createGroup"]["group"]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// One pass of the worker, as `corral serve` runs it every minute.
async fn pass(app: &TestApp) -> usize {
    run_once(&app.pool, &app.state.groups, &CapabilityConfig::default())
        .await
        .expect("capabilities pass")
}

/// The `GroupCapabilitiesChanged` events of a group: (payload fields, metadata), in order.
async fn events(app: &TestApp, group: &str) -> Vec<(Value, Value)> {
    sqlx::query_as(
        "SELECT payload -> 'GroupCapabilitiesChanged', metadata FROM events
          WHERE aggregate_type = 'Group' AND aggregate_id = $1
            AND event_type = 'GroupCapabilitiesChanged'
          ORDER BY sequence",
    )
    .bind(group)
    .fetch_all(&app.pool)
    .await
    .expect("events")
}

async fn all_capability_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'GroupCapabilitiesChanged'")
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

/// Waits until GraphQL shows `expected` for the group (the read model follows the events).
async fn shows(app: &TestApp, group: &str, expected: Value) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let data = app.data(&app.viewer, CAPS, json!({ "id": group })).await;
        last = data["group"].clone();
        if last["capabilities"] == expected {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("group {group} never showed {expected}; last: {last}");
}

#[tokio::test]
async fn the_worker_sets_flags_from_recent_data_only_when_they_change() {
    let app = TestApp::spawn().await;
    let root = GroupType::Device.root_id().to_string();
    let service_root = GroupType::Service.root_id().to_string();
    let site = app.create_group("Site", None).await;
    let core = app.create_group("Core", Some(&site)).await;
    let old = app.create_group("Old", None).await;
    let web = create_service_group(&app, "Web").await;
    // d1: sysmon now, a checked service. d2: discovered by SNMP. d3: sysmon only 30 h ago,
    // SNMP but removed, a service checked 30 h ago. s2 (on d4, in no device group): checked
    // an hour ago.
    sql(
        &app,
        "INSERT INTO devices (id, hostname, discovery_sources) VALUES
            ('d1', 'core-1', '{sweep}'), ('d2', 'site-1', '{Sweep,SNMP}'),
            ('d3', 'old-1', '{snmp}'), ('d4', 'api-1', '{}')",
    )
    .await;
    sql(
        &app,
        "INSERT INTO services (id, device_id, type, name) VALUES
            ('s1', 'd1', 'http', 'web'), ('s2', 'd4', 'http', 'api'), ('s3', 'd3', 'dns', 'dns')",
    )
    .await;
    add(&app, &core, &["d1"]).await;
    add(&app, &site, &["d2"]).await;
    add(&app, &old, &["d3"]).await;
    add(&app, &web, &["s2"]).await;
    sql(
        &app,
        "UPDATE devices SET removed_at = now() WHERE id = 'd3'",
    )
    .await;
    sql(
        &app,
        "INSERT INTO health_device_buckets (device_id, bucket_size, bucket_start, samples,
                cpu_sum, cpu_max, mem_sum, mem_max, disk_sum, disk_max)
         VALUES ('d1', 3600, date_trunc('hour', now()) - interval '1 hour', 12, 1, 1, 1, 1, 1, 1),
                ('d3', 3600, date_trunc('hour', now()) - interval '30 hours', 12, 1, 1, 1, 1, 1, 1),
                -- 5-minute buckets are not what the worker reads.
                ('d2', 300, date_trunc('hour', now()), 1, 1, 1, 1, 1, 1, 1)",
    )
    .await;
    sql(
        &app,
        "INSERT INTO health_service_buckets (service_id, bucket_size, bucket_start, checks, up,
                down, latency_sum, latency_n)
         VALUES ('s1', 3600, date_trunc('hour', now()), 4, 4, 0, 10, 4),
                ('s2', 3600, date_trunc('hour', now()) - interval '1 hour', 4, 3, 1, 10, 4),
                ('s3', 3600, date_trunc('hour', now()) - interval '30 hours', 4, 4, 0, 10, 4)",
    )
    .await;

    // First pass: one event per group whose flags are not all false any more.
    assert_eq!(
        pass(&app).await,
        5,
        "Core, Site, the device root, Web, the service root"
    );
    let expected = [
        (&core, flags(true, false, true)),
        (&site, flags(true, true, true)),
        (&root, flags(true, true, true)),
        (&old, flags(false, false, false)),
        (&web, flags(false, false, true)),
        (&service_root, flags(false, false, true)),
    ];
    for (group, want) in &expected {
        shows(&app, group, want.clone()).await;
        let written = events(&app, group).await;
        if *want == flags(false, false, false) {
            assert!(written.is_empty(), "no flag of Old changed: {written:?}");
            continue;
        }
        assert_eq!(written.len(), 1, "exactly one event for {group}");
        let (payload, metadata) = &written[0];
        assert_eq!(metadata["source"], "worker");
        assert_eq!(metadata["actor_subject"], "capabilities-worker");
        assert_eq!(
            payload["previous"],
            json!({"has_sysmon": false, "has_snmp": false, "has_services": false})
        );
        assert_eq!(payload["has_sysmon"], want["hasSysmon"]);
        assert_eq!(payload["has_snmp"], want["hasSnmp"]);
        assert_eq!(payload["has_services"], want["hasServices"]);
    }

    // Nothing changed: a second pass writes nothing.
    let before = all_capability_events(&app).await;
    assert_eq!(pass(&app).await, 0);
    assert_eq!(all_capability_events(&app).await, before);

    // The event moved Core's version, and the tree shows it: expectedVersion still works.
    let shown = shows(&app, &core, flags(true, false, true)).await;
    let stored: i64 = sqlx::query_scalar(
        "SELECT max(sequence) FROM events WHERE aggregate_type = 'Group' AND aggregate_id = $1",
    )
    .bind(&core)
    .fetch_one(&app.pool)
    .await
    .expect("version");
    let mut version = shown["version"].as_i64().expect("version");
    for _ in 0..200 {
        if version == stored {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        version = app.data(&app.viewer, CAPS, json!({ "id": core })).await["group"]["version"]
            .as_i64()
            .expect("version");
    }
    assert_eq!(version, stored);
    let updated = app
        .data(
            &app.admin,
            UPDATE,
            json!({ "input": { "id": core, "description": "core", "expectedVersion": version } }),
        )
        .await;
    assert_eq!(updated["updateGroup"]["userErrors"], json!([]), "{updated}");
    let flipped_at: i64 = sqlx::query_scalar("SELECT max(log_position) FROM event_log")
        .fetch_one(&app.pool)
        .await
        .expect("position");

    // d1's telemetry ages out of the window: sysmon flips back on Core and its ancestors.
    sql(
        &app,
        "UPDATE health_device_buckets SET bucket_start = bucket_start - interval '2 days'
          WHERE device_id = 'd1'",
    )
    .await;
    assert_eq!(pass(&app).await, 3, "Core, Site and the device root");
    shows(&app, &core, flags(false, false, true)).await;
    shows(&app, &site, flags(false, true, true)).await;
    shows(&app, &root, flags(false, true, true)).await;
    let core_events = events(&app, &core).await;
    assert_eq!(core_events.len(), 2, "one more event for Core");
    assert_eq!(
        core_events[1].0,
        json!({"has_sysmon": false, "has_snmp": false, "has_services": true,
               "previous": {"has_sysmon": true, "has_snmp": false, "has_services": true}})
    );
    assert_eq!(events(&app, &web).await.len(), 1, "Web did not change");
    assert_eq!(pass(&app).await, 0);

    // Time travel: Core as it was before the flip had sysmon.
    let past = app
        .data(
            &app.admin,
            CAPS_AT,
            json!({ "id": core, "at": flipped_at.to_string() }),
        )
        .await;
    assert_eq!(
        past["group"]["capabilities"],
        flags(true, false, true),
        "{past}"
    );

    // The audit log lists which flags changed, by the worker.
    let log = app
        .data(
            &app.auditor,
            LOG,
            json!({ "filter": { "groupId": core, "eventTypes": ["GroupCapabilitiesChanged"] } }),
        )
        .await;
    let entries: Vec<Value> = log["auditLog"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    assert_eq!(entries.len(), 2, "{log}");
    assert_eq!(entries[0]["source"], "worker");
    assert_eq!(
        entries[0]["actor"],
        json!({"subject": "capabilities-worker", "role": "system"})
    );
    assert_eq!(
        entries[0]["changes"],
        json!([
            {"field": "hasSysmon", "before": false, "after": true},
            {"field": "hasServices", "before": false, "after": true},
        ])
    );
    assert_eq!(
        entries[1]["changes"],
        json!([{"field": "hasSysmon", "before": true, "after": false}])
    );

    // A read model that lags (here: shows no flags at all) makes the worker resend every
    // group's flags, and the aggregates, which already have them, write nothing.
    let before = all_capability_events(&app).await;
    sql(&app, "DELETE FROM rm_group_capabilities.capabilities").await;
    assert_eq!(pass(&app).await, 0);
    assert_eq!(all_capability_events(&app).await, before);
    app.shutdown().await;
}

#[tokio::test]
async fn deleted_groups_lose_their_flags_and_membership_changes_are_followed() {
    let app = TestApp::spawn().await;
    let edge = app.create_group("Edge", None).await;
    sql(
        &app,
        "INSERT INTO devices (id, hostname, discovery_sources) VALUES ('e1', 'edge-1', '{SNMP}')",
    )
    .await;
    add(&app, &edge, &["e1"]).await;
    assert_eq!(pass(&app).await, 2, "Edge and the device root");
    shows(&app, &edge, flags(false, true, false)).await;

    // The member leaves: Edge and the root lose the flag.
    let data = app
        .data(
            &app.operator,
            "mutation($input: GroupMembersInput!) { removeGroupMembers(input: $input) { changed userErrors { code } } }",
            json!({ "input": { "groupId": edge, "memberIds": ["e1"] } }),
        )
        .await;
    assert_eq!(data["removeGroupMembers"]["changed"], 1);
    assert_eq!(pass(&app).await, 2);
    shows(&app, &edge, flags(false, false, false)).await;

    // A deleted group's row goes away with it (GraphQL no longer finds the group at all).
    let deleted = app
        .data(
            &app.admin,
            "mutation($input: DeleteGroupInput!) { deleteGroup(input: $input) { userErrors { code message } } }",
            json!({ "input": { "id": edge } }),
        )
        .await;
    assert_eq!(deleted["deleteGroup"]["userErrors"], json!([]), "{deleted}");
    let mut rows = -1_i64;
    for _ in 0..200 {
        rows = sqlx::query_scalar(
            "SELECT count(*) FROM rm_group_capabilities.capabilities WHERE group_id = $1::uuid",
        )
        .bind(&edge)
        .fetch_one(&app.pool)
        .await
        .expect("rows");
        if rows == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(rows, 0);
    assert_eq!(pass(&app).await, 0, "nothing to do for a deleted group");
    app.shutdown().await;
}
