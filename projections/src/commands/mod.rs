//! The write side: every command runs through here.
//!
//! - [`executor`]: cqrs-es's handle and postgres-es's commit, with versions, retries,
//!   snapshots and a cache of recent aggregates ([`aggregate_cache`]);
//! - the runners: [`groups`] and [`membership`] check their commands against the write-side
//!   registries under advisory locks ([`locked`]), [`own_state`] runs aggregates decided on
//!   their own state ([`dashboards`], [`sweeps`], [`access`]);
//! - [`Commands`]: the one entry point callers use. It runs a command, then says everything
//!   the caller needs (the committed version, what changed, the event's cursor and public
//!   position) and waits, when asked, until the read models that the command's events feed
//!   reflect them (read-your-writes), without the caller naming them;
//! - [`follow_ups`]: work a command's events call for that outlives a request (the purge of a
//!   deleted group's memberships), done by a worker that resumes after a crash.

pub mod access;
mod aggregate_cache;
pub mod dashboards;
pub mod executor;
pub mod follow_ups;
pub mod groups;
mod locked;
pub mod membership;
pub mod own_state;
pub mod sweeps;
pub mod watches;

use std::sync::Arc;
use std::time::Duration;

use corral_domain::access::{AccessCommand, RoleCommand, RoleDefinition, Subject};
use corral_domain::dashboard::{Dashboard, DashboardCommand};
use corral_domain::group::{GroupCommand, GroupError};
use corral_domain::membership::{MembershipCommand, MembershipError};
use corral_domain::metadata::EventMetadata;
use corral_domain::sweep::{SweepCommand, SweepRun};
use corral_domain::watch::{MembershipWatch, MembershipWatchCommand};
use cqrs_es::Aggregate;
use sqlx::PgPool;
use uuid::Uuid;

use self::executor::{Committed, ExecError};
use crate::log::{parse_xid, Cursor};
use crate::waiter::ConsistencyWaiter;
use crate::wake::CommitSignal;

pub use self::access::AccessCommands;
pub use self::dashboards::DashboardCommands;
pub use self::groups::GroupCommands;
pub use self::membership::MembershipCommands;
pub use self::sweeps::SweepCommands;

/// Everything a caller needs to know about a command that committed (or was a no-op).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The aggregate's id.
    pub aggregate_id: String,
    /// Its version after the command (unchanged for a no-op).
    pub version: u64,
    /// Events written; 0 for a no-op.
    pub events: usize,
    /// What they changed, in the aggregate's unit (member ids for Membership).
    pub changed: usize,
    /// The cursor of the last event written or, for a no-op, of the aggregate's latest event
    /// (the state the no-op confirmed); `None` when it has none or it could not be read.
    pub cursor: Option<Cursor>,
    /// That event's public log position, once sequenced; `None` when the wait ended first.
    pub position: Option<i64>,
    /// True when the read models did not reflect the events within the wait (they are
    /// committed all the same).
    pub wait_timed_out: bool,
}

/// How long a caller waits for the read models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Not at all: the outcome carries no cursor or position (bulk writers).
    No,
    /// Up to this long for every read model the events feed (mutations).
    ReadModels(Duration),
}

/// A command the entry point runs: which runner takes it, and what its aggregate is.
pub enum Command {
    /// A Group command, with the version the caller expects.
    Group(GroupCommand, Option<u64>),
    /// A Membership command on a group.
    Membership(Uuid, MembershipCommand),
    /// A Dashboard command.
    Dashboard(Uuid, DashboardCommand),
    /// A SweepRun command.
    Sweep(Uuid, SweepCommand),
    /// A Subject (access) command.
    Access(Uuid, AccessCommand),
    /// A custom-role command (on the role named in it).
    Role(RoleCommand),
    /// A MembershipWatch command.
    Watch(Uuid, MembershipWatchCommand),
}

/// Why a command did not commit: the aggregate's refusal, a version conflict, or the store.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// From a Group command.
    #[error(transparent)]
    Group(ExecError<GroupError>),
    /// From a Membership command.
    #[error(transparent)]
    Membership(ExecError<MembershipError>),
    /// From a Dashboard command.
    #[error(transparent)]
    Dashboard(ExecError<<Dashboard as Aggregate>::Error>),
    /// From a SweepRun command.
    #[error(transparent)]
    Sweep(ExecError<<SweepRun as Aggregate>::Error>),
    /// From a Subject command.
    #[error(transparent)]
    Access(ExecError<<Subject as Aggregate>::Error>),
    /// From a custom-role command.
    #[error(transparent)]
    Role(ExecError<<RoleDefinition as Aggregate>::Error>),
    /// From a MembershipWatch command.
    #[error(transparent)]
    Watch(ExecError<<MembershipWatch as Aggregate>::Error>),
}

/// The runners of every aggregate, and what waiting needs.
pub struct Commands {
    groups: Arc<GroupCommands>,
    memberships: Arc<MembershipCommands>,
    dashboards: Arc<DashboardCommands>,
    sweeps: Arc<SweepCommands>,
    access: Arc<AccessCommands>,
    roles: Arc<self::access::RoleCommands>,
    watches: Arc<self::watches::WatchCommands>,
    pool: PgPool,
    waiter: ConsistencyWaiter,
}

impl Commands {
    /// Runners over `pool`'s events (`lock_pool` holds lock transactions), waking this
    /// process's readers through `signal`; `waiter` follows the read models' checkpoints.
    pub fn new(
        pool: PgPool,
        lock_pool: PgPool,
        signal: CommitSignal,
        waiter: ConsistencyWaiter,
    ) -> Self {
        Self {
            groups: Arc::new(GroupCommands::new(
                pool.clone(),
                lock_pool.clone(),
                signal.clone(),
            )),
            memberships: Arc::new(MembershipCommands::new(
                pool.clone(),
                lock_pool,
                signal.clone(),
            )),
            dashboards: Arc::new(dashboards::dashboard_commands(pool.clone(), signal.clone())),
            sweeps: Arc::new(sweeps::sweep_commands(pool.clone(), signal.clone())),
            access: Arc::new(access::access_commands(pool.clone(), signal.clone())),
            roles: Arc::new(access::role_commands(pool.clone(), signal.clone())),
            watches: Arc::new(watches::watch_commands(pool.clone(), signal)),
            pool,
            waiter,
        }
    }

    /// The Group runner (start-up, workers).
    pub fn groups(&self) -> &Arc<GroupCommands> {
        &self.groups
    }

    /// The Membership runner (workers).
    pub fn memberships(&self) -> &Arc<MembershipCommands> {
        &self.memberships
    }

    /// The Dashboard runner, which also loads dashboards.
    pub fn dashboards(&self) -> &Arc<DashboardCommands> {
        &self.dashboards
    }

    /// The Subject runner, which also loads subjects.
    pub fn access(&self) -> &Arc<AccessCommands> {
        &self.access
    }

    /// The SweepRun runner, which also loads runs.
    pub fn sweeps(&self) -> &Arc<SweepCommands> {
        &self.sweeps
    }

    /// Runs `command` with `metadata`, then (per `wait`) waits for the read models its events
    /// feed and says where it stands.
    pub async fn execute(
        &self,
        command: Command,
        metadata: &EventMetadata,
        wait: Wait,
    ) -> Result<Outcome, CommandError> {
        let (aggregate_type, aggregate_id, committed) = match command {
            Command::Group(command, expected) => {
                let id = GroupCommands::target(&command);
                let c = self
                    .groups
                    .execute(command, expected, metadata)
                    .await
                    .map_err(CommandError::Group)?;
                ("Group", id, c)
            }
            Command::Membership(group, command) => {
                let c = self
                    .memberships
                    .execute(group, command, metadata)
                    .await
                    .map_err(CommandError::Membership)?;
                ("Membership", group, c)
            }
            Command::Dashboard(id, command) => {
                let c = self
                    .dashboards
                    .execute(id, command, metadata)
                    .await
                    .map_err(CommandError::Dashboard)?;
                ("Dashboard", id, c)
            }
            Command::Sweep(id, command) => {
                let c = self
                    .sweeps
                    .execute(id, command, metadata)
                    .await
                    .map_err(CommandError::Sweep)?;
                ("SweepRun", id, c)
            }
            Command::Access(id, command) => {
                let c = self
                    .access
                    .execute(id, command, metadata)
                    .await
                    .map_err(CommandError::Access)?;
                ("Subject", id, c)
            }
            Command::Role(command) => {
                let id = match &command {
                    RoleCommand::Define { name, .. } | RoleCommand::Delete { name } => {
                        corral_domain::access::role_id(name)
                    }
                };
                let c = self
                    .roles
                    .execute(id, command, metadata)
                    .await
                    .map_err(CommandError::Role)?;
                ("Role", id, c)
            }
            Command::Watch(id, command) => {
                let c = self
                    .watches
                    .execute(id, command, metadata)
                    .await
                    .map_err(CommandError::Watch)?;
                ("MembershipWatch", id, c)
            }
        };
        Ok(self
            .settle(aggregate_type, &aggregate_id.to_string(), committed, wait)
            .await)
    }

    /// The outcome of a no-op on aggregate `aggregate_type` `aggregate_id`: waits, per `wait`,
    /// for the read models to reflect its latest event (the state a caller found unchanged,
    /// such as a retried request finding its earlier write).
    pub async fn confirm(
        &self,
        aggregate_type: &'static str,
        aggregate_id: &str,
        wait: Wait,
    ) -> Outcome {
        let none = Committed {
            version: 0,
            events: 0,
            event_types: vec![],
            changed: 0,
            token: None,
        };
        self.settle(aggregate_type, aggregate_id, none, wait).await
    }

    /// The outcome of a committed command: its cursor, the wait for the read models its
    /// events feed, its position. Never an error: the command is committed, so what cannot be
    /// read is reported as unknown (and logged) rather than failing the caller.
    async fn settle(
        &self,
        aggregate_type: &'static str,
        aggregate_id: &str,
        committed: Committed,
        wait: Wait,
    ) -> Outcome {
        let mut outcome = Outcome {
            aggregate_id: aggregate_id.to_string(),
            version: committed.version,
            events: committed.events,
            changed: committed.changed,
            cursor: None,
            position: None,
            wait_timed_out: false,
        };
        let Wait::ReadModels(timeout) = wait else {
            return outcome;
        };
        let cursor = match &committed.token {
            Some(token) => token.cursor(&self.pool).await.map(Some),
            // A no-op confirms the latest state: wait for it too, so that a retried command
            // (say, after a timed-out wait) still reads its own earlier write.
            None => latest_cursor(&self.pool, aggregate_type, aggregate_id).await,
        };
        let cursor = match cursor {
            Ok(Some(c)) => c,
            Ok(None) => return outcome,
            Err(err) => {
                tracing::warn!(error = %err, "committed, but could not read the event's cursor");
                outcome.wait_timed_out = committed.token.is_some();
                return outcome;
            }
        };
        let awaited = read_models_fed_by(aggregate_type, &committed.event_types);
        let reached = self.waiter.wait(cursor, &awaited, timeout).await;
        outcome.cursor = Some(cursor);
        outcome.wait_timed_out = !reached;
        outcome.position = position_of(&self.pool, cursor).await;
        outcome
    }
}

/// The read models (and follow-ups) that events of `aggregate_type` of `event_types` feed:
/// every projection that reads the aggregate type (the sequencer reads all), and the
/// follow-ups of those event types.
pub fn read_models_fed_by(aggregate_type: &str, event_types: &[String]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = crate::projections()
        .iter()
        .filter(|p| {
            let types = p.aggregate_types();
            types.is_empty() || types.iter().any(|t| t == aggregate_type)
        })
        .map(|p| p.name())
        .collect();
    for follow_up in follow_ups::FOLLOW_UPS {
        if follow_up.aggregate_type == aggregate_type
            && event_types.iter().any(|t| t == follow_up.event_type)
        {
            names.push(follow_up.name);
        }
    }
    names
}

/// The cursor of an aggregate's latest event, if it has one.
async fn latest_cursor(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<Cursor>, crate::StoreError> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT transaction_id::text, global_position FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2
          ORDER BY sequence DESC LIMIT 1",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_optional(pool)
    .await?;
    row.map(|(txid, global_position)| {
        Ok(Cursor {
            transaction_id: parse_xid(&txid)?,
            global_position,
        })
    })
    .transpose()
}

/// The public position of the event at `cursor`, once the sequencer has given it one.
async fn position_of(pool: &PgPool, cursor: Cursor) -> Option<i64> {
    sqlx::query_scalar("SELECT log_position FROM event_log WHERE global_position = $1")
        .bind(cursor.global_position)
        .fetch_optional(pool)
        .await
        .unwrap_or_else(|err| {
            // Committed: report the change without its position rather than fail.
            tracing::warn!(error = %err, "could not read the position of a committed change");
            None
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_aggregate_waits_for_the_read_models_that_read_it() {
        let group = read_models_fed_by("Group", &["GroupRenamed".into()]);
        for name in ["sequencer", "group_tree", "health", "group_capabilities"] {
            assert!(group.contains(&name), "{name} in {group:?}");
        }
        assert!(!group.contains(&"dashboards"));
        assert!(!group.contains(&follow_ups::MEMBERSHIP_PURGE));
        let deleted = read_models_fed_by("Group", &["GroupDeleted".into()]);
        assert!(
            deleted.contains(&follow_ups::MEMBERSHIP_PURGE),
            "{deleted:?}"
        );
        let members = read_models_fed_by("Membership", &[]);
        assert!(members.contains(&"membership") && members.contains(&"sequencer"));
        assert!(!members.contains(&"group_tree"));
        assert_eq!(
            read_models_fed_by("Dashboard", &[]),
            ["sequencer", "dashboards"]
        );
        assert_eq!(read_models_fed_by("SweepRun", &[]), ["sequencer", "sweeps"]);
    }
}
