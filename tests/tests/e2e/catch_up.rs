//! The catch-up reader never skips or reorders, and projectors apply each event once.

use async_trait::async_trait;
use corral_projections::log::{CatchUpReader, EventRecord};
use corral_projections::runner::{ensure_checkpoint, step, Step, Stepper};
use corral_projections::{Projection, StoreError};
use corral_tests::TestDb;
use sqlx::{Connection, PgConnection, PgPool};

/// Records every event it sees; a second application of an event violates the primary key.
struct Recorder;

#[async_trait]
impl Projection for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn aggregate_types(&self) -> Vec<String> {
        vec!["Test".into()]
    }
    fn live_schema(&self) -> Option<&'static str> {
        Some("public")
    }
    async fn create_tables(&self, _: &mut PgConnection, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn apply(
        &self,
        conn: &mut PgConnection,
        _: &str,
        events: &[EventRecord],
    ) -> Result<(), StoreError> {
        for e in events {
            sqlx::query("INSERT INTO seen (global_position, aggregate_id) VALUES ($1, $2)")
                .bind(e.global_position)
                .bind(&e.aggregate_id)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

async fn setup(pool: &PgPool) {
    sqlx::query(
        "CREATE TABLE seen (n bigserial, global_position bigint PRIMARY KEY, aggregate_id text)",
    )
    .execute(pool)
    .await
    .expect("table");
    let mut conn = pool.acquire().await.expect("conn");
    ensure_checkpoint(&mut conn, "recorder")
        .await
        .expect("checkpoint");
}

async fn insert(conn: &mut PgConnection, id: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Test', $1, 1, 'Happened', '1', '{\"Happened\": {}}', '{}') RETURNING global_position",
    )
    .bind(id)
    .fetch_one(conn)
    .await
    .expect("insert")
}

async fn run_until_caught_up(pool: &PgPool) {
    let reader = CatchUpReader {
        aggregate_types: vec!["Test".into()],
        batch_size: 100,
        with_metadata: true,
    };
    loop {
        match step(pool, &Recorder, &reader, "recorder", "public")
            .await
            .expect("step")
        {
            Step::Applied {
                caught_up: true, ..
            } => return,
            _ => continue,
        }
    }
}

/// Steps until `n` events were seen: the horizon is cluster-wide, so other tests' open
/// transactions may hold it back for a moment.
async fn run_until_seen(pool: &PgPool, n: usize) -> Vec<String> {
    for _ in 0..500 {
        run_until_caught_up(pool).await;
        let s = seen(pool).await;
        if s.len() >= n {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    seen(pool).await
}

async fn seen(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT aggregate_id FROM seen ORDER BY n")
        .fetch_all(pool)
        .await
        .expect("seen")
}

#[tokio::test]
async fn a_later_insert_committed_first_is_read_in_commit_order_and_the_earlier_insert_is_not_skipped(
) {
    let db = TestDb::new().await;
    let pool = db.pool(4).await;
    setup(&pool).await;
    let mut b = PgConnection::connect(&db.url).await.expect("b");
    let mut a = PgConnection::connect(&db.url).await.expect("a");
    // B announces itself as an event writer and takes its transaction id first, A inserts
    // first, B inserts second and commits first.
    sqlx::query("BEGIN").execute(&mut b).await.expect("begin b");
    sqlx::query("SELECT corral_announce_event_writer()")
        .execute(&mut b)
        .await
        .expect("announce b");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut b)
        .await
        .expect("xid b");
    sqlx::query("BEGIN").execute(&mut a).await.expect("begin a");
    let gp_a = insert(&mut a, "a").await;
    let gp_b = insert(&mut b, "b").await;
    assert!(gp_a < gp_b, "A inserted first");
    sqlx::query("COMMIT")
        .execute(&mut b)
        .await
        .expect("commit b");

    // B is visible and below the horizon; a reader checkpointing global_position alone would
    // now stand at gp_b and never read gp_a.
    assert_eq!(run_until_seen(&pool, 1).await, vec!["b"]);

    sqlx::query("COMMIT")
        .execute(&mut a)
        .await
        .expect("commit a");
    assert_eq!(
        run_until_seen(&pool, 2).await,
        vec!["b", "a"],
        "both, in commit order, exactly once"
    );
    run_until_caught_up(&pool).await;
    assert_eq!(seen(&pool).await, vec!["b", "a"], "and never again");
    db.drop_db().await;
}

#[tokio::test]
async fn an_open_older_transaction_holds_the_reader_back_until_it_commits() {
    let db = TestDb::new().await;
    let pool = db.pool(4).await;
    setup(&pool).await;
    let mut a = PgConnection::connect(&db.url).await.expect("a");
    let mut b = PgConnection::connect(&db.url).await.expect("b");
    sqlx::query("BEGIN").execute(&mut a).await.expect("begin a");
    insert(&mut a, "a").await;
    insert(&mut b, "b").await; // autocommit, newer transaction id
    run_until_caught_up(&pool).await;
    assert_eq!(
        seen(&pool).await,
        Vec::<String>::new(),
        "nothing past the open transaction"
    );
    sqlx::query("COMMIT")
        .execute(&mut a)
        .await
        .expect("commit a");
    assert_eq!(run_until_seen(&pool, 2).await, vec!["a", "b"]);
    db.drop_db().await;
}

#[tokio::test]
async fn rolled_back_events_are_never_seen_and_do_not_block() {
    let db = TestDb::new().await;
    let pool = db.pool(4).await;
    setup(&pool).await;
    let mut a = PgConnection::connect(&db.url).await.expect("a");
    sqlx::query("BEGIN").execute(&mut a).await.expect("begin");
    insert(&mut a, "ghost").await;
    sqlx::query("ROLLBACK")
        .execute(&mut a)
        .await
        .expect("rollback");
    insert(&mut a, "real").await;
    assert_eq!(run_until_seen(&pool, 1).await, vec!["real"]);
    db.drop_db().await;
}

#[tokio::test]
async fn concurrent_runners_of_one_projector_apply_each_event_exactly_once() {
    let db = TestDb::new().await;
    let pool = db.pool(12).await;
    setup(&pool).await;
    let writer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut conn = pool.acquire().await.expect("conn");
            for i in 0..300 {
                insert(&mut conn, &format!("e{i}")).await;
            }
        })
    };
    let mut runners = Vec::new();
    for _ in 0..4 {
        let pool = pool.clone();
        runners.push(tokio::spawn(async move {
            let reader = CatchUpReader {
                aggregate_types: vec!["Test".into()],
                batch_size: 7,
                with_metadata: true,
            };
            for _ in 0..400 {
                step(&pool, &Recorder, &reader, "recorder", "public")
                    .await
                    .expect("step");
            }
        }));
    }
    writer.await.expect("writer");
    for r in runners {
        r.await.expect("runner");
    }
    run_until_seen(&pool, 300).await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM seen")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(count, 300);
    let in_order: bool = sqlx::query_scalar(
        "SELECT bool_and(ok) FROM (SELECT global_position > lag(global_position, 1, 0) OVER (ORDER BY n) AS ok FROM seen) t",
    )
    .fetch_one(&pool)
    .await
    .expect("order");
    assert!(
        in_order,
        "single-writer events were applied in insert order"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_reader_held_back_by_a_running_event_writer_says_so() {
    let db = TestDb::new().await;
    let pool = db.pool(4).await;
    setup(&pool).await;
    let mut open = PgConnection::connect(&db.url).await.expect("open");
    sqlx::query("BEGIN")
        .execute(&mut open)
        .await
        .expect("begin");
    sqlx::query("SELECT corral_announce_event_writer()")
        .execute(&mut open)
        .await
        .expect("announce");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut open)
        .await
        .expect("xid");
    // A younger transaction ends, so the snapshot's xmax passes the writer's id.
    insert(&mut PgConnection::connect(&db.url).await.expect("b"), "b").await;
    let reader = CatchUpReader {
        aggregate_types: vec!["Test".into()],
        batch_size: 100,
        with_metadata: true,
    };
    // Caught up, but the open writer could still commit events below the next horizon:
    // the runner looks again within milliseconds instead of sleeping until the next poll.
    match step(&pool, &Recorder, &reader, "recorder", "public")
        .await
        .expect("step")
    {
        Step::Applied {
            caught_up: true,
            held_back: true,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        seen(&pool).await,
        Vec::<String>::new(),
        "b waits for the writer"
    );
    sqlx::query("ROLLBACK")
        .execute(&mut open)
        .await
        .expect("rollback");
    db.drop_db().await;
}

#[tokio::test]
async fn a_stepper_reading_ahead_applies_each_event_once_in_order_when_another_runner_moves_the_checkpoint(
) {
    let db = TestDb::new().await;
    let pool = db.pool(6).await;
    setup(&pool).await;
    let mut conn = pool.acquire().await.expect("conn");
    for i in 0..350 {
        insert(&mut conn, &format!("e{i}")).await;
    }
    let reader = CatchUpReader {
        aggregate_types: vec!["Test".into()],
        batch_size: 100,
        with_metadata: true,
    };
    let mut stepper = Stepper::new(&pool, &Recorder, reader.clone(), "recorder", "public");
    // The stepper applies e0..e99 and starts reading e100..e199 ahead; another runner then
    // applies e100..e199 itself, so the batch read ahead no longer starts at the checkpoint.
    stepper.step().await.expect("first step");
    step(&pool, &Recorder, &reader, "recorder", "public")
        .await
        .expect("other runner");
    let mut caught_up = false;
    for _ in 0..20 {
        if let Step::Applied {
            caught_up: true, ..
        } = stepper.step().await.expect("step")
        {
            caught_up = true;
            break;
        }
    }
    assert!(caught_up, "the stepper reached the horizon");
    // Events committed after a batch was read ahead are read too.
    for i in 350..420 {
        insert(&mut conn, &format!("e{i}")).await;
    }
    for _ in 0..500 {
        stepper.step().await.expect("step");
        if seen(&pool).await.len() >= 420 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let expected: Vec<String> = (0..420).map(|i| format!("e{i}")).collect();
    assert_eq!(
        seen(&pool).await,
        expected,
        "every event once (the table's key), in commit order"
    );
    drop(conn);
    db.drop_db().await;
}
