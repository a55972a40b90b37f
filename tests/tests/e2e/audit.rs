//! The audit trail: `auditLog`, `group.history`, `auditChainHead`, the HTTP export, and the
//! hash chain's verification against direct tampering.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use corral_projections::public_log::{verify, ChainCheck};
use corral_tests::TestApp;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::membership::{add, devices};

const LOG: &str = "query($filter: AuditLogFilter, $first: Int, $after: String) { auditLog(filter: $filter, first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { position recordedAt actor { subject role } source aggregateType aggregateId version eventType eventVersion payload reason correlationId causationId changes { field before after } hash } } } }";
const HEAD: &str = "{ auditChainHead { position hash } }";

/// Waits until the sequencer has numbered everything written so far.
async fn sequenced(app: &TestApp) -> i64 {
    for _ in 0..500 {
        let (events, logged): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM event_log)",
        )
        .fetch_one(&app.pool)
        .await
        .expect("counts");
        if events == logged {
            return logged;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the sequencer did not catch up");
}

async fn log(app: &TestApp, filter: Value) -> Vec<Value> {
    let data = app
        .data(&app.auditor, LOG, json!({ "filter": filter, "first": 200 }))
        .await;
    data["auditLog"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

fn types(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["eventType"].as_str().expect("eventType"))
        .collect()
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn audit_log_answers_who_changed_which_group_when_and_why() {
    let app = TestApp::spawn().await;
    let a = app.create_group("Site-A", None).await;
    let b = app.create_group("Rack-1", Some(&a)).await;
    let other = app.create_group("Elsewhere", None).await;
    let renamed = app
        .data(
            &app.admin,
            "mutation($input: RenameGroupInput!) { renameGroup(input: $input) { userErrors { code } } }",
            json!({ "input": { "id": a, "name": "Site-Alpha", "reason": "CHG-42 naming standard" } }),
        )
        .await;
    assert_eq!(renamed["renameGroup"]["userErrors"], json!([]));
    app.data(
        &app.admin,
        "mutation($input: UpdateGroupInput!) { updateGroup(input: $input) { userErrors { code } } }",
        json!({ "input": { "id": a, "description": "main site", "metadata": { "owner": "netops" } } }),
    )
    .await;
    app.data(
        &app.admin,
        "mutation($input: MoveGroupInput!) { moveGroup(input: $input) { userErrors { code } } }",
        json!({ "input": { "id": b, "newParentId": other } }),
    )
    .await;
    app.data(
        &app.admin,
        "mutation($input: MoveGroupInput!) { moveGroup(input: $input) { userErrors { code } } }",
        json!({ "input": { "id": b, "newParentId": a } }),
    )
    .await;
    let ids = devices(&app, "dev-", 3).await;
    assert_eq!(add(&app, &b, &ids).await["userErrors"], json!([]));
    let head = sequenced(&app).await;

    // One group: its own events, oldest first, each with who, how and what changed.
    let own = log(&app, json!({ "groupId": a })).await;
    assert_eq!(
        types(&own),
        ["GroupCreated", "GroupRenamed", "GroupUpdated"],
        "{own:?}"
    );
    let rename = &own[1];
    assert_eq!(
        rename["actor"],
        json!({ "subject": "alice", "role": "admin" })
    );
    assert_eq!(rename["source"], "api");
    assert_eq!(rename["aggregateType"], "Group");
    assert_eq!(rename["aggregateId"], a.as_str());
    assert_eq!(rename["version"], 2);
    assert_eq!(rename["reason"], "CHG-42 naming standard");
    assert_eq!(
        rename["changes"],
        json!([{ "field": "name", "before": "Site-A", "after": "Site-Alpha" }])
    );
    assert!(rename["correlationId"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(rename["causationId"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(rename["hash"].as_str().map(str::len), Some(64));
    assert_eq!(
        own[2]["changes"],
        json!([
            { "field": "description", "before": null, "after": "main site" },
            { "field": "metadata", "before": {}, "after": { "owner": "netops" } },
        ])
    );
    let positions: Vec<i64> = own
        .iter()
        .map(|e| {
            e["position"]
                .as_str()
                .expect("position")
                .parse()
                .expect("int")
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

    // With descendants: the child's moves and its membership, with the operator as actor.
    let subtree = log(&app, json!({ "groupId": a, "includeDescendants": true })).await;
    assert_eq!(
        types(&subtree),
        [
            "GroupCreated",
            "GroupCreated",
            "GroupRenamed",
            "GroupUpdated",
            "GroupMoved",
            "GroupMoved",
            "MembersAdded"
        ]
    );
    let moved = &subtree[4];
    assert_eq!(
        moved["changes"],
        json!([{ "field": "parentId", "before": a, "after": other }])
    );
    assert_eq!(
        subtree[6]["changes"],
        Value::Null,
        "membership events list no field changes"
    );
    assert_eq!(subtree[6]["actor"]["subject"], "oscar");
    assert_eq!(
        subtree[6]["payload"]["MembersAdded"]["member_ids"],
        json!(ids)
    );

    // Each filter narrows the log.
    assert_eq!(
        types(&log(&app, json!({ "actor": "oscar" })).await),
        ["MembersAdded"]
    );
    assert_eq!(
        types(&log(&app, json!({ "eventTypes": ["GroupMoved"] })).await),
        ["GroupMoved", "GroupMoved"]
    );
    assert_eq!(
        types(&log(&app, json!({ "aggregateTypes": ["Membership"] })).await),
        ["MembersAdded"]
    );
    assert_eq!(
        types(
            &log(
                &app,
                json!({ "groupId": a, "aggregateTypes": ["Membership"] })
            )
            .await
        ),
        Vec::<&str>::new(),
        "a group filter keeps the aggregate types asked for"
    );
    assert_eq!(
        log(
            &app,
            json!({ "groupId": a, "aggregateTypes": ["Dashboard"] })
        )
        .await,
        Vec::<Value>::new()
    );
    let by_request = log(&app, json!({ "correlationId": rename["correlationId"] })).await;
    assert_eq!(types(&by_request), ["GroupRenamed"]);
    let since_rename = log(&app, json!({ "groupId": a, "from": rename["recordedAt"] })).await;
    assert_eq!(types(&since_rename), ["GroupRenamed", "GroupUpdated"]);
    let before_rename = log(&app, json!({ "groupId": a, "to": rename["recordedAt"] })).await;
    assert_eq!(types(&before_rename), ["GroupCreated"]);

    // Pages follow each other without overlap; totalCount counts them all.
    let first = app
        .data(
            &app.auditor,
            LOG,
            json!({ "filter": { "groupId": a, "includeDescendants": true }, "first": 4 }),
        )
        .await;
    let conn = &first["auditLog"];
    assert_eq!(conn["totalCount"], 7);
    assert_eq!(conn["pageInfo"]["hasNextPage"], true);
    let next = app
        .data(
            &app.auditor,
            LOG,
            json!({ "filter": { "groupId": a, "includeDescendants": true }, "first": 4, "after": conn["pageInfo"]["endCursor"] }),
        )
        .await;
    let rest: Vec<&str> = next["auditLog"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["eventType"].as_str().expect("type"))
        .collect();
    assert_eq!(rest, ["GroupMoved", "GroupMoved", "MembersAdded"]);
    assert_eq!(next["auditLog"]["pageInfo"]["hasNextPage"], false);

    // Exports page through the log with one cache of folded groups: the changes are the same
    // as computed page by page from scratch.
    let filter = corral_api::audit::AuditFilter {
        group_id: Some(a.parse().expect("uuid")),
        include_descendants: true,
        ..Default::default()
    }
    .resolve(&app.pool)
    .await
    .expect("resolve")
    .expect("valid");
    let mut views = corral_projections::audit::ViewCache::new();
    let mut after = 0;
    let mut paged = vec![];
    loop {
        let page = corral_api::audit::page(&app.pool, &filter, after, None, 2, &mut views)
            .await
            .expect("page");
        let Some(last) = page.last() else { break };
        after = last.entry.position;
        paged.extend(page.into_iter().map(|r| r.to_json()["changes"].clone()));
    }
    let whole: Vec<Value> = subtree.iter().map(|e| e["changes"].clone()).collect();
    assert_eq!(paged, whole);

    // group.history: one group's own and membership events.
    let history = app
        .data(
            &app.auditor,
            "query($id: ID!) { group(id: $id) { history(first: 10) { edges { node { eventType actor { subject } } } } } }",
            json!({ "id": b }),
        )
        .await;
    let kinds: Vec<&str> = history["group"]["history"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["eventType"].as_str().expect("type"))
        .collect();
    assert_eq!(
        kinds,
        ["GroupCreated", "GroupMoved", "GroupMoved", "MembersAdded"]
    );

    // The chain head is the last entry.
    let chain = app.data(&app.auditor, HEAD, json!({})).await;
    assert_eq!(chain["auditChainHead"]["position"], head.to_string());
    let all = log(&app, json!({})).await;
    let last = all.last().expect("entries");
    assert_eq!(chain["auditChainHead"]["hash"], last["hash"]);
    assert_eq!(last["position"], head.to_string());

    // Bad filters are refused with the field named.
    let bad = app
        .gql(
            &app.auditor,
            LOG,
            json!({ "filter": { "includeDescendants": true } }),
        )
        .await;
    assert_eq!(code(&bad), "BAD_USER_INPUT", "{bad}");
    let bad = app
        .gql(
            &app.auditor,
            LOG,
            json!({ "filter": { "groupId": "not-a-uuid" } }),
        )
        .await;
    assert_eq!(code(&bad), "BAD_USER_INPUT", "{bad}");
    app.shutdown().await;
}

#[tokio::test]
async fn only_auditors_and_admins_read_the_audit_trail() {
    let app = TestApp::spawn().await;
    let a = app.create_group("Site-A", None).await;
    let history =
        "query($id: ID!) { group(id: $id) { name history { edges { node { eventType } } } } }";
    for token in [&app.viewer, &app.operator] {
        for query in [LOG, HEAD] {
            let body = app.gql(token, query, json!({})).await;
            assert_eq!(code(&body), "FORBIDDEN", "{body}");
        }
        let body = app.gql(token, history, json!({ "id": a })).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        // Viewers still read the group itself.
        let body = app
            .gql(
                token,
                "query($id: ID!) { group(id: $id) { name } }",
                json!({ "id": a }),
            )
            .await;
        assert_eq!(body["data"]["group"]["name"], "Site-A", "{body}");
    }
    for token in [&app.auditor, &app.admin] {
        let body = app.gql(token, history, json!({ "id": a })).await;
        assert!(body.get("errors").is_none(), "{body}");
        let body = app.gql(token, HEAD, json!({})).await;
        assert!(body.get("errors").is_none(), "{body}");
    }
    // Auditors read, never write.
    let body = app
        .gql(
            &app.auditor,
            "mutation($input: CreateGroupInput!) { createGroup(input: $input) { group { id } } }",
            json!({ "input": { "name": "x", "type": "DEVICE" } }),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    app.shutdown().await;
}

async fn export(app: &TestApp, token: Option<&str>, query: &str) -> (StatusCode, String, String) {
    let mut request = Request::get(format!("/audit/export?{query}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .router
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("router");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
        .await
        .expect("body");
    (
        status,
        content_type,
        String::from_utf8(bytes.to_vec()).expect("utf8"),
    )
}

#[tokio::test]
async fn the_audit_log_exports_as_ndjson_and_csv_with_the_same_authorization() {
    let app = TestApp::spawn().await;
    let a = app.create_group("Site-A", None).await;
    let b = app.create_group("Rack, \"one\"", Some(&a)).await;
    let _ = app.create_group("Unrelated", None).await;
    let ids = devices(&app, "dev-", 5).await;
    add(&app, &b, &ids).await;
    sequenced(&app).await;
    let window = "from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z";

    let (status, content_type, body) =
        export(&app, Some(&app.auditor), &format!("{window}&format=ndjson")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(content_type, "application/x-ndjson");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let all = log(&app, json!({})).await;
    assert_eq!(lines.len(), all.len());
    for (line, entry) in lines.iter().zip(&all) {
        assert_eq!(
            line["position"].to_string(),
            entry["position"].as_str().expect("p")
        );
        assert_eq!(line["hash"], entry["hash"]);
        assert_eq!(line["eventType"], entry["eventType"]);
        assert_eq!(line["changes"], entry["changes"]);
    }

    let (status, content_type, body) = export(
        &app,
        Some(&app.admin),
        &format!("{window}&format=csv&group={a}&includeDescendants=true"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(content_type.starts_with("text/csv"));
    let rows = parse_csv(&body);
    assert_eq!(rows[0][0..3], ["position", "recorded_at", "actor_subject"]);
    assert!(rows.iter().all(|r| r.len() == 17), "{rows:?}");
    // Site-A created, the rack created, members added: the subtree only.
    assert_eq!(rows.len(), 4, "{body}");
    let payload: Value = serde_json::from_str(&rows[2][15]).expect("payload cell is JSON");
    assert_eq!(payload["GroupCreated"]["name"], "Rack, \"one\"");
    assert_eq!(rows[3][9], "MembersAdded");

    // A narrower window exports nothing.
    let (status, _, body) = export(
        &app,
        Some(&app.auditor),
        "from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "");

    let (status, _, _) = export(&app, None, window).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = export(&app, Some(&app.viewer), window).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = export(&app, Some(&app.auditor), "from=2000-01-01T00:00:00Z").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("to is required"), "{body}");
    let coded: Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(coded["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    let (status, _, _) = export(&app, Some(&app.auditor), &format!("{window}&format=xml")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A NUL in a filter, or a query string that does not decode: a code, never a failure.
    for bad in ["actor=a%00b", "correlationId=%00", "from=%ZZ"] {
        let (status, _, body) = export(&app, Some(&app.auditor), &format!("{window}&{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        let coded: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(
            coded["errors"][0]["extensions"]["code"], "BAD_REQUEST",
            "{bad}"
        );
    }
    app.shutdown().await;
}

/// A strict RFC 4180 reader: quoted cells with doubled quotes, CRLF row ends.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut cell) = (vec![], vec![], String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') => {
                assert_eq!(chars.next(), Some('\n'), "CRLF");
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    assert!(
        row.is_empty() && cell.is_empty(),
        "the last row ends with CRLF"
    );
    rows
}

async fn check(app: &TestApp) -> ChainCheck {
    verify(&app.pool, 1, 3, |_, _| {})
        .await
        .expect("verify runs")
}

fn broken_at(check: &ChainCheck) -> Option<i64> {
    match check {
        ChainCheck::Broken { position, .. } => Some(*position),
        ChainCheck::Verified { .. } => None,
    }
}

async fn global_at(app: &TestApp, position: i64) -> i64 {
    sqlx::query_scalar("SELECT global_position FROM event_log WHERE log_position = $1")
        .bind(position)
        .fetch_one(&app.pool)
        .await
        .expect("global position")
}

/// Sets `column` of the event at `position` to `edit`, checks that verification breaks there,
/// then restores the original value and checks that it verifies again.
async fn tamper(app: &TestApp, position: i64, column: &str, edit: &str) {
    let g = global_at(app, position).await;
    let original: Value = sqlx::query_scalar(&format!(
        "SELECT {column} FROM events WHERE global_position = $1"
    ))
    .bind(g)
    .fetch_one(&app.pool)
    .await
    .expect("original value");
    sqlx::query(&format!(
        "UPDATE events SET {column} = {edit} WHERE global_position = $1"
    ))
    .bind(g)
    .execute(&app.pool)
    .await
    .expect("tamper");
    assert_eq!(broken_at(&check(app).await), Some(position), "{column}");
    sqlx::query(&format!(
        "UPDATE events SET {column} = $2 WHERE global_position = $1"
    ))
    .bind(g)
    .bind(&original)
    .execute(&app.pool)
    .await
    .expect("restore");
    assert_eq!(broken_at(&check(app).await), None, "restored {column}");
}

#[tokio::test]
async fn verification_detects_edited_deleted_and_reordered_events() {
    let app = TestApp::spawn().await;
    let a = app.create_group("Site-A", None).await;
    for i in 0..4 {
        app.create_group(&format!("Rack-{i}"), Some(&a)).await;
    }
    let head = sequenced(&app).await;
    assert!(head >= 7, "roots and five groups: {head}");
    let ChainCheck::Verified {
        events,
        head_position,
        head_hash,
    } = check(&app).await
    else {
        panic!("an untouched log verifies");
    };
    assert_eq!((events, head_position), (head as u64, head));
    let stored: Vec<u8> = sqlx::query_scalar("SELECT hash FROM event_log WHERE log_position = $1")
        .bind(head)
        .fetch_one(&app.pool)
        .await
        .expect("hash");
    assert_eq!(head_hash, stored);
    // Verifying a suffix trusts the link before it.
    let suffix = verify(&app.pool, head - 1, 100, |_, _| {})
        .await
        .expect("verify");
    assert!(
        matches!(suffix, ChainCheck::Verified { events: 2, .. }),
        "{suffix:?}"
    );

    // An edited payload, then edited metadata (who did it).
    tamper(
        &app,
        4,
        "payload",
        // Any event: the log starts with the test tokens' Subject events.
        "payload || '{\"forged\": true}'::jsonb",
    )
    .await;
    tamper(
        &app,
        5,
        "metadata",
        "jsonb_set(metadata, '{actor_subject}', '\"mallory\"')",
    )
    .await;

    // Two events swapped in the log.
    let (g3, g4) = (global_at(&app, 3).await, global_at(&app, 4).await);
    let swap = |x: i64, y: i64| {
        let pool = app.pool.clone();
        async move {
            let mut tx = pool.begin().await.expect("tx");
            for (from, to) in [(x, -1), (y, x), (-1, y)] {
                sqlx::query("UPDATE event_log SET global_position = $2 WHERE global_position = $1")
                    .bind(from)
                    .bind(to)
                    .execute(&mut *tx)
                    .await
                    .expect("swap");
            }
            tx.commit().await.expect("commit");
        }
    };
    swap(g3, g4).await;
    assert_eq!(broken_at(&check(&app).await), Some(3));
    swap(g3, g4).await;
    assert_eq!(broken_at(&check(&app).await), None, "restored");

    // A deleted event, then a deleted log entry (a gap in positions).
    let g6 = global_at(&app, 6).await;
    sqlx::query("DELETE FROM events WHERE global_position = $1")
        .bind(g6)
        .execute(&app.pool)
        .await
        .expect("delete event");
    let check6 = check(&app).await;
    assert_eq!(broken_at(&check6), Some(6), "{check6:?}");
    sqlx::query("DELETE FROM event_log WHERE log_position = 6")
        .execute(&app.pool)
        .await
        .expect("delete log entry");
    let gap = check(&app).await;
    assert_eq!(broken_at(&gap), Some(6), "{gap:?}");
    assert!(matches!(&gap, ChainCheck::Broken { reason, .. } if reason.contains("missing")));
    app.shutdown().await;
}
