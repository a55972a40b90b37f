//! JWT bearer tokens (`docs/access.md`, "JWT / OIDC"): a JWT from the configured issuer
//! authenticates a GraphQL request with the role its groups claim maps to; a bad one gets 401.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use corral_api::jwt::{parse_role_map, JwtConfig, JwtValidator};
use corral_api::state::ApiConfig;
use corral_tests::TestApp;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};

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

#[tokio::test]
async fn a_jwt_authenticates_with_its_mapped_role_and_a_bad_one_gets_401() {
    let validator = JwtValidator::new(JwtConfig {
        issuer: ISSUER.into(),
        audience: Some("corral".into()),
        jwks_file: None,
        hs256_secret: Some(SECRET.to_vec()),
        leeway_secs: 30,
        subject_claim: "sub".into(),
        roles_claim: "groups".into(),
        role_map: parse_role_map("corral-admins=admin,staff=viewer").expect("map"),
    })
    .expect("validator");
    let config = ApiConfig {
        jwt: Some(Arc::new(validator)),
        ..ApiConfig::default()
    };
    let app = TestApp::spawn_with(config, true).await;

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

    // A JWT mapped to no role authenticates (not 401), and may do nothing.
    let nobody = jwt(claims(json!("outsiders")), SECRET);
    let body = app
        .gql(&nobody, "{ me { subject roles } }", json!({}))
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
