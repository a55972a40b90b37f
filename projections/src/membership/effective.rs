//! Effective membership, stored: the membership projector's own copy of the group tree
//! (`ancestry`), one row per (ancestor, member) with how many direct memberships of the
//! ancestor's subtree hold the member (`effective`, by source), and per group how many
//! distinct members its subtree has (`effective_counts`).
//!
//! Effective membership is linear in the direct rows: every direct row `(g, m, source)`
//! contributes one to `(a, m, source)` for each ancestor `a` of `g` (itself included). So
//! each change is a delta:
//! - a direct row appears, disappears or changes source: ± one per ancestor of its group;
//! - a group moves: its subtree's direct rows, summed per member, leave the ancestors it
//!   loses and join the ones it gains (ancestors both trees share keep their rows);
//! - a group is deleted (it has no children: the domain refuses that): its direct rows
//!   leave its strict ancestors and its own rows go.
//!
//! The projector applies tree changes as they come and the batch's direct changes at its end,
//! each against the tree as it then is: by linearity the result is the same as applying them
//! in log order. A row whose counts reach zero is deleted; a count changes when a row appears
//! or disappears (for the per-source counts, when that source's count leaves or reaches
//! zero).
//!
//! The tree is kept here rather than read from the group-tree projector's closure so that
//! both are written in one transaction: a query sees the members and the tree of one moment.

use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::StoreError;

/// The DDL of the effective tables in `s`.
pub(super) fn ddl(s: &str) -> Vec<String> {
    vec![
        // One row per (group, ancestor), itself included at depth 0.
        format!(
            "CREATE TABLE {s}.ancestry (
                group_id uuid NOT NULL, ancestor_id uuid NOT NULL, depth int NOT NULL,
                PRIMARY KEY (group_id, ancestor_id))"
        ),
        format!("CREATE INDEX ancestry_subtree_idx ON {s}.ancestry (ancestor_id, group_id)"),
        // member_id sorts bytewise so that keyset cursors compare as pages sort.
        format!(
            "CREATE TABLE {s}.effective (
                ancestor_id uuid NOT NULL, member_id text COLLATE \"C\" NOT NULL,
                n_static int NOT NULL, n_rule int NOT NULL,
                PRIMARY KEY (ancestor_id, member_id))"
        ),
        format!(
            "CREATE TABLE {s}.effective_counts (
                group_id uuid PRIMARY KEY, members bigint NOT NULL,
                static_members bigint NOT NULL, rule_members bigint NOT NULL)"
        ),
    ]
}

/// A change to effective membership.
pub(super) enum Delta {
    /// Direct rows changed: per (group, member), the change of its static and rule rows
    /// (-1, 0 or 1 each); each pair at most once.
    Direct {
        groups: Vec<Uuid>,
        members: Vec<String>,
        ds: Vec<i32>,
        dr: Vec<i32>,
    },
    /// Every direct row of `group`'s subtree, summed per member, times `signs[i]` for
    /// `ancestors[i]` (a move or a delete).
    Subtree {
        group: Uuid,
        ancestors: Vec<Uuid>,
        signs: Vec<i32>,
    },
}

/// Applies a delta to `effective` and `effective_counts`; rows whose counts reach zero are
/// deleted.
///
/// Every lookup of `effective` (and of `direct` for a subtree) is a `LATERAL ... OFFSET 0`
/// probe of its primary key, which the planner cannot turn into a hash join over the whole
/// table (at a million devices `effective` holds some ten million rows; a move touches a few
/// hundred thousand of them). Rows that reach zero are deleted by the `ctid` the probe read,
/// and the others are upserted: the two sets are disjoint, so one statement does both.
pub(super) async fn apply(
    conn: &mut PgConnection,
    s: &str,
    delta: Delta,
) -> Result<(), StoreError> {
    let x = match &delta {
        Delta::Direct { groups, .. } if groups.is_empty() => return Ok(()),
        Delta::Subtree { ancestors, .. } if ancestors.is_empty() => return Ok(()),
        // Two direct rows of one member under one ancestor sum into one row.
        Delta::Direct { .. } => format!(
            "SELECT a.ancestor_id, x.m, sum(x.ds)::int AS ds, sum(x.dr)::int AS dr
               FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[]) AS x(g, m, ds, dr)
               JOIN {s}.ancestry a ON a.group_id = x.g
              GROUP BY a.ancestor_id, x.m
             HAVING sum(x.ds) <> 0 OR sum(x.dr) <> 0"
        ),
        Delta::Subtree { .. } => format!(
            "WITH m AS (
                SELECT d.member_id,
                       count(*) FILTER (WHERE d.source = 'S')::int AS s,
                       count(*) FILTER (WHERE d.source = 'R')::int AS r
                  FROM {s}.ancestry sub
                 CROSS JOIN LATERAL (
                       SELECT d.member_id, d.source FROM {s}.direct d
                        WHERE d.group_id = sub.group_id OFFSET 0) d
                 WHERE sub.ancestor_id = $1
                 GROUP BY d.member_id)
             SELECT a.id AS ancestor_id, m.member_id AS m, a.sign * m.s AS ds, a.sign * m.r AS dr
               FROM m CROSS JOIN unnest($2::uuid[], $3::int[]) AS a(id, sign)"
        ),
    };
    let sql = format!(
        "WITH x AS ({x}),
         old AS (
            SELECT x.ancestor_id, x.m, x.ds, x.dr, e.ctid AS tid,
                   coalesce(e.n_static, 0) AS os, coalesce(e.n_rule, 0) AS orl
              FROM x LEFT JOIN LATERAL (
                   SELECT e.ctid, e.n_static, e.n_rule FROM {s}.effective e
                    WHERE e.ancestor_id = x.ancestor_id AND e.member_id = x.m OFFSET 0) e ON true),
         gone AS (
            DELETE FROM {s}.effective
             WHERE ctid = ANY (ARRAY(
                   SELECT tid FROM old
                    WHERE tid IS NOT NULL AND os + ds = 0 AND orl + dr = 0))),
         w AS (
            INSERT INTO {s}.effective AS e (ancestor_id, member_id, n_static, n_rule)
            SELECT ancestor_id, m, os + ds, orl + dr FROM old
             WHERE os + ds <> 0 OR orl + dr <> 0
            ON CONFLICT (ancestor_id, member_id) DO UPDATE
               SET n_static = EXCLUDED.n_static, n_rule = EXCLUDED.n_rule),
         c AS (
            INSERT INTO {s}.effective_counts AS c
                   (group_id, members, static_members, rule_members)
            SELECT ancestor_id,
                   sum((os + ds + orl + dr > 0)::int - (os + orl > 0)::int),
                   sum((os + ds > 0)::int - (os > 0)::int),
                   sum((orl + dr > 0)::int - (orl > 0)::int)
              FROM old GROUP BY ancestor_id
            ON CONFLICT (group_id) DO UPDATE
               SET members = c.members + EXCLUDED.members,
                   static_members = c.static_members + EXCLUDED.static_members,
                   rule_members = c.rule_members + EXCLUDED.rule_members)
         SELECT count(*) FROM old WHERE os + ds < 0 OR orl + dr < 0"
    );
    let query = sqlx::query_scalar::<_, i64>(&sql);
    let query = match delta {
        Delta::Direct {
            groups,
            members,
            ds,
            dr,
        } => query.bind(groups).bind(members).bind(ds).bind(dr),
        Delta::Subtree {
            group,
            ancestors,
            signs,
        } => query.bind(group).bind(ancestors).bind(signs),
    };
    let negative = query.fetch_one(&mut *conn).await?;
    if negative > 0 {
        // A count below zero means the stored model and the direct rows disagree: fail the
        // batch (it is retried, and a rebuild repairs the model) rather than store it.
        return Err(StoreError::Data(format!(
            "{negative} effective membership counts would go below zero"
        )));
    }
    Ok(())
}

/// The ancestors of `group` with their distance (itself at 0).
async fn ancestors(
    conn: &mut PgConnection,
    s: &str,
    group: Uuid,
) -> Result<Vec<(Uuid, i32)>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT ancestor_id, depth FROM {s}.ancestry WHERE group_id = $1"
    ))
    .bind(group)
    .fetch_all(conn)
    .await?)
}

/// Places created groups, in order: each under its parent (which may be created earlier in
/// the same run), or as a root.
pub(super) async fn create(
    conn: &mut PgConnection,
    s: &str,
    created: &[(Uuid, Option<Uuid>)],
) -> Result<(), StoreError> {
    if created.is_empty() {
        return Ok(());
    }
    let mut known: HashMap<Uuid, Vec<(Uuid, i32)>> = HashMap::new();
    let parents: Vec<Uuid> = created.iter().filter_map(|(_, p)| *p).collect();
    let rows: Vec<(Uuid, Uuid, i32)> = sqlx::query_as(&format!(
        "SELECT group_id, ancestor_id, depth FROM {s}.ancestry WHERE group_id = ANY($1)"
    ))
    .bind(&parents)
    .fetch_all(&mut *conn)
    .await?;
    for (g, a, d) in rows {
        known.entry(g).or_default().push((a, d));
    }
    let (mut gs, mut ancs, mut depths) = (Vec::new(), Vec::new(), Vec::new());
    for (id, parent) in created {
        let mut mine = vec![(*id, 0)];
        if let Some(p) = parent {
            let above = known
                .get(p)
                .ok_or_else(|| StoreError::Data(format!("group {id} has unknown parent {p}")))?;
            mine.extend(above.iter().map(|(a, d)| (*a, d + 1)));
        }
        for (a, d) in &mine {
            gs.push(*id);
            ancs.push(*a);
            depths.push(*d);
        }
        known.insert(*id, mine);
    }
    sqlx::query(&format!(
        "INSERT INTO {s}.ancestry (group_id, ancestor_id, depth)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[])"
    ))
    .bind(gs)
    .bind(ancs)
    .bind(depths)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves `group` (and its subtree) under `new_parent`.
pub(super) async fn move_group(
    conn: &mut PgConnection,
    s: &str,
    group: Uuid,
    new_parent: Uuid,
) -> Result<(), StoreError> {
    let old: Vec<Uuid> = ancestors(conn, s, group)
        .await?
        .into_iter()
        .filter(|(a, _)| *a != group)
        .map(|(a, _)| a)
        .collect();
    let new = ancestors(conn, s, new_parent).await?;
    if new.is_empty() {
        return Err(StoreError::Data(format!(
            "group {group} moved under unknown group {new_parent}"
        )));
    }
    if new.iter().any(|(a, _)| *a == group) {
        return Err(StoreError::Data(format!(
            "group {group} moved under its own descendant {new_parent}"
        )));
    }
    let lost: Vec<Uuid> = old
        .iter()
        .filter(|a| !new.iter().any(|(n, _)| n == *a))
        .copied()
        .collect();
    let gained: Vec<Uuid> = new
        .iter()
        .filter(|(n, _)| !old.contains(n))
        .map(|(n, _)| *n)
        .collect();
    let signs: Vec<i32> = lost
        .iter()
        .map(|_| -1)
        .chain(gained.iter().map(|_| 1))
        .collect();
    apply(
        conn,
        s,
        Delta::Subtree {
            group,
            ancestors: lost.into_iter().chain(gained).collect(),
            signs,
        },
    )
    .await?;
    // The subtree's rows above the group: every one changes (depths too), so all are
    // replaced.
    sqlx::query(&format!(
        "DELETE FROM {s}.ancestry a USING {s}.ancestry sub
          WHERE sub.ancestor_id = $1 AND a.group_id = sub.group_id AND a.ancestor_id = ANY($2)"
    ))
    .bind(group)
    .bind(&old)
    .execute(&mut *conn)
    .await?;
    let (ids, depths): (Vec<Uuid>, Vec<i32>) = new.into_iter().unzip();
    sqlx::query(&format!(
        "INSERT INTO {s}.ancestry (group_id, ancestor_id, depth)
         SELECT sub.group_id, p.id, sub.depth + 1 + p.depth
           FROM {s}.ancestry sub CROSS JOIN unnest($2::uuid[], $3::int[]) AS p(id, depth)
          WHERE sub.ancestor_id = $1"
    ))
    .bind(group)
    .bind(ids)
    .bind(depths)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes a deleted group (a leaf): its members leave its ancestors, its rows go.
pub(super) async fn delete_group(
    conn: &mut PgConnection,
    s: &str,
    group: Uuid,
) -> Result<(), StoreError> {
    let above: Vec<Uuid> = ancestors(conn, s, group)
        .await?
        .into_iter()
        .filter(|(a, _)| *a != group)
        .map(|(a, _)| a)
        .collect();
    let signs = vec![-1; above.len()];
    apply(
        conn,
        s,
        Delta::Subtree {
            group,
            ancestors: above,
            signs,
        },
    )
    .await?;
    for table in [
        "effective WHERE ancestor_id",
        "effective_counts WHERE group_id",
    ] {
        sqlx::query(&format!("DELETE FROM {s}.{table} = $1"))
            .bind(group)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(&format!(
        "DELETE FROM {s}.ancestry WHERE group_id = $1 OR ancestor_id = $1"
    ))
    .bind(group)
    .execute(conn)
    .await?;
    Ok(())
}
