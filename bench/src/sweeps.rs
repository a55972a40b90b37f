//! Issue 6, section 5: sweeps beside same-run baselines.
//!
//! (a) Hosts per second swept on loopback, end to end: a run scheduled through the
//! `SweepRun` commands, dispatched by the dispatcher through the NATS KV bucket, swept by the
//! reference poller (TCP connects), reported over JetStream and stored, from the schedule's
//! commit to `COMPLETED`; beside a plain tokio loop connecting to the same hosts and ports
//! with the same concurrency and timeout. (b) Result ingestion: `results::record` in the
//! poller's batches of 256 hosts, beside a raw multi-row `INSERT` of the same rows into a
//! plain table with the same columns. Needs `NATS_URL` for (a).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use clap::Args;
use corral_api::runtime::{self, BoxError};
use corral_domain::metadata::{EventMetadata, Source};
use corral_domain::sweep::{plan, SweepCommand, SweepRequest};
use corral_projections::sweeps::results::{record, NewResult};
use corral_projections::sweeps::{SweepCommands, SweepConfig};
use corral_workers::sweep_control::{self, SweepWorkerConfig};
use corral_workers::sweeps::{PollerConfig, SweepNames};
use sqlx::PgPool;
use uuid::Uuid;

use super::Row;

/// Options of the sweeps suite.
#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// Loopback addresses each sweep figure covers (from 127.0.0.0; at most 65,536).
    #[arg(long, default_value_t = 4096)]
    pub sweep_hosts: u32,
    /// Closed TCP ports tried on every host.
    #[arg(long, default_value_t = 4)]
    pub sweep_ports: usize,
    /// Probes in flight.
    #[arg(long, default_value_t = 64)]
    pub sweep_concurrency: u32,
    /// Results each ingestion figure writes.
    #[arg(long, default_value_t = 65_536)]
    pub sweep_results: u32,
}

fn meta() -> EventMetadata {
    EventMetadata::system(Source::Cli, "bench-sweeps")
}

fn closed_ports(n: usize) -> Result<Vec<u16>, BoxError> {
    (0..n)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            Ok(l.local_addr()?.port())
        })
        .collect()
}

fn host(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + i))
}

/// The baseline: connect to every (host, port) with `concurrency` in flight.
async fn plain_loop(hosts: u32, ports: &[u16], concurrency: u32, timeout: Duration) -> f64 {
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..hosts {
        for &port in ports {
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break;
            };
            tasks.spawn(async move {
                let _ = tokio::time::timeout(
                    timeout,
                    tokio::net::TcpStream::connect(SocketAddr::new(host(i), port)),
                )
                .await;
                drop(permit);
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    f64::from(hosts) / started.elapsed().as_secs_f64()
}

pub(super) async fn bench_sweeps(
    url: &str,
    args: &SweepArgs,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let (pool, _lock_pool) = runtime::pools(url, 8).await?;
    corral_migrations::migrate(&pool).await?;
    bench_ingest(&pool, args.sweep_results, rows).await?;
    match std::env::var("NATS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        Some(nats) => bench_sweep(&pool, &nats, args, rows).await?,
        None => eprintln!("bench: NATS_URL is not set; skipping the end-to-end sweep figure"),
    }
    pool.close().await;
    Ok(())
}

async fn bench_sweep(
    pool: &PgPool,
    nats: &str,
    args: &SweepArgs,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let hosts = args.sweep_hosts.clamp(1, 65_536);
    let ports = closed_ports(args.sweep_ports.max(1))?;
    let timeout = Duration::from_millis(1000);
    let background =
        corral_workers::start_with(pool.clone(), true, Duration::from_secs(1), None).await?;
    let commands = Arc::new(corral_projections::sweeps::sweep_commands(
        pool.clone(),
        background.commit_signal(),
    ));
    let tag = format!("bench{}", Uuid::new_v4().simple());
    let names = SweepNames::tagged(&tag);
    let config = SweepConfig {
        allow: vec!["127.0.0.0/8".parse()?],
        enabled: true,
        poll: Duration::from_millis(50),
        ..SweepConfig::default()
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(sweep_control::run(
        pool.clone(),
        commands.clone(),
        SweepWorkerConfig {
            names: names.clone(),
            consumer: format!("reports-{tag}"),
            ..SweepWorkerConfig::new(Some(nats.to_string()), config.clone())
        },
        stop_rx.clone(),
    ));
    let state_dir = std::env::temp_dir().join(format!("corral-bench-poller-{tag}"));
    let poller_id = format!("bench-{}", &tag[5..13]);
    let poller = tokio::spawn(corral_workers::sweeps::run(
        PollerConfig {
            names: names.clone(),
            heartbeat_interval: Duration::from_millis(200),
            ..PollerConfig::new(poller_id.clone(), nats, state_dir.clone())
        },
        stop_rx,
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;

    // A one-host warm-up run first: the projectors, consumer and poller are all going when
    // the measured run is scheduled.
    let (_, _, warm) = timed_run(
        pool,
        &commands,
        &config,
        &poller_id,
        1,
        &ports,
        timeout,
        1,
        &format!("warm-{tag}"),
    )
    .await?;
    warm.map_err(|e| format!("sweeps: the warm-up run failed: {e}"))?;
    let (id, elapsed, outcome) = timed_run(
        pool,
        &commands,
        &config,
        &poller_id,
        hosts,
        &ports,
        timeout,
        args.sweep_concurrency,
        &format!("bench-{tag}"),
    )
    .await?;
    let timeline: Vec<(String, f64)> = sqlx::query_as(
        "SELECT event_type, extract(epoch FROM recorded_at - min(recorded_at) OVER ())::float8
           FROM events WHERE aggregate_type = 'SweepRun' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await?;
    let timeline: Vec<String> = timeline
        .iter()
        .map(|(t, s)| format!("{t} +{:.0} ms", s * 1000.0))
        .collect();
    eprintln!("bench: sweeps: run events: {}", timeline.join(", "));
    let _ = stop.send(true);
    let _ = workers.await;
    let _ = poller.await;
    background.shutdown().await;
    if let Ok(client) = async_nats::connect(nats).await {
        let js = async_nats::jetstream::new(client);
        for stream in [
            names.reports_stream.clone(),
            format!("KV_{}", names.jobs_bucket),
            format!("KV_{}", names.pollers_bucket),
        ] {
            let _ = js.delete_stream(&stream).await;
        }
    }
    let _ = std::fs::remove_dir_all(&state_dir);
    let done = outcome?;
    if done != i64::from(hosts) {
        return Err(format!("sweeps: {done} of {hosts} hosts have results").into());
    }
    let corral = f64::from(hosts) / elapsed;
    let baseline = plain_loop(hosts, &ports, args.sweep_concurrency, timeout).await;
    eprintln!(
        "bench: sweeps: {hosts} hosts x {} ports in {elapsed:.2} s end to end ({corral:.0} hosts/s); plain loop {baseline:.0} hosts/s",
        ports.len()
    );
    rows.push(Row {
        name: format!(
            "sweep of {hosts} loopback hosts x {} closed ports, concurrency {}, schedule to COMPLETED (dispatch, reference poller, reports, storage) (hosts/s)",
            ports.len(),
            args.sweep_concurrency
        ),
        corral: format!("{corral:.0}"),
        baseline_name: "plain tokio connect loop over the same hosts and ports, same concurrency and timeout (hosts/s)".into(),
        baseline: format!("{baseline:.0}"),
        ratio: corral / baseline,
        target: "-".into(),
    });
    Ok(())
}

/// Schedules a run of `hosts` loopback hosts and waits for it to end: its id, the seconds from
/// the schedule to `COMPLETED`, and the hosts done (or why it did not complete).
#[allow(clippy::too_many_arguments)]
async fn timed_run(
    pool: &PgPool,
    commands: &SweepCommands,
    config: &SweepConfig,
    poller_id: &str,
    hosts: u32,
    ports: &[u16],
    timeout: Duration,
    concurrency: u32,
    key: &str,
) -> Result<(Uuid, f64, Result<i64, String>), BoxError> {
    let last = host(hosts - 1);
    let target = if hosts == 1 {
        "127.0.0.0".to_string()
    } else {
        format!("127.0.0.0-{last}")
    };
    let planned = plan(
        &SweepRequest {
            poller_id: poller_id.to_string(),
            targets: vec![target],
            ports: ports.iter().map(|p| i64::from(*p)).collect(),
            timeout_ms: Some(timeout.as_millis() as i64),
            concurrency: Some(i64::from(concurrency)),
            idempotency_key: key.to_string(),
            ..Default::default()
        },
        &config.limits,
        &config.allow,
    )
    .map_err(|e| e.to_string())?;
    // Scheduled directly, without the API: no key to reserve, a run id of its own.
    let id = Uuid::new_v4();
    let started = Instant::now();
    commands
        .execute(
            id,
            SweepCommand::Schedule {
                plan: planned,
                requested_by: "bench".into(),
                deadline: Utc::now() + TimeDelta::minutes(30),
            },
            &meta(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let outcome = loop {
        let status: Option<(String, i64)> =
            sqlx::query_as("SELECT status, hosts_done FROM sweep_runs WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
        match status {
            Some((s, done)) if s == "COMPLETED" => break Ok(done),
            Some((s, _))
                if !matches!(
                    s.as_str(),
                    "QUEUED" | "DISPATCHED" | "ACKNOWLEDGED" | "RUNNING"
                ) =>
            {
                break Err(format!("sweeps: the bench run ended {s}"))
            }
            _ => {}
        }
        if started.elapsed() > Duration::from_secs(600) {
            break Err("sweeps: the bench run took over 10 minutes".to_string());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Ok((id, started.elapsed().as_secs_f64(), outcome))
}

async fn bench_ingest(pool: &PgPool, total: u32, rows: &mut Vec<Row>) -> Result<(), BoxError> {
    const BATCH: u32 = 256;
    let total = total.clamp(BATCH, 1 << 20);
    let now = Utc::now();
    let mk = |i: u32| NewResult {
        host_ip: IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i)),
        network_cidr: "10.0.0.0/12".into(),
        icmp_available: Some(i.is_multiple_of(3)),
        open_ports: if i.is_multiple_of(5) {
            vec![22, 443]
        } else {
            vec![]
        },
        latency_ms: Some(0.25),
        metadata: serde_json::json!({"closed_ports": 2, "timed_out_ports": 0}),
        observed_at: now,
    };
    // A run to hold the results (scheduled straight into the table: no projector here).
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO sweep_runs (id, status, poller_id, targets, hosts, hosts_total, ports, icmp,
                timeout_ms, concurrency, retention_days, idempotency_key, requested_by,
                scheduled_at, deadline, version, updated_at)
         VALUES ($1, 'RUNNING', 'bench', '{10.0.0.0/12}', '{10.0.0.0-10.15.255.255}', $2,
                 '{22,443}', true, 1000, 64, 30,
                 $1::text, 'bench', now(), now() + interval '1 hour', 1, now())",
    )
    .bind(id)
    .bind(i64::from(total))
    .execute(pool)
    .await?;
    let started = Instant::now();
    let mut stored = 0;
    for b in 0..total / BATCH {
        let batch: Vec<NewResult> = (b * BATCH..(b + 1) * BATCH).map(mk).collect();
        stored += record(pool, id, &batch, now).await?.stored;
    }
    let corral = f64::from(total / BATCH * BATCH) / started.elapsed().as_secs_f64();
    if stored != u64::from(total / BATCH * BATCH) {
        return Err(format!("sweeps: {stored} of {total} results were stored").into());
    }

    sqlx::query(
        "CREATE TABLE bench_sweep_results (run_id uuid NOT NULL, host_ip inet NOT NULL,
            network_cidr cidr NOT NULL, icmp_available boolean, open_ports integer[] NOT NULL,
            latency_ms real, metadata jsonb NOT NULL, observed_at timestamptz NOT NULL)",
    )
    .execute(pool)
    .await?;
    sqlx::query("CREATE INDEX ON bench_sweep_results (run_id, host_ip)")
        .execute(pool)
        .await?;
    let started = Instant::now();
    for b in 0..total / BATCH {
        let batch: Vec<NewResult> = (b * BATCH..(b + 1) * BATCH).map(mk).collect();
        sqlx::query(
            "INSERT INTO bench_sweep_results
             SELECT $1, u.ip::inet, u.net::cidr, u.icmp, u.ports::integer[], u.latency, u.meta, $8
               FROM unnest($2::text[], $3::text[], $4::bool[], $5::text[], $6::real[],
                           $7::jsonb[]) AS u(ip, net, icmp, ports, latency, meta)",
        )
        .bind(id)
        .bind(
            batch
                .iter()
                .map(|r| r.host_ip.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|r| r.network_cidr.clone())
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|r| r.icmp_available).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|r| {
                    let p: Vec<String> = r.open_ports.iter().map(u16::to_string).collect();
                    format!("{{{}}}", p.join(","))
                })
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|r| r.latency_ms).collect::<Vec<_>>())
        .bind(batch.iter().map(|r| r.metadata.clone()).collect::<Vec<_>>())
        .bind(now)
        .execute(pool)
        .await?;
    }
    let baseline = f64::from(total / BATCH * BATCH) / started.elapsed().as_secs_f64();
    eprintln!("bench: sweeps: results ingest {corral:.0} hosts/s; raw INSERT {baseline:.0} rows/s");
    rows.push(Row {
        name: format!(
            "sweep results ingest (results::record: per-host dedup, partitioned insert, progress), batches of {BATCH}, {total} hosts (hosts/s)"
        ),
        corral: format!("{corral:.0}"),
        baseline_name: format!("raw INSERT ... SELECT FROM unnest of the same rows into a plain table with the same columns and index, {BATCH} per statement (rows/s)"),
        baseline: format!("{baseline:.0}"),
        ratio: corral / baseline,
        target: "-".into(),
    });
    Ok(())
}
