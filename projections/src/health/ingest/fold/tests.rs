use super::*;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("a time")
        .with_timezone(&Utc)
}

fn sample(device: &str, ts: &str, cpu: f64) -> SysmonSample {
    SysmonSample {
        device_id: device.into(),
        ts: at(ts),
        cpu_percent: cpu,
        mem_percent: 10.0,
        disk_percent: 20.0,
    }
}

const FIVE: i32 = 300;
const HOUR: i32 = 3600;

#[test]
fn samples_fold_into_a_bucket_of_each_size() {
    let samples = [
        sample("d", "2025-03-10T12:01:00Z", 30.0),
        sample("d", "2025-03-10T12:04:00Z", 50.0),
        sample("d", "2025-03-10T12:06:00Z", 10.0),
    ];
    let valid: Vec<&SysmonSample> = samples.iter().collect();
    let b = device_buckets(&valid);
    assert_eq!(b.len(), 3, "two 5-minute buckets and one hour");
    let first = b[&("d".to_string(), FIVE, at("2025-03-10T12:00:00Z"))];
    assert_eq!(first.samples, 2);
    assert_eq!(first.sums, [80.0, 20.0, 40.0]);
    assert_eq!(first.maxes, [50.0, 10.0, 20.0]);
    let hour = b[&("d".to_string(), HOUR, at("2025-03-10T12:00:00Z"))];
    assert_eq!(hour.samples, 3);
    assert_eq!(hour.maxes[0], 50.0);
}

#[test]
fn buckets_fold_the_values_as_stored_in_real() {
    let samples = [sample("d", "2025-03-10T12:01:00Z", 0.1)];
    let valid: Vec<&SysmonSample> = samples.iter().collect();
    let b = device_buckets(&valid);
    let acc = b.values().next().expect("a bucket");
    assert_eq!(acc.sums[0], f64::from(0.1f32));
    assert_ne!(acc.sums[0], 0.1);
}

#[test]
fn checks_count_up_down_and_measured_latency() {
    let check = |ts: &str, available: bool, latency: Option<f64>| ServiceCheck {
        service_id: "s".into(),
        ts: at(ts),
        available,
        latency_ms: latency,
    };
    let checks = [
        check("2025-03-10T12:01:00Z", true, Some(10.0)),
        check("2025-03-10T12:02:00Z", false, None),
        check("2025-03-10T12:03:00Z", true, Some(30.0)),
    ];
    let valid: Vec<&ServiceCheck> = checks.iter().collect();
    let b = service_buckets(&valid);
    assert_eq!(
        b[&("s".to_string(), FIVE, at("2025-03-10T12:00:00Z"))],
        ServiceAcc {
            checks: 3,
            up: 2,
            down: 1,
            latency_sum: 40.0,
            latency_n: 2,
        }
    );
}

fn groups(pairs: &[(&str, &[u128])]) -> HashMap<String, Vec<Uuid>> {
    pairs
        .iter()
        .map(|(id, gs)| {
            (
                id.to_string(),
                gs.iter().map(|&g| Uuid::from_u128(g)).collect(),
            )
        })
        .collect()
}

fn device_bucket(old: Option<(i32, f64)>, samples: i32, cpu_sum: f64) -> DeviceBucket {
    DeviceBucket {
        device: "d".into(),
        size: FIVE,
        start: at("2025-03-10T12:00:00Z"),
        samples,
        sums: [cpu_sum, 0.0, 0.0],
        maxes: [90.0, 0.0, 0.0],
        old_samples: old.map(|o| o.0),
        old_sums: [old.map(|o| o.1), old.map(|_| 0.0), old.map(|_| 0.0)],
    }
}

#[test]
fn a_new_device_bucket_adds_a_reporting_device_to_each_of_its_groups() {
    let g = groups(&[("d", &[1, 2])]);
    let deltas = device_deltas(&[device_bucket(None, 2, 100.0)], &g);
    assert_eq!(deltas.len(), 2);
    let d = &deltas[&(Uuid::from_u128(1), FIVE, at("2025-03-10T12:00:00Z"))];
    assert_eq!((d.samples, d.devices, d.sums[0]), (2, 1, 100.0));
    assert_eq!(d.maxes[0], Some(90.0));
    assert_eq!(d.bins[0][bin_of(50.0)], 1);
    assert_eq!(d.bins[0].iter().sum::<i32>(), 1);
}

#[test]
fn a_grown_device_bucket_adds_only_its_growth_and_moves_its_bin() {
    let g = groups(&[("d", &[1])]);
    // Was 1 sample at 20 %, now 2 samples summing 100 (average 50 %).
    let deltas = device_deltas(&[device_bucket(Some((1, 20.0)), 2, 100.0)], &g);
    let d = deltas.values().next().expect("one group");
    assert_eq!((d.samples, d.devices, d.sums[0]), (1, 0, 80.0));
    assert_eq!(d.bins[0][bin_of(20.0)], -1);
    assert_eq!(d.bins[0][bin_of(50.0)], 1);
}

#[test]
fn entities_no_group_counts_change_no_rollup() {
    let g = groups(&[("other", &[1])]);
    assert!(device_deltas(&[device_bucket(None, 1, 1.0)], &g).is_empty());
}

fn service_bucket(old: Option<(i32, i32)>, up: i32, down: i32, added: i32) -> ServiceBucket {
    ServiceBucket {
        service: "s".into(),
        size: FIVE,
        start: at("2025-03-10T12:00:00Z"),
        up,
        down,
        old_up: old.map(|o| o.0),
        old_down: old.map(|o| o.1),
        added,
    }
}

#[test]
fn a_service_bucket_is_down_when_any_check_failed() {
    assert_eq!(status(5, 1), Some(false));
    assert_eq!(status(5, 0), Some(true));
    assert_eq!(status(0, 0), None);
}

#[test]
fn a_service_going_down_moves_from_up_to_down_in_its_groups() {
    let g = groups(&[("s", &[1])]);
    let deltas = service_deltas(&[service_bucket(Some((3, 0)), 3, 1, 1)], &g);
    let d = deltas.values().next().expect("one group");
    assert_eq!((d.checks, d.up, d.down), (1, -1, 1));
    let deltas = service_deltas(&[service_bucket(None, 2, 0, 2)], &g);
    let d = deltas.values().next().expect("one group");
    assert_eq!(
        (d.checks, d.up, d.down),
        (2, 1, 0),
        "a new bucket only adds"
    );
    let deltas = service_deltas(&[service_bucket(Some((1, 1)), 2, 1, 1)], &g);
    let d = deltas.values().next().expect("one group");
    assert_eq!((d.checks, d.up, d.down), (1, 0, 0), "still down");
}
