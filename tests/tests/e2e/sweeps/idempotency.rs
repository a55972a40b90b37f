//! Issue 13, point 10: idempotency keys name a run only for the subject that used them and
//! only for a day; run ids are random, so deployments that share a poller never share a run
//! id; the poller's journal is tied to the run's identity and goes when the run ends.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{app, closed_port, long_sweep, schedule, status_is, sweep_input, wait_for, Sweeps};
use corral_tests::TestApp;

const SCHEDULE_AS: &str = "mutation($input: ScheduleSweepInput!) { scheduleSweep(input: $input) { created run { id status requestedBy } userErrors { field code message } } }";

async fn schedule_as(app: &TestApp, token: &str, input: &Value) -> Value {
    app.data(token, SCHEDULE_AS, json!({ "input": input }))
        .await["scheduleSweep"]
        .clone()
}

fn created_id(payload: &Value) -> String {
    assert_eq!(payload["userErrors"], json!([]), "{payload}");
    payload["run"]["id"].as_str().unwrap().to_string()
}

/// Waits until `path` is gone (at most `secs`).
async fn gone(path: &std::path::Path, secs: u64) {
    let start = Instant::now();
    while path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{} is still there after {secs} s",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deployments_sharing_a_poller_each_complete_a_sweep_under_the_same_key() {
    // Two fresh databases, one poller with one state directory: the scenario.
    let (first, second) = (app().await, app().await);
    let mut a = Sweeps::start(&first).await;
    let b = a.beside(&second);
    let poller = format!("p-{}", a.tag);
    a.start_poller(&poller);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let key = "nightly-loopback";
    let input = sweep_input(&poller, &["127.0.0.0/28"], &[closed_port()], key);

    let run_a = created_id(&schedule(&first, input.clone()).await);
    let done = wait_for(&first, &run_a, 60, status_is("COMPLETED")).await;
    assert_eq!(done["hostsDone"], 16);
    let run_b = created_id(&schedule(&second, input).await);
    let done = wait_for(&second, &run_b, 60, status_is("COMPLETED")).await;
    assert_eq!(done["hostsDone"], 16);
    assert_ne!(run_a, run_b, "a run id is never shared by two deployments");

    b.stop().await;
    a.stop().await;
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn two_admins_who_pick_the_same_key_get_a_run_each() {
    let app = app().await;
    let bob = corral_api::auth::create_token(&app.pool, "bob", "admin")
        .await
        .unwrap();
    let input = sweep_input("p1", &["127.0.0.0/30"], &[22], "shared-key");
    let alices = schedule_as(&app, &app.admin, &input).await;
    let bobs = schedule_as(&app, &bob, &input).await;
    assert_eq!(
        (&alices["created"], &bobs["created"]),
        (&json!(true), &json!(true))
    );
    assert_ne!(created_id(&alices), created_id(&bobs));
    assert_eq!(alices["run"]["requestedBy"], "alice");
    assert_eq!(bobs["run"]["requestedBy"], "bob");
    // Each still gets their own run back.
    let again = schedule_as(&app, &bob, &input).await;
    assert_eq!(again["created"], false);
    assert_eq!(created_id(&again), created_id(&bobs));
    app.shutdown().await;
}

#[tokio::test]
async fn the_same_admin_and_key_within_a_day_return_the_run_and_another_request_is_refused() {
    let app = app().await;
    let input = sweep_input("p1", &["127.0.0.0/28"], &[80, 22], "k-retry");
    let first = schedule(&app, input.clone()).await;
    assert_eq!(first["created"], true);
    let id = created_id(&first);

    // A retry, even with the ports in another order and another reason, is the same request.
    let mut retry = input.clone();
    retry["ports"] = json!([22, 80, 22]);
    retry["reason"] = json!("retried by the client");
    let again = schedule(&app, retry).await;
    assert_eq!(again["created"], false);
    assert_eq!(created_id(&again), id);

    for (field, value) in [
        ("targets", json!(["127.0.0.1"])),
        ("ports", json!([22])),
        ("pollerId", json!("p2")),
        ("icmp", json!(false)),
        ("deadlineSecs", json!(60)),
    ] {
        let mut other = input.clone();
        other[field] = value;
        let refused = schedule(&app, other).await;
        assert_eq!(
            refused["userErrors"][0]["code"], "IDEMPOTENCY_KEY_REUSED",
            "{field}: {refused}"
        );
        assert_eq!(refused["userErrors"][0]["field"], "idempotencyKey");
        assert_eq!(refused["run"], Value::Null);
        assert_eq!(refused["created"], false);
    }
    let runs: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT aggregate_id) FROM events WHERE aggregate_type = 'SweepRun'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(runs, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_older_than_the_idempotency_window_makes_a_new_run() {
    let app = app().await;
    let input = sweep_input("p1", &["127.0.0.0/30"], &[22], "k-daily");
    let old = created_id(&schedule(&app, input.clone()).await);
    // A day and an hour later (the window is 24 h).
    let moved = sqlx::query(
        "UPDATE sweep_idempotency_keys SET reserved_at = reserved_at - interval '25 hours'
          WHERE subject = 'alice' AND idempotency_key = 'k-daily'",
    )
    .execute(&app.pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(moved, 1);
    let fresh = schedule(&app, input.clone()).await;
    assert_eq!(fresh["created"], true, "{fresh}");
    let new = created_id(&fresh);
    assert_ne!(new, old);
    // From now on the key names the new run; a different request is fine too once expired.
    let again = schedule(&app, input).await;
    assert_eq!(
        (again["created"].clone(), created_id(&again)),
        (json!(false), new)
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_schedules_with_one_key_make_exactly_one_run() {
    let app = app().await;
    let input = sweep_input("p1", &["127.0.0.0/30"], &[22], "k-race");
    let payloads = futures::future::join_all((0..8).map(|_| schedule(&app, input.clone()))).await;
    let ids: std::collections::BTreeSet<String> = payloads.iter().map(created_id).collect();
    assert_eq!(ids.len(), 1, "{payloads:?}");
    let created = payloads.iter().filter(|p| p["created"] == true).count();
    assert_eq!(created, 1, "{payloads:?}");
    let scheduled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'SweepRun' AND event_type = 'SweepScheduled'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(scheduled, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_reservation_left_by_a_crash_is_completed_by_the_retry() {
    let app = app().await;
    let input = sweep_input("p1", &["127.0.0.0/30"], &[22], "k-crash");
    // A first attempt reserved the key, then its process died before the run was created.
    let first = created_id(&schedule(&app, input.clone()).await);
    sqlx::query("DELETE FROM sweep_runs")
        .execute(&app.pool)
        .await
        .unwrap();
    for table in ["events", "aggregate_snapshots"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE aggregate_type = 'SweepRun'"
        ))
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let retry = schedule(&app, input).await;
    assert_eq!(retry["created"], true, "{retry}");
    assert_eq!(
        created_id(&retry),
        first,
        "the retry creates the reserved run"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journals_of_ended_runs_leave_the_poller_state_directory() {
    let app = app().await;
    let mut sweeps = Sweeps::start(&app).await;
    let poller = format!("p-{}", sweeps.tag);
    // Left behind by an earlier life of the poller: one journal untouched for a month, one
    // from today (of a run this deployment does not know; it stays until the bound).
    std::fs::create_dir_all(&sweeps.state_dir).unwrap();
    let ancient = sweeps.journal(&uuid::Uuid::new_v4().to_string());
    let recent = sweeps.journal(&uuid::Uuid::new_v4().to_string());
    for path in [&ancient, &recent] {
        std::fs::write(path, "ack\nstart\ndone\n").unwrap();
    }
    let month_ago = std::time::SystemTime::now() - Duration::from_secs(30 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&ancient)
        .unwrap()
        .set_modified(month_ago)
        .unwrap();
    sweeps.start_poller(&poller);
    tokio::time::sleep(Duration::from_millis(700)).await;
    gone(&ancient, 10).await;
    assert!(recent.exists(), "a recent journal is kept");

    // Completed.
    let p = schedule(
        &app,
        sweep_input(&poller, &["127.0.0.0/28"], &[closed_port()], "k-done"),
    )
    .await;
    let done = created_id(&p);
    wait_for(&app, &done, 60, status_is("COMPLETED")).await;
    gone(&sweeps.journal(&done), 10).await;

    // Cancelled mid-run.
    let cancelled = created_id(&schedule(&app, long_sweep(&poller, "k-cancel")).await);
    wait_for(&app, &cancelled, 60, |r| {
        r["hostsDone"].as_i64().unwrap() >= 256
    })
    .await;
    assert!(
        sweeps.journal(&cancelled).exists(),
        "a running run has its journal"
    );
    let p = app
        .data(
            &app.admin,
            super::CANCEL,
            json!({ "input": { "id": cancelled } }),
        )
        .await;
    assert_eq!(p["cancelSweep"]["userErrors"], json!([]), "{p}");
    gone(&sweeps.journal(&cancelled), 10).await;

    // Timed out.
    let mut input = long_sweep(&poller, "k-deadline");
    input["deadlineSecs"] = json!(6);
    let timed_out = created_id(&schedule(&app, input).await);
    let start = Instant::now();
    while !sweeps.journal(&timed_out).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "the job never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for(&app, &timed_out, 30, status_is("TIMED_OUT")).await;
    gone(&sweeps.journal(&timed_out), 10).await;

    sweeps.stop().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_carries_its_runs_identity_and_reports_for_another_run_under_its_id_are_dropped() {
    use chrono::{DateTime, TimeDelta, Utc};
    use corral_workers::sweeps::{job_key, ReportKind, SweepJob, SweepReport};
    let app = app().await;
    let sweeps = Sweeps::start(&app).await;
    // A poller that heartbeats and leaves its reports to the test.
    let poller = format!("mute-{}", sweeps.tag);
    let heartbeat = sweeps.beat_as(&poller).await;
    let js = sweeps.js().await;
    let jobs = js.get_key_value(&sweeps.names.jobs_bucket).await.unwrap();
    let input = sweep_input(&poller, &["127.0.0.1"], &[22], "k-identity");
    let id = created_id(&schedule(&app, input).await);
    wait_for(&app, &id, 10, status_is("DISPATCHED")).await;
    let run: uuid::Uuid = id.parse().unwrap();
    let scheduled_at: DateTime<Utc> =
        sqlx::query_scalar("SELECT scheduled_at FROM sweep_runs WHERE id = $1")
            .bind(run)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let job = jobs.get(job_key(&poller, run)).await.unwrap().unwrap();
    let job: SweepJob = serde_json::from_slice(&job).unwrap();
    assert_eq!(job.scheduled_at, Some(scheduled_at));

    let report = |kind, at| SweepReport {
        run_id: run,
        scheduled_at: Some(at),
        poller_id: poller.clone(),
        kind,
        results: vec![],
        hosts_done: 0,
        error: Some("not this run's".into()),
        at: Utc::now(),
    };
    // Reports are applied in order: the failure of another run under this id first, then this
    // run's acknowledgement, which a failed run could not take.
    for r in [
        report(ReportKind::Fail, scheduled_at + TimeDelta::seconds(1)),
        report(ReportKind::Ack, scheduled_at),
    ] {
        js.publish(
            sweeps.names.report_subject(run),
            serde_json::to_vec(&r).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    wait_for(&app, &id, 10, status_is("ACKNOWLEDGED")).await;
    heartbeat.abort();
    sweeps.stop().await;
    app.shutdown().await;
}
