//! `corral poller` (the reference sweep poller) and `corral sweeps export`.

use std::io::Write;
use std::path::PathBuf;

use corral_api::runtime::BoxError;
use corral_api::sweep_export::{export, ExportFormat};
use corral_projections::sweeps::read;
use sqlx::PgPool;
use uuid::Uuid;

/// `corral poller ...`: runs the reference poller until Ctrl-C.
#[derive(Debug, clap::Args)]
pub struct PollerArgs {
    /// The poller's id: runs scheduled for this poller id come here. Letters, digits, `-`,
    /// `_`.
    #[arg(long)]
    pub id: String,
    /// The NATS server (JetStream on); default `NATS_URL`.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: String,
    /// Where the poller journals what it has reported, so that after a crash it neither runs
    /// a finished job again nor reports a host twice. Default: `<data dir>/poller-<id>`.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The NATS namespace of the Corral deployment to serve (its `CORRAL_NATS_NAMESPACE`).
    #[arg(long, env = "CORRAL_NATS_NAMESPACE")]
    pub nats_namespace: Option<String>,
}

/// Runs the poller.
pub async fn poller(args: PollerArgs, data_dir: Option<&std::path::Path>) -> Result<(), BoxError> {
    let state_dir = match args.state_dir {
        Some(d) => d,
        None => corral_api::runtime::data_dir(data_dir).join(format!("poller-{}", args.id)),
    };
    let mut config = corral_workers::sweeps::PollerConfig::new(args.id, args.nats_url, state_dir);
    if let Some(ns) = args.nats_namespace.filter(|ns| !ns.trim().is_empty()) {
        config.names = corral_workers::nats_names::NatsNames::namespaced(ns.trim())?.sweeps;
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut poller = tokio::spawn(corral_workers::sweeps::run(config, stop_rx));
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        // It ended by itself: an error at start (bad id, NATS unreachable, ...).
        ended = &mut poller => return ended?,
    }
    let _ = stop.send(true);
    poller.await?
}

/// `corral sweeps ...`.
#[derive(Debug, clap::Subcommand)]
pub enum SweepsCommand {
    /// Write a run's results (by address) to standard output or a file.
    Export {
        /// The run id.
        run: Uuid,
        /// csv or ndjson.
        #[arg(long, value_enum, default_value = "ndjson")]
        format: ExportFormat,
        /// Only hosts with an open port.
        #[arg(long)]
        open_only: bool,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Runs a `corral sweeps` command.
pub async fn run(pool: &PgPool, command: SweepsCommand) -> Result<(), BoxError> {
    let SweepsCommand::Export {
        run,
        format,
        open_only,
        output,
    } = command;
    let to_file = output.is_some();
    let mut out: Box<dyn Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let written = export(pool, run, format, open_only, &mut out, &mut |n, total| {
        if to_file {
            eprint!("\rexported {n}/{total} results");
        }
    })
    .await?;
    if to_file {
        eprintln!();
    }
    let found = read::by_id(pool, run).await?;
    eprintln!(
        "run {run} ({}): {written} results{}",
        found.as_ref().map_or("?", |r| r.status.as_str()),
        if found.is_some_and(|r| r.results_purged_at.is_some()) {
            "; its results were deleted by the retention"
        } else {
            ""
        }
    );
    Ok(())
}
