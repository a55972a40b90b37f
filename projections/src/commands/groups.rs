//! Group commands with their cross-group checks: the write-side `group_registry` read under
//! advisory locks that serialize exactly the commands whose checks could race.
//!
//! Every hierarchy command takes the tree lock first (so no deadlocks):
//! - move and delete take it exclusively: cycles, depth and "no children" are checked
//!   against a tree nobody else is changing (two admins moving A under B and B under A at the
//!   same instant: the second sees the first's move and gets `CYCLE`);
//! - create and rename take it shared, plus an exclusive lock on the parent whose children's
//!   names they check, so creates under different parents run in parallel.
//!
//! The registry is updated by a trigger in the same transaction as the events, so it is
//! current when the locks are released.

use std::sync::Arc;

use async_trait::async_trait;
use corral_domain::group::{
    DirectoryEntry, DirectoryError, Group, GroupCommand, GroupDirectory, GroupError, GroupType,
    RuleRef,
};
use corral_domain::metadata::EventMetadata;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::executor::{CommandExecutor, Committed, ExecError};
use super::locked::{detached, Hold, LockTx};

/// [`GroupDirectory`] over `group_registry`, read inside the transaction that holds the locks.
pub struct PgGroupDirectory {
    tx: Arc<LockTx>,
}

fn dir_err(e: sqlx::Error) -> DirectoryError {
    DirectoryError(e.to_string())
}

/// The ancestors of `$1` (itself at hops 0), for its depth.
const UP_FROM_1: &str = "WITH RECURSIVE up AS (
        SELECT id, parent_id, 0 AS hops FROM group_registry WHERE id = $1 AND NOT deleted
        UNION ALL
        SELECT r.id, r.parent_id, up.hops + 1 FROM group_registry r JOIN up ON r.id = up.parent_id
         WHERE up.hops < 64)";

/// Decodes `group_type, parent_id, depth` (all NULL when the group is missing).
fn entry_from_row(
    id: Uuid,
    row: &sqlx::postgres::PgRow,
) -> Result<Option<DirectoryEntry>, DirectoryError> {
    let Some(group_type) = row
        .try_get::<Option<String>, _>("group_type")
        .map_err(dir_err)?
    else {
        return Ok(None);
    };
    let depth: Option<i32> = row.try_get("depth").map_err(dir_err)?;
    Ok(Some(DirectoryEntry {
        id,
        group_type: GroupType::parse(&group_type)
            .ok_or_else(|| DirectoryError(format!("unknown group type {group_type}")))?,
        parent_id: row.try_get("parent_id").map_err(dir_err)?,
        depth: depth.unwrap_or(0) as u32,
    }))
}

#[async_trait]
impl GroupDirectory for PgGroupDirectory {
    async fn placement(
        &self,
        parent: Uuid,
        name: &str,
        except: Option<Uuid>,
    ) -> Result<(Option<DirectoryEntry>, bool), DirectoryError> {
        let mut tx = self.tx.conn().await;
        let row = sqlx::query(&format!(
            "{UP_FROM_1}
             SELECT g.group_type, g.parent_id, (SELECT max(hops) FROM up) AS depth,
                    EXISTS (SELECT 1 FROM group_registry WHERE parent_id = $1 AND NOT deleted
                            AND lower(name) = lower($2) AND id IS DISTINCT FROM $3) AS taken
               FROM (SELECT 1) one LEFT JOIN group_registry g ON g.id = $1 AND NOT g.deleted"
        ))
        .bind(parent)
        .bind(name)
        .bind(except)
        .fetch_one(&mut **tx)
        .await
        .map_err(dir_err)?;
        let taken: bool = row.try_get("taken").map_err(dir_err)?;
        Ok((entry_from_row(parent, &row)?, taken))
    }

    async fn get(&self, id: Uuid) -> Result<Option<DirectoryEntry>, DirectoryError> {
        let mut tx = self.tx.conn().await;
        let row = sqlx::query(&format!(
            "{UP_FROM_1}
             SELECT g.group_type, g.parent_id, (SELECT max(hops) FROM up) AS depth
               FROM group_registry g WHERE g.id = $1 AND NOT g.deleted"
        ))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(dir_err)?;
        match row {
            Some(row) => entry_from_row(id, &row),
            None => Ok(None),
        }
    }

    async fn name_taken(
        &self,
        parent: Uuid,
        name: &str,
        except: Option<Uuid>,
    ) -> Result<bool, DirectoryError> {
        let mut tx = self.tx.conn().await;
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM group_registry WHERE parent_id = $1 AND NOT deleted
                AND lower(name) = lower($2) AND id IS DISTINCT FROM $3)",
        )
        .bind(parent)
        .bind(name)
        .bind(except)
        .fetch_one(&mut **tx)
        .await
        .map_err(dir_err)
    }

    async fn in_subtree(&self, root: Uuid, candidate: Uuid) -> Result<bool, DirectoryError> {
        let mut tx = self.tx.conn().await;
        sqlx::query_scalar(
            "WITH RECURSIVE up AS (
                SELECT id, parent_id, 0 AS hops FROM group_registry WHERE id = $2
                UNION ALL
                SELECT r.id, r.parent_id, up.hops + 1 FROM group_registry r JOIN up ON r.id = up.parent_id
                 WHERE up.hops < 64)
             SELECT EXISTS (SELECT 1 FROM up WHERE id = $1)",
        )
        .bind(root)
        .bind(candidate)
        .fetch_one(&mut **tx)
        .await
        .map_err(dir_err)
    }

    async fn subtree_height(&self, id: Uuid) -> Result<u32, DirectoryError> {
        let mut tx = self.tx.conn().await;
        let h: Option<i32> = sqlx::query_scalar(
            "WITH RECURSIVE down AS (
                SELECT id, 0 AS level FROM group_registry WHERE id = $1
                UNION ALL
                SELECT r.id, down.level + 1 FROM group_registry r JOIN down ON r.parent_id = down.id
                 WHERE NOT r.deleted AND down.level < 64)
             SELECT max(level) FROM down",
        )
        .bind(id)
        .fetch_one(&mut **tx)
        .await
        .map_err(dir_err)?;
        Ok(h.unwrap_or(0) as u32)
    }

    async fn subtrees(&self, roots: &[Uuid]) -> Result<Vec<Uuid>, DirectoryError> {
        let mut tx = self.tx.conn().await;
        sqlx::query_scalar(
            "WITH RECURSIVE down AS (
                SELECT id, 0 AS level FROM group_registry WHERE id = ANY($1) AND NOT deleted
                UNION
                SELECT r.id, down.level + 1 FROM group_registry r JOIN down ON r.parent_id = down.id
                 WHERE NOT r.deleted AND down.level < 64)
             SELECT DISTINCT id FROM down",
        )
        .bind(roots)
        .fetch_all(&mut **tx)
        .await
        .map_err(dir_err)
    }

    async fn rule_refs(&self, groups: &[Uuid]) -> Result<Vec<RuleRef>, DirectoryError> {
        let mut tx = self.tx.conn().await;
        let rows = sqlx::query(
            "SELECT (r ->> 'group_id')::uuid AS group_id, (r ->> 'direct')::boolean AS direct
               FROM group_registry g, jsonb_array_elements(g.rule_refs) r
              WHERE g.id = ANY($1) AND NOT g.deleted",
        )
        .bind(groups)
        .fetch_all(&mut **tx)
        .await
        .map_err(dir_err)?;
        rows.iter()
            .map(|r| {
                Ok(RuleRef {
                    group_id: r.try_get("group_id").map_err(dir_err)?,
                    direct: r.try_get("direct").map_err(dir_err)?,
                })
            })
            .collect()
    }

    async fn rule_referrers(&self, id: Uuid) -> Result<Vec<Uuid>, DirectoryError> {
        let mut tx = self.tx.conn().await;
        sqlx::query_scalar(
            "SELECT DISTINCT g.id FROM group_registry g, jsonb_array_elements(g.rule_refs) r
              WHERE NOT g.deleted AND (r ->> 'group_id')::uuid = $1 ORDER BY g.id",
        )
        .bind(id)
        .fetch_all(&mut **tx)
        .await
        .map_err(dir_err)
    }

    async fn has_children(&self, id: Uuid) -> Result<bool, DirectoryError> {
        let mut tx = self.tx.conn().await;
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM group_registry WHERE parent_id = $1 AND NOT deleted)",
        )
        .bind(id)
        .fetch_one(&mut **tx)
        .await
        .map_err(dir_err)
    }
}

/// Runs Group commands: takes the locks the command needs, checks it against the registry,
/// commits through the executor.
pub struct GroupCommands {
    executor: Arc<CommandExecutor<Group>>,
    lock_pool: PgPool,
}

impl GroupCommands {
    /// `lock_pool` holds the lock transactions; keep it separate from `pool` so that lock
    /// holders can never starve the connections their own commits need.
    pub fn new(pool: PgPool, lock_pool: PgPool, signal: crate::wake::CommitSignal) -> Self {
        Self {
            executor: Arc::new(CommandExecutor::new(pool).with_commit_signal(signal)),
            lock_pool,
        }
    }

    /// The aggregate id a command addresses.
    pub fn target(command: &GroupCommand) -> Uuid {
        match command {
            GroupCommand::EnsureRoot { group_type } => group_type.root_id(),
            GroupCommand::Create { id, .. }
            | GroupCommand::Rename { id, .. }
            | GroupCommand::Update { id, .. }
            | GroupCommand::Move { id, .. }
            | GroupCommand::Delete { id }
            | GroupCommand::SetRule { id, .. }
            | GroupCommand::ClearRule { id }
            | GroupCommand::SetCapabilities { id, .. } => *id,
        }
    }

    /// Executes a command with the locks and checks it needs, in a task of its own (see
    /// [`detached`]): the locks are always held until the events are committed.
    pub async fn execute(
        &self,
        command: GroupCommand,
        expected_version: Option<u64>,
        metadata: &EventMetadata,
    ) -> Result<Committed, ExecError<GroupError>> {
        let (executor, lock_pool, metadata) = (
            self.executor.clone(),
            self.lock_pool.clone(),
            metadata.clone(),
        );
        detached(async move {
            locked(&executor, &lock_pool, command, expected_version, &metadata).await
        })
        .await
    }
}

/// What a command locks before its checks run.
fn holds(command: &GroupCommand) -> Vec<Hold> {
    match command {
        // Rule changes take the tree lock exclusively too: their cycle checks follow other
        // rules and subtrees, which must not change meanwhile.
        GroupCommand::Move { .. }
        | GroupCommand::Delete { .. }
        | GroupCommand::EnsureRoot { .. }
        | GroupCommand::SetRule { .. } => vec![Hold::TreeExclusive],
        GroupCommand::Create { parent_id, .. } => vec![Hold::TreeShared, Hold::Parent(*parent_id)],
        // And the lock of its parent, once read (see `locked`).
        GroupCommand::Rename { .. } => vec![Hold::TreeShared],
        GroupCommand::Update { .. }
        | GroupCommand::ClearRule { .. }
        | GroupCommand::SetCapabilities { .. } => vec![],
    }
}

async fn locked(
    executor: &CommandExecutor<Group>,
    lock_pool: &PgPool,
    command: GroupCommand,
    expected_version: Option<u64>,
    metadata: &EventMetadata,
) -> Result<Committed, ExecError<GroupError>> {
    let id = GroupCommands::target(&command);
    let tx = LockTx::begin(lock_pool, &holds(&command)).await?;
    if let GroupCommand::Rename { id, .. } = &command {
        let parent: Option<Uuid> =
            sqlx::query_scalar("SELECT parent_id FROM group_registry WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut **tx.conn().await)
                .await?
                .flatten();
        if let Some(parent) = parent {
            tx.hold(Hold::Parent(parent)).await?;
        }
    }
    let commutes = command.commutes();
    if let GroupCommand::Create { id, .. } = &command {
        // Ids of new groups are generated by the caller: nothing to load.
        executor.expect_new(&id.to_string());
    }
    let services: Box<dyn GroupDirectory> = Box::new(PgGroupDirectory { tx: tx.clone() });
    let result = executor
        .execute(
            &id.to_string(),
            command,
            &services,
            expected_version,
            commutes,
            metadata,
        )
        .await;
    drop(services);
    tx.end().await;
    result
}
