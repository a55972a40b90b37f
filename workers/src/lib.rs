//! Background work that runs beside (or apart from) the API: the projectors, the LISTEN
//! connection that wakes them, the notifier that tells other processes about this one's
//! commits, the rule evaluator, the recorder of token expiries, the NATS inventory feed and the
//! NATS publisher of the event log.

pub mod asyncapi;
pub mod capabilities;
pub mod feed;
pub mod health;
pub mod inventory_feed;
pub mod membership_feed;
pub mod nats_names;
pub mod publisher;
pub mod rules;
pub mod sweep_control;
pub mod sweeps;
pub mod telemetry_feed;
pub mod token_expiry;

use std::sync::Arc;
use std::time::Duration;

use corral_projections::commands::groups::GroupCommands;
use corral_projections::health::HealthConfig;
use corral_projections::membership::MembershipCommands;
use corral_projections::runner::{ensure_schema, run_projector};
use corral_projections::waiter::{run_listener, Checkpoints, ConsistencyWaiter};
use corral_projections::wake::{run_notifier, CommitSignal};
use corral_projections::{Projection, StoreError};
use rules::RuleWorkerConfig;
use sqlx::PgPool;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// How often a standby process tries to take a singleton worker's leadership.
pub const LEADER_RETRY: Duration = Duration::from_secs(2);

/// Every projection Corral keeps, in the order they are set up.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    corral_projections::projections()
}

/// Running background tasks; dropped or [`Background::shutdown`] stops them.
pub struct Background {
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
    waiter: ConsistencyWaiter,
    signal: CommitSignal,
}

impl Background {
    /// A waiter for read-your-writes, fed by this process's LISTEN connection.
    pub fn waiter(&self) -> ConsistencyWaiter {
        self.waiter.clone()
    }

    /// What command executors in this process call after a commit.
    pub fn commit_signal(&self) -> CommitSignal {
        self.signal.clone()
    }

    /// Starts the capabilities worker (`docs/capabilities.md`) beside the other tasks; it
    /// stops with them. Its commands wake this process's projectors.
    pub fn spawn_capabilities(&mut self, pool: PgPool, config: capabilities::CapabilityConfig) {
        let commands = Arc::new(GroupCommands::new(
            pool.clone(),
            pool.clone(),
            self.signal.clone(),
        ));
        self.tasks.spawn(capabilities::run(
            pool,
            commands,
            config,
            self.stop.subscribe(),
        ));
    }

    /// Starts the worker that records token expiries (`TokenExpired`) every `every`, one
    /// process of a cluster at a time; it stops with the other tasks. Its commands wake this
    /// process's projectors.
    pub fn spawn_token_expiry(&mut self, pool: PgPool, every: Duration) {
        let commands = Arc::new(corral_projections::commands::access::access_commands(
            pool.clone(),
            self.signal.clone(),
        ));
        self.tasks.spawn(token_expiry::run(
            pool,
            commands,
            every,
            self.stop.subscribe(),
        ));
    }

    /// Stops every task and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts the LISTEN connection and, when `run_projectors`, every projector. Creates the
/// projections' tables first if they do not exist.
pub async fn start(
    pool: PgPool,
    run_projectors: bool,
    poll: Duration,
) -> Result<Background, StoreError> {
    let rules = run_projectors.then(RuleWorkerConfig::default);
    start_with(pool, run_projectors, poll, rules).await
}

/// Like [`start`], with the rule evaluator's settings (`None`: no evaluator in this process).
pub async fn start_with(
    pool: PgPool,
    run_projectors: bool,
    poll: Duration,
    rules: Option<RuleWorkerConfig>,
) -> Result<Background, StoreError> {
    start_with_options(
        pool,
        BackgroundOptions {
            projectors: run_projectors,
            poll,
            rules,
            health_refresh: run_projectors,
            health: HealthConfig::default(),
        },
    )
    .await
}

/// What [`start_with_options`] runs.
#[derive(Debug, Clone)]
pub struct BackgroundOptions {
    /// Every projector, and telemetry retention.
    pub projectors: bool,
    /// How often projectors poll when no notification came.
    pub poll: Duration,
    /// The rule evaluator's settings (`None`: no evaluator in this process).
    pub rules: Option<RuleWorkerConfig>,
    /// The rollup refresh worker (needs the projectors' read models).
    pub health_refresh: bool,
    /// Telemetry retention (the retention and refresh workers use it).
    pub health: HealthConfig,
}

/// Starts the LISTEN connection and what `options` asks for. Creates the projections' tables
/// first if they do not exist.
pub async fn start_with_options(
    pool: PgPool,
    options: BackgroundOptions,
) -> Result<Background, StoreError> {
    let BackgroundOptions {
        projectors: run_projectors,
        poll,
        rules,
        health_refresh,
        health,
    } = options;
    let (stop, stop_rx) = watch::channel(false);
    let (checkpoints_tx, checkpoints_rx) = watch::channel(Checkpoints::new());
    let mut tasks = JoinSet::new();
    let mut wakers = Vec::new();
    if run_projectors {
        let all = projections();
        for projection in &all {
            ensure_schema(&pool, projection.as_ref()).await?;
            wakers.push(Arc::new(Notify::new()));
        }
        for (i, projection) in all.into_iter().enumerate() {
            tasks.spawn(run_projector(
                pool.clone(),
                projection,
                wakers[i].clone(),
                poll,
                stop_rx.clone(),
            ));
        }
    }
    // The purge of deleted groups' memberships follows the log like a projector: woken the
    // same way.
    let purge_wake = Arc::new(Notify::new());
    if run_projectors {
        wakers.push(purge_wake.clone());
    }
    let signal = CommitSignal::new(wakers.clone());
    if run_projectors {
        let members = Arc::new(MembershipCommands::new(
            pool.clone(),
            pool.clone(),
            signal.clone(),
        ));
        tasks.spawn(
            corral_projections::commands::follow_ups::run_membership_purge(
                pool.clone(),
                members,
                purge_wake,
                poll,
                stop_rx.clone(),
            ),
        );
    }
    if health_refresh {
        tasks.spawn(health::run_refresh(
            pool.clone(),
            health.clone(),
            poll.min(Duration::from_secs(1)),
            stop_rx.clone(),
        ));
    }
    if run_projectors {
        tasks.spawn(health::run_retention_loop(
            pool.clone(),
            health,
            stop_rx.clone(),
        ));
    }
    if let Some(config) = rules {
        let commands = Arc::new(MembershipCommands::new(
            pool.clone(),
            pool.clone(),
            signal.clone(),
        ));
        tasks.spawn(rules::run(pool.clone(), commands, config, stop_rx.clone()));
    }
    tasks.spawn(run_notifier(
        pool.clone(),
        signal.clone(),
        Duration::from_millis(2),
        stop_rx.clone(),
    ));
    tasks.spawn(run_listener(pool, wakers, checkpoints_tx, stop_rx));
    Ok(Background {
        tasks,
        stop,
        waiter: ConsistencyWaiter::new(checkpoints_rx),
        signal,
    })
}
