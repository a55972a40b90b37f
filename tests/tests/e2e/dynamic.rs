//! Dynamic groups: rules saved through GraphQL and evaluated by the rule worker, on rule
//! change, on inventory change and on a schedule.

use std::time::{Duration, Instant};

use corral_tests::TestApp;
use serde_json::{json, Value};

use super::membership::{add, devices, member_ids};

const SET_RULE: &str = "mutation($input: SetGroupRuleInput!) { setGroupRule(input: $input) { group { id version rule { text enabled version } } warnings userErrors { field code message } } }";
const RULE: &str = "query($id: ID!) { group(id: $id) { rule { text json enabled version lastRunAt lastRunStatus lastMatchCount lastError ruleVersion lastCause } } }";

async fn set_rule(app: &TestApp, group: &str, rule: &str, enabled: bool) -> Value {
    app.data(
        &app.admin,
        SET_RULE,
        json!({ "input": { "groupId": group, "rule": rule, "enabled": enabled } }),
    )
    .await["setGroupRule"]
        .clone()
}

/// Waits until the group's rule has been evaluated at `version`.
async fn evaluated(app: &TestApp, group: &str, version: i64) -> Value {
    let start = Instant::now();
    loop {
        let rule =
            app.data(&app.viewer, RULE, json!({ "id": group })).await["group"]["rule"].clone();
        if rule["ruleVersion"] == version && !rule["lastRunAt"].is_null() {
            return rule;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "rule never evaluated: {rule}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until `check` holds for the group's direct members.
async fn eventually(app: &TestApp, group: &str, check: impl Fn(&[String]) -> bool) -> Vec<String> {
    let start = Instant::now();
    loop {
        let ids = member_ids(app, group, "DIRECT").await;
        if check(&ids) {
            return ids;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "members never converged: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_rule_fills_the_group_and_follows_inventory_changes() {
    let app = TestApp::spawn().await;
    let g = app.create_group("Web", None).await;
    sqlx::query(
        "INSERT INTO devices (id, hostname, vendor, is_available, tags) VALUES
            ('d1', 'web-01', 'Cisco', true, '{\"env\": \"prod\"}'),
            ('d2', 'web-02', 'Juniper', true, '{}'),
            ('d3', 'db-01', 'Cisco', true, '{\"env\": \"prod\"}'),
            ('d4', 'WEB-04', 'Cisco', false, '{}')",
    )
    .execute(&app.pool)
    .await
    .expect("devices");
    let saved = set_rule(&app, &g, "hostname:web% vendor_name:Cisco", true).await;
    assert_eq!(saved["userErrors"], json!([]));
    assert_eq!(saved["group"]["rule"]["version"], 1);
    let rule = evaluated(&app, &g, 1).await;
    assert_eq!(rule["lastRunStatus"], "OK");
    assert_eq!(
        rule["lastMatchCount"], 2,
        "% is a case-insensitive LIKE: web-01 and WEB-04"
    );
    assert_eq!(rule["lastCause"], "rule_changed");
    assert_eq!(
        eventually(&app, &g, |ids| ids.len() == 2).await,
        vec!["d1", "d4"]
    );
    let edge = app
        .data(
            &app.viewer,
            "query($id: ID!) { group(id: $id) { members(first: 1) { edges { source } } } }",
            json!({ "id": g }),
        )
        .await;
    assert_eq!(edge["group"]["members"]["edges"][0]["source"], "RULE");
    // The events say RULE, the rule version and the cause.
    let (source, body): (String, Value) = sqlx::query_as(
        "SELECT metadata ->> 'source', payload -> 'MembersAdded' FROM events
          WHERE aggregate_type = 'Membership' AND aggregate_id = $1 ORDER BY sequence LIMIT 1",
    )
    .bind(&g)
    .fetch_one(&app.pool)
    .await
    .expect("event");
    assert_eq!(source, "rule");
    assert_eq!(body["source"], "RULE");
    assert_eq!(body["rule_version"], 1);
    assert_eq!(body["cause"], "rule_changed");

    // Inventory changes are evaluated incrementally: d2 becomes Cisco, d4 is renamed away.
    sqlx::query("UPDATE devices SET vendor = 'Cisco', changed_tx = pg_current_xact_id(), change_seq = nextval('inventory_change_seq'), changed_fields = '{vendor}' WHERE id = 'd2'")
        .execute(&app.pool)
        .await
        .expect("update");
    sqlx::query("UPDATE devices SET hostname = 'lab-04', changed_tx = pg_current_xact_id(), change_seq = nextval('inventory_change_seq'), changed_fields = '{hostname}' WHERE id = 'd4'")
        .execute(&app.pool)
        .await
        .expect("update");
    assert_eq!(
        eventually(&app, &g, |ids| ids == ["d1", "d2"]).await,
        vec!["d1", "d2"]
    );
    let cause: String = sqlx::query_scalar(
        "SELECT payload -> event_type ->> 'cause' FROM events
          WHERE aggregate_type = 'Membership' AND aggregate_id = $1 ORDER BY sequence DESC LIMIT 1",
    )
    .bind(&g)
    .fetch_one(&app.pool)
    .await
    .expect("cause");
    assert!(cause.starts_with("inventory:devices:"), "{cause}");

    // A change to a field the rule does not read changes nothing, and is not re-evaluated
    // against it (the changed_fields index): the member stays.
    sqlx::query("UPDATE devices SET site = 'x', changed_tx = pg_current_xact_id(), change_seq = nextval('inventory_change_seq'), changed_fields = '{site}' WHERE id = 'd1'")
        .execute(&app.pool)
        .await
        .expect("update");

    // Removing a device removes its memberships, static ones too.
    let other = app.create_group("Static", None).await;
    add(&app, &other, &["d1".to_string()]).await;
    sqlx::query("UPDATE devices SET removed_at = now(), changed_tx = pg_current_xact_id(), change_seq = nextval('inventory_change_seq'), changed_fields = NULL WHERE id = 'd1'")
        .execute(&app.pool)
        .await
        .expect("remove");
    assert_eq!(eventually(&app, &g, |ids| ids == ["d2"]).await, vec!["d2"]);
    eventually(&app, &other, |ids| ids.is_empty()).await;

    // Statics and exclusions are never touched by the rule; exclusion wins over a match.
    add(&app, &g, &["d3".to_string()]).await;
    app.data(
        &app.operator,
        "mutation($input: GroupMembersInput!) { excludeGroupMembers(input: $input) { userErrors { code } } }",
        json!({ "input": { "groupId": g, "memberIds": ["d2"] } }),
    )
    .await;
    assert_eq!(member_ids(&app, &g, "DIRECT").await, vec!["d3"]);

    // Disabling the rule removes its entries but keeps the static member.
    let saved = set_rule(&app, &g, "hostname:web% vendor_name:Cisco", false).await;
    assert_eq!(saved["group"]["rule"]["enabled"], false);
    let rule = evaluated(&app, &g, 2).await;
    assert_eq!(rule["lastRunStatus"], "DISABLED");
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM membership_registry WHERE group_id = $1::uuid AND kind = 'R'",
    )
    .bind(&g)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(left, 0);
    assert_eq!(member_ids(&app, &g, "DIRECT").await, vec!["d3"]);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_rules_are_refused_with_their_column() {
    let app = TestApp::spawn().await;
    let g = app.create_group("G", None).await;
    let h = app.create_group("H", Some(&g)).await;
    let bad = set_rule(&app, &g, "hostname:web vendr:Cisco", true).await;
    assert_eq!(bad["userErrors"][0]["code"], "RULE_INVALID");
    let message = bad["userErrors"][0]["message"].as_str().expect("message");
    assert!(message.contains("column 14"), "{message}");
    for rule in [
        "limit:10",
        "sort:hostname",
        "vendor_name:A vendor_name:B",
        "!discovery_sources:snmp",
        "hostname:()",
        "in:services name:x",
        "group:Inventory/Nowhere",
    ] {
        let bad = set_rule(&app, &g, rule, true).await;
        let code = bad["userErrors"][0]["code"].as_str().unwrap_or_default();
        assert!(
            code == "RULE_INVALID" || code == "TYPE_MISMATCH",
            "{rule}: {bad}"
        );
    }
    // group: cycles: G's effective membership includes H's own, so H may not read G...
    let bad = set_rule(&app, &h, &format!("group:{g}"), true).await;
    assert_eq!(bad["userErrors"][0]["code"], "RULE_INVALID", "{bad}");
    // ...but may read G's direct members; and then G may not read H.
    let ok = set_rule(&app, &h, &format!("group:{g}:direct"), true).await;
    assert_eq!(ok["userErrors"], json!([]), "{ok}");
    let bad = set_rule(&app, &g, "group:Inventory/G/H", true).await;
    assert_eq!(bad["userErrors"][0]["code"], "RULE_INVALID", "{bad}");
    // Rules are admin-only.
    let denied = app
        .gql(
            &app.operator,
            SET_RULE,
            json!({ "input": { "groupId": g, "rule": "hostname:x" } }),
        )
        .await;
    assert_eq!(denied["errors"][0]["extensions"]["code"], "FORBIDDEN");
    // An always-true rule saves with a warning.
    let warned = set_rule(&app, &g, "in:devices", true).await;
    assert_eq!(warned["userErrors"], json!([]));
    assert!(
        !warned["warnings"].as_array().expect("warnings").is_empty(),
        "{warned}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_json_form_round_trips_and_paths_become_ids() {
    let app = TestApp::spawn().await;
    let g = app.create_group("G", None).await;
    let h = app.create_group("H", None).await;
    let saved = set_rule(&app, &g, "group:Inventory/H OR hostname:x%", true).await;
    assert_eq!(saved["userErrors"], json!([]));
    let text = saved["group"]["rule"]["text"]
        .as_str()
        .expect("text")
        .to_string();
    assert!(text.contains(&h), "paths are stored as ids: {text}");
    let rule = app.data(&app.viewer, RULE, json!({ "id": g })).await["group"]["rule"].clone();
    // The JSON form saves the same rule (a no-op: same version).
    let again = app
        .data(
            &app.admin,
            SET_RULE,
            json!({ "input": { "groupId": g, "ruleJson": rule["json"] } }),
        )
        .await["setGroupRule"]
        .clone();
    assert_eq!(again["userErrors"], json!([]));
    assert_eq!(again["group"]["rule"]["version"], 1);
    assert_eq!(again["group"]["rule"]["text"], text);
    app.shutdown().await;
}

#[tokio::test]
async fn preview_explain_and_add_by_rule() {
    let app = TestApp::spawn().await;
    let g = app.create_group("G", None).await;
    devices(&app, "p", 30).await;
    let preview = app
        .data(
            &app.viewer,
            "{ previewRule(type: DEVICE, rule: \"hostname:host-p0000%\", first: 3) { valid count countExact sample { ... on Device { id } } normalized errors { column message } } }",
            json!({}),
        )
        .await["previewRule"]
        .clone();
    assert_eq!(preview["valid"], true);
    assert_eq!(preview["count"], 10);
    assert_eq!(
        preview["sample"],
        json!([{ "id": "p00000" }, { "id": "p00001" }, { "id": "p00002" }])
    );
    let bad = app
        .data(
            &app.viewer,
            "{ previewRule(type: DEVICE, rule: \"hostname:x bogus:y\") { valid errors { column message } } }",
            json!({}),
        )
        .await["previewRule"]
        .clone();
    assert_eq!(bad["valid"], false);
    assert_eq!(bad["errors"][0]["column"], 12);

    let added = app
        .data(
            &app.operator,
            "mutation($input: AddGroupMembersByRuleInput!) { addGroupMembersByRule(input: $input) { changed userErrors { code message } } }",
            json!({ "input": { "groupId": g, "rule": "hostname:host-p0001%" } }),
        )
        .await["addGroupMembersByRule"]
        .clone();
    assert_eq!(added["changed"], 10, "{added}");
    let data = app
        .data(
            &app.viewer,
            "query($id: ID!) { group(id: $id) { members(first: 1) { edges { source } } } }",
            json!({ "id": g }),
        )
        .await;
    assert_eq!(data["group"]["members"]["edges"][0]["source"], "STATIC");

    set_rule(&app, &g, "hostname:host-p0002% is_available:true", true).await;
    evaluated(&app, &g, 1).await;
    // The run is recorded once its events commit; the read model follows shortly after.
    eventually(&app, &g, |ids| ids.len() == 20).await;
    let explain = app
        .data(
            &app.viewer,
            "query($g: ID!, $m: String!) { explainMembership(groupId: $g, memberId: $m) { member directMember ruleEntry ruleMatches clauses { clause matched } reasons { source viaGroupId } } }",
            json!({ "g": g, "m": "p00020" }),
        )
        .await["explainMembership"]
        .clone();
    assert_eq!(explain["member"], true);
    assert_eq!(explain["ruleEntry"], true);
    assert_eq!(explain["ruleMatches"], true);
    assert_eq!(explain["reasons"][0]["source"], "RULE");
    assert_eq!(explain["clauses"].as_array().expect("clauses").len(), 2);
    let explain = app
        .data(
            &app.viewer,
            "query($g: ID!, $m: String!) { explainMembership(groupId: $g, memberId: $m) { member ruleMatches clauses { matched } } }",
            json!({ "g": g, "m": "p00000" }),
        )
        .await["explainMembership"]
        .clone();
    assert_eq!(explain["member"], false);
    assert_eq!(explain["ruleMatches"], false);
    assert_eq!(explain["clauses"][0]["matched"], false);
    assert_eq!(explain["clauses"][1]["matched"], true);
    app.shutdown().await;
}

#[tokio::test]
async fn a_rule_over_the_maximum_fails_and_changes_nothing() {
    let config = corral_workers::rules::RuleWorkerConfig {
        max_matches: 5,
        ..Default::default()
    };
    let app = TestApp::spawn_with_rules(config).await;
    let g = app.create_group("G", None).await;
    devices(&app, "q", 6).await;
    set_rule(&app, &g, "hostname:host-q%", true).await;
    let rule = evaluated(&app, &g, 1).await;
    assert_eq!(rule["lastRunStatus"], "FAILED");
    assert!(
        rule["lastError"]
            .as_str()
            .expect("error")
            .contains("maximum of 5"),
        "{rule}"
    );
    assert_eq!(member_ids(&app, &g, "DIRECT").await, Vec::<String>::new());
    app.shutdown().await;
}

#[tokio::test]
async fn relative_times_are_re_evaluated_on_schedule() {
    let config = corral_workers::rules::RuleWorkerConfig {
        schedule_every: Duration::from_millis(300),
        ..Default::default()
    };
    let app = TestApp::spawn_with_rules(config).await;
    let g = app.create_group("Stale", None).await;
    // Seen 7 days minus 2 seconds ago: not yet stale, but soon.
    sqlx::query("INSERT INTO devices (id, last_seen) VALUES ('old', now() - interval '7 days' + interval '2 seconds'), ('new', now())")
        .execute(&app.pool)
        .await
        .expect("devices");
    set_rule(&app, &g, "last_seen:<now-7d", true).await;
    evaluated(&app, &g, 1).await;
    assert_eq!(member_ids(&app, &g, "DIRECT").await, Vec::<String>::new());
    assert_eq!(
        eventually(&app, &g, |ids| !ids.is_empty()).await,
        vec!["old"]
    );
    let cause: String = sqlx::query_scalar(
        "SELECT payload -> event_type ->> 'cause' FROM events
          WHERE aggregate_type = 'Membership' AND aggregate_id = $1 ORDER BY sequence DESC LIMIT 1",
    )
    .bind(&g)
    .fetch_one(&app.pool)
    .await
    .expect("cause");
    assert_eq!(cause, "schedule");
    app.shutdown().await;
}

#[tokio::test]
async fn predefined_dynamic_groups_exist_once() {
    let app = TestApp::spawn().await;
    corral_api::runtime::ensure_predefined_groups(&app.pool, &app.state.groups)
        .await
        .expect("predefined");
    let q = "{ root(type: DEVICE) { children(first: 10) { edges { node { id name rule { text enabled } } } } } }";
    // Created by commands, not a mutation: nothing waited for the read model.
    let start = Instant::now();
    let children = loop {
        let data = app.data(&app.viewer, q, json!({})).await;
        let children = data["root"]["children"]["edges"]
            .as_array()
            .expect("edges")
            .clone();
        if children.len() == 2 || start.elapsed() > Duration::from_secs(10) {
            break children;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let names: Vec<&str> = children
        .iter()
        .map(|e| e["node"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["Offline > 7 days", "Unavailable"]);
    assert_eq!(
        children[1]["node"]["rule"]["text"],
        "in:devices is_available:false"
    );
    // An admin deletes one; the next start does not bring it back.
    let id = children[1]["node"]["id"].clone();
    app.data(
        &app.admin,
        "mutation($input: DeleteGroupInput!) { deleteGroup(input: $input) { userErrors { code } } }",
        json!({ "input": { "id": id } }),
    )
    .await;
    corral_api::runtime::ensure_predefined_groups(&app.pool, &app.state.groups)
        .await
        .expect("predefined");
    let data = app.data(&app.viewer, q, json!({})).await;
    assert_eq!(
        data["root"]["children"]["edges"]
            .as_array()
            .expect("edges")
            .len(),
        1
    );
    app.shutdown().await;
}
