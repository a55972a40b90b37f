//! `corral sweeps export` and `corral poller`'s refusals, run as an operator would.

use corral_tests::TestDb;

fn corral(url: &str, args: &[&str]) -> (bool, String, String) {
    corral_tests::run_corral(env!("CARGO_BIN_EXE_corral"), url, args)
}

#[tokio::test]
async fn export_writes_a_runs_results_as_csv_and_ndjson() {
    let db = TestDb::new().await;
    let (ok, _, stderr) = corral(&db.url, &["migrate"]);
    assert!(ok, "{stderr}");
    let pool = db.pool(2).await;
    let run = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO sweep_runs (id, status, poller_id, targets, hosts, hosts_total, ports, icmp,
                timeout_ms, concurrency, retention_days, idempotency_key, requested_by,
                scheduled_at, deadline, version, updated_at)
         VALUES ($1, 'RUNNING', 'p1', '{127.0.0.0/30}', '{127.0.0.0-127.0.0.3}', 4, '{22,80}',
                 false, 1000, 8, 30, 'k', 'alice', now(), now() + interval '1 hour', 2, now())",
    )
    .bind(run)
    .execute(&pool)
    .await
    .expect("run");
    let results: Vec<corral_projections::sweeps::results::NewResult> = (0..4)
        .map(|i| corral_projections::sweeps::results::NewResult {
            host_ip: format!("127.0.0.{i}").parse().expect("ip"),
            network_cidr: String::new(),
            icmp_available: None,
            open_ports: if i == 2 { vec![80, 22] } else { vec![] },
            latency_ms: Some(0.5),
            metadata: serde_json::json!({ "note": "a, \"quoted\" value" }),
            observed_at: chrono::Utc::now(),
        })
        .collect();
    let stored =
        corral_projections::sweeps::results::record(&pool, run, &results, chrono::Utc::now())
            .await
            .expect("record");
    assert_eq!(stored.stored, 4);

    let (ok, stdout, stderr) = corral(
        &db.url,
        &[
            "sweeps",
            "export",
            &run.to_string(),
            "--format",
            "csv",
            "--open-only",
        ],
    );
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(
        lines[0],
        "run_id,host_ip,network_cidr,icmp_available,open_ports,latency_ms,observed_at,metadata"
    );
    assert!(
        lines[1].starts_with(&format!("{run},127.0.0.2,127.0.0.0/30,,22 80,0.5,")),
        "{stdout}"
    );
    assert!(
        lines[1].ends_with(r#","{""note"":""a, \""quoted\"" value""}""#),
        "{stdout}"
    );
    assert!(stderr.contains("1 results"), "{stderr}");

    let (ok, stdout, stderr) = corral(
        &db.url,
        &["sweeps", "export", &run.to_string(), "--format", "ndjson"],
    );
    assert!(ok, "{stderr}");
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let hosts: Vec<&str> = rows
        .iter()
        .map(|r| r["host_ip"].as_str().expect("ip"))
        .collect();
    assert_eq!(
        hosts,
        vec!["127.0.0.0", "127.0.0.1", "127.0.0.2", "127.0.0.3"]
    );
    assert_eq!(rows[2]["open_ports"], serde_json::json!([22, 80]));

    let (ok, _, stderr) = corral(
        &db.url,
        &["sweeps", "export", &uuid::Uuid::new_v4().to_string()],
    );
    assert!(!ok);
    assert!(stderr.contains("no sweep run"), "{stderr}");
    pool.close().await;
    db.drop_db().await;
}

#[test]
fn the_poller_refuses_a_bad_id() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "poller",
            "--id",
            "bad.id",
            "--nats-url",
            "nats://127.0.0.1:1",
        ])
        .output()
        .expect("run corral");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("poller id"), "{stderr}");
}
