//! The `events` subscription: its filter, its envelope and the loop that follows the log.

use std::collections::VecDeque;

use async_graphql::{InputObject, Json, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use corral_projections::group_tree::GROUP_TREE;
use corral_projections::log::Cursor;
use corral_projections::public_log::{self, LogEntry, LogFilter};
use corral_projections::waiter::ConsistencyWaiter;
use corral_projections::StoreError;
use futures::Stream;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::time::{Duration, Instant};
use uuid::Uuid;

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

/// How old the scope check of buffered entries may be when one is delivered.
const SCOPE_RECHECK: Duration = Duration::from_secs(1);

/// Follows the log from `after` (exclusive): batches of entries passing `filter`, forever.
/// Between batches it waits for the head to move (or `POLL`); a database error ends the
/// stream with that error, so the client can resubscribe from its last position.
///
/// `scope`: the roots of a scoped auditor's `audit.read` (`None`: everything). Then only the
/// Group and Membership events of groups in their subtrees are delivered, decided against the
/// tree as it stands when the event is delivered (checked per batch, and again for what is
/// still buffered once the check is older than a second): a group moved out of the scope
/// stops appearing at once, one moved in appears.
pub(crate) fn follow(
    pool: PgPool,
    head: watch::Receiver<i64>,
    mut filter: LogFilter,
    after: i64,
    scope: Option<Scope>,
) -> impl Stream<Item = Result<LogEntry, StoreError>> {
    struct State {
        pool: PgPool,
        head: watch::Receiver<i64>,
        filter: LogFilter,
        after: i64,
        buffer: VecDeque<LogEntry>,
        failed: bool,
        scope: Option<Scope>,
        checked_at: Instant,
    }
    if scope.is_some() {
        // Only groups' events can pass: let the log's SQL skip the rest.
        if filter.aggregate_types.is_empty() {
            filter.aggregate_types = vec!["Group".into(), "Membership".into()];
        } else {
            filter
                .aggregate_types
                .retain(|t| t == "Group" || t == "Membership");
            if filter.aggregate_types.is_empty() {
                filter.aggregate_types.push(String::new());
            }
        }
    }
    let state = State {
        pool,
        head,
        filter,
        after,
        buffer: VecDeque::new(),
        failed: false,
        scope,
        checked_at: Instant::now(),
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.failed {
            return None;
        }
        loop {
            if let Some(scope) = &s.scope {
                if !s.buffer.is_empty() && s.checked_at.elapsed() > SCOPE_RECHECK {
                    let entries: Vec<LogEntry> = s.buffer.drain(..).collect();
                    match in_scope(&s.pool, entries, scope).await {
                        Ok(kept) => s.buffer = kept.into(),
                        Err(err) => {
                            s.failed = true;
                            return Some((Err(err), s));
                        }
                    }
                    s.checked_at = Instant::now();
                }
            }
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
                drop(conn);
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
                    let entries = match &s.scope {
                        None => entries,
                        Some(scope) => match in_scope(&s.pool, entries, scope).await {
                            Ok(kept) => kept,
                            Err(err) => {
                                s.failed = true;
                                return Some((Err(err), s));
                            }
                        },
                    };
                    s.checked_at = Instant::now();
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

/// A scoped auditor's reach over the `events` stream.
pub(crate) struct Scope {
    /// The roots of its `audit.read`.
    pub roots: Vec<Uuid>,
    /// To wait for the group tree to include the events checked (a schema without one, as
    /// in a benchmark, judges by the tree as it is).
    pub waiter: Option<ConsistencyWaiter>,
}

/// Longest wait for the group tree to catch up with the events it decides on; past it, the
/// tree as it stands decides.
const TREE_WAIT: Duration = Duration::from_secs(5);

/// The entries of `entries` a scoped auditor may read now. The tree first catches up with
/// the last of them (the log is sequenced before the tree projector has read it), so that an
/// event is judged by the tree that includes it: a group's move out of the scope is already
/// outside, its creation inside is already inside.
async fn in_scope(
    pool: &PgPool,
    entries: Vec<LogEntry>,
    scope: &Scope,
) -> Result<Vec<LogEntry>, StoreError> {
    let Some(last) = entries.last() else {
        return Ok(entries);
    };
    if let Some(waiter) = &scope.waiter {
        waiter
            .wait(Cursor::of(&last.event), &[GROUP_TREE], TREE_WAIT)
            .await;
    }
    let readable = crate::audit::readable_entries(pool, &entries, &scope.roots).await?;
    Ok(entries
        .into_iter()
        .filter(|e| crate::audit::entry_in(e, &readable))
        .collect())
}
