//! Dashboard names and widget titles: NFC, and no invisible or reordering characters (issue
//! 13, point 5). A child of the aggregate tests, for their fixtures.

use super::*;

fn create(name: &str, widgets: Vec<NewWidget>) -> DashboardCommand {
    DashboardCommand::Create {
        owner: me(),
        name: name.into(),
        copied_from: None,
        widgets,
    }
}

fn titled(title: &str) -> WidgetDraft {
    WidgetDraft {
        title: title.into(),
        ..cpu_at(0, 0)
    }
}

#[test]
fn names_and_titles_are_stored_precomposed() {
    DashboardTest::with(())
        .given(vec![created(vec![])])
        .when(DashboardCommand::Rename {
            actor: me(),
            name: "Cafe\u{301}".into(),
        })
        .then_expect_events(vec![DashboardEvent::DashboardRenamed {
            name: "Caf\u{e9}".into(),
            previous_name: "Ops".into(),
        }]);
    DashboardTest::with(())
        .given(vec![created(vec![])])
        .when(add(7, titled("Cafe\u{301} CPU"), None))
        .then_expect_events(vec![DashboardEvent::WidgetAdded {
            widget: Widget {
                title: "Caf\u{e9} CPU".into(),
                ..widget(7, 0, 0)
            },
            layout_version: 2,
        }]);
}

#[test]
fn names_and_titles_refuse_invisible_and_reordering_characters() {
    DashboardTest::with(())
        .given_no_previous_events()
        .when(create("Ops\u{202e}", vec![]))
        .then_expect_error(invalid(
            "name",
            "must not contain U+202E RIGHT-TO-LEFT OVERRIDE, a bidirectional control (character 4)",
        ));
    DashboardTest::with(())
        .given_no_previous_events()
        .when(create(
            "Ops",
            vec![NewWidget {
                id: id(7),
                draft: titled("C\u{200b}PU"),
            }],
        ))
        .then_expect_error(invalid(
            "widgets[0].title",
            "must not contain U+200B ZERO WIDTH SPACE, a format character (character 2)",
        ));
    assert_eq!(
        add_error(titled("CPU\u{2028}load")),
        invalid(
            "title",
            "must not contain U+2028 LINE SEPARATOR, a line or paragraph separator (character 4)",
        )
    );
    DashboardTest::with(())
        .given(vec![created(vec![widget(7, 0, 0)])])
        .when(DashboardCommand::UpdateWidget {
            actor: me(),
            widget_id: id(7),
            kind: None,
            title: Some("\u{2066}CPU".into()),
            config: None,
            expected_layout_version: None,
        })
        .then_expect_error(invalid(
            "title",
            "must not contain U+2066 LEFT-TO-RIGHT ISOLATE, a bidirectional control (character 1)",
        ));
}
