//! Corral's rule language: a strict superset of ServiceRadar's SRQL device filters, for
//! dynamic group membership.
//!
//! Every SRQL device filter that Corral accepts means what it means in SRQL (the Rust
//! translator ServiceRadar runs: field names case-insensitive, outer quotes stripped and never
//! making a value literal, `%` an ILIKE in which `_` is a wildcard, `!` selecting or skipping
//! missing values per field, `tags:k` a key test, `discovery_sources` containing all values,
//! CIDRs and ranges on `ip`, MACs compared ignoring case and separators). Filters whose SRQL
//! meaning is a trap are rejected with the column of the offending token rather than
//! reinterpreted. Corral adds `OR`, `NOT`/`-`, parentheses, `field~"regex"`,
//! `missing:field`, comparisons on times, ports and versions, relative times (`now-7d`),
//! lists on every field, `group:` references and the fields SRQL lacks.
//!
//! Decisions where SRQL leaves room:
//! - `field:null` is the text `null`, as in SRQL (with a warning); `missing:field` tests for
//!   an absent or empty value.
//! - `hostname:~"^web"` is rejected with a hint to write `hostname~"^web"`.
//! - `tags:env=prod` is rejected with a hint to write `tags.env:prod`.
//! - Times take only comparisons (`last_seen:>=now-7d`); `last_seen:2024-01-01` is rejected.
//! - Lists compare exactly; `%` in a list item is rejected except on `id`/`uid`, where SRQL
//!   reads it literally.
//! - `!field:value` on a field SRQL lacks (and on every service field) also selects entities
//!   where the field is missing; on SRQL's fields it does what SRQL does.
//! - `NOT x` is "x is not true", so `NOT` selects missing values and SQL and memory agree.
//! - `!` cannot be combined with a comparison (SRQL silently drops it) nor with a regex;
//!   `NOT` can.
//! - `missing:tags.k` is true for a bare tag `k` (its value is `""`); `tags:k` tests the key.
//! - `in:` may appear anywhere at the top level (the last wins), not inside parentheses or
//!   after `NOT`.
//! - An AND that can never hold (a condition and its negation, or `=`/list values on one
//!   single-valued field with nothing in common) is rejected wherever it appears.
//! - The 3,072-character limit holds for the input and for the normalized text (which
//!   starts with `in:devices`), so that every accepted rule's saved text parses again.
//! - Case-insensitive matching (`%`, `(?i)`) folds character by character as PostgreSQL's
//!   `lower()` does under a UTF-8 locale; characters whose lower case is longer (`İ`) may
//!   differ between the two evaluators.
//!
//! A rule is saved as versioned JSON ([`Rule::to_json`]) plus its normalized text
//! ([`Rule::to_text`]); both read back to an equal rule. One compiler produces the SQL
//! ([`Rule::to_sql`]) and the in-memory predicate ([`Rule::matches`]).

mod ast;
mod check;
mod cost;
mod error;
mod eval;
mod fields;
mod json;
mod lexer;
mod like;
mod parser;
mod plan;
mod predicate;
mod regex_subset;
mod sql;
mod text;
mod validate;
mod values;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use crate::group::GroupType;
pub use error::RuleError;

use crate::inventory::{Device, Service};
use ast::{Body, Expr};
use plan::{Plan, Test};

/// Version of the JSON form.
pub const RULE_FORMAT_VERSION: u32 = 1;
/// Longest rule text, in characters.
pub const MAX_RULE_CHARS: usize = 3072;
/// Most conditions in one rule.
pub const MAX_CONDITIONS: usize = 64;
/// Deepest nesting of parentheses and `NOT`.
pub const MAX_DEPTH: usize = 8;
/// Most items in one list.
pub const MAX_LIST_ITEMS: usize = 250;

/// A checked rule. Equality compares the entity kind and the AST (not columns, not the
/// compiled form).
#[derive(Debug, Clone)]
pub struct Rule {
    kind: GroupType,
    expr: Expr,
    plan: Arc<Plan>,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.expr == other.expr
    }
}

/// A rule and what is worth telling its author (for instance that it selects everything).
#[derive(Debug, Clone)]
pub struct Parsed {
    pub rule: Rule,
    pub warnings: Vec<String>,
}

/// A `group:` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    pub target: GroupTarget,
    /// `group:X:direct`: X's own members rather than its effective members.
    pub direct: bool,
    /// Column in the text the rule was parsed from.
    pub column: Option<usize>,
}

/// The group a `group:` reference names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupTarget {
    Id(Uuid),
    /// A path such as `Inventory/Site A`, until [`Rule::resolve_groups`].
    Path(String),
}

/// What a rule is evaluated against. A service comes with its host device, if known.
#[derive(Debug, Clone, Copy)]
pub enum Entity<'a> {
    Device(&'a Device),
    Service(&'a Service, Option<&'a Device>),
}

/// Group memberships, for `group:` conditions.
pub trait Memberships {
    /// Whether `member_id` is a member of `group`: its own members when `direct`, else its
    /// effective members (its own and its descendants').
    fn contains(&self, group: Uuid, direct: bool, member_id: &str) -> bool;
}

/// For rules without `group:` conditions.
impl Memberships for () {
    fn contains(&self, _: Uuid, _: bool, _: &str) -> bool {
        false
    }
}

/// What an in-memory evaluation needs.
pub struct EvalContext<'a> {
    /// The instant `now` stands for.
    pub now: DateTime<Utc>,
    pub groups: &'a dyn Memberships,
}

/// What the SQL needs.
#[derive(Debug, Clone)]
pub struct SqlContext {
    /// The instant `now` stands for (bound as a parameter, never PostgreSQL's `now()`).
    pub now: DateTime<Utc>,
    /// Number of the first placeholder (`$n`).
    pub first_param: usize,
    /// Member ids of a group's effective membership, with `{group}` where the uuid goes.
    pub effective_members_sql: String,
    /// Member ids of a group's own membership, with `{group}` where the uuid goes.
    pub direct_members_sql: String,
}

/// A boolean SQL expression over `devices d` (device rules) or `services s LEFT JOIN
/// devices sd ON sd.id = s.device_id` (service rules), and its parameters in order.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFragment {
    pub sql: String,
    pub params: Vec<SqlParam>,
}

/// One SQL parameter; the placeholder carries a cast to the matching type.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlParam {
    Text(String),
    TextArray(Vec<String>),
    Bool(bool),
    Int(i64),
    Timestamp(DateTime<Utc>),
    Uuid(Uuid),
}

/// One condition of [`Rule::explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClauseResult {
    /// Its normalized text.
    pub clause: String,
    pub matched: bool,
}

/// Parses rule text; `default_kind` applies when the text has no `in:`.
pub fn parse(text: &str, default_kind: GroupType) -> Result<Parsed, RuleError> {
    if text.chars().count() > MAX_RULE_CHARS {
        return Err(RuleError::at(
            MAX_RULE_CHARS + 1,
            format!("rules may be at most {MAX_RULE_CHARS} characters long"),
        ));
    }
    if let Some(at) = text.chars().position(|c| c == '\0') {
        return Err(RuleError::at(
            at + 1,
            "rules may not contain NUL characters",
        ));
    }
    let syntax = parser::parse_syntax(text)?;
    let kind = syntax.kind.unwrap_or(default_kind);
    let mut warnings = Vec::new();
    let expr = match syntax.expr {
        None => Expr::And(Vec::new()),
        Some(raw) => resolve(raw, kind, &mut warnings)?,
    };
    finish(kind, expr, warnings)
}

/// Reads the JSON form, with the same checks as [`parse`].
pub fn from_json(value: &serde_json::Value) -> Result<Parsed, RuleError> {
    let mut warnings = Vec::new();
    let (kind, expr) = json::from_json(value, &mut warnings)?;
    finish(kind, expr, warnings)
}

fn resolve(
    raw: parser::RawExpr,
    kind: GroupType,
    warnings: &mut Vec<String>,
) -> Result<Expr, RuleError> {
    let mut all = |items: Vec<parser::RawExpr>| {
        items
            .into_iter()
            .map(|e| resolve(e, kind, warnings))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match raw {
        parser::RawExpr::And(items) => Expr::and(all(items)?),
        parser::RawExpr::Or(items) => Expr::or(all(items)?),
        parser::RawExpr::Not(inner) => Expr::not(resolve(*inner, kind, warnings)?),
        parser::RawExpr::Leaf(leaf) => Expr::Leaf(check::check_leaf(leaf, kind, warnings)?),
    })
}

fn finish(kind: GroupType, expr: Expr, mut warnings: Vec<String>) -> Result<Parsed, RuleError> {
    validate::validate(&expr, kind, &mut warnings)?;
    let plan = Arc::new(Plan::compile(&expr, kind)?);
    let rule = Rule { kind, expr, plan };
    if rule.to_text().chars().count() > MAX_RULE_CHARS {
        return Err(RuleError::new(
            None,
            format!("the normalized rule is longer than {MAX_RULE_CHARS} characters"),
        ));
    }
    warnings.dedup();
    Ok(Parsed { rule, warnings })
}

impl Rule {
    /// The entity kind it selects.
    pub fn kind(&self) -> GroupType {
        self.kind
    }

    /// The normalized text, which [`parse`] reads back to an equal rule.
    pub fn to_text(&self) -> String {
        text::rule_text(self.kind, &self.expr)
    }

    /// The versioned JSON form, which [`from_json`] reads back to an equal rule.
    pub fn to_json(&self) -> serde_json::Value {
        json::to_json(self.kind, &self.expr)
    }

    /// Canonical names of the inventory columns it reads (`tags.k` counts as `tags`;
    /// a service rule's host fields as `device.<column>`).
    pub fn fields(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.expr.visit(&mut |leaf| match &leaf.body {
            Body::Test { field, .. } | Body::Missing(field) => {
                out.insert(field.column_name());
            }
            Body::Group { .. } => {}
        });
        out
    }

    /// Whether it compares with `now` (so its result changes with time alone).
    pub fn uses_now(&self) -> bool {
        self.plan
            .leaves
            .iter()
            .any(|l| matches!(&l.test, Test::TimeCmp(_, t) if t.is_relative()))
    }

    /// Every `group:` reference, in text order.
    pub fn group_refs(&self) -> Vec<GroupRef> {
        let mut out = Vec::new();
        self.expr.visit(&mut |leaf| {
            if let Body::Group { target, direct } = &leaf.body {
                out.push(GroupRef {
                    target: target.clone(),
                    direct: *direct,
                    column: leaf.column.0,
                });
            }
        });
        out
    }

    /// Replaces path references by id references; fails (changing nothing) on the first
    /// path `resolve` does not know.
    pub fn resolve_groups(
        &mut self,
        resolve: &mut dyn FnMut(&str) -> Option<Uuid>,
    ) -> Result<(), RuleError> {
        let mut resolved = Vec::new();
        for group_ref in self.group_refs() {
            if let GroupTarget::Path(path) = &group_ref.target {
                match resolve(path) {
                    Some(id) => resolved.push(id),
                    None => {
                        return Err(RuleError::new(
                            group_ref.column,
                            format!("unknown group `{path}`"),
                        ))
                    }
                }
            }
        }
        let mut ids = resolved.into_iter();
        self.expr.visit_mut(&mut |leaf| {
            if let Body::Group { target, .. } = &mut leaf.body {
                if matches!(target, GroupTarget::Path(_)) {
                    if let Some(id) = ids.next() {
                        *target = GroupTarget::Id(id);
                    }
                }
            }
        });
        self.plan = Arc::new(Plan::compile(&self.expr, self.kind)?);
        Ok(())
    }

    fn accepts(&self, entity: Entity<'_>) -> bool {
        matches!(
            (self.kind, entity),
            (GroupType::Device, Entity::Device(_)) | (GroupType::Service, Entity::Service(..))
        )
    }

    /// Whether `entity` matches. An entity of the other kind never does; an unresolved path
    /// reference matches nothing.
    #[inline]
    pub fn matches(&self, entity: Entity<'_>, ctx: &EvalContext<'_>) -> bool {
        self.accepts(entity) && self.plan.predicate.eval(entity, ctx)
    }

    /// What [`Rule::matches`] answers, by the reference evaluator: the plan interpreted
    /// condition by condition, in text order, as [`Rule::explain`] does. Slower; kept to
    /// check the specialised predicate against (tests, `examples/rule_speed.rs`).
    pub fn matches_reference(&self, entity: Entity<'_>, ctx: &EvalContext<'_>) -> bool {
        self.accepts(entity) && self.plan.eval(entity, ctx)
    }

    /// Each condition (its normalized text) and whether it holds for `entity`.
    pub fn explain(&self, entity: Entity<'_>, ctx: &EvalContext<'_>) -> Vec<ClauseResult> {
        let accepted = self.accepts(entity);
        self.plan
            .leaves
            .iter()
            .zip(&self.plan.texts)
            .map(|(leaf, text)| ClauseResult {
                clause: text.clone(),
                matched: accepted && leaf.eval(entity, ctx),
            })
            .collect()
    }

    /// The rule as a parameterized SQL condition (`"true"` for a rule without conditions).
    pub fn to_sql(&self, ctx: &SqlContext) -> SqlFragment {
        self.plan.to_sql(ctx)
    }

    /// What evaluating the rule over one entity costs, in units of one equality test
    /// (regular expressions by their length, LIKE patterns, lists and `group:` lookups more
    /// than `=`); at least 1.
    pub fn cost(&self) -> u64 {
        self.plan.cost()
    }

    /// Number of conditions.
    pub fn condition_count(&self) -> usize {
        self.plan.leaves.len()
    }
}
