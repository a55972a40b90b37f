//! Whole-rule checks, the same for text and JSON: limits, contradictions (rejected) and
//! tautologies (accepted with a warning).

use std::collections::{BTreeSet, HashMap};

use super::ast::{Body, Context, Expr, Leaf, Op, Value};
use super::fields::{Name, Scope, ValueKind};
use super::text::leaf_text;
use super::values::{normalize_mac, IpOperand};
use super::{GroupType, RuleError, MAX_CONDITIONS, MAX_DEPTH};

pub(crate) fn validate(
    expr: &Expr,
    kind: GroupType,
    warnings: &mut Vec<String>,
) -> Result<(), RuleError> {
    let leaves = expr.leaves();
    if let Some(extra) = leaves.get(MAX_CONDITIONS) {
        return Err(RuleError::new(
            extra.column.0,
            format!("rules may have at most {MAX_CONDITIONS} conditions"),
        ));
    }
    if expr.printed_depth(Context::Top) > MAX_DEPTH {
        return Err(RuleError::new(
            None,
            format!("rules may nest parentheses and NOT at most {MAX_DEPTH} deep"),
        ));
    }
    contradictions(expr)?;
    let entities = match kind {
        GroupType::Device => "device",
        GroupType::Service => "service",
    };
    if leaves.is_empty() {
        warnings.push(format!(
            "the rule has no conditions: it selects every {entities}"
        ));
    } else if always_true(expr) {
        warnings.push(format!(
            "the rule is always true: it selects every {entities}"
        ));
    }
    Ok(())
}

/// Whether `a` is exactly the negation of `b` (two-valued, so `a OR b` is always true and
/// `a AND b` never is).
fn complementary(a: &Expr, b: &Expr) -> bool {
    match (a, b) {
        (Expr::Not(x), y) | (y, Expr::Not(x)) if **x == *y => true,
        (Expr::Leaf(x), Expr::Leaf(y)) => {
            x.negated != y.negated && x.body == y.body && two_valued(&x.body)
        }
        _ => false,
    }
}

fn two_valued(body: &Body) -> bool {
    match body {
        Body::Missing(_) | Body::Group { .. } => true,
        Body::Test { field, .. } => {
            matches!(field.value_kind(), ValueKind::Keys | ValueKind::Sources)
        }
    }
}

fn any_pair(items: &[Expr]) -> Option<(usize, usize)> {
    (0..items.len())
        .flat_map(|i| (i + 1..items.len()).map(move |j| (i, j)))
        .find(|&(i, j)| complementary(&items[i], &items[j]))
}

fn always_true(expr: &Expr) -> bool {
    match expr {
        Expr::And(items) => items.iter().all(always_true),
        Expr::Or(items) => items.iter().any(always_true) || any_pair(items).is_some(),
        Expr::Not(_) | Expr::Leaf(_) => false,
    }
}

fn first_column(expr: &Expr) -> Option<usize> {
    expr.leaves().first().and_then(|l| l.column.0)
}

/// Rejects an AND (anywhere in the rule) that can never hold: a condition with its own
/// negation, or `=`/list conditions on one single-valued field with no value in common.
fn contradictions(expr: &Expr) -> Result<(), RuleError> {
    match expr {
        Expr::Leaf(_) => Ok(()),
        Expr::Not(inner) => contradictions(inner),
        Expr::Or(items) => items.iter().try_for_each(contradictions),
        Expr::And(items) => {
            items.iter().try_for_each(contradictions)?;
            if let Some((_, j)) = any_pair(items) {
                return Err(RuleError::new(
                    first_column(&items[j]),
                    "this condition contradicts another one in the same AND: the rule could never match",
                ));
            }
            equality_conflicts(items)
        }
    }
}

type Key = (Scope, Name);

fn equality_conflicts(items: &[Expr]) -> Result<(), RuleError> {
    // Possible values per field, and the condition that first restricted it.
    let mut allowed: HashMap<Key, (BTreeSet<String>, String)> = HashMap::new();
    let leaves: Vec<&Leaf> = items
        .iter()
        .filter_map(|e| match e {
            Expr::Leaf(leaf) => Some(leaf),
            _ => None,
        })
        .collect();
    for leaf in leaves.iter().filter(|l| !l.negated) {
        let Some((key, values)) = equality_values(leaf) else {
            continue;
        };
        let text = leaf_text(leaf);
        match allowed.get_mut(&key) {
            None => {
                allowed.insert(key, (values, text));
            }
            Some((set, first)) => {
                set.retain(|v| values.contains(v));
                if set.is_empty() {
                    return Err(conflict(leaf, first, &text));
                }
            }
        }
    }
    for leaf in leaves.iter().filter(|l| l.negated) {
        let Some((key, values)) = equality_values(leaf) else {
            continue;
        };
        if let Some((set, first)) = allowed.get_mut(&key) {
            set.retain(|v| !values.contains(v));
            if set.is_empty() {
                return Err(conflict(leaf, first, &leaf_text(leaf)));
            }
        }
    }
    Ok(())
}

fn conflict(leaf: &Leaf, first: &str, text: &str) -> RuleError {
    RuleError::new(
        leaf.column.0,
        format!("`{first}` and `{text}` can never both hold, so the rule could never match"),
    )
}

/// The exact values an `=` or list condition allows on a single-valued field.
fn equality_values(leaf: &Leaf) -> Option<(Key, BTreeSet<String>)> {
    let Body::Test { field, op, value } = &leaf.body else {
        return None;
    };
    if !matches!(op, Op::Eq | Op::In) {
        return None;
    }
    let items: Vec<&String> = match value {
        Value::One(v) => vec![v],
        Value::List(items) => items.iter().collect(),
    };
    let mut set = BTreeSet::new();
    for item in items {
        let canonical = match field.value_kind() {
            ValueKind::Text | ValueKind::Version | ValueKind::Bool | ValueKind::Int => item.clone(),
            ValueKind::Mac => normalize_mac(item, false).ok()?,
            ValueKind::Ip => match IpOperand::parse(item).ok()? {
                IpOperand::Text(t) => t,
                _ => return None,
            },
            _ => return None,
        };
        set.insert(canonical);
    }
    Some(((field.scope, field.name.clone()), set))
}
