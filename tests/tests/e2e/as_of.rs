//! "Which groups was d1 in an hour ago, and why?": `device.groups(mode, asOf | atPosition,
//! tree)` and `explainMembership(..., asOf | atPosition, tree)` answer with the memberships,
//! the reasons, the rule, the device's values and the tree of then.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use corral_tests::TestApp;
use serde_json::{json, Value};

use super::membership::{add, member_ids};

const UPSERT: &str = "mutation($i: UpsertDevicesInput!) { upsertDevices(input: $i) { upserted userErrors { code message } } }";
const GROUPS: &str =
    "query($id: ID!, $mode: MembershipMode, $p: Position, $t: DateTime, $tree: MembershipTree) {
  device(id: $id) { groups(mode: $mode, atPosition: $p, asOf: $t, tree: $tree) {
    group { id name path asOfPosition } reasons { viaGroupId source } } } }";
const EXPLAIN: &str =
    "query($g: ID!, $m: String!, $p: Position, $t: DateTime, $tree: MembershipTree) {
  explainMembership(groupId: $g, memberId: $m, atPosition: $p, asOf: $t, tree: $tree) {
    member directMember staticEntry ruleEntry excluded known rule ruleVersion ruleMatches
    asOfPosition clauses { clause matched } device { id hostname }
    reasons { viaGroupId source } } }";

async fn upsert(app: &TestApp, hostname: &str) {
    let data = app
        .data(
            &app.admin,
            UPSERT,
            json!({"i": {"devices": [{"id": "d1", "hostname": hostname}]}}),
        )
        .await;
    assert_eq!(data["upsertDevices"]["userErrors"], json!([]));
}

async fn head(app: &TestApp) -> i64 {
    app.data(&app.admin, "{ auditChainHead { position } }", json!({}))
        .await["auditChainHead"]["position"]
        .as_str()
        .expect("position")
        .parse()
        .expect("decimal")
}

async fn groups(app: &TestApp, token: &str, vars: Value) -> Vec<(String, Vec<String>)> {
    let data = app.data(token, GROUPS, vars).await;
    let mut out: Vec<(String, Vec<String>)> = data["device"]["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("groups: {data}"))
        .iter()
        .map(|m| {
            let via = m["reasons"]
                .as_array()
                .expect("reasons")
                .iter()
                .map(|r| {
                    format!(
                        "{}:{}",
                        r["source"].as_str().unwrap_or(""),
                        r["viaGroupId"].as_str().unwrap_or("")
                    )
                })
                .collect();
            (m["group"]["id"].as_str().expect("id").to_string(), via)
        })
        .collect();
    out.sort();
    out
}

/// Polls until `check` holds.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}: never");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn clock(app: &TestApp) -> DateTime<Utc> {
    let t: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&app.pool)
        .await
        .expect("clock");
    tokio::time::sleep(Duration::from_millis(5)).await;
    t
}

#[tokio::test]
async fn which_groups_was_d1_in_and_why_as_of_then() {
    let app = TestApp::spawn().await;
    let site = app.create_group("Site", None).await;
    let rack = app.create_group("Rack", Some(&site)).await;
    let other = app.create_group("Other", None).await;
    upsert(&app, "web-1").await;
    let set = app
        .data(
            &app.admin,
            "mutation($g: ID!) { setGroupRule(input: {groupId: $g, rule: \"hostname:web%\"}) { userErrors { code message } } }",
            json!({"g": rack}),
        )
        .await;
    assert_eq!(set["setGroupRule"]["userErrors"], json!([]));
    eventually("the rule puts d1 in Rack", || async {
        member_ids(&app, &rack, "DIRECT").await == vec!["d1".to_string()]
    })
    .await;
    // The rule's MembersAdded is sequenced: the log then holds d1 in Rack.
    let then = {
        let start = Instant::now();
        loop {
            let p = head(&app).await;
            let found = groups(
                &app,
                &app.admin,
                json!({"id": "d1", "mode": "DIRECT", "p": p.to_string()}),
            )
            .await;
            if !found.is_empty() {
                break p;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "never sequenced");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let t_then = clock(&app).await;

    // Since then: Rack moved under Other, d1 renamed out of the rule, and added to Other.
    let moved = app
        .data(
            &app.admin,
            "mutation($g: ID!, $p: ID!) { moveGroup(input: {id: $g, newParentId: $p}) { userErrors { code } } }",
            json!({"g": rack, "p": other}),
        )
        .await;
    assert_eq!(moved["moveGroup"]["userErrors"], json!([]));
    upsert(&app, "db-1").await;
    eventually("the rule drops d1", || async {
        member_ids(&app, &rack, "DIRECT").await.is_empty()
    })
    .await;
    add(&app, &other, &["d1".to_string()]).await;

    let rule = |g: &str| vec![format!("RULE:{g}")];
    // Groups created without a parent sit under the system root.
    let root = app
        .data(
            &app.admin,
            "query($id: ID!) { group(id: $id) { parent { id } } }",
            json!({"id": site}),
        )
        .await["group"]["parent"]["id"]
        .as_str()
        .expect("the system root")
        .to_string();
    // Then, in the tree of then: Rack by its rule, and Site and the root through Rack.
    let mut expected = vec![
        (rack.clone(), rule(&rack)),
        (site.clone(), rule(&rack)),
        (root.clone(), rule(&rack)),
    ];
    expected.sort();
    let at = json!({"id": "d1", "mode": "EFFECTIVE", "p": then.to_string()});
    assert_eq!(groups(&app, &app.admin, at.clone()).await, expected);
    // The same instant by time.
    let by_time = json!({"id": "d1", "mode": "EFFECTIVE", "t": t_then.to_rfc3339()});
    assert_eq!(groups(&app, &app.admin, by_time).await, expected);
    // The group as it was then: under Site.
    let data = app.data(&app.admin, GROUPS, at.clone()).await;
    let rack_then = data["device"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|m| m["group"]["id"] == json!(rack))
        .expect("rack")
        .clone();
    assert_eq!(rack_then["group"]["path"], "Inventory/Site/Rack");
    assert_eq!(rack_then["group"]["asOfPosition"], json!(then.to_string()));
    // Then, in today's tree: Rack's ancestor is Other now.
    let mut now_tree = vec![
        (rack.clone(), rule(&rack)),
        (other.clone(), rule(&rack)),
        (root.clone(), rule(&rack)),
    ];
    now_tree.sort();
    let at_now_tree =
        json!({"id": "d1", "mode": "EFFECTIVE", "p": then.to_string(), "tree": "NOW"});
    assert_eq!(groups(&app, &app.admin, at_now_tree).await, now_tree);
    // Direct only.
    let direct = json!({"id": "d1", "mode": "DIRECT", "p": then.to_string()});
    assert_eq!(
        groups(&app, &app.admin, direct).await,
        vec![(rack.clone(), rule(&rack))]
    );
    // Now: only Other, statically.
    let live = json!({"id": "d1", "mode": "EFFECTIVE"});
    let mut expected_live = vec![
        (other.clone(), vec![format!("STATIC:{other}")]),
        (root.clone(), vec![format!("STATIC:{other}")]),
    ];
    expected_live.sort();
    assert_eq!(groups(&app, &app.admin, live).await, expected_live);
    // `tree` without a position is refused.
    let bad = app
        .gql(&app.admin, GROUPS, json!({"id": "d1", "tree": "NOW"}))
        .await;
    assert_eq!(
        bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{bad}"
    );

    // Why, then: the rule of then matched the device's values of then.
    let explain = app
        .data(
            &app.admin,
            EXPLAIN,
            json!({"g": rack, "m": "d1", "p": then.to_string()}),
        )
        .await["explainMembership"]
        .clone();
    assert_eq!(explain["member"], true, "{explain}");
    assert_eq!(explain["directMember"], true);
    assert_eq!(explain["ruleEntry"], true);
    assert_eq!(explain["staticEntry"], false);
    assert_eq!(explain["known"], true);
    assert_eq!(explain["rule"], "in:devices hostname:web%");
    assert_eq!(explain["ruleVersion"], 1);
    assert_eq!(explain["ruleMatches"], true);
    assert_eq!(explain["device"]["hostname"], "web-1");
    assert_eq!(explain["asOfPosition"], json!(then.to_string()));
    assert!(
        explain["clauses"]
            .as_array()
            .expect("clauses")
            .iter()
            .all(|c| c["matched"] == true),
        "{explain}"
    );
    // Why not, now: the device's values of now do not match.
    let live = app
        .data(&app.admin, EXPLAIN, json!({"g": rack, "m": "d1"}))
        .await["explainMembership"]
        .clone();
    assert_eq!(live["member"], false, "{live}");
    assert_eq!(live["ruleEntry"], false);
    assert_eq!(live["ruleMatches"], false);
    assert_eq!(live["device"]["hostname"], "db-1");
    assert_eq!(live["asOfPosition"], Value::Null);
    assert_eq!(live["ruleVersion"], 1);

    // A viewer bound to Other reads Rack (under Other now) but not Site.
    let scoped = app.scoped_token("vic", "viewer", &other).await;
    let at = json!({"id": "d1", "mode": "EFFECTIVE", "p": then.to_string()});
    assert_eq!(
        groups(&app, &scoped, at).await,
        vec![(rack.clone(), rule(&rack))]
    );
    app.shutdown().await;
}
