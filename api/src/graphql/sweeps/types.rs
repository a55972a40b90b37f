//! GraphQL types of sweep runs and their results.

use async_graphql::{ComplexObject, Context, Enum, Json, Result, SimpleObject, ID};
use chrono::{DateTime, TimeDelta, Utc};
use corral_domain::sweep::SweepStatus as DomainStatus;
use corral_projections::sweeps::read::{self, HostResultView, RunCursor, SweepRunView};
use sqlx::PgPool;

use crate::error_codes::ErrorCode;
use crate::graphql::errors::{coded, internal};
use crate::graphql::types::{page_info, page_size, PageInfo, Paging, DEFAULT_PAGE};

/// Where a run is in its life.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum SweepStatus {
    /// Accepted, not yet handed to the poller.
    Queued,
    /// Written to the poller's job key.
    Dispatched,
    /// The poller claimed the job.
    Acknowledged,
    /// The poller is sweeping.
    Running,
    /// Every host was swept.
    Completed,
    /// Failed (`failureCode`: `POLLER_OFFLINE`, `POLLER_ERROR`, `DISPATCH_FAILED`).
    Failed,
    /// The deadline passed first; results so far are kept.
    TimedOut,
    /// Cancelled by an admin; results so far are kept.
    Cancelled,
    /// No poller claimed the job in time.
    Expired,
}

macro_rules! statuses {
    ($($v:ident),*) => {
        impl From<DomainStatus> for SweepStatus {
            fn from(s: DomainStatus) -> Self {
                match s { $(DomainStatus::$v => SweepStatus::$v,)* }
            }
        }
        impl From<SweepStatus> for DomainStatus {
            fn from(s: SweepStatus) -> Self {
                match s { $(SweepStatus::$v => DomainStatus::$v,)* }
            }
        }
    };
}
statuses!(
    Queued,
    Dispatched,
    Acknowledged,
    Running,
    Completed,
    Failed,
    TimedOut,
    Cancelled,
    Expired
);

/// A sweep run.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct SweepRun {
    /// The run id (a random UUID).
    pub id: ID,
    /// Where it is.
    pub status: SweepStatus,
    /// The poller.
    pub poller_id: String,
    /// The agent behind the poller.
    pub agent_id: Option<String>,
    /// Targets as given (normalized).
    pub targets: Vec<String>,
    /// The group whose members were swept.
    pub group_id: Option<ID>,
    /// Every address swept, as disjoint ranges.
    pub hosts: Vec<String>,
    /// How many addresses.
    pub hosts_total: i64,
    /// Hosts with results so far.
    pub hosts_done: i64,
    /// Hosts with an open port or an ICMP reply.
    pub hosts_up: i64,
    /// TCP ports.
    pub ports: Vec<i32>,
    /// Whether hosts are pinged.
    pub icmp: bool,
    /// Connect timeout per probe.
    pub timeout_ms: i32,
    /// Probes in flight.
    pub concurrency: i32,
    /// Days results are kept after the run ends.
    pub retention_days: i32,
    /// The idempotency key.
    pub idempotency_key: String,
    /// Why it was asked for.
    pub reason: Option<String>,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub scheduled_at: DateTime<Utc>,
    /// When it must have ended.
    pub deadline: DateTime<Utc>,
    /// When an unclaimed job expires (once dispatched).
    pub claim_by: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub failure_code: Option<String>,
    /// The failure's (or the cancel's) message.
    pub failure_message: Option<String>,
    /// Who cancelled it.
    pub cancelled_by: Option<String>,
    /// When its results are (or were) deleted: `retentionDays` after it ended.
    pub results_expire_at: Option<DateTime<Utc>>,
    /// Whether its results were deleted already.
    pub results_purged: bool,
    #[graphql(skip)]
    pub(crate) run_id: uuid::Uuid,
}

impl From<SweepRunView> for SweepRun {
    fn from(r: SweepRunView) -> Self {
        SweepRun {
            id: ID(r.id.to_string()),
            status: r.status.into(),
            poller_id: r.poller_id,
            agent_id: r.agent_id,
            targets: r.targets,
            group_id: r.group_id.map(|g| ID(g.to_string())),
            hosts: r.hosts,
            hosts_total: r.hosts_total,
            hosts_done: r.hosts_done,
            hosts_up: r.hosts_up,
            ports: r.ports,
            icmp: r.icmp,
            timeout_ms: r.timeout_ms,
            concurrency: r.concurrency,
            retention_days: r.retention_days,
            idempotency_key: r.idempotency_key,
            reason: r.reason,
            requested_by: r.requested_by,
            scheduled_at: r.scheduled_at,
            deadline: r.deadline,
            claim_by: r.claim_by,
            ended_at: r.ended_at,
            failure_code: r.failure_code,
            failure_message: r.failure_message,
            cancelled_by: r.cancelled_by,
            results_expire_at: r
                .ended_at
                .map(|e| e + TimeDelta::days(i64::from(r.retention_days))),
            results_purged: r.results_purged_at.is_some(),
            run_id: r.id,
        }
    }
}

/// One host's result.
#[derive(SimpleObject, Clone, Debug)]
pub struct SweepResult {
    /// The host.
    pub host_ip: String,
    /// The target block it belongs to (or the host as /32, /128).
    pub network_cidr: String,
    /// Whether it answered ICMP echo; null when unknown (not asked, or the poller may not
    /// ping).
    pub icmp_available: Option<bool>,
    /// Open TCP ports, ascending.
    pub open_ports: Vec<i32>,
    /// The fastest connect or reply, in milliseconds.
    pub latency_ms: Option<f64>,
    /// What else the poller reported (closed and timed-out port counts).
    pub metadata: Json<serde_json::Value>,
    /// When it was observed.
    pub observed_at: DateTime<Utc>,
}

impl From<HostResultView> for SweepResult {
    fn from(r: HostResultView) -> Self {
        let mut ports = r.open_ports;
        ports.sort_unstable();
        SweepResult {
            host_ip: r.host_ip,
            network_cidr: r.network_cidr,
            icmp_available: r.icmp_available,
            open_ports: ports,
            latency_ms: r.latency_ms.map(f64::from),
            metadata: Json(r.metadata),
            observed_at: r.observed_at,
        }
    }
}

/// One result in a page.
#[derive(SimpleObject, Clone, Debug)]
pub struct SweepResultEdge {
    /// Opaque position, for `after`.
    pub cursor: String,
    /// The result.
    pub node: SweepResult,
}

/// A page of results, by address.
#[derive(SimpleObject, Clone, Debug)]
pub struct SweepResultConnection {
    /// The results.
    pub edges: Vec<SweepResultEdge>,
    /// Where this page stands.
    pub page_info: PageInfo,
    /// Results in all pages (with `openOnly`, hosts with an open port).
    pub total_count: i64,
}

fn encode(s: &str) -> String {
    hex::encode(s)
}

fn decode(s: &str) -> Result<String> {
    hex::decode(s)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            coded(
                ErrorCode::BadUserInput,
                "after is not a cursor of this list",
            )
        })
}

#[ComplexObject]
impl SweepRun {
    /// The global id (for `node`/`nodes`); `id` stays the run's UUID.
    pub(crate) async fn node_id(&self) -> async_graphql::ID {
        crate::graphql::node::global_id("SweepRun", &self.id)
    }

    /// The run's results by address (`openOnly`: hosts with an open port). Empty once the
    /// retention deleted them.
    #[graphql(
        complexity = "i64::from(first.unwrap_or(DEFAULT_PAGE)).max(1) as usize * child_complexity + 1"
    )]
    async fn results(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        #[graphql(default)] open_only: bool,
    ) -> Result<SweepResultConnection> {
        let first = page_size(first)?;
        let after = after.as_deref().map(decode).transpose()?;
        if let Some(a) = &after {
            if a.parse::<std::net::IpAddr>().is_err() {
                return Err(coded(
                    ErrorCode::BadUserInput,
                    "after is not a cursor of this list",
                ));
            }
        }
        let pool = ctx.data_unchecked::<PgPool>();
        let mut rows = read::results(pool, self.run_id, open_only, first + 1, after.as_deref())
            .await
            .map_err(internal)?;
        let total = read::results_count(pool, self.run_id, open_only)
            .await
            .map_err(internal)?;
        let has_next_page = rows.len() as i64 > first;
        rows.truncate(first as usize);
        let edges: Vec<SweepResultEdge> = rows
            .into_iter()
            .map(|r| SweepResultEdge {
                cursor: encode(&r.host_ip),
                node: r.into(),
            })
            .collect();
        Ok(SweepResultConnection {
            page_info: PageInfo {
                has_next_page,
                has_previous_page: after.is_some(),
                start_cursor: edges.first().map(|e| e.cursor.clone()),
                end_cursor: edges.last().map(|e| e.cursor.clone()),
            },
            edges,
            total_count: total,
        })
    }
}

/// One run in a page.
#[derive(SimpleObject, Clone, Debug)]
pub struct SweepRunEdge {
    /// Opaque position, for `after`.
    pub cursor: String,
    /// The run.
    pub node: SweepRun,
}

/// A page of runs, newest first.
#[derive(SimpleObject, Clone, Debug)]
pub struct SweepRunConnection {
    /// The runs.
    pub edges: Vec<SweepRunEdge>,
    /// Where this page stands.
    pub page_info: PageInfo,
    /// Runs in all pages.
    pub total_count: i64,
}

fn run_cursor(r: &SweepRunView) -> String {
    encode(&format!("{}|{}", r.scheduled_at.timestamp_micros(), r.id))
}

/// Reads a `sweepRuns` cursor.
pub(super) fn decode_run_cursor(s: &str) -> Result<RunCursor> {
    let raw = decode(s)?;
    let bad = || {
        coded(
            ErrorCode::BadUserInput,
            "after is not a cursor of this list",
        )
    };
    let (micros, id) = raw.split_once('|').ok_or_else(bad)?;
    Ok(RunCursor {
        scheduled_at: DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?)
            .ok_or_else(bad)?,
        id: id.parse().map_err(|_| bad())?,
    })
}

impl SweepRunConnection {
    /// A page from `size + 1` rows read `paging`'s way (nearest first when backward).
    pub(super) fn page(mut rows: Vec<SweepRunView>, paging: &Paging, total: i64) -> Self {
        let more = rows.len() as i64 > paging.size;
        rows.truncate(paging.size as usize);
        if paging.backward {
            rows.reverse();
        }
        let edges: Vec<SweepRunEdge> = rows
            .into_iter()
            .map(|r| SweepRunEdge {
                cursor: run_cursor(&r),
                node: r.into(),
            })
            .collect();
        SweepRunConnection {
            page_info: page_info(
                paging,
                more,
                edges.first().map(|e| e.cursor.clone()),
                edges.last().map(|e| e.cursor.clone()),
            ),
            edges,
            total_count: total,
        }
    }
}

/// A run's progress, as `sweepProgress` streams it.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct SweepProgress {
    /// The run.
    pub run_id: ID,
    /// Where it is.
    pub status: SweepStatus,
    /// Hosts with results.
    pub hosts_done: i64,
    /// Addresses in all.
    pub hosts_total: i64,
    /// Hosts with an open port or an ICMP reply.
    pub hosts_up: i64,
}

impl From<&SweepRunView> for SweepProgress {
    fn from(r: &SweepRunView) -> Self {
        SweepProgress {
            run_id: ID(r.id.to_string()),
            status: r.status.into(),
            hosts_done: r.hosts_done,
            hosts_total: r.hosts_total,
            hosts_up: r.hosts_up,
        }
    }
}
