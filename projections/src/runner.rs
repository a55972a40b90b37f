//! Running projectors: claim the checkpoint, read a batch, apply it, save the checkpoint, in
//! one transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::Notify;

use crate::log::{parse_xid, Batch, CatchUpReader, Cursor};
use crate::projection::{schema_ident, Projection};
use crate::StoreError;

/// Events per projector transaction. Large enough to amortize the per-batch work (horizon,
/// checkpoint, commit) when catching up; a current projector reads far fewer at a time.
pub const BATCH_SIZE: i64 = 5000;

/// The stored state of one reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The reader's name.
    pub name: String,
    /// Where it stands.
    pub cursor: Cursor,
    /// Events applied so far.
    pub events_processed: i64,
}

/// Creates a checkpoint row at the start of the log if there is none.
pub async fn ensure_checkpoint(conn: &mut PgConnection, name: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Claims a checkpoint row for this transaction, or `None` when another process holds it.
pub async fn claim_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    wait: bool,
) -> Result<Option<Checkpoint>, StoreError> {
    let sql = format!(
        "SELECT name, transaction_id::text AS txid, global_position, events_processed
           FROM projection_checkpoints WHERE name = $1 FOR UPDATE{}",
        if wait { "" } else { " SKIP LOCKED" }
    );
    let row = sqlx::query(&sql).bind(name).fetch_optional(conn).await?;
    row.map(|r| {
        Ok(Checkpoint {
            name: r.try_get("name")?,
            cursor: Cursor {
                transaction_id: parse_xid(&r.try_get::<String, _>("txid")?)?,
                global_position: r.try_get("global_position")?,
            },
            events_processed: r.try_get("events_processed")?,
        })
    })
    .transpose()
}

/// Stores a checkpoint and tells listeners (at commit) that it moved.
pub async fn save_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    cursor: Cursor,
    applied: usize,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE projection_checkpoints
            SET transaction_id = $2::text::xid8, global_position = $3,
                events_processed = events_processed + $4, updated_at = now()
          WHERE name = $1",
    )
    .bind(name)
    .bind(cursor.transaction_id.to_string())
    .bind(cursor.global_position)
    .bind(applied as i64)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::channels::CHECKPOINTS)
        .bind(format!(
            "{name}:{}:{}",
            cursor.transaction_id, cursor.global_position
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Creates the live schema of a projection if it does not exist yet.
pub async fn ensure_schema<P: Projection + ?Sized>(
    pool: &PgPool,
    projection: &P,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // Two processes starting at once must not both create the tables.
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(crate::locks::KeyedLock::ProjectionSchema.class())
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    ensure_checkpoint(&mut tx, projection.name()).await?;
    if let Some(schema) = projection.live_schema() {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(schema)
                .fetch_one(&mut *tx)
                .await?;
        if !exists {
            sqlx::query(&format!("CREATE SCHEMA {}", schema_ident(schema)?))
                .execute(&mut *tx)
                .await?;
            crate::projection::create_shaped(&mut tx, projection, schema).await?;
        } else {
            // Schemas made before shapes were recorded have no comment: shape 1.
            let comment: Option<String> = sqlx::query_scalar(
                "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1",
            )
            .bind(schema)
            .fetch_one(&mut *tx)
            .await?;
            let expected = crate::projection::shape_comment(projection.shape());
            let current = comment.unwrap_or_else(|| crate::projection::shape_comment(1));
            if current != expected {
                tx.commit().await?;
                tracing::warn!(
                    projection = projection.name(),
                    from = %current,
                    to = %expected,
                    "the read model's tables changed shape: rebuilding it before it serves"
                );
                let started = Instant::now();
                let outcome = crate::rebuild::rebuild(
                    pool,
                    projection,
                    crate::rebuild::Options::default(),
                    |p| {
                        tracing::info!(
                            projection = projection.name(),
                            processed = p.processed,
                            total = p.total,
                            rate = p.rate as i64,
                            "rebuilding"
                        )
                    },
                )
                .await?;
                tracing::info!(
                    projection = projection.name(),
                    ?outcome,
                    seconds = started.elapsed().as_secs_f64(),
                    "read model rebuilt in its new shape"
                );
                return Ok(());
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Another process holds the projector.
    Busy,
    /// A batch was applied.
    Applied {
        /// Events in the batch.
        events: usize,
        /// Whether the projector reached the horizon.
        caught_up: bool,
        /// Caught up while other transactions were running (see [`crate::log::Batch`]).
        held_back: bool,
    },
}

/// Runs one batch of `projection` against `schema` with checkpoint `checkpoint`.
pub async fn step<P: Projection + ?Sized>(
    pool: &PgPool,
    projection: &P,
    reader: &CatchUpReader,
    checkpoint: &str,
    schema: &str,
) -> Result<Step, StoreError> {
    let mut tx = pool.begin().await?;
    // The horizon first: the claim below gives this transaction an id, which would hold it back.
    let below = crate::log::horizon(&mut tx).await?;
    let Some(current) = claim_checkpoint(&mut tx, checkpoint, false).await? else {
        return Ok(Step::Busy);
    };
    let batch = reader.read_below(&mut tx, current.cursor, below).await?;
    finish(tx, projection, schema, checkpoint, &current, batch).await
}

/// Applies `batch` in `tx`, moves the checkpoint past it and commits (or rolls back when
/// nothing moved): the end of a step, with or without read-ahead.
async fn finish<P: Projection + ?Sized>(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    projection: &P,
    schema: &str,
    checkpoint: &str,
    current: &Checkpoint,
    batch: crate::log::Batch,
) -> Result<Step, StoreError> {
    if !batch.events.is_empty() {
        projection.apply(&mut tx, schema, &batch.events).await?;
    }
    if batch.next != current.cursor {
        save_checkpoint(&mut tx, checkpoint, batch.next, batch.events.len()).await?;
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(Step::Applied {
        events: batch.events.len(),
        caught_up: batch.caught_up,
        held_back: batch.held_back,
    })
}

/// Runs batches of one projection like [`step`], reading the next batch on another connection
/// while the current one is applied and committed, so that catching up a backlog overlaps
/// the log scan and its decoding with the projection's own work.
///
/// A batch read ahead is used only when it is full and starts exactly where the claimed
/// checkpoint stands; anything else (another process moved the checkpoint, the batch read
/// ahead reached the horizon, the read failed) is read again in the step's transaction, so
/// results are those of [`step`]: a partial batch always comes from a fresh horizon. Events
/// below a horizon never change, so a batch read outside the checkpoint's transaction is the
/// batch that transaction would read.
pub struct Stepper<'a, P: Projection + ?Sized> {
    pool: &'a PgPool,
    projection: &'a P,
    reader: CatchUpReader,
    checkpoint: &'a str,
    schema: &'a str,
    ahead: Option<ReadAhead>,
}

/// A batch being read after `after`.
struct ReadAhead {
    after: Cursor,
    batch: tokio::task::JoinHandle<Result<Batch, StoreError>>,
}

impl<'a, P: Projection + ?Sized> Stepper<'a, P> {
    /// A stepper of `projection` against `schema` with checkpoint `checkpoint`.
    pub fn new(
        pool: &'a PgPool,
        projection: &'a P,
        reader: CatchUpReader,
        checkpoint: &'a str,
        schema: &'a str,
    ) -> Self {
        Self {
            pool,
            projection,
            reader,
            checkpoint,
            schema,
            ahead: None,
        }
    }

    /// Runs one batch (see [`step`]).
    pub async fn step(&mut self) -> Result<Step, StoreError> {
        // Waited for before this step holds a connection: the read needs one of its own.
        let ahead = match self.ahead.take() {
            Some(ahead) => Some((ahead.after, ahead.batch.await)),
            None => None,
        };
        let mut tx = self.pool.begin().await?;
        // The horizon first: the claim below gives this transaction an id, which would hold it back.
        let below = crate::log::horizon(&mut tx).await?;
        let Some(current) = claim_checkpoint(&mut tx, self.checkpoint, false).await? else {
            return Ok(Step::Busy);
        };
        let batch = match ahead {
            Some((after, Ok(Ok(batch)))) if after == current.cursor && !batch.caught_up => batch,
            _ => {
                self.reader
                    .read_below(&mut tx, current.cursor, below)
                    .await?
            }
        };
        if !batch.caught_up {
            let (pool, reader, after) = (self.pool.clone(), self.reader.clone(), batch.next);
            self.ahead = Some(ReadAhead {
                after,
                batch: tokio::spawn(async move {
                    let mut conn = pool.acquire().await?;
                    reader.read_below(&mut conn, after, below).await
                }),
            });
        }
        finish(
            tx,
            self.projection,
            self.schema,
            self.checkpoint,
            &current,
            batch,
        )
        .await
    }
}

impl<P: Projection + ?Sized> Drop for Stepper<'_, P> {
    fn drop(&mut self) {
        if let Some(ahead) = self.ahead.take() {
            ahead.batch.abort();
        }
    }
}

/// Keeps a projection current until `shutdown` fires: woken by `wake` (a local commit or
/// LISTEN/NOTIFY), polling every `poll` as a fallback, and looking again within milliseconds
/// while a running event writer holds its horizon back. (Projectors' own transactions write
/// no events, so they hold no other projector back, and a batch applied wakes nobody.)
pub async fn run_projector<P: Projection + ?Sized>(
    pool: PgPool,
    projection: Arc<P>,
    wake: Arc<Notify>,
    poll: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    const HELD_BACK_FIRST: Duration = Duration::from_millis(5);
    const HELD_BACK_MAX: Duration = Duration::from_millis(100);
    let reader = CatchUpReader::for_projection(projection.as_ref(), projection.batch_size());
    let name = projection.name();
    let schema = projection.live_schema().unwrap_or("public");
    let mut stepper = Stepper::new(&pool, projection.as_ref(), reader, name, schema);
    let mut error_backoff = Duration::from_millis(100);
    let mut held_back_backoff = HELD_BACK_FIRST;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started = Instant::now();
        let pause = match stepper.step().await {
            Ok(Step::Applied {
                events,
                caught_up,
                held_back,
            }) => {
                error_backoff = Duration::from_millis(100);
                if events > 0 {
                    held_back_backoff = HELD_BACK_FIRST;
                    tracing::debug!(
                        projection.name = name,
                        events,
                        duration_ms = started.elapsed().as_millis() as u64,
                        "applied batch"
                    );
                }
                match (caught_up, held_back) {
                    (false, _) => None,
                    (true, true) => {
                        let pause = held_back_backoff;
                        held_back_backoff = (held_back_backoff * 2).min(HELD_BACK_MAX);
                        Some(pause)
                    }
                    (true, false) => {
                        held_back_backoff = HELD_BACK_FIRST;
                        Some(poll)
                    }
                }
            }
            Ok(Step::Busy) => Some(poll),
            Err(err) => {
                tracing::error!(projection.name = name, error = %err, "projector step failed; retrying");
                let pause = error_backoff;
                error_backoff = (error_backoff * 2).min(Duration::from_secs(10));
                Some(pause)
            }
        };
        if let Some(pause) = pause {
            let mut shutdown = shutdown.clone();
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// One projector's progress, for `corral projections status` and `/metrics`.
#[derive(Debug, Clone)]
pub struct ProjectorStatus {
    /// Checkpoint name.
    pub name: String,
    /// Where it stands.
    pub cursor: Cursor,
    /// Events applied so far.
    pub events_processed: i64,
    /// Events after the checkpoint (counted up to 1,000,000).
    pub lag_events: i64,
    /// Age of the oldest event not yet applied, in seconds.
    pub lag_seconds: f64,
}

/// Reads every checkpoint with its lag.
pub async fn status(pool: &PgPool) -> Result<Vec<ProjectorStatus>, StoreError> {
    let rows = sqlx::query(
        "SELECT c.name, c.transaction_id::text AS txid, c.global_position, c.events_processed,
                (SELECT count(*) FROM (SELECT 1 FROM events e
                   WHERE (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position)
                   LIMIT 1000000) pending) AS lag_events,
                coalesce(extract(epoch FROM now() - (SELECT e.recorded_at FROM events e
                   WHERE (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position)
                   ORDER BY e.transaction_id, e.global_position LIMIT 1))::float8, 0) AS lag_seconds
           FROM projection_checkpoints c ORDER BY c.name",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ProjectorStatus {
                name: r.try_get("name")?,
                cursor: Cursor {
                    transaction_id: parse_xid(&r.try_get::<String, _>("txid")?)?,
                    global_position: r.try_get("global_position")?,
                },
                events_processed: r.try_get("events_processed")?,
                lag_events: r.try_get("lag_events")?,
                lag_seconds: r.try_get::<f64, _>("lag_seconds")?.max(0.0),
            })
        })
        .collect()
}

/// Every checkpoint's cursor.
pub async fn status_cursors(pool: &PgPool) -> Result<Vec<(String, Cursor)>, StoreError> {
    let rows = sqlx::query(
        "SELECT name, transaction_id::text AS txid, global_position FROM projection_checkpoints",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("name")?,
                Cursor {
                    transaction_id: parse_xid(&r.try_get::<String, _>("txid")?)?,
                    global_position: r.try_get("global_position")?,
                },
            ))
        })
        .collect()
}
