//! Membership queries against the naive recursive CTEs over the parent links: the effective
//! first page, the effective count and the reverse lookup.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use corral_api::runtime::BoxError;
use corral_projections::membership::read::{self, Mode};
use sqlx::{PgPool, Row as _};
use uuid::Uuid;

use super::{latency_rows, sample, Row};

/// The naive effective first page: the subtree by a recursive CTE over parent links, then a
/// distinct sort of every direct row in it.
const CTE_PAGE: &str = "WITH RECURSIVE sub AS (
        SELECT id FROM rm_group_tree.groups WHERE id = $1
        UNION ALL SELECT g.id FROM rm_group_tree.groups g JOIN sub ON g.parent_id = sub.id)
    SELECT DISTINCT d.member_id FROM rm_membership.direct d JOIN sub ON d.group_id = sub.id
     ORDER BY d.member_id LIMIT 50";

const CTE_COUNT: &str = "WITH RECURSIVE sub AS (
        SELECT id FROM rm_group_tree.groups WHERE id = $1
        UNION ALL SELECT g.id FROM rm_group_tree.groups g JOIN sub ON g.parent_id = sub.id)
    SELECT count(DISTINCT d.member_id) FROM rm_membership.direct d JOIN sub ON d.group_id = sub.id";

/// The groups a member belongs to, walking up the parent links from its direct groups.
const CTE_REVERSE: &str = "WITH RECURSIVE up AS (
        SELECT d.group_id AS id FROM rm_membership.direct d WHERE d.member_id = $1
        UNION SELECT g.parent_id FROM rm_group_tree.groups g JOIN up ON g.id = up.id
         WHERE g.parent_id IS NOT NULL)
    SELECT id FROM up ORDER BY id";

/// Effective first page (50) of `group`: `read::page` against the CTE, `runs` times each (the
/// CTE at most `budget`), checking that both give the same members.
pub(super) async fn first_page(
    pool: &PgPool,
    label: &str,
    group: Uuid,
    runs: usize,
    budget: Duration,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let first = Instant::now();
    let ours: Vec<String> = read::page(pool, group, Mode::Effective, None, 50, None)
        .await?
        .into_iter()
        .map(|m| m.member_id)
        .collect();
    let first_ms = first.elapsed().as_secs_f64() * 1000.0;
    let naive: Vec<String> = sqlx::query_scalar(CTE_PAGE)
        .bind(group)
        .fetch_all(pool)
        .await?;
    if ours != naive {
        return Err(
            format!("effective first page of {label}: read::page and the CTE disagree").into(),
        );
    }
    // A page that takes a good part of the budget is not run again: its check was the run.
    let corral = if first_ms > budget.as_secs_f64() * 250.0 {
        vec![first_ms]
    } else {
        sample(runs, budget, || async {
            read::page(pool, group, Mode::Effective, None, 50, None).await?;
            Ok(())
        })
        .await?
    };
    let baseline = sample(runs, budget, || async {
        sqlx::query(CTE_PAGE).bind(group).fetch_all(pool).await?;
        Ok(())
    })
    .await?;
    latency_rows(
        rows,
        &format!("effective members, first page of 50, {label}"),
        &corral,
        "recursive CTE + DISTINCT/ORDER BY/LIMIT",
        &baseline,
        Some("< 5 ms"),
    );
    Ok(())
}

/// `memberCount(EFFECTIVE)` of `group` against the naive CTE count.
pub(super) async fn count(
    pool: &PgPool,
    label: &str,
    group: Uuid,
    runs: usize,
    budget: Duration,
    rows: &mut Vec<Row>,
) -> Result<i64, BoxError> {
    let ours = read::count(pool, group, Mode::Effective, None).await?;
    let naive: i64 = sqlx::query_scalar(CTE_COUNT)
        .bind(group)
        .fetch_one(pool)
        .await?;
    if ours != naive {
        return Err(format!(
            "effective count of {label}: {ours} by read::count, {naive} by the CTE"
        )
        .into());
    }
    let corral = sample(runs, budget, || async {
        read::count(pool, group, Mode::Effective, None).await?;
        Ok(())
    })
    .await?;
    let baseline = sample(runs, budget, || async {
        sqlx::query(CTE_COUNT).bind(group).fetch_one(pool).await?;
        Ok(())
    })
    .await?;
    let p50 = |v: &[f64]| super::percentile(v, 0.5);
    rows.push(Row {
        name: format!(
            "memberCount(EFFECTIVE), {label} ({ours} members), p50 of {} (ms)",
            corral.len()
        ),
        corral: format!("{:.1}", p50(&corral)),
        baseline_name: format!(
            "recursive CTE + count(DISTINCT), p50 of {} (ms)",
            baseline.len()
        ),
        baseline: format!("{:.1}", p50(&baseline)),
        ratio: p50(&corral) / p50(&baseline),
        target: "-".into(),
    });
    Ok(ours)
}

/// `groups_of(EFFECTIVE)` of single members against the CTE walking up parent links.
pub(super) async fn reverse(
    pool: &PgPool,
    members: &[String],
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    for m in members.iter().take(20) {
        let ours: BTreeSet<Uuid> = read::groups_of(pool, std::slice::from_ref(m), Mode::Effective)
            .await?
            .remove(m)
            .unwrap_or_default()
            .into_iter()
            .map(|b| b.group_id)
            .collect();
        let naive: BTreeSet<Uuid> = sqlx::query(CTE_REVERSE)
            .bind(m)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| r.try_get::<Uuid, _>("id"))
            .collect::<Result<_, _>>()?;
        if ours != naive {
            return Err(format!("groups of {m}: groups_of and the CTE disagree").into());
        }
    }
    let mut i = 0usize;
    let corral = sample(members.len(), Duration::from_secs(60), || {
        i += 1;
        let m = members[i % members.len()].clone();
        async move {
            read::groups_of(pool, &[m], Mode::Effective).await?;
            Ok(())
        }
    })
    .await?;
    let mut j = 0usize;
    let baseline = sample(members.len(), Duration::from_secs(60), || {
        j += 1;
        let m = members[j % members.len()].clone();
        async move {
            sqlx::query(CTE_REVERSE).bind(m).fetch_all(pool).await?;
            Ok(())
        }
    })
    .await?;
    latency_rows(
        rows,
        "reverse lookup groupsOf(EFFECTIVE), one device",
        &corral,
        "recursive CTE up the parent links",
        &baseline,
        None,
    );
    Ok(())
}
