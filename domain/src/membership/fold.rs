//! The one fold of a group's membership: its entries (static, rule, excluded) and, resolved
//! from them with the precedence exclude > static > rule, its direct members.
//!
//! Every Rust reader of Membership events folds through this module: the membership projector
//! (which persists [`EntryOp`]s into `rm_membership.entries` and resolves `direct` with the same
//! precedence), time travel (`projections::history`) and the `membershipChanges` subscription
//! (which reports the [`DirectChange`]s of each event). The match on [`MembershipEvent`] is here,
//! exhaustive, so a new event variant is decided once.
//!
//! One copy is not Rust: the `membership_registry` trigger (migration 0002) applies the same
//! [`EntryOp`]s in SQL, inside the transaction that commits the events, because the commands'
//! checks read it under the group's lock and must see their own writes. Migrations are
//! append-only, so it cannot call this code; instead the end-to-end test
//! `the_registry_trigger_and_the_rust_fold_agree_on_varied_sequences`
//! (`tests/tests/e2e/membership_fold.rs`) runs varied sequences of events through the real
//! trigger and through [`GroupEntries`] and asserts the two hold the same entries. Change one,
//! and that test tells you to change the other.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{EntryKind, MemberSource, MembershipEvent};

/// What one Membership event does to a group's entries: adds or removes entries of one kind
/// for some ids. This is the decision the `membership_registry` trigger makes in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryOp<'a> {
    /// The kind of entry (`S`, `R` or `X`).
    pub kind: EntryKind,
    /// Whether entries are added (`true`) or removed.
    pub adds: bool,
    /// The ids.
    pub ids: &'a [String],
}

impl<'a> EntryOp<'a> {
    /// The entries `event` adds or removes.
    pub fn of(event: &'a MembershipEvent) -> Self {
        let (kind, adds) = match event {
            MembershipEvent::MembersAdded { source, .. } => (EntryKind::from(*source), true),
            MembershipEvent::MembersRemoved { source, .. } => (EntryKind::from(*source), false),
            MembershipEvent::MembersExcluded { .. } => (EntryKind::Excluded, true),
            MembershipEvent::MembersUnexcluded { .. } => (EntryKind::Excluded, false),
            // The test-only probe changes nothing (it carries no ids).
            #[cfg(feature = "probe-variant")]
            MembershipEvent::Probe {} => (EntryKind::Excluded, false),
        };
        Self {
            kind,
            adds,
            ids: event.member_ids(),
        }
    }
}

/// One member's entries in a group: since when it has a static and a rule entry, and whether
/// it is excluded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entry {
    /// When its static entry was added (an entry keeps its first `since`).
    pub static_since: Option<DateTime<Utc>>,
    /// When its rule entry was added.
    pub rule_since: Option<DateTime<Utc>>,
    /// Whether it is excluded.
    pub excluded: bool,
}

impl Entry {
    /// How it is a direct member, and since when: exclude > static > rule.
    pub fn direct(&self) -> Option<(MemberSource, DateTime<Utc>)> {
        match (self.excluded, self.static_since, self.rule_since) {
            (true, _, _) => None,
            (false, Some(t), _) => Some((MemberSource::Static, t)),
            (false, None, Some(t)) => Some((MemberSource::Rule, t)),
            (false, None, None) => None,
        }
    }

    /// Whether it has an entry of `kind`.
    pub fn has(&self, kind: EntryKind) -> bool {
        match kind {
            EntryKind::Static => self.static_since.is_some(),
            EntryKind::Rule => self.rule_since.is_some(),
            EntryKind::Excluded => self.excluded,
        }
    }

    fn is_empty(&self) -> bool {
        self.static_since.is_none() && self.rule_since.is_none() && !self.excluded
    }
}

/// A member whose direct membership an event changed (its resolved source before and after;
/// `None`: not a direct member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectChange {
    /// The device or service id.
    pub member_id: String,
    /// How it was a direct member before the event.
    pub before: Option<MemberSource>,
    /// How it is one after.
    pub after: Option<MemberSource>,
}

/// One group's entries, folded from its Membership events in sequence order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupEntries {
    entries: HashMap<String, Entry>,
}

impl GroupEntries {
    /// Applies one event recorded at `at`: adding an entry that exists keeps its first
    /// `since`; removing one that does not exist does nothing (as the registry's
    /// `ON CONFLICT DO NOTHING` and `DELETE` do). Returns the members whose direct membership
    /// changed, in the event's order.
    pub fn apply(&mut self, event: &MembershipEvent, at: DateTime<Utc>) -> Vec<DirectChange> {
        let op = EntryOp::of(event);
        let mut changes = Vec::new();
        let mut seen = HashSet::new();
        for id in op.ids {
            if !seen.insert(id.as_str()) {
                continue;
            }
            changes.extend(self.apply_one(op, id, at));
        }
        changes
    }

    /// Applies one event recorded at `at` to the entries of `member` only (the other ids it
    /// names are left alone): the fold of one member's history, as [`GroupEntries::apply`]
    /// folds everyone's. Returns its direct change, if any.
    pub fn apply_to(
        &mut self,
        event: &MembershipEvent,
        at: DateTime<Utc>,
        member: &str,
    ) -> Option<DirectChange> {
        let op = EntryOp::of(event);
        let id = op.ids.iter().find(|id| id.as_str() == member)?;
        self.apply_one(op, id, at)
    }

    fn apply_one(
        &mut self,
        op: EntryOp<'_>,
        id: &String,
        at: DateTime<Utc>,
    ) -> Option<DirectChange> {
        let before = self.direct_source(id);
        if op.adds {
            let entry = self.entries.entry(id.clone()).or_default();
            match op.kind {
                EntryKind::Static => {
                    entry.static_since.get_or_insert(at);
                }
                EntryKind::Rule => {
                    entry.rule_since.get_or_insert(at);
                }
                EntryKind::Excluded => entry.excluded = true,
            }
        } else if let Some(entry) = self.entries.get_mut(id) {
            match op.kind {
                EntryKind::Static => entry.static_since = None,
                EntryKind::Rule => entry.rule_since = None,
                EntryKind::Excluded => entry.excluded = false,
            }
            if entry.is_empty() {
                self.entries.remove(id);
            }
        }
        let after = self.direct_source(id);
        (before != after).then(|| DirectChange {
            member_id: id.clone(),
            before,
            after,
        })
    }

    /// `id`'s entry (static and rule since when, excluded), if it has one.
    pub fn entry(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// How `id` is a direct member (exclude > static > rule), if it is one.
    pub fn direct_source(&self, id: &str) -> Option<MemberSource> {
        self.entries.get(id).and_then(Entry::direct).map(|(s, _)| s)
    }

    /// Members with any entry (static, rule or excluded).
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// The ids with an entry of `kind`, sorted.
    pub fn ids(&self, kind: EntryKind) -> BTreeSet<&str> {
        self.entries
            .iter()
            .filter(|(_, e)| e.has(kind))
            .map(|(id, _)| id.as_str())
            .collect()
    }

    /// The direct members with their source and since when, unordered; `source` keeps only
    /// members of that (resolved) source.
    pub fn direct(
        &self,
        source: Option<MemberSource>,
    ) -> impl Iterator<Item = (&str, MemberSource, DateTime<Utc>)> {
        self.entries.iter().filter_map(move |(id, e)| {
            let (s, since) = e.direct()?;
            (source.is_none() || source == Some(s)).then_some((id.as_str(), s, since))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::GroupType;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0)
            .single()
            .expect("time")
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn added(source: MemberSource, v: &[&str]) -> MembershipEvent {
        MembershipEvent::MembersAdded {
            member_type: GroupType::Device,
            member_ids: ids(v),
            source,
            rule_version: None,
            cause: None,
        }
    }

    fn removed(source: MemberSource, v: &[&str]) -> MembershipEvent {
        MembershipEvent::MembersRemoved {
            member_type: GroupType::Device,
            member_ids: ids(v),
            source,
            rule_version: None,
            cause: None,
        }
    }

    fn excluded(v: &[&str]) -> MembershipEvent {
        MembershipEvent::MembersExcluded {
            member_type: GroupType::Device,
            member_ids: ids(v),
        }
    }

    fn unexcluded(v: &[&str]) -> MembershipEvent {
        MembershipEvent::MembersUnexcluded {
            member_type: GroupType::Device,
            member_ids: ids(v),
        }
    }

    fn change(id: &str, before: Option<MemberSource>, after: Option<MemberSource>) -> DirectChange {
        DirectChange {
            member_id: id.into(),
            before,
            after,
        }
    }

    use MemberSource::{Rule, Static};

    #[test]
    fn each_event_reports_only_the_members_whose_direct_source_changed() {
        let mut f = GroupEntries::default();
        assert_eq!(
            f.apply(&added(Rule, &["a", "b"]), t(1)),
            [change("a", None, Some(Rule)), change("b", None, Some(Rule))]
        );
        assert_eq!(
            f.apply(&added(Static, &["b", "c"]), t(2)),
            [
                change("b", Some(Rule), Some(Static)),
                change("c", None, Some(Static))
            ]
        );
        assert_eq!(
            f.apply(&added(Rule, &["a"]), t(3)),
            [],
            "already a rule entry"
        );
        assert_eq!(
            f.apply(&excluded(&["a", "x"]), t(4)),
            [change("a", Some(Rule), None)],
            "excluding a non-member changes no direct membership"
        );
        assert_eq!(f.apply(&removed(Rule, &["a"]), t(5)), [], "still excluded");
        assert_eq!(f.apply(&unexcluded(&["a"]), t(6)), [], "no entry left");
        assert_eq!(
            f.apply(&removed(Static, &["b"]), t(7)),
            [change("b", Some(Static), Some(Rule))]
        );
        assert_eq!(
            f.apply(&removed(Static, &["zz"]), t(8)),
            [],
            "nothing to remove"
        );
    }

    #[test]
    fn entries_keep_their_first_since_and_resolve_exclude_over_static_over_rule() {
        let mut f = GroupEntries::default();
        f.apply(&added(Rule, &["a", "b", "c"]), t(1));
        f.apply(&added(Static, &["b", "d"]), t(2));
        f.apply(&added(Static, &["d"]), t(9));
        f.apply(&excluded(&["c", "x"]), t(3));
        let mut direct: Vec<_> = f
            .direct(None)
            .map(|(i, s, t)| (i.to_string(), s, t))
            .collect();
        direct.sort();
        assert_eq!(
            direct,
            vec![
                ("a".into(), Rule, t(1)),
                ("b".into(), Static, t(2)),
                ("d".into(), Static, t(2)),
            ]
        );
        assert_eq!(f.ids(EntryKind::Excluded), BTreeSet::from(["c", "x"]));
        assert_eq!(f.ids(EntryKind::Rule), BTreeSet::from(["a", "b", "c"]));
        assert_eq!(f.entry_count(), 5);
        f.apply(&unexcluded(&["x"]), t(4));
        assert_eq!(f.entry_count(), 4, "a member without entries is forgotten");
    }

    #[test]
    fn the_entry_op_is_the_registry_triggers_decision() {
        let e = added(Rule, &["a"]);
        assert_eq!(
            EntryOp::of(&e),
            EntryOp {
                kind: EntryKind::Rule,
                adds: true,
                ids: &ids(&["a"])
            }
        );
        let e = unexcluded(&["a"]);
        let op = EntryOp::of(&e);
        assert_eq!((op.kind, op.adds), (EntryKind::Excluded, false));
        let e = removed(Static, &["a"]);
        let op = EntryOp::of(&e);
        assert_eq!((op.kind.code(), op.adds), ('S', false));
    }
}
