//! The lock transaction of commands whose checks read other aggregates' state: advisory
//! locks that serialize exactly the commands whose checks could race, and the write-side
//! registries read inside the same transaction. The transaction only reads; it ends (rolled
//! back) once the command's events are committed, so the locks are held until then.

use std::future::Future;
use std::sync::Arc;

use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{Mutex, MutexGuard};
use uuid::Uuid;

use super::executor::ExecError;
use crate::locks::{KeyedLock, Lock};

/// One lock a command holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// The hierarchy, shared: the tree may not change shape meanwhile.
    TreeShared,
    /// The hierarchy, exclusively: moves, deletes, rule changes.
    TreeExclusive,
    /// The children of a parent group (sibling names).
    Parent(Uuid),
    /// The membership commands of a group.
    Members(Uuid),
}

impl Hold {
    async fn take(self, tx: &mut Transaction<'static, Postgres>) -> Result<(), sqlx::Error> {
        let keyed = |lock: KeyedLock, id: Uuid| lock.for_id(id.as_u128());
        match self {
            Hold::TreeShared => sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
                .bind(Lock::Tree.key())
                .execute(&mut **tx)
                .await
                .map(drop),
            Hold::TreeExclusive => sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(Lock::Tree.key())
                .execute(&mut **tx)
                .await
                .map(drop),
            Hold::Parent(id) | Hold::Members(id) => {
                let kind = match self {
                    Hold::Parent(_) => KeyedLock::GroupParent,
                    _ => KeyedLock::GroupMembers,
                };
                let (class, key) = keyed(kind, id);
                sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                    .bind(class)
                    .bind(key)
                    .execute(&mut **tx)
                    .await
                    .map(drop)
            }
        }
    }
}

/// A lock transaction, shared between the command runner and the directory that reads in it.
pub(crate) struct LockTx {
    tx: Mutex<Transaction<'static, Postgres>>,
}

impl LockTx {
    /// Begins a transaction on `pool` and takes `holds`, in order (the tree lock first, so
    /// that no two commands wait on each other).
    pub(crate) async fn begin(pool: &PgPool, holds: &[Hold]) -> Result<Arc<Self>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        for hold in holds {
            hold.take(&mut tx).await?;
        }
        Ok(Arc::new(Self { tx: Mutex::new(tx) }))
    }

    /// Takes one more lock (one that depends on what the transaction read).
    pub(crate) async fn hold(&self, hold: Hold) -> Result<(), sqlx::Error> {
        hold.take(&mut *self.tx.lock().await).await
    }

    /// The transaction, for the directory's reads.
    pub(crate) async fn conn(&self) -> MutexGuard<'_, Transaction<'static, Postgres>> {
        self.tx.lock().await
    }

    /// Ends the transaction (it only read), releasing the locks. Called once the command's
    /// events are committed and nothing else holds the transaction.
    pub(crate) async fn end(self: Arc<Self>) {
        match Arc::try_unwrap(self) {
            Ok(this) => {
                if let Err(err) = this.tx.into_inner().rollback().await {
                    tracing::warn!(error = %err, "ending a lock transaction failed; its connection is discarded");
                }
            }
            // Someone still holds it: dropping the last handle rolls it back.
            Err(_) => tracing::warn!("a lock transaction outlived its command"),
        }
    }
}

/// Runs `work` in a task of its own, so that a caller that goes away (a client that
/// disconnects mid-request) cannot cancel it between the commit of its events and the release
/// of its locks.
pub(crate) async fn detached<T, E, F>(work: F) -> Result<T, ExecError<E>>
where
    T: Send + 'static,
    E: std::error::Error + Send + 'static,
    F: Future<Output = Result<T, ExecError<E>>> + Send + 'static,
{
    tokio::spawn(tracing::Instrument::in_current_span(work))
        .await
        .map_err(|e| ExecError::Store(format!("command task failed: {e}")))?
}
