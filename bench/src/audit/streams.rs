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
use sqlx::PgPool;
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

    // Baseline: INSERT + NOTIFY in one transaction, received by a LISTEN connection.
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
    listener.listen("bench_latency").await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_notify (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        .execute(&pool)
        .await?;

    let mut sent = 0usize;
    for loaded in [false, true] {
        let load = if loaded {
            Some(Load::start(&pool).await?)
        } else {
            None
        };
        for &rate in &args.command_rates {
            let rate = rate.max(1);
            let commands = Commands {
                state: &state,
                groups: &groups,
                devices: &devices,
            };
            let (achieved, latencies) = commands
                .at(rate, args.latency_seconds, &mut sent, &mut lat_rx)
                .await?;
            let raw =
                insert_notify_at(&pool, &mut listener, rate, args.latency_seconds.min(5)).await?;
            let load_name = if loaded {
                ", loaded (transactions holding an id 200 ms at a time, back to back)"
            } else {
                ""
            };
            eprintln!(
                "bench: streams: {rate}/s{load_name}: p50 {:.1} / p99 {:.1} ms (baseline {:.1} / {:.1} ms)",
                crate::membership::percentile(&latencies, 0.5),
                crate::membership::percentile(&latencies, 0.99),
                crate::membership::percentile(&raw, 0.5),
                crate::membership::percentile(&raw, 0.99),
            );
            latency_rows(
                rows,
                &format!(
                    "commit-to-subscriber (events subscription), {rate} commands/s (achieved {achieved:.0}){load_name}"
                ),
                &latencies,
                &format!("INSERT + NOTIFY to a LISTEN connection at {rate}/s{load_name}"),
                &raw,
                (rate == 500).then_some("< 100 ms"),
            );
        }
        if let Some(load) = load {
            let held = load.stop().await?;
            eprintln!("bench: streams: the load held {held} transactions open for 200 ms each");
        }
    }
    subscriber.abort();

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

/// Commands in flight at most (the pool has 16 connections).
const MAX_IN_FLIGHT: usize = 64;

/// The Membership commands the latency is measured on.
struct Commands<'a> {
    state: &'a AppState,
    groups: &'a [Uuid],
    devices: &'a [String],
}

impl Commands<'_> {
    /// Runs `rate` commands a second for `seconds`, each adding (or, after every pair was
    /// added, removing) a member, continuing from command `sent`; returns the achieved rate
    /// and the commit-to-subscriber latencies of their events.
    async fn at(
        &self,
        rate: u64,
        seconds: u64,
        sent: &mut usize,
        latencies_rx: &mut tokio::sync::mpsc::UnboundedReceiver<f64>,
    ) -> Result<(f64, Vec<f64>), BoxError> {
        // Anything left from an earlier measurement.
        while latencies_rx.try_recv().is_ok() {}
        let total = (rate * seconds) as usize;
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let (groups, devices) = (self.groups.len(), self.devices.len());
        for _ in 0..total {
            ticker.tick().await;
            let i = *sent;
            *sent += 1;
            let memberships = self.state.memberships.clone();
            let group = self.groups[i % groups];
            let member = self.devices[(i / groups) % devices].clone();
            let adding = (i / (groups * devices)).is_multiple_of(2);
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
            // A machine that cannot keep up runs fewer commands (the achieved rate says so)
            // rather than queueing them for connections until the pool times out.
            while tasks.len() >= MAX_IN_FLIGHT {
                if let Some(done) = tasks.join_next().await {
                    done??;
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let achieved = total as f64 / started.elapsed().as_secs_f64();
        let mut latencies = Vec::with_capacity(total);
        let deadline = Instant::now() + Duration::from_secs(30);
        while latencies.len() < total && Instant::now() < deadline {
            if let Ok(Some(ms)) =
                tokio::time::timeout(Duration::from_secs(1), latencies_rx.recv()).await
            {
                latencies.push(ms);
            }
        }
        if latencies.len() < total {
            return Err(format!(
                "the subscriber received {} of {total} events",
                latencies.len()
            )
            .into());
        }
        latencies.sort_by(f64::total_cmp);
        Ok((achieved, latencies))
    }
}

/// INSERT + NOTIFY in one transaction at `rate` for `seconds`, received on `listener`: the
/// latencies, sorted.
async fn insert_notify_at(
    pool: &PgPool,
    listener: &mut sqlx::postgres::PgListener,
    rate: u64,
    seconds: u64,
) -> Result<Vec<f64>, BoxError> {
    let n = (rate * seconds.max(1)) as usize;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
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
    Ok(raw)
}

/// What used to hold the log's horizon back: transactions that hold a transaction id (a
/// write to a scratch table) for 200 ms, two loops offset by 100 ms, so one is always open.
struct Load {
    stop: tokio::sync::watch::Sender<bool>,
    loops: Vec<tokio::task::JoinHandle<Result<usize, sqlx::Error>>>,
}

impl Load {
    async fn start(pool: &PgPool) -> Result<Load, BoxError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS bench_load (id bigserial PRIMARY KEY)")
            .execute(pool)
            .await?;
        let (stop, rx) = tokio::sync::watch::channel(false);
        let mut loops = Vec::new();
        for offset in [0u64, 100] {
            let (pool, rx) = (pool.clone(), rx.clone());
            loops.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(offset)).await;
                let mut held = 0usize;
                while !*rx.borrow() {
                    let mut tx = pool.begin().await?;
                    sqlx::query("INSERT INTO bench_load DEFAULT VALUES")
                        .execute(&mut *tx)
                        .await?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    tx.commit().await?;
                    held += 1;
                }
                Ok(held)
            }));
        }
        // Let both loops get going.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Load { stop, loops })
    }

    /// Stops the loops; returns how many transactions they held.
    async fn stop(self) -> Result<usize, BoxError> {
        let _ = self.stop.send(true);
        let mut held = 0;
        for l in self.loops {
            held += l.await??;
        }
        Ok(held)
    }
}
