//! `corral bench`: each figure beside a baseline measured in the same run, as a ratio.
//!
//! Uses `DATABASE_URL`'s server when set (creating and dropping its own databases), else a
//! private PostgreSQL with default durability in a temporary directory.
mod access;
mod audit;
mod catch_up;
mod commands;
mod health;
mod membership;
mod sweeps;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use corral_api::embedded_pg::{EmbeddedOptions, EmbeddedPostgres};
use corral_api::runtime::{self, BoxError};
use corral_domain::group::GroupCommand;
use corral_domain::metadata::EventMetadata;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// Benchmark options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Seconds each throughput measurement runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Events in the catch-up backlog.
    #[arg(long, default_value_t = 200_000)]
    pub backlog: usize,
    /// Requests for the latency measurements.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Suites to run (repeatable or comma-separated): commands, log, membership, audit, streams,
    /// health, sweeps, access.
    #[arg(long, value_delimiter = ',', default_values_t = Suite::ALL)]
    pub suite: Vec<Suite>,
    #[command(flatten)]
    pub membership: membership::MembershipArgs,
    #[command(flatten)]
    pub audit: audit::AuditArgs,
    #[command(flatten)]
    pub health: health::HealthArgs,
    #[command(flatten)]
    pub sweeps: sweeps::SweepArgs,
    #[command(flatten)]
    pub access: access::AccessArgs,
}

/// A group of benchmarks that `--suite` selects.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// Group commands (createGroup, updateGroup) through the executor with 1 and 32
    /// concurrent writers, beside raw event INSERTs (commands/s).
    Commands,
    /// How fast projectors catch up a backlog of `--backlog` events, beside a raw scan; the
    /// group tree query through GraphQL, beside a recursive CTE.
    Log,
    /// Memberships and rules over a generated inventory (`--devices`): effective members,
    /// reverse lookups, a rule over every device, sustained inventory changes.
    Membership,
    /// Audit queries, time travel and hash-chain verification over a large log
    /// (`--audit-events`), beside plain reads.
    Audit,
    /// Latency from a command's commit to a GraphQL subscriber, and the NATS publisher's
    /// throughput beside a raw JetStream publish loop (needs `NATS_URL`).
    Streams,
    /// Group health: telemetry ingest, health series from rollups against raw samples, and
    /// the rollup refresh after a group moves.
    Health,
    /// Network sweeps: hosts swept per second on loopback end to end (needs `NATS_URL`),
    /// beside a plain connect loop; sweep results stored per second.
    Sweeps,
    /// Scoped access: `groups` and `group.members` first pages by a subject with 1,000 scoped
    /// bindings over a 10,000-group tree, beside the same requests by a global admin.
    Access,
}

impl Suite {
    const ALL: [Suite; 8] = [
        Suite::Commands,
        Suite::Log,
        Suite::Membership,
        Suite::Audit,
        Suite::Streams,
        Suite::Health,
        Suite::Sweeps,
        Suite::Access,
    ];
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Suite::Commands => "commands",
            Suite::Log => "log",
            Suite::Membership => "membership",
            Suite::Audit => "audit",
            Suite::Streams => "streams",
            Suite::Health => "health",
            Suite::Sweeps => "sweeps",
            Suite::Access => "access",
        })
    }
}

pub(crate) async fn command(
    groups: &corral_projections::commands::groups::GroupCommands,
    cmd: GroupCommand,
    meta: &EventMetadata,
) -> Result<corral_projections::commands::executor::Committed, BoxError> {
    groups
        .execute(cmd, None, meta)
        .await
        .map_err(|e| e.to_string().into())
}

pub(crate) fn command_row(command: &str, concurrency: usize, rate: f64, raw: f64) -> Row {
    Row {
        name: format!("{command} via executor, concurrency {concurrency} (cmd/s)"),
        corral: format!("{rate:.0}"),
        baseline_name: "raw INSERT of an event row (rows/s)".into(),
        baseline: format!("{raw:.0}"),
        ratio: rate / raw,
        target: if concurrency == 32 && !command.contains('+') {
            ">= 0.40".into()
        } else {
            "-".into()
        },
    }
}

pub(crate) struct Row {
    name: String,
    corral: String,
    baseline_name: String,
    baseline: String,
    ratio: f64,
    target: String,
}

struct Server {
    url_for: Box<dyn Fn(&str) -> String>,
    embedded: Option<(EmbeddedPostgres, std::path::PathBuf)>,
}

async fn server() -> Result<Server, BoxError> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        runtime::url_with_database(&url, "postgres")?;
        return Ok(Server {
            url_for: Box::new(move |db| runtime::url_with_database(&url, db).unwrap_or_default()),
            embedded: None,
        });
    }
    let dir = std::env::temp_dir().join(format!("corral-bench-{}", std::process::id()));
    eprintln!(
        "bench: DATABASE_URL is not set; starting a private PostgreSQL in {}",
        dir.display()
    );
    let pg = EmbeddedPostgres::start(EmbeddedOptions::persistent(&dir)).await?;
    let template = pg.url("__DB__");
    Ok(Server {
        url_for: Box::new(move |db| template.replace("__DB__", db)),
        embedded: Some((pg, dir)),
    })
}

async fn fresh_db(server: &Server, label: &str) -> Result<(String, String), BoxError> {
    let name = format!("corral_bench_{label}_{}", Uuid::new_v4().simple());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&(server.url_for)("postgres"))
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await?;
    admin.close().await;
    Ok((name.clone(), (server.url_for)(&name)))
}

async fn drop_db(server: &Server, name: &str) {
    if let Ok(admin) = PgPoolOptions::new()
        .max_connections(1)
        .connect(&(server.url_for)("postgres"))
        .await
    {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await;
    }
}

/// Runs `op` from `concurrency` tasks for `seconds`; returns operations per second.
pub(crate) async fn throughput<F, Fut>(
    concurrency: usize,
    seconds: u64,
    op: F,
) -> Result<f64, BoxError>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (op, done) = (op.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                op(worker, i).await?;
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), BoxError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// Runs every benchmark and prints the table.
pub async fn run(args: BenchArgs) -> Result<(), BoxError> {
    let server = server().await?;
    let mut rows = Vec::new();
    if args.suite.contains(&Suite::Commands) {
        let (cmd_db, cmd_url) = fresh_db(&server, "cmd").await?;
        let result = commands::bench_commands(&cmd_url, args.seconds, &mut rows).await;
        drop_db(&server, &cmd_db).await;
        result?;
    }
    if args.suite.contains(&Suite::Log) {
        let (log_db, log_url) = fresh_db(&server, "log").await?;
        let result = catch_up::bench_log(&log_url, &args, &mut rows).await;
        drop_db(&server, &log_db).await;
        result?;
    }
    if args.suite.contains(&Suite::Membership) {
        let (db, url) = fresh_db(&server, "members").await?;
        let result = membership::bench_membership(&url, &args.membership, &mut rows).await;
        if args.membership.keep_database {
            eprintln!("bench: membership: database {db} kept");
        } else {
            drop_db(&server, &db).await;
        }
        result?;
    }
    if args.suite.contains(&Suite::Audit) {
        let (db, url) = fresh_db(&server, "audit").await?;
        let result = audit::bench_audit(&url, &args.audit, &mut rows).await;
        drop_db(&server, &db).await;
        result?;
    }
    if args.suite.contains(&Suite::Streams) {
        let (db, url) = fresh_db(&server, "streams").await?;
        let result = audit::bench_streams(&url, &args.audit, &mut rows).await;
        drop_db(&server, &db).await;
        result?;
    }
    if args.suite.contains(&Suite::Health) {
        let (db, url) = fresh_db(&server, "health").await?;
        let result = health::bench_health(&url, &args.health, &mut rows).await;
        if args.health.health_keep_database {
            eprintln!("bench: health: database {db} kept");
        } else {
            drop_db(&server, &db).await;
        }
        result?;
    }
    if args.suite.contains(&Suite::Sweeps) {
        let (db, url) = fresh_db(&server, "sweeps").await?;
        let result = sweeps::bench_sweeps(&url, &args.sweeps, &mut rows).await;
        drop_db(&server, &db).await;
        result?;
    }
    if args.suite.contains(&Suite::Access) {
        let (db, url) = fresh_db(&server, "access").await?;
        let result = access::bench_access(&url, &args.access, &mut rows).await;
        if args.access.access_keep_database {
            eprintln!("bench: access: database {db} kept");
        } else {
            drop_db(&server, &db).await;
        }
        result?;
    }
    if let Some((pg, dir)) = server.embedded {
        pg.stop().await?;
        let _ = std::fs::remove_dir_all(dir);
    }
    println!("| benchmark | corral | baseline | baseline value | ratio | target |");
    println!("|---|---:|---|---:|---:|---|");
    for r in rows {
        // A figure without a baseline has no ratio.
        let ratio = if !r.ratio.is_finite() {
            "-".into()
        } else if r.ratio < 0.01 {
            format!("{:.4}", r.ratio)
        } else {
            format!("{:.2}", r.ratio)
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.name, r.corral, r.baseline_name, r.baseline, ratio, r.target
        );
    }
    Ok(())
}
