//! The saved form: `{"version": 1, "kind": "DEVICE", "expr": ...}` where `expr` is
//! `{"and": [..]}`, `{"or": [..]}`, `{"not": ..}` or a condition:
//!
//! ```json
//! {"field": "hostname", "op": "like", "value": "web%"}
//! {"field": "vendor_name", "op": "eq", "value": "Cisco", "negated": true}
//! {"field": "ip", "op": "in", "value": ["10.0.0.0/8", "192.168.1.1"]}
//! {"field": "last_seen", "op": "gte", "value": "now-7d"}
//! {"field": "hostname", "op": "regex", "value": "^web-[0-9]+$"}
//! {"op": "missing", "field": "tags.env"}
//! {"op": "group", "group_id": "0b6d..", "direct": true}
//! {"op": "group", "group_path": "Inventory/Site A"}
//! ```
//!
//! `field` is the name as printed, whose alias carries the meaning of `!` for missing values
//! (`vendor_name` skips them, `vendor` selects them). `from_json` runs every check that
//! `parse` runs.

use serde_json::{json, Map, Value as Json};
use uuid::Uuid;

use super::ast::{Body, Expr, Leaf, Op, Value};
use super::check::{check_leaf, RawBody, RawLeaf};
use super::{GroupTarget, GroupType, RuleError, RULE_FORMAT_VERSION};

/// JSON nesting accepted before canonicalization (the printed depth is checked after).
const MAX_JSON_DEPTH: usize = 32;

pub(crate) fn to_json(kind: GroupType, expr: &Expr) -> Json {
    json!({
        "version": RULE_FORMAT_VERSION,
        "kind": kind.as_str(),
        "expr": expr_json(expr),
    })
}

fn expr_json(expr: &Expr) -> Json {
    match expr {
        Expr::And(items) => json!({ "and": items.iter().map(expr_json).collect::<Vec<_>>() }),
        Expr::Or(items) => json!({ "or": items.iter().map(expr_json).collect::<Vec<_>>() }),
        Expr::Not(inner) => json!({ "not": expr_json(inner) }),
        Expr::Leaf(leaf) => leaf_json(leaf),
    }
}

fn leaf_json(leaf: &Leaf) -> Json {
    let mut out = Map::new();
    match &leaf.body {
        Body::Test { field, op, value } => {
            out.insert("field".into(), json!(field.display_name()));
            out.insert("op".into(), json!(op.name()));
            out.insert(
                "value".into(),
                match value {
                    Value::One(v) => json!(v),
                    Value::List(items) => json!(items),
                },
            );
        }
        Body::Missing(field) => {
            out.insert("op".into(), json!("missing"));
            out.insert("field".into(), json!(field.display_name()));
        }
        Body::Group { target, direct } => {
            out.insert("op".into(), json!("group"));
            match target {
                GroupTarget::Id(id) => out.insert("group_id".into(), json!(id.to_string())),
                GroupTarget::Path(path) => out.insert("group_path".into(), json!(path)),
            };
            if *direct {
                out.insert("direct".into(), json!(true));
            }
        }
    }
    if leaf.negated {
        out.insert("negated".into(), json!(true));
    }
    Json::Object(out)
}

fn bad(message: impl Into<String>) -> RuleError {
    RuleError::new(None, message)
}

/// The kind and the canonical expression of a JSON rule (leaves checked).
pub(crate) fn from_json(
    value: &Json,
    warnings: &mut Vec<String>,
) -> Result<(GroupType, Expr), RuleError> {
    let obj = value
        .as_object()
        .ok_or_else(|| bad("a rule must be a JSON object"))?;
    for key in obj.keys() {
        if !matches!(key.as_str(), "version" | "kind" | "expr") {
            return Err(bad(format!("unknown key `{key}` in rule")));
        }
    }
    match obj.get("version").and_then(Json::as_u64) {
        Some(v) if v == u64::from(RULE_FORMAT_VERSION) => {}
        _ => {
            return Err(bad(format!(
                "unsupported rule version (this Corral reads version {RULE_FORMAT_VERSION})"
            )))
        }
    }
    let kind = obj
        .get("kind")
        .and_then(Json::as_str)
        .and_then(GroupType::parse)
        .ok_or_else(|| bad("`kind` must be \"DEVICE\" or \"SERVICE\""))?;
    let expr = obj.get("expr").ok_or_else(|| bad("missing `expr`"))?;
    // The root may be an empty AND: a rule without conditions.
    if let Some(items) = expr.get("and").and_then(Json::as_array) {
        if items.is_empty() && expr.as_object().is_some_and(|o| o.len() == 1) {
            return Ok((kind, Expr::And(Vec::new())));
        }
    }
    Ok((kind, node(expr, kind, 0, warnings)?))
}

fn node(
    value: &Json,
    kind: GroupType,
    depth: usize,
    warnings: &mut Vec<String>,
) -> Result<Expr, RuleError> {
    if depth > MAX_JSON_DEPTH {
        return Err(bad("rule is nested too deeply"));
    }
    let obj = value
        .as_object()
        .ok_or_else(|| bad("every rule node must be a JSON object"))?;
    for (name, join) in [("and", true), ("or", false)] {
        if let Some(items) = obj.get(name) {
            if obj.len() != 1 {
                return Err(bad(format!("`{name}` nodes have no other keys")));
            }
            let items = items
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| bad(format!("`{name}` takes a non-empty array")))?;
            let items = items
                .iter()
                .map(|i| node(i, kind, depth + 1, warnings))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if join {
                Expr::and(items)
            } else {
                Expr::or(items)
            });
        }
    }
    if let Some(inner) = obj.get("not") {
        if obj.len() != 1 {
            return Err(bad("`not` nodes have no other keys"));
        }
        return Ok(Expr::not(node(inner, kind, depth + 1, warnings)?));
    }
    Ok(Expr::Leaf(check_leaf(raw_leaf(obj)?, kind, warnings)?))
}

fn string<'a>(obj: &'a Map<String, Json>, key: &str) -> Result<&'a str, RuleError> {
    obj.get(key)
        .and_then(Json::as_str)
        .ok_or_else(|| bad(format!("condition needs a string `{key}`")))
}

fn flag(obj: &Map<String, Json>, key: &str) -> Result<bool, RuleError> {
    match obj.get(key) {
        None => Ok(false),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| bad(format!("`{key}` must be true or false"))),
    }
}

fn raw_leaf(obj: &Map<String, Json>) -> Result<RawLeaf, RuleError> {
    let op = string(obj, "op")?;
    let allowed: &[&str] = match op {
        "missing" => &["op", "field", "negated"],
        "group" => &["op", "group_id", "group_path", "direct", "negated"],
        _ => &["op", "field", "value", "negated"],
    };
    if let Some(key) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!("unknown key `{key}` in a `{op}` condition")));
    }
    let negated = flag(obj, "negated")?;
    let body = match op {
        "missing" => RawBody::Missing {
            field: string(obj, "field")?.to_string(),
            field_column: None,
        },
        "group" => {
            let target = match (obj.get("group_id"), obj.get("group_path")) {
                (Some(id), None) => GroupTarget::Id(
                    id.as_str()
                        .and_then(|s| Uuid::try_parse(s).ok())
                        .ok_or_else(|| bad("`group_id` must be a UUID"))?,
                ),
                (None, Some(path)) => GroupTarget::Path(
                    path.as_str()
                        .ok_or_else(|| bad("`group_path` must be a string"))?
                        .to_string(),
                ),
                _ => return Err(bad("a group condition needs `group_id` or `group_path`")),
            };
            RawBody::Group {
                target,
                direct: flag(obj, "direct")?,
            }
        }
        name => {
            let op =
                Op::from_name(name).ok_or_else(|| bad(format!("unknown operator `{name}`")))?;
            let value = match (op, obj.get("value")) {
                (Op::In, Some(Json::Array(items))) => Value::List(
                    items
                        .iter()
                        .map(|i| {
                            i.as_str()
                                .map(str::to_string)
                                .ok_or_else(|| bad("list items must be strings"))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                (Op::In, _) => return Err(bad("`in` takes an array of strings")),
                (_, Some(Json::String(s))) => Value::One(s.clone()),
                _ => return Err(bad(format!("`{name}` takes a string value"))),
            };
            if let Value::One(v) = &value {
                let text = format!("{}{v}", op.prefix());
                let read = Op::of_scalar(&text).0;
                if op != Op::Regex && read != op {
                    return Err(bad(format!(
                        "value `{v}` would read as `{}` in rule text",
                        read.name()
                    )));
                }
            }
            let value = match (op, value) {
                (Op::Regex, Value::One(p)) => Value::One(super::lexer::canonical_regex(&p)),
                (_, value) => value,
            };
            RawBody::Test {
                field: string(obj, "field")?.to_string(),
                field_column: None,
                op,
                value,
                value_column: None,
            }
        }
    };
    Ok(RawLeaf {
        negated,
        column: None,
        body,
    })
}
