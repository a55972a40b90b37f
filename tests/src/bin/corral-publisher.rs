//! The NATS publisher alone, for tests that kill it (`kill -9`) mid-batch: publishes the log of
//! `DATABASE_URL` to `NATS_URL` with the stream and prefix of `CORRAL_EVENTS_STREAM` and
//! `CORRAL_EVENTS_SUBJECT_PREFIX`, `CORRAL_EVENTS_BATCH` events per batch, until SIGTERM or
//! Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use corral_workers::publisher::{self, PublisherConfig, PublisherStats};
use sqlx::postgres::PgPoolOptions;

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let database_url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set")?;
    let nats_url = std::env::var("NATS_URL").map_err(|_| "NATS_URL is not set")?;
    let mut config = PublisherConfig::from_env()?;
    if let Ok(batch) = std::env::var("CORRAL_EVENTS_BATCH") {
        config.batch = batch
            .parse()
            .map_err(|_| "CORRAL_EVENTS_BATCH must be a number")?;
    }
    config.poll = Duration::from_millis(200);
    config.validate()?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&database_url)
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
