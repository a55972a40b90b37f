//! The write side of `scheduleSweep`'s idempotency keys: `sweep_idempotency_keys`, where a
//! random run id is reserved against the asking subject and its key before the run is
//! scheduled (see `corral_domain::sweep::idempotency` and migration 0007).
//!
//! Every age is measured by the database's clock, so API processes with skewed clocks agree
//! on whether a key is still in its window.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::StoreError;

/// A key's reservation.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// The run it names.
    pub run_id: Uuid,
    /// The fingerprint of the request that reserved it (`None`: reserved before fingerprints
    /// were kept; any request matches).
    pub request: Option<serde_json::Value>,
    /// Whether it is still inside its window.
    pub live: bool,
}

/// The reservation of `key` by `subject`, if there is one.
#[tracing::instrument(skip_all, fields(sweep.subject = %subject), err)]
pub async fn find(
    pool: &PgPool,
    subject: &str,
    key: &str,
    window: Duration,
) -> Result<Option<Reservation>, StoreError> {
    let row: Option<(Uuid, Option<serde_json::Value>, bool)> = sqlx::query_as(
        "SELECT run_id, request, reserved_at > now() - make_interval(secs => $3)
           FROM sweep_idempotency_keys WHERE subject = $1 AND idempotency_key = $2",
    )
    .bind(subject)
    .bind(key)
    .bind(window.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(run_id, request, live)| Reservation {
        run_id,
        request,
        live,
    }))
}

/// Reserves `run_id` for `key` of `subject`, with the request's fingerprint: a new key, or one
/// whose reservation is past its window (replaced). `None` when a live reservation stands (a
/// request that raced this one got there first): [`find`] it.
#[tracing::instrument(skip_all, fields(sweep.subject = %subject, sweep.run_id = %run_id), err)]
pub async fn reserve(
    pool: &PgPool,
    subject: &str,
    key: &str,
    request: &serde_json::Value,
    run_id: Uuid,
    window: Duration,
) -> Result<Option<Uuid>, StoreError> {
    let reserved: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO sweep_idempotency_keys (subject, idempotency_key, run_id, request)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (subject, idempotency_key) DO UPDATE
            SET run_id = EXCLUDED.run_id, request = EXCLUDED.request, reserved_at = now()
          WHERE sweep_idempotency_keys.reserved_at <= now() - make_interval(secs => $5)
         RETURNING run_id",
    )
    .bind(subject)
    .bind(key)
    .bind(run_id)
    .bind(request)
    .bind(window.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(reserved)
}

/// Deletes reservations past their window (they name nothing any more); how many.
#[tracing::instrument(skip_all, err)]
pub async fn forget_expired(pool: &PgPool, window: Duration) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM sweep_idempotency_keys WHERE reserved_at <= now() - make_interval(secs => $1)",
    )
    .bind(window.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected())
}
