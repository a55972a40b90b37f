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

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::ast::Op;
use super::fields::{Name, Scope};
use super::like::{Anchor, Like};
use super::plan::{CLeaf, Col, MapKind, Neg, Node, Test};
use super::values::{compare_version, floor_micros, mac_digits, IpOperand, TimeValue};
use super::{Entity, EvalContext};
use crate::inventory::{Device, Service};

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

/// What the entity offers a condition: the device (the entity, or a service's host, which
/// may be absent), the service, and the id `group:` looks up. One implementation per entity
/// kind, so that a device rule's predicate is compiled for devices alone (no test of which
/// record is there).
trait Subject<'a>: Copy {
    fn device(self) -> Option<&'a Device>;
    fn service(self) -> Option<&'a Service>;
    fn id(self) -> &'a str;
}

#[derive(Clone, Copy)]
struct OfDevice<'a>(&'a Device);

impl<'a> Subject<'a> for OfDevice<'a> {
    #[inline(always)]
    fn device(self) -> Option<&'a Device> {
        Some(self.0)
    }
    #[inline(always)]
    fn service(self) -> Option<&'a Service> {
        None
    }
    #[inline(always)]
    fn id(self) -> &'a str {
        &self.0.id
    }
}

#[derive(Clone, Copy)]
struct OfService<'a> {
    service: &'a Service,
    host: Option<&'a Device>,
}

impl<'a> Subject<'a> for OfService<'a> {
    #[inline(always)]
    fn device(self) -> Option<&'a Device> {
        self.host
    }
    #[inline(always)]
    fn service(self) -> Option<&'a Service> {
        Some(self.service)
    }
    #[inline(always)]
    fn id(self) -> &'a str {
        &self.service.id
    }
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

/// A text column of the subject.
#[derive(Clone, Copy)]
enum TextField {
    DevId,
    Hostname,
    Ip,
    Mac,
    Vendor,
    Model,
    Os,
    OsVersion,
    Partition,
    Site,
    DevType,
    AgentId,
    PollerId,
    SvcId,
    SvcDeviceId,
    SvcType,
    SvcName,
    SvcStatus,
    /// A column the record does not have.
    Absent,
}

impl TextField {
    fn of(scope: Scope, name: &Name) -> Self {
        use TextField as T;
        match scope {
            Scope::Device | Scope::Host => match name {
                Name::Id => T::DevId,
                Name::Hostname => T::Hostname,
                Name::Ip => T::Ip,
                Name::Mac => T::Mac,
                Name::Vendor => T::Vendor,
                Name::Model => T::Model,
                Name::Os => T::Os,
                Name::OsVersion => T::OsVersion,
                Name::Partition => T::Partition,
                Name::Site => T::Site,
                Name::Type => T::DevType,
                Name::AgentId => T::AgentId,
                Name::PollerId => T::PollerId,
                _ => T::Absent,
            },
            Scope::Service => match name {
                Name::Id => T::SvcId,
                Name::DeviceId => T::SvcDeviceId,
                Name::Type => T::SvcType,
                Name::Label => T::SvcName,
                Name::Status => T::SvcStatus,
                _ => T::Absent,
            },
        }
    }

    #[inline(always)]
    fn read<'a>(self, s: impl Subject<'a>) -> Option<&'a str> {
        use TextField as T;
        let d = || s.device();
        let v = || s.service();
        match self {
            T::DevId => d().map(|d| d.id.as_str()),
            T::Hostname => d()?.hostname.as_deref(),
            T::Ip => d()?.ip.as_deref(),
            T::Mac => d()?.mac.as_deref(),
            T::Vendor => d()?.vendor.as_deref(),
            T::Model => d()?.model.as_deref(),
            T::Os => d()?.os.as_deref(),
            T::OsVersion => d()?.os_version.as_deref(),
            T::Partition => d()?.partition.as_deref(),
            T::Site => d()?.site.as_deref(),
            T::DevType => d()?.device_type.as_deref(),
            T::AgentId => d()?.agent_id.as_deref(),
            T::PollerId => d()?.poller_id.as_deref(),
            T::SvcId => v().map(|s| s.id.as_str()),
            T::SvcDeviceId => v().map(|s| s.device_id.as_str()),
            T::SvcType => v().map(|s| s.service_type.as_str()),
            T::SvcName => v().map(|s| s.name.as_str()),
            T::SvcStatus => v()?.status.as_deref(),
            T::Absent => None,
        }
    }
}

/// `tags` or `metadata` of the device or of the service.
#[derive(Clone, Copy)]
enum MapField {
    DevTags,
    DevMetadata,
    SvcTags,
    SvcMetadata,
}

impl MapField {
    fn of(scope: Scope, map: MapKind) -> Self {
        match (scope, map) {
            (Scope::Service, MapKind::Tags) => MapField::SvcTags,
            (Scope::Service, MapKind::Metadata) => MapField::SvcMetadata,
            (_, MapKind::Tags) => MapField::DevTags,
            (_, MapKind::Metadata) => MapField::DevMetadata,
        }
    }

    #[inline(always)]
    fn read<'a>(self, s: impl Subject<'a>) -> Option<&'a BTreeMap<String, String>> {
        match self {
            MapField::DevTags => s.device().map(|d| &d.tags),
            MapField::DevMetadata => s.device().map(|d| &d.metadata),
            MapField::SvcTags => s.service().map(|s| &s.tags),
            MapField::SvcMetadata => s.service().map(|s| &s.metadata),
        }
    }
}

/// A time column of the subject.
#[derive(Clone, Copy)]
enum TimeField {
    FirstSeen,
    LastSeen,
    SvcLastSeen,
    Absent,
}

impl TimeField {
    fn read<'a>(self, s: impl Subject<'a>) -> Option<DateTime<Utc>> {
        match self {
            TimeField::FirstSeen => s.device()?.first_seen,
            TimeField::LastSeen => s.device()?.last_seen,
            TimeField::SvcLastSeen => s.service()?.last_seen,
            TimeField::Absent => None,
        }
    }
}

/// A test on a text value, with the SQL's NULL for a missing value (except `Missing`).
enum TextTest {
    Missing,
    Eq(Box<str>),
    /// Sorted.
    In(Box<[String]>),
    Like(Pattern),
    Regex(regex::Regex),
    MacEq(String),
    MacIn(Vec<String>),
    MacLike(Like),
    /// Whether any operand needs the parsed address, and the operands.
    Ip(bool, Box<[Net]>),
    Version(Op, Vec<String>),
    /// A test the column does not take: always NULL.
    Null,
}

impl TextTest {
    fn of(test: &Test) -> Self {
        match test {
            Test::Missing => TextTest::Missing,
            Test::Eq(v) => TextTest::Eq(v.as_str().into()),
            Test::In(v) => TextTest::In(v.clone().into()),
            Test::Like(like, _) => TextTest::Like(Pattern::of(like)),
            Test::Regex(re) => TextTest::Regex(re.regex.clone()),
            Test::MacEq(v) => TextTest::MacEq(v.clone()),
            Test::MacIn(v) => TextTest::MacIn(v.clone()),
            Test::MacLike(like, _) => TextTest::MacLike(like.clone()),
            Test::Ip(operands) => TextTest::Ip(
                operands.iter().any(|o| !matches!(o, IpOperand::Text(_))),
                operands.iter().map(Net::of).collect(),
            ),
            Test::Version(op, v) => TextTest::Version(*op, v.clone()),
            _ => TextTest::Null,
        }
    }

    /// The common tests inline, the rest out of line (so that evaluating a conjunction
    /// of simple conditions stays a short run of instructions).
    #[inline(always)]
    fn eval(&self, value: Option<&str>) -> Option<bool> {
        match self {
            TextTest::Missing => Some(value.is_none_or(str::is_empty)),
            TextTest::Eq(v) => value.map(|s| s.as_bytes() == v.as_bytes()),
            TextTest::Null => None,
            _ => self.eval_present(value?),
        }
    }

    #[inline(never)]
    fn eval_present(&self, s: &str) -> Option<bool> {
        Some(match self {
            TextTest::Eq(v) => s.as_bytes() == v.as_bytes(),
            TextTest::In(values) => {
                if values.len() <= 8 {
                    values.iter().any(|v| v == s)
                } else {
                    values.binary_search_by(|v| v.as_str().cmp(s)).is_ok()
                }
            }
            TextTest::Like(p) => p.matches(s),
            TextTest::Regex(re) => re.is_match(s),
            TextTest::MacEq(v) => mac_digits(s).eq(v.chars()),
            TextTest::MacIn(values) => values.iter().any(|v| mac_digits(s).eq(v.chars())),
            TextTest::MacLike(like) => like.matches_chars(mac_digits(s)),
            TextTest::Ip(parse, nets) => {
                let addr = if *parse {
                    s.parse::<IpAddr>().ok()
                } else {
                    None
                };
                nets.iter().any(|n| n.matches(s, addr))
            }
            TextTest::Version(op, version) => holds(*op, compare_version(s, version)?),
            TextTest::Missing => s.is_empty(),
            TextTest::Null => return None,
        })
    }
}

/// An ILIKE pattern: a lower-cased ASCII needle and where it must occur when the pattern is
/// that simple, else the general matcher.
struct Pattern {
    like: Like,
    needle: Option<(Anchor, Box<[u8]>)>,
}

impl Pattern {
    fn of(like: &Like) -> Self {
        Pattern {
            needle: like.ascii_ci_shape().map(|(a, n)| (a, n.into())),
            like: like.clone(),
        }
    }

    /// An ASCII window of the text equal to the needle ignoring ASCII case is a match
    /// whatever else the text holds (ASCII bytes are whole characters in UTF-8 and lower-case
    /// to themselves). Only when none is found in a text that is not all ASCII can another
    /// character's lower case (`K` → `k`) still make one: the general matcher decides then.
    #[inline]
    fn matches(&self, s: &str) -> bool {
        let Some((anchor, needle)) = &self.needle else {
            return self.like.matches(s);
        };
        let t = s.as_bytes();
        let n = needle.len();
        let found = match anchor {
            Anchor::Whole => t.len() == n && t.eq_ignore_ascii_case(needle),
            Anchor::Start => t.len() >= n && t[..n].eq_ignore_ascii_case(needle),
            Anchor::End => t.len() >= n && t[t.len() - n..].eq_ignore_ascii_case(needle),
            Anchor::Anywhere => contains_ignore_ascii_case(t, needle),
        };
        found || (!s.is_ascii() && self.like.matches(s))
    }
}

/// Whether `hay` contains `needle` (lower-case ASCII) ignoring ASCII case.
#[inline]
fn contains_ignore_ascii_case(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let Some(last_start) = hay.len().checked_sub(needle.len()) else {
        return false;
    };
    // `b | 0x20` is `b` lower-cased when `first` is a letter: one comparison per byte.
    let fold = if first.is_ascii_lowercase() { 0x20 } else { 0 };
    hay[..=last_start].iter().enumerate().any(|(i, &b)| {
        (b | fold) == first && hay[i + 1..i + needle.len()].eq_ignore_ascii_case(rest)
    })
}

/// `a == b`, comparing short values in line rather than through `memcmp` (the values of
/// rule conditions are mostly a few bytes long, and the call cost as much as the compare).
#[inline(always)]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && if b.len() <= 16 {
            a.iter().zip(b).all(|(x, y)| x == y)
        } else {
            a == b
        }
}

/// An `ip:` operand with its network pre-computed.
enum Net {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
    Range(IpAddr, IpAddr),
    Text(String),
}

impl Net {
    fn of(operand: &IpOperand) -> Self {
        match operand {
            IpOperand::Cidr(IpAddr::V4(a), prefix) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                Net::V4 {
                    net: u32::from(*a) & mask,
                    mask,
                }
            }
            IpOperand::Cidr(IpAddr::V6(a), prefix) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                Net::V6 {
                    net: u128::from(*a) & mask,
                    mask,
                }
            }
            IpOperand::Range(a, b) => Net::Range(*a, *b),
            IpOperand::Text(s) => Net::Text(s.clone()),
        }
    }

    /// As [`IpOperand::matches`].
    fn matches(&self, text: &str, addr: Option<IpAddr>) -> bool {
        match (self, addr) {
            (Net::Text(s), _) => s == text,
            (Net::V4 { net, mask }, Some(IpAddr::V4(a))) => u32::from(a) & mask == *net,
            (Net::V6 { net, mask }, Some(IpAddr::V6(a))) => u128::from(a) & mask == *net,
            (Net::Range(start, end), Some(a)) => {
                a.is_ipv4() == start.is_ipv4() && *start <= a && a <= *end
            }
            _ => false,
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

fn holds(op: Op, ord: Ordering) -> bool {
    match op {
        Op::Gt => ord == Ordering::Greater,
        Op::Gte => ord != Ordering::Less,
        Op::Lt => ord == Ordering::Less,
        Op::Lte => ord != Ordering::Greater,
        _ => false,
    }
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

/// A leaf whose test cannot apply to its column: the reference evaluator's NULL.
enum Lowered {
    Check(Check),
    Value(Option<bool>),
}

fn lower_leaf(leaf: &CLeaf) -> PNode {
    let on = Outcome::of(leaf.neg);
    let lowered = match &leaf.col {
        Col::Text(name) => Lowered::Check(match &leaf.test {
            Test::Eq(value) => Check::TextEq {
                field: TextField::of(leaf.scope, name),
                value: value.as_str().into(),
                on,
            },
            test => Check::Text {
                field: TextField::of(leaf.scope, name),
                test: TextTest::of(test),
                on,
            },
        }),
        Col::Key(map, key) => Lowered::Check(Check::Key {
            map: MapField::of(leaf.scope, *map),
            key: key.as_str().into(),
            test: TextTest::of(&leaf.test),
            on,
        }),
        Col::Map(map) => {
            let map = MapField::of(leaf.scope, *map);
            Lowered::Check(match &leaf.test {
                Test::HasKey(keys) => Check::HasKey {
                    map,
                    keys: keys.clone().into(),
                    on,
                },
                _ => Check::MapEmpty { map, on },
            })
        }
        // A service has no sources (an empty list) and no availability (NULL); service
        // rules reach these columns only through `device.`, so these arms are for exactness.
        Col::Sources => match (&leaf.test, leaf.scope) {
            (Test::ContainsAll(all), Scope::Service) => Lowered::Value(Some(all.is_empty())),
            (_, Scope::Service) => Lowered::Value(Some(true)),
            (Test::ContainsAll(all), _) => Lowered::Check(Check::Sources {
                all: all.clone().into(),
                on,
            }),
            _ => Lowered::Check(Check::SourcesEmpty { on }),
        },
        Col::Available => match (&leaf.test, leaf.scope) {
            (Test::Missing, Scope::Service) => Lowered::Value(Some(true)),
            (_, Scope::Service) => Lowered::Value(None),
            (Test::Missing, _) => Lowered::Check(Check::Available {
                test: BoolTest::Missing,
                on,
            }),
            (Test::Bools(values), _) => Lowered::Check(Check::Available {
                test: BoolTest::Accept {
                    on_true: values.contains(&true),
                    on_false: values.contains(&false),
                },
                on,
            }),
            _ => Lowered::Value(None),
        },
        Col::Port => match leaf.scope {
            Scope::Service => Lowered::Check(Check::Port {
                test: match &leaf.test {
                    Test::Missing => IntTest::Missing,
                    Test::Ints(v) => IntTest::In(v.clone().into()),
                    Test::IntCmp(op, n) => IntTest::Cmp(*op, *n),
                    _ => IntTest::Null,
                },
                on,
            }),
            // A device has no port: missing, so NULL for every test but `missing:`.
            _ => Lowered::Value(matches!(leaf.test, Test::Missing).then_some(true)),
        },
        Col::Time(name) => Lowered::Check(Check::Time {
            field: match (leaf.scope, name) {
                (Scope::Device | Scope::Host, Name::FirstSeen) => TimeField::FirstSeen,
                (Scope::Device | Scope::Host, Name::LastSeen) => TimeField::LastSeen,
                (Scope::Service, Name::LastSeen) => TimeField::SvcLastSeen,
                _ => TimeField::Absent,
            },
            test: match &leaf.test {
                Test::Missing => TimeTest::Missing,
                Test::TimeCmp(op, value) => TimeTest::Cmp(*op, *value),
                _ => TimeTest::Null,
            },
            on,
        }),
        Col::Membership => match &leaf.test {
            Test::Member {
                group: Some(group),
                direct,
            } => Lowered::Check(Check::Member {
                group: *group,
                direct: *direct,
                on,
            }),
            // An unresolved path matches nothing.
            Test::Member { group: None, .. } => Lowered::Value(Some(false)),
            _ => Lowered::Value(None),
        },
    };
    match lowered {
        Lowered::Check(check) => PNode::Check(check),
        Lowered::Value(value) => PNode::Const(on.apply(value)),
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
