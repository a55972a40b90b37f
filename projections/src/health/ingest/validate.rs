//! Which samples of a batch are stored and which are rejected, and why; which ids the
//! inventory does not know. Pure: no database, tested below.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use corral_domain::codes::Code;

use super::{IngestReport, ServiceCheck, SysmonSample, MAX_ID_CHARS};
use crate::health::HealthConfig;

/// Longest latency accepted, in milliseconds (an hour).
const MAX_LATENCY_MS: f64 = 3_600_000.0;

/// Checks an entity id and timestamp; records a rejection and returns false when bad.
fn check_common(
    report: &mut IngestReport,
    index: usize,
    id_field: &'static str,
    id: &str,
    ts: DateTime<Utc>,
    config: &HealthConfig,
    now: DateTime<Utc>,
) -> bool {
    if id.trim().is_empty() || id.chars().count() > MAX_ID_CHARS {
        report.reject(
            index,
            id_field,
            Code::Invalid,
            format!("must be a non-empty id of at most {MAX_ID_CHARS} characters"),
        );
        return false;
    }
    // No inventory id holds one, and a NUL would fail the whole batch in PostgreSQL.
    if id.chars().any(char::is_control) {
        report.reject(
            index,
            id_field,
            Code::Invalid,
            "must not contain control characters".into(),
        );
        return false;
    }
    if ts < config.raw_cutoff(now) {
        report.reject(
            index,
            "ts",
            Code::TooOld,
            format!(
                "{} is older than the telemetry retention ({} days)",
                ts.to_rfc3339(),
                config.raw_retention.num_days()
            ),
        );
        return false;
    }
    if ts > now + config.max_future {
        report.reject(
            index,
            "ts",
            Code::InFuture,
            format!(
                "{} is more than {} s in the future",
                ts.to_rfc3339(),
                config.max_future.num_seconds()
            ),
        );
        return false;
    }
    true
}

fn check_percent(report: &mut IngestReport, index: usize, field: &'static str, v: f64) -> bool {
    if v.is_finite() && (0.0..=100.0).contains(&v) {
        true
    } else {
        report.reject(
            index,
            field,
            Code::Invalid,
            format!("must be a number from 0 to 100, not {v}"),
        );
        false
    }
}

fn check_latency(report: &mut IngestReport, index: usize, latency: Option<f64>) -> bool {
    match latency {
        Some(l) if !(l.is_finite() && (0.0..=MAX_LATENCY_MS).contains(&l)) => {
            report.reject(
                index,
                "latencyMs",
                Code::Invalid,
                format!("must be a number of milliseconds from 0 to 3600000, not {l}"),
            );
            false
        }
        _ => true,
    }
}

/// The valid samples of a batch (in order), and a report of the rejected ones: at most one
/// rejection per sample, for its first bad field (id, then `ts`, then the percentages).
pub(super) fn check_sysmon<'a>(
    samples: &'a [SysmonSample],
    config: &HealthConfig,
    now: DateTime<Utc>,
) -> (IngestReport, Vec<&'a SysmonSample>) {
    let mut report = IngestReport::default();
    let mut valid = Vec::with_capacity(samples.len());
    for (i, s) in samples.iter().enumerate() {
        if check_common(&mut report, i, "deviceId", &s.device_id, s.ts, config, now)
            && check_percent(&mut report, i, "cpuPercent", s.cpu_percent)
            && check_percent(&mut report, i, "memPercent", s.mem_percent)
            && check_percent(&mut report, i, "diskPercent", s.disk_percent)
        {
            valid.push(s);
        }
    }
    (report, valid)
}

/// The valid checks of a batch (in order), and a report of the rejected ones.
pub(super) fn check_services<'a>(
    checks: &'a [ServiceCheck],
    config: &HealthConfig,
    now: DateTime<Utc>,
) -> (IngestReport, Vec<&'a ServiceCheck>) {
    let mut report = IngestReport::default();
    let mut valid = Vec::with_capacity(checks.len());
    for (i, c) in checks.iter().enumerate() {
        let id_field = "serviceId";
        if check_common(&mut report, i, id_field, &c.service_id, c.ts, config, now)
            && check_latency(&mut report, i, c.latency_ms)
        {
            valid.push(c);
        }
    }
    (report, valid)
}

/// The distinct ids of `valid`, sorted.
pub(super) fn distinct_ids<T>(valid: &[&T], id: impl Fn(&T) -> &str) -> Vec<String> {
    let ids: BTreeSet<&str> = valid.iter().map(|t| id(t)).collect();
    ids.into_iter().map(str::to_string).collect()
}

/// The days (UTC) `valid` falls on: the daily partitions it needs.
pub(super) fn days<T>(valid: &[&T], ts: impl Fn(&T) -> DateTime<Utc>) -> BTreeSet<NaiveDate> {
    valid.iter().map(|t| ts(t).date_naive()).collect()
}

/// Drops from `valid` what the inventory does not know (`known`), and counts it per id.
pub(super) fn keep_known<T>(
    valid: &mut Vec<&T>,
    known: &BTreeSet<String>,
    id: impl Fn(&T) -> &str,
) -> BTreeMap<String, i64> {
    let mut unknown: BTreeMap<String, i64> = BTreeMap::new();
    valid.retain(|t| {
        let ok = known.contains(id(t));
        if !ok {
            *unknown.entry(id(t).to_string()).or_default() += 1;
        }
        ok
    });
    unknown
}

#[cfg(test)]
mod tests;
