//! Network sweeps, server side: hands queued runs to their pollers, applies what pollers
//! report, and ends runs whose deadline or claim time passed.
//!
//! - The **dispatcher** (one per cluster, under an advisory lock) writes a `QUEUED` run's job
//!   to `jobs.sweeps.<poller_id>.<run_id>` in the jobs bucket, or fails the run at once with
//!   `POLLER_OFFLINE` when the poller's heartbeat is missing or stale. It also deletes the job
//!   key of every run that ended (a poller watching it stops), and is the **monitor**: runs
//!   past their deadline become `TIMED_OUT` (results so far are kept), dispatched jobs nobody
//!   claimed in time `EXPIRED`.
//! - The **reports consumer** (a durable JetStream consumer; any number of processes may run
//!   it) applies each report: acknowledgements and starts as commands, results through the
//!   results store (each host of a run stored once, whatever is redelivered), done and fail as
//!   commands. A message is acked only after it was applied.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, kv, AckKind, Message};
use chrono::{DateTime, Utc};
use corral_domain::metadata::{EventMetadata, Source};
use corral_domain::sweep::{SweepCommand, SweepStatus};
use corral_projections::executor::ExecError;
use corral_projections::sweeps::read::{self, SweepRunView};
use corral_projections::sweeps::results::{self, NewResult};
use corral_projections::sweeps::retention;
use corral_projections::sweeps::{SweepCommands, SweepConfig};
use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use crate::sweeps::protocol::{
    ensure_buckets, job_key, PollerHeartbeat, ReportKind, SweepJob, SweepNames, SweepReport,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Advisory lock key held by the one dispatcher of a cluster.
pub const DISPATCH_LOCK: i64 = 0x636f_7272_616c_0006;

/// How the sweep workers run.
#[derive(Debug, Clone)]
pub struct SweepWorkerConfig {
    /// NATS server.
    pub nats_url: String,
    /// Buckets and stream names.
    pub names: SweepNames,
    /// The durable consumer of reports.
    pub consumer: String,
    /// Limits and timings.
    pub sweep: SweepConfig,
    /// How often results retention runs.
    pub cleanup_every: Duration,
}

impl SweepWorkerConfig {
    /// The production names, with `nats_url`.
    pub fn new(nats_url: String, sweep: SweepConfig) -> Self {
        Self {
            nats_url,
            names: SweepNames::default(),
            consumer: "corral-sweep-reports".into(),
            sweep,
            cleanup_every: Duration::from_secs(3600),
        }
    }
}

fn metadata(what: &str) -> EventMetadata {
    let correlation_id = format!("sweeps-{}", Uuid::new_v4());
    EventMetadata {
        actor_subject: "corral-sweeps".into(),
        actor_role: "system".into(),
        source: Source::Worker,
        causation_id: correlation_id.clone(),
        correlation_id,
        reason: Some(what.to_string()),
        client_addr: None,
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs a command, treating "nothing to do" and lost races as done (they are decided again
/// on the winner's state, where they are no-ops).
async fn command(
    commands: &SweepCommands,
    id: Uuid,
    cmd: SweepCommand,
    what: &str,
) -> Result<(), BoxError> {
    match commands.execute(id, cmd, &metadata(what)).await {
        Ok(_) => Ok(()),
        Err(ExecError::Domain(e)) => {
            tracing::debug!(sweep.run_id = %id, error = %e, "sweep command refused");
            Ok(())
        }
        Err(ExecError::VersionConflict { .. }) => Err("version conflict; will retry".into()),
        Err(ExecError::Store(e)) => Err(e.into()),
    }
}

/// Runs the dispatcher/monitor, the reports consumer and the results cleanup until `stop`.
pub async fn run(
    pool: PgPool,
    commands: Arc<SweepCommands>,
    config: SweepWorkerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let client = loop {
        let connecting = async_nats::ConnectOptions::new()
            .name("corral-sweeps")
            .retry_on_initial_connect()
            .connect(config.nats_url.as_str());
        match connecting.await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(error = %e, nats.url = %config.nats_url, "sweeps: cannot use NATS_URL; trying again in 30 s");
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        }
    };
    let js = jetstream::new(client);
    let (jobs, pollers) = loop {
        match ensure_buckets(&js, &config.names).await {
            Ok((jobs, pollers, ())) => break (jobs, pollers),
            Err(e) => {
                tracing::error!(error = %e, "sweeps: cannot set up the NATS buckets; trying again in 5 s");
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    tokio::join!(
        dispatch_loop(
            pool.clone(),
            commands.clone(),
            jobs,
            pollers,
            config.clone(),
            stop.clone()
        ),
        reports_loop(pool.clone(), commands, js, config.clone(), stop.clone()),
        cleanup_loop(pool, config, stop),
    );
}

async fn cleanup_loop(pool: PgPool, config: SweepWorkerConfig, mut stop: watch::Receiver<bool>) {
    loop {
        match retention::cleanup(&pool, Utc::now(), config.sweep.limits.max_retention_days).await {
            Ok(r) if r.runs_purged > 0 || r.partitions_dropped > 0 => tracing::info!(
                sweep.runs_purged = r.runs_purged,
                sweep.results_deleted = r.results_deleted,
                sweep.partitions_dropped = r.partitions_dropped,
                "sweep results retention ran"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "sweep results retention failed; trying again later")
            }
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(config.cleanup_every) => {}
        }
    }
}

/// Holds the dispatch lock on a connection of its own, then dispatches and monitors.
async fn dispatch_loop(
    pool: PgPool,
    commands: Arc<SweepCommands>,
    jobs: kv::Store,
    pollers: kv::Store,
    config: SweepWorkerConfig,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let held = async {
            let mut conn = pool.acquire().await?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(DISPATCH_LOCK)
                .fetch_one(&mut *conn)
                .await?;
            Ok::<_, sqlx::Error>(got.then_some(conn))
        }
        .await;
        match held {
            Ok(Some(conn)) => {
                tracing::info!("sweeps: this process dispatches sweep runs");
                loop {
                    if let Err(e) =
                        dispatch_once(&pool, &commands, &jobs, &pollers, &config.sweep).await
                    {
                        tracing::warn!(error = %e, "sweeps: dispatch pass failed; trying again");
                    }
                    tokio::select! {
                        _ = stopped(&mut stop) => {
                            drop(conn);
                            return;
                        }
                        _ = tokio::time::sleep(config.sweep.poll) => {}
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "sweeps: cannot take the dispatch lock"),
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// The heartbeat of `poller`, if it is fresh.
async fn heartbeat(
    pollers: &kv::Store,
    poller: &str,
    now: DateTime<Utc>,
    offline_after: Duration,
) -> Option<PollerHeartbeat> {
    let bytes = pollers.get(poller).await.ok().flatten()?;
    let beat: PollerHeartbeat = serde_json::from_slice(&bytes).ok()?;
    let age = now
        .signed_duration_since(beat.at)
        .to_std()
        .unwrap_or_default();
    (age <= offline_after).then_some(beat)
}

fn job_of(run: &SweepRunView) -> SweepJob {
    SweepJob {
        run_id: run.id,
        poller_id: run.poller_id.clone(),
        agent_id: run.agent_id.clone(),
        hosts: run.hosts.clone(),
        networks: run
            .targets
            .iter()
            .filter(|t| t.contains('/'))
            .cloned()
            .collect(),
        ports: run
            .ports
            .iter()
            .filter_map(|p| u16::try_from(*p).ok())
            .collect(),
        icmp: run.icmp,
        timeout_ms: run.timeout_ms.max(1) as u32,
        concurrency: run.concurrency.max(1) as u32,
        idempotency_key: run.idempotency_key.clone(),
        deadline: run.deadline,
    }
}

/// One pass: dispatch queued runs, end overdue ones, delete the job keys of ended runs.
pub async fn dispatch_once(
    pool: &PgPool,
    commands: &SweepCommands,
    jobs: &kv::Store,
    pollers: &kv::Store,
    config: &SweepConfig,
) -> Result<(), BoxError> {
    let now = Utc::now();
    for run in read::open_runs(pool, 500).await? {
        let span = tracing::info_span!("sweep.dispatch", sweep.run_id = %run.id, sweep.poller_id = %run.poller_id);
        async {
            let done = run.hosts_done.max(0) as u64;
            if run.deadline <= now {
                return command(
                    commands,
                    run.id,
                    SweepCommand::TimeOut {
                        now,
                        hosts_done: done,
                    },
                    "deadline passed",
                )
                .await;
            }
            match run.status {
                SweepStatus::Queued => {
                    if heartbeat(pollers, &run.poller_id, now, config.offline_after)
                        .await
                        .is_none()
                    {
                        return command(
                            commands,
                            run.id,
                            SweepCommand::Fail {
                                code: "POLLER_OFFLINE".into(),
                                message: format!(
                                    "poller {} has sent no heartbeat in the last {} s",
                                    run.poller_id,
                                    config.offline_after.as_secs()
                                ),
                                hosts_done: 0,
                            },
                            "poller offline",
                        )
                        .await;
                    }
                    let key = job_key(&run.poller_id, run.id);
                    let body = serde_json::to_vec(&job_of(&run))?;
                    jobs.put(&key, body.into()).await?;
                    let claim_by =
                        now + chrono::TimeDelta::from_std(config.claim_ttl).unwrap_or_default();
                    command(
                        commands,
                        run.id,
                        SweepCommand::Dispatch {
                            job_key: key.clone(),
                            claim_by,
                        },
                        "dispatched",
                    )
                    .await?;
                    // Cancelled (or timed out) between the read and the dispatch: the job
                    // written for it must not stay for a poller to find.
                    if commands
                        .load(run.id)
                        .await?
                        .status()
                        .is_some_and(SweepStatus::is_terminal)
                    {
                        jobs.purge(&key).await?;
                    }
                    Ok(())
                }
                SweepStatus::Dispatched if run.claim_by.is_some_and(|c| c <= now) => {
                    command(commands, run.id, SweepCommand::Expire { now }, "unclaimed").await
                }
                _ => Ok(()),
            }
        }
        .instrument(span)
        .await?;
    }
    // Ended runs: their job keys go, so that the poller stops (cancel, time-out) and no
    // poller that starts later finds them.
    let ended: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, job_key FROM sweep_runs
          WHERE job_key IS NOT NULL AND job_removed_at IS NULL
            AND status NOT IN ('QUEUED', 'DISPATCHED', 'ACKNOWLEDGED', 'RUNNING')
          LIMIT 500",
    )
    .fetch_all(pool)
    .await?;
    for (id, key) in ended {
        jobs.purge(&key).await?;
        sqlx::query("UPDATE sweep_runs SET job_removed_at = now() WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await?;
        tracing::debug!(sweep.run_id = %id, nats.key = %key, "sweep job key deleted");
    }
    Ok(())
}

async fn reports_loop(
    pool: PgPool,
    commands: Arc<SweepCommands>,
    js: jetstream::Context,
    config: SweepWorkerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match consume(&pool, &commands, &js, &config, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "sweep reports consumer interrupted; starting again")
            }
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn consume(
    pool: &PgPool,
    commands: &SweepCommands,
    js: &jetstream::Context,
    config: &SweepWorkerConfig,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), BoxError> {
    let stream = js.get_stream(&config.names.reports_stream).await?;
    let consumer: pull::Stream = stream
        .get_or_create_consumer(
            &config.consumer,
            pull::Config {
                durable_name: Some(config.consumer.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                ..Default::default()
            },
        )
        .await?
        .messages()
        .await?;
    let mut messages = consumer;
    tracing::info!(nats.stream = %config.names.reports_stream, nats.consumer = %config.consumer, "sweep reports consumer running");
    loop {
        tokio::select! {
            _ = stopped(stop) => return Ok(()),
            next = messages.next() => match next {
                None => return Err("the report stream ended".into()),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(msg)) => {
                    let span = tracing::info_span!("sweep.report", nats.subject = %msg.subject);
                    let settle = apply(pool, commands, &msg).instrument(span).await;
                    let acked = match settle {
                        AckKind::Ack => msg.double_ack().await,
                        other => msg.ack_with(other).await,
                    };
                    if let Err(e) = acked {
                        tracing::warn!(error = %e, "could not settle a sweep report; it may be redelivered");
                    }
                }
            }
        }
    }
}

/// Applies one report; its settlement.
async fn apply(pool: &PgPool, commands: &SweepCommands, msg: &Message) -> AckKind {
    let report: SweepReport = match serde_json::from_slice(&msg.payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "malformed sweep report; dropped");
            return AckKind::Term;
        }
    };
    match apply_report(pool, commands, report).await {
        Ok(()) => AckKind::Ack,
        Err(e) => {
            tracing::warn!(error = %e, "sweep report not applied; it will be redelivered");
            AckKind::Nak(Some(Duration::from_secs(1)))
        }
    }
}

async fn apply_report(
    pool: &PgPool,
    commands: &SweepCommands,
    report: SweepReport,
) -> Result<(), BoxError> {
    let Some(run) = read::by_id(pool, report.run_id).await? else {
        tracing::warn!(sweep.run_id = %report.run_id, "report for an unknown sweep run; dropped");
        return Ok(());
    };
    if run.poller_id != report.poller_id {
        tracing::warn!(sweep.run_id = %run.id, sweep.poller_id = %report.poller_id, "report from a poller the run is not for; dropped");
        return Ok(());
    }
    let id = run.id;
    match report.kind {
        ReportKind::Ack => {
            command(
                commands,
                id,
                SweepCommand::Acknowledge {
                    poller_id: report.poller_id,
                },
                "poller acknowledged",
            )
            .await
        }
        ReportKind::Start => command(commands, id, SweepCommand::Start, "poller started").await,
        ReportKind::Results => {
            let mut batch = Vec::with_capacity(report.results.len());
            for r in report.results {
                let Ok(ip) = r.host_ip.parse() else {
                    tracing::warn!(sweep.run_id = %id, host = %r.host_ip, "result with a malformed address; skipped");
                    continue;
                };
                batch.push(NewResult {
                    host_ip: ip,
                    network_cidr: r.network_cidr,
                    icmp_available: r.icmp_available,
                    open_ports: r.open_ports,
                    latency_ms: r.latency_ms,
                    metadata: r.metadata,
                    observed_at: r.observed_at,
                });
            }
            // Results can arrive before the start was applied (another consumer instance):
            // a run that gets results is running.
            if matches!(
                run.status,
                SweepStatus::Dispatched | SweepStatus::Acknowledged
            ) {
                command(commands, id, SweepCommand::Start, "results arrived").await?;
            }
            let recorded = results::record(pool, id, &batch, Utc::now()).await?;
            tracing::debug!(sweep.run_id = %id, sweep.stored = recorded.stored, sweep.duplicates = recorded.duplicates, sweep.dropped = recorded.dropped, "sweep results applied");
            Ok(())
        }
        ReportKind::Done => {
            let done = read::by_id(pool, id)
                .await?
                .map_or(0, |r| r.hosts_done.max(0) as u64);
            command(
                commands,
                id,
                SweepCommand::Complete { hosts_done: done },
                "poller finished",
            )
            .await
        }
        ReportKind::Fail => {
            let done = read::by_id(pool, id)
                .await?
                .map_or(0, |r| r.hosts_done.max(0) as u64);
            command(
                commands,
                id,
                SweepCommand::Fail {
                    code: "POLLER_ERROR".into(),
                    message: report
                        .error
                        .unwrap_or_else(|| "the poller reported a failure".into()),
                    hosts_done: done,
                },
                "poller failed",
            )
            .await
        }
    }
}
