//! The NATS telemetry feed end to end: arrays of samples and checks become rows, unknown ids
//! are counted, malformed and oversized messages are dropped, and a redelivered message
//! stores nothing twice.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use corral_projections::health::ingest::DeliveryKey;
use corral_projections::health::HealthConfig;
use corral_tests::{nats, TestDb};
use corral_workers::feed::Kind;
use corral_workers::telemetry_feed::{self, TelemetryStats};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("count")
}

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

async fn publish(subject: &str, payload: String) {
    nats::jetstream()
        .await
        .publish(subject.to_string(), payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored by JetStream");
}

/// A telemetry feed on a stream of the test's own.
struct Feed {
    config: corral_workers::feed::FeedConfig,
    stats: Arc<TelemetryStats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Feed {
    async fn start(pool: &PgPool) -> Feed {
        let config = nats::feed_config();
        let stats = Arc::new(TelemetryStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(telemetry_feed::run(
            pool.clone(),
            nats::url(),
            config.clone(),
            HealthConfig::default(),
            stats.clone(),
            stop_rx,
        ));
        nats::wait_for_consumers(&config).await;
        Feed {
            config,
            stats,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the feed stops")
            .expect("the feed task");
        nats::delete_stream(&self.config).await;
    }
}

#[tokio::test]
async fn samples_and_checks_arrive_over_jetstream() {
    let db = TestDb::new().await;
    let pool = db.pool(4).await;
    sqlx::query("INSERT INTO devices (id) VALUES ('n1'), ('n2')")
        .execute(&pool)
        .await
        .expect("devices");
    sqlx::query("INSERT INTO services (id, device_id, type, name) VALUES ('n1/http/web', 'n1', 'http', 'web')")
        .execute(&pool)
        .await
        .expect("service");
    let feed = Feed::start(&pool).await;
    let (config, stats) = (feed.config.clone(), feed.stats.clone());

    let ts = Utc::now().to_rfc3339();
    let sample = |id: &str| json!({ "deviceId": id, "ts": ts, "cpuPercent": 5, "memPercent": 6, "diskPercent": 7 });
    publish(
        &config.devices_subject,
        json!([sample("n1"), sample("n2"), sample("ghost"), { "deviceId": "n1" }]).to_string(),
    )
    .await;
    // A NUL in an id is one rejected sample, not a batch that fails for ever.
    publish(
        &config.devices_subject,
        json!([sample("n\u{0}1"), sample("n\u{7}2")]).to_string(),
    )
    .await;
    publish(&config.devices_subject, "not json".into()).await;
    let oversized: Vec<_> = (0..5001).map(|_| sample("n1")).collect();
    publish(&config.devices_subject, json!(oversized).to_string()).await;
    publish(
        &config.services_subject,
        json!([{ "serviceId": "n1/http/web", "ts": ts, "available": false, "latencyMs": 9 }])
            .to_string(),
    )
    .await;
    eventually("everything was handled", || async {
        stats.messages.load(Ordering::Relaxed) == 3 && stats.malformed.load(Ordering::Relaxed) == 2
    })
    .await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM telemetry_sysmon").await,
        2
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM telemetry_services").await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT samples FROM telemetry_unknown WHERE entity_id = 'ghost'"
        )
        .await,
        1
    );
    assert_eq!(stats.accepted.load(Ordering::Relaxed), 3);
    assert_eq!(stats.unknown.load(Ordering::Relaxed), 1);
    assert_eq!(stats.rejected.load(Ordering::Relaxed), 3);
    feed.stop().await;
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_redelivered_message_is_not_stored_twice() {
    let db = TestDb::new().await;
    let pool = db.pool(2).await;
    sqlx::query("INSERT INTO devices (id) VALUES ('r1')")
        .execute(&pool)
        .await
        .expect("device");
    let payload = json!([{ "deviceId": "r1", "ts": Utc::now().to_rfc3339(), "cpuPercent": 5, "memPercent": 6, "diskPercent": 7 }]).to_string();
    let key = DeliveryKey {
        consumer: "c",
        sequence: 42,
    };
    let config = HealthConfig::default();
    let first =
        telemetry_feed::handle(&pool, &config, Kind::Devices, payload.as_bytes(), Some(key))
            .await
            .expect("first delivery");
    assert_eq!(first.report.expect("applied").accepted, 1);
    let again =
        telemetry_feed::handle(&pool, &config, Kind::Devices, payload.as_bytes(), Some(key))
            .await
            .expect("redelivery");
    assert!(again.report.is_none(), "a redelivery applies nothing");
    let other = DeliveryKey {
        consumer: "c",
        sequence: 43,
    };
    let next = telemetry_feed::handle(
        &pool,
        &config,
        Kind::Devices,
        payload.as_bytes(),
        Some(other),
    )
    .await
    .expect("another message");
    assert!(next.report.is_some());
    assert_eq!(
        count(&pool, "SELECT count(*) FROM telemetry_sysmon").await,
        2
    );
    assert_eq!(
        count(&pool, "SELECT samples::bigint FROM health_device_buckets WHERE device_id = 'r1' AND bucket_size = 300").await,
        2
    );
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_stream_created_again_does_not_swallow_its_new_messages() {
    let db = TestDb::new().await;
    let pool = db.pool(4).await;
    sqlx::query("INSERT INTO devices (id) VALUES ('s1'), ('s2')")
        .execute(&pool)
        .await
        .expect("devices");
    let feed = Feed::start(&pool).await;
    let config = feed.config.clone();
    let sample = |id: &str| {
        json!([{ "deviceId": id, "ts": Utc::now().to_rfc3339(), "cpuPercent": 5, "memPercent": 6, "diskPercent": 7 }])
            .to_string()
    };
    publish(&config.devices_subject, sample("s1")).await;
    eventually("the first sample is stored", || async {
        count(&pool, "SELECT count(*) FROM telemetry_sysmon").await == 1
    })
    .await;
    // An operator deletes the stream; the feed creates it again, and its first message has
    // stream sequence 1 again: it is a new message, not a redelivery.
    nats::delete_stream(&config).await;
    nats::wait_for_consumers(&config).await;
    publish(&config.devices_subject, sample("s2")).await;
    eventually("the new stream's first sample is stored", || async {
        count(
            &pool,
            "SELECT count(*) FROM telemetry_sysmon WHERE device_id = 's2'",
        )
        .await
            == 1
    })
    .await;
    feed.stop().await;
    pool.close().await;
    db.drop_db().await;
}
