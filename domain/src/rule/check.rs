//! Type checking: turns a parsed (or JSON) condition into a canonical AST leaf, or rejects
//! it. Text and JSON go through this same function.

use super::ast::{Body, Column, Leaf, Op, Value};
use super::fields::{Field, Name, ValueKind};
use super::like::Like;
use super::values::{normalize_mac, parse_bool, parse_int, parse_version, IpOperand, TimeValue};
use super::{regex_subset, GroupTarget, GroupType, RuleError, MAX_LIST_ITEMS};

/// A condition before its field is resolved.
#[derive(Debug)]
pub(crate) struct RawLeaf {
    pub negated: bool,
    pub column: Option<usize>,
    pub body: RawBody,
}

#[derive(Debug)]
pub(crate) enum RawBody {
    Test {
        field: String,
        field_column: Option<usize>,
        op: Op,
        value: Value,
        value_column: Option<usize>,
    },
    Missing {
        field: String,
        field_column: Option<usize>,
    },
    Group {
        target: GroupTarget,
        direct: bool,
    },
}

/// Resolves and checks one condition for a rule of `kind`.
pub(crate) fn check_leaf(
    raw: RawLeaf,
    kind: GroupType,
    warnings: &mut Vec<String>,
) -> Result<Leaf, RuleError> {
    let body = match raw.body {
        RawBody::Group { target, direct } => {
            if let GroupTarget::Path(path) = &target {
                if path.is_empty() || path.contains('\0') {
                    return Err(RuleError::new(raw.column, "invalid group path"));
                }
            }
            Body::Group { target, direct }
        }
        RawBody::Missing {
            field,
            field_column,
        } => {
            let field = Field::resolve(&field, kind)
                .map_err(|m| RuleError::new(field_column, m))?
                .canonical();
            Body::Missing(field)
        }
        RawBody::Test {
            field,
            field_column,
            op,
            value,
            value_column,
        } => {
            let mut field =
                Field::resolve(&field, kind).map_err(|m| RuleError::new(field_column, m))?;
            if !raw.negated {
                field = field.canonical();
            }
            if raw.negated && op.is_comparison() {
                return Err(RuleError::new(
                    raw.column,
                    "`!` cannot be combined with a comparison (SRQL would ignore the `!`); write NOT field:>value",
                ));
            }
            if raw.negated && op == Op::Regex {
                return Err(RuleError::new(
                    raw.column,
                    "`!` cannot negate a regex; write NOT field~\"...\"",
                ));
            }
            let value = check_value(&field, raw.negated, op, value, warnings)
                .map_err(|m| RuleError::new(value_column, m))?;
            if matches!(field.value_kind(), ValueKind::Keys | ValueKind::Sources) {
                // Two-valued tests: `!` means the same under every alias.
                field = field.canonical();
            }
            Body::Test { field, op, value }
        }
    };
    Ok(Leaf {
        negated: raw.negated,
        body,
        column: Column(raw.column),
    })
}

fn check_value(
    field: &Field,
    negated: bool,
    op: Op,
    value: Value,
    warnings: &mut Vec<String>,
) -> Result<Value, String> {
    let kind = field.value_kind();
    let name = field.display_name();
    if kind == ValueKind::Object {
        return Err(format!(
            "`{name}` can only be tested with missing:{name}; write metadata.<key>:value"
        ));
    }
    match value {
        Value::One(v) => {
            check_scalar(&v, op, &name)?;
            Ok(Value::One(check_scalar_op(
                &name, kind, negated, op, v, warnings,
            )?))
        }
        Value::List(items) => {
            if op != Op::In {
                return Err("a list needs `field:(a,b)`".into());
            }
            if items.is_empty() {
                return Err("empty list (SRQL would apply no filter at all)".into());
            }
            if items.len() > MAX_LIST_ITEMS {
                return Err(format!("lists may have at most {MAX_LIST_ITEMS} items"));
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                check_item(&item, field)?;
                out.push(check_item_value(&name, kind, item, warnings)?);
            }
            Ok(Value::List(out))
        }
    }
}

fn check_scalar(v: &str, op: Op, name: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("empty value (use missing:<field> for entities without one)".into());
    }
    if v.contains('\0') {
        return Err("values may not contain NUL characters".into());
    }
    if op == Op::Regex {
        return Ok(());
    }
    if let Some(rest) = v.strip_prefix('~') {
        return Err(format!(
            "`{name}:{v}` is not a regex (SRQL compares it with the literal text); write {name}~\"{}\"",
            rest.trim_matches('"')
        ));
    }
    let edge = |c: Option<char>| matches!(c, Some('"' | '\''));
    if edge(v.chars().next()) || edge(v.chars().last()) {
        return Err("unbalanced quotes around the value".into());
    }
    Ok(())
}

fn check_item(item: &str, field: &Field) -> Result<(), String> {
    if item.is_empty() {
        return Err("empty list item".into());
    }
    if item
        .chars()
        .any(|c| matches!(c, '"' | '\'' | '`' | '\\' | '\0'))
    {
        return Err("list items may not contain quotes or backslashes".into());
    }
    if item.starts_with('~') {
        return Err("`~` starts a regex only as field~\"...\"".into());
    }
    if item.contains('%') && field.name != Name::Id {
        return Err(
            "lists compare exactly: `%` is not a wildcard in a list; write hostname:a% OR hostname:b%"
                .into(),
        );
    }
    Ok(())
}

fn null_warning(name: &str, v: &str, warnings: &mut Vec<String>) {
    if v.eq_ignore_ascii_case("null") {
        warnings.push(format!(
            "`{name}:{v}` matches the text \"{v}\", as in SRQL; use missing:{name} for entities without a value"
        ));
    }
}

fn key_warning(key: &str, warnings: &mut Vec<String>) {
    if key.chars().any(char::is_uppercase) {
        warnings.push(format!(
            "tag keys are stored lower-case, so `tags:{key}` matches nothing; write tags:{}",
            key.to_lowercase()
        ));
    }
}

fn check_scalar_op(
    name: &str,
    kind: ValueKind,
    negated: bool,
    op: Op,
    v: String,
    warnings: &mut Vec<String>,
) -> Result<String, String> {
    use ValueKind as K;
    let no = |what: &str| Err(format!("`{name}` does not support {what}"));
    match (op, kind) {
        (Op::Regex, K::Text | K::Version | K::Ip) => {
            regex_subset::compile(&v)?;
            Ok(v)
        }
        (Op::Regex, _) => no("regexes (`~`)"),
        (Op::Gt | Op::Gte | Op::Lt | Op::Lte, K::Version) => match parse_version(&v) {
            Some(_) => Ok(v),
            None => Err(format!("`{v}` is not a version: write digits and dots, as in 12.4.1")),
        },
        (Op::Gt | Op::Gte | Op::Lt | Op::Lte, K::Int) => parse_int(&v)
            .map(|n| n.to_string())
            .ok_or_else(|| format!("`{v}` is not an integer")),
        (Op::Gt | Op::Gte | Op::Lt | Op::Lte, K::Time) => TimeValue::parse(&v).map(TimeValue::to_text),
        (Op::Gt | Op::Gte | Op::Lt | Op::Lte, _) => {
            no("comparisons (it is compared as text: use `:`, `%` or `~`)")
        }
        (_, K::Time) => Err(format!(
            "`{name}` is a time: compare it, as in {name}:>=now-7d or {name}:<2024-01-01"
        )),
        (Op::Like, K::Text | K::Version | K::Ip) => {
            Like::compile(&v, true)?;
            Ok(v)
        }
        (Op::Like, K::Mac) => {
            normalize_mac(&v, true)?;
            Ok(v)
        }
        (Op::Like, K::Keys) => no("`%` (SRQL rejects it too); tags:k tests whether key k exists"),
        (Op::Like, K::Sources) => no("`%` (SRQL would look for the literal text)"),
        (Op::Like, _) => no("`%`"),
        (_, K::Text | K::Version) => {
            null_warning(name, &v, warnings);
            Ok(v)
        }
        (_, K::Ip) => {
            let operand = IpOperand::parse(&v)?;
            null_warning(name, &v, warnings);
            Ok(operand.to_text())
        }
        (_, K::Mac) => {
            normalize_mac(&v, false)?;
            Ok(v)
        }
        (_, K::Keys) => {
            if let Some((k, val)) = v.split_once('=') {
                return Err(format!(
                    "SRQL reads `tags:{v}` as a key named \"{v}\"; for the value of tag {k} write tags.{k}:{val}"
                ));
            }
            key_warning(&v, warnings);
            Ok(v)
        }
        (_, K::Sources) if negated => Err(
            "SRQL reads `!discovery_sources:x` as \"contains x\" on the device list; write NOT discovery_sources:x or !discovery_sources:(x)".into(),
        ),
        (_, K::Sources) => Ok(v),
        (_, K::Bool) => parse_bool(&v)
            .map(|b| b.to_string())
            .ok_or_else(|| format!("`{v}` is not a boolean: write true, false, yes, no, 1 or 0")),
        (_, K::Int) => parse_int(&v)
            .map(|n| n.to_string())
            .ok_or_else(|| format!("`{v}` is not an integer")),
        (_, K::Object) => no("values"),
    }
}

fn check_item_value(
    name: &str,
    kind: ValueKind,
    item: String,
    warnings: &mut Vec<String>,
) -> Result<String, String> {
    match kind {
        ValueKind::Time => Err(format!(
            "`{name}` is a time: compare it, as in {name}:>=now-7d"
        )),
        ValueKind::Ip => Ok(IpOperand::parse(&item)?.to_text()),
        ValueKind::Mac => {
            normalize_mac(&item, false)?;
            Ok(item)
        }
        ValueKind::Bool => parse_bool(&item)
            .map(|b| b.to_string())
            .ok_or_else(|| format!("`{item}` is not a boolean")),
        ValueKind::Int => parse_int(&item)
            .map(|n| n.to_string())
            .ok_or_else(|| format!("`{item}` is not an integer")),
        ValueKind::Keys => {
            if item.contains('=') {
                return Err(format!(
                    "SRQL reads `{item}` as a key name; use tags.<key>:<value> for a tag's value"
                ));
            }
            key_warning(&item, warnings);
            Ok(item)
        }
        ValueKind::Text | ValueKind::Version | ValueKind::Sources => Ok(item),
        ValueKind::Object => Err(format!("`{name}` takes no values")),
    }
}
