//! SweepRun commands through the executor.

use std::sync::Arc;

use corral_domain::metadata::EventMetadata;
use corral_domain::sweep::{SweepCommand, SweepError, SweepRun};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::EventStore;
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;
use uuid::Uuid;

use crate::executor::{CommandExecutor, Committed, ExecError, SnapshotSchema};
use crate::wake::CommitSignal;
use crate::StoreError;

impl SnapshotSchema for SweepRun {
    const SNAPSHOT_VERSION: i32 = 1;
}

/// Runs SweepRun commands. Every command is decided on the run's own state, so no lock is
/// needed: concurrent commands conflict at commit and the loser is decided again (a report
/// arriving after a cancel then changes nothing).
pub struct SweepCommands {
    executor: Arc<CommandExecutor<SweepRun>>,
    store: PersistedEventStore<PostgresEventRepository, SweepRun>,
}

impl SweepCommands {
    /// Commands over the `events` table of `pool`; commits wake readers through `signal`.
    pub fn new(pool: PgPool, signal: CommitSignal) -> Self {
        let store =
            PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()))
                .with_upcasters(corral_domain::upcast::CorralUpcaster::boxed());
        Self {
            executor: Arc::new(CommandExecutor::new(pool).with_commit_signal(signal)),
            store,
        }
    }

    /// Runs `command` on run `id`, in a task of its own (a caller that goes away cannot cut
    /// it short).
    pub async fn execute(
        &self,
        id: Uuid,
        command: SweepCommand,
        metadata: &EventMetadata,
    ) -> Result<Committed, ExecError<SweepError>> {
        let (executor, metadata, key) = (self.executor.clone(), metadata.clone(), id.to_string());
        let work = async move {
            executor
                .execute(&key, command, &(), None, true, &metadata)
                .await
        };
        tokio::spawn(tracing::Instrument::in_current_span(work))
            .await
            .map_err(|e| ExecError::Store(format!("command task failed: {e}")))?
    }

    /// A run's current state, folded from its events.
    pub async fn load(&self, id: Uuid) -> Result<SweepRun, StoreError> {
        self.store
            .load_aggregate(&id.to_string())
            .await
            .map(|context| context.aggregate)
            .map_err(|e| StoreError::Data(format!("loading sweep run {id}: {e}")))
    }
}
