//! Storing what pollers report: each host of a run once, with the run's progress, in one
//! transaction per report.

use std::collections::HashSet;
use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};
use corral_domain::sweep::targets::{network_of, Cidr, Interval, Target};
use sqlx::PgPool;
use uuid::Uuid;

use crate::StoreError;

/// One host's result as a poller reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewResult {
    /// The host.
    pub host_ip: std::net::IpAddr,
    /// The target block it belongs to, as the poller says (the store works it out again from
    /// the run's targets).
    pub network_cidr: String,
    /// ICMP reply, or unknown.
    pub icmp_available: Option<bool>,
    /// Open TCP ports.
    pub open_ports: Vec<u16>,
    /// Fastest connect or reply, in ms.
    pub latency_ms: Option<f32>,
    /// Anything else.
    pub metadata: serde_json::Value,
    /// When it was observed (outside the run's lifetime it is stored as now).
    pub observed_at: DateTime<Utc>,
}

/// What storing a report did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Hosts stored now.
    pub stored: u64,
    /// Hosts the run already had (a poller re-sent them).
    pub duplicates: u64,
    /// Hosts dropped: the run had ended or is unknown, or the host is not one of its
    /// addresses.
    pub dropped: u64,
}

/// Creates the result partitions for the days from `from` to `to`.
pub async fn ensure_partitions(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<i32, StoreError> {
    Ok(sqlx::query_scalar("SELECT corral_sweep_partitions($1, $2)")
        .bind(from.date_naive())
        .bind(to.date_naive())
        .fetch_one(pool)
        .await?)
}

/// What a run accepts results for: its addresses and the target blocks results are filed
/// under.
struct Scope {
    hosts: Vec<Interval>,
    blocks: Vec<Cidr>,
}

impl Scope {
    fn of(hosts: &[String], targets: &[String]) -> Scope {
        let hosts = hosts
            .iter()
            .filter_map(|h| h.parse::<Target>().ok())
            .map(|t| t.interval())
            .collect();
        let blocks = targets
            .iter()
            .filter_map(|t| match t.parse::<Target>() {
                Ok(Target::Block(c)) => Some(c),
                _ => None,
            })
            .collect();
        Scope { hosts, blocks }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let one = Target::Host(ip).interval();
        self.hosts.iter().any(|i| i.contains(&one))
    }
}

/// Whether the run has a committed terminal event (whatever the read model says yet).
async fn ended(conn: &mut sqlx::PgConnection, run: Uuid) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events
                         WHERE aggregate_type = 'SweepRun' AND aggregate_id = $1
                           AND event_type IN ('SweepCompleted', 'SweepFailed', 'SweepTimedOut',
                                              'SweepCancelled', 'SweepExpired'))",
    )
    .bind(run.to_string())
    .fetch_one(&mut *conn)
    .await?)
}

/// Stores `results` of `run`: each host of the run's addresses once (repeats, in this batch
/// or earlier ones, count as duplicates; hosts outside the run are dropped), filed under the
/// run's smallest target block that holds it (worked out here, not taken from the poller),
/// while the run has not ended, adding to its progress. Safe to repeat.
#[tracing::instrument(skip_all, fields(sweep.run_id = %run, sweep.results = results.len()), err)]
pub async fn record(
    pool: &PgPool,
    run: Uuid,
    results: &[NewResult],
    now: DateTime<Utc>,
) -> Result<Recorded, StoreError> {
    if results.is_empty() {
        return Ok(Recorded::default());
    }
    let row: Option<(DateTime<Utc>, Vec<String>, Vec<String>)> =
        sqlx::query_as("SELECT scheduled_at, hosts, targets FROM sweep_runs WHERE id = $1")
            .bind(run)
            .fetch_optional(pool)
            .await?;
    let Some((scheduled_at, hosts, targets)) = row else {
        return Ok(Recorded {
            dropped: results.len() as u64,
            ..Default::default()
        });
    };
    let scope = Scope::of(&hosts, &targets);
    let mut seen = HashSet::new();
    let mut duplicates = 0u64;
    let mut dropped = 0u64;
    let mut batch: Vec<NewResult> = Vec::with_capacity(results.len());
    for r in results {
        if !scope.contains(r.host_ip) {
            dropped += 1;
        } else if !seen.insert(r.host_ip) {
            duplicates += 1;
        } else {
            let mut r = r.clone();
            r.network_cidr = network_of(r.host_ip, &scope.blocks).to_string();
            // jsonb refuses \u0000; a poller's free-form detail is not worth losing a result.
            if !r.metadata.is_object() || r.metadata.to_string().contains("\\u0000") {
                r.metadata = serde_json::json!({});
            }
            // A poller's clock may be off: observations outside [scheduled - 1 h, now + 5 min]
            // are filed at now, so that no partition is needed far from today.
            if r.observed_at < scheduled_at - TimeDelta::hours(1)
                || r.observed_at > now + TimeDelta::minutes(5)
            {
                r.observed_at = now;
            }
            batch.push(r);
        }
    }
    if batch.is_empty() {
        return Ok(Recorded {
            stored: 0,
            duplicates,
            dropped,
        });
    }
    let (min, max) = batch.iter().fold((now, now), |(a, b), r| {
        (a.min(r.observed_at), b.max(r.observed_at))
    });
    ensure_partitions(pool, min, max).await?;

    let mut tx = pool.begin().await?;
    // The run's row is locked first, so that progress updates of one run never interleave;
    // a run with a committed end takes no more results, even before the read model shows it.
    sqlx::query("SELECT 1 FROM sweep_runs WHERE id = $1 FOR UPDATE")
        .bind(run)
        .execute(&mut *tx)
        .await?;
    if ended(&mut tx, run).await? {
        return Ok(Recorded {
            stored: 0,
            duplicates,
            dropped: dropped + batch.len() as u64,
        });
    }
    let ips: Vec<String> = batch.iter().map(|r| r.host_ip.to_string()).collect();
    let fresh: Vec<String> = sqlx::query_scalar(
        "INSERT INTO sweep_result_hosts (run_id, host_ip)
         SELECT $1, h::inet FROM unnest($2::text[]) AS h
         ON CONFLICT DO NOTHING RETURNING host(host_ip)",
    )
    .bind(run)
    .bind(&ips)
    .fetch_all(&mut *tx)
    .await?;
    // Compared as addresses: PostgreSQL and Rust may write one address differently.
    let fresh: HashSet<IpAddr> = fresh.iter().filter_map(|h| h.parse().ok()).collect();
    let keep: Vec<&NewResult> = batch
        .iter()
        .filter(|r| fresh.contains(&r.host_ip))
        .collect();
    duplicates += (batch.len() - keep.len()) as u64;
    if !keep.is_empty() {
        let up = keep
            .iter()
            .filter(|r| !r.open_ports.is_empty() || r.icmp_available == Some(true))
            .count() as i64;
        sqlx::query(
            "INSERT INTO sweep_results (run_id, host_ip, network_cidr, icmp_available,
                    open_ports, latency_ms, metadata, observed_at)
             SELECT $1, u.ip::inet, u.net::cidr, u.icmp, u.ports::integer[], u.latency,
                    u.meta, u.at
               FROM unnest($2::text[], $3::text[], $4::bool[], $5::text[], $6::real[],
                           $7::jsonb[], $8::timestamptz[])
                    AS u(ip, net, icmp, ports, latency, meta, at)",
        )
        .bind(run)
        .bind(
            keep.iter()
                .map(|r| r.host_ip.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(
            keep.iter()
                .map(|r| r.network_cidr.clone())
                .collect::<Vec<_>>(),
        )
        .bind(keep.iter().map(|r| r.icmp_available).collect::<Vec<_>>())
        .bind(
            keep.iter()
                .map(|r| {
                    let ports: Vec<String> = r.open_ports.iter().map(u16::to_string).collect();
                    format!("{{{}}}", ports.join(","))
                })
                .collect::<Vec<_>>(),
        )
        .bind(keep.iter().map(|r| r.latency_ms).collect::<Vec<_>>())
        .bind(keep.iter().map(|r| r.metadata.clone()).collect::<Vec<_>>())
        .bind(keep.iter().map(|r| r.observed_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE sweep_runs SET hosts_done = hosts_done + $2, hosts_up = hosts_up + $3
              WHERE id = $1",
        )
        .bind(run)
        .bind(keep.len() as i64)
        .bind(up)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Recorded {
        stored: keep.len() as u64,
        duplicates,
        dropped,
    })
}
