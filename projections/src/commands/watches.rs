//! MembershipWatch commands: decided on the watch's own state (the caller resolves the group
//! and the start position; the NATS membership feed reads the events from the log).

use corral_domain::watch::{MembershipWatch, MembershipWatchCommand};

use super::executor::SnapshotSchema;
use super::own_state::OwnStateCommands;
use crate::wake::CommitSignal;

impl SnapshotSchema for MembershipWatch {
    const SNAPSHOT_VERSION: i32 = 1;
}

/// Runs MembershipWatch commands and loads watches.
pub type WatchCommands = OwnStateCommands<MembershipWatch>;

/// MembershipWatch commands over `pool`'s `events`; registering creates the watch under an id
/// the caller just generated.
pub fn watch_commands(pool: sqlx::PgPool, signal: CommitSignal) -> WatchCommands {
    OwnStateCommands::new(pool, signal, |c| {
        matches!(c, MembershipWatchCommand::Register { .. })
    })
}
