use chrono::TimeDelta;

use super::*;
use crate::health::ingest::MAX_REPORTED_REJECTIONS;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-03-10T12:00:00Z")
        .expect("a time")
        .with_timezone(&Utc)
}

fn sample(device: &str, cpu: f64) -> SysmonSample {
    SysmonSample {
        device_id: device.into(),
        ts: now(),
        cpu_percent: cpu,
        mem_percent: 50.0,
        disk_percent: 50.0,
    }
}

fn check(service: &str, latency: Option<f64>) -> ServiceCheck {
    ServiceCheck {
        service_id: service.into(),
        ts: now(),
        available: true,
        latency_ms: latency,
    }
}

/// (index, field, code) of each rejection.
fn rejected(report: &IngestReport) -> Vec<(usize, &'static str, Code)> {
    report
        .rejections
        .iter()
        .map(|r| (r.index, r.field, r.code))
        .collect()
}

#[test]
fn valid_samples_are_kept_in_order_and_nothing_is_rejected() {
    let samples = vec![sample("d1", 0.0), sample("d2", 100.0)];
    let (report, valid) = check_sysmon(&samples, &HealthConfig::default(), now());
    assert_eq!(report, IngestReport::default());
    assert_eq!(valid, vec![&samples[0], &samples[1]]);
}

#[test]
fn percentages_outside_0_to_100_are_invalid_and_name_their_field() {
    let mut bad_mem = sample("d", 1.0);
    bad_mem.mem_percent = -0.1;
    let mut bad_disk = sample("d", 1.0);
    bad_disk.disk_percent = f64::INFINITY;
    let samples = vec![
        sample("d", 100.1),
        sample("d", f64::NAN),
        bad_mem,
        bad_disk,
        sample("ok", 5.0),
    ];
    let (report, valid) = check_sysmon(&samples, &HealthConfig::default(), now());
    assert_eq!(
        rejected(&report),
        vec![
            (0, "cpuPercent", Code::Invalid),
            (1, "cpuPercent", Code::Invalid),
            (2, "memPercent", Code::Invalid),
            (3, "diskPercent", Code::Invalid),
        ]
    );
    assert_eq!(report.rejected, 4);
    assert_eq!(valid.len(), 1);
    assert_eq!(valid[0].device_id, "ok");
}

#[test]
fn ids_must_be_non_empty_short_and_free_of_control_characters() {
    let long = "x".repeat(MAX_ID_CHARS + 1);
    let samples = vec![
        sample(" ", 1.0),
        sample(&long, 1.0),
        sample("a\0b", 1.0),
        sample(&"x".repeat(MAX_ID_CHARS), 1.0),
    ];
    let (report, valid) = check_sysmon(&samples, &HealthConfig::default(), now());
    assert_eq!(
        rejected(&report),
        vec![
            (0, "deviceId", Code::Invalid),
            (1, "deviceId", Code::Invalid),
            (2, "deviceId", Code::Invalid),
        ]
    );
    assert!(report.rejections[2].message.contains("control"));
    assert_eq!(valid.len(), 1, "an id of exactly the maximum is fine");
}

#[test]
fn samples_past_the_retention_are_too_old_and_beyond_the_allowed_skew_in_the_future() {
    let config = HealthConfig::default();
    let mut old = sample("d", 1.0);
    old.ts = config.raw_cutoff(now()) - TimeDelta::seconds(1);
    let mut future = sample("d", 1.0);
    future.ts = now() + config.max_future + TimeDelta::seconds(1);
    let mut near_future = sample("d", 1.0);
    near_future.ts = now() + config.max_future;
    let samples = vec![old, future, near_future];
    let (report, valid) = check_sysmon(&samples, &config, now());
    assert_eq!(
        rejected(&report),
        vec![(0, "ts", Code::TooOld), (1, "ts", Code::InFuture)]
    );
    assert_eq!(valid.len(), 1);
}

#[test]
fn a_sample_is_rejected_once_for_its_first_bad_field() {
    let mut s = sample("", 500.0);
    s.ts = now() + TimeDelta::days(1);
    let (report, _) = check_sysmon(&[s], &HealthConfig::default(), now());
    assert_eq!(rejected(&report), vec![(0, "deviceId", Code::Invalid)]);
}

#[test]
fn latencies_must_be_from_0_to_an_hour_and_may_be_absent() {
    let checks = vec![
        check("s", None),
        check("s", Some(0.0)),
        check("s", Some(3_600_000.0)),
        check("s", Some(3_600_000.5)),
        check("s", Some(-1.0)),
        check("", Some(-1.0)),
    ];
    let (report, valid) = check_services(&checks, &HealthConfig::default(), now());
    assert_eq!(
        rejected(&report),
        vec![
            (3, "latencyMs", Code::Invalid),
            (4, "latencyMs", Code::Invalid),
            (5, "serviceId", Code::Invalid),
        ]
    );
    assert_eq!(valid.len(), 3);
}

#[test]
fn every_rejection_is_counted_but_only_the_first_hundred_are_listed() {
    let samples: Vec<SysmonSample> = (0..MAX_REPORTED_REJECTIONS + 5)
        .map(|_| sample("d", -1.0))
        .collect();
    let (report, valid) = check_sysmon(&samples, &HealthConfig::default(), now());
    assert!(valid.is_empty());
    assert_eq!(report.rejected, (MAX_REPORTED_REJECTIONS + 5) as u64);
    assert_eq!(report.rejections.len(), MAX_REPORTED_REJECTIONS);
}

#[test]
fn unknown_ids_are_dropped_and_counted_per_id() {
    let samples = [
        sample("b", 1.0),
        sample("x", 1.0),
        sample("a", 1.0),
        sample("x", 2.0),
    ];
    let mut valid: Vec<&SysmonSample> = samples.iter().collect();
    assert_eq!(distinct_ids(&valid, |s| &s.device_id), vec!["a", "b", "x"]);
    let known: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
    let unknown = keep_known(&mut valid, &known, |s| &s.device_id);
    assert_eq!(unknown, BTreeMap::from([("x".to_string(), 2)]));
    assert_eq!(
        valid
            .iter()
            .map(|s| s.device_id.as_str())
            .collect::<Vec<_>>(),
        vec!["b", "a"]
    );
    let mut report = IngestReport::default();
    report.note_unknown(&unknown);
    assert_eq!(
        (report.unknown, report.unknown_ids),
        (2, vec!["x".to_string()])
    );
}

#[test]
fn a_batch_needs_the_partitions_of_the_days_it_falls_on() {
    let mut late = sample("d", 1.0);
    late.ts = now() - TimeDelta::days(1);
    let samples = [sample("d", 1.0), late, sample("e", 1.0)];
    let valid: Vec<&SysmonSample> = samples.iter().collect();
    let d = days(&valid, |s| s.ts);
    assert_eq!(
        d.into_iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        vec!["2025-03-09", "2025-03-10"]
    );
}
