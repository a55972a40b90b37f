//! SweepRun commands: each is decided on the run's own state, so a report arriving after a
//! cancel, or a redelivered one, changes nothing.

use corral_domain::sweep::SweepRun;

use super::executor::SnapshotSchema;
use super::own_state::OwnStateCommands;
use crate::wake::CommitSignal;

impl SnapshotSchema for SweepRun {
    /// 2: the state keeps who scheduled the run.
    const SNAPSHOT_VERSION: i32 = 2;
}

/// Runs SweepRun commands and loads runs.
pub type SweepCommands = OwnStateCommands<SweepRun>;

/// SweepRun commands over `pool`'s `events`. Scheduling is not treated as a create: the run
/// id is reserved against the subject's idempotency key before it is scheduled, and a retry
/// of that request (after a crash, or one that raced it) schedules the same id again.
pub fn sweep_commands(pool: sqlx::PgPool, signal: CommitSignal) -> SweepCommands {
    OwnStateCommands::new(pool, signal, |_| false)
}
