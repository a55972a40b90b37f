//! What every request handler shares.

use std::sync::Arc;
use std::time::Duration;

use corral_projections::commands::groups::GroupCommands;
use corral_projections::commands::Commands;
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
    /// Query size limits checked before validation (`CORRAL_MAX_QUERY_BYTES`,
    /// `CORRAL_MAX_QUERY_FIELDS`).
    pub query_limits: crate::graphql::guard::QueryLimits,
    /// Connection cap and read timeout (`CORRAL_MAX_CONNECTIONS`,
    /// `CORRAL_REQUEST_READ_TIMEOUT_MS`).
    pub listener: crate::listener::ListenerLimits,
    /// Where `/metrics` is served instead of the API's address (`CORRAL_METRICS_LISTEN`).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The bearer token `/metrics` requires (`CORRAL_METRICS_TOKEN`; unset: open).
    pub metrics_token: Option<String>,
    /// Whether `GET /graphql` serves the GraphQL IDE (`CORRAL_GRAPHIQL`).
    pub graphiql: bool,
    /// `/graphql/ws` limits and allowed origins (`CORRAL_WS_*`).
    pub websocket: crate::ws::WsConfig,
    /// Per-subject rate limits (`CORRAL_RATE_LIMIT_*`; off by default here, on by default
    /// in `corral serve`'s settings).
    pub rate_limit: crate::rate_limit::RateLimitConfig,
    /// JWT bearer tokens from an OIDC provider (`CORRAL_JWT_*`; `None`: off).
    pub jwt: Option<Arc<crate::jwt::JwtValidator>>,
    /// The refused-attempts store's bounds (`CORRAL_REFUSALS_*`).
    pub refusals: crate::refusals::RefusalConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            mutation_wait: Duration::from_secs(5),
            max_body_bytes: 8 * 1024 * 1024,
            health: corral_projections::health::HealthConfig::default(),
            sweeps: corral_projections::sweeps::SweepConfig::default(),
            events_stream: corral_workers::publisher::PublisherConfig::default().stream,
            query_limits: crate::graphql::guard::QueryLimits::default(),
            listener: crate::listener::ListenerLimits::default(),
            metrics_listen: None,
            metrics_token: None,
            graphiql: true,
            websocket: crate::ws::WsConfig::default(),
            rate_limit: crate::rate_limit::RateLimitConfig::default(),
            jwt: None,
            refusals: crate::refusals::RefusalConfig::default(),
        }
    }
}

/// Shared state of the HTTP server.
#[derive(Clone)]
pub struct AppState {
    /// Database pool.
    pub pool: PgPool,
    /// The write side's entry point (every mutation's command runs through it).
    pub commands: Arc<Commands>,
    /// The pool GraphQL resolvers read with: the main pool's connection settings plus
    /// `statement_timeout` (`CORRAL_STATEMENT_TIMEOUT_MS`), so no statement of a request runs
    /// longer. Commands and workers use `pool`, without it.
    pub api_pool: PgPool,
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
    /// The policy in force (casbin's decisions per role and permission).
    pub policy: Arc<crate::policy::Policy>,
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
    /// Per-subject token buckets.
    pub rate_limiter: Arc<crate::rate_limit::RateLimiter>,
    /// Where refused attempts are recorded (a bounded queue drained by a background task).
    pub refusals: Arc<crate::refusals::Refusals>,
    /// Scopes expanded to their groups, per tree version.
    pub subtrees: Arc<crate::scope::SubtreeCache>,
}

impl AppState {
    /// State with the schema built.
    pub fn new(
        pool: PgPool,
        lock_pool: PgPool,
        waiter: ConsistencyWaiter,
        signal: CommitSignal,
        policy: Arc<crate::policy::Policy>,
        config: ApiConfig,
    ) -> Self {
        let commands = Arc::new(Commands::new(
            pool.clone(),
            lock_pool,
            signal,
            waiter.clone(),
        ));
        let tokens = Arc::new(
            crate::auth::TokenCache::new(crate::auth::AccessEpoch::follow(pool.clone()))
                .with_jwt(config.jwt.clone()),
        );
        let rate_limiter = Arc::new(crate::rate_limit::RateLimiter::new(config.rate_limit));
        let refusals = crate::refusals::Refusals::start(pool.clone(), config.refusals);
        let subtrees = Arc::new(crate::scope::SubtreeCache::new(
            pool.clone(),
            Some(waiter.clone()),
        ));
        let mut state = Self {
            groups: commands.groups().clone(),
            dashboards: commands.dashboards().clone(),
            sweeps: commands.sweeps().clone(),
            memberships: commands.memberships().clone(),
            commands,
            api_pool: api_pool(&pool, config.query_limits.statement_timeout),
            pool,
            waiter,
            policy,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            tokens,
            schema: None,
            websockets: crate::ws::Connections::default(),
            rate_limiter,
            subtrees,
            refusals,
        };
        state.schema = Some(crate::graphql::build_schema(&state));
        state
    }
}

/// A pool like `pool` (connecting lazily, half as large: resolvers hold a connection for one
/// short statement at a time) whose sessions have `statement_timeout`.
fn api_pool(pool: &PgPool, statement_timeout: Duration) -> PgPool {
    let options = pool.connect_options().as_ref().clone().options([(
        "statement_timeout",
        format!("{}ms", statement_timeout.as_millis().max(1)),
    )]);
    sqlx::postgres::PgPoolOptions::new()
        .max_connections((pool.options().get_max_connections() / 2).max(4))
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options)
}
