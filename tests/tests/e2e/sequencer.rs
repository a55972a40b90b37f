//! Log positions are gapless and commit-ordered; the hash chain recomputes.

use corral_projections::canonical::{chain_hash, GENESIS_HASH};
use corral_projections::log::{EventRecord, EVENT_COLUMNS};
use corral_tests::TestApp;
use serde_json::json;
use sqlx::Row;

#[tokio::test]
async fn every_event_gets_a_gapless_position_and_a_verifiable_hash_link() {
    let app = TestApp::spawn().await;
    let site = app.create_group("Site-A", None).await;
    for i in 0..5 {
        app.create_group(&format!("Rack-{i}"), Some(&site)).await;
    }
    let data = app
        .data(&app.admin, "mutation($i: RenameGroupInput!) { renameGroup(input: $i) { position userErrors { code } } }", json!({"i": {"id": site, "name": "HQ"}}))
        .await;
    let position: i64 = data["renameGroup"]["position"]
        .as_str()
        .expect("position is a string")
        .parse()
        .expect("decimal");
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS}, l.log_position, l.hash FROM events JOIN event_log l USING (global_position) ORDER BY l.log_position"
    ))
    .fetch_all(&app.pool)
    .await
    .expect("events");
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    let events: Vec<(EventRecord, i64, Vec<u8>)> = rows
        .iter()
        .map(|r| {
            (
                EventRecord::from_row(r).expect("event"),
                r.get("log_position"),
                r.get("hash"),
            )
        })
        .collect();
    assert_eq!(events.len() as i64, all, "every event is sequenced");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.0.aggregate_type == "Group")
            .count(),
        2 + 6 + 1,
        "two roots, six creates, one rename (after the test tokens' Subject events)"
    );
    assert_eq!(
        position,
        events.len() as i64,
        "the rename is the last position"
    );
    let mut prev = GENESIS_HASH.to_vec();
    for (i, (e, position, hash)) in events.iter().enumerate() {
        assert_eq!(*position, i as i64 + 1, "gapless");
        let expected = chain_hash(&prev, e, i as i64 + 1);
        assert_eq!(hash, &expected, "link {}", i + 1);
        prev = expected;
    }
    let order: Vec<(u64, i64)> = events
        .iter()
        .map(|(e, _, _)| (e.transaction_id, e.global_position))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(
        order, sorted,
        "positions follow (transaction_id, global_position)"
    );
    // Metadata travels with every event.
    let rename = &events.last().expect("rename").0;
    assert_eq!(rename.metadata["actor_subject"], "alice");
    assert_eq!(rename.metadata["actor_role"], "admin");
    assert_eq!(rename.metadata["source"], "api");
    assert!(rename.metadata["correlation_id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    app.shutdown().await;
}
