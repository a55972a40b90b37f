//! `corral import devices|services|telemetry FILE.ndjson`, run as an operator would run it.

use corral_tests::TestDb;

fn corral(url: &str, args: &[&str]) -> (bool, String, String) {
    corral_tests::run_corral(env!("CARGO_BIN_EXE_corral"), url, args)
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("corral-import-{}-{name}", uuid::Uuid::new_v4()));
    std::fs::write(&path, text).expect("write the file");
    path
}

#[tokio::test]
async fn import_applies_valid_lines_reports_invalid_ones_and_fails() {
    let db = TestDb::new().await;
    let file = write(
        "devices.ndjson",
        concat!(
            "{\"id\": \"d1\", \"hostname\": \"web-01\", \"ip\": \"10.0.0.1\", \"tags\": [\"env=prod\"]}\n",
            "{\"id\": \"d2\", \"ip\": \"10.0.0.300\"}\n",
            "\n",
            "{\"id\": \"d3\", \"mac\": \"aabb.ccdd.eeff\"}\n",
            "not json\n",
        ),
    );
    let path = file.to_str().expect("utf-8 path");
    let (ok, stdout, stderr) = corral(&db.url, &["import", "devices", path]);
    assert!(!ok, "invalid lines make the import fail");
    assert!(stderr.contains("line 2: ip:"), "{stderr}");
    assert!(stderr.contains("line 5: not JSON"), "{stderr}");
    assert!(stderr.contains("2 invalid lines"), "{stderr}");
    assert!(
        stdout.contains("5 lines, 2 upserted, 0 unchanged, 2 invalid"),
        "{stdout}"
    );
    let pool = db.pool(1).await;
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM devices WHERE removed_at IS NULL ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("devices");
    assert_eq!(ids, vec!["d1", "d3"]);

    // Valid lines only: success; a second run changes nothing.
    let many: String = (0..2500)
        .map(|i| format!("{{\"id\": \"bulk-{i}\", \"site\": \"ams1\"}}\n"))
        .collect();
    let file2 = write("bulk.ndjson", &many);
    let path2 = file2.to_str().expect("utf-8 path");
    let (ok, stdout, stderr) = corral(&db.url, &["import", "devices", path2]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("2500 upserted, 0 unchanged, 0 invalid"),
        "{stdout}"
    );
    let (ok, stdout, _) = corral(&db.url, &["import", "devices", path2]);
    assert!(ok);
    assert!(stdout.contains("0 upserted, 2500 unchanged"), "{stdout}");

    let services = write(
        "services.ndjson",
        "{\"deviceId\": \"d1\", \"type\": \"http\", \"name\": \"web\", \"port\": 80}\n",
    );
    let (ok, stdout, stderr) = corral(
        &db.url,
        &["import", "services", services.to_str().expect("utf-8 path")],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("1 upserted"), "{stdout}");
    let (ok, _, stderr) = corral(&db.url, &["import", "devices", "/nonexistent.ndjson"]);
    assert!(!ok);
    assert!(stderr.contains("cannot open"), "{stderr}");
    for f in [file, file2, services] {
        let _ = std::fs::remove_file(f);
    }
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn import_telemetry_stores_known_samples_and_reports_the_rest() {
    let db = TestDb::new().await;
    let pool = db.pool(1).await;
    sqlx::query("INSERT INTO devices (id) VALUES ('t1'), ('t2')")
        .execute(&pool)
        .await
        .expect("devices");
    sqlx::query("INSERT INTO services (id, device_id, type, name) VALUES ('t1/http/web', 't1', 'http', 'web')")
        .execute(&pool)
        .await
        .expect("service");
    let now = chrono::Utc::now();
    let at = |secs: i64| (now - chrono::TimeDelta::seconds(secs)).to_rfc3339();
    // 6000 samples: two batches of at most 5000.
    let mut text: String = (0..6000)
        .map(|i| {
            format!(
                "{{\"deviceId\": \"t{}\", \"ts\": \"{}\", \"cpuPercent\": 10, \"memPercent\": 20, \"diskPercent\": 30}}\n",
                1 + i % 2,
                at(i)
            )
        })
        .collect();
    text += &format!("{{\"serviceId\": \"t1/http/web\", \"ts\": \"{}\", \"available\": true, \"latencyMs\": 3.5}}\n", at(5));
    text += &format!("{{\"deviceId\": \"ghost\", \"ts\": \"{}\", \"cpuPercent\": 1, \"memPercent\": 1, \"diskPercent\": 1}}\n", at(5));
    text += &format!("{{\"deviceId\": \"t1\", \"ts\": \"{}\", \"cpuPercent\": 1, \"memPercent\": 1, \"diskPercent\": 1}}\n", at(9 * 86400));
    text += "{\"hostname\": \"x\"}\n";
    let file = write("telemetry.ndjson", &text);
    let (ok, stdout, stderr) = corral(
        &db.url,
        &["import", "telemetry", file.to_str().expect("utf-8 path")],
    );
    assert!(
        !ok,
        "rejected and invalid lines make the import fail: {stdout}"
    );
    assert!(stderr.contains("line 6003: ts:"), "{stderr}");
    assert!(stderr.contains("TOO_OLD"), "{stderr}");
    assert!(
        stderr.contains("line 6004: neither a sysmon sample"),
        "{stderr}"
    );
    assert!(
        stdout.contains("6004 lines, 6001 accepted, 1 of unknown devices or services (not stored: ghost), 2 invalid or rejected"),
        "{stdout}"
    );
    let (samples, checks): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM telemetry_sysmon), (SELECT count(*) FROM telemetry_services)",
    )
    .fetch_one(&pool)
    .await
    .expect("counts");
    assert_eq!((samples, checks), (6000, 1));
    let ghost: i64 =
        sqlx::query_scalar("SELECT samples FROM telemetry_unknown WHERE entity_id = 'ghost'")
            .fetch_one(&pool)
            .await
            .expect("unknown counted");
    assert_eq!(ghost, 1);
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn import_writes_events_naming_the_actor_and_a_rerun_appends_none() {
    let db = TestDb::new().await;
    let file = write(
        "history.ndjson",
        "{\"id\": \"h1\", \"hostname\": \"core-1\"}\n{\"id\": \"h2\", \"site\": \"ams1\"}\n",
    );
    let path = file.to_str().expect("utf-8 path");
    let (ok, _, stderr) = corral(
        &db.url,
        &["import", "devices", path, "--actor", "ci-loader"],
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = corral(
        &db.url,
        &["import", "devices", path, "--actor", "ci-loader"],
    );
    assert!(ok, "{stderr}");
    let pool = db.pool(1).await;
    let rows: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT aggregate_id, event_type, metadata FROM events
          WHERE aggregate_type = 'Device' ORDER BY aggregate_id, sequence",
    )
    .fetch_all(&pool)
    .await
    .expect("events");
    let kinds: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    assert_eq!(
        kinds,
        [("h1", "DeviceRecorded"), ("h2", "DeviceRecorded")],
        "the second run changed nothing"
    );
    for (_, _, meta) in &rows {
        assert_eq!(meta["actor_subject"], "ci-loader");
        assert_eq!(meta["actor_role"], "cli");
        assert_eq!(meta["source"], "cli");
        assert_eq!(meta["correlation_id"], rows[0].2["correlation_id"]);
    }
    let _ = std::fs::remove_file(file);
    pool.close().await;
    db.drop_db().await;
}
