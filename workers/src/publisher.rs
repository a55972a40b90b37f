//! The NATS JetStream publisher of the event log: every sequenced event, in position order,
//! exactly once, to `<prefix>.<aggregate_type>.<aggregate_id>.<event_type>` in one stream
//! (file storage), with the public envelope as payload.
//!
//! The events table is the outbox; PostgreSQL stays the source of truth.
//!
//! - **One publisher per cluster**: it holds a session advisory lock on a connection of its own
//!   (not a row lock in an open transaction, which would hold back every projector's xmin
//!   horizon). Other processes wait to take over.
//! - **Resume**: on start and after any error it reads the stream's last message and its
//!   `Corral-Position` header, and resumes after `max(checkpoint, that position)`. A killed
//!   publisher may have had acks in flight that never reached the checkpoint; the stream itself
//!   says what it holds, so restarts never publish an event twice, whatever the dedup window.
//! - **No reordering, no gaps**: a batch is pipelined (all sent, then the acks awaited in
//!   order) and each message carries `Nats-Expected-Last-Sequence`, so once one fails every later
//!   one of the batch is refused too; the publisher then re-syncs from the stream. `Nats-Msg-Id`
//!   (the event id) is a second line of defence. The checkpoint (`log_checkpoints`, named
//!   `nats-publisher:<stream>`) advances after the acks.
//! - **NATS down**: events wait in PostgreSQL; the publisher warns once per outage and retries
//!   with a capped back-off.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, Context};
use corral_projections::leader::{Leader, Leadership};
use corral_projections::public_log::{self, LogEntry, RawEntry};
use corral_projections::StoreError;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::watch;

/// Header carrying the event's public log position (decimal).
pub const POSITION_HEADER: &str = "Corral-Position";
/// Header carrying the request's correlation id, when the event's metadata has one.
pub const CORRELATION_HEADER: &str = "Corral-Correlation-Id";
/// Prefix of the publisher's checkpoint names in `log_checkpoints` (the stream name follows).
pub const CHECKPOINT_PREFIX: &str = "nats-publisher:";
/// Longest pause between retries while NATS or the database is unavailable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where and how the publisher writes. Tests give each run its own stream and prefix (two
/// streams on one server cannot share subjects).
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// JetStream stream (file storage), created or updated at start.
    pub stream: String,
    /// Subject prefix; subjects are `<prefix>.<aggregate_type>.<aggregate_id>.<event_type>`.
    pub subject_prefix: String,
    /// Events per batch (read, published pipelined, then checkpointed).
    pub batch: i64,
    /// How long the stream keeps messages (zero: no limit).
    pub max_age: Duration,
    /// The stream's `Nats-Msg-Id` deduplication window.
    pub duplicate_window: Duration,
    /// How often to look for new events when no notification arrives.
    pub poll: Duration,
    /// How long to wait for each JetStream acknowledgement or API reply.
    pub timeout: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            stream: "CORRAL_EVENTS".into(),
            subject_prefix: "corral.events".into(),
            batch: 256,
            max_age: Duration::ZERO,
            duplicate_window: Duration::from_secs(120),
            poll: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl PublisherConfig {
    /// The defaults, with `CORRAL_EVENTS_STREAM` and `CORRAL_EVENTS_SUBJECT_PREFIX` applied.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_over(Self::default())
    }

    /// `config`, with `CORRAL_EVENTS_STREAM` and `CORRAL_EVENTS_SUBJECT_PREFIX` applied.
    pub fn from_env_over(mut config: Self) -> Result<Self, ConfigError> {
        if let Some(stream) = env("CORRAL_EVENTS_STREAM") {
            config.stream = stream;
        }
        if let Some(prefix) = env("CORRAL_EVENTS_SUBJECT_PREFIX") {
            config.subject_prefix = prefix;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the stream name and the subject prefix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad_name = |c: char| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c);
        if self.stream.is_empty() || self.stream.chars().any(bad_name) {
            return Err(ConfigError(format!(
                "CORRAL_EVENTS_STREAM {:?} is not a valid JetStream stream name",
                self.stream
            )));
        }
        let bad_token = |t: &str| {
            t.is_empty()
                || t.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '>')
        };
        if self.subject_prefix.split('.').any(bad_token) {
            return Err(ConfigError(format!(
                "CORRAL_EVENTS_SUBJECT_PREFIX {:?} must be dot-separated tokens without \
                 wildcards or whitespace",
                self.subject_prefix
            )));
        }
        if self.batch < 1 {
            return Err(ConfigError(
                "the publisher's batch must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The checkpoint this configuration publishes from (`nats-publisher:<stream>`).
    pub fn checkpoint_name(&self) -> String {
        format!("{CHECKPOINT_PREFIX}{}", self.stream)
    }

    /// The subject of one event.
    pub fn subject(&self, entry: &impl Published) -> String {
        format!(
            "{}.{}.{}.{}",
            self.subject_prefix,
            subject_token(entry.aggregate_type()),
            subject_token(entry.aggregate_id()),
            subject_token(entry.event_type())
        )
    }
}

/// What the subject and headers of a published event are made of.
pub trait Published {
    /// Aggregate type.
    fn aggregate_type(&self) -> &str;
    /// Aggregate id.
    fn aggregate_id(&self) -> &str;
    /// Event type.
    fn event_type(&self) -> &str;
    /// Event id.
    fn event_id(&self) -> uuid::Uuid;
    /// Log position.
    fn position(&self) -> i64;
    /// `metadata.correlation_id`.
    fn correlation_id(&self) -> Option<&str>;
}

impl Published for LogEntry {
    fn aggregate_type(&self) -> &str {
        &self.event.aggregate_type
    }
    fn aggregate_id(&self) -> &str {
        &self.event.aggregate_id
    }
    fn event_type(&self) -> &str {
        &self.event.event_type
    }
    fn event_id(&self) -> uuid::Uuid {
        self.event.event_id
    }
    fn position(&self) -> i64 {
        self.position
    }
    fn correlation_id(&self) -> Option<&str> {
        LogEntry::correlation_id(self)
    }
}

impl Published for RawEntry {
    fn aggregate_type(&self) -> &str {
        &self.aggregate_type
    }
    fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn event_id(&self) -> uuid::Uuid {
        self.event_id
    }
    fn position(&self) -> i64 {
        self.position
    }
    fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// One subject token: ids are UUIDs and types alphanumeric, but anything that would change the
/// subject's shape (`.`, `*`, `>`, whitespace, control characters) becomes `_`, and an empty
/// token `_`.
pub fn subject_token(s: &str) -> String {
    if s.is_empty() {
        return "_".into();
    }
    s.chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The headers of one event's message, as (name, value) pairs: `Nats-Msg-Id` (the event id),
/// `Corral-Position` and, when the metadata has one, `Corral-Correlation-Id`.
pub fn headers(entry: &impl Published) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("Nats-Msg-Id", entry.event_id().to_string()),
        (POSITION_HEADER, entry.position().to_string()),
    ];
    if let Some(id) = entry.correlation_id() {
        // A header value cannot hold line breaks.
        let id: String = id.chars().filter(|c| !c.is_control()).collect();
        if !id.is_empty() {
            out.push((CORRELATION_HEADER, id));
        }
    }
    out
}

/// Counters of this process's publisher, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Events acknowledged by JetStream.
    pub published: AtomicU64,
    /// The last position acknowledged (or found in the stream at a re-sync).
    pub position: AtomicI64,
    /// Whether the NATS connection is up.
    pub connected: AtomicBool,
    /// Whether this process holds the publisher lock (is the cluster's publisher).
    pub leader: AtomicBool,
    /// Rounds interrupted by an error (each followed by a re-sync from the stream).
    pub interruptions: AtomicU64,
}

impl PublisherStats {
    /// The counters in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out += "# HELP corral_events_published_total Events published to NATS by this process.\n\
                # TYPE corral_events_published_total counter\n";
        out += &format!(
            "corral_events_published_total {}\n",
            self.published.load(Ordering::Relaxed)
        );
        out += "# HELP corral_events_publish_position Last log position this process published.\n\
                # TYPE corral_events_publish_position gauge\n";
        out += &format!(
            "corral_events_publish_position {}\n",
            self.position.load(Ordering::Relaxed)
        );
        out += "# HELP corral_events_publish_interruptions_total Publishing rounds interrupted by an error (then re-synced from the stream).\n\
                # TYPE corral_events_publish_interruptions_total counter\n";
        out += &format!(
            "corral_events_publish_interruptions_total {}\n",
            self.interruptions.load(Ordering::Relaxed)
        );
        out += "# HELP corral_events_publisher_connected Whether this process's publisher is connected to NATS.\n\
                # TYPE corral_events_publisher_connected gauge\n";
        out += &format!(
            "corral_events_publisher_connected {}\n",
            u8::from(self.connected.load(Ordering::Relaxed))
        );
        out
    }
}

/// How far one stream's publisher is behind the log, read from the database (so it is right
/// whichever process publishes).
#[derive(Debug, Clone, PartialEq)]
pub struct PublishLag {
    /// The stream (the checkpoint's name without its prefix).
    pub stream: String,
    /// The publisher's checkpoint.
    pub checkpoint: i64,
    /// Events sequenced but not yet published.
    pub events: i64,
    /// Age of the oldest unpublished event in seconds (0 when none).
    pub seconds: f64,
}

/// Every publisher checkpoint's lag behind the log head.
pub async fn lag(pool: &PgPool) -> Result<Vec<PublishLag>, StoreError> {
    let rows = sqlx::query(
        "SELECT substr(c.name, length($1) + 1) AS stream, c.log_position,
                greatest(h.head - c.log_position, 0) AS events,
                coalesce(extract(epoch FROM now() - e.recorded_at)::float8, 0) AS seconds
           FROM log_checkpoints c
          CROSS JOIN (SELECT coalesce(max(log_position), 0) AS head FROM event_log) h
           LEFT JOIN event_log l ON l.log_position = c.log_position + 1
           LEFT JOIN events e ON e.global_position = l.global_position
          WHERE starts_with(c.name, $1)
          ORDER BY c.name",
    )
    .bind(CHECKPOINT_PREFIX)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PublishLag {
                stream: r.try_get("stream")?,
                checkpoint: r.try_get("log_position")?,
                events: r.try_get("events")?,
                seconds: r.try_get::<f64, _>("seconds")?.max(0.0),
            })
        })
        .collect()
}

/// The lag gauges in Prometheus text format.
pub fn render_lag(lags: &[PublishLag]) -> String {
    let mut out = String::new();
    out +=
        "# HELP corral_events_publish_lag_events Events sequenced but not yet published to NATS.\n\
            # TYPE corral_events_publish_lag_events gauge\n";
    for l in lags {
        out += &format!(
            "corral_events_publish_lag_events{{stream=\"{}\"}} {}\n",
            l.stream, l.events
        );
    }
    out += "# HELP corral_events_publish_lag_seconds Age of the oldest event not yet published to NATS.\n\
            # TYPE corral_events_publish_lag_seconds gauge\n";
    for l in lags {
        out += &format!(
            "corral_events_publish_lag_seconds{{stream=\"{}\"}} {}\n",
            l.stream, l.seconds
        );
    }
    out
}

/// Why a publishing round stopped.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    /// The database failed (the lock connection may be gone).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// NATS or JetStream failed: re-sync from the stream.
    #[error("{0}")]
    Nats(String),
    /// The client is not connected (yet, or any more): wait for it.
    #[error("not connected to NATS")]
    NotConnected,
}

impl From<sqlx::Error> for PublishError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

fn nats(context: &str, e: impl std::fmt::Display) -> PublishError {
    PublishError::Nats(format!("{context}: {e}"))
}

/// Where the stream stands: its last sequence and the position of the event there.
#[derive(Debug, Clone, Copy)]
struct Synced {
    last_sequence: u64,
    position: i64,
}

/// A running publisher ([`spawn`]); [`Publisher::shutdown`] stops it.
pub struct Publisher {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Stops the publisher and waits for it (a batch in flight is finished or abandoned; the
    /// next publisher re-syncs from the stream either way).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts [`run`] in a task of its own.
pub fn spawn(
    pool: PgPool,
    nats_url: String,
    config: PublisherConfig,
    stats: Arc<PublisherStats>,
) -> Publisher {
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(pool, nats_url, config, stats, stop_rx));
    Publisher { stop, task }
}

/// Resolves once `stop` turns true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps `d`, or less if `stop` turns true; returns whether to stop.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stopped(stop) => true,
        _ = tokio::time::sleep(d) => false,
    }
}

fn is_stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Longest a busy publisher goes without recording its checkpoint.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Logs failures once per outage (later ones at debug level) and paces retries.
struct Outage {
    what: Option<String>,
    backoff: Duration,
}

impl Outage {
    fn new() -> Self {
        Self {
            what: None,
            backoff: Duration::from_millis(100),
        }
    }

    fn failed(&mut self, e: &PublishError) -> Duration {
        if self.what.is_none() {
            tracing::warn!(error = %e, "NATS publishing interrupted; events wait in PostgreSQL and will be published when it works again");
        } else {
            tracing::debug!(error = %e, "NATS publishing still failing");
        }
        self.what = Some(e.to_string());
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        wait
    }

    fn is_on(&self) -> bool {
        self.what.is_some()
    }

    fn ok(&mut self) {
        if self.what.take().is_some() {
            tracing::info!("NATS publishing resumed");
        }
        self.backoff = Duration::from_millis(100);
    }
}

/// Publishes the log until `stop` turns true (or its sender is dropped): waits to become the
/// cluster's publisher, then keeps the stream level with the log. Errors are logged and
/// retried; the publisher never skips an event and never gives up while running.
pub async fn run(
    pool: PgPool,
    nats_url: String,
    config: PublisherConfig,
    stats: Arc<PublisherStats>,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(e) = config.validate() {
        tracing::error!(error = %e, "the NATS publisher cannot start");
        return;
    }
    let events_stats = stats.clone();
    let client = loop {
        let stats = events_stats.clone();
        let connecting = async_nats::ConnectOptions::new()
            .name("corral-publisher")
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let stats = stats.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            stats.connected.store(true, Ordering::Relaxed);
                            tracing::info!("NATS publisher connected");
                        }
                        async_nats::Event::Disconnected => {
                            stats.connected.store(false, Ordering::Relaxed);
                            tracing::warn!("NATS publisher disconnected; events wait in PostgreSQL until it reconnects");
                        }
                        other => tracing::debug!(event = %other, "NATS publisher connection event"),
                    }
                }
            })
            .connect(nats_url.as_str());
        match connecting.await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(error = %e, nats.url = %nats_url, "cannot use NATS_URL; trying again in 30 s");
                if pause(Duration::from_secs(30), &mut stop).await {
                    return;
                }
            }
        }
    };
    let js = jetstream::ContextBuilder::new()
        .timeout(config.timeout)
        .build(client.clone());
    let mut head = public_log::watch_head(pool.clone(), config.poll);
    loop {
        let Some(mut leader) = lead(&pool, &config, &stats, &mut stop).await else {
            return;
        };
        tracing::info!(nats.stream = %config.stream, nats.subject_prefix = %config.subject_prefix, "this process is the NATS publisher");
        publish_while_leader(
            leader.conn(),
            &client,
            &js,
            &config,
            &stats,
            &mut head,
            &mut stop,
        )
        .await;
        stats.leader.store(false, Ordering::Relaxed);
        // Ending the session releases the lock (a broken one is gone already).
        leader.resign().await;
        if is_stopped(&stop) {
            return;
        }
    }
}

/// Waits until this process leads the publishing of `config.stream` (`None`: stopped).
/// Creates the checkpoint row, so that the lag shows while NATS is unreachable.
async fn lead(
    pool: &PgPool,
    config: &PublisherConfig,
    stats: &PublisherStats,
    stop: &mut watch::Receiver<bool>,
) -> Option<Leader> {
    let leadership = Leadership::Publisher(config.stream.clone());
    loop {
        let mut leader = Leader::wait_for(pool, &leadership, Duration::from_secs(2), stop).await?;
        match public_log::advance(leader.conn(), &config.checkpoint_name(), 0).await {
            Ok(()) => {
                stats.leader.store(true, Ordering::Relaxed);
                return Some(leader);
            }
            Err(e) => {
                tracing::warn!(error = %e, "NATS publisher: cannot create its checkpoint");
                // The lock goes with the session.
                leader.resign().await;
                if pause(Duration::from_secs(1), stop).await {
                    return None;
                }
            }
        }
    }
}

/// Publishes batches while the lock connection works; returns on `stop` or when the lock
/// connection fails (leadership is then lost and must be taken again).
async fn publish_while_leader(
    lock_conn: &mut PgConnection,
    client: &async_nats::Client,
    js: &Context,
    config: &PublisherConfig,
    stats: &PublisherStats,
    head: &mut watch::Receiver<i64>,
    stop: &mut watch::Receiver<bool>,
) {
    let checkpoint = config.checkpoint_name();
    let mut synced: Option<Synced> = None;
    let mut outage = Outage::new();
    let began = std::time::Instant::now();
    let mut last_checkpoint = std::time::Instant::now();
    // The position last written to the checkpoint.
    let mut recorded = 0i64;
    // The batch after the one in flight, read while its acks were awaited.
    let mut prefetched: Option<Vec<RawEntry>> = None;
    loop {
        if is_stopped(stop) {
            return;
        }
        let result = async {
            if client.connection_state() != State::Connected {
                return Err(PublishError::NotConnected);
            }
            let at = match synced {
                Some(s) => s,
                None => {
                    let s = sync(lock_conn, js, config, &checkpoint).await?;
                    stats.position.store(s.position, Ordering::Relaxed);
                    synced = Some(s);
                    s
                }
            };
            // Mark the head seen before reading, so a notification after the read wakes us.
            head.borrow_and_update();
            let entries = match prefetched.take() {
                // Read while the previous batch's acks were awaited (only a non-empty read:
                // an empty one may predate the head just marked seen).
                Some(next) if next.first().map(|e| e.position) == Some(at.position + 1) => next,
                _ => public_log::read_raw(lock_conn, at.position, config.batch).await?,
            };
            if entries.is_empty() {
                if at.position > recorded {
                    public_log::advance(lock_conn, &checkpoint, at.position).await?;
                    recorded = at.position;
                }
                return Ok(None);
            }
            // A full batch: more is likely waiting, so read the next one while this one's
            // acks come back (the connection is free while NATS works).
            let outcome = if entries.len() as i64 == config.batch {
                let after = entries.last().map_or(at.position, |e| e.position);
                let (outcome, next) = tokio::join!(
                    publish_batch(js, config, at, &entries),
                    public_log::read_raw(lock_conn, after, config.batch)
                );
                prefetched = next.ok().filter(|n| !n.is_empty());
                outcome
            } else {
                publish_batch(js, config, at, &entries).await
            };
            if outcome.error.is_some() {
                prefetched = None;
            }
            if let Some(done) = outcome.done {
                synced = Some(done);
                stats
                    .published
                    .fetch_add(outcome.published, Ordering::Relaxed);
                // The stream, not the checkpoint, says where to resume (see `sync`), so the
                // checkpoint (which the lag metrics read) is written at most every
                // CHECKPOINT_EVERY while busy, and always once caught up: a commit per batch
                // would cost a WAL flush per batch.
                let caught_up = (entries.len() as i64) < config.batch;
                if caught_up || last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                    public_log::advance(lock_conn, &checkpoint, done.position).await?;
                    last_checkpoint = std::time::Instant::now();
                    recorded = done.position;
                }
                stats.position.store(done.position, Ordering::Relaxed);
            }
            match outcome.error {
                Some(e) => {
                    synced = None;
                    Err(e)
                }
                None => Ok(Some(entries.len())),
            }
        }
        .await;
        match result {
            Ok(Some(_)) => {
                outage.ok();
                tokio::task::yield_now().await;
            }
            Ok(None) => {
                outage.ok();
                tokio::select! {
                    _ = stopped(stop) => return,
                    _ = async {
                        // A closed channel (never, while we hold a receiver) must not spin.
                        if head.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    } => {}
                    _ = tokio::time::sleep(config.poll) => {}
                }
            }
            Err(PublishError::NotConnected)
                if client.connection_state() == State::Pending
                    && !outage.is_on()
                    && began.elapsed() < Duration::from_secs(5) =>
            {
                // Still making the first connection: nothing to report yet.
                synced = None;
                if pause(Duration::from_millis(100), stop).await {
                    return;
                }
            }
            Err(e) => {
                synced = None;
                if !matches!(e, PublishError::NotConnected) {
                    stats.interruptions.fetch_add(1, Ordering::Relaxed);
                }
                let wait = outage.failed(&e);
                if matches!(e, PublishError::Store(_)) {
                    // The lock lives with this session: if it broke, so did leadership.
                    let alive: Result<i32, _> = sqlx::query_scalar("SELECT 1")
                        .fetch_one(&mut *lock_conn)
                        .await;
                    if alive.is_err() {
                        tracing::warn!(
                            "NATS publisher lost its database session; taking the lock again"
                        );
                        let _ = pause(wait, stop).await;
                        return;
                    }
                }
                if pause(wait, stop).await {
                    return;
                }
            }
        }
    }
}

/// Creates or updates the stream and finds where to resume: after `max(checkpoint, the
/// position of the stream's last message)`. Records that in the checkpoint.
async fn sync(
    conn: &mut PgConnection,
    js: &Context,
    config: &PublisherConfig,
    checkpoint: &str,
) -> Result<Synced, PublishError> {
    // Create the stream when it is missing; otherwise change only what Corral owns (its
    // subjects, the dedup window), keeping what an operator set (replicas, limits, ...).
    let wanted_subjects = vec![format!("{}.>", config.subject_prefix)];
    let info = match js.get_stream(&config.stream).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| nats("reading the stream's configuration", e))?
                .clone();
            if info.config.subjects != wanted_subjects
                || info.config.duplicate_window != config.duplicate_window
            {
                let mut updated = info.config.clone();
                updated.subjects = wanted_subjects;
                updated.duplicate_window = config.duplicate_window;
                js.update_stream(updated)
                    .await
                    .map_err(|e| nats("updating the stream", e))?
            } else {
                info
            }
        }
        Err(_) => js
            .create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: wanted_subjects,
                storage: StorageType::File,
                max_age: config.max_age,
                duplicate_window: config.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|e| nats("creating the stream", e))?
            .cached_info()
            .clone(),
    };
    let state = info.state;
    let in_stream = if state.messages > 0 {
        last_position(js, config, state.last_sequence).await?
    } else {
        None
    };
    let stored = public_log::checkpoint(conn, checkpoint).await?;
    let position = stored.max(in_stream.unwrap_or(0));
    if let Some(p) = in_stream {
        if p < stored {
            tracing::error!(
                nats.stream = %config.stream,
                stream.position = p,
                checkpoint = stored,
                "the stream's last message is older than the publisher's checkpoint (messages were \
                 removed from the stream, or the server lost acknowledged writes); positions {}..={} \
                 are not republished (reset the checkpoint to republish them)",
                p + 1,
                stored
            );
        }
    }
    let (log_head, _) = public_log::head(conn).await?;
    if position > log_head {
        tracing::error!(
            nats.stream = %config.stream,
            position,
            log.head = log_head,
            "the stream is ahead of this database's log: is it another installation's stream?"
        );
    }
    if position > stored {
        public_log::advance(conn, checkpoint, position).await?;
    }
    tracing::info!(
        nats.stream = %config.stream,
        nats.last_sequence = state.last_sequence,
        stream.position = in_stream.unwrap_or(0),
        checkpoint = stored,
        position,
        "NATS publisher synced with its stream"
    );
    Ok(Synced {
        last_sequence: state.last_sequence,
        position,
    })
}

/// Most messages `last_position` looks back past messages without a `Corral-Position`.
const LOOK_BACK: u64 = 1_000;

/// The `Corral-Position` of the stream's last message that has one (`None` when none of the
/// last [`LOOK_BACK`] has). Messages from other publishers on our subjects are skipped.
async fn last_position(
    js: &Context,
    config: &PublisherConfig,
    last_sequence: u64,
) -> Result<Option<i64>, PublishError> {
    let stream = js
        .get_stream_no_info(&config.stream)
        .await
        .map_err(|e| nats("opening the stream", e))?;
    let lowest = last_sequence.saturating_sub(LOOK_BACK).max(1);
    let mut sequence = last_sequence;
    while sequence >= lowest {
        // A deleted sequence (purged, or removed by hand) is skipped.
        if let Ok(message) = stream.get_raw_message(sequence).await {
            let position = message
                .headers
                .get(POSITION_HEADER)
                .and_then(|v| v.as_str().parse::<i64>().ok());
            if position.is_some() {
                return Ok(position);
            }
            tracing::warn!(
                nats.stream = %config.stream,
                nats.sequence = message.sequence,
                "a message without a Corral-Position header in the stream (another publisher on its subjects?)"
            );
        }
        sequence -= 1;
    }
    tracing::warn!(
        nats.stream = %config.stream,
        "none of the stream's last messages has a Corral-Position header; resuming from the checkpoint"
    );
    Ok(None)
}

/// What a batch did: how far the stream got (`None`: not at all) and the first error.
struct BatchOutcome {
    done: Option<Synced>,
    published: u64,
    error: Option<PublishError>,
}

/// Sends every entry (each expecting the previous one's stream sequence), then awaits the acks
/// and takes them in order. Every ack is awaited even after a failure, so that the re-sync
/// that follows sees the stream settled.
async fn publish_batch(
    js: &Context,
    config: &PublisherConfig,
    at: Synced,
    entries: &[RawEntry],
) -> BatchOutcome {
    let mut pending: Vec<(i64, u64, PublishAckFuture)> = Vec::with_capacity(entries.len());
    let mut error = None;
    for (i, entry) in entries.iter().enumerate() {
        let expected = at.last_sequence + i as u64;
        let body = entry.envelope.clone().into_bytes();
        let mut message = PublishMessage::build()
            .payload(body.into())
            .expected_last_sequence(expected);
        for (name, value) in headers(entry) {
            message = message.header(name, value.as_str());
        }
        match js.send_publish(config.subject(entry), message).await {
            Ok(ack) => pending.push((entry.position, expected + 1, ack)),
            Err(e) => {
                error = Some(nats("publishing", e));
                break;
            }
        }
    }
    // Awaited together (each with its own timeout, so an outage costs one timeout, not one
    // per message), then taken in order.
    let (expected, acks): (Vec<(i64, u64)>, Vec<PublishAckFuture>) =
        pending.into_iter().map(|(p, s, a)| ((p, s), a)).unzip();
    let results =
        futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await;
    let mut done = None;
    let mut published = 0;
    let mut broken = false;
    for ((position, sequence), result) in expected.into_iter().zip(results) {
        // Only an unbroken run of acks counts: after a failed ack, a later message may have
        // been stored after someone else's message took the expected sequence (a foreign
        // publisher on our subjects), which would leave a gap if taken as progress.
        if broken {
            break;
        }
        broken = !matches!(&result, Ok(ack) if ack.sequence == sequence && !ack.duplicate);
        match result {
            Ok(ack) if ack.sequence == sequence && !ack.duplicate => {
                published += 1;
                done = Some(Synced {
                    last_sequence: sequence,
                    position,
                });
            }
            Ok(ack) => {
                error.get_or_insert_with(|| {
                    PublishError::Nats(format!(
                        "position {position}: unexpected ack (stream sequence {}, duplicate {}) \
                         where sequence {sequence} was expected",
                        ack.sequence, ack.duplicate
                    ))
                });
            }
            Err(e) => {
                error.get_or_insert_with(|| nats(&format!("position {position}"), e));
            }
        }
    }
    BatchOutcome {
        done,
        published,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_projections::EventRecord;
    use serde_json::json;
    use uuid::Uuid;

    fn entry(aggregate_type: &str, aggregate_id: &str, metadata: serde_json::Value) -> LogEntry {
        LogEntry {
            position: 42,
            hash: vec![0xab; 32],
            event: EventRecord {
                global_position: 7,
                transaction_id: 1,
                event_id: Uuid::nil(),
                aggregate_type: aggregate_type.into(),
                aggregate_id: aggregate_id.into(),
                sequence: 3,
                event_type: "GroupRenamed".into(),
                event_version: "1".into(),
                payload: json!({"GroupRenamed": {"name": "x"}}),
                metadata,
                recorded_at: chrono::Utc::now(),
            },
        }
    }

    #[test]
    fn subjects_name_type_id_and_event() {
        let config = PublisherConfig::default();
        let id = "0b7c4a0e-2f55-4a53-9d1d-0f5b8c8c2b11";
        assert_eq!(
            config.subject(&entry("Group", id, json!({}))),
            format!("corral.events.Group.{id}.GroupRenamed")
        );
    }

    #[test]
    fn subject_tokens_cannot_change_the_subject_shape() {
        assert_eq!(subject_token("a.b"), "a_b");
        assert_eq!(subject_token("*"), "_");
        assert_eq!(subject_token(">"), "_");
        assert_eq!(subject_token("a b\tc\n"), "a_b_c_");
        assert_eq!(subject_token(""), "_");
        assert_eq!(subject_token("Membership"), "Membership");
        let config = PublisherConfig {
            subject_prefix: "t.x".into(),
            ..Default::default()
        };
        let subject = config.subject(&entry("Gr.oup", "a.*.>", json!({})));
        assert_eq!(subject, "t.x.Gr_oup.a____.GroupRenamed");
        assert_eq!(subject.split('.').count(), 5);
    }

    #[test]
    fn headers_carry_id_position_and_correlation() {
        let h = headers(&entry("Group", "g", json!({"correlation_id": "req-1"})));
        assert_eq!(
            h,
            vec![
                ("Nats-Msg-Id", Uuid::nil().to_string()),
                (POSITION_HEADER, "42".to_string()),
                (CORRELATION_HEADER, "req-1".to_string()),
            ]
        );
        let h = headers(&entry("Group", "g", json!({"actor_subject": "alice"})));
        assert_eq!(h.len(), 2, "no correlation id, no header");
        let h = headers(&entry("Group", "g", json!({"correlation_id": "a\r\nb"})));
        assert_eq!(h[2], (CORRELATION_HEADER, "ab".to_string()));
    }

    #[test]
    fn configuration_is_checked() {
        assert!(PublisherConfig::default().validate().is_ok());
        for prefix in ["", "a..b", "a.*", "a.>", "a b", ".a", "a."] {
            let c = PublisherConfig {
                subject_prefix: prefix.into(),
                ..Default::default()
            };
            assert!(c.validate().is_err(), "{prefix:?} is refused");
        }
        for stream in ["", "A.B", "A B", "A*"] {
            let c = PublisherConfig {
                stream: stream.into(),
                ..Default::default()
            };
            assert!(c.validate().is_err(), "{stream:?} is refused");
        }
        assert_eq!(
            PublisherConfig::default().checkpoint_name(),
            "nats-publisher:CORRAL_EVENTS"
        );
    }

    #[test]
    fn metrics_render() {
        let stats = PublisherStats::default();
        stats.published.store(5, Ordering::Relaxed);
        stats.position.store(9, Ordering::Relaxed);
        let text = stats.render();
        assert!(text.contains("corral_events_published_total 5\n"));
        assert!(text.contains("corral_events_publish_position 9\n"));
        let text = render_lag(&[PublishLag {
            stream: "S".into(),
            checkpoint: 3,
            events: 4,
            seconds: 1.5,
        }]);
        assert!(text.contains("corral_events_publish_lag_events{stream=\"S\"} 4\n"));
        assert!(text.contains("corral_events_publish_lag_seconds{stream=\"S\"} 1.5\n"));
    }
}
