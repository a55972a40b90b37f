//! Checks for the text users set: names (groups, dashboards, widget titles) and free text
//! (descriptions, reasons).
//!
//! Names are compared with each other (siblings must differ, ignoring case) and shown in
//! lists and paths, so two names that render alike must be equal and nothing may hide in
//! one. [`normalize_name`] therefore trims, puts the name in Unicode Normalization Form C
//! (a precomposed `é`, U+00E9, and `e` + U+0301 COMBINING ACUTE ACCENT become the same
//! string), and refuses every character that is invisible or changes how the text around it
//! is displayed:
//! - control characters (general category Cc: C0, DEL and C1, tab and line breaks included);
//! - format characters (general category Cf): zero-width space, joiners and non-joiners, the
//!   word joiner and invisible operators, the byte order mark, the soft hyphen, tag
//!   characters, and the bidirectional marks, embeddings, overrides and isolates that can
//!   make text display in another order than it is stored ("Trojan Source");
//! - the line and paragraph separators U+2028 and U+2029;
//! - noncharacters (U+FDD0..U+FDEF and the last two code points of every plane);
//! - the rest of the default-ignorable code points, which render as nothing: variation
//!   selectors, the combining grapheme joiner, the Hangul fillers, the Khmer inherent vowels
//!   and the Mongolian free variation selectors.
//!
//! Two look-alike spellings are folded rather than refused: space separators (no-break
//! space, en and em spaces, ideographic space, ...) become U+0020 SPACE, and the emoji and
//! text presentation selectors U+FE0E and U+FE0F are dropped (`❤️` is stored as `❤`).
//!
//! Private-use characters (U+E000..U+F8FF and planes 15 and 16) are allowed: they are
//! visible (icon fonts draw them) and no standard character looks like them. Trimming
//! (Unicode White_Space) comes first, so a leading or trailing line break or separator is
//! dropped rather than refused. Only canonical equivalence is folded (NFC, not NFKC), and
//! confusables (a Cyrillic `а` for a Latin `a`) are not.
//!
//! Free text ([`check_free_text`]) may span lines: it keeps tab, line feed and carriage
//! return and refuses the other control characters and the bidirectional embeddings,
//! overrides and isolates. It is not normalized: it is shown, never compared.

use unicode_normalization::UnicodeNormalization;

/// Why a name or a free text was refused. The messages are written to follow a field name
/// (`name: must not be empty`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Nothing but white space.
    #[error("must not be empty")]
    Empty,
    /// More characters than allowed (counted after normalization, for names).
    #[error("must be at most {max} characters")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// A character that may not appear.
    #[error("must not contain {}, {} (character {position})", describe(*character), kind.what())]
    Forbidden {
        /// The character.
        character: char,
        /// Why it is refused.
        kind: Forbidden,
        /// Its position in the text as sent, counting characters from 1.
        position: usize,
    },
}

/// The kinds of refused characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// General category Cc.
    Control,
    /// A bidirectional mark, embedding, override or isolate (all of category Cf).
    Bidi,
    /// Any other character of general category Cf.
    Format,
    /// U+2028 LINE SEPARATOR or U+2029 PARAGRAPH SEPARATOR.
    Separator,
    /// A noncharacter.
    Noncharacter,
    /// Another default-ignorable code point (a variation selector, a filler).
    Invisible,
}

impl Forbidden {
    fn what(self) -> &'static str {
        match self {
            Forbidden::Control => "a control character",
            Forbidden::Bidi => "a bidirectional control",
            Forbidden::Format => "a format character",
            Forbidden::Separator => "a line or paragraph separator",
            Forbidden::Noncharacter => "a noncharacter",
            Forbidden::Invisible => "an invisible character",
        }
    }
}

/// Trims `raw`, refuses the characters a name may not hold (see the module documentation)
/// and returns its NFC form, which must be 1 to `max_chars` characters.
pub fn normalize_name(raw: &str, max_chars: usize) -> Result<String, TextError> {
    let trimmed = raw.trim();
    // NFC at most triples a text's length: anything longer is refused before any work.
    if trimmed.len() > max_chars.saturating_mul(3 * 4) {
        return Err(TextError::TooLong { max: max_chars });
    }
    let lead = raw[..raw.len() - raw.trim_start().len()].chars().count();
    if let Some((position, character, kind)) = trimmed
        .chars()
        .enumerate()
        .find_map(|(i, c)| name_refusal(c).map(|kind| (lead + i + 1, c, kind)))
    {
        return Err(TextError::Forbidden {
            character,
            kind,
            position,
        });
    }
    let name = to_nfc(trimmed);
    if name.is_empty() {
        return Err(TextError::Empty);
    }
    if name.chars().count() > max_chars {
        return Err(TextError::TooLong { max: max_chars });
    }
    Ok(name)
}

/// `text` as names are stored: space separators as U+0020 and Unicode NFC, for comparing
/// what a caller typed (a path, a search) with stored names.
pub fn to_nfc(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '\u{fe0e}' | '\u{fe0f}'))
        .map(|c| if is_other_space(c) { ' ' } else { c })
        .nfc()
        .collect()
}

/// Checks a free text as given: at most `max_chars` characters, no control characters
/// other than tab, line feed and carriage return, no bidirectional embeddings, overrides or
/// isolates. `field` names the text in the error.
pub fn check_free_text(field: &str, raw: &str, max_chars: usize) -> Result<(), FieldTextError> {
    let fail = |error| FieldTextError {
        field: field.to_string(),
        error,
    };
    if raw.len() > max_chars.saturating_mul(4) || raw.chars().count() > max_chars {
        return Err(fail(TextError::TooLong { max: max_chars }));
    }
    for (i, character) in raw.chars().enumerate() {
        let kind = if character.is_control() && !matches!(character, '\t' | '\n' | '\r') {
            Forbidden::Control
        } else if is_bidi_override(character) {
            Forbidden::Bidi
        } else {
            continue;
        };
        return Err(fail(TextError::Forbidden {
            character,
            kind,
            position: i + 1,
        }));
    }
    Ok(())
}

/// A [`TextError`] of a named field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {error}")]
pub struct FieldTextError {
    /// The field (`description`, `reason`).
    pub field: String,
    /// What is wrong with it.
    pub error: TextError,
}

/// Why `c` may not appear in a name, if it may not.
fn name_refusal(c: char) -> Option<Forbidden> {
    if c.is_control() {
        Some(Forbidden::Control)
    } else if is_bidi_control(c) {
        Some(Forbidden::Bidi)
    } else if is_format(c) {
        Some(Forbidden::Format)
    } else if matches!(c, '\u{2028}' | '\u{2029}') {
        Some(Forbidden::Separator)
    } else if is_noncharacter(c) {
        Some(Forbidden::Noncharacter)
    } else if in_ranges(IGNORABLE, c) {
        Some(Forbidden::Invisible)
    } else {
        None
    }
}

/// Default_Ignorable_Code_Point characters that are not of category Cf (those are in
/// [`FORMAT`]), from the Unicode Character Database's `DerivedCoreProperties.txt`.
const IGNORABLE: &[(u32, u32)] = &[
    (0x034F, 0x034F),   // COMBINING GRAPHEME JOINER
    (0x115F, 0x1160),   // HANGUL CHOSEONG FILLER..HANGUL JUNGSEONG FILLER
    (0x17B4, 0x17B5),   // KHMER VOWEL INHERENT AQ..KHMER VOWEL INHERENT AA
    (0x180B, 0x180D),   // MONGOLIAN FREE VARIATION SELECTOR ONE..THREE
    (0x180F, 0x180F),   // MONGOLIAN FREE VARIATION SELECTOR FOUR
    (0x2065, 0x2065),   // (unassigned, default ignorable)
    (0x3164, 0x3164),   // HANGUL FILLER
    (0xFE00, 0xFE0D),   // VARIATION SELECTOR-1..VARIATION SELECTOR-14
    (0xFFA0, 0xFFA0),   // HALFWIDTH HANGUL FILLER
    (0xFFF0, 0xFFF8),   // (unassigned, default ignorable)
    (0xE0000, 0xE0000), // (unassigned, default ignorable)
    (0xE0002, 0xE001F), // (unassigned, default ignorable)
    (0xE0080, 0xE0FFF), // VARIATION SELECTOR-17..VARIATION SELECTOR-256 and unassigned
];

/// Space separators (general category Zs) other than U+0020, which names store as U+0020.
fn is_other_space(c: char) -> bool {
    matches!(
        c,
        '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

/// Embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069): they reorder the
/// display of the text that follows them.
fn is_bidi_override(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// [`is_bidi_override`] plus the implicit marks (ALM U+061C, LRM U+200E, RLM U+200F).
fn is_bidi_control(c: char) -> bool {
    is_bidi_override(c) || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}')
}

/// U+FDD0..U+FDEF and U+xFFFE, U+xFFFF of every plane.
fn is_noncharacter(c: char) -> bool {
    matches!(c, '\u{fdd0}'..='\u{fdef}') || (c as u32) & 0xfffe == 0xfffe
}

/// Every code point of general category Cf (Format), as ranges, from the Unicode Character
/// Database's `extracted/DerivedGeneralCategory.txt` (`# General_Category=Format`, 170 code
/// points). The set is the same in Unicode 15.0 and 16.0: 15.0 added U+13439..U+1343F to the
/// Egyptian hieroglyph format controls, 16.0 added none.
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),   // SOFT HYPHEN
    (0x0600, 0x0605),   // ARABIC NUMBER SIGN..ARABIC NUMBER MARK ABOVE
    (0x061C, 0x061C),   // ARABIC LETTER MARK
    (0x06DD, 0x06DD),   // ARABIC END OF AYAH
    (0x070F, 0x070F),   // SYRIAC ABBREVIATION MARK
    (0x0890, 0x0891),   // ARABIC POUND MARK ABOVE..ARABIC PIASTRE MARK ABOVE
    (0x08E2, 0x08E2),   // ARABIC DISPUTED END OF AYAH
    (0x180E, 0x180E),   // MONGOLIAN VOWEL SEPARATOR
    (0x200B, 0x200F),   // ZERO WIDTH SPACE..RIGHT-TO-LEFT MARK
    (0x202A, 0x202E),   // LEFT-TO-RIGHT EMBEDDING..RIGHT-TO-LEFT OVERRIDE
    (0x2060, 0x2064),   // WORD JOINER..INVISIBLE PLUS
    (0x2066, 0x206F),   // LEFT-TO-RIGHT ISOLATE..NOMINAL DIGIT SHAPES
    (0xFEFF, 0xFEFF),   // ZERO WIDTH NO-BREAK SPACE (byte order mark)
    (0xFFF9, 0xFFFB),   // INTERLINEAR ANNOTATION ANCHOR..TERMINATOR
    (0x110BD, 0x110BD), // KAITHI NUMBER SIGN
    (0x110CD, 0x110CD), // KAITHI NUMBER SIGN ABOVE
    (0x13430, 0x1343F), // EGYPTIAN HIEROGLYPH VERTICAL JOINER..END WALLED ENCLOSURE
    (0x1BCA0, 0x1BCA3), // SHORTHAND FORMAT LETTER OVERLAP..UP STEP
    (0x1D173, 0x1D17A), // MUSICAL SYMBOL BEGIN BEAM..END PHRASE
    (0xE0001, 0xE0001), // LANGUAGE TAG
    (0xE0020, 0xE007F), // TAG SPACE..CANCEL TAG
];

/// Whether `c` is of general category Cf.
fn is_format(c: char) -> bool {
    in_ranges(FORMAT, c)
}

/// Whether `c` lies in one of the sorted, disjoint `ranges`.
fn in_ranges(ranges: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// `U+202E RIGHT-TO-LEFT OVERRIDE` for the characters people meet, `U+E0041` otherwise.
fn describe(c: char) -> String {
    let name = match c {
        '\0' => "NULL",
        '\u{7}' => "BELL",
        '\u{8}' => "BACKSPACE",
        '\t' => "CHARACTER TABULATION",
        '\n' => "LINE FEED",
        '\r' => "CARRIAGE RETURN",
        '\u{1b}' => "ESCAPE",
        '\u{7f}' => "DELETE",
        '\u{85}' => "NEXT LINE",
        '\u{ad}' => "SOFT HYPHEN",
        '\u{61c}' => "ARABIC LETTER MARK",
        '\u{200b}' => "ZERO WIDTH SPACE",
        '\u{200c}' => "ZERO WIDTH NON-JOINER",
        '\u{200d}' => "ZERO WIDTH JOINER",
        '\u{200e}' => "LEFT-TO-RIGHT MARK",
        '\u{200f}' => "RIGHT-TO-LEFT MARK",
        '\u{2028}' => "LINE SEPARATOR",
        '\u{2029}' => "PARAGRAPH SEPARATOR",
        '\u{202a}' => "LEFT-TO-RIGHT EMBEDDING",
        '\u{202b}' => "RIGHT-TO-LEFT EMBEDDING",
        '\u{202c}' => "POP DIRECTIONAL FORMATTING",
        '\u{202d}' => "LEFT-TO-RIGHT OVERRIDE",
        '\u{202e}' => "RIGHT-TO-LEFT OVERRIDE",
        '\u{2060}' => "WORD JOINER",
        '\u{2066}' => "LEFT-TO-RIGHT ISOLATE",
        '\u{2067}' => "RIGHT-TO-LEFT ISOLATE",
        '\u{2068}' => "FIRST STRONG ISOLATE",
        '\u{2069}' => "POP DIRECTIONAL ISOLATE",
        '\u{feff}' => "ZERO WIDTH NO-BREAK SPACE",
        _ => return format!("U+{:04X}", c as u32),
    };
    format!("U+{:04X} {name}", c as u32)
}

#[cfg(test)]
#[path = "text_tests.rs"]
mod tests;
