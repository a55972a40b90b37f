use super::*;

fn forbidden(character: char, kind: Forbidden, position: usize) -> TextError {
    TextError::Forbidden {
        character,
        kind,
        position,
    }
}

#[test]
fn the_format_table_is_sorted_disjoint_and_holds_the_170_code_points_of_cf() {
    for pair in FORMAT.windows(2) {
        assert!(pair[0].0 <= pair[0].1, "{:X?}", pair[0]);
        assert!(
            pair[0].1 + 1 < pair[1].0,
            "{:X?} then {:X?}",
            pair[0],
            pair[1]
        );
    }
    let total: u32 = FORMAT.iter().map(|(lo, hi)| hi - lo + 1).sum();
    assert_eq!(
        total, 170,
        "DerivedGeneralCategory.txt: Cf, Total code points: 170"
    );
}

#[test]
fn known_format_characters_are_cf_and_their_neighbours_are_not() {
    let members = [
        '\u{ad}',
        '\u{600}',
        '\u{605}',
        '\u{61c}',
        '\u{6dd}',
        '\u{70f}',
        '\u{890}',
        '\u{8e2}',
        '\u{180e}',
        '\u{200b}',
        '\u{200c}',
        '\u{200d}',
        '\u{200e}',
        '\u{200f}',
        '\u{202a}',
        '\u{202e}',
        '\u{2060}',
        '\u{2064}',
        '\u{2066}',
        '\u{2069}',
        '\u{206f}',
        '\u{feff}',
        '\u{fff9}',
        '\u{fffb}',
        '\u{110bd}',
        '\u{110cd}',
        '\u{13430}',
        '\u{1343f}',
        '\u{1bca0}',
        '\u{1d173}',
        '\u{1d17a}',
        '\u{e0001}',
        '\u{e0020}',
        '\u{e0041}',
        '\u{e007f}',
    ];
    for c in members {
        assert!(is_format(c), "U+{:04X} is Cf", c as u32);
    }
    let non_members = [
        'a',
        ' ',
        '\u{0}',     // Cc, not Cf
        '\u{ac}',    // NOT SIGN
        '\u{ae}',    // REGISTERED SIGN
        '\u{606}',   // ARABIC-INDIC CUBE ROOT
        '\u{61b}',   // ARABIC SEMICOLON
        '\u{200a}',  // HAIR SPACE (Zs)
        '\u{2010}',  // HYPHEN
        '\u{2028}',  // LINE SEPARATOR (Zl)
        '\u{2029}',  // PARAGRAPH SEPARATOR (Zp)
        '\u{202f}',  // NARROW NO-BREAK SPACE (Zs)
        '\u{2065}',  // unassigned between WORD JOINER's run and the isolates
        '\u{301}',   // COMBINING ACUTE ACCENT (Mn)
        '\u{fe0f}',  // VARIATION SELECTOR-16 (Mn)
        '\u{fefe}',  // unassigned
        '\u{fffc}',  // OBJECT REPLACEMENT CHARACTER (So)
        '\u{fffd}',  // REPLACEMENT CHARACTER (So)
        '\u{13440}', // EGYPTIAN HIEROGLYPH MIRROR HORIZONTALLY (Mn)
        '\u{e0000}', // unassigned before LANGUAGE TAG
        '\u{e0002}', // unassigned
        '\u{e0080}', // unassigned after CANCEL TAG
        '\u{e0100}', // VARIATION SELECTOR-17 (Mn)
        '\u{e000}',  // private use (Co)
    ];
    for c in non_members {
        assert!(!is_format(c), "U+{:04X} is not Cf", c as u32);
    }
}

#[test]
fn names_are_trimmed_and_composed() {
    assert_eq!(
        normalize_name("  Cafe\u{301} ", 128),
        Ok("Caf\u{e9}".into())
    );
    assert_eq!(normalize_name("Caf\u{e9}", 128), Ok("Caf\u{e9}".into()));
    // Hangul jamo compose into a syllable; the ohm sign is canonically the omega.
    assert_eq!(
        normalize_name("\u{1100}\u{1161} \u{2126}", 128),
        Ok("\u{ac00} \u{3a9}".into())
    );
    // NFC, not NFKC: compatibility characters (ligatures, full width) stay as sent.
    assert_eq!(normalize_name("\u{fb01}le", 128), Ok("\u{fb01}le".into()));
    assert_eq!(normalize_name("  \t ", 128), Err(TextError::Empty));
    assert_eq!(
        normalize_name(&"e\u{301}".repeat(3), 3),
        Ok("\u{e9}".repeat(3))
    );
    assert_eq!(
        normalize_name("abcd", 3),
        Err(TextError::TooLong { max: 3 })
    );
}

#[test]
fn names_refuse_controls_format_characters_separators_and_noncharacters() {
    let cases = [
        ("a\u{0}", forbidden('\u{0}', Forbidden::Control, 2)),
        ("a\u{9f}b", forbidden('\u{9f}', Forbidden::Control, 2)),
        ("a\tb", forbidden('\t', Forbidden::Control, 2)),
        ("a\u{200c}b", forbidden('\u{200c}', Forbidden::Format, 2)),
        ("a\u{2063}b", forbidden('\u{2063}', Forbidden::Format, 2)),
        ("\u{200e}ab", forbidden('\u{200e}', Forbidden::Bidi, 1)),
        ("ab\u{61c}", forbidden('\u{61c}', Forbidden::Bidi, 3)),
        (" \u{202a}b", forbidden('\u{202a}', Forbidden::Bidi, 2)),
        ("a\u{2069}", forbidden('\u{2069}', Forbidden::Bidi, 2)),
        ("a\u{2029}b", forbidden('\u{2029}', Forbidden::Separator, 2)),
        (
            "a\u{fdef}",
            forbidden('\u{fdef}', Forbidden::Noncharacter, 2),
        ),
        (
            "a\u{ffff}",
            forbidden('\u{ffff}', Forbidden::Noncharacter, 2),
        ),
        (
            "a\u{10fffe}",
            forbidden('\u{10fffe}', Forbidden::Noncharacter, 2),
        ),
    ];
    for (raw, refusal) in cases {
        assert_eq!(normalize_name(raw, 128), Err(refusal), "{raw:?}");
    }
    // Allowed: private use (all three areas), marks, symbols and the replacement character.
    for ok in [
        "\u{e000}",
        "\u{f0000}x",
        "x\u{10fffd}",
        "\u{2764}\u{fe0f}",
        "\u{fffd}",
    ] {
        assert!(normalize_name(ok, 128).is_ok(), "{ok:?}");
    }
}

#[test]
fn refusals_name_the_character_and_where_it_is() {
    assert_eq!(
        forbidden('\u{202e}', Forbidden::Bidi, 4).to_string(),
        "must not contain U+202E RIGHT-TO-LEFT OVERRIDE, a bidirectional control (character 4)"
    );
    assert_eq!(
        forbidden('\u{e0041}', Forbidden::Format, 1).to_string(),
        "must not contain U+E0041, a format character (character 1)"
    );
    assert_eq!(
        forbidden('\u{1f}', Forbidden::Control, 1).to_string(),
        "must not contain U+001F, a control character (character 1)"
    );
}

#[test]
fn free_text_keeps_tabs_and_line_breaks_and_refuses_other_controls_and_overrides() {
    assert_eq!(check_free_text("reason", "a\tb\r\nc\n", 10), Ok(()));
    // Marks, separators and zero-width characters are legitimate in prose.
    assert_eq!(
        check_free_text("reason", "\u{5d0}\u{200f}1 \u{2028}\u{200d}\u{ad}", 10),
        Ok(())
    );
    let refused = |raw: &str| check_free_text("description", raw, 100).map_err(|e| e.error);
    assert_eq!(
        refused("a\u{0}"),
        Err(forbidden('\u{0}', Forbidden::Control, 2))
    );
    assert_eq!(
        refused("\u{7}"),
        Err(forbidden('\u{7}', Forbidden::Control, 1))
    );
    assert_eq!(
        refused("a\u{85}"),
        Err(forbidden('\u{85}', Forbidden::Control, 2))
    );
    assert_eq!(
        refused("a\u{7f}"),
        Err(forbidden('\u{7f}', Forbidden::Control, 2))
    );
    for c in ['\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}'] {
        assert_eq!(
            refused(&format!("x{c}")),
            Err(forbidden(c, Forbidden::Bidi, 2))
        );
    }
    for c in ['\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}'] {
        assert_eq!(
            refused(&format!("{c}")),
            Err(forbidden(c, Forbidden::Bidi, 1))
        );
    }
    let long = check_free_text("reason", "abcd", 3).expect_err("too long");
    assert_eq!(long.to_string(), "reason must be at most 3 characters");
}

#[test]
fn names_refuse_the_other_invisible_characters_and_fold_spaces() {
    for c in [
        '\u{34f}',
        '\u{115f}',
        '\u{3164}',
        '\u{fe00}',
        '\u{ffa0}',
        '\u{e0100}',
        '\u{180b}',
    ] {
        assert_eq!(
            normalize_name(&format!("a{c}b"), 128),
            Err(forbidden(c, Forbidden::Invisible, 2)),
            "U+{:04X}",
            c as u32
        );
    }
    for space in ['\u{a0}', '\u{2003}', '\u{202f}', '\u{3000}'] {
        assert_eq!(
            normalize_name(&format!("a{space}b"), 128).as_deref(),
            Ok("a b"),
            "U+{:04X}",
            space as u32
        );
    }
    assert_eq!(to_nfc("a\u{a0}e\u{301}"), "a \u{e9}");
    assert_eq!(
        normalize_name("\u{2764}\u{fe0f} prod", 128).as_deref(),
        Ok("\u{2764} prod"),
        "emoji presentation folded"
    );
    let mut sorted = IGNORABLE.to_vec();
    sorted.sort();
    assert_eq!(sorted, IGNORABLE, "sorted");
    assert!(IGNORABLE.windows(2).all(|w| w[0].1 < w[1].0), "disjoint");
    assert!(IGNORABLE
        .iter()
        .all(|&(lo, hi)| (lo..=hi).all(|c| !in_ranges(FORMAT, char::from_u32(c).unwrap_or('x')))));
}
