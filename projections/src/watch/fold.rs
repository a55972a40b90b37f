//! The decisions of a membership watch, with no database: what each event of the log does
//! to the watched groups and which members enter or leave. Membership events go through the
//! domain's one fold (`GroupEntries`); Group events are matched exhaustively here.
//!
//! The changes of one event come out in a deterministic order (a Membership event's in the
//! order of its ids, those of a subtree moving or being deleted sorted by member id), so that
//! every reader numbers them alike (`super::number`): the `membershipChanges` subscription and
//! the NATS membership feed resume inside one event by that index.

use std::collections::HashMap;

use corral_domain::group::GroupEvent;
use corral_domain::membership::{GroupEntries, MemberSource, MembershipEvent};
use uuid::Uuid;

/// Whether a member entered or left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MembershipChangeKind {
    /// It became a member.
    Entered,
    /// It stopped being one.
    Left,
}

impl MembershipChangeKind {
    /// `ENTERED` or `LEFT` (GraphQL's and the NATS body's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            MembershipChangeKind::Entered => "ENTERED",
            MembershipChangeKind::Left => "LEFT",
        }
    }

    /// `Entered` or `Left` (the CloudEvents type's last word, the subject's last token).
    pub fn word(self) -> &'static str {
        match self {
            MembershipChangeKind::Entered => "Entered",
            MembershipChangeKind::Left => "Left",
        }
    }
}

/// One member entering or leaving, before it is dressed as the GraphQL `MembershipChange`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchChange {
    /// Entered or left.
    pub kind: MembershipChangeKind,
    /// The device or service id.
    pub member_id: String,
    /// How it is (entered) or was (left) a direct member of `group`.
    pub source: MemberSource,
    /// The group whose direct membership changed.
    pub group: Uuid,
    /// Why (see `MembershipChange.cause`).
    pub cause: Option<String>,
}

/// What the watch needs after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// These changes (possibly none).
    Changes(Vec<WatchChange>),
    /// A subtree rooted at `group` moved in: load its groups' entries as of the event and
    /// pass them to [`EffectiveWatch::subtree_moved_in`] (cause `moved`).
    LoadSubtree {
        /// The group that moved in.
        group: Uuid,
    },
}

/// The state a watch keeps (a `membershipChanges` subscription, a watch of the NATS feed): the
/// entries of every watched group and, per member, how many of them hold it directly (it is a
/// member while that is above 0).
#[derive(Debug, Default)]
pub struct EffectiveWatch {
    root: Uuid,
    descendants: bool,
    groups: HashMap<Uuid, GroupEntries>,
    parents: HashMap<Uuid, Uuid>,
    holders: HashMap<String, u32>,
    /// The watched group was deleted: the stream ends after its last changes.
    pub ended: bool,
}

fn changes(
    kind: MembershipChangeKind,
    mut members: Vec<(String, MemberSource, Uuid)>,
    cause: &str,
) -> Vec<WatchChange> {
    // Gathered from hash maps: sorted, so that every reader numbers them alike.
    members.sort();
    members
        .into_iter()
        .map(|(member_id, source, group)| WatchChange {
            kind,
            member_id,
            source,
            group,
            cause: Some(cause.into()),
        })
        .collect()
}

impl EffectiveWatch {
    /// A watch of `root` (and with `descendants` its subtree), with no group loaded yet.
    pub fn new(root: Uuid, descendants: bool) -> Self {
        Self {
            root,
            descendants,
            ..Self::default()
        }
    }

    /// Adds groups (with their parent and folded entries); returns the members that entered.
    pub fn add_groups(
        &mut self,
        folds: Vec<(Uuid, Option<Uuid>, GroupEntries)>,
    ) -> Vec<(String, MemberSource, Uuid)> {
        let mut entered = vec![];
        for (group, parent, fold) in folds {
            for (id, source, _) in fold.direct(None) {
                let n = self.holders.entry(id.to_string()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    entered.push((id.to_string(), source, group));
                }
            }
            if let Some(parent) = parent {
                self.parents.insert(group, parent);
            }
            self.groups.insert(group, fold);
        }
        entered
    }

    /// [`Self::add_groups`] for a subtree that moved in: its members enter, cause `moved`.
    pub fn subtree_moved_in(
        &mut self,
        folds: Vec<(Uuid, Option<Uuid>, GroupEntries)>,
    ) -> Vec<WatchChange> {
        changes(
            MembershipChangeKind::Entered,
            self.add_groups(folds),
            "moved",
        )
    }

    /// Removes `group` and every watched group below it; returns the members that left.
    fn remove_subtree(&mut self, group: Uuid) -> Vec<(String, MemberSource, Uuid)> {
        let below = |mut g: Uuid, parents: &HashMap<Uuid, Uuid>| loop {
            if g == group {
                return true;
            }
            match parents.get(&g) {
                Some(p) => g = *p,
                None => return false,
            }
        };
        let gone: Vec<Uuid> = self
            .groups
            .keys()
            .copied()
            .filter(|g| below(*g, &self.parents))
            .collect();
        let mut left = vec![];
        for g in gone {
            self.parents.remove(&g);
            let Some(fold) = self.groups.remove(&g) else {
                continue;
            };
            for (id, source, _) in fold.direct(None) {
                if let Some(n) = self.holders.get_mut(id) {
                    *n -= 1;
                    if *n == 0 {
                        self.holders.remove(id);
                        left.push((id.to_string(), source, g));
                    }
                }
            }
        }
        left
    }

    /// Applies a Membership event of `group` recorded at `at`.
    pub fn membership(
        &mut self,
        group: Uuid,
        event: &MembershipEvent,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Vec<WatchChange> {
        let Some(fold) = self.groups.get_mut(&group) else {
            return vec![];
        };
        let cause = match event {
            MembershipEvent::MembersAdded { cause, .. }
            | MembershipEvent::MembersRemoved { cause, .. } => cause.clone(),
            MembershipEvent::MembersExcluded { .. } | MembershipEvent::MembersUnexcluded { .. } => {
                None
            }
        };
        let mut out = vec![];
        for change in fold.apply(event, at) {
            match (change.before, change.after) {
                (None, Some(now)) => {
                    let n = self.holders.entry(change.member_id.clone()).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        out.push(WatchChange {
                            kind: MembershipChangeKind::Entered,
                            member_id: change.member_id,
                            source: now,
                            group,
                            cause: cause.clone(),
                        });
                    }
                }
                (Some(was), None) => {
                    if let Some(n) = self.holders.get_mut(&change.member_id) {
                        *n -= 1;
                        if *n == 0 {
                            self.holders.remove(&change.member_id);
                            out.push(WatchChange {
                                kind: MembershipChangeKind::Left,
                                member_id: change.member_id,
                                source: was,
                                group,
                                cause: cause.clone(),
                            });
                        }
                    }
                }
                // Still (or still not) a direct member: the source changed, nobody entered.
                (Some(_), Some(_)) | (None, None) => {}
            }
        }
        out
    }

    /// Applies a Group event of `group`.
    pub fn group(&mut self, group: Uuid, event: &GroupEvent) -> Step {
        let none = Step::Changes(vec![]);
        if group == self.root && !self.groups.contains_key(&group) {
            // A watch that starts before its group existed: watched from its creation on.
            if let GroupEvent::GroupCreated { parent_id, .. } = event {
                self.add_groups(vec![(group, *parent_id, GroupEntries::default())]);
            }
            return none;
        }
        let deleted = matches!(event, GroupEvent::GroupDeleted {});
        if deleted && group == self.root {
            // The group itself is gone: every member leaves, and the stream ends.
            self.ended = true;
            let left = self.remove_subtree(group);
            return Step::Changes(changes(MembershipChangeKind::Left, left, "deleted"));
        }
        if !self.descendants || group == self.root {
            return none;
        }
        match event {
            GroupEvent::GroupCreated { parent_id, .. } => {
                if let Some(parent) = parent_id.filter(|p| self.groups.contains_key(p)) {
                    self.add_groups(vec![(group, Some(parent), GroupEntries::default())]);
                }
                none
            }
            GroupEvent::GroupDeleted {} => {
                if !self.groups.contains_key(&group) {
                    return none;
                }
                // Gone from the tree at once (as live and historical reads have it); the purge
                // events that follow concern a group no longer watched.
                let left = self.remove_subtree(group);
                Step::Changes(changes(MembershipChangeKind::Left, left, "deleted"))
            }
            GroupEvent::GroupMoved { new_parent_id, .. } => {
                let parent = *new_parent_id;
                let inside = self.groups.contains_key(&parent);
                let was = self.groups.contains_key(&group);
                if was && !inside {
                    let left = self.remove_subtree(group);
                    Step::Changes(changes(MembershipChangeKind::Left, left, "moved"))
                } else if was {
                    self.parents.insert(group, parent);
                    none
                } else if inside {
                    Step::LoadSubtree { group }
                } else {
                    none
                }
            }
            // Nothing else changes who is in the subtree.
            GroupEvent::GroupRenamed { .. }
            | GroupEvent::GroupUpdated { .. }
            | GroupEvent::GroupRuleSet { .. }
            | GroupEvent::GroupRuleCleared { .. }
            | GroupEvent::GroupCapabilitiesChanged { .. } => none,
        }
    }

    /// The group watched.
    pub fn root(&self) -> Uuid {
        self.root
    }

    /// Whether its descendants are watched too.
    pub fn descendants(&self) -> bool {
        self.descendants
    }

    /// Members now in the watched membership.
    pub fn member_count(&self) -> usize {
        self.holders.len()
    }

    /// Membership entries the watch holds.
    pub fn entry_count(&self) -> usize {
        self.groups.values().map(GroupEntries::entry_count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use corral_domain::group::GroupType;
    use serde_json::Map;
    use MembershipChangeKind::{Entered, Left};

    fn t(s: i64) -> chrono::DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0)
            .single()
            .expect("time")
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn added(source: MemberSource, ids: &[&str], cause: Option<&str>) -> MembershipEvent {
        MembershipEvent::MembersAdded {
            member_type: GroupType::Device,
            member_ids: ids.iter().map(|s| s.to_string()).collect(),
            source,
            rule_version: None,
            cause: cause.map(str::to_string),
        }
    }

    fn excluded(ids: &[&str]) -> MembershipEvent {
        MembershipEvent::MembersExcluded {
            member_type: GroupType::Device,
            member_ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn created(parent: Uuid) -> GroupEvent {
        GroupEvent::GroupCreated {
            group_type: GroupType::Device,
            name: "x".into(),
            parent_id: Some(parent),
            description: None,
            metadata: Map::new(),
            is_system: false,
        }
    }

    fn moved(from: Uuid, to: Uuid) -> GroupEvent {
        GroupEvent::GroupMoved {
            previous_parent_id: from,
            new_parent_id: to,
        }
    }

    fn kinds(changes: &[WatchChange]) -> Vec<(MembershipChangeKind, &str, Uuid)> {
        changes
            .iter()
            .map(|c| (c.kind, c.member_id.as_str(), c.group))
            .collect()
    }

    /// A watch of group 1 with descendants: 1 holds `a` (rule), 2 (under 1) holds `a`, `b`.
    fn subtree_watch() -> EffectiveWatch {
        let mut w = EffectiveWatch::new(id(1), true);
        let mut one = GroupEntries::default();
        one.apply(&added(MemberSource::Rule, &["a"], None), t(0));
        let mut two = GroupEntries::default();
        two.apply(&added(MemberSource::Static, &["a", "b"], None), t(0));
        let entered = w.add_groups(vec![(id(1), None, one), (id(2), Some(id(1)), two)]);
        assert_eq!(entered.len(), 2, "a and b enter once each");
        w
    }

    #[test]
    fn a_member_enters_with_its_first_holder_and_leaves_with_its_last() {
        let mut w = subtree_watch();
        let step = w.membership(id(2), &excluded(&["a"]), t(1));
        assert_eq!(step, [], "group 1 still holds a");
        let step = w.membership(id(1), &excluded(&["a"]), t(2));
        assert_eq!(kinds(&step), [(Left, "a", id(1))]);
        assert_eq!(step[0].source, MemberSource::Rule);
        let step = w.membership(
            id(1),
            &added(MemberSource::Static, &["c"], Some("why")),
            t(3),
        );
        assert_eq!(kinds(&step), [(Entered, "c", id(1))]);
        assert_eq!(step[0].cause.as_deref(), Some("why"));
        assert_eq!(
            w.membership(id(9), &added(MemberSource::Static, &["d"], None), t(4)),
            [],
            "an unwatched group"
        );
    }

    #[test]
    fn subtrees_moving_out_leave_and_moving_in_are_loaded() {
        let mut w = subtree_watch();
        // Group 3 created under 2 is watched from then on, empty.
        assert_eq!(w.group(id(3), &created(id(2))), Step::Changes(vec![]));
        let step = w.membership(id(3), &added(MemberSource::Static, &["z"], None), t(1));
        assert_eq!(kinds(&step), [(Entered, "z", id(3))]);
        // 2 (with 3 below it) moves out: b and z leave; a is still held by 1.
        let Step::Changes(left) = w.group(id(2), &moved(id(1), id(50))) else {
            panic!("no load for a move out");
        };
        assert!(left.iter().all(|c| c.kind == Left));
        let mut gone: Vec<_> = left
            .iter()
            .map(|c| (c.member_id.as_str(), c.group))
            .collect();
        gone.sort();
        assert_eq!(gone, [("b", id(2)), ("z", id(3))]);
        // It moves back in: the watch asks for its entries at that position.
        assert_eq!(
            w.group(id(2), &moved(id(50), id(1))),
            Step::LoadSubtree { group: id(2) }
        );
        let mut two = GroupEntries::default();
        two.apply(&added(MemberSource::Static, &["b"], None), t(0));
        let entered = w.subtree_moved_in(vec![(id(2), Some(id(1)), two)]);
        assert_eq!(kinds(&entered), [(Entered, "b", id(2))]);
        assert_eq!(entered[0].cause.as_deref(), Some("moved"));
    }

    #[test]
    fn deleting_the_watched_group_ends_the_stream_after_everyone_left() {
        let mut w = subtree_watch();
        let Step::Changes(left) = w.group(id(1), &GroupEvent::GroupDeleted {}) else {
            panic!("no load for a delete");
        };
        assert_eq!(left.len(), 2);
        assert!(left
            .iter()
            .all(|c| c.kind == Left && c.cause.as_deref() == Some("deleted")));
        assert!(w.ended);
    }

    #[test]
    fn a_watch_from_before_its_group_existed_starts_at_its_creation() {
        let mut w = EffectiveWatch::new(id(1), true);
        assert_eq!(
            w.membership(id(1), &added(MemberSource::Static, &["a"], None), t(0)),
            [],
            "not created yet"
        );
        assert_eq!(w.group(id(1), &created(id(9))), Step::Changes(vec![]));
        let step = w.membership(id(1), &added(MemberSource::Static, &["b"], None), t(1));
        assert_eq!(kinds(&step), [(Entered, "b", id(1))]);
        assert_eq!(w.group(id(2), &created(id(1))), Step::Changes(vec![]));
        let step = w.membership(id(2), &added(MemberSource::Rule, &["c"], None), t(2));
        assert_eq!(kinds(&step), [(Entered, "c", id(2))]);
    }

    #[test]
    fn changes_of_a_subtree_leaving_come_sorted_by_member() {
        let mut w = EffectiveWatch::new(id(1), true);
        let mut two = GroupEntries::default();
        two.apply(
            &added(MemberSource::Static, &["m", "c", "x", "a"], None),
            t(0),
        );
        let mut three = GroupEntries::default();
        three.apply(&added(MemberSource::Static, &["b", "z"], None), t(0));
        w.add_groups(vec![
            (id(1), None, GroupEntries::default()),
            (id(2), Some(id(1)), two),
            (id(3), Some(id(2)), three),
        ]);
        let Step::Changes(left) = w.group(id(2), &moved(id(1), id(50))) else {
            panic!("no load for a move out");
        };
        let ids: Vec<&str> = left.iter().map(|c| c.member_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "m", "x", "z"]);
    }

    #[test]
    fn without_descendants_only_the_groups_own_deletion_matters() {
        let mut w = EffectiveWatch::new(id(1), false);
        w.add_groups(vec![(id(1), None, GroupEntries::default())]);
        assert_eq!(w.group(id(2), &created(id(1))), Step::Changes(vec![]));
        assert_eq!(w.group(id(2), &moved(id(7), id(1))), Step::Changes(vec![]));
        assert_eq!(w.entry_count(), 0);
        w.group(id(1), &GroupEvent::GroupDeleted {});
        assert!(w.ended);
    }
}

#[cfg(test)]
mod cost {
    use super::*;
    use corral_domain::group::GroupType;

    fn resident_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    /// What a watch costs per entry (the figure in `docs/integrators.md`): 1,000,000 entries
    /// of 36-character ids over 10 groups. Run with `--ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn a_watch_of_a_million_entries_costs_its_resident_memory() {
        let before = resident_bytes();
        let mut w = EffectiveWatch::new(Uuid::from_u128(1), true);
        let mut groups = vec![];
        for g in 0..10u128 {
            let ids: Vec<String> = (0..100_000u128)
                .map(|i| Uuid::from_u128(g * 1_000_000 + i).to_string())
                .collect();
            let mut entries = GroupEntries::default();
            entries.apply(
                &MembershipEvent::MembersAdded {
                    member_type: GroupType::Device,
                    member_ids: ids,
                    source: MemberSource::Static,
                    rule_version: None,
                    cause: None,
                },
                chrono::Utc::now(),
            );
            groups.push((
                Uuid::from_u128(g + 1),
                (g > 0).then(|| Uuid::from_u128(1)),
                entries,
            ));
        }
        w.add_groups(groups);
        let after = resident_bytes();
        assert_eq!(w.entry_count(), 1_000_000);
        println!(
            "a watch of {} entries: {} MB resident, {} bytes per entry",
            w.entry_count(),
            (after - before) / 1_000_000,
            (after - before) / w.entry_count()
        );
    }
}
