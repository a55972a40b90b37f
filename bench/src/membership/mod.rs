//! Benchmark (d), issue 3: memberships and rules over a generated inventory (by default 1M
//! devices, 10k groups of depth 8 and 1.5M direct memberships), each figure beside a baseline
//! measured in the same run.
//!
//! Setup (not measured): the devices by COPY, the groups through `GroupCommands`, the direct
//! memberships through `MembershipCommands` in commands of at most 10,000 ids, then the
//! projectors catch up and the tables are analyzed. Then, in order: effective first pages,
//! the effective count, the reverse lookup, one rule over every device, sustained inventory
//! changes with the rule evaluator running, and AddMembers as one group grows; between the
//! queries and the rules, a subtree of a tenth of the inventory moves and back.

mod changes;
mod data;
mod growth;
mod load;
mod moves;
mod queries;
mod rules;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use corral_api::runtime::{self, BoxError};
use corral_domain::group::{GroupCommand, GroupType};
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::commands::groups::GroupCommands;
use corral_projections::membership::MembershipCommands;
use corral_workers::rules::RuleWorkerConfig;
use corral_workers::Background;
use sqlx::PgPool;
use uuid::Uuid;

use super::Row;

/// Options of the membership suite.
#[derive(Args, Debug, Clone)]
pub struct MembershipArgs {
    /// Devices in the membership suite's inventory; it has a hundredth as many groups and 1.5
    /// times as many direct memberships (100000 for a quick run).
    #[arg(long, default_value_t = 1_000_000)]
    pub devices: usize,
    /// Seed of the membership suite's generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Runs per latency figure of the membership queries.
    #[arg(long, default_value_t = 200)]
    pub query_runs: usize,
    /// Inventory changes per second in the sustained-change measurement.
    #[arg(long, default_value_t = 1000)]
    pub change_rate: usize,
    /// Seconds of the sustained-change measurement.
    #[arg(long, default_value_t = 20)]
    pub change_seconds: u64,
    /// Keep the membership suite's database afterwards (to look at its plans).
    #[arg(long)]
    pub keep_database: bool,
}

/// The sizes of the generated data.
pub(super) struct Scale {
    pub devices: usize,
    pub groups: usize,
    pub memberships: usize,
    pub seed: u64,
}

impl Scale {
    fn of(args: &MembershipArgs) -> Scale {
        let devices = args.devices.max(10_000);
        Scale {
            devices,
            groups: devices / 100,
            memberships: devices * 3 / 2,
            seed: args.seed,
        }
    }
}

/// The projectors' fallback polling interval, as `corral serve` has it.
const POLL: Duration = Duration::from_secs(1);
/// Most time the naive baselines of one figure may take.
const BASELINE_BUDGET: Duration = Duration::from_secs(20);

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs `op` `runs` times, or fewer (at least once) once `budget` is spent; returns the times
/// in ms, sorted. Callers warm up first (each checks its answer against the baseline's).
pub(super) async fn sample<F, Fut>(
    runs: usize,
    budget: Duration,
    mut op: F,
) -> Result<Vec<f64>, BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let started = Instant::now();
    let mut times = Vec::with_capacity(runs);
    while times.len() < runs && (times.is_empty() || started.elapsed() < budget) {
        let t = Instant::now();
        op().await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// A p50 and a p99 row of latencies against a baseline's.
pub(super) fn latency_rows(
    rows: &mut Vec<Row>,
    name: &str,
    corral: &[f64],
    baseline_name: &str,
    baseline: &[f64],
    p99_target: Option<&str>,
) {
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (c, b) = (percentile(corral, p), percentile(baseline, p));
        rows.push(Row {
            name: format!("{name}, {label} of {} (ms)", corral.len()),
            corral: format!("{c:.3}"),
            baseline_name: format!("{baseline_name}, {label} of {} (ms)", baseline.len()),
            baseline: format!("{b:.3}"),
            ratio: c / b,
            target: match (p > 0.9, p99_target) {
                (true, Some(t)) => t.into(),
                _ => "-".into(),
            },
        });
    }
}

/// The commands and background tasks of one phase.
struct Runtime {
    background: Background,
    groups: Arc<GroupCommands>,
    members: Arc<MembershipCommands>,
}

impl Runtime {
    /// Projectors (and, with `rules`, the rule evaluator), with commands that wake them.
    async fn start(
        pool: &PgPool,
        lock_pool: &PgPool,
        rules: Option<RuleWorkerConfig>,
    ) -> Result<Runtime, BoxError> {
        let background = corral_workers::start_with(pool.clone(), true, POLL, rules).await?;
        let signal = background.commit_signal();
        Ok(Runtime {
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

pub(super) async fn bench_membership(
    url: &str,
    args: &MembershipArgs,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let scale = Scale::of(args);
    let suite_started = Instant::now();
    eprintln!(
        "bench: membership: {} devices, {} groups of depth {}, {} direct memberships (seed {})",
        scale.devices,
        scale.groups,
        data::DEPTH,
        scale.memberships,
        scale.seed
    );
    let (pool, lock_pool) = load::pools(url).await?;
    corral_migrations::migrate(&pool).await?;
    let rt = Runtime::start(&pool, &lock_pool, None).await?;
    runtime::ensure_roots(&rt.groups).await?;

    load::devices(&pool, scale.seed, scale.devices).await?;
    let tree = data::Tree::generate(scale.seed, scale.groups);
    load::groups(&rt.groups, &tree).await?;
    let sizes = load::memberships(&rt.members, &tree, &scale).await?;
    load::caught_up(&pool, "setup").await?;
    load::analyze(&pool).await?;
    eprintln!(
        "bench: membership: setup done in {:.0} s",
        suite_started.elapsed().as_secs_f64()
    );

    // The largest leaf at depth 8 and the device root (the largest subtree: every group).
    let leaf = (0..tree.ids.len())
        .filter(|&i| tree.depth[i] == data::DEPTH && !tree.has_children[i])
        .max_by_key(|&i| sizes[i])
        .ok_or("the tree has no leaf at depth 8")?;
    let root = GroupType::Device.root_id();
    let runs = args.query_runs;
    queries::first_page(
        &pool,
        &format!("leaf at depth 8 ({} members)", sizes[leaf]),
        tree.ids[leaf],
        runs,
        BASELINE_BUDGET,
        rows,
    )
    .await?;
    queries::first_page(
        &pool,
        &format!(
            "device root ({} groups, {} direct rows)",
            tree.ids.len() + 1,
            scale.memberships
        ),
        root,
        runs,
        BASELINE_BUDGET,
        rows,
    )
    .await?;
    queries::count(&pool, "device root", root, 3, BASELINE_BUDGET, rows).await?;
    let probes: Vec<String> = (0..runs as u64)
        .map(|k| data::device_id(data::mix(scale.seed ^ 0x7265_7665, k) as usize % scale.devices))
        .collect();
    queries::reverse(&pool, &probes, rows).await?;
    moves::bench(&pool, &rt.groups, &tree, scale.devices, rows).await?;
    eprintln!(
        "bench: membership: queries done at {:.0} s",
        suite_started.elapsed().as_secs_f64()
    );

    rules::bench(&pool, rows).await?;
    eprintln!(
        "bench: membership: rule evaluation done at {:.0} s",
        suite_started.elapsed().as_secs_f64()
    );

    // Sustained changes: the plain write rate first, then a group with a rule and the
    // evaluator running.
    let batch = (args.change_rate / 10).max(1);
    let without =
        changes::plain_upsert_rate(&pool, scale.seed, scale.devices, batch, 3, false).await?;
    let plain =
        changes::plain_upsert_rate(&pool, scale.seed, scale.devices, batch, 3, true).await?;
    changes::events_row(plain, without, rows);
    let flip_group = create_rule_group(&rt.groups).await?;
    skip_change_feed(&pool).await?;
    rt.background.shutdown().await;
    let rt = Runtime::start(&pool, &lock_pool, Some(RuleWorkerConfig::default())).await?;
    wait_rule_run(&pool, flip_group).await?;
    let sustained = changes::sustained(
        &pool,
        flip_group,
        scale.seed,
        scale.devices,
        args.change_rate,
        args.change_seconds,
    )
    .await?;
    changes::rows(&sustained, args.change_rate, plain, rows);
    rt.background.shutdown().await;
    eprintln!(
        "bench: membership: sustained changes done at {:.0} s",
        suite_started.elapsed().as_secs_f64()
    );

    let rt = Runtime::start(&pool, &lock_pool, None).await?;
    load::caught_up(&pool, "before growth").await?;
    growth::bench(
        &pool,
        &rt.groups,
        &rt.members,
        scale.seed,
        scale.devices,
        rows,
    )
    .await?;
    rt.background.shutdown().await;
    eprintln!(
        "bench: membership: done in {:.0} s",
        suite_started.elapsed().as_secs_f64()
    );
    pool.close().await;
    lock_pool.close().await;
    Ok(())
}

/// A group under the device root whose rule the flipping devices enter and leave.
async fn create_rule_group(groups: &GroupCommands) -> Result<Uuid, BoxError> {
    let id = Uuid::new_v4();
    let meta = EventMetadata::system(Source::Cli, "bench-membership");
    groups
        .execute(
            GroupCommand::Create {
                id,
                name: "flip".into(),
                group_type: GroupType::Device,
                parent_id: GroupType::Device.root_id(),
                description: None,
                metadata: None,
            },
            None,
            &meta,
        )
        .await
        .map_err(|e| format!("creating the rule group: {e}"))?;
    let rule = corral_domain::rule::parse(changes::FLIP_RULE, GroupType::Device)
        .map_err(|e| format!("{}: {e}", changes::FLIP_RULE))?
        .rule;
    groups
        .execute(
            GroupCommand::SetRule {
                id,
                rule: rule.to_json(),
                text: rule.to_text(),
                kind: GroupType::Device,
                refs: vec![],
                enabled: true,
            },
            None,
            &meta,
        )
        .await
        .map_err(|e| format!("setting the rule: {e}"))?;
    Ok(id)
}

/// Starts the evaluator's change feed after the setup's writes: the bulk load is not a
/// change any rule has to look at one by one (the evaluator's first full run covers it).
async fn skip_change_feed(pool: &PgPool) -> Result<(), BoxError> {
    for table in ["devices", "services"] {
        sqlx::query(&format!(
            "INSERT INTO inventory_cursors (name, changed_tx, change_seq)
             SELECT $1, coalesce(max(changed_tx), '0'), coalesce(max(change_seq), 0) FROM {table}
             ON CONFLICT (name) DO UPDATE
                SET changed_tx = EXCLUDED.changed_tx, change_seq = EXCLUDED.change_seq"
        ))
        .bind(table)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Waits for the evaluator's first full run of the group's rule (and its start-up repair
/// pass, which follows in the same step).
async fn wait_rule_run(pool: &PgPool, group: Uuid) -> Result<(), BoxError> {
    let started = Instant::now();
    loop {
        let status: Option<String> =
            sqlx::query_scalar("SELECT last_run_status FROM rule_runs WHERE group_id = $1")
                .bind(group)
                .fetch_optional(pool)
                .await?;
        match status.as_deref() {
            Some("OK") => break,
            Some(other) => return Err(format!("the rule's first run: {other}").into()),
            None if started.elapsed() > Duration::from_secs(120) => {
                return Err("the rule evaluator did not run the rule within 120 s".into())
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!(
        "bench: membership: rule evaluator running ({:.1} s to the first run)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
