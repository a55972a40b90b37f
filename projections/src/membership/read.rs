//! Queries over `rm_membership` and the group tree's closure table.
//!
//! Effective members are a distinct union over a subtree, computed per request. One keyset
//! page is answered by whichever of two plans touches fewer rows:
//! - **per group**: walk the subtree's groups and their `(group_id, member_id)` index ranges,
//!   then sort; its cost grows with the rows in the subtree, so it serves leaves and small
//!   subtrees;
//! - **by member**: walk the `(member_id, group_id)` index in member order and keep rows whose
//!   group is in the subtree (one closure-key probe each); its cost grows with
//!   page size / the subtree's share of all rows, so it serves big subtrees.
//!
//! The choice uses the subtree's group count and direct-row count, cached briefly per group
//! (they steer the plan, never the answer).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::LIVE_SCHEMA as M;
use crate::group_tree::LIVE_SCHEMA as T;
use crate::StoreError;

/// One member of a group, with the reason it is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    /// The device or service id.
    pub member_id: String,
    /// `S` (static) or `R` (rule).
    pub source: char,
    /// The group whose direct member it is (the group itself, or a descendant).
    pub via_group: Uuid,
    /// When it became a direct member of `via_group`.
    pub since: DateTime<Utc>,
}

/// Direct members only, or the whole subtree's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The group's own members.
    Direct,
    /// The group's and every descendant's, distinct.
    Effective,
}

/// Subtrees with more direct rows than this are paged by member.
const BY_GROUP_MAX_ROWS: i64 = 20_000;
/// How long plan statistics are reused.
const STATS_TTL: Duration = Duration::from_secs(10);

type StatsCache = Mutex<HashMap<Uuid, (Instant, i64, i64)>>;

fn stats_cache() -> &'static StatsCache {
    static CACHE: std::sync::OnceLock<StatsCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// (groups in the subtree, direct rows in the subtree).
async fn subtree_stats(pool: &PgPool, group: Uuid) -> Result<(i64, i64), StoreError> {
    if let Some((at, groups, rows)) = stats_cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&group)
        .copied()
    {
        if at.elapsed() < STATS_TTL {
            return Ok((groups, rows));
        }
    }
    let row = sqlx::query(&format!(
        "SELECT count(*) AS groups, coalesce(sum(gc.direct_count), 0)::bigint AS rows
           FROM {T}.group_closure c LEFT JOIN {M}.group_counts gc ON gc.group_id = c.descendant_id
          WHERE c.ancestor_id = $1"
    ))
    .bind(group)
    .fetch_one(pool)
    .await?;
    let (groups, rows): (i64, i64) = (row.try_get("groups")?, row.try_get("rows")?);
    let mut cache = stats_cache().lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() > 10_000 {
        cache.clear();
    }
    cache.insert(group, (Instant::now(), groups, rows));
    Ok((groups, rows))
}

fn source_code(source: Option<char>) -> Option<String> {
    source.map(|c| c.to_string())
}

fn member_row(r: &PgRow) -> Result<MemberRow, StoreError> {
    let source: i8 = r.try_get("source")?;
    Ok(MemberRow {
        member_id: r.try_get("member_id")?,
        source: source as u8 as char,
        via_group: r.try_get("group_id")?,
        since: r.try_get("since")?,
    })
}

/// One page of members after `after` (a member id), at most `limit` rows, in member id order
/// (bytewise). `source` keeps only rows of that source (`S` or `R`).
pub async fn page(
    pool: &PgPool,
    group: Uuid,
    mode: Mode,
    source: Option<char>,
    limit: i64,
    after: Option<&str>,
) -> Result<Vec<MemberRow>, StoreError> {
    let after = after.unwrap_or("");
    let source = source_code(source);
    let by_group_direct = format!(
        "SELECT member_id, source, group_id, since FROM {M}.direct
          WHERE group_id = $1 AND member_id > $2 AND ($3::\"char\" IS NULL OR source = $3::\"char\")
          ORDER BY member_id LIMIT $4"
    );
    let sql = match mode {
        Mode::Direct => by_group_direct,
        Mode::Effective => {
            let (groups, rows) = subtree_stats(pool, group).await?;
            if groups <= 1 {
                by_group_direct
            } else if rows <= BY_GROUP_MAX_ROWS {
                format!(
                    "SELECT DISTINCT ON (d.member_id) d.member_id, d.source, d.group_id, d.since
                       FROM {T}.group_closure c JOIN {M}.direct d ON d.group_id = c.descendant_id
                      WHERE c.ancestor_id = $1 AND d.member_id > $2
                        AND ($3::\"char\" IS NULL OR d.source = $3::\"char\")
                      ORDER BY d.member_id, c.depth LIMIT $4"
                )
            } else {
                // The scalar subquery is not flattened into a join: each row costs one probe
                // of the closure's primary key, and the walk stops after the page.
                format!(
                    "SELECT DISTINCT ON (member_id) member_id, source, group_id, since FROM (
                        SELECT d.member_id, d.source, d.group_id, d.since,
                               (SELECT c.depth FROM {T}.group_closure c
                                 WHERE c.ancestor_id = $1 AND c.descendant_id = d.group_id) AS depth
                          FROM {M}.direct d
                         WHERE d.member_id > $2 AND ($3::\"char\" IS NULL OR d.source = $3::\"char\")
                         ORDER BY d.member_id) x
                      WHERE depth IS NOT NULL
                      ORDER BY member_id, depth LIMIT $4"
                )
            }
        }
    };
    let rows = sqlx::query(&sql)
        .bind(group)
        .bind(after)
        .bind(source)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter().map(member_row).collect()
}

/// How many members a group has.
pub async fn count(
    pool: &PgPool,
    group: Uuid,
    mode: Mode,
    source: Option<char>,
) -> Result<i64, StoreError> {
    let source = source_code(source);
    if mode == Mode::Direct && source.is_none() {
        // Kept by the projector: no scan, however big the group.
        let n: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT direct_count FROM {M}.group_counts WHERE group_id = $1"
        ))
        .bind(group)
        .fetch_optional(pool)
        .await?;
        return Ok(n.unwrap_or(0));
    }
    let sql = match mode {
        Mode::Direct => {
            format!("SELECT count(*) FROM {M}.direct WHERE group_id = $1 AND source = $2::\"char\"")
        }
        Mode::Effective => format!(
            "SELECT count(DISTINCT d.member_id)
               FROM {T}.group_closure c JOIN {M}.direct d ON d.group_id = c.descendant_id
              WHERE c.ancestor_id = $1 AND ($2::\"char\" IS NULL OR d.source = $2::\"char\")"
        ),
    };
    Ok(sqlx::query_scalar(&sql)
        .bind(group)
        .bind(source)
        .fetch_one(pool)
        .await?)
}

/// One group a member belongs to, with every reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Belonging {
    /// The group.
    pub group_id: Uuid,
    /// The direct memberships that make it one: the group itself and/or descendants.
    pub reasons: Vec<MemberRow>,
}

/// The groups `member` belongs to, for many members at once (DataLoader batches), ordered by
/// group id; for `Effective`, every ancestor of a group it is a direct member of.
pub async fn groups_of(
    pool: &PgPool,
    members: &[String],
    mode: Mode,
) -> Result<HashMap<String, Vec<Belonging>>, StoreError> {
    let sql = match mode {
        Mode::Direct => format!(
            "SELECT d.member_id, d.group_id AS target, d.source, d.group_id, d.since
               FROM {M}.direct d JOIN {T}.groups g ON g.id = d.group_id
              WHERE d.member_id = ANY($1) ORDER BY d.member_id, d.group_id"
        ),
        Mode::Effective => format!(
            "SELECT d.member_id, c.ancestor_id AS target, d.source, d.group_id, d.since
               FROM {M}.direct d JOIN {T}.group_closure c ON c.descendant_id = d.group_id
              WHERE d.member_id = ANY($1) ORDER BY d.member_id, c.ancestor_id, c.depth"
        ),
    };
    let rows = sqlx::query(&sql).bind(members).fetch_all(pool).await?;
    let mut out: HashMap<String, Vec<Belonging>> = HashMap::new();
    for r in &rows {
        let row = member_row(r)?;
        let target: Uuid = r.try_get("target")?;
        let list = out.entry(row.member_id.clone()).or_default();
        match list.last_mut() {
            Some(last) if last.group_id == target => last.reasons.push(row),
            _ => list.push(Belonging {
                group_id: target,
                reasons: vec![row],
            }),
        }
    }
    Ok(out)
}

/// A member's entries in one group: (static, rule, excluded), for explanations.
pub async fn entries(
    pool: &PgPool,
    group: Uuid,
    member: &str,
) -> Result<(bool, bool, bool), StoreError> {
    let kinds: Vec<i8> = sqlx::query_scalar(&format!(
        "SELECT kind FROM {M}.entries WHERE group_id = $1 AND member_id = $2"
    ))
    .bind(group)
    .bind(member)
    .fetch_all(pool)
    .await?;
    let has = |c: u8| kinds.iter().any(|k| *k as u8 == c);
    Ok((has(b'S'), has(b'R'), has(b'X')))
}
