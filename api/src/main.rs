//! The `corral` binary.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use corral_api::runtime::{self, BoxError};
use corral_api::state::{ApiConfig, AppState};
use corral_projections::rebuild;

mod audit_cli;
mod bench;
mod import;
mod rollups_cli;
mod sweeps_cli;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "Event-sourced inventory groups: GraphQL API, projectors and workers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API, projectors and workers (embedded PostgreSQL when DATABASE_URL is unset).
    Serve {
        /// Serve the API only; run projectors elsewhere with `corral work`.
        #[arg(long)]
        no_workers: bool,
    },
    /// Run projectors and workers without the API.
    Work,
    /// Apply database migrations.
    Migrate,
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Inspect or rebuild projections.
    Projections {
        #[command(subcommand)]
        command: ProjectionCommand,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Generated documentation.
    Docs {
        #[command(subcommand)]
        command: DocsCommand,
    },
    /// Export the audit log or verify its hash chain.
    Audit {
        #[command(subcommand)]
        command: audit_cli::AuditCommand,
    },
    /// Verify group rollups against raw samples, or rebuild them.
    Rollups {
        #[command(subcommand)]
        command: rollups_cli::RollupsCommand,
    },
    /// Run the benchmarks and print a table beside same-run baselines.
    Bench(bench::BenchArgs),
    /// Run the reference sweep poller (needs NATS, not the database).
    Poller(sweeps_cli::PollerArgs),
    /// Export a sweep run's results.
    Sweeps {
        #[command(subcommand)]
        command: sweeps_cli::SweepsCommand,
    },
    /// Import inventory or telemetry from NDJSON (one input object, sample or check per line).
    Import {
        /// devices, services or telemetry.
        kind: import::ImportKind,
        /// The .ndjson file.
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a bearer token; the token is the last line of output, shown once.
    Create {
        /// Who the token is for.
        #[arg(long)]
        subject: String,
        /// admin, operator, viewer or auditor.
        #[arg(long)]
        role: String,
    },
}

#[derive(Subcommand)]
enum DocsCommand {
    /// The event reference of docs/events.md (JSON Schemas and examples from the Rust types):
    /// prints it, or with --write rewrites that section of the file in place.
    Events {
        /// Rewrite the generated section of --file instead of printing it.
        #[arg(long)]
        write: bool,
        /// The file --write rewrites.
        #[arg(long, default_value = "docs/events.md")]
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum ProjectionCommand {
    /// Show each projector's checkpoint and lag.
    Status,
    /// Rebuild a projection into fresh tables, then swap (resumes after a crash).
    Rebuild {
        /// Projection name (see `corral projections status`).
        name: String,
    },
}

/// `corral docs events`: prints the generated event reference, or rewrites it in `file`.
fn events_doc(write: bool, file: &std::path::Path) -> Result<(), BoxError> {
    use corral_domain::catalog;
    if !write {
        print!("{}", catalog::events_markdown());
        return Ok(());
    }
    let doc = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let updated = catalog::regenerate(&doc).map_err(|e| format!("{}: {e}", file.display()))?;
    if updated == doc {
        println!("{} is up to date", file.display());
    } else {
        std::fs::write(file, updated)
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        println!("rewrote the generated section of {}", file.display());
    }
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), BoxError> {
    if let Command::Schema = cli.command {
        print!("{}", corral_api::graphql::sdl());
        return Ok(());
    }
    if let Command::Docs {
        command: DocsCommand::Events { write, file },
    } = &cli.command
    {
        return events_doc(*write, file);
    }
    if let Command::Bench(args) = cli.command {
        return bench::run(args).await;
    }
    if let Command::Poller(args) = cli.command {
        return sweeps_cli::poller(args).await;
    }
    let long_running = matches!(cli.command, Command::Serve { .. } | Command::Work);
    let database = runtime::database(!long_running).await?;
    let (pool, lock_pool) = runtime::pools(&database.url, 32).await?;
    corral_migrations::migrate(&pool).await?;
    match cli.command {
        Command::Migrate => println!("migrations applied"),
        Command::Token {
            command: TokenCommand::Create { subject, role },
        } => {
            let token = corral_api::auth::create_token(&pool, &subject, &role).await?;
            println!("created a {role} token for {subject}; it is shown only once:");
            println!("{token}");
        }
        Command::Projections {
            command: ProjectionCommand::Status,
        } => {
            println!(
                "{:<24} {:>14} {:>12} {:>12} {:>10}",
                "PROJECTOR", "CHECKPOINT", "PROCESSED", "LAG_EVENTS", "LAG_SECS"
            );
            for s in corral_projections::runner::status(&pool).await? {
                let checkpoint =
                    format!("{}:{}", s.cursor.transaction_id, s.cursor.global_position);
                println!(
                    "{:<24} {:>14} {:>12} {:>12} {:>10.1}",
                    s.name, checkpoint, s.events_processed, s.lag_events, s.lag_seconds
                );
            }
        }
        Command::Projections {
            command: ProjectionCommand::Rebuild { name },
        } => rebuild_projection(&pool, &name).await?,
        Command::Serve { no_workers } => serve(pool, lock_pool, !no_workers).await?,
        Command::Work => work(pool).await?,
        Command::Import { kind, file } => import::run(&pool, kind, &file).await?,
        Command::Rollups { command } => {
            let outcome = rollups_cli::run(&pool, command).await;
            if let Some(embedded) = database.embedded {
                embedded.stop().await?;
            }
            return outcome?.map_err(Into::into);
        }
        Command::Sweeps { command } => {
            let outcome = sweeps_cli::run(&pool, command).await;
            if let Some(embedded) = database.embedded {
                embedded.stop().await?;
            }
            return outcome;
        }
        Command::Audit { command } => {
            let outcome = audit_cli::run(&pool, command).await;
            if let Some(embedded) = database.embedded {
                embedded.stop().await?;
            }
            return outcome?.map_err(Into::into);
        }
        Command::Schema | Command::Bench(_) | Command::Docs { .. } | Command::Poller(_) => {}
    }
    if let Some(embedded) = database.embedded {
        embedded.stop().await?;
    }
    Ok(())
}

async fn rebuild_projection(pool: &sqlx::PgPool, name: &str) -> Result<(), BoxError> {
    let projections = corral_workers::projections();
    let Some(projection) = projections.iter().find(|p| p.name() == name) else {
        let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
        return Err(format!("unknown projection {name:?}; known: {}", names.join(", ")).into());
    };
    corral_projections::runner::ensure_schema(pool, projection.as_ref()).await?;
    let mut last = std::time::Instant::now() - Duration::from_secs(1);
    let outcome = rebuild::rebuild(
        pool,
        projection.as_ref(),
        rebuild::Options::default(),
        |p| {
            if last.elapsed() >= Duration::from_millis(500) {
                last = std::time::Instant::now();
                let pct = if p.total > 0 {
                    100.0 * p.processed as f64 / p.total as f64
                } else {
                    100.0
                };
                eprintln!(
                    "rebuilding {name}: {}/{} events ({pct:.0}%), {:.0} events/s",
                    p.processed, p.total, p.rate
                );
            }
        },
    )
    .await?;
    match outcome {
        rebuild::Outcome::Swapped { processed, resumed } => {
            println!(
                "rebuilt {name} from {processed} events{}; the new tables are live",
                if resumed { " (resumed)" } else { "" }
            );
        }
        rebuild::Outcome::Interrupted { processed } => {
            println!("rebuild of {name} stopped at {processed} events; run it again to resume")
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn announce_nats() {
    match std::env::var("NATS_URL") {
        Ok(url) if !url.trim().is_empty() => {
            tracing::info!(nats.url = %url, "NATS_URL is set: the NATS inventory and telemetry feeds, the sweep workers and the event publisher run with the workers")
        }
        _ => tracing::info!("NATS_URL is not set: NATS feeds, sweeps and publishing are off"),
    }
}

/// The NATS inventory and telemetry feeds, running when `NATS_URL` is set.
struct InventoryFeed {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl InventoryFeed {
    fn start(
        pool: &sqlx::PgPool,
        stats: std::sync::Arc<corral_workers::inventory_feed::FeedStats>,
        telemetry: std::sync::Arc<corral_workers::telemetry_feed::TelemetryStats>,
    ) -> Option<Self> {
        let url = std::env::var("NATS_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let inventory = tokio::spawn(corral_workers::inventory_feed::run(
            pool.clone(),
            url.clone(),
            corral_workers::inventory_feed::FeedConfig::default(),
            stats,
            stop_rx.clone(),
        ));
        // The settings were checked at start-up (config_from_env).
        let health = corral_projections::health::HealthConfig::from_env().unwrap_or_default();
        let telemetry = tokio::spawn(corral_workers::telemetry_feed::run(
            pool.clone(),
            url,
            corral_workers::telemetry_feed::default_config(),
            health,
            telemetry,
            stop_rx,
        ));
        Some(Self {
            stop,
            tasks: vec![inventory, telemetry],
        })
    }

    async fn stop(feed: Option<Self>) {
        if let Some(feed) = feed {
            let _ = feed.stop.send(true);
            for task in feed.tasks {
                let _ = task.await;
            }
        }
    }
}

/// The NATS publisher of the event log, running when `NATS_URL` is set (settings from
/// `CORRAL_EVENTS_*`).
fn start_publisher(
    pool: &sqlx::PgPool,
    stats: std::sync::Arc<corral_workers::publisher::PublisherStats>,
) -> Result<Option<corral_workers::publisher::Publisher>, BoxError> {
    let Some(url) = std::env::var("NATS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    else {
        return Ok(None);
    };
    let config = corral_workers::publisher::PublisherConfig::from_env()?;
    tracing::info!(nats.stream = %config.stream, nats.subject_prefix = %config.subject_prefix, "publishing the event log to NATS");
    Ok(Some(corral_workers::publisher::spawn(
        pool.clone(),
        url,
        config,
        stats,
    )))
}

/// The rule evaluator's settings from `CORRAL_RULE_*`.
fn rule_config_from_env() -> Result<corral_workers::rules::RuleWorkerConfig, BoxError> {
    let mut config = corral_workers::rules::RuleWorkerConfig::default();
    let number = |name: &str| -> Result<Option<u64>, BoxError> {
        match std::env::var(name) {
            Ok(v) => {
                Ok(Some(v.parse().map_err(|_| {
                    format!("{name} must be a whole number, got {v:?}")
                })?))
            }
            Err(_) => Ok(None),
        }
    };
    if let Some(n) = number("CORRAL_RULE_MAX_MATCHES")? {
        config.max_matches = n as i64;
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

fn config_from_env() -> Result<ApiConfig, BoxError> {
    let mut config = ApiConfig::default();
    if let Ok(ms) = std::env::var("CORRAL_MUTATION_WAIT_MS") {
        config.mutation_wait = Duration::from_millis(
            ms.parse()
                .map_err(|_| "CORRAL_MUTATION_WAIT_MS must be milliseconds")?,
        );
    }
    if let Ok(bytes) = std::env::var("CORRAL_MAX_BODY_BYTES") {
        config.max_body_bytes = bytes
            .parse()
            .map_err(|_| "CORRAL_MAX_BODY_BYTES must be a number of bytes")?;
    }
    if let Ok(value) = std::env::var(corral_api::ide::SETTING) {
        config.graphiql = corral_api::ide::parse_setting(&value)?;
    }
    config.health = corral_projections::health::HealthConfig::from_env()?;
    config.sweeps = corral_projections::sweeps::SweepConfig::from_env()?;
    Ok(config)
}

async fn serve(
    pool: sqlx::PgPool,
    lock_pool: sqlx::PgPool,
    run_workers: bool,
) -> Result<(), BoxError> {
    announce_nats();
    let listen: SocketAddr = std::env::var("CORRAL_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8080".into())
        .parse()
        .map_err(|e| format!("CORRAL_LISTEN: {e}"))?;
    let mut background = corral_workers::start_with(
        pool.clone(),
        run_workers,
        Duration::from_secs(1),
        run_workers.then(rule_config_from_env).transpose()?,
    )
    .await?;
    if run_workers {
        background.spawn_capabilities(
            pool.clone(),
            corral_workers::capabilities::CapabilityConfig::from_env()?,
        );
    }
    let state = AppState::new(
        pool,
        lock_pool,
        background.waiter(),
        background.commit_signal(),
        corral_api::policy::enforcer().await?,
        config_from_env()?,
    );
    let feed = if run_workers {
        InventoryFeed::start(
            &state.pool,
            state.metrics.inventory_feed.clone(),
            state.metrics.telemetry_feed.clone(),
        )
    } else {
        None
    };
    let sweeps = run_workers.then(|| {
        SweepWorkers::start(
            &state.pool,
            state.sweeps.clone(),
            state.config.sweeps.clone(),
        )
    });
    let publisher = if run_workers {
        start_publisher(&state.pool, state.metrics.publisher.clone())?
    } else {
        None
    };
    runtime::ensure_roots(&state.groups).await?;
    runtime::ensure_predefined_groups(&state.pool, &state.groups).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(listen = %listen, "corral is serving GraphQL at http://{listen}/graphql");
    axum::serve(
        listener,
        corral_api::http::app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    InventoryFeed::stop(feed).await;
    if let Some(sweeps) = sweeps {
        sweeps.stop().await;
    }
    if let Some(publisher) = publisher {
        publisher.shutdown().await;
    }
    background.shutdown().await;
    Ok(())
}

/// The sweep workers: the monitor and the results retention always, the dispatcher and the
/// reports consumer when `NATS_URL` is set.
struct SweepWorkers {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SweepWorkers {
    fn start(
        pool: &sqlx::PgPool,
        commands: std::sync::Arc<corral_projections::sweeps::SweepCommands>,
        config: corral_projections::sweeps::SweepConfig,
    ) -> Self {
        let url = std::env::var("NATS_URL")
            .ok()
            .filter(|u| !u.trim().is_empty());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(corral_workers::sweep_control::run(
            pool.clone(),
            commands,
            corral_workers::sweep_control::SweepWorkerConfig::new(url, config),
            stop_rx,
        ));
        Self { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn work(pool: sqlx::PgPool) -> Result<(), BoxError> {
    announce_nats();
    let publisher = start_publisher(&pool, std::sync::Arc::default())?;
    let mut background = corral_workers::start_with(
        pool.clone(),
        true,
        Duration::from_secs(1),
        Some(rule_config_from_env()?),
    )
    .await?;
    let sweeps = std::sync::Arc::new(corral_projections::sweeps::sweep_commands(
        pool.clone(),
        background.commit_signal(),
    ));
    let feed = InventoryFeed::start(&pool, std::sync::Arc::default(), std::sync::Arc::default());
    let sweep_workers = SweepWorkers::start(
        &pool,
        sweeps,
        corral_projections::sweeps::SweepConfig::from_env()?,
    );
    background.spawn_capabilities(
        pool,
        corral_workers::capabilities::CapabilityConfig::from_env()?,
    );
    tracing::info!("corral work: projectors running");
    shutdown_signal().await;
    InventoryFeed::stop(feed).await;
    sweep_workers.stop().await;
    if let Some(publisher) = publisher {
        publisher.shutdown().await;
    }
    background.shutdown().await;
    Ok(())
}
