//! Sweeps: the SweepRun command runner, the `sweeps` projector that keeps `sweep_runs`, the
//! results store (ingest with per-host dedup and progress, pages, export), the retention
//! cleanup and the idempotency keys' reservations. See `docs/sweeps.md`.

pub mod config;
pub mod idempotency;
pub mod read;
pub mod results;
pub mod retention;

use async_trait::async_trait;
use corral_domain::sweep::{SweepEvent, SweepStatus};
use sqlx::PgConnection;
use uuid::Uuid;

pub use crate::commands::sweeps::{sweep_commands, SweepCommands};
pub use config::SweepConfig;

use crate::log::EventRecord;
use crate::projection::Projection;
use crate::StoreError;

/// Projector and checkpoint name.
pub const SWEEPS: &str = "sweeps";

/// Keeps `sweep_runs` from SweepRun events (a plain table of the migrations: its progress
/// columns are the results store's, so it is not rebuilt into a fresh schema).
#[derive(Debug, Default, Clone, Copy)]
pub struct SweepsProjection;

/// Decodes a stored SweepRun event, upcast to the version this code reads.
pub fn decode(event: &EventRecord) -> Result<SweepEvent, StoreError> {
    event.decode()
}

#[async_trait]
impl Projection for SweepsProjection {
    fn name(&self) -> &'static str {
        SWEEPS
    }

    fn aggregate_types(&self) -> Vec<String> {
        vec!["SweepRun".to_string()]
    }

    fn needs_metadata(&self) -> bool {
        false
    }

    fn live_schema(&self) -> Option<&'static str> {
        None
    }

    async fn create_tables(
        &self,
        _conn: &mut PgConnection,
        _schema: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        _schema: &str,
        events: &[EventRecord],
    ) -> Result<(), StoreError> {
        for event in events {
            apply_one(conn, event).await?;
        }
        Ok(())
    }
}

/// What a transition records besides the status.
#[derive(Default)]
struct Detail<'a> {
    failure_code: Option<&'a str>,
    failure_message: Option<&'a str>,
    cancelled_by: Option<&'a str>,
}

/// Sets `status` (and `detail`) on run `id` if this event is newer than the row (a replay
/// after a crash applies nothing twice); a terminal status records `ended_at`.
async fn transition(
    conn: &mut PgConnection,
    id: Uuid,
    event: &EventRecord,
    status: SweepStatus,
    detail: Detail<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sweep_runs SET status = $2, version = $3, updated_at = $4,
                ended_at = CASE WHEN $5 THEN $4 ELSE ended_at END,
                failure_code = coalesce($6, failure_code),
                failure_message = coalesce($7, failure_message),
                cancelled_by = coalesce($8, cancelled_by)
          WHERE id = $1 AND version < $3",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(event.sequence)
    .bind(event.recorded_at)
    .bind(status.is_terminal())
    .bind(detail.failure_code)
    .bind(detail.failure_message)
    .bind(detail.cancelled_by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn apply_one(conn: &mut PgConnection, event: &EventRecord) -> Result<(), StoreError> {
    let id: Uuid = event
        .aggregate_id
        .parse()
        .map_err(|_| StoreError::Data(format!("sweep run id {:?}", event.aggregate_id)))?;
    match decode(event)? {
        SweepEvent::SweepScheduled {
            plan,
            requested_by,
            deadline,
        } => {
            sqlx::query(
                "INSERT INTO sweep_runs (id, status, poller_id, agent_id, targets, group_id,
                        hosts, hosts_total, ports, icmp, timeout_ms, concurrency,
                        retention_days, idempotency_key, reason, requested_by, scheduled_at,
                        deadline, version, updated_at)
                 VALUES ($1, 'QUEUED', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                         $15, $16, $17, $18, $16)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(&plan.poller_id)
            .bind(&plan.agent_id)
            .bind(&plan.targets)
            .bind(plan.group_id)
            .bind(&plan.hosts)
            .bind(plan.hosts_total as i64)
            .bind(plan.ports.iter().map(|p| i32::from(*p)).collect::<Vec<_>>())
            .bind(plan.icmp)
            .bind(plan.timeout_ms as i32)
            .bind(plan.concurrency as i32)
            .bind(plan.retention_days as i32)
            .bind(&plan.idempotency_key)
            .bind(&plan.reason)
            .bind(&requested_by)
            .bind(event.recorded_at)
            .bind(deadline)
            .bind(event.sequence)
            .execute(&mut *conn)
            .await?;
        }
        SweepEvent::SweepDispatched { job_key, claim_by } => {
            sqlx::query(
                "UPDATE sweep_runs SET status = 'DISPATCHED', job_key = $2, claim_by = $3,
                        version = $4, updated_at = $5
                  WHERE id = $1 AND version < $4",
            )
            .bind(id)
            .bind(job_key)
            .bind(claim_by)
            .bind(event.sequence)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        SweepEvent::SweepAcknowledged { .. } => {
            transition(
                conn,
                id,
                event,
                SweepStatus::Acknowledged,
                Detail::default(),
            )
            .await?
        }
        SweepEvent::SweepStarted {} => {
            transition(conn, id, event, SweepStatus::Running, Detail::default()).await?
        }
        SweepEvent::SweepCompleted { .. } => {
            transition(conn, id, event, SweepStatus::Completed, Detail::default()).await?
        }
        SweepEvent::SweepFailed { code, message, .. } => {
            transition(
                conn,
                id,
                event,
                SweepStatus::Failed,
                Detail {
                    failure_code: Some(&code),
                    failure_message: Some(&message),
                    cancelled_by: None,
                },
            )
            .await?
        }
        SweepEvent::SweepTimedOut { .. } => {
            transition(conn, id, event, SweepStatus::TimedOut, Detail::default()).await?
        }
        SweepEvent::SweepCancelled {
            cancelled_by,
            reason,
            ..
        } => {
            transition(
                conn,
                id,
                event,
                SweepStatus::Cancelled,
                Detail {
                    failure_code: None,
                    failure_message: reason.as_deref(),
                    cancelled_by: Some(&cancelled_by),
                },
            )
            .await?
        }
        SweepEvent::SweepExpired {} => {
            transition(conn, id, event, SweepStatus::Expired, Detail::default()).await?
        }
    }
    Ok(())
}
