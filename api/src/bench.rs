//! `corral bench`: each figure beside a baseline measured in the same run, as a ratio.
//!
//! Uses `DATABASE_URL`'s server when set (creating and dropping its own databases), else a
//! private PostgreSQL with default durability in a temporary directory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use clap::Args;
use corral_api::embedded_pg::{EmbeddedOptions, EmbeddedPostgres};
use corral_api::runtime::{self, BoxError};
use corral_api::state::{ApiConfig, AppState};
use corral_domain::group::{GroupCommand, GroupEvent, GroupType};
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::group_tree::GroupTreeProjection;
use corral_projections::log::{CatchUpReader, EVENT_COLUMNS};
use corral_projections::runner::{ensure_schema, step, Step};
use corral_projections::sequencer::Sequencer;
use corral_projections::Projection;
use futures::TryStreamExt;
use serde_json::{json, Map, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

/// Benchmark options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Seconds each throughput measurement runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Events in the catch-up backlog.
    #[arg(long, default_value_t = 200_000)]
    pub backlog: usize,
    /// Requests for the latency measurements.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
}

async fn command(
    groups: &corral_projections::directory::GroupCommands,
    cmd: GroupCommand,
    meta: &EventMetadata,
) -> Result<corral_projections::executor::Committed, BoxError> {
    groups
        .execute(cmd, None, meta)
        .await
        .map_err(|e| e.to_string().into())
}

fn command_row(command: &str, concurrency: usize, rate: f64, raw: f64) -> Row {
    Row {
        name: format!("{command} via executor, concurrency {concurrency} (cmd/s)"),
        corral: format!("{rate:.0}"),
        baseline_name: "raw INSERT of an event row (rows/s)".into(),
        baseline: format!("{raw:.0}"),
        ratio: rate / raw,
        target: if concurrency == 32 && !command.contains('+') {
            ">= 0.40".into()
        } else {
            "-".into()
        },
    }
}

struct Row {
    name: String,
    corral: String,
    baseline_name: String,
    baseline: String,
    ratio: f64,
    target: String,
}

struct Server {
    url_for: Box<dyn Fn(&str) -> String>,
    embedded: Option<(EmbeddedPostgres, std::path::PathBuf)>,
}

async fn server() -> Result<Server, BoxError> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        runtime::url_with_database(&url, "postgres")?;
        return Ok(Server {
            url_for: Box::new(move |db| runtime::url_with_database(&url, db).unwrap_or_default()),
            embedded: None,
        });
    }
    let dir = std::env::temp_dir().join(format!("corral-bench-{}", std::process::id()));
    eprintln!(
        "bench: DATABASE_URL is not set; starting a private PostgreSQL in {}",
        dir.display()
    );
    let pg = EmbeddedPostgres::start(EmbeddedOptions::persistent(&dir)).await?;
    let template = pg.url("__DB__");
    Ok(Server {
        url_for: Box::new(move |db| template.replace("__DB__", db)),
        embedded: Some((pg, dir)),
    })
}

async fn fresh_db(server: &Server, label: &str) -> Result<(String, String), BoxError> {
    let name = format!("corral_bench_{label}_{}", Uuid::new_v4().simple());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&(server.url_for)("postgres"))
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await?;
    admin.close().await;
    Ok((name.clone(), (server.url_for)(&name)))
}

async fn drop_db(server: &Server, name: &str) {
    if let Ok(admin) = PgPoolOptions::new()
        .max_connections(1)
        .connect(&(server.url_for)("postgres"))
        .await
    {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await;
    }
}

/// Runs `op` from `concurrency` tasks for `seconds`; returns operations per second.
async fn throughput<F, Fut>(concurrency: usize, seconds: u64, op: F) -> Result<f64, BoxError>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (op, done) = (op.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                op(worker, i).await?;
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), BoxError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

async fn bench_commands(url: &str, seconds: u64, rows: &mut Vec<Row>) -> Result<(), BoxError> {
    let (pool, lock_pool) = runtime::pools(url, 40).await?;
    corral_migrations::migrate(&pool).await?;
    let groups = Arc::new(corral_projections::directory::GroupCommands::new(
        pool.clone(),
        lock_pool,
        Default::default(),
    ));
    runtime::ensure_roots(&groups).await?;
    let meta = EventMetadata::system(Source::Cli, "bench");
    let root = GroupType::Device.root_id();
    let mut parents = Vec::new();
    for i in 0..32 {
        let id = Uuid::new_v4();
        let cmd = GroupCommand::Create {
            id,
            name: format!("parent-{i}"),
            group_type: GroupType::Device,
            parent_id: root,
            description: None,
            metadata: None,
        };
        groups.execute(cmd, None, &meta).await?;
        parents.push(id);
    }
    sqlx::query("CREATE TABLE bench_raw (LIKE events INCLUDING ALL)")
        .execute(&pool)
        .await?;
    let payload = serde_json::to_value(GroupEvent::GroupCreated {
        group_type: GroupType::Device,
        name: "x".into(),
        parent_id: Some(root),
        description: None,
        metadata: Map::new(),
        is_system: false,
    })?;
    let metadata = serde_json::to_value(meta.to_map())?;
    for concurrency in [1usize, 32] {
        let (g, parents2, meta2) = (groups.clone(), parents.clone(), meta.clone());
        let run = Uuid::new_v4().simple().to_string();
        let corral = throughput(concurrency, seconds, move |worker, i| {
            let (g, parent, meta, run) = (g.clone(), parents2[worker], meta2.clone(), run.clone());
            async move {
                let cmd = GroupCommand::Create {
                    id: Uuid::new_v4(),
                    name: format!("g-{run}-{i}"),
                    group_type: GroupType::Device,
                    parent_id: parent,
                    description: None,
                    metadata: None,
                };
                command(&g, cmd, &meta).await?;
                Ok(())
            }
        })
        .await?;
        let (p, pl, md) = (pool.clone(), payload.clone(), metadata.clone());
        let raw = throughput(concurrency, seconds, move |_, _| {
            let (p, pl, md) = (p.clone(), pl.clone(), md.clone());
            async move {
                sqlx::query("INSERT INTO bench_raw (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ('Group', $1, 1, 'GroupCreated', '1', $2, $3)")
                    .bind(Uuid::new_v4().to_string())
                    .bind(pl)
                    .bind(md)
                    .execute(&p)
                    .await?;
                Ok(())
            }
        })
        .await?;
        // The shape of postgres-es's commit alone (BEGIN; INSERT; COMMIT), which every command
        // pays: the ceiling for any executor built on it.
        let (p, pl, md) = (pool.clone(), payload.clone(), metadata.clone());
        let raw_tx = throughput(concurrency, seconds, move |_, _| {
            let (p, pl, md) = (p.clone(), pl.clone(), md.clone());
            async move {
                let mut tx = p.begin().await?;
                sqlx::query("INSERT INTO bench_raw (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ('Group', $1, 1, 'GroupCreated', '1', $2, $3)")
                    .bind(Uuid::new_v4().to_string())
                    .bind(pl)
                    .bind(md)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
        })
        .await?;
        rows.push(Row {
            name: format!("raw BEGIN; INSERT; COMMIT (postgres-es's commit), concurrency {concurrency} (rows/s)"),
            corral: format!("{raw_tx:.0}"),
            baseline_name: "raw INSERT of an event row (rows/s)".into(),
            baseline: format!("{raw:.0}"),
            ratio: raw_tx / raw,
            target: "(ceiling)".into(),
        });
        let (g, parents3, meta3) = (groups.clone(), parents.clone(), meta.clone());
        let updates = throughput(concurrency, seconds, move |worker, i| {
            let (g, id, meta) = (g.clone(), parents3[worker], meta3.clone());
            async move {
                let cmd = GroupCommand::Update {
                    id,
                    description: Some(format!("update {i}")),
                    metadata: None,
                };
                command(&g, cmd, &meta).await?;
                Ok(())
            }
        })
        .await?;
        // What a mutation pays before it waits for the read models: the command plus the
        // lookup of its event's cursor.
        let (g, parents4, meta4, p4) =
            (groups.clone(), parents.clone(), meta.clone(), pool.clone());
        let with_cursor = throughput(concurrency, seconds, move |worker, i| {
            let (g, id, meta, p) = (g.clone(), parents4[worker], meta4.clone(), p4.clone());
            async move {
                let cmd = GroupCommand::Update {
                    id,
                    description: Some(format!("again {i}")),
                    metadata: None,
                };
                let committed = command(&g, cmd, &meta).await?;
                if let Some(token) = committed.token {
                    token.cursor(&p).await?;
                }
                Ok(())
            }
        })
        .await?;
        rows.push(command_row("updateGroup", concurrency, updates, raw));
        rows.push(command_row(
            "updateGroup + cursor lookup",
            concurrency,
            with_cursor,
            raw,
        ));
        rows.push(command_row("createGroup", concurrency, corral, raw));
        eprintln!("bench: commands at concurrency {concurrency}: {corral:.0}/s vs raw {raw:.0}/s");
    }
    pool.close().await;
    Ok(())
}

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
             SELECT 'Group', id, seq, et, '1', p, $5 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::jsonb[]) AS u(id, seq, et, p)",
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

async fn catch_up(pool: &PgPool, projection: &dyn Projection) -> Result<(usize, f64), BoxError> {
    ensure_schema(pool, projection).await?;
    let reader = CatchUpReader::for_projection(projection, corral_projections::runner::BATCH_SIZE);
    let schema = projection.live_schema().unwrap_or("public");
    let started = Instant::now();
    let mut total = 0;
    loop {
        match step(pool, projection, &reader, projection.name(), schema).await? {
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn bench_log(url: &str, args: &BenchArgs, rows: &mut Vec<Row>) -> Result<(), BoxError> {
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
        let (n, secs) = catch_up(&pool, projection).await?;
        let rate = n as f64 / secs;
        eprintln!(
            "bench: {} caught up {n} events in {secs:.2}s",
            projection.name()
        );
        rows.push(Row {
            name: format!("{} catch-up over {n} events (events/s)", projection.name()),
            corral: format!("{rate:.0}"),
            baseline_name: "raw SELECT scan of the same rows (rows/s)".into(),
            baseline: format!("{scan_rate:.0}"),
            ratio: rate / scan_rate,
            target: ">= 50000 events/s".into(),
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
        corral_api::policy::enforcer().await?,
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

/// Runs every benchmark and prints the table.
pub async fn run(args: BenchArgs) -> Result<(), BoxError> {
    let server = server().await?;
    let mut rows = Vec::new();
    let (cmd_db, cmd_url) = fresh_db(&server, "cmd").await?;
    let result = bench_commands(&cmd_url, args.seconds, &mut rows).await;
    drop_db(&server, &cmd_db).await;
    result?;
    let (log_db, log_url) = fresh_db(&server, "log").await?;
    let result = bench_log(&log_url, &args, &mut rows).await;
    drop_db(&server, &log_db).await;
    result?;
    if let Some((pg, dir)) = server.embedded {
        pg.stop().await?;
        let _ = std::fs::remove_dir_all(dir);
    }
    println!("| benchmark | corral | baseline | baseline value | ratio | target |");
    println!("|---|---:|---|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.2} | {} |",
            r.name, r.corral, r.baseline_name, r.baseline, r.ratio, r.target
        );
    }
    Ok(())
}
