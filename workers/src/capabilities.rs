//! The capabilities worker: keeps each group's capability flags (`hasSysmon`, `hasSnmp`,
//! `hasServices`, see `docs/capabilities.md`) equal to what its effective members offer.
//!
//! Every pass computes the flags of every live group in one query, set-based: each group's
//! own direct members are checked once (an `EXISTS` that stops at the first witness), and
//! the answer is rolled up the group tree's closure table, so a group's flags cover its own
//! members and every descendant's. It compares them with the `group_capabilities` read model
//! and sends `SetCapabilities` for the groups that differ, as Group events with source
//! `worker`. The aggregate writes an event only when a flag differs from its own state, so a
//! lagging read model costs a no-op command, never a duplicate event. Only one worker runs in
//! a cluster (a session advisory lock); the others wait to take over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_domain::group::{GroupCapabilities, GroupCommand, GroupError};
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::capabilities::LIVE_SCHEMA as CAPABILITIES;
use corral_projections::commands::executor::ExecError;
use corral_projections::commands::groups::GroupCommands;
use corral_projections::group_tree::LIVE_SCHEMA as TREE;
use corral_projections::leader::{Leadership, Leading};
use corral_projections::locks::Lock;
use corral_projections::membership::LIVE_SCHEMA as MEMBERSHIP;
use corral_projections::StoreError;
use sqlx::{PgPool, Row};
use tokio::sync::watch;
use uuid::Uuid;

/// The subject its events name as their actor.
pub const ACTOR: &str = "capabilities-worker";

/// How the worker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityConfig {
    /// Time between passes.
    pub interval: Duration,
    /// How far back telemetry counts as recent.
    pub window: Duration,
}

impl Default for CapabilityConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            window: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A `SetCapabilities` command failed unexpectedly.
    #[error("SetCapabilities for group {group} failed: {message}")]
    Command {
        /// The group.
        group: Uuid,
        /// What went wrong.
        message: String,
    },
}

impl From<sqlx::Error> for CapabilityError {
    fn from(e: sqlx::Error) -> Self {
        CapabilityError::Store(e.into())
    }
}

/// A group whose computed flags differ from the read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapabilityChange {
    /// The group.
    pub group_id: Uuid,
    /// Its flags as computed now.
    pub capabilities: GroupCapabilities,
}

/// The flags of every live group, computed over its effective members (`own`: each group's
/// direct members, checked until a first witness; then rolled up the closure table), keeping
/// only those that differ from the read model (no row: all false). `$1` is the start of the
/// recent window. Member ids are compared in the inventory's collation (`direct.member_id`
/// is `C`), so that the inventory's primary keys serve the probes.
fn changes_sql() -> String {
    format!(
        "WITH own AS MATERIALIZED (
            SELECT g.id,
                   g.group_type = 'DEVICE' AND EXISTS (
                       SELECT 1 FROM {MEMBERSHIP}.direct d
                         JOIN health_device_buckets b
                           ON b.device_id = d.member_id COLLATE \"default\"
                          AND b.bucket_size = 3600 AND b.bucket_start >= $1
                        WHERE d.group_id = g.id) AS sysmon,
                   CASE WHEN g.group_type = 'SERVICE' THEN EXISTS (
                       SELECT 1 FROM {MEMBERSHIP}.direct d
                         JOIN health_service_buckets b
                           ON b.service_id = d.member_id COLLATE \"default\"
                          AND b.bucket_size = 3600 AND b.bucket_start >= $1
                        WHERE d.group_id = g.id)
                   ELSE EXISTS (
                       SELECT 1 FROM {MEMBERSHIP}.direct d
                         JOIN services s
                           ON s.device_id = d.member_id COLLATE \"default\" AND s.removed_at IS NULL
                         JOIN health_service_buckets b
                           ON b.service_id = s.id
                          AND b.bucket_size = 3600 AND b.bucket_start >= $1
                        WHERE d.group_id = g.id) END AS services
              FROM {TREE}.groups g
         ), snmp AS MATERIALIZED (
            -- One scan of the inventory and a hash join: SNMP devices are a plain set.
            SELECT DISTINCT d.group_id
              FROM {MEMBERSHIP}.direct d
              JOIN devices v ON v.id = d.member_id COLLATE \"default\"
             WHERE v.removed_at IS NULL
               AND EXISTS (SELECT 1 FROM unnest(v.discovery_sources) src
                            WHERE lower(src) = 'snmp')
         ), effective AS (
            SELECT c.ancestor_id AS group_id,
                   bool_or(o.sysmon) AS has_sysmon,
                   bool_or(g.group_type = 'DEVICE' AND n.group_id IS NOT NULL) AS has_snmp,
                   bool_or(o.services) AS has_services
              FROM {TREE}.group_closure c
              JOIN own o ON o.id = c.descendant_id
              JOIN {TREE}.groups g ON g.id = c.ancestor_id
              LEFT JOIN snmp n ON n.group_id = c.descendant_id
             GROUP BY c.ancestor_id
         )
         SELECT e.group_id, e.has_sysmon, e.has_snmp, e.has_services
           FROM effective e
           LEFT JOIN {CAPABILITIES}.capabilities k ON k.group_id = e.group_id
          WHERE (e.has_sysmon, e.has_snmp, e.has_services)
                IS DISTINCT FROM (coalesce(k.has_sysmon, false), coalesce(k.has_snmp, false),
                                  coalesce(k.has_services, false))
          ORDER BY e.group_id"
    )
}

/// The groups whose flags, computed from the data of the last `window`, differ from the
/// read model.
// No `err`: `run_once` logs a failure once.
#[tracing::instrument(skip_all, fields(window_secs = window.as_secs()))]
pub async fn changed_groups(
    pool: &PgPool,
    window: Duration,
) -> Result<Vec<CapabilityChange>, StoreError> {
    let since = chrono::Utc::now()
        - chrono::TimeDelta::from_std(window)
            .map_err(|e| StoreError::Data(format!("window {window:?}: {e}")))?;
    let rows = sqlx::query(&changes_sql())
        .bind(since)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(CapabilityChange {
                group_id: r.try_get("group_id")?,
                capabilities: GroupCapabilities {
                    has_sysmon: r.try_get("has_sysmon")?,
                    has_snmp: r.try_get("has_snmp")?,
                    has_services: r.try_get("has_services")?,
                },
            })
        })
        .collect()
}

/// `24 h`, or `90 s` for a window that is not whole hours.
fn describe_window(window: Duration) -> String {
    let secs = window.as_secs();
    if secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else {
        format!("{secs} s")
    }
}

/// The metadata of one pass's events.
fn metadata(pass: Uuid, window: Duration) -> EventMetadata {
    let correlation_id = format!("capabilities-{pass}");
    EventMetadata {
        actor_subject: ACTOR.into(),
        actor_role: "system".into(),
        source: Source::Worker,
        causation_id: correlation_id.clone(),
        correlation_id,
        reason: Some(format!(
            "capability flags recomputed from the inventory and the last {} of telemetry",
            describe_window(window)
        )),
        client_addr: None,
    }
}

/// One pass: computes every live group's flags and sends `SetCapabilities` for those that
/// differ from the read model. Returns how many `GroupCapabilitiesChanged` events it wrote
/// (a group the read model shows stale, but whose aggregate already has the flags, writes
/// none; a group deleted meanwhile is skipped).
#[tracing::instrument(
    skip_all,
    fields(window_secs = config.window.as_secs(), events = tracing::field::Empty),
    err
)]
pub async fn run_once(
    pool: &PgPool,
    commands: &GroupCommands,
    config: &CapabilityConfig,
) -> Result<usize, CapabilityError> {
    let started = Instant::now();
    let changes = changed_groups(pool, config.window).await?;
    let meta = metadata(Uuid::new_v4(), config.window);
    let mut written = 0;
    for change in &changes {
        let command = GroupCommand::SetCapabilities {
            id: change.group_id,
            capabilities: change.capabilities,
        };
        match commands.execute(command, None, &meta).await {
            Ok(committed) => written += committed.events,
            Err(ExecError::Domain(GroupError::NotFound { .. })) => {
                tracing::debug!(group.id = %change.group_id, "group deleted since the flags were computed");
            }
            Err(e) => {
                return Err(CapabilityError::Command {
                    group: change.group_id,
                    message: e.to_string(),
                })
            }
        }
    }
    tracing::Span::current().record("events", written);
    if written > 0 {
        tracing::info!(
            groups.differing = changes.len(),
            events = written,
            duration_ms = started.elapsed().as_millis() as u64,
            "capability flags changed"
        );
    } else {
        tracing::debug!(
            groups.differing = changes.len(),
            duration_ms = started.elapsed().as_millis() as u64,
            "capability flags unchanged"
        );
    }
    Ok(written)
}

/// Runs passes every `config.interval` until `stop`, while this process holds the cluster's
/// capabilities lock (it waits to take it over otherwise).
pub async fn run(
    pool: PgPool,
    commands: Arc<GroupCommands>,
    config: CapabilityConfig,
    mut stop: watch::Receiver<bool>,
) {
    // Leadership ends with the lock's session: `next` checks it before every pass.
    let interval_secs = config.interval.as_secs();
    let leadership = Leadership::Worker(Lock::Capabilities);
    let mut leading = Leading::new(pool.clone(), leadership, crate::LEADER_RETRY)
        .on_taken(move || {
            tracing::info!(interval_secs, "this process runs the capabilities worker")
        })
        .on_lost(|| tracing::warn!("capabilities worker lost its lock; waiting to take it again"));
    while leading.next(&mut stop).await.is_some() {
        // A failure is logged by run_once (once); the next pass retries.
        let _ = run_once(&pool, &commands, &config).await;
        if sleep_or_stop(config.interval, &mut stop).await {
            return;
        }
    }
}

/// Sleeps for `d`; true when `stop` turned true meanwhile.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
    *stop.borrow()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_the_worker_and_the_window() {
        let pass = Uuid::from_u128(7);
        let meta = metadata(pass, Duration::from_secs(24 * 3600));
        assert_eq!(meta.source, Source::Worker);
        assert_eq!(meta.actor_subject, "capabilities-worker");
        assert_eq!(meta.correlation_id, format!("capabilities-{pass}"));
        assert_eq!(
            meta.reason.as_deref(),
            Some("capability flags recomputed from the inventory and the last 24 h of telemetry")
        );
    }

    #[test]
    fn windows_read_in_hours_when_whole() {
        assert_eq!(describe_window(Duration::from_secs(24 * 3600)), "24 h");
        assert_eq!(describe_window(Duration::from_secs(90)), "90 s");
    }
}
