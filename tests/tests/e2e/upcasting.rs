//! Stored events of an older version are upcast when Corral loads an aggregate: a version-1
//! `GroupUpdated` (without `previous`) written straight into the log, read through the plain
//! load, a snapshot plus the events after it, and a full replay after an unusable snapshot.

use corral_domain::group::GroupCommand;
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::commands::executor::SNAPSHOT_EVERY;
use corral_projections::commands::groups::GroupCommands;
use corral_tests::TestApp;
use serde_json::{json, Value};
use sqlx::PgPool;

const RENAME: &str = "mutation($input: RenameGroupInput!) { renameGroup(input: $input) { group { name version } userErrors { code message } } }";
const UPDATE: &str = "mutation($input: UpdateGroupInput!) { updateGroup(input: $input) { group { description metadata version } userErrors { code message } } }";

/// Writes a version-1 `GroupUpdated` as the group's next event, with the metadata of its
/// first event (as postgres-es stores it). Returns its sequence.
async fn write_v1_update(pool: &PgPool, id: &str, description: &str, metadata: Value) -> i64 {
    write_group_updated(
        pool,
        id,
        "1",
        json!({ "GroupUpdated": { "description": description, "metadata": metadata } }),
    )
    .await
}

async fn write_group_updated(pool: &PgPool, id: &str, version: &str, payload: Value) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'Group', $1, max(sequence) + 1, 'GroupUpdated', $2, $3,
                (SELECT metadata FROM events WHERE aggregate_type = 'Group' AND aggregate_id = $1 AND sequence = 1)
           FROM events WHERE aggregate_type = 'Group' AND aggregate_id = $1
         RETURNING sequence",
    )
    .bind(id)
    .bind(version)
    .bind(payload)
    .fetch_one(pool)
    .await
    .expect("insert a GroupUpdated")
}

/// `(event_version, payload)` of a group's event.
async fn stored(pool: &PgPool, id: &str, sequence: i64) -> (String, Value) {
    sqlx::query_as(
        "SELECT event_version, payload FROM events
          WHERE aggregate_type = 'Group' AND aggregate_id = $1 AND sequence = $2",
    )
    .bind(id)
    .bind(sequence)
    .fetch_one(pool)
    .await
    .expect("stored event")
}

#[tokio::test]
async fn a_v1_group_updated_in_the_log_is_upcast_and_new_updates_are_v2() {
    let app = TestApp::spawn().await;
    let id = app.create_group("Legacy", None).await;
    let v1 = write_v1_update(&app.pool, &id, "from v1", json!({"rack": "R1"})).await;
    assert_eq!(v1, 2);

    // Loading the group folds the v1 event: without the upcaster it does not deserialize.
    let r = app
        .data(
            &app.admin,
            RENAME,
            json!({ "input": { "id": id, "name": "Legacy-2", "expectedVersion": 2 } }),
        )
        .await;
    assert_eq!(
        r["renameGroup"],
        json!({ "group": { "name": "Legacy-2", "version": 3 }, "userErrors": [] })
    );

    // The group-tree projector read the v1 payload's raw fields.
    let q = "query($id: ID!) { group(id: $id) { description metadata } }";
    let g = app.data(&app.viewer, q, json!({ "id": id })).await["group"].clone();
    assert_eq!(
        g,
        json!({ "description": "from v1", "metadata": {"rack": "R1"} })
    );

    // A new update is version 2 and records what it replaced: the v1 event's values.
    let r = app
        .data(
            &app.admin,
            UPDATE,
            json!({ "input": { "id": id, "description": "from v2", "expectedVersion": 3 } }),
        )
        .await;
    assert_eq!(r["updateGroup"]["userErrors"], json!([]), "{r}");
    assert_eq!(r["updateGroup"]["group"]["description"], "from v2");
    let (version, payload) = stored(&app.pool, &id, 4).await;
    assert_eq!(version, "2");
    assert_eq!(
        payload,
        json!({ "GroupUpdated": {
            "description": "from v2",
            "metadata": {"rack": "R1"},
            "previous": { "description": "from v1", "metadata": {"rack": "R1"} }
        } })
    );
    // The stored v1 event itself is never rewritten.
    let (version, payload) = stored(&app.pool, &id, 2).await;
    assert_eq!(version, "1");
    assert!(payload["GroupUpdated"].get("previous").is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn v1_events_after_a_snapshot_and_in_full_replays_are_upcast() {
    let app = TestApp::spawn().await;
    let id = app.create_group("Busy", None).await;
    let gid: uuid::Uuid = id.parse().expect("uuid");
    let meta = EventMetadata::system(Source::Cli, "test");
    for i in 0..SNAPSHOT_EVERY {
        let cmd = GroupCommand::Update {
            id: gid,
            description: Some(format!("d{i}")),
            metadata: None,
        };
        app.state
            .groups
            .execute(cmd, None, &meta)
            .await
            .expect("update");
    }
    let snapshot: i64 = sqlx::query_scalar(
        "SELECT version FROM aggregate_snapshots WHERE aggregate_type = 'Group' AND aggregate_id = $1",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .expect("a snapshot");
    let v1 = write_v1_update(&app.pool, &id, "after the snapshot", json!({"k": 1})).await;
    assert!(v1 > snapshot, "the v1 event follows the snapshot");

    // A fresh executor (nothing cached) loads the snapshot plus the v1 event after it.
    let fresh = || GroupCommands::new(app.pool.clone(), app.pool.clone(), Default::default());
    let update = |description: &str| GroupCommand::Update {
        id: gid,
        description: Some(description.into()),
        metadata: None,
    };
    let done = fresh()
        .execute(update("after snapshot + tail"), Some(v1 as u64), &meta)
        .await
        .expect("update after a snapshot and a v1 event");
    assert_eq!(done.version, v1 as u64 + 1);
    let (version, payload) = stored(&app.pool, &id, v1 + 1).await;
    assert_eq!(version, "2");
    assert_eq!(
        payload["GroupUpdated"]["previous"],
        json!({ "description": "after the snapshot", "metadata": {"k": 1} })
    );

    // An unusable snapshot means a full replay, which upcasts too.
    let v1_again = write_v1_update(&app.pool, &id, "replayed", json!({"k": 2})).await;
    sqlx::query(
        "UPDATE aggregate_snapshots SET state = '{\"shape\": \"from an older release\"}'
          WHERE aggregate_type = 'Group' AND aggregate_id = $1",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .expect("corrupt the snapshot");
    let done = fresh()
        .execute(update("after a replay"), Some(v1_again as u64), &meta)
        .await
        .expect("update after a full replay");
    assert_eq!(done.version, v1_again as u64 + 1);
    let (_, payload) = stored(&app.pool, &id, v1_again + 1).await;
    assert_eq!(
        payload["GroupUpdated"]["previous"],
        json!({ "description": "replayed", "metadata": {"k": 2} })
    );

    // A version newer than this Corral understands is a clear error, not a misreading.
    let future = write_group_updated(
        &app.pool,
        &id,
        "3",
        json!({ "GroupUpdated": { "description": "v3", "metadata": {}, "previous": null, "new": 1 } }),
    )
    .await;
    let err = fresh()
        .execute(update("after a future event"), Some(future as u64), &meta)
        .await
        .expect_err("a future version is refused");
    let message = err.to_string();
    assert!(
        message.contains("newer than this Corral understands"),
        "{message}"
    );
    app.shutdown().await;
}
