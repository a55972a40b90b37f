//! Queries over the live group tree, batched for DataLoaders.

use std::collections::HashMap;

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{Node, LIVE_SCHEMA};
use crate::StoreError;

const COLUMNS: &str = "g.id, g.group_type, g.parent_id, g.name, g.description, g.metadata, \
    g.is_system, g.depth, g.path, g.version, g.created_at, g.updated_at, g.name_key, g.path_key";

pub(crate) fn row_to_node(r: &PgRow) -> Result<Node, StoreError> {
    Ok(Node {
        id: r.try_get("id")?,
        group_type: r.try_get("group_type")?,
        parent_id: r.try_get("parent_id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        metadata: r.try_get("metadata")?,
        is_system: r.try_get("is_system")?,
        depth: r.try_get("depth")?,
        path: r.try_get("path")?,
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        ancestors: vec![],
        name_key: r.try_get("name_key")?,
        path_key: r.try_get("path_key")?,
    })
}

fn nodes(rows: &[PgRow]) -> Result<Vec<Node>, StoreError> {
    rows.iter().map(row_to_node).collect()
}

/// Groups by id (missing ids are left out).
pub async fn by_ids(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<Node>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {LIVE_SCHEMA}.groups g WHERE g.id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await?;
    nodes(&rows)
}

/// A group by its path, e.g. `Inventory/Site-A/Core`, ignoring case. The path is put in NFC
/// first, as names are when stored (a name stored before names were normalized is found
/// only in its stored form).
pub async fn by_path(
    pool: &PgPool,
    group_type: &str,
    path: &str,
) -> Result<Option<Node>, StoreError> {
    let normalized = corral_domain::text::to_nfc(path);
    let normalized = normalized
        .trim()
        .trim_matches('/')
        .split('/')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("/");
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {LIVE_SCHEMA}.groups g WHERE g.group_type = $1 AND g.path_key = lower($2)"
    ))
    .bind(group_type)
    .bind(normalized)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(row_to_node).transpose()
}

/// Keyset position in an ordered listing: the sort key and the id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct After {
    /// `name_key` (children) or `path_key` (search) of the last row.
    pub key: String,
    /// Tie-breaker.
    pub id: Uuid,
}

/// Up to `first` children of each parent, ordered by name, after `after`.
///
/// `backward` (`last`/`before`): the children before `after` instead, nearest first.
pub async fn children(
    pool: &PgPool,
    parents: &[Uuid],
    first: i64,
    after: Option<&After>,
    backward: bool,
) -> Result<HashMap<Uuid, Vec<Node>>, StoreError> {
    let (cmp, order) = if backward {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    let rows = sqlx::query(&format!(
        "SELECT * FROM (
            SELECT {COLUMNS}, row_number() OVER (PARTITION BY g.parent_id
                                                 ORDER BY g.name_key {order}, g.id {order}) AS rn
              FROM {LIVE_SCHEMA}.groups g
             WHERE g.parent_id = ANY($1)
               AND ($2::text IS NULL OR (g.name_key, g.id) {cmp} ($2, $3::uuid))) t
          WHERE rn <= $4 ORDER BY parent_id, rn"
    ))
    .bind(parents)
    .bind(after.map(|a| a.key.clone()))
    .bind(after.map(|a| a.id))
    .bind(first)
    .fetch_all(pool)
    .await?;
    let mut out: HashMap<Uuid, Vec<Node>> = HashMap::new();
    for node in nodes(&rows)? {
        if let Some(p) = node.parent_id {
            out.entry(p).or_default().push(node);
        }
    }
    Ok(out)
}

/// Number of children of each parent.
pub async fn child_counts(
    pool: &PgPool,
    parents: &[Uuid],
) -> Result<HashMap<Uuid, i64>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT parent_id, count(*) AS n FROM {LIVE_SCHEMA}.groups WHERE parent_id = ANY($1) GROUP BY parent_id"
    ))
    .bind(parents)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("parent_id")?, r.try_get("n")?)))
        .collect()
}

/// Ancestors of each group, root first.
pub async fn ancestors(
    pool: &PgPool,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<Node>>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT c.descendant_id AS of_id, {COLUMNS}
           FROM {LIVE_SCHEMA}.group_closure c JOIN {LIVE_SCHEMA}.groups g ON g.id = c.ancestor_id
          WHERE c.descendant_id = ANY($1) AND c.depth > 0
          ORDER BY c.descendant_id, c.depth DESC"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let mut out: HashMap<Uuid, Vec<Node>> = HashMap::new();
    for r in &rows {
        out.entry(r.try_get("of_id")?)
            .or_default()
            .push(row_to_node(r)?);
    }
    Ok(out)
}

/// Groups of a type whose name contains `search` (ignoring case, `search` put in NFC as names
/// are), ordered by path, with the total count of matches. With `roots`, only groups in the
/// subtree of one of them (page and count alike, so that keyset cursors and `totalCount`
/// stay right); `None` leaves the scope out of the SQL entirely. `backward` reads the rows
/// before `after` instead, nearest first (`last`/`before`).
#[allow(clippy::too_many_arguments)]
pub async fn search(
    pool: &PgPool,
    group_type: &str,
    search: Option<&str>,
    first: i64,
    after: Option<&After>,
    backward: bool,
    roots: Option<&[Uuid]>,
    known_total: Option<i64>,
) -> Result<(Vec<Node>, i64), StoreError> {
    let pattern = search.map(corral_domain::text::to_nfc).map(|s| {
        format!(
            "%{}%",
            s.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    // A global caller's query carries no scope condition at all.
    let (page_scope, count_scope) = match roots {
        // No `IS NULL OR` here: a plain `= ANY` lets even a generic plan probe the primary
        // key for the scope's groups instead of scanning every group.
        Some(_) => (
            " AND g.id = ANY($6::uuid[])".to_string(),
            " AND g.id = ANY($3::uuid[])".to_string(),
        ),
        None => (String::new(), String::new()),
    };
    // Backward (`last`/`before`): the rows before the cursor, nearest first.
    let (cmp, order) = if backward {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    let page_sql = format!(
        "SELECT {COLUMNS} FROM {LIVE_SCHEMA}.groups g
          WHERE g.group_type = $1 AND ($2::text IS NULL OR g.name ILIKE $2)
            AND ($3::text IS NULL OR (g.path_key, g.id) {cmp} ($3, $4::uuid)){page_scope}
          ORDER BY g.path_key {order}, g.id {order} LIMIT $5"
    );
    let mut page = sqlx::query(&page_sql)
        .bind(group_type)
        .bind(&pattern)
        .bind(after.map(|a| a.key.clone()))
        .bind(after.map(|a| a.id))
        .bind(first);
    if let Some(roots) = roots {
        page = page.bind(roots);
    }
    let rows = page.fetch_all(pool).await?;
    if let Some(total) = known_total {
        return Ok((nodes(&rows)?, total));
    }
    let count_sql = format!(
        "SELECT count(*) FROM {LIVE_SCHEMA}.groups g WHERE g.group_type = $1 AND ($2::text IS NULL OR g.name ILIKE $2){count_scope}"
    );
    let mut count = sqlx::query_scalar(&count_sql)
        .bind(group_type)
        .bind(&pattern);
    if let Some(roots) = roots {
        count = count.bind(roots);
    }
    let total: i64 = count.fetch_one(pool).await?;
    Ok((nodes(&rows)?, total))
}

/// SQL that holds when `column` (a group id) is one of the groups in `param` (a `uuid[]`
/// parameter such as `$3`: a scope's groups, its subtrees expanded by [`subtree_ids`]), or
/// when `param` is null (no scope: every group). Expanded once per tree version and request
/// (the API caches it), the scope costs a hashed array probe per row instead of a closure
/// lookup per root in every statement.
pub fn scope_filter(column: &str, param: &str) -> String {
    format!("({param}::uuid[] IS NULL OR {column} = ANY({param}::uuid[]))")
}

/// Every group in the subtree of one of `roots` (the roots included), sorted, with its type,
/// by the live tree.
pub async fn subtree_ids(pool: &PgPool, roots: &[Uuid]) -> Result<Vec<(Uuid, String)>, StoreError> {
    if roots.is_empty() {
        return Ok(vec![]);
    }
    let rows: Vec<(Uuid, String)> = sqlx::query_as(&format!(
        "SELECT s.id, g.group_type FROM
           (SELECT DISTINCT descendant_id AS id FROM {LIVE_SCHEMA}.group_closure
             WHERE ancestor_id = ANY($1)) s
           JOIN {LIVE_SCHEMA}.groups g ON g.id = s.id
          ORDER BY 1"
    ))
    .bind(roots)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Which of `ids` lie in the subtree of one of `roots` (a group is in its own subtree).
pub async fn in_subtrees(
    pool: &PgPool,
    ids: &[Uuid],
    roots: &[Uuid],
) -> Result<Vec<Uuid>, StoreError> {
    if ids.is_empty() || roots.is_empty() {
        return Ok(vec![]);
    }
    let rows: Vec<Uuid> = sqlx::query_scalar(&format!(
        "SELECT DISTINCT descendant_id FROM {LIVE_SCHEMA}.group_closure
          WHERE descendant_id = ANY($1) AND ancestor_id = ANY($2)"
    ))
    .bind(ids)
    .bind(roots)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// SQL that holds when `column` (a device or service id) is visible within the scope's
/// groups in `param` ([`crate::inventory::visible_sql`]: a static member of one of them), or
/// when `param` is null. Rule-derived membership never widens access, since a rule change
/// would otherwise widen it silently.
pub fn visible_members_filter(column: &str, param: &str) -> String {
    format!(
        "({param}::uuid[] IS NULL OR {})",
        crate::inventory::visible_sql(column, param)
    )
}

/// Which of `ids` (device or service ids) are visible within the subtrees of `roots`, by
/// [`visible_members_filter`].
pub async fn visible_members(
    pool: &PgPool,
    ids: &[String],
    roots: &[Uuid],
) -> Result<Vec<String>, StoreError> {
    if ids.is_empty() || roots.is_empty() {
        return Ok(vec![]);
    }
    let rows: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT x.id FROM unnest($1::text[]) AS x(id) WHERE {}",
        visible_members_filter("x.id", "$2")
    ))
    .bind(ids)
    .bind(roots)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
