//! Full evaluations: a rule over the whole inventory, on rule change, on schedule and as
//! drift repair, and how their results become membership commands.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use corral_domain::group::GroupType;
use corral_domain::membership::{MemberSource, MembershipCommand, MembershipError};
use corral_domain::metadata::{EventMetadata, Source};
use corral_domain::rule::Rule;
use corral_projections::commands::executor::ExecError;
use serde_json::Value;
use uuid::Uuid;

use super::plan::{self, Active};
use super::queries::{self, matching_ids};
use super::{check, RuleWorker, RuleWorkerError, RunOutcome, IDS_PER_COMMAND, REPAIRS_PER_STEP};

impl RuleWorker {
    /// Groups whose rule changed since their last run.
    pub(super) async fn rule_changes(&mut self) -> Result<bool, RuleWorkerError> {
        let rows = queries::changed_rules(&self.pool).await?;
        for row in &rows {
            match &row.rule {
                Some(json) if row.enabled => {
                    self.evaluate_json(row.group, row.kind, row.version, json, "rule_changed")
                        .await?;
                }
                other => {
                    // Disabled or cleared: its rule entries go, statics and exclusions stay.
                    let start = Instant::now();
                    let (cause, status) = plan::unset_cause(other.is_some());
                    let outcome = self
                        .converge(row.group, row.version, &HashSet::new(), cause)
                        .await?;
                    let outcome = RunOutcome {
                        status,
                        matches: Some(0),
                        ..outcome
                    };
                    self.record(row.group, row.version, &outcome, start, cause)
                        .await?;
                }
            }
        }
        Ok(!rows.is_empty())
    }

    async fn evaluate_json(
        &mut self,
        group: Uuid,
        kind: GroupType,
        version: u64,
        json: &Value,
        cause: &str,
    ) -> Result<RunOutcome, RuleWorkerError> {
        let start = Instant::now();
        let outcome = match self.parse(group, version, json) {
            Ok(cached) => {
                self.evaluate(group, kind, version, &cached.rule, cause)
                    .await?
            }
            Err(e) => RunOutcome {
                status: "FAILED",
                matches: None,
                error: Some(format!("stored rule does not load: {e}")),
                added: 0,
                removed: 0,
            },
        };
        self.record(group, version, &outcome, start, cause).await?;
        Ok(outcome)
    }

    /// Evaluates `rule` over the whole inventory and converges the group's rule entries.
    pub async fn evaluate(
        &mut self,
        group: Uuid,
        kind: GroupType,
        version: u64,
        rule: &Rule,
        cause: &str,
    ) -> Result<RunOutcome, RuleWorkerError> {
        let matches = match matching_ids(
            &self.pool,
            kind,
            rule,
            self.config.max_matches,
            self.config.timeout,
        )
        .await?
        {
            Ok(ids) => ids,
            Err(error) => {
                return Ok(RunOutcome {
                    status: "FAILED",
                    matches: None,
                    error: Some(error),
                    added: 0,
                    removed: 0,
                })
            }
        };
        let count = matches.len() as i64;
        let outcome = self.converge(group, version, &matches, cause).await?;
        Ok(RunOutcome {
            matches: Some(count),
            ..outcome
        })
    }

    /// Makes the group's rule entries equal to `matches`.
    async fn converge(
        &self,
        group: Uuid,
        version: u64,
        matches: &HashSet<String>,
        cause: &str,
    ) -> Result<RunOutcome, RuleWorkerError> {
        let current = queries::rule_entries(&self.pool, group).await?;
        let (add, remove) = plan::membership_diff(matches, &current);
        let (added, removed) = (add.len(), remove.len());
        self.apply(group, version, add, remove, cause).await?;
        Ok(RunOutcome {
            status: "OK",
            matches: None,
            error: None,
            added,
            removed,
        })
    }

    /// Sends the adds and removes of rule entries as membership commands.
    pub(super) async fn apply(
        &self,
        group: Uuid,
        version: u64,
        add: Vec<String>,
        remove: Vec<String>,
        cause: &str,
    ) -> Result<(), RuleWorkerError> {
        let metadata = EventMetadata::system(Source::Rule, format!("rule-{group}-v{version}"));
        for chunk in remove.chunks(IDS_PER_COMMAND) {
            let command = MembershipCommand::Remove {
                member_ids: chunk.to_vec(),
                source: MemberSource::Rule,
                rule_version: Some(version),
                cause: Some(cause.to_string()),
            };
            self.send(group, command, &metadata).await?;
        }
        for chunk in add.chunks(IDS_PER_COMMAND) {
            let mut ids = chunk.to_vec();
            // An entity removed since it matched makes the add refuse; drop it and retry.
            for _ in 0..3 {
                let command = MembershipCommand::Add {
                    member_ids: ids.clone(),
                    source: MemberSource::Rule,
                    rule_version: Some(version),
                    cause: Some(cause.to_string()),
                };
                match self.commands.execute(group, command, &metadata).await {
                    Err(ExecError::Domain(MembershipError::UnknownMember { .. })) => {
                        ids = queries::live_ids(&self.pool, &ids).await?;
                        if ids.is_empty() {
                            break;
                        }
                    }
                    other => {
                        check(other)?;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) async fn send(
        &self,
        group: Uuid,
        command: MembershipCommand,
        metadata: &EventMetadata,
    ) -> Result<(), RuleWorkerError> {
        check(self.commands.execute(group, command, metadata).await)
    }

    pub(super) async fn record(
        &self,
        group: Uuid,
        version: u64,
        outcome: &RunOutcome,
        start: Instant,
        cause: &str,
    ) -> Result<(), RuleWorkerError> {
        if outcome.status == "FAILED" {
            tracing::warn!(%group, version, error = outcome.error.as_deref().unwrap_or(""), "rule evaluation failed");
        } else {
            tracing::debug!(%group, version, matches = outcome.matches, added = outcome.added, removed = outcome.removed, cause, "rule evaluated");
        }
        queries::record_run(&self.pool, group, version, outcome, start.elapsed(), cause).await
    }

    /// Enabled rules of live groups (a stored rule that does not load is skipped).
    pub(super) async fn active_rules(&mut self) -> Result<Vec<Active>, RuleWorkerError> {
        let rows = queries::enabled_rules(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(json) = &row.rule else { continue };
            match self.parse(row.group, row.version, json) {
                Ok(cached) => out.push(Active {
                    group: row.group,
                    kind: row.kind,
                    cached,
                    healthy: row.healthy,
                }),
                Err(e) => {
                    tracing::warn!(group = %row.group, error = %e, "skipping a stored rule that does not load")
                }
            }
        }
        Ok(out)
    }

    /// Rules due for their scheduled run, and every rule when repair is due.
    pub(super) async fn scheduled(&mut self) -> Result<bool, RuleWorkerError> {
        // Schedules are in minutes: looking once a second is plenty.
        if self
            .last_schedule_check
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return Ok(false);
        }
        self.last_schedule_check = Some(Instant::now());
        if self.repair_queue.is_empty()
            && self
                .last_repair
                .is_none_or(|at| at.elapsed() >= self.config.repair_every)
        {
            // A repair pass: every rule, a few per step so that rule changes and inventory
            // changes are not held up behind it.
            self.purge_deleted().await?;
            self.repair_queue = self.active_rules().await?.iter().map(|a| a.group).collect();
            self.last_repair = Some(Instant::now());
        }
        let runs = queries::last_runs(&self.pool).await?;
        let every = self.config.schedule_every.as_secs_f64();
        let repair_now = plan::take_repairs(&mut self.repair_queue, REPAIRS_PER_STEP);
        let mut worked = false;
        for active in self.active_rules().await? {
            let Some(&(age, failed)) = runs.get(&active.group) else {
                continue; // not run yet: rule_changes picks it up
            };
            // Rules whose answer moves with time or other groups, and failed runs (retried
            // at the same pace), are due on the schedule.
            let due = plan::due(active.cached.moves, failed, age, every);
            let repair = repair_now.contains(&active.group);
            if !(due || repair) {
                continue;
            }
            let start = Instant::now();
            let cause = if due { "schedule" } else { "repair" };
            let outcome = self
                .evaluate(
                    active.group,
                    active.kind,
                    active.cached.version,
                    &active.cached.rule,
                    cause,
                )
                .await?;
            self.record(active.group, active.cached.version, &outcome, start, cause)
                .await?;
            worked = true;
        }
        Ok(worked)
    }

    /// Entries of deleted groups (left behind when a purge after a delete failed).
    async fn purge_deleted(&self) -> Result<(), RuleWorkerError> {
        for group in queries::deleted_groups_with_entries(&self.pool).await? {
            let metadata = EventMetadata::system(Source::Worker, format!("purge-{group}"));
            self.commands
                .purge(group, &metadata)
                .await
                .map_err(|e| RuleWorkerError::Command(e.to_string()))?;
        }
        Ok(())
    }
}
