//! Issue 5, section 6: group health rollups, each figure beside a baseline measured in the
//! same run.
//!
//! Setup (timed on stderr, not measured): `--health-devices` devices (100,000) by
//! `INSERT ... SELECT`, a tree Global -> 10 regions -> 10 sites each through `GroupCommands`,
//! every site's devices as static members through `MembershipCommands` (commands of at most
//! 10,000 ids), 24 hours of raw sysmon samples (one per device every
//! `--health-interval-minutes`) by `INSERT ... SELECT generate_series` into the daily
//! partitions of `telemetry_sysmon`, then `backfill` (per-device buckets from the raw samples,
//! then every group's rollups from the buckets). The rollup series of Global is then checked
//! against the raw series, bucket by bucket.
//!
//! Then: (b) `group_health` over 24 h in 5-minute buckets for Global from rollups vs from raw
//! samples; (a) `ingest_sysmon` in batches of 5,000 vs the fastest raw path for the same rows
//! into a plain table of the same shape; (c) the rollup refresh after `GroupMoved` of a
//! region (a tenth of the devices) vs recomputing the refreshed groups from scratch with
//! `refresh_group(force = true)`. A final check compares rollups and raw samples again for
//! the groups the moves changed.

mod ingest;
mod moves;
mod query;
mod setup;
mod verify;

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use clap::Args;
use corral_api::runtime::{self, BoxError};
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::health::{BucketSize, HealthConfig};

use self::ingest::bench_ingest;
use self::moves::bench_moves;
use self::query::bench_query;
use self::setup::{add_members, create_tree, raw_samples, run_backfill, settled, Runtime, Tree};
use self::verify::verify;
use super::Row;

/// Options of the health suite.
#[derive(Args, Debug, Clone)]
pub struct HealthArgs {
    /// Devices in the health suite: 100 sites of a hundredth of them each, under 10 regions
    /// under one group (Global).
    #[arg(long, default_value_t = 100_000)]
    pub health_devices: usize,
    /// Minutes between two raw samples of one device in the health suite's 24 hours of data
    /// (5 is a production rate: 28.8M rows for 100k devices, about 20 minutes of setup on 2
    /// cores).
    #[arg(long, default_value_t = 60)]
    pub health_interval_minutes: u32,
    /// Samples each ingest figure (and its baselines) writes, in batches of 5,000.
    #[arg(long, default_value_t = 100_000)]
    pub health_ingest_samples: usize,
    /// Runs of the health query from rollups.
    #[arg(long, default_value_t = 21)]
    pub health_rollup_runs: usize,
    /// Runs of the health query computed from raw samples.
    #[arg(long, default_value_t = 5)]
    pub health_raw_runs: usize,
    /// Keep the health suite's database afterwards.
    #[arg(long)]
    pub health_keep_database: bool,
}

/// The projectors' fallback polling interval, as `corral serve` has it.
const POLL: Duration = Duration::from_secs(1);
/// Regions under Global, and sites under each region.
const REGIONS: usize = 10;
const SITES: usize = 10;
/// Concurrent commands (and raw-insert statements) during setup.
const CONCURRENCY: usize = 2;
/// Most time the runs of one query figure may take (at least one run is made).
const QUERY_BUDGET: Duration = Duration::from_secs(60);

fn meta() -> EventMetadata {
    EventMetadata::system(Source::Cli, "bench-health")
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(super) async fn bench_health(
    url: &str,
    args: &HealthArgs,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let sites = REGIONS * SITES;
    let per_site = (args.health_devices / sites).max(10);
    let devices = per_site * sites;
    let interval = i64::from(args.health_interval_minutes.clamp(1, 1440)) * 60;
    let per_device = (86_400 / interval) as usize;
    let suite_started = Instant::now();
    eprintln!(
        "bench: health: {devices} devices in {sites} sites of {per_site} under {REGIONS} regions \
         under Global; 24 h of samples, one per device every {} min ({per_device} per device, \
         {} rows)",
        interval / 60,
        devices * per_device
    );
    let (pool, lock_pool) = runtime::pools(url, 16).await?;
    corral_migrations::migrate(&pool).await?;
    let config = HealthConfig::default();
    let mut rt = Runtime::start(&pool, &lock_pool).await?;
    runtime::ensure_roots(&rt.groups).await?;
    let tree = Tree::new();

    // The measured window: the 24 hours before the start of the current 5-minute bucket.
    let end = BucketSize::FiveMinutes.start_of(Utc::now());
    let start = end - TimeDelta::hours(24);

    let step = Instant::now();
    sqlx::query(
        "INSERT INTO devices (id, hostname, is_available)
         SELECT 'dev-' || lpad(i::text, 7, '0'), 'host-' || i, true
           FROM generate_series(0, $1 - 1) i",
    )
    .bind(devices as i64)
    .execute(&pool)
    .await?;
    eprintln!(
        "bench: health: {devices} devices inserted in {:.1} s",
        secs(step)
    );

    let step = Instant::now();
    create_tree(&rt.groups, &tree).await?;
    eprintln!(
        "bench: health: {} groups created through GroupCommands in {:.1} s",
        1 + REGIONS + sites,
        secs(step)
    );
    let step = Instant::now();
    add_members(&rt.members, &tree, per_site).await?;
    eprintln!(
        "bench: health: {devices} static memberships through MembershipCommands in {:.1} s",
        secs(step)
    );
    let step = Instant::now();
    settled(&pool).await?;
    eprintln!(
        "bench: health: projectors and rollup refresh caught up in {:.1} s",
        secs(step)
    );

    let step = Instant::now();
    sqlx::query("SELECT corral_telemetry_partitions($1, $2)")
        .bind(start.date_naive())
        .bind((Utc::now() + TimeDelta::days(1)).date_naive())
        .execute(&pool)
        .await?;
    raw_samples(&pool, devices, start, interval, per_device).await?;
    sqlx::query("ANALYZE telemetry_sysmon")
        .execute(&pool)
        .await?;
    eprintln!(
        "bench: health: {} raw samples inserted in {:.1} s",
        devices * per_device,
        secs(step)
    );

    let step = Instant::now();
    let group_times = run_backfill(&pool, &config, start, &tree).await?;
    eprintln!("bench: health: backfill done in {:.1} s", secs(step));
    for table in [
        "health_device_buckets",
        "health_rollups",
        "health_members",
        "health_groups",
        "rm_group_tree.group_closure",
        "rm_membership.direct",
    ] {
        sqlx::query(&format!("VACUUM ANALYZE {table}"))
            .execute(&pool)
            .await?;
    }
    let setup_secs = secs(suite_started);
    eprintln!("bench: health: setup done in {setup_secs:.0} s");

    let checked = verify(&pool, tree.global, start, end, "after setup").await?;
    let expected = (devices * per_device) as i64;
    if checked.0 != expected {
        return Err(format!(
            "health: Global's rollups count {} samples in the window; {expected} were generated",
            checked.0
        )
        .into());
    }
    eprintln!(
        "bench: health: rollups and raw samples of Global agree over {} buckets ({} samples)",
        checked.1, checked.0
    );

    bench_query(&pool, &tree, start, end, devices, per_device, args, rows).await?;
    eprintln!(
        "bench: health: queries done at {:.0} s",
        secs(suite_started)
    );

    for concurrency in [1, 4] {
        bench_ingest(
            &pool,
            &config,
            devices,
            end,
            args.health_ingest_samples,
            concurrency,
            rows,
        )
        .await?;
    }
    settled(&pool).await?;
    eprintln!("bench: health: ingest done at {:.0} s", secs(suite_started));

    bench_moves(&pool, &mut rt, &config, &tree, per_site, rows).await?;
    eprintln!("bench: health: moves done at {:.0} s", secs(suite_started));

    // The window now ends after the ingested samples (stamped in [end, end + 5 min)).
    let (to, from) = (
        end + BucketSize::FiveMinutes.delta(),
        end + BucketSize::FiveMinutes.delta() - TimeDelta::hours(24),
    );
    for (label, group) in [("Global", tree.global), ("region-1", tree.regions[1])] {
        let (samples, buckets) = verify(&pool, group, from, to, "after the moves").await?;
        eprintln!(
            "bench: health: rollups and raw samples of {label} agree after ingest and moves \
             ({buckets} buckets, {samples} samples)"
        );
    }
    if let Some((global_ms, root_ms)) = group_times {
        eprintln!(
            "bench: health: for reference, backfill's refresh_group(force) took {global_ms:.0} ms \
             for Global and {root_ms:.0} ms for the device root ({devices} members each)"
        );
    }
    rt.refresh.stop().await;
    rt.background.shutdown().await;
    eprintln!("bench: health: done in {:.0} s", secs(suite_started));
    pool.close().await;
    lock_pool.close().await;
    Ok(())
}
