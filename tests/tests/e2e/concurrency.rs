//! Races between commands, with real concurrency.

use std::sync::Arc;

use corral_domain::group::{Group, GroupCommand, GroupDirectory, GroupType, InMemoryDirectory};
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::commands::executor::CommandExecutor;
use corral_tests::{TestApp, TestDb};
use serde_json::json;

const MOVE: &str = "mutation($input: MoveGroupInput!) { moveGroup(input: $input) { group { id } userErrors { code } } }";

#[tokio::test]
async fn two_admins_moving_a_under_b_and_b_under_a_at_once_exactly_one_wins() {
    let app = Arc::new(TestApp::spawn().await);
    for round in 0..8 {
        let a = app.create_group(&format!("A{round}"), None).await;
        let b = app.create_group(&format!("B{round}"), None).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mv = |id: String, parent: String| {
            let app = app.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                app.data(
                    &app.admin,
                    MOVE,
                    json!({ "input": { "id": id, "newParentId": parent } }),
                )
                .await
            })
        };
        let (r1, r2) = (mv(a.clone(), b.clone()), mv(b.clone(), a.clone()));
        let (r1, r2) = (r1.await.expect("join"), r2.await.expect("join"));
        let outcomes = [
            &r1["moveGroup"]["userErrors"],
            &r2["moveGroup"]["userErrors"],
        ];
        let wins = outcomes
            .iter()
            .filter(|e| e.as_array().is_some_and(|a| a.is_empty()))
            .count();
        assert_eq!(wins, 1, "round {round}: {r1} / {r2}");
        assert!(
            outcomes.iter().any(|e| e[0]["code"] == "CYCLE"),
            "the loser sees the cycle"
        );
    }
    Arc::try_unwrap(app)
        .ok()
        .expect("sole owner")
        .shutdown()
        .await;
}

#[tokio::test]
async fn concurrent_creates_of_one_name_under_one_parent_leave_exactly_one() {
    let app = Arc::new(TestApp::spawn().await);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.data(&app.admin, "mutation { createGroup(input: {name: \"Dup\", type: DEVICE}) { userErrors { code } } }", json!({})).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let r = t.await.expect("join");
        match r["createGroup"]["userErrors"]
            .as_array()
            .expect("errors")
            .first()
        {
            None => ok += 1,
            Some(e) => assert_eq!(e["code"], "NAME_TAKEN"),
        }
    }
    assert_eq!(ok, 1);
    Arc::try_unwrap(app)
        .ok()
        .expect("sole owner")
        .shutdown()
        .await;
}

#[tokio::test]
async fn commuting_commands_are_retried_after_version_conflicts() {
    let db = TestDb::new().await;
    let pool = db.pool(20).await;
    let executor = Arc::new(CommandExecutor::<Group>::new(pool.clone()));
    let services: Arc<Box<dyn GroupDirectory>> = Arc::new(Box::new(InMemoryDirectory::default()));
    let root = GroupType::Service.root_id().to_string();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (executor, services, root) = (executor.clone(), services.clone(), root.clone());
        tasks.push(tokio::spawn(async move {
            let meta = EventMetadata::system(Source::Cli, "test");
            executor
                .execute(
                    &root,
                    GroupCommand::EnsureRoot {
                        group_type: GroupType::Service,
                    },
                    &services,
                    None,
                    true,
                    &meta,
                )
                .await
        }));
    }
    for t in tasks {
        let committed = t.await.expect("join").expect("every racer succeeds");
        assert_eq!(committed.version, 1);
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(events, 1);
    // A non-commuting command with a stale expectedVersion is refused, naming the version.
    let meta = EventMetadata::system(Source::Cli, "test");
    let err = executor
        .execute(
            &root,
            GroupCommand::EnsureRoot {
                group_type: GroupType::Service,
            },
            &services,
            Some(0),
            false,
            &meta,
        )
        .await
        .expect_err("stale");
    assert_eq!(
        err.to_string(),
        "version conflict: expected version 0, current version is 1"
    );
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn the_database_refuses_a_cycle_even_if_a_command_skipped_its_checks() {
    let db = TestDb::new().await;
    let pool = db.pool(4).await;
    let executor = CommandExecutor::<Group>::new(pool.clone());
    let meta = EventMetadata::system(Source::Cli, "test");
    // A stale directory: the aggregate's own checks pass, as they would if the
    // locks had been lost. The registry trigger still refuses the cycle.
    let dir = InMemoryDirectory::default();
    let root = GroupType::Device.root_id();
    dir.insert(root, GroupType::Device, None, "Inventory");
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let seeded: Box<dyn GroupDirectory> = Box::new(dir);
    executor
        .execute(
            &root.to_string(),
            GroupCommand::EnsureRoot {
                group_type: GroupType::Device,
            },
            &seeded,
            None,
            false,
            &meta,
        )
        .await
        .expect("root");
    for (id, name) in [(a, "A"), (b, "B")] {
        let cmd = GroupCommand::Create {
            id,
            name: name.into(),
            group_type: GroupType::Device,
            parent_id: root,
            description: None,
            metadata: None,
        };
        executor
            .execute(&id.to_string(), cmd, &seeded, None, false, &meta)
            .await
            .expect("create");
    }
    let dir_ab = InMemoryDirectory::default();
    dir_ab.insert(root, GroupType::Device, None, "Inventory");
    dir_ab.insert(a, GroupType::Device, Some(root), "A");
    dir_ab.insert(b, GroupType::Device, Some(root), "B");
    let ab: Box<dyn GroupDirectory> = Box::new(dir_ab);
    executor
        .execute(
            &a.to_string(),
            GroupCommand::Move {
                id: a,
                new_parent_id: b,
            },
            &ab,
            None,
            false,
            &meta,
        )
        .await
        .expect("A under B");
    let err = executor
        .execute(
            &b.to_string(),
            GroupCommand::Move {
                id: b,
                new_parent_id: a,
            },
            &ab,
            None,
            false,
            &meta,
        )
        .await
        .expect_err("B under A");
    assert!(err.to_string().contains("cycle"), "{err}");
    pool.close().await;
    db.drop_db().await;
}
