//! Subject commands (tokens and role bindings): decided on the subject's own state. The
//! `access_*` registry that requests are checked against is kept by a trigger in the
//! committing transaction (migration 0008), so a revocation is in force once it commits.

use corral_domain::access::{RoleDefinition, Subject};

use super::executor::SnapshotSchema;
use super::own_state::OwnStateCommands;
use crate::wake::CommitSignal;

impl SnapshotSchema for Subject {
    const SNAPSHOT_VERSION: i32 = 1;
}

/// Runs Subject commands and loads subjects.
pub type AccessCommands = OwnStateCommands<Subject>;

/// Subject commands over `pool`'s `events`. No command is a pure create: the subject id is
/// derived from its name, so a first token and a first grant both may find it existing.
pub fn access_commands(pool: sqlx::PgPool, signal: CommitSignal) -> AccessCommands {
    OwnStateCommands::new(pool, signal, |_| false)
}

impl SnapshotSchema for RoleDefinition {
    const SNAPSHOT_VERSION: i32 = 1;
}

/// Runs custom-role commands.
pub type RoleCommands = OwnStateCommands<RoleDefinition>;

/// Role commands over `pool`'s `events` (the role id is derived from its name).
pub fn role_commands(pool: sqlx::PgPool, signal: CommitSignal) -> RoleCommands {
    OwnStateCommands::new(pool, signal, |_| false)
}
