//! Aggregate snapshots keep loading flat, and a bad snapshot is never fatal.

use corral_domain::group::GroupCommand;
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::executor::SNAPSHOT_EVERY;
use corral_tests::TestApp;
use serde_json::json;

#[tokio::test]
async fn long_histories_load_from_snapshots_and_bad_snapshots_fall_back_to_replay() {
    let app = TestApp::spawn().await;
    let id: uuid::Uuid = app.create_group("busy", None).await.parse().expect("uuid");
    let meta = EventMetadata::system(Source::Cli, "test");
    let updates = SNAPSHOT_EVERY * 2 + 10;
    for i in 0..updates {
        let cmd = GroupCommand::Update {
            id,
            description: Some(format!("d{i}")),
            metadata: None,
        };
        app.state
            .groups
            .execute(cmd, None, &meta)
            .await
            .expect("update");
    }
    let (version, state): (i64, serde_json::Value) =
        sqlx::query_as("SELECT version, state FROM aggregate_snapshots WHERE aggregate_type = 'Group' AND aggregate_id = $1")
            .bind(id.to_string())
            .fetch_one(&app.pool)
            .await
            .expect("snapshot");
    assert_eq!(
        version,
        (SNAPSHOT_EVERY * 2) as i64,
        "snapshots every {SNAPSHOT_EVERY} events"
    );
    assert_eq!(state["description"], format!("d{}", SNAPSHOT_EVERY * 2 - 2));

    // State from snapshot + tail is right: the same description is a no-op, the version checks out.
    let last = format!("d{}", updates - 1);
    let noop = app
        .state
        .groups
        .execute(
            GroupCommand::Update {
                id,
                description: Some(last),
                metadata: None,
            },
            Some(updates + 1),
            &meta,
        )
        .await
        .expect("no-op");
    assert_eq!((noop.version, noop.events), (updates + 1, 0));

    // A snapshot of another shape version is ignored even though it deserializes.
    sqlx::query("UPDATE aggregate_snapshots SET schema_version = schema_version + 1, state = jsonb_set(state, '{name}', '\"stale\"')")
        .execute(&app.pool)
        .await
        .expect("old shape");
    let same = app
        .state
        .groups
        .execute(
            GroupCommand::Rename {
                id,
                name: "busy".into(),
            },
            Some(updates + 1),
            &meta,
        )
        .await
        .expect("rename to the same name");
    assert_eq!(
        same.events, 0,
        "the name is still busy, not the stale snapshot's"
    );

    // A snapshot that no longer deserializes is ignored: everything is replayed.
    sqlx::query("UPDATE aggregate_snapshots SET schema_version = schema_version - 1, state = '{\"shape\": \"from an older release\"}'")
        .execute(&app.pool)
        .await
        .expect("corrupt");
    let renamed = app
        .state
        .groups
        .execute(
            GroupCommand::Rename {
                id,
                name: "calm".into(),
            },
            Some(updates + 1),
            &meta,
        )
        .await
        .expect("rename after replay");
    assert_eq!(renamed.version, updates + 2);
    let cursor = renamed.cursor.expect("committed");
    assert!(
        app.state
            .waiter
            .wait(cursor, &["group_tree"], std::time::Duration::from_secs(10))
            .await
    );
    let q = "query($id: ID!) { group(id: $id) { name description version } }";
    let g = app.data(&app.viewer, q, json!({ "id": id })).await["group"].clone();
    assert_eq!(
        g,
        json!({ "name": "calm", "description": format!("d{}", updates - 1), "version": updates + 2 })
    );
    app.shutdown().await;
}
