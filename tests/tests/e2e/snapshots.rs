//! Aggregate snapshots keep loading flat, and a bad snapshot is never fatal.

use corral_domain::group::GroupCommand;
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::commands::executor::SNAPSHOT_EVERY;
use corral_projections::commands::groups::GroupCommands;
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

    // A new executor has nothing cached: it loads from the snapshot (and the events after it).
    let fresh = || GroupCommands::new(app.pool.clone(), app.pool.clone(), Default::default());
    // State from snapshot + tail is right: the same description is a no-op, the version checks out.
    let last = format!("d{}", updates - 1);
    let noop = fresh()
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
    let same = fresh()
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
    let renamed = fresh()
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
    let cursor = renamed
        .token
        .expect("committed")
        .cursor(&app.pool)
        .await
        .expect("cursor");
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

#[tokio::test]
async fn a_stale_cache_in_one_process_never_gives_a_wrong_answer() {
    use corral_domain::group::{Group, GroupDirectory, GroupError, GroupType, InMemoryDirectory};
    use corral_projections::commands::executor::{CommandExecutor, ExecError};

    let db = corral_tests::TestDb::new().await;
    let pool = db.pool(6).await;
    // Two executors: two processes, each with its own cache.
    let (a, b) = (
        CommandExecutor::<Group>::new(pool.clone()),
        CommandExecutor::<Group>::new(pool.clone()),
    );
    let root = GroupType::Device.root_id();
    let g = uuid::Uuid::new_v4();
    let dir = InMemoryDirectory::default();
    dir.insert(root, GroupType::Device, None, "Inventory");
    let services: Box<dyn GroupDirectory> = Box::new(dir);
    let meta = EventMetadata::system(Source::Cli, "test");
    let id = g.to_string();
    let run = |exec: &'static str, cmd: GroupCommand, expected: Option<u64>| {
        let executor = if exec == "a" { &a } else { &b };
        executor.execute(&id, cmd, &services, expected, false, &meta)
    };
    let create = GroupCommand::Create {
        id: g,
        name: "Orig".into(),
        group_type: GroupType::Device,
        parent_id: root,
        description: None,
        metadata: None,
    };
    assert_eq!(run("a", create, None).await.expect("create").version, 1);
    assert_eq!(
        run(
            "b",
            GroupCommand::Rename {
                id: g,
                name: "Other".into()
            },
            None
        )
        .await
        .expect("b renames")
        .version,
        2
    );
    // a's cache still says "Orig": renaming to "Orig" is not a no-op.
    let back = run(
        "a",
        GroupCommand::Rename {
            id: g,
            name: "Orig".into(),
        },
        None,
    )
    .await
    .expect("a renames back");
    assert_eq!((back.version, back.events), (3, 1));
    // A write on stale state conflicts at commit and is redone on fresh state.
    run(
        "b",
        GroupCommand::Update {
            id: g,
            description: Some("x".into()),
            metadata: None,
        },
        None,
    )
    .await
    .expect("b updates");
    let update = run(
        "a",
        GroupCommand::Update {
            id: g,
            description: Some("y".into()),
            metadata: None,
        },
        None,
    )
    .await
    .expect("a updates");
    assert_eq!((update.version, update.events), (5, 1));
    // expectedVersion is checked against the stored version, not the cache.
    run(
        "b",
        GroupCommand::Rename {
            id: g,
            name: "B".into(),
        },
        None,
    )
    .await
    .expect("b renames");
    let expected = run(
        "a",
        GroupCommand::Rename {
            id: g,
            name: "A".into(),
        },
        Some(6),
    )
    .await
    .expect("a with the right version");
    assert_eq!(expected.version, 7);
    match run(
        "a",
        GroupCommand::Rename {
            id: g,
            name: "C".into(),
        },
        Some(6),
    )
    .await
    {
        Err(ExecError::VersionConflict {
            expected: 6,
            actual: 7,
        }) => {}
        other => panic!("stale expectedVersion: {other:?}"),
    }
    // A wrong "this id is new" hint is caught too: the create conflicts and is refused.
    a.expect_new(&id);
    let again = GroupCommand::Create {
        id: g,
        name: "Again".into(),
        group_type: GroupType::Device,
        parent_id: root,
        description: None,
        metadata: None,
    };
    match run("a", again, None).await {
        Err(ExecError::Domain(GroupError::AlreadyExists(x))) if x == g => {}
        other => panic!("create over an existing group: {other:?}"),
    }
    // A refusal on stale state is re-checked: after b deletes, a's cache says live.
    run("b", GroupCommand::Delete { id: g }, None)
        .await
        .expect("b deletes");
    match run(
        "a",
        GroupCommand::Rename {
            id: g,
            name: "D".into(),
        },
        None,
    )
    .await
    {
        Err(ExecError::Domain(GroupError::NotFound { .. })) => {}
        other => panic!("rename of a deleted group: {other:?}"),
    }
    pool.close().await;
    db.drop_db().await;
}
