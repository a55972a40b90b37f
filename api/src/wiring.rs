//! What runs beside the API in `corral serve` and alone in `corral work`, started in one place
//! so that every process (and the end-to-end tests, which run the binary) gets the same set:
//! the projectors and the LISTEN connection, the rollup refresh and telemetry retention, the
//! rule evaluator, the capabilities worker, the sweep monitor and results retention, and with
//! `NATS_URL` the inventory and telemetry feeds, the sweep dispatcher and reports consumer, and
//! the publisher of the event log. Singleton workers elect one leader per cluster
//! (`corral_projections::leader`); NATS names come from one registry
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
}

impl WorkerSettings {
    /// The settings from the environment (an invalid value is an error naming its variable).
    pub fn from_env() -> Result<Self, BoxError> {
        Ok(Self {
            nats_url: std::env::var("NATS_URL")
                .ok()
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty()),
            nats: NatsNames::from_env()?,
            rules: rule_config_from_env()?,
            capabilities: CapabilityConfig::from_env()?,
            health: HealthConfig::from_env()?,
            sweeps: SweepConfig::from_env()?,
            poll: Duration::from_secs(1),
        })
    }
}

/// The rule evaluator's settings from `CORRAL_RULE_*`.
fn rule_config_from_env() -> Result<RuleWorkerConfig, BoxError> {
    let mut config = RuleWorkerConfig::default();
    let number = |name: &str| -> Result<Option<u64>, BoxError> {
        match std::env::var(name) {
            Ok(v) => {
                Ok(Some(v.trim().parse().map_err(|_| {
                    format!("{name} must be a whole number, got {v:?}")
                })?))
            }
            Err(_) => Ok(None),
        }
    };
    if let Some(n) = number("CORRAL_RULE_MAX_MATCHES")? {
        config.max_matches = i64::try_from(n).unwrap_or(i64::MAX);
    }
    if let Some(s) = number("CORRAL_RULE_TIMEOUT_SECS")? {
        config.timeout = Duration::from_secs(s.max(1));
    }
    if let Some(s) = number("CORRAL_RULE_SCHEDULE_SECS")? {
        config.schedule_every = Duration::from_secs(s.max(1));
    }
    if let Some(s) = number("CORRAL_RULE_REPAIR_SECS")? {
        config.repair_every = Duration::from_secs(s.max(1));
    }
    Ok(config)
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
}

impl Workers {
    /// Starts the projectors, the rollup refresh, retention, the rule evaluator and the
    /// capabilities worker (when `run_workers`; the LISTEN connection always).
    pub async fn start(
        pool: &PgPool,
        settings: &WorkerSettings,
        run_workers: bool,
    ) -> Result<Self, BoxError> {
        let mut background = corral_workers::start_with_options(
            pool.clone(),
            BackgroundOptions {
                projectors: run_workers,
                poll: settings.poll,
                rules: run_workers.then(|| settings.rules.clone()),
                health_refresh: run_workers,
            },
        )
        .await?;
        if run_workers {
            background.spawn_capabilities(pool.clone(), settings.capabilities.clone());
        }
        Ok(Self {
            background,
            tasks: Vec::new(),
            publisher: None,
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
            url,
            publisher,
            metrics.publisher.clone(),
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
        self.background.shutdown().await;
    }
}
