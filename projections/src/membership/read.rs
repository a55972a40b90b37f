//! Queries over `rm_membership` and the group tree's closure table.
//!
//! Effective members are a distinct union over a subtree, computed per request. One keyset
//! page is answered by whichever of two plans touches fewer rows:
//! - **per group**: for each group of the subtree, the first rows of its `(group_id,
//!   member_id)` index range after the cursor (a LATERAL probe each), merged; its cost grows
//!   with the number of groups, so it serves leaves, small subtrees and sparse ones;
//! - **by member**: walk the `(member_id, group_id)` index in member order and keep rows whose
//!   group is in the subtree (a set held in memory); its cost grows with
//!   page size × all rows / the subtree's rows, so it serves big subtrees: the root's first
//!   page reads about one page of index entries.
//!
//! The subtree (its groups and their depths) is cached per group and keyed by the group tree
//! projector's progress, so a cached subtree is never used after the tree changed; the row
//! counts that steer the choice are refreshed every ten seconds (they steer the plan, never
//! the answer).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

/// How long the row counts that choose a plan are reused.
const STATS_TTL: Duration = Duration::from_secs(10);
/// Subtrees cached at most.
const SUBTREE_CACHE: usize = 1024;

/// A group's subtree: each descendant (itself included) and its distance.
struct Subtree {
    /// `events_processed` of the group-tree projector when read.
    tree_version: i64,
    depths: Arc<HashMap<Uuid, i32>>,
    /// Direct rows in the subtree, and in all groups, when last counted.
    rows: i64,
    all_rows: i64,
    counted_at: Instant,
}

type SubtreeCache = Mutex<HashMap<(String, Uuid), Subtree>>;

fn subtree_cache() -> &'static SubtreeCache {
    static CACHE: std::sync::OnceLock<SubtreeCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The subtree of `group` with fresh-enough row counts: (depths, subtree rows, all rows).
async fn subtree(
    pool: &PgPool,
    group: Uuid,
) -> Result<(Arc<HashMap<Uuid, i32>>, i64, i64), StoreError> {
    // One cache per database (the same group ids exist in every database).
    let db = pool
        .connect_options()
        .get_database()
        .unwrap_or("")
        .to_string();
    let key = (db, group);
    let tree_version: i64 = sqlx::query_scalar(
        "SELECT coalesce((SELECT events_processed FROM projection_checkpoints
                           WHERE name = 'group_tree'), 0)",
    )
    .fetch_one(pool)
    .await?;
    let cached = {
        let cache = subtree_cache().lock().unwrap_or_else(|e| e.into_inner());
        cache.get(&key).and_then(|c| {
            (c.tree_version == tree_version).then(|| {
                (
                    c.depths.clone(),
                    c.rows,
                    c.all_rows,
                    c.counted_at.elapsed() < STATS_TTL,
                )
            })
        })
    };
    let depths = match cached {
        Some((depths, rows, all, true)) => return Ok((depths, rows, all)),
        Some((depths, ..)) => depths,
        None => {
            let rows: Vec<(Uuid, i32)> = sqlx::query_as(&format!(
                "SELECT descendant_id, depth FROM {T}.group_closure WHERE ancestor_id = $1"
            ))
            .bind(group)
            .fetch_all(pool)
            .await?;
            Arc::new(rows.into_iter().collect())
        }
    };
    let ids: Vec<Uuid> = depths.keys().copied().collect();
    let (rows, all_rows): (i64, i64) = sqlx::query_as(&format!(
        "SELECT coalesce(sum(direct_count) FILTER (WHERE group_id = ANY($1)), 0)::bigint,
                coalesce(sum(direct_count), 0)::bigint
           FROM {M}.group_counts"
    ))
    .bind(&ids)
    .fetch_one(pool)
    .await?;
    let mut cache = subtree_cache().lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= SUBTREE_CACHE {
        cache.clear();
    }
    cache.insert(
        key,
        Subtree {
            tree_version,
            depths: depths.clone(),
            rows,
            all_rows,
            counted_at: Instant::now(),
        },
    );
    Ok((depths, rows, all_rows))
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
        Mode::Effective => {
            let (depths, rows, all_rows) = subtree(pool, group).await?;
            let groups = depths.len() as i64;
            // Index entries each plan is expected to read.
            let per_group = groups * 2 + rows.min(groups * limit);
            let by_member = (limit + 1) * all_rows.max(1) / rows.max(1);
            if by_member < per_group {
                return by_member_page(pool, &depths, source.as_deref(), limit, cursor, backward)
                    .await;
            }
            format!(
                "SELECT DISTINCT ON (x.member_id) x.member_id, x.source, x.group_id, x.since
                   FROM {T}.group_closure c
                  CROSS JOIN LATERAL (
                        SELECT d.member_id, d.source, d.group_id, d.since FROM {M}.direct d
                         WHERE d.group_id = c.descendant_id
                           AND ($2::text IS NULL OR d.member_id {cmp} $2)
                           AND ($3::\"char\" IS NULL OR d.source = $3::\"char\")
                         ORDER BY d.member_id {order} LIMIT $4) x
                  WHERE c.ancestor_id = $1
                  ORDER BY x.member_id {order}, c.depth, x.group_id LIMIT $4"
            )
        }
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

/// The groups of `group`'s subtree (itself included), by the live tree (cached as the plan
/// choice caches it).
pub async fn subtree_groups(pool: &PgPool, group: Uuid) -> Result<Vec<Uuid>, StoreError> {
    Ok(subtree(pool, group).await?.0.keys().copied().collect())
}

/// The by-member plan: reads `direct` in member order in chunks (descending when
/// `backward`), keeps rows of the subtree, and for each member the nearest group (then the
/// smallest group id).
async fn by_member_page(
    pool: &PgPool,
    depths: &HashMap<Uuid, i32>,
    source: Option<&str>,
    limit: i64,
    cursor: Option<&str>,
    backward: bool,
) -> Result<Vec<MemberRow>, StoreError> {
    let chunk = (limit * 4).clamp(64, 4096);
    let mut out: Vec<MemberRow> = Vec::new();
    let mut best_depth = i32::MAX;
    // Backward without a cursor starts past every id (NULL: no bound).
    let (mut cursor_member, mut cursor_group) = if backward {
        (cursor.map(str::to_string), Uuid::nil())
    } else {
        (Some(cursor.unwrap_or("").to_string()), Uuid::max())
    };
    let sql = if backward {
        format!(
            "SELECT member_id, source, group_id, since FROM {M}.direct
              WHERE ($1::text IS NULL OR (member_id, group_id) < ($1, $2))
                AND ($3::\"char\" IS NULL OR source = $3::\"char\")
              ORDER BY member_id DESC, group_id DESC LIMIT $4"
        )
    } else {
        format!(
            "SELECT member_id, source, group_id, since FROM {M}.direct
              WHERE (member_id, group_id) > ($1, $2)
                AND ($3::\"char\" IS NULL OR source = $3::\"char\")
              ORDER BY member_id, group_id LIMIT $4"
        )
    };
    loop {
        let rows = sqlx::query(&sql)
            .bind(&cursor_member)
            .bind(cursor_group)
            .bind(source)
            .bind(chunk)
            .fetch_all(pool)
            .await?;
        let exhausted = (rows.len() as i64) < chunk;
        for r in &rows {
            let row = member_row(r)?;
            cursor_member = Some(row.member_id.clone());
            cursor_group = row.via_group;
            let Some(&depth) = depths.get(&row.via_group) else {
                continue;
            };
            match out.last_mut() {
                Some(last) if last.member_id == row.member_id => {
                    // Forward, group ids ascend: the first at the best depth is the smallest;
                    // backward they descend: the last at the best depth is.
                    if depth < best_depth || (backward && depth == best_depth) {
                        best_depth = depth;
                        *last = row;
                    }
                }
                _ => {
                    if out.len() as i64 == limit {
                        // The page is complete: its last member has no rows left.
                        return Ok(out);
                    }
                    best_depth = depth;
                    out.push(row);
                }
            }
        }
        if exhausted {
            return Ok(out);
        }
    }
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
    let target = match mode {
        Mode::Direct => "d.group_id",
        Mode::Effective => "c.ancestor_id",
    };
    let within = match roots {
        None => String::new(),
        Some(_) => format!(
            " AND {target} IN (SELECT rc.descendant_id FROM {T}.group_closure rc
                                WHERE rc.ancestor_id = ANY($2::uuid[]))"
        ),
    };
    let sql = match mode {
        Mode::Direct => format!(
            "SELECT d.member_id, d.group_id AS target, d.source, d.group_id, d.since
               FROM {M}.direct d JOIN {T}.groups g ON g.id = d.group_id
              WHERE d.member_id = ANY($1){within} ORDER BY d.member_id, d.group_id"
        ),
        Mode::Effective => format!(
            "SELECT d.member_id, c.ancestor_id AS target, d.source, d.group_id, d.since
               FROM {M}.direct d JOIN {T}.group_closure c ON c.descendant_id = d.group_id
              WHERE d.member_id = ANY($1){within} ORDER BY d.member_id, c.ancestor_id, c.depth"
        ),
    };
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
