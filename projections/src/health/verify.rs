//! `corral rollups verify`: rollups against raw samples over a window.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::query::{aligned_window, raw_rows, HealthError, RowValues};
use super::{BucketSize, MemberKind};

/// The outcome of a comparison.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Buckets compared (with data in either source).
    pub buckets: usize,
    /// Samples (or checks) in the raw data.
    pub raw_samples: i64,
    /// Samples (or checks) the rollups count.
    pub rollup_samples: i64,
    /// One line per difference.
    pub mismatches: Vec<String>,
    /// Members per the read models and per the rollups' bookkeeping (a difference means a
    /// refresh is pending).
    pub members: (i64, i64),
}

impl VerifyReport {
    /// Whether rollups and raw samples agree.
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

/// Compares the group's rollups with raw samples over `[from, to)`, bucket by bucket.
pub async fn verify_group(
    pool: &PgPool,
    group: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: BucketSize,
) -> Result<VerifyReport, HealthError> {
    let (start, end, _) = aligned_window(from, to, bucket)?;
    let (kind, counted) = super::query::group_state(pool, group).await?;
    let Some(counted) = counted else {
        return Err(HealthError::NoRollups(format!(
            "group {group} has no rollups yet (its first refresh is pending)"
        )));
    };
    let (members, raw) = raw_rows(pool, group, kind, bucket, start, end).await?;
    let stored = super::query::rollup_rows(pool, group, bucket, start, end).await?;
    let mut report = VerifyReport {
        members: (members, counted),
        ..VerifyReport::default()
    };
    if members != counted {
        report.mismatches.push(format!(
            "the group has {members} effective members but its rollups count {counted}: a refresh is pending or lost (corral rollups backfill --group {group})"
        ));
    }
    let mut raw_by: std::collections::BTreeMap<DateTime<Utc>, RowValues> =
        raw.into_iter().map(|r| (r.start, r)).collect();
    let mut stored_by: std::collections::BTreeMap<DateTime<Utc>, RowValues> =
        stored.into_iter().map(|r| (r.start, r)).collect();
    let starts: std::collections::BTreeSet<DateTime<Utc>> =
        raw_by.keys().chain(stored_by.keys()).copied().collect();
    for at in starts {
        report.buckets += 1;
        let r = raw_by.remove(&at);
        let s = stored_by.remove(&at);
        let when = at.to_rfc3339();
        let (r, s) = match (r, s) {
            (Some(r), Some(s)) => (r, s),
            (Some(r), None) => {
                report.raw_samples += r.samples;
                report
                    .mismatches
                    .push(format!("{when}: {} raw samples, no rollup row", r.samples));
                continue;
            }
            (None, Some(s)) => {
                report.rollup_samples += s.samples;
                if s.samples != 0 {
                    report.mismatches.push(format!(
                        "{when}: rollup counts {} samples, raw has none",
                        s.samples
                    ));
                }
                continue;
            }
            (None, None) => continue,
        };
        report.raw_samples += r.samples;
        report.rollup_samples += s.samples;
        let mut diff = |what: &str, a: String, b: String| {
            report
                .mismatches
                .push(format!("{when}: {what}: raw {a}, rollup {b}"));
        };
        if r.samples != s.samples {
            diff("samples", r.samples.to_string(), s.samples.to_string());
        }
        match kind {
            MemberKind::Device => {
                if r.devices != s.devices {
                    diff(
                        "devices reporting",
                        r.devices.to_string(),
                        s.devices.to_string(),
                    );
                }
                for (m, name) in ["cpu", "memory", "disk"].iter().enumerate() {
                    if !close(r.sums[m], s.sums[m]) {
                        diff(
                            &format!("{name} sum"),
                            r.sums[m].to_string(),
                            s.sums[m].to_string(),
                        );
                    }
                    if r.maxes[m] != s.maxes[m] {
                        diff(
                            &format!("{name} max"),
                            format!("{:?}", r.maxes[m]),
                            format!("{:?}", s.maxes[m]),
                        );
                    }
                    if r.bins[m] != s.bins[m] {
                        diff(
                            &format!("{name} p95 bins"),
                            format!("{:?}", r.bins[m]),
                            format!("{:?}", s.bins[m]),
                        );
                    }
                }
            }
            MemberKind::Service => {
                if (r.up, r.down) != (s.up, s.down) {
                    diff(
                        "services up/down",
                        format!("{}/{}", r.up, r.down),
                        format!("{}/{}", s.up, s.down),
                    );
                }
            }
        }
    }
    Ok(report)
}
