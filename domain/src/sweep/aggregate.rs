use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{SweepCommand, SweepError, SweepEvent, SweepPlan, SweepStatus};

/// A sweep run's state, folded from its events.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRun {
    plan: Option<SweepPlan>,
    requested_by: Option<String>,
    status: Option<SweepStatus>,
    deadline: Option<DateTime<Utc>>,
    claim_by: Option<DateTime<Utc>>,
}

impl SweepRun {
    /// Its status (`None` before it was scheduled).
    pub fn status(&self) -> Option<SweepStatus> {
        self.status
    }

    /// What it sweeps.
    pub fn plan(&self) -> Option<&SweepPlan> {
        self.plan.as_ref()
    }

    /// When it must have ended.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        self.deadline
    }

    fn decide(&self, command: SweepCommand) -> Result<Vec<SweepEvent>, SweepError> {
        use SweepStatus as S;
        if let SweepCommand::Schedule {
            plan,
            requested_by,
            deadline,
        } = command
        {
            // A retry of the request the id was reserved for (after a crash, or a concurrent
            // one that lost the race) finds the run made; the id is never another key's.
            if self.status.is_some() {
                let same_key = self.requested_by.as_deref() == Some(requested_by.as_str())
                    && self
                        .plan
                        .as_ref()
                        .is_some_and(|p| p.idempotency_key == plan.idempotency_key);
                return if same_key {
                    Ok(vec![])
                } else {
                    Err(SweepError::IdempotencyKeyReused)
                };
            }
            return Ok(vec![SweepEvent::SweepScheduled {
                plan,
                requested_by,
                deadline,
            }]);
        }
        let Some(status) = self.status else {
            return Err(SweepError::NotFound);
        };
        let ended = status.is_terminal();
        Ok(match command {
            SweepCommand::Schedule { .. } => vec![],
            SweepCommand::Dispatch { job_key, claim_by } if status == S::Queued => {
                vec![SweepEvent::SweepDispatched { job_key, claim_by }]
            }
            SweepCommand::Acknowledge { poller_id } if status == S::Dispatched => {
                vec![SweepEvent::SweepAcknowledged { poller_id }]
            }
            SweepCommand::Start => self.up_to_running(status),
            SweepCommand::Complete { hosts_done } if !ended && status != S::Queued => {
                let mut events = self.up_to_running(status);
                events.push(SweepEvent::SweepCompleted { hosts_done });
                events
            }
            SweepCommand::Fail {
                code,
                message,
                hosts_done,
            } if !ended => vec![SweepEvent::SweepFailed {
                code,
                message,
                hosts_done,
            }],
            SweepCommand::Reject { code, message } if status == S::Queued => {
                vec![SweepEvent::SweepFailed {
                    code,
                    message,
                    hosts_done: 0,
                }]
            }
            SweepCommand::TimeOut { now, hosts_done }
                if !ended && self.deadline.is_some_and(|d| now >= d) =>
            {
                vec![SweepEvent::SweepTimedOut { hosts_done }]
            }
            SweepCommand::Cancel {
                by,
                reason,
                hosts_done,
            } => {
                if ended {
                    return Err(SweepError::AlreadyEnded(status.as_str()));
                }
                vec![SweepEvent::SweepCancelled {
                    cancelled_by: by,
                    reason,
                    hosts_done,
                }]
            }
            SweepCommand::Expire { now }
                if status == S::Dispatched && self.claim_by.is_some_and(|c| now >= c) =>
            {
                vec![SweepEvent::SweepExpired {}]
            }
            // A report the run can no longer act on (redelivered, or after it ended).
            _ => vec![],
        })
    }

    /// The events that bring a dispatched or acknowledged run to `RUNNING`.
    fn up_to_running(&self, status: SweepStatus) -> Vec<SweepEvent> {
        let poller_id = self
            .plan
            .as_ref()
            .map(|p| p.poller_id.clone())
            .unwrap_or_default();
        match status {
            SweepStatus::Dispatched => vec![
                SweepEvent::SweepAcknowledged { poller_id },
                SweepEvent::SweepStarted {},
            ],
            SweepStatus::Acknowledged => vec![SweepEvent::SweepStarted {}],
            _ => vec![],
        }
    }
}

impl Aggregate for SweepRun {
    const TYPE: &'static str = "SweepRun";
    type Command = SweepCommand;
    type Event = SweepEvent;
    type Error = SweepError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _service: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SweepEvent::SweepScheduled {
                plan,
                requested_by,
                deadline,
            } => {
                self.plan = Some(plan);
                self.requested_by = Some(requested_by);
                self.deadline = Some(deadline);
                self.status = Some(SweepStatus::Queued);
            }
            SweepEvent::SweepDispatched { claim_by, .. } => {
                self.claim_by = Some(claim_by);
                self.status = Some(SweepStatus::Dispatched);
            }
            SweepEvent::SweepAcknowledged { .. } => self.status = Some(SweepStatus::Acknowledged),
            SweepEvent::SweepStarted {} => self.status = Some(SweepStatus::Running),
            SweepEvent::SweepCompleted { .. } => self.status = Some(SweepStatus::Completed),
            SweepEvent::SweepFailed { .. } => self.status = Some(SweepStatus::Failed),
            SweepEvent::SweepTimedOut { .. } => self.status = Some(SweepStatus::TimedOut),
            SweepEvent::SweepCancelled { .. } => self.status = Some(SweepStatus::Cancelled),
            SweepEvent::SweepExpired {} => self.status = Some(SweepStatus::Expired),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeDelta;
    use cqrs_es::test::TestFramework;

    use super::super::{plan, targets::DEFAULT_ALLOW, SweepLimits, SweepRequest};
    use super::*;

    type T = TestFramework<SweepRun>;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn the_plan() -> SweepPlan {
        let allow: Vec<_> = DEFAULT_ALLOW.iter().map(|c| c.parse().unwrap()).collect();
        plan(
            &SweepRequest {
                poller_id: "p1".into(),
                targets: vec!["127.0.0.0/28".into()],
                ports: vec![22],
                idempotency_key: "k".into(),
                ..Default::default()
            },
            &SweepLimits::default(),
            &allow,
        )
        .unwrap()
    }

    fn scheduled() -> SweepEvent {
        SweepEvent::SweepScheduled {
            plan: the_plan(),
            requested_by: "alice".into(),
            deadline: t0() + TimeDelta::minutes(10),
        }
    }

    fn dispatched() -> SweepEvent {
        SweepEvent::SweepDispatched {
            job_key: "jobs.sweeps.p1.x".into(),
            claim_by: t0() + TimeDelta::minutes(1),
        }
    }

    fn acked() -> SweepEvent {
        SweepEvent::SweepAcknowledged {
            poller_id: "p1".into(),
        }
    }

    #[test]
    fn a_run_goes_from_queued_to_completed() {
        T::with(())
            .given_no_previous_events()
            .when(SweepCommand::Schedule {
                plan: the_plan(),
                requested_by: "alice".into(),
                deadline: t0() + TimeDelta::minutes(10),
            })
            .then_expect_events(vec![scheduled()]);
        T::with(())
            .given(vec![scheduled()])
            .when(SweepCommand::Dispatch {
                job_key: "jobs.sweeps.p1.x".into(),
                claim_by: t0() + TimeDelta::minutes(1),
            })
            .then_expect_events(vec![dispatched()]);
        T::with(())
            .given(vec![scheduled(), dispatched(), acked()])
            .when(SweepCommand::Start)
            .then_expect_events(vec![SweepEvent::SweepStarted {}]);
        T::with(())
            .given(vec![scheduled(), dispatched()])
            .when(SweepCommand::Complete { hosts_done: 16 })
            .then_expect_events(vec![
                acked(),
                SweepEvent::SweepStarted {},
                SweepEvent::SweepCompleted { hosts_done: 16 },
            ]);
    }

    #[test]
    fn repeated_or_late_reports_change_nothing() {
        let done = SweepEvent::SweepCompleted { hosts_done: 16 };
        let history = vec![
            scheduled(),
            dispatched(),
            acked(),
            SweepEvent::SweepStarted {},
        ];
        T::with(())
            .given(history.clone())
            .when(SweepCommand::Start)
            .then_expect_events(vec![]);
        let mut ended = history.clone();
        ended.push(done);
        for late in [
            SweepCommand::Complete { hosts_done: 3 },
            SweepCommand::Fail {
                code: "POLLER_ERROR".into(),
                message: "x".into(),
                hosts_done: 3,
            },
            SweepCommand::TimeOut {
                now: t0() + TimeDelta::hours(1),
                hosts_done: 3,
            },
            SweepCommand::Schedule {
                plan: the_plan(),
                requested_by: "alice".into(),
                deadline: t0(),
            },
        ] {
            T::with(())
                .given(ended.clone())
                .when(late)
                .then_expect_events(vec![]);
        }
        T::with(())
            .given(ended)
            .when(SweepCommand::Cancel {
                by: "alice".into(),
                reason: None,
                hosts_done: 3,
            })
            .then_expect_error(SweepError::AlreadyEnded("COMPLETED"));
    }

    #[test]
    fn deadlines_and_claims_are_checked_against_the_clock() {
        let running = vec![
            scheduled(),
            dispatched(),
            acked(),
            SweepEvent::SweepStarted {},
        ];
        T::with(())
            .given(running.clone())
            .when(SweepCommand::TimeOut {
                now: t0() + TimeDelta::minutes(9),
                hosts_done: 2,
            })
            .then_expect_events(vec![]);
        T::with(())
            .given(running)
            .when(SweepCommand::TimeOut {
                now: t0() + TimeDelta::minutes(10),
                hosts_done: 2,
            })
            .then_expect_events(vec![SweepEvent::SweepTimedOut { hosts_done: 2 }]);
        T::with(())
            .given(vec![scheduled(), dispatched()])
            .when(SweepCommand::Expire {
                now: t0() + TimeDelta::minutes(1),
            })
            .then_expect_events(vec![SweepEvent::SweepExpired {}]);
        T::with(())
            .given(vec![scheduled(), dispatched(), acked()])
            .when(SweepCommand::Expire {
                now: t0() + TimeDelta::minutes(5),
            })
            .then_expect_events(vec![]);
        T::with(())
            .given_no_previous_events()
            .when(SweepCommand::Start)
            .then_expect_error(SweepError::NotFound);
    }

    #[test]
    fn only_a_queued_run_is_rejected() {
        let reject = || SweepCommand::Reject {
            code: "POLLER_OFFLINE".into(),
            message: "gone".into(),
        };
        T::with(())
            .given(vec![scheduled()])
            .when(reject())
            .then_expect_events(vec![SweepEvent::SweepFailed {
                code: "POLLER_OFFLINE".into(),
                message: "gone".into(),
                hosts_done: 0,
            }]);
        T::with(())
            .given(vec![scheduled(), dispatched()])
            .when(reject())
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_run_id_is_scheduled_once_and_only_for_its_subject_and_key() {
        let schedule = |by: &str, key: &str| SweepCommand::Schedule {
            plan: SweepPlan {
                idempotency_key: key.into(),
                ..the_plan()
            },
            requested_by: by.into(),
            deadline: t0() + TimeDelta::minutes(30),
        };
        // The retry of a crashed or racing request: the run is there already.
        T::with(())
            .given(vec![scheduled()])
            .when(schedule("alice", "k"))
            .then_expect_events(vec![]);
        T::with(())
            .given(vec![scheduled(), dispatched()])
            .when(schedule("bob", "k"))
            .then_expect_error(SweepError::IdempotencyKeyReused);
        T::with(())
            .given(vec![scheduled()])
            .when(schedule("alice", "other"))
            .then_expect_error(SweepError::IdempotencyKeyReused);
    }
}
