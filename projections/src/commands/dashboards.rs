//! Dashboard commands: each is decided on the dashboard's own state (ownership, widgets,
//! layout version), so it needs no lock; a stale `expectedLayoutVersion` loses a race as
//! `LAYOUT_CONFLICT`, an added widget may then overlap, and so on.

use corral_domain::dashboard::{Dashboard, DashboardCommand};

use super::executor::SnapshotSchema;
use super::own_state::OwnStateCommands;
use crate::wake::CommitSignal;

impl SnapshotSchema for Dashboard {
    const SNAPSHOT_VERSION: i32 = 1;
}

/// Runs Dashboard commands; `load` reads a dashboard's state (to copy its widgets into a
/// clone or a template).
pub type DashboardCommands = OwnStateCommands<Dashboard>;

/// Dashboard commands over `pool`'s `events`.
pub fn dashboard_commands(pool: sqlx::PgPool, signal: CommitSignal) -> DashboardCommands {
    OwnStateCommands::new(pool, signal, |c| {
        matches!(
            c,
            DashboardCommand::Create { .. } | DashboardCommand::PublishTemplate { .. }
        )
    })
}
