//! `/graphql/ws` speaks graphql-transport-ws and authenticates in `connection_init` within a
//! timeout; upgrades are refused beyond the connection caps and from other sites' pages; each
//! operation on a socket is a request of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_api::state::ApiConfig;
use corral_api::ws::{AllowedOrigins, WsConfig};
use corral_tests::served::parse_response;
use corral_tests::TestApp;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr) -> Ws {
    let mut request = format!("ws://{addr}/graphql/ws")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("connect")
        .0
}

async fn next_json(ws: &mut Ws) -> Value {
    match ws.next().await {
        Some(Ok(Message::Text(text))) => serde_json::from_str(&text).expect("json"),
        Some(Ok(Message::Close(frame))) => json!({ "closed": frame.map(|f| f.reason.to_string()) }),
        other => json!({ "other": format!("{other:?}") }),
    }
}

async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::Text(message.to_string().into()))
        .await
        .expect("send");
}

/// Connects, sends `connection_init` with `payload`, returns the server's first answer.
async fn init(addr: SocketAddr, payload: Value) -> Value {
    let mut ws = connect(addr).await;
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": payload }),
    )
    .await;
    next_json(&mut ws).await
}

#[tokio::test]
async fn connection_init_needs_a_valid_bearer_token() {
    let app = TestApp::spawn().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = app.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let ok = init(
        addr,
        json!({ "Authorization": format!("Bearer {}", app.viewer) }),
    )
    .await;
    assert_eq!(ok["type"], "connection_ack", "{ok}");
    let denied = init(addr, json!({ "Authorization": "Bearer crl_wrong" })).await;
    assert_ne!(denied["type"], "connection_ack", "{denied}");
    let missing = init(addr, json!({})).await;
    assert_ne!(missing["type"], "connection_ack", "{missing}");

    // Queries over the websocket get the same loaders (and policies) as over HTTP.
    let mut ws = connect(addr).await;
    send(&mut ws, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {}", app.viewer) } })).await;
    assert_eq!(next_json(&mut ws).await["type"], "connection_ack");
    let query = "{ root(type: DEVICE) { name parent { name } ancestors { name } children { totalCount } } }";
    send(
        &mut ws,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": query } }),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["type"], "next", "{reply}");
    assert_eq!(
        reply["payload"]["data"]["root"],
        json!({ "name": "Inventory", "parent": null, "ancestors": [], "children": { "totalCount": 0 } })
    );
    let mutation =
        "mutation { createGroup(input: {name: \"x\", type: DEVICE}) { userErrors { code } } }";
    send(
        &mut ws,
        json!({ "id": "2", "type": "subscribe", "payload": { "query": mutation } }),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({ "id": "1", "type": "complete" })
    );
    let reply = next_json(&mut ws).await;
    assert_eq!(
        reply["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{reply}"
    );
    server.abort();
    app.shutdown().await;
}

/// Serves `router` on 127.0.0.1:0; with `connect_info`, as `corral serve` does (so that
/// handlers see the TCP peer).
async fn serve(
    router: axum::Router,
    connect_info: bool,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let _ = if connect_info {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        } else {
            axum::serve(listener, router).await
        };
    });
    (addr, server)
}

/// Upgrades with an `Origin` header (when given).
async fn connect_from(
    addr: SocketAddr,
    origin: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}/graphql/ws")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("origin"));
    }
    Ok(tokio_tungstenite::connect_async(request).await?.0)
}

/// Sends `connection_init` with `token` and expects the ack.
async fn authenticate(ws: &mut Ws, token: &str) {
    send(
        ws,
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }),
    )
    .await;
    let ack = tokio::time::timeout(Duration::from_secs(10), next_json(ws))
        .await
        .expect("an answer to connection_init");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
}

/// A connection authenticated with `token`.
async fn authenticated(addr: SocketAddr, token: &str) -> Ws {
    let mut ws = connect(addr).await;
    authenticate(&mut ws, token).await;
    ws
}

/// Runs `query` as operation `id` and returns its one result (after which it completes).
async fn run(ws: &mut Ws, id: &str, query: &str) -> Value {
    send(
        ws,
        json!({ "id": id, "type": "subscribe", "payload": { "query": query } }),
    )
    .await;
    let reply = tokio::time::timeout(Duration::from_secs(20), next_json(ws))
        .await
        .expect("a result");
    assert_eq!(reply["type"], "next", "{reply}");
    assert_eq!(reply["id"], id, "{reply}");
    let done = tokio::time::timeout(Duration::from_secs(5), next_json(ws))
        .await
        .expect("complete");
    assert_eq!(done, json!({ "id": id, "type": "complete" }));
    reply["payload"].clone()
}

/// Whether `ws` still answers a query.
async fn answers(ws: &mut Ws, id: &str) {
    let result = run(ws, id, "{ root(type: DEVICE) { name } }").await;
    assert_eq!(result["data"]["root"]["name"], "Inventory", "{result}");
}

/// An upgrade request the server is expected to refuse: its status and JSON body.
async fn refused_upgrade(addr: SocketAddr, origin: Option<&str>) -> (u16, Value) {
    let mut raw = format!(
        "GET /graphql/ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: graphql-transport-ws\r\n"
    );
    if let Some(origin) = origin {
        raw.push_str(&format!("Origin: {origin}\r\n"));
    }
    raw.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw.as_bytes()).await.expect("write");
    let mut received = Vec::new();
    let read = async {
        loop {
            let mut buffer = [0u8; 4096];
            let n = stream.read(&mut buffer).await.expect("read");
            received.extend_from_slice(&buffer[..n]);
            let complete = parse_response(&received).is_some_and(|r| {
                r.status == 101
                    || r.header("content-length")
                        .and_then(|l| l.parse::<usize>().ok())
                        .is_some_and(|l| r.body.len() >= l)
            });
            if n == 0 || complete {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer to the upgrade");
    let response = parse_response(&received).expect("an HTTP response");
    (response.status, response.json())
}

/// Retries an upgrade until it is accepted (a freed slot is seen once the server has noticed
/// the close), for at most 5 s.
async fn connect_when_admitted(addr: SocketAddr) -> Ws {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match connect_from(addr, None).await {
            Ok(ws) => return ws,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("no slot was freed within 5 s: {err}"),
        }
    }
}

fn with_websocket(websocket: WsConfig) -> ApiConfig {
    ApiConfig {
        websocket,
        ..ApiConfig::default()
    }
}

#[tokio::test]
async fn a_socket_that_never_sends_connection_init_is_closed_with_4408_after_the_init_timeout() {
    let app = TestApp::spawn_with(
        with_websocket(WsConfig {
            init_timeout: Duration::from_millis(1000),
            ..WsConfig::default()
        }),
        true,
    )
    .await;
    let (addr, server) = serve(app.router.clone(), false).await;
    let started = Instant::now();
    let mut silent = connect(addr).await;
    let mut ws = authenticated(addr, &app.viewer).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.next())
        .await
        .expect("the silent socket is closed, not left open");
    match closed {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 4408, "{frame:?}");
            assert_eq!(frame.reason.as_str(), "Connection initialisation timeout");
        }
        other => panic!("expected a close frame with 4408, got {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "not before the timeout"
    );
    // An authenticated connection outlives the timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    answers(&mut ws, "1").await;
    server.abort();
    app.shutdown().await;
}

#[tokio::test]
async fn connections_waiting_to_authenticate_beyond_the_cap_get_503_while_authenticated_ones_keep_working(
) {
    let app = TestApp::spawn_with(
        with_websocket(WsConfig {
            max_pending: 2,
            ..WsConfig::default()
        }),
        true,
    )
    .await;
    let (addr, server) = serve(app.router.clone(), false).await;
    let mut working = authenticated(addr, &app.viewer).await;
    let mut first = connect(addr).await;
    let mut second = connect(addr).await;
    let (status, body) = refused_upgrade(addr, None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "TOO_MANY_CONNECTIONS",
        "{body}"
    );
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("CORRAL_WS_MAX_PENDING"), "{message}");
    answers(&mut working, "1").await;
    // A waiting connection that authenticates frees its slot, and so does one that closes.
    authenticate(&mut second, &app.operator).await;
    let mut third = connect_when_admitted(addr).await;
    assert_eq!(refused_upgrade(addr, None).await.0, 503);
    first.close(None).await.expect("close");
    let mut fourth = connect_when_admitted(addr).await;
    authenticate(&mut third, &app.viewer).await;
    authenticate(&mut fourth, &app.viewer).await;
    answers(&mut second, "1").await;
    answers(&mut fourth, "1").await;
    answers(&mut working, "2").await;
    server.abort();
    app.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_on_open_websockets_get_503_until_one_closes() {
    let app = TestApp::spawn_with(
        with_websocket(WsConfig {
            max_connections: 2,
            ..WsConfig::default()
        }),
        true,
    )
    .await;
    let (addr, server) = serve(app.router.clone(), false).await;
    let mut first = authenticated(addr, &app.viewer).await;
    let mut second = authenticated(addr, &app.viewer).await;
    let (status, body) = refused_upgrade(addr, None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "TOO_MANY_CONNECTIONS",
        "{body}"
    );
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("CORRAL_WS_MAX_CONNECTIONS"), "{message}");
    answers(&mut first, "1").await;
    second.close(None).await.expect("close");
    let mut third = connect_when_admitted(addr).await;
    authenticate(&mut third, &app.viewer).await;
    answers(&mut third, "1").await;
    server.abort();
    app.shutdown().await;
}

#[tokio::test]
async fn an_upgrade_from_another_sites_page_is_refused_unless_its_origin_is_allowed() {
    let app = TestApp::spawn().await;
    let (addr, server) = serve(app.router.clone(), false).await;
    let (status, body) = refused_upgrade(addr, Some("https://evil.example")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("CORRAL_WS_ALLOWED_ORIGINS"), "{message}");
    // The server's own pages and clients that are not browsers (no Origin) connect.
    let mut same = connect_from(addr, Some(&format!("http://{addr}")))
        .await
        .expect("a same-origin upgrade is accepted");
    authenticate(&mut same, &app.viewer).await;
    let mut plain = connect_from(addr, None)
        .await
        .expect("an upgrade without Origin is accepted");
    authenticate(&mut plain, &app.viewer).await;

    // With an allowed origin configured, that origin connects too; others still do not.
    let mut state = app.state.clone();
    state.config = Arc::new(with_websocket(WsConfig {
        allowed_origins: AllowedOrigins::parse("https://app.example.com").expect("origins"),
        ..WsConfig::default()
    }));
    let (allowing, allowing_server) = serve(corral_api::http::app(state), false).await;
    let mut listed = connect_from(allowing, Some("https://app.example.com"))
        .await
        .expect("an allowed origin is accepted");
    authenticate(&mut listed, &app.viewer).await;
    answers(&mut listed, "1").await;
    assert_eq!(
        refused_upgrade(allowing, Some("https://evil.example"))
            .await
            .0,
        403
    );
    let mut same = connect_from(allowing, Some(&format!("http://{allowing}")))
        .await
        .expect("the server's own origin is still accepted");
    authenticate(&mut same, &app.viewer).await;
    allowing_server.abort();
    server.abort();
    app.shutdown().await;
}

#[tokio::test]
async fn each_mutation_on_a_socket_has_its_own_correlation_id_and_the_client_address() {
    let app = TestApp::spawn().await;
    let (addr, server) = serve(app.router.clone(), true).await;
    let mut ws = authenticated(addr, &app.admin).await;
    let mut groups = Vec::new();
    for (id, name) in [("1", "ws-a"), ("2", "ws-b")] {
        let query = format!(
            "mutation {{ createGroup(input: {{name: \"{name}\", type: DEVICE}}) {{ group {{ id }} userErrors {{ code }} }} }}"
        );
        let result = run(&mut ws, id, &query).await;
        assert_eq!(
            result["data"]["createGroup"]["userErrors"],
            json!([]),
            "{result}"
        );
        let group = result["data"]["createGroup"]["group"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        groups.push(group);
    }
    let mut written = Vec::new();
    for group in &groups {
        let rows: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT DISTINCT metadata->>'correlation_id', metadata->>'client_addr', \
             metadata->>'actor_subject' FROM events WHERE aggregate_id = $1",
        )
        .bind(group)
        .fetch_all(&app.pool)
        .await
        .expect("events");
        assert_eq!(
            rows.len(),
            1,
            "one request wrote {group}'s events: {rows:?}"
        );
        written.push(rows[0].clone());
    }
    let (first, second) = (&written[0], &written[1]);
    assert!(first.0.is_some(), "{first:?}");
    assert_ne!(
        first.0, second.0,
        "two operations on one socket share a correlation id"
    );
    for (_, client, subject) in &written {
        assert_eq!(client.as_deref(), Some("127.0.0.1"), "{written:?}");
        assert_eq!(subject.as_deref(), Some("alice"), "{written:?}");
    }
    server.abort();
    app.shutdown().await;
}
