//! The grammar:
//!
//! ```text
//! rule      := expr                 ; in:devices / in:services anywhere at the top level, last wins
//! expr      := and_expr ('OR' and_expr)*
//! and_expr  := unary (['AND'] unary)*
//! unary     := ('NOT' | '-') unary | '(' expr ')' | term
//! term      := ['!'] field ':' value | field '~' quoted
//!            | ['!'] 'missing:' field | ['!'] 'group:' (uuid | path) [':direct']
//! ```
//!
//! This produces a syntax tree whose fields are not resolved yet: the entity (`in:`) may come
//! last, and it decides which fields exist.

use uuid::Uuid;

use super::ast::{Op, Value};
use super::check::{RawBody, RawLeaf};
use super::lexer::{self, Rhs, SrqlValue, Term, Tok, Token};
use super::{GroupTarget, GroupType, RuleError, MAX_CONDITIONS, MAX_DEPTH};

/// A parsed, unresolved expression.
pub(crate) enum RawExpr {
    And(Vec<RawExpr>),
    Or(Vec<RawExpr>),
    Not(Box<RawExpr>),
    Leaf(RawLeaf),
}

pub(crate) struct Syntax {
    /// `None` for a rule without conditions.
    pub expr: Option<RawExpr>,
    /// The last `in:`.
    pub kind: Option<GroupType>,
}

pub(crate) fn parse_syntax(text: &str) -> Result<Syntax, RuleError> {
    let mut parser = Parser {
        tokens: lexer::lex(text)?,
        pos: 0,
        kind: None,
        conditions: 0,
        end_column: text.chars().count() + 1,
    };
    let expr = parser.parse_or(0)?;
    if let Some(token) = parser.tokens.get(parser.pos) {
        return Err(RuleError::at(token.column, "unbalanced `)`"));
    }
    Ok(Syntax {
        expr,
        kind: parser.kind,
    })
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    kind: Option<GroupType>,
    conditions: usize,
    end_column: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn column(&self) -> usize {
        self.peek().map_or(self.end_column, |t| t.column)
    }

    fn is_in(token: &Token) -> bool {
        matches!(&token.tok, Tok::Term(t) if t.field.eq_ignore_ascii_case("in"))
    }

    fn parse_or(&mut self, depth: usize) -> Result<Option<RawExpr>, RuleError> {
        let first = self.parse_and(depth)?;
        if !matches!(self.peek(), Some(Token { tok: Tok::Or, .. })) {
            return Ok((!first.is_empty()).then_some(RawExpr::And(first)));
        }
        if first.is_empty() {
            return Err(RuleError::at(
                self.column(),
                "OR needs a condition on its left",
            ));
        }
        let mut alternatives = vec![RawExpr::And(first)];
        while let Some(Token {
            tok: Tok::Or,
            column,
        }) = self.peek()
        {
            let column = *column;
            self.pos += 1;
            let next = self.parse_and(depth)?;
            if next.is_empty() {
                return Err(RuleError::at(column, "OR needs a condition on its right"));
            }
            alternatives.push(RawExpr::And(next));
        }
        Ok(Some(RawExpr::Or(alternatives)))
    }

    fn parse_and(&mut self, depth: usize) -> Result<Vec<RawExpr>, RuleError> {
        let mut items = Vec::new();
        while let Some(token) = self.peek() {
            match &token.tok {
                Tok::RParen | Tok::Or => break,
                Tok::And => {
                    let column = token.column;
                    self.pos += 1;
                    let operand = self.peek().is_some_and(|t| {
                        matches!(t.tok, Tok::Term(_) | Tok::LParen | Tok::Not) && !Self::is_in(t)
                    });
                    if items.is_empty() || !operand {
                        return Err(RuleError::at(column, "AND needs a condition on each side"));
                    }
                }
                Tok::Term(term) if term.field.eq_ignore_ascii_case("in") => {
                    let column = token.column;
                    if depth > 0 || term.bang {
                        return Err(RuleError::at(
                            column,
                            "`in:` chooses the entity for the whole rule; it cannot be negated or inside parentheses",
                        ));
                    }
                    self.kind = Some(entity(term)?);
                    self.pos += 1;
                }
                _ => items.push(self.parse_unary(depth)?),
            }
        }
        Ok(items)
    }

    fn parse_unary(&mut self, depth: usize) -> Result<RawExpr, RuleError> {
        let column = self.column();
        let Some(token) = self.tokens.get_mut(self.pos) else {
            return Err(RuleError::at(
                column,
                "expected a condition at the end of the rule",
            ));
        };
        match &mut token.tok {
            Tok::Not | Tok::LParen if depth >= MAX_DEPTH => Err(RuleError::at(
                column,
                format!("rules may nest parentheses and NOT at most {MAX_DEPTH} deep"),
            )),
            Tok::Not => {
                self.pos += 1;
                if self.peek().is_some_and(Self::is_in) {
                    return Err(RuleError::at(self.column(), "`in:` cannot be negated"));
                }
                Ok(RawExpr::Not(Box::new(self.parse_unary(depth + 1)?)))
            }
            Tok::LParen => {
                self.pos += 1;
                let inner = self.parse_or(depth + 1)?;
                if !matches!(
                    self.peek(),
                    Some(Token {
                        tok: Tok::RParen,
                        ..
                    })
                ) {
                    return Err(RuleError::at(column, "unbalanced `(`"));
                }
                self.pos += 1;
                inner.ok_or_else(|| RuleError::at(column, "empty parentheses"))
            }
            Tok::Term(term) => {
                self.conditions += 1;
                if self.conditions > MAX_CONDITIONS {
                    return Err(RuleError::at(
                        column,
                        format!("rules may have at most {MAX_CONDITIONS} conditions"),
                    ));
                }
                let term = std::mem::replace(
                    term,
                    Term {
                        bang: false,
                        field: String::new(),
                        field_column: 0,
                        rhs: Rhs::Regex(String::new()),
                        rhs_column: 0,
                    },
                );
                self.pos += 1;
                Ok(RawExpr::Leaf(leaf(term, column)?))
            }
            Tok::RParen => Err(RuleError::at(column, "expected a condition, found `)`")),
            Tok::Or => Err(RuleError::at(column, "expected a condition, found OR")),
            Tok::And => Err(RuleError::at(column, "expected a condition, found AND")),
        }
    }
}

fn entity(term: &Term) -> Result<GroupType, RuleError> {
    let name = match &term.rhs {
        Rhs::Value {
            value: SrqlValue::Scalar(v),
            ..
        } => v.to_lowercase(),
        _ => String::new(),
    };
    match name.as_str() {
        "devices" | "device" | "device_inventory" => Ok(GroupType::Device),
        "services" | "service" => Ok(GroupType::Service),
        _ => Err(RuleError::at(
            term.rhs_column,
            "a rule selects devices or services: write in:devices or in:services",
        )),
    }
}

fn leaf(term: Term, column: usize) -> Result<RawLeaf, RuleError> {
    let lower = term.field.to_lowercase();
    let body = match (lower.as_str(), term.rhs) {
        ("missing", Rhs::Value { value, .. }) => match value {
            SrqlValue::Scalar(field) if !field.is_empty() => RawBody::Missing {
                field,
                field_column: Some(term.rhs_column),
            },
            _ => {
                return Err(RuleError::at(
                    term.rhs_column,
                    "write missing:<field>, as in missing:hostname",
                ))
            }
        },
        ("group", Rhs::Value { raw, .. }) => {
            let (target, direct) =
                group_target(&raw).map_err(|message| RuleError::at(term.rhs_column, message))?;
            RawBody::Group { target, direct }
        }
        ("missing" | "group" | "in", Rhs::Regex(_)) => {
            return Err(RuleError::at(
                term.field_column,
                format!("`{}` takes `:`", term.field),
            ))
        }
        (_, Rhs::Value { value, .. }) => {
            let (op, value) = match value {
                SrqlValue::Scalar(v) => {
                    let (op, rest) = Op::of_scalar(&v);
                    (op, Value::One(rest.to_string()))
                }
                SrqlValue::List(items) => (Op::In, Value::List(items)),
            };
            RawBody::Test {
                field: term.field,
                field_column: Some(term.field_column),
                op,
                value,
                value_column: Some(term.rhs_column),
            }
        }
        (_, Rhs::Regex(pattern)) => RawBody::Test {
            field: term.field,
            field_column: Some(term.field_column),
            op: Op::Regex,
            value: Value::One(pattern),
            value_column: Some(term.rhs_column),
        },
    };
    Ok(RawLeaf {
        negated: term.bang,
        column: Some(column),
        body,
    })
}

/// `uuid`, `path`, `"quoted path"`, each with an optional `:direct`.
fn group_target(raw: &str) -> Result<(GroupTarget, bool), String> {
    let usage = "write group:<uuid>, group:<path> or group:\"<path with spaces>\", optionally followed by :direct";
    let mut chars = raw.chars();
    let (path, rest) = match chars.next() {
        Some(q @ ('"' | '\'')) => {
            let mut path = String::new();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\\' {
                    path.extend(chars.next());
                } else if c == q {
                    closed = true;
                    break;
                } else {
                    path.push(c);
                }
            }
            if !closed {
                return Err(usage.into());
            }
            let rest: String = chars.collect();
            (GroupTarget::Path(path), rest)
        }
        Some(_) => {
            let lower = raw.to_ascii_lowercase();
            let (body, rest) = match lower.strip_suffix(":direct") {
                Some(_) => raw.split_at(raw.len() - ":direct".len()),
                None => (raw, ""),
            };
            let target = match Uuid::try_parse(body) {
                Ok(id) => GroupTarget::Id(id),
                Err(_) => GroupTarget::Path(body.to_string()),
            };
            (target, rest.to_string())
        }
        None => return Err(usage.into()),
    };
    let direct = match rest.to_ascii_lowercase().as_str() {
        "" => false,
        ":direct" => true,
        _ => return Err(usage.into()),
    };
    if matches!(&path, GroupTarget::Path(p) if p.is_empty()) {
        return Err(usage.into());
    }
    Ok((path, direct))
}
