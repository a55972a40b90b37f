//! Commit-to-subscriber latency beside INSERT + NOTIFY to a LISTEN connection, then the
//! NATS figures.

use std::time::{Duration, Instant};

use async_graphql::futures_util::StreamExt;
use corral_api::auth::Actor;
use corral_api::runtime::BoxError;
use corral_api::state::{ApiConfig, AppState};
use corral_domain::membership::{MemberSource, MembershipCommand};
use corral_domain::metadata::{EventMetadata, Source};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use super::nats::nats_rates;
use super::{pool, AuditArgs};
use crate::membership::latency_rows;
use crate::Row;

/// Commit-to-subscriber latency at a steady command rate, and the NATS publisher's rate
/// against a raw publish loop.
pub(crate) async fn bench_streams(
    url: &str,
    args: &AuditArgs,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let pool = pool(url, 16).await?;
    let background =
        corral_workers::start_with(pool.clone(), true, Duration::from_secs(1), None).await?;
    let lock_pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
    let policy = corral_api::policy::Policy::built_in().await?;
    let (_tx, rx) = tokio::sync::watch::channel(Default::default());
    let state = AppState::new(
        pool.clone(),
        lock_pool,
        corral_projections::waiter::ConsistencyWaiter::new(rx),
        background.commit_signal(),
        policy,
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
