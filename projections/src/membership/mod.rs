//! Membership: the commands (with their per-group locks and registry checks), the read model
//! `rm_membership` built from Membership events, and the queries over it.
//!
//! The read model keeps each group's entries (static, rule, excluded) and, resolved from them
//! with the precedence exclude > static > rule, its direct members. Effective membership (a
//! group's own members plus every descendant's) is stored too, with its own copy of the tree
//! (the projector reads Group events as well as Membership events): see [`effective`].

mod effective;
pub mod read;

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use corral_domain::group::GroupEvent;
use corral_domain::membership::{EntryOp, MembershipEvent};
use sqlx::PgConnection;
use uuid::Uuid;

pub use crate::commands::membership::MembershipCommands;

use crate::log::EventRecord;
use crate::projection::{schema_ident, Projection};
use crate::StoreError;

/// Projector and checkpoint name.
pub const MEMBERSHIP: &str = "membership";
/// The schema that serves queries.
pub const LIVE_SCHEMA: &str = "rm_membership";

/// Builds `entries`, `direct`, `group_counts`, `ancestry`, `effective` and
/// `effective_counts`.
#[derive(Debug, Default, Clone, Copy)]
pub struct MembershipProjection;

#[async_trait]
impl Projection for MembershipProjection {
    fn name(&self) -> &'static str {
        MEMBERSHIP
    }

    fn aggregate_types(&self) -> Vec<String> {
        vec!["Group".to_string(), "Membership".to_string()]
    }

    fn needs_metadata(&self) -> bool {
        false
    }

    fn live_schema(&self) -> Option<&'static str> {
        Some(LIVE_SCHEMA)
    }

    /// 2: effective membership stored (`ancestry`, `effective`, `effective_counts`) and
    /// per-source direct counts.
    fn shape(&self) -> u32 {
        2
    }

    async fn create_tables(&self, conn: &mut PgConnection, schema: &str) -> Result<(), StoreError> {
        let s = schema_ident(schema)?;
        let mut ddl = vec![
            format!(
                "CREATE TABLE {s}.entries (
                    group_id uuid NOT NULL, kind \"char\" NOT NULL,
                    member_id text COLLATE \"C\" NOT NULL, since timestamptz NOT NULL,
                    PRIMARY KEY (group_id, member_id, kind))"
            ),
            // member_id sorts bytewise so that keyset cursors compare as pages sort.
            format!(
                "CREATE TABLE {s}.direct (
                    group_id uuid NOT NULL, member_id text COLLATE \"C\" NOT NULL,
                    source \"char\" NOT NULL, since timestamptz NOT NULL,
                    PRIMARY KEY (group_id, member_id))"
            ),
            format!("CREATE INDEX direct_member_idx ON {s}.direct (member_id, group_id)"),
            format!(
                "CREATE TABLE {s}.group_counts (
                    group_id uuid PRIMARY KEY, direct_count bigint NOT NULL,
                    static_count bigint NOT NULL, rule_count bigint NOT NULL)"
            ),
        ];
        ddl.extend(effective::ddl(s));
        for statement in ddl {
            sqlx::query(&statement).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        schema: &str,
        events: &[EventRecord],
    ) -> Result<(), StoreError> {
        let s = schema_ident(schema)?;
        let mut entries = EntryBatch::default();
        // Consecutive creates are placed together (a child may follow its parent).
        let mut created: Vec<(Uuid, Option<Uuid>)> = Vec::new();
        for event in events {
            let group: Uuid = event
                .aggregate_id
                .parse()
                .map_err(|_| StoreError::Data(format!("group id {:?}", event.aggregate_id)))?;
            if event.aggregate_type == "Group" {
                // Only the tree's shape matters here; other Group events are skipped
                // without decoding.
                if !matches!(
                    event.event_type.as_str(),
                    "GroupCreated" | "GroupMoved" | "GroupDeleted"
                ) {
                    continue;
                }
                match event.decode::<GroupEvent>()? {
                    GroupEvent::GroupCreated { parent_id, .. } => created.push((group, parent_id)),
                    GroupEvent::GroupMoved { new_parent_id, .. } => {
                        effective::create(conn, s, &std::mem::take(&mut created)).await?;
                        effective::move_group(conn, s, group, new_parent_id).await?;
                    }
                    GroupEvent::GroupDeleted {} => {
                        effective::create(conn, s, &std::mem::take(&mut created)).await?;
                        effective::delete_group(conn, s, group).await?;
                    }
                    _ => {}
                }
                continue;
            }
            // The domain's one fold decides what the event does to the entries; this persists
            // it (and `resolve` applies the fold's precedence in SQL).
            let decoded: MembershipEvent = event.decode()?;
            entries.push(group, &EntryOp::of(&decoded), event.recorded_at);
        }
        effective::create(conn, s, &created).await?;
        // Direct changes go last, against the tree as the batch left it (see `effective`).
        let touched = entries.write(conn, s).await?;
        // In bounded statements: a catch-up batch of 5,000 events of 1,000 ids each touches
        // millions of pairs. Each pair is in one chunk, and effective membership is linear in
        // the direct rows, so chunk by chunk gives the same result.
        for chunk in touched.chunks(CHUNK) {
            resolve(conn, s, chunk).await?;
        }
        Ok(())
    }
}

/// Most (group, member) pairs or entries one statement carries.
const CHUNK: usize = 20_000;

/// What a batch does to one entry: remove it, or have it (since `since`; `overwrite` when
/// the batch removed it first, so the stored one, if any, goes).
#[derive(Debug, Clone, Copy)]
enum Pending {
    Remove,
    Insert {
        since: DateTime<Utc>,
        overwrite: bool,
    },
}

/// The entry changes of one batch, folded per entry: applied in log order, adds keep an
/// existing entry's `since` and removes drop it, so the last operation decides, and an add
/// after a remove replaces the stored entry.
#[derive(Default)]
struct EntryBatch {
    ops: HashMap<(Uuid, char, String), Pending>,
}

impl EntryBatch {
    fn push(&mut self, group: Uuid, op: &EntryOp<'_>, at: DateTime<Utc>) {
        let kind = op.kind.code();
        for id in op.ids {
            let key = (group, kind, id.clone());
            let next = match (op.adds, self.ops.get(&key)) {
                (false, _) => Pending::Remove,
                (true, None) => Pending::Insert {
                    since: at,
                    overwrite: false,
                },
                (true, Some(Pending::Remove)) => Pending::Insert {
                    since: at,
                    overwrite: true,
                },
                (true, Some(insert)) => *insert,
            };
            self.ops.insert(key, next);
        }
    }

    /// Writes the entries (a delete and an insert per chunk); returns the (group, member)
    /// pairs whose direct row must be recomputed, each once.
    async fn write(
        self,
        conn: &mut PgConnection,
        s: &str,
    ) -> Result<Vec<(Uuid, String)>, StoreError> {
        let ops: Vec<_> = self.ops.into_iter().collect();
        for chunk in ops.chunks(CHUNK) {
            write_entries(conn, s, chunk).await?;
        }
        let touched: BTreeSet<(Uuid, String)> = ops
            .into_iter()
            .map(|((group, _, member), _)| (group, member))
            .collect();
        Ok(touched.into_iter().collect())
    }
}

/// Writes one chunk of folded entry changes: a delete, then an insert.
async fn write_entries(
    conn: &mut PgConnection,
    s: &str,
    ops: &[((Uuid, char, String), Pending)],
) -> Result<(), StoreError> {
    let (mut dg, mut dk, mut dm) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ig, mut ik, mut im, mut is) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((group, kind, member), pending) in ops.iter().cloned() {
        let (remove, insert) = match pending {
            Pending::Remove => (true, None),
            Pending::Insert { since, overwrite } => (overwrite, Some(since)),
        };
        if remove {
            dg.push(group);
            dk.push(kind.to_string());
            dm.push(member.clone());
        }
        if let Some(since) = insert {
            ig.push(group);
            ik.push(kind.to_string());
            im.push(member);
            is.push(since);
        }
    }
    if !dg.is_empty() {
        sqlx::query(&format!(
            "DELETE FROM {s}.entries e
                  USING unnest($1::uuid[], $2::text[], $3::text[]) AS x(g, k, m)
                  WHERE e.group_id = x.g AND e.kind = x.k::\"char\" AND e.member_id = x.m"
        ))
        .bind(dg)
        .bind(dk)
        .bind(dm)
        .execute(&mut *conn)
        .await?;
    }
    if !ig.is_empty() {
        sqlx::query(&format!(
            "INSERT INTO {s}.entries (group_id, kind, member_id, since)
                 SELECT g, k::\"char\", m, t
                   FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
                        AS x(g, k, m, t)
                 ON CONFLICT DO NOTHING"
        ))
        .bind(ig)
        .bind(ik)
        .bind(im)
        .bind(is)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Recomputes the direct rows of the touched (group, member) pairs from their entries, the
/// groups' direct counts, and effective membership.
async fn resolve(
    conn: &mut PgConnection,
    s: &str,
    touched: &[(Uuid, String)],
) -> Result<(), StoreError> {
    if touched.is_empty() {
        return Ok(());
    }
    let (groups, members): (Vec<Uuid>, Vec<String>) = touched.iter().cloned().unzip();
    let removed: Vec<(Uuid, String, i8)> = sqlx::query_as(&format!(
        "DELETE FROM {s}.direct d USING unnest($1::uuid[], $2::text[]) AS x(g, m)
          WHERE d.group_id = x.g AND d.member_id = x.m
         RETURNING d.group_id, d.member_id, d.source"
    ))
    .bind(&groups)
    .bind(&members)
    .fetch_all(&mut *conn)
    .await?;
    let added: Vec<(Uuid, String, i8)> = sqlx::query_as(&format!(
        "INSERT INTO {s}.direct (group_id, member_id, source, since)
         SELECT e.group_id, e.member_id,
                CASE WHEN bool_or(kind = 'S') THEN 'S' ELSE 'R' END::\"char\",
                coalesce(min(since) FILTER (WHERE kind = 'S'), min(since))
           FROM unnest($1::uuid[], $2::text[]) AS x(g, m)
           JOIN {s}.entries e ON e.group_id = x.g AND e.member_id = x.m
          GROUP BY e.group_id, e.member_id
         HAVING NOT bool_or(kind = 'X')
         RETURNING group_id, member_id, source"
    ))
    .bind(&groups)
    .bind(&members)
    .fetch_all(&mut *conn)
    .await?;
    // Per pair: the change of its static and rule rows; per group: of its counts.
    let mut pairs: HashMap<(Uuid, String), (i32, i32)> = HashMap::new();
    let mut counts: HashMap<Uuid, (i64, i64, i64)> = HashMap::new();
    for (rows, sign) in [(removed, -1), (added, 1)] {
        for (group, member, source) in rows {
            let statik = source as u8 == b'S';
            let d = pairs.entry((group, member)).or_default();
            let c = counts.entry(group).or_default();
            c.0 += i64::from(sign);
            if statik {
                d.0 += sign;
                c.1 += i64::from(sign);
            } else {
                d.1 += sign;
                c.2 += i64::from(sign);
            }
        }
    }
    counts.retain(|_, c| *c != (0, 0, 0));
    if !counts.is_empty() {
        let mut cols: (Vec<Uuid>, Vec<i64>, Vec<i64>, Vec<i64>) = Default::default();
        for (g, (d, st, r)) in counts {
            cols.0.push(g);
            cols.1.push(d);
            cols.2.push(st);
            cols.3.push(r);
        }
        sqlx::query(&format!(
            "INSERT INTO {s}.group_counts AS c (group_id, direct_count, static_count, rule_count)
             SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[])
             ON CONFLICT (group_id) DO UPDATE
                SET direct_count = c.direct_count + EXCLUDED.direct_count,
                    static_count = c.static_count + EXCLUDED.static_count,
                    rule_count = c.rule_count + EXCLUDED.rule_count"
        ))
        .bind(cols.0)
        .bind(cols.1)
        .bind(cols.2)
        .bind(cols.3)
        .execute(&mut *conn)
        .await?;
    }
    let mut delta = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((g, m), (ds, dr)) in pairs {
        if (ds, dr) != (0, 0) {
            delta.0.push(g);
            delta.1.push(m);
            delta.2.push(ds);
            delta.3.push(dr);
        }
    }
    effective::apply(
        conn,
        s,
        effective::Delta::Direct {
            groups: delta.0,
            members: delta.1,
            ds: delta.2,
            dr: delta.3,
        },
    )
    .await
}
