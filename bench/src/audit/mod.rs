//! Issue 4: the audit trail over a large log, time travel, chain verification, the NATS
//! publisher and commit-to-subscriber latency, each beside a same-run baseline.

mod log;
mod nats;
mod queries;
mod streams;

use std::time::Duration;

use clap::Args;
use corral_api::runtime::BoxError;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

pub(super) use self::queries::bench_audit;
pub(super) use self::streams::bench_streams;

/// Options of the audit suite.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Events in the large log (audit queries, time travel, verification).
    #[arg(long, default_value_t = 1_000_000)]
    pub audit_events: usize,
    /// Events the NATS publisher (and the raw publish loop) publish.
    #[arg(long, default_value_t = 50_000)]
    pub publish_events: usize,
    /// Events per batch of the NATS publisher (and of the raw loop beside it).
    #[arg(long, default_value_t = 256)]
    pub publish_batch: i64,
    /// Commands per second for the commit-to-subscriber latency (comma-separated: one
    /// measurement per rate, quiet and loaded).
    #[arg(long, value_delimiter = ',', default_values_t = [250, 500, 1000])]
    pub command_rates: Vec<u64>,
    /// Seconds each latency measurement runs.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
}

/// Runs per latency figure.
const RUNS: usize = 200;
/// Most time one latency figure may take.
const BUDGET: Duration = Duration::from_secs(30);

async fn pool(url: &str, max: u32) -> Result<PgPool, BoxError> {
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .connect(url)
        .await?;
    corral_migrations::migrate(&pool).await?;
    Ok(pool)
}
