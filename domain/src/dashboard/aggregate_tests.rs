use cqrs_es::test::TestFramework;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::*;
use crate::dashboard::{
    NewWidget, PositionDraft, Widget, WidgetContent, WidgetDraft, WidgetKind, WidgetPosition,
    MAX_WIDGETS,
};

type DashboardTest = TestFramework<Dashboard>;

const GROUP: &str = "6f1c2d4e-8a9b-4c3d-9e2f-1a2b3c4d5e6f";

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn me() -> String {
    "vera".into()
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn pos(x: u32, y: u32, w: u32, h: u32) -> WidgetPosition {
    WidgetPosition { x, y, w, h }
}

fn draft(kind: &str, config: Value, x: i64, y: i64, w: i64, h: i64) -> WidgetDraft {
    WidgetDraft {
        kind: kind.into(),
        title: "CPU".into(),
        config,
        position: PositionDraft { x, y, w, h },
    }
}

fn widget(n: u128, x: u32, y: u32) -> Widget {
    Widget {
        id: id(n),
        kind: WidgetKind::GroupUtilization,
        title: "CPU".into(),
        config: object(json!({ "group": GROUP })),
        position: pos(x, y, 4, 2),
    }
}

fn created(widgets: Vec<Widget>) -> DashboardEvent {
    DashboardEvent::DashboardCreated {
        owner: Some(me()),
        name: "Ops".into(),
        is_template: false,
        copied_from: None,
        widgets,
        layout_version: 1,
    }
}

fn add(n: u128, d: WidgetDraft, expected: Option<u64>) -> DashboardCommand {
    DashboardCommand::AddWidget {
        actor: me(),
        widget: NewWidget {
            id: id(n),
            draft: d,
        },
        expected_layout_version: expected,
    }
}

fn cpu_at(x: i64, y: i64) -> WidgetDraft {
    draft("GROUP_UTILIZATION", json!({ "group": GROUP }), x, y, 4, 2)
}

fn added(n: u128, x: u32, y: u32, layout_version: u64) -> DashboardEvent {
    DashboardEvent::WidgetAdded {
        widget: widget(n, x, y),
        layout_version,
    }
}

fn invalid(field: &str, message: &str) -> DashboardError {
    DashboardError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn add_error(d: WidgetDraft) -> DashboardError {
    DashboardTest::with(())
        .given(vec![created(vec![])])
        .when(add(7, d, None))
        .inspect_result()
        .expect_err("refused")
}

#[test]
fn creates_a_dashboard_with_a_trimmed_name_at_layout_version_1() {
    DashboardTest::with(())
        .given_no_previous_events()
        .when(DashboardCommand::Create {
            owner: me(),
            name: "  Ops ".into(),
            copied_from: None,
            widgets: vec![],
        })
        .then_expect_events(vec![created(vec![])]);
}

#[test]
fn rejects_bad_names() {
    let create = |name: &str| DashboardCommand::Create {
        owner: me(),
        name: name.into(),
        copied_from: None,
        widgets: vec![],
    };
    DashboardTest::with(())
        .given_no_previous_events()
        .when(create("  "))
        .then_expect_error(invalid("name", "must not be empty"));
    DashboardTest::with(())
        .given_no_previous_events()
        .when(create(&"x".repeat(129)))
        .then_expect_error(invalid("name", "must be at most 128 characters"));
    DashboardTest::with(())
        .given(vec![created(vec![])])
        .when(create("again"))
        .then_expect_error(DashboardError::AlreadyExists);
}

#[test]
fn only_the_owner_may_change_it_and_others_see_not_found() {
    let rename = |actor: &str| DashboardCommand::Rename {
        actor: actor.into(),
        name: "Mine".into(),
    };
    DashboardTest::with(())
        .given(vec![created(vec![])])
        .when(rename("vera"))
        .then_expect_events(vec![DashboardEvent::DashboardRenamed {
            name: "Mine".into(),
            previous_name: "Ops".into(),
        }]);
    DashboardTest::with(())
        .given(vec![created(vec![])])
        .when(rename("victor"))
        .then_expect_error(DashboardError::NotFound);
    DashboardTest::with(())
        .given_no_previous_events()
        .when(rename("vera"))
        .then_expect_error(DashboardError::NotFound);
    DashboardTest::with(())
        .given(vec![created(vec![]), DashboardEvent::DashboardDeleted {}])
        .when(rename("vera"))
        .then_expect_error(DashboardError::NotFound);
    DashboardTest::with(())
        .given(vec![created(vec![])])
        .when(DashboardCommand::Delete {
            actor: "victor".into(),
        })
        .then_expect_error(DashboardError::NotFound);
    DashboardTest::with(())
        .given(vec![created(vec![])])
        .when(add(7, cpu_at(0, 0), None))
        .then_expect_events(vec![added(7, 0, 0, 2)]);
    DashboardTest::with(())
        .given(vec![created(vec![])])
        .when(DashboardCommand::AddWidget {
            actor: "victor".into(),
            widget: NewWidget {
                id: id(7),
                draft: cpu_at(0, 0),
            },
            expected_layout_version: None,
        })
        .then_expect_error(DashboardError::NotFound);
}

#[test]
fn renaming_to_the_same_name_is_a_no_op_and_delete_deletes() {
    DashboardTest::with(())
        .given(vec![created(vec![])])
        .when(DashboardCommand::Rename {
            actor: me(),
            name: " Ops".into(),
        })
        .then_expect_events(vec![]);
    DashboardTest::with(())
        .given(vec![created(vec![])])
        .when(DashboardCommand::Delete { actor: me() })
        .then_expect_events(vec![DashboardEvent::DashboardDeleted {}]);
}

#[test]
fn make_default_always_records_the_choice() {
    let made = DashboardEvent::DashboardMadeDefault { owner: me() };
    DashboardTest::with(())
        .given(vec![created(vec![])])
        .when(DashboardCommand::MakeDefault { actor: me() })
        .then_expect_events(vec![made.clone()]);
    DashboardTest::with(())
        .given(vec![created(vec![]), made.clone()])
        .when(DashboardCommand::MakeDefault { actor: me() })
        .then_expect_events(vec![made]);
}

#[test]
fn each_widget_change_bumps_the_layout_version() {
    let history = vec![created(vec![]), added(7, 0, 0, 2)];
    DashboardTest::with(())
        .given(history.clone())
        .when(add(8, cpu_at(4, 0), Some(2)))
        .then_expect_events(vec![added(8, 4, 0, 3)]);
    DashboardTest::with(())
        .given(history.clone())
        .when(DashboardCommand::MoveWidget {
            actor: me(),
            widget_id: id(7),
            position: PositionDraft {
                x: 0,
                y: 3,
                w: 12,
                h: 1,
            },
            expected_layout_version: Some(2),
        })
        .then_expect_events(vec![DashboardEvent::WidgetMoved {
            widget_id: id(7),
            position: pos(0, 3, 12, 1),
            previous_position: pos(0, 0, 4, 2),
            layout_version: 3,
        }]);
    DashboardTest::with(())
        .given(history.clone())
        .when(DashboardCommand::UpdateWidget {
            actor: me(),
            widget_id: id(7),
            kind: Some("GROUP_MEMBER_COUNT".into()),
            title: Some("Members".into()),
            config: Some(json!({ "group": "$group", "mode": "DIRECT" })),
            expected_layout_version: None,
        })
        .then_expect_events(vec![DashboardEvent::WidgetUpdated {
            widget_id: id(7),
            kind: WidgetKind::GroupMemberCount,
            title: "Members".into(),
            config: object(json!({ "group": "$group", "mode": "DIRECT" })),
            previous: WidgetContent {
                kind: WidgetKind::GroupUtilization,
                title: "CPU".into(),
                config: object(json!({ "group": GROUP })),
            },
            layout_version: 3,
        }]);
    DashboardTest::with(())
        .given(history)
        .when(DashboardCommand::RemoveWidget {
            actor: me(),
            widget_id: id(7),
            expected_layout_version: Some(2),
        })
        .then_expect_events(vec![DashboardEvent::WidgetRemoved {
            widget: widget(7, 0, 0),
            layout_version: 3,
        }]);
}

#[test]
fn a_stale_expected_layout_version_is_a_conflict() {
    DashboardTest::with(())
        .given(vec![created(vec![]), added(7, 0, 0, 2)])
        .when(add(8, cpu_at(4, 0), Some(1)))
        .then_expect_error(DashboardError::LayoutConflict {
            expected: 1,
            actual: 2,
        });
}

#[test]
fn unchanged_widgets_are_no_ops() {
    let history = vec![created(vec![]), added(7, 0, 0, 2)];
    DashboardTest::with(())
        .given(history.clone())
        .when(DashboardCommand::MoveWidget {
            actor: me(),
            widget_id: id(7),
            position: PositionDraft {
                x: 0,
                y: 0,
                w: 4,
                h: 2,
            },
            expected_layout_version: None,
        })
        .then_expect_events(vec![]);
    // The group id is compared in its canonical form.
    DashboardTest::with(())
        .given(history)
        .when(DashboardCommand::UpdateWidget {
            actor: me(),
            widget_id: id(7),
            kind: None,
            title: Some(" CPU ".into()),
            config: Some(json!({ "group": GROUP.to_uppercase() })),
            expected_layout_version: None,
        })
        .then_expect_events(vec![]);
}

#[test]
fn unknown_widgets_are_refused() {
    DashboardTest::with(())
        .given(vec![created(vec![])])
        .when(DashboardCommand::RemoveWidget {
            actor: me(),
            widget_id: id(9),
            expected_layout_version: None,
        })
        .then_expect_error(DashboardError::WidgetNotFound(id(9)));
    DashboardTest::with(())
        .given(vec![created(vec![]), added(7, 0, 0, 2)])
        .when(add(7, cpu_at(6, 0), None))
        .then_expect_error(DashboardError::WidgetExists(id(7)));
}

#[test]
fn bad_kinds_are_refused() {
    let err = add_error(draft("PIE_CHART", json!({ "group": GROUP }), 0, 0, 4, 2));
    assert_eq!(
        (err.code().as_str(), err.field()),
        ("INVALID", Some("kind"))
    );
}

#[test]
fn bad_configs_are_refused() {
    let bad = [
        json!("not an object"),
        json!({}),
        json!({ "group": "not-a-uuid" }),
        json!({ "group": 42 }),
        json!({ "group": GROUP, "bucket": "ONE_DAY" }),
        json!({ "group": GROUP, "rangeHours": 0 }),
        json!({ "group": GROUP, "rangeHours": 169 }),
        json!({ "group": GROUP, "rangeHours": 1.5 }),
        json!({ "group": GROUP, "mode": "DIRECT" }),
        json!({ "group": GROUP, "colour": "red" }),
        json!({ "group": GROUP, "bucket": "x".repeat(4100) }),
    ];
    for config in bad {
        let err = add_error(draft("GROUP_UTILIZATION", config.clone(), 0, 0, 4, 2));
        assert_eq!(
            (err.code().as_str(), err.field()),
            ("INVALID", Some("config")),
            "{config}"
        );
    }
    let err = add_error(draft(
        "GROUP_MEMBER_COUNT",
        json!({ "group": GROUP, "rangeHours": 3 }),
        0,
        0,
        4,
        2,
    ));
    assert_eq!(err.field(), Some("config"));
    // The good ones, at their limits.
    for (kind, config) in [
        (
            "GROUP_AVAILABILITY",
            json!({ "group": "$group", "bucket": "ONE_HOUR", "rangeHours": 168 }),
        ),
        (
            "GROUP_HEALTH_SUMMARY",
            json!({ "group": GROUP, "rangeHours": 1 }),
        ),
        (
            "GROUP_MEMBER_COUNT",
            json!({ "group": GROUP, "mode": "EFFECTIVE" }),
        ),
    ] {
        DashboardTest::with(())
            .given(vec![created(vec![])])
            .when(add(7, draft(kind, config, 0, 0, 4, 2), None))
            .inspect_result()
            .expect("accepted");
    }
}

#[test]
fn bad_positions_are_refused() {
    for (x, y, w, h) in [
        (-1, 0, 4, 2),
        (0, -1, 4, 2),
        (12, 0, 1, 1),
        (0, 0, 0, 2),
        (0, 0, 13, 2),
        (0, 0, 4, 0),
        (0, 0, 4, 13),
        (9, 0, 4, 2),
        (0, 1001, 4, 2),
    ] {
        let err = add_error(draft(
            "GROUP_UTILIZATION",
            json!({ "group": GROUP }),
            x,
            y,
            w,
            h,
        ));
        assert_eq!(
            (err.code().as_str(), err.field()),
            ("INVALID", Some("position")),
            "{x},{y},{w},{h}"
        );
    }
    DashboardTest::with(())
        .given(vec![created(vec![])])
        .when(add(7, cpu_at(8, 1000), None))
        .inspect_result()
        .expect("x + w = 12 and the last row fit");
}

#[test]
fn widgets_may_not_overlap() {
    let history = vec![created(vec![]), added(7, 0, 0, 2)];
    DashboardTest::with(())
        .given(history.clone())
        .when(add(8, cpu_at(3, 1), None))
        .then_expect_error(DashboardError::Overlap {
            field: "position".into(),
            other: id(7),
        });
    // Touching edges do not overlap.
    DashboardTest::with(())
        .given(history.clone())
        .when(add(8, cpu_at(4, 0), None))
        .then_expect_events(vec![added(8, 4, 0, 3)]);
    DashboardTest::with(())
        .given(history.clone())
        .when(add(8, cpu_at(0, 2), None))
        .then_expect_events(vec![added(8, 0, 2, 3)]);
    // A widget may move onto cells it covers itself.
    DashboardTest::with(())
        .given(history)
        .when(DashboardCommand::MoveWidget {
            actor: me(),
            widget_id: id(7),
            position: PositionDraft {
                x: 1,
                y: 1,
                w: 4,
                h: 2,
            },
            expected_layout_version: None,
        })
        .inspect_result()
        .expect("moves over itself");
}

#[test]
fn a_dashboard_holds_at_most_50_widgets() {
    // 50 widgets of 1x1: rows of 12.
    let mut history = vec![created(vec![])];
    for n in 0..MAX_WIDGETS as u32 {
        history.push(DashboardEvent::WidgetAdded {
            widget: Widget {
                position: pos(n % 12, n / 12, 1, 1),
                ..widget(100 + u128::from(n), 0, 0)
            },
            layout_version: u64::from(n) + 2,
        });
    }
    DashboardTest::with(())
        .given(history[..MAX_WIDGETS].to_vec())
        .when(add(7, cpu_at(0, 10), None))
        .inspect_result()
        .expect("the 50th fits");
    DashboardTest::with(())
        .given(history)
        .when(add(7, cpu_at(0, 10), None))
        .then_expect_error(DashboardError::TooManyWidgets { max: MAX_WIDGETS });
}

#[test]
fn templates_are_published_without_owner_and_only_deleted_as_templates() {
    let new = NewWidget {
        id: id(7),
        draft: cpu_at(0, 0),
    };
    let template = DashboardEvent::DashboardCreated {
        owner: None,
        name: "NOC".into(),
        is_template: true,
        copied_from: Some(id(1)),
        widgets: vec![widget(7, 0, 0)],
        layout_version: 1,
    };
    DashboardTest::with(())
        .given_no_previous_events()
        .when(DashboardCommand::PublishTemplate {
            name: "NOC".into(),
            copied_from: Some(id(1)),
            widgets: vec![new.clone()],
        })
        .then_expect_events(vec![template.clone()]);
    // Nobody owns a template: user commands do not reach it.
    DashboardTest::with(())
        .given(vec![template.clone()])
        .when(DashboardCommand::Delete { actor: me() })
        .then_expect_error(DashboardError::NotFound);
    DashboardTest::with(())
        .given(vec![template.clone()])
        .when(DashboardCommand::DeleteTemplate)
        .then_expect_events(vec![DashboardEvent::DashboardDeleted {}]);
    DashboardTest::with(())
        .given(vec![created(vec![])])
        .when(DashboardCommand::DeleteTemplate)
        .then_expect_error(DashboardError::NotFound);
    let mut state = Dashboard::default();
    state.apply(template);
    assert!(state.readable_by("anyone"));
    assert!(state.is_template() && state.owner().is_none());
}

#[test]
fn first_widgets_are_validated_with_their_index() {
    let widgets = vec![
        NewWidget {
            id: id(7),
            draft: cpu_at(0, 0),
        },
        NewWidget {
            id: id(8),
            draft: cpu_at(2, 0),
        },
    ];
    DashboardTest::with(())
        .given_no_previous_events()
        .when(DashboardCommand::Create {
            owner: me(),
            name: "Copy".into(),
            copied_from: Some(id(1)),
            widgets,
        })
        .then_expect_error(DashboardError::Overlap {
            field: "widgets[1].position".into(),
            other: id(7),
        });
    let too_many: Vec<NewWidget> = (0..51)
        .map(|n| NewWidget {
            id: id(100 + n),
            draft: cpu_at(0, 0),
        })
        .collect();
    DashboardTest::with(())
        .given_no_previous_events()
        .when(DashboardCommand::Create {
            owner: me(),
            name: "Copy".into(),
            copied_from: None,
            widgets: too_many,
        })
        .then_expect_error(DashboardError::TooManyWidgets { max: MAX_WIDGETS });
}

#[test]
fn apply_folds_the_layout() {
    let mut state = Dashboard::default();
    for event in [
        created(vec![widget(7, 0, 0)]),
        added(8, 4, 0, 2),
        DashboardEvent::WidgetMoved {
            widget_id: id(8),
            position: pos(0, 5, 2, 2),
            previous_position: pos(4, 0, 4, 2),
            layout_version: 3,
        },
        DashboardEvent::WidgetRemoved {
            widget: widget(7, 0, 0),
            layout_version: 4,
        },
    ] {
        state.apply(event);
    }
    assert_eq!(state.layout_version(), 4);
    assert_eq!(state.widgets().len(), 1);
    assert_eq!(state.widgets()[0].position, pos(0, 5, 2, 2));
    assert!(state.readable_by("vera") && !state.readable_by("victor"));
}

#[path = "name_tests.rs"]
mod names;
