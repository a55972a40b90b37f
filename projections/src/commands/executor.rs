//! The command executor: cqrs-es's handle and postgres-es's commit, plus what
//! `CqrsFramework::execute` does not give: the committed version and a consistency token, an
//! `expectedVersion` check, retries of version conflicts for commands that commute, and
//! snapshots of our own so that loading an aggregate costs the same however long its history.

use corral_domain::metadata::EventMetadata;
use corral_domain::upcast::{upcast_serialized, CorralUpcaster};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore, SerializedEvent};
use cqrs_es::{Aggregate, AggregateError, EventEnvelope, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::{PgPool, Row};

use super::aggregate_cache::{AggregateCache, CachedAggregate};
use crate::log::{parse_xid, Cursor};
use crate::wake::CommitSignal;

pub use super::aggregate_cache::CACHE_CAPACITY;
use crate::StoreError;

/// How many times a commuting command is retried after a version conflict.
pub const MAX_RETRIES: usize = 8;

/// A snapshot is written once an aggregate has this many events after its last one.
pub const SNAPSHOT_EVERY: u64 = 32;

/// What the executor needs to know of an aggregate beyond cqrs-es's `Aggregate`: the shape
/// of its snapshot (bump `SNAPSHOT_VERSION` whenever the state changes meaning, a new field
/// folded from events, say: older snapshots are then ignored, even ones that would still
/// deserialize), and how to count what its events change.
pub trait SnapshotSchema: Aggregate {
    /// The current snapshot shape.
    const SNAPSHOT_VERSION: i32;
    /// True for aggregates whose `apply` folds nothing (their checks read other state):
    /// loading one reads only its version, and no snapshots are taken.
    const STATELESS: bool = false;

    /// What `events` change, in the aggregate's own unit (one per event unless it says
    /// otherwise).
    fn tally(events: &[Self::Event]) -> usize {
        events.len()
    }
}

impl SnapshotSchema for corral_domain::membership::Membership {
    const SNAPSHOT_VERSION: i32 = 1;
    const STATELESS: bool = true;

    /// The member ids the events add or remove.
    fn tally(events: &[Self::Event]) -> usize {
        events.iter().map(|e| e.member_ids().len()).sum()
    }
}

impl SnapshotSchema for corral_domain::group::Group {
    // 2: the rule fields.
    const SNAPSHOT_VERSION: i32 = 2;
}

/// What a successful command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The aggregate's version after the command (unchanged for a no-op).
    pub version: u64,
    /// How many events were written.
    pub events: usize,
    /// Their types, in order.
    pub event_types: Vec<String>,
    /// What the events changed, in the aggregate's own unit ([`SnapshotSchema::tally`]: the
    /// member ids a Membership event adds or removes, one per event otherwise).
    pub changed: usize,
    /// The consistency token of the change; `None` for a no-op.
    pub token: Option<CommitToken>,
}

/// Names a committed change: read models reflect it once they have passed the cursor of the
/// aggregate's event at this version. Resolving it costs a query, so only callers that wait
/// (mutations answering read-your-writes) pay for it; bulk writers do not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitToken {
    /// Aggregate type.
    pub aggregate_type: &'static str,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Version reached.
    pub version: u64,
}

impl CommitToken {
    /// The `(transaction_id, global_position)` of the event, to wait on checkpoints.
    pub async fn cursor(&self, pool: &PgPool) -> Result<Cursor, StoreError> {
        let row = sqlx::query(
            "SELECT transaction_id::text AS txid, global_position FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
        )
        .bind(self.aggregate_type)
        .bind(&self.aggregate_id)
        .bind(self.version as i64)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "no event {}/{} v{}",
                self.aggregate_type, self.aggregate_id, self.version
            ))
        })?;
        let txid: String = row.try_get("txid")?;
        Ok(Cursor {
            transaction_id: parse_xid(&txid)?,
            global_position: row.try_get("global_position")?,
        })
    }
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
    signal: CommitSignal,
    cache: AggregateCache<A>,
}

impl<A: Aggregate + SnapshotSchema + Clone> CommandExecutor<A>
where
    A::Command: Clone,
{
    /// An executor over the `events` table of `pool`.
    pub fn new(pool: PgPool) -> Self {
        // Loading goes through `load`/`load_all`, which upcast; the store's own loads would too.
        let store =
            PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()))
                .with_upcasters(CorralUpcaster::boxed());
        Self {
            pool,
            store,
            signal: CommitSignal::default(),
            cache: AggregateCache::default(),
        }
    }

    /// Tells the executor that `id` has no events yet (the caller generated it), so the next
    /// command on it loads nothing. Should the id exist after all, the commit's optimistic
    /// check conflicts (or a refusal is re-checked) and the command is redone on the stored
    /// state.
    pub fn expect_new(&self, id: &str) {
        self.cache.put(
            id,
            CachedAggregate {
                aggregate: A::default(),
                version: 0,
                snapshot_version: 0,
            },
        );
    }

    /// Wakes readers through `signal` after every commit.
    pub fn with_commit_signal(mut self, signal: CommitSignal) -> Self {
        self.signal = signal;
        self
    }

    /// Runs `command` on aggregate `id`. With `expected_version`, refuses to run against any
    /// other version. A command that `commutes` is retried on version conflicts.
    ///
    /// The state of aggregates this executor touched recently is kept in memory, so a command
    /// usually needs no load. A cached state is only ever trusted as far as the commit's
    /// optimistic check (another process's newer event makes the insert conflict); when the
    /// command writes nothing or is refused, the stored version is checked before answering.
    /// Either way a stale cache means one reload and another try, never a wrong answer: a
    /// conflict caused by a stale cache is not one the caller could have seen, so the command
    /// is re-run once on fresh state, and only a conflict on fresh state is reported (or
    /// retried, for commands that commute).
    // No `err` here: refusals are expected outcomes, and the API logs real failures once.
    #[tracing::instrument(skip_all, fields(aggregate.type = A::TYPE, aggregate.id = id))]
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
        let mut use_cache = true;
        loop {
            attempt += 1;
            let cached = if use_cache { self.cache.get(id) } else { None };
            let from_cache = cached.is_some();
            let (mut context, snapshot_version) = match cached {
                Some(entry) => (
                    context_for(id, entry.aggregate, entry.version),
                    entry.snapshot_version,
                ),
                None if A::STATELESS => (
                    context_for(id, A::default(), self.current_version(id).await?),
                    0,
                ),
                None => self.load(id).await?,
            };
            use_cache = false;
            let current = context.current_sequence as u64;
            // Answers that rest on the cached state alone are confirmed first.
            let stale = || async {
                let stored = self.current_version(id).await?;
                if stored != current {
                    self.cache.remove(id);
                }
                Ok::<_, ExecError<A::Error>>(stored != current)
            };
            if let Some(expected) = expected_version {
                if expected != current {
                    if from_cache && stale().await? {
                        continue;
                    }
                    return Err(ExecError::VersionConflict {
                        expected,
                        actual: current,
                    });
                }
            }
            let sink = EventSink::<A>::default();
            if let Err(err) = context
                .aggregate
                .handle(command.clone(), services, &sink)
                .await
            {
                if from_cache && stale().await? {
                    continue;
                }
                return Err(ExecError::Domain(err));
            }
            let events = sink.collect().await;
            if events.is_empty() {
                if from_cache && stale().await? {
                    continue;
                }
                return Ok(Committed {
                    version: current,
                    events: 0,
                    event_types: vec![],
                    changed: 0,
                    token: None,
                });
            }
            let count = events.len();
            let event_types: Vec<String> = events
                .iter()
                .map(cqrs_es::DomainEvent::event_type)
                .collect();
            let changed = A::tally(&events);
            let version = current + count as u64;
            let snapshot = !A::STATELESS && version - snapshot_version >= SNAPSHOT_EVERY;
            let state = if snapshot {
                serde_json::to_value(&context.aggregate).ok()
            } else {
                None
            };
            let after = context.aggregate.clone();
            match self.store.commit(events, context, metadata.to_map()).await {
                Ok(_) => {
                    self.signal.committed();
                    // The events are committed: what follows must not turn success into an error.
                    let mut snapshot_version = snapshot_version;
                    if let Some(state) = state {
                        match self.save_snapshot(id, version, state).await {
                            Ok(()) => snapshot_version = version,
                            Err(err) => {
                                tracing::warn!(error = %err, "could not save a snapshot; the next commit retries")
                            }
                        }
                    }
                    self.cache.put(
                        id,
                        CachedAggregate {
                            aggregate: after,
                            version,
                            snapshot_version,
                        },
                    );
                    let token = CommitToken {
                        aggregate_type: A::TYPE,
                        aggregate_id: id.to_string(),
                        version,
                    };
                    return Ok(Committed {
                        version,
                        events: count,
                        event_types,
                        changed,
                        token: Some(token),
                    });
                }
                // A stale cache, not a concurrent writer the caller could have seen: reload.
                Err(AggregateError::AggregateConflict) if from_cache => {
                    self.cache.remove(id);
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

    /// Loads an aggregate from its snapshot (if any, and if it still deserializes) and the
    /// events after it, in one query. Returns the context and the snapshot's version.
    async fn load(
        &self,
        id: &str,
    ) -> Result<(EventStoreAggregateContext<A>, u64), ExecError<A::Error>> {
        let rows = sqlx::query(
            "WITH s AS (SELECT version, state FROM aggregate_snapshots
                         WHERE aggregate_type = $1 AND aggregate_id = $2 AND schema_version = $3)
             SELECT s.version AS snapshot_version, s.state AS snapshot_state,
                    e.sequence, e.event_type, e.event_version, e.payload, e.metadata
               FROM (SELECT 1) one
               LEFT JOIN s ON true
               LEFT JOIN events e ON e.aggregate_type = $1 AND e.aggregate_id = $2
                                 AND e.sequence > coalesce(s.version, 0)
              ORDER BY e.sequence",
        )
        .bind(A::TYPE)
        .bind(id)
        .bind(A::SNAPSHOT_VERSION)
        .fetch_all(&self.pool)
        .await?;
        let mut aggregate = A::default();
        let mut version = 0u64;
        let mut snapshot_version = 0u64;
        if let Some(first) = rows.first() {
            let snap: Option<i64> = first.try_get("snapshot_version")?;
            let state: Option<serde_json::Value> = first.try_get("snapshot_state")?;
            if let (Some(v), Some(state)) = (snap, state) {
                match serde_json::from_value::<A>(state) {
                    Ok(restored) => {
                        aggregate = restored;
                        version = v as u64;
                        snapshot_version = v as u64;
                    }
                    Err(err) => {
                        // The aggregate's shape changed: replay everything, and the next
                        // snapshot replaces this one.
                        tracing::warn!(error = %err, "ignoring a snapshot that no longer deserializes");
                        return self.load_all(id).await;
                    }
                }
            }
        }
        for row in &rows {
            if let Some(sequence) = apply_row(&mut aggregate, id, row)? {
                version = sequence;
            }
        }
        Ok((context_for(id, aggregate, version), snapshot_version))
    }

    /// Replays every event, upcast like [`Self::load`]'s (used when a snapshot is unusable).
    async fn load_all(
        &self,
        id: &str,
    ) -> Result<(EventStoreAggregateContext<A>, u64), ExecError<A::Error>> {
        let rows = sqlx::query(
            "SELECT sequence, event_type, event_version, payload, metadata FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut aggregate = A::default();
        let mut version = 0u64;
        for row in &rows {
            if let Some(sequence) = apply_row(&mut aggregate, id, row)? {
                version = sequence;
            }
        }
        Ok((context_for(id, aggregate, version), 0))
    }

    async fn save_snapshot(
        &self,
        id: &str,
        version: u64,
        state: serde_json::Value,
    ) -> Result<(), ExecError<A::Error>> {
        sqlx::query(
            "INSERT INTO aggregate_snapshots (aggregate_type, aggregate_id, schema_version, version, state)
             VALUES ($1, $2, $5, $3, $4)
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
                SET version = EXCLUDED.version, state = EXCLUDED.state,
                    schema_version = EXCLUDED.schema_version, taken_at = now()
              WHERE aggregate_snapshots.version < EXCLUDED.version
                 OR aggregate_snapshots.schema_version <> EXCLUDED.schema_version",
        )
        .bind(A::TYPE)
        .bind(id)
        .bind(version as i64)
        .bind(state)
        .bind(A::SNAPSHOT_VERSION)
        .execute(&self.pool)
        .await?;
        Ok(())
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
}

/// Applies one stored event (columns `sequence`, `event_type`, `event_version`, `payload`,
/// `metadata`) to `aggregate`, upcast to its current version first (see
/// `corral_domain::upcast`). Returns its sequence, or `None` for a row without an event
/// (the outer join of [`CommandExecutor::load`]).
fn apply_row<A: Aggregate>(
    aggregate: &mut A,
    id: &str,
    row: &sqlx::postgres::PgRow,
) -> Result<Option<u64>, ExecError<A::Error>> {
    let Some(sequence) = row.try_get::<Option<i64>, _>("sequence")? else {
        return Ok(None);
    };
    let stored = SerializedEvent::new(
        id.to_string(),
        sequence as usize,
        A::TYPE.to_string(),
        row.try_get("event_type")?,
        row.try_get("event_version")?,
        row.try_get("payload")?,
        row.try_get("metadata")?,
    );
    let serialized = upcast_serialized(stored)
        .map_err(|e| ExecError::Store(format!("{} {id} event {sequence}: {e}", A::TYPE)))?;
    let envelope = EventEnvelope::<A>::try_from(serialized)
        .map_err(|e| ExecError::Store(format!("{} {id} event {sequence}: {e}", A::TYPE)))?;
    aggregate.apply(envelope.payload);
    Ok(Some(sequence as u64))
}

fn context_for<A: Aggregate>(
    id: &str,
    aggregate: A,
    version: u64,
) -> EventStoreAggregateContext<A> {
    EventStoreAggregateContext {
        aggregate_id: id.to_string(),
        aggregate,
        current_sequence: version as usize,
        current_snapshot: None,
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
