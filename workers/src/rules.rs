//! The rule evaluator: keeps every group's RULE entries equal to what its rule matches.
//!
//! It runs
//! - **on rule change**: a group whose `rule_version` differs from its last run is evaluated
//!   over the whole inventory (or, when its rule was disabled or cleared, loses its rule
//!   entries);
//! - **on inventory change**, incrementally: it reads the inventory change feed (rows below the
//!   xmin horizon, in `(changed_tx, change_seq)` order, like the event log) and evaluates only
//!   the changed entities, in memory, against only the rules that read a changed field;
//! - **on a schedule** for rules whose answer moves by itself (`now`, `group:` references);
//! - **as drift repair**, every rule now and then, and the memberships of deleted groups.
//!
//! Every change goes through [`MembershipCommands`] as Membership events with source `RULE`,
//! the rule version and the cause; the registry diff makes re-running any step a no-op, so the
//! worker needs no exactly-once bookkeeping of its own. Only one evaluator runs in a cluster
//! (a session advisory lock); the others wait to take over.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use corral_domain::group::GroupType;
use corral_domain::inventory::{Device, Service};
use corral_domain::membership::{MemberSource, MembershipCommand, MembershipError};
use corral_domain::metadata::{EventMetadata, Source};
use corral_domain::rule::{self, Entity, EvalContext, Rule};
use corral_projections::commands::executor::ExecError;
use corral_projections::inventory::{
    self as inv, device_row, rule_arguments, service_row, DEVICE_COLUMNS, DEVICE_FROM,
    SERVICE_COLUMNS, SERVICE_FROM,
};
use corral_projections::leader::{Leader, Leadership};
use corral_projections::locks::Lock;
use corral_projections::log::parse_xid;
use corral_projections::membership::read::{group_sets, GroupSets};
use corral_projections::membership::MembershipCommands;
use corral_projections::StoreError;
use serde_json::Value;
use sqlx::{PgPool, Row};
use tokio::sync::watch;
use uuid::Uuid;

/// Ids per membership command the evaluator sends.
const IDS_PER_COMMAND: usize = 10_000;
/// Rules a repair pass evaluates per step.
const REPAIRS_PER_STEP: usize = 4;

/// How the evaluator runs.
#[derive(Debug, Clone)]
pub struct RuleWorkerConfig {
    /// A full evaluation matching more entities fails and changes nothing.
    pub max_matches: i64,
    /// A full evaluation's query is cancelled after this long (the run fails).
    pub timeout: Duration,
    /// Rules using `now` or `group:` are re-evaluated this often.
    pub schedule_every: Duration,
    /// Every rule is re-evaluated this often (drift repair).
    pub repair_every: Duration,
    /// Idle polling interval of the inventory change feed.
    pub poll: Duration,
    /// Inventory changes per incremental step.
    pub batch: i64,
}

impl Default for RuleWorkerConfig {
    fn default() -> Self {
        Self {
            max_matches: 1_000_000,
            timeout: Duration::from_secs(60),
            schedule_every: Duration::from_secs(60),
            repair_every: Duration::from_secs(3600),
            poll: Duration::from_millis(100),
            batch: 1000,
        }
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum RuleWorkerError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A membership command failed unexpectedly.
    #[error("membership command failed: {0}")]
    Command(String),
}

impl From<sqlx::Error> for RuleWorkerError {
    fn from(e: sqlx::Error) -> Self {
        RuleWorkerError::Store(e.into())
    }
}

/// A parsed rule, cached per group and version.
#[derive(Clone)]
struct Cached {
    version: u64,
    rule: Arc<Rule>,
    fields: BTreeSet<String>,
    /// Its answer changes without inventory changes (`now`, `group:`).
    moves: bool,
}

/// An enabled rule of a live group.
#[derive(Clone)]
struct Active {
    group: Uuid,
    kind: GroupType,
    cached: Cached,
    /// Its last full run, of this version, succeeded: only then do inventory changes update
    /// it incrementally (a rule over the limits stays unchanged until a full run succeeds).
    healthy: bool,
}

/// The evaluator's state.
pub struct RuleWorker {
    pool: PgPool,
    commands: Arc<MembershipCommands>,
    config: RuleWorkerConfig,
    cache: HashMap<Uuid, Cached>,
    last_repair: Option<Instant>,
    last_schedule_check: Option<Instant>,
    repair_queue: std::collections::VecDeque<Uuid>,
}

/// The outcome of one full evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// `OK` or `FAILED`.
    pub status: &'static str,
    /// Entities matched (OK runs).
    pub matches: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Entries added and removed.
    pub added: usize,
    /// Entries removed.
    pub removed: usize,
}

fn entity_table(kind: GroupType) -> (&'static str, &'static str, &'static str) {
    match kind {
        GroupType::Device => (DEVICE_FROM, "d", "devices"),
        GroupType::Service => (SERVICE_FROM, "s", "services"),
    }
}

impl RuleWorker {
    /// An evaluator over `pool`, writing through `commands`.
    pub fn new(pool: PgPool, commands: Arc<MembershipCommands>, config: RuleWorkerConfig) -> Self {
        Self {
            pool,
            commands,
            config,
            cache: HashMap::new(),
            last_repair: None,
            last_schedule_check: None,
            repair_queue: Default::default(),
        }
    }

    /// One pass over every source of work; true when something was done.
    pub async fn step(&mut self) -> Result<bool, RuleWorkerError> {
        let mut worked = self.rule_changes().await?;
        worked |= self.inventory(GroupType::Device).await?;
        worked |= self.inventory(GroupType::Service).await?;
        worked |= self.scheduled().await?;
        Ok(worked)
    }

    fn parse(&mut self, group: Uuid, version: u64, json: &Value) -> Result<Cached, String> {
        if let Some(c) = self.cache.get(&group) {
            if c.version == version {
                return Ok(c.clone());
            }
        }
        let parsed = rule::from_json(json).map_err(|e| e.to_string())?;
        let rule = parsed.rule;
        let cached = Cached {
            version,
            fields: rule.fields(),
            moves: rule.uses_now() || !rule.group_refs().is_empty(),
            rule: Arc::new(rule),
        };
        self.cache.insert(group, cached.clone());
        Ok(cached)
    }

    /// Groups whose rule changed since their last run.
    async fn rule_changes(&mut self) -> Result<bool, RuleWorkerError> {
        let rows = sqlx::query(
            "SELECT g.id, g.group_type, g.rule, g.rule_enabled, g.rule_version
               FROM group_registry g LEFT JOIN rule_runs r ON r.group_id = g.id
              WHERE g.rule_version > 0 AND NOT g.deleted
                AND r.rule_version IS DISTINCT FROM g.rule_version
              ORDER BY g.id LIMIT 100",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            let group: Uuid = row.try_get("id")?;
            let version = row.try_get::<i64, _>("rule_version")? as u64;
            let rule: Option<Value> = row.try_get("rule")?;
            let enabled: bool = row.try_get("rule_enabled")?;
            let kind = GroupType::parse(&row.try_get::<String, _>("group_type")?)
                .unwrap_or(GroupType::Device);
            match rule {
                Some(json) if enabled => {
                    self.evaluate_json(group, kind, version, &json, "rule_changed")
                        .await?;
                }
                other => {
                    // Disabled or cleared: its rule entries go, statics and exclusions stay.
                    let start = Instant::now();
                    let cause = if other.is_some() {
                        "rule_disabled"
                    } else {
                        "rule_cleared"
                    };
                    let outcome = self
                        .converge(group, version, &HashSet::new(), cause)
                        .await?;
                    let status = if other.is_some() {
                        "DISABLED"
                    } else {
                        "CLEARED"
                    };
                    self.record(
                        group,
                        version,
                        &RunOutcome {
                            status,
                            matches: Some(0),
                            ..outcome
                        },
                        start,
                        cause,
                    )
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
        let current: HashSet<String> = sqlx::query_scalar(
            "SELECT member_id FROM membership_registry WHERE group_id = $1 AND kind = 'R'",
        )
        .bind(group)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        let mut add: Vec<String> = matches.difference(&current).cloned().collect();
        let mut remove: Vec<String> = current.difference(matches).cloned().collect();
        add.sort();
        remove.sort();
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
    async fn apply(
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
                        ids = live_ids(&self.pool, &ids).await?;
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

    async fn send(
        &self,
        group: Uuid,
        command: MembershipCommand,
        metadata: &EventMetadata,
    ) -> Result<(), RuleWorkerError> {
        check(self.commands.execute(group, command, metadata).await)
    }

    async fn record(
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
        sqlx::query(
            "INSERT INTO rule_runs (group_id, rule_version, last_run_at, last_run_status,
                    last_match_count, last_error, last_duration_ms, last_cause, last_ok_version)
             VALUES ($1, $2, now(), $3, $4, $5, $6, $7, CASE WHEN $3 = 'OK' THEN $2 END)
             ON CONFLICT (group_id) DO UPDATE SET rule_version = EXCLUDED.rule_version,
                last_run_at = EXCLUDED.last_run_at, last_run_status = EXCLUDED.last_run_status,
                last_match_count = EXCLUDED.last_match_count, last_error = EXCLUDED.last_error,
                last_duration_ms = EXCLUDED.last_duration_ms, last_cause = EXCLUDED.last_cause,
                last_ok_version = coalesce(EXCLUDED.last_ok_version, rule_runs.last_ok_version)",
        )
        .bind(group)
        .bind(version as i64)
        .bind(outcome.status)
        .bind(outcome.matches)
        .bind(&outcome.error)
        .bind(start.elapsed().as_millis() as i64)
        .bind(cause)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Enabled rules of live groups.
    async fn active_rules(&mut self) -> Result<Vec<Active>, RuleWorkerError> {
        let rows = sqlx::query(
            "SELECT g.id, g.group_type, g.rule, g.rule_version,
                    coalesce(r.last_ok_version = g.rule_version, false)
                        AS healthy
               FROM group_registry g LEFT JOIN rule_runs r ON r.group_id = g.id
              WHERE g.rule_enabled AND g.rule IS NOT NULL AND NOT g.deleted",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let group: Uuid = row.try_get("id")?;
            let version = row.try_get::<i64, _>("rule_version")? as u64;
            let json: Value = row.try_get("rule")?;
            let kind = GroupType::parse(&row.try_get::<String, _>("group_type")?)
                .unwrap_or(GroupType::Device);
            match self.parse(group, version, &json) {
                Ok(cached) => out.push(Active {
                    group,
                    kind,
                    cached,
                    healthy: row.try_get("healthy")?,
                }),
                Err(e) => {
                    tracing::warn!(%group, error = %e, "skipping a stored rule that does not load")
                }
            }
        }
        Ok(out)
    }

    /// Rules due for their scheduled run, and every rule when repair is due.
    async fn scheduled(&mut self) -> Result<bool, RuleWorkerError> {
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
        let rows = sqlx::query(
            "SELECT g.id, extract(epoch FROM now() - r.last_run_at)::float8 AS age,
                    r.last_run_status = 'FAILED' AS failed
               FROM group_registry g JOIN rule_runs r ON r.group_id = g.id
              WHERE g.rule_enabled AND g.rule IS NOT NULL AND NOT g.deleted
                AND r.rule_version = g.rule_version",
        )
        .fetch_all(&self.pool)
        .await?;
        let runs: HashMap<Uuid, (f64, bool)> = rows
            .iter()
            .map(|r| Ok((r.try_get("id")?, (r.try_get("age")?, r.try_get("failed")?))))
            .collect::<Result<_, sqlx::Error>>()?;
        let every = self.config.schedule_every.as_secs_f64();
        let mut repair_now: HashSet<Uuid> = HashSet::new();
        while repair_now.len() < REPAIRS_PER_STEP {
            match self.repair_queue.pop_front() {
                Some(g) => {
                    repair_now.insert(g);
                }
                None => break,
            }
        }
        let mut worked = false;
        for active in self.active_rules().await? {
            let Some(&(age, failed)) = runs.get(&active.group) else {
                continue; // not run yet: rule_changes picks it up
            };
            // Rules whose answer moves with time or other groups, and failed runs (retried
            // at the same pace), are due on the schedule.
            let due = (active.cached.moves || failed) && age >= every;
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
        let groups: Vec<Uuid> = sqlx::query_scalar(
            "SELECT g.id FROM group_registry g WHERE g.deleted
                AND EXISTS (SELECT 1 FROM membership_registry m WHERE m.group_id = g.id)",
        )
        .fetch_all(&self.pool)
        .await?;
        for group in groups {
            let metadata = EventMetadata::system(Source::Worker, format!("purge-{group}"));
            self.commands
                .purge(group, &metadata)
                .await
                .map_err(|e| RuleWorkerError::Command(e.to_string()))?;
        }
        Ok(())
    }

    /// One batch of the inventory change feed of `kind`.
    async fn inventory(&mut self, kind: GroupType) -> Result<bool, RuleWorkerError> {
        let (_, alias, table) = entity_table(kind);
        let columns = match kind {
            GroupType::Device => DEVICE_COLUMNS,
            GroupType::Service => SERVICE_COLUMNS,
        };
        sqlx::query("INSERT INTO inventory_cursors (name) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(table)
            .execute(&self.pool)
            .await?;
        let mut conn = self.pool.acquire().await?;
        let horizon: String =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
                .fetch_one(&mut *conn)
                .await?;
        // The cursor is read first and bound: as a join filter it would make every step
        // scan the whole table.
        let (cur_tx, cur_seq): (String, i64) = sqlx::query_as(
            "SELECT changed_tx::text, change_seq FROM inventory_cursors WHERE name = $1",
        )
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
        let rows = sqlx::query(&format!(
            "SELECT {columns}, {alias}.changed_fields, {alias}.changed_tx::text AS ctx,
                    {alias}.change_seq, {alias}.removed_at IS NOT NULL AS removed
               FROM {table} {alias}
              WHERE ({alias}.changed_tx, {alias}.change_seq) > ($1::text::xid8, $2)
                AND {alias}.changed_tx < $3::text::xid8
              ORDER BY {alias}.changed_tx, {alias}.change_seq LIMIT $4"
        ))
        .bind(&cur_tx)
        .bind(cur_seq)
        .bind(&horizon)
        .bind(self.config.batch)
        .fetch_all(&mut *conn)
        .await?;
        drop(conn);
        let full = rows.len() as i64 == self.config.batch;
        let mut changes = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in &rows {
            let fields: Option<Vec<String>> = row.try_get("changed_fields")?;
            let removed: bool = row.try_get("removed")?;
            let change = match kind {
                GroupType::Device => Change::Device(Box::new(device_row(row)?.device)),
                GroupType::Service => Change::Service(Box::new(service_row(row)?.service)),
            };
            changes.push((change, fields, removed));
            last = Some((
                parse_xid(&row.try_get::<String, _>("ctx")?)?,
                row.try_get::<i64, _>("change_seq")?,
            ));
        }
        if !changes.is_empty() {
            self.apply_changes(kind, changes).await?;
        }
        // Everything below the horizon has been read when the batch was not full.
        let cursor = match (last, full) {
            (Some(last), true) => Some(last),
            (last, false) => {
                let h = parse_xid(&horizon)?;
                Some(last.map_or((h, 0), |l| l.max((h, 0))))
            }
            (None, true) => None,
        };
        if let Some((tx, seq)) = cursor {
            sqlx::query(
                "UPDATE inventory_cursors SET changed_tx = $2::text::xid8, change_seq = $3
                  WHERE name = $1 AND (changed_tx, change_seq) < ($2::text::xid8, $3)",
            )
            .bind(table)
            .bind(tx.to_string())
            .bind(seq)
            .execute(&self.pool)
            .await?;
        }
        Ok(!rows.is_empty())
    }

    /// Evaluates changed entities against the rules that read a changed field.
    async fn apply_changes(
        &mut self,
        kind: GroupType,
        changes: Vec<(Change, Option<Vec<String>>, bool)>,
    ) -> Result<(), RuleWorkerError> {
        let rules: Vec<Active> = self
            .active_rules()
            .await?
            .into_iter()
            .filter(|r| r.healthy)
            .collect();
        let mut services: Vec<(Service, Option<Vec<String>>, bool)> = vec![];
        let mut devices: Vec<(Device, Option<Vec<String>>, bool)> = vec![];
        for (change, fields, removed) in changes {
            match change {
                Change::Device(d) => devices.push((*d, fields, removed)),
                Change::Service(s) => services.push((*s, fields, removed)),
            }
        }
        let mut cause_ids: Vec<String> = vec![];
        // A device's change also reaches its services through `device.<field>`.
        if kind == GroupType::Device {
            let uses_device = rules.iter().any(|r| {
                r.kind == GroupType::Service
                    && r.cached.fields.iter().any(|f| f.starts_with("device."))
            });
            if uses_device && !devices.is_empty() {
                let ids: Vec<String> = devices.iter().map(|(d, _, _)| d.id.clone()).collect();
                let rows = sqlx::query(&format!(
                    "SELECT {SERVICE_COLUMNS} FROM services s
                      WHERE s.device_id = ANY($1) AND s.removed_at IS NULL"
                ))
                .bind(&ids)
                .fetch_all(&self.pool)
                .await?;
                let changed: HashMap<&str, Option<Vec<String>>> = devices
                    .iter()
                    .map(|(d, f, removed)| {
                        let f = if *removed { None } else { f.clone() };
                        (
                            d.id.as_str(),
                            f.map(|f| f.iter().map(|x| format!("device.{x}")).collect()),
                        )
                    })
                    .collect();
                for row in &rows {
                    let s = service_row(row)?.service;
                    let fields = match changed.get(s.device_id.as_str()) {
                        Some(Some(f)) => Some(f.clone()),
                        // A new, revived or removed host: every device field changed.
                        _ => None,
                    };
                    // Only `device.*` rules need it: mark it so below.
                    services.push((
                        s,
                        Some(fields.unwrap_or_else(|| vec!["device.*".into()])),
                        false,
                    ));
                }
            }
            cause_ids.extend(devices.iter().map(|(d, _, _)| d.id.clone()));
        } else {
            cause_ids.extend(services.iter().map(|(s, _, _)| s.id.clone()));
        }
        let cause = cause_text(kind, &cause_ids);
        if !devices.is_empty() {
            let device_rules: Vec<&Active> = rules
                .iter()
                .filter(|r| r.kind == GroupType::Device)
                .collect();
            let entities: Vec<(Entity<'_>, &str, Option<&Vec<String>>, bool)> = devices
                .iter()
                .map(|(d, f, removed)| (Entity::Device(d), d.id.as_str(), f.as_ref(), *removed))
                .collect();
            self.converge_entities(&device_rules, &entities, &cause)
                .await?;
        }
        if !services.is_empty() {
            let hosts: Vec<String> = services
                .iter()
                .map(|(s, _, _)| s.device_id.clone())
                .collect();
            let hosts: HashMap<String, Device> = inv::devices_by_ids(&self.pool, &hosts)
                .await?
                .into_iter()
                .map(|r| (r.device.id.clone(), r.device))
                .collect();
            let service_rules: Vec<&Active> = rules
                .iter()
                .filter(|r| r.kind == GroupType::Service)
                .collect();
            let entities: Vec<(Entity<'_>, &str, Option<&Vec<String>>, bool)> = services
                .iter()
                .map(|(s, f, removed)| {
                    (
                        Entity::Service(s, hosts.get(&s.device_id)),
                        s.id.as_str(),
                        f.as_ref(),
                        *removed,
                    )
                })
                .collect();
            self.converge_entities(&service_rules, &entities, &cause)
                .await?;
        }
        Ok(())
    }

    async fn converge_entities(
        &self,
        rules: &[&Active],
        entities: &[(Entity<'_>, &str, Option<&Vec<String>>, bool)],
        cause: &str,
    ) -> Result<(), RuleWorkerError> {
        let ids: Vec<String> = entities.iter().map(|e| e.1.to_string()).collect();
        let needs_groups = rules.iter().any(|r| r.cached.moves);
        let preloaded = if needs_groups {
            group_sets(&self.pool, &ids).await?
        } else {
            GroupSets::default()
        };
        // Current rule entries of these entities, in every group (removed entities leave
        // groups whose rules are disabled too).
        let rows = sqlx::query(
            "SELECT group_id, member_id, kind::text AS kind FROM membership_registry
              WHERE member_id = ANY($1) AND kind IN ('R', 'S')",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let mut current: HashSet<(Uuid, String)> = HashSet::new();
        let mut statics: HashMap<Uuid, Vec<String>> = HashMap::new();
        for r in &rows {
            let group: Uuid = r.try_get("group_id")?;
            let member: String = r.try_get("member_id")?;
            if r.try_get::<String, _>("kind")? == "R" {
                current.insert((group, member));
            } else {
                statics.entry(group).or_default().push(member);
            }
        }
        let (mut add, mut remove) = decide(rules, entities, &current, &preloaded);
        let versions: HashMap<Uuid, u64> =
            rules.iter().map(|r| (r.group, r.cached.version)).collect();
        // Removed entities leave every group, static entries too (the source removed them).
        // Decided under each group's lock: an entity revived meanwhile keeps its entries.
        let removed: HashSet<&str> = entities.iter().filter(|e| e.3).map(|e| e.1).collect();
        if !removed.is_empty() {
            let metadata = EventMetadata::system(Source::Worker, cause.to_string());
            let mut gone_by_group: HashMap<Uuid, Vec<String>> = HashMap::new();
            for (group, members) in statics {
                gone_by_group
                    .entry(group)
                    .or_default()
                    .extend(members.into_iter().filter(|m| removed.contains(m.as_str())));
            }
            for (group, member) in &current {
                if removed.contains(member.as_str()) {
                    gone_by_group
                        .entry(*group)
                        .or_default()
                        .push(member.clone());
                }
            }
            for (group, mut members) in gone_by_group {
                members.sort();
                members.dedup();
                if members.is_empty() {
                    continue;
                }
                let command = MembershipCommand::RemoveGone {
                    member_ids: members,
                    cause: Some(cause.to_string()),
                };
                self.send(group, command, &metadata).await?;
            }
        }
        let groups: BTreeSet<Uuid> = add.keys().chain(remove.keys()).copied().collect();
        for group in groups {
            // A group without an active rule (disabled since) keeps the version it had.
            let version = versions.get(&group).copied().unwrap_or(0);
            let adds = add.get(&group).map_or(0, Vec::len) as i64;
            if adds > 0 && versions.contains_key(&group) {
                let removes = remove.get(&group).map_or(0, Vec::len) as i64;
                let limit = self.config.max_matches;
                let now: i64 = sqlx::query_scalar(
                    "SELECT coalesce((SELECT n FROM membership_registry_counts
                                       WHERE group_id = $1 AND kind = 'R'), 0)",
                )
                .bind(group)
                .fetch_one(&self.pool)
                .await?;
                if now - removes + adds > limit {
                    let outcome = RunOutcome {
                        status: "FAILED",
                        matches: None,
                        error: Some(format!(
                            "the rule would match more than the maximum of {limit} entities; memberships were left unchanged"
                        )),
                        added: 0,
                        removed: 0,
                    };
                    self.record(group, version, &outcome, Instant::now(), cause)
                        .await?;
                    continue;
                }
            }
            self.apply(
                group,
                version,
                add.remove(&group).unwrap_or_default(),
                remove.remove(&group).unwrap_or_default(),
                cause,
            )
            .await?;
        }
        Ok(())
    }
}

enum Change {
    Device(Box<Device>),
    Service(Box<Service>),
}

fn cause_text(kind: GroupType, ids: &[String]) -> String {
    let what = match kind {
        GroupType::Device => "devices",
        GroupType::Service => "services",
    };
    let shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
    let more = ids.len().saturating_sub(shown.len());
    if more > 0 {
        format!("inventory:{what}:{} (+{more} more)", shown.join(","))
    } else {
        format!("inventory:{what}:{}", shown.join(","))
    }
}

fn check<T>(result: Result<T, ExecError<MembershipError>>) -> Result<(), RuleWorkerError> {
    match result {
        Ok(_) => Ok(()),
        // The group went away meanwhile: nothing left to converge.
        Err(ExecError::Domain(MembershipError::GroupNotFound(_))) => Ok(()),
        Err(e) => Err(RuleWorkerError::Command(e.to_string())),
    }
}

async fn live_ids(pool: &PgPool, ids: &[String]) -> Result<Vec<String>, RuleWorkerError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM devices WHERE id = ANY($1) AND removed_at IS NULL
         UNION ALL SELECT id FROM services WHERE id = ANY($1) AND removed_at IS NULL",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

/// The live entities `rule` matches, through its compiled SQL; `Err` (a message) when more
/// than `max` match or the query outlives `timeout`.
pub async fn matching_ids(
    pool: &PgPool,
    kind: GroupType,
    rule: &Rule,
    max: i64,
    timeout: Duration,
) -> Result<Result<HashSet<String>, String>, RuleWorkerError> {
    let (from, alias, _) = entity_table(kind);
    let fragment = rule.to_sql(&inv::sql_context(Utc::now()));
    let next = fragment.params.len() + 1;
    let sql = format!(
        "SELECT {alias}.id FROM {from} WHERE {alias}.removed_at IS NULL AND ({}) LIMIT ${next}",
        fragment.sql
    );
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "SET LOCAL statement_timeout = {}",
        timeout.as_millis().max(1)
    ))
    .execute(&mut *tx)
    .await?;
    let args = rule_arguments(
        Some(&fragment),
        &[corral_domain::rule::SqlParam::Int(max + 1)],
    )?;
    let ids: Vec<String> = match sqlx::query_scalar_with(&sql, args)
        .fetch_all(&mut *tx)
        .await
    {
        Ok(ids) => ids,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("57014") => {
            return Ok(Err(format!(
                "evaluation timed out after {} s",
                timeout.as_secs_f64()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    if ids.len() as i64 > max {
        return Ok(Err(format!(
            "the rule matches more than the maximum of {max} entities; memberships were left unchanged"
        )));
    }
    Ok(Ok(ids.into_iter().collect()))
}

/// Runs the evaluator until `stop`: waits to become the cluster's one evaluator, then steps,
/// sleeping `poll` (or until woken) when idle.
pub async fn run(
    pool: PgPool,
    commands: Arc<MembershipCommands>,
    config: RuleWorkerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let poll = config.poll;
    let mut worker = RuleWorker::new(pool.clone(), commands, config);
    let leadership = Leadership::Worker(Lock::RuleEvaluator);
    loop {
        let Some(mut leader) =
            Leader::wait_for(&pool, &leadership, crate::LEADER_RETRY, &mut stop).await
        else {
            return;
        };
        loop {
            if *stop.borrow() {
                return;
            }
            // Leadership ends with the lock's session: check it before every step, so that a
            // process whose session was ended never evaluates beside the new leader.
            if !leader.check().await {
                tracing::warn!("rule evaluator lost its lock; waiting to take it again");
                break;
            }
            match worker.step().await {
                Ok(true) => tokio::task::yield_now().await,
                Ok(false) => sleep_or_stop(poll, &mut stop).await,
                Err(e) => {
                    tracing::warn!(error = %e, "rule evaluation step failed; retrying");
                    sleep_or_stop(Duration::from_secs(1), &mut stop).await;
                }
            }
        }
    }
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
}

/// Rule entries to add and remove, per group, for changed entities: each is evaluated against
/// the rules that read one of its changed fields (all rules when the fields are unknown);
/// removed entities are left to `RemoveGone`.
#[allow(clippy::type_complexity)]
fn decide(
    rules: &[&Active],
    entities: &[(Entity<'_>, &str, Option<&Vec<String>>, bool)],
    current: &HashSet<(Uuid, String)>,
    groups: &GroupSets,
) -> (HashMap<Uuid, Vec<String>>, HashMap<Uuid, Vec<String>>) {
    let ctx = EvalContext {
        now: Utc::now(),
        groups,
    };
    let mut add: HashMap<Uuid, Vec<String>> = HashMap::new();
    let mut remove: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (entity, id, fields, removed) in entities {
        if *removed {
            continue; // see RemoveGone in converge_entities
        }
        for rule in rules {
            let relevant = match fields {
                None => true,
                // A service moved to another host (`device_id`) changes every `device.*`.
                Some(changed) => changed.iter().any(|f| {
                    rule.cached.fields.contains(f)
                        || ((f == "device.*"
                            || (f == "device_id" && rule.kind == GroupType::Service))
                            && rule.cached.fields.iter().any(|x| x.starts_with("device.")))
                }),
            };
            if !relevant {
                continue;
            }
            let matched = rule.cached.rule.matches(*entity, &ctx);
            let present = current.contains(&(rule.group, id.to_string()));
            if matched && !present {
                add.entry(rule.group).or_default().push(id.to_string());
            } else if !matched && present {
                remove.entry(rule.group).or_default().push(id.to_string());
            }
        }
    }
    (add, remove)
}
