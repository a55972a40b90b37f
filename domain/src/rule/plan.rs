//! The compiler: one typed plan per rule, from which both the SQL ([`super::sql`]) and the
//! in-memory predicate ([`super::eval`]) are produced. Everything that can be prepared once
//! is prepared here: regexes, LIKE matchers, normalized MACs, parsed CIDRs, sorted lists.
//!
//! Each condition is a test `P` on one column with SQL's three-valued result: `P` is NULL
//! exactly when the value is missing (NULL). `!` then either skips missing values
//! (`NOT P`, SRQL's `<>`) or selects them (`P IS NOT TRUE`, SRQL's `IS NULL OR <>`).
//! Corral's `NOT` is `x IS NOT TRUE`, which makes every operator two-valued above the
//! conditions, so SQL and memory agree on every rule.

use std::fmt;

use uuid::Uuid;

use super::ast::{Body, Expr, Leaf, Op, Value};
use super::fields::{Field, Name, Scope, ValueKind};
use super::like::Like;
use super::predicate::Predicate;
use super::regex_subset::{self, CheckedRegex};
use super::text::leaf_text;
use super::values::{normalize_mac, parse_bool, parse_int, parse_version, IpOperand, TimeValue};
use super::{GroupTarget, GroupType, RuleError};

/// The compiled rule.
pub(crate) struct Plan {
    pub root: Node,
    pub leaves: Vec<CLeaf>,
    /// The normalized text of each leaf (for `explain`).
    pub texts: Vec<String>,
    /// `root` over `leaves`, specialised for evaluation in memory.
    pub predicate: Predicate,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plan({} conditions)", self.leaves.len())
    }
}

pub(crate) enum Node {
    /// All of them (`true` when empty).
    And(Vec<Node>),
    Or(Vec<Node>),
    /// `x IS NOT TRUE`.
    Not(Box<Node>),
    /// Index into `Plan::leaves`.
    Leaf(usize),
}

/// What `!` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Neg {
    /// No `!`: `P`.
    Pos,
    /// `NOT P`: a missing value is not selected.
    Skip,
    /// `P IS NOT TRUE`: a missing value is selected.
    Select,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapKind {
    Tags,
    Metadata,
}

impl MapKind {
    pub(crate) fn column(self) -> &'static str {
        match self {
            MapKind::Tags => "tags",
            MapKind::Metadata => "metadata",
        }
    }
}

/// The column a condition reads.
#[derive(Clone, Debug)]
pub(crate) enum Col {
    /// A text column (`Name::column()`).
    Text(Name),
    /// One key of `tags`/`metadata` (`->>`).
    Key(MapKind, String),
    /// The whole `tags`/`metadata` object.
    Map(MapKind),
    Sources,
    Available,
    Port,
    Time(Name),
    /// The entity's id for group membership.
    Membership,
}

pub(crate) enum Test {
    Eq(String),
    /// Sorted, deduplicated.
    In(Vec<String>),
    /// ILIKE: matcher and pattern.
    Like(Like, String),
    Regex(Box<CheckedRegex>),
    MacEq(String),
    MacIn(Vec<String>),
    MacLike(Like, String),
    /// Any of the operands.
    Ip(Vec<IpOperand>),
    Version(Op, Vec<String>),
    /// Any of the keys exists.
    HasKey(Vec<String>),
    ContainsAll(Vec<String>),
    Bools(Vec<bool>),
    Ints(Vec<i64>),
    IntCmp(Op, i64),
    TimeCmp(Op, TimeValue),
    Missing,
    Member {
        group: Option<Uuid>,
        direct: bool,
    },
}

/// A compiled condition.
pub(crate) struct CLeaf {
    pub scope: Scope,
    pub col: Col,
    pub test: Test,
    pub neg: Neg,
}

impl Plan {
    pub(crate) fn compile(expr: &Expr, kind: GroupType) -> Result<Plan, RuleError> {
        let mut plan = Plan {
            root: Node::And(Vec::new()),
            leaves: Vec::new(),
            texts: Vec::new(),
            predicate: Predicate::default(),
        };
        plan.root = plan.node(expr, kind)?;
        plan.predicate = Predicate::compile(&plan.root, &plan.leaves);
        Ok(plan)
    }

    fn node(&mut self, expr: &Expr, kind: GroupType) -> Result<Node, RuleError> {
        Ok(match expr {
            Expr::And(items) => Node::And(
                items
                    .iter()
                    .map(|e| self.node(e, kind))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Or(items) => Node::Or(
                items
                    .iter()
                    .map(|e| self.node(e, kind))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Not(e) => Node::Not(Box::new(self.node(e, kind)?)),
            Expr::Leaf(leaf) => {
                let compiled =
                    compile_leaf(leaf, kind).map_err(|m| RuleError::new(leaf.column.0, m))?;
                self.leaves.push(compiled);
                self.texts.push(leaf_text(leaf));
                Node::Leaf(self.leaves.len() - 1)
            }
        })
    }
}

fn column(field: &Field) -> Col {
    match &field.name {
        Name::Tag(k) => Col::Key(MapKind::Tags, k.clone()),
        Name::Meta(k) => Col::Key(MapKind::Metadata, k.clone()),
        Name::Tags => Col::Map(MapKind::Tags),
        Name::Metadata => Col::Map(MapKind::Metadata),
        Name::DiscoverySources => Col::Sources,
        Name::IsAvailable => Col::Available,
        Name::Port => Col::Port,
        Name::FirstSeen | Name::LastSeen => Col::Time(field.name.clone()),
        other => Col::Text(other.clone()),
    }
}

fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items.dedup();
    items
}

fn compile_leaf(leaf: &Leaf, kind: GroupType) -> Result<CLeaf, String> {
    let neg = |field: Option<&Field>| match (leaf.negated, field) {
        (false, _) => Neg::Pos,
        (true, Some(f)) if f.skip_nulls => Neg::Skip,
        (true, _) => Neg::Select,
    };
    let (field, op, value) = match &leaf.body {
        Body::Group { target, direct } => {
            let group = match target {
                GroupTarget::Id(id) => Some(*id),
                GroupTarget::Path(_) => None,
            };
            return Ok(CLeaf {
                scope: match kind {
                    GroupType::Device => Scope::Device,
                    GroupType::Service => Scope::Service,
                },
                col: Col::Membership,
                test: Test::Member {
                    group,
                    direct: *direct,
                },
                neg: neg(None),
            });
        }
        Body::Missing(field) => {
            return Ok(CLeaf {
                scope: field.scope,
                col: column(field),
                test: Test::Missing,
                neg: neg(None),
            })
        }
        Body::Test { field, op, value } => (field, *op, value),
    };
    let items = |value: &Value| -> Vec<String> {
        match value {
            Value::One(v) => vec![v.clone()],
            Value::List(items) => items.clone(),
        }
    };
    let scalar = match value {
        Value::One(v) => v.as_str(),
        Value::List(_) => "",
    };
    let mismatch = || format!("`{}` cannot be tested this way", field.display_name());
    let test = match (field.value_kind(), op) {
        (ValueKind::Text | ValueKind::Version | ValueKind::Ip, Op::Like) => {
            Test::Like(Like::compile(scalar, true)?, scalar.to_string())
        }
        (ValueKind::Text | ValueKind::Version | ValueKind::Ip, Op::Regex) => {
            Test::Regex(Box::new(regex_subset::compile(scalar)?))
        }
        (ValueKind::Text | ValueKind::Version, Op::Eq) => Test::Eq(scalar.to_string()),
        (ValueKind::Text | ValueKind::Version, Op::In) => Test::In(sorted(items(value))),
        (ValueKind::Version, op) if op.is_comparison() => {
            Test::Version(op, parse_version(scalar).ok_or_else(mismatch)?)
        }
        (ValueKind::Ip, Op::Eq | Op::In) => Test::Ip(
            items(value)
                .iter()
                .map(|v| IpOperand::parse(v))
                .collect::<Result<_, _>>()?,
        ),
        (ValueKind::Mac, Op::Eq) => Test::MacEq(normalize_mac(scalar, false)?),
        (ValueKind::Mac, Op::In) => Test::MacIn(sorted(
            items(value)
                .iter()
                .map(|v| normalize_mac(v, false))
                .collect::<Result<_, _>>()?,
        )),
        (ValueKind::Mac, Op::Like) => {
            let pattern = normalize_mac(scalar, true)?;
            Test::MacLike(Like::compile(&pattern, false)?, pattern)
        }
        (ValueKind::Keys, Op::Eq | Op::In) => Test::HasKey(sorted(items(value))),
        (ValueKind::Sources, Op::Eq | Op::In) => Test::ContainsAll(sorted(items(value))),
        (ValueKind::Bool, Op::Eq | Op::In) => {
            let mut bools: Vec<bool> = items(value)
                .iter()
                .map(|v| parse_bool(v).ok_or_else(mismatch))
                .collect::<Result<_, _>>()?;
            bools.sort();
            bools.dedup();
            Test::Bools(bools)
        }
        (ValueKind::Int, Op::Eq | Op::In) => {
            let mut ints: Vec<i64> = items(value)
                .iter()
                .map(|v| parse_int(v).ok_or_else(mismatch))
                .collect::<Result<_, _>>()?;
            ints.sort_unstable();
            ints.dedup();
            Test::Ints(ints)
        }
        (ValueKind::Int, op) if op.is_comparison() => {
            Test::IntCmp(op, parse_int(scalar).ok_or_else(mismatch)?)
        }
        (ValueKind::Time, op) if op.is_comparison() => Test::TimeCmp(op, TimeValue::parse(scalar)?),
        _ => return Err(mismatch()),
    };
    Ok(CLeaf {
        scope: field.scope,
        col: column(field),
        test,
        neg: neg(Some(field)),
    })
}
