//! The audit trail over the large log (auditLog pages, a subtree, members as of a
//! position) and chain verification, each beside plain SQL of the same result.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use corral_api::runtime::BoxError;
use corral_api::state::{ApiConfig, AppState};
use corral_projections::public_log::{self, ChainCheck, LogFilter};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tower::ServiceExt;

use super::log::{large_log, MEASURED_DEVICE};
use super::{pool, AuditArgs, BUDGET, RUNS};
use crate::membership::{latency_rows, sample};
use crate::Row;

fn app_state(
    pool: &PgPool,
    lock_pool: PgPool,
    policy: Arc<corral_api::policy::Policy>,
) -> AppState {
    let (_tx, rx) = tokio::sync::watch::channel(Default::default());
    AppState::new(
        pool.clone(),
        lock_pool,
        corral_projections::waiter::ConsistencyWaiter::new(rx),
        Default::default(),
        policy,
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

/// The raw SQL page an auditLog page is made of (no changes, no GraphQL).
async fn raw_page(pool: &PgPool, filter: &str, value: &str) -> Result<usize, BoxError> {
    let sql = format!(
        "SELECT l.log_position, l.hash, e.* FROM event_log l JOIN events e USING (global_position)
          WHERE {filter} ORDER BY l.log_position LIMIT 51"
    );
    Ok(sqlx::query(&sql).bind(value).fetch_all(pool).await?.len())
}

pub(crate) async fn bench_audit(
    url: &str,
    args: &AuditArgs,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let pool = pool(url, 8).await?;
    let (measured, head) = large_log(&pool, args.audit_events).await?;
    let lock_pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
    let policy = corral_api::policy::Policy::built_in().await?;
    let state = app_state(&pool, lock_pool, policy);
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

    // One device's groups and one explanation as of the middle of the log, beside the same
    // queries on the current state.
    let middle = head / 2;
    let child0: String = sqlx::query_scalar(
        "SELECT aggregate_id FROM events WHERE aggregate_type = 'Group'
            AND payload -> 'GroupCreated' ->> 'name' = 'child-0'",
    )
    .fetch_one(&pool)
    .await?;
    let groups = "query($id: ID!, $p: Position) { device(id: $id) { groups(mode: EFFECTIVE, atPosition: $p) { group { id name path } reasons { viaGroupId source since } } } }";
    let explain = "query($g: ID!, $m: String!, $p: Position) { explainMembership(groupId: $g, memberId: $m, atPosition: $p) { member staticEntry ruleEntry excluded known rule ruleVersion ruleMatches reasons { viaGroupId } } }";
    let cases = [
        (
            "device.groups(EFFECTIVE)",
            groups,
            json!({ "id": MEASURED_DEVICE }),
        ),
        (
            "explainMembership",
            explain,
            json!({ "g": child0, "m": MEASURED_DEVICE }),
        ),
    ];
    for (name, query, vars) in cases {
        let mut then = vars.clone();
        then["p"] = json!(middle.to_string());
        let answer = gql(&app, &auditor, query, then.clone()).await?;
        let member = answer["device"]["groups"]
            .as_array()
            .is_some_and(|g| g.len() == 3)
            || answer["explainMembership"]["member"] == true;
        if !member {
            return Err(format!("{name} as of {middle}: {answer}").into());
        }
        let ours = sample(RUNS, BUDGET, || {
            let (app, auditor, then) = (app.clone(), auditor.clone(), then.clone());
            async move {
                gql(&app, &auditor, query, then).await?;
                Ok(())
            }
        })
        .await?;
        let live = sample(RUNS, BUDGET, || {
            let (app, auditor, vars) = (app.clone(), auditor.clone(), vars.clone());
            async move {
                gql(&app, &auditor, query, vars).await?;
                Ok(())
            }
        })
        .await?;
        latency_rows(
            rows,
            &format!(
                "{name} atPosition (the middle), one device with 41 membership events, {scale}"
            ),
            &ours,
            "the same query on the current state (read models)",
            &live,
            Some("< 50 ms"),
        );
    }

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
