//! JWT bearer tokens (`docs/access.md`, "JWT / OIDC"): a JWT from the configured issuer
//! authenticates a GraphQL request with the role its groups claim maps to; a bad one gets 401;
//! a websocket opened with one outlives access changes and closes at its `exp`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use corral_api::jwt::{parse_role_map, JwtConfig, JwtValidator};
use corral_api::state::ApiConfig;
use corral_tests::TestApp;
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const ISSUER: &str = "https://sso.example.com/realms/corral";
const SECRET: &[u8] = b"an-hs256-secret-of-at-least-32-bytes";

fn jwt(claims: Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("encode")
}

fn claims(groups: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": ISSUER, "aud": "corral", "sub": "carol", "exp": now + 600,
           "groups": groups, "jti": "e2e-1"})
}

fn validator() -> JwtValidator {
    JwtValidator::new(JwtConfig {
        issuer: ISSUER.into(),
        audience: Some("corral".into()),
        jwks_file: None,
        hs256_secret: Some(SECRET.to_vec()),
        leeway_secs: 30,
        subject_claim: "sub".into(),
        roles_claim: "groups".into(),
        role_map: parse_role_map("corral-admins=admin,staff=viewer").expect("map"),
    })
    .expect("validator")
}

async fn spawn() -> TestApp {
    let config = ApiConfig {
        jwt: Some(Arc::new(validator())),
        ..ApiConfig::default()
    };
    TestApp::spawn_with(config, true).await
}

#[tokio::test]
async fn a_jwt_authenticates_with_its_mapped_role_and_a_bad_one_gets_401() {
    let app = spawn().await;

    let viewer = jwt(claims(json!(["staff"])), SECRET);
    let me = app
        .data(&viewer, "{ me { subject roles expiresAt } }", json!({}))
        .await["me"]
        .clone();
    assert_eq!(me["subject"], "oidc:carol");
    assert_eq!(me["roles"], json!(["viewer"]));
    assert!(me["expiresAt"].is_string(), "{me}");
    let body = app
        .gql(
            &viewer,
            "mutation($input: CreateGroupInput!) { createGroup(input: $input) { group { id } } }",
            json!({"input": {"name": "jwt-viewer-group", "type": "DEVICE"}}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );

    // A JWT mapped to no role authenticates (not 401): it may ask who it is (no roles), and
    // do nothing else.
    let nobody = jwt(claims(json!("outsiders")), SECRET);
    let body = app
        .gql(&nobody, "{ me { subject roles } }", json!({}))
        .await;
    assert_eq!(body["data"]["me"]["roles"], json!([]), "{body}");
    let body = app
        .gql(
            &nobody,
            "{ groups(type: DEVICE) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );

    // An admin JWT may create a group.
    let admin = jwt(claims(json!(["corral-admins"])), SECRET);
    let data = app
        .data(
            &admin,
            "mutation($input: CreateGroupInput!) { createGroup(input: $input) { group { id } } }",
            json!({"input": {"name": "jwt-admin-group", "type": "DEVICE"}}),
        )
        .await;
    assert!(data["createGroup"]["group"]["id"].is_string(), "{data}");

    let post = |token: String| {
        Request::post("/graphql")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(
                json!({"query": "{ me { subject } }"}).to_string(),
            ))
            .expect("request")
    };
    let mut wrong_issuer = claims(json!(["staff"]));
    wrong_issuer["iss"] = json!("https://evil.example.com");
    let mut expired = claims(json!(["staff"]));
    expired["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
    for bad in [
        jwt(
            claims(json!(["staff"])),
            b"another-secret-also-at-least-32-bytes",
        ),
        jwt(wrong_issuer, SECRET),
        jwt(expired, SECRET),
        "not-a-jwt".to_string(),
    ] {
        let (status, body) = app.http(post(bad)).await;
        assert_eq!(status, 401, "{body}");
    }
    app.shutdown().await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("a message")
        .expect("open")
        .expect("a frame")
}

async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::Text(message.to_string().into()))
        .await
        .expect("send");
}

#[tokio::test]
async fn a_websocket_with_a_jwt_outlives_access_changes_and_closes_at_its_exp() {
    let app = spawn().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = app.router.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });
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
    let mut short = claims(json!(["staff"]));
    short["exp"] = json!(chrono::Utc::now().timestamp() + 4);
    let token = jwt(short, SECRET);
    send(
        &mut ws,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}),
    )
    .await;
    let ack = next(&mut ws).await;
    assert!(
        ack.to_text().expect("text").contains("connection_ack"),
        "{ack:?}"
    );

    // An access change (a token issued) moves the epoch: the JWT connection is not re-checked.
    corral_api::auth::create_token(&app.pool, "someone", "viewer")
        .await
        .expect("token");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    send(
        &mut ws,
        json!({"id": "1", "type": "subscribe", "payload": {"query": "{ me { subject } }"}}),
    )
    .await;
    let reply = next(&mut ws).await;
    assert!(
        reply.to_text().expect("text").contains("oidc:carol"),
        "{reply:?}"
    );
    let done = next(&mut ws).await;
    assert!(
        done.to_text().expect("text").contains("complete"),
        "{done:?}"
    );

    // At its exp, the connection is closed with 4401.
    let close = next(&mut ws).await;
    match close {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4401, "{frame:?}"),
        other => panic!("expected a close, got {other:?}"),
    }
    server.abort();
    app.shutdown().await;
}
