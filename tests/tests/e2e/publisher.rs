//! The NATS publisher of the event log: every event exactly once in the stream, in position
//! order, through a `kill -9` mid-batch and through a NATS outage.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, Context};
use corral_projections::public_log::{self, LogFilter};
use corral_tests::{nats, TestApp};
use corral_workers::publisher::{self, PublisherConfig};
use futures::StreamExt;
use serde_json::{json, Value};
use uuid::Uuid;

const ADD: &str = "mutation($input: GroupMembersInput!) { addGroupMembers(input: $input) { changed userErrors { code message } } }";

/// Groups and devices to write membership events with.
struct Writer {
    groups: Vec<String>,
    devices: Vec<String>,
    next: usize,
}

impl Writer {
    async fn new(app: &TestApp, groups: usize, devices: usize) -> Self {
        let mut ids = Vec::new();
        for i in 0..groups {
            ids.push(app.create_group(&format!("Pub-{i}"), None).await);
        }
        let prefix = Uuid::new_v4().simple().to_string();
        let devices: Vec<String> = (0..devices).map(|i| format!("{prefix}-{i:05}")).collect();
        sqlx::query(
            "INSERT INTO devices (id, hostname, is_available)
             SELECT x, 'host-' || x, true FROM unnest($1::text[]) x",
        )
        .bind(&devices)
        .execute(&app.pool)
        .await
        .expect("insert devices");
        Self {
            groups: ids,
            devices,
            next: 0,
        }
    }

    /// Writes `n` events: one `addGroupMembers` of one new device each, several at a time.
    async fn write(&mut self, app: &TestApp, n: usize) {
        assert!(self.next + n <= self.devices.len(), "enough devices");
        let calls: Vec<(String, String)> = (self.next..self.next + n)
            .map(|i| {
                (
                    self.groups[i % self.groups.len()].clone(),
                    self.devices[i].clone(),
                )
            })
            .collect();
        self.next += n;
        futures::stream::iter(calls)
            .map(|(group, device)| async move {
                let data = app
                    .data(
                        &app.operator,
                        ADD,
                        json!({ "input": { "groupId": group, "memberIds": [device] } }),
                    )
                    .await;
                assert_eq!(data["addGroupMembers"]["userErrors"], json!([]));
                assert_eq!(data["addGroupMembers"]["changed"], 1);
            })
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
    }
}

async fn log_head(app: &TestApp) -> i64 {
    let mut conn = app.pool.acquire().await.expect("conn");
    public_log::head(&mut conn).await.expect("head").0
}

/// Messages in the stream (0 before it exists).
async fn stream_messages(js: &Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

async fn wait_for_messages(js: &Context, stream: &str, n: u64, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let have = stream_messages(js, stream).await;
        if have >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the stream holds {have} messages, not {n}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads the whole stream and checks it against the log: positions exactly 1..=head, in
/// order, each once, on the right subject, with the envelope and headers of the event.
async fn assert_stream_is_the_log(app: &TestApp, js: &Context, config: &PublisherConfig) {
    let head = log_head(app).await;
    let mut conn = app.pool.acquire().await.expect("conn");
    let entries = public_log::read(&mut conn, 0, None, &LogFilter::default(), head + 1)
        .await
        .expect("read log");
    assert_eq!(entries.len() as i64, head);
    let mut stream = js.get_stream(&config.stream).await.expect("stream");
    let state = stream.info().await.expect("info").state.clone();
    assert_eq!(state.messages, head as u64, "one message per event");
    assert_eq!(state.first_sequence, 1);
    assert_eq!(
        state.last_sequence, head as u64,
        "no message was refused or deleted"
    );
    let mut correlated = 0;
    for entry in &entries {
        let message = stream
            .get_raw_message(entry.position as u64)
            .await
            .unwrap_or_else(|e| panic!("message {}: {e}", entry.position));
        let e = &entry.event;
        assert_eq!(
            message.subject.as_str(),
            format!(
                "{}.{}.{}.{}",
                config.subject_prefix, e.aggregate_type, e.aggregate_id, e.event_type
            ),
            "subject of position {}",
            entry.position
        );
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_string());
        assert_eq!(
            header(publisher::POSITION_HEADER),
            Some(entry.position.to_string()),
            "stream sequence {} holds position {}",
            entry.position,
            entry.position
        );
        assert_eq!(header("Nats-Msg-Id"), Some(e.event_id.to_string()));
        // CloudEvents 1.0, binary content mode.
        assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
        assert_eq!(header("ce-id"), Some(e.event_id.to_string()));
        assert_eq!(header("ce-source").as_deref(), Some("/corral"));
        assert_eq!(
            header("ce-type"),
            Some(format!("io.corral.{}.{}", e.aggregate_type, e.event_type))
        );
        assert_eq!(
            header("ce-subject"),
            Some(format!("{}/{}", e.aggregate_type, e.aggregate_id))
        );
        assert_eq!(
            header("ce-time"),
            Some(corral_projections::canonical::format_time(e.recorded_at))
        );
        assert_eq!(header("Content-Type").as_deref(), Some("application/json"));
        let correlation = e.metadata["correlation_id"].as_str().map(str::to_string);
        if correlation.is_some() {
            correlated += 1;
        }
        assert_eq!(header(publisher::CORRELATION_HEADER), correlation);
        let payload: Value = serde_json::from_slice(&message.payload).expect("JSON payload");
        assert_eq!(payload, entry.envelope(), "envelope of {}", entry.position);
        assert_eq!(payload["position"], entry.position);
        assert_eq!(payload["eventId"], e.event_id.to_string());
        assert_eq!(payload["aggregateId"], e.aggregate_id);
        assert_eq!(payload["hash"], json!(hex_of(&entry.hash)));
    }
    assert!(correlated > 0, "API events carry a correlation id header");
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `corral-publisher` test binary; killed (SIGKILL) when dropped.
struct Child9 {
    child: Child,
    log: std::path::PathBuf,
}

impl Child9 {
    fn start(app: &TestApp, nats_url: &str, config: &PublisherConfig, batch: i64) -> Self {
        let log = std::env::temp_dir().join(format!("corral-publisher-{}.log", Uuid::new_v4()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_corral-publisher"))
            .env("DATABASE_URL", &app.db.url)
            .env("NATS_URL", nats_url)
            .env("CORRAL_EVENTS_STREAM", &config.stream)
            .env("CORRAL_EVENTS_SUBJECT_PREFIX", &config.subject_prefix)
            .args(["--batch", &batch.to_string()])
            .env("RUST_LOG", "info,sqlx=warn,corral_workers=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start corral-publisher");
        Self { child, log }
    }

    /// `kill -9`.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Child9 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() && std::env::var_os("CORRAL_TEST_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!("corral-publisher log: {}", self.log.display());
        }
    }
}

#[tokio::test]
async fn a_publisher_killed_mid_batch_publishes_every_event_exactly_once_in_order() {
    let app = TestApp::spawn().await;
    let url = nats::url();
    let js = jetstream::new(async_nats::connect(&url).await.expect("connect to NATS"));
    let config = nats::publisher_config();
    let mut writer = Writer::new(&app, 8, 2_000).await;
    // A backlog, so that the publisher is busy (batches in flight) when it is killed.
    writer.write(&app, 1_000).await;
    let total_before = log_head(&app).await as u64;
    let batch = 32;
    // More events are written while it publishes, is killed and restarts.
    let kills = async {
        let mut child = Child9::start(&app, &url, &config, batch);
        let mut published = 0;
        for run in 1..=4 {
            wait_for_messages(
                &js,
                &config.stream,
                published + 150,
                Duration::from_secs(60),
                &format!("run {run}"),
            )
            .await;
            child.kill();
            published = stream_messages(&js, &config.stream).await;
            let mut conn = app.pool.acquire().await.expect("conn");
            let checkpoint = public_log::checkpoint(&mut conn, &config.checkpoint_name())
                .await
                .expect("checkpoint");
            // Informative: whether the kill left acknowledged messages behind the checkpoint.
            eprintln!("kill {run}: {published} messages in the stream, checkpoint {checkpoint}");
            child = Child9::start(&app, &url, &config, batch);
        }
        assert!(
            published < total_before + 600,
            "killed before everything was published ({published})"
        );
        child
    };
    let ((), third) = tokio::join!(writer.write(&app, 600), kills);
    let head = log_head(&app).await;
    assert!(head >= 1_600, "at least 1,600 events ({head})");
    wait_for_messages(
        &js,
        &config.stream,
        head as u64,
        Duration::from_secs(60),
        "after the restarts",
    )
    .await;
    // Give a wrong extra message (a duplicate) the time to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_stream_is_the_log(&app, &js, &config).await;
    let lag = publisher::lag(&app.pool).await.expect("lag");
    assert_eq!(lag.len(), 1);
    assert_eq!(lag[0].stream, config.stream);
    assert_eq!((lag[0].checkpoint, lag[0].events), (head, 0));
    assert_eq!(lag[0].seconds, 0.0);
    third.kill();
    let _ = js.delete_stream(&config.stream).await;
    app.shutdown().await;
}

/// `corral_events_publish_lag_events{stream="..."}` from `/metrics`.
async fn scraped_lag(app: &TestApp, stream: &str) -> Option<i64> {
    let request = axum::http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .expect("request");
    let (status, body) = app.http(request).await;
    assert_eq!(status, axum::http::StatusCode::OK);
    let text = body.as_str().expect("text").to_string();
    let prefix = format!("corral_events_publish_lag_events{{stream=\"{stream}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().expect("a number"))
}

async fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn events_wait_in_postgres_while_nats_is_down_and_are_published_after() {
    let app = TestApp::spawn().await;
    let mut server = nats::OwnedServer::start();
    let js = jetstream::new(
        async_nats::connect(server.url())
            .await
            .expect("connect to NATS"),
    );
    let config = nats::publisher_config();
    let stats = app.state.metrics.publisher.clone();
    let running = publisher::spawn(
        app.pool.clone(),
        server.url(),
        config.clone(),
        stats.clone(),
    );
    let mut writer = Writer::new(&app, 4, 600).await;
    writer.write(&app, 100).await;
    let head = log_head(&app).await;
    wait_until(
        "published while NATS is up",
        Duration::from_secs(30),
        || stats.position.load(Ordering::Relaxed) == head,
    )
    .await;
    assert!(stats.connected.load(Ordering::Relaxed));
    assert_eq!(scraped_lag(&app, &config.stream).await, Some(0));

    server.stop();
    wait_until(
        "the publisher sees NATS down",
        Duration::from_secs(30),
        || !stats.connected.load(Ordering::Relaxed),
    )
    .await;
    writer.write(&app, 300).await;
    let head_down = log_head(&app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lag = publisher::lag(&app.pool).await.expect("lag");
    assert_eq!(lag.len(), 1);
    assert_eq!(
        lag[0].events,
        head_down - head,
        "the lag is what was written"
    );
    assert!(
        lag[0].seconds > 0.0,
        "the oldest unpublished event has an age"
    );
    assert_eq!(
        scraped_lag(&app, &config.stream).await,
        Some(head_down - head)
    );
    assert_eq!(stats.position.load(Ordering::Relaxed), head);

    server.restart();
    // Writes go on while it reconnects.
    writer.write(&app, 100).await;
    let final_head = log_head(&app).await;
    wait_until(
        "published after NATS is back",
        Duration::from_secs(60),
        || stats.position.load(Ordering::Relaxed) == final_head,
    )
    .await;
    assert!(stats.published.load(Ordering::Relaxed) >= final_head as u64);
    assert_stream_is_the_log(&app, &js, &config).await;
    assert_eq!(scraped_lag(&app, &config.stream).await, Some(0));
    running.shutdown().await;
    let _ = js.delete_stream(&config.stream).await;
    drop(server);
    app.shutdown().await;
}

#[tokio::test]
async fn only_one_publisher_runs_and_another_takes_over() {
    let app = TestApp::spawn().await;
    let url = nats::url();
    let js = jetstream::new(async_nats::connect(&url).await.expect("connect to NATS"));
    let config = nats::publisher_config();
    let first_stats = Arc::new(publisher::PublisherStats::default());
    let second_stats = Arc::new(publisher::PublisherStats::default());
    let first = publisher::spawn(
        app.pool.clone(),
        url.clone(),
        config.clone(),
        first_stats.clone(),
    );
    wait_until("the first publisher leads", Duration::from_secs(10), || {
        first_stats.leader.load(Ordering::Relaxed)
    })
    .await;
    let second = publisher::spawn(
        app.pool.clone(),
        url.clone(),
        config.clone(),
        second_stats.clone(),
    );
    let mut writer = Writer::new(&app, 2, 200).await;
    writer.write(&app, 50).await;
    let head = log_head(&app).await;
    wait_until("published", Duration::from_secs(30), || {
        first_stats.position.load(Ordering::Relaxed) == head
    })
    .await;
    assert_eq!(
        first_stats.interruptions.load(Ordering::Relaxed),
        0,
        "a fresh stream needs no retry"
    );
    assert!(!second_stats.leader.load(Ordering::Relaxed));
    assert_eq!(second_stats.published.load(Ordering::Relaxed), 0);
    first.shutdown().await;
    // As if the first one had died with acknowledgements that never reached the checkpoint:
    // the next publisher resumes after what the stream holds, not after its checkpoint (and
    // not by relying on the dedup window, which would show as interruptions).
    sqlx::query("UPDATE log_checkpoints SET log_position = 10 WHERE name = $1")
        .bind(config.checkpoint_name())
        .execute(&app.pool)
        .await
        .expect("rewind the checkpoint");
    writer.write(&app, 50).await;
    let head = log_head(&app).await;
    wait_until(
        "the second publisher took over",
        Duration::from_secs(30),
        || second_stats.position.load(Ordering::Relaxed) == head,
    )
    .await;
    assert!(second_stats.leader.load(Ordering::Relaxed));
    assert_eq!(second_stats.interruptions.load(Ordering::Relaxed), 0);
    assert_eq!(
        second_stats.published.load(Ordering::Relaxed),
        50,
        "only the new events were published"
    );
    assert_stream_is_the_log(&app, &js, &config).await;
    second.shutdown().await;
    let _ = js.delete_stream(&config.stream).await;
    app.shutdown().await;
}
