//! What one request may cost the database: every statement under `statement_timeout`, and
//! the caller's rule filters under the request's budget, run one after another.

use std::time::{Duration, Instant};

use corral_api::state::ApiConfig;
use corral_tests::TestApp;
use serde_json::json;

/// `n` devices with long host names: a few regexes over 100,000 of them take about a
/// tenth of a second each.
async fn inventory(app: &TestApp, n: i32) {
    sqlx::query(
        "INSERT INTO devices (id, hostname)
         SELECT 'd' || i, repeat('a', 60) || i FROM generate_series(1, $1) i",
    )
    .bind(n)
    .execute(&app.pool)
    .await
    .expect("devices");
}

fn regexes(n: usize) -> String {
    (0..n)
        .map(|i| format!(r#"hostname~"^(a|aa|aaa)*(a|aa)*b{i}$""#))
        .collect::<Vec<_>>()
        .join(" OR ")
}

fn codes(body: &serde_json::Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|x| x["extensions"]["code"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_statement_over_the_statement_timeout_answers_query_timeout() {
    let mut config = ApiConfig::default();
    config.query_limits.statement_timeout = Duration::from_millis(30);
    let app = TestApp::spawn_with(config, true).await;
    let shown: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&app.state.api_pool)
        .await
        .expect("show");
    assert_eq!(
        shown, "30ms",
        "every statement of a request has the timeout"
    );
    inventory(&app, 20_000).await;
    let body = app
        .gql(
            &app.viewer,
            "query($f: String) { devices(filter: $f, first: 1) { edges { node { id } } } }",
            json!({ "f": regexes(8) }),
        )
        .await;
    assert_eq!(codes(&body), ["QUERY_TIMEOUT"], "{body}");
    let message = body["errors"][0]["message"].as_str().expect("message");
    assert!(message.contains("CORRAL_STATEMENT_TIMEOUT_MS"), "{message}");
    app.shutdown().await;
}

#[tokio::test]
async fn filters_of_one_request_share_its_budget_and_the_rest_are_refused() {
    let mut config = ApiConfig::default();
    config.query_limits.db_budget = Duration::from_millis(200);
    let app = TestApp::spawn_with(config, true).await;
    inventory(&app, 100_000).await;
    // Five filters, each a page and a count of two regexes over 100,000 devices: about two
    // seconds of database time without the budget.
    let filter = serde_json::to_string(&regexes(2)).expect("json");
    let aliases: String = (0..5)
        .map(|i| format!("a{i}: devices(filter: {filter}, first: 1) {{ totalCount }} "))
        .collect();
    let started = Instant::now();
    let body = app
        .gql(&app.viewer, &format!("{{ {aliases} }}"), json!({}))
        .await;
    let took = started.elapsed();
    let got = codes(&body);
    assert!(!got.is_empty(), "{body}");
    assert!(got.iter().all(|c| c == "REQUEST_BUDGET_EXCEEDED"), "{body}");
    assert!(
        took < Duration::from_millis(1_000),
        "five heavy filters stopped at the 200 ms budget, not after {took:?}"
    );
    // The budget is per request: the next one starts afresh.
    let body = app
        .gql(
            &app.viewer,
            "{ devices(filter: \"hostname:nope\", first: 1) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    app.shutdown().await;
}
