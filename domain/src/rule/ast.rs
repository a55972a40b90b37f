//! The rule AST: what is saved (as JSON), compared and printed. It is always canonical:
//! `AND`/`OR` are flattened, single-child groups and double negations removed, values in
//! their canonical spelling. Columns are carried for error messages but ignored by `==`.

use super::fields::Field;
use super::GroupTarget;

/// A boolean expression over conditions. The root of an empty rule is `And([])`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Leaf(Leaf),
}

/// A 1-based column in the rule text; equal to every other column.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Column(pub Option<usize>);

impl PartialEq for Column {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// One condition, with SRQL's `!` when `negated`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Leaf {
    pub negated: bool,
    pub body: Body,
    pub column: Column,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Body {
    /// `field:value`, `field:>value`, `field~"regex"`.
    Test { field: Field, op: Op, value: Value },
    /// `missing:field`.
    Missing(Field),
    /// `group:target[:direct]`.
    Group { target: GroupTarget, direct: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Like,
    In,
    Gt,
    Gte,
    Lt,
    Lte,
    Regex,
}

impl Op {
    /// The JSON name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Like => "like",
            Op::In => "in",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Regex => "regex",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Op> {
        Some(match name {
            "eq" => Op::Eq,
            "like" => Op::Like,
            "in" => Op::In,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "regex" => Op::Regex,
            _ => return None,
        })
    }

    /// The text before a comparison value (`>=`), empty for other operators.
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Gte => ">=",
            Op::Lt => "<",
            Op::Lte => "<=",
            _ => "",
        }
    }

    pub(crate) fn is_comparison(self) -> bool {
        matches!(self, Op::Gt | Op::Gte | Op::Lt | Op::Lte)
    }

    /// SRQL's reading of a scalar value: a leading `>=`, `>`, `<=` or `<` is a comparison,
    /// otherwise any `%` makes a LIKE, otherwise it is `=`. Returns the operator and the
    /// value without the comparison prefix.
    pub(crate) fn of_scalar(value: &str) -> (Op, &str) {
        for op in [Op::Gte, Op::Gt, Op::Lte, Op::Lt] {
            if let Some(rest) = value.strip_prefix(op.prefix()) {
                return (op, rest);
            }
        }
        if value.contains('%') {
            (Op::Like, value)
        } else {
            (Op::Eq, value)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    One(String),
    List(Vec<String>),
}

/// Where an expression is printed, which decides whether it needs parentheses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Top,
    And,
    Or,
    Not,
}

impl Expr {
    /// The conjunction of `items`, flattened.
    pub(crate) fn and(items: Vec<Expr>) -> Expr {
        Self::join(items, true)
    }

    /// The disjunction of `items`, flattened.
    pub(crate) fn or(items: Vec<Expr>) -> Expr {
        Self::join(items, false)
    }

    fn join(items: Vec<Expr>, and: bool) -> Expr {
        let mut flat = Vec::with_capacity(items.len());
        for item in items {
            match (item, and) {
                (Expr::And(inner), true) | (Expr::Or(inner), false) => flat.extend(inner),
                (item, _) => flat.push(item),
            }
        }
        if flat.len() == 1 {
            if let Some(only) = flat.pop() {
                return only;
            }
        }
        if and {
            Expr::And(flat)
        } else {
            Expr::Or(flat)
        }
    }

    /// `NOT e`; `NOT NOT e` is `e` (a negation is two-valued).
    pub(crate) fn not(e: Expr) -> Expr {
        match e {
            Expr::Not(inner) => *inner,
            e => Expr::Not(Box::new(e)),
        }
    }

    /// The conditions, in text order.
    pub(crate) fn leaves(&self) -> Vec<&Leaf> {
        let mut out = Vec::new();
        self.visit(&mut |leaf| out.push(leaf));
        out
    }

    pub(crate) fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Leaf)) {
        match self {
            Expr::And(items) | Expr::Or(items) => items.iter().for_each(|e| e.visit(f)),
            Expr::Not(e) => e.visit(f),
            Expr::Leaf(leaf) => f(leaf),
        }
    }

    pub(crate) fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Leaf)) {
        match self {
            Expr::And(items) | Expr::Or(items) => items.iter_mut().for_each(|e| e.visit_mut(f)),
            Expr::Not(e) => e.visit_mut(f),
            Expr::Leaf(leaf) => f(leaf),
        }
    }

    /// Nesting of the printed text: parentheses and `NOT`s around the deepest condition.
    pub(crate) fn printed_depth(&self, ctx: Context) -> usize {
        let max = |items: &[Expr], inner: Context| {
            items
                .iter()
                .map(|e| e.printed_depth(inner))
                .max()
                .unwrap_or(0)
        };
        match self {
            Expr::Leaf(_) => 0,
            Expr::Not(e) => 1 + e.printed_depth(Context::Not),
            Expr::And(items) => usize::from(ctx == Context::Not) + max(items, Context::And),
            Expr::Or(items) => {
                usize::from(matches!(ctx, Context::Not | Context::And)) + max(items, Context::Or)
            }
        }
    }
}
