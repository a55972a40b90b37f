//! The health workers: the rollup refresh (groups queued by the `health` projector) and
//! telemetry retention (partitions ahead and behind, old buckets and rollups).

use std::time::Duration;

use chrono::Utc;
use corral_projections::health::refresh::refresh_pending;
use corral_projections::health::retention::run_retention;
use corral_projections::health::HealthConfig;
use corral_projections::leader::{Leadership, Leading};
use corral_projections::locks::Lock;

use crate::LEADER_RETRY;
use sqlx::PgPool;
use tokio::sync::watch;

/// How often retention runs.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Refreshes queued groups every `poll` until `stop`, while this process leads
/// [`Lock::HealthRefresh`] (it stands by otherwise).
pub async fn run_refresh(
    pool: PgPool,
    config: HealthConfig,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let leadership = Leadership::Worker(Lock::HealthRefresh);
    let mut leading = Leading::new(pool.clone(), leadership, LEADER_RETRY);
    while leading.next(&mut stop).await.is_some() {
        let started = std::time::Instant::now();
        match refresh_pending(&pool, &config).await {
            Ok(s) if s.queued > 0 => {
                tracing::info!(
                    health.queued = s.queued,
                    health.groups = s.groups,
                    health.recomputed = s.recomputed,
                    health.added = s.added,
                    health.gone = s.gone,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "rollups refreshed"
                );
                // More may be queued: look again at once.
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "rollup refresh failed; retrying"),
        }
        sleep_or_stop(poll, &mut stop).await;
    }
}

/// Runs retention now and then every [`RETENTION_EVERY`] until `stop`.
pub async fn run_retention_loop(
    pool: PgPool,
    config: HealthConfig,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        match run_retention(&pool, &config, Utc::now()).await {
            Ok(r) => tracing::info!(
                telemetry.partitions_created = r.partitions_created,
                telemetry.partitions_dropped = r.partitions_dropped.len(),
                telemetry.buckets_deleted = r.buckets_deleted,
                telemetry.rollups_deleted = r.rollups_deleted,
                telemetry.unknown_deleted = r.unknown_deleted,
                "telemetry retention ran"
            ),
            Err(e) => tracing::warn!(error = %e, "telemetry retention failed; retrying later"),
        }
        sleep_or_stop(RETENTION_EVERY, &mut stop).await;
    }
}
