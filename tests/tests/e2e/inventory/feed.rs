//! The NATS inventory feed end to end: arrays published to JetStream become rows, a malformed
//! message does not wedge the consumer, and a message is acked only after its commit.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use corral_projections::inventory as store;
use corral_tests::{nats, TestDb};
use corral_workers::inventory_feed::{self, FeedConfig, FeedStats};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Feed {
    stats: Arc<FeedStats>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Feed {
    /// Starts the feed and waits until both its consumers exist.
    async fn start(pool: &PgPool, config: &FeedConfig) -> Self {
        let stats = Arc::new(FeedStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(inventory_feed::run(
            pool.clone(),
            nats::url(),
            config.clone(),
            stats.clone(),
            stop_rx,
        ));
        nats::wait_for_consumers(config).await;
        Self { stats, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the feed stops")
            .expect("the feed task");
    }
}

async fn publish(subject: &str, payload: String) {
    nats::jetstream()
        .await
        .publish(subject.to_string(), payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored by JetStream");
}

/// Waits (up to 20 s) until `check` holds.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn live_devices(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM devices WHERE removed_at IS NULL")
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn published_arrays_become_rows_and_malformed_messages_do_not_wedge_the_consumer() {
    let db = TestDb::new().await;
    let pool = db.pool(4).await;
    let config = nats::feed_config();
    let feed = Feed::start(&pool, &config).await;
    publish(&config.devices_subject, "{ not json".into()).await;
    publish(
        &config.devices_subject,
        json!({ "id": "not-an-array" }).to_string(),
    )
    .await;
    publish(
        &config.devices_subject,
        json!([
            { "id": "n1", "hostname": "edge-1", "ip": "10.9.0.1", "tags": ["role=edge"] },
            { "id": "n2", "ip": "not an ip" },
            { "id": "n3", "mac": "00:11:22:33:44:55" },
        ])
        .to_string(),
    )
    .await;
    publish(
        &config.services_subject,
        json!([{ "deviceId": "n1", "type": "http", "name": "admin", "port": 8443 }]).to_string(),
    )
    .await;
    eventually("both valid devices are stored", || async {
        live_devices(&pool).await == 2
    })
    .await;
    eventually("the service is stored", || async {
        !store::services_by_ids(&pool, &["n1/http/admin".into()])
            .await
            .expect("read")
            .is_empty()
    })
    .await;
    let n1 = store::devices_by_ids(&pool, &["n1".into()])
        .await
        .expect("read");
    assert_eq!(n1[0].device.hostname.as_deref(), Some("edge-1"));
    assert_eq!(
        n1[0].device.tags.get("role").map(String::as_str),
        Some("edge")
    );
    let stats = &feed.stats;
    assert_eq!(stats.malformed.load(Ordering::Relaxed), 2);
    assert_eq!(stats.invalid.load(Ordering::Relaxed), 1);
    assert_eq!(stats.messages.load(Ordering::Relaxed), 2);
    assert_eq!(stats.upserted.load(Ordering::Relaxed), 3);
    assert!(stats
        .render()
        .contains("corral_inventory_feed_invalid_total 1"));
    feed.stop().await;

    // Everything was acked (or terminated): a restarted consumer gets only what is new.
    let feed = Feed::start(&pool, &config).await;
    publish(&config.devices_subject, json!([{ "id": "n4" }]).to_string()).await;
    eventually("the new device is stored", || async {
        live_devices(&pool).await == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        feed.stats.messages.load(Ordering::Relaxed),
        1,
        "nothing was redelivered"
    );
    assert_eq!(feed.stats.malformed.load(Ordering::Relaxed), 0);
    let stream = nats::jetstream()
        .await
        .get_stream(&config.stream)
        .await
        .expect("stream");
    let info = stream
        .consumer_info(&config.devices_consumer)
        .await
        .expect("consumer");
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));
    feed.stop().await;
    nats::delete_stream(&config).await;
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_message_that_fails_on_the_database_is_redelivered_until_it_commits() {
    let db = TestDb::new().await;
    let pool = db.pool(4).await;
    let config = nats::feed_config();
    sqlx::query("ALTER TABLE devices RENAME TO devices_away")
        .execute(&pool)
        .await
        .expect("rename");
    let feed = Feed::start(&pool, &config).await;
    publish(
        &config.devices_subject,
        json!([{ "id": "late" }]).to_string(),
    )
    .await;
    eventually("the upsert failed and the message was nak'ed", || async {
        feed.stats.retried.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert_eq!(feed.stats.messages.load(Ordering::Relaxed), 0);
    sqlx::query("ALTER TABLE devices_away RENAME TO devices")
        .execute(&pool)
        .await
        .expect("rename back");
    eventually("the redelivered message is applied", || async {
        live_devices(&pool).await == 1
    })
    .await;
    assert_eq!(feed.stats.messages.load(Ordering::Relaxed), 1);
    feed.stop().await;
    nats::delete_stream(&config).await;
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn feed_writes_are_events_naming_the_feed_and_redelivery_appends_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool(4).await;
    let config = nats::feed_config();
    let feed = Feed::start(&pool, &config).await;
    let message = json!([{ "id": "f1", "hostname": "edge-1" }]).to_string();
    publish(&config.devices_subject, message.clone()).await;
    eventually("the device is stored", || async {
        live_devices(&pool).await == 1
    })
    .await;
    publish(
        &config.devices_subject,
        json!([{ "id": "f1", "hostname": "edge-2" }]).to_string(),
    )
    .await;
    eventually("the change is stored", || async {
        store::devices_by_ids(&pool, &["f1".into()])
            .await
            .expect("read")
            .first()
            .and_then(|d| d.device.hostname.clone())
            .as_deref()
            == Some("edge-2")
    })
    .await;
    // The same record again (as a redelivery would bring it): no event.
    publish(
        &config.devices_subject,
        json!([{ "id": "f1", "hostname": "edge-2" }]).to_string(),
    )
    .await;
    eventually("three messages applied", || async {
        feed.stats.messages.load(Ordering::Relaxed) == 3
    })
    .await;
    let events: Vec<(String, serde_json::Value, serde_json::Value)> = sqlx::query_as(
        "SELECT event_type, payload, metadata FROM events
          WHERE aggregate_type = 'Device' AND aggregate_id = 'f1' ORDER BY sequence",
    )
    .fetch_all(&pool)
    .await
    .expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds, ["DeviceRecorded", "DeviceChanged"]);
    assert_eq!(
        events[1].1["DeviceChanged"]["changes"],
        json!([{ "field": "hostname", "before": "edge-1", "after": "edge-2" }])
    );
    let meta = &events[0].2;
    assert_eq!(meta["source"], "feed");
    assert_eq!(meta["actor_role"], "feed");
    assert_eq!(meta["actor_subject"], config.devices_consumer.as_str());
    let feed_name = meta["feed"].as_str().expect("feed name");
    assert!(
        feed_name.ends_with(&format!("/{}", config.devices_subject)),
        "{feed_name}"
    );
    assert!(feed_name.starts_with(&config.stream), "{feed_name}");
    assert_ne!(
        events[0].2["correlation_id"], events[1].2["correlation_id"],
        "each message is its own correlation"
    );
    feed.stop().await;
    pool.close().await;
    db.drop_db().await;
}
