//! Storing what pollers report: each host of a run once, with the run's progress, in one
//! transaction per report.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::StoreError;

/// One host's result as a poller reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewResult {
    /// The host.
    pub host_ip: std::net::IpAddr,
    /// The target block it belongs to (`127.0.0.0/28`, or the host as /32).
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
    /// Hosts dropped: the run had ended, or is unknown.
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

/// Stores `results` of `run`: hosts the run has not stored yet, while the run has not ended,
/// adding to its progress. Safe to repeat.
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
    let scheduled: Option<(DateTime<Utc>, String)> =
        sqlx::query_as("SELECT scheduled_at, status FROM sweep_runs WHERE id = $1")
            .bind(run)
            .fetch_optional(pool)
            .await?;
    let Some((scheduled_at, _)) = scheduled else {
        return Ok(Recorded {
            dropped: results.len() as u64,
            ..Default::default()
        });
    };
    // A poller's clock may be off: observations outside [scheduled - 1 h, now + 5 min] are
    // filed at now, so that no partition is needed far from today.
    let lo = scheduled_at - TimeDelta::hours(1);
    let hi = now + TimeDelta::minutes(5);
    let observed: Vec<DateTime<Utc>> = results
        .iter()
        .map(|r| {
            if r.observed_at < lo || r.observed_at > hi {
                now
            } else {
                r.observed_at
            }
        })
        .collect();
    let (min, max) = observed
        .iter()
        .fold((now, now), |(a, b), t| (a.min(*t), b.max(*t)));
    ensure_partitions(pool, min, max).await?;

    let mut tx = pool.begin().await?;
    // The run's row is locked first, so that a concurrent terminal transition and the
    // progress never interleave; an ended run takes no more results.
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM sweep_runs WHERE id = $1 FOR UPDATE")
            .bind(run)
            .fetch_optional(&mut *tx)
            .await?;
    let open = matches!(
        status.as_deref(),
        Some("QUEUED" | "DISPATCHED" | "ACKNOWLEDGED" | "RUNNING")
    );
    if !open {
        return Ok(Recorded {
            dropped: results.len() as u64,
            ..Default::default()
        });
    }
    let ips: Vec<String> = results.iter().map(|r| r.host_ip.to_string()).collect();
    let fresh: Vec<String> = sqlx::query_scalar(
        "INSERT INTO sweep_result_hosts (run_id, host_ip)
         SELECT $1, h::inet FROM unnest($2::text[]) AS h
         ON CONFLICT DO NOTHING RETURNING host(host_ip)",
    )
    .bind(run)
    .bind(&ips)
    .fetch_all(&mut *tx)
    .await?;
    let fresh: std::collections::HashSet<String> = fresh.into_iter().collect();
    let keep: Vec<usize> = (0..results.len())
        .filter(|&i| fresh.contains(&results[i].host_ip.to_string()))
        .collect();
    if !keep.is_empty() {
        let pick = |f: &dyn Fn(usize) -> String| keep.iter().map(|&i| f(i)).collect::<Vec<_>>();
        let up = keep
            .iter()
            .filter(|&&i| {
                !results[i].open_ports.is_empty() || results[i].icmp_available == Some(true)
            })
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
        .bind(pick(&|i| results[i].host_ip.to_string()))
        .bind(pick(&|i| results[i].network_cidr.clone()))
        .bind(
            keep.iter()
                .map(|&i| results[i].icmp_available)
                .collect::<Vec<_>>(),
        )
        .bind(pick(&|i| {
            let ports: Vec<String> = results[i].open_ports.iter().map(u16::to_string).collect();
            format!("{{{}}}", ports.join(","))
        }))
        .bind(
            keep.iter()
                .map(|&i| results[i].latency_ms)
                .collect::<Vec<_>>(),
        )
        .bind(
            keep.iter()
                .map(|&i| results[i].metadata.clone())
                .collect::<Vec<_>>(),
        )
        .bind(keep.iter().map(|&i| observed[i]).collect::<Vec<_>>())
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
        duplicates: (results.len() - keep.len()) as u64,
        dropped: 0,
    })
}
