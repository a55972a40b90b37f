//! Event writers announce themselves (migration 0012), so readers of the log wait for them
//! alone: a long transaction that writes no events no longer holds the sequencer back, while a
//! running event writer still does, and nothing is ever skipped.

use std::time::{Duration, Instant};

use corral_tests::{TestApp, TestDb};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};

/// The log position of the latest event of `aggregate_id`, once sequenced.
async fn sequenced(pool: &PgPool, aggregate_id: &str, event_type: &str) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT l.log_position FROM events e JOIN event_log l USING (global_position)
          WHERE e.aggregate_id = $1 AND e.event_type = $2
          ORDER BY e.sequence DESC LIMIT 1",
    )
    .bind(aggregate_id)
    .bind(event_type)
    .fetch_optional(pool)
    .await
    .expect("position")
}

/// Waits up to `within` for the event to be sequenced.
async fn sequenced_within(
    pool: &PgPool,
    aggregate_id: &str,
    event_type: &str,
    within: Duration,
) -> Option<i64> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(p) = sequenced(pool, aggregate_id, event_type).await {
            return Some(p);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn rename(app: &TestApp, id: &str, name: &str) {
    app.data(
        &app.admin,
        "mutation($i: RenameGroupInput!) { renameGroup(input: $i) { group { id } } }",
        json!({"i": {"id": id, "name": name}}),
    )
    .await;
}

async fn scratch(conn: &mut PgConnection) {
    sqlx::query("CREATE TABLE IF NOT EXISTS scratch (n int)")
        .execute(&mut *conn)
        .await
        .expect("scratch table");
}

#[tokio::test]
async fn a_long_open_transaction_that_writes_no_events_does_not_delay_sequencing() {
    let app = TestApp::spawn().await;
    let site = app.create_group("Site", None).await;
    let mut bystander = PgConnection::connect(&app.db.url).await.expect("bystander");
    scratch(&mut bystander).await;
    // A transaction with an id older than the command's, open for 2 s: a projector batch,
    // the rule evaluator or telemetry ingest used to hold every reader back like this.
    sqlx::query("BEGIN")
        .execute(&mut bystander)
        .await
        .expect("begin");
    sqlx::query("INSERT INTO scratch VALUES (1)")
        .execute(&mut bystander)
        .await
        .expect("write");
    let opened = Instant::now();
    rename(&app, &site, "HQ").await;
    let position = sequenced_within(&app.pool, &site, "GroupRenamed", Duration::from_secs(1)).await;
    let waited = opened.elapsed();
    assert!(
        position.is_some(),
        "the rename was not sequenced while an unrelated transaction was open"
    );
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    // The bystander was open throughout: it is only now that it ends.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(opened.elapsed())).await;
    sqlx::query("COMMIT")
        .execute(&mut bystander)
        .await
        .expect("commit");
    app.shutdown().await;
}

#[tokio::test]
async fn a_running_event_writer_holds_readers_back_and_its_late_event_is_sequenced_in_order() {
    let app = TestApp::spawn().await;
    let site = app.create_group("Site", None).await;
    let late = app.create_group("Late", None).await;
    // The writer announces itself and takes a transaction id older than the rename's.
    let mut writer = PgConnection::connect(&app.db.url).await.expect("writer");
    sqlx::query("BEGIN")
        .execute(&mut writer)
        .await
        .expect("begin");
    sqlx::query("SELECT corral_announce_event_writer()")
        .execute(&mut writer)
        .await
        .expect("announce");
    let writer_xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&mut writer)
        .await
        .expect("xid");
    // The rename commits (its mutation waits for the read models, so it runs beside this).
    let meanwhile = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let committed: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_id = $1 AND event_type = 'GroupRenamed')",
            )
            .bind(&site)
            .fetch_one(&app.pool)
            .await
            .expect("committed?");
            if committed {
                break;
            }
            assert!(Instant::now() < deadline, "the rename never committed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            sequenced_within(&app.pool, &site, "GroupRenamed", Duration::from_millis(700)).await,
            None,
            "the rename passed a running event writer with an older transaction id"
        );
        // The writer's event, committed after the rename.
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata)
             SELECT 'Group', $1, 2, 'GroupRenamed', '1', $2, metadata
               FROM events WHERE aggregate_type = 'Group' AND aggregate_id = $1 AND sequence = 1",
        )
        .bind(&late)
        .bind(json!({"GroupRenamed": {"name": "Later", "previous_name": "Late"}}))
        .execute(&mut writer)
        .await
        .expect("the writer's event");
        sqlx::query("COMMIT")
            .execute(&mut writer)
            .await
            .expect("commit");
    };
    tokio::join!(rename(&app, &site, "HQ"), meanwhile);
    let renamed = sequenced_within(&app.pool, &site, "GroupRenamed", Duration::from_secs(10))
        .await
        .expect("the rename is sequenced once the writer ended");
    let written = sequenced_within(&app.pool, &late, "GroupRenamed", Duration::from_secs(10))
        .await
        .expect("the late event is sequenced, not skipped");
    assert!(
        written < renamed,
        "the older transaction's event comes first: {written} then {renamed} (writer xid {writer_xid})"
    );
    let (events, logged): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM event_log)")
            .fetch_one(&app.pool)
            .await
            .expect("counts");
    assert_eq!(events, logged, "every event is sequenced");
    app.shutdown().await;
}

#[tokio::test]
async fn the_events_table_refuses_a_writer_that_did_not_announce_itself_before_its_first_write() {
    let db = TestDb::new().await;
    let mut conn = PgConnection::connect(&db.url).await.expect("conn");
    scratch(&mut conn).await;
    let insert = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                  event_version, payload, metadata)
                  VALUES ('Test', $1, 1, 'Happened', '1', '{\"Happened\": {}}', '{}')";

    // Another write first, then an event: refused, the transaction already had an id.
    sqlx::query("BEGIN")
        .execute(&mut conn)
        .await
        .expect("begin");
    sqlx::query("INSERT INTO scratch VALUES (1)")
        .execute(&mut conn)
        .await
        .expect("write");
    let err = sqlx::query(insert)
        .bind("refused")
        .execute(&mut conn)
        .await
        .expect_err("an events insert after another write, unannounced");
    assert!(err.to_string().contains("must announce itself"), "{err}");
    sqlx::query("ROLLBACK")
        .execute(&mut conn)
        .await
        .expect("rollback");

    // The same with the announcement first: accepted, and several inserts in one transaction.
    sqlx::query("BEGIN")
        .execute(&mut conn)
        .await
        .expect("begin");
    sqlx::query("SELECT corral_announce_event_writer()")
        .execute(&mut conn)
        .await
        .expect("announce");
    sqlx::query("INSERT INTO scratch VALUES (2)")
        .execute(&mut conn)
        .await
        .expect("write");
    for id in ["first", "second"] {
        sqlx::query(insert)
            .bind(id)
            .execute(&mut conn)
            .await
            .expect("announced writer");
    }
    sqlx::query("COMMIT")
        .execute(&mut conn)
        .await
        .expect("commit");

    // An events insert as the first write announces itself (postgres-es's commit), and it
    // holds the lock until its end.
    sqlx::query("BEGIN")
        .execute(&mut conn)
        .await
        .expect("begin");
    sqlx::query(insert)
        .bind("third")
        .execute(&mut conn)
        .await
        .expect("first write");
    let holds: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks
                         WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                           AND mode = 'ShareLock'
                           AND objid::bigint = hashtext('corral_event_writers')::bigint & 4294967295)",
    )
    .fetch_one(&mut conn)
    .await
    .expect("locks");
    assert!(holds, "the writer holds the announcement lock");
    sqlx::query("COMMIT")
        .execute(&mut conn)
        .await
        .expect("commit");
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Test'")
            .fetch_one(&mut conn)
            .await
            .expect("count");
    assert_eq!(count, 3);
    conn.close().await.expect("close");
    db.drop_db().await;
}
