//! Benchmarks (b) and (c): projector catch-up against a raw scan, and the tree query through
//! GraphQL against a recursive CTE.

use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use corral_api::runtime::BoxError;
use corral_api::state::{ApiConfig, AppState};
use corral_domain::group::{GroupEvent, GroupType};
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::group_tree::GroupTreeProjection;
use corral_projections::log::{CatchUpReader, EVENT_COLUMNS};
use corral_projections::runner::{ensure_schema, step, Step, Stepper};
use corral_projections::sequencer::Sequencer;
use corral_projections::Projection;
use futures::TryStreamExt;
use serde_json::{json, Map, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

use super::{BenchArgs, Row};

/// Inserts a complete 3-ary tree of depth 8 (9,840 groups below the root) followed by
/// GroupUpdated events up to `backlog` events, in transactions of 5,000 rows.
async fn generate_backlog(pool: &PgPool, backlog: usize) -> Result<Vec<Uuid>, BoxError> {
    let meta = serde_json::to_value(EventMetadata::system(Source::Cli, "bench").to_map())?;
    let root = GroupType::Device.root_id();
    let mut rows: Vec<(Uuid, i64, &'static str, Value)> = Vec::new();
    let created = |name: String, parent: Option<Uuid>| GroupEvent::GroupCreated {
        group_type: GroupType::Device,
        name,
        parent_id: parent,
        description: None,
        metadata: Map::new(),
        is_system: parent.is_none(),
    };
    rows.push((
        root,
        1,
        "GroupCreated",
        serde_json::to_value(created("Inventory".into(), None))?,
    ));
    let mut level = vec![root];
    let mut all = Vec::new();
    for depth in 1..=8 {
        let mut next = Vec::new();
        for parent in &level {
            for k in 0..3 {
                let id = Uuid::new_v4();
                rows.push((
                    id,
                    1,
                    "GroupCreated",
                    serde_json::to_value(created(
                        format!("d{depth}-{k}-{}", next.len()),
                        Some(*parent),
                    ))?,
                ));
                next.push(id);
            }
        }
        all.extend(next.iter().copied());
        level = next;
    }
    let mut versions = vec![1i64; all.len()];
    let mut k = 0usize;
    while rows.len() < backlog {
        let i = k % all.len();
        versions[i] += 1;
        let event = GroupEvent::GroupUpdated {
            description: Some(format!("update {k}")),
            metadata: Map::new(),
            previous: None,
        };
        rows.push((
            all[i],
            versions[i],
            "GroupUpdated",
            serde_json::to_value(event)?,
        ));
        k += 1;
    }
    for chunk in rows.chunks(5000) {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'Group', id, seq, et, CASE et WHEN 'GroupUpdated' THEN '2' ELSE '1' END, p, $5 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::jsonb[]) AS u(id, seq, et, p)",
        )
        .bind(chunk.iter().map(|r| r.0.to_string()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.3.clone()).collect::<Vec<_>>())
        .bind(&meta)
        .execute(pool)
        .await?;
    }
    Ok(all)
}

/// How a catch-up is driven.
#[derive(Clone, Copy)]
pub(super) enum Driver {
    /// The projector's own loop (`run_projector`): batches of the projection's size, the next
    /// one read while the current one is applied.
    Projector,
    /// One `runner::step` after another, 5,000 events each: how projectors ran before.
    StepByStep,
}

pub(super) async fn catch_up(
    pool: &PgPool,
    projection: &dyn Projection,
    driver: Driver,
) -> Result<(usize, f64), BoxError> {
    ensure_schema(pool, projection).await?;
    let schema = projection.live_schema().unwrap_or("public");
    let started = Instant::now();
    let mut total = 0;
    let mut stepper = matches!(driver, Driver::Projector).then(|| {
        Stepper::new(
            pool,
            projection,
            CatchUpReader::for_projection(projection, projection.batch_size()),
            projection.name(),
            schema,
        )
    });
    let reader = CatchUpReader::for_projection(projection, 5000);
    loop {
        let next = match &mut stepper {
            Some(stepper) => stepper.step().await?,
            None => step(pool, projection, &reader, projection.name(), schema).await?,
        };
        match next {
            Step::Applied {
                events, caught_up, ..
            } => {
                total += events;
                if caught_up && events == 0 {
                    break;
                }
            }
            Step::Busy => return Err("projector busy".into()),
        }
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

/// Puts a projection back at the start of the log with empty tables.
async fn reset(pool: &PgPool, projection: &dyn Projection) -> Result<(), BoxError> {
    match projection.live_schema() {
        Some(schema) => {
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(pool)
                .await?;
        }
        None => {
            sqlx::query("TRUNCATE event_log").execute(pool).await?;
        }
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1")
        .bind(projection.name())
        .execute(pool)
        .await?;
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub(super) async fn bench_log(
    url: &str,
    args: &BenchArgs,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
    corral_migrations::migrate(&pool).await?;
    eprintln!("bench: generating a {}-event backlog", args.backlog);
    let groups = generate_backlog(&pool, args.backlog).await?;
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;

    // Baseline: a raw scan of the same rows, decoded the same way.
    let started = Instant::now();
    let sql =
        format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY transaction_id, global_position");
    let mut stream = sqlx::query(&sql).fetch(&pool);
    let mut scanned = 0usize;
    while let Some(row) = stream.try_next().await? {
        let txid: String = sqlx::Row::try_get(&row, "txid")?;
        let payload: Value = sqlx::Row::try_get(&row, "payload")?;
        scanned += usize::from(!txid.is_empty() && !payload.is_null());
    }
    drop(stream);
    let scan_rate = scanned as f64 / started.elapsed().as_secs_f64();
    for projection in [&GroupTreeProjection as &dyn Projection, &Sequencer] {
        // The same catch-up the way projectors ran before read-ahead and per-projection batch
        // sizes, then (from scratch again) the way they run now.
        let (old_n, old_secs) = catch_up(&pool, projection, Driver::StepByStep).await?;
        reset(&pool, projection).await?;
        let (n, secs) = catch_up(&pool, projection, Driver::Projector).await?;
        let (old_rate, rate) = (old_n as f64 / old_secs, n as f64 / secs);
        eprintln!(
            "bench: {} caught up {n} events in {secs:.2}s ({old_secs:.2}s one 5,000-event step at a time)",
            projection.name()
        );
        rows.push(Row {
            name: format!(
                "{} catch-up over {n} events, batches of {} read ahead (events/s)",
                projection.name(),
                projection.batch_size()
            ),
            corral: format!("{rate:.0}"),
            baseline_name: "raw SELECT scan of the same rows (rows/s)".into(),
            baseline: format!("{scan_rate:.0}"),
            ratio: rate / scan_rate,
            target: ">= 100000 events/s, >= 0.4 of the raw scan".into(),
        });
        rows.push(Row {
            name: format!(
                "{} catch-up, same events, one 5,000-event step at a time (events/s)",
                projection.name()
            ),
            corral: format!("{old_rate:.0}"),
            baseline_name: "raw SELECT scan of the same rows (rows/s)".into(),
            baseline: format!("{scan_rate:.0}"),
            ratio: old_rate / scan_rate,
            target: "-".into(),
        });
    }

    // Tree query through GraphQL vs a recursive CTE over the adjacency list.
    let lock_pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
    let (_tx, rx) = tokio::sync::watch::channel(Default::default());
    let state = AppState::new(
        pool.clone(),
        lock_pool,
        corral_projections::waiter::ConsistencyWaiter::new(rx),
        Default::default(),
        corral_api::policy::Policy::built_in().await?,
        ApiConfig::default(),
    );
    let token = corral_api::auth::create_token(&pool, "bench", "viewer").await?;
    let app = corral_api::http::app(state);
    let query = "query($id: ID!) { group(id: $id) { path ancestors { id name } children(first: 50) { edges { node { id name } } } } }";
    let pick = |i: usize| groups[(i * 7919) % groups.len()];
    let mut gql_times = Vec::with_capacity(args.requests);
    for i in 0..args.requests {
        let body =
            json!({ "query": query, "variables": { "id": pick(i).to_string() } }).to_string();
        let request = Request::post("/graphql")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(body))?;
        let started = Instant::now();
        let response = app.clone().oneshot(request).await?;
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
        gql_times.push(started.elapsed().as_secs_f64() * 1000.0);
        if i == 0 {
            let v: Value = serde_json::from_slice(&bytes)?;
            if v.get("errors").is_some() || v["data"]["group"].is_null() {
                return Err(format!("tree query failed: {v}").into());
            }
        }
    }
    let cte = "WITH RECURSIVE up AS (
            SELECT id, parent_id, name, 0 AS d FROM group_registry WHERE id = $1
            UNION ALL SELECT r.id, r.parent_id, r.name, up.d + 1 FROM group_registry r JOIN up ON r.id = up.parent_id)
        SELECT (SELECT string_agg(name, '/' ORDER BY d DESC) FROM up) AS path,
               (SELECT json_agg(json_build_object('id', id, 'name', name) ORDER BY d DESC) FROM up WHERE d > 0) AS ancestors,
               (SELECT json_agg(json_build_object('id', c.id, 'name', c.name)) FROM (
                    SELECT id, name FROM group_registry WHERE parent_id = $1 AND NOT deleted
                    ORDER BY lower(name), id LIMIT 50) c) AS children";
    let mut cte_times = Vec::with_capacity(args.requests);
    for i in 0..args.requests {
        let started = Instant::now();
        let row = sqlx::query(cte).bind(pick(i)).fetch_one(&pool).await?;
        let _: Option<String> = sqlx::Row::try_get(&row, "path")?;
        cte_times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    gql_times.sort_by(f64::total_cmp);
    cte_times.sort_by(f64::total_cmp);
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (g, c) = (percentile(&gql_times, p), percentile(&cte_times, p));
        rows.push(Row {
            name: format!(
                "GraphQL group {{ path ancestors children }}, {} groups, {label} (ms)",
                groups.len()
            ),
            corral: format!("{g:.3}"),
            baseline_name: format!("recursive CTE, same answer, {label} (ms)"),
            baseline: format!("{c:.3}"),
            ratio: g / c,
            target: "-".into(),
        });
    }
    pool.close().await;
    Ok(())
}
