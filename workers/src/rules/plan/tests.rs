use super::*;
use corral_domain::inventory::{Device, Service};

fn active(group: u128, kind: GroupType, text: &str) -> Active {
    let rule = rule::parse(text, kind).expect("the rule parses").rule;
    Active {
        group: Uuid::from_u128(group),
        kind,
        cached: Cached::new(1, rule),
        healthy: true,
    }
}

fn device(id: &str, site: &str) -> Device {
    Device {
        id: id.into(),
        site: Some(site.into()),
        ..Default::default()
    }
}

fn fields(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn set(ids: &[&str]) -> HashSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_rule_result_adds_what_it_newly_matches_and_removes_what_it_no_longer_does() {
    let (add, remove) = membership_diff(&set(&["c", "a", "b"]), &set(&["b", "d", "e"]));
    assert_eq!(add, vec!["a", "c"]);
    assert_eq!(remove, vec!["d", "e"]);
}

#[test]
fn an_unchanged_rule_result_changes_nothing() {
    let (add, remove) = membership_diff(&set(&["a", "b"]), &set(&["b", "a"]));
    assert!(add.is_empty() && remove.is_empty());
}

#[test]
fn a_disabled_rule_and_a_cleared_rule_are_recorded_apart() {
    assert_eq!(unset_cause(true), ("rule_disabled", "DISABLED"));
    assert_eq!(unset_cause(false), ("rule_cleared", "CLEARED"));
}

#[test]
fn a_change_concerns_only_rules_that_read_a_changed_field() {
    let site = active(1, GroupType::Device, "site:A");
    let f = &site.cached.fields;
    assert!(concerns(GroupType::Device, f, Some(&fields(&["site"]))));
    assert!(concerns(
        GroupType::Device,
        f,
        Some(&fields(&["vendor", "site"]))
    ));
    assert!(!concerns(GroupType::Device, f, Some(&fields(&["vendor"]))));
    assert!(!concerns(GroupType::Device, f, Some(&fields(&[]))));
    assert!(
        concerns(GroupType::Device, f, None),
        "unknown fields: every rule"
    );
}

#[test]
fn a_host_change_concerns_service_rules_that_read_the_host() {
    let svc = active(1, GroupType::Service, "in:services device.vendor:Cisco");
    let f = &svc.cached.fields;
    assert!(f.contains("device.vendor"), "{f:?}");
    assert!(concerns(
        GroupType::Service,
        f,
        Some(&fields(&["device.vendor"]))
    ));
    assert!(!concerns(
        GroupType::Service,
        f,
        Some(&fields(&["device.site"]))
    ));
    assert!(concerns(
        GroupType::Service,
        f,
        Some(&fields(&[ANY_DEVICE_FIELD]))
    ));
    // Moving to another host changes every device field of the service.
    assert!(concerns(
        GroupType::Service,
        f,
        Some(&fields(&["device_id"]))
    ));
    let port = active(2, GroupType::Service, "in:services port:>=8000");
    let f = &port.cached.fields;
    assert!(!concerns(
        GroupType::Service,
        f,
        Some(&fields(&[ANY_DEVICE_FIELD]))
    ));
    assert!(!concerns(
        GroupType::Service,
        f,
        Some(&fields(&["device_id"]))
    ));
}

#[test]
fn a_host_change_reaches_its_services_as_device_fields() {
    assert_eq!(
        host_fields(Some(&fields(&["site", "os"])), false),
        fields(&["device.site", "device.os"])
    );
    assert_eq!(host_fields(None, false), fields(&[ANY_DEVICE_FIELD]));
    assert_eq!(
        host_fields(Some(&fields(&["site"])), true),
        fields(&[ANY_DEVICE_FIELD]),
        "a removed host changes every device field"
    );
    let rules = vec![active(1, GroupType::Device, "site:A")];
    assert!(!service_rules_read_devices(&rules));
    let rules = vec![
        active(1, GroupType::Device, "site:A"),
        active(2, GroupType::Service, "in:services device.site:A"),
    ];
    assert!(service_rules_read_devices(&rules));
}

#[test]
fn changed_entities_join_the_groups_they_now_match_and_leave_the_others() {
    let a = active(1, GroupType::Device, "site:A");
    let b = active(2, GroupType::Device, "site:B");
    let d1 = device("d1", "A");
    let d2 = device("d2", "A");
    let changed = fields(&["site"]);
    let entities = vec![
        Changed {
            entity: Entity::Device(&d1),
            id: "d1",
            fields: Some(&changed),
            removed: false,
        },
        Changed {
            entity: Entity::Device(&d2),
            id: "d2",
            fields: None,
            removed: false,
        },
    ];
    // d1 was in B (moved from site B), d2 already in A.
    let current: HashSet<(Uuid, String)> =
        [(b.group, "d1".to_string()), (a.group, "d2".to_string())].into();
    let (add, remove) = decide(&[&a, &b], &entities, &current, &(), Utc::now());
    assert_eq!(add, HashMap::from([(a.group, vec!["d1".to_string()])]));
    assert_eq!(remove, HashMap::from([(b.group, vec!["d1".to_string()])]));
}

#[test]
fn a_change_of_a_field_no_rule_reads_decides_nothing() {
    let a = active(1, GroupType::Device, "site:A");
    let d1 = device("d1", "A");
    let changed = fields(&["vendor"]);
    let entities = vec![Changed {
        entity: Entity::Device(&d1),
        id: "d1",
        fields: Some(&changed),
        removed: false,
    }];
    let (add, remove) = decide(&[&a], &entities, &HashSet::new(), &(), Utc::now());
    assert!(add.is_empty() && remove.is_empty());
}

#[test]
fn removed_entities_are_not_evaluated_but_leave_every_group() {
    let a = active(1, GroupType::Device, "site:A");
    let d1 = device("d1", "A");
    let entities = vec![Changed {
        entity: Entity::Device(&d1),
        id: "d1",
        fields: None,
        removed: true,
    }];
    let (add, remove) = decide(&[&a], &entities, &HashSet::new(), &(), Utc::now());
    assert!(add.is_empty() && remove.is_empty(), "left to RemoveGone");

    let g1 = Uuid::from_u128(1);
    let g2 = Uuid::from_u128(2);
    let g3 = Uuid::from_u128(3);
    let statics = HashMap::from([
        (g1, vec!["d1".to_string(), "d9".to_string()]),
        (g3, vec!["d9".to_string()]),
    ]);
    let current: HashSet<(Uuid, String)> = [
        (g1, "d1".to_string()),
        (g2, "d2".to_string()),
        (g2, "d1".to_string()),
    ]
    .into();
    let removed: HashSet<&str> = ["d1", "d2"].into();
    let gone = gone_by_group(&statics, &current, &removed);
    assert_eq!(
        gone,
        BTreeMap::from([
            (g1, vec!["d1".to_string()]),
            (g2, vec!["d1".to_string(), "d2".to_string()]),
        ]),
        "static and rule entries of removed entities, once each; live ones stay"
    );
}

#[test]
fn services_are_evaluated_with_their_host() {
    let rule = active(1, GroupType::Service, "in:services device.site:A");
    let host = device("d1", "A");
    let service = Service {
        id: "d1/http/web".into(),
        device_id: "d1".into(),
        service_type: "http".into(),
        name: "web".into(),
        ..Default::default()
    };
    let changed = host_fields(Some(&fields(&["site"])), false);
    let entities = vec![Changed {
        entity: Entity::Service(&service, Some(&host)),
        id: "d1/http/web",
        fields: Some(&changed),
        removed: false,
    }];
    let (add, _) = decide(&[&rule], &entities, &HashSet::new(), &(), Utc::now());
    assert_eq!(add[&rule.group], vec!["d1/http/web".to_string()]);
    let entities = vec![Changed {
        entity: Entity::Service(&service, None),
        id: "d1/http/web",
        fields: Some(&changed),
        removed: false,
    }];
    let current: HashSet<(Uuid, String)> = [(rule.group, "d1/http/web".to_string())].into();
    let (add, remove) = decide(&[&rule], &entities, &current, &(), Utc::now());
    assert!(add.is_empty());
    assert_eq!(remove[&rule.group], vec!["d1/http/web".to_string()]);
}

/// Members of group 1 (effective) by a fixed rule of the id's number.
struct EveryThird;

impl Memberships for EveryThird {
    fn contains(&self, group: Uuid, direct: bool, member_id: &str) -> bool {
        let n: usize = member_id
            .trim_start_matches('d')
            .parse()
            .unwrap_or_default();
        group == Uuid::from_u128(1) && !direct && n.is_multiple_of(3)
    }
}

#[test]
fn a_large_batch_decided_on_every_core_equals_the_sequential_decision() {
    let rules = [
        active(1, GroupType::Device, "site:A"),
        active(2, GroupType::Device, "site:B OR hostname:%7%"),
        active(
            3,
            GroupType::Device,
            "group:00000000-0000-0000-0000-000000000001 site:A",
        ),
        active(4, GroupType::Device, "NOT site:A"),
    ];
    let rules: Vec<&Active> = rules.iter().collect();
    let n = 30_000;
    let devices: Vec<Device> = (0..n)
        .map(|i| Device {
            hostname: Some(format!("h{i}")),
            ..device(&format!("d{i}"), ["A", "B", "C"][i % 3])
        })
        .collect();
    let changed = fields(&["site"]);
    let entities: Vec<Changed<'_>> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| Changed {
            entity: Entity::Device(d),
            id: d.id.as_str(),
            fields: i.is_multiple_of(2).then_some(&changed),
            removed: i.is_multiple_of(11),
        })
        .collect();
    assert!(entities.len() * rules.len() >= PARALLEL_EVALUATIONS);
    // Some entries present already, in every group.
    let current: HashSet<(Uuid, String)> = (0..n)
        .filter(|i| i.is_multiple_of(5))
        .map(|i| (Uuid::from_u128(1 + (i as u128 % 4)), format!("d{i}")))
        .collect();
    let now = Utc::now();
    let sequential = decide_on(1, &rules, &entities, &current, &EveryThird, now);
    for threads in [2, 3, 8] {
        let parallel = decide_on(threads, &rules, &entities, &current, &EveryThird, now);
        assert_eq!(parallel, sequential, "{threads} threads");
    }
    assert_eq!(
        decide(&rules, &entities, &current, &EveryThird, now),
        sequential
    );
    // Every group gains and loses members, in entity order.
    for group in 1..=4 {
        let group = Uuid::from_u128(group);
        for decided in [&sequential.0, &sequential.1] {
            let ids = &decided[&group];
            assert!(ids.len() > 100, "{group}: {}", ids.len());
            let numbers: Vec<usize> = ids
                .iter()
                .map(|id| id[1..].parse().expect("number"))
                .collect();
            assert!(numbers.windows(2).all(|w| w[0] < w[1]));
        }
    }
}

#[test]
fn the_cause_names_the_first_five_ids_and_counts_the_rest() {
    let ids: Vec<String> = (1..=7).map(|i| format!("d{i}")).collect();
    assert_eq!(
        cause_text(GroupType::Device, &ids),
        "inventory:devices:d1,d2,d3,d4,d5 (+2 more)"
    );
    assert_eq!(
        cause_text(GroupType::Service, &ids[..2]),
        "inventory:services:d1,d2"
    );
}

#[test]
fn the_cursor_stops_at_a_full_batch_and_otherwise_reaches_the_horizon() {
    assert_eq!(next_cursor(Some((10, 3)), true, 50), Some((10, 3)));
    assert_eq!(next_cursor(Some((10, 3)), false, 50), Some((50, 0)));
    assert_eq!(next_cursor(None, false, 50), Some((50, 0)));
    assert_eq!(
        next_cursor(Some((50, 3)), false, 50),
        Some((50, 3)),
        "never behind the last row read"
    );
    assert_eq!(next_cursor(None, true, 50), None);
}

#[test]
fn incremental_adds_fail_only_past_the_limit() {
    assert!(!exceeds_limit(8, 0, 2, 10));
    assert!(exceeds_limit(9, 0, 2, 10));
    assert!(!exceeds_limit(9, 1, 2, 10), "removes make room");
    let outcome = over_limit(10);
    assert_eq!(outcome.status, "FAILED");
    assert!(outcome.error.as_deref().is_some_and(|e| e.contains("10")));
}

#[test]
fn only_moving_or_failed_rules_are_due_on_the_schedule() {
    assert!(due(true, false, 60.0, 60.0));
    assert!(due(false, true, 61.0, 60.0));
    assert!(
        !due(false, false, 1e9, 60.0),
        "a static rule waits for repair"
    );
    assert!(!due(true, true, 59.0, 60.0));
}

#[test]
fn a_repair_step_takes_a_few_distinct_groups_off_the_queue() {
    let g = |i| Uuid::from_u128(i);
    let mut queue: VecDeque<Uuid> = [g(1), g(1), g(2), g(3), g(4)].into();
    let taken = take_repairs(&mut queue, 3);
    assert_eq!(taken, [g(1), g(2), g(3)].into());
    assert_eq!(queue, VecDeque::from([g(4)]));
    assert_eq!(take_repairs(&mut queue, 3), [g(4)].into());
    assert!(take_repairs(&mut queue, 3).is_empty());
}
