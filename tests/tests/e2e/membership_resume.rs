//! `membershipChanges(fromPosition | after)`: the changes since a position are replayed
//! exactly (direct edits, a rule's, a subtree moving in), then the stream goes live with no
//! gap and no duplicate, and a client that disconnects resumes after its last change's cursor.

use std::time::{Duration, Instant};

use corral_tests::TestApp;
use serde_json::{json, Value};

use super::membership::devices;
use super::subscriptions::{connect, head, members_edit, move_group, next, serve, subscribe, Ws};

const RESUMABLE: &str = "subscription($id: ID!, $from: Position, $after: String) { membershipChanges(groupId: $id, includeDescendants: true, fromPosition: $from, after: $after) { position index lastOfPosition cursor change memberId source groupId cause } }";

/// The next `n` changes of subscription `id`.
async fn take(ws: &mut Ws, id: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let message = next(ws).await;
        if message["type"] == "complete" && message["id"] != id {
            continue; // an earlier subscription of this connection ended
        }
        assert_eq!(message["id"], id, "{message}");
        assert_eq!(message["type"], "next", "{message}");
        let c = message["payload"]["data"]["membershipChanges"].clone();
        assert!(c.is_object(), "{message}");
        out.push(c);
    }
    out
}

async fn set_rule(app: &TestApp, group: &str, rule: &str) {
    let data = app
        .data(
            &app.admin,
            "mutation($input: SetGroupRuleInput!) { setGroupRule(input: $input) { userErrors { code message } } }",
            json!({ "input": { "groupId": group, "rule": rule, "enabled": true } }),
        )
        .await;
    assert_eq!(data["setGroupRule"]["userErrors"], json!([]));
}

fn cursors(changes: &[Value]) -> Vec<String> {
    changes
        .iter()
        .map(|c| c["cursor"].as_str().expect("cursor").to_string())
        .collect()
}

#[tokio::test]
async fn membership_changes_replay_from_a_position_then_go_live_and_resume_after_a_cursor_exactly_once(
) {
    let app = TestApp::spawn().await;
    let (addr, server) = serve(&app).await;
    let a = app.create_group("Site-A", None).await;
    let b = app.create_group("Rack-B", Some(&a)).await;
    let r = app.create_group("Web-R", Some(&a)).await;
    let c = app.create_group("Spare-C", None).await;
    devices(&app, "d", 4).await;
    let spare = devices(&app, "s", 30).await;
    devices(&app, "r", 3).await;
    members_edit(
        &app,
        "addGroupMembers",
        &c,
        &spare.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;

    // A subscription live from now on sees everything as it happens.
    let mut live = connect(addr, &app.viewer).await;
    subscribe(&mut live, "live", RESUMABLE, json!({ "id": a })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p0 = head(&app).await;

    members_edit(&app, "addGroupMembers", &b, &["d00000", "d00001"]).await;
    // A rule's matches enter (the rule evaluator writes them).
    set_rule(&app, &r, "hostname:host-r%").await;
    // A whole subtree of 30 members moves in: 30 changes of one position.
    move_group(&app, &c, &a).await;
    members_edit(&app, "excludeGroupMembers", &b, &["d00000"]).await;
    let history = take(&mut live, "live", 2 + 3 + 30 + 1).await;
    let rule: Vec<&Value> = history.iter().filter(|c| c["source"] == "RULE").collect();
    assert_eq!(rule.len(), 3, "{history:?}");
    assert!(rule
        .iter()
        .all(|c| c["groupId"] == r.as_str() && c["change"] == "ENTERED"));
    let moved: Vec<&Value> = history.iter().filter(|c| c["cause"] == "moved").collect();
    assert_eq!(moved.len(), 30);
    let at = &moved[0]["position"];
    assert!(moved.iter().all(|c| &c["position"] == at), "one position");
    let places: Vec<(i64, bool)> = moved
        .iter()
        .map(|c| {
            (
                c["index"].as_i64().expect("index"),
                c["lastOfPosition"] == true,
            )
        })
        .collect();
    assert_eq!(places, (0..30).map(|i| (i, i == 29)).collect::<Vec<_>>());
    // Positions after p0, each change once, in (position, index) order.
    let keys: Vec<(i64, i64)> = history
        .iter()
        .map(|c| {
            let p: i64 = c["position"]
                .as_str()
                .expect("position")
                .parse()
                .expect("int");
            (p, c["index"].as_i64().expect("index"))
        })
        .collect();
    assert!(keys[0].0 > p0);
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");

    // Replayed from p0 + 1: exactly the same changes, then live ones with no gap or duplicate.
    let mut replay = connect(addr, &app.viewer).await;
    subscribe(
        &mut replay,
        "replay",
        RESUMABLE,
        json!({ "id": a, "from": (p0 + 1).to_string() }),
    )
    .await;
    let replayed = take(&mut replay, "replay", history.len()).await;
    assert_eq!(replayed, history, "the replay is the live history");
    members_edit(&app, "addGroupMembers", &a, &["d00002"]).await;
    let after_live = take(&mut live, "live", 1).await;
    let after_replay = take(&mut replay, "replay", 1).await;
    assert_eq!(after_live, after_replay);
    assert_eq!(after_live[0]["memberId"], "d00002");

    // A client that saw 10 changes (in the middle of the move) and lost its connection
    // resumes after its last cursor: every change once.
    let mut first = connect(addr, &app.viewer).await;
    subscribe(
        &mut first,
        "r1",
        RESUMABLE,
        json!({ "id": a, "from": (p0 + 1).to_string() }),
    )
    .await;
    let seen = take(&mut first, "r1", 10).await;
    drop(first);
    let last = seen.last().expect("seen")["cursor"].clone();
    let mut again = connect(addr, &app.viewer).await;
    subscribe(
        &mut again,
        "r2",
        RESUMABLE,
        json!({ "id": a, "after": last }),
    )
    .await;
    let rest = take(&mut again, "r2", history.len() + 1 - 10).await;
    let mut all = cursors(&seen);
    all.extend(cursors(&rest));
    let mut expected = cursors(&history);
    expected.extend(cursors(&after_live));
    assert_eq!(all, expected);

    // Bad starts are refused with a code.
    let mut bad = connect(addr, &app.viewer).await;
    for (id, vars, code) in [
        (
            "both",
            json!({ "id": a, "from": "1", "after": "1:0" }),
            "BAD_USER_INPUT",
        ),
        ("cursor", json!({ "id": a, "after": "x" }), "BAD_USER_INPUT"),
        (
            "future",
            json!({ "id": a, "from": (head(&app).await + 50).to_string() }),
            "BAD_USER_INPUT",
        ),
    ] {
        subscribe(&mut bad, id, RESUMABLE, vars).await;
        let mut reply = next(&mut bad).await;
        while reply["type"] == "complete" {
            reply = next(&mut bad).await;
        }
        assert_eq!(
            reply["payload"]["errors"][0]["extensions"]["code"], code,
            "{id}: {reply}"
        );
    }
    // From the very start of the log: the group did not exist yet, it is watched from its
    // creation on, and the replay holds the same changes.
    subscribe(
        &mut bad,
        "genesis",
        RESUMABLE,
        json!({ "id": a, "from": "1" }),
    )
    .await;
    let started = Instant::now();
    let from_genesis = take(&mut bad, "genesis", history.len()).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(from_genesis, history);
    server.abort();
    app.shutdown().await;
}
