//! Issue 4: the audit trail over a large log, time travel, chain verification, the NATS
//! publisher and commit-to-subscriber latency, each beside a same-run baseline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::futures_util::StreamExt;
use axum::body::Body;
use axum::http::Request;
use clap::Args;
use corral_api::auth::Actor;
use corral_api::runtime::BoxError;
use corral_api::state::{ApiConfig, AppState};
use corral_domain::membership::{MemberSource, MembershipCommand};
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::group_tree::GroupTreeProjection;
use corral_projections::public_log::{self, ChainCheck, LogFilter};
use corral_projections::sequencer::Sequencer;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

use super::membership::{latency_rows, sample};
use super::Row;

/// Options of the audit suite.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Events in the large log (audit queries, time travel, verification).
    #[arg(long, default_value_t = 1_000_000)]
    pub audit_events: usize,
    /// Events the NATS publisher (and the raw publish loop) publish.
    #[arg(long, default_value_t = 50_000)]
    pub publish_events: usize,
    /// Events per batch of the NATS publisher (and of the raw loop beside it).
    #[arg(long, default_value_t = 256)]
    pub publish_batch: i64,
    /// Commands per second for the commit-to-subscriber latency.
    #[arg(long, default_value_t = 500)]
    pub command_rate: u64,
    /// Seconds the latency measurement runs.
    #[arg(long, default_value_t = 20)]
    pub latency_seconds: u64,
}

/// Runs per latency figure.
const RUNS: usize = 200;
/// Most time one latency figure may take.
const BUDGET: Duration = Duration::from_secs(30);

async fn pool(url: &str, max: u32) -> Result<PgPool, BoxError> {
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .connect(url)
        .await?;
    corral_migrations::migrate(&pool).await?;
    Ok(pool)
}

fn app_state(pool: &PgPool, lock_pool: PgPool, enforcer: Arc<casbin::Enforcer>) -> AppState {
    let (_tx, rx) = tokio::sync::watch::channel(Default::default());
    AppState::new(
        pool.clone(),
        lock_pool,
        corral_projections::waiter::ConsistencyWaiter::new(rx),
        Default::default(),
        enforcer,
        ApiConfig::default(),
    )
}

/// POSTs `query` to the in-process router; returns the `data` (errors are failures).
async fn gql(
    app: &axum::Router,
    token: &str,
    query: &str,
    variables: Value,
) -> Result<Value, BoxError> {
    let body = json!({ "query": query, "variables": variables }).to_string();
    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(body))?;
    let response = app.clone().oneshot(request).await?;
    let bytes = axum::body::to_bytes(response.into_body(), 64 << 20).await?;
    let v: Value = serde_json::from_slice(&bytes)?;
    if v.get("errors").is_some() {
        return Err(format!("GraphQL errors: {v}").into());
    }
    Ok(v["data"].clone())
}

/// The large log: a measured group with 10 children of 1,000 members each and a history of
/// renames by one actor, 5,000 other groups and Membership events of theirs up to `events`,
/// sequenced with real hashes by the sequencer. Returns (measured group, head).
async fn large_log(pool: &PgPool, events: usize) -> Result<(Uuid, i64), BoxError> {
    let mut conn = pool.acquire().await?;
    let root = corral_domain::group::GroupType::Device.root_id();
    let measured = Uuid::new_v4();
    let insert = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                  event_version, payload, metadata) VALUES ($1, $2, $3, $4, '1', $5, $6)";
    let created = |parent: Uuid, name: &str| {
        json!({"GroupCreated": {"group_type": "DEVICE", "name": name, "parent_id": parent,
               "description": null, "metadata": {}, "is_system": false}})
    };
    let meta = |actor: &str, i: usize| {
        json!({"actor_subject": actor, "actor_role": "admin", "source": "api",
               "correlation_id": format!("bench-{i}"), "causation_id": format!("bench-{i}")})
    };
    let started = Instant::now();
    for (id, body) in [
        (root, created(root, "Inventory")),
        (measured, created(root, "Measured")),
    ] {
        let mut body = body;
        if id == root {
            body["GroupCreated"]["parent_id"] = Value::Null;
            body["GroupCreated"]["is_system"] = Value::Bool(true);
        }
        sqlx::query(insert)
            .bind("Group")
            .bind(id.to_string())
            .bind(1_i64)
            .bind("GroupCreated")
            .bind(body)
            .bind(meta("auditee", 0))
            .execute(&mut *conn)
            .await?;
    }
    for i in 0..100 {
        sqlx::query(insert)
            .bind("Group")
            .bind(measured.to_string())
            .bind(2 + i as i64)
            .bind("GroupRenamed")
            .bind(json!({"GroupRenamed": {"name": format!("Measured-{}", i + 1),
                         "previous_name": if i == 0 { "Measured".to_string() } else { format!("Measured-{i}") }}}))
            .bind(meta("auditee", i + 1))
            .execute(&mut *conn)
            .await?;
    }
    let ids: Vec<String> = (0..10_000).map(|i| format!("m{i:05}")).collect();
    sqlx::query(
        "INSERT INTO devices (id, hostname, is_available)
         SELECT x, 'host-' || x, true FROM unnest($1::text[]) x",
    )
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    for c in 0..10 {
        let child = Uuid::new_v4();
        sqlx::query(insert)
            .bind("Group")
            .bind(child.to_string())
            .bind(1_i64)
            .bind("GroupCreated")
            .bind(created(measured, &format!("child-{c}")))
            .bind(meta("auditee", 200 + c))
            .execute(&mut *conn)
            .await?;
        sqlx::query(insert)
            .bind("Membership")
            .bind(child.to_string())
            .bind(1_i64)
            .bind("MembersAdded")
            .bind(
                json!({"MembersAdded": {"member_type": "DEVICE", "source": "STATIC",
                         "member_ids": ids[c * 1000..(c + 1) * 1000]}}),
            )
            .bind(meta("auditee", 300 + c))
            .execute(&mut *conn)
            .await?;
    }
    // Padding, with the write-side triggers off (they only keep registries).
    let pad_groups = 5_000usize;
    let per_group = events.saturating_sub(pad_groups + 122) / pad_groups;
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         SELECT 'Group', gen_random_uuid()::text, 1, 'GroupCreated', '1',
                jsonb_build_object('GroupCreated', jsonb_build_object('group_type', 'DEVICE',
                  'name', 'pad-' || i, 'parent_id', $1::text, 'description', null,
                  'metadata', '{}'::jsonb, 'is_system', false)),
                jsonb_build_object('actor_subject', 'pad', 'actor_role', 'admin',
                  'source', 'api', 'correlation_id', 'pad-' || i, 'causation_id', 'pad-' || i)
           FROM generate_series(1, $2) i",
    )
    .bind(root.to_string())
    .bind(pad_groups as i32)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         SELECT 'Membership', g.aggregate_id, s, 'MembersAdded', '1',
                jsonb_build_object('MembersAdded', jsonb_build_object('member_type', 'DEVICE',
                  'source', 'STATIC', 'member_ids',
                  (SELECT jsonb_agg('pad-' || s || '-' || k) FROM generate_series(1, 10) k))),
                jsonb_build_object('actor_subject', 'pad', 'actor_role', 'operator',
                  'source', 'api', 'correlation_id', 'p', 'causation_id', 'p')
           FROM (SELECT aggregate_id FROM events WHERE aggregate_type = 'Group'
                    AND payload -> 'GroupCreated' ->> 'name' LIKE 'pad-%') g,
                generate_series(1, $1) s",
    )
    .bind(per_group as i32)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SET session_replication_role = origin")
        .execute(&mut *conn)
        .await?;
    drop(conn);
    eprintln!(
        "bench: audit: log written in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let (n, secs) = super::catch_up::catch_up(pool, &Sequencer).await?;
    eprintln!("bench: audit: sequenced {n} events in {secs:.1}s");
    let (n, secs) = super::catch_up::catch_up(pool, &GroupTreeProjection).await?;
    eprintln!("bench: audit: group tree over {n} events in {secs:.1}s");
    for table in ["events", "event_log", "devices"] {
        sqlx::query(&format!("ANALYZE {table}"))
            .execute(pool)
            .await?;
    }
    let mut conn = pool.acquire().await?;
    let (head, _) = public_log::head(&mut conn).await?;
    Ok((measured, head))
}

/// The raw SQL page an auditLog page is made of (no changes, no GraphQL).
async fn raw_page(pool: &PgPool, filter: &str, value: &str) -> Result<usize, BoxError> {
    let sql = format!(
        "SELECT l.log_position, l.hash, e.* FROM event_log l JOIN events e USING (global_position)
          WHERE {filter} ORDER BY l.log_position LIMIT 51"
    );
    Ok(sqlx::query(&sql).bind(value).fetch_all(pool).await?.len())
}

pub(super) async fn bench_audit(
    url: &str,
    args: &AuditArgs,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let pool = pool(url, 8).await?;
    let (measured, head) = large_log(&pool, args.audit_events).await?;
    let lock_pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
    let enforcer = corral_api::policy::enforcer().await?;
    let state = app_state(&pool, lock_pool, enforcer);
    let app = corral_api::http::app(state);
    let auditor = corral_api::auth::create_token(&pool, "bench", "auditor").await?;
    let scale = format!("{head}-event log");

    // auditLog pages for one group, for its subtree and for one actor.
    let page = "query($f: AuditLogFilter) { auditLog(filter: $f, first: 50) { edges { node { position eventType actor { subject role } reason changes { field before after } } } } }";
    let cases = [
        (
            "auditLog(groupId), first 50",
            json!({ "groupId": measured }),
            "e.aggregate_type IN ('Group', 'Membership') AND e.aggregate_id = $1",
            measured.to_string(),
        ),
        (
            "auditLog(actor), first 50",
            json!({ "actor": "auditee" }),
            "(e.metadata ->> 'actor_subject') = $1",
            "auditee".to_string(),
        ),
    ];
    for (name, filter, raw_filter, value) in cases {
        let data = gql(&app, &auditor, page, json!({ "f": filter })).await?;
        let n = data["auditLog"]["edges"].as_array().map_or(0, Vec::len);
        if n != 50 {
            return Err(format!("{name}: {n} entries, expected 50").into());
        }
        let ours = sample(RUNS, BUDGET, || {
            let (app, auditor, filter) = (app.clone(), auditor.clone(), filter.clone());
            async move {
                gql(&app, &auditor, page, json!({ "f": filter })).await?;
                Ok(())
            }
        })
        .await?;
        let raw = sample(RUNS, BUDGET, || {
            let (pool, value) = (pool.clone(), value.clone());
            async move {
                raw_page(&pool, raw_filter, &value).await?;
                Ok(())
            }
        })
        .await?;
        latency_rows(
            rows,
            &format!("{name} over a {scale} (GraphQL, with changes)"),
            &ours,
            "raw SQL of the same page (log JOIN events, indexed)",
            &raw,
            None,
        );
    }
    let subtree = sample(RUNS, BUDGET, || {
        let (app, auditor) = (app.clone(), auditor.clone());
        async move {
            gql(
                &app,
                &auditor,
                page,
                json!({ "f": { "groupId": measured, "includeDescendants": true } }),
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    let naive = "WITH RECURSIVE sub AS (SELECT id FROM group_registry WHERE id = $1::uuid
                   UNION ALL SELECT r.id FROM group_registry r JOIN sub ON r.parent_id = sub.id)
                 SELECT l.log_position FROM event_log l JOIN events e USING (global_position)
                  WHERE e.aggregate_type IN ('Group', 'Membership')
                    AND e.aggregate_id IN (SELECT id::text FROM sub)
                  ORDER BY l.log_position LIMIT 51";
    let cte = sample(RUNS, BUDGET, || {
        let pool = pool.clone();
        async move {
            sqlx::query(naive)
                .bind(measured.to_string())
                .fetch_all(&pool)
                .await?;
            Ok(())
        }
    })
    .await?;
    latency_rows(
        rows,
        &format!("auditLog(groupId, includeDescendants), 11 groups, first 50, {scale}"),
        &subtree,
        "recursive CTE + the same page in SQL",
        &cte,
        None,
    );

    // members(asOf): 10,000 effective members through 10 children.
    let members = "query($id: ID!, $p: Position) { group(id: $id, atPosition: $p) { members(mode: EFFECTIVE, first: 1000) { totalCount edges { node { ... on Device { id } } } } } }";
    let data = gql(
        &app,
        &auditor,
        members,
        json!({ "id": measured, "p": head.to_string() }),
    )
    .await?;
    if data["group"]["members"]["totalCount"] != 10_000 {
        return Err(format!("members(asOf): {}", data["group"]["members"]["totalCount"]).into());
    }
    let ours = sample(20, BUDGET, || {
        let (app, auditor) = (app.clone(), auditor.clone());
        async move {
            gql(
                &app,
                &auditor,
                members,
                json!({ "id": measured, "p": head.to_string() }),
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    let naive = "WITH RECURSIVE sub AS (SELECT id FROM group_registry WHERE id = $1
                   UNION ALL SELECT r.id FROM group_registry r JOIN sub ON r.parent_id = sub.id)
                 SELECT count(DISTINCT m) FROM sub
                   JOIN events e ON e.aggregate_type = 'Membership' AND e.aggregate_id = sub.id::text
                   JOIN event_log l USING (global_position),
                   jsonb_array_elements_text(e.payload -> 'MembersAdded' -> 'member_ids') m
                  WHERE e.event_type = 'MembersAdded' AND l.log_position <= $2";
    let count: i64 = sqlx::query_scalar(naive)
        .bind(measured)
        .bind(head)
        .fetch_one(&pool)
        .await?;
    if count != 10_000 {
        return Err(format!("naive members count {count}").into());
    }
    let baseline = sample(20, BUDGET, || {
        let pool = pool.clone();
        async move {
            sqlx::query(naive)
                .bind(measured)
                .bind(head)
                .fetch_one(&pool)
                .await?;
            Ok(())
        }
    })
    .await?;
    latency_rows(
        rows,
        &format!("group(atPosition) members(EFFECTIVE, first 1000) totalCount, 10k members, {scale}"),
        &ours,
        "naive SQL: distinct ids of the subtree's MembersAdded up to the position (no removals, current tree)",
        &baseline,
        Some("< 1000 ms"),
    );

    // Verifying the whole chain against a plain scan of the same rows.
    let started = Instant::now();
    let check = public_log::verify(&pool, 1, 5_000, |_, _| {}).await?;
    let verify_secs = started.elapsed().as_secs_f64();
    if !matches!(check, ChainCheck::Verified { events, .. } if events as i64 == head) {
        return Err(format!("verify: {check:?}").into());
    }
    let started = Instant::now();
    let mut after = 0i64;
    let mut conn = pool.acquire().await?;
    loop {
        let entries =
            public_log::read(&mut conn, after, None, &LogFilter::default(), 5_000).await?;
        let Some(last) = entries.last() else { break };
        after = last.position;
    }
    drop(conn);
    let scan_secs = started.elapsed().as_secs_f64();
    rows.push(Row {
        name: format!("corral audit verify, {head} events (events/s)"),
        corral: format!("{:.0}", head as f64 / verify_secs),
        baseline_name: "reading the same entries by position, no hashing (events/s)".into(),
        baseline: format!("{:.0}", head as f64 / scan_secs),
        ratio: scan_secs / verify_secs,
        target: "-".into(),
    });
    pool.close().await;
    Ok(())
}

/// Commit-to-subscriber latency at a steady command rate, and the NATS publisher's rate
/// against a raw publish loop.
pub(super) async fn bench_streams(
    url: &str,
    args: &AuditArgs,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let pool = pool(url, 16).await?;
    let background =
        corral_workers::start_with(pool.clone(), true, Duration::from_secs(1), None).await?;
    let lock_pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
    let enforcer = corral_api::policy::enforcer().await?;
    let (_tx, rx) = tokio::sync::watch::channel(Default::default());
    let state = AppState::new(
        pool.clone(),
        lock_pool,
        corral_projections::waiter::ConsistencyWaiter::new(rx),
        background.commit_signal(),
        enforcer,
        ApiConfig::default(),
    );
    corral_api::runtime::ensure_roots(&state.groups).await?;
    let schema = state.schema.clone().ok_or("schema")?;

    // Groups and devices the commands add to and remove from.
    let groups: Vec<Uuid> = {
        let meta = EventMetadata::system(Source::Cli, "bench");
        let mut out = vec![];
        for i in 0..50 {
            let id = Uuid::new_v4();
            state
                .groups
                .execute(
                    corral_domain::group::GroupCommand::Create {
                        id,
                        group_type: corral_domain::group::GroupType::Device,
                        name: format!("latency-{i}"),
                        parent_id: corral_domain::group::GroupType::Device.root_id(),
                        description: None,
                        metadata: None,
                    },
                    None,
                    &meta,
                )
                .await
                .map_err(|e| e.to_string())?;
            out.push(id);
        }
        out
    };
    let devices: Vec<String> = (0..1000).map(|i| format!("lat{i:04}")).collect();
    sqlx::query("INSERT INTO devices (id, hostname, is_available) SELECT x, x, true FROM unnest($1::text[]) x")
        .bind(&devices)
        .execute(&pool)
        .await?;

    // The subscriber: the GraphQL subscription through the executor (no websocket hop).
    let actor = Actor::with_role("bench", "auditor", "bench");
    let request = async_graphql::Request::new(
        "subscription { events(filter: { aggregateTypes: [\"Membership\"] }) { position recordedAt } }",
    )
    .data(actor);
    let mut stream = schema.execute_stream(request);
    let (lat_tx, mut lat_rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
    let subscriber = tokio::spawn(async move {
        while let Some(response) = stream.next().await {
            let received = chrono::Utc::now();
            let Ok(data) = response.data.into_json() else {
                continue;
            };
            let Some(at) = data["events"]["recordedAt"].as_str() else {
                continue;
            };
            if let Ok(at) = chrono::DateTime::parse_from_rfc3339(at) {
                let ms = (received - at.with_timezone(&chrono::Utc))
                    .num_microseconds()
                    .unwrap_or(0) as f64
                    / 1000.0;
                let _ = lat_tx.send(ms);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = (args.command_rate * args.latency_seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.command_rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        ticker.tick().await;
        let memberships = state.memberships.clone();
        let group = groups[i % groups.len()];
        let member = devices[(i / groups.len()) % devices.len()].clone();
        let adding = (i / (groups.len() * devices.len())).is_multiple_of(2);
        tasks.spawn(async move {
            let meta = EventMetadata::system(Source::Cli, format!("lat-{i}"));
            let command = if adding {
                MembershipCommand::Add {
                    member_ids: vec![member],
                    source: MemberSource::Static,
                    rule_version: None,
                    cause: None,
                }
            } else {
                MembershipCommand::Remove {
                    member_ids: vec![member],
                    source: MemberSource::Static,
                    rule_version: None,
                    cause: None,
                }
            };
            memberships
                .execute(group, command, &meta)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(total);
    let deadline = Instant::now() + Duration::from_secs(30);
    while latencies.len() < total && Instant::now() < deadline {
        if let Ok(Some(ms)) = tokio::time::timeout(Duration::from_secs(1), lat_rx.recv()).await {
            latencies.push(ms);
        }
    }
    subscriber.abort();
    if latencies.len() < total {
        return Err(format!(
            "the subscriber received {} of {total} events",
            latencies.len()
        )
        .into());
    }
    latencies.sort_by(f64::total_cmp);

    // Baseline: INSERT + NOTIFY in one transaction, received by a LISTEN connection.
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
    listener.listen("bench_latency").await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_notify (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        .execute(&pool)
        .await?;
    let n = (args.command_rate * 5) as usize;
    let mut ticker = tokio::time::interval(interval);
    let writer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for _ in 0..n {
                ticker.tick().await;
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut tx = pool.begin().await?;
                    sqlx::query("WITH i AS (INSERT INTO bench_notify DEFAULT VALUES RETURNING at) SELECT pg_notify('bench_latency', (SELECT at::text FROM i))")
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok::<(), sqlx::Error>(())
                });
            }
        })
    };
    let mut raw = Vec::with_capacity(n);
    while raw.len() < n {
        let note = tokio::time::timeout(Duration::from_secs(10), listener.recv()).await??;
        let received = chrono::Utc::now();
        if let Ok(at) = chrono::DateTime::parse_from_str(note.payload(), "%Y-%m-%d %H:%M:%S%.f%#z")
        {
            raw.push(
                (received - at.with_timezone(&chrono::Utc))
                    .num_microseconds()
                    .unwrap_or(0) as f64
                    / 1000.0,
            );
        }
    }
    writer.await?;
    raw.sort_by(f64::total_cmp);
    latency_rows(
        rows,
        &format!("commit-to-subscriber (events subscription), {achieved:.0} commands/s"),
        &latencies,
        "INSERT + NOTIFY to a LISTEN connection at the same rate",
        &raw,
        Some("< 100 ms"),
    );

    // NATS: the publisher against a raw publish loop of the same payloads.
    match std::env::var("NATS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        None => eprintln!("bench: NATS_URL is not set; skipping the NATS publisher figures"),
        Some(nats) => nats_rates(&pool, &nats, &state, &groups, &devices, args, rows).await?,
    }
    background.shutdown().await;
    pool.close().await;
    Ok(())
}

async fn nats_rates(
    pool: &PgPool,
    nats: &str,
    state: &AppState,
    groups: &[Uuid],
    devices: &[String],
    args: &AuditArgs,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    // Enough events in the log (membership adds of single ids, as above).
    let mut conn = pool.acquire().await?;
    loop {
        let (head, _) = public_log::head(&mut conn).await?;
        if head as usize >= args.publish_events {
            break;
        }
        // Each group gets an exclude and an unexclude per device: just enough rounds.
        let per_group = (args.publish_events - head as usize) / (2 * groups.len()) + 1;
        let mut tasks = tokio::task::JoinSet::new();
        for &group in groups {
            let memberships = state.memberships.clone();
            let ids: Vec<String> = devices.iter().take(per_group).cloned().collect();
            tasks.spawn(async move {
                let meta = EventMetadata::system(Source::Cli, "fill");
                for chunk in ids.chunks(1) {
                    let c = MembershipCommand::Exclude {
                        member_ids: chunk.to_vec(),
                    };
                    memberships
                        .execute(group, c, &meta)
                        .await
                        .map_err(|e| e.to_string())?;
                    let c = MembershipCommand::Unexclude {
                        member_ids: chunk.to_vec(),
                    };
                    memberships
                        .execute(group, c, &meta)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
    }
    // Let the sequencer finish.
    let head = loop {
        let (events, logged): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM event_log)",
        )
        .fetch_one(&mut *conn)
        .await?;
        if events == logged {
            break logged;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let entries = public_log::read(&mut conn, 0, Some(head), &LogFilter::default(), head).await?;
    drop(conn);
    let tag = Uuid::new_v4().simple().to_string();
    let client = async_nats::connect(nats).await?;
    let js = async_nats::jetstream::new(client.clone());

    // Raw: the same envelopes, subjects and message ids, pipelined in batches of the same size.
    let raw_config = async_nats::jetstream::stream::Config {
        name: format!("BENCH_RAW_{tag}"),
        subjects: vec![format!("benchraw{tag}.>")],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    };
    js.get_or_create_stream(raw_config.clone()).await?;
    let config = corral_workers::publisher::PublisherConfig {
        stream: format!("BENCH_PUB_{tag}"),
        subject_prefix: format!("benchpub{tag}"),
        batch: args.publish_batch.max(1),
        ..Default::default()
    };
    let batch = config.batch as usize;
    let payloads: Vec<(String, async_nats::HeaderMap, String)> = entries
        .iter()
        .map(|e| {
            let mut headers = async_nats::HeaderMap::new();
            for (k, v) in corral_workers::publisher::headers(e) {
                headers.insert(k, v.as_str());
            }
            let subject =
                config
                    .subject(e)
                    .replacen(&config.subject_prefix, &format!("benchraw{tag}"), 1);
            (subject, headers, e.envelope().to_string())
        })
        .collect();
    let started = Instant::now();
    for chunk in payloads.chunks(batch) {
        let mut acks = Vec::with_capacity(chunk.len());
        for (subject, headers, payload) in chunk {
            acks.push(
                js.publish_with_headers(subject.clone(), headers.clone(), payload.clone().into())
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
    }
    let raw_rate = payloads.len() as f64 / started.elapsed().as_secs_f64();
    js.delete_stream(&raw_config.name).await?;

    // Corral's publisher: from its first event to the head (it reads, envelopes, publishes).
    let stats = Arc::new(corral_workers::publisher::PublisherStats::default());
    let started = Instant::now();
    let publisher = corral_workers::publisher::spawn(
        pool.clone(),
        nats.to_string(),
        config.clone(),
        stats.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    while stats.position.load(std::sync::atomic::Ordering::Relaxed) < head {
        if Instant::now() > deadline {
            return Err("the publisher did not reach the head in 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = head as f64 / started.elapsed().as_secs_f64();
    publisher.shutdown().await;
    js.delete_stream(&config.stream).await?;
    rows.push(Row {
        name: format!("NATS publisher, {head} events from PostgreSQL to JetStream (events/s)"),
        corral: format!("{rate:.0}"),
        baseline_name: format!(
            "raw async-nats publish loop, same payloads, batches of {batch} (msgs/s)"
        ),
        baseline: format!("{raw_rate:.0}"),
        ratio: rate / raw_rate,
        target: ">= 0.50".into(),
    });
    Ok(())
}
