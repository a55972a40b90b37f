//! The wire protocol between Corral and its sweep pollers: the KV buckets the jobs and the
//! heartbeats live in, the JetStream stream the reports go to, the JSON they carry, the
//! deterministic `Nats-Msg-Id`s that make re-sending safe, and the meaning of a job's `hosts`
//! (disjoint address intervals, indexed in order) and `networks` (the CIDR each result is
//! filed under).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamError, KeyValueError};
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::jetstream::{self};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// KV bucket of sweep jobs (history 1, file storage), keyed [`job_key`].
pub const JOBS_BUCKET: &str = "corral_sweep_jobs";
/// Prefix of the job keys: `jobs.sweeps.<poller_id>.<run_id>`.
pub const JOB_KEY_PREFIX: &str = "jobs.sweeps";
/// KV bucket of poller heartbeats (history 1, entries expire after [`POLLER_MAX_AGE`]), keyed
/// by poller id.
pub const POLLERS_BUCKET: &str = "corral_pollers";
/// How long a heartbeat stays in [`POLLERS_BUCKET`].
pub const POLLER_MAX_AGE: Duration = Duration::from_secs(60);
/// JetStream stream (file storage) of sweep reports.
pub const REPORTS_STREAM: &str = "CORRAL_SWEEP_REPORTS";
/// Prefix of the report subjects: `corral.sweeps.reports.<run_id>`.
pub const REPORTS_SUBJECT_PREFIX: &str = "corral.sweeps.reports";
/// How long the report stream keeps a report.
pub const REPORTS_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);
/// The stream's `Nats-Msg-Id` deduplication window.
pub const REPORTS_DUPLICATE_WINDOW: Duration = Duration::from_secs(600);
/// Most hosts in one `results` report. Batches are the fixed chunks `[256k, 256k + 256)` of
/// the host indices, so that a batch re-sent after a crash carries the same `Nats-Msg-Id`.
pub const RESULTS_BATCH: usize = 256;
/// Most hosts one job may name.
pub const MAX_HOSTS: u64 = 65_536;

/// The key of one run's job: `jobs.sweeps.<poller>.<run>`.
pub fn job_key(poller: &str, run: Uuid) -> String {
    format!("{JOB_KEY_PREFIX}.{poller}.{run}")
}

/// The poller id and run id of a job key, when it is one.
pub fn parse_job_key(key: &str) -> Option<(&str, Uuid)> {
    let rest = key.strip_prefix(JOB_KEY_PREFIX)?.strip_prefix('.')?;
    let (poller, run) = rest.rsplit_once('.')?;
    if poller.is_empty() || poller.contains('.') {
        return None;
    }
    Some((poller, run.parse().ok()?))
}

/// The subject of one run's reports under the production names:
/// `corral.sweeps.reports.<run>`.
pub fn report_subject(run: Uuid) -> String {
    SweepNames::default().report_subject(run)
}

/// The buckets, the stream and the subject prefix a deployment uses: the constants above
/// unless a test (or a second deployment on one NATS server) picks its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepNames {
    /// The jobs bucket.
    pub jobs_bucket: String,
    /// The heartbeats bucket.
    pub pollers_bucket: String,
    /// The report stream.
    pub reports_stream: String,
    /// Its subject prefix (`<prefix>.<run_id>`).
    pub reports_prefix: String,
}

impl Default for SweepNames {
    fn default() -> Self {
        Self {
            jobs_bucket: JOBS_BUCKET.into(),
            pollers_bucket: POLLERS_BUCKET.into(),
            reports_stream: REPORTS_STREAM.into(),
            reports_prefix: REPORTS_SUBJECT_PREFIX.into(),
        }
    }
}

impl SweepNames {
    /// Names of their own, for `tag` (letters, digits, `_`): `corral_sweep_jobs_<tag>`,
    /// `corral_pollers_<tag>`, `CORRAL_SWEEP_REPORTS_<tag>`, `corral.sweeps.<tag>.reports`.
    pub fn tagged(tag: &str) -> Self {
        Self {
            jobs_bucket: format!("{JOBS_BUCKET}_{tag}"),
            pollers_bucket: format!("{POLLERS_BUCKET}_{tag}"),
            reports_stream: format!("{REPORTS_STREAM}_{tag}"),
            reports_prefix: format!("corral.sweeps.{tag}.reports"),
        }
    }

    /// The subject of one run's reports.
    pub fn report_subject(&self, run: Uuid) -> String {
        format!("{}.{run}", self.reports_prefix)
    }
}

/// The `Nats-Msg-Id` of a report on run `run` scheduled at `scheduled_at`:
/// `<run>.<scheduled_at in µs>.ack`, `.start`, `.results.<first host index>`, `.done`,
/// `.fail` (`first_host` only counts for results). The run's identity is part of it, so that
/// another run under the same id (see [`SweepJob::scheduled_at`]) is not taken for a re-send
/// of this one's reports; a job without it gives `<run>.ack`, ...
pub fn report_msg_id(
    run: Uuid,
    scheduled_at: Option<DateTime<Utc>>,
    kind: ReportKind,
    first_host: u64,
) -> String {
    let run = match scheduled_at {
        Some(at) => format!("{run}.{}", at.timestamp_micros()),
        None => run.to_string(),
    };
    match kind {
        ReportKind::Results => format!("{run}.results.{first_host}"),
        other => format!("{run}.{}", other.as_str()),
    }
}

/// One sweep run's work for one poller, the value at [`job_key`]. Deleting (or purging) the
/// key cancels the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SweepJob {
    /// The run.
    pub run_id: Uuid,
    /// The poller that runs it.
    pub poller_id: String,
    /// The agent the poller reports through, when there is one.
    pub agent_id: Option<String>,
    /// Disjoint address intervals: `127.0.0.1` or `127.0.0.0-127.0.0.15` (IPv4 or IPv6). Host
    /// `i` is the `i`-th address of their expansion in order ([`expand_hosts`]).
    pub hosts: Vec<String>,
    /// CIDR blocks results are filed under ([`network_cidr`]).
    pub networks: Vec<String>,
    /// TCP ports to connect to on every host.
    pub ports: Vec<u16>,
    /// Whether to send an ICMP echo to every host.
    pub icmp: bool,
    /// How long one probe may take.
    pub timeout_ms: u32,
    /// Most probes in flight at once.
    pub concurrency: u32,
    /// The key the run was requested with.
    pub idempotency_key: String,
    /// After it the server times the run out; the poller stops sending.
    pub deadline: DateTime<Utc>,
    /// When the run was scheduled in its deployment: with `run_id`, the run's identity. A
    /// poller's journal of the same run id but another `scheduled_at` is another run's (stale),
    /// and reports carry it back. Absent from the jobs of a Corral from before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<DateTime<Utc>>,
}

/// A poller's heartbeat, the value at its id in [`POLLERS_BUCKET`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PollerHeartbeat {
    /// The poller.
    pub poller_id: String,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// Whether the poller can send ICMP echo requests.
    pub icmp: bool,
    /// The poller's version.
    pub version: String,
}

/// What a report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// The poller took the job.
    Ack,
    /// The poller started probing.
    Start,
    /// A batch of host results.
    Results,
    /// Every host was reported.
    Done,
    /// The poller cannot run the job (`error` says why).
    Fail,
}

impl ReportKind {
    /// The serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Ack => "ack",
            ReportKind::Start => "start",
            ReportKind::Results => "results",
            ReportKind::Done => "done",
            ReportKind::Fail => "fail",
        }
    }
}

/// One message on [`report_subject`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SweepReport {
    /// The run.
    pub run_id: Uuid,
    /// The job's `scheduled_at`, when it had one: the server drops a report whose run has
    /// another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// The poller that sent it.
    pub poller_id: String,
    /// What it says.
    pub kind: ReportKind,
    /// Host results (`results` reports only; at most [`RESULTS_BATCH`]).
    pub results: Vec<HostResult>,
    /// Hosts of the run reported so far, this report's included.
    pub hosts_done: u64,
    /// Why the poller failed the job (`fail` reports only).
    pub error: Option<String>,
    /// When it was sent.
    pub at: DateTime<Utc>,
}

/// What a poller saw of one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostResult {
    /// The address.
    pub host_ip: String,
    /// The smallest CIDR of the job's `networks` that holds it, else the host as /32 (/128).
    pub network_cidr: String,
    /// Whether it answered an ICMP echo; `None` when not asked or unknown.
    pub icmp_available: Option<bool>,
    /// TCP ports that accepted a connection, ascending.
    pub open_ports: Vec<u16>,
    /// The fastest successful TCP connect or ICMP reply, in milliseconds.
    pub latency_ms: Option<f32>,
    /// When the host's probes ended.
    pub observed_at: DateTime<Utc>,
    /// More detail, e.g. `{"closed_ports": n, "timed_out_ports": n}`.
    pub metadata: serde_json::Value,
}

/// A bucket or the stream could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A KV bucket could not be read.
    #[error("KV bucket {0}: {1}")]
    Bucket(String, #[source] KeyValueError),
    /// The report stream, or a bucket's stream, could not be created.
    #[error("creating {0}: {1}")]
    Stream(String, #[source] CreateStreamError),
}

/// Gets, or creates when missing, the jobs bucket, the pollers bucket and the report stream;
/// both the server and the pollers call it. A create that loses a race with another process's
/// create is tolerated (the bucket or stream is read again).
///
/// The buckets' streams are created directly, with the settings `create_key_value` would use
/// (`KV_<bucket>`, subjects `$KV.<bucket>.>`, rollup allowed, delete denied, direct get,
/// discard new): `create_key_value` of async-nats 0.51 first reads the account info, which
/// it cannot parse from nats-server 2.9.
pub async fn ensure_buckets(
    js: &jetstream::Context,
    names: &SweepNames,
) -> Result<(kv::Store, kv::Store, ()), SetupError> {
    let jobs = ensure_bucket(
        js,
        &names.jobs_bucket,
        "Corral sweep jobs, keyed jobs.sweeps.<poller_id>.<run_id>",
        Duration::ZERO,
    )
    .await?;
    let pollers = ensure_bucket(
        js,
        &names.pollers_bucket,
        "Corral sweep poller heartbeats, keyed by poller id",
        POLLER_MAX_AGE,
    )
    .await?;
    if js.get_stream(&names.reports_stream).await.is_err() {
        let created = js
            .create_stream(stream::Config {
                name: names.reports_stream.clone(),
                description: Some("Corral sweep reports".into()),
                subjects: vec![format!("{}.>", names.reports_prefix)],
                storage: StorageType::File,
                duplicate_window: REPORTS_DUPLICATE_WINDOW,
                // Reports are applied within seconds; a week covers any outage of Corral.
                max_age: REPORTS_MAX_AGE,
                ..Default::default()
            })
            .await;
        if let Err(e) = created {
            // Another process may have created it meanwhile.
            if js.get_stream(&names.reports_stream).await.is_err() {
                return Err(SetupError::Stream(names.reports_stream.clone(), e));
            }
        }
    }
    Ok((jobs, pollers, ()))
}

/// One bucket (history 1, file storage, entries kept `max_age`, zero: forever).
async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
    max_age: Duration,
) -> Result<kv::Store, SetupError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: StorageType::File,
        num_replicas: 1,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        discard: DiscardPolicy::New,
        ..Default::default()
    };
    let created = js.create_stream(config).await.err();
    match js.get_key_value(bucket).await {
        Ok(store) => Ok(store),
        Err(e) => Err(match created {
            Some(create) => SetupError::Stream(bucket.to_string(), create),
            None => SetupError::Bucket(bucket.to_string(), e),
        }),
    }
}

/// A job's `hosts` or `networks` entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostSpecError(pub String);

/// One interval `[start, end]` of one address family, addresses as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostInterval {
    /// True for IPv6.
    pub v6: bool,
    /// First address.
    pub start: u128,
    /// Last address (inclusive).
    pub end: u128,
}

impl HostInterval {
    /// How many addresses it holds (at least 1).
    pub fn len(&self) -> u128 {
        (self.end - self.start).saturating_add(1)
    }

    /// Never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Its addresses in order, lazily.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + Clone + Send + 'static {
        let v6 = self.v6;
        (self.start..=self.end).map(move |n| to_ip(v6, n))
    }
}

impl FromStr for HostInterval {
    type Err = HostSpecError;

    /// `127.0.0.1` or `127.0.0.0-127.0.0.15` (IPv6 likewise), both ends included.
    fn from_str(s: &str) -> Result<Self, HostSpecError> {
        let s = s.trim();
        let parse = |x: &str| {
            x.trim()
                .parse::<IpAddr>()
                .map_err(|_| HostSpecError(format!("host {s:?}: {:?} is not an IP address", x)))
        };
        let (a, b) = match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let a = parse(s)?;
                (a, a)
            }
        };
        let ((v6, start), (v6b, end)) = (to_int(a), to_int(b));
        if v6 != v6b {
            return Err(HostSpecError(format!(
                "host {s:?}: both ends must be of one address family"
            )));
        }
        if start > end {
            return Err(HostSpecError(format!(
                "host {s:?}: the first address is after the last"
            )));
        }
        Ok(HostInterval { v6, start, end })
    }
}

/// Parses a job's `hosts` and checks that they name at most [`MAX_HOSTS`] addresses.
pub fn parse_hosts(hosts: &[String]) -> Result<Vec<HostInterval>, HostSpecError> {
    let intervals = hosts
        .iter()
        .map(|h| h.parse::<HostInterval>())
        .collect::<Result<Vec<_>, _>>()?;
    let total = intervals
        .iter()
        .fold(0u128, |n, i| n.saturating_add(i.len()));
    if total > u128::from(MAX_HOSTS) {
        return Err(HostSpecError(format!(
            "the job names {total} hosts; at most {MAX_HOSTS} are allowed"
        )));
    }
    Ok(intervals)
}

/// How many addresses the intervals hold.
pub fn host_count(intervals: &[HostInterval]) -> u64 {
    let total = intervals
        .iter()
        .fold(0u128, |n, i| n.saturating_add(i.len()));
    u64::try_from(total).unwrap_or(u64::MAX)
}

/// The addresses of `intervals` in order, lazily: host index `i` is the `i`-th item.
pub fn expand_hosts(intervals: &[HostInterval]) -> impl Iterator<Item = IpAddr> + '_ {
    intervals.iter().flat_map(HostInterval::iter)
}

/// A CIDR block of a job's `networks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v6, n) = to_int(ip);
        let (cv6, c) = to_int(self.addr);
        v6 == cv6 && n & mask(v6, self.prefix) == c
    }

    /// `ip` alone, as a /32 (/128).
    pub fn host(ip: IpAddr) -> Cidr {
        Cidr {
            addr: ip,
            prefix: if ip.is_ipv6() { 128 } else { 32 },
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = HostSpecError;

    /// `a.b.c.d/n` or `x::y/n` (host bits are cleared); a bare address is a /32 (/128).
    fn from_str(s: &str) -> Result<Self, HostSpecError> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| HostSpecError(format!("network {s:?} is not a CIDR")))?;
        let bits: u8 = if addr.is_ipv6() { 128 } else { 32 };
        let prefix = match prefix {
            None => bits,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= bits => p,
                _ => {
                    return Err(HostSpecError(format!(
                        "network {s:?}: the prefix must be 0-{bits}"
                    )))
                }
            },
        };
        let (v6, n) = to_int(addr);
        Ok(Cidr {
            addr: to_ip(v6, n & mask(v6, prefix)),
            prefix,
        })
    }
}

/// Parses a job's `networks`.
pub fn parse_networks(networks: &[String]) -> Result<Vec<Cidr>, HostSpecError> {
    networks.iter().map(|n| n.parse()).collect()
}

/// The `network_cidr` of a result: the smallest block of `networks` that holds `ip` (the
/// longest prefix), else `ip` as a /32 (/128), written `address/prefix`.
pub fn network_cidr(ip: IpAddr, networks: &[Cidr]) -> String {
    networks
        .iter()
        .filter(|c| c.contains(ip))
        .max_by_key(|c| c.prefix)
        .copied()
        .unwrap_or_else(|| Cidr::host(ip))
        .to_string()
}

fn mask(v6: bool, prefix: u8) -> u128 {
    let bits: u32 = if v6 { 128 } else { 32 };
    let host_bits = bits.saturating_sub(u32::from(prefix));
    let all = if v6 { u128::MAX } else { u128::from(u32::MAX) };
    if host_bits >= 128 {
        0
    } else {
        all & !((1u128 << host_bits) - 1)
    }
}

fn to_ip(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

fn to_int(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn intervals_expand_in_order() {
        let intervals =
            parse_hosts(&hosts(&["127.0.0.5", "127.0.0.0-127.0.0.2", "::1-::2"])).expect("parse");
        assert_eq!(host_count(&intervals), 6);
        let all: Vec<String> = expand_hosts(&intervals).map(|a| a.to_string()).collect();
        assert_eq!(
            all,
            [
                "127.0.0.5",
                "127.0.0.0",
                "127.0.0.1",
                "127.0.0.2",
                "::1",
                "::2"
            ]
        );
        // Lazy: a maximal job is not materialized to take its first address.
        let big = parse_hosts(&hosts(&["127.0.0.0-127.0.255.255"])).expect("parse");
        assert_eq!(host_count(&big), 65_536);
        assert_eq!(
            expand_hosts(&big).nth(65_535).map(|a| a.to_string()),
            Some("127.0.255.255".into())
        );
        assert_eq!(expand_hosts(&big).count(), 65_536);
    }

    #[test]
    fn bad_intervals_are_refused() {
        for bad in [
            "",
            "127.0.0.1/32",
            "127.0.0.9-127.0.0.1",
            "127.0.0.1-::1",
            "host.example",
            "127.0.0.1-",
        ] {
            assert!(parse_hosts(&hosts(&[bad])).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_hosts(&hosts(&["127.0.0.0-127.1.0.0"])).is_err());
        assert!(parse_hosts(&hosts(&["127.0.0.0-127.0.255.255", "127.1.0.0"])).is_err());
    }

    #[test]
    fn network_cidr_is_the_smallest_block_holding_the_host() {
        let networks = parse_networks(&hosts(&[
            "127.0.0.0/8",
            "127.0.0.0/28",
            "127.0.0.0/24",
            "::/0",
        ]))
        .expect("parse");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(network_cidr(ip("127.0.0.3"), &networks), "127.0.0.0/28");
        assert_eq!(network_cidr(ip("127.0.0.200"), &networks), "127.0.0.0/24");
        assert_eq!(network_cidr(ip("127.9.0.1"), &networks), "127.0.0.0/8");
        assert_eq!(network_cidr(ip("::1"), &networks), "::/0");
        assert_eq!(network_cidr(ip("127.0.0.1"), &[]), "127.0.0.1/32");
        assert_eq!(network_cidr(ip("::1"), &networks[..3]), "::1/128");
        // Host bits are cleared; a bare address is a /32.
        assert_eq!(
            "127.0.0.7/30".parse::<Cidr>().map(|c| c.to_string()),
            Ok("127.0.0.4/30".into())
        );
        assert_eq!(
            network_cidr(
                ip("127.0.0.1"),
                &parse_networks(&hosts(&["127.0.0.1"])).expect("p")
            ),
            "127.0.0.1/32"
        );
        assert!("127.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn keys_subjects_and_msg_ids() {
        let run = Uuid::nil();
        assert_eq!(
            job_key("p1", run),
            "jobs.sweeps.p1.00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(parse_job_key(&job_key("p1", run)), Some(("p1", run)));
        assert_eq!(parse_job_key("jobs.sweeps.p1.nope"), None);
        assert_eq!(parse_job_key("other.p1.x"), None);
        assert_eq!(
            report_subject(run),
            "corral.sweeps.reports.00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(
            report_msg_id(run, None, ReportKind::Results, 512),
            format!("{run}.results.512")
        );
        assert_eq!(
            report_msg_id(run, None, ReportKind::Done, 7),
            format!("{run}.done")
        );
        assert_eq!(
            report_msg_id(run, None, ReportKind::Ack, 0),
            format!("{run}.ack")
        );
        // Another run under the same id has ids of its own.
        let at = DateTime::from_timestamp(1_800_000_000, 123_456_000);
        assert_eq!(
            report_msg_id(run, at, ReportKind::Results, 256),
            format!("{run}.1800000000123456.results.256")
        );
        assert_eq!(
            report_msg_id(run, at, ReportKind::Ack, 0),
            format!("{run}.1800000000123456.ack")
        );
    }

    #[test]
    fn reports_serialize_snake_case() {
        let report = SweepReport {
            run_id: Uuid::nil(),
            scheduled_at: DateTime::from_timestamp(1_800_000_000, 0),
            poller_id: "p".into(),
            kind: ReportKind::Results,
            results: vec![HostResult {
                host_ip: "127.0.0.1".into(),
                network_cidr: "127.0.0.0/30".into(),
                icmp_available: None,
                open_ports: vec![22],
                latency_ms: Some(0.5),
                observed_at: Utc::now(),
                metadata: serde_json::json!({"closed_ports": 1, "timed_out_ports": 0}),
            }],
            hosts_done: 1,
            error: None,
            at: Utc::now(),
        };
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["kind"], "results");
        assert_eq!(json["hosts_done"], 1);
        assert_eq!(json["results"][0]["open_ports"][0], 22);
        assert!(json["results"][0]["icmp_available"].is_null());
        assert_eq!(json["scheduled_at"], "2027-01-15T08:00:00Z");
        let back: SweepReport = serde_json::from_value(json).expect("back");
        assert_eq!(back, report);
    }
}
