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
        "SELECT {EVENT_COLUMNS} FROM events ORDER BY log_position"
    ))
    .fetch_all(&app.pool)
    .await
    .expect("events");
    let events: Vec<EventRecord> = rows
        .iter()
        .map(|r| EventRecord {
            global_position: r.get("global_position"),
            transaction_id: r.get::<String, _>("txid").parse().expect("xid"),
            event_id: r.get("event_id"),
            aggregate_type: r.get("aggregate_type"),
            aggregate_id: r.get("aggregate_id"),
            sequence: r.get("sequence"),
            event_type: r.get("event_type"),
            event_version: r.get("event_version"),
            payload: r.get("payload"),
            metadata: r.get("metadata"),
            recorded_at: r.get("recorded_at"),
            log_position: r.get("log_position"),
            hash: r.get("hash"),
        })
        .collect();
    assert_eq!(
        events.len(),
        2 + 6 + 1,
        "two roots, six creates, one rename"
    );
    assert_eq!(
        position,
        events.len() as i64,
        "the rename is the last position"
    );
    let mut prev = GENESIS_HASH.to_vec();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.log_position, Some(i as i64 + 1), "gapless");
        let expected = chain_hash(&prev, e, i as i64 + 1);
        assert_eq!(
            e.hash.as_deref(),
            Some(expected.as_slice()),
            "link {}",
            i + 1
        );
        prev = expected;
    }
    // Metadata travels with every event.
    let rename = events.last().expect("rename");
    assert_eq!(rename.metadata["actor_subject"], "alice");
    assert_eq!(rename.metadata["actor_role"], "admin");
    assert_eq!(rename.metadata["source"], "api");
    assert!(rename.metadata["correlation_id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    app.shutdown().await;
}
