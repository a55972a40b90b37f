//! `corral rollups verify` and `corral rollups backfill`, run as an operator would.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use corral_projections::health::{self, BucketSize, HealthConfig, SysmonSample};
use corral_tests::TestApp;
use serde_json::json;

fn corral(url: &str, args: &[&str]) -> (bool, String, String) {
    corral_tests::run_corral(env!("CARGO_BIN_EXE_corral"), url, args)
}

#[tokio::test]
async fn verify_finds_a_mismatch_and_backfill_repairs_it() {
    let app = TestApp::spawn().await;
    let ids: Vec<String> = (0..3).map(|i| format!("cli-d{i}")).collect();
    sqlx::query("INSERT INTO devices (id) SELECT unnest($1::text[])")
        .bind(&ids)
        .execute(&app.pool)
        .await
        .expect("devices");
    let group = app.create_group("Rollups", None).await;
    let added = app
        .data(
            &app.operator,
            "mutation($input: GroupMembersInput!) { addGroupMembers(input: $input) { userErrors { code } } }",
            json!({ "input": { "groupId": group, "memberIds": ids } }),
        )
        .await;
    assert_eq!(added["addGroupMembers"]["userErrors"], json!([]));
    let gid: uuid::Uuid = group.parse().expect("uuid");
    for _ in 0..200 {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT members FROM health_groups WHERE group_id = $1")
                .bind(gid)
                .fetch_optional(&app.pool)
                .await
                .expect("health_groups");
        if n == Some(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = BucketSize::OneHour.start_of(Utc::now() - TimeDelta::hours(2));
    let samples: Vec<SysmonSample> = (0..30)
        .map(|i| SysmonSample {
            device_id: ids[i % 3].clone(),
            ts: start + TimeDelta::minutes(i as i64 * 3),
            cpu_percent: 10.0 + i as f64,
            mem_percent: 20.5,
            disk_percent: 70.25,
        })
        .collect();
    let report = health::ingest_sysmon(&app.pool, &HealthConfig::default(), &samples)
        .await
        .expect("ingest");
    assert_eq!(report.accepted, 30);

    let from = start.to_rfc3339();
    let to = (start + TimeDelta::hours(2)).to_rfc3339();
    let url = app.db.url.clone();
    let verify = [
        "rollups", "verify", "--group", &group, "--from", &from, "--to", &to,
    ];
    let (ok, stdout, stderr) = corral(&url, &verify);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("raw samples 30, rollup samples 30"),
        "{stdout}"
    );
    assert!(stdout.contains(", 0 mismatches"), "{stdout}");

    sqlx::query("UPDATE health_rollups SET cpu_max = 1 WHERE group_id = $1 AND bucket_size = 300")
        .bind(gid)
        .execute(&app.pool)
        .await
        .expect("tamper");
    let (ok, stdout, stderr) = corral(&url, &verify);
    assert!(!ok, "verify must fail on a mismatch: {stdout}");
    assert!(
        stdout.contains("MISMATCH") && stdout.contains("cpu max"),
        "{stdout}"
    );
    assert!(stderr.contains("differ from raw samples"), "{stderr}");

    let (ok, stdout, stderr) = corral(&url, &["rollups", "backfill", "--group", &group]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("recomputed 2 groups"), "{stdout}");
    assert!(stderr.contains("buckets rebuilt up to"), "{stderr}");
    let (ok, stdout, _) = corral(&url, &verify);
    assert!(ok, "{stdout}");

    let (ok, _, stderr) = corral(
        &url,
        &[
            "rollups", "verify", "--group", &group, "--from", &to, "--to", &from,
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("`to` must be after `from`"), "{stderr}");
    app.shutdown().await;
}
