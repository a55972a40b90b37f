//! Conflicting mutations sent at once: exactly one wins, the others get a clear userError and
//! change nothing.

use serde_json::json;

use super::support::{create_group, user_error, Suite};

const RENAME: &str = "mutation($i: RenameGroupInput!) { renameGroup(input: $i) { group { name version } userErrors { field code } } }";
const CREATE: &str = "mutation($i: CreateGroupInput!) { createGroup(input: $i) { group { id } userErrors { field code } } }";

pub async fn run(suite: &Suite) {
    let id = create_group(suite, "contested").await;
    let version = suite
        .gql(
            &suite.served.viewer,
            "query($id: ID!) { group(id: $id) { version } }",
            json!({ "id": id }),
        )
        .await
        .json()["data"]["group"]["version"]
        .as_i64()
        .expect("version");
    let events = suite.fingerprint().await;

    super::support::set_phase("concurrent renames");
    // Twenty renames from the same version: one wins, nineteen conflict.
    let renames = (0..20).map(|i| {
        suite.gql(
            &suite.served.admin,
            RENAME,
            json!({ "i": { "id": id, "name": format!("renamed-{i}"), "expectedVersion": version } }),
        )
    });
    let answers = futures::future::join_all(renames).await;
    let mut won = 0;
    for r in &answers {
        let body = r.json();
        if body["data"]["renameGroup"]["userErrors"] == json!([]) {
            won += 1;
        } else {
            assert_eq!(
                user_error(&body, "renameGroup"),
                "VERSION_CONFLICT",
                "{body}"
            );
        }
    }
    assert_eq!(won, 1, "exactly one rename wins");

    super::support::set_phase("concurrent creates");
    // Twenty creates of one name under one parent: one group, nineteen NAME_TAKEN.
    let creates = (0..20).map(|_| {
        suite.gql(
            &suite.served.admin,
            CREATE,
            json!({ "i": { "name": "twin", "type": "DEVICE", "parentId": id } }),
        )
    });
    let answers = futures::future::join_all(creates).await;
    let mut created = 0;
    for r in &answers {
        let body = r.json();
        if body["data"]["createGroup"]["group"].is_object() {
            created += 1;
        } else {
            assert_eq!(user_error(&body, "createGroup"), "NAME_TAKEN", "{body}");
        }
    }
    assert_eq!(created, 1, "exactly one group is created");

    let renamed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'GroupRenamed'",
    )
    .bind(&id)
    .fetch_one(&suite.pool)
    .await
    .expect("count");
    assert_eq!(renamed, 1, "the losers' renames were not applied");
    let children: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM group_registry WHERE parent_id = $1::uuid AND NOT deleted",
    )
    .bind(&id)
    .fetch_one(&suite.pool)
    .await
    .expect("count");
    assert_eq!(children, 1, "one twin");
    assert_ne!(suite.fingerprint().await, events);
}
