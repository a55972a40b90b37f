//! `corral audit verify` and `corral audit export`, run as an auditor would run them.

use std::time::Duration;

use corral_tests::TestApp;

fn corral(url: &str, args: &[&str]) -> (bool, String, String) {
    corral_tests::run_corral(env!("CARGO_BIN_EXE_corral"), url, args)
}

/// Waits until every event has its position; returns the head.
async fn sequenced(app: &TestApp) -> i64 {
    for _ in 0..500 {
        let (events, logged): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM event_log)",
        )
        .fetch_one(&app.pool)
        .await
        .expect("counts");
        if events == logged {
            return logged;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the sequencer did not catch up");
}

#[tokio::test]
async fn verify_prints_the_head_and_fails_naming_the_first_broken_position() {
    let app = TestApp::spawn().await;
    let a = app.create_group("Site-A", None).await;
    app.create_group("Rack-1", Some(&a)).await;
    let head = sequenced(&app).await;
    let url = app.db.url.clone();

    let (ok, stdout, stderr) = corral(&url, &["audit", "verify"]);
    assert!(ok, "{stdout}{stderr}");
    let hash: Vec<u8> = sqlx::query_scalar("SELECT hash FROM event_log WHERE log_position = $1")
        .bind(head)
        .fetch_one(&app.pool)
        .await
        .expect("head hash");
    let hash = hex_string(&hash);
    assert!(
        stdout.starts_with(&format!("verified {head} events, head {hash}")),
        "{stdout}"
    );

    // A recorded head checks out; a wrong one does not.
    let (ok, _, stderr) = corral(
        &url,
        &["audit", "verify", "--expect", &format!("{head}:{hash}")],
    );
    assert!(ok, "{stderr}");
    let wrong = format!("{head}:{}", "0".repeat(64));
    let (ok, _, stderr) = corral(&url, &["audit", "verify", "--expect", &wrong]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("chain broken at position {head}")),
        "{stderr}"
    );

    // Exports: one NDJSON line per event; CSV to a file with a header.
    let window = [
        "--from",
        "2000-01-01T00:00:00Z",
        "--to",
        "2100-01-01T00:00:00Z",
    ];
    let mut args = vec!["audit", "export"];
    args.extend(window);
    let (ok, stdout, stderr) = corral(&url, &args);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count() as i64, head, "{stdout}");
    assert!(
        stderr.contains(&format!("exported {head} entries")),
        "{stderr}"
    );
    let file = std::env::temp_dir().join(format!("corral-audit-{}.csv", uuid::Uuid::new_v4()));
    let mut args = vec!["audit", "export", "--format", "csv", "-o"];
    let path = file.to_str().expect("utf-8 path").to_string();
    args.push(&path);
    args.extend(window);
    let group = ["--group", a.as_str()];
    args.extend(group);
    let (ok, _, stderr) = corral(&url, &args);
    assert!(ok, "{stderr}");
    let csv = std::fs::read_to_string(&file).expect("the CSV file");
    let _ = std::fs::remove_file(&file);
    assert!(
        csv.starts_with("position,recorded_at,actor_subject"),
        "{csv}"
    );
    assert_eq!(
        csv.lines().count(),
        2,
        "the header and Site-A's creation: {csv}"
    );

    // Someone edits who made a change: verification fails at that position, exit non-zero.
    sqlx::query(
        "UPDATE events SET metadata = jsonb_set(metadata, '{actor_subject}', '\"mallory\"')
          WHERE global_position = (SELECT global_position FROM event_log WHERE log_position = 2)",
    )
    .execute(&app.pool)
    .await
    .expect("tamper");
    let (ok, stdout, stderr) = corral(&url, &["audit", "verify"]);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("chain broken at position 2: hash mismatch"),
        "{stderr}"
    );
    app.shutdown().await;
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
