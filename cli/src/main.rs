//! The `corral` binary.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use corral_api::runtime::{self, BoxError};
use corral_api::settings::{DatabaseSettings, HealthSettings, NatsSettings, Settings};
use corral_api::wiring::{App, Roles, WorkerSettings, Workers};
use corral_projections::rebuild;

mod audit_cli;
mod import;
mod role_cli;
mod rollups_cli;
mod sweeps_cli;
mod token_cli;
mod watch_cli;

use role_cli::RoleCommand;
use token_cli::TokenCommand;
use watch_cli::WatchCommand;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "Event-sourced inventory groups: GraphQL API, projectors and workers"
)]
struct Cli {
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API, projectors and workers (embedded PostgreSQL when DATABASE_URL is unset).
    /// Every setting is an environment variable or the option of the same name.
    Serve {
        /// Serve the API only; run projectors elsewhere with `corral work`.
        #[arg(long)]
        no_workers: bool,
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Run projectors and workers without the API.
    Work {
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Apply database migrations.
    Migrate,
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Grant and revoke role bindings of subjects (global, or on a group's subtree).
    Role {
        #[command(subcommand)]
        command: RoleCommand,
    },
    /// Register, remove and list durable membership watches (the NATS membership feed).
    Watch {
        #[command(subcommand)]
        command: WatchCommand,
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
        #[command(flatten)]
        health: HealthSettings,
    },
    /// Run the benchmarks and print a table beside same-run baselines.
    Bench(corral_bench::BenchArgs),
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
        /// Who the inventory events name as actor (default: the operating-system user).
        #[arg(long)]
        actor: Option<String>,
        #[command(flatten)]
        health: HealthSettings,
    },
}

#[derive(Subcommand)]
enum DocsCommand {
    /// The configuration table of README.md (from the settings' declarations): prints it, or
    /// with --write rewrites that section of the file in place.
    Settings {
        /// Rewrite the generated section of --file instead of printing it.
        #[arg(long)]
        write: bool,
        /// The file --write rewrites.
        #[arg(long, default_value = "README.md")]
        file: std::path::PathBuf,
    },
    /// The error-code table of docs/errors.md: prints it, or with --write rewrites that
    /// section of the file in place.
    Errors {
        /// Rewrite the generated section of --file instead of printing it.
        #[arg(long)]
        write: bool,
        /// The file --write rewrites.
        #[arg(long, default_value = "docs/errors.md")]
        file: std::path::PathBuf,
    },
    /// The permission tables of docs/access.md (the catalog, the built-in roles, what each
    /// field needs): prints them, or with --write rewrites that section of the file in place.
    Permissions {
        /// Rewrite the generated section of --file instead of printing it.
        #[arg(long)]
        write: bool,
        /// The file --write rewrites.
        #[arg(long, default_value = "docs/access.md")]
        file: std::path::PathBuf,
    },
    /// The AsyncAPI 3 document of every NATS subject (docs/asyncapi.json) and the JSON Schemas
    /// of their messages (docs/schemas/): prints the document, or with --write rewrites every
    /// file under --dir and removes schema files the code no longer produces.
    Asyncapi {
        /// Rewrite the files under --dir instead of printing the document.
        #[arg(long)]
        write: bool,
        /// The docs directory.
        #[arg(long, default_value = "docs")]
        dir: std::path::PathBuf,
    },
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
    /// Show each projector's checkpoint and lag, and who leads each singleton worker.
    Status {
        #[command(flatten)]
        nats: NatsSettings,
    },
    /// Rebuild a projection into fresh tables, then swap (resumes after a crash).
    Rebuild {
        /// Projection name (see `corral projections status`).
        name: String,
    },
}

/// `corral docs events|errors`: prints a generated section, or with `write` rewrites it in
/// `file` (`regenerate` gives the file's new text, or an error naming what is wrong).
fn generated_doc(
    write: bool,
    file: &std::path::Path,
    generated: String,
    regenerate: impl FnOnce(&str) -> Result<String, String>,
) -> Result<(), BoxError> {
    if !write {
        print!("{generated}");
        return Ok(());
    }
    let doc = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let updated = regenerate(&doc).map_err(|e| format!("{}: {e}", file.display()))?;
    if updated == doc {
        println!("{} is up to date", file.display());
    } else {
        std::fs::write(file, updated)
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        println!("rewrote the generated section of {}", file.display());
    }
    Ok(())
}

/// `corral docs asyncapi`: prints the document, or writes every generated file under `dir`
/// (and removes files under its schemas directory that are no longer generated).
fn write_asyncapi(write: bool, dir: &std::path::Path) -> Result<(), BoxError> {
    use corral_workers::asyncapi;
    let files = asyncapi::files();
    if !write {
        print!("{}", files[asyncapi::DOCUMENT]);
        return Ok(());
    }
    let mut changed = 0usize;
    for (rel, text) in &files {
        let path = dir.join(rel);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        changed += 1;
    }
    let mut removed = 0usize;
    let mut dirs = vec![dir.join(asyncapi::SCHEMAS_DIR)];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .map(|r| r.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            if !files.contains_key(&rel) {
                std::fs::remove_file(&path)
                    .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
                removed += 1;
            }
        }
    }
    println!(
        "{} files generated under {}: {changed} rewritten, {removed} stale removed",
        files.len(),
        dir.display()
    );
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
        command: DocsCommand::Asyncapi { write, dir },
    } = &cli.command
    {
        return write_asyncapi(*write, dir);
    }
    if let Command::Docs {
        command: DocsCommand::Events { write, file },
    } = &cli.command
    {
        return generated_doc(
            *write,
            file,
            corral_domain::catalog::events_markdown(),
            |doc| corral_domain::catalog::regenerate(doc).map_err(|e| e.to_string()),
        );
    }
    if let Command::Docs {
        command: DocsCommand::Permissions { write, file },
    } = &cli.command
    {
        let table = corral_api::policy::PolicyTable::built_in().await?;
        let generated = corral_api::permissions::markdown(|r, p| table.grants(r, p));
        return generated_doc(*write, file, generated.clone(), |doc| {
            corral_api::permissions::regenerate(doc, &generated)
                .ok_or_else(|| "the generated-section markers are missing".to_string())
        });
    }
    if let Command::Docs {
        command: DocsCommand::Errors { write, file },
    } = &cli.command
    {
        return generated_doc(*write, file, corral_api::error_codes::markdown(), |doc| {
            corral_api::error_codes::regenerate(doc)
                .ok_or_else(|| "the generated-section markers are missing".to_string())
        });
    }
    if let Command::Docs {
        command: DocsCommand::Settings { write, file },
    } = &cli.command
    {
        return generated_doc(
            *write,
            file,
            corral_api::settings::table::markdown(),
            |doc| {
                corral_api::settings::table::regenerate(doc)
                    .ok_or_else(|| "the generated-table markers are missing".to_string())
            },
        );
    }
    if let Command::Bench(args) = cli.command {
        return corral_bench::run(args).await;
    }
    if let Command::Poller(args) = cli.command {
        return sweeps_cli::poller(args, cli.database.data_dir.as_deref()).await;
    }
    let long_running = matches!(cli.command, Command::Serve { .. } | Command::Work { .. });
    let database = runtime::database(&cli.database, !long_running).await?;
    let (pool, lock_pool) = runtime::pools(&database.url, 32).await?;
    corral_migrations::migrate(&pool).await?;
    let adopted = corral_api::auth::adopt_legacy_tokens(&pool).await?;
    if adopted > 0 {
        eprintln!("corral: {adopted} token(s) of the old api_tokens table are now events");
    }
    match cli.command {
        Command::Migrate => println!("migrations applied"),
        Command::Token { command } => token_cli::run(&pool, command).await?,
        Command::Role { command } => role_cli::run(&pool, command).await?,
        Command::Watch { command } => watch_cli::run(&pool, command).await?,
        Command::Projections {
            command: ProjectionCommand::Status { nats },
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
            print_leaders(&pool, &nats).await?;
        }
        Command::Projections {
            command: ProjectionCommand::Rebuild { name },
        } => rebuild_projection(&pool, &name).await?,
        Command::Serve {
            no_workers,
            settings,
        } => serve(pool, lock_pool, &settings, !no_workers).await?,
        Command::Work { settings } => work(pool, &settings).await?,
        Command::Import {
            kind,
            file,
            actor,
            health,
        } => {
            import::run(
                &pool,
                kind,
                &file,
                health.config()?,
                import::import_actor(actor),
            )
            .await?
        }
        Command::Rollups { command, health } => {
            let outcome = rollups_cli::run(&pool, command, health.config()?).await;
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

/// The leaders part of `corral projections status`: each singleton worker and who runs it.
async fn print_leaders(pool: &sqlx::PgPool, nats: &NatsSettings) -> Result<(), BoxError> {
    use corral_projections::leader::{self, Leadership};
    let stream = nats.names()?.events_stream;
    println!();
    println!("{:<32} {:<10} {:<36} SINCE", "LEADER", "BACKEND", "HELD BY");
    for (leadership, holder) in leader::cluster(pool, &Leadership::all(&stream)).await? {
        match holder {
            Some(h) => {
                let by = match &h.client_addr {
                    Some(addr) => format!("{} ({addr})", h.application_name),
                    None => h.application_name.clone(),
                };
                let since = h.since.map_or_else(
                    || "-".to_string(),
                    |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                );
                println!(
                    "{:<32} {:<10} {:<36} {since}",
                    leadership.name(),
                    h.backend_pid,
                    by
                );
            }
            None => println!(
                "{:<32} {:<10} {:<36} -",
                leadership.name(),
                "-",
                "none (not running anywhere)"
            ),
        }
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

async fn serve(
    pool: sqlx::PgPool,
    lock_pool: sqlx::PgPool,
    all: &Settings,
    run_workers: bool,
) -> Result<(), BoxError> {
    let listen: SocketAddr = all.listen;
    let settings = WorkerSettings::from_settings(all)?;
    let roles = if run_workers {
        Roles::ALL
    } else {
        Roles::API_ONLY
    };
    let App { state, workers } =
        App::start(pool, lock_pool, &settings, all.api()?, roles, true).await?;
    let listener = corral_api::listener::bind(listen, "CORRAL_LISTEN").await?;
    let metrics_listener = match state.config.metrics_listen {
        Some(addr) => Some(corral_api::listener::bind(addr, "CORRAL_METRICS_LISTEN").await?),
        None => None,
    };
    let bound = listener
        .local_addr()
        .map_err(|e| format!("CORRAL_LISTEN: {e}"))?;
    tracing::info!(listen = %bound, "corral is serving GraphQL at http://{bound}/graphql");
    // On stdout too, whatever RUST_LOG says: with CORRAL_LISTEN on port 0 this is how a
    // supervisor (or a test) learns the port.
    println!("corral: serving on http://{bound}");
    let limits = state.config.listener;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_task = metrics_listener.map(|l| {
        tracing::info!(listen = ?state.config.metrics_listen, "serving /metrics on its own address");
        let router = corral_api::http::metrics_app(state.clone());
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(corral_api::listener::serve(l, router, limits, async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }))
    });
    corral_api::listener::serve(
        listener,
        corral_api::http::app(state),
        limits,
        shutdown_signal(),
    )
    .await?;
    let _ = stop.send(true);
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    workers.shutdown().await;
    Ok(())
}

async fn work(pool: sqlx::PgPool, all: &Settings) -> Result<(), BoxError> {
    let settings = WorkerSettings::from_settings(all)?;
    let mut workers = Workers::start(&pool, &settings, Roles::ALL).await?;
    let sweeps = std::sync::Arc::new(corral_projections::sweeps::sweep_commands(
        pool.clone(),
        workers.commit_signal(),
    ));
    let metrics = corral_api::metrics::Metrics::default();
    workers.start_sweeps_and_nats(&pool, &settings, &metrics, sweeps);
    tracing::info!("corral work: projectors and workers running");
    shutdown_signal().await;
    workers.shutdown().await;
    Ok(())
}
