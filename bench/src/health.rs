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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use clap::Args;
use corral_api::runtime::{self, BoxError};
use corral_domain::group::{GroupCommand, GroupType};
use corral_domain::membership::{MemberSource, MembershipCommand, MAX_IDS_PER_COMMAND};
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::commands::groups::GroupCommands;
use corral_projections::health::query::SourcePreference;
use corral_projections::health::refresh::{refresh_pending, PendingSummary};
use corral_projections::health::{
    backfill, group_health, ingest_sysmon, refresh_group, BucketSize, HealthConfig, HealthSeries,
    SysmonSample, MAX_INGEST_BATCH,
};
use corral_projections::leader;
use corral_projections::locks::Lock;
use corral_projections::membership::MembershipCommands;
use corral_workers::Background;
use futures::{stream, StreamExt, TryStreamExt};
use sqlx::{PgPool, Row as _};
use tokio::sync::watch;
use uuid::Uuid;

use super::membership::{percentile, sample};
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

fn device_id(i: usize) -> String {
    format!("dev-{i:07}")
}

/// splitmix64 of `(seed, i)`.
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The group tree: Global under the device root, regions under Global, sites under regions.
struct Tree {
    global: Uuid,
    regions: Vec<Uuid>,
    /// `sites[r][s]`.
    sites: Vec<Vec<Uuid>>,
}

impl Tree {
    fn new() -> Tree {
        let ns = Uuid::from_u128(0x6865_616c_7468_2d62_656e_6368_2d74_7265);
        let id = |name: &str| Uuid::new_v5(&ns, name.as_bytes());
        Tree {
            global: id("global"),
            regions: (0..REGIONS).map(|r| id(&format!("region-{r}"))).collect(),
            sites: (0..REGIONS)
                .map(|r| (0..SITES).map(|s| id(&format!("site-{r}-{s}"))).collect())
                .collect(),
        }
    }
}

/// Projectors, the refresh worker and commands that wake them.
struct Runtime {
    background: Background,
    refresh: RefreshWorker,
    groups: Arc<GroupCommands>,
    members: Arc<MembershipCommands>,
}

/// The rollup refresh worker, which the move benchmark stops to refresh by itself.
struct RefreshWorker {
    pool: PgPool,
    running: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl RefreshWorker {
    /// Starts the worker and waits until it leads the refresh.
    async fn start(&mut self) -> Result<(), BoxError> {
        if self.running.is_some() {
            return Ok(());
        }
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(corral_workers::health::run_refresh(
            self.pool.clone(),
            HealthConfig::default(),
            POLL,
            stop_rx,
        ));
        self.running = Some((stop, task));
        let started = Instant::now();
        while !leader::held_here()
            .iter()
            .any(|l| l == Lock::HealthRefresh.name())
        {
            if started.elapsed() > Duration::from_secs(30) {
                return Err("health: the refresh worker did not take the lead within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Stops the worker (its leadership ends with it).
    async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

impl Runtime {
    async fn start(pool: &PgPool, lock_pool: &PgPool) -> Result<Runtime, BoxError> {
        let background = corral_workers::start_with_options(
            pool.clone(),
            corral_workers::BackgroundOptions {
                projectors: true,
                poll: POLL,
                rules: None,
                health_refresh: false,
                health: HealthConfig::default(),
            },
        )
        .await?;
        let mut refresh = RefreshWorker {
            pool: pool.clone(),
            running: None,
        };
        refresh.start().await?;
        let signal = background.commit_signal();
        Ok(Runtime {
            refresh,
            groups: Arc::new(GroupCommands::new(
                pool.clone(),
                lock_pool.clone(),
                signal.clone(),
            )),
            members: Arc::new(MembershipCommands::new(
                pool.clone(),
                lock_pool.clone(),
                signal,
            )),
            background,
        })
    }
}

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

async fn create_tree(groups: &Arc<GroupCommands>, tree: &Tree) -> Result<(), BoxError> {
    let create = |id: Uuid, name: String, parent: Uuid| GroupCommand::Create {
        id,
        name,
        group_type: GroupType::Device,
        parent_id: parent,
        description: None,
        metadata: None,
    };
    let meta = meta();
    groups
        .execute(
            create(tree.global, "Global".into(), GroupType::Device.root_id()),
            None,
            &meta,
        )
        .await
        .map_err(|e| format!("creating Global: {e}"))?;
    let mut levels: Vec<Vec<GroupCommand>> = vec![vec![], vec![]];
    for (r, &region) in tree.regions.iter().enumerate() {
        levels[0].push(create(region, format!("region-{r}"), tree.global));
        for (s, &site) in tree.sites[r].iter().enumerate() {
            levels[1].push(create(site, format!("site-{r}-{s}"), region));
        }
    }
    for level in levels {
        stream::iter(level)
            .map(|command| {
                let (groups, meta) = (groups.clone(), meta.clone());
                async move {
                    groups
                        .execute(command, None, &meta)
                        .await
                        .map_err(|e| BoxError::from(format!("creating a group: {e}")))
                }
            })
            .buffer_unordered(CONCURRENCY * 2)
            .try_for_each(|_| async { Ok(()) })
            .await?;
    }
    Ok(())
}

/// Site `k` (0..100, region-major) gets devices `k * per_site .. (k + 1) * per_site`.
async fn add_members(
    members: &Arc<MembershipCommands>,
    tree: &Tree,
    per_site: usize,
) -> Result<(), BoxError> {
    let mut commands = Vec::new();
    for (k, &site) in tree.sites.iter().flatten().enumerate() {
        let ids: Vec<String> = (k * per_site..(k + 1) * per_site).map(device_id).collect();
        for chunk in ids.chunks(MAX_IDS_PER_COMMAND) {
            commands.push((site, chunk.to_vec()));
        }
    }
    let meta = meta();
    stream::iter(commands)
        .map(|(site, ids)| {
            let (members, meta) = (members.clone(), meta.clone());
            async move {
                let command = MembershipCommand::Add {
                    member_ids: ids,
                    source: MemberSource::Static,
                    rule_version: None,
                    cause: None,
                };
                members
                    .execute(site, command, &meta)
                    .await
                    .map_err(|e| BoxError::from(format!("adding members: {e}")))
            }
        })
        .buffer_unordered(CONCURRENCY * 2)
        .try_for_each(|_| async { Ok(()) })
        .await
}

/// Waits until every projector has applied every committed event and the rollup refresh
/// queue is empty.
async fn settled(pool: &PgPool) -> Result<(), BoxError> {
    let started = Instant::now();
    loop {
        let status = corral_projections::runner::status(pool).await?;
        let lag: i64 = status.iter().map(|s| s.lag_events).sum();
        let dirty: i64 = sqlx::query_scalar("SELECT count(*) FROM health_dirty")
            .fetch_one(pool)
            .await?;
        if lag == 0 && dirty == 0 && !status.is_empty() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!(
                "health: projectors {lag} events behind, {dirty} groups queued after 600 s"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Raw samples of device `d`: one every `interval` seconds from `start` plus a phase of the
/// device's own, values from a hash of the device and the sample.
async fn raw_samples(
    pool: &PgPool,
    devices: usize,
    start: DateTime<Utc>,
    interval: i64,
    per_device: usize,
) -> Result<(), BoxError> {
    let chunk = 10_000usize;
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let chunks: Vec<(usize, usize)> = (0..devices)
        .step_by(chunk)
        .map(|from| (from, (from + chunk).min(devices)))
        .collect();
    let total = chunks.len();
    stream::iter(chunks)
        .map(|(from, to)| {
            let (pool, done) = (pool.clone(), done.clone());
            async move {
                sqlx::query(
                    "INSERT INTO telemetry_sysmon (device_id, ts, cpu_percent, mem_percent,
                                                   disk_percent)
                     SELECT 'dev-' || lpad(d::text, 7, '0'),
                            $3 + make_interval(secs => (abs(hashint4(d)) % $4) + k * $4),
                            (abs(hashint8(d::bigint * 4099 + k)) % 10000) / 100.0,
                            20 + (abs(hashint8(d::bigint * 8191 + k)) % 6000) / 100.0,
                            30 + (d % 50) + (k % 7)
                       FROM generate_series($1::int, $2::int - 1) d,
                            generate_series(0, $5::int - 1) k
                      ORDER BY d, k",
                )
                .bind(from as i32)
                .bind(to as i32)
                .bind(start)
                .bind(interval as i32)
                .bind(per_device as i32)
                .execute(&pool)
                .await?;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 2 == 0 || n == total {
                    eprintln!(
                        "bench: health: raw samples of {}/{} devices ({:.0} s)",
                        (n * chunk).min(devices),
                        devices,
                        secs(started)
                    );
                }
                Ok::<(), BoxError>(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await
}

/// Runs `backfill` from `start`, with progress on stderr; returns how long the forced
/// refreshes of Global and of the device root took (ms), when seen.
async fn run_backfill(
    pool: &PgPool,
    config: &HealthConfig,
    start: DateTime<Utc>,
    tree: &Tree,
) -> Result<Option<(f64, f64)>, BoxError> {
    let started = Instant::now();
    let mut last = Instant::now();
    let mut phase_groups = false;
    let (global, root) = (
        tree.global.to_string(),
        GroupType::Device.root_id().to_string(),
    );
    let (mut global_ms, mut root_ms) = (None, None);
    let mut hours = 0;
    let report = backfill::backfill(pool, config, start, None, |what: &str| {
        let took = ms(last.elapsed());
        last = Instant::now();
        if what.starts_with("buckets") {
            hours += 1;
            if hours % 5 == 0 {
                eprintln!("bench: health: backfill: {what} ({:.0} s)", secs(started));
            }
            return;
        }
        if !phase_groups {
            phase_groups = true;
            eprintln!(
                "bench: health: backfill: buckets done at {:.0} s; recomputing groups",
                secs(started)
            );
        }
        if what.contains(&global) {
            global_ms = Some(took);
        }
        if what.contains(&root) {
            root_ms = Some(took);
        }
        if took > 2000.0 {
            eprintln!("bench: health: backfill: {what} in {:.1} s", took / 1000.0);
        }
    })
    .await?;
    eprintln!(
        "bench: health: backfill: {} hours, {} buckets, {} groups in {:.0} s",
        report.hours,
        report.buckets,
        report.groups,
        secs(started)
    );
    Ok(global_ms.zip(root_ms))
}

/// Compares the rollup series of `group` with the one computed from raw samples over
/// `[from, to)` in 5-minute buckets; fails on any difference. Returns (samples, buckets).
async fn verify(
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

/// (b) The 24-hour health series of Global in 5-minute buckets, from rollups and from raw.
#[allow(clippy::too_many_arguments)]
async fn bench_query(
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

/// One ingest sample: device `i % devices`, stamped in `[base, base + 290 s)`.
fn ingest_sample(i: usize, devices: usize, base: DateTime<Utc>) -> SysmonSample {
    let h = mix(0x6865_616c, i as u64);
    let pct = |shift: u32| ((h >> shift) % 10_000) as f64 / 100.0;
    SysmonSample {
        device_id: device_id(i % devices),
        ts: base + TimeDelta::seconds((i % 290) as i64),
        cpu_percent: pct(0),
        mem_percent: pct(16),
        disk_percent: pct(32),
    }
}

/// Runs `op(batch)` over `batches` from `concurrency` tasks; returns rows per second.
async fn drain<F, Fut>(
    batches: usize,
    per_batch: usize,
    concurrency: usize,
    op: F,
) -> Result<f64, BoxError>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok::<(), BoxError>(());
                }
                op(b).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((batches * per_batch) as f64 / started.elapsed().as_secs_f64())
}

/// (a) `ingest_sysmon` vs COPY and vs `INSERT ... SELECT FROM unnest` of the same rows into
/// a plain table of the same shape (columns and index of `telemetry_sysmon`).
async fn bench_ingest(
    pool: &PgPool,
    config: &HealthConfig,
    devices: usize,
    base: DateTime<Utc>,
    total: usize,
    concurrency: usize,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let per_batch = MAX_INGEST_BATCH;
    let batches = (total / per_batch).max(1);
    let offset = concurrency * 7919;
    let batch = move |b: usize| -> Vec<SysmonSample> {
        (b * per_batch..(b + 1) * per_batch)
            .map(|i| ingest_sample(i + offset, devices, base))
            .collect()
    };
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS bench_sysmon_plain (LIKE telemetry_sysmon INCLUDING DEFAULTS);
         CREATE INDEX IF NOT EXISTS bench_sysmon_plain_idx ON bench_sysmon_plain (device_id, ts);
         TRUNCATE bench_sysmon_plain",
    )
    .execute(pool)
    .await?;

    let rollups_before: i64 = sqlx::query_scalar("SELECT count(*) FROM health_rollups")
        .fetch_one(pool)
        .await?;
    let (p, c) = (pool.clone(), config.clone());
    let updated = Arc::new(AtomicUsize::new(0));
    let counter = updated.clone();
    let ingest = drain(batches, per_batch, concurrency, move |b| {
        let (pool, config, counter) = (p.clone(), c.clone(), counter.clone());
        let samples = batch(b);
        async move {
            let report = ingest_sysmon(&pool, &config, &samples).await?;
            if report.accepted != samples.len() as u64 {
                return Err(BoxError::from(format!(
                    "health: ingest accepted {} of {} ({:?})",
                    report.accepted,
                    samples.len(),
                    report.rejections.first()
                )));
            }
            counter.fetch_add(report.rollups_updated as usize, Ordering::Relaxed);
            Ok(())
        }
    })
    .await?;
    let rollups_after: i64 = sqlx::query_scalar("SELECT count(*) FROM health_rollups")
        .fetch_one(pool)
        .await?;
    eprintln!(
        "bench: health: ingest_sysmon, concurrency {concurrency}: {ingest:.0} samples/s \
         ({} rollup rows written, {} new)",
        updated.load(Ordering::Relaxed),
        rollups_after - rollups_before
    );

    let p = pool.clone();
    let copy = drain(batches, per_batch, concurrency, move |b| {
        let pool = p.clone();
        let samples = batch(b);
        async move {
            use std::fmt::Write;
            let mut text = String::with_capacity(samples.len() * 64);
            for s in &samples {
                let _ = writeln!(
                    text,
                    "{}\t{}\t{}\t{}\t{}",
                    s.device_id,
                    s.ts.to_rfc3339(),
                    s.cpu_percent as f32,
                    s.mem_percent as f32,
                    s.disk_percent as f32
                );
            }
            let mut conn = pool.acquire().await?;
            let mut copy = conn
                .copy_in_raw(
                    "COPY bench_sysmon_plain (device_id, ts, cpu_percent, mem_percent, \
                     disk_percent) FROM STDIN",
                )
                .await?;
            copy.send(text.into_bytes()).await?;
            copy.finish().await?;
            Ok(())
        }
    })
    .await?;
    sqlx::query("TRUNCATE bench_sysmon_plain")
        .execute(pool)
        .await?;
    let p = pool.clone();
    let unnest = drain(batches, per_batch, concurrency, move |b| {
        let pool = p.clone();
        let samples = batch(b);
        async move {
            sqlx::query(
                "INSERT INTO bench_sysmon_plain (device_id, ts, cpu_percent, mem_percent,
                                                 disk_percent)
                 SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::real[], $4::real[],
                                      $5::real[])",
            )
            .bind(
                samples
                    .iter()
                    .map(|s| s.device_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(samples.iter().map(|s| s.ts).collect::<Vec<_>>())
            .bind(
                samples
                    .iter()
                    .map(|s| s.cpu_percent as f32)
                    .collect::<Vec<_>>(),
            )
            .bind(
                samples
                    .iter()
                    .map(|s| s.mem_percent as f32)
                    .collect::<Vec<_>>(),
            )
            .bind(
                samples
                    .iter()
                    .map(|s| s.disk_percent as f32)
                    .collect::<Vec<_>>(),
            )
            .execute(&pool)
            .await?;
            Ok(())
        }
    })
    .await?;
    sqlx::query("TRUNCATE bench_sysmon_plain")
        .execute(pool)
        .await?;
    eprintln!(
        "bench: health: raw paths, concurrency {concurrency}: COPY {copy:.0} rows/s, \
         INSERT ... SELECT FROM unnest {unnest:.0} rows/s"
    );
    let (baseline_name, baseline) = if copy >= unnest {
        ("COPY", copy)
    } else {
        (
            "INSERT ... SELECT FROM unnest (faster than COPY here)",
            unnest,
        )
    };
    rows.push(Row {
        name: format!(
            "ingest_sysmon, batches of {per_batch}, {} samples, concurrency {concurrency} \
             (samples/s)",
            batches * per_batch
        ),
        corral: format!("{ingest:.0}"),
        baseline_name: format!(
            "{baseline_name} of the same rows into a plain table with the same columns and \
             index, {per_batch} per statement (rows/s)"
        ),
        baseline: format!("{baseline:.0}"),
        ratio: ingest / baseline,
        target: "-".into(),
    });
    Ok(())
}

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
async fn bench_moves(
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
