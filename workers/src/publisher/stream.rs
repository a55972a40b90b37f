//! The JetStream side: syncing with the stream, publishing a batch pipelined, and the loop
//! that keeps the stream level with the log while this process leads.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::Context;
use corral_projections::public_log::{self, RawEntry};
use corral_projections::StoreError;
use sqlx::PgConnection;
use tokio::sync::watch;

use super::js_stream::{ensure_stream, last_marked, send_pipelined, Outgoing, StreamSpec};
use super::message::headers;
use super::plan::{self, Backoff, Synced};
use super::{is_stopped, pause, stopped, PublisherConfig, PublisherStats, POSITION_HEADER};

/// Why a publishing round stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum PublishError {
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

/// Logs failures once per outage (later ones at debug level) and paces retries.
struct Outage {
    what: Option<String>,
    backoff: Backoff,
}

impl Outage {
    fn new() -> Self {
        Self {
            what: None,
            backoff: Backoff::new(),
        }
    }

    fn failed(&mut self, e: &PublishError) -> Duration {
        if self.what.is_none() {
            tracing::warn!(error = %e, "NATS publishing interrupted; events wait in PostgreSQL and will be published when it works again");
        } else {
            tracing::debug!(error = %e, "NATS publishing still failing");
        }
        self.what = Some(e.to_string());
        self.backoff.next()
    }

    fn is_on(&self) -> bool {
        self.what.is_some()
    }

    fn ok(&mut self) {
        if self.what.take().is_some() {
            tracing::info!("NATS publishing resumed");
        }
        self.backoff.reset();
    }
}

/// Publishes batches while the lock connection works; returns on `stop` or when the lock
/// connection fails (leadership is then lost and must be taken again).
pub(super) async fn publish_while_leader(
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
    let began = Instant::now();
    let mut last_checkpoint = Instant::now();
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
                Some(next) if plan::follows(next.first().map(|e| e.position), at.position) => next,
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
            let full = plan::is_full(entries.len(), config.batch);
            let outcome = if full {
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
                // The checkpoint (which the lag metrics read) is written now and then while
                // busy, and always once caught up (see `plan::checkpoint_due`).
                if plan::checkpoint_due(!full, last_checkpoint.elapsed()) {
                    public_log::advance(lock_conn, &checkpoint, done.position).await?;
                    last_checkpoint = Instant::now();
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
    let spec = StreamSpec {
        name: &config.stream,
        subjects: plan::stream_subjects(config),
        duplicate_window: config.duplicate_window,
        max_age: config.max_age,
    };
    let (last_sequence, messages) = ensure_stream(js, &spec).await.map_err(PublishError::Nats)?;
    let in_stream = if messages > 0 {
        last_marked(js, &config.stream, last_sequence)
            .await
            .map_err(PublishError::Nats)?
            .and_then(|h| plan::position_of(h.get(POSITION_HEADER).map(|v| v.as_str())))
    } else {
        None
    };
    let stored = public_log::checkpoint(conn, checkpoint).await?;
    let (log_head, _) = public_log::head(conn).await?;
    let resume = plan::resume(stored, in_stream, log_head);
    let position = resume.position;
    if let Some((from, to)) = resume.lost {
        tracing::error!(
            nats.stream = %config.stream,
            stream.position = from - 1,
            checkpoint = stored,
            "the stream's last message is older than the publisher's checkpoint (messages were \
             removed from the stream, or the server lost acknowledged writes); positions {from}..={to} \
             are not republished (reset the checkpoint to republish them)",
        );
    }
    if resume.ahead_of_log {
        tracing::error!(
            nats.stream = %config.stream,
            position,
            log.head = log_head,
            "the stream is ahead of this database's log: is it another installation's stream?"
        );
    }
    if resume.advance {
        public_log::advance(conn, checkpoint, position).await?;
    }
    tracing::info!(
        nats.stream = %config.stream,
        nats.last_sequence = last_sequence,
        stream.position = in_stream.unwrap_or(0),
        checkpoint = stored,
        position,
        "NATS publisher synced with its stream"
    );
    Ok(Synced {
        last_sequence,
        position,
    })
}

/// What a batch did: how far the stream got (`None`: not at all) and the first error.
struct BatchOutcome {
    done: Option<Synced>,
    published: u64,
    error: Option<PublishError>,
}

/// Sends every entry pipelined ([`send_pipelined`]) and says how far the stream got.
async fn publish_batch(
    js: &Context,
    config: &PublisherConfig,
    at: Synced,
    entries: &[RawEntry],
) -> BatchOutcome {
    let messages = entries
        .iter()
        .map(|entry| Outgoing {
            key: entry.position,
            subject: config.subject(entry),
            headers: headers(entry),
            body: entry.envelope.clone().into_bytes(),
        })
        .collect();
    let sent = send_pipelined(js, at.last_sequence, messages).await;
    let done = (sent.published > 0).then(|| Synced {
        last_sequence: sent.last_sequence,
        position: entries[sent.published - 1].position,
    });
    BatchOutcome {
        done,
        published: sent.published as u64,
        error: sent.error.map(PublishError::Nats),
    }
}
