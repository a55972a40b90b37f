//! Limits per request and per subject: the mutations one operation may name, and the
//! requests a subject may send per second (HTTP and websocket).

use std::net::SocketAddr;
use std::time::Duration;

use corral_api::state::ApiConfig;
use corral_tests::TestApp;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn codes(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|x| x["extensions"]["code"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count events")
}

/// One mutation of `n` aliased `createDashboard` fields (half of them through a fragment).
fn dashboards(n: usize, tag: &str) -> String {
    let field = |i: usize| {
        format!(
            "d{i}: createDashboard(input: {{ name: \"{tag} {i}\" }}) {{ userErrors {{ code }} }} "
        )
    };
    let half = n / 2;
    let direct: String = (0..half).map(field).collect();
    let spread: String = (half..n).map(field).collect();
    format!("mutation {{ {direct} ...More }} fragment More on Mutation {{ {spread} }}")
}

async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    addr
}

async fn next_json(ws: &mut Ws) -> Value {
    let next = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("an answer");
    match next {
        Some(Ok(Message::Text(text))) => serde_json::from_str(&text).expect("json"),
        other => json!({ "other": format!("{other:?}") }),
    }
}

async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::Text(message.to_string().into()))
        .await
        .expect("send");
}

async fn authenticated(addr: SocketAddr, token: &str) -> Ws {
    let mut request = format!("ws://{addr}/graphql/ws")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let mut ws = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect")
        .0;
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }),
    )
    .await;
    let ack = next_json(&mut ws).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws
}

/// Runs `query` as operation `id`; returns its first result's payload (and reads the
/// `complete` that follows).
async fn run(ws: &mut Ws, id: &str, query: &str) -> Value {
    send(
        ws,
        json!({ "id": id, "type": "subscribe", "payload": { "query": query } }),
    )
    .await;
    let reply = next_json(ws).await;
    assert_eq!(reply["id"], id, "{reply}");
    if reply["type"] == "next" {
        let done = next_json(ws).await;
        assert_eq!(done["type"], "complete", "{done}");
        return reply["payload"].clone();
    }
    // An `error` message carries the errors themselves.
    json!({ "errors": reply["payload"].clone(), "type": reply["type"].clone() })
}

#[tokio::test]
async fn more_mutations_than_the_limit_in_one_operation_are_refused_before_any_runs() {
    let app = TestApp::spawn().await;
    let before = events(&app).await;
    let body = app
        .gql(&app.admin, &dashboards(21, "over"), json!({}))
        .await;
    assert_eq!(codes(&body), ["TOO_MANY_MUTATIONS"], "{body}");
    let message = body["errors"][0]["message"].as_str().expect("message");
    assert!(
        message.contains("20") && message.contains("CORRAL_MAX_MUTATIONS_PER_REQUEST"),
        "{message}"
    );
    assert!(body["data"].is_null(), "{body}");
    assert_eq!(events(&app).await, before, "nothing was written");

    let body = app
        .gql(&app.admin, &dashboards(20, "fine"), json!({}))
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"].as_object().expect("data").len(), 20);
    assert_eq!(events(&app).await, before + 20, "{body}");

    // The same over a websocket.
    let addr = serve(app.router.clone()).await;
    let mut ws = authenticated(addr, &app.admin).await;
    let before = events(&app).await;
    let reply = run(&mut ws, "1", &dashboards(21, "ws")).await;
    assert_eq!(codes(&reply), ["TOO_MANY_MUTATIONS"], "{reply}");
    assert_eq!(events(&app).await, before);
    let reply = run(&mut ws, "2", &dashboards(2, "ws")).await;
    assert!(reply.get("errors").is_none(), "{reply}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_mutation_limit_is_a_setting() {
    let mut config = ApiConfig::default();
    config.query_limits.max_mutations = 2;
    let app = TestApp::spawn_with(config, true).await;
    let body = app.gql(&app.admin, &dashboards(3, "x"), json!({})).await;
    assert_eq!(codes(&body), ["TOO_MANY_MUTATIONS"], "{body}");
    let body = app.gql(&app.admin, &dashboards(2, "x"), json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    app.shutdown().await;
}

fn limited(per_second: u32, burst: u32) -> ApiConfig {
    ApiConfig {
        rate_limit: corral_api::rate_limit::RateLimitConfig {
            per_second,
            burst,
            max_subjects: 1_000,
        },
        ..ApiConfig::default()
    }
}

/// POSTs `{ me { subject } }` with `token`: the status, `Retry-After` and body.
async fn me(app: &TestApp, token: &str) -> (u16, Option<String>, Value) {
    use tower::ServiceExt;
    let request = axum::http::Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::from(
            json!({ "query": "{ me { subject } }" }).to_string(),
        ))
        .expect("request");
    let response = app.router.clone().oneshot(request).await.expect("router");
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_string());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, retry, serde_json::from_slice(&bytes).expect("json"))
}

#[tokio::test]
async fn a_burst_beyond_a_subjects_limit_gets_429_with_retry_after_and_others_pass() {
    let app = TestApp::spawn_with(limited(2, 5), true).await;
    for i in 0..5 {
        let (status, _, body) = me(&app, &app.viewer).await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
    let (status, retry, body) = me(&app, &app.viewer).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry.as_deref(), Some("1"), "{body}");
    assert_eq!(codes(&body), ["RATE_LIMITED"], "{body}");
    let message = body["errors"][0]["message"].as_str().expect("message");
    assert!(
        message.contains("CORRAL_RATE_LIMIT_PER_SUBJECT"),
        "{message}"
    );

    // Other subjects are unaffected.
    let (status, _, body) = me(&app, &app.auditor).await;
    assert_eq!(status, 200, "{body}");

    // After waiting, requests pass again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, _, body) = me(&app, &app.viewer).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["me"]["subject"], "vera", "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn websocket_operations_beyond_the_limit_get_rate_limited_and_the_connection_stays_open() {
    let app = TestApp::spawn_with(limited(1, 3), true).await;
    let addr = serve(app.router.clone()).await;
    let mut ws = authenticated(addr, &app.viewer).await;
    for i in 0..3 {
        let reply = run(&mut ws, &format!("ok{i}"), "{ me { subject } }").await;
        assert_eq!(reply["data"]["me"]["subject"], "vera", "{reply}");
    }
    let reply = run(&mut ws, "over", "{ me { subject } }").await;
    assert_eq!(codes(&reply), ["RATE_LIMITED"], "{reply}");
    // HTTP requests of the same subject share its bucket.
    let (status, _, body) = me(&app, &app.viewer).await;
    assert_eq!(status, 429, "{body}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let reply = run(&mut ws, "again", "{ me { subject } }").await;
    assert_eq!(reply["data"]["me"]["subject"], "vera", "{reply}");
    app.shutdown().await;
}
