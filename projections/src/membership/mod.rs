//! Membership: the commands (with their per-group locks and registry checks), the read model
//! `rm_membership` built from Membership events, and the queries over it.
//!
//! The read model keeps each group's entries (static, rule, excluded) and, resolved from them
//! with the precedence exclude > static > rule, its direct members. Effective membership (a
//! group's own members plus every descendant's) is never stored: queries compute it from
//! `direct` and the group tree's closure table.

pub mod read;

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
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

/// Builds `entries`, `direct` and `group_counts`.
#[derive(Debug, Default, Clone, Copy)]
pub struct MembershipProjection;

#[async_trait]
impl Projection for MembershipProjection {
    fn name(&self) -> &'static str {
        MEMBERSHIP
    }

    fn aggregate_types(&self) -> Vec<String> {
        vec!["Membership".to_string()]
    }

    fn needs_metadata(&self) -> bool {
        false
    }

    fn live_schema(&self) -> Option<&'static str> {
        Some(LIVE_SCHEMA)
    }

    async fn create_tables(&self, conn: &mut PgConnection, schema: &str) -> Result<(), StoreError> {
        let s = schema_ident(schema)?;
        let ddl = [
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
                    group_id uuid PRIMARY KEY, direct_count bigint NOT NULL)"
            ),
        ];
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
        // Ids whose direct row must be recomputed, per group.
        let mut touched: BTreeMap<Uuid, BTreeSet<String>> = BTreeMap::new();
        for event in events {
            // The domain's one fold decides what the event does to the entries; this persists
            // it (and `resolve` applies the fold's precedence in SQL).
            let decoded: MembershipEvent = event.decode()?;
            let op = EntryOp::of(&decoded);
            let kind = op.kind.code().to_string();
            let (adds, ids) = (op.adds, op.ids);
            if ids.is_empty() {
                continue;
            }
            let group: Uuid = event
                .aggregate_id
                .parse()
                .map_err(|_| StoreError::Data(format!("group id {:?}", event.aggregate_id)))?;
            if adds {
                add_entries(conn, s, group, &kind, ids, event.recorded_at).await?;
            } else {
                sqlx::query(&format!(
                    "DELETE FROM {s}.entries e USING unnest($3::text[]) AS x(id)
                      WHERE e.group_id = $1 AND e.kind = $2::\"char\" AND e.member_id = x.id"
                ))
                .bind(group)
                .bind(&kind)
                .bind(ids)
                .execute(&mut *conn)
                .await?;
            }
            touched
                .entry(group)
                .or_default()
                .extend(ids.iter().cloned());
        }
        for (group, ids) in touched {
            let ids: Vec<String> = ids.into_iter().collect();
            resolve(conn, s, group, &ids).await?;
        }
        Ok(())
    }
}

async fn add_entries(
    conn: &mut PgConnection,
    s: &str,
    group: Uuid,
    kind: &str,
    ids: &[String],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO {s}.entries (group_id, kind, member_id, since)
         SELECT $1, $2::\"char\", m, $4 FROM unnest($3::text[]) m
         ON CONFLICT DO NOTHING"
    ))
    .bind(group)
    .bind(kind)
    .bind(ids)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Recomputes the direct rows of `ids` in `group` from their entries, and the group's count.
async fn resolve(
    conn: &mut PgConnection,
    s: &str,
    group: Uuid,
    ids: &[String],
) -> Result<(), StoreError> {
    let removed = sqlx::query(&format!(
        "DELETE FROM {s}.direct d USING unnest($2::text[]) AS x(id)
          WHERE d.group_id = $1 AND d.member_id = x.id"
    ))
    .bind(group)
    .bind(ids)
    .execute(&mut *conn)
    .await?
    .rows_affected() as i64;
    let added = sqlx::query(&format!(
        "INSERT INTO {s}.direct (group_id, member_id, source, since)
         SELECT $1, e.member_id,
                CASE WHEN bool_or(kind = 'S') THEN 'S' ELSE 'R' END::\"char\",
                coalesce(min(since) FILTER (WHERE kind = 'S'), min(since))
           FROM unnest($2::text[]) AS x(id)
           JOIN {s}.entries e ON e.group_id = $1 AND e.member_id = x.id
          GROUP BY e.member_id
         HAVING NOT bool_or(kind = 'X')"
    ))
    .bind(group)
    .bind(ids)
    .execute(&mut *conn)
    .await?
    .rows_affected() as i64;
    if added != removed {
        sqlx::query(&format!(
            "INSERT INTO {s}.group_counts (group_id, direct_count) VALUES ($1, $2)
             ON CONFLICT (group_id) DO UPDATE
                SET direct_count = {s}.group_counts.direct_count + EXCLUDED.direct_count"
        ))
        .bind(group)
        .bind(added - removed)
        .execute(conn)
        .await?;
    }
    Ok(())
}
