//! Rebuilding a read model into fresh tables while the old ones keep serving, then swapping.
//!
//! The new tables live in `<live schema>_rebuild` with their own checkpoint
//! `<name>@rebuild`; both survive a crash, so running the rebuild again resumes where it
//! stopped. The swap happens in one transaction that holds the live checkpoint (pausing the
//! live projector), applies the last events, drops the old schema, renames the new one into
//! place and moves the live checkpoint to where the rebuild stands.

use std::time::Instant;

use sqlx::PgPool;

use crate::log::CatchUpReader;
use crate::projection::{schema_ident, Projection};
use crate::runner::{claim_checkpoint, ensure_checkpoint, save_checkpoint, step, Step};
use crate::StoreError;

/// Progress of a rebuild, reported after every batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Events applied to the new tables so far (including before a resume).
    pub processed: i64,
    /// Events of the projection's types in the log when the rebuild started.
    pub total: i64,
    /// Events per second in this run.
    pub rate: f64,
}

/// How a rebuild ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The new tables are live.
    Swapped {
        /// Events the new read model was built from.
        processed: i64,
        /// Whether this run continued an interrupted rebuild.
        resumed: bool,
    },
    /// Stopped after `max_batches` (used to test resuming); run again to finish.
    Interrupted {
        /// Events applied so far.
        processed: i64,
    },
}

/// Rebuild tuning.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Events per batch.
    pub batch_size: i64,
    /// Stop (as if crashed) after this many batches.
    pub max_batches: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            batch_size: 5000,
            max_batches: None,
        }
    }
}

/// Rebuilds `projection`, calling `progress` after every batch.
pub async fn rebuild<P: Projection + ?Sized>(
    pool: &PgPool,
    projection: &P,
    options: Options,
    mut progress: impl FnMut(Progress),
) -> Result<Outcome, StoreError> {
    let name = projection.name();
    let live = projection.live_schema().ok_or_else(|| {
        StoreError::NotFound(format!(
            "projection {name} keeps no tables and cannot be rebuilt"
        ))
    })?;
    let live = schema_ident(live)?;
    let fresh = format!("{live}_rebuild");
    let checkpoint = format!("{name}@rebuild");
    let reader = CatchUpReader::for_projection(projection, options.batch_size);

    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(crate::locks::KeyedLock::ProjectionSchema.class())
        .bind(name)
        .execute(&mut *tx)
        .await?;
    let resumable: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM projection_checkpoints WHERE name = $1)
            AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $2)",
    )
    .bind(&checkpoint)
    .bind(&fresh)
    .fetch_one(&mut *tx)
    .await?;
    if !resumable {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {fresh} CASCADE"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("CREATE SCHEMA {fresh}"))
            .execute(&mut *tx)
            .await?;
        crate::projection::create_shaped(&mut tx, projection, &fresh).await?;
        sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1")
            .bind(&checkpoint)
            .execute(&mut *tx)
            .await?;
        ensure_checkpoint(&mut tx, &checkpoint).await?;
    }
    tx.commit().await?;

    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE cardinality($1::text[]) = 0 OR aggregate_type = ANY($1)",
    )
    .bind(&reader.aggregate_types)
    .fetch_one(pool)
    .await?;
    let started = Instant::now();
    let mut processed_now = 0i64;
    let mut processed: i64 =
        sqlx::query_scalar("SELECT events_processed FROM projection_checkpoints WHERE name = $1")
            .bind(&checkpoint)
            .fetch_one(pool)
            .await?;
    let mut batches = 0usize;
    loop {
        if options.max_batches.is_some_and(|max| batches >= max) {
            return Ok(Outcome::Interrupted { processed });
        }
        batches += 1;
        match step(pool, projection, &reader, &checkpoint, &fresh).await? {
            Step::Busy => {
                return Err(StoreError::Data(format!(
                    "another rebuild of {name} is running"
                )));
            }
            Step::Applied {
                events, caught_up, ..
            } => {
                processed += events as i64;
                processed_now += events as i64;
                progress(Progress {
                    processed,
                    total,
                    rate: processed_now as f64 / started.elapsed().as_secs_f64().max(1e-6),
                });
                if caught_up {
                    break;
                }
            }
        }
    }

    // The swap: pause the live projector, apply what arrived meanwhile, rename.
    let mut tx = pool.begin().await?;
    ensure_checkpoint(&mut tx, name).await?;
    claim_checkpoint(&mut tx, name, true).await?;
    let mut current = claim_checkpoint(&mut tx, &checkpoint, true)
        .await?
        .ok_or_else(|| StoreError::Data(format!("checkpoint {checkpoint} vanished")))?;
    loop {
        let batch = reader.read(&mut tx, current.cursor).await?;
        if !batch.events.is_empty() {
            projection.apply(&mut tx, &fresh, &batch.events).await?;
        }
        current.events_processed += batch.events.len() as i64;
        current.cursor = batch.next;
        if batch.caught_up {
            break;
        }
    }
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {live} CASCADE"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("ALTER SCHEMA {fresh} RENAME TO {live}"))
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE projection_checkpoints SET events_processed = 0 WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    save_checkpoint(
        &mut tx,
        name,
        current.cursor,
        current.events_processed as usize,
    )
    .await?;
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1")
        .bind(&checkpoint)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Outcome::Swapped {
        processed: current.events_processed,
        resumed: resumable,
    })
}
