//! Every setting of `corral serve` and `corral work`, declared once: an environment variable
//! (and a command-line option of the same name), its default and what it means. `main` reads
//! them once and passes them down; `corral serve --help` lists them; the README's
//! configuration table is generated from them (`corral docs settings --write`; a test fails
//! on drift); a bad value stops the start with the variable's name.

mod parse;
pub mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::TimeDelta;
use corral_domain::sweep::targets::Cidr;
use corral_projections::health::HealthConfig;
use corral_projections::sweeps::config::MAX_RUNTIME_SECS;
use corral_projections::sweeps::SweepConfig;
use corral_workers::capabilities::CapabilityConfig;
use corral_workers::nats_names::NatsNames;
use corral_workers::rules::RuleWorkerConfig;

use crate::graphql::guard::QueryLimits;
use crate::listener::ListenerLimits;
use crate::runtime::BoxError;
use crate::state::ApiConfig;
use crate::ws::{AllowedOrigins, WsConfig};
use parse::{address, millis, number, secs, text};

/// Where the data lives: what every command that opens the database needs.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DatabaseSettings {
    /// PostgreSQL to use, e.g. `postgres://postgres@127.0.0.1:5432/corral`; unset: the
    /// embedded PostgreSQL, initialized and started from the machine's PostgreSQL binaries.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Where the embedded PostgreSQL keeps its data (`<dir>/pg`); unset: `/var/lib/corral`
    /// for root, else `$XDG_DATA_HOME/corral` or `~/.local/share/corral`.
    #[arg(long, global = true, env = "CORRAL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The PostgreSQL server binaries for the embedded server; unset: found with
    /// `pg_config`, under `/usr/lib/postgresql/*/bin`, or on `PATH`.
    #[arg(long, global = true, env = "CORRAL_PG_BINDIR", value_name = "DIR")]
    pub pg_bindir: Option<PathBuf>,
}

/// NATS: the feeds, sweeps and the publisher of the event log.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NatsSettings {
    /// NATS server (JetStream on) for the inventory feed (`docs/inventory.md`), the telemetry
    /// feed (`docs/health.md`), the sweep workers (`docs/sweeps.md`) and the event publisher
    /// (`docs/integrators.md`); unset: all of them are off (the log says so) and
    /// `scheduleSweep` answers `SWEEPS_UNAVAILABLE`.
    #[arg(long, env = "NATS_URL", value_name = "URL")]
    pub nats_url: Option<String>,
    /// Names of a deployment's own on a shared NATS server: streams and buckets get
    /// `_<namespace>`, subjects `corral.<namespace>.…` (the poller takes the same setting).
    #[arg(long, env = "CORRAL_NATS_NAMESPACE", value_name = "NAME",
          value_parser = text("CORRAL_NATS_NAMESPACE", |s| NatsNames::namespaced(s).map(|_| s.to_string())))]
    pub nats_namespace: Option<String>,
    /// JetStream stream (file storage) the event log is published to, created or updated at
    /// start; unset: `CORRAL_EVENTS` (`CORRAL_EVENTS_<namespace>`).
    #[arg(long, env = "CORRAL_EVENTS_STREAM", value_name = "STREAM")]
    pub events_stream: Option<String>,
    /// Subjects of published events are `<prefix>.<aggregateType>.<aggregateId>.<eventType>`;
    /// unset: `corral.events` (`corral.<namespace>.events`).
    #[arg(long, env = "CORRAL_EVENTS_SUBJECT_PREFIX", value_name = "PREFIX")]
    pub events_subject_prefix: Option<String>,
}

impl NatsSettings {
    /// The NATS URL, when set.
    pub fn url(&self) -> Option<String> {
        self.nats_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
    }

    /// Every NATS name, checked for clashes.
    pub fn names(&self) -> Result<NatsNames, String> {
        let mut names = match self.nats_namespace.as_deref().map(str::trim) {
            Some(ns) if !ns.is_empty() => NatsNames::namespaced(ns)?,
            _ => NatsNames::production(),
        };
        let mut publisher = names.publisher();
        if let Some(stream) = self
            .events_stream
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            publisher.stream = stream.trim().to_string();
        }
        if let Some(prefix) = self
            .events_subject_prefix
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            publisher.subject_prefix = prefix.trim().to_string();
        }
        publisher.validate().map_err(|e| e.to_string())?;
        names.events_stream = publisher.stream;
        names.events_subject_prefix = publisher.subject_prefix;
        names.check_apart()?;
        Ok(names)
    }
}

/// Telemetry and rollup retention (also read by `corral import telemetry` and `corral rollups`).
#[derive(clap::Args, Debug, Clone)]
pub struct HealthSettings {
    /// How long raw telemetry (and per-device/service buckets) is kept; older samples are
    /// rejected.
    #[arg(long, env = "CORRAL_TELEMETRY_RETENTION_DAYS", value_name = "DAYS", default_value = "7",
          value_parser = number("CORRAL_TELEMETRY_RETENTION_DAYS", 1, 3650, "days"))]
    pub telemetry_retention_days: u64,
    /// How long group health rollups are kept (not less than the telemetry retention).
    #[arg(long, env = "CORRAL_ROLLUP_RETENTION_DAYS", value_name = "DAYS", default_value = "90",
          value_parser = number("CORRAL_ROLLUP_RETENTION_DAYS", 1, 3650, "days"))]
    pub rollup_retention_days: u64,
}

impl HealthSettings {
    /// Telemetry retention.
    pub fn config(&self) -> Result<HealthConfig, BoxError> {
        if self.rollup_retention_days < self.telemetry_retention_days {
            return Err("CORRAL_ROLLUP_RETENTION_DAYS must not be shorter than CORRAL_TELEMETRY_RETENTION_DAYS".into());
        }
        Ok(HealthConfig {
            raw_retention: TimeDelta::days(self.telemetry_retention_days as i64),
            rollup_retention: TimeDelta::days(self.rollup_retention_days as i64),
            ..HealthConfig::default()
        })
    }
}

/// Every setting of `corral serve` and `corral work` (the database's are global options of
/// every command: [`DatabaseSettings`]).
#[derive(clap::Args, Debug, Clone)]
pub struct Settings {
    #[command(flatten)]
    pub nats: NatsSettings,
    #[command(flatten)]
    pub health: HealthSettings,

    /// HTTP listen address (port 0: any free port, which `serve` prints on stdout).
    #[arg(long, env = "CORRAL_LISTEN", value_name = "ADDR", default_value = "127.0.0.1:8080",
          value_parser = address("CORRAL_LISTEN"))]
    pub listen: SocketAddr,
    /// Serve `/metrics` (and `/healthz`) on this address instead of `CORRAL_LISTEN`'s, e.g.
    /// `10.0.0.5:9090`.
    #[arg(long, env = "CORRAL_METRICS_LISTEN", value_name = "ADDR",
          value_parser = address("CORRAL_METRICS_LISTEN"))]
    pub metrics_listen: Option<SocketAddr>,
    /// `/metrics` answers only `Authorization: Bearer <this token>` (at least 16 characters;
    /// not an API token); unset: open.
    #[arg(long, env = "CORRAL_METRICS_TOKEN", value_name = "TOKEN", hide_env_values = true,
          value_parser = text("CORRAL_METRICS_TOKEN", metrics_token))]
    pub metrics_token: Option<String>,
    /// Serve the GraphQL IDE on `GET /graphql`; `false` (or `0`, `off`): `GET /graphql` and the
    /// IDE's files answer 404 `NOT_FOUND`, `POST /graphql` is unaffected.
    #[arg(long, env = "CORRAL_GRAPHIQL", value_name = "BOOL", default_value = "true", action = clap::ArgAction::Set,
          value_parser = crate::ide::parse_setting)]
    pub graphiql: bool,

    /// How long a mutation waits for the read models before answering `waitTimedOut: true`.
    #[arg(long, env = "CORRAL_MUTATION_WAIT_MS", value_name = "MS", default_value = "5000",
          value_parser = millis("CORRAL_MUTATION_WAIT_MS", 0, 600_000))]
    pub mutation_wait: Duration,
    /// Largest request body (larger: HTTP 413 `PAYLOAD_TOO_LARGE`).
    #[arg(long, env = "CORRAL_MAX_BODY_BYTES", value_name = "BYTES", default_value = "8388608",
          value_parser = number("CORRAL_MAX_BODY_BYTES", 65_536, 1 << 30, "bytes"))]
    pub max_body_bytes: u64,
    /// A client must send a request's headers, and its body, within this long (and may sit
    /// idle between requests no longer); then the connection is closed (a late body: HTTP 408
    /// `REQUEST_TIMEOUT`).
    #[arg(long, env = "CORRAL_REQUEST_READ_TIMEOUT_MS", value_name = "MS", default_value = "10000",
          value_parser = millis("CORRAL_REQUEST_READ_TIMEOUT_MS", 100, 3_600_000))]
    pub request_read_timeout: Duration,
    /// A client that does not read its answer for this long (a write blocked) is
    /// disconnected.
    #[arg(long, env = "CORRAL_RESPONSE_WRITE_TIMEOUT_MS", value_name = "MS", default_value = "30000",
          value_parser = millis("CORRAL_RESPONSE_WRITE_TIMEOUT_MS", 100, 3_600_000))]
    pub response_write_timeout: Duration,
    /// Most open HTTP connections; more wait in the kernel's backlog.
    #[arg(long, env = "CORRAL_MAX_CONNECTIONS", value_name = "N", default_value = "1024",
          value_parser = number("CORRAL_MAX_CONNECTIONS", 1, 1_000_000, "connections"))]
    pub max_connections: u64,
    /// Longest GraphQL query text (longer: `QUERY_TOO_LARGE`).
    #[arg(long, env = "CORRAL_MAX_QUERY_BYTES", value_name = "BYTES", default_value = "65536",
          value_parser = number("CORRAL_MAX_QUERY_BYTES", 1024, 8 << 20, "bytes"))]
    pub max_query_bytes: u64,
    /// Most fields a query may name once its fragments are expanded (more: `QUERY_TOO_LARGE`,
    /// decided before validation).
    #[arg(long, env = "CORRAL_MAX_QUERY_FIELDS", value_name = "N", default_value = "2000",
          value_parser = number("CORRAL_MAX_QUERY_FIELDS", 10, 1_000_000, "fields"))]
    pub max_query_fields: u64,
    /// Most root mutation fields (aliases and fragments counted) one operation may name
    /// (more: `TOO_MANY_MUTATIONS`, before any runs).
    #[arg(long, env = "CORRAL_MAX_MUTATIONS_PER_REQUEST", value_name = "N", default_value = "20",
          value_parser = number("CORRAL_MAX_MUTATIONS_PER_REQUEST", 1, 10_000, "mutations"))]
    pub max_mutations_per_request: u64,
    /// Requests a second each subject (the token's subject) may send to `POST /graphql`,
    /// and operations a second over its websockets, per process (more: HTTP 429 with
    /// `Retry-After`, or `RATE_LIMITED` on the operation); 0: no limit.
    #[arg(long, env = "CORRAL_RATE_LIMIT_PER_SUBJECT", value_name = "N", default_value = "50",
          value_parser = number("CORRAL_RATE_LIMIT_PER_SUBJECT", 0, 1_000_000, "requests a second"))]
    pub rate_limit_per_subject: u64,
    /// The most requests a subject may send at once, above its rate
    /// (`CORRAL_RATE_LIMIT_PER_SUBJECT`).
    #[arg(long, env = "CORRAL_RATE_LIMIT_BURST", value_name = "N", default_value = "100",
          value_parser = number("CORRAL_RATE_LIMIT_BURST", 0, 1_000_000, "requests"))]
    pub rate_limit_burst: u64,
    /// `statement_timeout` of every statement a GraphQL resolver runs (longer:
    /// `QUERY_TIMEOUT`); commands, workers and the audit export run without it
    /// (`docs/security.md`).
    #[arg(long, env = "CORRAL_STATEMENT_TIMEOUT_MS", value_name = "MS", default_value = "5000",
          value_parser = millis("CORRAL_STATEMENT_TIMEOUT_MS", 10, 3_600_000))]
    pub statement_timeout: Duration,
    /// The database time one request's rule filters may use together, and how long a query
    /// operation may run (then: `REQUEST_BUDGET_EXCEEDED`; `docs/security.md`).
    #[arg(long, env = "CORRAL_REQUEST_DB_BUDGET_MS", value_name = "MS", default_value = "10000",
          value_parser = millis("CORRAL_REQUEST_DB_BUDGET_MS", 10, 3_600_000))]
    pub request_db_budget: Duration,

    /// A websocket on `/graphql/ws` that has not authenticated in `connection_init` by then is
    /// closed with code 4408.
    #[arg(long, env = "CORRAL_WS_INIT_TIMEOUT_MS", value_name = "MS", default_value = "5000",
          value_parser = millis("CORRAL_WS_INIT_TIMEOUT_MS", 1, 600_000))]
    pub ws_init_timeout: Duration,
    /// Most websockets per process still waiting to authenticate; beyond: the upgrade answers
    /// HTTP 503 `TOO_MANY_CONNECTIONS`.
    #[arg(long, env = "CORRAL_WS_MAX_PENDING", value_name = "N", default_value = "64",
          value_parser = number("CORRAL_WS_MAX_PENDING", 1, 1_000_000, "connections"))]
    pub ws_max_pending: u64,
    /// Most open websockets per process (authenticated or waiting); beyond: HTTP 503
    /// `TOO_MANY_CONNECTIONS`.
    #[arg(long, env = "CORRAL_WS_MAX_CONNECTIONS", value_name = "N", default_value = "1024",
          value_parser = number("CORRAL_WS_MAX_CONNECTIONS", 1, 1_000_000, "connections"))]
    pub ws_max_connections: u64,
    /// Browser origins besides the server's own that may open a websocket: comma-separated
    /// `https://app.example.com`, or `*` for any; unset: same origin only. An upgrade without
    /// `Origin` (not a browser) is allowed; one from another origin answers HTTP 403
    /// `FORBIDDEN`. Behind a proxy that rewrites `Host`, list the public origin.
    #[arg(long, env = "CORRAL_WS_ALLOWED_ORIGINS", value_name = "ORIGINS",
          value_parser = text("CORRAL_WS_ALLOWED_ORIGINS", AllowedOrigins::parse))]
    pub ws_allowed_origins: Option<AllowedOrigins>,

    /// A rule evaluation matching more entities fails (`lastRunStatus: FAILED`) and leaves
    /// memberships unchanged.
    #[arg(long, env = "CORRAL_RULE_MAX_MATCHES", value_name = "N", default_value = "1000000",
          value_parser = number("CORRAL_RULE_MAX_MATCHES", 1, 1 << 40, "entities"))]
    pub rule_max_matches: u64,
    /// A rule evaluation's query is cancelled after this long (the run fails).
    #[arg(long, env = "CORRAL_RULE_TIMEOUT_SECS", value_name = "SECS", default_value = "60",
          value_parser = secs("CORRAL_RULE_TIMEOUT_SECS", 1, 86_400))]
    pub rule_timeout: Duration,
    /// How often rules using `now` or `group:` are re-evaluated.
    #[arg(long, env = "CORRAL_RULE_SCHEDULE_SECS", value_name = "SECS", default_value = "60",
          value_parser = secs("CORRAL_RULE_SCHEDULE_SECS", 1, 86_400))]
    pub rule_schedule: Duration,
    /// How often every rule is re-evaluated (drift repair).
    #[arg(long, env = "CORRAL_RULE_REPAIR_SECS", value_name = "SECS", default_value = "3600",
          value_parser = secs("CORRAL_RULE_REPAIR_SECS", 1, 7 * 86_400))]
    pub rule_repair: Duration,
    /// How often the capabilities worker recomputes group capability flags
    /// (`docs/capabilities.md`).
    #[arg(long, env = "CORRAL_CAPABILITY_INTERVAL_SECS", value_name = "SECS", default_value = "60",
          value_parser = secs("CORRAL_CAPABILITY_INTERVAL_SECS", 1, 86_400))]
    pub capability_interval: Duration,
    /// How far back telemetry counts for `hasSysmon` / `hasServices`.
    #[arg(long, env = "CORRAL_CAPABILITY_WINDOW_SECS", value_name = "SECS", default_value = "86400",
          value_parser = secs("CORRAL_CAPABILITY_WINDOW_SECS", 1, 365 * 86_400))]
    pub capability_window: Duration,
    /// How often the leader looks for tokens past their expiry and records `TokenExpired`
    /// (expiry is enforced at each request regardless; `docs/access.md`).
    #[arg(long, env = "CORRAL_TOKEN_EXPIRY_SECS", value_name = "SECS", default_value = "30",
          value_parser = secs("CORRAL_TOKEN_EXPIRY_SECS", 1, 3_600))]
    pub token_expiry: Duration,
    /// Most refused attempts kept (`accessRefusals`; the oldest go first; `docs/access.md`).
    #[arg(long, env = "CORRAL_REFUSALS_MAX_ROWS", value_name = "ROWS", default_value = "100000",
          value_parser = number("CORRAL_REFUSALS_MAX_ROWS", 1, 100_000_000, "rows"))]
    pub refusals_max_rows: u64,
    /// How long refused attempts are kept (pruned once a minute).
    #[arg(long, env = "CORRAL_REFUSALS_RETENTION_DAYS", value_name = "DAYS", default_value = "30",
          value_parser = number("CORRAL_REFUSALS_RETENTION_DAYS", 1, 3650, "days"))]
    pub refusals_retention_days: u64,

    /// JWT bearer tokens from an OIDC provider: the required `iss`, e.g.
    /// `https://sso.example.com/realms/corral`; set, JWT is on (with
    /// `CORRAL_JWT_JWKS_FILE` or `CORRAL_JWT_HS256_SECRET`; `docs/access.md`).
    #[arg(long, env = "CORRAL_JWT_ISSUER", value_name = "URL")]
    pub jwt_issuer: Option<String>,
    /// The required JWT `aud` (e.g. the client id); required when JWT is on, so that tokens the
    /// provider minted for other applications are refused.
    #[arg(long, env = "CORRAL_JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,
    /// JWKS file of the provider's signing keys (RS256, ES256, EdDSA), read at start and
    /// again (at most every 30 s) when a token names an unknown `kid`. A JWKS URL is not
    /// supported: export it to this file.
    #[arg(long, env = "CORRAL_JWT_JWKS_FILE", value_name = "FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// HS256 shared secret for JWTs (at least 32 bytes).
    #[arg(long, env = "CORRAL_JWT_HS256_SECRET", value_name = "SECRET", hide_env_values = true,
          value_parser = text("CORRAL_JWT_HS256_SECRET", hs256_secret))]
    pub jwt_hs256_secret: Option<String>,
    /// Clock skew allowed on a JWT's `exp` and `nbf`.
    #[arg(long, env = "CORRAL_JWT_LEEWAY_SECS", value_name = "SECS", default_value = "30",
          value_parser = number("CORRAL_JWT_LEEWAY_SECS", 0, 300, "seconds"))]
    pub jwt_leeway_secs: u64,
    /// The JWT claim naming the caller (shown as `oidc:<value>`).
    #[arg(
        long,
        env = "CORRAL_JWT_SUBJECT_CLAIM",
        value_name = "CLAIM",
        default_value = "sub"
    )]
    pub jwt_subject_claim: String,
    /// The JWT claim holding the caller's groups (a string or an array of strings).
    #[arg(
        long,
        env = "CORRAL_JWT_ROLES_CLAIM",
        value_name = "CLAIM",
        default_value = "groups"
    )]
    pub jwt_roles_claim: String,
    /// Groups claim value → role binding, e.g.
    /// `corral-admins=admin,netops=operator,site-a=viewer@GROUP_ID`: a built-in or custom role,
    /// everywhere or (`@GROUP_ID`) on one group's subtree; a JWT none of whose values is
    /// listed authenticates with no role.
    #[arg(long, env = "CORRAL_JWT_ROLE_MAP", value_name = "MAP",
          value_parser = text("CORRAL_JWT_ROLE_MAP", role_map))]
    pub jwt_role_map: Option<RoleMap>,

    /// The sweep allow-list of pollers without one of their own (comma-separated CIDRs).
    #[arg(long, env = "CORRAL_SWEEP_ALLOW", value_name = "CIDRS",
          default_value = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,127.0.0.0/8,fc00::/7,::1/128",
          value_parser = text("CORRAL_SWEEP_ALLOW", cidrs))]
    pub sweep_allow: CidrList,
    /// Allow-lists per poller: `poller-1=10.1.0.0/16,127.0.0.0/8;poller-2=192.168.0.0/16`.
    #[arg(long, env = "CORRAL_SWEEP_POLLER_ALLOW", value_name = "LISTS",
          value_parser = text("CORRAL_SWEEP_POLLER_ALLOW", poller_allow))]
    pub sweep_poller_allow: Option<PollerAllow>,
    /// Most addresses per sweep run.
    #[arg(long, env = "CORRAL_SWEEP_MAX_HOSTS", value_name = "N", default_value = "65536",
          value_parser = number("CORRAL_SWEEP_MAX_HOSTS", 1, 1 << 24, "hosts"))]
    pub sweep_max_hosts: u64,
    /// Shortest IPv4 prefix a sweep target may have.
    #[arg(long, env = "CORRAL_SWEEP_MIN_PREFIX_V4", value_name = "BITS", default_value = "16",
          value_parser = number("CORRAL_SWEEP_MIN_PREFIX_V4", 0, 32, "bits"))]
    pub sweep_min_prefix_v4: u64,
    /// Shortest IPv6 prefix a sweep target may have.
    #[arg(long, env = "CORRAL_SWEEP_MIN_PREFIX_V6", value_name = "BITS", default_value = "112",
          value_parser = number("CORRAL_SWEEP_MIN_PREFIX_V6", 0, 128, "bits"))]
    pub sweep_min_prefix_v6: u64,
    /// A dispatched sweep job not acknowledged by then is `EXPIRED`.
    #[arg(long, env = "CORRAL_SWEEP_CLAIM_SECS", value_name = "SECS", default_value = "120",
          value_parser = secs("CORRAL_SWEEP_CLAIM_SECS", 1, 86_400))]
    pub sweep_claim: Duration,
    /// A poller whose last heartbeat is older is offline (heartbeats are kept 60 s).
    #[arg(long, env = "CORRAL_POLLER_OFFLINE_SECS", value_name = "SECS", default_value = "30",
          value_parser = secs("CORRAL_POLLER_OFFLINE_SECS", 1, 60))]
    pub poller_offline: Duration,
    /// Largest `deadlineSecs` of a sweep run (at most 7 days).
    #[arg(long, env = "CORRAL_SWEEP_MAX_RUNTIME_SECS", value_name = "SECS", default_value = "86400",
          value_parser = secs("CORRAL_SWEEP_MAX_RUNTIME_SECS", 1, MAX_RUNTIME_SECS))]
    pub sweep_max_runtime: Duration,
    /// Deadline of a sweep run without `deadlineSecs` (at most the maximum).
    #[arg(long, env = "CORRAL_SWEEP_DEFAULT_RUNTIME_SECS", value_name = "SECS", default_value = "3600",
          value_parser = secs("CORRAL_SWEEP_DEFAULT_RUNTIME_SECS", 1, MAX_RUNTIME_SECS))]
    pub sweep_default_runtime: Duration,
    /// How long a subject's sweep idempotency key names its run.
    #[arg(long, env = "CORRAL_SWEEP_IDEMPOTENCY_WINDOW_SECS", value_name = "SECS", default_value = "86400",
          value_parser = secs("CORRAL_SWEEP_IDEMPOTENCY_WINDOW_SECS", 1, 365 * 86_400))]
    pub sweep_idempotency_window: Duration,
}

/// A list of CIDRs (a setting's value).
#[derive(Debug, Clone, PartialEq)]
pub struct CidrList(pub Vec<Cidr>);

/// Allow-lists by poller id (a setting's value).
#[derive(Debug, Clone, PartialEq)]
pub struct PollerAllow(pub Vec<(String, Vec<Cidr>)>);

fn cidrs(raw: &str) -> Result<CidrList, String> {
    raw.split([',', ' '])
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<Cidr>().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map(CidrList)
}

fn poller_allow(raw: &str) -> Result<PollerAllow, String> {
    raw.split(';')
        .filter(|p| !p.trim().is_empty())
        .map(|part| {
            let (id, list) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not poller=cidr,cidr"))?;
            Ok((id.trim().to_string(), cidrs(list)?.0))
        })
        .collect::<Result<Vec<_>, String>>()
        .map(PollerAllow)
}

/// `CORRAL_JWT_ROLE_MAP`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMap(pub Vec<(String, corral_domain::access::Binding)>);

fn role_map(raw: &str) -> Result<RoleMap, String> {
    crate::jwt::parse_role_map(raw).map(RoleMap)
}

fn hs256_secret(raw: &str) -> Result<String, String> {
    if raw.len() < 32 {
        return Err("must be at least 32 bytes".into());
    }
    Ok(raw.to_string())
}

fn metrics_token(raw: &str) -> Result<String, String> {
    if raw.len() < 16 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be at least 16 characters without spaces".into());
    }
    Ok(raw.to_string())
}

impl Settings {
    /// The API's settings.
    pub fn api(&self) -> Result<ApiConfig, BoxError> {
        Ok(ApiConfig {
            mutation_wait: self.mutation_wait,
            max_body_bytes: usize::try_from(self.max_body_bytes)?,
            health: self.health.config()?,
            sweeps: self.sweeps(),
            events_stream: self.nats.names()?.events_stream,
            query_limits: QueryLimits {
                max_query_bytes: usize::try_from(self.max_query_bytes)?,
                max_fields: self.max_query_fields,
                max_mutations: self.max_mutations_per_request,
                statement_timeout: self.statement_timeout,
                db_budget: self.request_db_budget,
                ..QueryLimits::default()
            },
            listener: ListenerLimits {
                max_connections: usize::try_from(self.max_connections)?,
                read_timeout: self.request_read_timeout,
                write_timeout: self.response_write_timeout,
            },
            rate_limit: crate::rate_limit::RateLimitConfig {
                per_second: u32::try_from(self.rate_limit_per_subject)?,
                burst: u32::try_from(self.rate_limit_burst.max(1))?,
                ..crate::rate_limit::RateLimitConfig::default()
            },
            metrics_listen: self.metrics_listen,
            metrics_token: self.metrics_token.clone(),
            graphiql: self.graphiql,
            websocket: WsConfig {
                init_timeout: self.ws_init_timeout,
                max_pending: usize::try_from(self.ws_max_pending)?,
                max_connections: usize::try_from(self.ws_max_connections)?,
                allowed_origins: self
                    .ws_allowed_origins
                    .clone()
                    .unwrap_or(AllowedOrigins::SameOrigin),
            },
            jwt: self.jwt()?.map(std::sync::Arc::new),
            refusals: crate::refusals::RefusalConfig {
                max_rows: i64::try_from(self.refusals_max_rows)?,
                retention: Duration::from_secs(self.refusals_retention_days * 86_400),
                ..crate::refusals::RefusalConfig::default()
            },
        })
    }

    /// The JWT validator, its keys read (`None`: JWT is off). Errors name the variable.
    pub fn jwt(&self) -> Result<Option<crate::jwt::JwtValidator>, BoxError> {
        let set = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let issuer = set(&self.jwt_issuer);
        let secret = self.jwt_hs256_secret.clone().filter(|s| !s.is_empty());
        let file = self
            .jwt_jwks_file
            .clone()
            .filter(|f| !f.as_os_str().is_empty());
        let Some(issuer) = issuer else {
            if file.is_some()
                || secret.is_some()
                || set(&self.jwt_audience).is_some()
                || self.jwt_role_map.is_some()
            {
                return Err(
                    "CORRAL_JWT_ISSUER must be set when JWT is configured (CORRAL_JWT_*)".into(),
                );
            }
            return Ok(None);
        };
        if set(&self.jwt_audience).is_none() {
            return Err(
                "CORRAL_JWT_AUDIENCE must be set when CORRAL_JWT_ISSUER is: without it, \
                        tokens the provider issued to other applications would be accepted"
                    .into(),
            );
        }
        let subject_claim = self.jwt_subject_claim.trim();
        if subject_claim.is_empty() {
            return Err("CORRAL_JWT_SUBJECT_CLAIM must not be empty".into());
        }
        let roles_claim = self.jwt_roles_claim.trim();
        if roles_claim.is_empty() {
            return Err("CORRAL_JWT_ROLES_CLAIM must not be empty".into());
        }
        let validator = crate::jwt::JwtValidator::new(crate::jwt::JwtConfig {
            issuer,
            audience: set(&self.jwt_audience),
            jwks_file: file,
            hs256_secret: secret.map(String::into_bytes),
            leeway_secs: self.jwt_leeway_secs,
            subject_claim: subject_claim.to_string(),
            roles_claim: roles_claim.to_string(),
            role_map: self.jwt_role_map.clone().map(|m| m.0).unwrap_or_default(),
        })?;
        Ok(Some(validator))
    }

    /// Sweep limits, allow-lists and timings.
    pub fn sweeps(&self) -> SweepConfig {
        let mut c = SweepConfig {
            enabled: self.nats.url().is_some(),
            allow: self.sweep_allow.0.clone(),
            poller_allow: self
                .sweep_poller_allow
                .clone()
                .map(|p| p.0.into_iter().collect())
                .unwrap_or_default(),
            claim_ttl: self.sweep_claim,
            offline_after: self.poller_offline,
            max_runtime: self.sweep_max_runtime,
            default_runtime: self.sweep_default_runtime.min(self.sweep_max_runtime),
            idempotency_window: self.sweep_idempotency_window,
            ..SweepConfig::default()
        };
        c.limits.max_hosts = self.sweep_max_hosts;
        c.limits.min_prefix_v4 = self.sweep_min_prefix_v4 as u8;
        c.limits.min_prefix_v6 = self.sweep_min_prefix_v6 as u8;
        c
    }

    /// The rule evaluator's settings.
    pub fn rules(&self) -> RuleWorkerConfig {
        RuleWorkerConfig {
            max_matches: i64::try_from(self.rule_max_matches).unwrap_or(i64::MAX),
            timeout: self.rule_timeout,
            schedule_every: self.rule_schedule,
            repair_every: self.rule_repair,
            ..RuleWorkerConfig::default()
        }
    }

    /// The capabilities worker's settings.
    pub fn capabilities(&self) -> CapabilityConfig {
        CapabilityConfig {
            interval: self.capability_interval,
            window: self.capability_window,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let mut argv = vec!["corral"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map(|c| c.settings)
            .map_err(|e| e.to_string())
    }

    /// The defaults declared for the settings are those of the configuration types (which
    /// tests and the benchmarks build directly), so the two cannot drift apart.
    #[test]
    fn declared_defaults_are_the_configurations_defaults() {
        let s = parse(&[]).expect("defaults");
        let api = s.api().expect("api");
        let defaults = ApiConfig::default();
        assert_eq!(api.mutation_wait, defaults.mutation_wait);
        assert_eq!(api.max_body_bytes, defaults.max_body_bytes);
        assert_eq!(api.query_limits, defaults.query_limits);
        assert_eq!(api.listener, defaults.listener);
        assert_eq!(api.websocket, defaults.websocket);
        assert_eq!(api.graphiql, defaults.graphiql);
        assert_eq!(
            api.health.raw_retention,
            HealthConfig::default().raw_retention
        );
        assert_eq!(
            api.health.rollup_retention,
            HealthConfig::default().rollup_retention
        );
        let sweeps = SweepConfig {
            enabled: false,
            ..s.sweeps()
        };
        assert_eq!(sweeps, SweepConfig::default());
        let rules = s.rules();
        let rule_defaults = RuleWorkerConfig::default();
        assert_eq!(
            (
                rules.max_matches,
                rules.timeout,
                rules.schedule_every,
                rules.repair_every
            ),
            (
                rule_defaults.max_matches,
                rule_defaults.timeout,
                rule_defaults.schedule_every,
                rule_defaults.repair_every
            )
        );
        assert_eq!(s.capabilities(), CapabilityConfig::default());
        assert_eq!(s.token_expiry, corral_workers::token_expiry::EXPIRY_EVERY);
        assert_eq!(s.listen, "127.0.0.1:8080".parse().expect("addr"));
    }

    #[test]
    fn bad_values_stop_the_start_naming_their_variable() {
        for (option, bad, var) in [
            ("--ws-init-timeout", "0", "CORRAL_WS_INIT_TIMEOUT_MS"),
            ("--ws-max-pending=-1", "", "CORRAL_WS_MAX_PENDING"),
            ("--ws-max-connections", "soon", "CORRAL_WS_MAX_CONNECTIONS"),
            ("--mutation-wait", "5s", "CORRAL_MUTATION_WAIT_MS"),
            ("--listen", "localhost", "CORRAL_LISTEN"),
            ("--graphiql", "maybe", "CORRAL_GRAPHIQL"),
            ("--sweep-allow", "10.0.0.0/33", "CORRAL_SWEEP_ALLOW"),
            ("--sweep-poller-allow", "p1", "CORRAL_SWEEP_POLLER_ALLOW"),
            ("--nats-namespace", "events", "CORRAL_NATS_NAMESPACE"),
            ("--metrics-token", "short", "CORRAL_METRICS_TOKEN"),
            (
                "--telemetry-retention-days",
                "0",
                "CORRAL_TELEMETRY_RETENTION_DAYS",
            ),
        ] {
            let args: Vec<&str> = [option, bad]
                .into_iter()
                .filter(|a| !a.is_empty())
                .collect();
            let err = match parse(&args) {
                Ok(_) => panic!("{option} {bad} was accepted"),
                Err(e) => e,
            };
            assert!(err.contains(var), "{option} {bad}: {err}");
        }
        let s = parse(&["--rollup-retention-days", "3"]).expect("parses");
        let err = s
            .api()
            .expect_err("shorter than the raw retention")
            .to_string();
        assert!(err.contains("CORRAL_ROLLUP_RETENTION_DAYS"), "{err}");
    }

    #[test]
    fn jwt_settings_stop_the_start_naming_their_variable() {
        assert!(parse(&[]).expect("parses").jwt().expect("off").is_none());
        let cases: [(&[&str], &str); 7] = [
            (&["--jwt-hs256-secret", "short"], "CORRAL_JWT_HS256_SECRET"),
            (
                &[
                    "--jwt-issuer",
                    "https://idp",
                    "--jwt-hs256-secret",
                    "0123456789abcdef0123456789abcdef",
                ],
                "CORRAL_JWT_AUDIENCE",
            ),
            (
                &["--jwt-role-map", "staff=Root Role"],
                "CORRAL_JWT_ROLE_MAP",
            ),
            (&["--jwt-leeway-secs", "301"], "CORRAL_JWT_LEEWAY_SECS"),
            (
                &["--jwt-hs256-secret", "0123456789abcdef0123456789abcdef"],
                "CORRAL_JWT_ISSUER",
            ),
            (
                &["--jwt-issuer", "https://idp", "--jwt-audience", "corral"],
                "CORRAL_JWT_JWKS_FILE",
            ),
            (
                &[
                    "--jwt-issuer",
                    "https://idp",
                    "--jwt-audience",
                    "corral",
                    "--jwt-jwks-file",
                    "/nonexistent/jwks.json",
                ],
                "CORRAL_JWT_JWKS_FILE",
            ),
        ];
        for (args, var) in cases {
            let e = match parse(args) {
                Err(e) => e,
                Ok(s) => s.jwt().expect_err("refused").to_string(),
            };
            assert!(e.contains(var), "{args:?}: {e}");
        }
        let s = parse(&[
            "--jwt-issuer",
            "https://idp",
            "--jwt-audience",
            "corral",
            "--jwt-hs256-secret",
            "0123456789abcdef0123456789abcdef",
            "--jwt-role-map",
            "staff=viewer",
        ])
        .expect("parses");
        assert!(s.api().expect("api").jwt.is_some());
    }

    #[test]
    fn websocket_settings_reach_the_api() {
        let s = parse(&[
            "--ws-init-timeout",
            "250",
            "--ws-max-pending",
            "8",
            "--ws-max-connections",
            "100",
            "--ws-allowed-origins",
            "https://app.example.com",
        ])
        .expect("parses");
        let ws = s.api().expect("api").websocket;
        assert_eq!(ws.init_timeout, Duration::from_millis(250));
        assert_eq!((ws.max_pending, ws.max_connections), (8, 100));
        assert_eq!(
            ws.allowed_origins,
            AllowedOrigins::Listed(vec!["https://app.example.com".into()])
        );
    }

    #[test]
    fn the_events_stream_follows_the_namespace_unless_set() {
        let s = parse(&["--nats-namespace", "site-a"]).expect("parses");
        assert_eq!(
            s.nats.names().expect("names").events_stream,
            "CORRAL_EVENTS_site-a"
        );
        let s = parse(&["--events-stream", "MINE"]).expect("parses");
        assert_eq!(s.nats.names().expect("names").events_stream, "MINE");
        let s = parse(&["--events-subject-prefix", "corral.inventory"]).expect("parses");
        let err = s.nats.names().expect_err("overlaps the inventory feed");
        assert!(err.contains("CORRAL_INVENTORY"), "{err}");
    }
}
