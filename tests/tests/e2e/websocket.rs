//! `/graphql/ws` speaks graphql-transport-ws and authenticates in `connection_init`.

use std::net::SocketAddr;

use corral_tests::TestApp;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
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
