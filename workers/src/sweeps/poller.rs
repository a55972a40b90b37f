//! The reference sweep poller: heartbeats into [`POLLERS_BUCKET`], watches its jobs in
//! [`JOBS_BUCKET`] (with history, so jobs written before it started are seen), probes each
//! job's hosts and publishes the reports to [`REPORTS_STREAM`].
//!
//! - **At least once, deduplicated**: every report carries a deterministic `Nats-Msg-Id`
//!   ([`report_msg_id`]). Results go in the fixed chunks `[256k, 256k + 256)` of the host
//!   indices, so a chunk re-sent after a crash has the id it had before and the stream drops
//!   it (within its 10-minute duplicate window).
//! - **Journal** ([`super::journal`]): per run, `<state_dir>/<run_id>.journal`, lines appended
//!   and fsync'd *after* the server acked what they record. On a restart acked reports are not
//!   sent again, reported hosts are not probed again, and a finished run never runs again. A
//!   host is never skipped; at most one batch per run is re-sent. A journal is tied to its
//!   run's identity (the job's `scheduled_at`): another run under the same id starts afresh.
//! - **Cancellation**: a Delete or Purge of the job's key aborts its task at once (in-flight
//!   batches are dropped). After the job's `deadline` the poller stops sending; the server
//!   times the run out.
//! - **Journals go with their runs**: the server deletes the key of every run that ended
//!   (after the poller's `done` or `fail`, a cancel, a time-out, an expiry); the poller then
//!   removes the run's journal (once its task is gone), as it does when a job's deadline
//!   passes. Keys deleted while the poller was down show in the watch's history, and at start
//!   journals untouched for longer than [`PollerConfig::journal_max_age`] are removed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::{self, Context};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{AbortHandle, Id as TaskId, JoinHandle, JoinSet};
use tracing::Instrument;
use uuid::Uuid;

use super::journal::{self, Journal, JournalLine, DEFAULT_JOURNAL_MAX_AGE};
use super::probe::{icmp_capability, icmp_echo, icmp_supported, tcp_probe, PortState};
use super::protocol::{
    ensure_buckets, expand_hosts, host_count, network_cidr, parse_hosts, parse_job_key,
    parse_networks, report_msg_id, Cidr, HostResult, PollerHeartbeat, ReportKind, SweepJob,
    SweepNames, SweepReport, JOBS_BUCKET, JOB_KEY_PREFIX, POLLERS_BUCKET, RESULTS_BATCH,
};

/// Any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often a poller writes its heartbeat unless told otherwise.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Longest pause between retries of a publish or of the job watch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Who the poller is and where it keeps its journal.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// The poller's id: the `<poller_id>` of its job keys and its heartbeat key. Letters,
    /// digits, `-` and `_` only.
    pub id: String,
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// Where the per-run journals live (created if missing).
    pub state_dir: PathBuf,
    /// How often the heartbeat is written.
    pub heartbeat_interval: Duration,
    /// The buckets and stream to use (the server's must be the same).
    pub names: SweepNames,
    /// At start, journals untouched for this long are removed (no open run can own them).
    pub journal_max_age: Duration,
}

impl PollerConfig {
    /// A configuration with the default heartbeat interval.
    pub fn new(id: impl Into<String>, nats_url: impl Into<String>, state_dir: PathBuf) -> Self {
        Self {
            id: id.into(),
            nats_url: nats_url.into(),
            state_dir,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            names: SweepNames::default(),
            journal_max_age: DEFAULT_JOURNAL_MAX_AGE,
        }
    }
}

/// Runs the poller until `stop` turns true (or its sender is dropped): connects, makes sure the
/// buckets and the stream exist, heartbeats, and runs every job of this poller, several at
/// once. Errors at start (bad id, unusable `state_dir`, NATS unreachable) are returned; later
/// ones are logged and retried.
pub async fn run(config: PollerConfig, mut stop: watch::Receiver<bool>) -> Result<(), BoxError> {
    let valid_id = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if config.id.is_empty() || !config.id.chars().all(valid_id) {
        return Err(format!(
            "poller id {:?} must be letters, digits, '-' and '_' only",
            config.id
        )
        .into());
    }
    tokio::fs::create_dir_all(&config.state_dir).await?;
    let removed =
        journal::remove_old(&config.state_dir, config.journal_max_age, SystemTime::now()).await?;
    if removed > 0 {
        tracing::info!(
            sweep.journals_removed = removed,
            max_age_secs = config.journal_max_age.as_secs(),
            "removed old sweep journals"
        );
    }
    let client = async_nats::ConnectOptions::new()
        .name(format!("corral-sweep-poller-{}", config.id))
        .connect(config.nats_url.as_str())
        .await?;
    let js = jetstream::new(client);
    let (jobs, pollers, ()) = ensure_buckets(&js, &config.names).await?;
    tracing::info!(sweep.poller_id = %config.id, nats.url = %config.nats_url, state_dir = %config.state_dir.display(), icmp = icmp_capability(), "sweep poller started");
    let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat(
        pollers,
        config.id.clone(),
        config.heartbeat_interval,
        stop.clone(),
    )));
    let poller = Arc::new(Poller {
        id: config.id,
        js,
        state_dir: config.state_dir,
        names: config.names,
    });
    watch_jobs(&poller, &jobs, &mut stop).await;
    tracing::info!(sweep.poller_id = %poller.id, "sweep poller stopped");
    Ok(())
}

/// What every job task shares.
struct Poller {
    id: String,
    js: Context,
    state_dir: PathBuf,
    names: SweepNames,
}

/// Aborts a spawned task when dropped (so that aborting a job also stops its probes).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves once `stop` turns true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Writes the heartbeat every `interval` until `stop`.
async fn heartbeat(
    store: kv::Store,
    id: String,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let beat = PollerHeartbeat {
            poller_id: id.clone(),
            at: Utc::now(),
            icmp: icmp_capability(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        match serde_json::to_vec(&beat) {
            Ok(value) => {
                if let Err(e) = store.put(&id, value.into()).await {
                    tracing::warn!(error = %e, sweep.poller_id = %id, nats.bucket = POLLERS_BUCKET, "could not write the heartbeat");
                }
            }
            Err(e) => tracing::error!(error = %e, "could not encode the heartbeat"),
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Watches this poller's job keys until `stop`, starting a task per new job and aborting it
/// when its key is deleted. The watch is opened again (with history) after errors; jobs that
/// are running or finished are not started twice.
async fn watch_jobs(poller: &Arc<Poller>, jobs: &kv::Store, stop: &mut watch::Receiver<bool>) {
    let pattern = format!("{JOB_KEY_PREFIX}.{}.*", poller.id);
    let mut jobs_seen = JobTasks::default();
    let mut backoff = Duration::from_millis(250);
    loop {
        match jobs.watch_with_history(pattern.as_str()).await {
            Err(e) => {
                tracing::warn!(error = %e, nats.bucket = JOBS_BUCKET, sweep.poller_id = %poller.id, "cannot watch the jobs; trying again")
            }
            Ok(mut watch) => {
                tracing::debug!(nats.bucket = JOBS_BUCKET, nats.key = %pattern, "watching jobs");
                loop {
                    tokio::select! {
                        _ = stopped(stop) => {
                            jobs_seen.tasks.shutdown().await;
                            return;
                        }
                        Some(joined) = jobs_seen.tasks.join_next_with_id(), if !jobs_seen.tasks.is_empty() => {
                            let id = match joined {
                                Ok((id, ())) => id,
                                Err(e) => {
                                    if e.is_panic() {
                                        tracing::error!(error = %e, "a sweep job task panicked");
                                    }
                                    e.id()
                                }
                            };
                            jobs_seen.joined(poller, id);
                        }
                        next = watch.next() => match next {
                            None => {
                                tracing::warn!(nats.bucket = JOBS_BUCKET, "the job watch ended; watching again");
                                break;
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, nats.bucket = JOBS_BUCKET, "the job watch failed; watching again");
                                break;
                            }
                            Some(Ok(entry)) => {
                                backoff = Duration::from_millis(250);
                                on_entry(poller, entry, &mut jobs_seen);
                            }
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = stopped(stop) => {
                jobs_seen.tasks.shutdown().await;
                return;
            }
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The poller's tasks: one per running job, and those removing the journals of ended runs.
#[derive(Default)]
struct JobTasks {
    tasks: JoinSet<()>,
    /// The task of each running job, by run.
    running: HashMap<Uuid, (AbortHandle, Option<DateTime<Utc>>)>,
    /// Aborted jobs whose journal goes once their task is gone.
    ending: HashMap<TaskId, Uuid>,
}

impl JobTasks {
    /// Task `id` is gone.
    fn joined(&mut self, poller: &Arc<Poller>, id: TaskId) {
        self.running.retain(|_, (h, _)| h.id() != id);
        if let Some(run) = self.ending.remove(&id) {
            self.remove_journal(poller, run);
        }
    }

    fn remove_journal(&mut self, poller: &Arc<Poller>, run: Uuid) {
        let dir = poller.state_dir.clone();
        self.tasks.spawn(async move {
            match journal::remove(&dir, run).await {
                Ok(true) => tracing::debug!(sweep.run_id = %run, "sweep journal removed: the run ended"),
                Ok(false) => {}
                Err(e) => tracing::warn!(sweep.run_id = %run, error = %e, "could not remove an ended run's journal"),
            }
        });
    }
}

/// One change of a job key: a Put starts the job unless it runs already; a Delete or Purge
/// (the run ended) aborts it and removes its journal.
fn on_entry(poller: &Arc<Poller>, entry: kv::Entry, jobs: &mut JobTasks) {
    let Some((owner, run)) = parse_job_key(&entry.key) else {
        tracing::warn!(nats.key = %entry.key, "ignoring a key that is not a job key");
        return;
    };
    if owner != poller.id {
        return;
    }
    match entry.operation {
        Operation::Delete | Operation::Purge => {
            if let Some((handle, _)) = jobs.running.remove(&run) {
                handle.abort();
                tracing::info!(sweep.run_id = %run, "sweep job cancelled: its key was deleted");
                // Its task may be in the middle of an append: the journal goes after it.
                jobs.ending.insert(handle.id(), run);
            } else if journal::path(&poller.state_dir, run).exists() {
                jobs.remove_journal(poller, run);
            }
        }
        Operation::Put => {
            let job = serde_json::from_slice::<SweepJob>(&entry.value)
                .map_err(|e| format!("the job is not valid JSON: {e}"));
            let identity = job.as_ref().ok().and_then(|j| j.scheduled_at);
            if let Some((_, running)) = jobs.running.get(&run) {
                if *running == identity {
                    tracing::debug!(sweep.run_id = %run, "sweep job already running");
                } else {
                    tracing::warn!(sweep.run_id = %run, "a job for another run under a running run's id; ignored while that one runs");
                }
                return;
            }
            let span =
                tracing::info_span!("sweep.job", sweep.run_id = %run, sweep.poller_id = %poller.id);
            let handle = jobs
                .tasks
                .spawn(run_job(poller.clone(), run, job).instrument(span));
            jobs.running.insert(run, (handle, identity));
        }
    }
}

/// One job, from the journal's state to `done` (or `fail`), unless its deadline passes first.
async fn run_job(poller: Arc<Poller>, run: Uuid, job: Result<SweepJob, String>) {
    let job = match job {
        Ok(job) if job.run_id != run || job.poller_id != poller.id => Err(format!(
            "the job's run_id {} and poller_id {:?} do not match its key",
            job.run_id, job.poller_id
        )),
        other => other,
    };
    if let Ok(job) = &job {
        if job.deadline <= Utc::now() {
            tracing::info!(sweep.deadline = %job.deadline, "the sweep job's deadline has passed; not running it");
            forget(&poller, run).await;
            return;
        }
    }
    let identity = job.as_ref().ok().and_then(|j| j.scheduled_at);
    let mut journal = match Journal::open(&poller.state_dir, run, identity).await {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the run's journal; not running it");
            return;
        }
    };
    if journal.state.finished {
        tracing::debug!("sweep job already finished");
        return;
    }
    let job = match job {
        Ok(job) => job,
        Err(error) => {
            // Without a valid job there is no deadline to respect: fail it once.
            if let Err(e) = fail(&poller, &mut journal, error).await {
                tracing::error!(error = %e, "could not fail the sweep job");
            }
            return;
        }
    };
    let Ok(remaining) = (job.deadline - Utc::now()).to_std() else {
        forget(&poller, run).await;
        return;
    };
    let finished = tokio::select! {
        _ = tokio::time::sleep(remaining) => None,
        done = execute(&poller, &job, &mut journal) => Some(done),
    };
    match finished {
        Some(Ok(())) => {
            tracing::info!(
                sweep.hosts_done = journal.state.reported.len() as u64,
                "sweep job done"
            )
        }
        Some(Err(e)) => tracing::error!(error = %e, "sweep job interrupted"),
        None => {
            tracing::warn!(sweep.deadline = %job.deadline, "the sweep job's deadline passed; stopped sending");
            forget(&poller, run).await;
        }
    }
}

/// Removes the journal of a run whose deadline passed: the server has ended it.
async fn forget(poller: &Poller, run: Uuid) {
    if let Err(e) = journal::remove(&poller.state_dir, run).await {
        tracing::warn!(error = %e, "could not remove the journal of a run past its deadline");
    }
}

/// Publishes `fail` with `error`, then records the run as finished.
async fn fail(poller: &Poller, journal: &mut Journal, error: String) -> Result<(), BoxError> {
    tracing::warn!(error = %error, "failing the sweep job");
    let report = poller.report(
        journal,
        ReportKind::Fail,
        Vec::new(),
        journal.state.reported.len() as u64,
        Some(error),
    );
    poller.publish(&report, 0).await?;
    journal.append(JournalLine::Fail).await?;
    Ok(())
}

impl Poller {
    /// A report on the run of `journal` (its id and identity).
    fn report(
        &self,
        journal: &Journal,
        kind: ReportKind,
        results: Vec<HostResult>,
        hosts_done: u64,
        error: Option<String>,
    ) -> SweepReport {
        SweepReport {
            run_id: journal.run,
            scheduled_at: journal.identity(),
            poller_id: self.id.clone(),
            kind,
            results,
            hosts_done,
            error,
            at: Utc::now(),
        }
    }

    /// Publishes one report with its `Nats-Msg-Id` and waits for the stream's ack, retrying
    /// (with the same id, so never twice in the stream) until it is acked.
    async fn publish(&self, report: &SweepReport, first_host: u64) -> Result<(), BoxError> {
        let subject = self.names.report_subject(report.run_id);
        let msg_id = report_msg_id(report.run_id, report.scheduled_at, report.kind, first_host);
        let payload = serde_json::to_vec(report)?;
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
            let sent = async {
                self.js
                    .publish_with_headers(subject.clone(), headers, payload.clone().into())
                    .await?
                    .await
                    .map_err(BoxError::from)
            };
            match sent.await {
                Ok(ack) => {
                    tracing::debug!(nats.subject = %subject, nats.msg_id = %msg_id, nats.duplicate = ack.duplicate, nats.seq = ack.sequence, "report published");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, nats.stream = %self.names.reports_stream, nats.msg_id = %msg_id, retry_in_ms = backoff.as_millis() as u64, "could not publish a sweep report; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// One probed chunk: the host indices and their results, in index order.
struct Batch {
    indices: Vec<u64>,
    results: Vec<HostResult>,
}

/// The job after the journal's state: ack, start, the hosts not reported yet in batches,
/// done. Each step is journalled once the stream acked it.
async fn execute(poller: &Poller, job: &SweepJob, journal: &mut Journal) -> Result<(), BoxError> {
    let parsed = parse_hosts(&job.hosts)
        .and_then(|hosts| parse_networks(&job.networks).map(|networks| (hosts, networks)));
    let (intervals, networks) = match parsed {
        Ok(p) => p,
        Err(e) => return fail(poller, journal, e.to_string()).await,
    };
    let total = host_count(&intervals);
    if !journal.state.acked {
        let done = journal.state.reported.len() as u64;
        let report = poller.report(journal, ReportKind::Ack, Vec::new(), done, None);
        poller.publish(&report, 0).await?;
        journal.append(JournalLine::Ack).await?;
    }
    if !journal.state.started {
        let done = journal.state.reported.len() as u64;
        let report = poller.report(journal, ReportKind::Start, Vec::new(), done, None);
        poller.publish(&report, 0).await?;
        journal.append(JournalLine::Start).await?;
    }
    let pending: Vec<(u64, IpAddr)> = expand_hosts(&intervals)
        .enumerate()
        .map(|(i, ip)| (i as u64, ip))
        .filter(|(i, _)| !journal.state.reported.contains(i))
        .collect();
    tracing::info!(
        sweep.hosts = total,
        sweep.hosts_pending = pending.len() as u64,
        "sweep job running"
    );
    let (tx, mut rx) = mpsc::channel::<Batch>(4);
    let settings = ProbeSettings::new(job, networks);
    let mut prober = AbortOnDrop(tokio::spawn(probe_all(settings, pending, tx)));
    while let Some(batch) = rx.recv().await {
        let Some(&first) = batch.indices.first() else {
            continue;
        };
        let done = journal.state.reported.len() as u64 + batch.indices.len() as u64;
        let report = poller.report(journal, ReportKind::Results, batch.results, done, None);
        poller.publish(&report, first).await?;
        journal.append(JournalLine::Hosts(batch.indices)).await?;
    }
    // The channel closed: the prober ended (a panic shows here).
    (&mut prober.0).await?;
    let reported = journal.state.reported.len() as u64;
    if reported != total {
        return Err(format!("only {reported} of {total} hosts were probed").into());
    }
    let report = poller.report(journal, ReportKind::Done, Vec::new(), total, None);
    poller.publish(&report, 0).await?;
    journal.append(JournalLine::Done).await?;
    Ok(())
}

/// What probing one job's hosts needs.
#[derive(Clone)]
struct ProbeSettings {
    ports: Arc<[u16]>,
    networks: Arc<[Cidr]>,
    icmp: bool,
    timeout: Duration,
    semaphore: Arc<Semaphore>,
    /// Chunks probed at once (enough to keep the semaphore busy across chunk ends).
    lookahead: usize,
}

impl ProbeSettings {
    fn new(job: &SweepJob, networks: Vec<Cidr>) -> Self {
        let mut ports = job.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        let concurrency = job.concurrency.max(1) as usize;
        let per_chunk = RESULTS_BATCH * ports.len().max(1);
        Self {
            lookahead: concurrency.div_ceil(per_chunk) + 1,
            ports: ports.into(),
            networks: networks.into(),
            icmp: job.icmp,
            timeout: Duration::from_millis(u64::from(job.timeout_ms.max(1))),
            semaphore: Arc::new(Semaphore::new(concurrency)),
        }
    }
}

/// Probes `pending` (index, address) in the fixed chunks of [`RESULTS_BATCH`] indices, a few
/// chunks at once, and sends each finished chunk, in order.
async fn probe_all(settings: ProbeSettings, pending: Vec<(u64, IpAddr)>, tx: mpsc::Sender<Batch>) {
    let chunk_of = |i: u64| i / RESULTS_BATCH as u64;
    let chunks: Vec<Vec<(u64, IpAddr)>> = pending
        .chunk_by(|a, b| chunk_of(a.0) == chunk_of(b.0))
        .map(<[_]>::to_vec)
        .collect();
    let lookahead = settings.lookahead;
    let mut batches = futures::stream::iter(chunks)
        .map(|chunk| probe_chunk(settings.clone(), chunk))
        .buffered(lookahead);
    while let Some(batch) = batches.next().await {
        if tx.send(batch).await.is_err() {
            return;
        }
    }
}

async fn probe_chunk(settings: ProbeSettings, chunk: Vec<(u64, IpAddr)>) -> Batch {
    let results =
        futures::future::join_all(chunk.iter().map(|&(_, ip)| probe_host(&settings, ip))).await;
    Batch {
        indices: chunk.into_iter().map(|(i, _)| i).collect(),
        results,
    }
}

/// Every port of one host (each under the semaphore), and ICMP when asked and possible.
async fn probe_host(settings: &ProbeSettings, ip: IpAddr) -> HostResult {
    let ports = futures::future::join_all(settings.ports.iter().map(|&port| async move {
        let _permit = settings.semaphore.acquire().await.ok();
        (port, tcp_probe(ip, port, settings.timeout).await)
    }))
    .await;
    let (mut open_ports, mut closed, mut timed_out) = (Vec::new(), 0u64, 0u64);
    let mut fastest: Option<Duration> = None;
    for (port, state) in ports {
        match state {
            PortState::Open(took) => {
                open_ports.push(port);
                fastest = Some(fastest.map_or(took, |f| f.min(took)));
            }
            PortState::Closed => closed += 1,
            PortState::TimedOut => timed_out += 1,
        }
    }
    let mut metadata = serde_json::json!({
        "closed_ports": closed,
        "timed_out_ports": timed_out,
    });
    let mut icmp_available = None;
    if settings.icmp {
        // Unknown (None) unless this process can ping the host's address family: then a
        // reply is true, no reply within the timeout false.
        if icmp_supported(ip) {
            let _permit = settings.semaphore.acquire().await.ok();
            match icmp_echo(ip, settings.timeout).await {
                Ok(Some(took)) => {
                    icmp_available = Some(true);
                    fastest = Some(fastest.map_or(took, |f| f.min(took)));
                }
                Ok(None) => icmp_available = Some(false),
                Err(e) => metadata["icmp_error"] = e.to_string().into(),
            }
        } else {
            metadata["icmp"] = "unsupported".into();
        }
    }
    HostResult {
        host_ip: ip.to_string(),
        network_cidr: network_cidr(ip, &settings.networks),
        icmp_available,
        open_ports,
        latency_ms: fastest.map(|d| d.as_secs_f32() * 1000.0),
        observed_at: Utc::now(),
        metadata,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("corral-sweeps-{name}-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[tokio::test]
    async fn hosts_are_probed_in_fixed_chunks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let job = SweepJob {
            run_id: Uuid::new_v4(),
            poller_id: "p".into(),
            agent_id: None,
            hosts: vec!["127.0.0.0-127.0.1.255".into()],
            networks: vec!["127.0.0.0/24".into()],
            ports: vec![port, port],
            icmp: true,
            timeout_ms: 1000,
            concurrency: 64,
            idempotency_key: "k".into(),
            deadline: Utc::now(),
            scheduled_at: None,
        };
        let intervals = parse_hosts(&job.hosts).expect("hosts");
        // Hosts 0-9 and 256 already reported: 0-255 is one chunk, 256-511 another.
        let pending: Vec<(u64, IpAddr)> = expand_hosts(&intervals)
            .enumerate()
            .map(|(i, ip)| (i as u64, ip))
            .filter(|(i, _)| *i >= 10 && *i != 256)
            .collect();
        let networks = parse_networks(&job.networks).expect("networks");
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(probe_all(ProbeSettings::new(&job, networks), pending, tx));
        let mut batches = Vec::new();
        while let Some(batch) = rx.recv().await {
            batches.push(batch);
        }
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].indices, (10..256).collect::<Vec<_>>());
        assert_eq!(batches[1].indices, (257..512).collect::<Vec<_>>());
        let first = &batches[0].results;
        assert_eq!(first.len(), 246);
        assert_eq!(first[0].host_ip, "127.0.0.10");
        assert_eq!(first[0].network_cidr, "127.0.0.0/24");
        assert_eq!(batches[1].results[0].network_cidr, "127.0.1.1/32");
        // All of 127.0.0.0/8 answers ping; without the privilege, ICMP is unknown.
        let icmp = icmp_capability().then_some(true);
        let mut found = false;
        for result in batches.iter().flat_map(|b| &b.results) {
            assert_eq!(result.icmp_available, icmp, "{result:?}");
            assert_eq!(
                result.metadata.get("icmp").is_some(),
                icmp.is_none(),
                "{result:?}"
            );
            assert_ne!(result.host_ip, "127.0.0.1", "host 1 was reported already");
            if !result.open_ports.is_empty() {
                found = true;
            }
        }
        // Only 127.0.0.1 listens, and it was not pending.
        assert!(!found);
        drop(listener);
    }

    /// Needs a NATS server with JetStream at `NATS_URL`; skipped without it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_runs_once_and_not_again_after_a_restart() {
        let Ok(url) = std::env::var("NATS_URL") else {
            eprintln!("NATS_URL is not set; skipping");
            return;
        };
        let client = async_nats::connect(url.as_str()).await.expect("connect");
        let js = jetstream::new(client.clone());
        // Buckets and a stream of this test's own.
        let names = SweepNames::tagged(&format!("t{}", Uuid::new_v4().simple()));
        let (jobs, pollers, ()) = ensure_buckets(&js, &names).await.expect("buckets");
        // Idempotent.
        ensure_buckets(&js, &names).await.expect("buckets again");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let poller_id = format!("test-{}", Uuid::new_v4().simple());
        let run = Uuid::new_v4();
        let job = SweepJob {
            run_id: run,
            poller_id: poller_id.clone(),
            agent_id: None,
            hosts: vec!["127.0.0.0-127.0.0.3".into()],
            networks: vec!["127.0.0.0/30".into()],
            ports: vec![port],
            icmp: true,
            timeout_ms: 500,
            concurrency: 4,
            idempotency_key: format!("test-{run}"),
            deadline: Utc::now() + chrono::Duration::seconds(120),
            scheduled_at: Some(Utc::now()),
        };
        let key = super::super::protocol::job_key(&poller_id, run);
        jobs.put(&key, serde_json::to_vec(&job).expect("json").into())
            .await
            .expect("put job");

        let state_dir = temp_dir("poller");
        let config = PollerConfig {
            heartbeat_interval: Duration::from_millis(200),
            names: names.clone(),
            ..PollerConfig::new(poller_id.clone(), url.clone(), state_dir.clone())
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let poller = tokio::spawn(super::run(config.clone(), stop_rx));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let reports = loop {
            let reports = read_reports(&js, &names, run).await;
            if reports.iter().any(|r| r.kind == ReportKind::Done) {
                break reports;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no done report: {reports:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let beat = pollers
            .get(&poller_id)
            .await
            .expect("get heartbeat")
            .expect("a heartbeat");
        let beat: PollerHeartbeat = serde_json::from_slice(&beat).expect("heartbeat json");
        assert_eq!(beat.poller_id, poller_id);
        assert_eq!(beat.icmp, icmp_capability());
        let _ = stop_tx.send(true);
        poller.await.expect("join").expect("poller");

        let count = |kind| reports.iter().filter(|r| r.kind == kind).count();
        assert_eq!(count(ReportKind::Ack), 1, "{reports:?}");
        assert_eq!(count(ReportKind::Start), 1, "{reports:?}");
        assert_eq!(count(ReportKind::Done), 1, "{reports:?}");
        assert_eq!(count(ReportKind::Fail), 0, "{reports:?}");
        let results: Vec<&HostResult> = reports.iter().flat_map(|r| &r.results).collect();
        let mut hosts: Vec<&str> = results.iter().map(|r| r.host_ip.as_str()).collect();
        hosts.sort_unstable();
        assert_eq!(hosts, ["127.0.0.0", "127.0.0.1", "127.0.0.2", "127.0.0.3"]);
        for result in &results {
            assert_eq!(result.network_cidr, "127.0.0.0/30");
            assert_eq!(
                result.icmp_available,
                icmp_capability().then_some(true),
                "{result:?}"
            );
            if result.host_ip == "127.0.0.1" {
                assert_eq!(result.open_ports, [port]);
                assert!(result.latency_ms.is_some());
            } else {
                assert!(result.open_ports.is_empty(), "{result:?}");
            }
        }
        let done = reports
            .iter()
            .find(|r| r.kind == ReportKind::Done)
            .expect("done");
        assert_eq!(done.hosts_done, 4);
        assert!(reports
            .iter()
            .all(|r| r.run_id == run && r.poller_id == poller_id));

        // Restarted with the same journal, the poller sees the job again (history) and
        // publishes nothing: not even a duplicate the stream would drop.
        let mut live = client
            .subscribe(names.report_subject(run))
            .await
            .expect("subscribe");
        client.flush().await.expect("flush");
        let (stop_tx, stop_rx) = watch::channel(false);
        let poller = tokio::spawn(super::run(config, stop_rx));
        tokio::time::sleep(Duration::from_secs(2)).await;

        // Meanwhile, a long job (65,536 hosts, 4 ports each, one probe at a time) is cancelled
        // by deleting its key: its reports stop, and it never says done.
        let long_run = Uuid::new_v4();
        let long_job = SweepJob {
            run_id: long_run,
            hosts: vec!["127.0.0.0-127.0.255.255".into()],
            networks: vec!["127.0.0.0/16".into()],
            ports: vec![port, port + 1, port + 2, port + 3],
            icmp: false,
            concurrency: 1,
            idempotency_key: format!("test-{long_run}"),
            ..job.clone()
        };
        let long_key = super::super::protocol::job_key(&poller_id, long_run);
        jobs.put(
            &long_key,
            serde_json::to_vec(&long_job).expect("json").into(),
        )
        .await
        .expect("put long job");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !read_reports(&js, &names, long_run)
            .await
            .iter()
            .any(|r| r.kind == ReportKind::Results)
        {
            assert!(tokio::time::Instant::now() < deadline, "no results");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(journal::path(&state_dir, long_run).exists());
        jobs.delete(&long_key).await.expect("delete long job");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !journal::path(&state_dir, long_run).exists(),
            "a cancelled run's journal goes"
        );
        assert!(
            journal::path(&state_dir, run).exists(),
            "a finished run's journal stays while its key does"
        );
        let after_cancel = read_reports(&js, &names, long_run).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let later = read_reports(&js, &names, long_run).await;
        assert_eq!(later.len(), after_cancel.len(), "reports after the cancel");
        assert!(later.iter().all(|r| r.kind != ReportKind::Done));
        let hosts_done = later.iter().map(|r| r.hosts_done).max().unwrap_or(0);
        assert!(
            hosts_done < 65_536,
            "the long job finished before its cancel"
        );

        let _ = stop_tx.send(true);
        poller.await.expect("join").expect("poller");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), live.next())
                .await
                .is_err(),
            "the restarted poller published for a finished run"
        );
        assert_eq!(read_reports(&js, &names, run).await.len(), reports.len());

        jobs.purge(&key).await.expect("purge job");
        jobs.purge(&long_key).await.expect("purge long job");
        pollers.purge(&poller_id).await.expect("purge heartbeat");
        for stream in [
            names.reports_stream.clone(),
            format!("KV_{}", names.jobs_bucket),
            format!("KV_{}", names.pollers_bucket),
        ] {
            js.delete_stream(&stream).await.expect("delete stream");
        }
        std::fs::remove_dir_all(&state_dir).expect("cleanup");
        drop(listener);
    }

    /// Every report of `run` in the stream, in order.
    async fn read_reports(js: &Context, names: &SweepNames, run: Uuid) -> Vec<SweepReport> {
        use async_nats::jetstream::consumer::{pull, DeliverPolicy};
        let stream = js.get_stream(&names.reports_stream).await.expect("stream");
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: names.report_subject(run),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .expect("consumer");
        let pending = consumer.cached_info().num_pending;
        let mut messages = consumer.messages().await.expect("messages");
        let mut reports = Vec::new();
        while (reports.len() as u64) < pending {
            let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .expect("a report in time")
                .expect("a report")
                .expect("a message");
            reports.push(serde_json::from_slice(&msg.payload).expect("report json"));
        }
        reports
    }
}
