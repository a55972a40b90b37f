//! A revoked token stops working within a second on every `corral serve` of a deployment:
//! HTTP requests, and open websockets (closed with a reason), subscriptions included; whether
//! it was revoked with `corral token revoke` or the `revokeToken` mutation. An expired token
//! stops working at its expiry, and `corral serve`'s worker records `TokenExpired`.

use std::time::{Duration, Instant};

use corral_tests::served::Served;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Each test runs one or two `corral serve`s, each with pools of its own: run one test at a
/// time so that the database server's connections suffice.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn websocket(port: u16, token: &str) -> Ws {
    let mut request = format!("ws://127.0.0.1:{port}/graphql/ws")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    ws.send(Message::Text(init.to_string().into()))
        .await
        .expect("send");
    let ack = next(&mut ws).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws
}

/// The next message: JSON text, or `{"closed": code, "reason": ..}`.
async fn next(ws: &mut Ws) -> Value {
    match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str(&text).expect("json"),
        Ok(Some(Ok(Message::Close(frame)))) => json!({
            "closed": frame.as_ref().map(|f| u16::from(f.code)),
            "reason": frame.map(|f| f.reason.to_string()),
        }),
        Ok(None) => json!({ "closed": null }),
        other => json!({ "other": format!("{other:?}") }),
    }
}

async fn subscribe(ws: &mut Ws, id: &str, query: &str) {
    let message = json!({ "id": id, "type": "subscribe", "payload": { "query": query } });
    ws.send(Message::Text(message.to_string().into()))
        .await
        .expect("send");
}

fn create_token(served: &Served, subject: &str, role: &str) -> String {
    let (ok, stdout, stderr) =
        served.corral(&["token", "create", "--subject", subject, "--role", role]);
    assert!(ok, "{stderr}");
    stdout.lines().last().expect("a line").to_string()
}

#[tokio::test]
async fn a_token_revoked_on_one_process_stops_working_on_another_within_a_second() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let bin = env!("CARGO_BIN_EXE_corral");
    let first = Served::start(bin, &[]).await;
    let second = first.another(&[]).await;
    let eve = create_token(&first, "eve", "admin");

    // On the second process: an HTTP request (its token now cached), a websocket that
    // answers queries, and one following the `events` subscription.
    let who = second
        .data(&eve, "{ root(type: DEVICE) { name } }", json!({}))
        .await;
    assert_eq!(who["root"]["name"], "Inventory");
    let mut ws = websocket(second.port, &eve).await;
    subscribe(&mut ws, "1", "{ root(type: DEVICE) { name } }").await;
    assert_eq!(next(&mut ws).await["type"], "next");
    assert_eq!(next(&mut ws).await["type"], "complete");
    let mut feed = websocket(second.port, &eve).await;
    subscribe(
        &mut feed,
        "e",
        "subscription { events { position eventType } }",
    )
    .await;

    // Revoked through the first process's database, as an operator would.
    let (ok, stdout, stderr) = first.corral(&["token", "revoke", &eve[..12], "--reason", "left"]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("revoked token"), "{stdout}");
    let revoked = Instant::now();

    // Both sockets are closed with the reason, well within a second.
    for socket in [&mut ws, &mut feed] {
        let closed = loop {
            let m = next(socket).await;
            if m.get("closed").is_some() || m.get("other").is_some() {
                break m;
            }
            // The events feed may deliver the revocation itself first.
        };
        assert_eq!(closed["closed"], 4401, "{closed}");
        assert!(
            closed["reason"].as_str().unwrap_or("").contains("revoked"),
            "{closed}"
        );
    }
    let closed_after = revoked.elapsed();
    assert!(
        closed_after < Duration::from_secs(1),
        "the sockets closed {closed_after:?} after the revocation"
    );

    // HTTP on the second process refuses the token within a second too.
    let refused_after = loop {
        let response = second
            .post_graphql(&eve, "{ root(type: DEVICE) { name } }", json!({}))
            .await;
        if response.status == 401 {
            break revoked.elapsed();
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "still {} after 5 s",
            response.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        refused_after < Duration::from_secs(1),
        "HTTP refused the token only {refused_after:?} after the revocation"
    );
    // A new websocket cannot authenticate with it.
    let mut request = format!("ws://127.0.0.1:{}/graphql/ws", second.port)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut again, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {eve}") } });
    again
        .send(Message::Text(init.to_string().into()))
        .await
        .expect("send");
    let answer = next(&mut again).await;
    assert_ne!(answer["type"], "connection_ack", "{answer}");

    // The other tokens are untouched, and the revocation is in the log for auditors.
    let started = Instant::now();
    let edges = loop {
        let log = second
            .data(
                &second.auditor,
                "{ auditLog(filter: { eventTypes: [\"TokenRevoked\"] }) { edges { node { aggregateType eventType payload } } } }",
                json!({}),
            )
            .await;
        let edges = log["auditLog"]["edges"].as_array().expect("edges").clone();
        if !edges.is_empty() || started.elapsed() > Duration::from_secs(15) {
            break edges;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!(edges[0]["node"]["aggregateType"], "Subject");
    assert!(!edges[0]["node"]["payload"].to_string().contains(&eve[12..]));

    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_token_created_and_revoked_over_graphql_stops_working_on_another_process() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let bin = env!("CARGO_BIN_EXE_corral");
    let first = Served::start(bin, &[]).await;
    let second = first.another(&[]).await;
    let created = first
        .data(
            &first.admin,
            "mutation { createToken(input: { subject: \"ci-bot\", role: \"viewer\" }) { secret token { id prefix } userErrors { code } } }",
            json!({}),
        )
        .await["createToken"]
        .clone();
    assert_eq!(created["userErrors"], json!([]), "{created}");
    let secret = created["secret"].as_str().expect("secret").to_string();
    let prefix = created["token"]["prefix"]
        .as_str()
        .expect("prefix")
        .to_string();
    let me = second
        .data(&secret, "{ me { subject roles } }", json!({}))
        .await;
    assert_eq!(
        me["me"],
        json!({ "subject": "ci-bot", "roles": ["viewer"] })
    );
    let mut ws = websocket(second.port, &secret).await;
    // Over the websocket too, `me` is the connection's token.
    subscribe(&mut ws, "me", "{ me { subject tokenId expiresAt } }").await;
    let answer = next(&mut ws).await;
    assert_eq!(answer["type"], "next", "{answer}");
    assert_eq!(
        answer["payload"]["data"]["me"],
        json!({ "subject": "ci-bot", "tokenId": created["token"]["id"], "expiresAt": null })
    );
    assert_eq!(next(&mut ws).await["type"], "complete");

    let revoked = first
        .data(
            &first.admin,
            "mutation($t: String!) { revokeToken(input: { token: $t, reason: \"rotated\" }) { token { status } userErrors { code } } }",
            json!({ "t": prefix }),
        )
        .await["revokeToken"]
        .clone();
    let at = Instant::now();
    assert_eq!(revoked["token"]["status"], "REVOKED", "{revoked}");
    let closed = next(&mut ws).await;
    assert_eq!(closed["closed"], 4401, "{closed}");
    loop {
        let response = second
            .post_graphql(&secret, "{ me { subject } }", json!({}))
            .await;
        if response.status == 401 {
            break;
        }
        assert!(
            at.elapsed() < Duration::from_secs(1),
            "still {} after a second",
            response.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(at.elapsed() < Duration::from_secs(1));
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn serve_records_an_expiry_after_the_token_stopped_working() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let bin = env!("CARGO_BIN_EXE_corral");
    let served = Served::start(bin, &[("CORRAL_TOKEN_EXPIRY_SECS", "1")]).await;
    let pool = served.db.as_ref().expect("database").pool(2).await;
    let commands = corral_projections::commands::access::access_commands(
        pool.clone(),
        corral_projections::wake::CommitSignal::new(vec![]),
    );
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let request = corral_api::auth::NewToken {
        subject: "short-lived".into(),
        bindings: vec![corral_domain::access::Binding::global("viewer")],
        expires_at: Some(expires_at),
    };
    let metadata = corral_domain::metadata::EventMetadata::system(
        corral_domain::metadata::Source::Cli,
        "test",
    );
    let token = corral_api::auth::issue(&commands, &pool, request, &metadata)
        .await
        .expect("issued");
    let mut ws = websocket(served.port, &token.secret).await;
    // The socket is closed at the expiry, before any event says so.
    let closed = next(&mut ws).await;
    assert_eq!(closed["closed"], 4401, "{closed}");
    assert!(chrono::Utc::now() >= expires_at);
    let response = served
        .post_graphql(&token.secret, "{ me { subject } }", json!({}))
        .await;
    assert_eq!(response.status, 401);

    // The leader of token_expiry records it within a pass or two.
    let started = Instant::now();
    let source: String = loop {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT metadata ->> 'source' FROM events
              WHERE event_type = 'TokenExpired' AND payload -> 'TokenExpired' ->> 'token_id' = $1",
        )
        .bind(token.token_id.to_string())
        .fetch_optional(&pool)
        .await
        .expect("events");
        if let Some(found) = found {
            break found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no TokenExpired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(source, "worker");
    let (ok, stdout, stderr) =
        served.corral(&["token", "list", "--all", "--subject", "short-lived"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(" expired "), "{stdout}");
    pool.close().await;
    served.stop().await;
}
