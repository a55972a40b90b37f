//! Queries over `sweep_runs` and `sweep_results`.

use chrono::{DateTime, Utc};
use corral_domain::sweep::SweepStatus;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::StoreError;

/// A run as queries return it.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRunView {
    /// Run id.
    pub id: Uuid,
    /// Where it is.
    pub status: SweepStatus,
    /// Its poller.
    pub poller_id: String,
    /// Its agent.
    pub agent_id: Option<String>,
    /// Targets as given (normalized).
    pub targets: Vec<String>,
    /// The group swept.
    pub group_id: Option<Uuid>,
    /// Addresses swept, as disjoint ranges.
    pub hosts: Vec<String>,
    /// How many.
    pub hosts_total: i64,
    /// Hosts with results so far.
    pub hosts_done: i64,
    /// Hosts with an open port or an ICMP reply.
    pub hosts_up: i64,
    /// Ports.
    pub ports: Vec<i32>,
    /// Ping?
    pub icmp: bool,
    /// Connect timeout.
    pub timeout_ms: i32,
    /// Concurrent probes.
    pub concurrency: i32,
    /// Days results are kept after the run ends.
    pub retention_days: i32,
    /// Its idempotency key.
    pub idempotency_key: String,
    /// Why.
    pub reason: Option<String>,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub scheduled_at: DateTime<Utc>,
    /// When it must have ended.
    pub deadline: DateTime<Utc>,
    /// Its job key, once dispatched.
    pub job_key: Option<String>,
    /// When an unclaimed job expires.
    pub claim_by: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub failure_code: Option<String>,
    /// Failure or cancel message.
    pub failure_message: Option<String>,
    /// Who cancelled it.
    pub cancelled_by: Option<String>,
    /// When its results were deleted (retention).
    pub results_purged_at: Option<DateTime<Utc>>,
    /// Aggregate version.
    pub version: i64,
}

const COLUMNS: &str = "id, status, poller_id, agent_id, targets, group_id, hosts, hosts_total, \
    hosts_done, hosts_up, ports, icmp, timeout_ms, concurrency, retention_days, idempotency_key, \
    reason, requested_by, scheduled_at, deadline, job_key, claim_by, ended_at, failure_code, \
    failure_message, cancelled_by, results_purged_at, version";

fn from_row(r: &PgRow) -> Result<SweepRunView, StoreError> {
    let status: String = r.try_get("status")?;
    Ok(SweepRunView {
        id: r.try_get("id")?,
        status: SweepStatus::parse(&status)
            .ok_or_else(|| StoreError::Data(format!("sweep status {status}")))?,
        poller_id: r.try_get("poller_id")?,
        agent_id: r.try_get("agent_id")?,
        targets: r.try_get("targets")?,
        group_id: r.try_get("group_id")?,
        hosts: r.try_get("hosts")?,
        hosts_total: r.try_get("hosts_total")?,
        hosts_done: r.try_get("hosts_done")?,
        hosts_up: r.try_get("hosts_up")?,
        ports: r.try_get("ports")?,
        icmp: r.try_get("icmp")?,
        timeout_ms: r.try_get("timeout_ms")?,
        concurrency: r.try_get("concurrency")?,
        retention_days: r.try_get("retention_days")?,
        idempotency_key: r.try_get("idempotency_key")?,
        reason: r.try_get("reason")?,
        requested_by: r.try_get("requested_by")?,
        scheduled_at: r.try_get("scheduled_at")?,
        deadline: r.try_get("deadline")?,
        job_key: r.try_get("job_key")?,
        claim_by: r.try_get("claim_by")?,
        ended_at: r.try_get("ended_at")?,
        failure_code: r.try_get("failure_code")?,
        failure_message: r.try_get("failure_message")?,
        cancelled_by: r.try_get("cancelled_by")?,
        results_purged_at: r.try_get("results_purged_at")?,
        version: r.try_get("version")?,
    })
}

/// One run.
pub async fn by_id(pool: &PgPool, id: Uuid) -> Result<Option<SweepRunView>, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM sweep_runs WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Runs waiting for dispatch, oldest first.
pub async fn queued_runs(pool: &PgPool, limit: i64) -> Result<Vec<SweepRunView>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM sweep_runs WHERE status = 'QUEUED'
          ORDER BY scheduled_at, id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Runs that have not ended but should have at `now`: past their deadline, or dispatched
/// and not claimed in time.
pub async fn overdue_runs(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<SweepRunView>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM sweep_runs
          WHERE status IN ('QUEUED', 'DISPATCHED', 'ACKNOWLEDGED', 'RUNNING')
            AND (deadline <= $1 OR (status = 'DISPATCHED' AND claim_by <= $1))
          ORDER BY deadline LIMIT $2"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// A page position: the newest-first order is `(scheduled_at DESC, id DESC)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunCursor {
    /// Scheduled at.
    pub scheduled_at: DateTime<Utc>,
    /// Run id.
    pub id: Uuid,
}

/// Up to `limit` runs, newest first, filtered by status and poller, after `after`, and how
/// many match in all.
pub async fn list(
    pool: &PgPool,
    status: Option<SweepStatus>,
    poller_id: Option<&str>,
    limit: i64,
    after: Option<RunCursor>,
) -> Result<(Vec<SweepRunView>, i64), StoreError> {
    list_within(pool, status, poller_id, limit, after, false, None).await
}

/// The SQL condition "every target of the run lies within the subtrees of `$param`" (a
/// `uuid[]` of roots): the run sweeps a group (`group_id`) in the subtree of one of the roots,
/// and no addresses of its own (`targets` empty: addresses belong to no group, so only a
/// caller who reaches everything sees them).
pub fn run_within_sql(param: &str) -> String {
    format!(
        "(cardinality(targets) = 0 AND group_id IN \
           (SELECT rc.descendant_id FROM {}.group_closure rc \
             WHERE rc.ancestor_id = ANY({param}::uuid[])))",
        crate::group_tree::LIVE_SCHEMA
    )
}

/// [`list`] of the runs whose targets all lie within the subtrees of `roots` (see
/// [`run_within_sql`]); `None` for every run (no extra condition at all). `backward`
/// (`last`/`before`): the runs before `after` in list order (newer ones), nearest first.
pub async fn list_within(
    pool: &PgPool,
    status: Option<SweepStatus>,
    poller_id: Option<&str>,
    limit: i64,
    after: Option<RunCursor>,
    backward: bool,
    roots: Option<&[Uuid]>,
) -> Result<(Vec<SweepRunView>, i64), StoreError> {
    // The list runs newest first: backward reads toward newer runs, oldest of them first.
    let (cmp, order) = if backward {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    // The roots are `$6` in the page and `$3` in the count.
    let filter = |roots_param: &str| {
        let mut f = "($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR poller_id = $2)"
            .to_string();
        if roots.is_some() {
            f += &format!(" AND {}", run_within_sql(roots_param));
        }
        f
    };
    let page_sql = format!(
        "SELECT {COLUMNS} FROM sweep_runs
          WHERE {}
            AND ($4::timestamptz IS NULL OR (scheduled_at, id) {cmp} ($4, $5::uuid))
          ORDER BY scheduled_at {order}, id {order} LIMIT $3",
        filter("$6")
    );
    let rows = sqlx::query(&page_sql)
        .bind(status.map(SweepStatus::as_str))
        .bind(poller_id)
        .bind(limit)
        .bind(after.map(|a| a.scheduled_at))
        .bind(after.map(|a| a.id));
    let rows = match roots {
        Some(r) => rows.bind(r),
        None => rows,
    }
    .fetch_all(pool)
    .await?;
    let count_sql = format!("SELECT count(*) FROM sweep_runs WHERE {}", filter("$3"));
    let count = sqlx::query_scalar(&count_sql)
        .bind(status.map(SweepStatus::as_str))
        .bind(poller_id);
    let total: i64 = match roots {
        Some(r) => count.bind(r),
        None => count,
    }
    .fetch_one(pool)
    .await?;
    Ok((rows.iter().map(from_row).collect::<Result<_, _>>()?, total))
}

/// One host's result.
#[derive(Debug, Clone, PartialEq)]
pub struct HostResultView {
    /// The host.
    pub host_ip: String,
    /// The target block it was filed under.
    pub network_cidr: String,
    /// ICMP reply: yes, no, or unknown (`None`: not asked, or the poller cannot ping).
    pub icmp_available: Option<bool>,
    /// Open TCP ports.
    pub open_ports: Vec<i32>,
    /// Fastest connect or reply, in ms.
    pub latency_ms: Option<f32>,
    /// What else the poller reported.
    pub metadata: serde_json::Value,
    /// When.
    pub observed_at: DateTime<Utc>,
}

/// Up to `limit` results of `run` by address, after address `after`; `open_only` keeps hosts
/// with an open port.
pub async fn results(
    pool: &PgPool,
    run: Uuid,
    open_only: bool,
    limit: i64,
    after: Option<&str>,
) -> Result<Vec<HostResultView>, StoreError> {
    let rows = sqlx::query(
        "SELECT host(r.host_ip) AS host, r.network_cidr::text AS network_cidr,
                r.icmp_available, r.open_ports, r.latency_ms, r.metadata, r.observed_at
           FROM sweep_results r
          WHERE r.run_id = $1 AND (NOT $2 OR cardinality(r.open_ports) > 0)
            AND ($4::inet IS NULL OR r.host_ip > $4::inet)
          ORDER BY r.host_ip LIMIT $3",
    )
    .bind(run)
    .bind(open_only)
    .bind(limit)
    .bind(after)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(HostResultView {
                host_ip: r.try_get("host")?,
                network_cidr: r.try_get("network_cidr")?,
                icmp_available: r.try_get("icmp_available")?,
                open_ports: r.try_get("open_ports")?,
                latency_ms: r.try_get("latency_ms")?,
                metadata: r.try_get("metadata")?,
                observed_at: r.try_get("observed_at")?,
            })
        })
        .collect()
}

/// How many results of `run` match.
pub async fn results_count(pool: &PgPool, run: Uuid, open_only: bool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM sweep_results
          WHERE run_id = $1 AND (NOT $2 OR cardinality(open_ports) > 0)",
    )
    .bind(run)
    .bind(open_only)
    .fetch_one(pool)
    .await?)
}

/// The IP addresses of the device members of `group` and its descendants (effective
/// membership), and how many such devices have none (or one that does not parse).
pub async fn group_device_ips(
    pool: &PgPool,
    group: Uuid,
) -> Result<(Vec<std::net::IpAddr>, u64), StoreError> {
    // Members the inventory no longer has (removed, or never fed) have no address either.
    let rows: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT DISTINCT ON (m.member_id) d.ip
           FROM rm_group_tree.group_closure c
           JOIN rm_membership.direct m ON m.group_id = c.descendant_id
           LEFT JOIN devices d ON d.id = m.member_id AND d.removed_at IS NULL
          WHERE c.ancestor_id = $1
          ORDER BY m.member_id",
    )
    .bind(group)
    .fetch_all(pool)
    .await?;
    let mut ips = Vec::with_capacity(rows.len());
    let mut skipped = 0;
    for ip in rows {
        match ip.as_deref().map(str::trim).and_then(|s| {
            // Inventories write `10.0.0.1` or `10.0.0.1/24`.
            s.split('/').next().and_then(|a| a.parse().ok())
        }) {
            Some(ip) => ips.push(ip),
            None => skipped += 1,
        }
    }
    Ok((ips, skipped))
}
