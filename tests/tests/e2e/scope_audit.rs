//! Scoped auditors and refused attempts: an auditor bound to Site-A reads only Site-A's
//! subtree in `auditLog`, `GET /audit/export` and the `events` stream, as the tree stands
//! (a group moved out stops appearing); `FORBIDDEN` answers and requests with a known but
//! refused token land in `accessRefusals`, which stays under its row cap.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use corral_api::state::ApiConfig;
use corral_tests::TestApp;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const LOG: &str = "query($filter: AuditLogFilter, $first: Int, $after: String) { auditLog(filter: $filter, first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { node { aggregateType aggregateId eventType } } } }";
const MOVE: &str = "mutation($id: ID!, $p: ID!) { moveGroup(input: { id: $id, newParentId: $p }) { userErrors { code } } }";
const RENAME: &str = "mutation($id: ID!, $n: String!) { renameGroup(input: { id: $id, name: $n }) { userErrors { code } } }";
const CREATE_GROUP: &str = "mutation($input: CreateGroupInput!) { createGroup(input: $input) { group { id } userErrors { code message } } }";
const REFUSALS: &str = "query($subject: String, $first: Int, $after: String) { accessRefusals(subject: $subject, first: $first, after: $after) { pageInfo { hasNextPage endCursor } edges { cursor node { refusedAt subject tokenPrefix operation groupId code reason clientAddress } } } }";

async fn log(app: &TestApp, token: &str, filter: Value, first: i64) -> Value {
    app.data(token, LOG, json!({ "filter": filter, "first": first }))
        .await["auditLog"]
        .clone()
}

fn ids(page: &Value) -> Vec<String> {
    page["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["aggregateId"].as_str().expect("id").to_string())
        .collect()
}

async fn export(app: &TestApp, token: &str, extra: &str) -> (StatusCode, Value) {
    let request = Request::get(format!(
        "/audit/export?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z{extra}"
    ))
    .header("authorization", format!("Bearer {token}"))
    .body(Body::empty())
    .expect("request");
    app.http(request).await
}

fn export_ids(body: &Value) -> Vec<String> {
    body.as_str()
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("ndjson");
            v["aggregateId"].as_str().expect("id").to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_scoped_auditor_reads_only_its_subtree_in_the_log_and_the_export() {
    let app = TestApp::spawn().await;
    let root = app.create_group("Top", None).await;
    let a = app.create_group("Site-A", Some(&root)).await;
    let a1 = app.create_group("Rack-A1", Some(&a)).await;
    let b = app.create_group("Site-B", Some(&root)).await;
    let b1 = app.create_group("Rack-B1", Some(&b)).await;
    app.data(&app.admin, RENAME, json!({ "id": a1, "n": "Rack-A1x" }))
        .await;
    app.data(&app.admin, RENAME, json!({ "id": b1, "n": "Rack-B1x" }))
        .await;
    let sally = app.scoped_token("sally", "auditor", &a).await;

    // What a global auditor sees of Site-A's subtree is exactly what sally sees of all.
    let subtree = log(
        &app,
        &app.auditor,
        json!({ "groupId": a, "includeDescendants": true }),
        100,
    )
    .await;
    let mine = log(&app, &sally, json!(null), 100).await;
    let in_scope: HashSet<String> = [a.clone(), a1.clone()].into();
    assert!(!ids(&mine).is_empty());
    assert!(ids(&mine).iter().all(|id| in_scope.contains(id)), "{mine}");
    assert_eq!(ids(&mine), ids(&subtree));
    assert_eq!(mine["totalCount"], subtree["totalCount"]);
    assert!(ids(&mine).contains(&a1));
    // Counts and pages are filtered in SQL: a page of one still counts the whole scope.
    let one = log(&app, &sally, json!(null), 1).await;
    assert_eq!(one["totalCount"], mine["totalCount"]);
    assert_eq!(one["pageInfo"]["hasNextPage"], true);
    let next = app
        .data(
            &sally,
            LOG,
            json!({ "first": 100, "after": one["pageInfo"]["endCursor"] }),
        )
        .await["auditLog"]
        .clone();
    assert_eq!(
        ids(&next).len() as i64 + 1,
        mine["totalCount"].as_i64().expect("count")
    );
    // Outside (a sibling), above (an ancestor): nothing, as if it did not exist.
    for outside in [&b, &b1, &root] {
        let page = log(&app, &sally, json!({ "groupId": outside }), 100).await;
        assert_eq!(page["totalCount"], 0, "{outside}: {page}");
    }
    // Other aggregates (the subjects of tokens) are not in any group.
    let subjects = log(&app, &sally, json!({ "aggregateTypes": ["Subject"] }), 100).await;
    assert_eq!(subjects["totalCount"], 0);
    // A global auditor is unchanged.
    let all = log(&app, &app.auditor, json!(null), 100).await;
    assert!(ids(&all).contains(&b1));

    // The export applies the same filter.
    let (status, body) = export(&app, &sally, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(export_ids(&body), ids(&mine));
    let (_, body) = export(&app, &sally, &format!("&group={b}")).await;
    assert_eq!(export_ids(&body), Vec::<String>::new());
    let (_, body) = export(&app, &app.auditor, "").await;
    assert!(export_ids(&body).contains(&b1));

    // Moved out of the scope: Rack-A1 and its whole history leave sally's log and export.
    let moved = app
        .data(&app.admin, MOVE, json!({ "id": a1, "p": b }))
        .await;
    assert_eq!(moved["moveGroup"]["userErrors"], json!([]));
    let after_move = log(&app, &sally, json!(null), 100).await;
    assert!(!ids(&after_move).contains(&a1), "{after_move}");
    assert!(ids(&after_move).contains(&a));
    let (_, body) = export(&app, &sally, "").await;
    assert!(!export_ids(&body).contains(&a1));
    // Moved in: Site-B's Rack-B1 under Site-A appears with its history.
    app.data(&app.admin, MOVE, json!({ "id": b1, "p": a }))
        .await;
    let moved_in = log(&app, &sally, json!({ "groupId": b1 }), 100).await;
    assert!(
        moved_in["totalCount"].as_i64().expect("count") >= 3,
        "{moved_in}"
    );
    // Group.history follows the auditor's reach too.
    let history = app
        .data(
            &sally,
            "query($id: ID!) { group(id: $id) { history { totalCount } } }",
            json!({ "id": a }),
        )
        .await;
    assert!(history["group"]["history"]["totalCount"].as_i64() > Some(0));
    app.shutdown().await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn serve(app: &TestApp) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = app.router.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    (addr, server)
}

async fn connect(addr: SocketAddr, token: &str) -> Ws {
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

async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::Text(message.to_string().into()))
        .await
        .expect("send");
}

async fn next(ws: &mut Ws) -> Value {
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

const EVENTS: &str =
    "subscription($from: Position) { events(fromPosition: $from) { aggregateType aggregateId eventType } }";

/// Events of the subscription until one about `until` arrives; returns them all.
async fn events_until(ws: &mut Ws, until: &str) -> Vec<Value> {
    let mut seen = vec![];
    loop {
        let message = next(ws).await;
        assert_eq!(message["type"], "next", "{message}");
        let event = message["payload"]["data"]["events"].clone();
        let done = event["aggregateId"] == until;
        seen.push(event);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn a_scoped_auditors_event_stream_follows_the_tree_at_delivery() {
    let app = TestApp::spawn().await;
    let (addr, server) = serve(&app).await;
    let root = app.create_group("Top", None).await;
    let a = app.create_group("Site-A", Some(&root)).await;
    let a1 = app.create_group("Rack-A1", Some(&a)).await;
    let b = app.create_group("Site-B", Some(&root)).await;
    let b1 = app.create_group("Rack-B1", Some(&b)).await;
    let sally = app.scoped_token("sally", "auditor", &a).await;

    let mut ws = connect(addr, &sally).await;
    send(
        &mut ws,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": EVENTS, "variables": { "from": "1" } } }),
    )
    .await;
    // The replay: Site-A's and Rack-A1's events only; then live.
    let live = app.create_group("A-live", Some(&a)).await;
    app.create_group("B-live", Some(&b)).await;
    let seen = events_until(&mut ws, &live).await;
    let allowed: HashSet<&str> = [a.as_str(), a1.as_str(), live.as_str()].into();
    for e in &seen {
        let id = e["aggregateId"].as_str().expect("id");
        assert!(allowed.contains(id), "{e} is outside Site-A");
        assert!(
            e["aggregateType"] == "Group" || e["aggregateType"] == "Membership",
            "{e}"
        );
    }
    assert!(seen.iter().any(|e| e["aggregateId"] == a1));
    // A-live moves to Site-B: its move and rename are no longer sally's; Rack-A1's are.
    app.data(&app.admin, MOVE, json!({ "id": live, "p": b }))
        .await;
    app.data(&app.admin, RENAME, json!({ "id": live, "n": "gone" }))
        .await;
    app.data(&app.admin, RENAME, json!({ "id": a1, "n": "still" }))
        .await;
    // Rack-B1 moves in: its later events are delivered.
    app.data(&app.admin, MOVE, json!({ "id": b1, "p": a }))
        .await;
    app.data(&app.admin, RENAME, json!({ "id": b1, "n": "welcome" }))
        .await;
    let seen = events_until(&mut ws, &b1).await;
    let last = seen.last().expect("one").clone();
    assert!(
        seen.iter().all(|e| e["aggregateId"] != live),
        "{seen:?} shows a group moved out"
    );
    assert!(seen
        .iter()
        .any(|e| e["aggregateId"] == a1 && e["eventType"] == "GroupRenamed"));
    // The first event of Rack-B1 delivered is its move into the scope (or the rename).
    assert!(
        last["eventType"] == "GroupMoved" || last["eventType"] == "GroupRenamed",
        "{last}"
    );
    server.abort();
    app.shutdown().await;
}

/// The refusals as admin, waiting (the store is written in the background) until `ready`.
async fn refusals_until(app: &TestApp, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let data = app
            .data(&app.admin, REFUSALS, json!({ "first": 100 }))
            .await;
        let nodes: Vec<Value> = data["accessRefusals"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| e["node"].clone())
            .collect();
        if ready(&nodes) {
            return nodes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refusals never arrived: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn refused_attempts_are_recorded_with_subject_operation_and_group() {
    let app = TestApp::spawn().await;
    let (addr, server) = serve(&app).await;
    let root = app.create_group("Top", None).await;
    let a = app.create_group("Site-A", Some(&root)).await;
    let b = app.create_group("Site-B", Some(&root)).await;
    let viola = app.scoped_token("viola", "viewer", &a).await;

    // A mutation the extension refuses.
    let refused = app
        .gql(
            &viola,
            CREATE_GROUP,
            json!({ "input": { "name": "nope", "type": "DEVICE", "parentId": a } }),
        )
        .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");
    // A subscription to a group outside the scope: FORBIDDEN, with the group.
    let mut ws = connect(addr, &viola).await;
    send(
        &mut ws,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription($g: ID!) { membershipChanges(groupId: $g) { change } }", "variables": { "g": b } } }),
    )
    .await;
    let answer = next(&mut ws).await;
    let error = &answer["payload"]["errors"][0];
    assert_eq!(error["extensions"]["code"], "FORBIDDEN", "{answer}");
    assert_eq!(error["extensions"]["groupId"], b);
    // The export without audit.read.
    let (status, _) = export(&app, &viola, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A token revoked, then used: UNAUTHENTICATED, recorded under its prefix and subject.
    let created = app
        .data(
            &app.admin,
            "mutation { createToken(input: { subject: \"rita\", role: \"viewer\" }) { secret userErrors { message } } }",
            json!({}),
        )
        .await;
    let secret = created["createToken"]["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let prefix = secret[..12].to_string();
    app.data(
        &app.admin,
        "mutation($t: String!) { revokeToken(input: { token: $t }) { userErrors { message } } }",
        json!({ "t": prefix }),
    )
    .await;
    let request = |token: String| {
        Request::post("/graphql")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(
                json!({ "query": "{ me { subject } }" }).to_string(),
            ))
            .expect("request")
    };
    let (status, _) = app.http(request(secret.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Unknown prefixes and garbage are not recorded.
    let (status, _) = app.http(request("crl_0badc0de_nothing".into())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app.http(request("garbage".into())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let nodes = refusals_until(&app, |n| n.len() >= 4).await;
    // Give a stray record (it should not exist) the time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let nodes = refusals_until(&app, |n| n.len() >= nodes.len()).await;
    assert_eq!(nodes.len(), 4, "{nodes:#?}");
    let find = |op: &str| {
        nodes
            .iter()
            .find(|n| n["operation"] == op)
            .unwrap_or_else(|| panic!("no refusal of {op}: {nodes:#?}"))
            .clone()
    };
    let create = find("Mutation.createGroup");
    assert_eq!(create["subject"], "viola");
    assert_eq!(create["code"], "FORBIDDEN");
    let watch = find("Subscription.membershipChanges");
    assert_eq!(watch["subject"], "viola");
    assert_eq!(watch["groupId"], b);
    assert_eq!(watch["clientAddress"], "127.0.0.1");
    let exported = find("GET /audit/export");
    assert_eq!(exported["subject"], "viola");
    let revoked = find("POST /graphql");
    assert_eq!(revoked["code"], "UNAUTHENTICATED");
    assert_eq!(revoked["tokenPrefix"], prefix);
    assert_eq!(revoked["subject"], "rita");
    // Newest first.
    assert_eq!(nodes[0]["operation"], "POST /graphql");
    // Filtered by subject, and paged.
    let data = app
        .data(
            &app.admin,
            REFUSALS,
            json!({ "subject": "viola", "first": 2 }),
        )
        .await;
    let page = &data["accessRefusals"];
    assert_eq!(page["edges"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let rest = app
        .data(
            &app.admin,
            REFUSALS,
            json!({ "subject": "viola", "first": 10, "after": page["pageInfo"]["endCursor"] }),
        )
        .await;
    assert_eq!(
        rest["accessRefusals"]["edges"].as_array().map(Vec::len),
        Some(1)
    );
    // Only a global audit.read reads them.
    let sally = app.scoped_token("sally", "auditor", &a).await;
    let denied = app.gql(&sally, REFUSALS, json!({})).await;
    assert_eq!(denied["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let denied = app.gql(&app.viewer, REFUSALS, json!({})).await;
    assert_eq!(denied["errors"][0]["extensions"]["code"], "FORBIDDEN");
    server.abort();
    app.shutdown().await;
}

#[tokio::test]
async fn a_flood_of_refusals_stays_within_the_row_cap() {
    let config = ApiConfig {
        refusals: corral_api::refusals::RefusalConfig {
            max_rows: 10,
            ..Default::default()
        },
        ..ApiConfig::default()
    };
    let app = TestApp::spawn_with(config, true).await;
    for i in 0..60 {
        let refused = app
            .gql(
                &app.viewer,
                CREATE_GROUP,
                json!({ "input": { "name": format!("flood-{i}"), "type": "DEVICE" } }),
            )
            .await;
        assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (last, rows): (Option<i64>, i64) =
            sqlx::query_as("SELECT max(refusal_id), count(*) FROM access_refusals")
                .fetch_one(&app.pool)
                .await
                .expect("count");
        assert!(rows <= 10, "{rows} rows over a cap of 10");
        if last == Some(60) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {last:?} recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let data = app
        .data(&app.admin, REFUSALS, json!({ "first": 100 }))
        .await;
    assert_eq!(
        data["accessRefusals"]["edges"].as_array().map(Vec::len),
        Some(10)
    );
    app.shutdown().await;
}

#[tokio::test]
async fn membership_changes_need_the_group_in_scope_and_end_when_it_leaves() {
    let app = TestApp::spawn().await;
    let (addr, server) = serve(&app).await;
    let root = app.create_group("Top", None).await;
    let a = app.create_group("Site-A", Some(&root)).await;
    let a1 = app.create_group("Rack-A1", Some(&a)).await;
    let b = app.create_group("Site-B", Some(&root)).await;
    let ids = super::membership::devices(&app, "scoped-", 3).await;
    let vic = app.scoped_token("vic", "viewer", &a).await;
    const WATCH: &str = "subscription($g: ID!, $from: Position) { membershipChanges(groupId: $g, fromPosition: $from) { change memberId groupId } }";

    let mut ws = connect(addr, &vic).await;
    // Outside (a sibling), above (an ancestor) and missing: FORBIDDEN alike.
    for (id, group) in [
        ("1", b.clone()),
        ("2", root.clone()),
        ("3", a.replace('a', "b")),
    ] {
        send(
            &mut ws,
            json!({ "id": id, "type": "subscribe", "payload": { "query": WATCH, "variables": { "g": group } } }),
        )
        .await;
        let answer = next(&mut ws).await;
        assert_eq!(
            answer["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{group}: {answer}"
        );
        let _complete = next(&mut ws).await;
    }
    // Inside: the changes arrive, until the group is moved out of the scope. The watch starts
    // right after the current head, so a slow start cannot fold the add in instead of
    // reporting it.
    let head: i64 = app
        .data(&app.admin, "{ auditChainHead { position } }", json!({}))
        .await["auditChainHead"]["position"]
        .as_str()
        .expect("position")
        .parse()
        .expect("decimal");
    send(
        &mut ws,
        json!({ "id": "4", "type": "subscribe", "payload": { "query": WATCH, "variables": { "g": a1, "from": (head + 1).to_string() } } }),
    )
    .await;
    super::membership::add(&app, &a1, &ids[..1]).await;
    let entered = next(&mut ws).await;
    assert_eq!(
        entered["payload"]["data"]["membershipChanges"]["memberId"], ids[0],
        "{entered}"
    );
    app.data(&app.admin, MOVE, json!({ "id": a1, "p": b }))
        .await;
    super::membership::add(&app, &a1, &ids[1..2]).await;
    let ended = next(&mut ws).await;
    assert_eq!(ended["type"], "complete", "{ended}");
    assert_eq!(ended["id"], "4");
    server.abort();
    app.shutdown().await;
}

#[tokio::test]
async fn sweep_progress_needs_sweep_run_on_the_runs_group() {
    let config = ApiConfig {
        sweeps: corral_projections::sweeps::SweepConfig {
            allow: vec!["127.0.0.0/8".parse().expect("cidr")],
            enabled: true,
            ..corral_projections::sweeps::SweepConfig::default()
        },
        ..ApiConfig::default()
    };
    let app = TestApp::spawn_with(config, true).await;
    let (addr, server) = serve(&app).await;
    let root = app.create_group("Top", None).await;
    let a = app.create_group("Site-A", Some(&root)).await;
    let b = app.create_group("Site-B", Some(&root)).await;
    let p = app
        .data(
            &app.operator,
            "mutation($input: UpsertDevicesInput!) { upsertDevices(input: $input) { userErrors { message } } }",
            json!({ "input": { "devices": [{ "id": "a-1", "ip": "127.0.0.5" }, { "id": "b-1", "ip": "127.0.0.6" }] } }),
        )
        .await;
    assert_eq!(p["upsertDevices"]["userErrors"], json!([]), "{p}");
    super::membership::add(&app, &a, &["a-1".into()]).await;
    super::membership::add(&app, &b, &["b-1".into()]).await;
    const SCHEDULE: &str = "mutation($input: ScheduleSweepInput!) { scheduleSweep(input: $input) { run { id } userErrors { field code message } } }";
    let schedule = |group: Option<String>, targets: Vec<&'static str>, key: &'static str| {
        let app = &app;
        async move {
            let data = app
                .data(
                    &app.admin,
                    SCHEDULE,
                    json!({ "input": { "pollerId": "p1", "targets": targets, "groupId": group, "ports": [22], "idempotencyKey": key } }),
                )
                .await;
            assert_eq!(data["scheduleSweep"]["userErrors"], json!([]), "{data}");
            data["scheduleSweep"]["run"]["id"]
                .as_str()
                .expect("run")
                .to_string()
        }
    };
    let run_a = schedule(Some(a.clone()), vec![], "ka").await;
    let run_b = schedule(Some(b.clone()), vec![], "kb").await;
    let run_raw = schedule(None, vec!["127.0.0.9"], "kr").await;
    let sam = app.scoped_token("sam", "admin", &a).await;
    const PROGRESS: &str = "subscription($r: ID!) { sweepProgress(runId: $r) { status } }";

    let mut ws = connect(addr, &sam).await;
    let missing = uuid::Uuid::new_v4().to_string();
    for (id, run) in [("1", &run_b), ("2", &run_raw), ("3", &missing)] {
        send(
            &mut ws,
            json!({ "id": id, "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "r": run } } }),
        )
        .await;
        let answer = next(&mut ws).await;
        assert_eq!(
            answer["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{run}: {answer}"
        );
        let _complete = next(&mut ws).await;
    }
    send(
        &mut ws,
        json!({ "id": "4", "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "r": run_a } } }),
    )
    .await;
    let answer = next(&mut ws).await;
    assert!(
        answer["payload"]["data"]["sweepProgress"]["status"].is_string(),
        "{answer}"
    );
    // A global admin follows any run.
    let mut admin = connect(addr, &app.admin).await;
    send(
        &mut admin,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "r": run_raw } } }),
    )
    .await;
    let answer = next(&mut admin).await;
    assert!(
        answer["payload"]["data"]["sweepProgress"]["status"].is_string(),
        "{answer}"
    );
    server.abort();
    app.shutdown().await;
}

/// A websocket whose `connection_init` carries a revoked token is refused and recorded under
/// the token's prefix and subject, like an HTTP request.
#[tokio::test]
async fn a_refused_websocket_init_is_recorded() {
    let app = TestApp::spawn().await;
    let created = app
        .data(
            &app.admin,
            "mutation { createToken(input: { subject: \"wes\", role: \"viewer\" }) { secret } }",
            json!({}),
        )
        .await;
    let secret = created["createToken"]["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let revoked = app
        .data(
            &app.admin,
            "mutation($t: String!) { revokeToken(input: { token: $t }) { userErrors { code } } }",
            json!({ "t": &secret[..12] }),
        )
        .await;
    assert_eq!(revoked["revokeToken"]["userErrors"], json!([]), "{revoked}");
    let (addr, server) = serve(&app).await;
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
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {secret}") } }),
    )
    .await;
    // The server refuses the connection (it closes it, or answers an error).
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    let nodes = refusals_until(&app, |n| {
        n.iter().any(|r| r["operation"] == "WS connection_init")
    })
    .await;
    let node = nodes
        .iter()
        .find(|r| r["operation"] == "WS connection_init")
        .expect("recorded");
    assert_eq!(node["code"], "UNAUTHENTICATED");
    assert_eq!(node["subject"], "wes");
    assert_eq!(node["tokenPrefix"], &secret[..12]);
    server.abort();
    app.shutdown().await;
}
