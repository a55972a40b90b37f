//! Static membership, exclusions and effective membership through GraphQL.

use corral_tests::TestApp;
use serde_json::{json, Value};

pub(crate) const ADD: &str = "mutation($input: GroupMembersInput!) { addGroupMembers(input: $input) { changed position waitTimedOut userErrors { field code message } } }";
const REMOVE: &str = "mutation($input: GroupMembersInput!) { removeGroupMembers(input: $input) { changed userErrors { code message } } }";
const EXCLUDE: &str = "mutation($input: GroupMembersInput!) { excludeGroupMembers(input: $input) { changed userErrors { code message } } }";
const UNEXCLUDE: &str = "mutation($input: GroupMembersInput!) { unexcludeGroupMembers(input: $input) { changed userErrors { code message } } }";
const MEMBERS: &str = "query($id: ID!, $mode: MembershipMode, $first: Int, $after: String) { group(id: $id) { memberCount(mode: $mode) members(mode: $mode, first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { cursor source viaGroup { name } node { ... on Device { id hostname } } } } } }";

/// Inserts devices `prefix0..prefix{n-1}` straight into the inventory table.
pub(crate) async fn devices(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i:05}")).collect();
    sqlx::query(
        "INSERT INTO devices (id, hostname, is_available)
         SELECT x, 'host-' || x, true FROM unnest($1::text[]) x",
    )
    .bind(&ids)
    .execute(&app.pool)
    .await
    .expect("insert devices");
    ids
}

pub(crate) async fn add(app: &TestApp, group: &str, ids: &[String]) -> Value {
    app.data(
        &app.operator,
        ADD,
        json!({ "input": { "groupId": group, "memberIds": ids } }),
    )
    .await["addGroupMembers"]
        .clone()
}

/// Member ids of a group, all pages. A walk that goes stale (`CURSOR_STALE`: members changed
/// while it paged, e.g. the rule evaluator still adding) starts again from the first page, as
/// a client would.
pub(crate) async fn member_ids(app: &TestApp, group: &str, mode: &str) -> Vec<String> {
    let mut out = vec![];
    let mut after = Value::Null;
    let mut restarts = 0;
    loop {
        let body = app
            .gql(
                &app.viewer,
                MEMBERS,
                json!({ "id": group, "mode": mode, "first": 7, "after": after }),
            )
            .await;
        if body["errors"][0]["extensions"]["code"] == "CURSOR_STALE" && restarts < 50 {
            restarts += 1;
            out.clear();
            after = Value::Null;
            continue;
        }
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        let data = &body["data"];
        let conn = &data["group"]["members"];
        for e in conn["edges"].as_array().expect("edges") {
            out.push(e["node"]["id"].as_str().expect("id").to_string());
        }
        if !conn["pageInfo"]["hasNextPage"]
            .as_bool()
            .expect("hasNextPage")
        {
            return out;
        }
        after = conn["pageInfo"]["endCursor"].clone();
    }
}

fn codes(payload: &Value) -> Vec<String> {
    payload["userErrors"]
        .as_array()
        .expect("userErrors")
        .iter()
        .map(|e| e["code"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn static_members_are_added_idempotently_and_validated() {
    let app = TestApp::spawn().await;
    let g = app.create_group("Edge", None).await;
    let ids = devices(&app, "d", 12).await;
    let first = add(&app, &g, &ids[..8]).await;
    assert_eq!(first["userErrors"], json!([]));
    assert_eq!(first["changed"], 8);
    assert_eq!(first["waitTimedOut"], false);
    // Overlapping add: only the new ids count, and a repeat emits nothing.
    let second = add(&app, &g, &ids[4..]).await;
    assert_eq!(second["changed"], 4);
    let before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Membership'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    let again = add(&app, &g, &ids).await;
    assert_eq!(again["changed"], 0);
    assert_eq!(again["userErrors"], json!([]));
    let after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Membership'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(
        before, after,
        "an existing member is a no-op and emits nothing"
    );
    // Read-your-writes: all twelve, in id order, across pages.
    assert_eq!(member_ids(&app, &g, "DIRECT").await, ids);
    let data = app
        .data(&app.viewer, MEMBERS, json!({ "id": g, "first": 2 }))
        .await;
    assert_eq!(data["group"]["memberCount"], 12);
    assert_eq!(data["group"]["members"]["totalCount"], 12);
    assert_eq!(data["group"]["members"]["edges"][0]["source"], "STATIC");
    assert_eq!(
        data["group"]["members"]["edges"][0]["viaGroup"]["name"],
        "Edge"
    );

    // Unknown ids reject the whole call, listing them.
    let mut mixed = vec!["d00000".to_string()];
    mixed.extend((0..150).map(|i| format!("ghost-{i}")));
    let bad = add(&app, &g, &mixed).await;
    assert_eq!(codes(&bad), vec!["UNKNOWN_MEMBER"]);
    let message = bad["userErrors"][0]["message"].as_str().expect("message");
    assert!(message.starts_with("150 unknown"), "{message}");
    assert!(
        message.contains("ghost-99") && !message.contains("ghost-100"),
        "lists at most 100: {message}"
    );
    // A service id in a device group.
    sqlx::query("INSERT INTO services (id, device_id, type, name) VALUES ('svc-1', 'd00000', 'http', 'web')")
        .execute(&app.pool)
        .await
        .expect("service");
    let bad = add(&app, &g, &["svc-1".to_string()]).await;
    assert_eq!(codes(&bad), vec!["TYPE_MISMATCH"]);
    // Limits.
    let too_many: Vec<String> = (0..10_001).map(|i| format!("x{i}")).collect();
    assert_eq!(codes(&add(&app, &g, &too_many).await), vec!["INVALID"]);
    assert_eq!(codes(&add(&app, &g, &[]).await), vec!["INVALID"]);
    let missing = add(&app, "00000000-0000-0000-0000-000000000001", &ids[..1]).await;
    assert_eq!(codes(&missing), vec!["NOT_FOUND"]);
    // Viewers may not edit memberships.
    let denied = app
        .gql(
            &app.viewer,
            ADD,
            json!({ "input": { "groupId": g, "memberIds": ["d00000"] } }),
        )
        .await;
    assert_eq!(denied["errors"][0]["extensions"]["code"], "FORBIDDEN");

    let removed = app
        .data(
            &app.operator,
            REMOVE,
            json!({ "input": { "groupId": g, "memberIds": ["d00000", "d00001", "ghost"] } }),
        )
        .await;
    assert_eq!(removed["removeGroupMembers"]["changed"], 2);
    assert_eq!(member_ids(&app, &g, "DIRECT").await, ids[2..].to_vec());
    app.shutdown().await;
}

#[tokio::test]
async fn effective_membership_follows_the_tree_and_moves_at_once() {
    let app = TestApp::spawn().await;
    let a = app.create_group("A", None).await;
    let b = app.create_group("B", Some(&a)).await;
    let c = app.create_group("C", Some(&b)).await;
    let other = app.create_group("Other", None).await;
    let ids = devices(&app, "e", 10).await;
    add(&app, &a, &ids[0..2]).await;
    add(&app, &b, &ids[1..5]).await;
    add(&app, &c, &ids[4..8]).await;
    add(&app, &other, &ids[8..10]).await;
    assert_eq!(member_ids(&app, &a, "EFFECTIVE").await, ids[0..8].to_vec());
    assert_eq!(member_ids(&app, &b, "EFFECTIVE").await, ids[1..8].to_vec());
    assert_eq!(member_ids(&app, &a, "DIRECT").await, ids[0..2].to_vec());
    let data = app
        .data(
            &app.viewer,
            MEMBERS,
            json!({ "id": a, "mode": "EFFECTIVE", "first": 100 }),
        )
        .await;
    assert_eq!(data["group"]["memberCount"], 8);
    assert_eq!(data["group"]["members"]["totalCount"], 8);
    let via: Vec<&str> = data["group"]["members"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["viaGroup"]["name"].as_str().expect("via"))
        .collect();
    // The nearest group holding each member: e1 is in A itself and in B.
    assert_eq!(via, vec!["A", "A", "B", "B", "B", "C", "C", "C"]);

    // Moving C under Other changes both sides in the same mutation.
    let moved = app
        .data(
            &app.admin,
            "mutation($input: MoveGroupInput!) { moveGroup(input: $input) { userErrors { code } } }",
            json!({ "input": { "id": c, "newParentId": other } }),
        )
        .await;
    assert_eq!(moved["moveGroup"]["userErrors"], json!([]));
    assert_eq!(member_ids(&app, &a, "EFFECTIVE").await, ids[0..5].to_vec());
    assert_eq!(
        member_ids(&app, &other, "EFFECTIVE").await,
        ids[4..10].to_vec()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_big_subtree_is_paged_by_member_with_the_same_answers() {
    let app = TestApp::spawn().await;
    // More than 20,000 rows in the subtree: the by-member plan (its statistics are read on
    // the first query, after the adds).
    let a = app.create_group("A", None).await;
    let b = app.create_group("B", Some(&a)).await;
    let ids = devices(&app, "e", 5).await;
    add(&app, &a, &ids[0..2]).await;
    add(&app, &b, &ids[1..5]).await;
    let many = devices(&app, "m", 25_000).await;
    for chunk in many.chunks(10_000) {
        assert_eq!(add(&app, &b, chunk).await["userErrors"], json!([]));
    }
    add(&app, &a, &many[..100]).await;
    let data = app
        .data(
            &app.viewer,
            MEMBERS,
            json!({ "id": a, "mode": "EFFECTIVE", "first": 3 }),
        )
        .await;
    let edges = &data["group"]["members"]["edges"];
    assert_eq!(edges[0]["node"]["id"], "e00000");
    assert_eq!(data["group"]["memberCount"], 25_005);
    let page = app
        .data(
            &app.viewer,
            MEMBERS,
            json!({ "id": a, "mode": "EFFECTIVE", "first": 4, "after": edges[2]["cursor"] }),
        )
        .await;
    let got: Vec<(&str, &str)> = page["group"]["members"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (
                e["node"]["id"].as_str().expect("id"),
                e["viaGroup"]["name"].as_str().expect("via"),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("e00003", "B"),
            ("e00004", "B"),
            ("m00000", "A"),
            ("m00001", "A")
        ],
        "by-member plan: distinct, ordered, nearest group"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn exclusion_beats_static_membership_and_can_be_lifted() {
    let app = TestApp::spawn().await;
    let g = app.create_group("G", None).await;
    let ids = devices(&app, "x", 3).await;
    add(&app, &g, &ids).await;
    let input = json!({ "input": { "groupId": g, "memberIds": [ids[1]] } });
    let ex = app.data(&app.operator, EXCLUDE, input.clone()).await;
    assert_eq!(ex["excludeGroupMembers"]["changed"], 1);
    assert_eq!(
        member_ids(&app, &g, "DIRECT").await,
        vec![ids[0].clone(), ids[2].clone()]
    );
    let explain = app
        .data(
            &app.viewer,
            "query($g: ID!, $m: String!) { explainMembership(groupId: $g, memberId: $m) { member staticEntry excluded known reasons { source } } }",
            json!({ "g": g, "m": ids[1] }),
        )
        .await["explainMembership"]
        .clone();
    assert_eq!(
        explain,
        json!({ "member": false, "staticEntry": true, "excluded": true, "known": true, "reasons": [] })
    );
    let un = app.data(&app.operator, UNEXCLUDE, input).await;
    assert_eq!(un["unexcludeGroupMembers"]["changed"], 1);
    assert_eq!(member_ids(&app, &g, "DIRECT").await, ids);
    app.shutdown().await;
}

#[tokio::test]
async fn twenty_concurrent_adds_of_disjoint_ids_to_one_group_all_land() {
    let app = TestApp::spawn().await;
    let g = app.create_group("Busy", None).await;
    let ids = devices(&app, "c", 20 * 50).await;
    let app = std::sync::Arc::new(app);
    let mut tasks = vec![];
    for chunk in ids.chunks(50) {
        let (app, g, chunk) = (app.clone(), g.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move { add(&app, &g, &chunk).await }));
    }
    for t in tasks {
        let payload = t.await.expect("task");
        assert_eq!(payload["userErrors"], json!([]), "{payload}");
        assert_eq!(payload["changed"], 50);
    }
    assert_eq!(member_ids(&app, &g, "DIRECT").await.len(), 1000);
    let app = std::sync::Arc::into_inner(app).expect("sole owner");
    app.shutdown().await;
}

#[tokio::test]
async fn deleting_a_group_removes_its_memberships_as_events() {
    let app = TestApp::spawn().await;
    let g = app.create_group("Doomed", None).await;
    let ids = devices(&app, "z", 1500).await;
    add(&app, &g, &ids).await;
    app.data(
        &app.operator,
        EXCLUDE,
        json!({ "input": { "groupId": g, "memberIds": [ids[0]] } }),
    )
    .await;
    let deleted = app
        .data(
            &app.admin,
            "mutation($input: DeleteGroupInput!) { deleteGroup(input: $input) { deletedId userErrors { code } } }",
            json!({ "input": { "id": g } }),
        )
        .await;
    assert_eq!(deleted["deleteGroup"]["userErrors"], json!([]));
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM membership_registry WHERE group_id = $1::uuid")
            .bind(&g)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(left, 0);
    let removed: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_type, sum(jsonb_array_length(payload -> event_type -> 'member_ids'))::bigint
           FROM events WHERE aggregate_type = 'Membership' AND aggregate_id = $1
            AND event_type IN ('MembersRemoved', 'MembersUnexcluded')
          GROUP BY event_type ORDER BY event_type",
    )
    .bind(&g)
    .fetch_all(&app.pool)
    .await
    .expect("events");
    assert_eq!(
        removed,
        vec![
            ("MembersRemoved".to_string(), 1500),
            ("MembersUnexcluded".to_string(), 1)
        ]
    );
    // Each event carries at most 1000 ids.
    let biggest: i64 = sqlx::query_scalar(
        "SELECT max(jsonb_array_length(payload -> event_type -> 'member_ids'))::bigint FROM events WHERE aggregate_type = 'Membership'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("max");
    assert_eq!(biggest, 1000);
    // Edits to a deleted group are refused.
    assert_eq!(codes(&add(&app, &g, &ids[..1]).await), vec!["NOT_FOUND"]);
    app.shutdown().await;
}
