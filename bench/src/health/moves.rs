//! (c) The rollup refresh after `GroupMoved` beside recomputing the same groups.

use std::time::{Duration, Instant};

use corral_api::runtime::BoxError;
use corral_domain::group::{GroupCommand, GroupType};
use corral_projections::health::refresh::{refresh_pending, PendingSummary};
use corral_projections::health::{refresh_group, HealthConfig};
use sqlx::{PgPool, Row as _};
use uuid::Uuid;

use super::setup::{Runtime, Tree};
use super::{meta, ms, SITES};
use crate::Row;

/// The `GroupMoved` event of `group` at the latest position.
async fn moved_event(pool: &PgPool, group: Uuid) -> Result<(String, i64), BoxError> {
    let row = sqlx::query(
        "SELECT transaction_id::text AS tx, global_position FROM events
          WHERE aggregate_type = 'Group' AND aggregate_id = $1 AND event_type = 'GroupMoved'
          ORDER BY global_position DESC LIMIT 1",
    )
    .bind(group.to_string())
    .fetch_one(pool)
    .await?;
    Ok((row.try_get("tx")?, row.try_get("global_position")?))
}

/// Waits until the health, membership and group tree projectors have passed the event.
async fn passed(pool: &PgPool, event: &(String, i64)) -> Result<(), BoxError> {
    let started = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM projection_checkpoints
              WHERE name IN ('health', 'membership', 'group_tree')
                AND (transaction_id, global_position) >= ($1::xid8, $2)",
        )
        .bind(&event.0)
        .bind(event.1)
        .fetch_one(pool)
        .await?;
        if n == 3 {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err("health: the projectors did not pass the move within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How long a move's refresh took.
struct MoveTiming {
    /// Commit to the read models (and the health projector) past the event.
    to_queued: Duration,
    /// The refresh of the queued groups.
    refresh: Duration,
    summary: PendingSummary,
}

/// Moves `group` under `parent` and times the refresh: with `worker`, the running refresh
/// worker does it (from the command's return until the queue is empty); without, the worker
/// is stopped, this waits for the projectors, then runs `refresh_pending` itself.
async fn timed_move(
    pool: &PgPool,
    rt: &mut Runtime,
    config: &HealthConfig,
    group: Uuid,
    parent: Uuid,
    worker: bool,
) -> Result<MoveTiming, BoxError> {
    if worker {
        rt.refresh.start().await?;
    } else {
        rt.refresh.stop().await;
    }
    rt.groups
        .execute(
            GroupCommand::Move {
                id: group,
                new_parent_id: parent,
            },
            None,
            &meta(),
        )
        .await
        .map_err(|e| format!("moving a region: {e}"))?;
    let committed = Instant::now();
    let event = moved_event(pool, group).await?;
    passed(pool, &event).await?;
    let queued = Instant::now();
    let mut summary = PendingSummary::default();
    if !worker {
        summary = refresh_pending(pool, config).await?;
    }
    // The worker's refresh (or nothing left).
    loop {
        let dirty: i64 = sqlx::query_scalar("SELECT count(*) FROM health_dirty")
            .fetch_one(pool)
            .await?;
        if dirty == 0 {
            break;
        }
        if committed.elapsed() > Duration::from_secs(600) {
            return Err("health: the refresh did not finish within 600 s".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let done = Instant::now();
    Ok(MoveTiming {
        to_queued: queued - committed,
        refresh: done - queued,
        summary,
    })
}

/// `refresh_group(force = true)` of `groups`, one after the other; returns the total time.
async fn forced(
    pool: &PgPool,
    config: &HealthConfig,
    groups: &[Uuid],
) -> Result<Duration, BoxError> {
    let started = Instant::now();
    for &g in groups {
        refresh_group(pool, g, config, true).await?;
    }
    Ok(started.elapsed())
}

/// (c) Region 0 (a tenth of the devices) moves under region 1, back under Global, and under
/// region 1 again; each refresh beside recomputing the same groups from scratch.
pub(super) async fn bench_moves(
    pool: &PgPool,
    rt: &mut Runtime,
    config: &HealthConfig,
    tree: &Tree,
    per_site: usize,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let moved = per_site * SITES;
    let (r0, r1) = (tree.regions[0], tree.regions[1]);
    // The groups a refresh after these moves visits: the old and the new parent and their
    // ancestors.
    let visited = [r1, tree.global, GroupType::Device.root_id()];
    let cases = [
        (
            tree.regions[1],
            false,
            format!(
                "{moved} devices join region-1 ({moved} -> {}): their buckets are added",
                2 * moved
            ),
        ),
        (
            tree.global,
            false,
            format!(
                "{moved} devices leave region-1 ({} -> {moved}): it is recomputed",
                2 * moved
            ),
        ),
        (
            tree.regions[1],
            true,
            format!("{moved} devices join region-1 again, through the running refresh worker"),
        ),
    ];
    for (parent, worker, what) in cases {
        let t = timed_move(pool, rt, config, r0, parent, worker).await?;
        let baseline = forced(pool, config, &visited).await?;
        let changed = forced(pool, config, &[r1]).await?;
        eprintln!(
            "bench: health: move ({what}): projectors {:.0} ms, refresh {:.0} ms {:?}; \
             refresh_group(force) of region-1, Global and the root {:.0} ms, of region-1 \
             alone {:.0} ms",
            ms(t.to_queued),
            ms(t.refresh),
            t.summary,
            ms(baseline),
            ms(changed)
        );
        let (name, corral) = if worker {
            (
                format!(
                    "GroupMoved of a {moved}-device region, commit to rollups refreshed by the \
                     refresh worker ({what}) (ms)"
                ),
                t.to_queued + t.refresh,
            )
        } else {
            (
                format!(
                    "rollup refresh after GroupMoved of a {moved}-device region ({what}; \
                     {} groups visited) (ms)",
                    t.summary.groups
                ),
                t.refresh,
            )
        };
        rows.push(Row {
            name,
            corral: format!("{:.0}", ms(corral)),
            baseline_name: "refresh_group(force = true) of the same groups (region-1, Global, \
                            the device root): recomputed from their members' buckets (ms)"
                .into(),
            baseline: format!("{:.0}", ms(baseline)),
            ratio: corral.as_secs_f64() / baseline.as_secs_f64(),
            target: "-".into(),
        });
    }
    Ok(())
}
