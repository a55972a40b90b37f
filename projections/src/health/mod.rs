//! Group health: telemetry ingest, per-entity buckets, group rollups over effective
//! membership, their refresh when membership or the tree changes, and the health series that
//! GraphQL serves (from rollups, or from raw samples as a bounded fallback).
//!
//! How the pieces fit (docs/architecture.md, "Health"):
//! - ingest validates samples, drops those of unknown devices or services (counting them in
//!   `telemetry_unknown`), stores the rest in the daily partitions of `telemetry_sysmon` /
//!   `telemetry_services`, folds them into per-entity buckets and adds the buckets' change to
//!   the rollups of every group in `health_members` that counts the entity, in one
//!   transaction;
//! - the `health` projector queues groups whose effective membership may have changed
//!   (`health_dirty`); the refresh worker diffs each one's effective members (read models)
//!   against `health_members` and adds the buckets of members that joined, or recomputes the
//!   group from the buckets of its members when some left;
//! - ingest and refresh take one advisory lock ([`Lock::Health`](crate::locks::Lock::Health)), so a refresh never misses
//!   a sample that an ingest mapped with the old membership.

pub mod backfill;
pub mod ingest;
pub mod projector;
pub mod query;
pub mod refresh;
pub mod retention;
pub mod verify;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

pub use ingest::{
    ingest_services, ingest_sysmon, IngestReport, Rejection, ServiceCheck, SysmonSample,
};
pub use projector::HealthProjection;
pub use query::{group_health, Availability, HealthBucket, HealthError, HealthSeries, Stat};
pub use refresh::{refresh_group, RefreshOutcome};

/// Most samples or checks one ingest call takes.
pub const MAX_INGEST_BATCH: usize = 5000;

/// Number of 1-point bins (0..=100) that rollups keep for p95.
pub const BINS: usize = 101;

/// Rollup bucket sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BucketSize {
    /// 5 minutes.
    FiveMinutes,
    /// 1 hour.
    OneHour,
}

impl BucketSize {
    /// Both sizes.
    pub const ALL: [BucketSize; 2] = [BucketSize::FiveMinutes, BucketSize::OneHour];

    /// Length in seconds (the stored `bucket_size`).
    pub fn seconds(self) -> i64 {
        match self {
            BucketSize::FiveMinutes => 300,
            BucketSize::OneHour => 3600,
        }
    }

    /// The stored value as a column type.
    pub fn column(self) -> i32 {
        self.seconds() as i32
    }

    /// The start of the bucket holding `ts` (buckets are aligned on the Unix epoch).
    pub fn start_of(self, ts: DateTime<Utc>) -> DateTime<Utc> {
        let secs = ts.timestamp();
        let start = secs - secs.rem_euclid(self.seconds());
        DateTime::from_timestamp(start, 0).unwrap_or(ts)
    }

    /// The length as a duration.
    pub fn delta(self) -> TimeDelta {
        TimeDelta::seconds(self.seconds())
    }
}

/// What kind of members a group's rollups count (its group type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberKind {
    /// Device groups: sysmon samples.
    Device,
    /// Service groups: service checks.
    Service,
}

impl MemberKind {
    /// The stored code (`D`, `S`).
    pub fn code(self) -> &'static str {
        match self {
            MemberKind::Device => "D",
            MemberKind::Service => "S",
        }
    }

    /// From a group type as stored (`DEVICE`, `SERVICE`).
    pub fn of_group_type(group_type: &str) -> Option<Self> {
        match group_type {
            "DEVICE" => Some(MemberKind::Device),
            "SERVICE" => Some(MemberKind::Service),
            _ => None,
        }
    }
}

/// Settings of ingest, retention and refresh.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// How long raw samples (and per-entity buckets) are kept: `CORRAL_TELEMETRY_RETENTION_DAYS`,
    /// default 7 days. Samples older than this are rejected at ingest.
    pub raw_retention: TimeDelta,
    /// How long group rollups are kept: `CORRAL_ROLLUP_RETENTION_DAYS`, default 90 days.
    pub rollup_retention: TimeDelta,
    /// How far in the future a sample may be stamped (clock skew), default 5 minutes.
    pub max_future: TimeDelta,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            raw_retention: TimeDelta::days(7),
            rollup_retention: TimeDelta::days(90),
            max_future: TimeDelta::minutes(5),
        }
    }
}

impl HealthConfig {
    /// The oldest sample time ingest accepts (and refreshes recompute from) at `now`.
    pub fn raw_cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.raw_retention
    }
}

/// How a rollup row absorbs another for the same key: counts and sums add, maxima take the
/// greater, bins add element-wise (a NULL side leaves the other as it is).
pub(crate) const ROLLUP_ADD: &str = "ON CONFLICT (group_id, bucket_size, bucket_start) DO UPDATE
    SET samples = r.samples + EXCLUDED.samples,
        devices_reporting = r.devices_reporting + EXCLUDED.devices_reporting,
        cpu_sum = r.cpu_sum + EXCLUDED.cpu_sum,
        cpu_max = greatest(r.cpu_max, EXCLUDED.cpu_max),
        cpu_bins = corral_bins_add(r.cpu_bins, EXCLUDED.cpu_bins),
        mem_sum = r.mem_sum + EXCLUDED.mem_sum,
        mem_max = greatest(r.mem_max, EXCLUDED.mem_max),
        mem_bins = corral_bins_add(r.mem_bins, EXCLUDED.mem_bins),
        disk_sum = r.disk_sum + EXCLUDED.disk_sum,
        disk_max = greatest(r.disk_max, EXCLUDED.disk_max),
        disk_bins = corral_bins_add(r.disk_bins, EXCLUDED.disk_bins),
        checks = r.checks + EXCLUDED.checks,
        services_up = r.services_up + EXCLUDED.services_up,
        services_down = r.services_down + EXCLUDED.services_down";

/// The bin (0..=100) of a bucket average. A tiny epsilon keeps averages that are integers up
/// to rounding error (49.999999999) in the bin of that integer; SQL uses the same rule
/// (`corral_bin` in queries).
pub fn bin_of(avg: f64) -> usize {
    let b = (avg + 1e-9).floor();
    if b.is_nan() || b < 0.0 {
        0
    } else if b > 100.0 {
        100
    } else {
        b as usize
    }
}

/// The same rule as [`bin_of`], in SQL, for an expression `avg`.
pub(crate) fn sql_bin(avg: &str) -> String {
    format!("least(100, greatest(0, floor(({avg}) + 1e-9)))::int")
}

/// The 95th percentile of a bin histogram: the smallest bin whose cumulative count reaches
/// 95% of the total (`percentile_disc(0.95)` over the binned values); `None` when empty.
pub fn p95_of_bins(bins: &[i32]) -> Option<f64> {
    let total: i64 = bins.iter().map(|&n| i64::from(n.max(0))).sum();
    if total == 0 {
        return None;
    }
    let rank = (0.95 * total as f64).ceil() as i64;
    let mut cumulative = 0i64;
    for (i, &n) in bins.iter().enumerate() {
        cumulative += i64::from(n.max(0));
        if cumulative >= rank {
            return Some(i as f64);
        }
    }
    Some((bins.len().saturating_sub(1)) as f64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn buckets_align_on_the_epoch() {
        let ts = DateTime::parse_from_rfc3339("2026-12-04T10:07:31Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            BucketSize::FiveMinutes.start_of(ts).to_rfc3339(),
            "2026-12-04T10:05:00+00:00"
        );
        assert_eq!(
            BucketSize::OneHour.start_of(ts).to_rfc3339(),
            "2026-12-04T10:00:00+00:00"
        );
    }

    #[test]
    fn bins_and_p95() {
        assert_eq!(bin_of(49.999_999_999_9), 50);
        assert_eq!(bin_of(49.5), 49);
        assert_eq!(bin_of(-3.0), 0);
        assert_eq!(bin_of(100.0), 100);
        let mut bins = vec![0; BINS];
        assert_eq!(p95_of_bins(&bins), None);
        // 19 devices at 10, one at 90: rank ceil(19) = 19 is reached at bin 10.
        bins[10] = 19;
        bins[90] = 1;
        assert_eq!(p95_of_bins(&bins), Some(10.0));
        // 18 at 10, 2 at 90: rank 19 needs bin 90.
        bins[10] = 18;
        bins[90] = 2;
        assert_eq!(p95_of_bins(&bins), Some(90.0));
    }
}
