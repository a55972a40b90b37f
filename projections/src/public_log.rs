//! The public log: events by their commit-ordered, gapless `position` (table `event_log`),
//! for auditors (filtered pages, exports, chain verification), integrators (the NATS
//! publisher, GraphQL subscriptions) and anything else that reads "everything after N".
//!
//! The sequencer assigns positions one batch at a time and commits each batch before the next,
//! so a reader that has seen position N never later finds a new event at or below N: reading
//! `log_position > N` needs no horizon (unlike [`crate::log::CatchUpReader`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::postgres::{PgListener, PgRow};
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::watch;

use crate::canonical::{chain_hash, GENESIS_HASH};
use crate::log::EventRecord;
use crate::StoreError;

/// The channel the sequencer notifies (with the new head position) after each batch.
pub const LOG_CHANNEL: &str = crate::channels::LOG;

/// One sequenced event.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// The public position (1, 2, 3, ...).
    pub position: i64,
    /// The chain link: `sha256(previous hash || canonical event)`.
    pub hash: Vec<u8>,
    /// The stored event.
    pub event: EventRecord,
}

impl LogEntry {
    /// The envelope integrators receive (NATS payload, `events` subscription, NDJSON export).
    /// The payload is the stored one, as hashed; `eventVersion` says which version it is.
    pub fn envelope(&self) -> Value {
        let e = &self.event;
        json!({
            "position": self.position,
            "eventId": e.event_id,
            "aggregateType": e.aggregate_type,
            "aggregateId": e.aggregate_id,
            "version": e.sequence,
            "eventType": e.event_type,
            "eventVersion": e.event_version,
            "recordedAt": format_time(e.recorded_at),
            "metadata": e.metadata,
            "payload": e.payload,
            "hash": hex::encode(&self.hash),
        })
    }

    /// The correlation id from the metadata, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.event
            .metadata
            .get("correlation_id")
            .and_then(Value::as_str)
    }
}

/// A sequenced event with its envelope already written as JSON text, for publishers: the
/// stored payload and metadata are spliced in as PostgreSQL prints them, never parsed and
/// re-encoded. Parsed, the envelope equals [`LogEntry::envelope`].
#[derive(Debug, Clone, PartialEq)]
pub struct RawEntry {
    /// The public position.
    pub position: i64,
    /// Unique event id.
    pub event_id: uuid::Uuid,
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Event type.
    pub event_type: String,
    /// `metadata.correlation_id`, when it is a string.
    pub correlation_id: Option<String>,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The envelope, compact JSON.
    pub envelope: String,
}

/// Up to `limit` entries after `after`, in position order, as [`RawEntry`]s.
pub async fn read_raw(
    conn: &mut PgConnection,
    after: i64,
    limit: i64,
) -> Result<Vec<RawEntry>, StoreError> {
    let rows = sqlx::query(
        "SELECT l.log_position, l.hash, e.event_id, e.aggregate_type, e.aggregate_id,
                e.sequence, e.event_type, e.event_version, e.recorded_at,
                e.metadata::text AS metadata, e.payload::text AS payload,
                e.metadata ->> 'correlation_id' AS correlation_id
           FROM event_log l JOIN events e USING (global_position)
          WHERE l.log_position > $1
          ORDER BY l.log_position LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    let text = |s: &str| Value::String(s.to_string()).to_string();
    rows.iter()
        .map(|r| {
            let position: i64 = r.try_get("log_position")?;
            let hash: Vec<u8> = r.try_get("hash")?;
            let event_id: uuid::Uuid = r.try_get("event_id")?;
            let aggregate_type: String = r.try_get("aggregate_type")?;
            let aggregate_id: String = r.try_get("aggregate_id")?;
            let sequence: i64 = r.try_get("sequence")?;
            let event_type: String = r.try_get("event_type")?;
            let event_version: String = r.try_get("event_version")?;
            let recorded_at: DateTime<Utc> = r.try_get("recorded_at")?;
            let metadata: String = r.try_get("metadata")?;
            let payload: String = r.try_get("payload")?;
            let envelope = format!(
                "{{\"position\":{position},\"eventId\":\"{event_id}\",\"aggregateType\":{},\
                 \"aggregateId\":{},\"version\":{sequence},\"eventType\":{},\
                 \"eventVersion\":{},\"recordedAt\":\"{}\",\"metadata\":{metadata},\
                 \"payload\":{payload},\"hash\":\"{}\"}}",
                text(&aggregate_type),
                text(&aggregate_id),
                text(&event_type),
                text(&event_version),
                format_time(recorded_at),
                hex::encode(&hash),
            );
            Ok(RawEntry {
                position,
                event_id,
                aggregate_type,
                aggregate_id,
                event_type,
                correlation_id: r.try_get("correlation_id")?,
                recorded_at,
                envelope,
            })
        })
        .collect()
}

pub use crate::canonical::format_time;

/// Which events to read. Empty lists and `None` mean "any".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogFilter {
    /// Only these aggregate types (`Group`, `Membership`, ...).
    pub aggregate_types: Vec<String>,
    /// Only these aggregate ids.
    pub aggregate_ids: Vec<String>,
    /// Only these event types (`GroupRenamed`, ...).
    pub event_types: Vec<String>,
    /// Only events of this actor (`metadata.actor_subject`).
    pub actor: Option<String>,
    /// Only events of this request (`metadata.correlation_id`).
    pub correlation_id: Option<String>,
    /// Only events naming this device or service id (`member_events`: Membership events
    /// listing it, and its own Device / Service events).
    pub member_id: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
}

/// The columns [`entry_from_row`] reads, for `event_log l JOIN events e`.
const ENTRY_COLUMNS: &str = "l.log_position, l.hash, e.global_position, \
    e.transaction_id::text AS txid, e.event_id, e.aggregate_type, e.aggregate_id, e.sequence, \
    e.event_type, e.event_version, e.payload, e.metadata, e.recorded_at";

fn entry_from_row(row: &PgRow) -> Result<LogEntry, StoreError> {
    Ok(LogEntry {
        position: row.try_get("log_position")?,
        hash: row.try_get("hash")?,
        event: EventRecord::from_row(row)?,
    })
}

/// The last sequenced position and its hash (0 and the genesis hash for an empty log).
pub async fn head(conn: &mut PgConnection) -> Result<(i64, Vec<u8>), StoreError> {
    crate::sequencer::head(conn).await
}

/// The position of the last event recorded at or before `t` (0 when none was): what "as of
/// `t`" means for time travel. `recorded_at` is in the hash chain, so this is tamper-evident.
pub async fn position_at(conn: &mut PgConnection, t: DateTime<Utc>) -> Result<i64, StoreError> {
    let position: Option<i64> = sqlx::query_scalar(
        "SELECT l.log_position FROM events e JOIN event_log l USING (global_position)
          WHERE e.recorded_at <= $1 ORDER BY e.recorded_at DESC, l.log_position DESC LIMIT 1",
    )
    .bind(t)
    .fetch_optional(conn)
    .await?;
    Ok(position.unwrap_or(0))
}

/// `WHERE` clauses for `filter` (names only the filters in use, so each shape gets a plan of
/// its own: a generic plan over optional filters cannot use their indexes), numbered from
/// `$first`. Bind the values with [`bind_filter`] in the same order.
fn filter_sql(filter: &LogFilter, first: usize) -> String {
    let mut sql = String::new();
    let mut n = first;
    let mut next = |clause: &str| {
        sql.push_str(&clause.replace('#', &format!("${n}")));
        n += 1;
    };
    if !filter.aggregate_types.is_empty() {
        next(" AND e.aggregate_type = ANY(#::text[])");
    }
    if !filter.aggregate_ids.is_empty() {
        // A semi-join on the list, not `= ANY(...)`: a generic plan cannot size the array
        // and scans the whole table for it (measured: 1.3 s instead of 1 ms over 1M events).
        next(" AND e.aggregate_id IN (SELECT unnest(#::text[]))");
    }
    if !filter.event_types.is_empty() {
        next(" AND e.event_type = ANY(#::text[])");
    }
    if filter.actor.is_some() {
        next(" AND (e.metadata ->> 'actor_subject') = #");
    }
    if filter.correlation_id.is_some() {
        next(" AND (e.metadata ->> 'correlation_id') = #");
    }
    if filter.member_id.is_some() {
        next(" AND e.global_position IN (SELECT m.global_position FROM member_events m WHERE m.member_id = #)");
    }
    if filter.from.is_some() {
        next(" AND e.recorded_at >= #");
    }
    if filter.to.is_some() {
        next(" AND e.recorded_at < #");
    }
    sql
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the values of [`filter_sql`].
fn bind_filter<'q>(mut query: PgQuery<'q>, filter: &'q LogFilter) -> PgQuery<'q> {
    if !filter.aggregate_types.is_empty() {
        query = query.bind(&filter.aggregate_types);
    }
    if !filter.aggregate_ids.is_empty() {
        query = query.bind(&filter.aggregate_ids);
    }
    if !filter.event_types.is_empty() {
        query = query.bind(&filter.event_types);
    }
    if let Some(actor) = &filter.actor {
        query = query.bind(actor);
    }
    if let Some(id) = &filter.correlation_id {
        query = query.bind(id);
    }
    if let Some(member) = &filter.member_id {
        query = query.bind(member);
    }
    if let Some(from) = filter.from {
        query = query.bind(from);
    }
    if let Some(to) = filter.to {
        query = query.bind(to);
    }
    query
}

/// Up to `limit` entries with `after < position <= up_to` (no upper bound when `None`) that
/// pass `filter`, in position order.
pub async fn read(
    conn: &mut PgConnection,
    after: i64,
    up_to: Option<i64>,
    filter: &LogFilter,
    limit: i64,
) -> Result<Vec<LogEntry>, StoreError> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM event_log l JOIN events e USING (global_position)
          WHERE l.log_position > $1 AND l.log_position <= $2 {}
          ORDER BY l.log_position LIMIT $3",
        filter_sql(filter, 4)
    );
    let query = sqlx::query(&sql)
        .bind(after)
        .bind(up_to.unwrap_or(i64::MAX))
        .bind(limit);
    let rows = bind_filter(query, filter).fetch_all(conn).await?;
    rows.iter().map(entry_from_row).collect()
}

/// How many sequenced events pass `filter`.
pub async fn count(conn: &mut PgConnection, filter: &LogFilter) -> Result<i64, StoreError> {
    let sql = format!(
        "SELECT count(*) FROM event_log l JOIN events e USING (global_position)
          WHERE true {}",
        filter_sql(filter, 1)
    );
    let query = sqlx::query(&sql);
    let row = bind_filter(query, filter).fetch_one(conn).await?;
    Ok(row.try_get(0)?)
}

/// Follows the head of the log in this process: one `LISTEN corral_log` connection feeds a
/// watch channel that subscriptions and the publisher wait on; a slow poll covers lost
/// notifications and a dropped connection. Ends when every receiver is gone.
pub fn watch_head(pool: PgPool, poll: Duration) -> watch::Receiver<i64> {
    let (tx, rx) = watch::channel(0i64);
    tokio::spawn(async move {
        let mut listener: Option<PgListener> = None;
        loop {
            if pool.is_closed() || tx.is_closed() {
                return;
            }
            if listener.is_none() {
                match PgListener::connect_with(&pool).await {
                    Ok(mut l) => match l.listen(LOG_CHANNEL).await {
                        Ok(()) => listener = Some(l),
                        Err(err) => {
                            tracing::warn!(error = %err, "LISTEN corral_log failed; polling")
                        }
                    },
                    Err(err) => tracing::warn!(error = %err, "LISTEN corral_log failed; polling"),
                }
            }
            // Read the head after (re)subscribing, so no notification falls in between.
            match pool.acquire().await {
                Ok(mut conn) => match head(&mut conn).await {
                    Ok((position, _)) => {
                        tx.send_if_modified(|h| {
                            let newer = position > *h;
                            *h = (*h).max(position);
                            newer
                        });
                    }
                    Err(err) => tracing::debug!(error = %err, "could not read the log head"),
                },
                Err(err) => tracing::debug!(error = %err, "could not read the log head"),
            }
            if tx.is_closed() {
                return;
            }
            let woken = match listener.as_mut() {
                Some(l) => tokio::time::timeout(poll, l.try_recv()).await,
                None => {
                    tokio::time::sleep(poll).await;
                    continue;
                }
            };
            match woken {
                Ok(Ok(Some(n))) => {
                    if let Ok(position) = n.payload().parse::<i64>() {
                        tx.send_if_modified(|h| {
                            let newer = position > *h;
                            *h = (*h).max(position);
                            newer
                        });
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => listener = None,
                Err(_) => {}
            }
        }
    });
    rx
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainCheck {
    /// Every link from `from` to the head holds.
    Verified {
        /// Events checked.
        events: u64,
        /// The last position checked (the head when it ran).
        head_position: i64,
        /// Its hash.
        head_hash: Vec<u8>,
    },
    /// The first position whose link fails, and why.
    Broken {
        /// The position.
        position: i64,
        /// What is wrong there.
        reason: String,
    },
}

/// Recomputes the hash chain from `from` (1 for the whole log) to the head as it is when the
/// check starts, in batches of `batch` positions, calling `progress(done, total)` after each.
/// Detects an edited event (payload, metadata, any hashed column), a deleted event or log
/// row (a missing position), and reordered events (a link that no longer follows).
pub async fn verify(
    pool: &PgPool,
    from: i64,
    batch: i64,
    mut progress: impl FnMut(u64, u64),
) -> Result<ChainCheck, StoreError> {
    let from = from.max(1);
    let mut conn = pool.acquire().await?;
    let (head_position, _) = head(&mut conn).await?;
    let mut prev: Vec<u8> = if from == 1 {
        GENESIS_HASH.to_vec()
    } else {
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT hash FROM event_log WHERE log_position = $1")
                .bind(from - 1)
                .fetch_optional(&mut *conn)
                .await?;
        match stored {
            Some(h) => h,
            None => {
                return Ok(ChainCheck::Broken {
                    position: from - 1,
                    reason: "no log entry at this position".into(),
                })
            }
        }
    };
    let total = (head_position - from + 1).max(0) as u64;
    let mut expected = from;
    let mut checked = 0u64;
    let mut head_hash = prev.clone();
    while expected <= head_position {
        let upper = (expected + batch - 1).min(head_position);
        // Every log row of the range, with its event if it still exists.
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS}, e.global_position IS NOT NULL AS has_event
               FROM event_log l LEFT JOIN events e USING (global_position)
              WHERE l.log_position BETWEEN $1 AND $2
              ORDER BY l.log_position"
        ))
        .bind(expected)
        .bind(upper)
        .fetch_all(&mut *conn)
        .await?;
        for row in &rows {
            let position: i64 = row.try_get("log_position")?;
            if position != expected {
                return Ok(ChainCheck::Broken {
                    position: expected,
                    reason: "position missing from the log (a deleted entry)".into(),
                });
            }
            if !row.try_get::<bool, _>("has_event")? {
                return Ok(ChainCheck::Broken {
                    position,
                    reason: "the event at this position was deleted".into(),
                });
            }
            let entry = entry_from_row(row)?;
            let computed = chain_hash(&prev, &entry.event, position);
            if computed != entry.hash {
                return Ok(ChainCheck::Broken {
                    position,
                    reason: format!(
                        "hash mismatch: stored {}, recomputed {} (the event, its position \
                         or an earlier link was changed)",
                        hex::encode(&entry.hash),
                        hex::encode(&computed)
                    ),
                });
            }
            prev = computed;
            head_hash.clone_from(&prev);
            expected += 1;
            checked += 1;
        }
        if rows.is_empty() || expected <= upper {
            return Ok(ChainCheck::Broken {
                position: expected,
                reason: "position missing from the log (a deleted entry)".into(),
            });
        }
        progress(checked, total);
    }
    Ok(ChainCheck::Verified {
        events: checked,
        head_position: expected - 1,
        head_hash,
    })
}

/// The stored hash at `position`, if there is one (for checking a recorded chain head).
pub async fn hash_at(
    conn: &mut PgConnection,
    position: i64,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT hash FROM event_log WHERE log_position = $1")
            .bind(position)
            .fetch_optional(conn)
            .await?,
    )
}

/// A reader's checkpoint in `log_checkpoints` (0 when it has none).
pub async fn checkpoint(conn: &mut PgConnection, name: &str) -> Result<i64, StoreError> {
    let position: Option<i64> =
        sqlx::query_scalar("SELECT log_position FROM log_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?;
    Ok(position.unwrap_or(0))
}

/// Moves a reader's checkpoint forward to `position` (never back).
pub async fn advance(conn: &mut PgConnection, name: &str, position: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO log_checkpoints (name, log_position) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET log_position = greatest(log_checkpoints.log_position,
                EXCLUDED.log_position), updated_at = now()",
    )
    .bind(name)
    .bind(position)
    .execute(conn)
    .await?;
    Ok(())
}
