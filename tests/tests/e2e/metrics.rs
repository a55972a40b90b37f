//! `/metrics`: open by default on the API's address, behind a bearer token when
//! `CORRAL_METRICS_TOKEN` is set, and only on its own address when `CORRAL_METRICS_LISTEN` is.

use axum::body::Body;
use axum::http::Request;
use corral_api::state::ApiConfig;
use corral_tests::TestApp;
use tower::ServiceExt;

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut r = Request::get(path);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(Body::empty()).expect("request")
}

#[tokio::test]
async fn a_metrics_token_keeps_metrics_from_anyone_without_it() {
    let config = ApiConfig {
        metrics_token: Some("scrape-secret-0123456789".into()),
        ..ApiConfig::default()
    };
    let app = TestApp::spawn_with(config, true).await;
    let (status, body) = app.http(get("/metrics", None)).await;
    assert_eq!(status, 401);
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    let (status, _) = app.http(get("/metrics", Some(&app.admin))).await;
    assert_eq!(status, 401, "an API token is not the metrics token");
    let (status, body) = app
        .http(get("/metrics", Some("scrape-secret-0123456789")))
        .await;
    assert_eq!(status, 200);
    assert!(
        body.as_str().expect("text").contains("corral_leader"),
        "{body}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn with_a_metrics_address_the_api_address_does_not_serve_metrics() {
    let config = ApiConfig {
        metrics_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..ApiConfig::default()
    };
    let app = TestApp::spawn_with(config, true).await;
    let (status, _) = app.http(get("/metrics", None)).await;
    assert_eq!(status, 404);
    let metrics = corral_api::http::metrics_app(app.state.clone());
    let response = metrics
        .oneshot(get("/metrics", None))
        .await
        .expect("router");
    assert_eq!(response.status(), 200);
    let response = corral_api::http::metrics_app(app.state.clone())
        .oneshot(get("/graphql", None))
        .await
        .expect("router");
    assert_eq!(
        response.status(),
        404,
        "the metrics address serves nothing else"
    );
    app.shutdown().await;
}
