//! The plan as a parameterized SQL boolean expression over `devices d`, or over
//! `services s LEFT JOIN devices sd ON sd.id = s.device_id`.

use std::fmt::Write as _;

use super::fields::Scope;
use super::plan::{CLeaf, Col, Neg, Node, Plan, Test};
use super::values::IpOperand;
use super::{SqlContext, SqlFragment, SqlParam};

/// SRQL's MAC normalisation of the column.
const MAC_SQL: &str = "lower(regexp_replace({c}, '[^0-9a-fA-F]', '', 'g'))";
/// The leading dotted number of a version, as `numeric[]` (NULL without one).
const VERSION_SQL: &str =
    "string_to_array(substring({c} FROM '^[0-9]+(?:[.][0-9]+)*'), '.')::numeric[]";

impl Plan {
    pub(crate) fn to_sql(&self, ctx: &SqlContext) -> SqlFragment {
        let mut w = Writer {
            ctx,
            params: Vec::new(),
        };
        let sql = w.node(self, &self.root);
        SqlFragment {
            sql,
            params: w.params,
        }
    }
}

struct Writer<'a> {
    ctx: &'a SqlContext,
    params: Vec<SqlParam>,
}

impl Writer<'_> {
    /// Adds a parameter and returns its placeholder with a cast.
    fn param(&mut self, value: SqlParam) -> String {
        let cast = match &value {
            SqlParam::Text(_) => "text",
            SqlParam::TextArray(_) => "text[]",
            SqlParam::Bool(_) => "bool",
            SqlParam::Int(_) => "int8",
            SqlParam::Timestamp(_) => "timestamptz",
            SqlParam::Uuid(_) => "uuid",
        };
        self.params.push(value);
        format!("${}::{cast}", self.ctx.first_param + self.params.len() - 1)
    }

    fn text(&mut self, s: &str) -> String {
        self.param(SqlParam::Text(s.to_string()))
    }

    fn texts(&mut self, items: &[String]) -> String {
        self.param(SqlParam::TextArray(items.to_vec()))
    }

    fn node(&mut self, plan: &Plan, node: &Node) -> String {
        match node {
            Node::And(items) if items.is_empty() => "true".into(),
            Node::And(items) | Node::Or(items) => {
                let joiner = if matches!(node, Node::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                let parts: Vec<String> = items.iter().map(|n| self.node(plan, n)).collect();
                format!("({})", parts.join(joiner))
            }
            Node::Not(inner) => format!("({}) IS NOT TRUE", self.node(plan, inner)),
            Node::Leaf(i) => self.leaf(&plan.leaves[*i]),
        }
    }

    fn leaf(&mut self, leaf: &CLeaf) -> String {
        let p = self.test(leaf);
        match leaf.neg {
            Neg::Pos => p,
            Neg::Skip => format!("NOT ({p})"),
            Neg::Select => format!("({p}) IS NOT TRUE"),
        }
    }

    fn column(&mut self, scope: Scope, col: &Col) -> String {
        let a = scope.alias();
        match col {
            Col::Text(name) | Col::Time(name) => format!("{a}.{}", name.column()),
            Col::Key(map, key) => {
                let key = self.text(key);
                format!("({a}.{} ->> {key})", map.column())
            }
            Col::Map(map) => format!("coalesce({a}.{}, '{{}}'::jsonb)", map.column()),
            Col::Sources => format!("coalesce({a}.discovery_sources, '{{}}'::text[])"),
            Col::Available => format!("{a}.is_available"),
            Col::Port => format!("{a}.port"),
            Col::Membership => format!("{a}.id"),
        }
    }

    fn test(&mut self, leaf: &CLeaf) -> String {
        let c = self.column(leaf.scope, &leaf.col);
        match &leaf.test {
            Test::Eq(v) => format!("{c} = {}", self.text(v)),
            Test::In(items) => format!("{c} = ANY({})", self.texts(items)),
            Test::Like(_, pattern) => format!("{c} ILIKE {}", self.text(pattern)),
            Test::Regex(re) => {
                let op = if re.case_insensitive { "~*" } else { "~" };
                format!("{c} {op} {}", self.text(&re.pg_pattern))
            }
            Test::MacEq(v) => format!("{} = {}", MAC_SQL.replace("{c}", &c), self.text(v)),
            Test::MacIn(items) => {
                format!(
                    "{} = ANY({})",
                    MAC_SQL.replace("{c}", &c),
                    self.texts(items)
                )
            }
            Test::MacLike(_, pattern) => {
                format!("{} LIKE {}", MAC_SQL.replace("{c}", &c), self.text(pattern))
            }
            Test::Ip(operands) => {
                let parts: Vec<String> = operands.iter().map(|o| self.ip(&c, o)).collect();
                if parts.len() == 1 {
                    parts.concat()
                } else {
                    format!("({})", parts.join(" OR "))
                }
            }
            Test::Version(op, version) => {
                let numbers: Vec<String> = version
                    .iter()
                    .map(|n| if n.is_empty() { "0".into() } else { n.clone() })
                    .collect();
                let p = self.texts(&numbers);
                format!(
                    "{} {} {p}::numeric[]",
                    VERSION_SQL.replace("{c}", &c),
                    op.prefix()
                )
            }
            Test::HasKey(keys) if keys.len() == 1 => format!("{c} ? {}", self.text(&keys[0])),
            Test::HasKey(keys) => format!("{c} ?| {}", self.texts(keys)),
            Test::ContainsAll(items) => format!("{c} @> {}", self.texts(items)),
            Test::Bools(values) => {
                let ps: Vec<String> = values
                    .iter()
                    .map(|b| self.param(SqlParam::Bool(*b)))
                    .collect();
                in_list(&c, &ps)
            }
            Test::Ints(values) => {
                let ps: Vec<String> = values
                    .iter()
                    .map(|n| self.param(SqlParam::Int(*n)))
                    .collect();
                in_list(&c, &ps)
            }
            Test::IntCmp(op, n) => format!("{c} {} {}", op.prefix(), self.param(SqlParam::Int(*n))),
            Test::TimeCmp(op, value) => {
                let bound = self.param(SqlParam::Timestamp(value.at(self.ctx.now)));
                format!("{c} {} {bound}", op.prefix())
            }
            Test::Missing => match leaf.col {
                Col::Text(_) | Col::Key(..) => format!("coalesce({c}, '') = ''"),
                Col::Map(_) => format!("{c} = '{{}}'::jsonb"),
                Col::Sources => format!("cardinality({c}) = 0"),
                _ => format!("{c} IS NULL"),
            },
            Test::Member { group: None, .. } => "false".into(),
            Test::Member {
                group: Some(group),
                direct,
            } => {
                let template = if *direct {
                    &self.ctx.direct_members_sql
                } else {
                    &self.ctx.effective_members_sql
                };
                let template = template.clone();
                let p = self.param(SqlParam::Uuid(*group));
                let mut out = String::new();
                let _ = write!(out, "{c} IN ({})", template.replace("{group}", &p));
                out
            }
        }
    }

    fn ip(&mut self, c: &str, operand: &IpOperand) -> String {
        match operand {
            IpOperand::Text(s) => format!("{c} = {}", self.text(s)),
            IpOperand::Cidr(addr, prefix) => {
                let p = self.text(&format!("{addr}/{prefix}"));
                format!("{c}::inet <<= {p}::cidr")
            }
            IpOperand::Range(start, end) => {
                let a = self.text(&start.to_string());
                let b = self.text(&end.to_string());
                format!("({c}::inet >= {a}::inet AND {c}::inet <= {b}::inet)")
            }
        }
    }
}

fn in_list(c: &str, params: &[String]) -> String {
    if params.len() == 1 {
        format!("{c} = {}", params[0])
    } else {
        format!("{c} IN ({})", params.join(", "))
    }
}
