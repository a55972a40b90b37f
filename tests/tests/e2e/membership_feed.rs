//! The NATS membership feed: durable watches registered through GraphQL (audited, `feed.manage`),
//! each change published once, in position order, with its position and the CloudEvents
//! attributes, through a restart of the feed and a NATS outage; a removed watch publishes
//! nothing more. And what a subtree of 10,000 members moving under a watched group costs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, Context};
use corral_tests::{nats, TestApp};
use corral_workers::membership_feed::{self, FeedStats, MembershipFeedConfig};
use serde_json::{json, Value};
use uuid::Uuid;

use super::membership::devices;
use super::subscriptions::{head, members_edit, move_group};

const REGISTER: &str = "mutation($input: RegisterMembershipWatchInput!) { registerMembershipWatch(input: $input) { watch { id groupId includeDescendants registeredAtPosition registeredBy description } position userErrors { field code message } } }";
const REMOVE: &str = "mutation($input: RemoveMembershipWatchInput!) { removeMembershipWatch(input: $input) { position userErrors { field code message } } }";
const LIST: &str = "{ membershipWatches { id groupId includeDescendants registeredBy } }";

fn feed_config() -> MembershipFeedConfig {
    let id = Uuid::new_v4().simple().to_string();
    MembershipFeedConfig {
        stream: format!("CORRAL_TEST_MEMBERSHIP_{id}"),
        subject_prefix: format!("corral_test.{id}.membership"),
        batch: 16,
        poll: Duration::from_millis(200),
        ..Default::default()
    }
}

async fn register(app: &TestApp, group: &str, descendants: bool) -> (String, i64) {
    let data = app
        .data(
            &app.admin,
            REGISTER,
            json!({ "input": { "groupId": group, "includeDescendants": descendants, "description": "CMDB sync", "reason": "ticket 42" } }),
        )
        .await;
    let p = &data["registerMembershipWatch"];
    assert_eq!(p["userErrors"], json!([]), "{data}");
    assert_eq!(p["watch"]["registeredBy"], "alice");
    let position: i64 = p["position"]
        .as_str()
        .expect("position")
        .parse()
        .expect("int");
    assert_eq!(p["watch"]["registeredAtPosition"], position.to_string());
    (p["watch"]["id"].as_str().expect("id").to_string(), position)
}

/// One published message: (subject, headers we check, body).
#[derive(Debug, Clone)]
struct Published {
    subject: String,
    msg_id: String,
    position: i64,
    index: i64,
    ce_type: String,
    body: Value,
}

async fn stream_messages(js: &Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

async fn wait_for(js: &Context, stream: &str, n: u64, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let have = stream_messages(js, stream).await;
        if have >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the stream holds {have} messages, not {n}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn read_all(js: &Context, stream: &str) -> Vec<Published> {
    let s = js.get_stream_no_info(stream).await.expect("stream");
    let n = stream_messages(js, stream).await;
    let mut out = Vec::new();
    for seq in 1..=n {
        let m = s.get_raw_message(seq).await.expect("message");
        let h = |k: &str| {
            m.headers
                .get(k)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        for k in [
            "ce-specversion",
            "ce-id",
            "ce-source",
            "ce-subject",
            "ce-time",
            "Content-Type",
        ] {
            assert!(!h(k).is_empty(), "{k} missing");
        }
        assert_eq!(h("ce-id"), h("Nats-Msg-Id"));
        out.push(Published {
            subject: m.subject.to_string(),
            msg_id: h("Nats-Msg-Id"),
            position: h("Corral-Position").parse().expect("position"),
            index: h("Corral-Change-Index").parse().expect("index"),
            ce_type: h("ce-type"),
            body: serde_json::from_slice(&m.payload).expect("json"),
        });
    }
    out
}

/// The (change, member) pairs of watch `watch`, in stream order.
fn of(all: &[Published], watch: &str) -> Vec<(String, String)> {
    all.iter()
        .filter(|m| m.body["watchId"] == watch)
        .map(|m| {
            (
                m.body["change"].as_str().expect("change").to_string(),
                m.body["memberId"].as_str().expect("member").to_string(),
            )
        })
        .collect()
}

async fn wait_position(stats: &FeedStats, position: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.position.load(Ordering::Relaxed) < position {
        assert!(
            Instant::now() < deadline,
            "{what}: the feed never reached {position}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn membership_watches_publish_each_change_once_in_order_through_a_restart_and_an_outage() {
    let app = TestApp::spawn().await;
    let mut server = nats::OwnedServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await.expect("connect"));
    let config = feed_config();
    let a = app.create_group("Site-A", None).await;
    let b = app.create_group("Rack-B", Some(&a)).await;
    let c = app.create_group("Spare-C", None).await;
    devices(&app, "d", 6).await;
    let spare = devices(&app, "s", 30).await;
    members_edit(
        &app,
        "addGroupMembers",
        &c,
        &spare.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;

    // Only feed.manage may register or list.
    let denied = app.gql(&app.operator, LIST, json!({})).await;
    assert_eq!(
        denied["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{denied}"
    );
    let (tree, registered) = register(&app, &a, true).await;
    let (rack, _) = register(&app, &b, false).await;
    let listed = app.data(&app.admin, LIST, json!({})).await;
    assert_eq!(
        listed["membershipWatches"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    // The registration is audited.
    let audit = app
        .data(
            &app.auditor,
            "query($f: AuditLogFilter) { auditLog(filter: $f, first: 10) { edges { node { eventType reason actor { subject } } } } }",
            json!({ "f": { "aggregateTypes": ["MembershipWatch"] } }),
        )
        .await;
    let edges = audit["auditLog"]["edges"]
        .as_array()
        .expect("edges")
        .clone();
    assert_eq!(edges.len(), 2, "{audit}");
    assert_eq!(edges[0]["node"]["actor"]["subject"], "alice");
    assert_eq!(edges[0]["node"]["reason"], "ticket 42");
    assert_eq!(edges[0]["node"]["eventType"], "MembershipWatchRegistered");

    let stats = Arc::new(FeedStats::default());
    let feed = membership_feed::spawn(
        app.pool.clone(),
        server.url(),
        config.clone(),
        stats.clone(),
    );
    members_edit(&app, "addGroupMembers", &b, &["d00000", "d00001"]).await;
    move_group(&app, &c, &a).await;
    // tree: 2 + 30, rack: 2.
    wait_for(
        &js,
        &config.stream,
        34,
        Duration::from_secs(30),
        "while running",
    )
    .await;

    // The feed stops; changes meanwhile are published when it starts again.
    feed.shutdown().await;
    members_edit(&app, "removeGroupMembers", &b, &["d00001"]).await;
    let feed = membership_feed::spawn(
        app.pool.clone(),
        server.url(),
        config.clone(),
        stats.clone(),
    );
    wait_for(
        &js,
        &config.stream,
        36,
        Duration::from_secs(30),
        "after a restart",
    )
    .await;

    // NATS goes down; changes wait in the log.
    server.stop();
    members_edit(&app, "addGroupMembers", &a, &["d00002", "d00003"]).await;
    members_edit(&app, "addGroupMembers", &b, &["d00004"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        stats.position.load(Ordering::Relaxed) < head(&app).await,
        "nothing is published while NATS is down"
    );
    server.restart();
    wait_for(
        &js,
        &config.stream,
        39,
        Duration::from_secs(60),
        "after the outage",
    )
    .await;

    // Removed: nothing more for the tree watch.
    let removed = app
        .data(&app.admin, REMOVE, json!({ "input": { "id": tree } }))
        .await;
    assert_eq!(removed["removeMembershipWatch"]["userErrors"], json!([]));
    members_edit(&app, "addGroupMembers", &a, &["d00005"]).await;
    members_edit(&app, "removeGroupMembers", &b, &["d00004"]).await;
    let end = head(&app).await;
    wait_position(&stats, end, "after the removal").await;
    wait_for(
        &js,
        &config.stream,
        41,
        Duration::from_secs(30),
        "the rack's last change",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let all = read_all(&js, &config.stream).await;
    assert_eq!(all.len(), 41, "each change once: {all:#?}");
    let mut ids: Vec<&str> = all.iter().map(|m| m.msg_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "message ids are unique");
    assert!(all.iter().all(|m| m.position > registered));
    assert!(
        all.windows(2).all(|w| w[0].position <= w[1].position),
        "in position order"
    );
    let mut expected_tree = vec![
        ("ENTERED".to_string(), "d00000".to_string()),
        ("ENTERED".into(), "d00001".into()),
    ];
    let mut sorted_spare = spare.clone();
    sorted_spare.sort();
    expected_tree.extend(
        sorted_spare
            .iter()
            .map(|s| ("ENTERED".to_string(), s.clone())),
    );
    expected_tree.extend([
        ("LEFT".into(), "d00001".into()),
        ("ENTERED".into(), "d00002".into()),
        ("ENTERED".into(), "d00003".into()),
        ("ENTERED".into(), "d00004".into()),
    ]);
    assert_eq!(of(&all, &tree), expected_tree);
    assert_eq!(
        of(&all, &rack),
        [
            ("ENTERED".to_string(), "d00000".to_string()),
            ("ENTERED".into(), "d00001".into()),
            ("LEFT".into(), "d00001".into()),
            ("ENTERED".into(), "d00004".into()),
            ("LEFT".into(), "d00004".into()),
        ]
    );
    // The move: 30 messages of one position, indexed 0..29, the last flagged.
    let moved: Vec<&Published> = all.iter().filter(|m| m.body["cause"] == "moved").collect();
    assert_eq!(moved.len(), 30);
    assert!(moved.iter().enumerate().all(|(i, m)| m.index == i as i64
        && m.position == moved[0].position
        && (m.body["lastOfPosition"] == true) == (i == 29)));
    let first = &all[0];
    assert!(first.subject.ends_with(".Entered"), "{}", first.subject);
    assert_eq!(first.ce_type, "io.corral.membership.Entered");
    assert_eq!(
        first.msg_id,
        format!(
            "{}:{}:{}",
            first.body["watchId"].as_str().expect("w"),
            first.position,
            first.index
        )
    );

    feed.shutdown().await;
    let _ = js.delete_stream(&config.stream).await;
    drop(server);
    app.shutdown().await;
}

/// What moving a subtree of N members under a watched group costs: N ENTERED messages of one
/// position. Prints the time from the move's commit to the last message stored, and the
/// subscription's replay of the same change (the figures in `docs/integrators.md`).
#[tokio::test]
async fn moving_a_subtree_of_10000_members_under_a_watched_group_publishes_10000_messages() {
    const N: usize = 10_000;
    let app = TestApp::spawn().await;
    let config = feed_config();
    let js = nats::jetstream().await;
    let a = app.create_group("Watched", None).await;
    let c = app.create_group("Big", None).await;
    let ids = devices(&app, "m", N).await;
    for chunk in ids.chunks(1_000) {
        members_edit(
            &app,
            "addGroupMembers",
            &c,
            &chunk.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;
    }
    let (_watch, _) = register(&app, &a, true).await;
    let stats = Arc::new(FeedStats::default());
    let feed = membership_feed::spawn(app.pool.clone(), nats::url(), config.clone(), stats.clone());
    let before = head(&app).await;
    wait_position(&stats, before, "caught up before the move").await;
    let started = Instant::now();
    move_group(&app, &c, &a).await;
    let committed = started.elapsed();
    wait_for(
        &js,
        &config.stream,
        N as u64,
        Duration::from_secs(120),
        "the move's messages",
    )
    .await;
    let published = started.elapsed();
    // The same change through the subscription's code path (fold at the position before,
    // apply the move).
    let mut conn = app.pool.acquire().await.expect("conn");
    let moved_at = head(&app).await;
    let fold_started = Instant::now();
    let mut w =
        corral_projections::watch::load(&mut conn, a.parse().expect("id"), true, before, 1_000_000)
            .await
            .expect("load");
    let entries = corral_projections::public_log::read(
        &mut conn,
        before,
        Some(moved_at),
        &corral_projections::watch::filter(a.parse().expect("id"), true),
        100,
    )
    .await
    .expect("read");
    let mut changes = 0;
    for e in &entries {
        if let Some(ev) = corral_projections::watch::decode(e).expect("decode") {
            changes += corral_projections::watch::apply(
                &mut w,
                &app.pool,
                e.position,
                e.event.recorded_at,
                &ev,
            )
            .await
            .expect("apply")
            .len();
        }
    }
    let replayed = fold_started.elapsed();
    assert_eq!(changes, N);
    // Same-run baseline: 10,000 messages of the same size published straight to a stream of
    // this server, pipelined in chunks of 1,000 acks (what the feed's sending costs at least).
    let baseline_stream = format!("{}_BASELINE", config.stream);
    let subject = format!(
        "{}.baseline",
        config.subject_prefix.replace("membership", "baseline")
    );
    js.create_stream(jetstream::stream::Config {
        name: baseline_stream.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await
    .expect("baseline stream");
    let body = vec![b'x'; 330];
    let baseline_started = Instant::now();
    for _ in 0..N / 1_000 {
        let mut acks = Vec::with_capacity(1_000);
        for _ in 0..1_000 {
            acks.push(
                js.publish(subject.clone(), body.clone().into())
                    .await
                    .expect("send"),
            );
        }
        for ack in acks {
            ack.await.expect("ack");
        }
    }
    let baseline = baseline_started.elapsed();
    let _ = js.delete_stream(&baseline_stream).await;
    println!(
        "subtree move of {N} members under a watched group: move committed in {committed:?}, \
         {N} ENTERED messages stored in JetStream {published:?} after the move began \
         ({:.0} messages/s); the watch's fold and the move's {N} changes computed in {replayed:?}; \
         same-run baseline: {N} plain messages published and acked in {baseline:?} ({:.0} messages/s)",
        N as f64 / published.as_secs_f64(),
        N as f64 / baseline.as_secs_f64()
    );
    feed.shutdown().await;
    let _ = js.delete_stream(&config.stream).await;
    app.shutdown().await;
}
