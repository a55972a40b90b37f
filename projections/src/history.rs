//! Time travel: groups, the tree and memberships as they were at a log position.
//!
//! Nothing is stored for this: every answer folds events read straight from the public log
//! (`event_log` joined with `events`), keeping those at or before the position. "As of a time
//! `t`" is the position [`crate::public_log::position_at`] gives for `t`.
//!
//! Costs (see `docs/membership.md`, "Time travel"):
//! - [`groups_at`]: the Group events of the groups asked for and of their ancestors (one
//!   query per level of the deepest chain, probing the events' primary key);
//! - [`tree_at`]: every structural Group event (create, rename, move, delete) up to the
//!   position, in one query;
//! - [`members_at`]: the tree (effective only) plus the Membership events of the subtree's
//!   groups up to the position, in one query, folded in memory.
//!
//! The folds are pure functions over parsed events ([`GroupFold`], [`TreeFold`],
//! [`MembershipFold`]) and are tested without a database.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use corral_domain::group::GroupCapabilities;
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::StoreError;

/// Longest parent chain followed (a guard against corrupt data; real trees are far shallower).
const MAX_CHAIN: usize = 256;

/// A group's rule as it was.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoricalRule {
    /// The normalized text form.
    pub text: String,
    /// The canonical JSON form.
    pub json: Value,
    /// Whether workers evaluated it.
    pub enabled: bool,
    /// The rule's version (1, 2, ... per group).
    pub version: i64,
}

/// A group as it was at a position.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoricalGroup {
    /// The group's id.
    pub id: Uuid,
    /// `DEVICE` or `SERVICE`.
    pub group_type: String,
    /// Its name then.
    pub name: String,
    /// Its parent then (`None` for a root).
    pub parent_id: Option<Uuid>,
    /// Its description then.
    pub description: Option<String>,
    /// Its metadata then.
    pub metadata: Value,
    /// A system root.
    pub is_system: bool,
    /// The aggregate version then (the sequence of its last event at or before the position).
    pub version: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed at or before the position (as the live tree counts changes).
    pub updated_at: DateTime<Utc>,
    /// Its rule then.
    pub rule: Option<HistoricalRule>,
    /// Its capability flags then (all false before its first `GroupCapabilitiesChanged`).
    pub capabilities: GroupCapabilities,
    /// When it was deleted, if that was at or before the position.
    pub deleted_at: Option<DateTime<Utc>>,
    /// When it was deleted, if that was after the position ("deleted since").
    pub deleted_since: Option<DateTime<Utc>>,
    /// Names from the root down, joined by `/`. For a group deleted at or before the position,
    /// the path it had when it was deleted.
    pub path: String,
    /// Levels below the root.
    pub depth: i32,
    /// Its ancestors from the root down to the parent (the chain `path` was built from).
    pub ancestors: Vec<Uuid>,
    /// The position asked for.
    pub position: i64,
    /// The position its path and membership are read at: `position`, or just before its
    /// deletion for a group deleted by then (its members as they were when it was deleted,
    /// not as the purge that followed left them).
    pub state_position: i64,
}

/// One Group event, parsed for the folds.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupEventRow {
    /// Its public log position.
    pub position: i64,
    /// The aggregate sequence (the group's version after it).
    pub sequence: i64,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The event type (`GroupCreated`, ...).
    pub event_type: String,
    /// The body without its variant wrapper.
    pub body: Value,
}

fn str_field(body: &Value, name: &str) -> Option<String> {
    body.get(name).and_then(Value::as_str).map(str::to_string)
}

fn uuid_field(body: &Value, name: &str) -> Option<Uuid> {
    body.get(name)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// Folds one group's events (in sequence order) as of a position.
#[derive(Debug, Clone, Default)]
pub struct GroupFold {
    group: Option<HistoricalGroup>,
    /// The position of its `GroupDeleted`, when at or before the position.
    deleted_position: Option<i64>,
}

impl GroupFold {
    /// Folds `events` of group `id` (any order of positions; sequence order expected) as of
    /// `position`: events after it only tell whether the group was deleted since.
    pub fn fold(id: Uuid, events: &[GroupEventRow], position: i64) -> Self {
        let mut fold = Self::default();
        for e in events {
            fold.apply(id, e, position);
        }
        if let Some(g) = fold.group.as_mut() {
            g.position = position;
        }
        fold
    }

    /// Applies one event.
    fn apply(&mut self, id: Uuid, e: &GroupEventRow, position: i64) {
        let body = &e.body;
        if e.position > position {
            if e.event_type == "GroupDeleted" {
                if let Some(g) = self.group.as_mut() {
                    g.deleted_since = Some(e.recorded_at);
                }
            }
            return;
        }
        if e.event_type == "GroupCreated" {
            self.group = Some(HistoricalGroup {
                id,
                group_type: str_field(body, "group_type").unwrap_or_default(),
                name: str_field(body, "name").unwrap_or_default(),
                parent_id: uuid_field(body, "parent_id"),
                description: str_field(body, "description"),
                metadata: body
                    .get("metadata")
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Default::default())),
                is_system: body
                    .get("is_system")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                version: e.sequence,
                created_at: e.recorded_at,
                updated_at: e.recorded_at,
                rule: None,
                capabilities: GroupCapabilities::default(),
                deleted_at: None,
                deleted_since: None,
                path: String::new(),
                depth: 0,
                ancestors: Vec::new(),
                position,
                state_position: position,
            });
            self.deleted_position = None;
            return;
        }
        let Some(g) = self.group.as_mut() else {
            return;
        };
        g.version = e.sequence;
        match e.event_type.as_str() {
            "GroupRenamed" => {
                if let Some(name) = str_field(body, "name") {
                    g.name = name;
                }
            }
            // Only the new values: the event may carry more (e.g. the previous ones).
            "GroupUpdated" => {
                g.description = str_field(body, "description");
                if let Some(m) = body.get("metadata") {
                    g.metadata = m.clone();
                }
            }
            "GroupMoved" => {
                if let Some(p) = uuid_field(body, "new_parent_id") {
                    g.parent_id = Some(p);
                }
            }
            "GroupRuleSet" => {
                g.rule = Some(HistoricalRule {
                    text: str_field(body, "text").unwrap_or_default(),
                    json: body.get("rule").cloned().unwrap_or(Value::Null),
                    enabled: body.get("enabled").and_then(Value::as_bool).unwrap_or(true),
                    version: body
                        .get("rule_version")
                        .and_then(Value::as_i64)
                        .unwrap_or_default(),
                });
            }
            "GroupRuleCleared" => g.rule = None,
            // Computed flags, not an edit: like the live tree, `updated_at` stays.
            "GroupCapabilitiesChanged" => {
                let flag = |name: &str| body.get(name).and_then(Value::as_bool).unwrap_or(false);
                g.capabilities = GroupCapabilities {
                    has_sysmon: flag("has_sysmon"),
                    has_snmp: flag("has_snmp"),
                    has_services: flag("has_services"),
                };
                return;
            }
            "GroupDeleted" => {
                g.deleted_at = Some(e.recorded_at);
                self.deleted_position = Some(e.position);
                return;
            }
            // Event types added later that the tree does not count as changes.
            _ => return,
        }
        g.updated_at = e.recorded_at;
    }

    /// The group, if it had been created by the position.
    pub fn group(&self) -> Option<&HistoricalGroup> {
        self.group.as_ref()
    }

    /// The position its path is computed at: the position asked for, or just before its
    /// deletion when it was deleted by then.
    fn chain_position(&self, position: i64) -> i64 {
        self.deleted_position
            .map_or(position, |d| (d - 1).min(position))
    }
}

/// Reads the Group events of `(group, position)` pairs: those at or before the position and
/// any `GroupDeleted`, in sequence order per pair.
async fn group_events(
    conn: &mut PgConnection,
    keys: &[(Uuid, i64)],
) -> Result<HashMap<(Uuid, i64), Vec<GroupEventRow>>, StoreError> {
    let ids: Vec<String> = keys.iter().map(|k| k.0.to_string()).collect();
    let positions: Vec<i64> = keys.iter().map(|k| k.1).collect();
    let rows = sqlx::query(
        "SELECT q.id, q.pos, l.log_position, e.sequence, e.recorded_at, e.event_type,
                e.payload -> e.event_type AS body
           FROM unnest($1::text[], $2::bigint[]) AS q(id, pos)
           JOIN events e ON e.aggregate_type = 'Group' AND e.aggregate_id = q.id
           JOIN event_log l ON l.global_position = e.global_position
          WHERE l.log_position <= q.pos OR e.event_type = 'GroupDeleted'
          ORDER BY q.id, q.pos, e.sequence",
    )
    .bind(&ids)
    .bind(&positions)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: HashMap<(Uuid, i64), Vec<GroupEventRow>> = HashMap::new();
    for r in &rows {
        let id: String = r.try_get("id")?;
        let id: Uuid = id
            .parse()
            .map_err(|_| StoreError::Data(format!("group id {id:?}")))?;
        let pos: i64 = r.try_get("pos")?;
        out.entry((id, pos)).or_default().push(GroupEventRow {
            position: r.try_get("log_position")?,
            sequence: r.try_get("sequence")?,
            recorded_at: r.try_get("recorded_at")?,
            event_type: r.try_get("event_type")?,
            body: r
                .try_get::<Option<Value>, _>("body")?
                .unwrap_or(Value::Null),
        });
    }
    Ok(out)
}

/// Groups as they were at `position`, with their paths then. Groups not yet created by then
/// are left out; groups deleted by then are included (with `deleted_at`, and the path they
/// had when deleted). One query per level of the deepest parent chain.
pub async fn groups_at(
    conn: &mut PgConnection,
    ids: &[Uuid],
    position: i64,
) -> Result<HashMap<Uuid, HistoricalGroup>, StoreError> {
    let mut folds: HashMap<(Uuid, i64), GroupFold> = HashMap::new();
    let mut wanted: Vec<(Uuid, i64)> = ids.iter().map(|id| (*id, position)).collect();
    wanted.sort();
    wanted.dedup();
    for _ in 0..=MAX_CHAIN {
        if wanted.is_empty() {
            break;
        }
        let mut events = group_events(conn, &wanted).await?;
        let mut next = Vec::new();
        for key in wanted {
            let rows = events.remove(&key).unwrap_or_default();
            let fold = GroupFold::fold(key.0, &rows, key.1);
            if let Some(parent) = fold.group().and_then(|g| g.parent_id) {
                let parent_key = (parent, fold.chain_position(key.1));
                if !folds.contains_key(&parent_key) && parent_key != key {
                    next.push(parent_key);
                }
            }
            folds.insert(key, fold);
        }
        next.sort();
        next.dedup();
        next.retain(|k| !folds.contains_key(k));
        wanted = next;
    }
    let mut out = HashMap::new();
    for id in ids {
        let Some(fold) = folds.get(&(*id, position)) else {
            continue;
        };
        let Some(group) = fold.group() else {
            continue;
        };
        let mut group = group.clone();
        let (path, ancestors) = chain(&folds, &group, fold.chain_position(position));
        group.depth = ancestors.len() as i32;
        group.state_position = fold.chain_position(position);
        group.path = path;
        group.ancestors = ancestors;
        out.insert(*id, group);
    }
    Ok(out)
}

/// The path of `group` and its ancestors (root first), from folded parents.
fn chain(
    folds: &HashMap<(Uuid, i64), GroupFold>,
    group: &HistoricalGroup,
    at: i64,
) -> (String, Vec<Uuid>) {
    let mut names = vec![group.name.clone()];
    let mut ancestors = Vec::new();
    let mut seen = HashSet::from([group.id]);
    let mut parent = group.parent_id;
    while let Some(p) = parent {
        if !seen.insert(p) || ancestors.len() >= MAX_CHAIN {
            break;
        }
        let Some(g) = folds.get(&(p, at)).and_then(GroupFold::group) else {
            break;
        };
        names.push(g.name.clone());
        ancestors.push(p);
        parent = g.parent_id;
    }
    names.reverse();
    ancestors.reverse();
    (names.join("/"), ancestors)
}

/// One group as it was at `position` (see [`groups_at`]); `None` if not yet created then.
pub async fn group_at(
    conn: &mut PgConnection,
    id: Uuid,
    position: i64,
) -> Result<Option<HistoricalGroup>, StoreError> {
    Ok(groups_at(conn, &[id], position).await?.remove(&id))
}

/// A structural change to the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEvent {
    /// A group was created.
    Created {
        /// The group.
        id: Uuid,
        /// Its parent.
        parent: Option<Uuid>,
        /// Its name.
        name: String,
    },
    /// A group was renamed.
    Renamed {
        /// The group.
        id: Uuid,
        /// The new name.
        name: String,
    },
    /// A group moved.
    Moved {
        /// The group.
        id: Uuid,
        /// The new parent.
        parent: Uuid,
    },
    /// A group was deleted.
    Deleted {
        /// The group.
        id: Uuid,
    },
}

/// One group of a [`TreeFold`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeNode {
    /// Its parent then.
    pub parent: Option<Uuid>,
    /// Its name then.
    pub name: String,
}

/// The tree of groups alive at a position, folded from [`TreeEvent`]s in log order.
#[derive(Debug, Clone, Default)]
pub struct TreeFold {
    nodes: HashMap<Uuid, TreeNode>,
    children: HashMap<Uuid, Vec<Uuid>>,
}

impl TreeFold {
    /// Folds structural events in log order.
    pub fn from_events(events: impl IntoIterator<Item = TreeEvent>) -> Self {
        let mut nodes: HashMap<Uuid, TreeNode> = HashMap::new();
        for e in events {
            match e {
                TreeEvent::Created { id, parent, name } => {
                    nodes.insert(id, TreeNode { parent, name });
                }
                TreeEvent::Renamed { id, name } => {
                    if let Some(n) = nodes.get_mut(&id) {
                        n.name = name;
                    }
                }
                TreeEvent::Moved { id, parent } => {
                    if let Some(n) = nodes.get_mut(&id) {
                        n.parent = Some(parent);
                    }
                }
                TreeEvent::Deleted { id } => {
                    nodes.remove(&id);
                }
            }
        }
        let mut children: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for (id, n) in &nodes {
            if let Some(p) = n.parent {
                children.entry(p).or_default().push(*id);
            }
        }
        for list in children.values_mut() {
            list.sort_by_cached_key(|id| {
                let name = nodes.get(id).map(|n| n.name.to_lowercase());
                (name, *id)
            });
        }
        Self { nodes, children }
    }

    /// The group, if alive at the position.
    pub fn node(&self, id: Uuid) -> Option<&TreeNode> {
        self.nodes.get(&id)
    }

    /// Groups alive at the position.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// No group was alive.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The children of `id` then, ordered by lower-cased name, then id.
    pub fn children(&self, id: Uuid) -> &[Uuid] {
        self.children.get(&id).map_or(&[], Vec::as_slice)
    }

    /// `id` and its descendants then, each with its distance from `id` (0 for itself);
    /// empty if `id` was not alive.
    pub fn subtree(&self, id: Uuid) -> Vec<(Uuid, i32)> {
        if !self.nodes.contains_key(&id) {
            return Vec::new();
        }
        let mut out = vec![(id, 0)];
        let mut seen = HashSet::from([id]);
        let mut i = 0;
        while i < out.len() {
            let (g, depth) = out[i];
            for c in self.children(g) {
                if seen.insert(*c) {
                    out.push((*c, depth + 1));
                }
            }
            i += 1;
        }
        out
    }
}

/// The tree as it was at `position`: every structural Group event up to it, in one query.
pub async fn tree_at(conn: &mut PgConnection, position: i64) -> Result<TreeFold, StoreError> {
    let rows = sqlx::query(
        "SELECT e.aggregate_id, e.event_type,
                e.payload -> e.event_type ->> 'name' AS name,
                coalesce(e.payload -> e.event_type ->> 'parent_id',
                         e.payload -> e.event_type ->> 'new_parent_id') AS parent
           FROM events e JOIN event_log l ON l.global_position = e.global_position
          WHERE e.aggregate_type = 'Group'
            AND e.event_type IN ('GroupCreated', 'GroupRenamed', 'GroupMoved', 'GroupDeleted')
            AND l.log_position <= $1
          ORDER BY l.log_position",
    )
    .bind(position)
    .fetch_all(&mut *conn)
    .await?;
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get("aggregate_id")?;
        let id: Uuid = id
            .parse()
            .map_err(|_| StoreError::Data(format!("group id {id:?}")))?;
        let event_type: String = r.try_get("event_type")?;
        let name: Option<String> = r.try_get("name")?;
        let parent: Option<String> = r.try_get("parent")?;
        let parent: Option<Uuid> = parent.and_then(|p| p.parse().ok());
        events.push(match event_type.as_str() {
            "GroupCreated" => TreeEvent::Created {
                id,
                parent,
                name: name.unwrap_or_default(),
            },
            "GroupRenamed" => TreeEvent::Renamed {
                id,
                name: name.unwrap_or_default(),
            },
            "GroupMoved" => match parent {
                Some(parent) => TreeEvent::Moved { id, parent },
                None => continue,
            },
            _ => TreeEvent::Deleted { id },
        });
    }
    Ok(TreeFold::from_events(events))
}

/// The children of `id` at `position`, as groups then (ordered by lower-cased name, id).
pub async fn children_at(
    conn: &mut PgConnection,
    id: Uuid,
    position: i64,
) -> Result<Vec<HistoricalGroup>, StoreError> {
    let tree = tree_at(conn, position).await?;
    let ids = tree.children(id).to_vec();
    let mut groups = groups_at(conn, &ids, position).await?;
    Ok(ids.iter().filter_map(|c| groups.remove(c)).collect())
}

/// Where a membership entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// A static entry.
    Static,
    /// A rule match.
    Rule,
}

impl Source {
    /// `S` or `R`, the read model's codes.
    pub fn code(self) -> char {
        match self {
            Source::Static => 'S',
            Source::Rule => 'R',
        }
    }
}

/// One member of a group at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoricalMember {
    /// The device or service id.
    pub member_id: String,
    /// How it was a direct member of `via_group` (static wins over rule).
    pub source: Source,
    /// Since when it was (the entry of that source was added then).
    pub since: DateTime<Utc>,
    /// The group whose direct member it was: the group itself, or for effective membership
    /// the nearest descendant holding it (then the smallest group id), as the live query.
    pub via_group: Uuid,
}

/// A Membership event, parsed for [`MembershipFold`].
#[derive(Debug, Clone, PartialEq)]
pub enum MembershipChange {
    /// Entries of a source were added.
    Added(Source, Vec<String>),
    /// Entries of a source were removed.
    Removed(Source, Vec<String>),
    /// Members were excluded.
    Excluded(Vec<String>),
    /// Exclusions were lifted.
    Unexcluded(Vec<String>),
}

impl MembershipChange {
    /// Parses an event type and body; `None` for types that do not change entries.
    pub fn parse(event_type: &str, body: &Value) -> Option<Self> {
        let ids: Vec<String> = body
            .get("member_ids")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let source = if body.get("source").and_then(Value::as_str) == Some("RULE") {
            Source::Rule
        } else {
            Source::Static
        };
        Some(match event_type {
            "MembersAdded" => Self::Added(source, ids),
            "MembersRemoved" => Self::Removed(source, ids),
            "MembersExcluded" => Self::Excluded(ids),
            "MembersUnexcluded" => Self::Unexcluded(ids),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entries {
    static_since: Option<DateTime<Utc>>,
    rule_since: Option<DateTime<Utc>>,
    excluded: bool,
}

/// One group's entries (static, rule, excluded), folded from its Membership events.
#[derive(Debug, Clone, Default)]
pub struct MembershipFold {
    entries: HashMap<String, Entries>,
}

impl MembershipFold {
    /// Applies one change recorded at `at` (an existing entry keeps its first `since`, as
    /// the read model does).
    pub fn apply(&mut self, change: MembershipChange, at: DateTime<Utc>) {
        match change {
            MembershipChange::Added(source, ids) => {
                for id in ids {
                    let e = self.entries.entry(id).or_default();
                    let slot = match source {
                        Source::Static => &mut e.static_since,
                        Source::Rule => &mut e.rule_since,
                    };
                    slot.get_or_insert(at);
                }
            }
            MembershipChange::Removed(source, ids) => {
                for id in ids {
                    if let Some(e) = self.entries.get_mut(&id) {
                        match source {
                            Source::Static => e.static_since = None,
                            Source::Rule => e.rule_since = None,
                        }
                    }
                }
            }
            MembershipChange::Excluded(ids) => {
                for id in ids {
                    self.entries.entry(id).or_default().excluded = true;
                }
            }
            MembershipChange::Unexcluded(ids) => {
                for id in ids {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.excluded = false;
                    }
                }
            }
        }
    }

    /// How `id` is a direct member (exclude > static > rule), if it is one.
    pub fn direct_source(&self, id: &str) -> Option<Source> {
        let e = self.entries.get(id)?;
        match (e.excluded, e.static_since, e.rule_since) {
            (true, _, _) => None,
            (false, Some(_), _) => Some(Source::Static),
            (false, None, Some(_)) => Some(Source::Rule),
            (false, None, None) => None,
        }
    }

    /// Members with any entry (static, rule or excluded).
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// The direct members with the precedence exclude > static > rule, unordered;
    /// `source` keeps only members of that (resolved) source.
    pub fn direct(
        &self,
        source: Option<Source>,
    ) -> impl Iterator<Item = (&str, Source, DateTime<Utc>)> {
        self.entries.iter().filter_map(move |(id, e)| {
            if e.excluded {
                return None;
            }
            let (s, since) = match (e.static_since, e.rule_since) {
                (Some(t), _) => (Source::Static, t),
                (None, Some(t)) => (Source::Rule, t),
                (None, None) => return None,
            };
            (source.is_none() || source == Some(s)).then_some((id.as_str(), s, since))
        })
    }
}

/// Resolves members from folded groups: each group's direct members, merged over the groups
/// (each with its distance from the group asked about) so that every member appears once,
/// through the nearest group holding it (then the smallest group id). Sorted by member id
/// (bytewise).
pub fn resolve_members(
    groups: &[(Uuid, i32)],
    folds: &HashMap<Uuid, MembershipFold>,
    source: Option<Source>,
) -> Vec<HistoricalMember> {
    let mut best: BTreeMap<&str, (i32, Uuid, Source, DateTime<Utc>)> = BTreeMap::new();
    for (group, depth) in groups {
        let Some(fold) = folds.get(group) else {
            continue;
        };
        for (id, s, since) in fold.direct(source) {
            let candidate = (*depth, *group, s, since);
            match best.get_mut(id) {
                Some(current) if (current.0, current.1) <= (candidate.0, candidate.1) => {}
                Some(current) => *current = candidate,
                None => {
                    best.insert(id, candidate);
                }
            }
        }
    }
    best.into_iter()
        .map(|(id, (_, via, source, since))| HistoricalMember {
            member_id: id.to_string(),
            source,
            since,
            via_group: via,
        })
        .collect()
}

/// The members of `group` at `position`: direct (its own) or effective (its subtree's then,
/// each once, through the nearest group), sorted by member id (bytewise). `source` keeps
/// only memberships of that source (for effective: through the nearest group holding it with
/// that source, as the live query). Empty if the group was not alive at the position.
pub async fn members_at(
    conn: &mut PgConnection,
    group: Uuid,
    position: i64,
    effective: bool,
    source: Option<Source>,
) -> Result<Vec<HistoricalMember>, StoreError> {
    let groups: Vec<(Uuid, i32)> = if effective {
        tree_at(conn, position).await?.subtree(group)
    } else {
        vec![(group, 0)]
    };
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let folds = membership_folds(conn, &groups, position).await?;
    Ok(resolve_members(&groups, &folds, source))
}

/// Folds the Membership events of `groups` up to `position` (one query).
pub async fn membership_folds(
    conn: &mut PgConnection,
    groups: &[(Uuid, i32)],
    position: i64,
) -> Result<HashMap<Uuid, MembershipFold>, StoreError> {
    let ids: Vec<String> = groups.iter().map(|g| g.0.to_string()).collect();
    let rows = sqlx::query(
        "SELECT e.aggregate_id, e.event_type, e.recorded_at, e.payload -> e.event_type AS body
           FROM unnest($1::text[]) AS g(id)
           JOIN events e ON e.aggregate_type = 'Membership' AND e.aggregate_id = g.id
           JOIN event_log l ON l.global_position = e.global_position
          WHERE l.log_position <= $2
          ORDER BY e.aggregate_id, e.sequence",
    )
    .bind(&ids)
    .bind(position)
    .fetch_all(&mut *conn)
    .await?;
    let mut folds: HashMap<Uuid, MembershipFold> = HashMap::new();
    for r in &rows {
        let id: String = r.try_get("aggregate_id")?;
        let id: Uuid = id
            .parse()
            .map_err(|_| StoreError::Data(format!("group id {id:?}")))?;
        let event_type: String = r.try_get("event_type")?;
        let body: Option<Value> = r.try_get("body")?;
        let Some(change) =
            MembershipChange::parse(&event_type, body.as_ref().unwrap_or(&Value::Null))
        else {
            continue;
        };
        folds
            .entry(id)
            .or_default()
            .apply(change, r.try_get("recorded_at")?);
    }
    Ok(folds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0)
            .single()
            .expect("time")
    }

    fn ev(position: i64, sequence: i64, event_type: &str, body: Value) -> GroupEventRow {
        GroupEventRow {
            position,
            sequence,
            recorded_at: t(position),
            event_type: event_type.into(),
            body,
        }
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn history() -> Vec<GroupEventRow> {
        vec![
            ev(
                10,
                1,
                "GroupCreated",
                json!({"group_type": "DEVICE", "name": "A", "parent_id": id(1).to_string(),
                       "description": null, "metadata": {}, "is_system": false}),
            ),
            ev(
                20,
                2,
                "GroupRenamed",
                json!({"name": "B", "previous_name": "A"}),
            ),
            ev(
                30,
                3,
                "GroupUpdated",
                json!({"description": "d", "metadata": {"k": 1}, "previous": {"description": null}}),
            ),
            ev(
                40,
                4,
                "GroupMoved",
                json!({"previous_parent_id": id(1).to_string(), "new_parent_id": id(2).to_string()}),
            ),
            ev(
                50,
                5,
                "GroupRuleSet",
                json!({"rule": {"op": "x"}, "text": "hostname:a%", "enabled": true, "rule_version": 1, "refs": []}),
            ),
            ev(60, 6, "GroupRuleCleared", json!({"rule_version": 1})),
            ev(70, 7, "GroupDeleted", json!({})),
        ]
    }

    #[test]
    fn a_group_folds_as_of_each_position() {
        let g = id(9);
        let events = history();
        assert!(GroupFold::fold(g, &events, 9).group().is_none());
        let at = |p| {
            GroupFold::fold(g, &events, p)
                .group()
                .cloned()
                .expect("group")
        };
        let created = at(10);
        assert_eq!(
            (created.name.as_str(), created.parent_id, created.version),
            ("A", Some(id(1)), 1)
        );
        assert_eq!(created.deleted_since, Some(t(70)));
        assert_eq!(created.deleted_at, None);
        assert_eq!(at(25).name, "B");
        assert_eq!(at(25).updated_at, t(20));
        assert_eq!(at(35).description.as_deref(), Some("d"));
        assert_eq!(at(35).metadata, json!({"k": 1}));
        assert_eq!(at(45).parent_id, Some(id(2)));
        let ruled = at(55).rule.expect("rule");
        assert_eq!(
            (ruled.text.as_str(), ruled.enabled, ruled.version),
            ("hostname:a%", true, 1)
        );
        assert_eq!(at(65).rule, None);
        assert_eq!(at(65).version, 6);
        let deleted = GroupFold::fold(g, &events, 80);
        let group = deleted.group().expect("deleted group");
        assert_eq!(group.deleted_at, Some(t(70)));
        assert_eq!(group.deleted_since, None);
        assert_eq!(group.updated_at, t(60));
        assert_eq!(deleted.chain_position(80), 69);
        assert_eq!(GroupFold::fold(g, &events, 65).chain_position(65), 65);
    }

    #[test]
    fn capabilities_fold_as_of_each_position_without_touching_updated_at() {
        let g = id(9);
        let changed = |position, sequence, sysmon: bool, previous: bool| {
            ev(
                position,
                sequence,
                "GroupCapabilitiesChanged",
                json!({"has_sysmon": sysmon, "has_snmp": false, "has_services": true,
                       "previous": {"has_sysmon": previous, "has_snmp": false, "has_services": false}}),
            )
        };
        let events = vec![
            history()[0].clone(),
            changed(15, 2, true, false),
            changed(25, 3, false, true),
        ];
        let at = |p| {
            GroupFold::fold(g, &events, p)
                .group()
                .cloned()
                .expect("group")
        };
        assert_eq!(at(10).capabilities, GroupCapabilities::default());
        let first = at(15);
        assert_eq!(
            first.capabilities,
            GroupCapabilities {
                has_sysmon: true,
                has_snmp: false,
                has_services: true
            }
        );
        assert_eq!((first.version, first.updated_at), (2, t(10)));
        assert!(!at(30).capabilities.has_sysmon);
        assert_eq!(at(30).version, 3);
    }

    #[test]
    fn the_path_follows_the_parents_at_the_chain_position() {
        let root = id(1);
        let mid = id(2);
        let leaf = id(3);
        let mk = |gid: Uuid, name: &str, parent: Option<Uuid>| {
            GroupFold::fold(
                gid,
                &[ev(
                    1,
                    1,
                    "GroupCreated",
                    json!({"group_type": "DEVICE", "name": name,
                           "parent_id": parent.map(|p| p.to_string()), "metadata": {}, "is_system": false}),
                )],
                5,
            )
        };
        let folds: HashMap<(Uuid, i64), GroupFold> = [
            ((root, 5), mk(root, "Inventory", None)),
            ((mid, 5), mk(mid, "Site", Some(root))),
            ((leaf, 5), mk(leaf, "Rack", Some(mid))),
        ]
        .into_iter()
        .collect();
        let g = folds[&(leaf, 5)].group().expect("leaf").clone();
        let (path, ancestors) = chain(&folds, &g, 5);
        assert_eq!(path, "Inventory/Site/Rack");
        assert_eq!(ancestors, vec![root, mid]);
    }

    #[test]
    fn the_tree_folds_creates_renames_moves_and_deletes() {
        let (r, a, b, c) = (id(1), id(2), id(3), id(4));
        let tree = TreeFold::from_events(vec![
            TreeEvent::Created {
                id: r,
                parent: None,
                name: "Inventory".into(),
            },
            TreeEvent::Created {
                id: a,
                parent: Some(r),
                name: "b-site".into(),
            },
            TreeEvent::Created {
                id: b,
                parent: Some(r),
                name: "A-site".into(),
            },
            TreeEvent::Created {
                id: c,
                parent: Some(a),
                name: "rack".into(),
            },
            TreeEvent::Renamed {
                id: a,
                name: "z-site".into(),
            },
            TreeEvent::Moved { id: c, parent: b },
        ]);
        assert_eq!(tree.children(r), &[b, a]);
        assert_eq!(tree.subtree(r), vec![(r, 0), (b, 1), (a, 1), (c, 2)]);
        assert_eq!(tree.subtree(a), vec![(a, 0)]);
        let deleted = TreeFold::from_events(vec![
            TreeEvent::Created {
                id: r,
                parent: None,
                name: "Inventory".into(),
            },
            TreeEvent::Created {
                id: a,
                parent: Some(r),
                name: "a".into(),
            },
            TreeEvent::Deleted { id: a },
        ]);
        assert!(deleted.node(a).is_none());
        assert!(deleted.subtree(a).is_empty());
        assert_eq!(deleted.subtree(r), vec![(r, 0)]);
        assert_eq!(deleted.len(), 1);
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn direct_members_follow_exclude_over_static_over_rule() {
        let mut f = MembershipFold::default();
        f.apply(
            MembershipChange::Added(Source::Rule, ids(&["a", "b", "c"])),
            t(1),
        );
        f.apply(
            MembershipChange::Added(Source::Static, ids(&["b", "d"])),
            t(2),
        );
        f.apply(MembershipChange::Excluded(ids(&["c", "x"])), t(3));
        let mut direct: Vec<_> = f
            .direct(None)
            .map(|(i, s, t)| (i.to_string(), s, t))
            .collect();
        direct.sort();
        assert_eq!(
            direct,
            vec![
                ("a".into(), Source::Rule, t(1)),
                ("b".into(), Source::Static, t(2)),
                ("d".into(), Source::Static, t(2)),
            ]
        );
        f.apply(MembershipChange::Unexcluded(ids(&["c"])), t(4));
        f.apply(MembershipChange::Removed(Source::Static, ids(&["b"])), t(5));
        f.apply(MembershipChange::Removed(Source::Rule, ids(&["a"])), t(5));
        let mut direct: Vec<_> = f
            .direct(None)
            .map(|(i, s, t)| (i.to_string(), s, t))
            .collect();
        direct.sort();
        assert_eq!(
            direct,
            vec![
                ("b".into(), Source::Rule, t(1)),
                ("c".into(), Source::Rule, t(1)),
                ("d".into(), Source::Static, t(2)),
            ]
        );
        let statics: Vec<_> = f
            .direct(Some(Source::Static))
            .map(|(i, ..)| i.to_string())
            .collect();
        assert_eq!(statics, vec!["d".to_string()]);
    }

    #[test]
    fn effective_members_come_through_the_nearest_group() {
        let (top, near, far) = (id(9), id(5), id(2));
        let mut folds: HashMap<Uuid, MembershipFold> = HashMap::new();
        folds
            .entry(top)
            .or_default()
            .apply(MembershipChange::Added(Source::Rule, ids(&["m1"])), t(1));
        folds.entry(near).or_default().apply(
            MembershipChange::Added(Source::Static, ids(&["m1", "m2", "m3"])),
            t(2),
        );
        folds.entry(far).or_default().apply(
            MembershipChange::Added(Source::Rule, ids(&["m2", "m3", "M4"])),
            t(3),
        );
        // `near` and `far` at the same depth: the smaller id wins.
        let groups = [(top, 0), (near, 1), (far, 1)];
        let members = resolve_members(&groups, &folds, None);
        let got: Vec<_> = members
            .iter()
            .map(|m| (m.member_id.as_str(), m.via_group, m.source))
            .collect();
        assert_eq!(
            got,
            vec![
                ("M4", far, Source::Rule),
                ("m1", top, Source::Rule),
                ("m2", far, Source::Rule),
                ("m3", far, Source::Rule),
            ]
        );
        // With a source, the nearest group holding it with that source.
        let statics = resolve_members(&groups, &folds, Some(Source::Static));
        let got: Vec<_> = statics
            .iter()
            .map(|m| (m.member_id.as_str(), m.via_group))
            .collect();
        assert_eq!(got, vec![("m1", near), ("m2", near), ("m3", near)]);
    }

    #[test]
    fn membership_events_parse() {
        let added = MembershipChange::parse(
            "MembersAdded",
            &json!({"member_type": "DEVICE", "member_ids": ["a"], "source": "RULE", "rule_version": 2}),
        );
        assert_eq!(
            added,
            Some(MembershipChange::Added(Source::Rule, ids(&["a"])))
        );
        let excluded = MembershipChange::parse(
            "MembersExcluded",
            &json!({"member_type": "DEVICE", "member_ids": ["b"]}),
        );
        assert_eq!(excluded, Some(MembershipChange::Excluded(ids(&["b"]))));
        assert_eq!(MembershipChange::parse("Other", &json!({})), None);
    }
}
