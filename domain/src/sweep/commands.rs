use chrono::{DateTime, Utc};

use super::SweepPlan;

/// What may be asked of a sweep run. Everything after `Schedule` comes from Corral's own
/// workers (dispatch, the poller's reports, the deadline monitor) except `Cancel`.
#[derive(Debug, Clone, PartialEq)]
pub enum SweepCommand {
    /// Create the run (a run that exists already is left as it is: idempotency).
    Schedule {
        /// The checked request.
        plan: SweepPlan,
        /// The asking subject.
        requested_by: String,
        /// When it must have ended.
        deadline: DateTime<Utc>,
    },
    /// The job was written for the poller.
    Dispatch {
        /// Its key.
        job_key: String,
        /// When an unclaimed job expires.
        claim_by: DateTime<Utc>,
    },
    /// The poller claimed the job.
    Acknowledge {
        /// The claiming poller.
        poller_id: String,
    },
    /// The poller started.
    Start,
    /// The poller finished.
    Complete {
        /// Hosts with results.
        hosts_done: u64,
    },
    /// The run failed.
    Fail {
        /// Stable code.
        code: String,
        /// For humans.
        message: String,
        /// Hosts with results.
        hosts_done: u64,
    },
    /// The run cannot be handed to its poller (`POLLER_OFFLINE`, `DISPATCH_FAILED`): fails it
    /// only while it is still `QUEUED`, so a dispatcher working from a stale view never fails
    /// a run that is already on its way.
    Reject {
        /// Stable code.
        code: String,
        /// For humans.
        message: String,
    },
    /// The deadline passed (the monitor checks the clock; the aggregate checks `now`).
    TimeOut {
        /// The monitor's clock.
        now: DateTime<Utc>,
        /// Hosts with results.
        hosts_done: u64,
    },
    /// An admin cancels.
    Cancel {
        /// Who.
        by: String,
        /// Why.
        reason: Option<String>,
        /// Hosts with results.
        hosts_done: u64,
    },
    /// Nobody claimed the job in time.
    Expire {
        /// The monitor's clock.
        now: DateTime<Utc>,
    },
}
