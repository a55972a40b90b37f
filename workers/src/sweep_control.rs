//! Network sweeps, server side: hands queued runs to their pollers, applies what pollers
//! report, and ends runs whose deadline or claim time passed.
//!
//! - The **dispatcher** (one per cluster, under an advisory lock) writes a `QUEUED` run's job
//!   to `jobs.sweeps.<poller_id>.<run_id>` in the jobs bucket, or fails the run at once with
//!   `POLLER_OFFLINE` when the poller's heartbeat is missing or stale (`DISPATCH_FAILED` when
//!   the job is too large for the NATS server). It also deletes the job key of every run that
//!   ended (a poller watching it stops).
//! - The **monitor** (one per cluster, under another lock; PostgreSQL only, so it runs without
//!   NATS too): runs past their deadline become `TIMED_OUT` (results so far are kept),
//!   dispatched jobs nobody claimed in time `EXPIRED`.
//! - The **cleanup** deletes results past their run's retention, old partitions, and the
//!   idempotency keys' reservations past their window.
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
use corral_projections::commands::executor::ExecError;
use corral_projections::leader::{Leadership, Leading};
use corral_projections::locks::Lock;
use corral_projections::sweeps::read::{self, SweepRunView};
use corral_projections::sweeps::results::{self, NewResult};
use corral_projections::sweeps::{idempotency, retention};
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

/// How many times (a second apart) a poller's `done` is put back while results batches it
/// counted have not all been stored.
const DONE_WAITS: i64 = 120;

/// How the sweep workers run.
#[derive(Debug, Clone)]
pub struct SweepWorkerConfig {
    /// NATS server; without one only the monitor (deadlines, claims) and the results
    /// retention run.
    pub nats_url: Option<String>,
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
    pub fn new(nats_url: Option<String>, sweep: SweepConfig) -> Self {
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

/// Runs the monitor and the results cleanup, and with NATS the dispatcher and the reports
/// consumer, until `stop`.
pub async fn run(
    pool: PgPool,
    commands: Arc<SweepCommands>,
    config: SweepWorkerConfig,
    stop: watch::Receiver<bool>,
) {
    tokio::join!(
        locked(
            pool.clone(),
            Lock::SweepMonitor,
            "monitors sweep deadlines",
            stop.clone(),
            {
                let (pool, commands) = (pool.clone(), commands.clone());
                move || {
                    let (pool, commands) = (pool.clone(), commands.clone());
                    async move { monitor_once(&pool, &commands, Utc::now()).await }
                }
            },
            config.sweep.poll,
        ),
        cleanup_loop(pool.clone(), config.clone(), stop.clone()),
        nats_side(pool, commands, config, stop),
    );
}

async fn nats_side(
    pool: PgPool,
    commands: Arc<SweepCommands>,
    config: SweepWorkerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let Some(url) = config.nats_url.clone() else {
        return;
    };
    let client = loop {
        let connecting = async_nats::ConnectOptions::new()
            .name("corral-sweeps")
            .retry_on_initial_connect()
            .connect(url.as_str());
        match connecting.await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(error = %e, nats.url = %url, "sweeps: cannot use NATS_URL; trying again in 30 s");
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        }
    };
    let js = jetstream::new(client.clone());
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
    let dispatch = {
        let (pool, commands, sweep) = (pool.clone(), commands.clone(), config.sweep.clone());
        move || {
            let (pool, commands, jobs, pollers, sweep) = (
                pool.clone(),
                commands.clone(),
                jobs.clone(),
                pollers.clone(),
                sweep.clone(),
            );
            // A job larger than the server takes could never be dispatched. (The server's
            // figure is known once connected; 1 MiB is its default.)
            let max_payload = match client.server_info().max_payload {
                0 => 1024 * 1024,
                n => n,
            };
            async move { dispatch_once(&pool, &commands, &jobs, &pollers, &sweep, max_payload).await }
        }
    };
    tokio::join!(
        locked(
            pool.clone(),
            Lock::SweepDispatcher,
            "dispatches sweep runs",
            stop.clone(),
            dispatch,
            config.sweep.poll
        ),
        reports_loop(pool, commands, js, config.clone(), stop),
    );
}

async fn cleanup_loop(pool: PgPool, config: SweepWorkerConfig, mut stop: watch::Receiver<bool>) {
    loop {
        match retention::cleanup(
            &pool,
            Utc::now(),
            config.sweep.limits.max_retention_days,
            config.sweep.max_runtime,
        )
        .await
        {
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
        match idempotency::forget_expired(&pool, config.sweep.idempotency_window).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                sweep.keys_forgotten = n,
                "expired sweep idempotency keys deleted"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not delete expired sweep idempotency keys; trying again later")
            }
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(config.cleanup_every) => {}
        }
    }
}

/// Runs `pass` every `every` while this process leads `lock` (one process of a cluster does
/// the work; the others stand by and take over when it goes).
async fn locked<F, Fut>(
    pool: PgPool,
    lock: Lock,
    what: &'static str,
    mut stop: watch::Receiver<bool>,
    pass: F,
    every: Duration,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>>,
{
    // Leadership ends with the lock's session: `next` checks it before every pass.
    let mut leading = Leading::new(pool, Leadership::Worker(lock), crate::LEADER_RETRY)
        .on_taken(move || tracing::info!("sweeps: this process {what}"))
        .on_lost(move || {
            tracing::warn!("sweeps: lost the lock ({what}); waiting to take it again")
        });
    while leading.next(&mut stop).await.is_some() {
        if let Err(e) = pass().await {
            tracing::warn!(error = %e, "sweeps: a pass failed ({what}); trying again");
        }
        tokio::select! {
            _ = stopped(&mut stop) => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    leading.resign().await;
}

/// The heartbeat of `poller`, if it is fresh.
async fn heartbeat(
    pollers: &kv::Store,
    poller: &str,
    now: DateTime<Utc>,
    offline_after: Duration,
) -> Option<PollerHeartbeat> {
    let entry = pollers.entry(poller).await.ok().flatten()?;
    let beat: PollerHeartbeat = serde_json::from_slice(&entry.value).ok()?;
    // Aged by the NATS server's clock (when it stored the entry), not the poller's.
    let written = DateTime::from_timestamp(entry.created.unix_timestamp(), 0)?;
    let age = now
        .signed_duration_since(written)
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
        scheduled_at: Some(run.scheduled_at),
    }
}

/// One monitor pass at `now`: runs past their deadline are `TIMED_OUT`, dispatched jobs
/// nobody claimed in time `EXPIRED`.
pub async fn monitor_once(
    pool: &PgPool,
    commands: &SweepCommands,
    now: DateTime<Utc>,
) -> Result<(), BoxError> {
    for run in read::overdue_runs(pool, now, 500).await? {
        let done = run.hosts_done.max(0) as u64;
        let cmd = if run.deadline <= now {
            SweepCommand::TimeOut {
                now,
                hosts_done: done,
            }
        } else {
            SweepCommand::Expire { now }
        };
        // One run's trouble must not hold up the others.
        if let Err(e) = command(commands, run.id, cmd, "overdue").await {
            tracing::warn!(sweep.run_id = %run.id, error = %e, "sweeps: could not end an overdue run; trying again");
        }
    }
    Ok(())
}

/// Dispatches one queued run: its job to the poller, or the run failed when it cannot be.
async fn dispatch_run(
    run: &SweepRunView,
    commands: &SweepCommands,
    jobs: &kv::Store,
    pollers: &kv::Store,
    config: &SweepConfig,
    max_payload: usize,
) -> Result<(), BoxError> {
    let now = Utc::now();
    if run.deadline <= now {
        return Ok(()); // the monitor times it out
    }
    let reject = |code: &str, message: String| SweepCommand::Reject {
        code: code.into(),
        message,
    };
    if heartbeat(pollers, &run.poller_id, now, config.offline_after)
        .await
        .is_none()
    {
        let message = format!(
            "poller {} has sent no heartbeat in the last {} s",
            run.poller_id,
            config.offline_after.as_secs()
        );
        return command(
            commands,
            run.id,
            reject("POLLER_OFFLINE", message),
            "poller offline",
        )
        .await;
    }
    let key = job_key(&run.poller_id, run.id);
    let body = serde_json::to_vec(&job_of(run))?;
    if body.len() + key.len() + 512 > max_payload {
        let message = format!(
            "the job is {} bytes; the NATS server takes at most {max_payload}",
            body.len()
        );
        return command(
            commands,
            run.id,
            reject("DISPATCH_FAILED", message),
            "job too large",
        )
        .await;
    }
    jobs.put(&key, body.into()).await?;
    let claim_by = now + chrono::TimeDelta::from_std(config.claim_ttl).unwrap_or_default();
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
    // Cancelled (or timed out) between the read and the dispatch: the job written for it must
    // not stay for a poller to find.
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

/// One dispatcher pass: hand queued runs to their pollers, delete the job keys of ended runs.
pub async fn dispatch_once(
    pool: &PgPool,
    commands: &SweepCommands,
    jobs: &kv::Store,
    pollers: &kv::Store,
    config: &SweepConfig,
    max_payload: usize,
) -> Result<(), BoxError> {
    for run in read::queued_runs(pool, 500).await? {
        let span = tracing::info_span!("sweep.dispatch", sweep.run_id = %run.id, sweep.poller_id = %run.poller_id);
        // One run's trouble must not hold up the others.
        if let Err(e) = dispatch_run(&run, commands, jobs, pollers, config, max_payload)
            .instrument(span)
            .await
        {
            tracing::warn!(sweep.run_id = %run.id, error = %e, "sweeps: could not dispatch a run; trying again");
        }
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
        if let Err(e) = jobs.purge(&key).await {
            tracing::warn!(sweep.run_id = %id, error = %e, "sweeps: could not delete an ended run's job key; trying again");
            continue;
        }
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
    // How often the message was delivered: a `done` waits for late results batches for at
    // most this many redeliveries (a second apart).
    let delivered = msg.info().map_or(1, |i| i.delivered);
    match apply_report(pool, commands, report, delivered).await {
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
    delivered: i64,
) -> Result<(), BoxError> {
    let Some(run) = read::by_id(pool, report.run_id).await? else {
        tracing::warn!(sweep.run_id = %report.run_id, "report for an unknown sweep run; dropped");
        return Ok(());
    };
    if run.poller_id != report.poller_id {
        tracing::warn!(sweep.run_id = %run.id, sweep.poller_id = %report.poller_id, "report from a poller the run is not for; dropped");
        return Ok(());
    }
    // The same run id scheduled elsewhere (another deployment on this stream, with ids of an
    // older Corral): not this run's report.
    if report.scheduled_at.is_some_and(|at| at != run.scheduled_at) {
        tracing::warn!(sweep.run_id = %run.id, sweep.scheduled_at = ?report.scheduled_at, "report for another run under this run's id; dropped");
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
            let done = run.hosts_done.max(0) as u64;
            // Results batches still on their way (redelivered after an error, or with another
            // consumer process) must land before the run ends, or they would be dropped.
            if done < report.hosts_done && delivered < DONE_WAITS {
                return Err(format!(
                    "done with {} hosts, {done} stored so far; waiting for the rest",
                    report.hosts_done
                )
                .into());
            }
            command(
                commands,
                id,
                SweepCommand::Complete { hosts_done: done },
                "poller finished",
            )
            .await
        }
        ReportKind::Fail => {
            let done = run.hosts_done.max(0) as u64;
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
