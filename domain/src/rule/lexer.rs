//! Tokens. A value after `field:` is read exactly as SRQL's tokenizer and `parse_value` read
//! it (quotes anywhere in the value, backslash escapes inside quotes, whitespace kept inside
//! quotes and brackets, outer quotes stripped, `(a,b)`/`[a,b]` lists), so that an SRQL filter
//! that Corral accepts gets SRQL's value. Where SRQL would silently swallow or mangle text
//! (an unbalanced quote or bracket), Corral stops with an error instead.

use super::RuleError;

/// A token and its 1-based column.
#[derive(Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub column: usize,
}

#[derive(Debug)]
pub(crate) enum Tok {
    LParen,
    RParen,
    Or,
    And,
    /// `NOT` or a leading `-`.
    Not,
    Term(Term),
}

/// `[!]field:value` or `field~"regex"`.
#[derive(Debug)]
pub(crate) struct Term {
    pub bang: bool,
    /// The field as written.
    pub field: String,
    pub field_column: usize,
    pub rhs: Rhs,
    pub rhs_column: usize,
}

#[derive(Debug)]
pub(crate) enum Rhs {
    /// After `:`: SRQL's value, and the raw text (for `group:` paths).
    Value { value: SrqlValue, raw: String },
    /// After `~`: the pattern.
    Regex(String),
}

/// A value as SRQL's `parse_value` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SrqlValue {
    Scalar(String),
    List(Vec<String>),
}

fn is_quote(c: char) -> bool {
    matches!(c, '"' | '\'' | '`')
}

/// Splits rule text into tokens.
pub(crate) fn lex(text: &str) -> Result<Vec<Token>, RuleError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let simple = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '-' => Some(Tok::Not),
            _ => None,
        };
        if let Some(tok) = simple {
            out.push(Token { tok, column });
            i += 1;
            continue;
        }
        let bang = c == '!';
        let start = i + usize::from(bang);
        let mut j = start;
        while j < chars.len()
            && !chars[j].is_whitespace()
            && !matches!(chars[j], ':' | '~' | '(' | ')')
            && !is_quote(chars[j])
        {
            j += 1;
        }
        let word: String = chars[start..j].iter().collect();
        if word.is_empty() || (bang && word.starts_with('!')) {
            let found = chars
                .get(start)
                .map_or("the end".to_string(), |c| format!("`{c}`"));
            return Err(RuleError::at(
                start + 1,
                if bang {
                    format!("`!` must be followed by a field (as in `!hostname:web`), found {found}; use NOT (...) to negate a group")
                } else {
                    format!("unexpected {found}")
                },
            ));
        }
        match chars.get(j) {
            Some(':') => {
                let (value, raw, end) = lex_value(&chars, j + 1)?;
                out.push(Token {
                    tok: Tok::Term(Term {
                        bang,
                        field: word,
                        field_column: start + 1,
                        rhs: Rhs::Value { value, raw },
                        rhs_column: j + 2,
                    }),
                    column,
                });
                i = end;
            }
            Some('~') => {
                let (pattern, end) = lex_regex(&chars, j + 1)?;
                out.push(Token {
                    tok: Tok::Term(Term {
                        bang,
                        field: word,
                        field_column: start + 1,
                        rhs: Rhs::Regex(pattern),
                        rhs_column: j + 2,
                    }),
                    column,
                });
                i = end;
            }
            _ => {
                let keyword = match word.to_ascii_uppercase().as_str() {
                    "OR" => Some(Tok::Or),
                    "AND" => Some(Tok::And),
                    "NOT" => Some(Tok::Not),
                    _ => None,
                };
                match keyword {
                    Some(tok) if !bang => {
                        out.push(Token { tok, column });
                        i = j;
                    }
                    _ => {
                        return Err(RuleError::at(
                            column,
                            format!("expected `field:value`, `field~\"regex\"`, AND, OR, NOT or a parenthesis, found `{}`", &text_of(&chars, i, j)),
                        ))
                    }
                }
            }
        }
    }
    Ok(out)
}

fn text_of(chars: &[char], from: usize, to: usize) -> String {
    chars[from..to].iter().collect()
}

/// SRQL's tokenizer from the value's first character: returns the processed value, the raw
/// text and the index after it. The value ends at whitespace outside quotes and brackets, at
/// a `)` that closes a Corral group, or at the end.
fn lex_value(chars: &[char], start: usize) -> Result<(SrqlValue, String, usize), RuleError> {
    let mut current = String::new();
    let mut quote: Option<(char, usize)> = None;
    let mut depth = 0usize;
    let mut escape = false;
    let mut i = start;
    while i < chars.len() {
        let ch = chars[i];
        if escape {
            current.push(ch);
            escape = false;
        } else if let Some((q, _)) = quote {
            if ch == '\\' {
                escape = true;
            } else {
                if ch == q {
                    quote = None;
                }
                current.push(ch);
            }
        } else {
            match ch {
                c if is_quote(c) => {
                    quote = Some((c, i));
                    current.push(c);
                }
                '(' | '[' => {
                    depth += 1;
                    current.push(ch);
                }
                ')' | ']' if depth == 0 => {
                    if ch == ')' {
                        break;
                    }
                    return Err(RuleError::at(i + 1, "unbalanced `]` in value"));
                }
                ')' | ']' => {
                    depth -= 1;
                    current.push(ch);
                }
                c if c.is_whitespace() && depth == 0 => break,
                c => current.push(c),
            }
        }
        i += 1;
    }
    if let Some((q, at)) = quote {
        return Err(RuleError::at(
            at + 1,
            format!("unbalanced `{q}`: SRQL would read the rest of the rule as part of this value; quote the whole value, as in hostname:\"o'brien\""),
        ));
    }
    if depth > 0 {
        return Err(RuleError::at(start + 1, "unbalanced `(` or `[` in value"));
    }
    let raw = text_of(chars, start, i);
    Ok((parse_value(&current), raw, i))
}

/// SRQL's `parse_value`.
pub(crate) fn parse_value(raw: &str) -> SrqlValue {
    let trimmed = raw.trim();
    let list = (trimmed.starts_with('(') && trimmed.ends_with(')'))
        || (trimmed.starts_with('[') && trimmed.ends_with(']'));
    if list && trimmed.len() >= 2 {
        let inner = &trimmed[1..trimmed.len() - 1];
        let items = split_list(inner)
            .into_iter()
            .map(|item| strip_quotes(item.trim()).to_string())
            .filter(|item| !item.is_empty())
            .collect();
        SrqlValue::List(items)
    } else {
        SrqlValue::Scalar(strip_quotes(trimmed).to_string())
    }
}

/// SRQL's `trim_matches('"').trim_matches('\'')`.
pub(crate) fn strip_quotes(s: &str) -> &str {
    s.trim_matches('"').trim_matches('\'')
}

/// SRQL's `split_list`: commas outside quotes and brackets, backslash escapes in quotes.
fn split_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    let mut depth = 0usize;
    let mut escape = false;
    for ch in value.chars() {
        if escape {
            current.push(ch);
            escape = false;
            continue;
        }
        if let Some(q) = quote {
            if ch == '\\' {
                escape = true;
                continue;
            }
            if ch == q {
                quote = None;
            }
            current.push(ch);
            continue;
        }
        match ch {
            c if is_quote(c) => {
                quote = Some(c);
                current.push(c);
            }
            '(' | '[' => {
                depth += 1;
                current.push(ch);
            }
            ')' | ']' => {
                depth = depth.saturating_sub(1);
                current.push(ch);
            }
            ',' if depth == 0 => {
                items.push(current.trim().to_string());
                current.clear();
            }
            _ => current.push(ch),
        }
    }
    if !current.trim().is_empty() {
        items.push(current.trim().to_string());
    }
    items
}

/// A quoted regex after `~`: `\` before the quote character escapes it, every other
/// backslash is kept for the regex. Returns the canonical pattern and the index after it.
fn lex_regex(chars: &[char], start: usize) -> Result<(String, usize), RuleError> {
    let Some(&q) = chars.get(start).filter(|c| **c == '"' || **c == '\'') else {
        return Err(RuleError::at(
            start + 1,
            "a regex must be quoted, as in hostname~\"^web-[0-9]+$\"",
        ));
    };
    let mut pattern = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => {
                return Err(RuleError::at(
                    start + 1,
                    format!("unbalanced `{q}` in regex"),
                ));
            }
            Some('\\') => match chars.get(i + 1) {
                Some(&c) if c == q => {
                    pattern.push(c);
                    i += 2;
                }
                Some(&c) => {
                    pattern.push('\\');
                    pattern.push(c);
                    i += 2;
                }
                None => {
                    return Err(RuleError::at(
                        start + 1,
                        format!("unbalanced `{q}` in regex"),
                    ));
                }
            },
            Some(&c) if c == q => {
                i += 1;
                break;
            }
            Some(&c) => {
                pattern.push(c);
                i += 1;
            }
        }
    }
    if let Some(&c) = chars.get(i) {
        if !c.is_whitespace() && c != ')' {
            return Err(RuleError::at(
                i + 1,
                format!("unexpected `{c}` after the regex"),
            ));
        }
    }
    Ok((canonical_regex(&pattern), i))
}

/// Replaces `\"` (an escaped quote, which means `"` to both engines) by `"`, so that every
/// pattern prints as `"..."` with its quotes escaped and reads back the same.
pub(crate) fn canonical_regex(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('"') => out.push('"'),
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}
