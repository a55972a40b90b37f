//! Commands of aggregates decided on their own state alone (no services, no locks): dashboards
//! and sweep runs. Two concurrent commands on one aggregate conflict at commit and the loser
//! is decided again on the winner's state, so every command "commutes".

use std::sync::Arc;

use corral_domain::metadata::EventMetadata;
use corral_domain::upcast::CorralUpcaster;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;
use uuid::Uuid;

use super::executor::{CommandExecutor, Committed, ExecError, SnapshotSchema};
use crate::wake::CommitSignal;
use crate::StoreError;

/// Runs commands of `A` through the executor, and loads `A`'s current state.
pub struct OwnStateCommands<A: Aggregate> {
    executor: Arc<CommandExecutor<A>>,
    store: PersistedEventStore<PostgresEventRepository, A>,
    /// Whether a command creates its aggregate (under an id the caller just generated).
    creates: fn(&A::Command) -> bool,
}

impl<A> OwnStateCommands<A>
where
    A: Aggregate<Services = ()> + SnapshotSchema + Clone + 'static,
    A::Command: Clone + Send + Sync + 'static,
    A::Error: Send + 'static,
{
    /// Commands over the `events` table of `pool`; commits wake readers through `signal`.
    /// `creates` tells which commands create their aggregate, whose state need not be loaded.
    pub fn new(pool: PgPool, signal: CommitSignal, creates: fn(&A::Command) -> bool) -> Self {
        let store =
            PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()))
                .with_upcasters(CorralUpcaster::boxed());
        Self {
            executor: Arc::new(CommandExecutor::new(pool).with_commit_signal(signal)),
            store,
            creates,
        }
    }

    /// Runs `command` on aggregate `id`, in a task of its own: a caller that goes away cannot
    /// cut it short.
    pub async fn execute(
        &self,
        id: Uuid,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<Committed, ExecError<A::Error>> {
        let key = id.to_string();
        if (self.creates)(&command) {
            self.executor.expect_new(&key);
        }
        let (executor, metadata) = (self.executor.clone(), metadata.clone());
        super::locked::detached(async move {
            executor
                .execute(&key, command, &(), None, true, &metadata)
                .await
        })
        .await
    }

    /// The aggregate's current state, folded from its events (the default state for an id
    /// without events).
    #[tracing::instrument(skip_all, fields(aggregate.type = A::TYPE, aggregate.id = %id), err)]
    pub async fn load(&self, id: Uuid) -> Result<A, StoreError> {
        self.store
            .load_aggregate(&id.to_string())
            .await
            .map(|context| context.aggregate)
            .map_err(|e| StoreError::Data(format!("loading {} {id}: {e}", A::TYPE)))
    }
}
