//! The check that rollups and raw samples give the same series.

use chrono::{DateTime, Utc};
use corral_api::runtime::BoxError;
use corral_projections::health::query::SourcePreference;
use corral_projections::health::{group_health, BucketSize};
use sqlx::PgPool;
use uuid::Uuid;

/// Compares the rollup series of `group` with the one computed from raw samples over
/// `[from, to)` in 5-minute buckets; fails on any difference. Returns (samples, buckets).
pub(super) async fn verify(
    pool: &PgPool,
    group: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    when: &str,
) -> Result<(i64, usize), BoxError> {
    let rollup = group_health(
        pool,
        group,
        from,
        to,
        BucketSize::FiveMinutes,
        SourcePreference::Rollup,
    )
    .await?;
    let raw = group_health(
        pool,
        group,
        from,
        to,
        BucketSize::FiveMinutes,
        SourcePreference::Raw,
    )
    .await?;
    let mut problems = Vec::new();
    if rollup.members != raw.members {
        problems.push(format!(
            "members: rollups count {}, the read models {}",
            rollup.members, raw.members
        ));
    }
    if rollup.buckets.len() != raw.buckets.len() {
        problems.push(format!(
            "{} rollup buckets, {} raw",
            rollup.buckets.len(),
            raw.buckets.len()
        ));
    }
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0);
    for (a, b) in rollup.buckets.iter().zip(&raw.buckets) {
        let at = a.start.to_rfc3339();
        if a.start != b.start
            || a.samples != b.samples
            || a.devices_reporting != b.devices_reporting
        {
            problems.push(format!(
                "{at}: rollup {} samples from {} devices, raw {} samples from {} devices ({})",
                a.samples,
                a.devices_reporting,
                b.samples,
                b.devices_reporting,
                b.start.to_rfc3339()
            ));
            continue;
        }
        for (name, x, y) in [
            ("cpu", a.cpu, b.cpu),
            ("memory", a.memory, b.memory),
            ("disk", a.disk, b.disk),
        ] {
            match (x, y) {
                (None, None) => {}
                (Some(x), Some(y)) if close(x.avg, y.avg) && x.max == y.max && x.p95 == y.p95 => {}
                _ => problems.push(format!("{at}: {name} rollup {x:?}, raw {y:?}")),
            }
        }
    }
    if !problems.is_empty() {
        let shown: Vec<&String> = problems.iter().take(10).collect();
        return Err(format!(
            "health: rollups and raw samples of group {group} disagree {when} ({} differences): {shown:?}",
            problems.len()
        )
        .into());
    }
    Ok((
        rollup.buckets.iter().map(|b| b.samples).sum(),
        rollup.buckets.len(),
    ))
}
