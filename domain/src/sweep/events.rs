use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SweepPlan;

/// What happened to a sweep run. Field names are part of the stored contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum SweepEvent {
    /// An admin asked for the sweep (status `QUEUED`).
    SweepScheduled {
        /// What to sweep and how (checked).
        plan: SweepPlan,
        /// The subject that asked.
        requested_by: String,
        /// When the run must have ended; past it the run is `TIMED_OUT`.
        #[schemars(with = "String")]
        deadline: DateTime<Utc>,
    },
    /// The job was written to the poller's key (`DISPATCHED`).
    SweepDispatched {
        /// `jobs.sweeps.<poller_id>.<run_id>` in the bucket `corral_sweep_jobs`.
        job_key: String,
        /// When an unclaimed job expires.
        #[schemars(with = "String")]
        claim_by: DateTime<Utc>,
    },
    /// The poller claimed the job (`ACKNOWLEDGED`).
    SweepAcknowledged {
        /// The poller that claimed it.
        poller_id: String,
    },
    /// The poller started sweeping (`RUNNING`).
    SweepStarted {},
    /// Every host was swept (`COMPLETED`).
    SweepCompleted {
        /// Hosts with results.
        hosts_done: u64,
    },
    /// The run failed (`FAILED`).
    SweepFailed {
        /// `POLLER_OFFLINE`, `POLLER_ERROR`, `DISPATCH_FAILED`.
        code: String,
        /// For humans.
        message: String,
        /// Hosts with results when it failed.
        hosts_done: u64,
    },
    /// The deadline passed before the run ended (`TIMED_OUT`).
    SweepTimedOut {
        /// Hosts with results (kept).
        hosts_done: u64,
    },
    /// An admin cancelled the run (`CANCELLED`).
    SweepCancelled {
        /// Who.
        cancelled_by: String,
        /// Why.
        reason: Option<String>,
        /// Hosts with results (kept).
        hosts_done: u64,
    },
    /// Nobody claimed the job in time (`EXPIRED`).
    SweepExpired {},
}

impl SweepEvent {
    /// The current version of an event type, or `None` for a type this code does not know.
    pub fn current_version(event_type: &str) -> Option<&'static str> {
        match event_type {
            "SweepScheduled" | "SweepDispatched" | "SweepAcknowledged" | "SweepStarted"
            | "SweepCompleted" | "SweepFailed" | "SweepTimedOut" | "SweepCancelled"
            | "SweepExpired" => Some("1"),
            _ => None,
        }
    }
}

impl DomainEvent for SweepEvent {
    fn event_type(&self) -> String {
        match self {
            SweepEvent::SweepScheduled { .. } => "SweepScheduled",
            SweepEvent::SweepDispatched { .. } => "SweepDispatched",
            SweepEvent::SweepAcknowledged { .. } => "SweepAcknowledged",
            SweepEvent::SweepStarted {} => "SweepStarted",
            SweepEvent::SweepCompleted { .. } => "SweepCompleted",
            SweepEvent::SweepFailed { .. } => "SweepFailed",
            SweepEvent::SweepTimedOut { .. } => "SweepTimedOut",
            SweepEvent::SweepCancelled { .. } => "SweepCancelled",
            SweepEvent::SweepExpired {} => "SweepExpired",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        Self::current_version(&self.event_type())
            .unwrap_or("1")
            .to_string()
    }
}
