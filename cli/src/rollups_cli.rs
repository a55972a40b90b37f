//! `corral rollups verify|backfill`: check group rollups against raw samples, or rebuild
//! them from raw samples (docs/runbooks/rollups.md).

use chrono::{DateTime, Utc};
use corral_projections::health::backfill::backfill;
use corral_projections::health::query::HealthError;
use corral_projections::health::verify::verify_group;
use corral_projections::health::{BucketSize, HealthConfig};
use sqlx::PgPool;
use uuid::Uuid;

use corral_api::runtime::BoxError;

/// Bucket size on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BucketArg {
    /// 5-minute buckets.
    #[value(name = "5m")]
    FiveMinutes,
    /// 1-hour buckets.
    #[value(name = "1h")]
    OneHour,
}

impl From<BucketArg> for BucketSize {
    fn from(b: BucketArg) -> Self {
        match b {
            BucketArg::FiveMinutes => BucketSize::FiveMinutes,
            BucketArg::OneHour => BucketSize::OneHour,
        }
    }
}

/// `corral rollups ...`.
#[derive(Debug, clap::Subcommand)]
pub enum RollupsCommand {
    /// Compare a group's rollups with its raw samples over a window, bucket by bucket; exit
    /// status 1 on any mismatch.
    Verify {
        /// The group.
        #[arg(long)]
        group: Uuid,
        /// Window start (RFC 3339, e.g. 2026-12-01T00:00:00Z).
        #[arg(long)]
        from: DateTime<Utc>,
        /// Window end (RFC 3339).
        #[arg(long)]
        to: DateTime<Utc>,
        /// Bucket size to compare.
        #[arg(long, value_enum, default_value = "5m")]
        bucket: BucketArg,
    },
    /// Rebuild per-device and per-service buckets from raw samples (an hour per transaction)
    /// and recompute group rollups from them: every group, or one group and its ancestors.
    Backfill {
        /// Only this group's members, then this group and its ancestors.
        #[arg(long)]
        group: Option<Uuid>,
        /// Rebuild buckets from here on (default: the start of the raw retention window).
        #[arg(long)]
        from: Option<DateTime<Utc>>,
    },
}

/// Runs a `rollups` command; `Ok(Err(message))` means it ran and found a problem (exit 1).
pub async fn run(
    pool: &PgPool,
    command: RollupsCommand,
    config: HealthConfig,
) -> Result<Result<(), String>, BoxError> {
    match command {
        RollupsCommand::Verify {
            group,
            from,
            to,
            bucket,
        } => {
            let report = match verify_group(pool, group, from, to, bucket.into()).await {
                Ok(r) => r,
                Err(HealthError::Store(e)) => return Err(e.into()),
                Err(e) => return Ok(Err(e.to_string())),
            };
            for line in report.mismatches.iter().take(50) {
                println!("MISMATCH {line}");
            }
            if report.mismatches.len() > 50 {
                println!("... and {} more", report.mismatches.len() - 50);
            }
            println!(
                "group {group}: {} buckets compared, raw samples {}, rollup samples {}, members {} (rollups count {}), {} mismatches",
                report.buckets,
                report.raw_samples,
                report.rollup_samples,
                report.members.0,
                report.members.1,
                report.mismatches.len()
            );
            if report.ok() {
                Ok(Ok(()))
            } else {
                Ok(Err(format!(
                    "rollups of group {group} differ from raw samples; see docs/runbooks/rollups.md"
                )))
            }
        }
        RollupsCommand::Backfill { group, from } => {
            let from = from.unwrap_or_else(|| config.raw_cutoff(Utc::now()));
            let started = std::time::Instant::now();
            let report = backfill(pool, &config, from, group, |line| eprintln!("{line}")).await?;
            println!(
                "backfilled {} hours ({} buckets) and recomputed {} groups in {:.1} s",
                report.hours,
                report.buckets,
                report.groups,
                started.elapsed().as_secs_f64()
            );
            Ok(Ok(()))
        }
    }
}
