//! Telemetry ingest mutations and group health series.

use async_graphql::{Context, Enum, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use corral_domain::codes::Code;
use corral_projections::health::{
    self as store,
    query::{HealthError, Source, SourcePreference},
    BucketSize, HealthConfig, IngestReport, MAX_INGEST_BATCH,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error_codes::ErrorCode;
use crate::graphql::errors::{coded, internal, UserError};

/// Rollup bucket sizes.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum HealthBucketSize {
    /// 5 minutes.
    FiveMinutes,
    /// 1 hour.
    OneHour,
}

impl From<HealthBucketSize> for BucketSize {
    fn from(b: HealthBucketSize) -> Self {
        match b {
            HealthBucketSize::FiveMinutes => BucketSize::FiveMinutes,
            HealthBucketSize::OneHour => BucketSize::OneHour,
        }
    }
}

impl From<BucketSize> for HealthBucketSize {
    fn from(b: BucketSize) -> Self {
        match b {
            BucketSize::FiveMinutes => HealthBucketSize::FiveMinutes,
            BucketSize::OneHour => HealthBucketSize::OneHour,
        }
    }
}

/// Where a health series came from.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum HealthSource {
    /// The group rollups.
    Rollup,
    /// Raw samples over the group's current effective members (windows up to 24 hours).
    Raw,
}

impl From<Source> for HealthSource {
    fn from(s: Source) -> Self {
        match s {
            Source::Rollup => HealthSource::Rollup,
            Source::Raw => HealthSource::Raw,
        }
    }
}

/// avg / max / p95 of a metric in percent. `p95` is the 95th percentile of the reporting
/// devices' bucket averages, to one percentage point (rounded down).
#[derive(SimpleObject, Clone, Copy)]
pub struct MetricStat {
    /// Mean of every sample in the bucket.
    pub avg: f64,
    /// Largest sample.
    pub max: f64,
    /// See the type description.
    pub p95: f64,
}

impl From<store::Stat> for MetricStat {
    fn from(s: store::Stat) -> Self {
        MetricStat {
            avg: s.avg,
            max: s.max,
            p95: s.p95,
        }
    }
}

/// Service availability in a bucket, counted in services: down when any of its checks
/// failed, up when all passed, unknown when it reported nothing.
#[derive(SimpleObject, Clone, Copy)]
pub struct ServiceAvailability {
    /// `100 * up / (up + down + unknown)`: services that reported nothing count against it.
    /// Null when no member service reported in the bucket.
    pub percent: Option<f64>,
    /// Services up.
    pub up: i64,
    /// Services down.
    pub down: i64,
    /// Member services without a check in the bucket.
    pub unknown: i64,
}

/// One bucket. Metrics are null when no member reported: no data is never healthy.
#[derive(SimpleObject, Clone)]
pub struct HealthBucket {
    /// Start of the bucket.
    pub start: DateTime<Utc>,
    /// Samples (device groups) or checks (service groups) in the bucket.
    pub samples: i64,
    /// CPU (device groups).
    pub cpu: Option<MetricStat>,
    /// Memory (device groups).
    pub memory: Option<MetricStat>,
    /// Disk (device groups).
    pub disk: Option<MetricStat>,
    /// Devices with at least one sample in the bucket (device groups).
    pub devices_reporting: i64,
    /// Availability (service groups; null for device groups).
    pub availability: Option<ServiceAvailability>,
}

/// A group's health over a window.
#[derive(SimpleObject, Clone)]
pub struct GroupHealth {
    /// `ROLLUP`, or `RAW` when computed from raw samples.
    pub source: HealthSource,
    /// Bucket size.
    pub bucket: HealthBucketSize,
    /// Start of the first bucket (the window's start, aligned down).
    pub from: DateTime<Utc>,
    /// End of the last bucket (the window's end, aligned up).
    pub to: DateTime<Utc>,
    /// Effective members counted.
    pub members: i64,
    /// Every bucket of the window, oldest first, empty ones included.
    pub buckets: Vec<HealthBucket>,
}

impl From<store::HealthSeries> for GroupHealth {
    fn from(s: store::HealthSeries) -> Self {
        GroupHealth {
            source: s.source.into(),
            bucket: s.bucket.into(),
            from: s.from,
            to: s.to,
            members: s.members,
            buckets: s
                .buckets
                .into_iter()
                .map(|b| HealthBucket {
                    start: b.start,
                    samples: b.samples,
                    cpu: b.cpu.map(Into::into),
                    memory: b.memory.map(Into::into),
                    disk: b.disk.map(Into::into),
                    devices_reporting: b.devices_reporting,
                    availability: b.availability.map(|a| ServiceAvailability {
                        percent: a.percent,
                        up: a.up,
                        down: a.down,
                        unknown: a.unknown,
                    }),
                })
                .collect(),
        }
    }
}

/// The health series of a group, with errors mapped to coded GraphQL errors. Shared by
/// `Group.health` and dashboard widgets.
pub async fn load_health(
    pool: &PgPool,
    group: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: BucketSize,
    source: Option<HealthSource>,
) -> Result<GroupHealth> {
    let pref = match source {
        None => SourcePreference::Auto,
        Some(HealthSource::Rollup) => SourcePreference::Rollup,
        Some(HealthSource::Raw) => SourcePreference::Raw,
    };
    match store::group_health(pool, group, from, to, bucket, pref).await {
        Ok(series) => Ok(series.into()),
        Err(HealthError::NotFound(id)) => {
            Err(coded(ErrorCode::NotFound, format!("group {id} not found")))
        }
        Err(HealthError::BadWindow(m)) => Err(coded(ErrorCode::BadRequest, m)),
        Err(HealthError::NoRollups(m)) => Err(coded(ErrorCode::NoRollups, m)),
        Err(HealthError::Store(e)) => Err(internal(e)),
    }
}

/// One sysmon sample.
#[derive(InputObject)]
pub struct SysmonSampleInput {
    /// The device's id (`devices.id`); samples of unknown devices are counted, not stored.
    pub device_id: String,
    /// When it was measured: within the telemetry retention (7 days by default) and at most
    /// 5 minutes ahead.
    pub ts: DateTime<Utc>,
    /// CPU use, 0-100.
    pub cpu_percent: f64,
    /// Memory use, 0-100.
    pub mem_percent: f64,
    /// Disk use, 0-100.
    pub disk_percent: f64,
}

/// One service check.
#[derive(InputObject)]
pub struct ServiceCheckInput {
    /// The service's id (`services.id`); checks of unknown services are counted, not stored.
    pub service_id: String,
    /// When it was checked (as for samples).
    pub ts: DateTime<Utc>,
    /// Whether the service answered.
    pub available: bool,
    /// Response time, 0-3,600,000 ms.
    pub latency_ms: Option<f64>,
}

/// Input of `ingestSysmon`.
#[derive(InputObject)]
pub struct IngestSysmonInput {
    /// At most 5000 samples.
    pub samples: Vec<SysmonSampleInput>,
}

/// Input of `ingestServiceChecks`.
#[derive(InputObject)]
pub struct IngestServiceChecksInput {
    /// At most 5000 checks.
    pub checks: Vec<ServiceCheckInput>,
}

/// What an ingest call did. Valid samples are stored even when others are rejected.
#[derive(SimpleObject, Default)]
pub struct IngestTelemetryPayload {
    /// Samples stored.
    pub accepted: i64,
    /// Samples of devices or services the inventory does not know: counted, not stored.
    pub unknown: i64,
    /// Those ids (at most 100).
    pub unknown_ids: Vec<String>,
    /// Invalid samples (not stored); the first 100 are listed in `userErrors`.
    pub rejected: i64,
    /// One per rejected sample (`field` like `samples[3].cpuPercent`, code `INVALID`,
    /// `TOO_OLD` or `IN_FUTURE`), or `TOO_MANY` when the call carried more than 5000 (then
    /// nothing was stored).
    pub user_errors: Vec<UserError>,
}

fn ingest_payload(list: &str, report: IngestReport) -> IngestTelemetryPayload {
    IngestTelemetryPayload {
        accepted: report.accepted as i64,
        unknown: report.unknown as i64,
        unknown_ids: report.unknown_ids,
        rejected: report.rejected as i64,
        user_errors: report
            .rejections
            .into_iter()
            .map(|r| {
                UserError::new(
                    Some(&format!("{list}[{}].{}", r.index, r.field)),
                    r.code,
                    r.message,
                )
            })
            .collect(),
    }
}

fn too_many(list: &str, n: usize) -> IngestTelemetryPayload {
    IngestTelemetryPayload {
        user_errors: vec![UserError::new(
            Some(list),
            Code::TooMany,
            format!("at most {MAX_INGEST_BATCH} per call, got {n}"),
        )],
        ..Default::default()
    }
}

/// Telemetry ingest (operators).
#[derive(Default)]
pub struct HealthMutation;

#[Object]
impl HealthMutation {
    /// Stores sysmon samples and updates the rollups of the groups their devices belong to.
    async fn ingest_sysmon(
        &self,
        ctx: &Context<'_>,
        input: IngestSysmonInput,
    ) -> Result<IngestTelemetryPayload> {
        if input.samples.len() > MAX_INGEST_BATCH {
            return Ok(too_many("samples", input.samples.len()));
        }
        let samples: Vec<store::SysmonSample> = input
            .samples
            .into_iter()
            .map(|s| store::SysmonSample {
                device_id: s.device_id,
                ts: s.ts,
                cpu_percent: s.cpu_percent,
                mem_percent: s.mem_percent,
                disk_percent: s.disk_percent,
            })
            .collect();
        let config = ctx.data_unchecked::<HealthConfig>();
        let report = store::ingest_sysmon(ctx.data_unchecked::<PgPool>(), config, &samples)
            .await
            .map_err(internal)?;
        Ok(ingest_payload("samples", report))
    }

    /// Stores service checks and updates the rollups of the groups their services belong to.
    async fn ingest_service_checks(
        &self,
        ctx: &Context<'_>,
        input: IngestServiceChecksInput,
    ) -> Result<IngestTelemetryPayload> {
        if input.checks.len() > MAX_INGEST_BATCH {
            return Ok(too_many("checks", input.checks.len()));
        }
        let checks: Vec<store::ServiceCheck> = input
            .checks
            .into_iter()
            .map(|c| store::ServiceCheck {
                service_id: c.service_id,
                ts: c.ts,
                available: c.available,
                latency_ms: c.latency_ms,
            })
            .collect();
        let config = ctx.data_unchecked::<HealthConfig>();
        let report = store::ingest_services(ctx.data_unchecked::<PgPool>(), config, &checks)
            .await
            .map_err(internal)?;
        Ok(ingest_payload("checks", report))
    }
}
