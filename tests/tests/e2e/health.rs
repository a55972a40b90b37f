//! Telemetry ingest, group rollups over effective membership, their refresh after membership
//! changes and moves, the raw fallback, verify and retention.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use corral_projections::health::{self, BucketSize, HealthConfig};
use corral_tests::TestApp;
use serde_json::{json, Value};

use super::membership::{add, devices};

const INGEST: &str = "mutation($input: IngestSysmonInput!) { ingestSysmon(input: $input) { accepted unknown unknownIds rejected userErrors { field code message } } }";
const INGEST_CHECKS: &str = "mutation($input: IngestServiceChecksInput!) { ingestServiceChecks(input: $input) { accepted unknown unknownIds rejected userErrors { field code } } }";
const HEALTH: &str = "query($id: ID!, $from: DateTime!, $to: DateTime!, $bucket: HealthBucketSize, $source: HealthSource) { group(id: $id) { health(from: $from, to: $to, bucket: $bucket, source: $source) { source bucket from to members buckets { start samples devicesReporting cpu { avg max p95 } memory { avg max p95 } disk { avg max p95 } availability { percent up down unknown } } } } }";
const MOVE: &str =
    "mutation($input: MoveGroupInput!) { moveGroup(input: $input) { userErrors { code } } }";
const REMOVE: &str = "mutation($input: GroupMembersInput!) { removeGroupMembers(input: $input) { userErrors { code } } }";

/// Waits until the refresh worker has caught up: nothing queued, and `group` counts `members`.
async fn refreshed(app: &TestApp, group: &str, members: i64) {
    let id: uuid::Uuid = group.parse().expect("uuid");
    for _ in 0..200 {
        let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM health_dirty")
            .fetch_one(&app.pool)
            .await
            .expect("queue");
        let counted: Option<i64> =
            sqlx::query_scalar("SELECT members FROM health_groups WHERE group_id = $1")
                .bind(id)
                .fetch_optional(&app.pool)
                .await
                .expect("health_groups");
        if queued == 0 && counted == Some(members) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("group {group} was not refreshed to {members} members");
}

/// A sample value that differs per device and time (never an exact integer average).
fn value(device: usize, step: usize, metric: usize) -> f64 {
    let x = (device * 37 + step * 11 + metric * 53) % 97;
    x as f64 + 0.25 + metric as f64 * 0.1
}

fn samples(ids: &[String], start: DateTime<Utc>, steps: usize) -> Vec<Value> {
    let mut out = vec![];
    for (d, id) in ids.iter().enumerate() {
        for step in 0..steps {
            let ts = start + TimeDelta::seconds(step as i64 * 150);
            out.push(json!({
                "deviceId": id, "ts": ts.to_rfc3339(),
                "cpuPercent": value(d, step, 0), "memPercent": value(d, step, 1),
                "diskPercent": value(d, step, 2),
            }));
        }
    }
    out
}

async fn series(
    app: &TestApp,
    group: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    source: Option<&str>,
) -> Value {
    app.data(
        &app.viewer,
        HEALTH,
        json!({ "id": group, "from": from.to_rfc3339(), "to": to.to_rfc3339(), "bucket": "FIVE_MINUTES", "source": source }),
    )
    .await["group"]["health"]
        .clone()
}

/// Rollups and raw samples give the same series (floats to rounding).
async fn assert_rollup_equals_raw(
    app: &TestApp,
    group: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Value {
    let rollup = series(app, group, from, to, Some("ROLLUP")).await;
    let raw = series(app, group, from, to, Some("RAW")).await;
    assert_eq!(rollup["source"], "ROLLUP");
    assert_eq!(raw["source"], "RAW");
    assert_eq!(rollup["members"], raw["members"]);
    let (a, b) = (
        rollup["buckets"].as_array().unwrap(),
        raw["buckets"].as_array().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x["start"], y["start"]);
        assert_eq!(x["samples"], y["samples"], "bucket {}", x["start"]);
        assert_eq!(
            x["devicesReporting"], y["devicesReporting"],
            "bucket {}",
            x["start"]
        );
        for m in ["cpu", "memory", "disk"] {
            if x[m].is_null() || y[m].is_null() {
                assert_eq!(x[m], y[m], "{m} at {}", x["start"]);
                continue;
            }
            let close =
                |k: &str| (x[m][k].as_f64().unwrap() - y[m][k].as_f64().unwrap()).abs() < 1e-6;
            assert!(
                close("avg") && close("max") && close("p95"),
                "{m} at {}: {} vs {}",
                x["start"],
                x[m],
                y[m]
            );
        }
    }
    rollup
}

#[tokio::test]
async fn rollups_follow_samples_and_effective_membership() {
    let app = TestApp::spawn().await;
    let ids = devices(&app, "hd", 6).await;
    let region = app.create_group("Region", None).await;
    let site_a = app.create_group("SiteA", Some(&region)).await;
    let site_b = app.create_group("SiteB", Some(&region)).await;
    let other = app.create_group("Other", None).await;
    add(&app, &site_a, &ids[0..3]).await;
    add(&app, &site_b, &ids[3..5]).await;
    // d2 also sits directly in Region: effective membership counts it once.
    add(&app, &region, &[ids[5].clone(), ids[2].clone()]).await;
    refreshed(&app, &region, 6).await;
    refreshed(&app, &site_a, 3).await;

    let now = Utc::now();
    let start = BucketSize::FiveMinutes.start_of(now - TimeDelta::minutes(90));
    let mut batch = samples(&ids, start, 20);
    batch.push(json!({ "deviceId": "ghost", "ts": now.to_rfc3339(), "cpuPercent": 1, "memPercent": 1, "diskPercent": 1 }));
    batch.push(json!({ "deviceId": ids[0], "ts": now.to_rfc3339(), "cpuPercent": 150, "memPercent": 1, "diskPercent": 1 }));
    batch.push(json!({ "deviceId": ids[0], "ts": (now - TimeDelta::days(8)).to_rfc3339(), "cpuPercent": 1, "memPercent": 1, "diskPercent": 1 }));
    batch.push(json!({ "deviceId": ids[0], "ts": (now + TimeDelta::hours(1)).to_rfc3339(), "cpuPercent": 1, "memPercent": 1, "diskPercent": 1 }));

    // Operators ingest; viewers may not.
    let denied = app
        .gql(&app.viewer, INGEST, json!({ "input": { "samples": [] } }))
        .await;
    assert_eq!(denied["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let too_many: Vec<Value> = (0..5001).map(|_| batch[0].clone()).collect();
    let p = app
        .data(
            &app.operator,
            INGEST,
            json!({ "input": { "samples": too_many } }),
        )
        .await;
    assert_eq!(p["ingestSysmon"]["userErrors"][0]["code"], "TOO_MANY");
    assert_eq!(p["ingestSysmon"]["accepted"], 0);

    let p = app
        .data(
            &app.operator,
            INGEST,
            json!({ "input": { "samples": batch } }),
        )
        .await;
    let p = &p["ingestSysmon"];
    assert_eq!(p["accepted"], 120);
    assert_eq!(p["unknown"], 1);
    assert_eq!(p["unknownIds"], json!(["ghost"]));
    assert_eq!(p["rejected"], 3);
    let codes: Vec<(&str, &str)> = p["userErrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("samples[121].cpuPercent", "INVALID"),
            ("samples[122].ts", "TOO_OLD"),
            ("samples[123].ts", "IN_FUTURE")
        ]
    );
    let ghost: i64 =
        sqlx::query_scalar("SELECT samples FROM telemetry_unknown WHERE entity_id = 'ghost'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(ghost, 1);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM telemetry_sysmon")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 120);

    // Region by hand: each 5-minute bucket holds 2 samples of each of the 6 devices.
    let from = start - TimeDelta::minutes(10);
    let to = start + TimeDelta::minutes(50);
    let region_series = assert_rollup_equals_raw(&app, &region, from, to).await;
    let buckets = region_series["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 12);
    // Before the first sample: no data, never healthy.
    assert_eq!(buckets[0]["samples"], 0);
    assert_eq!(buckets[0]["devicesReporting"], 0);
    assert!(buckets[0]["cpu"].is_null());
    let first = &buckets[2];
    assert_eq!(first["devicesReporting"], 6);
    assert_eq!(first["samples"], 12);
    let mut cpu = vec![];
    let mut device_avgs = vec![];
    for d in 0..6 {
        let v: Vec<f64> = (0..2).map(|s| value(d, s, 0) as f32 as f64).collect();
        device_avgs.push(((v[0] + v[1]) / 2.0).floor());
        cpu.extend(v);
    }
    let avg = cpu.iter().sum::<f64>() / cpu.len() as f64;
    let max = cpu.iter().cloned().fold(f64::MIN, f64::max);
    device_avgs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // ceil(0.95 * 6) = 6: the largest device average's bin.
    assert!(
        (first["cpu"]["avg"].as_f64().unwrap() - avg).abs() < 1e-4,
        "{first}"
    );
    assert!((first["cpu"]["max"].as_f64().unwrap() - max).abs() < 1e-4);
    assert_eq!(first["cpu"]["p95"].as_f64().unwrap(), device_avgs[5]);
    let a = series(&app, &site_a, from, to, None).await;
    assert_eq!(a["source"], "ROLLUP");
    assert_eq!(a["buckets"][2]["devicesReporting"], 3);

    // A late sample lands in its (old) bucket.
    let late = json!([{ "deviceId": ids[1], "ts": (start + TimeDelta::seconds(10)).to_rfc3339(), "cpuPercent": 99.5, "memPercent": 1, "diskPercent": 1 }]);
    app.data(
        &app.operator,
        INGEST,
        json!({ "input": { "samples": late } }),
    )
    .await;
    let after = assert_rollup_equals_raw(&app, &region, from, to).await;
    assert_eq!(after["buckets"][2]["samples"], 13);
    assert_eq!(after["buckets"][2]["cpu"]["max"].as_f64().unwrap(), 99.5);

    // Moving SiteB out: Region loses d3 and d4 (recomputed), Other gains them (added).
    let m = app
        .data(
            &app.admin,
            MOVE,
            json!({ "input": { "id": site_b, "newParentId": other } }),
        )
        .await;
    assert_eq!(m["moveGroup"]["userErrors"], json!([]));
    refreshed(&app, &region, 4).await;
    refreshed(&app, &other, 2).await;
    let r = assert_rollup_equals_raw(&app, &region, from, to).await;
    assert_eq!(r["buckets"][3]["devicesReporting"], 4);
    let o = assert_rollup_equals_raw(&app, &other, from, to).await;
    assert_eq!(o["buckets"][3]["devicesReporting"], 2);

    // d2 leaves SiteA but stays in Region directly: Region's rollups do not change.
    let rm = app
        .data(
            &app.operator,
            REMOVE,
            json!({ "input": { "groupId": site_a, "memberIds": [ids[2]] } }),
        )
        .await;
    assert_eq!(rm["removeGroupMembers"]["userErrors"], json!([]));
    refreshed(&app, &site_a, 2).await;
    refreshed(&app, &region, 4).await;
    assert_rollup_equals_raw(&app, &site_a, from, to).await;
    assert_eq!(assert_rollup_equals_raw(&app, &region, from, to).await, r);

    // verify agrees, and catches a tampered rollup row.
    let config = HealthConfig::default();
    let gid: uuid::Uuid = region.parse().unwrap();
    let ok = health::verify::verify_group(&app.pool, gid, from, to, BucketSize::OneHour)
        .await
        .unwrap();
    assert!(ok.ok(), "{:?}", ok.mismatches);
    assert!(ok.raw_samples > 0);
    sqlx::query("UPDATE health_rollups SET samples = samples + 1 WHERE group_id = $1 AND bucket_size = 300 AND bucket_start = $2")
        .bind(gid)
        .bind(start)
        .execute(&app.pool)
        .await
        .unwrap();
    let bad = health::verify::verify_group(&app.pool, gid, from, to, BucketSize::FiveMinutes)
        .await
        .unwrap();
    assert_eq!(bad.mismatches.len(), 1, "{:?}", bad.mismatches);
    // Backfill repairs it.
    health::backfill::backfill(&app.pool, &config, start, Some(gid), |_| {})
        .await
        .unwrap();
    let fixed = health::verify::verify_group(&app.pool, gid, from, to, BucketSize::FiveMinutes)
        .await
        .unwrap();
    assert!(fixed.ok(), "{:?}", fixed.mismatches);
    app.shutdown().await;
}

#[tokio::test]
async fn service_availability_counts_services_and_no_data_is_unknown() {
    let app = TestApp::spawn().await;
    let ids = devices(&app, "sd", 1).await;
    sqlx::query("INSERT INTO services (id, device_id, type, name) SELECT 'svc' || i, $1, 'http', 'n' || i FROM generate_series(0, 2) i")
        .bind(&ids[0])
        .execute(&app.pool)
        .await
        .unwrap();
    let created = app
        .data(
            &app.admin,
            "mutation($input: CreateGroupInput!) { createGroup(input: $input) { group { id } userErrors { code } } }",
            json!({ "input": { "name": "Web", "type": "SERVICE" } }),
        )
        .await;
    let web = created["createGroup"]["group"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let svcs: Vec<String> = (0..3).map(|i| format!("svc{i}")).collect();
    add(&app, &web, &svcs).await;
    refreshed(&app, &web, 3).await;
    let start = BucketSize::FiveMinutes.start_of(Utc::now() - TimeDelta::minutes(30));
    let at = |s: i64| (start + TimeDelta::seconds(s)).to_rfc3339();
    let checks = json!([
        { "serviceId": "svc0", "ts": at(5), "available": true, "latencyMs": 12.5 },
        { "serviceId": "svc0", "ts": at(65), "available": true },
        { "serviceId": "svc1", "ts": at(5), "available": true },
        { "serviceId": "svc1", "ts": at(95), "available": false },
        { "serviceId": "nope", "ts": at(5), "available": true },
    ]);
    let p = app
        .data(
            &app.operator,
            INGEST_CHECKS,
            json!({ "input": { "checks": checks } }),
        )
        .await;
    assert_eq!(p["ingestServiceChecks"]["accepted"], 4);
    assert_eq!(p["ingestServiceChecks"]["unknownIds"], json!(["nope"]));
    let from = start;
    let to = start + TimeDelta::minutes(10);
    for source in ["ROLLUP", "RAW"] {
        let s = series(&app, &web, from, to, Some(source)).await;
        let b = &s["buckets"];
        assert_eq!(b[0]["samples"], 4, "{source}");
        // svc0 up, svc1 down (one failed check), svc2 silent: unknown.
        let a = &b[0]["availability"];
        assert_eq!(
            (a["up"].as_i64(), a["down"].as_i64(), a["unknown"].as_i64()),
            (Some(1), Some(1), Some(1)),
            "{source}"
        );
        assert!((a["percent"].as_f64().unwrap() - 100.0 / 3.0).abs() < 1e-9);
        // Nothing reported: all unknown, no percent (never healthy).
        let e = &b[1]["availability"];
        assert_eq!(e["unknown"], 3);
        assert!(e["percent"].is_null());
        assert!(b[0]["cpu"].is_null());
    }
    app.shutdown().await;
}

#[tokio::test]
async fn raw_fallback_is_bounded_and_windows_are_checked() {
    let app = TestApp::spawn().await;
    let ids = devices(&app, "fd", 2).await;
    let g = app.create_group("Fallback", None).await;
    add(&app, &g, &ids).await;
    refreshed(&app, &g, 2).await;
    let now = Utc::now();
    app.data(
        &app.operator,
        INGEST,
        json!({ "input": { "samples": samples(&ids, now - TimeDelta::minutes(20), 4) } }),
    )
    .await;
    // A group without rollups (its first refresh pending) is served from raw samples.
    sqlx::query("DELETE FROM health_groups WHERE group_id = $1")
        .bind(g.parse::<uuid::Uuid>().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let s = series(&app, &g, now - TimeDelta::hours(1), now, None).await;
    assert_eq!(s["source"], "RAW");
    let total: i64 = s["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["samples"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 8);
    let q = |from: DateTime<Utc>, bucket: &str, source: Option<&str>| json!({ "id": g, "from": from.to_rfc3339(), "to": now.to_rfc3339(), "bucket": bucket, "source": source });
    let long = app
        .gql(
            &app.viewer,
            HEALTH,
            q(now - TimeDelta::hours(48), "ONE_HOUR", None),
        )
        .await;
    assert_eq!(
        long["errors"][0]["extensions"]["code"], "NO_ROLLUPS",
        "{long}"
    );
    let huge = app
        .gql(
            &app.viewer,
            HEALTH,
            q(now - TimeDelta::days(8), "FIVE_MINUTES", None),
        )
        .await;
    assert_eq!(
        huge["errors"][0]["extensions"]["code"], "BAD_REQUEST",
        "{huge}"
    );
    let backwards = app
        .gql(&app.viewer, HEALTH, json!({ "id": g, "from": now.to_rfc3339(), "to": (now - TimeDelta::hours(1)).to_rfc3339() }))
        .await;
    assert_eq!(
        backwards["errors"][0]["extensions"]["code"], "BAD_REQUEST",
        "{backwards}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn retention_drops_old_partitions_and_buckets() {
    let app = TestApp::spawn().await;
    let ids = devices(&app, "rd", 1).await;
    let now = Utc::now();
    let config = HealthConfig::default();
    let old = vec![health::SysmonSample {
        device_id: ids[0].clone(),
        ts: now - TimeDelta::days(6),
        cpu_percent: 1.0,
        mem_percent: 2.0,
        disk_percent: 3.0,
    }];
    let report = health::ingest_sysmon(&app.pool, &config, &old)
        .await
        .unwrap();
    assert_eq!(report.accepted, 1);
    let day = (now - TimeDelta::days(6)).format("%Y%m%d").to_string();
    // Two days later that sample is past the 7-day window: its partition and buckets go.
    let r = health::retention::run_retention(&app.pool, &config, now + TimeDelta::days(2))
        .await
        .unwrap();
    assert!(
        r.partitions_dropped
            .contains(&format!("telemetry_sysmon_p{day}")),
        "{r:?}"
    );
    assert_eq!(r.buckets_deleted, 2);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM telemetry_sysmon")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    // Partitions exist ahead of time.
    let ahead = (now + TimeDelta::days(4)).format("%Y%m%d").to_string();
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('telemetry_services_p' || $1) IS NOT NULL")
            .bind(&ahead)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(exists);
    app.shutdown().await;
}
