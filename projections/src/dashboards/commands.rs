//! Dashboard commands: a commit through the executor, and reading a dashboard's current
//! state from its events (to copy its widgets into a clone or a template).

use std::sync::Arc;

use corral_domain::dashboard::{Dashboard, DashboardCommand, DashboardError};
use corral_domain::metadata::EventMetadata;
use corral_domain::upcast::CorralUpcaster;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::EventStore;
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;
use uuid::Uuid;

use crate::executor::{CommandExecutor, Committed, ExecError, SnapshotSchema};
use crate::wake::CommitSignal;
use crate::StoreError;

impl SnapshotSchema for Dashboard {
    const SNAPSHOT_VERSION: i32 = 1;
}

/// Runs Dashboard commands.
///
/// A dashboard's commands check only its own state (ownership, widgets, layout version), so
/// they need no lock: two concurrent changes of one dashboard conflict at commit, and the
/// loser is decided again on the winner's state (a stale `expectedLayoutVersion` then
/// becomes `LAYOUT_CONFLICT`, an added widget may then overlap, and so on).
pub struct DashboardCommands {
    executor: Arc<CommandExecutor<Dashboard>>,
    store: PersistedEventStore<PostgresEventRepository, Dashboard>,
}

impl DashboardCommands {
    /// Commands over the `events` table of `pool`; commits wake readers through `signal`.
    pub fn new(pool: PgPool, signal: CommitSignal) -> Self {
        let store =
            PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()))
                .with_upcasters(CorralUpcaster::boxed());
        Self {
            executor: Arc::new(CommandExecutor::new(pool).with_commit_signal(signal)),
            store,
        }
    }

    /// Runs `command` on dashboard `id`. Creates expect a fresh id, which the caller
    /// generated. Like group commands, the work runs in a task of its own, so a caller that
    /// goes away cannot cut it short.
    pub async fn execute(
        &self,
        id: Uuid,
        command: DashboardCommand,
        metadata: &EventMetadata,
    ) -> Result<Committed, ExecError<DashboardError>> {
        let key = id.to_string();
        if matches!(
            command,
            DashboardCommand::Create { .. } | DashboardCommand::PublishTemplate { .. }
        ) {
            self.executor.expect_new(&key);
        }
        let (executor, metadata) = (self.executor.clone(), metadata.clone());
        let work = async move {
            // Every command is decided on the dashboard's own state alone, so retrying one
            // after a conflict decides it again on the state that won: it "commutes".
            executor
                .execute(&key, command, &(), None, true, &metadata)
                .await
        };
        tokio::spawn(tracing::Instrument::in_current_span(work))
            .await
            .map_err(|e| ExecError::Store(format!("command task failed: {e}")))?
    }

    /// A dashboard's current state, folded from its events (a default, never-created state
    /// for an unknown id).
    #[tracing::instrument(skip_all, fields(dashboard.id = %id), err)]
    pub async fn load(&self, id: Uuid) -> Result<Dashboard, StoreError> {
        self.store
            .load_aggregate(&id.to_string())
            .await
            .map(|context| context.aggregate)
            .map_err(|e| StoreError::Data(format!("loading dashboard {id}: {e}")))
    }
}
