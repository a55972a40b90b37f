//! GraphQL subscriptions over graphql-transport-ws: `events` replays then goes live without a
//! gap or a duplicate; `membershipChanges` reports members entering and leaving.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use corral_tests::TestApp;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::membership::{add, devices};

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn serve(app: &TestApp) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = app.router.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, server)
}

/// Connects and authenticates with `token`.
pub(crate) async fn connect(addr: SocketAddr, token: &str) -> Ws {
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
    assert_eq!(next(&mut ws).await["type"], "connection_ack");
    ws
}

pub(crate) async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::Text(message.to_string().into()))
        .await
        .expect("send");
}

/// The next JSON message (pings answered), or panics after 20 s.
pub(crate) async fn next(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a message within 20 s");
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).expect("json");
                if value["type"] == "ping" {
                    send(ws, json!({ "type": "pong" })).await;
                    continue;
                }
                return value;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("unexpected websocket message {other:?}"),
        }
    }
}

pub(crate) async fn subscribe(ws: &mut Ws, id: &str, query: &str, variables: Value) {
    send(
        ws,
        json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }),
    )
    .await;
}

const EVENTS: &str = "subscription($from: Position, $filter: EventStreamFilter) { events(fromPosition: $from, filter: $filter) { position eventId aggregateType aggregateId version eventType eventVersion recordedAt metadata payload hash } }";

pub(crate) async fn head(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(log_position), 0) FROM event_log")
        .fetch_one(&app.pool)
        .await
        .expect("head")
}

#[tokio::test]
async fn events_replay_then_go_live_without_gap_or_duplicate() {
    let app = TestApp::spawn().await;
    let (addr, server) = serve(&app).await;
    let a = app.create_group("Site-A", None).await;
    for i in 0..20 {
        app.create_group(&format!("Rack-{i}"), Some(&a)).await;
    }

    // Writers keep going while the subscription replays and switches to live.
    let writer = {
        let router = app.router.clone();
        let admin = app.admin.clone();
        let parent = a.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let body = json!({
                    "query": "mutation($input: CreateGroupInput!) { createGroup(input: $input) { userErrors { code } } }",
                    "variables": { "input": { "name": format!("Live-{i}"), "type": "DEVICE", "parentId": parent } }
                });
                let request = axum::http::Request::post("/graphql")
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {admin}"))
                    .body(axum::body::Body::from(body.to_string()))
                    .expect("request");
                let response = tower::ServiceExt::oneshot(router.clone(), request)
                    .await
                    .expect("router");
                assert!(response.status().is_success());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut ws = connect(addr, &app.auditor).await;
    subscribe(&mut ws, "1", EVENTS, json!({ "from": "1" })).await;
    let mut seen: Vec<i64> = vec![];
    let mut first: Option<Value> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        // Done when the writer has finished and its last event has arrived.
        if writer.is_finished() && seen.last().copied() == Some(head(&app).await) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "caught up within 60 s: {seen:?}"
        );
        let Ok(message) = tokio::time::timeout(Duration::from_millis(500), next(&mut ws)).await
        else {
            continue;
        };
        assert_eq!(message["type"], "next", "{message}");
        let event = &message["payload"]["data"]["events"];
        let position: i64 = event["position"]
            .as_str()
            .unwrap_or_else(|| panic!("a position in {message}"))
            .parse()
            .expect("int");
        first.get_or_insert_with(|| event.clone());
        seen.push(position);
    }
    writer.await.expect("writer");
    let expected: Vec<i64> = (1..=head(&app).await).collect();
    assert_eq!(seen, expected, "every position once, in order");
    let first = first.expect("an event");
    assert_eq!(first["aggregateType"], "Group");
    assert_eq!(first["eventType"], "GroupCreated");
    assert_eq!(first["eventVersion"], "1");
    assert_eq!(first["version"], 1);
    assert_eq!(first["hash"].as_str().map(str::len), Some(64));
    assert!(first["payload"]["GroupCreated"].is_object(), "{first}");
    assert!(first["metadata"]["correlation_id"].is_string(), "{first}");

    // The client ends the first subscription.
    send(&mut ws, json!({ "id": "1", "type": "complete" })).await;

    // Live only (no fromPosition), filtered by aggregate: only what happens next.
    subscribe(
        &mut ws,
        "2",
        EVENTS,
        json!({ "filter": { "aggregateTypes": ["Membership"] } }),
    )
    .await;
    // The subscription starts at the head; give it a moment to be registered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids = devices(&app, "dev-", 3).await;
    app.create_group("Not-a-membership-event", None).await;
    assert_eq!(add(&app, &a, &ids).await["userErrors"], json!([]));
    let mut message = next(&mut ws).await;
    while message["id"] == "1" {
        // Sent before the server saw our `complete`.
        message = next(&mut ws).await;
    }
    assert_eq!(message["id"], "2", "{message}");
    let event = &message["payload"]["data"]["events"];
    assert_eq!(event["eventType"], "MembersAdded");
    assert_eq!(event["aggregateId"], a.as_str());
    assert_eq!(event["payload"]["MembersAdded"]["member_ids"], json!(ids));

    // Viewers may not read the event stream (it carries actors and reasons).
    let mut viewer = connect(addr, &app.viewer).await;
    subscribe(&mut viewer, "1", EVENTS, json!({ "from": "1" })).await;
    let reply = next(&mut viewer).await;
    assert_eq!(reply["type"], "next", "{reply}");
    assert_eq!(reply["payload"]["data"], Value::Null, "{reply}");
    assert_eq!(
        reply["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{reply}"
    );
    assert_eq!(next(&mut viewer).await["type"], "complete");
    server.abort();
    app.shutdown().await;
}

const CHANGES: &str = "subscription($id: ID!, $descendants: Boolean) { membershipChanges(groupId: $id, includeDescendants: $descendants) { position change memberId source groupId cause } }";

pub(crate) async fn members_edit(app: &TestApp, mutation: &str, group: &str, ids: &[&str]) {
    let query = format!("mutation($input: GroupMembersInput!) {{ {mutation}(input: $input) {{ userErrors {{ code message }} }} }}");
    let data = app
        .data(
            &app.operator,
            &query,
            json!({ "input": { "groupId": group, "memberIds": ids } }),
        )
        .await;
    assert_eq!(data[mutation]["userErrors"], json!([]), "{mutation}");
}

pub(crate) async fn move_group(app: &TestApp, id: &str, parent: &str) {
    let data = app
        .data(
            &app.admin,
            "mutation($input: MoveGroupInput!) { moveGroup(input: $input) { userErrors { code } } }",
            json!({ "input": { "id": id, "newParentId": parent } }),
        )
        .await;
    assert_eq!(data["moveGroup"]["userErrors"], json!([]));
}

type Change = (String, String, String, String, Value);

/// Reads messages until each subscription in `wanted` got its count of changes, each as
/// `(change, member, group, source, cause)`.
async fn changes(ws: &mut Ws, wanted: &[(&str, usize)]) -> HashMap<String, Vec<Change>> {
    let mut out: HashMap<String, Vec<Change>> = HashMap::new();
    while wanted
        .iter()
        .any(|(id, n)| out.get(*id).map_or(0, Vec::len) < *n)
    {
        let message = next(ws).await;
        if message["type"] == "complete" {
            let id = message["id"].as_str().expect("id");
            out.entry(format!("{id}:complete")).or_default();
            continue;
        }
        let c = &message["payload"]["data"]["membershipChanges"];
        assert!(c.is_object(), "{message}");
        let s = |k: &str| c[k].as_str().expect(k).to_string();
        let id = message["id"].as_str().expect("id").to_string();
        out.entry(id).or_default().push((
            s("change"),
            s("memberId"),
            s("groupId"),
            s("source"),
            c["cause"].clone(),
        ));
    }
    out
}

#[tokio::test]
async fn membership_changes_report_members_entering_and_leaving() {
    let app = TestApp::spawn().await;
    let (addr, server) = serve(&app).await;
    let a = app.create_group("Site-A", None).await;
    let b = app.create_group("Rack-B", Some(&a)).await;
    let c = app.create_group("Spare-C", None).await;
    devices(&app, "d", 4).await;
    // Before the subscription: d00003 is already a member of C.
    members_edit(&app, "addGroupMembers", &c, &["d00003"]).await;

    let mut ws = connect(addr, &app.viewer).await;
    subscribe(
        &mut ws,
        "tree",
        CHANGES,
        json!({ "id": a, "descendants": true }),
    )
    .await;
    subscribe(&mut ws, "rack", CHANGES, json!({ "id": b })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    members_edit(&app, "addGroupMembers", &b, &["d00000", "d00001"]).await;
    // Already held through B: no change for the subtree, none for B.
    members_edit(&app, "addGroupMembers", &a, &["d00001"]).await;
    // Leaves B, still in the subtree through A.
    members_edit(&app, "removeGroupMembers", &b, &["d00001"]).await;
    // Excluded from B: leaves both.
    members_edit(&app, "excludeGroupMembers", &b, &["d00000"]).await;
    // A whole group moves in, then out again.
    move_group(&app, &c, &a).await;
    let root: String = sqlx::query_scalar(
        "SELECT id::text FROM rm_group_tree.groups WHERE is_system AND group_type = 'DEVICE'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("root");
    move_group(&app, &c, &root).await;

    // A member of the rack, then the rack is deleted: it leaves both at once.
    members_edit(&app, "addGroupMembers", &b, &["d00002"]).await;
    let deleted = app
        .data(
            &app.admin,
            "mutation($input: DeleteGroupInput!) { deleteGroup(input: $input) { userErrors { code message } } }",
            json!({ "input": { "id": b } }),
        )
        .await;
    assert_eq!(deleted["deleteGroup"]["userErrors"], json!([]));

    let mut all = changes(&mut ws, &[("tree", 7), ("rack", 6)]).await;
    let tree = all.remove("tree").expect("tree");
    let simple: Vec<(&str, &str, &str)> = tree
        .iter()
        .map(|(k, m, g, _, _)| (k.as_str(), m.as_str(), g.as_str()))
        .collect();
    assert_eq!(
        simple[..5],
        [
            ("ENTERED", "d00000", b.as_str()),
            ("ENTERED", "d00001", b.as_str()),
            ("LEFT", "d00000", b.as_str()),
            ("ENTERED", "d00003", c.as_str()),
            ("LEFT", "d00003", c.as_str()),
        ],
        "{tree:?}"
    );
    assert!(tree.iter().all(|t| t.3 == "STATIC"));
    assert_eq!(tree[3].4, "moved");
    assert_eq!(tree[0].4, Value::Null);
    assert_eq!(
        tree[5..]
            .iter()
            .map(|t| (t.0.as_str(), t.1.as_str(), t.4.as_str().unwrap_or("")))
            .collect::<Vec<_>>(),
        [("ENTERED", "d00002", ""), ("LEFT", "d00002", "deleted")]
    );

    let rack = all.remove("rack").expect("rack");
    let simple: Vec<(&str, &str)> = rack
        .iter()
        .map(|(k, m, _, _, _)| (k.as_str(), m.as_str()))
        .collect();
    assert_eq!(
        simple,
        [
            ("ENTERED", "d00000"),
            ("ENTERED", "d00001"),
            ("LEFT", "d00001"),
            ("LEFT", "d00000"),
            ("ENTERED", "d00002"),
            ("LEFT", "d00002"),
        ]
    );
    // The rack is gone: its subscription ends.
    if !all.contains_key("rack:complete") {
        let mut end = next(&mut ws).await;
        while end["id"] != "rack" {
            end = next(&mut ws).await;
        }
        assert_eq!(end["type"], "complete", "{end}");
    }

    // An unknown group is refused.
    subscribe(
        &mut ws,
        "missing",
        CHANGES,
        json!({ "id": "00000000-0000-0000-0000-000000000001" }),
    )
    .await;
    let reply = next(&mut ws).await;
    assert_eq!(
        reply["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{reply}"
    );
    server.abort();
    app.shutdown().await;
}

#[tokio::test]
async fn a_connection_holds_a_bounded_number_of_subscriptions() {
    let app = TestApp::spawn().await;
    let (addr, server) = serve(&app).await;
    let a = app.create_group("Site-A", None).await;
    let mut ws = connect(addr, &app.viewer).await;
    // Seventeen at once: exactly one is refused (which one depends on how they interleave).
    for i in 0..17 {
        subscribe(&mut ws, &format!("s{i}"), CHANGES, json!({ "id": a })).await;
    }
    let reply = next(&mut ws).await;
    assert_eq!(
        reply["payload"]["errors"][0]["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS",
        "{reply}"
    );
    let refused = reply["id"].as_str().expect("id").to_string();
    assert_eq!(
        next(&mut ws).await,
        json!({ "id": refused, "type": "complete" })
    );
    let held = if refused == "s0" { "s1" } else { "s0" };
    // Ending one frees its slot.
    send(&mut ws, json!({ "id": held, "type": "complete" })).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    subscribe(&mut ws, "again", CHANGES, json!({ "id": a })).await;
    let ids = devices(&app, "d", 1).await;
    add(&app, &a, &ids).await;
    loop {
        let message = next(&mut ws).await;
        assert_ne!(
            message["payload"]["errors"][0]["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS",
            "{message}"
        );
        if message["id"] == "again" {
            assert_eq!(
                message["payload"]["data"]["membershipChanges"]["memberId"],
                ids[0].as_str()
            );
            break;
        }
    }
    server.abort();
    app.shutdown().await;
}
