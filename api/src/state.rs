//! What every request handler shares.

use std::sync::Arc;
use std::time::Duration;

use casbin::Enforcer;
use corral_projections::directory::GroupCommands;
use corral_projections::membership::MembershipCommands;
use corral_projections::waiter::ConsistencyWaiter;
use corral_projections::wake::CommitSignal;
use sqlx::PgPool;

use crate::graphql::CorralSchema;
use crate::metrics::Metrics;

/// Runtime settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How long a mutation waits for the read models.
    pub mutation_wait: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Telemetry retention and ingest limits.
    pub health: corral_projections::health::HealthConfig,
    /// Sweep limits, allow-lists and timings.
    pub sweeps: corral_projections::sweeps::SweepConfig,
    /// The JetStream stream the event log is published to (whose publisher's leadership
    /// `/metrics` reports).
    pub events_stream: String,
    /// Whether `GET /graphql` serves the GraphQL IDE (`CORRAL_GRAPHIQL`).
    pub graphiql: bool,
    /// `/graphql/ws` limits and allowed origins (`CORRAL_WS_*`).
    pub websocket: crate::ws::WsConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            mutation_wait: Duration::from_secs(5),
            max_body_bytes: 8 * 1024 * 1024,
            health: corral_projections::health::HealthConfig::default(),
            sweeps: corral_projections::sweeps::SweepConfig::default(),
            events_stream: corral_workers::publisher::PublisherConfig::default().stream,
            graphiql: true,
            websocket: crate::ws::WsConfig::default(),
        }
    }
}

/// Shared state of the HTTP server.
#[derive(Clone)]
pub struct AppState {
    /// Database pool.
    pub pool: PgPool,
    /// Group command runner.
    pub groups: Arc<GroupCommands>,
    /// Membership command runner.
    pub memberships: Arc<MembershipCommands>,
    /// Dashboard command runner.
    pub dashboards: Arc<corral_projections::dashboards::DashboardCommands>,
    /// Sweep run command runner.
    pub sweeps: Arc<corral_projections::sweeps::SweepCommands>,
    /// Read-your-writes waiter.
    pub waiter: ConsistencyWaiter,
    /// casbin enforcer.
    pub enforcer: Arc<Enforcer>,
    /// Settings.
    pub config: Arc<ApiConfig>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// Recently validated tokens.
    pub tokens: Arc<crate::auth::TokenCache>,
    /// The schema (built once).
    pub schema: Option<CorralSchema>,
    /// Open websocket connections, counted against `config.websocket`'s limits.
    pub websockets: crate::ws::Connections,
}

impl AppState {
    /// State with the schema built.
    pub fn new(
        pool: PgPool,
        lock_pool: PgPool,
        waiter: ConsistencyWaiter,
        signal: CommitSignal,
        enforcer: Arc<Enforcer>,
        config: ApiConfig,
    ) -> Self {
        let mut state = Self {
            groups: Arc::new(GroupCommands::new(
                pool.clone(),
                lock_pool.clone(),
                signal.clone(),
            )),
            dashboards: Arc::new(corral_projections::dashboards::dashboard_commands(
                pool.clone(),
                signal.clone(),
            )),
            sweeps: Arc::new(corral_projections::sweeps::sweep_commands(
                pool.clone(),
                signal.clone(),
            )),
            memberships: Arc::new(MembershipCommands::new(pool.clone(), lock_pool, signal)),
            pool,
            waiter,
            enforcer,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            tokens: Arc::new(crate::auth::TokenCache::default()),
            schema: None,
            websockets: crate::ws::Connections::default(),
        };
        state.schema = Some(crate::graphql::build_schema(&state));
        state
    }
}
