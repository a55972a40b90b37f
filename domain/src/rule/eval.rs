//! The in-memory predicate: the plan evaluated against one device or service, with the same
//! three-valued results as the SQL. No allocation per evaluation.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::ast::Op;
use super::fields::{Name, Scope};
use super::plan::{CLeaf, Col, MapKind, Neg, Node, Plan, Test};
use super::values::{compare_version, floor_micros, mac_digits, IpOperand};
use super::{Entity, EvalContext};
use crate::inventory::{Device, Service};

impl Plan {
    pub(crate) fn eval(&self, entity: Entity<'_>, ctx: &EvalContext<'_>) -> bool {
        self.eval_node(&self.root, entity, ctx)
    }

    fn eval_node(&self, node: &Node, entity: Entity<'_>, ctx: &EvalContext<'_>) -> bool {
        match node {
            Node::And(items) => items.iter().all(|n| self.eval_node(n, entity, ctx)),
            Node::Or(items) => items.iter().any(|n| self.eval_node(n, entity, ctx)),
            Node::Not(inner) => !self.eval_node(inner, entity, ctx),
            Node::Leaf(i) => self.leaves[*i].eval(entity, ctx),
        }
    }
}

/// The record a condition reads: a device (the host of a service may be absent) or a service.
#[derive(Clone, Copy)]
enum Record<'a> {
    Device(Option<&'a Device>),
    Service(&'a Service),
}

fn holds(op: Op, ord: Ordering) -> bool {
    match op {
        Op::Gt => ord == Ordering::Greater,
        Op::Gte => ord != Ordering::Less,
        Op::Lt => ord == Ordering::Less,
        Op::Lte => ord != Ordering::Greater,
        _ => false,
    }
}

impl CLeaf {
    /// Whether the condition is TRUE for `entity`.
    pub(crate) fn eval(&self, entity: Entity<'_>, ctx: &EvalContext<'_>) -> bool {
        let value = self.value(entity, ctx);
        match self.neg {
            Neg::Pos => value == Some(true),
            Neg::Skip => value == Some(false),
            Neg::Select => value != Some(true),
        }
    }

    /// The test's SQL value: `None` is NULL.
    fn value(&self, entity: Entity<'_>, ctx: &EvalContext<'_>) -> Option<bool> {
        let record = match (self.scope, entity) {
            (Scope::Device, Entity::Device(d)) => Record::Device(Some(d)),
            (Scope::Service, Entity::Service(s, _)) => Record::Service(s),
            (Scope::Host, Entity::Service(_, host)) => Record::Device(host),
            _ => return None,
        };
        match &self.col {
            Col::Text(name) => self.text(text(record, name)),
            Col::Key(map, key) => self.text(
                object(record, *map)
                    .and_then(|m| m.get(key))
                    .map(String::as_str),
            ),
            Col::Map(map) => {
                let map = object(record, *map);
                Some(match &self.test {
                    Test::HasKey(keys) => {
                        map.is_some_and(|m| keys.iter().any(|k| m.contains_key(k)))
                    }
                    _ => map.is_none_or(BTreeMap::is_empty),
                })
            }
            Col::Sources => {
                let sources = match record {
                    Record::Device(Some(d)) => d.discovery_sources.as_slice(),
                    _ => &[],
                };
                Some(match &self.test {
                    Test::ContainsAll(values) => values.iter().all(|v| sources.contains(v)),
                    _ => sources.is_empty(),
                })
            }
            Col::Available => {
                let value = match record {
                    Record::Device(d) => d.and_then(|d| d.is_available),
                    Record::Service(_) => None,
                };
                match &self.test {
                    Test::Missing => Some(value.is_none()),
                    Test::Bools(values) => value.map(|v| values.contains(&v)),
                    _ => None,
                }
            }
            Col::Port => {
                let port = match record {
                    Record::Service(s) => s.port.map(i64::from),
                    Record::Device(_) => None,
                };
                match &self.test {
                    Test::Missing => Some(port.is_none()),
                    Test::Ints(values) => port.map(|p| values.contains(&p)),
                    Test::IntCmp(op, n) => port.map(|p| holds(*op, p.cmp(n))),
                    _ => None,
                }
            }
            Col::Time(name) => {
                let time = time(record, name);
                match &self.test {
                    Test::Missing => Some(time.is_none()),
                    Test::TimeCmp(op, value) => {
                        let bound = value.at(ctx.now);
                        time.map(|t| holds(*op, floor_micros(t).cmp(&bound)))
                    }
                    _ => None,
                }
            }
            Col::Membership => match &self.test {
                Test::Member { group, direct } => {
                    let id = match entity {
                        Entity::Device(d) => d.id.as_str(),
                        Entity::Service(s, _) => s.id.as_str(),
                    };
                    Some(group.is_some_and(|g| ctx.groups.contains(g, *direct, id)))
                }
                _ => None,
            },
        }
    }

    fn text(&self, value: Option<&str>) -> Option<bool> {
        if let Test::Missing = self.test {
            return Some(value.is_none_or(str::is_empty));
        }
        let s = value?;
        Some(match &self.test {
            Test::Eq(v) => s == v,
            Test::In(values) => values.binary_search_by(|v| v.as_str().cmp(s)).is_ok(),
            Test::Like(like, _) => like.matches(s),
            Test::Regex(re) => re.regex.is_match(s),
            Test::MacEq(v) => mac_digits(s).eq(v.chars()),
            Test::MacIn(values) => values.iter().any(|v| mac_digits(s).eq(v.chars())),
            Test::MacLike(like, _) => like.matches_chars(mac_digits(s)),
            Test::Ip(operands) => {
                let addr = if operands.iter().any(|o| !matches!(o, IpOperand::Text(_))) {
                    s.parse::<IpAddr>().ok()
                } else {
                    None
                };
                operands.iter().any(|o| o.matches(s, addr))
            }
            Test::Version(op, version) => holds(*op, compare_version(s, version)?),
            _ => return None,
        })
    }
}

fn text<'a>(record: Record<'a>, name: &Name) -> Option<&'a str> {
    match record {
        Record::Device(None) => None,
        Record::Device(Some(d)) => match name {
            Name::Id => Some(d.id.as_str()),
            Name::Hostname => d.hostname.as_deref(),
            Name::Ip => d.ip.as_deref(),
            Name::Mac => d.mac.as_deref(),
            Name::Vendor => d.vendor.as_deref(),
            Name::Model => d.model.as_deref(),
            Name::Os => d.os.as_deref(),
            Name::OsVersion => d.os_version.as_deref(),
            Name::Partition => d.partition.as_deref(),
            Name::Site => d.site.as_deref(),
            Name::Type => d.device_type.as_deref(),
            Name::AgentId => d.agent_id.as_deref(),
            Name::PollerId => d.poller_id.as_deref(),
            _ => None,
        },
        Record::Service(s) => match name {
            Name::Id => Some(s.id.as_str()),
            Name::DeviceId => Some(s.device_id.as_str()),
            Name::Type => Some(s.service_type.as_str()),
            Name::Label => Some(s.name.as_str()),
            Name::Status => s.status.as_deref(),
            _ => None,
        },
    }
}

fn object(record: Record<'_>, map: MapKind) -> Option<&BTreeMap<String, String>> {
    match (record, map) {
        (Record::Device(d), MapKind::Tags) => d.map(|d| &d.tags),
        (Record::Device(d), MapKind::Metadata) => d.map(|d| &d.metadata),
        (Record::Service(s), MapKind::Tags) => Some(&s.tags),
        (Record::Service(s), MapKind::Metadata) => Some(&s.metadata),
    }
}

fn time(record: Record<'_>, name: &Name) -> Option<DateTime<Utc>> {
    match (record, name) {
        (Record::Device(d), Name::FirstSeen) => d.and_then(|d| d.first_seen),
        (Record::Device(d), Name::LastSeen) => d.and_then(|d| d.last_seen),
        (Record::Service(s), Name::LastSeen) => s.last_seen,
        _ => None,
    }
}
