//! The reference sweep poller (what `corral poller` runs), with buckets and a stream of a
//! test's own (`CORRAL_SWEEP_TAG`), for tests that kill it (`kill -9`) mid-run: polls as
//! `--id` with the journal in `--state-dir` until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use corral_workers::sweeps::{PollerConfig, SweepNames};

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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

async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .ok_or_else(|| format!("{name} is required"))
    };
    let nats_url = std::env::var("NATS_URL").map_err(|_| "NATS_URL is not set")?;
    let mut config = PollerConfig::new(arg("--id")?, nats_url, PathBuf::from(arg("--state-dir")?));
    config.heartbeat_interval = Duration::from_millis(300);
    if let Ok(tag) = std::env::var("CORRAL_SWEEP_TAG") {
        config.names = SweepNames::tagged(&tag);
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut poller = tokio::spawn(corral_workers::sweeps::run(config, stop_rx));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        ended = &mut poller => return ended?,
    }
    let _ = stop.send(true);
    poller.await?
}
