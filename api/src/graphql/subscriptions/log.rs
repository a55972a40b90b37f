//! The `events` subscription: its filter, its envelope and the loop that follows the log.

use std::collections::VecDeque;

use async_graphql::{InputObject, Json, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use corral_projections::public_log::{self, LogEntry, LogFilter};
use corral_projections::StoreError;
use futures::Stream;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::watch;

use super::super::errors::coded;
use super::super::scalars::Position;
use super::BATCH;
use crate::audit::{MAX_FILTER_CHARS, MAX_FILTER_TYPES};
use crate::error_codes::ErrorCode;

/// Which events to stream. Every condition given must hold.
#[derive(InputObject, Default, Debug, Clone)]
pub struct EventStreamFilter {
    /// Only these aggregate types (`Group`, `Membership`, ...).
    pub aggregate_types: Option<Vec<String>>,
    /// Only these aggregates (for Membership, the group's id).
    pub aggregate_ids: Option<Vec<ID>>,
    /// Only these event types.
    pub event_types: Option<Vec<String>>,
}

impl EventStreamFilter {
    pub(super) fn into_filter(self) -> Result<LogFilter> {
        let ids: Vec<String> = self
            .aggregate_ids
            .unwrap_or_default()
            .into_iter()
            .map(|id| id.0)
            .collect();
        let types = self.aggregate_types.unwrap_or_default();
        let events = self.event_types.unwrap_or_default();
        for (field, list) in [
            ("aggregateTypes", &types),
            ("aggregateIds", &ids),
            ("eventTypes", &events),
        ] {
            if list.len() > MAX_FILTER_TYPES
                || list
                    .iter()
                    .any(|s| s.is_empty() || s.len() > MAX_FILTER_CHARS)
            {
                return Err(coded(
                    ErrorCode::BadUserInput,
                    format!(
                        "filter.{field}: at most {MAX_FILTER_TYPES} values of 1-{MAX_FILTER_CHARS} characters"
                    ),
                ));
            }
        }
        Ok(LogFilter {
            aggregate_types: types,
            aggregate_ids: ids,
            event_types: events,
            ..Default::default()
        })
    }
}

/// One event of the log: the same envelope as on NATS.
#[derive(SimpleObject, Clone, Debug)]
pub struct LogEvent {
    /// Its position in the commit-ordered log (gapless over the unfiltered log).
    pub position: Position,
    /// Unique id (NATS `Nats-Msg-Id`).
    pub event_id: ID,
    /// `Group`, `Membership`, ...
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: ID,
    /// The aggregate's version after the event.
    pub version: i64,
    /// The event type.
    pub event_type: String,
    /// The stored payload's schema version.
    pub event_version: String,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Actor, source, correlation and causation ids, reason.
    pub metadata: Json<Value>,
    /// The stored payload, `{ "<eventType>": { ... } }`.
    pub payload: Json<Value>,
    /// Its link in the hash chain (hex).
    pub hash: String,
}

impl From<LogEntry> for LogEvent {
    fn from(entry: LogEntry) -> Self {
        let e = entry.event;
        Self {
            position: Position(entry.position),
            event_id: ID(e.event_id.to_string()),
            aggregate_type: e.aggregate_type,
            aggregate_id: ID(e.aggregate_id),
            version: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            recorded_at: e.recorded_at,
            metadata: Json(e.metadata),
            payload: Json(e.payload),
            hash: hex::encode(entry.hash),
        }
    }
}

/// Follows the log from `after` (exclusive): batches of entries passing `filter`, forever.
/// Between batches it waits for the head to move (or `POLL`); a database error ends the
/// stream with that error, so the client can resubscribe from its last position.
pub(crate) fn follow(
    pool: PgPool,
    head: watch::Receiver<i64>,
    filter: LogFilter,
    after: i64,
) -> impl Stream<Item = Result<LogEntry, StoreError>> {
    struct State {
        pool: PgPool,
        head: watch::Receiver<i64>,
        filter: LogFilter,
        after: i64,
        buffer: VecDeque<LogEntry>,
        failed: bool,
    }
    let state = State {
        pool,
        head,
        filter,
        after,
        buffer: VecDeque::new(),
        failed: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.failed {
            return None;
        }
        loop {
            if let Some(entry) = s.buffer.pop_front() {
                return Some((Ok(entry), s));
            }
            // The head as the watcher last saw it: everything up to it is committed. Read from
            // the database only when the watcher has not seen as far as we are (it starts at 0).
            let watched = *s.head.borrow_and_update();
            let read = async {
                let mut conn = s.pool.acquire().await?;
                let top = if watched > s.after {
                    watched
                } else {
                    public_log::head(&mut conn).await?.0
                };
                let entries =
                    public_log::read(&mut conn, s.after, Some(top), &s.filter, BATCH).await?;
                Ok::<_, StoreError>((top, entries))
            };
            match read.await {
                Err(err) => {
                    s.failed = true;
                    return Some((Err(err), s));
                }
                Ok((top, entries)) => {
                    let full = entries.len() as i64 == BATCH;
                    s.after = match entries.last() {
                        Some(last) if full => last.position,
                        // Everything up to `top` was read (a filter may have passed none).
                        _ => top.max(s.after),
                    };
                    s.buffer.extend(entries);
                    // Idle: wait for the head to move (the process's one watcher polls the
                    // log for everyone, so idle subscriptions cost no queries).
                    if s.buffer.is_empty() && s.head.changed().await.is_err() {
                        s.failed = true;
                        return Some((Err(StoreError::Data("the log watcher stopped".into())), s));
                    }
                }
            }
        }
    })
}
