//! Membership commands: a per-group lock, registry checks for only the ids a command carries,
//! and a commit through the executor.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use corral_domain::group::GroupType;
use corral_domain::membership::{
    EntryKind, GroupFacts, Membership, MembershipCommand, MembershipDirectory, MembershipError,
    MembershipServices,
};
use corral_domain::metadata::EventMetadata;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::executor::{CommandExecutor, Committed, ExecError};
use super::locked::{detached, Hold, LockTx};

/// Ids read from the registry per purge command.
const PURGE_CHUNK: i64 = 10_000;

/// [`MembershipDirectory`] over `group_registry`, the inventory tables and
/// `membership_registry`, read inside the transaction that holds the group's lock.
struct PgMembershipDirectory {
    group_id: Uuid,
    tx: Arc<LockTx>,
}

fn err(e: sqlx::Error) -> String {
    e.to_string()
}

#[async_trait]
impl MembershipDirectory for PgMembershipDirectory {
    async fn group(&self) -> Result<Option<GroupFacts>, String> {
        let mut tx = self.tx.conn().await;
        let row = sqlx::query("SELECT group_type, deleted FROM group_registry WHERE id = $1")
            .bind(self.group_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(err)?;
        let Some(row) = row else { return Ok(None) };
        let t: String = row.try_get("group_type").map_err(err)?;
        Ok(Some(GroupFacts {
            group_type: GroupType::parse(&t).ok_or_else(|| format!("group type {t}"))?,
            deleted: row.try_get("deleted").map_err(err)?,
        }))
    }

    async fn unknown(&self, kind: GroupType, ids: &[String]) -> Result<Vec<String>, String> {
        let table = match kind {
            GroupType::Device => "devices",
            GroupType::Service => "services",
        };
        let mut tx = self.tx.conn().await;
        sqlx::query_scalar(&format!(
            "SELECT x FROM unnest($1::text[]) WITH ORDINALITY AS u(x, n)
              WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.id = u.x AND t.removed_at IS NULL)
              ORDER BY n"
        ))
        .bind(ids)
        .fetch_all(&mut **tx)
        .await
        .map_err(err)
    }

    async fn present(&self, kind: EntryKind, ids: &[String]) -> Result<HashSet<String>, String> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let mut tx = self.tx.conn().await;
        let found: Vec<String> = sqlx::query_scalar(
            // A join on the ids, not `= ANY($3)`: a generic plan would put the array in a
            // filter over the whole group's index range, and the cost would grow with it.
            "SELECT m.member_id FROM unnest($3::text[]) AS x(id)
               JOIN membership_registry m
                 ON m.group_id = $1 AND m.kind = $2::\"char\" AND m.member_id = x.id",
        )
        .bind(self.group_id)
        .bind(kind.code().to_string())
        .bind(ids)
        .fetch_all(&mut **tx)
        .await
        .map_err(err)?;
        Ok(found.into_iter().collect())
    }
}

/// Runs Membership commands.
pub struct MembershipCommands {
    executor: Arc<CommandExecutor<Membership>>,
    pool: PgPool,
    lock_pool: PgPool,
}

impl MembershipCommands {
    /// `lock_pool` holds the lock transactions (see [`super::groups::GroupCommands::new`]).
    pub fn new(pool: PgPool, lock_pool: PgPool, signal: crate::wake::CommitSignal) -> Self {
        Self {
            executor: Arc::new(CommandExecutor::new(pool.clone()).with_commit_signal(signal)),
            pool,
            lock_pool,
        }
    }

    /// Runs `command` on the membership of `group`.
    ///
    /// The group's membership lock serializes its commands, so concurrent adds never conflict
    /// (each sees the registry as the previous one left it); the shared tree lock keeps a group
    /// from being deleted while a command checks it. Like group commands, the work runs in its
    /// own task so that the locks are held until the events are committed whatever the caller
    /// does.
    pub async fn execute(
        &self,
        group: Uuid,
        command: MembershipCommand,
        metadata: &EventMetadata,
    ) -> Result<Committed, ExecError<MembershipError>> {
        let (executor, lock_pool, metadata) = (
            self.executor.clone(),
            self.lock_pool.clone(),
            metadata.clone(),
        );
        detached(async move {
            let tx = LockTx::begin(&lock_pool, &[Hold::TreeShared, Hold::Members(group)]).await?;
            let services = MembershipServices {
                group_id: group,
                directory: Box::new(PgMembershipDirectory {
                    group_id: group,
                    tx: tx.clone(),
                }),
            };
            let result = executor
                .execute(
                    &group.to_string(),
                    command,
                    &services,
                    None,
                    true,
                    &metadata,
                )
                .await;
            drop(services);
            tx.end().await;
            result
        })
        .await
    }

    /// Removes every entry of a group (after it was deleted), in commands of at most
    /// 10,000 ids per kind. Returns the number of events written.
    pub async fn purge(
        &self,
        group: Uuid,
        metadata: &EventMetadata,
    ) -> Result<usize, ExecError<MembershipError>> {
        let mut events = 0;
        loop {
            let rows = sqlx::query(
                "(SELECT kind::text AS kind, member_id FROM membership_registry
                   WHERE group_id = $1 AND kind = 'S' LIMIT $2)
                 UNION ALL
                 (SELECT kind::text, member_id FROM membership_registry
                   WHERE group_id = $1 AND kind = 'R' LIMIT $2)
                 UNION ALL
                 (SELECT kind::text, member_id FROM membership_registry
                   WHERE group_id = $1 AND kind = 'X' LIMIT $2)",
            )
            .bind(group)
            .bind(PURGE_CHUNK)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Ok(events);
            }
            let (mut static_ids, mut rule_ids, mut excluded_ids) = (vec![], vec![], vec![]);
            for r in rows {
                let kind: String = r.try_get("kind")?;
                let id: String = r.try_get("member_id")?;
                match kind.as_str() {
                    "S" => static_ids.push(id),
                    "R" => rule_ids.push(id),
                    _ => excluded_ids.push(id),
                }
            }
            let command = MembershipCommand::Purge {
                static_ids,
                rule_ids,
                excluded_ids,
            };
            let committed = self.execute(group, command, metadata).await?;
            if committed.events == 0 {
                // Every row read was gone by the time the lock was held: read again.
                continue;
            }
            events += committed.events;
        }
    }
}
