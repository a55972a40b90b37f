use cqrs_es::test::TestFramework;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::*;
use crate::group::{GroupCapabilities, GroupDetails, InMemoryDirectory, RuleRef};

type GroupTest = TestFramework<Group>;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

const ROOT: u128 = 1;
const SITE_A: u128 = 2;
const CORE: u128 = 3;
const SERVICE_ROOT: u128 = 9;
const ME: u128 = 42;

/// Inventory(1) -> Site-A(2) -> Core(3); a service root (9); the group under test is 42.
fn directory() -> Box<dyn GroupDirectory> {
    let dir = InMemoryDirectory::default();
    dir.insert(id(ROOT), GroupType::Device, None, "Inventory");
    dir.insert(id(SITE_A), GroupType::Device, Some(id(ROOT)), "Site-A");
    dir.insert(id(CORE), GroupType::Device, Some(id(SITE_A)), "Core");
    dir.insert(id(SERVICE_ROOT), GroupType::Service, None, "Inventory");
    dir.insert(id(ME), GroupType::Device, Some(id(ROOT)), "Edge");
    Box::new(dir)
}

fn chain_directory(levels: u32) -> Box<dyn GroupDirectory> {
    let dir = InMemoryDirectory::default();
    dir.insert(id(ROOT), GroupType::Device, None, "Inventory");
    for level in 1..=levels {
        dir.insert(
            id(100 + u128::from(level)),
            GroupType::Device,
            Some(if level == 1 {
                id(ROOT)
            } else {
                id(99 + u128::from(level))
            }),
            &format!("L{level}"),
        );
    }
    dir.insert(id(ME), GroupType::Device, Some(id(ROOT)), "Edge");
    Box::new(dir)
}

fn created(name: &str, parent: u128) -> GroupEvent {
    GroupEvent::GroupCreated {
        group_type: GroupType::Device,
        name: name.into(),
        parent_id: Some(id(parent)),
        description: None,
        metadata: Map::new(),
        is_system: false,
    }
}

fn root_created() -> GroupEvent {
    GroupEvent::GroupCreated {
        group_type: GroupType::Device,
        name: ROOT_NAME.into(),
        parent_id: None,
        description: Some("All DEVICE groups".into()),
        metadata: Map::new(),
        is_system: true,
    }
}

fn create(name: &str, parent: u128) -> GroupCommand {
    GroupCommand::Create {
        id: id(ME),
        name: name.into(),
        group_type: GroupType::Device,
        parent_id: id(parent),
        description: None,
        metadata: None,
    }
}

fn rename(name: &str) -> GroupCommand {
    GroupCommand::Rename {
        id: id(ME),
        name: name.into(),
    }
}

fn move_to(parent: u128) -> GroupCommand {
    GroupCommand::Move {
        id: id(ME),
        new_parent_id: id(parent),
    }
}

fn invalid_name(message: &str) -> GroupError {
    GroupError::Invalid {
        field: "name",
        message: message.into(),
    }
}

#[test]
fn creates_a_group_with_a_trimmed_name() {
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(create("  Edge-2 ", SITE_A))
        .then_expect_events(vec![created("Edge-2", SITE_A)]);
}

#[test]
fn rejects_bad_names() {
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(create("   ", ROOT))
        .then_expect_error(invalid_name("must not be empty"));
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(create("a/b", ROOT))
        .then_expect_error(invalid_name("must not contain '/'"));
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(create(&"x".repeat(129), ROOT))
        .then_expect_error(invalid_name("must be at most 128 characters"));
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(create(&"é".repeat(128), ROOT))
        .then_expect_events(vec![created(&"é".repeat(128), ROOT)]);
}

#[test]
fn sibling_names_are_unique_ignoring_case() {
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(create("site-a", ROOT))
        .then_expect_error(GroupError::NameTaken {
            name: "site-a".into(),
        });
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(create("site-a", SITE_A))
        .then_expect_events(vec![created("site-a", SITE_A)]);
}

#[test]
fn parent_must_exist_and_match_type() {
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(create("x", 777))
        .then_expect_error(GroupError::NotFound {
            what: "parent group",
            id: id(777),
        });
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(create("x", SERVICE_ROOT))
        .then_expect_error(GroupError::TypeMismatch {
            child: "DEVICE",
            parent: "SERVICE",
        });
}

#[test]
fn depth_is_limited_to_ten_below_the_root() {
    GroupTest::with(chain_directory(9))
        .given_no_previous_events()
        .when(create("deepest", 109))
        .then_expect_events(vec![created("deepest", 109)]);
    GroupTest::with(chain_directory(10))
        .given_no_previous_events()
        .when(create("too-deep", 110))
        .then_expect_error(GroupError::DepthLimit { max: 10 });
}

#[test]
fn metadata_is_limited_to_16_kib() {
    let mut big = Map::new();
    big.insert("blob".into(), Value::String("x".repeat(16 * 1024)));
    let cmd = GroupCommand::Update {
        id: id(ME),
        description: None,
        metadata: Some(big),
    };
    let err = GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(cmd)
        .inspect_result()
        .expect_err("too big");
    assert_eq!(err.code().map(|c| c.as_str()), Some("INVALID"));
    assert_eq!(err.field(), Some("metadata"));
}

#[test]
fn update_emits_only_on_change() {
    let meta: Map<String, Value> = serde_json::from_value(json!({"rack": "R1"})).expect("object");
    let cmd = GroupCommand::Update {
        id: id(ME),
        description: Some("edge routers".into()),
        metadata: Some(meta.clone()),
    };
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(cmd.clone())
        .then_expect_events(vec![GroupEvent::GroupUpdated {
            description: Some("edge routers".into()),
            metadata: meta.clone(),
            previous: Some(GroupDetails {
                description: None,
                metadata: Map::new(),
            }),
        }]);
    GroupTest::with(directory())
        .given(vec![
            created("Edge", ROOT),
            GroupEvent::GroupUpdated {
                description: Some("edge routers".into()),
                metadata: meta,
                previous: None,
            },
        ])
        .when(cmd)
        .then_expect_events(vec![]);
}

#[test]
fn update_records_the_values_it_replaces() {
    let old_meta: Map<String, Value> =
        serde_json::from_value(json!({"rack": "R1"})).expect("object");
    let new_meta: Map<String, Value> =
        serde_json::from_value(json!({"rack": "R2"})).expect("object");
    GroupTest::with(directory())
        .given(vec![
            created("Edge", ROOT),
            // A version-1 event, upcast: it did not record what it replaced.
            GroupEvent::GroupUpdated {
                description: Some("old".into()),
                metadata: old_meta.clone(),
                previous: None,
            },
        ])
        .when(GroupCommand::Update {
            id: id(ME),
            description: None,
            metadata: Some(new_meta.clone()),
        })
        .then_expect_events(vec![GroupEvent::GroupUpdated {
            description: Some("old".into()),
            metadata: new_meta,
            previous: Some(GroupDetails {
                description: Some("old".into()),
                metadata: old_meta,
            }),
        }]);
}

#[test]
fn rename_checks_siblings_but_allows_a_case_change_of_itself() {
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(rename("SITE-A"))
        .then_expect_error(GroupError::NameTaken {
            name: "SITE-A".into(),
        });
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(rename("EDGE"))
        .then_expect_events(vec![GroupEvent::GroupRenamed {
            name: "EDGE".into(),
            previous_name: "Edge".into(),
        }]);
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(rename("Edge"))
        .then_expect_events(vec![]);
}

#[test]
fn system_roots_cannot_be_renamed_moved_or_deleted() {
    GroupTest::with(directory())
        .given(vec![root_created()])
        .when(rename("x"))
        .then_expect_error(GroupError::SystemGroup);
    GroupTest::with(directory())
        .given(vec![root_created()])
        .when(move_to(SITE_A))
        .then_expect_error(GroupError::SystemGroup);
    GroupTest::with(directory())
        .given(vec![root_created()])
        .when(GroupCommand::Delete { id: id(ME) })
        .then_expect_error(GroupError::SystemGroup);
}

#[test]
fn ensure_root_is_idempotent() {
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(GroupCommand::EnsureRoot {
            group_type: GroupType::Device,
        })
        .then_expect_events(vec![root_created()]);
    GroupTest::with(directory())
        .given(vec![root_created()])
        .when(GroupCommand::EnsureRoot {
            group_type: GroupType::Device,
        })
        .then_expect_events(vec![]);
}

#[test]
fn move_rejects_cycles_and_depth_overflow() {
    // ME (42) under ROOT; Core is not ME's descendant, so moving there is fine.
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(move_to(CORE))
        .then_expect_events(vec![GroupEvent::GroupMoved {
            previous_parent_id: id(ROOT),
            new_parent_id: id(CORE),
        }]);
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(move_to(ME))
        .then_expect_error(GroupError::Cycle);
    let dir = InMemoryDirectory::default();
    dir.insert(id(ROOT), GroupType::Device, None, "Inventory");
    dir.insert(id(ME), GroupType::Device, Some(id(ROOT)), "Edge");
    dir.insert(id(50), GroupType::Device, Some(id(ME)), "Child");
    GroupTest::with(Box::new(dir))
        .given(vec![created("Edge", ROOT)])
        .when(move_to(50))
        .then_expect_error(GroupError::Cycle);
    // Subtree of height 1 (ME has a child) moved under level 9 would reach depth 11.
    let dir = InMemoryDirectory::default();
    dir.insert(id(ROOT), GroupType::Device, None, "Inventory");
    for level in 1..=9u128 {
        dir.insert(
            id(100 + level),
            GroupType::Device,
            Some(if level == 1 { id(ROOT) } else { id(99 + level) }),
            &format!("L{level}"),
        );
    }
    dir.insert(id(ME), GroupType::Device, Some(id(ROOT)), "Edge");
    dir.insert(id(50), GroupType::Device, Some(id(ME)), "Child");
    GroupTest::with(Box::new(dir))
        .given(vec![created("Edge", ROOT)])
        .when(move_to(109))
        .then_expect_error(GroupError::DepthLimit { max: 10 });
}

#[test]
fn move_checks_the_name_under_the_new_parent() {
    let dir = InMemoryDirectory::default();
    dir.insert(id(ROOT), GroupType::Device, None, "Inventory");
    dir.insert(id(SITE_A), GroupType::Device, Some(id(ROOT)), "Site-A");
    dir.insert(id(60), GroupType::Device, Some(id(SITE_A)), "edge");
    dir.insert(id(ME), GroupType::Device, Some(id(ROOT)), "Edge");
    GroupTest::with(Box::new(dir))
        .given(vec![created("Edge", ROOT)])
        .when(move_to(SITE_A))
        .then_expect_error(GroupError::NameTaken {
            name: "Edge".into(),
        });
}

#[test]
fn delete_refuses_groups_with_children_and_missing_groups() {
    let dir = InMemoryDirectory::default();
    dir.insert(id(ME), GroupType::Device, Some(id(ROOT)), "Edge");
    dir.insert(id(50), GroupType::Device, Some(id(ME)), "Child");
    GroupTest::with(Box::new(dir))
        .given(vec![created("Edge", ROOT)])
        .when(GroupCommand::Delete { id: id(ME) })
        .then_expect_error(GroupError::HasChildren);
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(GroupCommand::Delete { id: id(ME) })
        .then_expect_events(vec![GroupEvent::GroupDeleted {}]);
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT), GroupEvent::GroupDeleted {}])
        .when(rename("x"))
        .then_expect_error(GroupError::NotFound {
            what: "group",
            id: id(ME),
        });
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(GroupCommand::Delete { id: id(ME) })
        .then_expect_error(GroupError::NotFound {
            what: "group",
            id: id(ME),
        });
}

#[test]
fn event_json_shape_is_the_stored_contract() {
    let value = serde_json::to_value(created("Edge", ROOT)).expect("serialize");
    assert_eq!(value["GroupCreated"]["group_type"], "DEVICE");
    assert_eq!(value["GroupCreated"]["parent_id"], id(ROOT).to_string());
    let moved = serde_json::to_value(GroupEvent::GroupMoved {
        previous_parent_id: id(1),
        new_parent_id: id(2),
    })
    .expect("serialize");
    assert_eq!(moved["GroupMoved"]["new_parent_id"], id(2).to_string());
}

#[test]
fn root_ids_are_stable_and_distinct() {
    assert_eq!(GroupType::Device.root_id(), GroupType::Device.root_id());
    assert_ne!(GroupType::Device.root_id(), GroupType::Service.root_id());
}

fn set_rule(text: &str, refs: Vec<RuleRef>, enabled: bool) -> GroupCommand {
    GroupCommand::SetRule {
        id: id(ME),
        rule: json!({ "text": text }),
        text: text.into(),
        kind: GroupType::Device,
        refs,
        enabled,
    }
}

fn rule_set(text: &str, version: u64, refs: Vec<RuleRef>, enabled: bool) -> GroupEvent {
    GroupEvent::GroupRuleSet {
        rule: json!({ "text": text }),
        text: text.into(),
        enabled,
        rule_version: version,
        refs,
    }
}

#[test]
fn rules_get_increasing_versions_and_identical_ones_are_no_ops() {
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(set_rule("a", vec![], true))
        .then_expect_events(vec![rule_set("a", 1, vec![], true)]);
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT), rule_set("a", 1, vec![], true)])
        .when(set_rule("a", vec![], true))
        .then_expect_events(vec![]);
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT), rule_set("a", 1, vec![], true)])
        .when(set_rule("a", vec![], false))
        .then_expect_events(vec![rule_set("a", 2, vec![], false)]);
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT), rule_set("a", 1, vec![], true)])
        .when(GroupCommand::ClearRule { id: id(ME) })
        .then_expect_events(vec![GroupEvent::GroupRuleCleared { rule_version: 2 }]);
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(GroupCommand::ClearRule { id: id(ME) })
        .then_expect_events(vec![]);
}

#[test]
fn a_rule_must_select_the_groups_kind_and_not_sit_on_a_root() {
    let mut cmd = set_rule("a", vec![], true);
    if let GroupCommand::SetRule { kind, .. } = &mut cmd {
        *kind = GroupType::Service;
    }
    let err = GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(cmd)
        .inspect_result()
        .expect_err("refused");
    assert_eq!(err.code().map(|c| c.as_str()), Some("TYPE_MISMATCH"));
    GroupTest::with(directory())
        .given(vec![root_created()])
        .when(set_rule("a", vec![], true))
        .then_expect_error(GroupError::SystemGroup);
}

#[test]
fn group_references_must_exist_match_and_not_form_cycles() {
    let missing = RuleRef {
        group_id: id(555),
        direct: false,
    };
    let err = GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(set_rule("r", vec![missing], true))
        .inspect_result()
        .expect_err("refused");
    assert_eq!(err.code().map(|c| c.as_str()), Some("RULE_INVALID"));
    let services = RuleRef {
        group_id: id(SERVICE_ROOT),
        direct: false,
    };
    let err = GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(set_rule("r", vec![services], true))
        .inspect_result()
        .expect_err("refused");
    assert!(err.to_string().contains("SERVICE"), "{err}");
    // Edge sits under the root: the root's effective membership includes Edge's own.
    let root = RuleRef {
        group_id: id(ROOT),
        direct: false,
    };
    let err = GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(set_rule("r", vec![root], true))
        .inspect_result()
        .expect_err("refused");
    assert!(err.to_string().contains("cycle"), "{err}");
    // ...but the root's direct members do not depend on Edge.
    let root_direct = RuleRef {
        group_id: id(ROOT),
        direct: true,
    };
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(set_rule("r", vec![root_direct], true))
        .then_expect_events(vec![rule_set("r", 1, vec![root_direct], true)]);
    // Through another group's rule: Core's rule reads Edge, so Edge may not read Core.
    let dir = InMemoryDirectory::default();
    dir.insert(id(ROOT), GroupType::Device, None, "Inventory");
    dir.insert(id(CORE), GroupType::Device, Some(id(ROOT)), "Core");
    dir.insert(id(ME), GroupType::Device, Some(id(ROOT)), "Edge");
    dir.set_rule_refs(
        id(CORE),
        vec![RuleRef {
            group_id: id(ME),
            direct: true,
        }],
    );
    let core = RuleRef {
        group_id: id(CORE),
        direct: false,
    };
    let err = GroupTest::with(Box::new(dir))
        .given(vec![created("Edge", ROOT)])
        .when(set_rule("r", vec![core], true))
        .inspect_result()
        .expect_err("refused");
    assert_eq!(err.code().map(|c| c.as_str()), Some("RULE_INVALID"));
}

#[test]
fn a_move_that_would_make_a_rule_read_itself_is_refused() {
    // Edge's rule reads Core's effective membership: Edge may not move under Core.
    let dir = InMemoryDirectory::default();
    dir.insert(id(ROOT), GroupType::Device, None, "Inventory");
    dir.insert(id(CORE), GroupType::Device, Some(id(ROOT)), "Core");
    dir.insert(id(ME), GroupType::Device, Some(id(ROOT)), "Edge");
    dir.set_rule_refs(
        id(ME),
        vec![RuleRef {
            group_id: id(CORE),
            direct: false,
        }],
    );
    let err = GroupTest::with(Box::new(dir))
        .given(vec![created("Edge", ROOT)])
        .when(move_to(CORE))
        .inspect_result()
        .expect_err("refused");
    assert_eq!(err.code().map(|c| c.as_str()), Some("RULE_INVALID"));
    // A direct reference does not include the moved subtree: allowed.
    let dir = InMemoryDirectory::default();
    dir.insert(id(ROOT), GroupType::Device, None, "Inventory");
    dir.insert(id(CORE), GroupType::Device, Some(id(ROOT)), "Core");
    dir.insert(id(ME), GroupType::Device, Some(id(ROOT)), "Edge");
    dir.set_rule_refs(
        id(ME),
        vec![RuleRef {
            group_id: id(CORE),
            direct: true,
        }],
    );
    GroupTest::with(Box::new(dir))
        .given(vec![created("Edge", ROOT)])
        .when(move_to(CORE))
        .then_expect_events(vec![GroupEvent::GroupMoved {
            previous_parent_id: id(ROOT),
            new_parent_id: id(CORE),
        }]);
}

#[test]
fn a_group_that_rules_refer_to_cannot_be_deleted() {
    let dir = InMemoryDirectory::default();
    dir.insert(id(ROOT), GroupType::Device, None, "Inventory");
    dir.insert(id(CORE), GroupType::Device, Some(id(ROOT)), "Core");
    dir.insert(id(ME), GroupType::Device, Some(id(ROOT)), "Edge");
    dir.set_rule_refs(
        id(CORE),
        vec![RuleRef {
            group_id: id(ME),
            direct: true,
        }],
    );
    GroupTest::with(Box::new(dir))
        .given(vec![created("Edge", ROOT)])
        .when(GroupCommand::Delete { id: id(ME) })
        .then_expect_error(GroupError::Referenced(vec![id(CORE)]));
}

fn caps(has_sysmon: bool, has_snmp: bool, has_services: bool) -> GroupCapabilities {
    GroupCapabilities {
        has_sysmon,
        has_snmp,
        has_services,
    }
}

fn set_caps(c: GroupCapabilities) -> GroupCommand {
    GroupCommand::SetCapabilities {
        id: id(ME),
        capabilities: c,
    }
}

fn caps_changed(c: GroupCapabilities, previous: GroupCapabilities) -> GroupEvent {
    GroupEvent::GroupCapabilitiesChanged {
        has_sysmon: c.has_sysmon,
        has_snmp: c.has_snmp,
        has_services: c.has_services,
        previous,
    }
}

#[test]
fn capabilities_are_recorded_only_when_a_flag_changes() {
    let none = caps(false, false, false);
    let sysmon = caps(true, false, false);
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(set_caps(none))
        .then_expect_events(vec![]);
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(set_caps(sysmon))
        .then_expect_events(vec![caps_changed(sysmon, none)]);
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT), caps_changed(sysmon, none)])
        .when(set_caps(sysmon))
        .then_expect_events(vec![]);
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT), caps_changed(sysmon, none)])
        .when(set_caps(caps(true, true, true)))
        .then_expect_events(vec![caps_changed(caps(true, true, true), sysmon)]);
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT), caps_changed(sysmon, none)])
        .when(set_caps(none))
        .then_expect_events(vec![caps_changed(none, sysmon)]);
    // Other events leave the flags alone.
    GroupTest::with(directory())
        .given(vec![
            created("Edge", ROOT),
            caps_changed(sysmon, none),
            GroupEvent::GroupRenamed {
                name: "Edge-2".into(),
                previous_name: "Edge".into(),
            },
        ])
        .when(set_caps(sysmon))
        .then_expect_events(vec![]);
}

#[test]
fn capabilities_are_set_on_roots_but_not_on_deleted_or_missing_groups() {
    let sysmon = caps(true, false, false);
    GroupTest::with(directory())
        .given(vec![root_created()])
        .when(set_caps(sysmon))
        .then_expect_events(vec![caps_changed(sysmon, caps(false, false, false))]);
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT), GroupEvent::GroupDeleted {}])
        .when(set_caps(sysmon))
        .then_expect_error(GroupError::NotFound {
            what: "group",
            id: id(ME),
        });
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(set_caps(sysmon))
        .then_expect_error(GroupError::NotFound {
            what: "group",
            id: id(ME),
        });
}

#[test]
fn set_capabilities_commutes_and_old_snapshots_have_no_flags() {
    assert!(set_caps(caps(true, true, true)).commutes());
    // A snapshot taken before the flags existed lacks the field: it reads as all false.
    let mut state = serde_json::to_value(Group::default()).expect("serialize");
    state
        .as_object_mut()
        .expect("object")
        .remove("capabilities")
        .expect("the state has the field");
    let restored: Group = serde_json::from_value(state).expect("old snapshot");
    assert_eq!(restored.capabilities, caps(false, false, false));
}

#[test]
fn capabilities_changed_json_is_the_stored_contract() {
    let value = serde_json::to_value(caps_changed(
        caps(true, false, true),
        caps(false, false, true),
    ))
    .expect("serialize");
    assert_eq!(
        value,
        json!({"GroupCapabilitiesChanged": {
            "has_sysmon": true, "has_snmp": false, "has_services": true,
            "previous": {"has_sysmon": false, "has_snmp": false, "has_services": true}
        }})
    );
}

#[path = "name_tests.rs"]
mod names;
