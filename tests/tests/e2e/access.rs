//! Tokens over GraphQL: admins issue, list and revoke them (`createToken`, `tokens`,
//! `revokeToken`), every role asks who it is (`me`), the audit trail names the admin, and a
//! secret never appears anywhere but in `createToken`'s answer.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use corral_tests::TestApp;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const CREATE: &str = "mutation($input: CreateTokenInput!) { createToken(input: $input) { secret token { id prefix subject roles status createdAt expiresAt revokedAt lastUsedAt } userErrors { field code message } } }";
const REVOKE: &str = "mutation($input: RevokeTokenInput!) { revokeToken(input: $input) { token { id prefix status revokedAt } userErrors { field code message } } }";
const TOKENS: &str = "query($subject: String, $all: Boolean, $first: Int) { tokens(subject: $subject, includeInactive: $all, first: $first) { id prefix subject roles status createdAt expiresAt revokedAt lastUsedAt } }";
const ME: &str = "{ me { subject roles tokenId expiresAt } }";
const LOG: &str = "query($filter: AuditLogFilter) { auditLog(filter: $filter, first: 100) { edges { node { eventType actor { subject role } source reason payload } } } }";

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

async fn events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

/// The HTTP status of a query sent with `token`.
async fn status(app: &TestApp, token: &str) -> StatusCode {
    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(json!({ "query": ME }).to_string()))
        .expect("request");
    app.http(request).await.0
}

#[tokio::test]
async fn an_admin_issues_lists_and_revokes_a_token_over_graphql() {
    let app = TestApp::spawn().await;
    let created = app
        .data(
            &app.admin,
            CREATE,
            json!({ "input": { "subject": " svc-feed ", "role": "operator", "expiresIn": "1h", "reason": "the feed poller" } }),
        )
        .await["createToken"]
        .clone();
    assert_eq!(created["userErrors"], json!([]), "{created}");
    let secret = created["secret"].as_str().expect("secret").to_string();
    let token = &created["token"];
    let id = token["id"].as_str().expect("id").to_string();
    assert!(secret.starts_with("crl_") && secret.len() == 68, "{secret}");
    assert_eq!(token["prefix"], secret[..12]);
    assert_eq!(token["subject"], "svc-feed");
    assert_eq!(token["roles"], json!(["operator"]));
    assert_eq!(token["status"], "ACTIVE");
    assert!(token["revokedAt"].is_null());
    let expires: chrono::DateTime<Utc> =
        serde_json::from_value(token["expiresAt"].clone()).expect("expiresAt");
    let left = expires - Utc::now();
    assert!(
        left > chrono::Duration::minutes(58) && left <= chrono::Duration::hours(1),
        "{left}"
    );

    // It works over HTTP, as what it is.
    let me = app.data(&secret, ME, json!({})).await["me"].clone();
    assert_eq!(me["subject"], "svc-feed");
    assert_eq!(me["roles"], json!(["operator"]));
    assert_eq!(me["tokenId"], id.as_str());
    assert_eq!(me["expiresAt"], token["expiresAt"]);

    // Listed, newest first, without its secret or its hash anywhere.
    let hash = hex::encode(Sha256::digest(secret.as_bytes()));
    let all = app
        .gql(&app.admin, TOKENS, json!({ "all": true, "first": 1000 }))
        .await;
    let text = all.to_string();
    assert!(!text.contains(&secret) && !text.contains(&hash), "{text}");
    assert!(
        !text.contains(&secret[12..]),
        "no part of the secret past its prefix"
    );
    let listed = all["data"]["tokens"].as_array().expect("tokens");
    assert_eq!(listed[0]["id"], id.as_str(), "newest first: {text}");
    assert_eq!(listed.len(), 5, "the four role tokens and this one: {text}");
    let mine = app
        .data(&app.admin, TOKENS, json!({ "subject": "svc-feed" }))
        .await["tokens"]
        .clone();
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
    assert_eq!(mine[0]["status"], "ACTIVE");
    let capped = app
        .data(&app.admin, TOKENS, json!({ "first": 2, "all": true }))
        .await["tokens"]
        .clone();
    assert_eq!(capped.as_array().map(Vec::len), Some(2));
    for bad in [0, 1001, -1] {
        let body = app.gql(&app.admin, TOKENS, json!({ "first": bad })).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "first {bad}: {body}");
    }

    // Revoked by its prefix: refused within a second (the token is cached by now).
    let revoked = app
        .data(
            &app.admin,
            REVOKE,
            json!({ "input": { "token": &secret[..12], "reason": "rotated" } }),
        )
        .await["revokeToken"]
        .clone();
    let started = Instant::now();
    assert_eq!(revoked["userErrors"], json!([]), "{revoked}");
    assert_eq!(revoked["token"]["id"], id.as_str());
    assert_eq!(revoked["token"]["status"], "REVOKED");
    assert!(revoked["token"]["revokedAt"].is_string());
    loop {
        if status(&app, &secret).await == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the revoked token still works after a second"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    // Revoking again is a no-op that answers the token as it is.
    let again = app
        .data(&app.admin, REVOKE, json!({ "input": { "token": &id } }))
        .await["revokeToken"]
        .clone();
    assert_eq!(again["userErrors"], json!([]));
    assert_eq!(again["token"]["status"], "REVOKED");
    let active = app
        .data(&app.admin, TOKENS, json!({ "subject": "svc-feed" }))
        .await["tokens"]
        .clone();
    assert_eq!(active, json!([]), "inactive tokens only when asked");
    let inactive = app
        .data(
            &app.admin,
            TOKENS,
            json!({ "subject": "svc-feed", "all": true }),
        )
        .await["tokens"]
        .clone();
    assert_eq!(inactive[0]["status"], "REVOKED");
    assert!(
        inactive[0]["lastUsedAt"].is_string(),
        "its use was recorded"
    );

    // The audit trail says which admin issued and revoked it, and never holds the secret.
    let log = app
        .gql(
            &app.auditor,
            LOG,
            json!({ "filter": { "aggregateTypes": ["Subject"] } }),
        )
        .await;
    let text = log.to_string();
    assert!(!text.contains(&secret) && !text.contains(&hash), "{text}");
    let entries: Vec<Value> = log["data"]["auditLog"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    let find = |event: &str| {
        entries
            .iter()
            .find(|e| {
                e["eventType"] == event
                    && e["payload"][event]["token_id"].as_str() == Some(id.as_str())
            })
            .unwrap_or_else(|| panic!("no {event} of the token in {text}"))
            .clone()
    };
    let created = find("TokenCreated");
    assert_eq!(
        created["actor"],
        json!({ "subject": "alice", "role": "admin" })
    );
    assert_eq!(created["source"], "api");
    assert_eq!(created["reason"], "the feed poller");
    let revoked = find("TokenRevoked");
    assert_eq!(
        revoked["actor"],
        json!({ "subject": "alice", "role": "admin" })
    );
    assert_eq!(revoked["reason"], "rotated");
    assert_eq!(revoked["payload"]["TokenRevoked"]["reason"], "rotated");
    let revocations = entries
        .iter()
        .filter(|e| e["eventType"] == "TokenRevoked")
        .count();
    assert_eq!(revocations, 1, "the second revocation wrote nothing");
    app.shutdown().await;
}

#[tokio::test]
async fn refused_token_requests_name_their_field_and_write_nothing() {
    let app = TestApp::spawn().await;
    let before = events(&app).await;
    let create = |input: Value| {
        let app = &app;
        async move {
            let payload = app
                .data(&app.admin, CREATE, json!({ "input": input }))
                .await["createToken"]
                .clone();
            assert!(payload["secret"].is_null() && payload["token"].is_null());
            payload["userErrors"][0].clone()
        }
    };
    for (input, field) in [
        (json!({ "subject": "bob", "role": "root" }), "role"),
        (json!({ "subject": "  ", "role": "viewer" }), "subject"),
        (json!({ "subject": "a\u{7}b", "role": "viewer" }), "subject"),
        (
            json!({ "subject": "x".repeat(129), "role": "viewer" }),
            "subject",
        ),
        (
            json!({ "subject": "bob", "role": "viewer", "expiresIn": "5x" }),
            "expiresIn",
        ),
        (
            json!({ "subject": "bob", "role": "viewer", "expiresIn": "10s" }),
            "expiresIn",
        ),
        (
            json!({ "subject": "bob", "role": "viewer", "reason": "a\u{202e}b" }),
            "reason",
        ),
    ] {
        let error = create(input.clone()).await;
        assert_eq!(error["code"], "INVALID", "{input}: {error}");
        assert_eq!(error["field"], field, "{input}: {error}");
    }
    let secrets: i64 = sqlx::query_scalar("SELECT count(*) FROM access_token_secrets")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(secrets, 4, "no secret is left behind by a refused request");

    let revoke = |token: &str| {
        let app = &app;
        let token = token.to_string();
        async move {
            app.data(&app.admin, REVOKE, json!({ "input": { "token": token } }))
                .await["revokeToken"]["userErrors"][0]
                .clone()
        }
    };
    let error = revoke("crl_00000000").await;
    assert_eq!(error["code"], "NOT_FOUND", "{error}");
    assert_eq!(error["field"], "token");
    let error = revoke(&uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(error["code"], "NOT_FOUND", "{error}");
    assert_eq!(events(&app).await, before, "nothing was written");

    // Two tokens adopted from the old table share the prefix `legacy`: name one by its id.
    for (subject, secret) in [("old-a", "crl_old_a"), ("old-b", "crl_old_b")] {
        sqlx::query(
            "INSERT INTO api_tokens (id, subject, role, token_hash) VALUES ($1, $2, 'viewer', $3)",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(subject)
        .bind(Sha256::digest(secret.as_bytes()).to_vec())
        .execute(&app.pool)
        .await
        .expect("legacy token");
    }
    corral_api::auth::adopt_legacy_tokens(&app.pool)
        .await
        .expect("adopted");
    let error = revoke("legacy").await;
    assert_eq!(error["code"], "INVALID", "{error}");
    assert_eq!(error["field"], "token");
    assert!(
        error["message"].as_str().unwrap_or("").contains("2 tokens"),
        "{error}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn only_admins_manage_tokens_and_every_role_knows_who_it_is() {
    let app = TestApp::spawn().await;
    for (token, subject, role) in [
        (&app.admin, "alice", "admin"),
        (&app.operator, "oscar", "operator"),
        (&app.viewer, "vera", "viewer"),
        (&app.auditor, "audrey", "auditor"),
    ] {
        let me = app.data(token, ME, json!({})).await["me"].clone();
        assert_eq!(me["subject"], subject, "{me}");
        assert_eq!(me["roles"], json!([role]), "{me}");
        assert!(me["expiresAt"].is_null());
        let id: uuid::Uuid = me["tokenId"].as_str().expect("id").parse().expect("uuid");
        let (listed,): (String,) =
            sqlx::query_as("SELECT s.subject FROM access_tokens t JOIN access_subjects s USING (subject_id) WHERE t.token_id = $1")
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .expect("the token");
        assert_eq!(listed, subject);
    }
    let before = events(&app).await;
    let admin_id = app.data(&app.admin, ME, json!({})).await["me"]["tokenId"].clone();
    for token in [&app.viewer, &app.operator, &app.auditor] {
        let body = app
            .gql(
                token,
                CREATE,
                json!({ "input": { "subject": "mallory", "role": "admin" } }),
            )
            .await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        assert!(!body.to_string().contains("crl_"), "{body}");
        let body = app
            .gql(token, REVOKE, json!({ "input": { "token": admin_id } }))
            .await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        let body = app.gql(token, TOKENS, json!({})).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        assert!(body["data"].is_null(), "{body}");
    }
    assert_eq!(
        events(&app).await,
        before,
        "no forbidden call wrote an event"
    );
    assert_eq!(status(&app, &app.admin).await, StatusCode::OK);
    app.shutdown().await;
}

/// Issues a token of `subject` (viewer) expiring at `expires_at`, as the command line does.
async fn issue_expiring(
    pool: &sqlx::PgPool,
    commands: &corral_projections::commands::AccessCommands,
    subject: &str,
    expires_at: Option<chrono::DateTime<Utc>>,
) -> corral_api::auth::IssuedToken {
    let request = corral_api::auth::NewToken {
        subject: subject.to_string(),
        bindings: vec![corral_domain::access::Binding::global("viewer")],
        expires_at,
    };
    let metadata = corral_domain::metadata::EventMetadata::system(
        corral_domain::metadata::Source::Cli,
        "test",
    );
    corral_api::auth::issue(commands, pool, request, &metadata)
        .await
        .expect("issued")
}

/// The metadata of the `TokenExpired` events of `token`.
async fn expiries(pool: &sqlx::PgPool, token: uuid::Uuid) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT metadata FROM events
          WHERE aggregate_type = 'Subject' AND event_type = 'TokenExpired'
            AND payload -> 'TokenExpired' ->> 'token_id' = $1",
    )
    .bind(token.to_string())
    .fetch_all(pool)
    .await
    .expect("events")
}

#[tokio::test]
async fn one_pass_of_the_expiry_worker_records_what_is_due_and_only_that() {
    use corral_workers::token_expiry::{expire_due, ExpiryPass};
    let db = corral_tests::TestDb::new().await;
    let pool = db.pool(4).await;
    let commands = corral_projections::commands::access::access_commands(
        pool.clone(),
        corral_projections::wake::CommitSignal::new(vec![]),
    );
    let now = Utc::now();
    let hour = chrono::Duration::hours(1);
    let due = issue_expiring(&pool, &commands, "svc", Some(now + hour)).await;
    let later = issue_expiring(&pool, &commands, "svc", Some(now + hour * 5)).await;
    let never = issue_expiring(&pool, &commands, "svc", None).await;
    let revoked = issue_expiring(&pool, &commands, "other", Some(now + hour)).await;
    let metadata = corral_domain::metadata::EventMetadata::system(
        corral_domain::metadata::Source::Cli,
        "test",
    );
    corral_api::auth::revoke(
        &commands,
        &pool,
        &revoked.token_id.to_string(),
        None,
        &metadata,
    )
    .await
    .expect("revoked");

    let nothing = expire_due(&pool, &commands, now).await.expect("pass");
    assert_eq!(nothing, ExpiryPass::default(), "nothing is due yet");
    let pass = expire_due(&pool, &commands, now + hour * 2)
        .await
        .expect("pass");
    assert_eq!(
        pass,
        ExpiryPass {
            due: 1,
            expired: 1,
            failed: 0
        },
        "only the live token past its expiry"
    );
    let recorded = expiries(&pool, due.token_id).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["source"], "worker");
    assert_eq!(recorded[0]["actor_subject"], "corral");
    for other in [&later, &never, &revoked] {
        assert!(expiries(&pool, other.token_id).await.is_empty());
    }
    let expired_at: Option<chrono::DateTime<Utc>> =
        sqlx::query_scalar("SELECT expired_at FROM access_tokens WHERE token_id = $1")
            .bind(due.token_id)
            .fetch_one(&pool)
            .await
            .expect("registry");
    assert!(expired_at.is_some(), "the registry has it");
    // Recorded once: the next pass finds nothing.
    let again = expire_due(&pool, &commands, now + hour * 2)
        .await
        .expect("pass");
    assert_eq!(again, ExpiryPass::default());
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn the_running_worker_records_an_expiry_and_the_token_lists_as_expired() {
    let app = TestApp::spawn().await;
    let commands = app.state.commands.access().clone();
    let expires_at = Utc::now() + chrono::Duration::milliseconds(1500);
    let token = issue_expiring(&app.pool, &commands, "short-lived", Some(expires_at)).await;
    assert_eq!(status(&app, &token.secret).await, StatusCode::OK);
    // The app records expiries every second (CORRAL_TOKEN_EXPIRY_SECS in production).
    let started = Instant::now();
    let recorded = loop {
        let found = expiries(&app.pool, token.token_id).await;
        if !found.is_empty() {
            break found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no TokenExpired within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(Utc::now() >= expires_at, "not before the expiry");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["source"], "worker");
    assert_eq!(status(&app, &token.secret).await, StatusCode::UNAUTHORIZED);
    let listed = app
        .data(
            &app.admin,
            TOKENS,
            json!({ "subject": "short-lived", "all": true }),
        )
        .await["tokens"]
        .clone();
    assert_eq!(listed[0]["status"], "EXPIRED", "{listed}");
    assert!(listed[0]["revokedAt"].is_null());
    app.shutdown().await;
}

const GRANT: &str = "mutation($input: RoleInput!) { grantRole(input: $input) { subject roles userErrors { field code message } } }";
const REVOKE_ROLE: &str = "mutation($input: RoleInput!) { revokeRole(input: $input) { subject roles userErrors { field code message } } }";
const CREATE_GROUP: &str = "mutation($input: CreateGroupInput!) { createGroup(input: $input) { group { id } userErrors { code message } } }";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A websocket of `secret` on a server of `app`'s router, acknowledged (with the server's
/// task, to abort at the end).
async fn open_socket(app: &TestApp, secret: &str) -> (Ws, tokio::task::JoinHandle<()>) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

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
    let mut ws: Ws = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect")
        .0;
    let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {secret}")}});
    ws.send(Message::Text(init.to_string().into()))
        .await
        .expect("send");
    let ack = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("ack")
        .expect("open")
        .expect("frame");
    assert!(
        ack.to_text().expect("text").contains("connection_ack"),
        "{ack:?}"
    );
    (ws, server)
}

/// The close frame the server sends next (within 5 s).
async fn next_close(ws: &mut Ws) -> tokio_tungstenite::tungstenite::protocol::CloseFrame {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed within 5 s");
    close.expect("a close frame")
}

/// The top-level error code of a `createGroup` sent with `token` ("" when it went through).
async fn create_group_code(app: &TestApp, token: &str, name: &str) -> String {
    let body = app
        .gql(
            token,
            CREATE_GROUP,
            json!({ "input": { "name": name, "type": "DEVICE" } }),
        )
        .await;
    code(&body).to_string()
}

#[tokio::test]
async fn revoking_a_role_reaches_http_and_open_websockets_and_granting_it_back_restores_it() {
    let app = TestApp::spawn().await;
    let created = app
        .data(
            &app.admin,
            CREATE,
            json!({ "input": { "subject": "ops-lead", "role": "admin" } }),
        )
        .await["createToken"]
        .clone();
    let secret = created["secret"].as_str().expect("secret").to_string();
    assert_eq!(create_group_code(&app, &secret, "Before").await, "");

    // An open websocket of that token.
    let (mut ws, server) = open_socket(&app, &secret).await;

    // The admin takes `admin` away: the token has no role left.
    let revoked = app
        .data(
            &app.admin,
            REVOKE_ROLE,
            json!({ "input": { "subject": "ops-lead", "role": "admin", "reason": "stepped down" } }),
        )
        .await["revokeRole"]
        .clone();
    let started = Instant::now();
    assert_eq!(revoked["userErrors"], json!([]), "{revoked}");
    assert_eq!(revoked["subject"], "ops-lead");
    assert_eq!(revoked["roles"], json!([]));
    loop {
        let code = create_group_code(&app, &secret, "During").await;
        if code == "FORBIDDEN" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still allowed after a second: {code:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(1));

    // The open websocket is closed with 4403 (its roles changed).
    let frame = next_close(&mut ws).await;
    assert_eq!(u16::from(frame.code), 4403, "{frame:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Granting the role back (the token lists it) makes the token work again.
    let granted = app
        .data(
            &app.admin,
            GRANT,
            json!({ "input": { "subject": "ops-lead", "role": "admin", "reason": "back" } }),
        )
        .await["grantRole"]
        .clone();
    assert_eq!(granted["userErrors"], json!([]), "{granted}");
    assert_eq!(granted["roles"], json!(["admin"]));
    let started = Instant::now();
    loop {
        let code = create_group_code(&app, &secret, "After").await;
        if code.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still refused after a second: {code:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The trail names the admin and the reasons.
    let log = app
        .data(
            &app.admin,
            LOG,
            json!({ "filter": { "eventTypes": ["RoleRevoked", "RoleGranted"] } }),
        )
        .await
        .to_string();
    assert!(
        log.contains("stepped down") && log.contains("alice"),
        "{log}"
    );
    server.abort();
    app.shutdown().await;
}

#[tokio::test]
async fn a_viewer_gets_forbidden_on_roles_and_bad_role_requests_write_nothing() {
    let app = TestApp::spawn().await;
    let before = events(&app).await;
    for query in [GRANT, REVOKE_ROLE] {
        let body = app
            .gql(
                &app.viewer,
                query,
                json!({ "input": { "subject": "vera", "role": "admin" } }),
            )
            .await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        assert!(body["data"].is_null(), "{body}");
    }
    assert_eq!(
        events(&app).await,
        before,
        "no forbidden call wrote an event"
    );
    assert_eq!(
        app.data(&app.viewer, ME, json!({})).await["me"]["roles"],
        json!(["viewer"])
    );

    // Granting an unknown role, or revoking a malformed one: INVALID on `role` (revoking a
    // well-formed role that is not defined is allowed: it may be a custom role deleted
    // since); unknown subject: NOT_FOUND on `subject`.
    for (query, role) in [(GRANT, "root"), (REVOKE_ROLE, "Root Role")] {
        let body = app
            .data(
                &app.admin,
                query,
                json!({ "input": { "subject": "vera", "role": role } }),
            )
            .await;
        let payload = body
            .as_object()
            .and_then(|o| o.values().next())
            .expect("payload");
        assert_eq!(payload["userErrors"][0]["field"], "role", "{body}");
        assert_eq!(payload["userErrors"][0]["code"], "INVALID", "{body}");
    }
    let body = app
        .data(
            &app.admin,
            REVOKE_ROLE,
            json!({ "input": { "subject": "nobody-at-all", "role": "viewer" } }),
        )
        .await;
    assert_eq!(
        body["revokeRole"]["userErrors"][0]["field"], "subject",
        "{body}"
    );
    assert_eq!(
        body["revokeRole"]["userErrors"][0]["code"], "NOT_FOUND",
        "{body}"
    );
    assert_eq!(events(&app).await, before, "no refused call wrote an event");

    // A viewer whose `viewer` is revoked is refused; granted back, its token works again.
    let revoked = app
        .data(
            &app.admin,
            REVOKE_ROLE,
            json!({ "input": { "subject": "vera", "role": "viewer" } }),
        )
        .await;
    assert_eq!(revoked["revokeRole"]["roles"], json!([]), "{revoked}");
    let started = Instant::now();
    loop {
        let body = app
            .gql(
                &app.viewer,
                "{ groups(type: DEVICE, first: 1) { totalCount } }",
                json!({}),
            )
            .await;
        if code(&body) == "FORBIDDEN" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let granted = app
        .data(
            &app.admin,
            GRANT,
            json!({ "input": { "subject": "vera", "role": "viewer" } }),
        )
        .await;
    assert_eq!(
        granted["grantRole"]["roles"],
        json!(["viewer"]),
        "{granted}"
    );
    let started = Instant::now();
    loop {
        let me = app.gql(&app.viewer, ME, json!({})).await;
        if me["data"]["me"]["roles"] == json!(["viewer"]) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{me}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.shutdown().await;
}

/// A scoped viewer's `me` lists its binding, and its permissions on a group inside the
/// scope and outside it differ; the tree decides, so moving the group out changes them.
#[tokio::test]
async fn scoped_bindings_show_in_me_and_follow_the_tree() {
    let app = TestApp::spawn().await;
    let site = app.create_group("Site-A", None).await;
    let inside = app.create_group("Core", Some(&site)).await;
    let other = app.create_group("Site-B", None).await;
    let token = app.scoped_token("sally", "operator", &site).await;
    // `--scope` names a group by id or by path (ignoring case).
    for named in [site.as_str(), "Inventory/Site-A", " inventory/site-a/ "] {
        let found = corral_api::auth::resolve_scope(&app.pool, named)
            .await
            .expect("a group");
        assert_eq!(found.to_string(), site, "{named}");
    }
    assert!(
        corral_api::auth::resolve_scope(&app.pool, "Inventory/Nowhere")
            .await
            .is_err()
    );
    const PERMS: &str =
        "query($g: ID) { me { subject roles bindings { role scope } permissions(groupId: $g) } }";
    let me = app.data(&token, PERMS, json!({ "g": inside })).await;
    assert_eq!(me["me"]["roles"], json!([]));
    assert_eq!(
        me["me"]["bindings"],
        json!([{ "role": "operator", "scope": site }])
    );
    let perms = me["me"]["permissions"].as_array().expect("list").clone();
    assert!(perms.contains(&json!("group.read")), "{perms:?}");
    assert!(perms.contains(&json!("membership.edit")), "{perms:?}");
    assert!(!perms.contains(&json!("group.create")), "{perms:?}");
    assert!(
        !perms.contains(&json!("inventory.write")),
        "inventory.write is granted by global bindings only: {perms:?}"
    );
    let outside = app.data(&token, PERMS, json!({ "g": other })).await;
    assert_eq!(outside["me"]["permissions"], json!([]));
    let everywhere = app.data(&token, PERMS, json!({ "g": null })).await;
    assert_eq!(everywhere["me"]["permissions"], json!([]));

    // Move Core out of Site-A: the operator's permissions there are gone at once.
    let moved = app
        .data(
            &app.admin,
            "mutation($id: ID!, $p: ID!) { moveGroup(input: { id: $id, newParentId: $p }) { userErrors { code } } }",
            json!({ "id": inside, "p": other }),
        )
        .await;
    assert_eq!(moved["moveGroup"]["userErrors"], json!([]), "{moved}");
    let after = app.data(&token, PERMS, json!({ "g": inside })).await;
    assert_eq!(after["me"]["permissions"], json!([]), "{after}");
    app.shutdown().await;
}

/// Custom roles are events: an admin defines one from the catalog, a token bound to it gets
/// exactly those permissions, redefining or deleting it takes effect within a second, and
/// only admins may define roles.
#[tokio::test]
async fn custom_roles_are_sets_of_permissions_changed_at_run_time() {
    const DEFINE: &str = "mutation($name: String!, $p: [String!]!) { defineRole(input: { name: $name, permissions: $p, reason: \"site team\" }) { role { name builtIn permissions } userErrors { field code message } } }";
    const DELETE: &str =
        "mutation($name: String!) { deleteRole(input: { name: $name }) { userErrors { code } } }";
    const ROLES: &str = "{ roles { name builtIn permissions } }";
    const CREATE_GROUP: &str =
        "mutation { createGroup(input: { name: \"X\", type: DEVICE }) { group { id } } }";
    let app = TestApp::spawn().await;
    let group = app.create_group("Site-A", None).await;

    let refused = app
        .gql(
            &app.operator,
            DEFINE,
            json!({ "name": "netops", "p": ["group.read"] }),
        )
        .await;
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    let bad = app
        .data(
            &app.admin,
            DEFINE,
            json!({ "name": "netops", "p": ["group.fly"] }),
        )
        .await;
    assert_eq!(
        bad["defineRole"]["userErrors"][0]["field"], "permissions",
        "{bad}"
    );
    let builtin = app
        .data(
            &app.admin,
            DEFINE,
            json!({ "name": "viewer", "p": ["group.read"] }),
        )
        .await;
    assert_eq!(
        builtin["defineRole"]["userErrors"][0]["code"], "INVALID",
        "{builtin}"
    );

    let defined = app
        .data(
            &app.admin,
            DEFINE,
            json!({ "name": "netops", "p": ["membership.edit", "group.read"] }),
        )
        .await;
    assert_eq!(
        defined["defineRole"]["role"],
        json!({ "name": "netops", "builtIn": false, "permissions": ["group.read", "membership.edit"] }),
        "{defined}"
    );
    let roles = app.data(&app.admin, ROLES, json!({})).await;
    let names: Vec<&str> = roles["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["admin", "auditor", "operator", "viewer", "netops"]);

    // A token of the new role, once the role is in force.
    let created = app
        .data(
            &app.admin,
            CREATE,
            json!({ "input": { "subject": "nora", "role": "netops" } }),
        )
        .await;
    let token = created["createToken"]["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string();
    let add = "mutation($g: ID!) { addGroupMembers(input: { groupId: $g, memberIds: [\"d1\"] }) { userErrors { code } } }";
    let ok = app.gql(&token, add, json!({ "g": group })).await;
    assert!(ok["errors"].is_null(), "{ok}");
    let denied = app.gql(&token, CREATE_GROUP, json!({})).await;
    assert_eq!(code(&denied), "FORBIDDEN", "{denied}");
    let (mut ws, server) = open_socket(&app, &token).await;

    // Redefined without membership.edit: refused within a second, with no policy edit.
    app.data(
        &app.admin,
        DEFINE,
        json!({ "name": "netops", "p": ["group.read"] }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let body = app.gql(&token, add, json!({ "g": group })).await;
        if code(&body) == "FORBIDDEN" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still allowed after a second: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The open websocket of a token whose role changed is closed (4403).
    let frame = next_close(&mut ws).await;
    assert_eq!(u16::from(frame.code), 4403, "{frame:?}");
    server.abort();
    // Deleted: the binding grants nothing.
    let deleted = app
        .data(&app.admin, DELETE, json!({ "name": "netops" }))
        .await;
    assert_eq!(deleted["deleteRole"]["userErrors"], json!([]));
    let read = "query($g: ID!) { group(id: $g) { id } }";
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let body = app.gql(&token, read, json!({ "g": group })).await;
        if code(&body) == "FORBIDDEN" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a deleted role still reads: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Role' ORDER BY global_position",
    )
    .fetch_all(&app.pool)
    .await
    .expect("role events");
    assert_eq!(kinds, ["RoleDefined", "RoleDefined", "RoleDeleted"]);
    app.shutdown().await;
}
