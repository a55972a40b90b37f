//! The normalized text of a rule. It always re-parses to the same AST: values are quoted
//! exactly when SRQL's tokenizer needs it, and parentheses appear only where precedence
//! requires them (juxtaposition, i.e. AND, binds tighter than OR).

use std::fmt::Write as _;

use super::ast::{Body, Context, Expr, Leaf, Value};
use super::{GroupTarget, GroupType};

/// `in:devices ...` / `in:services ...`.
pub(crate) fn rule_text(kind: GroupType, expr: &Expr) -> String {
    let mut out = String::from(match kind {
        GroupType::Device => "in:devices",
        GroupType::Service => "in:services",
    });
    if !matches!(expr, Expr::And(items) if items.is_empty()) {
        out.push(' ');
        write_expr(expr, Context::Top, &mut out);
    }
    out
}

fn write_expr(expr: &Expr, ctx: Context, out: &mut String) {
    match expr {
        Expr::Leaf(leaf) => out.push_str(&leaf_text(leaf)),
        Expr::Not(inner) => {
            out.push_str("NOT ");
            write_expr(inner, Context::Not, out);
        }
        Expr::And(items) | Expr::Or(items) => {
            let and = matches!(expr, Expr::And(_));
            let parens = ctx == Context::Not || (!and && ctx == Context::And);
            if parens {
                out.push('(');
            }
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(if and { " " } else { " OR " });
                }
                write_expr(item, if and { Context::And } else { Context::Or }, out);
            }
            if parens {
                out.push(')');
            }
        }
    }
}

/// The normalized text of one condition.
pub(crate) fn leaf_text(leaf: &Leaf) -> String {
    let mut out = String::new();
    if leaf.negated {
        out.push('!');
    }
    match &leaf.body {
        Body::Test { field, op, value } => {
            out.push_str(&field.display_name());
            match (op, value) {
                (super::ast::Op::Regex, Value::One(pattern)) => {
                    out.push_str("~\"");
                    out.push_str(&pattern.replace('"', "\\\""));
                    out.push('"');
                }
                (_, Value::One(v)) => {
                    out.push(':');
                    out.push_str(op.prefix());
                    push_scalar(v, &mut out);
                }
                (_, Value::List(items)) => {
                    out.push_str(":(");
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        if item.chars().all(|c| safe(c) && c != ',') && !item.is_empty() {
                            out.push_str(item);
                        } else {
                            let _ = write!(out, "\"{item}\"");
                        }
                    }
                    out.push(')');
                }
            }
        }
        Body::Missing(field) => {
            out.push_str("missing:");
            out.push_str(&field.display_name());
        }
        Body::Group { target, direct } => {
            out.push_str("group:");
            match target {
                GroupTarget::Id(id) => {
                    let _ = write!(out, "{id}");
                }
                GroupTarget::Path(path) => push_quoted(path, &mut out),
            }
            if *direct {
                out.push_str(":direct");
            }
        }
    }
    out
}

/// Characters a value may hold without quotes.
fn safe(c: char) -> bool {
    !c.is_whitespace()
        && !c.is_control()
        && !matches!(c, '"' | '\'' | '`' | '\\' | '(' | ')' | '[' | ']')
}

fn push_scalar(v: &str, out: &mut String) {
    if !v.is_empty() && v.chars().all(safe) {
        out.push_str(v);
    } else {
        push_quoted(v, out);
    }
}

/// `"..."` with `\` and `"` escaped, which SRQL's tokenizer reads back.
fn push_quoted(v: &str, out: &mut String) {
    out.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}
