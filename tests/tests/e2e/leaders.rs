//! Singleton workers' leadership: one holder per database, visible in `pg_locks`, lost at
//! once with its session.

use corral_projections::leader::{self, Leader, Leadership};
use corral_projections::locks::Lock;
use corral_tests::TestDb;

#[tokio::test]
async fn a_leader_whose_session_is_terminated_loses_leadership_and_another_takes_it() {
    let db = TestDb::new().await;
    let pool = db.pool(6).await;
    let evaluator = Leadership::Worker(Lock::RuleEvaluator);
    let mut first = Leader::try_take(&pool, &evaluator)
        .await
        .expect("try")
        .expect("nobody leads yet");
    assert!(first.check().await);
    assert!(
        Leader::try_take(&pool, &evaluator)
            .await
            .expect("try")
            .is_none(),
        "one leader at a time"
    );
    let held = leader::cluster(&pool, std::slice::from_ref(&evaluator))
        .await
        .expect("cluster");
    let holder = held[0].1.clone().expect("the cluster sees the leader");
    assert!(holder.application_name.starts_with("corral "), "{holder:?}");
    assert!(leader::held_here().contains(&"rule_evaluator".to_string()));

    // Another leadership is independent of this one.
    let other = Leader::try_take(&pool, &Leadership::Worker(Lock::Capabilities))
        .await
        .expect("try")
        .expect("a different lock");
    other.resign().await;

    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(holder.backend_pid)
        .fetch_one(&pool)
        .await
        .expect("terminate");
    assert!(terminated);
    assert!(!first.check().await, "a dead session is no leadership");
    drop(first);
    // The backend exits asynchronously; its locks go when it has.
    let mut second = None;
    for _ in 0..100 {
        second = Leader::try_take(&pool, &evaluator).await.expect("try");
        if second.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let second = second.expect("the lock went with the session");
    let held = leader::cluster(&pool, &[evaluator]).await.expect("cluster");
    assert_ne!(
        held[0].1.as_ref().map(|h| h.backend_pid),
        Some(holder.backend_pid)
    );
    second.resign().await;
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn leaderships_of_two_databases_do_not_exclude_each_other() {
    let (a, b) = (TestDb::new().await, TestDb::new().await);
    let (pa, pb) = (a.pool(2).await, b.pool(2).await);
    let publisher = Leadership::Publisher("CORRAL_EVENTS".into());
    let la = Leader::try_take(&pa, &publisher).await.expect("try");
    let lb = Leader::try_take(&pb, &publisher).await.expect("try");
    assert!(
        la.is_some() && lb.is_some(),
        "advisory locks are per database"
    );
    let seen = leader::cluster(&pa, std::slice::from_ref(&publisher))
        .await
        .expect("cluster");
    assert!(seen[0].1.is_some());
    for l in [la, lb].into_iter().flatten() {
        l.resign().await;
    }
    let seen = leader::cluster(&pa, &[publisher]).await.expect("cluster");
    assert!(seen[0].1.is_none(), "resigned");
    pa.close().await;
    pb.close().await;
    a.drop_db().await;
    b.drop_db().await;
}
