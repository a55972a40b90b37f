//! Names that look alike: Unicode NFC before the sibling check, and no invisible or
//! reordering characters (issue 13, point 5). A child of the aggregate tests, for their
//! fixtures.

use super::*;

/// The usual directory plus `sibling` under the root, beside Site-A and Edge.
fn directory_with(sibling: &str) -> Box<dyn GroupDirectory> {
    let dir = InMemoryDirectory::default();
    dir.insert(id(ROOT), GroupType::Device, None, "Inventory");
    dir.insert(id(SITE_A), GroupType::Device, Some(id(ROOT)), "Site-A");
    dir.insert(id(7), GroupType::Device, Some(id(ROOT)), sibling);
    dir.insert(id(ME), GroupType::Device, Some(id(ROOT)), "Edge");
    Box::new(dir)
}

fn renamed(name: &str, previous_name: &str) -> GroupEvent {
    GroupEvent::GroupRenamed {
        name: name.into(),
        previous_name: previous_name.into(),
    }
}

#[test]
fn a_decomposed_name_is_stored_precomposed() {
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(create("Cafe\u{301}", ROOT))
        .then_expect_events(vec![created("Caf\u{e9}", ROOT)]);
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(rename(" Cafe\u{301} "))
        .then_expect_events(vec![renamed("Caf\u{e9}", "Edge")]);
}

#[test]
fn a_decomposed_name_collides_with_its_precomposed_sibling_ignoring_case() {
    GroupTest::with(directory_with("Caf\u{e9}"))
        .given_no_previous_events()
        .when(create("Cafe\u{301}", ROOT))
        .then_expect_error(GroupError::NameTaken {
            name: "Caf\u{e9}".into(),
        });
    GroupTest::with(directory_with("CAF\u{c9}"))
        .given(vec![created("Edge", ROOT)])
        .when(rename("cafe\u{301}"))
        .then_expect_error(GroupError::NameTaken {
            name: "caf\u{e9}".into(),
        });
}

#[test]
fn renaming_a_group_stored_before_normalization_to_its_own_name_normalizes_it() {
    // An event written before names were normalized keeps its decomposed name; renaming the
    // group to what looks like the same name stores the NFC form.
    GroupTest::with(directory())
        .given(vec![created("Cafe\u{301}", ROOT)])
        .when(rename("Cafe\u{301}"))
        .then_expect_events(vec![renamed("Caf\u{e9}", "Cafe\u{301}")]);
}

#[test]
fn the_length_limit_counts_characters_after_normalization() {
    // 256 code points as sent, 128 characters once composed.
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(create(&"e\u{301}".repeat(128), ROOT))
        .then_expect_events(vec![created(&"\u{e9}".repeat(128), ROOT)]);
}

#[test]
fn invisible_reordering_and_control_characters_are_refused_by_code_point_and_position() {
    let cases = [
        (
            "Core\u{200b}Net",
            "U+200B ZERO WIDTH SPACE, a format character (character 5)",
        ),
        (
            "ab\u{202e}cd",
            "U+202E RIGHT-TO-LEFT OVERRIDE, a bidirectional control (character 3)",
        ),
        (
            "\u{2066}Edge",
            "U+2066 LEFT-TO-RIGHT ISOLATE, a bidirectional control (character 1)",
        ),
        (
            "\u{feff}Edge",
            "U+FEFF ZERO WIDTH NO-BREAK SPACE, a format character (character 1)",
        ),
        (
            "a\u{200d}b",
            "U+200D ZERO WIDTH JOINER, a format character (character 2)",
        ),
        (
            "co\u{ad}re",
            "U+00AD SOFT HYPHEN, a format character (character 3)",
        ),
        (
            "one\u{2028}two",
            "U+2028 LINE SEPARATOR, a line or paragraph separator (character 4)",
        ),
        // The position counts the name as sent, leading spaces included.
        (
            "  ding\u{7}",
            "U+0007 BELL, a control character (character 7)",
        ),
        (
            "a\u{85}b",
            "U+0085 NEXT LINE, a control character (character 2)",
        ),
        ("tag\u{e0041}", "U+E0041, a format character (character 4)"),
        ("x\u{fdd0}", "U+FDD0, a noncharacter (character 2)"),
        ("x\u{1fffe}", "U+1FFFE, a noncharacter (character 2)"),
    ];
    for (name, refusal) in cases {
        GroupTest::with(directory())
            .given_no_previous_events()
            .when(create(name, ROOT))
            .then_expect_error(invalid_name(&format!("must not contain {refusal}")));
    }
    let err = GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(rename("Edge\u{202e}"))
        .inspect_result()
        .expect_err("refused");
    assert_eq!(
        (err.code().map(|c| c.as_str()), err.field()),
        (Some("INVALID"), Some("name"))
    );
}

#[test]
fn private_use_characters_are_allowed() {
    // Private-use code points (icon fonts, internal scripts) are visible and not
    // look-alikes of anything standard; they pass through unchanged.
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(create("\u{e000} rack \u{f8ff}", ROOT))
        .then_expect_events(vec![created("\u{e000} rack \u{f8ff}", ROOT)]);
}

#[test]
fn descriptions_refuse_controls_and_bidi_overrides_but_keep_tabs_and_line_breaks() {
    let update = |d: &str| GroupCommand::Update {
        id: id(ME),
        description: Some(d.into()),
        metadata: None,
    };
    let description = |message: &str| GroupError::Invalid {
        field: "description",
        message: message.into(),
    };
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(update("fine \u{202e}txt.exe"))
        .then_expect_error(description(
            "must not contain U+202E RIGHT-TO-LEFT OVERRIDE, a bidirectional control (character 6)",
        ));
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(update("ring\u{7}"))
        .then_expect_error(description(
            "must not contain U+0007 BELL, a control character (character 5)",
        ));
    GroupTest::with(directory())
        .given(vec![created("Edge", ROOT)])
        .when(update("rack\tR1\nrow 2\r\n"))
        .then_expect_events(vec![GroupEvent::GroupUpdated {
            description: Some("rack\tR1\nrow 2\r\n".into()),
            metadata: Map::new(),
            previous: Some(GroupDetails {
                description: None,
                metadata: Map::new(),
            }),
        }]);
    GroupTest::with(directory())
        .given_no_previous_events()
        .when(GroupCommand::Create {
            id: id(ME),
            name: "Edge-2".into(),
            group_type: GroupType::Device,
            parent_id: id(ROOT),
            description: Some("a\u{2067}b".into()),
            metadata: None,
        })
        .then_expect_error(description(
            "must not contain U+2067 RIGHT-TO-LEFT ISOLATE, a bidirectional control (character 2)",
        ));
}
