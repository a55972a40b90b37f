//! SweepRun commands: each is decided on the run's own state, so a report arriving after a
//! cancel, or a redelivered one, changes nothing.

use corral_domain::sweep::SweepRun;

use crate::executor::SnapshotSchema;
use crate::own_state::OwnStateCommands;
use crate::wake::CommitSignal;

impl SnapshotSchema for SweepRun {
    const SNAPSHOT_VERSION: i32 = 1;
}

/// Runs SweepRun commands and loads runs.
pub type SweepCommands = OwnStateCommands<SweepRun>;

/// SweepRun commands over `pool`'s `events`. Scheduling is not treated as a create: the run
/// id comes from the idempotency key, so the run may well exist.
pub fn sweep_commands(pool: sqlx::PgPool, signal: CommitSignal) -> SweepCommands {
    OwnStateCommands::new(pool, signal, |_| false)
}
