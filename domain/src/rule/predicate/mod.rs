//! The specialised in-memory predicate behind [`Rule::matches`](super::Rule::matches): the
//! plan lowered once more, so that evaluating a condition is one match on what it reads and
//! one on what it tests, with nothing left to decide per entity.
//!
//! Lowered at compile time: the record a condition reads (one accessor per column; the
//! predicate is compiled once for devices and once for services with their host, so a
//! device rule never asks which record it has), what `!` does with TRUE, FALSE and NULL (a
//! three-entry table), ILIKE patterns made of an ASCII literal (a lower-cased needle
//! searched without allocating), CIDRs (network and mask as integers), constant conditions
//! (folded) and nested `AND`/`OR` (flattened). A device rule's top-level conjunction runs
//! inline where `Rule::matches` is called; heavy tests (patterns, regexes, lists, maps,
//! `group:`) are out of line, so that a conjunction of simple conditions stays a short run
//! of instructions.
//!
//! The plan's leaf-by-leaf evaluator ([`super::eval`]) stays the reference
//! ([`Rule::matches_reference`](super::Rule::matches_reference)); the two are compared over
//! generated rules and entities in the tests.
mod columns;
mod lower;
mod text;

use std::collections::BTreeMap;

use uuid::Uuid;

use super::ast::Op;
use super::plan::{CLeaf, Neg, Node};
use super::values::{floor_micros, TimeValue};
use super::{Entity, EvalContext};
use columns::{MapField, OfDevice, OfService, Subject, TextField, TimeField};
use lower::lower_leaf;
use text::{holds, short_eq, TextTest};

/// The compiled predicate.
pub(crate) struct Predicate {
    root: PNode,
}

enum PNode {
    Const(bool),
    Check(Check),
    /// A conjunction of conditions alone (the common rule), looped over without decoding
    /// a node per operand.
    AllChecks(Box<[Check]>),
    All(Box<[PNode]>),
    Any(Box<[PNode]>),
    /// The condition's result is two-valued here, so `NOT` is a plain negation.
    Not(Box<PNode>),
}

/// The condition's result for a TRUE, FALSE and NULL test (what `!` makes of each).
#[derive(Clone, Copy)]
struct Outcome {
    on_true: bool,
    on_false: bool,
    on_null: bool,
}

impl Outcome {
    fn of(neg: Neg) -> Self {
        let (on_true, on_false, on_null) = match neg {
            Neg::Pos => (true, false, false),
            Neg::Skip => (false, true, false),
            Neg::Select => (false, true, true),
        };
        Outcome {
            on_true,
            on_false,
            on_null,
        }
    }

    #[inline(always)]
    fn apply(self, value: Option<bool>) -> bool {
        match value {
            Some(true) => self.on_true,
            Some(false) => self.on_false,
            None => self.on_null,
        }
    }
}

/// One condition, specialised by the kind of column it reads.
enum Check {
    /// `Text` with `Eq`, the commonest condition.
    TextEq {
        field: TextField,
        value: Box<str>,
        on: Outcome,
    },
    Text {
        field: TextField,
        test: TextTest,
        on: Outcome,
    },
    Key {
        map: MapField,
        key: Box<str>,
        test: TextTest,
        on: Outcome,
    },
    /// Any of the keys exists (`tags:k`).
    HasKey {
        map: MapField,
        keys: Box<[String]>,
        on: Outcome,
    },
    /// The map is absent or empty.
    MapEmpty {
        map: MapField,
        on: Outcome,
    },
    /// `discovery_sources` holds all of them.
    Sources {
        all: Box<[String]>,
        on: Outcome,
    },
    SourcesEmpty {
        on: Outcome,
    },
    /// `is_available` (of the device, or of the host): missing, or one of the values.
    Available {
        test: BoolTest,
        on: Outcome,
    },
    Port {
        test: IntTest,
        on: Outcome,
    },
    Time {
        field: TimeField,
        test: TimeTest,
        on: Outcome,
    },
    Member {
        group: Uuid,
        direct: bool,
        on: Outcome,
    },
}

#[derive(Clone, Copy)]
enum BoolTest {
    Missing,
    Accept { on_true: bool, on_false: bool },
}

enum IntTest {
    Missing,
    In(Box<[i64]>),
    Cmp(Op, i64),
    Null,
}

enum TimeTest {
    Missing,
    Cmp(Op, TimeValue),
    Null,
}

impl Check {
    /// Conditions on the record and on text columns here, the others out of line.
    #[inline(always)]
    fn eval<'a>(&self, s: impl Subject<'a>, ctx: &EvalContext<'_>) -> bool {
        match self {
            Check::TextEq { field, value, on } => on.apply(
                field
                    .read(s)
                    .map(|t| short_eq(t.as_bytes(), value.as_bytes())),
            ),
            Check::Text { field, test, on } => on.apply(test.eval(field.read(s))),
            Check::Available { test, on } => {
                let value = s.device().and_then(|d| d.is_available);
                on.apply(match *test {
                    BoolTest::Missing => Some(value.is_none()),
                    BoolTest::Accept { on_true, on_false } => {
                        value.map(|v| if v { on_true } else { on_false })
                    }
                })
            }
            _ => self.eval_rest(s, ctx),
        }
    }

    #[inline(never)]
    fn eval_rest<'a>(&self, s: impl Subject<'a>, ctx: &EvalContext<'_>) -> bool {
        match self {
            Check::TextEq { field, value, on } => on.apply(
                field
                    .read(s)
                    .map(|t| short_eq(t.as_bytes(), value.as_bytes())),
            ),
            Check::Text { field, test, on } => on.apply(test.eval(field.read(s))),
            Check::Key { map, key, test, on } => {
                on.apply(test.eval(map.read(s).and_then(|m| m.get(&**key)).map(String::as_str)))
            }
            Check::HasKey { map, keys, on } => on.apply(Some(
                map.read(s)
                    .is_some_and(|m| keys.iter().any(|k| m.contains_key(k))),
            )),
            Check::MapEmpty { map, on } => {
                on.apply(Some(map.read(s).is_none_or(BTreeMap::is_empty)))
            }
            Check::Sources { all, on } => {
                let sources = s
                    .device()
                    .map_or(&[][..], |d| d.discovery_sources.as_slice());
                on.apply(Some(all.iter().all(|v| sources.contains(v))))
            }
            Check::SourcesEmpty { on } => on.apply(Some(
                s.device().is_none_or(|d| d.discovery_sources.is_empty()),
            )),
            Check::Available { test, on } => {
                let value = s.device().and_then(|d| d.is_available);
                on.apply(match *test {
                    BoolTest::Missing => Some(value.is_none()),
                    BoolTest::Accept { on_true, on_false } => {
                        value.map(|v| if v { on_true } else { on_false })
                    }
                })
            }
            Check::Port { test, on } => {
                let port = s.service().and_then(|s| s.port).map(i64::from);
                on.apply(match test {
                    IntTest::Missing => Some(port.is_none()),
                    IntTest::In(values) => port.map(|p| values.contains(&p)),
                    IntTest::Cmp(op, n) => port.map(|p| holds(*op, p.cmp(n))),
                    IntTest::Null => None,
                })
            }
            Check::Time { field, test, on } => {
                let time = field.read(s);
                on.apply(match test {
                    TimeTest::Missing => Some(time.is_none()),
                    TimeTest::Cmp(op, value) => {
                        time.map(|t| holds(*op, floor_micros(t).cmp(&value.at(ctx.now))))
                    }
                    TimeTest::Null => None,
                })
            }
            Check::Member { group, direct, on } => {
                on.apply(Some(ctx.groups.contains(*group, *direct, s.id())))
            }
        }
    }
}

impl PNode {
    /// `AND` (`all`) or `OR` of `items`: constants folded, nested groups of the same kind
    /// flattened. The operands keep the author's order: what a condition costs is mostly
    /// the cache lines it touches, which the order decides together with the data's layout
    /// (measured with `examples/rule_speed.rs` and cachegrind: testing `is_available` before
    /// `vendor` in the benchmark's rule added 0.8 D1 misses per device, as it reads another
    /// line of the record; swapping the operands of
    /// `hostname~"^core-" OR (site:site-0% missing:agent_id)` made it 25-30% slower in
    /// either evaluator).
    fn join(items: Vec<PNode>, all: bool) -> PNode {
        let mut flat = Vec::with_capacity(items.len());
        for item in items {
            match item {
                // `true` decides an OR, `false` an AND; the other value drops out.
                PNode::Const(b) if b == all => {}
                PNode::Const(b) => return PNode::Const(b),
                PNode::All(inner) if all => flat.extend(inner.into_vec()),
                PNode::AllChecks(inner) if all => {
                    flat.extend(inner.into_vec().into_iter().map(PNode::Check))
                }
                PNode::Any(inner) if !all => flat.extend(inner.into_vec()),
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => PNode::Const(all),
            1 => flat.pop().unwrap_or(PNode::Const(all)),
            _ if all && flat.iter().all(|n| matches!(n, PNode::Check(_))) => PNode::AllChecks(
                flat.into_iter()
                    .filter_map(|n| match n {
                        PNode::Check(c) => Some(c),
                        _ => None,
                    })
                    .collect(),
            ),
            _ if all => PNode::All(flat.into()),
            _ => PNode::Any(flat.into()),
        }
    }

    fn lower(node: &Node, leaves: &[CLeaf]) -> PNode {
        match node {
            Node::And(items) => PNode::join(
                items.iter().map(|n| PNode::lower(n, leaves)).collect(),
                true,
            ),
            Node::Or(items) => PNode::join(
                items.iter().map(|n| PNode::lower(n, leaves)).collect(),
                false,
            ),
            Node::Not(inner) => match PNode::lower(inner, leaves) {
                PNode::Const(b) => PNode::Const(!b),
                PNode::Not(inner) => *inner,
                other => PNode::Not(Box::new(other)),
            },
            Node::Leaf(i) => lower_leaf(&leaves[*i]),
        }
    }

    /// The root of a device rule, inlined where [`Rule::matches`](super::Rule::matches) is
    /// called: a conjunction's loop runs there, nested groups call [`PNode::eval`].
    #[inline(always)]
    fn eval_root<'a>(&self, s: impl Subject<'a>, ctx: &EvalContext<'_>) -> bool {
        match self {
            PNode::AllChecks(checks) => checks.iter().all(|c| c.eval(std::hint::black_box(s), ctx)),
            PNode::All(items) => {
                for item in items.iter() {
                    // Opaque per operand, as in `eval`.
                    let s = std::hint::black_box(s);
                    let ok = match item {
                        PNode::Check(c) => c.eval(s, ctx),
                        other => other.eval(s, ctx),
                    };
                    if !ok {
                        return false;
                    }
                }
                true
            }
            PNode::Check(c) => c.eval(s, ctx),
            PNode::Const(b) => *b,
            other => other.eval(s, ctx),
        }
    }

    #[inline(never)]
    fn eval<'a>(&self, s: impl Subject<'a>, ctx: &EvalContext<'_>) -> bool {
        match self {
            PNode::Check(c) => c.eval(s, ctx),
            // Opaque per operand, as below.
            PNode::AllChecks(checks) => checks.iter().all(|c| c.eval(std::hint::black_box(s), ctx)),
            PNode::All(items) => {
                for item in items.iter() {
                    // Opaque per operand: otherwise loop-invariant code motion loads every
                    // column the checks might read before the first check (cachegrind: 4
                    // more D1 misses per device on the benchmark's rule).
                    let s = std::hint::black_box(s);
                    let ok = match item {
                        PNode::Check(c) => c.eval(s, ctx),
                        other => other.eval(s, ctx),
                    };
                    if !ok {
                        return false;
                    }
                }
                true
            }
            PNode::Any(items) => {
                for item in items.iter() {
                    // Opaque per operand: otherwise loop-invariant code motion loads every
                    // column the checks might read before the first check (cachegrind: 4
                    // more D1 misses per device on the benchmark's rule).
                    let s = std::hint::black_box(s);
                    let ok = match item {
                        PNode::Check(c) => c.eval(s, ctx),
                        other => other.eval(s, ctx),
                    };
                    if ok {
                        return true;
                    }
                }
                false
            }
            PNode::Not(inner) => !inner.eval(s, ctx),
            PNode::Const(b) => *b,
        }
    }
}

/// The predicate of the empty rule (true for every entity).
impl Default for Predicate {
    fn default() -> Self {
        Predicate {
            root: PNode::Const(true),
        }
    }
}

impl Predicate {
    /// Lowers a plan's tree of conditions.
    pub(crate) fn compile(root: &Node, leaves: &[CLeaf]) -> Self {
        Predicate {
            root: PNode::lower(root, leaves),
        }
    }

    /// Whether `entity` (of the rule's kind) matches; equal to the plan's reference evaluation.
    #[inline]
    pub(crate) fn eval(&self, entity: Entity<'_>, ctx: &EvalContext<'_>) -> bool {
        match entity {
            Entity::Device(d) => self.root.eval_root(OfDevice(d), ctx),
            Entity::Service(service, host) => self.root.eval(OfService { service, host }, ctx),
        }
    }
}
