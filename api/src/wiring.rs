//! What runs beside the API in `corral serve` and alone in `corral work`, started in one place
//! so that every process (and the end-to-end tests, which run the binary) gets the same set:
//! the projectors and the LISTEN connection, the rollup refresh and telemetry retention, the
//! rule evaluator, the capabilities worker, the recorder of token expiries, the sweep monitor
//! and results retention, and with `NATS_URL` the inventory and telemetry feeds, the sweep
//! dispatcher and reports consumer, the publisher of the event log and the membership feed. Singleton workers elect
//! one leader per cluster (`corral_projections::leader`); NATS names come from one registry
//! (`corral_workers::nats_names`).

use std::sync::Arc;
use std::time::Duration;

use corral_projections::health::HealthConfig;
use corral_projections::sweeps::{SweepCommands, SweepConfig};
use corral_projections::waiter::ConsistencyWaiter;
use corral_projections::wake::CommitSignal;
use corral_workers::capabilities::CapabilityConfig;
use corral_workers::nats_names::NatsNames;
use corral_workers::rules::RuleWorkerConfig;
use corral_workers::{Background, BackgroundOptions};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::runtime::BoxError;
use crate::settings::Settings;
use crate::state::{ApiConfig, AppState};

/// The workers' settings, read from the environment once.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// `NATS_URL`; unset: the NATS feeds, the sweep dispatcher and the publisher are off.
    pub nats_url: Option<String>,
    /// Stream, subject, bucket and consumer names (`CORRAL_NATS_NAMESPACE`, `CORRAL_EVENTS_*`).
    pub nats: NatsNames,
    /// `CORRAL_RULE_*`.
    pub rules: RuleWorkerConfig,
    /// `CORRAL_CAPABILITY_*`.
    pub capabilities: CapabilityConfig,
    /// Telemetry retention and ingest limits.
    pub health: HealthConfig,
    /// Sweep limits, allow-lists and timings.
    pub sweeps: SweepConfig,
    /// How often projectors poll when no notification came.
    pub poll: Duration,
    /// How often token expiries are recorded (`CORRAL_TOKEN_EXPIRY_SECS`).
    pub token_expiry: Duration,
}

impl WorkerSettings {
    /// The workers' part of `settings`.
    pub fn from_settings(settings: &Settings) -> Result<Self, BoxError> {
        Ok(Self {
            nats_url: settings.nats.url(),
            nats: settings.nats.names()?,
            rules: settings.rules(),
            capabilities: settings.capabilities(),
            health: settings.health.config()?,
            sweeps: settings.sweeps(),
            poll: Duration::from_secs(1),
            token_expiry: settings.token_expiry,
        })
    }
}

/// Which parts of the background a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The projectors, telemetry retention, the rollup refresh, the membership purge and the
    /// recorder of token expiries.
    pub projectors: bool,
    /// The rule evaluator.
    pub rules: bool,
    /// The capabilities worker.
    pub capabilities: bool,
    /// The sweep workers and, with `NATS_URL`, the NATS feeds and the publisher.
    pub sweeps_and_nats: bool,
}

impl Roles {
    /// Everything (`corral serve`, `corral work`).
    pub const ALL: Roles = Roles {
        projectors: true,
        rules: true,
        capabilities: true,
        sweeps_and_nats: true,
    };
    /// Nothing but the LISTEN connection that read-your-writes needs (`serve --no-workers`).
    pub const API_ONLY: Roles = Roles {
        projectors: false,
        rules: false,
        capabilities: false,
        sweeps_and_nats: false,
    };
}

/// A process's API state and background, started the way `corral serve` starts them.
pub struct App {
    /// What the handlers share.
    pub state: AppState,
    /// The background.
    pub workers: Workers,
}

impl App {
    /// Starts `roles` of the background, then the API's state over it; creates the roots
    /// (and, with `predefined_groups`, the predefined dynamic groups).
    pub async fn start(
        pool: PgPool,
        lock_pool: PgPool,
        settings: &WorkerSettings,
        config: ApiConfig,
        roles: Roles,
        predefined_groups: bool,
    ) -> Result<Self, BoxError> {
        let mut workers = Workers::start(&pool, settings, roles).await?;
        let policy = crate::policy::Policy::load(&pool).await?;
        let state = AppState::new(
            pool,
            lock_pool,
            workers.waiter(),
            workers.commit_signal(),
            policy.clone(),
            config,
        );
        // Role definitions made on any process are in force here within a second.
        policy.follow(state.pool.clone(), state.tokens.epoch().subscribe());
        if roles.sweeps_and_nats {
            workers.start_sweeps_and_nats(
                &state.pool,
                settings,
                &state.metrics,
                state.sweeps.clone(),
            );
        }
        crate::runtime::ensure_roots(&state.groups).await?;
        if predefined_groups {
            crate::runtime::ensure_predefined_groups(&state.pool, &state.groups).await?;
        }
        Ok(Self { state, workers })
    }
}

/// A NATS-side task and the switch that stops it.
struct Task {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Task {
    fn spawn<F>(run: impl FnOnce(watch::Receiver<bool>) -> F) -> Self
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (stop, stop_rx) = watch::channel(false);
        Self {
            stop,
            handle: tokio::spawn(run(stop_rx)),
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

/// The background of a process: the projectors' side always (the LISTEN connection feeds
/// read-your-writes), and every worker when `run_workers`.
pub struct Workers {
    background: Background,
    tasks: Vec<Task>,
    publisher: Option<corral_workers::publisher::Publisher>,
    membership_feed: Option<corral_workers::membership_feed::MembershipFeed>,
}

impl Workers {
    /// Starts the projectors, the rollup refresh, retention, the recorder of token expiries,
    /// the rule evaluator and the capabilities worker (per `roles`; the LISTEN connection
    /// always).
    pub async fn start(
        pool: &PgPool,
        settings: &WorkerSettings,
        roles: Roles,
    ) -> Result<Self, BoxError> {
        let mut background = corral_workers::start_with_options(
            pool.clone(),
            BackgroundOptions {
                projectors: roles.projectors,
                poll: settings.poll,
                rules: roles.rules.then(|| settings.rules.clone()),
                health_refresh: roles.projectors,
                health: settings.health.clone(),
            },
        )
        .await?;
        if roles.capabilities {
            background.spawn_capabilities(pool.clone(), settings.capabilities.clone());
        }
        if roles.projectors {
            background.spawn_token_expiry(pool.clone(), settings.token_expiry);
        }
        Ok(Self {
            background,
            tasks: Vec::new(),
            publisher: None,
            membership_feed: None,
        })
    }

    /// A waiter for read-your-writes, fed by this process's LISTEN connection.
    pub fn waiter(&self) -> ConsistencyWaiter {
        self.background.waiter()
    }

    /// What command executors in this process call after a commit.
    pub fn commit_signal(&self) -> CommitSignal {
        self.background.commit_signal()
    }

    /// Starts the sweep workers and, with `NATS_URL`, the NATS feeds and the publisher,
    /// counting into `metrics`.
    pub fn start_sweeps_and_nats(
        &mut self,
        pool: &PgPool,
        settings: &WorkerSettings,
        metrics: &Metrics,
        sweeps: Arc<SweepCommands>,
    ) {
        match &settings.nats_url {
            Some(url) => tracing::info!(
                nats.url = %url,
                nats.namespace = settings.nats.namespace.as_deref().unwrap_or("-"),
                "NATS_URL is set: the NATS inventory and telemetry feeds, the sweep workers and the event publisher run with the workers"
            ),
            None => {
                tracing::info!("NATS_URL is not set: NATS feeds, sweeps and publishing are off")
            }
        }
        let mut sweep_config = corral_workers::sweep_control::SweepWorkerConfig::new(
            settings.nats_url.clone(),
            settings.sweeps.clone(),
        );
        sweep_config.names = settings.nats.sweeps.clone();
        sweep_config.consumer = settings.nats.sweep_reports_consumer.clone();
        let pool_for_sweeps = pool.clone();
        self.tasks.push(Task::spawn(move |stop| {
            corral_workers::sweep_control::run(pool_for_sweeps, sweeps, sweep_config, stop)
        }));
        let Some(url) = settings.nats_url.clone() else {
            return;
        };
        let (pool_i, url_i, names_i, stats_i) = (
            pool.clone(),
            url.clone(),
            settings.nats.inventory.clone(),
            metrics.inventory_feed.clone(),
        );
        self.tasks.push(Task::spawn(move |stop| {
            corral_workers::inventory_feed::run(pool_i, url_i, names_i, stats_i, stop)
        }));
        let (pool_t, url_t, names_t, health, stats_t) = (
            pool.clone(),
            url.clone(),
            settings.nats.telemetry.clone(),
            settings.health.clone(),
            metrics.telemetry_feed.clone(),
        );
        self.tasks.push(Task::spawn(move |stop| {
            corral_workers::telemetry_feed::run(pool_t, url_t, names_t, health, stats_t, stop)
        }));
        let publisher = settings.nats.publisher();
        tracing::info!(nats.stream = %publisher.stream, nats.subject_prefix = %publisher.subject_prefix, "publishing the event log to NATS");
        self.publisher = Some(corral_workers::publisher::spawn(
            pool.clone(),
            url.clone(),
            publisher,
            metrics.publisher.clone(),
        ));
        let feed = settings.nats.membership_feed();
        tracing::info!(nats.stream = %feed.stream, nats.subject_prefix = %feed.subject_prefix, "publishing the membership watches' changes to NATS");
        self.membership_feed = Some(corral_workers::membership_feed::spawn(
            pool.clone(),
            url,
            feed,
            metrics.membership_feed.clone(),
        ));
    }

    /// Stops everything and waits for it.
    pub async fn shutdown(self) {
        for task in self.tasks {
            task.stop().await;
        }
        if let Some(publisher) = self.publisher {
            publisher.shutdown().await;
        }
        if let Some(feed) = self.membership_feed {
            feed.shutdown().await;
        }
        self.background.shutdown().await;
    }
}
