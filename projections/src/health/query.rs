//! Health series of a group: from rollups, or computed from raw samples (bounded fallback).

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::refresh::EFFECTIVE_MEMBERS;
use super::{p95_of_bins, sql_bin, BucketSize, MemberKind, BINS};
use crate::StoreError;

/// Most buckets one series may hold (7 days of 5-minute buckets, 84 days of hourly ones).
pub const MAX_BUCKETS: i64 = 2016;
/// Longest window computed from raw samples.
pub const MAX_RAW_WINDOW: TimeDelta = TimeDelta::hours(24);

/// Where a series came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Source {
    /// The group rollups.
    Rollup,
    /// Raw samples, over the group's current effective members.
    Raw,
}

/// Which source the caller wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourcePreference {
    /// Rollups when the group has them, else raw samples for windows up to 24 hours.
    #[default]
    Auto,
    /// Rollups only.
    Rollup,
    /// Raw samples only (windows up to 24 hours).
    Raw,
}

/// avg / max / p95 of one metric in a bucket. p95 is the 95th percentile of the reporting
/// members' bucket averages, to 1 percentage point (rounded down).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    /// Mean of all samples.
    pub avg: f64,
    /// Largest sample.
    pub max: f64,
    /// See the type docs.
    pub p95: f64,
}

/// Service availability in a bucket, counted in services: a service is down when any of its
/// checks in the bucket failed, up when all passed, unknown when it reported nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Availability {
    /// `100 * up / (up + down + unknown)`; null when no member service reported.
    pub percent: Option<f64>,
    /// Services up.
    pub up: i64,
    /// Services down.
    pub down: i64,
    /// Member services that reported nothing in the bucket.
    pub unknown: i64,
}

/// One bucket of a series. Metrics are null when no member reported: no data is never
/// shown as healthy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthBucket {
    /// Start of the bucket.
    pub start: DateTime<Utc>,
    /// Samples (device groups) or checks (service groups) in the bucket.
    pub samples: i64,
    /// Devices with at least one sample (device groups).
    pub devices_reporting: i64,
    /// CPU (device groups with data).
    pub cpu: Option<Stat>,
    /// Memory.
    pub memory: Option<Stat>,
    /// Disk.
    pub disk: Option<Stat>,
    /// Availability (service groups only).
    pub availability: Option<Availability>,
}

/// A group's health over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthSeries {
    /// Where it came from.
    pub source: Source,
    /// The group's kind of members.
    #[serde(skip)]
    pub kind: MemberKind,
    /// Bucket size.
    pub bucket: BucketSize,
    /// Start of the first bucket (the window's start, aligned down).
    pub from: DateTime<Utc>,
    /// End of the last bucket (the window's end, aligned up).
    pub to: DateTime<Utc>,
    /// Effective members counted (current).
    pub members: i64,
    /// Every bucket of the window, in order, empty ones included.
    pub buckets: Vec<HealthBucket>,
}

/// Why a series cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// No such group.
    #[error("group {0} not found")]
    NotFound(Uuid),
    /// The window is malformed or too long.
    #[error("{0}")]
    BadWindow(String),
    /// Rollups are missing and the window is too long to compute from raw samples.
    #[error("{0}")]
    NoRollups(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for HealthError {
    fn from(e: sqlx::Error) -> Self {
        HealthError::Store(StoreError::Database(e))
    }
}

/// The aligned window `[from, to)` and its bucket count, or why not.
pub fn aligned_window(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: BucketSize,
) -> Result<(DateTime<Utc>, DateTime<Utc>, i64), HealthError> {
    if to <= from {
        return Err(HealthError::BadWindow("`to` must be after `from`".into()));
    }
    let start = bucket.start_of(from);
    let mut end = bucket.start_of(to);
    if end < to {
        end += bucket.delta();
    }
    let count = (end - start).num_seconds() / bucket.seconds();
    if count > MAX_BUCKETS {
        return Err(HealthError::BadWindow(format!(
            "the window holds {count} buckets; at most {MAX_BUCKETS} (7 days of FIVE_MINUTES, 84 days of ONE_HOUR)"
        )));
    }
    Ok((start, end, count))
}

/// The group's kind of members and, when it has rollups, the members they count.
pub(crate) async fn group_state(
    pool: &PgPool,
    group: Uuid,
) -> Result<(MemberKind, Option<i64>), HealthError> {
    let row: Option<(String, Option<i64>)> = sqlx::query_as(
        "SELECT g.group_type, h.members FROM rm_group_tree.groups g
           LEFT JOIN health_groups h ON h.group_id = g.id
          WHERE g.id = $1",
    )
    .bind(group)
    .fetch_optional(pool)
    .await?;
    let (group_type, members) = row.ok_or(HealthError::NotFound(group))?;
    let kind = MemberKind::of_group_type(&group_type).ok_or(HealthError::NotFound(group))?;
    Ok((kind, members))
}

/// The health of `group` over `[from, to)` in `bucket` buckets (see the module docs).
pub async fn group_health(
    pool: &PgPool,
    group: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: BucketSize,
    pref: SourcePreference,
) -> Result<HealthSeries, HealthError> {
    let (start, end, count) = aligned_window(from, to, bucket)?;
    let (kind, members) = group_state(pool, group).await?;
    let raw_ok = end - start <= MAX_RAW_WINDOW;
    let source = match (pref, members.is_some()) {
        (SourcePreference::Raw, _) | (SourcePreference::Auto, false) => {
            if !raw_ok {
                return Err(if members.is_none() {
                    HealthError::NoRollups(format!(
                        "group {group} has no rollups yet (its first refresh is pending); windows of at most 24 hours are computed from raw samples"
                    ))
                } else {
                    HealthError::BadWindow(
                        "windows computed from raw samples are at most 24 hours".into(),
                    )
                });
            }
            Source::Raw
        }
        (SourcePreference::Rollup, false) => {
            return Err(HealthError::NoRollups(format!(
                "group {group} has no rollups yet (its first refresh is pending)"
            )))
        }
        (_, true) => Source::Rollup,
    };
    let (members, rows) = match source {
        Source::Rollup => (
            members.unwrap_or(0),
            rollup_rows(pool, group, bucket, start, end).await?,
        ),
        Source::Raw => raw_rows(pool, group, kind, bucket, start, end).await?,
    };
    let mut by_start: HashMap<DateTime<Utc>, RowValues> =
        rows.into_iter().map(|r| (r.start, r)).collect();
    let mut buckets = Vec::with_capacity(count as usize);
    let mut at = start;
    while at < end {
        let values = by_start.remove(&at).unwrap_or(RowValues::empty(at));
        buckets.push(values.into_bucket(kind, members));
        at += bucket.delta();
    }
    Ok(HealthSeries {
        source,
        kind,
        bucket,
        from: start,
        to: end,
        members,
        buckets,
    })
}

/// One bucket's stored (or computed) values.
#[derive(Debug, Clone)]
pub(crate) struct RowValues {
    pub start: DateTime<Utc>,
    pub samples: i64,
    pub devices: i64,
    pub sums: [f64; 3],
    pub maxes: [Option<f32>; 3],
    pub bins: [Vec<i32>; 3],
    pub up: i64,
    pub down: i64,
}

impl RowValues {
    fn empty(start: DateTime<Utc>) -> Self {
        RowValues {
            start,
            samples: 0,
            devices: 0,
            sums: [0.0; 3],
            maxes: [None; 3],
            bins: [vec![], vec![], vec![]],
            up: 0,
            down: 0,
        }
    }

    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let bins = |name: &str| -> Result<Vec<i32>, sqlx::Error> {
            Ok(row
                .try_get::<Option<Vec<i32>>, _>(name)?
                .unwrap_or_default())
        };
        Ok(RowValues {
            start: row.try_get("bucket_start")?,
            samples: row.try_get("samples")?,
            devices: i64::from(row.try_get::<i32, _>("devices_reporting")?),
            sums: [
                row.try_get("cpu_sum")?,
                row.try_get("mem_sum")?,
                row.try_get("disk_sum")?,
            ],
            maxes: [
                row.try_get("cpu_max")?,
                row.try_get("mem_max")?,
                row.try_get("disk_max")?,
            ],
            bins: [bins("cpu_bins")?, bins("mem_bins")?, bins("disk_bins")?],
            up: i64::from(row.try_get::<i32, _>("services_up")?),
            down: i64::from(row.try_get::<i32, _>("services_down")?),
        })
    }

    fn into_bucket(self, kind: MemberKind, members: i64) -> HealthBucket {
        let stat = |m: usize| -> Option<Stat> {
            if self.samples == 0 || self.devices == 0 {
                return None;
            }
            Some(Stat {
                avg: self.sums[m] / self.samples as f64,
                max: f64::from(self.maxes[m]?),
                p95: p95_of_bins(&self.bins[m])?,
            })
        };
        match kind {
            MemberKind::Device => HealthBucket {
                start: self.start,
                samples: self.samples,
                devices_reporting: self.devices,
                cpu: stat(0),
                memory: stat(1),
                disk: stat(2),
                availability: None,
            },
            MemberKind::Service => {
                let total = members.max(self.up + self.down);
                let unknown = total - self.up - self.down;
                HealthBucket {
                    start: self.start,
                    samples: self.samples,
                    devices_reporting: 0,
                    cpu: None,
                    memory: None,
                    disk: None,
                    availability: Some(Availability {
                        percent: (self.up + self.down > 0)
                            .then(|| 100.0 * self.up as f64 / total as f64),
                        up: self.up,
                        down: self.down,
                        unknown,
                    }),
                }
            }
        }
    }
}

/// The stored rollup rows of a window.
pub(crate) async fn rollup_rows(
    pool: &PgPool,
    group: Uuid,
    bucket: BucketSize,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<RowValues>, HealthError> {
    let rows = sqlx::query(
        "SELECT bucket_start, CASE WHEN checks > 0 THEN checks ELSE samples END AS samples,
                devices_reporting, cpu_sum, cpu_max, cpu_bins, mem_sum, mem_max, mem_bins,
                disk_sum, disk_max, disk_bins, services_up, services_down
           FROM health_rollups
          WHERE group_id = $1 AND bucket_size = $2 AND bucket_start >= $3 AND bucket_start < $4
          ORDER BY bucket_start",
    )
    .bind(group)
    .bind(bucket.column())
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(RowValues::from_row)
        .collect::<Result<_, _>>()?)
}

/// Computes rollup-shaped rows from raw samples over the group's current effective members;
/// returns the member count too.
pub(crate) async fn raw_rows(
    pool: &PgPool,
    group: Uuid,
    kind: MemberKind,
    bucket: BucketSize,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(i64, Vec<RowValues>), HealthError> {
    let mut tx = pool.begin().await?;
    // One snapshot for the member count and the samples.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let members: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM ({EFFECTIVE_MEMBERS}) e"))
        .bind(group)
        .fetch_one(&mut *tx)
        .await?;
    let bin_expr = |m: &str| sql_bin(&format!("p.{m}_sum / p.n"));
    let last = BINS - 1;
    let sql = match kind {
        MemberKind::Device => format!(
            "WITH m AS MATERIALIZED ({EFFECTIVE_MEMBERS}),
                  p AS MATERIALIZED (
                      SELECT date_bin(make_interval(secs => $2), t.ts, timestamptz 'epoch') AS bs,
                             t.device_id, count(*) AS n,
                             sum(t.cpu_percent::float8) AS cpu_sum, max(t.cpu_percent) AS cpu_max,
                             sum(t.mem_percent::float8) AS mem_sum, max(t.mem_percent) AS mem_max,
                             sum(t.disk_percent::float8) AS disk_sum, max(t.disk_percent) AS disk_max
                        FROM telemetry_sysmon t JOIN m ON t.device_id = m.id
                       WHERE t.ts >= $3 AND t.ts < $4
                       GROUP BY 1, 2),
                  h AS (
                      SELECT p.bs, v.metric, v.bin, count(*)::int AS k
                        FROM p CROSS JOIN LATERAL (VALUES (1, {c}), (2, {mm}), (3, {d})) AS v(metric, bin)
                       GROUP BY 1, 2, 3),
                  dense AS (
                      SELECT b.bs, v.metric, array_agg(coalesce(h.k, 0) ORDER BY s.i) AS arr
                        FROM (SELECT DISTINCT bs FROM p) b
                       CROSS JOIN (VALUES (1), (2), (3)) AS v(metric)
                       CROSS JOIN generate_series(0, {last}) AS s(i)
                        LEFT JOIN h ON h.bs = b.bs AND h.metric = v.metric AND h.bin = s.i
                       GROUP BY 1, 2)
             SELECT p.bs AS bucket_start, sum(p.n)::bigint AS samples,
                    count(*)::int AS devices_reporting,
                    sum(p.cpu_sum) AS cpu_sum, max(p.cpu_max) AS cpu_max,
                    (SELECT arr FROM dense WHERE dense.bs = p.bs AND metric = 1) AS cpu_bins,
                    sum(p.mem_sum) AS mem_sum, max(p.mem_max) AS mem_max,
                    (SELECT arr FROM dense WHERE dense.bs = p.bs AND metric = 2) AS mem_bins,
                    sum(p.disk_sum) AS disk_sum, max(p.disk_max) AS disk_max,
                    (SELECT arr FROM dense WHERE dense.bs = p.bs AND metric = 3) AS disk_bins,
                    0 AS services_up, 0 AS services_down
               FROM p GROUP BY p.bs ORDER BY p.bs",
            c = bin_expr("cpu"),
            mm = bin_expr("mem"),
            d = bin_expr("disk"),
        ),
        MemberKind::Service => format!(
            "WITH m AS MATERIALIZED ({EFFECTIVE_MEMBERS}),
                  p AS (
                      SELECT date_bin(make_interval(secs => $2), t.ts, timestamptz 'epoch') AS bs,
                             t.service_id, count(*) AS n, bool_or(NOT t.available) AS any_down
                        FROM telemetry_services t JOIN m ON t.service_id = m.id
                       WHERE t.ts >= $3 AND t.ts < $4
                       GROUP BY 1, 2)
             SELECT bs AS bucket_start, sum(n)::bigint AS samples, 0 AS devices_reporting,
                    0::float8 AS cpu_sum, NULL::real AS cpu_max, NULL::int[] AS cpu_bins,
                    0::float8 AS mem_sum, NULL::real AS mem_max, NULL::int[] AS mem_bins,
                    0::float8 AS disk_sum, NULL::real AS disk_max, NULL::int[] AS disk_bins,
                    (count(*) FILTER (WHERE NOT any_down))::int AS services_up,
                    (count(*) FILTER (WHERE any_down))::int AS services_down
               FROM p GROUP BY bs ORDER BY bs"
        ),
    };
    let rows = sqlx::query(&sql)
        .bind(group)
        .bind(bucket.seconds() as f64)
        .bind(start)
        .bind(end)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let values = rows
        .iter()
        .map(RowValues::from_row)
        .collect::<Result<_, _>>()?;
    Ok((members, values))
}
