//! `field~"regex"`: the part of regex syntax that means the same to Rust's `regex` crate (in
//! memory) and to PostgreSQL's `~` (advanced regular expressions), so that both evaluators
//! agree. Whatever cannot be shown to agree is rejected.
//!
//! Accepted: literal characters; escaped punctuation (`\.`, `\(`, `\-`, ...); `\t \n \r \f
//! \v \a`; `.`; bracket classes of literals and ranges (`[a-z0-9_]`, `[^.]`); `\d` and `\D`
//! (rewritten to `[0-9]` / `[^0-9]` for both engines, since their `\d` differ outside ASCII);
//! `* + ? {m} {m,} {m,n}` (counts up to 255, PostgreSQL's limit) and their lazy forms;
//! `|`; groups `( )` and `(?: )`; anchors `^` and `$`; a leading `(?i)` (SQL `~*`).
//!
//! Rejected: `\w \s \b \B \A \z \< \>`, Unicode and POSIX classes, nested classes and class
//! set operations, hex/octal/Unicode escapes (`\x41B` is one character to PostgreSQL),
//! named groups, flags other than a leading `(?i)`, `{,n}`, stacked or anchored quantifiers
//! (PostgreSQL errors), and backreferences and lookaround (Rust errors).
//!
//! Both engines search unanchored and only whether a match exists is used, so greedy and
//! lazy quantifiers agree. PostgreSQL's `.` matches a newline and its `^`/`$` anchor the whole
//! string; Rust gets `(?s)` for the same meaning.

use regex_syntax::ast::{
    self, AssertionKind, Ast, ClassPerlKind, ClassSet, ClassSetItem, GroupKind, LiteralKind,
    RepetitionKind, RepetitionRange, SpecialLiteralKind,
};

/// Longest accepted pattern, in characters.
const MAX_PATTERN_CHARS: usize = 512;
/// PostgreSQL's `RE_DUP_MAX`.
const MAX_REPEAT: u32 = 255;
/// Compiled-program size limit for Rust's regex.
const SIZE_LIMIT: usize = 1 << 20;

/// A checked regex: the pattern for PostgreSQL and the compiled Rust regex.
#[derive(Clone, Debug)]
pub(crate) struct CheckedRegex {
    /// The pattern PostgreSQL gets (without the leading `(?i)`).
    pub pg_pattern: String,
    /// `~*` rather than `~`.
    pub case_insensitive: bool,
    pub regex: regex::Regex,
}

/// Checks `pattern` and compiles it.
pub(crate) fn compile(pattern: &str) -> Result<CheckedRegex, String> {
    if pattern.is_empty() {
        return Err("empty regex".into());
    }
    if pattern.chars().count() > MAX_PATTERN_CHARS {
        return Err(format!(
            "regex is longer than {MAX_PATTERN_CHARS} characters"
        ));
    }
    let (case_insensitive, body) = match pattern.strip_prefix("(?i)") {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    if body.is_empty() {
        return Err("empty regex".into());
    }
    let parsed = ast::parse::ParserBuilder::new()
        .nest_limit(32)
        .build()
        .parse(body)
        .map_err(|e| format!("invalid regex: {}", e.kind()))?;
    let mut edits = Vec::new();
    check(&parsed, body, &mut edits)?;
    let mut pg_pattern = String::with_capacity(body.len() + 8);
    let mut at = 0;
    for (start, end, replacement) in edits {
        pg_pattern.push_str(&body[at..start]);
        pg_pattern.push_str(replacement);
        at = end;
    }
    pg_pattern.push_str(&body[at..]);
    let flags = if case_insensitive { "(?si)" } else { "(?s)" };
    let regex = regex::RegexBuilder::new(&format!("{flags}{pg_pattern}"))
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => "regex is too large".to_string(),
            other => format!("invalid regex: {other}"),
        })?;
    Ok(CheckedRegex {
        pg_pattern,
        case_insensitive,
        regex,
    })
}

type Edits = Vec<(usize, usize, &'static str)>;

fn slice<'a>(src: &'a str, span: &ast::Span) -> &'a str {
    &src[span.start.offset..span.end.offset]
}

fn unsupported(what: &str) -> Result<(), String> {
    Err(format!(
        "{what} is not supported in rule regexes (only syntax that PostgreSQL and Corral read the same way is)"
    ))
}

fn check(node: &Ast, src: &str, edits: &mut Edits) -> Result<(), String> {
    match node {
        Ast::Empty(_) | Ast::Dot(_) => Ok(()),
        Ast::Flags(_) => unsupported("an inline flag other than a leading `(?i)`"),
        Ast::Literal(lit) => literal(lit),
        Ast::Assertion(a) => match a.kind {
            AssertionKind::StartLine | AssertionKind::EndLine => Ok(()),
            _ => unsupported(&format!("the assertion `{}`", slice(src, &a.span))),
        },
        Ast::ClassUnicode(_) => unsupported("a Unicode class (`\\p{..}`)"),
        Ast::ClassPerl(p) => match p.kind {
            ClassPerlKind::Digit => {
                let with = if p.negated { "[^0-9]" } else { "[0-9]" };
                edits.push((p.span.start.offset, p.span.end.offset, with));
                Ok(())
            }
            _ => unsupported(&format!(
                "`{}` (write a bracket class such as `[a-z0-9_]` or `[ \\t]`)",
                slice(src, &p.span)
            )),
        },
        Ast::ClassBracketed(class) => match &class.kind {
            ClassSet::Item(item) => class_item(item, src, edits),
            ClassSet::BinaryOp(_) => unsupported("a class set operation (`&&`, `--`, `~~`)"),
        },
        Ast::Repetition(rep) => {
            if let RepetitionKind::Range(range) = &rep.op.kind {
                let (RepetitionRange::Exactly(m)
                | RepetitionRange::AtLeast(m)
                | RepetitionRange::Bounded(_, m)) = range;
                if *m > MAX_REPEAT {
                    return Err(format!("repetition counts may be at most {MAX_REPEAT}"));
                }
                if slice(src, &rep.op.span).starts_with("{,") {
                    return unsupported("`{,n}`");
                }
            }
            match rep.ast.as_ref() {
                Ast::Repetition(_) => unsupported("a quantifier directly after a quantifier"),
                Ast::Assertion(_) | Ast::Empty(_) | Ast::Flags(_) => {
                    unsupported("a quantifier after an anchor or nothing")
                }
                inner => check(inner, src, edits),
            }
        }
        Ast::Group(group) => match &group.kind {
            GroupKind::CaptureIndex(_) => check(&group.ast, src, edits),
            GroupKind::NonCapturing(flags) if flags.items.is_empty() => {
                check(&group.ast, src, edits)
            }
            GroupKind::NonCapturing(_) => unsupported("a group with flags"),
            GroupKind::CaptureName { .. } => unsupported("a named group"),
        },
        Ast::Alternation(alt) => alt.asts.iter().try_for_each(|a| check(a, src, edits)),
        Ast::Concat(cat) => cat.asts.iter().try_for_each(|a| check(a, src, edits)),
    }
}

fn literal(lit: &ast::Literal) -> Result<(), String> {
    match &lit.kind {
        LiteralKind::Verbatim => Ok(()),
        LiteralKind::Meta | LiteralKind::Superfluous if !lit.c.is_alphanumeric() => Ok(()),
        LiteralKind::Special(kind) if !matches!(kind, SpecialLiteralKind::Space) => Ok(()),
        _ => unsupported("this escape (hex, octal and Unicode escapes differ between engines)"),
    }
}

fn class_item(item: &ClassSetItem, src: &str, edits: &mut Edits) -> Result<(), String> {
    match item {
        ClassSetItem::Empty(_) => Ok(()),
        ClassSetItem::Literal(lit) => literal(lit),
        ClassSetItem::Range(range) => {
            literal(&range.start)?;
            literal(&range.end)
        }
        ClassSetItem::Ascii(_) => unsupported("a POSIX class (`[:alpha:]`)"),
        ClassSetItem::Unicode(_) => unsupported("a Unicode class (`\\p{..}`)"),
        ClassSetItem::Perl(p) if p.kind == ClassPerlKind::Digit && !p.negated => {
            edits.push((p.span.start.offset, p.span.end.offset, "0-9"));
            Ok(())
        }
        ClassSetItem::Perl(p) => unsupported(&format!("`{}` inside brackets", slice(src, &p.span))),
        ClassSetItem::Bracketed(_) => {
            unsupported("a nested class (escape a literal `[` inside brackets as `\\[`)")
        }
        ClassSetItem::Union(union) => union
            .items
            .iter()
            .try_for_each(|i| class_item(i, src, edits)),
    }
}

#[cfg(test)]
mod tests {
    use super::compile;

    #[test]
    fn accepts_the_shared_subset_and_rewrites_digits() {
        for (pattern, pg) in [
            ("^web-[0-9]+$", "^web-[0-9]+$"),
            ("^web\\d{2}", "^web[0-9]{2}"),
            ("[\\d_]x\\D", "[0-9_]x[^0-9]"),
            ("(?i)^CORE", "^CORE"),
            ("a.b|c(d|e)*?(?:f)", "a.b|c(d|e)*?(?:f)"),
            ("\\.\\-\\(\\)\\t", "\\.\\-\\(\\)\\t"),
            ("[]a]", "[]a]"),
            ("x{0,255}", "x{0,255}"),
        ] {
            let c = compile(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            assert_eq!(c.pg_pattern, pg, "{pattern}");
        }
        let c = compile("a.b").expect("regex");
        assert!(
            c.regex.is_match("a\nb"),
            ". matches a newline, as in PostgreSQL"
        );
        assert!(!compile("a$").expect("regex").regex.is_match("a\n"));
        assert!(compile("(?i)WEB").expect("regex").regex.is_match("web"));
        assert!(compile("(?i)WEB").expect("regex").case_insensitive);
        assert!(!compile("^\\d$").expect("regex").regex.is_match("٣"));
    }

    #[test]
    fn rejects_what_the_engines_read_differently() {
        for pattern in [
            "",
            "\\w",
            "\\s+",
            "a\\b",
            "\\Bx",
            "\\Aa",
            "a\\z",
            "\\<a",
            "\\pL",
            "[[:alpha:]]",
            "[a[b]]",
            "[a&&b]",
            "[a--b]",
            "\\x41",
            "\\u0041",
            "\\101",
            "(?P<n>a)",
            "(?<n>a)",
            "(?m)^a",
            "a(?i)b",
            "(?i:a)",
            "(?s)a",
            "(?x)a",
            "a{,3}",
            "a{256}",
            "(a)\\1",
            "(?=a)",
            "^*",
            "[\\w]",
            "[\\D]",
            "a**",
            "(",
            "[a",
        ] {
            assert!(compile(pattern).is_err(), "{pattern} should be rejected");
        }
    }
}
