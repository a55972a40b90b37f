//! Reading the event log in a safe order.
//!
//! `global_position` is assigned at insert but becomes visible at commit, so a reader that
//! checkpoints it alone can see 21 while 20 is still uncommitted and skip 20 forever. The
//! [`CatchUpReader`] only reads events whose inserting transaction is older than the oldest
//! event writer still running (the [`horizon`]: writers announce themselves with an advisory
//! lock, so transactions that write no events hold nobody back), in
//! `(transaction_id, global_position)` order, and its [`Cursor`] is that pair. Nothing is ever
//! skipped, and nothing read twice.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::StoreError;

/// A reader's place in the log: everything at or before this pair has been read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    /// Transaction id (xid8) of the last event read.
    pub transaction_id: u64,
    /// Global position of the last event read.
    pub global_position: i64,
}

impl Cursor {
    /// The cursor just past `event`.
    pub fn of(event: &EventRecord) -> Self {
        Self {
            transaction_id: event.transaction_id,
            global_position: event.global_position,
        }
    }
}

/// One stored event with all of Corral's columns.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Insert order; unique.
    pub global_position: i64,
    /// The transaction that inserted the event.
    pub transaction_id: u64,
    /// Unique event id (NATS `Nats-Msg-Id`).
    pub event_id: Uuid,
    /// Aggregate type, e.g. `Group`.
    pub aggregate_type: String,
    /// Aggregate id (a UUID for Corral's aggregates).
    pub aggregate_id: String,
    /// The aggregate's version after this event (1-based).
    pub sequence: i64,
    /// Event variant name.
    pub event_type: String,
    /// Event schema version.
    pub event_version: String,
    /// The event body, `{ "<event_type>": { ... } }`.
    pub payload: Value,
    /// Actor, source, correlation and causation ids, reason, client address.
    pub metadata: Value,
    /// When the event was inserted.
    pub recorded_at: DateTime<Utc>,
}

impl EventRecord {
    /// The event body without its variant wrapper.
    pub fn body(&self) -> &Value {
        self.payload.get(&self.event_type).unwrap_or(&Value::Null)
    }

    /// The event as the Rust type `E` of its aggregate, upcast to the version this code reads
    /// (for projectors that fold typed events rather than raw JSON).
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, StoreError> {
        decode_stored(
            &self.aggregate_type,
            &self.aggregate_id,
            &self.event_type,
            &self.event_version,
            &self.payload,
        )
    }

    /// Decodes a row selected with [`EVENT_COLUMNS`].
    pub fn from_row(row: &PgRow) -> Result<Self, StoreError> {
        let txid: String = row.try_get("txid")?;
        Ok(Self {
            global_position: row.try_get("global_position")?,
            transaction_id: parse_xid(&txid)?,
            event_id: row.try_get("event_id")?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
            metadata: row.try_get("metadata")?,
            recorded_at: row.try_get("recorded_at")?,
        })
    }
}

/// Decodes a stored event (its columns, for readers that select fewer than
/// [`EVENT_COLUMNS`]) as the Rust type `E` of its aggregate, upcast to the version this code
/// reads. Every reader of the log that looks inside payloads goes through here, so upcasting
/// applies wherever events are read.
pub fn decode_stored<E: serde::de::DeserializeOwned>(
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    event_version: &str,
    payload: &Value,
) -> Result<E, StoreError> {
    let bad = |e: serde_json::Error| {
        StoreError::Data(format!(
            "{event_type} of {aggregate_type} {aggregate_id}: {e}"
        ))
    };
    // Most stored events are at the current version: deserialize them in place (the upcast
    // chain takes the payload by value, and cloning a payload costs as much as decoding it).
    if corral_domain::upcast::current_version(aggregate_type, event_type) == Some(event_version) {
        return <E as serde::Deserialize>::deserialize(payload).map_err(bad);
    }
    let (_, payload) =
        corral_domain::upcast::upcast(aggregate_type, event_type, event_version, payload.clone())
            .map_err(|e| StoreError::Data(e.to_string()))?;
    serde_json::from_value(payload).map_err(bad)
}

/// The column list every event query selects, for [`EventRecord::from_row`].
pub const EVENT_COLUMNS: &str = "global_position, transaction_id::text AS txid, event_id, \
    aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, \
    recorded_at";

/// [`EVENT_COLUMNS`] with an empty `metadata`, for readers that never look at it.
pub const EVENT_COLUMNS_NO_METADATA: &str = "global_position, transaction_id::text AS txid, \
    event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, \
    '{}'::jsonb AS metadata, recorded_at";

pub fn parse_xid(s: &str) -> Result<u64, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Data(format!("bad transaction id {s:?}")))
}

/// A batch read by [`CatchUpReader::read`].
#[derive(Debug)]
pub struct Batch {
    /// Events in `(transaction_id, global_position)` order.
    pub events: Vec<EventRecord>,
    /// Where the reader stands after this batch. When the batch was not full this is past
    /// every event below the horizon, even ones the type filter left out.
    pub next: Cursor,
    /// Whether the reader has caught up with the horizon.
    pub caught_up: bool,
    /// Caught up, but an event writer was still running below the snapshot's xmax when the
    /// horizon was read ([`Horizon::in_flight`]): its events, and those of younger writers
    /// that committed first, may appear below the next horizon without anyone announcing them
    /// (a writer that aborts wakes nobody), so look again soon.
    pub held_back: bool,
}

/// Where readers may read up to: every transaction below `bound` that wrote events had
/// finished, and its events are visible to any later snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    /// Readers read events with `transaction_id < bound`.
    pub bound: u64,
    /// Whether an event writer (or a transaction that might have been one) below the
    /// snapshot's xmax held the bound back: its events, and those of later writers that
    /// committed first, will appear below a later horizon.
    pub in_flight: bool,
}

/// The horizon, in one statement (see `migrations/sql/0012_event_writers.sql`):
/// - `S` is the statement's snapshot; every transaction id at or above `pg_snapshot_xmax(S)`
///   was unassigned or running when it was taken, so the bound never exceeds it.
/// - `pg_locks` is read after `S` (atomically for the main lock table): a transaction of
///   `pg_snapshot_xip(S)` that still holds its id's lock without holding the shared
///   `corral_event_writers` lock got its id before any announcement, so it can never write an
///   event (the trigger on `events` refuses it) and holds nobody back.
/// - Every other transaction of `xip(S)` bounds the horizon: a writer that announced itself
///   (it took the lock before its id existed, and keeps it until after its end is visible), or
///   one that ended between `S` and the read of `pg_locks` (it might have written events that
///   a snapshot as old as `S` does not see).
///
/// So every event below the bound was committed (or aborted) before `S`, or belongs to no
/// transaction at all, and any later statement (or `S` itself, in a repeatable-read
/// transaction) sees all of them. Running transactions that write no events (projector
/// batches, the rule evaluator, telemetry ingest, a reader's own claim) no longer hold readers
/// back. Read it before the reader's own transaction writes events (it never should).
pub async fn horizon(conn: &mut PgConnection) -> Result<Horizon, StoreError> {
    let (xmax, bound): (String, Option<String>) = sqlx::query_as(HORIZON_SQL)
        .bind(crate::locks::EVENT_WRITERS)
        .fetch_one(conn)
        .await?;
    let xmax = parse_xid(&xmax)?;
    let bound = bound.as_deref().map(parse_xid).transpose()?;
    Ok(Horizon {
        bound: bound.map_or(xmax, |b| b.min(xmax)),
        in_flight: bound.is_some_and(|b| b < xmax),
    })
}

/// The statement of [`horizon`]. An advisory lock on a `bigint` key shows in `pg_locks` as
/// `classid` (high 32 bits), `objid` (low 32 bits) and `objsubid = 1`; a `transactionid`
/// row shows the 32-bit xid, matched against the low 32 bits of the snapshot's xid8s. Only
/// the holder of a transaction id holds its lock in `ExclusiveLock` mode. Advisory locks
/// belong to a database (transaction ids do not): a writer of another database's log is a
/// bystander here.
const HORIZON_SQL: &str = "
WITH s AS MATERIALIZED (SELECT pg_current_snapshot() AS snap),
     k AS MATERIALIZED (SELECT hashtext($1)::bigint AS key),
     l AS MATERIALIZED (
        SELECT locktype, database, virtualtransaction, transactionid::text::bigint AS xid,
               classid::bigint AS classid, objid::bigint AS objid, objsubid, mode
          FROM pg_locks
         WHERE granted AND locktype IN ('advisory', 'transactionid')),
     writers AS (
        SELECT l.virtualtransaction FROM l, k
         WHERE l.locktype = 'advisory' AND l.objsubid = 1
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.classid = (k.key >> 32) & 4294967295 AND l.objid = k.key & 4294967295),
     bystanders AS (
        SELECT xid FROM l
         WHERE locktype = 'transactionid' AND mode = 'ExclusiveLock'
           AND virtualtransaction NOT IN (SELECT virtualtransaction FROM writers))
SELECT pg_snapshot_xmax(s.snap)::text AS xmax,
       (SELECT min(x)::text FROM pg_snapshot_xip(s.snap) x
         WHERE (x::text::bigint & 4294967295) NOT IN (SELECT xid FROM bystanders)) AS bound
  FROM s";

/// Reads the log below the [`horizon`], in commit-safe order.
#[derive(Debug, Clone)]
pub struct CatchUpReader {
    /// Only these aggregate types (all when empty).
    pub aggregate_types: Vec<String>,
    /// Largest batch.
    pub batch_size: i64,
    /// Whether to read `metadata` (left as `{}` otherwise, which saves decoding it).
    pub with_metadata: bool,
}

impl CatchUpReader {
    /// The reader a projection needs: its aggregate types, with metadata only if it uses it.
    pub fn for_projection<P: crate::Projection + ?Sized>(projection: &P, batch_size: i64) -> Self {
        Self {
            aggregate_types: projection.aggregate_types(),
            batch_size,
            with_metadata: projection.needs_metadata(),
        }
    }

    /// Reads the next batch after `after`, on `conn` (usually inside the transaction that
    /// will also store the new checkpoint).
    pub async fn read(&self, conn: &mut PgConnection, after: Cursor) -> Result<Batch, StoreError> {
        let below = horizon(&mut *conn).await?;
        self.read_below(conn, after, below).await
    }

    /// Reads the next batch after `after` below a horizon read earlier (every transaction
    /// below it had finished then, so this statement's newer snapshot sees all their events).
    pub async fn read_below(
        &self,
        conn: &mut PgConnection,
        after: Cursor,
        below: Horizon,
    ) -> Result<Batch, StoreError> {
        let horizon = below.bound;
        let columns = if self.with_metadata {
            EVENT_COLUMNS
        } else {
            EVENT_COLUMNS_NO_METADATA
        };
        let sql = format!(
            "SELECT {columns} FROM events
              WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
                AND transaction_id < $3::text::xid8
                AND (cardinality($4::text[]) = 0 OR aggregate_type = ANY($4))
              ORDER BY transaction_id, global_position
              LIMIT $5"
        );
        let rows = sqlx::query(&sql)
            .bind(after.transaction_id.to_string())
            .bind(after.global_position)
            .bind(horizon.to_string())
            .bind(&self.aggregate_types)
            .bind(self.batch_size)
            .fetch_all(&mut *conn)
            .await?;
        let events = rows
            .iter()
            .map(EventRecord::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let caught_up = (events.len() as i64) < self.batch_size;
        let mut next = events.last().map_or(after, Cursor::of);
        if caught_up {
            // Everything below the horizon has been seen: jump to it, so that a filtered reader
            // (or one with nothing to read) still shows that it is current.
            next = next.max(Cursor {
                transaction_id: horizon,
                global_position: 0,
            });
        }
        Ok(Batch {
            events,
            next,
            caught_up,
            held_back: caught_up && below.in_flight,
        })
    }
}
