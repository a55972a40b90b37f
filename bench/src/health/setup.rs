//! The health suite's data: the group tree, its members and 24 hours of raw samples, the
//! projectors and the refresh worker, and the backfill that builds the rollups.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use corral_api::runtime::BoxError;
use corral_domain::group::{GroupCommand, GroupType};
use corral_domain::membership::{MemberSource, MembershipCommand, MAX_IDS_PER_COMMAND};
use corral_projections::commands::groups::GroupCommands;
use corral_projections::health::{backfill, HealthConfig};
use corral_projections::leader;
use corral_projections::locks::Lock;
use corral_projections::membership::MembershipCommands;
use corral_workers::Background;
use futures::{stream, StreamExt, TryStreamExt};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::{meta, ms, secs, CONCURRENCY, POLL, REGIONS, SITES};

pub(super) fn device_id(i: usize) -> String {
    format!("dev-{i:07}")
}

/// The group tree: Global under the device root, regions under Global, sites under regions.
pub(super) struct Tree {
    pub(super) global: Uuid,
    pub(super) regions: Vec<Uuid>,
    /// `sites[r][s]`.
    pub(super) sites: Vec<Vec<Uuid>>,
}

impl Tree {
    pub(super) fn new() -> Tree {
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
pub(super) struct Runtime {
    pub(super) background: Background,
    pub(super) refresh: RefreshWorker,
    pub(super) groups: Arc<GroupCommands>,
    pub(super) members: Arc<MembershipCommands>,
}

/// The rollup refresh worker, which the move benchmark stops to refresh by itself.
pub(super) struct RefreshWorker {
    pool: PgPool,
    running: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl RefreshWorker {
    /// Starts the worker and waits until it leads the refresh.
    pub(super) async fn start(&mut self) -> Result<(), BoxError> {
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
    pub(super) async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

impl Runtime {
    pub(super) async fn start(pool: &PgPool, lock_pool: &PgPool) -> Result<Runtime, BoxError> {
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

pub(super) async fn create_tree(groups: &Arc<GroupCommands>, tree: &Tree) -> Result<(), BoxError> {
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
pub(super) async fn add_members(
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
pub(super) async fn settled(pool: &PgPool) -> Result<(), BoxError> {
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
pub(super) async fn raw_samples(
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
pub(super) async fn run_backfill(
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
