//! Queries over `rm_membership`: direct rows, the stored effective membership and its own
//! copy of the tree (`ancestry`), all written by one projector in one transaction, so a query
//! sees members and tree of one moment.
//!
//! An effective page is an index range of `effective` (one row per member of the subtree),
//! then for those members only, the nearest group of the subtree that holds each one (its
//! direct rows, by member). A count is one row of `effective_counts`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::LIVE_SCHEMA as M;
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
/// (bytewise). `source` keeps only memberships of that source (`S` or `R`): for EFFECTIVE, a
/// member counts when some group of the subtree holds it with that source, reported through
/// the nearest such group.
pub async fn page(
    pool: &PgPool,
    group: Uuid,
    mode: Mode,
    source: Option<char>,
    limit: i64,
    after: Option<&str>,
) -> Result<Vec<MemberRow>, StoreError> {
    page_dir(pool, group, mode, source, limit, after, false).await
}

/// [`page`] either way: `backward` reads the members before `cursor` (all, without one),
/// nearest first, i.e. in descending member id order; otherwise as [`page`].
pub async fn page_dir(
    pool: &PgPool,
    group: Uuid,
    mode: Mode,
    source: Option<char>,
    limit: i64,
    cursor: Option<&str>,
    backward: bool,
) -> Result<Vec<MemberRow>, StoreError> {
    let source = source_code(source);
    // Forward, "" is before every id; backward, no cursor means no bound.
    let (cmp, order, cursor) = if backward {
        ("<", "DESC", cursor)
    } else {
        (">", "ASC", Some(cursor.unwrap_or("")))
    };
    let sql = match mode {
        Mode::Direct => format!(
            "SELECT member_id, source, group_id, since FROM {M}.direct
              WHERE group_id = $1 AND ($2::text IS NULL OR member_id {cmp} $2)
                AND ($3::\"char\" IS NULL OR source = $3::\"char\")
              ORDER BY member_id {order} LIMIT $4"
        ),
        // The page's members from `effective`, then each one's nearest group holding it
        // (of that source), then the smallest such group id.
        Mode::Effective => format!(
            "WITH p AS (
                SELECT member_id FROM {M}.effective
                 WHERE ancestor_id = $1 AND ($2::text IS NULL OR member_id {cmp} $2)
                   AND ($3::\"char\" IS NULL OR CASE $3::\"char\" WHEN 'S' THEN n_static > 0
                                                                ELSE n_rule > 0 END)
                 ORDER BY member_id {order} LIMIT $4)
             SELECT DISTINCT ON (d.member_id) d.member_id, d.source, d.group_id, d.since
               FROM p JOIN {M}.direct d ON d.member_id = p.member_id
               JOIN {M}.ancestry a ON a.group_id = d.group_id AND a.ancestor_id = $1
              WHERE ($3::\"char\" IS NULL OR d.source = $3::\"char\")
              ORDER BY d.member_id {order}, a.depth, d.group_id"
        ),
    };
    let rows = sqlx::query(&sql)
        .bind(group)
        .bind(cursor)
        .bind(source)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter().map(member_row).collect()
}

/// The groups of `group`'s subtree (itself included), as the membership projector has the
/// tree.
pub async fn subtree_groups(pool: &PgPool, group: Uuid) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT group_id FROM {M}.ancestry WHERE ancestor_id = $1"
    ))
    .bind(group)
    .fetch_all(pool)
    .await?)
}

/// How many members a group has (exact; kept by the projector, so no scan however big the
/// group).
pub async fn count(
    pool: &PgPool,
    group: Uuid,
    mode: Mode,
    source: Option<char>,
) -> Result<i64, StoreError> {
    let column = match (mode, source) {
        (Mode::Direct, None) => "direct_count FROM {M}.group_counts",
        (Mode::Direct, Some('S')) => "static_count FROM {M}.group_counts",
        (Mode::Direct, Some(_)) => "rule_count FROM {M}.group_counts",
        (Mode::Effective, None) => "members FROM {M}.effective_counts",
        (Mode::Effective, Some('S')) => "static_members FROM {M}.effective_counts",
        (Mode::Effective, Some(_)) => "rule_members FROM {M}.effective_counts",
    }
    .replace("{M}", M);
    let n: Option<i64> = sqlx::query_scalar(&format!("SELECT {column} WHERE group_id = $1"))
        .bind(group)
        .fetch_optional(pool)
        .await?;
    Ok(n.unwrap_or(0))
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
    groups_of_within(pool, members, mode, None).await
}

/// [`groups_of`], keeping only the groups that lie in the subtree of one of `roots` (`None`:
/// every group, with no extra condition). The reasons of a kept group all lie in its subtree,
/// so they are in `roots`' subtrees too.
pub async fn groups_of_within(
    pool: &PgPool,
    members: &[String],
    mode: Mode,
    roots: Option<&[Uuid]>,
) -> Result<HashMap<String, Vec<Belonging>>, StoreError> {
    // A deleted group's direct rows stay until they are purged; it has no ancestry rows.
    let within = match roots {
        None => String::new(),
        Some(_) => format!(
            " AND a.ancestor_id IN (SELECT rc.group_id FROM {M}.ancestry rc
                                     WHERE rc.ancestor_id = ANY($2::uuid[]))"
        ),
    };
    let only_own = match mode {
        Mode::Direct => " AND a.depth = 0",
        Mode::Effective => "",
    };
    let sql = format!(
        "SELECT d.member_id, a.ancestor_id AS target, d.source, d.group_id, d.since
           FROM unnest($1::text[]) AS x(id)
           JOIN {M}.direct d ON d.member_id = x.id
           JOIN {M}.ancestry a ON a.group_id = d.group_id{only_own}
          WHERE true{within} ORDER BY d.member_id, a.ancestor_id, a.depth"
    );
    let query = sqlx::query(&sql).bind(members);
    let query = match roots {
        Some(r) => query.bind(r),
        None => query,
    };
    let rows = query.fetch_all(pool).await?;
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

/// The group memberships of some entities, direct and effective, for evaluating `group:`
/// conditions of rules in memory.
#[derive(Debug, Default)]
pub struct GroupSets(HashMap<String, std::collections::HashSet<(Uuid, bool)>>);

impl corral_domain::rule::Memberships for GroupSets {
    fn contains(&self, group: Uuid, direct: bool, member_id: &str) -> bool {
        self.0
            .get(member_id)
            .is_some_and(|set| set.contains(&(group, direct)))
    }
}

impl GroupSets {
    /// The sets of one member: `(group, direct)` pairs.
    pub fn of(member: &str, sets: impl IntoIterator<Item = (Uuid, bool)>) -> Self {
        Self(HashMap::from([(
            member.to_string(),
            sets.into_iter().collect(),
        )]))
    }
}

/// Loads [`GroupSets`] for `members` (two queries).
pub async fn group_sets(pool: &PgPool, members: &[String]) -> Result<GroupSets, StoreError> {
    let mut sets: HashMap<String, std::collections::HashSet<(Uuid, bool)>> = HashMap::new();
    for (mode, direct) in [(Mode::Direct, true), (Mode::Effective, false)] {
        for (member, belongings) in groups_of(pool, members, mode).await? {
            sets.entry(member)
                .or_default()
                .extend(belongings.into_iter().map(|b| (b.group_id, direct)));
        }
    }
    Ok(GroupSets(sets))
}
