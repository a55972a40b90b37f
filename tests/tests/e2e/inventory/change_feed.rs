//! The change feed the rule evaluator reads: no-ops write nothing, changed fields accumulate
//! until consumed, new, revived and removed rows mean "every field".

use corral_domain::inventory::{Device, DeviceInput};
use corral_projections::inventory as store;
use corral_tests::TestDb;
use serde_json::{json, Value};
use sqlx::PgPool;

/// The change-feed columns of one device.
async fn feed_row(pool: &PgPool, id: &str) -> (i64, Option<Vec<String>>, bool) {
    sqlx::query_as(
        "SELECT change_seq, changed_fields, removed_at IS NOT NULL FROM devices WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("device row")
}

/// Marks every change so far as consumed by the evaluator.
async fn consume_all(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO inventory_cursors (name, changed_tx, change_seq)
         SELECT 'devices', changed_tx, change_seq FROM devices ORDER BY changed_tx DESC, change_seq DESC LIMIT 1
         ON CONFLICT (name) DO UPDATE SET changed_tx = excluded.changed_tx, change_seq = excluded.change_seq",
    )
    .execute(pool)
    .await
    .expect("cursor");
}

fn by() -> store::WriteContext {
    store::WriteContext::new(corral_domain::metadata::EventMetadata::system(
        corral_domain::metadata::Source::Cli,
        "test",
    ))
}

fn device(v: Value) -> Device {
    serde_json::from_value::<DeviceInput>(v)
        .expect("input")
        .validate()
        .expect("valid")
}

#[tokio::test]
async fn changed_fields_accumulate_until_consumed_and_no_ops_write_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool(2).await;
    let base = json!({ "id": "a", "hostname": "h1", "ip": "10.0.0.1", "firstSeen": "2026-02-01T00:00:00Z" });
    let o = store::upsert_devices(&pool, &[device(base.clone())], &by())
        .await
        .expect("upsert");
    assert_eq!((o.upserted, o.unchanged), (1, 0));
    let (seq, fields, _) = feed_row(&pool, "a").await;
    assert_eq!(fields, None, "a new row: every field");

    let o = store::upsert_devices(&pool, &[device(base.clone())], &by())
        .await
        .expect("upsert");
    assert_eq!((o.upserted, o.unchanged), (0, 1));
    assert_eq!(
        feed_row(&pool, "a").await.0,
        seq,
        "a no-op does not touch the row"
    );

    // Not consumed yet: a change to a new row stays "everything".
    let mut v = base.clone();
    v["hostname"] = json!("h2");
    store::upsert_devices(&pool, &[device(v.clone())], &by())
        .await
        .expect("upsert");
    let (seq2, fields, _) = feed_row(&pool, "a").await;
    assert!(seq2 > seq);
    assert_eq!(fields, None);

    consume_all(&pool).await;
    v["hostname"] = json!("h3");
    store::upsert_devices(&pool, &[device(v.clone())], &by())
        .await
        .expect("upsert");
    assert_eq!(
        feed_row(&pool, "a").await.1,
        Some(vec!["hostname".to_string()])
    );
    v["ip"] = json!("10.0.0.2");
    v["tags"] = json!(["x"]);
    store::upsert_devices(&pool, &[device(v.clone())], &by())
        .await
        .expect("upsert");
    assert_eq!(
        feed_row(&pool, "a").await.1,
        Some(vec!["hostname".into(), "ip".into(), "tags".into()]),
        "unconsumed changes accumulate"
    );
    consume_all(&pool).await;
    // firstSeen keeps the earliest; a later one is no change at all.
    v["firstSeen"] = json!("2026-03-01T00:00:00Z");
    let o = store::upsert_devices(&pool, &[device(v.clone())], &by())
        .await
        .expect("upsert");
    assert_eq!(o.unchanged, 1);
    v["firstSeen"] = json!("2026-01-01T00:00:00Z");
    v.as_object_mut().expect("object").remove("ip");
    store::upsert_devices(&pool, &[device(v.clone())], &by())
        .await
        .expect("upsert");
    assert_eq!(
        feed_row(&pool, "a").await.1,
        Some(vec!["first_seen".into(), "ip".into()])
    );
    let stored = store::devices_by_ids(&pool, &["a".into()])
        .await
        .expect("read");
    assert_eq!(
        stored[0].device.ip, None,
        "an upsert replaces the whole record"
    );
    assert_eq!(
        stored[0].device.first_seen.map(|t| t.to_rfc3339()),
        Some("2026-01-01T00:00:00+00:00".into())
    );

    consume_all(&pool).await;
    assert_eq!(
        store::remove_devices(&pool, &["a".into()], &by())
            .await
            .expect("remove"),
        1
    );
    assert_eq!(
        store::remove_devices(&pool, &["a".into()], &by())
            .await
            .expect("remove"),
        0
    );
    let (_, fields, removed) = feed_row(&pool, "a").await;
    assert!(removed);
    assert_eq!(fields, None, "a removal: every field");
    assert!(store::devices_by_ids(&pool, &["a".into()])
        .await
        .expect("read")
        .is_empty());
    consume_all(&pool).await;
    let o = store::upsert_devices(&pool, &[device(v)], &by())
        .await
        .expect("upsert");
    assert_eq!(
        o.upserted, 1,
        "a revival is a change even when the fields are equal"
    );
    let (_, fields, removed) = feed_row(&pool, "a").await;
    assert!(!removed);
    assert_eq!(fields, None, "a revival: every field");
    pool.close().await;
    db.drop_db().await;
}
