//! The rule evaluator: keeps every group's RULE entries equal to what its rule matches.
//!
//! It runs
//! - **on rule change**: a group whose `rule_version` differs from its last run is evaluated
//!   over the whole inventory (or, when its rule was disabled or cleared, loses its rule
//!   entries);
//! - **on inventory change**, incrementally: it reads the inventory change feed (rows below the
//!   xmin horizon, in `(changed_tx, change_seq)` order, like the event log) and evaluates only
//!   the changed entities, in memory, against only the rules that read a changed field;
//! - **on a schedule** for rules whose answer moves by itself (`now`, `group:` references);
//! - **as drift repair**, every rule now and then, and the memberships of deleted groups.
//!
//! Every change goes through [`MembershipCommands`] as Membership events with source `RULE`,
//! the rule version and the cause; the registry diff makes re-running any step a no-op, so the
//! worker needs no exactly-once bookkeeping of its own. Only one evaluator runs in a cluster
//! (a session advisory lock); the others wait to take over.

mod evaluate;
mod incremental;
mod plan;
mod queries;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_domain::group::GroupType;
use corral_domain::membership::MembershipError;
use corral_projections::commands::executor::ExecError;
use corral_projections::leader::{Leadership, Leading};
use corral_projections::locks::Lock;
use corral_projections::membership::MembershipCommands;
use corral_projections::StoreError;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use plan::Cached;
pub use queries::matching_ids;

/// Ids per membership command the evaluator sends.
const IDS_PER_COMMAND: usize = 10_000;
/// Rules a repair pass evaluates per step.
const REPAIRS_PER_STEP: usize = 4;

/// How the evaluator runs.
#[derive(Debug, Clone)]
pub struct RuleWorkerConfig {
    /// A full evaluation matching more entities fails and changes nothing.
    pub max_matches: i64,
    /// A full evaluation's query is cancelled after this long (the run fails).
    pub timeout: Duration,
    /// Rules using `now` or `group:` are re-evaluated this often.
    pub schedule_every: Duration,
    /// Every rule is re-evaluated this often (drift repair).
    pub repair_every: Duration,
    /// Idle polling interval of the inventory change feed.
    pub poll: Duration,
    /// Inventory changes per incremental step.
    pub batch: i64,
}

impl Default for RuleWorkerConfig {
    fn default() -> Self {
        Self {
            max_matches: 1_000_000,
            timeout: Duration::from_secs(60),
            schedule_every: Duration::from_secs(60),
            repair_every: Duration::from_secs(3600),
            poll: Duration::from_millis(100),
            batch: 1000,
        }
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum RuleWorkerError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A membership command failed unexpectedly.
    #[error("membership command failed: {0}")]
    Command(String),
}

impl From<sqlx::Error> for RuleWorkerError {
    fn from(e: sqlx::Error) -> Self {
        RuleWorkerError::Store(e.into())
    }
}

/// The evaluator's state.
pub struct RuleWorker {
    pool: PgPool,
    commands: Arc<MembershipCommands>,
    config: RuleWorkerConfig,
    cache: HashMap<Uuid, Cached>,
    last_repair: Option<Instant>,
    last_schedule_check: Option<Instant>,
    repair_queue: VecDeque<Uuid>,
}

/// The outcome of one full evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// `OK` or `FAILED`.
    pub status: &'static str,
    /// Entities matched (OK runs).
    pub matches: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Entries added and removed.
    pub added: usize,
    /// Entries removed.
    pub removed: usize,
}

impl RuleWorker {
    /// An evaluator over `pool`, writing through `commands`.
    pub fn new(pool: PgPool, commands: Arc<MembershipCommands>, config: RuleWorkerConfig) -> Self {
        Self {
            pool,
            commands,
            config,
            cache: HashMap::new(),
            last_repair: None,
            last_schedule_check: None,
            repair_queue: Default::default(),
        }
    }

    /// One pass over every source of work; true when something was done.
    pub async fn step(&mut self) -> Result<bool, RuleWorkerError> {
        let mut worked = self.rule_changes().await?;
        worked |= self.inventory(GroupType::Device).await?;
        worked |= self.inventory(GroupType::Service).await?;
        worked |= self.scheduled().await?;
        Ok(worked)
    }

    /// The group's rule, parsed once per version.
    fn parse(&mut self, group: Uuid, version: u64, json: &Value) -> Result<Cached, String> {
        if let Some(c) = self.cache.get(&group) {
            if c.version == version {
                return Ok(c.clone());
            }
        }
        let cached = Cached::load(version, json)?;
        self.cache.insert(group, cached.clone());
        Ok(cached)
    }
}

/// A membership command's result: a group that went away meanwhile leaves nothing to converge.
fn check<T>(result: Result<T, ExecError<MembershipError>>) -> Result<(), RuleWorkerError> {
    match result {
        Ok(_) => Ok(()),
        Err(ExecError::Domain(MembershipError::GroupNotFound(_))) => Ok(()),
        Err(e) => Err(RuleWorkerError::Command(e.to_string())),
    }
}

/// Runs the evaluator until `stop`: waits to become the cluster's one evaluator, then steps,
/// sleeping `poll` (or until woken) when idle.
pub async fn run(
    pool: PgPool,
    commands: Arc<MembershipCommands>,
    config: RuleWorkerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let poll = config.poll;
    let mut worker = RuleWorker::new(pool.clone(), commands, config);
    // Leadership ends with the lock's session: `next` checks it before every step, so that
    // a process whose session was ended never evaluates beside the new leader.
    let leadership = Leadership::Worker(Lock::RuleEvaluator);
    let mut leading = Leading::new(pool, leadership, crate::LEADER_RETRY)
        .on_lost(|| tracing::warn!("rule evaluator lost its lock; waiting to take it again"));
    while leading.next(&mut stop).await.is_some() {
        match worker.step().await {
            Ok(true) => tokio::task::yield_now().await,
            Ok(false) => sleep_or_stop(poll, &mut stop).await,
            Err(e) => {
                tracing::warn!(error = %e, "rule evaluation step failed; retrying");
                sleep_or_stop(Duration::from_secs(1), &mut stop).await;
            }
        }
    }
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
}
