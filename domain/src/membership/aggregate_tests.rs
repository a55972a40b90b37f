use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::*;

const GROUP: Uuid = Uuid::from_u128(7);

/// Inventory and registry rows in memory.
#[derive(Default)]
struct Dir {
    group: Option<GroupFacts>,
    devices: HashSet<String>,
    services: HashSet<String>,
    entries: Mutex<HashMap<char, HashSet<String>>>,
}

#[async_trait]
impl MembershipDirectory for Dir {
    async fn group(&self) -> Result<Option<GroupFacts>, String> {
        Ok(self.group)
    }
    async fn unknown(&self, kind: GroupType, ids: &[String]) -> Result<Vec<String>, String> {
        let known = match kind {
            GroupType::Device => &self.devices,
            GroupType::Service => &self.services,
        };
        Ok(ids
            .iter()
            .filter(|i| !known.contains(*i))
            .cloned()
            .collect())
    }
    async fn present(&self, kind: EntryKind, ids: &[String]) -> Result<HashSet<String>, String> {
        let entries = self.entries.lock().expect("lock");
        let set = entries.get(&kind.code()).cloned().unwrap_or_default();
        Ok(ids.iter().filter(|i| set.contains(*i)).cloned().collect())
    }
}

fn services(dir: Dir) -> MembershipServices {
    MembershipServices {
        group_id: GROUP,
        directory: Box::new(dir),
    }
}

fn device_group() -> Dir {
    Dir {
        group: Some(GroupFacts {
            group_type: GroupType::Device,
            deleted: false,
        }),
        devices: (0..3000).map(|i| format!("d{i}")).collect(),
        services: ["s1".to_string()].into(),
        ..Default::default()
    }
}

fn ids(r: std::ops::Range<usize>) -> Vec<String> {
    r.map(|i| format!("d{i}")).collect()
}

fn add(member_ids: Vec<String>) -> MembershipCommand {
    MembershipCommand::Add {
        member_ids,
        source: MemberSource::Static,
        rule_version: None,
        cause: None,
    }
}

#[test]
fn adds_are_split_into_events_of_at_most_1000_ids() {
    TestFramework::<Membership>::with(services(device_group()))
        .given_no_previous_events()
        .when(add(ids(0..2500)))
        .then_expect_events(vec![
            MembershipEvent::MembersAdded {
                member_type: GroupType::Device,
                member_ids: ids(0..1000),
                source: MemberSource::Static,
                rule_version: None,
                cause: None,
            },
            MembershipEvent::MembersAdded {
                member_type: GroupType::Device,
                member_ids: ids(1000..2000),
                source: MemberSource::Static,
                rule_version: None,
                cause: None,
            },
            MembershipEvent::MembersAdded {
                member_type: GroupType::Device,
                member_ids: ids(2000..2500),
                source: MemberSource::Static,
                rule_version: None,
                cause: None,
            },
        ]);
}

#[test]
fn existing_members_and_duplicates_are_skipped() {
    let dir = device_group();
    dir.entries
        .lock()
        .expect("lock")
        .insert('S', ["d1".to_string()].into());
    TestFramework::<Membership>::with(services(dir))
        .given_no_previous_events()
        .when(add(vec!["d1".into(), "d2".into(), " d2 ".into()]))
        .then_expect_events(vec![MembershipEvent::MembersAdded {
            member_type: GroupType::Device,
            member_ids: vec!["d2".into()],
            source: MemberSource::Static,
            rule_version: None,
            cause: None,
        }]);
}

#[test]
fn adding_only_existing_members_emits_nothing() {
    let dir = device_group();
    dir.entries
        .lock()
        .expect("lock")
        .insert('S', ["d1".to_string()].into());
    TestFramework::<Membership>::with(services(dir))
        .given_no_previous_events()
        .when(add(vec!["d1".into()]))
        .then_expect_events(vec![]);
}

#[test]
fn a_rule_entry_does_not_make_a_static_add_a_no_op() {
    let dir = device_group();
    dir.entries
        .lock()
        .expect("lock")
        .insert('R', ["d1".to_string()].into());
    let events = TestFramework::<Membership>::with(services(dir))
        .given_no_previous_events()
        .when(add(vec!["d1".into()]))
        .inspect_result()
        .expect("accepted");
    assert_eq!(events.len(), 1);
}

#[test]
fn unknown_ids_reject_the_whole_call_listing_at_most_100() {
    let mut all = ids(0..5);
    all.extend((0..150).map(|i| format!("ghost{i}")));
    let err = TestFramework::<Membership>::with(services(device_group()))
        .given_no_previous_events()
        .when(add(all))
        .inspect_result()
        .expect_err("refused");
    match &err {
        MembershipError::UnknownMember { count, listed } => {
            assert_eq!(*count, 150);
            assert_eq!(listed.len(), 100);
            assert_eq!(listed[0], "ghost0");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.code().map(|c| c.as_str()), Some("UNKNOWN_MEMBER"));
}

#[test]
fn a_service_id_in_a_device_group_is_a_type_mismatch() {
    let err = TestFramework::<Membership>::with(services(device_group()))
        .given_no_previous_events()
        .when(add(vec!["d1".into(), "s1".into()]))
        .inspect_result()
        .expect_err("refused");
    assert_eq!(err.code().map(|c| c.as_str()), Some("TYPE_MISMATCH"));
    assert!(err.to_string().contains("s1"), "{err}");
}

#[test]
fn limits_and_shapes_are_checked() {
    for bad in [vec![], ids(0..10_001), vec!["".into()], vec!["a\nb".into()]] {
        let err = TestFramework::<Membership>::with(services(device_group()))
            .given_no_previous_events()
            .when(add(bad))
            .inspect_result()
            .expect_err("refused");
        assert_eq!(err.code().map(|c| c.as_str()), Some("INVALID"));
    }
}

#[test]
fn a_deleted_or_missing_group_refuses_edits() {
    let mut dir = device_group();
    dir.group = Some(GroupFacts {
        group_type: GroupType::Device,
        deleted: true,
    });
    let err = TestFramework::<Membership>::with(services(dir))
        .given_no_previous_events()
        .when(add(ids(0..1)))
        .inspect_result()
        .expect_err("refused");
    assert_eq!(err.code().map(|c| c.as_str()), Some("NOT_FOUND"));
    let mut dir = device_group();
    dir.group = None;
    let err = TestFramework::<Membership>::with(services(dir))
        .given_no_previous_events()
        .when(MembershipCommand::Exclude {
            member_ids: ids(0..1),
        })
        .inspect_result()
        .expect_err("refused");
    assert_eq!(err.code().map(|c| c.as_str()), Some("NOT_FOUND"));
}

#[test]
fn removes_skip_absent_entries_and_need_no_inventory() {
    let dir = device_group();
    dir.entries
        .lock()
        .expect("lock")
        .insert('S', ["gone-device".to_string()].into());
    TestFramework::<Membership>::with(services(dir))
        .given_no_previous_events()
        .when(MembershipCommand::Remove {
            member_ids: vec!["gone-device".into(), "d5".into()],
            source: MemberSource::Static,
            rule_version: None,
            cause: None,
        })
        .then_expect_events(vec![MembershipEvent::MembersRemoved {
            member_type: GroupType::Device,
            member_ids: vec!["gone-device".into()],
            source: MemberSource::Static,
            rule_version: None,
            cause: None,
        }]);
}

#[test]
fn purge_works_on_a_deleted_group() {
    let mut dir = device_group();
    dir.group = Some(GroupFacts {
        group_type: GroupType::Device,
        deleted: true,
    });
    {
        let mut e = dir.entries.lock().expect("lock");
        e.insert('S', ["a".to_string()].into());
        e.insert('X', ["b".to_string()].into());
    }
    let events = TestFramework::<Membership>::with(services(dir))
        .given_no_previous_events()
        .when(MembershipCommand::Purge {
            static_ids: vec!["a".into()],
            rule_ids: vec![],
            excluded_ids: vec!["b".into()],
        })
        .inspect_result()
        .expect("accepted");
    assert_eq!(events.len(), 2);
    assert!(matches!(
        events[1],
        MembershipEvent::MembersUnexcluded { .. }
    ));
}

#[test]
fn the_registry_trigger_reads_these_field_names() {
    let e = MembershipEvent::MembersAdded {
        member_type: GroupType::Device,
        member_ids: vec!["x".into()],
        source: MemberSource::Rule,
        rule_version: Some(3),
        cause: Some("schedule".into()),
    };
    let v = serde_json::to_value(&e).expect("json");
    assert_eq!(v["MembersAdded"]["member_ids"][0], "x");
    assert_eq!(v["MembersAdded"]["source"], "RULE");
}

#[test]
fn remove_gone_keeps_entities_that_came_back() {
    let dir = device_group();
    {
        let mut e = dir.entries.lock().expect("lock");
        e.insert('S', ["d1".to_string(), "ghost".to_string()].into());
        e.insert('R', ["ghost".to_string()].into());
    }
    let events = TestFramework::<Membership>::with(services(dir))
        .given_no_previous_events()
        .when(MembershipCommand::RemoveGone {
            member_ids: vec!["d1".into(), "ghost".into()],
            cause: Some("inventory".into()),
        })
        .inspect_result()
        .expect("accepted");
    // d1 is live again: only the ghost's static and rule entries go.
    assert_eq!(events.len(), 2);
    for e in &events {
        assert_eq!(e.member_ids(), ["ghost".to_string()]);
    }
}
