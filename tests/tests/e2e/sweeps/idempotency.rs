//! Issue 13, point 10: idempotency keys name a run only for the subject that used them and
//! only for a day; run ids are random, so deployments that share a poller never share a run
//! id.

use std::time::Duration;

use serde_json::{json, Value};

use super::{app, closed_port, schedule, status_is, sweep_input, wait_for, Sweeps};
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
