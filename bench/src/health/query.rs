//! (b) The health query from rollups beside the same query from raw samples.

use chrono::{DateTime, Utc};
use corral_api::runtime::BoxError;
use corral_projections::health::query::SourcePreference;
use corral_projections::health::{group_health, BucketSize, HealthSeries};
use sqlx::PgPool;

use super::setup::Tree;
use super::{HealthArgs, QUERY_BUDGET};
use crate::membership::{percentile, sample};
use crate::Row;

/// (b) The 24-hour health series of Global in 5-minute buckets, from rollups and from raw.
#[allow(clippy::too_many_arguments)]
pub(super) async fn bench_query(
    pool: &PgPool,
    tree: &Tree,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    devices: usize,
    per_device: usize,
    args: &HealthArgs,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let series = |pref: SourcePreference| {
        let pool = pool.clone();
        let group = tree.global;
        async move {
            let s: HealthSeries =
                group_health(&pool, group, start, end, BucketSize::FiveMinutes, pref).await?;
            if s.buckets.len() != 288 {
                return Err(BoxError::from(format!(
                    "health: {} buckets in 24 h",
                    s.buckets.len()
                )));
            }
            Ok::<(), BoxError>(())
        }
    };
    // Warm-up (both were run once by the check before).
    series(SourcePreference::Rollup).await?;
    let rollup = sample(args.health_rollup_runs.max(1), QUERY_BUDGET, || {
        series(SourcePreference::Rollup)
    })
    .await?;
    let raw = sample(args.health_raw_runs.max(1), QUERY_BUDGET * 2, || {
        series(SourcePreference::Raw)
    })
    .await?;
    eprintln!("bench: health: group_health from rollups {rollup:.1?} ms; from raw {raw:.0?} ms");
    let (r, b) = (percentile(&rollup, 0.5), percentile(&raw, 0.5));
    rows.push(Row {
        name: format!(
            "group_health(Global, {devices} devices, 24 h, 5-min buckets) from rollups, \
             median of {} (ms)",
            rollup.len()
        ),
        corral: format!("{r:.2}"),
        baseline_name: format!(
            "the same series computed from raw samples ({} rows in the window, \
             SourcePreference::Raw), median of {} (ms)",
            devices * per_device,
            raw.len()
        ),
        baseline: format!("{b:.0}"),
        ratio: r / b,
        target: "<= 0.01 (100x faster)".into(),
    });
    Ok(())
}
