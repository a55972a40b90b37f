//! Corral's persistence engine: the event log (catch-up reader, sequencer, checkpoints), the
//! command executor on top of cqrs-es/postgres-es, and the projectors that build read models.

mod aggregate_cache;
pub mod audit;
pub mod canonical;
pub mod capabilities;
pub mod channels;
pub mod dashboards;
pub mod directory;
pub mod executor;
pub mod group_tree;
pub mod health;
pub mod history;
pub mod inventory;
pub mod leader;
pub mod log;
pub mod membership;
pub mod own_state;
pub mod projection;
pub mod public_log;
pub mod rebuild;
pub mod runner;
pub mod sequencer;
pub mod sweeps;
pub mod waiter;
pub mod wake;

pub use corral_migrations::locks;
pub use log::{CatchUpReader, Cursor, EventRecord};
pub use projection::Projection;

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A database operation failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Stored data is not what the code expects.
    #[error("corrupt or unexpected stored data: {0}")]
    Data(String),
    /// The request names something that does not exist.
    #[error("{0}")]
    NotFound(String),
}
