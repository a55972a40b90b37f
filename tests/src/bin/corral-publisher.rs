//! The NATS publisher alone, for tests that kill it (`kill -9`) mid-batch: publishes the log of
//! `DATABASE_URL` to `NATS_URL` with the stream and prefix `corral serve` would use (the same
//! settings, `CORRAL_EVENTS_STREAM` and `CORRAL_EVENTS_SUBJECT_PREFIX`, read by the same
//! declaration), `--batch` events per batch, until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use corral_api::settings::NatsSettings;
use corral_workers::publisher::{self, PublisherStats};
use sqlx::postgres::PgPoolOptions;

/// The test publisher's arguments.
#[derive(Parser, Debug)]
struct Args {
    /// The database whose log is published.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Events per batch.
    #[arg(long, default_value_t = 256)]
    batch: i64,
    #[command(flatten)]
    nats: NatsSettings,
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let nats_url = args.nats.url().ok_or("NATS_URL is not set")?;
    let mut config = args.nats.names()?.publisher();
    config.batch = args.batch;
    config.poll = Duration::from_millis(200);
    config.validate()?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&args.database_url)
        .await?;
    let stats = Arc::new(PublisherStats::default());
    let running = publisher::spawn(pool, nats_url, config, stats);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    running.shutdown().await;
    Ok(())
}
