//! The SweepRun aggregate: an admin's request that a poller sweep targets now, and the run's
//! life until it ends.
//!
//! `QUEUED -> DISPATCHED -> ACKNOWLEDGED -> RUNNING -> COMPLETED | FAILED | TIMED_OUT |
//! CANCELLED | EXPIRED`; every transition is an event. The aggregate is pure: the request is
//! checked by [`plan`] (limits, the poller's allow-list) before it reaches the aggregate, the
//! clock arrives in the commands, and progress (`hostsDone`) is counted by the results store,
//! not written as events. Transitions a run can no longer make (a result arriving after a
//! cancel, a redelivered "done") are no-ops, so the workers that drive runs may repeat
//! themselves safely.
//!
//! A run's id is random, reserved by the API against the asking subject and the request's
//! idempotency key ([`idempotency`]): the aggregate only makes sure that an id is scheduled
//! once, and never for another subject or key.

mod aggregate;
mod commands;
mod error;
mod events;
pub mod idempotency;
mod plan;
pub mod targets;

pub use aggregate::SweepRun;
pub use commands::SweepCommand;
pub use error::SweepError;
pub use events::SweepEvent;
pub use idempotency::{RequestFingerprint, DEFAULT_IDEMPOTENCY_WINDOW_SECS};
pub use plan::{
    plan, SweepLimits, SweepPlan, SweepRequest, DEFAULT_CONCURRENCY, DEFAULT_RETENTION_DAYS,
    DEFAULT_TIMEOUT_MS, MAX_CONCURRENCY, TIMEOUT_MS_RANGE,
};

use serde::{Deserialize, Serialize};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SweepStatus {
    /// Accepted, not yet handed to the poller.
    Queued,
    /// Written to the poller's job key.
    Dispatched,
    /// The poller claimed the job.
    Acknowledged,
    /// The poller is sweeping.
    Running,
    /// Every host was swept.
    Completed,
    /// The run failed (`POLLER_OFFLINE`, or the poller reported an error).
    Failed,
    /// The deadline passed first; results so far are kept.
    TimedOut,
    /// An admin cancelled it; results so far are kept.
    Cancelled,
    /// Nobody claimed the job before its time to live ran out.
    Expired,
}

impl SweepStatus {
    /// Every status.
    pub const ALL: [SweepStatus; 9] = [
        SweepStatus::Queued,
        SweepStatus::Dispatched,
        SweepStatus::Acknowledged,
        SweepStatus::Running,
        SweepStatus::Completed,
        SweepStatus::Failed,
        SweepStatus::TimedOut,
        SweepStatus::Cancelled,
        SweepStatus::Expired,
    ];

    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            SweepStatus::Queued
                | SweepStatus::Dispatched
                | SweepStatus::Acknowledged
                | SweepStatus::Running
        )
    }

    /// The stored name (`QUEUED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SweepStatus::Queued => "QUEUED",
            SweepStatus::Dispatched => "DISPATCHED",
            SweepStatus::Acknowledged => "ACKNOWLEDGED",
            SweepStatus::Running => "RUNNING",
            SweepStatus::Completed => "COMPLETED",
            SweepStatus::Failed => "FAILED",
            SweepStatus::TimedOut => "TIMED_OUT",
            SweepStatus::Cancelled => "CANCELLED",
            SweepStatus::Expired => "EXPIRED",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}
