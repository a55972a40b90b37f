//! The evaluator's decisions, without I/O: which rules a change concerns, what membership
//! diff a rule's answer implies, which entries leave with a removed entity, when a run is due,
//! where the change-feed cursor goes next. Everything here is a plain function of its inputs,
//! tested below without a database.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use corral_domain::group::GroupType;
use corral_domain::rule::{self, Entity, EvalContext, Memberships, Rule};
use uuid::Uuid;

use super::RunOutcome;

/// The pseudo-field of a service whose host changed in every `device.*` field (a new, revived
/// or removed host).
pub(super) const ANY_DEVICE_FIELD: &str = "device.*";

/// A parsed rule, cached per group and version.
#[derive(Clone)]
pub(super) struct Cached {
    pub(super) version: u64,
    pub(super) rule: Arc<Rule>,
    pub(super) fields: BTreeSet<String>,
    /// Its answer changes without inventory changes (`now`, `group:`).
    pub(super) moves: bool,
}

impl Cached {
    /// Parses a stored rule (`Err`: why it does not load).
    pub(super) fn load(version: u64, json: &serde_json::Value) -> Result<Self, String> {
        let rule = rule::from_json(json).map_err(|e| e.to_string())?.rule;
        Ok(Self::new(version, rule))
    }

    pub(super) fn new(version: u64, rule: Rule) -> Self {
        Self {
            version,
            fields: rule.fields(),
            moves: rule.uses_now() || !rule.group_refs().is_empty(),
            rule: Arc::new(rule),
        }
    }
}

/// An enabled rule of a live group.
#[derive(Clone)]
pub(super) struct Active {
    pub(super) group: Uuid,
    pub(super) kind: GroupType,
    pub(super) cached: Cached,
    /// Its last full run, of this version, succeeded: only then do inventory changes update
    /// it incrementally (a rule over the limits stays unchanged until a full run succeeds).
    pub(super) healthy: bool,
}

/// One changed entity of a batch of the inventory change feed.
pub(super) struct Changed<'a> {
    pub(super) entity: Entity<'a>,
    pub(super) id: &'a str,
    /// The fields that changed (`None`: unknown, every field).
    pub(super) fields: Option<&'a Vec<String>>,
    /// It was removed from the inventory.
    pub(super) removed: bool,
}

/// Rule entries to add and to remove, per group.
pub(super) type Decisions = HashMap<Uuid, Vec<String>>;

/// The cause and run status recorded when a group's rule stops applying: disabled (the rule
/// is still there) or cleared.
pub(super) fn unset_cause(rule_present: bool) -> (&'static str, &'static str) {
    if rule_present {
        ("rule_disabled", "DISABLED")
    } else {
        ("rule_cleared", "CLEARED")
    }
}

/// The rule entries to add (matched, not present) and to remove (present, not matched), each
/// sorted.
pub(super) fn membership_diff(
    matches: &HashSet<String>,
    current: &HashSet<String>,
) -> (Vec<String>, Vec<String>) {
    let mut add: Vec<String> = matches.difference(current).cloned().collect();
    let mut remove: Vec<String> = current.difference(matches).cloned().collect();
    add.sort();
    remove.sort();
    (add, remove)
}

/// Whether a rule of `kind` reading `fields` may answer differently after `changed` changed
/// (`None`: unknown, so yes). A service moved to another host (`device_id`), or whose host
/// changed as a whole ([`ANY_DEVICE_FIELD`]), changes every `device.*` field.
pub(super) fn concerns(
    kind: GroupType,
    fields: &BTreeSet<String>,
    changed: Option<&Vec<String>>,
) -> bool {
    let Some(changed) = changed else {
        return true;
    };
    let reads_device = || fields.iter().any(|x| x.starts_with("device."));
    changed.iter().any(|f| {
        fields.contains(f)
            || ((f == ANY_DEVICE_FIELD || (f == "device_id" && kind == GroupType::Service))
                && reads_device())
    })
}

/// Evaluations (changed entities × rules) from which [`decide`] spreads a batch over every
/// core: below it, starting threads costs more than it saves.
pub(super) const PARALLEL_EVALUATIONS: usize = 20_000;

/// Rule entries to add and remove, per group, for changed entities: each is evaluated against
/// the rules it [`concerns`]; removed entities are left to [`gone_by_group`]. A large batch is
/// evaluated on every core ([`decide_on`]), with the same result.
pub(super) fn decide(
    rules: &[&Active],
    entities: &[Changed<'_>],
    current: &HashSet<(Uuid, String)>,
    groups: &(dyn Memberships + Sync),
    now: DateTime<Utc>,
) -> (Decisions, Decisions) {
    let threads = if entities.len().saturating_mul(rules.len()) >= PARALLEL_EVALUATIONS {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        1
    };
    decide_on(threads, rules, entities, current, groups, now)
}

/// [`decide`] on `threads` threads: the entities are cut into that many consecutive runs,
/// each decided on its own thread, and the runs' decisions joined in entity order, so that
/// every group's lists are exactly those of one thread.
pub(super) fn decide_on(
    threads: usize,
    rules: &[&Active],
    entities: &[Changed<'_>],
    current: &HashSet<(Uuid, String)>,
    groups: &(dyn Memberships + Sync),
    now: DateTime<Utc>,
) -> (Decisions, Decisions) {
    if threads <= 1 || entities.len() < 2 {
        return decide_run(rules, entities, current, groups, now);
    }
    let run = entities.len().div_ceil(threads);
    let parts: Vec<(Decisions, Decisions)> = std::thread::scope(|scope| {
        let handles: Vec<_> = entities
            .chunks(run)
            .map(|part| scope.spawn(move || decide_run(rules, part, current, groups, now)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut add: Decisions = HashMap::new();
    let mut remove: Decisions = HashMap::new();
    for (part_add, part_remove) in parts {
        for (group, ids) in part_add {
            add.entry(group).or_default().extend(ids);
        }
        for (group, ids) in part_remove {
            remove.entry(group).or_default().extend(ids);
        }
    }
    (add, remove)
}

fn decide_run(
    rules: &[&Active],
    entities: &[Changed<'_>],
    current: &HashSet<(Uuid, String)>,
    groups: &dyn Memberships,
    now: DateTime<Utc>,
) -> (Decisions, Decisions) {
    let ctx = EvalContext { now, groups };
    let mut add: Decisions = HashMap::new();
    let mut remove: Decisions = HashMap::new();
    for e in entities.iter().filter(|e| !e.removed) {
        // One key per entity, its group set per rule (the lookup needs an owned id).
        let mut key = (Uuid::nil(), e.id.to_string());
        for rule in rules {
            if !concerns(rule.kind, &rule.cached.fields, e.fields) {
                continue;
            }
            let matched = rule.cached.rule.matches(e.entity, &ctx);
            key.0 = rule.group;
            let present = current.contains(&key);
            if matched && !present {
                add.entry(rule.group).or_default().push(key.1.clone());
            } else if !matched && present {
                remove.entry(rule.group).or_default().push(key.1.clone());
            }
        }
    }
    (add, remove)
}

/// The entries removed entities leave, per group: their static entries (`statics`) and rule
/// entries (`current`) alike, sorted, without duplicates; groups with none are left out.
pub(super) fn gone_by_group(
    statics: &HashMap<Uuid, Vec<String>>,
    current: &HashSet<(Uuid, String)>,
    removed: &HashSet<&str>,
) -> BTreeMap<Uuid, Vec<String>> {
    let mut out: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    let entries = statics
        .iter()
        .flat_map(|(g, members)| members.iter().map(move |m| (*g, m)))
        .chain(current.iter().map(|(g, m)| (*g, m)));
    for (group, member) in entries {
        if removed.contains(member.as_str()) {
            out.entry(group).or_default().push(member.clone());
        }
    }
    for members in out.values_mut() {
        members.sort();
        members.dedup();
    }
    out
}

/// Whether any service rule reads a `device.*` field (then a device change must reach the
/// services on that device).
pub(super) fn service_rules_read_devices(rules: &[Active]) -> bool {
    rules.iter().any(|r| {
        r.kind == GroupType::Service && r.cached.fields.iter().any(|f| f.starts_with("device."))
    })
}

/// What changed for a service when its host changed: the host's changed fields as
/// `device.<field>`, or [`ANY_DEVICE_FIELD`] when the host is new, revived or removed (its
/// fields are unknown, or it is gone).
pub(super) fn host_fields(host_fields: Option<&Vec<String>>, host_removed: bool) -> Vec<String> {
    match host_fields {
        Some(f) if !host_removed => f.iter().map(|x| format!("device.{x}")).collect(),
        _ => vec![ANY_DEVICE_FIELD.into()],
    }
}

/// The `cause` of incremental changes: the kind and the first five ids.
pub(super) fn cause_text(kind: GroupType, ids: &[String]) -> String {
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

/// Where the change-feed cursor goes after a batch that ended at `last`: there when the batch
/// was full (more may follow), else to the horizon (everything below it has been read),
/// never backwards; `None` (stay) for a full batch without rows, which cannot happen.
pub(super) fn next_cursor(
    last: Option<(u64, i64)>,
    full: bool,
    horizon: u64,
) -> Option<(u64, i64)> {
    match (last, full) {
        (Some(last), true) => Some(last),
        (last, false) => Some(last.map_or((horizon, 0), |l| l.max((horizon, 0)))),
        (None, true) => None,
    }
}

/// Whether adding `adds` and removing `removes` entries takes a group holding `now` rule
/// entries over `limit`.
pub(super) fn exceeds_limit(now: i64, removes: i64, adds: i64, limit: i64) -> bool {
    now - removes + adds > limit
}

/// The outcome recorded when incremental changes would take a rule over `limit`.
pub(super) fn over_limit(limit: i64) -> RunOutcome {
    RunOutcome {
        status: "FAILED",
        matches: None,
        error: Some(format!(
            "the rule would match more than the maximum of {limit} entities; memberships were left unchanged"
        )),
        added: 0,
        removed: 0,
    }
}

/// Whether a rule last run `age` seconds ago is due on the schedule (every `every` seconds):
/// only rules whose answer moves by itself, and failed runs.
pub(super) fn due(moves: bool, failed: bool, age: f64, every: f64) -> bool {
    (moves || failed) && age >= every
}

/// Takes up to `n` groups off the repair queue.
pub(super) fn take_repairs(queue: &mut VecDeque<Uuid>, n: usize) -> HashSet<Uuid> {
    let mut out = HashSet::new();
    while out.len() < n {
        match queue.pop_front() {
            Some(g) => {
                out.insert(g);
            }
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests;
