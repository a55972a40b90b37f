//! Corral's persistence engine: the event log (catch-up reader, sequencer, checkpoints), the
//! command executor on top of cqrs-es/postgres-es, and the projectors that build read models.

pub mod audit;
pub mod canonical;
pub mod capabilities;
pub mod channels;
pub mod commands;
pub mod dashboards;
pub mod group_tree;
pub mod health;
pub mod history;
pub mod inventory;
pub mod leader;
pub mod log;
pub mod membership;
pub mod projection;
pub mod public_log;
pub mod rebuild;
pub mod runner;
pub mod sequencer;
pub mod sweeps;
pub mod waiter;
pub mod wake;
pub mod walk;
pub mod watch;

pub use corral_migrations::locks;
pub use log::{CatchUpReader, Cursor, EventRecord};
pub use projection::Projection;

/// Every projection Corral keeps, in the order they are set up.
pub fn projections() -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(sequencer::Sequencer),
        std::sync::Arc::new(group_tree::GroupTreeProjection),
        std::sync::Arc::new(membership::MembershipProjection),
        std::sync::Arc::new(health::HealthProjection),
        std::sync::Arc::new(capabilities::CapabilitiesProjection),
        std::sync::Arc::new(dashboards::DashboardsProjection),
        std::sync::Arc::new(sweeps::SweepsProjection),
    ]
}

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
