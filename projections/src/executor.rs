//! The command executor: cqrs-es's load/handle/commit, plus what `CqrsFramework::execute`
//! does not give: the committed version and log cursor, an `expectedVersion` check, and
//! retries of version conflicts for commands that commute.

use corral_domain::metadata::EventMetadata;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::{PgPool, Row};

use crate::log::{parse_xid, Cursor};
use crate::StoreError;

/// How many times a commuting command is retried after a version conflict.
pub const MAX_RETRIES: usize = 8;

/// What a successful command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The aggregate's version after the command (unchanged for a no-op).
    pub version: u64,
    /// How many events were written.
    pub events: usize,
    /// Cursor of the last event written, to wait on read models. `None` for a no-op.
    pub cursor: Option<Cursor>,
}

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum ExecError<E: std::error::Error> {
    /// The aggregate refused the command.
    #[error(transparent)]
    Domain(E),
    /// `expectedVersion` did not match, or a concurrent change won the race.
    #[error("version conflict: expected version {expected}, current version is {actual}")]
    VersionConflict {
        /// What the caller expected.
        expected: u64,
        /// The version now stored.
        actual: u64,
    },
    /// The store failed.
    #[error("event store error: {0}")]
    Store(String),
}

impl<E: std::error::Error> From<sqlx::Error> for ExecError<E> {
    fn from(e: sqlx::Error) -> Self {
        ExecError::Store(e.to_string())
    }
}

/// Loads aggregates and commits their events through postgres-es's plain event store.
pub struct CommandExecutor<A: Aggregate> {
    pool: PgPool,
    store: PersistedEventStore<PostgresEventRepository, A>,
}

impl<A: Aggregate> CommandExecutor<A>
where
    A::Command: Clone,
{
    /// An executor over the `events` table of `pool`.
    pub fn new(pool: PgPool) -> Self {
        let store =
            PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()));
        Self { pool, store }
    }

    /// Runs `command` on aggregate `id`. With `expected_version`, refuses to run against any
    /// other version. A command that `commutes` is retried on version conflicts.
    #[tracing::instrument(skip_all, fields(aggregate.type = A::TYPE, aggregate.id = id), err)]
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        services: &A::Services,
        expected_version: Option<u64>,
        commutes: bool,
        metadata: &EventMetadata,
    ) -> Result<Committed, ExecError<A::Error>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut context = self.store.load_aggregate(id).await.map_err(store_err)?;
            let current = context.current_sequence as u64;
            if let Some(expected) = expected_version {
                if expected != current {
                    return Err(ExecError::VersionConflict {
                        expected,
                        actual: current,
                    });
                }
            }
            let sink = EventSink::<A>::default();
            context
                .aggregate
                .handle(command.clone(), services, &sink)
                .await
                .map_err(ExecError::Domain)?;
            let events = sink.collect().await;
            if events.is_empty() {
                return Ok(Committed {
                    version: current,
                    events: 0,
                    cursor: None,
                });
            }
            let count = events.len();
            match self.store.commit(events, context, metadata.to_map()).await {
                Ok(_) => {
                    let version = current + count as u64;
                    let cursor = self.cursor_of(id, version).await?;
                    return Ok(Committed {
                        version,
                        events: count,
                        cursor: Some(cursor),
                    });
                }
                Err(AggregateError::AggregateConflict) if commutes && attempt <= MAX_RETRIES => {
                    tracing::debug!(attempt, "version conflict on a commuting command; retrying");
                }
                Err(AggregateError::AggregateConflict) => {
                    let actual = self.current_version(id).await?;
                    return Err(ExecError::VersionConflict {
                        expected: expected_version.unwrap_or(current),
                        actual,
                    });
                }
                Err(e) => return Err(store_err(e)),
            }
        }
    }

    /// The stored version of an aggregate (0 when it has no events).
    pub async fn current_version(&self, id: &str) -> Result<u64, ExecError<A::Error>> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT max(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(A::TYPE)
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok(v.unwrap_or(0) as u64)
    }

    async fn cursor_of(&self, id: &str, version: u64) -> Result<Cursor, ExecError<A::Error>> {
        let row = sqlx::query(
            "SELECT transaction_id::text AS txid, global_position FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
        )
        .bind(A::TYPE)
        .bind(id)
        .bind(version as i64)
        .fetch_one(&self.pool)
        .await?;
        let txid: String = row.try_get("txid")?;
        Ok(Cursor {
            transaction_id: parse_xid(&txid).map_err(|e| ExecError::Store(e.to_string()))?,
            global_position: row.try_get("global_position")?,
        })
    }
}

fn store_err<E: std::error::Error>(e: AggregateError<E>) -> ExecError<E> {
    match e {
        AggregateError::UserError(e) => ExecError::Domain(e),
        other => ExecError::Store(other.to_string()),
    }
}

impl<E: std::error::Error> From<StoreError> for ExecError<E> {
    fn from(e: StoreError) -> Self {
        ExecError::Store(e.to_string())
    }
}
